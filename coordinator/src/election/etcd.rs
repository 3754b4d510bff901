//! [`Election`] on etcd, for clusters: a campaign under `/reelfarm/<cluster>/election`
//! holds a lease of [`ELECTION_TTL_SECONDS`], kept alive while campaigning and while
//! leading; a lease that lapses (the leader died, hung or lost etcd for a whole TTL) makes
//! this replica step down and lets the next campaigner win.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Election, ElectionError, LeaderChange};

/// Lease TTL of a campaign, seconds: a dead leader is replaced within about this long.
/// 5 s keeps failover fast while tolerating a few missed keep-alives (every TTL/3).
pub const ELECTION_TTL_SECONDS: i64 = 5;

/// Pause before re-opening a broken lease keep-alive stream.
const KEEPALIVE_RETRY: Duration = Duration::from_millis(200);

impl From<etcd_client::Error> for ElectionError {
    fn from(e: etcd_client::Error) -> Self {
        ElectionError::Backend(e.to_string())
    }
}

/// Election on etcd (see the module docs).
pub(crate) struct EtcdElection {
    client: Client,
    name: String,
    address: String,
    leader_key: Mutex<Option<LeaderKey>>,
    leading: AtomicBool,
    changes: broadcast::Sender<LeaderChange>,
    shutdown: CancellationToken,
    /// Stops the current campaign's lease keeper (resign).
    keeper_done: Mutex<Option<CancellationToken>>,
}

impl EtcdElection {
    /// An election for `cluster`, campaigning with `address` (this replica's gRPC address
    /// as clients and workers reach it).
    pub(crate) fn new(
        client: Client,
        cluster: &str,
        address: String,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            name: reelfarm_domain::ClusterKeys::new(cluster).election(),
            address,
            leader_key: Mutex::new(None),
            leading: AtomicBool::new(false),
            changes: broadcast::channel(16).0,
            shutdown,
            keeper_done: Mutex::new(None),
        })
    }

    fn step_down(&self, reason: &str) {
        if self.leading.swap(false, Ordering::SeqCst) {
            tracing::warn!(reason, "leadership lost");
            let _ = self
                .changes
                .send(LeaderChange::SteppedDown(reason.to_string()));
        }
    }

    /// Keeps the campaign lease alive, while campaigning and then while leading, until
    /// `done` (campaign abandoned, resigned) or shutdown. A broken keep-alive stream (etcd
    /// restarting, a network blip) is re-opened on the same lease for as long as the lease
    /// can still be alive; only when it has lapsed (or etcd says it expired) does this
    /// replica step down. A campaign whose lease lapsed must never be taken for a win (see
    /// `campaign`).
    async fn keep_lease(self: Arc<Self>, lease: i64, done: CancellationToken) {
        let ttl = Duration::from_secs(ELECTION_TTL_SECONDS as u64);
        let period = Duration::from_secs((ELECTION_TTL_SECONDS as u64 / 3).max(1));
        let mut renewed = tokio::time::Instant::now();
        let reason = 'outer: loop {
            let opened = self.client.lease_client().keep_alive(lease).await;
            let (mut keeper, mut responses) = match opened {
                Ok(k) => k,
                Err(e) => {
                    if renewed.elapsed() >= ttl {
                        break format!("lease keep-alive failed for a whole TTL: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(KEEPALIVE_RETRY) => continue,
                        _ = self.shutdown.cancelled() => return,
                        _ = done.cancelled() => return,
                    }
                }
            };
            loop {
                match tokio::time::timeout(period * 2, async {
                    keeper.keep_alive().await?;
                    responses.message().await
                })
                .await
                {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => renewed = tokio::time::Instant::now(),
                    Ok(Ok(Some(_))) => break 'outer "election lease expired".to_string(),
                    // The stream broke: re-open it unless the lease has surely lapsed.
                    _ if renewed.elapsed() >= ttl => {
                        break 'outer "lease not renewed for a whole TTL".to_string()
                    }
                    _ => break,
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = self.shutdown.cancelled() => return,
                    _ = done.cancelled() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(KEEPALIVE_RETRY) => {}
                _ = self.shutdown.cancelled() => return,
                _ = done.cancelled() => return,
            }
        };
        if done.is_cancelled() {
            // This campaign was abandoned meanwhile: its lease is not the one we lead on.
            return;
        }
        self.step_down(&reason);
    }
}

#[async_trait]
impl Election for Arc<EtcdElection> {
    fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    async fn campaign(&self) -> Result<(), ElectionError> {
        let lease = self
            .client
            .lease_client()
            .grant(ELECTION_TTL_SECONDS, None)
            .await?
            .id();
        // Keep the lease alive while waiting too: the campaign may block for a long time,
        // and a key whose lease lapsed would let etcd report a win that is not one.
        let done = CancellationToken::new();
        tokio::spawn(self.clone().keep_lease(lease, done.clone()));
        let abandon = |done: CancellationToken| async move {
            done.cancel();
            let _ = self.client.lease_client().revoke(lease).await;
        };
        let mut elections = self.client.election_client();
        let resp = tokio::select! {
            r = elections.campaign(self.name.clone(), self.address.clone(), lease) => r,
            _ = self.shutdown.cancelled() => {
                abandon(done).await;
                return Err(ElectionError::Backend("shutting down".into()));
            }
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                abandon(done).await;
                return Err(e.into());
            }
        };
        // etcd answers a campaign once every earlier key is gone, even if ours is gone too
        // (its lease expired while we waited): check that our lease is still alive.
        let ttl = self
            .client
            .lease_client()
            .time_to_live(lease, None)
            .await
            .map(|r| r.ttl())
            .unwrap_or(-1);
        if ttl <= 0 {
            abandon(done).await;
            return Err(ElectionError::Backend(format!(
                "campaign returned after its lease expired (ttl {ttl}); campaigning again"
            )));
        }
        *self.keeper_done.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
        *self.leader_key.lock().unwrap_or_else(|p| p.into_inner()) = resp.leader().cloned();
        self.leading.store(true, Ordering::SeqCst);
        tracing::info!(address = %self.address, lease, "elected leader");
        let _ = self.changes.send(LeaderChange::Elected);
        Ok(())
    }

    async fn leader(&self) -> Result<Option<String>, ElectionError> {
        match self
            .client
            .election_client()
            .leader(self.name.clone())
            .await
        {
            Ok(resp) => Ok(resp
                .kv()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            // etcd answers "election: no leader" as an error.
            Err(e) if e.to_string().contains("no leader") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn resign(&self) -> Result<(), ElectionError> {
        let key = self
            .leader_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(key) = key {
            let lease = key.lease();
            self.client
                .election_client()
                .resign(Some(ResignOptions::new().with_leader(key)))
                .await?;
            if let Some(done) = self
                .keeper_done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                done.cancel();
            }
            let _ = self.client.lease_client().revoke(lease).await;
            self.step_down("resigned");
        }
        Ok(())
    }

    fn subscribe_leader_change(&self) -> broadcast::Receiver<LeaderChange> {
        self.changes.subscribe()
    }
}
