//! The plan of a clip: scene spec, camera, per-frame body transforms and contact events.
//!
//! PLAN task: [`make_plan`] parses the prompt ([`super::scene`]), turns each object into a
//! [`Body`] with a shape ([`shape`]) and a mass, places the bodies ([`placement`], seeded),
//! simulates them ([`physics`], rapier3d), samples their poses at the clip's frame times and
//! picks the shot's [`Camera`] ([`camera`]). Nothing here reads the guide render: data flows
//! plan → guide.
//! The serialized plan is the input of every other task: the VIDEO_SEGMENT tasks render
//! frames from the poses, the shapes and the camera, the AUDIO task synthesizes the contact
//! events from their materials.

pub mod camera;
pub(crate) mod physics;
pub(crate) mod placement;
pub mod shape;

use serde::{Deserialize, Serialize};

pub use self::camera::Camera;
pub use self::shape::BodyShape;
use super::scene::{self, Material, SceneSpec};
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
    /// Material of body_a (serialized as its name: "rubber", "wood", "metal", ...).
    pub material: Material,
    /// Material of what it hit: the other body's, or the floor's or the walls'.
    pub other_material: Material,
}

/// One simulated body (index = index in `scene.objects`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub shape: BodyShape,
    pub material: Material,
    /// Linear RGB in `[0, 1]`.
    pub colour: [f32; 3],
    /// kg, from the shape's volume and the material's density.
    pub mass: f32,
}

/// Pose of a body at one frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Centre, metres.
    pub position: [f32; 3],
    /// Orientation, unit quaternion `[x, y, z, w]`.
    pub rotation: [f32; 4],
}

/// Everything the other tasks of a job need from PLAN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub spec: ClipSpec,
    /// What was understood of the prompt.
    pub scene: SceneSpec,
    /// The fixed camera of the clip.
    pub camera: Camera,
    /// The simulated bodies.
    pub bodies: Vec<Body>,
    /// `poses[frame][body]`, one row per frame of the clip.
    pub poses: Vec<Vec<Pose>>,
    /// Impacts hard enough to be heard, in time order.
    pub contacts: Vec<ContactEvent>,
}

/// The bodies of a scene.
pub(crate) fn bodies_of(scene: &SceneSpec) -> Vec<Body> {
    scene
        .objects
        .iter()
        .map(|o| {
            let shape = BodyShape::of(o.shape, o.size);
            Body {
                mass: shape.volume() * o.material.props().density,
                shape,
                material: o.material,
                colour: o.colour.rgb,
            }
        })
        .collect()
}

/// Longest clip the planner accepts, seconds: three times the coordinator's 20 s job cap, a
/// guard against absurd specs (it bounds the simulation's substeps and the plan's size).
const MAX_DURATION_S: f64 = 60.0;

impl Plan {
    /// Serializes the plan (JSON: plain data, readable when debugging a job).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plan is plain data")
    }

    /// Parses bytes written by [`Plan::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PipelineError> {
        let plan: Plan = serde_json::from_slice(bytes)
            .map_err(|e| PipelineError::InvalidInput(format!("plan: {e}")))?;
        if plan.poses.len() != plan.spec.frame_count() as usize
            || plan.poses.iter().any(|row| row.len() != plan.bodies.len())
        {
            return Err(PipelineError::InvalidInput(format!(
                "plan: {} pose rows for {} frames and {} bodies",
                plan.poses.len(),
                plan.spec.frame_count(),
                plan.bodies.len()
            )));
        }
        Ok(plan)
    }

    /// Human-readable JSON of what was understood of the prompt and what was ignored.
    pub fn scene_json(&self) -> String {
        let s = &self.scene;
        let objects: Vec<_> = s
            .objects
            .iter()
            .zip(&self.bodies)
            .map(|(o, b)| {
                serde_json::json!({
                    "shape": o.shape,
                    "colour": o.colour.name,
                    "material": o.material.props().name,
                    "size": o.size,
                    "motion": o.motion,
                    "spinning": o.spinning,
                    "mass_kg": (b.mass * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        let value = serde_json::json!({
            "objects": objects,
            "floor": { "material": s.floor.material.props().name, "colour": s.floor.colour.name },
            "background": s.background.name,
            "camera": s.shot,
            "lighting": s.lighting,
            "style": s.style,
            "understood_words": s.understood,
            "ignored_words": s.ignored,
            "notes": s.notes,
            "physics": {
                "gravity_m_s2": physics::GRAVITY,
                "substep_hz": physics::SUBSTEP_HZ,
                "frames": self.poses.len(),
                "contact_events": self.contacts.len(),
            },
        });
        serde_json::to_string_pretty(&value).expect("scene summary is plain data")
    }
}

/// PLAN: prompt → scene → bodies → simulation. Deterministic in (spec, seed).
pub fn make_plan(spec: &ClipSpec) -> Result<Plan, PipelineError> {
    if !(spec.duration_seconds > 0.0 && spec.duration_seconds <= MAX_DURATION_S) {
        return Err(PipelineError::InvalidInput(format!(
            "duration_seconds must be in (0, {MAX_DURATION_S}], got {}",
            spec.duration_seconds
        )));
    }
    if spec.fps == 0 || spec.width == 0 || spec.height == 0 {
        return Err(PipelineError::InvalidInput(format!(
            "fps, width and height must be positive, got {} fps {}x{}",
            spec.fps, spec.width, spec.height
        )));
    }
    let scene = scene::parse(&spec.prompt);
    let bodies = bodies_of(&scene);
    let starts = placement::place(&scene, &bodies, spec.seed);
    let sim = physics::simulate(&bodies, &starts, &scene, spec.frame_count(), spec.fps)?;
    Ok(Plan {
        spec: spec.clone(),
        camera: Camera::for_shot(scene.shot, spec.width, spec.height),
        scene,
        bodies,
        poses: sim.poses,
        contacts: sim.contacts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Sampler;

    fn spec(prompt: &str) -> ClipSpec {
        ClipSpec {
            prompt: prompt.into(),
            duration_seconds: 2.0,
            fps: 12,
            width: 64,
            height: 36,
            seed: 3,
            steps: 4,
            sampler: Sampler::Euler,
            audio: false,
        }
    }

    #[test]
    fn plan_round_trips_through_bytes() {
        let plan = make_plan(&spec("two wooden cubes falling on grass")).expect("valid spec");
        let back = Plan::from_bytes(&plan.to_bytes()).expect("own bytes parse");
        assert_eq!(back.poses, plan.poses, "poses survive serialization");
        assert_eq!(
            back.contacts, plan.contacts,
            "contacts survive serialization"
        );
    }

    #[test]
    fn scene_json_lists_understood_and_ignored_words() {
        let plan = make_plan(&spec("a red ball bouncing wibbly")).expect("valid spec");
        let v: serde_json::Value =
            serde_json::from_str(&plan.scene_json()).expect("scene JSON parses");
        assert_eq!(
            v["ignored_words"],
            serde_json::json!(["wibbly"]),
            "unknown word reported"
        );
        assert_eq!(v["objects"][0]["colour"], "red", "colour reported");
    }

    #[test]
    fn invalid_spec_is_an_error_not_a_panic() {
        let mut s = spec("a ball");
        s.fps = 0;
        assert!(make_plan(&s).is_err(), "fps 0 must be rejected");
    }
}
