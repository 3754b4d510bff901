//! The worker agent: everything between the coordinator and the pipeline.
//!
//! - [`lease`]: the etcd registration and its lease, kept alive in the background.
//! - [`session`]: the bidirectional stream to the coordinator (register, assignments,
//!   progress, results) and the loop that opens a new one when it ends.
//! - [`connect`]: which coordinator to dial next (a follower's leader hint, etcd's leader,
//!   the `--coordinator` list) and the backoff between tries.
//! - [`tasks`]: the registry of running attempts and unconfirmed results, which outlives
//!   each session: what is offered at re-registration, cancelled, or handed back at
//!   shutdown.
//! - [`executor`]: decodes an assignment and runs its pipeline stage on a blocking thread,
//!   reading inputs from and writing outputs to the artifact store.
//! - [`failure`]: a failed attempt's class (transient or permanent) and code.
//! - [`content_check`]: VerifyContent's provenance check, which the coordinator hands to a
//!   worker because only workers link the decoders and hold the farm secret.
//!
//! [`start`] wires them up under one shutdown token; [`RunningWorker::drain`] is the
//! graceful shutdown.

pub(crate) mod assignments;
pub(crate) mod connect;
pub(crate) mod content_check;
pub mod executor;
pub mod failure;
pub(crate) mod lease;
pub(crate) mod session;
pub(crate) mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelfarm_proto::v1;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use reelfarm_artifacts::ArtifactStore;
use reelfarm_domain::ClusterKeys;

use self::tasks::TaskRegistry;
use crate::config::Config;
use crate::engine::GpuFacts;
use crate::metrics::Metrics;

