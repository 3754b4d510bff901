//! Request validation: protobuf requests → domain types, once, at the edge. Every bound is
//! a named constant (listed in the README, "Request limits"); an error names the field
//! path and the bound, e.g. `spec.fps must be 1..=60, got 0`... and nothing is stored.

use std::collections::BTreeMap;

use reelfarm_proto::v1;

use crate::model::{job::is_job_id, JobSpec, ModelSpec, Priority, Sampler};
use crate::scheduler::NewJob;

/// Prompt length in characters.
pub const PROMPT_MAX_CHARS: usize = 2000;
/// Clip length bounds in seconds, and the default.
pub const DURATION_MIN_S: f64 = 0.5;
pub const DURATION_MAX_S: f64 = 20.0;
pub const DURATION_DEFAULT_S: f64 = 4.0;
/// Frame rate bounds and default.
pub const FPS_MAX: u32 = 60;
pub const FPS_DEFAULT: u32 = 12;
/// Frame size bounds (4K UHD at most) and defaults; sizes are even for 4:2:0 video.
pub const SIZE_MIN: u32 = 64;
pub const WIDTH_MAX: u32 = 3840;
pub const HEIGHT_MAX: u32 = 2160;
pub const WIDTH_DEFAULT: u32 = 320;
pub const HEIGHT_DEFAULT: u32 = 180;
/// Diffusion steps bounds and default.
pub const STEPS_MAX: u32 = 200;
pub const STEPS_DEFAULT: u32 = 20;
/// Tenant names: DNS-label-like (the rule is the domain's, see [`crate::model::tenant`]).
pub const TENANT_MAX_CHARS: usize = crate::model::tenant::MAX_CHARS;
pub const TENANT_DEFAULT: &str = "default";
/// Labels per job, key and value lengths.
pub const LABELS_MAX: usize = 16;
pub const LABEL_KEY_MAX_CHARS: usize = 63;
pub const LABEL_VALUE_MAX_CHARS: usize = 255;
/// Idempotency key length.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 128;
/// Jobs per SubmitBatch.
pub const BATCH_MAX_JOBS: usize = 1000;
/// Model names: a --models subfolder name.
pub const MODEL_NAME_MAX_CHARS: usize = 128;
/// Negative prompt length in characters.
pub const NEGATIVE_PROMPT_MAX_CHARS: usize = 2000;
/// Classifier-free guidance scale bounds and default, and the guide strength default: the
/// domain's, which the worker checks against too.
pub use reelfarm_domain::model_rules::{
    GUIDANCE_SCALE_DEFAULT, GUIDANCE_SCALE_MAX, GUIDANCE_SCALE_MIN, GUIDE_STRENGTH_DEFAULT,
};
/// ListJobs page size bounds and default.
pub const PAGE_SIZE_MAX: u32 = 1000;
pub const PAGE_SIZE_DEFAULT: u32 = 100;

/// A request field that failed validation: its path and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Prefixes the field path, e.g. `jobs[3].` for batch entries.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}{}", self.field);
        self
    }
}

type Result<T> = std::result::Result<T, FieldError>;

fn bounded_u32(field: &str, value: u32, default: u32, min: u32, max: u32) -> Result<u32> {
    match value {
        0 => Ok(default),
        v if (min..=max).contains(&v) => Ok(v),
        v => Err(FieldError::new(
            field,
            format!("must be {min}..={max}, got {v}"),
        )),
    }
}

