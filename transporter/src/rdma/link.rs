//! The two halves of an RDMA link (see the protocol in `mod.rs`).
//!
//! [`RdmaSender`] copies whole signals into frames in the staging mirror of the peer's ring and
//! posts one chain per `send`: the credit word when it is due (piggybacked), then one RDMA
//! WRITE per frame (two when the lap wraps), the last one WITH IMMEDIATE unless the peer's
//! receiver said plain writes will do. It stops, and says blocked, when the peer's ring space
//! or receive requests (its credits) or the send queue run out.
//!
//! [`RdmaReceiver`] takes frames from its ring memory in order; it drains its receive CQ (the
//! immediates' completions) after taking frames, every few polls and before sleeping; it says
//! "plain" when it takes frames while spinning, and takes that back (mode word, then an RDMA
//! READ of the sender's posted word) before it sleeps. Everything the peer controls is
//! untrusted: a frame is taken only when whole (head, tail and checksum
//! agree), is copied out of the ring (which the peer can write at any time) before it is
//! walked, and a malformed body, a wrapped flag at a lap start, a completion of the wrong kind,
//! or a posted word outside the ring closes the link. One poll takes a bounded number of frames.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use signals::{Limits, SignalView};
use verbs::{Wc, Write, MAX_CHAIN, WRITE_IMM, WRITE_INLINE, WRITE_READ, WRITE_SIGNALED};

use super::setup::{RdmaLink, SetupMessage};
use super::{
    frame_checksum, next_seq, Credit, FrameHead, CONTROL_RESERVE, CREDIT_AT, FRAME_HEAD,
    FRAME_TAIL, MODE_AT, PLAIN, POSTED_AT, REPOST_BATCH, SEALED, SIGNAL_EVERY,
};
use crate::counters::LinkCounters;
use crate::pages::{feed, Page, PagePool, PageQueue, UnsentPage};
use crate::{LinkError, LinkReceiver, LinkSender, PollProgress, SendProgress};

/// `IBV_WC_RECV_RDMA_WITH_IMM`.
const RECV_RDMA_WITH_IMM: u32 = 129;
/// Receive completions taken per CQ poll.
const POLL_BATCH: usize = 32;
/// Frames taken per `poll`, at most.
const FRAMES_PER_POLL: usize = 64;
/// An awake receiver drains its receive CQ every this many polls (wake writes are rare; a
/// queue pair in error shows there too), and always before sleeping.
const CQ_EVERY: u32 = 16;
/// `wr_id` bit of the RDMA READ of a sleep announcement (the low 32 bits count the requests
/// its completion covers, as for every signalled request).
const READ_TAG: u64 = 1 << 63;
/// READs of the peer's posted word in a row whose check may fail before the link fails: a
/// READ catches the pair mid-store rarely, so a run this long is a broken peer, not a race.
const MAX_TORN_READS: u32 = 64;

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

/// The send queue, used by the sender (data) and the receiver (credit and sleep writes).
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
    /// A sleep announcement's READ is posted and has not completed.
    read_pending: bool,
    /// Where send completions are polled into (kept, so a reap zeroes nothing).
    wcs: [Wc; 16],
    /// Every post fails (set by [`RdmaSender::refuse_posts`], for fault tests).
    #[cfg(feature = "fault-injection")]
    refuse_posts: bool,
    /// The send queue counts as full (set by [`RdmaReceiver::hold_send_queue`], for tests).
    #[cfg(feature = "fault-injection")]
    held: bool,
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

/// A completion in error fails the link, naming the queue (`send` or `receive`) and status.
fn check_status(wc: &Wc, queue: &str) -> Result<(), LinkError> {
    if wc.status == 0 {
        return Ok(());
    }
    Err(LinkError::Rdma(format!(
        "{queue} completion failed: {} (status {})",
        verbs::status_str(wc.status),
        wc.status
    )))
}

/// The aligned 64-bit word at `at` bytes into `base` (a registered region the NIC may write).
///
/// # Safety
/// `base + at` must be 8-aligned and inside a live region.
unsafe fn word64<'a>(base: *mut u8, at: usize) -> &'a AtomicU64 {
    // SAFETY: the caller's promise; AtomicU64 has the layout of u64.
    unsafe { &*base.add(at).cast::<AtomicU64>() }
}

