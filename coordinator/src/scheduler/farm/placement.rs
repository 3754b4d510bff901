//! Warm placement: a model task prefers a worker that holds its model loaded.
//!
//! Workers say what they hold loaded (RegisterWorker.resident, then WorkerStatus when it
//! changes). Dispatch is worker-driven (a free slot asks for the best task it can run), so
//! affinity is a deferral: a cold worker skips a model task while another connected worker
//! holds that model and the task has been READY for less than `affinity_wait`, leaving it
//! for the warm one; after that any worker serving the model takes it (the watchdog's tick
//! dispatches again), so affinity never starves a task. Loading a 14B model costs tens of
//! seconds, a GPU holds one: a wait of that order saves a load.
//!
//! Cheapest cold load: workers keep a pool of resident models within a budget
//! (RegisterWorker.model_memory_budget_bytes), evicting the least recently used. Among the
//! idle workers that would have to load a model, one with room for it beside what it
//! holds goes first: a cold worker that would evict leaves the task to an idle one that
//! would evict fewer bytes (that worker is free now, and takes it in the same dispatch
//! or the next); bounded like affinity, by `affinity_wait` from the task's readiness.
//!
//! Memory fit: a GPU worker serves a model only if the model fits its device: the weights
//! as the worker listed them (bytes of its safetensors, which a GPU loads as they are, in
//! bf16) plus a fifth for activations and the text encoder's working set, a rough bound
//! until workers report measured peaks. A model that fits no live worker's GPU is said so
//! in the job's `waiting` at once. CPU workers (no GPU) are not sized.

use reelfarm_proto::v1::{GpuDevice, ServedModel};

use super::*;

/// GPU memory a model needs on a worker: its weights and a fifth more (module docs).
pub(super) fn gpu_need(model: &ServedModel) -> u64 {
    model.weight_bytes.saturating_add(model.weight_bytes / 5)
}

/// Whether `model` fits `gpu` (always, on a worker without one).
pub(super) fn fits(model: &ServedModel, gpu: Option<&GpuDevice>) -> bool {
    gpu.is_none_or(|g| gpu_need(model) <= g.total_memory_bytes)
}

/// Bytes of resident weights `info`'s worker would evict to load `model` (0 when it is
/// resident or fits beside them): its pool drops the least recently used (the end of
/// `resident`) first. A worker without a budget holds one model at a time.
pub(super) fn evicted_by(info: &WorkerInfo, model: &str, weight_bytes: u64) -> u64 {
    if info.resident.iter().any(|r| r.name == model) {
        return 0;
    }
    let held: u64 = info.resident.iter().map(|r| r.weight_bytes).sum();
    if info.model_memory_budget_bytes == 0 {
        return held;
    }
    let mut over = (held + weight_bytes).saturating_sub(info.model_memory_budget_bytes);
    let mut evicted = 0;
    for r in info.resident.iter().rev() {
        if over == 0 {
            break;
        }
        evicted += r.weight_bytes;
        over = over.saturating_sub(r.weight_bytes);
    }
    evicted
}

impl Farm {
    /// The worker now holds `resident` loaded, and its GPU has `gpu_free` bytes free
    /// (WorkerStatus).
    pub(crate) fn set_resident(
        &mut self,
        worker_id: &str,
        resident: Vec<ResidentModel>,
        gpu_free: u64,
    ) {
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        if !w.draining {
            forget_warm(&mut self.warm, &w.info.resident, &w.serves);
            count_warm(&mut self.warm, &resident, &w.serves);
        }
        w.info.resident = resident;
        if let Some(g) = w.info.gpu.as_mut() {
            g.free_memory_bytes = gpu_free;
        }
    }

    /// Whether the cold worker `here` should leave a task of `model` to another idle
    /// worker serving it that would evict fewer bytes to load it (see the module docs).
    pub(super) fn leave_to_cheaper(
        workers: &HashMap<String, WorkerEntry>,
        idle: &VecDeque<String>,
        here: &WorkerInfo,
        model: &str,
    ) -> bool {
        let weight = |info: &WorkerInfo| {
            info.models
                .iter()
                .find(|m| m.name == model)
                .map_or(0, |m| m.weight_bytes)
        };
        let mine = evicted_by(here, model, weight(here));
        mine > 0
            && idle.iter().any(|id| {
                workers.get(id).is_some_and(|w| {
                    w.info.id != here.id
                        && w.free > 0
                        && !w.draining
                        && w.serves.iter().any(|s| s == model)
                        && evicted_by(&w.info, model, weight(&w.info)) < mine
                })
            })
    }

    /// Whether a cold worker should leave this model task to a warm one (see the module
    /// docs): `model` is loaded on some connected worker but not on this one, and the task
    /// has not waited `affinity_wait` yet.
    pub(super) fn leave_to_warm(
        warm: &HashMap<String, u32>,
        resident_here: &[ResidentModel],
        model: &str,
        ready_for: Duration,
        affinity_wait: Duration,
    ) -> bool {
        ready_for < affinity_wait
            && !resident_here.iter().any(|r| r.name == model)
            && warm.get(model).is_some_and(|&n| n > 0)
    }
}

/// Counts the models of `resident` the worker serves (`serves`) as loaded on one more
/// worker: a model it holds but may not run (too large for it, not servable) makes no
/// one wait.
pub(super) fn count_warm(
    warm: &mut HashMap<String, u32>,
    resident: &[ResidentModel],
    serves: &[String],
) {
    for r in resident.iter().filter(|r| serves.contains(&r.name)) {
        *warm.entry(r.name.clone()).or_insert(0) += 1;
    }
}

/// ...and on one fewer (the worker left or loaded something else).
pub(super) fn forget_warm(
    warm: &mut HashMap<String, u32>,
    resident: &[ResidentModel],
    serves: &[String],
) {
    for r in resident.iter().filter(|r| serves.contains(&r.name)) {
        if let Some(n) = warm.get_mut(&r.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                warm.remove(&r.name);
            }
        }
    }
}
