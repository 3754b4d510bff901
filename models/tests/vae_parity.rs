//! The Wan VAE equals diffusers' `AutoencoderKLWan` on the tiny random pipelines of
//! `oracle/make_wan_references.py`, loaded through the production path: `decode` equals
//! `AutoencoderKLWan.decode`, `encode` equals `AutoencoderKLWan.encode(video).latent_dist.mean`.

mod common;

use candle_core::{DType, Device};
use common::*;
use reelfarm_models::wan::vae::WanVae;
use reelfarm_models::weights::load_component;

/// f32 on CPU, outputs in [-1, 1]: 1e-4 absolute is far below a real mismatch.
const TOLERANCE: f32 = 1e-4;

/// f32 on CPU; the reference means reach 1.3 (wan-tiny-a) and 0.5 (wan-tiny-b), so 1e-4
/// absolute is still far below a real mismatch. Measured: under 1e-6 on both.
const ENCODE_TOLERANCE: f32 = 1e-4;

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

#[test]
fn vae_encode_mean_equals_diffusers_on_both_tiny_configs() {
    // wan-tiny-a downsamples time by 4, wan-tiny-b by 2: both go through diffusers' chunks of
    // one frame, then four.
    for name in CONFIGS {
        let refs = references(name);
        let vae = load(name);
        let mean = vae.encode(&refs["vae.video"]).unwrap();
        eprintln!(
            "{name}: encode max diff {:e}",
            max_abs_diff(&mean, &refs["vae.encoded_mean"])
        );
        assert_close(
            &format!("{name} encode"),
            &mean,
            &refs["vae.encoded_mean"],
            ENCODE_TOLERANCE,
        );
    }
}

#[test]
fn a_different_video_changes_the_encoded_mean() {
    // Guards the comparison above against an encoder that ignores its input.
    let refs = references("wan-tiny-a");
    let vae = load("wan-tiny-a");
    let video = (&refs["vae.video"] * -1.0).unwrap();
    let mean = vae.encode(&video).unwrap();
    let diff = max_abs_diff(&mean, &refs["vae.encoded_mean"]);
    assert!(
        diff > 1e-2,
        "a negated video moved the mean by only {diff:e}"
    );
}

#[test]
fn encode_then_decode_returns_a_video_of_the_input_shape() {
    for name in CONFIGS {
        let refs = references(name);
        let vae = load(name);
        let video = &refs["vae.video"];
        let decoded = vae.decode(&vae.encode(video).unwrap()).unwrap();
        assert_eq!(
            decoded.dims(),
            video.dims(),
            "{name}: encode -> decode should give back [b, c, frames, H, W] of the input"
        );
    }
}
