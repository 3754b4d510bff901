//! The flow-matching samplers against diffusers' own runs, recorded by
//! `oracle/make_scheduler_references.py` in `fixtures/schedulers/`.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{fixture, max_abs_diff};
use reelfarm_models::schedulers::flow_euler::FlowEuler;
use reelfarm_models::schedulers::unipc::UniPc;
use reelfarm_models::schedulers::FlowSampler;

/// (num_inference_steps, shift) as in the oracle script.
const CASES: [(usize, f64); 3] = [(3, 3.0), (7, 5.0), (1, 3.0)];
const TIMESTEP_TOL: f64 = 1e-4;
const SAMPLE_TOL: f32 = 1e-5;

fn reference(kind: &str, steps: usize, shift: f64) -> HashMap<String, Tensor> {
    let path = fixture("schedulers").join(format!("{kind}-{steps}-{shift:?}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn wan_config() -> serde_json::Value {
    let text =
        std::fs::read_to_string(fixture("wan-tiny-a").join("scheduler/scheduler_config.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs `sampler` on the recorded initial sample and model outputs, comparing timesteps,
/// sigmas and the sample after every step; returns the largest sample difference.
fn check(
    what: &str,
    sampler: &mut dyn FlowSampler,
    sigmas: &[f32],
    refs: &HashMap<String, Tensor>,
) -> f32 {
    let want_t: Vec<f64> = refs["timesteps"].to_vec1().unwrap();
    let got_t = sampler.timesteps().to_vec();
    assert_eq!(got_t.len(), want_t.len(), "{what}: number of timesteps");
    for (i, (g, w)) in got_t.iter().zip(&want_t).enumerate() {
        assert!(
            (g - w).abs() <= TIMESTEP_TOL,
            "{what}: timestep {i}: ours {g}, diffusers {w}"
        );
    }
    let want_s: Vec<f32> = refs["sigmas"].to_vec1().unwrap();
    assert_eq!(sigmas.len(), want_s.len(), "{what}: number of sigmas");
    let sigma_diff = sigmas
        .iter()
        .zip(&want_s)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(
        sigma_diff <= 1e-7,
        "{what}: sigmas {sigmas:?} vs diffusers {want_s:?}"
    );

    let outputs = &refs["model_outputs"];
    let samples = &refs["samples"];
    let mut sample = refs["initial"].clone();
    let mut worst = 0f32;
    for i in 0..want_t.len() {
        let v = outputs.get(i).unwrap();
        sample = sampler.step(&v, i, &sample).unwrap();
        let d = max_abs_diff(&sample, &samples.get(i).unwrap());
        eprintln!("{what}: step {i}: max |ours - diffusers| = {d:e}");
        assert!(
            d <= SAMPLE_TOL,
            "{what}: step {i}: max |ours - diffusers| = {d:e} > {SAMPLE_TOL:e}"
        );
        worst = worst.max(d);
    }
    worst
}

#[test]
fn flow_euler_matches_diffusers() {
    for (steps, shift) in CASES {
        let refs = reference("euler", steps, shift);
        let mut euler = FlowEuler::new(steps, shift);
        let sigmas = euler.sigmas().to_vec();
        let worst = check(
            &format!("euler {steps} steps, shift {shift}"),
            &mut euler,
            &sigmas,
            &refs,
        );
        eprintln!("euler {steps} steps, shift {shift}: worst {worst:e}");
    }
}

#[test]
fn unipc_matches_diffusers() {
    for (steps, shift) in CASES {
        let refs = reference("unipc", steps, shift);
        let mut config = wan_config();
        config["flow_shift"] = serde_json::json!(shift);
        let mut unipc = UniPc::from_config(&config, steps).unwrap();
        let sigmas = unipc.sigmas().to_vec();
        let what = format!("unipc {steps} steps, shift {shift}");
        let worst = check(&what, &mut unipc, &sigmas, &refs);
        eprintln!("{what}: worst {worst:e}");

        // The defaults constructor is the same sampler; a second run (from step 0) restarts.
        let mut defaults = UniPc::new(steps, shift);
        check(
            &format!("{what} (UniPc::new)"),
            &mut defaults,
            &sigmas,
            &refs,
        );
        check(&format!("{what} (rerun)"), &mut defaults, &sigmas, &refs);
    }
}

#[test]
fn unipc_steps_must_run_in_order() {
    let mut unipc = UniPc::new(3, 3.0);
    let x = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(unipc.step(&x, 1, &x).is_err());
    unipc.step(&x, 0, &x).unwrap();
    assert!(unipc.step(&x, 2, &x).is_err());
    unipc.step(&x, 1, &x).unwrap();
    unipc.step(&x, 2, &x).unwrap();
    assert!(unipc.step(&x, 3, &x).is_err());
}

#[test]
fn unipc_refuses_unsupported_settings() {
    let cases: [(&str, serde_json::Value); 9] = [
        ("prediction_type", serde_json::json!("epsilon")),
        ("use_flow_sigmas", serde_json::json!(false)),
        ("solver_order", serde_json::json!(3)),
        ("thresholding", serde_json::json!(true)),
        ("use_karras_sigmas", serde_json::json!(true)),
        ("use_exponential_sigmas", serde_json::json!(true)),
        ("use_dynamic_shifting", serde_json::json!(true)),
        ("solver_type", serde_json::json!("bh1")),
        ("predict_x0", serde_json::json!(false)),
    ];
    for (field, value) in cases {
        let mut config = wan_config();
        config[field] = value;
        let err = UniPc::from_config(&config, 4).expect_err(field);
        assert!(
            err.contains(field),
            "error for {field} does not name it: {err}"
        );
    }
    // diffusers' default prediction_type is epsilon: a config without it is refused too.
    let mut config = wan_config();
    config.as_object_mut().unwrap().remove("prediction_type");
    assert!(UniPc::from_config(&config, 4)
        .unwrap_err()
        .contains("prediction_type"));
}
