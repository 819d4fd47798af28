//! The two halves of an RDMA link (see the protocol in `mod.rs`).
//!
//! [`RdmaSender`] copies whole signals into the staging mirror of the peer's ring and posts one
//! chain per `send`: the credit word when it is due (piggybacked), then one WRITE WITH IMMEDIATE
//! per contiguous run (two when the lap wraps). It stops, and says blocked, when the peer's ring
//! space or receive requests (its credits) or the send queue run out.
//!
//! [`RdmaReceiver`] takes receive completions in order; each one's immediate says how many bytes
//! arrived at its ring position (after skipping the rest of the lap when flagged). Everything
//! the peer controls is untrusted: an immediate that is not whole words, shorter than a signal
//! or past the end of the lap, a completion of the wrong kind, or a malformed batch closes the
//! link; the data is copied out of the ring (which the peer can write at any time) before it is
//! walked. One poll takes a bounded number of completions.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use signals::{Limits, SignalView};
use verbs::{Wc, Write, MAX_CHAIN, WC_IMM, WRITE_IMM, WRITE_INLINE, WRITE_SIGNALED};

use super::setup::{RdmaLink, SetupMessage};
use super::{Credit, Imm, CONTROL_RESERVE, REPOST_BATCH, SIGNAL_EVERY};
use crate::counters::LinkCounters;
use crate::pages::{Page, PagePool, PageQueue, UnsentPage};
use crate::{LinkError, LinkReceiver, LinkSender, PollProgress, SendProgress};

/// `IBV_WC_RECV_RDMA_WITH_IMM`.
const RECV_RDMA_WITH_IMM: u32 = 129;
/// Completions taken per poll call, and at most this many calls per `poll`.
const POLL_BATCH: usize = 32;
const POLLS_PER_CALL: usize = 4;

/// What both halves share: the verbs objects (the endpoint first, so it is destroyed before the
/// memory the NIC writes), and the send queue's bookkeeping.
#[derive(Debug)]
struct Shared {
    link: RdmaLink,
    /// The newest credit word this side's receiver wants the peer to have.
    credit_due: AtomicU64,
    /// A copy of `PostState::credit_sent`, so the receiver can see without the lock that no
    /// credit-only write is due (it is never ahead of the real one).
    credit_sent_hint: AtomicU64,
    post: Mutex<PostState>,
    counters: Arc<LinkCounters>,
}

/// The send queue, used by the sender (data) and the receiver (credit-only writes).
#[derive(Debug)]
struct PostState {
    /// Work requests posted and not yet known complete.
    outstanding: u32,
    /// Work requests posted since the last signalled one.
    unsignaled: u32,
    /// The credit word last written to the peer.
    credit_sent: u64,
    depth: u32,
    /// Signalled requests posted and not yet completed.
    signaled: u32,
    /// When the send queue last made progress (a completion, or the first signalled request
    /// after none was pending).
    progress_at: Instant,
    /// Where send completions are polled into (kept, so a reap zeroes nothing).
    wcs: [Wc; 16],
}

/// Longest a signalled request may wait for its completion. The NIC retries an
/// unacknowledged packet for about half a second (`setup.rs`) and then completes it in error;
/// a send queue with no completion at all for this long means the peer's NIC stopped answering
/// without saying so (soft-RoCE does this for a peer queue pair in the error state), and the
/// link fails instead of stalling until a heartbeat notices.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

