//! The worker's session with the coordinator: one bidirectional gRPC stream, and the loop
//! that opens a new one whenever it ends.
//!
//! The worker registers, then runs every assignment it receives (at most `slots` at once,
//! see [`assignments`]), streaming step progress and finally the result with the
//! assignment's attempt token.
//!
//! A session is short-lived next to the tasks: the running attempts and unconfirmed results
//! live in the [`TaskRegistry`], which each new session offers the coordinator at
//! registration, and [`Connector`] picks the coordinator to dial next (a follower's leader
//! hint, etcd's leader, the `--coordinator` list) with backoff. Tasks still orphaned after
//! `orphan_timeout` without a session are stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reelfarm_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::assignments;
use super::connect::{dial, leader_hint, Connector, LeaderLookup};
use super::content_check::ContentChecks;
use super::executor::Executor;
use super::tasks::TaskRegistry;

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
    /// `--join-token-file`'s token, presented on every session.
    pub(crate) join_token: Option<reelfarm_proto::auth::JoinToken>,
    /// How `https://` coordinator addresses are verified, and the mTLS certificate.
    pub(crate) tls: reelfarm_proto::tls::ClientTls,
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
    let mut client = match dial(addr, &config.tls).await {
        Ok(c) => c,
        Err(e) => return failed(e, None),
    };
    let (out, out_rx) = mpsc::channel(OUTBOUND_BUFFER);
    let mut register = config.register.clone();
    register.running = tasks.offered();
    register.running_batches = tasks.offered_batches();
    register.resident = executor.models.resident();
    let offered = register.running.len();
    let register = v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Register(register)),
    };
    if out.send(register).await.is_err() {
        return failed("outbound closed".into(), None);
    }
    let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
    if let Some(token) = &config.join_token {
        let value = token
            .bearer()
            .parse()
            .expect("a join token is visible ASCII (checked when read)");
        request
            .metadata_mut()
            .insert(reelfarm_proto::auth::AUTHORIZATION, value);
    }
    let mut inbound = match client.session(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let leader = leader_hint(&status);
            return failed(
                format!(
                    "session refused ({:?}): {}",
                    status.code(),
                    status.message()
                ),
                leader,
            );
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
                assignments::start(a.items, executor, tasks);
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
