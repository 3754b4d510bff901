//! How the CLI prints: human text by default, JSON with `--output json`.

use clap::ValueEnum;
use reelfarm_proto::v1;

/// Output format of the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// A job as JSON (field names as in the proto; enum values by name).
pub fn job_json(job: &v1::Job) -> serde_json::Value {
    let spec = job.spec.clone().unwrap_or_default();
    let tasks = job.tasks.unwrap_or_default();
    serde_json::json!({
        "id": job.id,
        "state": v1::JobState::try_from(job.state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "progress": job.progress,
        "prompt": spec.prompt,
        "seed": spec.seed,
        "tenant": spec.tenant,
        "tasks": {"total": tasks.total, "done": tasks.done, "running": tasks.running,
                  "ready": tasks.ready, "failed": tasks.failed, "retries": tasks.retries},
        "workers": job.task_details.iter().filter(|t| !t.worker_id.is_empty())
            .map(|t| serde_json::json!({"task": t.id, "worker": t.worker_id})).collect::<Vec<_>>(),
        "outputs": job.outputs.iter().map(|o| serde_json::json!({
            "kind": o.kind, "uri": o.uri, "sha256": o.sha256, "bytes": o.bytes})).collect::<Vec<_>>(),
        "error": job.error,
        "error_code": job.error_code,
        "cached_from": job.cached_from,
        "merged_into": job.merged_into,
        "waiting": job.waiting,
        "scene": serde_json::from_str::<serde_json::Value>(&job.scene).unwrap_or(serde_json::Value::Null),
    })
}

/// One line about a job for text output.
pub fn job_line(job: &v1::Job) -> String {
    let state = v1::JobState::try_from(job.state)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STATE_").to_string())
        .unwrap_or_else(|_| "UNKNOWN".into());
    let prompt = job.spec.as_ref().map(|s| s.prompt.as_str()).unwrap_or("");
    let short: String = prompt.chars().take(50).collect();
    format!(
        "{}  {:<9}  {:>5.1}%  {}",
        job.id,
        state,
        job.progress * 100.0,
        short
    )
}

/// Prints a job in `format`.
pub fn print_job(job: &v1::Job, format: Format) {
    match format {
        Format::Json => println!("{}", job_json(job)),
        Format::Text => {
            println!("{}", job_line(job));
            if !job.error.is_empty() {
                match job.error_code.as_str() {
                    "" => println!("  error: {}", job.error),
                    code => println!("  error ({code}): {}", job.error),
                }
            }
            if !job.waiting.is_empty() {
                println!("  waiting: {}", job.waiting);
            }
            if !job.merged_into.is_empty() && job.merged_into == job.cached_from {
                println!(
                    "  merged: followed the identical job {} and has its outputs",
                    job.merged_into
                );
            } else if !job.cached_from.is_empty() {
                println!("  cache hit: the outputs of job {}", job.cached_from);
            }
            for o in &job.outputs {
                println!(
                    "  {:<8} {}  ({} bytes, sha256 {})",
                    o.kind,
                    o.uri.trim_start_matches("file://"),
                    o.bytes,
                    o.sha256
                );
            }
        }
    }
}
