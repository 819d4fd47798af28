//! The optional send thread: block threads hand their filled send-buffer pages over at the end
//! of a round, and one thread writes them to the transports (NDB's send threads do this job, so
//! block threads never wait on a socket or a full ring).
//!
//! Hand-off ([`Handoff`]): one queue of pages per peer, each page tagged with the link
//! generation it was packed for; a pusher appends under that peer's lock, bumps a published
//! count, and wakes the send thread only if it is marked sleeping (the amortised protocol of
//! `shm::wake`, model-checked there: flag, fence, re-check on the sleeping side; publish, fence,
//! claim the flag on the waking side). Pages of one sending thread stay in order, so signals
//! from one block to another keep their order; threads interleave at page boundaries only.
//!
//! The thread ([`SendThread::run`]) takes the handed pages, writes each peer's queue through
//! the same path a block thread uses without a send thread (`send_buffers::write_peer`), returns
//! written pages to their pool, spins for its spin time while there is work or a backed-up link,
//! then sleeps on an eventfd. Pages packed for a connection that has since failed are dropped
//! and counted, never sent on the next connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signals::NodeId;

use crate::backoff::StallBackoff;
use crate::counters::LinkCounters;
use crate::pages::{Page, PagePool};
use crate::poller::EventFd;
use crate::registry::Inner;
use crate::send_buffers::{discard, write_peer, FlushReport, PeerQueue};
use crate::shm::wake;

/// Pages handed from block threads to the send thread, per peer.
pub(crate) struct Handoff {
    slots: Vec<Option<Slot>>,
    /// Hand-offs ever made (the sleeping side re-checks it after publishing "sleeping").
    published: AtomicU64,
    sleeping: AtomicU64,
    wake: EventFd,
}

struct Slot {
    pages: Mutex<VecDeque<(u64, Page)>>,
    /// Pages in `pages`, readable without the lock.
    len: AtomicUsize,
}

impl Handoff {
    /// A hand-off with a queue for each of `peers`.
    pub(crate) fn new(peers: impl Iterator<Item = NodeId>) -> std::io::Result<Handoff> {
        let mut slots: Vec<Option<Slot>> = (0..=255).map(|_| None).collect();
        for p in peers {
            slots[p.get() as usize] =
                Some(Slot { pages: Mutex::new(VecDeque::new()), len: AtomicUsize::new(0) });
        }
        Ok(Handoff {
            slots,
            published: AtomicU64::new(0),
            sleeping: AtomicU64::new(0),
            wake: EventFd::new()?,
        })
    }

    /// Pages handed for `peer` and not yet taken.
    pub(crate) fn queued(&self, peer: NodeId) -> usize {
        self.slots[peer.get() as usize].as_ref().map_or(0, |s| s.len.load(Ordering::Relaxed))
    }

    /// Hands `pages` (packed for `generation`) to the send thread; wakes it if it sleeps.
    pub(crate) fn push(&self, peer: NodeId, generation: u64, pages: impl Iterator<Item = Page>) {
        let Some(slot) = self.slots[peer.get() as usize].as_ref() else { return };
        {
            let mut q = slot.pages.lock().unwrap_or_else(|p| p.into_inner());
            q.extend(pages.map(|p| (generation, p)));
            slot.len.store(q.len(), Ordering::Relaxed);
        }
        // SYNC: handoff-publish. Release: the pages are in the queue before the count says so.
        self.published.fetch_add(1, Ordering::Release);
        if wake::should_wake(&self.sleeping) {
            self.wake.notify();
        }
    }

    fn take(&self, peer: usize, into: &mut VecDeque<(u64, Page)>) {
        let Some(slot) = self.slots[peer].as_ref() else { return };
        if slot.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut q = slot.pages.lock().unwrap_or_else(|p| p.into_inner());
        into.extend(q.drain(..));
        slot.len.store(0, Ordering::Relaxed);
    }
}

