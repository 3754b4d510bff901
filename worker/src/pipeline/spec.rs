//! [`ClipSpec`]: the worker's view of a job spec, converted once from the protobuf at the
//! agent's edge, with every default already filled in by the coordinator.

pub use reelfarm_domain::Sampler;
use serde::{Deserialize, Serialize};

/// What to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipSpec {
    pub prompt: String,
    pub duration_seconds: f64,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub steps: u32,
    pub sampler: Sampler,
    pub audio: bool,
}

impl ClipSpec {
    /// Number of frames in the clip ([`reelfarm_domain::frame_count`], the rule the
    /// coordinator plans segments by).
    pub fn frame_count(&self) -> u32 {
        reelfarm_domain::frame_count(self.duration_seconds, self.fps)
    }
}
