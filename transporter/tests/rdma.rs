//! RDMA-only cases, beside the conformance suite (which runs over RDMA too): untrusted frames,
//! credit and posted words, a frame taken only when whole, a queue pair in error, credits on a
//! one-way stream, receive requests re-posted under a burst of wakeups, a credit owed while the
//! send queue is full, signals lost by a post that fails counted as dropped, and the clear
//! error where there is no device.
//!
//! They need a verbs device: `scripts/test.sh` runs them inside `scripts/rxe-vm.sh` (soft-RoCE);
//! on a host without one they say skipped, except the no-device case, which runs there.
#![cfg(feature = "rdma")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use signals::{gsn, BatchWriter, Limits, Signal, WriteOptions};
use transporter::handshake::Hello;
use transporter::rdma::{Credit, FrameHead};
use transporter::{
    LinkCounters, LinkEvent, LinkReceiver, LinkSender, PagePool, PageQueue, Registry,
    RegistryError, SendBuffers, SendError, TransportKind,
};

const RDMA: TransportKind = TransportKind::Rdma;

/// Node 5 listening for a raw RDMA peer 3, with its receive side running (sleeping at once
/// when idle), and the raw peer 3 connected to it.
fn five_and_raw_peer() -> (
    Registry,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
    std::net::TcpStream,
    transporter::rdma::RdmaLink,
) {
    five_spinning_and_raw_peer(Duration::ZERO)
}

/// [`five_and_raw_peer`] with node 5's receive side spinning for `spin` after each signal.
fn five_spinning_and_raw_peer(
    spin: Duration,
) -> (
    Registry,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
    std::net::TcpStream,
    transporter::rdma::RdmaLink,
) {
    let (five, stop, receiver) = listening_node_spinning(5, 3, RDMA, spin);
    let (socket, link) = raw_rdma(&five);
    wait_event(five.events(), Duration::from_secs(5), connected(3));
    (five, stop, receiver, socket, link)
}

fn raw_rdma(five: &Registry) -> (std::net::TcpStream, transporter::rdma::RdmaLink) {
    let (s, raw) = raw_connect(
        five.local_addr().unwrap(),
        RDMA,
        &Hello::new(7, node(3), node(5), RDMA, false),
        None,
    );
    let Raw::Rdma(link) = raw else { unreachable!("an rdma raw peer") };
    (s, link)
}

/// Our own sending and receiving halves over the raw peer's queue pair, with their counters
/// and page pool.
struct Halves {
    counters: Arc<LinkCounters>,
    pool: Arc<PagePool>,
    tx: transporter::rdma::RdmaSender,
    rx: transporter::rdma::RdmaReceiver,
}

fn own_halves(socket: std::net::TcpStream, link: transporter::rdma::RdmaLink) -> Halves {
    let counters = Arc::new(LinkCounters::default());
    let pool = Arc::new(PagePool::new(4, 1 << 14));
    let (tx, rx) =
        transporter::rdma::split(link, socket, pool.clone(), counters.clone(), Limits::default())
            .unwrap();
    Halves { counters, pool, tx, rx }
}

fn failure_reason(five: &Registry, timeout: Duration) -> String {
    let (event, _) = wait_event(five.events(), timeout, failed(3));
    let LinkEvent::Failed { reason, .. } = event else { unreachable!() };
    reason
}

