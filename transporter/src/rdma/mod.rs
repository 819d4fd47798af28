//! The RDMA verbs transporter: one reliable-connected queue pair per link, batches written
//! straight into the peer's receive ring with RDMA WRITE; WRITE WITH IMMEDIATE (one receive
//! completion, which can wake a sleeping receiver) unless the receiver, busy polling, has said
//! plain writes will do.
//!
//! - [`setup`]: the queue pair, the registered regions and the set-up exchange over the
//!   handshake socket (GID, QP number, PSN, ring address and key, control-line address).
//! - [`link`]: the sending and receiving halves.
//!
//! The protocol, both directions alike:
//! - **Ring.** Each side registers a receive ring (`ring_bytes`, a power of two) that the peer
//!   writes, followed by a 64-byte control line. The sender keeps a mirror of the peer's ring
//!   in its own registered staging memory: it copies whole signals from its send-buffer pages
//!   into a frame at the same offset there and posts one RDMA WRITE per frame (inline when
//!   small). A frame never wraps: when the next one does not fit the rest of the lap, it starts
//!   the new lap and says so in its head. One post (one doorbell) carries a whole flush.
//! - **Frames** ([`FrameHead`]): a head (sequence number, body length, wrapped flag), the body
//!   (whole signals), and a tail (checksum, sequence number). The receiver polls its ring
//!   memory at its position (and at the lap start) for the next sequence number; a frame is
//!   taken once its head and tail carry that number and the checksum over the copied body
//!   matches, so a frame still being placed is never read half-way. Anything else there is
//!   not (yet) a frame: a peer cannot make the receiver read outside its ring or wait forever
//!   on one place, and a whole frame whose body is malformed fails the link.
//! - **Control line** of each side's ring region: the credit word and the mode word, which
//!   the peer's receiver RDMA-WRITEs, and the posted word, which this side's sender stores and
//!   the peer's receiver RDMA-READs ([`CREDIT_AT`], [`MODE_AT`], [`POSTED_AT`]).
//! - **Credits.** The receiver reports, in one 64-bit word, how many ring bytes it has consumed
//!   and how many receive requests it has posted ([`Credit`]). The word rides in the same post
//!   as reverse data once an eighth of the ring or of the receive queue is unreported
//!   (piggybacked; less waits, so a ping-pong does not pay a second write per message), and
//!   goes alone once half of either is unreported, so a one-way stream never starves. The send
//!   queue keeps [`CONTROL_RESERVE`] slots free for these control writes.
//! - **Immediate or plain.** The mode word ([`PLAIN`] bit) says which writes the receiver
//!   wants. It starts clear: each post's last write carries an immediate, so a receiver can
//!   sleep at any time (arm the CQ, poll once more for the arm race, sleep in epoll on the
//!   completion channel) and the NIC's completion wakes it: a sender never pays a wakeup, and a
//!   sleeping receiver costs one interrupt per sleep. A receiver that takes frames while it
//!   spins (it did not sleep since its last poll) sets the bit: writes are then plain, with no
//!   receive request and no completion per message, as perftest's `ib_write_lat` writes. Before
//!   it sleeps again it clears the bit and, in the same chain, RDMA-READs the sender's posted
//!   word (the READ executes at the sender after the mode word is placed). After staging each
//!   flush the sender stores its posted position, fences, and reads the mode word. Either the
//!   READ sees the position (the receiver takes the data up to it before sleeping) or the sender
//!   sees the cleared bit (its write carries the immediate): no data is left unseen by a
//!   sleeping receiver (the shared-memory ring's store-fence-load pairing, with the NIC as the
//!   other side; [`publish_and_check`] is model-checked). So a busy link pays nothing per
//!   message for wakeups, a sleepy one pays no handshake per sleep, and only the change from
//!   spinning to sleeping costs a round trip.
//! - **Failure.** A completion in error (a queue pair in error flushes everything), a malformed
//!   frame, credit or posted word, or the handshake socket hanging up fails the link.
//!
//! - **Torn control words.** A NIC may place (or, for a READ, copy) an 8-byte word a byte at
//!   a time: rxe does it with the kernel's `memcpy`, which under an emulated CPU lands byte by
//!   byte, so a load racing it can see new low bytes under old high ones. The credit and posted
//!   words are therefore sealed: each is followed by a check word ([`seal`]) in the same write,
//!   and a pair whose check does not match is a word still being placed. The sender then keeps
//!   the last credit that matched (credits only grow, so an older one grants less, never more)
//!   and the receiver READs the posted word again. The mode word needs no seal: the sender reads
//!   only its [`PLAIN`] bit, which lies in one byte, and a byte is placed whole.

