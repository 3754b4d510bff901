//! The models a worker holds loaded: a pool bounded by a memory budget
//! (`--model-memory-gib`), kept between tasks, so the text, denoise and decode tasks of a
//! stream of jobs for the same models load each once. A model that does not fit beside the
//! resident ones evicts the least recently used first (their memory is freed when the
//! last task using them ends); one larger than the whole budget is loaded alone (the
//! coordinator's memory fit keeps models larger than the device away). Loads run one at
//! a time on the task's blocking thread; tasks for resident models go on meanwhile.
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

/// The worker's served models and the pool of loaded ones.
pub struct ModelHost {
    root: Option<PathBuf>,
    /// Names that passed the start-up check, with their weight bytes from it.
    served: HashMap<String, u64>,
    device: Device,
    /// Bytes of weights the pool holds at most (see the module docs).
    budget: u64,
    /// Most recently used first.
    pool: Mutex<Vec<Arc<LoadedModel>>>,
    /// Held while a model loads: one load at a time.
    loading: Mutex<()>,
    /// Bumped whenever the pool changes; `reported` is the value the coordinator last
    /// heard (see [`ModelHost::status_if_changed`]).
    generation: AtomicU64,
    reported: AtomicU64,
}

impl ModelHost {
    /// `root` is `--models`; `served` the models its scan accepted (name → weight bytes);
    /// `device` where the models run (the worker's GPU under the CUDA engine, in bf16; else
    /// the CPU, in f32); `budget` the pool's bytes of weights.
    pub fn new(
        root: Option<PathBuf>,
        served: HashMap<String, u64>,
        device: Device,
        budget: u64,
    ) -> Self {
        Self {
            root,
            served,
            device,
            budget,
            pool: Mutex::new(Vec::new()),
            loading: Mutex::new(()),
            generation: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// The pool's budget, as RegisterWorker.model_memory_budget_bytes carries it.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// What is loaded now, most recently used first, as RegisterWorker and WorkerStatus
    /// carry it; marks it reported.
    pub fn resident(&self) -> Vec<v1::ResidentModel> {
        let pool = self.pool.lock();
        self.reported
            .store(self.generation.load(Ordering::SeqCst), Ordering::SeqCst);
        let memory = if self.device.is_cuda() { "gpu" } else { "host" };
        pool.iter()
            .map(|m| v1::ResidentModel {
                name: m.name.clone(),
                weight_bytes: m.weight_bytes,
                memory: memory.into(),
            })
            .collect()
    }

    /// A WorkerStatus when the pool changed since the coordinator last heard, with the
    /// device's free memory `gpu_free` (0 on the CPU).
    pub fn status_if_changed(&self, gpu_free: u64) -> Option<v1::WorkerStatus> {
        (self.generation.load(Ordering::SeqCst) != self.reported.load(Ordering::SeqCst)).then(
            || v1::WorkerStatus {
                resident: self.resident(),
                gpu_free_memory_bytes: gpu_free,
            },
        )
    }

    /// The resident model `name`, made the most recently used.
    fn touch(&self, name: &str) -> Option<Arc<LoadedModel>> {
        let mut pool = self.pool.lock();
        let at = pool.iter().position(|m| m.name == name)?;
        let m = pool.remove(at);
        pool.insert(0, m.clone());
        if at != 0 {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Some(m)
    }

    /// The model `name`, loading it (and evicting the least recently used ones that leave
    /// no room for it) if needed.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedModel>, String> {
        let (root, &weight_bytes) = self
            .root
            .as_ref()
            .zip(self.served.get(name))
            .ok_or_else(|| format!("model {name:?} is not served by this worker"))?;
        if let Some(m) = self.touch(name) {
            return Ok(m);
        }
        let _loading = self.loading.lock();
        // Loaded by another task while this one waited for the load lock.
        if let Some(m) = self.touch(name) {
            return Ok(m);
        }
        {
            // Evict first: both may not fit.
            let mut pool = self.pool.lock();
            while !pool.is_empty()
                && pool.iter().map(|m| m.weight_bytes).sum::<u64>() + weight_bytes > self.budget
            {
                let evicted = pool.pop().expect("non-empty");
                tracing::info!(model = %evicted.name, bytes = evicted.weight_bytes,
                    loading = %name, "model evicted (least recently used)");
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
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
        self.pool.lock().insert(0, m.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A host over copies of the tiny fixture under the given names and weight sizes.
    fn host(names: &[(&str, u64)], budget: u64) -> (tempfile::TempDir, ModelHost) {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/wan-tiny-a");
        let root = tempfile::tempdir().unwrap();
        for (name, _) in names {
            copy_dir(&fixture, &root.path().join(name));
        }
        let served = names.iter().map(|(n, b)| (n.to_string(), *b)).collect();
        let h = ModelHost::new(Some(root.path().into()), served, Device::Cpu, budget);
        (root, h)
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap();
            if p.is_dir() {
                copy_dir(&p, &to.join(name));
            } else if !name.to_string_lossy().starts_with("references") {
                std::fs::copy(&p, to.join(name)).unwrap();
            }
        }
    }

    fn names(h: &ModelHost) -> Vec<String> {
        h.resident().into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn models_stay_resident_within_the_budget_and_the_least_recently_used_leave_first() {
        let (_dir, h) = host(&[("a", 40), ("b", 40), ("c", 40)], 100);
        h.get("a").unwrap();
        h.get("b").unwrap();
        assert_eq!(names(&h), ["b", "a"], "both fit: most recent first");
        assert!(h.status_if_changed(0).is_none(), "reported above");
        h.get("a").unwrap();
        let status = h.status_if_changed(7).expect("the order changed");
        assert_eq!(status.gpu_free_memory_bytes, 7);
        assert_eq!(names(&h), ["a", "b"], "a used again");
        h.get("c").unwrap();
        assert_eq!(names(&h), ["c", "a"], "b, least recently used, left for c");
        assert_eq!(h.resident()[0].memory, "host");
    }

    #[test]
    fn a_model_larger_than_the_budget_is_loaded_alone() {
        let (_dir, h) = host(&[("a", 40), ("huge", 500)], 100);
        h.get("a").unwrap();
        h.get("huge").unwrap();
        assert_eq!(names(&h), ["huge"]);
        assert!(h.get("missing").is_err());
    }
}
