//! Latency and throughput of the block runtime, measured against the machine's floor in the
//! same run:
//! - raw: two pinned threads bouncing a counter between two cache lines (the floor);
//! - block spin: a block on thread 0 pings the echo block on thread 1 of one node, both
//!   threads spinning (`spin_time_us` = 1 s, so they never sleep during the run);
//! - block sleep: the same with `spin_time_us` = 0, so every ping and every answer wakes a
//!   sleeping thread through its eventfd;
//! - throughput: signals per second through one job buffer (lane) with batching, producer
//!   and consumer on two pinned threads, and end to end between two blocks of a node.
//!
//! Round trips are recorded in HDR histograms after a warm-up, then printed as percentiles
//! (p50 .. p99.99 and max, ns). With `BLOCKWIRE_HGRM_DIR` set, each distribution is also
//! written there as a `.hgrm` percentile table for plotting.
//!
//! Run: `cargo bench -p blockwire-node --bench pingpong` (about 10 s on an idle machine). The ping-pong and
//! measuring idea follows Aeron's `Ping` sample (warm up, reset, record RTTs, print
//! percentiles); the code is our own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use node::blocks::{self, ping::Echo};
use node::jobbuf::job_buffer;
use node::lane::LaneShape;
use node::parker::Parker;
use node::{Block, Context, NodeBuilder, Tuning};
use signals::{gsn, BlockInstance, BlockNumber, BlockRef, Gsn, NodeId, Signal, SignalView};

const PINGER: BlockNumber = BlockNumber(300);
const FLOOD: BlockNumber = BlockNumber(301);
const SINK: BlockNumber = BlockNumber(302);
const ITEM: Gsn = Gsn(60001);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn pin(cpu: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        eprintln!("warning: could not pin to CPU {cpu}");
    }
}

fn print(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<28} n={:<8} p50={:>7} p90={:>7} p99={:>7} p99.9={:>8} p99.99={:>8} max={:>9}  (ns)",
        h.len(),
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.value_at_quantile(0.9999),
        h.max()
    );
    if let Ok(dir) = std::env::var("BLOCKWIRE_HGRM_DIR") {
        let mut text = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
        for v in h.iter_quantiles(1) {
            let p = v.quantile_iterated_to();
            let inv = if p < 1.0 { 1.0 / (1.0 - p) } else { f64::INFINITY };
            text += &format!(
                "{:12.3} {:14.12} {:10} {:14.2}\n",
                v.value_iterated_to() as f64 / 1000.0,
                p,
                v.count_since_last_iteration(),
                inv
            );
        }
        let path = std::path::Path::new(&dir).join(format!("{}.hgrm", name.replace(' ', "_")));
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("warning: could not write {}: {e}", path.display());
        }
    }
}

/// Two pinned threads bounce a sequence number between two cache lines.
fn raw_ping_pong(warmup: u64, iterations: u64) -> Histogram<u64> {
    // Plain std atomics: this is the measuring baseline, not a part of the runtime.
    let ping = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let pong = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let (p2, q2) = (ping.clone(), pong.clone());
    let total = warmup + iterations;
    let echo = std::thread::spawn(move || {
        pin(1);
        for seq in 1..=total {
            while p2.load(Ordering::Acquire) != seq {
                core::hint::spin_loop();
            }
            q2.store(seq, Ordering::Release);
        }
    });
    pin(0);
    let mut h = histogram();
    for seq in 1..=total {
        let start = Instant::now();
        ping.store(seq, Ordering::Release);
        while pong.load(Ordering::Acquire) != seq {
            core::hint::spin_loop();
        }
        let rtt = start.elapsed().as_nanos() as u64;
        if seq > warmup {
            h.saturating_record(rtt);
        }
    }
    echo.join().expect("echo thread");
    h
}

/// Pings one target, recording round trips after the warm-up.
#[derive(Debug)]
struct Pinger {
    target: BlockRef,
    warmup: u64,
    total: u64,
    count: u64,
    sent_at: Instant,
    hist: Histogram<u64>,
    done: mpsc::Sender<Histogram<u64>>,
}

