//! Recovery: a coordinator that wins the election starts a new term on the store (which
//! fences off every earlier leader's writes) and rebuilds the farm from the store's
//! snapshot: unfinished jobs continue where their committed results leave them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::admission::{FinishRate, Reserved};
use super::{Farm, Scheduler, SchedulerConfig};
use crate::metrics::Metrics;
use crate::state::{StateStore, StoreError};

impl Scheduler {
    /// Starts a new term on `store` and rebuilds the working state from it: unfinished jobs
    /// continue where their committed results leave them.
    pub(crate) async fn recover(
        store: Arc<dyn StateStore>,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, StoreError> {
        let term = store.begin_term().await?;
        let snapshot = store.load().await?;
        let mut farm = Farm::new(term, config.farm, metrics.clone());
        let mut by_job: HashMap<&str, Vec<_>> = Default::default();
        for c in &snapshot.completions {
            by_job.entry(c.job_id.as_str()).or_default().push(c.clone());
        }
        let (mut jobs, mut unfinished) = (0, 0);
        for job in &snapshot.jobs {
            jobs += 1;
            if !job.state.is_terminal() {
                unfinished += 1;
            }
            let done = by_job.remove(job.id.as_str()).unwrap_or_default();
            farm.insert_job(job.clone(), &done);
        }
        farm.restore_checkpoints(&snapshot.checkpoints);
        farm.restore_cordons(snapshot.cordoned.iter().cloned());
        farm.rebuild_fair_share();
        metrics.leader.set(1);
        tracing::info!(
            term,
            jobs,
            unfinished,
            backend = store.backend(),
            "state recovered"
        );
        Ok(Arc::new(Self {
            farm: parking_lot::Mutex::new(farm),
            store,
            metrics,
            planner: config.planner,
            result_cache: config.result_cache,
            reserved: Mutex::new(Reserved::default()),
            fenced: CancellationToken::new(),
            finish_rate: FinishRate::new(),
            cordons: tokio::sync::Mutex::new(()),
        }))
    }
}
