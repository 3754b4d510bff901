//! Reports from workers (progress, results) and the transitions they cause: commits of
//! results, retries, job completion, and the terminal states of jobs.

use std::time::Instant;

use super::*;

/// Why a worker report was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Rejection {
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("unknown task {0}")]
    UnknownTask(String),
    #[error("stale attempt token: the task is no longer assigned to this attempt")]
    Stale,
    #[error("checkpoint refused: {0}")]
    Checkpoint(String),
}

impl Farm {
    pub(super) fn check_token(
        &self,
        worker_id: &str,
        token: &AttemptToken,
    ) -> Result<(usize, TaskState), Rejection> {
        let job = self
            .jobs
            .get(&token.job_id)
            .ok_or_else(|| Rejection::UnknownJob(token.job_id.clone()))?;
        let tasks = &job.record.tasks;
        let index = crate::planner::index_hint(&token.task_id, tasks.len())
            .filter(|&i| tasks.get(i).is_some_and(|t| t.id == token.task_id))
            .or_else(|| tasks.iter().position(|t| t.id == token.task_id))
            .ok_or_else(|| Rejection::UnknownTask(token.task_id.clone()))?;
        let task = &job.tasks[index];
        let current = token.term == task.term
            && token.attempt == task.attempt
            && task.worker.as_deref() == Some(worker_id)
            && matches!(task.state, TaskState::Assigned | TaskState::Running)
            && !task.committing
            && job.pending.is_none();
        if current {
            Ok((index, task.state))
        } else {
            Err(Rejection::Stale)
        }
    }

    /// Step progress of a running task, with the speed its worker measured.
    pub(crate) fn progress(
        &mut self,
        worker_id: &str,
        token: &AttemptToken,
        step: u32,
        total: u32,
        steps_per_second: f64,
    ) -> Result<(), Rejection> {
        let (index, _) = self.check_token(worker_id, token).inspect_err(|_| {
            self.metrics.stale_reports.inc();
        })?;
        let job = self.jobs.get_mut(&token.job_id).expect("checked");
        let task = &mut job.tasks[index];
        task.state = TaskState::Running;
        if step > task.step {
            task.step = step;
            task.last_progress = Instant::now();
        }
        if steps_per_second.is_finite() && steps_per_second > 0.0 {
            task.steps_per_second = steps_per_second;
        }
        task.progress = if total == 0 {
            0.0
        } else {
            (f64::from(step) / f64::from(total)).clamp(0.0, 1.0)
        };
        job.touch();
        Ok(())
    }

    /// A worker's result. A success returns the commit to make durable; a transient
    /// failure is handled at once (requeue), or returns the job failure to persist when out
    /// of attempts; a permanent one (`failure.permanent`) fails the job at once.
    pub(crate) fn begin_result(
        &mut self,
        worker_id: &str,
        token: &AttemptToken,
        result: AttemptResult,
    ) -> Result<Option<Commit>, Rejection> {
        let AttemptResult {
            ok,
            error,
            failure,
            outputs,
            scene,
        } = result;
        let (error, failure) = (error.as_str(), &failure);
        let (index, _) = self.check_token(worker_id, token).inspect_err(|_| {
            self.metrics.stale_reports.inc();
        })?;
        self.release_slot(worker_id, &token.job_id, index as u32, ok);
        if !ok {
            self.metrics
                .task_failures
                .with_label_values(&[failure.class(), &failure.code])
                .inc();
            if failure.permanent {
                return Ok(self.fail_permanently(&token.job_id, index as u32, failure, error));
            }
            self.charge_failure(worker_id, &token.job_id);
            return Ok(self.requeue(&token.job_id, index as u32, "task_error", error));
        }
        let job = self.jobs.get_mut(&token.job_id).expect("checked");
        job.tasks[index].committing = true;
        let completion = TaskCompletion {
            job_id: token.job_id.clone(),
            task_index: index as u32,
            attempt: token.attempt,
            term: token.term,
            worker_id: worker_id.to_string(),
            outputs,
            scene,
            finished_ms: now_ms(),
        };
        let mut writes = vec![Write::TaskDone(completion.clone())];
        let last = job
            .tasks
            .iter()
            .enumerate()
            .all(|(i, t)| i == index || t.state == TaskState::Done);
        if last {
            // The final result and SUCCEEDED go in one transaction: a job never succeeds
            // without its artifacts, nor has artifacts without succeeding.
            job.pending = Some(Pending::Finishing);
            let mut record = job.record.clone();
            record.state = JobState::Succeeded;
            record.finished_ms = Some(completion.finished_ms);
            record.outputs = completion.outputs.clone();
            writes.push(Write::Job(Box::new(record)));
        }
        Ok(Some(Commit {
            writes,
            after: AfterCommit::TaskDone { completion },
        }))
    }

