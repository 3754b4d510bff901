//! `reelfarm workers`, `reelfarm drain ID` and `reelfarm uncordon ID`.

use anyhow::Context as _;
use reelfarm_proto::v1;

use crate::output::Format;

fn print(w: &v1::WorkerInfo, format: Format) {
    let state = v1::WorkerState::try_from(w.state)
        .map(|s| s.as_str_name().trim_start_matches("WORKER_STATE_"))
        .unwrap_or("?");
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"id": w.id, "state": state, "engine": w.engine, "gpu_model": w.gpu_model,
                "gpu_memory_bytes": w.gpu_memory_bytes, "health": w.health,
                "resident": w.resident.iter().map(|r| serde_json::json!({"name": r.name,
                    "weight_bytes": r.weight_bytes, "memory": r.memory})).collect::<Vec<_>>(),
                "model_memory_budget_bytes": w.model_memory_budget_bytes,
                "gpu": w.gpu.as_ref().map(|g| serde_json::json!({"ordinal": g.ordinal, "name": g.name,
                    "uuid": g.uuid, "compute_capability": g.compute_capability,
                    "total_memory_bytes": g.total_memory_bytes, "free_memory_bytes": g.free_memory_bytes,
                    "driver_cuda_version": g.driver_cuda_version})),
                "cordoned": w.cordoned, "slots": w.slots, "running": w.running, "tasks_done": w.tasks_done,
                "hostname": w.hostname, "metrics_address": w.metrics_address,
                "models": w.models.iter().map(|m| serde_json::json!({"name": m.name, "family": m.family,
                    "parameters": m.parameters, "dtypes": m.dtypes, "weight_bytes": m.weight_bytes,
                    "not_servable": m.not_servable})).collect::<Vec<_>>(),
                "broken_models": w.broken_models.iter().map(|b| serde_json::json!({"name": b.name,
                    "problems": b.problems})).collect::<Vec<_>>()})
        ),
        Format::Text => {
            println!(
                "{:<32} {:<9} {:<8} {:<5} slots {:>3}  running {:>3}  done {:>6}  {}",
                w.id,
                state,
                if w.cordoned { "cordoned" } else { "" },
                w.engine,
                w.slots,
                w.running,
                w.tasks_done,
                w.metrics_address
            );
            if !w.health.is_empty() {
                println!("    {}", w.health);
            }
            // The device on an indented line of its own, like the models below.
            if let Some(g) = &w.gpu {
                println!(
                    "    gpu {} {}  compute {}  {:.1} GiB ({:.1} GiB free, last reported)  driver CUDA {}  {}",
                    g.ordinal,
                    g.name,
                    g.compute_capability,
                    g.total_memory_bytes as f64 / (1u64 << 30) as f64,
                    g.free_memory_bytes as f64 / (1u64 << 30) as f64,
                    g.driver_cuda_version,
                    g.uuid
                );
            }
            if !w.models.is_empty() && w.model_memory_budget_bytes > 0 {
                let held: u64 = w.resident.iter().map(|r| r.weight_bytes).sum();
                println!(
                    "    model pool {:.1} of {:.1} GiB",
                    held as f64 / (1u64 << 30) as f64,
                    w.model_memory_budget_bytes as f64 / (1u64 << 30) as f64
                );
            }
            // One indented line per model, so the worker's line stays one line.
            for m in &w.models {
                let loaded = w.resident.iter().any(|r| r.name == m.name);
                // A worker that batches its DENOISE tasks says how many and how long it
                // waits for a batch to fill.
                let batch = if m.max_batch > 1 {
                    format!(", batch {} ({} ms)", m.max_batch, w.max_queue_delay_ms)
                } else {
                    String::new()
                };
                let state = if m.not_servable.is_empty() && loaded {
                    format!("serving, loaded{batch}")
                } else if m.not_servable.is_empty() {
                    format!("serving{batch}")
                } else {
                    format!("listed, not servable: {}", m.not_servable.join("; "))
                };
                println!(
                    "    model {:<24} {:<12} {:>6.2} B params  {:<5} {:>8.1} MiB  {state}",
                    m.name,
                    m.family,
                    m.parameters as f64 / 1e9,
                    m.dtypes.join(","),
                    m.weight_bytes as f64 / (1 << 20) as f64
                );
            }
            for b in &w.broken_models {
                println!("    model {:<24} BROKEN: {}", b.name, b.problems.join("; "));
            }
        }
    }
}

pub async fn list(coordinators: &crate::client::Target, format: Format) -> anyhow::Result<()> {
    let mut client = crate::client::admin(coordinators).await?;
    let resp = client
        .list_workers(v1::ListWorkersRequest {})
        .await
        .context("ListWorkers")?
        .into_inner();
    for w in &resp.workers {
        print(w, format);
    }
    for id in &resp.cordoned_not_connected {
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({"id": id, "state": "NOT_CONNECTED", "cordoned": true})
            ),
            Format::Text => println!("{id:<32} {:<9} cordoned (not connected)", "-"),
        }
    }
    Ok(())
}

pub async fn drain(
    coordinators: &crate::client::Target,
    id: &str,
    format: Format,
) -> anyhow::Result<()> {
    let mut client = crate::client::admin(coordinators).await?;
    let resp = client
        .drain_worker(v1::DrainWorkerRequest { id: id.to_string() })
        .await
        .context("DrainWorker")?
        .into_inner();
    if let Some(w) = resp.worker {
        print(&w, format);
    }
    Ok(())
}

pub async fn uncordon(
    coordinators: &crate::client::Target,
    id: &str,
    format: Format,
) -> anyhow::Result<()> {
    let mut client = crate::client::admin(coordinators).await?;
    let resp = client
        .uncordon_worker(v1::UncordonWorkerRequest { id: id.to_string() })
        .await
        .context("UncordonWorker")?
        .into_inner();
    match resp.worker {
        Some(w) => print(&w, format),
        None => eprintln!("{id}: drain lifted; the worker is not connected now"),
    }
    Ok(())
}
