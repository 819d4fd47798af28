//! Job buffers as single-producer, single-consumer rings of words: the producer packs whole
//! signals straight into the ring with the signals crate's [`BatchWriter`] and publishes them
//! with one release store of its tail at the end of its round; the consumer walks them in place
//! (trusted [`SignalView`]s: packed in this process, or checked by the transporter) and hands
//! the room back with one release store of its head at the end of its round. So one hand-off
//! costs the tail line and the signal's own lines, nothing per signal is allocated, and a full
//! ring is back-pressure the producer sees, never growth. This is the shape of NDB's job
//! buffers between threads and of Aeron's one-to-one ring buffer, written from their
//! descriptions.
//!
//! Layout and invariants:
//! - `capacity` is a power of two; `tail` and `head` count words ever published / released
//!   (they never wrap in practice: 2^64 words), each alone on its cache line;
//! - the producer owns `[tail, head + capacity)`, the consumer owns `[head, tail)`: disjoint, so
//!   the unsafe slices below never alias;
//! - a signal never wraps: when it does not fit before the end of the ring, the producer writes
//!   [`PAD`] (a word no signal header can be, as `total_words >= 4`) and continues at index 0;
//! - `capacity >= 2 * limits.max_signal_words()`, so any valid signal fits, padding included.
//!
//! `// SYNC: ring-tail` — the producer's release store of `tail` after writing the words, and the
//! consumer's acquire load before reading them. `// SYNC: ring-head` — the consumer's release
//! store of `head` after reading, and the producer's acquire load before overwriting.
//! Wakeups follow [`crate::sleep`]: publishing wakes a sleeping consumer, releasing room wakes
//! a producer sleeping on back-pressure.

use std::cell::UnsafeCell;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use signals::{BatchWriter, Gsn, Limits, PackError, Signal, SignalView, WriteOptions};

use crate::lane::LaneError;
use crate::parker::Parker;
use crate::sync::{AtomicU64, Ordering};

/// Marks the rest of the ring, from here to its end, as padding.
pub const PAD: u32 = 0;

/// Words of the fixed header every signal starts with.
const HEADER_WORDS: usize = signals::HEADER_BYTES / 4;

/// The ring both ends share.
struct Shared {
    words: Box<[UnsafeCell<u32>]>,
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
}

// SAFETY: the producer writes only words it owns ([tail, head + capacity)) and the consumer
// reads only words it owns ([head, tail)); ownership moves through the release/acquire pairs
// on `tail` and `head` (SYNC: ring-tail, ring-head), so no word is accessed by both at once.
unsafe impl Sync for Shared {}
// SAFETY: as above; the words are plain u32.
unsafe impl Send for Shared {}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("capacity", &self.words.len()).finish_non_exhaustive()
    }
}

impl Shared {
    /// # Safety
    /// `start..start + len` must lie in the ring and be owned by the caller's end for as long
    /// as the slice lives (see the module invariants); no other reference to it may exist.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [u32] {
        debug_assert!(start + len <= self.words.len());
        let first = self.words[start..start + len].as_ptr();
        // SAFETY: UnsafeCell<u32> has the layout of u32; the range is in bounds (sliced above)
        // and exclusively owned by the caller, per this function's contract.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(first), len) }
    }

    /// # Safety
    /// `start..start + len` must lie in the ring, hold published words, and stay owned by the
    /// consumer (not released) for as long as the slice lives.
    unsafe fn slice(&self, start: usize, len: usize) -> &[u32] {
        debug_assert!(start + len <= self.words.len());
        let first = self.words[start..start + len].as_ptr();
        // SAFETY: as in `slice_mut`; the producer does not write these words until released.
        unsafe { std::slice::from_raw_parts(UnsafeCell::raw_get(first).cast_const(), len) }
    }
}

/// Makes a ring of at least `min_words` words (rounded up to a power of two, and to
/// `2 * limits.max_signal_words()`): the producer end for the sending thread, the consumer
/// end for the receiving one, with the two threads' parkers.
pub fn ring(
    min_words: usize,
    limits: Limits,
    producer: Arc<Parker>,
    consumer: Arc<Parker>,
) -> (RingWriter, RingReader) {
    let capacity = min_words.max(2 * limits.max_signal_words()).next_power_of_two();
    let shared = Arc::new(Shared {
        words: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
        tail: CachePadded::new(AtomicU64::new(0)),
        head: CachePadded::new(AtomicU64::new(0)),
    });
    // A handler finds room for one largest signal, padding included when the ring allows.
    let reserve_words = (2 * limits.max_signal_words()).min(capacity / 2) as u64;
    let writer = RingWriter {
        shared: shared.clone(),
        capacity: capacity as u64,
        tail: 0,
        published: 0,
        head_cache: 0,
        reserve_words,
        limits,
        consumer,
    };
    let reader = RingReader {
        shared,
        capacity: capacity as u64,
        head: 0,
        released: 0,
        tail_cache: 0,
        limits,
        producer,
    };
    (writer, reader)
}

