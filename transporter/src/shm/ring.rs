//! The two halves of a shared-memory link: a single-producer ring each way.
//!
//! The ring holds records: a 32-bit record word (the length of the body that follows, or
//! [`PAD_FLAG`] and the length of a lap's padding, and in [`LAP_FLAG`] the parity of the lap the
//! record is in), then the body: the producer's acknowledgement (a u64, how far it has consumed
//! the ring of the other direction) and whole signals. The word at the producer's position is
//! always zero, so a zero word means "nothing yet": before committing a record the producer
//! zeroes the word just past it. This is the commit-by-length scheme of Aeron's ring buffers,
//! with the clearing moved to the producer: the consumer finds new data by reading the data's own
//! cache line (no producer index to load first) and never writes that line, so a hop costs one
//! cache miss, and the consumer's reply is not queued behind an invalidation of the line it just
//! read.
//!
//! **Early laps.** A producer that knows its ring is empty (the consumer's acknowledgement,
//! carried in the records coming back, equals its own position) starts its next record at the
//! start of the next lap instead of where it is, if the record fits before the consumer's
//! position there (the zero word after it may be the word the consumer waits on: ours, and zero).
//! A ping-pong of equal records then stays on the first line of the ring, a line both sides
//! hold, instead of moving to a fresh line each hop (which costs about half a cache-line round
//! trip more here). The consumer, finding a zero word mid-lap, also looks at the next lap's
//! first word: a record there whose lap parity is the next lap's means the producer left the
//! lap where the consumer stands (no record can follow in it, since the producer only leaves a
//! lap early when the consumer is at its position). Positions wrap around u64 (a jump adds up to
//! a ring per record); all position arithmetic is modulo 2^64.
//!
//! Producer ([`ShmSender`]): copies whole signals from the queued pages into free space, never
//! splitting a signal at the end of a lap (a pad record fills it), zeroes the word after the
//! record, then commits the record with one release store of its word; it keeps one word of the
//! ring free for that zero. After a batch it fences and wakes the consumer only if it is marked
//! sleeping. It reads the consumer's position only when short of space and the acknowledgements
//! have not told it more.
//!
//! Consumer ([`ShmReceiver`]): reads the record word at its position (or the next lap's first),
//! validates it, copies the record out and walks its signals, handing each up, and publishes its
//! own position once per poll. Every word the peer wrote is untrusted: a record that is not whole
//! words, shorter than a signal, past the end of a lap, of the wrong lap, or cut inside a signal,
//! or a malformed signal, closes the link; one poll walks at most one ring's worth, so a hostile
//! peer cannot make the consumer read outside the ring or loop forever. An acknowledgement is
//! only ever a hint to the sender: one outside what was sent is ignored, and a false one can only
//! make the peer's own ring overwrite what the peer had not yet read.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use signals::{BatchWriter, Limits, Signal, SignalView, WriteOptions};

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
/// Bytes of the acknowledgement at the start of a data record's body.
pub const ACK_BYTES: usize = 8;
/// Bytes in front of a data record's signals: its record word and the acknowledgement.
pub const HEAD_BYTES: usize = RECORD_WORD_BYTES + ACK_BYTES;
/// Set in a record word that pads the rest of a lap (a signal never wraps).
pub const PAD_FLAG: u32 = 1 << 31;
/// In a record word: the parity of the lap the record is in (rings are at most 2^30 bytes, so
/// lengths never reach this bit).
pub const LAP_FLAG: u32 = 1 << 30;
/// The length bits of a record word.
const LENGTH_MASK: u32 = LAP_FLAG - 1;

/// [`LAP_FLAG`] for a record at `position` of a ring of `size` bytes.
#[inline]
fn lap_flag(position: u64, size: u64) -> u32 {
    if position & size != 0 {
        LAP_FLAG
    } else {
        0
    }
}

/// Room for a data record that does not fit whole where the producer stands: the record's
/// offset, the bytes left in its lap, the bytes of the ring free for records, and the bytes of
/// signals a record there can hold.
struct Short {
    offset: usize,
    lap_rest: u64,
    usable: u64,
    room: usize,
}

