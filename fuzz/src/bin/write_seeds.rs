//! Writes the seed corpora: a few valid (and one refused) inputs per fuzz target, so the
//! fuzzer starts from the shapes real clients, coordinators and PLAN tasks send.
//!
//! Usage (from the repository root, after `cargo +nightly fuzz build`):
//! `fuzz/target/x86_64-unknown-linux-gnu/release/write_seeds fuzz/corpus`
//! writes `<corpus>/<target>/seed-<name>` for every target; running it again rewrites the
//! same bytes.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use reelfarm_proto::v1;
use reelfarm_worker::pipeline::plan::make_plan;
use reelfarm_worker::pipeline::{ClipSpec, Sampler};

/// `validate_requests` picks the request by its first byte (`selector % 4`).
const SUBMIT_JOB: u8 = 0;
const SUBMIT_BATCH: u8 = 1;
const LIST_JOBS: u8 = 2;
const JOB_ID: u8 = 3;

const JOB_ID_EXAMPLE: &str = "0123456789abcdef";

/// `auth_metadata` builds the header from its first byte: `selector & 3` is how (the rest
/// as it is, a known header then the rest, the rest then a known header, the rest written
/// over a known header from `1 + 5 * (selector >> 4)` bytes before its end) and
/// `(selector >> 2) & 3` which known header (admin, submit, revoked, join token).
const AS_IS: u8 = 0;
const KNOWN_THEN_REST: u8 = 1;
const REST_THEN_KNOWN: u8 = 2;
const OVER_KNOWN: u8 = 3;
const ADMIN: u8 = 0;
const SUBMIT: u8 = 1 << 2;
const REVOKED: u8 = 2 << 2;
const JOIN: u8 = 3 << 2;
/// The target's bootstrap admin key (the one key whose secret is the same in every run).
const BOOTSTRAP_KEY: &str = "rfk_b00757a9_B00tstrapAdminKeyForFuzzing0123456789xyz";

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let root = Path::new(&root);
    for (name, bytes) in validate_requests() {
        write(root, "validate_requests", name, &bytes)?;
    }
    for (name, bytes) in decode_assignment() {
        write(root, "decode_assignment", name, &bytes)?;
    }
    for (name, bytes) in decode_plan() {
        write(root, "decode_plan", name, &bytes)?;
    }
    for (name, bytes) in auth_metadata() {
        write(root, "auth_metadata", name, &bytes)?;
    }
    Ok(())
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, bytes)?;
    println!("{} ({} bytes)", path.display(), bytes.len());
    Ok(())
}

