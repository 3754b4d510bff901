//! Keeping work moving when workers or coordinators misbehave:
//!
//! - Adoption: a worker that reconnects (after a broken stream or a coordinator failover)
//!   offers the attempts it still runs. Each one whose task is READY, with no other attempt
//!   under way, is adopted under the token it already has, term included, so the work
//!   goes on and its result will be accepted; every other offered attempt is cancelled on
//!   the worker. After a failover the new leader holds dispatch for a short grace period,
//!   until the workers it knows of have reconnected, so their running tasks are adopted
//!   instead of being handed to someone else.
//! - Hand-back: a worker shutting down gives unfinished attempts back; they are READY at
//!   once and not counted as failures.
//! - Stuck versus slow: workers report step progress and their steps per second. A running
//!   attempt whose progress stopped for longer than `stuck_factor` times its expected step
//!   time (and at least `stuck_min`) is stuck: it is cancelled on its worker and the task is
//!   retried, with reason "stuck" in the task and in `reelfarm_tasks_retried_total`. A slow
//!   attempt keeps advancing and is left alone, however slow.
//! - Waiting: a job that cannot move because no live worker can take its tasks says so.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::*;

impl Farm {
    /// Adopts the attempts `offered` by worker `worker_id` where possible; cancels the rest
    /// on that worker. Members of one of its `batches` adopted together hold one slot.
    pub(super) fn adopt(
        &mut self,
        worker_id: &str,
        offered: Vec<AttemptToken>,
        batches: Vec<Vec<AttemptToken>>,
    ) {
        let now = Instant::now();
        let batch_of: HashMap<&AttemptToken, usize> = batches
            .iter()
            .enumerate()
            .flat_map(|(i, members)| members.iter().map(move |t| (t, i)))
            .collect();
        // Offered batch → (the id its adopted members run under here, members adopted).
        let mut adopted_batches: HashMap<usize, (u64, Vec<(JobId, u32)>)> = HashMap::new();
        for token in offered {
            let batch = batch_of.get(&token).copied();
            let shares_slot = batch.is_some_and(|b| adopted_batches.contains_key(&b));
            let adopted = self.try_adopt(worker_id, &token, now, shares_slot);
            if let (Some(index), Some(b)) = (adopted, batch) {
                let next = &mut self.next_batch;
                let entry = adopted_batches.entry(b).or_insert_with(|| {
                    *next += 1;
                    (*next, Vec::new())
                });
                entry.1.push((token.job_id.clone(), index));
            }
            let Some(worker) = self.workers.get(worker_id) else {
                return;
            };
            if adopted.is_some() {
                tracing::info!(worker_id, job_id = %token.job_id, task_id = %token.task_id,
                    attempt = token.attempt, term = token.term, "running attempt adopted");
            } else {
                tracing::info!(worker_id, job_id = %token.job_id, task_id = %token.task_id,
                    attempt = token.attempt, term = token.term,
                    "running attempt not adoptable (done, terminal or given to another); cancelling it");
                let _ = worker.tx.send(ToWorker::Cancel(token));
            }
        }
        if let Some(worker) = self.workers.get_mut(worker_id) {
            for (id, members) in adopted_batches.into_values() {
                worker.batches.insert(id, members);
            }
        }
    }

    /// Adopts one offered attempt, returning its task's index; `shares_slot`: it runs in a
    /// batch with one adopted already, whose slot it shares.
    fn try_adopt(
        &mut self,
        worker_id: &str,
        token: &AttemptToken,
        now: Instant,
        shares_slot: bool,
    ) -> Option<u32> {
        let worker = self.workers.get_mut(worker_id)?;
        if worker.free == 0 && !shares_slot {
            return None;
        }
        let job = self.jobs.get_mut(&token.job_id)?;
        if job.pending.is_some() || job.record.state.is_terminal() {
            return None;
        }
        let index = job
            .record
            .tasks
            .iter()
            .position(|t| t.id == token.task_id)?;
        let priority = job.record.spec.priority;
        let task = &mut job.tasks[index];
        if task.state != TaskState::Ready || task.committing {
            return None;
        }
        if task.queued {
            // The queue entry is skipped when popped (see `dispatch`).
            task.queued = false;
            self.metrics.queue_depth(priority).dec();
        }
        task.state = TaskState::Running;
        // The adopted attempt keeps its own (term, attempt): that is what its result carries.
        task.attempt = token.attempt;
        task.issued = task.issued.max(token.attempt);
        task.term = token.term;
        task.worker = Some(worker_id.to_string());
        task.progress = 0.0;
        task.step = 0;
        task.steps_per_second = 0.0;
        task.last_progress = now;
        if job.started_ms.is_none() {
            job.started_ms = Some(now_ms());
        }
        job.touch();
        worker.running.insert((token.job_id.clone(), index as u32));
        if !shares_slot {
            worker.free -= 1;
        }
        Some(index as u32)
    }

