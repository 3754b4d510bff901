//! Fuzz target: the plan bytes that VIDEO_SEGMENT, AUDIO and ASSEMBLE tasks read.
//!
//! The input is what the artifact store hands a task as its "plan" input:
//! `pipeline::plan::Plan::from_bytes` must refuse anything malformed with an error, never
//! a panic, and a plan it accepts has one row of poses per frame of its clip and one pose
//! per body in each row (the renderer indexes poses by frame and body). The accepted plan
//! must also serialize again and summarize (`scene_json`) without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reelfarm_worker::pipeline::plan::Plan;

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = Plan::from_bytes(data) else {
        return;
    };
    assert_eq!(
        plan.poses.len(),
        plan.spec.frame_count() as usize,
        "one row of poses per frame"
    );
    assert!(
        plan.poses.iter().all(|row| row.len() == plan.bodies.len()),
        "one pose per body in every row"
    );
    let _ = plan.to_bytes();
    let _ = plan.scene_json();
});
