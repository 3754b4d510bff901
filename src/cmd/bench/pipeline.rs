//! `reelfarm bench pipeline`: one clip per frame size and engine (`--engine cpu,cuda`: the
//! CPU baseline and the GPU in the same run) through every stage of the reference pipeline,
//! in this process, with the wall time of each stage (parse,
//! physics, guide, diffusion and its per-frame-step cost, watermark, encode, audio, mux).
//!
//! The stage functions are the ones workers run (`reelfarm_worker::pipeline::bench_stages`);
//! the clip is rendered as one segment so each stage can be timed alone.

use std::sync::Arc;

use reelfarm_worker::config::EngineChoice;
use reelfarm_worker::engine::Engine;
use reelfarm_worker::pipeline::{bench_stages, ClipSpec, Sampler};

pub struct PipelineArgs {
    /// WIDTHxHEIGHT per run.
    pub sizes: Vec<String>,
    pub seconds: f64,
    pub fps: u32,
    pub steps: u32,
    pub audio: bool,
    /// `cpu` and/or `cuda` (device 0).
    pub engines: Vec<String>,
}

/// The engine `name` names; `cuda` needs the `cuda` build and a device.
fn engine(name: &str) -> anyhow::Result<Arc<dyn Engine>> {
    let choice = match name {
        "cpu" => EngineChoice::Cpu,
        "cuda" => EngineChoice::Cuda,
        other => anyhow::bail!("--engine {other:?}: cpu or cuda"),
    };
    Ok(reelfarm_worker::engine::select::select(choice, 0)?.engine)
}

pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let engines = args
        .engines
        .iter()
        .map(|e| Ok((e.clone(), engine(e)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut results = Vec::new();
    for size in &args.sizes {
        let (width, height) = parse_size(size)?;
        let spec = ClipSpec {
            prompt: "a red rubber ball bouncing on a wooden floor".into(),
            duration_seconds: args.seconds,
            fps: args.fps,
            width,
            height,
            seed: 7,
            steps: args.steps,
            sampler: Sampler::DpmSolverPp2m,
            audio: args.audio,
        };
        for (engine_name, engine) in &engines {
            let timings = bench_stages(&spec, engine.as_ref()).map_err(|e| {
                anyhow::anyhow!("{size} on {engine_name}: the pipeline failed: {e}")
            })?;
            let r = serde_json::json!({
                "engine": engine_name,
                "size": size,
                "seconds": args.seconds,
                "fps": args.fps,
                "steps": args.steps,
                "audio": args.audio,
                "stages": timings,
            });
            eprintln!("{r}");
            results.push(r);
        }
    }
    let report = serde_json::json!({
        "bench": "pipeline",
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "machine": super::machine(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `320x180` → (320, 180); both even (H.264 4:2:0 needs it).
fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = s
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
    match parsed {
        Some((w, h)) if w >= 16 && h >= 16 && w % 2 == 0 && h % 2 == 0 => Ok((w, h)),
        _ => anyhow::bail!("--sizes: {s:?} is not WIDTHxHEIGHT with even sides of at least 16"),
    }
}
