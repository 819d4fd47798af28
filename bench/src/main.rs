//! `blockwire-bench`: latency histograms and streaming rates of blockwire's transports, each
//! printed beside its physical reference measured in the same run (ratios, not lone absolute
//! times: the machines these run on are shared and noisy).
//!
//! Every latency figure is an HDR histogram after a warm-up whose samples are discarded,
//! printed as p50, p90, p99, p99.9, p99.99 and max, and optionally written as `.hgrm` files and
//! JSON. `pingpong` and `stream` measure the full stack (a driver block in this process's node,
//! the peer's echo block in a `blockwire-datanode` process or, for `local`, on another block
//! thread: [`stack`]); `--raw` measures the bare transporter (registry, send buffers,
//! transport) without the block runtime ([`raw`]). `kv` measures the engine's key-value
//! operations through the client library beside their ideal (round trips by design times the
//! bare round trip) and one client thread's throughput ([`kv`]); `scan` its scans, a pushed-down
//! aggregate beside the client-side one and range scans (on every partition and pruned to one)
//! beside a key read ([`scan`]), both on the cluster of [`cluster`]; `commit` what keeping the
//! data on disk costs a commit, beside the file system's raw fdatasync, and the restart of a
//! killed cluster from its files ([`commit`]). `report` joins the JSON of
//! a set of runs into one comparison table ([`summary`]) and draws their `.hgrm` files into one
//! SVG ([`plot`]).

mod cluster;
mod commit;
mod driver;
mod failover;
mod kv;
mod limit;
mod peer;
mod plot;
mod procstat;
mod raw;
mod report;
mod scan;
mod sql;
mod stack;
mod summary;
mod topology;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use transporter::TransportKind;

use report::{LatencyRow, RateRow};

