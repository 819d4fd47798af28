//! `blockwire-bench failover`: what a data node's death and its restart cost the load, in one
//! run on the two-data-node cluster of [`crate::cluster`] (one node group, two replicas, kept
//! in memory).
//!
//! The run loads `--rows` rows of about 100 bytes (`failover_rows(k, v, pad)`), then one
//! session commits one-row updates of random keys, one in flight, each retried on a temporary
//! error (as `Session::retry` does) and timed from its first try to its commit. `--before`
//! seconds in, data node `--victim` is SIGKILLed; `--down` seconds later it is started again,
//! copies its partitions from the survivor and serves; the load runs `--after` seconds more.
//! It prints:
//! - commits per 10 ms bucket over the run, drawn as a text plot (one column per 100 ms) and
//!   written as `failover.svg` and `failover.csv` (into `--out`);
//! - the time from the kill to the first commit on a partition whose primary was the victim
//!   (the failover: notice, agreement, promotion), and to the first commit at all;
//! - commit latency percentiles (HDR) before the kill, in the failover window (the second after
//!   the kill), while the victim is down, while it copies, and after it serves again;
//! - the copy: rows and bytes the restarted node logged per storage instance, the slowest
//!   instance's seconds, MB/s, and the time from the restart to serving (the link's reconnect
//!   included).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Column, ColumnType, Exec, Session, Table, TableDef, Value};
use hdrhistogram::Histogram;

use crate::cluster::{self, client_error, ClusterSpec, DataNodes, Placement, Program, R};
use crate::report::{self, LatencyRow};
use crate::Transport;

/// Partitions of the table.
const PARTITIONS: u32 = 8;
/// Width of one bucket of the commit count.
const BUCKET: Duration = Duration::from_millis(10);
/// Rows per loading transaction.
const LOAD_BATCH: u64 = 500;
/// 84 bytes: k, v and pad make 100 bytes of values.
const PAD: &str = "blockwire-failover-pad-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmn";
const _: () = assert!(PAD.len() == 84, "k, v and pad make 100 bytes");
/// How long the failover window lasts after the kill.
const WINDOW: Duration = Duration::from_secs(1);
/// Tries of one commit before the run gives up.
const ATTEMPTS: u32 = 1000;

/// Arguments of `blockwire-bench failover`.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Transport of every link (tcp, shm or rdma).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// Rows loaded (about 100 bytes each): what the restarted node copies.
    #[arg(long, default_value_t = 200_000)]
    pub rows: u64,
    /// The data node killed and restarted (1, the president, or 2).
    #[arg(long, default_value_t = 2)]
    pub victim: u32,
    /// Seconds of load before the kill.
    #[arg(long, default_value_t = 1.0)]
    pub before: f64,
    /// Seconds the victim stays down.
    #[arg(long, default_value_t = 2.0)]
    pub down: f64,
    /// Seconds of load after the victim serves again.
    #[arg(long, default_value_t = 1.0)]
    pub after: f64,
    /// Directory for failover.svg and failover.csv.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Where the data nodes run and how they wait.
    #[command(flatten)]
    pub engine: cluster::EngineArgs,
}

/// The phases of the run, each with its latency histogram.
const PHASES: [&str; 5] = ["before the kill", "failover window (1 s after the kill)", "victim down", "victim copying", "after it serves"];

/// What the load saw.
struct Run {
    /// Commits per bucket.
    buckets: Vec<u64>,
    phases: Vec<Histogram<u64>>,
    kill: Duration,
    restart: Duration,
    serving: Option<Duration>,
    end: Duration,
    first_after_kill: Option<Duration>,
    first_on_victims_partition: Option<Duration>,
    retries: u64,
    /// Per storage instance of the restarted node: (rows, bytes, seconds) it logged.
    copies: Vec<(u64, u64, f64)>,
}