/// Sends signals to the raw peer 3 until the link fails (or a few seconds pass).
fn poke(five: &Registry) {
    let mut send = five.send_buffers();
    for _ in 0..50 {
        let _ = send.pack(node(3), &Signal::new(gsn::PING_REQ, block(5), block(3)).data(&[1]));
        send.flush();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The wire bytes of one PING_REQ signal carrying `data`.
fn ping_bytes(data: &[u32]) -> Vec<u8> {
    let mut page = vec![0u32; 64];
    let mut w = signals::BatchWriter::new(&mut page, Limits::default(), Default::default());
    w.push(&Signal::new(gsn::PING_REQ, block(3), block(5)).data(data)).unwrap();
    w.bytes().to_vec()
}

#[test]
fn garbage_frames_credits_and_posted_words_close_the_link() {
    if skip(RDMA) {
        return;
    }
    let head = |wrapped, len: usize| FrameHead { wrapped, len: len as u32 }.encode();
    let ping = ping_bytes(&[7]);
    let cases = [
        "says it wrapped",
        "malformed",
        "does not say it wrapped",
        "peer's credit",
        "posted position",
        "posted word failed its check",
    ];
    for needle in cases {
        // Node 5 spins a while after each signal: it takes the first frame spinning and asks
        // for plain writes, and takes that back (READ of our posted word) before it sleeps.
        let spin = Duration::from_millis(if needle.starts_with("posted") { 300 } else { 0 });
        let (five, stop, receiver, _socket, link) = five_spinning_and_raw_peer(spin);
        match needle {
            // A whole frame at position 0 that says it skipped a lap.
            "says it wrapped" => rdma_frame(&link, 0, 1, head(true, 64), &[0xEE; 64], false),
            // A whole frame whose body is not signals.
            "malformed" => rdma_frame(&link, 0, 1, head(false, 64), &[0xEE; 64], false),
            // A good first frame, then the second at the lap start without the wrapped flag.
            "does not say it wrapped" => {
                rdma_frame(&link, 0, 1, head(false, ping.len()), &ping, false);
                let start = Instant::now();
                while five.counters(node(3)).unwrap().signals_received == 0 {
                    assert!(start.elapsed() < Duration::from_secs(10), "frame 1 not taken");
                    std::thread::sleep(Duration::from_millis(5));
                }
                rdma_frame(&link, 0, 2, head(false, ping.len()), &ping, false);
            }
            "peer's credit" => {
                // A credit word claiming more ring consumed than node 5 ever wrote.
                let word = Credit { consumed: 1 << 20, posted: 256 }.encode();
                rdma_write_credit(&link, word, true);
                poke(&five);
            }
            "posted position" => {
                // Our posted word says a terabyte was posted: node 5's receiver reads it when it
                // goes back to immediates to sleep, after taking a frame while spinning.
                rdma_set_posted(&link, 1 << 40, true);
                rdma_frame(&link, 0, 1, head(false, ping.len()), &ping, false);
            }
            _ => {
                // Our posted word's check never matches: node 5 READs it again each time, and
                // gives up after a run no race makes.
                rdma_frame(&link, 0, 1, head(false, ping.len()), &ping, false);
                let (posted, _) = rdma_posted(&link);
                rdma_set_posted(&link, posted, false);
            }
        }
        let reason = failure_reason(&five, Duration::from_secs(10));
        assert!(reason.contains(needle), "{needle}: {reason}");
        stop.store(true, Ordering::Relaxed);
        receiver.join().unwrap();
    }
}

/// A credit word whose check word does not match (as when it is read while the NIC is still
/// placing it, byte by byte) is not used, and is no error: the sender keeps the last credit
/// that matched. The same word with its seal is read, and fails the link.
#[test]
fn a_credit_caught_mid_placement_is_not_used() {
    if skip(RDMA) {
        return;
    }
    let (five, stop, receiver, _socket, link) = five_and_raw_peer();
    let counters = || five.counters(node(3)).unwrap();
    // More ring consumed than node 5 ever wrote: taken, it would fail the link.
    let word = Credit { consumed: 1 << 20, posted: 256 }.encode();
    rdma_write_credit(&link, word, false);
    let mut send = five.send_buffers();
    let start = Instant::now();
    while counters().torn_control_reads == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the credit was never read");
        send.pack(node(3), &Signal::new(gsn::PING_REQ, block(5), block(3)).data(&[1])).unwrap();
        send.flush();
        std::thread::sleep(Duration::from_millis(20));
    }
    // Sent under the last credit that matched (the first: the whole ring).
    while counters().signals_sent == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "nothing sent under the old credit");
        send.flush();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(five.events().try_recv().is_err(), "no event: the link is up");
    assert_eq!(counters().failures, 0);
    rdma_write_credit(&link, word, true);
    poke(&five);
    let reason = failure_reason(&five, Duration::from_secs(10));
    assert!(reason.contains("peer's credit"), "{reason}");
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
}

