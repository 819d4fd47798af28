//! Send-buffer pages: fixed-size word arrays that signals are packed into, queued per
//! (thread, peer), and handed to a transporter at the end of a round.
//!
//! Every page of a link comes from that link's [`PagePool`], allocated whole at start-up
//! (`send_buffer_bytes / page_bytes` pages), so sending never allocates and one slow peer cannot
//! take another peer's memory. The pool also keeps the link's count of queued bytes, from which
//! the overload levels are read (after NDB: overload at 80% of the budget, slowdown at 60% of
//! that). Queued means closed and not yet written: a thread's open page counts once it is closed
//! (full, or at a flush), so packing a signal touches no shared counter, and a flush that writes
//! at once what it closed leaves the count as it was.
//!
//! Invariants: a page holds whole signals only (`len_words`), `sent_bytes <= len_words * 4`, and
//! every page is in exactly one place: the pool, a queue, a writer's open page, or a sender's
//! pending slot.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::counters::LinkCounters;

/// One send-buffer page.
#[derive(Debug)]
pub struct Page {
    words: Box<[u32]>,
    /// Words of whole signals packed so far.
    pub len_words: usize,
    /// Signals packed so far.
    pub signals: usize,
    /// Bytes already written to the transport.
    pub sent_bytes: usize,
}

impl Page {
    fn new(page_words: usize) -> Page {
        Page {
            words: vec![0; page_words].into_boxed_slice(),
            len_words: 0,
            signals: 0,
            sent_bytes: 0,
        }
    }

    /// The whole page, for packing into.
    pub fn words_mut(&mut self) -> &mut [u32] {
        &mut self.words
    }

    /// The packed signals.
    pub fn packed(&self) -> &[u32] {
        &self.words[..self.len_words]
    }

    /// The packed bytes not yet written.
    pub fn unsent(&self) -> &[u8] {
        debug_assert!(self.sent_bytes <= self.len_words * 4);
        &bytemuck::cast_slice(self.packed())[self.sent_bytes..]
    }

    /// The bytes of the longest run of whole unsent signals that fits in `room` bytes (0 when
    /// even the first does not), and the size of the first unsent signal.
    pub fn unsent_within(&self, room: usize) -> (usize, usize) {
        let bytes = self.unsent();
        // Our own page: whole signals, each starting with its u16 length in words.
        let signal_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize * 4;
        let mut take = 0;
        while take + 2 <= bytes.len() {
            let signal = signal_at(take);
            debug_assert!(signal >= signals::HEADER_BYTES && take + signal <= bytes.len());
            if take + signal > room {
                break;
            }
            take += signal;
        }
        (take, if bytes.len() >= 2 { signal_at(0) } else { 0 })
    }

    /// The signals written whole (a signal the write cut counts as not written).
    pub fn written_signals(&self) -> usize {
        let bytes: &[u8] = bytemuck::cast_slice(self.packed());
        let (mut at, mut whole) = (0, 0);
        // Our own page: whole signals, each starting with its u16 length in words.
        while whole < self.signals && at + 2 <= bytes.len() {
            let signal = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize * 4;
            if signal == 0 || at + signal > self.sent_bytes {
                break;
            }
            at += signal;
            whole += 1;
        }
        whole
    }

    /// Whether nothing is packed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len_words == 0
    }

    /// Whether every packed byte was written.
    #[inline]
    pub fn is_sent(&self) -> bool {
        self.sent_bytes >= self.len_words * 4
    }

    /// Empties the page for reuse.
    pub fn reset(&mut self) {
        self.len_words = 0;
        self.signals = 0;
        self.sent_bytes = 0;
    }
}

/// How full a link's send buffers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendLevel {
    /// Below the slowdown mark.
    Normal,
    /// Over 60% of the overload mark: callers should send less (optional traffic waits).
    Slowdown,
    /// Over 80% of the budget: new signals are refused with [`SendError::Overloaded`].
    Overload,
}

/// The pages of one link, and its count of queued bytes.
#[derive(Debug)]
pub struct PagePool {
    free_tx: Sender<Page>,
    free_rx: Receiver<Page>,
    page_words: usize,
    pages: usize,
    queued_bytes: AtomicUsize,
    overload_bytes: usize,
    slowdown_bytes: usize,
}

