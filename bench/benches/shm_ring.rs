//! Criterion micro-benchmark of the shared-memory ring's push and pop: one batch of signals
//! packed into the send buffers and flushed into the ring (one copy per record, one release store
//! per record word), then walked in place and handed up by the receiving side, both ends on
//! this thread, so the figure is the ring's own work with no cross-core transfer and no wakeup
//! (the receiver polls without sleeping, so the sender never finds it marked sleeping).
//!
//! Two registries in this process are linked over shared memory exactly as two nodes are (TCP
//! handshake, segment in /dev/shm, eventfds passed over the socket). Cases: batches of 1, 16
//! and 256 signals of 4 data words, and 64 signals of 25 words. Throughput is in signals.
//! Signal pack/walk and the job buffer have their own criterion benchmarks (`signals` and `node`).
//!
//! Run: `cargo bench -p blockwire-bench --bench shm_ring`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId, Signal};
use transporter::{
    LinkState, PeerConfig, ReceiveSide, Registry, RegistryConfig, SendBuffers, TransportKind,
};

fn node(n: u32) -> NodeId {
    NodeId::new(n).expect("node ids 1 and 2 are valid")
}

fn config(me: u32, other: u32, listen: Option<SocketAddr>, addr: SocketAddr) -> RegistryConfig {
    let peer = PeerConfig {
        ring_bytes: 1 << 22,
        send_buffer_bytes: 16 << 20,
        ..PeerConfig::new(node(other), addr, TransportKind::Shm)
    };
    let cluster_id = 9000 + u64::from(std::process::id() % 100_000);
    RegistryConfig::new(cluster_id, node(me), listen, vec![peer])
}

/// Node 1 and node 2 linked by shared memory; returns node 1's sender and node 2's receiver
/// (and both registries, which must outlive them).
fn linked() -> (Registry, Registry, SendBuffers, ReceiveSide) {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
    let mut two = Registry::start(config(2, 1, Some(any), any)).expect("node 2 starts");
    let addr = two.local_addr().expect("node 2 listens");
    let one = Registry::start(config(1, 2, None, addr)).expect("node 1 starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while one.state(node(2)) != Some(LinkState::Connected)
        || two.state(node(1)) != Some(LinkState::Connected)
    {
        assert!(Instant::now() < deadline, "the shared-memory link did not come up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let side = two.take_receive_side().expect("receive side");
    let send = one.send_buffers();
    (one, two, send, side)
}

fn push_pop(c: &mut Criterion) {
    let (_one, _two, mut send, mut side) = linked();
    let from = BlockRef::new(node(1), BlockNumber(200), BlockInstance(0));
    let to = BlockRef::new(node(2), BlockNumber(200), BlockInstance(0));
    let mut group = c.benchmark_group("shm_ring_push_pop");
    for (batch, words) in [(1usize, 4usize), (16, 4), (256, 4), (64, 25)] {
        let data: Vec<u32> = (0..words as u32).collect();
        let signal = Signal::new(gsn::PING_REQ, from, to).data(&data);
        group.throughput(Throughput::Elements(batch as u64));
        let id = BenchmarkId::new(format!("{words}_words"), batch);
        group.bench_with_input(id, &batch, |b, &batch| {
            b.iter(|| {
                for _ in 0..batch {
                    send.pack(node(2), &signal).expect("room in the send buffers");
                }
                send.flush();
                let mut got = 0;
                let mut sum = 0u64;
                while got < batch {
                    got += side.poll(Some(Duration::ZERO), &mut |_, view| {
                        sum += u64::from(view.data()[0]);
                    });
                }
                sum
            })
        });
    }
    group.finish();
}

criterion_group!(benches, push_pop);
criterion_main!(benches);
