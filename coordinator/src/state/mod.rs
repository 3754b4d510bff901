//! Durable state: the [`StateStore`] trait and its two backends.
//!
//! - [`etcd::EtcdStore`]: for clusters. Keys under `/reelfarm/<cluster>/` (see that module).
//! - [`memory::MemoryStore`]: for the embedded demo and unit tests; same semantics, nothing
//!   survives the process.
//!
//! The coordinator keeps its working state in memory (the scheduler) and writes through to
//! the store before it acknowledges anything: a job is stored before SubmitJob answers, a
//! task result is committed before its dependents run. Every write is conditioned on the
//! coordinator's *term* ([`StateStore::begin_term`]): once a newer coordinator has started,
//! the older one's writes fail with [`StoreError::Fenced`] and it cannot change anything.
//! Both backends run the same contract tests (`state::contract`).

pub mod etcd;
pub mod memory;

/// The contract tests every backend must pass (used by unit and end-to-end tests).
#[doc(hidden)]
pub mod contract;

use async_trait::async_trait;

use crate::model::{ApiKeyRecord, JobId, JobRecord, TaskCheckpoint, TaskCompletion};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A newer term has started: this coordinator may no longer write.
    #[error("fenced: term {ours} is no longer current")]
    Fenced { ours: u64 },
    /// The job already exists (id collision); the caller draws a new id.
    #[error("job {0} already exists")]
    JobExists(JobId),
    /// The backend could not be reached or answered an error.
    #[error("state backend unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Result of [`StateStore::create_job`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// The idempotency key was taken: nothing was stored; this is the first job's id.
    Existing(JobId),
}

/// One write of [`StateStore::commit`].
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// A task result, written under its job; never overwritten.
    TaskDone(TaskCompletion),
    /// The job record, rewritten (terminal state, outputs, error).
    Job(Box<JobRecord>),
    /// A task's latest denoising checkpoint, replacing the one before.
    Checkpoint(TaskCheckpoint),
    /// Retention: a finished job, its results, checkpoints and idempotency key are deleted.
    Forget {
        job_id: JobId,
        idempotency: Option<(String, String)>,
    },
    /// An operator drained a worker (`cordoned`) or lifted the drain: the mark outlives the
    /// worker's sessions and the coordinator's term.
    Cordon { worker_id: String, cordoned: bool },
}

/// Everything needed to rebuild the coordinator's working state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub jobs: Vec<JobRecord>,
    pub completions: Vec<TaskCompletion>,
    /// Ids of the workers an operator drained ([`Write::Cordon`]).
    pub cordoned: Vec<String>,
    /// Each task's latest checkpoint ([`Write::Checkpoint`]).
    pub checkpoints: Vec<TaskCheckpoint>,
}

/// The durable state of the farm. Implementations must be safe to call concurrently.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// "etcd" or "memory".
    fn backend(&self) -> &'static str;

    /// Starts a new term: atomically increments the stored term and returns it. Every write
    /// made with an older term fails with [`StoreError::Fenced`] from then on.
    async fn begin_term(&self) -> StoreResult<u64>;

    /// Reads every job, task completion, checkpoint and cordoned worker.
    async fn load(&self) -> StoreResult<Snapshot>;

    /// Stores a new job atomically, conditioned on `term`. If the job's idempotency key
    /// (scoped by tenant) was used before, stores nothing and returns the first job's id.
    async fn create_job(&self, term: u64, job: &JobRecord) -> StoreResult<CreateOutcome>;

    /// Applies all `writes` atomically (all or none), conditioned on `term`. A `TaskDone` for
    /// a task that already has a completion fails the whole commit (exactly one result per
    /// task).
    async fn commit(&self, term: u64, writes: Vec<Write>) -> StoreResult<()>;

    /// Stores a new API key; `false` (and nothing stored) if its id exists. Key writes are
    /// not fenced by the term: any replica may administer keys, and they are not part of
    /// the scheduling state a term protects.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<bool>;

    /// Marks a key revoked (at `at_ms`), keeping its record. Returns the record as stored
    /// afterwards (already revoked: unchanged), or `None` if no key has that id.
    async fn revoke_api_key(&self, id: &str, at_ms: u64) -> StoreResult<Option<ApiKeyRecord>>;

    /// Every API key, revoked ones included.
    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
}

/// The idempotency scope: keys are unique per tenant.
pub(crate) fn idempotency_scope(job: &JobRecord) -> Option<(String, String)> {
    job.idempotency_key
        .as_ref()
        .map(|k| (job.spec.tenant.clone(), k.clone()))
}
