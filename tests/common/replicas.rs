//! A replicated farm for the failover suites: one etcd, several coordinator replicas and
//! workers that know every replica, all separate processes on free loopback ports.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reelfarm_proto::v1::{
    self, admin_service_client::AdminServiceClient, job_service_client::JobServiceClient,
};
use tonic::transport::{Channel, Endpoint};

use super::*;

/// How to start a [`Farm`].
#[derive(Clone, Debug)]
pub struct FarmOptions {
    pub coordinators: usize,
    pub workers: usize,
    /// Extra flags for every coordinator.
    pub coordinator_args: Vec<String>,
    /// Extra flags for every worker.
    pub worker_args: Vec<String>,
    pub lease_ttl: u32,
}

impl FarmOptions {
    /// The chaos suite's farm: three replicas, four workers, jobs of 6-frame segments.
    pub fn chaos() -> Self {
        Self {
            coordinators: 3,
            workers: 4,
            coordinator_args: [
                "--max-queued-jobs",
                "100000",
                "--max-attempts",
                "20",
                "--stuck-min-seconds",
                "30",
                "--failover-grace-seconds",
                "3",
                "--segment-frames",
                "6",
                // The collector runs during the faults: it must never touch a committed file.
                "--artifact-gc-grace-seconds",
                "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            worker_args: vec![],
            lease_ttl: LEASE_TTL_SECONDS,
        }
    }
}

pub struct Replica {
    pub process: Process,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

pub struct Farm {
    pub name: String,
    pub etcd: LocalEtcd,
    pub coordinators: Vec<Replica>,
    pub workers: Vec<Worker>,
    pub artifacts: PathBuf,
    pub dir: tempfile::TempDir,
    pub options: FarmOptions,
    // Last, so it is released after every process above is killed.
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Farm {
    /// Starts etcd, the replicas and the workers; farms (and clusters) run one at a time
    /// per test binary.
    pub fn start(dir: tempfile::TempDir, options: FarmOptions) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let name = format!("chaos-{}", std::process::id());
        let artifacts = dir.path().join("artifacts");
        let etcd = LocalEtcd::start().expect("starting etcd (run scripts/test.sh to install it)");
        let mut coordinators = Vec::new();
        for i in 0..options.coordinators {
            let (grpc_port, http_port) = (free_port(), free_port());
            let args: Vec<String> = [
                "--listen",
                &format!("127.0.0.1:{grpc_port}"),
                "--http-listen",
                &format!("127.0.0.1:{http_port}"),
                "--etcd",
                &etcd.endpoint,
                "--cluster",
                &name,
                "--artifacts",
                &artifacts.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(options.coordinator_args.iter().cloned())
            .collect();
            let mut process = Process::new(
                &format!("coordinator-{i}"),
                COORDINATOR_BIN,
                args,
                dir.path().join(format!("coordinator-{i}.log")),
            );
            process.spawn();
            coordinators.push(Replica {
                process,
                grpc_port,
                http_port,
            });
        }
        let mut farm = Self {
            name,
            etcd,
            coordinators,
            workers: vec![],
            artifacts,
            dir,
            options: options.clone(),
            _serial: serial,
        };
        for i in 0..options.workers {
            farm.add_worker(&format!("worker-{i}"));
        }
        farm
    }

    pub fn add_worker(&mut self, id: &str) {
        let http_port = free_port();
        let coordinators: Vec<String> = self.coordinators.iter().map(Replica::url).collect();
        let args: Vec<String> = [
            "--coordinator",
            &coordinators.join(","),
            "--etcd",
            &self.etcd.endpoint,
            "--cluster",
            &self.name,
            "--id",
            id,
            "--engine",
            "cpu",
            "--slots",
            "1",
            "--artifacts",
            &self.artifacts.display().to_string(),
            "--http-listen",
            &format!("127.0.0.1:{http_port}"),
            "--lease-ttl",
            &self.options.lease_ttl.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(self.options.worker_args.iter().cloned())
        .collect();
        let mut process = Process::new(
            id,
            WORKER_BIN,
            args,
            self.dir.path().join(format!("{id}.log")),
        );
        process.spawn();
        self.workers.push(Worker {
            id: id.to_string(),
            process,
            http_port,
        });
    }

    /// The index of the replica that answers as leader, if one does now.
    pub async fn leader(&self) -> Option<usize> {
        for (i, c) in self.coordinators.iter().enumerate() {
            if let Ok(s) = status(&c.url()).await {
                if s.leader {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Every replica that answers as leader now (more than one would be split brain).
    pub async fn leaders(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, c) in self.coordinators.iter().enumerate() {
            if status(&c.url()).await.is_ok_and(|s| s.leader) {
                out.push(i);
            }
        }
        out
    }

    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(i) = self.leader().await {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no coordinator leads after {timeout:?}:{}", self.logs());
    }

    pub async fn jobs(&self) -> JobServiceClient<Channel> {
        let i = self.wait_leader(Duration::from_secs(60)).await;
        JobServiceClient::new(channel(&self.coordinators[i].url()))
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for c in &self.coordinators {
            out.push_str(&format!(
                "\n===== {} =====\n{}",
                c.process.name,
                tail(&c.process.log())
            ));
        }
        for w in &self.workers {
            out.push_str(&format!(
                "\n===== {} =====\n{}",
                w.id,
                tail(&w.process.log())
            ));
        }
        out
    }
}

pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

pub fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .expect("a valid loopback url")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

pub async fn status(url: &str) -> Result<v1::GetClusterStatusResponse, tonic::Status> {
    AdminServiceClient::new(channel(url))
        .get_cluster_status(v1::GetClusterStatusRequest {})
        .await
        .map(|r| r.into_inner())
}