fn rdma_err(what: &str, e: impl std::fmt::Display) -> LinkError {
    LinkError::Rdma(format!("{what}: {e}"))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PostState> {
        self.post.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes send completions: frees send-queue slots, and fails on any error completion.
    fn reap(&self, st: &mut PostState) -> Result<usize, LinkError> {
        let mut taken = 0;
        loop {
            let n = (self.link.endpoint.poll_send(&mut st.wcs))
                .map_err(|e| rdma_err("poll send CQ", e))?;
            for wc in &st.wcs[..n] {
                if wc.status != 0 {
                    return Err(LinkError::Rdma(format!(
                        "send completion failed: {} (status {})",
                        verbs::status_str(wc.status),
                        wc.status
                    )));
                }
                let covered = u32::try_from(wc.wr_id).unwrap_or(u32::MAX);
                assert!(covered <= st.outstanding, "a completion covers more than was posted");
                st.outstanding -= covered;
                st.signaled = st.signaled.saturating_sub(1);
            }
            if n > 0 {
                st.progress_at = Instant::now();
            }
            LinkCounters::add(&self.counters.rdma_send_completions, n as u64);
            taken += n;
            if n < st.wcs.len() {
                return Ok(taken);
            }
        }
    }

    /// Whether `n` more work requests fit, keeping `reserve` slots free; reaps when short.
    fn room(&self, st: &mut PostState, n: u32, reserve: u32) -> Result<bool, LinkError> {
        if st.outstanding + n + reserve > st.depth {
            self.reap(st)?;
        }
        Ok(st.outstanding + n + reserve <= st.depth)
    }

    /// Whether the credit word `due` is far enough ahead of `sent` to ride along with data: an
    /// eighth of the ring or of the receive queue. Smaller amounts wait, so a ping-pong does not
    /// pay a second write (and its acknowledgement) per message.
    fn worth_piggybacking(&self, due: u64, sent: u64) -> bool {
        let (due, sent) = (Credit::decode(due), Credit::decode(sent));
        let bytes = due.consumed.wrapping_sub(sent.consumed) as usize;
        let requests = due.posted.wrapping_sub(sent.posted);
        bytes >= self.link.ring_bytes / 8 || requests >= self.link.recv_depth / 8
    }

    /// The credit write of `word` (inline: the value is copied when posted).
    fn credit_write(&self, word: u64) -> Write {
        let at = self.link.peer.ring_bytes as usize;
        let slot = self.link.staging.as_ptr().wrapping_add(at).cast::<AtomicU64>();
        // SAFETY: the staging region is the peer ring's size plus a 64-byte credit line, so
        // `slot` is in it and 8-aligned (the mapping is page-aligned, `at` a power of two); only
        // this side writes it, under the post lock; the NIC reads it.
        unsafe { (*slot).store(word, Ordering::Release) };
        Write {
            wr_id: 0,
            local_addr: self.link.staging.addr() + at as u64,
            remote_addr: self.link.peer.credit_addr,
            length: 8,
            lkey: self.link.staging.lkey(),
            rkey: self.link.peer.ring_rkey,
            imm: 0,
            flags: if self.link.endpoint.max_inline() >= 8 { WRITE_INLINE } else { 0 },
            pad: 0,
        }
    }

    /// Posts `writes` as one chain, signalling the last one every [`SIGNAL_EVERY`] requests.
    fn post(&self, st: &mut PostState, writes: &mut [Write]) -> Result<(), LinkError> {
        let n = writes.len() as u32;
        debug_assert!(st.outstanding + n <= st.depth);
        if st.unsignaled + n >= SIGNAL_EVERY {
            let last = writes.last_mut().unwrap_or_else(|| unreachable!("posting nothing"));
            last.flags |= WRITE_SIGNALED;
            last.wr_id = u64::from(st.unsignaled + n);
            st.unsignaled = 0;
            if st.signaled == 0 {
                st.progress_at = Instant::now();
            }
            st.signaled += 1;
        } else {
            st.unsignaled += n;
        }
        // SAFETY: every local span is in the staging region (registered, alive as long as the
        // endpoint, since both are in `self.link`), or inline.
        unsafe { self.link.endpoint.post_writes(writes) }.map_err(|e| rdma_err("post", e))?;
        st.outstanding += n;
        LinkCounters::add(&self.counters.rdma_posts, 1);
        Ok(())
    }
}

/// Makes the halves of a set-up link.
pub(crate) fn split(
    link: RdmaLink,
    socket: TcpStream,
    pool: Arc<PagePool>,
    counters: Arc<LinkCounters>,
    limits: Limits,
) -> io::Result<(RdmaSender, RdmaReceiver)> {
    socket.set_nonblocking(true)?;
    let own_ring = link.ring_bytes;
    let recv_depth = link.recv_depth;
    let peer = link.peer;
    let send_depth = link.send_depth;
    let shared = Arc::new(Shared {
        credit_due: AtomicU64::new(Credit { consumed: 0, posted: recv_depth }.encode()),
        credit_sent_hint: AtomicU64::new(Credit { consumed: 0, posted: recv_depth }.encode()),
        post: Mutex::new(PostState {
            outstanding: 0,
            unsignaled: 0,
            credit_sent: Credit { consumed: 0, posted: recv_depth }.encode(),
            depth: send_depth,
            signaled: 0,
            progress_at: Instant::now(),
            wcs: [Wc::default(); 16],
        }),
        link,
        counters: counters.clone(),
    });
    let sender = RdmaSender {
        shared: shared.clone(),
        peer,
        cur: Cursor::default(),
        stalled: false,
        counters: counters.clone(),
        pending: UnsentPage::new(pool, counters.clone()),
        chain: Box::new(Chain::new()),
        writes: Box::new([Write::default(); MAX_CHAIN]),
    };
    let receiver = RdmaReceiver {
        shared,
        position: 0,
        completed: 0,
        posted: u64::from(recv_depth),
        limits,
        counters,
        socket,
        scratch: vec![0u32; own_ring / 4].into_boxed_slice(),
        wcs: Box::new([Wc::default(); POLL_BATCH]),
        stashed: 0,
        armed: false,
    };
    Ok((sender, receiver))
}

/// The sending half.
#[derive(Debug)]
pub struct RdmaSender {
    shared: Arc<Shared>,
    peer: SetupMessage,
    cur: Cursor,
    /// Blocked on credits at the last call (a stall is counted once).
    stalled: bool,
    counters: Arc<LinkCounters>,
    pending: UnsentPage,
    /// The runs and work requests of one `send`, kept between calls so a send zeroes nothing
    /// (under an emulated CPU a per-call memset of these was a visible part of a round trip).
    chain: Box<Chain>,
    writes: Box<[Write; MAX_CHAIN]>,
}

/// Where the sender is in the peer's ring (its own state, apart from what it shares with the
/// receiving half, so a `send` can hold the post lock while it copies).
#[derive(Debug, Default)]
struct Cursor {
    /// Bytes of the peer's ring ever used (data and lap skips).
    position: u64,
    /// WRITE WITH IMMEDIATEs ever posted (each uses one of the peer's receive requests).
    writes: u64,
    /// The rest of the last lap was skipped: the next data write says so.
    wrap_next: bool,
}

/// The space and receive requests the peer's last credit word grants.
struct Grant {
    free: u64,
    slots: u32,
}

impl Cursor {
    fn grant(&self, shared: &Shared, peer: &SetupMessage) -> Result<Grant, LinkError> {
        let at = shared.link.ring_bytes;
        let word = shared.link.ring.as_ptr().wrapping_add(at).cast::<AtomicU64>();
        // SAFETY: our ring region is the ring plus a 64-byte credit line; `word` is in it and
        // 8-aligned. The peer's NIC writes it as one aligned 8-byte unit (see mod.rs).
        let c = Credit::decode(unsafe { (*word).load(Ordering::Acquire) });
        let size = u64::from(peer.ring_bytes);
        let used = u64::from((self.position as u32).wrapping_sub(c.consumed));
        if used > size {
            return Err(LinkError::Corrupt(format!(
                "peer's credit says {} ring bytes consumed, {used} behind our {} (ring {size})",
                c.consumed, self.position as u32
            )));
        }
        let slots = c.posted.wrapping_sub(self.writes as u32);
        if slots > peer.recv_depth {
            return Err(LinkError::Corrupt(format!(
                "peer's credit says {} receive requests posted, {slots} more than our {} writes (depth {})",
                c.posted, self.writes as u32, peer.recv_depth
            )));
        }
        Ok(Grant { free: size - used, slots })
    }

    fn stage(shared: &Shared, peer: &SetupMessage, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= peer.ring_bytes as usize);
        // SAFETY: the span is inside the staging mirror (checked) and in space the peer has
        // consumed (granted), so no write of ours still reads it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                shared.link.staging.as_ptr().add(offset),
                bytes.len(),
            )
        };
    }

    fn data_write(
        shared: &Shared,
        peer: &SetupMessage,
        offset: usize,
        len: usize,
        wrapped: bool,
    ) -> Write {
        let inline = len <= shared.link.endpoint.max_inline() as usize;
        Write {
            wr_id: 0,
            local_addr: shared.link.staging.addr() + offset as u64,
            remote_addr: peer.ring_addr + offset as u64,
            length: len as u32,
            lkey: shared.link.staging.lkey(),
            rkey: peer.ring_rkey,
            imm: Imm { wrapped, len: len as u32 }.encode(),
            flags: WRITE_IMM | if inline { WRITE_INLINE } else { 0 },
            pad: 0,
        }
    }

    /// Copies whole signals from `page` into the mirror; extends or opens data writes in
    /// `chain`. Returns (bytes copied, blocked).
    fn copy_page(
        &mut self,
        shared: &Shared,
        peer: &SetupMessage,
        page: &mut Page,
        g: &mut Grant,
        chain: &mut Chain,
    ) -> (usize, bool) {
        let size = u64::from(peer.ring_bytes);
        let mut copied = 0;
        loop {
            let bytes = page.unsent();
            if bytes.is_empty() {
                return (copied, false);
            }
            // The ring size is a power of two (checked in the handshake): a mask, not a division.
            let offset = (self.position & (size - 1)) as usize;
            let lap_rest = size - offset as u64;
            let room = lap_rest.min(g.free) as usize;
            let (take, first) = page.unsent_within(room);
            if take == 0 {
                let first = first as u64;
                if lap_rest < first && g.free >= lap_rest {
                    // Skip the rest of the lap; the next write starts the new one.
                    chain.close();
                    self.position += lap_rest;
                    g.free -= lap_rest;
                    self.wrap_next = true;
                    continue;
                }
                return (copied, true);
            }
            if !chain.extends(offset) {
                if g.slots == 0 || !chain.has_room() {
                    return (copied, true);
                }
                g.slots -= 1;
                chain.open(offset, self.wrap_next);
                self.wrap_next = false;
            }
            Cursor::stage(shared, peer, offset, &bytes[..take]);
            chain.grow(take);
            self.position += take as u64;
            g.free -= take as u64;
            page.sent_bytes += take;
            copied += take;
        }
    }
}