/// The send thread's state: its own queue per peer. Get it with
/// [`Registry::take_send_thread`](crate::Registry::take_send_thread).
pub struct SendThread {
    inner: Arc<Inner>,
    peers: Vec<Option<PeerQueue>>,
    configured: Vec<usize>,
    taken: VecDeque<(u64, Page)>,
    /// Sleeps taken and wakeups received, for statistics.
    pub sleeps: u64,
    /// Passes over the links made by [`SendThread::run`] (each tries every peer with pages).
    pub passes: u64,
}

impl std::fmt::Debug for SendThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendThread").field("node", &self.inner.config.node).finish()
    }
}

impl SendThread {
    pub(crate) fn new(inner: Arc<Inner>) -> SendThread {
        let peers = crate::send_buffers::peer_queues(&inner);
        let configured =
            peers.iter().enumerate().filter(|(_, p)| p.is_some()).map(|(slot, _)| slot).collect();
        SendThread { inner, peers, configured, taken: VecDeque::new(), sleeps: 0, passes: 0 }
    }

    /// One pass: takes handed pages and writes every peer's queue. Returns what was written
    /// and whether a link is backed up (work remains).
    pub fn pass(&mut self) -> FlushReport {
        let mut report = FlushReport::default();
        let Some(handoff) = self.inner.handoff.as_ref() else { return report };
        for &slot in &self.configured {
            let Some(peer) = NodeId::new(slot as u32) else { continue };
            let (Some(pq), Some(link)) = (self.peers[slot].as_mut(), self.inner.link(peer)) else {
                continue;
            };
            handoff.take(slot, &mut self.taken);
            for (generation, page) in self.taken.drain(..) {
                let dropped = adopt(pq, &link.pool, generation, page);
                if dropped > 0 {
                    LinkCounters::add(&link.counters.signals_dropped, dropped as u64);
                    report.dropped += dropped;
                }
            }
            if pq.queue.is_empty() && !pq.sender_pending {
                continue;
            }
            write_peer(&self.inner, peer, link, pq, &mut report, false, 0);
            report.blocked |= !pq.queue.is_empty() || pq.sender_pending;
        }
        report
    }

    /// Runs passes until `stop` says so: spins for `spin` after the last work, then sleeps
    /// until a block thread hands pages over (at most `max_sleep` at a time, so `stop` is seen).
    pub fn run(&mut self, spin: Duration, max_sleep: Duration, stop: &dyn Fn() -> bool) {
        let Some(handoff) = self.inner.handoff.clone() else { return };
        let mut idle_since = Instant::now();
        let mut stall = StallBackoff::default();
        while !stop() {
            // SYNC: handoff-publish (acquire side).
            let seen = handoff.published.load(Ordering::Acquire);
            let report = self.pass();
            self.passes += 1;
            stall.note(report.bytes > 0 || report.dropped > 0, report.blocked, Instant::now);
            if stall.is_stalled() {
                // The clock only while stalled: most passes pay nothing for the back-off.
                let now = Instant::now();
                let wait = stall.until_retry(now).unwrap_or_default();
                // Every peer with pages is stalled (a full ring, socket or credit window):
                // poll until a retry due soon, or sleep until a later one is due or a block
                // thread hands pages over (they may be for a peer that is not stalled).
                if stall.retry_soon(now) {
                    while !stall.due(Instant::now)
                        && handoff.published.load(Ordering::Acquire) == seen
                        && !stop()
                    {
                        std::thread::yield_now();
                    }
                } else if wake::prepare_sleep(&handoff.sleeping, || {
                    handoff.published.load(Ordering::Acquire) != seen
                }) {
                    self.sleeps += 1;
                    handoff.wake.wait(wait.min(max_sleep));
                    wake::woke(&handoff.sleeping);
                }
                idle_since = Instant::now();
                continue;
            }
            if report.peers > 0 || report.blocked {
                idle_since = Instant::now();
                continue;
            }
            if idle_since.elapsed() < spin {
                std::hint::spin_loop();
                continue;
            }
            let may_sleep = wake::prepare_sleep(&handoff.sleeping, || {
                handoff.published.load(Ordering::Acquire) != seen
            });
            if may_sleep {
                self.sleeps += 1;
                handoff.wake.wait(max_sleep);
                wake::woke(&handoff.sleeping);
            }
            idle_since = Instant::now();
        }
        // Last words: write what was handed over before the stop.
        let _ = self.pass();
    }
}

