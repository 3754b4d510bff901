//! Why the scheduler refused a request: one error per operation that can be refused,
//! each also carrying the store's error when the durable write failed. `api::status`
//! turns them into gRPC statuses.

use std::time::Duration;

use crate::state::StoreError;

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    #[error("too many active jobs: {active} active, {requested} requested, limit {limit}; retry in {} s", retry_after.as_secs())]
    Exhausted {
        active: usize,
        requested: usize,
        limit: usize,
        /// When room for the request is likely, from the recent rate of finishing jobs.
        retry_after: Duration,
    },
    #[error("tenant {tenant:?} has too many active jobs: {active} active, {requested} requested, limit {limit} per tenant (--max-queued-jobs-per-tenant); retry in {} s", retry_after.as_secs())]
    TenantExhausted {
        tenant: String,
        active: usize,
        requested: usize,
        limit: usize,
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a cancel was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CancelError {
    #[error("job {0} not found")]
    NotFound(String),
    #[error("job {0} is completing and can no longer be cancelled")]
    Finishing(String),
    #[error("job {0} is changing state; try again")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why draining or lifting a drain was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CordonError {
    #[error("worker {0} is not connected")]
    NotConnected(String),
    #[error("worker {0} is neither connected nor drained")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
