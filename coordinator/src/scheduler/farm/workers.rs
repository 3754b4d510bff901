//! The worker registry: the connected workers (one session each, its stream, its free
//! slots and running tasks), their round-robin `idle` order for dispatch, and the drains
//! that keep a worker from new tasks: an operator's cordon (durable, held whether the
//! worker is connected or not) or the worker's own shutdown.

use super::*;

/// What a worker says about itself when it connects.
#[derive(Clone, Debug, Default)]
pub struct WorkerInfo {
    pub id: String,
    pub engine: String,
    pub gpu_model: String,
    pub gpu_memory_bytes: u64,
    pub slots: u32,
    pub hostname: String,
    pub version: String,
    pub metrics_address: String,
    /// Attempts the worker still runs from an earlier session, offered for adoption.
    pub running: Vec<AttemptToken>,
    /// Models the worker serves, and model folders it found broken (as it reported them).
    pub models: Vec<reelfarm_proto::v1::ServedModel>,
    pub broken_models: Vec<reelfarm_proto::v1::BrokenModel>,
    /// Models it holds loaded, as it last said (see `placement`).
    pub resident: Vec<reelfarm_proto::v1::ResidentModel>,
    /// The CUDA device of a GPU worker, as it registered it (free memory as it last said).
    pub gpu: Option<reelfarm_proto::v1::GpuDevice>,
    /// Bytes of model weights it keeps loaded at most (its pool); 0: one model at a time.
    pub model_memory_budget_bytes: u64,
    /// The dynamic batcher's wait for a batch to fill (see `batching`); batch sizes are
    /// per model, in `models`.
    pub max_queue_delay: Duration,
    /// Which of `running` it runs together as one batch: adopted together, in one slot.
    pub running_batches: Vec<Vec<AttemptToken>>,
}

/// A message for one worker's stream.
#[derive(Debug)]
pub(crate) enum ToWorker {
    Assign(Vec<Assignment>),
    Cancel(AttemptToken),
    /// Checkpoint this attempt at its next step and hand it back (see `preemption`).
    Preempt(AttemptToken),
    /// A content check (VerifyContent), answered on the session (see `scheduler::verify`).
    Verify(crate::scheduler::verify::VerifyWork),
}

/// A connected worker, as the registry tracks it.
pub(super) struct WorkerEntry {
    pub(super) info: WorkerInfo,
    pub(super) session: u64,
    pub(super) tx: mpsc::UnboundedSender<ToWorker>,
    pub(super) free: u32,
    pub(super) running: HashSet<(JobId, u32)>,
    /// Which of `running` run as one batch (see `batching`).
    pub(super) batches: batching::WorkerBatches,
    /// Takes no new tasks: cordoned by an operator, or `shutting_down`.
    pub(super) draining: bool,
    /// The worker said it is shutting down (SIGTERM); this session takes no new tasks.
    pub(super) shutting_down: bool,
    pub(super) in_idle: bool,
    pub(super) connected_ms: u64,
    pub(super) tasks_done: u64,
    /// Names of the models it can run jobs of (registered and servable).
    pub(super) serves: Vec<String>,
}

impl Farm {
    /// Registers a worker's stream. A worker reconnecting under the same id replaces its old
    /// session, whose tasks go back to READY; then the attempts it says it still runs are
    /// adopted where possible (see `liveness`). Returns the session number.
    pub(crate) fn register_worker(
        &mut self,
        mut info: WorkerInfo,
        tx: mpsc::UnboundedSender<ToWorker>,
    ) -> (u64, Vec<Commit>) {
        let commits = self.remove_worker(&info.id, None, "worker_reconnected");
        self.next_session += 1;
        let session = self.next_session;
        let id = info.id.clone();
        let offered = std::mem::take(&mut info.running);
        let offered_batches = std::mem::take(&mut info.running_batches);
        let cordoned = self.cordoned.contains(&id);
        // A model too large for the worker's GPU is listed but not served (see `placement`).
        let serves: Vec<String> = info
            .models
            .iter()
            .filter(|m| m.not_servable.is_empty() && placement::fits(m, info.gpu.as_ref()))
            .map(|m| m.name.clone())
            .collect();
        // A drained worker takes no task: it makes nobody wait for its models.
        if !cordoned {
            placement::count_warm(&mut self.warm, &info.resident, &serves);
        }
        self.workers.insert(
            id.clone(),
            WorkerEntry {
                free: info.slots,
                info,
                session,
                tx,
                running: HashSet::new(),
                batches: Default::default(),
                draining: cordoned,
                shutting_down: false,
                in_idle: true,
                connected_ms: now_ms(),
                tasks_done: 0,
                serves,
            },
        );
        self.adopt(&id, offered, offered_batches);
        let worker = self.workers.get_mut(&id).expect("inserted above");
        if worker.free > 0 && !worker.draining {
            self.idle.push_back(id.clone());
        } else {
            worker.in_idle = false;
        }
        if let Some(hold) = &mut self.dispatch_hold {
            hold.expected.remove(&id);
        }
        self.update_worker_gauges();
        (session, commits)
    }

