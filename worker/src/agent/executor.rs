//! Runs one assignment: decodes it, reads its inputs from the artifact store, runs the
//! pipeline stage on a blocking thread, writes the outputs under attempt-specific names,
//! and describes the result for the coordinator.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use reelfarm_proto::v1;

use crate::engine::Engine;
use crate::metrics::Metrics;
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
    let sampler = match v1::Sampler::try_from(s.sampler) {
        Ok(v1::Sampler::Ddim | v1::Sampler::Unspecified) => Sampler::Ddim,
        Ok(v1::Sampler::Euler) => Sampler::Euler,
        Ok(v1::Sampler::DpmSolverPp2m) => Sampler::DpmSolverPp2m,
        Err(_) => return Err(format!("unknown sampler {}", s.sampler)),
    };
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
            Ok((
                i.kind.clone(),
                i.segment_index,
                Output {
                    kind: o.kind.clone(),
                    uri: o.uri.clone(),
                    sha256: o.sha256.clone(),
                    bytes: o.bytes,
                },
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Task {
        token,
        kind,
        spec,
        frame_start: a.frame_start,
        frame_end: a.frame_end,
        segment_index: a.segment_index,
        segment_count: a.segment_count,
        inputs,
    })
}

/// What a finished attempt produced.
pub struct Produced {
    pub outputs: Vec<Output>,
    pub scene: Option<String>,
}

/// Shared by every task of a worker.
pub struct Executor {
    pub store: ArtifactStore,
    pub engine: Arc<dyn Engine>,
    pub farm_secret: Vec<u8>,
    pub metrics: Arc<Metrics>,
}

impl Executor {
    /// Runs `task` to completion (or cancellation): reads its inputs from the artifact store,
    /// runs its pipeline stage on a blocking thread, and writes its outputs under
    /// attempt-specific names.
    pub async fn run(
        self: &Arc<Self>,
        task: Task,
        progress: tokio::sync::watch::Sender<(u64, u64)>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Produced, String> {
        let kind = task.kind;
        let started = Instant::now();
        let result = self.run_timed(task, progress, cancel).await;
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
        cancel: Arc<AtomicBool>,
    ) -> Result<Produced, String> {
        let mut inputs = Vec::with_capacity(task.inputs.len());
        for (_, _, output) in &task.inputs {
            inputs.push(self.store.get(output).await.map_err(|e| e.to_string())?);
        }
        let this = self.clone();
        let task = Arc::new(task);
        let computed = {
            let task = task.clone();
            tokio::task::spawn_blocking(move || this.compute(&task, inputs, &progress, &cancel))
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
        cancel: &AtomicBool,
    ) -> Result<Computed, String> {
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
                let plan = pipeline::run_plan(&task.spec).map_err(|e| e.to_string())?;
                report(1, 1);
                Ok(Computed {
                    files: vec![(format!("{id}.{tag}.json"), "plan", plan.bytes)],
                    scene: Some(plan.scene_json),
                })
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
                    )
                    .map_err(|e| e.to_string())?
                };
                let frames = u64::from(task.frame_end - task.frame_start);
                let engine = self.engine.name();
                self.metrics.frames.inc_by(frames);
                self.metrics
                    .diffusion_steps
                    .with_label_values(&[engine])
                    .inc_by(frames * u64::from(task.spec.steps));
                self.metrics
                    .step_duration
                    .with_label_values(&[engine])
                    .observe(started.elapsed().as_secs_f64() / f64::from(task.spec.steps));
                Ok(Computed {
                    files: vec![(format!("{id}.{tag}.h264"), "segment", chunk)],
                    scene: None,
                })
            }
            v1::TaskKind::Audio => {
                let plan = input(task, &inputs, "plan")?;
                let audio = pipeline::run_audio(&task.spec, plan, &mut report)
                    .map_err(|e| e.to_string())?;
                self.metrics
                    .audio_seconds
                    .inc_by(task.spec.duration_seconds);
                Ok(Computed {
                    files: vec![(format!("{id}.{tag}.audio"), "audio", audio)],
                    scene: None,
                })
            }
            v1::TaskKind::Assemble => {
                let mut segments: Vec<(u32, usize)> = task
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, (k, _, _))| k == "segment")
                    .map(|(at, (_, i, _))| (*i, at))
                    .collect();
                segments.sort_by_key(|(i, _)| *i);
                if segments.len() != task.segment_count as usize {
                    return Err(format!(
                        "assemble got {} segments, expected {}",
                        segments.len(),
                        task.segment_count
                    ));
                }
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
                let artifacts = pipeline::run_assemble(&task.spec, &ctx, plan, &chunks, audio)
                    .map_err(|e| e.to_string())?;
                report(1, 1);
                Ok(Computed {
                    files: artifacts
                        .into_iter()
                        .map(|a| (format!("{id}.{tag}/{}", a.file_name), a.kind, a.bytes))
                        .collect(),
                    scene: None,
                })
            }
            v1::TaskKind::Unspecified => Err("task kind unspecified".into()),
        }
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

/// What a pipeline stage computed: files to write (name, kind, bytes), and the scene.
struct Computed {
    files: Vec<(String, &'static str, Vec<u8>)>,
    scene: Option<String>,
}
