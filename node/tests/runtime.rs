//! The block runtime end to end, inside one process: ordering, priorities, timers,
//! back-pressure, a 3-thread ping-pong, statistics and the remote seam.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use common::*;
use node::blocks::{self, ping::Echo, stats::Statistics};
use node::{Flushed, ManualClock, RemoteError, RemoteFactory, RemoteSink, RouteError, Tuning};
use signals::{
    gsn, BatchWalker, BatchWriter, BlockRef, NodeId, Priority, Signal, SignalView, WriteOptions,
};

/// Items from blocks on three threads (one of them the receiver's own) to one receiver arrive
/// in send order per sender, and all of them arrive.
#[test]
fn order_per_sender_receiver_pair_across_threads() {
    let (done_tx, done_rx) = mpsc::channel();
    let mut b = builder(3, Tuning::default());
    let sink = b
        .place(
            2,
            SINK,
            inst(0),
            Box::new(Sink { expect: 3 * 5000, got: 0, next: vec![], done: done_tx }),
        )
        .unwrap();
    for (i, thread) in [0usize, 1, 2].into_iter().enumerate() {
        let flood = Flood { to: sink, count: 5000, sent: 0, full_seen: 0 };
        b.place(thread, FLOOD, inst(i as u8), Box::new(flood)).unwrap();
    }
    let node = b.start().unwrap();
    assert_eq!(done_rx.recv_timeout(WAIT).unwrap(), 15000);
    node.stop().unwrap();
}

/// With B signals and then one A signal waiting, the A signal runs first.
#[test]
fn priority_a_runs_before_b() {
    let (tx, rx) = mpsc::channel();
    let mut b = builder(1, Tuning::default()).receive_paths(1);
    let probe = b.place(0, PROBE, inst(0), Box::new(Probe { tx })).unwrap();
    let mut node = b.start().unwrap();
    let mut router = node.take_inbound(0).unwrap();
    // Ten B signals and one A signal published in one batch: the thread sees them together.
    for i in 0..10u32 {
        router.send(&Signal::new(ITEM, probe, probe).data(&[i])).unwrap();
    }
    router.send(&Signal::new(ITEM, probe, probe).data(&[99]).priority(Priority::A)).unwrap();
    router.flush();
    let order: Vec<(Priority, u32)> =
        (0..11).map(|_| rx.recv_timeout(WAIT).unwrap()).map(|s| (s.priority, s.data[0])).collect();
    assert_eq!(order[0], (Priority::A, 99), "{order:?}");
    let b_items: Vec<u32> = order[1..]
        .iter()
        .map(|(p, d)| {
            assert_eq!(*p, Priority::B);
            *d
        })
        .collect();
    assert_eq!(b_items, (0..10).collect::<Vec<_>>());
    node.stop().unwrap();
}

/// A block whose every item waits for a go-ahead (or for the sender of go-aheads to go): its
/// thread takes nothing more meanwhile.
#[derive(Debug)]
struct Stall {
    go: mpsc::Receiver<()>,
}

impl node::Block for Stall {
    fn execute(&mut self, s: &SignalView<'_>, _ctx: &mut node::Context<'_>) {
        if s.gsn() == ITEM {
            let _ = self.go.recv_timeout(WAIT);
        }
    }
}

/// A receive path whose priority-A lane is full waits for room in that lane, not in the B lane
/// (which has room: with it, the waiting returned at once and the receive thread spun).
#[test]
fn a_full_a_lane_is_waited_for_itself() {
    let (go_tx, go) = mpsc::channel();
    let mut b = builder(1, Tuning::default()).receive_paths(1);
    let stall = b.place(0, PROBE, inst(0), Box::new(Stall { go })).unwrap();
    let mut node = b.start().unwrap();
    let mut router = node.take_inbound(0).unwrap();
    let item = [7u32];
    let a = Signal::new(ITEM, stall, stall).data(&item).priority(Priority::A);
    let mut sent = 0u32;
    loop {
        match router.send(&a) {
            Ok(()) => sent += 1,
            Err(RouteError::Full { thread: 0, priority: Priority::A }) => break,
            Err(e) => panic!("{e}"),
        }
        router.flush();
        assert!(sent < 1_000_000, "the A lane never filled");
    }
    // The B lane has room, the A lane none while the block stalls.
    assert!(!router.wait_for_room(0, Priority::A, std::time::Duration::from_millis(100)));
    assert!(router.wait_for_room(0, Priority::B, std::time::Duration::from_millis(100)));
    // Let the block run: room comes back in the A lane.
    drop(go_tx);
    assert!(router.wait_for_room(0, Priority::A, WAIT));
    router.send(&a).unwrap();
    router.flush();
    node.stop().unwrap();
}

