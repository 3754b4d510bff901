//! A whole Wan 2.1 model folder, loaded once and run stage by stage as the farm plans a
//! model job: [`WanModel::encode_text`] (TEXT_ENCODE), [`WanModel::denoise`] (DENOISE, with
//! an optional guide video for video-to-video) and [`WanModel::decode`] (DECODE). Each
//! stage takes and returns plain tensors, so the worker can store what passes between
//! tasks ([`to_safetensors`], [`from_safetensors`]).
//!
//! What `WanPipeline` / `WanVideoToVideoPipeline` do around the components, and where we
//! differ:
//! - Text: `_get_t5_prompt_embeds` with `max_sequence_length` 512; with guidance the
//!   negative prompt is encoded too (an empty one when none was given), as diffusers does.
//! - Noise: drawn from the job's seed with ChaCha8 and a standard normal, not torch's
//!   generator: the same seed gives the same clip on every worker of this farm, not the
//!   same clip as diffusers (whose RNG we do not reproduce). Given the same initial
//!   latents the sample equals diffusers (tests/sample_parity.rs).
//! - Latents are normalised with the VAE's `latents_mean` / `latents_std`, as the pipelines
//!   do before decoding and after encoding.
//! - Video-to-video: `strength` s runs the last `floor(steps * s)` steps of the schedule
//!   from the guide's latents noised to that step's sigma, `(1 - sigma) * x0 + sigma * n`
//!   (diffusers' `get_timesteps` and `scale_noise`). s = 0 runs no step: the output is the
//!   VAE's reconstruction of the guide.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::sampling::{run_batch, BatchedClip, Conditioning, StepState};
use super::text_encoder::{prompt_embeds, PromptTokenizer, TextEncoder};
use super::transformer::WanTransformer;
use super::vae::WanVae;
use crate::schedulers::flow_euler::FlowEuler;
use crate::schedulers::unipc::UniPc;
use crate::schedulers::FlowSampler;
use crate::weights::load_component;

/// `WanPipeline`'s default `max_sequence_length`.
pub const MAX_SEQUENCE_LENGTH: usize = 512;

/// The flow-matching samplers a model job may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    /// UniPC from the model's `scheduler/scheduler_config.json` (Wan's default).
    UniPc,
    /// Flow-matching Euler with the scheduler config's `flow_shift`.
    FlowEuler,
}

/// What a denoise needs besides the text: the clip's shape, seed and guidance.
#[derive(Clone, Debug)]
pub struct DenoiseParams {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    pub sampler: SamplerKind,
    pub guidance_scale: f64,
    pub seed: u64,
}

/// The prompt's embeddings, and the negative prompt's when guiding.
pub struct TextEmbeddings {
    pub prompt: Tensor,
    pub negative: Option<Tensor>,
}

/// A loaded Wan 2.1 text-to-video folder.
pub struct WanModel {
    dir: PathBuf,
    device: Device,
    dtype: DType,
    tokenizer: PromptTokenizer,
    text_encoder: TextEncoder,
    transformer: WanTransformer,
    vae: WanVae,
    scheduler_config: serde_json::Value,
}

/// The dtype a device runs models in: f32 on the CPU (candle's CPU kernels are fastest
/// and exact there), bf16 on a GPU (what Wan's weights are published in).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

