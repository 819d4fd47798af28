//! The two halves of a shared-memory link: a single-producer ring each way.
//!
//! The ring holds records: a 32-bit record word (the length of the whole signals that follow, or
//! [`PAD_FLAG`] and the length of a lap's padding), then the signals. The word at the producer's
//! position is always zero, so a zero word means "nothing yet": before committing a record the
//! producer zeroes the word just past it. This is the commit-by-length scheme of Aeron's ring
//! buffers, with the clearing moved to the producer: the consumer finds new data by reading the
//! data's own cache line (no producer index to load first) and never writes that line, so a hop
//! costs one cache miss, and the consumer's reply is not queued behind an invalidation of the
//! line it just read.
//!
//! Producer ([`ShmSender`]): copies whole signals from the queued pages into free space, never
//! splitting a signal at the end of a lap (a pad record fills it), zeroes the word after the
//! record, then commits the record with one release store of its word; it keeps one word of the
//! ring free for that zero. After a batch it fences and wakes the consumer only if it is marked
//! sleeping. It reads the consumer's position only when short of space.
//!
//! Consumer ([`ShmReceiver`]): reads the record word at its position, validates it, copies the
//! record out and walks its signals, handing each up, and publishes its own position once per
//! poll. Every word the peer wrote is untrusted: a record that is not whole words, shorter than a
//! signal, past the end of a lap, or cut inside a signal, or a malformed signal, closes the link;
//! one poll walks at most one ring's worth, so a hostile peer cannot make the consumer read
//! outside the ring or loop forever.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use signals::{Limits, SignalView};

use super::layout::Segment;
use super::wake;
use crate::counters::LinkCounters;
use crate::pages::{feed, Page, PagePool, PageQueue, UnsentPage};
use crate::poller::EventFd;
use crate::sync::{Ordering, SharedWord};
use crate::{LinkError, LinkReceiver, LinkSender, PollProgress, SendProgress};

/// Bytes of the word in front of every record: its length, or [`PAD_FLAG`] and the length of
/// the lap's padding. A zero word means nothing is committed there yet.
pub const RECORD_WORD_BYTES: usize = 4;
/// Set in a record word that pads the rest of a lap (a signal never wraps).
pub const PAD_FLAG: u32 = 1 << 31;

/// The producing half: writes ring `ring` of `segment`.
#[derive(Debug)]
pub struct ShmSender {
    segment: Arc<Segment>,
    ring: usize,
    /// Start of this ring's data in `segment`'s mapping.
    data: *mut u8,
    /// Bytes of the ring (a power of two).
    size: u64,
    /// Bytes ever published (this side's copy is the truth; the shared word is its publication).
    position: u64,
    /// The consumer position last read (space before it is known free).
    consumer_seen: u64,
    counters: Arc<LinkCounters>,
    pending: UnsentPage,
    peer_wake: EventFd,
    /// Why the consumer's position last read was refused: the next send fails the link.
    corrupt: Option<String>,
}

// SAFETY: `data` points into the mapping that `segment` (Send and Sync) keeps alive, and only
// this sender writes through it.
unsafe impl Send for ShmSender {}

impl ShmSender {
    pub(crate) fn new(
        segment: Arc<Segment>,
        ring: usize,
        pool: Arc<PagePool>,
        counters: Arc<LinkCounters>,
        peer_wake: EventFd,
    ) -> ShmSender {
        let data = segment.data(ring);
        let size = segment.ring_bytes() as u64;
        ShmSender {
            segment,
            ring,
            data,
            size,
            position: 0,
            consumer_seen: 0,
            pending: UnsentPage::new(pool, counters.clone()),
            counters,
            peer_wake,
            corrupt: None,
        }
    }

