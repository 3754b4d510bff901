//! Fixtures made by `oracle/make_wan_references.py` and the comparison the parity tests use.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// The tiny random Wan pipelines diffusers saved, by folder name.
pub const CONFIGS: [&str; 2] = ["wan-tiny-a", "wan-tiny-b"];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `references.safetensors` of a fixture: diffusers' outputs, by name.
pub fn references(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("references.safetensors"), &Device::Cpu)
        .expect("reading references.safetensors")
}

/// `references.json` of a fixture: the prompts and call parameters.
pub fn call(name: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(fixture(name).join("references.json")).expect("references.json");
    serde_json::from_str(&text).expect("references.json is JSON")
}

/// `max |t|` as f32.
pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(candle_core::DType::F32)
        .and_then(|t| t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .unwrap()
}

/// Largest absolute difference, after checking the shapes agree.
pub fn max_abs_diff(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims(), "shapes differ");
    let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
    max_abs(&(f32(ours) - f32(theirs)).unwrap())
}

/// Asserts `ours` equals diffusers' `theirs` within `tol` (absolute, f32 on CPU).
pub fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor, tol: f32) {
    let diff = max_abs_diff(ours, theirs);
    assert!(
        diff <= tol,
        "{what}: max |ours - diffusers| = {diff:e} > {tol:e}"
    );
}

/// `max |ours - theirs| / max |theirs|`, with `ours` on any device (copied to the CPU).
pub fn relative_error(ours: &Tensor, theirs: &Tensor) -> f32 {
    let ours = ours.to_device(&Device::Cpu).unwrap();
    max_abs_diff(&ours, theirs) / max_abs(theirs)
}

/// A tensor's values as f32 bits: equal means bit for bit, not within a tolerance.
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}
