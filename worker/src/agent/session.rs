//! The worker's session with the coordinator: one bidirectional gRPC stream.
//!
//! The worker registers, then runs every assignment it receives (at most `slots` at once),
//! streaming step progress and finally the result with the assignment's attempt token.
//! When the stream ends the worker stops what it was running — the coordinator has put those
//! tasks back to READY — and connects again (to the next address, with backoff).

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
use crate::artifacts::Output;

/// Progress messages per task at most this often (the latest step wins).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Connect timeout for one coordinator address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Outbound messages buffered before the sender waits.
const OUTBOUND_BUFFER: usize = 1024;

/// What a session needs to know about its worker.
pub struct SessionConfig {
    pub coordinators: Vec<String>,
    pub register: v1::RegisterWorker,
    pub slots: u32,
}

type Running = Arc<Mutex<HashMap<(String, String), Arc<AtomicBool>>>>;

/// Connects, serves and reconnects until `shutdown`.
pub async fn run(config: SessionConfig, executor: Arc<Executor>, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut next = 0usize;
    while !shutdown.is_cancelled() {
        let addr = config.coordinators[next % config.coordinators.len()].clone();
        next += 1;
        let started = Instant::now();
        match serve(&addr, &config, &executor, &shutdown).await {
            Ok(()) => tracing::info!(coordinator = %addr, "session ended"),
            Err(e) => tracing::warn!(coordinator = %addr, error = %e, "session failed"),
        }
        executor.metrics.connected.set(0);
        executor
            .metrics
            .session_seconds
            .observe(started.elapsed().as_secs_f64());
        if started.elapsed() > Duration::from_secs(10) {
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
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let channel = Endpoint::from_shared(addr.to_string())
        .map_err(|e| format!("bad coordinator address {addr}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let (out, out_rx) = mpsc::channel(OUTBOUND_BUFFER);
    let register = v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Register(config.register.clone())),
    };
    out.send(register).await.map_err(|_| "outbound closed")?;
    let mut inbound = client
        .session(ReceiverStream::new(out_rx))
        .await
        .map_err(|s| format!("session refused: {s}"))?
        .into_inner();

    let running: Running = Arc::default();
    let slots = Arc::new(Semaphore::new(config.slots as usize));
    let session_end = CancellationToken::new();
    let result = loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            _ = shutdown.cancelled() => break Ok(()),
        };
        let body = match msg {
            Ok(Some(m)) => m.body,
            Ok(None) => break Ok(()),
            Err(status) => break Err(format!("stream: {status}")),
        };
        match body {
            Some(v1::coordinator_message::Body::Registered(r)) => {
                executor.metrics.connected.set(1);
                tracing::info!(coordinator = %addr, term = r.term, cluster = %r.cluster, "registered");
            }
            Some(v1::coordinator_message::Body::Assignments(a)) => {
                for assignment in a.items {
                    start_task(assignment, executor, &out, &running, &slots, &session_end);
                }
            }
            Some(v1::coordinator_message::Body::Cancel(c)) => {
                if let Some(t) = c.token {
                    let key = (t.job_id.clone(), t.task_id.clone());
                    if let Some(flag) = running.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
                    {
                        flag.store(true, Ordering::Relaxed);
                        executor.metrics.stale_cancels.inc();
                        tracing::info!(job_id = %t.job_id, task_id = %t.task_id, "task cancelled by coordinator");
                    }
                }
            }
            None => {}
        }
    };
    // The coordinator requeues whatever this session was running: stop it.
    session_end.cancel();
    for flag in running.lock().unwrap_or_else(|p| p.into_inner()).values() {
        flag.store(true, Ordering::Relaxed);
    }
    result
}

fn start_task(
    assignment: v1::Assignment,
    executor: &Arc<Executor>,
    out: &mpsc::Sender<v1::WorkerMessage>,
    running: &Running,
    slots: &Arc<Semaphore>,
    session_end: &CancellationToken,
) {
    let task = match decode(&assignment) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable assignment");
            if let Some(token) = assignment.token {
                let _ = out.try_send(result_message(token, Err(format!("bad assignment: {e}"))));
            }
            return;
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let key = (task.token.job_id.clone(), task.token.task_id.clone());
    running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone(), cancel.clone());
    let (executor, out, running, slots, session_end) = (
        executor.clone(),
        out.clone(),
        running.clone(),
        slots.clone(),
        session_end.clone(),
    );
    tokio::spawn(async move {
        let span = tracing::info_span!("task", job_id = %task.token.job_id, task_id = %task.token.task_id,
            attempt = task.token.attempt);
        let _permit = slots.acquire_owned().await;
        let token = task.token.clone();
        let kind = task.kind;
        let (progress_tx, mut progress_rx) = tokio::sync::watch::channel((0u64, 0u64));
        // Forward progress at most every PROGRESS_INTERVAL until the task ends.
        let progress_out = out.clone();
        let progress_token = token.clone();
        let forward = tokio::spawn(async move {
            while progress_rx.changed().await.is_ok() {
                let (done, total) = *progress_rx.borrow_and_update();
                let msg = v1::WorkerMessage {
                    body: Some(v1::worker_message::Body::Progress(v1::TaskProgress {
                        token: Some(progress_token.clone()),
                        step: done.min(u64::from(u32::MAX)) as u32,
                        total_steps: total.min(u64::from(u32::MAX)) as u32,
                    })),
                };
                if progress_out.send(msg).await.is_err() {
                    break;
                }
                tokio::time::sleep(PROGRESS_INTERVAL).await;
            }
        });
        let started = Instant::now();
        let result = executor.run(task, progress_tx, cancel.clone()).await;
        forward.abort();
        running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let label = kind
            .as_str_name()
            .trim_start_matches("TASK_KIND_")
            .to_ascii_lowercase();
        let outcome = match (&result, cancel.load(Ordering::Relaxed)) {
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
            Ok(_) => {
                tracing::info!(kind = %label, seconds = started.elapsed().as_secs_f64(), "task done")
            }
            Err(e) => {
                tracing::warn!(kind = %label, error = %e, outcome, "task ended without result")
            }
        }
        if outcome == "cancelled" || session_end.is_cancelled() {
            // The coordinator no longer expects this attempt; a result would be rejected.
            return;
        }
        let _ = out.send(result_message(token, result)).await;
    });
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
