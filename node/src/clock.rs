//! Time as blocks and timers see it: a monotonic nanosecond count behind a trait, so tests can
//! drive time by hand and check that timers fire in order and never early.
//!
//! Invariant: a clock never goes backwards.

use std::sync::Arc;
use std::time::Instant;

use crate::sync::{AtomicU64, Ordering};

/// A monotonic clock in nanoseconds since an arbitrary start.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds now.
    fn now_ns(&self) -> u64;
}

/// The real monotonic clock (`Instant`), counted from its creation.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    /// A clock reading 0 now.
    pub fn new() -> MonotonicClock {
        MonotonicClock { start: Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to (tests). Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ns: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading 0.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves time forward by `delta_ns`.
    pub fn advance_ns(&self, delta_ns: u64) {
        self.now_ns.fetch_add(delta_ns, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let c2 = c.clone();
        assert_eq!(c.now_ns(), 0);
        c2.advance_ns(5);
        assert_eq!(c.now_ns(), 5);
    }

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let c = MonotonicClock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a);
    }
}
