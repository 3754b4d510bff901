//! The HTTP endpoint of every reelfarm binary (its `--http-listen` address): `/metrics` in
//! the Prometheus text format and `/healthz`, which answers 200 while the process serves
//! (Kubernetes liveness; the coordinator's readiness is its gRPC health service).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// The `--http-listen` address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("--http-listen {addr}: {source}")]
pub struct HttpListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` (the binary's `--http-listen`) and serves `/metrics` from `registry` and
/// `/healthz` until `shutdown` is cancelled. Returns the bound address (useful with port 0)
/// and the server task; the error names the flag.
pub async fn serve_http(
    addr: SocketAddr,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpListenError> {
    let (listener, bound) = bind_http(addr).await?;
    Ok((bound, serve_http_on(listener, registry, shutdown)))
}

/// Binds `addr` (the binary's `--http-listen`); the error names the flag.
pub async fn bind_http(
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), HttpListenError> {
    let listen_error = |source| HttpListenError { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    Ok((listener, bound))
}

/// Serves `/metrics` and `/healthz` on connections from `listener` (plain TCP, or a TLS
/// listener a binary builds) until `shutdown`.
pub fn serve_http_on<L>(
    listener: L,
    registry: Registry,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(registry);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    task
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
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

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}
