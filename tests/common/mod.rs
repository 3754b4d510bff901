//! The end-to-end harness: a real farm of separate processes on free loopback ports.
//!
//! - [`Cluster`]: a throwaway etcd ([`LocalEtcd`]), one `reelfarm-coordinator` process and
//!   any number of `reelfarm-worker` processes, all under one temporary directory (artifact
//!   store and one log file per process). Everything is killed (SIGKILL) when the cluster is
//!   dropped; when a test fails, the drop prints every process's log first.
//! - [`Coordinator`] and [`Worker`]: handles on one process each, with `kill9()` and
//!   `restart()` (same flags, same ports).
//! - Clients and waits: gRPC clients that reconnect by themselves, [`Cluster::wait_job`] and
//!   friends, which poll a job until a condition holds or fail with the job's JSON.
//! - [`Store`]: where the processes keep artifacts — a directory of the test (default) or
//!   other store flags, e.g. an S3-compatible bucket ([`Cluster::start_with_store`]).
//! - Authentication: a cluster started with `--bootstrap-admin-key-file FILE` among its
//!   coordinator flags presents that admin key on its own clients ([`Coordinator::api_key`]);
//!   [`with_key`] makes clients that present any other.
//! - [`http_get`], [`etcd_keys`](Cluster::etcd_keys), [`require_tool`]: small helpers the
//!   suites share.
//!
//! Clusters are serialized within a test binary ([`Cluster::start`] takes a process-wide
//! lock): rendering is CPU heavy, and the suite must not starve a 2-core CI machine.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod replicas;

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use reelfarm::local_etcd::{free_port, LocalEtcd};
use reelfarm_proto::v1::{
    self, admin_service_client::AdminServiceClient, job_service_client::JobServiceClient,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Adds `authorization: Bearer KEY` to every request (none for `None`).
#[derive(Clone)]
pub struct KeyHeader(Option<String>);

impl tonic::service::Interceptor for KeyHeader {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(k) = &self.0 {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {k}").parse().expect("ASCII"),
            );
        }
        Ok(r)
    }
}

/// A channel that presents an API key.
pub type Authed = InterceptedService<Channel, KeyHeader>;

/// `channel` presenting `key`.
pub fn with_key(channel: Channel, key: Option<&str>) -> Authed {
    InterceptedService::new(channel, KeyHeader(key.map(str::to_string)))
}

pub const COORDINATOR_BIN: &str = env!("CARGO_BIN_EXE_reelfarm-coordinator");
pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_reelfarm-worker");
pub const CLI_BIN: &str = env!("CARGO_BIN_EXE_reelfarm");

/// How long a process may take to answer its readiness checks. They start in well under a
/// second; the margin covers a loaded 2-core CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test job may take to finish. Test jobs take seconds; the margin covers a
/// loaded CI machine and slower pipeline stages still being written.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// How often waits poll: fast enough to catch a task while it runs.
pub const POLL: Duration = Duration::from_millis(20);
/// Worker lease TTL: the smallest the worker accepts, so lost workers are noticed fast.
pub const LEASE_TTL_SECONDS: u32 = 2;

/// One cluster at a time per test binary (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());
/// Makes cluster names unique within a test binary.
static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// A child process started from fixed flags, its stdout and stderr appended to a log file.
pub struct Process {
    pub name: String,
    program: String,
    args: Vec<String>,
    /// Variables set for the process on top of the test's environment (less REELFARM_* and
    /// AWS_*, see [`Process::spawn`]).
    env: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Process {
    pub fn new(name: &str, program: &str, args: Vec<String>, log_path: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            program: program.to_string(),
            args,
            env: vec![],
            log_path,
            child: None,
        }
    }

    /// The same process with these variables set.
    fn with_env(mut self, env: &[(String, String)]) -> Self {
        self.env = env.to_vec();
        self
    }

    /// Starts the process (again, after [`Process::kill9`]) with the same flags.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening a log file in the test's temp dir");
        writeln!(
            log,
            "----- harness: {} {}",
            self.program,
            self.args.join(" ")
        )
        .expect("writing the log file");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log file handle"))
            .stderr(log)
            .env("RUST_LOG", "info");
        // Explicit flags only: nothing from the caller's REELFARM_* environment, and no AWS
        // credentials or endpoints of the developer's (S3 tests pass their own).
        for (key, _) in std::env::vars() {
            if key.starts_with("REELFARM_") || key.starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({}): {e}", self.name, self.program));
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (e.g. "STOP", "CONT") with kill(1).
    pub fn signal(&self, name: &str) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("running kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.name);
    }

    /// True if the process was started and has exited on its own (it is then reaped, so
    /// [`Process::spawn`] may start it again, as a supervisor would).
    pub fn exited(&mut self) -> bool {
        let gone = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))));
        if gone {
            self.child = None;
        }
        gone
    }

    /// Fails the test if the process has exited on its own.
    pub fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited with {status} while the test needed it; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `reelfarm-coordinator` process.
