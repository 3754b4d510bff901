//! The worker's configuration: flags, each also read from a `REELFARM_*` variable.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

use reelfarm_artifacts::StoreConfig;

/// Which engine runs the pipeline's math.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// CUDA when this binary is the CUDA build and the driver sees the `--gpu` device, else
    /// the CPU (one log line says why).
    Auto,
    Cpu,
    /// The CUDA engine on device `--gpu`; refused at start by the CPU build or without a
    /// driver and device.
    Cuda,
}

/// reelfarm worker: registers with the coordinator (and in etcd with a lease), runs the
/// tasks it is assigned, and writes their outputs to the artifact store.
#[derive(Parser, Clone, Debug)]
#[command(name = "reelfarm-worker", version)]
pub struct Config {
    /// Coordinator gRPC address(es), comma-separated; the first that answers is used.
    #[arg(
        long,
        env = "REELFARM_COORDINATOR",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7070"
    )]
    pub coordinator: Vec<String>,

    /// etcd endpoints, comma-separated. With it, the worker registers under
    /// /reelfarm/<cluster>/workers/<id> with a lease kept alive in the background.
    #[arg(long, env = "REELFARM_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// TLS and user for etcd (--etcd-ca-cert, --etcd-cert, --etcd-key, --etcd-user,
    /// --etcd-password-file), as the coordinator's.
    #[command(flatten)]
    pub etcd_security: reelfarm_etcd::EtcdSecurity,

    /// Cluster name (etcd key prefix /reelfarm/<cluster>/).
    #[arg(long, env = "REELFARM_CLUSTER", default_value = "default")]
    pub cluster: String,

    /// Worker id, 1..=63 characters of [A-Za-z0-9._-]; default: <hostname>-<random>.
    #[arg(long, env = "REELFARM_WORKER_ID")]
    pub id: Option<String>,

    /// Engine: auto (cuda where this is the CUDA build and a device is present, else cpu),
    /// cpu, or cuda (an error at start without a CUDA build, driver or device).
    #[arg(long, env = "REELFARM_ENGINE", value_enum, default_value = "auto")]
    pub engine: EngineChoice,

    /// CUDA device ordinal this worker runs on: one worker per GPU (in Kubernetes each pod
    /// gets one GPU, device 0; on a bare host start one worker per device).
    #[arg(long, env = "REELFARM_GPU", default_value_t = 0)]
    pub gpu: usize,

    /// Tasks run at once.
    #[arg(long, env = "REELFARM_SLOTS", default_value_t = 1)]
    pub slots: u32,

    /// The artifact store shared with the coordinator and the other workers: --artifacts
    /// and the --s3-* flags.
    #[command(flatten)]
    pub artifacts: StoreConfig,

    /// HTTP address for /metrics (Prometheus) and /healthz.
    #[arg(long, env = "REELFARM_HTTP_LISTEN", default_value = "127.0.0.1:9465")]
    pub http_listen: SocketAddr,

    /// etcd lease TTL in seconds: a worker that stops renewing is considered gone after it.
    #[arg(long, env = "REELFARM_LEASE_TTL", default_value_t = 10)]
    pub lease_ttl: i64,

    /// On SIGTERM: seconds to let running tasks finish (no new ones are taken) before the
    /// rest are handed back to the coordinator; then the worker deregisters and exits.
    #[arg(long, env = "REELFARM_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,

    /// Secret that keys the watermark and signs the provenance manifest; the same on every
    /// worker and the coordinator. Default: a fixed development secret (a warning is logged).
    #[arg(long, env = "REELFARM_FARM_SECRET", hide_env_values = true)]
    pub farm_secret: Option<String>,

    /// A folder whose every subfolder is an open model in the diffusers layout (the
    /// subfolder's name is the model's name), checked at start; see README, Models.
    #[arg(long, env = "REELFARM_MODELS")]
    pub models: Option<std::path::PathBuf>,

    /// Weights of the open models kept loaded between tasks, in GiB: a model that does not
    /// fit beside the resident ones evicts the least recently used. Default: 80 % of the
    /// GPU's memory under the CUDA engine (the rest is for activations), half of the host's
    /// memory on the CPU.
    #[arg(long, env = "REELFARM_MODEL_MEMORY_GIB")]
    pub model_memory_gib: Option<f64>,

    /// A model job's DENOISE saves a checkpoint (latents and sampler history, to the
    /// artifact store) after every this many steps, so a retry, a hand-back or a failover
    /// resumes there instead of at step 0; 0: only on the time bound and when preempted.
    #[arg(long, env = "REELFARM_CHECKPOINT_EVERY_STEPS", default_value_t = 5)]
    pub checkpoint_every_steps: u32,

    /// ...and at the first step ending this many seconds after the last checkpoint (a
    /// step of a large model can take a minute); 0: no time bound.
    #[arg(long, env = "REELFARM_CHECKPOINT_EVERY_SECONDS", default_value_t = 120)]
    pub checkpoint_every_seconds: u64,

    /// DENOISE tasks of one model, size, step count and sampler the worker runs as one
    /// batch (one transformer forward per step for all of them; each clip's latents equal
    /// its run alone). Each batch holds one slot; 1: no batching.
    #[arg(long, env = "REELFARM_MAX_BATCH", default_value_t = 1)]
    pub max_batch: u32,

    /// How long the coordinator may keep such a task queued, after it became READY, for
    /// its batch to fill (Triton's max_queue_delay); 0: batch what is queued at dispatch.
    #[arg(long, env = "REELFARM_MAX_QUEUE_DELAY_MS", default_value_t = 0)]
    pub max_queue_delay_ms: u32,

    /// A file holding the cluster's join token, presented on every coordinator session
    /// (`authorization: Bearer TOKEN`): needed when the coordinator has --join-token-file.
    #[arg(long, env = "REELFARM_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<std::path::PathBuf>,

    /// PEM CA certificate that signed the coordinator's --tls-cert, for `https://`
    /// coordinator addresses (default: the system's roots).
    #[arg(long, env = "REELFARM_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,

    /// PEM client certificate for mTLS (the coordinator's --client-ca signed it); its DNS
    /// names are the worker ids this worker may register under. With --tls-key.
    #[arg(long, env = "REELFARM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "REELFARM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Log JSON lines instead of human-readable text (level from RUST_LOG).
    #[arg(long, env = "REELFARM_LOG_JSON")]
    pub log_json: bool,
}