/// Reads a sealed pair (a word and its check word): the word when the check matches, else the
/// two values read (the NIC was still placing them, or the peer wrote no seal).
fn read_sealed(word: &AtomicU64, check: &AtomicU64) -> Result<u64, (u64, u64)> {
    let (word, check) = (word.load(Ordering::Acquire), check.load(Ordering::Acquire));
    super::unseal(word, check).ok_or((word, check))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PostState> {
        self.post.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A word of our ring region's control line (after the ring).
    fn control(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at % 8 == 0 && at < super::setup::CREDIT_LINE);
        // SAFETY: the ring region is the ring (a power of two, page-aligned) plus a 64-byte
        // control line; `at` is an 8-aligned offset in that line.
        unsafe { word64(self.link.ring.as_ptr(), self.link.ring_bytes + at) }
    }

    /// The word of the sealed pair at `at` in our ring region's control line, when its check
    /// matches (else the NIC is still placing it).
    fn sealed(&self, at: usize) -> Option<u64> {
        read_sealed(self.control(at), self.control(at + 8)).ok()
    }

    /// A word of the staging region's control line (sources and destinations of control
    /// requests, after the mirror of the peer's ring).
    fn staging_control(&self, at: usize) -> (&AtomicU64, u64) {
        let off = self.link.peer.ring_bytes as usize + at;
        // SAFETY: the staging region is the peer's ring size plus a 64-byte control line.
        let w = unsafe { word64(self.link.staging.as_ptr(), off) };
        (w, self.link.staging.addr() + off as u64)
    }

    /// Takes send completions: frees send-queue slots, and fails on any error completion.
    fn reap(&self, st: &mut PostState) -> Result<usize, LinkError> {
        let mut taken = 0;
        loop {
            let n = (self.link.endpoint.poll_send(&mut st.wcs))
                .map_err(|e| rdma_err("poll send CQ", e))?;
            for wc in &st.wcs[..n] {
                check_status(wc, "send")?;
                let covered = (wc.wr_id & u64::from(u32::MAX)) as u32;
                assert!(covered <= st.outstanding, "a completion covers more than was posted");
                st.outstanding -= covered;
                st.signaled = st.signaled.saturating_sub(1);
                if wc.wr_id & READ_TAG != 0 {
                    st.read_pending = false;
                }
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
        #[cfg(feature = "fault-injection")]
        if st.held {
            return Ok(false);
        }
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

    /// One plain write of the 8-byte `words` into the peer's control line at `at` (inline when
    /// the NIC allows: the values are copied when posted).
    fn control_write(&self, at: usize, words: &[u64]) -> Write {
        let (_, addr) = self.staging_control(at);
        for (i, &w) in words.iter().enumerate() {
            // Only this side writes its staging control line, under the post lock; the NIC
            // reads it.
            self.staging_control(at + 8 * i).0.store(w, Ordering::Release);
        }
        let length = 8 * words.len() as u32;
        Write {
            wr_id: 0,
            local_addr: addr,
            remote_addr: self.link.peer.credit_addr + at as u64,
            length,
            lkey: self.link.staging.lkey(),
            rkey: self.link.peer.ring_rkey,
            imm: 0,
            flags: if self.link.endpoint.max_inline() >= length { WRITE_INLINE } else { 0 },
            pad: 0,
        }
    }

    /// The credit write of `word`, sealed.
    fn credit_write(&self, word: u64) -> Write {
        self.control_write(CREDIT_AT, &[word, super::seal(word)])
    }

    /// Posts `writes` as one chain, signalling the last one every [`SIGNAL_EVERY`] requests
    /// (or when the caller signalled it already: a READ).
    fn post(&self, st: &mut PostState, writes: &mut [Write]) -> Result<(), LinkError> {
        let n = writes.len() as u32;
        debug_assert!(st.outstanding + n <= st.depth);
        let last = writes.last_mut().unwrap_or_else(|| unreachable!("posting nothing"));
        if st.unsignaled + n >= SIGNAL_EVERY || last.flags & WRITE_SIGNALED != 0 {
            last.flags |= WRITE_SIGNALED;
            last.wr_id = (last.wr_id & READ_TAG) | u64::from(st.unsignaled + n);
            st.unsignaled = 0;
            if st.signaled == 0 {
                st.progress_at = Instant::now();
            }
            st.signaled += 1;
        } else {
            st.unsignaled += n;
        }
        #[cfg(feature = "fault-injection")]
        if st.refuse_posts {
            return Err(LinkError::Rdma("post refused (fault test)".into()));
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
    let first_credit = Credit { consumed: 0, posted: recv_depth }.encode();
    let shared = Arc::new(Shared {
        credit_due: AtomicU64::new(first_credit),
        credit_sent_hint: AtomicU64::new(first_credit),
        post: Mutex::new(PostState {
            outstanding: 0,
            unsignaled: 0,
            credit_sent: first_credit,
            depth: send_depth,
            signaled: 0,
            progress_at: Instant::now(),
            read_pending: false,
            wcs: [Wc::default(); 16],
            #[cfg(feature = "fault-injection")]
            refuse_posts: false,
            #[cfg(feature = "fault-injection")]
            held: false,
        }),
        link,
        counters: counters.clone(),
    });
    let sender = RdmaSender {
        shared: shared.clone(),
        peer,
        cur: Cursor { credit: first_credit, ..Cursor::default() },
        stalled: false,
        counters: counters.clone(),
        pending: UnsentPage::new(pool, counters.clone()),
        chain: Box::new(Chain::new()),
        writes: Box::new([Write::default(); MAX_CHAIN]),
        failed: None,
        lost: false,
    };
    let receiver = RdmaReceiver {
        shared,
        position: 0,
        frames: 0,
        seq: 1,
        completed: 0,
        posted: u64::from(recv_depth),
        limits,
        counters,
        socket,
        scratch: vec![0u32; own_ring / 4].into_boxed_slice(),
        wcs: Box::new([Wc::default(); POLL_BATCH]),
        polls: 0,
        epoch: 0,
        mode: Mode::Immediate,
        slept: false,
        torn_reads: 0,
        credit_owed: false,
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
    /// The frames and work requests of one `send`, kept between calls so a send zeroes nothing
    /// (under an emulated CPU a per-call memset of these was a visible part of a round trip).
    chain: Box<Chain>,
    writes: Box<[Write; MAX_CHAIN]>,
    /// A post failed after its pages were copied: the call counted them as dropped, and the
    /// next one returns this error. What stays pending was lost with it.
    failed: Option<LinkError>,
    lost: bool,
}

/// Where the sender is in the peer's ring (its own state, apart from what it shares with the
/// receiving half, so a `send` can hold the post lock while it copies).
#[derive(Debug, Default)]
struct Cursor {
    /// Bytes of the peer's ring ever used (frames and lap skips).
    position: u64,
    /// Frames ever closed.
    frames: u64,
    /// The last closed frame's sequence number (`frame_seq(frames)`; 0 before the first).
    seq: u32,
    /// WRITE WITH IMMEDIATEs ever posted (each uses one of the peer's receive requests).
    writes: u64,
    /// The rest of the last lap was skipped: the next frame says so.
    wrap_next: bool,
    /// `position` at the end of the last frame (a lap skip after it is not data).
    frame_end: u64,
    /// The newest credit word whose check matched (credits only grow: an older one grants
    /// less, never more).
    credit: u64,
}

/// The space and receive requests the peer's last credit word grants.
struct Grant {
    free: u64,
    slots: u32,
}

impl Cursor {
    fn grant(&mut self, shared: &Shared, peer: &SetupMessage) -> Result<Grant, LinkError> {
        // A pair that does not match is being placed now: the last one stands (see mod.rs).
        match shared.sealed(CREDIT_AT) {
            Some(word) => self.credit = word,
            None => LinkCounters::add(&shared.counters.torn_control_reads, 1),
        }
        let c = Credit::decode(self.credit);
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
                "peer's credit says {} receive requests posted, {slots} more than our {} writes with immediate (depth {})",
                c.posted, self.writes as u32, peer.recv_depth
            )));
        }
        Ok(Grant { free: size - used, slots })
    }

    fn mirror(shared: &Shared, peer: &SetupMessage, offset: usize, len: usize) -> *mut u8 {
        assert!(offset + len <= peer.ring_bytes as usize);
        // SAFETY: the span is inside the staging mirror (checked).
        unsafe { shared.link.staging.as_ptr().add(offset) }
    }

    fn stage(shared: &Shared, peer: &SetupMessage, offset: usize, bytes: &[u8]) {
        let to = Cursor::mirror(shared, peer, offset, bytes.len());
        // SAFETY: the span is inside the staging mirror (checked) and in space the peer has
        // consumed (granted), so no write of ours still reads it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), to, bytes.len()) };
    }

    /// Writes the head and tail of the chain's open frame, whose body is staged, and takes
    /// the tail's bytes (kept free when the body was taken).
    fn close(&mut self, shared: &Shared, peer: &SetupMessage, g: &mut Grant, chain: &mut Chain) {
        let run = chain.close();
        self.frames += 1;
        self.seq = next_seq(self.seq);
        let seq = self.seq;
        run.seq = seq;
        let head = FrameHead { wrapped: run.wrapped, len: run.len as u32 }.encode();
        let at = Cursor::mirror(shared, peer, run.start, FRAME_HEAD + run.len + FRAME_TAIL);
        // SAFETY: the frame lies in the mirror (checked above), 4-aligned (signals are whole
        // words, the region page-aligned); the body was staged there by this send.
        unsafe {
            let body = std::slice::from_raw_parts(at.add(FRAME_HEAD).cast::<u32>(), run.len / 4);
            let sum = frame_checksum(head, seq, body);
            let w = at.cast::<u32>();
            w.write(seq);
            w.add(1).write(head);
            w.add(2 + run.len / 4).write(sum);
            w.add(3 + run.len / 4).write(seq);
        }
        self.position += FRAME_TAIL as u64;
        g.free -= FRAME_TAIL as u64;
        self.frame_end = self.position;
    }

    /// Copies whole signals from `page` into frames in the mirror; extends or opens frames in
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
            let open = chain.extends(offset);
            // An open frame keeps room for its tail; a new one needs its head and tail too.
            let overhead = if open { FRAME_TAIL } else { FRAME_HEAD + FRAME_TAIL };
            let avail = room.saturating_sub(overhead);
            // A page whose rest fits is taken whole, with no walk over its signals.
            let (take, first) =
                if bytes.len() <= avail { (bytes.len(), 0) } else { page.unsent_within(avail) };
            if take == 0 {
                if open {
                    self.close(shared, peer, g, chain);
                    continue;
                }
                let need = (FRAME_HEAD + first + FRAME_TAIL) as u64;
                if offset != 0 && lap_rest < need && g.free >= lap_rest {
                    // Skip the rest of the lap; the next frame starts the new one.
                    self.position += lap_rest;
                    g.free -= lap_rest;
                    self.wrap_next = true;
                    continue;
                }
                return (copied, true);
            }
            let body_at = if open {
                offset
            } else {
                if !chain.has_room() {
                    return (copied, true);
                }
                chain.open(offset, self.wrap_next);
                self.wrap_next = false;
                self.position += FRAME_HEAD as u64;
                g.free -= FRAME_HEAD as u64;
                offset + FRAME_HEAD
            };
            Cursor::stage(shared, peer, body_at, &bytes[..take]);
            chain.grow(take);
            self.position += take as u64;
            g.free -= take as u64;
            page.sent_bytes += take;
            copied += take;
        }
    }

    fn data_write(shared: &Shared, peer: &SetupMessage, run: &Run) -> Write {
        let len = FRAME_HEAD + run.len + FRAME_TAIL;
        let inline = len <= shared.link.endpoint.max_inline() as usize;
        Write {
            wr_id: 0,
            local_addr: shared.link.staging.addr() + run.start as u64,
            remote_addr: peer.ring_addr + run.start as u64,
            length: len as u32,
            lkey: shared.link.staging.lkey(),
            rkey: peer.ring_rkey,
            imm: run.seq,
            flags: if inline { WRITE_INLINE } else { 0 },
            pad: 0,
        }
    }
}

