//! `reelfarm get ID`: one job.

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
        .get_job(v1::GetJobRequest { id: id.to_string() })
        .await
        .context("GetJob")?
        .into_inner()
        .job
        .context("GetJob returned no job")?;
    output::print_job(&job, format);
    Ok(())
}
