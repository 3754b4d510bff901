//! Checkpoints of denoising tasks. A model job's DENOISE attempt saves its latents and
//! sampler history every few steps (the worker's `--checkpoint-every-steps` and
//! `--checkpoint-every-seconds`, and before a preempted attempt is handed back) and reports
//! each file; the farm keeps the latest per task, in memory at once (so a hand-back that
//! follows on the same stream already resumes from it) and durably through the returned
//! write (so a new leader does too). Every later attempt of the task, whatever ended the
//! one before (an error, a lost worker, a hand-back on drain, a preemption, a failover),
//! is assigned with that checkpoint and starts after its step instead of at step 0.
//!
//! Any attempt's checkpoint serves the task: the computation is deterministic in the
//! spec, so a checkpoint from attempt 2 resumes attempt 3 as well as its own would.

use super::*;
use crate::model::TaskCheckpoint;

impl Farm {
    /// A running attempt saved a checkpoint after `step` steps: kept when it is later than
    /// the task's current one, returning the write that makes it durable.
    pub(crate) fn checkpoint(
        &mut self,
        worker_id: &str,
        token: &AttemptToken,
        step: u32,
        output: Output,
    ) -> Result<Option<Write>, Rejection> {
        let (index, _) = self.check_token(worker_id, token).inspect_err(|_| {
            self.metrics.stale_reports.inc();
        })?;
        let job = self.jobs.get_mut(&token.job_id).expect("checked");
        if job.record.tasks[index].kind != TaskKind::Denoise {
            return Err(Rejection::Checkpoint(format!(
                "a {} task has no checkpoints",
                job.record.tasks[index].kind.as_str()
            )));
        }
        if step == 0 || step >= job.spec.steps {
            return Err(Rejection::Checkpoint(format!(
                "step {step} is not within 1..{} steps",
                job.spec.steps
            )));
        }
        let task = &mut job.tasks[index];
        if task.checkpoint.as_ref().is_some_and(|c| c.step >= step) {
            return Ok(None);
        }
        task.checkpoint = Some(ResumeFrom {
            step,
            output: output.clone(),
        });
        job.touch();
        self.metrics.checkpoints.inc();
        Ok(Some(Write::Checkpoint(TaskCheckpoint {
            job_id: token.job_id.clone(),
            task_index: index as u32,
            step,
            output,
            attempt: token.attempt,
            term: token.term,
            worker_id: worker_id.to_string(),
            written_ms: now_ms(),
        })))
    }

    /// After a failover: each unfinished DENOISE task resumes from its stored checkpoint.
    pub(crate) fn restore_checkpoints(&mut self, checkpoints: &[TaskCheckpoint]) {
        for c in checkpoints {
            let Some(job) = self.jobs.get_mut(&c.job_id) else {
                continue;
            };
            let index = c.task_index as usize;
            let denoise = job
                .record
                .tasks
                .get(index)
                .is_some_and(|d| d.kind == TaskKind::Denoise);
            let Some(task) = job.tasks.get_mut(index) else {
                continue;
            };
            if denoise && task.state != TaskState::Done && c.step < job.spec.steps {
                task.checkpoint = Some(ResumeFrom {
                    step: c.step,
                    output: c.output.clone(),
                });
            }
        }
    }
}
