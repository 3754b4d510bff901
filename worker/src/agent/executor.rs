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
        let (inputs, resume) = self.read_inputs(&task).await?;
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
        self.store_outputs(&task, computed).await
    }

    /// Runs DENOISE tasks of one model as one batch (see `stages::denoise_batch`): each
    /// member with its own inputs, progress, control and outputs, one result per member in
    /// order.
    pub async fn run_batch(
        self: &Arc<Self>,
        members: Vec<BatchMember>,
    ) -> Vec<Result<Produced, TaskFailure>> {
        let started = Instant::now();
        let count = members.len();
        let mut results: Vec<Option<Result<Produced, TaskFailure>>> =
            (0..count).map(|_| None).collect();
        let mut runnable = Vec::new();
        for (i, (task, progress, control)) in members.into_iter().enumerate() {
            if task.kind != v1::TaskKind::Denoise {
                results[i] = Some(Err(format!(
                    "a batch holds a {} task; only DENOISE tasks batch",
                    task.kind.as_str_name()
                )
                .into()));
                continue;
            }
            match self.read_inputs(&task).await {
                Ok((inputs, resume)) => runnable.push((i, task, inputs, resume, progress, control)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        self.metrics.batch_size.observe(runnable.len() as f64);
        let this = self.clone();
        let runtime = tokio::runtime::Handle::current();
        let joined = tokio::task::spawn_blocking(move || {
            let resumes: Vec<Option<Vec<u8>>> =
                runnable.iter_mut().map(|member| member.3.take()).collect();
            let attempts: Vec<Attempt<'_>> = runnable
                .iter()
                .zip(resumes)
                .map(|((.., control), resume)| Attempt {
                    resume,
                    control,
                    runtime: runtime.clone(),
                    saved: Default::default(),
                })
                .collect();
            let members: Vec<DenoiseMember<'_>> = runnable
                .iter()
                .zip(&attempts)
                .map(
                    |((_, task, inputs, _, progress, _), attempt)| DenoiseMember {
                        task,
                        inputs,
                        attempt,
                        progress,
                    },
                )
                .collect();
            let computed = this.denoise(members);
            drop(attempts);
            runnable
                .into_iter()
                .zip(computed)
                .map(|((i, task, ..), c)| (i, task, c))
                .collect::<Vec<_>>()
        })
        .await;
        match joined {
            Ok(done) => {
                for (i, task, computed) in done {
                    let produced = match computed {
                        Ok(c) => self.store_outputs(&task, c).await,
                        Err(e) => Err(e),
                    };
                    results[i] = Some(produced);
                }
            }
            Err(e) => {
                let message = format!("batch panicked: {e}");
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Err(message.clone().into()));
                }
            }
        }
        for _ in 0..count {
            self.metrics
                .task_duration
                .with_label_values(&["denoise"])
                .observe(started.elapsed().as_secs_f64());
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("batch member not run".to_string().into())))
            .collect()
    }

    /// The contents of `task`'s inputs, in its order, and of its checkpoint when it has one
    /// that can be read.
    async fn read_inputs(
        &self,
        task: &Task,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), TaskFailure> {
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
        Ok((inputs, resume))
    }

    /// Writes what `task` computed to the artifact store under its attempt's names.
    async fn store_outputs(
        &self,
        task: &Task,
        computed: Computed,
    ) -> Result<Produced, TaskFailure> {
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

    /// DENOISE of `members` (one model) as one batch; a single task is a batch of one.
    fn denoise(&self, members: Vec<DenoiseMember<'_>>) -> Vec<Result<Computed, TaskFailure>> {
        let started = Instant::now();
        let mut results: Vec<Option<Result<Computed, TaskFailure>>> =
            members.iter().map(|_| None).collect();
        // Each clip's inputs, and its own progress and checkpoint closures.
        let mut ready = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let found = (|| {
                let model = m.task.model.as_ref().ok_or("DENOISE without a model")?;
                let text = input(m.task, m.inputs, "text")?;
                let plan = match model.guide_strength {
                    Some(_) => Some(input(m.task, m.inputs, "plan")?),
                    None => None,
                };
                Ok::<_, String>((model, text, plan))
            })();
            match found {
                Ok(f) => ready.push((i, f)),
                Err(e) => results[i] = Some(Err(e.into())),
            }
        }
        let mut reports: Vec<Box<dyn FnMut(u64, u64) + '_>> = ready
            .iter()
            .map(|(i, _)| {
                let progress = members[*i].progress;
                Box::new(move |done: u64, total: u64| {
                    progress.send_replace((done, total));
                }) as Box<dyn FnMut(u64, u64)>
            })
            .collect();
        let mut saves: Vec<SaveCheckpoint<'_>> = ready
            .iter()
            .map(|(i, _)| {
                let m = &members[*i];
                Box::new(move |step: u32, bytes: Vec<u8>| {
                    self.save_checkpoint(m.task, m.attempt, step, bytes)
                }) as SaveCheckpoint<'_>
            })
            .collect();
        let clips: Vec<stages::DenoiseClip<'_>> = ready
            .iter()
            .zip(reports.iter_mut().zip(saves.iter_mut()))
            .map(|((i, (model, text, plan)), (report, save))| {
                let m = &members[*i];
                stages::DenoiseClip {
                    spec: &m.task.spec,
                    task: model,
                    text,
                    plan: *plan,
                    resume: m.attempt.resume.as_deref(),
                    progress: &mut **report,
                    cancel: &m.attempt.control.cancel,
                    checkpoints: stages::Checkpointing {
                        every_steps: self.checkpoints.every_steps,
                        every: self.checkpoints.every,
                        preempt: &m.attempt.control.preempt,
                        save: &mut **save,
                    },
                }
            })
            .collect();
        let latents = {
            let _busy = self.metrics.engine_busy.enter();
            stages::denoise_batch(&self.models, clips)
        };
        for ((i, _), latents) in ready.iter().zip(latents) {
            let task = members[*i].task;
            results[*i] = Some(match latents {
                Ok(bytes) => {
                    self.count_steps(u64::from(task.spec.frame_count()), task.spec.steps, started);
                    let (id, tag) = (&task.token.task_id, task.attempt_tag());
                    Ok(Computed::files(vec![(
                        format!("{id}.{tag}.safetensors"),
                        "latents",
                        bytes,
                    )]))
                }
                Err(e) => Err(e.into()),
            });
        }
        results
            .into_iter()
            .map(|r| r.expect("every member ends in a result"))
            .collect()
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
                let member = DenoiseMember {
                    task,
                    inputs: &inputs,
                    attempt: &attempt,
                    progress,
                };
                self.denoise(vec![member])
                    .pop()
                    .expect("one result per member")
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

/// One DENOISE task of a batch, with its inputs' contents, attempt and progress.
struct DenoiseMember<'a> {
    task: &'a Task,
    inputs: &'a [Vec<u8>],
    attempt: &'a Attempt<'a>,
    progress: &'a tokio::sync::watch::Sender<(u64, u64)>,
}

/// One member of [`Executor::run_batch`]: the task, where its step progress goes, how the
/// coordinator steers it.
pub type BatchMember = (Task, tokio::sync::watch::Sender<(u64, u64)>, AttemptControl);

/// Saves one checkpoint of a denoise (after its step `u32`) to the artifact store.
type SaveCheckpoint<'a> = Box<dyn FnMut(u32, Vec<u8>) -> Result<(), String> + 'a>;

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
