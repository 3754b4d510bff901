//! The plan of a clip: scene spec, per-frame object transforms and contact events.
//! (Scaffold: the pipeline helper replaces the body; the public shape below is the contract.)

use serde::{Deserialize, Serialize};

use super::{ClipSpec, PipelineError};

/// A collision that should be heard: the audio stage synthesizes one impact per event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContactEvent {
    /// Seconds from the start of the clip.
    pub time_s: f64,
    /// Index of the first body in the scene's object list.
    pub body_a: u32,
    /// The other body, or `None` for the ground / walls.
    pub body_b: Option<u32>,
    /// Magnitude of the contact impulse, N·s.
    pub impulse: f64,
    /// Material name of body_a ("rubber", "wood", "metal", "glass", ...).
    pub material: String,
    /// Material name of what it hit.
    pub other_material: String,
}

/// Everything the other tasks of a job need from PLAN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub spec: ClipSpec,
    pub contacts: Vec<ContactEvent>,
}

impl Plan {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plan is plain data")
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PipelineError> {
        serde_json::from_slice(bytes).map_err(|e| PipelineError::InvalidInput(format!("plan: {e}")))
    }
    pub fn scene_json(&self) -> String {
        "{}".to_string()
    }
}

pub fn make_plan(spec: &ClipSpec) -> Result<Plan, PipelineError> {
    Ok(Plan {
        spec: spec.clone(),
        contacts: Vec::new(),
    })
}
