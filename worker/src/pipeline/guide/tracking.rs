//! Test support: finding the red ball in pictures and measuring its physics, the inverse
//! of the guide render. Shared by the diffusion tests (frames as rendered) and the
//! end-to-end tests (frames decoded from the assembled MP4), so both measure the same way.

use crate::pipeline::plan::physics::{arc_apexes, fit_parabola};
use crate::pipeline::plan::{BodyShape, Plan};
use crate::pipeline::Frame;

/// Gravity the simulation uses, m/s².
const GRAVITY: f64 = 9.81;
/// Relative tolerance on the fitted acceleration.
const GRAVITY_TOLERANCE: f64 = 0.03;
/// Relative tolerance on each apex-height ratio against e².
const RESTITUTION_TOLERANCE: f64 = 0.05;

/// Centre of the red ball in an RGB8 frame: pixels whose 3×3-averaged red exceeds green and
/// blue by `RED_MARGIN` levels, centroid taken within `WINDOW` px of their median.
pub(crate) fn track_red(frame: &Frame) -> Option<(f32, f32)> {
    const RED_MARGIN: f32 = 35.0;
    const WINDOW: f32 = 40.0;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let at = |i: usize, j: usize, c: usize| frame.rgb[3 * (j * w + i) + c] as f32;
    let mut hits = Vec::new();
    for j in 1..h - 1 {
        for i in 1..w - 1 {
            let mut sum = [0.0f32; 3];
            for dj in 0..3 {
                for di in 0..3 {
                    for (c, s) in sum.iter_mut().enumerate() {
                        *s += at(i + di - 1, j + dj - 1, c);
                    }
                }
            }
            if sum[0] - sum[1].max(sum[2]) > 9.0 * RED_MARGIN {
                hits.push((i as f32 + 0.5, j as f32 + 0.5));
            }
        }
    }
    if hits.is_empty() {
        return None;
    }
    let median = |mut v: Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    let (mu, mv) = (
        median(hits.iter().map(|h| h.0).collect()),
        median(hits.iter().map(|h| h.1).collect()),
    );
    let near: Vec<_> = hits
        .iter()
        .filter(|(u, v)| (u - mu).abs() < WINDOW && (v - mv).abs() < WINDOW)
        .collect();
    let n = near.len() as f32;
    Some((
        near.iter().map(|h| h.0).sum::<f32>() / n,
        near.iter().map(|h| h.1).sum::<f32>() / n,
    ))
}

/// Height (metres, world `y`) of body 0's centre in each frame, from its pixel centre
/// through the inverse of the plan's camera on the body's vertical plane; `(t, y)` pairs,
/// `first_frame` being the clip index of `frames[0]`.
pub(crate) fn height_track(plan: &Plan, frames: &[Frame], first_frame: u32) -> Vec<(f64, f64)> {
    let fps = f64::from(plan.spec.fps);
    frames
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let index = first_frame as usize + k;
            let (u, v) =
                track_red(f).unwrap_or_else(|| panic!("frame {index}: the red ball is visible"));
            let z = plan.poses[index][0].position[2];
            let p = plan
                .camera
                .unproject_on_plane_z(u, v, z)
                .expect("the pixel ray meets the plane");
            (index as f64 / fps, f64::from(p[1]))
        })
        .collect()
}

/// Asserts that the first fall of `track` accelerates at g within 3 % and that successive
/// apex heights above the floor shrink by e² within 5 % (e the product of the ball's and
/// the floor's restitution). `what` names the frames in the messages.
pub(crate) fn assert_gravity_and_restitution(plan: &Plan, track: &[(f64, f64)], what: &str) {
    let radius = match plan.bodies[0].shape {
        BodyShape::Ball { radius } => f64::from(radius),
        _ => panic!("body 0 must be a ball"),
    };
    let fall: Vec<_> = track
        .windows(2)
        .take_while(|w| w[1].1 < w[0].1)
        .map(|w| w[0])
        .collect();
    let c = fit_parabola(&fall[..fall.len() - 1]);
    let g = -2.0 * c[2];
    assert!(
        (g - GRAVITY).abs() < GRAVITY_TOLERANCE * GRAVITY,
        "{what}: fitted acceleration {g:.3} m/s², expected {GRAVITY} ± 3 %"
    );
    let e = f64::from(
        plan.bodies[0].material.props().restitution * plan.scene.floor.material.props().restitution,
    );
    let heights: Vec<f64> = arc_apexes(track, radius, 0.15)
        .into_iter()
        .map(|y| y - radius)
        .collect();
    assert!(
        heights.len() >= 3,
        "{what}: three arcs visible, got {heights:?}"
    );
    for k in 0..2 {
        let ratio = heights[k + 1] / heights[k];
        assert!(
            (ratio - e * e).abs() < RESTITUTION_TOLERANCE * e * e,
            "{what}: apex ratio {k}→{} is {ratio:.4}, expected e² = {:.4} ± 5 % (heights {heights:?})",
            k + 1,
            e * e
        );
    }
    eprintln!(
        "{what}: g = {g:.3} m/s², apex ratios {:.4} {:.4} vs e² = {:.4}",
        heights[1] / heights[0],
        heights[2] / heights[1],
        e * e
    );
}
