//! The node's counters, shared read-only with whoever reports them (the statistics block, the
//! data-node binary's logs): per block thread (signals run, rounds, sleeps, wakeups...), the
//! named counters blocks register, and — supplied by the transporter layer once it is wired
//! in — per link.
//!
//! Invariant: each counter has one writer (its thread), which publishes running totals with
//! relaxed stores once per round; readers see a recent, not an atomic, snapshot.

use std::sync::{Arc, OnceLock};

use crossbeam_utils::CachePadded;

use signals::{BlockRef, NodeId};

use crate::sync::Counter;

/// Counters of one block thread.
#[derive(Debug, Default)]
pub struct ThreadCounters {
    /// Signals executed (job-buffer signals, timers and start orders).
    pub signals_run: Counter,
    /// Rounds run.
    pub rounds: Counter,
    /// Times the thread blocked in its epoll set.
    pub sleeps: Counter,
    /// Sleeps ended by a doorbell ring (rather than a time-out).
    pub wakeups: Counter,
    /// Rounds in which an outbound job buffer was congested (back-pressure seen).
    pub congested_rounds: Counter,
    /// Sends that failed (job buffer full, unknown block or peer, timer table full).
    pub send_failures: Counter,
    /// Signals a block dropped: not handled, or data whose length does not fit the protocol.
    pub signals_dropped: Counter,
}

/// A snapshot of [`ThreadCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSnapshot {
    /// See [`ThreadCounters::signals_run`].
    pub signals_run: u64,
    /// See [`ThreadCounters::rounds`].
    pub rounds: u64,
    /// See [`ThreadCounters::sleeps`].
    pub sleeps: u64,
    /// See [`ThreadCounters::wakeups`].
    pub wakeups: u64,
    /// See [`ThreadCounters::congested_rounds`].
    pub congested_rounds: u64,
    /// See [`ThreadCounters::send_failures`].
    pub send_failures: u64,
    /// See [`ThreadCounters::signals_dropped`].
    pub signals_dropped: u64,
}

impl ThreadCounters {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> ThreadSnapshot {
        ThreadSnapshot {
            signals_run: self.signals_run.get(),
            rounds: self.rounds.get(),
            sleeps: self.sleeps.get(),
            wakeups: self.wakeups.get(),
            congested_rounds: self.congested_rounds.get(),
            send_failures: self.send_failures.get(),
            signals_dropped: self.signals_dropped.get(),
        }
    }
}

/// Counters of one link, as the transporter layer reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// The peer node.
    pub peer: Option<NodeId>,
    /// Signals sent.
    pub signals: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Batches handed to the transport.
    pub batches: u64,
    /// Wakeups sent to the peer.
    pub wakeups_sent: u64,
    /// Highest send-buffer use seen, in bytes.
    pub send_buffer_high_water_bytes: u64,
    /// Times this node's receive thread armed this link and slept (each ended by the kernel
    /// waking it, or a timeout).
    pub receiver_sleeps: u64,
    /// RDMA: completion-channel events taken, i.e. interrupts that woke this node's receiver.
    pub cq_events: u64,
}

impl LinkCounters {
    /// How many counters a link has (after its peer).
    pub const COUNT: usize = 7;

    /// The counters, in the order of the statistics signal and of the printed table.
    pub fn values(&self) -> [u64; LinkCounters::COUNT] {
        [
            self.signals,
            self.bytes,
            self.batches,
            self.wakeups_sent,
            self.send_buffer_high_water_bytes,
            self.receiver_sleeps,
            self.cq_events,
        ]
    }

    /// The counters of `peer` from `values` in the order of [`LinkCounters::values`].
    pub fn from_values(peer: Option<NodeId>, values: [u64; LinkCounters::COUNT]) -> LinkCounters {
        let [signals, bytes, batches, wakeups_sent, send_buffer_high_water_bytes, receiver_sleeps, cq_events] =
            values;
        LinkCounters {
            peer,
            signals,
            bytes,
            batches,
            wakeups_sent,
            send_buffer_high_water_bytes,
            receiver_sleeps,
            cq_events,
        }
    }
}

