//! `blockwire-bench commit`: what keeping the data on disk costs a commit, measured in one run
//! beside the floor the file system sets (the durability issue's figures: ratios, not lone
//! times, as everywhere in this binary).
//!
//! On the cluster of [`crate::cluster`] with a `data_dir` per data node under one root and the
//! checkpoint block (a global checkpoint every `gcp_interval_ms`, closed at once when a
//! disk-durable commit waits: group commit across the cluster), the run creates
//! `commit_rows(k i64 key, v i64, pad varchar(100))`, [`PAD`] making a row about 100 bytes of
//! values, and measures:
//! - the floor: a 512-byte write at offset 0 of a file in the same root, then its fdatasync,
//!   `--count` times (HDR histogram); 1 / its mean is the rate of one sync per commit;
//! - one-row insert transactions, one in flight, acknowledged once every replica holds them
//!   in memory (`Durability::Memory`) and once their global checkpoint is fdatasynced on every
//!   data node (`Durability::Disk`): HDR histograms, and disk p50 / fdatasync p50;
//! - disk-durable one-row writes with 1, 16 and 256 in flight from one session (send/poll;
//!   each slot writes its own key, so none waits for another's lock): commits/s beside one
//!   sync per commit, and commits per GCI (the group commit). The redo log's bytes per second
//!   are not shown: the storage block counts them (`redo_bytes`), but a `STATS_CONF` carries
//!   named counters without their names, and `write_bytes` of `/proc/PID/io` read about a
//!   megabyte per round of 272 bytes where this was written (whole page-cache folios dirtied,
//!   it seems), not the bytes logged;
//! - recovery: a second cluster on its own directories, loaded with `--recovery-rows` rows
//!   (memory-durable batches, then one disk-durable update of row 0, whose saved GCI covers
//!   every batch before it); both data nodes SIGKILLed and started again from their files;
//!   the time from the spawn until a committed read of row 0 finds that update (and until
//!   each node logs that it serves, when its program logs: `blockwire-datanode` does, this
//!   binary's `kv-node` does not), beside the rows, the bytes of the data directories and the
//!   log records each node replayed. Every row is then counted by a scan: a missing one fails
//!   the run.
//!
//! Nothing stays behind: the root (`--dir`, else a new directory under the system's temporary
//! one) is removed afterwards, or with `--dir`, only what the run made in it.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{
    Durability, Exec, LockMode, Outcome, ScanRequest, Session, Table, TableDef,
    Transaction, Value,
};
use hdrhistogram::Histogram;

use crate::cluster::{self, client_error, ClusterSpec, DataNodes, Placement, Program, API_NODE, R};
use crate::report::{self, latency_case, LatencyRow};
use crate::Transport;

/// Partitions of the table.
const PARTITIONS: u32 = 8;
/// What every row puts in `pad`: 84 bytes, so k, v and pad are 100 bytes of values.
const PAD: &str =
    "blockwire-commit-pad-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmnop";
const _: () = assert!(PAD.len() == 84, "k, v and pad make 100 bytes");
/// Transactions in flight in the throughput cases.
const IN_FLIGHT: [usize; 3] = [1, 16, 256];
/// The throughput cases' keys: slot `i` writes key `SLOT_KEYS + i` (the latency series insert
/// keys from 0 up, far below).
const SLOT_KEYS: i64 = 1 << 40;
/// Rows per loading transaction, and loading transactions in flight.
const LOAD_BATCH: u64 = 100;
const LOAD_IN_FLIGHT: usize = 16;
/// Longest wait for a committed read after the restart (the log replay included).
const RESTART_WAIT: Duration = Duration::from_secs(600);
/// Bytes the fdatasync probe writes each time.
const PROBE_BYTES: usize = 512;
/// What the run makes under the root: the probe file and the two clusters' directories.
const PROBE_FILE: &str = "fdatasync-probe";
const COMMITS_DIR: &str = "commits";
const RECOVERY_DIR: &str = "recovery";

