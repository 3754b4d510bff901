//! What one run of `bench farm` measured, from the simulated workers' records (every time
//! in simulated seconds from the trace's second 0). The definitions, as the report states
//! them:
//!
//! - A GPU task (TEXT_ENCODE, DENOISE, DECODE) *demands* a GPU from the moment it is ready
//!   (TEXT_ENCODE: its job's submission; DENOISE: the text result sent; DECODE: the
//!   denoise result sent) until its result is sent, running or waiting. Its *wait* is the
//!   time of that span it spent on no GPU: before its first attempt and between an attempt
//!   that ended without a result (a kill, a preemption) and the next. A job's queue wait
//!   is the sum of its three tasks' waits.
//! - **GPU busy ratio**: GPU-seconds busy (a GPU worker running a model task: loading,
//!   stepping, checkpointing) over the GPU-seconds *the trace allows*: at every moment, the
//!   most GPUs the demanding tasks could occupy (a maximum matching of the tasks to the
//!   connected GPUs their model fits), integrated over the run. It is an upper bound on
//!   busy time (busy ≤ allowed at every moment); a GPU idle while a task it fits waits
//!   lowers the ratio (warm-placement waits, dispatch gaps, CPU tasks on GPU workers).
//! - **Minimum model loads**: per model, the fewest GPUs that could have held it to give
//!   each of its jobs as much GPU time, between its submission and its decode's end, as this
//!   run did: for every window from a submission to a decode's end, the jobs that arrived
//!   and finished inside it need their GPU seconds inside it, so ⌈seconds / window⌉ GPUs,
//!   each of which loaded the model at least once (every worker starts empty, and a killed
//!   one comes back empty); at least one per model. It is a lower bound on this run's loads
//!   (loads ≥ minimum whatever the schedule); evictions from a pool too small for every
//!   model are not counted in it.
//! - **Tenant shares**: GPU-seconds of each tenant's NORMAL tasks while every tenant with
//!   NORMAL jobs had a NORMAL GPU task waiting (the coordinator's fair share orders tenants
//!   within a priority class), against weight / Σ weights; also the share of the work
//!   units (the planner's estimate the coordinator charges) dispatched in that time.
//! - **Work lost to a kill**: the DENOISE steps the killed worker had done beyond the step
//!   the task's next attempt resumed from (its `Assignment.resume`), per killed worker;
//!   with the GPU-seconds lost (those steps, the step or checkpoint under way, a TEXT or
//!   DECODE restarted, a load cut short).

use std::collections::{BTreeMap, HashMap, HashSet};

use reelfarm_proto::v1;
use serde_json::{json, Value};

use super::sim::{AttemptRecord, Outcome, Records, WorkerSpec};
use super::trace::{Priority, Trace, TraceJob, GPU_TASKS};
use crate::cmd::bench::percentile;

/// What one run hands the analysis.
pub struct RunData<'a> {
    pub trace: &'a Trace,
    pub jobs: &'a [TraceJob],
    pub workers: &'a [WorkerSpec],
    /// The clock's time of the trace's second 0.
    pub origin: f64,
    /// When each job's SubmitJob was sent (clock time), and the id it got.
    pub submitted: Vec<Option<(f64, String)>>,
    /// The clock's time the run ended.
    pub end: f64,
    pub records: Records,
}

/// The goals the report prints beside the figures.
pub struct Goals {
    pub busy_ratio: f64,
    pub loads_over_minimum: f64,
    pub share_tolerance: f64,
}

pub const GOALS: Goals = Goals {
    busy_ratio: 0.95,
    loads_over_minimum: 1.2,
    share_tolerance: 0.05,
};

/// Per GPU task of a job: when it was ready, its attempts, when it finished.
struct TaskLine<'a> {
    ready: Option<f64>,
    done: Option<f64>,
    attempts: Vec<&'a AttemptRecord>,
}

impl TaskLine<'_> {
    /// The spans it spent on no GPU between ready and done (or `end` for a task that never
    /// finished).
    fn waits(&self, end: f64) -> Vec<(f64, f64)> {
        let Some(ready) = self.ready else {
            return vec![];
        };
        let mut free_from = ready;
        let mut spans = Vec::new();
        for a in &self.attempts {
            if a.start > free_from {
                spans.push((free_from, a.start));
            }
            free_from = free_from.max(a.end);
            if a.outcome == Outcome::Done {
                return spans;
            }
        }
        if end > free_from {
            spans.push((free_from, end));
        }
        spans
    }

    /// Their total.
    fn wait(&self, end: f64) -> Option<f64> {
        self.ready?;
        Some(self.waits(end).iter().map(|(a, b)| b - a).sum())
    }
}

