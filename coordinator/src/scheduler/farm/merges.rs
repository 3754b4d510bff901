//! Identical running jobs merged into one render. A job submitted while an unfinished job
//! of the same tenant has the same content key (the same prompt, seed, size, steps,
//! sampler, audio and model parameters: `JobSpec::content_key`) follows that job instead
//! of rendering: it is stored with `merged_into` naming it and its tasks held. When the
//! leader SUCCEEDS, each follower is made SUCCEEDED with the leader's outputs
//! (`cached_from` names the leader, whose job id the watermark and manifest carry, as for
//! a result-cache hit). When the leader fails or is cancelled, its first follower renders
//! itself and the others follow it: a follower never shares a leader's failure.
//!
//! Only without `--no-result-cache` (the scheduler asks for a twin only then). Unlike the
//! result cache, model jobs merge too: both run on the farm's workers at the same time,
//! under the same model folders. In memory, rebuilt after a failover from `merged_into`:
//! a follower whose leader is no longer running renders itself.

use super::*;

impl Farm {
    /// The running job new jobs with `content_key` can follow (see the module docs).
    pub(crate) fn running_twin(&self, content_key: &str) -> Option<JobId> {
        let id = self.running_by_content.get(content_key)?;
        self.jobs
            .get(id)
            .is_some_and(|j| !j.record.state.is_terminal() && j.pending.is_none())
            .then(|| id.clone())
    }

    /// At insertion of unfinished `entry`: it follows `merged_into` while that job still
    /// runs (its ready tasks held), or else is a job others with its content key follow.
    pub(super) fn join_merge(&mut self, entry: &mut JobEntry) {
        let leader = entry.record.merged_into.clone().filter(|l| {
            self.jobs
                .get(l)
                .is_some_and(|j| !j.record.state.is_terminal() && j.following.is_none())
        });
        match leader {
            Some(leader) => {
                hold(entry);
                self.followers
                    .entry(leader.clone())
                    .or_default()
                    .push(entry.record.id.clone());
                entry.following = Some(leader);
            }
            None => {
                let key = entry.record.spec.content_key();
                self.running_by_content
                    .insert(key.clone(), entry.record.id.clone());
                entry.content_key = Some(key);
            }
        }
    }

    /// Leader `job_id` ended in `state`: its followers get its outputs (as commits the
    /// scheduler runs, see [`Farm::take_deferred_commits`]) or render themselves.
    pub(super) fn settle_followers(&mut self, job_id: &str, state: JobState) {
        if let Some(key) = self.jobs.get_mut(job_id).and_then(|j| j.content_key.take()) {
            if self.running_by_content.get(&key).map(String::as_str) == Some(job_id) {
                self.running_by_content.remove(&key);
            }
        }
        let Some(followers) = self.followers.remove(job_id) else {
            return;
        };
        let followers: Vec<JobId> = followers
            .into_iter()
            .filter(|f| {
                self.jobs.get(f).is_some_and(|j| {
                    !j.record.state.is_terminal() && j.following.as_deref() == Some(job_id)
                })
            })
            .collect();
        if state == JobState::Succeeded {
            let outputs = self.jobs[job_id].record.outputs.clone();
            for f in followers {
                let job = self.jobs.get_mut(&f).expect("filtered above");
                job.pending = Some(Pending::Finishing);
                let mut record = job.record.clone();
                record.state = JobState::Succeeded;
                record.finished_ms = Some(now_ms());
                record.outputs = outputs.clone();
                record.cached_from = Some(job_id.to_string());
                // Its files are the leader's; it has none of its own to sweep.
                record.artifacts_swept = true;
                self.metrics.jobs_merged.inc();
                self.deferred.push(Commit {
                    writes: vec![Write::Job(Box::new(record))],
                    after: AfterCommit::Merged {
                        job_id: f,
                        from: job_id.to_string(),
                        outputs: outputs.clone(),
                    },
                });
            }
            return;
        }
        // The first renders itself; the rest follow it.
        let mut rest = followers.into_iter();
        let Some(first) = rest.next() else {
            return;
        };
        self.release_follower(&first);
        let others: Vec<JobId> = rest.collect();
        for f in &others {
            if let Some(j) = self.jobs.get_mut(f) {
                j.following = Some(first.clone());
                j.touch();
            }
        }
        if !others.is_empty() {
            self.followers.insert(first, others);
        }
    }

    /// A follower's write of the leader's outputs is durable (`Ok`): it SUCCEEDED; or it
    /// could not be written: it renders itself.
    pub(super) fn finish_merged(
        &mut self,
        job_id: &str,
        from: String,
        outputs: Vec<Output>,
        result: Result<(), String>,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        job.pending = None;
        match result {
            Ok(()) => {
                job.record.outputs = outputs;
                job.record.cached_from = Some(from);
                job.record.artifacts_swept = true;
                job.following = None;
                self.apply_terminal(job_id, JobState::Succeeded, None, None);
            }
            Err(_) => self.release_follower(job_id),
        }
    }

    /// The follower `job_id` renders itself from now on.
    fn release_follower(&mut self, job_id: &str) {
        let Some(mut job) = self.jobs.remove(job_id) else {
            return;
        };
        job.following = None;
        let key = job.record.spec.content_key();
        self.running_by_content
            .insert(key.clone(), job_id.to_string());
        job.content_key = Some(key);
        let now = Instant::now();
        for i in 0..job.tasks.len() {
            let t = &mut job.tasks[i];
            if t.state == TaskState::Blocked && t.deps_left == 0 {
                t.state = TaskState::Ready;
                t.ready_at = now;
                enqueue(
                    &mut self.ready,
                    &mut self.text,
                    &self.metrics,
                    &mut job,
                    i as u32,
                );
            }
        }
        job.touch();
        self.jobs.insert(job_id.to_string(), job);
    }

    /// Commits that transitions made without a caller to return them to (followers of a
    /// leader that succeeded): the scheduler runs them after the commit that caused them.
    pub(crate) fn take_deferred_commits(&mut self) -> Vec<Commit> {
        std::mem::take(&mut self.deferred)
    }
}

/// A follower's ready tasks wait (Blocked, their dependencies met) while it follows.
fn hold(entry: &mut JobEntry) {
    for t in entry.tasks.iter_mut() {
        if t.state == TaskState::Ready {
            t.state = TaskState::Blocked;
        }
    }
}
