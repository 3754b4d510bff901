//! Model jobs end to end: a coordinator, a reference worker and a worker serving a tiny
//! random Wan 2.1 model (the diffusers folder models/oracle saved), as separate processes
//! over real gRPC with etcd. A model job comes back as an MP4 that ffprobe accepts with the
//! frame count and size the model's rules gave it; A/B variants of one prompt encode the
//! text once; a physics-guided job follows its plan; an unknown model is refused at
//! submission, as the README says.

mod common;

use common::*;
use reelfarm_proto::v1;
use tonic::Code;

const MODEL: &str = "wan-tiny";

fn model_spec(prompt: &str, seed: u64) -> v1::JobSpec {
    v1::JobSpec {
        prompt: prompt.into(),
        model: MODEL.into(),
        negative_prompt: "blurry, static".into(),
        // 0.7 s at 12 fps = 8 frames, and 72 px: both off the model's rules on purpose.
        duration_seconds: 0.7,
        fps: 12,
        width: 72,
        height: 64,
        seed: Some(seed),
        steps: 3,
        ..Default::default()
    }
}

async fn model_cluster(models: &tempfile::TempDir) -> Cluster {
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 1,
        ..ClusterOptions::default()
    })
    .await;
    cluster.add_worker_with_args(
        "worker-gpu",
        &["--models".to_string(), models.path().display().to_string()],
    );
    cluster
        .wait_workers_connected(&["worker-gpu".to_string()])
        .await;
    cluster
}

/// (frames, width, height) of the MP4's video stream by decoding it, and whether it has
/// an audio stream.
async fn probe(path: &std::path::Path) -> ((u64, u64, u64), bool) {
    require_tool("ffprobe");
    let out = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .await
        .expect("running ffprobe");
    assert!(
        out.status.success(),
        "ffprobe was expected to accept {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    let frames = video["nb_read_frames"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("frames counted");
    let size = (
        frames,
        video["width"].as_u64().unwrap(),
        video["height"].as_u64().unwrap(),
    );
    (size, streams.iter().any(|s| s["codec_type"] == "audio"))
}

fn output<'a>(job: &'a v1::Job, kind: &str) -> &'a v1::Output {
    job.outputs
        .iter()
        .find(|o| o.kind == kind)
        .unwrap_or_else(|| panic!("a SUCCEEDED job lists its {kind}: {}", describe(job)))
}

