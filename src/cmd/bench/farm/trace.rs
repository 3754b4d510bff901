//! The trace `bench farm` replays: models, GPU workers, tenants, bursts of jobs and worker
//! kills (the JSON format is documented in the parent module), checked and expanded into
//! one job per submission, with each job's simulated GPU times.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context as _;
use reelfarm_coordinator::scheduler::TenantWeights;
use reelfarm_proto::v1;
use serde::Deserialize;

/// Frames per second of every trace job: Wan 2.1 renders 16 fps.
pub const FPS: u32 = 16;
/// Wan 2.1's VAE compresses time 4× (after the first frame) and space 8×, and the
/// transformer patches latents 2×2: a clip of F frames of W×H pixels is
/// ((F − 1) / 4 + 1) × (H / 16) × (W / 16) tokens.
const FRAME_GROUP: u32 = 4;
const PIXELS_PER_TOKEN_SIDE: u32 = 16;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seeds the choice of the workers killed.
    #[serde(default)]
    pub seed: u64,
    /// Simulated seconds per wall-clock second unless `--time-scale` says otherwise.
    pub time_scale: f64,
    /// Workers checkpoint a DENOISE after every this many steps (`--checkpoint-every-steps`).
    pub checkpoint_every_steps: u32,
    /// Simulated seconds a checkpoint costs the worker (writing latents and sampler state).
    pub checkpoint_cost_s: f64,
    /// The coordinator's `--affinity-wait-ms`, in simulated seconds (scaled to wall time).
    pub affinity_wait_s: f64,
    /// The coordinator's `--preemption-min-interval-seconds`, simulated (scaled).
    pub preemption_min_interval_s: f64,
    /// Simulated seconds of the CPU tasks of a model job.
    pub cpu_task_s: CpuTaskTimes,
    /// Workers without a GPU (engine "cpu", serving no model) for PLAN, AUDIO, ASSEMBLE.
    pub cpu_workers: CpuWorkers,
    pub models: Vec<ModelDef>,
    pub gpus: Vec<GpuGroup>,
    pub tenants: Vec<TenantDef>,
    pub bursts: Vec<Burst>,
    #[serde(default)]
    pub kills: Vec<Kill>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTaskTimes {
    pub plan: f64,
    pub audio: f64,
    pub assemble: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuWorkers {
    pub count: u32,
    pub slots: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDef {
    pub name: String,
    /// Bytes of the weights as loaded (bf16), in GB (10⁹ bytes): ServedModel.weight_bytes.
    pub weight_gb: f64,
    /// Parameters, in billions (ServedModel.parameters).
    pub parameters_b: f64,
    /// Simulated seconds to load it onto a GPU that does not hold it.
    pub load_s: f64,
    /// Simulated seconds of one guided denoising step per 10,000 latent tokens.
    pub step_s_per_10k_tokens: f64,
    /// Simulated seconds of a TEXT_ENCODE.
    pub text_s: f64,
    /// Simulated seconds of the VAE decode per megapixel-frame.
    pub decode_s_per_mpixel_frame: f64,
}

impl ModelDef {
    pub fn weight_bytes(&self) -> u64 {
        (self.weight_gb * 1e9) as u64
    }

    /// GPU memory the coordinator requires for it: the weights and a fifth more.
    pub fn gpu_need(&self) -> u64 {
        let w = self.weight_bytes();
        w + w / 5
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuGroup {
    /// Device memory in GiB (2³⁰ bytes), as a GPU's name says it (24, 48, 80).
    pub memory_gib: f64,
    pub count: u32,
}

impl GpuGroup {
    pub fn memory_bytes(&self) -> u64 {
        (self.memory_gib * (1u64 << 30) as f64) as u64
    }

    /// The worker's model pool: weights of at most four fifths of the device, the real
    /// worker's default `--model-memory-gib`.
    pub fn pool_budget(&self) -> u64 {
        self.memory_bytes() / 5 * 4
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDef {
    pub name: String,
    /// The coordinator's `--tenant-weights` entry, 1..=1000.
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::High];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    pub fn proto(self) -> v1::Priority {
        match self {
            Priority::Low => v1::Priority::Low,
            Priority::Normal => v1::Priority::Normal,
            Priority::High => v1::Priority::High,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Simulated second of the burst's first submission.
    pub at_s: f64,
    /// The burst's jobs arrive evenly over this many seconds (0: all at once).
    #[serde(default)]
    pub over_s: f64,
    pub tenant: String,
    #[serde(default)]
    pub priority: Priority,
    /// Whether the jobs have an audio track (an AUDIO task on a CPU worker).
    #[serde(default = "yes")]
    pub audio: bool,
    /// Shapes, `count` jobs each, interleaved in arrival order.
    pub jobs: Vec<JobShape>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobShape {
    pub model: String,
    /// 4k + 1 (Wan's VAE), 9..=320 (0.5 to 20 s at 16 fps).
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub count: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    /// Simulated second of the kill.
    pub at_s: f64,
    /// GPU workers whose stream is dropped at once (those running a DENOISE first).
    pub workers: u32,
    /// Simulated seconds until each comes back (same id, nothing loaded).
    pub down_s: f64,
}

/// One submission of the trace.
#[derive(Clone, Debug)]
pub struct TraceJob {
    pub index: usize,
    pub arrival_s: f64,
    pub tenant: usize,
    pub priority: Priority,
    pub model: usize,
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub audio: bool,
}

/// The GPU tasks of a model job, in dependency order.
pub const GPU_TASKS: [v1::TaskKind; 3] = [
    v1::TaskKind::TextEncode,
    v1::TaskKind::Denoise,
    v1::TaskKind::Decode,
];

impl TraceJob {
    /// Latent tokens the transformer attends over (see [`FRAME_GROUP`]).
    pub fn tokens(&self) -> f64 {
        let latent_frames = (self.frames - 1) / FRAME_GROUP + 1;
        f64::from(latent_frames)
            * f64::from(self.height / PIXELS_PER_TOKEN_SIDE)
            * f64::from(self.width / PIXELS_PER_TOKEN_SIDE)
    }

    pub fn step_s(&self, trace: &Trace) -> f64 {
        trace.models[self.model].step_s_per_10k_tokens * self.tokens() / 1e4
    }

    /// Simulated seconds of one of the job's tasks (a GPU task's compute, without a load or
    /// checkpoints; a CPU task's run).
    pub fn task_s(&self, trace: &Trace, kind: v1::TaskKind) -> f64 {
        let m = &trace.models[self.model];
        match kind {
            v1::TaskKind::TextEncode => m.text_s,
            v1::TaskKind::Denoise => f64::from(self.steps) * self.step_s(trace),
            v1::TaskKind::Decode => {
                m.decode_s_per_mpixel_frame
                    * f64::from(self.frames)
                    * f64::from(self.width)
                    * f64::from(self.height)
                    / 1e6
            }
            v1::TaskKind::Plan => trace.cpu_task_s.plan,
            v1::TaskKind::Audio => trace.cpu_task_s.audio,
            v1::TaskKind::Assemble => trace.cpu_task_s.assemble,
            _ => 0.0,
        }
    }

    /// The job's GPU compute: text encoding, every denoising step, the decode.
    pub fn gpu_s(&self, trace: &Trace) -> f64 {
        GPU_TASKS.iter().map(|k| self.task_s(trace, *k)).sum()
    }

    /// The work the coordinator charges the tenant's fair share for a task
    /// (`planner::estimated_work`: the planner's weight × pixels / 1024).
    pub fn work_units(&self, kind: v1::TaskKind) -> f64 {
        let weight = match kind {
            v1::TaskKind::TextEncode => 4.0,
            v1::TaskKind::Denoise => f64::from(self.frames) * f64::from(self.steps),
            v1::TaskKind::Decode => f64::from(self.frames),
            _ => 0.0,
        };
        (weight * f64::from(self.width) * f64::from(self.height) / 1024.0).max(1.0)
    }

    pub fn spec(&self, trace: &Trace) -> v1::JobSpec {
        v1::JobSpec {
            // Unique per job: no result-cache hit, no shared text encoding.
            prompt: format!(
                "bench farm {} job {} of tenant {}",
                trace.name, self.index, trace.tenants[self.tenant].name
            ),
            duration_seconds: f64::from(self.frames) / f64::from(FPS),
            fps: FPS,
            width: self.width,
            height: self.height,
            seed: Some(self.index as u64),
            steps: self.steps,
            audio: Some(self.audio),
            priority: self.priority.proto() as i32,
            tenant: trace.tenants[self.tenant].name.clone(),
            model: trace.models[self.model].name.clone(),
            ..Default::default()
        }
    }
}

impl Trace {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let trace: Trace =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        trace
            .check()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(trace)
    }

    fn check(&self) -> anyhow::Result<()> {
        let positive = |what: &str, v: f64| {
            anyhow::ensure!(v.is_finite() && v > 0.0, "{what} must be above 0, got {v}");
            Ok(())
        };
        let non_negative = |what: &str, v: f64| {
            anyhow::ensure!(
                v.is_finite() && v >= 0.0,
                "{what} must be 0 or more, got {v}"
            );
            Ok(())
        };
        positive("time_scale", self.time_scale)?;
        anyhow::ensure!(
            self.checkpoint_every_steps > 0,
            "checkpoint_every_steps must be at least 1"
        );
        non_negative("checkpoint_cost_s", self.checkpoint_cost_s)?;
        non_negative("affinity_wait_s", self.affinity_wait_s)?;
        non_negative("preemption_min_interval_s", self.preemption_min_interval_s)?;
        for (what, v) in [
            ("cpu_task_s.plan", self.cpu_task_s.plan),
            ("cpu_task_s.audio", self.cpu_task_s.audio),
            ("cpu_task_s.assemble", self.cpu_task_s.assemble),
        ] {
            non_negative(what, v)?;
        }
        anyhow::ensure!(
            self.cpu_workers.count > 0 && (1..=4096).contains(&self.cpu_workers.slots),
            "cpu_workers needs a count of 1 or more with 1..=4096 slots (they run PLAN, AUDIO, ASSEMBLE)"
        );
        anyhow::ensure!(!self.models.is_empty(), "the trace has no models");
        let mut names = HashSet::new();
        for m in &self.models {
            anyhow::ensure!(
                !m.name.is_empty()
                    && m.name.len() <= 128
                    && m.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
                "model name {:?} must be 1..=128 characters of [A-Za-z0-9._-]",
                m.name
            );
            anyhow::ensure!(names.insert(&m.name), "model {:?} is listed twice", m.name);
            positive("weight_gb", m.weight_gb)?;
            positive("parameters_b", m.parameters_b)?;
            non_negative("load_s", m.load_s)?;
            positive("step_s_per_10k_tokens", m.step_s_per_10k_tokens)?;
            non_negative("text_s", m.text_s)?;
            non_negative("decode_s_per_mpixel_frame", m.decode_s_per_mpixel_frame)?;
            anyhow::ensure!(
                self.gpus.iter().any(|g| m.gpu_need() <= g.memory_bytes()),
                "model {:?} needs {:.1} GB of GPU memory and fits no GPU of the trace",
                m.name,
                m.gpu_need() as f64 / 1e9
            );
        }
        anyhow::ensure!(
            self.gpus.iter().map(|g| g.count).sum::<u32>() > 0,
            "the trace has no GPU workers"
        );
        for g in &self.gpus {
            positive("memory_gib", g.memory_gib)?;
        }
        // The coordinator's own parser checks the names and weights (and duplicates).
        self.tenant_weights()?;
        let tenants: HashSet<&String> = self.tenants.iter().map(|t| &t.name).collect();
        anyhow::ensure!(!self.bursts.is_empty(), "the trace has no bursts");
        for (i, b) in self.bursts.iter().enumerate() {
            non_negative("at_s", b.at_s)?;
            non_negative("over_s", b.over_s)?;
            anyhow::ensure!(
                tenants.contains(&b.tenant),
                "burst {i}: tenant {:?} is not in tenants",
                b.tenant
            );
            anyhow::ensure!(!b.jobs.is_empty(), "burst {i} has no jobs");
            for s in &b.jobs {
                anyhow::ensure!(
                    names.contains(&s.model),
                    "burst {i}: model {:?} is not in models",
                    s.model
                );
                anyhow::ensure!(
                    (s.frames - 1).is_multiple_of(FRAME_GROUP) && (9..=320).contains(&s.frames),
                    "burst {i}: frames must be 4k+1 within 9..=320 (0.5 to 20 s at {FPS} fps), got {}",
                    s.frames
                );
                anyhow::ensure!(
                    s.width.is_multiple_of(PIXELS_PER_TOKEN_SIDE)
                        && s.height.is_multiple_of(PIXELS_PER_TOKEN_SIDE)
                        && (64..=3840).contains(&s.width)
                        && (64..=2160).contains(&s.height),
                    "burst {i}: width and height must be multiples of 16 within 64..=3840 × 64..=2160, got {}x{}",
                    s.width,
                    s.height
                );
                anyhow::ensure!(
                    (1..=200).contains(&s.steps),
                    "burst {i}: steps must be 1..=200, got {}",
                    s.steps
                );
            }
        }
        for k in &self.kills {
            non_negative("kills.at_s", k.at_s)?;
            non_negative("kills.down_s", k.down_s)?;
        }
        Ok(())
    }

    /// Every job of the trace, in arrival order (a burst's shapes interleaved).
    pub fn jobs(&self) -> Vec<TraceJob> {
        let mut jobs = Vec::new();
        for b in &self.bursts {
            let tenant = self
                .tenants
                .iter()
                .position(|t| t.name == b.tenant)
                .expect("checked");
            let total: u32 = b.jobs.iter().map(|s| s.count).sum();
            let mut left: Vec<u32> = b.jobs.iter().map(|s| s.count).collect();
            let mut n = 0u32;
            while n < total {
                for (i, s) in b.jobs.iter().enumerate() {
                    if left[i] == 0 {
                        continue;
                    }
                    left[i] -= 1;
                    let arrival_s = b.at_s + b.over_s * f64::from(n) / f64::from(total.max(1));
                    n += 1;
                    jobs.push(TraceJob {
                        index: 0,
                        arrival_s,
                        tenant,
                        priority: b.priority,
                        model: self
                            .models
                            .iter()
                            .position(|m| m.name == s.model)
                            .expect("checked"),
                        frames: s.frames,
                        width: s.width,
                        height: s.height,
                        steps: s.steps,
                        audio: b.audio,
                    });
                }
            }
        }
        jobs.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        for (i, j) in jobs.iter_mut().enumerate() {
            j.index = i;
        }
        jobs
    }

    /// The tenants' weights as the coordinator's `--tenant-weights` takes them.
    pub fn tenant_weights(&self) -> anyhow::Result<TenantWeights> {
        let pairs: Vec<String> = self
            .tenants
            .iter()
            .map(|t| format!("{}={}", t.name, t.weight))
            .collect();
        TenantWeights::parse(&pairs).map_err(anyhow::Error::msg)
    }

    pub fn gpu_workers(&self) -> u32 {
        self.gpus.iter().map(|g| g.count).sum()
    }

    /// Whether model `m` fits a GPU of group `g` (the coordinator's memory fit).
    pub fn fits(&self, m: usize, g: usize) -> bool {
        self.models[m].gpu_need() <= self.gpus[g].memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/traces")
    }

    #[test]
    fn the_shipped_traces_load_and_every_model_fits_a_gpu() {
        for name in ["farm-small.json", "farm.json"] {
            let trace = Trace::load(&trace_dir().join(name)).expect(name);
            let jobs = trace.jobs();
            assert!(!jobs.is_empty(), "{name}");
            assert!(
                jobs.windows(2).all(|w| w[0].arrival_s <= w[1].arrival_s),
                "{name}: arrival order"
            );
            assert!(jobs.iter().all(|j| j.gpu_s(&trace) > 0.0), "{name}");
        }
    }

    #[test]
    fn tokens_and_times_follow_the_shape() {
        let job = TraceJob {
            index: 0,
            arrival_s: 0.0,
            tenant: 0,
            priority: Priority::Normal,
            model: 0,
            frames: 81,
            width: 832,
            height: 480,
            steps: 50,
            audio: true,
        };
        // 21 latent frames × 30 × 52 patches.
        assert_eq!(job.tokens(), 32_760.0);
        assert_eq!(job.work_units(v1::TaskKind::TextEncode), 1560.0);
    }
}
