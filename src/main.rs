//! `reelfarm`: the command-line client of a reelfarm coordinator, the embedded demo farm,
//! and the benchmarks. See `reelfarm --help` and the README.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use reelfarm::cmd::{self, spec_args::SpecArgs};
use reelfarm::output::Format;
use reelfarm_proto::v1;

#[derive(Parser)]
#[command(
    name = "reelfarm",
    version,
    about = "reelfarm: generative video render farm — client, demo and benchmarks"
)]
struct Cli {
    /// Coordinator gRPC address(es), comma-separated: the replicas of one cluster; the
    /// leader among them is found and used.
    #[arg(
        long,
        global = true,
        env = "REELFARM_COORDINATOR",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7070"
    )]
    coordinator: Vec<String>,

    /// API key to present (`authorization: Bearer KEY`), for a coordinator with
    /// authentication on.
    #[arg(long, global = true, env = "REELFARM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// PEM CA certificate that signed the coordinator's --tls-cert, for `https://`
    /// addresses (default: the system's roots).
    #[arg(long, global = true, env = "REELFARM_CA_CERT")]
    ca_cert: Option<PathBuf>,

    /// Output format.
    #[arg(
        long,
        global = true,
        env = "REELFARM_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    output: Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a job.
    Submit {
        #[command(flatten)]
        spec: SpecArgs,
        /// Idempotency key: resubmitting with the same key returns the first job.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the job until it ends (progress bar; exit status says how it ended).
        #[arg(long)]
        watch: bool,
    },
    /// Show a job.
    Get { id: String },
    /// List jobs, newest first.
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long, value_parser = parse_state)]
        state: Option<v1::JobState>,
        /// "key" or "key=value".
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Follow a job until it ends.
    Watch { id: String },
    /// Cancel a job.
    Cancel { id: String },
    /// The cluster at a glance: leader, term, counts, unfinished jobs per tenant.
    Status,
    /// List connected workers.
    Workers,
    /// Stop giving a worker new tasks; it finishes those it runs. Holds across the worker's
    /// reconnects and coordinator failovers until `uncordon`.
    Drain { id: String },
    /// Lift `drain`: the worker takes tasks again.
    Uncordon { id: String },
    /// API keys: create, list, revoke (needs an admin key).
    #[command(subcommand)]
    Keys(Keys),
    /// List the prompt words the scene parser understands.
    Words,
    /// Run a whole farm in this process (in-memory state, local workers) on one job.
    Demo {
        #[command(flatten)]
        spec: SpecArgs,
        /// Workers to start.
        #[arg(long, default_value_t = 3)]
        workers: u32,
        /// Where the artifacts go.
        #[arg(long, default_value = "reelfarm-demo")]
        out: PathBuf,
    },
    /// Benchmarks (JSON on stdout).
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// The scheduler alone: simulated workers over the real gRPC stream.
    Sched {
        /// Simulated worker counts, one run each.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        workers: Vec<u32>,
        /// Task slots over all workers (split evenly).
        #[arg(long, default_value_t = 1000)]
        total_slots: u32,
        /// Tasks per run (rounded up to whole jobs of 67 tasks).
        #[arg(long, default_value_t = 50_000)]
        tasks: u32,
        /// State backends: memory, etcd.
        #[arg(long, value_delimiter = ',', default_value = "memory,etcd")]
        backend: Vec<String>,
        /// etcd endpoint; default: start a temporary etcd if `etcd` is on PATH.
        #[arg(long)]
        etcd: Option<String>,
        /// Simulated task duration in milliseconds of the saturated run (0: answer at once).
        #[arg(long, default_value_t = 0)]
        task_ms: u64,
        /// Offered load of the second, latency run per worker count, as a fraction of the
        /// saturated throughput just measured (tasks then take slots / load seconds, ±50 %);
        /// 0 skips it.
        #[arg(long, default_value_t = 0.5)]
        latency_load: f64,
        /// Tenants the jobs are spread over (round-robin, equal weights): the fair-share
        /// queue's cost with many tenants backlogged at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        tenants: u32,
        /// Skip the transport floor: after each saturated run the same workers run against
        /// a server that only echoes an assignment per result, the most any scheduler could
        /// do over one stream per worker on this machine.
        #[arg(long)]
        no_floor: bool,
    },
    /// A trace of model jobs replayed against the real coordinator with simulated GPU
    /// workers (compressed time): farm placement against round-robin; JSON, or a table
    /// with --output text.
    Farm(cmd::bench::farm::FarmArgs),
    /// Sustained load: SubmitJob at a fixed rate against a coordinator process with
    /// simulated workers; accepted, refused and the coordinator's memory.
    Load {
        /// Submissions per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// How long to submit.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// The coordinator's --max-queued-jobs (the bounded queue).
        #[arg(long, default_value_t = 10_000)]
        max_queued_jobs: usize,
        /// The coordinator's --retain-finished-jobs.
        #[arg(long, default_value_t = 10_000)]
        retain_finished_jobs: usize,
        /// Simulated workers.
        #[arg(long, default_value_t = 50)]
        workers: u32,
        /// Task slots per simulated worker.
        #[arg(long, default_value_t = 20)]
        slots: u32,
        /// Simulated task duration in milliseconds.
        #[arg(long, default_value_t = 20)]
        task_ms: u64,
        /// etcd endpoint for the coordinator's state (default: in memory).
        #[arg(long)]
        etcd: Option<String>,
    },
    /// Per-stage timings of the reference pipeline on the CPU engine, one clip per size.
    Pipeline {
        /// Frame sizes, WIDTHxHEIGHT, one run each.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "320x180,640x360,1920x1080"
        )]
        sizes: Vec<String>,
        /// Clip length in seconds.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Frames per second.
        #[arg(long, default_value_t = 12)]
        fps: u32,
        /// Diffusion steps per frame.
        #[arg(long, default_value_t = 20)]
        steps: u32,
        /// Leave the audio stage out.
        #[arg(long)]
        no_audio: bool,
        /// Engines, each run on every size: cpu, cuda (device 0; needs the binary built with
        /// `--features cuda`).
        #[arg(long, value_delimiter = ',', default_value = "cpu")]
        engine: Vec<String>,
    },
    /// Wan 2.1 model stages (seconds per denoising step with CFG, per VAE decode, per text
    /// encoding; peak memory), beside diffusers + PyTorch on the same machine, device,
    /// dtype, threads, weights and inputs, in the same run.
    Model {
        /// wan-tiny-a or wan-tiny-b (the test fixtures), 1.3b (the real Wan2.1-T2V-1.3B
        /// transformer and Wan VAE architectures with random weights), or a path to a
        /// diffusers model folder.
        #[arg(long, default_value = "wan-tiny-a")]
        config: String,
        /// Clip length in frames (WanPipeline's num_frames: 4k + 1 for Wan's VAE).
        #[arg(long, default_value_t = 17)]
        frames: usize,
        /// Frame height in pixels (a multiple of 16 for Wan).
        #[arg(long, default_value_t = 128)]
        height: usize,
        /// Frame width in pixels (a multiple of 16 for Wan).
        #[arg(long, default_value_t = 128)]
        width: usize,
        /// Text tokens of the prompt embeddings (WanPipeline's max_sequence_length).
        #[arg(long, default_value_t = 512)]
        text_len: usize,
        /// CPU threads for both sides (RAYON_NUM_THREADS for ours, torch.set_num_threads for
        /// PyTorch); default: every CPU.
        #[arg(long)]
        threads: Option<usize>,
        /// Untimed runs per stage before the timed ones.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Timed runs per stage (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Stages to run: text, transformer, vae.
        #[arg(long, value_delimiter = ',', default_value = "text,transformer,vae")]
        stages: Vec<String>,
        /// Python with torch, diffusers and transformers, for the PyTorch side
        /// (models/bench/torch_model_bench.py).
        #[arg(long, default_value = "python3")]
        python: String,
        /// Leave the PyTorch side out.
        #[arg(long)]
        no_pytorch: bool,
        /// cpu, or cuda (device 0, for both sides; needs the binary built with `--features
        /// cuda`).
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
        /// f32 or bf16 for the transformer and the text encoder (the VAE runs in f32 on every
        /// device, as WanPipeline's users run it).
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
        dtype: String,
        /// Folder for the plan, the inputs, both sides' outputs and 1.3b's random weights,
        /// kept afterwards (to profile one stage: `--stage S --work DIR` runs it alone);
        /// default: a temporary folder, removed at the end.
        #[arg(long)]
        work: Option<PathBuf>,
        /// Internal: run one stage of the plan in --work (the bench's child process).
        #[arg(long, hide = true, requires = "work")]
        stage: Option<String>,
    },
    /// Batching across jobs: N clips denoised one after another against the same N as one
    /// batch (a worker's --max-batch), in the same run.
    Batch(cmd::bench::batch::BatchArgs),
}

