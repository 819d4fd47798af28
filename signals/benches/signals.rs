//! Packing and walking batches of 1, 16 and 256 signals of three shapes: 4 data words, 25 data
//! words, and 4 data words with one 1 KiB section. Throughput is in signals, so criterion's
//! "thrpt" line reads as signals per second (ns per signal = 1e9 / thrpt).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use signals::{
    BatchWalker, BatchWriter, BlockInstance, BlockNumber, BlockRef, Gsn, Limits, NodeId, Signal,
    WriteOptions,
};

const BATCHES: [usize; 3] = [1, 16, 256];

fn block(node: u32, block: u16) -> BlockRef {
    BlockRef::new(NodeId::new(node).expect("valid node"), BlockNumber(block), BlockInstance(0))
}

struct Shape {
    name: &'static str,
    data: Vec<u32>,
    section: Option<Vec<u32>>,
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape { name: "4w", data: (0..4).collect(), section: None },
        Shape { name: "25w", data: (0..25).collect(), section: None },
        Shape { name: "4w+1KiB", data: (0..4).collect(), section: Some((0..256).collect()) },
    ]
}

fn pack(c: &mut Criterion) {
    let mut group = c.benchmark_group("pack");
    let limits = Limits::default();
    let (from, to) = (block(1, 10), block(2, 11));
    for shape in shapes() {
        let sections_storage: Vec<&[u32]> = shape.section.iter().map(|s| s.as_slice()).collect();
        for n in BATCHES {
            let mut page = vec![0u32; n * (4 + 25 + 1 + 256 + 1)];
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(shape.name, n), |b| {
                b.iter(|| {
                    let mut w = BatchWriter::new(&mut page, limits, WriteOptions::default());
                    let signal =
                        Signal::new(Gsn(2), from, to).data(&shape.data).sections(&sections_storage);
                    for _ in 0..n {
                        w.push(black_box(&signal)).expect("page sized for the batch");
                    }
                    black_box(w.len_bytes())
                })
            });
        }
    }
    group.finish();
}

fn walk(c: &mut Criterion) {
    let mut group = c.benchmark_group("walk");
    let limits = Limits::default();
    let (from, to) = (block(1, 10), block(2, 11));
    for shape in shapes() {
        let sections_storage: Vec<&[u32]> = shape.section.iter().map(|s| s.as_slice()).collect();
        for n in BATCHES {
            let mut page = vec![0u32; n * (4 + 25 + 1 + 256 + 1)];
            let mut w = BatchWriter::new(&mut page, limits, WriteOptions::default());
            let signal =
                Signal::new(Gsn(2), from, to).data(&shape.data).sections(&sections_storage);
            for _ in 0..n {
                w.push(&signal).expect("page sized for the batch");
            }
            let batch = w.words().to_vec();
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(shape.name, n), |b| {
                b.iter(|| {
                    let mut walker = BatchWalker::from_words(black_box(&batch), limits);
                    let mut sum = 0u32;
                    while let Ok(Some(s)) = walker.next_signal() {
                        sum = sum.wrapping_add(s.data()[0]).wrapping_add(s.gsn().0 as u32);
                    }
                    black_box(sum)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pack, walk);
criterion_main!(benches);
