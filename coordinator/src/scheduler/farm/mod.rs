//! The farm: the coordinator's in-memory working state — jobs, their tasks, the ready queue
//! and the connected workers — and every transition between states. Synchronous and free
//! of I/O so it can be tested alone; [`super::Scheduler`] holds it under a mutex and does the
//! durable writes between the `begin_*` and `finish_*` halves of a transition.
//!
//! Invariants:
//! - A task is in the ready queue only while READY and its job has no pending terminal write.
//! - A worker's `free` slots plus its `running` tasks equal its advertised slots, the
//!   members of one batch counting once (see `batching`).
//! - A report is accepted only with the task's current token (term and attempt) from the
//!   worker it was assigned to (fencing); everything else is counted and rejected.
//! - A job moves to a terminal state only through one durable write, and at most one such
//!   write is in flight per job (`JobEntry::pending`).
//!
//! Its parts, one file each, all `impl Farm` blocks over the one struct below (the
//! transitions cross them: a lost worker requeues its tasks, a result frees a slot):
//!
//! - `jobs`: the job table — insert and restore, views, listing, watching, cancel.
//! - `workers`: the worker registry — register and remove, cordons, drains, views.
//! - `dispatch`: READY tasks onto workers' free slots ([`Assignment`]).
//! - `reports`: progress and results from workers, commits, retries, terminal states.
//! - `health`: failures charged to workers: per-job exclusion, the unhealthy mark.
//! - `batching`: DENOISE tasks of one shape sent as one batch to a worker that batches.
//! - `placement`: warm placement, model tasks left to a worker holding the model.
//! - `liveness`: adoption after reconnects, hand-back, stuck attempts, waiting reasons.
//! - `checkpoints`: denoising tasks' checkpoints, kept for the next attempt to resume.
//! - `preemption`: LOW denoising tasks checkpointed and handed back for HIGH work.
//! - `merges`: identical running jobs merged into one render.
//! - `text_share`: model jobs' text encodings, run once per (model, prompt, negative).
//! - `retention`: finished jobs kept up to a limit, older ones forgotten.
//! - `sweeps`: which finished jobs are due for an artifact sweep.
//! - `gauges`: the worker and slot gauges and the cluster-status counts.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

mod batching;
mod checkpoints;
mod dispatch;
mod gauges;
mod health;
mod jobs;
mod liveness;
mod merges;
#[cfg(test)]
mod model_tests;
mod placement;
mod preemption;
mod reports;
mod retention;
mod sweeps;
#[cfg(test)]
mod tests;
mod text_share;
mod workers;

use super::queue::{ReadyItem, ReadyQueues, TenantWeights};
use super::view::{JobView, TaskRunView, WorkerView};
use crate::metrics::Metrics;
use crate::model::{
    now_ms, AttemptToken, JobId, JobRecord, JobSpec, JobState, Output, TaskCompletion, TaskKind,
    TaskState,
};
use crate::state::Write;
pub use dispatch::{Assignment, ResumeFrom, TaskInput};
use gauges::GAUGE_REFRESH;
pub(crate) use jobs::CancelRefusal;
use jobs::{enqueue, JobEntry, Pending};
use reelfarm_proto::v1::ResidentModel;
pub(crate) use reports::{AttemptResult, Failure, Rejection};
pub use sweeps::Sweep;
use text_share::TextShares;
pub(crate) use workers::ToWorker;
use workers::WorkerEntry;
pub use workers::WorkerInfo;

/// Limits of the farm (from the coordinator's flags).
#[derive(Clone, Debug)]
pub struct FarmConfig {
    /// Assignments that may end in an error or a lost worker before the job fails.
    pub max_attempts: u32,
    /// Jobs not yet terminal, at most; more are refused with RESOURCE_EXHAUSTED.
    pub max_active_jobs: usize,
    /// ...and per tenant, when set, so one tenant cannot fill the whole queue.
    pub max_active_jobs_per_tenant: Option<usize>,
    /// Stuck versus slow (see `liveness`): a running attempt whose progress stopped for
    /// longer than `stuck_factor` times its expected step time, and at least `stuck_min`,
    /// is reassigned.
    pub stuck_factor: f64,
    pub stuck_min: Duration,
    /// Finished jobs kept (see `retention`).
    pub retain_finished: usize,
    /// Each tenant's share of the farm (see [`super::queue`]).
    pub tenant_weights: TenantWeights,
    /// How long after a job finished the files of its uncommitted attempts are deleted
    /// (see `sweeps`); `None`: never.
    pub artifact_gc_grace: Option<Duration>,
    /// Failed attempts of one job after which a worker gets none of its tasks (see
    /// `health`); 0: never excluded.
    pub exclude_worker_after: u32,
    /// Failed attempts within `unhealthy_window`, across jobs, after which a worker is
    /// cordoned as unhealthy (see `health`); 0: never.
    pub unhealthy_after: u32,
    pub unhealthy_window: Duration,
    /// How long a model task is left to a worker that holds its model loaded before a cold
    /// one may take it (see `placement`); zero: no affinity.
    pub affinity_wait: Duration,
    /// LOW denoising tasks are checkpointed and handed back for HIGH work that finds no
    /// free slot (see `preemption`), each at most once per `preemption_interval`.
    pub preemption: bool,
    pub preemption_interval: Duration,
}