fn parse_state(s: &str) -> Result<v1::JobState, String> {
    v1::JobState::from_str_name(&format!("JOB_STATE_{}", s.to_ascii_uppercase()))
        .filter(|s| *s != v1::JobState::Unspecified)
        .ok_or_else(|| {
            format!("unknown state {s:?}: queued, running, succeeded, failed or cancelled")
        })
}

#[derive(Subcommand)]
enum Keys {
    /// Create a key; prints it once (the coordinator keeps only its hash).
    Create {
        /// The tenant its jobs belong to (optional for an admin key).
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, value_enum)]
        role: cmd::keys::Role,
        /// Who holds it, what for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List keys (ids, tenants, roles; never secrets), newest first.
    List {
        /// Only this tenant's keys.
        #[arg(long, default_value = "")]
        tenant: String,
    },
    /// Revoke a key: its id (as `create` and `list` print it) or the key itself.
    Revoke { id: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    reelfarm_telemetry::init_tracing_with_default(false, "warn");
    let target = reelfarm::client::Target::new(
        cli.coordinator,
        cli.api_key.as_deref(),
        cli.ca_cert.as_deref(),
    )?;
    let c = &target;
    let f = cli.output;
    match cli.command {
        Command::Submit {
            spec,
            idempotency_key,
            watch,
        } => cmd::submit::run(c, &spec, idempotency_key, watch, f).await,
        Command::Get { id } => cmd::get::run(c, &id, f).await,
        Command::List {
            tenant,
            state,
            label,
            page_size,
            all,
        } => {
            cmd::list::run(
                c,
                cmd::list::ListArgs {
                    tenant,
                    state,
                    label,
                    page_size,
                    all,
                },
                f,
            )
            .await
        }
        Command::Watch { id } => cmd::watch::run(c, &id, f).await,
        Command::Cancel { id } => cmd::cancel::run(c, &id, f).await,
        Command::Status => cmd::status::run(c, f).await,
        Command::Workers => cmd::workers::list(c, f).await,
        Command::Drain { id } => cmd::workers::drain(c, &id, f).await,
        Command::Uncordon { id } => cmd::workers::uncordon(c, &id, f).await,
        Command::Keys(Keys::Create {
            tenant,
            role,
            description,
        }) => cmd::keys::create(c, tenant, role, description, f).await,
        Command::Keys(Keys::List { tenant }) => cmd::keys::list(c, tenant, f).await,
        Command::Keys(Keys::Revoke { id }) => cmd::keys::revoke(c, id, f).await,
        Command::Words => cmd::words::run(f),
        Command::Demo { spec, workers, out } => {
            cmd::demo::run(cmd::demo::DemoArgs { spec, workers, out }, f).await
        }
        Command::Bench(Bench::Sched {
            workers,
            total_slots,
            tasks,
            backend,
            etcd,
            task_ms,
            latency_load,
            tenants,
            no_floor,
        }) => {
            anyhow::ensure!(
                (0.0..1.0).contains(&latency_load),
                "--latency-load must be in [0, 1), got {latency_load}"
            );
            cmd::bench::sched::run(cmd::bench::sched::SchedArgs {
                workers,
                total_slots,
                tasks,
                backends: backend,
                etcd,
                task_ms,
                latency_load,
                tenants,
                floor: !no_floor,
            })
            .await
        }
        Command::Bench(Bench::Load {
            rate,
            seconds,
            max_queued_jobs,
            retain_finished_jobs,
            workers,
            slots,
            task_ms,
            etcd,
        }) => {
            cmd::bench::load::run(cmd::bench::load::LoadArgs {
                rate,
                seconds,
                max_queued_jobs,
                retain_finished_jobs,
                workers,
                slots,
                task_ms,
                etcd,
            })
            .await
        }
        Command::Bench(Bench::Farm(args)) => cmd::bench::farm::run(args, f).await,
        Command::Bench(Bench::Pipeline {
            sizes,
            seconds,
            fps,
            steps,
            no_audio,
            engine,
        }) => cmd::bench::pipeline::run(cmd::bench::pipeline::PipelineArgs {
            sizes,
            seconds,
            fps,
            steps,
            audio: !no_audio,
            engines: engine,
        }),
        Command::Bench(Bench::Model {
            config,
            frames,
            height,
            width,
            text_len,
            threads,
            warmup,
            repeat,
            stages,
            python,
            no_pytorch,
            device,
            dtype,
            stage,
            work,
        }) => cmd::bench::model::run(cmd::bench::model::ModelArgs {
            config,
            frames,
            height,
            width,
            text_len,
            threads,
            warmup,
            repeat,
            stages,
            python,
            pytorch: !no_pytorch,
            device,
            dtype,
            work,
            stage,
        }),
        Command::Bench(Bench::Batch(args)) => cmd::bench::batch::run(args),
    }
}
