//! Batching across jobs: the dynamic batcher of Triton's, kept where the queue is.
//!
//! A worker advertises, per model, how many DENOISE tasks it runs as one batch
//! (`ServedModel.max_batch`, its `--max-batch`) and how long a batch may wait to fill
//! (`RegisterWorker.max_queue_delay_ms`). DENOISE tasks that share a model, a size, a frame
//! count, a step count, a sampler and a guide strength, and start from step 0 (no
//! checkpoint to resume), form a batch group; the ready queues index them by group. When
//! dispatch hands such a task to a worker that batches its model, it takes up to
//! `max_batch - 1` more of the group (oldest first, each charged to its tenant's fair share)
//! and sends them together, marked with one batch id (`Assignment.batch`). The batch holds
//! one slot of the worker; the slot is free again when its last member ends.
//!
//! While fewer than `max_batch` tasks of the group are queued, a task younger than the
//! worker's `max_queue_delay` is left queued for that worker (it takes other work
//! meanwhile): dispatch runs on every event and every watchdog tick, so the task waits the
//! delay at most, plus a tick. Each member keeps its own token, progress, checkpoints and
//! result; the worker's engine makes each member's latents equal to the clip rendered alone
//! (see `reelfarm_models`' `denoise_batch`). A batched task is never preempted: its
//! batch-mates hold the slot on.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use super::*;
use crate::model::{ModelSpec, Sampler, TaskDef};

/// What DENOISE tasks must share to run as one batch.
#[derive(Hash, PartialEq, Eq, Debug)]
struct BatchKey<'a> {
    model: &'a str,
    width: u32,
    height: u32,
    frames: u32,
    steps: u32,
    sampler: Sampler,
    /// The guide strength's bits: it decides the step the denoise starts from.
    guide_strength: Option<u64>,
}

fn key<'a>(spec: &'a JobSpec, model: &'a ModelSpec) -> BatchKey<'a> {
    BatchKey {
        model: &model.name,
        width: spec.width,
        height: spec.height,
        frames: spec.frame_count(),
        steps: spec.steps,
        sampler: spec.sampler,
        guide_strength: model.guide_strength.map(f64::to_bits),
    }
}

/// The batch group of a task: a hash of its [`BatchKey`] for a DENOISE of a model job that
/// starts from step 0, else `None`.
pub(super) fn group_of(spec: &JobSpec, def: &TaskDef, resume: Option<&ResumeFrom>) -> Option<u64> {
    let model = spec.model.as_ref()?;
    if def.kind != TaskKind::Denoise || resume.is_some() {
        return None;
    }
    let mut h = DefaultHasher::new();
    key(spec, model).hash(&mut h);
    Some(h.finish())
}

/// Whether two jobs' DENOISE tasks may share a batch (the group is a hash: checked in full).
fn same_key(a: &JobSpec, b: &JobSpec) -> bool {
    match (&a.model, &b.model) {
        (Some(ma), Some(mb)) => key(a, ma) == key(b, mb),
        _ => false,
    }
}

/// How many DENOISE tasks of `model` the worker runs as one batch (1: no batching).
pub(super) fn max_batch(info: &WorkerInfo, model: &str) -> usize {
    info.models
        .iter()
        .find(|m| m.name == model)
        .map_or(1, |m| m.max_batch.max(1) as usize)
}

/// A worker's batches: which of its running tasks run together, and how many members of
/// each still run (the batch holds its slot until the last one ends).
#[derive(Debug, Default)]
pub(super) struct WorkerBatches {
    of: HashMap<(JobId, u32), u64>,
    left: HashMap<u64, u32>,
}

impl WorkerBatches {
    /// Records a batch's members.
    pub(super) fn insert(&mut self, id: u64, members: impl IntoIterator<Item = (JobId, u32)>) {
        for m in members {
            self.of.insert(m, id);
            *self.left.entry(id).or_default() += 1;
        }
    }

    /// A task of the worker ended: true when it frees a slot (it ran alone, or it was the
    /// last of its batch).
    pub(super) fn ended(&mut self, task: &(JobId, u32)) -> bool {
        let Some(id) = self.of.remove(task) else {
            return true;
        };
        let left = self.left.entry(id).or_insert(1);
        *left -= 1;
        if *left == 0 {
            self.left.remove(&id);
            true
        } else {
            false
        }
    }

