//! A node's start phases and its ordered stop, shared by its block threads (or by the
//! thread-less [`crate::harness`]).
//!
//! Start: every block receives `START_ORD` for phase 1, then, once every block of the node is
//! done with phase 1, phase 2, and so on to the node's last phase; then the node has started
//! ([`Lifecycle::wait_started`]). A block is done with a phase when its `START_ORD` handler
//! returns, unless it called [`Context::defer_start`](crate::Context::defer_start): then when
//! it calls [`Context::start_done`](crate::Context::start_done) (after a disk read or a remote
//! answer). So a block of phase 2 can count on phase 1 of every block of its node being done.
//! This is NDB's STTOR / STTORRY walk, node-local.
//!
//! Stop: [`Lifecycle::request_stop`] has every block receive `STOP_REQ`; each finishes or aborts
//! its work and is done when its handler returns or, deferred the same way, when it calls
//! [`Context::stop_done`](crate::Context::stop_done). The node stops its threads when every
//! block is done or the grace time has passed.
//!
//! Invariants: the phase counter only grows; the thread that finishes the last block of a phase
//! resets the pending count before it publishes the next phase (release), and threads read the
//! phase with acquire, so no block finishes phase p + 1 against phase p's count.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::parker::Parker;

/// Where one block is in the lifecycle (owned by its thread).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockLife {
    /// The last phase whose `START_ORD` this block received.
    pub(crate) phase_ordered: u32,
    /// The last phase this block is done with.
    pub(crate) phase_done: u32,
    /// The handler of the current `START_ORD` or `STOP_REQ` deferred its answer.
    pub(crate) deferred: bool,
    /// `STOP_REQ` received.
    pub(crate) stop_ordered: bool,
    /// Done with the stop.
    pub(crate) stop_done: bool,
}

/// The shared state of a node's start and stop.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    blocks: usize,
    last_phase: u32,
    phase: AtomicU32,
    pending: AtomicUsize,
    stop_requested: AtomicBool,
    stop_pending: AtomicUsize,
    grace_ms: AtomicU32,
    /// (started, stopped) and a condition for waiters.
    told: Mutex<(bool, bool)>,
    changed: Condvar,
    parkers: Mutex<Vec<Arc<Parker>>>,
}

impl Lifecycle {
    /// A node of `blocks` blocks with phases `1..=last_phase`.
    pub(crate) fn new(blocks: usize, last_phase: u32) -> Arc<Lifecycle> {
        let last_phase = last_phase.max(1);
        let life = Lifecycle {
            blocks,
            last_phase,
            phase: AtomicU32::new(if blocks == 0 { last_phase + 1 } else { 1 }),
            pending: AtomicUsize::new(blocks),
            stop_requested: AtomicBool::new(false),
            stop_pending: AtomicUsize::new(blocks),
            grace_ms: AtomicU32::new(0),
            told: Mutex::new((blocks == 0, blocks == 0)),
            changed: Condvar::new(),
            parkers: Mutex::new(Vec::new()),
        };
        Arc::new(life)
    }

    /// The threads to wake when a phase changes or a stop is asked.
    pub(crate) fn set_parkers(&self, parkers: Vec<Arc<Parker>>) {
        *self.parkers.lock().unwrap_or_else(PoisonError::into_inner) = parkers;
    }

    /// The node's last start phase.
    pub(crate) fn last_phase(&self) -> u32 {
        self.last_phase
    }

    /// The phase blocks should run now (`last_phase + 1` once started).
    #[inline]
    pub(crate) fn phase(&self) -> u32 {
        // SYNC: phase — pairs with the release store in `block_done`.
        self.phase.load(Ordering::Acquire)
    }

    /// Whether a stop was asked.
    #[inline]
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// The grace time of the stop asked, in milliseconds.
    pub(crate) fn grace_ms(&self) -> u32 {
        self.grace_ms.load(Ordering::Relaxed)
    }

    /// One block is done with `phase`.
    pub(crate) fn block_done(&self, phase: u32) {
        debug_assert_eq!(phase, self.phase(), "a block finishes the phase in force");
        if self.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last block of the phase: the next phase starts.
        self.pending.store(self.blocks, Ordering::Relaxed);
        // SYNC: phase — the pending count above is visible to whoever sees the new phase.
        self.phase.store(phase + 1, Ordering::Release);
        if phase == self.last_phase {
            tracing::debug!(phases = self.last_phase, "every block started");
            self.tell(|t| t.0 = true);
        }
        self.wake_all();
    }

    /// Asks every block to stop in order, waiting for them at most `grace` from now.
    pub(crate) fn request_stop(&self, grace: Duration) {
        self.grace_ms
            .store(u32::try_from(grace.as_millis()).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.stop_requested.store(true, Ordering::Release);
        self.wake_all();
    }

    /// One block is done with the stop.
    pub(crate) fn block_stopped(&self) {
        if self.stop_pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tell(|t| t.1 = true);
        }
    }

    /// Waits until every block has run every start phase, at most `timeout`.
    pub(crate) fn wait_started(&self, timeout: Duration) -> bool {
        self.wait(timeout, |t| t.0)
    }

    /// Waits until every block is done with the stop, at most `timeout`.
    pub(crate) fn wait_stopped(&self, timeout: Duration) -> bool {
        self.wait(timeout, |t| t.1)
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&(bool, bool)) -> bool) -> bool {
        let guard = self.told.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |t| !done(t))
            .unwrap_or_else(PoisonError::into_inner);
        done(&guard)
    }

    fn tell(&self, what: impl FnOnce(&mut (bool, bool))) {
        what(&mut self.told.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_all();
    }

    fn wake_all(&self) {
        for p in self.parkers.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            p.wake();
        }
    }
}
