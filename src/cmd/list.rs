//! `reelfarm list`: jobs, newest first, filtered; `--all` follows every page.

use anyhow::Context as _;
use reelfarm_proto::v1;

use crate::output::{self, Format};

pub struct ListArgs {
    pub tenant: String,
    pub state: Option<v1::JobState>,
    pub label: String,
    pub page_size: u32,
    pub all: bool,
}

pub async fn run(
    coordinators: &crate::client::Target,
    args: ListArgs,
    format: Format,
) -> anyhow::Result<()> {
    let mut client = crate::client::jobs(coordinators).await?;
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(v1::ListJobsRequest {
                tenant: args.tenant.clone(),
                state: args.state.map_or(0, |s| s as i32),
                label: args.label.clone(),
                page_size: args.page_size,
                page_token: token.clone(),
                summary_only: true,
            })
            .await
            .context("ListJobs")?
            .into_inner();
        for job in &page.jobs {
            match format {
                Format::Json => println!("{}", output::job_json(job)),
                Format::Text => println!("{}", output::job_line(job)),
            }
        }
        if !args.all || page.next_page_token.is_empty() {
            if !page.next_page_token.is_empty() && format == Format::Text {
                println!("(more: --page-token {})", page.next_page_token);
            }
            return Ok(());
        }
        token = page.next_page_token;
    }
}
