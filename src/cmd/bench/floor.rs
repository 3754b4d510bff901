//! The transport floor of `bench sched`: the same simulated workers against a gRPC server
//! that does no scheduling at all. Its `WorkerService` answers each result with one
//! assignment copied from a template the size of a real video-segment assignment, in the
//! session's own response stream (no task, channel, state or commit in between). Run on the
//! coordinator's runtime with tonic's default server settings, as the coordinator's is, it
//! measures what one result and one assignment cost over HTTP/2 on this machine with this
//! many connections: no scheduler can hand out tasks faster over one stream per worker, so
//! the scheduler's throughput is reported as a share of this baseline from the same run.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use reelfarm_coordinator::api::{convert, validate};
use reelfarm_proto::v1::{
    self,
    worker_service_server::{WorkerService, WorkerServiceServer},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::sched::{poll_until, SimEngine, SimFleet, SimWorker, ThreadsCpu};

/// A floor run that has not finished by then is reported as timed out.
const FLOOR_TIMEOUT: Duration = Duration::from_secs(300);

/// Answers every result with the next assignment, and counts results.
struct EchoWorkers {
    template: v1::Assignment,
    results: Arc<AtomicU64>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

fn assignments(items: Vec<v1::Assignment>) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage {
        body: Some(v1::coordinator_message::Body::Assignments(
            v1::Assignments { items },
        )),
    }
}

#[tonic::async_trait]
impl WorkerService for EchoWorkers {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let slots = match inbound.message().await?.and_then(|m| m.body) {
            Some(v1::worker_message::Body::Register(r)) => r.slots,
            _ => return Err(Status::invalid_argument("register first")),
        };
        let registered = v1::CoordinatorMessage {
            body: Some(v1::coordinator_message::Body::Registered(v1::Registered {
                term: 1,
                cluster: "floor".into(),
            })),
        };
        // One assignment per slot to start, as a scheduler with a full queue would send.
        let first = assignments(vec![self.template.clone(); slots as usize]);
        let (template, results) = (self.template.clone(), self.results.clone());
        let answers = inbound.filter_map(move |m| {
            let reply = match m.map(|m| m.body) {
                Ok(Some(v1::worker_message::Body::Result(r))) => {
                    results.fetch_add(1, Ordering::Relaxed);
                    let mut next = template.clone();
                    next.token = r.token;
                    Some(Ok(assignments(vec![next])))
                }
                Ok(_) => None,
                Err(status) => Some(Err(status)),
            };
            std::future::ready(reply)
        });
        let stream = futures::stream::iter([Ok(registered), Ok(first)]).chain(answers);
        Ok(Response::new(Box::pin(stream) as SessionStream))
    }
}

/// A video-segment assignment of the bench's job spec (defaults filled in as the
/// coordinator fills them), with the plan's output as its input: the size of what the
/// scheduler sends per task.
fn template(spec: &v1::JobSpec, output_uri: &str) -> anyhow::Result<v1::Assignment> {
    let spec = validate::job_spec(Some(spec)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let output = v1::Output {
        kind: "plan".into(),
        uri: output_uri.to_string(),
        sha256: "0".repeat(64),
        bytes: 4096,
    };
    Ok(v1::Assignment {
        token: Some(v1::AttemptToken {
            job_id: uuid::Uuid::new_v4().to_string(),
            task_id: "segment-0000".into(),
            attempt: 1,
            term: 1,
        }),
        kind: v1::TaskKind::VideoSegment as i32,
        spec: Some(convert::spec(&spec)),
        frame_start: 0,
        frame_end: 12,
        segment_index: 0,
        segment_count: 64,
        inputs: vec![v1::TaskInput {
            kind: "plan".into(),
            segment_index: 0,
            output: Some(output),
        }],
        resume: None,
        batch: None,
    })
}

/// What a floor run needs.
pub(super) struct FloorRun<'a> {
    pub runtime: &'a tokio::runtime::Handle,
    /// Name of the runtime's threads, whose CPU time is the server's.
    pub threads: &'static str,
    pub workers: u32,
    pub slots: u32,
    /// How the simulated workers answer: at once (saturated) or after a task time.
    pub engine: SimEngine,
    pub tasks: u64,
}

/// Runs `tasks` results through the echo server and reports its throughput, its CPU per
/// task and the hand-off latency the workers saw (every hand-off: work is always waiting).
pub(super) async fn run(f: FloorRun<'_>) -> anyhow::Result<serde_json::Value> {
    // Nothing reads it: a path as long as a real artifact's, for realistic message sizes.
    let output_uri = format!(
        "file://{}/jobs/{}/plan/scene.json",
        std::env::temp_dir().display(),
        uuid::Uuid::new_v4()
    );
    let results = Arc::new(AtomicU64::new(0));
    let service = EchoWorkers {
        template: template(&super::sched::bench_spec(), &output_uri)?,
        results: results.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = {
        let shutdown = shutdown.clone();
        // Built as the coordinator builds its server: tonic's defaults (TCP_NODELAY on).
        f.runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(service))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown.cancelled_owned(),
                ),
        )
    };

    let cpu = ThreadsCpu::named(f.threads);
    let started = Instant::now();
    let fleet = SimFleet::start(
        f.workers,
        &SimWorker {
            address,
            id: "floor".into(),
            output_uri,
            slots: f.slots,
            engine: f.engine,
            // Work is always waiting: every hand-off counts as dispatch latency.
            work_waiting: Arc::new(|| true),
        },
    );
    let timed_out = poll_until(FLOOR_TIMEOUT, || results.load(Ordering::Relaxed) >= f.tasks).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_s = cpu.used_since();
    let done = results.load(Ordering::Relaxed);
    let s = fleet.stop().await;
    shutdown.cancel();
    server.await??;

    Ok(serde_json::json!({
        "tasks": done,
        "seconds": seconds,
        "tasks_per_second": done as f64 / seconds,
        "server_cpu_seconds": cpu_s,
        "server_tasks_per_cpu_second": done as f64 / cpu_s.max(1e-9),
        "dispatch_latency_ms": s.latency_ms(),
        "timed_out": timed_out,
    }))
}
