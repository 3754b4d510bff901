//! Unit tests of the farm's transitions: ordering, fencing, retries, worker loss.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::*;
use crate::model::{JobSpec, Priority, Sampler, TaskState};
use crate::planner::{self, PlannerConfig};

const TERM: u64 = 7;

fn spec(priority: Priority) -> JobSpec {
    JobSpec {
        prompt: "a ball".into(),
        duration_seconds: 2.0,
        fps: 12,
        width: 64,
        height: 64,
        seed: 1,
        steps: 2,
        sampler: Sampler::Ddim,
        audio: true,
        priority,
        tenant: "t".into(),
        labels: Default::default(),
        model: None,
    }
}

pub(super) fn config() -> FarmConfig {
    FarmConfig {
        max_attempts: 2,
        max_active_jobs: 100,
        max_active_jobs_per_tenant: None,
        stuck_factor: 10.0,
        stuck_min: std::time::Duration::from_secs(30),
        retain_finished: 1000,
        tenant_weights: Default::default(),
        artifact_gc_grace: Some(std::time::Duration::from_secs(60)),
        exclude_worker_after: 2,
        unhealthy_after: 0,
        unhealthy_window: std::time::Duration::from_secs(600),
        affinity_wait: std::time::Duration::from_secs(20),
        preemption: true,
        preemption_interval: std::time::Duration::from_secs(300),
    }
}

fn farm() -> Farm {
    farm_with(TERM, config())
}

/// A farm in `term` with `config` (a new leader is `TERM + 1`).
fn farm_with(term: u64, config: FarmConfig) -> Farm {
    Farm::new(term, config, Arc::new(Metrics::new()))
}

fn add_job(farm: &mut Farm, id: &str, priority: Priority) {
    let spec = spec(priority);
    let tasks = planner::plan(&spec, PlannerConfig::default());
    farm.insert_job(
        JobRecord {
            id: id.into(),
            spec,
            state: JobState::Queued,
            idempotency_key: None,
            created_ms: 1,
            finished_ms: None,
            error: None,
            outputs: vec![],
            tasks,
            artifacts_swept: false,
            cached_from: None,
            merged_into: None,
            adjustments: vec![],
            error_code: None,
        },
        &[],
    );
}

fn worker(farm: &mut Farm, id: &str, slots: u32) -> mpsc::UnboundedReceiver<ToWorker> {
    let (tx, rx) = mpsc::unbounded_channel();
    farm.register_worker(
        WorkerInfo {
            id: id.into(),
            slots,
            ..Default::default()
        },
        tx,
    );
    rx
}

pub(super) fn assignments(rx: &mut mpsc::UnboundedReceiver<ToWorker>) -> Vec<Assignment> {
    let mut out = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        if let ToWorker::Assign(a) = msg {
            out.extend(a);
        }
    }
    out
}

/// Reports success for `a` from `worker` and applies the commit as if it were durable.
fn succeed(farm: &mut Farm, worker: &str, a: &Assignment) {
    let commit = farm
        .begin_result(worker, &a.token, AttemptResult::success(vec![]))
        .expect("current token accepted")
        .expect("a success needs a commit");
    farm.finish_commit(commit.after, Ok(()));
}

#[test]
fn higher_priority_jobs_are_dispatched_first() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Low);
    add_job(&mut f, "000000000000000b", Priority::High);
    let mut rx = worker(&mut f, "w", 1);
    f.dispatch();
    let a = assignments(&mut rx);
    assert_eq!(a.len(), 1, "one slot, one assignment");
    assert_eq!(
        a[0].token.job_id, "000000000000000b",
        "the high-priority job's plan goes first"
    );
}

#[test]
fn a_tenant_with_one_job_is_not_queued_behind_another_tenants_backlog() {
    let mut f = farm();
    let ids = ["0000000000000001", "0000000000000002", "0000000000000003"];
    for id in ids {
        let mut record = job_record(id);
        record.spec.tenant = "ads".into();
        f.insert_job(record, &[]);
    }
    let mut small = job_record("0000000000000004");
    small.spec.tenant = "crm".into();
    f.insert_job(small, &[]);
    let mut w = worker(&mut f, "w", 1);
    let mut order = Vec::new();
    for _ in 0..2 {
        f.dispatch();
        let a = assignments(&mut w).pop().expect("one slot, one assignment");
        order.push(a.token.job_id.clone());
        succeed(&mut f, "w", &a);
    }
    assert_eq!(
        order,
        ["0000000000000001", "0000000000000004"],
        "the second slot goes to crm's plan, not to the older ads backlog"
    );
}

#[test]
fn tasks_spread_over_workers_round_robin() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut w1 = worker(&mut f, "w1", 4);
    let mut w2 = worker(&mut f, "w2", 4);
    f.dispatch();
    let plan = assignments(&mut w1)
        .into_iter()
        .chain(assignments(&mut w2))
        .next()
        .expect("plan");
    succeed(&mut f, "w1", &plan);
    f.dispatch();
    let (a1, a2) = (assignments(&mut w1), assignments(&mut w2));
    assert!(
        !a1.is_empty() && !a2.is_empty(),
        "segments go to both workers: {} and {}",
        a1.len(),
        a2.len()
    );
}