#[derive(Debug, Parser)]
#[command(
    name = "blockwire-bench",
    about = "Latency histograms and streaming rates of blockwire's transports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The physical references: cache-line ping-pong between threads, bare TCP ping-pong.
    Limit(Common),
    /// Round trips block -> runtime -> transporter -> runtime -> block and back (or, with
    /// --raw, through the bare transporter), beside the physical reference.
    Pingpong(Common),
    /// One-way streaming rate through the full stack (or --raw), beside a bare socket sending
    /// one message per write.
    Stream {
        #[command(flatten)]
        common: Common,
        /// Signals per flush: per round of the driver block (full stack), per hand-off (raw).
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// CPU used by both ends of an idle link, after the spin time (--raw only).
    Idle {
        #[command(flatten)]
        common: Common,
        /// Seconds to measure.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The comparison table of a set of runs (their --json output) and the latency plot of
    /// their .hgrm files.
    Report(ReportArgs),
    /// The engine's key-value operations (committed read, insert, update; one and 16 per
    /// transaction) through the client library against two data nodes with two replicas, each
    /// latency beside its ideal (round trips by design times the bare round trip), and the
    /// throughput of one client thread.
    Kv(kv::KvArgs),
    /// The engine's scans through the client library against two data nodes with two
    /// replicas: a pushed-down aggregate beside the same aggregate computed in the client from
    /// a full scan (rows/s), and ordered-index range scans of 1, 100 and 10,000 rows, on every
    /// partition and pruned to one, beside a one-row primary-key read (latency).
    Scan(scan::ScanArgs),
    /// The fraud-feature SQL queries (a per-card aggregate over the last hour; a CTE of
    /// per-merchant spend joined to the merchants and grouped by category) through the SQL
    /// front end against two data nodes with two replicas while a writer inserts, beside the
    /// same queries in SQLite on the same rows (latency).
    Sql(sql::SqlArgs),
    /// What keeping the data on disk costs a commit, against two data nodes with two replicas
    /// and a data directory each: raw fdatasync of the same file system beside one-row commits
    /// acknowledged in memory and on disk (latency), disk-durable commits/s with 1, 16 and 256
    /// in flight beside one sync per commit, and the time to restart both data nodes from
    /// their files after a SIGKILL.
    Commit(commit::CommitArgs),
    /// A data node's death and restart under load, against two data nodes with two replicas:
    /// commits per 10 ms across a SIGKILL and the node's restart (a text plot, an SVG and a
    /// CSV), the time from the kill to the first commit on a partition whose primary died,
    /// commit latency percentiles per phase, and the restarted node's copy rate.
    Failover(failover::FailoverArgs),
    /// Lists the transports this build measures, one per line.
    Transports,
    /// The other end of a two-process run (started by the other subcommands).
    #[command(hide = true)]
    Peer(peer::PeerArgs),
    /// A data node of a cluster file, run by the bench when no blockwire-datanode is at hand.
    #[command(hide = true)]
    NodePeer {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        node_id: u32,
    },
    /// A data node with the engine's blocks, run by `kv` and `scan` when no
    /// blockwire-datanode is at hand.
    #[command(hide = true)]
    KvNode {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        node_id: u64,
    },
    /// The other end of the cross-process cache-line ping-pong.
    #[command(hide = true)]
    LimitPeer {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        cpu: usize,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Transport to measure (local: two block threads of one node, in this process).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Measure the bare transporter, without the block runtime.
    #[arg(long)]
    raw: bool,
    /// Pingpong --raw: both ends send with `pack` and `flush` (the batching path) instead of
    /// `send_now` (written straight into the transport where it can).
    #[arg(long)]
    packed: bool,
    /// Data words per signal (the bare-socket reference sends messages of the same size).
    #[arg(long, default_value_t = 4)]
    size: usize,
    /// Bytes of one long section per signal, a multiple of 4 (pingpong; 0: none).
    #[arg(long, default_value_t = 0)]
    section_bytes: usize,
    /// Measured samples (round trips) or streamed signals.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Samples run and discarded before measuring.
    #[arg(long, default_value_t = 10_000)]
    warmup: u64,
    /// Pingpong: measure the reference and the subject this many times, alternating, each
    /// round with --count/N samples (and the whole warm-up), and pool the rounds. On a shared
    /// host whose speed drifts during a run, alternating weighs the drift on both alike; the
    /// p50 ratio of every round is printed too.
    #[arg(long, default_value_t = 1)]
    rounds: u64,
    /// Pingpong in spin mode, --raw over shm or local: after every this many round trips, run
    /// as many of the cache-line reference between the same two processes (--raw shm) or block
    /// threads (local), instead of --rounds, which starts anew for each, and print the ratio of
    /// each pair of blocks. Both then share every placement the host gives the two CPUs.
    #[arg(long)]
    interleave: Option<u64>,
    /// spin: receivers busy-poll (full stack: every spin time 1 s); sleep: receivers spin
    /// --spin-us, then block in the kernel. Default spin; not with --config.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Spin time before sleeping, in microseconds (stream, idle; full-stack sleep mode).
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// CPUs for the two ends, e.g. 0,1 (default: the first two allowed CPUs on separate cores,
    /// as the kernel's topology shows them; full stack between two processes: not pinned
    /// unless given).
    #[arg(long, value_delimiter = ',', num_args = 2)]
    cpus: Option<Vec<usize>>,
    /// Full stack over tcp or shm: a cluster file with data nodes 1 and 2 linked by the
    /// transport; node 1 runs as a blockwire-datanode process, node 2 in this one. Its spin
    /// times are used as written. Default: a file generated for the run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data-node binary for the peer (default: blockwire-datanode next to this binary,
    /// else this binary's own node runtime in a child process).
    #[arg(long)]
    datanode: Option<PathBuf>,
    /// Directory to write one `.hgrm` file per latency case into.
    #[arg(long)]
    hgrm_dir: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Directory of the runs' JSON documents: prints one comparison table.
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Directory of `.hgrm` files to plot (with --svg).
    #[arg(long)]
    hgrm_dir: Option<PathBuf>,
    /// The SVG file to write the latency plot to.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// The plot's title.
    #[arg(long, default_value = "blockwire round trips, HDR percentile distribution")]
    title: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    Tcp,
    Shm,
    Local,
    Rdma,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Shm => "shm",
            Transport::Local => "local",
            Transport::Rdma => "rdma",
        }
    }
}

/// The transports this build measures (full stack; tcp and shm also --raw).
#[cfg(feature = "rdma")]
const TRANSPORTS: &[Transport] =
    &[Transport::Tcp, Transport::Shm, Transport::Local, Transport::Rdma];
#[cfg(not(feature = "rdma"))]
const TRANSPORTS: &[Transport] = &[Transport::Tcp, Transport::Shm, Transport::Local];

/// How a receiver waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Busy-poll.
    Spin,
    /// Block in the kernel.
    Sleep,
}