/// Arguments of `blockwire-bench commit`.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// Transport of every link (tcp, shm or rdma).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// Measured commits (fdatasyncs for the floor) per latency series.
    #[arg(long, default_value_t = 2_000)]
    pub count: u64,
    /// Commits (fdatasyncs) run and discarded before each latency series.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Seconds of each throughput case.
    #[arg(long, default_value_t = 2.0)]
    pub throughput_seconds: f64,
    /// Root of the data directories and of the fdatasync probe: the file system measured
    /// (default: a new directory under the system's temporary one, removed afterwards; of a
    /// given one, only what the run made in it is removed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rows loaded (about 100 bytes each) before both data nodes are killed and restarted.
    #[arg(long, default_value_t = 200_000)]
    pub recovery_rows: u64,
    /// The checkpoint block's interval between global checkpoints, in milliseconds.
    #[arg(long, default_value_t = cluster::GCP_INTERVAL_MS)]
    pub gcp_interval_ms: u64,
    /// Where the data nodes run and how they wait.
    #[command(flatten)]
    pub engine: cluster::EngineArgs,
}

/// Runs `blockwire-bench commit`.
pub fn run(args: &CommitArgs) -> R<()> {
    if args.count == 0 {
        return Err("--count must be at least 1".into());
    }
    if !(args.throughput_seconds.is_finite() && args.throughput_seconds > 0.0) {
        return Err(format!("--throughput-seconds {}: more than 0", args.throughput_seconds));
    }
    if args.recovery_rows == 0 {
        return Err("--recovery-rows must be at least 1".into());
    }
    if !(1..=60_000).contains(&args.gcp_interval_ms) {
        return Err(format!("--gcp-interval-ms {}: from 1 to 60000", args.gcp_interval_ms));
    }
    let transports = cluster::transports("commit", &[args.transport])?;
    let Some(&t) = transports.first() else { unreachable!("one transport was asked") };
    let program = Program::find(args.engine.datanode.as_deref())?;
    let cpus = Placement::from_args(args.engine.cpus.as_deref())?;
    let scratch = Scratch::new(args.dir.as_deref())?;
    print_header(args, &program, cpus, &scratch.root);
    if let Some(p) = cpus {
        // The client's links (and their manager thread, started later) run here too.
        crate::pin(p.driver);
    }
    let nodes_cpus = cpus.map(|p| p.nodes);
    let commits = run_commits(args, t, &program, nodes_cpus, &scratch.root)?;
    print_commits(args, t, &program, &commits);
    let recovered = run_recovery(args, t, &program, nodes_cpus, &scratch.root.join(RECOVERY_DIR))?;
    print_recovery(t, &recovered);
    Ok(())
}

/// The run's root and what it made there; removed when dropped.
#[derive(Debug)]
struct Scratch {
    /// Absolute (the cluster file names directories under it).
    root: PathBuf,
    /// Made by the run (removed whole) rather than given.
    made: bool,
}