#[test]
fn stale_attempt_cannot_overwrite_result() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut old = worker(&mut f, "old", 1);
    f.dispatch();
    let first = assignments(&mut old)
        .pop()
        .expect("plan assigned to the first worker");
    // The first worker is lost; the task goes to another worker under attempt 2.
    assert!(f.remove_worker("old", None, "lease_lost").is_empty());
    let mut new = worker(&mut f, "new", 1);
    f.dispatch();
    let second = assignments(&mut new).pop().expect("plan reassigned");
    assert_eq!(
        second.token.attempt,
        first.token.attempt + 1,
        "reassignment increments the attempt"
    );
    // The old worker comes back (same id) and reports its stale result.
    let _old_again = worker(&mut f, "old", 1);
    let stale = f.begin_result("old", &first.token, AttemptResult::success(vec![]));
    assert_eq!(
        stale.err(),
        Some(Rejection::Stale),
        "the old attempt is rejected"
    );
    succeed(&mut f, "new", &second);
    let job = f.job_view("000000000000000a", true).expect("job");
    assert_eq!(job.tasks[0].state, TaskState::Done);
    assert_eq!(
        job.tasks[0].worker_id, "new",
        "the result of the current attempt was kept"
    );
}

#[test]
fn result_from_an_older_term_is_rejected() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut rx = worker(&mut f, "w", 1);
    f.dispatch();
    let mut a = assignments(&mut rx).pop().expect("assignment");
    a.token.term = TERM - 1;
    assert_eq!(
        f.begin_result("w", &a.token, AttemptResult::success(vec![]))
            .err(),
        Some(Rejection::Stale),
        "a token from another term is stale"
    );
}

#[test]
fn result_from_another_worker_is_rejected() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut rx = worker(&mut f, "w", 1);
    let _other = worker(&mut f, "other", 1);
    f.dispatch();
    let a = assignments(&mut rx).pop().expect("assignment to w");
    assert_eq!(
        f.begin_result("other", &a.token, AttemptResult::success(vec![]))
            .err(),
        Some(Rejection::Stale),
        "only the assigned worker may report"
    );
}

#[test]
fn failed_attempts_are_retried_then_fail_the_job() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut rx = worker(&mut f, "w", 1);
    f.dispatch();
    let a1 = assignments(&mut rx).pop().expect("first attempt");
    assert!(
        f.begin_result(
            "w",
            &a1.token,
            AttemptResult::failed("boom", Failure::transient())
        )
        .expect("accepted")
        .is_none(),
        "the first failure only requeues"
    );
    f.dispatch();
    let a2 = assignments(&mut rx).pop().expect("second attempt");
    assert_eq!(a2.token.attempt, 2);
    let commit = f
        .begin_result(
            "w",
            &a2.token,
            AttemptResult::failed("boom again", Failure::transient()),
        )
        .expect("accepted")
        .expect("out of attempts: the job failure must be persisted");
    f.finish_commit(commit.after, Ok(()));
    let job = f.job_view("000000000000000a", false).expect("job");
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.error.contains("boom again"),
        "the last error is reported: {}",
        job.error
    );
    assert_eq!(job.error_code, "attempts_exhausted");
}

#[test]
fn a_permanent_failure_fails_the_job_at_once_with_its_code() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut rx = worker(&mut f, "w", 1);
    f.dispatch();
    let a = assignments(&mut rx).pop().expect("first attempt");
    let commit = f
        .begin_result(
            "w",
            &a.token,
            AttemptResult::failed(
                "model load: transformer/diffusion_pytorch_model.safetensors: truncated",
                Failure::from_report(true, "model_load"),
            ),
        )
        .expect("accepted")
        .expect("a permanent failure must fail the job on its first attempt");
    f.finish_commit(commit.after, Ok(()));
    let job = f.job_view("000000000000000a", true).expect("job");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_code, "model_load");
    assert!(
        job.error.contains("permanent") && job.error.contains("truncated"),
        "{}",
        job.error
    );
    assert_eq!(job.tasks[0].failures, 1, "one attempt, not retried");
    f.dispatch();
    assert!(assignments(&mut rx).is_empty(), "nothing is retried");
}

#[test]
fn a_workers_error_code_is_checked_before_it_becomes_a_label() {
    assert_eq!(
        Failure::from_report(true, "out_of_memory").code,
        "out_of_memory"
    );
    for bad in ["", "Model Load", "x\n", &"a".repeat(65)] {
        assert_eq!(
            Failure::from_report(false, bad).code,
            "task_error",
            "{bad:?}"
        );
    }
}

#[test]
fn a_lost_worker_puts_its_tasks_back_to_ready() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut rx = worker(&mut f, "w", 1);
    f.dispatch();
    assert_eq!(assignments(&mut rx).len(), 1);
    f.remove_worker("w", None, "lease_lost");
    let job = f.job_view("000000000000000a", true).expect("job");
    assert_eq!(
        job.tasks[0].state,
        TaskState::Ready,
        "the plan is READY again"
    );
    assert_eq!(f.counts().1, 1, "and counted in the queue depth");
}

#[test]
fn job_succeeds_when_every_task_is_committed_and_carries_the_assemble_outputs() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut rx = worker(&mut f, "w", 64);
    let output = crate::model::Output {
        kind: "video".into(),
        uri: "file:///x/video.mp4".into(),
        sha256: "00".into(),
        bytes: 1,
    };
    for _ in 0..10 {
        f.dispatch();
        for a in assignments(&mut rx) {
            let outputs = if a.kind == TaskKind::Assemble {
                vec![output.clone()]
            } else {
                vec![]
            };
            let c = f
                .begin_result("w", &a.token, AttemptResult::success(outputs))
                .expect("ok")
                .expect("commit");
            f.finish_commit(c.after, Ok(()));
        }
    }
    let job = f.job_view("000000000000000a", false).expect("job");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(
        job.outputs,
        vec![output],
        "the job's outputs are the assemble outputs"
    );
    assert_eq!(job.progress, 1.0);
    assert_eq!(f.active_jobs(), 0);
}