/// What one run measures.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Measured samples.
    pub count: u64,
    /// Discarded samples.
    pub warmup: u64,
    /// CPUs of the two ends.
    pub cpus: (usize, usize),
}

/// Pins the calling thread to `cpu` (best effort). Not filtered through
/// `core_affinity::get_core_ids`, which lists only the CPUs of the current mask: a child
/// started by a pinned parent inherits that mask and must still be able to move.
pub fn pin(cpu: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        eprintln!("blockwire-bench: could not pin to CPU {cpu}; running unpinned");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // kv, scan and commit follow the engine's command lines (blockwire, blockwire-datanode):
    // errors exit 2.
    let engine = matches!(
        cli.command,
        Command::Kv(_)
            | Command::Scan(_)
            | Command::Sql(_)
            | Command::Commit(_)
            | Command::Failover(_)
            | Command::KvNode { .. }
    );
    let failed = if engine { 2 } else { 1 };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blockwire-bench: {e}");
            ExitCode::from(failed)
        }
    }
}

fn cpus(c: &Common) -> Result<Option<(usize, usize)>, String> {
    match c.cpus.as_deref() {
        None => Ok(None),
        Some(&[a, b]) => Ok(Some((a, b))),
        Some(_) => Err("--cpus takes two CPU numbers".into()),
    }
}

fn plan(c: &Common) -> Result<Plan, String> {
    if c.count == 0 {
        return Err("--count must be at least 1".into());
    }
    if c.size > signals::MAX_DATA_WORDS {
        return Err(format!("--size {} is over {} data words", c.size, signals::MAX_DATA_WORDS));
    }
    let max_section = signals::Limits::default().max_section_words() * 4;
    if c.section_bytes % 4 != 0 || c.section_bytes > max_section {
        return Err(format!(
            "--section-bytes {}: a multiple of 4 up to {max_section}",
            c.section_bytes
        ));
    }
    Ok(Plan {
        count: c.count,
        warmup: c.warmup,
        cpus: cpus(c)?.unwrap_or_else(topology::default_cpus),
    })
}

fn mode(c: &Common) -> Mode {
    c.mode.unwrap_or(Mode::Spin)
}

fn kind(c: &Common) -> Result<TransportKind, String> {
    if !c.raw {
        return Err(
            "the full-stack idle measure is not built; use --raw for the bare transporter".into()
        );
    }
    if c.config.is_some() {
        return Err("--config is for the full stack; --raw links two processes directly".into());
    }
    match c.transport {
        Transport::Tcp => Ok(TransportKind::Tcp),
        Transport::Shm => Ok(TransportKind::Shm),
        Transport::Rdma if TRANSPORTS.contains(&Transport::Rdma) => Ok(TransportKind::Rdma),
        other => Err(format!("transport {} is not available --raw in this build", other.name())),
    }
}

/// Bytes of one packed signal with `size` data words and a section of `section_bytes` (what
/// the bare-socket reference sends per message).
fn message_bytes(size: usize, section_bytes: usize) -> usize {
    let mut page = vec![0u32; 4 + size + section_bytes / 4 + 16];
    let data = vec![0u32; size];
    let section = vec![0u32; section_bytes / 4];
    let node = signals::NodeId::new(1).unwrap_or_else(|| unreachable!("1 is a node id"));
    let to = signals::BlockRef::new(node, signals::BlockNumber(1), signals::BlockInstance(0));
    let mut signal = signals::Signal::new(signals::gsn::PING_REQ, to, to).data(&data);
    let sections = [section.as_slice()];
    if section_bytes > 0 {
        signal = signal.sections(&sections);
    }
    let mut w = signals::BatchWriter::new(
        &mut page,
        signals::Limits::default(),
        signals::WriteOptions::default(),
    );
    match w.push(&signal) {
        Ok(()) => w.len_bytes(),
        Err(_) => signals::HEADER_BYTES + 4 * size + section_bytes,
    }
}

/// The size label of a case: data words, and the section when there is one.
fn size_label(c: &Common) -> String {
    if c.section_bytes > 0 {
        format!("{}w+{}B", c.size, c.section_bytes)
    } else {
        format!("{}w", c.size)
    }
}

