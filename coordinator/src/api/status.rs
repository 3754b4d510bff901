//! The one place where coordinator errors become gRPC statuses.
//!
//! INVALID_ARGUMENT names the field and its bound; RESOURCE_EXHAUSTED carries a retry hint;
//! NOT_FOUND names the id; FAILED_PRECONDITION explains the refusal; UNAVAILABLE means the
//! state backend could not make the request durable (nothing was acknowledged), or the
//! artifact store could not be read, or no worker could run a content check;
//! DEADLINE_EXCEEDED that a worker took too long to answer one.

use reelfarm_artifacts::ArtifactError;
use tonic::Status;

use super::validate::FieldError;
use crate::scheduler::verify::VerifyError;
use crate::scheduler::{CancelError, SubmitError};
use crate::state::StoreError;

impl From<FieldError> for Status {
    fn from(e: FieldError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl From<super::validate::ModelRefusal> for Status {
    fn from(e: super::validate::ModelRefusal) -> Self {
        Status::failed_precondition(e.to_string())
    }
}

/// Reading a VerifyContent `uri` from the artifact store.
pub fn artifact(e: ArtifactError) -> Status {
    match e {
        ArtifactError::NotFound { .. } => Status::not_found(format!("uri: {e}")),
        ArtifactError::BadUri { .. } | ArtifactError::TooLarge { .. } => {
            Status::invalid_argument(format!("uri: {e}"))
        }
        e => Status::unavailable(format!("uri: {e}")),
    }
}

/// A VerifyContent check that no worker answered.
pub fn verify(e: VerifyError) -> Status {
    match e {
        VerifyError::Timeout => Status::deadline_exceeded(e.to_string()),
        VerifyError::NoWorker | VerifyError::WorkersLost => Status::unavailable(e.to_string()),
    }
}

impl From<SubmitError> for Status {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Exhausted { retry_after, .. }
            | SubmitError::TenantExhausted { retry_after, .. } => {
                exhausted(e.to_string(), retry_after)
            }
            SubmitError::Store(s) => store(s),
        }
    }
}

impl From<CancelError> for Status {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::NotFound(_) => Status::not_found(e.to_string()),
            CancelError::Finishing(_) => Status::failed_precondition(e.to_string()),
            CancelError::Busy(_) => Status::unavailable(e.to_string()),
            CancelError::Store(s) => store(s),
        }
    }
}

/// A state-backend failure: the request was not made durable.
pub fn store(e: StoreError) -> Status {
    match e {
        StoreError::Fenced { .. } => {
            Status::unavailable(format!("this coordinator is no longer the leader: {e}"))
        }
        other => Status::unavailable(format!("state backend: {other}")),
    }
}

/// RESOURCE_EXHAUSTED with the retry hint: gRPC's server pushback header (honoured by
/// retry policies), and the HTTP-style `retry-after` in whole seconds for scripts.
pub fn exhausted(message: String, retry_after: std::time::Duration) -> Status {
    let mut status = Status::resource_exhausted(message);
    let ms = retry_after.as_millis().to_string();
    let secs = retry_after.as_secs_f64().ceil().max(1.0).to_string();
    if let (Ok(ms), Ok(secs)) = (ms.parse(), secs.parse()) {
        status.metadata_mut().insert("grpc-retry-pushback-ms", ms);
        status.metadata_mut().insert("retry-after", secs);
    }
    status
}

pub fn job_not_found(id: &str) -> Status {
    Status::not_found(format!("job {id} not found"))
}
