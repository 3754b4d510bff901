//! `reelfarm.v1.WorkerService`: each worker holds one bidirectional `Session` stream.
//!
//! The first message registers the worker; the coordinator answers `Registered` and then
//! sends `Assignments` and `CancelTask` messages as the scheduler decides. The worker sends
//! `TaskProgress` and `TaskResult` messages, each carrying its attempt token. When the
//! stream ends, for whatever reason, the worker's unfinished tasks go back to READY.
//!
//! A VerifyContent check handed to the worker goes out as `VerifyContent` with a request id
//! of this session and comes back as `ContentVerified`; the session keeps the pending
//! replies, so a session that ends drops them and the check moves to another worker.
//!
//! A successful result is committed only if each of its outputs is in this coordinator's
//! artifact store with the reported size; otherwise it counts as a failed attempt (a worker
//! writing to another bucket or to a pod-local directory is caught at its first task).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Future, Stream, StreamExt};
use reelfarm_artifacts::{ArtifactError, ArtifactStore};
use reelfarm_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::model::Output;
use crate::role::RoleHandle;
use crate::scheduler::verify::VerifyOutcome;
use crate::scheduler::{AttemptResult, Failure, Scheduler, ToWorker, WorkerInfo};

/// A connecting worker must register within this time (it sends the message right away).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most task slots one worker may advertise.
pub const MAX_SLOTS: u32 = 4096;
/// Most model entries (served or broken) one worker may report; a models folder is a
/// handful of checkpoints, so more is a misbehaving worker.
const MAX_MODELS: usize = 256;

/// Longest text field of a registered GPU (a device name is ~30 bytes, a UUID 40).
const MAX_GPU_TEXT: usize = 256;

/// See the module docs.
pub struct WorkerApi {
    role: RoleHandle,
    cluster: String,
    store: Arc<ArtifactStore>,
    shutdown: CancellationToken,
}

impl WorkerApi {
    pub fn new(
        role: RoleHandle,
        cluster: String,
        store: Arc<ArtifactStore>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            role,
            cluster,
            store,
            shutdown,
        }
    }
}

fn worker_info(r: &v1::RegisterWorker) -> Result<WorkerInfo, Status> {
    let id_ok = !r.worker_id.is_empty()
        && r.worker_id.len() <= 63
        && r.worker_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !id_ok {
        return Err(Status::invalid_argument(format!(
            "register.worker_id must be 1..=63 characters of [A-Za-z0-9._-], got {:?}",
            r.worker_id
        )));
    }
    if r.slots == 0 || r.slots > MAX_SLOTS {
        return Err(Status::invalid_argument(format!(
            "register.slots must be 1..={MAX_SLOTS}, got {}",
            r.slots
        )));
    }
    for (field, count) in [
        ("register.models", r.models.len()),
        ("register.broken_models", r.broken_models.len()),
        ("register.resident", r.resident.len()),
    ] {
        if count > MAX_MODELS {
            return Err(Status::invalid_argument(format!(
                "{field} has {count} entries; at most {MAX_MODELS}"
            )));
        }
    }
    if let Some((i, m)) = r
        .models
        .iter()
        .enumerate()
        .find(|(_, m)| m.max_batch > MAX_BATCH)
    {
        return Err(Status::invalid_argument(format!(
            "register.models[{i}].max_batch must be at most {MAX_BATCH}, got {}",
            m.max_batch
        )));
    }
    if r.max_queue_delay_ms > MAX_QUEUE_DELAY_MS {
        return Err(Status::invalid_argument(format!(
            "register.max_queue_delay_ms must be at most {MAX_QUEUE_DELAY_MS}, got {}",
            r.max_queue_delay_ms
        )));
    }
    if let Some(gpu) = &r.gpu {
        for (field, value) in [
            ("register.gpu.name", &gpu.name),
            ("register.gpu.uuid", &gpu.uuid),
            ("register.gpu.compute_capability", &gpu.compute_capability),
            ("register.gpu.driver_cuda_version", &gpu.driver_cuda_version),
        ] {
            if value.len() > MAX_GPU_TEXT {
                return Err(Status::invalid_argument(format!(
                    "{field} has {} bytes; at most {MAX_GPU_TEXT}",
                    value.len()
                )));
            }
        }
    }
    Ok(WorkerInfo {
        id: r.worker_id.clone(),
        engine: r.engine.clone(),
        gpu_model: r.gpu_model.clone(),
        gpu_memory_bytes: r.gpu_memory_bytes,
        slots: r.slots,
        hostname: r.hostname.clone(),
        version: r.version.clone(),
        metrics_address: r.metrics_address.clone(),
        models: r.models.clone(),
        broken_models: r.broken_models.clone(),
        gpu: r.gpu.clone(),
        resident: r.resident.clone(),
        model_memory_budget_bytes: r.model_memory_budget_bytes,
        max_queue_delay: std::time::Duration::from_millis(u64::from(r.max_queue_delay_ms)),
        running_batches: r
            .running_batches
            .iter()
            .take(MAX_OFFERED)
            .map(|b| {
                b.members
                    .iter()
                    .take(MAX_OFFERED)
                    .filter_map(|t| convert::token_from(Some(t)))
                    .collect()
            })
            .collect(),
        // At most one per slot can be adopted; the rest would be cancelled anyway.
        running: r
            .running
            .iter()
            .take(MAX_OFFERED)
            .filter_map(|t| convert::token_from(Some(t)))
            .collect(),
    })
}

