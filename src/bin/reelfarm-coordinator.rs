//! `reelfarm-coordinator`: see `reelfarm_coordinator::Config` for the flags.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = reelfarm_coordinator::Config::parse();
    reelfarm_telemetry::init_tracing(config.log_json);
    let shutdown = CancellationToken::new();
    let coordinator = reelfarm_coordinator::start(config, shutdown.clone()).await?;
    let lost = coordinator.lost_leadership();
    tokio::select! {
        // SIGTERM on the leader resigns in stop(): another replica takes over at once.
        _ = reelfarm::signals::terminated() => tracing::info!("shutting down"),
        _ = lost.cancelled() => {}
    }
    coordinator.stop().await;
    if lost.is_cancelled() {
        // Exit non-zero so the supervisor restarts this replica as a clean follower.
        anyhow::bail!("stopped: this replica lost leadership");
    }
    Ok(())
}
