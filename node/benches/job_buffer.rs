//! Criterion bench deciding the job buffer: the crossbeam-channel page lane (`lane.rs`) against
//! our own single-producer ring (`ring.rs`), both packing with the signals crate's writer and
//! walking in place.
//! - `rtt/*`: one 4-word signal there and back between two pinned threads (each direction its
//!   own job buffer, the echo side spinning): the hand-off latency.
//! - `batch_256/*`: 256 signals packed, published, walked and handed back on one thread: the
//!   per-signal cost of the format and the hand-off, without cross-core traffic.
//!
//! The runtime uses the ring only because this bench shows it at least 1.5x faster (see the
//! node crate's report of figures); run `cargo bench -p blockwire-node --bench job_buffer`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use node::lane::{lane, LaneReader, LaneShape, LaneWriter};
use node::parker::Parker;
use node::ring::{ring, RingReader, RingWriter};
use signals::{BlockInstance, BlockNumber, BlockRef, Gsn, Limits, NodeId, Signal};

const ITEM: Gsn = Gsn(60002);
const WORDS: usize = 8 * 8192;

fn me() -> BlockRef {
    BlockRef::new(NodeId::MIN, BlockNumber(1), BlockInstance(0))
}

/// The producer end of either job buffer.
trait Tx: Send + 'static {
    fn push_item(&mut self, value: u32) -> bool;
    fn publish(&mut self);
}

/// The consumer end of either job buffer.
trait Rx: Send + 'static {
    /// Takes one signal, returning its first data word.
    fn take(&mut self) -> Option<u32>;
    /// Hands consumed room back (end of a round).
    fn done(&mut self);
}

impl Tx for LaneWriter {
    fn push_item(&mut self, value: u32) -> bool {
        self.push(&Signal::new(ITEM, me(), me()).data(&[value, 1, 2, 3])).is_ok()
    }
    fn publish(&mut self) {
        self.flush();
    }
}

impl Rx for LaneReader {
    fn take(&mut self) -> Option<u32> {
        let (v, len) = self.peek().map(|v| (v.data()[0], v.wire_words().len()))?;
        self.advance(len);
        Some(v)
    }
    fn done(&mut self) {}
}

impl Tx for RingWriter {
    fn push_item(&mut self, value: u32) -> bool {
        self.push(&Signal::new(ITEM, me(), me()).data(&[value, 1, 2, 3])).is_ok()
    }
    fn publish(&mut self) {
        self.flush();
    }
}

impl Rx for RingReader {
    fn take(&mut self) -> Option<u32> {
        let (v, len) = self.peek().map(|v| (v.data()[0], v.wire_words().len()))?;
        self.advance(len);
        Some(v)
    }
    fn done(&mut self) {
        self.release();
    }
}

fn parkers() -> (Arc<Parker>, Arc<Parker>) {
    (Arc::new(Parker::new().expect("parker")), Arc::new(Parker::new().expect("parker")))
}

fn lanes() -> ((LaneWriter, LaneReader), (LaneWriter, LaneReader)) {
    let shape = LaneShape { depth: 8, page_words: 8192, limits: Limits::default() };
    let (a, b) = parkers();
    (lane(shape, a.clone(), b.clone()), lane(shape, b, a))
}

fn rings() -> ((RingWriter, RingReader), (RingWriter, RingReader)) {
    let (a, b) = parkers();
    (ring(WORDS, Limits::default(), a.clone(), b.clone()), ring(WORDS, Limits::default(), b, a))
}

fn pin(cpu: usize) {
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

/// Round trips of one signal between this thread and a spinning echo thread.
fn rtt<T: Tx, R: Rx>(
    c: &mut Criterion,
    name: &str,
    (mut tx, rx_far): (T, R),
    (mut tx_far, mut rx): (T, R),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut rx_far = rx_far;
        while !stop2.load(Ordering::Relaxed) {
            match rx_far.take() {
                Some(v) => {
                    rx_far.done();
                    while !tx_far.push_item(v) {
                        tx_far.publish();
                    }
                    tx_far.publish();
                }
                None => core::hint::spin_loop(),
            }
        }
    });
    pin(0);
    c.bench_function(&format!("rtt/{name}"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                while !tx.push_item(i as u32) {
                    tx.publish();
                }
                tx.publish();
                loop {
                    if let Some(v) = rx.take() {
                        debug_assert_eq!(v, i as u32);
                        rx.done();
                        break;
                    }
                    core::hint::spin_loop();
                }
            }
            start.elapsed()
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
}

/// Pack 256 signals, publish, walk them back, on one thread.
fn batch<T: Tx, R: Rx>(c: &mut Criterion, name: &str, (mut tx, mut rx): (T, R)) {
    let mut group = c.benchmark_group("batch_256");
    group.throughput(Throughput::Elements(256));
    group.bench_function(name, |b| {
        b.iter(|| {
            for i in 0..256u32 {
                let _ = tx.push_item(i);
            }
            tx.publish();
            let mut sum = 0u32;
            while let Some(v) = rx.take() {
                sum = sum.wrapping_add(v);
            }
            rx.done();
            sum
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let (there, back) = lanes();
    rtt(c, "crossbeam_lane", there, back);
    let (there, back) = rings();
    rtt(c, "ring", there, back);
    batch(c, "crossbeam_lane", lanes().0);
    batch(c, "ring", rings().0);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
