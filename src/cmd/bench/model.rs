//! `reelfarm bench model`: the Wan 2.1 stages of `reelfarm-models` on CPU in f32, beside
//! diffusers + PyTorch on the same machine, threads, dtype, weights and inputs, in the same
//! run: seconds per denoising step (two transformer forwards, cond and uncond, and the
//! guidance combination, as `WanPipeline` steps), per VAE decode and per prompt encoding,
//! and each stage's peak memory.
//!
//! Each stage runs in a child process of its own, ours (this binary again, with the hidden
//! `--stage`) and PyTorch's (`models/bench/torch_model_bench.py` under `--python`), so that
//! each peak (`VmHWM` from `/proc/self/status`, read after loading and, reset, after the
//! runs) is that stage's alone. Both read the same `plan.json` and `inputs.safetensors`
//! from the work folder and write their output there; the report gives both timings, their
//! ratio (PyTorch time / ours: above 1 we are faster) and how far the two outputs are
//! apart. Without torch or diffusers the PyTorch side says `{"skipped": "..."}`; no number
//! is ever estimated.
//!
//! `--config 1.3b` is the real Wan2.1-T2V-1.3B transformer architecture and the Wan 2.1 VAE
//! with random weights (written as bf16 safetensors, loaded as f32 by both sides); its text
//! encoder, UMT5-XXL, is 5.7 B parameters (22.7 GB in f32) and is not run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use reelfarm_models::wan::config::TransformerConfig;
use reelfarm_models::wan::text_encoder::{prompt_embeds, PromptTokenizer, TextEncoder, Umt5Config};
use reelfarm_models::wan::transformer::WanTransformer;
use reelfarm_models::wan::vae::{VaeConfig, WanVae};
use reelfarm_models::weights::check::{check_component, CheckReport};
use reelfarm_models::weights::random::write_random_component;
use reelfarm_models::weights::{load_component, read_config, WeightsError};
use serde::{Deserialize, Serialize};

/// The stages, in the order a clip needs them.
pub const STAGES: [&str; 3] = ["text", "transformer", "vae"];

/// `WanPipeline`'s default `guidance_scale`; the combination costs the same for any scale.
const GUIDANCE_SCALE: f64 = 5.0;
/// A timestep in the middle of the schedule (the transformer's cost does not depend on it).
const TIMESTEP: f32 = 500.0;
const PROMPT: &str = "a red rubber ball bouncing on a wooden floor, slow motion";
/// Seed of the random inputs and of `--config 1.3b`'s weights: every run measures the same.
const SEED: u64 = 7;

pub struct ModelArgs {
    /// `wan-tiny-a`, `wan-tiny-b`, `1.3b` or a diffusers folder.
    pub config: String,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub text_len: usize,
    /// Threads for both sides; `None`: every CPU.
    pub threads: Option<usize>,
    pub warmup: usize,
    pub repeat: usize,
    pub stages: Vec<String>,
    pub python: String,
    pub pytorch: bool,
    /// `cpu` or `cuda` (device 0; needs the `cuda` build).
    pub device: String,
    /// `f32` or `bf16` for the transformer and text encoder; the VAE runs in f32 always.
    pub dtype: String,
    /// Where the plan, inputs, outputs (and `1.3b`'s weights) go; `None`: a temporary
    /// folder, removed at the end.
    pub work: Option<PathBuf>,
    /// Set in a child: run this one stage of the plan in `work` and print its figures.
    pub stage: Option<String>,
}

/// What the parent hands each child, ours and PyTorch's (`plan.json`).
#[derive(Serialize, Deserialize)]
struct Plan {
    model_dir: PathBuf,
    threads: usize,
    warmup: usize,
    repeat: usize,
    text_len: usize,
    prompt: String,
    guidance_scale: f64,
    /// `cpu` or `cuda`.
    #[serde(default = "default_device")]
    device: String,
    /// `f32` or `bf16`.
    #[serde(default = "default_dtype")]
    dtype: String,
}

fn default_device() -> String {
    "cpu".into()
}

fn default_dtype() -> String {
    "f32".into()
}

/// The candle device and dtype a plan names.
fn device_and_dtype(plan: &Plan) -> anyhow::Result<(Device, DType)> {
    device_and_dtype_of(&plan.device, &plan.dtype)
}

