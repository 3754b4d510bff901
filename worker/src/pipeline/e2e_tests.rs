//! End-to-end tests of the pipeline through the entry points the worker agent calls
//! (`run_plan` → `run_segment` × K → `run_audio` → `run_assemble`), measured on the
//! assembled MP4 as a viewer gets it: decoded by the real ffmpeg (a missing binary fails the
//! test with a message), re-encoded by x264, stripped of metadata.
//!
//! One bouncing-ball clip ([`bounce`], 3 s, 480×270, 30 fps, two segments) is rendered once
//! and shared by the provenance, physics and sync tests.

use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use crate::engine::cpu::CpuEngine;
use crate::pipeline::guide::tracking::{assert_gravity_and_restitution, height_track};
use crate::pipeline::media::ffmpeg_tests::{detect_onsets, ffmpeg_frames, reencode, run, write};
use crate::pipeline::plan::Plan;
use crate::pipeline::{
    provenance, run_assemble, run_audio, run_plan, run_segment, ClipSpec, Sampler, TaskContext,
};

const SECRET: &[u8] = b"e2e-farm-secret";
const JOB: &str = "0badc0ffee123456";
/// Largest distance allowed between an audio onset and its contact, seconds (the issue's
/// 10 ms; one 20 ms Opus frame would be twice that).
const SYNC_TOLERANCE_S: f64 = 0.010;
/// Contacts quieter than this share of the loudest one are below the onset detector's
/// threshold (a ball settling on the floor): they are not required to be heard.
const AUDIBLE_IMPULSE_SHARE: f64 = 0.05;

/// A job rendered through the task entry points: its plan and its video.mp4.
struct Job {
    spec: ClipSpec,
    plan: Plan,
    mp4: Vec<u8>,
}

fn render_job(spec: &ClipSpec, job_id: &str, secret: &[u8], segments: &[Range<u32>]) -> Job {
    let plan = run_plan(spec).expect("plan");
    let ctx = TaskContext {
        job_id: job_id.into(),
        farm_secret: secret.to_vec(),
    };
    let chunks: Vec<Vec<u8>> = segments
        .iter()
        .map(|frames| {
            run_segment(
                spec,
                &ctx,
                &plan.bytes,
                frames.clone(),
                &CpuEngine,
                &mut |_, _| {},
                &AtomicBool::new(false),
            )
            .expect("segment")
        })
        .collect();
    let audio = spec
        .audio
        .then(|| run_audio(spec, &plan.bytes, &mut |_, _| {}).expect("audio"));
    let artifacts =
        run_assemble(spec, &ctx, &plan.bytes, &chunks, audio.as_deref(), None).expect("assemble");
    Job {
        spec: spec.clone(),
        plan: Plan::from_bytes(&plan.bytes).expect("plan parses"),
        mp4: artifacts
            .into_iter()
            .find(|a| a.kind == "video")
            .expect("a video artifact")
            .bytes,
    }
}

fn clip_spec(prompt: &str, seconds: f64, fps: u32, size: (u32, u32), steps: u32) -> ClipSpec {
    ClipSpec {
        prompt: prompt.into(),
        duration_seconds: seconds,
        fps,
        width: size.0,
        height: size.1,
        seed: 42,
        steps,
        sampler: Sampler::DpmSolverPp2m,
        audio: true,
    }
}

/// The shared clip: a red rubber ball falling and bouncing on the default floor, rendered
/// as two segments (split at frame 45, inside a GOP).
fn bounce() -> &'static Job {
    static CLIP: OnceLock<Job> = OnceLock::new();
    CLIP.get_or_init(|| {
        let spec = clip_spec("a red rubber ball falling", 3.0, 30, (480, 270), 8);
        let n = spec.frame_count();
        render_job(&spec, JOB, SECRET, &[0..45, 45..n])
    })
}

#[test]
fn full_pipeline_clip_verifies_as_ours_and_still_does_after_reencoding_and_stripping() {
    let clip = bounce();
    let dir = tempfile::tempdir().expect("tempdir");
    let original = write(dir.path(), "video.mp4", &clip.mp4);

    let v = provenance::verify(&clip.mp4, SECRET);
    assert!(v.ours && v.manifest_valid, "original: {v:?}");
    assert_eq!(v.job_id.as_deref(), Some(JOB), "original: {v:?}");
    assert_eq!(v.frames_decoded, 90, "every frame read: {v:?}");

    let crf28 = reencode(
        &original,
        &dir.path().join("crf28.mp4"),
        &["-c:v", "libx264", "-crf", "28"],
    );
    let v = provenance::verify(&crf28, SECRET);
    eprintln!("crf 28 copy: {v:?}");
    assert!(
        v.ours && !v.manifest_valid && v.job_id.as_deref() == Some(JOB),
        "crf 28 re-encode verifies by its watermark alone: {v:?}"
    );
    assert_eq!(v.frames_decoded, 90, "every re-encoded frame read: {v:?}");

    let stripped_path = dir.path().join("stripped.mp4");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-i",
            original.to_str().expect("utf-8 path"),
            "-map_metadata",
            "-1",
            "-c",
            "copy",
            stripped_path.to_str().expect("utf-8 path"),
        ],
    );
    let stripped = std::fs::read(&stripped_path).expect("read stripped copy");
    let v = provenance::verify(&stripped, SECRET);
    eprintln!("stripped copy: {v:?}");
    assert!(
        v.ours && !v.manifest_valid && v.job_id.as_deref() == Some(JOB),
        "stripped copy verifies by its watermark alone: {v:?}"
    );
}

