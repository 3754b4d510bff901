//! `reelfarm bench farm`: the real coordinator's scheduling, replayed from a trace against
//! simulated GPU workers, under two placement policies in the same run.
//!
//! A coordinator runs in this process (memory state, or etcd with `--etcd`), as in `bench
//! sched`; simulated workers ([`sim`]) speak the real WorkerService stream to it over
//! loopback: they register their GPU (memory, the trace's models, what they hold loaded),
//! take assignments, load models into an LRU pool bounded by their memory, report step
//! progress and checkpoints, answer preemptions and send results; no diffusion runs. Jobs
//! are submitted over JobService as the trace says (after every worker registered: the
//! coordinator refuses a model no connected worker serves), and workers are killed (their
//! stream dropped) and come back as it says. Time is compressed: `--time-scale S` runs S
//! simulated seconds per wall second, and the coordinator's time knobs are scaled the same
//! way (`--affinity-wait-ms` = the trace's `affinity_wait_s` × 1000 / S,
//! `--preemption-min-interval-seconds` = the trace's interval / S, rounded to whole
//! seconds as the flag takes them). Its fixed internal periods are not scaled (see
//! [`UNSCALED`]); the report says what they come to in simulated time.
//!
//! Policies (`--policies`, default `farm,round-robin`):
//! - `farm`: the farm's placement as deployed: warm affinity (the trace's wait), preemption
//!   `low-for-high`, checkpoints every K steps;
//! - `round-robin`: affinity wait 0, preemption off (assignments go round-robin over free
//!   workers, by priority and fair share as always); the workers still checkpoint;
//! - `farm-no-preemption`: warm affinity, preemption off (separates the two effects).
//!
//! What is measured and against which bound is in [`analysis`]; the goals are printed beside
//! the figures, met or not.
//!
//! # The trace (JSON)
//!
//! ```json
//! {
//!   "name": "farm-small",
//!   "description": "what it models",
//!   "seed": 7,                            // the choice of killed workers
//!   "time_scale": 60,                     // simulated s per wall s (--time-scale overrides)
//!   "checkpoint_every_steps": 5,          // the workers' K
//!   "checkpoint_cost_s": 0.5,             // a checkpoint's write, simulated s
//!   "affinity_wait_s": 20,                // --affinity-wait-ms of the farm policy (scaled)
//!   "preemption_min_interval_s": 300,     // --preemption-min-interval-seconds (scaled)
//!   "cpu_task_s": {"plan": 1, "audio": 2, "assemble": 2},
//!   "cpu_workers": {"count": 2, "slots": 32},   // run PLAN, AUDIO, ASSEMBLE
//!   "models": [{"name": "wan-1.3b", "weight_gb": 2.8, "parameters_b": 1.3, "load_s": 8,
//!               "step_s_per_10k_tokens": 0.5, "text_s": 1, "decode_s_per_mpixel_frame": 0.35}],
//!   "gpus": [{"memory_gib": 24, "count": 20}, {"memory_gib": 80, "count": 8}],
//!   "tenants": [{"name": "ads", "weight": 3}, {"name": "crm", "weight": 1}],
//!   "bursts": [{"at_s": 0, "over_s": 60, "tenant": "ads", "priority": "normal", "audio": true,
//!               "jobs": [{"model": "wan-1.3b", "frames": 49, "width": 832, "height": 480,
//!                         "steps": 30, "count": 40}]}],
//!   "kills": [{"at_s": 600, "workers": 2, "down_s": 120}]
//! }
//! ```
//!
//! A job of F frames (4k+1, at 16 fps) of W×H pixels has ((F−1)/4+1)·(H/16)·(W/16) latent
//! tokens (Wan 2.1's VAE and patching); a denoising step takes `step_s_per_10k_tokens` per
//! 10,000 of them, the decode `decode_s_per_mpixel_frame` per megapixel-frame, the text
//! encoding `text_s`; a model not resident costs `load_s` first. Workers register the
//! models in the trace's order (the coordinator offers a worker its models' queues in the
//! order it listed them, so the order matters). A GPU of M GiB serves a model whose
//! weights and a fifth more fit M (the coordinator's memory fit) and keeps models resident
//! up to four fifths of M of weights (the real worker's default pool), evicting the least
//! recently used. A burst's jobs arrive evenly over `over_s`, its
//! shapes interleaved; priority is `low`, `normal` or `high`. A kill drops the streams of
//! `workers` GPU workers at `at_s` (those running a DENOISE first, chosen with `seed`);
//! each registers again, with nothing loaded, `down_s` later.