/// One frame of a send: where it starts in the ring, its body's length, whether it wrapped,
/// and its sequence number once closed.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    start: usize,
    len: usize,
    wrapped: bool,
    seq: u32,
}

/// The frames one `send` builds.
#[derive(Debug)]
struct Chain {
    runs: [Run; MAX_CHAIN - 1],
    len: usize,
    open: bool,
    max: usize,
}

impl Chain {
    fn new() -> Chain {
        Chain { runs: [Run::default(); MAX_CHAIN - 1], len: 0, open: false, max: 0 }
    }

    /// Empties the chain for a send that may post up to `max` data writes.
    fn reset(&mut self, max: usize) {
        self.len = 0;
        self.open = false;
        self.max = max.min(MAX_CHAIN - 1);
    }

    /// Whether a frame is open and its body ends at `offset`.
    fn extends(&self, offset: usize) -> bool {
        self.open && {
            let r = &self.runs[self.len - 1];
            r.start + FRAME_HEAD + r.len == offset
        }
    }

    fn has_room(&self) -> bool {
        self.len < self.max
    }

    fn open(&mut self, start: usize, wrapped: bool) {
        debug_assert!(self.has_room());
        self.runs[self.len] = Run { start, len: 0, wrapped, seq: 0 };
        self.len += 1;
        self.open = true;
    }