/// The words `signal` takes on the wire (no checksum in job buffers).
fn wire_words(signal: &Signal<'_>) -> usize {
    HEADER_WORDS
        + signal.signal_id.is_some() as usize
        + signal.data.len()
        + signal.sections.len()
        + signal.sections.iter().map(|s| s.len()).sum::<usize>()
}

/// The producer end of a ring.
#[derive(Debug)]
pub struct RingWriter {
    shared: Arc<Shared>,
    capacity: u64,
    /// Words written (published or not).
    tail: u64,
    /// Words published to the consumer.
    published: u64,
    /// The consumer's head as last read.
    head_cache: u64,
    reserve_words: u64,
    limits: Limits,
    consumer: Arc<Parker>,
}

impl RingWriter {
    #[inline]
    fn full(&self) -> LaneError {
        LaneError::Full { depth: 1, page_words: self.capacity as usize }
    }

    #[inline]
    fn free_words(&self) -> u64 {
        self.capacity - (self.tail - self.head_cache)
    }

    /// Reads the consumer's head. SYNC: ring-head (acquire: the consumer is done with the words).
    #[inline]
    fn refresh(&mut self) {
        self.head_cache = self.shared.head.load(Ordering::Acquire);
        debug_assert!(self.tail - self.head_cache <= self.capacity);
    }

    /// Claims `need` contiguous words, padding to the ring's end first if needed; returns
    /// their start index.
    #[inline]
    fn claim(&mut self, need: usize) -> Result<usize, LaneError> {
        let pos = (self.tail % self.capacity) as usize;
        let to_end = self.capacity as usize - pos;
        let total = if need > to_end { to_end + need } else { need } as u64;
        if self.free_words() < total {
            self.refresh();
            if self.free_words() < total {
                return Err(self.full());
            }
        }
        if need <= to_end {
            return Ok(pos);
        }
        // SAFETY: word `pos` is in [tail, head + capacity), owned by the producer (checked
        // above), and not yet published.
        unsafe { self.shared.slice_mut(pos, 1)[0] = PAD };
        self.tail += to_end as u64;
        Ok(0)
    }

    /// Packs one signal (visible to the consumer after [`RingWriter::flush`]).
    #[inline]
    pub fn push(&mut self, signal: &Signal<'_>) -> Result<(), LaneError> {
        let need = wire_words(signal);
        let max = self.limits.max_signal_words();
        if need > max {
            return Err(PackError::SignalTooLong { gsn: signal.gsn, words: need, max }.into());
        }
        let start = self.claim(need)?;
        // SAFETY: `claim` reserved `start..start + need` for the producer; it is unpublished.
        let region = unsafe { self.shared.slice_mut(start, need) };
        let mut writer = BatchWriter::new(region, self.limits, WriteOptions::default());
        writer.push(signal)?;
        debug_assert_eq!(writer.words().len(), need);
        self.tail += need as u64;
        Ok(())
    }

    /// Copies one already packed, validated signal (its wire words, e.g. from a peer's batch).
    #[inline]
    pub fn push_wire(&mut self, words: &[u32]) -> Result<(), LaneError> {
        let max = self.limits.max_signal_words();
        if words.len() > max || words.len() < HEADER_WORDS {
            // Word 1 of the header holds the GSN in its low half.
            let gsn = Gsn(words.get(1).map_or(0, |w| *w as u16));
            return Err(PackError::SignalTooLong { gsn, words: words.len(), max }.into());
        }
        let start = self.claim(words.len())?;
        // SAFETY: `claim` reserved this range for the producer; it is unpublished.
        unsafe { self.shared.slice_mut(start, words.len()) }.copy_from_slice(words);
        self.tail += words.len() as u64;
        Ok(())
    }

    /// End of round: publishes what was written and wakes the consumer if it sleeps.
    /// Returns whether anything was published.
    #[inline]
    pub fn flush(&mut self) -> bool {
        if self.tail == self.published {
            return false;
        }
        // SYNC: ring-tail (release: the words written above are visible to an acquiring reader).
        self.shared.tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
        self.consumer.wake();
        true
    }

