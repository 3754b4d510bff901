//! The `reelfarm.v1` API: messages and gRPC services generated from `proto/reelfarm/v1`.
//!
//! - `job.proto`: [`v1::JobService`](v1::job_service_server::JobService) — submit, list, watch, cancel.
//! - `worker.proto`: [`v1::WorkerService`](v1::worker_service_server::WorkerService) — the
//!   worker's bidirectional stream (register, assignments, progress, results).
//! - `admin.proto`: [`v1::AdminService`](v1::admin_service_server::AdminService) — workers and
//!   cluster status for operators.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds server reflection so `grpcurl` needs no .proto files.

/// Generated code for package `reelfarm.v1`.
pub mod v1 {
    tonic::include_proto!("reelfarm.v1");
}

/// Encoded `FileDescriptorSet` of every reelfarm.v1 file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("reelfarm_descriptor");

/// Names every process of a cluster must agree on: etcd keys shared by the coordinator and
/// the workers, and the response header that points clients at the leader.
pub mod cluster {
    /// Response header on a follower's UNAVAILABLE: the leader's gRPC address.
    pub const LEADER_METADATA: &str = "reelfarm-leader";

    /// etcd election name of the coordinator replicas; its leader value is the leader's
    /// advertised gRPC address.
    pub fn election(cluster: &str) -> String {
        format!("/reelfarm/{cluster}/election")
    }

    /// Prefix of the workers' registrations.
    pub fn workers_prefix(cluster: &str) -> String {
        format!("/reelfarm/{cluster}/workers/")
    }

    /// A worker's registration key (under its lease).
    pub fn worker(cluster: &str, id: &str) -> String {
        format!("{}{id}", workers_prefix(cluster))
    }
}
