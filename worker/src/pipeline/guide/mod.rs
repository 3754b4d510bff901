//! Guide render: the simulated scene at frame `i`, drawn exactly, as the diffusion's
//! conditioning image.
//!
//! A per-pixel ray caster (one primary ray through each pixel centre, no anti-aliasing, so
//! object edges are sharp to the pixel) against the exact shapes of the bodies posed at the
//! frame ([`geometry`]), the floor plane `y = 0` and the arena's back and side walls
//! (drawn in the background colour). The camera is the plan's fixed pinhole ([`camera`]).
//! Shading is Lambert plus a Blinn–Phong highlight under one directional light and an
//! ambient term chosen by the scene's lighting word; shadows are cast by the bodies only,
//! soft for balls (penumbra growing with the distance to the occluder), hard for the rest.
//!
//! Besides colours the render yields, per pixel, the prior's texture strength (from the
//! material hit) and a *noise key*: the id of the surface point hit, quantised in the
//! surface's own frame (body-local for bodies, world for floor and walls). The diffusion's
//! static noise field is keyed by it, so the texture of a body moves and turns with it.

pub mod camera;
pub mod geometry;
#[cfg(test)]
pub(crate) mod tracking;

use rayon::prelude::*;

use self::geometry::{intersect, V3};
use super::plan::physics::{ARENA_HALF_WIDTH, BACK_WALL_Z};
use super::plan::{BodyShape, Plan, Pose};
use super::scene::{Lighting, Material};
use super::PipelineError;
use crate::engine::kernels::hash_words;

/// The conditioning of one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct GuideImage {
    pub width: u32,
    pub height: u32,
    /// Interleaved RGB in `[0, 1]`, row-major, `3·width·height` values.
    pub rgb: Vec<f32>,
    /// Prior standard deviation per pixel, data units.
    pub texture_sigma: Vec<f32>,
    /// Static-noise key per pixel.
    pub noise_keys: Vec<u64>,
}

/// Side of the static noise cells, in pixels at the camera's target distance: the texture
/// grain is about this coarse on screen (1 would be pixel noise, 3 looks blotchy).
const TEXTURE_CELL_PX: f32 = 1.5;
/// Blinn–Phong exponent of the highlights.
const SHININESS: i32 = 40;
/// Penumbra width per metre of distance between a shadowed point and a ball, metres:
/// a light source about 0.15 rad across, like a softbox.
const PENUMBRA_SLOPE: f32 = 0.15;
/// Side walls are drawn this much darker than the back wall so the room reads as a room.
const SIDE_WALL_SHADE: f32 = 0.85;
/// Width of a wooden floor's planks, metres.
const PLANK_WIDTH: f32 = 0.18;
/// Tone variation between planks (± fraction).
const PLANK_TONE: f32 = 0.08;
/// Offset of shadow rays along the normal, metres: avoids self-shadowing from rounding.
const SHADOW_BIAS: f32 = 1e-3;
/// Texture strength of the walls, data units.
const WALL_TEXTURE_SIGMA: f32 = 0.05;
/// Noise-key namespaces of the static surfaces (bodies use their index).
const FLOOR_KEY: u64 = 1 << 40;
const WALL_KEY: u64 = 2 << 40;

/// One directional light and an ambient term.
struct Light {
    /// Unit vector towards the light.
    dir: V3,
    colour: [f32; 3],
    ambient: [f32; 3],
}

/// The light of each lighting preset. The studio key light sits above and slightly left of
/// the camera so that what the camera sees of a body is lit (the trackers rely on it).
fn light_of(lighting: Lighting) -> Light {
    let (dir, colour, ambient) = match lighting {
        Lighting::Studio => (
            V3::new(-0.35, 0.8, 0.6),
            [0.75, 0.75, 0.75],
            [0.35, 0.35, 0.37],
        ),
        Lighting::Daylight => (
            V3::new(-0.3, 1.0, 0.35),
            [0.85, 0.83, 0.78],
            [0.38, 0.42, 0.5],
        ),
        Lighting::Sunset => (
            V3::new(-0.9, 0.35, 0.4),
            [0.95, 0.65, 0.4],
            [0.25, 0.2, 0.28],
        ),
        Lighting::Night => (
            V3::new(0.3, 0.9, 0.4),
            [0.35, 0.4, 0.55],
            [0.08, 0.09, 0.14],
        ),
        Lighting::Dramatic => (
            V3::new(-1.0, 0.6, 0.15),
            [1.1, 1.05, 1.0],
            [0.08, 0.08, 0.1],
        ),
    };
    Light {
        dir: dir.normalized(),
        colour,
        ambient,
    }
}

/// What a primary ray hit.
struct Surface {
    point: V3,
    normal: V3,
    albedo: [f32; 3],
    specular: f32,
    sigma: f32,
    key: u64,
    /// Index of the body hit, if any (a body does not shadow itself).
    body: Option<usize>,
}

