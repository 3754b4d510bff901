//! End to end on a real cluster: etcd, one `reelfarm-coordinator` process and worker
//! processes, driven through the gRPC API and the `reelfarm` CLI.
//!
//! Interruptions (a worker or the coordinator killed, a job cancelled) are timed by
//! observing the job's state, never by sleeping: a test acts once it sees the task or the
//! progress it needs, and checks afterwards that the interruption really hit mid-job.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use common::*;
use reelfarm_proto::v1;
use sha2::{Digest, Sha256};
use tonic::Code;

fn long_job_cluster() -> ClusterOptions {
    ClusterOptions {
        workers: 2,
        coordinator_args: long_job_coordinator_args(),
    }
}

fn no_workers(coordinator_args: &[&str]) -> ClusterOptions {
    ClusterOptions {
        workers: 0,
        coordinator_args: coordinator_args.iter().map(|s| s.to_string()).collect(),
    }
}

/// Every output of a SUCCEEDED job exists in the artifact store with the byte count and
/// SHA-256 the job reports, and the final artifacts (video, poster, manifest) are there.
fn assert_outputs_intact(job: &v1::Job) {
    let kinds: HashSet<&str> = job.outputs.iter().map(|o| o.kind.as_str()).collect();
    for wanted in ["video", "poster", "manifest"] {
        assert!(
            kinds.contains(wanted),
            "a SUCCEEDED job was expected to list a {wanted} output:\n{}",
            describe(job)
        );
    }
    for o in &job.outputs {
        let path = output_path(&o.uri);
        let bytes = std::fs::read(path).unwrap_or_else(|e| {
            panic!(
                "output {} ({}) was expected to exist: {e}",
                o.kind,
                path.display()
            )
        });
        assert_eq!(
            bytes.len() as u64,
            o.bytes,
            "output {} ({}) was expected to have the reported byte count",
            o.kind,
            path.display()
        );
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            o.sha256,
            "output {} ({}) was expected to match its reported sha256",
            o.kind,
            path.display()
        );
    }
}

fn video_output(job: &v1::Job) -> &v1::Output {
    job.outputs
        .iter()
        .find(|o| o.kind == "video")
        .expect("a SUCCEEDED job lists its video")
}

fn segment_tasks(job: &v1::Job) -> impl Iterator<Item = &v1::TaskView> {
    job.task_details
        .iter()
        .filter(|t| task_kind(t) == v1::TaskKind::VideoSegment)
}

/// Waits until a video segment of the job *starts* on `worker` (active now, not in the
/// previous snapshot), so it has most of its work ahead, and returns that task.
async fn wait_segment_starts_on(cluster: &Cluster, job_id: &str, worker: &str) -> v1::TaskView {
    let mut jobs = cluster.jobs();
    let deadline = Instant::now() + JOB_TIMEOUT;
    let mut previously_active: Option<HashSet<(String, u64)>> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "no segment started on {worker} within {JOB_TIMEOUT:?}"
        );
        let job = jobs
            .get_job(v1::GetJobRequest { id: job_id.into() })
            .await
            .expect("GetJob of a submitted job")
            .into_inner()
            .job
            .expect("GetJob answers with the job");
        assert!(
            !is_terminal(&job),
            "the job ended before a segment started on {worker}; it is too short for this test:\n{}",
            describe(&job)
        );
        if let Some(before) = &previously_active {
            let fresh = segment_tasks(&job).find(|t| {
                is_active(t)
                    && t.worker_id == worker
                    && !before.contains(&(t.id.clone(), t.attempt))
            });
            if let Some(t) = fresh {
                return t.clone();
            }
        }
        previously_active = Some(
            job.task_details
                .iter()
                .filter(|t| is_active(t))
                .map(|t| (t.id.clone(), t.attempt))
                .collect(),
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn job_succeeds_across_two_workers_with_intact_outputs() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let submitted = cluster
        .submit(spec("a red rubber ball bouncing on a wooden floor"))
        .await;
    assert!(
        matches!(
            state(&submitted),
            v1::JobState::Queued | v1::JobState::Running
        ),
        "a new job was expected QUEUED or RUNNING:\n{}",
        describe(&submitted)
    );

    let job = cluster.wait_succeeded(&submitted.id).await;
    assert_outputs_intact(&job);
    let tasks = job.tasks.expect("a job carries its task summary");
    assert_eq!(
        tasks.done,
        tasks.total,
        "every task of a SUCCEEDED job was expected DONE:\n{}",
        describe(&job)
    );
    let segment_workers: HashSet<&str> =
        segment_tasks(&job).map(|t| t.worker_id.as_str()).collect();
    assert!(
        segment_tasks(&job).count() >= 2 && segment_workers.len() >= 2,
        "the video segments were expected to run on both workers, ran on {segment_workers:?}:\n{}",
        describe(&job)
    );
}

#[tokio::test]
async fn a_weighted_tenant_is_not_queued_behind_another_tenants_backlog() {
    // One one-slot worker, connected after the queue is loaded: six CRM jobs, then one ad
    // job whose tenant weighs 3. By age alone the ad job would finish last.
    let mut cluster = Cluster::start(no_workers(&["--tenant-weights", "ads=3"])).await;
    let tenant_spec = |tenant: &str| v1::JobSpec {
        tenant: tenant.into(),
        ..spec("a red rubber ball bouncing on a wooden floor")
    };
    let mut crm = Vec::new();
    for _ in 0..6 {
        crm.push(cluster.submit(tenant_spec("crm")).await.id);
    }
    let ads = cluster.submit(tenant_spec("ads")).await.id;
    cluster.add_worker("w1");
    cluster.wait_workers_connected(&["w1".to_string()]).await;

    let finished = |job: &v1::Job| {
        let t = job.finished_at.expect("a finished job has finished_at");
        (t.seconds, t.nanos)
    };
    let ads_done = finished(&cluster.wait_succeeded(&ads).await);
    let mut crm_after = 0;
    for id in &crm {
        if finished(&cluster.wait_succeeded(id).await) > ads_done {
            crm_after += 1;
        }
    }
    assert!(
        crm_after >= 5,
        "the ad job (tenant weight 3) was expected to finish before at least 5 of the 6 \
         older CRM jobs, finished before {crm_after}"
    );
}

