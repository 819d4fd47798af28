//! The two halves of a shared-memory link: a single-producer ring each way.
//!
//! Producer ([`ShmSender`]): copies whole signals from the queued pages into free ring space, never
//! splitting a signal at the end of a lap (it writes a wrap marker, a zero word, and continues at
//! the lap's start), then publishes the whole batch with one release store of its position, fences
//! and wakes the consumer only if it is marked sleeping.
//!
//! Consumer ([`ShmReceiver`]): loads the producer position, validates it, walks the published
//! bytes in place and hands each signal up, then publishes its own position once per poll. Every
//! word the peer wrote is untrusted: a position out of range, a signal that crosses the end of a
//! lap or the producer position, or a malformed signal closes the link; a wrap marker can only move
//! the consumer forward, so a hostile peer cannot make it read outside the ring or loop forever.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use signals::{BatchWalker, Limits, SignalView, WalkError};

use super::layout::Segment;
use super::wake;
use crate::counters::LinkCounters;
use crate::pages::{Page, PagePool, PageQueue};
use crate::poller::EventFd;
use crate::sync::{Ordering, SharedWord};
use crate::{LinkError, LinkReceiver, LinkSender, PollProgress, SendProgress};

/// The word a producer writes where a lap ends early.
pub const WRAP_MARKER: u32 = 0;

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

    /// Copies whole signals of `page` into the ring; returns (bytes copied, ring full). Ring
    /// space skipped by a wrap marker is added to `padding`.
    fn copy_page(&mut self, page: &mut Page, free: &mut u64, padding: &mut u64) -> (usize, bool) {
        let size = self.segment.ring_bytes() as u64;
        let mut copied = 0;
        loop {
            let bytes = page.unsent();
            if bytes.is_empty() {
                return (copied, false);
            }
            let offset = (self.position % size) as usize;
            let contiguous = (size as usize - offset).min(*free as usize);
            let mut take = 0;
            while take + 2 <= bytes.len() {
                // Our own page: whole signals, each starting with its u16 length in words.
                let signal = u16::from_le_bytes([bytes[take], bytes[take + 1]]) as usize * 4;
                debug_assert!(signal >= signals::HEADER_BYTES && take + signal <= bytes.len());
                if take + signal > contiguous {
                    break;
                }
                take += signal;
            }
            if take == 0 {
                let first = u16::from_le_bytes([bytes[0], bytes[1]]) as u64 * 4;
                let lap_rest = size - offset as u64;
                if lap_rest < first && *free >= lap_rest + first {
                    self.write(offset, &WRAP_MARKER.to_le_bytes());
                    self.position += lap_rest;
                    *free -= lap_rest;
                    *padding += lap_rest;
                    continue;
                }
                return (copied, true);
            }
            self.write(offset, &bytes[..take]);
            self.position += take as u64;
            *free -= take as u64;
            page.sent_bytes += take;
            copied += take;
        }
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
            self.pool.sub_queued(progress.bytes);
            // SYNC: producer-publish. Release: the copied bytes are visible before the position.
            SharedWord::store(self.segment.producer(self.ring), self.position, Ordering::Release);
            LinkCounters::add(&self.counters.batches_sent, 1);
            // Ring bytes used, wrap padding included, so both ends count the same bytes.
            LinkCounters::add(&self.counters.bytes_sent, progress.bytes as u64 + padding);
            LinkCounters::add(&self.counters.signals_sent, progress.signals as u64);
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
        Ok(ShmReceiver { segment, ring, position: 0, limits, counters, wake, socket, armed: false })
    }

    /// Walks published bytes from `self.position` up to `producer`, handing signals up.
    fn walk(
        &mut self,
        producer: u64,
        deliver: &mut dyn FnMut(SignalView<'_>),
    ) -> Result<usize, LinkError> {
        let size = self.segment.ring_bytes() as u64;
        let mut signals = 0;
        while self.position < producer {
            let offset = (self.position % size) as usize;
            let lap_rest = size - offset as u64;
            let available = (producer - self.position).min(lap_rest) as usize;
            // SAFETY: `offset..offset + available` lies in this ring and in the published span
            // (between our position and the producer's), which the producer does not write until
            // we release it; the bytes are only read, and every length in them is checked.
            let bytes: &[u8] = unsafe {
                std::slice::from_raw_parts(self.segment.data(self.ring).add(offset), available)
            };
            let mut walker = BatchWalker::new(bytes, self.limits).unwrap_or_else(|_| {
                unreachable!("ring data is page aligned and offsets are whole words")
            });
            loop {
                let at = walker.offset();
                if bytes.len() - at >= 4 && bytes[at..at + 4] == WRAP_MARKER.to_le_bytes() {
                    self.position += at as u64;
                    let skip = size - (self.position % size);
                    if self.position + skip > producer {
                        return Err(LinkError::Corrupt(format!(
                            "wrap marker at position {} runs past the producer position {producer}",
                            self.position
                        )));
                    }
                    self.position += skip;
                    break;
                }
                match walker.next_signal() {
                    Ok(Some(signal)) => {
                        deliver(signal);
                        signals += 1;
                    }
                    Ok(None) => {
                        self.position += walker.offset() as u64;
                        break;
                    }
                    Err(WalkError::Incomplete { offset, need_bytes }) => {
                        return Err(LinkError::Corrupt(format!(
                            "signal at ring position {} is cut {need_bytes} bytes short by the {}",
                            self.position + offset as u64,
                            if available as u64 == lap_rest {
                                "end of the ring"
                            } else {
                                "producer position"
                            }
                        )));
                    }
                    Err(WalkError::Malformed(m)) => return Err(LinkError::Malformed(m)),
                }
            }
        }
        Ok(signals)
    }

    fn producer(&self) -> Result<u64, LinkError> {
        let size = self.segment.ring_bytes() as u64;
        // SYNC: producer-publish. Acquire: the published bytes are visible.
        let producer = SharedWord::load(self.segment.producer(self.ring), Ordering::Acquire);
        if producer < self.position || producer - self.position > size || producer % 4 != 0 {
            return Err(LinkError::Corrupt(format!(
                "peer's producer position {producer} is outside [{} .. {}] or not whole words",
                self.position,
                self.position + size
            )));
        }
        Ok(producer)
    }
}