impl PagePool {
    /// Allocates `pages` pages of `page_words` words.
    pub fn new(pages: usize, page_words: usize) -> PagePool {
        let (free_tx, free_rx) = crossbeam_channel::bounded(pages);
        for _ in 0..pages {
            // Cannot fail: the channel holds exactly `pages`.
            let _ = free_tx.try_send(Page::new(page_words));
        }
        let budget = pages * page_words * 4;
        let overload_bytes = budget / 10 * 8;
        PagePool {
            free_tx,
            free_rx,
            page_words,
            pages,
            queued_bytes: AtomicUsize::new(0),
            overload_bytes,
            slowdown_bytes: overload_bytes / 10 * 6,
        }
    }

    /// A free page, or `None` when all are in use.
    pub fn take(&self) -> Option<Page> {
        self.free_rx.try_recv().ok()
    }

    /// Returns a page (sent, or dropped) to the pool.
    pub fn give(&self, mut page: Page) {
        page.reset();
        // Cannot fail: only this pool's pages exist, and it has room for all of them.
        let _ = self.free_tx.try_send(page);
    }

    /// Words per page.
    pub fn page_words(&self) -> usize {
        self.page_words
    }

    /// Pages in all.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Bytes packed and not yet written, over all threads.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Counts `bytes` more as queued; returns the new total.
    pub fn add_queued(&self, bytes: usize) -> usize {
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    /// Counts `bytes` as written or dropped.
    pub fn sub_queued(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The overload mark in bytes (80% of the budget).
    pub fn overload_bytes(&self) -> usize {
        self.overload_bytes
    }

    /// The current level.
    pub fn level(&self) -> SendLevel {
        let queued = self.queued_bytes();
        if queued >= self.overload_bytes {
            SendLevel::Overload
        } else if queued >= self.slowdown_bytes {
            SendLevel::Slowdown
        } else {
            SendLevel::Normal
        }
    }
}

/// A link sender's page written in part (the transport took less than all of it), finished
/// before anything else. It dereferences to the slot, `Option<Page>`. When the sender goes (its
/// link closed), the page returns to its pool, its unsent bytes leave the link's queued count,
/// the signals it wrote whole count as sent and the rest as dropped on the link.
#[derive(Debug)]
pub struct UnsentPage {
    page: Option<Page>,
    pool: Arc<PagePool>,
    counters: Arc<LinkCounters>,
}

impl UnsentPage {
    /// An empty slot for a sender of the link whose pages come from `pool`.
    pub fn new(pool: Arc<PagePool>, counters: Arc<LinkCounters>) -> UnsentPage {
        UnsentPage { page: None, pool, counters }
    }

    /// Drops the page now (its link is closing): counts the signals it wrote whole as sent, and
    /// returns the signals dropped with it.
    pub fn discard(&mut self) -> usize {
        let Some(page) = self.page.take() else { return 0 };
        let written = page.written_signals();
        LinkCounters::add(&self.counters.signals_sent, written as u64);
        let dropped = page.signals - written;
        self.pool.sub_queued(page.unsent().len());
        self.pool.give(page);
        dropped
    }
}

impl UnsentPage {
    /// Drops the page now, its link closing after the transport lost what it took of the page
    /// (a post that failed): every signal on it counts as dropped. Returns them.
    pub fn discard_lost(&mut self) -> usize {
        let Some(page) = self.page.take() else { return 0 };
        self.pool.sub_queued(page.unsent().len());
        let dropped = page.signals;
        self.pool.give(page);
        dropped
    }
}

/// Hands a sender's pages to `copy` in order (the page it kept written in part, in `pending`,
/// then the queue's) until one is not written whole: `copy` writes what the transport takes of
/// a page and returns (bytes written, transport full). Pages written whole go to the queue's
/// done list; one written in part is kept in `pending`. Returns (bytes, signals of the pages
/// written whole, full).
#[inline]
pub fn feed(
    pending: &mut Option<Page>,
    queue: &mut PageQueue,
    mut copy: impl FnMut(&mut Page) -> (usize, bool),
) -> (usize, usize, bool) {
    let (mut bytes, mut signals) = (0, 0);
    while let Some(mut page) = pending.take().or_else(|| queue.pop()) {
        let (copied, full) = copy(&mut page);
        bytes += copied;
        if page.unsent().is_empty() {
            signals += page.signals;
            queue.finish(page);
        } else {
            *pending = Some(page);
        }
        if full {
            return (bytes, signals, true);
        }
    }
    (bytes, signals, false)
}

impl Deref for UnsentPage {
    type Target = Option<Page>;

    fn deref(&self) -> &Option<Page> {
        &self.page
    }
}

impl DerefMut for UnsentPage {
    fn deref_mut(&mut self) -> &mut Option<Page> {
        &mut self.page
    }
}

impl Drop for UnsentPage {
    fn drop(&mut self) {
        let dropped = self.discard();
        LinkCounters::add(&self.counters.signals_dropped, dropped as u64);
    }
}

/// Pages of one (thread, peer) pair waiting to be written, oldest first, and the pages a
/// transporter finished writing (handed back to the packing thread, which reuses one as its next
/// page without a trip through the shared pool).
#[derive(Debug)]
pub struct PageQueue {
    pages: VecDeque<Page>,
    done: Vec<Page>,
}

impl PageQueue {
    /// An empty queue with room for `capacity` pages (a link's page count, so it never grows).
    pub fn with_capacity(capacity: usize) -> PageQueue {
        PageQueue { pages: VecDeque::with_capacity(capacity), done: Vec::with_capacity(capacity) }
    }

    /// A transporter finished writing `page`.
    pub fn finish(&mut self, page: Page) {
        self.done.push(page);
    }

    /// A page that was written whole, if any.
    pub fn take_done(&mut self) -> Option<Page> {
        self.done.pop()
    }

    /// Appends a packed page.
    pub fn push(&mut self, page: Page) {
        debug_assert!(!page.is_empty());
        self.pages.push_back(page);
    }

    /// The oldest page.
    pub fn front(&self) -> Option<&Page> {
        self.pages.front()
    }

    /// Takes the oldest page.
    pub fn pop(&mut self) -> Option<Page> {
        self.pages.pop_front()
    }

    /// Puts a page back at the front (it was written in part).
    pub fn push_front(&mut self, page: Page) {
        self.pages.push_front(page);
    }

    /// The queued pages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Page> {
        self.pages.iter()
    }

    /// Whether no page is queued.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Pages queued.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Drops every queued page back into `pool`: returns the signals dropped.
    pub fn discard(&mut self, pool: &PagePool) -> usize {
        while let Some(page) = self.done.pop() {
            pool.give(page);
        }
        let mut signals = 0;
        while let Some(page) = self.pages.pop_front() {
            signals += page.signals;
            pool.sub_queued(page.unsent().len());
            pool.give(page);
        }
        signals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_cut_mid_write_counts_its_whole_signals_sent_and_the_rest_dropped() {
        use signals::{gsn, BatchWriter, BlockInstance, BlockNumber, BlockRef, NodeId, Signal};
        let pool = Arc::new(PagePool::new(4, 256));
        let counters = Arc::new(LinkCounters::default());
        let mut page = pool.take().unwrap();
        let me = BlockRef::new(NodeId::MIN, BlockNumber(1), BlockInstance(0));
        let mut w = BatchWriter::new(page.words_mut(), Default::default(), Default::default());
        let mut ends = Vec::new();
        for words in [1usize, 2, 3] {
            let data = vec![9u32; words];
            w.push(&Signal::new(gsn::PING_REQ, me, me).data(&data)).unwrap();
            ends.push(w.len_bytes());
        }
        page.len_words = w.len_bytes() / 4;
        page.signals = 3;
        pool.add_queued(page.len_words * 4);
        // Nothing written, all of it, or every signal boundary: the whole signals before it.
        for (sent, whole) in [(0, 0), (ends[0], 1), (ends[1], 2), (ends[2], 3)] {
            page.sent_bytes = sent;
            assert_eq!(page.written_signals(), whole, "{sent} bytes written");
        }
        // The write went past the first signal and cut the second.
        page.sent_bytes = ends[0] + 4;
        assert_eq!(page.written_signals(), 1);
        let unsent = page.unsent().len();
        let mut slot = UnsentPage::new(pool.clone(), counters.clone());
        *slot = Some(page);
        assert_eq!(slot.discard(), 2);
        assert_eq!(counters.snapshot().signals_sent, 1);
        // Its unsent bytes left the queued count (what was written, the writer took off).
        assert_eq!(pool.queued_bytes(), ends[2] - unsent);
    }

    #[test]
    fn pool_hands_out_every_page_once_and_levels_follow_the_budget() {
        let pool = PagePool::new(10, 256); // 10 KiB
        let pages: Vec<Page> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(pages.len(), 10);
        assert!(pool.take().is_none());
        for p in pages {
            pool.give(p);
        }
        assert_eq!(pool.level(), SendLevel::Normal);
        pool.add_queued(10240 / 10 * 8 / 10 * 6);
        assert_eq!(pool.level(), SendLevel::Slowdown);
        pool.add_queued(10240);
        assert_eq!(pool.level(), SendLevel::Overload);
        pool.sub_queued(10240);
        assert_eq!(pool.level(), SendLevel::Slowdown);
    }
}
