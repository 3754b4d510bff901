//! Starting and stopping a coordinator replica: state backend, election, scheduler,
//! membership watch, gRPC server and metrics endpoint, all tied to one shutdown token.
//! Used by the `reelfarm-coordinator` binary and, in-process, by the demo and benchmarks.
//!
//! A replica serves gRPC at once, as a follower; it campaigns, and when elected it starts a
//! new term, reloads the state and becomes the leader. If it loses leadership (its election
//! lease expired, or a newer term fenced its writes) it stops leading for good and
//! [`RunningCoordinator::lost_leadership`] fires: the binary exits so that its supervisor
//! restarts it as a fresh follower, the conventional way to leave no stale state behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reelfarm_artifacts::ArtifactStore;
use reelfarm_domain::ClusterKeys;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::election::{Election, EtcdElection, LeaderChange, SoloElection};
use crate::metrics::Metrics;
use crate::role::{Role, RoleHandle};
use crate::scheduler::Scheduler;
use crate::state::{etcd, memory::MemoryStore, StateStore};
use crate::{api, membership};

/// Pause between failed campaigns (etcd unreachable).
const CAMPAIGN_RETRY: Duration = Duration::from_secs(1);
/// How often the leader looks for stuck tasks.
const WATCHDOG_TICK: Duration = Duration::from_millis(500);
/// How often the leader looks for finished jobs whose artifact sweep is due (cheap when none).
const COLLECTOR_TICK: Duration = Duration::from_secs(1);
/// How often a follower refreshes the leader's address it hands to clients.
const LEADER_REFRESH: Duration = Duration::from_millis(500);