fn latency(
    c: &Common,
    rows: &mut Vec<LatencyRow>,
    case: &str,
    h: &Histogram<u64>,
) -> Result<LatencyRow, String> {
    if let Some(dir) = &c.hgrm_dir {
        report::write_case_hgrm(dir, "", case, h)?;
    }
    let row = LatencyRow::from_histogram(case, h);
    rows.push(row.clone());
    Ok(row)
}

/// What [`alternate`] measured.
struct Alternated {
    /// The reference's name.
    name: &'static str,
    /// The reference, pooled over the rounds.
    reference: Histogram<u64>,
    /// The subject, pooled over the rounds.
    subject: Histogram<u64>,
    /// Each round's subject/reference p50 ratio.
    ratios: Vec<f64>,
}

/// The reference and the subject, `c.rounds` times in turn (see `--rounds`).
fn alternate(
    c: &Common,
    p: &Plan,
    mode: Mode,
    subject: &mut dyn FnMut(&Plan) -> Result<Histogram<u64>, String>,
) -> Result<Alternated, String> {
    let rounds = c.rounds.max(1);
    if rounds > p.count {
        return Err(format!("--rounds {rounds} is more than --count {}", p.count));
    }
    let each = Plan { count: p.count / rounds, ..*p };
    let (mut name, mut pooled_ref, mut pooled) = ("", report::histogram(), report::histogram());
    let mut ratios = Vec::new();
    for _ in 0..rounds {
        let (n, r) = measure_reference(c, &each, c.transport, mode)?;
        let h = subject(&each)?;
        ratios.push(h.value_at_quantile(0.5) as f64 / r.value_at_quantile(0.5).max(1) as f64);
        pooled_ref.add(&r).map_err(|e| format!("pooling the reference: {e}"))?;
        pooled.add(&h).map_err(|e| format!("pooling the rounds: {e}"))?;
        name = n;
    }
    Ok(Alternated { name, reference: pooled_ref, subject: pooled, ratios })
}

/// Prints each round's p50 ratio when there was more than one round.
fn print_rounds(c: &Common, case: &str, reference: &str, ratios: &[f64]) {
    if ratios.len() < 2 || c.json {
        return;
    }
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n > 12 {
        // Interleaved blocks: too many to list.
        println!(
            "{case} / {reference}, p50 of each of {n} pairs of blocks: median {:.2}x, \
             interquartile {:.2}x-{:.2}x, range {:.2}x-{:.2}x",
            sorted[n / 2],
            sorted[n / 4],
            sorted[3 * n / 4],
            sorted[0],
            sorted[n - 1]
        );
        return;
    }
    let list: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
    println!(
        "{case} / {reference}, p50 of each of {n} alternating rounds: {} (median {:.2}x)",
        list.join(" "),
        sorted[n / 2]
    );
}

/// Measures the physical reference for a round trip over `transport` in `mode`, on a helper
/// thread (the references pin the thread they run on; the full-stack node must not inherit it):
/// its name and histogram.
fn measure_reference(
    c: &Common,
    p: &Plan,
    transport: Transport,
    mode: Mode,
) -> Result<(&'static str, Histogram<u64>), String> {
    let (p, bytes) = (*p, message_bytes(c.size, c.section_bytes));
    let measured = std::thread::spawn(move || -> Result<(&'static str, Histogram<u64>), String> {
        let err = |e: std::io::Error| e.to_string();
        Ok(match (transport, mode) {
            (Transport::Local, Mode::Spin) => {
                ("limit cache-line 2 threads", limit::cache_line_pingpong(&p))
            }
            (Transport::Shm, Mode::Spin) => (
                "limit cache-line 2 processes",
                limit::cache_line_pingpong_processes(&p).map_err(err)?,
            ),
            (Transport::Rdma, _) => {
                ("limit ib_write_lat round trip", limit::ib_write_lat(&p, bytes).map_err(err)?)
            }
            (Transport::Local | Transport::Shm, Mode::Sleep) => {
                ("limit eventfd wake 2 threads", limit::eventfd_wake_pingpong(&p).map_err(err)?)
            }
            (_, Mode::Spin) => {
                ("limit bare tcp spin", limit::tcp_pingpong(&p, bytes, mode).map_err(err)?)
            }
            (_, Mode::Sleep) => {
                ("limit bare tcp sleep", limit::tcp_pingpong(&p, bytes, mode).map_err(err)?)
            }
        })
    })
    .join()
    .map_err(|_| "the reference measurement panicked".to_string())??;
    Ok(measured)
}