impl WanModel {
    /// Loads every component of the diffusers folder `dir` (weights memory-mapped).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> anyhow::Result<Self> {
        let tokenizer = PromptTokenizer::load(&dir.join("tokenizer/tokenizer.json"))?;
        let text_encoder =
            load_component(&dir.join("text_encoder"), dtype, device, TextEncoder::load)?;
        let transformer = load_component(
            &dir.join("transformer"),
            dtype,
            device,
            WanTransformer::load,
        )?;
        // The VAE runs in f32 as WanPipeline's users run it (its causal convolutions lose
        // detail in bf16); its weights are small.
        let vae = load_component(&dir.join("vae"), DType::F32, device, WanVae::load)?;
        let path = dir.join("scheduler/scheduler_config.json");
        let scheduler_config = std::fs::read_to_string(&path)
            .with_context(|| path.display().to_string())
            .and_then(|s| {
                serde_json::from_str(&s).with_context(|| format!("{}: bad JSON", path.display()))
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            device: device.clone(),
            dtype,
            tokenizer,
            text_encoder,
            transformer,
            vae,
            scheduler_config,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// VAE compression: (temporal, spatial), and the transformer's spatial patch.
    pub fn factors(&self) -> (usize, usize, usize) {
        let vae = self.vae.config();
        let temporal = 1 << vae.temperal_downsample.iter().filter(|d| **d).count();
        let spatial = 1 << (vae.dim_mult.len() - 1);
        let patch = self.transformer.config().patch_size[1];
        (temporal, spatial, patch)
    }

    /// The latent shape of a clip, or why the clip's shape does not fit the model.
    pub fn latent_shape(
        &self,
        frames: usize,
        height: usize,
        width: usize,
    ) -> anyhow::Result<[usize; 5]> {
        let (temporal, spatial, patch) = self.factors();
        if frames == 0 || !(frames - 1).is_multiple_of(temporal) {
            bail!("frames: {frames} is not {temporal}k+1, which this model's VAE needs");
        }
        let side = spatial * patch;
        if !height.is_multiple_of(side) || !width.is_multiple_of(side) {
            bail!("size: {width}x{height} is not a multiple of {side}, which this model needs");
        }
        let z = self.vae.config().z_dim;
        Ok([
            1,
            z,
            (frames - 1) / temporal + 1,
            height / spatial,
            width / spatial,
        ])
    }

    /// TEXT_ENCODE: the prompt, and with guidance (scale above 1) the negative prompt.
    pub fn encode_text(
        &self,
        prompt: &str,
        negative_prompt: &str,
        guidance_scale: f64,
    ) -> anyhow::Result<TextEmbeddings> {
        let embed = |text: &str| {
            prompt_embeds(
                &self.tokenizer,
                &self.text_encoder,
                text,
                MAX_SEQUENCE_LENGTH,
                &self.device,
            )
        };
        let prompt = embed(prompt)?;
        let negative = if guidance_scale > 1.0 {
            Some(embed(negative_prompt)?)
        } else {
            None
        };
        Ok(TextEmbeddings { prompt, negative })
    }

    /// The sampler for `steps` steps, configured from the folder's scheduler config.
    pub fn sampler(&self, kind: SamplerKind, steps: usize) -> anyhow::Result<Box<dyn FlowSampler>> {
        Ok(match kind {
            SamplerKind::UniPc => Box::new(
                UniPc::from_config(&self.scheduler_config, steps).map_err(anyhow::Error::msg)?,
            ),
            SamplerKind::FlowEuler => {
                let shift = self.scheduler_config["flow_shift"].as_f64().unwrap_or(1.0);
                Box::new(FlowEuler::new(steps, shift))
            }
        })
    }

    /// The seeded initial noise of a clip's latents (f32).
    pub fn noise(&self, shape: [usize; 5], seed: u64) -> anyhow::Result<Tensor> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        Ok(Tensor::from_vec(values, shape.to_vec(), &self.device)?)
    }

    /// DENOISE: the clip's normalised latents from noise, or with `guide` = (the guide's
    /// normalised latents, strength) from the guide noised to the strength's level.
    /// `on_step(done, total)` may stop the loop by returning an error.
    pub fn denoise(
        &self,
        text: &TextEmbeddings,
        params: &DenoiseParams,
        guide: Option<(&Tensor, f64)>,
        mut on_step: impl FnMut(usize, usize) -> candle_core::Result<()>,
    ) -> anyhow::Result<Tensor> {
        let start = match guide {
            None => DenoiseStart::Noise,
            Some((latents, strength)) => DenoiseStart::Guide { latents, strength },
        };
        self.denoise_from(text, params, start, |s| on_step(s.done, s.total))
    }

    /// [`WanModel::denoise`] from any [`DenoiseStart`], a checkpoint included, with an
    /// `on_step` that sees the loop's state (for [`WanModel::checkpoint`]). A batch of one.
    pub fn denoise_from(
        &self,
        text: &TextEmbeddings,
        params: &DenoiseParams,
        start: DenoiseStart<'_>,
        mut on_step: impl FnMut(&StepState) -> candle_core::Result<()>,
    ) -> anyhow::Result<Tensor> {
        let clip = BatchClip {
            text,
            params,
            start,
        };
        self.denoise_batch(vec![clip], |_, s| on_step(s))?
            .pop()
            .expect("one result per clip")
    }

    /// The denoise of several clips of one latent shape (frames, height, width) as one
    /// batch: one transformer forward per step for all of them, each clip's latents equal
    /// to its [`WanModel::denoise_from`] alone, bit for bit. Clips may differ in seed,
    /// text, guidance, sampler, step count and start (a resumed clip batches with fresh
    /// ones). `on_step(clip, state)` follows each clip's steps; an error from it ends that
    /// clip alone, as does an unusable start (its own result is the error). The outer `Err`
    /// is a batch that cannot run together (clips of different shapes, naming the clip) or
    /// a failed forward, which ends them all.
    pub fn denoise_batch(
        &self,
        clips: Vec<BatchClip<'_>>,
        on_step: impl FnMut(usize, &StepState) -> candle_core::Result<()>,
    ) -> anyhow::Result<Vec<anyhow::Result<Tensor>>> {
        if let Some(first) = clips.first() {
            let size = |p: &DenoiseParams| (p.frames, p.height, p.width);
            if let Some(i) = clips
                .iter()
                .position(|c| size(c.params) != size(first.params))
            {
                let (f, h, w) = size(clips[i].params);
                let (f0, h0, w0) = size(first.params);
                bail!(
                    "clips[{i}] is {f} frames of {w}x{h}, clips[0] {f0} frames of {w0}x{h0}: a \
                     batch is one shape"
                );
            }
        }
        let conditionings: Vec<Conditioning> = clips
            .iter()
            .map(|c| Conditioning {
                prompt: &c.text.prompt,
                negative: c.text.negative.as_ref(),
                guidance_scale: c.params.guidance_scale,
            })
            .collect();
        // Every clip's starting latents and positioned sampler; one that cannot start ends
        // with its error and stays out of the batch.
        let mut results: Vec<Option<anyhow::Result<Tensor>>> = clips.iter().map(|_| None).collect();
        let (mut members, mut samplers, mut firsts) = (Vec::new(), Vec::new(), Vec::new());
        for (i, clip) in clips.into_iter().enumerate() {
            match self.start(clip.params, clip.start) {
                Ok((latents, sampler, next)) => {
                    members.push(i);
                    samplers.push(sampler);
                    firsts.push((latents, next));
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let batch = samplers
            .iter_mut()
            .zip(firsts)
            .zip(&members)
            .map(|((sampler, (latents, next)), &i)| BatchedClip {
                latents,
                sampler: sampler.as_mut(),
                text: &conditionings[i],
                next,
            })
            .collect();
        let mut on_step = on_step;
        let ran = run_batch(&self.transformer, batch, |j, s| on_step(members[j], s))?;
        for (&i, r) in members.iter().zip(ran) {
            results[i] = Some(r.map_err(anyhow::Error::from));
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every clip ends in a result"))
            .collect())
    }

    /// Where a clip's denoise starts: its latents, its sampler positioned at the first step
    /// to run, and that step's index.
    fn start(
        &self,
        params: &DenoiseParams,
        start: DenoiseStart<'_>,
    ) -> anyhow::Result<(Tensor, Box<dyn FlowSampler>, usize)> {
        let shape = self.latent_shape(params.frames, params.height, params.width)?;
        let mut sampler = self.sampler(params.sampler, params.steps)?;
        if let DenoiseStart::Resume(resumed) = start {
            resumed.check(params, shape)?;
            sampler.restore(resumed.step, &resumed.sampler)?;
            return Ok((resumed.latents, sampler, resumed.step));
        }
        let noise = self.noise(shape, params.seed)?;
        let (latents, start) = match start {
            DenoiseStart::Guide {
                latents: x0,
                strength,
            } => {
                if x0.dims() != shape {
                    bail!(
                        "guide latents {:?} do not match the clip's latents {shape:?}",
                        x0.dims()
                    );
                }
                let run = ((params.steps as f64 * strength).floor() as usize).min(params.steps);
                let start = params.steps - run;
                let sigma = f64::from(sampler.sigma(start));
                let noised = ((x0.to_dtype(DType::F32)? * (1.0 - sigma))? + (noise * sigma)?)?;
                (noised, start)
            }
            _ => (noise, 0),
        };
        sampler.begin_at(start);
        Ok((latents, sampler, start))
    }

    /// A [`WanModel::checkpoint`] read onto this model's device, to resume `params`'
    /// denoise from ([`DenoiseStart::Resume`]), or why it cannot (another schedule or
    /// size, a damaged file).
    pub fn read_checkpoint(
        &self,
        bytes: &[u8],
        params: &DenoiseParams,
    ) -> anyhow::Result<Checkpoint> {
        let shape = self.latent_shape(params.frames, params.height, params.width)?;
        let c = Checkpoint::read(bytes, &self.device)?;
        c.check(params, shape)?;
        Ok(c)
    }

    /// A checkpoint of a denoise at `state` (safetensors): the latents, the sampler's
    /// history and which schedule they belong to. [`DenoiseStart::Resume`] from it goes on
    /// bit for bit as the run would have on the same engine.
    pub fn checkpoint(&self, state: &StepState, params: &DenoiseParams) -> anyhow::Result<Vec<u8>> {
        let meta = [
            ("meta.format", CHECKPOINT_FORMAT),
            ("meta.step", state.done),
            ("meta.steps", params.steps),
            ("meta.sampler", sampler_code(params.sampler)),
        ];
        let mut tensors: Vec<(String, Tensor)> = meta
            .iter()
            .map(|(n, v)| Ok((n.to_string(), crate::schedulers::counter(*v)?)))
            .collect::<candle_core::Result<_>>()?;
        tensors.push(("latents".into(), state.latents.clone()));
        for (name, t) in state.sampler.state()? {
            tensors.push((format!("sampler.{name}"), t));
        }
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        to_safetensors(&refs)
    }

    /// The VAE's normalisation: `(x - latents_mean) / latents_std` per channel.
    fn stats(&self) -> anyhow::Result<(Tensor, Tensor)> {
        let cfg = self.vae.config();
        let z = cfg.z_dim;
        if cfg.latents_mean.len() != z || cfg.latents_std.len() != z {
            bail!(
                "vae/config.json: latents_mean and latents_std need {z} values each, got {} and {}",
                cfg.latents_mean.len(),
                cfg.latents_std.len()
            );
        }
        let as_tensor = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
            Tensor::from_vec(v, (1, z, 1, 1, 1), &self.device)
        };
        Ok((as_tensor(&cfg.latents_mean)?, as_tensor(&cfg.latents_std)?))
    }

    /// The guide: a video `[1, 3, frames, h, w]` in [-1, 1] → normalised latents.
    pub fn encode_video(&self, video: &Tensor) -> anyhow::Result<Tensor> {
        let (mean, std) = self.stats()?;
        let latents = self.vae.encode(&video.to_dtype(DType::F32)?)?;
        Ok(latents.broadcast_sub(&mean)?.broadcast_div(&std)?)
    }

    /// DECODE: normalised latents → video `[1, 3, frames, 8h, 8w]` in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> anyhow::Result<Tensor> {
        let mut chunks = Vec::new();
        self.decode_chunks(latents, |c| {
            chunks.push(c);
            Ok(())
        })?;
        Ok(Tensor::cat(&chunks, 2)?)
    }

    /// [`WanModel::decode`] one latent frame at a time (the VAE's causal cache), each chunk
    /// of decoded frames handed to `on_chunk` at once: a long clip needs no allocation of
    /// its whole decoded video.
    pub fn decode_chunks(
        &self,
        latents: &Tensor,
        on_chunk: impl FnMut(Tensor) -> candle_core::Result<()>,
    ) -> anyhow::Result<()> {
        let (mean, std) = self.stats()?;
        let latents = latents
            .to_dtype(DType::F32)?
            .broadcast_mul(&std)?
            .broadcast_add(&mean)?;
        Ok(self.vae.decode_chunks(&latents, on_chunk)?)
    }
}

/// One clip of a [`WanModel::denoise_batch`].
pub struct BatchClip<'a> {
    pub text: &'a TextEmbeddings,
    pub params: &'a DenoiseParams,
    pub start: DenoiseStart<'a>,
}

/// Where a denoise starts.
pub enum DenoiseStart<'a> {
    /// Text-to-video: the seed's noise, from step 0.
    Noise,
    /// Video-to-video: the guide's normalised latents noised to `strength`'s level.
    Guide { latents: &'a Tensor, strength: f64 },
    /// A checkpoint of the same denoise (same spec, [`WanModel::read_checkpoint`]), from
    /// its step.
    Resume(Checkpoint),
}

/// Bumped when the checkpoint's layout changes: an old checkpoint is refused, not misread.
const CHECKPOINT_FORMAT: usize = 1;

fn sampler_code(kind: SamplerKind) -> usize {
    match kind {
        SamplerKind::UniPc => 1,
        SamplerKind::FlowEuler => 2,
    }
}

/// A checkpoint read back ([`WanModel::read_checkpoint`]).
pub struct Checkpoint {
    step: usize,
    steps: usize,
    sampler_code: usize,
    latents: Tensor,
    sampler: std::collections::HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Steps done: the resumed denoise starts with the next one.
    pub fn step(&self) -> usize {
        self.step
    }

