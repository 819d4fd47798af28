//! Job buffers over crossbeam-channel: the reference implementation the runtime's own ring
//! ([`crate::ring`]) is measured against in `benches/job_buffer.rs` (see [`crate::jobbuf`] for
//! which one the runtime uses). Same interface, same guarantees.
//!
//! A lane is a fixed set of pages (word arrays sized at start-up) circulating between its two
//! ends over two crossbeam channels: the producer packs signals into its current page with the
//! signals crate's [`BatchWriter`] and publishes whole pages (at the end of its round, or when
//! a page is full); the consumer walks a page in place (trusted [`SignalView`]s: packed in
//! this process, or checked by the transporter), running one signal at a time, and hands the
//! emptied page back. So there is no allocation after start-up, one channel operation per page
//! rather than per signal, and a full lane is back-pressure the producer sees (`LaneFull`),
//! never growth. NDB's multi-threaded scheduler moves signals between
//! threads in job-buffer pages the same way.
//!
//! Invariants:
//! - every page holds a run of whole, valid signals from `0..len`;
//! - `page_words >= limits.max_signal_words()`, so any valid signal fits an empty page;
//! - the pages of a lane are conserved: `depth` pages exist, each is either the producer's
//!   (current or spare), in the full channel, the consumer's, or in the free channel.
//!
//! Wakeups: publishing a page wakes the consumer through its parker only if it is marked
//! sleeping; returning a page wakes the producer the same way (it may be waiting for room).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use signals::{BatchWriter, Gsn, Limits, PackError, Signal, SignalView, WriteOptions};

use crate::parker::Parker;

/// A page of packed signals.
#[derive(Debug)]
struct Page {
    words: Box<[u32]>,
    len: usize,
}

/// Why a signal did not go into a lane. Nothing was written in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    /// Every page of the lane is full or still held by the consumer: back-pressure.
    #[error("job buffer full ({depth} pages of {page_words} words in use)")]
    Full { depth: usize, page_words: usize },
    /// The signal itself is invalid (too long, too many sections...).
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// Sizes of one lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneShape {
    /// Pages in the lane, at least 2.
    pub depth: usize,
    /// Words per page, at least `limits.max_signal_words()`.
    pub page_words: usize,
    /// Signal size limits.
    pub limits: Limits,
}

/// Makes a lane: the producer end for the sending thread, the consumer end for the receiving
/// one. `producer` and `consumer` are the parkers of the two threads.
pub fn lane(
    shape: LaneShape,
    producer: Arc<Parker>,
    consumer: Arc<Parker>,
) -> (LaneWriter, LaneReader) {
    assert!(shape.depth >= 2, "a lane needs at least two pages");
    assert!(shape.page_words >= shape.limits.max_signal_words(), "page smaller than a signal");
    let (full_tx, full_rx) = crossbeam_channel::bounded(shape.depth);
    let (free_tx, free_rx) = crossbeam_channel::bounded(shape.depth);
    let mut spare = Vec::with_capacity(shape.depth);
    for _ in 0..shape.depth {
        spare.push(Page { words: vec![0u32; shape.page_words].into_boxed_slice(), len: 0 });
    }
    let writer = LaneWriter { full_tx, free_rx, current: None, spare, shape, consumer };
    let reader =
        LaneReader { full_rx, free_tx, reading: None, offset: 0, limits: shape.limits, producer };
    (writer, reader)
}

/// The producer end of a lane.
#[derive(Debug)]
pub struct LaneWriter {
    full_tx: Sender<Page>,
    free_rx: Receiver<Page>,
    current: Option<Page>,
    spare: Vec<Page>,
    shape: LaneShape,
    consumer: Arc<Parker>,
}

