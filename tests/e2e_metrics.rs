//! Prometheus endpoints of real processes after a job ran: the text passes
//! `promtool check metrics` (format and naming conventions), the families DESIGN.md names
//! are there, and the counters add up to the job that ran. Fails, never skips, when
//! promtool is missing: run ./scripts/test.sh.

mod common;

use std::process::Stdio;

use common::*;
use tokio::io::AsyncWriteExt as _;

/// Frames, frame-steps and audio seconds of [`spec`]: 2 s at 24 fps, 2 steps.
const JOB_FRAMES: f64 = 48.0;
const JOB_STEPS: f64 = 2.0;
const JOB_AUDIO_SECONDS: f64 = 2.0;

/// `promtool check metrics` on `text`: fails unless it exits 0 and reports nothing.
async fn assert_promtool_accepts(what: &str, text: &str) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running promtool");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("writing metrics to promtool");
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .expect("waiting for promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "`promtool check metrics` was expected to accept the {what}'s /metrics without problems ({}):\n{report}\n--- metrics:\n{text}",
        out.status
    );
}

/// Families of `families` that have no `# TYPE` line in `text`.
fn missing_families<'a>(text: &str, families: &[&'a str]) -> Vec<&'a str> {
    families
        .iter()
        .copied()
        .filter(|f| !text.lines().any(|l| l.starts_with(&format!("# TYPE {f} "))))
        .collect()
}

fn metrics_of(what: &str, addr: &str) -> String {
    let (code, body) =
        http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET {what} /metrics: {e}"));
    assert_eq!(
        code, 200,
        "the {what}'s /metrics was expected to answer 200"
    );
    body
}

#[tokio::test]
async fn metrics_of_coordinator_and_worker_pass_promtool_and_count_the_job() {
    require_tool("promtool");
    let cluster = Cluster::start(ClusterOptions {
        workers: 1,
        coordinator_args: vec![],
    })
    .await;
    let submitted = cluster.submit(spec("a red ball bouncing, measured")).await;
    let job = cluster.wait_succeeded(&submitted.id).await;
    let tasks = job.tasks.expect("a job carries its task summary").total;

    for (what, addr) in [
        ("coordinator", cluster.coordinator.http_addr()),
        ("worker", cluster.workers[0].http_addr()),
    ] {
        let (code, _) =
            http_get(&addr, "/healthz").unwrap_or_else(|e| panic!("GET {what} /healthz: {e}"));
        assert_eq!(
            code, 200,
            "the {what}'s /healthz was expected to answer 200"
        );
    }

    // Every check runs; the test fails at the end listing every problem found.
    let mut problems: Vec<String> = vec![];

    let coordinator = metrics_of("coordinator", &cluster.coordinator.http_addr());
    assert_promtool_accepts("coordinator", &coordinator).await;
    for family in missing_families(
        &coordinator,
        &[
            "reelfarm_jobs_submitted_total",
            "reelfarm_jobs_finished_total",
            "reelfarm_queue_depth",
            "reelfarm_tasks_dispatched_total",
            "reelfarm_tasks_retried_total",
            "reelfarm_dispatch_latency_seconds",
            "reelfarm_job_duration_seconds",
            "reelfarm_workers",
            "reelfarm_leader",
        ],
    ) {
        problems.push(format!(
            "coordinator: the family {family} was expected on /metrics"
        ));
    }
    let tasks = f64::from(tasks);
    for (name, labels, wanted) in [
        ("reelfarm_jobs_submitted_total", "", 1.0),
        ("reelfarm_jobs_finished_total", "state=\"succeeded\"", 1.0),
        ("reelfarm_tasks_dispatched_total", "", tasks),
        ("reelfarm_dispatch_latency_seconds_count", "", tasks),
        ("reelfarm_job_duration_seconds_count", "", 1.0),
        ("reelfarm_queue_depth", "", 0.0),
        ("reelfarm_workers", "state=\"active\"", 1.0),
        ("reelfarm_leader", "", 1.0),
    ] {
        let got = sample_sum(&coordinator, name, labels);
        if got != Some(wanted) {
            problems.push(format!(
                "coordinator: {name}{{{labels}}} was expected to be {wanted} after one job, got {got:?}"
            ));
        }
    }

    let worker = metrics_of("worker", &cluster.workers[0].http_addr());
    assert_promtool_accepts("worker", &worker).await;
    for family in missing_families(
        &worker,
        &[
            "reelfarm_worker_frames_generated_total",
            "reelfarm_worker_audio_seconds_generated_total",
            "reelfarm_worker_diffusion_steps_total",
            "reelfarm_worker_diffusion_step_duration_seconds",
        ],
    ) {
        problems.push(format!(
            "worker: the family {family} was expected on /metrics"
        ));
    }
    for (name, labels, wanted) in [
        ("reelfarm_worker_frames_generated_total", "", JOB_FRAMES),
        (
            "reelfarm_worker_diffusion_steps_total",
            "engine=\"cpu\"",
            JOB_FRAMES * JOB_STEPS,
        ),
        (
            "reelfarm_worker_audio_seconds_generated_total",
            "",
            JOB_AUDIO_SECONDS,
        ),
    ] {
        let got = sample_sum(&worker, name, labels);
        if got != Some(wanted) {
            problems.push(format!(
                "worker: {name}{{{labels}}} was expected to be {wanted} after the only job ran on it, got {got:?}"
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "/metrics problems:\n  {}\n--- coordinator /metrics:\n{coordinator}\n--- worker /metrics:\n{worker}",
        problems.join("\n  ")
    );
}