/// Validates a spec and fills in its defaults. `seed` is drawn when absent.
pub fn job_spec(spec: Option<&v1::JobSpec>) -> Result<JobSpec> {
    let spec = spec.ok_or_else(|| FieldError::new("spec", "is required"))?;
    if spec.prompt.trim().is_empty() {
        return Err(FieldError::new("spec.prompt", "must not be empty"));
    }
    text("spec.prompt", &spec.prompt, PROMPT_MAX_CHARS)?;
    let duration_seconds = match spec.duration_seconds {
        0.0 => DURATION_DEFAULT_S,
        d if d.is_finite() && (DURATION_MIN_S..=DURATION_MAX_S).contains(&d) => d,
        d => {
            return Err(FieldError::new(
                "spec.duration_seconds",
                format!("must be {DURATION_MIN_S}..={DURATION_MAX_S}, got {d}"),
            ))
        }
    };
    let fps = bounded_u32("spec.fps", spec.fps, FPS_DEFAULT, 1, FPS_MAX)?;
    let width = bounded_u32("spec.width", spec.width, WIDTH_DEFAULT, SIZE_MIN, WIDTH_MAX)?;
    let height = bounded_u32(
        "spec.height",
        spec.height,
        HEIGHT_DEFAULT,
        SIZE_MIN,
        HEIGHT_MAX,
    )?;
    if !width.is_multiple_of(2) {
        return Err(FieldError::new(
            "spec.width",
            format!("must be even, got {width}"),
        ));
    }
    if !height.is_multiple_of(2) {
        return Err(FieldError::new(
            "spec.height",
            format!("must be even, got {height}"),
        ));
    }
    let steps = bounded_u32("spec.steps", spec.steps, STEPS_DEFAULT, 1, STEPS_MAX)?;
    let model = model_spec(spec)?;
    let sampler = sampler(spec.sampler, model.is_some())?;
    let priority = match v1::Priority::try_from(spec.priority) {
        Ok(v1::Priority::Unspecified | v1::Priority::Normal) => Priority::Normal,
        Ok(v1::Priority::Low) => Priority::Low,
        Ok(v1::Priority::High) => Priority::High,
        Err(_) => {
            return Err(FieldError::new(
                "spec.priority",
                format!(
                    "must be one of PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH, got {}",
                    spec.priority
                ),
            ))
        }
    };
    let tenant = if spec.tenant.is_empty() {
        TENANT_DEFAULT.to_string()
    } else {
        tenant("spec.tenant", &spec.tenant)?
    };
    let labels = labels(&spec.labels)?;
    Ok(JobSpec {
        prompt: spec.prompt.clone(),
        duration_seconds,
        fps,
        width,
        height,
        seed: spec.seed.unwrap_or_else(rand::random),
        steps,
        sampler,
        audio: spec.audio.unwrap_or(true),
        priority,
        tenant,
        labels,
        model,
    })
}

