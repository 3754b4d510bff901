//! Running what the coordinator assigns: each task in a slot of its own, or the members of
//! one batch (`Assignment.batch`, see `--max-batch`) together in one slot, each member with
//! its own token, progress, checkpoints and result.
//!
//! An assignment runs in the background once a slot is free; one that cannot be decoded is
//! answered at once with a permanent failure, and one that arrives while draining is handed
//! straight back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelfarm_proto::v1;

use super::executor::{decode, to_proto_output, AttemptControl, Executor, Produced, Task};
use super::failure::{TaskFailure, PREEMPTED};
use super::tasks::{hand_back_message, TaskRegistry};

/// Progress messages per task at most this often (the latest step wins).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// Starts the assignments of one message: the members of a batch together, every other
/// one alone. A batch that arrived incomplete (not the `size` members it names) runs its
/// members alone: each result is the same, only slower.
pub(crate) fn start(
    items: Vec<v1::Assignment>,
    executor: &Arc<Executor>,
    tasks: &Arc<TaskRegistry>,
) {
    let mut batches: HashMap<(u64, u64), Vec<v1::Assignment>> = HashMap::new();
    for assignment in items {
        match (&assignment.batch, &assignment.token) {
            (Some(b), Some(token)) if b.size > 1 => batches
                .entry((token.term, b.id))
                .or_default()
                .push(assignment),
            _ => start_task(assignment, executor, tasks),
        }
    }
    for ((_, id), members) in batches {
        let size = members[0].batch.as_ref().map_or(0, |b| b.size) as usize;
        if members.len() == size {
            start_batch(id, members, executor, tasks);
        } else {
            tracing::warn!(
                batch = id,
                size,
                got = members.len(),
                "incomplete batch; running its members alone"
            );
            for m in members {
                start_task(m, executor, tasks);
            }
        }
    }
}

/// An assignment decoded and tracked, ready to wait for its slot.
struct Admitted {
    task: Task,
    cancel: Arc<AtomicBool>,
    preempt: Arc<AtomicBool>,
}

/// Decodes `assignment` and tracks it as running (in `batch`, if one), or answers it at
/// once: an error for an undecodable one, a hand-back while draining.
fn admit(assignment: v1::Assignment, tasks: &TaskRegistry, batch: Option<u64>) -> Option<Admitted> {
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
            return None;
        }
    };
    if tasks.is_draining() {
        // Assigned before the coordinator saw the drain: give it straight back.
        tasks.send(hand_back_message(
            task.token.clone(),
            "worker shutting down",
            false,
        ));
        return None;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let preempt = Arc::new(AtomicBool::new(false));
    tasks.track(task.token.clone(), cancel.clone(), preempt.clone(), batch);
    Some(Admitted {
        task,
        cancel,
        preempt,
    })
}

/// An admitted task about to run: its progress channel (forwarded to the coordinator while
/// it runs) and its control.
struct Starting {
    token: v1::AttemptToken,
    kind: v1::TaskKind,
    cancel: Arc<AtomicBool>,
    forward: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl Starting {
    fn new(
        admitted: Admitted,
        tasks: &Arc<TaskRegistry>,
    ) -> (
        Self,
        Task,
        tokio::sync::watch::Sender<(u64, u64)>,
        AttemptControl,
    ) {
        let Admitted {
            task,
            cancel,
            preempt,
        } = admitted;
        let (progress_tx, progress_rx) = tokio::sync::watch::channel((0u64, 0u64));
        let forward = tokio::spawn(forward_progress(
            progress_rx,
            task.token.clone(),
            tasks.clone(),
        ));
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
        let starting = Self {
            token: task.token.clone(),
            kind: task.kind,
            cancel,
            forward,
            started: Instant::now(),
        };
        (starting, task, progress_tx, control)
    }
}

/// Runs one assignment in its own slot, in the background.
fn start_task(assignment: v1::Assignment, executor: &Arc<Executor>, tasks: &Arc<TaskRegistry>) {
    let Some(admitted) = admit(assignment, tasks, None) else {
        return;
    };
    let (executor, tasks) = (executor.clone(), tasks.clone());
    tokio::spawn(async move {
        let _permit = tasks.slot().await;
        let (starting, task, progress, control) = Starting::new(admitted, &tasks);
        let result = executor.run(task, progress, control).await;
        conclude(starting, result, &executor, &tasks).await;
    });
}

/// Runs the members of batch `id` together in one slot, in the background.
fn start_batch(
    id: u64,
    members: Vec<v1::Assignment>,
    executor: &Arc<Executor>,
    tasks: &Arc<TaskRegistry>,
) {
    let admitted: Vec<Admitted> = members
        .into_iter()
        .filter_map(|m| admit(m, tasks, Some(id)))
        .collect();
    if admitted.is_empty() {
        return;
    }
    let (executor, tasks) = (executor.clone(), tasks.clone());
    tokio::spawn(async move {
        let _permit = tasks.slot().await;
        tracing::info!(batch = id, members = admitted.len(), "running a batch");
        let (starting, runs): (Vec<Starting>, Vec<_>) = admitted
            .into_iter()
            .map(|a| {
                let (s, task, progress, control) = Starting::new(a, &tasks);
                (s, (task, progress, control))
            })
            .unzip();
        let results = executor.run_batch(runs).await;
        for (s, result) in starting.into_iter().zip(results) {
            conclude(s, result, &executor, &tasks).await;
        }
    });
}

/// After an attempt ran: its metrics and log line, then its result (or its hand-back after
/// a preemption) to the coordinator, unless the coordinator no longer wants it.
async fn conclude(
    s: Starting,
    result: Result<Produced, TaskFailure>,
    executor: &Arc<Executor>,
    tasks: &Arc<TaskRegistry>,
) {
    let Starting {
        token,
        kind,
        cancel,
        forward,
        started,
    } = s;
    forward.abort();
    let span = tracing::info_span!("task", job_id = %token.job_id, task_id = %token.task_id,
        attempt = token.attempt);
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
    {
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
