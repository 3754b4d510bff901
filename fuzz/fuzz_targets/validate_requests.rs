//! Fuzz target: the coordinator's request validation (`api::validate`), then the planner and
//! the worker's decoding of what an accepted request becomes.
//!
//! The first input byte picks the request (`selector % 4`: SubmitJob, SubmitBatch, ListJobs,
//! a job id); the rest is its protobuf encoding (or the id's UTF-8). Beyond "no panic":
//!
//! - an accepted spec is within the bounds documented in `validate.rs`, with the defaults
//!   of the fields left at 0 filled in and every other field as sent;
//! - a refusal names a field of the request it refused (`jobs[3].spec.fps`, `page_token`);
//! - an accepted spec plans (default and extreme planner settings) into tasks whose
//!   segments cover every frame exactly once, and every task's assignment, as the
//!   coordinator sends it, is accepted by the worker's `executor::decode`: no request that
//!   the API accepts can make a job whose tasks every worker refuses;
//! - the first thing a PLAN task does with an accepted prompt, `scene::parse`, never fails
//!   and gives between one and `MAX_OBJECTS` bodies.

#![no_main]

use std::collections::{BTreeMap, HashSet};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use reelfarm_coordinator::api::{convert, validate};
use reelfarm_coordinator::model::{AttemptToken, JobSpec, Output, TaskKind};
use reelfarm_coordinator::planner::{self, PlannerConfig};
use reelfarm_coordinator::scheduler::{Assignment, NewJob, TaskInput};
use reelfarm_proto::v1;
use reelfarm_worker::agent::executor;
use reelfarm_worker::pipeline::scene;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Ok(req) = v1::SubmitJobRequest::decode(body) {
                check_submit_job(&req);
            }
        }
        1 => {
            if let Ok(req) = v1::SubmitBatchRequest::decode(body) {
                check_submit_batch(&req);
            }
        }
        2 => {
            if let Ok(req) = v1::ListJobsRequest::decode(body) {
                check_list_jobs(&req);
            }
        }
        _ => {
            if let Ok(id) = std::str::from_utf8(body) {
                check_job_id(id);
            }
        }
    }
});

/// Field paths a refusal may name, by request.
const JOB_FIELDS: &[&str] = &["spec", "idempotency_key"];
const LIST_FIELDS: &[&str] = &["tenant", "state", "label", "page_size", "page_token"];

/// A refusal names one of `roots` (exactly, or followed by `.`/`[`) and says what is wrong.
fn assert_names_field(e: &validate::FieldError, roots: &[&str]) {
    let named = roots.iter().any(|root| {
        e.field
            .strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    });
    assert!(named, "error names no field of {roots:?}: {e:?}");
    assert!(!e.problem.is_empty(), "error says what is wrong: {e:?}");
    assert_eq!(
        e.to_string(),
        format!("{} {}", e.field, e.problem),
        "message is the field then the problem"
    );
}

fn check_submit_job(req: &v1::SubmitJobRequest) {
    let spec = validate::job_spec(req.spec.as_ref());
    match validate::submit_job(req) {
        Ok(job) => {
            let sent = req.spec.as_ref().expect("an accepted request has a spec");
            check_spec(sent, &job.spec);
            assert!(spec.is_ok(), "submit_job accepted a spec job_spec refuses");
            check_idempotency_key(&req.idempotency_key, &job);
            check_planned(&job.spec);
        }
        Err(e) => {
            assert_names_field(&e, JOB_FIELDS);
            // The spec is checked first: a bad spec is the error, else the key is.
            match spec {
                Err(spec_error) => assert_eq!(e, spec_error, "spec error reported as is"),
                Ok(_) => assert_eq!(e.field, "idempotency_key", "good spec, bad key: {e:?}"),
            }
        }
    }
}

fn check_submit_batch(req: &v1::SubmitBatchRequest) {
    match validate::submit_batch(req) {
        Ok(jobs) => {
            assert!(
                (1..=validate::BATCH_MAX_JOBS).contains(&jobs.len()),
                "accepted batch of {} jobs",
                jobs.len()
            );
            assert_eq!(jobs.len(), req.jobs.len(), "one job per entry");
            for (sent, job) in req.jobs.iter().zip(&jobs) {
                check_spec(
                    sent.spec.as_ref().expect("accepted entry has a spec"),
                    &job.spec,
                );
                check_idempotency_key(&sent.idempotency_key, job);
            }
            // Planning a long batch is the same check as planning each job: keep it cheap.
            if let Some(job) = jobs.first() {
                check_planned(&job.spec);
            }
        }
        Err(e) => {
            assert_names_field(&e, &["jobs"]);
            if req.jobs.is_empty() || req.jobs.len() > validate::BATCH_MAX_JOBS {
                assert_eq!(e.field, "jobs", "batch size refused as a whole");
                return;
            }
            // All or nothing, naming the first bad entry with its own error.
            let (i, entry_error) = req
                .jobs
                .iter()
                .enumerate()
                .find_map(|(i, j)| validate::submit_job(j).err().map(|e| (i, e)))
                .expect("a refused batch of valid size has a bad entry");
            assert_eq!(e, entry_error.within(&format!("jobs[{i}].")));
        }
    }
}

