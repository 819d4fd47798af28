//! Which job buffer the runtime uses between threads, in one place.
//!
//! Two implementations exist with the same interface: [`crate::lane`] (pages over
//! crossbeam-channel) and [`crate::ring`] (our own single-producer ring of words). The runtime
//! uses the ring because `benches/job_buffer.rs` measures it at least 1.5x faster on the
//! cross-thread hand-off (fewer cache lines move per signal: the words, with the commit word in
//! front of them, instead of a channel slot, its stamp and a page going both ways; 181-183 ns
//! against 585 ns and more per round trip when last measured); to switch back, change the two
//! lines below.

use std::sync::Arc;

use crate::lane::LaneShape;
use crate::parker::Parker;

pub use crate::ring::{RingReader as JobReader, RingWriter as JobWriter};

/// A job buffer holding `shape.depth * shape.page_words` words (rounded up to a power of two).
pub fn job_buffer(
    shape: LaneShape,
    producer: Arc<Parker>,
    consumer: Arc<Parker>,
) -> (JobWriter, JobReader) {
    crate::ring::ring(shape.depth * shape.page_words, shape.limits, producer, consumer)
}
