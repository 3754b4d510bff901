//! The watchdog's tick, run by the leader every `WATCHDOG_TICK` (see `server`): stuck
//! attempts are reassigned, dispatch runs (ending an expired dispatch hold), the gauges
//! are refreshed, and finished jobs beyond retention are forgotten in the store.

use std::time::Instant;

use super::Scheduler;

/// Finished jobs deleted per store transaction (3 operations each; etcd allows 128).
const FORGET_PER_COMMIT: usize = 30;
/// Running attempts the watchdog checks per hold of the farm lock (see `Scheduler::tick`).
const STUCK_SCAN_SLICE: usize = 256;

impl Scheduler {
    /// The watchdog's tick: reassigns stuck attempts and dispatches (which also ends an
    /// expired dispatch hold).
    pub(crate) async fn tick(&self) {
        let now = Instant::now();
        // In slices, so results and dispatch never wait long behind the scan (about 1 ms per
        // thousand running attempts, every tick).
        let slices = self.lock().stuck_scan_slices(STUCK_SCAN_SLICE);
        let mut commits = Vec::new();
        for slice in slices {
            commits.extend(self.lock().reassign_stuck_among(&slice, now));
        }
        let forget = {
            let mut farm = self.lock();
            farm.dispatch();
            farm.refresh_gauges();
            farm.evict_finished(usize::MAX)
        };
        self.run_commits(commits).await;
        let term = self.term();
        for chunk in forget.chunks(FORGET_PER_COMMIT) {
            if let Err(e) = self.store.commit(term, chunk.to_vec()).await {
                // Forgotten in memory already; the next leader loads and forgets them again.
                tracing::warn!(jobs = chunk.len(), error = %e, "deleting finished jobs from the store failed");
            }
        }
    }
}
