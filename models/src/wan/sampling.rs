//! Denoising a clip's latents as `WanPipeline.__call__` does: at every timestep the
//! transformer runs on the prompt and, for classifier-free guidance, on the negative
//! prompt; the guided prediction `uncond + scale * (cond - uncond)` goes to the sampler.

use candle_core::{Result, Tensor};

use super::transformer::WanTransformer;
use crate::schedulers::FlowSampler;

/// Text embeddings for one clip: the prompt's, and the negative prompt's when guiding.
pub struct Conditioning<'a> {
    pub prompt: &'a Tensor,
    pub negative: Option<&'a Tensor>,
    pub guidance_scale: f64,
}

impl Conditioning<'_> {
    /// Guidance runs only with a scale above 1, as diffusers' `do_classifier_free_guidance`.
    fn guided(&self) -> Option<&Tensor> {
        self.negative.filter(|_| self.guidance_scale > 1.0)
    }
}

/// Where a denoising loop stands after a step: what a progress report or a checkpoint of
/// it needs (`done` steps of `total` taken; `latents` and `sampler` as the next step
/// starts from them).
pub struct StepState<'a> {
    pub done: usize,
    pub total: usize,
    pub latents: &'a Tensor,
    pub sampler: &'a dyn FlowSampler,
}

/// Runs every step of `sampler` from `latents` [1, c, f, h, w]; `on_step(i, total)` is
/// called after each step (progress for WatchJob).
pub fn denoise(
    transformer: &WanTransformer,
    sampler: &mut dyn FlowSampler,
    latents: Tensor,
    text: &Conditioning,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Tensor> {
    denoise_from(transformer, sampler, latents, text, 0, |s| {
        on_step(s.done, s.total);
        Ok(())
    })
}

/// [`denoise`] from step `start` of the sampler's schedule (video-to-video: `latents` are
/// already noised to that step's level), with an `on_step` that may stop the loop by
/// returning an error (a cancelled task).
pub fn denoise_from(
    transformer: &WanTransformer,
    sampler: &mut dyn FlowSampler,
    latents: Tensor,
    text: &Conditioning,
    start: usize,
    on_step: impl FnMut(&StepState) -> Result<()>,
) -> Result<Tensor> {
    sampler.begin_at(start);
    run_steps(transformer, sampler, latents, text, start, on_step)
}

/// The steps from `start` on, with `sampler` already positioned there: by
/// [`FlowSampler::begin_at`], or restored from a checkpoint ([`FlowSampler::restore`]),
/// which then goes on exactly as the interrupted run would have.
pub fn run_steps(
    transformer: &WanTransformer,
    sampler: &mut dyn FlowSampler,
    latents: Tensor,
    text: &Conditioning,
    start: usize,
    mut on_step: impl FnMut(&StepState) -> Result<()>,
) -> Result<Tensor> {
    let timesteps = sampler.timesteps().to_vec();
    let mut latents = latents;
    for (i, &t) in timesteps.iter().enumerate().skip(start) {
        let timestep = Tensor::new(&[t as f32], latents.device())?;
        // The predictions come in the transformer's dtype; guidance and the sampler run in
        // the latents' (f32 in WanPipeline). diffusers combines bf16 predictions in bf16:
        // combining in f32 only removes that rounding.
        let dtype = latents.dtype();
        let cond = transformer
            .forward(&latents, &timestep, text.prompt)?
            .to_dtype(dtype)?;
        let prediction = match text.guided() {
            Some(negative) => {
                let uncond = transformer
                    .forward(&latents, &timestep, negative)?
                    .to_dtype(dtype)?;
                (&uncond + ((cond - &uncond)? * text.guidance_scale)?)?
            }
            None => cond,
        };
        latents = sampler.step(&prediction, i, &latents)?;
        on_step(&StepState {
            done: i + 1,
            total: timesteps.len(),
            latents: &latents,
            sampler: &*sampler,
        })?;
    }
    Ok(latents)
}