/// A worker running in this process.
pub struct RunningWorker {
    pub id: String,
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    running: Arc<TaskRegistry>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Pause between checks while draining.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// After handing tasks back: time for the last messages to leave before the stream closes.
const FLUSH: Duration = Duration::from_millis(500);

impl RunningWorker {
    /// Graceful shutdown (SIGTERM): takes no new tasks, lets the running ones finish for up
    /// to `timeout`, then hands the rest back to the coordinator. Call [`Self::stop`] next
    /// to deregister. Returns how many tasks were handed back.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.running.start_draining();
        let deadline = Instant::now() + timeout;
        let mut logged = false;
        while self.running.running_count() > 0 && Instant::now() < deadline {
            if !logged {
                tracing::info!(
                    running = self.running.running_count(),
                    ?timeout,
                    "draining: letting running tasks finish"
                );
                logged = true;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let handed = self.running.hand_back_all("worker shutting down");
        if handed > 0 {
            tracing::info!(
                tasks = handed,
                "drain timeout: tasks handed back to the coordinator"
            );
        }
        // Let results and hand-backs leave before the stream closes.
        let flush_until = Instant::now() + FLUSH;
        while self.running.unsent_results() > 0 && Instant::now() < flush_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        handed
    }

    /// Stops the worker (deregistering from etcd) and waits for its tasks.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A device's facts as RegisterWorker carries them.
fn gpu_device(g: &GpuFacts) -> v1::GpuDevice {
    v1::GpuDevice {
        ordinal: g.ordinal as u32,
        name: g.name.clone(),
        uuid: g.uuid.clone(),
        compute_capability: format!("{}.{}", g.compute_capability.0, g.compute_capability.1),
        total_memory_bytes: g.total_memory_bytes,
        free_memory_bytes: g.free_memory_bytes,
        driver_cuda_version: g.driver_cuda_version.clone(),
    }
}

/// Starts a worker; it runs until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<RunningWorker> {
    config.validate().map_err(anyhow::Error::msg)?;
    // Read before anything starts: a worker that cannot join says so at once.
    let join_token = reelfarm_proto::auth::JoinToken::read_flag(config.join_token_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    let tls = reelfarm_proto::tls::ClientTls::from_flags(
        config.ca_cert.as_deref(),
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let id = config.worker_id();
    let selected = crate::engine::select::select(config.engine, config.gpu)?;
    let engine = selected.engine.clone();
    let metrics = Arc::new(Metrics::new(engine.name()));
    metrics
        .slots
        .with_label_values(&["total"])
        .set(i64::from(config.slots));
    let store = ArtifactStore::open(&config.artifacts)
        .await
        .map_err(|e| anyhow::anyhow!("--artifacts {}: {e}", config.artifacts.location))?;
    tracing::info!(artifacts = %store.location(), "artifact store open");
    let (http_addr, http_task) = reelfarm_telemetry::serve_http(
        config.http_listen,
        metrics.registry.clone(),
        shutdown.clone(),
    )
    .await?;
    let mut tasks = vec![http_task];
    if let Some(gpu) = &selected.gpu {
        metrics.gpu.set_device(gpu);
        #[cfg(feature = "cuda")]
        tasks.push(tokio::spawn(crate::metrics::gpu::sample_nvml(
            gpu.clone(),
            metrics.gpu.clone(),
            shutdown.clone(),
        )));
    }

    let (models, broken_models) = crate::models::scan(config.models.as_deref(), config.max_batch)?;
    let model_host = Arc::new(crate::models::host::ModelHost::new(
        config.models.clone(),
        models
            .iter()
            .filter(|m| m.not_servable.is_empty())
            .map(|m| (m.name.clone(), m.weight_bytes))
            .collect(),
        selected.model_device.clone(),
        config.model_memory_budget(selected.gpu.as_ref().map(|g| g.total_memory_bytes)),
    ));
    let register = v1::RegisterWorker {
        worker_id: id.clone(),
        engine: engine.name().to_string(),
        gpu_model: selected
            .gpu
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_default(),
        gpu_memory_bytes: selected.gpu.as_ref().map_or(0, |g| g.total_memory_bytes),
        free_memory_bytes: selected.gpu.as_ref().map_or(0, |g| g.free_memory_bytes),
        slots: config.slots,
        hostname: crate::config::hostname(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        metrics_address: http_addr.to_string(),
        running: vec![],
        running_batches: vec![],
        max_queue_delay_ms: config.max_queue_delay_ms,
        models,
        broken_models,
        gpu: selected.gpu.as_ref().map(gpu_device),
        // Filled per session from the model host.
        resident: vec![],
        model_memory_budget_bytes: model_host.budget(),
    };
    let mut leader_lookup = None;
    if !config.etcd.is_empty() {
        let options = config
            .etcd_security
            .apply(&config.etcd, etcd_client::ConnectOptions::new())
            .map_err(anyhow::Error::msg)?;
        let client = etcd_client::Client::connect(&config.etcd, Some(options))
            .await
            .map_err(|e| anyhow::anyhow!("--etcd {:?}: {e}", config.etcd))?;
        let keys = ClusterKeys::new(&config.cluster);
        let reg = lease::Registration {
            key: keys.worker(&id),
            value: serde_json::to_vec(&serde_json::json!({
                "id": id,
                "engine": engine.name(),
                "gpu_model": register.gpu_model,
                "slots": config.slots,
                "hostname": register.hostname,
                "metrics_address": register.metrics_address,
            }))
            .expect("plain JSON"),
            ttl_seconds: config.lease_ttl,
        };
        let lease_id = lease::register(&client, &reg)
            .await
            .map_err(|e| anyhow::anyhow!("registering in etcd: {e}"))?;
        tracing::info!(key = %reg.key, lease = lease_id, ttl = config.lease_ttl, "registered in etcd");
        leader_lookup = Some(connect::LeaderLookup {
            client: client.clone(),
            election: keys.election(),
        });
        tasks.push(tokio::spawn(lease::keep_alive(
            client,
            reg,
            lease_id,
            metrics.clone(),
            shutdown.clone(),
        )));
    }

    let farm_secret = config.farm_secret();
    let checks = Arc::new(content_check::ContentChecks::new(farm_secret.clone()));
    let executor = Arc::new(executor::Executor {
        store,
        engine,
        farm_secret,
        metrics: metrics.clone(),
        models: model_host,
        checkpoints: executor::CheckpointPolicy {
            every_steps: config.checkpoint_every_steps,
            every: (config.checkpoint_every_seconds > 0)
                .then(|| Duration::from_secs(config.checkpoint_every_seconds)),
        },
    });
    let running = TaskRegistry::new(config.slots);
    tasks.push(tokio::spawn(session::run(
        session::SessionConfig {
            coordinators: config.coordinator.clone(),
            register,
            leader_lookup,
            // Two lease TTLs: by then the coordinator has requeued everything this worker ran.
            orphan_timeout: Duration::from_secs(2 * config.lease_ttl.max(1) as u64),
            checks,
            join_token,
            tls,
        },
        executor,
        running.clone(),
        shutdown.clone(),
    )));
    tracing::info!(worker_id = %id, %http_addr, slots = config.slots, "worker started");
    Ok(RunningWorker {
        id,
        http_addr,
        metrics,
        running,
        shutdown,
        tasks,
    })
}
