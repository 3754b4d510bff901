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

pub mod collector;
pub mod farm;
pub mod queue;
pub mod view;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{job::new_job_id, now_ms, AttemptToken, JobRecord, JobSpec, JobState, Output};
use crate::planner::{self, PlannerConfig};
use crate::state::{CreateOutcome, StateStore, StoreError};
use farm::Farm;
pub use farm::{Assignment, FarmConfig, TaskInput, WorkerInfo};
pub(crate) use farm::{CancelRefusal, Commit, Rejection, ToWorker};
pub use queue::{TenantWeights, MAX_TENANT_WEIGHT};
pub use view::{JobView, TaskRunView, WorkerView};

/// Finished jobs deleted per store transaction (3 operations each; etcd allows 128).
const FORGET_PER_COMMIT: usize = 30;
/// Running attempts the watchdog checks per hold of the farm lock (see `Scheduler::tick`).
const STUCK_SCAN_SLICE: usize = 256;
/// How long a submission that lost an idempotency race waits for the winner to appear.
const IDEMPOTENCY_WAIT: Duration = Duration::from_secs(5);

/// A job to create.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub spec: JobSpec,
    pub idempotency_key: Option<String>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("too many active jobs: {active} active, {requested} requested, limit {limit}; retry in {} s", retry_after.as_secs())]
    Exhausted {
        active: usize,
        requested: usize,
        limit: usize,
        /// When room for the request is likely, from the recent rate of finishing jobs.
        retry_after: Duration,
    },
    #[error("tenant {tenant:?} has too many active jobs: {active} active, {requested} requested, limit {limit} per tenant (--max-queued-jobs-per-tenant); retry in {} s", retry_after.as_secs())]
    TenantExhausted {
        tenant: String,
        active: usize,
        requested: usize,
        limit: usize,
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a cancel was refused.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("job {0} not found")]
    NotFound(String),
    #[error("job {0} is completing and can no longer be cancelled")]
    Finishing(String),
    #[error("job {0} is changing state; try again")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why draining or lifting a drain was refused.
#[derive(Debug, thiserror::Error)]
pub enum CordonError {
    #[error("worker {0} is not connected")]
    NotConnected(String),
    #[error("worker {0} is neither connected nor drained")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

/// Submissions admitted but not yet inserted: in all and per tenant.
#[derive(Default)]
struct Reserved {
    total: usize,
    by_tenant: std::collections::HashMap<String, usize>,
}

/// The recent rate at which jobs finish, for the retry hint of a refused submission.
struct FinishRate(Mutex<FinishSample>);

struct FinishSample {
    at: Instant,
    finished: f64,
    per_second: f64,
}

impl FinishRate {
    /// Shortest and longest hint; the rate is re-measured over windows of at least 1 s.
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    fn new() -> Self {
        Self(Mutex::new(FinishSample {
            at: Instant::now(),
            finished: 0.0,
            per_second: 0.0,
        }))
    }

    /// How long until `excess` jobs have finished at the recent rate.
    fn retry_after(&self, excess: usize, metrics: &Metrics) -> Duration {
        let finished: f64 = ["succeeded", "failed", "cancelled"]
            .iter()
            .map(|s| metrics.jobs_finished.with_label_values(&[s]).get() as f64)
            .sum();
        let mut sample = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = sample.at.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            sample.per_second = (finished - sample.finished) / elapsed;
            sample.at = Instant::now();
            sample.finished = finished;
        }
        if sample.per_second <= 0.0 {
            return Duration::from_secs(5);
        }
        Duration::from_secs_f64(excess as f64 / sample.per_second).clamp(Self::MIN, Self::MAX)
    }
}