#[tokio::test]
async fn video_output_is_an_mp4_with_h264_video_of_the_requested_size_and_audio() {
    require_tool("ffprobe");
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let submitted = cluster.submit(spec("a blue glass marble rolling")).await;
    let job = cluster.wait_succeeded(&submitted.id).await;
    let video = output_path(&video_output(&job).uri).to_path_buf();

    let probe = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(&video)
        .output()
        .await
        .expect("running ffprobe");
    assert!(
        probe.status.success(),
        "ffprobe was expected to accept {}: {}",
        video.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    let streams: serde_json::Value =
        serde_json::from_slice(&probe.stdout).expect("ffprobe prints JSON");
    let streams = streams["streams"].as_array().cloned().unwrap_or_default();
    let video_stream = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| {
            panic!(
                "{} was expected to hold a video stream: {streams:?}",
                video.display()
            )
        });
    assert_eq!(
        video_stream["codec_name"], "h264",
        "video was expected H.264"
    );
    assert_eq!(
        (
            video_stream["width"].as_u64(),
            video_stream["height"].as_u64()
        ),
        (Some(160), Some(96)),
        "video was expected at the requested 160x96"
    );
    assert!(
        streams.iter().any(|s| s["codec_type"] == "audio"),
        "a job with audio (the default) was expected to hold an audio stream: {streams:?}"
    );
}

#[tokio::test]
async fn job_survives_kill9_of_a_worker_running_one_of_its_tasks() {
    let mut cluster = Cluster::start(long_job_cluster()).await;
    let victim = "worker-1";
    let submitted = cluster
        .submit(long_spec("two metal cubes sliding on ice"))
        .await;

    let killed = wait_segment_starts_on(&cluster, &submitted.id, victim).await;
    cluster.worker(victim).kill9();

    let job = cluster.wait_succeeded(&submitted.id).await;
    let retries = job.tasks.expect("a job carries its task summary").retries;
    assert!(
        retries > 0,
        "the task killed with its worker was expected to be retried (retries > 0):\n{}",
        describe(&job)
    );
    let (_, metrics) = http_get(&cluster.coordinator.http_addr(), "/metrics")
        .expect("GET the coordinator's /metrics");
    assert!(
        sample_sum(&metrics, "reelfarm_tasks_retried_total", "").unwrap_or(0.0) >= 1.0,
        "the coordinator's reelfarm_tasks_retried_total was expected to count the retry:\n{metrics}"
    );
    let rerun = job
        .task_details
        .iter()
        .find(|t| t.id == killed.id)
        .expect("the killed task is still part of the job");
    assert!(
        rerun.attempt > killed.attempt && rerun.worker_id != victim,
        "task {} (attempt {} on {victim} when killed) was expected to finish under a later attempt on another worker:\n{}",
        killed.id,
        killed.attempt,
        describe(&job)
    );
    assert_outputs_intact(&job);
}

#[tokio::test]
async fn job_survives_kill9_and_restart_of_the_coordinator() {
    let mut cluster = Cluster::start(long_job_cluster()).await;
    let submitted = cluster
        .submit(long_spec("a wooden ball rolling down a ramp"))
        .await;
    let total = submitted.task_details.len();
    cluster
        .wait_job(
            &submitted.id,
            "a segment DONE while other segments still have to run",
            |j| {
                segment_tasks(j).any(|t| task_state(t) == v1::TaskState::Done)
                    && segment_tasks(j).any(|t| task_state(t) != v1::TaskState::Done)
            },
        )
        .await;
    cluster.coordinator.kill9();

    // With the coordinator dead, etcd says where the job stood: it must be mid-way.
    let stored = cluster
        .etcd_json(&format!("jobs/{}", submitted.id))
        .await
        .expect("the job was expected to be stored in etcd");
    assert!(
        !matches!(
            stored["state"].as_str(),
            Some("Succeeded" | "Failed" | "Cancelled")
        ),
        "the coordinator was expected to die mid-job, but etcd has the job finished: {stored}"
    );
    let committed = cluster
        .etcd_keys(&format!("results/{}/", submitted.id))
        .await
        .len();
    assert!(
        committed > 0 && committed < total,
        "the coordinator was expected to die with some ({committed}) but not all of {total} task results committed"
    );

    cluster.coordinator.restart().await;
    let job = cluster.wait_succeeded(&submitted.id).await;
    assert_outputs_intact(&job);
    let ids: Vec<String> = cluster.workers.iter().map(|w| w.id.clone()).collect();
    cluster.wait_workers_connected(&ids).await;
    let status = cluster
        .admin()
        .get_cluster_status(v1::GetClusterStatusRequest {})
        .await
        .expect("GetClusterStatus after the restart")
        .into_inner();
    assert!(
        status.term >= 2 && status.leader,
        "the restarted coordinator was expected to lead a new term: {status:?}"
    );
}

#[tokio::test]
async fn worker_paused_past_its_lease_loses_its_task_and_the_job_still_succeeds() {
    let mut cluster = Cluster::start(long_job_cluster()).await;
    let victim = "worker-1";
    let submitted = cluster
        .submit(long_spec("a rubber ball and a paused worker"))
        .await;
    let paused = wait_segment_starts_on(&cluster, &submitted.id, victim).await;
    // SIGSTOP: the process is alive and its stream open, but it renews no lease.
    cluster.worker(victim).process.signal("STOP");
    cluster
        .wait_job(
            &submitted.id,
            &format!("{} reassigned after {victim}'s lease expired", paused.id),
            |j| {
                j.task_details
                    .iter()
                    .any(|t| t.id == paused.id && t.attempt > paused.attempt)
            },
        )
        .await;
    cluster.worker(victim).process.signal("CONT");

    let job = cluster.wait_succeeded(&submitted.id).await;
    assert_outputs_intact(&job);
    let task = job
        .task_details
        .iter()
        .find(|t| t.id == paused.id)
        .expect("the paused task is still part of the job");
    assert!(
        task.attempt > paused.attempt,
        "task {} was expected to finish under a later attempt than the paused one ({}):\n{}",
        paused.id,
        paused.attempt,
        describe(&job)
    );
    // The resumed worker registers again by itself.
    cluster.wait_workers_connected(&[victim.to_string()]).await;
}

