//! Gauges and counts derived from the registry and the ready queue: the worker and slot
//! gauges (refreshed on changes of the registry, by dispatch at most every
//! `GAUGE_REFRESH`, and by the watchdog), and the counts of the cluster status.

use super::*;

/// How stale the worker-slot gauges may get between dispatches (scrapes are far apart).
pub(super) const GAUGE_REFRESH: Duration = Duration::from_millis(200);

impl Farm {
    /// Counts for the cluster status: (workers, ready tasks, running tasks).
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let running = self.workers.values().map(|w| w.running.len()).sum();
        let ready = Priority3::sum(&self.metrics);
        (self.workers.len(), ready, running)
    }

    /// The watchdog's refresh of the worker-slot gauges.
    pub(crate) fn refresh_gauges(&mut self) {
        self.update_worker_gauges();
        self.prune_batch_groups();
    }

    /// Sets the worker and slot gauges from the registry (a walk over every worker).
    pub(super) fn update_worker_gauges(&mut self) {
        self.gauges_refreshed = Instant::now();
        let draining = self.workers.values().filter(|w| w.draining).count();
        self.metrics
            .workers
            .with_label_values(&["active"])
            .set((self.workers.len() - draining) as i64);
        self.metrics
            .workers
            .with_label_values(&["draining"])
            .set(draining as i64);
        let slots: u32 = self.workers.values().map(|w| w.info.slots).sum();
        let free: u32 = self
            .workers
            .values()
            .filter(|w| !w.draining)
            .map(|w| w.free)
            .sum();
        self.metrics
            .slots
            .with_label_values(&["total"])
            .set(i64::from(slots));
        self.metrics
            .slots
            .with_label_values(&["free"])
            .set(i64::from(free));
    }
}

/// Sum of the ready-queue gauges.
struct Priority3;

impl Priority3 {
    fn sum(metrics: &Metrics) -> usize {
        crate::model::Priority::ALL
            .iter()
            .map(|p| metrics.queue_depth(*p).get().max(0) as usize)
            .sum()
    }
}
