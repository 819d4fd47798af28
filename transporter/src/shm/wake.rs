//! The amortised wakeup protocol of a shared-memory ring: a receiver that found nothing for its
//! spin time publishes "sleeping", and a producer pays for a wakeup only when it sees that flag,
//! clearing it so one wakeup serves a whole sleep. The rule is NDB's shared-memory transporter's
//! (and its thread scheduler's): a store-fence-load on each side, Dekker style.
//!
//! Why it cannot lose a wakeup: the receiver does `flag = 1; fence(SeqCst); read producer`, the
//! producer does `producer = p; fence(SeqCst); read flag`. With both fences sequentially
//! consistent, at least one side reads the other's store: either the receiver sees the new data
//! and does not sleep, or the producer sees the flag and wakes it (or both, costing one spare
//! wakeup). The model tests below check this, and that a sleep costs at most one wakeup, under
//! loom.

use crate::sync::{Ordering, SharedWord};

/// Receiver: about to sleep. Publishes the flag, then re-checks `has_data` after the fence;
/// returns `false` (and withdraws the flag) when data slipped in, `true` when it may sleep.
#[inline]
pub fn prepare_sleep<W: SharedWord>(sleeping: &W, has_data: impl FnOnce() -> bool) -> bool {
    sleeping.store(1, Ordering::Relaxed);
    // SeqCst fence: orders the flag store before the producer-index load below (store-load
    // ordering, which release/acquire does not give); pairs with the fence in `should_wake`.
    W::fence_seq_cst();
    if has_data() {
        sleeping.store(0, Ordering::Relaxed);
        return false;
    }
    true
}

/// Receiver: awake again (woken, timed out, or woken by another link): withdraws the flag so
/// producers stop paying for wakeups.
#[inline]
pub fn woke<W: SharedWord>(sleeping: &W) {
    sleeping.store(0, Ordering::Relaxed);
}

/// Producer: after publishing its index, whether it must wake the receiver. Claims the wakeup
/// by clearing the flag, so concurrent or later publishes during the same sleep do not wake again.
#[inline]
pub fn should_wake<W: SharedWord>(sleeping: &W) -> bool {
    // SeqCst fence: orders the producer-index store before the flag load (store-load), pairing
    // with the fence in `prepare_sleep`.
    W::fence_seq_cst();
    sleeping.load(Ordering::Relaxed) == 1 && sleeping.swap(0, Ordering::Relaxed) == 1
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;

    /// One publish against one sleep attempt: if the receiver sleeps, the producer wakes it.
    #[test]
    fn loom_no_lost_wakeup() {
        loom::model(|| {
            let producer = Arc::new(AtomicU64::new(0));
            let sleeping = Arc::new(AtomicU64::new(0));
            let wakeups = Arc::new(AtomicU64::new(0));
            let (p, s, w) = (producer.clone(), sleeping.clone(), wakeups.clone());
            let sender = loom::thread::spawn(move || {
                // SYNC: producer-publish.
                SharedWord::store(&*p, 1, Ordering::Release);
                if should_wake(&*s) {
                    w.fetch_add(1, Ordering::Relaxed);
                }
            });
            // SYNC: producer-publish (acquire side).
            let slept =
                prepare_sleep(&*sleeping, || SharedWord::load(&*producer, Ordering::Acquire) != 0);
            sender.join().unwrap();
            if slept {
                assert_eq!(
                    wakeups.load(Ordering::Relaxed),
                    1,
                    "receiver slept with data and no wakeup"
                );
            }
        });
    }

    /// Two publishes during one sleep cost at most one wakeup.
    #[test]
    fn loom_one_wakeup_per_sleep() {
        loom::model(|| {
            let producer = Arc::new(AtomicU64::new(0));
            let sleeping = Arc::new(AtomicU64::new(0));
            let wakeups = Arc::new(AtomicU64::new(0));
            let (p, s, w) = (producer.clone(), sleeping.clone(), wakeups.clone());
            let sender = loom::thread::spawn(move || {
                for i in 1..=2 {
                    SharedWord::store(&*p, i, Ordering::Release);
                    if should_wake(&*s) {
                        w.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let slept =
                prepare_sleep(&*sleeping, || SharedWord::load(&*producer, Ordering::Acquire) != 0);
            sender.join().unwrap();
            let n = wakeups.load(Ordering::Relaxed);
            assert!(n <= 1, "{n} wakeups for one sleep");
            if slept {
                assert_eq!(n, 1);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    #[test]
    fn flag_round_trip() {
        let flag = AtomicU64::new(0);
        assert!(!prepare_sleep(&flag, || true));
        assert!(!should_wake(&flag));
        assert!(prepare_sleep(&flag, || false));
        assert!(should_wake(&flag));
        assert!(!should_wake(&flag), "one wakeup per sleep");
        assert!(prepare_sleep(&flag, || false));
        woke(&flag);
        assert!(!should_wake(&flag));
    }
}