#[tokio::test]
async fn restarted_coordinator_still_shows_which_worker_ran_each_done_task() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let submitted = cluster.submit(spec("a ball, before the restart")).await;
    let before = cluster.wait_succeeded(&submitted.id).await;
    assert!(
        before.task_details.iter().all(|t| !t.worker_id.is_empty()),
        "every DONE task was expected to name its worker:\n{}",
        describe(&before)
    );

    cluster.coordinator.restart().await;
    let after = cluster.wait_succeeded(&submitted.id).await;
    let workers = |j: &v1::Job| -> Vec<(String, String)> {
        j.task_details
            .iter()
            .map(|t| (t.id.clone(), t.worker_id.clone()))
            .collect()
    };
    assert_eq!(
        workers(&after),
        workers(&before),
        "a restarted coordinator was expected to recover which worker produced each committed result (TaskView.worker_id):\n{}",
        describe(&after)
    );
}

#[tokio::test]
async fn cancelled_job_ends_cancelled_and_runs_no_further_task() {
    let cluster = Cluster::start(long_job_cluster()).await;
    let submitted = cluster
        .submit(long_spec("a glass bottle falling over"))
        .await;
    cluster
        .wait_job(&submitted.id, "a segment running", |j| {
            segment_tasks(j).any(is_active)
        })
        .await;

    let cancelled = cluster
        .jobs()
        .cancel_job(v1::CancelJobRequest {
            id: submitted.id.clone(),
        })
        .await
        .expect("CancelJob of a running job")
        .into_inner()
        .job
        .expect("CancelJob answers with the job");
    assert_eq!(
        state(&cancelled),
        v1::JobState::Cancelled,
        "CancelJob was expected to answer with the job CANCELLED:\n{}",
        describe(&cancelled)
    );
    // Tasks dispatched before the cancel have attempt >= 1; the others must never run.
    let attempts_at_cancel: HashMap<String, u64> = cancelled
        .task_details
        .iter()
        .map(|t| (t.id.clone(), t.attempt))
        .collect();
    let done_at_cancel: HashSet<String> = cancelled
        .task_details
        .iter()
        .filter(|t| task_state(t) == v1::TaskState::Done)
        .map(|t| t.id.clone())
        .collect();
    assert!(
        attempts_at_cancel.values().any(|a| *a == 0),
        "the job was expected to be cancelled while some tasks had not started:\n{}",
        describe(&cancelled)
    );

    // A job submitted after the cancel runs on the same workers: once it SUCCEEDED, any
    // task of the cancelled job that was still going to be dispatched would have been.
    let next = cluster.submit(spec("a ball after the cancel")).await;
    cluster.wait_succeeded(&next.id).await;

    let after = cluster
        .jobs()
        .get_job(v1::GetJobRequest {
            id: submitted.id.clone(),
        })
        .await
        .expect("GetJob of the cancelled job")
        .into_inner()
        .job
        .expect("GetJob answers with the job");
    assert_eq!(
        state(&after),
        v1::JobState::Cancelled,
        "a cancelled job was expected to stay CANCELLED"
    );
    for t in &after.task_details {
        let before = attempts_at_cancel.get(&t.id).copied().unwrap_or_default();
        assert!(
            t.attempt == before
                && !is_active(t)
                && (task_state(t) != v1::TaskState::Done || done_at_cancel.contains(&t.id)),
            "task {} of the cancelled job was expected to be neither dispatched nor finished after the cancel (attempt {before} then):\n{}",
            t.id,
            describe(&after)
        );
    }
    // Nothing written by a task that had not been dispatched before the cancel, and no
    // final artifacts. Files are named <task id>.t<term>a<attempt>...
    let job_dir = cluster.artifacts.join("jobs").join(&submitted.id);
    for entry in std::fs::read_dir(&job_dir).expect("the cancelled job's artifact folder") {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        let task = name.split('.').next().unwrap_or_default();
        assert!(
            attempts_at_cancel.get(task).copied().unwrap_or_default() > 0 && task != "assemble",
            "{name} was written for the cancelled job by a task not dispatched before the cancel"
        );
    }
}

#[tokio::test]
async fn invalid_spec_is_rejected_naming_the_field_and_stores_nothing() {
    let cluster = Cluster::start(no_workers(&[])).await;
    let mut jobs = cluster.jobs();
    let cases = [
        (
            "spec.fps",
            v1::JobSpec {
                fps: 61,
                ..spec("too many frames per second")
            },
        ),
        (
            "spec.width",
            v1::JobSpec {
                width: 321,
                ..spec("an odd width")
            },
        ),
        (
            "spec.prompt",
            v1::JobSpec {
                prompt: "   ".into(),
                ..spec("")
            },
        ),
    ];
    for (field, bad) in cases {
        let status = jobs
            .submit_job(v1::SubmitJobRequest {
                spec: Some(bad),
                idempotency_key: "bad-request".into(),
            })
            .await
            .expect_err("an invalid spec was expected to be refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "an invalid {field} was expected INVALID_ARGUMENT, got {status:?}"
        );
        assert!(
            status.message().contains(field),
            "the INVALID_ARGUMENT message was expected to name {field}: {:?}",
            status.message()
        );
    }

    let listed = jobs
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .expect("ListJobs")
        .into_inner();
    assert!(
        listed.jobs.is_empty(),
        "refused submissions were expected to leave no job, ListJobs has {:?}",
        listed.jobs.iter().map(|j| &j.id).collect::<Vec<_>>()
    );
    for sub in ["jobs/", "idempotency/", "results/"] {
        let keys = cluster.etcd_keys(sub).await;
        assert!(
            keys.is_empty(),
            "refused submissions were expected to write nothing under /reelfarm/{}/{sub}, found {keys:?}",
            cluster.name
        );
    }
}