/// A task counts as waiting for the tenant shares once it has waited this long (simulated
/// seconds): the coordinator releases a job's next task a few milliseconds after its
/// predecessor's result, and hands the slot that result freed to the best task queued
/// before that; a tenant whose only "waiting" task is in that gap is not backlogged in the
/// coordinator's queue, and the slot going elsewhere is no unfairness.
const BACKLOG_AFTER_S: f64 = 1.0;

fn pcts(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({
        "jobs": v.len(),
        "p50": round(percentile(&v, 50.0)),
        "p99": round(percentile(&v, 99.0)),
        "max": round(percentile(&v, 100.0)),
    })
}

/// Two decimals: the report is read by people.
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Everything measured in one run, as the report's JSON.
pub fn analyze(d: RunData<'_>) -> Value {
    let RunData {
        trace,
        jobs,
        workers,
        origin,
        submitted,
        end,
        mut records,
    } = d;
    let end = end - origin;
    for a in &mut records.attempts {
        a.start -= origin;
        a.end -= origin;
        a.last_step_end -= origin;
        if let Some(p) = &mut a.preempt_at {
            *p -= origin;
        }
    }
    for l in &mut records.loads {
        l.start -= origin;
    }
    for s in &mut records.sessions {
        s.start = (s.start - origin).max(0.0);
        s.end -= origin;
    }
    for k in &mut records.kills {
        k.at -= origin;
    }
    let by_id: HashMap<&str, usize> = submitted
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|(_, id)| (id.as_str(), i)))
        .collect();
    let arrival: Vec<Option<f64>> = submitted
        .iter()
        .map(|s| s.as_ref().map(|(t, _)| t - origin))
        .collect();

    // Attempts by (job, kind), in start order.
    let mut by_task: HashMap<(usize, i32), Vec<&AttemptRecord>> = HashMap::new();
    let mut unknown_attempts = 0;
    for a in &records.attempts {
        match by_id.get(a.job_id.as_str()) {
            Some(&j) => by_task.entry((j, a.kind as i32)).or_default().push(a),
            None => unknown_attempts += 1,
        }
    }
    for v in by_task.values_mut() {
        v.sort_by(|a, b| a.start.total_cmp(&b.start));
    }
    let done_at = |j: usize, kind: v1::TaskKind| -> Option<f64> {
        by_task
            .get(&(j, kind as i32))?
            .iter()
            .find(|a| a.outcome == Outcome::Done)
            .map(|a| a.end)
    };
    let lines: Vec<[TaskLine<'_>; 3]> = (0..jobs.len())
        .map(|j| {
            let mut ready = arrival[j];
            GPU_TASKS.map(|kind| {
                let done = done_at(j, kind);
                let line = TaskLine {
                    ready,
                    done,
                    attempts: by_task.get(&(j, kind as i32)).cloned().unwrap_or_default(),
                };
                ready = done;
                line
            })
        })
        .collect();
    let finished: Vec<Option<f64>> = (0..jobs.len())
        .map(|j| done_at(j, v1::TaskKind::Assemble))
        .collect();
    let jobs_finished = finished.iter().filter(|f| f.is_some()).count();

    let gpu_of = |w: usize| workers[w].gpu;
    let model_task = |k: v1::TaskKind| GPU_TASKS.contains(&k);

    // ----- the sweep: busy, allowed, contention ---------------------------------------
    #[derive(Clone, Copy)]
    enum Ev {
        Demand {
            job: usize,
            delta: i64,
        },
        /// A NORMAL task waiting for longer than [`BACKLOG_AFTER_S`].
        Backlog {
            job: usize,
            delta: i64,
        },
        Run {
            job: usize,
            delta: i64,
        },
        Gpu {
            group: usize,
            delta: i64,
        },
        Dispatch {
            job: usize,
            units: f64,
        },
    }
    let mut events: Vec<(f64, Ev)> = Vec::new();
    for (j, tasks) in lines.iter().enumerate() {
        for t in tasks {
            if let Some(ready) = t.ready {
                events.push((ready, Ev::Demand { job: j, delta: 1 }));
                events.push((t.done.unwrap_or(end), Ev::Demand { job: j, delta: -1 }));
            }
            if jobs[j].priority == Priority::Normal {
                for (from, to) in t.waits(end) {
                    if to - from > BACKLOG_AFTER_S {
                        events.push((from + BACKLOG_AFTER_S, Ev::Backlog { job: j, delta: 1 }));
                        events.push((to, Ev::Backlog { job: j, delta: -1 }));
                    }
                }
            }
        }
    }
    let mut gpu_on_cpu_tasks_s = 0.0;
    let (mut load_s, mut checkpoint_s, mut busy_s) = (0.0, 0.0, 0.0);
    for a in &records.attempts {
        let Some(&j) = by_id.get(a.job_id.as_str()) else {
            continue;
        };
        if gpu_of(a.worker).is_none() {
            continue;
        }
        if !model_task(a.kind) {
            gpu_on_cpu_tasks_s += a.end - a.start;
            continue;
        }
        busy_s += a.end - a.start;
        load_s += a.load_s;
        checkpoint_s += a.checkpoint_s;
        events.push((
            a.start,
            Ev::Dispatch {
                job: j,
                units: jobs[j].work_units(a.kind),
            },
        ));
        events.push((a.start, Ev::Run { job: j, delta: 1 }));
        events.push((a.end, Ev::Run { job: j, delta: -1 }));
    }
    for s in &records.sessions {
        if let Some(g) = gpu_of(s.worker) {
            events.push((s.start, Ev::Gpu { group: g, delta: 1 }));
            events.push((
                s.end.min(end),
                Ev::Gpu {
                    group: g,
                    delta: -1,
                },
            ));
        }
    }
    // At one moment a dispatch is judged on the state just before it.
    let rank = |e: &Ev| !matches!(e, Ev::Dispatch { .. });
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(rank(&a.1).cmp(&rank(&b.1))));

    let tenants = trace.tenants.len();
    let normal_tenants: Vec<usize> = (0..tenants)
        .filter(|&t| {
            jobs.iter()
                .any(|j| j.tenant == t && j.priority == Priority::Normal)
        })
        .collect();
    let pidx = |p: Priority| p as usize;
    // Models from the largest need down, and groups by memory: the matching's order.
    let mut model_order: Vec<usize> = (0..trace.models.len()).collect();
    model_order.sort_by_key(|&m| std::cmp::Reverse(trace.models[m].gpu_need()));
    let mut demand_m = vec![0i64; trace.models.len()];
    let models = trace.models.len();
    let mut run_tp = vec![[0i64; 3]; tenants];
    // NORMAL tasks per (tenant, model): backlogged (see BACKLOG_AFTER_S), running.
    let mut backlog_tm = vec![vec![0i64; models]; tenants];
    let mut run_tm = vec![vec![0i64; models]; tenants];
    let mut connected = vec![0i64; trace.gpus.len()];
    let mut busy_now = 0i64;
    let (mut allowed_s, mut connected_s, mut swept_busy_s) = (0.0, 0.0, 0.0);
    let mut over_allowed_s = 0.0;
    let weights: Vec<f64> = trace.tenants.iter().map(|t| f64::from(t.weight)).collect();
    let mut farm_wide = ShareAcc::new(tenants);
    let mut per_queue = ShareAcc::new(tenants);
    // NORMAL tenants backlogged: anywhere, or for model `m`.
    let waiting_anywhere = |backlog_tm: &[Vec<i64>]| -> Vec<usize> {
        normal_tenants
            .iter()
            .copied()
            .filter(|&t| backlog_tm[t].iter().any(|&n| n > 0))
            .collect()
    };
    let waiting_for = |backlog_tm: &[Vec<i64>], m: usize| -> Vec<usize> {
        normal_tenants
            .iter()
            .copied()
            .filter(|&t| backlog_tm[t][m] > 0)
            .collect()
    };
    let allowed_now = |demand_m: &[i64], connected: &[i64]| -> i64 {
        let mut free = connected.to_vec();
        let mut total = 0;
        for &m in &model_order {
            let mut want = demand_m[m].max(0);
            for (g, left) in free.iter_mut().enumerate() {
                if want == 0 {
                    break;
                }
                if trace.fits(m, g) {
                    let take = want.min((*left).max(0));
                    *left -= take;
                    want -= take;
                    total += take;
                }
            }
        }
        total
    };
    let mut last = 0.0f64;
    for (t, ev) in &events {
        let dt = (t.min(end) - last).max(0.0);
        if dt > 0.0 {
            let allowed = allowed_now(&demand_m, &connected) as f64;
            allowed_s += allowed * dt;
            swept_busy_s += busy_now as f64 * dt;
            over_allowed_s += (busy_now as f64 - allowed).max(0.0) * dt;
            connected_s += connected.iter().sum::<i64>() as f64 * dt;
            let backlogged = waiting_anywhere(&backlog_tm);
            let running: Vec<f64> = run_tp
                .iter()
                .map(|row| row[pidx(Priority::Normal)] as f64)
                .collect();
            farm_wide.span(&backlogged, &running, &weights, dt);
            for m in 0..models {
                let backlogged = waiting_for(&backlog_tm, m);
                let running: Vec<f64> = run_tm.iter().map(|row| row[m] as f64).collect();
                per_queue.span(&backlogged, &running, &weights, dt);
            }
            last = *t;
        }
        match *ev {
            Ev::Demand { job, delta } => {
                let j = &jobs[job];
                demand_m[j.model] += delta;
            }
            Ev::Backlog { job, delta } => {
                let j = &jobs[job];
                backlog_tm[j.tenant][j.model] += delta;
            }
            Ev::Run { job, delta } => {
                let j = &jobs[job];
                run_tp[j.tenant][pidx(j.priority)] += delta;
                if j.priority == Priority::Normal {
                    run_tm[j.tenant][j.model] += delta;
                }
                busy_now += delta;
            }
            Ev::Gpu { group, delta } => connected[group] += delta,
            Ev::Dispatch { job, units } => {
                let j = &jobs[job];
                if j.priority == Priority::Normal {
                    let b = waiting_anywhere(&backlog_tm);
                    farm_wide.dispatch(&b, j.tenant, units, &weights);
                    let b = waiting_for(&backlog_tm, j.model);
                    per_queue.dispatch(&b, j.tenant, units, &weights);
                }
            }
        }
    }
    let busy_ratio = if allowed_s > 0.0 {
        swept_busy_s / allowed_s
    } else {
        0.0
    };

    // ----- model loads ---------------------------------------------------------------
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    let mut by_model: Vec<Value> = Vec::new();
    let mut loads_total = 0u64;
    let mut minimum_total = 0u64;
    let mut per_model_loads = vec![(0u64, 0u64, 0u64); trace.models.len()];
    let mut evictions = 0usize;
    for l in &records.loads {
        let e = &mut per_model_loads[l.model];
        e.0 += 1;
        if !seen.insert((l.worker, l.model)) {
            e.1 += 1;
        }
        if l.interrupted {
            e.2 += 1;
        }
        evictions += l.evicted.len();
    }
    for (m, model) in trace.models.iter().enumerate() {
        let (loads, reloads, interrupted) = per_model_loads[m];
        let spans: Vec<(f64, f64, f64)> = (0..jobs.len())
            .filter(|&j| jobs[j].model == m)
            .filter_map(|j| Some((arrival[j]?, lines[j][2].done?, jobs[j].gpu_s(trace))))
            .collect();
        let minimum = if jobs.iter().any(|j| j.model == m) {
            min_gpus_holding(&spans).max(1)
        } else {
            0
        };
        loads_total += loads;
        minimum_total += minimum;
        by_model.push(json!({
            "model": model.name,
            "loads": loads,
            "minimum": minimum,
            "first_loads_on_a_gpu": loads - reloads,
            "reloads": reloads,
            "interrupted_by_kills": interrupted,
        }));
    }

    // ----- queue waits ---------------------------------------------------------------
    let job_wait: Vec<Option<f64>> = lines
        .iter()
        .enumerate()
        .map(|(j, tasks)| {
            finished[j]?;
            tasks.iter().map(|t| t.wait(end)).sum()
        })
        .collect();
    let mut by_tenant = serde_json::Map::new();
    for (t, def) in trace.tenants.iter().enumerate() {
        let v: Vec<f64> = (0..jobs.len())
            .filter(|&j| jobs[j].tenant == t)
            .filter_map(|j| job_wait[j])
            .collect();
        by_tenant.insert(def.name.clone(), pcts(v));
    }
    let mut by_priority = serde_json::Map::new();
    for p in Priority::ALL {
        let v: Vec<f64> = (0..jobs.len())
            .filter(|&j| jobs[j].priority == p)
            .filter_map(|j| job_wait[j])
            .collect();
        if !v.is_empty() {
            by_priority.insert(p.as_str().into(), pcts(v));
        }
    }
    let high_jobs: Vec<usize> = (0..jobs.len())
        .filter(|&j| jobs[j].priority == Priority::High)
        .collect();
    let high_task_waits: Vec<f64> = high_jobs
        .iter()
        .filter(|&&j| finished[j].is_some())
        .flat_map(|&j| lines[j].iter().filter_map(|t| t.wait(end)))
        .collect();
    let mut high_job_waits: Vec<f64> = high_jobs.iter().filter_map(|&j| job_wait[j]).collect();
    high_job_waits.sort_by(f64::total_cmp);
    let high_p99 = (!high_job_waits.is_empty()).then(|| percentile(&high_job_waits, 99.0));
    let mut slowest: Vec<(f64, usize)> = high_jobs
        .iter()
        .filter_map(|&j| Some((job_wait[j]?, j)))
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest: Vec<Value> = slowest
        .iter()
        .take(5)
        .map(|&(wait, j)| {
            json!({
                "job": j,
                "model": trace.models[jobs[j].model].name,
                "arrival_s": arrival[j].map(round),
                "wait_s": round(wait),
                "task_waits_s": lines[j].iter().map(|t| t.wait(end).map(round)).collect::<Vec<_>>(),
            })
        })
        .collect();
    // A preempted attempt: from the coordinator's PreemptTask to the hand-back (its step
    // under way, then the checkpoint).
    let mut response: Vec<f64> = records
        .attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Preempted)
        .filter_map(|a| Some(a.end - a.preempt_at?))
        .collect();
    response.sort_by(f64::total_cmp);
    let preempt_ignored = records
        .attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Done && a.preempt_at.is_some())
        .count();

    // ----- shares --------------------------------------------------------------------
    let (per_queue_share, worst_share_error) = per_queue.report(trace, &normal_tenants);
    let (farm_wide_share, _) = farm_wide.report(trace, &normal_tenants);

    // ----- kills ---------------------------------------------------------------------
    let mut kill_events = Vec::new();
    let mut lost_steps_max = 0u32;
    let mut lost_steps_sum = 0u32;
    let mut lost_gpu_s = 0.0;
    let mut unresolved = 0;
    for k in &records.kills {
        let mut steps = 0u32;
        let mut seconds = 0.0;
        let mut tasks = Vec::new();
        for a in records.attempts.iter().filter(|a| {
            a.worker == k.worker && a.outcome == Outcome::Killed && a.end >= k.at - 1e-6
        }) {
            // The attempt cut by this kill: the first killed one ending after it.
            if a.start > k.at + 1e-6 {
                continue;
            }
            let Some(&j) = by_id.get(a.job_id.as_str()) else {
                continue;
            };
            let next = by_task.get(&(j, a.kind as i32)).and_then(|v| {
                v.iter()
                    .find(|n| n.start >= a.end - 1e-6 && n.attempt > a.attempt)
            });
            let (lost, resumed) = if a.kind == v1::TaskKind::Denoise {
                match next {
                    Some(n) => (
                        a.steps_reached.saturating_sub(n.resume_step),
                        Some(n.resume_step),
                    ),
                    None => {
                        unresolved += 1;
                        (0, None)
                    }
                }
            } else {
                (0, None)
            };
            let partial = if a.kind == v1::TaskKind::Denoise {
                (a.end - a.last_step_end).max(0.0)
            } else {
                a.end - a.start
            };
            let secs = f64::from(lost) * jobs[j].step_s(trace) + partial;
            steps += lost;
            seconds += secs;
            tasks.push(json!({
                "job": j,
                "kind": a.kind.as_str_name().trim_start_matches("TASK_KIND_").to_ascii_lowercase(),
                "steps_done": a.steps_reached,
                "resumed_from_step": resumed,
                "steps_recomputed": lost,
                "gpu_seconds_lost": round(secs),
            }));
        }
        lost_steps_max = lost_steps_max.max(steps);
        lost_steps_sum += steps;
        lost_gpu_s += seconds;
        kill_events.push(json!({
            "worker": workers[k.worker].id,
            "at_s": round(k.at),
            "down_s": k.down_s,
            "steps_recomputed": steps,
            "gpu_seconds_lost": round(seconds),
            "tasks": tasks,
        }));
    }

    // ----- the rest --------------------------------------------------------------------
    let mut late = records.lateness.clone();
    late.sort_by(f64::total_cmp);
    let outcomes = |o: Outcome| records.attempts.iter().filter(|a| a.outcome == o).count();
    let checkpoints: u32 = records.attempts.iter().map(|a| a.checkpoints).sum();
    let makespan = finished.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    let useful_s: f64 = (0..jobs.len())
        .filter(|&j| finished[j].is_some())
        .map(|j| jobs[j].gpu_s(trace))
        .sum();
    let checkpoint_interval_s = checkpoint_interval_s(trace, jobs);

    json!({
        "jobs": jobs.len(),
        "jobs_submitted": submitted.iter().filter(|s| s.is_some()).count(),
        "jobs_finished": jobs_finished,
        "makespan_s": round(makespan),
        "makespan_lower_bound_s": round(makespan_lower_bound(trace, jobs)),
        "gpu_busy": {
            "busy_gpu_seconds": round(swept_busy_s),
            "allowed_gpu_seconds": round(allowed_s),
            "ratio": round4(busy_ratio),
            "connected_gpu_seconds": round(connected_s),
            "busy_over_connected": round4(if connected_s > 0.0 { swept_busy_s / connected_s } else { 0.0 }),
            "of_busy": {
                "loading_s": round(load_s),
                "checkpointing_s": round(checkpoint_s),
                "computing_s": round(busy_s - load_s - checkpoint_s),
                "trace_compute_s": round(useful_s),
            },
            "gpu_seconds_on_cpu_tasks": round(gpu_on_cpu_tasks_s),
            "busy_above_allowed_gpu_seconds": round(over_allowed_s),
        },
        "model_loads": {
            "loads": loads_total,
            "minimum": minimum_total,
            "ratio": round4(loads_total as f64 / (minimum_total.max(1)) as f64),
            "evictions": evictions,
            "by_model": by_model,
        },
        "queue_wait_s": {
            "by_tenant": by_tenant,
            "by_priority": by_priority,
        },
        "high": {
            "jobs": high_jobs.len(),
            "job_wait_p50_s": (!high_job_waits.is_empty()).then(|| round(percentile(&high_job_waits, 50.0))),
            "job_wait_p99_s": high_p99.map(round),
            "task_wait_p99_s": (!high_task_waits.is_empty()).then(|| {
                let mut v = high_task_waits.clone();
                v.sort_by(f64::total_cmp);
                round(percentile(&v, 99.0))
            }),
            "checkpoint_interval_s": round(checkpoint_interval_s),
            "preemption_response_s": {
                "p50": round(percentile(&response, 50.0)),
                "p99": round(percentile(&response, 99.0)),
                "preemptions": response.len(),
                "requests_that_met_the_last_step": preempt_ignored,
            },
            "slowest": slowest,
        },
        "tenant_share": {
            "per_model_queue": per_queue_share,
            "farm_wide": farm_wide_share,
            "worst_relative_error": worst_share_error.map(round4),
        },
        "kills": {
            "killed_workers": records.kills.len(),
            "steps_recomputed_max_per_killed_worker": lost_steps_max,
            "steps_recomputed_mean_per_killed_worker": round(if records.kills.is_empty() { 0.0 } else { f64::from(lost_steps_sum) / records.kills.len() as f64 }),
            "gpu_seconds_lost": round(lost_gpu_s),
            "killed_denoise_without_a_next_attempt": unresolved,
            "events": kill_events,
        },
        "attempts": {
            "done": outcomes(Outcome::Done),
            "preempted": outcomes(Outcome::Preempted),
            "killed": outcomes(Outcome::Killed),
            "cancelled": outcomes(Outcome::Cancelled),
            "unfinished": outcomes(Outcome::Unfinished),
            "not_of_the_trace": unknown_attempts,
            "checkpoints": checkpoints,
        },
        "timer_lateness_s": {
            "p50": round4(percentile(&late, 50.0)),
            "p99": round4(percentile(&late, 99.0)),
            "max": round4(percentile(&late, 100.0)),
            "wakeups": late.len(),
        },
        "stream_errors": records.stream_errors,
    })
}

