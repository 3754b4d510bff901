//! Failover and graceful shutdown with real processes: a leader handing over on SIGTERM
//! (and the CLI following whichever replica leads), a worker draining on SIGTERM, a stuck
//! task reassigned, and a job that says no live worker can serve it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::replicas::*;
use common::*;
use reelfarm_proto::v1;

fn options(coordinators: usize, workers: usize) -> FarmOptions {
    FarmOptions {
        coordinators,
        workers,
        coordinator_args: long_job_coordinator_args(),
        worker_args: vec![],
        lease_ttl: LEASE_TTL_SECONDS,
    }
}

fn dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("reelfarm-failover-")
        .tempdir()
        .expect("temp dir")
}

async fn submit(farm: &Farm, spec: v1::JobSpec) -> v1::Job {
    farm.jobs()
        .await
        .submit_job(v1::SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await
        .expect("SubmitJob")
        .into_inner()
        .job
        .expect("job")
}

async fn get(farm: &Farm, id: &str) -> Option<v1::Job> {
    farm.jobs()
        .await
        .get_job(v1::GetJobRequest { id: id.into() })
        .await
        .ok()?
        .into_inner()
        .job
}

/// Polls the job (on whichever replica leads) until `done` holds.
async fn wait_for(farm: &Farm, id: &str, what: &str, done: impl Fn(&v1::Job) -> bool) -> v1::Job {
    let deadline = Instant::now() + JOB_TIMEOUT;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(job) = get(farm, id).await {
            if done(&job) {
                return job;
            }
            last = Some(job);
        }
        tokio::time::sleep(POLL).await;
    }
    panic!(
        "job {id}: expected {what} within {JOB_TIMEOUT:?}; last:\n{}{}",
        last.as_ref().map(describe).unwrap_or_default(),
        farm.logs()
    );
}

fn succeeded(j: &v1::Job) -> bool {
    state(j) == v1::JobState::Succeeded
}

/// The worker running a VIDEO_SEGMENT task of the job, once one is.
async fn segment_runner(farm: &Farm, id: &str) -> (String, String) {
    let job = wait_for(farm, id, "a segment task running", |j| {
        j.task_details.iter().any(|t| {
            task_kind(t) == v1::TaskKind::VideoSegment && is_active(t) && !t.worker_id.is_empty()
        })
    })
    .await;
    let t = job
        .task_details
        .iter()
        .find(|t| {
            task_kind(t) == v1::TaskKind::VideoSegment && is_active(t) && !t.worker_id.is_empty()
        })
        .expect("checked above");
    (t.worker_id.clone(), t.id.clone())
}

