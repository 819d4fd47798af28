//! The send thread: sending threads hand their pages over at `flush` and one thread writes them
//! to the transports. A stream keeps its order through it over every transport, and nothing is
//! written until the send thread runs.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use transporter::{Registry, TransportKind};

/// Runs `registry`'s send thread until the returned flag is set; the thread's handle gives it
/// back.
fn spawn_send_thread(
    registry: &mut Registry,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<transporter::SendThread>) {
    let thread = registry.take_send_thread().expect("a send thread is configured");
    assert!(registry.take_send_thread().is_none(), "the send thread is handed out once");
    run_send_thread(thread)
}

/// Runs `thread` until the returned flag is set; the handle gives it back.
fn run_send_thread(
    mut thread: transporter::SendThread,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<transporter::SendThread>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        thread.run(Duration::from_micros(50), Duration::from_millis(20), &|| {
            s.load(Ordering::Relaxed)
        });
        thread
    });
    (stop, handle)
}

fn stream_through_the_send_thread(kind: TransportKind) {
    if skip(kind) {
        return;
    }
    let (mut one, _two, checker) = pair(kind, |c| c.send_thread = c.node.get() == 1);
    let (stop, handle) = spawn_send_thread(&mut one);
    send_stream(&one, 1, 2, 0..300_000);
    checker.wait_for(300_000, Duration::from_secs(120));
    // The send thread counts a write after it returns.
    let sent = counters_when(&one, 2, |c| c.signals_sent >= 300_000);
    assert_eq!(sent.signals_sent, 300_000);
    assert_eq!(sent.signals_dropped, 0);
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

#[test]
fn stream_keeps_its_order_through_the_send_thread_over_tcp() {
    stream_through_the_send_thread(TransportKind::Tcp);
}

#[test]
fn stream_keeps_its_order_through_the_send_thread_over_shared_memory() {
    stream_through_the_send_thread(TransportKind::Shm);
}

#[test]
fn stream_keeps_its_order_through_the_send_thread_over_rdma() {
    stream_through_the_send_thread(TransportKind::Rdma);
}

#[test]
fn pages_wait_for_the_send_thread() {
    let (mut one, _two, checker) = pair(TransportKind::Tcp, |c| c.send_thread = c.node.get() == 1);
    let mut send = one.send_buffers();
    let mut storage = transporter::stream::StreamStorage::default();
    for seq in 0..1000 {
        storage.with_signal(seq, block(1), block(2), |s| send.pack(node(2), s)).unwrap();
    }
    let report = send.flush();
    // Handed over, not written: the link has sent nothing while the send thread is not running.
    assert_eq!((report.peers, report.bytes), (1, 0));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(one.counters(node(2)).unwrap().signals_sent, 0);
    let (stop, handle) = spawn_send_thread(&mut one);
    while send.has_unsent() {
        send.flush();
    }
    checker.wait_for(1000, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    assert_eq!(one.counters(node(2)).unwrap().signals_sent, 1000);
}

/// A send thread whose only peer stopped reading (its socket full) does not spin on it: it
/// sleeps between retries on a back-off, and everything goes out, in order, once the peer
/// reads again.
#[test]
fn a_send_thread_behind_a_peer_that_stopped_reading_sleeps_between_retries() {
    let kind = TransportKind::Tcp;
    let mut two = Registry::start(config(2, true, vec![peer(1, unused(), kind)])).unwrap();
    let addr = two.local_addr().expect("listening");
    let mut c1 = config(1, false, vec![peer(2, addr, kind)]);
    c1.send_thread = true;
    // Far more than the loopback socket buffers of both ends hold.
    c1.peers[0].send_buffer_bytes = 256 << 20;
    let mut one = Registry::start(c1).unwrap();
    wait_event(one.events(), Duration::from_secs(5), connected(2));
    wait_event(two.events(), Duration::from_secs(5), connected(1));
    let (stop, handle) = spawn_send_thread(&mut one);
    // Node 2 reads nothing yet: pack a stream the sockets cannot hold and hand it over.
    let count = 200_000u64;
    let mut send = one.send_buffers();
    let mut storage = transporter::stream::StreamStorage::default();
    for seq in 0..count {
        storage.with_signal(seq, block(1), block(2), |s| send.pack(node(2), s)).unwrap();
        if seq % 4096 == 0 {
            send.flush();
        }
    }
    send.flush();
    // Let the sockets fill, then count the passes the thread makes over 300 ms of stall.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let thread = handle.join().unwrap();
    let (passes, sleeps) = (thread.passes, thread.sleeps);
    let (stop, handle) = run_send_thread(thread);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let thread = handle.join().unwrap();
    let (passes, sleeps) = (thread.passes - passes, thread.sleeps - sleeps);
    let sent = one.counters(node(2)).unwrap().signals_sent;
    assert!(sent < count, "the sockets took all {count} signals: nothing stalled");
    // About one try a millisecond once the back-off is at its cap, each after a sleep; a
    // thread spinning on the full socket makes hundreds of thousands.
    assert!(passes < 3000, "{passes} passes in 300 ms behind a stalled peer");
    assert!(sleeps >= 50, "the send thread slept {sleeps} times in 300 ms");
    let (stop, handle) = run_send_thread(thread);
    let checker = StreamChecker::start(&mut two);
    checker.wait_for(count, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    assert_eq!(one.counters(node(2)).unwrap().signals_dropped, 0);
}