impl Scratch {
    fn new(given: Option<&Path>) -> R<Scratch> {
        let (root, made) = match given {
            Some(dir) => (dir.to_path_buf(), false),
            None => {
                let name = format!("blockwire-bench-commit-data-{}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        if made {
            let _ = std::fs::remove_dir_all(&root);
        }
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let root =
            root.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", root.display()))?;
        if root.to_str().is_none() {
            return Err(format!("--dir {}: not UTF-8 (the cluster file names it)", root.display()));
        }
        if !made {
            // Checked before a Scratch exists: its drop must never remove what was there.
            for name in [PROBE_FILE, COMMITS_DIR, RECOVERY_DIR] {
                if root.join(name).symlink_metadata().is_ok() {
                    return Err(format!(
                        "--dir {}: {name} is there already (the run makes it, and removes it \
                         afterwards); give a directory without it",
                        root.display()
                    ));
                }
            }
        }
        Ok(Scratch { root, made })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.made {
            let _ = std::fs::remove_dir_all(&self.root);
            return;
        }
        let _ = std::fs::remove_file(self.root.join(PROBE_FILE));
        for name in [COMMITS_DIR, RECOVERY_DIR] {
            let _ = std::fs::remove_dir_all(self.root.join(name));
        }
    }
}

/// The file system `path` is on, by `statfs` magic number.
fn file_system(path: &Path) -> String {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else { return "unknown".into() };
    // SAFETY: statfs is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `st` a writable statfs, both alive for
    // the call, which writes nothing else.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as i64 {
        0xEF53 => "ext4 (or ext2/3)".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x0102_1994 => "tmpfs (fdatasync does nothing there: the floor is not a disk's)".into(),
        other => format!("statfs type {other:#x}"),
    }
}

fn print_header(args: &CommitArgs, program: &Program, cpus: Option<Placement>, root: &Path) {
    println!(
        "commit: table commit_rows(k i64 key, v i64, pad varchar(100)), rows of {} bytes of \
         values, {PARTITIONS} partitions, 2 data nodes in one node group (2 replicas), each \
         with a data_dir under {} ({}), gcp_interval_ms {}, redo log and checkpoints at the \
         engine's defaults; one client thread joined as API node {API_NODE}; data nodes: {}; \
         spin {} us",
        16 + PAD.len(),
        root.display(),
        file_system(root),
        args.gcp_interval_ms,
        program.name(),
        args.engine.spin_us
    );
    println!(
        "memory durability: acknowledged once both replicas hold the commit in memory; disk \
         durability: once its global checkpoint (GCI) is fdatasynced on both data nodes, the \
         open GCI being closed at once when a disk-durable commit waits (group commit); floor: \
         write {PROBE_BYTES} bytes at offset 0 of a file in the same directory, then \
         fdatasync; one sync per commit = 1 / mean floor time"
    );
    println!("{}", Placement::describe(cpus));
}

/// `commit_rows(k i64 key, v i64, pad varchar(100))`.
fn table_def() -> TableDef {
    crate::kv::key_value_def("commit_rows", 100, false)
}

/// The cluster of a phase: data directories under `root`.
fn spec<'a>(
    args: &CommitArgs,
    t: Transport,
    program: &'a Program,
    nodes_cpus: Option<[usize; 2]>,
    root: &Path,
    rows: u64,
) -> ClusterSpec<'a> {
    ClusterSpec {
        command: "commit",
        transport: t,
        spin_us: args.engine.spin_us,
        memory_bytes: cluster::memory_bytes_for(rows),
        partitions: PARTITIONS,
        // A disk-durable commit answers within a global checkpoint round (milliseconds).
        timeout: Duration::from_secs(10),
        program,
        nodes_cpus,
        data_dir: Some(root.to_path_buf()),
        gcp_interval_ms: args.gcp_interval_ms,
        writer: false,
    }
}

/// `f` until it succeeds, retrying temporary errors (what a cluster still starting or
/// restoring answers) until `deadline`.
fn retry<T>(what: &str, deadline: Instant, mut f: impl FnMut() -> client::Result<T>) -> R<T> {
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_temporary() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// Creates the table (retried while the new cluster still starts).
fn create_table(s: &mut Session<'_>) -> R<Arc<Table>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    retry("create table commit_rows", deadline, || s.create_table(&table_def()))
}

/// A transaction writing one row (inserting it, or with `replace` inserting or replacing it)
/// with key `k`, hinted to its primary node, acknowledged as `durability` says.
fn one_row(
    s: &mut Session<'_>,
    table: &Arc<Table>,
    k: i64,
    replace: bool,
    durability: Durability,
) -> R<Transaction> {
    let mut tx = s.begin_hinted(table, &[Value::I64(k)]).map_err(client_error("begin"))?;
    let values = [("k", Value::I64(k)), ("v", Value::I64(k)), ("pad", Value::Text(PAD.into()))];
    if replace {
        tx.write(table, &values).map_err(client_error("write"))?;
    } else {
        tx.insert(table, &values).map_err(client_error("insert"))?;
    }
    tx.set_durability(durability);
    Ok(tx)
}

/// Executes `tx` with its commit: committed, or an error naming `what`.
fn commit(s: &mut Session<'_>, tx: &mut Transaction, what: &str) -> R<()> {
    match s.execute(tx, Exec::Commit).map_err(client_error(what))? {
        Outcome::Committed => Ok(()),
        other => Err(format!("{what}: the transaction ended {other:?}, not committed")),
    }
}

/// Takes one completion into its transaction: an error unless it committed (with a GCI when
/// disk-durable).
fn committed(tx: &mut Transaction, c: client::Completion, durability: Durability) -> R<()> {
    match tx.absorb(c).map_err(client_error("commit"))? {
        Outcome::Committed if durability == Durability::Disk && tx.gci() == 0 => {
            Err("a disk-durable commit was acknowledged without its GCI".into())
        }
        Outcome::Committed => Ok(()),
        other => Err(format!("a transaction ended {other:?}, not committed")),
    }
}

/// `warmup` discarded then `count` timed runs of a 512-byte write at offset 0 of `path` and
/// its fdatasync.
fn fdatasync_floor(path: &Path, warmup: u64, count: u64) -> R<Histogram<u64>> {
    let failed = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| failed("cannot create", e))?;
    let mut bytes = [0x5au8; PROBE_BYTES];
    // The block exists before the first sync, as a redo file's pages do (they are written
    // when the file is made).
    file.write_all_at(&bytes, 0).map_err(|e| failed("cannot write", e))?;
    file.sync_all().map_err(|e| failed("cannot fsync", e))?;
    let h = latency_case(warmup, count, |i| {
        bytes[0] = i as u8;
        file.write_all_at(&bytes, 0)?;
        file.sync_data()
    })
    .map_err(|e| failed("write + fdatasync of", e))?;
    drop(file);
    std::fs::remove_file(path).map_err(|e| failed("cannot remove", e))?;
    Ok(h)
}