impl Pinger {
    fn ping(&mut self, ctx: &mut Context<'_>) {
        let words = [self.count as u32];
        self.sent_at = Instant::now();
        if let Err(e) = ctx.send(&ctx.signal(gsn::PING_REQ, self.target).data(&words)) {
            panic!("ping failed: {e}");
        }
    }
}

impl Block for Pinger {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::START_ORD => self.ping(ctx),
            gsn::PING_CONF => {
                let rtt = self.sent_at.elapsed().as_nanos() as u64;
                self.count += 1;
                if self.count > self.warmup {
                    self.hist.saturating_record(rtt);
                }
                if self.count == self.total {
                    let _ = self.done.send(self.hist.clone());
                } else {
                    self.ping(ctx);
                }
            }
            _ => {}
        }
    }
}

fn node_tuning(spin_time_us: u64) -> Tuning {
    Tuning { spin_time_us, ..Tuning::default() }
}

/// A node of two pinned threads: pinger on thread 0, echo on thread 1.
fn block_ping_pong(spin_time_us: u64, warmup: u64, iterations: u64) -> (Histogram<u64>, String) {
    let (tx, rx) = mpsc::channel();
    let node_id = NodeId::MIN;
    let mut b = NodeBuilder::new(node_id, 2, node_tuning(spin_time_us)).expect("builder");
    b.pin(0, 0);
    b.pin(1, 1);
    let echo =
        b.place(1, blocks::PING, BlockInstance(0), Box::new(Echo::new())).expect("place echo");
    let pinger = Pinger {
        target: echo,
        warmup,
        total: warmup + iterations,
        count: 0,
        sent_at: Instant::now(),
        hist: histogram(),
        done: tx,
    };
    b.place(0, PINGER, BlockInstance(0), Box::new(pinger)).expect("place pinger");
    let node = b.start().expect("start");
    let h = rx.recv_timeout(Duration::from_secs(120)).expect("ping-pong finished");
    let stats = node.stats().clone();
    node.stop().expect("stop");
    let t: Vec<_> = stats.threads().iter().map(|t| t.snapshot()).collect();
    let wakeups = t.iter().map(|s| s.wakeups).sum::<u64>();
    let sleeps = t.iter().map(|s| s.sleeps).sum::<u64>();
    let signals = t.iter().map(|s| s.signals_run).sum::<u64>();
    let note = format!(
        "signals run {signals}, sleeps {sleeps}, wakeups {wakeups} ({:.1} wakeups per 1,000 signals)",
        wakeups as f64 * 1000.0 / signals.max(1) as f64
    );
    (h, note)
}

/// Signals per second through one job buffer: a pinned producer packs 4-word signals and
/// publishes every `batch` signals (or when full), a pinned consumer walks them and hands room
/// back every 256 signals.
fn lane_throughput(signals_total: u64, batch: u64) -> f64 {
    let shape = LaneShape { depth: 8, page_words: 8192, limits: signals::Limits::default() };
    let p = Arc::new(Parker::new().expect("parker"));
    let c = Arc::new(Parker::new().expect("parker"));
    let (mut w, mut r) = job_buffer(shape, p, c);
    let consumer = std::thread::spawn(move || {
        pin(1);
        let mut got = 0u64;
        let mut sum = 0u64;
        while got < signals_total {
            match r.peek() {
                Some(v) => {
                    sum = sum.wrapping_add(v.data()[0] as u64);
                    let len = v.wire_words().len();
                    r.advance(len);
                    got += 1;
                    if got % 256 == 0 {
                        r.release();
                    }
                }
                None => {
                    r.release();
                    core::hint::spin_loop();
                }
            }
        }
        sum
    });
    pin(0);
    let me = BlockRef::new(NodeId::MIN, BlockNumber(1), BlockInstance(0));
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < signals_total {
        let words = [sent as u32, 1, 2, 3];
        match w.push(&Signal::new(ITEM, me, me).data(&words)) {
            Ok(()) => {
                sent += 1;
                if sent % batch == 0 {
                    w.flush();
                }
            }
            Err(_) => {
                w.flush();
                core::hint::spin_loop();
            }
        }
    }
    w.flush();
    let _sum = consumer.join().expect("consumer");
    let elapsed = start.elapsed();
    signals_total as f64 / elapsed.as_secs_f64()
}

