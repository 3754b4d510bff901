//! `reelfarm bench farm` end to end on the small trace (bench/traces/farm-small.json): the
//! real coordinator in the bench process, simulated GPU workers over the real stream, both
//! policies. Checked: the report's structure and what must hold whatever the timing —
//! every job of the trace finished in both runs, busy time never above what the trace
//! allows, loads at least the minimum, shares summing to one, every kill accounted for, the
//! coordinator's counts matching the workers'. Figures are not checked against goals
//! (timing assertions would fail on a busy machine); BENCHMARKS.md keeps them.

mod common;

use std::process::Command;
use std::time::Instant;

use serde_json::Value;

const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/traces/farm-small.json");

fn f(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

fn u(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not a count: {v}"))
}

#[test]
fn bench_farm_replays_the_small_trace_under_both_policies() {
    let trace: Value =
        serde_json::from_str(&std::fs::read_to_string(TRACE).expect("the small trace"))
            .expect("trace JSON");
    let bursts = trace["bursts"].as_array().expect("bursts");
    let count = |b: &Value| -> u64 {
        b["jobs"]
            .as_array()
            .expect("shapes")
            .iter()
            .map(|s| u(&s["count"], "count"))
            .sum()
    };
    let jobs: u64 = bursts.iter().map(count).sum();
    let high: u64 = bursts
        .iter()
        .filter(|b| b["priority"] == "high")
        .map(count)
        .sum();
    let kills: u64 = trace["kills"]
        .as_array()
        .expect("kills")
        .iter()
        .map(|k| u(&k["workers"], "workers"))
        .sum();
    let tenants: Vec<&str> = trace["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    let jobs_of = |tenant: &str| -> u64 {
        bursts
            .iter()
            .filter(|b| b["tenant"] == tenant)
            .map(count)
            .sum()
    };

    let started = Instant::now();
    let out = Command::new(common::CLI_BIN)
        .args(["bench", "farm", "--trace", TRACE, "--output", "json"])
        .output()
        .expect("run reelfarm bench farm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench farm failed: {stderr}");
    eprintln!(
        "bench farm on the small trace took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).expect("bench farm prints JSON on stdout");
    assert_eq!(report["bench"], "farm");
    assert_eq!(u(&report["trace"]["jobs"], "trace.jobs"), jobs);
    for key in [
        "gpu_busy_ratio",
        "model_loads_over_minimum",
        "tenant_share_relative_error",
        "high_job_wait_p99_s",
        "steps_recomputed_per_killed_worker",
    ] {
        assert!(report["goals"][key].is_string(), "goal {key}: {report:#}");
    }
    let runs = report["runs"].as_array().expect("runs");
    let policies: Vec<&str> = runs.iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["farm", "round-robin"]);

    for run in runs {
        let p = run["policy"].as_str().unwrap();
        let what = |k: &str| format!("{p}: {k}");
        assert_eq!(run["timed_out"], false, "{p}: {run:#}");
        // Every job of the trace finished, and the coordinator says SUCCEEDED for each.
        assert_eq!(u(&run["jobs_finished"], "jobs_finished"), jobs, "{p}");
        assert_eq!(
            run["coordinator"]["job_states"],
            serde_json::json!({"succeeded": jobs}),
            "{p}"
        );
        assert_eq!(run["submit_errors"], serde_json::json!([]), "{p}");
        assert_eq!(run["stream_errors"], serde_json::json!([]), "{p}");
        assert_eq!(run["attempts"]["not_of_the_trace"], 0, "{p}");
        assert_eq!(run["attempts"]["unfinished"], 0, "{p}");
        assert!(
            f(&run["makespan_s"], "makespan") >= f(&run["makespan_lower_bound_s"], "bound") - 1.0,
            "{p}: no run beats the makespan's lower bound: {run:#}"
        );

        // Busy time: never above what the trace allows, which is never above the GPUs
        // connected; all the trace's compute was done.
        let busy = &run["gpu_busy"];
        let ratio = f(&busy["ratio"], &what("ratio"));
        assert!(ratio > 0.0 && ratio <= 1.0 + 1e-6, "{p}: {busy}");
        assert!(
            f(&busy["busy_above_allowed_gpu_seconds"], "above") <= 1e-6,
            "{p}: {busy}"
        );
        assert!(
            f(&busy["allowed_gpu_seconds"], "allowed")
                <= f(&busy["connected_gpu_seconds"], "connected") + 1e-6,
            "{p}: {busy}"
        );
        assert!(
            f(&busy["of_busy"]["computing_s"], "computing")
                >= f(&busy["of_busy"]["trace_compute_s"], "trace compute") - 1.0,
            "{p}: {busy}"
        );

        // Loads: at least the minimum, model by model; the minimum is at least one per model.
        let loads = &run["model_loads"];
        assert!(
            u(&loads["loads"], "loads") >= u(&loads["minimum"], "minimum"),
            "{p}: {loads}"
        );
        let by_model = loads["by_model"].as_array().expect("by_model");
        assert_eq!(by_model.len(), trace["models"].as_array().unwrap().len());
        for m in by_model {
            assert!(u(&m["minimum"], "minimum") >= 1, "{p}: {m}");
            assert!(
                u(&m["loads"], "loads") >= u(&m["minimum"], "minimum"),
                "{p}: {m}"
            );
            assert_eq!(
                u(&m["loads"], "loads"),
                u(&m["first_loads_on_a_gpu"], "first") + u(&m["reloads"], "reloads"),
                "{p}: {m}"
            );
        }

        // Queue waits: every tenant's and priority's jobs counted, percentiles in order.
        for tenant in &tenants {
            let w = &run["queue_wait_s"]["by_tenant"][tenant];
            assert_eq!(u(&w["jobs"], "jobs"), jobs_of(tenant), "{p}: {tenant}");
            let (p50, p99, max) = (
                f(&w["p50"], "p50"),
                f(&w["p99"], "p99"),
                f(&w["max"], "max"),
            );
            assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{p}: {tenant}: {w}");
        }
        let by_priority: u64 = run["queue_wait_s"]["by_priority"]
            .as_object()
            .expect("by_priority")
            .values()
            .map(|w| u(&w["jobs"], "jobs"))
            .sum();
        assert_eq!(by_priority, jobs, "{p}");
        assert_eq!(u(&run["high"]["jobs"], "high jobs"), high, "{p}");
        assert!(f(&run["high"]["checkpoint_interval_s"], "interval") > 0.0);

        // Shares: among the tenants measured, the shares and the weights' shares sum to 1.
        for scope in ["per_model_queue", "farm_wide"] {
            let s = &run["tenant_share"][scope];
            if f(&s["contended_s"], "contended") == 0.0 {
                continue;
            }
            let shares = s["tenants"].as_object().expect("tenants");
            let sum = |k: &str| shares.values().map(|t| f(&t[k], k)).sum::<f64>();
            assert!((sum("share") - 1.0).abs() < 1e-3, "{p} {scope}: {s}");
            assert!((sum("weight_share") - 1.0).abs() < 1e-3, "{p} {scope}: {s}");
            assert!(
                (f(&s["share_sum"], "share_sum") - 1.0).abs() < 1e-3,
                "{p}: {s}"
            );
        }

        // Kills: each injected one happened and its work is accounted for.
        let k = &run["kills"];
        assert_eq!(u(&k["killed_workers"], "killed"), kills, "{p}: {k}");
        assert_eq!(
            k["events"].as_array().map(Vec::len),
            Some(kills as usize),
            "{p}"
        );
        assert_eq!(k["killed_denoise_without_a_next_attempt"], 0, "{p}: {k}");
        for e in k["events"].as_array().unwrap() {
            for t in e["tasks"].as_array().expect("tasks") {
                if t["kind"] == "denoise" {
                    assert!(
                        u(&t["steps_done"], "done") >= u(&t["resumed_from_step"], "resumed"),
                        "{p}: a resume never starts past the steps done: {t}"
                    );
                }
            }
        }

        // The coordinator's counts against the workers': a message in flight when its
        // worker was killed is the only difference allowed.
        let c = &run["coordinator"];
        let a = &run["attempts"];
        let (coord_ckpt, sim_ckpt) = (u(&c["checkpoints"], "c"), u(&a["checkpoints"], "s"));
        assert!(
            coord_ckpt <= sim_ckpt && coord_ckpt + kills >= sim_ckpt,
            "{p}: checkpoints {coord_ckpt} recorded, {sim_ckpt} sent"
        );
        let (coord_pre, sim_pre) = (u(&c["preemptions"], "c"), u(&a["preempted"], "s"));
        assert!(
            coord_pre.abs_diff(sim_pre) <= kills,
            "{p}: preemptions {coord_pre} counted, {sim_pre} handed back"
        );
        if p == "round-robin" {
            assert_eq!(sim_pre, 0, "preemption is off in round-robin");
            assert_eq!(run["config"]["affinity_wait_ms"], 0);
        }

        for goal in [
            "gpu_busy_ratio",
            "model_loads_over_minimum",
            "tenant_share_worst_relative_error",
            "high_job_wait_p99_s",
            "steps_recomputed_max_per_killed_worker",
        ] {
            let g = &run["goals"][goal];
            assert!(
                g["goal"].is_string() && g.get("value").is_some() && g.get("met").is_some(),
                "{p}: goal {goal}: {g}"
            );
        }
    }
    assert!(
        report["high_wait_by_policy"]["farm"]["preemption"] == "low-for-high"
            && report["high_wait_by_policy"]["round-robin"]["preemption"] == "off",
        "{:#}",
        report["high_wait_by_policy"]
    );
}