pub struct Coordinator {
    pub process: Process,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The admin key its clients present: the `--bootstrap-admin-key-file`'s, if given.
    pub api_key: Option<String>,
    /// With `--tls-cert`: the CA its clients verify it against (`https://` then).
    pub ca_cert: Option<PathBuf>,
}

impl Coordinator {
    /// `http://127.0.0.1:PORT` (`https://` with TLS), for tonic clients, workers and the CLI.
    pub fn url(&self) -> String {
        let scheme = if self.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.grpc_port)
    }

    /// An endpoint of [`Coordinator::url`], verifying TLS against [`Coordinator::ca_cert`].
    pub fn endpoint(&self) -> Endpoint {
        let endpoint = Endpoint::from_shared(self.url()).expect("a valid loopback url");
        match &self.ca_cert {
            None => endpoint,
            Some(ca) => endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
                    tonic::transport::Certificate::from_pem(std::fs::read(ca).expect("CA file")),
                ))
                .expect("TLS config"),
        }
    }

    /// `127.0.0.1:PORT`, for grpcurl.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The /metrics and /healthz address.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// Waits until GetClusterStatus answers as leader and /healthz answers 200.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            self.process.assert_alive();
            match self.status().await {
                Ok(s) if s.leader => match &self.ca_cert {
                    None => match http_get(&self.http_addr(), "/healthz") {
                        Ok((200, _)) => return,
                        Ok((code, body)) => last = format!("/healthz answered {code}: {body}"),
                        Err(e) => last = format!("/healthz: {e}"),
                    },
                    Some(ca) => match https_get(self.http_port, ca, "/healthz").await {
                        Ok(_) => return,
                        Err(e) => last = format!("https /healthz: {e}"),
                    },
                },
                Ok(s) => last = format!("not leader: {s:?}"),
                Err(e) => last = format!("GetClusterStatus: {e}"),
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "coordinator not ready after {READY_TIMEOUT:?} (last: {last}); log:\n{}",
            self.process.log()
        );
    }

    async fn status(&self) -> Result<v1::GetClusterStatusResponse, String> {
        let channel = self
            .endpoint()
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        AdminServiceClient::new(with_key(channel, self.api_key.as_deref()))
            .get_cluster_status(v1::GetClusterStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| s.to_string())
    }

    /// SIGKILL: the coordinator dies without any cleanup.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Starts the coordinator again with the same flags (same etcd, same ports) and waits
    /// until it is ready.
    pub async fn restart(&mut self) {
        self.process.kill9();
        self.process.spawn();
        self.wait_ready().await;
    }
}

/// A `reelfarm-worker` process.
pub struct Worker {
    pub id: String,
    pub process: Process,
    pub http_port: u16,
}

impl Worker {
    /// The /metrics and /healthz address.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// SIGKILL: the worker dies mid-task; its lease expires after [`LEASE_TTL_SECONDS`].
    pub fn kill9(&mut self) {
        self.process.kill9();
    }
}

/// How to start a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Worker processes, each with one task slot.
    pub workers: usize,
    /// Extra coordinator flags, e.g. `["--max-queued-jobs", "2"]`.
    pub coordinator_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            coordinator_args: vec![],
        }
    }
}

/// Where a [`Cluster`]'s coordinator and workers keep artifacts.
#[derive(Clone, Debug, Default)]
pub enum Store {
    /// `--artifacts` [`Cluster::artifacts`], a directory in the test's temp dir.
    #[default]
    Directory,
    /// Other store flags (e.g. `--artifacts s3://BUCKET/PREFIX --s3-endpoint ...`) and the
    /// variables (credentials) given to the coordinator and every worker.
    Flags {
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
}

impl Store {
    fn args(&self, dir: &Path) -> Vec<String> {
        match self {
            Store::Directory => vec!["--artifacts".into(), dir.display().to_string()],
            Store::Flags { args, .. } => args.clone(),
        }
    }