#[test]
fn cancel_stops_running_tasks_and_frees_their_slots() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut rx = worker(&mut f, "w", 1);
    f.dispatch();
    let a = assignments(&mut rx).pop().expect("assignment");
    let commit = f
        .begin_cancel("000000000000000a")
        .expect("cancellable")
        .expect("a write");
    f.finish_commit(commit.after, Ok(()));
    let cancelled = std::iter::from_fn(|| rx.try_recv().ok())
        .any(|m| matches!(m, ToWorker::Cancel(t) if t == a.token));
    assert!(cancelled, "the worker is told to stop the running attempt");
    assert_eq!(
        f.job_view("000000000000000a", false).expect("job").state,
        JobState::Cancelled
    );
    assert_eq!(
        f.begin_result("w", &a.token, AttemptResult::success(vec![]))
            .err(),
        Some(Rejection::Stale),
        "a late result of a cancelled job is rejected"
    );
}

#[test]
fn a_failed_commit_runs_the_task_again() {
    let mut f = farm();
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut rx = worker(&mut f, "w", 1);
    f.dispatch();
    let a = assignments(&mut rx).pop().expect("assignment");
    let c = f
        .begin_result("w", &a.token, AttemptResult::success(vec![]))
        .expect("ok")
        .expect("commit");
    f.finish_commit(c.after, Err("etcd unavailable".into()));
    f.dispatch();
    let again = assignments(&mut rx).pop().expect("the task runs again");
    assert_eq!(again.token.task_id, a.token.task_id);
    assert_eq!(again.token.attempt, a.token.attempt + 1);
}

fn job_record(id: &str) -> JobRecord {
    record_of(id, spec(Priority::Normal))
}

/// A new QUEUED job `id` of `spec`, planned.
pub(super) fn record_of(id: &str, spec: JobSpec) -> JobRecord {
    let tasks = planner::plan(&spec, PlannerConfig::default());
    JobRecord {
        id: id.into(),
        spec,
        state: JobState::Queued,
        idempotency_key: None,
        created_ms: 1,
        finished_ms: None,
        error: None,
        outputs: vec![],
        tasks,
        artifacts_swept: false,
        cached_from: None,
        merged_into: None,
        adjustments: vec![],
        error_code: None,
    }
}

fn worker_running(
    farm: &mut Farm,
    id: &str,
    slots: u32,
    running: Vec<AttemptToken>,
) -> mpsc::UnboundedReceiver<ToWorker> {
    let (tx, rx) = mpsc::unbounded_channel();
    farm.register_worker(
        WorkerInfo {
            id: id.into(),
            slots,
            running,
            ..Default::default()
        },
        tx,
    );
    rx
}

fn cancels(rx: &mut mpsc::UnboundedReceiver<ToWorker>) -> Vec<AttemptToken> {
    let mut out = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        if let ToWorker::Cancel(t) = msg {
            out.push(t);
        }
    }
    out
}

fn task(f: &Farm, job: &str, task_id: &str) -> TaskRunView {
    f.job_view(job, true)
        .expect("job")
        .tasks
        .into_iter()
        .find(|t| t.id == task_id)
        .expect("task")
}

#[test]
fn a_new_leader_adopts_the_attempt_a_worker_still_runs_and_accepts_its_result() {
    const JOB: &str = "000000000000000a";
    // The old leader (term 7) gave the plan to w1 as attempt 1.
    let mut old = farm();
    old.insert_job(job_record(JOB), &[]);
    let mut w1 = worker(&mut old, "w1", 1);
    old.dispatch();
    let plan = assignments(&mut w1).pop().expect("plan assigned");
    assert_eq!(plan.token.term, TERM);

    // A new leader (term 8) loads the same job; w1 reconnects offering the running plan.
    let mut new = farm_with(TERM + 1, config());
    new.insert_job(job_record(JOB), &[]);
    let mut w2 = worker(&mut new, "w2", 1);
    new.hold_dispatch(
        ["w1".to_string()].into_iter().collect(),
        std::time::Duration::from_secs(60),
    );
    new.dispatch();
    assert!(
        assignments(&mut w2).is_empty(),
        "dispatch is held while the known worker w1 has not reconnected"
    );
    let mut w1 = worker_running(&mut new, "w1", 1, vec![plan.token.clone()]);
    assert!(
        cancels(&mut w1).is_empty(),
        "the offered attempt is adopted, not cancelled"
    );
    let t = task(&new, JOB, &plan.token.task_id);
    assert_eq!(
        (t.state, t.worker_id.as_str(), t.attempt),
        (TaskState::Running, "w1", 1)
    );

    // Its result, under the old term's token, is accepted by the new leader.
    succeed(&mut new, "w1", &plan);
    assert_eq!(task(&new, JOB, &plan.token.task_id).state, TaskState::Done);
    // The hold ended when w1 came back: the segments flow to both workers.
    new.dispatch();
    assert!(
        !assignments(&mut w2).is_empty(),
        "dispatch resumed after adoption"
    );
}

#[test]
fn an_offered_attempt_whose_task_went_to_another_worker_is_cancelled() {
    const JOB: &str = "000000000000000a";
    let mut f = farm();
    f.insert_job(job_record(JOB), &[]);
    let mut w1 = worker(&mut f, "w1", 1);
    f.dispatch();
    let plan = assignments(&mut w1).pop().expect("plan");
    // w1 is lost; the plan goes to w2 under attempt 2.
    f.remove_worker("w1", None, "lease_lost");
    let mut w2 = worker(&mut f, "w2", 1);
    f.dispatch();
    let again = assignments(&mut w2).pop().expect("plan reassigned");
    assert_eq!(again.token.attempt, 2);
    // w1 comes back offering attempt 1: it is cancelled there, and its result refused.
    let mut w1 = worker_running(&mut f, "w1", 1, vec![plan.token.clone()]);
    assert_eq!(cancels(&mut w1), vec![plan.token.clone()]);
    assert_eq!(
        f.begin_result("w1", &plan.token, AttemptResult::success(vec![]))
            .err(),
        Some(Rejection::Stale)
    );
    succeed(&mut f, "w2", &again);
}

