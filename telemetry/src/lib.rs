//! Observability shared by the coordinator and the worker binaries.
//!
//! - [`metrics`]: registering metrics ([`metrics::Registrar`]) and the histogram buckets
//!   both wings use.
//! - [`http`]: the small HTTP endpoint with `/metrics` (Prometheus text format from a
//!   [`prometheus::Registry`]) and `/healthz`, started the same way by every binary
//!   ([`serve_http`]).
//! - [`init_tracing`]: structured logs through `tracing`, level from `RUST_LOG`.

pub mod http;
pub mod metrics;

pub use http::{bind_http, serve_http, serve_http_on};

/// Installs the global `tracing` subscriber: `RUST_LOG` filter (default `info`), human
/// readable lines, or JSON lines when `json` is set. Safe to call more than once.
pub fn init_tracing(json: bool) {
    init_tracing_with_default(json, "info")
}

/// As [`init_tracing`], with another level when `RUST_LOG` is unset (the CLI uses `warn`
/// so progress bars stay readable).
pub fn init_tracing_with_default(json: bool, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