/// A coordinator replica running in this process.
pub struct RunningCoordinator {
    /// The bound gRPC address (useful when listening on port 0).
    pub grpc_addr: SocketAddr,
    /// The bound /metrics and /healthz address.
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    role: RoleHandle,
    election: Arc<dyn Election>,
    shutdown: CancellationToken,
    lost: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningCoordinator {
    /// The scheduler while this replica leads.
    pub fn scheduler(&self) -> Option<Arc<Scheduler>> {
        match self.role.current() {
            Role::Leader(s) => Some(s),
            Role::Follower { .. } => None,
        }
    }

    /// Waits until this replica leads (None if it stopped or lost leadership first).
    pub async fn wait_leader(&self) -> Option<Arc<Scheduler>> {
        let mut role = self.role.clone();
        tokio::select! {
            s = role.wait_leader() => s,
            _ = self.lost.cancelled() => None,
        }
    }

    /// Cancelled when this replica lost leadership (or was fenced): it must be restarted.
    pub fn lost_leadership(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Hands leadership over (resign) if leading, stops serving, waits for the tasks.
    pub async fn stop(self) {
        if self.election.is_leader() {
            if let Err(e) = self.election.resign().await {
                tracing::warn!(error = %e, "resigning leadership failed; the lease will expire");
            } else {
                tracing::info!("leadership handed over");
            }
        }
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts a coordinator replica; it runs until `shutdown` is cancelled. Without etcd it is
/// the only replica and leads before this returns.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningCoordinator> {
    config.validate().map_err(anyhow::Error::msg)?;
    let join_token = reelfarm_proto::auth::JoinToken::read_flag(config.join_token_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    if join_token.is_none() {
        tracing::warn!(
            "no --join-token-file: any process that reaches the port may register as a worker"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let artifacts = Arc::new(
        ArtifactStore::open(&config.artifacts)
            .await
            .map_err(|e| anyhow::anyhow!("--artifacts {}: {e}", config.artifacts.location))?,
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", config.listen))?;
    let grpc_addr = listener.local_addr()?;
    let advertise = config.advertise_address(grpc_addr);

    let (store, election, etcd_client): (Arc<dyn StateStore>, Arc<dyn Election>, _) =
        if config.etcd.is_empty() {
            tracing::warn!("no --etcd: state is in memory and is lost when this process exits");
            (
                Arc::new(match &config.api_keys_file {
                    Some(path) => {
                        MemoryStore::with_key_file(path.clone()).map_err(anyhow::Error::msg)?
                    }
                    None => MemoryStore::new(),
                }),
                Arc::new(SoloElection::new(advertise.clone())),
                None,
            )
        } else {
            let client = etcd::connect(&config.etcd, &config.etcd_security).await?;
            (
                Arc::new(etcd::EtcdStore::new(client.clone(), &config.cluster)),
                Arc::new(EtcdElection::new(
                    client.clone(),
                    &config.cluster,
                    advertise.clone(),
                    shutdown.clone(),
                )),
                Some(client),
            )
        };
    let backend = store.backend();
    let bootstrap = config
        .bootstrap_admin_key_file
        .as_deref()
        .map(|p| reelfarm_proto::auth::ApiKeyToken::read("--bootstrap-admin-key-file", p))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let keys =
        api::auth::KeyRing::start(store.clone(), bootstrap, config.insecure, shutdown.clone())
            .await?;
    let worker_credential = join_token.is_some() || config.client_ca.is_some();
    let keys_on = keys.enabled();
    refuse_open_non_loopback(&config, keys_on, worker_credential)?;
    let tls = config
        .tls_files()
        .map(|files| crate::tls::ServerTls::new(&files))
        .transpose()
        .map_err(anyhow::Error::msg)?;

    let (role_tx, role_rx) = watch::channel(Role::Follower { leader: None });
    let role = RoleHandle::new(role_rx.clone());
    let mut tasks = Vec::new();

    // /metrics and /healthz over TLS too when the gRPC port has it (same certificate).
    let (http_listener, http_addr) = reelfarm_telemetry::bind_http(config.http_listen).await?;
    let http_task = match &tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(
                tls,
                http_listener,
                metrics.tls_handshakes_failed.clone(),
                shutdown.clone(),
            )?;
            reelfarm_telemetry::serve_http_on(listener, metrics.registry.clone(), shutdown.clone())
        }
        None => reelfarm_telemetry::serve_http_on(
            http_listener,
            metrics.registry.clone(),
            shutdown.clone(),
        ),
    };
    tasks.push(http_task);

    let router = api::router(
        role.clone(),
        role_rx,
        api::ApiContext {
            metrics: metrics.clone(),
            cluster: config.cluster.clone(),
            backend,
            store: artifacts.clone(),
            join_token,
            mtls: config.client_ca.is_some(),
            keys,
            key_rates: (config.key_submit_rate, config.key_read_rate),
            shutdown: shutdown.clone(),
        },
    )
    .await;
    let grpc_shutdown = shutdown.clone();
    // One server either way; only the stream of connections differs.
    let serving: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match &tls {
        Some(tls) => {
            // One watcher for both ports: they share the reloading certificate.
            tls.watch(metrics.tls_reloads.clone(), shutdown.clone());
            let incoming = tls.grpc_incoming(
                listener,
                metrics.tls_handshakes_failed.clone(),
                shutdown.clone(),
            );
            Box::pin(router.serve_with_incoming_shutdown(incoming, async move {
                grpc_shutdown.cancelled().await
            }))
        }
        None => Box::pin(
            router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                grpc_shutdown.cancelled().await
            }),
        ),
    };
    tasks.push(tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    }));

    let lost = CancellationToken::new();
    let role_tx = Arc::new(role_tx);
    tasks.push(tokio::spawn(lead(Leadership {
        election: election.clone(),
        store,
        artifacts: artifacts.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        role: role_tx.clone(),
        etcd: etcd_client,
        shutdown: shutdown.clone(),
        lost: lost.clone(),
    })));
    if config.etcd.is_empty() {
        role.clone()
            .wait_leader()
            .await
            .ok_or_else(|| anyhow::anyhow!("the coordinator stopped before leading"))?;
    } else {
        tasks.push(tokio::spawn(follow_leader(
            election.clone(),
            role_tx,
            shutdown.clone(),
        )));
    }
    tracing::info!(%grpc_addr, %http_addr, %advertise, cluster = %config.cluster, backend,
        tls = tls.is_some(), mtls = config.client_ca.is_some(), authentication = keys_on,
        artifacts = %artifacts.location(), "coordinator serving");
    Ok(RunningCoordinator {
        grpc_addr,
        http_addr,
        metrics,
        role,
        election,
        shutdown,
        lost,
        tasks,
    })
}

/// Safe defaults: on an address other hosts can reach, clients must present API keys and
/// workers the join token, unless `--insecure` says otherwise in so many words. On loopback
/// (the embedded demo, tests) an open farm is allowed.
fn refuse_open_non_loopback(
    config: &Config,
    keys_on: bool,
    worker_credential: bool,
) -> anyhow::Result<()> {
    if config.insecure {
        tracing::warn!(listen = %config.listen,
            "--insecure: clients are not authenticated (every caller acts as an admin)");
        return Ok(());
    }
    if config.listen.ip().is_loopback() {
        if !keys_on {
            tracing::info!("no API keys: clients are not authenticated (loopback only)");
        }
        return Ok(());
    }
    let mut missing = Vec::new();
    if !keys_on {
        missing.push("--bootstrap-admin-key-file (API keys for clients)");
    }
    if !worker_credential {
        missing.push("--join-token-file or --client-ca (the workers' credential)");
    }
    anyhow::ensure!(
        missing.is_empty(),
        "refusing to listen on {} (not loopback) without authentication: give {}, or \
         --insecure to serve it open",
        config.listen,
        missing.join(" and ")
    );
    Ok(())
}

struct Leadership {
    election: Arc<dyn Election>,
    store: Arc<dyn StateStore>,
    artifacts: Arc<ArtifactStore>,
    config: Config,
    metrics: Arc<Metrics>,
    role: Arc<watch::Sender<Role>>,
    etcd: Option<etcd_client::Client>,
    shutdown: CancellationToken,
    lost: CancellationToken,
}

/// Campaigns until elected, then leads until leadership is lost or the replica stops.
async fn lead(l: Leadership) {
    let mut changes = l.election.subscribe_leader_change();
    loop {
        match l.election.campaign().await {
            Ok(()) => break,
            Err(e) if l.shutdown.is_cancelled() => {
                tracing::debug!(error = %e, "campaign stopped");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "campaign failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(CAMPAIGN_RETRY) => {}
                    _ = l.shutdown.cancelled() => return,
                }
            }
        }
    }
    let scheduler = match Scheduler::recover(l.store, l.config.scheduler(), l.metrics.clone()).await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not load state after winning the election");
            let _ = l.election.resign().await;
            l.lost.cancel();
            return;
        }
    };
    if let Some(client) = &l.etcd {
        // Workers that ran tasks for the previous leader offer them when they reconnect;
        // hold dispatch briefly so those tasks are adopted instead of started again.
        let keys = ClusterKeys::new(&l.config.cluster);
        match membership::registered_workers(client, &keys).await {
            Ok(ids) if !ids.is_empty() && l.config.failover_grace_seconds > 0.0 => {
                tracing::info!(
                    workers = ids.len(),
                    grace_s = l.config.failover_grace_seconds,
                    "holding dispatch while known workers reconnect"
                );
                scheduler.hold_dispatch(
                    ids.into_iter().collect(),
                    Duration::from_secs_f64(l.config.failover_grace_seconds),
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not list registered workers; dispatching at once")
            }
        }
    }
    l.role.send_replace(Role::Leader(scheduler.clone()));
    let membership = l.etcd.map(|client| {
        tokio::spawn(membership::watch_workers(
            client,
            ClusterKeys::new(&l.config.cluster),
            scheduler.clone(),
            l.shutdown.clone(),
        ))
    });
    let watchdog = tokio::spawn(watchdog(scheduler.clone(), l.shutdown.clone()));
    let collector = tokio::spawn(collector(
        scheduler.clone(),
        l.artifacts.clone(),
        l.shutdown.clone(),
    ));
    let fenced = scheduler.fenced();
    let reason = loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(LeaderChange::SteppedDown(reason)) => break reason,
                Ok(LeaderChange::Elected) => continue,
                Err(_) => break "election stopped".to_string(),
            },
            _ = fenced.cancelled() => break "fenced by a newer term".to_string(),
            _ = l.shutdown.cancelled() => break String::new(),
        }
    };
    if let Some(m) = membership {
        m.abort();
    }
    watchdog.abort();
    collector.abort();
    l.metrics.leader.set(0);
    l.role.send_replace(Role::Follower { leader: None });
    if !reason.is_empty() {
        tracing::error!(%reason, "no longer the leader; this replica must restart");
        l.lost.cancel();
    }
}

/// While leading: finds stuck tasks and ends an expired dispatch hold, every tick.
async fn watchdog(scheduler: Arc<Scheduler>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCHDOG_TICK) => scheduler.tick().await,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// While leading: deletes the files of uncommitted attempts of jobs whose sweep is due.
async fn collector(
    scheduler: Arc<Scheduler>,
    artifacts: Arc<ArtifactStore>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COLLECTOR_TICK) => {
                // Many due at once (a new leader's backlog): keep going without the pause.
                while scheduler.collect_artifacts(&artifacts).await > 0 && !shutdown.is_cancelled() {}
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// While following, keeps the leader's address fresh for clients and workers.
async fn follow_leader(
    election: Arc<dyn Election>,
    role: Arc<watch::Sender<Role>>,
    shutdown: CancellationToken,
) {
    loop {
        if matches!(&*role.borrow(), Role::Follower { .. }) {
            match election.leader().await {
                Ok(leader) => {
                    role.send_if_modified(|r| match r {
                        Role::Follower { leader: current } if *current != leader => {
                            *current = leader.clone();
                            true
                        }
                        _ => false,
                    });
                }
                Err(e) => tracing::debug!(error = %e, "looking up the leader failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LEADER_REFRESH) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
