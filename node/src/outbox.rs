//! One sending thread's way out: the producer ends of its job-buffer lanes (priority A and B, one
//! per receiving block thread) and its [`RemoteSink`] for other nodes. Routing a signal is an
//! array lookup of the receiving block's thread; remote signals go to the sink untouched.
//!
//! Invariant: `a[t]` and `b[t]` are this thread's lanes to block thread `t`; the thread is their
//! only producer.

use std::sync::Arc;

use signals::{Priority, Signal, SignalView};

use crate::block::SendError;
use crate::jobbuf::JobWriter;
use crate::lane::LaneError;
use crate::remote::{Flushed, RemoteSink, RouteError};
use crate::routing::Routing;

/// The outbound side of one block thread.
#[derive(Debug)]
pub struct Outbox {
    pub(crate) routing: Arc<Routing>,
    a: Vec<JobWriter>,
    b: Vec<JobWriter>,
    pub(crate) remote: Box<dyn RemoteSink>,
    /// Every signal goes to the remote sink, local ones too (the harness sees all, in order).
    pub(crate) capture_all: bool,
}

impl Outbox {
    pub(crate) fn new(
        routing: Arc<Routing>,
        a: Vec<JobWriter>,
        b: Vec<JobWriter>,
        remote: Box<dyn RemoteSink>,
    ) -> Outbox {
        assert_eq!(a.len(), b.len());
        assert!(b.len() <= 64, "congestion masks are 64 bits");
        Outbox { routing, a, b, remote, capture_all: false }
    }

    /// Routes one signal: a job buffer for this node, the remote sink for another.
    #[inline]
    pub fn send(&mut self, signal: &Signal<'_>) -> Result<(), SendError> {
        let receiver = signal.receiver;
        if receiver.node != self.routing.node() || self.capture_all {
            return Ok(self.remote.pack(receiver.node, signal)?);
        }
        let thread = match self.routing.locate(receiver.block, receiver.instance) {
            Some(at) => at.thread as usize,
            None => return Err(SendError::UnknownBlock { receiver }),
        };
        let lane = match signal.priority {
            Priority::A => &mut self.a[thread],
            Priority::B => &mut self.b[thread],
        };
        lane.push(signal).map_err(|e| match e {
            LaneError::Full { .. } => SendError::JobBufferFull { thread },
            LaneError::Pack(p) => SendError::Pack(p),
        })
    }

    /// End of round: publishes every job buffer written to and flushes the remote sink.
    pub fn flush(&mut self) -> Flushed {
        for lane in self.a.iter_mut().chain(self.b.iter_mut()) {
            lane.flush();
        }
        self.remote.flush()
    }

    /// Wakes thread `t` if it sleeps.
    pub(crate) fn wake(&self, t: usize) {
        if let Some(lane) = self.b.get(t) {
            lane.wake_consumer();
        }
    }

    /// Threads whose priority-B lane from here has no spare page (bit `t` for thread `t`).
    /// Reclaims pages returned meanwhile, so calling it again sees room that came back.
    #[inline]
    pub fn congestion_mask(&mut self) -> u64 {
        let mut mask = 0;
        for (t, lane) in self.b.iter_mut().enumerate() {
            if !lane.has_reserve() {
                mask |= 1 << t;
            }
        }
        mask
    }

    /// Forwards a received signal to the lane towards its block's thread.
    #[inline]
    pub(crate) fn forward(&mut self, view: &SignalView<'_>) -> Result<(), RouteError> {
        forward(&self.routing, &mut self.a, &mut self.b, view)
    }

    /// Whether the lane of `priority` to thread `t` has room for a largest signal again.
    pub(crate) fn has_room(&mut self, t: usize, priority: Priority) -> bool {
        let lanes = match priority {
            Priority::A => &mut self.a,
            Priority::B => &mut self.b,
        };
        lanes.get_mut(t).is_some_and(JobWriter::has_reserve)
    }

    /// Lets the remote sink receive, forwarding each signal through this outbox's lanes.
    pub(crate) fn poll_remote(&mut self) -> usize {
        let Outbox { routing, a, b, remote, .. } = self;
        remote.poll(&mut |view| forward(routing, a, b, view))
    }
}

/// Copies a received signal, as it came off the wire, into the lane towards its block's thread.
#[inline]
pub(crate) fn forward(
    routing: &Routing,
    a: &mut [JobWriter],
    b: &mut [JobWriter],
    view: &SignalView<'_>,
) -> Result<(), RouteError> {
    let receiver = view.receiver();
    if receiver.node != routing.node() {
        return Err(RouteError::WrongNode { node: routing.node(), receiver });
    }
    let thread = match routing.locate(receiver.block, receiver.instance) {
        Some(at) => at.thread as usize,
        None => return Err(RouteError::UnknownBlock { receiver }),
    };
    let priority = view.priority();
    let lane = match priority {
        Priority::A => &mut a[thread],
        Priority::B => &mut b[thread],
    };
    lane.push_wire(view.wire_words()).map_err(|e| match e {
        LaneError::Full { .. } => RouteError::Full { thread, priority },
        LaneError::Pack(p) => RouteError::Pack(p),
    })
}
