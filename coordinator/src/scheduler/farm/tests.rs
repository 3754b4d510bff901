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
    }
}

fn farm() -> Farm {
    Farm::new(
        TERM,
        FarmConfig {
            max_attempts: 2,
            max_active_jobs: 100,
        },
        Arc::new(Metrics::new()),
    )
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

fn assignments(rx: &mut mpsc::UnboundedReceiver<ToWorker>) -> Vec<Assignment> {
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
        .begin_result(worker, &a.token, true, "", vec![], None)
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
    let stale = f.begin_result("old", &first.token, true, "", vec![], None);
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
        f.begin_result("w", &a.token, true, "", vec![], None).err(),
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
        f.begin_result("other", &a.token, true, "", vec![], None)
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
        f.begin_result("w", &a1.token, false, "boom", vec![], None)
            .expect("accepted")
            .is_none(),
        "the first failure only requeues"
    );
    f.dispatch();
    let a2 = assignments(&mut rx).pop().expect("second attempt");
    assert_eq!(a2.token.attempt, 2);
    let commit = f
        .begin_result("w", &a2.token, false, "boom again", vec![], None)
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
                .begin_result("w", &a.token, true, "", outputs, None)
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
        f.begin_result("w", &a.token, true, "", vec![], None).err(),
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
        .begin_result("w", &a.token, true, "", vec![], None)
        .expect("ok")
        .expect("commit");
    f.finish_commit(c.after, Err("etcd unavailable".into()));
    f.dispatch();
    let again = assignments(&mut rx).pop().expect("the task runs again");
    assert_eq!(again.token.task_id, a.token.task_id);
    assert_eq!(again.token.attempt, a.token.attempt + 1);
}
