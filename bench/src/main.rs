//! `blockwire-bench`: latency histograms and streaming rates of blockwire's transports, each
//! printed beside its physical reference measured in the same run (ratios, not lone absolute
//! times: the machines these run on are shared and noisy).
//!
//! Every latency figure is an HDR histogram after a warm-up whose samples are discarded,
//! printed as p50, p90, p99, p99.9, p99.99 and max, and optionally written as `.hgrm` files and
//! JSON. `--raw` measures the bare transporter (registry, send buffers, transport) without the
//! block runtime.

mod limit;
mod peer;
mod raw;
mod report;

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
    /// Round trips through a transport, beside the bare-socket reference.
    Pingpong(Common),
    /// One-way streaming rate through a transport, beside a bare socket sending one message per write.
    Stream {
        #[command(flatten)]
        common: Common,
        /// Signals per flush (the batch a round hands to the transporter).
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// CPU used by both ends of an idle link, after the spin time.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Seconds to measure.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The other end of a two-process run (started by the other subcommands).
    #[command(hide = true)]
    Peer(peer::PeerArgs),
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
    /// Transport to measure.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Measure the bare transporter, without the block runtime.
    #[arg(long)]
    raw: bool,
    /// Data words per signal (the bare-socket reference sends messages of the same size).
    #[arg(long, default_value_t = 4)]
    size: usize,
    /// Measured samples (round trips) or streamed signals.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Samples run and discarded before measuring.
    #[arg(long, default_value_t = 10_000)]
    warmup: u64,
    /// spin: receivers busy-poll; sleep: receivers block in the kernel.
    #[arg(long, value_enum, default_value_t = Mode::Spin)]
    mode: Mode,
    /// Receivers spin this long before sleeping (stream, idle; sleep-mode ping-pong).
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// CPUs for the two ends, e.g. 0,1.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0, 1])]
    cpus: Vec<usize>,
    /// Directory to write one `.hgrm` file per latency case into.
    #[arg(long)]
    hgrm_dir: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    Tcp,
    Shm,
    Rdma,
}

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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blockwire-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn plan(c: &Common) -> Result<Plan, String> {
    if c.count == 0 {
        return Err("--count must be at least 1".into());
    }
    if c.size > signals::MAX_DATA_WORDS {
        return Err(format!("--size {} is over {} data words", c.size, signals::MAX_DATA_WORDS));
    }
    let cpus = match c.cpus[..] {
        [a, b] => (a, b),
        _ => return Err("--cpus takes two CPU numbers".into()),
    };
    Ok(Plan { count: c.count, warmup: c.warmup, cpus })
}

fn kind(c: &Common) -> Result<TransportKind, String> {
    if !c.raw {
        return Err("the full-stack path (block -> runtime -> transporter) needs the block runtime; use --raw for the bare transporter".into());
    }
    match c.transport {
        Transport::Tcp => Ok(TransportKind::Tcp),
        Transport::Shm => Ok(TransportKind::Shm),
        other => Err(format!("transport {other:?} is not available in this build")),
    }
}

fn message_bytes(size: usize) -> usize {
    signals::HEADER_BYTES + 4 * size
}

