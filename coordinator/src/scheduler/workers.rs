//! Worker sessions and operator drains, the scheduler's half of the farm's worker
//! registry: a stream that registers or goes away moves tasks (adopted, requeued, failed
//! jobs to persist), and a drain is made durable before it takes effect.

use tokio::sync::mpsc;

use super::{CordonError, Scheduler, ToWorker, WorkerInfo, WorkerView};

impl Scheduler {
    /// Registers a worker stream; tasks flow to it through `tx`. Returns the session number
    /// to pass to [`Scheduler::worker_gone`].
    pub(crate) async fn register_worker(
        &self,
        info: WorkerInfo,
        tx: mpsc::UnboundedSender<ToWorker>,
    ) -> u64 {
        let id = info.id.clone();
        let (session, commits) = {
            let mut farm = self.lock();
            let r = farm.register_worker(info, tx);
            farm.dispatch();
            r
        };
        tracing::info!(worker_id = %id, session, "worker registered");
        self.run_commits(commits).await;
        session
    }

    /// The models connected workers serve: name → family.
    pub(crate) fn model_families(&self) -> std::collections::HashMap<String, String> {
        self.lock().model_families()
    }

    /// A worker is gone (stream closed, lease expired or key deleted): its unfinished tasks
    /// go back to READY. With `session`, only if that session is still current.
    pub(crate) async fn worker_gone(&self, id: &str, session: Option<u64>, reason: &str) {
        let commits = {
            let mut farm = self.lock();
            let known = farm.worker_view(id).is_some();
            let c = farm.remove_worker(id, session, reason);
            farm.dispatch();
            if !known {
                return;
            }
            c
        };
        tracing::info!(worker_id = %id, reason, "worker removed");
        self.run_commits(commits).await;
    }

    /// An operator drains a connected worker (`cordoned`: it finishes its running tasks and
    /// takes no new ones) or lifts a drain. The mark is durable before it takes effect, so
    /// it holds across the worker's reconnects and coordinator failovers. Returns the worker
    /// when it is connected.
    pub(crate) async fn cordon_worker(
        &self,
        id: &str,
        cordoned: bool,
    ) -> Result<Option<WorkerView>, CordonError> {
        let _serial = self.cordons.lock().await;
        {
            let farm = self.lock();
            let connected = farm.worker_view(id);
            if cordoned && connected.is_none() {
                return Err(CordonError::NotConnected(id.into()));
            }
            if !cordoned && connected.is_none() && !farm.is_cordoned(id) {
                return Err(CordonError::Unknown(id.into()));
            }
            if farm.is_cordoned(id) == cordoned {
                return Ok(connected);
            }
        }
        let write = crate::state::Write::Cordon {
            worker_id: id.to_string(),
            cordoned,
        };
        self.store
            .commit(self.term(), vec![write])
            .await
            .map_err(|e| self.store_error(e))?;
        let mut farm = self.lock();
        let view = farm.set_cordon(id, cordoned);
        farm.dispatch();
        Ok(view)
    }
}
