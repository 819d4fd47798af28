//! Retry pacing for a sender whose peer stopped taking data.
//!
//! A flush that is blocked (some peer took less than offered) and moved nothing means every
//! peer with waiting signals is stalled: its socket, ring or credit window is full. Flushing
//! again at once only spins a CPU. [`StallBackoff`] says when to try again instead: the first
//! retry [`StallBackoff::MIN`] after the stall, each retry that also moves nothing doubling the
//! wait up to [`StallBackoff::MAX`]; any progress, or a flush that was not blocked, ends it.
//! A peer that reads slower than we write frees room within the first wait, so a stream loses
//! little; a peer that stopped reading costs one flush attempt per `MAX`. The caller polls
//! through waits under [`StallBackoff::SPIN_BELOW`] (the first five: about 0.6 ms in all) and
//! sleeps through longer ones (a block thread in its epoll set, a send thread on its hand-off;
//! those sleeps last at least a millisecond). The back-off is per writer, not per peer: while
//! another peer's flushes move data, a stalled one is tried with them.

use std::time::{Duration, Instant};

/// The back-off state of one sender (a block thread's sink, or a send thread).
#[derive(Clone, Copy, Debug, Default)]
pub struct StallBackoff {
    /// While stalled: when the next flush is due, and the wait that led there.
    stall: Option<(Instant, Duration)>,
}

impl StallBackoff {
    /// The wait before the first retry.
    pub const MIN: Duration = Duration::from_micros(20);
    /// The longest wait between two retries.
    pub const MAX: Duration = Duration::from_millis(1);
    /// Waits shorter than this are polled through, not slept (see [`StallBackoff::retry_soon`]).
    pub const SPIN_BELOW: Duration = Duration::from_micros(500);

    /// Notes what a flush did at `now`. Flushes made before the retry was due (a busy caller
    /// flushes every round anyway) leave the wait as it is.
    #[inline]
    pub fn note(&mut self, moved: bool, blocked: bool, now: impl FnOnce() -> Instant) {
        if moved || !blocked {
            self.stall = None;
            return;
        }
        let now = now();
        let wait = match self.stall {
            None => Self::MIN,
            Some((retry, wait)) if now >= retry => (wait * 2).min(Self::MAX),
            Some(_) => return,
        };
        self.stall = Some((now + wait, wait));
    }

    /// Whether the last flush found every waiting peer stalled.
    pub fn is_stalled(&self) -> bool {
        self.stall.is_some()
    }

    /// Whether a flush may move something now: always, unless stalled and the retry is not due
    /// (the clock, `now`, is read only while stalled).
    pub fn due(&self, now: impl FnOnce() -> Instant) -> bool {
        self.stall.map_or(true, |(retry, _)| now() >= retry)
    }

    /// How long from `now` until the retry is due (`None` when not stalled).
    pub fn until_retry(&self, now: Instant) -> Option<Duration> {
        self.stall.map(|(retry, _)| retry.saturating_duration_since(now))
    }

    /// Whether the retry is due within [`StallBackoff::SPIN_BELOW`] of `now`: too soon to
    /// sleep for (a kernel sleep lasts at least a millisecond here), so the caller keeps
    /// polling, yielding the CPU now and then, until it comes.
    pub fn retry_soon(&self, now: Instant) -> bool {
        self.until_retry(now).is_some_and(|wait| wait < Self::SPIN_BELOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_stalled_retry_up_to_the_cap_and_progress_ends_it() {
        let t0 = Instant::now();
        let mut b = StallBackoff::default();
        assert!(b.due(|| t0) && !b.is_stalled());
        b.note(false, true, || t0);
        assert_eq!(b.until_retry(t0), Some(StallBackoff::MIN));
        assert!(!b.due(|| t0));
        // A flush of a busy round before the retry is due does not stretch the wait.
        b.note(false, true, || t0 + StallBackoff::MIN / 2);
        assert_eq!(b.until_retry(t0), Some(StallBackoff::MIN));
        let mut now = t0;
        let mut wait = StallBackoff::MIN;
        for _ in 0..12 {
            now += wait;
            assert!(b.due(|| now));
            b.note(false, true, || now);
            wait = (wait * 2).min(StallBackoff::MAX);
            assert_eq!(b.until_retry(now), Some(wait));
        }
        assert_eq!(wait, StallBackoff::MAX);
        assert!(!b.retry_soon(now), "a wait at the cap is slept, not polled through");
        assert!(b.retry_soon(now + StallBackoff::MAX - StallBackoff::SPIN_BELOW / 2));
        b.note(true, true, || now);
        assert!(!b.is_stalled() && b.due(|| now) && b.until_retry(now).is_none());
        b.note(false, true, || now);
        b.note(false, false, || now);
        assert!(!b.is_stalled(), "a flush that was not blocked ends the stall");
    }
}
