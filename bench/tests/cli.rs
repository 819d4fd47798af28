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
    // Without a device (this host's kernel has no RDMA) rdma runs say so before measuring;
    // with one (inside scripts/rxe-vm.sh) they run.
    for raw in [true, false] {
        let mut args = vec!["pingpong", "--transport", "rdma", "--count", "1", "--warmup", "0"];
        if raw {
            args.push("--raw");
        }
        let (ok, _, err) = bench(&args);
        assert!(ok || err.contains("transport rdma: no RDMA device"), "{err}");
    }
    let (ok, _, err) = bench(&["pingpong", "--config", "x.toml", "--mode", "spin"]);
    assert!(!ok && err.contains("with --config the file's spin_time_us"), "{err}");
    let (ok, _, err) = bench(&["pingpong", "--transport", "local", "--config", "x.toml"]);
    assert!(!ok && err.contains("local runs in one process"), "{err}");
    let (ok, _, err) =
        bench(&["pingpong", "--config", "/nonexistent/cluster.toml", "--count", "1"]);
    assert!(!ok && err.contains("/nonexistent/cluster.toml"), "{err}");
    let (ok, _, err) = bench(&["pingpong", "--size", "0", "--count", "1"]);
    assert!(!ok && err.contains("--size 0"), "{err}");
    let (ok, _, err) = bench(&["idle", "--seconds", "1"]);
    assert!(!ok && err.contains("--raw"), "{err}");
    let (ok, _, err) =
        bench(&["pingpong", "--transport", "local", "--count", "2", "--rounds", "3"]);
    assert!(!ok && err.contains("--rounds 3 is more than --count 2"), "{err}");
}

#[test]
fn alternating_rounds_pool_every_sample_and_print_each_ratio() {
    let args = ["--count", "3000", "--warmup", "100", "--rounds", "3", "--mode", "spin"];
    for transport in [&["--transport", "local"][..], &["--raw", "--transport", "shm"]] {
        let (ok, out, err) = bench(&[&["pingpong"][..], transport, &args].concat());
        assert!(ok, "{err}");
        let line = out
            .lines()
            .find(|l| l.contains("alternating rounds"))
            .unwrap_or_else(|| panic!("no per-round line in:\n{out}"));
        let ratios: Vec<f64> = line
            .split(": ")
            .nth(1)
            .expect("ratios after the colon")
            .split_whitespace()
            .take_while(|w| w.ends_with('x'))
            .map(|w| w.trim_end_matches('x').parse().expect("a ratio"))
            .collect();
        assert_eq!(ratios.len(), 3, "{line}");
        assert!(ratios.iter().all(|r| *r > 0.0), "{line}");
        // Both pooled rows hold every round's samples.
        let json = json(&[&["pingpong"][..], transport, &args, &["--json"]].concat());
        for row in json["latency"].as_array().expect("latency rows") {
            check_latency_row(row, 3000);
        }
    }
}

