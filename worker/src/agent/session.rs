//! The worker's session with the coordinator: one bidirectional gRPC stream, and the loop
//! that opens a new one whenever it ends.
//!
//! The worker registers, then runs every assignment it receives (at most `slots` at once),
//! streaming step progress and finally the result with the assignment's attempt token.
//!
//! A session is short-lived next to the tasks: the running attempts and unconfirmed results
//! live in the [`TaskRegistry`], which each new session offers the coordinator at
//! registration, and [`Connector`] picks the coordinator to dial next (a follower's leader
//! hint, etcd's leader, the `--coordinator` list) with backoff. Tasks still orphaned after
//! `orphan_timeout` without a session are stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelfarm_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::connect::{dial, leader_hint, Connector, LeaderLookup};
use super::content_check::ContentChecks;
use super::executor::{decode, to_proto_output, AttemptControl, Executor, Produced};
use super::failure::{TaskFailure, PREEMPTED};
use super::tasks::{hand_back_message, TaskRegistry};

/// Progress messages per task at most this often (the latest step wins).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);
/// Outbound messages buffered before the sender waits.
const OUTBOUND_BUFFER: usize = 1024;

/// What a session needs to know about its worker.
pub(crate) struct SessionConfig {
    /// The `--coordinator` addresses, tried in turn.
    pub(crate) coordinators: Vec<String>,
    /// Sent first on every session; `running` is filled in with what the worker offers.
    pub(crate) register: v1::RegisterWorker,
    /// With `--etcd`: the election whose leader value is the leader's address.
    pub(crate) leader_lookup: Option<LeaderLookup>,
    /// Running tasks are stopped after this long without a session.
    pub(crate) orphan_timeout: Duration,
    /// Runs the VerifyContent checks the coordinator sends (not tasks: no slot, no token).
    pub(crate) checks: Arc<ContentChecks>,
}

/// Why a session ended, and where the leader is if a follower said so.
struct SessionEnd {
    error: Option<String>,
    leader: Option<String>,
    registered: bool,
}

