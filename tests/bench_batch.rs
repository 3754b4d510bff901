//! `reelfarm bench batch` at a small size: it runs, reports both timings, and every batched
//! clip equals its run alone bit for bit (the bench itself fails otherwise). Timings are not
//! checked (BENCHMARKS.md keeps them); the bad-input answers are.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reelfarm"))
        .args(["bench", "batch"])
        .args(args)
        .output()
        .expect("run reelfarm")
}

#[test]
fn bench_batch_reports_both_timings_and_bit_equal_clips() {
    let out = bench(&[
        "--batch", "3", "--frames", "5", "--height", "32", "--width", "48", "--steps", "3",
        "--repeat", "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["clips"], 3);
    assert_eq!(report["every_clip_bit_equal"], true, "{report}");
    assert_eq!(
        report["bit_equal_by_clip"].as_array().map(Vec::len),
        Some(3)
    );
    for key in ["sequential_seconds", "batched_seconds", "speedup"] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
}

#[test]
fn bench_batch_refuses_a_batch_outside_a_workers_limits() {
    let out = bench(&["--batch", "65"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--batch must be 1..=64"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
