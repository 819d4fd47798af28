//! One sending thread's send buffers: a page queue per peer that signals are packed into during
//! a round, and `flush`, which hands each peer's queue to its link at the end of the round (one
//! write per peer per round: this is where batching happens).
//!
//! Back-pressure is visible, never silent: a signal to a peer whose queued bytes are over the
//! overload mark gets [`SendError::Overloaded`] and is counted (priority A signals, the few
//! that keep a cluster together such as heartbeats, may use the pages above the mark, and are
//! refused only when none is free); a signal to a peer without a live
//! link gets [`SendError::NotConnected`]. Pages packed for one connection are never sent on a
//! later one: when the link's generation changes they are dropped and counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use signals::{BatchWriter, NodeId, PackError, Priority, Signal, WriteOptions};

use crate::counters::LinkCounters;
use crate::pages::{Page, PagePool, PageQueue, SendLevel};
use crate::registry::{Inner, Link, LinkState};
use crate::LinkSender;

/// Why a signal was not queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No link to that node is configured.
    #[error("no link to node {0} is configured")]
    UnknownPeer(NodeId),
    /// The link is not up.
    #[error("link to node {0} is not connected")]
    NotConnected(NodeId),
    /// The peer's send buffers are over the overload mark.
    #[error("send buffers to node {peer} are overloaded ({queued_bytes} bytes queued, mark {limit_bytes})")]
    Overloaded { peer: NodeId, queued_bytes: usize, limit_bytes: usize },
    /// The signal itself is invalid or larger than a page.
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Bytes written.
    pub bytes: usize,
    /// Signals whose last byte was written.
    pub signals: usize,
    /// Signals dropped because their link was down or failed.
    pub dropped: usize,
    /// Some peer took less than offered: flush again later.
    pub blocked: bool,
    /// Peers whose link was handed a batch.
    pub peers: usize,
}

pub(crate) struct PeerQueue {
    pub(crate) queue: PageQueue,
    open: Option<Page>,
    pub(crate) generation: u64,
    /// The link's sender kept part of a page from our last flush: flush again to finish it.
    pub(crate) sender_pending: bool,
}

impl FlushReport {
    fn add(&mut self, progress: &crate::SendProgress) {
        self.bytes += progress.bytes;
        self.signals += progress.signals;
        self.dropped += progress.dropped;
        self.blocked |= progress.blocked;
    }
}

/// A queue for each configured peer of `inner`, indexed by node id.
pub(crate) fn peer_queues(inner: &Inner) -> Vec<Option<PeerQueue>> {
    (0..=255u32)
        .map(|n| {
            let link = NodeId::new(n).and_then(|id| inner.link(id))?;
            Some(PeerQueue::new(link.pool.pages()))
        })
        .collect()
}

/// Send buffers of one thread.
pub struct SendBuffers {
    inner: Arc<Inner>,
    peers: Vec<Option<PeerQueue>>,
    /// Slots of configured peers, so a flush visits only those.
    configured: Vec<usize>,
}

impl std::fmt::Debug for SendBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBuffers").field("node", &self.inner.config.node).finish()
    }
}

impl SendBuffers {
    pub(crate) fn new(inner: Arc<Inner>) -> SendBuffers {
        let peers = peer_queues(&inner);
        let configured =
            peers.iter().enumerate().filter(|(_, p)| p.is_some()).map(|(slot, _)| slot).collect();
        SendBuffers { inner, peers, configured }
    }

