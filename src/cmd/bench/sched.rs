//! `reelfarm bench sched`: the scheduler alone. A coordinator runs in this process (memory
//! or etcd state); simulated workers connect over the real gRPC stream and answer every
//! assignment at once (or after `--task-ms`) with a stand-in output — no rendering: one
//! empty file of the bench's artifact store, which the coordinator checks exists before
//! each commit as it does for real workers. Jobs are
//! submitted before the workers connect, so the measured time is pure scheduling:
//! dispatch, result handling, durable commits and dependency release.
//!
//! Reported per run: tasks per second (all tasks / time from the first worker connecting
//! to the last job succeeding), and the dispatch latency seen by the workers: the time from
//! a worker sending a result (freeing a slot) to receiving its next assignment, counted only
//! when ready tasks were queued at that moment — the scheduler's reaction time under load.
//! Slots freed while nothing was ready (tasks waiting for their PLAN, the tail of the run)
//! are idle time, reported apart as `idle_without_ready_work_ms`.
//!
//! Each worker count runs twice. `saturated`: workers answer at once, so the farm runs as
//! fast as this machine allows; that gives the throughput. In that closed loop every slot is
//! always waiting on the coordinator or on its own connection, so by Little's law the mean
//! hand-off is about slots / throughput and its tail is queueing, not scheduling. `at_load`:
//! the same workload with tasks that take a fixed time (±50 % jitter, as real tasks vary)
//! chosen so the offered load is `--latency-load` × the saturated throughput just measured;
//! its dispatch latency is what a freed slot waits at that load.
//!
//! The simulated workers stand in for other machines but share this machine's cores with
//! the coordinator. So the coordinator runs on its own runtime whose threads are named
//! [`COORDINATOR_THREADS`], and each run reports the CPU time those threads (and a bench
//! etcd process) used: `coordinator_tasks_per_cpu_second` is the scheduler's own cost,
//! apart from the HTTP/2 client work of a thousand simulated workers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reelfarm_proto::v1::{self, worker_service_client::WorkerServiceClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::local_etcd::LocalEtcd;

pub struct SchedArgs {
    pub workers: Vec<u32>,
    pub total_slots: u32,
    pub tasks: u32,
    pub backends: Vec<String>,
    pub etcd: Option<String>,
    pub task_ms: u64,
    /// Offered load of the `at_load` run as a fraction of the saturated throughput; 0 skips it.
    pub latency_load: f64,
    /// Tenants the jobs are spread over, round-robin.
    pub tenants: u32,
    /// Also run the transport floor (see [`super::floor`]) after each saturated run.
    pub floor: bool,
}

/// Task duration jitter of the `at_load` run: each task takes (1 ± this) × the mean.
const AT_LOAD_JITTER: f64 = 0.5;

/// Tasks per bench job: 1 plan + 64 segments + audio + assemble (20 s at 60 fps, 12-frame
/// segments capped at 64) — the largest plan the coordinator makes with default flags.
const TASKS_PER_JOB: u32 = 67;
/// Jobs per SubmitBatch while loading the queue.
const SUBMIT_BATCH: usize = 100;
/// A run that has not finished by then is reported as timed out.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Name of the coordinator runtime's threads (Linux keeps 15 bytes of a thread name).
pub(super) const COORDINATOR_THREADS: &str = "rf-coordinator";

