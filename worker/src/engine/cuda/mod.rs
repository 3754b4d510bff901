//! The CUDA engine: the four operations of [`super::Engine`] as NVRTC-compiled kernels
//! (`kernels.cu`, the line-for-line port of [`super::kernels`]) launched on cudarc streams.
//!
//! Built only with the `cuda` feature. The kernels are compiled once per engine, at start,
//! for the device's own compute capability ([`compile`]); a batch keeps its state, its
//! conditioning and both denoiser outputs in device memory between steps and copies frames
//! back only in [`DiffusionBatch::read_rgb8`] / [`DiffusionBatch::read_state`]. Each batch
//! runs on a stream of its own, so the worker's slots overlap on one GPU.

pub mod compile;
pub mod device;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};

use super::{BatchSpec, DiffusionBatch, Engine, EngineError, FrameConditioning, Update};

/// Threads per block: elementwise kernels with no shared memory run well at any multiple of
/// the warp; 256 keeps several blocks resident per SM on every architecture we target.
const BLOCK: u32 = 256;
/// Most blocks per launch; the kernels loop (grid-stride) over what is left.
const MAX_GRID: u64 = 1 << 16;

fn device_error(what: &str) -> impl Fn(DriverError) -> EngineError + '_ {
    move |e| EngineError::Device(format!("{what}: {e}"))
}

/// The compiled kernels of [`compile::KERNELS`].
struct Kernels {
    initial_noise: CudaFunction,
    posterior_mean: CudaFunction,
    combine: CudaFunction,
    to_rgb8: CudaFunction,
}

/// Runs the reference pipeline's math on one CUDA device.
pub struct CudaEngine {
    ctx: Arc<CudaContext>,
    kernels: Kernels,
    /// What the device is, for logs and registration.
    pub facts: device::DeviceFacts,
}

impl std::fmt::Debug for CudaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaEngine")
            .field("facts", &self.facts)
            .finish()
    }
}

impl CudaEngine {
    /// Opens device `ordinal` and compiles the kernels for its architecture.
    pub fn new(ordinal: usize) -> Result<Self, EngineError> {
        let ctx = CudaContext::new(ordinal).map_err(device_error("opening the CUDA device"))?;
        let facts = device::facts(&ctx).map_err(device_error("reading the device's facts"))?;
        let ptx = compile::compile_ptx(facts.compute_capability)
            .map_err(|e| EngineError::Device(format!("compiling kernels.cu: {e}")))?;
        let module = ctx
            .load_module(ptx)
            .map_err(device_error("loading the kernels"))?;
        let function = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| EngineError::Device(format!("kernel {name}: {e}")))
        };
        let kernels = Kernels {
            initial_noise: function("initial_noise")?,
            posterior_mean: function("posterior_mean")?,
            combine: function("combine")?,
            to_rgb8: function("to_rgb8")?,
        };
        Ok(Self {
            ctx,
            kernels,
            facts,
        })
    }
}

/// The launch shape for `n` elements (the kernels are grid-stride loops).
fn launch_for(n: usize) -> LaunchConfig {
    let blocks = (n as u64).div_ceil(u64::from(BLOCK)).clamp(1, MAX_GRID) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl Engine for CudaEngine {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn begin_batch<'a>(
        &'a self,
        spec: &BatchSpec,
        frames: Vec<FrameConditioning>,
    ) -> Result<Box<dyn DiffusionBatch + 'a>, EngineError> {
        Ok(Box::new(CudaBatch::new(self, spec, frames)?))
    }
}

/// A batch in device memory, on a stream of its own.
struct CudaBatch<'a> {
    engine: &'a CudaEngine,
    stream: Arc<CudaStream>,
    pixels: usize,
    frames: usize,
    x: CudaSlice<f32>,
    guide: CudaSlice<f32>,
    var: CudaSlice<f32>,
    d: CudaSlice<f32>,
    d_prev: CudaSlice<f32>,
}

