//! A row lock (NDB's DBACC lock queues): shared or exclusive, held by transactions, with a FIFO
//! queue of waiting operations.
//!
//! Rules:
//! - a transaction may hold a lock several times (one hold per operation); a request from a
//!   transaction that is the only holder is granted at once, as the stronger of its modes
//!   (an upgrade from shared to exclusive);
//! - otherwise a shared request is granted when the lock is shared and nobody waits, an
//!   exclusive request when nobody holds it and nobody waits;
//! - a request that cannot be granted waits in FIFO order, except an upgrade (its transaction
//!   already holds the lock shared, with others), which waits at the front: it must go first,
//!   or it could never be granted;
//! - on release the waiters at the front are granted while they can be ([`Lock::grant_next`]).
//!
//! A deadlock is not detected here: the coordinator's lock-wait timeout breaks it.

use std::collections::VecDeque;

/// A transaction, as storage knows it: its coordinator's block word and its id.
pub type TxKey = (u32, u64);

/// The two lock modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Many readers.
    Shared,
    /// One transaction.
    Exclusive,
}

/// One row's lock.
#[derive(Clone, Debug, Default)]
pub struct Lock {
    exclusive: bool,
    /// Holding transactions and their hold counts.
    holders: Vec<(TxKey, u32)>,
    /// Waiting operations: (operation handle, its transaction, mode).
    waiters: VecDeque<(u32, TxKey, Mode)>,
}

impl Lock {
    /// Whether nobody holds or waits.
    pub fn is_free(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }

    /// Whether `tx` holds the lock.
    pub fn held_by(&self, tx: TxKey) -> bool {
        self.holders.iter().any(|(t, _)| *t == tx)
    }

    /// Whether `tx` holds it exclusively.
    pub fn held_exclusive_by(&self, tx: TxKey) -> bool {
        self.exclusive && self.held_by(tx)
    }

    fn can_grant(&self, tx: TxKey, mode: Mode, ignore_queue: bool) -> bool {
        let queue_ok = ignore_queue || self.waiters.is_empty();
        if self.holders.is_empty() {
            return queue_ok;
        }
        if self.holders.len() == 1 && self.holders[0].0 == tx {
            return true;
        }
        // A holder asking again for what it has (shared, or anything under its exclusive hold).
        if self.held_by(tx) && (mode == Mode::Shared || self.exclusive) {
            return true;
        }
        !self.exclusive && mode == Mode::Shared && queue_ok && !self.held_by_other_exclusive(tx)
    }

    fn held_by_other_exclusive(&self, tx: TxKey) -> bool {
        self.exclusive && self.holders.iter().any(|(t, _)| *t != tx)
    }

    fn take(&mut self, tx: TxKey, mode: Mode) {
        if mode == Mode::Exclusive {
            self.exclusive = true;
        }
        match self.holders.iter_mut().find(|(t, _)| *t == tx) {
            Some((_, n)) => *n += 1,
            None => self.holders.push((tx, 1)),
        }
    }

    /// Asks for the lock for operation `op` of `tx`: true when granted now, false when queued.
    pub fn acquire(&mut self, op: u32, tx: TxKey, mode: Mode) -> bool {
        if self.can_grant(tx, mode, false) {
            self.take(tx, mode);
            return true;
        }
        if self.held_by(tx) {
            self.waiters.push_front((op, tx, mode));
        } else {
            self.waiters.push_back((op, tx, mode));
        }
        false
    }

    /// Removes a waiting operation (aborted while it waited); whether it was waiting.
    pub fn cancel(&mut self, op: u32) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|(o, _, _)| *o != op);
        before != self.waiters.len()
    }

    /// Drops one hold of `tx` (`all`: every hold). Call [`Lock::grant_next`] after.
    pub fn release(&mut self, tx: TxKey, all: bool) {
        if let Some(i) = self.holders.iter().position(|(t, _)| *t == tx) {
            self.holders[i].1 -= 1;
            if all || self.holders[i].1 == 0 {
                self.holders.swap_remove(i);
            }
        }
        if self.holders.is_empty() {
            self.exclusive = false;
        }
    }

    /// The next waiting operation that can be granted now, granted; `None` when the front
    /// waiter must keep waiting (or nobody waits).
    pub fn grant_next(&mut self) -> Option<u32> {
        let &(op, tx, mode) = self.waiters.front()?;
        if self.can_grant(tx, mode, true) {
            self.waiters.pop_front();
            self.take(tx, mode);
            Some(op)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TxKey = (1, 1);
    const B: TxKey = (1, 2);
    const C: TxKey = (1, 3);

    #[test]
    fn shared_holders_share_and_an_exclusive_waits_for_them_all() {
        let mut l = Lock::default();
        assert!(l.acquire(1, A, Mode::Shared));
        assert!(l.acquire(2, B, Mode::Shared));
        assert!(!l.acquire(3, C, Mode::Exclusive));
        // A holder asking again for what it holds is granted; a new reader behind a waiting
        // writer waits (FIFO).
        assert!(l.acquire(4, A, Mode::Shared));
        let mut other = Lock::default();
        assert!(other.acquire(1, A, Mode::Shared));
        assert!(!other.acquire(2, B, Mode::Exclusive));
        assert!(!other.acquire(3, C, Mode::Shared));
        l.release(A, true);
        assert_eq!(l.grant_next(), None);
        l.release(B, true);
        assert_eq!(l.grant_next(), Some(3));
        assert!(l.held_exclusive_by(C));
    }

    #[test]
    fn a_sole_holder_upgrades_at_once_and_a_shared_one_waits_first_in_line() {
        let mut l = Lock::default();
        assert!(l.acquire(1, A, Mode::Shared));
        assert!(l.acquire(2, A, Mode::Exclusive));
        assert!(l.held_exclusive_by(A));
        let mut l = Lock::default();
        assert!(l.acquire(1, A, Mode::Shared));
        assert!(l.acquire(2, B, Mode::Shared));
        assert!(!l.acquire(3, C, Mode::Exclusive));
        assert!(!l.acquire(4, A, Mode::Exclusive));
        l.release(B, true);
        assert_eq!(l.grant_next(), Some(4), "the upgrade goes before the queued writer");
        assert!(l.held_exclusive_by(A));
        assert_eq!(l.grant_next(), None);
        l.release(A, true);
        assert_eq!(l.grant_next(), Some(3));
    }

    #[test]
    fn cancel_and_hold_counts() {
        let mut l = Lock::default();
        assert!(l.acquire(1, A, Mode::Exclusive));
        assert!(l.acquire(2, A, Mode::Exclusive));
        assert!(!l.acquire(3, B, Mode::Shared));
        assert!(l.cancel(3));
        assert!(!l.cancel(3));
        l.release(A, false);
        assert!(l.held_by(A));
        l.release(A, false);
        assert!(l.is_free());
    }
}
