//! This replica's role, as the API sees it: the leader, with its scheduler, or a follower
//! that knows (or not yet) where the leader is.
//!
//! Followers answer every job, worker and admin request (but `GetClusterStatus`) with
//! UNAVAILABLE, a message naming the leader, and the leader's address in the
//! [`LEADER_METADATA`] response header, so the CLI and workers can go there directly.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;

use crate::scheduler::Scheduler;

pub use reelfarm_proto::cluster::LEADER_METADATA;

/// See the module docs.
#[derive(Clone)]
pub enum Role {
    Follower { leader: Option<String> },
    Leader(Arc<Scheduler>),
}

/// A cheap, cloneable view of the current role.
#[derive(Clone)]
pub struct RoleHandle(watch::Receiver<Role>);

impl RoleHandle {
    pub fn new(rx: watch::Receiver<Role>) -> Self {
        Self(rx)
    }

    /// The scheduler when this replica leads; otherwise UNAVAILABLE pointing at the leader.
    pub fn scheduler(&self) -> Result<Arc<Scheduler>, Status> {
        match &*self.0.borrow() {
            Role::Leader(s) => Ok(s.clone()),
            Role::Follower { leader } => Err(not_leader(leader.as_deref())),
        }
    }

    pub fn current(&self) -> Role {
        self.0.borrow().clone()
    }

    /// Waits until this replica leads.
    pub async fn wait_leader(&mut self) -> Option<Arc<Scheduler>> {
        loop {
            if let Role::Leader(s) = &*self.0.borrow_and_update() {
                return Some(s.clone());
            }
            self.0.changed().await.ok()?;
        }
    }
}

/// UNAVAILABLE from a follower, naming the leader when known.
pub fn not_leader(leader: Option<&str>) -> Status {
    match leader {
        Some(addr) => {
            let mut s = Status::unavailable(format!(
                "this coordinator is not the leader; the leader is {addr}"
            ));
            if let Ok(v) = addr.parse() {
                s.metadata_mut().insert(LEADER_METADATA, v);
            }
            s
        }
        None => Status::unavailable(
            "this coordinator is not the leader and no leader is elected yet; retry",
        ),
    }
}
