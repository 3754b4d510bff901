//! Read-only views of jobs and workers, handed to the API layer for conversion.

use crate::model::{JobSpec, JobState, Output, TaskKind, TaskState};

use super::farm::WorkerInfo;

/// A job as a client sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub id: String,
    pub state: JobState,
    pub spec: JobSpec,
    pub progress: f64,
    pub total_tasks: u32,
    pub blocked: u32,
    pub ready: u32,
    pub running: u32,
    pub done: u32,
    pub failed: u32,
    pub retries: u32,
    /// Empty when the view was made without task details.
    pub tasks: Vec<TaskRunView>,
    pub outputs: Vec<Output>,
    pub error: String,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub idempotency_key: String,
    pub scene: String,
    /// Why an unfinished job is not moving, when known (e.g. no live worker).
    pub waiting: String,
    /// A cache hit: the earlier job whose outputs this one has.
    pub cached_from: String,
    pub adjustments: Vec<String>,
    /// Job.error_code.
    pub error_code: String,
    /// Job.merged_into.
    pub merged_into: String,
}

/// One task of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRunView {
    pub id: String,
    pub kind: TaskKind,
    pub state: TaskState,
    pub frame_start: u32,
    pub frame_end: u32,
    pub worker_id: String,
    pub attempt: u64,
    pub progress: f64,
    pub error: String,
    pub failures: u32,
    pub retry_reason: String,
    pub steps_per_second: f64,
    /// See TaskView in job.proto.
    pub checkpoint_step: u32,
    pub resumed_from_step: u32,
    pub preemptions: u32,
    /// DENOISE: clips its current (or last) attempt ran with in one batch; 0 before.
    pub batch_size: u32,
    pub outputs: Vec<Output>,
}

/// A connected worker.
#[derive(Clone, Debug)]
pub struct WorkerView {
    pub info: WorkerInfo,
    /// Takes no new tasks (cordoned, or shutting down).
    pub draining: bool,
    /// Drained by an operator, durably (until UncordonWorker).
    pub cordoned: bool,
    pub running: u32,
    pub connected_ms: u64,
    pub tasks_done: u64,
    /// Why it was cordoned as unhealthy (WorkerInfo.health), if it was.
    pub health: String,
}