#[test]
fn attempt_numbers_stay_unique_after_adopting_an_older_attempt() {
    const JOB: &str = "000000000000000a";
    let mut f = farm_with(
        TERM,
        FarmConfig {
            max_attempts: 5,
            ..config()
        },
    );
    f.insert_job(job_record(JOB), &[]);
    let mut w1 = worker(&mut f, "w1", 1);
    f.dispatch();
    let first = assignments(&mut w1).pop().expect("plan");
    // Lost twice over: attempt 2 goes to w2, which is lost too; attempt 1 is then adopted.
    f.remove_worker("w1", None, "lease_lost");
    let mut w2 = worker(&mut f, "w2", 1);
    f.dispatch();
    let second = assignments(&mut w2).pop().expect("attempt 2");
    f.remove_worker("w2", None, "lease_lost");
    let mut w1 = worker_running(&mut f, "w1", 1, vec![first.token.clone()]);
    assert!(cancels(&mut w1).is_empty());
    // w1 is lost again: the next attempt must not reuse number 2.
    f.remove_worker("w1", None, "stream_closed");
    let mut w3 = worker(&mut f, "w3", 1);
    f.dispatch();
    let third = assignments(&mut w3).pop().expect("attempt 3");
    assert_eq!(third.token.attempt, second.token.attempt + 1);
}

#[test]
fn an_operator_drain_holds_across_reconnects_and_failovers_until_lifted() {
    const JOB: &str = "000000000000000a";
    let mut f = farm();
    f.insert_job(job_record(JOB), &[]);
    let _w1 = worker(&mut f, "w1", 2);
    let view = f.set_cordon("w1", true).expect("connected");
    assert!(view.cordoned && view.draining);
    // The worker's stream breaks and it reconnects: still drained.
    let mut w1 = worker(&mut f, "w1", 2);
    f.dispatch();
    assert!(
        assignments(&mut w1).is_empty(),
        "a drained worker gets nothing"
    );
    assert_eq!(f.job_view(JOB, false).expect("job").state, JobState::Queued);

    // A new leader restores the stored cordons before the worker reconnects.
    let mut next = farm_with(TERM + 1, config());
    next.insert_job(job_record(JOB), &[]);
    next.restore_cordons(["w1".to_string()]);
    let mut again = worker(&mut next, "w1", 2);
    next.dispatch();
    assert!(
        assignments(&mut again).is_empty(),
        "still drained after a failover"
    );

    let view = next.set_cordon("w1", false).expect("connected");
    assert!(!view.cordoned && !view.draining);
    next.dispatch();
    assert_eq!(
        assignments(&mut again).len(),
        1,
        "lifted: it takes the plan"
    );
}

#[test]
fn lifting_a_drain_does_not_revive_a_worker_that_is_shutting_down() {
    let mut f = farm();
    f.insert_job(job_record("000000000000000a"), &[]);
    let mut w1 = worker(&mut f, "w1", 1);
    f.worker_shutting_down("w1");
    f.set_cordon("w1", true);
    let view = f.set_cordon("w1", false).expect("connected");
    assert!(view.draining && !view.cordoned);
    f.dispatch();
    assert!(assignments(&mut w1).is_empty());
}

#[test]
fn a_handed_back_task_is_ready_at_once_and_not_a_failure() {
    const JOB: &str = "000000000000000a";
    let mut f = farm();
    f.insert_job(job_record(JOB), &[]);
    let mut w1 = worker(&mut f, "w1", 1);
    f.dispatch();
    let plan = assignments(&mut w1).pop().expect("plan");
    f.worker_shutting_down("w1");
    f.hand_back("w1", &plan.token, "worker shutting down", false)
        .expect("current token");
    let t = task(&f, JOB, &plan.token.task_id);
    assert_eq!(
        (t.state, t.failures, t.retry_reason.as_str()),
        (TaskState::Ready, 0, "handed_back")
    );
    let mut w2 = worker(&mut f, "w2", 1);
    f.dispatch();
    assert_eq!(assignments(&mut w2).len(), 1, "another worker takes it");
    assert!(
        assignments(&mut w1).is_empty(),
        "the draining worker gets nothing"
    );
}

#[test]
fn a_task_without_progress_is_stuck_but_a_slow_one_is_not() {
    const JOB: &str = "000000000000000a";
    let mut f = farm();
    f.insert_job(job_record(JOB), &[]);
    let mut w1 = worker(&mut f, "w1", 1);
    f.dispatch();
    let plan = assignments(&mut w1).pop().expect("plan");
    let start = std::time::Instant::now();
    // Slow but moving: one step every 5 s (0.2 steps/s); limit is max(10 x 5 s, 30 s) = 50 s.
    f.progress("w1", &plan.token, 1, 100, 0.2).expect("current");
    assert!(f
        .reassign_stuck(start + std::time::Duration::from_secs(45))
        .is_empty());
    assert_eq!(task(&f, JOB, &plan.token.task_id).state, TaskState::Running);
    // No step for longer than the limit: stuck, cancelled on w1 and READY again.
    assert!(f
        .reassign_stuck(start + std::time::Duration::from_secs(55))
        .is_empty());
    let t = task(&f, JOB, &plan.token.task_id);
    assert_eq!(
        (t.state, t.retry_reason.as_str(), t.failures),
        (TaskState::Ready, "stuck", 1)
    );
    assert!(
        t.error.contains("no progress"),
        "the reason says why: {}",
        t.error
    );
    assert_eq!(cancels(&mut w1), vec![plan.token.clone()]);
    assert_eq!(
        f.metrics.tasks_retried.with_label_values(&["stuck"]).get(),
        1,
        "counted in reelfarm_tasks_retried_total{{reason=\"stuck\"}}"
    );
}

