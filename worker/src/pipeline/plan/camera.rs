//! The camera of a clip: which fixed pinhole camera the scene's shot (close, medium, wide)
//! is seen through, decided when the plan is made and stored in it. Its projection (rays,
//! image points, the inverse on a plane) belongs to the guide render that uses it:
//! `guide::camera`.

use serde::{Deserialize, Serialize};

use crate::pipeline::scene::Shot;

/// A pinhole camera (see the module doc for the projection).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// Centre of projection, metres.
    pub position: [f32; 3],
    /// A point on the optical axis, metres.
    pub target: [f32; 3],
    /// Full vertical field of view, degrees.
    pub vertical_fov_deg: f32,
    /// Image width, pixels.
    pub width: u32,
    /// Image height, pixels.
    pub height: u32,
}

/// (position, target, vertical fov) per shot. Chosen so that a body dropped from the default
/// 1.5 m stays in view together with the floor and the back wall, for 16:9 frames.
const SHOTS: &[(Shot, [f32; 3], [f32; 3], f32)] = &[
    (Shot::Close, [0.0, 1.2, 4.2], [0.0, 0.75, 0.0], 38.0),
    (Shot::Medium, [0.0, 1.4, 6.5], [0.0, 0.8, 0.0], 32.0),
    (Shot::Wide, [0.0, 2.0, 9.5], [0.0, 0.7, 0.0], 34.0),
];

impl Camera {
    /// The camera of a shot for frames of `width × height`.
    pub fn for_shot(shot: Shot, width: u32, height: u32) -> Self {
        let &(_, position, target, fov) = SHOTS
            .iter()
            .find(|s| s.0 == shot)
            .expect("SHOTS has a row for every Shot");
        Self {
            position,
            target,
            vertical_fov_deg: fov,
            width,
            height,
        }
    }
}