/// Sends `count` items as fast as back-pressure allows.
#[derive(Debug)]
struct Flood {
    to: BlockRef,
    count: u64,
    sent: u64,
}

impl Block for Flood {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        if s.gsn() != gsn::START_ORD && s.gsn() != gsn::CONTINUE {
            return;
        }
        // One round's worth, then continue: other signals of this thread get their turn.
        for _ in 0..256 {
            if self.sent == self.count {
                return;
            }
            let words = [self.sent as u32, 1, 2, 3];
            if ctx.send(&ctx.signal(ITEM, self.to).data(&words)).is_err() {
                break;
            }
            self.sent += 1;
        }
        let _ = ctx.continue_later(&[]);
    }
}

#[derive(Debug)]
struct Sink {
    expect: u64,
    got: u64,
    done: mpsc::Sender<Instant>,
}

impl Block for Sink {
    fn execute(&mut self, s: &SignalView<'_>, _ctx: &mut Context<'_>) {
        if s.gsn() == ITEM {
            self.got += 1;
            if self.got == self.expect {
                let _ = self.done.send(Instant::now());
            }
        }
    }
}

/// Signals per second from a block on thread 0 to a block on thread 1 of one node.
fn block_throughput(count: u64) -> f64 {
    let (tx, rx) = mpsc::channel();
    let mut b = NodeBuilder::new(NodeId::MIN, 2, node_tuning(1000)).expect("builder");
    b.pin(0, 0);
    b.pin(1, 1);
    let sink = b
        .place(1, SINK, BlockInstance(0), Box::new(Sink { expect: count, got: 0, done: tx }))
        .expect("sink");
    b.place(0, FLOOD, BlockInstance(0), Box::new(Flood { to: sink, count, sent: 0 }))
        .expect("flood");
    let start = Instant::now();
    let node = b.start().expect("start");
    let end = rx.recv_timeout(Duration::from_secs(120)).expect("flood finished");
    node.stop().expect("stop");
    count as f64 / (end - start).as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    println!("blockwire-node ping-pong (two threads pinned to CPUs 0 and 1)");
    // The raw floor is measured right before and right after the spinning block ping-pong,
    // so a busy machine shows up as two different floors rather than a wrong ratio.
    let raw_before = raw_ping_pong(100_000, 1_000_000);
    print("raw cache-line ping-pong", &raw_before);
    let (spin, spin_note) = block_ping_pong(1_000_000, 50_000, 500_000);
    print("block ping-pong spin", &spin);
    println!("  {spin_note}");
    let raw_after = raw_ping_pong(100_000, 1_000_000);
    print("raw cache-line again", &raw_after);
    let (sleep, sleep_note) = block_ping_pong(0, 2_000, 30_000);
    print("block ping-pong sleep", &sleep);
    println!("  {sleep_note}");
    for q in [0.5, 0.99] {
        let ratio = |raw: &Histogram<u64>| {
            spin.value_at_quantile(q) as f64 / raw.value_at_quantile(q).max(1) as f64
        };
        println!(
            "ratio block spin / raw at p{}: {:.2}x (raw before), {:.2}x (raw after)",
            q * 100.0,
            ratio(&raw_before),
            ratio(&raw_after)
        );
    }
    let lane_rate = lane_throughput(20_000_000, 256);
    println!(
        "job buffer (one lane, 4-word signals, flush every 256): {:.1} M signals/s",
        lane_rate / 1e6
    );
    let block_rate = block_throughput(10_000_000);
    println!("block to block (two threads, 4-word signals): {:.1} M signals/s", block_rate / 1e6);
}
