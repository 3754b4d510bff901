//! Durable writes: a farm [`Commit`] goes to the store with no lock held, then its
//! `finish_*` half is applied (or undone, if the write failed). A write refused because a
//! newer term started (fencing) stops this coordinator.

use std::time::Instant;

use super::{Commit, Scheduler};
use crate::state::StoreError;

impl Scheduler {
    pub(super) async fn run_commits(&self, commits: Vec<Commit>) {
        for c in commits {
            let _ = self.run_commit(c).await;
        }
    }

    /// Makes `commit` durable and applies it; then the commits its transition left for the
    /// scheduler (followers of a job that succeeded, see the farm's `merges`), in turn.
    /// Returns the first commit's outcome.
    pub(super) async fn run_commit(&self, commit: Commit) -> Result<(), StoreError> {
        let mut queue = std::collections::VecDeque::from([commit]);
        let mut first = None;
        while let Some(commit) = queue.pop_front() {
            let term = self.term();
            let started = Instant::now();
            let result = self.store.commit(term, commit.writes).await;
            self.metrics
                .store_commit_seconds
                .with_label_values(&["commit"])
                .observe(started.elapsed().as_secs_f64());
            let result = result.map_err(|e| self.store_error(e));
            {
                let mut farm = self.lock();
                farm.finish_commit(
                    commit.after,
                    result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                );
                farm.dispatch();
                queue.extend(farm.take_deferred_commits());
            }
            first.get_or_insert(result);
        }
        first.expect("one commit at least")
    }

    /// Notes a fenced write: a newer coordinator owns the state, so this one stops.
    pub(super) fn store_error(&self, e: StoreError) -> StoreError {
        match &e {
            StoreError::Fenced { ours } => {
                if !self.fenced.is_cancelled() {
                    tracing::error!(term = ours, "fenced by a newer coordinator term; stopping");
                    self.metrics.leader.set(0);
                    self.fenced.cancel();
                }
            }
            other => tracing::warn!(error = %other, "state write failed"),
        }
        e
    }
}