/// A block that sets timers at start and forwards each firing to a probe-like channel.
#[derive(Debug)]
struct Timed {
    tx: mpsc::Sender<(u32, u64)>,
}

impl node::Block for Timed {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut node::Context<'_>) {
        match s.gsn() {
            gsn::START_ORD => {
                for (delay_ms, tag) in [(30u64, 30u32), (10, 10), (20, 20), (20, 21)] {
                    ctx.send_delayed(delay_ms * 1_000_000, gsn::CONTINUE, &[tag]).unwrap();
                }
            }
            gsn::CONTINUE => {
                let _ = self.tx.send((s.data()[0], ctx.now_ns()));
            }
            _ => {}
        }
    }
}

/// Timers fire in due order (ties in set order) and never before they are due.
#[test]
fn timers_fire_in_order_and_not_early() {
    let clock = ManualClock::new();
    let (tx, rx) = mpsc::channel();
    let mut b = builder(1, Tuning::default()).clock(Arc::new(clock.clone()));
    b.place(0, TIMED, inst(0), Box::new(Timed { tx })).unwrap();
    let node = b.start().unwrap();
    let ms = 1_000_000;
    let quiet = std::time::Duration::from_millis(250);
    clock.advance_ns(5 * ms);
    assert!(rx.recv_timeout(quiet).is_err(), "a timer fired early");
    clock.advance_ns(10 * ms); // 15 ms
    let (tag, at) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(tag, 10);
    assert!(at >= 10 * ms);
    assert!(rx.recv_timeout(quiet).is_err(), "a timer fired early");
    clock.advance_ns(10 * ms); // 25 ms
    assert_eq!(rx.recv_timeout(WAIT).unwrap().0, 20);
    assert_eq!(rx.recv_timeout(WAIT).unwrap().0, 21);
    assert!(rx.recv_timeout(quiet).is_err(), "a timer fired early");
    clock.advance_ns(10 * ms); // 35 ms
    let (tag, at) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((tag, at >= 30 * ms), (30, true));
    node.stop().unwrap();
}

/// A block that breaks its work into `steps` continuation steps of 0 delay, and reports the
/// last.
#[derive(Debug)]
struct Chain {
    steps: u32,
    done: mpsc::Sender<u32>,
}

impl node::Block for Chain {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut node::Context<'_>) {
        let step = match s.gsn() {
            gsn::START_ORD => 0,
            gsn::CONTINUE => s.data()[0] + 1,
            _ => return,
        };
        if step == self.steps {
            let _ = self.done.send(step);
        } else {
            ctx.send_delayed(0, gsn::CONTINUE, &[step]).unwrap();
        }
    }
}

/// Continuation steps of 0 delay run one per round, on a clock that never moves: a step set
/// while the round's timers fire waits for the next round instead of holding this one.
#[test]
fn zero_delay_continuation_steps_run_one_per_round() {
    let clock = ManualClock::new();
    let (tx, rx) = mpsc::channel();
    let steps = 2_000;
    let mut b = builder(1, Tuning::default()).clock(Arc::new(clock.clone()));
    b.place(0, TIMED, inst(0), Box::new(Chain { steps, done: tx })).unwrap();
    let node = b.start().unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), steps);
    let stats = node.stats().clone();
    node.stop().unwrap();
    // Read after the stop, which publishes the last round.
    let rounds = stats.threads()[0].snapshot().rounds;
    assert!(rounds >= u64::from(steps), "{steps} steps ran in {rounds} rounds");
}

