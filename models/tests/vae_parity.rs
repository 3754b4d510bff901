//! The Wan VAE decoder equals diffusers' `AutoencoderKLWan.decode` on the tiny random
//! pipelines of `oracle/make_wan_references.py`, loaded through the production path.

mod common;

use candle_core::{DType, Device};
use common::*;
use reelfarm_models::wan::vae::WanVae;
use reelfarm_models::weights::load_component;

/// f32 on CPU, outputs in [-1, 1]: 1e-4 absolute is far below a real mismatch.
const TOLERANCE: f32 = 1e-4;

fn load(name: &str) -> WanVae {
    let dir = fixture(name).join("vae");
    load_component(&dir, DType::F32, &Device::Cpu, WanVae::load).unwrap()
}

#[test]
fn vae_decode_equals_diffusers_on_both_tiny_configs() {
    for name in CONFIGS {
        let refs = references(name);
        let vae = load(name);
        let out = vae.decode(&refs["vae.latents"]).unwrap();
        eprintln!(
            "{name}: max diff {:e}",
            max_abs_diff(&out, &refs["vae.decoded"])
        );
        assert_close(name, &out, &refs["vae.decoded"], TOLERANCE);
    }
}

#[test]
fn different_latents_change_the_output() {
    // Guards the comparison above against a decoder that ignores its input.
    let refs = references("wan-tiny-a");
    let vae = load("wan-tiny-a");
    let latents = (&refs["vae.latents"] * -1.0).unwrap();
    let out = vae.decode(&latents).unwrap();
    assert!(max_abs_diff(&out, &refs["vae.decoded"]) > 1e-2);
}
