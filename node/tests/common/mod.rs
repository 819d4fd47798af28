//! Test blocks and helpers shared by the integration tests: a probe that forwards what it
//! receives to the test thread, a flooder that sends as fast as back-pressure allows, and a
//! sink that checks per-sender order.
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use node::blocks::stats::StatsReport;
use node::{Block, Context, InitContext, NodeBuilder, Tuning};
use signals::{
    gsn, BlockInstance, BlockNumber, BlockRef, Gsn, Limits, NodeId, Priority, SignalView,
};

/// Test block numbers (outside the system range).
pub const PROBE: BlockNumber = BlockNumber(200);
pub const FLOOD: BlockNumber = BlockNumber(201);
pub const SINK: BlockNumber = BlockNumber(202);
pub const PINGER: BlockNumber = BlockNumber(203);
pub const TIMED: BlockNumber = BlockNumber(204);

/// A test-only signal: one sequence-numbered item.
pub const ITEM: Gsn = Gsn(60000);

pub const WAIT: Duration = Duration::from_secs(20);

pub fn node1() -> NodeId {
    NodeId::MIN
}

pub fn inst(i: u8) -> BlockInstance {
    BlockInstance(i)
}

/// What a probe saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub gsn: Gsn,
    pub priority: Priority,
    pub sender: BlockRef,
    pub data: Vec<u32>,
    pub sections: Vec<Vec<u32>>,
    pub report: Option<StatsReport>,
    pub now_ns: u64,
}

/// Forwards every signal except START_ORD to the test thread.
#[derive(Debug)]
pub struct Probe {
    pub tx: mpsc::Sender<Seen>,
}

impl Block for Probe {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        if s.gsn() == gsn::START_ORD {
            return;
        }
        let report = (s.gsn() == gsn::STATS_CONF).then(|| StatsReport::decode(s).unwrap());
        let _ = self.tx.send(Seen {
            gsn: s.gsn(),
            priority: s.priority(),
            sender: s.sender(),
            data: s.data().to_vec(),
            sections: s.sections().map(<[u32]>::to_vec).collect(),
            report,
            now_ns: ctx.now_ns(),
        });
    }
}

/// Sends `count` ITEMs numbered 0.. to `to`, as fast as the job buffer takes them, continuing
/// itself (CONTINUE) whenever the buffer is full.
#[derive(Debug)]
pub struct Flood {
    pub to: BlockRef,
    pub count: u32,
    pub sent: u32,
    pub full_seen: u32,
}

impl Flood {
    fn go(&mut self, ctx: &mut Context<'_>) {
        while self.sent < self.count {
            let words = [self.sent, 0xF00D];
            match ctx.send(&ctx.signal(ITEM, self.to).data(&words)) {
                Ok(()) => self.sent += 1,
                Err(node::SendError::JobBufferFull { .. }) => {
                    self.full_seen += 1;
                    break;
                }
                Err(e) => panic!("unexpected send error: {e}"),
            }
        }
        if self.sent < self.count {
            ctx.continue_later(&[]).unwrap();
        }
    }
}

impl Block for Flood {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::START_ORD | gsn::CONTINUE => self.go(ctx),
            gsn::STOP_REQ => {}
            other => panic!("flood got {other}"),
        }
    }
}

/// Receives ITEMs, checks each sender's are in order, and reports the total when it reaches
/// `expect`.
#[derive(Debug)]
pub struct Sink {
    pub expect: u64,
    pub got: u64,
    pub next: Vec<(BlockRef, u32)>,
    pub done: mpsc::Sender<u64>,
}

impl Block for Sink {
    fn execute(&mut self, s: &SignalView<'_>, _ctx: &mut Context<'_>) {
        if s.gsn() != ITEM {
            return;
        }
        let seq = s.data()[0];
        match self.next.iter_mut().find(|(r, _)| *r == s.sender()) {
            Some((_, next)) => {
                assert_eq!(seq, *next, "out of order from {}", s.sender());
                *next += 1;
            }
            None => {
                assert_eq!(seq, 0, "first item from {} is not 0", s.sender());
                self.next.push((s.sender(), 1));
            }
        }
        self.got += 1;
        if self.got == self.expect {
            let _ = self.done.send(self.got);
        }
    }
}

/// Pings `targets` in turn `rounds` times with a sequence word and a section, checks each
/// answer, then reports the number of round trips.
#[derive(Debug)]
pub struct Pinger {
    pub targets: Vec<BlockRef>,
    pub rounds: u32,
    pub done_count: u32,
    pub done: mpsc::Sender<(BlockRef, u32)>,
    pub answered: Option<node::CounterId>,
}

impl Pinger {
    fn ping(&mut self, ctx: &mut Context<'_>) {
        let to = self.targets[self.done_count as usize % self.targets.len()];
        let words = [self.done_count, ctx.me().to_word()];
        let section = [self.done_count; 5];
        ctx.send(&ctx.signal(gsn::PING_REQ, to).data(&words).sections(&[&section])).unwrap();
    }
}

impl Block for Pinger {
    fn init(&mut self, init: &mut InitContext<'_>) {
        self.answered = Some(init.counter("answers"));
    }

    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::START_ORD => self.ping(ctx),
            gsn::PING_CONF => {
                let expected_from = self.targets[self.done_count as usize % self.targets.len()];
                assert_eq!(s.sender(), expected_from);
                assert_eq!(s.data(), &[self.done_count, ctx.me().to_word()]);
                assert_eq!(s.section(0), Some(&[self.done_count; 5][..]));
                if let Some(c) = self.answered {
                    ctx.bump(c, 1);
                }
                self.done_count += 1;
                if self.done_count == self.rounds {
                    let _ = self.done.send((ctx.me(), self.done_count));
                } else {
                    self.ping(ctx);
                }
            }
            gsn::STOP_REQ => {}
            other => panic!("pinger got {other}"),
        }
    }
}

/// Small job buffers: 2 pages of 128 words (signals up to 128 words).
pub fn tiny_tuning() -> Tuning {
    Tuning {
        spin_time_us: 20,
        b_signals_per_round: 16,
        job_buffer_pages: 2,
        job_buffer_page_words: 128,
        timers_per_thread: 16,
        limits: Limits::new(64, 128).unwrap(),
    }
}

pub fn builder(threads: usize, tuning: Tuning) -> NodeBuilder {
    NodeBuilder::new(node1(), threads, tuning).unwrap()
}

/// Waits up to 20 s for a spawned data-node process to exit.
pub fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "the data node did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port free now, below the kernel's ephemeral range. A port the kernel hands out for
/// binding to port 0 comes from that range, and so do the local ports of outgoing connections
/// (this test's own nodes connecting, or tests running beside it): one of those could take it
/// between this pick and the node's bind, which then fails with "address in use".
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(10_001, 65_535);
    let span = low - 10_000;
    // Different in each test process, so two of them side by side rarely try the same port.
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + seed.wrapping_add(n.wrapping_mul(40_503)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port from 10000 to {low}")
}
