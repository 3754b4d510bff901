//! Connecting to a coordinator: the first address of `--coordinator` that answers.

use std::time::Duration;

use anyhow::Context as _;
use reelfarm_proto::v1::{
    admin_service_client::AdminServiceClient, job_service_client::JobServiceClient,
};
use tonic::transport::{Channel, Endpoint};

/// Per-address connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens a channel to the first reachable address.
pub async fn connect(addresses: &[String]) -> anyhow::Result<Channel> {
    let mut last = None;
    for addr in addresses {
        let endpoint = Endpoint::from_shared(addr.clone())
            .with_context(|| format!("bad coordinator address {addr:?}"))?
            .connect_timeout(CONNECT_TIMEOUT);
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(anyhow::anyhow!("{addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator address given")))
}

pub async fn jobs(addresses: &[String]) -> anyhow::Result<JobServiceClient<Channel>> {
    Ok(JobServiceClient::new(connect(addresses).await?))
}

pub async fn admin(addresses: &[String]) -> anyhow::Result<AdminServiceClient<Channel>> {
    Ok(AdminServiceClient::new(connect(addresses).await?))
}
