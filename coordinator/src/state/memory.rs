//! In-memory [`StateStore`] for the embedded demo and unit tests: the same contract as
//! etcd, held in one mutex, lost with the process.

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
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
        Ok(true)
    }

    async fn revoke_api_key(&self, id: &str, at_ms: u64) -> StoreResult<Option<ApiKeyRecord>> {
        let mut inner = self.lock();
        Ok(inner.api_keys.get_mut(id).map(|k| {
            k.revoked_ms.get_or_insert(at_ms);
            k.clone()
        }))
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        Ok(self.lock().api_keys.values().cloned().collect())
    }
}