#[test]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "one segment spanning the whole clip: a slice of one range, not a list of frames"
)]
fn clips_of_another_farm_or_without_a_watermark_are_not_ours() {
    let spec = clip_spec("a red rubber ball bouncing", 1.0, 24, (320, 180), 4);
    let n = spec.frame_count();
    let other = render_job(&spec, JOB, b"another farm", &[0..n]);
    let v = provenance::verify(&other.mp4, SECRET);
    assert!(!v.ours && v.job_id.is_none(), "another farm's clip: {v:?}");
    assert_eq!(
        v.frames_decoded, n as usize,
        "its pictures were read: {v:?}"
    );
    assert!(
        provenance::verify(&other.mp4, b"another farm").ours,
        "it is that farm's"
    );

    // A job id the watermark cannot carry leaves the pictures unmarked; with its manifest
    // stripped nothing says the clip is ours.
    let unmarked = render_job(&spec, "not-a-hex-job-id", SECRET, &[0..n]);
    let v = provenance::verify(&unmarked.mp4, SECRET);
    assert!(
        v.ours && v.manifest_valid && v.watermark_confidence == 0.0,
        "unmarked clip: ours by its manifest only: {v:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = reencode(
        &write(dir.path(), "unmarked.mp4", &unmarked.mp4),
        &dir.path().join("unmarked-crf28.mp4"),
        &["-c:v", "libx264", "-crf", "28"],
    );
    let v = provenance::verify(&copy, SECRET);
    assert!(!v.ours, "unmarked clip re-encoded: {v:?}");
}

#[test]
fn physics_is_measurable_in_the_decoded_output_mp4() {
    let clip = bounce();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "video.mp4", &clip.mp4);
    let frames = ffmpeg_frames(&path, clip.spec.width, clip.spec.height);
    assert_eq!(frames.len(), 90, "ffmpeg decodes every frame");
    let track = height_track(&clip.plan, &frames, 0);
    assert_gravity_and_restitution(&clip.plan, &track, "decoded MP4");
}

#[test]
fn audio_onsets_in_the_output_mp4_are_within_10_ms_of_the_plans_contacts() {
    let clip = bounce();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "video.mp4", &clip.mp4);
    let raw = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            path.to_str().expect("utf-8 path"),
            "-map",
            "0:a",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-",
        ],
    );
    let pcm: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let onsets = detect_onsets(&pcm, 48_000);
    let contacts = &clip.plan.contacts;
    let loudest = contacts.iter().map(|c| c.impulse).fold(0.0, f64::max);
    eprintln!(
        "onsets {onsets:?}; contacts {:?}",
        contacts
            .iter()
            .map(|c| (c.time_s, c.impulse))
            .collect::<Vec<_>>()
    );
    let audible: Vec<f64> = contacts
        .iter()
        .filter(|c| c.impulse >= AUDIBLE_IMPULSE_SHARE * loudest)
        .map(|c| c.time_s)
        .collect();
    assert!(
        audible.len() >= 3,
        "the ball bounces at least 3 times: {audible:?}"
    );
    let nearest = |t: f64, set: &[f64]| set.iter().map(|s| (s - t).abs()).fold(f64::MAX, f64::min);
    for &t in &audible {
        let d = nearest(t, &onsets);
        assert!(
            d <= SYNC_TOLERANCE_S,
            "contact at {t:.4} s: nearest onset {:.1} ms away (onsets {onsets:?})",
            d * 1e3
        );
    }
    let all: Vec<f64> = contacts.iter().map(|c| c.time_s).collect();
    for &o in &onsets {
        let d = nearest(o, &all);
        assert!(
            d <= SYNC_TOLERANCE_S,
            "onset at {o:.4} s has no contact within 10 ms (nearest {:.1} ms)",
            d * 1e3
        );
    }
}

#[test]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "one segment spanning the whole clip: a slice of one range, not a list of frames"
)]
fn one_segment_and_four_segments_give_the_same_mp4_and_the_same_decoded_frames() {
    let spec = clip_spec("a red rubber ball bouncing", 1.0, 24, (96, 54), 4);
    let whole = render_job(&spec, JOB, SECRET, &[0..24]);
    let dir = tempfile::tempdir().expect("tempdir");
    let decoded = |name: &str, bytes: &[u8]| {
        let path = write(dir.path(), name, bytes);
        run(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-i",
                path.to_str().expect("utf-8 path"),
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ],
        )
    };
    let reference = decoded("whole.mp4", &whole.mp4);
    assert_eq!(reference.len(), 24 * 96 * 54 * 3, "24 frames decode");
    // The planner's even split, and an uneven one that cuts inside GOPs.
    for split in [
        vec![0..6, 6..12, 12..18, 18..24],
        vec![0..5, 5..13, 13..20, 20..24],
    ] {
        let parts = render_job(&spec, JOB, SECRET, &split);
        assert!(
            parts.mp4 == whole.mp4,
            "{split:?}: the MP4 is byte-identical to the one-segment render"
        );
        assert!(
            decoded("parts.mp4", &parts.mp4) == reference,
            "{split:?}: ffmpeg decodes the same frames"
        );
    }
}