    /// Whether a handler may run that sends here: room for one largest signal (with padding)
    /// is left. A ring without it is congested.
    #[inline]
    pub fn has_reserve(&mut self) -> bool {
        if self.free_words() >= self.reserve_words {
            return true;
        }
        self.refresh();
        self.free_words() >= self.reserve_words
    }
}

/// The consumer end of a ring.
#[derive(Debug)]
pub struct RingReader {
    shared: Arc<Shared>,
    capacity: u64,
    /// Words consumed (released or not).
    head: u64,
    /// Words released to the producer.
    released: u64,
    /// The producer's tail as last read.
    tail_cache: u64,
    limits: Limits,
    producer: Arc<Parker>,
}

impl RingReader {
    /// Whether a signal is waiting.
    #[inline]
    pub fn has_signal(&self) -> bool {
        // SYNC: ring-tail (acquire).
        self.head != self.tail_cache || self.shared.tail.load(Ordering::Acquire) != self.head
    }

    /// Skips padding; returns whether a signal is published at `head`.
    #[inline]
    fn ready(&mut self) -> bool {
        loop {
            if self.head == self.tail_cache {
                // SYNC: ring-tail (acquire: the words up to `tail` are written).
                self.tail_cache = self.shared.tail.load(Ordering::Acquire);
                if self.head == self.tail_cache {
                    return false;
                }
            }
            let pos = (self.head % self.capacity) as usize;
            // SAFETY: `head < tail_cache`, so word `pos` is published and owned by the consumer.
            if unsafe { self.shared.slice(pos, 1)[0] } != PAD {
                return true;
            }
            self.head += self.capacity - pos as u64;
        }
    }