#[test]
fn the_stuck_scan_in_slices_covers_every_running_attempt_once() {
    let mut f = farm();
    for i in 1..=5 {
        f.insert_job(job_record(&format!("00000000000000a{i}")), &[]);
    }
    let mut rxs: Vec<_> = [("w1", 1), ("w2", 1), ("w3", 1), ("w4", 2)]
        .into_iter()
        .map(|(id, slots)| worker(&mut f, id, slots))
        .collect();
    f.dispatch();
    // Five PLAN tasks (one per job) fill the five slots; a worker that connects now has
    // nothing to run and stays out of the scan.
    let running: Vec<Assignment> = rxs.iter_mut().flat_map(assignments).collect();
    assert_eq!(running.len(), 5);
    let _idle = worker(&mut f, "idle", 1);

    let slices = f.stuck_scan_slices(2);
    let mut seen: Vec<&String> = slices.iter().flatten().collect();
    seen.sort();
    assert_eq!(
        seen,
        ["w1", "w2", "w3", "w4"]
            .map(String::from)
            .iter()
            .collect::<Vec<_>>(),
        "each worker with running attempts in exactly one slice: {slices:?}"
    );
    assert!(
        slices.len() >= 2,
        "about two attempts per slice: {slices:?}"
    );

    let late = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    for slice in &slices {
        f.reassign_stuck_among(slice, late);
    }
    for a in &running {
        let t = task(&f, &a.token.job_id, &a.token.task_id);
        assert_eq!(
            (t.state, t.failures),
            (TaskState::Ready, 1),
            "{}",
            a.token.job_id
        );
    }
    assert_eq!(
        f.metrics.tasks_retried.with_label_values(&["stuck"]).get(),
        5
    );
}

#[test]
fn a_job_with_no_live_worker_says_so() {
    const JOB: &str = "000000000000000a";
    let mut f = farm();
    f.insert_job(job_record(JOB), &[]);
    let waiting = f.job_view(JOB, false).expect("job").waiting;
    assert!(waiting.contains("no live worker"), "{waiting}");
    let mut w = worker(&mut f, "w", 1);
    f.dispatch();
    assert_eq!(assignments(&mut w).len(), 1);
    assert_eq!(f.job_view(JOB, false).expect("job").waiting, "");
}

#[test]
fn retention_forgets_the_oldest_finished_jobs_beyond_the_limit() {
    let mut f = farm_with(
        TERM,
        FarmConfig {
            retain_finished: 2,
            ..config()
        },
    );
    let ids = ["0000000000000001", "0000000000000002", "0000000000000003"];
    for id in ids {
        let mut record = job_record(id);
        record.state = JobState::Succeeded;
        record.idempotency_key = Some(format!("key-{id}"));
        f.insert_job(record, &[]);
    }
    f.insert_job(job_record("0000000000000004"), &[]);
    let writes = f.evict_finished(10);
    assert_eq!(writes.len(), 1, "one finished job beyond the limit of 2");
    assert!(
        matches!(&writes[0], Write::Forget { job_id, idempotency: Some((_, key)) }
        if job_id == "0000000000000001" && key == "key-0000000000000001")
    );
    assert!(f.job_view("0000000000000001", false).is_none(), "forgotten");
    assert!(
        f.job_for_key("t", "key-0000000000000001").is_none(),
        "its key is free"
    );
    assert!(
        f.job_view("0000000000000004", false).is_some(),
        "unfinished jobs are never forgotten"
    );
    assert!(f.evict_finished(10).is_empty(), "within the limit now");
}

#[test]
fn jobs_list_newest_first_in_pages_that_resume_after_the_token() {
    let mut f = farm_with(
        TERM,
        FarmConfig {
            retain_finished: 1,
            ..config()
        },
    );
    // Inserted out of order: the listing follows the ids (creation time), not insertion.
    for id in ["0000000000000003", "0000000000000001", "0000000000000005"] {
        let mut record = job_record(id);
        record.state = JobState::Succeeded;
        f.insert_job(record, &[]);
    }
    for id in ["0000000000000004", "0000000000000002"] {
        f.insert_job(job_record(id), &[]);
    }
    let ids = |views: Vec<JobView>| views.into_iter().map(|v| v.id).collect::<Vec<_>>();
    let (page, next) = f.list_jobs(|_| true, None, 2, false);
    assert_eq!(ids(page), ["0000000000000005", "0000000000000004"]);
    assert_eq!(next.as_deref(), Some("0000000000000004"));
    let (page, next) = f.list_jobs(|_| true, next.as_deref(), 2, false);
    assert_eq!(ids(page), ["0000000000000003", "0000000000000002"]);
    let (page, next) = f.list_jobs(|_| true, next.as_deref(), 2, false);
    assert_eq!(ids(page), ["0000000000000001"]);
    assert_eq!(next, None, "the last page has no token");

    // A filter applies before the page is cut; forgotten jobs leave the listing.
    let (page, _) = f.list_jobs(|v| v.state == JobState::Succeeded, None, 10, false);
    assert_eq!(
        ids(page),
        ["0000000000000005", "0000000000000003", "0000000000000001"]
    );
    assert_eq!(
        f.evict_finished(10).len(),
        2,
        "two finished jobs beyond the limit of 1"
    );
    let (page, _) = f.list_jobs(|_| true, None, 10, false);
    assert_eq!(
        ids(page),
        ["0000000000000005", "0000000000000004", "0000000000000002"],
        "the newest finished job is kept, the unfinished ones always"
    );
}