/// Files under the artifact store whose name contains `part`.
fn stored_files(dir: &std::path::Path, part: &str) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(part))
            {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn model_jobs_render_mp4s_share_text_encodings_and_follow_the_physics_guide() {
    let models = tiny_models_folder(MODEL);
    let mut cluster = model_cluster(&models).await;

    // One job, adjusted to the model's rules and recorded as such.
    let job = cluster
        .submit(model_spec("a robot dancing in a cyberpunk city", 1))
        .await;
    let spec = job.spec.clone().expect("the filled-in spec");
    assert_eq!(
        job.adjustments.len(),
        2,
        "frames and width adjusted: {:?}",
        job.adjustments
    );
    assert!(
        job.adjustments[0].starts_with("frames: 8 -> 9"),
        "{:?}",
        job.adjustments
    );
    assert!(
        job.adjustments[1].starts_with("width: 72 -> 80"),
        "{:?}",
        job.adjustments
    );
    assert_eq!((spec.width, spec.height), (80, 64));
    assert_eq!(
        spec.sampler,
        v1::Sampler::Unipc as i32,
        "a model job's default"
    );
    assert_eq!(spec.guidance_scale, Some(5.0));

    // A/B variants of another prompt, and a physics-guided job, in one batch.
    let batch = cluster
        .jobs()
        .submit_batch(v1::SubmitBatchRequest {
            jobs: [2, 3, 4]
                .map(|seed| v1::SubmitJobRequest {
                    spec: Some(model_spec("a red ball bouncing", seed)),
                    ..Default::default()
                })
                .into_iter()
                .chain(std::iter::once(v1::SubmitJobRequest {
                    spec: Some(v1::JobSpec {
                        guide: true,
                        guide_strength: Some(0.5),
                        ..model_spec("two balls colliding", 5)
                    }),
                    ..Default::default()
                }))
                .collect(),
        })
        .await
        .expect("batch accepted")
        .into_inner()
        .jobs;

    let done = cluster.wait_succeeded(&job.id).await;
    let kinds: Vec<v1::TaskKind> = done.task_details.iter().map(task_kind).collect();
    assert_eq!(
        kinds,
        [
            v1::TaskKind::Plan,
            v1::TaskKind::TextEncode,
            v1::TaskKind::Denoise,
            v1::TaskKind::Decode,
            v1::TaskKind::Audio,
            v1::TaskKind::Assemble
        ],
        "{}",
        describe(&done)
    );
    for t in done.task_details.iter().filter(|t| {
        matches!(
            task_kind(t),
            v1::TaskKind::TextEncode | v1::TaskKind::Denoise | v1::TaskKind::Decode
        )
    }) {
        assert_eq!(
            t.worker_id, "worker-gpu",
            "model tasks run where the model is"
        );
    }
    let video = output_path(&output(&done, "video").uri).to_path_buf();
    assert_eq!(
        probe(&video).await,
        ((9, 80, 64), true),
        "9 frames of 80x64 with audio"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(output_path(&output(&done, "manifest").uri)).unwrap(),
    )
    .unwrap();
    let m = &manifest["manifest"];
    assert_eq!(m["model"], MODEL, "{manifest}");
    assert_eq!(m["frames"], 9);
    let open = &m["open_model"];
    assert_eq!(open["family"], "wan2.1-t2v");
    assert_eq!(open["steps"], 3);
    assert_eq!(open["negative_prompt"], "blurry, static");
    let weights = open["weights_sha256"].as_str().unwrap_or_default();
    assert!(
        weights.len() == 64 && weights.bytes().all(|b| b.is_ascii_hexdigit()),
        "{manifest}"
    );
    // The farm's content check recognises the clip.
    let verified = cluster
        .jobs()
        .verify_content(v1::VerifyContentRequest {
            source: Some(v1::verify_content_request::Source::Data(
                std::fs::read(&video).unwrap(),
            )),
        })
        .await
        .expect("checked")
        .into_inner();
    assert!(verified.ours && verified.manifest_valid, "{verified:?}");
    assert_eq!(verified.job_id, done.id);

    for j in &batch {
        let finished = cluster.wait_succeeded(&j.id).await;
        let video = output_path(&output(&finished, "video").uri).to_path_buf();
        assert_eq!(
            probe(&video).await.0,
            (9, 80, 64),
            "{}",
            describe(&finished)
        );
    }
    // The three variants share one text encoding: 3 texts were encoded in all (the single
    // job, the variants, the guided job), not 5.
    let texts = stored_files(&cluster.artifacts, "text.t");
    assert_eq!(texts.len(), 3, "{texts:?}");

    // The guided job followed its plan: its scene is the simulated one.
    let guided = cluster.wait_succeeded(&batch[3].id).await;
    assert!(guided.scene.contains("ball"), "{}", guided.scene);
    let guided_spec = guided.spec.expect("spec");
    assert!(guided_spec.guide);
    assert_eq!(guided_spec.guide_strength, Some(0.5));
    cluster.worker("worker-gpu").process.assert_alive();

    // The worker said what it holds loaded (WorkerStatus), for warm placement.
    let gpu = cluster.listed_worker("worker-gpu").await.expect("listed");
    assert_eq!(
        gpu.resident
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        [MODEL],
        "{gpu:?}"
    );
    assert!(gpu.resident[0].weight_bytes > 0, "{gpu:?}");
}

#[tokio::test]
async fn a_job_for_a_model_no_live_worker_serves_is_refused_and_nothing_is_stored() {
    let models = tiny_models_folder(MODEL);
    let cluster = model_cluster(&models).await;
    let before = cluster
        .jobs()
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len();
    let refused = cluster
        .jobs()
        .submit_job(v1::SubmitJobRequest {
            spec: Some(v1::JobSpec {
                model: "wan-typo".into(),
                ..model_spec("a robot", 1)
            }),
            ..Default::default()
        })
        .await
        .expect_err("unknown model refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("spec.model")
            && refused.message().contains("wan-typo")
            && refused.message().contains(MODEL),
        "names the field, the model and what is served: {refused:?}"
    );
    // In a batch the field path names the entry, and nothing of the batch is stored.
    let refused = cluster
        .jobs()
        .submit_batch(v1::SubmitBatchRequest {
            jobs: vec![
                v1::SubmitJobRequest {
                    spec: Some(model_spec("a robot", 1)),
                    ..Default::default()
                },
                v1::SubmitJobRequest {
                    spec: Some(v1::JobSpec {
                        model: "wan-typo".into(),
                        ..model_spec("a robot", 2)
                    }),
                    ..Default::default()
                },
            ],
        })
        .await
        .expect_err("unknown model refused");
    assert!(
        refused.message().contains("jobs[1].spec.model"),
        "{refused:?}"
    );
    // Bad model parameters are INVALID_ARGUMENT naming the field.
    let refused = cluster
        .jobs()
        .submit_job(v1::SubmitJobRequest {
            spec: Some(v1::JobSpec {
                guidance_scale: Some(50.0),
                ..model_spec("a robot", 1)
            }),
            ..Default::default()
        })
        .await
        .expect_err("bad guidance refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("spec.guidance_scale"),
        "{refused:?}"
    );
    let after = cluster
        .jobs()
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len();
    assert_eq!(before, after, "no job was stored");
}

/// A model whose weights are broken after the worker's start-up check (which reads only
/// the safetensors headers) fails its job on the first attempt, not after five: the worker
/// reports the load error as permanent, and the job says why with `error_code`.
#[tokio::test]
async fn a_model_that_cannot_load_fails_its_job_at_once_with_a_code() {
    let models = tiny_models_folder(MODEL);
    let cluster = model_cluster(&models).await;
    // Truncate the transformer's tensor data, keeping its header: the start-up check
    // passed, loading now cannot.
    let weights = models
        .path()
        .join(MODEL)
        .join("transformer/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    std::fs::write(&weights, &bytes[..header + (bytes.len() - header) / 2]).unwrap();

    let job = cluster.submit(model_spec("a red ball", 3)).await;
    let job = cluster.wait_terminal(&job.id).await;
    assert_eq!(state(&job), v1::JobState::Failed, "{}", describe(&job));
    assert_eq!(job.error_code, "model_load", "{}", job.error);
    assert!(
        job.error.contains("permanent") && job.error.contains("model load"),
        "{}",
        job.error
    );
    let failed: Vec<_> = job.task_details.iter().filter(|t| t.failures > 0).collect();
    assert_eq!(failed.len(), 1, "one task failed: {}", describe(&job));
    assert_eq!(
        (failed[0].failures, failed[0].attempt),
        (1, 1),
        "on its first attempt, not retried: {}",
        describe(&job)
    );
}

/// A model job whose DENOISE runs long enough to interrupt: 200 steps of a 17-frame
/// 128×128 clip (about 5 s of the tiny model here), checkpointed every 10 steps.
fn long_denoise_spec(prompt: &str, seed: u64, priority: v1::Priority) -> v1::JobSpec {
    v1::JobSpec {
        duration_seconds: 17.0 / 12.0,
        width: 128,
        height: 128,
        steps: 200,
        priority: priority as i32,
        ..model_spec(prompt, seed)
    }
}

const CHECKPOINT_EVERY: &str = "10";

fn denoise_task(job: &v1::Job) -> &v1::TaskView {
    job.task_details
        .iter()
        .find(|t| task_kind(t) == v1::TaskKind::Denoise)
        .unwrap_or_else(|| panic!("a model job has a DENOISE task: {}", describe(job)))
}

/// The sha256 of the latents a finished DENOISE committed.
fn latents_sha256(job: &v1::Job) -> String {
    let t = denoise_task(job);
    t.outputs
        .iter()
        .find(|o| o.kind == "latents")
        .unwrap_or_else(|| panic!("a done DENOISE lists its latents: {}", describe(job)))
        .sha256
        .clone()
}

/// A model worker that checkpoints every [`CHECKPOINT_EVERY`] steps.
fn add_model_worker(cluster: &mut Cluster, id: &str, models: &tempfile::TempDir) {
    cluster.add_worker_with_args(
        id,
        &[
            "--models".to_string(),
            models.path().display().to_string(),
            "--checkpoint-every-steps".to_string(),
            CHECKPOINT_EVERY.to_string(),
        ],
    );
}

#[tokio::test]
async fn a_denoise_resumes_from_its_checkpoint_after_its_worker_and_the_coordinator_are_killed_and_equals_an_uninterrupted_run(
) {
    let models = tiny_models_folder(MODEL);
    // One reference worker (it cannot run the model's tasks) and one model worker.
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 1,
        ..ClusterOptions::default()
    })
    .await;
    add_model_worker(&mut cluster, "gpu-a", &models);
    cluster.wait_workers_connected(&["gpu-a".to_string()]).await;

    let spec = long_denoise_spec("a red ball bouncing", 21, v1::Priority::Normal);
    let job = cluster.submit(spec.clone()).await;
    let at_kill = cluster
        .wait_job(&job.id, "a durable DENOISE checkpoint", |j| {
            j.task_details.iter().any(|t| {
                task_kind(t) == v1::TaskKind::Denoise && t.checkpoint_step >= 10 && is_active(t)
            })
        })
        .await;
    cluster.worker("gpu-a").process.kill9();
    let checkpoint = denoise_task(&at_kill).checkpoint_step;
    // The checkpoint is in etcd, not only in the coordinator's memory (one record per
    // task, replaced by each later checkpoint).
    let prefix = format!("checkpoints/{}/", job.id);
    let stored = wait_until(
        "the checkpoint in etcd",
        std::time::Duration::from_secs(10),
        || async {
            let keys = cluster.etcd_keys(&prefix).await;
            let [key] = keys.as_slice() else {
                return Err(format!("keys {keys:?}"));
            };
            let sub = key
                .split_once(&format!("/{}/", cluster.name))
                .map_or("", |(_, s)| s)
                .to_string();
            match cluster.etcd_json(&sub).await {
                Some(v) if v["step"].as_u64().unwrap_or(0) >= u64::from(checkpoint) => Ok(v),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let stored_step = stored["step"].as_u64().unwrap() as u32;
    // The coordinator dies too: the new one knows the checkpoint from etcd alone.
    cluster.coordinator.restart().await;

    add_model_worker(&mut cluster, "gpu-b", &models);
    let done = cluster.wait_succeeded(&job.id).await;
    let denoise = denoise_task(&done);
    assert!(
        denoise.resumed_from_step == stored_step,
        "the new leader's attempt resumed at step {} (stored checkpoint {stored_step}, {checkpoint} seen when the worker was killed): {}",
        denoise.resumed_from_step,
        describe(&done)
    );
    assert_eq!(denoise.worker_id, "gpu-b");
    assert!(
        cluster
            .worker("gpu-b")
            .process
            .log()
            .contains("resuming the denoise from its checkpoint"),
        "the worker says it resumed"
    );

    // The same spec again, uninterrupted on the same engine: the same latents, bit for bit.
    let again = cluster.submit(spec).await;
    let again = cluster.wait_succeeded(&again.id).await;
    assert_eq!(denoise_task(&again).resumed_from_step, 0);
    assert_eq!(
        latents_sha256(&done),
        latents_sha256(&again),
        "a resumed denoise equals an uninterrupted one"
    );
}

#[tokio::test]
async fn a_high_job_preempts_a_running_low_denoise_which_resumes_from_its_checkpoint() {
    let models = tiny_models_folder(MODEL);
    // No reference worker: the model worker's one slot is all there is, so HIGH work
    // finds no free slot while the LOW denoise runs. Every HIGH task may preempt (no
    // interval), so the HIGH job's chain of tasks never waits behind the LOW one.
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 0,
        coordinator_args: vec![
            "--preemption".into(),
            "low-for-high".into(),
            "--preemption-min-interval-seconds".into(),
            "0".into(),
        ],
    })
    .await;
    add_model_worker(&mut cluster, "gpu-a", &models);
    cluster.wait_workers_connected(&["gpu-a".to_string()]).await;

    let low_spec = long_denoise_spec("a slow blue cube", 5, v1::Priority::Low);
    let low = cluster.submit(low_spec.clone()).await;
    cluster
        .wait_job(&low.id, "the LOW denoise running", |j| {
            let t = denoise_task(j);
            is_active(t) && t.progress > 0.05
        })
        .await;
    let high = cluster
        .submit(v1::JobSpec {
            priority: v1::Priority::High as i32,
            ..model_spec("a quick red ball", 9)
        })
        .await;
    let high = cluster.wait_succeeded(&high.id).await;
    let low_then = cluster
        .jobs()
        .get_job(v1::GetJobRequest { id: low.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert!(
        !is_terminal(&low_then),
        "the HIGH job finished while the LOW one still runs:\nHIGH {}\nLOW {}",
        describe(&high),
        describe(&low_then)
    );
    let low = cluster.wait_succeeded(&low.id).await;
    let denoise = denoise_task(&low);
    assert!(
        denoise.preemptions >= 1 && denoise.resumed_from_step > 0,
        "the LOW denoise was preempted and resumed from its checkpoint: {}",
        describe(&low)
    );
    assert_eq!(denoise.failures, 0, "a preemption is not a failure");
    let metrics = http_get(&cluster.coordinator.http_addr(), "/metrics")
        .unwrap()
        .1;
    assert!(
        sample_sum(&metrics, "reelfarm_preemptions_total", "").unwrap_or(0.0) >= 1.0,
        "counted"
    );

    // Uninterrupted (nothing HIGH waits now): the same latents, bit for bit.
    let again = cluster.submit(low_spec).await;
    let again = cluster.wait_succeeded(&again.id).await;
    assert_eq!(denoise_task(&again).preemptions, 0);
    assert_eq!(latents_sha256(&low), latents_sha256(&again));
}

#[tokio::test]
async fn a_worker_keeps_several_models_resident_within_its_budget_most_recent_first() {
    let models = tiny_models_folder("wan-a");
    copy_tree(&models.path().join("wan-a"), &models.path().join("wan-b"));
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 0,
        ..ClusterOptions::default()
    })
    .await;
    cluster.add_worker_with_args(
        "gpu-a",
        &[
            "--models".to_string(),
            models.path().display().to_string(),
            "--model-memory-gib".to_string(),
            "1".to_string(),
        ],
    );
    cluster.wait_workers_connected(&["gpu-a".to_string()]).await;
    for (model, seed) in [("wan-a", 1), ("wan-b", 2)] {
        let job = cluster
            .submit(v1::JobSpec {
                model: model.into(),
                ..model_spec("a red ball", seed)
            })
            .await;
        cluster.wait_succeeded(&job.id).await;
    }
    let w = wait_until(
        "both models listed resident",
        std::time::Duration::from_secs(10),
        || async {
            let w = cluster.listed_worker("gpu-a").await.expect("listed");
            if w.resident.len() == 2 {
                Ok(w)
            } else {
                Err(format!("{:?}", w.resident))
            }
        },
    )
    .await;
    let names: Vec<&str> = w.resident.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["wan-b", "wan-a"], "most recently used first");
    assert!(w.resident.iter().all(|r| r.memory == "host"));
    assert_eq!(w.model_memory_budget_bytes, 1 << 30);
}

