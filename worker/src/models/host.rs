//! The model a worker has loaded: one at a time (a GPU holds one large model; loading the
//! next one drops the last), kept between tasks, so the text, denoise and decode tasks of
//! a stream of jobs for the same model load it once. Loading runs on the task's blocking
//! thread; tasks for the loaded model share it.
//!
//! The weights' hash goes into every manifest of a clip the model made: SHA-256 over the
//! sorted list of `path: sha256` lines of every `*.safetensors` and `config.json` file
//! under the model folder, computed once when the model is loaded (a 1.3B model's 5.7 GB
//! take about ten seconds; it is the exact identity of what ran, whatever the folder is
//! called).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use parking_lot::Mutex;
use reelfarm_models::wan::pipeline::{default_dtype, WanModel};
use sha2::{Digest, Sha256};

/// A loaded model with its identity.
pub struct LoadedModel {
    pub name: String,
    pub model: WanModel,
    /// See the module docs.
    pub weights_sha256: String,
}

/// The worker's served models and the one loaded.
pub struct ModelHost {
    root: Option<PathBuf>,
    /// Names that passed the start-up check.
    served: Vec<String>,
    device: Device,
    loaded: Mutex<Option<Arc<LoadedModel>>>,
}

impl ModelHost {
    /// `root` is `--models`; `served` the names its scan accepted; `device` where the
    /// models run (the worker's GPU under the CUDA engine, in bf16; else the CPU, in f32).
    pub fn new(root: Option<PathBuf>, served: Vec<String>, device: Device) -> Self {
        Self {
            root,
            served,
            device,
            loaded: Mutex::new(None),
        }
    }

    /// The model `name`, loading it (and dropping the one loaded before) if needed.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedModel>, String> {
        let root = self
            .root
            .as_ref()
            .filter(|_| self.served.iter().any(|s| s == name))
            .ok_or_else(|| format!("model {name:?} is not served by this worker"))?;
        let mut loaded = self.loaded.lock();
        if let Some(m) = loaded.as_ref().filter(|m| m.name == name) {
            return Ok(m.clone());
        }
        // Drop the old model before loading the new one: both may not fit.
        *loaded = None;
        let dir = root.join(name);
        let started = std::time::Instant::now();
        let weights_sha256 = weights_sha256(&dir).map_err(|e| format!("model {name:?}: {e}"))?;
        let model = WanModel::load(&dir, default_dtype(&self.device), &self.device)
            .map_err(|e| format!("model {name:?}: {e:#}"))?;
        tracing::info!(model = %name, weights_sha256 = %weights_sha256,
            seconds = started.elapsed().as_secs_f64(), "model loaded");
        let m = Arc::new(LoadedModel {
            name: name.to_string(),
            model,
            weights_sha256,
        });
        *loaded = Some(m.clone());
        Ok(m)
    }
}

/// See the module docs.
pub fn weights_sha256(dir: &Path) -> std::io::Result<String> {
    let mut files = BTreeMap::new();
    collect(dir, dir, &mut files)?;
    let mut all = Sha256::new();
    for (rel, path) in files {
        let mut file = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        all.update(format!("{rel}: {}\n", hex::encode(h.finalize())));
    }
    Ok(hex::encode(all.finalize()))
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".safetensors") || name == "config.json" {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.insert(rel.to_string_lossy().into_owned(), path);
            }
        }
    }
    Ok(())
}
