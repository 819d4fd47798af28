//! The bare transporter between two processes, without the block runtime: this process is node 1,
//! a `blockwire-bench peer` child is node 2, each pinned to its own CPU. Ping-pong of
//! PING_REQ/PING_CONF signals, a one-way stream, and an idle link. Comparing these with `limit`
//! shows what the transporter costs; comparing them with full-stack figures shows the runtime's.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId, Signal};
use transporter::{LinkEvent, Registry, SendError, TransportKind};

use crate::limit::{BlockPairs, Interleaved, Lines};
use crate::peer::{own_cpu_time, peer_config};
use crate::report::{histogram, record};
use crate::{pin, Mode, Plan};

/// The block both benchmark ends use.
const BENCH_BLOCK: BlockNumber = BlockNumber(200);
/// Ring size of shared-memory links in benchmarks.
const RING_BYTES: usize = 1 << 22;

fn node(n: u32) -> NodeId {
    NodeId::new(n).unwrap_or(NodeId::MIN)
}

fn reference(n: u32) -> BlockRef {
    BlockRef::new(node(n), BENCH_BLOCK, BlockInstance(0))
}

/// A running `blockwire-bench peer` child.
struct PeerChild {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl PeerChild {
    fn spawn(
        kind: TransportKind,
        role: &str,
        mode: Mode,
        extra: &[String],
        cpu: usize,
    ) -> Result<(PeerChild, SocketAddr), String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
        let mode = if mode == Mode::Spin { "spin" } else { "sleep" };
        let mut child = Command::new(exe)
            .args([
                "peer",
                "--kind",
                &kind.to_string(),
                "--role",
                role,
                "--mode",
                mode,
                "--cpu",
                &cpu.to_string(),
            ])
            .args(["--ring-bytes", &RING_BYTES.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start peer process: {e}"))?;
        let stdout = child.stdout.take().ok_or("peer has no stdout")?;
        let mut peer = PeerChild { child, lines: BufReader::new(stdout).lines() };
        let ready = peer.line()?;
        let addr = ready
            .strip_prefix("ready ")
            .and_then(|a| a.parse().ok())
            .ok_or(format!("peer said {ready:?}, not ready <addr>"))?;
        Ok((peer, addr))
    }

    /// Fails when the child has exited (it would never drain a stream again).
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("peer process exited early: {status}")),
            _ => Ok(()),
        }
    }

    fn line(&mut self) -> Result<String, String> {
        match self.lines.next() {
            Some(Ok(l)) => Ok(l),
            other => Err(format!("peer process ended early: {other:?}")),
        }
    }

    /// Reads the `done` line into `key=value` pairs.
    fn done(&mut self) -> Result<Vec<(String, u64)>, String> {
        let line = self.line()?;
        let rest = line.strip_prefix("done ").ok_or(format!("peer said {line:?}"))?;
        Ok(rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
            .collect())
    }
}

impl Drop for PeerChild {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(pairs: &[(String, u64)], key: &str) -> Result<u64, String> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .ok_or(format!("peer did not report {key}"))
}

/// Node 1, connected to the child at `addr`.
fn connect(kind: TransportKind, addr: SocketAddr) -> Result<Registry, String> {
    let registry = Registry::start(peer_config(1, 2, None, addr, kind, RING_BYTES))
        .map_err(|e| e.to_string())?;
    match registry.events().recv_timeout(Duration::from_secs(30)) {
        Ok(LinkEvent::Connected { .. }) => Ok(registry),
        other => Err(format!("link did not come up: {other:?}")),
    }
}

fn poll_timeout(mode: Mode) -> Option<Duration> {
    match mode {
        Mode::Spin => Some(Duration::ZERO),
        Mode::Sleep => Some(Duration::from_millis(50)),
    }
}