impl Scheduler {
    /// Starts a new term on `store` and rebuilds the working state from it: unfinished jobs
    /// continue where their committed results leave them.
    pub async fn recover(
        store: Arc<dyn StateStore>,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, StoreError> {
        let term = store.begin_term().await?;
        let snapshot = store.load().await?;
        let mut farm = Farm::new(term, config.farm, metrics.clone());
        let mut by_job: std::collections::HashMap<&str, Vec<_>> = Default::default();
        for c in &snapshot.completions {
            by_job.entry(c.job_id.as_str()).or_default().push(c.clone());
        }
        let (mut jobs, mut unfinished) = (0, 0);
        for job in &snapshot.jobs {
            jobs += 1;
            if !job.state.is_terminal() {
                unfinished += 1;
            }
            let done = by_job.remove(job.id.as_str()).unwrap_or_default();
            farm.insert_job(job.clone(), &done);
        }
        farm.restore_cordons(snapshot.cordoned.iter().cloned());
        metrics.leader.set(1);
        tracing::info!(
            term,
            jobs,
            unfinished,
            backend = store.backend(),
            "state recovered"
        );
        Ok(Arc::new(Self {
            farm: parking_lot::Mutex::new(farm),
            store,
            metrics,
            planner: config.planner,
            result_cache: config.result_cache,
            reserved: Mutex::new(Reserved::default()),
            fenced: CancellationToken::new(),
            finish_rate: FinishRate::new(),
            cordons: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Farm> {
        // The farm's invariants are kept by each method before it returns; parking_lot has
        // no poisoning, so a panic inside one does not turn into a second outage.
        self.farm.lock()
    }

    pub fn term(&self) -> u64 {
        self.lock().term()
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Cancelled when this coordinator has been fenced off by a newer term.
    pub fn fenced(&self) -> CancellationToken {
        self.fenced.clone()
    }

    // ----- jobs -------------------------------------------------------------------------

    /// Plans and stores new jobs, then queues them. A job whose idempotency key was used
    /// before is not created again: the first job is returned in its place. Nothing is
    /// returned before every job is durable.
    pub async fn submit(&self, jobs: Vec<NewJob>) -> Result<Vec<JobView>, SubmitError> {
        // Known idempotency keys answer without a write.
        let mut results: Vec<Option<JobView>> = {
            let farm = self.lock();
            jobs.iter()
                .map(|j| {
                    j.idempotency_key
                        .as_ref()
                        .and_then(|k| farm.job_for_key(&j.spec.tenant, k))
                        .and_then(|id| farm.job_view(&id, true))
                })
                .collect()
        };
        let new = results.iter().filter(|r| r.is_none()).count();
        let mut new_by_tenant: std::collections::HashMap<String, usize> = Default::default();
        for (job, _) in jobs.iter().zip(&results).filter(|(_, r)| r.is_none()) {
            *new_by_tenant.entry(job.spec.tenant.clone()).or_default() += 1;
        }
        {
            let farm = self.lock();
            let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
            let limit = farm.config().max_active_jobs;
            let active = farm.active_jobs() + reserved.total;
            if active + new > limit {
                return Err(SubmitError::Exhausted {
                    active,
                    requested: new,
                    limit,
                    retry_after: self
                        .finish_rate
                        .retry_after(active + new - limit, &self.metrics),
                });
            }
            if let Some(limit) = farm.config().max_active_jobs_per_tenant {
                for (tenant, &requested) in &new_by_tenant {
                    let active = farm.active_jobs_of(tenant)
                        + reserved.by_tenant.get(tenant).copied().unwrap_or(0);
                    if active + requested > limit {
                        return Err(SubmitError::TenantExhausted {
                            tenant: tenant.clone(),
                            active,
                            requested,
                            limit,
                            retry_after: self
                                .finish_rate
                                .retry_after(active + requested - limit, &self.metrics),
                        });
                    }
                }
            }
            reserved.total += new;
            for (tenant, n) in &new_by_tenant {
                *reserved.by_tenant.entry(tenant.clone()).or_default() += n;
            }
        }
        let term = self.term();
        let creates = jobs
            .iter()
            .zip(results.iter())
            .filter(|(_, r)| r.is_none())
            .map(|(job, _)| self.create_one(term, job));
        let created = futures::future::join_all(creates).await;
        {
            let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
            reserved.total -= new;
            for (tenant, n) in &new_by_tenant {
                if let Some(r) = reserved.by_tenant.get_mut(tenant) {
                    *r -= n;
                    if *r == 0 {
                        reserved.by_tenant.remove(tenant);
                    }
                }
            }
        }
        let mut created = created.into_iter();
        for slot in results.iter_mut().filter(|r| r.is_none()) {
            let view = created.next().expect("one result per create")?;
            *slot = Some(view);
        }
        self.lock().dispatch();
        Ok(results
            .into_iter()
            .map(|r| r.expect("filled above"))
            .collect())
    }

    async fn create_one(&self, term: u64, job: &NewJob) -> Result<JobView, SubmitError> {
        let cached = self
            .result_cache
            .then(|| self.lock().cached_result(&job.spec.content_key()))
            .flatten();
        let tasks = match cached {
            Some(_) => vec![],
            None => planner::plan(&job.spec, self.planner),
        };
        loop {
            let created_ms = now_ms();
            let mut record = JobRecord {
                id: new_job_id(created_ms),
                spec: job.spec.clone(),
                state: JobState::Queued,
                idempotency_key: job.idempotency_key.clone(),
                created_ms,
                finished_ms: None,
                error: None,
                outputs: vec![],
                tasks: tasks.clone(),
                artifacts_swept: false,
                cached_from: None,
            };
            if let Some((from, outputs)) = &cached {
                // Born SUCCEEDED with the earlier job's files; it has none of its own to sweep.
                record.state = JobState::Succeeded;
                record.finished_ms = Some(created_ms);
                record.outputs = outputs.clone();
                record.artifacts_swept = true;
                record.cached_from = Some(from.clone());
            }
            let started = Instant::now();
            let outcome = self.store.create_job(term, &record).await;
            self.metrics
                .store_commit_seconds
                .with_label_values(&["create_job"])
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Ok(CreateOutcome::Created) => {
                    let mut farm = self.lock();
                    let id = record.id.clone();
                    let priority = record.spec.priority;
                    farm.insert_job(record, &[]);
                    self.metrics
                        .jobs_submitted
                        .with_label_values(&[priority.as_str()])
                        .inc();
                    match &cached {
                        Some((from, _)) => {
                            self.metrics.cache_hits.inc();
                            self.metrics
                                .jobs_finished
                                .with_label_values(&[JobState::Succeeded.as_str()])
                                .inc();
                            tracing::info!(job_id = %id, cached_from = %from, tenant = %job.spec.tenant,
                                "job submitted and served from the result cache");
                        }
                        None => {
                            tracing::info!(job_id = %id, tenant = %job.spec.tenant, "job submitted")
                        }
                    }
                    return Ok(farm.job_view(&id, true).expect("just inserted"));
                }
                Ok(CreateOutcome::Existing(id)) => return self.wait_for_job(&id).await,
                Err(StoreError::JobExists(_)) => continue,
                Err(e) => return Err(self.store_error(e).into()),
            }
        }
    }

    /// The job that won an idempotency race is inserted right after its write; wait for it.
    async fn wait_for_job(&self, id: &str) -> Result<JobView, SubmitError> {
        let deadline = Instant::now() + IDEMPOTENCY_WAIT;
        loop {
            if let Some(v) = self.lock().job_view(id, true) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(SubmitError::Store(StoreError::Unavailable(format!(
                    "job {id} for this idempotency key is stored but not loaded"
                ))));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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

    pub fn watch_job(&self, id: &str) -> Option<watch::Receiver<u64>> {
        self.lock().watch_job(id)
    }

    /// Cancels a job: durable first, then its running tasks are stopped on their workers.
    /// Cancelling a job already terminal returns it unchanged.
    pub async fn cancel_job(&self, id: &str) -> Result<JobView, CancelError> {
        let begun = self.lock().begin_cancel(id);
        match begun {
            Err(CancelRefusal::NotFound) => Err(CancelError::NotFound(id.into())),
            Err(CancelRefusal::Finishing) => Err(CancelError::Finishing(id.into())),
            Err(CancelRefusal::Busy) => Err(CancelError::Busy(id.into())),
            Ok(None) => self
                .get_job(id, true)
                .ok_or_else(|| CancelError::NotFound(id.into())),
            Ok(Some(commit)) => {
                let result = self.run_commit(commit).await;
                result.map_err(CancelError::Store)?;
                tracing::info!(job_id = %id, "job cancelled");
                self.get_job(id, true)
                    .ok_or_else(|| CancelError::NotFound(id.into()))
            }
        }
    }

    // ----- workers ----------------------------------------------------------------------

    /// Registers a worker stream; tasks flow to it through `tx`. Returns the session number
    /// to pass to [`Scheduler::worker_gone`].
    pub(crate) async fn register_worker(
        &self,
        info: WorkerInfo,
        tx: mpsc::UnboundedSender<ToWorker>,
    ) -> u64 {
        let id = info.id.clone();
        let (session, commits) = {
            let mut farm = self.lock();
            let r = farm.register_worker(info, tx);
            farm.dispatch();
            r
        };
        tracing::info!(worker_id = %id, session, "worker registered");
        self.run_commits(commits).await;
        session
    }

    /// A worker is gone (stream closed, lease expired or key deleted): its unfinished tasks
    /// go back to READY. With `session`, only if that session is still current.
    pub async fn worker_gone(&self, id: &str, session: Option<u64>, reason: &str) {
        let commits = {
            let mut farm = self.lock();
            let known = farm.worker_view(id).is_some();
            let c = farm.remove_worker(id, session, reason);
            farm.dispatch();
            if !known {
                return;
            }
            c
        };
        tracing::info!(worker_id = %id, reason, "worker removed");
        self.run_commits(commits).await;
    }

    /// The worker said it is shutting down: its session gets no new tasks.
    pub fn worker_shutting_down(&self, id: &str) -> Option<WorkerView> {
        self.lock().worker_shutting_down(id)
    }

    /// An operator drains a connected worker (`cordoned`: it finishes its running tasks and
    /// takes no new ones) or lifts a drain. The mark is durable before it takes effect, so
    /// it holds across the worker's reconnects and coordinator failovers. Returns the worker
    /// when it is connected.
    pub async fn cordon_worker(
        &self,
        id: &str,
        cordoned: bool,
    ) -> Result<Option<WorkerView>, CordonError> {
        let _serial = self.cordons.lock().await;
        {
            let farm = self.lock();
            let connected = farm.worker_view(id);
            if cordoned && connected.is_none() {
                return Err(CordonError::NotConnected(id.into()));
            }
            if !cordoned && connected.is_none() && !farm.is_cordoned(id) {
                return Err(CordonError::Unknown(id.into()));
            }
            if farm.is_cordoned(id) == cordoned {
                return Ok(connected);
            }
        }
        let write = crate::state::Write::Cordon {
            worker_id: id.to_string(),
            cordoned,
        };
        self.store
            .commit(self.term(), vec![write])
            .await
            .map_err(|e| self.store_error(e))?;
        let mut farm = self.lock();
        let view = farm.set_cordon(id, cordoned);
        farm.dispatch();
        Ok(view)
    }

    pub fn workers(&self) -> Vec<WorkerView> {
        self.lock().worker_views()
    }

    /// Workers an operator drained that are not connected now.
    pub fn cordoned_not_connected(&self) -> Vec<String> {
        self.lock().cordoned_not_connected()
    }

    /// Unfinished jobs per tenant, most first.
    pub fn active_by_tenant(&self) -> Vec<(String, usize)> {
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

    /// Step progress from a worker, with the speed it measured.
    pub(crate) fn progress(
        &self,
        worker_id: &str,
        token: &AttemptToken,
        step: u32,
        total: u32,
        steps_per_second: f64,
    ) -> Result<(), Rejection> {
        self.lock()
            .progress(worker_id, token, step, total, steps_per_second)
    }

    /// A worker shutting down gives an unfinished attempt back: READY at once.
    pub(crate) fn hand_back(
        &self,
        worker_id: &str,
        token: &AttemptToken,
        reason: &str,
    ) -> Result<(), Rejection> {
        let mut farm = self.lock();
        farm.hand_back(worker_id, token, reason)?;
        farm.dispatch();
        Ok(())
    }

    /// After a failover: hold dispatch until `expected` workers reconnected, or `grace`.
    pub fn hold_dispatch(&self, expected: std::collections::HashSet<String>, grace: Duration) {
        self.lock().hold_dispatch(expected, grace);
    }

    /// The watchdog's tick: reassigns stuck attempts and dispatches (which also ends an
    /// expired dispatch hold).
    pub async fn tick(&self) {
        let now = Instant::now();
        // In slices, so results and dispatch never wait long behind the scan (about 1 ms per
        // thousand running attempts, every tick).
        let slices = self.lock().stuck_scan_slices(STUCK_SCAN_SLICE);
        let mut commits = Vec::new();
        for slice in slices {
            commits.extend(self.lock().reassign_stuck_among(&slice, now));
        }
        let forget = {
            let mut farm = self.lock();
            farm.dispatch();
            farm.refresh_gauges();
            farm.evict_finished(usize::MAX)
        };
        self.run_commits(commits).await;
        let term = self.term();
        for chunk in forget.chunks(FORGET_PER_COMMIT) {
            if let Err(e) = self.store.commit(term, chunk.to_vec()).await {
                // Forgotten in memory already; the next leader loads and forgets them again.
                tracing::warn!(jobs = chunk.len(), error = %e, "deleting finished jobs from the store failed");
            }
        }
    }

    /// A worker's result: committed (success) or retried (failure). Rejected when the token
    /// is not the task's current one.
    pub(crate) async fn result(
        &self,
        worker_id: &str,
        token: &AttemptToken,
        ok: bool,
        error: &str,
        outputs: Vec<Output>,
        scene: Option<String>,
    ) -> Result<(), Rejection> {
        let commit = {
            let mut farm = self.lock();
            let c = farm.begin_result(worker_id, token, ok, error, outputs, scene)?;
            farm.dispatch();
            c
        };
        if !ok {
            tracing::warn!(job_id = %token.job_id, task_id = %token.task_id, attempt = token.attempt,
                worker_id, error, "task attempt failed");
        }
        if let Some(commit) = commit {
            let _ = self.run_commit(commit).await;
        }
        Ok(())
    }

    // ----- durable writes ---------------------------------------------------------------

    async fn run_commits(&self, commits: Vec<Commit>) {
        for c in commits {
            let _ = self.run_commit(c).await;
        }
    }

    async fn run_commit(&self, commit: Commit) -> Result<(), StoreError> {
        let term = self.term();
        let started = Instant::now();
        let result = self.store.commit(term, commit.writes).await;
        self.metrics
            .store_commit_seconds
            .with_label_values(&["commit"])
            .observe(started.elapsed().as_secs_f64());
        let result = result.map_err(|e| self.store_error(e));
        let mut farm = self.lock();
        farm.finish_commit(
            commit.after,
            result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        );
        farm.dispatch();
        result
    }

    /// Notes a fenced write: a newer coordinator owns the state, so this one stops.
    fn store_error(&self, e: StoreError) -> StoreError {
        match &e {
            StoreError::Fenced { ours } => {
                if !self.fenced.is_cancelled() {
                    tracing::error!(term = ours, "fenced by a newer coordinator term; stopping");
                    self.metrics.leader.set(0);
                    self.fenced.cancel();
                }
            }
            other => tracing::warn!(error = %other, "state write failed"),
        }
        e
    }
}
