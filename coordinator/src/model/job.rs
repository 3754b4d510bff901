//! Jobs: the validated spec, the lifecycle state, and the durable record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use reelfarm_domain::Sampler;

use super::task::{Output, TaskDef};

/// A job id: 16 lowercase hex characters (64 bits). The first 11 are the creation time in
/// milliseconds, so ids sort by age (listing and pagination use that order); the last 5 are
/// random. The whole id is the payload of the video watermark.
pub type JobId = String;

/// Length of a [`JobId`].
pub const JOB_ID_LEN: usize = 16;

/// Makes a new job id for a job created at `created_ms`.
pub fn new_job_id(created_ms: u64) -> JobId {
    let random: u32 = rand::random::<u32>() & 0xf_ffff;
    format!("{:011x}{:05x}", created_ms & 0xfff_ffff_ffff, random)
}

/// True when `s` has the shape of a [`JobId`].
pub fn is_job_id(s: &str) -> bool {
    s.len() == JOB_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Priority class; higher classes are dispatched first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    Low,
    Normal,
    High,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::High];
    /// Lower-case name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// What to generate, validated, with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub prompt: String,
    pub duration_seconds: f64,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub steps: u32,
    pub sampler: Sampler,
    pub audio: bool,
    pub priority: Priority,
    pub tenant: String,
    pub labels: BTreeMap<String, String>,
    /// An open model instead of the reference pipeline. Absent in records written before
    /// model jobs existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
}

/// The open-model part of a spec (see `JobSpec.model` in job.proto).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The model's folder name on the workers.
    pub name: String,
    /// Its family as the workers registered it, e.g. "wan2.1-t2v" (decides the rules).
    pub family: String,
    pub negative_prompt: String,
    pub guidance_scale: f64,
    /// Physics-guided (video-to-video) with this strength, or plain text-to-video.
    pub guide_strength: Option<f64>,
}

impl ModelSpec {
    /// What determines the text embeddings: jobs with the same key share one TEXT_ENCODE
    /// result (A/B variants of a prompt with different seeds encode once). Hex SHA-256.
    pub fn text_key(&self, prompt: &str) -> String {
        let canonical = serde_json::json!({
            "model": self.name,
            "prompt": prompt,
            "negative_prompt": self.negative_prompt,
        });
        reelfarm_artifacts::sha256_hex(canonical.to_string().as_bytes())
    }
}

/// Bumped when what a content key covers changes.
const CONTENT_KEY_VERSION: u32 = 1;

impl JobSpec {
    /// What determines the job's artifacts: two specs with the same key render the same
    /// clip (the pipeline is deterministic given the seed), so a finished job's outputs can
    /// serve the second (a cache hit). Covers every field that reaches the pipeline, not
    /// priority or labels; scoped to the tenant (a tenant is never handed another tenant's
    /// artifacts) and to this release (a new pipeline renders anew). Hex SHA-256.
    pub fn content_key(&self) -> String {
        let canonical = serde_json::json!({
            "key_version": CONTENT_KEY_VERSION,
            "release": env!("CARGO_PKG_VERSION"),
            "tenant": self.tenant,
            "prompt": self.prompt,
            "duration_seconds": self.duration_seconds,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "steps": self.steps,
            "sampler": self.sampler,
            "audio": self.audio,
            "model": self.model,
        });
        reelfarm_artifacts::sha256_hex(canonical.to_string().as_bytes())
    }

    /// Frames in the clip ([`reelfarm_domain::frame_count`]: the worker renders exactly
    /// these, by the same rule).
    pub fn frame_count(&self) -> u32 {
        reelfarm_domain::frame_count(self.duration_seconds, self.fps)
    }
}

/// Job lifecycle: QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
    /// Lower-case name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// The durable record of a job: written once at submission (with its plan) and rewritten
/// when the job reaches a terminal state. Task completions are stored beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    /// QUEUED while not terminal (RUNNING is derived from task progress), else terminal.
    pub state: JobState,
    pub idempotency_key: Option<String>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub error: Option<String>,
    /// The committed artifacts, set when SUCCEEDED.
    pub outputs: Vec<Output>,
    /// The plan: the job's tasks in dependency order.
    pub tasks: Vec<TaskDef>,
    /// Terminal, and the files of its uncommitted attempts were deleted from the artifact
    /// store (see `scheduler::collector`). Absent in records written before it existed.
    #[serde(default)]
    pub artifacts_swept: bool,
    /// A cache hit: the job ran no tasks; its outputs are this earlier job's, whose spec
    /// had the same content key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<JobId>,
    /// Created while an identical job (this one) was running: it follows that job's render
    /// (see the farm's `merges`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<JobId>,
    /// What the coordinator changed to fit the model's rules (Job.adjustments).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjustments: Vec<String>,
    /// Why a FAILED job failed, as a code (Job.error_code): a worker's permanent error
    /// code, or "attempts_exhausted".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}
