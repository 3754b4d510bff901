//! Unit tests of model jobs in the farm: tasks that need a model go only to workers
//! serving it, a job waits with a reason while none does, and jobs with the same text key
//! share one text encoding.

use std::sync::Arc;

use reelfarm_proto::v1::ServedModel;
use tokio::sync::mpsc;

use super::tests::{assignments, config, record_of};
use super::*;
use crate::model::{ModelSpec, Priority, Sampler};

fn model_job(farm: &mut Farm, id: &str, prompt: &str, seed: u64) {
    model_job_as(farm, id, prompt, seed, Priority::Normal);
}

fn model_job_as(farm: &mut Farm, id: &str, prompt: &str, seed: u64, priority: Priority) {
    let spec = JobSpec {
        priority,
        ..model_spec(prompt, seed)
    };
    farm.insert_job(record_of(id, spec), &[]);
}

fn model_spec(prompt: &str, seed: u64) -> JobSpec {
    JobSpec {
        prompt: prompt.into(),
        duration_seconds: 9.0 / 12.0,
        fps: 12,
        width: 64,
        height: 64,
        seed,
        steps: 20,
        sampler: Sampler::UniPc,
        audio: false,
        priority: Priority::Normal,
        tenant: "t".into(),
        labels: Default::default(),
        model: Some(ModelSpec {
            name: "wan".into(),
            family: "wan2.1-t2v".into(),
            negative_prompt: String::new(),
            guidance_scale: 5.0,
            guide_strength: None,
        }),
    }
}

fn worker(
    farm: &mut Farm,
    id: &str,
    slots: u32,
    models: &[&str],
) -> mpsc::UnboundedReceiver<ToWorker> {
    let (tx, rx) = mpsc::unbounded_channel();
    farm.register_worker(
        WorkerInfo {
            id: id.into(),
            slots,
            models: models
                .iter()
                .map(|m| ServedModel {
                    name: m.to_string(),
                    family: "wan2.1-t2v".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
        tx,
    );
    rx
}

fn output(name: &str) -> Output {
    Output {
        kind: "text".into(),
        uri: format!("file:///store/{name}"),
        sha256: "00".repeat(32),
        bytes: 1,
    }
}

fn succeed(farm: &mut Farm, worker: &str, a: &Assignment, outputs: Vec<Output>) {
    let commit = farm
        .begin_result(worker, &a.token, AttemptResult::success(outputs))
        .expect("current token accepted")
        .expect("a success needs a commit");
    farm.finish_commit(commit.after, Ok(()));
}

fn kinds(a: &[Assignment]) -> Vec<(&str, TaskKind)> {
    a.iter()
        .map(|a| (a.token.job_id.as_str(), a.kind))
        .collect()
}

#[test]
fn model_tasks_go_only_to_workers_serving_the_model() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    model_job(&mut f, "000000000000000a", "a robot", 1);
    let mut cpu = worker(&mut f, "cpu", 4, &[]);
    f.dispatch();
    let a = assignments(&mut cpu);
    assert_eq!(
        kinds(&a),
        [("000000000000000a", TaskKind::Plan)],
        "only the plan"
    );
    let view = f.job_view("000000000000000a", false).expect("job");
    assert!(
        view.waiting.contains("no live worker serves model \"wan\""),
        "{}",
        view.waiting
    );
    let mut other = worker(&mut f, "other", 4, &["another-model"]);
    f.dispatch();
    assert!(assignments(&mut other).is_empty(), "serves another model");
    let mut gpu = worker(&mut f, "gpu", 1, &["wan"]);
    f.dispatch();
    let a = assignments(&mut gpu);
    assert_eq!(kinds(&a), [("000000000000000a", TaskKind::TextEncode)]);
    assert!(f
        .job_view("000000000000000a", false)
        .expect("job")
        .waiting
        .is_empty());
}

#[test]
fn a_worker_serving_a_model_also_takes_shared_work_when_no_model_task_waits() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    model_job(&mut f, "000000000000000a", "a robot", 1);
    let mut gpu = worker(&mut f, "gpu", 2, &["wan"]);
    f.dispatch();
    let mut a = assignments(&mut gpu);
    a.sort_by_key(|a| a.kind.as_str());
    assert_eq!(
        kinds(&a),
        [
            ("000000000000000a", TaskKind::Plan),
            ("000000000000000a", TaskKind::TextEncode)
        ],
        "the model's queue first, then the shared one"
    );
}

#[test]
fn jobs_with_the_same_text_key_encode_once() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    model_job(&mut f, "000000000000000a", "a robot", 1);
    model_job(&mut f, "000000000000000b", "a robot", 2);
    model_job(&mut f, "000000000000000c", "a cat", 3);
    let mut gpu = worker(&mut f, "gpu", 8, &["wan"]);
    f.dispatch();
    let first = assignments(&mut gpu);
    let texts: Vec<&Assignment> = first
        .iter()
        .filter(|a| a.kind == TaskKind::TextEncode)
        .collect();
    let ids: Vec<&str> = texts.iter().map(|a| a.token.job_id.as_str()).collect();
    assert_eq!(
        ids,
        ["000000000000000a", "000000000000000c"],
        "b waits for a"
    );
    assert!(
        texts.iter().all(|a| a.inputs.is_empty()),
        "nothing to reuse yet"
    );
    let b = f.job_view("000000000000000b", false).expect("job");
    assert!(
        b.waiting.contains("shared with job 000000000000000a"),
        "{}",
        b.waiting
    );

    succeed(&mut f, "gpu", texts[0], vec![output("a-text")]);
    f.dispatch();
    let next = assignments(&mut gpu);
    let b_text = next
        .iter()
        .find(|a| a.token.job_id == "000000000000000b" && a.kind == TaskKind::TextEncode)
        .expect("b's text task is dispatched once a's is committed");
    assert_eq!(b_text.inputs.len(), 1);
    assert_eq!(b_text.inputs[0].kind, TaskKind::TextEncode);
    assert_eq!(b_text.inputs[0].output, output("a-text"), "a's embeddings");
}

