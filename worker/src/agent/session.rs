//! The worker's session with the coordinator: one bidirectional gRPC stream.
//!
//! The worker registers, then runs every assignment it receives (at most `slots` at once),
//! streaming step progress and finally the result with the assignment's attempt token.
//!
//! Tasks belong to the worker, not to one session ([`Tasks`]): when the stream breaks
//! (the coordinator restarted, or another replica took over) running tasks go on, and the
//! worker connects again — to the leader a follower named, the leader etcd names, or the
//! next `--coordinator` address — and offers what it runs and the results it is not sure
//! were received (`RegisterWorker.running`). The coordinator adopts those it has not given
//! to anyone else and cancels the rest; results are sent again and accepted only under a
//! current token, so nothing is lost and nothing is committed twice. Tasks still orphaned
//! after `orphan_timeout` without a session are stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reelfarm_proto::v1::{self, worker_service_client::WorkerServiceClient};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::executor::{decode, Executor};
use reelfarm_artifacts::Output;

/// Progress messages per task at most this often (the latest step wins).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Connect timeout for one coordinator address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Outbound messages buffered before the sender waits.
const OUTBOUND_BUFFER: usize = 1024;
/// A result sent on a session that stayed up this long afterwards was received.
const RESEND_WINDOW: Duration = Duration::from_secs(10);

/// What a session needs to know about its worker.
pub struct SessionConfig {
    pub coordinators: Vec<String>,
    pub register: v1::RegisterWorker,
    /// With `--etcd`: the election whose leader value is the leader's address.
    pub leader_lookup: Option<LeaderLookup>,
    /// Running tasks are stopped after this long without a session.
    pub orphan_timeout: Duration,
}

/// Finds the leader's address in etcd.
pub struct LeaderLookup {
    pub client: etcd_client::Client,
    pub election: String,
}

impl LeaderLookup {
    async fn leader(&self) -> Option<String> {
        let mut elections = self.client.election_client();
        let resp = elections.leader(self.election.clone()).await.ok()?;
        resp.kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .filter(|a| !a.is_empty())
    }
}

type Key = (String, String);

struct RunningTask {
    token: v1::AttemptToken,
    cancel: Arc<AtomicBool>,
}

/// A result not yet known to have reached a coordinator.
struct Unconfirmed {
    token: v1::AttemptToken,
    message: v1::WorkerMessage,
    /// When it was written to a live session; None while no session was up.
    sent: Option<Instant>,
}

