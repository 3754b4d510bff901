//! The Wan transformer equals diffusers' `WanTransformer3DModel` on the tiny random
//! pipelines of `oracle/make_wan_references.py`, loaded through the production path.

mod common;

use candle_core::{DType, Device};
use common::*;
use reelfarm_models::wan::transformer::WanTransformer;
use reelfarm_models::weights::load_component;

/// f32 on CPU: the two implementations sum in different orders; 1e-4 absolute on outputs of
/// magnitude ~1 is a few hundred ulps, far below any real mismatch (a wrong sign, norm or
/// rotary pair shows as O(0.1)).
const TOLERANCE: f32 = 1e-4;

fn load(name: &str) -> WanTransformer {
    let dir = fixture(name).join("transformer");
    load_component(&dir, DType::F32, &Device::Cpu, WanTransformer::load).unwrap()
}

#[test]
fn transformer_output_equals_diffusers_on_both_tiny_configs() {
    for name in CONFIGS {
        let refs = references(name);
        let model = load(name);
        let out = model
            .forward(
                &refs["transformer.latents"],
                &refs["transformer.timestep"],
                &refs["transformer.context"],
            )
            .unwrap();
        assert_close(name, &out, &refs["transformer.out"], TOLERANCE);
        eprintln!(
            "{name}: max diff {:e}",
            max_abs_diff(&out, &refs["transformer.out"])
        );
    }
}

#[test]
fn a_different_timestep_changes_the_output() {
    // Guards the comparison above against a model that ignores its time embedding.
    let refs = references("wan-tiny-a");
    let model = load("wan-tiny-a");
    let t = candle_core::Tensor::new(&[100f32], &Device::Cpu).unwrap();
    let out = model
        .forward(
            &refs["transformer.latents"],
            &t,
            &refs["transformer.context"],
        )
        .unwrap();
    assert!(max_abs_diff(&out, &refs["transformer.out"]) > 1e-2);
}
