//! A whole N-step text-to-video sample with classifier-free guidance equals
//! `WanPipeline(..., latents=initial, output_type="latent")` on both tiny fixtures, for
//! both samplers: tokenizer, UMT5, transformer and scheduler together.

mod common;

use candle_core::{DType, Device};
use common::*;
use reelfarm_models::schedulers::flow_euler::FlowEuler;
use reelfarm_models::schedulers::unipc::UniPc;
use reelfarm_models::schedulers::FlowSampler;
use reelfarm_models::wan::sampling::{denoise, Conditioning};
use reelfarm_models::wan::text_encoder::{prompt_embeds, PromptTokenizer, TextEncoder};
use reelfarm_models::wan::transformer::WanTransformer;
use reelfarm_models::weights::load_component;

/// Errors compound over steps and through guidance (scale 5 amplifies the cond/uncond
/// difference); 1e-4 absolute on latents of magnitude ~1 is still far below a real mismatch.
const TOLERANCE: f32 = 1e-4;

fn json(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_guided_sample_equals_wan_pipeline_with_unipc_and_with_euler() {
    let cpu = Device::Cpu;
    for name in CONFIGS {
        let dir = fixture(name);
        let refs = references(name);
        let call = call(name);
        let max_len = call["max_sequence_length"].as_u64().unwrap() as usize;
        let steps = call["num_inference_steps"].as_u64().unwrap() as usize;
        let guidance = call["guidance_scale"].as_f64().unwrap();
        let shift = call["flow_shift"].as_f64().unwrap();

        let tok = PromptTokenizer::load(&dir.join("tokenizer/tokenizer.json")).unwrap();
        let enc = load_component(
            &dir.join("text_encoder"),
            DType::F32,
            &cpu,
            TextEncoder::load,
        )
        .unwrap();
        let prompt =
            prompt_embeds(&tok, &enc, call["prompt"].as_str().unwrap(), max_len, &cpu).unwrap();
        let negative = prompt_embeds(
            &tok,
            &enc,
            call["negative_prompt"].as_str().unwrap(),
            max_len,
            &cpu,
        )
        .unwrap();
        let transformer = load_component(
            &dir.join("transformer"),
            DType::F32,
            &cpu,
            WanTransformer::load,
        )
        .unwrap();
        let text = Conditioning {
            prompt: &prompt,
            negative: Some(&negative),
            guidance_scale: guidance,
        };

        let scheduler_config = json(dir.join("scheduler/scheduler_config.json"));
        let mut unipc = UniPc::from_config(&scheduler_config, steps).unwrap();
        let mut euler = FlowEuler::new(steps, shift);
        for (sampler, key) in [
            (&mut unipc as &mut dyn FlowSampler, "sample.unipc"),
            (&mut euler as &mut dyn FlowSampler, "sample.euler"),
        ] {
            let mut seen = vec![];
            let out = denoise(
                &transformer,
                sampler,
                refs["sample.initial"].clone(),
                &text,
                |i, n| seen.push((i, n)),
            )
            .unwrap();
            assert_eq!(
                seen.last(),
                Some(&(steps, steps)),
                "progress reported per step"
            );
            let diff = max_abs_diff(&out, &refs[key]);
            eprintln!("{name} {key}: max diff {diff:e}");
            assert_close(&format!("{name} {key}"), &out, &refs[key], TOLERANCE);
        }
    }
}
