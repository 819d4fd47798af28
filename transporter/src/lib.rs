//! blockwire's transporters: how packed signal batches move between nodes.
//!
//! This index holds the transporter traits, their error enums and the closed list of
//! implementations used on the hot path ([`AnySender`], [`AnyReceiver`]). Each implementation is
//! a file: [`tcp`] today; shared memory and RDMA verbs reuse the same traits and the conformance
//! suite in `tests/`.
//!
//! A connected link is split into two halves so that block threads can send while a receive
//! thread polls:
//! - [`LinkSender`] takes queued send-buffer pages ([`pages`]) for its peer and writes as much as
//!   the transport accepts now; what it does not take stays queued (back-pressure), and a page
//!   it took only in part is finished by the next call before anything else is written, so the
//!   stream never interleaves two pages.
//! - [`LinkReceiver`] reads what arrived, walks whole signals in place and hands each to a
//!   callback; it exposes a file descriptor for epoll and an `arm` step to call before sleeping.
//!
//! The [`registry`] owns the links: handshakes ([`handshake`]), the per-link state machine,
//! failure events and reconnects.

pub mod backoff;
pub mod counters;
pub mod handshake;
pub mod pages;
pub mod poller;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod receive;
pub mod registry;
pub mod send_buffers;
pub mod send_thread;
pub mod shm;
pub mod stream;
pub mod sync;
pub mod tcp;

use std::io;
use std::os::fd::RawFd;

use signals::{Limits, Malformed, Signal, SignalView, WriteOptions};

pub use backoff::StallBackoff;
pub use counters::{CounterSnapshot, LinkCounters};
pub use pages::{Page, PagePool, PageQueue, SendLevel};
pub use receive::ReceiveSide;
pub use registry::{LinkEvent, LinkState, PeerConfig, Registry, RegistryConfig, RegistryError};
pub use send_buffers::{FlushReport, SendBuffers, SendError};
pub use send_thread::SendThread;

/// The kind of transport a link uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// TCP over the handshake socket.
    Tcp,
    /// Shared-memory rings (same host).
    Shm,
    /// RDMA verbs (reliable-connected queue pair).
    Rdma,
}

impl TransportKind {
    /// The number used in the handshake.
    pub const fn code(self) -> u8 {
        match self {
            TransportKind::Tcp => 1,
            TransportKind::Shm => 2,
            TransportKind::Rdma => 3,
        }
    }

    /// The kind for a handshake number.
    pub const fn from_code(code: u8) -> Option<TransportKind> {
        match code {
            1 => Some(TransportKind::Tcp),
            2 => Some(TransportKind::Shm),
            3 => Some(TransportKind::Rdma),
            _ => None,
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Shm => "shm",
            TransportKind::Rdma => "rdma",
        })
    }
}

/// Why a link stopped working. Every one closes the link and is reported upward.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer closed its end.
    #[error("peer closed the connection")]
    PeerClosed,
    /// A socket or device call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The system error.
        source: io::Error,
    },
    /// The peer sent bytes that can never be a signal.
    #[error("malformed batch from peer: {0}")]
    Malformed(#[from] Malformed),
    /// The peer's shared words or ring contents are impossible (a corrupted or hostile peer).
    #[error("corrupt shared state from peer: {0}")]
    Corrupt(String),
    /// An RDMA verbs call or completion failed (a queue pair in error, say).
    #[error("rdma: {0}")]
    Rdma(String),
    /// The upper layer declared the peer dead (for example heartbeat silence).
    #[error("closed by the upper layer: {0}")]
    Closed(String),
}

/// What one `send` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendProgress {
    /// Bytes written to the transport.
    pub bytes: usize,
    /// Signals whose last byte was written.
    pub signals: usize,
    /// The transport took less than was offered (socket buffer or ring full): try again later.
    pub blocked: bool,
    /// Signals the transport took whole but lost (a post that failed after they were copied):
    /// their bytes are in `bytes` (they left the queue), they count as dropped on the link, not
    /// as sent, and the error comes from the next call.
    pub dropped: usize,
}

/// What one `poll` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollProgress {
    /// Bytes read from the transport.
    pub bytes: usize,
    /// Signals handed to the callback.
    pub signals: usize,
}

/// The sending half of a connected link.
pub trait LinkSender: Send {
    /// Writes as much of `queue` as the transport takes now. Pages written whole go to the
    /// queue's done list ([`PageQueue::finish`]); a page written in part is kept and finished
    /// first by the next call.
    fn send(&mut self, queue: &mut PageQueue) -> Result<SendProgress, LinkError>;