pub async fn run(args: SchedArgs) -> anyhow::Result<()> {
    let coordinator_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(COORDINATOR_THREADS)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    let mut local_etcd: Option<LocalEtcd> = None;
    for backend in &args.backends {
        let etcd = match backend.as_str() {
            "memory" => None,
            "etcd" => match &args.etcd {
                Some(e) => Some(e.clone()),
                None if crate::local_etcd::available() => {
                    let e = LocalEtcd::start()?;
                    let endpoint = e.endpoint.clone();
                    local_etcd = Some(e);
                    Some(endpoint)
                }
                None => {
                    results.push(serde_json::json!({"backend": "etcd",
                        "skipped": "no --etcd given and no etcd binary on PATH"}));
                    continue;
                }
            },
            other => anyhow::bail!("--backend must be memory or etcd, got {other:?}"),
        };
        for &workers in &args.workers {
            let slots = (args.total_slots / workers).max(1);
            let engine = SimEngine {
                task_time: Duration::from_millis(args.task_ms),
                jitter: 0.0,
            };
            let bench = RunSetup {
                coordinator_runtime: coordinator_runtime.handle().clone(),
                etcd: etcd.clone(),
                etcd_pid: local_etcd.as_ref().and_then(LocalEtcd::pid),
                workers,
                slots,
            };
            let saturated = run_one(&args, &bench, engine).await?;
            eprintln!("{saturated}");
            let measured = saturated["tasks_per_second"].as_f64().unwrap_or(0.0);
            let mut result = serde_json::json!({
                "backend": backend,
                "workers": workers,
                "slots_per_worker": slots,
                "saturated": saturated,
            });
            if args.floor {
                let floor = floor_run(&bench, engine, &saturated).await?;
                let ceiling = floor["tasks_per_second"].as_f64().unwrap_or(0.0);
                if ceiling > 0.0 {
                    result["saturated_share_of_floor"] = (measured / ceiling).into();
                }
                result["transport_floor"] = floor;
            }
            if args.latency_load > 0.0 && measured > 0.0 {
                // Closed loop: throughput ≈ slots / mean task time.
                let offered = measured * args.latency_load;
                let engine = SimEngine {
                    task_time: Duration::from_secs_f64(f64::from(slots * workers) / offered),
                    jitter: AT_LOAD_JITTER,
                };
                let mut at_load = run_one(&args, &bench, engine).await?;
                at_load["offered_tasks_per_second"] = offered.into();
                at_load["load_fraction"] = args.latency_load.into();
                at_load["task_ms_mean"] = (engine.task_time.as_secs_f64() * 1000.0).into();
                at_load["task_ms_jitter"] = AT_LOAD_JITTER.into();
                eprintln!("{at_load}");
                if args.floor {
                    // The transport's own hand-off latency at the same offered load.
                    at_load["transport_floor"] = floor_run(&bench, engine, &at_load).await?;
                }
                result["at_load"] = at_load;
            }
            results.push(result);
        }
    }
    drop(local_etcd);
    coordinator_runtime.shutdown_background();
    let report = serde_json::json!({
        "bench": "sched",
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "machine": super::machine(),
        "task_ms": args.task_ms,
        "tenants": args.tenants,
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Default)]
pub(super) struct Samples {
    /// Slot freed → next assignment received, when ready tasks were queued at the moment
    /// the slot was freed: the scheduler's dispatch latency as a worker sees it.
    latencies_s: Vec<f64>,
    /// The same interval when no task was ready (waiting for dependencies, the end of the
    /// run): idle time, not dispatch latency; reported apart.
    starved_s: Vec<f64>,
    tasks: u64,
}

/// Ready tasks queued in the coordinator, read lock-free from its queue-depth gauges.
fn ready_tasks(metrics: &reelfarm_coordinator::metrics::Metrics) -> i64 {
    reelfarm_coordinator::model::Priority::ALL
        .iter()
        .map(|p| metrics.queue_depth(*p).get())
        .sum()
}

/// How simulated workers answer: after `task_time` × (1 ± `jitter`, uniform), or at once.
#[derive(Clone, Copy)]
pub(super) struct SimEngine {
    pub task_time: Duration,
    pub jitter: f64,
}

impl SimEngine {
    fn task_duration(&self) -> Duration {
        if self.jitter <= 0.0 {
            return self.task_time;
        }
        let u: f64 = rand::random();
        self.task_time.mul_f64(1.0 + self.jitter * (2.0 * u - 1.0))
    }
}

/// The transport floor (see [`super::floor`]) with the same workers, engine and task count
/// as the scheduler's run `measured`.
async fn floor_run(
    setup: &RunSetup,
    engine: SimEngine,
    measured: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let floor = super::floor::run(super::floor::FloorRun {
        runtime: &setup.coordinator_runtime,
        threads: COORDINATOR_THREADS,
        workers: setup.workers,
        slots: setup.slots,
        engine,
        tasks: measured["tasks"].as_u64().unwrap_or(0),
    })
    .await?;
    eprintln!("{floor}");
    Ok(floor)
}

/// The spec of every bench job: the largest plan the coordinator makes (see
/// [`TASKS_PER_JOB`]).
pub(super) fn bench_spec() -> v1::JobSpec {
    v1::JobSpec {
        prompt: "bench".into(),
        duration_seconds: 20.0,
        fps: 60,
        ..Default::default()
    }
}

/// What one run needs besides the arguments.
struct RunSetup {
    coordinator_runtime: tokio::runtime::Handle,
    etcd: Option<String>,
    /// A bench-started etcd's process, whose CPU time is reported.
    etcd_pid: Option<u32>,
    workers: u32,
    slots: u32,
}

async fn run_one(
    args: &SchedArgs,
    setup: &RunSetup,
    engine: SimEngine,
) -> anyhow::Result<serde_json::Value> {
    let RunSetup {
        coordinator_runtime,
        etcd,
        etcd_pid,
        workers,
        slots,
    } = setup;
    let (workers, slots) = (*workers, *slots);
    let farm = InProcess::start(coordinator_runtime, |cluster, store| {
        reelfarm_coordinator::Config::in_process(
            cluster,
            etcd.iter().cloned().collect(),
            store,
            1_000_000,
        )
    })
    .await?;
    let (coordinator, scheduler) = (&farm.coordinator, &farm.scheduler);
    let (address, sim_output) = (farm.address.clone(), farm.sim_output.clone());

    // Load the queue.
    let jobs = args.tasks.div_ceil(TASKS_PER_JOB) as usize;
    let mut client = crate::client::jobs(&crate::client::Target::local(&address)).await?;
    let spec = bench_spec();
    let mut job_ids = Vec::with_capacity(jobs);
    let mut left = jobs;
    while left > 0 {
        let n = left.min(SUBMIT_BATCH);
        let req = v1::SubmitBatchRequest {
            jobs: (0..n)
                .map(|i| v1::SubmitJobRequest {
                    spec: Some(v1::JobSpec {
                        tenant: format!("tenant-{}", (jobs - left + i) % args.tenants as usize),
                        ..spec.clone()
                    }),
                    idempotency_key: String::new(),
                })
                .collect(),
        };
        let resp = client.submit_batch(req).await?.into_inner();
        job_ids.extend(resp.jobs.into_iter().map(|j| j.id));
        left -= n;
    }
    let total_tasks = scheduler
        .list_jobs(|_| true, None, usize::MAX, false)
        .0
        .iter()
        .map(|j| u64::from(j.total_tasks))
        .sum::<u64>();

    // Release the workers.
    let coordinator_cpu = ThreadsCpu::named(COORDINATOR_THREADS);
    let etcd_cpu_before = etcd_pid.and_then(process_cpu_seconds);
    let started = Instant::now();
    let fleet = SimFleet::start(
        workers,
        &SimWorker {
            address: address.clone(),
            id: "sim".into(),
            output_uri: sim_output.clone(),
            slots,
            engine,
            work_waiting: {
                let metrics = coordinator.metrics.clone();
                Arc::new(move || ready_tasks(&metrics) > 0)
            },
        },
    );
    let timed_out = poll_until(RUN_TIMEOUT, || scheduler.counts().jobs_active == 0).await;
    let seconds = started.elapsed().as_secs_f64();
    let coordinator_cpu_s = coordinator_cpu.used_since();
    let etcd_cpu_s = etcd_cpu_before
        .zip(etcd_pid.and_then(process_cpu_seconds))
        .map(|(before, after)| after - before);
    let succeeded = job_ids
        .iter()
        .filter(|id| {
            scheduler
                .get_job(id, false)
                .is_some_and(|j| j.state == reelfarm_coordinator::model::JobState::Succeeded)
        })
        .count();
    let s = fleet.stop().await;
    farm.stop(coordinator_runtime).await?;

    let idle_ms = |p| super::percentile(&s.starved_s, p) * 1000.0;
    Ok(serde_json::json!({
        "jobs": jobs,
        "jobs_succeeded": succeeded,
        "tasks": total_tasks,
        "tasks_answered_by_workers": s.tasks,
        "seconds": seconds,
        "tasks_per_second": total_tasks as f64 / seconds,
        "coordinator_cpu_seconds": coordinator_cpu_s,
        "coordinator_tasks_per_cpu_second": total_tasks as f64 / coordinator_cpu_s.max(1e-9),
        "etcd_cpu_seconds": etcd_cpu_s,
        "dispatch_latency_ms": s.latency_ms(),
        "idle_without_ready_work_ms": {"p50": idle_ms(50.0), "p99": idle_ms(99.0),
                                       "samples": s.starved_s.len()},
        "timed_out": timed_out,
    }))
}

/// A coordinator running in this process (on its own runtime), leading, with an artifact
/// store in a temporary folder that holds the one stand-in output simulated workers name
/// in their results: an empty file, which the coordinator checks exists at a worker
/// session's first result, as it does for real workers.
pub(super) struct InProcess {
    pub coordinator: reelfarm_coordinator::RunningCoordinator,
    pub scheduler: Arc<reelfarm_coordinator::scheduler::Scheduler>,
    /// Its gRPC address, `http://127.0.0.1:PORT`.
    pub address: String,
    /// The stand-in output's `file://` URI.
    pub sim_output: String,
    shutdown: CancellationToken,
    _artifacts: tempfile::TempDir,
}

impl InProcess {
    /// Starts one on `runtime` with the configuration `config` makes from a fresh cluster
    /// name (each run starts from empty state, in etcd too) and the store's settings.
    pub async fn start(
        runtime: &tokio::runtime::Handle,
        config: impl FnOnce(String, reelfarm_artifacts::StoreConfig) -> reelfarm_coordinator::Config,
    ) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let artifacts = tempfile::tempdir()?;
        let config = config(
            format!("bench-{}", rand_suffix()),
            reelfarm_artifacts::StoreConfig::local(artifacts.path()),
        );
        let coordinator = runtime
            .spawn(reelfarm_coordinator::start(config, shutdown.clone()))
            .await??;
        let sim_output = artifacts.path().canonicalize()?.join("jobs/sim/output.bin");
        std::fs::create_dir_all(sim_output.parent().expect("a file under jobs/sim"))?;
        std::fs::write(&sim_output, b"")?;
        let scheduler = coordinator
            .wait_leader()
            .await
            .context("the coordinator stopped before it led")?;
        Ok(Self {
            address: format!("http://{}", coordinator.grpc_addr),
            sim_output: format!("file://{}", sim_output.display()),
            coordinator,
            scheduler,
            shutdown,
            _artifacts: artifacts,
        })
    }

    /// Stops the coordinator (on its runtime) and removes the store.
    pub async fn stop(self, runtime: &tokio::runtime::Handle) -> anyhow::Result<()> {
        self.shutdown.cancel();
        runtime.spawn(self.coordinator.stop()).await?;
        Ok(())
    }
}

