//! The job table: each job's record and the run state of its tasks, looked up by id, by
//! idempotency key and by content key; jobs restored from the store or newly created, the
//! views handed to the API, listing pages, change notifications for WatchJob, and the
//! first half of a cancel. Per-tenant counts of unfinished jobs live here too, since
//! admission reads them.

use super::*;

/// A job-level write that must be made durable before it takes effect in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pending {
    /// The ASSEMBLE result is being committed together with SUCCEEDED.
    Finishing,
    Cancelling,
    Failing,
}

/// The run state of one task of a job (its plan is in `JobRecord::tasks`).
pub(super) struct TaskRun {
    pub(super) state: TaskState,
    pub(super) attempt: u64,
    /// The highest attempt number issued for this task in any term; the next dispatch uses
    /// one more, so no two attempts of a term share a number even after adoptions.
    pub(super) issued: u64,
    /// The term that issued `attempt`: the current one, or an earlier leader's for an
    /// attempt adopted after a failover. (term, attempt) names an attempt uniquely.
    pub(super) term: u64,
    pub(super) worker: Option<String>,
    pub(super) progress: f64,
    /// When the running attempt last advanced (assignment, adoption or a new step).
    pub(super) last_progress: Instant,
    pub(super) step: u32,
    pub(super) steps_per_second: f64,
    /// Why the last attempt ended without a result.
    pub(super) retry_reason: Option<String>,
    pub(super) deps_left: u32,
    pub(super) outputs: Vec<Output>,
    pub(super) error: Option<String>,
    /// Assignments that ended in an error or a lost worker.
    pub(super) failures: u32,
    pub(super) retries: u32,
    /// While the result is being committed: no requeue, no second result.
    pub(super) committing: bool,
    /// Has a live entry in the ready queue (counted in the queue-depth gauge).
    pub(super) queued: bool,
    pub(super) ready_at: Instant,
    /// DENOISE: the latest checkpoint, which the next attempt resumes from (see
    /// `checkpoints`), and the step the current attempt started from.
    pub(super) checkpoint: Option<ResumeFrom>,
    pub(super) resumed_from: u32,
    /// Asked to checkpoint and hand back for HIGH work (see `preemption`); when it last
    /// was, and how often.
    pub(super) preempting: bool,
    pub(super) preempted_at: Option<Instant>,
    pub(super) preemptions: u32,
    /// Clips the current (or last) attempt runs with in one batch (see `batching`).
    pub(super) batch_size: u32,
}

impl TaskRun {
    /// Ends the running attempt without a result, noting `error` (`counts`: as a failure of
    /// the task); false when no attempt runs or its result is being committed.
    pub(super) fn end_attempt(&mut self, counts: bool, error: String) -> bool {
        if self.committing || !matches!(self.state, TaskState::Assigned | TaskState::Running) {
            return false;
        }
        if counts {
            self.failures += 1;
        }
        self.worker = None;
        self.progress = 0.0;
        self.steps_per_second = 0.0;
        self.error = Some(error);
        self.preempting = false;
        true
    }
}

/// One job of the table: the durable record plus what only memory knows.
pub(super) struct JobEntry {
    pub(super) record: JobRecord,
    /// `record.spec`, shared with the job's assignments.
    pub(super) spec: Arc<JobSpec>,
    pub(super) tasks: Vec<TaskRun>,
    pub(super) scene: Option<String>,
    pub(super) started_ms: Option<u64>,
    pub(super) pending: Option<Pending>,
    /// A model job's text key (see `text_share`), computed once at insertion: every
    /// enqueue, dispatch, commit and view of its TEXT_ENCODE task needs it.
    pub(super) text_key: Option<String>,
    /// Bumped on every change; WatchJob streams follow it.
    pub(super) changed: watch::Sender<u64>,
    /// Failed attempts of this job per worker, and the workers excluded from it for that
    /// (see `health`); in memory only.
    pub(super) failed_by: HashMap<String, u32>,
    pub(super) excluded: HashSet<String>,
    /// The running job this one follows, its tasks held (see `merges`); and the content
    /// key under which others follow this one.
    pub(super) following: Option<JobId>,
    pub(super) content_key: Option<String>,
}

impl JobEntry {
    /// Wakes the job's WatchJob streams.
    pub(super) fn touch(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// The state a client sees: QUEUED until a task started, then RUNNING, until terminal.
    pub(super) fn state(&self) -> JobState {
        if self.record.state.is_terminal() {
            self.record.state
        } else if self.started_ms.is_some() {
            JobState::Running
        } else {
            JobState::Queued
        }
    }
}

impl Farm {
    pub(crate) fn active_jobs(&self) -> usize {
        self.active_jobs
    }

