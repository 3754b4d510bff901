//! Frames by diffusion: every frame starts from Gaussian noise and is denoised in
//! `spec.steps` sampler steps, conditioned on the guide render of the simulated scene.
//!
//! # The model
//!
//! Pixels are in data units (RGB `[0, 1]` mapped to `[-1, 1]`). The **prior** of a frame is
//! Gaussian, centred on its guide render `g` ([`super::guide`]) with a diagonal covariance:
//!
//! `x0 ~ N(g, Σ)`, `Σ = diag(τ_p²)` per pixel (shared by R, G, B),
//!
//! where `τ_p` is the texture strength of the surface seen at pixel `p` (material table, times
//! the prompt's style factor). The **forward process** is variance exploding (EDM,
//! Karras et al. 2022): `x_σ = x0 + σ·ε`, `ε ~ N(0, I)`, `σ ∈ [0, σ_max]`; see [`schedule`] for
//! the noise levels (log-SNR and Karras grids) and the three samplers.
//!
//! The **denoiser** is the exact posterior mean of that prior, elementwise because `Σ` is
//! diagonal (Gaussian conditioning):
//!
//! `D(x, σ) = E[x0 | x_σ = x] = g + τ² / (τ² + σ²) · (x − g)`,
//!
//! implemented once in [`crate::engine::kernels::posterior_mean`]. With it the probability-flow
//! ODE `dx/dσ = (x − D)/σ` carries `N(g, Σ + σ_max² I)` exactly onto the prior, so the
//! samplers' outputs are samples of `N(g, Σ)` up to their discretisation error, which the
//! tests measure. Starting from `N(0, σ_max²)` instead of `N(g, σ_max² + τ²)` biases the
//! output mean by `τ/σ_max·g` (< 0.2 % of `g` for τ ≤ 0.16).
//!
//! # Noise and temporal coherence
//!
//! The initial state of frame `k` is `σ_max·z` with, per element,
//! `z = w·s(key_p, c) + sqrt(1 − w²)·n(k, p, c)` ([`crate::engine::kernels::initial_noise`]):
//! `s` is a static field over the scene's surfaces — keyed by the guide's noise key, i.e. the
//! surface point seen — and `n` a per-frame field. Both are keyed by the job seed and global
//! data only (frame index, pixel, surface point), never by the segment, so a frame is the same
//! whichever segment renders it (shard invariance) and a segment boundary is no different
//! from any other pair of frames (no seam). The static part makes a body's texture move with
//! it; the per-frame part adds a little film grain.
//!
//! # Work order
//!
//! The segment's frames are processed in batches (as many as fit [`MAX_BATCH_BYTES`]), each
//! batch step by step: denoise all its frames, update all, report progress
//! (`done, frames × steps`), check cancellation. Batching changes no value: every operation
//! is elementwise and every noise value is keyed globally.

pub mod schedule;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{guide, plan::Plan, ClipSpec, Frame, PipelineError, Progress};
use crate::engine::{kernels, BatchSpec, Engine, EngineError, FrameConditioning};

/// Share of the initial noise's variance that is static (attached to the scene's surfaces):
/// 90 %, leaving a light per-frame grain (10 % of the variance).
pub const STATIC_NOISE_WEIGHT: f32 = 0.948_683_3; // sqrt(0.9)

/// Memory budget of one batch of frames in the engine, bytes. At 56 bytes a pixel (state,
/// guide, two denoiser outputs, variance, key) a 320×180 clip of 240 frames fits in one batch
/// (770 MB would not: 1080p runs ~2 frames a batch).
pub const MAX_BATCH_BYTES: usize = 256 << 20;
/// Bytes of engine memory per pixel and frame: 4 planes of 3 f32, 1 f32 and 1 u64.
const BYTES_PER_PIXEL: usize = 4 * 3 * 4 + 4 + 8;

impl From<EngineError> for PipelineError {
    fn from(e: EngineError) -> Self {
        PipelineError::Engine(e.to_string())
    }
}

