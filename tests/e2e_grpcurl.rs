//! The operator's first contact: grpcurl against a real coordinator process, with nothing
//! but server reflection to learn the API (grpcurl 1.8.6 from PyPI speaks reflection
//! v1alpha). Fails, never skips, when grpcurl is missing: run ./scripts/test.sh.

mod common;

use std::time::Duration;

use common::*;

/// grpcurl calls are quick; a hung one must fail the test rather than the CI job.
const GRPCURL_TIMEOUT: Duration = Duration::from_secs(150);

/// Runs `grpcurl -plaintext [args] ADDR [method words]`; returns (success, stdout, stderr).
async fn grpcurl(cluster: &Cluster, args: &[&str], method: Option<&str>) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new("grpcurl");
    cmd.arg("-plaintext")
        .args(args)
        .arg(cluster.coordinator.addr());
    if let Some(m) = method {
        cmd.args(m.split_whitespace());
    }
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(GRPCURL_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| {
            panic!("grpcurl {args:?} {method:?} did not finish within {GRPCURL_TIMEOUT:?}")
        })
        .expect("running grpcurl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// grpcurl prints each response message as one pretty-printed JSON object.
fn json_messages(stdout: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("grpcurl was expected to print JSON messages ({e}):\n{stdout}"))
}

/// A cluster with `workers` workers, once grpcurl is known to be there.
async fn cluster(workers: usize) -> Cluster {
    require_tool("grpcurl");
    Cluster::start(ClusterOptions {
        workers,
        coordinator_args: vec![],
    })
    .await
}

#[tokio::test]
async fn grpcurl_list_shows_every_service_through_reflection() {
    let cluster = cluster(0).await;
    let (ok, stdout, stderr) = grpcurl(&cluster, &[], Some("list")).await;
    assert!(
        ok,
        "`grpcurl -plaintext ADDR list` was expected to succeed: {stderr}"
    );
    let services: Vec<&str> = stdout.lines().map(str::trim).collect();
    for wanted in [
        "reelfarm.v1.JobService",
        "reelfarm.v1.WorkerService",
        "reelfarm.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&wanted),
            "`grpcurl list` was expected to show {wanted}, got {services:?}"
        );
    }

    let (ok, stdout, stderr) =
        grpcurl(&cluster, &[], Some("describe reelfarm.v1.JobService")).await;
    assert!(
        ok && stdout.contains("rpc SubmitJob") && stdout.contains("rpc WatchJob"),
        "`grpcurl describe reelfarm.v1.JobService` was expected to show its methods:\n{stdout}\n{stderr}"
    );
}

#[tokio::test]
async fn grpcurl_submit_with_a_prompt_alone_gets_every_default() {
    let cluster = cluster(0).await;
    let (ok, stdout, stderr) = grpcurl(
        &cluster,
        &[
            "-d",
            r#"{"spec": {"prompt": "a red rubber ball bouncing on a wooden floor"}}"#,
        ],
        Some("reelfarm.v1.JobService/SubmitJob"),
    )
    .await;
    assert!(
        ok,
        "SubmitJob with a prompt alone was expected to succeed:\n{stdout}\n{stderr}"
    );
    let response = json_messages(&stdout).pop().expect("one response");
    let job = &response["job"];
    assert!(
        job["id"].as_str().is_some_and(|id| !id.is_empty()),
        "the response was expected to carry the job id: {response}"
    );
    let spec = &job["spec"];
    // proto3 JSON: 64-bit integers are strings; defaults from the JobSpec documentation.
    assert_eq!(spec["fps"], 12, "default fps: {spec}");
    assert_eq!(spec["width"], 320, "default width: {spec}");
    assert_eq!(spec["height"], 180, "default height: {spec}");
    assert_eq!(spec["steps"], 20, "default steps: {spec}");
    assert_eq!(spec["durationSeconds"], 4.0, "default duration: {spec}");
    assert!(
        spec["seed"].is_string(),
        "a seed was expected to be drawn and recorded: {spec}"
    );
    assert_eq!(spec["tenant"], "default", "default tenant: {spec}");
}

#[tokio::test]
async fn grpcurl_watch_job_streams_until_succeeded() {
    let cluster = cluster(1).await;
    let (ok, stdout, stderr) = grpcurl(
        &cluster,
        &[
            "-d",
            r#"{"spec": {"prompt": "a green ball rolling", "durationSeconds": 1, "width": 160, "height": 96, "steps": 2}}"#,
        ],
        Some("reelfarm.v1.JobService/SubmitJob"),
    )
    .await;
    assert!(ok, "SubmitJob was expected to succeed:\n{stdout}\n{stderr}");
    let id = json_messages(&stdout)[0]["job"]["id"]
        .as_str()
        .expect("the response carries the job id")
        .to_string();

    let request = format!(r#"{{"id": "{id}"}}"#);
    let (ok, stdout, stderr) = grpcurl(
        &cluster,
        &["-d", &request],
        Some("reelfarm.v1.JobService/WatchJob"),
    )
    .await;
    assert!(
        ok,
        "WatchJob was expected to end cleanly:\n{stdout}\n{stderr}"
    );
    let snapshots = json_messages(&stdout);
    let last = snapshots
        .last()
        .expect("WatchJob sends at least one snapshot");
    assert_eq!(
        last["job"]["state"], "JOB_STATE_SUCCEEDED",
        "the stream was expected to end with the job SUCCEEDED:\n{stdout}"
    );
    assert!(
        snapshots[..snapshots.len() - 1]
            .iter()
            .all(|s| s["job"]["state"] != "JOB_STATE_SUCCEEDED"),
        "the stream was expected to end right after the terminal snapshot:\n{stdout}"
    );
}

#[tokio::test]
async fn grpcurl_health_check_reports_serving() {
    let cluster = cluster(0).await;
    let (ok, stdout, stderr) = grpcurl(&cluster, &[], Some("grpc.health.v1.Health/Check")).await;
    assert!(ok, "Health/Check was expected to succeed: {stderr}");
    assert_eq!(
        json_messages(&stdout)[0]["status"],
        "SERVING",
        "the coordinator was expected SERVING:\n{stdout}"
    );
    let (ok, stdout, stderr) = grpcurl(
        &cluster,
        &["-d", r#"{"service": "reelfarm.v1.JobService"}"#],
        Some("grpc.health.v1.Health/Check"),
    )
    .await;
    assert!(
        ok,
        "Health/Check of JobService was expected to succeed: {stderr}"
    );
    assert_eq!(
        json_messages(&stdout)[0]["status"],
        "SERVING",
        "JobService was expected SERVING:\n{stdout}"
    );
}

#[tokio::test]
async fn grpcurl_invalid_request_shows_invalid_argument_naming_the_field() {
    let cluster = cluster(0).await;
    let (ok, stdout, stderr) = grpcurl(
        &cluster,
        &["-d", r#"{"spec": {"prompt": "too fast", "fps": 61}}"#],
        Some("reelfarm.v1.JobService/SubmitJob"),
    )
    .await;
    let output = format!("{stdout}{stderr}");
    assert!(!ok, "an fps of 61 was expected to be refused:\n{output}");
    assert!(
        output.contains("InvalidArgument") && output.contains("spec.fps"),
        "grpcurl was expected to show InvalidArgument naming spec.fps:\n{output}"
    );
}
