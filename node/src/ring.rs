//! Job buffers as single-producer, single-consumer rings of words: the producer packs whole
//! signals straight into the ring with the signals crate's [`BatchWriter`] and publishes each
//! round's signals with one release store of a commit word in front of them; the consumer
//! spins on that word, walks the signals in place (trusted [`SignalView`]s: packed in this
//! process, or checked by the transporter) and hands the room back with one release store of
//! its head at the end of its round. So a hand-off costs the signal's own lines (the commit
//! word sits right before the first signal, usually on its line), no index line travels per
//! signal, nothing per signal is allocated, and a full ring is back-pressure the producer sees,
//! never growth. This is the shape of NDB's job buffers between threads and of Aeron's
//! one-to-one ring buffer (records that commit themselves), written from their descriptions.
//!
//! Layout and invariants:
//! - `capacity` is a power of two; `tail` (words written) and `head` (words consumed) count
//!   words ever (they never wrap in practice: 2^64 words); `head` is alone on its cache line;
//! - the ring is a sequence of segments: a commit word holding the segment's length in words,
//!   then that many words of whole signals. A zero commit word is "nothing yet"; [`PAD`] means
//!   "the rest of the ring is skipped, go on at index 0". A segment never wraps;
//! - the producer writes a round's signals after a commit word it keeps zero, and at
//!   [`RingWriter::flush`] zeroes the word after them (the next commit word: it may hold an
//!   older lap's bytes) and then release-stores the length: nothing is visible before a flush;
//! - the producer owns `[tail, head + capacity)` and always keeps one word of it free (the
//!   word after its last segment); the consumer owns `[head, committed end)`;
//! - `capacity >= 2 * limits.max_signal_words() + 4`, so any valid signal fits, padding and
//!   commit words included, and the reserve that says "room for one" (2 * max + 3 words free:
//!   a signal that wraps takes the rest of the lap, a commit word and itself) always can.
//!
//! `// SYNC: ring-commit` — the producer's release store of a commit word after writing the
//! segment (and the zero after it), and the consumer's acquire load before reading them.
//! `// SYNC: ring-head` — the consumer's release store of `head` after reading, and the
//! producer's acquire load before overwriting.
//! Wakeups follow [`crate::sleep`]: publishing wakes a sleeping consumer, releasing room wakes
//! a producer sleeping on back-pressure.

use std::cell::UnsafeCell;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use signals::{BatchWriter, Gsn, Limits, PackError, Signal, SignalView, WriteOptions};

use crate::lane::LaneError;
use crate::parker::Parker;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// A commit word saying the rest of the ring, from here to its end, is skipped.
pub const PAD: u32 = u32::MAX;

/// Words of the fixed header every signal starts with.
const HEADER_WORDS: usize = signals::HEADER_BYTES / 4;

/// The ring both ends share.
struct Shared {
    words: Box<[UnsafeCell<u32>]>,
    /// Under loom, the commit words are modelled atomics beside the (untracked) words; in
    /// normal builds a commit word is the ring word itself, accessed atomically.
    #[cfg(loom)]
    commits: Box<[AtomicU32]>,
    head: CachePadded<AtomicU64>,
}

// SAFETY: the producer writes only words it owns ([tail, head + capacity)) and the consumer
// reads only words it owns ([head, committed end)); ownership moves through the release/acquire
// pairs on the commit words and `head` (SYNC: ring-commit, ring-head), and the one word both
// may touch at once, the next commit word, is only accessed atomically.
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
    /// `start..start + len` must lie in the ring, hold committed words, and stay owned by the
    /// consumer (not released) for as long as the slice lives.
    unsafe fn slice(&self, start: usize, len: usize) -> &[u32] {
        debug_assert!(start + len <= self.words.len());
        let first = self.words[start..start + len].as_ptr();
        // SAFETY: as in `slice_mut`; the producer does not write these words until released.
        unsafe { std::slice::from_raw_parts(UnsafeCell::raw_get(first).cast_const(), len) }
    }

    /// The commit word at `pos` (only ever accessed atomically while it is one).
    #[inline]
    fn commit(&self, pos: usize) -> &AtomicU32 {
        #[cfg(loom)]
        {
            &self.commits[pos]
        }
        #[cfg(not(loom))]
        {
            // SAFETY: in bounds (indexed); a u32 cell is aligned for AtomicU32. While the word
            // is a commit word every access to it is atomic (module invariants).
            unsafe { AtomicU32::from_ptr(self.words[pos].get()) }
        }
    }
}