impl<'a> CudaBatch<'a> {
    fn new(
        engine: &'a CudaEngine,
        spec: &BatchSpec,
        frames: Vec<FrameConditioning>,
    ) -> Result<Self, EngineError> {
        let pixels = spec.pixels();
        super::check_conditioning(pixels, &frames)?;
        let n = frames.len() * 3 * pixels;
        let stream = engine
            .ctx
            .new_stream()
            .map_err(device_error("creating a stream"))?;
        let mut guide = Vec::with_capacity(n);
        let mut var = Vec::with_capacity(frames.len() * pixels);
        let mut keys = Vec::with_capacity(frames.len() * pixels);
        let mut frame_index = Vec::with_capacity(frames.len());
        for f in &frames {
            guide.extend_from_slice(&f.guide);
            var.extend_from_slice(&f.prior_var);
            keys.extend_from_slice(&f.noise_keys);
            frame_index.push(f.frame_index);
        }
        let upload = device_error("uploading the conditioning");
        // Zero-length device buffers are not allocatable: an empty batch keeps one element.
        fn at_least_one<T: Default>(v: &mut Vec<T>) {
            if v.is_empty() {
                v.push(T::default())
            }
        }
        at_least_one(&mut guide);
        at_least_one(&mut var);
        at_least_one(&mut keys);
        at_least_one(&mut frame_index);
        let guide = stream.clone_htod(&guide).map_err(&upload)?;
        let var = stream.clone_htod(&var).map_err(&upload)?;
        let keys = stream.clone_htod(&keys).map_err(&upload)?;
        let frame_index = stream.clone_htod(&frame_index).map_err(&upload)?;
        let alloc = device_error("allocating the batch");
        let mut x = stream.alloc_zeros::<f32>(n.max(1)).map_err(&alloc)?;
        let d = stream.alloc_zeros::<f32>(n.max(1)).map_err(&alloc)?;
        let d_prev = stream.alloc_zeros::<f32>(n.max(1)).map_err(&alloc)?;
        if n > 0 {
            let (pixels64, n64) = (pixels as u64, n as u64);
            let mut launch = stream.launch_builder(&engine.kernels.initial_noise);
            launch
                .arg(&mut x)
                .arg(&keys)
                .arg(&frame_index)
                .arg(&pixels64)
                .arg(&n64)
                .arg(&spec.seed)
                .arg(&spec.sigma_init)
                .arg(&spec.static_noise_weight);
            // SAFETY: the argument list matches initial_noise's signature in kernels.cu, and
            // every buffer holds the `n` (x) or `frames·P` (keys) elements the kernel reads.
            unsafe { launch.launch(launch_for(n)) }.map_err(device_error("initial_noise"))?;
        }
        // keys and frame_index are read by the launch above; the stream orders their free
        // after it (cudarc records the launch's read before the drop).
        drop((keys, frame_index));
        Ok(Self {
            engine,
            stream,
            pixels,
            frames: frames.len(),
            x,
            guide,
            var,
            d,
            d_prev,
        })
    }

    fn elements(&self) -> usize {
        self.frames * 3 * self.pixels
    }
}

impl DiffusionBatch for CudaBatch<'_> {
    fn len(&self) -> usize {
        self.frames
    }

    fn denoise(&mut self, sigma: f32) -> Result<(), EngineError> {
        std::mem::swap(&mut self.d, &mut self.d_prev);
        let n = self.elements();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let mut launch = self
            .stream
            .launch_builder(&self.engine.kernels.posterior_mean);
        launch
            .arg(&mut self.d)
            .arg(&self.x)
            .arg(&self.guide)
            .arg(&self.var)
            .arg(&n64)
            .arg(&sigma);
        // SAFETY: matches posterior_mean's signature; d, x, guide hold n elements, var n/3.
        unsafe { launch.launch(launch_for(n)) }.map_err(device_error("posterior_mean"))?;
        Ok(())
    }

    fn update(&mut self, update: Update) -> Result<(), EngineError> {
        let n = self.elements();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let mut launch = self.stream.launch_builder(&self.engine.kernels.combine);
        launch
            .arg(&mut self.x)
            .arg(&self.d)
            .arg(&self.d_prev)
            .arg(&n64)
            .arg(&update.x_coef)
            .arg(&update.denoised_coef)
            .arg(&update.previous_coef);
        // SAFETY: matches combine's signature; the three buffers hold n elements each.
        unsafe { launch.launch(launch_for(n)) }.map_err(device_error("combine"))?;
        Ok(())
    }

    fn read_rgb8(&self, frame: usize, out: &mut [u8]) -> Result<(), EngineError> {
        let range = super::frame_range(self.frames, self.pixels, frame, out.len())?;
        let len = range.len();
        let mut rgb = self
            .stream
            .alloc_zeros::<u8>(len.max(1))
            .map_err(device_error("allocating a frame"))?;
        let (offset, len64) = (range.start as u64, len as u64);
        let mut launch = self.stream.launch_builder(&self.engine.kernels.to_rgb8);
        launch.arg(&mut rgb).arg(&self.x).arg(&offset).arg(&len64);
        // SAFETY: matches to_rgb8's signature; rgb holds len bytes, x offset + len floats.
        unsafe { launch.launch(launch_for(len)) }.map_err(device_error("to_rgb8"))?;
        self.stream
            .memcpy_dtoh(&rgb.slice(0..len), out)
            .map_err(device_error("downloading a frame"))?;
        self.stream
            .synchronize()
            .map_err(device_error("waiting for the frame"))
    }

    fn read_state(&self, frame: usize, out: &mut [f32]) -> Result<(), EngineError> {
        let range = super::frame_range(self.frames, self.pixels, frame, out.len())?;
        self.stream
            .memcpy_dtoh(&self.x.slice(range), out)
            .map_err(device_error("downloading the state"))?;
        self.stream
            .synchronize()
            .map_err(device_error("waiting for the state"))
    }
}