/// Two threads flood one receiver through job buffers of two 128-word pages: senders see
/// back-pressure, nothing deadlocks, nothing is lost or reordered, and no queue grows.
#[test]
fn back_pressure_from_two_threads_without_deadlock() {
    let (done_tx, done_rx) = mpsc::channel();
    let mut b = builder(3, tiny_tuning());
    let n = 20_000;
    let sink = b
        .place(
            2,
            SINK,
            inst(0),
            Box::new(Sink { expect: 2 * n as u64, got: 0, next: vec![], done: done_tx }),
        )
        .unwrap();
    b.place(0, FLOOD, inst(0), Box::new(Flood { to: sink, count: n, sent: 0, full_seen: 0 }))
        .unwrap();
    b.place(1, FLOOD, inst(1), Box::new(Flood { to: sink, count: n, sent: 0, full_seen: 0 }))
        .unwrap();
    let node = b.start().unwrap();
    assert_eq!(done_rx.recv_timeout(WAIT).unwrap(), 2 * n as u64);
    let stats = node.stats().clone();
    node.stop().unwrap();
    let t = stats.threads();
    let pressure = t[0].snapshot().congested_rounds + t[1].snapshot().congested_rounds;
    let full = t[0].snapshot().send_failures + t[1].snapshot().send_failures;
    assert!(pressure > 0 || full > 0, "the senders never saw back-pressure");
}

/// Two threads flood each other's tiny job buffers at once: each is congested towards the
/// other, the cycle that deadlocks a sender blocking on a full bounded queue; here each keeps
/// draining the lane from the thread it waits on, so both finish.
#[test]
fn two_threads_flooding_each_other_do_not_deadlock() {
    let (done_tx, done_rx) = mpsc::channel();
    let mut b = builder(2, tiny_tuning());
    let n = 10_000;
    let sink0 = BlockRef::new(node1(), SINK, inst(0));
    let sink1 = BlockRef::new(node1(), SINK, inst(1));
    b.place(
        0,
        SINK,
        inst(0),
        Box::new(Sink { expect: n as u64, got: 0, next: vec![], done: done_tx.clone() }),
    )
    .unwrap();
    b.place(
        1,
        SINK,
        inst(1),
        Box::new(Sink { expect: n as u64, got: 0, next: vec![], done: done_tx }),
    )
    .unwrap();
    b.place(0, FLOOD, inst(0), Box::new(Flood { to: sink1, count: n, sent: 0, full_seen: 0 }))
        .unwrap();
    b.place(1, FLOOD, inst(1), Box::new(Flood { to: sink0, count: n, sent: 0, full_seen: 0 }))
        .unwrap();
    let node = b.start().unwrap();
    assert_eq!(done_rx.recv_timeout(WAIT).unwrap(), n as u64);
    assert_eq!(done_rx.recv_timeout(WAIT).unwrap(), n as u64);
    node.stop().unwrap();
}

/// Panics on its first ITEM (a block with a bug).
#[derive(Debug)]
struct Bomb;

impl node::Block for Bomb {
    fn execute(&mut self, s: &SignalView<'_>, _ctx: &mut node::Context<'_>) {
        if s.gsn() == ITEM {
            panic!("bomb block went off");
        }
    }
}

/// A block that panics stops its node at once (every thread told, the panic reported at the
/// stop): before, its thread died alone and the rest ran on, filling its job buffers.
#[test]
fn a_panicking_block_stops_the_node() {
    let (tx, rx) = mpsc::channel();
    let mut b = builder(2, Tuning::default()).receive_paths(1);
    let bomb = b.place(0, PROBE, inst(0), Box::new(Bomb)).unwrap();
    let probe = b.place(1, PROBE, inst(1), Box::new(Probe { tx })).unwrap();
    let mut node = b.start().unwrap();
    let stopper = node.stopper();
    let mut router = node.take_inbound(0).unwrap();
    // Thread 1 serves until then.
    router.send(&Signal::new(ITEM, probe, probe).data(&[1])).unwrap();
    router.flush();
    assert_eq!(rx.recv_timeout(WAIT).unwrap().data, [1]);
    assert!(!stopper.is_stopping());
    router.send(&Signal::new(ITEM, bomb, bomb).data(&[2])).unwrap();
    router.flush();
    assert!(stopper.wait(Some(WAIT)), "the node ran on after a block panicked");
    assert_eq!(node.stop(), Err(node::runtime::ThreadPanicked { thread: 0 }));
}