/// Largest --max-batch: the batch's activations grow with it (a batch of 64 small clips
/// is already one large forward).
pub const MAX_BATCH: u32 = 64;

/// Largest --max-queue-delay-ms (the coordinator caps it there too): a minute.
pub const MAX_QUEUE_DELAY_MS: u32 = 60_000;

/// The farm secret used when none is configured: fine for a demo, not for production.
pub const DEV_FARM_SECRET: &str = "reelfarm-development-secret";

impl Config {
    /// Checks values clap cannot; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.slots == 0 || self.slots > 4096 {
            return Err(format!("--slots must be 1..=4096, got {}", self.slots));
        }
        if !(2..=3600).contains(&self.lease_ttl) {
            return Err(format!(
                "--lease-ttl must be 2..=3600 seconds, got {}",
                self.lease_ttl
            ));
        }
        self.artifacts.validate()?;
        if !(1..=MAX_BATCH).contains(&self.max_batch) {
            return Err(format!(
                "--max-batch must be 1..={MAX_BATCH}, got {}",
                self.max_batch
            ));
        }
        if self.max_queue_delay_ms > MAX_QUEUE_DELAY_MS {
            return Err(format!(
                "--max-queue-delay-ms must be at most {MAX_QUEUE_DELAY_MS}, got {}",
                self.max_queue_delay_ms
            ));
        }
        if let Some(g) = self.model_memory_gib {
            if !(g.is_finite() && g > 0.0) {
                return Err(format!("--model-memory-gib must be above 0, got {g}"));
            }
        }
        if self.coordinator.is_empty() {
            return Err("--coordinator needs at least one address".into());
        }
        if let Some(id) = &self.id {
            let ok = !id.is_empty()
                && id.len() <= 63
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(format!(
                    "--id must be 1..=63 characters of [A-Za-z0-9._-], got {id:?}"
                ));
            }
        }
        Ok(())
    }

    /// The model pool's budget in bytes (see `--model-memory-gib`), given the GPU's total
    /// memory (None on the CPU engine).
    pub fn model_memory_budget(&self, gpu_total: Option<u64>) -> u64 {
        const GIB: f64 = (1u64 << 30) as f64;
        match (self.model_memory_gib, gpu_total) {
            (Some(g), _) => (g * GIB) as u64,
            (None, Some(total)) => total / 5 * 4,
            (None, None) => host_memory_bytes() / 2,
        }
    }

    /// The worker id: configured, or `<hostname>-<6 hex>`.
    pub fn worker_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            let host: String = hostname()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(48)
                .collect();
            format!(
                "{}-{:06x}",
                if host.is_empty() { "worker" } else { &host },
                rand::random::<u32>() & 0xff_ffff
            )
        })
    }

    pub fn farm_secret(&self) -> Vec<u8> {
        match &self.farm_secret {
            Some(s) if !s.is_empty() => s.as_bytes().to_vec(),
            _ => {
                tracing::warn!("no --farm-secret: using the development secret; set REELFARM_FARM_SECRET in production");
                DEV_FARM_SECRET.as_bytes().to_vec()
            }
        }
    }
}

/// This machine's host name (from /etc/hostname or $HOSTNAME), or "" when unknown.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The host's physical memory (MemTotal of /proc/meminfo); 16 GiB where it cannot be read.
fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(16 << 30, |kib| kib * 1024)
}
