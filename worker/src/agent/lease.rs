//! The worker's registration in etcd: `/reelfarm/<cluster>/workers/<id>` under a lease that
//! a background task keeps alive. If the worker dies or hangs, the lease expires after its
//! TTL, etcd deletes the key, and the coordinator requeues the worker's tasks. If the lease
//! is lost while the worker lives (etcd unreachable for longer than the TTL), the worker
//! registers again under a new lease.

use std::time::Duration;

use etcd_client::{Client, PutOptions};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Pause before retrying a failed registration.
const RETRY: Duration = Duration::from_secs(1);

/// A registration key with its value and lease TTL.
#[derive(Clone, Debug)]
pub struct Registration {
    pub key: String,
    pub value: Vec<u8>,
    pub ttl_seconds: i64,
}

/// Grants a lease and writes the key under it. Returns the lease id.
pub async fn register(client: &Client, reg: &Registration) -> Result<i64, etcd_client::Error> {
    let lease = client
        .lease_client()
        .grant(reg.ttl_seconds, None)
        .await?
        .id();
    client
        .kv_client()
        .put(
            reg.key.clone(),
            reg.value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    Ok(lease)
}

/// Keeps `lease` alive (renewing every TTL/3), registering again whenever it is lost,
/// until `shutdown`; then revokes the lease so the key disappears at once.
pub async fn keep_alive(
    client: Client,
    reg: Registration,
    mut lease: i64,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let period = Duration::from_secs((reg.ttl_seconds as u64 / 3).max(1));
    loop {
        match client.lease_client().keep_alive(lease).await {
            Ok((mut keeper, mut responses)) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = client.lease_client().revoke(lease).await;
                        tracing::info!(key = %reg.key, "deregistered");
                        return;
                    }
                    _ = tokio::time::sleep(period) => {}
                }
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match responses.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    _ => break,
                }
            },
            Err(e) => tracing::warn!(error = %e, "lease keep-alive failed"),
        }
        metrics.lease_renewal_failures.inc();
        // The lease is gone or unreachable: register again under a new one.
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match register(&client, &reg).await {
                Ok(l) => {
                    tracing::warn!(key = %reg.key, lease = l, "lease lost; registered again");
                    lease = l;
                    break;
                }
                Err(e) => {
                    metrics.lease_renewal_failures.inc();
                    tracing::warn!(error = %e, "registration failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}