/// Connects, serves and reconnects until `shutdown`.
pub(crate) async fn run(
    config: SessionConfig,
    executor: Arc<Executor>,
    tasks: Arc<TaskRegistry>,
    shutdown: CancellationToken,
) {
    let mut connector = Connector::new(&config.coordinators, config.leader_lookup.as_ref());
    let mut last_session = Instant::now();
    while !shutdown.is_cancelled() {
        let addr = connector.next_address().await;
        let started = Instant::now();
        let end = serve(&addr, &config, &executor, &tasks, &shutdown).await;
        tasks.detach();
        executor.metrics.connected.set(0);
        if end.registered {
            last_session = Instant::now();
            connector.registered();
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
        connector.ended(&addr, started, end.leader);
        if !connector.wait(&shutdown).await {
            break;
        }
    }
}

/// One session with the coordinator at `addr`: dial, register, then handle its messages
/// until the stream ends or `shutdown`.
async fn serve(
    addr: &str,
    config: &SessionConfig,
    executor: &Arc<Executor>,
    tasks: &Arc<TaskRegistry>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let failed = |error: String, leader: Option<String>| SessionEnd {
        error: Some(error),
        leader,
        registered: false,
    };
    let mut client = match dial(addr).await {
        Ok(c) => c,
        Err(e) => return failed(e, None),
    };
    let (out, out_rx) = mpsc::channel(OUTBOUND_BUFFER);
    let mut register = config.register.clone();
    register.running = tasks.offered();
    register.resident = executor.models.resident();
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
            let leader = leader_hint(&status);
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
            Some(v1::coordinator_message::Body::Preempt(p)) => {
                if let Some(t) = p.token {
                    if tasks.preempt(&t) {
                        tracing::info!(job_id = %t.job_id, task_id = %t.task_id, attempt = t.attempt,
                            "preempted by coordinator: checkpointing at the next step");
                    }
                }
            }
            Some(v1::coordinator_message::Body::Verify(v)) => {
                config.checks.start(v, out.clone());
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

/// Starts running `assignment` in the background (it waits for a free slot there), or
/// answers at once: an error for an undecodable one, a hand-back while draining.
fn start_task(assignment: v1::Assignment, executor: &Arc<Executor>, tasks: &Arc<TaskRegistry>) {
    let task = match decode(&assignment) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable assignment");
            if let Some(token) = assignment.token {
                // No worker of this version can run it: the coordinator fails it at once.
                let refused =
                    TaskFailure::permanent("spec_refused", format!("bad assignment: {e}"));
                tasks.send(result_message(token, Err(refused)));
            }
            return;
        }
    };
    if tasks.is_draining() {
        // Assigned before the coordinator saw the drain: give it straight back.
        tasks.send(hand_back_message(
            task.token.clone(),
            "worker shutting down",
            false,
        ));
        return;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let preempt = Arc::new(AtomicBool::new(false));
    tasks.track(task.token.clone(), cancel.clone(), preempt.clone());
    let (executor, tasks) = (executor.clone(), tasks.clone());
    tokio::spawn(async move {
        let span = tracing::info_span!("task", job_id = %task.token.job_id, task_id = %task.token.task_id,
            attempt = task.token.attempt);
        let _permit = tasks.slot().await;
        let token = task.token.clone();
        let kind = task.kind;
        let (progress_tx, progress_rx) = tokio::sync::watch::channel((0u64, 0u64));
        let forward = tokio::spawn(forward_progress(progress_rx, token.clone(), tasks.clone()));
        let started = Instant::now();
        let control = AttemptControl {
            cancel: cancel.clone(),
            preempt,
            report: {
                let tasks = tasks.clone();
                Arc::new(move |m| {
                    tasks.send(m);
                })
            },
        };
        let result = executor.run(task, progress_tx, control).await;
        forward.abort();
        // Still ours unless handed back or replaced by a newer attempt of the same task.
        let ours = tasks.release(&token);
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
        if let Err(e) = &result {
            if e.code == PREEMPTED {
                // Its checkpoint went ahead on the same stream: the next attempt resumes there.
                executor.metrics.preemptions.inc();
                tasks.send(hand_back_message(token, &e.message, true));
                return;
            }
        }
        tasks
            .finish(token.clone(), result_message(token, result))
            .await;
        // A task that loaded another model: the coordinator places by what is loaded.
        if let Some(status) = executor
            .models
            .status_if_changed(executor.metrics.gpu.free_bytes())
        {
            tasks.send(v1::WorkerMessage {
                body: Some(v1::worker_message::Body::Status(status)),
            });
        }
    });
}

/// Forwards step progress with the measured speed, at most every PROGRESS_INTERVAL, until
/// the task ends (the caller aborts it).
async fn forward_progress(
    mut progress: tokio::sync::watch::Receiver<(u64, u64)>,
    token: v1::AttemptToken,
    tasks: Arc<TaskRegistry>,
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

/// The TaskResult message of the attempt `token`: its outputs, or the error it ended with.
fn result_message(
    token: v1::AttemptToken,
    result: Result<Produced, TaskFailure>,
) -> v1::WorkerMessage {
    let r = match result {
        Ok(p) => v1::TaskResult {
            token: Some(token),
            ok: true,
            error: String::new(),
            outputs: p.outputs.iter().map(to_proto_output).collect(),
            scene: p.scene.unwrap_or_default(),
            error_class: v1::ErrorClass::Unspecified as i32,
            error_code: String::new(),
        },
        Err(e) => v1::TaskResult {
            token: Some(token),
            ok: false,
            error_class: e.class as i32,
            error_code: e.code.to_string(),
            error: e.message,
            outputs: vec![],
            scene: String::new(),
        },
    };
    v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Result(r)),
    }
}