/// One throughput case: disk-durable commits per second with a number in flight.
#[derive(Debug)]
struct Rate {
    in_flight: usize,
    per_second: f64,
    /// Commits acknowledged within the case.
    commits: u64,
    /// Distinct GCIs those went into.
    gcis: usize,
}

/// What the commit cluster measured.
#[derive(Debug)]
struct Commits {
    floor: Histogram<u64>,
    memory: Histogram<u64>,
    disk: Histogram<u64>,
    rates: Vec<Rate>,
}

fn run_commits(
    args: &CommitArgs,
    t: Transport,
    program: &Program,
    nodes_cpus: Option<[usize; 2]>,
    root: &Path,
) -> R<Commits> {
    // The latency series insert; the throughput cases rewrite one row per slot.
    let rows = 2 * (args.warmup + args.count) + 256;
    let spec = spec(args, t, program, nodes_cpus, &root.join(COMMITS_DIR), rows);
    cluster::run_on_cluster(&spec, |s, _| {
        let table = create_table(s)?;
        // Measured while the cluster runs, so the floor sees the same disk traffic (the
        // global checkpoints of an idle cluster) the commits do.
        let floor = fdatasync_floor(&root.join(PROBE_FILE), args.warmup, args.count)?;
        let mut next = 0;
        let mut series = |durability| {
            latency_case(args.warmup, args.count, |_| {
                let k = next;
                next += 1;
                let mut tx = one_row(s, &table, k, false, durability)?;
                commit(s, &mut tx, "one-row insert")?;
                if durability == Durability::Disk && tx.gci() == 0 {
                    return Err("a disk-durable commit was acknowledged without its GCI".into());
                }
                Ok::<(), String>(())
            })
        };
        let memory = series(Durability::Memory)?;
        let disk = series(Durability::Disk)?;
        let mut rates = Vec::new();
        for n in IN_FLIGHT {
            rates.push(throughput(s, &table, n, args.throughput_seconds)?);
        }
        Ok(Commits { floor, memory, disk, rates })
    })
}

