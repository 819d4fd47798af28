//! The entry point of a receive path: a receive thread (or anything outside the block threads,
//! such as a test or an API front end) holds one [`InboundRouter`] and routes each signal it
//! received to the job buffer of the thread owning the receiving block. Each router is a
//! producer of its own lanes, so every lane keeps a single producer.
//!
//! Invariants: a routed signal is copied verbatim (it was validated by the walker that produced
//! the view); nothing is visible to the block threads until [`InboundRouter::flush`]; a full
//! lane is `RouteError::Full` (stop reading the socket, wait for room, retry), never growth.

use std::sync::Arc;
use std::time::Duration;

use signals::{NodeId, Priority, Signal, SignalView};

use crate::congestion::Waits;
use crate::jobbuf::JobWriter;
use crate::lane::LaneError;
use crate::outbox::forward;
use crate::parker::Parker;
use crate::remote::RouteError;
use crate::routing::Routing;

/// Routes received signals into a node's job buffers.
#[derive(Debug)]
pub struct InboundRouter {
    path: usize,
    routing: Arc<Routing>,
    a: Vec<JobWriter>,
    b: Vec<JobWriter>,
    parker: Arc<Parker>,
    /// Where this path says which thread it waits on, and its producer index there.
    waits: (Arc<Waits>, usize),
}

impl InboundRouter {
    pub(crate) fn new(
        path: usize,
        routing: Arc<Routing>,
        a: Vec<JobWriter>,
        b: Vec<JobWriter>,
        parker: Arc<Parker>,
        waits: (Arc<Waits>, usize),
    ) -> InboundRouter {
        InboundRouter { path, routing, a, b, parker, waits }
    }

    /// Which receive path this is.
    pub fn path(&self) -> usize {
        self.path
    }

    /// Queues one received signal for its block (visible after [`InboundRouter::flush`]).
    #[inline]
    pub fn route(&mut self, view: &SignalView<'_>) -> Result<(), RouteError> {
        forward(&self.routing, &mut self.a, &mut self.b, view)
    }

    /// [`InboundRouter::route`] for a signal that came on the link from node `peer`: a signal
    /// naming a sender on any other node is refused, so a peer cannot have a block answer a
    /// third node in its name.
    #[inline]
    pub fn route_from(&mut self, peer: NodeId, view: &SignalView<'_>) -> Result<(), RouteError> {
        let sender = view.sender();
        if sender.node != peer {
            return Err(RouteError::WrongSender { peer, sender });
        }
        self.route(view)
    }

    /// Packs and queues a signal built locally (tests, API front ends, the data-node binary).
    pub fn send(&mut self, signal: &Signal<'_>) -> Result<(), RouteError> {
        let receiver = signal.receiver;
        if receiver.node != self.routing.node() {
            return Err(RouteError::WrongNode { node: self.routing.node(), receiver });
        }
        let Some(at) = self.routing.locate(receiver.block, receiver.instance) else {
            return Err(RouteError::UnknownBlock { receiver });
        };
        let thread = at.thread as usize;
        let lane = match signal.priority {
            Priority::A => &mut self.a[thread],
            Priority::B => &mut self.b[thread],
        };
        lane.push(signal).map_err(|e| match e {
            LaneError::Full { .. } => RouteError::Full { thread, priority: signal.priority },
            LaneError::Pack(p) => RouteError::Pack(p),
        })
    }

    /// Publishes what was queued and wakes sleeping block threads (once each).
    pub fn flush(&mut self) {
        for lane in self.a.iter_mut().chain(self.b.iter_mut()) {
            lane.flush();
        }
    }

    /// Flushes, then waits (spin-free: announce, re-check, sleep) until the lane of `priority`
    /// to `thread` has room again or `timeout` passes. Returns whether there is room. While it
    /// waits on a B lane, the thread knows (see [`crate::congestion`]) and drains that lane
    /// even when it is congested itself.
    pub fn wait_for_room(&mut self, thread: usize, priority: Priority, timeout: Duration) -> bool {
        let (waits, producer) = (self.waits.0.clone(), self.waits.1);
        let wait_on_b = priority == Priority::B && thread < 64;
        if wait_on_b {
            // Before the flush, which wakes the thread when it publishes anything.
            waits.publish(producer, 1 << thread);
        }
        self.flush();
        let lanes = match priority {
            Priority::A => &mut self.a,
            Priority::B => &mut self.b,
        };
        let Some(lane) = lanes.get_mut(thread) else {
            waits.publish(producer, 0);
            return false;
        };
        if lane.has_reserve() {
            waits.publish(producer, 0);
            return true;
        }
        if wait_on_b {
            // The thread may sleep with this lane unread (congested, it ran nothing from it).
            lane.wake_consumer();
        }
        self.parker.announce();
        let room = lane.has_reserve() || {
            let _ = self.parker.wait(Some(timeout));
            lane.has_reserve()
        };
        self.parker.retract();
        waits.publish(producer, 0);
        room
    }

    /// This path's parker: its epoll set is where a receive thread sleeps (add sockets there);
    /// block threads ring it when they return pages.
    pub fn parker(&self) -> &Arc<Parker> {
        &self.parker
    }
}
