//! The models a worker can serve: `--models PATH` is a folder whose every subfolder is one
//! model in the diffusers layout, named by the subfolder. Each is checked at start, from
//! its JSON configs and the safetensors headers only (see [`crate::weights::check`]); a
//! broken folder is reported with the file and tensor named and the rest are still served.

use std::path::{Path, PathBuf};

use crate::wan::config::TransformerConfig;
use crate::wan::text_encoder::{TextEncoder, Umt5Config};
use crate::wan::transformer::WanTransformer;
use crate::wan::vae::{VaeConfig, WanVae};
use crate::weights::check::check_component;
use crate::weights::read_config;

/// The pipeline class of the one family this engine runs.
pub const WAN_PIPELINE: &str = "WanPipeline";

/// A model folder that passed every check.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The subfolder's name: what `JobSpec.model` names.
    pub name: String,
    pub family: String,
    pub path: PathBuf,
    /// Parameters of the checked components (transformer, text encoder, VAE decoder).
    pub parameters: u64,
    /// Dtypes of the weights on disk, e.g. `["BF16"]`.
    pub dtypes: Vec<String>,
    /// Bytes of the checked components' weights on disk: the memory they take loaded in
    /// that dtype. Activations are not counted (they depend on the clip's size).
    pub weight_bytes: u64,
    /// Parts that are in the folder but that this engine cannot run yet, so the model can
    /// be listed but not yet render a clip. Empty when the model can serve jobs.
    pub not_servable: Vec<String>,
}

/// A model folder that failed a check, with every problem found.
#[derive(Debug, Clone)]
pub struct BrokenModel {
    pub name: String,
    pub path: PathBuf,
    pub problems: Vec<String>,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Registry {
    pub models: Vec<ModelInfo>,
    pub broken: Vec<BrokenModel>,
}

/// Scans `root`; an unreadable root is an error, a broken model folder is not.
pub fn scan(root: &Path) -> Result<Registry, String> {
    let entries =
        std::fs::read_dir(root).map_err(|e| format!("--models {}: {e}", root.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut registry = Registry::default();
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match check_model(&name, &dir) {
            Ok(info) => registry.models.push(info),
            Err(problems) => registry.broken.push(BrokenModel {
                name,
                path: dir,
                problems,
            }),
        }
    }
    Ok(registry)
}

fn read_json(file: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", file.display()))
}

/// The class a `model_index.json` names for a component (`["diffusers", "Class"]`).
fn component_class(index: &serde_json::Value, component: &str) -> Option<String> {
    index.get(component)?.get(1)?.as_str().map(str::to_string)
}

/// Checks one model folder: its index, its configs and the transformer's every tensor.
pub fn check_model(name: &str, dir: &Path) -> Result<ModelInfo, Vec<String>> {
    let index_path = dir.join("model_index.json");
    let index = read_json(&index_path).map_err(|e| vec![e])?;
    let class = index
        .get("_class_name")
        .and_then(|c| c.as_str())
        .unwrap_or("");
    if class != WAN_PIPELINE {
        return Err(vec![format!(
            "{}: _class_name {class:?} is not a pipeline this worker runs ({WAN_PIPELINE})",
            index_path.display()
        )]);
    }
    let mut problems = vec![];
    for (component, expected) in [
        ("transformer", "WanTransformer3DModel"),
        ("vae", "AutoencoderKLWan"),
        ("text_encoder", "UMT5EncoderModel"),
    ] {
        let found = component_class(&index, component);
        if found.as_deref() != Some(expected) {
            problems.push(format!(
                "{}: {component} is {found:?}, expected {expected}",
                index_path.display()
            ));
        }
    }
    for file in [
        "vae/config.json",
        "text_encoder/config.json",
        "scheduler/scheduler_config.json",
    ] {
        if let Err(e) = read_json(&dir.join(file)) {
            problems.push(e);
        }
    }
    if !dir.join("tokenizer/tokenizer.json").is_file() {
        problems.push(format!(
            "{}: missing",
            dir.join("tokenizer/tokenizer.json").display()
        ));
    }

    let transformer_dir = dir.join("transformer");
    let mut info = ModelInfo {
        name: name.to_string(),
        family: "wan2.1-t2v".into(),
        path: dir.to_path_buf(),
        parameters: 0,
        dtypes: vec![],
        weight_bytes: 0,
        not_servable: vec![],
    };
    let transformer = check::<TransformerConfig, _>(&transformer_dir, WanTransformer::load);
    let text_encoder = check::<Umt5Config, _>(&dir.join("text_encoder"), TextEncoder::load);
    let vae = check::<VaeConfig, _>(&dir.join("vae"), WanVae::load);
    for result in [transformer, text_encoder, vae] {
        match result {
            Err(mut p) => problems.append(&mut p),
            Ok(report) => {
                info.parameters += report.parameters;
                info.weight_bytes += report.bytes;
                for d in report.dtypes {
                    if !info.dtypes.contains(&d) {
                        info.dtypes.push(d);
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(info)
    } else {
        Err(problems)
    }
}

/// Parses `dir/config.json` as `C` and checks every tensor `build` asks for.
fn check<C: serde::de::DeserializeOwned, T>(
    dir: &Path,
    build: impl FnOnce(C, candle_nn::VarBuilder) -> candle_core::Result<T>,
) -> Result<crate::weights::check::CheckReport, Vec<String>> {
    let cfg: C = read_config(dir).map_err(|e| vec![e])?;
    let report = check_component(dir, |vb| build(cfg, vb)).map_err(|e| vec![e.to_string()])?;
    if report.problems.is_empty() {
        Ok(report)
    } else {
        Err(report.problems)
    }
}
