//! Runs one assignment: decodes it, reads its inputs from the artifact store, runs the
//! pipeline stage on a blocking thread, writes the outputs under attempt-specific names,
//! and describes the result for the coordinator.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reelfarm_proto::v1;

use super::failure::TaskFailure;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::models::host::ModelHost;
use crate::models::stages::{self, ModelProvenance, ModelTask};
use crate::pipeline::{self, ClipSpec, Sampler, TaskContext};
use reelfarm_artifacts::{ArtifactStore, Output};

/// A decoded assignment: everything the pipeline needs, validated.
#[derive(Clone, Debug)]
pub struct Task {
    pub token: v1::AttemptToken,
    pub kind: v1::TaskKind,
    pub spec: ClipSpec,
    pub frame_start: u32,
    pub frame_end: u32,
    pub segment_index: u32,
    pub segment_count: u32,
    pub inputs: Vec<(String, u32, Output)>,
    /// A model job's model and its parameters; `None` for the reference pipeline.
    pub model: Option<ModelTask>,
    /// DENOISE: the checkpoint to resume from (steps done, file).
    pub resume: Option<(u32, Output)>,
}

impl Task {
    /// Suffix that makes an output name unique to this attempt (exactly-once commits: only
    /// the coordinator's commit decides which attempt's files are the job's).
    fn attempt_tag(&self) -> String {
        format!("t{}a{}", self.token.term, self.token.attempt)
    }
}

/// Most frames, samples of work, etc. a worker accepts in one assignment, whatever the
/// coordinator sends: the coordinator's own limits are far below these.
const MAX_FRAMES: u32 = 20 * 60;
const MAX_SIDE: u32 = 3840;

