//! The exact shape of a simulated body, as the plan decides it from the scene's shape word
//! and size.
//!
//! The plan creates it ([`BodyShape::of`]), weighs it ([`BodyShape::volume`] times the
//! material's density), stands it on the floor ([`BodyShape::half_height`]) and simulates it
//! (one rapier collider per shape). The guide render, which runs after, only reads it to
//! cast rays against the posed shapes.

use serde::{Deserialize, Serialize};

use crate::pipeline::scene::Shape;

/// Shape of a body, in its local frame (centre at the origin, cylinder axis along y).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyShape {
    /// A sphere of the given radius, metres.
    Ball { radius: f32 },
    /// A box of the given half extents, metres.
    Cuboid { half: [f32; 3] },
    /// A capped cylinder, axis along local y.
    Cylinder { radius: f32, half_height: f32 },
}

impl BodyShape {
    /// The body of a scene object of `shape` at `size` (1 = the base dimensions). Base
    /// dimensions, metres: a ball the size of a handball (r = 15 cm), a 26 cm cube, a
    /// 40 × 20 × 24 cm box, a cylinder of r = 10 cm, h = 30 cm.
    pub(crate) fn of(shape: Shape, size: f32) -> Self {
        match shape {
            Shape::Ball => BodyShape::Ball {
                radius: 0.15 * size,
            },
            Shape::Cube => BodyShape::Cuboid {
                half: [0.13 * size; 3],
            },
            Shape::Box => BodyShape::Cuboid {
                half: [0.2 * size, 0.1 * size, 0.12 * size],
            },
            Shape::Cylinder => BodyShape::Cylinder {
                radius: 0.1 * size,
                half_height: 0.15 * size,
            },
        }
    }

    /// Volume, m³.
    pub(crate) fn volume(&self) -> f32 {
        match *self {
            BodyShape::Ball { radius } => 4.0 / 3.0 * std::f32::consts::PI * radius.powi(3),
            BodyShape::Cuboid { half } => 8.0 * half[0] * half[1] * half[2],
            BodyShape::Cylinder {
                radius,
                half_height,
            } => std::f32::consts::PI * radius * radius * 2.0 * half_height,
        }
    }

    /// Half of the body's height when upright (its rest height above the floor).
    pub(crate) fn half_height(&self) -> f32 {
        match *self {
            BodyShape::Ball { radius } => radius,
            BodyShape::Cuboid { half } => half[1],
            BodyShape::Cylinder { half_height, .. } => half_height,
        }
    }
}
