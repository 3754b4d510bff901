//! `reelfarm bench load`: sustained submission against a farm of simulated workers.
//!
//! A real `reelfarm-coordinator` process (found next to this binary; in-memory state, or
//! etcd with `--etcd`) serves simulated workers that answer every task after `--task-ms`.
//! Jobs are submitted one SubmitJob each at a fixed `--rate` for `--seconds`; submissions
//! beyond the coordinator's bounded queue are refused with RESOURCE_EXHAUSTED and a retry
//! hint. Reported: offered, accepted, refused (with the hints seen), other errors, jobs
//! finished, and the coordinator's resident memory over time (peak included), which must
//! level off once retention (`--retain-finished-jobs`) starts forgetting finished jobs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reelfarm_proto::v1::{self, admin_service_client::AdminServiceClient};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::sched::{SimEngine, SimFleet, SimWorker};
use crate::local_etcd::free_port;

pub struct LoadArgs {
    pub rate: u32,
    pub seconds: u64,
    pub max_queued_jobs: usize,
    pub retain_finished_jobs: usize,
    pub workers: u32,
    pub slots: u32,
    pub task_ms: u64,
    pub etcd: Option<String>,
}

/// Submissions in flight at most (the client side of the load).
const IN_FLIGHT: usize = 512;
/// Memory sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    hint_min_ms: AtomicU64,
    hint_max_ms: AtomicU64,
}

