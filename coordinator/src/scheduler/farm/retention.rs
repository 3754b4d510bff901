//! Retention: the coordinator keeps the newest `retain_finished` finished jobs (memory and
//! store) and forgets older ones, so memory and etcd stay bounded under sustained load.
//! A forgotten job answers NOT_FOUND, and its idempotency key may be used again.

use super::*;

impl Farm {
    /// Notes that a job (already in `jobs`) reached a terminal state, in finishing order:
    /// retention's list, the artifact sweep queue unless it was swept (see `sweeps`), and,
    /// when it SUCCEEDED, the result cache's index (see `cached_result`).
    pub(super) fn note_finished(&mut self, job_id: &str) {
        self.finished.push_back(job_id.to_string());
        let Some(job) = self.jobs.get(job_id) else {
            return;
        };
        let finished_ms = job.record.finished_ms.unwrap_or_else(now_ms);
        let (swept, content_key) = (
            job.record.artifacts_swept,
            (job.record.state == JobState::Succeeded).then(|| job.record.spec.content_key()),
        );
        if let Some(key) = content_key {
            self.by_content.insert(key, job_id.to_string());
        }
        if !swept {
            self.queue_sweep(job_id, finished_ms);
        }
    }

    /// Forgets the oldest finished jobs beyond the retention limit, at most `max` per call;
    /// returns the deletions to make durable.
    pub fn evict_finished(&mut self, max: usize) -> Vec<Write> {
        let mut writes = Vec::new();
        while self.finished.len() > self.config.retain_finished && writes.len() < max {
            let Some(id) = self.finished.pop_front() else {
                break;
            };
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            if !job.record.state.is_terminal() {
                continue;
            }
            let job = self.jobs.remove(&id).expect("checked above");
            self.job_order.remove(&id);
            if job.record.state == JobState::Succeeded {
                // Only SUCCEEDED jobs are in the index (see `note_finished`).
                let content_key = job.record.spec.content_key();
                if self.by_content.get(&content_key) == Some(&id) {
                    self.by_content.remove(&content_key);
                }
            }
            if let Some(key) = &job.text_key {
                self.text.forget(key, &id);
            }
            let idempotency = crate::state::idempotency_scope(&job.record);
            if let Some(k) = &idempotency {
                self.idempotency.remove(k);
            }
            writes.push(Write::Forget {
                job_id: id,
                idempotency,
            });
        }
        if !writes.is_empty() {
            self.metrics.jobs_forgotten.inc_by(writes.len() as u64);
        }
        writes
    }
}
