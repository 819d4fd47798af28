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
use std::sync::Arc;

use signals::{Limits, SignalView};

use super::layout::Segment;
use super::wake;
use crate::counters::LinkCounters;
use crate::pages::{Page, PagePool, PageQueue};
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
    /// Bytes ever published (this side's copy is the truth; the shared word is its publication).
    position: u64,
    /// The consumer position last read (space before it is known free).
    consumer_seen: u64,
    pool: Arc<PagePool>,
    counters: Arc<LinkCounters>,
    pending: Option<Page>,
    peer_wake: EventFd,
}

impl ShmSender {
    pub(crate) fn new(
        segment: Arc<Segment>,
        ring: usize,
        pool: Arc<PagePool>,
        counters: Arc<LinkCounters>,
        peer_wake: EventFd,
    ) -> ShmSender {
        ShmSender {
            segment,
            ring,
            position: 0,
            consumer_seen: 0,
            pool,
            counters,
            pending: None,
            peer_wake,
        }
    }

    /// Copies whole signals of `page` into the ring as records; returns (bytes copied, ring
    /// full). Ring space taken by record words and lap padding is added to `padding`.
    fn copy_page(&mut self, page: &mut Page, free: &mut u64, padding: &mut u64) -> (usize, bool) {
        let size = self.segment.ring_bytes() as u64;
        let mut copied = 0;
        loop {
            let bytes = page.unsent();
            if bytes.is_empty() {
                return (copied, false);
            }
            // The ring size is a power of two (checked at set-up): a mask, not a division.
            let offset = (self.position & (size - 1)) as usize;
            let lap_rest = size - offset as u64;
            // A record also needs the word after it free, for the zero that marks the next
            // position empty.
            let usable = free.saturating_sub(RECORD_WORD_BYTES as u64);
            let room = lap_rest.min(usable) as usize;
            let (take, first) = page.unsent_within(room.saturating_sub(RECORD_WORD_BYTES));
            if take == 0 {
                let first = (first + RECORD_WORD_BYTES) as u64;
                // Pad out a lap too short for the next signal as soon as the lap's rest is free;
                // the signal then waits for space at the lap's start (waiting for both at once
                // could never succeed in a ring of twice the largest signal).
                if lap_rest < first && usable >= lap_rest {
                    self.commit(offset, lap_rest as usize, PAD_FLAG | (lap_rest as u32 - 4));
                    *free -= lap_rest;
                    *padding += lap_rest;
                    continue;
                }
                return (copied, true);
            }
            self.write(offset + RECORD_WORD_BYTES, &bytes[..take]);
            let record = RECORD_WORD_BYTES + take;
            self.commit(offset, record, take as u32);
            *free -= record as u64;
            *padding += RECORD_WORD_BYTES as u64;
            page.sent_bytes += take;
            copied += take;
        }
    }

    /// Commits the `len`-byte record at `offset` (its body already written) with `word`, after
    /// zeroing the word past it, and moves past it.
    fn commit(&mut self, offset: usize, len: usize, word: u32) {
        let size = self.segment.ring_bytes();
        // The next position's word: free space (the caller kept one word for it), which the
        // consumer reads only after the commit below.
        self.segment.ring_word(self.ring, (offset + len) & (size - 1)).store(0, Ordering::Relaxed);
        // SYNC: record-commit. Release: the signals and the zero past them are visible before
        // the word that says they are there.
        self.segment.ring_word(self.ring, offset).store(word, Ordering::Release);
        self.position += len as u64;
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.segment.ring_bytes());
        // SAFETY: `offset..offset + len` lies in this ring and in its free space (between the
        // consumer's position and ours), which only this producer writes until it publishes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.segment.data(self.ring).add(offset),
                bytes.len(),
            );
        }
    }
}

impl LinkSender for ShmSender {
    fn send(&mut self, queue: &mut PageQueue) -> Result<SendProgress, LinkError> {
        let size = self.segment.ring_bytes() as u64;
        let wanted =
            self.pending.as_ref().or_else(|| queue.front()).map_or(0, |p| p.unsent().len() as u64);
        // Read the consumer's line only when the space known free is not enough for the next
        // page: a ping-pong then pays no cache miss on that line per send.
        let mut consumer = self.consumer_seen;
        if size - self.position.wrapping_sub(consumer).min(size) < wanted.min(size) {
            // SYNC: consumer-release. Acquire: the consumer is done with the space it released.
            consumer = SharedWord::load(self.segment.consumer(self.ring), Ordering::Acquire);
        }
        let used = self.position.wrapping_sub(consumer);
        if used > size {
            return Err(LinkError::Corrupt(format!(
                "peer's consumer position {consumer} is outside [{} .. {}]",
                self.position.saturating_sub(size),
                self.position
            )));
        }
        if consumer < self.consumer_seen {
            return Err(LinkError::Corrupt(format!(
                "peer's consumer position went back from {} to {consumer}",
                self.consumer_seen
            )));
        }
        self.consumer_seen = consumer;
        let mut free = size - used;
        let mut progress = SendProgress::default();
        let mut padding = 0;
        while let Some(mut page) = self.pending.take().or_else(|| queue.pop()) {
            let (copied, full) = self.copy_page(&mut page, &mut free, &mut padding);
            progress.bytes += copied;
            if page.unsent().is_empty() {
                progress.signals += page.signals;
                queue.finish(page);
            } else {
                self.pending = Some(page);
            }
            if full {
                // The space seen free was stale: read the consumer once more before giving up.
                let latest = SharedWord::load(self.segment.consumer(self.ring), Ordering::Acquire);
                if latest != self.consumer_seen
                    && self.position.wrapping_sub(latest) <= size
                    && latest > self.consumer_seen
                {
                    free += latest - self.consumer_seen;
                    self.consumer_seen = latest;
                    continue;
                }
                progress.blocked = true;
                break;
            }
        }
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
        Ok(progress)
    }

    fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn discard_pending(&mut self) -> usize {
        self.pool.drop_pending(&mut self.pending)
    }
}

impl Drop for ShmSender {
    fn drop(&mut self) {
        let dropped = self.discard_pending();
        LinkCounters::add(&self.counters.signals_dropped, dropped as u64);
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
            let bytes: &[u8] = bytemuck::cast_slice(copy);
            let at = self.position;
            let place = || format!("record at ring position {at}");
            signals += crate::deliver_batch(bytes, self.limits, &place, deliver)?;
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