/// Free text at `field`: at most `max` characters, no control characters but newline and tab.
fn text(field: &str, s: &str, max: usize) -> Result<()> {
    let chars = s.chars().count();
    if chars > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters, got {chars}"),
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The sampler: the reference pipeline's three (default DDIM), or for a model job the
/// flow-matching two (default UniPC, as WanPipeline).
fn sampler(value: i32, model_job: bool) -> Result<Sampler> {
    let field = "spec.sampler";
    let parsed = v1::Sampler::try_from(value).map_err(|_| {
        FieldError::new(
            field,
            format!("must be one of SAMPLER_DDIM, SAMPLER_EULER, SAMPLER_DPM_SOLVER_PP_2M, SAMPLER_FLOW_EULER, SAMPLER_UNIPC, got {value}"),
        )
    })?;
    let sampler = match parsed {
        v1::Sampler::Unspecified if model_job => Sampler::UniPc,
        v1::Sampler::Unspecified | v1::Sampler::Ddim => Sampler::Ddim,
        v1::Sampler::Euler => Sampler::Euler,
        v1::Sampler::DpmSolverPp2m => Sampler::DpmSolverPp2m,
        v1::Sampler::FlowEuler => Sampler::FlowEuler,
        v1::Sampler::Unipc => Sampler::UniPc,
    };
    match (model_job, sampler.is_flow_matching()) {
        (true, false) => Err(FieldError::new(
            field,
            format!("{} is a reference-pipeline sampler; a model job (spec.model) samples with SAMPLER_UNIPC or SAMPLER_FLOW_EULER", parsed.as_str_name()),
        )),
        (false, true) => Err(FieldError::new(
            field,
            format!("{} is for model jobs (spec.model); the reference pipeline samples with SAMPLER_DDIM, SAMPLER_EULER or SAMPLER_DPM_SOLVER_PP_2M", parsed.as_str_name()),
        )),
        _ => Ok(sampler),
    }
}

/// The open-model fields: `None` for a reference job, which must leave them unset. The
/// family is filled in by [`model_rules`], which needs the farm's live models.
fn model_spec(spec: &v1::JobSpec) -> Result<Option<ModelSpec>> {
    if spec.model.is_empty() {
        let only_for_models = [
            ("spec.negative_prompt", !spec.negative_prompt.is_empty()),
            ("spec.guidance_scale", spec.guidance_scale.is_some()),
            ("spec.guide", spec.guide),
            ("spec.guide_strength", spec.guide_strength.is_some()),
        ];
        if let Some((field, _)) = only_for_models.iter().find(|(_, set)| *set) {
            return Err(FieldError::new(
                *field,
                "is for model jobs only: set spec.model, or leave it unset",
            ));
        }
        return Ok(None);
    }
    let name_ok = spec.model.len() <= MODEL_NAME_MAX_CHARS
        && !spec.model.starts_with('.')
        && spec
            .model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(FieldError::new(
            "spec.model",
            format!("must be a model folder name, 1..={MODEL_NAME_MAX_CHARS} characters of [A-Za-z0-9._-] not starting with '.', got {:?}", spec.model),
        ));
    }
    text(
        "spec.negative_prompt",
        &spec.negative_prompt,
        NEGATIVE_PROMPT_MAX_CHARS,
    )?;
    let guidance_scale = match spec.guidance_scale {
        None => GUIDANCE_SCALE_DEFAULT,
        Some(g) if g.is_finite() && (GUIDANCE_SCALE_MIN..=GUIDANCE_SCALE_MAX).contains(&g) => g,
        Some(g) => {
            return Err(FieldError::new(
                "spec.guidance_scale",
                format!("must be {GUIDANCE_SCALE_MIN}..={GUIDANCE_SCALE_MAX} (1 turns guidance off), got {g}"),
            ))
        }
    };
    let guide_strength = match (spec.guide, spec.guide_strength) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(FieldError::new(
                "spec.guide_strength",
                "needs spec.guide: true",
            ))
        }
        (true, None) => Some(GUIDE_STRENGTH_DEFAULT),
        (true, Some(s)) if s.is_finite() && (0.0..=1.0).contains(&s) => Some(s),
        (true, Some(s)) => {
            return Err(FieldError::new(
                "spec.guide_strength",
                format!("must be 0..=1, got {s}"),
            ))
        }
    };
    Ok(Some(ModelSpec {
        name: spec.model.clone(),
        family: String::new(),
        negative_prompt: spec.negative_prompt.clone(),
        guidance_scale,
        guide_strength,
    }))
}

/// Why a model job cannot be accepted as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelRefusal {
    /// No live worker serves the model (FAILED_PRECONDITION: it may come later).
    #[error("{0}")]
    NotServed(FieldError),
    /// The model's family has rules this farm does not know (FAILED_PRECONDITION).
    #[error("{0}")]
    UnknownFamily(FieldError),
}

/// Applies the model's rules to a model job (a reference job is left alone): fills in the
/// family from `families` (model name → family, what live workers serve) and moves the
/// frame count and size to the nearest values the family accepts, recording each change
/// in `adjustments`. `prefix` is the field path's prefix ("" or "jobs[3].").
pub fn model_rules(
    job: &mut NewJob,
    families: &std::collections::HashMap<String, String>,
    prefix: &str,
) -> std::result::Result<(), ModelRefusal> {
    let spec = &mut job.spec;
    let Some(model) = spec.model.as_mut() else {
        return Ok(());
    };
    let field = format!("{prefix}spec.model");
    let Some(family) = families.get(&model.name) else {
        let mut served: Vec<&str> = families.keys().map(String::as_str).collect();
        served.sort_unstable();
        let served = if served.is_empty() {
            "none".to_string()
        } else {
            served.join(", ")
        };
        return Err(ModelRefusal::NotServed(FieldError::new(
            field,
            format!(
                "{:?} is served by no live worker (served now: {served}); start a worker with it in --models, or submit again once one has registered",
                model.name
            ),
        )));
    };
    let rules = reelfarm_domain::model_rules::rules_for(family).ok_or_else(|| {
        ModelRefusal::UnknownFamily(FieldError::new(
            field.clone(),
            format!(
                "{:?} is of family {family:?}, which this coordinator has no rules for",
                model.name
            ),
        ))
    })?;
    model.family = family.clone();
    let frames = spec.frame_count();
    let group = rules.frame_group;
    let mut want = rules.nearest_frames(frames);
    // The nearest count may fall just outside the duration bounds: take the next one in.
    let seconds = |n: u32| f64::from(n) / f64::from(spec.fps);
    while seconds(want) > DURATION_MAX_S {
        want -= group;
    }
    while seconds(want) < DURATION_MIN_S {
        want += group;
    }
    if want != frames {
        let d = seconds(want);
        job.adjustments.push(format!(
            "frames: {frames} -> {want} ({family} needs {group}k+1 frames; duration_seconds {} -> {d})",
            spec.duration_seconds
        ));
        spec.duration_seconds = d;
    }
    for (name, side) in [("width", &mut spec.width), ("height", &mut spec.height)] {
        let want = rules.nearest_side(*side);
        if want != *side {
            job.adjustments.push(format!(
                "{name}: {side} -> {want} ({family} needs multiples of {})",
                rules.size_multiple
            ));
            *side = want;
        }
    }
    Ok(())
}