    /// After a failover: hold dispatch until every worker in `expected` has reconnected, or
    /// for `grace` at most.
    pub(crate) fn hold_dispatch(&mut self, expected: HashSet<String>, grace: Duration) {
        let expected: HashSet<String> = expected
            .into_iter()
            .filter(|id| !self.workers.contains_key(id))
            .collect();
        if !expected.is_empty() {
            self.dispatch_hold = Some(DispatchHold {
                until: Instant::now() + grace,
                expected,
            });
        }
    }

    /// Whether dispatch is held (and lifts the hold once it has expired or been met).
    pub(super) fn holding_dispatch(&mut self) -> bool {
        match &self.dispatch_hold {
            Some(h) if !h.expected.is_empty() && Instant::now() < h.until => true,
            Some(_) => {
                self.dispatch_hold = None;
                false
            }
            None => false,
        }
    }

    /// A worker gives an unfinished attempt back: READY at once, not a failure. With
    /// `preempted`, it answers a preemption (see `preemption`) and resumes from the
    /// checkpoint it reported just before.
    pub(crate) fn hand_back(
        &mut self,
        worker_id: &str,
        token: &AttemptToken,
        reason: &str,
        preempted: bool,
    ) -> Result<(), Rejection> {
        let (index, _) = self.check_token(worker_id, token).inspect_err(|_| {
            self.metrics.stale_reports.inc();
        })?;
        self.release_slot(worker_id, &token.job_id, index as u32, false);
        let message = if reason.is_empty() {
            "the worker gave the task back"
        } else {
            reason
        };
        let job = self.jobs.get_mut(&token.job_id).expect("checked");
        let task = &mut job.tasks[index];
        let reason = if preempted && task.preempting {
            task.preemptions += 1;
            self.metrics.preemptions.inc();
            "preempted"
        } else {
            "handed_back"
        };
        self.return_to_ready(&token.job_id, index as u32, reason, message, false);
        Ok(())
    }

    /// [`Farm::reassign_stuck_among`] over every connected worker at once (the watchdog
    /// scans in slices instead: `Scheduler::tick`).
    #[cfg(test)]
    pub(crate) fn reassign_stuck(&mut self, now: Instant) -> Vec<Commit> {
        let all: Vec<String> = self.workers.keys().cloned().collect();
        self.reassign_stuck_among(&all, now)
    }

    /// Connected workers with their running attempts, in slices of about `attempts`
    /// attempts: the stuck scan costs about a microsecond per attempt (it touches each
    /// one's job and task), so a large farm is scanned a slice per hold of the lock.
    pub(crate) fn stuck_scan_slices(&self, attempts: usize) -> Vec<Vec<String>> {
        let mut slices = vec![Vec::new()];
        let mut in_slice = 0;
        for (id, w) in self.workers.iter().filter(|(_, w)| !w.running.is_empty()) {
            if in_slice >= attempts.max(1) {
                slices.push(Vec::new());
                in_slice = 0;
            }
            slices.last_mut().expect("never empty").push(id.clone());
            in_slice += w.running.len();
        }
        slices
    }