/// The candle device (`cpu`, or `cuda`: device 0 of the `cuda` build) and dtype (`f32`,
/// `bf16`) named by `--device` and `--dtype`.
pub(super) fn device_and_dtype_of(device: &str, dtype: &str) -> anyhow::Result<(Device, DType)> {
    let dtype = match dtype {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        other => bail!("--dtype {other:?}: f32 or bf16"),
    };
    let device = match device {
        "cpu" => Device::Cpu,
        "cuda" if cfg!(feature = "cuda") => {
            Device::new_cuda(0).context("--device cuda: candle's CUDA device 0")?
        }
        "cuda" => {
            bail!("--device cuda: this binary is built without the `cuda` feature (README, CUDA)")
        }
        other => bail!("--device {other:?}: cpu or cuda"),
    };
    Ok((device, dtype))
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    if let Some(stage) = &args.stage {
        let work = args.work.as_deref().context("--stage needs --work")?;
        let figures = run_stage(stage, work)?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    for s in &args.stages {
        if !STAGES.contains(&s.as_str()) {
            bail!("--stages: unknown stage {s:?} (text, transformer, vae)");
        }
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let temporary;
    let work = match &args.work {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("reelfarm-bench-model")
                .tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    let work = work.as_path();
    let (config_name, model_dir) = resolve_config(&args.config, work)?;

    let tcfg: TransformerConfig =
        read_config(&model_dir.join("transformer")).map_err(anyhow::Error::msg)?;
    let vcfg: VaeConfig = read_config(&model_dir.join("vae")).map_err(anyhow::Error::msg)?;
    let latents = latent_shape(&tcfg, &vcfg, args.frames, args.height, args.width)?;
    let [pt, ph, pw] = tcfg.patch_size;
    let tokens = latents[2] / pt * (latents[3] / ph) * (latents[4] / pw);
    write_inputs(work, &tcfg, &vcfg, latents, args.text_len)?;
    let plan = Plan {
        model_dir: model_dir.clone(),
        threads,
        warmup: args.warmup,
        repeat: args.repeat,
        text_len: args.text_len,
        prompt: PROMPT.into(),
        guidance_scale: GUIDANCE_SCALE,
        device: args.device.clone(),
        dtype: args.dtype.clone(),
    };
    // Refuse a device or dtype this binary cannot run before any stage starts.
    device_and_dtype(&plan)?;
    std::fs::write(work.join("plan.json"), serde_json::to_vec_pretty(&plan)?)?;

    let mut stages = serde_json::Map::new();
    for stage in STAGES
        .iter()
        .filter(|s| args.stages.iter().any(|a| a == *s))
    {
        let key = match *stage {
            "text" => "text_encoding",
            "transformer" => "denoising_step",
            _ => "vae_decode",
        };
        let report = if *stage == "text" && !model_dir.join("text_encoder").is_dir() {
            serde_json::json!({ "skipped": text_skip_reason(&config_name) })
        } else {
            eprintln!("bench model: {stage} ...");
            compare_stage(stage, work, threads, &args)?
        };
        eprintln!("bench model: {key}: {report}");
        stages.insert(key.into(), report);
    }

    let report = serde_json::json!({
        "bench": "model",
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "machine": super::machine(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "config": config_name,
        "model_dir": model_dir,
        "dtype": args.dtype,
        "vae_dtype": "f32",
        "device": args.device,
        "threads": threads,
        "size": {
            "frames": args.frames, "height": args.height, "width": args.width,
            "latents": latents, "transformer_tokens": tokens, "text_tokens": args.text_len,
        },
        "parameters": parameters(&model_dir, &tcfg, &vcfg),
        "warmup": args.warmup,
        "repeat": args.repeat,
        "denoising_step_is": "two transformer forwards (prompt, negative prompt) and uncond + scale * (cond - uncond)",
        "stages": stages,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The model folder of `--config`, written into `work` for `1.3b`.
pub(super) fn resolve_config(config: &str, work: &Path) -> anyhow::Result<(String, PathBuf)> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures");
    match config {
        "wan-tiny-a" | "wan-tiny-b" => {
            let dir = fixtures.join(config);
            if !dir.is_dir() {
                bail!("--config {config}: {} is missing (a source checkout is needed for the fixtures)", dir.display());
            }
            Ok((config.into(), dir))
        }
        "1.3b" => {
            let cfg_dir = fixtures.join("wan2.1-t2v-1.3b-config/transformer");
            let tcfg: TransformerConfig = read_config(&cfg_dir).map_err(anyhow::Error::msg)?;
            let dir = work.join("wan2.1-t2v-1.3b-random");
            let started = Instant::now();
            write_random_model(&dir, &cfg_dir.join("config.json"), tcfg)?;
            eprintln!(
                "bench model: random 1.3B weights written in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(("1.3b (random weights)".into(), dir))
        }
        path => {
            let dir = PathBuf::from(path);
            if !dir.join("transformer").is_dir() || !dir.join("vae").is_dir() {
                bail!("--config {path}: not wan-tiny-a, wan-tiny-b, 1.3b, or a diffusers folder with transformer/ and vae/");
            }
            Ok((path.into(), dir))
        }
    }
}

fn text_skip_reason(config: &str) -> String {
    if config.starts_with("1.3b") {
        "the 1.3B pipeline's text encoder is UMT5-XXL: 5.7 B parameters, 22.7 GB in f32; not \
         generated (run --config with a downloaded folder to time it)"
            .into()
    } else {
        "the model folder has no text_encoder/".into()
    }
}

/// `[1, z, frames, rows, columns]` of the latents of a `frames x height x width` clip, with
/// the VAE's factors (2 per spatial and per temporal downsampling stage).
fn latent_shape(
    tcfg: &TransformerConfig,
    vcfg: &VaeConfig,
    frames: usize,
    height: usize,
    width: usize,
) -> anyhow::Result<[usize; 5]> {
    let stages = vcfg.dim_mult.len().saturating_sub(1);
    let spatial = 1 << stages;
    let temporal = 1
        << vcfg
            .temperal_downsample
            .iter()
            .take(stages)
            .filter(|t| **t)
            .count();
    if frames == 0 || !(frames - 1).is_multiple_of(temporal) {
        bail!("--frames {frames}: must be {temporal} k + 1 for this VAE");
    }
    let [_, ph, pw] = tcfg.patch_size;
    for (name, v, unit) in [
        ("height", height, spatial * ph),
        ("width", width, spatial * pw),
    ] {
        if v == 0 || !v.is_multiple_of(unit) {
            bail!("--{name} {v}: must be a multiple of {unit} (VAE factor x patch)");
        }
    }
    Ok([
        1,
        tcfg.in_channels,
        (frames - 1) / temporal + 1,
        height / spatial,
        width / spatial,
    ])
}

/// `n` values from a seeded normal distribution (Box-Muller).
fn normal(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let v: f32 = rng.random();
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// `inputs.safetensors`: the latents, the timestep, prompt and negative contexts for the
/// transformer, and latents for the VAE; random (seeded) and shared by both sides.
fn write_inputs(
    work: &Path,
    tcfg: &TransformerConfig,
    vcfg: &VaeConfig,
    latents: [usize; 5],
    text_len: usize,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let cpu = &Device::Cpu;
    let mut tensor =
        |shape: &[usize]| Tensor::from_vec(normal(&mut rng, shape.iter().product()), shape, cpu);
    let text = [1, text_len, tcfg.text_dim];
    let vae_latents = [1, vcfg.z_dim, latents[2], latents[3], latents[4]];
    let inputs = HashMap::from([
        ("latents", tensor(&latents)?),
        ("context", tensor(&text)?),
        ("negative", tensor(&text)?),
        ("vae_latents", tensor(&vae_latents)?),
        ("timestep", Tensor::new(&[TIMESTEP], cpu)?),
    ]);
    candle_core::safetensors::save(&inputs, work.join("inputs.safetensors"))?;
    Ok(())
}

/// Parameters of each component as the loading code sees them (safetensors headers only).
fn parameters(dir: &Path, tcfg: &TransformerConfig, vcfg: &VaeConfig) -> serde_json::Value {
    let count = |report: Result<CheckReport, WeightsError>| match report {
        Ok(r) if r.problems.is_empty() => serde_json::json!(r.parameters),
        Ok(r) => serde_json::json!(r.problems),
        Err(e) => serde_json::json!(e.to_string()),
    };
    let mut out = serde_json::json!({
        "transformer": count(check_component(&dir.join("transformer"), |vb| {
            WanTransformer::load(tcfg.clone(), vb)
        })),
        "vae": count(check_component(&dir.join("vae"), |vb| WanVae::load(vcfg.clone(), vb))),
    });
    if let Ok(ecfg) = read_config::<Umt5Config>(&dir.join("text_encoder")) {
        out["text_encoder"] = count(check_component(&dir.join("text_encoder"), |vb| {
            TextEncoder::load(ecfg, vb)
        }));
    }
    out
}

/// Our figures and PyTorch's for one stage, their ratio and how far the outputs differ.
fn compare_stage(
    stage: &str,
    work: &Path,
    threads: usize,
    args: &ModelArgs,
) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let ours = child_json(
        Command::new(exe)
            .args(["bench", "model", "--stage", stage, "--work"])
            .arg(work)
            .env("RAYON_NUM_THREADS", threads.to_string()),
    )
    .with_context(|| format!("our {stage} stage"))?;
    let mut report = serde_json::json!({ "ours": ours });
    let pytorch = if args.pytorch {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bench/torch_model_bench.py");
        let n = threads.to_string();
        match child_json(
            Command::new(&args.python)
                .arg(&script)
                .args(["--stage", stage, "--work"])
                .arg(work)
                .env("OMP_NUM_THREADS", &n)
                .env("MKL_NUM_THREADS", &n),
        ) {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "skipped": format!("{}: {e:#}", args.python) }),
        }
    } else {
        serde_json::json!({ "skipped": "--no-pytorch" })
    };
    if let (Some(a), Some(b)) = (
        seconds(&report["ours"], "median"),
        seconds(&pytorch, "median"),
    ) {
        report["ratio_pytorch_over_ours"] = serde_json::json!(b / a);
        // The fastest runs: on a shared machine the least disturbed ones.
        if let (Some(a), Some(b)) = (seconds(&report["ours"], "min"), seconds(&pytorch, "min")) {
            report["ratio_pytorch_over_ours_min"] = serde_json::json!(b / a);
        }
        let out = |side: &str| -> anyhow::Result<Tensor> {
            let file = work.join(format!("{side}-{stage}.safetensors"));
            let mut t = candle_core::safetensors::load(&file, &Device::Cpu)?;
            t.remove("out")
                .with_context(|| format!("{}: no out", file.display()))
        };
        let (ours, theirs) = (out("ours")?, out("torch")?);
        let diff = (&ours - &theirs)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        let scale = theirs.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        report["max_abs_diff"] = serde_json::json!(diff);
        report["max_abs_diff_over_max_abs"] = serde_json::json!(diff / scale);
    }
    report["pytorch"] = pytorch;
    Ok(report)
}

fn seconds(side: &serde_json::Value, which: &str) -> Option<f64> {
    side.get("seconds")?.get(which)?.as_f64()
}

/// Runs a child and parses the last line of its stdout as JSON; its stderr passes through.
fn child_json(cmd: &mut Command) -> anyhow::Result<serde_json::Value> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting it")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("exited with {}", out.status);
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("its output is not JSON: {last:?}"))
}

/// `VmHWM` / `VmRSS` of this process in MiB.
fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The child: one stage of the plan, loaded, warmed up and timed; the last output is saved
/// for the comparison.
fn run_stage(stage: &str, work: &Path) -> anyhow::Result<serde_json::Value> {
    let plan: Plan = serde_json::from_slice(&std::fs::read(work.join("plan.json"))?)?;
    let baseline = status_mib("VmRSS:");
    let (device, dtype) = device_and_dtype(&plan)?;
    let inputs = candle_core::safetensors::load(work.join("inputs.safetensors"), &device)?;
    let input = |k: &str| inputs.get(k).with_context(|| format!("inputs: no {k}"));
    let dir = &plan.model_dir;
    let started = Instant::now();
    let mut step: Box<dyn FnMut() -> anyhow::Result<Tensor>> = match stage {
        "transformer" => {
            let model = load_component(
                &dir.join("transformer"),
                dtype,
                &device,
                WanTransformer::load,
            )?;
            let (latents, t) = (input("latents")?.clone(), input("timestep")?.clone());
            let (prompt, negative) = (input("context")?.clone(), input("negative")?.clone());
            let scale = plan.guidance_scale;
            Box::new(move || {
                let cond = model.forward(&latents, &t, &prompt)?;
                let uncond = model.forward(&latents, &t, &negative)?;
                Ok((&uncond + ((cond - &uncond)? * scale)?)?)
            })
        }
        "vae" => {
            let vae = load_component(&dir.join("vae"), DType::F32, &device, WanVae::load)?;
            let latents = input("vae_latents")?.clone();
            Box::new(move || Ok(vae.decode(&latents)?))
        }
        "text" => {
            let tok = PromptTokenizer::load(&dir.join("tokenizer/tokenizer.json"))?;
            let enc = load_component(&dir.join("text_encoder"), dtype, &device, TextEncoder::load)?;
            let (prompt, len) = (plan.prompt.clone(), plan.text_len);
            let on = device.clone();
            Box::new(move || prompt_embeds(&tok, &enc, &prompt, len, &on))
        }
        other => bail!("unknown stage {other:?}"),
    };
    let load_seconds = started.elapsed().as_secs_f64();
    let loaded = status_mib("VmRSS:");
    let load_peak = status_mib("VmHWM:");
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+), so the peak read
    // after the runs is theirs alone: loading maps the files beside the copies it makes.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    for _ in 0..plan.warmup {
        step()?;
    }
    // A GPU runs asynchronously: each timed run ends when the device has finished it.
    device.synchronize()?;
    let mut seconds = Vec::with_capacity(plan.repeat);
    let mut out = None;
    for _ in 0..plan.repeat {
        let started = Instant::now();
        out = Some(step()?);
        device.synchronize()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    let out = out
        .context("no timed run")?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?;
    candle_core::safetensors::save(
        &HashMap::from([("out", out)]),
        work.join(format!("ours-{stage}.safetensors")),
    )?;
    Ok(serde_json::json!({
        "seconds": seconds_summary(&seconds),
        "load_seconds": load_seconds,
        "rss_baseline_mib": baseline,
        "rss_after_load_mib": loaded,
        "load_peak_rss_mib": load_peak,
        "run_peak_rss_mib": reset.then(|| status_mib("VmHWM:")),
        "threads": candle_core::utils::get_num_threads(),
        "device": plan.device,
    }))
}

fn seconds_summary(seconds: &[f64]) -> serde_json::Value {
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    serde_json::json!({ "median": median, "min": sorted[0], "runs": seconds })
}

fn architecture<T>(
    build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
) -> anyhow::Result<Vec<(String, Vec<usize>)>> {
    Ok(reelfarm_models::weights::check::architecture(build)?)
}

/// The Wan 2.1 VAE's `vae/config.json` (diffusers' `AutoencoderKLWan` defaults, which are
/// the published model's architecture; `latents_mean`/`latents_std` left to the defaults,
/// decode does not read them).
const WAN_VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKLWan",
  "attn_scales": [],
  "base_dim": 96,
  "dim_mult": [1, 2, 4, 4],
  "dropout": 0.0,
  "num_res_blocks": 2,
  "temperal_downsample": [false, true, true],
  "z_dim": 16
}
"#;

/// `dir/transformer` (the 1.3B architecture, one shard per block and an index, as diffusers
/// shards) and `dir/vae`, with seeded random bf16 weights: uniform in ±1/sqrt(fan_in) for
/// weight matrices and kernels (torch's default bound), ±1/sqrt(dim) for the modulation
/// tables, ones for norm scales, ±0.02 for biases, so activations stay O(1).
fn write_random_model(dir: &Path, config: &Path, tcfg: TransformerConfig) -> anyhow::Result<()> {
    let transformer = dir.join("transformer");
    std::fs::create_dir_all(&transformer)?;
    std::fs::copy(config, transformer.join("config.json"))?;
    let tensors = architecture(|vb| WanTransformer::load(tcfg, vb))?;
    write_random_component(&transformer, &tensors, true, SEED)?;

    let vae = dir.join("vae");
    std::fs::create_dir_all(&vae)?;
    std::fs::write(vae.join("config.json"), WAN_VAE_CONFIG)?;
    let vcfg: VaeConfig = serde_json::from_str(WAN_VAE_CONFIG)?;
    let tensors = architecture(|vb| WanVae::load(vcfg, vb))?;
    write_random_component(&vae, &tensors, false, SEED + 1)
}
