//! [`Election`] for a single replica without etcd (the embedded demo, `--etcd` unset):
//! it is always the leader, and campaigning only announces it.

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Election, ElectionError, LeaderChange};

/// The only replica: always the leader.
pub(crate) struct SoloElection {
    address: String,
    changes: broadcast::Sender<LeaderChange>,
}

impl SoloElection {
    /// The only replica, reachable at `address`.
    pub(crate) fn new(address: String) -> Self {
        Self {
            address,
            changes: broadcast::channel(4).0,
        }
    }
}

#[async_trait]
impl Election for SoloElection {
    fn is_leader(&self) -> bool {
        true
    }
    async fn campaign(&self) -> Result<(), ElectionError> {
        let _ = self.changes.send(LeaderChange::Elected);
        Ok(())
    }
    async fn leader(&self) -> Result<Option<String>, ElectionError> {
        Ok(Some(self.address.clone()))
    }
    async fn resign(&self) -> Result<(), ElectionError> {
        Ok(())
    }
    fn subscribe_leader_change(&self) -> broadcast::Receiver<LeaderChange> {
        self.changes.subscribe()
    }
}