/// Runs `blockwire-bench failover`.
pub fn run(args: &FailoverArgs) -> R<()> {
    if !matches!(args.victim, 1 | 2) {
        return Err(format!("--victim {}: 1 or 2", args.victim));
    }
    for (name, v) in [("--before", args.before), ("--down", args.down), ("--after", args.after)] {
        if !(v.is_finite() && v > 0.0 && v < 3600.0) {
            return Err(format!("{name} {v}: seconds, more than 0 and under an hour"));
        }
    }
    if args.rows == 0 {
        return Err("--rows must be at least 1".into());
    }
    let transports = cluster::transports("failover", &[args.transport])?;
    let Some(&t) = transports.first() else { unreachable!("one transport was asked") };
    let program = Program::find(args.engine.datanode.as_deref())?;
    let cpus = Placement::from_args(args.engine.cpus.as_deref())?;
    println!(
        "blockwire-bench failover: {} over {}, {} rows of ~100 B, data node {} killed after {} s, started again after {} s more\n  placement: {}",
        program.name(),
        t.name(),
        args.rows,
        args.victim,
        args.before,
        args.down,
        Placement::describe(cpus)
    );
    if let Some(p) = cpus {
        crate::pin(p.driver);
    }
    let spec = ClusterSpec {
        command: "failover",
        transport: t,
        spin_us: args.engine.spin_us,
        memory_bytes: cluster::memory_bytes_for(args.rows * 2),
        partitions: PARTITIONS,
        timeout: Duration::from_secs(30),
        program: &program,
        nodes_cpus: cpus.map(|p| p.nodes),
        data_dir: None,
        gcp_interval_ms: cluster::GCP_INTERVAL_MS,
        writer: false,
    };
    let run = cluster::run_on_cluster_nodes(&spec, |s, nodes| measure(args, s, nodes))?;
    print_run(args, &run)?;
    if let Some(dir) = &args.engine.hgrm_dir {
        for (name, h) in PHASES.iter().zip(&run.phases) {
            report::write_case_hgrm(dir, "failover_", name, h)?;
        }
    }
    Ok(())
}

fn table_def() -> TableDef {
    let col = |name: &str, ty| Column { name: name.into(), ty, nullable: false };
    TableDef {
        name: "failover_rows".into(),
        columns: vec![col("k", ColumnType::I64), col("v", ColumnType::I64), col("pad", ColumnType::Varchar { max: 100 })],
        primary_key: vec!["k".into()],
        partition_key: None,
        partitions: Some(PARTITIONS),
        read_backup: false,
        indexes: Vec::new(),
    }
}

fn load(s: &mut Session<'_>, table: &Arc<Table>, rows: u64) -> R<()> {
    let mut k = 0;
    while k < rows {
        let mut tx = s.begin();
        for key in k..(k + LOAD_BATCH).min(rows) {
            let values = [("k", Value::I64(key as i64)), ("v", Value::I64(0)), ("pad", Value::Text(PAD.into()))];
            tx.insert(table, &values).map_err(client_error("loading"))?;
        }
        s.execute(&mut tx, Exec::Commit).map_err(client_error("loading"))?;
        k += LOAD_BATCH;
    }
    Ok(())
}

/// The partition of key `k`.
fn partition_of(table: &Table, k: i64) -> R<u32> {
    let key = engine::row::encode_key(table, &[Value::I64(k)]).map_err(|e| e.to_string())?;
    let prefix = engine::row::check_key(table, &key).map_err(|e| e.to_string())?;
    Ok(engine::row::partition_of(table, &key, prefix))
}

/// One update, retried on temporary errors until it commits.
fn update(s: &mut Session<'_>, table: &Arc<Table>, k: i64, v: i64, retries: &mut u64) -> R<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = s.begin_hinted(table, &[Value::I64(k)]).and_then(|mut tx| {
            tx.update(table, &[Value::I64(k)], &[("v", Value::I64(v))])?;
            s.execute(&mut tx, Exec::Commit)
        });
        match result {
            Ok(_) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && (e.is_temporary() || matches!(e, client::Error::NodeFailure { .. })) => {
                *retries += 1;
                std::thread::sleep(Duration::from_micros(200 * u64::from(attempt.min(10))));
            }
            Err(e) => return Err(format!("update of key {k} (try {attempt}): {e}")),
        }
    }
}