    /// Unfinished jobs per tenant, most first (then by name).
    pub(crate) fn active_by_tenant(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .active_by_tenant
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Jobs of `tenant` not yet terminal.
    pub(crate) fn active_jobs_of(&self, tenant: &str) -> usize {
        self.active_by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// A retained SUCCEEDED job whose spec has `content_key`, and its outputs: what a new
    /// job with the same key can reuse instead of rendering again.
    pub(crate) fn cached_result(&self, content_key: &str) -> Option<(JobId, Vec<Output>)> {
        let id = self.by_content.get(content_key)?;
        let job = self.jobs.get(id)?;
        (job.record.state == JobState::Succeeded && !job.record.outputs.is_empty())
            .then(|| (id.clone(), job.record.outputs.clone()))
    }

    /// The job already created with this idempotency key (per tenant), if any.
    pub(crate) fn job_for_key(&self, tenant: &str, key: &str) -> Option<JobId> {
        self.idempotency
            .get(&(tenant.to_string(), key.to_string()))
            .cloned()
    }

    /// After a failover, once every job is inserted: each unfinished job's committed tasks
    /// are charged to its tenant's fair share, as they were when dispatched (see
    /// `queue`), so the tenant that was ahead stays ahead of the one that waited.
    pub(crate) fn rebuild_fair_share(&mut self) {
        for job in self.jobs.values() {
            if job.record.state.is_terminal() {
                continue;
            }
            let spec = &job.record.spec;
            for (def, run) in job.record.tasks.iter().zip(&job.tasks) {
                if run.state != TaskState::Done {
                    continue;
                }
                let model = spec
                    .model
                    .as_ref()
                    .filter(|_| def.kind.needs_model())
                    .map(|m| m.name.as_str());
                let cost = crate::planner::estimated_work(spec, def);
                self.ready.credit(model, &spec.tenant, cost);
            }
        }
        self.ready.settle();
    }

    /// Adds a stored job with the completions already committed for it (from a snapshot on
    /// recovery, none for a new job), and queues whatever is ready.
    pub(crate) fn insert_job(&mut self, record: JobRecord, completions: &[TaskCompletion]) {
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
                checkpoint: None,
                resumed_from: 0,
                preempting: false,
                preempted_at: None,
                preemptions: 0,
                batch_size: 0,
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
        let text_key = text_share::text_key(&record.spec);
        if let Some(key) = &text_key {
            let done = record
                .tasks
                .iter()
                .zip(&tasks)
                .find(|(d, t)| d.kind == TaskKind::TextEncode && t.state == TaskState::Done);
            if let Some((_, t)) = done {
                self.text.done(key, &record.id, t.outputs.clone());
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
            text_key,
            changed,
            failed_by: HashMap::new(),
            excluded: HashSet::new(),
            following: None,
            content_key: None,
        };
        if !terminal {
            self.join_merge(&mut entry);
            self.active_jobs += 1;
            *self
                .active_by_tenant
                .entry(entry.record.spec.tenant.clone())
                .or_default() += 1;
            self.metrics.jobs_active.set(self.active_jobs as i64);
            for i in 0..entry.tasks.len() {
                if entry.tasks[i].state == TaskState::Ready {
                    enqueue(
                        &mut self.ready,
                        &mut self.text,
                        &self.metrics,
                        &mut entry,
                        i as u32,
                    );
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
    pub(crate) fn job_view(&self, id: &str, with_tasks: bool) -> Option<JobView> {
        self.jobs.get(id).map(|j| self.view(j, with_tasks))
    }

    fn view(&self, job: &JobEntry, with_tasks: bool) -> JobView {
        let mut v = view_of(job, with_tasks);
        v.waiting = self.waiting_reason(job).unwrap_or_default();
        v
    }

    /// A receiver that changes whenever the job does.
    pub(crate) fn watch_job(&self, id: &str) -> Option<watch::Receiver<u64>> {
        self.jobs.get(id).map(|j| j.changed.subscribe())
    }

    /// Jobs newest first, filtered, starting after `after` (a job id from the previous page).
    pub(crate) fn list_jobs(
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
    pub(crate) fn begin_cancel(&mut self, id: &str) -> Result<Option<Commit>, CancelRefusal> {
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
                error_code: None,
            },
        }))
    }
}

/// Puts a READY task in the ready queue unless it already has a live entry there.
pub(super) fn enqueue(
    ready: &mut ReadyQueues,
    text: &mut TextShares,
    metrics: &Metrics,
    job: &mut JobEntry,
    index: u32,
) {
    let def = &job.record.tasks[index as usize];
    if job.tasks[index as usize].queued {
        return;
    }
    if def.kind == TaskKind::TextEncode {
        if let Some(key) = &job.text_key {
            if let text_share::Gate::Wait = text.gate(&job.record.id, index, key) {
                return;
            }
        }
    }
    let task = &mut job.tasks[index as usize];
    task.queued = true;
    let spec = &job.record.spec;
    let cost = crate::planner::estimated_work(spec, def);
    let model = spec
        .model
        .as_ref()
        .filter(|_| def.kind.needs_model())
        .map(|m| m.name.as_str());
    let group = batching::group_of(spec, def, task.checkpoint.as_ref());
    ready.push(
        model,
        group,
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
pub(crate) enum CancelRefusal {
    NotFound,
    /// Its final result is being committed.
    Finishing,
    /// Another terminal write is in flight.
    Busy,
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
                checkpoint_step: t.checkpoint.as_ref().map_or(0, |c| c.step),
                resumed_from_step: t.resumed_from,
                preemptions: t.preemptions,
                batch_size: t.batch_size,
                outputs: t.outputs.clone(),
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
        adjustments: job.record.adjustments.clone(),
        error_code: job.record.error_code.clone().unwrap_or_default(),
        // Following now, or followed and got that job's outputs.
        merged_into: job
            .following
            .clone()
            .or_else(|| {
                job.record
                    .merged_into
                    .as_ref()
                    .and(job.record.cached_from.clone())
            })
            .unwrap_or_default(),
    }
}