/// The conditioning of global frame `frame`: its guide render in data units.
pub fn conditioning(plan: &Plan, frame: u32) -> Result<FrameConditioning, PipelineError> {
    let g = guide::render(plan, frame)?;
    Ok(FrameConditioning {
        frame_index: frame,
        guide: g.rgb.iter().map(|&v| kernels::to_data(v)).collect(),
        prior_var: g.texture_sigma.iter().map(|s| s * s).collect(),
        noise_keys: g.noise_keys,
    })
}

/// Wall time spent in each half of [`render_frames_timed`], seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RenderTimes {
    /// Guide renders (the conditioning of every frame).
    pub guide_s: f64,
    /// Engine work: initial noise, denoiser evaluations, updates, read-back.
    pub sampling_s: f64,
}

/// Renders frames `frames` of the clip (global indices), in order.
pub fn render_frames(
    spec: &ClipSpec,
    plan: &Plan,
    frames: Range<u32>,
    engine: &dyn Engine,
    progress: Progress<'_>,
    cancel: &AtomicBool,
) -> Result<Vec<Frame>, PipelineError> {
    let mut times = RenderTimes::default();
    render_frames_timed(spec, plan, frames, engine, progress, cancel, &mut times)
}

/// [`render_frames`], adding the time spent in guide rendering and in sampling to `times`
/// (for the benchmark; the frames are the same).
pub fn render_frames_timed(
    spec: &ClipSpec,
    plan: &Plan,
    frames: Range<u32>,
    engine: &dyn Engine,
    progress: Progress<'_>,
    cancel: &AtomicBool,
    times: &mut RenderTimes,
) -> Result<Vec<Frame>, PipelineError> {
    if frames.end as usize > plan.poses.len() || frames.is_empty() {
        return Err(PipelineError::InvalidInput(format!(
            "frames {frames:?} outside the plan's 0..{}",
            plan.poses.len()
        )));
    }
    if spec.width != plan.camera.width || spec.height != plan.camera.height || spec.steps == 0 {
        return Err(PipelineError::InvalidInput(format!(
            "spec {}x{} with {} steps does not match the plan's {}x{} (steps must be ≥ 1)",
            spec.width, spec.height, spec.steps, plan.camera.width, plan.camera.height
        )));
    }
    let sigmas = schedule::sigmas(spec.sampler, spec.steps);
    let updates = schedule::updates(spec.sampler, &sigmas);
    let batch_spec = BatchSpec {
        width: spec.width,
        height: spec.height,
        seed: spec.seed,
        sigma_init: schedule::SIGMA_MAX as f32,
        static_noise_weight: STATIC_NOISE_WEIGHT,
    };
    let pixels = batch_spec.pixels();
    let per_batch = (MAX_BATCH_BYTES / (pixels * BYTES_PER_PIXEL).max(1)).max(1) as u32;
    let total = frames.len() as u64 * updates.len() as u64;
    let mut done = 0u64;
    let mut out = Vec::with_capacity(frames.len());

    let mut start = frames.start;
    while start < frames.end {
        let end = (start + per_batch).min(frames.end);
        if cancel.load(Ordering::Relaxed) {
            return Err(PipelineError::Cancelled);
        }
        let guide_start = Instant::now();
        let conds = (start..end)
            .map(|f| conditioning(plan, f))
            .collect::<Result<Vec<_>, _>>()?;
        times.guide_s += guide_start.elapsed().as_secs_f64();
        let sampling_start = Instant::now();
        let mut batch = engine.begin_batch(&batch_spec, conds)?;
        for (&sigma, &update) in sigmas.iter().zip(&updates) {
            if cancel.load(Ordering::Relaxed) {
                return Err(PipelineError::Cancelled);
            }
            batch.denoise(sigma as f32)?;
            batch.update(update)?;
            done += (end - start) as u64;
            progress(done, total);
        }
        for k in 0..batch.len() {
            let mut frame = Frame::new(spec.width, spec.height);
            batch.read_rgb8(k, &mut frame.rgb)?;
            out.push(frame);
        }
        times.sampling_s += sampling_start.elapsed().as_secs_f64();
        start = end;
    }
    Ok(out)
}