    fn env(&self) -> &[(String, String)] {
        match self {
            Store::Directory => &[],
            Store::Flags { env, .. } => env,
        }
    }
}

/// A whole farm of separate processes; see the module docs.
pub struct Cluster {
    /// Unique per test: the etcd prefix is /reelfarm/<name>/.
    pub name: String,
    pub etcd: LocalEtcd,
    pub coordinator: Coordinator,
    pub workers: Vec<Worker>,
    /// The shared artifact store's directory (unused with [`Store::Flags`]).
    pub artifacts: PathBuf,
    /// The artifact store flags of the coordinator and the workers.
    pub store: Store,
    /// Logs and artifacts; removed on drop.
    pub dir: tempfile::TempDir,
    // Last, so it is released after every process above is killed.
    _serial: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts etcd, the coordinator and `options.workers` workers, and waits until the
    /// coordinator lists every worker.
    pub async fn start(options: ClusterOptions) -> Self {
        Self::start_with_store(options, Store::Directory).await
    }

    /// [`Cluster::start`] with another artifact store (e.g. an S3-compatible bucket).
    pub async fn start_with_store(options: ClusterOptions, store: Store) -> Self {
        Self::start_with(options, store, None).await
    }

    /// [`Cluster::start`] with a coordinator serving TLS (its flags in `options`), which its
    /// own clients verify against the CA certificate `ca_cert`.
    pub async fn start_tls(options: ClusterOptions, ca_cert: PathBuf) -> Self {
        Self::start_with(options, Store::Directory, Some(ca_cert)).await
    }