/// Decodes and checks an assignment from the wire. Never panics on any input.
pub fn decode(a: &v1::Assignment) -> Result<Task, String> {
    let token = a.token.clone().ok_or("assignment without token")?;
    if token.job_id.is_empty() || token.task_id.is_empty() {
        return Err("assignment token without job or task id".into());
    }
    let safe = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !safe(&token.job_id) || !safe(&token.task_id) {
        return Err("assignment ids must be [A-Za-z0-9-], at most 64 characters".into());
    }
    let kind =
        v1::TaskKind::try_from(a.kind).map_err(|_| format!("unknown task kind {}", a.kind))?;
    if kind == v1::TaskKind::Unspecified {
        return Err("task kind unspecified".into());
    }
    let s = a.spec.as_ref().ok_or("assignment without spec")?;
    let model = model_task(s)?;
    let sampler = match v1::Sampler::try_from(s.sampler) {
        Ok(v1::Sampler::Unspecified) if model.is_some() => Sampler::UniPc,
        Ok(v1::Sampler::Ddim | v1::Sampler::Unspecified) => Sampler::Ddim,
        Ok(v1::Sampler::Euler) => Sampler::Euler,
        Ok(v1::Sampler::DpmSolverPp2m) => Sampler::DpmSolverPp2m,
        Ok(v1::Sampler::FlowEuler) => Sampler::FlowEuler,
        Ok(v1::Sampler::Unipc) => Sampler::UniPc,
        Err(_) => return Err(format!("unknown sampler {}", s.sampler)),
    };
    // The reference pipeline's samplers and the flow-matching ones do not mix.
    if model.is_some() != sampler.is_flow_matching() {
        return Err(format!(
            "sampler {sampler:?} does not fit a {} task",
            if model.is_some() {
                "model"
            } else {
                "reference"
            }
        ));
    }
    let model_kind = matches!(
        kind,
        v1::TaskKind::TextEncode | v1::TaskKind::Denoise | v1::TaskKind::Decode
    );
    if model_kind && model.is_none() {
        return Err(format!("{} task without spec.model", kind.as_str_name()));
    }
    let spec = ClipSpec {
        prompt: s.prompt.clone(),
        duration_seconds: s.duration_seconds,
        fps: s.fps,
        width: s.width,
        height: s.height,
        seed: s.seed.ok_or("spec without seed")?,
        steps: s.steps,
        sampler,
        audio: s.audio.unwrap_or(true),
    };
    let sane = spec.duration_seconds.is_finite()
        && spec.duration_seconds > 0.0
        && (1..=120).contains(&spec.fps)
        && (2..=MAX_SIDE).contains(&spec.width)
        && (2..=MAX_SIDE).contains(&spec.height)
        && spec.width.is_multiple_of(2)
        && spec.height.is_multiple_of(2)
        && (1..=1000).contains(&spec.steps)
        && spec.duration_seconds * f64::from(spec.fps) <= f64::from(MAX_FRAMES);
    if !sane {
        return Err(format!("spec out of bounds: {spec:?}"));
    }
    if model.is_some() {
        let rules =
            reelfarm_domain::model_rules::rules_for(reelfarm_domain::model_rules::WAN21_T2V)
                .expect("a known family");
        if !rules.accepts(spec.frame_count(), spec.width, spec.height) {
            return Err(format!(
                "a model task's clip must have {}k+1 frames and sides that are multiples of {}, got {} frames of {}x{}",
                rules.frame_group,
                rules.size_multiple,
                spec.frame_count(),
                spec.width,
                spec.height
            ));
        }
    }
    if a.frame_start >= a.frame_end || a.frame_end > spec.frame_count() {
        return Err(format!(
            "frame range {}..{} outside 0..{}",
            a.frame_start,
            a.frame_end,
            spec.frame_count()
        ));
    }
    let inputs = a
        .inputs
        .iter()
        .map(|i| {
            let o = i.output.as_ref().ok_or("input without output")?;
            Ok((i.kind.clone(), i.segment_index, to_output(o)))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let resume = match (&a.resume, kind) {
        (None, _) => None,
        (Some(c), v1::TaskKind::Denoise) => {
            let o = c.output.as_ref().ok_or("checkpoint without output")?;
            if c.step == 0 || c.step >= spec.steps {
                return Err(format!(
                    "checkpoint at step {} of {} steps",
                    c.step, spec.steps
                ));
            }
            Some((c.step, to_output(o)))
        }
        (Some(_), other) => {
            return Err(format!("a {} task has no checkpoint", other.as_str_name()));
        }
    };
    Ok(Task {
        token,
        kind,
        spec,
        frame_start: a.frame_start,
        frame_end: a.frame_end,
        segment_index: a.segment_index,
        segment_count: a.segment_count,
        inputs,
        model,
        resume,
    })
}

fn to_output(o: &v1::Output) -> Output {
    Output {
        kind: o.kind.clone(),
        uri: o.uri.clone(),
        sha256: o.sha256.clone(),
        bytes: o.bytes,
    }
}

/// An output as the coordinator's messages carry it.
pub(crate) fn to_proto_output(o: &Output) -> v1::Output {
    v1::Output {
        kind: o.kind.clone(),
        uri: o.uri.clone(),
        sha256: o.sha256.clone(),
        bytes: o.bytes,
    }
}

/// The open-model fields of a spec (the coordinator checked them; bounds again here).
fn model_task(s: &v1::JobSpec) -> Result<Option<ModelTask>, String> {
    if s.model.is_empty() {
        return Ok(None);
    }
    use reelfarm_domain::model_rules::{
        GUIDANCE_SCALE_DEFAULT, GUIDANCE_SCALE_MAX, GUIDANCE_SCALE_MIN, GUIDE_STRENGTH_DEFAULT,
    };
    let guidance_scale = s.guidance_scale.unwrap_or(GUIDANCE_SCALE_DEFAULT);
    if !(guidance_scale.is_finite()
        && (GUIDANCE_SCALE_MIN..=GUIDANCE_SCALE_MAX).contains(&guidance_scale))
    {
        return Err(format!(
            "guidance_scale {guidance_scale} out of {GUIDANCE_SCALE_MIN}..={GUIDANCE_SCALE_MAX}"
        ));
    }
    let guide_strength = match (s.guide, s.guide_strength) {
        (false, _) => None,
        (true, Some(g)) if g.is_finite() && (0.0..=1.0).contains(&g) => Some(g),
        (true, None) => Some(GUIDE_STRENGTH_DEFAULT),
        (true, Some(g)) => return Err(format!("guide_strength {g} out of 0..=1")),
    };
    Ok(Some(ModelTask {
        name: s.model.clone(),
        negative_prompt: s.negative_prompt.clone(),
        guidance_scale,
        guide_strength,
    }))
}

/// What a finished attempt produced.
pub struct Produced {
    pub outputs: Vec<Output>,
    pub scene: Option<String>,
}

/// When DENOISE tasks save checkpoints (`--checkpoint-every-steps`,
/// `--checkpoint-every-seconds`).
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    pub every_steps: u32,
    pub every: Option<Duration>,
}

/// How a running attempt is steered, and what it says besides its result.
#[derive(Clone)]
pub struct AttemptControl {
    /// The coordinator no longer wants it.
    pub cancel: Arc<AtomicBool>,
    /// The coordinator's PreemptTask: checkpoint and stop.
    pub preempt: Arc<AtomicBool>,
    /// Sends on the current session, in order with the attempt's other messages (its
    /// checkpoints, then its hand-back or result).
    pub report: Arc<dyn Fn(v1::WorkerMessage) + Send + Sync>,
}

/// Checkpoints of one attempt kept in the store: the newest two (the coordinator resumes
/// from the newest it recorded, which a lost message could leave one behind).
const CHECKPOINTS_KEPT: usize = 2;

/// Shared by every task of a worker.
pub struct Executor {
    pub store: ArtifactStore,
    pub engine: Arc<dyn Engine>,
    pub farm_secret: Vec<u8>,
    pub metrics: Arc<Metrics>,
    /// The `--models` this worker serves, and the one loaded.
    pub models: Arc<ModelHost>,
    pub checkpoints: CheckpointPolicy,
}

impl Executor {
    /// Runs `task` to completion (or cancellation): reads its inputs from the artifact store,
    /// runs its pipeline stage on a blocking thread, and writes its outputs under
    /// attempt-specific names.
    pub async fn run(
        self: &Arc<Self>,
        task: Task,
        progress: tokio::sync::watch::Sender<(u64, u64)>,
        control: AttemptControl,
    ) -> Result<Produced, TaskFailure> {
        let kind = task.kind;
        let started = Instant::now();
        let result = self.run_timed(task, progress, control).await;
        let label = kind
            .as_str_name()
            .trim_start_matches("TASK_KIND_")
            .to_ascii_lowercase();
        self.metrics
            .task_duration
            .with_label_values(&[&label])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn run_timed(
        self: &Arc<Self>,
        task: Task,
        progress: tokio::sync::watch::Sender<(u64, u64)>,
        control: AttemptControl,
    ) -> Result<Produced, TaskFailure> {
        let mut inputs = Vec::with_capacity(task.inputs.len());
        for (kind, _, output) in &task.inputs {
            match self.store.get(output).await {
                Ok(bytes) => inputs.push(bytes),
                // Another job's text embeddings offered for reuse: a cache, so a miss means
                // encoding again, not failing.
                Err(e) if task.kind == v1::TaskKind::TextEncode && kind == "text" => {
                    tracing::warn!(uri = %output.uri, error = %e,
                        "shared text embeddings unreadable; encoding again");
                    inputs.push(Vec::new());
                }
                Err(e) => return Err(e.to_string().into()),
            }
        }
        // A checkpoint that cannot be read costs the steps it saved, not the task: the
        // denoise from the start gives the same latents.
        let resume = match &task.resume {
            None => None,
            Some((step, output)) => match self.store.get(output).await {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::warn!(step, uri = %output.uri, error = %e,
                        "checkpoint unreadable; denoising from the start");
                    None
                }
            },
        };
        let this = self.clone();
        let task = Arc::new(task);
        let runtime = tokio::runtime::Handle::current();
        let computed = {
            let task = task.clone();
            tokio::task::spawn_blocking(move || {
                let attempt = Attempt {
                    resume,
                    control: &control,
                    runtime,
                    saved: Default::default(),
                };
                this.compute(&task, inputs, &progress, attempt)
            })
            .await
            .map_err(|e| format!("task panicked: {e}"))??
        };
        let mut outputs = Vec::with_capacity(computed.files.len());
        for (name, kind, bytes) in computed.files {
            self.metrics.artifact_bytes.inc_by(bytes.len() as u64);
            outputs.push(
                self.store
                    .put(&task.token.job_id, &name, kind, bytes)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        outputs.extend(computed.reused);
        Ok(Produced {
            outputs,
            scene: computed.scene,
        })
    }

    /// The pipeline stage of `task` on its inputs (`inputs[i]` is the content of
    /// `task.inputs[i]`): CPU-heavy, so on a blocking thread.
    fn compute(
        &self,
        task: &Task,
        mut inputs: Vec<Vec<u8>>,
        progress: &tokio::sync::watch::Sender<(u64, u64)>,
        attempt: Attempt<'_>,
    ) -> Result<Computed, TaskFailure> {
        let cancel: &AtomicBool = &attempt.control.cancel;
        let mut report = |done: u64, total: u64| {
            progress.send_replace((done, total));
        };
        let ctx = TaskContext {
            job_id: task.token.job_id.clone(),
            farm_secret: self.farm_secret.clone(),
        };
        let tag = task.attempt_tag();
        let id = &task.token.task_id;
        match task.kind {
            v1::TaskKind::Plan => {
                let plan = pipeline::run_plan(&task.spec)?;
                report(1, 1);
                Ok(
                    Computed::files(vec![(format!("{id}.{tag}.json"), "plan", plan.bytes)])
                        .with_scene(plan.scene_json),
                )
            }
            v1::TaskKind::VideoSegment => {
                let plan = input(task, &inputs, "plan")?;
                let started = Instant::now();
                let chunk = {
                    let _busy = self.metrics.engine_busy.enter();
                    pipeline::run_segment(
                        &task.spec,
                        &ctx,
                        plan,
                        task.frame_start..task.frame_end,
                        self.engine.as_ref(),
                        &mut report,
                        cancel,
                    )?
                };
                let frames = u64::from(task.frame_end - task.frame_start);
                self.count_steps(frames, task.spec.steps, started);
                Ok(Computed::files(vec![(
                    format!("{id}.{tag}.h264"),
                    "segment",
                    chunk,
                )]))
            }
            v1::TaskKind::Audio => {
                let plan = input(task, &inputs, "plan")?;
                let audio = pipeline::run_audio(&task.spec, plan, &mut report)?;
                self.metrics
                    .audio_seconds
                    .inc_by(task.spec.duration_seconds);
                Ok(Computed::files(vec![(
                    format!("{id}.{tag}.audio"),
                    "audio",
                    audio,
                )]))
            }
            v1::TaskKind::TextEncode => {
                let model = task.model.as_ref().ok_or("TEXT_ENCODE without a model")?;
                let shared = task.inputs.iter().position(|(k, _, _)| k == "text");
                let reused = shared
                    .map(|i| inputs[i].as_slice())
                    .filter(|b| !b.is_empty());
                let _busy = self.metrics.engine_busy.enter();
                let encoded = stages::text_encode(&self.models, &task.spec, model, reused)?;
                report(1, 1);
                Ok(match (encoded, shared) {
                    (Some(bytes), _) => {
                        Computed::files(vec![(format!("{id}.{tag}.safetensors"), "text", bytes)])
                    }
                    (None, Some(i)) => Computed::reused(vec![task.inputs[i].2.clone()]),
                    (None, None) => return Err("text encoding produced nothing".into()),
                })
            }
            v1::TaskKind::Denoise => {
                let model = task.model.as_ref().ok_or("DENOISE without a model")?;
                let text = input(task, &inputs, "text")?;
                let plan = match model.guide_strength {
                    Some(_) => Some(input(task, &inputs, "plan")?),
                    None => None,
                };
                let started = Instant::now();
                let mut save =
                    |step: u32, bytes: Vec<u8>| self.save_checkpoint(task, &attempt, step, bytes);
                let latents = {
                    let _busy = self.metrics.engine_busy.enter();
                    stages::denoise(
                        &self.models,
                        &task.spec,
                        model,
                        text,
                        plan,
                        attempt.resume.as_deref(),
                        &mut report,
                        cancel,
                        stages::Checkpointing {
                            every_steps: self.checkpoints.every_steps,
                            every: self.checkpoints.every,
                            preempt: &attempt.control.preempt,
                            save: &mut save,
                        },
                    )?
                };
                self.count_steps(u64::from(task.spec.frame_count()), task.spec.steps, started);
                Ok(Computed::files(vec![(
                    format!("{id}.{tag}.safetensors"),
                    "latents",
                    latents,
                )]))
            }
            v1::TaskKind::Decode => {
                let model = task.model.as_ref().ok_or("DECODE without a model")?;
                let latents = input(task, &inputs, "denoise")?;
                let (chunk, info) = {
                    let _busy = self.metrics.engine_busy.enter();
                    stages::decode(&self.models, &task.spec, &ctx, model, latents, &mut report)?
                };
                self.metrics
                    .frames
                    .inc_by(u64::from(task.spec.frame_count()));
                let info = serde_json::to_vec_pretty(&info).expect("plain data");
                Ok(Computed::files(vec![
                    (format!("{id}.{tag}.h264"), "segment", chunk),
                    (format!("{id}.{tag}.model.json"), "model-info", info),
                ]))
            }
            v1::TaskKind::Assemble => {
                // The clip's segments: VIDEO_SEGMENT results, or a model job's one DECODE.
                let mut segments: Vec<(u32, usize)> = task
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, (k, _, o))| {
                        k == "segment" || (k == "decode" && o.kind == "segment")
                    })
                    .map(|(at, (_, i, _))| (*i, at))
                    .collect();
                segments.sort_by_key(|(i, _)| *i);
                if segments.len() != task.segment_count as usize {
                    return Err(format!(
                        "assemble got {} segments, expected {}",
                        segments.len(),
                        task.segment_count
                    )
                    .into());
                }
                let provenance = match task.model {
                    None => None,
                    Some(_) => {
                        let at = task
                            .inputs
                            .iter()
                            .position(|(k, _, o)| k == "decode" && o.kind == "model-info")
                            .ok_or("missing model-info input")?;
                        let info: ModelProvenance = serde_json::from_slice(&inputs[at])
                            .map_err(|e| format!("model-info: {e}"))?;
                        Some(info)
                    }
                };
                let chunks: Vec<Vec<u8>> = segments
                    .iter()
                    .map(|(_, at)| std::mem::take(&mut inputs[*at]))
                    .collect();
                let plan = input(task, &inputs, "plan")?;
                let audio = if task.spec.audio {
                    Some(input(task, &inputs, "audio")?)
                } else {
                    None
                };
                let artifacts = pipeline::run_assemble(
                    &task.spec,
                    &ctx,
                    plan,
                    &chunks,
                    audio,
                    provenance.as_ref(),
                )?;
                report(1, 1);
                Ok(Computed::files(
                    artifacts
                        .into_iter()
                        .map(|a| (format!("{id}.{tag}/{}", a.file_name), a.kind, a.bytes))
                        .collect(),
                ))
            }
            v1::TaskKind::Unspecified => Err("task kind unspecified".into()),
        }
    }

    /// Writes a checkpoint of `task` taken after `step` steps under the attempt's name and
    /// reports it to the coordinator; drops this attempt's checkpoints older than the
    /// newest [`CHECKPOINTS_KEPT`]. On a blocking thread (the compute's).
    fn save_checkpoint(
        &self,
        task: &Task,
        attempt: &Attempt<'_>,
        step: u32,
        bytes: Vec<u8>,
    ) -> Result<(), String> {
        let name = format!(
            "{}.{}.checkpoint-{step:04}.safetensors",
            task.token.task_id,
            task.attempt_tag()
        );
        self.metrics.artifact_bytes.inc_by(bytes.len() as u64);
        let output = attempt
            .runtime
            .block_on(
                self.store
                    .put(&task.token.job_id, &name, "checkpoint", bytes),
            )
            .map_err(|e| e.to_string())?;
        (attempt.control.report)(v1::WorkerMessage {
            body: Some(v1::worker_message::Body::Checkpoint(v1::TaskCheckpoint {
                token: Some(task.token.clone()),
                checkpoint: Some(v1::Checkpoint {
                    step,
                    output: Some(to_proto_output(&output)),
                }),
            })),
        });
        self.metrics.checkpoints.inc();
        let mut saved = attempt.saved.borrow_mut();
        saved.push_back(output.uri);
        while saved.len() > CHECKPOINTS_KEPT {
            let old = saved.pop_front().expect("non-empty");
            if let Err(e) = attempt.runtime.block_on(self.store.delete(&old)) {
                tracing::debug!(uri = %old, error = %e, "old checkpoint not deleted");
            }
        }
        Ok(())
    }

    /// Counts `frames` × `steps` of diffusion work done since `started`.
    fn count_steps(&self, frames: u64, steps: u32, started: Instant) {
        let engine = self.engine.name();
        self.metrics.frames.inc_by(frames);
        self.metrics
            .diffusion_steps
            .with_label_values(&[engine])
            .inc_by(frames * u64::from(steps));
        self.metrics
            .step_duration
            .with_label_values(&[engine])
            .observe(started.elapsed().as_secs_f64() / f64::from(steps));
    }
}

/// The content of `task`'s input of `kind` (`inputs[i]` is that of `task.inputs[i]`).
fn input<'a>(task: &Task, inputs: &'a [Vec<u8>], kind: &str) -> Result<&'a [u8], String> {
    task.inputs
        .iter()
        .position(|(k, _, _)| k == kind)
        .map(|i| inputs[i].as_slice())
        .ok_or_else(|| format!("missing {kind} input"))
}

/// One attempt's run: the checkpoint it resumes from, how it is steered, and the
/// runtime its blocking thread writes checkpoints through.
struct Attempt<'a> {
    resume: Option<Vec<u8>>,
    control: &'a AttemptControl,
    runtime: tokio::runtime::Handle,
    /// The URIs of the checkpoints it saved, oldest first (one thread: the compute's).
    saved: std::cell::RefCell<VecDeque<String>>,
}

/// What a pipeline stage computed: files to write (name, kind, bytes), outputs of another
/// task handed back as they are (shared text embeddings), and the scene.
struct Computed {
    files: Vec<(String, &'static str, Vec<u8>)>,
    reused: Vec<Output>,
    scene: Option<String>,
}

impl Computed {
    fn files(files: Vec<(String, &'static str, Vec<u8>)>) -> Self {
        Self {
            files,
            reused: vec![],
            scene: None,
        }
    }

    fn reused(outputs: Vec<Output>) -> Self {
        Self {
            files: vec![],
            reused: outputs,
            scene: None,
        }
    }

    fn with_scene(mut self, scene: String) -> Self {
        self.scene = Some(scene);
        self
    }
}
