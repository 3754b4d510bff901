//! Simulated workers of `bench farm`: each speaks the real WorkerService stream to the
//! in-process coordinator, and sleeps (in compressed time) where a real worker computes.
//!
//! A GPU worker registers as engine "cuda" with its device's memory and every model of the
//! trace (the coordinator's memory fit decides which it serves), one slot, what it holds
//! loaded and its pool's budget. Per assignment:
//!
//! - a model task (TEXT_ENCODE, DENOISE, DECODE) first loads the job's model if the pool
//!   does not hold it (`load_s`), evicting the least recently used models until its
//!   weights fit the budget (four fifths of the device, the real worker's default), and
//!   says what it now holds (WorkerStatus); a resident model becomes the most recently
//!   used;
//! - DENOISE runs its steps from the assignment's `resume` step (0 without one), reporting
//!   TaskProgress (at most every [`PROGRESS_EVERY`] of wall time, and the first and last
//!   step), writing a checkpoint (`checkpoint_cost_s`, then TaskCheckpoint) after every
//!   `checkpoint_every_steps` steps; on PreemptTask it checkpoints after its current step
//!   and hands the task back (HandBack.preempted), as the real worker does, unless that
//!   step was the last;
//! - every other task sleeps its time; then TaskResult names the one empty file of the
//!   coordinator's artifact store (checked at a session's first result).
//!
//! A CPU worker (engine "cpu", no models) runs PLAN, AUDIO and ASSEMBLE. A killed worker
//! drops its stream at once (no further message), loses what it held loaded, and
//! registers again under the same id after the kill's `down_s`.
//!
//! Every sleep ends at a deadline chained from the attempt's start, so timer lateness does
//! not accumulate; each wake-up's lateness is recorded (the compression's fidelity).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom as _;
use reelfarm_proto::v1::{self, worker_service_client::WorkerServiceClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::trace::{Trace, TraceJob, FPS};

/// Least wall time between two progress reports of one attempt.
const PROGRESS_EVERY: Duration = Duration::from_millis(25);
/// Wall time before a worker whose stream failed (not killed) dials again.
const REDIAL: Duration = Duration::from_millis(50);

/// Simulated time: `scale` simulated seconds per wall-clock second since `origin`.
pub struct Clock {
    origin: Instant,
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Self {
        Self {
            origin: Instant::now(),
            scale,
        }
    }

    /// Simulated seconds since the clock started.
    pub fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * self.scale
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Sleeps until simulated second `at`; returns how late it woke, in simulated seconds.
    pub async fn sleep_until(&self, at: f64) -> f64 {
        let wall = self.origin + Duration::from_secs_f64(at.max(0.0) / self.scale);
        tokio::time::sleep_until(wall.into()).await;
        (self.now() - at).max(0.0)
    }
}

/// How an attempt ended, as the simulated worker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its result was sent.
    Done,
    /// Checkpointed and handed back for the coordinator's PreemptTask.
    Preempted,
    /// Its worker was killed.
    Killed,
    /// The coordinator cancelled it (or its stream broke).
    Cancelled,
    /// Still running when the run ended.
    Unfinished,
}

/// One attempt a simulated worker ran (times in simulated seconds of the run's clock).
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub worker: usize,
    pub job_id: String,
    pub kind: v1::TaskKind,
    pub attempt: u64,
    pub start: f64,
    pub end: f64,
    pub outcome: Outcome,
    /// DENOISE: the step it resumed from, and the steps done when it ended.
    pub resume_step: u32,
    pub steps_reached: u32,
    /// When its last completed step ended (its start before the first).
    pub last_step_end: f64,
    pub load_s: f64,
    pub checkpoint_s: f64,
    pub checkpoints: u32,
    /// When the coordinator's PreemptTask for it arrived, if one did.
    pub preempt_at: Option<f64>,
}

/// A model load on a GPU worker.
#[derive(Clone, Debug)]
pub struct LoadRecord {
    pub worker: usize,
    pub model: usize,
    pub start: f64,
    /// Ended by its worker's kill before the model was resident.
    pub interrupted: bool,
    pub evicted: Vec<usize>,
}