/// Makes a ring of at least `min_words` words (rounded up to a power of two, and to
/// `2 * limits.max_signal_words() + 4`): the producer end for the sending thread, the consumer
/// end for the receiving one, with the two threads' parkers.
pub fn ring(
    min_words: usize,
    limits: Limits,
    producer: Arc<Parker>,
    consumer: Arc<Parker>,
) -> (RingWriter, RingReader) {
    // A power of two: positions in the ring are a mask of the word counts, not a division.
    let capacity = min_words.max(2 * limits.max_signal_words() + 4).next_power_of_two();
    let shared = Arc::new(Shared {
        words: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
        #[cfg(loom)]
        commits: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
        head: CachePadded::new(AtomicU64::new(0)),
    });
    // A handler finds room for one largest signal, padding and commit words included, wherever
    // the tail stands (a wrap takes up to `max` words of padding, a commit word and the
    // signal). Capped at half the ring, this once said "room" where a wrapping signal found
    // none, and a receive path waiting for room spun.
    let reserve_words = 2 * limits.max_signal_words() as u64 + 3;
    let writer = RingWriter {
        shared: shared.clone(),
        capacity: capacity as u64,
        tail: 0,
        open: [Segment::default(); 2],
        opened: 0,
        head_cache: 0,
        reserve_words,
        limits,
        consumer,
    };
    let reader = RingReader {
        shared,
        capacity: capacity as u64,
        head: 0,
        segment_end: 0,
        released: 0,
        limits,
        producer,
    };
    (writer, reader)
}

/// Where the next signal goes (see [`RingWriter::place`]).
#[derive(Clone, Copy, Debug)]
enum Place {
    /// At this index, after the open segment.
    Append(usize),
    /// In a new segment whose commit word is at this index.
    Open(usize),
    /// In a new segment at index 0, after a pad at this index.
    Wrap(usize),
}

/// A segment written and not yet committed: where its commit word is, and its length so far.
#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    at: usize,
    words: u32,
}

/// The producer end of a ring.
#[derive(Debug)]
pub struct RingWriter {
    shared: Arc<Shared>,
    capacity: u64,
    /// Words written (committed or not), commit words and padding included.
    tail: u64,
    /// Segments written since the last flush (two at most: a flush fits in the ring, so it
    /// wraps at most once).
    open: [Segment; 2],
    opened: usize,
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

    /// Words the producer may still write, keeping the one after them free.
    #[inline]
    fn free_words(&self) -> u64 {
        self.capacity - (self.tail - self.head_cache) - 1
    }

    /// Reads the consumer's head. SYNC: ring-head (acquire: the consumer is done with the words).
    #[inline]
    fn refresh(&mut self) {
        self.head_cache = self.shared.head.load(Ordering::Acquire);
        debug_assert!(self.tail - self.head_cache < self.capacity);
    }

    /// Finds room for a signal of `need` words: after the open segment, in a new segment at
    /// `tail`, or in a new segment at index 0 after padding. Changes nothing but the cached
    /// head, so a signal that fails to pack leaves no trace.
    #[inline]
    fn place(&mut self, need: usize) -> Result<Place, LaneError> {
        let pos = (self.tail & (self.capacity - 1)) as usize;
        let to_end = self.capacity as usize - pos;
        // An open segment that reached the ring's end is followed by a new one at index 0.
        let (place, total) = if self.opened > 0 && pos != 0 && need <= to_end {
            (Place::Append(pos), need)
        } else if need < to_end {
            (Place::Open(pos), 1 + need)
        } else {
            (Place::Wrap(pos), to_end + 1 + need)
        };
        if self.free_words() < total as u64 {
            self.refresh();
            if self.free_words() < total as u64 {
                return Err(self.full());
            }
        }
        Ok(place)
    }

