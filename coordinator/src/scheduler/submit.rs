//! Submission: known idempotency keys answer with the job they created, admission
//! reserves room, and each new job is planned (or served from the result cache, born
//! SUCCEEDED with an earlier job's outputs), stored, then inserted into the farm.

use std::time::{Duration, Instant};

use super::{JobView, Scheduler, SubmitError};
use crate::model::{job::new_job_id, now_ms, JobRecord, JobSpec, JobState};
use crate::planner;
use crate::state::{CreateOutcome, StoreError};

/// How long a submission that lost an idempotency race waits for the winner to appear.
const IDEMPOTENCY_WAIT: Duration = Duration::from_secs(5);

/// A job to create.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// The validated spec, defaults filled in.
    pub spec: JobSpec,
    /// The client's key: a later submission of the tenant with the same key gets this job.
    pub idempotency_key: Option<String>,
    /// What validation changed to fit the model's rules, recorded in the job.
    pub adjustments: Vec<String>,
}

impl Scheduler {
    /// Plans and stores new jobs, then queues them. A job whose idempotency key was used
    /// before is not created again: the first job is returned in its place. Nothing is
    /// returned before every job is durable.
    pub(crate) async fn submit(&self, jobs: Vec<NewJob>) -> Result<Vec<JobView>, SubmitError> {
        // Known idempotency keys answer without a write.
        let mut results: Vec<Option<JobView>> = {
            let farm = self.lock();
            jobs.iter()
                .map(|j| {
                    j.idempotency_key
                        .as_ref()
                        .and_then(|k| farm.job_for_key(&j.spec.tenant, k))
                        .and_then(|id| farm.job_view(&id, true))
                })
                .collect()
        };
        let new = results.iter().filter(|r| r.is_none()).count();
        let mut new_by_tenant: std::collections::HashMap<String, usize> = Default::default();
        for (job, _) in jobs.iter().zip(&results).filter(|(_, r)| r.is_none()) {
            *new_by_tenant.entry(job.spec.tenant.clone()).or_default() += 1;
        }
        self.admit(new, &new_by_tenant)?;
        let term = self.term();
        let creates = jobs
            .iter()
            .zip(results.iter())
            .filter(|(_, r)| r.is_none())
            .map(|(job, _)| self.create_one(term, job));
        let created = futures::future::join_all(creates).await;
        self.release(new, &new_by_tenant);
        let mut created = created.into_iter();
        for slot in results.iter_mut().filter(|r| r.is_none()) {
            let view = created.next().expect("one result per create")?;
            *slot = Some(view);
        }
        self.lock().dispatch();
        Ok(results
            .into_iter()
            .map(|r| r.expect("filled above"))
            .collect())
    }

    async fn create_one(&self, term: u64, job: &NewJob) -> Result<JobView, SubmitError> {
        let content_key = self.result_cache.then(|| job.spec.content_key());
        // Model jobs never come from the result cache: the coordinator knows a model by its
        // folder name only, not by its weights, which an operator may replace under the name.
        let cached = content_key
            .as_ref()
            .filter(|_| job.spec.model.is_none())
            .and_then(|key| self.lock().cached_result(key));
        let tasks = match cached {
            Some(_) => vec![],
            None => planner::plan(&job.spec, self.planner),
        };
        // An identical job running now: this one follows its render (see the farm's
        // `merges`). It keeps its own plan, for the case that job fails.
        let merged_into = content_key
            .as_ref()
            .filter(|_| cached.is_none())
            .and_then(|key| self.lock().running_twin(key));
        loop {
            let created_ms = now_ms();
            let mut record = JobRecord {
                id: new_job_id(created_ms),
                spec: job.spec.clone(),
                state: JobState::Queued,
                idempotency_key: job.idempotency_key.clone(),
                created_ms,
                finished_ms: None,
                error: None,
                outputs: vec![],
                tasks: tasks.clone(),
                artifacts_swept: false,
                cached_from: None,
                merged_into: merged_into.clone(),
                adjustments: job.adjustments.clone(),
                error_code: None,
            };
            if let Some((from, outputs)) = &cached {
                // Born SUCCEEDED with the earlier job's files; it has none of its own to sweep.
                record.state = JobState::Succeeded;
                record.finished_ms = Some(created_ms);
                record.outputs = outputs.clone();
                record.artifacts_swept = true;
                record.cached_from = Some(from.clone());
            }
            let started = Instant::now();
            let outcome = self.store.create_job(term, &record).await;
            self.metrics
                .store_commit_seconds
                .with_label_values(&["create_job"])
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Ok(CreateOutcome::Created) => {
                    let mut farm = self.lock();
                    let id = record.id.clone();
                    let priority = record.spec.priority;
                    farm.insert_job(record, &[]);
                    self.metrics
                        .jobs_submitted
                        .with_label_values(&[priority.as_str()])
                        .inc();
                    match &cached {
                        Some((from, _)) => {
                            self.metrics.cache_hits.inc();
                            self.metrics
                                .jobs_finished
                                .with_label_values(&[JobState::Succeeded.as_str()])
                                .inc();
                            tracing::info!(job_id = %id, cached_from = %from, tenant = %job.spec.tenant,
                                "job submitted and served from the result cache");
                        }
                        None => match &merged_into {
                            Some(leader) => tracing::info!(job_id = %id, merged_into = %leader,
                                tenant = %job.spec.tenant, "job submitted; follows an identical running job"),
                            None => {
                                tracing::info!(job_id = %id, tenant = %job.spec.tenant, "job submitted")
                            }
                        },
                    }
                    return Ok(farm.job_view(&id, true).expect("just inserted"));
                }
                Ok(CreateOutcome::Existing(id)) => return self.wait_for_job(&id).await,
                Err(StoreError::JobExists(_)) => continue,
                Err(e) => return Err(self.store_error(e).into()),
            }
        }
    }

    /// The job that won an idempotency race is inserted right after its write; wait for it.
    async fn wait_for_job(&self, id: &str) -> Result<JobView, SubmitError> {
        let deadline = Instant::now() + IDEMPOTENCY_WAIT;
        loop {
            if let Some(v) = self.lock().job_view(id, true) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(SubmitError::Store(StoreError::Unavailable(format!(
                    "job {id} for this idempotency key is stored but not loaded"
                ))));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