    pub(super) fn release_slot(&mut self, worker_id: &str, job_id: &str, index: u32, done: bool) {
        if let Some(w) = self.workers.get_mut(worker_id) {
            let task = (job_id.to_string(), index);
            if w.running.remove(&task) {
                if w.batches.ended(&task) {
                    w.free += 1;
                }
                if done {
                    w.tasks_done += 1;
                }
                if !w.in_idle && !w.draining {
                    w.in_idle = true;
                    self.idle.push_back(worker_id.to_string());
                }
            }
        }
    }

    /// Puts a task back to READY after a failed attempt, or fails its job when it is out of
    /// attempts (returning the write to persist).
    pub(super) fn requeue(
        &mut self,
        job_id: &str,
        index: u32,
        reason: &str,
        error: &str,
    ) -> Option<Commit> {
        self.return_to_ready(job_id, index, reason, error, true)
    }

    /// Ends a running attempt without a result: the task is READY again, or, when the
    /// attempt `counts` as a failure and the task is out of attempts, its job fails.
    pub(super) fn return_to_ready(
        &mut self,
        job_id: &str,
        index: u32,
        reason: &str,
        error: &str,
        counts: bool,
    ) -> Option<Commit> {
        let max_attempts = self.config.max_attempts;
        let job = self.jobs.get_mut(job_id)?;
        let task = &mut job.tasks[index as usize];
        if !task.end_attempt(counts, format!("{reason}: {error}")) {
            return None;
        }
        task.retry_reason = Some(reason.to_string());
        self.metrics
            .tasks_retried
            .with_label_values(&[reason])
            .inc();
        if counts && task.failures >= max_attempts {
            task.state = TaskState::Failed;
            let message = format!(
                "task {} failed {} times; last error: {reason}: {error}",
                job.record.tasks[index as usize].id, task.failures
            );
            return fail_job(job, message, ATTEMPTS_EXHAUSTED);
        }
        task.state = TaskState::Ready;
        task.ready_at = Instant::now();
        job.touch();
        if job.pending.is_none() {
            enqueue(&mut self.ready, &mut self.text, &self.metrics, job, index);
        }
        None
    }

    /// Fails task `index` and its job at once: its worker said no attempt can succeed.
    fn fail_permanently(
        &mut self,
        job_id: &str,
        index: u32,
        failure: &Failure,
        error: &str,
    ) -> Option<Commit> {
        let job = self.jobs.get_mut(job_id)?;
        let task = &mut job.tasks[index as usize];
        if !task.end_attempt(true, format!("{}: {error}", failure.code)) {
            return None;
        }
        task.state = TaskState::Failed;
        let message = format!(
            "task {} failed with a permanent error, not retried: {}: {error}",
            job.record.tasks[index as usize].id, failure.code
        );
        fail_job(job, message, &failure.code)
    }