/// `in_flight` disk-durable one-row writes at once for `seconds` (on each acknowledgement the
/// slot sends its next), slot `i` always on key `SLOT_KEYS + i`.
fn throughput(s: &mut Session<'_>, table: &Arc<Table>, in_flight: usize, seconds: f64) -> R<Rate> {
    let mut open: HashMap<u64, (usize, Transaction)> = HashMap::with_capacity(in_flight);
    let send = |s: &mut Session<'_>, open: &mut HashMap<u64, (usize, Transaction)>, slot: usize| {
        let mut tx = one_row(s, table, SLOT_KEYS + slot as i64, true, Durability::Disk)?;
        s.send(&mut tx, Exec::Commit).map_err(client_error("send"))?;
        open.insert(tx.id(), (slot, tx));
        Ok::<(), String>(())
    };
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let give_up = end + Duration::from_secs(10);
    for slot in 0..in_flight {
        send(s, &mut open, slot)?;
    }
    let (mut commits, mut gcis) = (0u64, HashSet::new());
    while !open.is_empty() {
        if Instant::now() > give_up {
            return Err(format!("{} commits unanswered 10 s after the case", open.len()));
        }
        for c in s.poll(Duration::from_millis(10)) {
            let Some((slot, mut tx)) = open.remove(&c.tx) else { continue };
            committed(&mut tx, c, Durability::Disk)?;
            if Instant::now() < end {
                commits += 1;
                gcis.insert(tx.gci());
                send(s, &mut open, slot)?;
            }
        }
    }
    let per_second = commits as f64 / seconds;
    Ok(Rate { in_flight, per_second, commits, gcis: gcis.len() })
}

/// Mean of a histogram of nanoseconds, in seconds.
fn mean_seconds(h: &Histogram<u64>) -> f64 {
    h.mean() / 1e9
}

/// The two ratios the run is for: disk commit p50 / floor p50, and commits/s at the most in
/// flight / one sync per commit.
fn ratios(c: &Commits) -> (f64, f64) {
    let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64;
    let latency = p50(&c.disk) / p50(&c.floor).max(1.0);
    let one_sync = 1.0 / mean_seconds(&c.floor).max(1e-9);
    let most = c.rates.iter().max_by_key(|r| r.in_flight).map_or(0.0, |r| r.per_second);
    (latency, most / one_sync)
}

fn print_commits(args: &CommitArgs, t: Transport, program: &Program, c: &Commits) {
    println!();
    println!(
        "{}: data nodes 1 and 2 ({} processes), API node {API_NODE} (this process), every link \
         {}; {} per latency series after {} warm-up; {} s per throughput case",
        t.name(),
        program.peer(),
        t.name(),
        args.count,
        args.warmup,
        args.throughput_seconds
    );
    let floor = LatencyRow::from_histogram("fdatasync, 512 bytes at offset 0 (raw)", &c.floor);
    let mut rows = vec![floor.clone()];
    for (h, how) in [(&c.memory, "memory"), (&c.disk, "disk")] {
        let case = format!("{} commit, 1-row insert, {how} durability", t.name());
        rows.push(LatencyRow::from_histogram(&case, h).against(&floor));
    }
    if let Some(dir) = &args.engine.hgrm_dir {
        for (row, h) in rows.iter().zip([&c.floor, &c.memory, &c.disk]) {
            if let Err(e) = report::write_case_hgrm(dir, "commit_", &row.case, h) {
                eprintln!("blockwire-bench: {e}");
            }
        }
    }
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  vs raw fdatasync (p50)",
        "latency (us)", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for r in &rows {
        let ratio = r.reference.as_ref().map_or(String::new(), |(_, x)| format!("{x:.2}x"));
        println!("{:<48} {}  {ratio}", r.case, r.cells(9));
    }
    let one_sync = 1.0 / mean_seconds(&c.floor).max(1e-9);
    println!(
        "{:<48} {:>12} {:>12}  vs one sync per commit",
        "disk-durable 1-row writes", "commits/s", "commits/GCI"
    );
    for r in &c.rates {
        println!(
            "{:<48} {:>12.0} {:>12.2}  {:.2}x",
            format!("{} disk commit, {} in flight", t.name(), r.in_flight),
            r.per_second,
            r.commits as f64 / r.gcis.max(1) as f64,
            r.per_second / one_sync
        );
    }
    println!("{:<48} {:>12.0}", "one sync per commit (1 / mean raw fdatasync)", one_sync);
    println!(
        "redo MB/s: not measured (the data nodes' stats carry their counters without names; \
         write_bytes of /proc/PID/io is not the bytes logged: see commit.rs)"
    );
    let (latency, rate) = ratios(c);
    println!("ratio disk commit p50 / raw fdatasync p50: {latency:.2}x");
    println!(
        "ratio disk commits/s at {} in flight / one sync per commit: {rate:.2}x",
        IN_FLIGHT[IN_FLIGHT.len() - 1]
    );
}

