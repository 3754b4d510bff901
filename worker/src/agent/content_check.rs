//! VerifyContent's check, run here for the coordinator: it decodes the file's video and
//! looks for the farm's watermark and signed manifest
//! ([`crate::pipeline::provenance::verify`]). The coordinator links neither the decoders nor
//! the farm secret, so it hands each check to a worker over the session stream and the
//! answer goes back on the same session (request ids are only unique within one).
//!
//! A check is CPU-heavy (it decodes every frame): it runs on a blocking thread, at most
//! [`CHECKS_AT_ONCE`] at a time, so a burst of checks cannot starve the worker's tasks.

use std::sync::Arc;

use reelfarm_proto::v1;
use tokio::sync::{mpsc, Semaphore};

use crate::pipeline::provenance;

/// Checks running at once on one worker: each takes a core while it decodes; two keep the
/// rest of a GPU worker's cores for its tasks' CPU stages.
pub const CHECKS_AT_ONCE: usize = 2;

/// Runs content checks with the farm secret (see the module docs).
pub struct ContentChecks {
    farm_secret: Vec<u8>,
    permits: Arc<Semaphore>,
}

impl ContentChecks {
    pub fn new(farm_secret: Vec<u8>) -> Self {
        Self {
            farm_secret,
            permits: Arc::new(Semaphore::new(CHECKS_AT_ONCE)),
        }
    }

    /// Checks `request.data` in the background and sends the answer on `session`, the
    /// stream the request came on. If that session has ended by then, the answer is dropped:
    /// the coordinator has already moved the check to another worker.
    pub fn start(
        self: &Arc<Self>,
        request: v1::VerifyContent,
        session: mpsc::Sender<v1::WorkerMessage>,
    ) {
        let checks = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = checks.permits.clone().acquire_owned().await else {
                return; // the semaphore is never closed
            };
            let v1::VerifyContent { request_id, data } = request;
            let secret = checks.farm_secret.clone();
            let answer = tokio::task::spawn_blocking(move || {
                let v = provenance::verify(&data, &secret);
                answer(request_id, v)
            })
            .await;
            match answer {
                Ok(answer) => {
                    let _ = session.send(answer).await;
                }
                // `verify` never fails on bad input; a panic is a bug, and the coordinator's
                // caller gets its answer from another worker or a timeout.
                Err(e) => tracing::error!(request_id, error = %e, "content check panicked"),
            }
        });
    }
}

/// The stream message for the outcome of check `request_id`.
fn answer(request_id: u64, v: provenance::Verification) -> v1::WorkerMessage {
    v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Verified(v1::ContentVerified {
            request_id,
            ours: v.ours,
            job_id: v.job_id.unwrap_or_default(),
            watermark_confidence: v.watermark_confidence,
            manifest_valid: v.manifest_valid,
            video_error: v.video_error.unwrap_or_default(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_of_a_file_that_is_no_video_answers_not_ours_on_its_session() {
        let checks = Arc::new(ContentChecks::new(b"secret".to_vec()));
        let (tx, mut rx) = mpsc::channel(1);
        checks.start(
            v1::VerifyContent {
                request_id: 7,
                data: b"not an mp4".to_vec().into(),
            },
            tx,
        );
        let msg = rx.recv().await.expect("an answer");
        let Some(v1::worker_message::Body::Verified(v)) = msg.body else {
            panic!("expected ContentVerified, got {msg:?}");
        };
        assert_eq!(v.request_id, 7, "the answer names its request");
        assert!(!v.ours && !v.manifest_valid, "garbage is not ours: {v:?}");
        assert!(
            !v.video_error.is_empty(),
            "the answer says why no picture was read: {v:?}"
        );
    }
}