    fn grow(&mut self, bytes: usize) {
        self.runs[self.len - 1].len += bytes;
    }

    /// Ends the open frame; returns it.
    fn close(&mut self) -> &mut Run {
        debug_assert!(self.open);
        self.open = false;
        &mut self.runs[self.len - 1]
    }
}

/// Notes whether a send was blocked on credits (a stall is counted once, while `stalled`).
fn note_blocked(
    stalled: &mut bool,
    counters: &LinkCounters,
    mut progress: SendProgress,
    blocked: bool,
) -> SendProgress {
    if blocked && !*stalled {
        LinkCounters::add(&counters.credit_stalls, 1);
    }
    *stalled = blocked;
    progress.blocked = blocked;
    progress
}

/// Fails when signalled requests are outstanding and no send completion came for
/// `ACK_TIMEOUT`: the peer's NIC stopped acknowledging (soft-RoCE then reports nothing at all).
fn acks_overdue(st: &PostState) -> Result<(), LinkError> {
    if st.signaled > 0 && st.progress_at.elapsed() > ACK_TIMEOUT {
        return Err(LinkError::Rdma(format!(
            "no send completion for {ACK_TIMEOUT:?} with {} requests outstanding: the peer's NIC stopped acknowledging",
            st.outstanding
        )));
    }
    Ok(())
}

