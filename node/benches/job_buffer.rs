//! Criterion bench of one job-buffer lane on one thread: pack a batch of signals, publish,
//! walk them back. Measures the per-signal cost of the page format and the channel hand-off
//! without cross-core traffic (see `pingpong.rs` for the two-thread figures).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use node::lane::{lane, LaneShape};
use node::parker::Parker;
use signals::{BlockInstance, BlockNumber, BlockRef, Gsn, Limits, NodeId, Signal};

fn bench_lane(c: &mut Criterion) {
    let shape = LaneShape { depth: 8, page_words: 8192, limits: Limits::default() };
    let p = Arc::new(Parker::new().expect("parker"));
    let q = Arc::new(Parker::new().expect("parker"));
    let (mut w, mut r) = lane(shape, p, q);
    let me = BlockRef::new(NodeId::MIN, BlockNumber(1), BlockInstance(0));
    let mut group = c.benchmark_group("job_buffer");
    for batch in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("push_flush_walk_batch_{batch}"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    for i in 0..batch {
                        let words = [i as u32, 1, 2, 3];
                        let _ = w.push(&Signal::new(Gsn(60002), me, me).data(&words));
                    }
                    w.flush();
                    let mut sum = 0u32;
                    while let Some(v) = r.peek() {
                        sum = sum.wrapping_add(v.data()[0]);
                        let len = v.wire_words().len();
                        r.advance(len);
                    }
                    sum
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_lane);
criterion_main!(benches);