/// CPU time of this process's threads with one name, from /proc/self/task (Linux).
pub(super) struct ThreadsCpu {
    name: &'static str,
    /// Thread id → CPU seconds at the start.
    start: std::collections::HashMap<String, f64>,
}

impl ThreadsCpu {
    pub fn named(name: &'static str) -> Self {
        Self {
            name,
            start: Self::sample(name),
        }
    }

    /// CPU seconds the named threads used since [`ThreadsCpu::named`]; a thread that
    /// started since counts from zero.
    pub fn used_since(&self) -> f64 {
        Self::sample(self.name)
            .into_iter()
            .map(|(tid, now)| now - self.start.get(&tid).copied().unwrap_or(0.0))
            .sum()
    }

    fn sample(name: &str) -> std::collections::HashMap<String, f64> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Default::default();
        };
        tasks
            .flatten()
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                let (comm, cpu) = parse_stat(&stat)?;
                (comm == name).then(|| (t.file_name().to_string_lossy().into_owned(), cpu))
            })
            .collect()
    }
}

/// CPU seconds (user + system) a process has used.
pub(super) fn process_cpu_seconds(pid: u32) -> Option<f64> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|(_, cpu)| cpu)
}

/// (name, user + system CPU seconds) from a /proc `stat` line: `pid (comm) state ...`,
/// where utime and stime are fields 14 and 15, in clock ticks of 1/100 s (USER_HZ).
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    const TICKS_PER_SECOND: f64 = 100.0;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SECOND))
}

