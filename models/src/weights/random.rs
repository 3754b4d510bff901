//! Random weights of a real architecture, written as a diffusers component folder: for the
//! tests and benchmarks of published configs whose weights may not be downloaded here.
//! The tensors to write come from [`super::check::architecture`], so their names and shapes
//! are exactly what the loader asks for.
//!
//! Values are seeded and scaled so activations stay O(1) through every block (a finite
//! output then means the arithmetic is sound, not that the weights were too small to
//! matter): uniform in ±1/sqrt(fan_in) for weight matrices and kernels (torch's
//! `nn.Linear` bound), ±1/sqrt(dim) for the modulation tables (diffusers draws them as
//! randn/sqrt(dim)), ones for norm scales, ±0.02 for biases. Stored in bf16.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

/// Writes `tensors` under `dir` as `diffusion_pytorch_model.safetensors`, or, `sharded`, as
/// diffusers shards one transformer block per file (plus one for the rest) with the
/// `diffusion_pytorch_model.safetensors.index.json` that names each tensor's file. One
/// file's tensors are in memory at a time (~93 MB per 1.3B block in bf16).
pub fn write_random_component(
    dir: &Path,
    tensors: &[(String, Vec<usize>)],
    sharded: bool,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    if !sharded {
        return write_file(
            &dir.join("diffusion_pytorch_model.safetensors"),
            tensors,
            &mut rng,
        );
    }
    let mut shards: BTreeMap<String, Vec<(String, Vec<usize>)>> = BTreeMap::new();
    for (name, shape) in tensors {
        let shard = match name.strip_prefix("blocks.") {
            Some(rest) => format!("block{:03}", rest.split('.').next().unwrap_or("")),
            None => "rest".into(),
        };
        shards
            .entry(shard)
            .or_default()
            .push((name.clone(), shape.clone()));
    }
    let total = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, members) in shards.values().enumerate() {
        let file = format!(
            "diffusion_pytorch_model-{:05}-of-{total:05}.safetensors",
            i + 1
        );
        for (name, _) in members {
            weight_map.insert(name.clone(), file.clone().into());
        }
        write_file(&dir.join(&file), members, &mut rng)?;
    }
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::to_vec_pretty(
            &serde_json::json!({ "metadata": {}, "weight_map": weight_map }),
        )?,
    )?;
    Ok(())
}

fn write_file(
    file: &Path,
    tensors: &[(String, Vec<usize>)],
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<()> {
    let mut data = HashMap::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let mut uniform =
            |a: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-a..a)).collect() };
        let values = if name.ends_with("scale_shift_table") {
            uniform(1.0 / (*shape.last().unwrap_or(&1) as f32).sqrt())
        } else if name.ends_with("gamma") || (shape.len() == 1 && name.ends_with("weight")) {
            vec![1.0; n]
        } else if shape.len() >= 2 {
            uniform(1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt())
        } else {
            uniform(0.02)
        };
        let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?.to_dtype(DType::BF16)?;
        data.insert(name.clone(), t);
    }
    candle_core::safetensors::save(&data, file)?;
    Ok(())
}
