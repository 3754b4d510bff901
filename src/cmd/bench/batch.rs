//! `reelfarm bench batch`: what batching across jobs buys one worker. `--batch N` clips of
//! one shape and schedule (different prompts and seeds, as N jobs would be) are denoised one
//! after another (`WanModel::denoise_from`, a worker with `--max-batch 1`) and as one batch
//! (`WanModel::denoise_batch`, `--max-batch N`), in the same run on the same model, device
//! and inputs, alternating so that both see the same machine. It reports the median seconds
//! of each, their ratio (sequential / batched: above 1 the batch is faster), and whether
//! every batched clip equals its sequential run bit for bit (it must: see the README's
//! "Batching across jobs").

use std::time::Instant;

use anyhow::bail;
use candle_core::{DType, Device, Tensor};
use reelfarm_models::wan::pipeline::{
    BatchClip, DenoiseParams, DenoiseStart, SamplerKind, TextEmbeddings, WanModel,
};

#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// wan-tiny-a or wan-tiny-b (the test fixtures), or a diffusers model folder with every
    /// component.
    #[arg(long, default_value = "wan-tiny-a")]
    pub config: String,
    /// Clips per batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Clip length in frames (4k + 1 for Wan's VAE).
    #[arg(long, default_value_t = 17)]
    pub frames: usize,
    /// Frame height in pixels (a multiple of 16).
    #[arg(long, default_value_t = 128)]
    pub height: usize,
    /// Frame width in pixels (a multiple of 16).
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    /// Denoising steps per clip.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Classifier-free guidance (above 1: two transformer rows per clip and step).
    #[arg(long, default_value_t = 5.0)]
    pub guidance_scale: f64,
    /// Timed runs each way, alternating (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// cpu, or cuda (device 0; needs the `cuda` build).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// f32 or bf16 for the transformer and the text encoder.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub dtype: String,
}

pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    if !(1..=64).contains(&args.batch) {
        bail!(
            "--batch must be 1..=64 (a worker's --max-batch), got {}",
            args.batch
        );
    }
    if args.repeat == 0 || args.steps == 0 {
        bail!("--repeat and --steps must be at least 1");
    }
    if args.config == "1.3b" {
        bail!("--config 1.3b has no text encoder (see bench model); pass a full diffusers folder");
    }
    let (device, dtype) = super::model::device_and_dtype_of(&args.device, &args.dtype)?;
    let work = tempfile::tempdir()?;
    let (config, dir) = super::model::resolve_config(&args.config, work.path())?;
    let model = WanModel::load(&dir, dtype, &device)?;
    let params: Vec<DenoiseParams> = (0..args.batch)
        .map(|i| DenoiseParams {
            frames: args.frames,
            height: args.height,
            width: args.width,
            steps: args.steps,
            sampler: SamplerKind::UniPc,
            guidance_scale: args.guidance_scale,
            seed: 100 + i as u64,
        })
        .collect();
    // The text is encoded once, before any timing: both ways denoise the same embeddings.
    let texts: Vec<TextEmbeddings> = (0..args.batch)
        .map(|i| {
            model.encode_text(
                &format!("clip {i}: a red ball bouncing on a wooden floor"),
                "blurry, static",
                args.guidance_scale,
            )
        })
        .collect::<anyhow::Result<_>>()?;

    let sequential = || -> anyhow::Result<Vec<Tensor>> {
        texts
            .iter()
            .zip(&params)
            .map(|(t, p)| model.denoise_from(t, p, DenoiseStart::Noise, |_| Ok(())))
            .collect()
    };
    let batched = || -> anyhow::Result<Vec<Tensor>> {
        let clips = texts
            .iter()
            .zip(&params)
            .map(|(text, params)| BatchClip {
                text,
                params,
                start: DenoiseStart::Noise,
            })
            .collect();
        model
            .denoise_batch(clips, |_, _| Ok(()))?
            .into_iter()
            .collect()
    };
    // One untimed run each (allocations, kernel compilation on CUDA), which also gives the
    // results to compare.
    let alone = sequential()?;
    let together = batched()?;
    let bit_equal = alone
        .iter()
        .zip(&together)
        .map(|(a, b)| Ok(bits(a)? == bits(b)?))
        .collect::<anyhow::Result<Vec<bool>>>()?;
    let (mut seq_s, mut batch_s) = (Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        let t = Instant::now();
        sequential()?;
        synchronize(&device)?;
        seq_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        batched()?;
        synchronize(&device)?;
        batch_s.push(t.elapsed().as_secs_f64());
    }
    let (seq, batch) = (median(&mut seq_s), median(&mut batch_s));
    let report = serde_json::json!({
        "bench": "batch",
        "machine": super::machine(),
        "config": config,
        "device": args.device,
        "dtype": args.dtype,
        "clips": args.batch,
        "frames": args.frames,
        "height": args.height,
        "width": args.width,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "repeat": args.repeat,
        "sequential_seconds": seq,
        "batched_seconds": batch,
        "sequential_seconds_runs": seq_s,
        "batched_seconds_runs": batch_s,
        "speedup": seq / batch,
        "every_clip_bit_equal": bit_equal.iter().all(|b| *b),
        "bit_equal_by_clip": bit_equal,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !bit_equal.iter().all(|b| *b) {
        bail!("a batched clip differs from its run alone: {bit_equal:?}");
    }
    Ok(())
}

fn bits(t: &Tensor) -> anyhow::Result<Vec<u32>> {
    Ok(t.to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f32::to_bits)
        .collect())
}

fn synchronize(device: &Device) -> anyhow::Result<()> {
    Ok(device.synchronize()?)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
