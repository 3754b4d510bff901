//! VerifyContent on a worker: the provenance check decodes the video (OpenH264) and looks
//! for the farm's keyed watermark, so it runs where the decoders and the farm secret are —
//! on a worker — and the coordinator, which links neither, only chooses the worker, hands
//! it the file over its session stream and waits for the answer.
//!
//! The choice is the connected worker that takes work (not draining or cordoned) with the
//! most free slots, rotating among equals, so checks go to idle workers first. A worker
//! whose session ends before it answers drops the reply (the session's table of pending
//! checks goes with it), and the check moves to another worker, at most
//! [`MAX_VERIFY_TRIES`] in all, within [`VERIFY_TIMEOUT`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::farm::{Farm, ToWorker};
use super::Scheduler;

/// A check decodes up to 64 MiB of H.264 on the worker's CPU: seconds, not minutes (OpenH264
/// decodes hundreds of 1080p frames a second). Two minutes leaves room for a busy worker.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);
/// Workers tried for one check when sessions end under it (a worker restart, a rollout).
pub const MAX_VERIFY_TRIES: usize = 3;

/// One check handed to a worker's session (see `api::worker_service`).
#[derive(Debug)]
pub struct VerifyWork {
    /// The file; cheap to clone (shared), since a retry on another worker sends it again.
    pub data: Bytes,
    /// The worker's answer; dropped unanswered when its session ends.
    pub reply: oneshot::Sender<VerifyOutcome>,
}

/// What a worker found (the worker's `pipeline::provenance::Verification`, over the stream).
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyOutcome {
    pub ours: bool,
    pub job_id: Option<String>,
    pub watermark_confidence: f64,
    pub manifest_valid: bool,
    pub video_error: Option<String>,
    /// The worker that checked (filled in by its session).
    pub worker_id: String,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no connected worker takes work; VerifyContent runs on a worker (the coordinator does not decode video): start or uncordon one")]
    NoWorker,
    #[error("no worker answered the check within {} s", VERIFY_TIMEOUT.as_secs())]
    Timeout,
    #[error("{MAX_VERIFY_TRIES} workers disconnected before answering the check")]
    WorkersLost,
}

/// Rotates the choice among equally free workers.
static NEXT_TURN: AtomicU64 = AtomicU64::new(0);

impl Scheduler {
    /// Checks `data` (an MP4) on a worker; see the module docs.
    pub async fn verify_content(&self, data: Vec<u8>) -> Result<VerifyOutcome, VerifyError> {
        let data = Bytes::from(data);
        let attempt = async {
            let mut tried = HashSet::new();
            for _ in 0..MAX_VERIFY_TRIES {
                let turn = NEXT_TURN.fetch_add(1, Ordering::Relaxed);
                let (worker_id, tx) = self
                    .lock()
                    .verifier(&tried, turn)
                    .ok_or(VerifyError::NoWorker)?;
                let (reply, answer) = oneshot::channel();
                let work = VerifyWork {
                    data: data.clone(),
                    reply,
                };
                if tx.send(ToWorker::Verify(work)).is_ok() {
                    if let Ok(outcome) = answer.await {
                        return Ok(outcome);
                    }
                }
                tracing::info!(
                    worker_id,
                    "worker left before answering a content check; trying another"
                );
                tried.insert(worker_id);
            }
            Err(VerifyError::WorkersLost)
        };
        tokio::time::timeout(VERIFY_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(VerifyError::Timeout))
    }
}