/// A thread congested on another (whose block is stalled) still drains a receive path that
/// waits on it: before, it ran B signals only from its congested target's lane, and the
/// receive thread waited for as long as the other thread stalled.
#[test]
fn a_congested_thread_drains_a_receive_path_that_waits_on_it() {
    let (go_tx, go) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let mut b = builder(2, tiny_tuning()).receive_paths(1);
    let stall = b.place(1, PROBE, inst(1), Box::new(Stall { go })).unwrap();
    b.place(
        0,
        FLOOD,
        inst(0),
        Box::new(Flood { to: stall, count: 1_000_000, sent: 0, full_seen: 0 }),
    )
    .unwrap();
    let probe = b.place(0, PROBE, inst(0), Box::new(Probe { tx })).unwrap();
    let mut node = b.start().unwrap();
    let stats = node.stats().clone();
    let deadline = std::time::Instant::now() + WAIT;
    while stats.threads()[0].snapshot().congested_rounds == 0 {
        assert!(std::time::Instant::now() < deadline, "thread 0 never became congested");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut router = node.take_inbound(0).unwrap();
    let mut sent = 0u32;
    loop {
        match router.send(&Signal::new(ITEM, probe, probe).data(&[sent])) {
            Ok(()) => sent += 1,
            Err(RouteError::Full { thread: 0, priority: Priority::B }) => break,
            Err(e) => panic!("{e}"),
        }
        router.flush();
    }
    // As a receive thread does: wait again until there is room (one wait may end at a first,
    // partial release).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut drained = false;
    while !drained && std::time::Instant::now() < until {
        drained = router.wait_for_room(0, Priority::B, std::time::Duration::from_millis(10));
    }
    // Let the stalled block go before any assertion, so a failure does not hang the stop.
    drop(go_tx);
    assert!(drained, "thread 0 did not drain the receive path's lane while congested on thread 1");
    for i in 0..sent {
        assert_eq!(rx.recv_timeout(WAIT).unwrap().data, [i]);
    }
    node.stop().unwrap();
}

/// Forwards ITEMs round a ring of relays: each starts `count` items of its own with `hops`
/// hops to go, passes on every item with hops left (keeping what a full job buffer refused, in
/// order, for a later step), and reports when `count` items have ended here.
#[derive(Debug)]
struct Relay {
    next: BlockRef,
    count: u32,
    hops: u32,
    backlog: std::collections::VecDeque<[u32; 2]>,
    continuing: bool,
    ended: u32,
    done: mpsc::Sender<u32>,
}

impl Relay {
    fn drain(&mut self, ctx: &mut node::Context<'_>) {
        while let Some(item) = self.backlog.front() {
            match ctx.send(&ctx.signal(ITEM, self.next).data(item)) {
                Ok(()) => {
                    self.backlog.pop_front();
                }
                Err(node::SendError::JobBufferFull { .. }) => {
                    if !self.continuing {
                        self.continuing = true;
                        ctx.continue_later(&[]).unwrap();
                    }
                    return;
                }
                Err(e) => panic!("relay send: {e}"),
            }
        }
    }
}

impl node::Block for Relay {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut node::Context<'_>) {
        match s.gsn() {
            gsn::START_ORD => self.backlog.extend((0..self.count).map(|seq| [seq, self.hops])),
            gsn::CONTINUE => self.continuing = false,
            ITEM => {
                let [seq, hops] = [s.data()[0], s.data()[1]];
                if hops == 0 {
                    self.ended += 1;
                    if self.ended == self.count {
                        let _ = self.done.send(self.ended);
                    }
                } else {
                    self.backlog.push_back([seq, hops - 1]);
                }
            }
            gsn::STOP_REQ => {}
            other => panic!("relay got {other}"),
        }
        self.drain(ctx);
    }
}

/// Three threads forward B signals round a ring (0 to 1 to 2 to 0) through tiny job buffers,
/// all three congested at once: each must still drain the lane of the thread that waits on it,
/// or the ring deadlocks (two threads congested on each other is the case the direct rule
/// covers; a cycle of three is not).
#[test]
fn three_threads_forwarding_round_a_ring_do_not_deadlock() {
    let (done_tx, done_rx) = mpsc::channel();
    let mut b = builder(3, tiny_tuning());
    let count = 3_000;
    let relay = |t: u8| BlockRef::new(node1(), SINK, inst(t));
    for t in 0..3u8 {
        let relay_block = Relay {
            next: relay((t + 1) % 3),
            count,
            hops: 5,
            backlog: Default::default(),
            continuing: false,
            ended: 0,
            done: done_tx.clone(),
        };
        b.place(t as usize, SINK, inst(t), Box::new(relay_block)).unwrap();
    }
    let node = b.start().unwrap();
    for _ in 0..3 {
        assert_eq!(done_rx.recv_timeout(WAIT).expect("the ring deadlocked"), count);
    }
    let stats = node.stats().clone();
    node.stop().unwrap();
    let congested: u64 = stats.threads().iter().map(|t| t.snapshot().congested_rounds).sum();
    assert!(congested > 0, "the lanes never filled: the test did not reach congestion");
}