/// The data writes one `send` builds: contiguous runs in the mirror.
#[derive(Debug)]
struct Chain {
    runs: [(usize, usize, bool); MAX_CHAIN - 1],
    len: usize,
    open: bool,
    max: usize,
}

impl Chain {
    fn new() -> Chain {
        Chain { runs: [(0, 0, false); MAX_CHAIN - 1], len: 0, open: false, max: 0 }
    }

    /// Empties the chain for a send that may post up to `max` data writes.
    fn reset(&mut self, max: usize) {
        self.len = 0;
        self.open = false;
        self.max = max.min(MAX_CHAIN - 1);
    }

    /// Whether a run is open and ends at `offset`.
    fn extends(&self, offset: usize) -> bool {
        self.open && {
            let (start, len, _) = self.runs[self.len - 1];
            start + len == offset
        }
    }

    fn has_room(&self) -> bool {
        self.len < self.max
    }

    fn open(&mut self, offset: usize, wrapped: bool) {
        debug_assert!(self.has_room());
        self.runs[self.len] = (offset, 0, wrapped);
        self.len += 1;
        self.open = true;
    }

    fn grow(&mut self, bytes: usize) {
        self.runs[self.len - 1].1 += bytes;
    }

    fn close(&mut self) {
        self.open = false;
    }
}

