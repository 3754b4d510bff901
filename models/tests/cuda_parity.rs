//! The model engine on candle's CUDA device against diffusers' f32 outputs (the same oracle
//! as the CPU tests), in f32 and in bf16, the dtype a GPU worker runs. Needs the `cuda`
//! feature and a GPU; without a driver every test says "skipped: no CUDA driver" and passes.
//!
//! Tolerances, relative to the output's magnitude (`max |ours - diffusers| / max |diffusers|`):
//! f32 1e-4 (cuBLAS sums in another order than torch's CPU kernels; candle leaves TF32 off),
//! bf16 as on the CPU (tests/dtype_parity.rs: 3e-2 transformer, 5e-2 text encoder), whose
//! yardstick is diffusers' own bf16 error on these fixtures. The VAE runs in f32 on every
//! device (pipeline.rs), so it is checked in f32 only, at 1e-3 (twenty-odd convolutions).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use reelfarm_models::wan::text_encoder::{prompt_embeds, PromptTokenizer, TextEncoder};
use reelfarm_models::wan::transformer::WanTransformer;
use reelfarm_models::wan::vae::WanVae;
use reelfarm_models::weights::load_component;

fn gpu_or_skip() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            // candle's error carries a backtrace: its first line says why.
            let why = e.to_string();
            eprintln!(
                "skipped: no CUDA driver ({})",
                why.lines().next().unwrap_or("")
            );
            None
        }
    }
}

fn check(what: &str, ours: &Tensor, theirs: &Tensor, tolerance: f32) {
    let err = relative_error(ours, theirs);
    eprintln!("{what}: relative error {err:.2e} (tolerance {tolerance:.0e})");
    assert!(
        err <= tolerance,
        "{what}: relative error {err:e} > {tolerance:e}"
    );
}

fn tolerance(component: &str, dtype: DType) -> f32 {
    match (component, dtype) {
        (_, DType::F32) => 1e-4,
        ("transformer", _) => 3e-2,
        _ => 5e-2,
    }
}

#[test]
fn transformer_on_cuda_matches_diffusers() {
    let Some(gpu) = gpu_or_skip() else { return };
    for name in CONFIGS {
        let refs = references(name);
        for dtype in [DType::F32, DType::BF16] {
            let model = load_component(
                &fixture(name).join("transformer"),
                dtype,
                &gpu,
                WanTransformer::load,
            )
            .unwrap();
            let input = |k: &str| refs[k].to_device(&gpu).unwrap();
            let out = model
                .forward(
                    &input("transformer.latents"),
                    &input("transformer.timestep"),
                    &input("transformer.context"),
                )
                .unwrap();
            assert!(out.device().is_cuda(), "ran on the GPU");
            check(
                &format!("{name} transformer cuda {dtype:?}"),
                &out,
                &refs["transformer.out"],
                tolerance("transformer", dtype),
            );
        }
    }
}

#[test]
fn text_encoder_on_cuda_matches_transformers() {
    let Some(gpu) = gpu_or_skip() else { return };
    for name in CONFIGS {
        let refs = references(name);
        let call = call(name);
        let max_len = call["max_sequence_length"].as_u64().unwrap() as usize;
        let dir = fixture(name);
        let tok = PromptTokenizer::load(&dir.join("tokenizer/tokenizer.json")).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let enc =
                load_component(&dir.join("text_encoder"), dtype, &gpu, TextEncoder::load).unwrap();
            let ours =
                prompt_embeds(&tok, &enc, call["prompt"].as_str().unwrap(), max_len, &gpu).unwrap();
            check(
                &format!("{name} text encoder cuda {dtype:?}"),
                &ours,
                &refs["text.prompt_embeds"],
                tolerance("text", dtype),
            );
        }
    }
}

#[test]
fn vae_decode_on_cuda_matches_diffusers() {
    let Some(gpu) = gpu_or_skip() else { return };
    for name in CONFIGS {
        let refs = references(name);
        let vae =
            load_component(&fixture(name).join("vae"), DType::F32, &gpu, WanVae::load).unwrap();
        let out = vae
            .decode(&refs["vae.latents"].to_device(&gpu).unwrap())
            .unwrap();
        check(
            &format!("{name} vae decode cuda F32"),
            &out,
            &refs["vae.decoded"],
            1e-3,
        );
    }
}
