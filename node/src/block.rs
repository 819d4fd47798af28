//! Blocks: state machines that own their data and react to signals, as NDB's blocks do. A block
//! has one entry point per delivered signal, [`Block::execute`], which dispatches on the GSN with
//! a `match` inside the block (no lookup table on the hot path), and an init hook.
//!
//! Through [`Context`] a running handler sends signals to any block of the cluster (the runtime
//! picks the job buffer of the owning thread, or the remote sink for another node), sets timers
//! that send it a signal after a delay (NDB's CONTINUEB with a delay), learns its reference and
//! node, reads the clock, and bumps the named counters it registered in [`Block::init`].
//!
//! Invariant: a handler runs on its block's thread only, to completion, never re-entered; a
//! send never blocks (back-pressure shows as an error, and the runtime avoids running handlers
//! while a job buffer is congested, see `thread.rs`).

use signals::{gsn, BlockRef, Gsn, NodeId, PackError, Signal, SignalView};

use crate::clock::Clock;
use crate::outbox::Outbox;
use crate::remote::RemoteError;
use crate::stats::{CounterId, NamedCounters};
use crate::timers::{TimerError, Timers};

/// A block: what the runtime runs.
pub trait Block: Send + std::fmt::Debug {
    /// Called once before the node starts, on the starting thread: register counters here.
    /// After all blocks are initialised, each receives `START_ORD` on its own thread.
    fn init(&mut self, init: &mut InitContext<'_>) {
        let _ = init;
    }

    /// Runs one signal addressed to this block. Dispatch with `match signal.gsn() { ... }`.
    fn execute(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>);
}

/// Why a send did not happen. Nothing was sent in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The job buffer to the receiving thread is full (back-pressure).
    #[error("job buffer to thread {thread} is full")]
    JobBufferFull { thread: usize },
    /// The receiver is on this node but no such block runs here.
    #[error("no block {receiver} on this node")]
    UnknownBlock { receiver: BlockRef },
    /// Sending to another node failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The signal is invalid.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// A timer could not be set.
    #[error(transparent)]
    Timer(#[from] TimerError),
}

/// What a block may do during [`Block::init`].
#[derive(Debug)]
pub struct InitContext<'a> {
    pub(crate) me: BlockRef,
    pub(crate) counters: &'a mut NamedCounters,
}

impl InitContext<'_> {
    /// This block's reference.
    pub fn me(&self) -> BlockRef {
        self.me
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me.node
    }

    /// Registers a named counter and returns its id for [`Context::bump`].
    pub fn counter(&mut self, name: &'static str) -> CounterId {
        self.counters.register(self.me, name)
    }
}

/// What a running handler may do.
#[derive(Debug)]
pub struct Context<'t> {
    pub(crate) me: BlockRef,
    pub(crate) out: &'t mut Outbox,
    pub(crate) timers: &'t mut Timers,
    pub(crate) counters: &'t NamedCounters,
    pub(crate) clock: &'t dyn Clock,
    pub(crate) failures: &'t mut u64,
}

impl Context<'_> {
    /// This block's reference.
    #[inline]
    pub fn me(&self) -> BlockRef {
        self.me
    }

    /// This node's id.
    #[inline]
    pub fn node_id(&self) -> NodeId {
        self.me.node
    }

    /// The clock, in nanoseconds.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// A priority-B signal from this block to `to`, to fill in and [`Context::send`].
    #[inline]
    pub fn signal(&self, gsn: Gsn, to: BlockRef) -> Signal<'static> {
        Signal::new(gsn, self.me, to)
    }

    /// Sends `signal` (its sender is set to this block) to a block on this node or another.
    #[inline]
    pub fn send(&mut self, signal: &Signal<'_>) -> Result<(), SendError> {
        let signal = Signal { sender: self.me, ..*signal };
        let result = self.out.send(&signal);
        if result.is_err() {
            *self.failures += 1;
        }
        result
    }

    /// Sends `gsn` with `data` to this block after `delay_ns` (never earlier), and never in the
    /// pass over due timers that set it: a long job broken into steps of 0 delay (as NDB's
    /// CONTINUEB) runs a step per round, with the thread's other work between them.
    pub fn send_delayed(&mut self, delay_ns: u64, gsn: Gsn, data: &[u32]) -> Result<(), SendError> {
        let due = self.clock.now_ns().saturating_add(delay_ns);
        let result = self.timers.set(due, self.me, gsn, data).map_err(SendError::from);
        if result.is_err() {
            *self.failures += 1;
        }
        result
    }

    /// Continues long work in a later step: `CONTINUE` with `data` to this block, behind what is
    /// already queued for it (NDB's CONTINUEB without delay).
    pub fn continue_later(&mut self, data: &[u32]) -> Result<(), SendError> {
        let me = self.me;
        self.send(&Signal::new(gsn::CONTINUE, me, me).data(data))
    }

    /// Adds `n` to a named counter registered in [`Block::init`].
    #[inline]
    pub fn bump(&self, counter: CounterId, n: u64) {
        self.counters.bump(counter, n);
    }
}