impl LinkSender for RdmaSender {
    fn send(&mut self, queue: &mut PageQueue) -> Result<SendProgress, LinkError> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        // Completions come one per SIGNAL_EVERY requests; look for them only when one is due
        // (an error completes every request, so a failure is still seen). A pending signalled
        // request means at least SIGNAL_EVERY are outstanding, so the silence check below sees
        // every one; it reads the clock only when no completion came.
        if st.outstanding >= SIGNAL_EVERY
            && shared.reap(&mut st)? == 0
            && st.signaled > 0
            && st.progress_at.elapsed() > ACK_TIMEOUT
        {
            return Err(LinkError::Rdma(format!(
                "no send completion for {ACK_TIMEOUT:?} with {} requests outstanding: the peer's NIC stopped acknowledging",
                st.outstanding
            )));
        }
        let mut progress = SendProgress::default();
        if self.pending.is_none() && queue.front().is_none() {
            return Ok(progress);
        }
        let mut g = self.cur.grant(shared, &self.peer)?;
        // Room for the data writes and a piggybacked credit write, keeping the reserve.
        let sq_free = st.depth.saturating_sub(st.outstanding + CONTROL_RESERVE + 1) as usize;
        let chain = &mut *self.chain;
        chain.reset(sq_free);
        let mut blocked = false;
        while let Some(mut page) = self.pending.take().or_else(|| queue.pop()) {
            let (copied, full) = self.cur.copy_page(shared, &self.peer, &mut page, &mut g, chain);
            progress.bytes += copied;
            if page.unsent().is_empty() {
                progress.signals += page.signals;
                queue.finish(page);
            } else {
                *self.pending = Some(page);
            }
            if full {
                blocked = true;
                break;
            }
        }
        if chain.len > 0 {
            let writes = &mut *self.writes;
            let mut n = 0;
            let due = shared.credit_due.load(Ordering::Acquire);
            if shared.worth_piggybacking(due, st.credit_sent) {
                writes[0] = shared.credit_write(due);
                st.credit_sent = due;
                shared.credit_sent_hint.store(due, Ordering::Relaxed);
                n = 1;
            }
            for &(offset, len, wrapped) in &chain.runs[..chain.len] {
                writes[n] = Cursor::data_write(shared, &self.peer, offset, len, wrapped);
                n += 1;
            }
            shared.post(&mut st, &mut writes[..n])?;
            self.cur.writes += chain.len as u64;
            LinkCounters::add_owned(&self.counters.batches_sent, chain.len as u64);
            LinkCounters::add_owned(&self.counters.bytes_sent, progress.bytes as u64);
            LinkCounters::add_owned(&self.counters.signals_sent, progress.signals as u64);
        }
        if blocked && !self.stalled {
            LinkCounters::add(&self.counters.credit_stalls, 1);
        }
        self.stalled = blocked;
        progress.blocked = blocked;
        Ok(progress)
    }

    fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn discard_pending(&mut self) -> usize {
        self.pending.discard()
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct RdmaReceiver {
    shared: Arc<Shared>,
    /// Bytes of our ring ever consumed (data and lap skips).
    position: u64,
    /// Receive completions ever taken.
    completed: u64,
    /// Receive requests ever posted.
    posted: u64,
    limits: Limits,
    counters: Arc<LinkCounters>,
    /// The handshake socket, kept open for the link's life: its hang-up is the peer's death.
    socket: TcpStream,
    /// Where a write's data is copied before it is walked (a whole ring).
    scratch: Box<[u32]>,
    /// Where completions are polled to (kept, so a spinning poll writes no fresh array).
    wcs: Box<[Wc; POLL_BATCH]>,
    /// Completions the poll after arming left in `wcs`, handled by the next `poll`.
    stashed: usize,
    armed: bool,
}

impl RdmaReceiver {
    /// Moves the queue pair to the error state, as a fatal device error would: every posted
    /// request completes flushed and the link fails at the next poll. For fault tests.
    pub fn force_queue_pair_error(&self) -> Result<(), LinkError> {
        self.shared.link.endpoint.to_error().map_err(|e| rdma_err("force QP error", e))
    }

    /// Handles one receive completion: the data of one write. Returns (signals, data bytes).
    fn take(
        &mut self,
        wc: &Wc,
        deliver: &mut dyn FnMut(SignalView<'_>),
    ) -> Result<(usize, usize), LinkError> {
        if wc.status != 0 {
            return Err(LinkError::Rdma(format!(
                "receive completion failed: {} (status {})",
                verbs::status_str(wc.status),
                wc.status
            )));
        }
        if wc.opcode != RECV_RDMA_WITH_IMM || wc.flags & WC_IMM == 0 {
            return Err(LinkError::Corrupt(format!(
                "receive completion of opcode {} (flags {}), not a write with immediate",
                wc.opcode, wc.flags
            )));
        }
        let size = self.shared.link.ring_bytes as u64;
        let imm = Imm::decode(wc.imm);
        let mut offset = self.position & (size - 1);
        if imm.wrapped {
            if offset == 0 {
                return Err(LinkError::Corrupt(format!(
                    "write at ring position {} says it wrapped, but it is at a lap start",
                    self.position
                )));
            }
            self.position += size - offset;
            offset = 0;
        }
        let len = imm.len as usize;
        if len % 4 != 0
            || len < signals::HEADER_BYTES
            || offset + len as u64 > size
            || wc.byte_len != imm.len
        {
            return Err(LinkError::Corrupt(format!(
                "write at ring position {} says {len} bytes (completion: {}): not whole words, shorter than a signal, or past the end of the lap ({} bytes left)",
                self.position,
                wc.byte_len,
                size - offset
            )));
        }
        let copy = &mut self.scratch[..len / 4];
        // SAFETY: the span lies in our ring (checked above); `copy` is our own buffer of `len`
        // bytes. The peer may write the ring at any time: it can only change the values copied.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.shared.link.ring.as_ptr().add(offset as usize),
                copy.as_mut_ptr().cast::<u8>(),
                len,
            )
        };
        let bytes: &[u8] = bytemuck::cast_slice(copy);
        let at = self.position;
        let place = || format!("write at ring position {at}");
        let signals = crate::deliver_batch(bytes, self.limits, &place, deliver)?;
        self.position += len as u64;
        self.completed += 1;
        Ok((signals, len))
    }

    /// Re-posts used receive requests in batches, and sends the credit word alone when half
    /// the ring or half the receive queue is unreported (otherwise the sender piggybacks it).
    fn give_back(&mut self) -> Result<(), LinkError> {
        let depth = u64::from(self.shared.link.recv_depth);
        let used = depth - (self.posted - self.completed);
        if used >= u64::from(REPOST_BATCH) {
            self.shared
                .link
                .endpoint
                .post_recvs(self.posted, used as u32)
                .map_err(|e| rdma_err("post receives", e))?;
            self.posted += used;
            LinkCounters::add(&self.counters.recv_reposts, used);
        }
        let word = Credit { consumed: self.position as u32, posted: self.posted as u32 };
        self.shared.credit_due.store(word.encode(), Ordering::Release);
        let due = |sent: u64| {
            let sent = Credit::decode(sent);
            let bytes = word.consumed.wrapping_sub(sent.consumed) as usize;
            let requests = word.posted.wrapping_sub(sent.posted);
            bytes >= self.shared.link.ring_bytes / 2 || u64::from(requests) >= depth / 2
        };
        // The hint lags the real value, so "not due" by the hint is "not due": no lock needed.
        if !due(self.shared.credit_sent_hint.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let mut st = self.shared.lock();
        if !due(st.credit_sent) {
            return Ok(());
        }
        let shared = self.shared.clone();
        let mut spins = 0u32;
        while !shared.room(&mut st, 1, 0)? {
            spins += 1;
            if spins > 1_000_000 {
                return Err(LinkError::Rdma("send queue stays full: no completions".into()));
            }
            std::hint::spin_loop();
        }
        let mut w = [shared.credit_write(word.encode())];
        shared.post(&mut st, &mut w)?;
        st.credit_sent = word.encode();
        shared.credit_sent_hint.store(word.encode(), Ordering::Relaxed);
        LinkCounters::add(&self.counters.credit_messages, 1);
        Ok(())
    }
}

impl LinkReceiver for RdmaReceiver {
    fn poll(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<PollProgress, LinkError> {
        self.armed = false;
        let start = self.position;
        let mut progress = PollProgress::default();
        for _ in 0..POLLS_PER_CALL {
            let n = if self.stashed == 0 {
                self.shared
                    .link
                    .endpoint
                    .poll_recv(&mut self.wcs[..])
                    .map_err(|e| rdma_err("poll receive CQ", e))?
            } else {
                std::mem::take(&mut self.stashed)
            };
            for i in 0..n {
                let wc = self.wcs[i];
                let (signals, bytes) = self.take(&wc, deliver)?;
                progress.signals += signals;
                progress.bytes += bytes;
            }
            if n > 0 {
                LinkCounters::add_owned(&self.counters.batches_received, n as u64);
            }
            if n < POLL_BATCH {
                break;
            }
        }
        if self.position == start {
            return Ok(progress);
        }
        LinkCounters::add_owned(&self.counters.bytes_received, progress.bytes as u64);
        LinkCounters::add_owned(&self.counters.signals_received, progress.signals as u64);
        self.give_back()?;
        Ok(progress)
    }

    fn raw_fd(&self) -> RawFd {
        self.shared.link.endpoint.channel_fd()
    }

    fn death_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }

    fn needs_polling(&self) -> bool {
        true
    }

    fn check_alive(&mut self) -> Result<(), LinkError> {
        let events =
            self.shared.link.endpoint.take_events().map_err(|e| rdma_err("CQ events", e))?;
        LinkCounters::add(&self.counters.cq_events, u64::from(events));
        crate::peer_alive(&self.socket)
    }

    fn arm(&mut self) -> Result<bool, LinkError> {
        if self.stashed > 0 {
            return Ok(false);
        }
        self.shared.link.endpoint.arm_recv().map_err(|e| rdma_err("arm receive CQ", e))?;
        // The arm race: a completion that landed before the arm raises no event; look again.
        let n = self
            .shared
            .link
            .endpoint
            .poll_recv(&mut self.wcs[..])
            .map_err(|e| rdma_err("poll receive CQ", e))?;
        if n > 0 {
            self.stashed = n;
            return Ok(false);
        }
        self.armed = true;
        Ok(true)
    }
}
