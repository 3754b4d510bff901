//! What a CUDA device is, from the driver (cudarc) and, where the library is present, NVML:
//! at registration (name, compute capability, memory) and as gauges (memory, utilisation,
//! temperature; see [`GpuSampler`]).
//!
//! Detection never panics: this binary links `libcuda` (candle's CUDA backend needs cudarc's
//! dynamic-linking mode, in which `is_culib_present()` does not exist), so the library is
//! there once the process runs; what can still be missing is a working driver (`cuInit`
//! fails, e.g. CUDA_ERROR_STUB_LIBRARY where only the link stub is on the loader path, or
//! CUDA_ERROR_NO_DEVICE) or the device asked for. [`probe`] reports each as an error.

use std::sync::Arc;

use cudarc::driver::{CudaContext, DriverError};
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;

pub use super::super::GpuFacts as DeviceFacts;

/// Reads the facts of the device `ctx` is open on.
pub fn facts(ctx: &Arc<CudaContext>) -> Result<DeviceFacts, DriverError> {
    let (free, total) = ctx.mem_get_info()?;
    let uuid = ctx.uuid()?;
    let mut driver: std::ffi::c_int = 0;
    // SAFETY: cuDriverGetVersion writes one int through a valid pointer.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver).result()? };
    Ok(DeviceFacts {
        ordinal: ctx.ordinal(),
        name: ctx.name()?,
        uuid: format_uuid(&uuid.bytes.map(|b| b as u8)),
        compute_capability: ctx.compute_capability()?,
        total_memory_bytes: total as u64,
        free_memory_bytes: free as u64,
        driver_cuda_version: format!("{}.{}", driver / 1000, (driver % 1000) / 10),
    })
}

/// NVML's spelling of a device UUID: `GPU-` and 8-4-4-4-12 hex digits.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Why no CUDA device can be used, or how many there are.
pub fn device_count() -> Result<usize, String> {
    cudarc::driver::result::init().map_err(|e| format!("no CUDA driver (cuInit: {:?})", e.0))?;
    let n = CudaContext::device_count().map_err(|e| format!("cuDeviceGetCount: {:?}", e.0))?;
    Ok(n.max(0) as usize)
}

/// Checks that device `ordinal` exists and can be opened.
pub fn probe(ordinal: usize) -> Result<(), String> {
    let n = device_count()?;
    if n == 0 {
        return Err("the CUDA driver sees no device".into());
    }
    if ordinal >= n {
        return Err(format!(
            "--gpu {ordinal}: the CUDA driver sees {n} device(s), 0..={}",
            n - 1
        ));
    }
    Ok(())
}

/// A reading of one device's load, from NVML.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuSample {
    pub total_memory_bytes: u64,
    pub free_memory_bytes: u64,
    /// Fraction of the last sample period with a kernel running, 0..=1.
    pub utilization: f64,
    pub temperature_celsius: f64,
}

/// Reads a device's load through NVML, found by the UUID the driver reported (NVML numbers
/// devices in PCI order, CUDA fastest first, so ordinals do not match).
pub struct GpuSampler {
    nvml: Nvml,
    uuid: String,
}

impl GpuSampler {
    /// `Err` (a log line, not a failure) where libnvidia-ml is not loadable.
    pub fn new(uuid: &str) -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
        nvml.device_by_uuid(uuid)
            .map_err(|e| format!("NVML does not know {uuid}: {e}"))?;
        Ok(Self {
            nvml,
            uuid: uuid.to_string(),
        })
    }

    /// One reading; `Err` names what NVML refused.
    pub fn sample(&self) -> Result<GpuSample, String> {
        let dev = self
            .nvml
            .device_by_uuid(self.uuid.as_str())
            .map_err(|e| format!("NVML device {}: {e}", self.uuid))?;
        let memory = dev.memory_info().map_err(|e| format!("NVML memory: {e}"))?;
        let utilization = dev
            .utilization_rates()
            .map_err(|e| format!("NVML utilisation: {e}"))?;
        let temperature = dev
            .temperature(TemperatureSensor::Gpu)
            .map_err(|e| format!("NVML temperature: {e}"))?;
        Ok(GpuSample {
            total_memory_bytes: memory.total,
            free_memory_bytes: memory.free,
            utilization: f64::from(utilization.gpu) / 100.0,
            temperature_celsius: f64::from(temperature),
        })
    }

    /// The NVML driver version ("570.124.06"), for logs.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn uuid_is_spelled_as_nvml_does() {
        let bytes: [u8; 16] = [
            0x8f, 0x0e, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70, 0x81, 0x92, 0xa3, 0xb4, 0xc5,
            0xd6, 0xe7,
        ];
        assert_eq!(
            format_uuid(&bytes),
            "GPU-8f0e1a2b-3c4d-5e6f-7081-92a3b4c5d6e7"
        );
    }
}
