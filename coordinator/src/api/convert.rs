//! Domain → protobuf conversions for responses and worker messages.

use reelfarm_proto::v1;

use crate::model::{
    AttemptToken, JobSpec, JobState, Output, Priority, Sampler, TaskKind, TaskState,
};
use crate::scheduler::{Assignment, JobView, WorkerView};

pub fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub fn job_state(s: JobState) -> v1::JobState {
    match s {
        JobState::Queued => v1::JobState::Queued,
        JobState::Running => v1::JobState::Running,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Failed => v1::JobState::Failed,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

pub fn task_kind(k: TaskKind) -> v1::TaskKind {
    match k {
        TaskKind::Plan => v1::TaskKind::Plan,
        TaskKind::VideoSegment => v1::TaskKind::VideoSegment,
        TaskKind::Audio => v1::TaskKind::Audio,
        TaskKind::Assemble => v1::TaskKind::Assemble,
        TaskKind::TextEncode => v1::TaskKind::TextEncode,
        TaskKind::Denoise => v1::TaskKind::Denoise,
        TaskKind::Decode => v1::TaskKind::Decode,
    }
}

fn task_state(s: TaskState) -> v1::TaskState {
    match s {
        TaskState::Blocked => v1::TaskState::Blocked,
        TaskState::Ready => v1::TaskState::Ready,
        TaskState::Assigned => v1::TaskState::Assigned,
        TaskState::Running => v1::TaskState::Running,
        TaskState::Done => v1::TaskState::Done,
        TaskState::Failed => v1::TaskState::Failed,
        TaskState::Cancelled => v1::TaskState::Cancelled,
    }
}

pub fn spec(s: &JobSpec) -> v1::JobSpec {
    v1::JobSpec {
        prompt: s.prompt.clone(),
        duration_seconds: s.duration_seconds,
        fps: s.fps,
        width: s.width,
        height: s.height,
        seed: Some(s.seed),
        steps: s.steps,
        sampler: match s.sampler {
            Sampler::Ddim => v1::Sampler::Ddim,
            Sampler::Euler => v1::Sampler::Euler,
            Sampler::DpmSolverPp2m => v1::Sampler::DpmSolverPp2m,
            Sampler::FlowEuler => v1::Sampler::FlowEuler,
            Sampler::UniPc => v1::Sampler::Unipc,
        } as i32,
        audio: Some(s.audio),
        priority: match s.priority {
            Priority::Low => v1::Priority::Low,
            Priority::Normal => v1::Priority::Normal,
            Priority::High => v1::Priority::High,
        } as i32,
        tenant: s.tenant.clone(),
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        model: s.model.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
        negative_prompt: s
            .model
            .as_ref()
            .map(|m| m.negative_prompt.clone())
            .unwrap_or_default(),
        guidance_scale: s.model.as_ref().map(|m| m.guidance_scale),
        guide: s.model.as_ref().is_some_and(|m| m.guide_strength.is_some()),
        guide_strength: s.model.as_ref().and_then(|m| m.guide_strength),
    }
}

pub fn output(o: &Output) -> v1::Output {
    v1::Output {
        kind: o.kind.clone(),
        uri: o.uri.clone(),
        sha256: o.sha256.clone(),
        bytes: o.bytes,
    }
}

/// A worker's output as the coordinator keeps it.
pub fn output_from(o: v1::Output) -> Output {
    Output {
        kind: o.kind,
        uri: o.uri,
        sha256: o.sha256,
        bytes: o.bytes,
    }
}

pub fn job(v: &JobView) -> v1::Job {
    v1::Job {
        id: v.id.clone(),
        state: job_state(v.state) as i32,
        spec: Some(spec(&v.spec)),
        progress: v.progress,
        tasks: Some(v1::TaskSummary {
            total: v.total_tasks,
            blocked: v.blocked,
            ready: v.ready,
            running: v.running,
            done: v.done,
            failed: v.failed,
            retries: v.retries,
        }),
        task_details: v
            .tasks
            .iter()
            .map(|t| v1::TaskView {
                id: t.id.clone(),
                kind: task_kind(t.kind) as i32,
                state: task_state(t.state) as i32,
                frame_start: t.frame_start,
                frame_end: t.frame_end,
                worker_id: t.worker_id.clone(),
                attempt: t.attempt,
                progress: t.progress,
                error: t.error.clone(),
                failures: t.failures,
                retry_reason: t.retry_reason.clone(),
                steps_per_second: t.steps_per_second,
                checkpoint_step: t.checkpoint_step,
                resumed_from_step: t.resumed_from_step,
                preemptions: t.preemptions,
                batch_size: t.batch_size,
                outputs: t.outputs.iter().map(output).collect(),
            })
            .collect(),
        outputs: v.outputs.iter().map(output).collect(),
        error: v.error.clone(),
        created_at: Some(timestamp(v.created_ms)),
        started_at: v.started_ms.map(timestamp),
        finished_at: v.finished_ms.map(timestamp),
        waiting: v.waiting.clone(),
        cached_from: v.cached_from.clone(),
        adjustments: v.adjustments.clone(),
        error_code: v.error_code.clone(),
        merged_into: v.merged_into.clone(),
        idempotency_key: v.idempotency_key.clone(),
        scene: v.scene.clone(),
    }
}

pub fn token(t: &AttemptToken) -> v1::AttemptToken {
    v1::AttemptToken {
        job_id: t.job_id.clone(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        term: t.term,
    }
}

pub fn token_from(t: Option<&v1::AttemptToken>) -> Option<AttemptToken> {
    t.map(|t| AttemptToken {
        job_id: t.job_id.clone(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        term: t.term,
    })
}

pub fn assignment(a: &Assignment) -> v1::Assignment {
    v1::Assignment {
        token: Some(token(&a.token)),
        kind: task_kind(a.kind) as i32,
        spec: Some(spec(&a.spec)),
        frame_start: a.frame_start,
        frame_end: a.frame_end,
        segment_index: a.segment_index,
        segment_count: a.segment_count,
        inputs: a
            .inputs
            .iter()
            .map(|i| v1::TaskInput {
                kind: i.kind.as_str().to_string(),
                segment_index: i.segment_index,
                output: Some(output(&i.output)),
            })
            .collect(),
        resume: a.resume.as_ref().map(|r| v1::Checkpoint {
            step: r.step,
            output: Some(output(&r.output)),
        }),
        batch: a.batch.map(|(id, size)| v1::BatchOf { id, size }),
    }
}

pub fn worker(w: &WorkerView) -> v1::WorkerInfo {
    v1::WorkerInfo {
        id: w.info.id.clone(),
        state: if w.draining {
            v1::WorkerState::Draining
        } else {
            v1::WorkerState::Active
        } as i32,
        engine: w.info.engine.clone(),
        gpu_model: w.info.gpu_model.clone(),
        gpu_memory_bytes: w.info.gpu_memory_bytes,
        slots: w.info.slots,
        running: w.running,
        hostname: w.info.hostname.clone(),
        metrics_address: w.info.metrics_address.clone(),
        connected_at: Some(timestamp(w.connected_ms)),
        tasks_done: w.tasks_done,
        cordoned: w.cordoned,
        models: w.info.models.clone(),
        broken_models: w.info.broken_models.clone(),
        gpu: w.info.gpu.clone(),
        health: w.health.clone(),
        resident: w.info.resident.clone(),
        model_memory_budget_bytes: w.info.model_memory_budget_bytes,
        max_queue_delay_ms: w.info.max_queue_delay.as_millis() as u32,
    }
}
