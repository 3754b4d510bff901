//! Starting and stopping a coordinator: state backend, scheduler, membership watch, gRPC
//! server and metrics endpoint, all tied to one shutdown token. Used by the
//! `reelfarm-coordinator` binary and, in-process, by the demo and the benchmarks.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::state::{etcd, memory::MemoryStore, StateStore};
use crate::{api, membership};

/// A coordinator running in this process.
pub struct RunningCoordinator {
    /// The bound gRPC address (useful when listening on port 0).
    pub grpc_addr: SocketAddr,
    /// The bound /metrics and /healthz address.
    pub http_addr: SocketAddr,
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningCoordinator {
    /// Stops serving and waits for the server tasks to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Resolves when this coordinator must stop on its own (fenced by a newer term).
    pub async fn fenced(&self) {
        self.scheduler.fenced().cancelled().await
    }
}

/// Starts a coordinator; it runs until `shutdown` is cancelled.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningCoordinator> {
    config.validate().map_err(anyhow::Error::msg)?;
    let metrics = Arc::new(Metrics::new());
    let (store, etcd_client): (Arc<dyn StateStore>, _) = if config.etcd.is_empty() {
        tracing::warn!("no --etcd: state is in memory and is lost when this process exits");
        (Arc::new(MemoryStore::new()), None)
    } else {
        let client = etcd::connect(&config.etcd).await?;
        (
            Arc::new(etcd::EtcdStore::new(client.clone(), &config.cluster)),
            Some(client),
        )
    };
    std::fs::create_dir_all(&config.artifacts).map_err(|e| {
        anyhow::anyhow!(
            "--artifacts {}: cannot create: {e}",
            config.artifacts.display()
        )
    })?;
    let scheduler = Scheduler::recover(store, config.scheduler(), metrics.clone()).await?;

    let mut tasks = Vec::new();
    if let Some(client) = etcd_client {
        tasks.push(tokio::spawn(membership::watch_workers(
            client,
            etcd::Keys::new(&config.cluster),
            scheduler.clone(),
            shutdown.clone(),
        )));
    }
    // A fenced coordinator stops serving: a newer one owns the state.
    {
        let (fenced, shutdown) = (scheduler.fenced(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = fenced.cancelled() => shutdown.cancel(),
                _ = shutdown.cancelled() => {}
            }
        });
    }

    let health = reelfarm_telemetry::Health::healthy();
    let (http_addr, http_task) = reelfarm_telemetry::serve_http(
        config.http_listen,
        metrics.registry.clone(),
        health,
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("--http-listen {}: {e}", config.http_listen))?;
    tasks.push(http_task);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", config.listen))?;
    let grpc_addr = listener.local_addr()?;
    let verify = api::job_service::VerifyConfig {
        farm_secret: config.farm_secret(),
        artifacts: config.artifacts.clone(),
    };
    let router = api::router(
        scheduler.clone(),
        metrics.clone(),
        &config.cluster,
        verify,
        shutdown.clone(),
    )
    .await;
    let grpc_shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let incoming = TcpListenerStream::new(listener);
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled())
            .await
        {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    }));
    tracing::info!(%grpc_addr, %http_addr, cluster = %config.cluster, backend = scheduler.backend(),
        term = scheduler.term(), "coordinator serving");
    Ok(RunningCoordinator {
        grpc_addr,
        http_addr,
        scheduler,
        metrics,
        shutdown,
        tasks,
    })
}