/// Round trips of a signal with `data_words` data words (and a section of `section_words`
/// when not 0) through the transporter. With `interleave` (a block length), every block of
/// that many round trips is followed by as many round trips of the cross-process cache-line
/// reference between the same two pinned processes, so both see the same placement and the
/// same host; the reference comes back with the per-block ratios.
pub fn pingpong(
    plan: &Plan,
    kind: TransportKind,
    data_words: usize,
    section_words: usize,
    mode: Mode,
    packed: bool,
    interleave: Option<u64>,
) -> Result<(Histogram<u64>, Option<Interleaved>), String> {
    // Sleep mode sleeps at once (no spin), so each round trip pays the wakeups it measures.
    let mut extra = vec!["--spin-us".to_string(), "0".to_string()];
    if packed {
        extra.push("--packed".to_string());
    }
    let lines_path =
        std::path::PathBuf::from(format!("/dev/shm/blockwire-bench-lines-{}", std::process::id()));
    let lines = match interleave {
        Some(block) => {
            let lines = Lines::map(&lines_path, true)
                .map_err(|e| format!("{}: {e}", lines_path.display()))?;
            extra.extend([
                "--lines".to_string(),
                lines_path.display().to_string(),
                "--block".to_string(),
                block.to_string(),
            ]);
            Some((lines, block))
        }
        None => None,
    };
    let spawned = PeerChild::spawn(kind, "echo", mode, &extra, plan.cpus.1);
    if lines.is_some() {
        // The peer has mapped the file before saying it is ready (or has failed): the name can go.
        let _ = std::fs::remove_file(&lines_path);
    }
    let (mut peer, addr) = spawned?;
    pin(plan.cpus.0);
    let mut one = connect(kind, addr)?;
    let mut side = one.take_receive_side().ok_or("receive side taken")?;
    let mut send = one.send_buffers();
    let data: Vec<u32> = (0..data_words as u32).collect();
    let section: Vec<u32> = (0..section_words as u32).collect();
    let sections = [section.as_slice()];
    let n = usize::from(section_words > 0);
    let mut h = histogram();
    let mut pairs = lines.as_ref().map(|(_, block)| BlockPairs::new(*block));
    for i in 0..plan.warmup + plan.count {
        let start = Instant::now();
        let signal = Signal::new(gsn::PING_REQ, reference(1), reference(2)).data(&data);
        let signal = if n > 0 { signal.sections(&sections) } else { signal };
        if packed {
            send.pack(node(2), &signal).map_err(|e| e.to_string())?;
            send.flush();
        } else {
            send.send_now(node(2), &signal).map_err(|e| e.to_string())?;
        }
        let (mut answered, mut garbled) = (false, false);
        let mut polls = 0u32;
        while !answered {
            polls = polls.wrapping_add(1);
            if polls % (1 << 20) == 0 {
                peer.check_alive()?;
            }
            side.poll(poll_timeout(mode), &mut |_, s| {
                if s.gsn() == gsn::PING_CONF {
                    answered = true;
                    // The echo returns the section: check it came back whole.
                    if section_words > 0 || s.section_count() > 0 {
                        garbled |= s.section(0).unwrap_or(&[]) != section.as_slice();
                    }
                }
            });
        }
        if garbled {
            return Err(format!("round trip {i}: the echo's section differs from the one sent"));
        }
        let measured = i >= plan.warmup;
        if measured {
            let took = start.elapsed();
            record(&mut h, took);
            if let Some(pairs) = pairs.as_mut() {
                pairs.subject(took);
            }
        }
        // After each block, a block of the reference between the same two processes (the peer
        // counts the same).
        if let (Some((lines, block)), Some(pairs)) = (lines.as_ref(), pairs.as_mut()) {
            if (i + 1) % block == 0 {
                pairs.run_reference(lines, *block, measured)?;
            }
        }
    }
    Ok((h, pairs.map(BlockPairs::finish)))
}

/// What a stream run measured.
#[derive(Clone, Copy, Debug)]
pub struct StreamResult {
    /// Signals per second at the receiver, first to last arrival.
    pub per_second: f64,
    /// Wakeups per 1,000 signals: eventfd writes the sender paid (shared memory), receiver
    /// sleeps, each ended by a kernel wakeup (TCP), or CQ events (RDMA).
    pub wakeups_per_1000: f64,
    /// CPU of the sending and receiving processes, in cores (1.0 = one core busy).
    pub cpu_cores: (f64, f64),
}

