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

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Device;
use parking_lot::Mutex;
use reelfarm_models::wan::pipeline::{default_dtype, WanModel};
use reelfarm_proto::v1;
use sha2::{Digest, Sha256};

/// A loaded model with its identity.
pub struct LoadedModel {
    pub name: String,
    pub model: WanModel,
    /// See the module docs.
    pub weights_sha256: String,
    /// Bytes of the tensors it uses, as the start-up check counted them
    /// (ServedModel.weight_bytes).
    pub weight_bytes: u64,
}

/// The worker's served models and the one loaded.
pub struct ModelHost {
    root: Option<PathBuf>,
    /// Names that passed the start-up check, with their weight bytes from it.
    served: HashMap<String, u64>,
    device: Device,
    loaded: Mutex<Option<Arc<LoadedModel>>>,
    /// Bumped whenever the loaded model changes; `reported` is the value the coordinator
    /// last heard (see [`ModelHost::status_if_changed`]).
    generation: AtomicU64,
    reported: AtomicU64,
}

impl ModelHost {
    /// `root` is `--models`; `served` the models its scan accepted (name → weight bytes);
    /// `device` where the models run (the worker's GPU under the CUDA engine, in bf16; else
    /// the CPU, in f32).
    pub fn new(root: Option<PathBuf>, served: HashMap<String, u64>, device: Device) -> Self {
        Self {
            root,
            served,
            device,
            loaded: Mutex::new(None),
            generation: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// What is loaded now, as RegisterWorker and WorkerStatus carry it; marks it reported.
    /// While a load holds the lock (seconds to minutes) it answers nothing loaded without
    /// waiting, and the next status after the load says what is.
    pub fn resident(&self) -> Vec<v1::ResidentModel> {
        let Some(loaded) = self.loaded.try_lock() else {
            return Vec::new();
        };
        self.reported
            .store(self.generation.load(Ordering::SeqCst), Ordering::SeqCst);
        loaded
            .iter()
            .map(|m| v1::ResidentModel {
                name: m.name.clone(),
                weight_bytes: m.weight_bytes,
            })
            .collect()
    }

    /// A WorkerStatus when the loaded model changed since the coordinator last heard.
    pub fn status_if_changed(&self) -> Option<v1::WorkerStatus> {
        (self.generation.load(Ordering::SeqCst) != self.reported.load(Ordering::SeqCst)).then(
            || v1::WorkerStatus {
                resident: self.resident(),
            },
        )
    }

    /// The model `name`, loading it (and dropping the one loaded before) if needed.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedModel>, String> {
        let (root, &weight_bytes) = self
            .root
            .as_ref()
            .zip(self.served.get(name))
            .ok_or_else(|| format!("model {name:?} is not served by this worker"))?;
        let mut loaded = self.loaded.lock();
        if let Some(m) = loaded.as_ref().filter(|m| m.name == name) {
            return Ok(m.clone());
        }
        // Drop the old model before loading the new one: both may not fit.
        if loaded.take().is_some() {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
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
            weight_bytes,
        });
        *loaded = Some(m.clone());
        self.generation.fetch_add(1, Ordering::SeqCst);
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