    /// Applies a transition once its writes are durable (`Ok`), or undoes its first half
    /// when they could not be written (`Err`, with the reason for the log and the task).
    pub(crate) fn finish_commit(&mut self, after: AfterCommit, result: Result<(), String>) {
        match (after, result) {
            (AfterCommit::TaskDone { completion }, Ok(())) => self.apply_done(completion),
            (AfterCommit::TaskDone { completion }, Err(e)) => {
                let Some(job) = self.jobs.get_mut(&completion.job_id) else {
                    return;
                };
                if job.pending == Some(Pending::Finishing) {
                    job.pending = None;
                }
                let task = &mut job.tasks[completion.task_index as usize];
                task.committing = false;
                // The attempt's output is orphaned; the task runs again under a new attempt.
                let _ = self.requeue(
                    &completion.job_id,
                    completion.task_index,
                    "commit_failed",
                    &e,
                );
                self.requeue_ready_tasks(&completion.job_id);
            }
            (
                AfterCommit::JobTerminal {
                    job_id,
                    state,
                    error,
                    error_code,
                },
                Ok(()),
            ) => self.apply_terminal(&job_id, state, error, error_code),
            (
                AfterCommit::Merged {
                    job_id,
                    from,
                    outputs,
                },
                result,
            ) => self.finish_merged(&job_id, from, outputs, result),
            (AfterCommit::JobTerminal { job_id, .. }, Err(_)) => {
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    job.pending = None;
                }
                self.requeue_ready_tasks(&job_id);
            }
        }
    }

    /// Re-queues a job's READY tasks (after a pending terminal write was abandoned).
    fn requeue_ready_tasks(&mut self, job_id: &str) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        if job.pending.is_some() || job.record.state.is_terminal() {
            return;
        }
        for i in 0..job.tasks.len() {
            if job.tasks[i].state == TaskState::Ready {
                enqueue(
                    &mut self.ready,
                    &mut self.text,
                    &self.metrics,
                    job,
                    i as u32,
                );
            }
        }
    }

    fn apply_done(&mut self, completion: TaskCompletion) {
        let Some(job) = self.jobs.get_mut(&completion.job_id) else {
            return;
        };
        let index = completion.task_index as usize;
        let kind = job.record.tasks[index].kind;
        let text_waiters = match &job.text_key {
            Some(key) if kind == TaskKind::TextEncode => {
                self.text
                    .done(key, &completion.job_id, completion.outputs.clone())
            }
            _ => vec![],
        };
        {
            let task = &mut job.tasks[index];
            task.committing = false;
            task.state = TaskState::Done;
            task.progress = 1.0;
            task.outputs = completion.outputs.clone();
            task.error = None;
        }
        if completion.scene.is_some() {
            job.scene = completion.scene.clone();
        }
        self.metrics
            .tasks_completed
            .with_label_values(&[kind.as_str()])
            .inc();
        let now = Instant::now();
        let mut newly_ready = Vec::new();
        for (i, def) in job.record.tasks.iter().enumerate() {
            if def.deps.contains(&completion.task_index) {
                let t = &mut job.tasks[i];
                t.deps_left -= 1;
                if t.deps_left == 0 && t.state == TaskState::Blocked {
                    t.state = TaskState::Ready;
                    t.ready_at = now;
                    newly_ready.push(i as u32);
                }
            }
        }
        job.touch();
        if job.pending == Some(Pending::Finishing) {
            let outputs = completion.outputs.clone();
            let id = completion.job_id.clone();
            if let Some(job) = self.jobs.get_mut(&id) {
                job.record.outputs = outputs;
            }
            self.apply_terminal(&id, JobState::Succeeded, None, None);
            return;
        }
        if job.pending.is_none() && !job.record.state.is_terminal() {
            for i in newly_ready {
                enqueue(&mut self.ready, &mut self.text, &self.metrics, job, i);
            }
        }
        self.release_text_waiters(text_waiters);
    }

    pub(super) fn apply_terminal(
        &mut self,
        job_id: &str,
        state: JobState,
        error: Option<String>,
        error_code: Option<String>,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        if job.record.state.is_terminal() {
            return;
        }
        job.pending = None;
        job.record.state = state;
        job.record.error = error;
        job.record.error_code = error_code;
        let priority = job.record.spec.priority;
        for t in job.tasks.iter_mut() {
            if t.queued {
                // Its queue entry becomes stale and is dropped when popped.
                t.queued = false;
                self.metrics.queue_depth(priority).dec();
            }
        }
        let finished = now_ms();
        job.record.finished_ms = Some(finished);
        let mut cancels = Vec::new();
        for (i, t) in job.tasks.iter_mut().enumerate() {
            match t.state {
                TaskState::Assigned | TaskState::Running => {
                    if let Some(w) = t.worker.take() {
                        cancels.push((
                            w,
                            i as u32,
                            AttemptToken {
                                job_id: job_id.to_string(),
                                task_id: job.record.tasks[i].id.clone(),
                                attempt: t.attempt,
                                term: self.term,
                            },
                        ));
                    }
                    t.state = TaskState::Cancelled;
                }
                TaskState::Ready | TaskState::Blocked if state == JobState::Cancelled => {
                    t.state = TaskState::Cancelled;
                }
                _ => {}
            }
        }
        for t in job.tasks.iter_mut() {
            if t.state == TaskState::Ready {
                t.state = TaskState::Blocked;
            }
        }
        job.touch();
        let duration = finished.saturating_sub(job.record.created_ms) as f64 / 1000.0;
        self.metrics.job_duration.observe(duration);
        self.metrics
            .jobs_finished
            .with_label_values(&[state.as_str()])
            .inc();
        self.active_jobs = self.active_jobs.saturating_sub(1);
        if let Some(n) = self.active_by_tenant.get_mut(&job.record.spec.tenant) {
            *n -= 1;
            if *n == 0 {
                self.active_by_tenant.remove(&job.record.spec.tenant);
            }
        }
        self.metrics.jobs_active.set(self.active_jobs as i64);
        self.note_finished(job_id);
        for (worker_id, index, token) in cancels {
            self.release_slot(&worker_id, job_id, index, false);
            if let Some(w) = self.workers.get(&worker_id) {
                let _ = w.tx.send(ToWorker::Cancel(token));
            }
        }
        self.text_owner_ended(job_id);
        self.settle_followers(job_id, state);
    }
}

