//! The task bodies of a model job (see the coordinator's planner):
//!
//! | task        | reads                               | writes                               |
//! |-------------|-------------------------------------|--------------------------------------|
//! | TEXT_ENCODE | (another job's embeddings to reuse) | `text`: prompt (+ negative) embeddings |
//! | DENOISE     | text, and the plan when guided      | `latents`: the clip's denoised latents |
//! | DECODE      | latents                             | `segment`: the clip as one H.264 chunk, `model-info` |
//!
//! What passes between them is safetensors (f32), so any worker serving the model can take
//! the next task. DECODE watermarks every frame and encodes the clip exactly as a reference
//! segment, so ASSEMBLE muxes, signs and posters it unchanged; its `model-info` output names
//! the model and its weights' hash for the manifest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use reelfarm_models::wan::pipeline::{
    from_safetensors, to_safetensors, BatchClip, Checkpoint, DenoiseParams, DenoiseStart,
    SamplerKind, TextEmbeddings,
};
use reelfarm_models::wan::sampling::StepState;

use super::host::{LoadedModel, ModelHost};
use crate::pipeline::plan::Plan;
use crate::pipeline::{guide, media, provenance, ClipSpec, Frame, PipelineError, Progress};
use crate::pipeline::{Sampler, TaskContext};

/// The open-model part of an assignment, decoded and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelTask {
    pub name: String,
    pub negative_prompt: String,
    pub guidance_scale: f64,
    /// Physics-guided (video-to-video) with this strength.
    pub guide_strength: Option<f64>,
}

pub use crate::pipeline::provenance::manifest::ModelProvenance;

/// A model computation's error: out of device memory (the driver's
/// CUDA_ERROR_OUT_OF_MEMORY, which candle passes on by name, or an allocator's "out of
/// memory"), which no retry of the same task fits either, or an engine error.
fn model_error(e: impl std::fmt::Display) -> PipelineError {
    let text = e.to_string();
    if text.contains("CUDA_ERROR_OUT_OF_MEMORY")
        || text.to_ascii_lowercase().contains("out of memory")
    {
        PipelineError::OutOfMemory(format!("model: {text}"))
    } else {
        PipelineError::Engine(format!("model: {text}"))
    }
}

fn sampler_kind(s: Sampler) -> Result<SamplerKind, PipelineError> {
    match s {
        Sampler::UniPc => Ok(SamplerKind::UniPc),
        Sampler::FlowEuler => Ok(SamplerKind::FlowEuler),
        other => Err(PipelineError::InvalidInput(format!(
            "sampler {other:?} is not a flow-matching sampler"
        ))),
    }
}

/// TEXT_ENCODE. With `reused` (another job's committed embeddings of the same model,
/// prompt and negative prompt), checks they are embeddings of this model's width and
/// returns `None`: the caller hands that output back instead of encoding again.
pub fn text_encode(
    host: &ModelHost,
    spec: &ClipSpec,
    task: &ModelTask,
    reused: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, PipelineError> {
    if let Some(bytes) = reused {
        match read_text(bytes) {
            Ok(_) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "shared text embeddings unreadable; encoding again")
            }
        }
    }
    let m = host.get(&task.name).map_err(PipelineError::ModelLoad)?;
    let text = m
        .model
        .encode_text(&spec.prompt, &task.negative_prompt, task.guidance_scale)
        .map_err(model_error)?;
    let mut tensors = vec![("prompt", &text.prompt)];
    if let Some(n) = &text.negative {
        tensors.push(("negative", n));
    }
    to_safetensors(&tensors).map(Some).map_err(model_error)
}

fn read_text(bytes: &[u8]) -> Result<TextEmbeddings, PipelineError> {
    let mut t = from_safetensors(bytes, &Device::Cpu).map_err(model_error)?;
    let prompt = t
        .remove("prompt")
        .ok_or_else(|| PipelineError::InvalidInput("text embeddings without \"prompt\"".into()))?;
    Ok(TextEmbeddings {
        prompt,
        negative: t.remove("negative"),
    })
}

/// When a DENOISE saves checkpoints, and where they go.
pub struct Checkpointing<'a> {
    /// After every this many steps (0: never on a count).
    pub every_steps: u32,
    /// At the first step ending this long after the last checkpoint.
    pub every: Option<Duration>,
    /// Set by the coordinator's PreemptTask: checkpoint at the next step and stop.
    pub preempt: &'a AtomicBool,
    /// Stores a checkpoint taken after `step` steps and reports it.
    pub save: &'a mut dyn FnMut(u32, Vec<u8>) -> Result<(), String>,
}

