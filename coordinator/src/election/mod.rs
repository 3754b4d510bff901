//! Leader election among coordinator replicas.
//!
//! Several `reelfarm-coordinator` replicas run on one etcd; exactly one leads. The leader
//! owns all job and task state; the others answer every request with UNAVAILABLE and the
//! leader's address so clients and workers follow it.
//!
//! [`Election`] has five verbs (as in GreptimeDB's meta-srv): [`Election::is_leader`],
//! [`Election::campaign`], [`Election::leader`], [`Election::resign`] and
//! [`Election::subscribe_leader_change`]; role changes are broadcast as [`LeaderChange`].
//! Two implementations, one file each:
//!
//! - `etcd`: [`EtcdElection`], etcd's election API under `/reelfarm/<cluster>/election`,
//!   holding a lease of [`ELECTION_TTL_SECONDS`]: if the leader dies or hangs, its lease
//!   expires and the next campaigner wins within that TTL.
//! - `single_node`: [`SoloElection`], the single-replica case (no etcd): always the leader.
//!
//! Leadership alone does not protect state: a leader that was paused may still believe it
//! leads. Every state write is therefore conditioned on the term that the leader started
//! after winning (see `state`), so a deposed leader's writes fail and it steps down.

mod etcd;
mod single_node;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub(crate) use etcd::EtcdElection;
pub(crate) use single_node::SoloElection;

/// A change of this replica's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LeaderChange {
    /// This replica won the election.
    Elected,
    /// This replica is no longer the leader (lease lost, resigned), with the reason.
    SteppedDown(String),
}

/// Why an election call failed; the caller retries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ElectionError {
    #[error("election backend: {0}")]
    Backend(String),
}

/// Leader election among the replicas: the five verbs of the module docs, each method's
/// contract on it.
#[async_trait]
pub(crate) trait Election: Send + Sync + 'static {
    /// True while this replica holds leadership.
    fn is_leader(&self) -> bool;
    /// Waits until this replica is the leader. Returns early with an error if the backend
    /// fails; the caller retries.
    async fn campaign(&self) -> Result<(), ElectionError>;
    /// The current leader's advertised address, if there is a leader.
    async fn leader(&self) -> Result<Option<String>, ElectionError>;
    /// Gives leadership up so another replica takes over at once (graceful shutdown).
    async fn resign(&self) -> Result<(), ElectionError>;
    /// Role changes of this replica.
    fn subscribe_leader_change(&self) -> broadcast::Receiver<LeaderChange>;
}
