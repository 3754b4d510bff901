//! The coordinator's configuration: flags, each also read from a `REELFARM_*` variable.

use std::net::SocketAddr;

use clap::Parser;
use reelfarm_artifacts::StoreConfig;

use crate::planner::PlannerConfig;
use crate::scheduler::{FarmConfig, SchedulerConfig, TenantWeights};

/// reelfarm coordinator: accepts jobs over gRPC, plans them into tasks, schedules the tasks
/// on workers, and keeps durable state in etcd (or in memory without --etcd).
#[derive(Parser, Clone, Debug)]
#[command(name = "reelfarm-coordinator", version)]
pub struct Config {
    /// gRPC address (JobService, WorkerService, AdminService, reflection, health).
    #[arg(long, env = "REELFARM_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// gRPC address other replicas hand to clients and workers when this one leads, e.g.
    /// http://10.0.0.5:7070 (on Kubernetes: the pod IP). Default: derived from --listen
    /// (the host name when listening on all interfaces).
    #[arg(long, env = "REELFARM_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// HTTP address for /metrics (Prometheus) and /healthz.
    #[arg(long, env = "REELFARM_HTTP_LISTEN", default_value = "127.0.0.1:9464")]
    pub http_listen: SocketAddr,

    /// etcd endpoints, comma-separated (e.g. http://127.0.0.1:2379). Without it, state is
    /// kept in memory and lost when the process exits.
    #[arg(long, env = "REELFARM_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// TLS and user for etcd (--etcd-ca-cert, --etcd-cert, --etcd-key, --etcd-user,
    /// --etcd-password-file).
    #[command(flatten)]
    pub etcd_security: reelfarm_etcd::EtcdSecurity,

    /// Cluster name: the etcd key prefix is /reelfarm/<cluster>/.
    #[arg(long, env = "REELFARM_CLUSTER", default_value = "default")]
    pub cluster: String,

    /// The artifact store shared with the workers (--artifacts and the --s3-* flags): a
    /// worker's outputs are checked to exist there (once per worker session, at its first
    /// result) before a result is committed, and VerifyContent reads `uri` requests from it.
    #[command(flatten)]
    pub artifacts: StoreConfig,

