//! The worker's running attempts and the results it is not sure arrived, across sessions.
//!
//! Tasks belong to the worker, not to one session: when the stream breaks (the coordinator
//! restarted, or another replica took over) running tasks go on, and the next session offers
//! them ([`TaskRegistry::offered`]) together with the results that may not have reached a
//! coordinator (`RegisterWorker.running`). The coordinator adopts those it has not given to
//! anyone else and cancels the rest ([`TaskRegistry::cancel`]); results are sent again when a
//! session attaches and accepted only under a current token, so nothing is lost and nothing
//! is committed twice. On shutdown the registry stops taking tasks
//! ([`TaskRegistry::start_draining`]) and hands back what still runs
//! ([`TaskRegistry::hand_back_all`]).
//!
//! Attempts are keyed by `(job_id, task_id)`: a newer attempt of the same task replaces the
//! older one, and an old attempt ending late finds it is no longer ours
//! ([`TaskRegistry::release`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reelfarm_proto::v1;
use tokio::sync::{mpsc, AcquireError, OwnedSemaphorePermit, Semaphore};

/// A result sent on a session that stayed up this long afterwards was received.
const RESEND_WINDOW: Duration = Duration::from_secs(10);

/// `(job_id, task_id)`: one running attempt per task.
type Key = (String, String);

struct RunningTask {
    token: v1::AttemptToken,
    cancel: Arc<AtomicBool>,
    preempt: Arc<AtomicBool>,
    /// The coordinator's id of the batch it runs in (`Assignment.batch`), if any.
    batch: Option<u64>,
}

/// A result not yet known to have reached a coordinator.
struct Unconfirmed {
    token: v1::AttemptToken,
    message: v1::WorkerMessage,
    /// When it was written to a live session; None while no session was up.
    sent: Option<Instant>,
}

/// The worker's tasks, across sessions (see the module docs).
pub(crate) struct TaskRegistry {
    running: Mutex<HashMap<Key, RunningTask>>,
    unconfirmed: Mutex<Vec<Unconfirmed>>,
    /// The current session's outbound stream.
    outbox: Mutex<Option<mpsc::Sender<v1::WorkerMessage>>>,
    slots: Arc<Semaphore>,
    draining: AtomicBool,
}

/// A poisoned lock only means another task panicked mid-update; the maps stay usable, and a
/// worker that stopped reporting over it would lose every running task.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(t: &v1::AttemptToken) -> Key {
    (t.job_id.clone(), t.task_id.clone())
}