/// A worker's registered session: from its Registered to its end.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub worker: usize,
    pub start: f64,
    pub end: f64,
}

#[derive(Clone, Debug)]
pub struct KillRecord {
    pub worker: usize,
    pub at: f64,
    pub down_s: f64,
}

/// Everything the fleet recorded.
#[derive(Default)]
pub struct Records {
    pub attempts: Vec<AttemptRecord>,
    pub loads: Vec<LoadRecord>,
    pub sessions: Vec<SessionRecord>,
    pub kills: Vec<KillRecord>,
    /// Lateness of every wake-up, simulated seconds.
    pub lateness: Vec<f64>,
    /// Streams that failed without a kill (should be none).
    pub stream_errors: Vec<String>,
}

/// One simulated worker's fixed description.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    pub id: String,
    /// Its GPU group in the trace; None for a CPU worker.
    pub gpu: Option<usize>,
    pub slots: u32,
}

/// What every simulated worker shares.
pub struct SimContext {
    pub clock: Arc<Clock>,
    pub trace: Arc<Trace>,
    pub address: String,
    /// The stand-in output every result names.
    pub output_uri: String,
    pub records: Mutex<Records>,
    models: HashMap<String, usize>,
}

impl SimContext {
    pub fn new(clock: Arc<Clock>, trace: Arc<Trace>, address: String, output_uri: String) -> Self {
        let models = trace
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        Self {
            clock,
            trace,
            address,
            output_uri,
            records: Mutex::default(),
            models,
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A worker's state that the kill schedule reads and acts on.
#[derive(Default)]
struct Live {
    session: Option<CancellationToken>,
    connected: bool,
    running: Option<v1::TaskKind>,
    /// Set by a kill: the simulated seconds until it comes back.
    down_s: Option<f64>,
}

pub struct WorkerHandle {
    index: usize,
    spec: WorkerSpec,
    live: Mutex<Live>,
    /// Resident models, most recently used first (kept across sessions, lost on a kill).
    pool: Mutex<Vec<usize>>,
}

impl WorkerHandle {
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn killed(&self) -> bool {
        self.live().down_s.is_some()
    }
}

/// The simulated workers of one run.
pub struct Fleet {
    ctx: Arc<SimContext>,
    handles: Vec<Arc<WorkerHandle>>,
    joins: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Fleet {
    pub fn start(ctx: Arc<SimContext>, specs: Vec<WorkerSpec>) -> Self {
        let shutdown = CancellationToken::new();
        let handles: Vec<Arc<WorkerHandle>> = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                Arc::new(WorkerHandle {
                    index,
                    spec,
                    live: Mutex::default(),
                    pool: Mutex::default(),
                })
            })
            .collect();
        let joins = handles
            .iter()
            .map(|h| tokio::spawn(worker_main(ctx.clone(), h.clone(), shutdown.clone())))
            .collect();
        Self {
            ctx,
            handles,
            joins,
            shutdown,
        }
    }

    pub fn specs(&self) -> Vec<WorkerSpec> {
        self.handles.iter().map(|h| h.spec.clone()).collect()
    }

    /// Kills `count` connected GPU workers, those running a DENOISE first, chosen at
    /// random among equals; each comes back after `down_s`. Returns their indexes.
    pub fn kill(&self, count: u32, down_s: f64, rng: &mut impl rand::Rng) -> Vec<usize> {
        let mut denoising = Vec::new();
        let mut others = Vec::new();
        for h in self.handles.iter().filter(|h| h.spec.gpu.is_some()) {
            let live = h.live();
            if !live.connected || live.down_s.is_some() {
                continue;
            }
            if live.running == Some(v1::TaskKind::Denoise) {
                denoising.push(h.clone());
            } else {
                others.push(h.clone());
            }
        }
        denoising.shuffle(rng);
        others.shuffle(rng);
        let now = self.ctx.clock.now();
        let mut killed = Vec::new();
        for h in denoising.into_iter().chain(others).take(count as usize) {
            let mut live = h.live();
            live.down_s = Some(down_s);
            if let Some(s) = &live.session {
                s.cancel();
            }
            killed.push(h.index);
            self.ctx.records().kills.push(KillRecord {
                worker: h.index,
                at: now,
                down_s,
            });
        }
        killed
    }

    /// Workers registered now.
    pub fn connected(&self) -> usize {
        self.handles.iter().filter(|h| h.live().connected).count()
    }

    /// Ends every session (running attempts are recorded as unfinished) and returns what
    /// the fleet recorded.
    pub async fn stop(self) -> Records {
        self.shutdown.cancel();
        for j in self.joins {
            let _ = j.await;
        }
        std::mem::take(&mut *self.ctx.records())
    }
}

/// How a session ended.
enum SessionEnd {
    Shutdown,
    Killed(f64),
    Broken(String),
}

async fn worker_main(ctx: Arc<SimContext>, handle: Arc<WorkerHandle>, shutdown: CancellationToken) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let session = shutdown.child_token();
        handle.live().session = Some(session.clone());
        let end = session_run(&ctx, &handle, &session, &shutdown).await;
        {
            let mut live = handle.live();
            live.session = None;
            live.connected = false;
            live.running = None;
        }
        match end {
            SessionEnd::Shutdown => return,
            SessionEnd::Killed(down_s) => {
                // The process died: its GPU memory is gone with it.
                handle.pool().clear();
                let back = ctx.clock.now() + down_s;
                tokio::select! {
                    _ = ctx.clock.sleep_until(back) => {}
                    _ = shutdown.cancelled() => return,
                }
                handle.live().down_s = None;
            }
            SessionEnd::Broken(e) => {
                ctx.records()
                    .stream_errors
                    .push(format!("{}: {e}", handle.spec.id));
                tokio::select! {
                    _ = tokio::time::sleep(REDIAL) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// The attempts a session runs, by token, for CancelTask and PreemptTask.
#[derive(Clone)]
struct AttemptControl {
    cancel: CancellationToken,
    /// When a PreemptTask for the attempt arrived.
    preempt: Arc<Mutex<Option<f64>>>,
}

impl AttemptControl {
    fn preempted_at(&self) -> Option<f64> {
        *self.preempt.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Running = Arc<Mutex<HashMap<(String, String, u64), AttemptControl>>>;

fn key(t: &v1::AttemptToken) -> (String, String, u64) {
    (t.job_id.clone(), t.task_id.clone(), t.attempt)
}

fn register(ctx: &SimContext, handle: &WorkerHandle) -> v1::WorkerMessage {
    let trace = &ctx.trace;
    let mut r = v1::RegisterWorker {
        worker_id: handle.spec.id.clone(),
        engine: "cpu".into(),
        slots: handle.spec.slots,
        hostname: "bench-farm".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    if let Some(g) = handle.spec.gpu {
        let group = &trace.gpus[g];
        let total = group.memory_bytes();
        r.engine = "cuda".into();
        r.gpu_model = format!("simulated {} GiB GPU", group.memory_gib);
        r.gpu_memory_bytes = total;
        r.free_memory_bytes = total;
        r.gpu = Some(v1::GpuDevice {
            ordinal: 0,
            name: r.gpu_model.clone(),
            uuid: format!("GPU-sim-{}", handle.spec.id),
            compute_capability: "9.0".into(),
            total_memory_bytes: total,
            free_memory_bytes: total,
            driver_cuda_version: "12.8".into(),
        });
        r.models = trace
            .models
            .iter()
            .map(|m| v1::ServedModel {
                name: m.name.clone(),
                family: "wan2.1-t2v".into(),
                parameters: (m.parameters_b * 1e9) as u64,
                dtypes: vec!["BF16".into()],
                weight_bytes: m.weight_bytes(),
                not_servable: vec![],
                // Simulated workers do not batch: the trace's step times are per clip.
                max_batch: 1,
            })
            .collect();
        r.resident = resident(trace, &handle.pool());
        r.model_memory_budget_bytes = group.pool_budget();
    }
    v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Register(r)),
    }
}

fn resident(trace: &Trace, pool: &[usize]) -> Vec<v1::ResidentModel> {
    pool.iter()
        .map(|&m| v1::ResidentModel {
            name: trace.models[m].name.clone(),
            weight_bytes: trace.models[m].weight_bytes(),
            memory: "gpu".into(),
        })
        .collect()
}

async fn session_run(
    ctx: &Arc<SimContext>,
    handle: &Arc<WorkerHandle>,
    session: &CancellationToken,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let ended = |handle: &WorkerHandle| match handle.live().down_s {
        Some(d) => SessionEnd::Killed(d),
        None => SessionEnd::Shutdown,
    };
    let dial = tokio::select! {
        c = WorkerServiceClient::connect(ctx.address.clone()) => c,
        _ = session.cancelled() => return ended(handle),
    };
    let mut client = match dial {
        Ok(c) => c,
        Err(e) => return SessionEnd::Broken(format!("connect: {e}")),
    };
    let (out, out_rx) = mpsc::channel(1024);
    if out.send(register(ctx, handle)).await.is_err() {
        return SessionEnd::Broken("outbound closed".into());
    }
    let opened = tokio::select! {
        r = client.session(ReceiverStream::new(out_rx)) => r,
        _ = session.cancelled() => return ended(handle),
    };
    let mut inbound = match opened {
        Ok(r) => r.into_inner(),
        Err(s) => return SessionEnd::Broken(format!("session: {s}")),
    };
    let running: Running = Arc::default();
    let mut attempts = tokio::task::JoinSet::new();
    let mut started = None;
    let end = loop {
        let msg = tokio::select! {
            biased;
            _ = session.cancelled() => break ended(handle),
            m = inbound.message() => m,
        };
        let body = match msg {
            Ok(Some(m)) => m.body,
            Ok(None) => break SessionEnd::Broken("the coordinator closed the stream".into()),
            Err(s) => break SessionEnd::Broken(format!("stream: {s}")),
        };
        match body {
            Some(v1::coordinator_message::Body::Registered(_)) => {
                started = Some(ctx.clock.now());
                handle.live().connected = true;
            }
            Some(v1::coordinator_message::Body::Assignments(a)) => {
                for assignment in a.items {
                    let Some(token) = assignment.token.clone() else {
                        continue;
                    };
                    let control = AttemptControl {
                        cancel: session.child_token(),
                        preempt: Arc::default(),
                    };
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key(&token), control.clone());
                    attempts.spawn(attempt(
                        ctx.clone(),
                        handle.clone(),
                        assignment,
                        control,
                        out.clone(),
                        running.clone(),
                        shutdown.clone(),
                    ));
                }
            }
            Some(v1::coordinator_message::Body::Cancel(c)) => {
                if let Some(c) = c.token.and_then(|t| {
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&key(&t))
                        .cloned()
                }) {
                    c.cancel.cancel();
                }
            }
            Some(v1::coordinator_message::Body::Preempt(p)) => {
                if let Some(c) = p.token.and_then(|t| {
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&key(&t))
                        .cloned()
                }) {
                    c.preempt
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(ctx.clock.now());
                }
            }
            // No content checks are sent to a farm without VerifyContent calls.
            Some(v1::coordinator_message::Body::Verify(_)) | None => {}
        }
    };
    // Killed: nothing more goes out. The attempts stop where they are and say so.
    session.cancel();
    while attempts.join_next().await.is_some() {}
    drop(out);
    drop(inbound);
    drop(client);
    if let Some(start) = started {
        ctx.records().sessions.push(SessionRecord {
            worker: handle.index,
            start,
            end: ctx.clock.now(),
        });
    }
    end
}

/// The job's shape as the assignment's spec carries it (defaults filled in by the
/// coordinator), for its simulated times.
fn shape(ctx: &SimContext, spec: &v1::JobSpec) -> Option<TraceJob> {
    let model = if spec.model.is_empty() {
        0
    } else {
        *ctx.models.get(&spec.model)?
    };
    let fps = if spec.fps == 0 { FPS } else { spec.fps };
    Some(TraceJob {
        index: 0,
        arrival_s: 0.0,
        tenant: 0,
        priority: Default::default(),
        model,
        frames: ((spec.duration_seconds * f64::from(fps)).round() as u32).max(1),
        width: spec.width,
        height: spec.height,
        steps: spec.steps,
        audio: spec.audio.unwrap_or(true),
    })
}

/// Why an attempt stopped before its end.
struct Stopped;

/// One attempt, from its assignment to its result (or its stop).
async fn attempt(
    ctx: Arc<SimContext>,
    handle: Arc<WorkerHandle>,
    a: v1::Assignment,
    control: AttemptControl,
    out: mpsc::Sender<v1::WorkerMessage>,
    running: Running,
    shutdown: CancellationToken,
) {
    let token = a.token.clone().expect("checked by the session");
    let kind = v1::TaskKind::try_from(a.kind).unwrap_or(v1::TaskKind::Unspecified);
    let clock = ctx.clock.clone();
    let start = clock.now();
    if handle.spec.gpu.is_some() {
        handle.live().running = Some(kind);
    }
    let mut rec = AttemptRecord {
        worker: handle.index,
        job_id: token.job_id.clone(),
        kind,
        attempt: token.attempt,
        start,
        end: start,
        outcome: Outcome::Done,
        resume_step: a.resume.as_ref().map_or(0, |c| c.step),
        steps_reached: 0,
        last_step_end: start,
        load_s: 0.0,
        checkpoint_s: 0.0,
        checkpoints: 0,
        preempt_at: None,
    };
    rec.steps_reached = rec.resume_step;
    let mut lateness = Vec::new();
    let ran = run(
        &ctx,
        &handle,
        &a,
        kind,
        &control,
        &out,
        &mut rec,
        &mut lateness,
    )
    .await;
    rec.end = clock.now();
    rec.preempt_at = control.preempted_at();
    rec.outcome = match ran {
        Ok(outcome) => outcome,
        Err(Stopped) if handle.killed() => Outcome::Killed,
        Err(Stopped) if shutdown.is_cancelled() => Outcome::Unfinished,
        Err(Stopped) => Outcome::Cancelled,
    };
    running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key(&token));
    if handle.spec.gpu.is_some() {
        handle.live().running = None;
    }
    let mut records = ctx.records();
    records.attempts.push(rec);
    records.lateness.extend(lateness);
}

#[allow(clippy::too_many_arguments)]
async fn run(
    ctx: &SimContext,
    handle: &WorkerHandle,
    a: &v1::Assignment,
    kind: v1::TaskKind,
    control: &AttemptControl,
    out: &mpsc::Sender<v1::WorkerMessage>,
    rec: &mut AttemptRecord,
    lateness: &mut Vec<f64>,
) -> Result<Outcome, Stopped> {
    let clock = &ctx.clock;
    let trace = &ctx.trace;
    let token = a.token.clone().expect("checked");
    let job = a.spec.as_ref().and_then(|s| shape(ctx, s));
    // The deadline of the next wake-up, chained from the attempt's start.
    let mut t = rec.start;
    let sleep = |until: f64| {
        let cancel = control.cancel.clone();
        async move {
            tokio::select! {
                late = clock.sleep_until(until) => Ok(late),
                _ = cancel.cancelled() => Err(Stopped),
            }
        }
    };
    // A closed stream: the session is ending; the attempt finds out at its next sleep.
    let send = |body: v1::worker_message::Body| async move {
        let _ = out.send(v1::WorkerMessage { body: Some(body) }).await;
    };
    let model_task = matches!(
        kind,
        v1::TaskKind::TextEncode | v1::TaskKind::Denoise | v1::TaskKind::Decode
    );
    let Some(job) = job else {
        // Not a trace job (nothing else is submitted): answer at once.
        send(result(token, &ctx.output_uri)).await;
        return Ok(Outcome::Done);
    };
    if model_task {
        if let Some(g) = handle.spec.gpu {
            let m = job.model;
            let held = {
                let mut pool = handle.pool();
                match pool.iter().position(|&x| x == m) {
                    Some(i) => {
                        let x = pool.remove(i);
                        pool.insert(0, x);
                        true
                    }
                    None => false,
                }
            };
            if !held {
                let budget = trace.gpus[g].pool_budget();
                let need = trace.models[m].weight_bytes();
                let evicted = {
                    let mut pool = handle.pool();
                    let mut evicted = Vec::new();
                    while !pool.is_empty()
                        && pool
                            .iter()
                            .map(|&x| trace.models[x].weight_bytes())
                            .sum::<u64>()
                            + need
                            > budget
                    {
                        evicted.push(pool.pop().expect("non-empty"));
                    }
                    evicted
                };
                let load_start = clock.now();
                t += trace.models[m].load_s;
                let loaded = sleep(t).await;
                rec.load_s = clock.now() - load_start;
                ctx.records().loads.push(LoadRecord {
                    worker: handle.index,
                    model: m,
                    start: load_start,
                    interrupted: loaded.is_err(),
                    evicted,
                });
                lateness.push(loaded?);
                let now_resident = {
                    let mut pool = handle.pool();
                    pool.insert(0, m);
                    resident(trace, &pool)
                };
                send(v1::worker_message::Body::Status(v1::WorkerStatus {
                    resident: now_resident,
                    gpu_free_memory_bytes: 0,
                }))
                .await;
            }
        }
    }
    rec.last_step_end = clock.now();
    if kind != v1::TaskKind::Denoise {
        t += job.task_s(trace, kind);
        lateness.push(sleep(t).await?);
        send(result(token, &ctx.output_uri)).await;
        return Ok(Outcome::Done);
    }
    let total = job.steps;
    let step_s = job.step_s(trace);
    let every = trace.checkpoint_every_steps;
    let steps_per_second = clock.scale() / step_s.max(1e-9);
    let mut last_progress: Option<Instant> = None;
    let mut step = rec.resume_step.min(total);
    while step < total {
        t += step_s;
        lateness.push(sleep(t).await?);
        step += 1;
        rec.steps_reached = step;
        rec.last_step_end = clock.now();
        if last_progress.is_none_or(|p| p.elapsed() >= PROGRESS_EVERY) || step == total {
            last_progress = Some(Instant::now());
            send(v1::worker_message::Body::Progress(v1::TaskProgress {
                token: Some(token.clone()),
                step,
                total_steps: total,
                steps_per_second,
            }))
            .await;
        }
        let preempting = control.preempted_at().is_some();
        if step < total && (preempting || step.is_multiple_of(every)) {
            let began = clock.now();
            t += trace.checkpoint_cost_s;
            let saved = sleep(t).await;
            rec.checkpoint_s += clock.now() - began;
            lateness.push(saved?);
            rec.checkpoints += 1;
            send(v1::worker_message::Body::Checkpoint(v1::TaskCheckpoint {
                token: Some(token.clone()),
                checkpoint: Some(v1::Checkpoint {
                    step,
                    output: Some(v1::Output {
                        kind: "checkpoint".into(),
                        uri: ctx.output_uri.clone(),
                        sha256: String::new(),
                        bytes: 0,
                    }),
                }),
            }))
            .await;
            if preempting {
                send(v1::worker_message::Body::HandBack(v1::HandBack {
                    token: Some(token),
                    reason: "preempted".into(),
                    preempted: true,
                }))
                .await;
                return Ok(Outcome::Preempted);
            }
        }
    }
    send(result(token, &ctx.output_uri)).await;
    Ok(Outcome::Done)
}

fn result(token: v1::AttemptToken, uri: &str) -> v1::worker_message::Body {
    v1::worker_message::Body::Result(v1::TaskResult {
        token: Some(token),
        ok: true,
        outputs: vec![v1::Output {
            kind: "sim".into(),
            uri: uri.to_string(),
            ..Default::default()
        }],
        ..Default::default()
    })
}