#[test]
fn a_waiter_takes_over_when_the_owner_of_the_encoding_is_cancelled() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    model_job(&mut f, "000000000000000a", "a robot", 1);
    model_job(&mut f, "000000000000000b", "a robot", 2);
    let mut gpu = worker(&mut f, "gpu", 8, &["wan"]);
    f.dispatch();
    let texts: Vec<String> = assignments(&mut gpu)
        .iter()
        .filter(|a| a.kind == TaskKind::TextEncode)
        .map(|a| a.token.job_id.clone())
        .collect();
    assert_eq!(texts, ["000000000000000a"]);
    let commit = f
        .begin_cancel("000000000000000a")
        .expect("cancellable")
        .expect("not terminal");
    f.finish_commit(commit.after, Ok(()));
    f.dispatch();
    let b: Vec<Assignment> = assignments(&mut gpu)
        .into_iter()
        .filter(|a| a.kind == TaskKind::TextEncode)
        .collect();
    assert_eq!(kinds(&b), [("000000000000000b", TaskKind::TextEncode)]);
    assert!(b[0].inputs.is_empty(), "b encodes itself");
    assert_eq!(f.text.len(), 1, "b owns the key now");
}

fn loaded(name: &str) -> Vec<reelfarm_proto::v1::ResidentModel> {
    vec![reelfarm_proto::v1::ResidentModel {
        name: name.into(),
        weight_bytes: 5 << 30,
        memory: "gpu".into(),
    }]
}

#[test]
fn a_model_task_is_left_to_the_worker_holding_its_model() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    model_job(&mut f, "000000000000000a", "a robot", 1);
    // The cold worker asks first (round-robin order) and has room for everything.
    let mut cold = worker(&mut f, "cold", 4, &["wan"]);
    let mut warm = worker(&mut f, "warm", 1, &["wan"]);
    f.set_resident("warm", loaded("wan"), 0);
    f.dispatch();
    assert_eq!(
        kinds(&assignments(&mut cold)),
        [("000000000000000a", TaskKind::Plan)],
        "the cold worker takes the plan, not the model task"
    );
    assert_eq!(
        kinds(&assignments(&mut warm)),
        [("000000000000000a", TaskKind::TextEncode)],
        "the worker holding the model gets it"
    );
}

