//! Delayed signals a block sends to itself (heartbeats, time-outs, and continuation steps that
//! break long work into pieces, as NDB's CONTINUEB with a delay): a per-thread min-heap of
//! (due time, sequence) over a table of timer slots, all reserved at start-up.
//!
//! A timer carries a short part (up to 25 words) and one long section of up to
//! [`TIMER_SECTION_WORDS`] words, and is named by a [`TimerId`] (slot and generation) that
//! cancels it: a cancelled timer never fires, and an id whose timer fired or was cancelled
//! cancels nothing, even after its slot is reused (the generation moved on).
//!
//! Invariants: a timer fires no earlier than its due time; timers fire in due-time order, and
//! timers due at the same time fire in the order they were set (the sequence breaks ties); the
//! slot table and the heap never grow past the sizes given at start-up (a full table is an error
//! the handler sees, not an allocation). A cancelled timer's heap entry stays until it reaches
//! the top or the heap fills, when the stale entries are swept out in one pass.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use signals::{BlockRef, Gsn, MAX_DATA_WORDS};

/// The longest long section a timer carries, in words.
pub const TIMER_SECTION_WORDS: usize = 64;

/// Names a pending timer, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    slot: u32,
    generation: u32,
}

/// What a timer delivers.
#[derive(Clone, Copy, Debug)]
struct Slot {
    generation: u32,
    live: bool,
    block: BlockRef,
    gsn: Gsn,
    words: [u32; MAX_DATA_WORDS],
    len: u8,
    section: [u32; TIMER_SECTION_WORDS],
    section_len: u8,
}

/// A heap entry: when, in which order, and which slot (of which generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    due_ns: u64,
    seq: u64,
    slot: u32,
    generation: u32,
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so the std max-heap pops the earliest (due, seq) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due_ns, other.seq).cmp(&(self.due_ns, self.seq))
    }
}

/// A timer that fired: what it delivers.
#[derive(Clone, Copy, Debug)]
pub struct Timer {
    /// When it was due, in clock nanoseconds.
    pub due_ns: u64,
    /// The block that set it and receives it.
    pub block: BlockRef,
    /// The signal it delivers.
    pub gsn: Gsn,
    words: [u32; MAX_DATA_WORDS],
    len: u8,
    section: [u32; TIMER_SECTION_WORDS],
    section_len: u8,
}

impl Timer {
    /// The data words it delivers.
    pub fn data(&self) -> &[u32] {
        &self.words[..self.len as usize]
    }

    /// The long section it delivers (empty: none).
    pub fn section(&self) -> &[u32] {
        &self.section[..self.section_len as usize]
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
    /// A longer section than a timer carries.
    #[error("timer section has {words} words (allowed: at most {TIMER_SECTION_WORDS})")]
    SectionTooLong { words: usize },
}

/// The pending timers of one thread.
#[derive(Debug)]
pub struct Timers {
    heap: BinaryHeap<Entry>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    capacity: usize,
    next_seq: u64,
    /// Heap entries whose timer was cancelled.
    stale: usize,
}

impl Timers {
    /// Room for `capacity` pending timers, reserved now.
    pub fn with_capacity(capacity: usize) -> Timers {
        let empty = Slot {
            generation: 0,
            live: false,
            block: BlockRef::new(
                signals::NodeId::MIN,
                signals::BlockNumber(0),
                signals::BlockInstance(0),
            ),
            gsn: Gsn(0),
            words: [0; MAX_DATA_WORDS],
            len: 0,
            section: [0; TIMER_SECTION_WORDS],
            section_len: 0,
        };
        Timers {
            heap: BinaryHeap::with_capacity(capacity),
            slots: vec![empty; capacity],
            free: (0..capacity as u32).rev().collect(),
            capacity,
            next_seq: 0,
            stale: 0,
        }
    }

    /// Sets a timer delivering `gsn` with `data` to `block` at `due_ns`.
    pub fn set(
        &mut self,
        due_ns: u64,
        block: BlockRef,
        gsn: Gsn,
        data: &[u32],
    ) -> Result<TimerId, TimerError> {
        self.set_with_section(due_ns, block, gsn, data, &[])
    }

