//! The coordinator's Prometheus metrics, served on `/metrics` (see `reelfarm_telemetry`).
//!
//! Names follow Prometheus conventions: `reelfarm_` prefix, `_total` for counters, base
//! units (`_seconds`). Labels have small, fixed value sets (priority, state, kind, reason,
//! method, code) so cardinality stays bounded however many jobs run.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use reelfarm_telemetry::metrics::{Registrar, SHORT_SECONDS, WORK_SECONDS};

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
    pub task_failures: IntCounterVec,
    pub workers_excluded: IntCounter,
    pub workers_marked_unhealthy: IntCounter,
    pub worker_sessions_unauthenticated: IntCounter,
    pub api_requests_refused: IntCounterVec,
    pub tls_handshakes_failed: IntCounter,
    pub tls_reloads: IntCounterVec,
    pub stale_reports: IntCounter,
    pub checkpoints: IntCounter,
    pub preemptions_requested: IntCounter,
    pub preemptions: IntCounter,
    pub jobs_forgotten: IntCounter,
    pub artifacts_collected: IntCounter,
    pub cache_hits: IntCounter,
    pub jobs_merged: IntCounter,
    pub batches_dispatched: IntCounter,
    pub batch_size: Histogram,
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
        let r = Registrar::new();
        let metrics = Self {
            jobs_submitted: r.add(IntCounterVec::new(
                Opts::new("reelfarm_jobs_submitted_total", "Jobs accepted, by priority class."),
                &["priority"]
            )),
            jobs_finished: r.add(IntCounterVec::new(
                Opts::new(
                    "reelfarm_jobs_finished_total",
                    "Jobs that reached a terminal state, by state (succeeded, failed, cancelled)."
                ),
                &["state"]
            )),
            jobs_active: r.add(IntGauge::new(
                "reelfarm_jobs_active",
                "Jobs not yet in a terminal state."
            )),
            queue_depth: r.add(IntGaugeVec::new(
                Opts::new("reelfarm_queue_depth", "READY tasks waiting for a worker, by priority class."),
                &["priority"]
            )),
            tasks_dispatched: r.add(IntCounterVec::new(
                Opts::new("reelfarm_tasks_dispatched_total", "Task assignments sent to workers, by task kind."),
                &["kind"]
            )),
            tasks_completed: r.add(IntCounterVec::new(
                Opts::new("reelfarm_tasks_completed_total", "Task results committed, by task kind."),
                &["kind"]
            )),
            tasks_retried: r.add(IntCounterVec::new(
                Opts::new(
                    "reelfarm_tasks_retried_total",
                    "Task attempts that ended without a result and went back to READY (or failed the job), by reason."
                ),
                &["reason"]
            )),
            task_failures: r.add(IntCounterVec::new(
                Opts::new(
                    "reelfarm_task_failures_total",
                    "Failed attempts workers reported, by class (transient: retried; permanent: the job failed at once) and code."
                ),
                &["class", "code"]
            )),
            workers_excluded: r.add(IntCounter::new(
                "reelfarm_workers_excluded_total",
                "Times a worker was excluded from one job's tasks after failing them (--exclude-worker-after)."
            )),
            workers_marked_unhealthy: r.add(IntCounter::new(
                "reelfarm_workers_marked_unhealthy_total",
                "Workers cordoned as unhealthy after repeated failures (--unhealthy-after)."
            )),
            jobs_forgotten: r.add(IntCounter::new(
                "reelfarm_jobs_forgotten_total",
                "Finished jobs deleted by retention (--retain-finished-jobs)."
            )),
            cache_hits: r.add(IntCounter::new(
                "reelfarm_cache_hits_total",
                "Jobs served at submission with the outputs of an earlier job with the same content key."
            )),
            jobs_merged: r.add(IntCounter::new(
                "reelfarm_jobs_merged_total",
                "Jobs that followed an identical running job and got its outputs instead of rendering."
            )),
            batches_dispatched: r.add(IntCounter::new(
                "reelfarm_batches_dispatched_total",
                "DENOISE batches of more than one task sent to a worker (ServedModel.max_batch)."
            )),
            batch_size: r.add(Histogram::with_opts(
                HistogramOpts::new(
                    "reelfarm_batch_size",
                    "Tasks per batch dispatched (batches of more than one task).",
                )
                .buckets(vec![2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]),
            )),
            artifacts_collected: r.add(IntCounter::new(
                "reelfarm_artifacts_collected_total",
                "Files of uncommitted attempts deleted from the artifact store (--artifact-gc-grace-seconds)."
            )),
            artifacts_collected_bytes: r.add(IntCounter::new(
                "reelfarm_artifacts_collected_bytes_total",
                "Bytes of uncommitted attempts' files deleted from the artifact store."
            )),
            worker_sessions_unauthenticated: r.add(IntCounter::new(
                "reelfarm_worker_sessions_unauthenticated_total",
                "WorkerService streams refused for a missing or wrong join token (--join-token-file)."
            )),
            api_requests_refused: r.add(IntCounterVec::new(
                Opts::new(
                    "reelfarm_api_requests_refused_total",
                    "Client requests refused before they ran, by reason: unauthenticated (no, \
                     wrong or revoked API key), permission_denied (role or tenant), \
                     rate_limited (the key's token bucket)."
                ),
                &["reason"]
            )),
            tls_handshakes_failed: r.add(IntCounter::new(
                "reelfarm_tls_handshakes_failed_total",
                "Connections to the gRPC port dropped in the TLS handshake (plaintext, an \
                 unsigned client certificate, a timeout)."
            )),
            tls_reloads: r.add(IntCounterVec::new(
                Opts::new(
                    "reelfarm_tls_reloads_total",
                    "Changes of the --tls-cert/--tls-key files seen, by result: ok (now \
                     served) or error (the previous certificate kept)."
                ),
                &["result"]
            )),
            stale_reports: r.add(IntCounter::new(
                "reelfarm_stale_reports_rejected_total",
                "Progress reports and results rejected because their attempt token was not current (fencing)."
            )),
            checkpoints: r.add(IntCounter::new(
                "reelfarm_task_checkpoints_total",
                "Denoising checkpoints accepted from workers (each replaces its task's previous one)."
            )),
            preemptions_requested: r.add(IntCounter::new(
                "reelfarm_preemptions_requested_total",
                "LOW denoising attempts asked to checkpoint and hand back for HIGH work (--preemption)."
            )),
            preemptions: r.add(IntCounter::new(
                "reelfarm_preemptions_total",
                "LOW denoising attempts handed back after a preemption, to resume from their checkpoint."
            )),
            dispatch_latency: r.add(Histogram::with_opts(
                HistogramOpts::new(
                    "reelfarm_dispatch_latency_seconds",
                    "Time a task waited READY before it was assigned."
                )
                .buckets(SHORT_SECONDS.to_vec())
            )),
            job_duration: r.add(Histogram::with_opts(
                HistogramOpts::new(
                    "reelfarm_job_duration_seconds",
                    "Time from submission to a terminal state."
                )
                .buckets(WORK_SECONDS.to_vec())
            )),
            workers: r.add(IntGaugeVec::new(
                Opts::new("reelfarm_workers", "Connected workers, by state (active, draining)."),
                &["state"]
            )),
            slots: r.add(IntGaugeVec::new(
                Opts::new("reelfarm_worker_slots", "Task slots of connected workers (total, free)."),
                &["state"]
            )),
            leader: r.add(IntGauge::new(
                "reelfarm_leader",
                "1 while this coordinator is the leader and may write state."
            )),
            term: r.add(IntGauge::new("reelfarm_term", "The coordinator's leadership term.")),
            grpc_requests: r.add(IntCounterVec::new(
                Opts::new(
                    "reelfarm_grpc_requests_total",
                    "Client API requests, by method and gRPC status code."
                ),
                &["method", "code"]
            )),
            store_commit_seconds: r.add(HistogramVec::new(
                HistogramOpts::new(
                    "reelfarm_state_write_seconds",
                    "Latency of durable state writes, by operation."
                )
                .buckets(SHORT_SECONDS.to_vec()),
                &["op"]
            )),
            registry: r.into_registry(),
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
