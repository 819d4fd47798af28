//! The runtime's block API beyond signals, on real block threads: start phases and the ordered
//! stop, payload checks (a signal of the wrong length is a counted drop), duplicate protocols
//! refused at start, cancelled timers, descriptors watched through the thread's wait set, and
//! node events delivered to subscribed blocks in order.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{inst, node1, Probe, PROBE, WAIT};
use node::blocks::{self, ping::Echo};
use node::runtime::failrep_reason;
use node::{Block, Context, InitContext, NodeBuilder, StartError, Tuning};
use signals::gsn::StartOrd;
use signals::{gsn, BlockNumber, NodeId, Priority, Signal, SignalView};
use transporter::{LinkEvent, TransportKind};

const PHASED: BlockNumber = BlockNumber(210);

fn builder(threads: usize) -> NodeBuilder {
    NodeBuilder::new(node1(), threads, Tuning::default()).unwrap()
}

/// Records the phases it runs into `log` as `instance * 100 + phase`; instance 0 defers phase
/// 1 until a timer fires 30 ms later, and defers its stop the same way.
#[derive(Debug)]
struct Phased {
    log: mpsc::Sender<u32>,
    done_phase_1: Arc<AtomicU32>,
}

impl Block for Phased {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        let instance = u32::from(ctx.me().instance.0);
        match s.gsn() {
            gsn::START_ORD => {
                let Some(&StartOrd { phase, last_phase }) = ctx.typed::<StartOrd>(s) else {
                    return;
                };
                assert_eq!(last_phase, 3);
                if phase == 2 {
                    // Every block is done with phase 1 before any runs phase 2.
                    assert_eq!(self.done_phase_1.load(Ordering::SeqCst), 2, "phase 1 not done");
                }
                let _ = self.log.send(instance * 100 + phase);
                if phase == 1 && instance == 0 {
                    ctx.defer_start();
                    ctx.send_delayed(30_000_000, gsn::CONTINUE, &[1]).unwrap();
                } else if phase == 1 {
                    self.done_phase_1.fetch_add(1, Ordering::SeqCst);
                }
            }
            gsn::CONTINUE if s.data() == [1] => {
                self.done_phase_1.fetch_add(1, Ordering::SeqCst);
                ctx.start_done();
            }
            gsn::STOP_REQ => {
                let _ = self.log.send(instance * 100 + 99);
                if instance == 0 {
                    ctx.defer_stop();
                    ctx.send_delayed(20_000_000, gsn::CONTINUE, &[2]).unwrap();
                }
            }
            gsn::CONTINUE if s.data() == [2] => {
                let _ = self.log.send(instance * 100 + 98);
                ctx.stop_done();
            }
            _ => ctx.unhandled(s),
        }
    }
}

#[test]
fn start_phases_run_in_order_and_the_stop_waits_for_deferred_blocks() {
    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicU32::new(0));
    let mut b = builder(2);
    b.start_phases(3);
    for (thread, i) in [(0, 0), (1, 1)] {
        let block = Phased { log: tx.clone(), done_phase_1: done.clone() };
        b.place(thread, PHASED, inst(i), Box::new(block)).unwrap();
    }
    let node = b.start().unwrap();
    assert!(node.wait_started(WAIT), "the node reports started");
    let mut seen: Vec<u32> = rx.try_iter().collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3, 101, 102, 103]);
    node.stop().unwrap();
    let stopped: Vec<u32> = rx.try_iter().collect();
    // Both blocks got STOP_REQ, and the deferring one finished before the threads stopped.
    assert!(stopped.contains(&99) && stopped.contains(&199), "{stopped:?}");
    assert!(
        stopped.contains(&98),
        "the deferred stop finished before the node stopped: {stopped:?}"
    );
}

#[test]
fn a_payload_of_the_wrong_length_is_dropped_and_counted_and_the_block_keeps_serving() {
    let (tx, rx) = mpsc::channel();
    let mut b = builder(1);
    let echo = b.place(0, blocks::PING, inst(0), Box::new(Echo::new())).unwrap();
    let probe = b.place(0, PROBE, inst(0), Box::new(Probe { tx })).unwrap();
    let node = b.start().unwrap();
    // PING_REQ is declared as a one-word head and more: no words is too short.
    node.inject(&Signal::new(gsn::PING_REQ, probe, echo), WAIT).unwrap();
    // A signal the echo block does not handle.
    node.inject(&Signal::new(gsn::HEARTBEAT, probe, echo).data(&[1]), WAIT).unwrap();
    node.inject(&Signal::new(gsn::PING_REQ, probe, echo).data(&[7, 8]), WAIT).unwrap();
    let answer = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((answer.gsn, answer.data), (gsn::PING_CONF, vec![7, 8]));
    let stats = node.stats().clone();
    let deadline = std::time::Instant::now() + WAIT;
    while stats.threads()[0].snapshot().signals_dropped < 2 {
        assert!(std::time::Instant::now() < deadline, "drops not counted");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(stats.threads()[0].snapshot().signals_dropped, 2);
    node.stop().unwrap();
}

signals::protocol! {
    pub protocol CLASHING = "clashing" {
        MY_PING = 2;
    }
}

#[test]
fn a_duplicate_gsn_is_refused_at_start_naming_both() {
    let mut b = builder(1);
    let e = b.protocol(&CLASHING).unwrap_err();
    assert!(matches!(e, StartError::Protocol(_)));
    let text = e.to_string();
    assert!(text.contains("PING_REQ") && text.contains("system"), "{text}");
    assert!(text.contains("MY_PING") && text.contains("clashing"), "{text}");
    let _ = MY_PING;
}

/// Sets two timers at start and cancels the first; reports what fires.
#[derive(Debug)]
struct Canceller {
    fired: mpsc::Sender<Vec<u32>>,
}

impl Block for Canceller {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::START_ORD => {
                let first = ctx.send_delayed(5_000_000, gsn::CONTINUE, &[1]).unwrap();
                ctx.send_delayed_with_section(20_000_000, gsn::CONTINUE, &[2], &[9; 40]).unwrap();
                assert!(ctx.cancel_timer(first));
                assert!(!ctx.cancel_timer(first));
            }
            gsn::CONTINUE => {
                let mut seen = s.data().to_vec();
                seen.extend(s.sections().flatten());
                let _ = self.fired.send(seen);
            }
            gsn::STOP_REQ => {}
            _ => ctx.unhandled(s),
        }
    }
}