/// The worker's tasks, across sessions (see the module docs).
pub struct Tasks {
    running: Mutex<HashMap<Key, RunningTask>>,
    unconfirmed: Mutex<Vec<Unconfirmed>>,
    /// The current session's outbound stream.
    outbox: Mutex<Option<mpsc::Sender<v1::WorkerMessage>>>,
    slots: Arc<Semaphore>,
    draining: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(t: &v1::AttemptToken) -> Key {
    (t.job_id.clone(), t.task_id.clone())
}

impl Tasks {
    pub fn new(slots: u32) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::default(),
            unconfirmed: Mutex::default(),
            outbox: Mutex::default(),
            slots: Arc::new(Semaphore::new(slots as usize)),
            draining: AtomicBool::new(false),
        })
    }

    /// Tasks running now.
    pub fn running_count(&self) -> usize {
        lock(&self.running).len()
    }

    /// The attempts to offer a coordinator at registration.
    fn offered(&self) -> Vec<v1::AttemptToken> {
        let mut tokens: Vec<_> = lock(&self.running)
            .values()
            .map(|r| r.token.clone())
            .collect();
        tokens.extend(lock(&self.unconfirmed).iter().map(|u| u.token.clone()));
        tokens
    }

    /// A session registered: it carries everything from now on, starting with the results
    /// not known to have arrived.
    fn attach(&self, out: mpsc::Sender<v1::WorkerMessage>) {
        let now = Instant::now();
        let mut unconfirmed = lock(&self.unconfirmed);
        for u in unconfirmed.iter_mut() {
            if out.try_send(u.message.clone()).is_ok() {
                u.sent = Some(now);
            }
        }
        if self.draining.load(Ordering::SeqCst) {
            let _ = out.try_send(drain_message());
        }
        *lock(&self.outbox) = Some(out);
    }

    /// The session ended: what it carried may not have arrived.
    fn detach(&self) {
        *lock(&self.outbox) = None;
        for u in lock(&self.unconfirmed).iter_mut() {
            u.sent = None;
        }
    }

    /// Sends on the current session, if any; progress is dropped when there is none.
    fn send(&self, msg: v1::WorkerMessage) -> bool {
        let out = lock(&self.outbox).clone();
        out.is_some_and(|o| o.try_send(msg).is_ok())
    }

    /// A task ended with `message` (its result): kept until known to have arrived. Listed
    /// before it is sent, so a session that registers meanwhile sends it too (a duplicate
    /// is rejected as stale by the coordinator; a result lost would be work lost).
    async fn finish(&self, token: v1::AttemptToken, message: v1::WorkerMessage) {
        {
            let now = Instant::now();
            let mut unconfirmed = lock(&self.unconfirmed);
            unconfirmed.retain(|u| u.sent.is_none_or(|s| now.duration_since(s) < RESEND_WINDOW));
            unconfirmed.push(Unconfirmed {
                token: token.clone(),
                message: message.clone(),
                sent: None,
            });
        }
        let out = lock(&self.outbox).clone();
        if let Some(out) = out {
            if out.send(message).await.is_ok() {
                let now = Instant::now();
                for u in lock(&self.unconfirmed).iter_mut() {
                    if u.token == token {
                        u.sent.get_or_insert(now);
                    }
                }
            }
        }
    }

    /// The coordinator no longer wants this attempt.
    fn cancel(&self, token: &v1::AttemptToken) -> bool {
        let k = key(token);
        lock(&self.unconfirmed).retain(|u| key(&u.token) != k || u.token.attempt != token.attempt);
        match lock(&self.running).get(&k) {
            Some(r) if r.token.attempt == token.attempt && r.token.term == token.term => {
                r.cancel.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Stops every running task and forgets unsent results (no coordinator for too long:
    /// they were requeued long ago).
    fn abandon_all(&self) -> usize {
        let running = lock(&self.running);
        for r in running.values() {
            r.cancel.store(true, Ordering::Relaxed);
        }
        lock(&self.unconfirmed).clear();
        running.len()
    }

    /// Graceful shutdown, first half: take no new tasks and tell the coordinator.
    pub fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            self.send(drain_message());
        }
    }

    /// Graceful shutdown, second half: hands every still-running task back to the
    /// coordinator (READY at once elsewhere) and stops it here. Returns how many.
    pub fn hand_back_all(&self, reason: &str) -> usize {
        let running: Vec<(Key, RunningTask)> = lock(&self.running).drain().collect();
        for (_, r) in &running {
            r.cancel.store(true, Ordering::Relaxed);
            self.send(v1::WorkerMessage {
                body: Some(v1::worker_message::Body::HandBack(v1::HandBack {
                    token: Some(r.token.clone()),
                    reason: reason.to_string(),
                })),
            });
        }
        running.len()
    }

    /// Results written to a session that may still be in flight.
    pub fn unsent_results(&self) -> usize {
        lock(&self.unconfirmed)
            .iter()
            .filter(|u| u.sent.is_none())
            .count()
    }
}

fn drain_message() -> v1::WorkerMessage {
    v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Drain(v1::Drain {})),
    }
}

/// Why a session ended, and where the leader is if a follower said so.
struct SessionEnd {
    error: Option<String>,
    leader: Option<String>,
    registered: bool,
}

