//! Reports from a worker's stream: step progress, attempts handed back on shutdown, and
//! results, each checked against the task's current attempt token (fencing) by the farm.

use super::{AttemptResult, Rejection, Scheduler};
use crate::model::AttemptToken;

impl Scheduler {
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

    /// A worker gives an unfinished attempt back (shutting down, or preempted): READY at
    /// once.
    pub(crate) fn hand_back(
        &self,
        worker_id: &str,
        token: &AttemptToken,
        reason: &str,
        preempted: bool,
    ) -> Result<(), Rejection> {
        let mut farm = self.lock();
        farm.hand_back(worker_id, token, reason, preempted)?;
        farm.dispatch();
        Ok(())
    }

    /// A running attempt's checkpoint: kept for the task's next attempt at once, and made
    /// durable before this returns (a failover resumes from it too).
    pub(crate) async fn checkpoint(
        &self,
        worker_id: &str,
        token: &AttemptToken,
        step: u32,
        output: crate::model::Output,
    ) -> Result<(), Rejection> {
        let write = self.lock().checkpoint(worker_id, token, step, output)?;
        if let Some(write) = write {
            if let Err(e) = self.store.commit(self.term(), vec![write]).await {
                // Kept in memory: this leader still resumes from it; a new one would use
                // the previous stored checkpoint.
                self.store_error(e);
            }
        }
        Ok(())
    }

    /// A worker's result: committed (success) or retried (failure). Rejected when the token
    /// is not the task's current one.
    pub(crate) async fn result(
        &self,
        worker_id: &str,
        token: &AttemptToken,
        result: AttemptResult,
    ) -> Result<(), Rejection> {
        let (ok, error, class, code) = (
            result.ok,
            result.error.clone(),
            result.failure.class(),
            result.failure.code.clone(),
        );
        let (commit, unhealthy) = {
            let mut farm = self.lock();
            let c = farm.begin_result(worker_id, token, result)?;
            farm.dispatch();
            (c, farm.take_unhealthy())
        };
        // A worker that keeps failing is cordoned like an operator's drain (durable), so it
        // stays out of work across reconnects and failovers until an operator lifts it.
        for (id, reason) in unhealthy {
            tracing::warn!(worker_id = %id, %reason, "worker marked unhealthy: cordoned");
            if let Err(e) = self.cordon_worker(&id, true).await {
                tracing::warn!(worker_id = %id, error = %e, "could not cordon the unhealthy worker");
            }
        }
        if !ok {
            tracing::warn!(job_id = %token.job_id, task_id = %token.task_id, attempt = token.attempt,
                worker_id, error, class, code = %code, "task attempt failed");
        }
        if let Some(commit) = commit {
            let _ = self.run_commit(commit).await;
        }
        Ok(())
    }
}
