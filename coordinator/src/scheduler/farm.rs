//! The farm: the coordinator's in-memory working state — jobs, their tasks, the ready queue
//! and the connected workers — and every transition between states. Synchronous and free
//! of I/O so it can be tested alone; [`super::Scheduler`] holds it under a mutex and does the
//! durable writes between the `begin_*` and `finish_*` halves of a transition.
//!
//! Invariants:
//! - A task is in the ready queue only while READY and its job has no pending terminal write.
//! - A worker's `free` slots plus its `running` tasks equal its advertised slots.
//! - A report is accepted only with the task's current token (term and attempt) from the
//!   worker it was assigned to (fencing); everything else is counted and rejected.
//! - A job moves to a terminal state only through one durable write, and at most one such
//!   write is in flight per job (`JobEntry::pending`).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

mod dispatch;
mod liveness;
mod reports;
mod retention;
mod sweeps;
#[cfg(test)]
mod tests;

use super::queue::{ReadyQueue, TenantWeights};
use super::view::{JobView, TaskRunView, WorkerView};
use crate::metrics::Metrics;
use crate::model::{
    now_ms, AttemptToken, JobId, JobRecord, JobSpec, JobState, Output, TaskCompletion, TaskKind,
    TaskState,
};
use crate::state::Write;
pub use sweeps::Sweep;

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
}

/// A message for one worker's stream.
#[derive(Debug)]
pub enum ToWorker {
    Assign(Vec<Assignment>),
    Cancel(AttemptToken),
    /// A content check (VerifyContent), answered on the session (see `super::verify`).
    Verify(super::verify::VerifyWork),
}

/// One task handed to a worker.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub token: AttemptToken,
    pub kind: TaskKind,
    /// Shared by every assignment of the job (no copy of the prompt and labels per task).
    pub spec: Arc<JobSpec>,
    pub frame_start: u32,
    pub frame_end: u32,
    pub segment_index: u32,
    pub segment_count: u32,
    pub inputs: Vec<TaskInput>,
}

/// A dependency's output that a task reads.
#[derive(Clone, Debug)]
pub struct TaskInput {
    pub kind: TaskKind,
    pub segment_index: u32,
    pub output: Output,
}

/// What a worker says about itself when it connects.
#[derive(Clone, Debug, Default)]
pub struct WorkerInfo {
    pub id: String,
    pub engine: String,
    pub gpu_model: String,
    pub gpu_memory_bytes: u64,
    pub slots: u32,
    pub hostname: String,
    pub version: String,
    pub metrics_address: String,
    /// Attempts the worker still runs from an earlier session, offered for adoption.
    pub running: Vec<AttemptToken>,
}

/// Why a worker report was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("unknown task {0}")]
    UnknownTask(String),
    #[error("stale attempt token: the task is no longer assigned to this attempt")]
    Stale,
    #[error("worker {0} is not registered")]
    UnknownWorker(String),
}

/// A job-level write that must be made durable before it takes effect in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// The ASSEMBLE result is being committed together with SUCCEEDED.
    Finishing,
    Cancelling,
    Failing,
}

/// The second half of a transition, applied once its writes are durable.
#[derive(Debug)]
pub enum AfterCommit {
    TaskDone {
        completion: TaskCompletion,
    },
    JobTerminal {
        job_id: JobId,
        state: JobState,
        error: Option<String>,
    },
}

/// Writes to make durable, then the transition to apply.
#[derive(Debug)]
pub struct Commit {
    pub writes: Vec<Write>,
    pub after: AfterCommit,
}

struct TaskRun {
    state: TaskState,
    attempt: u64,
    /// The highest attempt number issued for this task in any term; the next dispatch uses
    /// one more, so no two attempts of a term share a number even after adoptions.
    issued: u64,
    /// The term that issued `attempt`: the current one, or an earlier leader's for an
    /// attempt adopted after a failover. (term, attempt) names an attempt uniquely.
    term: u64,
    worker: Option<String>,
    progress: f64,
    /// When the running attempt last advanced (assignment, adoption or a new step).
    last_progress: Instant,
    step: u32,
    steps_per_second: f64,
    /// Why the last attempt ended without a result.
    retry_reason: Option<String>,
    deps_left: u32,
    outputs: Vec<Output>,
    error: Option<String>,
    /// Assignments that ended in an error or a lost worker.
    failures: u32,
    retries: u32,
    /// While the result is being committed: no requeue, no second result.
    committing: bool,
    /// Has a live entry in the ready queue (counted in the queue-depth gauge).
    queued: bool,
    ready_at: Instant,
}