#[test]
fn affinity_is_bounded_and_ends_with_the_warm_worker() {
    // No wait: any worker serving the model takes it at once.
    let mut f = Farm::new(
        1,
        FarmConfig {
            affinity_wait: std::time::Duration::ZERO,
            ..config()
        },
        Arc::new(Metrics::new()),
    );
    model_job(&mut f, "000000000000000a", "a robot", 1);
    let mut cold = worker(&mut f, "cold", 4, &["wan"]);
    let _warm = worker(&mut f, "warm", 1, &["wan"]);
    f.set_resident("warm", loaded("wan"), 0);
    f.dispatch();
    let got = kinds(&assignments(&mut cold))
        .into_iter()
        .map(|(_, k)| k)
        .collect::<Vec<_>>();
    assert!(got.contains(&TaskKind::TextEncode), "{got:?}");

    // With a wait: a worker that holds wan but may not run it makes nobody wait.
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    model_job(&mut f, "000000000000000d", "a robot", 3);
    let mut cold = worker(&mut f, "cold", 4, &["wan"]);
    let _holder = worker(&mut f, "holder", 1, &[]);
    f.set_resident("holder", loaded("wan"), 0);
    f.dispatch();
    assert!(kinds(&assignments(&mut cold)).contains(&("000000000000000d", TaskKind::TextEncode)));

    // A busy warm worker that loads another model ends the deferral; a drained one makes
    // nobody wait.
    for drained in [false, true] {
        let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
        let mut warm = worker(&mut f, "warm", 1, &["wan"]);
        f.set_resident("warm", loaded("wan"), 0);
        // The warm worker asks first and takes a HIGH reference job's plan: it is busy.
        f.insert_job(
            record_of(
                "000000000000000c",
                JobSpec {
                    model: None,
                    sampler: Sampler::Ddim,
                    priority: Priority::High,
                    ..model_spec("a ball", 5)
                },
            ),
            &[],
        );
        f.dispatch();
        assert_eq!(
            kinds(&assignments(&mut warm)),
            [("000000000000000c", TaskKind::Plan)]
        );
        model_job(&mut f, "000000000000000e", "a robot", 4);
        let mut cold = worker(&mut f, "cold", 4, &["wan"]);
        if drained {
            f.set_cordon("warm", true);
        }
        f.dispatch();
        let text = ("000000000000000e", TaskKind::TextEncode);
        assert_eq!(
            kinds(&assignments(&mut cold)).contains(&text),
            drained,
            "drained {drained}"
        );
        if !drained {
            f.set_resident("warm", loaded("other"), 0);
            f.dispatch();
            assert!(kinds(&assignments(&mut cold)).contains(&text));
        }
    }
}

#[test]
fn a_model_too_large_for_every_gpu_is_not_served_and_says_so() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    model_job(&mut f, "000000000000000a", "a robot", 1);
    let gpu_worker = |f: &mut Farm, id: &str, gib: u64| {
        let (tx, rx) = mpsc::unbounded_channel();
        f.register_worker(
            WorkerInfo {
                id: id.into(),
                slots: 1,
                models: vec![ServedModel {
                    name: "wan".into(),
                    family: "wan2.1-t2v".into(),
                    weight_bytes: 28 << 30,
                    ..Default::default()
                }],
                gpu: Some(reelfarm_proto::v1::GpuDevice {
                    total_memory_bytes: gib << 30,
                    ..Default::default()
                }),
                ..Default::default()
            },
            tx,
        );
        rx
    };
    let mut small = gpu_worker(&mut f, "small", 24);
    f.dispatch();
    assert_eq!(
        kinds(&assignments(&mut small)),
        [("000000000000000a", TaskKind::Plan)],
        "a 24 GiB GPU takes the plan, not the 28 GiB model's tasks"
    );
    let view = f.job_view("000000000000000a", false).expect("job");
    assert!(
        view.waiting.contains("needs about 33.6 GiB") && view.waiting.contains("at most 24.0 GiB"),
        "{}",
        view.waiting
    );
    let mut large = gpu_worker(&mut f, "large", 80);
    f.dispatch();
    assert_eq!(
        kinds(&assignments(&mut large)),
        [("000000000000000a", TaskKind::TextEncode)],
        "an 80 GiB GPU serves it"
    );
}

fn preempts(rx: &mut mpsc::UnboundedReceiver<ToWorker>) -> Vec<AttemptToken> {
    let mut v = vec![];
    while let Ok(msg) = rx.try_recv() {
        if let ToWorker::Preempt(t) = msg {
            v.push(t);
        }
    }
    v
}

/// Runs `id`'s TEXT_ENCODE on `gpu` and starts its DENOISE there, returning that assignment.
fn running_denoise(
    f: &mut Farm,
    gpu: &mut mpsc::UnboundedReceiver<ToWorker>,
    id: &str,
) -> Assignment {
    running_denoise_on(f, "gpu", gpu, id)
}

