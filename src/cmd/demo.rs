//! `reelfarm demo PROMPT`: a whole farm in this process — an in-memory coordinator and
//! several workers talking real gRPC over loopback — runs one job and prints what it wrote.
//! Needs no external service.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reelfarm_artifacts::StoreConfig;
use reelfarm_proto::v1;
use tokio_util::sync::CancellationToken;

use super::spec_args::SpecArgs;
use crate::output::{self, Format};

/// How long the demo waits for its workers to connect.
const WORKERS_TIMEOUT: Duration = Duration::from_secs(15);

pub struct DemoArgs {
    pub spec: SpecArgs,
    pub workers: u32,
    pub out: PathBuf,
}

pub async fn run(args: DemoArgs, format: Format) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=64).contains(&args.workers),
        "--workers must be 1..=64, got {}",
        args.workers
    );
    std::fs::create_dir_all(&args.out).with_context(|| format!("--out {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let shutdown = CancellationToken::new();
    let loopback = "127.0.0.1:0".parse().expect("static address");

    let coordinator = reelfarm_coordinator::start(
        reelfarm_coordinator::Config::in_process(
            "demo".into(),
            vec![],
            StoreConfig::local(&out),
            100,
        ),
        shutdown.clone(),
    )
    .await?;
    // Without etcd the coordinator is the only replica and leads before start returns.
    let scheduler = coordinator
        .scheduler()
        .context("the embedded coordinator is not leading")?;
    let address = format!("http://{}", coordinator.grpc_addr);
    let mut workers = Vec::new();
    for i in 0..args.workers {
        workers.push(
            reelfarm_worker::start(
                reelfarm_worker::Config {
                    coordinator: vec![address.clone()],
                    etcd: vec![],
                    etcd_security: Default::default(),
                    cluster: "demo".into(),
                    id: Some(format!("demo-worker-{i}")),
                    engine: reelfarm_worker::config::EngineChoice::Auto,
                    gpu: 0,
                    slots: 1,
                    artifacts: StoreConfig::local(&out),
                    http_listen: loopback,
                    lease_ttl: 10,
                    drain_timeout: 30,
                    farm_secret: Some(reelfarm_worker::config::DEV_FARM_SECRET.into()),
                    models: None,
                    model_memory_gib: None,
                    checkpoint_every_steps: 5,
                    max_batch: 1,
                    max_queue_delay_ms: 0,
                    join_token_file: None,
                    ca_cert: None,
                    tls_cert: None,
                    tls_key: None,
                    checkpoint_every_seconds: 120,
                    log_json: false,
                },
                shutdown.clone(),
            )
            .await?,
        );
    }
    let deadline = Instant::now() + WORKERS_TIMEOUT;
    while scheduler.workers().len() < args.workers as usize {
        anyhow::ensure!(
            Instant::now() < deadline,
            "workers did not connect within {WORKERS_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if format == Format::Text {
        eprintln!(
            "reelfarm demo: coordinator on {} (metrics http://{}/metrics), {} workers, artifacts in {}",
            coordinator.grpc_addr,
            coordinator.http_addr,
            args.workers,
            out.display()
        );
    }

    let started = Instant::now();
    let mut client = crate::client::jobs(&crate::client::Target::local(&address)).await?;
    let job = client
        .submit_job(v1::SubmitJobRequest {
            spec: Some(args.spec.to_proto()),
            idempotency_key: String::new(),
        })
        .await
        .context("SubmitJob")?
        .into_inner()
        .job
        .context("no job")?;
    let job = super::watch::follow(&mut client, &job.id, format).await?;
    let seconds = started.elapsed().as_secs_f64();

    if format == Format::Text {
        let spec = job.spec.clone().unwrap_or_default();
        println!(
            "job {} {} in {:.1} s ({} frames of {}x{} at {} fps, {} steps, seed {})",
            job.id,
            v1::JobState::try_from(job.state)
                .map(|s| s.as_str_name())
                .unwrap_or("?"),
            seconds,
            (spec.duration_seconds * f64::from(spec.fps)).round(),
            spec.width,
            spec.height,
            spec.fps,
            spec.steps,
            spec.seed.unwrap_or_default()
        );
        for t in &job.task_details {
            println!(
                "  {:<12} frames {:>4}..{:<4} on {}",
                t.id, t.frame_start, t.frame_end, t.worker_id
            );
        }
        println!("wrote:");
        for o in &job.outputs {
            println!("  {:<9} {}", o.kind, o.uri.trim_start_matches("file://"));
        }
        if let Some(video) = job.outputs.iter().find(|o| o.kind == "video") {
            let v = client
                .verify_content(v1::VerifyContentRequest {
                    source: Some(v1::verify_content_request::Source::Uri(video.uri.clone())),
                })
                .await
                .context("VerifyContent")?
                .into_inner();
            println!(
                "provenance: ours={} job={} watermark confidence {:.2}, signed manifest valid={}",
                v.ours, v.job_id, v.watermark_confidence, v.manifest_valid
            );
        }
    } else {
        println!("{}", output::job_json(&job));
    }
    shutdown.cancel();
    for w in workers {
        w.stop().await;
    }
    coordinator.stop().await;
    super::watch::exit_status(&job)
}