/// A cluster name no earlier run in this etcd used: each run starts from empty state.
fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Whether ready tasks are queued in the coordinator now (for latency classification).
pub(super) type WorkWaiting = Arc<dyn Fn() -> bool + Send + Sync>;

/// One simulated worker.
#[derive(Clone)]
pub(super) struct SimWorker {
    pub address: String,
    pub id: String,
    /// The output every result names (a real file of the coordinator's store).
    pub output_uri: String,
    pub slots: u32,
    pub engine: SimEngine,
    pub work_waiting: WorkWaiting,
}

/// Simulated workers connected to one server, and what they measure.
pub(super) struct SimFleet {
    handles: Vec<tokio::task::JoinHandle<()>>,
    samples: Arc<Mutex<Samples>>,
    shutdown: CancellationToken,
}

impl SimFleet {
    /// Starts `count` copies of `template`, named `<template.id>-<i>`.
    pub fn start(count: u32, template: &SimWorker) -> Self {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let shutdown = CancellationToken::new();
        let handles = (0..count)
            .map(|i| {
                let worker = SimWorker {
                    id: format!("{}-{i}", template.id),
                    ..template.clone()
                };
                tokio::spawn(sim_worker(worker, samples.clone(), shutdown.clone()))
            })
            .collect();
        Self {
            handles,
            samples,
            shutdown,
        }
    }