#[test]
fn a_finished_job_is_swept_once_after_the_grace_keeping_committed_outputs() {
    const JOB: &str = "000000000000000a";
    let mut f = farm();
    f.insert_job(job_record(JOB), &[]);
    let mut w = worker(&mut f, "w", 1);
    f.dispatch();
    let plan = assignments(&mut w).pop().expect("plan");
    let output = Output {
        kind: "plan".into(),
        uri: "file:///store/jobs/000000000000000a/plan.t7a1.json".into(),
        sha256: "0".repeat(64),
        bytes: 1,
    };
    let commit = f
        .begin_result(
            "w",
            &plan.token,
            AttemptResult::success(vec![output.clone()]),
        )
        .expect("current token")
        .expect("a commit");
    f.finish_commit(commit.after, Ok(()));
    assert!(f.due_sweeps(u64::MAX, 10).is_empty(), "not finished yet");
    let cancel = f.begin_cancel(JOB).expect("cancel").expect("a commit");
    f.finish_commit(cancel.after, Ok(()));

    let finished = f
        .job_view(JOB, false)
        .expect("job")
        .finished_ms
        .expect("finished");
    assert!(
        f.due_sweeps(finished + 59_000, 10).is_empty(),
        "within the grace"
    );
    let due = f.due_sweeps(finished + 60_000, 10);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].keep, [output.uri.clone()].into_iter().collect());
    let Some(Write::Job(record)) = f.finish_sweep(JOB) else {
        panic!("the swept record is stored");
    };
    assert!(record.artifacts_swept);
    assert!(f.due_sweeps(u64::MAX, 10).is_empty(), "swept once");

    // A new leader does not sweep a job whose record says it was swept.
    let mut next = farm_with(TERM + 1, config());
    next.insert_job(*record.clone(), &[]);
    assert!(next.due_sweeps(u64::MAX, 10).is_empty());
    let mut unswept = *record;
    unswept.artifacts_swept = false;
    let mut next = farm_with(TERM + 1, config());
    next.insert_job(unswept, &[]);
    assert_eq!(
        next.due_sweeps(u64::MAX, 10).len(),
        1,
        "but one that was not"
    );
}

#[test]
fn content_keys_cover_what_reaches_the_pipeline_and_the_tenant() {
    let base = spec(Priority::Normal);
    let mut other_priority = spec(Priority::High);
    other_priority
        .labels
        .insert("campaign".into(), "spring".into());
    assert_eq!(
        base.content_key(),
        other_priority.content_key(),
        "priority and labels do not change the clip"
    );
    for change in [
        |s: &mut JobSpec| s.tenant = "other".into(),
        |s: &mut JobSpec| s.seed += 1,
        |s: &mut JobSpec| s.prompt.push('!'),
        |s: &mut JobSpec| s.steps += 1,
        |s: &mut JobSpec| s.audio = !s.audio,
        |s: &mut JobSpec| s.sampler = Sampler::Euler,
    ] {
        let mut changed = spec(Priority::Normal);
        change(&mut changed);
        assert_ne!(base.content_key(), changed.content_key(), "{changed:?}");
    }
}

#[test]
fn a_succeeded_job_serves_its_content_key_until_retention_forgets_it() {
    const JOB: &str = "0000000000000001";
    let mut f = farm_with(
        TERM,
        FarmConfig {
            retain_finished: 1,
            ..config()
        },
    );
    let key = spec(Priority::Normal).content_key();
    f.insert_job(job_record(JOB), &[]);
    assert!(f.cached_result(&key).is_none(), "not finished");
    let mut w = worker(&mut f, "w", 8);
    let mut last_outputs = vec![];
    while f.job_view(JOB, false).expect("job").state != JobState::Succeeded {
        f.dispatch();
        for a in assignments(&mut w) {
            let output = Output {
                kind: a.token.task_id.clone(),
                uri: format!("file:///s/jobs/{JOB}/{}.bin", a.token.task_id),
                sha256: "0".repeat(64),
                bytes: 1,
            };
            last_outputs = vec![output.clone()];
            let commit = f
                .begin_result("w", &a.token, AttemptResult::success(vec![output]))
                .expect("current")
                .expect("a commit");
            f.finish_commit(commit.after, Ok(()));
        }
    }
    assert_eq!(f.cached_result(&key), Some((JOB.to_string(), last_outputs)));
    let mut other_tenant = spec(Priority::Normal);
    other_tenant.tenant = "other".into();
    assert!(f.cached_result(&other_tenant.content_key()).is_none());

    // A second finished job pushes the first out of retention (limit 1).
    let mut failed = job_record("0000000000000002");
    failed.spec.seed = 99;
    failed.state = JobState::Failed;
    f.insert_job(failed, &[]);
    assert_eq!(f.evict_finished(10).len(), 1);
    assert!(
        f.cached_result(&key).is_none(),
        "forgotten jobs serve nothing"
    );
}

