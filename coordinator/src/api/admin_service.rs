//! `reelfarm.v1.AdminService`: operator actions (list, drain and uncordon workers, cluster
//! status).

use reelfarm_proto::v1;
use tonic::{Request, Response, Status};

use super::convert;
use crate::role::{Role, RoleHandle};
use crate::scheduler::CordonError;

/// See the module docs.
pub struct AdminApi {
    role: RoleHandle,
    cluster: String,
    backend: &'static str,
}

impl AdminApi {
    pub fn new(role: RoleHandle, cluster: String, backend: &'static str) -> Self {
        Self {
            role,
            cluster,
            backend,
        }
    }
}

#[tonic::async_trait]
impl v1::admin_service_server::AdminService for AdminApi {
    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let scheduler = self.role.scheduler()?;
        let workers = scheduler.workers().iter().map(convert::worker).collect();
        Ok(Response::new(v1::ListWorkersResponse {
            workers,
            cordoned_not_connected: scheduler.cordoned_not_connected(),
        }))
    }

    async fn drain_worker(
        &self,
        request: Request<v1::DrainWorkerRequest>,
    ) -> Result<Response<v1::DrainWorkerResponse>, Status> {
        let id = worker_id(&request.get_ref().id)?;
        let view = self
            .role
            .scheduler()?
            .cordon_worker(id, true)
            .await
            .map_err(cordon_status)?
            .ok_or_else(|| Status::not_found(format!("worker {id} is not connected")))?;
        tracing::info!(worker_id = %id, "worker drained by an operator");
        Ok(Response::new(v1::DrainWorkerResponse {
            worker: Some(convert::worker(&view)),
        }))
    }

    async fn uncordon_worker(
        &self,
        request: Request<v1::UncordonWorkerRequest>,
    ) -> Result<Response<v1::UncordonWorkerResponse>, Status> {
        let id = worker_id(&request.get_ref().id)?;
        let view = self
            .role
            .scheduler()?
            .cordon_worker(id, false)
            .await
            .map_err(cordon_status)?;
        tracing::info!(worker_id = %id, "worker uncordoned: takes tasks again");
        Ok(Response::new(v1::UncordonWorkerResponse {
            worker: view.as_ref().map(convert::worker),
        }))
    }

    async fn get_cluster_status(
        &self,
        _request: Request<v1::GetClusterStatusRequest>,
    ) -> Result<Response<v1::GetClusterStatusResponse>, Status> {
        // Answered by followers too: it is how clients find the leader.
        let status = match self.role.current() {
            Role::Leader(s) => {
                let counts = s.counts();
                v1::GetClusterStatusResponse {
                    cluster: self.cluster.clone(),
                    term: s.term(),
                    leader: !s.fenced().is_cancelled(),
                    state_backend: self.backend.to_string(),
                    workers: counts.workers as u32,
                    jobs_active: counts.jobs_active as u32,
                    tasks_ready: counts.tasks_ready as u32,
                    tasks_running: counts.tasks_running as u32,
                    leader_address: String::new(),
                    tenants: s
                        .active_by_tenant()
                        .into_iter()
                        .map(|(tenant, n)| v1::TenantJobs {
                            tenant,
                            jobs_active: n as u32,
                        })
                        .collect(),
                }
            }
            Role::Follower { leader } => v1::GetClusterStatusResponse {
                cluster: self.cluster.clone(),
                leader: false,
                state_backend: self.backend.to_string(),
                leader_address: leader.unwrap_or_default(),
                ..Default::default()
            },
        };
        Ok(Response::new(status))
    }
}

fn worker_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("id must name a worker"));
    }
    Ok(id)
}

fn cordon_status(e: CordonError) -> Status {
    match e {
        CordonError::NotConnected(_) | CordonError::Unknown(_) => Status::not_found(e.to_string()),
        CordonError::Store(e) => super::status::store(e),
    }
}
