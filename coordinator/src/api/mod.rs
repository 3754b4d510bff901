//! The gRPC API, one file per service, with validation and conversion at the edge.
//!
//! - [`job_service`]: `reelfarm.v1.JobService` (clients).
//! - [`worker_service`]: `reelfarm.v1.WorkerService` (the workers' streams).
//! - [`admin_service`]: `reelfarm.v1.AdminService` (operators).
//! - [`validate`]: protobuf requests → domain types, with every bound named.
//! - [`convert`]: domain types → protobuf.
//! - [`status`]: the one mapping from errors to gRPC statuses.
//! - [`auth`]: who may call what: API keys and roles for clients, the join token for
//!   workers, per-key rate limits.
//!
//! [`router`] adds server reflection (v1 and v1alpha, so grpcurl 1.8 works) and
//! `grpc.health.v1.Health`.

pub(crate) mod admin_service;
pub mod auth;
pub mod convert;
pub(crate) mod job_service;
pub(crate) mod status;
pub mod validate;
pub(crate) mod worker_service;

use std::sync::Arc;

use reelfarm_proto::v1::admin_service_server::AdminServiceServer;
use reelfarm_proto::v1::job_service_server::JobServiceServer;
use reelfarm_proto::v1::worker_service_server::WorkerServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic::transport::Server;

use crate::metrics::Metrics;
use crate::role::{Role, RoleHandle};

use reelfarm_proto::limits::MAX_MESSAGE_BYTES;

/// What the services share besides the replica's role.
pub struct ApiContext {
    pub metrics: Arc<Metrics>,
    pub cluster: String,
    /// The state backend's name, for GetClusterStatus.
    pub backend: &'static str,
    pub store: Arc<reelfarm_artifacts::ArtifactStore>,
    /// `--join-token-file`'s token: WorkerService admits only streams that present it.
    pub join_token: Option<reelfarm_proto::auth::JoinToken>,
    /// `--client-ca` is set: WorkerService admits a verified client certificate.
    pub mtls: bool,
    /// The API keys JobService and AdminService authenticate against.
    pub keys: Arc<auth::KeyRing>,
    /// `--key-submit-rate` and `--key-read-rate`, per key per second (0: unlimited).
    pub key_rates: (f64, f64),
    pub shutdown: CancellationToken,
}

/// Builds the gRPC router with every service, reflection and health.
///
/// Health: the overall service ("") is SERVING while the process runs (liveness); the
/// reelfarm services are SERVING only while this replica leads (readiness), so a load
/// balancer or Kubernetes Service sends traffic to the leader.
pub async fn router(
    role: RoleHandle,
    mut role_changes: tokio::sync::watch::Receiver<Role>,
    context: ApiContext,
) -> Router {
    let ApiContext {
        metrics,
        cluster,
        backend,
        store,
        join_token,
        mtls,
        keys,
        key_rates,
        shutdown,
    } = context;
    let gate = Arc::new(auth::Gate::new(
        key_rates.0,
        key_rates.1,
        metrics.api_requests_refused.clone(),
    ));
    let key_check = auth::ApiKeyCheck::new(keys.clone(), metrics.api_requests_refused.clone());
    let cluster = cluster.as_str();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(reelfarm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(reelfarm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor set is valid");
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        loop {
            let leading = matches!(
                &*role_changes.borrow_and_update(),
                Role::Leader(s) if !s.fenced().is_cancelled()
            );
            for name in [
                "reelfarm.v1.JobService",
                "reelfarm.v1.WorkerService",
                "reelfarm.v1.AdminService",
            ] {
                let status = if leading {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                health.set_service_status(name, status).await;
            }
            if role_changes.changed().await.is_err() {
                break;
            }
        }
    });

    let jobs = InterceptedService::new(
        JobServiceServer::new(job_service::JobApi::new(
            role.clone(),
            metrics.clone(),
            store.clone(),
            gate.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
        key_check.clone(),
    );
    let unauthenticated = metrics.worker_sessions_unauthenticated.clone();
    let workers = InterceptedService::new(
        WorkerServiceServer::new(worker_service::WorkerApi::new(
            role.clone(),
            cluster.to_string(),
            store,
            shutdown,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
        auth::JoinTokenCheck::new(join_token, mtls, unauthenticated),
    );
    let admin = InterceptedService::new(
        AdminServiceServer::new(admin_service::AdminApi::new(
            role,
            cluster.to_string(),
            backend,
            gate,
            keys,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
        key_check,
    );
    Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(jobs)
        .add_service(workers)
        .add_service(admin)
}