fn measure(args: &FailoverArgs, s: &mut Session<'_>, nodes: &mut DataNodes) -> R<Run> {
    let table = s.create_table(&table_def()).map_err(client_error("create table"))?;
    load(s, &table, args.rows)?;
    let layout = s.layout().clone();
    let victim = args.victim;
    let victims: Vec<bool> = (0..PARTITIONS).map(|p| layout.replicas(p).primary.node.get() == victim as u8).collect();
    let (kill_at, restart_at) = (Duration::from_secs_f64(args.before), Duration::from_secs_f64(args.before + args.down));
    let mut phases: Vec<Histogram<u64>> = PHASES.iter().map(|_| report::histogram()).collect();
    let mut buckets = Vec::new();
    let (mut killed, mut restarted, mut serving) = (false, false, None);
    let (mut first_after_kill, mut first_on_victims, mut retries) = (None, None, 0u64);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let start = Instant::now();
    let mut v = 0i64;
    loop {
        let now = start.elapsed();
        if !killed && now >= kill_at {
            nodes.kill_node(victim)?;
            killed = true;
        }
        if killed && !restarted && now >= restart_at {
            nodes.start_node(victim)?;
            restarted = true;
        }
        if restarted && serving.is_none() && s.serving_data_nodes().iter().any(|n| u32::from(n.get()) == victim) {
            serving = Some(start.elapsed());
        }
        if let Some(at) = serving {
            if now >= at + Duration::from_secs_f64(args.after) {
                break;
            }
        }
        if restarted && serving.is_none() && now >= restart_at + Duration::from_secs(300) {
            return Err(format!("data node {victim} did not serve again within 300 s of its restart"));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = (rng % args.rows) as i64;
        v += 1;
        let began = start.elapsed();
        update(s, &table, k, v, &mut retries)?;
        let done = start.elapsed();
        let phase = match (killed, restarted, serving) {
            (false, ..) => 0,
            (true, _, _) if began < kill_at + WINDOW => 1,
            (true, false, _) => 2,
            (true, true, None) => 3,
            (true, true, Some(_)) => 4,
        };
        report::record(&mut phases[phase], done - began);
        let bucket = (done.as_nanos() / BUCKET.as_nanos()) as usize;
        if buckets.len() <= bucket {
            buckets.resize(bucket + 1, 0);
        }
        buckets[bucket] += 1;
        if killed && first_after_kill.is_none() {
            first_after_kill = Some(done - kill_at);
        }
        if killed && first_on_victims.is_none() && victims[partition_of(&table, k)? as usize] {
            first_on_victims = Some(done - kill_at);
        }
    }
    let copies = nodes
        .notable("every partition of this instance copied")
        .into_iter()
        .flatten()
        .filter_map(|(_, line)| Some((field(&line, "rows")? as u64, field(&line, "bytes")? as u64, field(&line, "seconds")?)))
        .collect();
    Ok(Run {
        buckets,
        phases,
        kill: kill_at,
        restart: restart_at,
        serving,
        end: start.elapsed(),
        first_after_kill,
        first_on_victims_partition: first_on_victims,
        retries,
        copies,
    })
}

/// The number after `name=` in a log line.
fn field(line: &str, name: &str) -> Option<f64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split(|c: char| c.is_whitespace()).next()?.parse().ok()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

fn print_run(args: &FailoverArgs, run: &Run) -> R<()> {
    println!("\ncommits/s, one column per 100 ms (K kill, R restart, S serving again):");
    print!("{}", text_plot(run));
    println!("\nfailover");
    println!("  kill -> first commit on a partition whose primary died: {}", ms(run.first_on_victims_partition));
    println!("  kill -> first commit anywhere:                          {}", ms(run.first_after_kill));
    println!("  restart -> serving again (the link's reconnect included): {}", ms(run.serving.map(|s| s - run.restart)));
    println!("  commits retried after a temporary error: {}", run.retries);
    println!("\ncommit latency (us), one in flight, each timed over its retries");
    println!("{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}", "phase", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max");
    for (name, h) in PHASES.iter().zip(&run.phases) {
        if h.is_empty() {
            println!("{name:<44} {:>9}", 0);
        } else {
            println!("{name:<44} {}", LatencyRow::from_histogram(name, h).cells(9));
        }
    }
    let (rows, bytes) = run.copies.iter().fold((0, 0), |(r, b), c| (r + c.0, b + c.1));
    let seconds = run.copies.iter().map(|c| c.2).fold(0.0, f64::max);
    println!("\nnode restart copy ({} storage instances logged)", run.copies.len());
    if seconds > 0.0 {
        println!(
            "  {rows} rows, {:.1} MB in {seconds:.3} s: {:.1} MB/s of rows while the load ran (target: at least 100)",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / seconds
        );
    } else {
        println!("  (the data-node program does not log its copy: run with blockwire-datanode)");
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let csv = args.out.join("failover.csv");
    let mut text = String::from("bucket_start_ms,commits,commits_per_s\n");
    for (i, c) in run.buckets.iter().enumerate() {
        let _ = writeln!(text, "{},{c},{}", i * 10, c * 100);
    }
    std::fs::write(&csv, text).map_err(|e| format!("cannot write {}: {e}", csv.display()))?;
    let svg = args.out.join("failover.svg");
    std::fs::write(&svg, svg_plot(run)).map_err(|e| format!("cannot write {}: {e}", svg.display()))?;
    println!("\nwrote {} and {}", csv.display(), svg.display());
    Ok(())
}

/// Commits/s per 100 ms column, as rows of a text chart ten lines high.
fn text_plot(run: &Run) -> String {
    let columns: Vec<u64> = run.buckets.chunks(10).map(|c| c.iter().sum::<u64>() * 10).collect();
    let top = columns.iter().copied().max().unwrap_or(1).max(1);
    let mut out = String::new();
    for level in (1..=10).rev() {
        let _ = write!(out, "{:>9} |", if level == 10 { top.to_string() } else { String::new() });
        for c in &columns {
            out.push(if *c * 10 >= top * level { '#' } else { ' ' });
        }
        out.push('\n');
    }
    let mark = |d: Duration| (d.as_millis() / 100) as usize;
    let mut axis: Vec<char> = vec!['-'; columns.len()];
    for (at, c) in [(Some(run.kill), 'K'), (Some(run.restart), 'R'), (run.serving, 'S')] {
        if let Some(i) = at.map(mark).filter(|i| *i < axis.len()) {
            axis[i] = c;
        }
    }
    let _ = writeln!(out, "{:>9} +{}", 0, axis.into_iter().collect::<String>());
    let _ = writeln!(out, "{:>11}0 s{:>width$.1} s", "", run.end.as_secs_f64(), width = columns.len().saturating_sub(3));
    out
}

/// The commits/s line over time with the kill, restart and serving marks, as SVG.
fn svg_plot(run: &Run) -> String {
    let (w, h, pad) = (1000.0, 360.0, 50.0);
    let n = run.buckets.len().max(1) as f64;
    let top = run.buckets.iter().copied().max().unwrap_or(1).max(1) as f64 * 100.0;
    let x = |i: f64| pad + i / n * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / top * (h - 2.0 * pad);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n");
    let _ = writeln!(s, "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    let _ = writeln!(s, "<text x=\"{pad}\" y=\"20\">blockwire-bench failover: commits/s in 10 ms buckets</text>");
    let points: Vec<String> = run.buckets.iter().enumerate().map(|(i, c)| format!("{:.1},{:.1}", x(i as f64), y(*c as f64 * 100.0))).collect();
    let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"1\" points=\"{}\"/>", points.join(" "));
    let _ = writeln!(s, "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>", h - pad, w - pad, h - pad);
    let _ = writeln!(s, "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>", h - pad);
    let _ = writeln!(s, "<text x=\"5\" y=\"{}\">{top:.0}</text>", pad + 4.0);
    let _ = writeln!(s, "<text x=\"{}\" y=\"{}\">{:.2} s</text>", w - pad - 20.0, h - pad + 20.0, run.end.as_secs_f64());
    for (at, label, colour) in [(Some(run.kill), "kill", "red"), (Some(run.restart), "restart", "orange"), (run.serving, "serving", "green")] {
        if let Some(at) = at {
            let xi = x(at.as_secs_f64() / BUCKET.as_secs_f64());
            let _ = writeln!(s, "<line x1=\"{xi:.1}\" y1=\"{pad}\" x2=\"{xi:.1}\" y2=\"{}\" stroke=\"{colour}\" stroke-dasharray=\"4\"/>", h - pad);
            let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{}\" fill=\"{colour}\">{label}</text>", xi + 3.0, pad + 12.0);
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_field_is_read_by_name() {
        let line = "INFO engine::storage::copy: every partition of this instance copied partitions=12 rows=1306 bytes=338154 seconds=2.31 mb_per_s=0.14";
        assert_eq!(field(line, "rows"), Some(1306.0));
        assert_eq!(field(line, "bytes"), Some(338_154.0));
        assert_eq!(field(line, "seconds"), Some(2.31));
        assert_eq!(field(line, "missing"), None);
    }

    #[test]
    fn the_plots_mark_the_kill_restart_and_serving() {
        let run = Run {
            buckets: vec![5; 300],
            phases: Vec::new(),
            kill: Duration::from_millis(1000),
            restart: Duration::from_millis(2000),
            serving: Some(Duration::from_millis(2500)),
            end: Duration::from_secs(3),
            first_after_kill: None,
            first_on_victims_partition: None,
            retries: 0,
            copies: Vec::new(),
        };
        let text = text_plot(&run);
        let axis = text.lines().nth(10).unwrap();
        assert_eq!(axis.find('K').unwrap() + 10, axis.find('R').unwrap());
        assert_eq!(axis.find('R').unwrap() + 5, axis.find('S').unwrap());
        let svg = svg_plot(&run);
        assert!(svg.contains(">kill<") && svg.contains(">restart<") && svg.contains(">serving<"));
    }
}