/// Queues a page handed over for connection `generation` of the peer whose pages come from
/// `pool`. Connections only get newer: a page packed for an older one than the queue's (a
/// thread that packed before a reconnect and flushed after another thread's pages for the new
/// connection) is dropped alone; a page for a newer one drops what the queue holds for the old.
/// Returns the signals dropped.
fn adopt(pq: &mut PeerQueue, pool: &PagePool, generation: u64, page: Page) -> usize {
    match generation.cmp(&pq.generation) {
        std::cmp::Ordering::Less => {
            let signals = page.signals;
            // Handed pages count as queued on the link until written or dropped.
            pool.sub_queued(page.unsent().len());
            pool.give(page);
            signals
        }
        std::cmp::Ordering::Greater => {
            let dropped = discard(pq, pool);
            pq.generation = generation;
            pq.queue.push(page);
            dropped
        }
        std::cmp::Ordering::Equal => {
            pq.queue.push(page);
            0
        }
    }
}

/// Dropping the send thread drops (and counts) what it was handed and never wrote.
impl Drop for SendThread {
    fn drop(&mut self) {
        for &slot in &self.configured {
            let Some(peer) = NodeId::new(slot as u32) else { continue };
            if let (Some(pq), Some(link)) = (self.peers[slot].as_mut(), self.inner.link(peer)) {
                if let Some(handoff) = self.inner.handoff.as_ref() {
                    handoff.take(slot, &mut self.taken);
                }
                for (_, page) in self.taken.drain(..) {
                    pq.queue.push(page);
                }
                let dropped = discard(pq, &link.pool);
                LinkCounters::add(&link.counters.signals_dropped, dropped as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page from `pool` holding `signals` signals in `words` words, counted as queued (as a
    /// handed-over page is).
    fn handed(pool: &PagePool, signals: usize, words: usize) -> Page {
        let mut page = pool.take().unwrap();
        page.words_mut()[..words].fill(7);
        page.len_words = words;
        page.signals = signals;
        pool.add_queued(words * 4);
        page
    }

    #[test]
    fn a_page_for_an_older_connection_is_dropped_alone() {
        let pool = PagePool::new(8, 256);
        let mut pq = PeerQueue::new(pool.pages());
        // Connection 2's pages arrive first (another thread flushed after the reconnect).
        assert_eq!(adopt(&mut pq, &pool, 2, handed(&pool, 3, 30)), 0);
        assert_eq!(adopt(&mut pq, &pool, 2, handed(&pool, 4, 40)), 0);
        // Then a thread that packed for connection 1 before it failed flushes: its page alone
        // goes; connection 2's pages stay queued, for connection 2.
        assert_eq!(adopt(&mut pq, &pool, 1, handed(&pool, 5, 50)), 5);
        assert_eq!(pq.generation, 2);
        assert_eq!(pq.queue.front().map(|p| p.signals), Some(3));
        assert_eq!(pool.queued_bytes(), 70 * 4, "the dropped page's bytes are no longer queued");
        // A newer connection's page drops what was queued for the older one.
        assert_eq!(adopt(&mut pq, &pool, 3, handed(&pool, 6, 60)), 7);
        assert_eq!(pq.generation, 3);
        assert_eq!(pq.queue.front().map(|p| p.signals), Some(6));
        assert_eq!(pool.queued_bytes(), 60 * 4);
    }
}