    /// Sets a timer that also delivers `section` as its long section 0.
    pub fn set_with_section(
        &mut self,
        due_ns: u64,
        block: BlockRef,
        gsn: Gsn,
        data: &[u32],
        section: &[u32],
    ) -> Result<TimerId, TimerError> {
        if data.len() > MAX_DATA_WORDS {
            return Err(TimerError::DataTooLong { words: data.len() });
        }
        if section.len() > TIMER_SECTION_WORDS {
            return Err(TimerError::SectionTooLong { words: section.len() });
        }
        if self.heap.len() >= self.capacity && self.stale > 0 {
            self.sweep();
        }
        let Some(index) = self.free.pop() else {
            return Err(TimerError::Full { capacity: self.capacity });
        };
        let slot = &mut self.slots[index as usize];
        debug_assert!(!slot.live, "a free slot holds no timer");
        slot.live = true;
        slot.block = block;
        slot.gsn = gsn;
        slot.words[..data.len()].copy_from_slice(data);
        slot.len = data.len() as u8;
        slot.section[..section.len()].copy_from_slice(section);
        slot.section_len = section.len() as u8;
        let id = TimerId { slot: index, generation: slot.generation };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { due_ns, seq, slot: index, generation: id.generation });
        debug_assert!(self.heap.capacity() >= self.capacity, "the heap never reallocates");
        Ok(id)
    }

    /// Cancels timer `id`; returns whether it was pending (a fired or cancelled timer's id, even
    /// one whose slot was reused since, cancels nothing).
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let Some(slot) = self.slots.get_mut(id.slot as usize) else { return false };
        if !slot.live || slot.generation != id.generation {
            return false;
        }
        slot.live = false;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.slot);
        self.stale += 1;
        true
    }

    /// Drops the heap entries of cancelled timers (when the heap is full of them).
    fn sweep(&mut self) {
        let slots = &self.slots;
        self.heap.retain(|e| {
            let s = &slots[e.slot as usize];
            s.live && s.generation == e.generation
        });
        self.stale = 0;
    }

    /// Pops cancelled entries off the top, so the top is a pending timer (or the heap empty).
    fn skip_stale(&mut self) {
        while let Some(top) = self.heap.peek() {
            let s = &self.slots[top.slot as usize];
            if s.live && s.generation == top.generation {
                return;
            }
            self.heap.pop();
            self.stale = self.stale.saturating_sub(1);
        }
    }

    /// The earliest due time, if any timer is pending.
    #[inline]
    pub fn next_due_ns(&mut self) -> Option<u64> {
        if self.stale > 0 {
            self.skip_stale();
        }
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
        if self.stale > 0 {
            self.skip_stale();
        }
        // A timer set after the mark is due no earlier than the round's `now_ns`, and one due
        // then is ordered after every older timer due then too: stopping at it skips none of
        // the older due timers.
        let next = self.heap.peek()?;
        if next.due_ns > now_ns || next.seq >= mark {
            return None;
        }
        let entry = self.heap.pop()?;
        let slot = &mut self.slots[entry.slot as usize];
        slot.live = false;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(entry.slot);
        Some(Timer {
            due_ns: entry.due_ns,
            block: slot.block,
            gsn: slot.gsn,
            words: slot.words,
            len: slot.len,
            section: slot.section,
            section_len: slot.section_len,
        })
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.capacity - self.free.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert_eq!(
            t.set_with_section(2, me(), gsn::CONTINUE, &[], &[0; TIMER_SECTION_WORDS + 1]),
            Err(TimerError::SectionTooLong { words: TIMER_SECTION_WORDS + 1 })
        );
    }

    #[test]
    fn a_cancelled_timer_never_fires_and_a_stale_id_cancels_nothing() {
        let mut t = Timers::with_capacity(2);
        let a = t.set(10, me(), gsn::CONTINUE, &[1]).unwrap();
        let b = t.set_with_section(20, me(), gsn::CONTINUE, &[2], &[7, 8, 9]).unwrap();
        assert!(t.cancel(a));
        assert!(!t.cancel(a), "cancelled once");
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_due_ns(), Some(20));
        // The freed slot is reused; the old id does not cancel its new timer.
        let c = t.set(30, me(), gsn::CONTINUE, &[3]).unwrap();
        assert!(!t.cancel(a));
        let fired = t.pop_due(u64::MAX, t.mark()).unwrap();
        assert_eq!((fired.data(), fired.section()), (&[2][..], &[7, 8, 9][..]));
        assert!(!t.cancel(b), "fired already");
        assert_eq!(t.pop_due(u64::MAX, t.mark()).unwrap().data(), &[3]);
        assert!(!t.cancel(c));
        assert!(t.is_empty() && t.pop_due(u64::MAX, t.mark()).is_none());
    }

    #[test]
    fn cancelled_entries_never_fill_the_table() {
        let mut t = Timers::with_capacity(4);
        for i in 0..1000u64 {
            let id = t.set(1_000_000 + i, me(), gsn::CONTINUE, &[]).unwrap();
            assert!(t.cancel(id));
        }
        let kept = t.set(5, me(), gsn::CONTINUE, &[42]).unwrap();
        assert!(t.heap.len() <= 4, "the heap stays within its reserve");
        assert_eq!(t.pop_due(5, t.mark()).unwrap().data(), &[42]);
        assert!(!t.cancel(kept));
    }
}