/// A worker's batcher may wait at most this long (a minute): a task that became READY
/// waits for companions no longer than that (the worker's `--max-queue-delay-ms` limit).
const MAX_QUEUE_DELAY_MS: u32 = 60_000;
/// Tasks of one batch at most (the worker's `--max-batch` limit).
const MAX_BATCH: u32 = 64;

/// Offered running attempts read from one registration, at most.
const MAX_OFFERED: usize = 4 * MAX_SLOTS as usize;

/// The content checks a session has sent and not had answered, by request id.
#[derive(Default)]
struct PendingChecks {
    next_id: u64,
    replies: HashMap<u64, tokio::sync::oneshot::Sender<VerifyOutcome>>,
    /// The worker's side of the session ended: nothing sent from now on is answered.
    closed: bool,
}

type SharedChecks = Arc<parking_lot::Mutex<PendingChecks>>;

fn to_proto(msg: ToWorker, checks: &SharedChecks) -> v1::CoordinatorMessage {
    let body = match msg {
        ToWorker::Verify(work) => {
            let mut checks = checks.lock();
            checks.next_id += 1;
            let request_id = checks.next_id;
            // After the session ended its reply is dropped at once: the check moves on.
            if !checks.closed {
                checks.replies.insert(request_id, work.reply);
            }
            v1::coordinator_message::Body::Verify(v1::VerifyContent {
                request_id,
                data: work.data,
            })
        }
        ToWorker::Assign(items) => v1::coordinator_message::Body::Assignments(v1::Assignments {
            items: items.iter().map(convert::assignment).collect(),
        }),
        ToWorker::Cancel(token) => v1::coordinator_message::Body::Cancel(v1::CancelTask {
            token: Some(convert::token(&token)),
        }),
        ToWorker::Preempt(token) => v1::coordinator_message::Body::Preempt(v1::PreemptTask {
            token: Some(convert::token(&token)),
        }),
    };
    v1::CoordinatorMessage { body: Some(body) }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl v1::worker_service_server::WorkerService for WorkerApi {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let scheduler = self.role.scheduler()?;
        // Under mTLS the worker's certificate names the ids it may take (see `tls`).
        let leaf = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned());
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no register message"))??;
        let info = match first.and_then(|m| m.body) {
            Some(v1::worker_message::Body::Register(r)) => worker_info(&r)?,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be register",
                ))
            }
        };
        if let Some(leaf) = &leaf {
            if !crate::tls::certificate_names(leaf, &info.id) {
                let names = crate::tls::peer_worker_names(leaf).join(", ");
                tracing::warn!(worker_id = %info.id, %names,
                    "a worker registered with an id its certificate does not name");
                return Err(Status::permission_denied(format!(
                    "register.worker_id {:?} is not a name of your client certificate ({names})",
                    info.id
                )));
            }
        }
        let worker_id = info.id.clone();
        let (to_worker, from_scheduler) = mpsc::unbounded_channel();
        let registered = v1::CoordinatorMessage {
            body: Some(v1::coordinator_message::Body::Registered(v1::Registered {
                term: scheduler.term(),
                cluster: self.cluster.clone(),
            })),
        };
        let session = scheduler.register_worker(info, to_worker).await;
        let checks = SharedChecks::default();
        let outbound_checks = checks.clone();

        // Worker → scheduler.
        let shutdown = self.shutdown.clone();
        // Whether this session's outputs were found in our store once (see `check_outputs`).
        let store_checked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = self.store.clone();
        tokio::spawn(async move {
            // Results being applied and committed. They run concurrently, so many results
            // share one durable write, but inside this task: a spawned task per result cost
            // a wake-up and an allocation per task, a large share of the transport's.
            let mut in_flight = FuturesUnordered::new();
            // Pinned once: a cancellation future made per message cost a Notify
            // registration and removal each time.
            let cancelled = shutdown.cancelled();
            tokio::pin!(cancelled);
            loop {
                let msg = tokio::select! {
                    biased;
                    _ = &mut cancelled => break,
                    // Results read earlier go first: bounded work in flight per session.
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                    m = inbound.message() => m,
                };
                let body = match msg {
                    Ok(Some(m)) => m.body,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(worker_id = %worker_id, %status, "worker stream error");
                        break;
                    }
                };
                // Checkpoints are applied in stream order, each durable before the next
                // message: a preempted attempt's hand-back follows its last checkpoint, and
                // two checkpoints of one task never overtake each other in the store.
                if let Some(v1::worker_message::Body::Checkpoint(c)) = body {
                    checkpoint(&scheduler, &worker_id, c).await;
                    continue;
                }
                if let Some(result) = handle(
                    &scheduler,
                    &store,
                    &store_checked,
                    &checks,
                    &worker_id,
                    body,
                ) {
                    in_flight.push(result);
                }
            }
            // Unanswered checks move to another worker now, not when the stream is dropped.
            {
                let mut checks = checks.lock();
                checks.closed = true;
                checks.replies.clear();
            }
            // Results already received still count (a worker's last result before it
            // disconnects); they finish in their own task, as before the session ended.
            if !in_flight.is_empty() {
                tokio::spawn(async move { while in_flight.next().await.is_some() {} });
            }
            scheduler
                .worker_gone(&worker_id, Some(session), "stream_closed")
                .await;
        });

        // Scheduler → worker: `registered`, then whatever the scheduler sends, converted as
        // the stream is polled (no task in between). It ends when the scheduler drops the
        // worker (replaced, lease lost), which tells the worker to reconnect. Unbounded is
        // safe: assignments are bounded by the worker's free slots.
        let stream = futures::stream::once(async move { Ok(registered) }).chain(
            UnboundedReceiverStream::new(from_scheduler)
                .map(move |m| Ok(to_proto(m, &outbound_checks))),
        );
        Ok(Response::new(Box::pin(stream) as SessionStream))
    }
}