/// One-way stream of `plan.count` signals of `data_words` words, flushed every `batch` signals;
/// the receiver spins for `spin_us` and then sleeps.
pub fn stream(
    plan: &Plan,
    kind: TransportKind,
    data_words: usize,
    batch: usize,
    spin_us: u64,
) -> Result<StreamResult, String> {
    let extra =
        vec!["--count".into(), plan.count.to_string(), "--spin-us".into(), spin_us.to_string()];
    let (mut peer, addr) = PeerChild::spawn(kind, "sink", Mode::Sleep, &extra, plan.cpus.1)?;
    pin(plan.cpus.0);
    let one = connect(kind, addr)?;
    let mut send = one.send_buffers();
    let data: Vec<u32> = (0..data_words as u32).collect();
    let signal = Signal::new(gsn::PING_REQ, reference(1), reference(2)).data(&data);
    let (cpu0, start) = (own_cpu_time(), Instant::now());
    let mut sent = 0u64;
    let mut stalls = 0u64;
    while sent < plan.count {
        match send.pack(node(2), &signal) {
            Ok(()) => sent += 1,
            Err(SendError::Overloaded { .. }) => {
                send.flush();
                stalls += 1;
                if stalls % 100_000 == 0 {
                    peer.check_alive()?;
                }
                continue;
            }
            Err(e) => return Err(e.to_string()),
        }
        if sent % batch as u64 == 0 {
            send.flush();
        }
    }
    while send.has_unsent() {
        send.flush();
    }
    let done = peer.done()?;
    let sender_cpu = (own_cpu_time() - cpu0).as_secs_f64() / start.elapsed().as_secs_f64();
    let elapsed = Duration::from_nanos(value(&done, "elapsed_ns")?.max(1));
    let receiver_cpu =
        Duration::from_nanos(value(&done, "cpu_ns")?).as_secs_f64() / elapsed.as_secs_f64();
    let wakeups = match kind {
        TransportKind::Tcp => value(&done, "sleeps")?,
        // RDMA: completion-channel events, the interrupts that woke the sleeping receiver.
        TransportKind::Rdma => value(&done, "cq_events")?,
        _ => one.counters(node(2)).map_or(0, |c| c.wakeups_sent),
    };
    if value(&done, "received")? != plan.count {
        return Err(format!("peer received {} of {}", value(&done, "received")?, plan.count));
    }
    Ok(StreamResult {
        per_second: plan.count as f64 / elapsed.as_secs_f64(),
        wakeups_per_1000: wakeups as f64 * 1000.0 / plan.count as f64,
        cpu_cores: (sender_cpu, receiver_cpu.min(1.0)),
    })
}

/// CPU used by the two ends of an idle link over `seconds`, after the spin time: (this end,
/// the peer), as fractions of one core.
pub fn idle(
    kind: TransportKind,
    seconds: u64,
    spin_us: u64,
    cpus: (usize, usize),
) -> Result<(f64, f64), String> {
    let extra =
        vec!["--seconds".into(), seconds.to_string(), "--spin-us".into(), spin_us.to_string()];
    let (mut peer, addr) = PeerChild::spawn(kind, "idle", Mode::Sleep, &extra, cpus.1)?;
    pin(cpus.0);
    let mut one = connect(kind, addr)?;
    let mut side = one.take_receive_side().ok_or("receive side taken")?;
    let spin = Duration::from_micros(spin_us);
    let settle = Instant::now() + spin + Duration::from_millis(200);
    side.run(spin, Duration::from_millis(50), &|| Instant::now() >= settle, &mut |_, _| {});
    let (cpu0, t0) = (own_cpu_time(), Instant::now());
    let end = t0 + Duration::from_secs(seconds);
    // A fresh run spins again first: start it with the spin already spent by sleeping through
    // the rest of the window in short epoll waits.
    side.run(Duration::ZERO, Duration::from_millis(50), &|| Instant::now() >= end, &mut |_, _| {});
    let mine = (own_cpu_time() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    let done = peer.done()?;
    let theirs = value(&done, "idle_cpu_ns")? as f64 / value(&done, "wall_ns")?.max(1) as f64;
    Ok((mine, theirs))
}