    /// Counts what one send wrote and wakes the consumer if it sleeps (the records are
    /// already committed).
    fn published(&mut self, progress: &SendProgress, padding: u64) {
        if progress.bytes > 0 || padding > 0 {
            LinkCounters::add_owned(&self.counters.batches_sent, 1);
            // Ring bytes used, wrap padding included, so both ends count the same bytes.
            LinkCounters::add_owned(&self.counters.bytes_sent, progress.bytes as u64 + padding);
            LinkCounters::add_owned(&self.counters.signals_sent, progress.signals as u64);
            if wake::should_wake(self.segment.sleeping(self.ring)) {
                self.peer_wake.notify();
                LinkCounters::add(&self.counters.wakeups_sent, 1);
            }
        }
    }

    /// Copies whole signals of `page` into the ring as records; returns (bytes copied, ring
    /// full). Ring space taken by record words and lap padding is added to `padding`. The
    /// consumer's position is read (once) only when the space known free is short.
    fn copy_page(&mut self, page: &mut Page, padding: &mut u64) -> (usize, bool) {
        let size = self.size;
        let mut copied = 0;
        let mut refreshed = false;
        loop {
            let bytes = page.unsent();
            if bytes.is_empty() {
                return (copied, false);
            }
            // The ring size is a power of two (checked at set-up): a mask, not a division.
            let offset = (self.position & (size - 1)) as usize;
            let lap_rest = size - offset as u64;
            // `consumer_seen <= position <= consumer_seen + size` (checked when read).
            let free = self.consumer_seen + size - self.position;
            // A record also needs the word after it free, for the zero that marks the next
            // position empty.
            let usable = free.saturating_sub(RECORD_WORD_BYTES as u64);
            let room = (lap_rest.min(usable) as usize).saturating_sub(RECORD_WORD_BYTES);
            let take = if bytes.len() <= room {
                // The common case: the rest of the page is one record.
                bytes.len()
            } else {
                if !refreshed {
                    // The space seen free may be stale: read the consumer before splitting.
                    refreshed = true;
                    let seen = self.consumer_seen;
                    self.refresh_consumer();
                    if self.consumer_seen != seen {
                        continue;
                    }
                }
                let (take, first) = page.unsent_within(room);
                if take == 0 {
                    let first = (first + RECORD_WORD_BYTES) as u64;
                    // Pad out a lap too short for the next signal as soon as the lap's rest is
                    // free; the signal then waits for space at the lap's start (waiting for both
                    // at once could never succeed in a ring of twice the largest signal).
                    if lap_rest < first && usable >= lap_rest {
                        self.commit(offset, lap_rest as usize, PAD_FLAG | (lap_rest as u32 - 4));
                        *padding += lap_rest;
                        continue;
                    }
                    return (copied, true);
                }
                take
            };
            // SAFETY: `take <= room <= lap_rest - RECORD_WORD_BYTES`, so the record's body lies in
            // this lap of this ring, in free space (between the consumer's position and ours),
            // which only this producer writes until it commits.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.data.add(offset + RECORD_WORD_BYTES),
                    take,
                );
            }
            self.commit(offset, RECORD_WORD_BYTES + take, take as u32);
            *padding += RECORD_WORD_BYTES as u64;
            page.sent_bytes += take;
            copied += take;
        }
    }

    /// Reads the consumer's position. One that is ahead of ours, more than a ring behind, or
    /// behind the one seen before is not used: it is kept in `corrupt`, for the next send to
    /// fail the link with (nothing of the current send is then half done).
    fn refresh_consumer(&mut self) {
        // SYNC: consumer-release. Acquire: the consumer is done with the space it released.
        let consumer = SharedWord::load(self.segment.consumer(self.ring), Ordering::Acquire);
        if consumer > self.position || self.position - consumer > self.size {
            self.corrupt = Some(format!(
                "peer's consumer position {consumer} is outside [{} .. {}]",
                self.position.saturating_sub(self.size),
                self.position
            ));
        } else if consumer < self.consumer_seen {
            self.corrupt = Some(format!(
                "peer's consumer position went back from {} to {consumer}",
                self.consumer_seen
            ));
        } else {
            self.consumer_seen = consumer;
        }
    }

    /// The record word at `offset` of this ring.
    fn word(&self, offset: usize) -> &AtomicU32 {
        let offset = offset & (self.size as usize - 1) & !3;
        // SAFETY: `offset` is masked into the ring and 4-aligned; the ring lies in the mapping
        // that `segment` keeps alive; record words are only accessed atomically.
        unsafe { &*(self.data.add(offset) as *const AtomicU32) }
    }

    /// Commits the `len`-byte record at `offset` (its body already written) with `word`, after
    /// zeroing the word past it, and moves past it.
    fn commit(&mut self, offset: usize, len: usize, word: u32) {
        // The next position's word: free space (the caller kept one word for it), which the
        // consumer reads only after the commit below.
        self.word(offset + len).store(0, Ordering::Relaxed);
        // SYNC: record-commit. Release: the signals and the zero past them are visible before
        // the word that says they are there.
        self.word(offset).store(word, Ordering::Release);
        self.position += len as u64;
    }
}