pub mod link;
pub mod setup;

use std::net::TcpStream;
use std::sync::Arc;

use signals::Limits;

use crate::counters::LinkCounters;
use crate::pages::PagePool;
use crate::sync::{Ordering, SharedWord};
pub use link::{RdmaReceiver, RdmaSender};
pub use setup::{RdmaLink, RdmaParams, RdmaSetupError};

/// Request a send completion every this many work requests.
pub const SIGNAL_EVERY: u32 = 16;
/// Send-queue slots kept for credit writes.
pub const CONTROL_RESERVE: u32 = 4;
/// Receive requests are re-posted once this many were used.
pub const REPOST_BATCH: u32 = 16;

/// Control line offsets (bytes after the ring, in the ring region): the credit word the peer
/// writes and its check word ([`seal`]), the mode word (its receiver's mode epoch, shifted left
/// by one, and [`PLAIN`]) it writes, and the posted word (this side's position in the peer's
/// ring after its last post) with its check word, which it reads.
pub const CREDIT_AT: usize = 0;
/// See [`CREDIT_AT`].
pub const MODE_AT: usize = 16;
/// The mode word's bit for "plain writes will do: this receiver polls its ring".
pub const PLAIN: u64 = 1;
/// See [`CREDIT_AT`].
pub const POSTED_AT: usize = 24;
/// Bytes of a sealed word: the word, then its check.
pub const SEALED: usize = 16;

/// The check word written after a credit or posted word, in the same write: a bijective mix in
/// which every byte of the word moves every byte of the check, so a pair read while it was
/// being placed (some bytes of either word old, some new) does not match, unless the mix
/// happens to be whole (all old or all new). Not 0 for the word 0, so zeroed memory is no word.
pub fn seal(word: u64) -> u64 {
    let x = (word ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let x = (x ^ x >> 29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ x >> 32
}

/// The word of a sealed pair, when its check matches (else it was read mid-placement).
#[inline]
pub fn unseal(word: u64, check: u64) -> Option<u64> {
    (seal(word) == check).then_some(word)
}

/// Bytes of a frame's head and of its tail.
pub const FRAME_HEAD: usize = 8;
/// See [`FRAME_HEAD`].
pub const FRAME_TAIL: usize = 8;

/// The head of a frame in the ring, and what its tail repeats.
///
/// ```text
///  byte 0           4                               8        8+len      8+len+4      8+len+8
///  | seq u32        | wrapped (bit 31) | len (30..0) | body    | checksum | seq u32    |
/// ```
/// `seq` is the frame's sequence number ([`frame_seq`]), never 0, so the zeroed ring and the
/// older frames in it never match the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    /// The frame skipped the rest of the previous lap: it starts at ring offset 0.
    pub wrapped: bool,
    /// Body bytes (whole signals).
    pub len: u32,
}

impl FrameHead {
    const WRAPPED: u32 = 1 << 31;

    /// The head's second word.
    pub fn encode(self) -> u32 {
        debug_assert!(self.len < Self::WRAPPED);
        self.len | if self.wrapped { Self::WRAPPED } else { 0 }
    }

    /// Reads a head's second word (any value decodes; the receiver checks the length).
    pub fn decode(v: u32) -> FrameHead {
        FrameHead { wrapped: v & Self::WRAPPED != 0, len: v & !Self::WRAPPED }
    }
}

/// The sequence number of the `n`th frame (`n` from 1): 1, 2, ..., 2^32 - 1, 1, ...
pub fn frame_seq(n: u64) -> u32 {
    ((n - 1) % u64::from(u32::MAX)) as u32 + 1
}

/// The sequence number after `seq` (`next_seq(frame_seq(n)) == frame_seq(n + 1)`), with no
/// division: the halves keep the next number instead of deriving it from a count.
pub fn next_seq(seq: u32) -> u32 {
    if seq == u32::MAX {
        1
    } else {
        seq + 1
    }
}

/// A frame's checksum over its head word, its sequence number and its body (whole words).
/// It catches a frame read while still being placed (bytes of an older lap inside), so it is
/// a sum that vectorises, not a hash.
pub fn frame_checksum(head: u32, seq: u32, body: &[u32]) -> u32 {
    let mut lanes = [0u64; 4];
    let chunks = body.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &w) in lanes.iter_mut().zip(c) {
            *l = l.wrapping_add(u64::from(w));
        }
    }
    for (l, &w) in lanes.iter_mut().zip(rest) {
        *l = l.wrapping_add(u64::from(w));
    }
    let mut h = u64::from(head) << 32 | u64::from(seq);
    for (i, l) in lanes.iter().enumerate() {
        h ^= l.rotate_left(i as u32 * 16 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    (h ^ h >> 32) as u32
}

/// The credit word a receiver writes into its sender's memory.
///
/// ```text
///  bits 63 .. 32                          31 .. 0
///  receive requests ever posted (mod 2^32) ring bytes ever consumed (mod 2^32)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credit {
    /// Ring bytes consumed, wrap skips included.
    pub consumed: u32,
    /// Receive requests posted, the initial ones included.
    pub posted: u32,
}