struct JobEntry {
    record: JobRecord,
    /// `record.spec`, shared with the job's assignments.
    spec: Arc<JobSpec>,
    tasks: Vec<TaskRun>,
    scene: Option<String>,
    started_ms: Option<u64>,
    pending: Option<Pending>,
    /// Bumped on every change; WatchJob streams follow it.
    changed: watch::Sender<u64>,
}

impl JobEntry {
    fn touch(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn state(&self) -> JobState {
        if self.record.state.is_terminal() {
            self.record.state
        } else if self.started_ms.is_some() {
            JobState::Running
        } else {
            JobState::Queued
        }
    }
}

struct WorkerEntry {
    info: WorkerInfo,
    session: u64,
    tx: mpsc::UnboundedSender<ToWorker>,
    free: u32,
    running: HashSet<(JobId, u32)>,
    /// Takes no new tasks: cordoned by an operator, or `shutting_down`.
    draining: bool,
    /// The worker said it is shutting down (SIGTERM); this session takes no new tasks.
    shutting_down: bool,
    in_idle: bool,
    connected_ms: u64,
    tasks_done: u64,
}

/// See the module docs.
pub struct Farm {
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
    ready: ReadyQueue,
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
}

/// How stale the worker-slot gauges may get between dispatches (scrapes are far apart).
const GAUGE_REFRESH: Duration = Duration::from_millis(200);

struct DispatchHold {
    until: Instant,
    expected: HashSet<String>,
}

impl Farm {
    pub fn new(term: u64, config: FarmConfig, metrics: Arc<Metrics>) -> Self {
        metrics.term.set(term as i64);
        Self {
            term,
            ready: ReadyQueue::new(config.tenant_weights.clone()),
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
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn config(&self) -> &FarmConfig {
        &self.config
    }

    pub fn active_jobs(&self) -> usize {
        self.active_jobs
    }

    /// Unfinished jobs per tenant, most first (then by name).
    pub fn active_by_tenant(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .active_by_tenant
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Jobs of `tenant` not yet terminal.
    pub fn active_jobs_of(&self, tenant: &str) -> usize {
        self.active_by_tenant.get(tenant).copied().unwrap_or(0)
    }

    pub fn contains_job(&self, id: &str) -> bool {
        self.jobs.contains_key(id)
    }

    /// A retained SUCCEEDED job whose spec has `content_key`, and its outputs: what a new
    /// job with the same key can reuse instead of rendering again.
    pub fn cached_result(&self, content_key: &str) -> Option<(JobId, Vec<Output>)> {
        let id = self.by_content.get(content_key)?;
        let job = self.jobs.get(id)?;
        (job.record.state == JobState::Succeeded && !job.record.outputs.is_empty())
            .then(|| (id.clone(), job.record.outputs.clone()))
    }

    /// The job already created with this idempotency key (per tenant), if any.
    pub fn job_for_key(&self, tenant: &str, key: &str) -> Option<JobId> {
        self.idempotency
            .get(&(tenant.to_string(), key.to_string()))
            .cloned()
    }

    // ----- jobs -------------------------------------------------------------------------

    /// Adds a stored job with the completions already committed for it (from a snapshot on
    /// recovery, none for a new job), and queues whatever is ready.
    pub fn insert_job(&mut self, record: JobRecord, completions: &[TaskCompletion]) {
        let now = Instant::now();
        let mut tasks: Vec<TaskRun> = record
            .tasks
            .iter()
            .map(|t| TaskRun {
                state: TaskState::Blocked,
                attempt: 0,
                issued: 0,
                term: 0,
                worker: None,
                progress: 0.0,
                last_progress: now,
                step: 0,
                steps_per_second: 0.0,
                retry_reason: None,
                deps_left: t.deps.len() as u32,
                outputs: vec![],
                error: None,
                failures: 0,
                retries: 0,
                committing: false,
                queued: false,
                ready_at: now,
            })
            .collect();
        let mut scene = None;
        let mut started_ms = None;
        for c in completions {
            if let Some(t) = tasks.get_mut(c.task_index as usize) {
                t.state = TaskState::Done;
                t.progress = 1.0;
                t.attempt = c.attempt;
                t.issued = c.attempt;
                t.term = c.term;
                t.worker = Some(c.worker_id.clone());
                t.outputs = c.outputs.clone();
                if c.scene.is_some() {
                    scene = c.scene.clone();
                }
                started_ms = Some(started_ms.unwrap_or(c.finished_ms).min(c.finished_ms));
            }
        }
        let terminal = record.state.is_terminal();
        for (i, def) in record.tasks.iter().enumerate() {
            let done_deps = def
                .deps
                .iter()
                .filter(|d| tasks[**d as usize].state == TaskState::Done)
                .count() as u32;
            let t = &mut tasks[i];
            t.deps_left -= done_deps;
            if t.state != TaskState::Done {
                if terminal {
                    t.state = match record.state {
                        JobState::Cancelled => TaskState::Cancelled,
                        _ => TaskState::Blocked,
                    };
                } else if t.deps_left == 0 {
                    t.state = TaskState::Ready;
                }
            }
        }
        if let Some(key) = &record.idempotency_key {
            self.idempotency
                .insert((record.spec.tenant.clone(), key.clone()), record.id.clone());
        }
        let id = record.id.clone();
        let (changed, _) = watch::channel(0);
        let mut entry = JobEntry {
            spec: Arc::new(record.spec.clone()),
            record,
            tasks,
            scene,
            started_ms,
            pending: None,
            changed,
        };
        if !terminal {
            self.active_jobs += 1;
            *self
                .active_by_tenant
                .entry(entry.record.spec.tenant.clone())
                .or_default() += 1;
            self.metrics.jobs_active.set(self.active_jobs as i64);
            for i in 0..entry.tasks.len() {
                if entry.tasks[i].state == TaskState::Ready {
                    enqueue(&mut self.ready, &self.metrics, &mut entry, i as u32);
                }
            }
        }
        self.jobs.insert(id.clone(), entry);
        self.job_order.insert(id.clone());
        if terminal {
            self.note_finished(&id);
        }
    }

    /// A view of one job for the API.
    pub fn job_view(&self, id: &str, with_tasks: bool) -> Option<JobView> {
        self.jobs.get(id).map(|j| self.view(j, with_tasks))
    }

    fn view(&self, job: &JobEntry, with_tasks: bool) -> JobView {
        let mut v = view_of(job, with_tasks);
        v.waiting = self.waiting_reason(job).unwrap_or_default();
        v
    }

    /// A receiver that changes whenever the job does.
    pub fn watch_job(&self, id: &str) -> Option<watch::Receiver<u64>> {
        self.jobs.get(id).map(|j| j.changed.subscribe())
    }

    /// Jobs newest first, filtered, starting after `after` (a job id from the previous page).
    pub fn list_jobs(
        &self,
        filter: impl Fn(&JobView) -> bool,
        after: Option<&str>,
        limit: usize,
        with_tasks: bool,
    ) -> (Vec<JobView>, Option<String>) {
        use std::ops::Bound;
        let upper = after.map_or(Bound::Unbounded, Bound::Excluded);
        let range = self.job_order.range::<str, _>((Bound::Unbounded, upper));
        let mut out = Vec::new();
        for job in range.rev().filter_map(|id| self.jobs.get(id)) {
            let v = self.view(job, with_tasks);
            if filter(&v) {
                if out.len() == limit {
                    let next = out.last().map(|v: &JobView| v.id.clone());
                    return (out, next);
                }
                out.push(v);
            }
        }
        (out, None)
    }

    /// Starts cancelling a job: the caller persists the writes, then calls
    /// [`Farm::finish_commit`]. `Ok(None)`: the job is already terminal (nothing to do).
    pub fn begin_cancel(&mut self, id: &str) -> Result<Option<Commit>, CancelRefusal> {
        let job = self.jobs.get_mut(id).ok_or(CancelRefusal::NotFound)?;
        if job.record.state.is_terminal() {
            return Ok(None);
        }
        match job.pending {
            Some(Pending::Finishing) => return Err(CancelRefusal::Finishing),
            Some(_) => return Err(CancelRefusal::Busy),
            None => {}
        }
        job.pending = Some(Pending::Cancelling);
        let mut record = job.record.clone();
        record.state = JobState::Cancelled;
        record.finished_ms = Some(now_ms());
        record.error = Some("cancelled by request".into());
        Ok(Some(Commit {
            writes: vec![Write::Job(Box::new(record))],
            after: AfterCommit::JobTerminal {
                job_id: id.to_string(),
                state: JobState::Cancelled,
                error: Some("cancelled by request".into()),
            },
        }))
    }

    // ----- workers ----------------------------------------------------------------------

    /// Registers a worker's stream. A worker reconnecting under the same id replaces its old
    /// session, whose tasks go back to READY; then the attempts it says it still runs are
    /// adopted where possible (see `liveness`). Returns the session number.
    pub fn register_worker(
        &mut self,
        mut info: WorkerInfo,
        tx: mpsc::UnboundedSender<ToWorker>,
    ) -> (u64, Vec<Commit>) {
        let commits = self.remove_worker(&info.id, None, "worker_reconnected");
        self.next_session += 1;
        let session = self.next_session;
        let id = info.id.clone();
        let offered = std::mem::take(&mut info.running);
        let cordoned = self.cordoned.contains(&id);
        self.workers.insert(
            id.clone(),
            WorkerEntry {
                free: info.slots,
                info,
                session,
                tx,
                running: HashSet::new(),
                draining: cordoned,
                shutting_down: false,
                in_idle: true,
                connected_ms: now_ms(),
                tasks_done: 0,
            },
        );
        self.adopt(&id, offered);
        let worker = self.workers.get_mut(&id).expect("inserted above");
        if worker.free > 0 && !worker.draining {
            self.idle.push_back(id.clone());
        } else {
            worker.in_idle = false;
        }
        if let Some(hold) = &mut self.dispatch_hold {
            hold.expected.remove(&id);
        }
        self.update_worker_gauges();
        (session, commits)
    }

    /// Removes a worker (stream closed, lease expired, key deleted). With `session`, only if
    /// that session is still the current one. Its unfinished tasks go back to READY, counted
    /// as retries with `reason`; returns job failures to persist for tasks out of attempts.
    pub fn remove_worker(&mut self, id: &str, session: Option<u64>, reason: &str) -> Vec<Commit> {
        match self.workers.get(id) {
            Some(w) if session.is_none_or(|s| s == w.session) => {}
            _ => return vec![],
        }
        let worker = self.workers.remove(id).expect("checked above");
        self.idle.retain(|w| w != id);
        let mut commits = Vec::new();
        for (job_id, index) in worker.running {
            if let Some(c) = self.requeue(&job_id, index, reason, "worker lost") {
                commits.push(c);
            }
        }
        self.update_worker_gauges();
        commits
    }

    /// The worker is shutting down: this session gets no new tasks; it finishes (or hands
    /// back) what it runs.
    pub fn worker_shutting_down(&mut self, id: &str) -> Option<WorkerView> {
        self.workers.get_mut(id)?.shutting_down = true;
        self.apply_draining(id);
        self.worker_view(id)
    }

    /// The cordons stored with the farm's state (on recovery).
    pub fn restore_cordons(&mut self, ids: impl IntoIterator<Item = String>) {
        self.cordoned.extend(ids);
    }

    pub fn is_cordoned(&self, id: &str) -> bool {
        self.cordoned.contains(id)
    }

    /// Drained workers that are not connected, sorted.
    pub fn cordoned_not_connected(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .cordoned
            .iter()
            .filter(|id| !self.workers.contains_key(*id))
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Applies a durable cordon (an operator's drain) or its lifting; the worker need not be
    /// connected. Returns the worker if it is.
    pub fn set_cordon(&mut self, id: &str, cordoned: bool) -> Option<WorkerView> {
        if cordoned {
            self.cordoned.insert(id.to_string());
        } else {
            self.cordoned.remove(id);
        }
        self.apply_draining(id);
        self.worker_view(id)
    }

    /// Recomputes whether a connected worker takes tasks, moving it in or out of `idle`.
    fn apply_draining(&mut self, id: &str) {
        let cordoned = self.cordoned.contains(id);
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        w.draining = cordoned || w.shutting_down;
        if w.draining && w.in_idle {
            w.in_idle = false;
            self.idle.retain(|x| x != id);
        } else if !w.draining && !w.in_idle && w.free > 0 {
            w.in_idle = true;
            self.idle.push_back(id.to_string());
        }
        self.update_worker_gauges();
    }

    pub fn worker_view(&self, id: &str) -> Option<WorkerView> {
        self.workers.get(id).map(|w| WorkerView {
            info: w.info.clone(),
            draining: w.draining,
            cordoned: self.cordoned.contains(id),
            running: w.running.len() as u32,
            connected_ms: w.connected_ms,
            tasks_done: w.tasks_done,
        })
    }

    /// Connected workers that take new work (not draining, not cordoned): id, free slots,
    /// stream.
    pub(crate) fn workers_taking_work(
        &self,
    ) -> impl Iterator<Item = (&str, u32, &mpsc::UnboundedSender<ToWorker>)> {
        self.workers
            .iter()
            .filter(|(_, w)| !w.draining)
            .map(|(id, w)| (id.as_str(), w.free, &w.tx))
    }

    pub fn worker_views(&self) -> Vec<WorkerView> {
        let mut ids: Vec<&String> = self.workers.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.worker_view(id))
            .collect()
    }

    /// Counts for the cluster status: (workers, ready tasks, running tasks).
    pub fn counts(&self) -> (usize, usize, usize) {
        let running = self.workers.values().map(|w| w.running.len()).sum();
        let ready = Priority3::sum(&self.metrics);
        (self.workers.len(), ready, running)
    }

    pub(super) fn update_worker_gauges(&mut self) {
        self.gauges_refreshed = Instant::now();
        let draining = self.workers.values().filter(|w| w.draining).count();
        self.metrics
            .workers
            .with_label_values(&["active"])
            .set((self.workers.len() - draining) as i64);
        self.metrics
            .workers
            .with_label_values(&["draining"])
            .set(draining as i64);
        let slots: u32 = self.workers.values().map(|w| w.info.slots).sum();
        let free: u32 = self
            .workers
            .values()
            .filter(|w| !w.draining)
            .map(|w| w.free)
            .sum();
        self.metrics
            .slots
            .with_label_values(&["total"])
            .set(i64::from(slots));
        self.metrics
            .slots
            .with_label_values(&["free"])
            .set(i64::from(free));
    }
}

/// Puts a READY task in the ready queue unless it already has a live entry there.
fn enqueue(ready: &mut ReadyQueue, metrics: &Metrics, job: &mut JobEntry, index: u32) {
    let task = &mut job.tasks[index as usize];
    if task.queued {
        return;
    }
    task.queued = true;
    let spec = &job.record.spec;
    let cost = crate::planner::estimated_work(spec, &job.record.tasks[index as usize]);
    ready.push(
        spec.priority,
        &spec.tenant,
        job.record.id.clone(),
        index,
        cost,
    );
    metrics.queue_depth(spec.priority).inc();
}

/// Why a cancel was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelRefusal {
    NotFound,
    /// Its final result is being committed.
    Finishing,
    /// Another terminal write is in flight.
    Busy,
}

/// Sum of the ready-queue gauges.
struct Priority3;

impl Priority3 {
    fn sum(metrics: &Metrics) -> usize {
        crate::model::Priority::ALL
            .iter()
            .map(|p| metrics.queue_depth(*p).get().max(0) as usize)
            .sum()
    }
}

fn view_of(job: &JobEntry, with_tasks: bool) -> JobView {
    let total_weight: f64 = job.record.tasks.iter().map(|t| t.weight).sum();
    let done_weight: f64 = job
        .record
        .tasks
        .iter()
        .zip(&job.tasks)
        .map(|(d, t)| d.weight * t.progress)
        .sum();
    let progress = if job.record.state == JobState::Succeeded {
        1.0
    } else if total_weight > 0.0 {
        (done_weight / total_weight).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let tasks = if with_tasks {
        job.record
            .tasks
            .iter()
            .zip(&job.tasks)
            .map(|(d, t)| TaskRunView {
                id: d.id.clone(),
                kind: d.kind,
                state: t.state,
                frame_start: d.frame_start,
                frame_end: d.frame_end,
                worker_id: t.worker.clone().unwrap_or_default(),
                attempt: t.attempt,
                progress: t.progress,
                error: t.error.clone().unwrap_or_default(),
                failures: t.failures,
                retry_reason: t.retry_reason.clone().unwrap_or_default(),
                steps_per_second: t.steps_per_second,
            })
            .collect()
    } else {
        vec![]
    };
    let count = |s: TaskState| job.tasks.iter().filter(|t| t.state == s).count() as u32;
    JobView {
        id: job.record.id.clone(),
        state: job.state(),
        spec: job.record.spec.clone(),
        progress,
        total_tasks: job.tasks.len() as u32,
        blocked: count(TaskState::Blocked),
        ready: count(TaskState::Ready),
        running: count(TaskState::Assigned) + count(TaskState::Running),
        done: count(TaskState::Done),
        failed: count(TaskState::Failed),
        retries: job.tasks.iter().map(|t| t.retries).sum(),
        tasks,
        outputs: job.record.outputs.clone(),
        error: job.record.error.clone().unwrap_or_default(),
        created_ms: job.record.created_ms,
        started_ms: job.started_ms,
        finished_ms: job.record.finished_ms,
        idempotency_key: job.record.idempotency_key.clone().unwrap_or_default(),
        scene: job.scene.clone().unwrap_or_default(),
        waiting: String::new(),
        cached_from: job.record.cached_from.clone().unwrap_or_default(),
    }
}
