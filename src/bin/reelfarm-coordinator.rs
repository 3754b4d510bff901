//! `reelfarm-coordinator`: see `reelfarm_coordinator::Config` for the flags.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = reelfarm_coordinator::Config::parse();
    reelfarm_telemetry::init_tracing(config.log_json);
    let shutdown = CancellationToken::new();
    let coordinator = reelfarm_coordinator::start(config, shutdown.clone()).await?;
    let fenced = coordinator.scheduler.fenced();
    tokio::select! {
        _ = reelfarm::signals::terminated() => tracing::info!("shutting down"),
        _ = fenced.cancelled() => {}
    }
    coordinator.stop().await;
    if fenced.is_cancelled() {
        anyhow::bail!("stopped: a newer coordinator term owns the state");
    }
    Ok(())
}