impl Credit {
    /// The word.
    pub fn encode(self) -> u64 {
        u64::from(self.posted) << 32 | u64::from(self.consumed)
    }

    /// Reads a word.
    pub fn decode(w: u64) -> Credit {
        Credit { consumed: w as u32, posted: (w >> 32) as u32 }
    }
}

/// The sender's half of the mode protocol, after staging a post that ends at ring position
/// `end`: publishes `end` in the posted word and its seal in the check word, fences, and reads
/// the mode word. Returns whether plain writes will do (else the post's last write carries an
/// immediate). The receiver's half is done by the NIC, in order at this side: the cleared mode
/// word is placed, then the READ of the sealed posted word executes (a store, then a load), so
/// either that READ sees `end` (or a later position) with its seal or this load sees the
/// cleared bit. A READ that catches the pair between its two stores does not match, and the
/// receiver READs again.
#[inline]
pub fn publish_and_check<W: SharedWord>(posted: &W, check: &W, mode: &W, end: u64) -> bool {
    posted.store(end, Ordering::Relaxed);
    check.store(seal(end), Ordering::Relaxed);
    // SeqCst fence: orders the posted stores before the mode-word load (store-load).
    W::fence_seq_cst();
    mode.load(Ordering::Acquire) & PLAIN != 0
}

