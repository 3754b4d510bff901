//! Engines: where the diffusion math runs.
//!
//! The diffusion stage ([`crate::pipeline::diffusion`]) owns the *algorithm*: which noise
//! levels to visit and how each sampler combines the denoiser's outputs. An [`Engine`] owns
//! the *data*: it holds a batch of frames (noisy state, conditioning, denoiser outputs) and
//! runs the four elementwise operations the algorithm needs on it:
//!
//! 1. draw the initial noise of every frame ([`Engine::begin_batch`]),
//! 2. evaluate the denoiser, the exact posterior mean of the prior ([`DiffusionBatch::denoise`]),
//! 3. apply one sampler update `x ← a·x + b·D + c·D_prev` ([`DiffusionBatch::update`]),
//! 4. convert to RGB8 with clamping ([`DiffusionBatch::read_rgb8`]).
//!
//! The per-element math of each operation is written once, in [`kernels`], as plain scalar
//! Rust functions, and [`cpu::CpuEngine`] maps them over the batch with rayon. With the
//! `cuda` feature, `cuda::CudaEngine` runs the same formulas as NVRTC-compiled kernels
//! (`engine/cuda/kernels.cu`), keeps the batch in device memory between calls and copies
//! frames back only in [`DiffusionBatch::read_rgb8`]; its parity tests compare it with the
//! functions in [`kernels`], which stay the reference.
//!
//! Data layout (shared by every engine): a batch of `n` frames of `P = width·height` pixels is
//! stored frame-major, pixels row-major, channels interleaved (`x[f·3P + 3p + c]`), in the
//! diffusion's data units (RGB mapped from `[0, 1]` to `[-1, 1]`).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub(crate) mod kernels;
pub mod select;

/// Everything an engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The inputs of a batch do not have the sizes the batch spec implies.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The device failed (allocation, kernel launch, transfer).
    #[error("device: {0}")]
    Device(String),
}

/// One CUDA device as the worker registers it (filled from the driver by the CUDA build).
#[derive(Clone, Debug, PartialEq)]
pub struct GpuFacts {
    /// CUDA ordinal (what `--gpu` names).
    pub ordinal: usize,
    /// "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// "GPU-8f0e…", the id NVML and nvidia-smi use.
    pub uuid: String,
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: u64,
    pub free_memory_bytes: u64,
    /// The driver's CUDA version, "12.8" (cuDriverGetVersion).
    pub driver_cuda_version: String,
}

/// What is the same for every frame of a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchSpec {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// The job seed: keys every noise value together with global data only.
    pub seed: u64,
    /// Noise level of the initial state: `x_T = sigma_init · z`, `z ~ N(0, I)`.
    pub sigma_init: f32,
    /// Weight of the static (scene-attached) noise field in `z`; the per-frame field gets
    /// `sqrt(1 − w²)` so that `z` stays standard normal per element.
    pub static_noise_weight: f32,
}

impl BatchSpec {
    /// Pixels in one frame.
    pub fn pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }
}

/// The conditioning of one frame, produced by the guide render.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameConditioning {
    /// Global index of the frame in the clip (keys its per-frame noise).
    pub frame_index: u32,
    /// Prior mean (the guide image), `3·P` values, interleaved RGB, data units.
    pub guide: Vec<f32>,
    /// Prior variance per pixel (same for the three channels), `P` values, data units².
    pub prior_var: Vec<f32>,
    /// Key of the static noise field per pixel, `P` values: the same surface point of the
    /// scene gets the same key in every frame, so the noise follows the simulated motion.
    pub noise_keys: Vec<u64>,
}

/// Coefficients of one sampler update `x ← x_coef·x + denoised_coef·D + previous_coef·D_prev`,
/// where `D` is the latest denoiser output and `D_prev` the one before it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    /// Weight of the current state.
    pub x_coef: f32,
    /// Weight of the latest denoiser output.
    pub denoised_coef: f32,
    /// Weight of the previous denoiser output (multistep samplers; 0 otherwise).
    pub previous_coef: f32,
}

/// A batch of frames being denoised, resident in the engine.
pub trait DiffusionBatch {
    /// Number of frames in the batch.
    fn len(&self) -> usize;
    /// True when the batch holds no frame.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Moves the latest denoiser output to `D_prev` and evaluates the denoiser at noise level
    /// `sigma` on the current state into `D` ([`kernels::posterior_mean`] per element).
    fn denoise(&mut self, sigma: f32) -> Result<(), EngineError>;
    /// Applies one sampler update to the state ([`kernels::combine`] per element).
    fn update(&mut self, update: Update) -> Result<(), EngineError>;
    /// Writes frame `frame` of the batch as RGB8 (`3·P` bytes, [`kernels::to_u8`]).
    fn read_rgb8(&self, frame: usize, out: &mut [u8]) -> Result<(), EngineError>;
    /// Copies the raw state of frame `frame` (`3·P` values, data units): for tests and tools.
    fn read_state(&self, frame: usize, out: &mut [f32]) -> Result<(), EngineError>;
}

/// A compute engine for the pipeline's heavy math. Object-safe: the agent holds `&dyn Engine`.
pub trait Engine: Send + Sync {
    /// The engine's name in metrics and registration: "cpu" or "cuda".
    fn name(&self) -> &'static str;
    /// Uploads the conditioning of `frames` and draws their initial noise
    /// ([`kernels::initial_noise`] per element). Every frame's noise depends only on
    /// `(spec.seed, frame_index, pixel, channel, noise key)`, never on the batch it is in.
    fn begin_batch<'a>(
        &'a self,
        spec: &BatchSpec,
        frames: Vec<FrameConditioning>,
    ) -> Result<Box<dyn DiffusionBatch + 'a>, EngineError>;
}

/// Checks that every frame's conditioning has the sizes a `pixels`-pixel frame needs.
pub(crate) fn check_conditioning(
    pixels: usize,
    frames: &[FrameConditioning],
) -> Result<(), EngineError> {
    for f in frames {
        if f.guide.len() != 3 * pixels
            || f.prior_var.len() != pixels
            || f.noise_keys.len() != pixels
        {
            return Err(EngineError::InvalidBatch(format!(
                "frame {}: guide {} / var {} / keys {} values, expected {} / {} / {}",
                f.frame_index,
                f.guide.len(),
                f.prior_var.len(),
                f.noise_keys.len(),
                3 * pixels,
                pixels,
                pixels
            )));
        }
    }
    Ok(())
}

/// The element range of frame `frame` in a batch of `frames` frames of `pixels` pixels,
/// checked against the caller's buffer length.
pub(crate) fn frame_range(
    frames: usize,
    pixels: usize,
    frame: usize,
    out_len: usize,
) -> Result<std::ops::Range<usize>, EngineError> {
    let len = 3 * pixels;
    if frame >= frames || out_len != len {
        return Err(EngineError::InvalidBatch(format!(
            "read of frame {frame} into {out_len} values; batch has {frames} frames of {len}"
        )));
    }
    Ok(frame * len..(frame + 1) * len)
}