/// GPU-seconds of NORMAL tasks while two or more tenants had NORMAL work waiting, against
/// what their weights give them among those tenants; and the same for the work units
/// dispatched in that time.
struct ShareAcc {
    contended_s: f64,
    measured: Vec<f64>,
    expected: Vec<f64>,
    units: Vec<f64>,
    units_expected: Vec<f64>,
}

impl ShareAcc {
    fn new(tenants: usize) -> Self {
        Self {
            contended_s: 0.0,
            measured: vec![0.0; tenants],
            expected: vec![0.0; tenants],
            units: vec![0.0; tenants],
            units_expected: vec![0.0; tenants],
        }
    }

    /// `dt` seconds with the `backlogged` tenants waiting and `running` GPUs each.
    fn span(&mut self, backlogged: &[usize], running: &[f64], weights: &[f64], dt: f64) {
        if backlogged.len() < 2 {
            return;
        }
        self.contended_s += dt;
        let total: f64 = backlogged.iter().map(|&t| running[t]).sum();
        let w: f64 = backlogged.iter().map(|&t| weights[t]).sum();
        for &t in backlogged {
            self.measured[t] += running[t] * dt;
            self.expected[t] += total * weights[t] / w * dt;
        }
    }

    /// `units` of work dispatched to `tenant` while `backlogged` waited.
    fn dispatch(&mut self, backlogged: &[usize], tenant: usize, units: f64, weights: &[f64]) {
        if backlogged.len() < 2 || !backlogged.contains(&tenant) {
            return;
        }
        let w: f64 = backlogged.iter().map(|&t| weights[t]).sum();
        self.units[tenant] += units;
        for &t in backlogged {
            self.units_expected[t] += units * weights[t] / w;
        }
    }