/// A model worker that batches `max_batch` DENOISE tasks in its one slot (the harness
/// starts workers with one), waiting up to 5 s for a batch to fill.
fn add_batching_worker(
    cluster: &mut Cluster,
    id: &str,
    models: &tempfile::TempDir,
    max_batch: u32,
) {
    cluster.add_worker_with_args(
        id,
        &[
            "--models".to_string(),
            models.path().display().to_string(),
            "--max-batch".to_string(),
            max_batch.to_string(),
            "--max-queue-delay-ms".to_string(),
            "5000".to_string(),
        ],
    );
}

#[tokio::test]
async fn denoise_tasks_of_several_jobs_run_as_one_batch_and_equal_their_unbatched_runs() {
    let models = tiny_models_folder(MODEL);
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 1,
        ..ClusterOptions::default()
    })
    .await;
    add_batching_worker(&mut cluster, "gpu-batch", &models, 3);
    cluster
        .wait_workers_connected(&["gpu-batch".to_string()])
        .await;
    let listed = cluster.listed_worker("gpu-batch").await.expect("listed");
    assert_eq!(listed.max_queue_delay_ms, 5000, "{listed:?}");
    assert_eq!(listed.models[0].max_batch, 3, "{listed:?}");

    // Three jobs of one shape and step count, different seeds and guidance: one batch.
    let specs: Vec<v1::JobSpec> = (0..3)
        .map(|i| v1::JobSpec {
            guidance_scale: Some([5.0, 1.0, 3.0][i]),
            ..model_spec("a red ball bouncing", 40 + i as u64)
        })
        .collect();
    let mut batched = Vec::new();
    for spec in &specs {
        batched.push(cluster.submit(spec.clone()).await.id);
    }
    let mut batched_latents = Vec::new();
    for id in &batched {
        let done = cluster.wait_succeeded(id).await;
        assert_eq!(
            denoise_task(&done).batch_size,
            3,
            "the DENOISE ran in a batch of three: {}",
            describe(&done)
        );
        batched_latents.push(latents_sha256(&done));
    }
    let metrics = http_get(&cluster.coordinator.http_addr(), "/metrics")
        .unwrap()
        .1;
    assert_eq!(
        sample_sum(&metrics, "reelfarm_batches_dispatched_total", ""),
        Some(1.0),
        "one batch dispatched"
    );
    let worker_metrics = http_get(&cluster.worker("gpu-batch").http_addr(), "/metrics")
        .unwrap()
        .1;
    assert_eq!(
        sample_sum(
            &worker_metrics,
            "reelfarm_worker_denoise_batch_size_sum",
            ""
        ),
        Some(3.0),
        "the worker ran one batch of three"
    );
    assert!(cluster
        .worker("gpu-batch")
        .process
        .log()
        .contains("running a batch"));

    // The same jobs on a worker that does not batch: the same latents, bit for bit.
    cluster.worker("gpu-batch").kill9();
    add_batching_worker(&mut cluster, "gpu-solo", &models, 1);
    cluster
        .wait_workers_connected(&["gpu-solo".to_string()])
        .await;
    for (spec, latents) in specs.iter().zip(&batched_latents) {
        let job = cluster.submit(spec.clone()).await;
        let done = cluster.wait_succeeded(&job.id).await;
        let denoise = denoise_task(&done);
        assert_eq!(denoise.worker_id, "gpu-solo", "{}", describe(&done));
        assert_eq!(denoise.batch_size, 1);
        assert_eq!(
            &latents_sha256(&done),
            latents,
            "a batched denoise equals the clip rendered alone"
        );
    }
}
