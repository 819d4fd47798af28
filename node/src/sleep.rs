//! The spin-then-sleep protocol with amortised wakeups: a receiver that ran out of work marks
//! itself sleeping, re-checks its queues, and only then blocks; a sender that published work
//! rings the receiver's doorbell only when it finds the mark, and takes the mark as it rings, so
//! one sleep costs at most one wakeup and a busy receiver costs its senders no syscall at all.
//!
//! The rule is the classic store-buffering ("Dekker") handshake that NDB's multi-threaded
//! scheduler and its shared-memory transporter use between job buffers and a sleeping thread:
//!
//! ```text
//!   receiver                              sender
//!   sleeping := true                      publish work (queue store)
//!   fence(SeqCst)          // SYNC: sleep fence(SeqCst)          // SYNC: sleep
//!   re-check queues (load)                if sleeping (load) and swap(sleeping, false):
//!   if empty: wait on doorbell                ring doorbell
//! ```
//!
//! Invariant (model-checked by the loom tests below): whatever the interleaving, either the
//! receiver's re-check sees the published work, or the sender sees the mark and rings; a
//! published item is never left behind a sleeping receiver (no lost wakeup), and each mark is
//! taken by at most one sender (at most one ring per sleep).
//!
//! Run the model tests with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p blockwire-node --release --lib loom`
//! (its own target directory, so the loom build does not invalidate the normal one).

use crossbeam_utils::CachePadded;

use crate::sync::{fence, AtomicBool, Ordering};

/// What wakes a sleeping thread: an eventfd in the thread's epoll set, or (in loom models) a
/// modelled semaphore.
pub trait Doorbell {
    /// Makes the next (or current) wait return.
    fn ring(&self);
}

/// The "I am going to sleep" mark of one thread, alone on its cache line.
#[derive(Debug)]
pub struct SleepFlag {
    sleeping: CachePadded<AtomicBool>,
}

impl Default for SleepFlag {
    fn default() -> Self {
        SleepFlag::new()
    }
}

impl SleepFlag {
    /// A flag saying "awake".
    pub fn new() -> SleepFlag {
        SleepFlag { sleeping: CachePadded::new(AtomicBool::new(false)) }
    }

    /// Receiver, step 1 of going to sleep: publish the mark. The caller must re-check every
    /// queue after this returns and call [`SleepFlag::retract`] if it found work.
    #[inline]
    pub fn announce(&self) {
        // A swap, not a plain store: the swap reads (and so is ordered after) any sender's swap
        // that took an earlier mark. C++ orders a plain store the same way, but loom represents
        // modification order with vector clocks and would leave the two unordered, reporting a
        // lost wakeup the real model forbids. The cost is nil: this runs once per sleep.
        self.sleeping.swap(true, Ordering::Relaxed);
        // SYNC: sleep. A SeqCst fence is needed here, not just Release: the store above and the
        // queue loads of the caller's re-check are a store followed by a load of *another*
        // location, which Release/Acquire never order. Paired with the sender's SeqCst fence
        // in `wake`, one of the two fences comes first in the single total order of SeqCst
        // fences, so either our re-check sees the sender's work or the sender sees our mark.
        fence(Ordering::SeqCst);
    }

    /// Receiver: no longer going to sleep (the re-check found work, or the wait returned).
    /// Returns `true` when a sender had already taken the mark, i.e. a ring is pending or in
    /// flight, and the next wait may return at once.
    #[inline]
    pub fn retract(&self) -> bool {
        !self.sleeping.swap(false, Ordering::Relaxed)
    }

    /// Whether the mark is set (statistics and tests).
    pub fn is_marked(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }

    /// Sender, after publishing work for this receiver: rings `bell` if and only if the
    /// receiver is marked sleeping, taking the mark so concurrent senders do not ring again.
    /// Returns whether it rang.
    #[inline]
    pub fn wake(&self, bell: &impl Doorbell) -> bool {
        // SYNC: sleep. SeqCst fence: orders the caller's queue store before the mark load below
        // (store-load, which needs a full fence); see `announce` for the pairing argument.
        fence(Ordering::SeqCst);
        // The plain load keeps the line shared while the receiver is busy; only a sleeping
        // receiver's line is written, by exactly one sender.
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::Relaxed) {
            bell.ring();
            true
        } else {
            false
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model checks of the protocol: the queue is modelled as a counter of published items
    //! (Release on publish, Acquire on check, like the channel under a job buffer), the doorbell
    //! as a semaphore. A lost wakeup would leave the receiver blocked forever, which loom reports
    //! as a deadlock; the ring count is checked against the number of sleeps.
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    use super::*;

    #[derive(Default)]
    struct Bell {
        tokens: Mutex<usize>,
        cv: Condvar,
        rings: AtomicUsize,
    }

    impl Doorbell for Bell {
        fn ring(&self) {
            self.rings.fetch_add(1, Ordering::Relaxed);
            let mut t = self.tokens.lock().unwrap();
            *t += 1;
            self.cv.notify_one();
        }
    }

    impl Bell {
        fn wait(&self) {
            let mut t = self.tokens.lock().unwrap();
            while *t == 0 {
                t = self.cv.wait(t).unwrap();
            }
            *t = 0;
        }
    }

    #[derive(Default)]
    struct Shared {
        published: AtomicUsize,
        flag: SleepFlag,
        bell: Bell,
    }

    /// The receiver's loop: take what is published; when nothing is, announce, re-check, sleep.
    /// Returns the number of marks announced. Terminates only if every item is seen.
    fn receive_all(s: &Shared, expected: usize) -> usize {
        let mut seen = 0;
        let mut marks = 0;
        while seen < expected {
            let n = s.published.load(Ordering::Acquire);
            if n > seen {
                seen = n;
                continue;
            }
            s.flag.announce();
            marks += 1;
            if s.published.load(Ordering::Acquire) > seen {
                s.flag.retract();
                continue;
            }
            s.bell.wait();
            s.flag.retract();
        }
        marks
    }

    /// Explores the model with at most 3 preemptions per execution (the bound tokio and
    /// crossbeam use; exhaustive search of the two-producer model takes hours).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    fn run(producers: usize, items_each: usize) {
        model(move || {
            let s = Arc::new(Shared::default());
            let handles: Vec<_> = (0..producers)
                .map(|_| {
                    let s = s.clone();
                    thread::spawn(move || {
                        for _ in 0..items_each {
                            s.published.fetch_add(1, Ordering::Release);
                            s.flag.wake(&s.bell);
                        }
                    })
                })
                .collect();
            let marks = receive_all(&s, producers * items_each);
            for h in handles {
                h.join().unwrap();
            }
            let rings = s.bell.rings.load(Ordering::Relaxed);
            // At most one ring per "sleeping" mark: a ring takes the mark it answers, so two
            // senders never both ring for one sleep, and a busy receiver (no mark) costs none.
            assert!(rings <= marks, "rings {rings} > marks {marks}");
            assert!(rings <= producers * items_each, "a ring without a published item");
        });
    }

    #[test]
    fn loom_one_producer_no_lost_wakeup() {
        run(1, 1);
    }

    #[test]
    fn loom_one_producer_two_items() {
        run(1, 2);
    }

    #[test]
    fn loom_two_producers_no_lost_wakeup() {
        run(2, 1);
    }

    /// Fences weakened to Release/Acquire must be caught: the model finds the lost wakeup (the
    /// receiver blocked forever, which loom reports as a deadlock).
    #[test]
    #[should_panic(expected = "deadlock")]
    fn loom_catches_missing_fence() {
        model(|| {
            let s = Arc::new(Shared::default());
            let p = {
                let s = s.clone();
                thread::spawn(move || {
                    s.published.fetch_add(1, Ordering::Release);
                    // Broken sender: no SeqCst fence before reading the mark.
                    if s.flag.sleeping.load(Ordering::Acquire)
                        && s.flag.sleeping.swap(false, Ordering::AcqRel)
                    {
                        s.bell.ring();
                    }
                })
            };
            // Broken receiver: no fence between the mark and the re-check.
            let mut seen = 0;
            while seen < 1 {
                if s.published.load(Ordering::Acquire) > 0 {
                    seen = 1;
                    continue;
                }
                s.flag.sleeping.swap(true, Ordering::Release);
                if s.published.load(Ordering::Acquire) > 0 {
                    s.flag.retract();
                    continue;
                }
                s.bell.wait();
                s.flag.retract();
            }
            p.join().unwrap();
        });
    }
}
