//! The RDMA verbs transporter: one reliable-connected queue pair per link, batches written
//! straight into the peer's receive ring with RDMA WRITE WITH IMMEDIATE.
//!
//! - [`setup`]: the queue pair, the registered regions and the set-up exchange over the
//!   handshake socket (GID, QP number, PSN, ring address and key, credit address and key).
//! - [`link`]: the sending and receiving halves.
//!
//! The protocol, both directions alike:
//! - **Ring.** Each side registers a receive ring (`ring_bytes`, a power of two) that the peer
//!   writes. The sender keeps a mirror of the peer's ring in its own registered staging memory:
//!   it copies whole signals from its send-buffer pages to the same offset there and posts one
//!   WRITE WITH IMMEDIATE per contiguous run (inline when small). A signal never wraps: when the
//!   next signal does not fit the rest of the lap, the next write starts the new lap and says so
//!   in its immediate ([`Imm`]). One post (one doorbell) carries a whole flush.
//! - **Completions.** Each WRITE WITH IMMEDIATE consumes one receive request at the peer and
//!   raises one receive completion there, in order; the immediate says how many bytes arrived
//!   and whether the lap wrapped, so the receiver needs no index from the sender. The sender asks
//!   for a send completion only every [`SIGNAL_EVERY`] work requests.
//! - **Credits.** The receiver reports, in one 64-bit word it RDMA-WRITEs into the sender's
//!   registered memory, how many ring bytes it has consumed and how many receive requests it
//!   has posted ([`Credit`]). The word rides in the same post as reverse data once an eighth of
//!   the ring or of the receive queue is unreported (piggybacked; less waits, so a ping-pong
//!   does not pay a second write per message), and goes alone once half of either is
//!   unreported, so a one-way stream never starves. Credit writes need no receive request at the sender
//!   (a plain RDMA WRITE), and the send queue keeps [`CONTROL_RESERVE`] slots free for them.
//! - **Wakeups.** The receiver polls its receive CQ while awake. Before sleeping it arms the CQ
//!   (`ibv_req_notify_cq`), polls once more (the arm race), and sleeps in epoll on the
//!   completion channel's descriptor; events are acknowledged in batches. A sender never pays a
//!   wakeup: the NIC raises at most one interrupt per receiver sleep.
//! - **Failure.** A completion in error (a queue pair in error flushes everything), a malformed
//!   immediate or batch, or the handshake socket hanging up fails the link.
//!
//! The credit word is read with one aligned 64-bit load; this relies on the NIC placing an
//! aligned 8-byte write as one unit, which RDMA NICs do (one PCIe write) and rxe does (one
//! kernel `memcpy` of 8 aligned bytes).

pub mod link;
pub mod setup;

use std::net::TcpStream;
use std::sync::Arc;

use signals::Limits;

use crate::counters::LinkCounters;
use crate::pages::PagePool;
pub use link::{RdmaReceiver, RdmaSender};
pub use setup::{RdmaLink, RdmaParams, RdmaSetupError};

/// Request a send completion every this many work requests.
pub const SIGNAL_EVERY: u32 = 16;
/// Send-queue slots kept for credit writes.
pub const CONTROL_RESERVE: u32 = 4;
/// Receive requests are re-posted once this many were used.
pub const REPOST_BATCH: u32 = 16;

/// The immediate of a data write: its length in bytes, and whether it starts a new lap.
///
/// ```text
///  bit 31      30 .. 0
///  wrapped     length in bytes (whole words, at least one signal header)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imm {
    /// The writer skipped the rest of the lap: this data starts at ring offset 0.
    pub wrapped: bool,
    /// Bytes written.
    pub len: u32,
}

impl Imm {
    const WRAPPED: u32 = 1 << 31;

    /// The immediate value.
    pub fn encode(self) -> u32 {
        debug_assert!(self.len < Self::WRAPPED);
        self.len | if self.wrapped { Self::WRAPPED } else { 0 }
    }

    /// Reads an immediate value (any value decodes; the receiver checks the length).
    pub fn decode(v: u32) -> Imm {
        Imm { wrapped: v & Self::WRAPPED != 0, len: v & !Self::WRAPPED }
    }
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
    fn immediates_and_credits_round_trip() {
        for imm in [Imm { wrapped: false, len: 16 }, Imm { wrapped: true, len: (1 << 31) - 4 }] {
            assert_eq!(Imm::decode(imm.encode()), imm);
        }
        assert_eq!(Imm::decode(0x8000_0010), Imm { wrapped: true, len: 16 });
        let c = Credit { consumed: u32::MAX - 3, posted: 77 };
        assert_eq!(Credit::decode(c.encode()), c);
        assert_eq!(Credit::decode(0x0000_0005_0000_0040), Credit { consumed: 64, posted: 5 });
    }
}