/// What the two halves of one link tell each other in this process: how far our receiver has
/// consumed the peer's ring (sent to the peer in every record), and how far the peer says it has
/// consumed ours (the acknowledgement in the last record received, a hint for our sender).
#[derive(Debug, Default)]
pub struct Acks {
    consumed: std::sync::atomic::AtomicU64,
    peer_consumed: std::sync::atomic::AtomicU64,
}

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
    acks: Arc<Acks>,
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
        acks: Arc<Acks>,
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
            acks,
        }
    }

    /// Takes the peer's last acknowledgement as the consumer's position when it says more than
    /// the one known (an acknowledgement more than a ring behind, or ahead of what was sent, is
    /// stale or false: ignored).
    fn take_ack(&mut self) {
        // SYNC: ack. Acquire: the peer was done with the space it acknowledged.
        let ack = self.acks.peer_consumed.load(std::sync::atomic::Ordering::Acquire);
        let behind = self.position.wrapping_sub(ack);
        if behind <= self.size && behind < self.position.wrapping_sub(self.consumer_seen) {
            self.consumer_seen = ack;
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

    /// Where a data record with `bytes` bytes of signals goes now, as the position it starts at:
    /// ours, or the next lap's start when the ring is empty and it fits before the consumer's
    /// position there (see "Early laps" above). `Err` when it does not fit whole: what room
    /// there is, for a caller that splits a page or pads out the lap.
    #[inline]
    fn place(&self, bytes: usize) -> Result<u64, Short> {
        let size = self.size;
        // The ring size is a power of two (checked at set-up): a mask, not a division.
        let offset = (self.position & (size - 1)) as usize;
        if offset != 0 && self.consumer_seen == self.position && HEAD_BYTES + bytes <= offset {
            // An empty ring: start the next lap early. The zero word after the record is in
            // space the consumer has left, or is the word at the consumer's position itself: our
            // own position's word, zero (nothing is committed there). So a record as long as the
            // last one lands on the same line as the last one did.
            return Ok(self.position.wrapping_add(size - offset as u64));
        }
        let lap_rest = size - offset as u64;
        // `consumer_seen <= position <= consumer_seen + size` (modulo 2^64; checked when read).
        let free = self.consumer_seen.wrapping_add(size).wrapping_sub(self.position);
        // A record also needs the word after it free, for the zero that marks the next position
        // empty.
        let usable = free.saturating_sub(RECORD_WORD_BYTES as u64);
        let room = (lap_rest.min(usable) as usize).saturating_sub(HEAD_BYTES);
        if bytes <= room {
            Ok(self.position)
        } else {
            Err(Short { offset, lap_rest, usable, room })
        }
    }

    /// Copies whole signals of `page` into the ring as records; returns (bytes copied, ring
    /// full). Ring space taken by record words, acknowledgements and lap padding is added to
    /// `padding`. The consumer's position is read (once) only when the space known free is short.
    fn copy_page(&mut self, page: &mut Page, padding: &mut u64) -> (usize, bool) {
        let mut copied = 0;
        let mut refreshed = false;
        self.take_ack();
        loop {
            let bytes = page.unsent();
            if bytes.is_empty() {
                return (copied, false);
            }
            let (offset, take) = match self.place(bytes.len()) {
                // The common case: the rest of the page is one record.
                Ok(start) => {
                    self.position = start;
                    ((start & (self.size - 1)) as usize, bytes.len())
                }
                Err(Short { offset, lap_rest, usable, room }) => {
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
                        let first = (first + HEAD_BYTES) as u64;
                        // Pad out a lap too short for the next signal as soon as the lap's rest
                        // is free; the signal then waits for space at the lap's start (waiting
                        // for both at once could never succeed in a ring of twice the largest
                        // signal).
                        if lap_rest < first && usable >= lap_rest {
                            let word = PAD_FLAG | (lap_rest as u32 - 4);
                            self.commit(offset, lap_rest as usize, word);
                            *padding += lap_rest;
                            continue;
                        }
                        return (copied, true);
                    }
                    (offset, take)
                }
            };
            let whole = take == bytes.len();
            // SAFETY: `place` (or `unsent_within(room)`) found `HEAD_BYTES + take` bytes at
            // `offset` in one lap of this ring, in free space (between the consumer's position
            // and ours), which only this producer writes until it commits.
            unsafe {
                let signals = self.data.add(offset + HEAD_BYTES);
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), signals, take);
            }
            self.commit_data(offset, take);
            *padding += HEAD_BYTES as u64;
            page.sent_bytes += take;
            copied += take;
            if whole {
                return (copied, false);
            }
        }
    }

    /// Commits the data record at `offset` whose `len` bytes of signals are written: writes our
    /// acknowledgement in front of them, then commits.
    #[inline]
    fn commit_data(&mut self, offset: usize, len: usize) {
        // SYNC: ack (our receiver's release store). What we tell the peer we consumed.
        let ack = self.acks.consumed.load(std::sync::atomic::Ordering::Acquire);
        // SAFETY: the caller placed the record, `HEAD_BYTES + len` bytes at `offset`, in free
        // space of one lap of this ring.
        unsafe {
            let body = self.data.add(offset + RECORD_WORD_BYTES);
            std::ptr::copy_nonoverlapping(ack.to_le_bytes().as_ptr(), body, ACK_BYTES);
        }
        self.commit(offset, HEAD_BYTES + len, (ACK_BYTES + len) as u32);
    }

    /// Reads the consumer's position. One that is ahead of ours or more than a ring behind is
    /// not used: it is kept in `corrupt`, for the next send to fail the link with (nothing of
    /// the current send is then half done). One behind what is known is stale, and ignored.
    fn refresh_consumer(&mut self) {
        // SYNC: consumer-release. Acquire: the consumer is done with the space it released.
        let consumer = SharedWord::load(self.segment.consumer(self.ring), Ordering::Acquire);
        let behind = self.position.wrapping_sub(consumer);
        if behind > self.size {
            self.corrupt = Some(format!(
                "peer's consumer position {consumer} is outside [{} .. {}]",
                self.position.wrapping_sub(self.size),
                self.position
            ));
        } else if behind < self.position.wrapping_sub(self.consumer_seen) {
            // Newer than what we knew. An older one is not an error: the peer publishes its
            // position once per poll, after the acknowledgements its records already carried.
            self.consumer_seen = consumer;
        }
    }

    /// The error a send fails with once the consumer's position was found corrupt.
    #[cold]
    fn failed(&mut self) -> LinkError {
        LinkError::Corrupt(self.corrupt.take().unwrap_or_default())
    }

    /// The record word at `offset` of this ring.
    fn word(&self, offset: usize) -> &AtomicU32 {
        let offset = offset & (self.size as usize - 1) & !3;
        // SAFETY: `offset` is masked into the ring and 4-aligned; the ring lies in the mapping
        // that `segment` keeps alive; record words are only accessed atomically.
        unsafe { &*(self.data.add(offset) as *const AtomicU32) }
    }

    /// Commits the `len`-byte record at `offset` (its body already written) with `word` and
    /// this lap's parity, after zeroing the word past it, and moves past it.
    fn commit(&mut self, offset: usize, len: usize, word: u32) {
        // The next position's word: free space (the caller kept one word for it), which the
        // consumer reads only after the commit below.
        self.word(offset + len).store(0, Ordering::Relaxed);
        let word = word | lap_flag(self.position, self.size);
        // SYNC: record-commit. Release: the signals and the zero past them are visible before
        // the word that says they are there.
        self.word(offset).store(word, Ordering::Release);
        self.position = self.position.wrapping_add(len as u64);
    }
}

