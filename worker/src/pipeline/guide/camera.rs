//! The projection of the clip's fixed pinhole camera ([`Camera`], chosen by the plan), and
//! its exact inverse on a vertical plane.
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

use super::geometry::V3;
pub(crate) use crate::pipeline::plan::Camera;
#[cfg(test)]
use crate::pipeline::scene::Shot;

/// The projection of the plan's camera (see the module doc).
impl Camera {
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
