//! The CPU engine. (Scaffold, replaced by the engine work.)

/// Runs every kernel on the CPU.
#[derive(Debug, Default)]
pub struct CpuEngine;

impl super::Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }
}
