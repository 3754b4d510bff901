//! The reference generation pipeline: what a worker runs for each task kind.
//!
//! A job is split by the coordinator into tasks; each task kind has one entry point here,
//! synchronous and CPU/GPU heavy (the agent calls them from `spawn_blocking`):
//!
//! | task          | entry point            | reads                     | writes                 |
//! |---------------|------------------------|---------------------------|------------------------|
//! | PLAN          | [`run_plan`]           | the spec                  | plan (bytes) + scene   |
//! | VIDEO_SEGMENT | [`run_segment`]        | plan                      | one encoded chunk      |
//! | AUDIO         | [`run_audio`]          | plan                      | the audio track        |
//! | ASSEMBLE      | [`run_assemble`]       | plan, chunks, audio       | video, poster, manifest|
//!
//! Stages, one module each: [`scene`] (prompt → scene spec), [`plan`] (scene + physics →
//! transforms and contact events), [`guide`] (renders the simulated scene as the
//! conditioning image), [`diffusion`] (noise → frames in `steps` sampler steps),
//! [`audio`] (contact events → sound), [`media`] (encoding and muxing), [`provenance`]
//! (watermark and signed manifest). [`bench`] times every stage of one clip.
//!
//! Every entry point is deterministic in (spec, seed): frame `i` is the same whichever
//! segment and worker renders it (shard invariance).

pub(crate) mod audio;
pub mod bench;
pub(crate) mod diffusion;
#[cfg(test)]
mod e2e_tests;
pub(crate) mod frame;
pub(crate) mod guide;
pub mod media;
pub mod plan;
pub mod provenance;
pub mod scene;
pub(crate) mod spec;

use std::ops::Range;
use std::sync::atomic::AtomicBool;

pub use bench::{bench_stages, StageTimings};
pub use frame::Frame;
pub use spec::{ClipSpec, Sampler};

use crate::engine::Engine;

/// Everything a pipeline stage can fail with; the agent reports it as the task's error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("cancelled")]
    Cancelled,
    /// Stopped for the coordinator's preemption after saving a checkpoint at `step`.
    #[error("preempted after step {step} (checkpoint saved)")]
    Preempted { step: u32 },
    #[error("engine: {0}")]
    Engine(String),
    #[error("media: {0}")]
    Media(String),
    /// An open model could not be loaded (its files are broken or missing): no retry of
    /// the task on this worker's folder can succeed.
    #[error("model load: {0}")]
    ModelLoad(String),
    /// The device ran out of memory running one task (batch 1): a retry cannot fit either.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("{0}")]
    Other(String),
}

/// Per-task context that is not part of the spec.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// The job this task belongs to (embedded in the watermark and the manifest).
    pub job_id: String,
    /// The farm secret: keys the watermark and the manifest signature.
    pub farm_secret: Vec<u8>,
}

/// Progress callback: `(done, total)` in units of frame-diffusion steps (or the stage's own
/// unit); called often, must be cheap.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Output of a PLAN task.
pub struct PlanOutput {
    /// The serialized [`plan::Plan`], input of every other task of the job.
    pub bytes: Vec<u8>,
    /// Human-readable JSON of what was understood of the prompt (shown in `Job.scene`).
    pub scene_json: String,
}

/// One file produced by ASSEMBLE.
pub struct Artifact {
    /// "video", "poster", "manifest", ...
    pub kind: &'static str,
    /// File name inside the job's artifact folder, e.g. "video.mp4".
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// PLAN: prompt → scene spec → physics simulation.
pub fn run_plan(spec: &ClipSpec) -> Result<PlanOutput, PipelineError> {
    let plan = plan::make_plan(spec)?;
    Ok(PlanOutput {
        bytes: plan.to_bytes(),
        scene_json: plan.scene_json(),
    })
}

/// VIDEO_SEGMENT: frames `frames` of the clip, diffused, watermarked and encoded as one chunk.
///
/// Precisely, the chunk holds the GOPs that start inside `frames`
/// ([`media::owned_frames`]): over the segments of a clip that is every frame exactly once,
/// and the assembled file is then the same bytes whatever the segmentation. A segment in
/// which no GOP starts returns an empty chunk, which ASSEMBLE skips.
pub fn run_segment(
    spec: &ClipSpec,
    ctx: &TaskContext,
    plan_bytes: &[u8],
    frames: Range<u32>,
    engine: &dyn Engine,
    progress: Progress<'_>,
    cancel: &AtomicBool,
) -> Result<Vec<u8>, PipelineError> {
    if frames.is_empty() || frames.end > spec.frame_count() {
        return Err(PipelineError::InvalidInput(format!(
            "frame range {frames:?} outside 0..{}",
            spec.frame_count()
        )));
    }
    let owned = media::owned_frames(frames, spec.frame_count());
    if owned.is_empty() {
        return Ok(Vec::new());
    }
    let plan = plan::Plan::from_bytes(plan_bytes)?;
    let mut rendered =
        diffusion::render_frames(spec, &plan, owned.clone(), engine, progress, cancel)?;
    for (offset, frame) in rendered.iter_mut().enumerate() {
        provenance::watermark::embed(
            frame,
            &ctx.job_id,
            &ctx.farm_secret,
            owned.start + offset as u32,
        );
    }
    media::encode_segment(spec, &rendered)
}

/// AUDIO: the soundtrack of the whole clip from the plan's contact events.
pub fn run_audio(
    spec: &ClipSpec,
    plan_bytes: &[u8],
    progress: Progress<'_>,
) -> Result<Vec<u8>, PipelineError> {
    let plan = plan::Plan::from_bytes(plan_bytes)?;
    let track = audio::synthesize(spec, &plan, progress)?;
    media::encode_audio(spec, &track)
}

/// ASSEMBLE: joins the chunks (in segment order) and the audio into the final artifacts;
/// a model job's manifest names the model (`open_model`).
pub fn run_assemble(
    spec: &ClipSpec,
    ctx: &TaskContext,
    plan_bytes: &[u8],
    segments: &[Vec<u8>],
    audio: Option<&[u8]>,
    open_model: Option<&provenance::manifest::ModelProvenance>,
) -> Result<Vec<Artifact>, PipelineError> {
    let plan = plan::Plan::from_bytes(plan_bytes)?;
    media::assemble(spec, ctx, &plan, segments, audio, open_model)
}