/// One clip of a DENOISE: its spec and model parameters, its inputs (text embeddings, the
/// plan when guided, `resume`: a checkpoint of an earlier attempt of the task), and how it
/// reports and is steered.
pub struct DenoiseClip<'a> {
    pub spec: &'a ClipSpec,
    pub task: &'a ModelTask,
    pub text: &'a [u8],
    pub plan: Option<&'a [u8]>,
    pub resume: Option<&'a [u8]>,
    pub progress: Progress<'a>,
    pub cancel: &'a AtomicBool,
    pub checkpoints: Checkpointing<'a>,
}

/// DENOISE: each clip's latents, from noise or (guided) from the plan's simulation, or from
/// its checkpoint; saves checkpoints on the way as each clip's `checkpoints` says, and
/// stops a clip with [`PipelineError::Preempted`] after the one a preemption asked for.
/// Several clips of one model run as one batch (`--max-batch`): one transformer
/// forward per step for all of them, each clip's latents equal to its denoise alone (the
/// model's `denoise_batch`). One result per clip, in order: a clip whose inputs are
/// unusable, or that is cancelled or preempted, ends alone and the others go on. Clips may
/// be at different steps (a resumed one batches with fresh ones); clips of different shapes
/// cannot share a forward and run one shape after another, with a warning.
pub fn denoise_batch(
    host: &ModelHost,
    clips: Vec<DenoiseClip<'_>>,
) -> Vec<Result<Vec<u8>, PipelineError>> {
    let Some(first) = clips.first() else {
        return Vec::new();
    };
    let m = match host.get(&first.task.name) {
        Ok(m) => m,
        Err(e) => {
            return clips
                .iter()
                .map(|_| Err(PipelineError::ModelLoad(e.clone())))
                .collect()
        }
    };
    let mut results: Vec<Option<Result<Vec<u8>, PipelineError>>> =
        clips.iter().map(|_| None).collect();
    // Every clip's inputs, read first: a clip whose inputs fail ends there, alone.
    let mut ready = Vec::new();
    let (mut texts, mut params, mut guides, mut resumes) = (vec![], vec![], vec![], vec![]);
    let mut handlers = Vec::new();
    for (i, clip) in clips.into_iter().enumerate() {
        let prepared = if clip.task.name == m.name {
            prepare(&m, &clip)
        } else {
            Err(PipelineError::InvalidInput(format!(
                "a batch of model {:?} holds a clip of model {:?}",
                m.name, clip.task.name
            )))
        };
        match prepared {
            Ok((text, p, guide, resume)) => {
                ready.push(i);
                texts.push(text);
                params.push(p);
                guides.push(guide);
                resumes.push(resume);
                handlers.push(ClipSteps::new(clip));
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    // Clips share a run when their latents have one shape (the coordinator batches one
    // shape, so a second run is a mismatch of its making, warned about).
    let shape = |k: usize| {
        let p: &DenoiseParams = &params[k];
        (p.frames, p.height, p.width)
    };
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for k in 0..ready.len() {
        match runs.iter_mut().find(|r| shape(r[0]) == shape(k)) {
            Some(run) => run.push(k),
            None => runs.push(vec![k]),
        }
    }
    if runs.len() > 1 {
        tracing::warn!(
            clips = ready.len(),
            runs = runs.len(),
            "batch members differ in shape; running them in separate runs"
        );
    }
    for run in runs {
        let batch: Vec<BatchClip<'_>> = run
            .iter()
            .map(|&k| BatchClip {
                text: &texts[k],
                params: &params[k],
                start: match (resumes[k].take(), &guides[k]) {
                    (Some(c), _) => DenoiseStart::Resume(c),
                    (None, Some((latents, strength))) => DenoiseStart::Guide {
                        latents,
                        strength: *strength,
                    },
                    (None, None) => DenoiseStart::Noise,
                },
            })
            .collect();
        let outcome = m.model.denoise_batch(batch, |j, state| {
            let k = run[j];
            handlers[k].step(&m, &params[k], state)
        });
        match outcome {
            Ok(latents) => {
                for (&k, latents) in run.iter().zip(latents) {
                    let h = &mut handlers[k];
                    results[ready[k]] = Some(match latents {
                        Ok(l) => {
                            (h.progress)(h.total, h.total);
                            to_safetensors(&[("latents", &l)]).map_err(model_error)
                        }
                        Err(e) => Err(h.error(e)),
                    });
                }
            }
            Err(e) => {
                let text = format!("{e:#}");
                for &k in &run {
                    results[ready[k]] = Some(Err(model_error(&text)));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every clip ends in a result"))
        .collect()
}

/// A clip's denoise inputs: its text embeddings, parameters, guide latents with the
/// strength (guided), and the checkpoint it resumes (when it has a usable one).
type PreparedClip = (
    TextEmbeddings,
    DenoiseParams,
    Option<(Tensor, f64)>,
    Option<Checkpoint>,
);

fn prepare(m: &LoadedModel, clip: &DenoiseClip<'_>) -> Result<PreparedClip, PipelineError> {
    let (spec, task) = (clip.spec, clip.task);
    let text = read_text(clip.text)?;
    if task.guidance_scale > 1.0 && text.negative.is_none() {
        return Err(PipelineError::InvalidInput(
            "guided denoise without negative embeddings".into(),
        ));
    }
    let params = DenoiseParams {
        frames: spec.frame_count() as usize,
        height: spec.height as usize,
        width: spec.width as usize,
        steps: spec.steps as usize,
        sampler: sampler_kind(spec.sampler)?,
        guidance_scale: task.guidance_scale,
        seed: spec.seed,
    };
    // A checkpoint this attempt cannot use (another worker version's format, a damaged
    // file) costs the steps it saved, not the task: the run from the start gives the same
    // latents.
    let resume = clip
        .resume
        .and_then(|bytes| match m.model.read_checkpoint(bytes, &params) {
            Ok(c) => {
                tracing::info!(step = c.step(), "resuming the denoise from its checkpoint");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "checkpoint unusable; denoising from the start");
                None
            }
        });
    let guide = match (&resume, task.guide_strength, clip.plan) {
        (Some(_), _, _) | (None, None, _) => None,
        (None, Some(s), Some(plan)) => Some((guide_latents(m, spec, plan)?, s)),
        (None, Some(_), None) => {
            return Err(PipelineError::InvalidInput(
                "guided denoise without the plan".into(),
            ))
        }
    };
    Ok((text, params, guide, resume))
}

/// One clip's side of the denoising loop: progress, cancellation, checkpoints and the
/// preemption that stops it after one.
struct ClipSteps<'a> {
    progress: Progress<'a>,
    cancel: &'a AtomicBool,
    checkpoints: Checkpointing<'a>,
    total: u64,
    last_saved: Instant,
    preempted_at: Option<u32>,
}

impl<'a> ClipSteps<'a> {
    fn new(clip: DenoiseClip<'a>) -> Self {
        Self {
            total: u64::from(clip.spec.steps),
            progress: clip.progress,
            cancel: clip.cancel,
            checkpoints: clip.checkpoints,
            last_saved: Instant::now(),
            preempted_at: None,
        }
    }

    /// After each step: reports it; stops the clip when cancelled; saves a checkpoint when
    /// one is due, and stops after it when preempted.
    fn step(
        &mut self,
        m: &LoadedModel,
        params: &DenoiseParams,
        s: &StepState,
    ) -> candle_core::Result<()> {
        (self.progress)(s.done as u64, self.total);
        if self.cancel.load(Ordering::Relaxed) {
            candle_core::bail!("cancelled");
        }
        let c = &mut self.checkpoints;
        let preempting = c.preempt.load(Ordering::Relaxed);
        let due = preempting
            || (c.every_steps > 0 && s.done.is_multiple_of(c.every_steps as usize))
            || c.every.is_some_and(|d| self.last_saved.elapsed() >= d);
        if due && s.done < s.total {
            let saved = m
                .model
                .checkpoint(s, params)
                .map_err(|e| format!("{e:#}"))
                .and_then(|bytes| (c.save)(s.done as u32, bytes));
            match saved {
                Ok(()) => {
                    self.last_saved = Instant::now();
                    if preempting {
                        self.preempted_at = Some(s.done as u32);
                        candle_core::bail!("preempted");
                    }
                }
                // The run goes on; a preemption waits for a checkpoint that is saved.
                Err(e) => tracing::warn!(step = s.done, error = %e, "checkpoint not saved"),
            }
        }
        Ok(())
    }

    /// What the clip's run ended with, when it ended early.
    fn error(&self, e: anyhow::Error) -> PipelineError {
        if let Some(step) = self.preempted_at {
            PipelineError::Preempted { step }
        } else if self.cancel.load(Ordering::Relaxed) {
            PipelineError::Cancelled
        } else {
            model_error(format!("{e:#}"))
        }
    }
}

/// The plan's guide render of every frame, encoded by the model's VAE.
fn guide_latents(m: &LoadedModel, spec: &ClipSpec, plan: &[u8]) -> Result<Tensor, PipelineError> {
    let plan = Plan::from_bytes(plan)?;
    let (w, h, frames) = (
        spec.width as usize,
        spec.height as usize,
        spec.frame_count(),
    );
    let mut data = vec![0f32; 3 * frames as usize * h * w];
    let plane = frames as usize * h * w;
    for f in 0..frames {
        let g = guide::render(&plan, f)?;
        if g.width as usize != w || g.height as usize != h {
            return Err(PipelineError::InvalidInput(format!(
                "the plan renders {}x{}, the spec is {w}x{h}",
                g.width, g.height
            )));
        }
        for (p, rgb) in g.rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                // [0, 1] → [-1, 1], channels first: [c][frame][y][x].
                data[c * plane + f as usize * h * w + p] = rgb[c] * 2.0 - 1.0;
            }
        }
    }
    let video =
        Tensor::from_vec(data, (1, 3, frames as usize, h, w), &Device::Cpu).map_err(model_error)?;
    m.model.encode_video(&video).map_err(model_error)
}

/// DECODE: latents → watermarked frames → one H.264 chunk, and the model's provenance.
pub fn decode(
    host: &ModelHost,
    spec: &ClipSpec,
    ctx: &TaskContext,
    task: &ModelTask,
    latents: &[u8],
    progress: Progress<'_>,
) -> Result<(Vec<u8>, ModelProvenance), PipelineError> {
    let m = host.get(&task.name).map_err(PipelineError::ModelLoad)?;
    let latents = from_safetensors(latents, &Device::Cpu)
        .map_err(model_error)?
        .remove("latents")
        .ok_or_else(|| PipelineError::InvalidInput("latents file without \"latents\"".into()))?;
    // Chunk by chunk to 8-bit frames: the clip is never held as floats.
    let mut frames = Vec::with_capacity(spec.frame_count() as usize);
    m.model
        .decode_chunks(&latents, |chunk| {
            frames.extend(to_frames(&chunk).map_err(|e| candle_core::Error::Msg(e.to_string()))?);
            Ok(())
        })
        .map_err(model_error)?;
    if frames.len() != spec.frame_count() as usize {
        return Err(PipelineError::Engine(format!(
            "the VAE decoded {} frames, the clip has {}",
            frames.len(),
            spec.frame_count()
        )));
    }
    for (i, frame) in frames.iter_mut().enumerate() {
        provenance::watermark::embed(frame, &ctx.job_id, &ctx.farm_secret, i as u32);
    }
    progress(1, 1);
    let chunk = media::encode_segment(spec, &frames)?;
    let info = ModelProvenance {
        name: m.name.clone(),
        family: reelfarm_domain::model_rules::WAN21_T2V.into(),
        weights_sha256: m.weights_sha256.clone(),
        sampler: format!("{:?}", spec.sampler),
        steps: spec.steps,
        guidance_scale: task.guidance_scale,
        negative_prompt: task.negative_prompt.clone(),
        guide_strength: task.guide_strength,
    };
    Ok((chunk, info))
}

/// A decoded video `[1, 3, frames, h, w]` in [-1, 1] → RGB8 frames.
fn to_frames(video: &Tensor) -> Result<Vec<Frame>, PipelineError> {
    let (_, c, n, h, w) = video.dims5().map_err(model_error)?;
    if c != 3 {
        return Err(PipelineError::Engine(format!(
            "the VAE decoded {c} channels, not 3"
        )));
    }
    let values: Vec<f32> = video
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(model_error)?;
    let plane = n * h * w;
    Ok((0..n)
        .map(|f| {
            let mut frame = Frame::new(w as u32, h as u32);
            for p in 0..h * w {
                for ch in 0..3 {
                    let v = values[ch * plane + f * h * w + p];
                    frame.rgb[p * 3 + ch] = ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
                }
            }
            frame
        })
        .collect())
}
