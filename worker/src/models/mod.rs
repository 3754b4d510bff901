//! The worker's open models (`--models`):
//!
//! - this file: the folder scanned once at start through `reelfarm-models`, logged, and
//!   reported to the coordinator in `RegisterWorker` (AdminService.ListWorkers and
//!   `reelfarm workers` show it). A broken model folder is logged and reported, never
//!   fatal: the worker serves the rest. Only an unreadable `--models` folder stops the
//!   start, since the operator named it explicitly.
//! - [`host`]: the model loaded for the tasks that run it, and its weights' hash.
//! - [`stages`]: the model job's task bodies (TEXT_ENCODE, DENOISE, DECODE).

pub mod host;
pub mod stages;

use std::path::Path;

use reelfarm_models::registry;
use reelfarm_proto::v1;

/// Scans `dir` (nothing when `None`): the models to serve, each batching `max_batch`
/// DENOISE tasks (`--max-batch`), and the broken folders.
pub fn scan(
    dir: Option<&Path>,
    max_batch: u32,
) -> anyhow::Result<(Vec<v1::ServedModel>, Vec<v1::BrokenModel>)> {
    let Some(dir) = dir else {
        return Ok((vec![], vec![]));
    };
    let found = registry::scan(dir).map_err(anyhow::Error::msg)?;
    for m in &found.models {
        tracing::info!(
            model = %m.name,
            family = %m.family,
            parameters = m.parameters,
            dtypes = ?m.dtypes,
            weight_bytes = m.weight_bytes,
            not_servable = ?m.not_servable,
            "model checked"
        );
    }
    for b in &found.broken {
        tracing::error!(model = %b.name, problems = ?b.problems, "model folder is broken; not served");
    }
    if found.models.is_empty() && found.broken.is_empty() {
        tracing::warn!(models = %dir.display(), "--models folder holds no model subfolder");
    }
    let served = found
        .models
        .into_iter()
        .map(|m| v1::ServedModel {
            name: m.name,
            family: m.family,
            parameters: m.parameters,
            dtypes: m.dtypes,
            weight_bytes: m.weight_bytes,
            // A model this worker cannot serve batches nothing.
            max_batch: if m.not_servable.is_empty() {
                max_batch
            } else {
                0
            },
            not_servable: m.not_servable,
        })
        .collect();
    let broken = found
        .broken
        .into_iter()
        .map(|b| v1::BrokenModel {
            name: b.name,
            problems: b.problems,
        })
        .collect();
    Ok((served, broken))
}
