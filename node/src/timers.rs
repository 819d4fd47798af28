//! Delayed signals a block sends to itself (heartbeats, time-outs, and continuation steps that
//! break long work into pieces, as NDB's CONTINUEB with a delay): a per-thread min-heap of
//! (due time, sequence) with room reserved at start-up.
//!
//! Invariants: a timer fires no earlier than its due time; timers fire in due-time order, and
//! timers due at the same time fire in the order they were set (the sequence breaks ties); the
//! heap never grows past the capacity given at start-up (a full heap is an error the handler
//! sees, not an allocation).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use signals::{BlockRef, Gsn, MAX_DATA_WORDS};

/// One pending timer.
#[derive(Clone, Copy, Debug)]
pub struct Timer {
    /// When it fires, in clock nanoseconds.
    pub due_ns: u64,
    seq: u64,
    /// The block that set it and receives it.
    pub block: BlockRef,
    /// The signal it delivers.
    pub gsn: Gsn,
    words: [u32; MAX_DATA_WORDS],
    len: u8,
}

impl Timer {
    /// The data words it delivers.
    pub fn data(&self) -> &[u32] {
        &self.words[..self.len as usize]
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ns, self.seq) == (other.due_ns, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed, so the std max-heap pops the earliest (due, seq) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due_ns, other.seq).cmp(&(self.due_ns, self.seq))
    }
}

/// Why a timer was not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    /// The thread's timer table is full.
    #[error("timer table full ({capacity} timers pending; limit timers_per_thread)")]
    Full { capacity: usize },
    /// More data words than a signal's short part holds.
    #[error("timer signal has {words} data words (allowed: at most {MAX_DATA_WORDS})")]
    DataTooLong { words: usize },
}

/// The pending timers of one thread.
#[derive(Debug)]
pub struct Timers {
    heap: BinaryHeap<Timer>,
    capacity: usize,
    next_seq: u64,
}

impl Timers {
    /// Room for `capacity` pending timers, reserved now.
    pub fn with_capacity(capacity: usize) -> Timers {
        Timers { heap: BinaryHeap::with_capacity(capacity), capacity, next_seq: 0 }
    }

    /// Sets a timer delivering `gsn` with `data` to `block` at `due_ns`.
    pub fn set(
        &mut self,
        due_ns: u64,
        block: BlockRef,
        gsn: Gsn,
        data: &[u32],
    ) -> Result<(), TimerError> {
        if data.len() > MAX_DATA_WORDS {
            return Err(TimerError::DataTooLong { words: data.len() });
        }
        if self.heap.len() >= self.capacity {
            return Err(TimerError::Full { capacity: self.capacity });
        }
        let mut words = [0u32; MAX_DATA_WORDS];
        words[..data.len()].copy_from_slice(data);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Timer { due_ns, seq, block, gsn, words, len: data.len() as u8 });
        debug_assert!(self.heap.capacity() >= self.capacity, "the heap never reallocates");
        Ok(())
    }

    /// The earliest due time, if any timer is pending.
    #[inline]
    pub fn next_due_ns(&self) -> Option<u64> {
        self.heap.peek().map(|t| t.due_ns)
    }

    /// A mark for [`Timers::pop_due`]: the timers set from now on come after it.
    #[inline]
    pub fn mark(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the earliest timer if it is due at `now_ns` and was set before
    /// `mark` (from [`Timers::mark`]). A timer set while due timers fire (a continuation step
    /// of 0 delay, on a clock that has not moved) waits for the next round, so a chain of such
    /// steps cannot hold a round forever: the round's other work runs between steps.
    #[inline]
    pub fn pop_due(&mut self, now_ns: u64, mark: u64) -> Option<Timer> {
        // A timer set after the mark is due no earlier than the round's `now_ns`, and one due
        // then is ordered after every older timer due then too: stopping at it skips none of
        // the older due timers.
        let next = self.heap.peek()?;
        if next.due_ns <= now_ns && next.seq < mark {
            self.heap.pop()
        } else {
            None
        }
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use signals::{gsn, BlockInstance, BlockNumber, NodeId};

    use super::*;

    fn me() -> BlockRef {
        BlockRef::new(NodeId::MIN, BlockNumber(9), BlockInstance(0))
    }

    #[test]
    fn fire_in_due_order_then_set_order_and_never_early() {
        let mut t = Timers::with_capacity(8);
        t.set(30, me(), gsn::CONTINUE, &[3]).unwrap();
        t.set(10, me(), gsn::CONTINUE, &[1]).unwrap();
        t.set(20, me(), gsn::CONTINUE, &[2]).unwrap();
        t.set(20, me(), gsn::CONTINUE, &[22]).unwrap();
        let all = t.mark();
        assert!(t.pop_due(9, all).is_none());
        assert_eq!(t.pop_due(10, all).unwrap().data(), &[1]);
        assert!(t.pop_due(19, all).is_none());
        assert_eq!(t.pop_due(25, all).unwrap().data(), &[2]);
        assert_eq!(t.pop_due(25, all).unwrap().data(), &[22]);
        assert_eq!(t.next_due_ns(), Some(30));
        assert_eq!(t.pop_due(u64::MAX, all).unwrap().data(), &[3]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_timer_set_after_the_mark_waits_even_when_due() {
        let mut t = Timers::with_capacity(8);
        t.set(5, me(), gsn::CONTINUE, &[1]).unwrap();
        let mark = t.mark();
        // Set while the round fires, due at the round's own instant.
        t.set(5, me(), gsn::CONTINUE, &[2]).unwrap();
        assert_eq!(t.pop_due(5, mark).unwrap().data(), &[1]);
        assert!(t.pop_due(5, mark).is_none());
        assert_eq!(t.pop_due(5, t.mark()).unwrap().data(), &[2]);
    }

    #[test]
    fn full_table_and_long_data_are_errors() {
        let mut t = Timers::with_capacity(1);
        t.set(1, me(), gsn::CONTINUE, &[]).unwrap();
        assert_eq!(t.set(2, me(), gsn::CONTINUE, &[]), Err(TimerError::Full { capacity: 1 }));
        let mut t = Timers::with_capacity(1);
        assert_eq!(
            t.set(2, me(), gsn::CONTINUE, &[0; 26]),
            Err(TimerError::DataTooLong { words: 26 })
        );
    }
}
