//! `reelfarm bench ...`: benchmarks that print JSON. Figures go to BENCHMARKS.md with the
//! date and machine; compare only against baselines measured in the same run.
//!
//! - [`sched`]: the scheduler alone, with simulated workers over the real gRPC stream,
//!   against [`floor`]: the same workers and server stack with no scheduler behind it.
//! - [`pipeline`]: per-stage timings of the reference pipeline on the CPU engine.
//! - [`load`]: sustained submission at a fixed rate; accepted, refused, coordinator memory.
//! - [`farm`]: a trace of model jobs replayed against the real coordinator's scheduling with
//!   simulated GPU workers, farm placement against round-robin.
//! - [`model`]: the Wan 2.1 model stages (denoising step, VAE decode, text encoding) on CPU,
//!   against diffusers + PyTorch on the same machine, inputs and weights.
//! - [`batch`]: N clips denoised one after another against the same N as one batch
//!   (`--max-batch`), bit-equality checked.

pub mod batch;
pub mod farm;
pub mod floor;
pub mod load;
pub mod model;
pub mod pipeline;
pub mod sched;

/// Facts about the machine a benchmark ran on, included in every report.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": cpu,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

/// p-th percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