/// Renders frame `frame` of the plan's clip.
pub fn render(plan: &Plan, frame: u32) -> Result<GuideImage, PipelineError> {
    let poses = plan.poses.get(frame as usize).ok_or_else(|| {
        PipelineError::InvalidInput(format!(
            "frame {frame} outside the plan's {} frames",
            plan.poses.len()
        ))
    })?;
    let cam = &plan.camera;
    let (w, h) = (cam.width as usize, cam.height as usize);
    let (right, up, forward) = cam.basis();
    let f = cam.focal_px();
    let origin = V3::from_array(cam.position);
    let target_dist = (V3::from_array(cam.target) - origin).length();
    let cell = TEXTURE_CELL_PX * target_dist / f;
    let light = light_of(plan.scene.lighting);
    let scene = Scene {
        plan,
        poses,
        light,
        cell,
    };

    let mut rgb = vec![0.0f32; 3 * w * h];
    let mut texture_sigma = vec![0.0f32; w * h];
    let mut noise_keys = vec![0u64; w * h];
    rgb.par_chunks_mut(3 * w)
        .zip(texture_sigma.par_chunks_mut(w))
        .zip(noise_keys.par_chunks_mut(w))
        .enumerate()
        .for_each(|(j, ((rgb_row, sigma_row), key_row))| {
            let y = (h as f32 * 0.5 - (j as f32 + 0.5)) / f;
            for i in 0..w {
                let x = (i as f32 + 0.5 - w as f32 * 0.5) / f;
                let d = (forward + right * x + up * y).normalized();
                let s = scene.trace(origin, d);
                let c = scene.shade(&s, d);
                rgb_row[3 * i..3 * i + 3].copy_from_slice(&c);
                sigma_row[i] = s.sigma * plan.scene.texture_scale;
                key_row[i] = s.key;
            }
        });
    Ok(GuideImage {
        width: cam.width,
        height: cam.height,
        rgb,
        texture_sigma,
        noise_keys,
    })
}

struct Scene<'a> {
    plan: &'a Plan,
    poses: &'a [Pose],
    light: Light,
    cell: f32,
}

impl Scene<'_> {
    fn cell_key(&self, namespace: u64, p: V3) -> u64 {
        let q = |v: f32| (v / self.cell).floor() as i64 as u64;
        hash_words(&[namespace, q(p.x), q(p.y), q(p.z)])
    }

    fn trace(&self, o: V3, d: V3) -> Surface {
        let mut best_t = f32::INFINITY;
        let mut best: Option<Surface> = None;
        for (b, (body, pose)) in self.plan.bodies.iter().zip(self.poses).enumerate() {
            let c = V3::from_array(pose.position);
            if let Some(hit) = intersect(&body.shape, c, pose.rotation, o, d) {
                if hit.t < best_t {
                    best_t = hit.t;
                    let props = body.material.props();
                    best = Some(Surface {
                        point: o + d * hit.t,
                        normal: hit.normal,
                        albedo: body.colour,
                        specular: props.specular,
                        sigma: props.texture_sigma,
                        key: self.cell_key(b as u64 + 1, hit.local),
                        body: Some(b),
                    });
                }
            }
        }
        let floor = &self.plan.scene.floor;
        if d.y < 0.0 {
            let t = -o.y / d.y;
            if t < best_t {
                let p = o + d * t;
                if p.z >= BACK_WALL_Z && p.x.abs() <= ARENA_HALF_WIDTH {
                    best_t = t;
                    let tone = floor_tone(floor.material, p);
                    best = Some(Surface {
                        point: p,
                        normal: V3::new(0.0, 1.0, 0.0),
                        albedo: floor.colour.rgb.map(|c| c * tone),
                        specular: floor.material.props().specular,
                        sigma: floor.material.props().texture_sigma,
                        key: self.cell_key(FLOOR_KEY, V3::new(p.x, 0.0, p.z)),
                        body: None,
                    });
                }
            }
        }
        // Back wall, then the side walls; all rise from the floor.
        let walls = [
            (
                d.z < 0.0,
                (BACK_WALL_Z - o.z) / d.z,
                V3::new(0.0, 0.0, 1.0),
                1.0,
                0u64,
            ),
            (
                d.x > 0.0,
                (ARENA_HALF_WIDTH - o.x) / d.x,
                V3::new(-1.0, 0.0, 0.0),
                SIDE_WALL_SHADE,
                1,
            ),
            (
                d.x < 0.0,
                (-ARENA_HALF_WIDTH - o.x) / d.x,
                V3::new(1.0, 0.0, 0.0),
                SIDE_WALL_SHADE,
                2,
            ),
        ];
        for (facing, t, normal, shade, id) in walls {
            if facing && t > 0.0 && t < best_t {
                let p = o + d * t;
                if p.y >= 0.0 && p.z >= BACK_WALL_Z - 1e-4 && p.x.abs() <= ARENA_HALF_WIDTH + 1e-4 {
                    best_t = t;
                    best = Some(Surface {
                        point: p,
                        normal,
                        albedo: self.plan.scene.background.rgb.map(|c| c * shade),
                        specular: 0.0,
                        sigma: WALL_TEXTURE_SIGMA,
                        key: self.cell_key(WALL_KEY + id, p),
                        body: None,
                    });
                }
            }
        }
        best.unwrap_or(Surface {
            point: o,
            normal: -d,
            albedo: self.plan.scene.background.rgb,
            specular: 0.0,
            sigma: WALL_TEXTURE_SIGMA,
            key: WALL_KEY + 3,
            body: None,
        })
    }

    /// Fraction of the key light reaching `p` (1 = fully lit).
    fn shadow(&self, p: V3, skip: Option<usize>) -> f32 {
        let o = p;
        let d = self.light.dir;
        let mut lit = 1.0f32;
        for (b, (body, pose)) in self.plan.bodies.iter().zip(self.poses).enumerate() {
            if Some(b) == skip {
                continue;
            }
            let c = V3::from_array(pose.position);
            match body.shape {
                BodyShape::Ball { radius } => {
                    // Closest approach of the shadow ray to the centre, and how far along it.
                    let along = (c - o).dot(d);
                    if along <= 0.0 {
                        continue;
                    }
                    let miss = ((c - o) - d * along).length() - radius;
                    let width = PENUMBRA_SLOPE * along;
                    lit = lit.min(smoothstep(-width, width, miss));
                }
                _ => {
                    if intersect(&body.shape, c, pose.rotation, o, d).is_some() {
                        return 0.0;
                    }
                }
            }
        }
        lit
    }

    fn shade(&self, s: &Surface, view: V3) -> [f32; 3] {
        let l = &self.light;
        let n_dot_l = s.normal.dot(l.dir).max(0.0);
        let lit = if n_dot_l > 0.0 {
            self.shadow(s.point + s.normal * SHADOW_BIAS, s.body)
        } else {
            0.0
        };
        let half = (l.dir - view).normalized();
        let spec = s.specular * s.normal.dot(half).max(0.0).powi(SHININESS) * lit;
        std::array::from_fn(|k| {
            (s.albedo[k] * (l.ambient[k] + l.colour[k] * n_dot_l * lit) + spec * l.colour[k])
                .clamp(0.0, 1.0)
        })
    }
}

