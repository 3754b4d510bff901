//! Observability shared by the coordinator and the worker binaries.
//!
//! - [`serve_http`]: the small HTTP endpoint with `/metrics` (Prometheus text format from a
//!   [`prometheus::Registry`]) and `/healthz`.
//! - [`init_tracing`]: structured logs through `tracing`, level from `RUST_LOG`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// Readiness as the process itself sees it; `/healthz` answers 200 while set, 503 otherwise.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// Starts healthy.
    pub fn healthy() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
    pub fn set(&self, ok: bool) {
        self.0.store(ok, Ordering::Relaxed);
    }
    pub fn is_healthy(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct HttpState {
    registry: Registry,
    health: Health,
}

/// Binds `addr` and serves `/metrics` and `/healthz` until `shutdown` is cancelled.
/// Returns the bound address (useful with port 0) and the server task.
pub async fn serve_http(
    addr: SocketAddr,
    registry: Registry,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(HttpState { registry, health });
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            e.to_string().into_bytes(),
        ),
    }
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.health.is_healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    }
}

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