fn check_list_jobs(req: &v1::ListJobsRequest) {
    match validate::list_jobs(req) {
        Ok(q) => {
            let page = if req.page_size == 0 {
                validate::PAGE_SIZE_DEFAULT
            } else {
                req.page_size
            };
            assert!((1..=validate::PAGE_SIZE_MAX).contains(&page));
            assert_eq!(q.page_size, page as usize, "page size as sent or default");
            match &q.tenant {
                None => assert!(req.tenant.is_empty(), "tenant filter dropped"),
                Some(t) => {
                    assert_eq!(t, &req.tenant);
                    assert_tenant_ok(t);
                }
            }
            match &q.after {
                None => assert!(req.page_token.is_empty(), "page token dropped"),
                Some(id) => {
                    assert_eq!(id, &req.page_token);
                    assert!(is_job_id(id), "page token {id:?} is not a job id");
                }
            }
            match &q.label {
                None => assert!(req.label.is_empty(), "label filter dropped"),
                Some((k, v)) => {
                    assert_label_key_ok(k);
                    let back = match v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    };
                    assert_eq!(back, req.label, "label filter as sent");
                }
            }
            assert_eq!(q.state.is_none(), req.state == 0, "state filter");
            assert_eq!(q.with_tasks, !req.summary_only);
        }
        Err(e) => assert_names_field(&e, LIST_FIELDS),
    }
}

fn check_job_id(id: &str) {
    match validate::job_id("id", id) {
        Ok(v) => {
            assert!(is_job_id(id), "accepted {id:?} as a job id");
            assert_eq!(v, id);
        }
        Err(e) => {
            assert!(!is_job_id(id), "refused the job id {id:?}");
            assert_eq!(e.field, "id", "error names the field it was given");
        }
    }
}

/// The documented shape of a job id, written again here as the oracle.
fn is_job_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn assert_tenant_ok(t: &str) {
    assert!(
        (1..=validate::TENANT_MAX_CHARS).contains(&t.len())
            && t.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
            && !t.starts_with('-')
            && !t.ends_with('-'),
        "tenant {t:?}"
    );
}

fn assert_label_key_ok(k: &str) {
    assert!(
        (1..=validate::LABEL_KEY_MAX_CHARS).contains(&k.len())
            && k.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'/')),
        "label key {k:?}"
    );
}

fn check_idempotency_key(sent: &str, job: &NewJob) {
    match &job.idempotency_key {
        None => assert!(sent.is_empty(), "idempotency key dropped"),
        Some(k) => {
            assert_eq!(k, sent);
            assert!(
                k.len() <= validate::IDEMPOTENCY_KEY_MAX_CHARS
                    && k.bytes().all(
                        |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
                    ),
                "idempotency key {k:?}"
            );
        }
    }
}

/// `value` if it was sent, `default` if it was left at 0.
fn or_default(value: u32, default: u32) -> u32 {
    if value == 0 {
        default
    } else {
        value
    }
}

/// An accepted spec: within every documented bound, defaults filled in, the rest as sent.
fn check_spec(sent: &v1::JobSpec, spec: &JobSpec) {
    assert_eq!(spec.prompt, sent.prompt, "prompt as sent");
    let chars = spec.prompt.chars().count();
    assert!(
        !spec.prompt.trim().is_empty() && chars <= validate::PROMPT_MAX_CHARS,
        "prompt of {chars} characters"
    );
    assert!(
        !spec
            .prompt
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "control character in prompt {:?}",
        spec.prompt
    );
    assert!(
        spec.duration_seconds.is_finite()
            && (validate::DURATION_MIN_S..=validate::DURATION_MAX_S)
                .contains(&spec.duration_seconds),
        "duration {}",
        spec.duration_seconds
    );
    if sent.duration_seconds == 0.0 {
        assert_eq!(spec.duration_seconds, validate::DURATION_DEFAULT_S);
    } else {
        assert_eq!(spec.duration_seconds, sent.duration_seconds);
    }
    assert!(
        (1..=validate::FPS_MAX).contains(&spec.fps),
        "fps {}",
        spec.fps
    );
    assert_eq!(spec.fps, or_default(sent.fps, validate::FPS_DEFAULT));
    assert!(
        (validate::SIZE_MIN..=validate::WIDTH_MAX).contains(&spec.width)
            && spec.width.is_multiple_of(2),
        "width {}",
        spec.width
    );
    assert!(
        (validate::SIZE_MIN..=validate::HEIGHT_MAX).contains(&spec.height)
            && spec.height.is_multiple_of(2),
        "height {}",
        spec.height
    );
    assert_eq!(spec.width, or_default(sent.width, validate::WIDTH_DEFAULT));
    assert_eq!(
        spec.height,
        or_default(sent.height, validate::HEIGHT_DEFAULT)
    );
    assert!(
        (1..=validate::STEPS_MAX).contains(&spec.steps),
        "steps {}",
        spec.steps
    );
    assert_eq!(spec.steps, or_default(sent.steps, validate::STEPS_DEFAULT));
    if let Some(seed) = sent.seed {
        assert_eq!(spec.seed, seed, "seed as sent");
    }
    assert_eq!(
        spec.audio,
        sent.audio.unwrap_or(true),
        "audio defaults to on"
    );
    if sent.tenant.is_empty() {
        assert_eq!(spec.tenant, validate::TENANT_DEFAULT);
    } else {
        assert_eq!(spec.tenant, sent.tenant);
    }
    assert_tenant_ok(&spec.tenant);
    assert!(
        spec.labels.len() <= validate::LABELS_MAX,
        "{} labels",
        spec.labels.len()
    );
    let sent_labels: BTreeMap<_, _> = sent.labels.clone().into_iter().collect();
    assert_eq!(spec.labels, sent_labels, "labels as sent");
    for (k, v) in &spec.labels {
        assert_label_key_ok(k);
        assert!(
            v.chars().count() <= validate::LABEL_VALUE_MAX_CHARS
                && !v.chars().any(char::is_control),
            "label value {v:?}"
        );
    }
}