/// What the recovery cluster measured.
#[derive(Debug)]
struct Recovered {
    rows: u64,
    load: Duration,
    dir: DirBytes,
    /// Per data node: log records replayed by its storage instances (None: not logged).
    replayed: Vec<Option<u64>>,
    /// Per data node: from its spawn until it logged that it serves (None: not logged).
    serves: Vec<Option<Duration>>,
    /// From the spawn of both data nodes until a committed read found the last update.
    first_read: Duration,
}

fn run_recovery(
    args: &CommitArgs,
    t: Transport,
    program: &Program,
    nodes_cpus: Option<[usize; 2]>,
    root: &Path,
) -> R<Recovered> {
    let rows = args.recovery_rows;
    let spec = spec(args, t, program, nodes_cpus, root, rows);
    cluster::run_on_cluster_nodes(&spec, |s, nodes| {
        let table = create_table(s)?;
        let started = Instant::now();
        load(s, &table, rows)?;
        let load = started.elapsed();
        nodes.kill_all();
        let dir = DirBytes::of(root)?;
        let spawned = Instant::now();
        nodes.restart()?;
        read_after_restart(s, &table, spawned + RESTART_WAIT)?;
        let first_read = spawned.elapsed();
        let counted = count_rows(s, &table)?;
        if counted != rows {
            return Err(format!("{counted} rows after the restart, of {rows} committed"));
        }
        let (replayed, serves) = restore_reports(nodes);
        Ok(Recovered { rows, load, dir, replayed, serves, first_read })
    })
}

/// Inserts keys `0..rows` ([`LOAD_BATCH`] a transaction, [`LOAD_IN_FLIGHT`] transactions at
/// once, memory-durable), then sets row 0's `v` to -1 with a disk-durable commit: its GCI is
/// saved on both data nodes, and with it every GCI before, which holds every batch.
fn load(s: &mut Session<'_>, table: &Arc<Table>, rows: u64) -> R<()> {
    let mut open: HashMap<u64, Transaction> = HashMap::with_capacity(LOAD_IN_FLIGHT);
    let (mut next, mut last_answer) = (0u64, Instant::now());
    loop {
        while open.len() < LOAD_IN_FLIGHT && next < rows {
            let keys = next..(next + LOAD_BATCH).min(rows);
            let first = Value::I64(keys.start as i64);
            let mut tx = s.begin_hinted(table, &[first]).map_err(client_error("begin"))?;
            for k in keys.clone() {
                let values = [
                    ("k", Value::I64(k as i64)),
                    ("v", Value::I64(0)),
                    ("pad", Value::Text(PAD.into())),
                ];
                tx.insert(table, &values).map_err(client_error("insert"))?;
            }
            s.send(&mut tx, Exec::Commit).map_err(client_error("send"))?;
            open.insert(tx.id(), tx);
            next = keys.end;
        }
        if open.is_empty() {
            break;
        }
        if last_answer.elapsed() > Duration::from_secs(30) {
            return Err(format!("loading: {} transactions unanswered for 30 s", open.len()));
        }
        for c in s.poll(Duration::from_millis(10)) {
            let Some(mut tx) = open.remove(&c.tx) else { continue };
            committed(&mut tx, c, Durability::Memory).map_err(|e| format!("loading: {e}"))?;
            last_answer = Instant::now();
        }
    }
    let mut tx = s.begin_hinted(table, &[Value::I64(0)]).map_err(client_error("begin"))?;
    tx.update(table, &[Value::I64(0)], &[("v", Value::I64(-1))]).map_err(client_error("update"))?;
    tx.set_durability(Durability::Disk);
    commit(s, &mut tx, "the disk-durable update after loading")
}

/// Reads row 0 (committed read) until it is there with the disk-durable update, or `deadline`.
fn read_after_restart(s: &mut Session<'_>, table: &Arc<Table>, deadline: Instant) -> R<()> {
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        let attempt = (|| -> client::Result<Option<i64>> {
            let mut tx = s.begin_hinted(table, &[Value::I64(0)])?;
            let op = tx.read(table, &[Value::I64(0)], LockMode::CommittedRead)?;
            s.execute(&mut tx, Exec::Commit)?;
            Ok(tx.row(op).and_then(|r| r.get("v")).and_then(Value::as_i64))
        })();
        match attempt {
            Ok(Some(-1)) => return Ok(()),
            Ok(Some(v)) => last = format!("row 0 has v = {v}, not the update's -1"),
            Ok(None) => last = "row 0 not found".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("no committed read found row 0's update within {RESTART_WAIT:?} of the restart (last: {last})"))
}

