//! `reelfarm watch ID`: follows a job until it ends — a progress bar on a terminal, one JSON
//! line per snapshot with `--output json`.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use reelfarm_proto::v1::{self, job_service_client::JobServiceClient};

use crate::output::{self, Format};

/// Follows `id` to a terminal state and returns the final job.
pub async fn follow(
    client: &mut JobServiceClient<crate::client::Conn>,
    id: &str,
    format: Format,
) -> anyhow::Result<v1::Job> {
    let mut stream = client
        .watch_job(v1::WatchJobRequest { id: id.to_string() })
        .await
        .context("WatchJob")?
        .into_inner();
    let bar = (format == Format::Text && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% {msg}",
            )
            .expect("static template"),
        );
        bar
    });
    let mut last = None;
    while let Some(msg) = stream.message().await.context("WatchJob stream")? {
        let Some(job) = msg.job else { continue };
        match (&bar, format) {
            (Some(bar), _) => {
                let t = job.tasks.unwrap_or_default();
                bar.set_position((job.progress * 1000.0) as u64);
                bar.set_message(format!(
                    "{} · tasks {}/{} done, {} running",
                    v1::JobState::try_from(job.state)
                        .map(|s| s.as_str_name().trim_start_matches("JOB_STATE_"))
                        .unwrap_or("?"),
                    t.done,
                    t.total,
                    t.running
                ));
            }
            (None, Format::Json) => println!("{}", output::job_json(&job)),
            (None, Format::Text) => {}
        }
        last = Some(job);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    last.ok_or_else(|| anyhow::anyhow!("WatchJob ended without a snapshot"))
}

pub async fn run(
    coordinators: &crate::client::Target,
    id: &str,
    format: Format,
) -> anyhow::Result<()> {
    let mut client = crate::client::jobs(coordinators).await?;
    let job = follow(&mut client, id, format).await?;
    if format == Format::Text {
        output::print_job(&job, format);
    }
    exit_status(&job)
}

/// Ok for SUCCEEDED, an error naming the state otherwise (so scripts see a failure).
pub fn exit_status(job: &v1::Job) -> anyhow::Result<()> {
    if job.state == v1::JobState::Succeeded as i32 {
        Ok(())
    } else {
        anyhow::bail!(
            "job {} ended {}: {}",
            job.id,
            v1::JobState::try_from(job.state)
                .map(|s| s.as_str_name())
                .unwrap_or("?"),
            job.error
        )
    }
}
