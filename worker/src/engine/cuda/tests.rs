//! CPU/CUDA parity of every kernel (needs a GPU; each test says "skipped: no CUDA driver"
//! and passes where none is). Tolerances:
//! - `posterior_mean`, `combine`, `to_rgb8`: bit-exact (no FMA contraction, IEEE division;
//!   see kernels.cu);
//! - `initial_noise`: within 4 ulp-scale steps of the value (`2e-6 · sigma_init` absolute;
//!   CUDA's `logf`/`cosf` are within 1–2 ulp of glibc's);
//! - a whole sampler run from that noise: within `1e-4` data units, i.e. under 1/60 of an
//!   8-bit level, and RGB8 frames equal to within one level.

use super::super::cpu::CpuEngine;
use super::super::{BatchSpec, DiffusionBatch, Engine, FrameConditioning, Update};
use super::CudaEngine;

fn engine_or_skip() -> Option<CudaEngine> {
    if let Err(why) = super::device::probe(0) {
        // `why` reads "no CUDA driver (cuInit: …)" or says which device is missing.
        eprintln!("skipped: {why}");
        return None;
    }
    Some(CudaEngine::new(0).expect("a present device opens and compiles the kernels"))
}

fn conditioning(frame_index: u32, width: u32, height: u32) -> FrameConditioning {
    let pixels = (width * height) as usize;
    FrameConditioning {
        frame_index,
        guide: (0..3 * pixels)
            .map(|i| ((i * 37 % 200) as f32 / 100.0) - 1.0)
            .collect(),
        prior_var: (0..pixels).map(|p| 0.001 + (p % 7) as f32 * 0.01).collect(),
        noise_keys: (0..pixels as u64).map(|p| p / 3).collect(),
    }
}

fn spec(sigma_init: f32) -> BatchSpec {
    BatchSpec {
        width: 67,
        height: 31,
        seed: 0xC0FFEE,
        sigma_init,
        static_noise_weight: 0.8,
    }
}

fn frames() -> Vec<FrameConditioning> {
    (0..3).map(|f| conditioning(5 + f, 67, 31)).collect()
}

fn state(batch: &dyn DiffusionBatch, frames: usize, pixels: usize) -> Vec<f32> {
    let mut all = Vec::new();
    for f in 0..frames {
        let mut out = vec![0.0; 3 * pixels];
        batch.read_state(f, &mut out).expect("frame exists");
        all.extend(out);
    }
    all
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn initial_noise_matches_the_cpu() {
    let Some(gpu) = engine_or_skip() else { return };
    let spec = spec(80.0);
    let pixels = spec.pixels();
    let cpu = CpuEngine.begin_batch(&spec, frames()).unwrap();
    let cuda = gpu.begin_batch(&spec, frames()).unwrap();
    let diff = max_abs_diff(&state(&*cpu, 3, pixels), &state(&*cuda, 3, pixels));
    assert!(diff <= 2e-6 * 80.0, "initial noise differs by {diff}");
}

#[test]
fn denoise_update_and_rgb8_are_bit_exact() {
    let Some(gpu) = engine_or_skip() else { return };
    // sigma_init 0: both start from exact zeros, so every later op sees the same inputs.
    let spec = spec(0.0);
    let pixels = spec.pixels();
    let mut cpu = CpuEngine.begin_batch(&spec, frames()).unwrap();
    let mut cuda = gpu.begin_batch(&spec, frames()).unwrap();
    let steps = [
        (
            3.0,
            Update {
                x_coef: 0.7,
                denoised_coef: 0.3,
                previous_coef: 0.0,
            },
        ),
        (
            1.1,
            Update {
                x_coef: 0.45,
                denoised_coef: 0.8,
                previous_coef: -0.25,
            },
        ),
        (
            0.2,
            Update {
                x_coef: 0.1,
                denoised_coef: 1.2,
                previous_coef: -0.3,
            },
        ),
    ];
    for (sigma, update) in steps {
        cpu.denoise(sigma).unwrap();
        cuda.denoise(sigma).unwrap();
        cpu.update(update).unwrap();
        cuda.update(update).unwrap();
    }
    let (a, b) = (state(&*cpu, 3, pixels), state(&*cuda, 3, pixels));
    let differing = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "state differs in {differing} of {} values",
        a.len()
    );
    for f in 0..3 {
        let (mut ra, mut rb) = (vec![0u8; 3 * pixels], vec![0u8; 3 * pixels]);
        cpu.read_rgb8(f, &mut ra).unwrap();
        cuda.read_rgb8(f, &mut rb).unwrap();
        assert_eq!(ra, rb, "RGB8 of frame {f} differs");
    }
}

#[test]
fn a_sampler_run_from_noise_stays_within_tolerance() {
    let Some(gpu) = engine_or_skip() else { return };
    let spec = spec(80.0);
    let pixels = spec.pixels();
    let mut cpu = CpuEngine.begin_batch(&spec, frames()).unwrap();
    let mut cuda = gpu.begin_batch(&spec, frames()).unwrap();
    // Euler steps of a Karras-like schedule: x <- x + (s_next/s - 1)(x - D).
    let sigmas = [80.0f32, 30.0, 10.0, 3.0, 1.0, 0.3, 0.05, 0.0];
    for w in sigmas.windows(2) {
        let ratio = w[1] / w[0];
        let update = Update {
            x_coef: ratio,
            denoised_coef: 1.0 - ratio,
            previous_coef: 0.0,
        };
        cpu.denoise(w[0]).unwrap();
        cuda.denoise(w[0]).unwrap();
        cpu.update(update).unwrap();
        cuda.update(update).unwrap();
    }
    let diff = max_abs_diff(&state(&*cpu, 3, pixels), &state(&*cuda, 3, pixels));
    assert!(diff <= 1e-4, "final state differs by {diff} data units");
    for f in 0..3 {
        let (mut ra, mut rb) = (vec![0u8; 3 * pixels], vec![0u8; 3 * pixels]);
        cpu.read_rgb8(f, &mut ra).unwrap();
        cuda.read_rgb8(f, &mut rb).unwrap();
        let worst = ra
            .iter()
            .zip(&rb)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(worst <= 1, "frame {f}: RGB8 differs by {worst} levels");
    }
}

#[test]
fn bad_sizes_are_an_error_on_the_device_too() {
    let Some(gpu) = engine_or_skip() else { return };
    let mut bad = conditioning(0, 67, 31);
    bad.prior_var.pop();
    assert!(gpu.begin_batch(&spec(1.0), vec![bad]).is_err());
    let batch = gpu.begin_batch(&spec(1.0), frames()).unwrap();
    let mut short = vec![0u8; 10];
    assert!(batch.read_rgb8(0, &mut short).is_err());
    assert!(batch.read_rgb8(3, &mut vec![0u8; 3 * 67 * 31]).is_err());
}