impl Farm {
    /// The worker to run a content check: takes work, not in `skip`, most free slots; `turn`
    /// picks among equals.
    pub(crate) fn verifier(
        &self,
        skip: &HashSet<String>,
        turn: u64,
    ) -> Option<(String, mpsc::UnboundedSender<ToWorker>)> {
        let mut candidates: Vec<(&str, u32, &mpsc::UnboundedSender<ToWorker>)> = self
            .workers_taking_work()
            .filter(|(id, _, _)| !skip.contains(*id))
            .collect();
        let most_free = candidates.iter().map(|c| c.1).max()?;
        candidates.retain(|c| c.1 == most_free);
        // Stable order before the rotation: HashMap iteration order is arbitrary.
        candidates.sort_by_key(|c| c.0);
        let (id, _, tx) = candidates[(turn % candidates.len() as u64) as usize];
        Some((id.to_string(), tx.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::scheduler::WorkerInfo;
    use crate::state::memory::MemoryStore;

    async fn scheduler() -> Arc<Scheduler> {
        let config = Config::in_process(
            "test".into(),
            vec![],
            reelfarm_artifacts::StoreConfig::local("/nonexistent"),
            10,
        );
        Scheduler::recover(
            Arc::new(MemoryStore::new()),
            config.scheduler(),
            Arc::new(Metrics::new()),
        )
        .await
        .expect("a memory store recovers")
    }

    async fn connect(
        scheduler: &Scheduler,
        id: &str,
        slots: u32,
    ) -> mpsc::UnboundedReceiver<ToWorker> {
        let (tx, rx) = mpsc::unbounded_channel();
        let info = WorkerInfo {
            id: id.into(),
            slots,
            ..Default::default()
        };
        scheduler.register_worker(info, tx).await;
        rx
    }

    /// What a worker's session hands back (see `api::worker_service::answer_check`).
    fn outcome(ours: bool, worker_id: &str) -> VerifyOutcome {
        VerifyOutcome {
            ours,
            job_id: None,
            watermark_confidence: 0.0,
            manifest_valid: ours,
            video_error: None,
            worker_id: worker_id.into(),
        }
    }

    #[tokio::test]
    async fn a_check_moves_to_another_worker_when_the_first_leaves_without_answering() {
        let scheduler = scheduler().await;
        // The freer worker is asked first.
        let mut first = connect(&scheduler, "w-first", 4).await;
        let mut second = connect(&scheduler, "w-second", 1).await;
        let check = tokio::spawn({
            let scheduler = scheduler.clone();
            async move { scheduler.verify_content(b"file".to_vec()).await }
        });
        let Some(ToWorker::Verify(work)) = first.recv().await else {
            panic!("the worker with the most free slots was expected to get the check");
        };
        assert_eq!(&work.data[..], b"file", "the worker gets the file");
        drop(work); // its session ended: the reply is dropped unanswered
        let Some(ToWorker::Verify(work)) = second.recv().await else {
            panic!("the check was expected to move to the other worker");
        };
        work.reply
            .send(outcome(true, "w-second"))
            .expect("the caller waits");
        let answer = check.await.expect("no panic").expect("an answer");
        assert!(answer.ours, "{answer:?}");
        assert_eq!(
            answer.worker_id, "w-second",
            "the answer names the worker that checked"
        );
    }

    #[tokio::test]
    async fn a_check_without_a_worker_taking_work_is_refused() {
        let scheduler = scheduler().await;
        assert!(matches!(
            scheduler.verify_content(b"file".to_vec()).await,
            Err(VerifyError::NoWorker)
        ));
        let _drained = connect(&scheduler, "w-drained", 1).await;
        scheduler.worker_shutting_down("w-drained");
        assert!(
            matches!(
                scheduler.verify_content(b"file".to_vec()).await,
                Err(VerifyError::NoWorker)
            ),
            "a draining worker takes no checks"
        );
    }

    #[tokio::test]
    async fn checks_stop_after_three_workers_left_without_answering() {
        let scheduler = scheduler().await;
        let mut workers = Vec::new();
        for i in 0..4 {
            workers.push(connect(&scheduler, &format!("w-{i}"), 1).await);
        }
        let check = tokio::spawn({
            let scheduler = scheduler.clone();
            async move { scheduler.verify_content(b"file".to_vec()).await }
        });
        let mut asked = HashSet::new();
        while asked.len() < MAX_VERIFY_TRIES {
            for (i, rx) in workers.iter_mut().enumerate() {
                if let Ok(ToWorker::Verify(work)) = rx.try_recv() {
                    assert!(asked.insert(i), "worker {i} was asked twice");
                    drop(work);
                }
            }
            tokio::task::yield_now().await;
        }
        let result = check.await.expect("no panic");
        assert!(
            matches!(result, Err(VerifyError::WorkersLost)),
            "after {MAX_VERIFY_TRIES} lost workers the caller is told: {result:?}"
        );
        assert!(
            workers.iter_mut().all(|rx| rx.try_recv().is_err()),
            "no worker is asked after the caller was told"
        );
    }
}