#[tokio::test]
async fn submit_with_the_same_idempotency_key_returns_the_first_job() {
    let cluster = Cluster::start(no_workers(&[])).await;
    let mut jobs = cluster.jobs();
    let submit = |key: &str, tenant: &str| v1::SubmitJobRequest {
        spec: Some(v1::JobSpec {
            tenant: tenant.into(),
            ..spec("a ball, submitted twice")
        }),
        idempotency_key: key.into(),
    };
    let first = jobs
        .submit_job(submit("render-42", "studio-a"))
        .await
        .expect("first SubmitJob")
        .into_inner()
        .job
        .expect("a job");
    let again = jobs
        .submit_job(submit("render-42", "studio-a"))
        .await
        .expect("second SubmitJob with the same key")
        .into_inner()
        .job
        .expect("a job");
    assert_eq!(
        again.id, first.id,
        "a resubmission with the same idempotency key was expected to return the first job"
    );
    let other_tenant = jobs
        .submit_job(submit("render-42", "studio-b"))
        .await
        .expect("SubmitJob with the same key for another tenant")
        .into_inner()
        .job
        .expect("a job");
    assert_ne!(
        other_tenant.id, first.id,
        "idempotency keys were expected to be scoped per tenant"
    );

    let listed = jobs
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .expect("ListJobs")
        .into_inner();
    let mut ids: Vec<&str> = listed.jobs.iter().map(|j| j.id.as_str()).collect();
    ids.sort();
    let mut expected = vec![first.id.as_str(), other_tenant.id.as_str()];
    expected.sort();
    assert_eq!(
        ids, expected,
        "exactly one job per (tenant, key) was expected"
    );
    assert_eq!(
        cluster.etcd_keys("jobs/").await.len(),
        2,
        "exactly one stored job per (tenant, key) was expected in etcd"
    );
}

#[tokio::test]
async fn batch_with_one_invalid_entry_stores_no_job() {
    let cluster = Cluster::start(no_workers(&[])).await;
    let mut jobs = cluster.jobs();
    let entry = |spec: v1::JobSpec| v1::SubmitJobRequest {
        spec: Some(spec),
        idempotency_key: String::new(),
    };
    let status = jobs
        .submit_batch(v1::SubmitBatchRequest {
            jobs: vec![
                entry(spec("variant a")),
                entry(v1::JobSpec {
                    fps: 61,
                    ..spec("variant b")
                }),
                entry(spec("variant c")),
            ],
        })
        .await
        .expect_err("a batch with an invalid entry was expected to be refused");
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "a batch with an invalid entry was expected INVALID_ARGUMENT, got {status:?}"
    );
    assert!(
        status.message().contains("jobs[1]") && status.message().contains("fps"),
        "the message was expected to name the entry and field (jobs[1].spec.fps): {:?}",
        status.message()
    );
    let listed = jobs
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .expect("ListJobs")
        .into_inner();
    assert!(
        listed.jobs.is_empty(),
        "a refused batch was expected to store none of its jobs, ListJobs has {}",
        listed.jobs.len()
    );
    assert_eq!(
        cluster.etcd_keys("jobs/").await,
        Vec::<String>::new(),
        "a refused batch was expected to write no job to etcd"
    );

    // The same batch without the bad entry is stored whole.
    let stored = jobs
        .submit_batch(v1::SubmitBatchRequest {
            jobs: vec![entry(spec("variant a")), entry(spec("variant c"))],
        })
        .await
        .expect("a valid batch")
        .into_inner();
    assert_eq!(stored.jobs.len(), 2, "a valid batch returns every job");
    assert_eq!(
        cluster.etcd_keys("jobs/").await.len(),
        2,
        "a valid batch was expected to store every job"
    );
}

