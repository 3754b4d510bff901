//! [`ClipSpec`]: the worker's view of a job spec, converted once from the protobuf at the
//! agent's edge, with every default already filled in by the coordinator.

use serde::{Deserialize, Serialize};

/// Diffusion sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sampler {
    Ddim,
    Euler,
    DpmSolverPp2m,
}

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
    /// Number of frames in the clip: `round(duration_seconds * fps)`, at least 1.
    pub fn frame_count(&self) -> u32 {
        ((self.duration_seconds * self.fps as f64).round() as u32).max(1)
    }
}