    /// Writes what the transport takes now of `page`, in place, when nothing is queued before
    /// it (a flush of one open page then moves no page). What is left stays in `page` (its
    /// `sent_bytes` say where) for the caller to queue. `None`, having written nothing: this
    /// transport takes pages only through [`LinkSender::send`], or a page taken in part (by
    /// any sending thread's flush) is pending and must be finished first, through the queue.
    fn send_page(&mut self, page: &mut Page) -> Option<Result<SendProgress, LinkError>> {
        let _ = page;
        None
    }

    /// Writes one signal straight into the transport, without a page, when nothing is queued
    /// before it. `None`: nothing was written, because this transport takes signals only in
    /// pages, a page taken in part is pending, it has no room for this one now, or the signal
    /// breaks `limits`; the caller packs it instead (which says what is wrong with it).
    fn send_signal(
        &mut self,
        signal: &Signal<'_>,
        limits: Limits,
        options: WriteOptions,
    ) -> Option<Result<SendProgress, LinkError>> {
        let _ = (signal, limits, options);
        None
    }

    /// Whether the next call has something to finish first: a page taken in part, or an
    /// error met after the last call's progress (reported by the next call).
    fn has_pending(&self) -> bool;

    /// Drops whatever is unsent (the link is closing): returns the signals dropped.
    fn discard_pending(&mut self) -> usize;
}