#[tokio::test]
async fn submissions_beyond_max_queued_jobs_are_resource_exhausted() {
    // No workers: every accepted job stays queued.
    let cluster = Cluster::start(no_workers(&["--max-queued-jobs", "2"])).await;
    let mut jobs = cluster.jobs();
    for i in 0..2 {
        cluster.submit(spec(&format!("queued job {i}"))).await;
    }
    let status = jobs
        .submit_job(v1::SubmitJobRequest {
            spec: Some(spec("one job too many")),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("a submission beyond --max-queued-jobs was expected to be refused");
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "a submission beyond --max-queued-jobs was expected RESOURCE_EXHAUSTED, got {status:?}"
    );
    let listed = jobs
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .expect("ListJobs")
        .into_inner();
    assert_eq!(
        listed.jobs.len(),
        2,
        "the refused job was expected not to be stored"
    );
    assert_eq!(
        cluster.etcd_keys("jobs/").await.len(),
        2,
        "the refused job was expected not to be written to etcd"
    );
}

#[tokio::test]
async fn one_tenant_cannot_fill_the_queue_beyond_its_limit() {
    let cluster = Cluster::start(no_workers(&[
        "--max-queued-jobs",
        "10",
        "--max-queued-jobs-per-tenant",
        "2",
    ]))
    .await;
    let mut jobs = cluster.jobs();
    let of = |tenant: &str, prompt: &str| v1::SubmitJobRequest {
        spec: Some(v1::JobSpec {
            tenant: tenant.into(),
            ..spec(prompt)
        }),
        idempotency_key: String::new(),
    };
    for i in 0..2 {
        cluster
            .submit(of("crm", &format!("crm job {i}")).spec.expect("spec"))
            .await;
    }
    let status = jobs
        .submit_job(of("crm", "one crm job too many"))
        .await
        .expect_err("crm's third job was expected to be refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("\"crm\"")
            && status.message().contains("--max-queued-jobs-per-tenant"),
        "the refusal names the tenant and the limit: {}",
        status.message()
    );
    assert!(
        status.metadata().get("retry-after").is_some(),
        "a retry hint: {status:?}"
    );
    // All or nothing: a batch with one job over crm's limit stores none of its jobs.
    let status = jobs
        .submit_batch(v1::SubmitBatchRequest {
            jobs: vec![
                of("ads", "ads job in a batch"),
                of("crm", "crm job in a batch"),
            ],
        })
        .await
        .expect_err("a batch over crm's limit was expected to be refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Another tenant is still served.
    cluster
        .submit(of("ads", "an ads job").spec.expect("spec"))
        .await;
    let (ok, stdout, stderr) = cli(&cluster, &["status"]).await;
    assert!(
        ok && stdout.contains("jobs active 3"),
        "reelfarm status: {stdout} {stderr}"
    );
    let crm = stdout
        .lines()
        .position(|l| l.contains("tenant crm") && l.contains("2 active"));
    let ads = stdout
        .lines()
        .position(|l| l.contains("tenant ads") && l.contains("1 active"));
    assert!(
        matches!((crm, ads), (Some(c), Some(a)) if c < a),
        "per-tenant counts, most first: {stdout}"
    );
    assert_eq!(
        cluster.etcd_keys("jobs/").await.len(),
        3,
        "two crm jobs and one ads job stored; nothing of the refused requests"
    );
}

#[tokio::test]
async fn get_and_cancel_of_an_unknown_job_are_not_found() {
    let cluster = Cluster::start(no_workers(&[])).await;
    let mut jobs = cluster.jobs();
    let unknown = "0123456789abcdef";
    let status = jobs
        .get_job(v1::GetJobRequest { id: unknown.into() })
        .await
        .expect_err("GetJob of an unknown id was expected to fail");
    assert_eq!(status.code(), Code::NotFound, "GetJob: {status:?}");
    let status = jobs
        .cancel_job(v1::CancelJobRequest { id: unknown.into() })
        .await
        .expect_err("CancelJob of an unknown id was expected to fail");
    assert_eq!(status.code(), Code::NotFound, "CancelJob: {status:?}");
}

#[tokio::test]
async fn an_operator_drain_holds_across_a_coordinator_restart_until_uncordoned() {
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    let mut admin = cluster.admin();
    let status = admin
        .drain_worker(v1::DrainWorkerRequest {
            id: "nobody".into(),
        })
        .await
        .expect_err("draining an unknown worker was expected to fail");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = admin
        .uncordon_worker(v1::UncordonWorkerRequest { id: String::new() })
        .await
        .expect_err("an empty id was expected to be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        cluster.etcd_keys("cordons/").await.is_empty(),
        "refused requests store nothing"
    );

    let drained = admin
        .drain_worker(v1::DrainWorkerRequest {
            id: "worker-0".into(),
        })
        .await
        .expect("DrainWorker")
        .into_inner()
        .worker
        .expect("the drained worker");
    assert!(
        drained.cordoned && drained.state == v1::WorkerState::Draining as i32,
        "{drained:?}"
    );
    assert_eq!(
        cluster.etcd_keys("cordons/").await.len(),
        1,
        "the drain is stored"
    );

    // A new coordinator process reads the drain back; the worker reconnects to it drained.
    cluster.coordinator.restart().await;
    cluster
        .wait_workers_connected(&["worker-0".to_string()])
        .await;
    let job = cluster.submit(spec("a ball on a drained farm")).await;
    cluster
        .wait_job(&job.id, "waiting because every worker is draining", |j| {
            j.waiting.contains("draining")
        })
        .await;
    let listed = cluster
        .admin()
        .list_workers(v1::ListWorkersRequest {})
        .await
        .expect("ListWorkers")
        .into_inner();
    assert!(
        listed
            .workers
            .iter()
            .any(|w| w.id == "worker-0" && w.cordoned),
        "worker-0 was expected still cordoned after the restart: {listed:?}"
    );

    let (ok, stdout, _) = cli(&cluster, &["workers"]).await;
    assert!(
        ok && stdout.contains("DRAINING") && stdout.contains("cordoned"),
        "reelfarm workers shows the drain: {stdout}"
    );

    // Gone (kill -9, lease expired), the drained worker is still listed as drained.
    cluster.worker("worker-0").kill9();
    let admin = cluster.admin();
    wait_until(
        "worker-0 was expected listed as drained and not connected",
        std::time::Duration::from_secs(30),
        || {
            let mut admin = admin.clone();
            async move {
                let listed = admin
                    .list_workers(v1::ListWorkersRequest {})
                    .await
                    .expect("ListWorkers")
                    .into_inner();
                if listed.workers.is_empty() && listed.cordoned_not_connected == ["worker-0"] {
                    Ok(())
                } else {
                    Err(format!("{listed:?}"))
                }
            }
        },
    )
    .await;
    let (ok, stdout, _) = cli(&cluster, &["workers"]).await;
    assert!(
        ok && stdout.contains("cordoned (not connected)"),
        "reelfarm workers shows the absent drained worker: {stdout}"
    );
    cluster.worker("worker-0").process.spawn();
    cluster
        .wait_workers_connected(&["worker-0".to_string()])
        .await;

    let (ok, stdout, stderr) = cli(&cluster, &["uncordon", "worker-0"]).await;
    assert!(ok, "reelfarm uncordon worker-0 failed: {stdout} {stderr}");
    assert!(
        stdout.contains("ACTIVE"),
        "uncordon prints the worker: {stdout}"
    );
    cluster.wait_succeeded(&job.id).await;
    assert!(
        cluster.etcd_keys("cordons/").await.is_empty(),
        "the lifted drain is deleted from etcd"
    );
}

#[tokio::test]
async fn files_of_uncommitted_attempts_are_collected_after_the_grace() {
    let cluster = Cluster::start(ClusterOptions {
        workers: 2,
        coordinator_args: vec!["--artifact-gc-grace-seconds".into(), "1".into()],
    })
    .await;
    let submitted = cluster.submit(spec("a ball and a stray file")).await;
    // What a stale attempt leaves behind: an output under a name of its own that no
    // committed result names.
    let stray = cluster
        .artifacts
        .join(format!("jobs/{}/segment-000.t99a9.bin", submitted.id));
    std::fs::create_dir_all(stray.parent().expect("a job folder")).expect("mkdir");
    std::fs::write(&stray, b"an uncommitted attempt's output").expect("write the stray file");

    let job = cluster.wait_succeeded(&submitted.id).await;
    wait_until(
        "the stray file was expected to be deleted after the job finished",
        std::time::Duration::from_secs(30),
        || async {
            if !stray.exists() {
                Ok(())
            } else {
                Err(format!("{} still exists", stray.display()))
            }
        },
    )
    .await;
    assert_outputs_intact(&job);
    let (_, metrics) = http_get(&cluster.coordinator.http_addr(), "/metrics")
        .expect("GET the coordinator's /metrics");
    assert_eq!(
        sample_sum(&metrics, "reelfarm_artifacts_collected_total", ""),
        Some(1.0),
        "exactly the stray file was collected:\n{metrics}"
    );
    // The note is written after the deletes; give it a moment.
    let key = format!("jobs/{}", submitted.id);
    wait_until(
        "the sweep was expected to be recorded in etcd",
        std::time::Duration::from_secs(10),
        || async {
            let stored = cluster.etcd_json(&key).await.expect("the job is stored");
            if stored["artifacts_swept"] == serde_json::Value::Bool(true) {
                Ok(())
            } else {
                Err(stored.to_string())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_identical_spec_is_served_from_the_result_cache_within_its_tenant() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let first = cluster.submit(spec("a ball rendered once")).await;
    let first = cluster.wait_succeeded(&first.id).await;

    // Same tenant, prompt, seed and parameters; another priority and label.
    let mut again = spec("a ball rendered once");
    again.priority = v1::Priority::High as i32;
    again.labels.insert("variant".into(), "b".into());
    let cached = cluster.submit(again).await;
    assert_eq!(
        (state(&cached), cached.cached_from.as_str()),
        (v1::JobState::Succeeded, first.id.as_str()),
        "the same spec was expected SUCCEEDED at submission from the first job:\n{}",
        describe(&cached)
    );
    assert_ne!(cached.id, first.id, "a new job, not the first one returned");
    assert_eq!(cached.outputs, first.outputs, "the first job's files");
    assert_eq!(
        cached.tasks.as_ref().map(|t| t.total),
        Some(0),
        "no task ran"
    );
    assert_outputs_intact(&cached);
    let (ok, stdout, stderr) = cli(&cluster, &["get", &cached.id]).await;
    assert!(
        ok && stdout.contains(&format!("cache hit: the outputs of job {}", first.id)),
        "reelfarm get shows the cache hit: {stdout} {stderr}"
    );

    // Another tenant renders its own.
    let elsewhere = cluster
        .submit(v1::JobSpec {
            tenant: "other".into(),
            ..spec("a ball rendered once")
        })
        .await;
    assert!(
        elsewhere.cached_from.is_empty() && state(&elsewhere) != v1::JobState::Succeeded,
        "another tenant's job was expected to render:\n{}",
        describe(&elsewhere)
    );
    let elsewhere = cluster.wait_succeeded(&elsewhere.id).await;
    assert_ne!(elsewhere.outputs[0].uri, first.outputs[0].uri);
    let (_, metrics) = http_get(&cluster.coordinator.http_addr(), "/metrics")
        .expect("GET the coordinator's /metrics");
    assert_eq!(
        sample_sum(&metrics, "reelfarm_cache_hits_total", ""),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_identical_job_submitted_while_one_renders_follows_it_and_gets_its_outputs() {
    let cluster = Cluster::start(ClusterOptions {
        workers: 2,
        coordinator_args: long_job_coordinator_args(),
    })
    .await;
    let leader = cluster.submit(long_spec("a ball rendered for two")).await;
    let follower = cluster.submit(long_spec("a ball rendered for two")).await;
    assert_eq!(
        follower.merged_into,
        leader.id,
        "submitted while the first renders, it follows it:\n{}",
        describe(&follower)
    );
    assert!(
        follower.waiting.contains("merged with job"),
        "{}",
        follower.waiting
    );
    let leader = cluster.wait_succeeded(&leader.id).await;
    let follower = cluster.wait_succeeded(&follower.id).await;
    assert_eq!(follower.cached_from, leader.id);
    assert_eq!(follower.outputs, leader.outputs, "the leader's files");
    assert_eq!(
        follower.tasks.as_ref().map(|t| t.done),
        Some(0),
        "the follower ran no task: {}",
        describe(&follower)
    );
    assert_outputs_intact(&follower);
    let (_, metrics) = http_get(&cluster.coordinator.http_addr(), "/metrics")
        .expect("GET the coordinator's /metrics");
    assert_eq!(
        sample_sum(&metrics, "reelfarm_jobs_merged_total", ""),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn no_result_cache_renders_every_job() {
    let cluster = Cluster::start(ClusterOptions {
        workers: 2,
        coordinator_args: vec!["--no-result-cache".into()],
    })
    .await;
    let first = cluster.submit(spec("a ball rendered twice")).await;
    cluster.wait_succeeded(&first.id).await;
    let second = cluster.submit(spec("a ball rendered twice")).await;
    assert!(second.cached_from.is_empty(), "{}", describe(&second));
    let second = cluster.wait_succeeded(&second.id).await;
    assert!(second.tasks.as_ref().is_some_and(|t| t.done > 0));
}

/// Runs the `reelfarm` CLI against the cluster; returns (success, stdout, stderr).
async fn cli(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(CLI_BIN)
        .arg("--coordinator")
        .arg(cluster.coordinator.url())
        .args(args)
        .env_remove("REELFARM_OUTPUT")
        .output()
        .await
        .expect("running the reelfarm CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_submits_watches_lists_and_shows_workers() {
    let cluster = Cluster::start(ClusterOptions::default()).await;

    let (ok, stdout, stderr) = cli(
        &cluster,
        &[
            "--output",
            "json",
            "submit",
            "a yellow ball bouncing",
            "--duration",
            "2",
            "--fps",
            "24",
            "--width",
            "160",
            "--height",
            "96",
            "--steps",
            "2",
            "--watch",
        ],
    )
    .await;
    assert!(
        ok,
        "`reelfarm submit --watch` was expected to exit 0 for a job that succeeds; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let last: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("`submit --watch --output json` was expected to end with the job as JSON:\n{stdout}"));
    assert_eq!(
        last["state"], "JOB_STATE_SUCCEEDED",
        "the last snapshot was expected SUCCEEDED: {last}"
    );
    let id = last["id"]
        .as_str()
        .expect("the job JSON has an id")
        .to_string();
    let job = cluster.wait_succeeded(&id).await;
    assert_outputs_intact(&job);

    let (ok, stdout, stderr) = cli(&cluster, &["--output", "json", "list"]).await;
    assert!(ok, "`reelfarm list` was expected to exit 0: {stderr}");
    let listed: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("`list --output json` prints one JSON job a line"))
        .collect();
    assert!(
        listed
            .iter()
            .any(|j| j["id"] == id.as_str() && j["state"] == "JOB_STATE_SUCCEEDED"),
        "`reelfarm list` was expected to show job {id} SUCCEEDED:\n{stdout}"
    );

    let (ok, stdout, stderr) = cli(&cluster, &["workers"]).await;
    assert!(ok, "`reelfarm workers` was expected to exit 0: {stderr}");
    for w in &cluster.workers {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&w.id) && l.contains("ACTIVE")),
            "`reelfarm workers` was expected to list {} as ACTIVE:\n{stdout}",
            w.id
        );
    }

    // A refused submission makes the CLI fail and say why.
    let (ok, _, stderr) = cli(&cluster, &["submit", "too fast", "--fps", "61"]).await;
    assert!(
        !ok && stderr.contains("spec.fps"),
        "`reelfarm submit --fps 61` was expected to fail naming spec.fps; stderr:\n{stderr}"
    );
}

/// VerifyContent of `source` through the coordinator.
async fn verify(
    cluster: &Cluster,
    source: v1::verify_content_request::Source,
) -> Result<v1::VerifyContentResponse, tonic::Status> {
    cluster
        .jobs()
        .verify_content(v1::VerifyContentRequest {
            source: Some(source),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn verify_content_is_checked_by_a_worker_and_refused_without_one() {
    use v1::verify_content_request::Source;
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 1,
        coordinator_args: vec![],
    })
    .await;
    let submitted = cluster
        .submit(spec("a green glass ball on a stone floor"))
        .await;
    let job = cluster.wait_succeeded(&submitted.id).await;
    let video = video_output(&job).clone();
    let data = std::fs::read(output_path(&video.uri)).expect("the committed video is readable");

    // The coordinator links no decoder: the answer comes from the worker, inline and by URI.
    let inline = verify(&cluster, Source::Data(data.clone()))
        .await
        .expect("VerifyContent with a worker connected was expected to succeed");
    let by_uri = verify(&cluster, Source::Uri(video.uri.clone()))
        .await
        .expect("VerifyContent by uri was expected to succeed");
    for (how, v) in [("inline", &inline), ("by uri", &by_uri)] {
        // (The watermark's own strength in a clip this small is the pipeline tests' concern.)
        assert!(
            v.ours && v.manifest_valid,
            "{how}: the farm's own video was expected to verify as ours with a valid manifest: {v:?}"
        );
        assert_eq!(v.job_id, job.id, "{how}: the watermark names the job");
        assert!(
            v.video_error.is_empty(),
            "{how}: the pictures were read: {v:?}"
        );
    }

    let garbage = verify(&cluster, Source::Data(b"this is not an mp4".to_vec()))
        .await
        .expect("a file that is no video is an answer, not an error");
    assert!(
        !garbage.ours && !garbage.manifest_valid && !garbage.video_error.is_empty(),
        "a file that is no video is not ours, and the answer says why no picture was read: {garbage:?}"
    );

    let too_large = verify(&cluster, Source::Data(vec![0u8; 64 * 1024 * 1024 + 1]))
        .await
        .expect_err("a file over 64 MiB was expected to be refused");
    assert_eq!(too_large.code(), Code::InvalidArgument, "{too_large:?}");
    assert!(
        too_large.message().contains("data must be at most"),
        "the refusal names the field and its bound: {too_large:?}"
    );

    // Without a worker there is nothing to run the check on: a clear UNAVAILABLE.
    cluster.workers[0].kill9();
    let admin = cluster.admin();
    wait_until(
        "the killed worker to leave the worker list",
        READY_TIMEOUT,
        || {
            let mut admin = admin.clone();
            async move {
                let workers = admin
                    .list_workers(v1::ListWorkersRequest {})
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner()
                    .workers;
                if workers.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} workers listed", workers.len()))
                }
            }
        },
    )
    .await;
    let refused = verify(&cluster, Source::Data(data))
        .await
        .expect_err("VerifyContent with no worker was expected to be refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("no connected worker"),
        "the refusal says a worker is needed: {refused:?}"
    );
}

#[tokio::test]
async fn a_broken_model_folder_is_reported_and_the_worker_serves_the_rest() {
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 0,
        ..ClusterOptions::default()
    })
    .await;
    // A good tiny Wan model (diffusers layout, made by models/oracle) and a broken one.
    let models = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/wan-tiny-a");
    copy_tree(&fixture, &models.path().join("wan-tiny-a"));
    copy_tree(&fixture, &models.path().join("broken"));
    std::fs::write(
        models.path().join("broken/transformer/config.json"),
        "{ not json",
    )
    .unwrap();
    cluster.add_worker_with_args(
        "worker-models",
        &["--models".to_string(), models.path().display().to_string()],
    );
    cluster
        .wait_workers_connected(&["worker-models".to_string()])
        .await;

    let workers = cluster
        .admin()
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let w = workers
        .iter()
        .find(|w| w.id == "worker-models")
        .expect("listed");
    let names: Vec<&str> = w.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["wan-tiny-a"]);
    assert_eq!(w.models[0].family, "wan2.1-t2v");
    assert!(w.models[0].parameters > 0);
    assert_eq!(w.broken_models.len(), 1);
    assert_eq!(w.broken_models[0].name, "broken");
    let problems = w.broken_models[0].problems.join("\n");
    assert!(
        problems.contains("broken/transformer/config.json") && problems.contains("JSON"),
        "{problems}"
    );

    // The worker is up and still renders reference jobs.
    let job = cluster.submit(spec("a ball beside a broken model")).await;
    cluster.wait_succeeded(&job.id).await;
    cluster.worker("worker-models").process.assert_alive();

    let (ok, stdout, stderr) = cli(&cluster, &["workers"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("model wan-tiny-a") && stdout.contains("BROKEN"),
        "{stdout}"
    );
}

/// What a CUDA worker says about its GPU at registration reaches ListWorkers and `reelfarm
/// workers` (text and JSON). The registration is made over the real WorkerService stream by
/// hand, as the CUDA worker sends it, because no GPU is at hand here; an oversized device
/// name is refused naming the field.
#[tokio::test]
async fn a_gpu_workers_device_is_listed_by_list_workers_and_the_cli() {
    use reelfarm_proto::v1::worker_service_client::WorkerServiceClient;
    use tokio_stream::wrappers::ReceiverStream;

    let mut cluster = Cluster::start(no_workers(&[])).await;
    let gpu = v1::GpuDevice {
        ordinal: 0,
        name: "NVIDIA H100 80GB HBM3".into(),
        uuid: "GPU-8f0e1a2b-3c4d-5e6f-7081-92a3b4c5d6e7".into(),
        compute_capability: "9.0".into(),
        total_memory_bytes: 85_520_809_984,
        free_memory_bytes: 84_987_740_160,
        driver_cuda_version: "12.8".into(),
    };
    let register = |id: &str, gpu: v1::GpuDevice| v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Register(v1::RegisterWorker {
            worker_id: id.into(),
            engine: "cuda".into(),
            gpu_model: gpu.name.clone(),
            gpu_memory_bytes: gpu.total_memory_bytes,
            free_memory_bytes: gpu.free_memory_bytes,
            slots: 1,
            gpu: Some(gpu),
            ..Default::default()
        })),
    };
    let Some(v1::worker_message::Body::Register(first)) =
        register("gpu-worker-0", gpu.clone()).body
    else {
        unreachable!()
    };
    let _session = cluster.register_by_hand(first).await;
    let listed = cluster
        .listed_worker("gpu-worker-0")
        .await
        .expect("the GPU worker is listed");
    assert_eq!(
        listed.gpu.as_ref(),
        Some(&gpu),
        "WorkerInfo.gpu as registered"
    );
    assert_eq!(
        (listed.engine.as_str(), listed.gpu_model.as_str()),
        ("cuda", gpu.name.as_str())
    );

    let (ok, stdout, stderr) = cli(&cluster, &["workers"]).await;
    assert!(ok, "reelfarm workers: {stderr}");
    assert!(
        stdout.contains("gpu 0 NVIDIA H100 80GB HBM3  compute 9.0  79.6 GiB")
            && stdout.contains(&gpu.uuid),
        "reelfarm workers shows the device: {stdout}"
    );
    let (ok, stdout, stderr) = cli(&cluster, &["--output", "json", "workers"]).await;
    assert!(ok, "reelfarm --output json workers: {stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("gpu-worker-0"))
        .expect("the worker's JSON line");
    let json: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(json["gpu"]["compute_capability"], "9.0", "{json}");
    assert_eq!(
        json["gpu"]["total_memory_bytes"], 85_520_809_984u64,
        "{json}"
    );

    // A device name no driver reports is a misbehaving worker: refused, naming the field.
    let mut client = WorkerServiceClient::connect(cluster.coordinator.url())
        .await
        .expect("WorkerService");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut bad = gpu.clone();
    bad.name = "x".repeat(300);
    tx.send(register("gpu-worker-1", bad)).await.unwrap();
    let refused = match client.session(ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(resp) => {
            let mut inbound = resp.into_inner();
            loop {
                match inbound.message().await {
                    Err(status) => break status,
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the oversized registration was accepted"),
                }
            }
        }
    };
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("register.gpu.name"),
        "{refused:?}"
    );
}

/// A worker that fails every attempt (it writes to another artifact store than the
/// coordinator's, so its results are refused and it cannot read other workers' outputs)
/// is excluded from a job after two failed attempts of it, and cordoned as unhealthy after
/// three across jobs; every job still succeeds on the healthy worker, `reelfarm workers`
/// says why the bad one is out, and `reelfarm uncordon` brings it back.
#[tokio::test]
async fn a_failing_worker_is_excluded_then_cordoned_as_unhealthy_and_jobs_still_succeed() {
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 1,
        coordinator_args: [
            "--exclude-worker-after",
            "2",
            "--unhealthy-after",
            "3",
            "--max-attempts",
            "20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    })
    .await;
    let elsewhere = tempfile::tempdir().unwrap();
    cluster.add_worker_with_args(
        "worker-bad",
        &[
            "--artifacts".to_string(),
            elsewhere.path().display().to_string(),
        ],
    );
    cluster
        .wait_workers_connected(&["worker-bad".to_string()])
        .await;

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            cluster
                .submit(spec(&format!("a red ball, take {i}")))
                .await
                .id,
        );
    }
    for id in &ids {
        let job = cluster.wait_succeeded(id).await;
        for t in &job.task_details {
            assert_eq!(
                t.worker_id,
                "worker-0",
                "every task was done by the healthy worker: {}",
                describe(&job)
            );
        }
    }
    let bad = cluster
        .listed_worker("worker-bad")
        .await
        .expect("the bad worker is still connected");
    assert!(
        bad.cordoned && bad.health.starts_with("unhealthy: 3 failed attempts"),
        "cordoned as unhealthy: {bad:?}"
    );
    assert!(
        cluster
            .etcd_keys("cordons/")
            .await
            .iter()
            .any(|k| k.ends_with("worker-bad")),
        "the unhealthy mark is a durable cordon"
    );
    let (ok, stdout, _) = cli(&cluster, &["workers"]).await;
    assert!(
        ok && stdout.contains("unhealthy: 3 failed attempts"),
        "reelfarm workers says why: {stdout}"
    );
    let (ok, stdout, stderr) = cli(&cluster, &["uncordon", "worker-bad"]).await;
    assert!(ok, "reelfarm uncordon worker-bad: {stdout} {stderr}");
    let bad = cluster.listed_worker("worker-bad").await.unwrap();
    assert!(!bad.cordoned && bad.health.is_empty(), "{bad:?}");
}

