//! Blocks: state machines that own their data and react to signals, as NDB's blocks do. A block
//! has one entry point per delivered signal, [`Block::execute`], which dispatches on the GSN with
//! a `match` inside the block (no lookup table on the hot path), and an init hook.
//!
//! Through [`Context`] a running handler sends signals to any block of the cluster (the runtime
//! picks the job buffer of the owning thread, or the remote sink for another node), sets timers
//! that send it a signal after a delay (NDB's CONTINUEB with a delay), learns its reference and
//! node, reads the clock, and bumps the named counters it registered in [`Block::init`].
//!
//! Handlers read typed payloads with [`Context::typed`] (and [`Context::typed_head`]), which
//! count and log a signal whose data does not fit its declared struct as a drop; a signal a block
//! does not handle goes to [`Context::unhandled`], the same counted, logged drop. Neither panics.
//!
//! Invariant: a handler runs on its block's thread only, to completion, never re-entered; a
//! send never blocks (back-pressure shows as an error, and the runtime avoids running handlers
//! while a job buffer is congested, see `thread.rs`).

use std::os::fd::RawFd;

use signals::{gsn, BlockRef, Gsn, NodeId, PackError, Signal, SignalData, SignalView};

use crate::clock::Clock;
use crate::io::IoSet;
use crate::lifecycle::{BlockLife, Lifecycle};
use crate::outbox::Outbox;
use crate::remote::RemoteError;
use crate::stats::{CounterId, NamedCounters};
use crate::timers::{TimerError, TimerId, Timers};

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
    pub(crate) node_events: &'a mut Vec<BlockRef>,
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

    /// Subscribes this block to node events: `NODE_CONNECTED` when a link comes up and
    /// `NODE_FAILREP` (with the reason) when one fails, as priority-A signals, in the order the
    /// transporter registry saw them.
    pub fn subscribe_node_events(&mut self) {
        if !self.node_events.contains(&self.me) {
            self.node_events.push(self.me);
        }
    }
}

/// What a thread keeps for its handlers besides the outbox: timers, watched descriptors,
/// failure and drop counts, and the node's lifecycle.
#[derive(Debug)]
pub(crate) struct ThreadLocal {
    pub(crate) timers: Timers,
    pub(crate) io: IoSet,
    pub(crate) failures: u64,
    pub(crate) dropped: u64,
    pub(crate) lifecycle: std::sync::Arc<Lifecycle>,
}

impl ThreadLocal {
    /// A thread's state: `timers` timer slots, descriptors watched through `parker`'s epoll set.
    pub(crate) fn new(
        timers: usize,
        parker: std::sync::Arc<crate::parker::Parker>,
        lifecycle: std::sync::Arc<Lifecycle>,
    ) -> ThreadLocal {
        ThreadLocal {
            timers: Timers::with_capacity(timers),
            io: IoSet::new(parker),
            failures: 0,
            dropped: 0,
            lifecycle,
        }
    }
}

