//! The fixed pinhole camera of a clip, and its exact inverse on a vertical plane.
//!
//! Model: an ideal pinhole at `position` looking at `target`, world up `+y`, no roll, no lens
//! distortion, square pixels. With `f = (height / 2) / tan(vertical_fov / 2)` pixels, a camera
//! frame point `(x_c, y_c, z_c)` (`z_c` along the view direction) lands on the continuous
//! image coordinate `u = width/2 + f·x_c/z_c`, `v = height/2 − f·y_c/z_c` (`v` down); pixel
//! `(i, j)` covers `[i, i+1) × [j, j+1)`, its centre is `(i + 0.5, j + 0.5)`.
//!
//! The map from a plane `z = z0` (the vertical plane an object moves in) to the image is a
//! homography, so it is invertible: [`Camera::unproject_on_plane_z`] turns a pixel position
//! back into metres, which is how the tests measure physics in rendered frames.

use serde::{Deserialize, Serialize};

use super::geometry::V3;
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

    /// Focal length in pixels.
    pub fn focal_px(&self) -> f32 {
        (self.height as f32 * 0.5) / (self.vertical_fov_deg.to_radians() * 0.5).tan()
    }

    /// Orthonormal camera basis `(right, up, forward)` in world coordinates.
    pub fn basis(&self) -> (V3, V3, V3) {
        let forward = (V3::from_array(self.target) - V3::from_array(self.position)).normalized();
        let right = forward.cross(V3::new(0.0, 1.0, 0.0)).normalized();
        let up = right.cross(forward);
        (right, up, forward)
    }

    /// Unit direction of the ray through the continuous image point `(u, v)`.
    pub fn ray(&self, u: f32, v: f32) -> V3 {
        let (right, up, forward) = self.basis();
        let f = self.focal_px();
        let x = (u - self.width as f32 * 0.5) / f;
        let y = (self.height as f32 * 0.5 - v) / f;
        (forward + right * x + up * y).normalized()
    }

    /// Image point `(u, v)` of a world point, `None` behind the camera.
    pub fn project(&self, p: [f32; 3]) -> Option<(f32, f32)> {
        let (right, up, forward) = self.basis();
        let rel = V3::from_array(p) - V3::from_array(self.position);
        let zc = rel.dot(forward);
        if zc <= 0.0 {
            return None;
        }
        let f = self.focal_px();
        Some((
            self.width as f32 * 0.5 + f * rel.dot(right) / zc,
            self.height as f32 * 0.5 - f * rel.dot(up) / zc,
        ))
    }

    /// The world point on the plane `z = z0` seen at image point `(u, v)`: the exact inverse
    /// of [`Camera::project`] on that plane. `None` when the ray is parallel to the plane or
    /// meets it behind the camera.
    pub fn unproject_on_plane_z(&self, u: f32, v: f32, z0: f32) -> Option<[f32; 3]> {
        let d = self.ray(u, v);
        if d.z.abs() < 1e-9 {
            return None;
        }
        let t = (z0 - self.position[2]) / d.z;
        (t > 0.0).then(|| {
            let p = V3::from_array(self.position) + d * t;
            [p.x, p.y, z0]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unproject_inverts_project_on_a_vertical_plane() {
        for shot in [Shot::Close, Shot::Medium, Shot::Wide] {
            let cam = Camera::for_shot(shot, 320, 180);
            for p in [[0.0, 0.15, 0.0], [0.7, 1.6, 0.0], [-1.2, 0.4, -0.5]] {
                let (u, v) = cam.project(p).expect("point in front of the camera");
                let back = cam
                    .unproject_on_plane_z(u, v, p[2])
                    .expect("ray meets the plane");
                for k in 0..3 {
                    assert!(
                        (back[k] - p[k]).abs() < 1e-4,
                        "{shot:?}: {p:?} came back as {back:?}"
                    );
                }
            }
        }
    }
}