#[test]
fn the_sweep_queue_is_bounded_by_retention() {
    let mut f = farm_with(
        TERM,
        FarmConfig {
            retain_finished: 2,
            ..config()
        },
    );
    for i in 1..=5u64 {
        let mut record = job_record(&format!("{i:016x}"));
        record.state = JobState::Failed;
        record.finished_ms = Some(i);
        f.insert_job(record, &[]);
    }
    let due: Vec<String> = f
        .due_sweeps(u64::MAX, 10)
        .into_iter()
        .map(|s| s.job_id)
        .collect();
    assert_eq!(
        due,
        ["0000000000000004", "0000000000000005"],
        "only the jobs retention keeps are queued"
    );
}

#[test]
fn verifier_prefers_free_workers_and_skips_tried_and_draining_ones() {
    let mut farm = farm();
    let _a = worker(&mut farm, "a", 2);
    let _b = worker(&mut farm, "b", 4);
    let _c = worker(&mut farm, "c", 4);
    let none = HashSet::new();
    let picks: HashSet<String> = (0..4)
        .map(|turn| farm.verifier(&none, turn).expect("workers are connected").0)
        .collect();
    assert_eq!(
        picks,
        HashSet::from(["b".to_string(), "c".to_string()]),
        "the two workers with the most free slots share the checks"
    );
    let tried = HashSet::from(["b".to_string()]);
    assert_eq!(farm.verifier(&tried, 0).map(|w| w.0).as_deref(), Some("c"));
    farm.set_cordon("c", true);
    assert_eq!(
        farm.verifier(&tried, 0).map(|w| w.0).as_deref(),
        Some("a"),
        "a cordoned worker takes no checks"
    );
    let all = HashSet::from(["a".to_string(), "b".to_string()]);
    assert!(farm.verifier(&all, 0).is_none(), "no worker left to try");
}

/// Fails `a` as its worker would, with a transient error.
fn fail(f: &mut Farm, worker: &str, a: &Assignment) -> Option<Commit> {
    f.begin_result(
        worker,
        &a.token,
        AttemptResult::failed("boom", Failure::transient()),
    )
    .expect("accepted")
}

#[test]
fn a_worker_that_fails_a_jobs_tasks_twice_gets_no_more_of_them() {
    let mut f = farm_with(
        TERM,
        FarmConfig {
            max_attempts: 5,
            ..config()
        },
    );
    add_job(&mut f, "000000000000000a", Priority::Normal);
    let mut bad = worker(&mut f, "bad", 1);
    for attempt in 1..=2 {
        f.dispatch();
        let a = assignments(&mut bad)
            .pop()
            .expect("the only worker gets the task");
        assert_eq!(a.token.attempt, attempt);
        assert!(fail(&mut f, "bad", &a).is_none());
    }
    f.dispatch();
    assert!(
        assignments(&mut bad).is_empty(),
        "excluded after two failures of this job"
    );
    let view = f.job_view("000000000000000a", false).expect("job");
    assert!(
        view.waiting.contains("excluded"),
        "the job says why it waits: {:?}",
        view.waiting
    );
    // Another job's tasks still go to it: the exclusion is per job.
    add_job(&mut f, "000000000000000b", Priority::Normal);
    f.dispatch();
    let b = assignments(&mut bad).pop().expect("another job's task");
    assert_eq!(b.token.job_id, "000000000000000b");
    // A worker that was not excluded takes the first job's task.
    let mut good = worker(&mut f, "good", 1);
    f.dispatch();
    let a = assignments(&mut good)
        .pop()
        .expect("the excluded job's task");
    assert_eq!(
        (a.token.job_id.as_str(), a.token.attempt),
        ("000000000000000a", 3)
    );
}

#[test]
fn repeated_failures_across_jobs_mark_a_worker_unhealthy_until_uncordoned() {
    let mut f = farm_with(
        TERM,
        FarmConfig {
            max_attempts: 5,
            exclude_worker_after: 0,
            unhealthy_after: 3,
            ..config()
        },
    );
    add_job(&mut f, "000000000000000a", Priority::Normal);
    add_job(&mut f, "000000000000000b", Priority::Normal);
    let mut bad = worker(&mut f, "bad", 1);
    for _ in 0..3 {
        f.dispatch();
        let a = assignments(&mut bad).pop().expect("a task");
        fail(&mut f, "bad", &a);
        if f.health_reason("bad").is_none() {
            assert!(
                f.take_unhealthy().is_empty(),
                "not before the third failure"
            );
        }
    }
    let marked = f.take_unhealthy();
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0].0, "bad");
    assert!(marked[0].1.contains("3 failed attempts"), "{}", marked[0].1);
    assert!(f.take_unhealthy().is_empty(), "reported once");
    // The scheduler makes the cordon durable, then applies it.
    f.set_cordon("bad", true);
    f.dispatch();
    assert!(
        assignments(&mut bad).is_empty(),
        "a cordoned worker gets no work"
    );
    assert!(f
        .worker_view("bad")
        .unwrap()
        .health
        .starts_with("unhealthy"));
    f.set_cordon("bad", false);
    assert_eq!(
        f.worker_view("bad").unwrap().health,
        "",
        "uncordoning clears it"
    );
    f.dispatch();
    assert_eq!(assignments(&mut bad).len(), 1, "back to work");
}

#[test]
fn lost_streams_are_not_charged_to_the_worker() {
    let mut f = farm_with(
        TERM,
        FarmConfig {
            max_attempts: 10,
            unhealthy_after: 2,
            ..config()
        },
    );
    add_job(&mut f, "000000000000000a", Priority::Normal);
    for round in 0..4 {
        let mut rx = worker(&mut f, "w", 1);
        f.dispatch();
        assert_eq!(assignments(&mut rx).len(), 1, "round {round}: not excluded");
        f.remove_worker("w", None, "stream_closed");
    }
    assert!(f.take_unhealthy().is_empty());
    assert_eq!(f.health_reason("w"), None);
}