    /// Where a signal placed at `place` starts.
    #[inline]
    fn start(place: Place) -> usize {
        match place {
            Place::Append(pos) => pos,
            Place::Open(pos) => pos + 1,
            Place::Wrap(_) => 1,
        }
    }

    /// Takes the words of a signal of `need` words, written at `place`.
    #[inline]
    fn taken(&mut self, place: Place, need: usize) {
        match place {
            Place::Append(_) => self.open[self.opened - 1].words += need as u32,
            Place::Open(pos) => {
                // The commit word at `tail` is zero since the last flush (or since the ring
                // was made), or, after a segment that ended at the ring's end, is stored before
                // that segment's commit.
                if self.opened == self.open.len() {
                    self.commit_open();
                }
                self.open[self.opened] = Segment { at: pos, words: need as u32 };
                self.opened += 1;
                self.tail += 1;
            }
            Place::Wrap(pos) => {
                if self.opened == self.open.len() {
                    self.commit_open();
                }
                // The new segment's commit word, at index 0, may hold an older lap's bytes:
                // zero it before the pad can lead the consumer there (the pad is visible at
                // once when no segment is open, else with the open segment's commit).
                self.shared.commit(0).store(0, Ordering::Relaxed);
                // SYNC: ring-commit (release: the zero above is seen by whoever follows the pad).
                self.shared.commit(pos).store(PAD, Ordering::Release);
                self.tail += self.capacity - pos as u64;
                self.open[self.opened] = Segment { at: 0, words: need as u32 };
                self.opened += 1;
                self.tail += 1;
            }
        }
        self.tail += need as u64;
    }

    /// Packs one signal (visible to the consumer after [`RingWriter::flush`]).
    #[inline]
    pub fn push(&mut self, signal: &Signal<'_>) -> Result<(), LaneError> {
        // No checksum in job buffers.
        let need = signal.wire_words(WriteOptions::default());
        let max = self.limits.max_signal_words();
        if need > max {
            return Err(PackError::SignalTooLong { gsn: signal.gsn, words: need, max }.into());
        }
        let place = self.place(need)?;
        let start = RingWriter::start(place);
        // SAFETY: `place` found `start..start + need` free, owned by the producer, uncommitted.
        let region = unsafe { self.shared.slice_mut(start, need) };
        BatchWriter::write_one(region, signal, self.limits, WriteOptions::default())?;
        self.taken(place, need);
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
        let place = self.place(words.len())?;
        let start = RingWriter::start(place);
        // SAFETY: `place` found this range free, owned by the producer, uncommitted.
        unsafe { self.shared.slice_mut(start, words.len()) }.copy_from_slice(words);
        self.taken(place, words.len());
        Ok(())
    }

    /// Commits the open segments: zeroes the word after the last (the next commit word), then
    /// stores each one's length, the last first, so a consumer walks through without stopping.
    #[inline]
    fn commit_open(&mut self) {
        let next = (self.tail & (self.capacity - 1)) as usize;
        self.shared.commit(next).store(0, Ordering::Relaxed);
        for seg in self.open[..self.opened].iter().rev() {
            // SYNC: ring-commit (release: the segment's words and the zero after it are
            // visible to an acquiring reader of this word).
            self.shared.commit(seg.at).store(seg.words, Ordering::Release);
        }
        self.opened = 0;
    }

    /// End of round: publishes what was written and wakes the consumer if it sleeps.
    /// Returns whether anything was published.
    #[inline]
    pub fn flush(&mut self) -> bool {
        if self.opened == 0 {
            return false;
        }
        self.commit_open();
        self.consumer.wake();
        true
    }