impl LinkSender for ShmSender {
    fn send(&mut self, queue: &mut PageQueue) -> Result<SendProgress, LinkError> {
        if let Some(reason) = self.corrupt.take() {
            return Err(LinkError::Corrupt(reason));
        }
        let mut padding = 0;
        // The kept page is out of its slot only while `copy_page` (which cannot fail) runs.
        let mut kept = self.pending.take();
        let (bytes, signals, blocked) =
            feed(&mut kept, queue, |page| self.copy_page(page, &mut padding));
        *self.pending = kept;
        let progress = SendProgress { bytes, signals, blocked };
        self.published(&progress, padding);
        Ok(progress)
    }

    fn send_page(&mut self, page: &mut Page) -> Option<Result<SendProgress, LinkError>> {
        debug_assert!(self.pending.is_none(), "send_page with a page pending");
        if let Some(reason) = self.corrupt.take() {
            return Some(Err(LinkError::Corrupt(reason)));
        }
        let mut padding = 0;
        let (bytes, blocked) = self.copy_page(page, &mut padding);
        let signals = if page.unsent().is_empty() { page.signals } else { 0 };
        let progress = SendProgress { bytes, signals, blocked };
        self.published(&progress, padding);
        Some(Ok(progress))
    }

    fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn discard_pending(&mut self) -> usize {
        self.pending.discard()
    }
}

/// The consuming half: reads ring `ring` of `segment`.
#[derive(Debug)]
pub struct ShmReceiver {
    segment: Arc<Segment>,
    ring: usize,
    /// Bytes ever consumed.
    position: u64,
    limits: Limits,
    counters: Arc<LinkCounters>,
    wake: EventFd,
    /// The handshake socket, kept open for the link's life: its hang-up is the peer's death.
    socket: TcpStream,
    armed: bool,
    /// Where a record is copied before it is walked (a whole ring's worth, allocated at set-up).
    scratch: Box<[u32]>,
}

impl ShmReceiver {
    pub(crate) fn new(
        segment: Arc<Segment>,
        ring: usize,
        limits: Limits,
        counters: Arc<LinkCounters>,
        wake: EventFd,
        socket: TcpStream,
    ) -> io::Result<ShmReceiver> {
        socket.set_nonblocking(true)?;
        let segment_ring_words = segment.ring_bytes() / 4;
        Ok(ShmReceiver {
            segment,
            ring,
            position: 0,
            limits,
            counters,
            wake,
            socket,
            armed: false,
            scratch: vec![0u32; segment_ring_words].into_boxed_slice(),
        })
    }