    /// Removes a worker (stream closed, lease expired, key deleted). With `session`, only if
    /// that session is still the current one. Its unfinished tasks go back to READY, counted
    /// as retries with `reason`; returns job failures to persist for tasks out of attempts.
    pub(crate) fn remove_worker(
        &mut self,
        id: &str,
        session: Option<u64>,
        reason: &str,
    ) -> Vec<Commit> {
        match self.workers.get(id) {
            Some(w) if session.is_none_or(|s| s == w.session) => {}
            _ => return vec![],
        }
        let worker = self.workers.remove(id).expect("checked above");
        if !worker.draining {
            placement::forget_warm(&mut self.warm, &worker.info.resident, &worker.serves);
        }
        self.idle.retain(|w| w != id);
        let mut commits = Vec::new();
        for (job_id, index) in worker.running {
            if let Some(c) = self.requeue(&job_id, index, reason, "worker lost") {
                commits.push(c);
            }
        }
        self.update_worker_gauges();
        commits
    }

    /// The worker is shutting down: this session gets no new tasks; it finishes (or hands
    /// back) what it runs.
    pub(crate) fn worker_shutting_down(&mut self, id: &str) -> Option<WorkerView> {
        self.workers.get_mut(id)?.shutting_down = true;
        self.apply_draining(id);
        self.worker_view(id)
    }

    /// The cordons stored with the farm's state (on recovery).
    pub(crate) fn restore_cordons(&mut self, ids: impl IntoIterator<Item = String>) {
        self.cordoned.extend(ids);
    }

    pub(crate) fn is_cordoned(&self, id: &str) -> bool {
        self.cordoned.contains(id)
    }

    /// Drained workers that are not connected, sorted.
    pub(crate) fn cordoned_not_connected(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .cordoned
            .iter()
            .filter(|id| !self.workers.contains_key(*id))
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Applies a durable cordon (an operator's drain) or its lifting; the worker need not be
    /// connected. Returns the worker if it is.
    pub(crate) fn set_cordon(&mut self, id: &str, cordoned: bool) -> Option<WorkerView> {
        if cordoned {
            self.cordoned.insert(id.to_string());
        } else {
            self.cordoned.remove(id);
            self.clear_health(id);
        }
        self.apply_draining(id);
        self.worker_view(id)
    }

    /// Recomputes whether a connected worker takes tasks, moving it in or out of `idle`.
    fn apply_draining(&mut self, id: &str) {
        let cordoned = self.cordoned.contains(id);
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        let draining = cordoned || w.shutting_down;
        if draining != w.draining {
            // Warm placement waits only for workers that take tasks.
            if draining {
                placement::forget_warm(&mut self.warm, &w.info.resident, &w.serves);
            } else {
                placement::count_warm(&mut self.warm, &w.info.resident, &w.serves);
            }
        }
        w.draining = draining;
        if w.draining && w.in_idle {
            w.in_idle = false;
            self.idle.retain(|x| x != id);
        } else if !w.draining && !w.in_idle && w.free > 0 {
            w.in_idle = true;
            self.idle.push_back(id.to_string());
        }
        self.update_worker_gauges();
    }

    pub(crate) fn worker_view(&self, id: &str) -> Option<WorkerView> {
        self.workers.get(id).map(|w| WorkerView {
            info: w.info.clone(),
            draining: w.draining,
            cordoned: self.cordoned.contains(id),
            running: w.running.len() as u32,
            connected_ms: w.connected_ms,
            tasks_done: w.tasks_done,
            health: self.health_reason(id).unwrap_or_default().to_string(),
        })
    }

    /// Connected workers that take new work (not draining, not cordoned): id, free slots,
    /// stream.
    pub(crate) fn workers_taking_work(
        &self,
    ) -> impl Iterator<Item = (&str, u32, &mpsc::UnboundedSender<ToWorker>)> {
        self.workers
            .iter()
            .filter(|(_, w)| !w.draining)
            .map(|(id, w)| (id.as_str(), w.free, &w.tx))
    }

    /// The models connected workers can run jobs of: name → family (what a model job is
    /// checked against at submission).
    pub(crate) fn model_families(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for w in self.workers.values() {
            for m in w.info.models.iter().filter(|m| m.not_servable.is_empty()) {
                out.entry(m.name.clone())
                    .or_insert_with(|| m.family.clone());
            }
        }
        out
    }

    /// Whether a connected worker that takes new tasks serves `model`.
    pub(super) fn model_served(&self, model: &str) -> bool {
        self.workers
            .values()
            .any(|w| !w.draining && w.serves.iter().any(|m| m == model))
    }

    /// For a model some live worker lists but none can hold: (GPU memory it needs, the
    /// largest GPU among the workers listing it).
    pub(super) fn too_large_everywhere(&self, model: &str) -> Option<(u64, u64)> {
        let mut need = None;
        let mut largest = 0;
        for w in self.workers.values() {
            let Some(m) = w.info.models.iter().find(|m| m.name == model) else {
                continue;
            };
            if !m.not_servable.is_empty() {
                continue;
            }
            match &w.info.gpu {
                Some(g) if !placement::fits(m, Some(g)) => {
                    need = Some(placement::gpu_need(m));
                    largest = largest.max(g.total_memory_bytes);
                }
                _ => return None,
            }
        }
        need.map(|n| (n, largest))
    }

    pub(crate) fn worker_views(&self) -> Vec<WorkerView> {
        let mut ids: Vec<&String> = self.workers.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.worker_view(id))
            .collect()
    }
}
