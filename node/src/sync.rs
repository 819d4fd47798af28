//! The one door to atomics and fences for the lock-free parts of the runtime (the sleep/wake
//! protocol in [`crate::sleep`], the stop flag and the shared counters).
//!
//! Normal builds use `core::sync::atomic`; builds with `RUSTFLAGS="--cfg loom"` use `loom`'s
//! modelled types, so the model tests in `sleep.rs` explore every interleaving the memory model
//! allows. Nothing else in the crate may name `core::sync::atomic` or `std::sync::atomic`.
//!
//! Run the model tests with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p blockwire-node --release --lib loom`
//! (its own target directory, so the loom build does not invalidate the normal one).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

/// A `u64` counter written by one thread and read by any: the owner publishes with a relaxed
/// store (no read-modify-write on the hot path), readers take a relaxed snapshot. Counters are
/// statistics, never used to order other memory.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Publishes the owner's running total (single writer).
    #[inline]
    pub fn publish(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds `n` (any thread; used off the hot path, e.g. by senders counting wakeups).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The latest published value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A flag set once by one thread (e.g. "stop") and polled by others.
#[derive(Debug, Default)]
pub struct Flag(AtomicBool);

impl Flag {
    /// A clear flag.
    pub fn new() -> Flag {
        Flag(AtomicBool::new(false))
    }

    /// Sets the flag. SYNC: flag — pairs with the `Acquire` load in [`Flag::is_set`], so what the
    /// setter wrote before is visible to a thread that sees the flag.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the flag is set. SYNC: flag.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
