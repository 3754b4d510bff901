//! Preemption at step granularity (`--preemption low-for-high`): when HIGH work is queued
//! and no worker that could run it has a free slot, one running LOW DENOISE task on such a
//! worker is asked to checkpoint at its next step and hand itself back
//! (`ToWorker::Preempt`). Its slot then goes to the HIGH work (dispatch serves the highest
//! priority first); the LOW task is READY again and resumes from that checkpoint
//! (see `checkpoints`), losing no step. A hand-back for preemption is not a failure.
//!
//! Bounds: one preemption in flight per queue of HIGH work; a task is preempted at most
//! once per `preemption_interval`, so LOW work keeps moving under a stream of HIGH jobs;
//! only DENOISE tasks of model jobs are preempted (they are the long ones and the ones
//! with checkpoints: the reference pipeline's segments are short and restart cheaply),
//! and never one running in a batch (its batch-mates would hold the slot on).
//! The scan runs at the end of a dispatch, at most every [`SCAN_INTERVAL`] (the watchdog
//! dispatches every tick, so it also runs while nothing else happens).

use std::time::{Duration, Instant};

use super::*;
use crate::model::Priority;

/// Least time between two scans for a task to preempt.
const SCAN_INTERVAL: Duration = Duration::from_millis(200);

impl Farm {
    /// See the module docs.
    pub(super) fn preempt_for_high(&mut self) {
        if !self.config.preemption || self.ready.is_empty() {
            return;
        }
        let now = Instant::now();
        if self
            .preempt_scanned
            .is_some_and(|t| now.duration_since(t) < SCAN_INTERVAL)
        {
            return;
        }
        self.preempt_scanned = Some(now);
        // Answered (handed back, finished or lost) since: no longer in flight.
        let jobs = &self.jobs;
        self.preempting.retain(|(job_id, index), _| {
            jobs.get(job_id).is_some_and(|j| {
                let t = &j.tasks[*index as usize];
                t.preempting && matches!(t.state, TaskState::Assigned | TaskState::Running)
            })
        });
        let waiting: Vec<Option<String>> = self
            .ready
            .high_waiting()
            .into_iter()
            .map(|m| m.map(str::to_string))
            .collect();
        for queue in waiting {
            if self.preempting.values().any(|q| *q == queue) || self.free_slot_for(queue.as_deref())
            {
                continue;
            }
            if let Some((worker_id, job_id, index)) = self.preemption_victim(queue.as_deref(), now)
            {
                let job = self.jobs.get_mut(&job_id).expect("found above");
                let task = &mut job.tasks[index as usize];
                task.preempting = true;
                task.preempted_at = Some(now);
                let token = AttemptToken {
                    job_id: job_id.clone(),
                    task_id: job.record.tasks[index as usize].id.clone(),
                    attempt: task.attempt,
                    term: task.term,
                };
                tracing::info!(%worker_id, job_id = %job_id, task_id = %token.task_id,
                    step = task.step, "preempting a LOW denoise for HIGH work");
                if let Some(w) = self.workers.get(&worker_id) {
                    let _ = w.tx.send(ToWorker::Preempt(token));
                }
                self.metrics.preemptions_requested.inc();
                self.preempting.insert((job_id, index), queue);
            }
        }
    }

    /// Whether a connected worker that takes work and could run the queue's tasks has a
    /// free slot (then the HIGH work only waits for dispatch, or for warm placement).
    fn free_slot_for(&self, model: Option<&str>) -> bool {
        self.idle.iter().any(|id| {
            self.workers.get(id).is_some_and(|w| {
                w.free > 0 && !w.draining && model.is_none_or(|m| w.serves.iter().any(|s| s == m))
            })
        })
    }

    /// The running LOW DENOISE attempt to preempt for a queue's HIGH work: on a worker that
    /// can run that work, not preempted within the interval, the least far along (it has
    /// the most left to run, so moving it aside defers the most).
    fn preemption_victim(&self, model: Option<&str>, now: Instant) -> Option<(String, JobId, u32)> {
        let interval = self.config.preemption_interval;
        let mut best: Option<(f64, String, JobId, u32)> = None;
        for (worker_id, w) in &self.workers {
            if w.draining || model.is_some_and(|m| !w.serves.iter().any(|s| s == m)) {
                continue;
            }
            for (job_id, index) in &w.running {
                let Some(job) = self.jobs.get(job_id) else {
                    continue;
                };
                let task = &job.tasks[*index as usize];
                let eligible = job.record.spec.priority == Priority::Low
                    && !w.batches.is_batched(&(job_id.clone(), *index))
                    && job.record.tasks[*index as usize].kind == TaskKind::Denoise
                    && task.state == TaskState::Running
                    && !task.preempting
                    && !task.committing
                    && job.pending.is_none()
                    && task
                        .preempted_at
                        .is_none_or(|t| now.duration_since(t) >= interval);
                if eligible && best.as_ref().is_none_or(|b| task.progress < b.0) {
                    best = Some((task.progress, worker_id.clone(), job_id.clone(), *index));
                }
            }
        }
        best.map(|(_, w, j, i)| (w, j, i))
    }
}