/// Where a send's pages come from: the link's queue (after a page pending from the last
/// send), or one page written in place.
enum Pages<'a> {
    Queue(&'a mut PageQueue),
    One(&'a mut Page),
}

impl RdmaSender {
    /// Makes every later post of this link fail, as a device error would. For fault tests
    /// (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub fn refuse_posts(&self) {
        self.shared.lock().refuse_posts = true;
    }

    fn send_from(&mut self, mut pages: Pages<'_>) -> Result<SendProgress, LinkError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let shared = &*self.shared;
        let mut st = shared.lock();
        // Completions come one per SIGNAL_EVERY requests; look for them only when one is due
        // (an error completes every request, so a failure is still seen). A pending signalled
        // request means at least SIGNAL_EVERY are outstanding, so the silence check below sees
        // every one; it reads the clock only when no completion came.
        if st.outstanding >= SIGNAL_EVERY && shared.reap(&mut st)? == 0 {
            acks_overdue(&st)?;
        }
        let mut progress = SendProgress::default();
        if let Pages::Queue(queue) = &pages {
            if self.pending.is_none() && queue.front().is_none() {
                return Ok(progress);
            }
        }
        let mut g = self.cur.grant(shared, &self.peer)?;
        if g.slots == 0 {
            // Unless the peer says plain, this post needs one of its receive requests.
            return Ok(note_blocked(&mut self.stalled, &self.counters, progress, true));
        }
        // Room for the data writes and a piggybacked credit write, keeping the reserve.
        let sq_free = st.depth.saturating_sub(st.outstanding + CONTROL_RESERVE + 1) as usize;
        let chain = &mut *self.chain;
        chain.reset(sq_free);
        let blocked = match &mut pages {
            Pages::Queue(queue) => {
                let (cur, peer) = (&mut self.cur, &self.peer);
                let (bytes, signals, full) = feed(&mut self.pending, queue, |page| {
                    cur.copy_page(shared, peer, page, &mut g, chain)
                });
                progress.bytes += bytes;
                progress.signals += signals;
                full
            }
            Pages::One(page) => {
                let (copied, full) = self.cur.copy_page(shared, &self.peer, page, &mut g, chain);
                progress.bytes += copied;
                if page.unsent().is_empty() {
                    progress.signals += page.signals;
                }
                full
            }
        };
        if chain.open {
            self.cur.close(shared, &self.peer, &mut g, chain);
        }
        if chain.len > 0 {
            // Publish where this post ends, then read the mode word: either the peer's READ of
            // the posted word sees this position, or this sees the plain bit cleared.
            let plain = super::publish_and_check(
                shared.control(POSTED_AT),
                shared.control(POSTED_AT + 8),
                shared.control(MODE_AT),
                self.cur.frame_end,
            );
            let writes = &mut *self.writes;
            let mut n = 0;
            let due = shared.credit_due.load(Ordering::Acquire);
            if shared.worth_piggybacking(due, st.credit_sent) {
                writes[0] = shared.credit_write(due);
                st.credit_sent = due;
                shared.credit_sent_hint.store(due, Ordering::Relaxed);
                n = 1;
            }
            for run in &chain.runs[..chain.len] {
                writes[n] = Cursor::data_write(shared, &self.peer, run);
                n += 1;
            }
            if !plain {
                // The last write's completion comes after all the data: it can wake the peer.
                writes[n - 1].flags |= WRITE_IMM;
                self.cur.writes += 1;
            }
            if let Err(e) = shared.post(&mut st, &mut writes[..n]) {
                // The pages copied are gone from the queue and will never arrive: count
                // them as dropped here (their bytes leave the queued count with `bytes`),
                // and fail the link at the next call.
                progress.dropped = std::mem::take(&mut progress.signals);
                LinkCounters::add(&self.counters.signals_dropped, progress.dropped as u64);
                self.failed = Some(e);
                self.lost = true;
                return Ok(progress);
            }
            LinkCounters::add_owned(&self.counters.batches_sent, chain.len as u64);
            LinkCounters::add_owned(&self.counters.bytes_sent, progress.bytes as u64);
            LinkCounters::add_owned(&self.counters.signals_sent, progress.signals as u64);
        }
        Ok(note_blocked(&mut self.stalled, &self.counters, progress, blocked))
    }
}

impl LinkSender for RdmaSender {
    fn send(&mut self, queue: &mut PageQueue) -> Result<SendProgress, LinkError> {
        self.send_from(Pages::Queue(queue))
    }

    fn send_page(&mut self, page: &mut Page) -> Option<Result<SendProgress, LinkError>> {
        if self.pending.is_some() {
            // Part of a page (another sending thread's) comes first: through the queue.
            return None;
        }
        Some(self.send_from(Pages::One(page)))
    }

    fn has_pending(&self) -> bool {
        self.pending.is_some() || self.failed.is_some()
    }

    fn discard_pending(&mut self) -> usize {
        if self.lost {
            return self.pending.discard_lost();
        }
        self.pending.discard()
    }
}

/// Which writes the receiver has asked of the sender, and where it is on its way back to
/// immediates before a sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Every post ends with a WRITE WITH IMMEDIATE (and all data before the last change back to
    /// this mode is taken): the receiver may sleep.
    Immediate,
    /// Plain writes: the receiver polls its ring.
    Plain,
    /// The mode word is cleared and the READ of the sender's posted word is in flight.
    Clearing,
    /// The READ showed the sender posted up to this ring position (at the instant given): take
    /// it, then sleep.
    Draining(u64, Instant),
}

/// How long the frames a peer said it posted may take to land once its posted word was read,
/// before the link is failed: a peer that announces more than it writes would otherwise keep
/// the receive thread from ever sleeping.
const DRAIN_PATIENCE: Duration = Duration::from_secs(5);

/// Whether the receiver, at `position` in its ring, has taken everything the peer said it
/// posted (up to `posted`, read at `since`); an error once [`DRAIN_PATIENCE`] has passed
/// without that.
fn drained(position: u64, posted: u64, since: Instant, now: Instant) -> Result<bool, LinkError> {
    if position >= posted {
        return Ok(true);
    }
    if now.saturating_duration_since(since) > DRAIN_PATIENCE {
        return Err(LinkError::Corrupt(format!(
            "peer said it posted up to ring position {posted}, but only {position} arrived within {DRAIN_PATIENCE:?}"
        )));
    }
    Ok(false)
}

/// The receiving half.
#[derive(Debug)]
pub struct RdmaReceiver {
    shared: Arc<Shared>,
    /// Bytes of our ring ever consumed (frames and lap skips).
    position: u64,
    /// Frames ever taken.
    frames: u64,
    /// The next frame's sequence number (`frame_seq(frames + 1)`).
    seq: u32,
    /// Receive completions ever taken.
    completed: u64,
    /// Receive requests ever posted.
    posted: u64,
    limits: Limits,
    counters: Arc<LinkCounters>,
    /// The handshake socket, kept open for the link's life: its hang-up is the peer's death.
    socket: TcpStream,
    /// Where a frame's body is copied before it is checked and walked (a whole ring).
    scratch: Box<[u32]>,
    /// Where completions are polled to (kept, so a poll writes no fresh array).
    wcs: Box<[Wc; POLL_BATCH]>,
    /// Polls since the link came up (the CQ is drained every CQ_EVERY).
    polls: u32,
    /// The newest mode epoch written to the sender.
    epoch: u64,
    mode: Mode,
    /// The last `arm` said this link may sleep (frames taken after it came to a woken receiver).
    slept: bool,
    /// READs of the posted word in a row whose check did not match.
    torn_reads: u32,
    /// A credit-only write was due when the send queue had no room: the next poll tries again
    /// (and the receiver does not sleep while it is owed).
    credit_owed: bool,
}

