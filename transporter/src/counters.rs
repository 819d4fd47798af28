//! Per-link counters: what moved, how often a receiver slept and was woken, and how full the send
//! buffers got. Written with relaxed atomics (each counter is independent and read only for
//! reporting), so counting costs no ordering on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Counters of one link, shared by its halves and the registry.
        #[derive(Debug, Default)]
        pub struct LinkCounters {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A copy of a link's counters at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct CounterSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl LinkCounters {
            /// Reads every counter.
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }

        impl CounterSnapshot {
            /// Names and values, for printing.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

counters! {
    /// Signals written whole to the transport.
    signals_sent,
    /// Bytes written to the transport.
    bytes_sent,
    /// Write calls (one `writev`, ring publish or post each).
    batches_sent,
    /// Signals received and handed up.
    signals_received,
    /// Bytes received.
    bytes_received,
    /// Read calls that returned data.
    batches_received,
    /// Wakeups this side paid for its peer (eventfd writes, futex wakes; none on TCP or RDMA).
    wakeups_sent,
    /// Times the receiver armed and went to sleep on this link.
    sleeps,
    /// Largest number of bytes queued for this peer at once.
    send_buffer_high_water_bytes,
    /// Signals refused because the peer's send buffers were overloaded.
    overload_refusals,
    /// Signals dropped unsent because the link failed.
    signals_dropped,
    /// Times the link came up.
    connects,
    /// Times the link failed.
    failures,
    /// RDMA: post calls (one doorbell each, a chain of writes).
    rdma_posts,
    /// RDMA: signalled send completions taken (one per several posts).
    rdma_send_completions,
    /// RDMA: completion-channel events taken, i.e. interrupts that woke a sleeping receiver.
    cq_events,
    /// RDMA: times the sender found the peer's ring or receive queue out of credit.
    credit_stalls,
    /// RDMA: credit words written alone (the rest ride with reverse data).
    credit_messages,
    /// RDMA: receive requests re-posted.
    recv_reposts,
    /// RDMA: credit or posted words caught while the NIC was placing them (their check word did
    /// not match), so read again.
    torn_control_reads,
}

impl LinkCounters {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` to a counter that one thread at a time writes: a link half's own traffic
    /// counters (a sender runs under its link's lock, a receiver in its one receive thread).
    /// A plain load and store, so the hot path pays no locked instruction (which would also
    /// wait for the ring stores before it to reach the peer's cache).
    #[inline]
    pub fn add_owned(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Raises the send-buffer high-water mark to `queued_bytes` if it is higher.
    #[inline]
    pub fn note_queued(&self, queued_bytes: u64) {
        // Look first: the mark is rarely raised, and a read costs no locked instruction on
        // every pack.
        if queued_bytes > self.send_buffer_high_water_bytes.load(Ordering::Relaxed) {
            self.send_buffer_high_water_bytes.fetch_max(queued_bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_what_was_added() {
        let c = LinkCounters::default();
        LinkCounters::add(&c.signals_sent, 3);
        c.note_queued(100);
        c.note_queued(50);
        let s = c.snapshot();
        assert_eq!((s.signals_sent, s.send_buffer_high_water_bytes), (3, 100));
        assert!(s.fields().contains(&("signals_sent", 3)));
    }
}
