//! Domain types of the coordinator: what a job and its tasks are, independent of protobuf
//! (converted once at the API edge, see `api::convert`) and of storage (serialized as JSON
//! records by `state`).
//!
//! - [`job`]: [`JobId`], [`JobSpec`] (validated, defaults filled in), [`JobState`], [`JobRecord`].
//! - [`task`]: [`TaskKind`], [`TaskState`], [`TaskDef`] (the plan of one task), [`Output`],
//!   [`AttemptToken`] and [`TaskCompletion`] (a committed result).
//! - [`tenant`]: the rule of a tenant name, one for requests and flags alike.
//! - [`api_key`]: [`ApiKeyRecord`], a client's credential as stored (its secret's hash).

pub mod api_key;
pub mod job;
pub mod task;
pub mod tenant;

pub use api_key::{ApiKeyRecord, KeyRole};
pub use job::{JobId, JobRecord, JobSpec, JobState, ModelSpec, Priority, Sampler};
pub use task::{
    AttemptToken, Output, TaskCheckpoint, TaskCompletion, TaskDef, TaskKind, TaskState,
};

/// Milliseconds since the Unix epoch, the timestamp unit of every record.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
