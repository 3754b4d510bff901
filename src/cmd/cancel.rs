//! `reelfarm cancel ID`: cancels a job.

use anyhow::Context as _;
use reelfarm_proto::v1;

use crate::output::{self, Format};

pub async fn run(
    coordinators: &crate::client::Target,
    id: &str,
    format: Format,
) -> anyhow::Result<()> {
    let mut client = crate::client::jobs(coordinators).await?;
    let job = client
        .cancel_job(v1::CancelJobRequest { id: id.to_string() })
        .await
        .context("CancelJob")?
        .into_inner()
        .job
        .context("CancelJob returned no job")?;
    output::print_job(&job, format);
    Ok(())
}
