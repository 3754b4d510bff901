//! Dispatch: hands READY tasks to workers with free slots.

use std::collections::HashMap;
use std::time::Instant;

use super::*;

/// One task handed to a worker.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub token: AttemptToken,
    pub kind: TaskKind,
    /// Shared by every assignment of the job (no copy of the prompt and labels per task).
    pub spec: Arc<JobSpec>,
    pub frame_start: u32,
    pub frame_end: u32,
    pub segment_index: u32,
    pub segment_count: u32,
    pub inputs: Vec<TaskInput>,
    /// DENOISE: the checkpoint to resume from.
    pub resume: Option<ResumeFrom>,
    /// One of a batch (see `batching`): the batch's id and size.
    pub batch: Option<(u64, u32)>,
}

/// A task's checkpoint: the step it was taken after, and its file.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeFrom {
    pub step: u32,
    pub output: Output,
}

/// A dependency's output that a task reads.
#[derive(Clone, Debug)]
pub struct TaskInput {
    pub kind: TaskKind,
    pub segment_index: u32,
    pub output: Output,
}

impl Farm {
    // ----- dispatch ---------------------------------------------------------------------

    /// Hands ready tasks to workers with free slots: best task first, workers in
    /// round-robin order; one message per worker carries all its new assignments. A task of
    /// an open model goes only to a worker serving that model.
    pub(crate) fn dispatch(&mut self) {
        if self.holding_dispatch() {
            return;
        }
        let mut batches: HashMap<String, Vec<Assignment>> = HashMap::new();
        // Workers with free slots for which nothing queued fits (only other models' tasks
        // are left): they keep their place in the round-robin order.
        let mut passed: Vec<String> = Vec::new();
        while let Some(worker_id) = self.idle.pop_front() {
            if self.ready.is_empty() {
                self.idle.push_front(worker_id);
                break;
            }
            let Some(here) = self.workers.get(&worker_id) else {
                continue; // removed while listed in `idle`
            };
            let (serves, resident) = (&here.serves, &here.info.resident);
            let (jobs, metrics, warm) = (&mut self.jobs, &self.metrics, &self.warm);
            let (workers, idle) = (&self.workers, &self.idle);
            let affinity_wait = self.config.affinity_wait;
            // Batch groups' sizes, for a task left to fill its batch (see `batching`).
            let group_lens = if here.info.models.iter().any(|m| m.max_batch > 1) {
                self.ready.group_lens()
            } else {
                HashMap::new()
            };
            // Tasks of jobs this worker is excluded from (see `health`), and model tasks left
            // to a worker holding their model (see `placement`): not charged to their
            // tenant, queued again once this worker has its task.
            let mut deferred: Vec<(JobId, u32)> = Vec::new();
            let popped = self.ready.pop_for(serves, |i| {
                let Some(j) = jobs.get_mut(&i.job_id) else {
                    return false;
                };
                let pending = j.pending.is_some();
                let index = i.task_index as usize;
                let t = &mut j.tasks[index];
                if !t.queued {
                    return false;
                }
                // Popped either way: a task skipped because of a pending terminal write is
                // queued again if that write is abandoned (`requeue_ready_tasks`).
                t.queued = false;
                metrics.queue_depth(i.priority).dec();
                if pending || t.state != TaskState::Ready {
                    return false;
                }
                let model = (j.record.tasks[index].kind.needs_model())
                    .then_some(j.record.spec.model.as_ref())
                    .flatten();
                let ready_for = t.ready_at.elapsed();
                let defer = j.excluded.contains(&worker_id)
                    || model.is_some_and(|m| {
                        Farm::leave_to_warm(warm, resident, &m.name, ready_for, affinity_wait)
                            || (ready_for < affinity_wait
                                && Farm::leave_to_cheaper(workers, idle, &here.info, &m.name))
                    })
                    || (!group_lens.is_empty()
                        && Farm::hold_for_batch(&here.info, j, index, |g| {
                            group_lens.get(&g).copied().unwrap_or(0)
                        }));
                if defer {
                    deferred.push((i.job_id.clone(), i.task_index));
                }
                !defer
            });
            let skipped_some = !deferred.is_empty();
            for (job_id, index) in deferred {
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    enqueue(&mut self.ready, &mut self.text, &self.metrics, job, index);
                }
            }
            let Some(item) = popped else {
                if self.ready.only_model_work() || skipped_some {
                    passed.push(worker_id);
                    continue;
                }
                self.idle.push_front(worker_id);
                break;
            };
            let mut items = vec![item];
            items.extend(self.take_batch_mates(&worker_id, &items[0]));
            let mut group: Vec<Assignment> =
                items.iter().map(|i| self.assign(&worker_id, i)).collect();
            self.mark_batch(&worker_id, &items, &mut group);
            let worker = self.workers.get_mut(&worker_id).expect("checked above");
            worker.free -= 1;
            batches.entry(worker_id.clone()).or_default().extend(group);
            if worker.free > 0 && !worker.draining {
                self.idle.push_back(worker_id);
            } else {
                worker.in_idle = false;
            }
        }
        for worker_id in passed.into_iter().rev() {
            self.idle.push_front(worker_id);
        }
        for (worker_id, assignments) in batches {
            if let Some(w) = self.workers.get(&worker_id) {
                // A closed stream is noticed by its reader, which removes the worker and
                // requeues these tasks.
                let _ = w.tx.send(ToWorker::Assign(assignments));
            }
        }
        // Slot gauges walk every worker: refreshed at most every GAUGE_REFRESH here (and by
        // the watchdog), not on every dispatch, which would cost O(workers) per result.
        if self.gauges_refreshed.elapsed() >= GAUGE_REFRESH {
            self.update_worker_gauges();
        }
        self.preempt_for_high();
    }

    /// Starts a new attempt of the popped task `item` on worker `worker_id` (which holds
    /// the slot): its state, counters and the assignment that carries it.
    fn assign(&mut self, worker_id: &str, item: &ReadyItem) -> Assignment {
        let job = self.jobs.get_mut(&item.job_id).expect("checked in pop");
        let index = item.task_index as usize;
        let attempt = {
            let task = &mut job.tasks[index];
            task.state = TaskState::Assigned;
            task.issued = task.issued.max(task.attempt) + 1;
            task.attempt = task.issued;
            task.term = self.term;
            task.worker = Some(worker_id.to_string());
            task.progress = 0.0;
            task.step = 0;
            task.steps_per_second = 0.0;
            task.last_progress = Instant::now();
            task.preempting = false;
            task.resumed_from = task.checkpoint.as_ref().map_or(0, |c| c.step);
            task.batch_size = 1;
            if task.attempt > 1 {
                task.retries += 1;
            }
            self.metrics
                .dispatch_latency
                .observe(task.ready_at.elapsed().as_secs_f64());
            task.attempt
        };
        if job.started_ms.is_none() {
            job.started_ms = Some(now_ms());
        }
        let def = &job.record.tasks[index];
        self.metrics
            .tasks_dispatched
            .with_label_values(&[def.kind.as_str()])
            .inc();
        let segment_count = job
            .record
            .tasks
            .iter()
            .filter(|t| matches!(t.kind, TaskKind::VideoSegment | TaskKind::Decode))
            .count() as u32;
        let mut inputs: Vec<TaskInput> = def
            .deps
            .iter()
            .flat_map(|d| {
                let dep_def = &job.record.tasks[*d as usize];
                job.tasks[*d as usize].outputs.iter().map(|o| TaskInput {
                    kind: dep_def.kind,
                    segment_index: dep_def.segment_index,
                    output: o.clone(),
                })
            })
            .collect();
        if def.kind == TaskKind::TextEncode {
            // Another job's committed embeddings of the same key: the worker returns
            // them instead of encoding again (see `text_share`).
            let shared = job
                .text_key
                .as_ref()
                .and_then(|key| self.text.reusable(key, &item.job_id).map(<[_]>::to_vec));
            for output in shared.into_iter().flatten() {
                inputs.push(TaskInput {
                    kind: TaskKind::TextEncode,
                    segment_index: 0,
                    output,
                });
            }
        }
        let assignment = Assignment {
            token: AttemptToken {
                job_id: item.job_id.clone(),
                task_id: def.id.clone(),
                attempt,
                term: self.term,
            },
            kind: def.kind,
            spec: job.spec.clone(),
            frame_start: def.frame_start,
            frame_end: def.frame_end,
            segment_index: def.segment_index,
            segment_count,
            inputs,
            resume: job.tasks[index].checkpoint.clone(),
            batch: None,
        };
        job.touch();
        if let Some(worker) = self.workers.get_mut(worker_id) {
            worker
                .running
                .insert((item.job_id.clone(), item.task_index));
        }
        assignment
    }
}