/// The coordinator process; killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident and peak resident memory of a process, bytes (Linux /proc).
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((kb("VmRSS:")? * 1024, kb("VmHWM:")? * 1024))
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.seconds > 0,
        "--rate and --seconds must be positive"
    );
    let exe = std::env::current_exe()?.with_file_name("reelfarm-coordinator");
    anyhow::ensure!(
        exe.exists(),
        "{} not found: build it (cargo build --release) next to this binary",
        exe.display()
    );
    let artifacts = tempfile::tempdir()?;
    // The simulated outputs all name one empty file of the store: the coordinator checks
    // that a committed output exists there.
    let sim_output = artifacts.path().canonicalize()?.join("jobs/sim/output.bin");
    std::fs::create_dir_all(sim_output.parent().expect("a file under jobs/sim"))?;
    std::fs::write(&sim_output, b"")?;
    let sim_output = format!("file://{}", sim_output.display());
    let (grpc, http) = (free_port(), free_port());
    let address = format!("http://127.0.0.1:{grpc}");
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--artifacts", &artifacts.path().display().to_string()])
        .args(["--max-queued-jobs", &args.max_queued_jobs.to_string()])
        .args([
            "--retain-finished-jobs",
            &args.retain_finished_jobs.to_string(),
        ])
        .args([
            "--cluster",
            &format!(
                "load-{}",
                uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
            ),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(e) = &args.etcd {
        cmd.args(["--etcd", e]);
    }
    let child = Child(
        cmd.spawn()
            .with_context(|| format!("starting {}", exe.display()))?,
    );
    let pid = child.0.id();

    // Wait until it leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = async {
            let mut admin = AdminServiceClient::connect(address.clone()).await.ok()?;
            admin
                .get_cluster_status(v1::GetClusterStatusRequest {})
                .await
                .ok()
                .map(|r| r.into_inner())
        }
        .await;
        if status.is_some_and(|s| s.leader) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the coordinator did not lead within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_start = memory(pid).map(|m| m.0).unwrap_or(0);

    let shutdown = CancellationToken::new();
    let fleet = SimFleet::start(
        args.workers,
        &SimWorker {
            address: address.clone(),
            id: "load".into(),
            output_uri: sim_output.clone(),
            slots: args.slots,
            engine: SimEngine {
                task_time: Duration::from_millis(args.task_ms),
                jitter: 0.0,
            },
            work_waiting: Arc::new(|| true),
        },
    );

    // Memory over time.
    let memory_series = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let started = Instant::now();
    let sampler = {
        let (series, shutdown) = (memory_series.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                if let Some((rss, _)) = memory(pid) {
                    series
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((started.elapsed().as_secs_f64(), rss));
                }
                tokio::select! {
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    };

    // The load: one SubmitJob every 1/rate seconds.
    let channel = crate::client::connect(&crate::client::Target::local(&address)).await?;
    let counts = Arc::new(Counts {
        hint_min_ms: AtomicU64::new(u64::MAX),
        ..Default::default()
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let total = args.rate as u64 * args.seconds;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut offered = 0u64;
    let mut late = 0u64;
    while offered < total {
        ticker.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            // The client cannot keep the rate (too many outstanding): counted, not hidden.
            late += 1;
            offered += 1;
            continue;
        };
        offered += 1;
        let (mut client, counts) = (
            v1::job_service_client::JobServiceClient::new(channel.clone()),
            counts.clone(),
        );
        tokio::spawn(async move {
            let req = v1::SubmitJobRequest {
                spec: Some(v1::JobSpec {
                    prompt: "load".into(),
                    duration_seconds: 1.0,
                    ..Default::default()
                }),
                idempotency_key: String::new(),
            };
            match client.submit_job(req).await {
                Ok(_) => {
                    counts.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(ms) = s
                        .metadata()
                        .get("grpc-retry-pushback-ms")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    {
                        counts.hint_min_ms.fetch_min(ms, Ordering::Relaxed);
                        counts.hint_max_ms.fetch_max(ms, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    let load_seconds = started.elapsed().as_secs_f64();
    // Let the outstanding submissions answer, then the queue drain for a while.
    let _ = in_flight.acquire_many(IN_FLIGHT as u32).await;
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let mut status = v1::GetClusterStatusResponse::default();
    while Instant::now() < drain_deadline {
        let mut admin = AdminServiceClient::new(channel.clone());
        if let Ok(s) = admin
            .get_cluster_status(v1::GetClusterStatusRequest {})
            .await
        {
            status = s.into_inner();
            if status.jobs_active == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    let _ = sampler.await;
    fleet.stop().await;
    let (rss_end, rss_peak) = memory(pid).unwrap_or((0, 0));
    let metrics = scrape_metrics(http);
    drop(child);

    let series = memory_series
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mb = |b: u64| (b as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0;
    // One point every 5 s is enough to see whether memory levels off.
    let mut every_5s = Vec::new();
    let mut next = 0.0;
    for (t, rss) in &series {
        if *t >= next {
            every_5s
                .push(serde_json::json!({"t_s": (t * 10.0).round() / 10.0, "rss_mb": mb(*rss)}));
            next += 5.0;
        }
    }
    let hint_min = counts.hint_min_ms.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "bench": "load",
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "machine": super::machine(),
        "backend": if args.etcd.is_some() { "etcd" } else { "memory" },
        "rate_per_second": args.rate,
        "seconds": args.seconds,
        "load_seconds": load_seconds,
        "max_queued_jobs": args.max_queued_jobs,
        "retain_finished_jobs": args.retain_finished_jobs,
        "simulated_workers": args.workers,
        "slots_per_worker": args.slots,
        "task_ms": args.task_ms,
        "offered": offered,
        "not_sent_client_saturated": late,
        "accepted": counts.accepted.load(Ordering::Relaxed),
        "refused_resource_exhausted": counts.refused.load(Ordering::Relaxed),
        "other_errors": counts.errors.load(Ordering::Relaxed),
        "retry_hint_ms": {"min": if hint_min == u64::MAX { 0 } else { hint_min },
                          "max": counts.hint_max_ms.load(Ordering::Relaxed)},
        "jobs_active_at_end": status.jobs_active,
        "coordinator_metrics": metrics,
        "coordinator_rss_mb": {"start": mb(rss_start), "peak": mb(rss_peak), "end": mb(rss_end),
                               "every_5s": every_5s},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// A few counters from the coordinator's /metrics (finished and forgotten jobs).
fn scrape_metrics(port: u16) -> serde_json::Value {
    use std::io::{Read, Write};
    let text = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })()
    .unwrap_or_default();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    serde_json::json!({
        "reelfarm_jobs_finished_total": sum("reelfarm_jobs_finished_total"),
        "reelfarm_jobs_forgotten_total": sum("reelfarm_jobs_forgotten_total"),
        "reelfarm_jobs_submitted_total": sum("reelfarm_jobs_submitted_total"),
    })
}