impl LaneWriter {
    /// Packs one signal into the current page (publishing it and taking a fresh one when full).
    #[inline]
    pub fn push(&mut self, signal: &Signal<'_>) -> Result<(), LaneError> {
        let limits = self.shape.limits;
        if let Some(page) = self.current.as_mut() {
            let mut w =
                BatchWriter::new(&mut page.words[page.len..], limits, WriteOptions::default());
            match w.push(signal) {
                Ok(()) => {
                    page.len += w.words().len();
                    return Ok(());
                }
                Err(PackError::DoesNotFit { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let page = self.fresh_page()?;
        let mut w = BatchWriter::new(&mut page.words[..], limits, WriteOptions::default());
        // An empty page holds any valid signal, so only a real pack error remains.
        w.push(signal)?;
        page.len = w.words().len();
        Ok(())
    }

    /// Copies one already packed and validated signal (its wire words, e.g. from a peer's batch).
    #[inline]
    pub fn push_wire(&mut self, words: &[u32]) -> Result<(), LaneError> {
        let max = self.shape.limits.max_signal_words();
        if words.len() > max {
            // Word 1 of the header holds the GSN in its low half.
            let gsn = Gsn(words.get(1).map_or(0, |w| *w as u16));
            return Err(PackError::SignalTooLong { gsn, words: words.len(), max }.into());
        }
        let fits = |p: &Page| p.words.len() - p.len >= words.len();
        let page = match self.current.as_mut() {
            Some(p) if fits(p) => p,
            _ => self.fresh_page()?,
        };
        page.words[page.len..page.len + words.len()].copy_from_slice(words);
        page.len += words.len();
        Ok(())
    }

    /// Publishes the current page (if it holds anything) and returns the next empty one.
    fn fresh_page(&mut self) -> Result<&mut Page, LaneError> {
        self.reclaim();
        if self.spare.is_empty() {
            return Err(LaneError::Full {
                depth: self.shape.depth,
                page_words: self.shape.page_words,
            });
        }
        if self.current.as_ref().is_some_and(|p| p.len > 0) {
            self.publish();
        }
        if self.current.is_none() {
            self.current = self.spare.pop();
        }
        self.current
            .as_mut()
            .ok_or(LaneError::Full { depth: self.shape.depth, page_words: self.shape.page_words })
    }

    /// Moves pages the consumer returned into the spare list.
    #[inline]
    fn reclaim(&mut self) {
        while let Ok(page) = self.free_rx.try_recv() {
            self.spare.push(page);
        }
    }

    /// Sends the current page to the consumer and wakes it if sleeping.
    fn publish(&mut self) {
        if let Some(page) = self.current.take() {
            // Cannot fail while the consumer lives: the channel holds `depth` pages, all there are.
            // A gone consumer (node stopping) just drops the page.
            let _ = self.full_tx.try_send(page);
            self.consumer.wake();
        }
    }

    /// End of round: publishes a non-empty current page. Returns whether it published.
    #[inline]
    pub fn flush(&mut self) -> bool {
        if self.current.as_ref().is_some_and(|p| p.len > 0) {
            self.publish();
            true
        } else {
            false
        }
    }

    /// Whether a handler may run that sends to this lane: at least one whole spare page is left
    /// (after taking back what the consumer returned). A lane without one is congested.
    #[inline]
    pub fn has_reserve(&mut self) -> bool {
        if self.spare.is_empty() {
            self.reclaim();
        }
        !self.spare.is_empty()
    }

    /// Whether the consumer returned pages not yet reclaimed (room came back).
    pub fn room_returned(&self) -> bool {
        !self.free_rx.is_empty()
    }
}

/// The consumer end of a lane.
#[derive(Debug)]
pub struct LaneReader {
    full_rx: Receiver<Page>,
    free_tx: Sender<Page>,
    reading: Option<Page>,
    offset: usize,
    limits: Limits,
    producer: Arc<Parker>,
}

impl LaneReader {
    /// Whether a signal is waiting (in the page being read or a published one).
    #[inline]
    pub fn has_signal(&self) -> bool {
        self.reading.is_some() || !self.full_rx.is_empty()
    }

    /// The next signal, borrowed in place; call [`LaneReader::advance`] with its length after
    /// running it.
    #[inline]
    pub fn peek(&mut self) -> Option<SignalView<'_>> {
        if self.reading.is_none() {
            self.reading = Some(self.full_rx.try_recv().ok()?);
            self.offset = 0;
        }
        let page = self.reading.as_ref()?;
        debug_assert!(self.offset < page.len && page.len <= page.words.len());
        // Packed by a BatchWriter in this process, or copied from a batch the transporter
        // walked and checked: read, not checked again.
        Some(SignalView::trusted(&page.words[self.offset..page.len], self.limits))
    }

    /// End of round. Pages go back as soon as they are empty (in `advance`), so nothing is
    /// left to hand back; present so both job buffers share one interface.
    #[inline]
    pub fn release(&mut self) -> bool {
        false
    }

    /// Steps past the signal last peeked (`words` long); returns an emptied page to the
    /// producer and wakes it if it sleeps waiting for room.
    #[inline]
    pub fn advance(&mut self, words: usize) {
        self.offset += words;
        let done = self.reading.as_ref().is_some_and(|p| self.offset >= p.len);
        if done {
            if let Some(mut page) = self.reading.take() {
                page.len = 0;
                // Cannot fail while the producer lives (the channel holds all pages).
                let _ = self.free_tx.try_send(page);
                self.producer.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId};

    use super::*;

    fn ends(depth: usize, page_words: usize) -> (LaneWriter, LaneReader) {
        let limits = Limits::new(64, 128).unwrap();
        let p = Arc::new(Parker::new().unwrap());
        let c = Arc::new(Parker::new().unwrap());
        lane(LaneShape { depth, page_words, limits }, p, c)
    }

    fn r(block: u16) -> BlockRef {
        BlockRef::new(NodeId::MIN, BlockNumber(block), BlockInstance(0))
    }

    #[test]
    fn signals_come_out_in_order_across_pages() {
        let (mut w, mut rd) = ends(4, 128);
        for i in 0..20u32 {
            w.push(&Signal::new(gsn::PING_REQ, r(1), r(2)).data(&[i; 10])).unwrap();
        }
        w.flush();
        for i in 0..20u32 {
            let (first, len) = {
                let v = rd.peek().unwrap();
                (v.data()[0], v.wire_words().len())
            };
            assert_eq!(first, i);
            rd.advance(len);
        }
        assert!(rd.peek().is_none());
    }

    #[test]
    fn full_lane_is_back_pressure_then_room_returns() {
        let (mut w, mut rd) = ends(2, 128);
        let sig = Signal::new(gsn::PING_REQ, r(1), r(2)).data(&[7; 25]);
        let mut pushed = 0;
        let err = loop {
            match w.push(&sig) {
                Ok(()) => pushed += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, LaneError::Full { depth: 2, page_words: 128 });
        assert!(!w.has_reserve());
        w.flush();
        let mut got = 0;
        while let Some(len) = rd.peek().map(|v| v.wire_words().len()) {
            rd.advance(len);
            got += 1;
        }
        assert_eq!(got, pushed);
        assert!(w.room_returned());
        assert!(w.has_reserve());
        w.push(&sig).unwrap();
    }

    #[test]
    fn wire_words_are_copied_verbatim() {
        let (mut w, mut rd) = ends(2, 128);
        let mut page = [0u32; 64];
        let mut bw =
            BatchWriter::new(&mut page, Limits::new(64, 128).unwrap(), WriteOptions::default());
        bw.push(&Signal::new(gsn::STATS_REQ, r(3), r(4)).data(&[1, 2, 3])).unwrap();
        w.push_wire(bw.words()).unwrap();
        w.flush();
        let v = rd.peek().unwrap();
        assert_eq!(v.gsn(), gsn::STATS_REQ);
        assert_eq!(v.data(), &[1, 2, 3]);
        assert_eq!(v.sender(), r(3));
    }
}
