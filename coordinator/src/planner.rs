//! The planner: turns a validated [`JobSpec`] into the job's tasks.
//!
//! ```text
//! PLAN ──▶ VIDEO_SEGMENT × K ─┬─▶ ASSEMBLE (reads the plan too)
//!      └─▶ AUDIO (if spec.audio)┘
//! ```
//!
//! K is chosen so a job spreads over many workers: segments of about
//! [`PlannerConfig::segment_frames`] frames, at most [`PlannerConfig::max_segments`]. Every
//! frame of the clip belongs to exactly one segment, in order.
//!
//! A model job (an open model, `JobSpec.model`) is not split into segments: a diffusion
//! transformer attends over the whole clip at once.
//!
//! ```text
//! PLAN ─────────────────────────────┬─▶ ASSEMBLE
//!  │ └─▶ AUDIO (if spec.audio) ─────┤
//!  └ ─ ─(if guide)─┐                │
//! TEXT_ENCODE ──▶ DENOISE ──▶ DECODE┘
//! ```
//!
//! The PLAN still runs: its physics drives the audio's contact events, and with `guide`
//! the motion DENOISE starts from.

use crate::model::{JobSpec, TaskDef, TaskKind};

/// Planner settings (from the coordinator's flags).
#[derive(Clone, Copy, Debug)]
pub struct PlannerConfig {
    /// Target frames per VIDEO_SEGMENT task.
    pub segment_frames: u32,
    /// Upper bound on VIDEO_SEGMENT tasks per job.
    pub max_segments: u32,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        // 12 frames = 1 s at the default 12 fps: small enough that the demo clip spreads
        // over several workers, large enough that per-task overhead stays small.
        Self {
            segment_frames: 12,
            max_segments: 64,
        }
    }
}

/// Relative costs for the progress figure: a frame-step of diffusion is the unit.
const PLAN_WEIGHT: f64 = 1.0;
const AUDIO_WEIGHT_PER_FRAME: f64 = 0.5;
const ASSEMBLE_WEIGHT_PER_FRAME: f64 = 0.1;
/// Model jobs: the text encoder is a fixed cost; a VAE decode costs about one step.
const TEXT_WEIGHT: f64 = 4.0;
const DECODE_WEIGHT_PER_FRAME: f64 = 1.0;

/// A task's estimated work, for the tenants' fair share (see `scheduler::queue`): its
/// weight in frame-steps times the pixels of a frame, in units of 1,024 pixel-steps, at
/// least 1. A 1080p segment of 12 frames at 30 steps is 729,000 units; its job's plan, 2,025.
pub fn estimated_work(spec: &JobSpec, task: &TaskDef) -> u64 {
    let pixels = f64::from(spec.width) * f64::from(spec.height);
    ((task.weight * pixels / 1024.0).round() as u64).max(1)
}

/// Where the task `id` sits in a plan of `count` tasks made by [`plan`], guessed from the
/// id's shape ("plan" first, "segment-NNN" after it, then "audio" and "assemble"); callers
/// confirm it against the plan. Saves a scan of the task ids on every worker report.
pub fn index_hint(id: &str, count: usize) -> Option<usize> {
    match id {
        "plan" => Some(0),
        "text" => Some(1),
        "denoise" => Some(2),
        "decode" => Some(3),
        "assemble" => count.checked_sub(1),
        "audio" => count.checked_sub(2),
        _ => id
            .strip_prefix("segment-")?
            .parse::<usize>()
            .ok()?
            .checked_add(1),
    }
}