/// Rows of `table`, counted by a full scan (retried while a data node still restores).
fn count_rows(s: &mut Session<'_>, table: &Arc<Table>) -> R<u64> {
    retry("counting the rows", Instant::now() + RESTART_WAIT, || {
        let mut n = 0;
        for row in s.scan(&ScanRequest::new(table))? {
            row?;
            n += 1;
        }
        Ok(n)
    })
}

/// `line` without terminal colour sequences.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

/// The number after `field=` in a log line.
fn log_field(line: &str, field: &str) -> Option<u64> {
    let line = plain(line);
    let at = line.find(&format!("{field}="))? + field.len() + 1;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Per data node: records replayed (summed over its storage instances' "storage restored"
/// lines) and the time from its spawn until it logged that it serves.
fn restore_reports(nodes: &DataNodes) -> (Vec<Option<u64>>, Vec<Option<Duration>>) {
    let replayed = nodes
        .notable("storage restored")
        .iter()
        .map(|lines| {
            if lines.is_empty() {
                return None;
            }
            lines.iter().map(|(_, l)| log_field(l, "replayed")).sum::<Option<u64>>()
        })
        .collect();
    let serves = nodes
        .notable("the node serves")
        .iter()
        .map(|lines| lines.first().map(|(after, _)| *after))
        .collect();
    (replayed, serves)
}

/// Bytes of a data directory root: all files, and those of the redo log and the local
/// checkpoints.
#[derive(Debug, Default)]
struct DirBytes {
    total: u64,
    redo: u64,
    checkpoints: u64,
}

impl DirBytes {
    fn of(root: &Path) -> R<DirBytes> {
        let mut bytes = DirBytes::default();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            for entry in entries.filter_map(Result::ok) {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(entry.path());
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                bytes.total += meta.len();
                if name.starts_with("redo-") {
                    bytes.redo += meta.len();
                } else if name.starts_with("lcp-") {
                    bytes.checkpoints += meta.len();
                }
            }
        }
        Ok(bytes)
    }
}

fn print_recovery(t: Transport, r: &Recovered) {
    let mb = |b: u64| format!("{:.1}", b as f64 / 1e6);
    let each = |v: &[Option<String>]| {
        v.iter().map(|x| x.clone().unwrap_or_else(|| "-".into())).collect::<Vec<_>>().join("/")
    };
    let replayed: Vec<Option<String>> =
        r.replayed.iter().map(|x| x.map(|n| n.to_string())).collect();
    let serves: Vec<Option<String>> =
        r.serves.iter().map(|x| x.map(|d| format!("{:.3}", d.as_secs_f64()))).collect();
    println!(
        "{:<48} {:>9} {:>8} {:>10} {:>9} {:>9} {:>15} {:>13} {:>12}",
        "recovery after SIGKILL of both data nodes",
        "rows",
        "load s",
        "dir MB",
        "redo MB",
        "lcp MB",
        "replayed n1/n2",
        "serves s",
        "first read s"
    );
    println!(
        "{:<48} {:>9} {:>8.2} {:>10} {:>9} {:>9} {:>15} {:>13} {:>12.3}",
        format!("{} restart from the data directories", t.name()),
        r.rows,
        r.load.as_secs_f64(),
        mb(r.dir.total),
        mb(r.dir.redo),
        mb(r.dir.checkpoints),
        each(&replayed),
        each(&serves),
        r.first_read.as_secs_f64()
    );
    println!(
        "dir MB: file sizes in both data directories after the kill (redo files are made at \
         full size; lcp: local checkpoint files); replayed: log records each node's storage replayed; serves s: from each node's \
         spawn until it logged that it serves; first read s: from the spawn until a committed \
         read found the last disk-durable update (the client's reconnection included); every \
         row was then counted by a scan"
    );
}