fn latency(
    c: &Common,
    rows: &mut Vec<LatencyRow>,
    case: &str,
    h: &Histogram<u64>,
) -> Result<LatencyRow, String> {
    if let Some(dir) = &c.hgrm_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = dir.join(format!("{}.hgrm", case.replace([' ', '/', ','], "_")));
        report::write_hgrm(&file, h)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    let row = LatencyRow::from_histogram(case, h);
    rows.push(row.clone());
    Ok(row)
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Limit(c) => {
            let p = plan(&c)?;
            let mut rows = Vec::new();
            latency(&c, &mut rows, "limit cache-line 2 threads", &limit::cache_line_pingpong(&p))?;
            let lines = limit::cache_line_pingpong_processes(&p).map_err(|e| e.to_string())?;
            latency(&c, &mut rows, "limit cache-line 2 processes", &lines)?;
            let wake = limit::eventfd_wake_pingpong(&p).map_err(|e| e.to_string())?;
            latency(&c, &mut rows, "limit eventfd wake 2 threads", &wake)?;
            for mode in [Mode::Spin, Mode::Sleep] {
                let h = limit::tcp_pingpong(&p, message_bytes(c.size), mode)
                    .map_err(|e| e.to_string())?;
                latency(&c, &mut rows, &format!("limit bare tcp {mode:?}").to_lowercase(), &h)?;
            }
            emit(&c, &rows, &[])
        }
        Command::Pingpong(c) => {
            let p = plan(&c)?;
            let kind = kind(&c)?;
            let mut rows = Vec::new();
            let reference = match (kind, c.mode) {
                (TransportKind::Shm, Mode::Spin) => {
                    let h = limit::cache_line_pingpong_processes(&p).map_err(|e| e.to_string())?;
                    latency(&c, &mut rows, "limit cache-line 2 processes", &h)?
                }
                (TransportKind::Shm, Mode::Sleep) => {
                    let h = limit::eventfd_wake_pingpong(&p).map_err(|e| e.to_string())?;
                    latency(&c, &mut rows, "limit eventfd wake 2 threads", &h)?
                }
                _ => {
                    let bare = limit::tcp_pingpong(&p, message_bytes(c.size), c.mode)
                        .map_err(|e| e.to_string())?;
                    latency(
                        &c,
                        &mut rows,
                        &format!("limit bare tcp {:?}", c.mode).to_lowercase(),
                        &bare,
                    )?
                }
            };
            let h = raw::pingpong(&p, kind, c.size, c.mode)?;
            let row = latency(
                &c,
                &mut rows,
                &format!("raw {kind} {:?} {}w", c.mode, c.size).to_lowercase(),
                &h,
            )?;
            let last = rows.len() - 1;
            rows[last] = row.against(&reference);
            emit(&c, &rows, &[])
        }
        Command::Stream { common: c, batch } => {
            let p = plan(&c)?;
            let kind = kind(&c)?;
            if batch == 0 {
                return Err("--batch must be at least 1".into());
            }
            let bytes = message_bytes(c.size);
            let bare = limit::tcp_stream_one_per_write(&p, bytes).map_err(|e| e.to_string())?;
            let bare_row = RateRow {
                case: format!("limit bare tcp, one write per {bytes}-byte message"),
                per_second: bare,
                bytes_per_second: bare * bytes as f64,
                wakeups_per_1000: None,
                reference: None,
            };
            let r = raw::stream(&p, kind, c.size, batch, c.spin_us)?;
            let row = RateRow {
                case: format!(
                    "raw {kind} {}w, flush every {batch} (cpu {:.2}+{:.2})",
                    c.size, r.cpu_cores.0, r.cpu_cores.1
                ),
                per_second: r.per_second,
                bytes_per_second: r.per_second * bytes as f64,
                wakeups_per_1000: Some(r.wakeups_per_1000),
                reference: Some((bare_row.case.clone(), r.per_second / bare)),
            };
            emit(&c, &[], &[bare_row, row])
        }
        Command::Idle { common: c, seconds } => {
            let p = plan(&c)?;
            let kind = kind(&c)?;
            let (mine, theirs) = raw::idle(kind, seconds, c.spin_us, p.cpus)?;
            if c.json {
                let doc = serde_json::json!({ "idle": { "transport": kind.to_string(), "seconds": seconds, "cpu_fraction": [mine, theirs] } });
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
        Command::Peer(args) => peer::run(&args),
        Command::LimitPeer { path, count, cpu } => {
            limit::cache_line_peer(&path, count, cpu).map_err(|e| e.to_string())
        }
    }
}

fn emit(c: &Common, latency_rows: &[LatencyRow], rate_rows: &[RateRow]) -> Result<(), String> {
    if c.json {
        let doc = serde_json::json!({ "latency": latency_rows, "rates": rate_rows });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
        return Ok(());
    }
    if !latency_rows.is_empty() {
        report::print_latency(latency_rows);
    }
    if !rate_rows.is_empty() {
        report::print_rates(rate_rows);
    }
    Ok(())
}
