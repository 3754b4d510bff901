//! Membership: follows worker registrations in etcd.
//!
//! Workers register under `/reelfarm/<cluster>/workers/<id>` with a lease they keep alive.
//! When the key disappears — the lease expired because the worker died or hung, or someone
//! deleted it — the worker is gone: its session is closed and its tasks go back to READY.
//! (A worker whose stream closes is handled by the stream itself; this catches the worker
//! that is still connected but no longer alive, e.g. paused past its lease.)
//! The watch resumes from the last revision seen, so no deletion is missed across etcd
//! reconnects.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use tokio_util::sync::CancellationToken;

use crate::scheduler::Scheduler;
use reelfarm_domain::ClusterKeys;

/// Pause before re-establishing a broken watch.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: removes workers whose registration key is deleted.
pub async fn watch_workers(
    client: Client,
    keys: ClusterKeys,
    scheduler: Arc<Scheduler>,
    shutdown: CancellationToken,
) {
    let prefix = keys.workers_prefix();
    let mut next_revision: i64 = 0;
    loop {
        let mut options = WatchOptions::new().with_prefix();
        if next_revision > 0 {
            options = options.with_start_revision(next_revision);
        }
        let mut watch_client = client.watch_client();
        let stream = tokio::select! {
            s = watch_client.watch(prefix.clone(), Some(options)) => s,
            _ = shutdown.cancelled() => return,
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "worker watch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_RETRY) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        tracing::debug!(prefix, next_revision, "watching worker registrations");
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = shutdown.cancelled() => return,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "worker watch broke; resuming");
                    break;
                }
            };
            if resp.canceled() {
                // E.g. the start revision was compacted: start over from now.
                next_revision = 0;
                break;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                next_revision = next_revision.max(kv.mod_revision() + 1);
                if event.event_type() != EventType::Delete {
                    continue;
                }
                let key = String::from_utf8_lossy(kv.key());
                if let Some(id) = key.strip_prefix(&prefix) {
                    scheduler.worker_gone(id, None, "lease_lost").await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_RETRY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The ids of the workers registered now (live leases), e.g. those a new leader waits for.
pub async fn registered_workers(
    client: &Client,
    keys: &ClusterKeys,
) -> Result<Vec<String>, etcd_client::Error> {
    let prefix = keys.workers_prefix();
    let resp = client
        .kv_client()
        .get(
            prefix.clone(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_string))
        .collect())
}
