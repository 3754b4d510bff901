//! Connecting to the coordinator that leads: `--coordinator` may list several replicas.
//!
//! Each address is asked `AdminService/GetClusterStatus` (which followers answer too); the
//! leader is used at once, a follower's `leader_address` is followed, and an address that
//! does not answer is skipped. A single coordinator without etcd is always the leader.

use std::time::Duration;

use anyhow::Context as _;
use reelfarm_proto::v1::{
    self, admin_service_client::AdminServiceClient, job_service_client::JobServiceClient,
};
use tonic::transport::{Channel, Endpoint};

/// Per-address connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// While a failover is under way no replica leads for a few seconds: retry this long.
const LEADER_WAIT: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_millis(250);

async fn open(addr: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("bad coordinator address {addr:?}"))?
        .connect_timeout(CONNECT_TIMEOUT);
    endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("{addr}: {e}"))
}

/// What one address says about leadership.
enum Probe {
    Leader(Channel),
    Follower(Option<String>),
}

async fn probe(addr: &str) -> anyhow::Result<Probe> {
    let channel = open(addr).await?;
    let status = AdminServiceClient::new(channel.clone())
        .get_cluster_status(v1::GetClusterStatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{addr}: {}", s.message()))?
        .into_inner();
    Ok(if status.leader {
        Probe::Leader(channel)
    } else {
        Probe::Follower(Some(status.leader_address).filter(|a| !a.is_empty()))
    })
}

/// Opens a channel to the leading coordinator among `addresses` (following a follower's
/// pointer), waiting up to [`LEADER_WAIT`] while none leads.
pub async fn connect(addresses: &[String]) -> anyhow::Result<Channel> {
    anyhow::ensure!(!addresses.is_empty(), "no coordinator address given");
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let mut last = None;
        for addr in addresses {
            match probe(addr).await {
                Ok(Probe::Leader(c)) => return Ok(c),
                Ok(Probe::Follower(Some(leader))) => match probe(&leader).await {
                    Ok(Probe::Leader(c)) => return Ok(c),
                    Ok(Probe::Follower(_)) => {
                        last = Some(anyhow::anyhow!(
                            "{addr} names {leader} as leader, which says it is not"
                        ))
                    }
                    Err(e) => last = Some(e.context(format!("the leader named by {addr}"))),
                },
                Ok(Probe::Follower(None)) => {
                    last = Some(anyhow::anyhow!(
                        "{addr} is a follower and no leader is elected yet"
                    ))
                }
                Err(e) => last = Some(e),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator answered")));
        }
        tokio::time::sleep(RETRY).await;
    }
}

pub async fn jobs(addresses: &[String]) -> anyhow::Result<JobServiceClient<Channel>> {
    Ok(JobServiceClient::new(connect(addresses).await?))
}

pub async fn admin(addresses: &[String]) -> anyhow::Result<AdminServiceClient<Channel>> {
    Ok(AdminServiceClient::new(connect(addresses).await?))
}