    /// Running attempts of `workers` that are stuck at `now`: each is cancelled on its
    /// worker and its task retried. Returns the job failures to persist (tasks out of
    /// attempts).
    pub(crate) fn reassign_stuck_among(&mut self, workers: &[String], now: Instant) -> Vec<Commit> {
        let (factor, min) = (self.config.stuck_factor, self.config.stuck_min);
        let mut stuck = Vec::new();
        for (worker_id, w) in workers
            .iter()
            .filter_map(|id| self.workers.get_key_value(id))
        {
            for (job_id, index) in &w.running {
                let Some(job) = self.jobs.get(job_id) else {
                    continue;
                };
                let task = &job.tasks[*index as usize];
                if task.committing {
                    continue;
                }
                let stalled = now.saturating_duration_since(task.last_progress);
                let expected_step = (task.steps_per_second > 0.0)
                    .then(|| Duration::from_secs_f64(1.0 / task.steps_per_second));
                let limit = expected_step
                    .map(|s| s.mul_f64(factor).max(min))
                    .unwrap_or(min);
                if stalled > limit {
                    let token = AttemptToken {
                        job_id: job_id.clone(),
                        task_id: job.record.tasks[*index as usize].id.clone(),
                        attempt: task.attempt,
                        term: task.term,
                    };
                    let why = match expected_step {
                        Some(s) => format!(
                            "no progress for {:.1} s on worker {worker_id}; at its speed a step takes {:.2} s (limit {:.1} s)",
                            stalled.as_secs_f64(),
                            s.as_secs_f64(),
                            limit.as_secs_f64()
                        ),
                        None => format!(
                            "no progress for {:.1} s on worker {worker_id} since it started (limit {:.1} s)",
                            stalled.as_secs_f64(),
                            limit.as_secs_f64()
                        ),
                    };
                    stuck.push((worker_id.clone(), *index, token, why));
                }
            }
        }
        let mut commits = Vec::new();
        for (worker_id, index, token, why) in stuck {
            tracing::warn!(worker_id = %worker_id, job_id = %token.job_id, task_id = %token.task_id,
                attempt = token.attempt, reason = %why, "task stuck; reassigning");
            if let Some(w) = self.workers.get(&worker_id) {
                let _ = w.tx.send(ToWorker::Cancel(token.clone()));
            }
            self.release_slot(&worker_id, &token.job_id, index, false);
            if let Some(c) = self.requeue(&token.job_id, index, "stuck", &why) {
                commits.push(c);
            }
        }
        commits
    }

    /// Why an unfinished job is not moving, when it is for want of workers.
    pub(super) fn waiting_reason(&self, job: &JobEntry) -> Option<String> {
        if job.record.state.is_terminal() || job.pending.is_some() {
            return None;
        }
        if let Some(leader) = &job.following {
            return Some(format!(
                "merged with job {leader}, which renders the same spec; this job gets its outputs when it succeeds"
            ));
        }
        let ready = job
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Ready)
            .count();
        let running = job
            .tasks
            .iter()
            .filter(|t| matches!(t.state, TaskState::Assigned | TaskState::Running))
            .count();
        // A model job's own reasons hold while its other tasks run: they say why the model
        // tasks do not start.
        let unserved_model = job.record.spec.model.as_ref().filter(|m| {
            job.record
                .tasks
                .iter()
                .zip(&job.tasks)
                .any(|(d, t)| d.kind.needs_model() && t.state == TaskState::Ready)
                && !self.model_served(&m.name)
        });
        let shared_with = job.text_key.as_ref().and_then(|key| {
            self.text
                .waiting_on(key, &job.record.id)
                .map(str::to_string)
        });
        if let Some(m) = unserved_model.filter(|_| !self.workers.is_empty()) {
            if let Some((need, largest)) = self.too_large_everywhere(&m.name) {
                let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
                return Some(format!(
                    "model {:?} needs about {:.1} GiB of GPU memory (its weights and a fifth more); the live workers that have it hold at most {:.1} GiB: its tasks wait for a larger GPU",
                    m.name,
                    gib(need),
                    gib(largest)
                ));
            }
            return Some(format!(
                "no live worker serves model {:?}: its tasks wait for a worker with it in --models",
                m.name
            ));
        }
        if let Some(owner) = shared_with {
            return Some(format!(
                "its text encoding is shared with job {owner}, which runs it first (same model, prompt and negative prompt)"
            ));
        }
        if ready == 0 || running > 0 {
            return None;
        }
        let mut taking = self
            .workers
            .iter()
            .filter(|(_, w)| !w.draining)
            .map(|(id, _)| id)
            .peekable();
        if taking.peek().is_some() && taking.all(|id| job.excluded.contains(id)) {
            return Some(format!(
                "every connected worker that takes tasks failed this job's tasks {} times and is excluded from it: {ready} ready task(s) wait for another worker",
                self.config.exclude_worker_after
            ));
        }
        if self.workers.is_empty() {
            Some(format!(
                "no live worker is connected: {ready} ready task(s) wait for a worker to register"
            ))
        } else if self.workers.values().all(|w| w.draining) {
            Some(format!(
                "every connected worker is draining: {ready} ready task(s) wait for a worker that takes tasks"
            ))
        } else if self.dispatch_hold.is_some() {
            Some("waiting for workers to reconnect after a coordinator failover".to_string())
        } else {
            None
        }
    }
}
