//! `--engine auto|cpu|cuda` and `--gpu N`: which engine runs the reference pipeline and
//! which candle device runs the open models.
//!
//! `auto` takes CUDA when this binary has the CUDA engine and the driver sees device
//! `--gpu`, else the CPU, with one log line saying why. A device that is there but cannot
//! be used (the kernels do not compile, the context cannot be created) is an error under
//! `auto` too: a GPU node quietly running on its CPU would be the worse failure.

use std::sync::Arc;

use candle_core::Device;

use super::{cpu::CpuEngine, Engine, GpuFacts};
use crate::config::EngineChoice;

/// The engines a worker runs with.
pub struct Selected {
    /// The reference pipeline's engine.
    pub engine: Arc<dyn Engine>,
    /// The device of a CUDA worker, for registration and the GPU gauges.
    pub gpu: Option<GpuFacts>,
    /// Where the model engine (candle) runs: the same GPU, or the CPU.
    pub model_device: Device,
}

fn cpu(why: &str) -> Selected {
    tracing::info!(engine = "cpu", "{why}");
    Selected {
        engine: Arc::new(CpuEngine),
        gpu: None,
        model_device: Device::Cpu,
    }
}

/// Picks the engines for `choice` on device `gpu`, logging why.
#[cfg(not(feature = "cuda"))]
pub fn select(choice: EngineChoice, gpu: usize) -> anyhow::Result<Selected> {
    let _ = gpu;
    match choice {
        EngineChoice::Cpu => Ok(cpu("engine chosen by --engine cpu")),
        EngineChoice::Auto => Ok(cpu(
            "engine auto: this binary is built without the cuda feature; using cpu",
        )),
        EngineChoice::Cuda => anyhow::bail!(
            "--engine cuda: this binary is built without the `cuda` feature; run the CUDA \
             build of reelfarm-worker (README, CUDA)"
        ),
    }
}

/// Picks the engines for `choice` on device `gpu`, logging why.
#[cfg(feature = "cuda")]
pub fn select(choice: EngineChoice, gpu: usize) -> anyhow::Result<Selected> {
    use super::cuda::{device, CudaEngine};
    match choice {
        EngineChoice::Cpu => return Ok(cpu("engine chosen by --engine cpu")),
        EngineChoice::Auto => {
            if let Err(why) = device::probe(gpu) {
                return Ok(cpu(&format!("engine auto: {why}; using cpu")));
            }
        }
        EngineChoice::Cuda => {
            device::probe(gpu).map_err(|why| anyhow::anyhow!("--engine cuda: {why}"))?;
        }
    }
    let engine = CudaEngine::new(gpu).map_err(|e| anyhow::anyhow!("--gpu {gpu}: {e}"))?;
    let facts = engine.facts.clone();
    let model_device = Device::new_cuda(gpu)
        .map_err(|e| anyhow::anyhow!("--gpu {gpu}: candle's CUDA device: {e}"))?;
    tracing::info!(
        engine = "cuda",
        gpu = facts.ordinal,
        name = %facts.name,
        uuid = %facts.uuid,
        compute_capability = %format!("{}.{}", facts.compute_capability.0, facts.compute_capability.1),
        total_memory_bytes = facts.total_memory_bytes,
        driver_cuda = %facts.driver_cuda_version,
        "engine {}: CUDA device {gpu}",
        if choice == EngineChoice::Auto { "auto" } else { "cuda" },
    );
    Ok(Selected {
        engine: Arc::new(engine),
        gpu: Some(facts),
        model_device,
    })
}