/// Plans `spec` into tasks, in dependency order (every task's deps come before it).
pub fn plan(spec: &JobSpec, config: PlannerConfig) -> Vec<TaskDef> {
    if spec.model.is_some() {
        return plan_model_job(spec);
    }
    let frames = spec.frame_count();
    let wanted = frames.div_ceil(config.segment_frames.max(1));
    let segments = wanted.clamp(1, config.max_segments.max(1)).min(frames);
    let per_segment = frames.div_ceil(segments);

    let mut tasks = vec![TaskDef {
        id: "plan".into(),
        kind: TaskKind::Plan,
        frame_start: 0,
        frame_end: frames,
        segment_index: 0,
        deps: vec![],
        weight: PLAN_WEIGHT,
    }];
    let mut start = 0;
    let mut index = 0;
    while start < frames {
        let end = (start + per_segment).min(frames);
        tasks.push(TaskDef {
            id: format!("segment-{index:03}"),
            kind: TaskKind::VideoSegment,
            frame_start: start,
            frame_end: end,
            segment_index: index,
            deps: vec![0],
            weight: f64::from(end - start) * f64::from(spec.steps),
        });
        start = end;
        index += 1;
    }
    if spec.audio {
        tasks.push(TaskDef {
            id: "audio".into(),
            kind: TaskKind::Audio,
            frame_start: 0,
            frame_end: frames,
            segment_index: 0,
            deps: vec![0],
            weight: f64::from(frames) * AUDIO_WEIGHT_PER_FRAME,
        });
    }
    // ASSEMBLE reads the plan, every segment and the audio: everything before it.
    let deps = (0..tasks.len() as u32).collect();
    tasks.push(TaskDef {
        id: "assemble".into(),
        kind: TaskKind::Assemble,
        frame_start: 0,
        frame_end: frames,
        segment_index: 0,
        deps,
        weight: f64::from(frames) * ASSEMBLE_WEIGHT_PER_FRAME,
    });
    tasks
}