/// Job.error_code of a job whose task ran out of attempts.
pub(crate) const ATTEMPTS_EXHAUSTED: &str = "attempts_exhausted";

/// What a worker reported of one attempt (a TaskResult, checked).
#[derive(Clone, Debug)]
pub(crate) struct AttemptResult {
    pub(crate) ok: bool,
    /// Why it failed, when `!ok`.
    pub(crate) error: String,
    pub(crate) failure: Failure,
    pub(crate) outputs: Vec<Output>,
    /// PLAN tasks: the scene JSON.
    pub(crate) scene: Option<String>,
}

impl AttemptResult {
    /// A successful attempt with its outputs.
    #[cfg(test)]
    pub(crate) fn success(outputs: Vec<Output>) -> Self {
        Self {
            ok: true,
            error: String::new(),
            failure: Failure::transient(),
            outputs,
            scene: None,
        }
    }

    /// A failed attempt.
    #[cfg(test)]
    pub(crate) fn failed(error: &str, failure: Failure) -> Self {
        Self {
            ok: false,
            error: error.into(),
            failure,
            outputs: vec![],
            scene: None,
        }
    }
}

/// How a worker classed a failed attempt (TaskResult.error_class, error_code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) permanent: bool,
    /// `[a-z0-9_]{1,64}`; "task_error" when the worker gave none or an invalid one.
    pub(crate) code: String,
}

impl Failure {
    /// A transient failure with the generic code (what older workers report).
    #[cfg(test)]
    pub(crate) fn transient() -> Self {
        Self {
            permanent: false,
            code: "task_error".into(),
        }
    }

    /// From the worker's fields; an unusable code becomes "task_error" (it is a metric
    /// label and a stored field: a misbehaving worker must not choose its text).
    pub(crate) fn from_report(permanent: bool, code: &str) -> Self {
        let valid = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        Self {
            permanent,
            code: if valid {
                code.into()
            } else {
                "task_error".into()
            },
        }
    }

    pub(crate) fn class(&self) -> &'static str {
        if self.permanent {
            "permanent"
        } else {
            "transient"
        }
    }
}

/// Marks `job` failing with `message` and returns the write that makes it FAILED, unless
/// it is already ending.
fn fail_job(job: &mut JobEntry, message: String, code: &str) -> Option<Commit> {
    job.touch();
    if job.pending.is_some() || job.record.state.is_terminal() {
        return None;
    }
    job.pending = Some(Pending::Failing);
    let mut record = job.record.clone();
    record.state = JobState::Failed;
    record.finished_ms = Some(now_ms());
    record.error = Some(message.clone());
    record.error_code = Some(code.to_string());
    Some(Commit {
        writes: vec![Write::Job(Box::new(record))],
        after: AfterCommit::JobTerminal {
            job_id: job.record.id.clone(),
            state: JobState::Failed,
            error: Some(message),
            error_code: Some(code.to_string()),
        },
    })
}