/// Connects, serves and reconnects until `shutdown`.
pub async fn run(
    config: SessionConfig,
    executor: Arc<Executor>,
    tasks: Arc<Tasks>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    let mut asked_etcd = false;
    let mut last_session = Instant::now();
    while !shutdown.is_cancelled() {
        let addr = match hint.take() {
            Some(a) => a,
            None => {
                // Alternate between etcd's answer and the configured list, so a leader
                // address this worker cannot reach does not stop it from trying the others.
                let from_etcd = match (&config.leader_lookup, asked_etcd) {
                    (Some(l), false) => l.leader().await,
                    _ => None,
                };
                asked_etcd = from_etcd.is_some();
                from_etcd.unwrap_or_else(|| {
                    next += 1;
                    config.coordinators[(next - 1) % config.coordinators.len()].clone()
                })
            }
        };
        let started = Instant::now();
        let end = serve(&addr, &config, &executor, &tasks, &shutdown).await;
        tasks.detach();
        executor.metrics.connected.set(0);
        if end.registered {
            last_session = Instant::now();
            asked_etcd = false;
            executor
                .metrics
                .session_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        match &end.error {
            None => tracing::info!(coordinator = %addr, "session ended"),
            Some(e) => tracing::warn!(coordinator = %addr, error = %e, "session failed"),
        }
        if last_session.elapsed() > config.orphan_timeout {
            let n = tasks.abandon_all();
            if n > 0 {
                executor.metrics.stale_cancels.inc_by(n as u64);
                tracing::warn!(tasks = n, "no coordinator session for too long; stopping the running tasks (they were requeued)");
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_MIN;
        }
        if let Some(leader) = end.leader.filter(|l| *l != addr) {
            tracing::info!(leader = %leader, "following the leader");
            hint = Some(leader);
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn serve(
    addr: &str,
    config: &SessionConfig,
    executor: &Arc<Executor>,
    tasks: &Arc<Tasks>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let failed = |error: String, leader: Option<String>| SessionEnd {
        error: Some(error),
        leader,
        registered: false,
    };
    let endpoint = match Endpoint::from_shared(addr.to_string()) {
        Ok(e) => e,
        Err(e) => return failed(format!("bad coordinator address {addr}: {e}"), None),
    };
    let channel = match endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => return failed(format!("connect: {e}"), None),
    };
    let mut client = WorkerServiceClient::new(channel)
        // A content check carries the file (up to 64 MiB) in one message.
        .max_decoding_message_size(reelfarm_proto::limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(reelfarm_proto::limits::MAX_MESSAGE_BYTES);
    let (out, out_rx) = mpsc::channel(OUTBOUND_BUFFER);
    let mut register = config.register.clone();
    register.running = tasks.offered();
    let offered = register.running.len();
    let register = v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Register(register)),
    };
    if out.send(register).await.is_err() {
        return failed("outbound closed".into(), None);
    }
    let mut inbound = match client.session(ReceiverStream::new(out_rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let leader = status
                .metadata()
                .get(reelfarm_proto::cluster::LEADER_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return failed(format!("session refused: {status}"), leader);
        }
    };

    let mut registered = false;
    let error = loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            _ = shutdown.cancelled() => break None,
        };
        let body = match msg {
            Ok(Some(m)) => m.body,
            Ok(None) => break None,
            Err(status) => break Some(format!("stream: {status}")),
        };
        match body {
            Some(v1::coordinator_message::Body::Registered(r)) => {
                registered = true;
                tasks.attach(out.clone());
                executor.metrics.connected.set(1);
                tracing::info!(coordinator = %addr, term = r.term, cluster = %r.cluster, offered,
                    "registered");
            }
            Some(v1::coordinator_message::Body::Assignments(a)) => {
                for assignment in a.items {
                    start_task(assignment, executor, tasks);
                }
            }
            Some(v1::coordinator_message::Body::Cancel(c)) => {
                if let Some(t) = c.token {
                    if tasks.cancel(&t) {
                        executor.metrics.stale_cancels.inc();
                        tracing::info!(job_id = %t.job_id, task_id = %t.task_id, attempt = t.attempt,
                            "task cancelled by coordinator");
                    }
                }
            }
            Some(v1::coordinator_message::Body::Verify(v)) => {
                executor.checks.start(v, out.clone());
            }
            None => {}
        }
    };
    SessionEnd {
        error,
        leader: None,
        registered,
    }
}

fn start_task(assignment: v1::Assignment, executor: &Arc<Executor>, tasks: &Arc<Tasks>) {
    let task = match decode(&assignment) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable assignment");
            if let Some(token) = assignment.token {
                tasks.send(result_message(token, Err(format!("bad assignment: {e}"))));
            }
            return;
        }
    };
    if tasks.draining.load(Ordering::SeqCst) {
        // Assigned before the coordinator saw the drain: give it straight back.
        tasks.send(v1::WorkerMessage {
            body: Some(v1::worker_message::Body::HandBack(v1::HandBack {
                token: Some(task.token.clone()),
                reason: "worker shutting down".into(),
            })),
        });
        return;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let k = key(&task.token);
    lock(&tasks.running).insert(
        k.clone(),
        RunningTask {
            token: task.token.clone(),
            cancel: cancel.clone(),
        },
    );
    let (executor, tasks) = (executor.clone(), tasks.clone());
    tokio::spawn(async move {
        let span = tracing::info_span!("task", job_id = %task.token.job_id, task_id = %task.token.task_id,
            attempt = task.token.attempt);
        let _permit = tasks.slots.clone().acquire_owned().await;
        let token = task.token.clone();
        let kind = task.kind;
        let (progress_tx, progress_rx) = tokio::sync::watch::channel((0u64, 0u64));
        let forward = tokio::spawn(forward_progress(progress_rx, token.clone(), tasks.clone()));
        let started = Instant::now();
        let result = executor.run(task, progress_tx, cancel.clone()).await;
        forward.abort();
        // Still ours unless handed back or replaced by a newer attempt of the same task.
        let ours = {
            let mut running = lock(&tasks.running);
            match running.get(&k) {
                Some(r) if r.token.attempt == token.attempt && r.token.term == token.term => {
                    running.remove(&k);
                    true
                }
                _ => false,
            }
        };
        let label = kind
            .as_str_name()
            .trim_start_matches("TASK_KIND_")
            .to_ascii_lowercase();
        let cancelled = cancel.load(Ordering::Relaxed) || !ours;
        let outcome = match (&result, cancelled) {
            (_, true) => "cancelled",
            (Ok(_), false) => "ok",
            (Err(_), false) => "error",
        };
        executor
            .metrics
            .tasks
            .with_label_values(&[&label, outcome])
            .inc();
        let _enter = span.enter();
        match &result {
            Ok(_) if !cancelled => {
                tracing::info!(kind = %label, seconds = started.elapsed().as_secs_f64(), "task done")
            }
            Ok(_) => {
                tracing::info!(kind = %label, "task finished after it was cancelled; result dropped")
            }
            Err(e) => {
                tracing::warn!(kind = %label, error = %e, outcome, "task ended without result")
            }
        }
        if cancelled {
            // The coordinator no longer expects this attempt; a result would be rejected.
            return;
        }
        tasks
            .finish(token.clone(), result_message(token, result))
            .await;
    });
}

/// Forwards step progress with the measured speed, at most every PROGRESS_INTERVAL, until
/// the task ends (the caller aborts it).
async fn forward_progress(
    mut progress: tokio::sync::watch::Receiver<(u64, u64)>,
    token: v1::AttemptToken,
    tasks: Arc<Tasks>,
) {
    let mut last: Option<(Instant, u64)> = None;
    let mut speed = 0.0f64;
    while progress.changed().await.is_ok() {
        let (done, total) = *progress.borrow_and_update();
        let now = Instant::now();
        if let Some((t, d)) = last {
            let dt = now.duration_since(t).as_secs_f64();
            if dt > 0.0 && done > d {
                let s = (done - d) as f64 / dt;
                // Smoothed so one slow step does not look like a stall.
                speed = if speed == 0.0 {
                    s
                } else {
                    0.7 * speed + 0.3 * s
                };
            }
        }
        last = Some((now, done));
        tasks.send(v1::WorkerMessage {
            body: Some(v1::worker_message::Body::Progress(v1::TaskProgress {
                token: Some(token.clone()),
                step: done.min(u64::from(u32::MAX)) as u32,
                total_steps: total.min(u64::from(u32::MAX)) as u32,
                steps_per_second: speed,
            })),
        });
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    }
}

fn result_message(
    token: v1::AttemptToken,
    result: Result<super::executor::Produced, String>,
) -> v1::WorkerMessage {
    let output = |o: &Output| v1::Output {
        kind: o.kind.clone(),
        uri: o.uri.clone(),
        sha256: o.sha256.clone(),
        bytes: o.bytes,
    };
    let r = match result {
        Ok(p) => v1::TaskResult {
            token: Some(token),
            ok: true,
            error: String::new(),
            outputs: p.outputs.iter().map(output).collect(),
            scene: p.scene.unwrap_or_default(),
        },
        Err(e) => v1::TaskResult {
            token: Some(token),
            ok: false,
            error: e,
            outputs: vec![],
            scene: String::new(),
        },
    };
    v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Result(r)),
    }
}