#[test]
fn a_frame_is_taken_only_when_whole() {
    if skip(RDMA) {
        return;
    }
    let (five, stop, receiver, _socket, link) = five_and_raw_peer();
    let ping = ping_bytes(&[1, 2, 3]);
    let head = FrameHead { wrapped: false, len: ping.len() as u32 }.encode();
    let received = || five.counters(node(3)).unwrap().signals_received;
    // Head, body and tail are there, but the checksum does not match (as when part of the
    // frame is still an older lap's bytes): it is not taken, and it is no error.
    rdma_frame(&link, 0, 1, head, &ping, true);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received(), 0);
    // The rest of an older frame with the right number somewhere else is not taken either.
    rdma_frame(&link, 512, 1, head, &ping, false);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received(), 0);
    assert!(five.events().try_recv().is_err(), "no event: the link is up");
    // Once the frame at the receiver's position is whole, it is taken.
    rdma_frame(&link, 0, 1, head, &ping, false);
    let start = Instant::now();
    while received() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the whole frame was not taken");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(received(), 1);
    assert_eq!(five.counters(node(3)).unwrap().failures, 0);
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
}

#[test]
fn queue_pair_error_fails_the_link_then_it_reconnects() {
    if skip(RDMA) {
        return;
    }
    let (five, stop, receiver, socket, link) = five_and_raw_peer();
    // The test's end of the link runs our own receiving half over its queue pair.
    let handle = socket.try_clone().unwrap();
    let Halves { mut rx, .. } = own_halves(socket, link);
    let mut send = five.send_buffers();
    for i in 0..10 {
        send.pack(node(3), &Signal::new(gsn::PING_REQ, block(5), block(3)).data(&[i])).unwrap();
        send.flush();
    }
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 10 {
        rx.poll(&mut |s| got.push(s.data()[0])).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "{} of 10 arrived", got.len());
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    // The queue pair goes to the error state (as after a fatal device error): every posted
    // receive request completes flushed, and a poll fails the link with the reason.
    rx.force_queue_pair_error().unwrap();
    // An awake receiver looks at its completion queue every few polls; the flushed
    // completions appear once the device has processed the state change.
    let start = Instant::now();
    let e = loop {
        if let Err(e) = rx.poll(&mut |_| {}) {
            break e.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the queue pair error did not fail the link"
        );
        std::thread::sleep(Duration::from_micros(100));
    };
    assert!(e.contains("rdma: receive completion failed: Work Request Flushed Error"), "{e}");
    // Failing the link closes it: node 5 sees the hang-up at once and fails its side too.
    drop((rx, handle));
    let reason = failure_reason(&five, Duration::from_secs(5));
    assert!(reason.contains("peer closed"), "{reason}");
    // A fresh queue pair works: the peer connects again.
    let (_socket, _link) = raw_rdma(&five);
    wait_event(five.events(), Duration::from_secs(5), connected(3));
    assert_eq!(five.counters(node(3)).unwrap().connects, 2);
    assert_eq!(five.counters(node(3)).unwrap().failures, 1);
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
}

/// Packs numbered signals from `next` up to `total` for node 3, at most 64 at a time (fewer if
/// the send buffer is full), and flushes.
fn pack_some(send: &mut SendBuffers, next: &mut u32, total: u32) {
    for _ in 0..64 {
        if *next == total {
            break;
        }
        let data = [*next];
        match send.pack(node(3), &Signal::new(gsn::PING_REQ, block(5), block(3)).data(&data)) {
            Ok(()) => *next += 1,
            Err(SendError::Overloaded { .. }) => break,
            Err(e) => panic!("signal {next}: {e}"),
        }
    }
    send.flush();
}