/// Brightness factor of the floor pattern at `p`: planks for wood, plain otherwise.
fn floor_tone(material: Material, p: V3) -> f32 {
    if material != Material::Wood {
        return 1.0;
    }
    let plank = (p.x / PLANK_WIDTH).floor() as i64 as u64;
    let u = (hash_words(&[plank]) >> 40) as f32 / (1u64 << 24) as f32;
    let seam = if (p.x / PLANK_WIDTH).fract().abs() < 0.03 {
        0.7
    } else {
        1.0
    };
    (1.0 + PLANK_TONE * (2.0 * u - 1.0)) * seam
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{plan::make_plan, ClipSpec, Sampler};

    fn plan(prompt: &str) -> Plan {
        make_plan(&ClipSpec {
            prompt: prompt.into(),
            duration_seconds: 1.0,
            fps: 12,
            width: 160,
            height: 90,
            seed: 5,
            steps: 1,
            sampler: Sampler::Ddim,
            audio: false,
        })
        .expect("valid spec")
    }

    #[test]
    fn main_ball_is_drawn_in_its_colour_where_the_camera_projects_it() {
        let plan = plan("a red ball");
        let img = render(&plan, 0).expect("frame 0 exists");
        let p = plan.poses[0][0].position;
        let (u, v) = plan.camera.project(p).expect("ball in front of the camera");
        let idx = 3 * (v as usize * 160 + u as usize);
        let c = &img.rgb[idx..idx + 3];
        assert!(
            c[0] > 2.0 * c[1] && c[0] > 2.0 * c[2],
            "the ball's centre pixel is red, got {c:?}"
        );
    }

    #[test]
    fn guide_render_is_deterministic_and_keys_follow_the_body() {
        let plan = plan("a red ball bouncing");
        assert_eq!(
            render(&plan, 3).expect("frame"),
            render(&plan, 3).expect("frame"),
            "same frame twice"
        );
        let (a, b) = (
            render(&plan, 0).expect("frame"),
            render(&plan, 6).expect("frame"),
        );
        // The keys seen on the (not yet rotating) ball are mostly the same surface cells in
        // both frames, although it has moved by many pixels.
        let ball_keys = |img: &GuideImage| -> std::collections::BTreeSet<u64> {
            (0..img.noise_keys.len())
                .filter(|&p| {
                    img.rgb[3 * p] > 2.0 * img.rgb[3 * p + 1]
                        && img.rgb[3 * p] > 2.0 * img.rgb[3 * p + 2]
                })
                .map(|p| img.noise_keys[p])
                .collect()
        };
        let (ka, kb) = (ball_keys(&a), ball_keys(&b));
        let shared = ka.intersection(&kb).count() as f64 / ka.len().max(1) as f64;
        assert!(!ka.is_empty(), "the ball is visible");
        assert!(
            shared > 0.6,
            "most ball keys persist as it falls, got {:.2} shared",
            shared
        );
        let moved = plan.poses[6][0].position[1] - plan.poses[0][0].position[1];
        assert!(
            moved < -0.1,
            "the ball has fallen between the frames ({moved} m)"
        );
    }
}