pub mod analysis;
pub mod sim;
pub mod trace;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use reelfarm_proto::v1;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::sched::{poll_until, InProcess, ThreadsCpu, COORDINATOR_THREADS};
use crate::output::Format;
use sim::{Clock, Fleet, SimContext, WorkerSpec};
use trace::{Trace, TraceJob};

/// The coordinator's fixed periods, which no flag scales: (name, wall seconds).
pub const UNSCALED: [(&str, f64); 2] = [
    // server.rs WATCHDOG_TICK: dispatch runs at least this often with no other event (an
    // expired affinity wait is noticed then at the latest).
    ("watchdog_tick", 0.5),
    // farm/preemption.rs SCAN_INTERVAL: the least time between two scans for a victim.
    ("preemption_scan_interval", 0.2),
];

/// SubmitJob calls in flight at most.
const SUBMITS_IN_FLIGHT: usize = 64;
/// How long the simulated workers may take to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// A submission refused because no connected worker serves its model (all of them killed
/// at that moment) is sent again after this many simulated seconds, at most this often.
const RESUBMIT_AFTER_S: f64 = 5.0;
const RESUBMIT_TRIES: u32 = 1000;

#[derive(clap::Args, Debug)]
pub struct FarmArgs {
    /// The trace (JSON; its format is in BENCHMARKS.md, "bench farm").
    #[arg(long, default_value = "bench/traces/farm-small.json")]
    pub trace: PathBuf,
    /// Simulated seconds per wall-clock second (default: the trace's `time_scale`).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Policies, one run each on the same trace: farm, round-robin, farm-no-preemption.
    #[arg(long, value_delimiter = ',', default_value = "farm,round-robin",
          value_parser = ["farm", "round-robin", "farm-no-preemption"])]
    pub policies: Vec<String>,
    /// etcd endpoint for the coordinator's state (default: in memory).
    #[arg(long)]
    pub etcd: Option<String>,
    /// Wall seconds a run may take before it is reported as timed out.
    #[arg(long, default_value_t = 1800)]
    pub max_wall_seconds: u64,
}

/// A placement policy: the coordinator's knobs it sets.
#[derive(Clone, Copy, Debug)]
struct Policy {
    name: &'static str,
    affinity: bool,
    preemption: bool,
}

impl Policy {
    fn named(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "farm" => Self {
                name: "farm",
                affinity: true,
                preemption: true,
            },
            "round-robin" => Self {
                name: "round-robin",
                affinity: false,
                preemption: false,
            },
            "farm-no-preemption" => Self {
                name: "farm-no-preemption",
                affinity: true,
                preemption: false,
            },
            other => anyhow::bail!("unknown policy {other:?}"),
        })
    }
}

/// What every run of one invocation shares.
struct Setup {
    trace: Arc<Trace>,
    jobs: Vec<TraceJob>,
    workers: Vec<WorkerSpec>,
    scale: f64,
    etcd: Option<String>,
    runtime: tokio::runtime::Runtime,
    max_wall: Duration,
}

/// `--output text` asks for the table instead of the JSON. Every bench prints JSON by
/// default while the CLI's global `--output` defaults to text, so only an explicit flag
/// (or `REELFARM_OUTPUT`) counts.
fn wants_text(format: Format) -> bool {
    let explicit = std::env::args().any(|a| a == "--output" || a.starts_with("--output="))
        || std::env::var_os("REELFARM_OUTPUT").is_some();
    explicit && format == Format::Text
}