    pub(super) fn is_batched(&self, task: &(JobId, u32)) -> bool {
        self.of.contains_key(task)
    }
}

impl Farm {
    /// Whether dispatch leaves `job`'s task `index` queued for worker `info` a while
    /// longer, for its batch to fill (see the module docs). `group_len` is the queue's
    /// count of the task's group.
    pub(super) fn hold_for_batch(
        info: &WorkerInfo,
        job: &JobEntry,
        index: usize,
        group_len: impl Fn(u64) -> usize,
    ) -> bool {
        let (spec, t) = (&job.record.spec, &job.tasks[index]);
        let Some(model) = spec.model.as_ref() else {
            return false;
        };
        let cap = max_batch(info, &model.name);
        if cap <= 1 || t.ready_at.elapsed() >= info.max_queue_delay {
            return false;
        }
        group_of(spec, &job.record.tasks[index], t.checkpoint.as_ref())
            .is_some_and(|g| group_len(g) < cap)
    }

    /// Takes the tasks that run in one batch with `head` (just popped for `worker_id`):
    /// up to the worker's `max_batch - 1` of its group still READY, of jobs the worker is
    /// not excluded from. Each is marked dequeued, as a pop would.
    pub(super) fn take_batch_mates(&mut self, worker_id: &str, head: &ReadyItem) -> Vec<ReadyItem> {
        let (Some(w), Some(job)) = (self.workers.get(worker_id), self.jobs.get(&head.job_id))
        else {
            return Vec::new();
        };
        let index = head.task_index as usize;
        let spec = &job.record.spec;
        let Some(model) = spec.model.as_ref() else {
            return Vec::new();
        };
        let cap = max_batch(&w.info, &model.name);
        let group = group_of(
            spec,
            &job.record.tasks[index],
            job.tasks[index].checkpoint.as_ref(),
        );
        let Some(group) = group.filter(|_| cap > 1) else {
            return Vec::new();
        };
        let (model, head_spec) = (model.name.clone(), job.spec.clone());
        let (jobs, metrics) = (&mut self.jobs, &self.metrics);
        self.ready.take_group(&model, group, cap - 1, |i| {
            let Some(j) = jobs.get_mut(&i.job_id) else {
                return false;
            };
            let idx = i.task_index as usize;
            let fits = j.pending.is_none()
                && !j.excluded.contains(worker_id)
                && same_key(&j.record.spec, &head_spec)
                && j.tasks[idx].checkpoint.is_none();
            let t = &mut j.tasks[idx];
            if !t.queued || t.state != TaskState::Ready || !fits {
                return false;
            }
            t.queued = false;
            metrics.queue_depth(i.priority).dec();
            true
        })
    }

    /// Makes the assignments of one dispatch to `worker_id`, of the popped `items` in the
    /// same order, a batch when there are more than one: they hold one slot together, and
    /// each task records the batch's size (a task alone keeps 1, from `assign`).
    pub(super) fn mark_batch(
        &mut self,
        worker_id: &str,
        items: &[ReadyItem],
        group: &mut [Assignment],
    ) {
        let size = group.len() as u32;
        if size <= 1 {
            return;
        }
        self.next_batch += 1;
        let id = self.next_batch;
        for a in group.iter_mut() {
            a.batch = Some((id, size));
        }
        for item in items {
            if let Some(job) = self.jobs.get_mut(&item.job_id) {
                job.tasks[item.task_index as usize].batch_size = size;
            }
        }
        self.metrics.batches_dispatched.inc();
        self.metrics.batch_size.observe(f64::from(size));
        tracing::debug!(worker_id, batch = id, size, "dispatching a batch");
        if let Some(w) = self.workers.get_mut(worker_id) {
            w.batches
                .insert(id, items.iter().map(|i| (i.job_id.clone(), i.task_index)));
        }
    }

    /// Drops batch-group entries of tasks no longer queued (every watchdog tick).
    pub(super) fn prune_batch_groups(&mut self) {
        let jobs = &self.jobs;
        self.ready.prune_groups(|i| {
            jobs.get(&i.job_id)
                .is_some_and(|j| j.tasks[i.task_index as usize].queued)
        });
    }
}