/// Three threads: pingers on two threads ping echo blocks on all three, alternating targets.
#[test]
fn three_thread_ping_pong_routes_among_blocks() {
    let (done_tx, done_rx) = mpsc::channel();
    let mut b = builder(3, Tuning::default());
    let echoes: Vec<BlockRef> = (0..3)
        .map(|t| b.place(t, blocks::PING, inst(t as u8), Box::new(Echo::new())).unwrap())
        .collect();
    let rounds = 3000;
    let mut pingers = vec![];
    for (i, thread) in [0usize, 1].into_iter().enumerate() {
        let p = Pinger {
            targets: echoes.clone(),
            rounds,
            done_count: 0,
            done: done_tx.clone(),
            answered: None,
        };
        pingers.push(b.place(thread, PINGER, inst(i as u8), Box::new(p)).unwrap());
    }
    let node = b.start().unwrap();
    let mut finished: Vec<BlockRef> = (0..2)
        .map(|_| done_rx.recv_timeout(WAIT).unwrap())
        .map(|(r, n)| {
            assert_eq!(n, rounds);
            r
        })
        .collect();
    finished.sort();
    assert_eq!(finished, pingers);
    let stats = node.stats().clone();
    node.stop().unwrap();
    for p in &pingers {
        assert_eq!(stats.named_value(*p, "answers"), Some(rounds as u64));
    }
    let answered: u64 =
        echoes.iter().map(|e| stats.named_value(*e, "pings_answered").unwrap()).sum();
    assert_eq!(answered, 2 * rounds as u64);
}

/// Links with made-up counters, for the statistics block.
#[derive(Debug)]
struct FakeLinks(Vec<node::stats::LinkCounters>);

impl node::stats::LinkStatsSource for FakeLinks {
    fn for_each_link(&self, each: &mut dyn FnMut(node::stats::LinkCounters)) {
        self.0.iter().copied().for_each(each);
    }
}

fn fake_link(peer: u32, base: u64) -> node::stats::LinkCounters {
    node::stats::LinkCounters {
        peer: NodeId::new(peer),
        signals: base + 1,
        bytes: base + 2,
        batches: base + 3,
        wakeups_sent: base + 4,
        send_buffer_high_water_bytes: base + 5,
        receiver_sleeps: base + 6,
        cq_events: base + 7,
    }
}

/// The statistics block answers STATS_REQ with per-thread counters that match the node's, and
/// the per-link counters of its link source.
#[test]
fn statistics_block_reports_thread_counters() {
    let (tx, rx) = mpsc::channel();
    let mut b = builder(2, Tuning::default()).receive_paths(1);
    let stats_ref = b
        .place(
            0,
            blocks::STATS,
            inst(0),
            Box::new(Statistics::new(b.stats(), Tuning::default().limits)),
        )
        .unwrap();
    let probe = b.place(1, PROBE, inst(0), Box::new(Probe { tx })).unwrap();
    let links = vec![fake_link(3, 10), fake_link(7, 1 << 40)];
    assert!(b.stats().set_link_source(Arc::new(FakeLinks(links.clone()))));
    let mut node = b.start().unwrap();
    let mut router = node.take_inbound(0).unwrap();
    router.send(&Signal::new(gsn::STATS_REQ, probe, stats_ref).data(&[42])).unwrap();
    router.flush();
    let first = rx.recv_timeout(WAIT).unwrap().report.unwrap();
    assert_eq!(first.request, 42);
    assert_eq!(first.threads.len(), 2);
    // Thread 0 published at least the statistics block's START_ORD.
    assert!(first.threads[0].signals_run >= 1, "{first:?}");
    // Every link counter survives the trip through STATS_CONF, 64-bit values included.
    assert_eq!(first.links, links);
    // The probe's named counters are absent (it registered none); ask again: the first
    // request's round has been published by now.
    router.send(&Signal::new(gsn::STATS_REQ, probe, stats_ref).data(&[43])).unwrap();
    router.flush();
    let second = rx.recv_timeout(WAIT).unwrap().report.unwrap();
    assert_eq!(second.request, 43);
    assert!(second.threads[0].signals_run >= 2, "{second:?}");
    assert!(second.threads[0].rounds >= 1, "{second:?}");
    assert!(second.threads[1].signals_run >= 1, "the probe ran START_ORD: {second:?}");
    node.stop().unwrap();
}

