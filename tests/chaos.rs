//! The chaos suite: one etcd, three coordinator replicas, four workers and 300 small jobs,
//! with the failures operators see every week injected while the jobs run:
//!
//! - kill -9 of a random worker, restarted a moment later;
//! - SIGSTOP of a worker for longer than its lease, then SIGCONT (its late results must be
//!   rejected: its tasks were given to others);
//! - kill -9 of the leading coordinator (another replica takes over; the failover time is
//!   measured from the kill to a replica answering as leader), restarted as a follower;
//! - a restart of etcd itself.
//!
//! At the end every job must have SUCCEEDED with exactly one committed artifact set whose
//! files match their sha256, every committed result must be the one attempt the leader
//! accepted (one record per task, output names tagged with that attempt) and its files must
//! be intact although the artifact collector ran throughout (2 s grace), and the leader's
//! gauges must agree with the job records. The suite prints what it injected and measured.
//!
//! Default size runs in CI. `cargo test --release --test chaos -- --long` is the long
//! mode: 3,000 jobs and faults until they are all done. The suite has its own `main`
//! (libtest-mimic) so it can take `--long` besides libtest's usual arguments.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::replicas::*;
use common::*;
use reelfarm_proto::v1;
use sha2::{Digest, Sha256};

/// Election lease TTL of the coordinators (`ELECTION_TTL_SECONDS` in
/// coordinator/src/election/etcd.rs), seconds.
const ELECTION_TTL: Duration = Duration::from_secs(5);
/// Submissions per SubmitBatch.
const BATCH: usize = 50;
/// How long the whole run may take before the suite fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// A small job of 7 tasks (plan, 4 segments of 6 frames, audio, assembly).
fn small_spec(i: usize) -> v1::JobSpec {
    v1::JobSpec {
        prompt: "a red rubber ball bouncing on a wooden floor".into(),
        duration_seconds: 2.0,
        fps: 12,
        width: 64,
        height: 64,
        seed: Some(i as u64),
        steps: 1,
        audio: Some(true),
        labels: [("suite".to_string(), "chaos".to_string())].into(),
        ..Default::default()
    }
}