    /// Wakes the consumer if it sleeps (for news other than signals: see
    /// [`crate::congestion`]).
    #[inline]
    pub fn wake_consumer(&self) {
        self.consumer.wake();
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
    /// Words consumed (released or not), commit words and padding included.
    head: u64,
    /// Where the committed segment being read ends (`head` when none is).
    segment_end: u64,
    /// Words released to the producer.
    released: u64,
    limits: Limits,
    producer: Arc<Parker>,
}

impl RingReader {
    /// Whether a signal is waiting.
    #[inline]
    pub fn has_signal(&self) -> bool {
        if self.head != self.segment_end {
            return true;
        }
        let pos = (self.head & (self.capacity - 1)) as usize;
        // SYNC: ring-commit (acquire).
        match self.shared.commit(pos).load(Ordering::Acquire) {
            0 => false,
            PAD => self.shared.commit(0).load(Ordering::Acquire) != 0,
            _ => true,
        }
    }

    /// Steps over padding and commit words; returns whether a signal is committed at `head`.
    #[inline]
    fn ready(&mut self) -> bool {
        loop {
            if self.head != self.segment_end {
                return true;
            }
            let pos = (self.head & (self.capacity - 1)) as usize;
            // SYNC: ring-commit (acquire: the segment's words are written).
            match self.shared.commit(pos).load(Ordering::Acquire) {
                0 => return false,
                PAD => {
                    self.head += self.capacity - pos as u64;
                    self.segment_end = self.head;
                }
                words => {
                    debug_assert!(
                        pos + 1 + words as usize <= self.capacity as usize,
                        "pos {pos} words {words:#x} head {}",
                        self.head
                    );
                    self.head += 1;
                    self.segment_end = self.head + u64::from(words);
                    return true;
                }
            }
        }
    }

    /// The next signal, borrowed in place; call [`RingReader::advance`] with its length after
    /// running it.
    #[inline]
    pub fn peek(&mut self) -> Option<SignalView<'_>> {
        if !self.ready() {
            return None;
        }
        let pos = (self.head & (self.capacity - 1)) as usize;
        let avail = (self.segment_end - self.head) as usize;
        // SAFETY: `head..segment_end` is committed, within the ring (a segment never wraps),
        // and not released until `advance` + `release`, which need `&mut self` (the view
        // borrows `self`, so it is gone by then).
        let words = unsafe { self.shared.slice(pos, avail) };
        // Packed by a BatchWriter in this process, or copied from a batch the transporter
        // walked and checked: read, not checked again.
        Some(SignalView::trusted(words, self.limits))
    }

