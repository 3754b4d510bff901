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
/// which then goes on exactly as the interrupted run would have. A batch of one
/// ([`run_batch`]).
pub fn run_steps(
    transformer: &WanTransformer,
    sampler: &mut dyn FlowSampler,
    latents: Tensor,
    text: &Conditioning,
    start: usize,
    mut on_step: impl FnMut(&StepState) -> Result<()>,
) -> Result<Tensor> {
    let clip = BatchedClip {
        latents,
        sampler,
        text,
        next: start,
    };
    run_batch(transformer, vec![clip], |_, s| on_step(s))?
        .pop()
        .expect("one result per clip")
}

/// One clip of a [`run_batch`]: its latents, its sampler positioned at step `next` (as for
/// [`run_steps`]), its text.
pub struct BatchedClip<'a, 's> {
    pub latents: Tensor,
    pub sampler: &'s mut dyn FlowSampler,
    pub text: &'a Conditioning<'a>,
    pub next: usize,
}

/// The remaining steps of several clips of one latent shape, with one transformer forward
/// per step for all of them: every clip's prompt row, and its negative-prompt row when
/// guided, each at its own timestep. Each clip's result equals its [`run_steps`] alone bit
/// for bit (the transformer runs every clip of a batch as it runs it alone); clips may be
/// at different steps of different schedules. `on_step(clip, state)` is called after each
/// clip's step; an error from it ends that clip alone (its result is that error) and the
/// others go on. An error of the forward itself ends them all (the outer `Err`).
pub fn run_batch(
    transformer: &WanTransformer,
    mut clips: Vec<BatchedClip<'_, '_>>,
    mut on_step: impl FnMut(usize, &StepState) -> Result<()>,
) -> Result<Vec<Result<Tensor>>> {
    if let Some(first) = clips.first() {
        let shape = first.latents.dims().to_vec();
        if let Some(i) = clips.iter().position(|c| c.latents.dims() != shape) {
            candle_core::bail!(
                "clip {i} of the batch has latents {:?}, clip 0 {shape:?}: a batch is one shape",
                clips[i].latents.dims()
            );
        }
    }
    let mut results: Vec<Option<Result<Tensor>>> = clips.iter().map(|_| None).collect();
    // The text rows change only when a clip ends: concatenated again only then.
    let mut context: Option<(Vec<usize>, Tensor)> = None;
    loop {
        // The clips with a step left, in batch order; a clip with none is done.
        for (i, c) in clips.iter().enumerate() {
            if results[i].is_none() && c.next >= c.sampler.timesteps().len() {
                results[i] = Some(Ok(c.latents.clone()));
            }
        }
        let active: Vec<usize> = (0..clips.len()).filter(|&i| results[i].is_none()).collect();
        if active.is_empty() {
            break;
        }
        let guided: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&i| clips[i].text.guided().is_some())
            .collect();
        // Rows: every active clip's prompt, then the guided clips' negative prompts.
        let rows: Vec<usize> = active.iter().chain(&guided).copied().collect();
        let latents = Tensor::cat(
            &rows.iter().map(|&i| &clips[i].latents).collect::<Vec<_>>(),
            0,
        )?;
        let times: Vec<f32> = rows
            .iter()
            .map(|&i| clips[i].sampler.timesteps()[clips[i].next] as f32)
            .collect();
        let timestep = Tensor::new(times.as_slice(), latents.device())?;
        if context.as_ref().is_none_or(|(r, _)| *r != rows) {
            let mut texts: Vec<&Tensor> = active.iter().map(|&i| clips[i].text.prompt).collect();
            texts.extend(guided.iter().filter_map(|&i| clips[i].text.guided()));
            context = Some((rows.clone(), Tensor::cat(&texts, 0)?));
        }
        let context = &context.as_ref().expect("set above").1;
        // The predictions come in the transformer's dtype; guidance and the sampler run in
        // the latents' (f32 in WanPipeline). diffusers combines bf16 predictions in bf16:
        // combining in f32 only removes that rounding.
        let dtype = latents.dtype();
        let predictions = transformer.forward(&latents, &timestep, context)?;
        for (row, &i) in active.iter().enumerate() {
            let row_of = |r: usize| predictions.narrow(0, r, 1)?.to_dtype(dtype);
            let cond = row_of(row)?;
            let clip = &mut clips[i];
            let prediction = match guided.iter().position(|&g| g == i) {
                Some(g) => {
                    let uncond = row_of(active.len() + g)?;
                    (&uncond + ((cond - &uncond)? * clip.text.guidance_scale)?)?
                }
                None => cond,
            };
            let step = clip.next;
            let stepped = clip
                .sampler
                .step(&prediction, step, &clip.latents)
                .and_then(|latents| {
                    clip.latents = latents;
                    clip.next = step + 1;
                    on_step(
                        i,
                        &StepState {
                            done: step + 1,
                            total: clip.sampler.timesteps().len(),
                            latents: &clip.latents,
                            sampler: &*clip.sampler,
                        },
                    )
                });
            if let Err(e) = stepped {
                results[i] = Some(Err(e));
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every clip ends in a result"))
        .collect())
}