    /// Jobs not yet finished (queued or running), at most; submissions beyond it get
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "REELFARM_MAX_QUEUED_JOBS", default_value_t = 10_000)]
    pub max_queued_jobs: usize,

    /// Unfinished jobs of one tenant, at most (0: only --max-queued-jobs applies). Beyond
    /// it that tenant's submissions get RESOURCE_EXHAUSTED while others' are accepted, so
    /// one tenant's batch cannot fill the whole queue.
    #[arg(long, env = "REELFARM_MAX_QUEUED_JOBS_PER_TENANT", default_value_t = 0)]
    pub max_queued_jobs_per_tenant: usize,

    /// Finished jobs kept (in memory and in etcd) for GetJob, ListJobs and idempotent
    /// resubmission; older ones are deleted, so both stay bounded under sustained load.
    #[arg(long, env = "REELFARM_RETAIN_FINISHED_JOBS", default_value_t = 10_000)]
    pub retain_finished_jobs: usize,

    /// Each tenant's share of the farm, as TENANT=WEIGHT pairs (weights 1..=1000), e.g.
    /// `ads=3,crm=1`; tenants not named weigh 1. Within a priority class, backlogged
    /// tenants get dispatched work in proportion to their weights.
    #[arg(long, env = "REELFARM_TENANT_WEIGHTS", default_value = "", hide_default_value = true,
          value_parser = TenantWeights::from_flag)]
    pub tenant_weights: TenantWeights,

    /// Seconds after a job finished before the files its uncommitted attempts wrote (failed,
    /// stale or cancelled attempts) are deleted from the artifact store; 0 keeps them.
    #[arg(
        long,
        env = "REELFARM_ARTIFACT_GC_GRACE_SECONDS",
        default_value_t = 900.0
    )]
    pub artifact_gc_grace_seconds: f64,

    /// Render every job, even one whose spec (tenant, prompt, seed and every parameter that
    /// reaches the pipeline) matches a retained SUCCEEDED job; by default such a job is
    /// served at once with that job's outputs (a cache hit).
    #[arg(long, env = "REELFARM_NO_RESULT_CACHE")]
    pub no_result_cache: bool,

    /// Attempts of one task (errors and lost workers) before its job fails.
    #[arg(long, env = "REELFARM_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,

    /// A worker whose attempts of one job failed this many times gets none of that job's
    /// tasks any more (lost streams and expired leases are not counted); 0: never.
    #[arg(long, env = "REELFARM_EXCLUDE_WORKER_AFTER", default_value_t = 2)]
    pub exclude_worker_after: u32,

    /// A worker with this many failed attempts within --unhealthy-window-seconds, across
    /// jobs, is cordoned as unhealthy until an operator uncordons it; 0: never.
    #[arg(long, env = "REELFARM_UNHEALTHY_AFTER", default_value_t = 5)]
    pub unhealthy_after: u32,

    /// How long a model task is left to a worker that holds its model loaded before a worker
    /// that would have to load it may take it, in ms; 0: no affinity.
    #[arg(long, env = "REELFARM_AFFINITY_WAIT_MS", default_value_t = 20_000)]
    pub affinity_wait_ms: u64,

    /// With HIGH work waiting and no free slot for it, checkpoint a running LOW denoising
    /// task and hand it back (it resumes from that checkpoint later): `low-for-high`, or
    /// `off`.
    #[arg(long, env = "REELFARM_PREEMPTION", default_value = "low-for-high", value_parser = ["off", "low-for-high"])]
    pub preemption: String,

    /// A task is preempted at most once in this many seconds (it keeps its slot after a
    /// preemption until this has passed), so LOW work always moves.
    #[arg(
        long,
        env = "REELFARM_PREEMPTION_MIN_INTERVAL_SECONDS",
        default_value_t = 300
    )]
    pub preemption_min_interval_seconds: u64,

    /// The window of --unhealthy-after, in seconds.
    #[arg(long, env = "REELFARM_UNHEALTHY_WINDOW_SECONDS", default_value_t = 600)]
    pub unhealthy_window_seconds: u64,

    /// A running task is stuck (and reassigned) when its progress stopped for longer than
    /// this many times its expected step time (from the speed its worker reports).
    #[arg(long, env = "REELFARM_STUCK_FACTOR", default_value_t = 10.0)]
    pub stuck_factor: f64,

    /// ...and for at least this many seconds (also the limit before a task's first step).
    #[arg(long, env = "REELFARM_STUCK_MIN_SECONDS", default_value_t = 60.0)]
    pub stuck_min_seconds: f64,

    /// After winning an election, hold dispatch up to this many seconds while the known
    /// workers reconnect and offer the tasks they run (which are adopted, not redone).
    #[arg(long, env = "REELFARM_FAILOVER_GRACE_SECONDS", default_value_t = 5.0)]
    pub failover_grace_seconds: f64,

    /// Target frames per VIDEO_SEGMENT task.
    #[arg(long, env = "REELFARM_SEGMENT_FRAMES", default_value_t = 12)]
    pub segment_frames: u32,

    /// Most VIDEO_SEGMENT tasks per job.
    #[arg(long, env = "REELFARM_MAX_SEGMENTS", default_value_t = 64)]
    pub max_segments: u32,

    /// A file holding the cluster's join token: every WorkerService stream must present it
    /// (`authorization: Bearer TOKEN`, the worker's own --join-token-file) or is refused
    /// with UNAUTHENTICATED before anything on it is read. Without it any process that
    /// reaches the port may register as a worker.
    #[arg(long, env = "REELFARM_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<std::path::PathBuf>,

    /// A file holding one admin API key (`rfk_<id>_<secret>`, e.g. from
    /// `echo "rfk_$(openssl rand -hex 8)_$(openssl rand -hex 32)"`), stored (as a hash) on the
    /// first start so that an operator can create the other keys. Authentication of clients
    /// is on when this is given or the store holds API keys (unless --insecure).
    #[arg(long, env = "REELFARM_BOOTSTRAP_ADMIN_KEY_FILE")]
    pub bootstrap_admin_key_file: Option<std::path::PathBuf>,

    /// PEM certificate chain of the gRPC port and the HTTP port (/metrics, /healthz): with
    /// --tls-key, clients, workers and scrapers must speak TLS (`https://`). Re-read every
    /// 2 s: a rotated Secret is served to new connections without dropping open streams.
    #[arg(long, env = "REELFARM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "REELFARM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA certificate(s) for workers' client certificates (mTLS, needs --tls-cert): a
    /// worker presenting one it signed needs no join token, and may register only under a
    /// DNS name of its certificate (its worker id bound to the credential). Re-read every
    /// 2 s, as --tls-cert.
    #[arg(long, env = "REELFARM_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<std::path::PathBuf>,

    /// Without --etcd: keep the API keys (their hashes) in this JSON file, so an embedded
    /// farm's keys outlive a restart (with --etcd they are in etcd).
    #[arg(long, env = "REELFARM_API_KEYS_FILE", conflicts_with = "etcd")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// Serve clients without API keys (every caller acts as an admin) and workers without a
    /// join token. Needed, in so many words, to listen on a non-loopback address without
    /// authentication; a --join-token-file given with it is still enforced.
    #[arg(long, env = "REELFARM_INSECURE")]
    pub insecure: bool,

    /// Requests per second each API key may make to SubmitJob, SubmitBatch and CancelJob
    /// (token bucket; bursts of 10 seconds' worth); beyond it RESOURCE_EXHAUSTED with a
    /// retry-after hint. 0: unlimited. Callers without a key (auth off) are not limited.
    #[arg(long, env = "REELFARM_KEY_SUBMIT_RATE", default_value_t = 20.0)]
    pub key_submit_rate: f64,

    /// Requests per second each API key may make to the reading RPCs (GetJob, ListJobs,
    /// WatchJob, VerifyContent, AdminService), as --key-submit-rate. 0: unlimited.
    #[arg(long, env = "REELFARM_KEY_READ_RATE", default_value_t = 100.0)]
    pub key_read_rate: f64,

    /// Log JSON lines instead of human-readable text (level from RUST_LOG).
    #[arg(long, env = "REELFARM_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// A coordinator embedded in another process (the demo, benchmarks): gRPC and HTTP on
    /// loopback ports the OS picks, the development farm secret, 3 attempts per task, no
    /// failover grace (no earlier leader's workers to wait for), finished jobs kept for the
    /// whole run; segments, stuck detection and logs as the flags' defaults.
    pub fn in_process(
        cluster: String,
        etcd: Vec<String>,
        artifacts: StoreConfig,
        max_queued_jobs: usize,
    ) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: loopback,
            http_listen: loopback,
            etcd,
            etcd_security: Default::default(),
            cluster,
            artifacts,
            max_queued_jobs,
            max_queued_jobs_per_tenant: 0,
            max_attempts: 3,
            exclude_worker_after: 2,
            unhealthy_after: 5,
            unhealthy_window_seconds: 600,
            affinity_wait_ms: 20_000,
            preemption: "low-for-high".into(),
            preemption_min_interval_seconds: 300,
            segment_frames: 12,
            max_segments: 64,
            advertise_address: None,
            stuck_factor: 10.0,
            stuck_min_seconds: 60.0,
            failover_grace_seconds: 0.0,
            retain_finished_jobs: 1_000_000,
            tenant_weights: TenantWeights::default(),
            artifact_gc_grace_seconds: 900.0,
            no_result_cache: false,
            join_token_file: None,
            bootstrap_admin_key_file: None,
            api_keys_file: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            insecure: false,
            key_submit_rate: 20.0,
            key_read_rate: 100.0,
            log_json: false,
        }
    }

    /// Checks values clap cannot; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let cluster_ok = !self.cluster.is_empty()
            && self.cluster.len() <= 63
            && self
                .cluster
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !cluster_ok {
            return Err(format!(
                "--cluster must be 1..=63 characters of [a-z0-9-], got {:?}",
                self.cluster
            ));
        }
        self.artifacts.validate()?;
        for (flag, rate) in [
            ("--key-submit-rate", self.key_submit_rate),
            ("--key-read-rate", self.key_read_rate),
        ] {
            if !(rate.is_finite() && (0.0..=1e6).contains(&rate)) {
                return Err(format!("{flag} must be 0..=1000000 per second, got {rate}"));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if self.client_ca.is_some() && self.tls_cert.is_none() {
            return Err("--client-ca needs --tls-cert and --tls-key".into());
        }
        if self.insecure && self.bootstrap_admin_key_file.is_some() {
            return Err(
                "--insecure turns authentication off and --bootstrap-admin-key-file turns it \
                 on: give one of them"
                    .into(),
            );
        }
        if self.max_queued_jobs == 0 {
            return Err("--max-queued-jobs must be at least 1".into());
        }
        if self.max_queued_jobs_per_tenant > self.max_queued_jobs {
            return Err(format!(
                "--max-queued-jobs-per-tenant ({}) must not exceed --max-queued-jobs ({})",
                self.max_queued_jobs_per_tenant, self.max_queued_jobs
            ));
        }
        if self.max_attempts == 0 {
            return Err("--max-attempts must be at least 1".into());
        }
        if self.unhealthy_window_seconds == 0 || self.unhealthy_window_seconds > 7 * 86_400 {
            return Err(format!(
                "--unhealthy-window-seconds must be 1..=604800, got {}",
                self.unhealthy_window_seconds
            ));
        }
        if self.segment_frames == 0 || self.max_segments == 0 {
            return Err("--segment-frames and --max-segments must be at least 1".into());
        }
        if !(self.stuck_factor.is_finite() && self.stuck_factor >= 1.0) {
            return Err(format!(
                "--stuck-factor must be at least 1, got {}",
                self.stuck_factor
            ));
        }
        if !(self.stuck_min_seconds.is_finite() && self.stuck_min_seconds >= 0.1) {
            return Err(format!(
                "--stuck-min-seconds must be at least 0.1, got {}",
                self.stuck_min_seconds
            ));
        }
        if !(self.artifact_gc_grace_seconds.is_finite()
            && (0.0..=30.0 * 86_400.0).contains(&self.artifact_gc_grace_seconds))
        {
            return Err(format!(
                "--artifact-gc-grace-seconds must be 0..=2592000 (30 days), got {}",
                self.artifact_gc_grace_seconds
            ));
        }
        if !(self.failover_grace_seconds.is_finite()
            && (0.0..=300.0).contains(&self.failover_grace_seconds))
        {
            return Err(format!(
                "--failover-grace-seconds must be 0..=300, got {}",
                self.failover_grace_seconds
            ));
        }
        Ok(())
    }

    /// The address to advertise for the bound gRPC address `bound`.
    pub fn advertise_address(&self, bound: SocketAddr) -> String {
        if let Some(a) = &self.advertise_address {
            return a.clone();
        }
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        if bound.ip().is_unspecified() {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
            format!("{scheme}://{host}:{}", bound.port())
        } else {
            format!("{scheme}://{bound}")
        }
    }

    /// `--tls-cert`, `--tls-key` and `--client-ca`, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.client_ca.clone(),
        })
    }

    pub fn scheduler(&self) -> SchedulerConfig {
        SchedulerConfig {
            farm: FarmConfig {
                max_attempts: self.max_attempts,
                max_active_jobs: self.max_queued_jobs,
                max_active_jobs_per_tenant: (self.max_queued_jobs_per_tenant > 0)
                    .then_some(self.max_queued_jobs_per_tenant),
                stuck_factor: self.stuck_factor,
                stuck_min: std::time::Duration::from_secs_f64(self.stuck_min_seconds),
                retain_finished: self.retain_finished_jobs,
                tenant_weights: self.tenant_weights.clone(),
                artifact_gc_grace: (self.artifact_gc_grace_seconds > 0.0)
                    .then(|| std::time::Duration::from_secs_f64(self.artifact_gc_grace_seconds)),
                exclude_worker_after: self.exclude_worker_after,
                unhealthy_after: self.unhealthy_after,
                unhealthy_window: std::time::Duration::from_secs(self.unhealthy_window_seconds),
                affinity_wait: std::time::Duration::from_millis(self.affinity_wait_ms),
                preemption: self.preemption == "low-for-high",
                preemption_interval: std::time::Duration::from_secs(
                    self.preemption_min_interval_seconds,
                ),
            },
            planner: PlannerConfig {
                segment_frames: self.segment_frames,
                max_segments: self.max_segments,
            },
            result_cache: !self.no_result_cache,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("reelfarm-coordinator").chain(args.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn scheduler_limits_are_checked_and_named() {
        let c = parse(&[
            "--max-queued-jobs",
            "10",
            "--max-queued-jobs-per-tenant",
            "11",
        ]);
        let e = c.validate().expect_err("per tenant above the total");
        assert!(e.contains("--max-queued-jobs-per-tenant"), "{e}");
        let c = parse(&["--artifact-gc-grace-seconds=-1"]);
        let e = c.validate().expect_err("negative grace");
        assert!(e.contains("--artifact-gc-grace-seconds"), "{e}");
        let e = Config::try_parse_from(["reelfarm-coordinator", "--tenant-weights", "ads=0"])
            .expect_err("weight 0")
            .to_string();
        assert!(e.contains("--tenant-weights"), "{e}");

        let c = parse(&[
            "--max-queued-jobs-per-tenant",
            "5",
            "--tenant-weights",
            "ads=3",
            "--artifact-gc-grace-seconds",
            "0",
            "--no-result-cache",
        ]);
        c.validate().expect("valid");
        let s = c.scheduler();
        assert_eq!(s.farm.max_active_jobs_per_tenant, Some(5));
        assert_eq!(s.farm.tenant_weights.get("ads"), 3);
        assert_eq!(s.farm.artifact_gc_grace, None, "0 turns the collector off");
        assert!(!s.result_cache);
        let defaults = parse(&[]).scheduler();
        assert_eq!(defaults.farm.max_active_jobs_per_tenant, None);
        assert_eq!(
            defaults.farm.artifact_gc_grace,
            Some(std::time::Duration::from_secs(900))
        );
        assert!(defaults.result_cache);
    }
}