/// Says why an rdma run cannot work here, before anything is measured.
fn check_transport(transport: Transport) -> Result<(), String> {
    if transport == Transport::Rdma && TRANSPORTS.contains(&Transport::Rdma) {
        transporter::rdma_available().map_err(|why| format!("transport rdma: {why}"))?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    if let Command::Pingpong(c)
    | Command::Stream { common: c, .. }
    | Command::Idle { common: c, .. } = &cli.command
    {
        check_transport(c.transport)?;
        if c.packed && !(c.raw && matches!(cli.command, Command::Pingpong(_))) {
            return Err("--packed is for pingpong --raw".into());
        }
    }
    match cli.command {
        Command::Limit(c) => run_limit(&c),
        Command::Pingpong(c) if c.raw => raw_pingpong(&c),
        Command::Pingpong(c) => stack_pingpong(&c),
        Command::Stream { common: c, batch } => {
            if batch == 0 {
                return Err("--batch must be at least 1".into());
            }
            if c.raw {
                raw_stream(&c, batch)
            } else {
                stack_stream(&c, batch)
            }
        }
        Command::Idle { common: c, seconds } => run_idle(&c, seconds),
        Command::Report(args) => run_report(&args),
        Command::Kv(args) => kv::run(&args),
        Command::Scan(args) => scan::run(&args),
        Command::Sql(args) => sql::run(&args),
        Command::Commit(args) => commit::run(&args),
        Command::Failover(args) => failover::run(&args),
        Command::KvNode { config, node_id } => cluster::engine_node(&config, node_id),
        Command::Transports => {
            for t in TRANSPORTS {
                println!("{}", t.name());
            }
            Ok(())
        }
        Command::Peer(args) => peer::run(&args),
        Command::NodePeer { config, node_id } => stack::node_peer(&config, node_id),
        Command::LimitPeer { path, count, cpu } => {
            limit::cache_line_peer(&path, count, cpu).map_err(|e| e.to_string())
        }
    }
}

fn run_limit(c: &Common) -> Result<(), String> {
    let p = plan(c)?;
    let mut rows = Vec::new();
    latency(c, &mut rows, "limit cache-line 2 threads", &limit::cache_line_pingpong(&p))?;
    // The record of one signal of this size, its word included.
    let record = 4 + message_bytes(c.size, c.section_bytes);
    let protocol = limit::ring_protocol_pingpong(&p, record);
    latency(c, &mut rows, &format!("limit ring protocol {record}-byte records"), &protocol)?;
    let lines = limit::cache_line_pingpong_processes(&p).map_err(|e| e.to_string())?;
    latency(c, &mut rows, "limit cache-line 2 processes", &lines)?;
    let wake = limit::eventfd_wake_pingpong(&p).map_err(|e| e.to_string())?;
    latency(c, &mut rows, "limit eventfd wake 2 threads", &wake)?;
    let p2 = p;
    let futex = std::thread::spawn(move || limit::futex_wake_pingpong(&p2))
        .join()
        .map_err(|_| "the futex reference panicked".to_string())?;
    latency(c, &mut rows, "limit futex wake 2 threads", &futex)?;
    for mode in [Mode::Spin, Mode::Sleep] {
        let h = limit::tcp_pingpong(&p, message_bytes(c.size, c.section_bytes), mode)
            .map_err(|e| e.to_string())?;
        latency(c, &mut rows, &format!("limit bare tcp {mode:?}").to_lowercase(), &h)?;
    }
    let run = serde_json::json!({
        "command": "limit", "label": "limit", "placement": topology::placement(p.cpus),
    });
    emit(c, &run, &rows, &[])
}

/// Checks `--interleave` for a run it `applies` to (bare shared memory, or local) or not.
fn check_interleave(c: &Common, p: &Plan, block: u64, applies: bool) -> Result<(), String> {
    if !applies || mode(c) != Mode::Spin || c.rounds > 1 {
        return Err("--interleave is for pingpong --mode spin, --raw --transport shm or \
                    --transport local, without --rounds"
            .into());
    }
    if block == 0 || block > p.count {
        return Err(format!("--interleave {block}: from 1 to --count {}", p.count));
    }
    Ok(())
}

fn raw_pingpong(c: &Common) -> Result<(), String> {
    let p = plan(c)?;
    let kind = kind(c)?;
    let mode = mode(c);
    let mut rows = Vec::new();
    let pingpong = |p: &Plan, interleave| {
        raw::pingpong(p, kind, c.size, c.section_bytes / 4, mode, c.packed, interleave)
    };
    let (name, r, h, ratios) = match c.interleave {
        Some(block) => {
            check_interleave(c, &p, block, kind == TransportKind::Shm)?;
            let (h, interleaved) = pingpong(&p, Some(block))?;
            let Some(i) = interleaved else {
                unreachable!("an interleaved run returns its reference")
            };
            ("limit cache-line 2 processes, interleaved", i.reference, h, i.ratios)
        }
        None => {
            let Alternated { name, reference, subject, ratios } =
                alternate(c, &p, mode, &mut |p| pingpong(p, None).map(|(h, _)| h))?;
            (name, reference, subject, ratios)
        }
    };
    let reference = latency(c, &mut rows, name, &r)?;
    let mode_name = format!("{mode:?}").to_lowercase();
    let path = if c.packed { ", packed" } else { "" };
    let case = format!("raw {kind} {mode_name} {}{path}", size_label(c));
    latency(c, &mut rows, &case, &h)?;
    let last = rows.len() - 1;
    rows[last] = rows[last].clone().against(&reference);
    let run = serde_json::json!({
        "command": "pingpong", "stack": "raw", "transport": kind.to_string(),
        "label": format!("{kind} bare transporter"),
        "mode": format!("{mode:?}").to_lowercase(), "placement": topology::placement(p.cpus),
    });
    emit(c, &run, &rows, &[])?;
    print_rounds(c, &case, name, &ratios);
    Ok(())
}

/// The bare-socket stream reference, measured on a helper thread (it pins the thread it runs
/// on; a full-stack node started afterwards must not inherit that).
fn bare_stream_row(p: &Plan, bytes: usize) -> Result<RateRow, String> {
    let p = *p;
    let bare = std::thread::spawn(move || limit::tcp_stream_one_per_write(&p, bytes))
        .join()
        .map_err(|_| "the reference measurement panicked".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(RateRow {
        case: format!("limit bare tcp, one write per {bytes}-byte message"),
        per_second: bare,
        bytes_per_second: bare * bytes as f64,
        wakeups_per_1000: None,
        reference: None,
    })
}

fn raw_stream(c: &Common, batch: usize) -> Result<(), String> {
    let p = plan(c)?;
    let kind = kind(c)?;
    let bytes = message_bytes(c.size, c.section_bytes);
    let bare_row = bare_stream_row(&p, bytes)?;
    let r = raw::stream(&p, kind, c.size, batch, c.spin_us)?;
    let row = RateRow {
        case: format!(
            "raw {kind} {}w, flush every {batch} (cpu {:.2}+{:.2})",
            c.size, r.cpu_cores.0, r.cpu_cores.1
        ),
        per_second: r.per_second,
        bytes_per_second: r.per_second * bytes as f64,
        wakeups_per_1000: Some(r.wakeups_per_1000),
        reference: Some((bare_row.case.clone(), r.per_second / bare_row.per_second)),
    };
    let run = serde_json::json!({
        "command": "stream", "stack": "raw", "transport": kind.to_string(),
        "label": format!("{kind} bare transporter"), "batch": batch,
        "mode": format!("spin {}us then sleep", c.spin_us),
        "cpu_cores": [r.cpu_cores.0, r.cpu_cores.1], "placement": topology::placement(p.cpus),
    });
    emit(c, &run, &[], &[bare_row, row])
}

fn run_idle(c: &Common, seconds: u64) -> Result<(), String> {
    let p = plan(c)?;
    let kind = kind(c)?;
    let (mine, theirs) = raw::idle(kind, seconds, c.spin_us, p.cpus)?;
    if c.json {
        let doc = serde_json::json!({
            "run": { "command": "idle", "label": format!("{kind} idle") },
            "idle": { "transport": kind.to_string(), "seconds": seconds, "cpu_fraction": [mine, theirs] }
        });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
    } else {
        println!(
            "idle {kind} link over {seconds} s after {} us of spin: node 1 {:.3}% of a core, node 2 {:.3}%",
            c.spin_us,
            mine * 100.0,
            theirs * 100.0
        );
    }
    Ok(())
}

/// The full-stack plan of `c` and the mode its reference is measured in.
fn stack_plan(c: &Common) -> Result<(stack::StackPlan, Mode, String), String> {
    let transport = match c.transport {
        t @ (Transport::Tcp | Transport::Shm | Transport::Local) => t,
        Transport::Rdma if TRANSPORTS.contains(&Transport::Rdma) => Transport::Rdma,
        other => return Err(format!("transport {} is not available in this build", other.name())),
    };
    let (cluster, mode, how) = match (&c.config, c.mode) {
        (Some(path), None) => {
            let stem = path.file_stem().map_or("config".into(), |s| s.to_string_lossy().into_owned());
            (stack::ClusterFile::Given(path.clone()), Mode::Spin, stem)
        }
        (Some(_), Some(_)) => {
            return Err("--mode sets the spin times of a generated cluster file; with --config the file's spin_time_us values apply".into())
        }
        (None, mode) => {
            let mode = mode.unwrap_or(Mode::Spin);
            let how = match (mode, c.spin_us) {
                (Mode::Spin, _) => "spin".to_string(),
                (Mode::Sleep, 0) => "sleep".to_string(),
                (Mode::Sleep, us) => format!("spin {us}us then sleep"),
            };
            // A round trip shorter than the spin time never sleeps: its floor is the spin one.
            let reference_mode = if c.spin_us > 0 { Mode::Spin } else { mode };
            let cluster = stack::ClusterFile::Generated { mode, spin_us: c.spin_us };
            (cluster, reference_mode, how)
        }
    };
    let datanode = match &c.datanode {
        Some(path) if !path.is_file() => {
            return Err(format!("--datanode {}: no such file", path.display()))
        }
        Some(path) => Some(path.clone()),
        None => stack::sibling_datanode(),
    };
    let plan = stack::StackPlan {
        transport: transport.name().to_string(),
        cluster,
        datanode,
        cpus: cpus(c)?,
        data_words: c.size,
        section_words: c.section_bytes / 4,
        warmup: c.warmup,
        count: c.count,
        interleave: c.interleave,
    };
    if matches!(plan.cluster, stack::ClusterFile::Generated { mode: Mode::Spin, .. })
        && transport != Transport::Local
        && std::thread::available_parallelism().map_or(1, |n| n.get()) < 4
    {
        eprintln!(
            "blockwire-bench: note: spin mode between two nodes keeps four threads spinning (a \
             block thread and a receive thread per node) on fewer than four CPUs; the figures \
             then show the scheduler's time slices more than the transport"
        );
    }
    Ok((plan, mode, how))
}

fn stack_pingpong(c: &Common) -> Result<(), String> {
    let p = plan(c)?;
    if c.size == 0 {
        return Err("--size 0: the full-stack ping-pong carries its sequence number in data word 0; use --size 1 or more".into());
    }
    let (sp, mode, how) = stack_plan(c)?;
    let mut rows = Vec::new();
    let mut notes = None;
    let (name, r, h, ratios) = match c.interleave {
        Some(block) => {
            check_interleave(c, &p, block, c.transport == Transport::Local)?;
            let (pinged, n) = stack::pingpong(&sp)?;
            notes = Some(n);
            let Some(i) = pinged.interleaved else {
                unreachable!("an interleaved run returns its reference")
            };
            ("limit cache-line 2 threads, interleaved", i.reference, pinged.hist, i.ratios)
        }
        None => {
            let mut one = |p: &Plan| {
                let (pinged, n) =
                    stack::pingpong(&stack::StackPlan { count: p.count, ..sp.clone() })?;
                notes = Some(n);
                Ok(pinged.hist)
            };
            let Alternated { name, reference, subject, ratios } = alternate(c, &p, mode, &mut one)?;
            (name, reference, subject, ratios)
        }
    };
    let Some(notes) = notes else { unreachable!("at least one round ran") };
    let reference = latency(c, &mut rows, name, &r)?;
    let case = format!("{} {how} {}", sp.transport, size_label(c));
    latency(c, &mut rows, &case, &h)?;
    let last = rows.len() - 1;
    rows[last] = rows[last].clone().against(&reference);
    let run = serde_json::json!({
        "command": "pingpong", "stack": "full", "transport": sp.transport,
        "label": format!("{} ({how})", sp.transport), "mode": how, "peer": notes.peer,
        "cpu_cores": [notes.cpu_cores.0, notes.cpu_cores.1], "placement": stack_placement(&sp),
    });
    if !c.json {
        println!("{}", run_note(&notes));
    }
    emit(c, &run, &rows, &[])?;
    print_rounds(c, &case, name, &ratios);
    Ok(())
}

/// Where a full-stack run pinned its two ends: local always pins (its two block threads); two
/// processes only with --cpus.
fn stack_placement(sp: &stack::StackPlan) -> Option<serde_json::Value> {
    if sp.transport == Transport::Local.name() {
        return Some(topology::placement(sp.cpus.unwrap_or_else(topology::default_cpus)));
    }
    sp.cpus.map(topology::placement)
}

fn run_note(notes: &stack::RunNotes) -> String {
    let peer =
        notes.peer.as_deref().map_or("none (one process)".into(), |p| format!("{p} (node 1)"));
    format!(
        "peer: {peer}; CPU over the run: this process {:.2} cores, receiver {:.2}",
        notes.cpu_cores.0, notes.cpu_cores.1
    )
}

fn stack_stream(c: &Common, batch: usize) -> Result<(), String> {
    let p = plan(c)?;
    let (sp, _, how) = stack_plan(c)?;
    let bytes = message_bytes(c.size, c.section_bytes);
    let bare_row = bare_stream_row(&p, bytes)?;
    let r = stack::stream(&sp, batch)?;
    let row = RateRow {
        case: format!(
            "{} {how} {}w, {batch} per round (cpu {:.2}+{:.2})",
            sp.transport, c.size, r.notes.cpu_cores.0, r.notes.cpu_cores.1
        ),
        per_second: r.per_second,
        bytes_per_second: r.per_second * bytes as f64,
        wakeups_per_1000: Some(r.wakeups_per_1000),
        reference: Some((bare_row.case.clone(), r.per_second / bare_row.per_second)),
    };
    let run = serde_json::json!({
        "command": "stream", "stack": "full", "transport": sp.transport,
        "label": format!("{} ({how})", sp.transport),
        "mode": how, "batch": batch, "peer": r.notes.peer,
        "cpu_cores": [r.notes.cpu_cores.0, r.notes.cpu_cores.1],
        "placement": stack_placement(&sp),
        "receiver_sleeps_per_1000": r.sleeps_per_1000, "back_pressure_refusals": r.refusals,
    });
    if !c.json {
        println!(
            "{}; receiver block-thread sleeps per 1,000 signals {:.3}; sends refused by back-pressure {}",
            run_note(&r.notes),
            r.sleeps_per_1000,
            r.refusals
        );
    }
    emit(c, &run, &[], &[bare_row, row])
}

fn run_report(args: &ReportArgs) -> Result<(), String> {
    if args.runs.is_none() && args.svg.is_none() {
        return Err(
            "report needs --runs DIR (the table) and/or --hgrm-dir DIR --svg FILE (the plot)"
                .into(),
        );
    }
    if let Some(dir) = &args.runs {
        let rows = summary::read_dir(dir)?;
        if rows.is_empty() {
            return Err(format!("no pingpong or stream runs in {}", dir.display()));
        }
        print!("{}", summary::markdown(&rows));
    }
    if let Some(svg) = &args.svg {
        let dir = args.hgrm_dir.as_ref().ok_or("--svg needs --hgrm-dir DIR")?;
        let series = plot::read_dir(dir)?;
        plot::write_svg(&series, &args.title, svg)?;
        eprintln!("wrote {} ({} distributions)", svg.display(), series.len());
    }
    Ok(())
}

fn emit(
    c: &Common,
    run: &serde_json::Value,
    latency_rows: &[LatencyRow],
    rate_rows: &[RateRow],
) -> Result<(), String> {
    if c.json {
        let doc = serde_json::json!({ "run": run, "latency": latency_rows, "rates": rate_rows });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
        return Ok(());
    }
    if let Some(placement) = run.get("placement").filter(|p| p.is_object()) {
        println!(
            "cpus {} and {}: {}, as the kernel's topology shows them",
            placement["cpus"][0],
            placement["cpus"][1],
            placement["relation"].as_str().unwrap_or("topology unknown")
        );
    }
    if !latency_rows.is_empty() {
        report::print_latency(latency_rows);
    }
    if !rate_rows.is_empty() {
        report::print_rates(rate_rows);
    }
    Ok(())
}