    /// Walks the committed records from `self.position`, handing signals up; stops at a zero
    /// word, or after one ring's worth (so a peer that keeps
    /// writing cannot hold the receiver here).
    fn walk(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<usize, LinkError> {
        let size = self.segment.ring_bytes() as u64;
        let start = self.position;
        let mut signals = 0;
        while self.position - start < size {
            let offset = (self.position & (size - 1)) as usize;
            let lap_rest = size - offset as u64;
            // SYNC: record-commit. Acquire: the record's signals are visible once its word is.
            let word = self.segment.ring_word(self.ring, offset).load(Ordering::Acquire);
            if word == 0 {
                break;
            }
            if word & PAD_FLAG != 0 {
                let len = u64::from(word & !PAD_FLAG);
                if len + RECORD_WORD_BYTES as u64 != lap_rest {
                    return Err(LinkError::Corrupt(format!(
                        "pad record at ring position {} says {len} bytes, but {} remain in the lap",
                        self.position,
                        lap_rest - RECORD_WORD_BYTES as u64
                    )));
                }
                self.position += lap_rest;
                continue;
            }
            let len = word as usize;
            if len % 4 != 0
                || len < signals::HEADER_BYTES
                || (RECORD_WORD_BYTES + len) as u64 > lap_rest
            {
                return Err(LinkError::Corrupt(format!(
                    "record at ring position {} says {len} bytes: not whole words, shorter than a signal, or past the end of the ring ({} bytes left in the lap)",
                    self.position,
                    lap_rest - RECORD_WORD_BYTES as u64
                )));
            }
            // Copy the record out before looking inside: the peer can write the mapping at any
            // time, and what the walker validated must be what the blocks later read.
            let copy = &mut self.scratch[..len / 4];
            // SAFETY: the record lies in this ring (checked above); `copy` is our own buffer of
            // `len` bytes (the scratch buffer holds a whole ring); u32 and u8 copies of a
            // 4-aligned span are equivalent. A racing peer can only change the values copied.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.segment.data(self.ring).add(offset + RECORD_WORD_BYTES),
                    copy.as_mut_ptr().cast::<u8>(),
                    len,
                )
            };
            let body: &[u8] = bytemuck::cast_slice(copy);
            let at = self.position;
            let place = || format!("record at ring position {at}");
            signals += crate::deliver_batch(body, self.limits, &place, deliver)?;
            self.position += (RECORD_WORD_BYTES + len) as u64;
        }
        Ok(signals)
    }

    /// Whether a record is committed at our position.
    fn has_record(&self) -> bool {
        let offset = (self.position & (self.segment.ring_bytes() as u64 - 1)) as usize;
        // SYNC: record-commit (acquire side).
        self.segment.ring_word(self.ring, offset).load(Ordering::Acquire) != 0
    }
}

impl LinkReceiver for ShmReceiver {
    fn poll(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<PollProgress, LinkError> {
        if self.armed {
            wake::woke(self.segment.sleeping(self.ring));
            self.armed = false;
        }
        let start = self.position;
        let signals = self.walk(deliver)?;
        if self.position == start {
            return Ok(PollProgress::default());
        }
        // SYNC: consumer-release. Release: we are done reading the walked space.
        SharedWord::store(self.segment.consumer(self.ring), self.position, Ordering::Release);
        let bytes = (self.position - start) as usize;
        LinkCounters::add_owned(&self.counters.batches_received, 1);
        LinkCounters::add_owned(&self.counters.bytes_received, bytes as u64);
        LinkCounters::add_owned(&self.counters.signals_received, signals as u64);
        Ok(PollProgress { bytes, signals })
    }

    fn raw_fd(&self) -> RawFd {
        self.wake.raw_fd()
    }

    fn death_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }

    fn needs_polling(&self) -> bool {
        true
    }

    fn check_alive(&mut self) -> Result<(), LinkError> {
        self.wake.drain();
        crate::peer_alive(&self.socket)
    }