/// After a failover the fair share is rebuilt from committed work: tenant "a", whose job
/// already had its plan done, waits behind tenant "b", who had nothing yet (with the
/// queue's tie order alone "a" would go first).
#[test]
fn fair_share_is_rebuilt_from_committed_work_after_a_failover() {
    for rebuild in [false, true] {
        let mut f = farm();
        let job = |id: &str, tenant: &str| {
            let mut s = spec(Priority::Normal);
            s.tenant = tenant.into();
            let mut r = record_of(id, s.clone());
            r.tasks = planner::plan(&s, PlannerConfig::default());
            r
        };
        let plan_done = TaskCompletion {
            job_id: "000000000000000a".into(),
            task_index: 0,
            attempt: 1,
            term: TERM - 1,
            worker_id: "w".into(),
            outputs: vec![],
            scene: None,
            finished_ms: 0,
        };
        f.insert_job(job("000000000000000a", "a"), &[plan_done]);
        f.insert_job(job("000000000000000b", "b"), &[]);
        if rebuild {
            f.rebuild_fair_share();
        }
        let mut rx = worker(&mut f, "w", 1);
        f.dispatch();
        let first = assignments(&mut rx).pop().expect("a task");
        let expected = if rebuild {
            "000000000000000b"
        } else {
            "000000000000000a"
        };
        assert_eq!(first.token.job_id, expected, "rebuild: {rebuild}");
    }
}

/// Runs every task of the farm's jobs on `w` until `job` is terminal, each output named
/// after its task; returns the last outputs committed.
fn run_to_end(f: &mut Farm, w: &mut mpsc::UnboundedReceiver<ToWorker>, job: &str) -> Vec<Output> {
    let mut last = vec![];
    for _ in 0..100 {
        if f.job_view(job, false).expect("job").state.is_terminal() {
            break;
        }
        f.dispatch();
        for a in assignments(w) {
            let output = Output {
                kind: a.token.task_id.clone(),
                uri: format!("file:///s/jobs/{}/{}.bin", a.token.job_id, a.token.task_id),
                sha256: "0".repeat(64),
                bytes: 1,
            };
            if a.token.job_id == job {
                last = vec![output.clone()];
            }
            let commit = f
                .begin_result("w", &a.token, AttemptResult::success(vec![output]))
                .expect("current")
                .expect("a commit");
            f.finish_commit(commit.after, Ok(()));
            for c in f.take_deferred_commits() {
                f.finish_commit(c.after, Ok(()));
            }
        }
    }
    last
}

#[test]
fn an_identical_job_submitted_while_one_runs_follows_it_and_gets_its_outputs() {
    const LEADER: &str = "0000000000000001";
    const FOLLOWER: &str = "0000000000000002";
    let mut f = farm();
    let key = spec(Priority::Normal).content_key();
    f.insert_job(job_record(LEADER), &[]);
    assert_eq!(f.running_twin(&key).as_deref(), Some(LEADER));
    let mut other = spec(Priority::Normal);
    other.seed = 2;
    assert!(
        f.running_twin(&other.content_key()).is_none(),
        "another seed"
    );
    f.insert_job(
        JobRecord {
            merged_into: Some(LEADER.into()),
            ..job_record(FOLLOWER)
        },
        &[],
    );
    let view = f.job_view(FOLLOWER, false).unwrap();
    assert_eq!(view.merged_into, LEADER);
    assert!(view.waiting.contains("merged with job"), "{}", view.waiting);
    let mut w = worker(&mut f, "w", 8);
    f.dispatch();
    let first = assignments(&mut w);
    assert!(
        first.iter().all(|a| a.token.job_id == LEADER),
        "only the leader renders: {first:?}"
    );
    // Put the first assignments back through the run (they were taken above).
    for a in &first {
        succeed(&mut f, "w", a);
    }
    let outputs = run_to_end(&mut f, &mut w, LEADER);
    let follower = f.job_view(FOLLOWER, false).unwrap();
    assert_eq!(follower.state, JobState::Succeeded);
    assert_eq!(follower.cached_from, LEADER);
    assert_eq!(follower.merged_into, LEADER);
    assert_eq!(follower.outputs, outputs, "the leader's files");
    assert!(
        f.running_twin(&key).is_none(),
        "nothing of that key runs now"
    );
}

#[test]
fn when_the_leader_is_cancelled_its_first_follower_renders_and_the_others_follow_it() {
    const LEADER: &str = "0000000000000001";
    let mut f = farm();
    f.insert_job(job_record(LEADER), &[]);
    for id in ["0000000000000002", "0000000000000003"] {
        f.insert_job(
            JobRecord {
                merged_into: Some(LEADER.into()),
                ..job_record(id)
            },
            &[],
        );
    }
    let commit = f
        .begin_cancel(LEADER)
        .unwrap()
        .expect("a cancel to persist");
    f.finish_commit(commit.after, Ok(()));
    assert_eq!(
        f.job_view(LEADER, false).unwrap().state,
        JobState::Cancelled
    );
    let second = f.job_view("0000000000000002", false).unwrap();
    assert!(second.merged_into.is_empty(), "renders itself");
    assert_eq!(
        f.job_view("0000000000000003", false).unwrap().merged_into,
        "0000000000000002"
    );
    let mut w = worker(&mut f, "w", 8);
    run_to_end(&mut f, &mut w, "0000000000000002");
    assert_eq!(
        f.job_view("0000000000000003", false).unwrap().state,
        JobState::Succeeded
    );
    assert_eq!(
        f.job_view("0000000000000003", false).unwrap().cached_from,
        "0000000000000002"
    );
}