/// A model job for a model that fits no live worker's GPU is accepted (a worker lists the
/// model) and says at once, over the real API, why it waits.
#[tokio::test]
async fn a_model_too_large_for_every_gpu_says_so_in_waiting() {
    let mut cluster = Cluster::start(no_workers(&[])).await;
    let _session = cluster
        .register_by_hand(v1::RegisterWorker {
            worker_id: "gpu-small".into(),
            engine: "cuda".into(),
            slots: 1,
            models: vec![v1::ServedModel {
                name: "wan-14b".into(),
                family: "wan2.1-t2v".into(),
                parameters: 14_000_000_000,
                dtypes: vec!["BF16".into()],
                weight_bytes: 28 << 30,
                ..Default::default()
            }],
            gpu: Some(v1::GpuDevice {
                name: "NVIDIA L4".into(),
                compute_capability: "8.9".into(),
                total_memory_bytes: 24 << 30,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let job = cluster
        .submit(v1::JobSpec {
            prompt: "a robot dancing".into(),
            model: "wan-14b".into(),
            duration_seconds: 0.75,
            fps: 12,
            width: 64,
            height: 64,
            steps: 2,
            ..Default::default()
        })
        .await;
    let waiting = wait_until(
        "the job was expected to say why it waits",
        std::time::Duration::from_secs(10),
        || {
            let mut jobs = cluster.jobs();
            let id = job.id.clone();
            async move {
                let j = jobs
                    .get_job(v1::GetJobRequest { id })
                    .await
                    .expect("GetJob")
                    .into_inner()
                    .job
                    .expect("the job");
                if j.waiting.contains("needs about") {
                    Ok(j.waiting)
                } else {
                    Err(j.waiting)
                }
            }
        },
    )
    .await;
    assert!(
        waiting.contains("model \"wan-14b\" needs about 33.6 GiB")
            && waiting.contains("at most 24.0 GiB"),
        "{waiting}"
    );
}