#[test]
fn a_cancelled_timer_never_fires() {
    let (tx, rx) = mpsc::channel();
    let mut b = builder(1);
    b.place(0, PROBE, inst(0), Box::new(Canceller { fired: tx })).unwrap();
    let node = b.start().unwrap();
    let fired = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(fired[0], 2, "the second timer fires; the cancelled one does not");
    assert_eq!(fired.len(), 41, "with its 40-word section");
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    node.stop().unwrap();
}

/// Watches a pipe's read end; reports each byte read.
#[derive(Debug)]
struct PipeReader {
    pipe: std::fs::File,
    got: mpsc::Sender<u8>,
}

impl Block for PipeReader {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::START_ORD => ctx.watch_fd(self.pipe.as_raw_fd(), 77).unwrap(),
            gsn::IO_READY => {
                let Some(ready) = ctx.typed::<signals::gsn::IoReady>(s) else { return };
                assert_eq!(ready.token, 77);
                let mut byte = [0u8; 1];
                if std::io::Read::read(&mut self.pipe, &mut byte).unwrap() == 1 {
                    let _ = self.got.send(byte[0]);
                }
            }
            gsn::STOP_REQ => ctx.unwatch_fd(self.pipe.as_raw_fd()).unwrap(),
            _ => ctx.unhandled(s),
        }
    }
}

#[test]
fn a_block_waiting_on_a_pipe_is_called_when_it_is_written_and_its_thread_sleeps_otherwise() {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just made both descriptors; each is owned once, here.
    let (read, mut write) = unsafe {
        use std::os::fd::FromRawFd;
        (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1]))
    };
    let (tx, rx) = mpsc::channel();
    let tuning = Tuning { spin_time_us: 0, ..Tuning::default() };
    let mut b = NodeBuilder::new(node1(), 1, tuning).unwrap();
    b.place(0, PROBE, inst(0), Box::new(PipeReader { pipe: read, got: tx })).unwrap();
    let node = b.start().unwrap();
    assert!(node.wait_started(WAIT));
    let counters = || node.stats().threads()[0].snapshot();
    // Idle: the thread sleeps (each sleep ends at most 100 ms later, with nothing run).
    std::thread::sleep(Duration::from_millis(250));
    let idle = counters();
    std::thread::sleep(Duration::from_millis(250));
    let later = counters();
    assert!(later.sleeps > idle.sleeps, "the thread sleeps while the pipe is empty");
    assert!(later.sleeps - idle.sleeps <= 10, "and does not spin: {idle:?} -> {later:?}");
    assert_eq!(later.signals_run, idle.signals_run, "nothing runs while the pipe is empty");
    write.write_all(&[5]).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 5);
    write.write_all(&[6]).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 6);
    node.stop().unwrap();
}

/// Subscribes to node events; forwards them to the test.
#[derive(Debug)]
struct Watcher {
    seen: mpsc::Sender<(signals::Gsn, Priority, Vec<u32>, String)>,
}

impl Block for Watcher {
    fn init(&mut self, init: &mut InitContext<'_>) {
        init.subscribe_node_events();
    }

    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::NODE_CONNECTED | gsn::NODE_FAILREP => {
                let reason = failrep_reason(s);
                let _ = self.seen.send((s.gsn(), s.priority(), s.data().to_vec(), reason));
            }
            gsn::START_ORD | gsn::STOP_REQ => {}
            _ => ctx.unhandled(s),
        }
    }
}

#[test]
fn node_events_reach_subscribers_in_order_as_priority_a() {
    let (tx, rx) = mpsc::channel();
    let mut b = builder(2);
    b.place(1, PROBE, inst(0), Box::new(Watcher { seen: tx })).unwrap();
    b.place(0, blocks::PING, inst(0), Box::new(Echo::new())).unwrap();
    let node = b.start().unwrap();
    let peer = NodeId::new(7).unwrap();
    let events = [
        LinkEvent::Connected { peer, transport: TransportKind::Shm },
        LinkEvent::Failed { peer, reason: "peer hung up".into() },
        LinkEvent::Connected { peer, transport: TransportKind::Tcp },
    ];
    for e in &events {
        assert_eq!(node.node_event(e, WAIT), 1, "one subscriber");
    }
    let seen: Vec<_> = (0..3).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(seen[0].0, gsn::NODE_CONNECTED);
    assert_eq!(seen[0].2, vec![7, 2]);
    assert_eq!(seen[1].0, gsn::NODE_FAILREP);
    assert_eq!(seen[1].3, "peer hung up");
    assert_eq!(seen[2].2, vec![7, 1]);
    assert!(seen.iter().all(|s| s.1 == Priority::A));
    node.stop().unwrap();
}
