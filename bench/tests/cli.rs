//! The benchmark binary end to end, on tiny counts: every subcommand runs, its JSON carries
//! real percentiles in order and a ratio to its reference, and bad arguments are clear errors.
//! (Figures themselves are benchmarks, not tests: nothing here judges speed.)

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_blockwire-bench"))
        .args(args)
        .output()
        .expect("run blockwire-bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = bench(args);
    assert!(ok, "blockwire-bench {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn check_latency_row(row: &serde_json::Value, count: u64) {
    assert_eq!(row["count"], count, "{row}");
    let p: Vec<u64> =
        row["percentiles_ns"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(p.len(), 5);
    assert!(p[0] > 0 && p.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {p:?}");
    assert!(row["max_ns"].as_u64().unwrap() >= p[4]);
}

#[test]
fn pingpong_sleep_mode_reports_percentiles_and_ratio_to_bare_socket() {
    let dir = std::env::temp_dir().join(format!("bw-bench-{}", std::process::id()));
    let doc = json(&[
        "pingpong",
        "--raw",
        "--mode",
        "sleep",
        "--count",
        "300",
        "--warmup",
        "30",
        "--json",
        "--hgrm-dir",
        dir.to_str().unwrap(),
    ]);
    let rows = doc["latency"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    check_latency_row(&rows[0], 300);
    check_latency_row(&rows[1], 300);
    assert!(rows[0]["case"].as_str().unwrap().contains("bare tcp"));
    let ratio = rows[1]["reference"][1].as_f64().unwrap();
    assert!(ratio > 0.0, "{ratio}");
    let files = std::fs::read_dir(&dir).unwrap().count();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(files, 2);
}

#[test]
fn stream_reports_rates_beside_the_bare_socket() {
    let doc = json(&["stream", "--raw", "--count", "20000", "--json"]);
    let rows = doc["rates"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert!(r["per_second"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(rows[1]["reference"][1].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_arguments_are_named() {
    let (ok, _, err) = bench(&["pingpong", "--raw", "--size", "30"]);
    assert!(!ok && err.contains("--size 30"), "{err}");
    let (ok, _, err) = bench(&["pingpong", "--transport", "rdma", "--raw", "--count", "1"]);
    assert!(!ok && err.contains("not available"), "{err}");
    let (ok, _, err) = bench(&["pingpong", "--count", "1"]);
    assert!(!ok && err.contains("--raw"), "{err}");
}

#[test]
fn shm_pingpong_and_idle_run_between_two_processes() {
    let doc = json(&[
        "pingpong",
        "--raw",
        "--transport",
        "shm",
        "--mode",
        "sleep",
        "--count",
        "200",
        "--warmup",
        "20",
        "--json",
    ]);
    let rows = doc["latency"].as_array().unwrap();
    assert!(rows[0]["case"].as_str().unwrap().contains("eventfd"), "{rows:?}");
    check_latency_row(&rows[1], 200);
    let doc = json(&["idle", "--raw", "--transport", "shm", "--seconds", "1", "--json"]);
    let cpu = doc["idle"]["cpu_fraction"].as_array().unwrap();
    assert_eq!(cpu.len(), 2);
    // Both ends sleep in epoll after the spin time; neither may be spinning a whole core.
    assert!(cpu.iter().all(|c| (0.0..0.5).contains(&c.as_f64().unwrap())), "{cpu:?}");
}
