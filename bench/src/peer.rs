//! The other end of a two-process benchmark: `blockwire-bench peer` joins as node 2 with one
//! link to node 1 and echoes (ping-pong) or counts (stream, idle) signals, pinned to its own CPU.
//! It prints `ready <addr>` once listening and, when a counted stream ends or on `idle`, one
//! `done` line with what it measured, for the parent to read.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use signals::{gsn, NodeId, Signal};
use transporter::{LinkEvent, PeerConfig, Registry, RegistryConfig, TransportKind};

use crate::limit::Lines;
use crate::{pin, Mode};

/// What the peer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Answer every PING_REQ with a PING_CONF carrying the same data.
    Echo,
    /// Count `count` signals, then report.
    Sink,
    /// Keep the link up and receive nothing, for `seconds`, then report own CPU time.
    Idle,
}

/// Arguments of the peer process.
#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    /// The link's transport.
    #[arg(long)]
    pub kind: String,
    /// What to do.
    #[arg(long, value_enum)]
    pub role: Role,
    /// How the receive loop waits.
    #[arg(long, value_enum, default_value_t = Mode::Spin)]
    pub mode: Mode,
    /// Spin time before sleeping, in microseconds (sleep mode).
    #[arg(long, default_value_t = 50)]
    pub spin_us: u64,
    /// Signals to count (sink).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Seconds to stay idle (idle).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// CPU to pin to.
    #[arg(long, default_value_t = 1)]
    pub cpu: usize,
    /// Ring size for shared memory.
    #[arg(long, default_value_t = 1 << 22)]
    pub ring_bytes: usize,
    /// Echo: answer with `pack` and `flush` instead of `send_now`.
    #[arg(long)]
    pub packed: bool,
    /// Echo, interleaved with the cross-process cache-line reference: the file of its two
    /// lines (see `--interleave` of pingpong).
    #[arg(long)]
    pub lines: Option<std::path::PathBuf>,
    /// Echo, interleaved: after every this many echoed signals, echo this many values on the
    /// cache lines.
    #[arg(long, default_value_t = 0)]
    pub block: u64,
}

pub(crate) fn kind_from(name: &str) -> Result<TransportKind, String> {
    match name {
        "tcp" => Ok(TransportKind::Tcp),
        "shm" => Ok(TransportKind::Shm),
        "rdma" => Ok(TransportKind::Rdma),
        other => Err(format!("transport {other} is not available in this build")),
    }
}

/// The peer's link configuration (node 2, accepting node 1).
pub fn peer_config(
    me: u32,
    other: u32,
    listen: Option<SocketAddr>,
    addr: SocketAddr,
    kind: TransportKind,
    ring_bytes: usize,
) -> RegistryConfig {
    let node = |n| NodeId::new(n).unwrap_or(NodeId::MIN);
    RegistryConfig::new(
        1,
        node(me),
        listen,
        vec![PeerConfig {
            send_buffer_bytes: 16 << 20,
            ring_bytes,
            ..PeerConfig::new(node(other), addr, kind)
        }],
    )
}

/// CPU time (user + system) this process has used.
pub fn own_cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs the peer until its work is done (echo: until the link drops).
pub fn run(args: &PeerArgs) -> Result<(), String> {
    let kind = kind_from(&args.kind)?;
    pin(args.cpu);
    let any: SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let mut registry = Registry::start(peer_config(2, 1, Some(any), any, kind, args.ring_bytes))
        .map_err(|e| e.to_string())?;
    let addr = registry.local_addr().ok_or("not listening")?;
    // Mapped before saying ready: the parent then removes the file's name.
    let lines = match &args.lines {
        Some(path) if args.role == Role::Echo && args.block > 0 => {
            Some(Lines::map(path, false).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        Some(_) => return Err("--lines is for an echo with --block".into()),
        None => None,
    };
    println!("ready {addr}");
    let _ = std::io::stdout().flush();
    match registry.events().recv_timeout(Duration::from_secs(30)) {
        Ok(LinkEvent::Connected { .. }) => {}
        other => return Err(format!("link did not come up: {other:?}")),
    }
    let mut side = registry.take_receive_side().ok_or("receive side taken")?;
    let mut send = registry.send_buffers();
    let spin = match args.mode {
        Mode::Spin => Duration::from_secs(3600),
        Mode::Sleep => Duration::from_micros(args.spin_us),
    };
    let one = NodeId::MIN;
    let (mut echoed, mut value) = (0u64, 0u64);
    match args.role {
        Role::Echo => {
            let stop = || matches!(registry.state(one), Some(transporter::LinkState::Disconnected));
            let mut deliver = |from: NodeId, s: signals::SignalView<'_>| {
                // The same words and sections back (at most one section is ever sent here);
                // a signal without one takes the plain path, as before sections were measured.
                let answer = Signal::new(gsn::PING_CONF, s.receiver(), s.sender()).data(s.data());
                let sections = [s.section(0).unwrap_or(&[])];
                let answer =
                    if s.section_count() > 0 { answer.sections(&sections) } else { answer };
                if args.packed {
                    let _ = send.pack(from, &answer);
                    send.flush();
                } else {
                    let _ = send.send_now(from, &answer);
                }
                echoed += 1;
                if let Some(lines) = lines.as_ref().filter(|_| echoed % args.block == 0) {
                    for _ in 0..args.block {
                        value += 1;
                        if !lines.echo(value) {
                            // The parent is gone: the link's end stops the loop.
                            break;
                        }
                    }
                }
            };
            side.run(spin, Duration::from_millis(50), &stop, &mut deliver);
        }
        Role::Sink => {
            let mut received = 0u64;
            let mut started: Option<Instant> = None;
            let mut elapsed = Duration::ZERO;
            let count = args.count;
            let done = std::cell::Cell::new(false);
            side.run(spin, Duration::from_millis(50), &|| done.get(), &mut |_, _| {
                let start = *started.get_or_insert_with(Instant::now);
                received += 1;
                if received == count {
                    elapsed = start.elapsed();
                    done.set(true);
                }
            });
            let c = registry.counters(one).unwrap_or_default();
            println!(
                "done received={received} elapsed_ns={} sleeps={} cq_events={} cpu_ns={}",
                elapsed.as_nanos(),
                c.sleeps,
                c.cq_events,
                own_cpu_time().as_nanos()
            );
        }
        Role::Idle => {
            // Measure from the end of the spin time (plus a moment to settle) for `seconds`.
            let settle = Instant::now() + spin + Duration::from_millis(200);
            let measured_from: std::cell::Cell<Option<(Duration, Instant)>> =
                std::cell::Cell::new(None);
            let seconds = Duration::from_secs(args.seconds);
            let stop = || {
                let now = Instant::now();
                if measured_from.get().is_none() && now >= settle {
                    measured_from.set(Some((own_cpu_time(), now)));
                }
                matches!(measured_from.get(), Some((_, t)) if now >= t + seconds)
            };
            side.run(spin, Duration::from_millis(50), &stop, &mut |_, _| {});
            let (cpu0, t0) = measured_from.get().ok_or("idle run ended before measuring")?;
            println!(
                "done idle_cpu_ns={} wall_ns={}",
                (own_cpu_time() - cpu0).as_nanos(),
                t0.elapsed().as_nanos()
            );
        }
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