pub async fn run(args: FarmArgs, format: Format) -> anyhow::Result<()> {
    let path = if args.trace.exists() || args.trace.is_absolute() {
        args.trace.clone()
    } else {
        // From another folder: the repository's copy.
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(&args.trace)
    };
    let trace = Arc::new(Trace::load(&path)?);
    let scale = args.time_scale.unwrap_or(trace.time_scale);
    anyhow::ensure!(
        scale.is_finite() && scale > 0.0,
        "--time-scale must be above 0, got {scale}"
    );
    let policies = args
        .policies
        .iter()
        .map(|p| Policy::named(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut workers = Vec::new();
    for (g, group) in trace.gpus.iter().enumerate() {
        for i in 0..group.count {
            workers.push(WorkerSpec {
                id: format!("gpu{}g-{g}-{i:03}", group.memory_gib.round()),
                gpu: Some(g),
                slots: 1,
            });
        }
    }
    for i in 0..trace.cpu_workers.count {
        workers.push(WorkerSpec {
            id: format!("cpu-{i:03}"),
            gpu: None,
            slots: trace.cpu_workers.slots,
        });
    }
    let setup = Setup {
        jobs: trace.jobs(),
        trace: trace.clone(),
        workers,
        scale,
        etcd: args.etcd.clone(),
        runtime: tokio::runtime::Builder::new_multi_thread()
            .thread_name(COORDINATOR_THREADS)
            .enable_all()
            .build()?,
        max_wall: Duration::from_secs(args.max_wall_seconds),
    };
    let mut runs = Vec::new();
    for policy in &policies {
        let run = run_policy(&setup, *policy).await?;
        eprintln!("{}", summary_line(&run));
        runs.push(run);
    }
    let Setup { runtime, .. } = setup;
    runtime.shutdown_background();

    let high: serde_json::Map<String, Value> = runs
        .iter()
        .map(|r| {
            (
                r["policy"].as_str().unwrap_or_default().to_string(),
                json!({"preemption": r["config"]["preemption"],
                       "job_wait_p99_s": r["high"]["job_wait_p99_s"],
                       "task_wait_p99_s": r["high"]["task_wait_p99_s"]}),
            )
        })
        .collect();
    let jobs = trace.jobs();
    let report = json!({
        "bench": "farm",
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "machine": super::machine(),
        "trace": trace_summary(&trace, &jobs, &path),
        "time_scale": scale,
        "unscaled_coordinator_periods": UNSCALED.iter().map(|(name, wall)| json!({
            "name": name, "wall_s": wall, "simulated_s": wall * scale})).collect::<Vec<_>>(),
        "goals": {
            "gpu_busy_ratio": format!(">= {}", analysis::GOALS.busy_ratio),
            "model_loads_over_minimum": format!("<= {}", analysis::GOALS.loads_over_minimum),
            "tenant_share_relative_error": format!("<= {}", analysis::GOALS.share_tolerance),
            "high_job_wait_p99_s": format!("<= one checkpoint interval ({} s: {} steps of the median LOW job), with preemption on",
                analysis::round(analysis::checkpoint_interval_s(&trace, &jobs)), trace.checkpoint_every_steps),
            "steps_recomputed_per_killed_worker": format!("<= {}", trace.checkpoint_every_steps),
        },
        "high_wait_by_policy": high,
        "runs": runs,
    });
    if wants_text(format) {
        print!("{}", text_report(&report));
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn trace_summary(trace: &Trace, jobs: &[TraceJob], path: &std::path::Path) -> Value {
    let gpu_work: f64 = jobs.iter().map(|j| j.gpu_s(trace)).sum();
    let last_arrival = jobs.iter().map(|j| j.arrival_s).fold(0.0, f64::max);
    let count = |p: trace::Priority| jobs.iter().filter(|j| j.priority == p).count();
    json!({
        "name": trace.name,
        "path": path.display().to_string(),
        "description": trace.description,
        "jobs": jobs.len(),
        "jobs_by_priority": {"low": count(trace::Priority::Low), "normal": count(trace::Priority::Normal),
                             "high": count(trace::Priority::High)},
        "gpu_workers": trace.gpus.iter().map(|g| json!({"memory_gib": g.memory_gib, "count": g.count})).collect::<Vec<_>>(),
        "cpu_workers": {"count": trace.cpu_workers.count, "slots": trace.cpu_workers.slots},
        "models": trace.models.iter().enumerate().map(|(m, model)| json!({
            "name": model.name, "weight_gb": model.weight_gb, "load_s": model.load_s,
            "fits_gpus_gib": trace.gpus.iter().enumerate().filter(|(g, _)| trace.fits(m, *g))
                .map(|(_, g)| g.memory_gib).collect::<Vec<_>>(),
            "jobs": jobs.iter().filter(|j| j.model == m).count(),
            "gpu_work_s": analysis::round(jobs.iter().filter(|j| j.model == m).map(|j| j.gpu_s(trace)).sum()),
        })).collect::<Vec<_>>(),
        "tenants": trace.tenants.iter().enumerate().map(|(t, d)| json!({
            "name": d.name, "weight": d.weight, "jobs": jobs.iter().filter(|j| j.tenant == t).count()})).collect::<Vec<_>>(),
        "kills": trace.kills.iter().map(|k| json!({"at_s": k.at_s, "workers": k.workers, "down_s": k.down_s})).collect::<Vec<_>>(),
        "last_arrival_s": last_arrival,
        "gpu_work_s": analysis::round(gpu_work),
        "checkpoint_every_steps": trace.checkpoint_every_steps,
        "checkpoint_cost_s": trace.checkpoint_cost_s,
    })
}

/// One policy's run: a fresh coordinator and fleet, the whole trace, the analysis.
async fn run_policy(setup: &Setup, policy: Policy) -> anyhow::Result<Value> {
    let trace = &setup.trace;
    let scale = setup.scale;
    let weights = trace.tenant_weights()?;
    let affinity_wait_ms = if policy.affinity {
        (trace.affinity_wait_s * 1000.0 / scale).round() as u64
    } else {
        0
    };
    let preemption_interval = (trace.preemption_min_interval_s / scale).round() as u64;
    let preemption_interval = if trace.preemption_min_interval_s > 0.0 {
        preemption_interval.max(1)
    } else {
        0
    };
    let jobs_count = setup.jobs.len();
    let etcd = setup.etcd.clone();
    let farm = InProcess::start(setup.runtime.handle(), |cluster, store| {
        let mut c = reelfarm_coordinator::Config::in_process(
            cluster,
            etcd.into_iter().collect(),
            store,
            jobs_count + 100,
        );
        c.tenant_weights = weights;
        c.affinity_wait_ms = affinity_wait_ms;
        c.preemption = if policy.preemption {
            "low-for-high"
        } else {
            "off"
        }
        .into();
        c.preemption_min_interval_seconds = preemption_interval;
        // Kills count as failed attempts: a task may meet several.
        c.max_attempts = 20;
        // Nothing to collect: every result names the one stand-in file.
        c.artifact_gc_grace_seconds = 0.0;
        c
    })
    .await?;
    let clock = Arc::new(Clock::new(scale));
    let ctx = Arc::new(SimContext::new(
        clock.clone(),
        trace.clone(),
        farm.address.clone(),
        farm.sim_output.clone(),
    ));
    let fleet = Fleet::start(ctx, setup.workers.clone());
    let all = setup.workers.len();
    let timed_out = poll_until(REGISTER_TIMEOUT, || {
        fleet.connected() == all && farm.scheduler.counts().workers == all
    })
    .await;
    anyhow::ensure!(
        !timed_out,
        "only {} of {all} simulated workers registered within {REGISTER_TIMEOUT:?}",
        fleet.connected()
    );

    let origin = clock.now();
    let wall_start = Instant::now();
    let cpu = ThreadsCpu::named(COORDINATOR_THREADS);
    let process_cpu = process_cpu_seconds();
    let client = crate::client::jobs(&crate::client::Target::local(&farm.address)).await?;
    let submitted: Vec<Submitted> = (0..jobs_count).map(|_| Arc::default()).collect();
    let submit_errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let in_flight = Arc::new(Semaphore::new(SUBMITS_IN_FLIGHT));
    let submit_all = async {
        let mut tasks = tokio::task::JoinSet::new();
        for job in &setup.jobs {
            clock.sleep_until(origin + job.arrival_s).await;
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let (clock, slot, errors) = (
                clock.clone(),
                submitted[job.index].clone(),
                submit_errors.clone(),
            );
            let mut client = client.clone();
            let spec = job.spec(trace);
            tasks.spawn(async move {
                let sent = clock.now();
                for _ in 0..RESUBMIT_TRIES {
                    let req = v1::SubmitJobRequest {
                        spec: Some(spec.clone()),
                        idempotency_key: String::new(),
                    };
                    match client.submit_job(req).await {
                        Ok(r) => {
                            if let Some(j) = r.into_inner().job {
                                *slot.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some((sent, j.id));
                            }
                            break;
                        }
                        // Every worker serving its model is down (killed) right now.
                        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                            let retry = clock.now() + RESUBMIT_AFTER_S;
                            clock.sleep_until(retry).await;
                        }
                        Err(s) => {
                            errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(s.to_string());
                            break;
                        }
                    }
                }
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    };
    let kill_all = async {
        let mut rng = rand::rngs::StdRng::seed_from_u64(trace.seed);
        for k in &trace.kills {
            clock.sleep_until(origin + k.at_s).await;
            fleet.kill(k.workers, k.down_s, &mut rng);
        }
    };
    let deadline = wall_start + setup.max_wall;
    let finished = async {
        tokio::join!(submit_all, kill_all);
        poll_until(deadline.saturating_duration_since(Instant::now()), || {
            farm.scheduler.counts().jobs_active == 0
        })
        .await
    };
    let timed_out = tokio::select! {
        t = finished => t,
        _ = tokio::time::sleep_until(deadline.into()) => true,
    };
    let end = clock.now();
    let wall = wall_start.elapsed().as_secs_f64();
    let coordinator_cpu_s = cpu.used_since();
    let process_cpu_s = process_cpu_seconds() - process_cpu;
    let submitted: Vec<Option<(f64, String)>> = submitted
        .iter()
        .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .collect();
    // The coordinator's own account, to compare with the workers'.
    let mut states = std::collections::BTreeMap::<&str, usize>::new();
    let (mut preempted_tasks, mut resumed_tasks) = (0u64, 0u64);
    for (_, id) in submitted.iter().flatten() {
        let Some(j) = farm.scheduler.get_job(id, true) else {
            *states.entry("forgotten").or_default() += 1;
            continue;
        };
        *states.entry(j.state.as_str()).or_default() += 1;
        preempted_tasks += j
            .tasks
            .iter()
            .map(|t| u64::from(t.preemptions))
            .sum::<u64>();
        resumed_tasks += j.tasks.iter().filter(|t| t.resumed_from_step > 0).count() as u64;
    }
    let metrics = &farm.coordinator.metrics;
    let coordinator = json!({
        "job_states": states,
        "preemptions_requested": metrics.preemptions_requested.get(),
        "preemptions": metrics.preemptions.get(),
        "task_preemptions_in_job_views": preempted_tasks,
        "tasks_resumed_from_a_checkpoint": resumed_tasks,
        "checkpoints": metrics.checkpoints.get(),
        "stale_reports": metrics.stale_reports.get(),
        "cpu_seconds": analysis::round(coordinator_cpu_s),
    });
    let records = fleet.stop().await;
    farm.stop(setup.runtime.handle()).await?;

    let mut run = analysis::analyze(analysis::RunData {
        trace,
        jobs: &setup.jobs,
        workers: &setup.workers,
        origin,
        submitted,
        end,
        records,
    });
    let goals = analysis::goals(&run, policy.preemption, trace.checkpoint_every_steps);
    let obj = run.as_object_mut().expect("an object");
    obj.insert("policy".into(), policy.name.into());
    obj.insert(
        "config".into(),
        json!({
            "affinity_wait_ms": affinity_wait_ms,
            "affinity_wait_simulated_s": affinity_wait_ms as f64 * scale / 1000.0,
            "preemption": if policy.preemption { "low-for-high" } else { "off" },
            "preemption_min_interval_seconds": preemption_interval,
            "preemption_min_interval_simulated_s": preemption_interval as f64 * scale,
            "checkpoint_every_steps": trace.checkpoint_every_steps,
            "tenant_weights": trace.tenants.iter().map(|t| format!("{}={}", t.name, t.weight)).collect::<Vec<_>>().join(","),
            "backend": if setup.etcd.is_some() { "etcd" } else { "memory" },
        }),
    );
    obj.insert("timed_out".into(), timed_out.into());
    obj.insert("wall_seconds".into(), analysis::round(wall).into());
    obj.insert(
        "simulated_seconds".into(),
        analysis::round(end - origin).into(),
    );
    obj.insert(
        "process_cpu_seconds".into(),
        analysis::round(process_cpu_s).into(),
    );
    obj.insert("coordinator".into(), coordinator);
    obj.insert(
        "submit_errors".into(),
        json!(*submit_errors.lock().unwrap_or_else(|p| p.into_inner())),
    );
    obj.insert("goals".into(), goals);
    Ok(run)
}

/// When a job's SubmitJob was sent (simulated) and the id it got, once it answered.
type Submitted = Arc<std::sync::Mutex<Option<(f64, String)>>>;

/// CPU seconds (user + system) this process used so far.
fn process_cpu_seconds() -> f64 {
    super::sched::process_cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn summary_line(run: &Value) -> String {
    format!(
        "bench farm: {} — {}/{} jobs finished in {} s wall ({} s simulated), busy/allowed {}, loads {}/{}, HIGH p99 wait {} s",
        run["policy"].as_str().unwrap_or(""),
        run["jobs_finished"],
        run["jobs"],
        run["wall_seconds"],
        run["simulated_seconds"],
        run["gpu_busy"]["ratio"],
        run["model_loads"]["loads"],
        run["model_loads"]["minimum"],
        run["high"]["job_wait_p99_s"],
    )
}

/// The report as a table: one column per policy, the goal and whether each met it.
fn text_report(report: &Value) -> String {
    use std::fmt::Write as _;
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    let t = &report["trace"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench farm: trace {} ({} jobs, {} GPU workers, {} models), time scale {}×",
        t["name"].as_str().unwrap_or(""),
        t["jobs"],
        t["gpu_workers"]
            .as_array()
            .map(|g| g
                .iter()
                .map(|g| g["count"].as_u64().unwrap_or(0))
                .sum::<u64>())
            .unwrap_or(0),
        t["models"].as_array().map_or(0, Vec::len),
        report["time_scale"],
    );
    let mut row = |label: &str, cells: Vec<String>, goal: &str| {
        let _ = write!(out, "{label:<44}");
        for c in cells {
            let _ = write!(out, "{c:>24}");
        }
        let _ = writeln!(out, "  {goal}");
    };
    row(
        "",
        runs.iter()
            .map(|r| r["policy"].as_str().unwrap_or("").to_string())
            .collect(),
        "goal",
    );
    let cell = |r: &Value, v: String, goal: &str| -> String {
        match r["goals"][goal]["met"].as_bool() {
            Some(true) => format!("{v} (met)"),
            Some(false) => format!("{v} (NOT met)"),
            None => v,
        }
    };
    let fmt = |v: &Value| match v.as_f64() {
        Some(x) => format!("{}", analysis::round(x)),
        None => "—".into(),
    };
    row(
        "jobs finished",
        runs.iter()
            .map(|r| format!("{}/{}", r["jobs_finished"], r["jobs"]))
            .collect(),
        "all",
    );
    row(
        "makespan s (lower bound)",
        runs.iter()
            .map(|r| {
                format!(
                    "{} ({})",
                    fmt(&r["makespan_s"]),
                    fmt(&r["makespan_lower_bound_s"])
                )
            })
            .collect(),
        "",
    );
    row(
        "GPU busy / allowed",
        runs.iter()
            .map(|r| {
                cell(
                    r,
                    format!(
                        "{:.1} %",
                        r["gpu_busy"]["ratio"].as_f64().unwrap_or(0.0) * 100.0
                    ),
                    "gpu_busy_ratio",
                )
            })
            .collect(),
        ">= 95 %",
    );
    row(
        "model loads / minimum",
        runs.iter()
            .map(|r| {
                cell(
                    r,
                    format!(
                        "{}/{} = {}",
                        r["model_loads"]["loads"],
                        r["model_loads"]["minimum"],
                        fmt(&r["model_loads"]["ratio"])
                    ),
                    "model_loads_over_minimum",
                )
            })
            .collect(),
        "<= 1.2",
    );
    let tenants: Vec<String> = runs
        .first()
        .and_then(|r| r["queue_wait_s"]["by_tenant"].as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for tn in &tenants {
        row(
            &format!("queue wait p50/p99 s, tenant {tn}"),
            runs.iter()
                .map(|r| {
                    let w = &r["queue_wait_s"]["by_tenant"][tn];
                    format!("{} / {}", fmt(&w["p50"]), fmt(&w["p99"]))
                })
                .collect(),
            "",
        );
    }
    for p in ["high", "normal", "low"] {
        if runs
            .iter()
            .all(|r| r["queue_wait_s"]["by_priority"][p].is_null())
        {
            continue;
        }
        row(
            &format!("queue wait p50/p99 s, {p}"),
            runs.iter()
                .map(|r| {
                    let w = &r["queue_wait_s"]["by_priority"][p];
                    format!("{} / {}", fmt(&w["p50"]), fmt(&w["p99"]))
                })
                .collect(),
            "",
        );
    }
    for (scope, label) in [
        ("per_model_queue", "per model queue"),
        ("farm_wide", "farm-wide"),
    ] {
        row(
            &format!("contended s, {label}"),
            runs.iter()
                .map(|r| fmt(&r["tenant_share"][scope]["contended_s"]))
                .collect(),
            "",
        );
        let share_tenants: Vec<String> = runs
            .first()
            .and_then(|r| r["tenant_share"][scope]["tenants"].as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for tn in &share_tenants {
            row(
                &format!("  GPU share {tn} (by weight), {label}"),
                runs.iter()
                    .map(|r| {
                        let s = &r["tenant_share"][scope]["tenants"][tn];
                        format!(
                            "{:.1} % ({:.1} %)",
                            s["share"].as_f64().unwrap_or(0.0) * 100.0,
                            s["weight_share"].as_f64().unwrap_or(0.0) * 100.0
                        )
                    })
                    .collect(),
                "",
            );
        }
    }
    row(
        "worst share error (per queue), relative",
        runs.iter()
            .map(|r| {
                cell(
                    r,
                    fmt(&r["tenant_share"]["worst_relative_error"]),
                    "tenant_share_worst_relative_error",
                )
            })
            .collect(),
        "<= 0.05",
    );
    row(
        "HIGH job wait p99 s",
        runs.iter()
            .map(|r| cell(r, fmt(&r["high"]["job_wait_p99_s"]), "high_job_wait_p99_s"))
            .collect(),
        &format!(
            "<= {} s with preemption on",
            fmt(&runs
                .first()
                .map(|r| r["high"]["checkpoint_interval_s"].clone())
                .unwrap_or_default())
        ),
    );
    row(
        "steps recomputed per killed worker, max",
        runs.iter()
            .map(|r| {
                cell(
                    r,
                    format!("{}", r["kills"]["steps_recomputed_max_per_killed_worker"]),
                    "steps_recomputed_max_per_killed_worker",
                )
            })
            .collect(),
        &format!("<= {}", t["checkpoint_every_steps"]),
    );
    row(
        "preemptions / checkpoints",
        runs.iter()
            .map(|r| {
                format!(
                    "{} / {}",
                    r["attempts"]["preempted"], r["attempts"]["checkpoints"]
                )
            })
            .collect(),
        "",
    );
    row(
        "timer lateness p99 s (simulated)",
        runs.iter()
            .map(|r| fmt(&r["timer_lateness_s"]["p99"]))
            .collect(),
        "",
    );
    row(
        "wall s / coordinator CPU s",
        runs.iter()
            .map(|r| {
                format!(
                    "{} / {}",
                    fmt(&r["wall_seconds"]),
                    fmt(&r["coordinator"]["cpu_seconds"])
                )
            })
            .collect(),
        "",
    );
    out
}
