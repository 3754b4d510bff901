//! Workers that keep failing: the per-job bad-worker list and the farm-wide unhealthy mark.
//!
//! Only failures a worker reports of its own attempts are charged (TaskResult !ok with a
//! transient class, or a result the coordinator refused because its outputs are not in the
//! shared store). A lost stream, an expired lease, a stuck or handed-back attempt and a
//! permanent error (the job's fault: a model that cannot load, a spec refused) are not.
//!
//! - A worker whose attempts of one job failed `exclude_worker_after` times gets no more of
//!   that job's tasks (Deadline's bad-worker list). The list lives with the job in memory:
//!   a coordinator failover forgets it.
//! - A worker with `unhealthy_after` charged failures within `unhealthy_window`, across
//!   jobs, is cordoned (the operator's durable drain, `Write::Cordon`) with the reason shown
//!   in `WorkerInfo.health`; it gets no work until an operator lifts the cordon
//!   (`reelfarm uncordon`, AdminService/UncordonWorker), Horde's maintenance mode.

use super::*;

/// The farm's record of charged failures per worker id (kept across the worker's
/// reconnects), and the unhealthy marks still to make durable.
#[derive(Default)]
pub(super) struct WorkerHealth {
    recent: HashMap<String, VecDeque<Instant>>,
    /// Why each worker was marked unhealthy (until its cordon is lifted).
    reasons: HashMap<String, String>,
    /// Newly unhealthy workers for the scheduler to cordon (see [`Farm::take_unhealthy`]).
    to_cordon: Vec<(String, String)>,
}

impl Farm {
    /// Charges a failed attempt of `job_id` to `worker_id`: excludes the worker from the job
    /// at the job's limit, and marks it unhealthy at the farm's.
    pub(super) fn charge_failure(&mut self, worker_id: &str, job_id: &str) {
        let limit = self.config.exclude_worker_after;
        if let Some(job) = self.jobs.get_mut(job_id) {
            let n = job.failed_by.entry(worker_id.to_string()).or_insert(0);
            *n += 1;
            if limit > 0 && *n >= limit && job.excluded.insert(worker_id.to_string()) {
                tracing::warn!(
                    worker_id,
                    job_id,
                    failures = *n,
                    "worker excluded from the job after failing its tasks"
                );
                self.metrics.workers_excluded.inc();
            }
        }
        let (after, window) = (self.config.unhealthy_after, self.config.unhealthy_window);
        if after == 0 || self.health.reasons.contains_key(worker_id) {
            return;
        }
        let now = Instant::now();
        let recent = self.health.recent.entry(worker_id.to_string()).or_default();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            recent.pop_front();
        }
        if recent.len() as u32 >= after {
            let reason = format!(
                "unhealthy: {} failed attempts within {} s (--unhealthy-after {after}); lift with `reelfarm uncordon {worker_id}`",
                recent.len(),
                window.as_secs()
            );
            recent.clear();
            self.health
                .reasons
                .insert(worker_id.to_string(), reason.clone());
            self.health.to_cordon.push((worker_id.to_string(), reason));
            self.metrics.workers_marked_unhealthy.inc();
        }
    }

    /// Workers marked unhealthy since the last call, with why: the scheduler cordons them.
    pub(crate) fn take_unhealthy(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.health.to_cordon)
    }

    /// Why `worker_id` was marked unhealthy, while it is.
    pub(crate) fn health_reason(&self, worker_id: &str) -> Option<&str> {
        self.health.reasons.get(worker_id).map(String::as_str)
    }

    /// An operator lifted the worker's cordon: its failure record starts afresh.
    pub(super) fn clear_health(&mut self, worker_id: &str) {
        self.health.reasons.remove(worker_id);
        self.health.recent.remove(worker_id);
    }
}