fn running_denoise_on(
    f: &mut Farm,
    worker_id: &str,
    gpu: &mut mpsc::UnboundedReceiver<ToWorker>,
    id: &str,
) -> Assignment {
    f.dispatch();
    let text = assignments(gpu);
    assert_eq!(kinds(&text), [(id, TaskKind::TextEncode)]);
    succeed(f, worker_id, &text[0], vec![output(id)]);
    f.dispatch();
    let denoise = assignments(gpu);
    assert_eq!(kinds(&denoise), [(id, TaskKind::Denoise)]);
    f.progress(worker_id, &denoise[0].token, 3, 20, 1.0)
        .unwrap();
    denoise[0].clone()
}

#[test]
fn high_work_without_a_free_slot_preempts_a_low_denoise_which_resumes_from_its_checkpoint() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    let mut gpu = worker(&mut f, "gpu", 1, &["wan"]);
    let low = "000000000000000a";
    model_job_as(&mut f, low, "a slow cube", 1, Priority::Low);
    let denoise = running_denoise(&mut f, &mut gpu, low);
    assert!(denoise.resume.is_none(), "a first attempt starts at step 0");
    // A checkpoint after step 3 is kept; an older one changes nothing.
    let file = |step: u32| Output {
        kind: "checkpoint".into(),
        uri: format!("file:///store/c{step}"),
        sha256: "00".repeat(32),
        bytes: 1,
    };
    assert!(matches!(
        f.checkpoint("gpu", &denoise.token, 3, file(3)),
        Ok(Some(Write::Checkpoint(_)))
    ));
    assert!(matches!(
        f.checkpoint("gpu", &denoise.token, 2, file(2)),
        Ok(None)
    ));
    assert!(matches!(
        f.checkpoint("gpu", &denoise.token, 20, file(20)),
        Err(Rejection::Checkpoint(_))
    ));

    // NORMAL work does not preempt.
    model_job_as(
        &mut f,
        "000000000000000b",
        "a normal ball",
        2,
        Priority::Normal,
    );
    f.preempt_scanned = None;
    f.dispatch();
    assert!(preempts(&mut gpu).is_empty(), "only HIGH work preempts");

    let high = "000000000000000c";
    model_job_as(&mut f, high, "an urgent ball", 3, Priority::High);
    f.preempt_scanned = None;
    f.dispatch();
    assert_eq!(
        preempts(&mut gpu),
        std::slice::from_ref(&denoise.token),
        "the LOW denoise"
    );
    f.preempt_scanned = None;
    f.dispatch();
    assert!(preempts(&mut gpu).is_empty(), "one preemption in flight");

    assert!(matches!(
        f.checkpoint("gpu", &denoise.token, 4, file(4)),
        Ok(Some(_))
    ));
    f.hand_back("gpu", &denoise.token, "preempted after step 4", true)
        .unwrap();
    f.dispatch();
    let next = assignments(&mut gpu);
    assert_eq!(kinds(&next), [(high, TaskKind::TextEncode)], "HIGH first");
    let view = f.job_view(low, true).unwrap();
    let t = view
        .tasks
        .iter()
        .find(|t| t.kind == TaskKind::Denoise)
        .unwrap();
    assert_eq!((t.preemptions, t.failures, t.checkpoint_step), (1, 0, 4));

    // Once the HIGH job's tasks are through, the LOW denoise resumes after step 4.
    succeed(&mut f, "gpu", &next[0], vec![output(high)]);
    f.dispatch();
    let a = assignments(&mut gpu);
    assert_eq!(kinds(&a), [(high, TaskKind::Denoise)]);
    succeed(&mut f, "gpu", &a[0], vec![output("latents")]);
    f.dispatch();
    let mut resumed = None;
    // The other jobs' tasks (NORMAL and HIGH) go first.
    for _ in 0..30 {
        let a = assignments(&mut gpu);
        let Some(a) = a.into_iter().next() else { break };
        if a.token.job_id == low && a.kind == TaskKind::Denoise {
            resumed = Some(a);
            break;
        }
        succeed(&mut f, "gpu", &a, vec![output("other")]);
        f.dispatch();
    }
    let resumed = resumed.expect("the LOW denoise is assigned again");
    assert_eq!(resumed.resume.as_ref().map(|r| r.step), Some(4));
    f.progress("gpu", &resumed.token, 5, 20, 1.0).unwrap();

    // Within --preemption-min-interval-seconds it is not preempted again.
    model_job_as(
        &mut f,
        "000000000000000d",
        "another urgent ball",
        4,
        Priority::High,
    );
    f.preempt_scanned = None;
    f.dispatch();
    assert!(preempts(&mut gpu).is_empty(), "at most once per interval");
}