/// A running attempt's checkpoint (see the farm's `checkpoints`).
async fn checkpoint(scheduler: &Arc<Scheduler>, worker_id: &str, c: v1::TaskCheckpoint) {
    let (
        Some(token),
        Some(v1::Checkpoint {
            step,
            output: Some(output),
        }),
    ) = (convert::token_from(c.token.as_ref()), c.checkpoint)
    else {
        tracing::warn!(worker_id, "checkpoint without a token or a file ignored");
        return;
    };
    match scheduler
        .checkpoint(worker_id, &token, step, convert::output_from(output))
        .await
    {
        Ok(()) => tracing::debug!(worker_id, job_id = %token.job_id, task_id = %token.task_id,
            step, "checkpoint recorded"),
        Err(e) => tracing::info!(worker_id, job_id = %token.job_id, task_id = %token.task_id,
            step, error = %e, "checkpoint rejected"),
    }
}

/// A result being applied: checked against the store (a session's first), then committed.
type ResultFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Acts on one message from a worker; a result comes back as a future for the session to
/// drive (see `in_flight` above).
fn handle(
    scheduler: &Arc<Scheduler>,
    store: &Arc<ArtifactStore>,
    store_checked: &Arc<std::sync::atomic::AtomicBool>,
    checks: &SharedChecks,
    worker_id: &str,
    body: Option<v1::worker_message::Body>,
) -> Option<ResultFuture> {
    use v1::worker_message::Body;
    match body {
        Some(Body::Progress(p)) => {
            if let Some(token) = convert::token_from(p.token.as_ref()) {
                if let Err(e) =
                    scheduler.progress(worker_id, &token, p.step, p.total_steps, p.steps_per_second)
                {
                    tracing::debug!(worker_id, job_id = %token.job_id, task_id = %token.task_id, error = %e, "progress rejected");
                }
            }
        }
        Some(Body::Result(r)) => {
            let Some(token) = convert::token_from(r.token.as_ref()) else {
                tracing::warn!(worker_id, "result without a token ignored");
                return None;
            };
            // Moved, not copied: the message is ours.
            let v1::TaskResult {
                ok,
                error,
                outputs,
                scene,
                error_class,
                error_code,
                ..
            } = r;
            let failure =
                Failure::from_report(error_class == v1::ErrorClass::Permanent as i32, &error_code);
            let outputs: Vec<Output> = outputs.into_iter().map(convert::output_from).collect();
            let scene = (!scene.is_empty()).then_some(scene);
            let scheduler = scheduler.clone();
            let store = store.clone();
            let store_checked = store_checked.clone();
            let worker_id = worker_id.to_string();
            return Some(Box::pin(async move {
                let (mut ok, mut error, mut failure) = (ok, error, failure);
                // A worker that writes to another store is caught by its first result; later
                // results of the same session skip the lookup (it costs a stat or a HEAD
                // request per output, a large share of the scheduler's work per task).
                if ok && !store_checked.load(std::sync::atomic::Ordering::Relaxed) {
                    let checked = check_outputs(&store, &outputs).await;
                    if checked.is_ok() && !outputs.is_empty() {
                        store_checked.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let Err(e) = checked {
                        tracing::warn!(worker_id, job_id = %token.job_id, task_id = %token.task_id,
                            attempt = token.attempt, error = %e, "result refused: output missing from the artifact store");
                        (ok, error, failure) = (
                            false,
                            format!("{e} (the worker and the coordinator must share one artifact store: same --artifacts)"),
                            Failure::from_report(false, "output_missing"),
                        );
                    }
                }
                if let Err(e) = scheduler
                    .result(
                        &worker_id,
                        &token,
                        AttemptResult {
                            ok,
                            error,
                            failure,
                            outputs,
                            scene,
                        },
                    )
                    .await
                {
                    tracing::info!(worker_id, job_id = %token.job_id, task_id = %token.task_id,
                        attempt = token.attempt, error = %e, "result rejected");
                }
            }));
        }
        Some(Body::Register(_)) => {
            tracing::warn!(worker_id, "second register on one session ignored");
        }
        Some(Body::Status(s)) if s.resident.len() <= MAX_MODELS => {
            scheduler.worker_status(worker_id, s.resident, s.gpu_free_memory_bytes);
        }
        Some(Body::Status(s)) => {
            tracing::warn!(
                worker_id,
                resident = s.resident.len(),
                "status with too many resident models ignored"
            );
        }
        Some(Body::Drain(_)) if scheduler.worker_shutting_down(worker_id).is_some() => {
            tracing::info!(worker_id, "worker shutting down: draining");
        }
        Some(Body::Drain(_)) => {}
        Some(Body::HandBack(h)) => {
            if let Some(token) = convert::token_from(h.token.as_ref()) {
                match scheduler.hand_back(worker_id, &token, &h.reason, h.preempted) {
                    Ok(()) => {
                        tracing::info!(worker_id, job_id = %token.job_id, task_id = %token.task_id,
                        attempt = token.attempt, reason = %h.reason, preempted = h.preempted,
                        "task handed back")
                    }
                    Err(e) => {
                        tracing::debug!(worker_id, job_id = %token.job_id, task_id = %token.task_id,
                        error = %e, "hand-back rejected")
                    }
                }
            }
        }
        Some(Body::Verified(v)) => answer_check(checks, worker_id, v),
        // Applied in the session loop, in order (see there).
        Some(Body::Checkpoint(_)) => {}
        None => {}
    }
    None
}

/// Hands a worker's answer to the VerifyContent call waiting for it.
fn answer_check(checks: &SharedChecks, worker_id: &str, v: v1::ContentVerified) {
    let Some(reply) = checks.lock().replies.remove(&v.request_id) else {
        tracing::debug!(
            worker_id,
            request_id = v.request_id,
            "answer to no pending content check ignored"
        );
        return;
    };
    // The caller may have given up (timeout, client gone): nothing to do then.
    let _ = reply.send(VerifyOutcome {
        ours: v.ours,
        job_id: (!v.job_id.is_empty()).then_some(v.job_id),
        watermark_confidence: v.watermark_confidence,
        manifest_valid: v.manifest_valid,
        video_error: (!v.video_error.is_empty()).then_some(v.video_error),
        worker_id: worker_id.to_string(),
    });
}

/// Each output exists in the coordinator's artifact store with its reported size.
async fn check_outputs(store: &ArtifactStore, outputs: &[Output]) -> Result<(), ArtifactError> {
    for o in outputs {
        store.check(&o.uri, o.bytes).await?;
    }
    Ok(())
}