/// With sections as long as the largest signal allows, the three of them together are still
/// kept within one signal: the answer arrives (with fewer entries), instead of being refused as
/// too long and never sent.
#[test]
fn statistics_answer_fits_one_signal_with_the_longest_sections() {
    let (tx, rx) = mpsc::channel();
    let section_max = 128 - signals::limits::OVERHEAD_WORDS_MAX as u64;
    let limits = signals::Limits::new(section_max, 128).unwrap();
    let tuning = Tuning { limits, ..Tuning::default() };
    // Eight threads of 12 words and twenty links of 15: each section alone fills up to its
    // limit, and the two together are more than a signal.
    let mut b = builder(8, tuning).receive_paths(1);
    let stats_ref =
        b.place(0, blocks::STATS, inst(0), Box::new(Statistics::new(b.stats(), limits))).unwrap();
    let probe = b.place(1, PROBE, inst(0), Box::new(Probe { tx })).unwrap();
    let links: Vec<_> = (0..20).map(|i| fake_link(10 + i, u64::from(i))).collect();
    assert!(b.stats().set_link_source(Arc::new(FakeLinks(links.clone()))));
    let mut node = b.start().unwrap();
    let mut router = node.take_inbound(0).unwrap();
    router.send(&Signal::new(gsn::STATS_REQ, probe, stats_ref).data(&[5])).unwrap();
    router.flush();
    let report = rx.recv_timeout(WAIT).expect("the statistics answer").report.unwrap();
    assert_eq!(report.request, 5);
    // Entries are kept in order, as many as fit.
    assert!(!report.threads.is_empty() && !report.links.is_empty(), "{report:?}");
    assert_eq!(report.links[..], links[..report.links.len()]);
    // Header, 4 data words, 3 section lengths, a signal id and a checksum at most, and the
    // sections: within the 128 words of a signal.
    let sections = report.threads.len() * 12 + report.links.len() * 15;
    assert!(signals::HEADER_BYTES / 4 + 9 + sections <= 128, "{sections} words of sections");
    node.stop().unwrap();
}

/// What the recording sink saw.
#[derive(Debug, Default)]
struct Recorded {
    packed: Vec<(NodeId, u16, Vec<u32>)>,
    flushes: usize,
    inbound: Vec<u32>,
}

#[derive(Debug)]
struct RecordingSink {
    log: Arc<Mutex<Recorded>>,
}