    /// The report, and the worst relative error of a GPU-second share.
    fn report(&self, trace: &Trace, tenants: &[usize]) -> (Value, Option<f64>) {
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        let share = |v: &[f64], t: usize| {
            let s = sum(v);
            if s > 0.0 {
                v[t] / s
            } else {
                0.0
            }
        };
        let mut worst: Option<f64> = None;
        let mut out = serde_json::Map::new();
        for &t in tenants {
            let error = (self.expected[t] > 0.0).then(|| self.measured[t] / self.expected[t] - 1.0);
            if let Some(e) = error {
                worst = Some(worst.unwrap_or(0.0).max(e.abs()));
            }
            out.insert(
                trace.tenants[t].name.clone(),
                json!({
                    "weight": trace.tenants[t].weight,
                    "gpu_seconds": round(self.measured[t]),
                    "share": round4(share(&self.measured, t)),
                    "weight_share": round4(share(&self.expected, t)),
                    "relative_error": error.map(round4),
                    "work_units_share": round4(share(&self.units, t)),
                    "work_units_weight_share": round4(share(&self.units_expected, t)),
                }),
            );
        }
        let measured = sum(&self.measured);
        (
            json!({
                "contended_s": round(self.contended_s),
                "share_sum": round4(if measured > 0.0 { tenants.iter().map(|&t| self.measured[t]).sum::<f64>() / measured } else { 0.0 }),
                "worst_relative_error": worst.map(round4),
                "tenants": out,
            }),
            worst,
        )
    }
}

