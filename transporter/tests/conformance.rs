//! The transporter conformance suite: every transport must pass every case here. Each case is a
//! function of the transport kind; `suite!` instantiates all of them for one kind (TCP today;
//! the shared-memory and RDMA transports add one line each).
//!
//! Cross-process cases run real `blockwire-linkpeer` processes: the peer is stopped with SIGSTOP
//! to make the sender meet back-pressure, and killed with SIGKILL mid-stream to check failure
//! detection and reconnect.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use signals::{gsn, Limits, Signal};
use transporter::handshake::{self, HandshakeError, Hello, Refusal};
use transporter::shm::{self, ShmLink};
use transporter::stream::StreamStorage;
use transporter::{LinkEvent, Registry, RegistryConfig, SendError, SendLevel, TransportKind};

mod common;
use common::*;

pub fn ordered_delivery_of_a_million_mixed_signals(kind: TransportKind) {
    let (one, two, checker) = pair(kind, |_| {});
    send_stream(&one, 1, 2, 0..1_000_000);
    checker.wait_for(1_000_000, Duration::from_secs(120));
    let sent = one.counters(node(2)).unwrap();
    // The receiver counts a batch after delivering it.
    let got = counters_when(&two, 1, |c| c.signals_received >= 1_000_000);
    assert_eq!(sent.signals_sent, 1_000_000);
    assert_eq!(got.signals_received, 1_000_000);
    assert_eq!(sent.bytes_sent, got.bytes_received);
    assert_eq!(sent.signals_dropped, 0);
    assert_no_leftover_segments();
    // Batching: far fewer writes than signals.
    assert!(
        sent.batches_sent * 10 < sent.signals_sent,
        "{} writes for {} signals",
        sent.batches_sent,
        sent.signals_sent
    );
}

pub fn batches_straddle_read_boundaries(kind: TransportKind) {
    // A receive buffer of exactly one largest signal: most reads end inside a signal.
    let (one, _two, checker) = pair(kind, |c| {
        c.limits = Limits::new(1024, 2048).unwrap();
        c.receive_buffer_bytes = 2048 * 4;
    });
    send_stream(&one, 1, 2, 0..50_000);
    checker.wait_for(50_000, Duration::from_secs(60));
}

