//! Initial placement of the bodies: where each starts and how it moves, from its motion word.
//!
//! Bodies stand in rows along x in the arena's middle plane `z = 0` (later rows further
//! back), the main body first. The job seed jitters every start a little (a few cm, a few %
//! of speed), so two seeds give two takes of the same scene; the same seed gives the same
//! take. Constants are look-and-feel choices sized to the arena of [`super::physics`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Body;
use crate::pipeline::scene::{Motion, SceneSpec};

/// Start state of one body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BodyStart {
    /// Centre, metres.
    pub position: [f32; 3],
    /// Orientation, unit quaternion `[x, y, z, w]`.
    pub rotation: [f32; 4],
    /// m/s.
    pub linvel: [f32; 3],
    /// rad/s, world frame.
    pub angvel: [f32; 3],
}

/// Height of the lowest point of a dropped body above the floor, metres.
pub const DROP_HEIGHT: f32 = 1.5;
/// Bodies per row along x.
const ROW_LEN: usize = 6;
/// Distance between rows along z, metres (rows go back from z = 0).
const ROW_SPACING: f32 = 0.6;
/// Widest spacing of bodies in a row, metres.
const MAX_SPACING: f32 = 0.7;
/// Width of the row of bodies, metres (inside the arena's 5 m).
const ROW_WIDTH: f32 = 3.6;
/// Horizontal speed of rolling and sliding bodies, m/s: crosses half the arena in ~2 s.
const ROLL_SPEED: f32 = 1.2;
/// Launch of colliding bodies: from ±1.6 m at 0.8 m height, towards each other.
const COLLIDE_START_X: f32 = 1.6;
const COLLIDE_HEIGHT: f32 = 0.8;
const COLLIDE_VELOCITY: [f32; 2] = [2.4, 1.2];
/// Launch of thrown bodies: from the left at 0.5 m, an arc of ~0.6 m height.
const THROW_START: [f32; 2] = [-2.0, 0.5];
const THROW_VELOCITY: [f32; 2] = [2.2, 3.5];
/// Sideways drift of a bouncing body, m/s (keeps bounces apart on screen).
const BOUNCE_DRIFT: f32 = 0.12;
/// Spin given by "spinning", rad/s.
const SPIN: [f32; 3] = [1.5, 9.0, 2.0];
/// Seed jitter: position ±2 cm, drop height ±3 %, speeds ±5 %.
const JITTER_POSITION: f32 = 0.02;
const JITTER_HEIGHT: f32 = 0.03;
const JITTER_SPEED: f32 = 0.05;
/// Separates the placement stream of the seed from every other use of it.
const PLACEMENT_STREAM: u64 = 0x504C_4143;

/// Start states of `bodies` (same order as `scene.objects`).
pub fn place(scene: &SceneSpec, bodies: &[Body], seed: u64) -> Vec<BodyStart> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ PLACEMENT_STREAM);
    let n = bodies.len();
    let mut colliding_seen = 0usize;
    scene
        .objects
        .iter()
        .zip(bodies)
        .enumerate()
        .map(|(i, (object, body))| {
            let row = i / ROW_LEN;
            let in_row = (n - row * ROW_LEN).min(ROW_LEN);
            let spacing = (ROW_WIDTH / in_row as f32).min(MAX_SPACING);
            let slot = (i % ROW_LEN) as f32 - (in_row as f32 - 1.0) * 0.5;
            let mut jitter = |scale: f32| rng.random_range(-1.0f32..=1.0) * scale;
            let x = slot * spacing + jitter(JITTER_POSITION);
            let z = -(row as f32) * ROW_SPACING + jitter(JITTER_POSITION);
            let rest = body.shape.half_height();
            let speed = 1.0 + jitter(JITTER_SPEED);
            let drop = DROP_HEIGHT * (1.0 + jitter(JITTER_HEIGHT)) + rest;
            let tilt = [jitter(0.3), jitter(0.3), jitter(0.3)];
            let mut start = BodyStart {
                position: [x, drop, z],
                rotation: [0.0, 0.0, 0.0, 1.0],
                linvel: [0.0; 3],
                angvel: [0.0; 3],
            };
            match object.motion {
                Motion::Bouncing => start.linvel = [BOUNCE_DRIFT * speed * side(i), 0.0, 0.0],
                Motion::Falling => start.rotation = small_rotation(tilt),
                Motion::Rolling | Motion::Sliding => {
                    let dir = -side(i);
                    start.position = [dir * -ROW_WIDTH * 0.5 + x * 0.2, rest + 1e-3, z];
                    start.linvel = [dir * ROLL_SPEED * speed, 0.0, 0.0];
                    if object.motion == Motion::Rolling {
                        // Rolling without slipping: ω = v / r about −z for motion along +x.
                        start.angvel = [0.0, 0.0, -start.linvel[0] / rest];
                    }
                }
                Motion::Colliding => {
                    let dir = if colliding_seen & 1 == 0 { 1.0 } else { -1.0 };
                    colliding_seen += 1;
                    start.position = [-dir * COLLIDE_START_X, COLLIDE_HEIGHT + rest, z];
                    start.linvel = [
                        dir * COLLIDE_VELOCITY[0] * speed,
                        COLLIDE_VELOCITY[1] * speed,
                        0.0,
                    ];
                }
                Motion::Thrown => {
                    start.position = [THROW_START[0], THROW_START[1] + rest, z];
                    start.linvel = [THROW_VELOCITY[0] * speed, THROW_VELOCITY[1] * speed, 0.0];
                }
                Motion::Resting => start.position = [x, rest + 1e-3, z],
            }
            if object.spinning {
                start.angvel = [
                    start.angvel[0] + SPIN[0] * speed,
                    start.angvel[1] + SPIN[1] * speed,
                    start.angvel[2] + SPIN[2] * speed,
                ];
            }
            start
        })
        .collect()
}

/// −1 for even indices, +1 for odd: alternates directions so bodies spread out.
fn side(i: usize) -> f32 {
    if i & 1 == 0 {
        -1.0
    } else {
        1.0
    }
}

/// Unit quaternion of the rotation vector `v` (axis × angle, radians).
fn small_rotation(v: [f32; 3]) -> [f32; 4] {
    let angle = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if angle < 1e-9 {
        return [0.0, 0.0, 0.0, 1.0];
    }
    let s = (angle * 0.5).sin() / angle;
    [v[0] * s, v[1] * s, v[2] * s, (angle * 0.5).cos()]
}
