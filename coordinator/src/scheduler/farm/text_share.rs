//! Shared text encodings: the TEXT_ENCODE tasks of model jobs are content-keyed by
//! (model, prompt, negative prompt) ([`ModelSpec::text_key`]), so A/B variants of one
//! prompt with different seeds run the text encoder once.
//!
//! The first job to queue a key's TEXT_ENCODE task owns the encoding. Until its result is
//! committed, the same key's TEXT_ENCODE tasks of other jobs wait here, READY but not
//! queued. Once it is committed they are queued with the owner's embeddings as an input
//! ("text"), and the worker hands those back as their result after checking their hash,
//! without running the encoder. If the owner's job ends without the encoding, the first
//! waiter takes over. Memory only: after a failover the keys are rebuilt from the restored
//! jobs' committed TEXT_ENCODE results, and a key in flight is encoded again at worst once.

use super::*;
use crate::model::ModelSpec;

/// One key's state.
#[derive(Debug)]
pub(super) enum Share {
    /// `owner`'s TEXT_ENCODE task is queued or running; `waiters` (job, task index) wait.
    Encoding {
        owner: JobId,
        waiters: Vec<(JobId, u32)>,
    },
    /// `owner`'s committed embeddings, which later jobs of the key reuse.
    Done { owner: JobId, outputs: Vec<Output> },
}

/// What `enqueue` does with a TEXT_ENCODE task.
pub(super) enum Gate {
    /// Queue it (it owns the key, or the key's embeddings are committed).
    Queue,
    /// Another job is encoding the key: it waits for that result.
    Wait,
}

/// Text keys → their state.
#[derive(Debug, Default)]
pub(crate) struct TextShares {
    by_key: HashMap<String, Share>,
}

/// The text key of a model job's TEXT_ENCODE task.
pub(super) fn text_key(spec: &JobSpec) -> Option<String> {
    spec.model
        .as_ref()
        .map(|m: &ModelSpec| m.text_key(&spec.prompt))
}

impl TextShares {
    /// Decides whether task `index` (a TEXT_ENCODE task) of `job` may be queued now.
    pub(super) fn gate(&mut self, job: &JobId, index: u32, key: &str) -> Gate {
        match self.by_key.get_mut(key) {
            None => {
                self.by_key.insert(
                    key.to_string(),
                    Share::Encoding {
                        owner: job.clone(),
                        waiters: vec![],
                    },
                );
                Gate::Queue
            }
            Some(Share::Done { .. }) => Gate::Queue,
            Some(Share::Encoding { owner, .. }) if owner == job => Gate::Queue,
            Some(Share::Encoding { waiters, .. }) => {
                let me = (job.clone(), index);
                if !waiters.contains(&me) {
                    waiters.push(me);
                }
                Gate::Wait
            }
        }
    }

    /// The committed embeddings of `key` from another job than `job`, to hand to its task.
    pub(super) fn reusable(&self, key: &str, job: &str) -> Option<&[Output]> {
        match self.by_key.get(key) {
            Some(Share::Done { owner, outputs }) if owner != job => Some(outputs),
            _ => None,
        }
    }

    /// The job whose encoding `job`'s TEXT_ENCODE task waits for, if it waits.
    pub(super) fn waiting_on(&self, key: &str, job: &str) -> Option<&str> {
        match self.by_key.get(key) {
            Some(Share::Encoding { owner, waiters }) if waiters.iter().any(|(j, _)| j == job) => {
                Some(owner)
            }
            _ => None,
        }
    }

    /// `job`'s encoding of `key` is committed: returns the tasks that waited for it.
    pub(super) fn done(
        &mut self,
        key: &str,
        job: &JobId,
        outputs: Vec<Output>,
    ) -> Vec<(JobId, u32)> {
        let previous = self.by_key.insert(
            key.to_string(),
            Share::Done {
                owner: job.clone(),
                outputs,
            },
        );
        match previous {
            Some(Share::Encoding { waiters, .. }) => waiters,
            _ => vec![],
        }
    }

    /// `job` ended: if it owned `key`'s encoding in flight, the key is released and its
    /// waiters returned (the first of them to queue becomes the owner).
    pub(super) fn owner_ended(&mut self, key: &str, job: &str) -> Vec<(JobId, u32)> {
        match self.by_key.get(key) {
            Some(Share::Encoding { owner, .. }) if owner == job => {}
            _ => return vec![],
        }
        match self.by_key.remove(key) {
            Some(Share::Encoding { waiters, .. }) => waiters,
            _ => vec![],
        }
    }

    /// `job` is forgotten (retention): its committed embeddings are no longer offered.
    pub(super) fn forget(&mut self, key: &str, job: &str) {
        if matches!(self.by_key.get(key), Some(Share::Done { owner, .. }) if owner == job) {
            self.by_key.remove(key);
        }
    }

    /// Keys tracked (the tests' view).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}

impl Farm {
    /// Queues the tasks that waited for a shared encoding, where they still wait.
    pub(super) fn release_text_waiters(&mut self, waiters: Vec<(JobId, u32)>) {
        for (job_id, index) in waiters {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let ready = job
                .tasks
                .get(index as usize)
                .is_some_and(|t| t.state == TaskState::Ready && !t.queued);
            if ready && job.pending.is_none() && !job.record.state.is_terminal() {
                enqueue(&mut self.ready, &mut self.text, &self.metrics, job, index);
            }
        }
    }

    /// A model job ended: release its shared encoding if it was still in flight.
    pub(super) fn text_owner_ended(&mut self, job_id: &str) {
        let Some(key) = self.jobs.get(job_id).and_then(|j| j.text_key.clone()) else {
            return;
        };
        let waiters = self.text.owner_ended(&key, job_id);
        self.release_text_waiters(waiters);
    }
}