#[test]
fn interleaved_reference_shares_the_two_ends_and_reports_each_block() {
    let cases = [
        (&["--raw", "--transport", "shm"][..], "cache-line 2 processes, interleaved"),
        (&["--transport", "local"][..], "cache-line 2 threads, interleaved"),
    ];
    for (transport, reference) in cases {
        let args = [&["pingpong", "--mode", "spin", "--count", "6000"][..], transport].concat();
        let args = [&args[..], &["--warmup", "500", "--interleave", "200"]].concat();
        let (ok, out, err) = bench(&args);
        assert!(ok, "{err}");
        // 6,000 measured round trips in blocks of 200: 30 pairs of blocks (the warm-up's 500
        // end two blocks and start a third, whose measured part pairs too).
        let line = out
            .lines()
            .find(|l| l.contains("pairs of blocks"))
            .unwrap_or_else(|| panic!("no per-block line in:\n{out}"));
        assert!(line.contains("each of 31 pairs") || line.contains("each of 30 pairs"), "{line}");
        let json = json(&[&args[..], &["--json"]].concat());
        let rows = json["latency"].as_array().expect("latency rows");
        assert!(rows[0]["case"].as_str().unwrap().contains(reference), "{rows:?}");
        for row in rows {
            check_latency_row(row, 6000);
        }
        assert!(rows[1]["reference"][1].as_f64().unwrap() > 0.0);
    }
    for bad in [
        &["--raw", "--transport", "tcp", "--interleave", "10"][..],
        &["--raw", "--interleave", "0"],
        &["--transport", "local", "--mode", "sleep", "--interleave", "10"],
        &["--transport", "local", "--interleave", "101"],
    ] {
        let (ok, _, err) = bench(&[&["pingpong", "--count", "100"][..], bad].concat());
        assert!(!ok && err.contains("--interleave"), "{err}");
    }
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

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bw-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn transports_are_listed() {
    let (ok, out, _) = bench(&["transports"]);
    assert!(ok);
    let names: Vec<&str> = out.lines().collect();
    assert!(["tcp", "shm", "local"].iter().all(|t| names.contains(t)), "{names:?}");
}

#[test]
fn full_stack_pingpong_runs_in_one_process_and_between_two() {
    // local: two block threads of one node.
    let dir = temp_dir("local");
    let args = ["--count", "300", "--warmup", "30", "--mode", "sleep", "--spin-us", "20"];
    let hgrm = dir.to_str().unwrap();
    let mut local = vec!["pingpong", "--transport", "local", "--json", "--hgrm-dir", hgrm];
    local.extend(args);
    let doc = json(&local);
    assert_eq!(doc["run"]["stack"], "full");
    assert_eq!(doc["run"]["label"], "local (spin 20us then sleep)");
    let rows = doc["latency"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    check_latency_row(&rows[1], 300);
    assert_eq!(rows[1]["reference"][0], "limit cache-line 2 threads");
    assert!(rows[1]["case"].as_str().unwrap().starts_with("local spin 20us then sleep"));
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    std::fs::remove_dir_all(&dir).unwrap();

    // tcp: this process is data node 2, the peer data node 1 another process. A copy of the
    // binary with no blockwire-datanode beside it runs its own node runtime as the peer.
    let alone = temp_dir("alone");
    let exe = alone.join("blockwire-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_blockwire-bench"), &exe).unwrap();
    // Spin time 0: every hand-off sleeps, so the reference is the blocking socket.
    let mut tcp = vec!["pingpong", "--transport", "tcp", "--json", "--mode", "sleep"];
    tcp.extend(["--spin-us", "0", "--count", "300", "--warmup", "30"]);
    let out = Command::new(&exe).args(&tcp).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::remove_dir_all(&alone).unwrap();
    assert_eq!(doc["run"]["peer"], "blockwire-bench node-peer", "{doc}");
    assert_eq!(doc["run"]["label"], "tcp (sleep)");
    let rows = doc["latency"].as_array().unwrap();
    assert_eq!(rows[0]["case"], "limit bare tcp sleep");
    check_latency_row(&rows[1], 300);
    assert!(rows[1]["reference"][1].as_f64().unwrap() > 0.0);
    assert!(!stderr.contains("did not stop cleanly"), "{stderr}");
}

#[test]
fn full_stack_stream_counts_every_signal_at_the_receiver() {
    let doc = json(&[
        "stream",
        "--transport",
        "shm",
        "--mode",
        "sleep",
        "--count",
        "20000",
        "--batch",
        "32",
        "--json",
    ]);
    assert_eq!(doc["run"]["label"], "shm (spin 50us then sleep)");
    assert_eq!(doc["run"]["batch"], 32);
    let rows = doc["rates"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let r = &rows[1];
    assert!(r["per_second"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["wakeups_per_1000"].as_f64().unwrap() >= 0.0, "{r}");
    let cpu = doc["run"]["cpu_cores"].as_array().unwrap();
    assert!(cpu.iter().all(|c| c.as_f64().unwrap() >= 0.0), "{cpu:?}");
}

const SAMPLE_HGRM: &str = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n\
     10.000 0.000000000000 1 1.00\n\
     12.000 0.500000000000 499 2.00\n\
     20.000 0.990000000000 490 100.00\n\
     45.000 0.999000000000 9 1000.00\n\
     90.000 1.000000000000 1 inf\n#[Max = 90.000, Total count = 1000]\n";

#[test]
fn report_prints_one_table_and_writes_an_svg_plot() {
    let dir = temp_dir("report");
    std::fs::write(dir.join("tcp_spin_4w.hgrm"), SAMPLE_HGRM).unwrap();
    std::fs::write(dir.join("limit_bare_tcp_spin.hgrm"), SAMPLE_HGRM.replace("12.000", "8.000"))
        .unwrap();
    let run = serde_json::json!({
        "run": { "command": "pingpong", "label": "tcp" },
        "latency": [
            { "case": "limit bare tcp spin", "count": 1000,
              "percentiles_ns": [8000, 9000, 10000, 11000, 12000], "max_ns": 13000,
              "reference": null },
            { "case": "tcp spin 4w", "count": 1000,
              "percentiles_ns": [12000, 15000, 20000, 45000, 80000], "max_ns": 90000,
              "reference": ["limit bare tcp spin", 1.5] }
        ],
        "rates": []
    });
    std::fs::write(dir.join("pingpong-tcp.json"), run.to_string()).unwrap();
    let svg = dir.join("plot").join("latency.svg");
    let d = dir.to_str().unwrap();
    let (ok, out, err) =
        bench(&["report", "--runs", d, "--hgrm-dir", d, "--svg", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "| tcp | 12.00 | 20.00 | 45.00 | - | - | 1.50x limit bare tcp spin (8.00 us) |"
        ),
        "{out}"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains("tcp spin 4w") && text.contains("limit bare tcp spin"));
    assert!(text.contains("99.9%"), "percentile axis labels");
    assert!(text.matches("<polyline").count() >= 2, "one line per distribution");

    // A broken distribution is an error naming the file and line, not a panic.
    std::fs::write(dir.join("broken.hgrm"), "1.0 0.5\nnot numbers\n").unwrap();
    let (ok, _, err) = bench(&["report", "--hgrm-dir", d, "--svg", svg.to_str().unwrap()]);
    assert!(!ok && err.contains("broken.hgrm") && err.contains("line 2"), "{err}");
    std::fs::write(dir.join("bad.json"), "{ not json").unwrap();
    let (ok, _, err) = bench(&["report", "--runs", d]);
    assert!(!ok && err.contains("bad.json") && err.contains("not JSON"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pingpong_carries_a_long_section_both_ways() {
    // Raw: the echo peer returns the section; full stack (local): the driver checks that the
    // answer's section is the one it sent, word for word, or the run fails.
    for args in [
        &["pingpong", "--raw", "--transport", "shm", "--mode", "sleep"][..],
        &["pingpong", "--transport", "local"][..],
    ] {
        let mut a = args.to_vec();
        a.extend(["--section-bytes", "1024", "--count", "300", "--warmup", "30", "--json"]);
        let doc = json(&a);
        let rows = doc["latency"].as_array().unwrap();
        let case = rows[1]["case"].as_str().unwrap();
        assert!(case.ends_with("4w+1024B"), "{case}");
        check_latency_row(&rows[1], 300);
    }
    let (ok, _, err) = bench(&["pingpong", "--section-bytes", "6", "--count", "1"]);
    assert!(!ok && err.contains("--section-bytes 6: a multiple of 4"), "{err}");
}

#[test]
fn limit_measures_every_physical_reference() {
    let doc = json(&["limit", "--count", "300", "--warmup", "30", "--json"]);
    let rows = doc["latency"].as_array().unwrap();
    let cases: Vec<&str> = rows.iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert_eq!(
        cases,
        [
            "limit cache-line 2 threads",
            // A 4-word signal's record: its word, a 4-word header, 4 data words.
            "limit ring protocol 36-byte records",
            "limit cache-line 2 processes",
            "limit eventfd wake 2 threads",
            "limit futex wake 2 threads",
            "limit bare tcp spin",
            "limit bare tcp sleep",
        ]
    );
    for row in rows {
        check_latency_row(row, 300);
    }
}

/// The numbers after `case` on its line of `out` (a trailing `x` dropped), up to the first word
/// that is not one.
fn numbers_after(out: &str, case: &str) -> Vec<f64> {
    // The whole case: "tcp range scan, 100 rows" is not "tcp range scan, 100 rows, pruned ...".
    let line = out
        .lines()
        .find(|l| l.strip_prefix(case).is_some_and(|rest| rest.starts_with("  ")))
        .unwrap_or_else(|| panic!("no row {case:?} in:\n{out}"));
    line[case.len()..]
        .split_whitespace()
        .map_while(|w| w.trim_end_matches('x').parse::<f64>().ok())
        .collect()
}

#[test]
fn kv_measures_engine_operations_beside_their_ideal_and_their_throughput() {
    // A copy of the binary with no blockwire-datanode beside it runs its own engine data nodes
    // (kv-node): the data nodes are built from the same engine as the client then.
    let alone = temp_dir("kv");
    let exe = alone.join("blockwire-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_blockwire-bench"), &exe).unwrap();
    let out = Command::new(&exe)
        .args(["kv", "--transport", "tcp", "--ops", "300", "--warmup", "50"])
        .args(["--throughput-seconds", "0.2"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&alone).unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains("kv-node"), "{stdout}");
    assert!(stdout.contains("committed read p50 within 2.5x its ideal"), "{stdout}");
    assert!(stdout.contains("two-replica update p50 within 3x its ideal"), "{stdout}");
    // count, p50 p90 p99 p99.9 p99.99 max, ideal RTs, ideal p50, ratio.
    let ping = numbers_after(&stdout, "tcp bare round trip (ping)");
    assert_eq!(ping.len(), 10, "{stdout}");
    let bare_p50 = ping[1];
    for (op, rts) in [("read", 1.0), ("insert", 3.0), ("update", 3.0)] {
        for size in ["1 op", "batch of 16"] {
            let row = numbers_after(&stdout, &format!("tcp {op}, {size}"));
            assert_eq!(row.len(), 10, "{op}, {size}: {row:?}\n{stdout}");
            assert_eq!(row[0], 300.0, "{row:?}");
            assert!(row[1] > 0.0 && row[1..7].windows(2).all(|w| w[0] <= w[1]), "{row:?}");
            assert_eq!(row[7], rts, "ideal round trips of {op}: {row:?}");
            assert!((row[8] - rts * bare_p50).abs() <= 0.005 + rts * 0.005 + 1e-9, "ideal p50 {row:?}, bare {bare_p50}");
            let ratio = row[9];
            // p50 and ideal print rounded to 0.01 us: the ratio of the printed values may differ
            // from the printed ratio by that rounding, relative to each.
            let slack = 0.01 + ratio * (0.005 / row[1] + 0.005 / row[8]);
            assert!(ratio > 0.0 && (ratio - row[1] / row[8]).abs() <= slack, "ratio: {row:?}");
        }
    }
    for op in ["read", "update"] {
        for n in [1, 16, 256] {
            let row = numbers_after(&stdout, &format!("tcp {op}, {n} in flight"));
            // ops/s and transactions/s: 16 operations per transaction.
            assert_eq!(row.len(), 2, "{op}, {n}: {row:?}\n{stdout}");
            assert!(row[1] > 0.0 && (row[0] - 16.0 * row[1]).abs() <= 16.0, "{row:?}");
        }
    }
}

#[test]
fn kv_errors_exit_2_with_a_message() {
    for (args, message) in [
        (&["kv", "--transport", "local"][..], "tcp, shm or rdma"),
        (&["kv", "--ops", "0"], "--ops must be at least 1"),
        (&["kv", "--throughput-seconds", "0"], "--throughput-seconds 0"),
        (&["kv", "--datanode", "/nonexistent/blockwire-datanode"], "/nonexistent"),
        (&["kv", "--cpus", "0"], "--cpus takes two or three CPU numbers"),
    ] {
        exits_2_naming(args, message);
    }
}

/// Runs `blockwire-bench scan` with `args` from a copy of the binary with no
/// blockwire-datanode beside it (its own engine data nodes then, built from the same engine as
/// the client); its stdout.
fn scan_alone(name: &str, args: &[&str]) -> String {
    let alone = temp_dir(name);
    let exe = alone.join("blockwire-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_blockwire-bench"), &exe).unwrap();
    let out = Command::new(&exe).arg("scan").args(args).output().unwrap();
    std::fs::remove_dir_all(&alone).unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    stdout.into_owned()
}

/// Checks the aggregate rows of `t` in a scan run's `out` (`repeat` runs each way, on a table
/// of `rows` rows).
fn check_scan_aggregates(out: &str, t: &str, repeat: usize, rows: u64) {
    for way in ["pushed-down", "client-side"] {
        // Each run, best, per core (M rows/s); per CPU-s may read "-".
        let row = numbers_after(out, &format!("{t} {way} aggregate"));
        assert!(row.len() >= repeat + 2, "{way}: {row:?}\n{out}");
        let best = row[..repeat].iter().copied().fold(0.0, f64::max);
        assert!(best > 0.0 && (row[repeat] - best).abs() < 0.006, "best of {way}: {row:?}");
        assert!(row[repeat + 1] > 0.0 && row[repeat + 1] <= best + 0.006, "per core: {row:?}");
    }
    let ratio = out
        .lines()
        .find(|l| l.starts_with(&format!("{t} pushed-down / client-side: best ")))
        .and_then(|l| l.split("best ").nth(1)?.split('x').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no ratio line for {t} in:\n{out}"));
    assert!(ratio > 0.0, "{ratio}");
    // The data nodes' own count of the rows the pushed-down aggregate examined.
    let examined = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{t} rows examined by the data nodes per run: ")))
        .unwrap_or_else(|| panic!("no rows examined line for {t} in:\n{out}"));
    let pushed = examined.strip_prefix("pushed-down ").and_then(|e| e.split(' ').next());
    assert_eq!(pushed, Some(rows.to_string().as_str()), "{examined}");
    let client = examined.split("client-side ").nth(1).and_then(|e| e.split(' ').next());
    let least = client.and_then(|c| c.split("..=").next()?.parse::<u64>().ok());
    assert!(least.is_some_and(|n| n >= rows), "client-side examined: {examined}");
}

/// Checks the latency rows of `t`: the key read, then range scans of 1, 100 and 10,000 rows on
/// all 8 partitions and pruned to one, each with its count, ordered percentiles, partitions and
/// ratio to the key read's p50; and the 100-row target line for both.
fn check_scan_latency(out: &str, t: &str, ops: f64, ops_10000: f64) {
    // count, p50 p90 p99 p99.9 p99.99 max, then partitions and batches ("-" for the key read).
    let key = numbers_after(out, &format!("{t} key read, 1 row"));
    assert_eq!(key.len(), 7, "{key:?}\n{out}");
    assert_eq!(key[0], ops);
    let mut ratios = Vec::new();
    for (pruned, parts) in [("", 8.0), (", pruned to 1 partition", 1.0)] {
        for (case, count, rows) in
            [("1 row", ops, 1.0), ("100 rows", ops, 100.0), ("10000 rows", ops_10000, 10_000.0)]
        {
            let row = numbers_after(out, &format!("{t} range scan, {case}{pruned}"));
            assert_eq!(row.len(), 10, "{case}{pruned}: {row:?}\n{out}");
            assert_eq!(row[0], count, "{case}{pruned}: {row:?}");
            assert!(row[1] > 0.0 && row[1..7].windows(2).all(|w| w[0] <= w[1]), "{row:?}");
            assert_eq!(row[7], parts, "{case}{pruned}: partitions each scan ran on: {row:?}");
            // A batch per partition at least; the default --batch-rows is 1,024.
            let least = f64::max(parts, (rows / 1024.0f64).ceil());
            assert!(row[8] >= least, "{case}{pruned}: batches: {row:?}");
            // Both p50s are printed to 0.01 us: the ratio of the printed figures is close.
            let ratio = row[1] / key[1];
            assert!((row[9] - ratio).abs() <= 0.01 + ratio * 0.002, "ratio to key read: {row:?}");
            if rows == 100.0 {
                ratios.push(row[9]);
                let case = format!("{t} range scan, {case}{pruned}  ");
                let line = out.lines().find(|l| l.starts_with(&case)).unwrap_or_default();
                assert!(line.contains("  <= 3x: m"), "the target beside the case: {line}");
            }
        }
    }
    let target = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{t} 100-row range scan p50 within 3x")))
        .unwrap_or_else(|| panic!("no 100-row target line for {t} in:\n{out}"));
    let (unpruned, pruned) = target
        .split_once(", pruned (1 partition) ")
        .unwrap_or_else(|| panic!("no pruned case in the target line: {target}"));
    assert!(unpruned.starts_with(" the key read's: unpruned (8 partitions) "), "{target}");
    for (part, ratio) in [(unpruned, ratios[0]), (pruned, ratios[1])] {
        // "<ratio>x <verdict>", the ratio as in its row; the verdict follows the unrounded
        // ratio, so a printed 3.00 may go either way.
        let words: Vec<&str> = part.rsplit(' ').take(2).collect();
        assert_eq!(words[1], format!("{ratio:.2}x"), "{target}");
        let allowed: &[&str] = match ratio {
            r if r < 3.0 => &["met"],
            r if r > 3.0 => &["missed"],
            _ => &["met", "missed"],
        };
        assert!(allowed.contains(&words[0]), "{target}");
    }
}

#[test]
fn scan_measures_aggregates_both_ways_and_range_scans_beside_a_key_read() {
    // 12,345 rows: 113 cards of 100 rows and 1,045 cards of one row; every answer is checked
    // by the bench itself, which fails on a wrong one.
    let common = ["--rows", "12345", "--repeat", "2", "--ops", "30", "--warmup", "5"];
    let out = scan_alone("scan", &[&["--transport", "tcp"][..], &common].concat());
    assert!(out.contains("blockwire-bench kv-node"), "{out}");
    assert!(out.contains(">= 20M rows/s per data-node core and >= 10x"), "{out}");
    assert!(out.contains("100-row range scan p50 within 3x"), "{out}");
    assert!(out.contains("partition key card, 8 partitions"), "{out}");
    assert!(out.contains("txn_by_card loaded 100000 rows"), "{out}");
    assert!(
        out.contains("ids 0..11300 in cards 0..113 of 100 rows each, then 1045 cards"),
        "{out}"
    );
    check_scan_aggregates(&out, "tcp", 2, 12_345);
    check_scan_latency(&out, "tcp", 30.0, 3.0);
    // Ordered range scans over shared memory, with their distributions written out.
    let hgrm = temp_dir("scan-hgrm");
    let extra = ["--transport", "shm", "--ordered", "--ops-10000", "2", "--hgrm-dir"];
    let args = [&common[..], &extra, &[hgrm.to_str().unwrap()]].concat();
    let out = scan_alone("scan-shm", &args);
    assert!(out.contains("beside ordered (merged by (card, ts)) range scans"), "{out}");
    check_scan_aggregates(&out, "shm", 2, 12_345);
    check_scan_latency(&out, "shm", 30.0, 2.0);
    let files = std::fs::read_dir(&hgrm).unwrap().count();
    std::fs::remove_dir_all(&hgrm).unwrap();
    assert_eq!(files, 7, "a .hgrm file per latency case");
}

#[test]
fn scan_errors_exit_2_with_a_message() {
    for (args, message) in [
        (&["scan", "--transport", "local"][..], "scan runs data nodes as processes"),
        (&["scan", "--rows", "100"], "--rows 100: at least 11000"),
        (&["scan", "--repeat", "0"], "--repeat must be at least 1"),
        (&["scan", "--ops-10000", "0"], "--ops-10000 must be at least 1"),
        (&["scan", "--batch-rows", "0"], "--batch-rows must be at least 1"),
        (&["scan", "--cpus", "0,1,2,3"], "--cpus"),
    ] {
        exits_2_naming(args, message);
    }
}

/// The number of a `ratio ...: N.NNx` line of `out` starting with `name`.
fn ratio_line(out: &str, name: &str) -> f64 {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no line {name:?} in:\n{out}"));
    let ratio: f64 = line.trim_start_matches(':').trim().trim_end_matches('x').parse().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0, "{name}: {ratio}");
    ratio
}

#[test]
fn commit_measures_disk_durability_beside_raw_fdatasync_and_restarts_from_the_files() {
    // A copy of the binary with no blockwire-datanode beside it: its own engine data nodes
    // (kv-node), which keep their data in directories under --dir as blockwire-datanode does.
    let alone = temp_dir("commit");
    let exe = alone.join("blockwire-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_blockwire-bench"), &exe).unwrap();
    let (root, hgrm) = (alone.join("data"), alone.join("hgrm"));
    std::fs::create_dir(&root).unwrap();
    let out = Command::new(&exe)
        .args(["commit", "--count", "50", "--warmup", "10", "--throughput-seconds", "0.3"])
        .args(["--recovery-rows", "2000", "--dir", root.to_str().unwrap()])
        .args(["--hgrm-dir", hgrm.to_str().unwrap()])
        .output()
        .unwrap();
    let left_in_root = std::fs::read_dir(&root).unwrap().count();
    let hgrm_files = std::fs::read_dir(&hgrm).map_or(0, |d| d.count());
    std::fs::remove_dir_all(&alone).unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains("blockwire-bench kv-node"), "{stdout}");
    assert_eq!(left_in_root, 0, "the run removes what it made in --dir");
    assert_eq!(hgrm_files, 3, "a .hgrm file per latency series");
    // count, p50 p90 p99 p99.9 p99.99 max; the commits then their p50 / fdatasync p50.
    let floor = numbers_after(&stdout, "fdatasync, 512 bytes at offset 0 (raw)");
    let mut p50 = Vec::new();
    for (case, cells) in [
        ("fdatasync, 512 bytes at offset 0 (raw)", 7),
        ("tcp commit, 1-row insert, memory durability", 8),
        ("tcp commit, 1-row insert, disk durability", 8),
    ] {
        let row = numbers_after(&stdout, case);
        assert_eq!(row.len(), cells, "{case}: {row:?}\n{stdout}");
        assert_eq!(row[0], 50.0, "{case}: {row:?}");
        assert!(row[1] > 0.0 && row[1..7].windows(2).all(|w| w[0] <= w[1]), "{case}: {row:?}");
        if cells == 8 {
            let slack = 0.01 + row[7] * (0.005 / row[1] + 0.005 / floor[1]);
            assert!((row[7] - row[1] / floor[1]).abs() <= slack, "{case}: ratio {row:?}");
        }
        p50.push(row[1]);
    }
    let latency_ratio = ratio_line(&stdout, "ratio disk commit p50 / raw fdatasync p50");
    let slack = 0.01 + latency_ratio * (0.005 / p50[2] + 0.005 / p50[0]);
    assert!((latency_ratio - p50[2] / p50[0]).abs() <= slack, "{latency_ratio} {p50:?}");
    // commits/s, commits per GCI, commits/s / one sync per commit.
    let one_sync = numbers_after(&stdout, "one sync per commit (1 / mean raw fdatasync)");
    assert!(one_sync.len() == 1 && one_sync[0] > 0.0, "{one_sync:?}");
    let mut most = 0.0;
    for n in [1, 16, 256] {
        let row = numbers_after(&stdout, &format!("tcp disk commit, {n} in flight"));
        assert_eq!(row.len(), 3, "{n} in flight: {row:?}\n{stdout}");
        assert!(row.iter().all(|v| v.is_finite() && *v > 0.0), "{n} in flight: {row:?}");
        assert!(row[1] >= 1.0, "a GCI holds at least one commit: {row:?}");
        if n == 1 {
            // Each commit waits until its GCI is saved, so the next one is in a later GCI.
            assert_eq!(row[1], 1.0, "one in flight, one commit per GCI: {row:?}");
        }
        most = row[0];
    }
    let rate_ratio =
        ratio_line(&stdout, "ratio disk commits/s at 256 in flight / one sync per commit");
    assert!((rate_ratio - most / one_sync[0]).abs() <= 0.01 + rate_ratio * 0.01, "{rate_ratio}");
    // rows, load s, dir MB, redo MB, lcp MB (kv-node logs nothing: replayed and serves "-").
    let case = "tcp restart from the data directories";
    let row = numbers_after(&stdout, case);
    assert_eq!(row.len(), 5, "{row:?}\n{stdout}");
    assert_eq!(row[0], 2000.0, "{row:?}");
    assert!(row[1] > 0.0 && row[2] > 0.0 && row[2] >= row[3] + row[4] - 0.2, "{row:?}");
    let line = stdout.lines().find(|l| l.starts_with(case)).unwrap();
    let first_read: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!(first_read.is_finite() && first_read > 0.0, "{line}");
}

#[test]
fn commit_errors_exit_2_with_a_message() {
    let taken = temp_dir("commit-taken");
    std::fs::create_dir(taken.join("recovery")).unwrap();
    for (args, message) in [
        (&["commit", "--transport", "local"][..], "commit runs data nodes as processes"),
        (&["commit", "--count", "0"], "--count must be at least 1"),
        (&["commit", "--recovery-rows", "0"], "--recovery-rows must be at least 1"),
        (&["commit", "--gcp-interval-ms", "0"], "--gcp-interval-ms 0: from 1 to 60000"),
        (&["commit", "--throughput-seconds", "0"], "--throughput-seconds 0"),
        (&["commit", "--dir", taken.to_str().unwrap()], "recovery is there already"),
    ] {
        exits_2_naming(args, message);
    }
    // What was there is left alone.
    assert!(taken.join("recovery").is_dir());
    std::fs::remove_dir_all(&taken).unwrap();
}

#[test]
fn sql_measures_the_fraud_queries_beside_sqlite_while_a_writer_inserts() {
    let alone = temp_dir("sql");
    let exe = alone.join("blockwire-bench");
    std::fs::copy(env!("CARGO_BIN_EXE_blockwire-bench"), &exe).unwrap();
    let out = Command::new(&exe)
        .args(["sql", "--transport", "tcp", "--rows", "5000", "--cards", "50", "--merchants", "100"])
        .args(["--ops", "100", "--warmup", "10", "--insert-rate", "200"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&alone).unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains("by ordered index by_card_time"), "{stdout}");
    assert!(stdout.contains("lookup by primary key"), "{stdout}");
    assert!(stdout.contains("tcp: the writer inserted"), "{stdout}");
    for case in ["per card", "by category"] {
        for who in ["blockwire", "SQLite"] {
            // count, p50 p90 p99 p99.9 p99.99 max, then the ratio for blockwire's rows.
            let row = numbers_after(&stdout, &format!("{case} ({who}, tcp)"));
            assert!(row.len() >= 7, "{case} {who}: {row:?}\n{stdout}");
            assert_eq!(row[0], 100.0, "{row:?}");
            assert!(row[1] > 0.0 && row[1..7].windows(2).all(|w| w[0] <= w[1]), "{row:?}");
            if who == "blockwire" {
                assert_eq!(row.len(), 8, "{row:?}");
                assert!(row[7] > 0.0, "{row:?}");
            }
        }
    }
    assert!(stdout.contains("target (tcp): per-card p99"), "{stdout}");
}

#[test]
fn sql_errors_exit_2_with_a_message() {
    for (args, message) in [
        (&["sql", "--rows", "0"][..], "must be at least 1"),
        (&["sql", "--transport", "local"], "tcp, shm or rdma"),
        (&["sql", "--cards", "99999999999999"], "at most"),
    ] {
        exits_2_naming(args, message);
    }
}

/// Runs `blockwire-bench args`, which must exit 2 with `message` in its stderr.
fn exits_2_naming(args: &[&str], message: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_blockwire-bench")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}
