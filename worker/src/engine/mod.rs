//! Engines: where the diffusion math runs. (Scaffold, replaced by the engine work.)

pub mod cpu;

/// A compute engine for the pipeline's heavy math.
pub trait Engine: Send + Sync {
    /// "cpu" or "cuda".
    fn name(&self) -> &'static str;
}