/// A model job: plan, text, denoise, decode, audio, assemble (see the module docs).
fn plan_model_job(spec: &JobSpec) -> Vec<TaskDef> {
    let frames = spec.frame_count();
    let guided = spec
        .model
        .as_ref()
        .is_some_and(|m| m.guide_strength.is_some());
    let whole = |id: &str, kind, deps: Vec<u32>, weight| TaskDef {
        id: id.into(),
        kind,
        frame_start: 0,
        frame_end: frames,
        segment_index: 0,
        deps,
        weight,
    };
    let mut tasks = vec![
        whole("plan", TaskKind::Plan, vec![], PLAN_WEIGHT),
        whole("text", TaskKind::TextEncode, vec![], TEXT_WEIGHT),
        whole(
            "denoise",
            TaskKind::Denoise,
            if guided { vec![0, 1] } else { vec![1] },
            f64::from(frames) * f64::from(spec.steps),
        ),
        whole(
            "decode",
            TaskKind::Decode,
            vec![2],
            f64::from(frames) * DECODE_WEIGHT_PER_FRAME,
        ),
    ];
    if spec.audio {
        tasks.push(whole(
            "audio",
            TaskKind::Audio,
            vec![0],
            f64::from(frames) * AUDIO_WEIGHT_PER_FRAME,
        ));
    }
    // ASSEMBLE reads the plan, the decoded segment and the audio (not the text embeddings
    // or the latents, which it has no use for).
    let mut deps = vec![0, 3];
    if spec.audio {
        deps.push(4);
    }
    tasks.push(whole(
        "assemble",
        TaskKind::Assemble,
        deps,
        f64::from(frames) * ASSEMBLE_WEIGHT_PER_FRAME,
    ));
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Priority, Sampler};
    use proptest::prelude::*;

    fn spec(duration_seconds: f64, fps: u32, audio: bool) -> JobSpec {
        JobSpec {
            prompt: "a ball".into(),
            duration_seconds,
            fps,
            width: 320,
            height: 180,
            seed: 1,
            steps: 20,
            sampler: Sampler::Ddim,
            audio,
            priority: Priority::Normal,
            tenant: "default".into(),
            labels: Default::default(),
            model: None,
        }
    }

    fn model_spec(audio: bool, guided: bool) -> JobSpec {
        JobSpec {
            model: Some(crate::model::ModelSpec {
                name: "wan".into(),
                family: "wan2.1-t2v".into(),
                negative_prompt: String::new(),
                guidance_scale: 5.0,
                guide_strength: guided.then_some(0.5),
            }),
            sampler: Sampler::UniPc,
            ..spec(49.0 / 12.0, 12, audio)
        }
    }

    #[test]
    fn a_model_job_is_text_denoise_decode_over_the_whole_clip() {
        for (audio, guided) in [(true, false), (false, false), (true, true), (false, true)] {
            let s = model_spec(audio, guided);
            let tasks = plan(&s, PlannerConfig::default());
            let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
            let mut want = vec!["plan", "text", "denoise", "decode"];
            if audio {
                want.push("audio");
            }
            want.push("assemble");
            assert_eq!(ids, want, "audio {audio}, guided {guided}");
            assert!(tasks
                .iter()
                .all(|t| t.frame_start == 0 && t.frame_end == 49));
            assert_eq!(
                tasks[2].deps.contains(&0),
                guided,
                "the guide reads the plan"
            );
            for (i, t) in tasks.iter().enumerate() {
                assert!(t.deps.iter().all(|d| (*d as usize) < i), "deps come first");
                assert_eq!(index_hint(&t.id, tasks.len()), Some(i), "{}", t.id);
            }
            let assemble = tasks.last().expect("assemble");
            assert!(
                assemble.deps.contains(&3),
                "assemble reads the decoded clip"
            );
            assert_eq!(assemble.deps.contains(&4), audio);
        }
    }

    #[test]
    fn demo_clip_is_split_into_several_segments_plus_audio_and_assemble() {
        let tasks = plan(&spec(4.0, 12, true), PlannerConfig::default());
        let kinds: Vec<_> = tasks.iter().map(|t| t.kind).collect();
        assert_eq!(kinds.first(), Some(&TaskKind::Plan), "plan first");
        assert_eq!(kinds.last(), Some(&TaskKind::Assemble), "assemble last");
        let segments = kinds
            .iter()
            .filter(|k| **k == TaskKind::VideoSegment)
            .count();
        assert_eq!(segments, 4, "48 frames at 12 frames a segment");
        assert_eq!(kinds.iter().filter(|k| **k == TaskKind::Audio).count(), 1);
    }

    #[test]
    fn no_audio_task_when_audio_is_off() {
        let tasks = plan(&spec(2.0, 12, false), PlannerConfig::default());
        assert!(tasks.iter().all(|t| t.kind != TaskKind::Audio));
        let assemble = tasks.last().expect("assemble task");
        assert_eq!(
            assemble.deps.len(),
            tasks.len() - 1,
            "assemble waits for every other task"
        );
    }

    #[test]
    fn segment_count_is_capped() {
        let config = PlannerConfig {
            segment_frames: 1,
            max_segments: 8,
        };
        let tasks = plan(&spec(20.0, 60, true), config);
        let segments = tasks
            .iter()
            .filter(|t| t.kind == TaskKind::VideoSegment)
            .count();
        assert_eq!(segments, 8);
    }

    proptest! {
        /// Every frame of the clip is covered by exactly one segment, in order, and every
        /// task's dependencies come before it.
        #[test]
        fn segments_cover_every_frame_exactly_once(
            duration in 0.5f64..20.0,
            fps in 1u32..=60,
            segment_frames in 1u32..100,
            max_segments in 1u32..100,
            audio: bool,
        ) {
            let s = spec(duration, fps, audio);
            let tasks = plan(&s, PlannerConfig { segment_frames, max_segments });
            let mut next = 0;
            for t in tasks.iter().filter(|t| t.kind == TaskKind::VideoSegment) {
                prop_assert_eq!(t.frame_start, next, "segments are contiguous");
                prop_assert!(t.frame_end > t.frame_start, "segments are not empty");
                next = t.frame_end;
            }
            prop_assert_eq!(next, s.frame_count(), "segments end at the last frame");
            for (i, t) in tasks.iter().enumerate() {
                prop_assert!(t.deps.iter().all(|d| (*d as usize) < i), "deps come first");
            }
        }

        /// The index guessed from a task's id is where the plan put it.
        #[test]
        fn index_hints_find_every_task(
            duration in 0.5f64..20.0,
            fps in 1u32..=60,
            max_segments in 1u32..1200,
            audio: bool,
        ) {
            let config = PlannerConfig { segment_frames: 1, max_segments };
            let tasks = plan(&spec(duration, fps, audio), config);
            for (i, t) in tasks.iter().enumerate() {
                prop_assert_eq!(index_hint(&t.id, tasks.len()), Some(i), "{}", t.id);
            }
        }
    }

    #[test]
    fn index_hints_of_unknown_ids_are_none_or_checked_by_the_caller() {
        assert_eq!(index_hint("nonsense", 5), None);
        assert_eq!(index_hint("segment-x", 5), None);
        assert_eq!(index_hint("assemble", 0), None, "no underflow");
        // Out of range: the caller's `get` finds nothing and falls back to a scan.
        assert_eq!(index_hint("segment-999", 5), Some(1000));
    }
}