    async fn start_with(options: ClusterOptions, store: Store, ca_cert: Option<PathBuf>) -> Self {
        // A test that failed while holding the lock poisons it; the next one may still run.
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("reelfarm-e2e-")
            .tempdir()
            .expect("creating the test's temp dir");
        let artifacts = dir.path().join("artifacts");
        let name = format!(
            "e2e-{}-{}",
            std::process::id(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        );
        let etcd = LocalEtcd::start().expect("starting etcd (run scripts/test.sh to install it)");
        let (grpc_port, http_port) = (free_port(), free_port());
        let mut args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{grpc_port}"),
            "--http-listen",
            &format!("127.0.0.1:{http_port}"),
            "--etcd",
            &etcd.endpoint,
            "--cluster",
            &name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(store.args(&artifacts));
        args.extend(options.coordinator_args.iter().cloned());
        let api_key = options
            .coordinator_args
            .iter()
            .position(|a| a == "--bootstrap-admin-key-file")
            .and_then(|i| options.coordinator_args.get(i + 1))
            .map(|path| {
                std::fs::read_to_string(path)
                    .expect("reading the bootstrap admin key")
                    .trim()
                    .to_string()
            });
        let mut coordinator = Coordinator {
            api_key,
            ca_cert,
            process: Process::new(
                "coordinator",
                COORDINATOR_BIN,
                args,
                dir.path().join("coordinator.log"),
            )
            .with_env(store.env()),
            grpc_port,
            http_port,
        };
        coordinator.process.spawn();
        let mut cluster = Self {
            name,
            etcd,
            coordinator,
            workers: vec![],
            artifacts,
            store,
            dir,
            _serial: serial,
        };
        cluster.coordinator.wait_ready().await;
        for i in 0..options.workers {
            cluster.add_worker(&format!("worker-{i}"));
        }
        let ids: Vec<String> = cluster.workers.iter().map(|w| w.id.clone()).collect();
        cluster.wait_workers_connected(&ids).await;
        cluster
    }

    /// Starts one more worker process (one slot, CPU engine); does not wait for it.
    pub fn add_worker(&mut self, id: &str) -> &mut Worker {
        self.add_worker_with_args(id, &[])
    }

    /// [`Cluster::add_worker`] with extra worker flags, e.g. `["--models", dir]`; with
    /// `--artifacts` among them, the worker gets that store instead of the cluster's.
    pub fn add_worker_with_args(&mut self, id: &str, extra: &[String]) -> &mut Worker {
        let http_port = free_port();
        let args = [
            "--coordinator",
            &self.coordinator.url(),
            "--etcd",
            &self.etcd.endpoint,
            "--cluster",
            &self.name,
            "--id",
            id,
            "--engine",
            "cpu",
            "--slots",
            "1",
            "--http-listen",
            &format!("127.0.0.1:{http_port}"),
            "--lease-ttl",
            &LEASE_TTL_SECONDS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        // A worker given its own --artifacts (a misconfigured one, in tests) skips the
        // cluster's store flags: clap takes each flag once.
        .chain(
            (!extra.iter().any(|a| a == "--artifacts"))
                .then(|| self.store.args(&self.artifacts))
                .into_iter()
                .flatten(),
        )
        .chain(extra.iter().cloned())
        .collect();
        let mut process = Process::new(
            id,
            WORKER_BIN,
            args,
            self.dir.path().join(format!("{id}.log")),
        )
        .with_env(self.store.env());
        process.spawn();
        self.workers.push(Worker {
            id: id.to_string(),
            process,
            http_port,
        });
        self.workers.last_mut().expect("just pushed")
    }

    pub fn worker(&mut self, id: &str) -> &mut Worker {
        self.workers
            .iter_mut()
            .find(|w| w.id == id)
            .unwrap_or_else(|| panic!("no worker {id} in this cluster"))
    }

    /// Waits until the coordinator lists every worker of `ids` and each answers /healthz.
    pub async fn wait_workers_connected(&mut self, ids: &[String]) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut admin = self.admin();
        let mut listed = vec![];
        while Instant::now() < deadline {
            for w in &mut self.workers {
                w.process.assert_alive();
            }
            if let Ok(r) = admin.list_workers(v1::ListWorkersRequest {}).await {
                listed = r.into_inner().workers.into_iter().map(|w| w.id).collect();
                let all_listed = ids.iter().all(|id| listed.contains(id));
                let all_healthy = self
                    .workers
                    .iter()
                    .filter(|w| ids.contains(&w.id))
                    .all(|w| matches!(http_get(&w.http_addr(), "/healthz"), Ok((200, _))));
                if all_listed && all_healthy {
                    return;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("workers {ids:?} not all connected after {READY_TIMEOUT:?}; the coordinator lists {listed:?}");
    }

    fn channel(&self) -> Channel {
        // Lazy: the channel (re)connects on use, so clients survive a coordinator restart.
        self.coordinator
            .endpoint()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// A JobService client of the coordinator.
    pub fn jobs(&self) -> JobServiceClient<Authed> {
        JobServiceClient::new(with_key(
            self.channel(),
            self.coordinator.api_key.as_deref(),
        ))
    }

    /// A JobService client presenting `key` (None: no key).
    pub fn jobs_as(&self, key: Option<&str>) -> JobServiceClient<Authed> {
        JobServiceClient::new(with_key(self.channel(), key))
    }

    /// An AdminService client presenting `key` (None: no key).
    pub fn admin_as(&self, key: Option<&str>) -> AdminServiceClient<Authed> {
        AdminServiceClient::new(with_key(self.channel(), key))
    }

    /// An AdminService client of the coordinator.
    pub fn admin(&self) -> AdminServiceClient<Authed> {
        AdminServiceClient::new(with_key(
            self.channel(),
            self.coordinator.api_key.as_deref(),
        ))
    }

    /// Worker `id` as ListWorkers shows it now, if it is connected.
    pub async fn listed_worker(&self, id: &str) -> Option<v1::WorkerInfo> {
        self.admin()
            .list_workers(v1::ListWorkersRequest {})
            .await
            .expect("ListWorkers")
            .into_inner()
            .workers
            .into_iter()
            .find(|w| w.id == id)
    }

    /// Registers over a real WorkerService session exactly as `register` says (what a
    /// worker on hardware this machine lacks would send), waits until it is listed, and
    /// returns what keeps the session open: drop both to end it.
    pub async fn register_by_hand(
        &mut self,
        register: v1::RegisterWorker,
    ) -> (
        tokio::sync::mpsc::Sender<v1::WorkerMessage>,
        tonic::Streaming<v1::CoordinatorMessage>,
    ) {
        use reelfarm_proto::v1::worker_service_client::WorkerServiceClient;
        let id = register.worker_id.clone();
        let mut client = WorkerServiceClient::connect(self.coordinator.url())
            .await
            .expect("WorkerService");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(v1::WorkerMessage {
            body: Some(v1::worker_message::Body::Register(register)),
        })
        .await
        .expect("queued");
        let inbound = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("the session opens")
            .into_inner();
        self.wait_workers_connected(&[id]).await;
        (tx, inbound)
    }

    /// Submits one job and returns it (as stored: defaults and seed filled in).
    pub async fn submit(&self, spec: v1::JobSpec) -> v1::Job {
        self.jobs()
            .submit_job(v1::SubmitJobRequest {
                spec: Some(spec),
                idempotency_key: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("SubmitJob was expected to succeed, got {s:?}"))
            .into_inner()
            .job
            .expect("SubmitJob answers with the job")
    }

    /// Polls the job every [`POLL`] until `done(&job)` holds, and returns that snapshot.
    /// Fails, with the job's JSON, when `done` does not hold within [`JOB_TIMEOUT`] or the
    /// job reaches a terminal state that does not satisfy it. Errors from the coordinator
    /// (e.g. while it restarts) are retried until the deadline.
    pub async fn wait_job(&self, id: &str, what: &str, done: impl Fn(&v1::Job) -> bool) -> v1::Job {
        let deadline = Instant::now() + JOB_TIMEOUT;
        let mut client = self.jobs();
        let mut last: Option<v1::Job> = None;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match client.get_job(v1::GetJobRequest { id: id.into() }).await {
                Ok(r) => {
                    let job = r.into_inner().job.expect("GetJob answers with the job");
                    if done(&job) {
                        return job;
                    }
                    if is_terminal(&job) {
                        panic!("job {id} ended before {what}:\n{}", describe(&job));
                    }
                    last = Some(job);
                }
                Err(s) => last_error = s.to_string(),
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "job {id}: expected {what} within {JOB_TIMEOUT:?}; last GetJob error: {last_error:?}; last snapshot:\n{}",
            last.as_ref().map(describe).unwrap_or_else(|| "(none)".into())
        );
    }

    /// Waits until the job is in a terminal state and returns it.
    pub async fn wait_terminal(&self, id: &str) -> v1::Job {
        self.wait_job(id, "a terminal state", is_terminal).await
    }

    /// Waits until the job is terminal and fails unless it SUCCEEDED.
    pub async fn wait_succeeded(&self, id: &str) -> v1::Job {
        let job = self.wait_terminal(id).await;
        assert_eq!(
            state(&job),
            v1::JobState::Succeeded,
            "job {id} was expected to SUCCEED:\n{}",
            describe(&job)
        );
        job
    }

    /// Every etcd key under `/reelfarm/<cluster>/<sub>`.
    pub async fn etcd_keys(&self, sub: &str) -> Vec<String> {
        let prefix = format!("/reelfarm/{}/{sub}", self.name);
        let mut client = etcd_client::Client::connect([self.etcd.endpoint.as_str()], None)
            .await
            .expect("connecting to the test etcd");
        let resp = client
            .get(
                prefix.as_str(),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .expect("reading keys from the test etcd");
        resp.kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect()
    }

    /// The stored JSON value of one etcd key under `/reelfarm/<cluster>/`.
    pub async fn etcd_json(&self, sub: &str) -> Option<serde_json::Value> {
        let key = format!("/reelfarm/{}/{sub}", self.name);
        let mut client = etcd_client::Client::connect([self.etcd.endpoint.as_str()], None)
            .await
            .expect("connecting to the test etcd");
        let resp = client
            .get(key.as_str(), None)
            .await
            .expect("reading from the test etcd");
        resp.kvs().first().map(|kv| {
            serde_json::from_slice(kv.value())
                .unwrap_or_else(|e| panic!("{key} holds no JSON: {e}"))
        })
    }

    /// Every log of the cluster, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut section = |name: &str, log: String| {
            out.push_str(&format!("\n===== {name} log =====\n{log}"));
        };
        section("coordinator", self.coordinator.process.log());
        for w in &self.workers {
            section(&w.id, w.process.log());
        }
        section("etcd", self.etcd.log());
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== the test failed; logs of cluster {} ({}):{}",
                self.name,
                self.dir.path().display(),
                self.logs()
            );
        }
        self.coordinator.kill9();
        for w in &mut self.workers {
            w.kill9();
        }
    }
}

/// Polls `probe` every [`POLL`] until it returns `Ok`, and returns that. Fails when `timeout`
/// passes first, with `what` and the probe's last `Err` (what it saw instead).
pub async fn wait_until<T, Fut>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "{what} within {timeout:?}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A small job: 48 frames of 160x96, i.e. 4 video segments with the coordinator's default
/// `--segment-frames 12`, plus PLAN, AUDIO and ASSEMBLE. Renders in well under a second.
pub fn spec(prompt: &str) -> v1::JobSpec {
    v1::JobSpec {
        prompt: prompt.into(),
        duration_seconds: 2.0,
        fps: 24,
        width: 160,
        height: 96,
        seed: Some(7),
        steps: 2,
        ..Default::default()
    }
}

/// Coordinator flags for clusters that run [`long_spec`] jobs: 15-frame segments.
pub fn long_job_coordinator_args() -> Vec<String> {
    vec!["--segment-frames".into(), "15".into()]
}

/// A job long enough to be interrupted mid-run: 120 frames of 320x180 in 8 segments of 15
/// frames (with [`long_job_coordinator_args`]). A segment takes from a few tenths of a
/// second to a second or two with the CPU engine (measured on a loaded 2-core machine),
/// which is what lets a test see a task start and act while it runs; the whole job stays
/// within seconds on two workers. Larger frames made the job last a minute once the real
/// diffusion stage landed.
pub fn long_spec(prompt: &str) -> v1::JobSpec {
    v1::JobSpec {
        prompt: prompt.into(),
        duration_seconds: 5.0,
        fps: 24,
        width: 320,
        height: 180,
        seed: Some(11),
        steps: 2,
        ..Default::default()
    }
}

pub fn state(job: &v1::Job) -> v1::JobState {
    v1::JobState::try_from(job.state).unwrap_or(v1::JobState::Unspecified)
}

pub fn task_state(task: &v1::TaskView) -> v1::TaskState {
    v1::TaskState::try_from(task.state).unwrap_or(v1::TaskState::Unspecified)
}

pub fn task_kind(task: &v1::TaskView) -> v1::TaskKind {
    v1::TaskKind::try_from(task.kind).unwrap_or(v1::TaskKind::Unspecified)
}

pub fn is_terminal(job: &v1::Job) -> bool {
    matches!(
        state(job),
        v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled
    )
}

/// True while the task occupies a worker.
pub fn is_active(task: &v1::TaskView) -> bool {
    matches!(
        task_state(task),
        v1::TaskState::Assigned | v1::TaskState::Running
    )
}

/// The job as pretty JSON, with every task's state, worker and attempt.
pub fn describe(job: &v1::Job) -> String {
    let mut json = reelfarm::output::job_json(job);
    json["task_details"] = job
        .task_details
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "kind": task_kind(t).as_str_name(),
                "state": task_state(t).as_str_name(),
                "worker": t.worker_id,
                "attempt": t.attempt,
                "progress": t.progress,
                "error": t.error,
            })
        })
        .collect();
    serde_json::to_string_pretty(&json).expect("plain JSON")
}

