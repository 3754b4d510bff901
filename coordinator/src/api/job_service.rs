//! `reelfarm.v1.JobService`: what clients call. Validates at the edge, then hands domain
//! types to the [`Scheduler`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use reelfarm_artifacts::ArtifactStore;
use reelfarm_proto::limits::VERIFY_MAX_BYTES;
use reelfarm_proto::v1;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::{Caller, Gate, RateClass};
use super::{convert, status, validate};
use crate::metrics::Metrics;
use crate::model::KeyRole;
use crate::role::RoleHandle;

/// WatchJob sends at most one snapshot per interval (the latest), so a job reporting every
/// diffusion step does not flood slow clients. 50 ms keeps progress bars smooth.
const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(50);

/// See the module docs.
pub struct JobApi {
    role: RoleHandle,
    metrics: Arc<Metrics>,
    /// Where VerifyContent reads files named by `uri`.
    store: Arc<ArtifactStore>,
    gate: Arc<Gate>,
}

impl JobApi {
    pub fn new(
        role: RoleHandle,
        metrics: Arc<Metrics>,
        store: Arc<ArtifactStore>,
        gate: Arc<Gate>,
    ) -> Self {
        Self {
            role,
            metrics,
            store,
            gate,
        }
    }

    /// The job `id` if `caller` may see it; NOT_FOUND, worded as for a job that does not
    /// exist, if it is another tenant's (so ids of other tenants' jobs reveal nothing).
    fn visible_job(
        &self,
        caller: &Caller,
        id: &str,
        with_tasks: bool,
    ) -> Result<crate::scheduler::JobView, Status> {
        self.role
            .scheduler()?
            .get_job(id, with_tasks)
            .filter(|v| caller.sees(&v.spec.tenant))
            .ok_or_else(|| status::job_not_found(id))
    }

    /// The bytes a VerifyContent request names: inline, or a file of the artifact store.
    async fn content(
        &self,
        caller: &Caller,
        req: v1::VerifyContentRequest,
    ) -> Result<Vec<u8>, Status> {
        use v1::verify_content_request::Source;
        match req.source {
            None => Err(Status::invalid_argument("data or uri is required")),
            Some(Source::Data(d)) if d.is_empty() => {
                Err(Status::invalid_argument("data must not be empty"))
            }
            Some(Source::Data(d)) if d.len() > VERIFY_MAX_BYTES => {
                Err(Status::invalid_argument(format!(
                    "data must be at most {VERIFY_MAX_BYTES} bytes, got {}",
                    d.len()
                )))
            }
            Some(Source::Data(d)) => Ok(d),
            // A confined key reads by URI only its own tenant's outputs; any other file of
            // the store answers as a missing one.
            Some(Source::Uri(uri))
                if caller.scope().is_some()
                    && self
                        .store
                        .job_of_uri(&uri)
                        .and_then(|job| self.visible_job(caller, &job, false).ok())
                        .is_none() =>
            {
                Err(status::artifact(
                    reelfarm_artifacts::ArtifactError::NotFound {
                        uri,
                        store: self.store.location().to_string(),
                    },
                ))
            }
            Some(Source::Uri(uri)) => self
                .store
                .read_uri(&uri, VERIFY_MAX_BYTES as u64)
                .await
                .map_err(status::artifact),
        }
    }

    fn observe<T>(&self, method: &str, r: Result<T, Status>) -> Result<T, Status> {
        let code = match &r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.metrics
            .grpc_requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        r
    }
}