impl RemoteSink for RecordingSink {
    fn pack(&mut self, peer: NodeId, signal: &Signal<'_>) -> Result<(), RemoteError> {
        if peer.get() == 9 {
            return Err(RemoteError::UnknownPeer { peer });
        }
        self.log.lock().unwrap().packed.push((peer, signal.gsn.0, signal.data.to_vec()));
        Ok(())
    }
    fn flush(&mut self) -> Flushed {
        let mut log = self.log.lock().unwrap();
        let pending = log.packed.len() > log.flushes;
        if pending {
            log.flushes += 1;
        }
        Flushed { peers: pending as usize, moved: pending, blocked: false }
    }
    fn poll(&mut self, route: &mut dyn FnMut(&SignalView<'_>) -> Result<(), RouteError>) -> usize {
        let batch = std::mem::take(&mut self.log.lock().unwrap().inbound);
        let mut routed = 0;
        for view in BatchWalker::from_words(&batch, signals::Limits::default()) {
            route(&view.unwrap()).unwrap();
            routed += 1;
        }
        routed
    }
    fn has_input(&self) -> bool {
        !self.log.lock().unwrap().inbound.is_empty()
    }
}

#[derive(Debug)]
struct Recording(Arc<Mutex<Recorded>>);

impl RemoteFactory for Recording {
    fn sink(&self, _thread: usize) -> Box<dyn RemoteSink> {
        Box::new(RecordingSink { log: self.0.clone() })
    }
}

/// Places on thread 0 a pinger that pings node 2's echo block once at start; returns that block.
fn ping_node_two(b: &mut node::NodeBuilder) -> BlockRef {
    let remote = BlockRef::new(NodeId::new(2).unwrap(), blocks::PING, inst(0));
    let pinger = Pinger {
        targets: vec![remote],
        rounds: 1,
        done_count: 0,
        done: mpsc::channel().0,
        answered: None,
    };
    b.place(0, PINGER, inst(0), Box::new(pinger)).unwrap();
    remote
}

/// Signals to other nodes go through the remote sink; what the sink receives is routed to the
/// local block it names.
#[test]
fn remote_seam_packs_outbound_and_routes_inbound() {
    let log = Arc::new(Mutex::new(Recorded::default()));
    let (tx, rx) = mpsc::channel();
    let mut b = builder(2, Tuning::default()).remote(Box::new(Recording(log.clone())));
    let probe = b.place(1, PROBE, inst(0), Box::new(Probe { tx })).unwrap();
    let remote = ping_node_two(&mut b);
    let node = b.start().unwrap();
    // The pinger's PING_REQ to node 2 reaches the sink; the sink's inbound batch for the local
    // probe is routed to thread 1.
    let deadline = std::time::Instant::now() + WAIT;
    while log.lock().unwrap().flushes == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing was flushed to the remote sink");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    {
        let l = log.lock().unwrap();
        assert_eq!(l.packed[0].0, NodeId::new(2).unwrap());
        assert_eq!(l.packed[0].1, gsn::PING_REQ.0);
    }
    let mut page = [0u32; 64];
    let mut w = BatchWriter::new(&mut page, signals::Limits::default(), WriteOptions::default());
    w.push(&Signal::new(gsn::PING_CONF, remote, probe).data(&[5, 6])).unwrap();
    log.lock().unwrap().inbound = w.words().to_vec();
    // No doorbell here: a sleeping thread checks its sink's `has_input` at least every 100 ms.
    let seen = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((seen.gsn, seen.sender, seen.data), (gsn::PING_CONF, remote, vec![5, 6]));
    node.stop().unwrap();
}

/// A peer that takes nothing until `open` is set: what a full socket or ring looks like to a
/// block thread's sink.
#[derive(Debug, Default)]
struct Stalled {
    open: AtomicBool,
    waiting: AtomicU64,
    written: AtomicU64,
    flushes: AtomicU64,
}

#[derive(Debug)]
struct StalledSink(Arc<Stalled>);