/// Plans an accepted spec with the default settings and with the extremes the
/// coordinator's flags allow, hands every task to the worker's decoder, and parses the
/// prompt as the PLAN task will.
fn check_planned(spec: &JobSpec) {
    let configs = [
        PlannerConfig::default(),
        PlannerConfig {
            segment_frames: 1,
            max_segments: u32::MAX,
        },
        PlannerConfig {
            segment_frames: u32::MAX,
            max_segments: 1,
        },
    ];
    for config in configs {
        check_plan(spec, config);
    }
    let parsed = scene::parse(&spec.prompt);
    assert!(
        (1..=scene::MAX_OBJECTS).contains(&parsed.objects.len()),
        "{} bodies from {:?}",
        parsed.objects.len(),
        spec.prompt
    );
}

fn check_plan(spec: &JobSpec, config: PlannerConfig) {
    let tasks = planner::plan(spec, config);
    let frames = spec.frame_count();
    assert_eq!(
        tasks.first().map(|t| t.kind),
        Some(TaskKind::Plan),
        "plan first"
    );
    assert_eq!(
        tasks.last().map(|t| t.kind),
        Some(TaskKind::Assemble),
        "assemble last"
    );
    let ids: HashSet<_> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), tasks.len(), "task ids are unique");
    let mut next = 0;
    let mut segments = 0u32;
    for t in tasks.iter().filter(|t| t.kind == TaskKind::VideoSegment) {
        assert_eq!(t.frame_start, next, "segments are contiguous");
        assert!(t.frame_end > t.frame_start, "segments are not empty");
        assert_eq!(t.segment_index, segments, "segments in order");
        next = t.frame_end;
        segments += 1;
    }
    assert_eq!(next, frames, "segments end at the last frame");
    assert!(
        (1..=config.max_segments.max(1)).contains(&segments),
        "{segments} segments for {config:?}"
    );
    assert_eq!(
        tasks.iter().any(|t| t.kind == TaskKind::Audio),
        spec.audio,
        "an audio task iff audio is on"
    );
    for (i, t) in tasks.iter().enumerate() {
        assert!(t.deps.iter().all(|d| (*d as usize) < i), "deps come first");
        assert!(
            t.weight.is_finite() && t.weight >= 0.0,
            "weight {}",
            t.weight
        );
    }
    let assemble = tasks.last().expect("assemble task");
    assert_eq!(
        assemble.deps,
        (0..tasks.len() as u32 - 1).collect::<Vec<_>>(),
        "assemble reads everything before it"
    );

    for (i, t) in tasks.iter().enumerate() {
        // Every dependency produced one output, as after a successful attempt.
        let inputs = t
            .deps
            .iter()
            .map(|d| {
                let dep = &tasks[*d as usize];
                TaskInput {
                    kind: dep.kind,
                    segment_index: dep.segment_index,
                    output: Output {
                        kind: dep.kind.as_str().to_string(),
                        uri: format!("file:///artifacts/0123456789abcdef/{}.json", dep.id),
                        sha256: "0".repeat(64),
                        bytes: 1,
                    },
                }
            })
            .collect();
        let assignment = convert::assignment(&Assignment {
            token: AttemptToken {
                job_id: "0123456789abcdef".into(),
                task_id: t.id.clone(),
                attempt: 1,
                term: 1,
            },
            kind: t.kind,
            spec: std::sync::Arc::new(spec.clone()),
            frame_start: t.frame_start,
            frame_end: t.frame_end,
            segment_index: t.segment_index,
            segment_count: segments,
            inputs,
            resume: None,
            batch: None,
        });
        let task = executor::decode(&assignment).unwrap_or_else(|e| {
            panic!(
                "the worker refuses task {i} ({}) of an accepted job: {e}",
                t.id
            )
        });
        assert_eq!(task.frame_start..task.frame_end, t.frame_start..t.frame_end);
        assert_eq!(
            task.spec.frame_count(),
            frames,
            "worker and coordinator count the same frames"
        );
        assert_eq!(task.inputs.len(), t.deps.len(), "one input per dependency");
    }
}