    fn arm(&mut self) -> Result<bool, LinkError> {
        let may_sleep = wake::prepare_sleep(self.segment.sleeping(self.ring), || self.has_record());
        self.armed = may_sleep;
        Ok(may_sleep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    use signals::{gsn, BatchWriter, BlockInstance, BlockNumber, BlockRef, NodeId, Signal};

    /// Both halves of ring 0 of one segment, in this thread.
    struct Pair {
        tx: ShmSender,
        rx: ShmReceiver,
        pool: Arc<PagePool>,
        queue: PageQueue,
        counters: Arc<LinkCounters>,
        next: u32,
        _socket: TcpStream,
    }

    fn pair(ring_bytes: usize) -> Pair {
        let (segment, _file) = Segment::create("blockwire-test-ring", ring_bytes, 1, 1, 2).unwrap();
        let segment = Arc::new(segment);
        let pool = Arc::new(PagePool::new(64, 2048));
        let counters = Arc::new(LinkCounters::default());
        let wake = EventFd::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (far, _) = listener.accept().unwrap();
        let tx = ShmSender::new(
            segment.clone(),
            0,
            pool.clone(),
            counters.clone(),
            EventFd::new().unwrap(),
        );
        let rx =
            ShmReceiver::new(segment, 0, Limits::default(), counters.clone(), wake, near).unwrap();
        Pair { tx, rx, pool, queue: PageQueue::with_capacity(64), counters, next: 0, _socket: far }
    }

    impl Pair {
        /// Sends `n` signals of 4 data words as one batch (data word 0 numbers them); while the
        /// ring is full, receives (checking the numbering from `expect`). Returns how often
        /// the ring was full.
        fn send(&mut self, n: usize, expect: &mut u32) -> usize {
            let at = |b| BlockRef::new(NodeId::new(b).unwrap(), BlockNumber(200), BlockInstance(0));
            let mut page = self.pool.take().unwrap();
            let mut writer =
                BatchWriter::resume(page.words_mut(), 0, Limits::default(), Default::default());
            for _ in 0..n {
                let data = [self.next, 1, 2, 3];
                writer.push(&Signal::new(gsn::PING_REQ, at(1), at(2)).data(&data)).unwrap();
                self.next += 1;
            }
            page.len_words = writer.len_bytes() / 4;
            page.signals = n;
            self.queue.push(page);
            let mut full = 0;
            while !self.queue.is_empty() || self.tx.has_pending() {
                if self.tx.send(&mut self.queue).unwrap().blocked {
                    full += 1;
                    self.receive(expect);
                }
            }
            while let Some(page) = self.queue.take_done() {
                self.pool.give(page);
            }
            full
        }

        /// Receives everything committed; checks the numbering continues from `expect`.
        fn receive(&mut self, expect: &mut u32) -> usize {
            let mut got = 0;
            loop {
                let progress = self
                    .rx
                    .poll(&mut |s| {
                        assert_eq!(s.data()[0], *expect, "signals arrive whole and in order");
                        *expect += 1;
                    })
                    .unwrap();
                if progress.signals == 0 {
                    return got;
                }
                got += progress.signals;
            }
        }
    }

    #[test]
    fn single_signals_and_a_stream_that_fills_the_ring_arrive_whole_and_in_order() {
        let ring = 16 << 10;
        let mut p = pair(ring);
        let mut expect = 0;
        // Ping-pong: one signal, received before the next (each page one record).
        for _ in 0..5_000 {
            assert_eq!(p.send(1, &mut expect), 0);
            assert_eq!(p.receive(&mut expect), 1);
        }
        assert!(p.tx.position > 8 * ring as u64, "the ring wrapped again and again");
        // A stream that keeps the consumer behind: pages split where the space known free ends,
        // the consumer is read again, laps are padded out.
        let mut full = 0;
        for round in 0..500 {
            full += p.send(64, &mut expect);
            if round % 16 == 15 {
                p.receive(&mut expect);
            }
        }
        p.receive(&mut expect);
        assert!(full > 10, "the ring was full {full} times");
        assert_eq!(expect, p.next, "every signal arrived");
        let c = p.counters.snapshot();
        assert_eq!(c.signals_sent, u64::from(p.next));
        assert_eq!(c.signals_received, u64::from(p.next));
        assert_eq!(c.bytes_sent, c.bytes_received);
    }
}