/// Supplies per-link counters (implemented by the transporter registry).
pub trait LinkStatsSource: Send + Sync + std::fmt::Debug {
    /// Calls `each` once per link.
    fn for_each_link(&self, each: &mut dyn FnMut(LinkCounters));
}

/// Named counters the blocks of one thread registered at init, in registration order.
#[derive(Debug, Default)]
pub struct NamedCounters {
    entries: Vec<(BlockRef, &'static str, Counter)>,
}

/// Index of a named counter in its thread's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterId(pub(crate) u32);

impl NamedCounters {
    /// Registers a counter (before the thread starts).
    pub(crate) fn register(&mut self, owner: BlockRef, name: &'static str) -> CounterId {
        self.entries.push((owner, name, Counter::new()));
        CounterId((self.entries.len() - 1) as u32)
    }

    /// Adds `n` to a counter (its thread only).
    #[inline]
    pub(crate) fn bump(&self, id: CounterId, n: u64) {
        if let Some((_, _, c)) = self.entries.get(id.0 as usize) {
            c.publish(c.get().wrapping_add(n));
        }
    }

    /// Calls `each` with owner, name and value of every counter.
    pub fn for_each(&self, mut each: impl FnMut(BlockRef, &'static str, u64)) {
        for (owner, name, c) in &self.entries {
            each(*owner, name, c.get());
        }
    }

    /// The value of the counter `name` of `owner`, if registered.
    pub fn get(&self, owner: BlockRef, name: &str) -> Option<u64> {
        self.entries.iter().find(|(o, n, _)| *o == owner && *n == name).map(|(_, _, c)| c.get())
    }
}

/// Every counter of one node.
#[derive(Debug)]
pub struct NodeStats {
    node: NodeId,
    /// Padded: each thread writes its own every round, and must not bounce a neighbour's line.
    threads: Vec<CachePadded<ThreadCounters>>,
    named: Vec<OnceLock<Arc<NamedCounters>>>,
    links: OnceLock<Arc<dyn LinkStatsSource>>,
}

impl NodeStats {
    /// Counters for a node of `threads` block threads.
    pub fn new(node: NodeId, threads: usize) -> NodeStats {
        NodeStats {
            node,
            threads: (0..threads).map(|_| CachePadded::new(ThreadCounters::default())).collect(),
            named: (0..threads).map(|_| OnceLock::new()).collect(),
            links: OnceLock::new(),
        }
    }

    /// The node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Per-thread counters.
    pub fn threads(&self) -> &[CachePadded<ThreadCounters>] {
        &self.threads
    }

    /// Thread `thread`'s named counters, once the node has started.
    pub fn named(&self, thread: usize) -> Option<&Arc<NamedCounters>> {
        self.named.get(thread)?.get()
    }

    /// Looks a named counter up in every thread.
    pub fn named_value(&self, owner: BlockRef, name: &str) -> Option<u64> {
        self.named.iter().filter_map(|n| n.get()).find_map(|n| n.get(owner, name))
    }

    pub(crate) fn set_named(&self, thread: usize, counters: Arc<NamedCounters>) {
        if let Some(slot) = self.named.get(thread) {
            let _ = slot.set(counters);
        }
    }

    /// Installs the per-link counter source (the transporter registry); only the first call
    /// takes effect. Returns whether it did.
    pub fn set_link_source(&self, source: Arc<dyn LinkStatsSource>) -> bool {
        self.links.set(source).is_ok()
    }

    /// Calls `each` once per link, if a link source is installed.
    pub fn for_each_link(&self, each: &mut dyn FnMut(LinkCounters)) {
        if let Some(source) = self.links.get() {
            source.for_each_link(each);
        }
    }
}