    /// Packs `signal` for `peer`; it is written at the next `flush`.
    pub fn pack(&mut self, peer: NodeId, signal: &Signal<'_>) -> Result<(), SendError> {
        let inner = &self.inner;
        let link = inner.link(peer).ok_or(SendError::UnknownPeer(peer))?;
        let Some(pq) = self.peers[peer.get() as usize].as_mut() else {
            return Err(SendError::UnknownPeer(peer));
        };
        // The generation first, then the state: a link that reconnects in between raises its
        // generation before it says Connected, so a signal is packed for the connection that was
        // up when it was accepted (an older one's pages are dropped and counted at the write),
        // never for one whose Connected has not been seen yet.
        let generation = link.generation.load(Ordering::Acquire);
        if link.state() != LinkState::Connected {
            return Err(SendError::NotConnected(peer));
        }
        if pq.generation != generation {
            let dropped = discard(pq, &link.pool);
            LinkCounters::add(&link.counters.signals_dropped, dropped as u64);
            pq.generation = generation;
        }
        let overloaded = || {
            LinkCounters::add(&link.counters.overload_refusals, 1);
            SendError::Overloaded {
                peer,
                queued_bytes: link.pool.queued_bytes(),
                limit_bytes: link.pool.overload_bytes(),
            }
        };
        if link.pool.level() == SendLevel::Overload && signal.priority == Priority::B {
            return Err(overloaded());
        }
        let options = WriteOptions::default();
        for attempt in 0..2 {
            if pq.open.is_none() {
                pq.open = Some(link.pool.take().ok_or_else(overloaded)?);
            }
            let Some(page) = pq.open.as_mut() else { unreachable!("an open page was just set") };
            let before = page.len_words;
            let mut writer =
                BatchWriter::resume(page.words_mut(), before, inner.config.limits, options);
            match writer.push(signal) {
                Ok(()) => {
                    // The open page is this thread's own: its bytes count as queued on the link
                    // when it is closed (full, or at the flush), not per signal.
                    page.len_words = writer.len_bytes() / 4;
                    page.signals += 1;
                    return Ok(());
                }
                Err(PackError::DoesNotFit { .. }) if attempt == 0 && before > 0 => {
                    if let Some(full) = pq.open.take() {
                        count_queued(link, full.len_words * 4);
                        pq.queue.push(full);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("a signal within the limits fits an empty page (page_bytes >= largest signal)")
    }

    /// How full the send buffers to `peer` are.
    pub fn level(&self, peer: NodeId) -> Option<SendLevel> {
        self.inner.link(peer).map(|l| l.pool.level())
    }

    /// Bytes closed for `peer` and not yet written, over all threads (the figure the overload
    /// levels are read from; a thread's open page counts once it is closed).
    pub fn queued_bytes(&self, peer: NodeId) -> Option<usize> {
        self.inner.link(peer).map(|l| l.pool.queued_bytes())
    }

    /// Whether anything is packed and not yet written.
    pub fn has_unsent(&self) -> bool {
        // Only the configured peers' slots: a block thread asks this on every idle pass.
        self.configured.iter().filter_map(|&slot| self.peers[slot].as_ref()).any(|pq| {
            pq.sender_pending
                || !pq.queue.is_empty()
                || pq.open.as_ref().is_some_and(|p| !p.is_empty())
        })
    }

    /// Hands every peer's packed pages to its link.
    pub fn flush(&mut self) -> FlushReport {
        let mut report = FlushReport::default();
        let inner = &*self.inner;
        for &slot in &self.configured {
            let Some(pq) = self.peers[slot].as_mut() else { continue };
            flush_peer(inner, slot, pq, &mut report);
        }
        report
    }

    /// Sends `signal` to `peer` now: as [`SendBuffers::pack`] then a flush of that peer alone
    /// (what is packed for other peers waits for the next flush). When nothing packed for
    /// `peer` is waiting and its transport can, the signal is written straight into the
    /// transport, without a page (shared memory encodes it in the ring record itself): the
    /// path for a signal whose latency matters more than batching with the ones after it.
    pub fn send_now(
        &mut self,
        peer: NodeId,
        signal: &Signal<'_>,
    ) -> Result<FlushReport, SendError> {
        let inner = &*self.inner;
        let slot = peer.get() as usize;
        if let (None, Some(link), Some(Some(pq))) =
            (inner.handoff.as_ref(), inner.link(peer), self.peers.get_mut(slot))
        {
            if pq.queue.is_empty()
                && !pq.sender_pending
                && pq.open.as_ref().map_or(true, Page::is_empty)
                && link.pool.level() != SendLevel::Overload
            {
                if let Some(report) = write_signal(inner, peer, link, pq, signal) {
                    return Ok(report);
                }
            }
        }
        self.pack(peer, signal)?;
        let mut report = FlushReport::default();
        if let Some(pq) = self.peers[slot].as_mut() {
            flush_peer(&self.inner, slot, pq, &mut report);
        }
        Ok(report)
    }
}

/// Writes `signal` straight into the transport of `peer`'s connection, when that connection is
/// the one `pq` packs for and its transport takes signals so; `None`, having done nothing, when
/// not (the caller packs it). A transport error fails the link and drops the signal (counted).
#[inline]
fn write_signal(
    inner: &Inner,
    peer: NodeId,
    link: &Link,
    pq: &mut PeerQueue,
    signal: &Signal<'_>,
) -> Option<FlushReport> {
    let mut guard = inner.lock_sender(link);
    let live = guard.as_mut().filter(|live| live.generation == pq.generation)?;
    let result = live.sender.send_signal(signal, inner.config.limits, WriteOptions::default())?;
    let generation = live.generation;
    drop(guard);
    let mut report = FlushReport::default();
    match result {
        Ok(progress) => {
            report.peers = 1;
            report.add(&progress);
        }
        Err(e) => {
            LinkCounters::add(&link.counters.signals_dropped, 1);
            report.dropped = 1;
            write_failed(inner, peer, link, pq, &mut report, generation, e);
        }
    }
    Some(report)
}

/// Flushes the peer in `slot`: the common case inline (no send thread and nothing queued before
/// the open page, so the transport may take the page where it is; it stays the open page when
/// written whole; with nothing packed there is nothing to do), the rest out of line.
#[inline]
fn flush_peer(inner: &Inner, slot: usize, pq: &mut PeerQueue, report: &mut FlushReport) {
    if inner.handoff.is_none() && pq.queue.is_empty() && !pq.sender_pending {
        if !pq.open.as_ref().is_some_and(|p| !p.is_empty()) {
            return;
        }
        if write_open(inner, slot, pq, report) {
            return;
        }
    }
    flush_queue(inner, slot, pq, report);
}

/// Flushes the peer in `slot` through its page queue: a send thread's hand-off, a link that is
/// backed up, or a transport that takes pages only from its queue. Out of line of the common
/// case in [`SendBuffers::flush`].
#[inline(never)]
fn flush_queue(inner: &Inner, slot: usize, pq: &mut PeerQueue, report: &mut FlushReport) {
    let Some(peer) = NodeId::new(slot as u32) else { return };
    let Some(link) = inner.link(peer) else { return };
    // While the link is backed up (pages still queued, or its sender holding part of one),
    // keep filling the open page instead of closing a part-filled page every round: the pool is
    // sized in pages, and small rounds would empty it long before the byte budget says
    // overload. Order is kept: the open page goes out after the queue. With a send thread,
    // backed up means it has not yet taken the last hand-off.
    let backed_up = match inner.handoff.as_ref() {
        Some(handoff) => handoff.queued(peer) > 0,
        None => !pq.queue.is_empty() || pq.sender_pending,
    };
    // Bytes of the page closed here, not yet counted as queued on the link.
    let mut closed = 0;
    if !backed_up {
        if let Some(open) = pq.open.take_if(|p| !p.is_empty()) {
            closed = open.len_words * 4;
            pq.queue.push(open);
        }
    }
    if pq.queue.is_empty() && !pq.sender_pending {
        return;
    }
    report.peers += 1;
    if let Some(handoff) = inner.handoff.as_ref() {
        // A send thread writes: hand the pages over (counted as queued until written).
        count_queued(link, closed);
        handoff.push(peer, pq.generation, std::iter::from_fn(|| pq.queue.pop()));
        return;
    }
    write_peer(inner, peer, link, pq, report, true, closed);
}

/// Writes the open page of the peer in `slot` where it is (nothing is queued before it):
/// written whole, it stays the open page, emptied; a rest is queued (and counted) for the next
/// flush. Returns false, having done nothing, when the link's transport takes pages only
/// through its queue. A transport error or a connection that is gone drops and counts what is
/// packed, as [`write_peer`] does. Inline, with every path but a written page out of line.
#[inline]
fn write_open(inner: &Inner, slot: usize, pq: &mut PeerQueue, report: &mut FlushReport) -> bool {
    let Some(peer) = NodeId::new(slot as u32) else { return false };
    let Some(link) = inner.link(peer) else { return false };
    let Some(open) = pq.open.as_mut() else { return false };
    let mut guard = inner.lock_sender(link);
    let Some(live) = guard.as_mut().filter(|live| live.generation == pq.generation) else {
        // The connection this was packed for is gone.
        drop(guard);
        drop_packed(pq, link, report);
        report.peers += 1;
        return true;
    };
    match live.sender.send_page(open) {
        None => return false,
        Some(Ok(progress)) => {
            report.add(&progress);
            // A sender that failed after this progress reports it at the next call.
            pq.sender_pending = live.sender.has_pending();
        }
        Some(Err(e)) => {
            let generation = live.generation;
            drop(guard);
            write_failed(inner, peer, link, pq, report, generation, e);
            return true;
        }
    }
    drop(guard);
    report.peers += 1;
    if open.is_sent() {
        open.reset();
    } else {
        queue_rest(link, pq);
    }
    if link.state() != LinkState::Connected {
        // Failed while this was written: what is left of it goes with the connection.
        drop_packed(pq, link, report);
    }
    true
}

/// Queues (and counts) the rest of an open page its link took only part of.
#[cold]
#[inline(never)]
fn queue_rest(link: &Link, pq: &mut PeerQueue) {
    if let Some(rest) = pq.open.take() {
        count_queued(link, rest.unsent().len());
        pq.queue.push(rest);
    }
}

/// The write of an open page failed: fails the link, and drops what is packed for it.
#[cold]
#[inline(never)]
fn write_failed(
    inner: &Inner,
    peer: NodeId,
    link: &Link,
    pq: &mut PeerQueue,
    report: &mut FlushReport,
    generation: u64,
    e: crate::LinkError,
) {
    report.peers += 1;
    inner.fail(peer, generation, &e.to_string());
    if link.state() != LinkState::Connected {
        drop_packed(pq, link, report);
    }
}

/// Counts `bytes` of closed pages as queued on `link` (and its high-water mark).
fn count_queued(link: &Link, bytes: usize) {
    if bytes > 0 {
        let queued = link.pool.add_queued(bytes);
        link.counters.note_queued(queued as u64);
    }
}

/// Writes `pq`'s pages to `peer`'s link (one `send` call), returns written pages to the pool
/// (keeping one as the next open page when `reuse_open`), and fails the link on a transport
/// error; pages of a connection that is gone are dropped and counted.
///
/// The link's queued bytes drop by what was written. `uncounted` bytes at the end of the queue
/// were closed just now and never counted as queued: only what is left of them after the write
/// is, so a flush that writes everything at once touches the shared count not at all.
pub(crate) fn write_peer(
    inner: &Inner,
    peer: NodeId,
    link: &Link,
    pq: &mut PeerQueue,
    report: &mut FlushReport,
    reuse_open: bool,
    uncounted: usize,
) {
    let mut written = 0;
    let mut guard = inner.lock_sender(link);
    let failure = match guard.as_mut() {
        Some(live) if live.generation == pq.generation => match live.sender.send(&mut pq.queue) {
            Ok(progress) => {
                written = progress.bytes;
                report.add(&progress);
                pq.sender_pending = live.sender.has_pending();
                None
            }
            Err(e) => Some((live.generation, e.to_string())),
        },
        _ => None,
    };
    let live_generation = guard.as_ref().map(|l| l.generation);
    drop(guard);
    // Queued afterwards: the counted bytes, plus `uncounted`, less what was written.
    match written.cmp(&uncounted) {
        std::cmp::Ordering::Less => count_queued(link, uncounted - written),
        std::cmp::Ordering::Greater => link.pool.sub_queued(written - uncounted),
        std::cmp::Ordering::Equal => {}
    }
    while let Some(mut page) = pq.queue.take_done() {
        if reuse_open && pq.open.is_none() {
            page.reset();
            pq.open = Some(page);
        } else {
            link.pool.give(page);
        }
    }
    settle(inner, peer, link, pq, report, failure, live_generation);
}

/// After a write: fails the link on a transport error, and drops (and counts) what is packed
/// for `peer` when the connection it was packed for is gone. Inline, with the dropping out of
/// line: after nearly every write there is nothing to do.
#[inline]
fn settle(
    inner: &Inner,
    peer: NodeId,
    link: &Link,
    pq: &mut PeerQueue,
    report: &mut FlushReport,
    failure: Option<(u64, String)>,
    live_generation: Option<u64>,
) {
    if let Some((generation, reason)) = failure {
        inner.fail(peer, generation, &reason);
    }
    if live_generation != Some(pq.generation) || link.state() != LinkState::Connected {
        drop_packed(pq, link, report);
    }
}

/// Drops and counts what is packed for a connection that is gone.
#[cold]
#[inline(never)]
fn drop_packed(pq: &mut PeerQueue, link: &Link, report: &mut FlushReport) {
    let dropped = discard(pq, &link.pool);
    LinkCounters::add(&link.counters.signals_dropped, dropped as u64);
    report.dropped += dropped;
}

/// Drops everything queued for a link whose pages come from `pool`: returns the signals
/// dropped.
pub(crate) fn discard(pq: &mut PeerQueue, pool: &PagePool) -> usize {
    pq.sender_pending = false;
    let mut dropped = pq.queue.discard(pool);
    if let Some(open) = pq.open.take() {
        // An open page was never counted as queued.
        dropped += open.signals;
        pool.give(open);
    }
    dropped
}

impl PeerQueue {
    /// An empty queue for a link whose pool has `pages` pages.
    pub(crate) fn new(pages: usize) -> PeerQueue {
        PeerQueue {
            queue: PageQueue::with_capacity(pages),
            open: None,
            generation: 0,
            sender_pending: false,
        }
    }
}

/// Dropping send buffers drops (and counts) what was packed and never flushed.
impl Drop for SendBuffers {
    fn drop(&mut self) {
        for slot in 1..self.peers.len() {
            let Some(peer) = NodeId::new(slot as u32) else { continue };
            if let (Some(pq), Some(link)) = (self.peers[slot].as_mut(), self.inner.link(peer)) {
                let dropped = discard(pq, &link.pool);
                LinkCounters::add(&link.counters.signals_dropped, dropped as u64);
            }
        }
    }
}