/// The fewest GPUs that must have held a model (see the module docs) for jobs that each
/// (arrival, end, GPU seconds) were served between arrival and end.
pub fn min_gpus_holding(spans: &[(f64, f64, f64)]) -> u64 {
    let mut by_end: Vec<&(f64, f64, f64)> = spans.iter().collect();
    by_end.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut starts: Vec<f64> = spans.iter().map(|s| s.0).collect();
    starts.sort_by(f64::total_cmp);
    starts.dedup();
    let mut best = 0.0f64;
    for &from in &starts {
        let mut work = 0.0;
        for s in by_end.iter().filter(|s| s.0 >= from) {
            work += s.2;
            let window = s.1 - from;
            if window > 0.0 {
                best = best.max(work / window);
            }
        }
    }
    // A hair below an integer is that integer (floating sums).
    (best - 1e-9).ceil().max(0.0) as u64
}

/// A lower bound on the time to the last job's decode: no job finishes before its arrival
/// plus its GPU work, and the jobs a set of GPUs alone can run (a model's, and the larger
/// models') that arrive after a moment need that set's whole capacity after it (every
/// GPU connected, no load, no transport).
fn makespan_lower_bound(trace: &Trace, jobs: &[TraceJob]) -> f64 {
    let mut bound = jobs
        .iter()
        .map(|j| j.arrival_s + j.gpu_s(trace))
        .fold(0.0, f64::max);
    for m in 0..trace.models.len() {
        let need = trace.models[m].gpu_need();
        let gpus: f64 = (0..trace.gpus.len())
            .filter(|&g| trace.fits(m, g))
            .map(|g| f64::from(trace.gpus[g].count))
            .sum();
        let mut arrivals: Vec<&TraceJob> = jobs
            .iter()
            .filter(|j| trace.models[j.model].gpu_need() >= need)
            .collect();
        arrivals.sort_by(|a, b| b.arrival_s.total_cmp(&a.arrival_s));
        let mut work = 0.0;
        for j in arrivals {
            work += j.gpu_s(trace);
            bound = bound.max(j.arrival_s + work / gpus.max(1.0));
        }
    }
    bound
}