/// Makes a set-up link into its two halves; `socket` is the handshake socket (the death notice).
pub fn split(
    link: RdmaLink,
    socket: TcpStream,
    pool: Arc<PagePool>,
    counters: Arc<LinkCounters>,
    limits: Limits,
) -> std::io::Result<(RdmaSender, RdmaReceiver)> {
    link::split(link, socket, pool, counters, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_heads_sequences_and_credits_round_trip() {
        for head in
            [FrameHead { wrapped: false, len: 16 }, FrameHead { wrapped: true, len: (1 << 31) - 4 }]
        {
            assert_eq!(FrameHead::decode(head.encode()), head);
        }
        assert_eq!(FrameHead::decode(0x8000_0010), FrameHead { wrapped: true, len: 16 });
        assert_eq!(frame_seq(1), 1);
        assert_eq!(frame_seq(u64::from(u32::MAX)), u32::MAX);
        assert_eq!(frame_seq(u64::from(u32::MAX) + 1), 1, "0 is skipped");
        for n in [1, 2, 1000, u64::from(u32::MAX) - 1, u64::from(u32::MAX), 3 << 32] {
            assert_eq!(next_seq(frame_seq(n)), frame_seq(n + 1), "after frame {n}");
        }
        assert_eq!(next_seq(0), 1, "a sender that closed no frame yet starts at 1");
        let c = Credit { consumed: u32::MAX - 3, posted: 77 };
        assert_eq!(Credit::decode(c.encode()), c);
        assert_eq!(Credit::decode(0x0000_0005_0000_0040), Credit { consumed: 64, posted: 5 });
    }

    /// Every way a sealed pair can be caught mid-placement (each of its 16 bytes old or new)
    /// reads as the old word, the new word, or no word: never a third value. The first pair is
    /// a credit the rxe rig once read torn (new low bytes under an old top byte).
    #[test]
    fn a_sealed_word_read_mid_placement_is_old_new_or_refused() {
        let credit = |consumed, posted| Credit { consumed, posted }.encode();
        let pairs = [
            (credit(0x1F03_C39C - 0x40, 512), credit(0x2003_C39C, 512)),
            (credit(0x00FF_FFF0, 255), credit(0x0100_0010, 256)),
            (credit(u32::MAX - 7, u32::MAX), credit(8, 0)),
            (0, 1),
            (0x0000_0000_0003_FFF8, 0x0000_0000_0004_0000),
        ];
        for (old, new) in pairs {
            let (old_pair, new_pair) = ([old, seal(old)], [new, seal(new)]);
            let bytes = |pair: [u64; 2]| {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&pair[0].to_le_bytes());
                b[8..].copy_from_slice(&pair[1].to_le_bytes());
                b
            };
            let (o, n) = (bytes(old_pair), bytes(new_pair));
            let mut refused = 0;
            for mask in 0..1u32 << 16 {
                let mut b = [0u8; 16];
                for (i, byte) in b.iter_mut().enumerate() {
                    *byte = if mask & 1 << i != 0 { n[i] } else { o[i] };
                }
                let word = u64::from_le_bytes(b[..8].try_into().unwrap());
                let check = u64::from_le_bytes(b[8..].try_into().unwrap());
                match unseal(word, check) {
                    Some(w) => assert!(w == old || w == new, "{old:#x} -> {new:#x}: read {w:#x}"),
                    None => refused += 1,
                }
            }
            assert!(refused > 0, "{old:#x} -> {new:#x}: some mixes differ");
        }
        assert_eq!(unseal(0, 0), None, "zeroed memory is no word");
        assert_eq!(unseal(42, seal(42)), Some(42));
    }

    #[test]
    fn a_checksum_sees_any_word_of_an_older_lap() {
        let body: Vec<u32> = (0..37u32).map(|i| i.wrapping_mul(0x0101_0101)).collect();
        let sum = frame_checksum(148, 9, &body);
        assert_ne!(frame_checksum(148, 10, &body), sum, "sequence number");
        assert_ne!(frame_checksum(152, 9, &body), sum, "head word");
        for at in 0..body.len() {
            let mut torn = body.clone();
            torn[at] = 0xEEEE_EEEE;
            assert_ne!(frame_checksum(148, 9, &torn), sum, "word {at}");
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;

    /// A sender posting two frames against a receiver that said "plain" and now takes it
    /// back to sleep (the NIC's store of the mode word then its READ of the sealed posted word,
    /// modelled as a store, a fence and two loads, READ again while the pair does not match):
    /// the receiver takes what the READ showed, then sleeps; every frame it has not taken by
    /// then carried an immediate (wakes it).
    #[test]
    fn loom_rdma_mode_change_loses_no_frame() {
        loom::model(|| {
            let posted = Arc::new(AtomicU64::new(0));
            let check = Arc::new(AtomicU64::new(seal(0)));
            let mode = Arc::new(AtomicU64::new(2 | PLAIN));
            // How far frames have landed in the receiver's ring (after the post, so after the
            // sender's check), and the frames that carried an immediate (bit per frame).
            let landed = Arc::new(AtomicU64::new(0));
            let immediate = Arc::new(AtomicU64::new(0));
            let (p, c, m) = (posted.clone(), check.clone(), mode.clone());
            let (l, im) = (landed.clone(), immediate.clone());
            let sender = loom::thread::spawn(move || {
                for end in 1..=2u64 {
                    if !publish_and_check(&*p, &*c, &*m, end) {
                        im.fetch_or(1 << end, Ordering::Relaxed);
                    }
                    SharedWord::store(&*l, end, Ordering::Release);
                }
            });
            SharedWord::store(&*mode, 4, Ordering::Relaxed);
            <AtomicU64 as SharedWord>::fence_seq_cst();
            let read = loop {
                let word = SharedWord::load(&*posted, Ordering::Relaxed);
                if let Some(read) = unseal(word, SharedWord::load(&*check, Ordering::Relaxed)) {
                    break read;
                }
                loom::thread::yield_now();
            };
            // Take everything up to what the READ showed (it was posted, so it lands).
            let mut taken = SharedWord::load(&*landed, Ordering::Acquire);
            while taken < read {
                loom::thread::yield_now();
                taken = SharedWord::load(&*landed, Ordering::Acquire);
            }
            sender.join().unwrap();
            let all = SharedWord::load(&*landed, Ordering::Relaxed);
            let woke = immediate.load(Ordering::Relaxed);
            for frame in taken + 1..=all {
                assert!(woke & 1 << frame != 0, "frame {frame} landed after the sleep, plain");
            }
        });
    }
}