#[test]
fn high_work_with_a_free_slot_elsewhere_or_preemption_off_preempts_nothing() {
    for (preemption, spare) in [(true, true), (false, false)] {
        let mut f = Farm::new(
            1,
            FarmConfig {
                preemption,
                ..config()
            },
            Arc::new(Metrics::new()),
        );
        let mut gpu = worker(&mut f, "gpu", 1, &["wan"]);
        let low = "000000000000000a";
        model_job_as(&mut f, low, "a slow cube", 1, Priority::Low);
        running_denoise(&mut f, &mut gpu, low);
        let _spare = spare.then(|| worker(&mut f, "gpu-2", 4, &["wan"]));
        model_job_as(&mut f, "000000000000000c", "urgent", 3, Priority::High);
        f.preempt_scanned = None;
        f.dispatch();
        assert!(
            preempts(&mut gpu).is_empty(),
            "preemption {preemption}, spare {spare}"
        );
    }
}

#[test]
fn a_cold_model_task_goes_to_the_idle_worker_that_loads_it_without_evicting() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    let pooled = |f: &mut Farm, id: &str, budget_gib: u64| {
        let (tx, rx) = mpsc::unbounded_channel();
        let served = |name: &str| ServedModel {
            name: name.into(),
            family: "wan2.1-t2v".into(),
            weight_bytes: 5 << 30,
            ..Default::default()
        };
        f.register_worker(
            WorkerInfo {
                id: id.into(),
                slots: 1,
                models: vec![served("wan"), served("other")],
                resident: vec![reelfarm_proto::v1::ResidentModel {
                    name: "other".into(),
                    weight_bytes: 8 << 30,
                    memory: "gpu".into(),
                }],
                model_memory_budget_bytes: budget_gib << 30,
                ..Default::default()
            },
            tx,
        );
        rx
    };
    // "full" asks first; loading wan (5 GiB) beside its 8 GiB would pass its 10 GiB budget.
    let mut full = pooled(&mut f, "full", 10);
    let mut roomy = pooled(&mut f, "roomy", 20);
    let info = |f: &Farm, id: &str| f.workers[id].info.clone();
    assert_eq!(
        placement::evicted_by(&info(&f, "full"), "wan", 5 << 30),
        8 << 30
    );
    assert_eq!(placement::evicted_by(&info(&f, "roomy"), "wan", 5 << 30), 0);
    assert_eq!(
        placement::evicted_by(&info(&f, "full"), "other", 8 << 30),
        0
    );
    model_job(&mut f, "000000000000000a", "a robot", 1);
    f.dispatch();
    assert_eq!(
        kinds(&assignments(&mut full)),
        [("000000000000000a", TaskKind::Plan)],
        "the worker that would evict takes other work"
    );
    assert_eq!(
        kinds(&assignments(&mut roomy)),
        [("000000000000000a", TaskKind::TextEncode)],
        "the one with room loads the model"
    );
}

#[test]
fn a_preempted_denoise_that_finishes_instead_frees_the_queue_for_the_next_preemption() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    let mut one = worker(&mut f, "one", 1, &["wan"]);
    model_job_as(&mut f, "000000000000000a", "slow a", 1, Priority::Low);
    let a = running_denoise_on(&mut f, "one", &mut one, "000000000000000a");
    let mut two = worker(&mut f, "two", 1, &["wan"]);
    model_job_as(&mut f, "000000000000000b", "slow b", 2, Priority::Low);
    let b = running_denoise_on(&mut f, "two", &mut two, "000000000000000b");
    model_job_as(&mut f, "000000000000000c", "urgent", 3, Priority::High);
    f.preempt_scanned = None;
    f.dispatch();
    // The HIGH job's plan (shared queue) and text encoding (wan queue) each find no free
    // slot: one preemption per queue.
    assert_eq!(preempts(&mut one), std::slice::from_ref(&a.token));
    assert_eq!(preempts(&mut two), std::slice::from_ref(&b.token));
    assert_eq!(f.preempting.len(), 2);
    // "one" was at its last step: it answers with the result, not a hand-back.
    succeed(&mut f, "one", &a, vec![output("latents")]);
    f.preempt_scanned = None;
    f.dispatch();
    let denoise = f.jobs["000000000000000a"]
        .record
        .tasks
        .iter()
        .position(|t| t.kind == TaskKind::Denoise)
        .unwrap() as u32;
    assert!(
        !f.preempting
            .contains_key(&("000000000000000a".to_string(), denoise)),
        "the answered preemption is no longer in flight: {:?}",
        f.preempting
    );
}

