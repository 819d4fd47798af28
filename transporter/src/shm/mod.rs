//! The shared-memory transporter: two single-producer/single-consumer rings in one mapping per
//! link, with amortised wakeups.
//!
//! - [`layout`]: the segment (header, control blocks, rings), drawn and checked at compile time.
//! - [`setup`]: creating/opening the segment and passing eventfds over the handshake socket.
//! - [`ring`]: the sending and receiving halves (copy whole signals, one release store per batch;
//!   walk in place, one release store per poll; everything from the peer untrusted).
//! - [`wake`]: the sleep/wake protocol (flag, fence, re-check), model-checked with loom.
//! - [`fdpass`]: SCM_RIGHTS over a Unix socket.
//!
//! The receiver's eventfd sits in the same epoll set as its other links (TCP and RDMA alike), so
//! one receive thread sleeps on all transports at once. The handshake socket stays open for the
//! link's life; a SIGKILLed peer is noticed at once by its hang-up, not at a heartbeat timeout.

pub mod fdpass;
pub mod layout;
pub mod ring;
pub mod setup;
pub mod wake;

use std::io;
use std::net::TcpStream;
use std::sync::Arc;

use signals::Limits;

use crate::counters::LinkCounters;
use crate::pages::PagePool;
pub use ring::{ShmReceiver, ShmSender};
pub use setup::{ShmLink, ShmSetupError};

/// Makes a set-up link into its two halves; `socket` is the handshake socket (the death notice).
pub fn split(
    link: ShmLink,
    socket: TcpStream,
    pool: Arc<PagePool>,
    counters: Arc<LinkCounters>,
    limits: Limits,
) -> io::Result<(ShmSender, ShmReceiver)> {
    let acks = Arc::new(ring::Acks::default());
    let sender = ShmSender::new(
        link.segment.clone(),
        link.send_ring,
        pool,
        counters.clone(),
        link.peer_wake,
        acks.clone(),
    );
    let receiver = ShmReceiver::new(
        link.segment,
        link.receive_ring,
        limits,
        counters,
        link.own_wake,
        socket,
        acks,
    )?;
    Ok((sender, receiver))
}