pub fn byte_by_byte_stream_is_reassembled(kind: TransportKind) {
    let mut two = Registry::start(config(2, true, vec![peer(1, unused(), kind)])).unwrap();
    let checker = StreamChecker::start(&mut two);
    let mut raw = TcpStream::connect(two.local_addr().unwrap()).unwrap();
    raw.set_nodelay(true).unwrap();
    handshake::connect(&mut raw, &Hello::new(7, node(1), node(2), kind, false), None).unwrap();
    let mut page = vec![0u32; 1 << 16];
    let mut w =
        signals::BatchWriter::new(&mut page, Limits::default(), signals::WriteOptions::default());
    let mut storage = StreamStorage::default();
    for seq in 0..40 {
        storage.with_signal(seq, block(1), block(2), |s| w.push(s)).unwrap();
    }
    for (i, b) in w.bytes().iter().enumerate() {
        raw.write_all(&[*b]).unwrap();
        if i % 512 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    checker.wait_for(40, Duration::from_secs(20));
}

/// A `blockwire-linkpeer` child process; killed when dropped.
struct PeerProcess {
    child: Child,
    lines: Receiver<String>,
}

impl PeerProcess {
    fn spawn(args: &[&str]) -> PeerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_blockwire-linkpeer"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn blockwire-linkpeer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        PeerProcess { child, lines }
    }

    fn expect_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => panic!("peer printed no line starting {prefix:?} within {timeout:?}"),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: sends a signal to our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn linkpeer_args(
    kind: TransportKind,
    me: u32,
    peer_id: u32,
    addr: SocketAddr,
    mode: &str,
    count: u64,
) -> Vec<String> {
    vec![
        "--transport".into(),
        kind.to_string(),
        "--ring-bytes".into(),
        (256 << 10).to_string(),
        "--node-id".into(),
        me.to_string(),
        "--cluster-id".into(),
        "7".into(),
        "--peer-id".into(),
        peer_id.to_string(),
        "--peer-addr".into(),
        addr.to_string(),
        "--mode".into(),
        mode.into(),
        "--count".into(),
        count.to_string(),
    ]
}

fn spawn_peer(args: &[String]) -> PeerProcess {
    PeerProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

pub fn back_pressure_when_the_peer_stops_reading(kind: TransportKind) {
    let mut two = Registry::start(config(2, true, vec![peer(1, unused(), kind)])).unwrap();
    let mut side = two.take_receive_side().unwrap();
    std::thread::spawn(move || {
        side.run(Duration::ZERO, Duration::from_millis(20), &|| false, &mut |_, _| {})
    });
    const COUNT: u64 = 200_000;
    let p = spawn_peer(&linkpeer_args(kind, 1, 2, two.local_addr().unwrap(), "sink", COUNT));
    wait_event(two.events(), Duration::from_secs(10), connected(1));
    p.signal(libc::SIGSTOP);
    let mut send = two.send_buffers();
    let mut storage = StreamStorage::default();
    let mut seq = 0u64;
    let start = Instant::now();
    let overload = loop {
        match storage.with_signal(seq, block(2), block(1), |s| send.pack(node(1), s)) {
            Ok(()) => seq += 1,
            Err(e @ SendError::Overloaded { .. }) => break e,
            Err(e) => panic!("unexpected {e}"),
        }
        send.flush();
        assert!(
            seq < COUNT && start.elapsed() < Duration::from_secs(30),
            "no back-pressure after {seq} signals"
        );
    };
    assert!(overload.to_string().contains("overloaded"), "{overload}");
    assert!(two.counters(node(1)).unwrap().overload_refusals >= 1);
    let stuck = send.queued_bytes(node(1)).unwrap();
    assert!(stuck > 0 && send.level(node(1)) != Some(SendLevel::Normal), "{stuck} queued");
    assert!(two.counters(node(1)).unwrap().send_buffer_high_water_bytes >= stuck as u64);
    std::thread::sleep(Duration::from_millis(100));
    p.signal(libc::SIGCONT);
    send_stream_with(&two, &mut send, 2, 1, seq..COUNT);
    p.expect_line(&format!("sink ok {COUNT}"), Duration::from_secs(60));
    assert_eq!(two.counters(node(1)).unwrap().signals_dropped, 0);
    // Everything written: the queued count is back to zero (no byte counted twice or lost).
    assert_eq!(send.queued_bytes(node(1)), Some(0));
    assert_eq!(send.level(node(1)), Some(SendLevel::Normal));
}

/// Two connected nodes, 1 (connects) and 2 (accepts), whose node 2 reads nothing yet: its
/// receive side is still in the registry, for the test to take once the link is full.
fn unread_pair(kind: TransportKind) -> (Registry, Registry) {
    let two = Registry::start(config(2, true, vec![peer(1, unused(), kind)])).unwrap();
    let addr = two.local_addr().unwrap();
    let mut one = Registry::start(config(1, false, vec![peer(2, addr, kind)])).unwrap();
    let mut side = one.take_receive_side().unwrap();
    std::thread::spawn(move || {
        side.run(Duration::ZERO, Duration::from_millis(20), &|| false, &mut |_, _| {})
    });
    wait_event(one.events(), Duration::from_secs(5), connected(2));
    wait_event(two.events(), Duration::from_secs(5), connected(1));
    (one, two)
}

/// `send_now` mixed with packed signals: one ordered stream, nothing lost. It first fills the
/// transport while nobody reads (a direct write then finds no room, and the signal is queued
/// in pages behind it), then runs with the reader; a signal that breaks the limits is refused,
/// naming the limit, and nothing of it is sent.
pub fn send_now_keeps_order_with_packed_signals(kind: TransportKind) {
    let (one, mut two) = unread_pair(kind);
    let mut send = one.send_buffers();
    let mut storage = StreamStorage::default();
    // Nobody reads on node 2 yet: direct writes fill the transport, then queue, until overload.
    let (mut seq, mut direct, mut blocked) = (0u64, 0u64, false);
    let start = Instant::now();
    loop {
        let before = one.counters(node(2)).unwrap().signals_sent;
        match storage.with_signal(seq, block(1), block(2), |s| send.send_now(node(2), s)) {
            Ok(report) => {
                blocked |= report.blocked;
                if !blocked && one.counters(node(2)).unwrap().signals_sent == before + 1 {
                    direct += 1;
                }
                seq += 1;
            }
            Err(SendError::Overloaded { .. }) => break,
            Err(e) => panic!("signal {seq}: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no back-pressure after {seq} signals");
    }
    assert!(blocked, "the transport never ran out of room in {seq} signals");
    assert!(direct > 100, "only {direct} of {seq} signals went out at once");
    let checker = StreamChecker::start(&mut two);
    const COUNT: u64 = 100_000;
    // Then with the reader: runs of direct and packed signals, and single ones of each.
    send_stream_mixed(&one, &mut send, 1, 2, seq..COUNT, |n| n % 11 < 4 || n % 97 == 0);
    checker.wait_for(COUNT, Duration::from_secs(120));
    let too_long = [7u32; signals::MAX_DATA_WORDS + 1];
    let e = send
        .send_now(node(2), &Signal::new(gsn::PING_REQ, block(1), block(2)).data(&too_long))
        .unwrap_err();
    assert!(e.to_string().contains("data words"), "{e}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(checker.received.load(Ordering::Relaxed), COUNT, "the refused signal arrived");
    let sent = one.counters(node(2)).unwrap();
    let got = counters_when(&two, 1, |c| c.signals_received >= COUNT);
    assert_eq!((sent.signals_sent, got.signals_received), (COUNT, COUNT));
    assert_eq!(sent.bytes_sent, got.bytes_received);
    assert_eq!(sent.signals_dropped, 0);
    assert_eq!(send.queued_bytes(node(2)), Some(0));
    drop(checker);
    assert_no_leftover_segments();
}

/// Two sending threads' buffers on one link while nobody reads: the first leaves part of a page
/// in the link's sender; the second's flushes and direct sends go behind it, through the queue.
/// Once the reader runs, every signal arrives, each sender's in its order.
pub fn two_senders_on_one_full_link_lose_nothing(kind: TransportKind) {
    let (one, mut two) = unread_pair(kind);
    let (mut a, mut b) = (one.send_buffers(), one.send_buffers());
    let signal = |who: u32, seq: u32, words: &mut [u32; 3]| {
        *words = [who, seq, seq ^ 0x5a5a];
    };
    let mut words = [0u32; 3];
    let mut sent = [0u32; 2];
    // The first fills the link, flushing as it goes, and flushes a few times more once the
    // link takes less than offered (through its queue: the link keeps part of a page).
    let start = Instant::now();
    let mut blocked = 0;
    while blocked < 4 {
        for _ in 0..64 {
            signal(0, sent[0], &mut words);
            a.pack(node(2), &Signal::new(gsn::PING_REQ, block(1), block(2)).data(&words)).unwrap();
            sent[0] += 1;
        }
        blocked += usize::from(a.flush().blocked);
        assert!(start.elapsed() < Duration::from_secs(30), "the link never filled");
    }
    // The second sends while the first's page is part-written: direct and packed.
    for i in 0..200 {
        signal(1, sent[1], &mut words);
        let s = Signal::new(gsn::PING_REQ, block(1), block(2)).data(&words);
        let r = if i % 2 == 0 { b.send_now(node(2), &s).map(drop) } else { b.pack(node(2), &s) };
        match r {
            Ok(()) => sent[1] += 1,
            Err(SendError::Overloaded { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        b.flush();
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let mut side = two.take_receive_side().unwrap();
    std::thread::spawn(move || {
        side.run(Duration::from_micros(50), Duration::from_millis(20), &|| false, &mut |_, s| {
            g.lock().unwrap().push(s.data().to_vec());
        })
    });
    while a.has_unsent() || b.has_unsent() {
        a.flush();
        b.flush();
        assert!(start.elapsed() < Duration::from_secs(60), "flush stalled");
    }
    let total = (sent[0] + sent[1]) as usize;
    while got.lock().unwrap().len() < total {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of {total}",
            got.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut next = [0u32; 2];
    for d in got.lock().unwrap().iter() {
        let who = d[0] as usize;
        assert!(who < 2 && d[1] == next[who] && d[2] == d[1] ^ 0x5a5a, "{d:?} after {next:?}");
        next[who] += 1;
    }
    assert_eq!(next, sent);
    assert!(sent[1] > 0);
    assert_eq!(one.counters(node(2)).unwrap().signals_dropped, 0);
    assert_no_leftover_segments();
}

pub fn peer_killed_mid_stream_then_restarted(kind: TransportKind) {
    let mut two = Registry::start(config(2, true, vec![peer(1, unused(), kind)])).unwrap();
    let checker = StreamChecker::start(&mut two);
    let args = linkpeer_args(kind, 1, 2, two.local_addr().unwrap(), "source", 0);
    let p = spawn_peer(&args);
    wait_event(two.events(), Duration::from_secs(10), connected(1));
    checker.wait_for(20_000, Duration::from_secs(30));
    p.signal(libc::SIGKILL);
    let (event, took) = wait_event(two.events(), Duration::from_secs(5), failed(1));
    assert!(took < Duration::from_secs(2), "failure seen only after {took:?}: {event:?}");
    drop(p);
    let before = checker.received.load(Ordering::Relaxed);
    let again = spawn_peer(&args);
    wait_event(two.events(), Duration::from_secs(10), connected(1));
    checker.wait_for(before + 10_000, Duration::from_secs(30));
    assert_eq!(two.counters(node(1)).unwrap().connects, 2);
    drop(again);
    assert_no_leftover_segments();
}

/// Writes `bytes` at the start of the ring a raw shared-memory peer produces into, then `word`
/// as the record word in front of them, and wakes the consumer.
fn shm_publish(link: &ShmLink, word: u32, bytes: &[u8]) {
    // SAFETY: the test owns this producer side; 4 + `bytes` fits the ring (256 KiB).
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            link.segment.data(link.send_ring).add(4),
            bytes.len(),
        )
    };
    link.segment.ring_word(link.send_ring, 0).store(word, Ordering::Release);
    link.peer_wake.notify();
}

/// Makes the link of a raw peer misbehave: garbage bytes where signals belong.
fn send_garbage(stream: &mut TcpStream, raw: &Raw) {
    match raw {
        Raw::Shm(link) => shm_publish(link, 64, &[0xEE; 64]),
        #[cfg(feature = "rdma")]
        Raw::Rdma(link) => {
            let head = transporter::rdma::FrameHead { wrapped: false, len: 64 }.encode();
            rdma_frame(link, 0, 1, head, &[0xEE; 64], false)
        }
        Raw::Tcp => stream.write_all(&[0xEE; 64]).unwrap(),
    }
}

pub fn rogue_bytes_close_only_that_link(kind: TransportKind) {
    let mut five =
        Registry::start(config(5, true, vec![peer(1, unused(), kind), peer(3, unused(), kind)]))
            .unwrap();
    let echoes = Arc::new(AtomicU64::new(0));
    let mut side = five.take_receive_side().unwrap();
    let e = echoes.clone();
    std::thread::spawn(move || {
        side.run(Duration::ZERO, Duration::from_millis(20), &|| false, &mut |from, s| {
            if from == node(1) && s.gsn() == gsn::PING_REQ {
                e.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let addr = five.local_addr().unwrap();
    let _echo = spawn_peer(&linkpeer_args(kind, 1, 5, addr, "echo", 0));
    wait_event(five.events(), Duration::from_secs(10), connected(1));
    let (mut rogue, shared) =
        raw_connect(addr, kind, &Hello::new(7, node(3), node(5), kind, false), None);
    wait_event(five.events(), Duration::from_secs(5), connected(3));
    send_garbage(&mut rogue, &shared);
    let (event, _) = wait_event(five.events(), Duration::from_secs(5), failed(3));
    let LinkEvent::Failed { reason, .. } = event else { unreachable!() };
    assert!(reason.contains("malformed"), "{reason}");
    // The other link still works: a ping to the echo peer comes back.
    let mut send = five.send_buffers();
    send.pack(node(1), &Signal::new(gsn::PING_REQ, block(5), block(1)).data(&[42])).unwrap();
    send.flush();
    let start = Instant::now();
    while echoes.load(Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "echo link stopped working");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(five.counters(node(1)).unwrap().failures, 0);
    assert_no_leftover_segments();
}

pub fn upper_layer_close_fails_the_link_then_it_reconnects(kind: TransportKind) {
    let (one, two, checker) = pair(kind, |_| {});
    send_stream(&one, 1, 2, 0..1000);
    checker.wait_for(1000, Duration::from_secs(20));
    two.close_link(node(1), "heartbeat silence");
    let (event, _) = wait_event(two.events(), Duration::from_secs(5), failed(1));
    assert_eq!(
        event,
        LinkEvent::Failed {
            peer: node(1),
            reason: "closed by the upper layer: heartbeat silence".into()
        }
    );
    // Node 1 sees the hang-up as its own failure, backs off, and connects again.
    wait_event(one.events(), Duration::from_secs(5), failed(2));
    wait_event(two.events(), Duration::from_secs(10), connected(1));
    wait_event(one.events(), Duration::from_secs(10), connected(2));
    send_stream(&one, 1, 2, 0..1000);
    checker.wait_for(2000, Duration::from_secs(20));
    assert_eq!(two.counters(node(1)).unwrap().connects, 2);
    assert_eq!(two.counters(node(1)).unwrap().failures, 1);
}

fn refused(addr: SocketAddr, hello: Hello, secret: Option<&[u8]>) -> Refusal {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match handshake::connect(&mut s, &hello, secret) {
        Err(HandshakeError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub fn handshake_refusals(kind: TransportKind) {
    let other = if kind == TransportKind::Tcp { TransportKind::Shm } else { TransportKind::Tcp };
    let mut c = config(
        5,
        true,
        vec![peer(1, unused(), kind), peer(2, unused(), other), peer(7, unused(), kind)],
    );
    c.secret = Some(b"s3cret".to_vec());
    let mut five = Registry::start(c).unwrap();
    let mut side = five.take_receive_side().unwrap();
    std::thread::spawn(move || {
        side.run(Duration::ZERO, Duration::from_millis(20), &|| false, &mut |_, _| {})
    });
    let addr = five.local_addr().unwrap();
    let secret = Some(&b"s3cret"[..]);
    let hello = |from: u32| Hello::new(7, node(from), node(5), kind, true);

    assert_eq!(refused(addr, Hello { version: 99, ..hello(1) }, secret), Refusal::WrongVersion);
    assert_eq!(refused(addr, Hello { cluster_id: 8, ..hello(1) }, secret), Refusal::WrongCluster);
    assert_eq!(refused(addr, hello(4), secret), Refusal::UnknownNode);
    assert_eq!(refused(addr, hello(7), secret), Refusal::WrongDirection);
    assert_eq!(refused(addr, hello(2), secret), Refusal::WrongTransport);
    assert_eq!(refused(addr, Hello { to: 6, ..hello(1) }, secret), Refusal::NotForMe);
    assert_eq!(refused(addr, hello(1), Some(b"wrong")), Refusal::BadSecret);
    assert_eq!(
        refused(addr, Hello { has_secret: false, ..hello(1) }, None),
        Refusal::SecretMismatch
    );

    let (first, _shared) = raw_connect(addr, kind, &hello(1), secret);
    wait_event(five.events(), Duration::from_secs(5), connected(1));
    assert_eq!(refused(addr, hello(1), secret), Refusal::AlreadyConnected);
    drop(first);
    wait_event(five.events(), Duration::from_secs(5), failed(1));
}

/// Cases for TCP only: a stream of bytes arriving one at a time.
pub fn tcp_only(kind: TransportKind) {
    byte_by_byte_stream_is_reassembled(kind)
}

/// Shared memory: a peer that commits impossible records, or moves its consumer position where
/// it cannot be, is cut off with a reason.
pub fn shm_garbage_records_and_indices_close_the_link(kind: TransportKind) {
    let cases: [(u32, &str); 5] = [
        (3, "not whole words"),
        (1 << 20, "past the end of the ring"),
        (shm::ring::PAD_FLAG | 5, "pad record"),
        (64, "malformed"),
        (0, "consumer position"),
    ];
    for (word, needle) in cases {
        let (five, stop, receiver) = listening_node(5, 3, kind);
        let (_rogue, shared) = raw_connect(
            five.local_addr().unwrap(),
            kind,
            &Hello::new(7, node(3), node(5), kind, false),
            None,
        );
        wait_event(five.events(), Duration::from_secs(5), connected(3));
        let link = shared.shm().unwrap();
        if word == 0 {
            // Garbage index: the rogue, as the consumer of the ring node 5 produces into, claims
            // to have consumed more than was ever written; node 5's next send sees it.
            link.segment.consumer(link.receive_ring).store(1 << 40, Ordering::Release);
            // It is read when the space node 5 knows free runs out: send more than a ring.
            let mut send = five.send_buffers();
            let section = [7u32; 256];
            for _ in 0..300 {
                if send
                    .pack(
                        node(3),
                        &Signal::new(gsn::PING_REQ, block(5), block(3))
                            .data(&[1])
                            .sections(&[&section]),
                    )
                    .is_err()
                {
                    break;
                }
                send.flush();
            }
        } else {
            shm_publish(link, word, &[0xEE; 64]);
        }
        let (event, _) = wait_event(five.events(), Duration::from_secs(5), failed(3));
        let LinkEvent::Failed { reason, .. } = event else { unreachable!() };
        assert!(reason.contains(needle), "word {word:#x}: {reason}");
        stop.store(true, Ordering::Relaxed);
        receiver.join().unwrap();
    }
    assert_no_leftover_segments();
}

/// Rings (shared memory, RDMA): signals of every size from one data word to the largest
/// section, through a small ring, so every lap ends in a different place and many wrap early.
pub fn wrap_with_every_signal_size(kind: TransportKind) {
    let limits = Limits::new(1024, 2048).unwrap();
    // The smallest ring each transport takes: twice (shm) or four times (RDMA) the largest signal.
    let ring = if kind == TransportKind::Rdma { 32 << 10 } else { 16 << 10 };
    let tweak = |c: &mut RegistryConfig| {
        c.limits = limits;
        c.page_bytes = 2048 * 4;
        for p in &mut c.peers {
            p.ring_bytes = ring;
            p.send_buffer_bytes = 64 << 10;
        }
    };
    let mut c2 = config(2, true, vec![peer(1, unused(), kind)]);
    tweak(&mut c2);
    let mut two = Registry::start(c2).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut side = two.take_receive_side().unwrap();
    let g = got.clone();
    std::thread::spawn(move || {
        side.run(Duration::from_micros(20), Duration::from_millis(20), &|| false, &mut |_, s| {
            g.lock()
                .unwrap()
                .push((s.data().to_vec(), s.sections().map(<[u32]>::to_vec).collect::<Vec<_>>()));
        })
    });
    let mut c1 = config(1, false, vec![peer(2, two.local_addr().unwrap(), kind)]);
    tweak(&mut c1);
    let one = Registry::start(c1).unwrap();
    wait_event(one.events(), Duration::from_secs(5), connected(2));
    let mut send = one.send_buffers();
    let sizes: Vec<(usize, usize)> =
        (1..=25).map(|d| (d, 0)).chain((0..=1024).map(|s| (1, s))).collect();
    for (i, &(data, section)) in sizes.iter().enumerate() {
        let d: Vec<u32> = (0..data as u32).map(|w| w ^ i as u32).collect();
        let sec: Vec<u32> = (0..section as u32).map(|w| w.wrapping_mul(31) ^ i as u32).collect();
        let sections: Vec<&[u32]> = if section > 0 { vec![&sec] } else { vec![] };
        let signal = Signal::new(gsn::PING_REQ, block(1), block(2)).data(&d).sections(&sections);
        let start = Instant::now();
        while let Err(e) = send.pack(node(2), &signal) {
            assert!(matches!(e, SendError::Overloaded { .. }), "{e}");
            assert!(start.elapsed() < Duration::from_secs(20), "stuck at size {i}");
            send.flush();
        }
        send.flush();
    }
    while send.has_unsent() {
        send.flush();
    }
    let start = Instant::now();
    while got.lock().unwrap().len() < sizes.len() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {} arrived",
            got.lock().unwrap().len(),
            sizes.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for (i, ((data, sections), &(d, s))) in got.lock().unwrap().iter().zip(&sizes).enumerate() {
        assert_eq!(data.len(), d, "signal {i}");
        assert!(data.iter().enumerate().all(|(w, &v)| v == w as u32 ^ i as u32), "signal {i} data");
        assert_eq!(sections.iter().map(Vec::len).sum::<usize>(), s, "signal {i}");
        assert!(
            sections
                .iter()
                .flatten()
                .enumerate()
                .all(|(w, &v)| v == (w as u32).wrapping_mul(31) ^ i as u32),
            "signal {i} section"
        );
    }
    assert!(
        one.counters(node(2)).unwrap().bytes_sent > 16 * ring as u64,
        "the ring wrapped many times"
    );
    assert_no_leftover_segments();
}

/// Shared memory: set-up refuses a ring size or layout version the two sides do not share.
pub fn shm_mismatch_refused_at_setup(_kind: TransportKind) {
    use std::net::TcpListener;
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let creator = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        shm::setup::create(&mut s, 7, node(1), node(2), 256 << 10, Duration::from_secs(5))
    });
    let (mut s, _) = listener.accept().unwrap();
    let opened = shm::setup::open(&mut s, node(2), node(1), 512 << 10, Duration::from_secs(5));
    let e = opened.unwrap_err().to_string();
    assert!(e.contains("ring_bytes mismatch: ours 524288, peer's 262144"), "{e}");
    let e = creator.join().unwrap().unwrap_err().to_string();
    assert!(e.contains("ring_bytes mismatch"), "{e}");
    // A peer speaking the layout before ours (its consumer zeroed what it read).
    let ours = shm::layout::LAYOUT_VERSION;
    let peer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut message = b"BWSHMSET".to_vec();
        message.extend_from_slice(&(ours - 1).to_le_bytes());
        message.extend_from_slice(&(256u32 << 10).to_le_bytes());
        handshake::exchange_setup(&mut s, &message)
    });
    let (mut s, _) = listener.accept().unwrap();
    let e = shm::setup::open(&mut s, node(2), node(1), 256 << 10, Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    let want = format!("layout version mismatch: ours {ours}, peer's {}", ours - 1);
    assert!(e.contains(&want), "{e}");
    let _ = peer.join();
    assert_no_leftover_segments();
}

/// Shared memory: an opener refuses a segment whose size is not sealed (the creator could shrink
/// it and turn the opener's next access into SIGBUS), and tells the creator why.
pub fn shm_unsealed_segment_refused_at_setup(_kind: TransportKind) {
    use std::net::TcpListener;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
    let ring = 64u32 << 10;
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let rogue = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        // A well-formed set-up message, then a memfd of the right size that is not sealed.
        let nonce = 0x7e57_0000_0000_0000 | u64::from(std::process::id());
        let socket_name = format!("blockwire-fd-{nonce:016x}");
        let unix_addr = UnixAddr::from_abstract_name(socket_name.as_bytes()).unwrap();
        let unix = UnixListener::bind_addr(&unix_addr).unwrap();
        let message = rogue_setup(ring, nonce, &socket_name);
        handshake::exchange_setup(&mut s, &message).unwrap();
        let (conn, _) = unix.accept().unwrap();
        // SAFETY: a NUL-terminated name and flags; the result is checked and then owned.
        let fd = unsafe { libc::memfd_create(c"rogue".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor nobody else owns.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(shm::layout::segment_bytes(ring as usize) as u64).unwrap();
        shm::fdpass::send_fd(&conn, file.as_raw_fd()).unwrap();
        String::from_utf8(handshake::exchange_setup(&mut s, b"mapped").unwrap()).unwrap()
    });
    let (mut s, _) = listener.accept().unwrap();
    let e = shm::setup::open(&mut s, node(2), node(1), ring as usize, Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("seals is 0x0, expected at least 0x7"), "{e}");
    let told = rogue.join().unwrap();
    assert!(told.contains("seals"), "the creator was told {told:?}");

    // A set-up naming a socket other than the one for its nonce: the opener does not connect
    // to it (it could be any process's socket).
    let rogue = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let message = rogue_setup(ring, 7, "blockwire-fd-somebody-else");
        handshake::exchange_setup(&mut s, &message).unwrap();
    });
    let (mut s, _) = listener.accept().unwrap();
    let e = shm::setup::open(&mut s, node(2), node(1), ring as usize, Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("socket name \"blockwire-fd-somebody-else\" is not"), "{e}");
    rogue.join().unwrap();
}

/// Shared memory: an opener that cannot connect to the creator's descriptor socket says why,
/// and the creator fails with that reason at once; an opener that goes silent has the creator
/// fail at its timeout naming the socket it waited on.
pub fn shm_opener_failures_reach_the_creator(_kind: TransportKind) {
    use std::net::TcpListener;
    let ring = 64u32 << 10;
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    // A creator whose socket does not exist: the real opener cannot connect, and tells it so.
    let rogue = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let nonce = 0x7e57_1000_0000_0000 | u64::from(std::process::id());
        let message = rogue_setup(ring, nonce, &format!("blockwire-fd-{nonce:016x}"));
        handshake::exchange_setup(&mut s, &message).unwrap();
        let told = handshake::exchange_setup(&mut s, b"waiting").unwrap();
        String::from_utf8(told).unwrap()
    });
    let (mut s, _) = listener.accept().unwrap();
    let e = shm::setup::open(&mut s, node(2), node(1), ring as usize, Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("connecting to descriptor socket @blockwire-fd-"), "{e}");
    let told = rogue.join().unwrap();
    assert!(told.contains("connecting to descriptor socket"), "the creator was told {told:?}");

    // The real creator: an opener that says why it failed before connecting.
    let creator = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        shm::setup::create(&mut s, 7, node(1), node(2), ring as usize, Duration::from_secs(30))
    });
    let (mut s, _) = listener.accept().unwrap();
    let mut common = b"BWSHMSET".to_vec();
    common.extend_from_slice(&shm::layout::LAYOUT_VERSION.to_le_bytes());
    common.extend_from_slice(&ring.to_le_bytes());
    handshake::exchange_setup(&mut s, &common).unwrap();
    let _ = handshake::exchange_setup(&mut s, b"opener: no route to the descriptor socket");
    let e = creator.join().unwrap().unwrap_err().to_string();
    assert!(e.contains("peer could not map the segment: opener: no route"), "{e}");

    // An opener that goes silent after the first exchange.
    let creator = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        shm::setup::create(&mut s, 7, node(1), node(2), ring as usize, Duration::from_millis(300))
    });
    let (mut s, _) = listener.accept().unwrap();
    handshake::exchange_setup(&mut s, &common).unwrap();
    let e = creator.join().unwrap().unwrap_err().to_string();
    assert!(e.contains("the peer did not connect to descriptor socket @blockwire-fd-"), "{e}");
    assert!(e.contains("within 300ms"), "{e}");
    drop(s);
    assert_no_leftover_segments();
}

/// A creator's set-up message: layout version, ring size, nonce, segment and socket names.
fn rogue_setup(ring: u32, nonce: u64, socket_name: &str) -> Vec<u8> {
    let mut message = b"BWSHMSET".to_vec();
    message.extend_from_slice(&shm::layout::LAYOUT_VERSION.to_le_bytes());
    message.extend_from_slice(&ring.to_le_bytes());
    message.extend_from_slice(&nonce.to_le_bytes());
    for name in ["blockwire-7-1-2-rogue", socket_name] {
        message.extend_from_slice(&(name.len() as u16).to_le_bytes());
        message.extend_from_slice(name.as_bytes());
    }
    message
}

macro_rules! suite {
    ($kind_mod:ident, $kind:expr) => {
        mod $kind_mod {
            use super::*;
            #[test]
            fn ordered_delivery_of_a_million_mixed_signals() {
                if super::skip($kind) {
                    return;
                }
                super::ordered_delivery_of_a_million_mixed_signals($kind)
            }
            #[test]
            fn batches_straddle_read_boundaries() {
                if super::skip($kind) {
                    return;
                }
                super::batches_straddle_read_boundaries($kind)
            }
            #[test]
            fn back_pressure_when_the_peer_stops_reading() {
                if super::skip($kind) {
                    return;
                }
                super::back_pressure_when_the_peer_stops_reading($kind)
            }
            #[test]
            fn peer_killed_mid_stream_then_restarted() {
                if super::skip($kind) {
                    return;
                }
                super::peer_killed_mid_stream_then_restarted($kind)
            }
            #[test]
            fn rogue_bytes_close_only_that_link() {
                if super::skip($kind) {
                    return;
                }
                super::rogue_bytes_close_only_that_link($kind)
            }
            #[test]
            fn upper_layer_close_fails_the_link_then_it_reconnects() {
                if super::skip($kind) {
                    return;
                }
                super::upper_layer_close_fails_the_link_then_it_reconnects($kind)
            }
            #[test]
            fn send_now_keeps_order_with_packed_signals() {
                if super::skip($kind) {
                    return;
                }
                super::send_now_keeps_order_with_packed_signals($kind)
            }
            #[test]
            fn two_senders_on_one_full_link_lose_nothing() {
                if super::skip($kind) {
                    return;
                }
                super::two_senders_on_one_full_link_lose_nothing($kind)
            }
            #[test]
            fn handshake_refusals() {
                if super::skip($kind) {
                    return;
                }
                super::handshake_refusals($kind)
            }
        }
    };
}

macro_rules! extra {
    ($kind_mod:ident, $kind:expr, $($case:ident),*) => {
        mod $kind_mod {
            use super::*;
            $( #[test] fn $case() { if super::skip($kind) { return; } super::$case($kind) } )*
        }
    };
}

suite!(tcp, TransportKind::Tcp);
suite!(shared_memory, TransportKind::Shm);
suite!(rdma, TransportKind::Rdma);
extra!(tcp_only_cases, TransportKind::Tcp, tcp_only);
extra!(
    shm_only_cases,
    TransportKind::Shm,
    shm_garbage_records_and_indices_close_the_link,
    wrap_with_every_signal_size,
    shm_mismatch_refused_at_setup,
    shm_unsealed_segment_refused_at_setup,
    shm_opener_failures_reach_the_creator
);
extra!(rdma_only_cases, TransportKind::Rdma, wrap_with_every_signal_size);
