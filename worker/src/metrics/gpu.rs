//! The GPU gauges of a CUDA worker: what the device is (an info gauge) and its memory,
//! utilisation and temperature. Memory is set from the driver at start; with NVML present
//! (libnvidia-ml, part of every NVIDIA driver install) the CUDA build refreshes all four
//! every [`SAMPLE_EVERY`]. A CPU worker exports the metric families with no series.

use std::time::Duration;

use prometheus::{Gauge, GaugeVec, IntGaugeVec, Opts};
use reelfarm_telemetry::metrics::Registrar;

use crate::engine::GpuFacts;

/// Between NVML readings: well under the chart's 30 s scrape interval.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// See the module docs. Series are labelled with the CUDA ordinal (`gpu="0"`).
#[derive(Clone)]
pub struct GpuGauges {
    pub info: IntGaugeVec,
    pub memory_total: GaugeVec,
    pub memory_free: GaugeVec,
    pub utilization: GaugeVec,
    pub temperature: GaugeVec,
}

impl GpuGauges {
    pub fn new(r: &Registrar) -> Self {
        let gauge = |name: &str, help: &str| r.add(GaugeVec::new(Opts::new(name, help), &["gpu"]));
        Self {
            info: r.add(IntGaugeVec::new(
                Opts::new(
                    "reelfarm_worker_gpu_info",
                    "1 per CUDA device the worker runs on, labelled with what it is.",
                ),
                &[
                    "gpu",
                    "name",
                    "uuid",
                    "compute_capability",
                    "driver_cuda_version",
                ],
            )),
            memory_total: gauge(
                "reelfarm_worker_gpu_memory_total_bytes",
                "Total memory of the worker's GPU.",
            ),
            memory_free: gauge(
                "reelfarm_worker_gpu_memory_free_bytes",
                "Free memory of the worker's GPU (driver at start, then NVML).",
            ),
            utilization: gauge(
                "reelfarm_worker_gpu_utilization_ratio",
                "Fraction of NVML's last sample period with a kernel running on the GPU.",
            ),
            temperature: gauge(
                "reelfarm_worker_gpu_temperature_celsius",
                "GPU die temperature (NVML).",
            ),
        }
    }

    /// The device's free memory as last read (driver at start, then NVML); 0 on the CPU.
    pub fn free_bytes(&self) -> u64 {
        use prometheus::core::Collector;
        self.memory_free
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_gauge().get_value())
            .sum::<f64>() as u64
    }

    /// Sets the info series and the memory gauges from the driver's facts.
    pub fn set_device(&self, g: &GpuFacts) {
        let ordinal = g.ordinal.to_string();
        let cc = format!("{}.{}", g.compute_capability.0, g.compute_capability.1);
        self.info
            .with_label_values(&[&ordinal, &g.name, &g.uuid, &cc, &g.driver_cuda_version])
            .set(1);
        self.series(&self.memory_total, g.ordinal)
            .set(g.total_memory_bytes as f64);
        self.series(&self.memory_free, g.ordinal)
            .set(g.free_memory_bytes as f64);
    }

    /// Sets the four load gauges of device `ordinal` from one NVML reading.
    pub fn set_sample(
        &self,
        ordinal: usize,
        total_bytes: u64,
        free_bytes: u64,
        utilization: f64,
        temperature_celsius: f64,
    ) {
        self.series(&self.memory_total, ordinal)
            .set(total_bytes as f64);
        self.series(&self.memory_free, ordinal)
            .set(free_bytes as f64);
        self.series(&self.utilization, ordinal).set(utilization);
        self.series(&self.temperature, ordinal)
            .set(temperature_celsius);
    }

    fn series(&self, vec: &GaugeVec, ordinal: usize) -> Gauge {
        vec.with_label_values(&[&ordinal.to_string()])
    }
}

/// Refreshes the gauges of device `gpu` from NVML every [`SAMPLE_EVERY`] until `shutdown`.
/// Without NVML (or if it does not know the device) it logs why once and leaves the
/// driver's start-up values.
#[cfg(feature = "cuda")]
pub async fn sample_nvml(
    gpu: GpuFacts,
    gauges: GpuGauges,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use crate::engine::cuda::device::GpuSampler;
    let uuid = gpu.uuid.clone();
    let sampler = match tokio::task::spawn_blocking(move || GpuSampler::new(&uuid)).await {
        Ok(Ok(s)) => std::sync::Arc::new(s),
        Ok(Err(why)) => {
            tracing::warn!(
                gpu = gpu.ordinal,
                "GPU gauges stay at start-up values: {why}"
            );
            return;
        }
        Err(_) => return,
    };
    tracing::info!(gpu = gpu.ordinal, driver = ?sampler.driver_version(), "NVML sampling the GPU gauges");
    let mut logged = false;
    loop {
        let s = sampler.clone();
        match tokio::task::spawn_blocking(move || s.sample()).await {
            Ok(Ok(r)) => gauges.set_sample(
                gpu.ordinal,
                r.total_memory_bytes,
                r.free_memory_bytes,
                r.utilization,
                r.temperature_celsius,
            ),
            Ok(Err(why)) if !logged => {
                tracing::warn!(gpu = gpu.ordinal, "NVML reading failed: {why}");
                logged = true;
            }
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_facts_become_labelled_series() {
        let r = Registrar::new();
        let g = GpuGauges::new(&r);
        g.set_device(&GpuFacts {
            ordinal: 1,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: "GPU-00000000-0000-0000-0000-000000000001".into(),
            compute_capability: (9, 0),
            total_memory_bytes: 80 << 30,
            free_memory_bytes: 79 << 30,
            driver_cuda_version: "12.8".into(),
        });
        g.set_sample(1, 80 << 30, 70 << 30, 0.93, 61.0);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&r.into_registry().gather())
            .expect("text encoding");
        for line in [
            "reelfarm_worker_gpu_info{compute_capability=\"9.0\",driver_cuda_version=\"12.8\",gpu=\"1\",name=\"NVIDIA H100 80GB HBM3\",uuid=\"GPU-00000000-0000-0000-0000-000000000001\"} 1",
            "reelfarm_worker_gpu_memory_free_bytes{gpu=\"1\"} 75161927680",
            "reelfarm_worker_gpu_utilization_ratio{gpu=\"1\"} 0.93",
            "reelfarm_worker_gpu_temperature_celsius{gpu=\"1\"} 61",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