impl LinkReceiver for ShmReceiver {
    fn poll(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<PollProgress, LinkError> {
        if self.armed {
            wake::woke(self.segment.sleeping(self.ring));
            self.armed = false;
        }
        let producer = self.producer()?;
        if producer == self.position {
            return Ok(PollProgress::default());
        }
        let start = self.position;
        let signals = self.walk(producer, deliver)?;
        // SYNC: consumer-release. Release: we are done reading the space we hand back.
        SharedWord::store(self.segment.consumer(self.ring), self.position, Ordering::Release);
        let bytes = (self.position - start) as usize;
        LinkCounters::add(&self.counters.batches_received, 1);
        LinkCounters::add(&self.counters.bytes_received, bytes as u64);
        LinkCounters::add(&self.counters.signals_received, signals as u64);
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
        let mut byte = [0u8; 1];
        match self.socket.peek(&mut byte) {
            Ok(0) => Err(LinkError::PeerClosed),
            Ok(_) => {
                Err(LinkError::Corrupt("unexpected bytes on the link's handshake socket".into()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(LinkError::Io { op: "peek link socket", source: e }),
        }
    }

    fn arm(&mut self) -> Result<bool, LinkError> {
        let position = self.position;
        let segment = &self.segment;
        let ring = self.ring;
        let may_sleep = wake::prepare_sleep(segment.sleeping(ring), || {
            // SYNC: producer-publish (acquire side, after the fence).
            SharedWord::load(segment.producer(ring), Ordering::Acquire) != position
        });
        self.armed = may_sleep;
        Ok(may_sleep)
    }
}
