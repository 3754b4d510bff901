//! Admission: whether a submission fits under the active-job limits (in all and per
//! tenant), counting the submissions admitted but not yet inserted, and when to retry
//! one that does not (from the recent rate at which jobs finish).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Scheduler, SubmitError};
use crate::metrics::Metrics;

/// Submissions admitted but not yet inserted: in all and per tenant.
#[derive(Default)]
pub(super) struct Reserved {
    total: usize,
    by_tenant: HashMap<String, usize>,
}

/// The recent rate at which jobs finish, for the retry hint of a refused submission.
pub(super) struct FinishRate(Mutex<FinishSample>);

struct FinishSample {
    at: Instant,
    finished: f64,
    per_second: f64,
}

impl FinishRate {
    /// Shortest and longest hint; the rate is re-measured over windows of at least 1 s.
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    pub(super) fn new() -> Self {
        Self(Mutex::new(FinishSample {
            at: Instant::now(),
            finished: 0.0,
            per_second: 0.0,
        }))
    }

    /// How long until `excess` jobs have finished at the recent rate.
    fn retry_after(&self, excess: usize, metrics: &Metrics) -> Duration {
        let finished: f64 = ["succeeded", "failed", "cancelled"]
            .iter()
            .map(|s| metrics.jobs_finished.with_label_values(&[s]).get() as f64)
            .sum();
        let mut sample = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = sample.at.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            sample.per_second = (finished - sample.finished) / elapsed;
            sample.at = Instant::now();
            sample.finished = finished;
        }
        if sample.per_second <= 0.0 {
            return Duration::from_secs(5);
        }
        Duration::from_secs_f64(excess as f64 / sample.per_second).clamp(Self::MIN, Self::MAX)
    }
}

impl Scheduler {
    /// Reserves room for `new` jobs (`new_by_tenant` of them per tenant) under the
    /// active-job limits, or refuses them all with a retry hint. The caller gives the room
    /// back with [`Scheduler::release`] once the jobs are inserted (or failed).
    pub(super) fn admit(
        &self,
        new: usize,
        new_by_tenant: &HashMap<String, usize>,
    ) -> Result<(), SubmitError> {
        let farm = self.lock();
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let limit = farm.config().max_active_jobs;
        let active = farm.active_jobs() + reserved.total;
        if active + new > limit {
            return Err(SubmitError::Exhausted {
                active,
                requested: new,
                limit,
                retry_after: self
                    .finish_rate
                    .retry_after(active + new - limit, &self.metrics),
            });
        }
        if let Some(limit) = farm.config().max_active_jobs_per_tenant {
            for (tenant, &requested) in new_by_tenant {
                let active = farm.active_jobs_of(tenant)
                    + reserved.by_tenant.get(tenant).copied().unwrap_or(0);
                if active + requested > limit {
                    return Err(SubmitError::TenantExhausted {
                        tenant: tenant.clone(),
                        active,
                        requested,
                        limit,
                        retry_after: self
                            .finish_rate
                            .retry_after(active + requested - limit, &self.metrics),
                    });
                }
            }
        }
        reserved.total += new;
        for (tenant, n) in new_by_tenant {
            *reserved.by_tenant.entry(tenant.clone()).or_default() += n;
        }
        Ok(())
    }

    /// Gives back the room [`Scheduler::admit`] reserved.
    pub(super) fn release(&self, new: usize, new_by_tenant: &HashMap<String, usize>) {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        reserved.total -= new;
        for (tenant, n) in new_by_tenant {
            if let Some(r) = reserved.by_tenant.get_mut(tenant) {
                *r -= n;
                if *r == 0 {
                    reserved.by_tenant.remove(tenant);
                }
            }
        }
    }
}
