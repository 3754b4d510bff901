//! `reelfarm-worker`: see `reelfarm_worker::Config` for the flags.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = reelfarm_worker::Config::parse();
    reelfarm_telemetry::init_tracing(config.log_json);
    let drain_timeout = std::time::Duration::from_secs(config.drain_timeout);
    let shutdown = CancellationToken::new();
    let worker = reelfarm_worker::start(config, shutdown.clone()).await?;
    reelfarm::signals::terminated().await;
    tracing::info!("shutting down: draining");
    // Finish or hand back the running tasks, then deregister (stop revokes the lease).
    worker.drain(drain_timeout).await;
    worker.stop().await;
    Ok(())
}
