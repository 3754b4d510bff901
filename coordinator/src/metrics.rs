//! The coordinator's Prometheus metrics, served on `/metrics` (see `reelfarm_telemetry`).
//!
//! Names follow Prometheus conventions: `reelfarm_` prefix, `_total` for counters, base
//! units (`_seconds`). Labels have small, fixed value sets (priority, state, kind, reason,
//! method, code) so cardinality stays bounded however many jobs run.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::model::Priority;

/// Why a task attempt ended without a result, the `reason` label of
/// `reelfarm_tasks_retried_total`. Listed so every series exists (at 0) from the start.
pub const RETRY_REASONS: [&str; 7] = [
    "task_error",
    "stream_closed",
    "lease_lost",
    "worker_reconnected",
    "commit_failed",
    "stuck",
    "handed_back",
];

/// Every metric of the coordinator, registered in [`Metrics::registry`].
pub struct Metrics {
    pub registry: Registry,
    pub jobs_submitted: IntCounterVec,
    pub jobs_finished: IntCounterVec,
    pub jobs_active: IntGauge,
    queue_depth: IntGaugeVec,
    pub tasks_dispatched: IntCounterVec,
    pub tasks_completed: IntCounterVec,
    pub tasks_retried: IntCounterVec,
    pub stale_reports: IntCounter,
    pub jobs_forgotten: IntCounter,
    pub artifacts_collected: IntCounter,
    pub cache_hits: IntCounter,
    pub artifacts_collected_bytes: IntCounter,
    pub dispatch_latency: Histogram,
    pub job_duration: Histogram,
    pub workers: IntGaugeVec,
    pub slots: IntGaugeVec,
    pub leader: IntGauge,
    pub term: IntGauge,
    pub grpc_requests: IntCounterVec,
    pub store_commit_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definitions are static and valid");
                registry
                    .register(Box::new(m.clone()))
                    .expect("each metric is registered once");
                m
            }};
        }
        let metrics = Self {
            jobs_submitted: reg!(IntCounterVec::new(
                Opts::new("reelfarm_jobs_submitted_total", "Jobs accepted, by priority class."),
                &["priority"]
            )),
            jobs_finished: reg!(IntCounterVec::new(
                Opts::new(
                    "reelfarm_jobs_finished_total",
                    "Jobs that reached a terminal state, by state (succeeded, failed, cancelled)."
                ),
                &["state"]
            )),
            jobs_active: reg!(IntGauge::new(
                "reelfarm_jobs_active",
                "Jobs not yet in a terminal state."
            )),
            queue_depth: reg!(IntGaugeVec::new(
                Opts::new("reelfarm_queue_depth", "READY tasks waiting for a worker, by priority class."),
                &["priority"]
            )),
            tasks_dispatched: reg!(IntCounterVec::new(
                Opts::new("reelfarm_tasks_dispatched_total", "Task assignments sent to workers, by task kind."),
                &["kind"]
            )),
            tasks_completed: reg!(IntCounterVec::new(
                Opts::new("reelfarm_tasks_completed_total", "Task results committed, by task kind."),
                &["kind"]
            )),
            tasks_retried: reg!(IntCounterVec::new(
                Opts::new(
                    "reelfarm_tasks_retried_total",
                    "Task attempts that ended without a result and went back to READY (or failed the job), by reason."
                ),
                &["reason"]
            )),
            jobs_forgotten: reg!(IntCounter::new(
                "reelfarm_jobs_forgotten_total",
                "Finished jobs deleted by retention (--retain-finished-jobs)."
            )),
            cache_hits: reg!(IntCounter::new(
                "reelfarm_cache_hits_total",
                "Jobs served at submission with the outputs of an earlier job with the same content key."
            )),
            artifacts_collected: reg!(IntCounter::new(
                "reelfarm_artifacts_collected_total",
                "Files of uncommitted attempts deleted from the artifact store (--artifact-gc-grace-seconds)."
            )),
            artifacts_collected_bytes: reg!(IntCounter::new(
                "reelfarm_artifacts_collected_bytes_total",
                "Bytes of uncommitted attempts' files deleted from the artifact store."
            )),
            stale_reports: reg!(IntCounter::new(
                "reelfarm_stale_reports_rejected_total",
                "Progress reports and results rejected because their attempt token was not current (fencing)."
            )),
            dispatch_latency: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "reelfarm_dispatch_latency_seconds",
                    "Time a task waited READY before it was assigned."
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0
                ])
            )),
            job_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "reelfarm_job_duration_seconds",
                    "Time from submission to a terminal state."
                )
                .buckets(vec![
                    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                    3600.0
                ])
            )),
            workers: reg!(IntGaugeVec::new(
                Opts::new("reelfarm_workers", "Connected workers, by state (active, draining)."),
                &["state"]
            )),
            slots: reg!(IntGaugeVec::new(
                Opts::new("reelfarm_worker_slots", "Task slots of connected workers (total, free)."),
                &["state"]
            )),
            leader: reg!(IntGauge::new(
                "reelfarm_leader",
                "1 while this coordinator is the leader and may write state."
            )),
            term: reg!(IntGauge::new("reelfarm_term", "The coordinator's leadership term.")),
            grpc_requests: reg!(IntCounterVec::new(
                Opts::new(
                    "reelfarm_grpc_requests_total",
                    "Client API requests, by method and gRPC status code."
                ),
                &["method", "code"]
            )),
            store_commit_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "reelfarm_state_write_seconds",
                    "Latency of durable state writes, by operation."
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
                &["op"]
            )),
            registry,
        };
        for p in Priority::ALL {
            metrics.queue_depth(p).set(0);
            metrics.jobs_submitted.with_label_values(&[p.as_str()]);
        }
        for r in RETRY_REASONS {
            metrics.tasks_retried.with_label_values(&[r]);
        }
        for s in ["active", "draining"] {
            metrics.workers.with_label_values(&[s]).set(0);
        }
        metrics
    }

    /// The ready-queue gauge of one priority class.
    pub fn queue_depth(&self, p: Priority) -> IntGauge {
        self.queue_depth.with_label_values(&[p.as_str()])
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