impl RemoteSink for StalledSink {
    fn pack(&mut self, _peer: NodeId, _signal: &Signal<'_>) -> Result<(), RemoteError> {
        self.0.waiting.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn flush(&mut self) -> Flushed {
        let s = &self.0;
        s.flushes.fetch_add(1, Ordering::Relaxed);
        let waiting = s.waiting.load(Ordering::Relaxed);
        if waiting == 0 {
            return Flushed::default();
        }
        if !s.open.load(Ordering::Relaxed) {
            return Flushed { peers: 1, moved: false, blocked: true };
        }
        s.waiting.store(0, Ordering::Relaxed);
        s.written.fetch_add(waiting, Ordering::Relaxed);
        Flushed { peers: 1, moved: true, blocked: false }
    }
    fn has_unsent(&self) -> bool {
        self.0.waiting.load(Ordering::Relaxed) > 0
    }
}

#[derive(Debug)]
struct StalledFactory(Arc<Stalled>);

impl RemoteFactory for StalledFactory {
    fn sink(&self, _thread: usize) -> Box<dyn RemoteSink> {
        Box::new(StalledSink(self.0.clone()))
    }
}

/// A block thread whose only work is a signal a stalled peer will not take does not spin on
/// it: it retries on a back-off and sleeps between tries (a handful of flushes a millisecond at
/// most, not one per round), and the signal goes out as soon as the peer takes it again.
#[test]
fn a_stalled_peer_does_not_keep_the_thread_spinning() {
    let stalled = Arc::new(Stalled::default());
    let mut b = builder(1, Tuning::default()).remote(Box::new(StalledFactory(stalled.clone())));
    ping_node_two(&mut b);
    let node = b.start().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while stalled.flushes.load(Ordering::Relaxed) < 20 {
        assert!(std::time::Instant::now() < deadline, "the thread stopped flushing");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(stalled.waiting.load(Ordering::Relaxed), 1, "the ping waits for the peer");
    let thread = || node.stats().threads()[0].snapshot();
    let (flushes, before) = (stalled.flushes.load(Ordering::Relaxed), thread());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (flushes, after) = (stalled.flushes.load(Ordering::Relaxed) - flushes, thread());
    // One retry a millisecond once the back-off is at its cap: about 300 here. A thread that
    // spun on the unsent signal would flush once a round, millions of times.
    assert!(flushes < 3000, "{flushes} flushes in 300 ms behind a stalled peer");
    assert!(after.sleeps - before.sleeps >= 20, "slept {} times", after.sleeps - before.sleeps);
    stalled.open.store(true, Ordering::Relaxed);
    while stalled.written.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "the ping never went out");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(stalled.waiting.load(Ordering::Relaxed), 0);
    node.stop().unwrap();
}

/// Runs a 2-thread ping-pong of `rounds` with `spin_time_us`; returns (sleeps, wakeups).
fn ping_pong_sleeps(spin_time_us: u64, rounds: u32) -> (u64, u64) {
    let (done_tx, done_rx) = mpsc::channel();
    let mut b = builder(2, Tuning { spin_time_us, ..Tuning::default() });
    let echo = b.place(1, blocks::PING, inst(0), Box::new(Echo::new())).unwrap();
    let p = Pinger { targets: vec![echo], rounds, done_count: 0, done: done_tx, answered: None };
    b.place(0, PINGER, inst(0), Box::new(p)).unwrap();
    let node = b.start().unwrap();
    assert_eq!(done_rx.recv_timeout(WAIT).unwrap().1, rounds);
    let stats = node.stats().clone();
    let parker_rings: u64 = (0..2).map(|t| node.parker(t).unwrap().wakeups_sent_to()).sum();
    node.stop().unwrap();
    let s: Vec<_> = stats.threads().iter().map(|t| t.snapshot()).collect();
    let (sleeps, wakeups) = (s[0].sleeps + s[1].sleeps, s[0].wakeups + s[1].wakeups);
    assert!(wakeups <= sleeps, "a wakeup without a sleep: {s:?}");
    // Rings counted by senders before the stop; each ended (or will end) one sleep.
    assert!(parker_rings <= sleeps + 2, "senders rang {parker_rings} times for {sleeps} sleeps");
    (sleeps, wakeups)
}

/// Spinning threads in a conversation are never woken (senders see no sleep mark); threads
/// that sleep at once are woken through their doorbell, one wakeup per sleep at most.
#[test]
fn wakeups_are_counted_and_only_sent_to_sleepers() {
    let (_, spin_wakeups) = ping_pong_sleeps(1_000_000, 2000);
    assert_eq!(spin_wakeups, 0, "a spinning thread was woken");
    let (sleeps, wakeups) = ping_pong_sleeps(0, 200);
    assert!(
        sleeps > 0 && wakeups > 0,
        "sleep mode never slept or was never woken: {sleeps} {wakeups}"
    );
}

/// A receive thread (as the transporter wiring will run one) routes signals in through its
/// router, sleeps in its own epoll set, and is woken and joined when the node stops.
#[test]
fn receive_thread_routes_in_and_stops_with_the_node() {
    let (tx, rx) = mpsc::channel();
    let mut b = builder(1, Tuning::default()).receive_paths(1);
    let probe = b.place(0, PROBE, inst(0), Box::new(Probe { tx })).unwrap();
    let mut node = b.start().unwrap();
    node.spawn_receive_thread(0, None, move |mut router, stopper| {
        for i in 0..3u32 {
            router.send(&Signal::new(ITEM, probe, probe).data(&[i])).unwrap();
        }
        router.flush();
        while !stopper.is_stopping() {
            router.parker().announce();
            if stopper.is_stopping() {
                router.parker().retract();
                break;
            }
            let _ = router.parker().wait(None);
            router.parker().retract();
        }
    })
    .unwrap();
    let got: Vec<u32> = (0..3).map(|_| rx.recv_timeout(WAIT).unwrap().data[0]).collect();
    assert_eq!(got, vec![0, 1, 2]);
    assert!(node.spawn_receive_thread(0, None, |_, _| {}).is_err(), "a path has one router");
    node.stop().unwrap();
}