impl LinkSender for ShmSender {
    fn send(&mut self, queue: &mut PageQueue) -> Result<SendProgress, LinkError> {
        if self.corrupt.is_some() {
            return Err(self.failed());
        }
        let mut padding = 0;
        // The kept page is out of its slot only while `copy_page` (which cannot fail) runs.
        let mut kept = self.pending.take();
        let (bytes, signals, blocked) =
            feed(&mut kept, queue, |page| self.copy_page(page, &mut padding));
        *self.pending = kept;
        let progress = SendProgress { bytes, signals, blocked, dropped: 0 };
        self.published(&progress, padding);
        Ok(progress)
    }

    fn send_page(&mut self, page: &mut Page) -> Option<Result<SendProgress, LinkError>> {
        if self.pending.is_some() {
            // Part of a page (another sending thread's) comes first: through the queue.
            return None;
        }
        if self.corrupt.is_some() {
            return Some(Err(self.failed()));
        }
        let mut padding = 0;
        let (bytes, blocked) = self.copy_page(page, &mut padding);
        let signals = if page.is_sent() { page.signals } else { 0 };
        let progress = SendProgress { bytes, signals, blocked, dropped: 0 };
        self.published(&progress, padding);
        Some(Ok(progress))
    }

    fn send_signal(
        &mut self,
        signal: &Signal<'_>,
        limits: Limits,
        options: WriteOptions,
    ) -> Option<Result<SendProgress, LinkError>> {
        if self.pending.is_some() {
            return None;
        }
        if self.corrupt.is_some() {
            return Some(Err(self.failed()));
        }
        let bytes = signal.wire_words(options) * 4;
        self.take_ack();
        let (mut padding, mut refreshed) = (0, false);
        let start = loop {
            match self.place(bytes) {
                Ok(start) => break Some(start),
                Err(Short { offset, lap_rest, usable, .. }) => {
                    if lap_rest < (HEAD_BYTES + bytes) as u64 && usable >= lap_rest {
                        // The lap's rest is too short and free: pad it out, as a page would.
                        self.commit(offset, lap_rest as usize, PAD_FLAG | (lap_rest as u32 - 4));
                        padding += lap_rest;
                    } else if !refreshed {
                        // The space seen free may be stale: read the consumer once.
                        refreshed = true;
                        self.refresh_consumer();
                    } else {
                        // No room now: the caller packs the signal and the page waits for room.
                        break None;
                    }
                }
            }
        };
        let Some(start) = start else {
            self.published(&SendProgress::default(), padding);
            return None;
        };
        let offset = (start & (self.size - 1)) as usize;
        // SAFETY: `place` found `HEAD_BYTES + bytes` bytes at `offset` in one lap of this ring,
        // in free space that only this producer writes until it commits; `offset` and the ring's
        // start are 4-aligned, so the signal's words are.
        let words = unsafe {
            std::slice::from_raw_parts_mut(
                self.data.add(offset + HEAD_BYTES).cast::<u32>(),
                bytes / 4,
            )
        };
        // The signal is packed in place. One that breaks the limits leaves nothing committed,
        // and goes back to the caller to pack and refuse (a lap padded out for it is counted).
        if BatchWriter::write_one(words, signal, limits, options).is_err() {
            self.published(&SendProgress::default(), padding);
            return None;
        }
        self.position = start;
        self.commit_data(offset, bytes);
        let progress = SendProgress { bytes, signals: 1, blocked: false, dropped: 0 };
        self.published(&progress, padding + HEAD_BYTES as u64);
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
    /// Start of this ring's data in `segment`'s mapping.
    data: *const u8,
    /// Bytes of the ring (a power of two).
    size: u64,
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
    acks: Arc<Acks>,
}

// SAFETY: `data` points into the mapping that `segment` (Send and Sync) keeps alive, and this
// receiver only reads through it: by `&self` only with atomic loads of record words.
unsafe impl Send for ShmReceiver {}
// SAFETY: as for Send; a shared reference reads nothing but atomics through `data`.
unsafe impl Sync for ShmReceiver {}

/// Where the record after `position` is, and its word (0: nothing yet), given `load`, an acquire
/// load of the record word at a byte offset of the ring: at `position`, or, when nothing is
/// there mid-lap, at the next lap's start if the producer started that lap early (its first word
/// has that lap's parity). At a lap's start, a word of the previous lap is nothing yet.
#[inline(always)]
fn locate(position: u64, size: u64, load: impl Fn(usize) -> u32) -> (u64, u32) {
    let offset = (position & (size - 1)) as usize;
    let word = load(offset);
    if offset == 0 {
        let current = word & LAP_FLAG == lap_flag(position, size);
        return (position, if current { word } else { 0 });
    }
    if word != 0 {
        return (position, word);
    }
    let next = position.wrapping_add(size - offset as u64);
    let first = load(0);
    if first != 0 && first & LAP_FLAG == lap_flag(next, size) {
        // The producer is in the next lap, but it may have committed records here first (after
        // the load above): with the next lap's word acquired, a record committed here before it
        // is visible now. Still zero: the producer left the lap here.
        let word = load(offset);
        if word != 0 {
            return (position, word);
        }
        return (next, first);
    }
    (position, 0)
}

impl ShmReceiver {
    pub(crate) fn new(
        segment: Arc<Segment>,
        ring: usize,
        limits: Limits,
        counters: Arc<LinkCounters>,
        wake: EventFd,
        socket: TcpStream,
        acks: Arc<Acks>,
    ) -> io::Result<ShmReceiver> {
        socket.set_nonblocking(true)?;
        let segment_ring_words = segment.ring_bytes() / 4;
        Ok(ShmReceiver {
            data: segment.data(ring),
            size: segment.ring_bytes() as u64,
            segment,
            ring,
            position: 0,
            limits,
            counters,
            wake,
            socket,
            armed: false,
            scratch: vec![0u32; segment_ring_words].into_boxed_slice(),
            acks,
        })
    }