    /// Stops the workers and returns what they measured, each series sorted.
    pub async fn stop(self) -> Samples {
        self.shutdown.cancel();
        for h in self.handles {
            let _ = h.await;
        }
        let mut s = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        s.latencies_s.sort_by(f64::total_cmp);
        s.starved_s.sort_by(f64::total_cmp);
        s
    }
}

impl Samples {
    /// Dispatch latency percentiles in ms (see [`Samples::latencies_s`]).
    pub fn latency_ms(&self) -> serde_json::Value {
        let ms = |p| super::percentile(&self.latencies_s, p) * 1000.0;
        serde_json::json!({"p50": ms(50.0), "p90": ms(90.0), "p99": ms(99.0), "max": ms(100.0),
                           "samples": self.latencies_s.len()})
    }
}

/// Checks `done` every 5 ms until it holds or `timeout` passes; true when it timed out.
pub(super) async fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return false;
        }
        if Instant::now() > deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Notes that a slot is freed now (its result is about to be sent) and whether ready work
/// was waiting then; the worker's next assignment closes the oldest such note.
fn note_freed(freed: &Mutex<VecDeque<(Instant, bool)>>, work_waiting: &WorkWaiting) {
    let had_work = work_waiting();
    freed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push_back((Instant::now(), had_work));
}

/// A worker that answers every assignment with success, without rendering.
pub(super) async fn sim_worker(
    worker: SimWorker,
    samples: Arc<Mutex<Samples>>,
    shutdown: CancellationToken,
) {
    let SimWorker {
        address,
        id,
        output_uri,
        slots,
        engine,
        work_waiting,
    } = worker;
    let Ok(mut client) = WorkerServiceClient::connect(address).await else {
        return;
    };
    let (out, out_rx) = mpsc::channel(8192);
    let register = v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Register(v1::RegisterWorker {
            worker_id: id.clone(),
            engine: "sim".into(),
            slots,
            ..Default::default()
        })),
    };
    if out.send(register).await.is_err() {
        return;
    }
    let Ok(resp) = client.session(ReceiverStream::new(out_rx)).await else {
        return;
    };
    let mut inbound = resp.into_inner();
    // When each slot was freed (a result sent) and whether work was waiting then; the next
    // assignment closes the oldest.
    let freed: Arc<Mutex<VecDeque<(Instant, bool)>>> = Arc::default();
    let mut local = Samples::default();
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            _ = shutdown.cancelled() => break,
        };
        let Ok(Some(msg)) = msg else { break };
        let Some(v1::coordinator_message::Body::Assignments(a)) = msg.body else {
            continue;
        };
        let now = Instant::now();
        for assignment in a.items {
            if let Some((t, had_work)) = freed.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
            {
                let waited = now.duration_since(t).as_secs_f64();
                if had_work {
                    local.latencies_s.push(waited);
                } else {
                    local.starved_s.push(waited);
                }
            }
            local.tasks += 1;
            let result = v1::WorkerMessage {
                body: Some(v1::worker_message::Body::Result(v1::TaskResult {
                    token: assignment.token,
                    ok: true,
                    outputs: vec![v1::Output {
                        kind: "sim".into(),
                        uri: output_uri.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
            };
            if engine.task_time.is_zero() {
                note_freed(&freed, &work_waiting);
                if out.send(result).await.is_err() {
                    break;
                }
            } else {
                let (out, freed, work_waiting) = (out.clone(), freed.clone(), work_waiting.clone());
                let task_time = engine.task_duration();
                tokio::spawn(async move {
                    tokio::time::sleep(task_time).await;
                    note_freed(&freed, &work_waiting);
                    let _ = out.send(result).await;
                });
            }
        }
    }
    let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
    s.latencies_s.extend(local.latencies_s);
    s.starved_s.extend(local.starved_s);
    s.tasks += local.tasks;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let line = "4242 (rf coord (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3";
        let (comm, cpu) = parse_stat(line).expect("a valid stat line");
        assert_eq!(comm, "rf coord (x)");
        assert!((cpu - 3.25).abs() < 1e-9, "{cpu}");
    }

    #[test]
    fn reads_this_threads_cpu_time() {
        let name = "rf-cpu-test";
        let (used, wall) = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let before = ThreadsCpu::named(name);
                let t = Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_millis(300) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                }
                (before.used_since(), t.elapsed().as_secs_f64())
            })
            .expect("spawn")
            .join()
            .expect("join");
        // A busy loop uses CPU, and one thread no more than the wall time (ticks are 10 ms;
        // the machine may be shared, so no lower bound beyond "some").
        assert!(
            used > 0.0 && used <= wall + 0.02,
            "used {used} s in {wall} s"
        );
    }
}
