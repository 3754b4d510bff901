//! The CPU engine: the [`super::kernels`] formulas mapped over flat `f32` buffers with rayon.
//!
//! Every operation is elementwise, so the result does not depend on how rayon splits the
//! work: the CPU engine is bit-for-bit deterministic whatever the number of threads.

use rayon::prelude::*;

use super::kernels;
use super::{BatchSpec, DiffusionBatch, Engine, EngineError, FrameConditioning, Update};

/// Elements per rayon task: large enough to amortise scheduling (~10 µs of work), small
/// enough to balance two cores on a 320×180 frame (172 800 elements).
const CHUNK: usize = 16 * 1024;

/// Runs every kernel on the CPU.
#[derive(Debug, Default)]
pub struct CpuEngine;

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn begin_batch<'a>(
        &'a self,
        spec: &BatchSpec,
        frames: Vec<FrameConditioning>,
    ) -> Result<Box<dyn DiffusionBatch + 'a>, EngineError> {
        Ok(Box::new(CpuBatch::new(spec, frames)?))
    }
}

/// A batch in host memory: state, conditioning and the two latest denoiser outputs.
struct CpuBatch {
    pixels: usize,
    frames: usize,
    /// Noisy state `x`, `3·P` per frame.
    x: Vec<f32>,
    /// Prior mean, `3·P` per frame.
    guide: Vec<f32>,
    /// Prior variance, `P` per frame.
    var: Vec<f32>,
    /// Latest denoiser output.
    d: Vec<f32>,
    /// Previous denoiser output.
    d_prev: Vec<f32>,
}

impl CpuBatch {
    fn new(spec: &BatchSpec, frames: Vec<FrameConditioning>) -> Result<Self, EngineError> {
        let pixels = spec.pixels();
        let n = frames.len();
        super::check_conditioning(pixels, &frames)?;
        let mut x = vec![0.0f32; n * 3 * pixels];
        for (f, xs) in frames.iter().zip(x.chunks_mut(3 * pixels.max(1))) {
            xs.par_chunks_mut(CHUNK)
                .enumerate()
                .for_each(|(ci, chunk)| {
                    let base = ci * CHUNK;
                    for (k, v) in chunk.iter_mut().enumerate() {
                        let e = base + k;
                        let (p, c) = (e / 3, e % 3);
                        *v = spec.sigma_init
                            * kernels::initial_noise(
                                spec.seed,
                                f.frame_index,
                                p as u32,
                                c as u32,
                                f.noise_keys[p],
                                spec.static_noise_weight,
                            );
                    }
                });
        }
        let mut guide = Vec::with_capacity(n * 3 * pixels);
        let mut var = Vec::with_capacity(n * pixels);
        for f in frames {
            guide.extend_from_slice(&f.guide);
            var.extend_from_slice(&f.prior_var);
        }
        Ok(Self {
            pixels,
            frames: n,
            d: vec![0.0; x.len()],
            d_prev: vec![0.0; x.len()],
            x,
            guide,
            var,
        })
    }
}

impl DiffusionBatch for CpuBatch {
    fn len(&self) -> usize {
        self.frames
    }

    fn denoise(&mut self, sigma: f32) -> Result<(), EngineError> {
        std::mem::swap(&mut self.d, &mut self.d_prev);
        let (x, guide, var) = (&self.x, &self.guide, &self.var);
        self.d
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(ci, chunk)| {
                let base = ci * CHUNK;
                for (k, d) in chunk.iter_mut().enumerate() {
                    let e = base + k;
                    *d = kernels::posterior_mean(x[e], guide[e], var[e / 3], sigma);
                }
            });
        Ok(())
    }

    fn update(&mut self, update: Update) -> Result<(), EngineError> {
        let (d, d_prev) = (&self.d, &self.d_prev);
        self.x
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(ci, chunk)| {
                let base = ci * CHUNK;
                for (k, x) in chunk.iter_mut().enumerate() {
                    let e = base + k;
                    *x = kernels::combine(*x, d[e], d_prev[e], update);
                }
            });
        Ok(())
    }

    fn read_rgb8(&self, frame: usize, out: &mut [u8]) -> Result<(), EngineError> {
        let range = super::frame_range(self.frames, self.pixels, frame, out.len())?;
        for (o, &v) in out.iter_mut().zip(&self.x[range]) {
            *o = kernels::to_u8(v);
        }
        Ok(())
    }

    fn read_state(&self, frame: usize, out: &mut [f32]) -> Result<(), EngineError> {
        let range = super::frame_range(self.frames, self.pixels, frame, out.len())?;
        out.copy_from_slice(&self.x[range]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditioning(frame_index: u32, pixels: usize) -> FrameConditioning {
        FrameConditioning {
            frame_index,
            guide: vec![0.25; 3 * pixels],
            prior_var: vec![0.01; pixels],
            noise_keys: (0..pixels as u64).collect(),
        }
    }

    #[test]
    fn batch_noise_does_not_depend_on_batch_composition() {
        let spec = BatchSpec {
            width: 5,
            height: 3,
            seed: 1,
            sigma_init: 80.0,
            static_noise_weight: 0.9,
        };
        let engine = CpuEngine;
        let both = engine
            .begin_batch(&spec, vec![conditioning(0, 15), conditioning(1, 15)])
            .expect("valid batch");
        let alone = engine
            .begin_batch(&spec, vec![conditioning(1, 15)])
            .expect("valid batch");
        let (mut a, mut b) = (vec![0.0; 45], vec![0.0; 45]);
        both.read_state(1, &mut a).expect("frame 1 exists");
        alone.read_state(0, &mut b).expect("frame 0 exists");
        assert_eq!(
            a, b,
            "frame 1's noise must be the same alone or after frame 0"
        );
    }

    #[test]
    fn wrong_sizes_are_rejected_not_panicking() {
        let spec = BatchSpec {
            width: 4,
            height: 4,
            seed: 1,
            sigma_init: 1.0,
            static_noise_weight: 0.0,
        };
        let err = CpuEngine.begin_batch(&spec, vec![conditioning(0, 3)]);
        assert!(
            err.is_err(),
            "a 3-pixel conditioning for a 16-pixel frame must be an error"
        );
    }
}