/// The receiving half of a connected link.
pub trait LinkReceiver: Send {
    /// Reads what has arrived and hands each complete signal to `deliver`, in place.
    fn poll(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<PollProgress, LinkError>;

    /// The descriptor that becomes readable when data (or a hang-up) arrives, for epoll.
    fn raw_fd(&self) -> RawFd;

    /// Prepares to sleep: returns `Ok(false)` when data slipped in and the caller must poll
    /// again instead of sleeping.
    fn arm(&mut self) -> Result<bool, LinkError>;

    /// A second descriptor whose hang-up means the peer died (the handshake socket of a
    /// shared-memory link); it goes into the same epoll set with the same token.
    fn death_fd(&self) -> Option<RawFd> {
        None
    }

    /// Whether the link must be polled on every spin of the receive loop (its data arrives
    /// without making a descriptor readable, as in shared memory), rather than only when epoll
    /// reports it.
    fn needs_polling(&self) -> bool {
        false
    }

    /// Called when epoll reports the link's descriptors: consumes the wakeup and checks that the
    /// peer is alive.
    fn check_alive(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}

/// Every sending half, as a closed set for the hot path.
#[derive(Debug)]
pub enum AnySender {
    /// TCP.
    Tcp(tcp::TcpSender),
    /// Shared memory.
    Shm(shm::ShmSender),
    /// RDMA verbs.
    #[cfg(feature = "rdma")]
    Rdma(rdma::RdmaSender),
}

/// Every receiving half, as a closed set for the hot path.
#[derive(Debug)]
pub enum AnyReceiver {
    /// TCP.
    Tcp(tcp::TcpReceiver),
    /// Shared memory.
    Shm(shm::ShmReceiver),
    /// RDMA verbs.
    #[cfg(feature = "rdma")]
    Rdma(rdma::RdmaReceiver),
}

impl LinkSender for AnySender {
    #[inline]
    fn send(&mut self, queue: &mut PageQueue) -> Result<SendProgress, LinkError> {
        match self {
            AnySender::Tcp(s) => s.send(queue),
            AnySender::Shm(s) => s.send(queue),
            #[cfg(feature = "rdma")]
            AnySender::Rdma(s) => s.send(queue),
        }
    }

    #[inline]
    fn send_page(&mut self, page: &mut Page) -> Option<Result<SendProgress, LinkError>> {
        match self {
            AnySender::Tcp(s) => s.send_page(page),
            AnySender::Shm(s) => s.send_page(page),
            #[cfg(feature = "rdma")]
            AnySender::Rdma(s) => s.send_page(page),
        }
    }

    #[inline]
    fn send_signal(
        &mut self,
        signal: &Signal<'_>,
        limits: Limits,
        options: WriteOptions,
    ) -> Option<Result<SendProgress, LinkError>> {
        match self {
            AnySender::Tcp(s) => s.send_signal(signal, limits, options),
            AnySender::Shm(s) => s.send_signal(signal, limits, options),
            #[cfg(feature = "rdma")]
            AnySender::Rdma(s) => s.send_signal(signal, limits, options),
        }
    }

    fn has_pending(&self) -> bool {
        match self {
            AnySender::Tcp(s) => s.has_pending(),
            AnySender::Shm(s) => s.has_pending(),
            #[cfg(feature = "rdma")]
            AnySender::Rdma(s) => s.has_pending(),
        }
    }

    fn discard_pending(&mut self) -> usize {
        match self {
            AnySender::Tcp(s) => s.discard_pending(),
            AnySender::Shm(s) => s.discard_pending(),
            #[cfg(feature = "rdma")]
            AnySender::Rdma(s) => s.discard_pending(),
        }
    }
}

impl LinkReceiver for AnyReceiver {
    #[inline]
    fn poll(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<PollProgress, LinkError> {
        match self {
            AnyReceiver::Tcp(r) => r.poll(deliver),
            AnyReceiver::Shm(r) => r.poll(deliver),
            #[cfg(feature = "rdma")]
            AnyReceiver::Rdma(r) => r.poll(deliver),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            AnyReceiver::Tcp(r) => r.raw_fd(),
            AnyReceiver::Shm(r) => r.raw_fd(),
            #[cfg(feature = "rdma")]
            AnyReceiver::Rdma(r) => r.raw_fd(),
        }
    }

    fn arm(&mut self) -> Result<bool, LinkError> {
        match self {
            AnyReceiver::Tcp(r) => r.arm(),
            AnyReceiver::Shm(r) => r.arm(),
            #[cfg(feature = "rdma")]
            AnyReceiver::Rdma(r) => r.arm(),
        }
    }

    fn death_fd(&self) -> Option<RawFd> {
        match self {
            AnyReceiver::Tcp(r) => r.death_fd(),
            AnyReceiver::Shm(r) => r.death_fd(),
            #[cfg(feature = "rdma")]
            AnyReceiver::Rdma(r) => r.death_fd(),
        }
    }

    fn needs_polling(&self) -> bool {
        match self {
            AnyReceiver::Tcp(r) => r.needs_polling(),
            AnyReceiver::Shm(r) => r.needs_polling(),
            #[cfg(feature = "rdma")]
            AnyReceiver::Rdma(r) => r.needs_polling(),
        }
    }

    fn check_alive(&mut self) -> Result<(), LinkError> {
        match self {
            AnyReceiver::Tcp(r) => r.check_alive(),
            AnyReceiver::Shm(r) => r.check_alive(),
            #[cfg(feature = "rdma")]
            AnyReceiver::Rdma(r) => r.check_alive(),
        }
    }
}

/// Walks `bytes` (a copy of what a peer wrote as whole signals) and hands each signal to
/// `deliver`; returns how many. `place` names where the batch came from ("record at ring
/// position 4096"), for the error when the batch ends inside a signal.
pub(crate) fn deliver_batch(
    bytes: &[u8],
    limits: signals::Limits,
    place: &dyn Fn() -> String,
    deliver: &mut dyn FnMut(SignalView<'_>),
) -> Result<usize, LinkError> {
    let mut walker = signals::BatchWalker::new(bytes, limits)
        .map_err(|_| LinkError::Corrupt(format!("{} is not word-aligned in memory", place())))?;
    let mut signals = 0;
    loop {
        match walker.next_signal() {
            Ok(Some(signal)) => {
                deliver(signal);
                signals += 1;
            }
            Ok(None) => return Ok(signals),
            Err(signals::WalkError::Incomplete { offset, need_bytes }) => {
                return Err(LinkError::Corrupt(format!(
                    "{} ends {need_bytes} bytes inside the signal at byte {offset}",
                    place()
                )));
            }
            Err(signals::WalkError::Malformed(m)) => return Err(LinkError::Malformed(m)),
        }
    }
}

/// Whether RDMA links can work here: `Ok` when this build has RDMA and a device opens, else
/// why not ("no RDMA device: the kernel has no RDMA support ...").
pub fn rdma_available() -> Result<(), String> {
    #[cfg(feature = "rdma")]
    return verbs::Device::open(None).map(drop).map_err(|e| e.to_string());
    #[cfg(not(feature = "rdma"))]
    Err("this build has no RDMA support (built without the `rdma` feature)".into())
}

/// Checks a link's handshake socket, kept open for the link's life: a hang-up is the peer's
/// death; bytes on it are a protocol violation (nothing is sent there after set-up).
pub(crate) fn peer_alive(socket: &std::net::TcpStream) -> Result<(), LinkError> {
    let mut byte = [0u8; 1];
    match socket.peek(&mut byte) {
        Ok(0) => Err(LinkError::PeerClosed),
        Ok(_) => Err(LinkError::Corrupt("unexpected bytes on the link's handshake socket".into())),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(LinkError::Io { op: "peek link socket", source: e }),
    }
}
