//! `reelfarm status`: the cluster at a glance (AdminService/GetClusterStatus).

use anyhow::Context as _;
use reelfarm_proto::v1;

use crate::output::Format;

pub async fn run(coordinators: &crate::client::Target, format: Format) -> anyhow::Result<()> {
    let mut client = crate::client::admin(coordinators).await?;
    let s = client
        .get_cluster_status(v1::GetClusterStatusRequest {})
        .await
        .context("GetClusterStatus")?
        .into_inner();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "cluster": s.cluster, "leader": s.leader, "term": s.term,
                "state_backend": s.state_backend, "workers": s.workers,
                "jobs_active": s.jobs_active, "tasks_ready": s.tasks_ready,
                "tasks_running": s.tasks_running,
                "tenants": s.tenants.iter()
                    .map(|t| serde_json::json!({"tenant": t.tenant, "jobs_active": t.jobs_active}))
                    .collect::<Vec<_>>(),
            })
        ),
        Format::Text => {
            println!(
                "cluster {}  term {}  state {}  workers {}",
                s.cluster, s.term, s.state_backend, s.workers
            );
            println!(
                "jobs active {}  tasks ready {}  tasks running {}",
                s.jobs_active, s.tasks_ready, s.tasks_running
            );
            for t in &s.tenants {
                println!("  tenant {:<32} {:>6} active", t.tenant, t.jobs_active);
            }
        }
    }
    Ok(())
}