/// The HIGH wait goal's unit: `checkpoint_every_steps` denoising steps of the median LOW
/// job (the work preemption moves aside; every job when the trace has no LOW ones).
pub fn checkpoint_interval_s(trace: &Trace, jobs: &[TraceJob]) -> f64 {
    let mut steps: Vec<f64> = jobs
        .iter()
        .filter(|j| j.priority == Priority::Low)
        .map(|j| j.step_s(trace))
        .collect();
    if steps.is_empty() {
        steps = jobs.iter().map(|j| j.step_s(trace)).collect();
    }
    steps.sort_by(f64::total_cmp);
    f64::from(trace.checkpoint_every_steps) * percentile(&steps, 50.0)
}

/// Each goal beside its figure for one run: (goal, figure, met), as JSON.
pub fn goals(run: &Value, preemption: bool, k: u32) -> Value {
    let busy = run["gpu_busy"]["ratio"].as_f64().unwrap_or(0.0);
    let loads = run["model_loads"]["ratio"]
        .as_f64()
        .unwrap_or(f64::INFINITY);
    let share = run["tenant_share"]["worst_relative_error"].as_f64();
    let high = run["high"]["job_wait_p99_s"].as_f64();
    let interval = run["high"]["checkpoint_interval_s"].as_f64().unwrap_or(0.0);
    let lost = run["kills"]["steps_recomputed_max_per_killed_worker"]
        .as_u64()
        .unwrap_or(0);
    let killed = run["kills"]["killed_workers"].as_u64().unwrap_or(0);
    let mut out = BTreeMap::new();
    out.insert(
        "gpu_busy_ratio",
        json!({"goal": format!(">= {}", GOALS.busy_ratio), "value": busy, "met": busy >= GOALS.busy_ratio}),
    );
    out.insert(
        "model_loads_over_minimum",
        json!({"goal": format!("<= {}", GOALS.loads_over_minimum), "value": loads, "met": loads <= GOALS.loads_over_minimum}),
    );
    out.insert(
        "tenant_share_worst_relative_error",
        json!({"goal": format!("<= {}", GOALS.share_tolerance), "value": share,
               "met": share.map(|s| s <= GOALS.share_tolerance)}),
    );
    out.insert(
        "high_job_wait_p99_s",
        json!({"goal": format!("<= {} (one checkpoint interval), with preemption on", round(interval)),
               "value": high,
               "met": if preemption { high.map(|h| h <= interval) } else { None }}),
    );
    out.insert(
        "steps_recomputed_max_per_killed_worker",
        json!({"goal": format!("<= {k}"), "value": lost,
               "met": (killed > 0).then_some(lost <= u64::from(k))}),
    );
    json!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_minimum_is_the_busiest_window() {
        // Two jobs of 10 GPU-seconds each, both arriving at 0 and done at 10: two GPUs.
        assert_eq!(min_gpus_holding(&[(0.0, 10.0, 10.0), (0.0, 10.0, 10.0)]), 2);
        // The same work over twice the time: one GPU.
        assert_eq!(min_gpus_holding(&[(0.0, 20.0, 10.0), (0.0, 20.0, 10.0)]), 1);
        // A later burst decides: three jobs of 5 s arriving at 100, done by 105.
        let spans = [
            (0.0, 50.0, 10.0),
            (100.0, 105.0, 5.0),
            (100.0, 105.0, 5.0),
            (100.0, 105.0, 5.0),
        ];
        assert_eq!(min_gpus_holding(&spans), 3);
        assert_eq!(min_gpus_holding(&[]), 0);
    }

    #[test]
    fn a_wait_counts_the_time_on_no_gpu() {
        let a = |start: f64, end: f64, outcome| AttemptRecord {
            worker: 0,
            job_id: String::new(),
            kind: v1::TaskKind::Denoise,
            attempt: 1,
            start,
            end,
            outcome,
            resume_step: 0,
            steps_reached: 0,
            last_step_end: start,
            load_s: 0.0,
            checkpoint_s: 0.0,
            checkpoints: 0,
            preempt_at: None,
        };
        let (first, second) = (
            a(5.0, 10.0, Outcome::Preempted),
            a(12.0, 20.0, Outcome::Done),
        );
        let line = TaskLine {
            ready: Some(1.0),
            done: Some(20.0),
            attempts: vec![&first, &second],
        };
        assert_eq!(line.wait(100.0), Some(4.0 + 2.0));
    }
}
