//! Half precision on CPU: the tiny fixtures loaded through `load_component` in bf16 and in
//! f16 (the weights rounded on load, as `from_pretrained(torch_dtype=...)` does) still give
//! diffusers' f32 outputs, within tolerances set by each format's precision.
//!
//! The error is measured relative to the output's magnitude, `max |ours - diffusers| /
//! max |diffusers|`, because half formats have a relative precision: the unit roundoff is
//! 2^-9 = 2.0e-3 for bf16 (8 significant bits) and 2^-12 = 2.4e-4 for f16 (11 bits). Every
//! weight and every stored activation is rounded, and each layer sums many such products, so
//! a few layers end at a few roundoffs to a few tens of them. The yardstick for each
//! tolerance is diffusers' own error in that dtype on the same fixture and inputs (its bf16
//! or f16 run against its f32 reference; torch 2.15, diffusers 0.42.1, transformers 5.24,
//! CPU), quoted beside each tolerance with ours; each tolerance is 2-5 times the larger.
//! A real mistake (a dropped norm, a wrong rotary pair, a bad sign) is O(0.1-1) relative.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use reelfarm_models::wan::text_encoder::{prompt_embeds, PromptTokenizer, TextEncoder};
use reelfarm_models::wan::transformer::WanTransformer;
use reelfarm_models::wan::vae::WanVae;
use reelfarm_models::weights::load_component;

fn check(what: &str, ours: &Tensor, theirs: &Tensor, dtype: DType, tolerance: f32) {
    assert_eq!(ours.dtype(), dtype, "{what}: computed in {dtype:?}");
    let err = relative_error(ours, theirs);
    eprintln!("{what}: max |ours - diffusers f32| / max |diffusers| = {err:.2e} (tolerance {tolerance:.0e})");
    assert!(
        err <= tolerance,
        "{what}: relative error {err:e} > {tolerance:e}"
    );
    // A low-precision run that equals f32 to the last bit did not run in low precision.
    assert!(err > 0.0, "{what}: exactly the f32 result");
}

const HALF: [DType; 2] = [DType::BF16, DType::F16];

/// Transformer (1-2 blocks), relative error measured on wan-tiny-a / wan-tiny-b: bf16 ours
/// 8.7e-3 / 7.9e-3, diffusers 5.8e-3 / 6.2e-3; f16 ours 7.9e-4 / 6.2e-4, diffusers
/// 9.2e-4 / 6.9e-4.
fn transformer_tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => 3e-2,
        _ => 4e-3,
    }
}

#[test]
fn transformer_in_bf16_and_f16_is_close_to_diffusers_f32() {
    for name in CONFIGS {
        let refs = references(name);
        for dtype in HALF {
            let dir = fixture(name).join("transformer");
            let model = load_component(&dir, dtype, &Device::Cpu, WanTransformer::load).unwrap();
            assert_eq!(model.dtype(), dtype);
            // f32 inputs, as the sampler holds them: the model casts them to its dtype.
            let out = model
                .forward(
                    &refs["transformer.latents"],
                    &refs["transformer.timestep"],
                    &refs["transformer.context"],
                )
                .unwrap();
            check(
                &format!("{name} transformer {dtype:?}"),
                &out,
                &refs["transformer.out"],
                dtype,
                transformer_tolerance(dtype),
            );
        }
    }
}

/// VAE decoder: ~20 convolutions deep on random weights, which amplify rounding far more
/// than trained ones: f16 ours 2.3e-2 / 3.3e-2, diffusers 1.7e-2 / 3.5e-2. In bf16
/// diffusers' own decode is 1.2e-1 / 2.2e-1 off its f32 one on these fixtures, so no sharp
/// bf16 bound exists here (diffusers' Wan examples keep the VAE in f32 for this reason).
fn vae_tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => 5e-1,
        _ => 1e-1,
    }
}

fn vae_decode_is_close_to_diffusers_f32(dtype: DType) {
    for name in CONFIGS {
        let refs = references(name);
        let dir = fixture(name).join("vae");
        let vae = load_component(&dir, dtype, &Device::Cpu, WanVae::load).unwrap();
        let latents = refs["vae.latents"].to_dtype(dtype).unwrap();
        let out = vae.decode(&latents).unwrap();
        check(
            &format!("{name} vae decode {dtype:?}"),
            &out,
            &refs["vae.decoded"],
            dtype,
            vae_tolerance(dtype),
        );
    }
}

#[test]
fn vae_decode_in_f16_is_close_to_diffusers_f32() {
    vae_decode_is_close_to_diffusers_f32(DType::F16);
}

#[test]
#[ignore = "candle 0.11's CPU conv2d has no bf16 kernel (unsupported dtype BF16 for op matmul)"]
fn vae_decode_in_bf16_is_close_to_diffusers_f32() {
    vae_decode_is_close_to_diffusers_f32(DType::BF16);
}

/// UMT5 (2-3 blocks), prompt and negative embeddings: bf16 ours up to 1.9e-2,
/// transformers up to 1.5e-2; f16 ours up to 1.5e-3, transformers up to 1.5e-3 (with its
/// f32 `wo`, which the encoder mirrors in f16).
fn text_tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => 5e-2,
        _ => 5e-3,
    }
}

#[test]
fn text_encoder_in_bf16_and_f16_is_close_to_diffusers_f32() {
    for name in CONFIGS {
        let refs = references(name);
        let call = call(name);
        let max_len = call["max_sequence_length"].as_u64().unwrap() as usize;
        let dir = fixture(name);
        let tok = PromptTokenizer::load(&dir.join("tokenizer/tokenizer.json")).unwrap();
        for dtype in HALF {
            let enc = load_component(
                &dir.join("text_encoder"),
                dtype,
                &Device::Cpu,
                TextEncoder::load,
            )
            .unwrap();
            for (key, embeds) in [
                ("prompt", "text.prompt_embeds"),
                ("negative_prompt", "text.negative_embeds"),
            ] {
                let prompt = call[key].as_str().unwrap();
                let ours = prompt_embeds(&tok, &enc, prompt, max_len, &Device::Cpu).unwrap();
                check(
                    &format!("{name} {embeds} {dtype:?}"),
                    &ours,
                    &refs[embeds],
                    dtype,
                    text_tolerance(dtype),
                );
            }
        }
    }
}
