//! `reelfarm.v1.AdminService`: operator actions (list, drain and uncordon workers, cluster
//! status, API keys). Every RPC but GetClusterStatus needs an admin key.

use std::sync::Arc;

use reelfarm_proto::v1;
use tonic::{Request, Response, Status};

use super::auth::{Gate, KeyRing, RateClass};
use super::{convert, validate};
use crate::model::{ApiKeyRecord, KeyRole};
use crate::role::{Role, RoleHandle};
use crate::scheduler::CordonError;

/// Longest description of an API key.
pub const KEY_DESCRIPTION_MAX_CHARS: usize = 200;

/// See the module docs.
pub struct AdminApi {
    role: RoleHandle,
    cluster: String,
    backend: &'static str,
    gate: Arc<Gate>,
    keys: Arc<KeyRing>,
}

impl AdminApi {
    pub fn new(
        role: RoleHandle,
        cluster: String,
        backend: &'static str,
        gate: Arc<Gate>,
        keys: Arc<KeyRing>,
    ) -> Self {
        Self {
            role,
            cluster,
            backend,
            gate,
            keys,
        }
    }

    fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.gate
            .admit(request, KeyRole::Admin, RateClass::Read)
            .map(drop)
    }
}

fn api_key(k: &ApiKeyRecord) -> v1::ApiKey {
    v1::ApiKey {
        id: k.id.clone(),
        tenant: k.tenant.clone(),
        role: match k.role {
            KeyRole::Read => v1::ApiKeyRole::Read,
            KeyRole::Submit => v1::ApiKeyRole::Submit,
            KeyRole::Admin => v1::ApiKeyRole::Admin,
        } as i32,
        description: k.description.clone(),
        created_unix_ms: k.created_ms as i64,
        revoked_unix_ms: k.revoked_ms.unwrap_or(0) as i64,
    }
}

#[tonic::async_trait]
impl v1::admin_service_server::AdminService for AdminApi {
    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        self.admin(&request)?;
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
        self.admin(&request)?;
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
        self.admin(&request)?;
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
        request: Request<v1::GetClusterStatusRequest>,
    ) -> Result<Response<v1::GetClusterStatusResponse>, Status> {
        // Any key: it is how clients find the leader (answered by followers too). A
        // confined key sees its own tenant's count only.
        let caller = self.gate.admit(&request, KeyRole::Read, RateClass::Read)?;
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
                        .filter(|(tenant, _)| caller.sees(tenant))
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

    async fn create_api_key(
        &self,
        request: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        self.admin(&request)?;
        let req = request.into_inner();
        let role = match v1::ApiKeyRole::try_from(req.role) {
            Ok(v1::ApiKeyRole::Read) => KeyRole::Read,
            Ok(v1::ApiKeyRole::Submit) => KeyRole::Submit,
            Ok(v1::ApiKeyRole::Admin) => KeyRole::Admin,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "role must be API_KEY_ROLE_READ, API_KEY_ROLE_SUBMIT or API_KEY_ROLE_ADMIN, \
                     got {}",
                    req.role
                )))
            }
        };
        let tenant = match (req.tenant.is_empty(), role) {
            (true, KeyRole::Admin) => String::new(),
            (true, _) => {
                return Err(Status::invalid_argument(
                    "tenant is required for read and submit keys",
                ))
            }
            (false, _) => validate::tenant("tenant", &req.tenant)?,
        };
        let chars = req.description.chars().count();
        if chars > KEY_DESCRIPTION_MAX_CHARS || req.description.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "description must be at most {KEY_DESCRIPTION_MAX_CHARS} characters without \
                 control characters, got {chars}"
            )));
        }
        let (record, key) = self
            .keys
            .create(tenant, role, req.description)
            .await
            .map_err(super::status::store)?;
        tracing::info!(key_id = %record.id, tenant = %record.tenant, role = record.role.name(),
            "API key created");
        Ok(Response::new(v1::CreateApiKeyResponse {
            key: Some(api_key(&record)),
            secret: key.expose(),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        self.admin(&request)?;
        let tenant = request.into_inner().tenant;
        if !tenant.is_empty() {
            validate::tenant("tenant", &tenant)?;
        }
        let mut keys = self.keys.list().await.map_err(super::status::store)?;
        keys.retain(|k| tenant.is_empty() || k.tenant == tenant);
        keys.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        Ok(Response::new(v1::ListApiKeysResponse {
            keys: keys.iter().map(api_key).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::RevokeApiKeyResponse>, Status> {
        self.admin(&request)?;
        let given = request.into_inner().id;
        // The whole key names its id; an id alone is its public part.
        let id = match reelfarm_proto::auth::ApiKeyToken::parse(&given) {
            Ok(key) => key.id().to_string(),
            Err(_) => given.trim().to_string(),
        };
        if !reelfarm_proto::auth::is_api_key_id(&id) {
            return Err(Status::invalid_argument(
                "id must be an API key's id (8..=32 of [a-z0-9]) or the whole key",
            ));
        }
        let record = self
            .keys
            .revoke(&id)
            .await
            .map_err(super::status::store)?
            .ok_or_else(|| Status::not_found(format!("API key {id} not found")))?;
        tracing::info!(key_id = %record.id, "API key revoked");
        Ok(Response::new(v1::RevokeApiKeyResponse {
            key: Some(api_key(&record)),
        }))
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