/// Submits every job with an idempotency key, retrying through failovers: a retried batch
/// whose first try was stored returns the same jobs, never duplicates.
async fn submit_all(farm: &Farm, jobs: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(jobs);
    let mut next = 0;
    while next < jobs {
        let n = BATCH.min(jobs - next);
        let req = v1::SubmitBatchRequest {
            jobs: (next..next + n)
                .map(|i| v1::SubmitJobRequest {
                    spec: Some(small_spec(i)),
                    idempotency_key: format!("chaos-{i}"),
                })
                .collect(),
        };
        match farm.jobs().await.submit_batch(req).await {
            Ok(r) => {
                ids.extend(r.into_inner().jobs.into_iter().map(|j| j.id));
                next += n;
            }
            Err(s) => {
                eprintln!("chaos: SubmitBatch failed ({s}); retrying the same keys");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    ids
}

#[derive(Default, Debug)]
struct Faults {
    workers_killed: u32,
    workers_paused: u32,
    leaders_killed: u32,
    etcd_restarts: u32,
    /// Replicas that exited by themselves (a deposed leader) and were started again, as a
    /// supervisor (Kubernetes) would.
    supervisor_restarts: u32,
    failover_seconds: Vec<f64>,
}

/// Polls every job until all are terminal; returns the final snapshots.
async fn all_terminal(farm: &Farm, ids: &[String]) -> Option<Vec<v1::Job>> {
    let mut client = farm.jobs().await;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let job = client
            .get_job(v1::GetJobRequest { id: id.clone() })
            .await
            .ok()?
            .into_inner()
            .job?;
        if !is_terminal(&job) {
            return None;
        }
        out.push(job);
    }
    Some(out)
}

async fn kill_leader(farm: &mut Farm, faults: &mut Faults) {
    let leader = farm.wait_leader(Duration::from_secs(60)).await;
    let claims = farm.leaders().await;
    assert!(
        claims.len() <= 1,
        "replicas {claims:?} all claim to lead:{}",
        farm.logs()
    );
    farm.coordinators[leader].process.kill9();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(60);
    let new_leader = loop {
        if let Some(i) = farm.leader().await {
            if i != leader {
                break i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader within 60 s:{}",
            farm.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = killed.elapsed().as_secs_f64();
    eprintln!("chaos: killed leader coordinator-{leader}; coordinator-{new_leader} leads after {took:.2} s");
    faults.leaders_killed += 1;
    faults.failover_seconds.push(took);
    // The killed replica comes back as a follower.
    farm.coordinators[leader].process.spawn();
}

async fn run(jobs: usize, long: bool) {
    let dir = tempfile::Builder::new()
        .prefix("reelfarm-chaos-")
        .tempdir()
        .expect("temp dir");
    let mut farm = Farm::start(dir, FarmOptions::chaos());
    farm.wait_leader(Duration::from_secs(30)).await;
    let started = Instant::now();
    let ids = submit_all(&farm, jobs).await;
    assert_eq!(ids.len(), jobs);
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        jobs,
        "idempotent submission created no duplicates"
    );
    eprintln!(
        "chaos: {jobs} jobs submitted in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Faults, in an order that injects each kind at least once, repeated until done.
    let mut faults = Faults::default();
    let mut rng_state = 0x9e37_79b9_u64 ^ u64::from(std::process::id());
    let mut random = move |n: usize| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        (rng_state % n as u64) as usize
    };
    let script = [
        "kill_worker",
        "pause_worker",
        "kill_leader",
        "restart_etcd",
        "kill_worker",
        "kill_leader",
    ];
    let mut step = 0;
    let snapshots = loop {
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "jobs not all terminal after {RUN_TIMEOUT:?}:{}",
            farm.logs()
        );
        for c in &mut farm.coordinators {
            if c.process.exited() {
                eprintln!(
                    "chaos: {} exited by itself; the supervisor starts it again",
                    c.process.name
                );
                faults.supervisor_restarts += 1;
                c.process.spawn();
            }
        }
        // The script runs once in full; the long mode repeats it until the jobs are done.
        let inject = step < script.len() || (long && all_terminal(&farm, &ids).await.is_none());
        if !inject {
            if let Some(s) = all_terminal(&farm, &ids).await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let fault = script[step % script.len()];
        step += 1;
        match fault {
            "kill_worker" => {
                let w = random(farm.workers.len());
                farm.workers[w].process.kill9();
                eprintln!("chaos: kill -9 {}", farm.workers[w].id);
                faults.workers_killed += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                farm.workers[w].process.spawn();
            }
            "pause_worker" => {
                let w = random(farm.workers.len());
                farm.workers[w].process.signal("STOP");
                eprintln!("chaos: SIGSTOP {} past its lease", farm.workers[w].id);
                faults.workers_paused += 1;
                tokio::time::sleep(Duration::from_secs(u64::from(LEASE_TTL_SECONDS) * 2 + 2)).await;
                farm.workers[w].process.signal("CONT");
                eprintln!("chaos: SIGCONT {}", farm.workers[w].id);
            }
            "kill_leader" => kill_leader(&mut farm, &mut faults).await,
            "restart_etcd" => {
                farm.etcd.kill();
                eprintln!("chaos: etcd killed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                farm.etcd
                    .restart()
                    .expect("restarting etcd on the same ports and data");
                eprintln!("chaos: etcd restarted");
                faults.etcd_restarts += 1;
            }
            _ => unreachable!(),
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();

    // Every job SUCCEEDED, with its outputs intact.
    let mut problems = Vec::new();
    for job in &snapshots {
        if state(job) != v1::JobState::Succeeded {
            problems.push(format!(
                "job {} ended {:?}: {}",
                job.id,
                state(job),
                job.error
            ));
            continue;
        }
        if job.outputs.is_empty() {
            problems.push(format!("job {} SUCCEEDED without outputs", job.id));
        }
        for o in &job.outputs {
            match std::fs::read(output_path(&o.uri)) {
                Ok(bytes) => {
                    let sha = hex::encode(Sha256::digest(&bytes));
                    if sha != o.sha256 {
                        problems.push(format!(
                            "job {}: {} has sha256 {sha}, recorded {}",
                            job.id, o.uri, o.sha256
                        ));
                    }
                }
                Err(e) => problems.push(format!("job {}: {} unreadable: {e}", job.id, o.uri)),
            }
        }
    }

    // Exactly one committed result per task, each the attempt its output names carry.
    let leader = farm.wait_leader(Duration::from_secs(60)).await;
    let etcd = etcd_client::Client::connect([farm.etcd.endpoint.as_str()], None)
        .await
        .expect("etcd");
    let prefix = format!("/reelfarm/{}/results/", farm.name);
    // Paged: the long mode's results exceed one gRPC message.
    let (results, _) =
        reelfarm_coordinator::state::etcd::get_prefix_paged(&mut etcd.kv_client(), &prefix, None)
            .await
            .expect("reading results");
    let mut per_job: BTreeMap<String, usize> = BTreeMap::new();
    let mut committed_files = 0usize;
    for kv in &results {
        let c: serde_json::Value = serde_json::from_slice(kv.value()).expect("completion JSON");
        let job = c["job_id"].as_str().unwrap_or_default().to_string();
        *per_job.entry(job.clone()).or_default() += 1;
        let tag = format!("t{}a{}", c["term"], c["attempt"]);
        for o in c["outputs"].as_array().into_iter().flatten() {
            let uri = o["uri"].as_str().unwrap_or_default();
            committed_files += 1;
            match std::fs::read(output_path(uri)) {
                Ok(bytes)
                    if Some(hex::encode(Sha256::digest(&bytes)).as_str())
                        == o["sha256"].as_str() => {}
                Ok(_) => problems.push(format!("job {job}: committed output {uri} changed")),
                Err(e) => {
                    problems.push(format!("job {job}: committed output {uri} unreadable: {e}"))
                }
            }
            if !uri.contains(&tag) {
                problems.push(format!(
                    "job {job}: committed output {uri} is not from the committed attempt {tag}"
                ));
            }
        }
    }
    for job in &snapshots {
        let tasks = job.tasks.as_ref().map(|t| t.total).unwrap_or(0) as usize;
        let committed = per_job.get(&job.id).copied().unwrap_or(0);
        if committed != tasks {
            problems.push(format!(
                "job {}: {committed} committed results for {tasks} tasks",
                job.id
            ));
        }
    }

    // The leader's gauges agree with the records: nothing active, queued or running.
    let s = status(&farm.coordinators[leader].url())
        .await
        .expect("leader status");
    if s.jobs_active != 0 || s.tasks_ready != 0 || s.tasks_running != 0 {
        problems.push(format!("leader status after the run: {s:?}"));
    }
    let (_, metrics) = http_get(
        &format!("127.0.0.1:{}", farm.coordinators[leader].http_port),
        "/metrics",
    )
    .expect("leader /metrics");
    if sample_sum(&metrics, "reelfarm_jobs_active", "") != Some(0.0) {
        problems.push("leader reelfarm_jobs_active is not 0".into());
    }
    let (mut stale, mut collected) = (0.0, 0.0);
    for c in &farm.coordinators {
        if let Ok((_, m)) = http_get(&format!("127.0.0.1:{}", c.http_port), "/metrics") {
            stale += sample_sum(&m, "reelfarm_stale_reports_rejected_total", "").unwrap_or(0.0);
            collected += sample_sum(&m, "reelfarm_artifacts_collected_total", "").unwrap_or(0.0);
        }
    }
    let files_in_store = walk_files(&farm.artifacts.join("jobs"));

    // The leadership timeline, from the replicas' own logs.
    for c in &farm.coordinators {
        for line in c.process.log().lines() {
            if line.contains("elected leader")
                || line.contains("leadership lost")
                || line.contains("no longer the leader")
                || line.contains("state recovered")
                || line.contains("harness:")
            {
                eprintln!(
                    "chaos: {}: {}",
                    c.process.name,
                    line.chars().take(220).collect::<String>()
                );
            }
        }
    }
    let worst_failover = faults.failover_seconds.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "chaos: {jobs} jobs, {} succeeded in {elapsed:.1} s; faults: {} workers killed, {} paused past their lease, {} leaders killed, {} etcd restarts, {} replicas restarted by the supervisor; failover times {:?} s (worst {worst_failover:.2} s, target < {} s); stale reports rejected by the live replicas: {stale}; artifact store: {committed_files} committed files, {files_in_store} files in all, {collected} uncommitted files collected by the live replicas",
        snapshots.iter().filter(|j| state(j) == v1::JobState::Succeeded).count(),
        faults.workers_killed,
        faults.workers_paused,
        faults.leaders_killed,
        faults.etcd_restarts,
        faults.supervisor_restarts,
        faults.failover_seconds.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>(),
        2 * ELECTION_TTL.as_secs(),
    );
    assert!(
        faults.workers_killed > 0
            && faults.workers_paused > 0
            && faults.leaders_killed > 0
            && faults.etcd_restarts > 0,
        "every kind of fault was injected: {faults:?}"
    );
    assert!(
        problems.is_empty(),
        "chaos problems:\n  {}{}",
        problems.join("\n  "),
        farm.logs()
    );
}

/// Files under `dir`, recursively.
fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_files(&path)
            } else {
                1
            }
        })
        .sum()
}

/// Takes `--long` (see the module docs); every other argument is libtest's.
fn main() {
    let mut long = false;
    let args = libtest_mimic::Arguments::from_iter(std::env::args().filter(|a| {
        let ours = a == "--long";
        long |= ours;
        !ours
    }));
    let name = "three_coordinators_four_workers_300_jobs_survive_the_weekly_failures";
    let trial = libtest_mimic::Trial::test(name, move || {
        require_tool("etcd");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(run(if long { 3000 } else { 300 }, long));
        Ok(())
    });
    libtest_mimic::run(&args, vec![trial]).exit();
}
