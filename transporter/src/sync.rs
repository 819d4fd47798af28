//! The one door to the atomics and fences of the transporter's lock-free protocols (the
//! shared-memory rings' indices and the receiver's sleep flag, and the RDMA sender's half of a
//! sleep announcement).
//!
//! Those words live in a shared mapping, so the production code uses the standard atomics laid
//! over the mapping; the protocols are written against [`SharedWord`] so that the same code runs
//! on `loom`'s modelled atomics under `RUSTFLAGS="--cfg loom"`, where the model tests in
//! `shm/wake.rs` and `rdma/mod.rs` explore every interleaving the memory model allows:
//! `RUSTFLAGS="--cfg loom" cargo test -p blockwire-transporter --release --lib loom`

pub use core::sync::atomic::Ordering;

/// A 64-bit word shared between threads or processes, with the operations the protocols use.
pub trait SharedWord: Sync {
    /// Atomic load.
    fn load(&self, order: Ordering) -> u64;
    /// Atomic store.
    fn store(&self, value: u64, order: Ordering);
    /// Atomic swap; returns the old value.
    fn swap(&self, value: u64, order: Ordering) -> u64;
    /// A sequentially consistent fence of the same memory model as this word.
    fn fence_seq_cst();
}

impl SharedWord for core::sync::atomic::AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        core::sync::atomic::AtomicU64::load(self, order)
    }
    #[inline]
    fn store(&self, value: u64, order: Ordering) {
        core::sync::atomic::AtomicU64::store(self, value, order)
    }
    #[inline]
    fn swap(&self, value: u64, order: Ordering) -> u64 {
        core::sync::atomic::AtomicU64::swap(self, value, order)
    }
    #[inline]
    fn fence_seq_cst() {
        core::sync::atomic::fence(Ordering::SeqCst)
    }
}

#[cfg(loom)]
impl SharedWord for loom::sync::atomic::AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        loom::sync::atomic::AtomicU64::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        loom::sync::atomic::AtomicU64::store(self, value, order)
    }
    fn swap(&self, value: u64, order: Ordering) -> u64 {
        loom::sync::atomic::AtomicU64::swap(self, value, order)
    }
    fn fence_seq_cst() {
        loom::sync::atomic::fence(Ordering::SeqCst)
    }
}