/// Stable lower-case names of gRPC codes, for the metric label.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl v1::job_service_server::JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let r = async {
            let caller = self
                .gate
                .admit(&request, KeyRole::Submit, RateClass::Submit)?;
            let mut job = validate::submit_job(request.get_ref())?;
            let requested = request.get_ref().spec.as_ref().map_or("", |s| &s.tenant);
            job.spec.tenant = caller.job_tenant("spec.tenant", requested, &job.spec.tenant)?;
            let scheduler = self.role.scheduler()?;
            if job.spec.model.is_some() {
                validate::model_rules(&mut job, &scheduler.model_families(), "")?;
            }
            let views = scheduler.submit(vec![job]).await?;
            let job = views.first().map(convert::job);
            Ok(Response::new(v1::SubmitJobResponse { job }))
        }
        .await;
        self.observe("SubmitJob", r)
    }

    async fn submit_batch(
        &self,
        request: Request<v1::SubmitBatchRequest>,
    ) -> Result<Response<v1::SubmitBatchResponse>, Status> {
        let r = async {
            let caller = self
                .gate
                .admit(&request, KeyRole::Submit, RateClass::Submit)?;
            let mut jobs = validate::submit_batch(request.get_ref())?;
            for (i, (job, req)) in jobs.iter_mut().zip(&request.get_ref().jobs).enumerate() {
                let requested = req.spec.as_ref().map_or("", |s| &s.tenant);
                job.spec.tenant = caller.job_tenant(
                    &format!("jobs[{i}].spec.tenant"),
                    requested,
                    &job.spec.tenant,
                )?;
            }
            let scheduler = self.role.scheduler()?;
            if jobs.iter().any(|j| j.spec.model.is_some()) {
                let families = scheduler.model_families();
                for (i, job) in jobs.iter_mut().enumerate() {
                    validate::model_rules(job, &families, &format!("jobs[{i}]."))?;
                }
            }
            let views = scheduler.submit(jobs).await?;
            Ok(Response::new(v1::SubmitBatchResponse {
                jobs: views.iter().map(convert::job).collect(),
            }))
        }
        .await;
        self.observe("SubmitBatch", r)
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let r = (|| {
            let caller = self.gate.admit(&request, KeyRole::Read, RateClass::Read)?;
            let id = validate::job_id("id", &request.get_ref().id)?;
            let view = self.visible_job(&caller, &id, true)?;
            Ok(Response::new(v1::GetJobResponse {
                job: Some(convert::job(&view)),
            }))
        })();
        self.observe("GetJob", r)
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let r = (|| {
            let caller = self.gate.admit(&request, KeyRole::Read, RateClass::Read)?;
            let mut q = validate::list_jobs(request.get_ref())?;
            if let Some(own) = caller.scope() {
                match &q.tenant {
                    Some(t) if t != own => {
                        return Err(self.gate.deny_other_tenant(&caller, "tenant", t))
                    }
                    _ => q.tenant = Some(own.to_string()),
                }
            }
            let (views, next) = self.role.scheduler()?.list_jobs(
                |v| {
                    q.tenant.as_ref().is_none_or(|t| &v.spec.tenant == t)
                        && q.state.is_none_or(|s| v.state == s)
                        && q.label.as_ref().is_none_or(|(k, val)| match val {
                            None => v.spec.labels.contains_key(k),
                            Some(val) => v.spec.labels.get(k) == Some(val),
                        })
                },
                q.after.as_deref(),
                q.page_size,
                q.with_tasks,
            );
            Ok(Response::new(v1::ListJobsResponse {
                jobs: views.iter().map(convert::job).collect(),
                next_page_token: next.unwrap_or_default(),
            }))
        })();
        self.observe("ListJobs", r)
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let r = (|| {
            let caller = self.gate.admit(&request, KeyRole::Read, RateClass::Read)?;
            let id = validate::job_id("id", &request.get_ref().id)?;
            self.visible_job(&caller, &id, false)?;
            let scheduler = self.role.scheduler()?;
            let mut changes = scheduler
                .watch_job(&id)
                .ok_or_else(|| status::job_not_found(&id))?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                loop {
                    changes.borrow_and_update();
                    let Some(view) = scheduler.get_job(&id, true) else {
                        break;
                    };
                    let terminal = view.state.is_terminal();
                    let msg = v1::WatchJobResponse {
                        job: Some(convert::job(&view)),
                    };
                    if tx.send(Ok(msg)).await.is_err() || terminal {
                        break;
                    }
                    tokio::time::sleep(WATCH_MIN_INTERVAL).await;
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() { break },
                        _ = tx.closed() => break,
                    }
                }
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as WatchStream
            ))
        })();
        self.observe("WatchJob", r)
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let r = async {
            let caller = self
                .gate
                .admit(&request, KeyRole::Submit, RateClass::Submit)?;
            let id = validate::job_id("id", &request.get_ref().id)?;
            self.visible_job(&caller, &id, false)?;
            let view = self.role.scheduler()?.cancel_job(&id).await?;
            Ok(Response::new(v1::CancelJobResponse {
                job: Some(convert::job(&view)),
            }))
        }
        .await;
        self.observe("CancelJob", r)
    }

    async fn verify_content(
        &self,
        request: Request<v1::VerifyContentRequest>,
    ) -> Result<Response<v1::VerifyContentResponse>, Status> {
        let r = async {
            let caller = self.gate.admit(&request, KeyRole::Read, RateClass::Read)?;
            let scheduler = self.role.scheduler()?;
            let data = self.content(&caller, request.into_inner()).await?;
            // Decoding and watermark detection run on a worker (see `scheduler::verify`).
            let v = scheduler
                .verify_content(data)
                .await
                .map_err(status::verify)?;
            tracing::debug!(worker_id = %v.worker_id, ours = v.ours, "content checked");
            // The file's bytes say it is ours; which job made it is said only to callers
            // who may see that job.
            let job_id = v
                .job_id
                .filter(|id| self.visible_job(&caller, id, false).is_ok())
                .unwrap_or_default();
            Ok(Response::new(v1::VerifyContentResponse {
                ours: v.ours,
                job_id,
                watermark_confidence: v.watermark_confidence,
                manifest_valid: v.manifest_valid,
                video_error: v.video_error.unwrap_or_default(),
            }))
        }
        .await;
        self.observe("VerifyContent", r)
    }
}