/// A receiver whose credit is due while its send queue has no room owes it instead of holding
/// the post lock until room comes (it gave up, failing the link, after a million tries): the
/// sender stalls on credits meanwhile, and once the queue has room the next poll sends the
/// credit and the stream goes on, whole and in order.
#[test]
fn a_credit_due_while_the_send_queue_is_full_goes_out_when_room_comes() {
    if skip(RDMA) {
        return;
    }
    let (five, stop, receiver, socket, link) = five_and_raw_peer();
    let Halves { counters, mut rx, .. } = own_halves(socket, link);
    rx.hold_send_queue(true);
    // Far more than one ring (256 KiB) or receive queue holds.
    let total = 60_000u32;
    let (mut send, mut next, mut got) = (five.send_buffers(), 0u32, Vec::new());
    let start = Instant::now();
    let mut last_signal = Instant::now();
    while last_signal.elapsed() < Duration::from_millis(500) {
        pack_some(&mut send, &mut next, total);
        if rx.poll(&mut |s| got.push(s.data()[0])).unwrap().signals > 0 {
            last_signal = Instant::now();
        }
        assert!(got.len() < total as usize, "all {total} arrived with no credit sent");
        assert!(start.elapsed() < Duration::from_secs(60), "no stall on credits");
    }
    assert_eq!(counters.snapshot().credit_messages, 0);
    assert!(!rx.arm().unwrap(), "a receiver that owes a credit must not sleep");
    rx.hold_send_queue(false);
    let start = Instant::now();
    while got.len() < total as usize {
        pack_some(&mut send, &mut next, total);
        rx.poll(&mut |s| got.push(s.data()[0])).unwrap();
        assert!(start.elapsed() < Duration::from_secs(60), "{} of {total} arrived", got.len());
    }
    assert_eq!(got, (0..total).collect::<Vec<_>>());
    assert!(counters.snapshot().credit_messages > 0);
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
}

/// A post that fails after the sender copied its pages into staging: those signals left the
/// queue and will never arrive. The call counts them as dropped (not sent), their bytes leave
/// the queue, and the next call fails the link with the post's error.
#[test]
fn signals_of_a_post_that_fails_count_as_dropped() {
    if skip(RDMA) {
        return;
    }
    let (_five, stop, receiver, socket, link) = five_and_raw_peer();
    let Halves { counters, pool, mut tx, .. } = own_halves(socket, link);
    let mut page = pool.take().unwrap();
    let mut w = BatchWriter::new(page.words_mut(), Limits::default(), WriteOptions::default());
    for i in 0..3u32 {
        w.push(&Signal::new(gsn::PING_REQ, block(3), block(5)).data(&[i])).unwrap();
    }
    let bytes = w.len_bytes();
    (page.len_words, page.signals) = (bytes / 4, 3);
    let mut queue = PageQueue::with_capacity(4);
    queue.push(page);
    tx.refuse_posts();
    let progress = tx.send(&mut queue).unwrap();
    assert_eq!((progress.bytes, progress.signals, progress.dropped), (bytes, 0, 3));
    let c = counters.snapshot();
    assert_eq!((c.signals_sent, c.signals_dropped, c.bytes_sent), (0, 3, 0));
    // Nothing is left queued, yet the sender has something for the next call (the error), so
    // its send buffers call again and the link fails.
    assert!(queue.is_empty() && tx.has_pending());
    let e = tx.send(&mut queue).unwrap_err().to_string();
    assert!(e.contains("post refused"), "{e}");
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
}

