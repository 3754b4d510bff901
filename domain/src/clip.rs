//! Clip parameters whose meaning both wings share: the coordinator plans a job's segments
//! from the frame count and the worker renders exactly those frames, so the rule is written
//! once, here.

use serde::{Deserialize, Serialize};

/// Diffusion sampler. Serialized by variant name (`"Ddim"`, ...) in the coordinator's
/// durable job records. The first three are the reference pipeline's; the flow-matching
/// ones are for open models (diffusers' FlowMatchEulerDiscreteScheduler and
/// UniPCMultistepScheduler in flow-prediction mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sampler {
    Ddim,
    Euler,
    DpmSolverPp2m,
    FlowEuler,
    UniPc,
}

impl Sampler {
    /// A flow-matching sampler (open models only).
    pub fn is_flow_matching(self) -> bool {
        matches!(self, Sampler::FlowEuler | Sampler::UniPc)
    }
}

/// Frames in a clip of `duration_seconds` at `fps`: `round(duration_seconds * fps)`, at
/// least 1.
pub fn frame_count(duration_seconds: f64, fps: u32) -> u32 {
    ((duration_seconds * fps as f64).round() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_rounds_to_nearest_and_is_never_zero() {
        assert_eq!(frame_count(4.0, 24), 96, "4 s at 24 fps");
        assert_eq!(frame_count(0.52, 25), 13, "13.0 frames");
        assert_eq!(frame_count(0.51, 25), 13, "12.75 rounds up");
        assert_eq!(frame_count(0.49, 25), 12, "12.25 rounds down");
        assert_eq!(frame_count(0.001, 24), 1, "a clip has at least one frame");
    }

    #[test]
    fn sampler_serializes_by_variant_name() {
        // Durable job records written before this type moved here used these names.
        let names: Vec<String> = [Sampler::Ddim, Sampler::Euler, Sampler::DpmSolverPp2m]
            .iter()
            .map(|s| serde_json::to_string(s).expect("serializable"))
            .collect();
        assert_eq!(names, ["\"Ddim\"", "\"Euler\"", "\"DpmSolverPp2m\""]);
    }
}
