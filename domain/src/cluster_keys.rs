//! The etcd key layout of one cluster: every key the coordinator replicas and the workers
//! read or write, in one place (values are JSON, readable with
//! `etcdctl get --prefix /reelfarm/`):
//!
//! ```text
//! /reelfarm/<cluster>/term                          current coordinator term (decimal)
//! /reelfarm/<cluster>/election                      the replicas' election; value: the leader's gRPC address
//! /reelfarm/<cluster>/jobs/<job_id>                 JobRecord
//! /reelfarm/<cluster>/results/<job_id>/<index>      TaskCompletion (one per task, never rewritten)
//! /reelfarm/<cluster>/idempotency/<tenant>/<key>    job id
//! /reelfarm/<cluster>/workers/<worker_id>           worker registration, under the worker's lease
//! /reelfarm/<cluster>/cordons/<worker_id>           drained by an operator
//! ```
//!
//! Prefixes end in `/`, so a prefix read of one cluster or job never matches a neighbour
//! whose name starts the same way.

/// The keys of one cluster (see the module docs). Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterKeys {
    root: String,
}

impl ClusterKeys {
    /// The layout of cluster `cluster` (the `--cluster` flag of every binary).
    pub fn new(cluster: &str) -> Self {
        Self {
            root: format!("/reelfarm/{cluster}/"),
        }
    }
    /// The coordinator's leadership term; every durable write compares it (fencing).
    pub fn term(&self) -> String {
        format!("{}term", self.root)
    }
    /// etcd election name of the coordinator replicas; its leader value is the leader's
    /// advertised gRPC address, which workers also read to find the leader.
    pub fn election(&self) -> String {
        format!("{}election", self.root)
    }
    pub fn jobs_prefix(&self) -> String {
        format!("{}jobs/", self.root)
    }
    pub fn job(&self, id: &str) -> String {
        format!("{}{id}", self.jobs_prefix())
    }
    pub fn results_prefix(&self) -> String {
        format!("{}results/", self.root)
    }
    /// Every committed result of one job.
    pub fn job_results_prefix(&self, job_id: &str) -> String {
        format!("{}{job_id}/", self.results_prefix())
    }
    /// One task's committed result; the index is zero-padded so results list in plan order.
    pub fn result(&self, job_id: &str, task_index: u32) -> String {
        format!("{}{task_index:04}", self.job_results_prefix(job_id))
    }
    pub fn checkpoints_prefix(&self) -> String {
        format!("{}checkpoints/", self.root)
    }
    /// Every task checkpoint of one job.
    pub fn job_checkpoints_prefix(&self, job_id: &str) -> String {
        format!("{}{job_id}/", self.checkpoints_prefix())
    }
    /// One task's latest denoising checkpoint (overwritten by the next).
    pub fn checkpoint(&self, job_id: &str, task_index: u32) -> String {
        format!("{}{task_index:04}", self.job_checkpoints_prefix(job_id))
    }
    pub fn idempotency(&self, tenant: &str, key: &str) -> String {
        format!("{}idempotency/{tenant}/{key}", self.root)
    }
    pub fn cordons_prefix(&self) -> String {
        format!("{}cordons/", self.root)
    }
    pub fn cordon(&self, worker_id: &str) -> String {
        format!("{}{worker_id}", self.cordons_prefix())
    }
    /// API keys (their hashes), one key per id.
    pub fn api_keys_prefix(&self) -> String {
        format!("{}apikeys/", self.root)
    }
    pub fn api_key(&self, id: &str) -> String {
        format!("{}{id}", self.api_keys_prefix())
    }
    /// Prefix under which workers register with their leases (the coordinator watches it).
    pub fn workers_prefix(&self) -> String {
        format!("{}workers/", self.root)
    }
    /// A worker's registration key (under its lease).
    pub fn worker(&self, id: &str) -> String {
        format!("{}{id}", self.workers_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_documented_layout() {
        // Clusters in production hold keys in this layout: changing it loses their state.
        let k = ClusterKeys::new("prod");
        assert_eq!(k.term(), "/reelfarm/prod/term");
        assert_eq!(k.election(), "/reelfarm/prod/election");
        assert_eq!(
            k.job("0123456789abcdef"),
            "/reelfarm/prod/jobs/0123456789abcdef"
        );
        assert_eq!(k.result("j1", 7), "/reelfarm/prod/results/j1/0007");
        assert_eq!(k.job_results_prefix("j1"), "/reelfarm/prod/results/j1/");
        assert_eq!(
            k.idempotency("ads", "k"),
            "/reelfarm/prod/idempotency/ads/k"
        );
        assert_eq!(k.cordon("w1"), "/reelfarm/prod/cordons/w1");
        assert_eq!(k.worker("w1"), "/reelfarm/prod/workers/w1");
    }
}