/// A whole frame found in the ring.
struct Found {
    /// It is at the lap start, past the rest of the last lap.
    skipped: bool,
    head: FrameHead,
}

impl RdmaReceiver {
    /// Makes the send queue count as full while `held` (credit and mode writes find no room),
    /// as a queue pair whose completions lag would. For tests (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub fn hold_send_queue(&self, held: bool) {
        self.shared.lock().held = held;
    }

    /// Moves the queue pair to the error state, as a fatal device error would: every posted
    /// request completes flushed and the link fails at a following poll. For fault tests.
    pub fn force_queue_pair_error(&self) -> Result<(), LinkError> {
        self.shared.link.endpoint.to_error().map_err(|e| rdma_err("force QP error", e))
    }

    /// The u32 at byte `at` of our ring, which the peer writes at will.
    fn word(&self, at: usize) -> u32 {
        assert!(at % 4 == 0 && at + 4 <= self.shared.link.ring_bytes);
        // SAFETY: in our ring (checked), 4-aligned (the region is page-aligned).
        unsafe {
            (*self.shared.link.ring.as_ptr().add(at).cast::<AtomicU32>()).load(Ordering::Acquire)
        }
    }

    /// Whether a whole frame with sequence number `seq` starts at `start`; copies its body into
    /// `scratch` when it does. Anything else there (older bytes, a frame still being placed,
    /// a length past the lap) is not a frame yet.
    fn whole_frame(&mut self, start: usize, seq: u32) -> Option<FrameHead> {
        let size = self.shared.link.ring_bytes;
        if size - start < FRAME_HEAD + signals::HEADER_BYTES + FRAME_TAIL || self.word(start) != seq
        {
            return None;
        }
        let head_word = self.word(start + 4);
        let head = FrameHead::decode(head_word);
        let len = head.len as usize;
        if len % 4 != 0
            || len < signals::HEADER_BYTES
            || len > size - start - FRAME_HEAD - FRAME_TAIL
        {
            return None;
        }
        let tail = start + FRAME_HEAD + len;
        if self.word(tail + 4) != seq {
            return None;
        }
        let sum = self.word(tail);
        let copy = &mut self.scratch[..len / 4];
        // SAFETY: the body lies in our ring (checked above); `copy` is our own buffer of `len`
        // bytes. The peer may write the ring at any time: it can only change the values copied,
        // and the checksum over the copy says whether they are the frame's.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.shared.link.ring.as_ptr().add(start + FRAME_HEAD),
                copy.as_mut_ptr().cast::<u8>(),
                len,
            )
        };
        (frame_checksum(head_word, seq, copy) == sum).then_some(head)
    }

    /// The next frame, whole, at our position or (after a lap skip) at the lap start.
    fn next_frame(&mut self) -> Option<Found> {
        let size = self.shared.link.ring_bytes as u64;
        let offset = (self.position & (size - 1)) as usize;
        let seq = self.seq;
        if let Some(head) = self.whole_frame(offset, seq) {
            return Some(Found { skipped: false, head });
        }
        if offset != 0 {
            if let Some(head) = self.whole_frame(0, seq) {
                return Some(Found { skipped: true, head });
            }
        }
        None
    }

    /// Walks the frame `f` (its body is in `scratch`). Returns (signals, body bytes).
    fn take(
        &mut self,
        f: Found,
        deliver: &mut dyn FnMut(SignalView<'_>),
    ) -> Result<(usize, usize), LinkError> {
        if f.head.wrapped != f.skipped {
            let says = if f.skipped {
                "is at the next lap's start, but does not say it wrapped"
            } else {
                "says it wrapped, but it is where the last one ended"
            };
            return Err(LinkError::Corrupt(format!(
                "frame {} at ring position {} {says}",
                self.frames + 1,
                self.position
            )));
        }
        let size = self.shared.link.ring_bytes as u64;
        if f.skipped {
            self.position += size - (self.position & (size - 1));
        }
        let len = f.head.len as usize;
        let bytes: &[u8] = bytemuck::cast_slice(&self.scratch[..len / 4]);
        let at = self.position;
        let place = || format!("frame at ring position {at}");
        let signals = crate::deliver_batch(bytes, self.limits, &place, deliver)?;
        self.position += (FRAME_HEAD + len + FRAME_TAIL) as u64;
        self.frames += 1;
        self.seq = next_seq(self.seq);
        Ok((signals, len))
    }

    /// Takes receive completions (wake writes); returns how many.
    fn drain_cq(&mut self) -> Result<usize, LinkError> {
        let mut taken = 0;
        loop {
            let n = self
                .shared
                .link
                .endpoint
                .poll_recv(&mut self.wcs[..])
                .map_err(|e| rdma_err("poll receive CQ", e))?;
            for wc in &self.wcs[..n] {
                check_status(wc, "receive")?;
                if wc.opcode != RECV_RDMA_WITH_IMM || wc.flags & verbs::WC_IMM == 0 {
                    return Err(LinkError::Corrupt(format!(
                        "receive completion of opcode {} (flags {}), not a write with immediate",
                        wc.opcode, wc.flags
                    )));
                }
            }
            self.completed += n as u64;
            taken += n;
            if n < POLL_BATCH {
                return Ok(taken);
            }
        }
    }

    /// Re-posts used receive requests, in batches.
    fn repost(&mut self) -> Result<(), LinkError> {
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
        Ok(())
    }

    fn credit(&self) -> u64 {
        Credit { consumed: self.position as u32, posted: self.posted as u32 }.encode()
    }

    /// Re-posts used receive requests in batches, and sends the credit word alone when half
    /// the ring or half the receive queue is unreported (otherwise the sender piggybacks it).
    fn give_back(&mut self) -> Result<(), LinkError> {
        self.repost()?;
        let depth = u64::from(self.shared.link.recv_depth);
        let word = self.credit();
        self.shared.credit_due.store(word, Ordering::Release);
        let due = |sent: u64| {
            let (word, sent) = (Credit::decode(word), Credit::decode(sent));
            let bytes = word.consumed.wrapping_sub(sent.consumed) as usize;
            let requests = word.posted.wrapping_sub(sent.posted);
            bytes >= self.shared.link.ring_bytes / 2 || u64::from(requests) >= depth / 2
        };
        // The hint lags the real value, so "not due" by the hint is "not due": no lock needed.
        if !due(self.shared.credit_sent_hint.load(Ordering::Relaxed)) {
            self.credit_owed = false;
            return Ok(());
        }
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if !due(st.credit_sent) {
            self.credit_owed = false;
            return Ok(());
        }
        // A full send queue empties as the NIC completes what is posted: owe the credit and
        // try again at the next poll, instead of holding the post lock (and every sending
        // thread) while waiting here. A queue that never completes fails the link: by an
        // error completion, or here, as on the sending side, once acknowledgements are overdue.
        if !shared.room(&mut st, 1, 0)? {
            acks_overdue(&st)?;
            self.credit_owed = true;
            return Ok(());
        }
        self.credit_owed = false;
        let mut w = [shared.credit_write(word)];
        shared.post(&mut st, &mut w)?;
        st.credit_sent = word;
        shared.credit_sent_hint.store(word, Ordering::Relaxed);
        LinkCounters::add(&self.counters.credit_messages, 1);
        Ok(())
    }

    /// Writes a new mode epoch to the sender's mode word, with `PLAIN` when `plain`; when
    /// clearing it, READs the sender's posted word in the same chain (executed at the sender
    /// after the mode word is placed). False when the send queue has no room now (or a READ is
    /// still in flight).
    fn write_mode(&mut self, plain: bool) -> Result<bool, LinkError> {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if st.read_pending {
            // An earlier READ's completion frees the way (one READ in flight at a time).
            shared.reap(&mut st)?;
        }
        let n = if plain { 1 } else { 2 };
        if st.read_pending || !shared.room(&mut st, n, 0)? {
            return Ok(false);
        }
        self.epoch += 1;
        let word = self.epoch << 1 | if plain { PLAIN } else { 0 };
        let (_, read_to) = shared.staging_control(POSTED_AT);
        let mut w = [
            shared.control_write(MODE_AT, &[word]),
            Write {
                wr_id: READ_TAG,
                local_addr: read_to,
                remote_addr: shared.link.peer.credit_addr + POSTED_AT as u64,
                length: SEALED as u32,
                lkey: shared.link.staging.lkey(),
                rkey: shared.link.peer.ring_rkey,
                imm: 0,
                flags: WRITE_READ | WRITE_SIGNALED,
                pad: 0,
            },
        ];
        shared.post(&mut st, &mut w[..n as usize])?;
        if !plain {
            st.read_pending = true;
        }
        Ok(true)
    }

    /// The sender's posted word as the finished READ brought it (checked: at most a ring ahead
    /// of what this side has taken); `None` when the READ caught the pair between the sender's
    /// two stores, or mid-copy (the check did not match).
    fn posted(&mut self) -> Result<Option<u64>, LinkError> {
        let (word, check) = (
            self.shared.staging_control(POSTED_AT).0,
            self.shared.staging_control(POSTED_AT + 8).0,
        );
        let posted = match read_sealed(word, check) {
            Ok(posted) => posted,
            Err((word, check)) => {
                LinkCounters::add(&self.counters.torn_control_reads, 1);
                self.torn_reads += 1;
                if self.torn_reads > MAX_TORN_READS {
                    return Err(LinkError::Corrupt(format!(
                    "peer's posted word failed its check in {MAX_TORN_READS} READs in a row (last {word:#x}, check {check:#x})"
                )));
                }
                return Ok(None);
            }
        };
        self.torn_reads = 0;
        if posted > self.position && posted - self.position > self.shared.link.ring_bytes as u64 {
            return Err(LinkError::Corrupt(format!(
                "peer's posted position {posted} is more than a ring ({} bytes) ahead of ours {}",
                self.shared.link.ring_bytes, self.position
            )));
        }
        Ok(Some(posted))
    }

    /// Takes the frames there are (at most FRAMES_PER_POLL), the receive completions due, and
    /// gives credit back.
    #[inline(never)]
    fn poll_frames(
        &mut self,
        deliver: &mut dyn FnMut(SignalView<'_>),
    ) -> Result<PollProgress, LinkError> {
        let mut progress = PollProgress::default();
        let mut frames = 0;
        while frames < FRAMES_PER_POLL {
            let Some(f) = self.next_frame() else { break };
            let (signals, bytes) = self.take(f, deliver)?;
            progress.signals += signals;
            progress.bytes += bytes;
            frames += 1;
        }
        // Immediates use receive requests: their completions are taken with their frames (and
        // every few polls, where a queue pair in error shows too).
        let mut cqes = 0;
        if (frames > 0 && self.mode != Mode::Plain) || self.polls % CQ_EVERY == 0 {
            cqes = self.drain_cq()?;
        }
        if frames > 0 {
            LinkCounters::add_owned(&self.counters.batches_received, frames as u64);
            LinkCounters::add_owned(&self.counters.bytes_received, progress.bytes as u64);
            LinkCounters::add_owned(&self.counters.signals_received, progress.signals as u64);
            if self.mode == Mode::Immediate && !self.slept {
                // Frames while spinning: plain writes will do (best effort: later if the send
                // queue is full now).
                if self.write_mode(true)? {
                    self.mode = Mode::Plain;
                }
            }
            self.slept = false;
        }
        if frames > 0 || cqes > 0 || self.credit_owed {
            self.give_back()?;
        }
        Ok(progress)
    }

    /// Whether the next frame's sequence number is at our position or at the lap start (what
    /// `next_frame` looks at first): when neither, there is nothing to take.
    #[inline]
    fn frame_may_be_there(&self) -> bool {
        let size = self.shared.link.ring_bytes;
        let offset = (self.position & (size as u64 - 1)) as usize;
        let seq = self.seq;
        (offset + 4 <= size && self.word(offset) == seq) || (offset != 0 && self.word(0) == seq)
    }
}

impl LinkReceiver for RdmaReceiver {
    #[inline]
    fn poll(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<PollProgress, LinkError> {
        self.polls = self.polls.wrapping_add(1);
        // A spinning receiver mostly finds nothing: two loads say so, with no call or set-up.
        if self.polls % CQ_EVERY != 0 && !self.frame_may_be_there() && !self.credit_owed {
            return Ok(PollProgress::default());
        }
        self.poll_frames(deliver)
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
        if self.credit_owed {
            self.give_back()?;
            if self.credit_owed {
                // The peer may be waiting for it: no sleep until it is sent.
                std::thread::yield_now();
                return Ok(false);
            }
        }
        if self.drain_cq()? > 0 {
            // An immediate landed: its frame is there to take.
            self.give_back()?;
            return Ok(false);
        }
        loop {
            match self.mode {
                Mode::Immediate => break,
                Mode::Plain => {
                    if self.write_mode(false)? {
                        self.mode = Mode::Clearing;
                    }
                    // The READ takes a network round trip: let the threads with work (a block
                    // thread of this node, where threads outnumber CPUs) run meanwhile.
                    std::thread::yield_now();
                    return Ok(false);
                }
                Mode::Clearing => {
                    let shared = self.shared.clone();
                    let mut st = shared.lock();
                    if st.read_pending {
                        shared.reap(&mut st)?;
                    }
                    if st.read_pending {
                        drop(st);
                        std::thread::yield_now();
                        return Ok(false);
                    }
                    drop(st);
                    self.mode = match self.posted()? {
                        Some(posted) => Mode::Draining(posted, Instant::now()),
                        // Caught mid-placement: clear and READ again (the same guarantee).
                        None => Mode::Plain,
                    };
                }
                Mode::Draining(posted, since) => {
                    if !drained(self.position, posted, since, Instant::now())? {
                        // Plain writes posted before the sender saw the cleared bit: they land.
                        return Ok(false);
                    }
                    self.mode = Mode::Immediate;
                }
            }
        }
        self.shared.link.endpoint.arm_recv().map_err(|e| rdma_err("arm receive CQ", e))?;
        // The arm race: a completion that landed before the arm raises no event; look again.
        if self.drain_cq()? > 0 || self.next_frame().is_some() {
            return Ok(false);
        }
        self.slept = true;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_word_that_runs_ahead_of_the_frames_fails_the_link_after_the_patience() {
        let since = Instant::now();
        // Everything announced has arrived (or more: frames posted after the READ).
        assert!(drained(4096, 4096, since, since).unwrap());
        assert!(drained(8192, 4096, since, since + 2 * DRAIN_PATIENCE).unwrap());
        // Still landing: wait, however many times the receiver looks, within the patience.
        assert!(!drained(0, 4096, since, since + DRAIN_PATIENCE / 2).unwrap());
        assert!(!drained(0, 4096, since, since + DRAIN_PATIENCE).unwrap());
        // A peer that announced what it never writes: the link fails, saying so.
        let e = drained(1024, 4096, since, since + DRAIN_PATIENCE + Duration::from_millis(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("posted up to ring position 4096, but only 1024 arrived"), "{e}");
    }
}