/// The second half of a transition, applied once its writes are durable.
#[derive(Debug)]
pub(crate) enum AfterCommit {
    TaskDone {
        completion: TaskCompletion,
    },
    JobTerminal {
        job_id: JobId,
        state: JobState,
        error: Option<String>,
        error_code: Option<String>,
    },
    /// A follower gets its leader's outputs (see `merges`).
    Merged {
        job_id: JobId,
        from: JobId,
        outputs: Vec<Output>,
    },
}

/// Writes to make durable, then the transition to apply.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) writes: Vec<Write>,
    pub(crate) after: AfterCommit,
}

/// See the module docs.
pub(crate) struct Farm {
    term: u64,
    config: FarmConfig,
    metrics: Arc<Metrics>,
    /// Looked up by id on every result, dispatch and commit: hashed, not ordered (a B-tree
    /// of 16-byte ids cost a dozen string comparisons and cache misses per lookup).
    jobs: HashMap<JobId, JobEntry>,
    /// The same ids in order (oldest first: ids sort by creation), for listing pages.
    job_order: BTreeSet<JobId>,
    idempotency: HashMap<(String, String), JobId>,
    active_jobs: usize,
    ready: ReadyQueues,
    workers: HashMap<String, WorkerEntry>,
    /// Workers with free slots, in round-robin order, so a job's segments spread out.
    idle: VecDeque<String>,
    next_session: u64,
    /// After a failover: dispatch waits for the known workers to reconnect and offer their
    /// running attempts for adoption, until the deadline (see `liveness`).
    dispatch_hold: Option<DispatchHold>,
    /// Finished jobs, oldest first, for retention.
    finished: VecDeque<JobId>,
    gauges_refreshed: Instant,
    /// Workers an operator drained (durable: see `Write::Cordon`), connected or not.
    cordoned: HashSet<String>,
    /// Finished jobs waiting for their artifact sweep, with when it is due (ms), in
    /// finishing order (see `sweeps`).
    to_sweep: VecDeque<(JobId, u64)>,
    /// Content key → the latest retained SUCCEEDED job with it (see `cached_result`).
    by_content: HashMap<String, JobId>,
    /// Jobs not yet terminal, per tenant (tenants with none are absent).
    active_by_tenant: HashMap<String, usize>,
    /// Model jobs' text encodings, shared by content key (see `text_share`).
    text: TextShares,
    /// Charged failures per worker and the unhealthy marks (see `health`).
    health: health::WorkerHealth,
    /// Connected workers holding each model loaded (see `placement`).
    warm: HashMap<String, u32>,
    /// Preemptions asked for and not yet answered: the task, and the queue (model) of
    /// the HIGH work it makes room for (see `preemption`).
    preempting: HashMap<(JobId, u32), Option<String>>,
    preempt_scanned: Option<Instant>,
    /// Unfinished jobs others with the same content key follow, and their followers (see
    /// `merges`).
    running_by_content: HashMap<String, JobId>,
    followers: HashMap<JobId, Vec<JobId>>,
    /// Commits made by transitions with no caller to hand them to (see `merges`).
    deferred: Vec<Commit>,
    /// The last batch id given out this term (see `batching`).
    next_batch: u64,
}

struct DispatchHold {
    until: Instant,
    expected: HashSet<String>,
}

impl Farm {
    pub(crate) fn new(term: u64, config: FarmConfig, metrics: Arc<Metrics>) -> Self {
        metrics.term.set(term as i64);
        Self {
            term,
            ready: ReadyQueues::new(config.tenant_weights.clone()),
            config,
            metrics,
            jobs: HashMap::new(),
            job_order: BTreeSet::new(),
            idempotency: HashMap::new(),
            active_jobs: 0,
            workers: HashMap::new(),
            idle: VecDeque::new(),
            next_session: 0,
            dispatch_hold: None,
            finished: VecDeque::new(),
            gauges_refreshed: Instant::now(),
            cordoned: HashSet::new(),
            to_sweep: VecDeque::new(),
            by_content: HashMap::new(),
            active_by_tenant: HashMap::new(),
            text: TextShares::default(),
            health: Default::default(),
            warm: HashMap::new(),
            preempting: HashMap::new(),
            preempt_scanned: None,
            running_by_content: HashMap::new(),
            followers: HashMap::new(),
            deferred: Vec::new(),
            next_batch: 0,
        }
    }

    pub(crate) fn term(&self) -> u64 {
        self.term
    }

    pub(crate) fn config(&self) -> &FarmConfig {
        &self.config
    }
}
