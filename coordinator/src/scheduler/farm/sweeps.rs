//! The farm's half of the artifact collector (see [`crate::scheduler::collector`]): which
//! finished jobs are due for a sweep of their uncommitted attempts' files, and which files
//! each sweep must keep.
//!
//! A job is due `artifact_gc_grace` after it finished, so attempts still winding down on
//! their workers (cancelled, or reassigned while their worker was unreachable) are done
//! writing. The sweep is recorded in the job record (`artifacts_swept`), so a new leader
//! does not list every finished job's files again.

use std::collections::HashSet;

use super::*;

/// One job to sweep: every object under `jobs/<job_id>/` not in `keep` is deleted.
#[derive(Debug)]
pub struct Sweep {
    pub job_id: JobId,
    /// URIs of the job's committed outputs and every committed task output.
    pub keep: HashSet<String>,
}

impl Farm {
    /// Queues the sweep of a job that finished at `finished_ms` (nothing with the collector
    /// off). The queue is in finishing order, like retention's, so beyond `retain_finished`
    /// entries the oldest job will have been forgotten before its sweep is due: its entry is
    /// dropped, which bounds the queue under sustained load.
    pub(super) fn queue_sweep(&mut self, job_id: &str, finished_ms: u64) {
        let Some(grace) = self.config.artifact_gc_grace else {
            return;
        };
        self.to_sweep.push_back((
            job_id.to_string(),
            finished_ms.saturating_add(grace.as_millis() as u64),
        ));
        while self.to_sweep.len() > self.config.retain_finished.max(1) {
            self.to_sweep.pop_front();
        }
    }

    /// Up to `max` jobs whose sweep is due at `now_ms`, with what each must keep.
    pub fn due_sweeps(&mut self, now_ms: u64, max: usize) -> Vec<Sweep> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.to_sweep.front() {
                Some((_, due_ms)) if *due_ms <= now_ms => {}
                _ => break,
            }
            let (job_id, _) = self.to_sweep.pop_front().expect("checked above");
            // Forgotten by retention meanwhile, or swept already: nothing to do.
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            if !job.record.state.is_terminal() || job.record.artifacts_swept {
                continue;
            }
            let keep = job
                .record
                .outputs
                .iter()
                .chain(job.tasks.iter().flat_map(|t| t.outputs.iter()))
                .map(|o| o.uri.clone())
                .collect();
            due.push(Sweep { job_id, keep });
        }
        due
    }

    /// The sweep of `job_id` is done: marks the job and returns the record to store.
    pub fn finish_sweep(&mut self, job_id: &str) -> Option<Write> {
        let job = self.jobs.get_mut(job_id)?;
        job.record.artifacts_swept = true;
        Some(Write::Job(Box::new(job.record.clone())))
    }

    /// A sweep could not run (the store failed): due again at `due_ms`.
    pub fn retry_sweep(&mut self, job_id: &str, due_ms: u64) {
        self.to_sweep.push_back((job_id.to_string(), due_ms));
    }
}
