//! Frames by diffusion. (Scaffold, replaced by the pipeline work.)

use std::ops::Range;
use std::sync::atomic::AtomicBool;

use super::{plan::Plan, ClipSpec, Frame, PipelineError, Progress};
use crate::engine::Engine;

pub fn render_frames(
    spec: &ClipSpec,
    _plan: &Plan,
    frames: Range<u32>,
    _engine: &dyn Engine,
    progress: Progress<'_>,
    _cancel: &AtomicBool,
) -> Result<Vec<Frame>, PipelineError> {
    progress(1, 1);
    Ok(frames
        .map(|_| Frame::new(spec.width, spec.height))
        .collect())
}
