//! The worker's Prometheus metrics, served on `/metrics` (see `reelfarm_telemetry`).
//!
//! - [`Metrics`] (here): counters, gauges and histograms of tasks, frames, audio,
//!   diffusion steps, slots, the session and the artifact store.
//! - [`engine_busy`]: the engine busy ratio, computed at each scrape.
//! - [`gpu`]: a CUDA worker's device: info, memory, utilisation, temperature.

pub mod engine_busy;
pub mod gpu;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use reelfarm_telemetry::metrics::{Registrar, SHORT_SECONDS, WORK_SECONDS};

/// Every metric of the worker, registered in [`Metrics::registry`].
pub struct Metrics {
    pub registry: Registry,
    pub tasks: IntCounterVec,
    pub task_duration: HistogramVec,
    pub frames: IntCounter,
    pub audio_seconds: prometheus::Counter,
    pub diffusion_steps: IntCounterVec,
    pub step_duration: HistogramVec,
    pub slots: IntGaugeVec,
    pub connected: IntGauge,
    pub stale_cancels: IntCounter,
    pub lease_renewal_failures: IntCounter,
    pub artifact_bytes: IntCounter,
    pub checkpoints: IntCounter,
    pub preemptions: IntCounter,
    pub batch_size: Histogram,
    pub session_seconds: Histogram,
    /// `reelfarm_worker_engine_busy_ratio{engine}`: mark engine work with `enter()`.
    pub engine_busy: engine_busy::EngineBusy,
    /// `reelfarm_worker_gpu_*`: set by a CUDA worker (see [`gpu`]).
    pub gpu: gpu::GpuGauges,
}

impl Metrics {
    pub fn new(engine: &str) -> Self {
        let r = Registrar::new();
        let m = Self {
            tasks: r.add(IntCounterVec::new(
                Opts::new(
                    "reelfarm_worker_tasks_total",
                    "Task attempts finished, by kind and outcome (ok, error, cancelled).",
                ),
                &["kind", "outcome"],
            )),
            task_duration: r.add(HistogramVec::new(
                HistogramOpts::new(
                    "reelfarm_worker_task_duration_seconds",
                    "Wall time of a task attempt, by kind.",
                )
                .buckets(WORK_SECONDS.to_vec()),
                &["kind"],
            )),
            frames: r.add(IntCounter::new(
                "reelfarm_worker_frames_generated_total",
                "Video frames generated.",
            )),
            audio_seconds: r.add(prometheus::Counter::new(
                "reelfarm_worker_audio_seconds_generated_total",
                "Seconds of audio generated.",
            )),
            diffusion_steps: r.add(IntCounterVec::new(
                Opts::new(
                    "reelfarm_worker_diffusion_steps_total",
                    "Frame-steps of diffusion sampling, by engine.",
                ),
                &["engine"],
            )),
            step_duration: r.add(HistogramVec::new(
                HistogramOpts::new(
                    "reelfarm_worker_diffusion_step_duration_seconds",
                    "Wall time of one sampler step over a segment's frames, by engine.",
                )
                .buckets(SHORT_SECONDS.to_vec()),
                &["engine"],
            )),
            slots: r.add(IntGaugeVec::new(
                Opts::new(
                    "reelfarm_worker_slots",
                    "Task slots of this worker (total, busy).",
                ),
                &["state"],
            )),
            connected: r.add(IntGauge::new(
                "reelfarm_worker_connected",
                "1 while the worker holds a session with the coordinator.",
            )),
            stale_cancels: r.add(IntCounter::new(
                "reelfarm_worker_cancelled_tasks_total",
                "Running tasks stopped on the coordinator's request or because the session ended.",
            )),
            lease_renewal_failures: r.add(IntCounter::new(
                "reelfarm_worker_lease_renewal_failures_total",
                "Failed etcd lease keep-alives or re-registrations.",
            )),
            artifact_bytes: r.add(IntCounter::new(
                "reelfarm_worker_artifact_bytes_written_total",
                "Bytes written to the artifact store.",
            )),
            checkpoints: r.add(IntCounter::new(
                "reelfarm_worker_checkpoints_total",
                "Denoising checkpoints written to the artifact store and reported.",
            )),
            preemptions: r.add(IntCounter::new(
                "reelfarm_worker_preemptions_total",
                "Attempts checkpointed and handed back because the coordinator preempted them.",
            )),
            batch_size: r.add(Histogram::with_opts(
                HistogramOpts::new(
                    "reelfarm_worker_denoise_batch_size",
                    "DENOISE tasks run together per batch (--max-batch).",
                )
                .buckets(vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]),
            )),
            session_seconds: r.add(Histogram::with_opts(
                HistogramOpts::new(
                    "reelfarm_worker_session_duration_seconds",
                    "Length of sessions with the coordinator.",
                )
                // Sessions last from a reconnect (seconds) to a node's uptime (a day and more).
                .buckets(vec![1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0]),
            )),
            engine_busy: r.add(engine_busy::EngineBusy::new(engine)),
            gpu: gpu::GpuGauges::new(&r),
            registry: r.into_registry(),
        };
        m.diffusion_steps.with_label_values(&[engine]);
        m
    }
}