fn with_selector(selector: u8, message: &impl Message) -> Vec<u8> {
    let mut bytes = vec![selector];
    message.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

/// A spec with every field set, as a careful client sends it.
fn full_spec() -> v1::JobSpec {
    v1::JobSpec {
        prompt: "two wooden cubes falling on grass".into(),
        duration_seconds: 2.5,
        fps: 24,
        width: 640,
        height: 360,
        seed: Some(7),
        steps: 30,
        sampler: v1::Sampler::Euler as i32,
        audio: Some(false),
        priority: v1::Priority::High as i32,
        tenant: "studio-a".into(),
        labels: HashMap::from([("team".into(), "vfx".into())]),
        ..Default::default()
    }
}

/// A model job with every model field set.
fn model_spec() -> v1::JobSpec {
    v1::JobSpec {
        prompt: "a robot dancing in a cyberpunk city".into(),
        model: "wan-1.3b".into(),
        negative_prompt: "blurry, static".into(),
        guidance_scale: Some(5.0),
        guide: true,
        guide_strength: Some(0.6),
        sampler: v1::Sampler::Unipc as i32,
        duration_seconds: 81.0 / 16.0,
        fps: 16,
        width: 832,
        height: 480,
        ..Default::default()
    }
}

/// The prompt alone: every other field takes its default.
fn prompt_only() -> v1::JobSpec {
    v1::JobSpec {
        prompt: "a red ball bouncing".into(),
        ..Default::default()
    }
}

fn validate_requests() -> Vec<(&'static str, Vec<u8>)> {
    let submit = |spec: v1::JobSpec, key: &str| v1::SubmitJobRequest {
        spec: Some(spec),
        idempotency_key: key.into(),
    };
    vec![
        (
            "submit-prompt-only",
            with_selector(SUBMIT_JOB, &submit(prompt_only(), "")),
        ),
        (
            "submit-full",
            with_selector(SUBMIT_JOB, &submit(full_spec(), "render:42")),
        ),
        (
            "submit-model",
            with_selector(SUBMIT_JOB, &submit(model_spec(), "")),
        ),
        (
            "submit-bad-fps",
            with_selector(
                SUBMIT_JOB,
                &submit(
                    v1::JobSpec {
                        fps: 61,
                        ..prompt_only()
                    },
                    "",
                ),
            ),
        ),
        (
            "batch",
            with_selector(
                SUBMIT_BATCH,
                &v1::SubmitBatchRequest {
                    jobs: vec![submit(prompt_only(), "a"), submit(full_spec(), "b")],
                },
            ),
        ),
        (
            "list",
            with_selector(
                LIST_JOBS,
                &v1::ListJobsRequest {
                    tenant: "studio-a".into(),
                    state: v1::JobState::Running as i32,
                    label: "team=vfx".into(),
                    page_size: 50,
                    page_token: JOB_ID_EXAMPLE.into(),
                    summary_only: true,
                },
            ),
        ),
        ("job-id", {
            let mut bytes = vec![JOB_ID];
            bytes.extend_from_slice(JOB_ID_EXAMPLE.as_bytes());
            bytes
        }),
    ]
}

/// The four task kinds of a 2 s clip at 12 fps (24 frames, two segments), as the
/// coordinator assigns them: defaults and seed filled in, dependencies' outputs attached.
fn decode_assignment() -> Vec<(&'static str, Vec<u8>)> {
    let spec = v1::JobSpec {
        prompt: "a red ball bouncing".into(),
        duration_seconds: 2.0,
        fps: 12,
        width: 320,
        height: 180,
        seed: Some(1),
        steps: 20,
        sampler: v1::Sampler::Ddim as i32,
        audio: Some(true),
        priority: v1::Priority::Normal as i32,
        tenant: "default".into(),
        labels: HashMap::new(),
        ..Default::default()
    };
    let input = |kind: &str, segment_index: u32| v1::TaskInput {
        kind: kind.into(),
        segment_index,
        output: Some(v1::Output {
            kind: kind.into(),
            uri: format!("file:///artifacts/{JOB_ID_EXAMPLE}/{kind}-{segment_index}.t1a1"),
            sha256: "0".repeat(64),
            bytes: 1024,
        }),
    };
    let assignment = |task_id: &str,
                      kind: v1::TaskKind,
                      frames: (u32, u32),
                      segment_index: u32,
                      inputs: Vec<v1::TaskInput>| {
        v1::Assignment {
            token: Some(v1::AttemptToken {
                job_id: JOB_ID_EXAMPLE.into(),
                task_id: task_id.into(),
                attempt: 1,
                term: 1,
            }),
            kind: kind as i32,
            spec: Some(spec.clone()),
            frame_start: frames.0,
            frame_end: frames.1,
            segment_index,
            segment_count: 2,
            inputs,
            resume: None,
            batch: None,
        }
        .encode_to_vec()
    };
    vec![
        (
            "plan",
            assignment("plan", v1::TaskKind::Plan, (0, 24), 0, vec![]),
        ),
        (
            "segment",
            assignment(
                "segment-001",
                v1::TaskKind::VideoSegment,
                (12, 24),
                1,
                vec![input("plan", 0)],
            ),
        ),
        (
            "audio",
            assignment(
                "audio",
                v1::TaskKind::Audio,
                (0, 24),
                0,
                vec![input("plan", 0)],
            ),
        ),
        (
            "assemble",
            assignment(
                "assemble",
                v1::TaskKind::Assemble,
                (0, 24),
                0,
                vec![
                    input("plan", 0),
                    input("segment", 0),
                    input("segment", 1),
                    input("audio", 0),
                ],
            ),
        ),
    ]
}

/// Real plans, as PLAN tasks write them, kept small: short clips at a low frame rate.
fn decode_plan() -> Vec<(&'static str, Vec<u8>)> {
    let spec = |prompt: &str, fps: u32| ClipSpec {
        prompt: prompt.into(),
        duration_seconds: 1.0,
        fps,
        width: 64,
        height: 36,
        seed: 3,
        steps: 4,
        sampler: Sampler::Euler,
        audio: true,
    };
    [
        ("ball", spec("a red ball bouncing", 4)),
        ("two-cubes", spec("two wooden cubes falling on grass", 2)),
    ]
    .into_iter()
    .map(|(name, spec)| {
        let plan = make_plan(&spec).expect("the seed specs are valid");
        (name, plan.to_bytes())
    })
    .collect()
}

/// Headers as clients send them, right and nearly right. The submit and revoked keys are
/// made anew in every run, so their seeds name them by the selector and carry the change.
fn auth_metadata() -> Vec<(&'static str, Vec<u8>)> {
    let seed = |selector: u8, rest: &[u8]| [&[selector][..], rest].concat();
    let admin = format!("Bearer {BOOTSTRAP_KEY}");
    vec![
        ("absent", vec![]),
        ("admin", seed(AS_IS, admin.as_bytes())),
        (
            "admin-lowercase-scheme",
            seed(AS_IS, format!("bearer {BOOTSTRAP_KEY}").as_bytes()),
        ),
        ("admin-bare-key", seed(AS_IS, BOOTSTRAP_KEY.as_bytes())),
        (
            "admin-wrong-secret",
            seed(
                AS_IS,
                format!("Bearer rfk_b00757a9_{}", "B".repeat(40)).as_bytes(),
            ),
        ),
        ("submit", seed(KNOWN_THEN_REST | SUBMIT, b"")),
        (
            "submit-trailing-whitespace",
            seed(KNOWN_THEN_REST | SUBMIT, b" \t\r\n"),
        ),
        (
            "submit-extra-word",
            seed(KNOWN_THEN_REST | SUBMIT, b" extra"),
        ),
        ("submit-last-char", seed(OVER_KNOWN | SUBMIT, b"X")),
        // 1 + 5 * 10 bytes before the end: inside the submit key's id.
        (
            "submit-id-char",
            seed(OVER_KNOWN | SUBMIT | (10 << 4), b"z"),
        ),
        ("revoked", seed(KNOWN_THEN_REST | REVOKED, b"")),
        (
            "revoked-leading-space",
            seed(REST_THEN_KNOWN | REVOKED, b" "),
        ),
        ("join-token", seed(KNOWN_THEN_REST | JOIN, b"")),
        (
            "join-token-scheme",
            seed(OVER_KNOWN | JOIN | (15 << 4), b"BEARER "),
        ),
        (
            "admin-over-known",
            seed(OVER_KNOWN | ADMIN | (4 << 4), b"0123456789"),
        ),
        ("basic", seed(AS_IS, b"Basic dXNlcjpwYXNzd29yZA==")),
        ("not-utf8", seed(AS_IS, b"Bearer \xff\xfe")),
    ]
}