/// A tenant name at `field`, checked by the domain's rule ([`crate::model::tenant`]).
pub(crate) fn tenant(field: &str, t: &str) -> Result<String> {
    crate::model::tenant::validate(t).map_err(|e| FieldError::new(field, e.to_string()))?;
    Ok(t.to_string())
}

fn label_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= LABEL_KEY_MAX_CHARS
        && k.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-' | b'/')
        })
}

fn labels(labels: &std::collections::HashMap<String, String>) -> Result<BTreeMap<String, String>> {
    if labels.len() > LABELS_MAX {
        return Err(FieldError::new(
            "spec.labels",
            format!(
                "must have at most {LABELS_MAX} entries, got {}",
                labels.len()
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in labels {
        if !label_key_ok(k) {
            return Err(FieldError::new(
                format!("spec.labels[{k:?}]"),
                format!("key must be 1..={LABEL_KEY_MAX_CHARS} characters of [a-z0-9_./-]"),
            ));
        }
        let n = v.chars().count();
        if n > LABEL_VALUE_MAX_CHARS || v.chars().any(char::is_control) {
            return Err(FieldError::new(
                format!("spec.labels[{k:?}]"),
                format!(
                    "value must be at most {LABEL_VALUE_MAX_CHARS} printable characters, got {n}"
                ),
            ));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

fn idempotency_key(k: &str) -> Result<Option<String>> {
    if k.is_empty() {
        return Ok(None);
    }
    let ok = k.len() <= IDEMPOTENCY_KEY_MAX_CHARS
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(Some(k.to_string()))
    } else {
        Err(FieldError::new(
            "idempotency_key",
            format!("must be 1..={IDEMPOTENCY_KEY_MAX_CHARS} characters of [A-Za-z0-9_.:-]"),
        ))
    }
}

/// Validates a SubmitJob request.
pub fn submit_job(req: &v1::SubmitJobRequest) -> Result<NewJob> {
    Ok(NewJob {
        spec: job_spec(req.spec.as_ref())?,
        idempotency_key: idempotency_key(&req.idempotency_key)?,
        adjustments: vec![],
    })
}

/// Validates a SubmitBatch request: all jobs or none.
pub fn submit_batch(req: &v1::SubmitBatchRequest) -> Result<Vec<NewJob>> {
    if req.jobs.is_empty() || req.jobs.len() > BATCH_MAX_JOBS {
        return Err(FieldError::new(
            "jobs",
            format!(
                "must have 1..={BATCH_MAX_JOBS} entries, got {}",
                req.jobs.len()
            ),
        ));
    }
    req.jobs
        .iter()
        .enumerate()
        .map(|(i, j)| submit_job(j).map_err(|e| e.within(&format!("jobs[{i}]."))))
        .collect()
}

/// A job id in a request.
pub fn job_id(field: &str, id: &str) -> Result<String> {
    if is_job_id(id) {
        Ok(id.to_string())
    } else {
        Err(FieldError::new(
            field,
            format!("must be a job id (16 lowercase hex characters), got {id:?}"),
        ))
    }
}

/// A validated ListJobs request.
pub struct ListQuery {
    pub tenant: Option<String>,
    pub state: Option<crate::model::JobState>,
    /// (key, value): value None means "has the label".
    pub label: Option<(String, Option<String>)>,
    pub page_size: usize,
    pub after: Option<String>,
    pub with_tasks: bool,
}

pub fn list_jobs(req: &v1::ListJobsRequest) -> Result<ListQuery> {
    use crate::model::JobState;
    let tenant = if req.tenant.is_empty() {
        None
    } else {
        Some(tenant("tenant", &req.tenant)?)
    };
    let state = match v1::JobState::try_from(req.state) {
        Ok(v1::JobState::Unspecified) => None,
        Ok(v1::JobState::Queued) => Some(JobState::Queued),
        Ok(v1::JobState::Running) => Some(JobState::Running),
        Ok(v1::JobState::Succeeded) => Some(JobState::Succeeded),
        Ok(v1::JobState::Failed) => Some(JobState::Failed),
        Ok(v1::JobState::Cancelled) => Some(JobState::Cancelled),
        Err(_) => {
            return Err(FieldError::new(
                "state",
                format!("unknown job state {}", req.state),
            ))
        }
    };
    let label = if req.label.is_empty() {
        None
    } else {
        let (k, v) = match req.label.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (req.label.as_str(), None),
        };
        if !label_key_ok(k) {
            return Err(FieldError::new(
                "label",
                format!(
                    "must be \"key\" or \"key=value\" with a key of [a-z0-9_./-], got {:?}",
                    req.label
                ),
            ));
        }
        Some((k.to_string(), v))
    };
    let page_size = bounded_u32(
        "page_size",
        req.page_size,
        PAGE_SIZE_DEFAULT,
        1,
        PAGE_SIZE_MAX,
    )? as usize;
    let after = if req.page_token.is_empty() {
        None
    } else {
        Some(job_id("page_token", &req.page_token)?)
    };
    Ok(ListQuery {
        tenant,
        state,
        label,
        page_size,
        after,
        with_tasks: !req.summary_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> v1::JobSpec {
        v1::JobSpec {
            prompt: "a red ball".into(),
            ..Default::default()
        }
    }

    fn model_job(spec: v1::JobSpec) -> NewJob {
        NewJob {
            spec: job_spec(Some(&spec)).expect("valid"),
            idempotency_key: None,
            adjustments: vec![],
        }
    }

    fn served() -> std::collections::HashMap<String, String> {
        [("wan".to_string(), "wan2.1-t2v".to_string())].into()
    }

    #[test]
    fn a_model_job_gets_the_flow_defaults_and_is_fitted_to_the_family_with_each_change_recorded() {
        let mut job = model_job(v1::JobSpec {
            model: "wan".into(),
            ..spec()
        });
        let m = job.spec.model.clone().expect("model job");
        assert_eq!(
            (m.guidance_scale, m.guide_strength),
            (GUIDANCE_SCALE_DEFAULT, None)
        );
        assert_eq!(
            job.spec.sampler,
            Sampler::UniPc,
            "WanPipeline's sampler by default"
        );
        model_rules(&mut job, &served(), "").expect("served");
        assert_eq!(
            job.spec.model.as_ref().map(|m| m.family.as_str()),
            Some("wan2.1-t2v")
        );
        // 4 s at 12 fps = 48 frames -> 49; 320x180 -> 320x176.
        assert_eq!(job.spec.frame_count(), 49);
        assert_eq!((job.spec.width, job.spec.height), (320, 176));
        assert_eq!(job.adjustments.len(), 2, "{:?}", job.adjustments);
        assert!(job.adjustments[0].starts_with("frames: 48 -> 49"));
        assert!(job.adjustments[1].starts_with("height: 180 -> 176"));

        // Already valid: nothing changes, nothing is recorded.
        let mut ok = model_job(v1::JobSpec {
            model: "wan".into(),
            duration_seconds: 81.0 / 16.0,
            fps: 16,
            width: 832,
            height: 480,
            ..spec()
        });
        model_rules(&mut ok, &served(), "").expect("served");
        assert!(ok.adjustments.is_empty(), "{:?}", ok.adjustments);
        assert_eq!(ok.spec.frame_count(), 81);
    }

    #[test]
    fn the_adjusted_frame_count_stays_within_the_duration_bounds() {
        // 20 s at 60 fps = 1200 frames; the nearest 4k+1 (1201) is over 20 s: 1197.
        let mut long = model_job(v1::JobSpec {
            model: "wan".into(),
            duration_seconds: 20.0,
            fps: 60,
            ..spec()
        });
        model_rules(&mut long, &served(), "").expect("served");
        assert_eq!(long.spec.frame_count(), 1197);
        assert!(long.spec.duration_seconds <= DURATION_MAX_S);
        // 0.5 s at 4 fps = 2 frames; the nearest (1) is under 0.5 s: 5.
        let mut short = model_job(v1::JobSpec {
            model: "wan".into(),
            duration_seconds: 0.5,
            fps: 4,
            ..spec()
        });
        model_rules(&mut short, &served(), "").expect("served");
        assert_eq!(short.spec.frame_count(), 5);
    }

    #[test]
    fn an_unserved_model_is_refused_naming_the_field_and_what_is_served() {
        let mut job = model_job(v1::JobSpec {
            model: "wan-typo".into(),
            ..spec()
        });
        let e = model_rules(&mut job, &served(), "jobs[2].").expect_err("not served");
        let ModelRefusal::NotServed(e) = e else {
            panic!("{e:?}")
        };
        assert_eq!(e.field, "jobs[2].spec.model");
        assert!(e.problem.contains("served now: wan"), "{}", e.problem);
        let mut unknown_family = model_job(v1::JobSpec {
            model: "odd".into(),
            ..spec()
        });
        let families = [("odd".to_string(), "mystery-family".to_string())].into();
        assert!(matches!(
            model_rules(&mut unknown_family, &families, ""),
            Err(ModelRefusal::UnknownFamily(_))
        ));
    }

    #[test]
    fn model_fields_are_checked_and_refused_on_reference_jobs() {
        let cases: Vec<(v1::JobSpec, &str, &str)> = vec![
            (
                v1::JobSpec {
                    negative_prompt: "x".into(),
                    ..spec()
                },
                "spec.negative_prompt",
                "for model jobs only",
            ),
            (
                v1::JobSpec {
                    guide: true,
                    ..spec()
                },
                "spec.guide",
                "for model jobs only",
            ),
            (
                v1::JobSpec {
                    sampler: v1::Sampler::Unipc as i32,
                    ..spec()
                },
                "spec.sampler",
                "is for model jobs",
            ),
            (
                v1::JobSpec {
                    model: "wan".into(),
                    sampler: v1::Sampler::Ddim as i32,
                    ..spec()
                },
                "spec.sampler",
                "reference-pipeline sampler",
            ),
            (
                v1::JobSpec {
                    model: "../etc".into(),
                    ..spec()
                },
                "spec.model",
                "model folder name",
            ),
            (
                v1::JobSpec {
                    model: "wan".into(),
                    guidance_scale: Some(0.5),
                    ..spec()
                },
                "spec.guidance_scale",
                "must be 1..=20",
            ),
            (
                v1::JobSpec {
                    model: "wan".into(),
                    guide_strength: Some(0.5),
                    ..spec()
                },
                "spec.guide_strength",
                "needs spec.guide",
            ),
            (
                v1::JobSpec {
                    model: "wan".into(),
                    guide: true,
                    guide_strength: Some(1.5),
                    ..spec()
                },
                "spec.guide_strength",
                "must be 0..=1",
            ),
            (
                v1::JobSpec {
                    model: "wan".into(),
                    negative_prompt: "a\u{7}".into(),
                    ..spec()
                },
                "spec.negative_prompt",
                "control characters",
            ),
        ];
        for (s, field, problem) in cases {
            let e = job_spec(Some(&s)).expect_err(field);
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(problem), "{field}: {}", e.problem);
        }
        let guided = job_spec(Some(&v1::JobSpec {
            model: "wan".into(),
            guide: true,
            ..spec()
        }))
        .expect("valid");
        assert_eq!(
            guided.model.and_then(|m| m.guide_strength),
            Some(GUIDE_STRENGTH_DEFAULT)
        );
    }

    #[test]
    fn prompt_alone_is_a_valid_request_with_defaults() {
        let s = job_spec(Some(&spec())).expect("valid");
        assert_eq!((s.width, s.height, s.fps, s.steps), (320, 180, 12, 20));
        assert_eq!(s.duration_seconds, 4.0);
        assert!(s.audio, "audio defaults to on");
        assert_eq!(s.tenant, "default");
        assert_eq!(s.sampler, Sampler::Ddim);
    }

    #[test]
    fn each_bad_field_is_named_with_its_bound() {
        let cases: Vec<(v1::JobSpec, &str, &str)> = vec![
            (
                v1::JobSpec {
                    prompt: " ".into(),
                    ..spec()
                },
                "spec.prompt",
                "must not be empty",
            ),
            (
                v1::JobSpec {
                    prompt: "x".repeat(2001),
                    ..spec()
                },
                "spec.prompt",
                "at most 2000",
            ),
            (
                v1::JobSpec {
                    duration_seconds: 0.1,
                    ..spec()
                },
                "spec.duration_seconds",
                "0.5..=20, got 0.1",
            ),
            (
                v1::JobSpec {
                    duration_seconds: f64::NAN,
                    ..spec()
                },
                "spec.duration_seconds",
                "0.5..=20",
            ),
            (
                v1::JobSpec { fps: 61, ..spec() },
                "spec.fps",
                "1..=60, got 61",
            ),
            (
                v1::JobSpec {
                    width: 32,
                    ..spec()
                },
                "spec.width",
                "64..=3840, got 32",
            ),
            (
                v1::JobSpec {
                    height: 181,
                    ..spec()
                },
                "spec.height",
                "must be even",
            ),
            (
                v1::JobSpec {
                    steps: 201,
                    ..spec()
                },
                "spec.steps",
                "1..=200, got 201",
            ),
            (
                v1::JobSpec {
                    sampler: 9,
                    ..spec()
                },
                "spec.sampler",
                "got 9",
            ),
            (
                v1::JobSpec {
                    priority: 7,
                    ..spec()
                },
                "spec.priority",
                "got 7",
            ),
            (
                v1::JobSpec {
                    tenant: "Bad Tenant".into(),
                    ..spec()
                },
                "spec.tenant",
                "[a-z0-9-]",
            ),
        ];
        for (s, field, problem) in cases {
            let e = job_spec(Some(&s)).expect_err(field);
            assert_eq!(e.field, field, "field named for {s:?}");
            assert!(
                e.problem.contains(problem),
                "{field}: expected {problem:?} in {:?}",
                e.problem
            );
        }
    }

    #[test]
    fn labels_are_bounded() {
        let mut s = spec();
        for i in 0..17 {
            s.labels.insert(format!("k{i}"), "v".into());
        }
        let e = job_spec(Some(&s)).expect_err("too many labels");
        assert_eq!(e.field, "spec.labels");
        let mut s = spec();
        s.labels.insert("Bad Key".into(), "v".into());
        assert!(job_spec(Some(&s))
            .expect_err("bad key")
            .field
            .starts_with("spec.labels["));
    }

    #[test]
    fn batch_is_validated_all_or_nothing_and_names_the_entry() {
        let good = v1::SubmitJobRequest {
            spec: Some(spec()),
            idempotency_key: String::new(),
        };
        let bad = v1::SubmitJobRequest {
            spec: Some(v1::JobSpec { fps: 100, ..spec() }),
            idempotency_key: String::new(),
        };
        let req = v1::SubmitBatchRequest {
            jobs: vec![good.clone(), good, bad],
        };
        let e = submit_batch(&req).expect_err("one bad entry fails the batch");
        assert_eq!(e.field, "jobs[2].spec.fps");
        let e = submit_batch(&v1::SubmitBatchRequest { jobs: vec![] }).expect_err("empty batch");
        assert_eq!(e.field, "jobs");
    }

    #[test]
    fn idempotency_key_and_ids_are_checked() {
        let req = v1::SubmitJobRequest {
            spec: Some(spec()),
            idempotency_key: "has space".into(),
        };
        assert_eq!(
            submit_job(&req).expect_err("bad key").field,
            "idempotency_key"
        );
        assert!(job_id("id", "0123456789abcdef").is_ok());
        assert_eq!(job_id("id", "nope").expect_err("bad id").field, "id");
    }
}