    /// Where the next record is and its word (0: nothing yet); see [`locate`].
    #[inline(always)]
    fn look(&self) -> (u64, u32) {
        let (data, mask) = (self.data, self.size as usize - 1);
        locate(self.position, self.size, |offset| {
            // SAFETY: the offset is masked into the ring and 4-aligned; the ring lies in the
            // mapping that `segment` keeps alive; record words are only accessed atomically.
            let word = unsafe { &*(data.add(offset & mask & !3) as *const AtomicU32) };
            // SYNC: record-commit. Acquire: the record's signals are visible once its word is.
            word.load(Ordering::Acquire)
        })
    }

    /// Walks the committed records from `self.position` (`first` is where the first is, already
    /// located), handing signals up; stops at a zero word, or after one ring's worth (so a peer
    /// that keeps writing cannot hold the receiver here). Returns (signals, bytes of records and
    /// padding: not the rest of a lap the producer left early).
    fn walk(
        &mut self,
        first: (u64, u32),
        deliver: &mut dyn FnMut(SignalView<'_>),
    ) -> Result<(usize, u64), LinkError> {
        let size = self.size;
        let start = self.position;
        let (mut signals, mut bytes) = (0, 0);
        let mut first = Some(first);
        while self.position.wrapping_sub(start) < size {
            let (at, word) = match first.take() {
                Some(located) => located,
                None => self.look(),
            };
            if word == 0 {
                break;
            }
            self.position = at;
            let offset = (at & (size - 1)) as usize;
            let lap_rest = size - offset as u64;
            if word & LAP_FLAG != lap_flag(at, size) {
                return Err(LinkError::Corrupt(format!(
                    "record at ring position {at} is marked for the wrong lap (word {word:#x})"
                )));
            }
            let word = word & !LAP_FLAG;
            if word & PAD_FLAG != 0 {
                let len = u64::from(word & !PAD_FLAG);
                if len + RECORD_WORD_BYTES as u64 != lap_rest {
                    return Err(LinkError::Corrupt(format!(
                        "pad record at ring position {at} says {len} bytes, but {} remain in the lap",
                        lap_rest - RECORD_WORD_BYTES as u64
                    )));
                }
                self.position = self.position.wrapping_add(lap_rest);
                bytes += lap_rest;
                // SYNC: ack (release side).
                self.acks.consumed.store(self.position, std::sync::atomic::Ordering::Release);
                continue;
            }
            let len = (word & LENGTH_MASK) as usize;
            if len % 4 != 0
                || len < ACK_BYTES + signals::HEADER_BYTES
                || (RECORD_WORD_BYTES + len) as u64 > lap_rest
            {
                return Err(LinkError::Corrupt(format!(
                    "record at ring position {at} says {len} bytes: not whole words, shorter than an acknowledgement and a signal, or past the end of the ring ({} bytes left in the lap)",
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
                    self.data.add(offset + RECORD_WORD_BYTES),
                    copy.as_mut_ptr().cast::<u8>(),
                    len,
                )
            };
            // The record is ours now: its space is consumed (what our sender acknowledges in
            // its next record, before the signals run and answer), and the peer's
            // acknowledgement goes to our sender.
            self.position = self.position.wrapping_add((RECORD_WORD_BYTES + len) as u64);
            bytes += (RECORD_WORD_BYTES + len) as u64;
            let ack = u64::from(copy[0]) | u64::from(copy[1]) << 32;
            // SYNC: ack. Release: the record was copied out before its space is acknowledged.
            self.acks.consumed.store(self.position, std::sync::atomic::Ordering::Release);
            self.acks.peer_consumed.store(ack, std::sync::atomic::Ordering::Release);
            let body: &[u8] = bytemuck::cast_slice(&copy[ACK_BYTES / 4..]);
            let place = || format!("record at ring position {at}");
            signals += crate::deliver_batch(body, self.limits, &place, deliver)?;
        }
        Ok((signals, bytes))
    }

    /// Walks the records from `first` (located, not empty), publishes the position reached and
    /// counts what was received. Out of line, so that a poll of an empty ring stays short.
    #[inline(never)]
    fn consume(
        &mut self,
        first: (u64, u32),
        deliver: &mut dyn FnMut(SignalView<'_>),
    ) -> Result<PollProgress, LinkError> {
        let (signals, bytes) = self.walk(first, deliver)?;
        // SYNC: consumer-release. Release: we are done reading the walked space.
        SharedWord::store(self.segment.consumer(self.ring), self.position, Ordering::Release);
        let bytes = bytes as usize;
        LinkCounters::add_owned(&self.counters.batches_received, 1);
        LinkCounters::add_owned(&self.counters.bytes_received, bytes as u64);
        LinkCounters::add_owned(&self.counters.signals_received, signals as u64);
        Ok(PollProgress { bytes, signals })
    }

    /// Whether a record is committed where the next one goes.
    fn has_record(&self) -> bool {
        self.look().1 != 0
    }
}

impl LinkReceiver for ShmReceiver {
    fn poll(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<PollProgress, LinkError> {
        if self.armed {
            wake::woke(self.segment.sleeping(self.ring));
            self.armed = false;
        }
        // An empty ring costs a look at one line (two words at most) and nothing more.
        let first = self.look();
        if first.1 == 0 {
            return Ok(PollProgress::default());
        }
        self.consume(first, deliver)
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

    /// A sending half and a receiving half of one segment, in this process.
    struct End {
        tx: ShmSender,
        rx: ShmReceiver,
        pool: Arc<PagePool>,
        queue: PageQueue,
        _socket: TcpStream,
    }

    /// An end that sends on `send_ring` and receives on `receive_ring` of `segment`, with its
    /// own counters (both halves count there) and acknowledgements.
    fn end(
        segment: &Arc<Segment>,
        send_ring: usize,
        receive_ring: usize,
    ) -> (End, Arc<LinkCounters>) {
        let pool = Arc::new(PagePool::new(64, 2048));
        let counters = Arc::new(LinkCounters::default());
        let acks = Arc::new(Acks::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (far, _) = listener.accept().unwrap();
        let tx = ShmSender::new(
            segment.clone(),
            send_ring,
            pool.clone(),
            counters.clone(),
            EventFd::new().unwrap(),
            acks.clone(),
        );
        let rx = ShmReceiver::new(
            segment.clone(),
            receive_ring,
            Limits::default(),
            counters.clone(),
            EventFd::new().unwrap(),
            socket,
            acks,
        )
        .unwrap();
        let queue = PageQueue::with_capacity(64);
        (End { tx, rx, pool, queue, _socket: far }, counters)
    }

    impl End {
        /// Sends `n` signals numbered from `*next` (data word 0), `words` data words each, as
        /// one batch; while the ring is full, receives (checking the numbering from `expect`).
        /// Returns how often the ring was full.
        fn send(&mut self, n: u32, words: usize, next: &mut u32, expect: &mut u32) -> usize {
            let at = |b| BlockRef::new(NodeId::new(b).unwrap(), BlockNumber(200), BlockInstance(0));
            let mut page = self.pool.take().unwrap();
            let mut writer =
                BatchWriter::resume(page.words_mut(), 0, Limits::default(), Default::default());
            let mut data = vec![0u32; words];
            for _ in 0..n {
                data[0] = *next;
                writer.push(&Signal::new(gsn::PING_REQ, at(1), at(2)).data(&data)).unwrap();
                *next += 1;
            }
            page.len_words = writer.len_bytes() / 4;
            page.signals = n as usize;
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

        /// One poll: receives what is committed; checks the numbering continues from `expect`.
        fn receive(&mut self, expect: &mut u32) -> usize {
            let progress = self
                .rx
                .poll(&mut |s| {
                    assert_eq!(s.data()[0], *expect, "signals arrive whole and in order");
                    *expect += 1;
                })
                .unwrap();
            progress.signals
        }

        /// Polls until nothing more is committed; returns the signals received.
        fn receive_all(&mut self, expect: &mut u32) -> usize {
            let mut got = 0;
            loop {
                match self.receive(expect) {
                    0 => return got,
                    n => got += n,
                }
            }
        }
    }

    impl End {
        /// Writes signal `*next` (data word 0) with `words` data words and a section of
        /// `section` words straight into the ring; true when it went (then `*next` moves on).
        fn send_now(&mut self, words: usize, section: usize, next: &mut u32) -> bool {
            let at = |b| BlockRef::new(NodeId::new(b).unwrap(), BlockNumber(200), BlockInstance(0));
            let mut data: Vec<u32> = (0..words as u32).map(|w| w ^ *next).collect();
            data[0] = *next;
            let long: Vec<u32> = (0..section as u32).map(|w| w.wrapping_mul(7) ^ *next).collect();
            let sections = [long.as_slice()];
            let signal = Signal::new(gsn::PING_REQ, at(1), at(2))
                .data(&data)
                .sections(&sections[..usize::from(section > 0)]);
            match self.tx.send_signal(&signal, Limits::default(), Default::default()) {
                Some(progress) => {
                    let progress = progress.unwrap();
                    assert_eq!((progress.signals, progress.blocked), (1, false));
                    assert_eq!(progress.bytes, signal.wire_words(Default::default()) * 4);
                    *next += 1;
                    true
                }
                None => false,
            }
        }

        /// Polls until nothing more is committed, checking every word of signals sent by
        /// [`End::send_now`] (numbered from `expect`); returns the signals received.
        fn receive_checked(&mut self, expect: &mut u32) -> usize {
            let mut got = 0;
            loop {
                let progress = self
                    .rx
                    .poll(&mut |s| {
                        let n = *expect;
                        assert_eq!(s.data()[0], n, "signals arrive in order");
                        assert!(s.data()[1..]
                            .iter()
                            .enumerate()
                            .all(|(w, &v)| v == (w as u32 + 1) ^ n));
                        let long = s.section(0).unwrap_or(&[]);
                        assert!(long
                            .iter()
                            .enumerate()
                            .all(|(w, &v)| v == (w as u32).wrapping_mul(7) ^ n));
                        *expect += 1;
                    })
                    .unwrap();
                match progress.signals {
                    0 => return got,
                    n => got += n,
                }
            }
        }
    }

    #[test]
    fn signals_written_straight_into_the_ring_arrive_whole_and_in_order() {
        let ring = 16 << 10;
        let mut p = pair(ring);
        let (mut next, mut expect) = (0u32, 0u32);
        // One at a time, of every data length and with sections of many lengths: records land
        // anywhere in the lap, and each starts the next lap early (the ring is empty).
        for round in 0..5_000u32 {
            let section = if round % 3 == 0 { (round as usize * 37) % 1_500 } else { 0 };
            assert!(p.end.send_now(1 + round as usize % 25, section, &mut next));
            assert_eq!(p.end.receive_checked(&mut expect), 1);
        }
        // Nobody reads: the ring fills (laps padded out on the way), then a signal is refused
        // whole (nothing committed), and goes once the consumer has read.
        for _ in 0..20 {
            let mut sent = 0;
            while p.end.send_now(1 + (next as usize % 25), (next as usize % 4) * 40, &mut next) {
                sent += 1;
                assert!(sent < ring, "the ring never filled");
            }
            let used = p.end.tx.position - p.end.rx.position;
            assert!(used > ring as u64 - 1_000, "refused with {used} of {ring} bytes used");
            assert_eq!(p.end.receive_checked(&mut expect), sent);
        }
        // A signal that breaks the limits is refused, and nothing of it arrives.
        let too_long = [0u32; signals::MAX_DATA_WORDS + 1];
        let at = BlockRef::new(NodeId::new(1).unwrap(), BlockNumber(200), BlockInstance(0));
        let bad = Signal::new(gsn::PING_REQ, at, at).data(&too_long);
        assert!(p.end.tx.send_signal(&bad, Limits::default(), Default::default()).is_none());
        assert_eq!(p.end.receive_checked(&mut expect), 0);
        assert!(p.end.send_now(3, 0, &mut next));
        assert_eq!(p.end.receive_checked(&mut expect), 1);
        assert_eq!(expect, next);
        let c = p.counters.snapshot();
        assert_eq!((c.signals_sent, c.signals_received), (u64::from(next), u64::from(next)));
        assert_eq!(c.bytes_sent, c.bytes_received);
    }

    /// Both halves of ring 0 of one segment, in this thread.
    struct Pair {
        end: End,
        counters: Arc<LinkCounters>,
        next: u32,
    }

    fn pair(ring_bytes: usize) -> Pair {
        let (segment, _file) = Segment::create("blockwire-test-ring", ring_bytes, 1, 1, 2).unwrap();
        let (end, counters) = end(&Arc::new(segment), 0, 0);
        Pair { end, counters, next: 0 }
    }

    impl Pair {
        /// Sends `n` signals of 4 data words as one batch; returns how often the ring was full.
        fn send(&mut self, n: u32, expect: &mut u32) -> usize {
            self.end.send(n, 4, &mut self.next, expect)
        }

        fn receive(&mut self, expect: &mut u32) -> usize {
            self.end.receive_all(expect)
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
        assert!(p.end.tx.position > 8 * ring as u64, "the ring wrapped again and again");
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

    /// The two ends of a two-ring link in this process.
    fn ends(ring_bytes: usize) -> (End, End, Arc<LinkCounters>, Arc<LinkCounters>) {
        let (segment, _file) = Segment::create("blockwire-test-ends", ring_bytes, 1, 1, 2).unwrap();
        let segment = Arc::new(segment);
        let (a, ca) = end(&segment, 0, 1);
        let (b, cb) = end(&segment, 1, 0);
        (a, b, ca, cb)
    }

    #[test]
    fn early_laps_of_an_empty_ring_lose_nothing_between_two_threads() {
        let ring = 16 << 10;
        let (mut a, mut b, ca, cb) = ends(ring);
        const ROUNDS: u32 = 20_000;
        // Ping-pong with one, two or three signals, of sizes that land the records anywhere.
        let total: u32 = (0..ROUNDS).map(|r| 1 + r % 3).sum();
        // b answers every batch it gets with as many signals, and every seventh with a burst.
        let echo = std::thread::spawn(move || {
            let (mut next, mut expect) = (0u32, 0u32);
            while expect < total {
                let got = b.receive(&mut expect);
                if got > 0 {
                    let burst = if expect % 7 == 0 { 40 } else { got as u32 };
                    b.send(burst, 1 + (expect as usize % 9), &mut next, &mut expect);
                }
            }
            (b.tx.position, next)
        });
        let (mut next, mut expect) = (0u32, 0u32);
        for round in 0..ROUNDS {
            a.send(1 + round % 3, 1 + (round as usize % 13), &mut next, &mut expect);
            let target = expect + 1;
            while expect < target {
                a.receive(&mut expect);
            }
        }
        while !echo.is_finished() {
            a.receive(&mut expect);
        }
        let (b_position, b_sent) = echo.join().unwrap();
        a.receive_all(&mut expect);
        assert_eq!(expect, b_sent, "every signal b sent arrived");
        let (sa, sb) = (ca.snapshot(), cb.snapshot());
        assert_eq!(sa.signals_sent, u64::from(total));
        assert_eq!(sb.signals_received, u64::from(total));
        // Both ends left laps early: positions ran far past the bytes that went through.
        assert!(a.tx.position > 100 * ring as u64, "a's position {}", a.tx.position);
        assert!(b_position > 100 * ring as u64, "b's position {b_position}");
        assert!(sa.bytes_sent < a.tx.position / 10 && sb.bytes_sent < b_position / 10);
        assert_eq!(sa.bytes_sent, sb.bytes_received);
        assert_eq!(sb.bytes_sent, sa.bytes_received);
    }

    #[test]
    fn a_ping_pong_of_equal_records_stays_on_the_first_line() {
        let ring = 16 << 10;
        let (mut a, mut b, _, _) = ends(ring);
        let (mut a_next, mut a_expect, mut b_next, mut b_expect) = (0, 0, 0, 0);
        // One signal of 4 data words each way per round trip: records of 44 bytes, each
        // starting a lap early right where the last one started; the zero word after each is
        // the word the consumer waits on.
        let record = (HEAD_BYTES + signals::HEADER_BYTES + 16) as u64;
        for round in 0..2_000 {
            assert_eq!(a.send(1, 4, &mut a_next, &mut a_expect), 0);
            assert_eq!(b.receive_all(&mut b_expect), 1);
            assert_eq!(b.send(1, 4, &mut b_next, &mut b_expect), 0);
            assert_eq!(a.receive_all(&mut a_expect), 1);
            if round > 0 {
                assert_eq!(a.tx.position % ring as u64, record, "a's record {round}");
                assert_eq!(b.tx.position % ring as u64, record, "b's record {round}");
            }
        }
        assert!(a.tx.position > 1_000 * ring as u64, "a left a lap early at every record");
        assert_eq!((a_expect, b_expect), (2_000, 2_000));
        // The same with signals written straight into the ring.
        let (mut a_next, mut a_expect, mut b_next, mut b_expect) = (0, 0, 0, 0);
        for round in 0..2_000 {
            assert!(a.send_now(4, 0, &mut a_next));
            assert_eq!(b.receive_checked(&mut b_expect), 1);
            assert!(b.send_now(4, 0, &mut b_next));
            assert_eq!(a.receive_checked(&mut a_expect), 1);
            if round > 0 {
                assert_eq!(a.tx.position % ring as u64, record, "a's record {round}");
                assert_eq!(b.tx.position % ring as u64, record, "b's record {round}");
            }
        }
        assert_eq!((a_expect, b_expect), (2_000, 2_000));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    /// A 32-byte ring's record words, modelled; the consumer stands at position 8 of lap 0.
    fn ring() -> Arc<Vec<AtomicU32>> {
        let words: Vec<AtomicU32> = (0..8).map(|_| AtomicU32::new(0)).collect();
        // Lap 0's first record (consumed), parity 0.
        words[0].store(4, std::sync::atomic::Ordering::Relaxed);
        Arc::new(words)
    }

    /// The producer's commit: the zero past the record, then its word (release), with the
    /// lap's parity.
    fn commit(words: &[AtomicU32], position: u64, len: u64, word: u32) {
        let at = |p: u64| &words[((p % 32) / 4) as usize];
        at(position + len).store(0, std::sync::atomic::Ordering::Relaxed);
        at(position).store(word | lap_flag(position, 32), std::sync::atomic::Ordering::Release);
    }

    fn look(words: &[AtomicU32]) -> (u64, u32) {
        locate(8, 32, |offset| words[offset / 4].load(std::sync::atomic::Ordering::Acquire))
    }

    #[test]
    fn loom_a_record_committed_before_the_next_lap_is_not_skipped() {
        loom::model(|| {
            let words = ring();
            let w = words.clone();
            // The producer, not knowing the ring empty, writes a record where the consumer
            // stands, pads out the lap, and starts the next one.
            let producer = loom::thread::spawn(move || {
                commit(&w, 8, 8, 4);
                commit(&w, 16, 16, PAD_FLAG | 12);
                // Only what fits before the consumer's position in the next lap (with the zero
                // word after it): the word alone.
                commit(&w, 32, 4, 4);
            });
            let (at, word) = look(&words);
            producer.join().unwrap();
            assert_eq!(at, 8, "the consumer skipped the record at its position (word {word:#x})");
        });
    }

    #[test]
    fn loom_a_lap_left_early_is_followed() {
        // The producer knows the ring empty at 8 and starts lap 1 early, with a record that
        // ends before the consumer's position there (4 bytes), or exactly at it (8 bytes: the
        // zero stored past it is the consumer's own zero word).
        for len in [4, 8] {
            loom::model(move || {
                let words = ring();
                let w = words.clone();
                let producer = loom::thread::spawn(move || commit(&w, 32, len, len as u32));
                let (at, word) = look(&words);
                producer.join().unwrap();
                let record = len as u32 | LAP_FLAG;
                assert!(
                    (at, word) == (8, 0) || (at, word) == (32, record),
                    "found ({at}, {word:#x})"
                );
                // Once the producer is done, the consumer finds the record in the next lap.
                assert_eq!(look(&words), (32, record));
            });
        }
    }
}
