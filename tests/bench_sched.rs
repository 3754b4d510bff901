//! `reelfarm bench sched` end to end, small: its JSON reports every job finished in both
//! passes and backends, and the transport floor ran the same number of tasks. Figures are
//! not checked (timing assertions would fail on a busy machine); BENCHMARKS.md keeps them.

mod common;

use std::process::Command;

#[test]
fn bench_sched_reports_finished_runs_and_the_transport_floor() {
    // The bench starts its own throwaway etcd for the etcd backend, as the e2e tests do
    // (scripts/test.sh installs it).
    assert!(
        reelfarm::local_etcd::available(),
        "no etcd binary on PATH (run scripts/test.sh to install it)"
    );
    let args = [
        "bench",
        "sched",
        "--workers",
        "2,5",
        "--total-slots",
        "10",
        "--tasks",
        "300",
        "--latency-load",
        "0.5",
        "--backend",
        "memory,etcd",
    ];
    let out = Command::new(common::CLI_BIN)
        .args(args)
        .output()
        .expect("run reelfarm bench sched");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench sched failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bench sched prints JSON on stdout");
    let results = report["results"].as_array().expect("results");
    assert_eq!(
        results.len(),
        4,
        "two backends × two worker counts: {report:#}"
    );
    for r in results {
        let what = format!("{} backend, {} workers", r["backend"], r["workers"]);
        for pass in ["saturated", "at_load"] {
            let run = &r[pass];
            assert_eq!(run["timed_out"], false, "{what} {pass}: {run}");
            let jobs = run["jobs"].as_u64().expect("jobs");
            assert_eq!(jobs, 5, "{what}: 300 tasks round up to 5 jobs of 67");
            assert_eq!(run["jobs_succeeded"], jobs, "{what} {pass}: {run}");
            let tasks = run["tasks"].as_u64().expect("tasks");
            assert_eq!(tasks, 5 * 67, "{what} {pass}");
            assert!(
                run["tasks_answered_by_workers"].as_u64() >= Some(tasks),
                "{what} {pass}: the simulated workers answered every task: {run}"
            );
            assert!(
                run["tasks_per_second"].as_f64() > Some(0.0),
                "{what} {pass}"
            );
        }
        for (floor, run) in [
            (&r["transport_floor"], &r["saturated"]),
            (&r["at_load"]["transport_floor"], &r["at_load"]),
        ] {
            assert_eq!(floor["timed_out"], false, "{what}: {floor}");
            assert!(
                floor["tasks"].as_u64() >= run["tasks"].as_u64(),
                "{what}: the floor runs as many tasks as the scheduler did: {floor}"
            );
        }
        assert!(
            r["saturated_share_of_floor"].as_f64() > Some(0.0),
            "{what}: {r}"
        );
    }
}