#[tokio::test]
async fn sigterm_on_the_leader_hands_over_and_the_cli_follows_the_new_leader() {
    let farm = Farm::start(dir(), options(2, 1));
    let leader = farm.wait_leader(READY_TIMEOUT).await;
    let job = submit(&farm, spec("a ball, before the handover")).await;

    farm.coordinators[leader].process.signal("TERM");
    let signalled = Instant::now();
    let new_leader = loop {
        if let Some(i) = farm.leader().await.filter(|i| *i != leader) {
            break i;
        }
        assert!(
            signalled.elapsed() < READY_TIMEOUT,
            "no replica took over:{}",
            farm.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "coordinator-{new_leader} leads {:.2} s after SIGTERM to coordinator-{leader}",
        signalled.elapsed().as_secs_f64()
    );
    let old_log = farm.coordinators[leader].process.log();
    assert!(
        old_log.contains("leadership handed over"),
        "the old leader resigned instead of letting its lease expire:\n{}",
        tail(&old_log)
    );

    // The CLI, given both replicas (the first one now down), finds the new leader.
    let addresses: Vec<String> = farm.coordinators.iter().map(Replica::url).collect();
    let out = Command::new(CLI_BIN)
        .args([
            "--coordinator",
            &addresses.join(","),
            "--output",
            "json",
            "get",
            &job.id,
        ])
        .output()
        .expect("running the CLI");
    assert!(
        out.status.success(),
        "reelfarm get through the replica list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&job.id));
    wait_for(&farm, &job.id, "SUCCEEDED after the handover", succeeded).await;
}

#[tokio::test]
async fn sigterm_on_a_worker_hands_its_task_back_and_deregisters_at_once() {
    let mut opts = options(1, 2);
    // No time to finish: whatever runs is handed back.
    opts.worker_args = vec!["--drain-timeout".into(), "0".into()];
    let mut farm = Farm::start(dir(), opts);
    farm.wait_leader(READY_TIMEOUT).await;
    let job = submit(&farm, long_spec("a ball, drained")).await;
    let (worker_id, task_id) = segment_runner(&farm, &job.id).await;
    let worker = farm
        .workers
        .iter_mut()
        .find(|w| w.id == worker_id)
        .expect("a farm worker");
    worker.process.signal("TERM");

    let done = wait_for(&farm, &job.id, "SUCCEEDED after the drain", succeeded).await;
    let task = done
        .task_details
        .iter()
        .find(|t| t.id == task_id)
        .expect("the drained task");
    assert_eq!(
        (task.retry_reason.as_str(), task.failures),
        ("handed_back", 0),
        "the task was handed back, not counted as a failure:\n{}",
        describe(&done)
    );
    let log = farm
        .workers
        .iter()
        .find(|w| w.id == worker_id)
        .expect("worker")
        .process
        .log();
    assert!(
        log.contains("deregistered"),
        "the worker revoked its lease:\n{}",
        tail(&log)
    );
}

#[tokio::test]
async fn a_task_that_stops_progressing_is_reassigned_as_stuck() {
    let mut opts = options(1, 2);
    opts.coordinator_args.extend(
        ["--stuck-min-seconds", "2", "--stuck-factor", "3"]
            .iter()
            .map(|s| s.to_string()),
    );
    // A lease far longer than the stuck limit: only the progress watchdog can notice.
    opts.lease_ttl = 120;
    let mut farm = Farm::start(dir(), opts);
    farm.wait_leader(READY_TIMEOUT).await;
    let job = submit(&farm, long_spec("a ball, stuck")).await;
    let (worker_id, task_id) = segment_runner(&farm, &job.id).await;
    let paused = farm
        .workers
        .iter_mut()
        .find(|w| w.id == worker_id)
        .expect("a farm worker");
    paused.process.signal("STOP");

    let done = wait_for(
        &farm,
        &job.id,
        "SUCCEEDED with the stuck task reassigned",
        succeeded,
    )
    .await;
    let task = done
        .task_details
        .iter()
        .find(|t| t.id == task_id)
        .expect("the stuck task");
    assert_eq!(task.retry_reason, "stuck", "{}", describe(&done));
    let log = farm.coordinators[0].process.log();
    assert!(
        log.contains("task stuck; reassigning") && log.contains("no progress for"),
        "the coordinator logs why the task was stuck:\n{}",
        tail(&log)
    );
    let (_, metrics) = http_get(
        &format!("127.0.0.1:{}", farm.coordinators[0].http_port),
        "/metrics",
    )
    .expect("/metrics");
    assert!(
        sample_sum(&metrics, "reelfarm_tasks_retried_total", "reason=\"stuck\"").unwrap_or(0.0)
            >= 1.0,
        "the retry is counted with reason=\"stuck\""
    );
    farm.workers
        .iter_mut()
        .find(|w| w.id == worker_id)
        .expect("worker")
        .process
        .signal("CONT");
}

#[tokio::test]
async fn a_job_no_live_worker_can_serve_says_so() {
    let farm = Farm::start(dir(), options(1, 0));
    farm.wait_leader(READY_TIMEOUT).await;
    let job = submit(&farm, spec("a ball, alone")).await;
    let job = wait_for(&farm, &job.id, "a waiting reason", |j| {
        !j.waiting.is_empty()
    })
    .await;
    assert!(
        job.waiting.contains("no live worker"),
        "waiting: {:?}",
        job.waiting
    );
}