/// A worker serving "wan" that batches `max_batch` DENOISE tasks, waiting up to `delay`
/// for a batch to fill; offering `running`, of which `batches` ran as batches.
fn batching_worker(
    farm: &mut Farm,
    slots: u32,
    max_batch: u32,
    delay: std::time::Duration,
    running: Vec<AttemptToken>,
    batches: Vec<Vec<AttemptToken>>,
) -> mpsc::UnboundedReceiver<ToWorker> {
    let (tx, rx) = mpsc::unbounded_channel();
    farm.register_worker(
        WorkerInfo {
            id: "gpu".into(),
            slots,
            models: vec![ServedModel {
                name: "wan".into(),
                family: "wan2.1-t2v".into(),
                max_batch,
                ..Default::default()
            }],
            max_queue_delay: delay,
            running,
            running_batches: batches,
            ..Default::default()
        },
        tx,
    );
    rx
}

/// Runs the TEXT_ENCODE and PLAN of every job in `ids` on "gpu" (one slot each), leaving
/// their DENOISE tasks READY.
fn encode_all(f: &mut Farm, gpu: &mut mpsc::UnboundedReceiver<ToWorker>, ids: &[&str]) {
    f.dispatch();
    let early = assignments(gpu);
    assert_eq!(early.len(), 2 * ids.len(), "{:?}", kinds(&early));
    for a in &early {
        assert!(matches!(a.kind, TaskKind::TextEncode | TaskKind::Plan));
        assert_eq!(a.batch, None, "only DENOISE tasks batch");
        succeed(f, "gpu", a, vec![output(&a.token.job_id)]);
    }
}

/// A farm with an 8-slot "gpu" worker batching `max_batch`, two model jobs of one shape
/// encoded, and the DENOISE assignments of one dispatch.
fn two_jobs_dispatched(
    max_batch: u32,
) -> (Farm, mpsc::UnboundedReceiver<ToWorker>, Vec<Assignment>) {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    let mut gpu = batching_worker(&mut f, 8, max_batch, Default::default(), vec![], vec![]);
    model_job(&mut f, BATCH_JOBS[0], "clip 0", 0);
    model_job(&mut f, BATCH_JOBS[1], "clip 1", 1);
    encode_all(&mut f, &mut gpu, &BATCH_JOBS[..2]);
    f.dispatch();
    let denoise = assignments(&mut gpu);
    assert_eq!(denoise.len(), 2, "{:?}", kinds(&denoise));
    (f, gpu, denoise)
}

fn free_slots(f: &Farm) -> u32 {
    f.workers["gpu"].free
}

fn batch_size(f: &Farm, a: &Assignment) -> u32 {
    let job = &f.jobs[&a.token.job_id];
    let index = job
        .record
        .tasks
        .iter()
        .position(|t| t.id == a.token.task_id)
        .unwrap();
    job.tasks[index].batch_size
}

const BATCH_JOBS: [&str; 3] = ["000000000000000a", "000000000000000b", "000000000000000c"];

#[test]
fn denoise_tasks_of_one_shape_run_as_one_batch_in_one_slot_freed_by_the_last() {
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    let mut gpu = batching_worker(&mut f, 8, 4, Default::default(), vec![], vec![]);
    for (i, id) in BATCH_JOBS.iter().enumerate() {
        model_job(&mut f, id, &format!("clip {i}"), i as u64);
    }
    encode_all(&mut f, &mut gpu, &BATCH_JOBS);
    f.dispatch();
    let denoise = assignments(&mut gpu);
    assert_eq!(denoise.len(), 3, "{:?}", kinds(&denoise));
    let batch = denoise[0].batch.expect("batched");
    assert_eq!(batch.1, 3);
    assert!(
        denoise.iter().all(|a| a.batch == Some(batch)),
        "one batch id"
    );
    assert!(denoise.iter().all(|a| batch_size(&f, a) == 3));
    assert_eq!(free_slots(&f), 7, "a batch holds one slot");
    succeed(&mut f, "gpu", &denoise[0], vec![output("latents-a")]);
    succeed(&mut f, "gpu", &denoise[1], vec![output("latents-b")]);
    assert_eq!(free_slots(&f), 7, "the slot is held while a member runs");
    succeed(&mut f, "gpu", &denoise[2], vec![output("latents-c")]);
    assert_eq!(free_slots(&f), 8, "the last member frees the slot");
}

