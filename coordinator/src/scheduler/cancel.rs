//! Cancelling a job: durable first (the farm's `begin_cancel`, the store, then
//! `finish_commit`), then its running attempts are stopped on their workers.

use super::{CancelError, CancelRefusal, JobView, Scheduler};

impl Scheduler {
    /// Cancels a job: durable first, then its running tasks are stopped on their workers.
    /// Cancelling a job already terminal returns it unchanged.
    pub(crate) async fn cancel_job(&self, id: &str) -> Result<JobView, CancelError> {
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
}
