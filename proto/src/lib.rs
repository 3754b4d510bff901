//! The `reelfarm.v1` API: messages and gRPC services generated from `proto/reelfarm/v1`.
//!
//! - `job.proto`: [`v1::JobService`](v1::job_service_server::JobService) — submit, list, watch, cancel.
//! - `worker.proto`: [`v1::WorkerService`](v1::worker_service_server::WorkerService) — the
//!   worker's bidirectional stream (register, assignments, progress, results).
//! - `admin.proto`: [`v1::AdminService`](v1::admin_service_server::AdminService) — workers and
//!   cluster status for operators.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds server reflection so `grpcurl` needs no .proto files;
//! [`auth`] is how credentials travel (the workers' join token).

pub mod auth;
pub mod tls;

/// Generated code for package `reelfarm.v1`.
pub mod v1 {
    tonic::include_proto!("reelfarm.v1");
}

/// Encoded `FileDescriptorSet` of every reelfarm.v1 file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("reelfarm_descriptor");

/// Sizes both ends of a stream must agree on.
pub mod limits {
    /// Largest file VerifyContent checks, inline or read from the artifact store.
    pub const VERIFY_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Largest gRPC message: a VerifyContent upload, or the same file handed to a worker,
    /// plus framing. A SubmitBatch of 1,000 jobs with long prompts is far below it.
    pub const MAX_MESSAGE_BYTES: usize = VERIFY_MAX_BYTES + 1024 * 1024;
}

/// Names of the protocol every process of a cluster must agree on. (The etcd key layout is
/// `reelfarm_domain::ClusterKeys`.)
pub mod cluster {
    /// Response header on a follower's UNAVAILABLE: the leader's gRPC address.
    pub const LEADER_METADATA: &str = "reelfarm-leader";
}
