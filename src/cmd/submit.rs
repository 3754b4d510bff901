//! `reelfarm submit PROMPT [flags]`: submits one job, optionally following it.

use anyhow::Context as _;
use reelfarm_proto::v1;

use super::spec_args::SpecArgs;
use crate::output::{self, Format};

pub async fn run(
    coordinators: &crate::client::Target,
    spec: &SpecArgs,
    idempotency_key: Option<String>,
    follow: bool,
    format: Format,
) -> anyhow::Result<()> {
    let mut client = crate::client::jobs(coordinators).await?;
    let job = client
        .submit_job(v1::SubmitJobRequest {
            spec: Some(spec.to_proto()),
            idempotency_key: idempotency_key.unwrap_or_default(),
        })
        .await
        .context("SubmitJob")?
        .into_inner()
        .job
        .context("SubmitJob returned no job")?;
    if !follow {
        output::print_job(&job, format);
        return Ok(());
    }
    let job = super::watch::follow(&mut client, &job.id, format).await?;
    if format == Format::Text {
        output::print_job(&job, format);
    }
    super::watch::exit_status(&job)
}