/// GET `path` from `addr` over plain HTTP/1.1; returns the status code and body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(2),
    )
    .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed HTTP response from {addr}: {response:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// In the Prometheus text `text`: the sum of every sample of `name` whose label set
/// contains `labels` (e.g. `state="succeeded"`, or "" for all); `None` when there is none.
pub fn sample_sum(text: &str, name: &str, labels: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_set) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric == name && label_set.contains(labels) {
            let v: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("sample {line:?} has no number: {e}"));
            sum = Some(sum.unwrap_or(0.0) + v);
        }
    }
    sum
}

/// Fails the test, telling how to install it, when `tool` is not on PATH: a suite must
/// never pass by skipping what it was written to check.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not on PATH: run the tests with ./scripts/test.sh, which installs it"
    );
}

/// The local path of a `file://` output uri.
pub fn output_path(uri: &str) -> &Path {
    Path::new(
        uri.strip_prefix("file://")
            .unwrap_or_else(|| panic!("output uri {uri:?} was expected to be file://")),
    )
}

/// Copies a folder tree (a model fixture).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A `--models` folder holding the tiny random Wan fixture `wan-tiny-a` (made by
/// models/oracle) under `name`.
pub fn tiny_models_folder(name: &str) -> tempfile::TempDir {
    let models = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/wan-tiny-a");
    copy_tree(&fixture, &models.path().join(name));
    // Not part of a diffusers folder: the oracle's recorded outputs.
    for f in ["references.safetensors", "references.json"] {
        let _ = std::fs::remove_file(models.path().join(name).join(f));
    }
    models
}

/// GET `path` over TLS from 127.0.0.1:`port`, trusting only `ca`; the body on 200.
pub async fn https_get(port: u16, ca: &std::path::Path, path: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(format!("not a 200: {text:.200}")),
    }
}
