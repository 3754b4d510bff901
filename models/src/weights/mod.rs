//! One model component's weights (a diffusers subfolder such as `transformer/`): its
//! safetensors files, a single file or shards named by `*.safetensors.index.json`,
//! memory-mapped behind a candle `VarBuilder`.

pub mod check;
pub mod random;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// A component folder whose weights could not be opened, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{dir}: no .safetensors file")]
    NoWeights { dir: PathBuf },
    #[error("{file}: {reason}")]
    BadIndex { file: PathBuf, reason: String },
    #[error("{dir}: {source}")]
    Open {
        dir: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}

/// The safetensors files of a component folder: the shards its index lists (each once, in
/// the index's order), else every `*.safetensors` file in it, sorted.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| WeightsError::NoWeights { dir: dir.into() })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if let Some(index) = entries
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".safetensors.index.json"))
    {
        let bad = |reason: String| WeightsError::BadIndex {
            file: index.clone(),
            reason,
        };
        let text = std::fs::read_to_string(index).map_err(|e| bad(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no weight_map object".into()))?;
        let mut files: Vec<PathBuf> = vec![];
        for shard in map.values() {
            let name = shard
                .as_str()
                .ok_or_else(|| bad("a weight_map value is not a file name".into()))?;
            let path = dir.join(name);
            if !path.is_file() {
                return Err(bad(format!("shard {name} is missing")));
            }
            if !files.contains(&path) {
                files.push(path);
            }
        }
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(WeightsError::NoWeights { dir: dir.into() });
    }
    Ok(files)
}

/// A `VarBuilder` over the component's weights, memory-mapped (nothing is read until a
/// tensor is asked for), converted to `dtype` on `device` tensor by tensor.
pub fn var_builder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, WeightsError> {
    let files = safetensors_files(dir)?;
    // SAFETY: the files are mapped read-only; a model folder is not rewritten while a
    // worker serves it (the README says to replace a model by a new folder name).
    unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }.map_err(|source| {
        WeightsError::Open {
            dir: dir.into(),
            source,
        }
    })
}

/// `dir/config.json` of a component, parsed as `C`; the error names the file.
pub fn read_config<C: serde::de::DeserializeOwned>(dir: &Path) -> Result<C, String> {
    let file = dir.join("config.json");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}: not valid JSON for its class: {e}", file.display()))
}

/// Loads one component folder: its `config.json` as `C`, then `build` over its weights
/// (memory-mapped, as `dtype` on `device`).
pub fn load_component<C: serde::de::DeserializeOwned, T>(
    dir: &Path,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(C, VarBuilder<'static>) -> candle_core::Result<T>,
) -> anyhow::Result<T> {
    let cfg = read_config(dir).map_err(anyhow::Error::msg)?;
    let vb = var_builder(dir, dtype, device)?;
    build(cfg, vb).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}
