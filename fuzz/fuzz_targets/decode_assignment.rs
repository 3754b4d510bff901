//! Fuzz target: the worker's decoding of an assignment from the coordinator's stream.
//!
//! The input is a protobuf-encoded `reelfarm.v1.Assignment`, handed to
//! `agent::executor::decode`, which promises never to panic. Beyond that, an accepted
//! assignment is one the pipeline can run: ids safe to use in artifact names, a known task
//! kind, a spec within the worker's own bounds, and a frame range inside the clip (which
//! is what a VIDEO_SEGMENT task then renders: `media::owned_frames` of it).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use reelfarm_proto::v1;
use reelfarm_worker::agent::executor;
use reelfarm_worker::pipeline::media;

/// The worker's bounds, as documented in `executor.rs` (written again as the oracle).
const MAX_FRAMES: f64 = 1200.0;
const MAX_SIDE: u32 = 3840;

fn safe_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fuzz_target!(|data: &[u8]| {
    let Ok(a) = v1::Assignment::decode(data) else {
        return;
    };
    let task = match executor::decode(&a) {
        Ok(task) => task,
        Err(e) => {
            assert!(!e.is_empty(), "a refusal says why");
            return;
        }
    };
    assert!(
        safe_id(&task.token.job_id) && safe_id(&task.token.task_id),
        "ids {:?}",
        task.token
    );
    assert_ne!(task.kind, v1::TaskKind::Unspecified);
    assert_eq!(task.kind as i32, a.kind, "kind as sent");
    let s = &task.spec;
    assert!(
        s.duration_seconds.is_finite()
            && s.duration_seconds > 0.0
            && s.duration_seconds * f64::from(s.fps) <= MAX_FRAMES,
        "duration {} at {} fps",
        s.duration_seconds,
        s.fps
    );
    assert!((1..=120).contains(&s.fps), "fps {}", s.fps);
    assert!(
        (2..=MAX_SIDE).contains(&s.width) && s.width.is_multiple_of(2),
        "width {}",
        s.width
    );
    assert!(
        (2..=MAX_SIDE).contains(&s.height) && s.height.is_multiple_of(2),
        "height {}",
        s.height
    );
    assert!((1..=1000).contains(&s.steps), "steps {}", s.steps);
    let sent = a.spec.as_ref().expect("an accepted assignment has a spec");
    assert_eq!(Some(s.seed), sent.seed, "seed as sent");
    assert_eq!(s.prompt, sent.prompt, "prompt as sent");
    let frames = s.frame_count();
    assert!(
        task.frame_start < task.frame_end && task.frame_end <= frames,
        "frames {}..{} of {frames}",
        task.frame_start,
        task.frame_end
    );
    let owned = media::owned_frames(task.frame_start..task.frame_end, frames);
    assert!(
        owned.start <= owned.end && owned.end <= frames,
        "owned frames {owned:?} of {frames}"
    );
    assert_eq!(
        task.inputs.len(),
        a.inputs.len(),
        "one input per input sent"
    );
});
