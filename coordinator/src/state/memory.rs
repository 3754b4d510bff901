//! In-memory [`StateStore`] for the embedded demo and unit tests: the same contract as
//! etcd, held in one mutex, lost with the process, except the API keys when a key file is
//! given ([`MemoryStore::with_key_file`]): a farm without etcd keeps its keys (hashes) in
//! that JSON file, rewritten whole (write, then rename) on every change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    idempotency_scope, CreateOutcome, Snapshot, StateStore, StoreError, StoreResult, Write,
};
use crate::model::{ApiKeyRecord, JobId, JobRecord, TaskCheckpoint, TaskCompletion};

#[derive(Default)]
struct Inner {
    term: u64,
    jobs: BTreeMap<JobId, JobRecord>,
    completions: BTreeMap<(JobId, u32), TaskCompletion>,
    idempotency: HashMap<(String, String), JobId>,
    cordoned: BTreeSet<String>,
    checkpoints: BTreeMap<(JobId, u32), TaskCheckpoint>,
    api_keys: BTreeMap<String, ApiKeyRecord>,
}

/// See the module docs.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    key_file: Option<std::path::PathBuf>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose API keys live in `path` (created on the first key; read if it exists).
    pub fn with_key_file(path: std::path::PathBuf) -> Result<Self, String> {
        let mut inner = Inner::default();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let keys: Vec<ApiKeyRecord> = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("--api-keys-file {}: {e}", path.display()))?;
                inner.api_keys = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("--api-keys-file {}: {e}", path.display())),
        }
        Ok(Self {
            inner: Mutex::new(inner),
            key_file: Some(path),
        })
    }

    /// Writes the key table to the key file, if there is one (under the lock, so writes
    /// land in order). Atomic: a crash leaves the old file or the new one.
    fn save_keys(&self, inner: &Inner) -> StoreResult<()> {
        let Some(path) = &self.key_file else {
            return Ok(());
        };
        let keys: Vec<&ApiKeyRecord> = inner.api_keys.values().collect();
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, serde_json::to_vec_pretty(&keys).expect("plain data"))
            .and_then(|()| std::fs::rename(&tmp, path));
        written.map_err(|e| {
            StoreError::Unavailable(format!("--api-keys-file {}: {e}", path.display()))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn check_term(inner: &Inner, term: u64) -> StoreResult<()> {
    if inner.term == term {
        Ok(())
    } else {
        Err(StoreError::Fenced { ours: term })
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn begin_term(&self) -> StoreResult<u64> {
        let mut inner = self.lock();
        inner.term += 1;
        Ok(inner.term)
    }

    async fn load(&self) -> StoreResult<Snapshot> {
        let inner = self.lock();
        Ok(Snapshot {
            jobs: inner.jobs.values().cloned().collect(),
            completions: inner.completions.values().cloned().collect(),
            cordoned: inner.cordoned.iter().cloned().collect(),
            checkpoints: inner.checkpoints.values().cloned().collect(),
        })
    }

    async fn create_job(&self, term: u64, job: &JobRecord) -> StoreResult<CreateOutcome> {
        let mut inner = self.lock();
        check_term(&inner, term)?;
        if let Some(scope) = idempotency_scope(job) {
            if let Some(existing) = inner.idempotency.get(&scope) {
                return Ok(CreateOutcome::Existing(existing.clone()));
            }
            if inner.jobs.contains_key(&job.id) {
                return Err(StoreError::JobExists(job.id.clone()));
            }
            inner.idempotency.insert(scope, job.id.clone());
        } else if inner.jobs.contains_key(&job.id) {
            return Err(StoreError::JobExists(job.id.clone()));
        }
        inner.jobs.insert(job.id.clone(), job.clone());
        Ok(CreateOutcome::Created)
    }

    async fn commit(&self, term: u64, writes: Vec<Write>) -> StoreResult<()> {
        let mut inner = self.lock();
        check_term(&inner, term)?;
        for w in &writes {
            if let Write::TaskDone(c) = w {
                if inner
                    .completions
                    .contains_key(&(c.job_id.clone(), c.task_index))
                {
                    return Err(StoreError::Unavailable(format!(
                        "task {}/{} already has a committed result",
                        c.job_id, c.task_index
                    )));
                }
            }
        }
        for w in writes {
            match w {
                Write::TaskDone(c) => {
                    inner
                        .completions
                        .insert((c.job_id.clone(), c.task_index), c);
                }
                Write::Job(job) => {
                    inner.jobs.insert(job.id.clone(), *job);
                }
                Write::Checkpoint(c) => {
                    inner
                        .checkpoints
                        .insert((c.job_id.clone(), c.task_index), c);
                }
                Write::Forget {
                    job_id,
                    idempotency,
                } => {
                    inner.jobs.remove(&job_id);
                    inner.completions.retain(|(j, _), _| *j != job_id);
                    inner.checkpoints.retain(|(j, _), _| *j != job_id);
                    if let Some(k) = idempotency {
                        inner.idempotency.remove(&k);
                    }
                }
                Write::Cordon {
                    worker_id,
                    cordoned,
                } => {
                    if cordoned {
                        inner.cordoned.insert(worker_id);
                    } else {
                        inner.cordoned.remove(&worker_id);
                    }
                }
            }
        }
        Ok(())
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<bool> {
        let mut inner = self.lock();
        if inner.api_keys.contains_key(&key.id) {
            return Ok(false);
        }
        inner.api_keys.insert(key.id.clone(), key.clone());
        if let Err(e) = self.save_keys(&inner) {
            inner.api_keys.remove(&key.id);
            return Err(e);
        }
        Ok(true)
    }

    async fn revoke_api_key(&self, id: &str, at_ms: u64) -> StoreResult<Option<ApiKeyRecord>> {
        let mut inner = self.lock();
        let Some(key) = inner.api_keys.get_mut(id) else {
            return Ok(None);
        };
        if key.revoked_ms.is_some() {
            return Ok(Some(key.clone()));
        }
        key.revoked_ms = Some(at_ms);
        let revoked = key.clone();
        if let Err(e) = self.save_keys(&inner) {
            if let Some(k) = inner.api_keys.get_mut(id) {
                k.revoked_ms = None;
            }
            return Err(e);
        }
        Ok(Some(revoked))
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        Ok(self.lock().api_keys.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_in_a_key_file_outlive_the_store_and_a_bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let store = MemoryStore::with_key_file(path.clone()).unwrap();
        super::super::contract::api_keys_contract(&store).await;
        let again = MemoryStore::with_key_file(path.clone()).unwrap();
        let keys = again.api_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys[0].revoked_ms.is_some(), "the revocation was kept");
        std::fs::write(&path, b"not json").unwrap();
        let e = MemoryStore::with_key_file(path).err().unwrap();
        assert!(e.starts_with("--api-keys-file"), "{e}");
    }
}
