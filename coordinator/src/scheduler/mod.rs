//! The scheduler: owns the farm's working state and moves jobs and tasks through their
//! lifecycles, writing through to the [`StateStore`] before anything takes effect.
//!
//! - [`farm`]: the synchronous state machine (jobs, tasks, ready queue, workers).
//! - [`queue`]: the ready queue (priority class, then tenant fair share, then age).
//! - [`view`]: read-only views handed to the API layer.
//! - [`collector`]: deletes the files of attempts that were never committed.
//!
//! Every transition that must be durable is split in two: the farm's `begin_*` half runs
//! under the lock and returns the writes; the writes go to the store with no lock held;
//! the `finish_*` half applies the result (or undoes the first half if the write failed).
//! Dispatch runs inline after every event that can free a slot or ready a task, so a task
//! reaches a worker in one pass through the lock.
//!
//! One file per concern, each an `impl Scheduler` block:
//!
//! - `recovery`: a new term on the store, the farm rebuilt from its snapshot.
//! - `submit`: idempotency keys, the result cache, planning and storing new jobs.
//! - `admission`: the active-job limits and the retry hint of a refused submission.
//! - `cancel`: cancelling a job, durable first.
//! - `workers`: worker sessions coming and going, and operator drains.
//! - `reports`: progress, hand-backs and results from workers.
//! - `watchdog`: the periodic tick (stuck attempts, gauges, retention).
//! - `commits`: running the farm's writes through the store, and fencing.
//! - `errors`: why a submission, cancel or drain was refused.
//! - [`verify`]: VerifyContent's check, handed to a worker.
//!
//! This file keeps the [`Scheduler`] itself and the reads that only delegate to the farm.

pub(crate) mod collector;
pub(crate) mod farm;
pub(crate) mod queue;
pub(crate) mod verify;
pub(crate) mod view;

mod admission;
mod cancel;
mod commits;
mod errors;
mod recovery;
mod reports;
mod submit;
mod watchdog;
mod workers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::planner::PlannerConfig;
use crate::state::StateStore;
use admission::{FinishRate, Reserved};
pub(crate) use errors::{CancelError, CordonError, SubmitError};
use farm::Farm;
pub use farm::{Assignment, FarmConfig, TaskInput, WorkerInfo};
pub(crate) use farm::{AttemptResult, CancelRefusal, Commit, Failure, Rejection, ToWorker};
pub use queue::{TenantWeights, MAX_TENANT_WEIGHT};
pub use submit::NewJob;
pub use view::{JobView, TaskRunView, WorkerView};

/// Settings of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub farm: FarmConfig,
    pub planner: PlannerConfig,
    /// Serve a submission whose content key matches a retained SUCCEEDED job of the tenant
    /// with that job's outputs, instead of rendering it again.
    pub result_cache: bool,
}

/// Counts for the cluster status.
#[derive(Clone, Copy, Debug)]
pub struct ClusterCounts {
    pub workers: usize,
    pub jobs_active: usize,
    pub tasks_ready: usize,
    pub tasks_running: usize,
}

/// See the module docs.
pub struct Scheduler {
    /// parking_lot's mutex spins briefly before parking: the farm is locked for
    /// microseconds per event, and parking a thread on every contended lock (std's futex
    /// path) cost more than the work itself under load.
    farm: parking_lot::Mutex<Farm>,
    store: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
    planner: PlannerConfig,
    result_cache: bool,
    /// Submissions admitted but not yet inserted, counted against the active-job limits.
    reserved: Mutex<Reserved>,
    /// Cancelled when a newer coordinator took over the state: this one must stop.
    fenced: CancellationToken,
    finish_rate: FinishRate,
    /// Serializes operator drains and their lifting, so their durable writes and their
    /// effect in memory happen in the same order.
    cordons: tokio::sync::Mutex<()>,
}

impl Scheduler {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Farm> {
        // The farm's invariants are kept by each method before it returns; parking_lot has
        // no poisoning, so a panic inside one does not turn into a second outage.
        self.farm.lock()
    }

    pub(crate) fn term(&self) -> u64 {
        self.lock().term()
    }

    /// Cancelled when this coordinator has been fenced off by a newer term.
    pub(crate) fn fenced(&self) -> CancellationToken {
        self.fenced.clone()
    }

    pub fn get_job(&self, id: &str, with_tasks: bool) -> Option<JobView> {
        self.lock().job_view(id, with_tasks)
    }

    /// Jobs newest first, filtered; returns the page and the token of the next one.
    pub fn list_jobs(
        &self,
        filter: impl Fn(&JobView) -> bool,
        after: Option<&str>,
        limit: usize,
        with_tasks: bool,
    ) -> (Vec<JobView>, Option<String>) {
        self.lock().list_jobs(filter, after, limit, with_tasks)
    }

    pub(crate) fn watch_job(&self, id: &str) -> Option<watch::Receiver<u64>> {
        self.lock().watch_job(id)
    }

    /// The worker said it is shutting down: its session gets no new tasks.
    pub(crate) fn worker_shutting_down(&self, id: &str) -> Option<WorkerView> {
        self.lock().worker_shutting_down(id)
    }

    /// What a worker now holds loaded, and its GPU's free memory (WorkerStatus):
    /// placement follows it.
    pub(crate) fn worker_status(
        &self,
        id: &str,
        resident: Vec<reelfarm_proto::v1::ResidentModel>,
        gpu_free: u64,
    ) {
        let mut farm = self.lock();
        farm.set_resident(id, resident, gpu_free);
        farm.dispatch();
    }

    pub fn workers(&self) -> Vec<WorkerView> {
        self.lock().worker_views()
    }

    /// Workers an operator drained that are not connected now.
    pub(crate) fn cordoned_not_connected(&self) -> Vec<String> {
        self.lock().cordoned_not_connected()
    }

    /// Unfinished jobs per tenant, most first.
    pub(crate) fn active_by_tenant(&self) -> Vec<(String, usize)> {
        self.lock().active_by_tenant()
    }

    pub fn counts(&self) -> ClusterCounts {
        let farm = self.lock();
        let (workers, tasks_ready, tasks_running) = farm.counts();
        ClusterCounts {
            workers,
            jobs_active: farm.active_jobs(),
            tasks_ready,
            tasks_running,
        }
    }

    /// After a failover: hold dispatch until `expected` workers reconnected, or `grace`.
    pub(crate) fn hold_dispatch(
        &self,
        expected: std::collections::HashSet<String>,
        grace: Duration,
    ) {
        self.lock().hold_dispatch(expected, grace);
    }
}
