//! The seam to other nodes: what a block thread needs from the transporter layer.
//!
//! Outbound, each block thread owns one [`RemoteSink`]: `pack` puts a signal for a peer into the
//! thread's send buffer for that peer (no lock, no allocation), and `flush` hands every
//! non-empty send buffer to its transporter at the end of the round — one hand-off per peer per
//! round, which is where batching happens. Inbound, a receive path (a receive thread, or
//! [`RemoteSink::poll`] inside a block thread) routes each received [`SignalView`] to the job
//! buffer of the thread owning the receiving block, through an
//! [`InboundRouter`](crate::inbound::InboundRouter) or the `route` callback given to `poll`.
//!
//! The real implementation comes from the transporter crate's registry; [`NoRemote`] is the
//! stand-in for a node without links.

use signals::{BlockRef, NodeId, PackError, Priority, Signal, SignalView};

/// Why a signal could not be sent to another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// No link to that node is configured.
    #[error("no link to node {peer}")]
    UnknownPeer { peer: NodeId },
    /// The link exists but is not connected.
    #[error("node {peer} is not connected")]
    Disconnected { peer: NodeId },
    /// The send buffer for that node is full: back-pressure.
    #[error("send buffer for node {peer} is full ({bytes} bytes in use)")]
    Overloaded { peer: NodeId, bytes: usize },
    /// The signal itself is invalid.
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// Why a received signal could not be routed to a local block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The signal is addressed to another node.
    #[error("signal for {receiver} arrived at node {node}")]
    WrongNode { node: NodeId, receiver: BlockRef },
    /// No block with that number and instance runs on this node.
    #[error("no block {receiver} on this node")]
    UnknownBlock { receiver: BlockRef },
    /// The signal names a sender on another node than the one whose link it came on (its
    /// answers would go to that other node).
    #[error("signal from {sender} arrived on the link from node {peer}")]
    WrongSender { peer: NodeId, sender: BlockRef },
    /// The owning thread's job buffer (of this priority) from this receive path is full: stop
    /// reading, retry later.
    #[error("priority {priority:?} job buffer to thread {thread} is full")]
    Full { thread: usize, priority: Priority },
    /// A signal injected locally is invalid.
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// One block thread's outbound path to other nodes.
pub trait RemoteSink: Send + std::fmt::Debug {
    /// Packs `signal` into this thread's send buffer for `peer`. Never blocks.
    fn pack(&mut self, peer: NodeId, signal: &Signal<'_>) -> Result<(), RemoteError>;

    /// End of round: hands every non-empty send buffer to its transporter (one hand-off per
    /// peer), and says what that did.
    fn flush(&mut self) -> Flushed;

    /// Receives in the block thread itself (single-thread nodes, or transports polled by their
    /// block thread): routes each received signal with `route`; returns how many were routed.
    /// The default receives nothing (a receive thread does it instead).
    fn poll(&mut self, route: &mut dyn FnMut(&SignalView<'_>) -> Result<(), RouteError>) -> usize {
        let _ = route;
        0
    }

    /// Whether [`RemoteSink::poll`] would find input now (checked before the thread sleeps).
    fn has_input(&self) -> bool {
        false
    }

    /// Whether packed signals are still waiting to be written (a transport took only part of a
    /// flush): the thread runs rounds again, which flush again, instead of sleeping on them;
    /// while flushes move nothing, it retries on a back-off and may sleep between tries.
    fn has_unsent(&self) -> bool {
        false
    }
}

/// What one [`RemoteSink::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Peers whose transporter was handed a batch.
    pub peers: usize,
    /// Whether anything moved: bytes written, or signals dropped with a failed link.
    pub moved: bool,
    /// Whether some peer took less than it was offered, so signals still wait. Blocked without
    /// having moved anything means every peer with waiting signals is stalled (its socket,
    /// ring or send queue is full), and flushing again at once would only spin.
    pub blocked: bool,
}

/// Makes the [`RemoteSink`] of each block thread at start.
pub trait RemoteFactory: std::fmt::Debug {
    /// The sink for block thread `thread`.
    fn sink(&self, thread: usize) -> Box<dyn RemoteSink>;
}

/// A node with no links: every remote send is `UnknownPeer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRemote;

impl RemoteSink for NoRemote {
    fn pack(&mut self, peer: NodeId, _signal: &Signal<'_>) -> Result<(), RemoteError> {
        Err(RemoteError::UnknownPeer { peer })
    }
    fn flush(&mut self) -> Flushed {
        Flushed::default()
    }
}

impl RemoteFactory for NoRemote {
    fn sink(&self, _thread: usize) -> Box<dyn RemoteSink> {
        Box::new(NoRemote)
    }
}

/// A receive side a block thread owns (`threads.receive = 0`): polled in the thread's round and
/// while it spins, and slept on in the thread's epoll set, so one thread receives, runs and
/// sends. Signals for blocks of that thread run in place, with no job-buffer hop.
pub trait LocalReceive: Send + std::fmt::Debug {
    /// Polls every link once without blocking (after a sleep, `woken`: also the epoll set, for
    /// new links and hang-ups) and hands each signal to `deliver` with the node it came from.
    fn poll(&mut self, woken: bool, deliver: &mut dyn FnMut(NodeId, &SignalView<'_>)) -> usize;

    /// Arms every link before the thread sleeps; false when one has input already.
    fn prepare_sleep(&mut self) -> bool;

    /// The descriptor that is readable when a link has input (added to the thread's epoll set).
    fn wait_fd(&self) -> std::os::fd::RawFd;
}
