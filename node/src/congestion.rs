//! Which block threads each producer of job buffers waits on: a mask per producer (block
//! threads `0..threads`, then receive paths), bit `t` set while its priority-B lane to thread
//! `t` lacks room for one largest signal. The producer stores it; consumers read it to decide
//! whose lanes to drain while they are congested themselves.
//!
//! Why it is shared: a congested thread runs B signals only from lanes that free what someone
//! waits for. Its own targets' lanes (a target that is also congested on it drains it in
//! turn) were once enough for two threads; in a cycle of three or more (0 waits on 1, 1 on 2, 2
//! on 0), each target's lane to the thread is empty and all three would wait forever. A thread
//! also drains the lane of every producer that waits on it, which breaks any cycle: the
//! waiting producer gets room, runs, and drains the lane before it. The masks are hints, read
//! and written relaxed: a stale bit runs a lane one round early or late, and every round
//! publishes afresh. A producer that starts waiting on a thread also wakes it (the wakeup's
//! fence orders the mask before the thread's re-check), since the thread may sleep with the
//! producer's lane unread.

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU64, Ordering};

/// The masks of one node's producers, each on its own cache line.
#[derive(Debug)]
pub(crate) struct Waits {
    masks: Box<[CachePadded<AtomicU64>]>,
}

impl Waits {
    /// Masks for `producers` producers, all clear.
    pub(crate) fn new(producers: usize) -> Arc<Waits> {
        Arc::new(Waits {
            masks: (0..producers).map(|_| CachePadded::new(AtomicU64::new(0))).collect(),
        })
    }

    /// Producer `producer` now waits on the threads in `mask`.
    #[inline]
    pub(crate) fn publish(&self, producer: usize, mask: u64) {
        if let Some(m) = self.masks.get(producer) {
            // SYNC: a hint only (module doc); nothing is ordered by it.
            m.store(mask, Ordering::Relaxed);
        }
    }

    /// Whether producer `producer` waits on thread `thread`.
    #[inline]
    pub(crate) fn waits_on(&self, producer: usize, thread: usize) -> bool {
        thread < 64
            && self
                .masks
                .get(producer)
                .is_some_and(|m| m.load(Ordering::Relaxed) & (1 << thread) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_per_producer_and_out_of_range_is_no() {
        let w = Waits::new(3);
        w.publish(1, 1 << 2 | 1);
        assert!(w.waits_on(1, 2) && w.waits_on(1, 0) && !w.waits_on(1, 1));
        assert!(!w.waits_on(0, 2) && !w.waits_on(7, 2) && !w.waits_on(1, 64));
        w.publish(1, 0);
        assert!(!w.waits_on(1, 2));
    }
}
