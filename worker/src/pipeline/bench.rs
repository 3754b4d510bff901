//! [`bench_stages`]: one whole clip through every stage of the pipeline in this process, with
//! the wall time of each stage, for `reelfarm bench pipeline`.
//!
//! The clip is rendered as a single segment, the same work a farm spreads over its
//! VIDEO_SEGMENT tasks, done here one stage after another so each can be timed alone:
//! parse → physics → (guide + diffusion) → watermark → H.264 → audio → assemble.
//! The times are wall-clock seconds on whatever else the machine is doing; the stage
//! functions are the ones the worker runs, not copies.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{diffusion, media, plan, provenance, scene, ClipSpec, PipelineError, TaskContext};
use crate::engine::Engine;

/// Job id written into the benchmark clip's watermark and manifest (16 hex digits, as the
/// watermark requires).
const BENCH_JOB_ID: &str = "00000000000be0c4";
/// Farm secret of the benchmark clip (the clip is thrown away).
const BENCH_SECRET: &[u8] = b"reelfarm-bench-pipeline";

/// Wall time of each stage of one clip, seconds, and the amount of work done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    /// Prompt → scene spec.
    pub parse_s: f64,
    /// Placement and rigid-body simulation (the PLAN task, parsing included).
    pub physics_s: f64,
    /// Guide renders of every frame (diffusion conditioning).
    pub guide_s: f64,
    /// Diffusion sampling of every frame, all steps (guide excluded).
    pub diffusion_s: f64,
    /// `diffusion_s / (frames × steps)`.
    pub diffusion_per_frame_step_s: f64,
    /// Embedding the watermark in every frame.
    pub watermark_s: f64,
    /// Contact sounds and ambience, then Opus encoding (0 when the spec has no audio).
    pub audio_s: f64,
    /// H.264 encoding of every frame.
    pub encode_s: f64,
    /// ASSEMBLE: MP4 muxing, signed manifest, poster.
    pub mux_s: f64,
    /// Sum of the stages.
    pub total_s: f64,
    pub frames: u32,
    pub steps: u32,
    /// Size of the resulting MP4, bytes.
    pub mp4_bytes: usize,
}

/// Runs the whole clip `spec` once on `engine` and returns how long each stage took.
pub fn bench_stages(spec: &ClipSpec, engine: &dyn Engine) -> Result<StageTimings, PipelineError> {
    let clock = Instant::now();
    let _ = scene::parse(&spec.prompt);
    let parse_s = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let plan = plan::make_plan(spec)?;
    let plan_bytes = plan.to_bytes();
    let physics_s = clock.elapsed().as_secs_f64();

    let frames = spec.frame_count();
    let mut render = diffusion::RenderTimes::default();
    let mut rendered = diffusion::render_frames_timed(
        spec,
        &plan,
        0..frames,
        engine,
        &mut |_, _| {},
        &AtomicBool::new(false),
        &mut render,
    )?;

    let clock = Instant::now();
    for (index, frame) in rendered.iter_mut().enumerate() {
        provenance::watermark::embed(frame, BENCH_JOB_ID, BENCH_SECRET, index as u32);
    }
    let watermark_s = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let chunk = media::encode_segment(spec, &rendered)?;
    let encode_s = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let audio = if spec.audio {
        let track = super::audio::synthesize(spec, &plan, &mut |_, _| {})?;
        Some(media::encode_audio(spec, &track)?)
    } else {
        None
    };
    let audio_s = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let ctx = TaskContext {
        job_id: BENCH_JOB_ID.into(),
        farm_secret: BENCH_SECRET.to_vec(),
    };
    let artifacts = super::run_assemble(spec, &ctx, &plan_bytes, &[chunk], audio.as_deref(), None)?;
    let mux_s = clock.elapsed().as_secs_f64();
    let mp4_bytes = artifacts
        .iter()
        .find(|a| a.kind == "video")
        .map_or(0, |a| a.bytes.len());

    let frame_steps = f64::from(frames) * f64::from(spec.steps);
    Ok(StageTimings {
        parse_s,
        physics_s,
        guide_s: render.guide_s,
        diffusion_s: render.sampling_s,
        diffusion_per_frame_step_s: render.sampling_s / frame_steps.max(1.0),
        watermark_s,
        audio_s,
        encode_s,
        mux_s,
        total_s: parse_s
            + physics_s
            + render.guide_s
            + render.sampling_s
            + watermark_s
            + audio_s
            + encode_s
            + mux_s,
        frames,
        steps: spec.steps,
        mp4_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::pipeline::Sampler;

    fn spec(seconds: f64, fps: u32, width: u32, height: u32, steps: u32) -> ClipSpec {
        ClipSpec {
            prompt: "a red rubber ball bouncing on a wooden floor".into(),
            duration_seconds: seconds,
            fps,
            width,
            height,
            seed: 7,
            steps,
            sampler: Sampler::DpmSolverPp2m,
            audio: true,
        }
    }

    #[test]
    fn every_stage_is_timed_and_the_work_is_counted() {
        let t = bench_stages(&spec(0.5, 12, 64, 36, 3), &CpuEngine).expect("bench runs");
        assert_eq!((t.frames, t.steps), (6, 3), "0.5 s at 12 fps, 3 steps");
        for (name, v) in [
            ("physics", t.physics_s),
            ("diffusion", t.diffusion_s),
            ("encode", t.encode_s),
            ("audio", t.audio_s),
            ("mux", t.mux_s),
        ] {
            assert!(v > 0.0, "{name} took {v} s: every stage runs");
        }
        let sum = t.parse_s
            + t.physics_s
            + t.guide_s
            + t.diffusion_s
            + t.watermark_s
            + t.audio_s
            + t.encode_s
            + t.mux_s;
        assert!(
            (t.total_s - sum).abs() < 1e-9,
            "total is the sum of the stages"
        );
        assert!(t.mp4_bytes > 0, "a clip was made");
        let json = serde_json::to_string(&t).expect("serializable");
        assert!(json.contains("\"diffusion_per_frame_step_s\""), "{json}");
    }

    /// The demo clip (4 s, 320×180, 12 fps, 20 steps, audio) and, with
    /// `REELFARM_BENCH_1080P=1`, a 10 s 1080p 24 fps clip; run with
    /// `cargo test -p reelfarm-worker --release -- --ignored --nocapture bench_clip`.
    #[test]
    #[ignore = "timing, not a correctness check"]
    fn bench_clip_demo_and_1080p() {
        let demo = bench_stages(&spec(4.0, 12, 320, 180, 20), &CpuEngine).expect("demo clip");
        println!(
            "demo 4 s 320x180 12 fps 20 steps: {}",
            serde_json::to_string(&demo).expect("json")
        );
        if std::env::var("REELFARM_BENCH_1080P").is_ok() {
            let hd = bench_stages(&spec(10.0, 24, 1920, 1080, 20), &CpuEngine).expect("1080p clip");
            println!(
                "1080p 10 s 24 fps 20 steps: {}",
                serde_json::to_string(&hd).expect("json")
            );
        }
    }
}