#[test]
fn other_shapes_and_workers_without_batch_capacity_get_one_task_each() {
    // A worker that batches 4: two shapes, no batch.
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    let mut gpu = batching_worker(&mut f, 8, 4, Default::default(), vec![], vec![]);
    model_job(&mut f, BATCH_JOBS[0], "clip 0", 0);
    let wider = JobSpec {
        width: 128,
        ..model_spec("clip 1", 1)
    };
    f.insert_job(record_of(BATCH_JOBS[1], wider), &[]);
    encode_all(&mut f, &mut gpu, &BATCH_JOBS[..2]);
    f.dispatch();
    let denoise = assignments(&mut gpu);
    assert_eq!(denoise.len(), 2);
    assert!(denoise.iter().all(|a| a.batch.is_none()), "{denoise:?}");
    assert_eq!(free_slots(&f), 6, "one slot each");

    // A worker that batches 1: one shape, no batch.
    let (f, _gpu, denoise) = two_jobs_dispatched(1);
    assert!(denoise
        .iter()
        .all(|a| a.batch.is_none() && batch_size(&f, a) == 1));
}

#[test]
fn a_lone_task_waits_at_most_max_queue_delay_for_batch_mates() {
    let delay = std::time::Duration::from_millis(300);
    let mut f = Farm::new(1, config(), Arc::new(Metrics::new()));
    let mut gpu = batching_worker(&mut f, 8, 2, delay, vec![], vec![]);
    model_job(&mut f, BATCH_JOBS[0], "clip 0", 0);
    encode_all(&mut f, &mut gpu, &BATCH_JOBS[..1]);
    f.dispatch();
    assert!(
        assignments(&mut gpu).is_empty(),
        "held for a batch-mate while younger than the delay"
    );
    // A mate arrives within the delay: both go as one batch.
    model_job(&mut f, BATCH_JOBS[1], "clip 1", 1);
    encode_all(&mut f, &mut gpu, &BATCH_JOBS[1..2]);
    f.dispatch();
    let denoise = assignments(&mut gpu);
    assert_eq!(denoise.len(), 2);
    assert!(denoise.iter().all(|a| a.batch.is_some_and(|b| b.1 == 2)));

    // No mate: after the delay the task goes alone.
    model_job(&mut f, BATCH_JOBS[2], "clip 2", 2);
    encode_all(&mut f, &mut gpu, &BATCH_JOBS[2..]);
    f.dispatch();
    assert!(assignments(&mut gpu).is_empty());
    std::thread::sleep(delay + std::time::Duration::from_millis(50));
    f.dispatch();
    let alone = assignments(&mut gpu);
    assert_eq!(kinds(&alone), [(BATCH_JOBS[2], TaskKind::Denoise)]);
    assert_eq!(alone[0].batch, None);
}

#[test]
fn a_batch_offered_again_after_a_lost_stream_is_adopted_into_one_slot() {
    let (mut f, _gpu, denoise) = two_jobs_dispatched(2);
    assert!(denoise.iter().all(|a| a.batch.is_some_and(|b| b.1 == 2)));
    // The stream breaks; the worker comes back still running the batch and offers it.
    f.remove_worker("gpu", None, "stream_lost");
    let tokens: Vec<AttemptToken> = denoise.iter().map(|a| a.token.clone()).collect();
    let _gpu = batching_worker(
        &mut f,
        8,
        2,
        Default::default(),
        tokens.clone(),
        vec![tokens.clone()],
    );
    assert_eq!(free_slots(&f), 7, "both members adopted into one slot");
    succeed(&mut f, "gpu", &denoise[0], vec![output("latents-a")]);
    assert_eq!(free_slots(&f), 7, "held while its mate runs");
    succeed(&mut f, "gpu", &denoise[1], vec![output("latents-b")]);
    assert_eq!(free_slots(&f), 8, "freed by the last member");
}