    fn read(bytes: &[u8], device: &Device) -> anyhow::Result<Self> {
        let mut t = from_safetensors(bytes, device).context("checkpoint")?;
        let counter = |t: &std::collections::HashMap<String, Tensor>, name: &str| {
            crate::schedulers::read_counter(t, name).context("checkpoint")
        };
        let format = counter(&t, "meta.format")?;
        if format != CHECKPOINT_FORMAT {
            bail!("checkpoint format {format}, this worker reads {CHECKPOINT_FORMAT}");
        }
        let (step, steps) = (counter(&t, "meta.step")?, counter(&t, "meta.steps")?);
        let sampler_code = counter(&t, "meta.sampler")?;
        let latents = t
            .remove("latents")
            .context("checkpoint without \"latents\"")?;
        let sampler = t
            .into_iter()
            .filter_map(|(n, v)| n.strip_prefix("sampler.").map(|n| (n.to_string(), v)))
            .collect();
        Ok(Self {
            step,
            steps,
            sampler_code,
            latents,
            sampler,
        })
    }

    /// Err unless it is a checkpoint part-way through `params`' denoise of latents `shape`.
    fn check(&self, params: &DenoiseParams, shape: [usize; 5]) -> anyhow::Result<()> {
        let (step, steps) = (self.step, self.steps);
        if steps != params.steps || self.sampler_code != sampler_code(params.sampler) {
            bail!("checkpoint of another schedule ({steps} steps), not this task's");
        }
        if step == 0 || step >= steps {
            bail!("checkpoint at step {step} of {steps}: nothing to resume");
        }
        if self.latents.dims() != shape {
            bail!(
                "checkpoint latents {:?} do not match the clip's latents {shape:?}",
                self.latents.dims()
            );
        }
        Ok(())
    }
}

/// Tensors → safetensors bytes (what passes between a model job's tasks).
pub fn to_safetensors(tensors: &[(&str, &Tensor)]) -> anyhow::Result<Vec<u8>> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.to_string(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    Ok(safetensors::tensor::serialize(
        cpu.iter().map(|(n, t)| (n.as_str(), t)),
        None,
    )?)
}

/// safetensors bytes → the named tensors, on `device`. A damaged file is an error.
pub fn from_safetensors(
    bytes: &[u8],
    device: &Device,
) -> anyhow::Result<std::collections::HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device).context("not a safetensors file")
}