    /// Steps past the signal last peeked (`words` long).
    #[inline]
    pub fn advance(&mut self, words: usize) {
        self.head += words as u64;
        debug_assert!(self.head <= self.segment_end);
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
        assert_eq!(pushed, 9, "the 128-word ring holds nine 14-word signals and a commit word");
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
    fn a_lane_with_reserve_takes_a_largest_signal_at_every_offset() {
        // Capacity 128 for signals of up to 40 words: a largest signal that wraps needs up to
        // 81 words, more than half the ring.
        let limits = Limits::new(6, 40).unwrap();
        let parkers = (Arc::new(Parker::new().unwrap()), Arc::new(Parker::new().unwrap()));
        let (mut w, mut rd) = ring(64, limits, parkers.0, parkers.1);
        assert_eq!(w.capacity, 128);
        // The longest signal of data words and three 6-word sections within 40 words.
        let (data, section) = ([9u32; signals::MAX_DATA_WORDS], [3u32; 6]);
        let sections: [&[u32]; 3] = [&section, &section, &section];
        let words = |d: usize| {
            let signal =
                Signal::new(gsn::PING_REQ, r(1), r(2)).data(&data[..d]).sections(&sections);
            signal.wire_words(WriteOptions::default())
        };
        let d = (0..=data.len()).rev().find(|&d| words(d) <= 40).unwrap();
        let largest = Signal::new(gsn::PING_REQ, r(1), r(2)).data(&data[..d]).sections(&sections);
        assert!(largest.wire_words(WriteOptions::default()) >= 36);
        let small = Signal::new(gsn::PING_REQ, r(1), r(2)).data(&[1]);
        let mut taken = 0;
        for step in 0..3000usize {
            // Move the tail round the ring, then leave some signals unread.
            for _ in 0..step % 7 {
                w.push(&small).unwrap();
            }
            w.flush();
            drain(&mut rd);
            for _ in 0..step % 13 {
                if w.push(&small).is_err() {
                    break;
                }
            }
            w.flush();
            if w.has_reserve() {
                w.push(&largest).unwrap_or_else(|e| panic!("step {step}: reserve but {e}"));
                w.flush();
                taken += 1;
            }
            drain(&mut rd);
        }
        assert!(taken > 1000, "{taken}");
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
    fn a_signal_that_does_not_pack_leaves_no_trace() {
        let (mut w, mut rd) = ends(64);
        let long = [5u32; 41];
        let sections: [&[u32]; 1] = [&long];
        for round in 0..40u32 {
            w.push(&Signal::new(gsn::PING_REQ, r(1), r(2)).data(&[round; 7])).unwrap();
            // A section over the limit is refused after its place in the ring was found.
            let bad = Signal::new(gsn::PING_REQ, r(1), r(2)).data(&[1]).sections(&sections);
            assert!(w.push(&bad).is_err());
            w.push(&Signal::new(gsn::PING_REQ, r(1), r(2)).data(&[round + 100; 3])).unwrap();
            w.flush();
            assert_eq!(drain(&mut rd), vec![round, round + 100]);
        }
    }

    #[test]
    fn two_threads_keep_fifo_through_laps_and_partial_reads() {
        let (mut w, mut rd) = ends(256);
        let total = 200_000u32;
        let producer = std::thread::spawn(move || {
            let mut next = 0u32;
            let mut batch = 1u32;
            while next < total {
                for _ in 0..batch.min(total - next) {
                    let len = 1 + (next % 11) as usize;
                    let data = vec![next; len];
                    let sig = Signal::new(gsn::PING_REQ, r(1), r(2)).data(&data);
                    while w.push(&sig).is_err() {
                        w.flush();
                        std::thread::yield_now();
                    }
                    next += 1;
                }
                w.flush();
                batch = batch % 17 + 1;
            }
        });
        let mut expected = 0u32;
        let mut polls = 0u64;
        while expected < total {
            // Take at most a few signals per round, so the reader often stops inside a segment.
            let mut n = 0;
            while n < 1 + polls % 5 {
                let Some((first, len, size)) =
                    rd.peek().map(|v| (v.data()[0], v.data().len(), v.wire_words().len()))
                else {
                    break;
                };
                assert_eq!(first, expected, "signal out of order");
                assert_eq!(len, 1 + (expected % 11) as usize);
                rd.advance(size);
                expected += 1;
                n += 1;
            }
            rd.release();
            polls += 1;
        }
        producer.join().unwrap();
        assert!(!rd.has_signal());
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
    //! The ring's commit protocol under loom: one producer pushes signals of varying size
    //! through a ring small enough to wrap and fill, the consumer checks FIFO order and
    //! contents. Loom explores the interleavings of the commit words and `head` (committing,
    //! the zero after a segment, padding at the wrap, back-pressure): the commit words are
    //! modelled atomics. The signals' own words are raw memory that loom does not track, so the
    //! release/acquire pairing of the data is the plain SYNC pattern documented above.
    use loom::thread;

    use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId};

    use super::*;

    #[test]
    fn loom_ring_fifo_through_wrap_and_back_pressure() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let limits = Limits::new(29, 63).unwrap();
            let p = Arc::new(Parker::new().unwrap());
            let c = Arc::new(Parker::new().unwrap());
            // 2 * 63 + 2 words: four segments of 27..=29 words fill it, and it wraps.
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