impl TaskRegistry {
    /// An empty registry running at most `slots` tasks at once.
    pub(crate) fn new(slots: u32) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::default(),
            unconfirmed: Mutex::default(),
            outbox: Mutex::default(),
            slots: Arc::new(Semaphore::new(slots as usize)),
            draining: AtomicBool::new(false),
        })
    }

    /// Tasks running now.
    pub(crate) fn running_count(&self) -> usize {
        lock(&self.running).len()
    }

    /// The attempts to offer a coordinator at registration.
    pub(crate) fn offered(&self) -> Vec<v1::AttemptToken> {
        let mut tokens: Vec<_> = lock(&self.running)
            .values()
            .map(|r| r.token.clone())
            .collect();
        tokens.extend(lock(&self.unconfirmed).iter().map(|u| u.token.clone()));
        tokens
    }

    /// Which running attempts run as one batch (`RegisterWorker.running_batches`): a
    /// coordinator adopting them counts one slot per batch, as the worker runs them.
    pub(crate) fn offered_batches(&self) -> Vec<v1::RunningBatch> {
        let mut batches: HashMap<(u64, u64), Vec<v1::AttemptToken>> = HashMap::new();
        for r in lock(&self.running).values() {
            if let Some(id) = r.batch {
                batches
                    .entry((r.token.term, id))
                    .or_default()
                    .push(r.token.clone());
            }
        }
        batches
            .into_values()
            .map(|members| v1::RunningBatch { members })
            .collect()
    }

    /// A session registered: it carries everything from now on, starting with the results
    /// not known to have arrived.
    pub(crate) fn attach(&self, out: mpsc::Sender<v1::WorkerMessage>) {
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
    pub(crate) fn detach(&self) {
        *lock(&self.outbox) = None;
        for u in lock(&self.unconfirmed).iter_mut() {
            u.sent = None;
        }
    }

    /// Sends on the current session, if any; progress is dropped when there is none.
    pub(crate) fn send(&self, msg: v1::WorkerMessage) -> bool {
        let out = lock(&self.outbox).clone();
        out.is_some_and(|o| o.try_send(msg).is_ok())
    }

    /// Whether the worker is shutting down and takes no new tasks.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records `token` as running, stopped through `cancel`, asked to checkpoint and stop
    /// through `preempt`, in the coordinator's `batch` if it runs in one; replaces an older
    /// attempt of the same task.
    pub(crate) fn track(
        &self,
        token: v1::AttemptToken,
        cancel: Arc<AtomicBool>,
        preempt: Arc<AtomicBool>,
        batch: Option<u64>,
    ) {
        lock(&self.running).insert(
            key(&token),
            RunningTask {
                token,
                cancel,
                preempt,
                batch,
            },
        );
    }

    /// The coordinator asks this attempt to checkpoint and hand itself back; false when it
    /// is not running here (ended meanwhile).
    pub(crate) fn preempt(&self, token: &v1::AttemptToken) -> bool {
        match lock(&self.running).get(&key(token)) {
            Some(r) if r.token.attempt == token.attempt && r.token.term == token.term => {
                r.preempt.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Waits for a free slot; the task runs while the permit is held.
    pub(crate) async fn slot(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.slots.clone().acquire_owned().await
    }

    /// The attempt `token` ended: forgets it and returns true if it was still ours, false if
    /// it was handed back or replaced by a newer attempt of the same task meanwhile.
    pub(crate) fn release(&self, token: &v1::AttemptToken) -> bool {
        let k = key(token);
        let mut running = lock(&self.running);
        match running.get(&k) {
            Some(r) if r.token.attempt == token.attempt && r.token.term == token.term => {
                running.remove(&k);
                true
            }
            _ => false,
        }
    }

    /// A task ended with `message` (its result): kept until known to have arrived. Listed
    /// before it is sent, so a session that registers meanwhile sends it too (a duplicate
    /// is rejected as stale by the coordinator; a result lost would be work lost).
    pub(crate) async fn finish(&self, token: v1::AttemptToken, message: v1::WorkerMessage) {
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
    pub(crate) fn cancel(&self, token: &v1::AttemptToken) -> bool {
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
    pub(crate) fn abandon_all(&self) -> usize {
        let running = lock(&self.running);
        for r in running.values() {
            r.cancel.store(true, Ordering::Relaxed);
        }
        lock(&self.unconfirmed).clear();
        running.len()
    }

    /// Graceful shutdown, first half: take no new tasks and tell the coordinator.
    pub(crate) fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            self.send(drain_message());
        }
    }

    /// Graceful shutdown, second half: hands every still-running task back to the
    /// coordinator (READY at once elsewhere) and stops it here. Returns how many.
    pub(crate) fn hand_back_all(&self, reason: &str) -> usize {
        let running: Vec<(Key, RunningTask)> = lock(&self.running).drain().collect();
        for (_, r) in &running {
            r.cancel.store(true, Ordering::Relaxed);
            self.send(hand_back_message(r.token.clone(), reason, false));
        }
        running.len()
    }

    /// Results written to a session that may still be in flight.
    pub(crate) fn unsent_results(&self) -> usize {
        lock(&self.unconfirmed)
            .iter()
            .filter(|u| u.sent.is_none())
            .count()
    }
}

/// Gives the attempt `token` back to the coordinator, which makes it READY at once elsewhere.
/// `preempted`: it answers the coordinator's PreemptTask, after its checkpoint.
pub(crate) fn hand_back_message(
    token: v1::AttemptToken,
    reason: &str,
    preempted: bool,
) -> v1::WorkerMessage {
    v1::WorkerMessage {
        body: Some(v1::worker_message::Body::HandBack(v1::HandBack {
            token: Some(token),
            reason: reason.to_string(),
            preempted,
        })),
    }
}

fn drain_message() -> v1::WorkerMessage {
    v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Drain(v1::Drain {})),
    }
}
