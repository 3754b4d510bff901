//! Tasks: the units of work a job is planned into, and their results.

use serde::{Deserialize, Serialize};

pub use reelfarm_artifacts::Output;

use super::job::JobId;

/// What a task does (see DESIGN.md, "Data flow of one job").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskKind {
    Plan,
    VideoSegment,
    Audio,
    Assemble,
    /// Model jobs: the prompts through the model's text encoder.
    TextEncode,
    /// Model jobs: the whole clip's latents, denoised.
    Denoise,
    /// Model jobs: the VAE decode, encoded as the clip's one segment.
    Decode,
}

impl TaskKind {
    /// Lower-case name, used as a metric label and in task ids.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Plan => "plan",
            TaskKind::VideoSegment => "segment",
            TaskKind::Audio => "audio",
            TaskKind::Assemble => "assemble",
            TaskKind::TextEncode => "text",
            TaskKind::Denoise => "denoise",
            TaskKind::Decode => "decode",
        }
    }

    /// Runs the job's open model: only a worker serving that model may take it.
    pub fn needs_model(self) -> bool {
        matches!(
            self,
            TaskKind::TextEncode | TaskKind::Denoise | TaskKind::Decode
        )
    }
}

/// Task lifecycle: BLOCKED (deps) → READY → ASSIGNED(worker, attempt) → RUNNING(progress) →
/// DONE | FAILED; CANCELLED with its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Blocked,
    Ready,
    Assigned,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// The plan of one task: fixed at submission, stored with the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDef {
    /// Unique within the job: "plan", "segment-003", "audio", "assemble"; model jobs have
    /// "text", "denoise" and "decode" in place of the segments.
    pub id: String,
    pub kind: TaskKind,
    /// Frames [frame_start, frame_end) for segments; the whole clip otherwise.
    pub frame_start: u32,
    pub frame_end: u32,
    pub segment_index: u32,
    /// Indices (into the job's task list) of the tasks whose outputs this one reads.
    pub deps: Vec<u32>,
    /// Relative cost, for the job's progress figure.
    pub weight: f64,
}

/// Identifies one assignment of one task (fencing): a report is accepted only while its
/// token is the task's current one. `term` is the coordinator's leadership term.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptToken {
    pub job_id: JobId,
    pub task_id: String,
    pub attempt: u64,
    pub term: u64,
}

/// A committed task result: durable once written, never overwritten.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskCompletion {
    pub job_id: JobId,
    pub task_index: u32,
    pub attempt: u64,
    pub term: u64,
    pub worker_id: String,
    pub outputs: Vec<Output>,
    /// PLAN only: what the farm understood of the prompt (JSON).
    pub scene: Option<String>,
    pub finished_ms: u64,
}

/// A denoising task's latest checkpoint, kept durably so a failover resumes from it too.
/// Overwritten by each later one; meaningless once the task is done (recovery ignores it
/// then) and deleted with its job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    pub job_id: JobId,
    pub task_index: u32,
    /// Steps done: the attempt that resumes starts with the next one.
    pub step: u32,
    pub output: Output,
    /// The attempt that wrote it.
    pub attempt: u64,
    pub term: u64,
    pub worker_id: String,
    pub written_ms: u64,
}