    /// The next signal, borrowed in place; call [`RingReader::advance`] with its length after
    /// running it.
    #[inline]
    pub fn peek(&mut self) -> Option<SignalView<'_>> {
        if !self.ready() {
            return None;
        }
        let pos = (self.head % self.capacity) as usize;
        let avail = (self.tail_cache - self.head).min(self.capacity - pos as u64) as usize;
        // SAFETY: `head..head + avail` is published (below tail_cache), within the ring, and
        // not released until `advance` + `release`, which need `&mut self` (the view borrows
        // `self`, so it is gone by then).
        let words = unsafe { self.shared.slice(pos, avail) };
        // Packed by a BatchWriter in this process, or copied from a batch the transporter
        // walked and checked: read, not checked again.
        Some(SignalView::trusted(words, self.limits))
    }

    /// Steps past the signal last peeked (`words` long).
    #[inline]
    pub fn advance(&mut self, words: usize) {
        self.head += words as u64;
        debug_assert!(self.head <= self.tail_cache);
    }

    /// End of round: hands consumed words back to the producer and wakes it if it sleeps on
    /// back-pressure. Returns whether anything was released.
    #[inline]
    pub fn release(&mut self) -> bool {
        if self.head == self.released {
            return false;
        }
        // SYNC: ring-head (release: this end is done reading the words before `head`).
        self.shared.head.store(self.head, Ordering::Release);
        self.released = self.head;
        self.producer.wake();
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId};

    use super::*;

    fn ends(min_words: usize) -> (RingWriter, RingReader) {
        let limits = Limits::new(1, 40).unwrap();
        let p = Arc::new(Parker::new().unwrap());
        let c = Arc::new(Parker::new().unwrap());
        ring(min_words, limits, p, c)
    }

    fn r(block: u16) -> BlockRef {
        BlockRef::new(NodeId::MIN, BlockNumber(block), BlockInstance(0))
    }

    /// Pops everything published, returning each signal's first data word.
    fn drain(rd: &mut RingReader) -> Vec<u32> {
        let mut out = vec![];
        while let Some((first, len)) = rd.peek().map(|v| (v.data()[0], v.wire_words().len())) {
            out.push(first);
            rd.advance(len);
        }
        rd.release();
        out
    }

    #[test]
    fn fifo_across_many_wraps_with_padding() {
        let (mut w, mut rd) = ends(64);
        let mut expected = 0u32;
        for round in 0..200u32 {
            // Odd sizes so signals end at every offset and padding happens.
            let n = 1 + round % 5;
            for i in 0..n {
                let len = 1 + ((round + i) % 9) as usize;
                let words = vec![round * 10 + i; len];
                w.push(&Signal::new(gsn::PING_REQ, r(1), r(2)).data(&words)).unwrap();
            }
            assert!(w.flush());
            let got = drain(&mut rd);
            let want: Vec<u32> = (0..n).map(|i| round * 10 + i).collect();
            assert_eq!(got, want);
            expected += n;
        }
        assert!(expected > 200);
    }

    #[test]
    fn full_ring_is_back_pressure_until_released() {
        let (mut w, mut rd) = ends(64);
        let sig = Signal::new(gsn::PING_REQ, r(1), r(2)).data(&[7; 10]);
        let mut pushed = 0;
        while w.push(&sig).is_ok() {
            pushed += 1;
        }
        assert_eq!(pushed, 128 / 14, "the 128-word ring holds nine 14-word signals");
        assert!(matches!(w.push(&sig), Err(LaneError::Full { .. })));
        assert!(!w.has_reserve());
        w.flush();
        // Consumed but not released: still full.
        while let Some(len) = rd.peek().map(|v| v.wire_words().len()) {
            rd.advance(len);
        }
        assert!(w.push(&sig).is_err());
        assert!(rd.release());
        assert!(w.has_reserve());
        w.push(&sig).unwrap();
    }

    #[test]
    fn nothing_is_visible_before_flush() {
        let (mut w, mut rd) = ends(64);
        w.push(&Signal::new(gsn::PING_REQ, r(1), r(2)).data(&[1])).unwrap();
        assert!(!rd.has_signal());
        assert!(rd.peek().is_none());
        w.flush();
        assert!(rd.has_signal());
        assert_eq!(drain(&mut rd), vec![1]);
    }

    #[test]
    fn wire_words_are_copied_and_checked() {
        let (mut w, mut rd) = ends(64);
        let mut page = [0u32; 40];
        let limits = Limits::new(1, 40).unwrap();
        let mut bw = BatchWriter::new(&mut page, limits, WriteOptions::default());
        bw.push(&Signal::new(gsn::STATS_REQ, r(3), r(4)).data(&[9, 8])).unwrap();
        w.push_wire(bw.words()).unwrap();
        assert!(w.push_wire(&[0u32; 41]).is_err());
        w.flush();
        assert_eq!(drain(&mut rd), vec![9]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The ring's index protocol under loom: one producer pushes signals of varying size
    //! through a ring small enough to wrap and fill, the consumer checks FIFO order and
    //! contents. Loom explores the interleavings of the `tail`/`head` handshake (publishing,
    //! back-pressure, padding at the wrap). The words themselves are raw memory that loom does
    //! not track, so what this checks is the index logic, not the release/acquire pairing of
    //! the data (that pairing is the plain SYNC pattern documented above).
    use loom::thread;

    use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId};

    use super::*;

    #[test]
    fn loom_ring_fifo_through_wrap_and_back_pressure() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let limits = Limits::new(30, 64).unwrap();
            let p = Arc::new(Parker::new().unwrap());
            let c = Arc::new(Parker::new().unwrap());
            // 2 * 64 words: five signals of 26..=28 words fill it and wrap.
            let (mut w, mut rd) = ring(128, limits, p, c);
            let me = BlockRef::new(NodeId::MIN, BlockNumber(1), BlockInstance(0));
            let count = 6u32;
            let producer = thread::spawn(move || {
                for i in 0..count {
                    let data = [i; 3];
                    let section = [i; 20];
                    let sections: [&[u32]; 1] = [&section];
                    let len = 1 + (i % 3) as usize;
                    let sig =
                        Signal::new(gsn::PING_REQ, me, me).data(&data[..len]).sections(&sections);
                    while w.push(&sig).is_err() {
                        w.flush();
                        thread::yield_now();
                    }
                    w.flush();
                }
            });
            let mut next = 0u32;
            while next < count {
                let seen = rd.peek().map(|v| {
                    let ok = v.data().len() == 1 + (next % 3) as usize
                        && v.data().iter().all(|&x| x == next)
                        && v.section(0).is_some_and(|s| s == [next; 20]);
                    (ok, v.wire_words().len())
                });
                match seen {
                    Some((ok, len)) => {
                        assert!(ok, "signal {next} arrived damaged or out of order");
                        rd.advance(len);
                        next += 1;
                    }
                    None => {
                        rd.release();
                        thread::yield_now();
                    }
                }
            }
            rd.release();
            producer.join().unwrap();
        });
    }
}