/// What a running handler may do.
#[derive(Debug)]
pub struct Context<'t> {
    pub(crate) me: BlockRef,
    pub(crate) slot: usize,
    pub(crate) out: &'t mut Outbox,
    pub(crate) local: &'t mut ThreadLocal,
    pub(crate) life: &'t mut BlockLife,
    pub(crate) counters: &'t NamedCounters,
    pub(crate) clock: &'t dyn Clock,
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
            self.local.failures += 1;
        }
        result
    }

    /// Sends `gsn` with `data` to this block after `delay_ns` (never earlier), and never in the
    /// pass over due timers that set it: a long job broken into steps of 0 delay (as NDB's
    /// CONTINUEB) runs a step per round, with the thread's other work between them. The id
    /// cancels it ([`Context::cancel_timer`]).
    pub fn send_delayed(
        &mut self,
        delay_ns: u64,
        gsn: Gsn,
        data: &[u32],
    ) -> Result<TimerId, SendError> {
        self.send_delayed_with_section(delay_ns, gsn, data, &[])
    }

    /// [`Context::send_delayed`] with a long section 0 of up to
    /// [`TIMER_SECTION_WORDS`](crate::timers::TIMER_SECTION_WORDS) words.
    pub fn send_delayed_with_section(
        &mut self,
        delay_ns: u64,
        gsn: Gsn,
        data: &[u32],
        section: &[u32],
    ) -> Result<TimerId, SendError> {
        let due = self.clock.now_ns().saturating_add(delay_ns);
        let result = self
            .local
            .timers
            .set_with_section(due, self.me, gsn, data, section)
            .map_err(SendError::from);
        if result.is_err() {
            self.local.failures += 1;
        }
        result
    }

    /// Cancels a timer this thread set: it will not fire. Returns whether it was pending.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.local.timers.cancel(id)
    }

    /// The signal's data as its declared struct, or `None` after counting and logging a drop
    /// (wrong signal, or data whose length does not fit the struct).
    #[inline]
    pub fn typed<'s, T: SignalData>(&mut self, signal: &SignalView<'s>) -> Option<&'s T> {
        match signal.typed::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.drop_signal(signal, &e);
                None
            }
        }
    }

    /// The signal's leading data words as its declared struct and the words after it, or `None`
    /// after counting and logging a drop.
    #[inline]
    pub fn typed_head<'s, T: SignalData>(
        &mut self,
        signal: &SignalView<'s>,
    ) -> Option<(&'s T, &'s [u32])> {
        match signal.typed_head::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.drop_signal(signal, &e);
                None
            }
        }
    }

    /// A signal this block does not handle: counted as dropped and logged.
    pub fn unhandled(&mut self, signal: &SignalView<'_>) {
        self.drop_signal(signal, &"the block does not handle it");
    }

    #[cold]
    fn drop_signal(&mut self, signal: &SignalView<'_>, why: &dyn std::fmt::Display) {
        self.local.dropped += 1;
        tracing::warn!(
            block = %self.me,
            gsn = %signal.gsn(),
            sender = %signal.sender(),
            data_words = signal.data().len(),
            reason = %why,
            dropped = self.local.dropped,
            "signal dropped"
        );
    }

    /// Defers the answer to the `START_ORD` being handled: this block is done with the phase
    /// when it calls [`Context::start_done`], not when the handler returns.
    pub fn defer_start(&mut self) {
        debug_assert!(self.life.phase_ordered > self.life.phase_done, "no START_ORD open");
        self.life.deferred = true;
    }

    /// Finishes a deferred start phase (see [`Context::defer_start`]). Does nothing if no
    /// phase is open.
    pub fn start_done(&mut self) {
        if self.life.phase_ordered > self.life.phase_done && !self.life.stop_ordered {
            self.life.deferred = false;
            self.life.phase_done = self.life.phase_ordered;
            self.local.lifecycle.block_done(self.life.phase_done);
        }
    }

    /// Defers the answer to `STOP_REQ`: the node waits (up to its grace time) until this block
    /// calls [`Context::stop_done`].
    pub fn defer_stop(&mut self) {
        self.life.deferred = true;
    }

    /// Finishes a deferred stop. Does nothing if no stop is open.
    pub fn stop_done(&mut self) {
        if self.life.stop_ordered && !self.life.stop_done {
            self.life.deferred = false;
            self.life.stop_done = true;
            self.local.lifecycle.block_stopped();
        }
    }

    /// Adds `fd` to this thread's wait set: while it is readable (level-triggered), the block
    /// receives `IO_READY` with `token` once per round of its thread, and a sleeping thread
    /// wakes for it. The block keeps `fd` open until [`Context::unwatch_fd`].
    pub fn watch_fd(&mut self, fd: RawFd, token: u32) -> std::io::Result<()> {
        self.local.io.watch(fd, self.slot, token)
    }

    /// Removes `fd` from this thread's wait set.
    pub fn unwatch_fd(&mut self, fd: RawFd) -> std::io::Result<()> {
        self.local.io.unwatch(fd)
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