#[test]
fn a_peer_whose_nic_stops_acknowledging_fails_the_link() {
    if skip(RDMA) {
        return;
    }
    let (five, stop, receiver, _socket, link) = five_and_raw_peer();
    // The peer's queue pair goes to ERROR while its handshake socket stays open: nothing acks
    // node 5's writes any more (soft-RoCE reports no completion at all for them).
    link.endpoint.to_error().unwrap();
    let start = Instant::now();
    let mut send = five.send_buffers();
    let reason = loop {
        let _ = send.pack(node(3), &Signal::new(gsn::PING_REQ, block(5), block(3)).data(&[1]));
        send.flush();
        if let Ok(LinkEvent::Failed { reason, .. }) = five.events().try_recv() {
            break reason;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no failure after the peer's QP error");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        reason.contains("the peer's NIC stopped acknowledging")
            || reason.contains("send completion failed"),
        "{reason}"
    );
    assert!(start.elapsed() >= Duration::from_secs(1), "failed too early: {reason}");
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
}

#[test]
fn ring_sizes_that_differ_are_refused_at_setup() {
    if skip(RDMA) {
        return;
    }
    // Node 5 has 256 KiB rings; a peer that asks for 128 KiB is refused on both sides, by name.
    let (five, stop, receiver) = listening_node_spinning(5, 3, RDMA, Duration::ZERO);
    let mut s = std::net::TcpStream::connect(five.local_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    transporter::handshake::connect(&mut s, &Hello::new(7, node(3), node(5), RDMA, false), None)
        .unwrap();
    let device = verbs::Device::open(None).unwrap();
    let params = transporter::rdma::RdmaParams::new(device, 128 << 10, Limits::default());
    let e = transporter::rdma::setup::establish(&mut s, &params).unwrap_err().to_string();
    assert!(e.contains("ring size: ours 131072 bytes, the peer's 262144"), "{e}");
    // Node 5 refused it too (its set-up failed the same way): the link never came up.
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(five.state(node(3)), Some(transporter::LinkState::Connected));
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
}

#[test]
fn one_way_stream_gets_credits_back_without_reverse_traffic() {
    if skip(RDMA) {
        return;
    }
    // A small ring: the stream needs its credits back many times over.
    let (one, two, checker) = pair(RDMA, |c| {
        for p in &mut c.peers {
            p.ring_bytes = 128 << 10;
        }
    });
    send_stream(&one, 1, 2, 0..300_000);
    checker.wait_for(300_000, Duration::from_secs(120));
    let sent = one.counters(node(2)).unwrap();
    let got = two.counters(node(1)).unwrap();
    assert_eq!(got.signals_received, 300_000);
    assert!(sent.bytes_sent > 20 * (128 << 10), "the ring was reused many times");
    // Node 2 sends no data: every credit went back alone.
    assert_eq!(got.signals_sent, 0);
    // A credit word goes alone once half the ring (64 KiB) or half the receive queue (128
    // requests) is unreported: at least one per ring's worth, at most one per half of either.
    let ring = 128 << 10;
    assert!(got.credit_messages >= sent.bytes_sent / ring, "{got:?}");
    assert!(
        got.credit_messages <= sent.bytes_sent / (ring / 2) + got.batches_received / 128 + 1,
        "{got:?}"
    );
    // Send completions were asked for only every few posts.
    assert!(sent.rdma_send_completions * 4 < sent.rdma_posts.max(4), "{sent:?}");
}

#[test]
fn receive_requests_are_reposted_under_a_burst_of_wakeups() {
    if skip(RDMA) {
        return;
    }
    let (one, two, checker) = pair(RDMA, |_| {});
    // Each signal goes to a receiver that is asleep, so each is written WITH IMMEDIATE and uses
    // one receive request: 400 of them, more than the 256 posted at the start.
    let rounds = 400u64;
    let mut send = one.send_buffers();
    let mut storage = transporter::stream::StreamStorage::default();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    for seq in 0..rounds {
        let sleeps = two.counters(node(1)).unwrap().sleeps;
        wait("node 2 does not fall asleep", &|| two.counters(node(1)).unwrap().sleeps > sleeps);
        storage.with_signal(seq, block(1), block(2), |s| send.pack(node(2), s)).unwrap();
        send.flush();
        checker.wait_for(seq + 1, Duration::from_secs(20));
    }
    let got = two.counters(node(1)).unwrap();
    let sent = one.counters(node(2)).unwrap();
    assert_eq!(got.signals_received, rounds);
    assert!(got.recv_reposts >= rounds - 256, "{got:?}");
    // Every signal found its receiver asleep: most were woken by a CQ event (an event that
    // comes as the receiver is arming is caught by its poll after arming, and raises none).
    assert!(got.cq_events >= rounds / 2, "{got:?}");
    assert_eq!(sent.failures, 0);
}

#[test]
fn no_device_is_a_clear_error() {
    let mut c = config(1, false, vec![peer(2, unused(), RDMA)]);
    let device_here = verbs::Device::open(None).is_ok();
    if device_here {
        // With a device, the same path is taken for a device that is not there.
        c.rdma_device = Some("no-such-device".into());
    }
    let Err(e) = Registry::start(c) else {
        panic!("the registry started an rdma link without a device");
    };
    assert!(matches!(e, RegistryError::NoRdma { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.starts_with("link to node 2 is configured as rdma, but no RDMA device"), "{e}");
    if device_here {
        assert!(e.contains("no device named \"no-such-device\""), "{e}");
    } else {
        assert!(e.contains("the kernel has no RDMA support"), "{e}");
    }
}
