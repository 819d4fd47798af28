//! A pool of records sized up front (operation records, scan records): a handle is the slot's
//! index (24 bits) with a 7-bit generation above it, and the top bit always clear (free for
//! callers to mark a kind of handle, as the lock queues mark scans), so a stale or forged handle (a signal about
//! a record freed since) finds nothing instead of another record. Full is `None`: the caller
//! answers with `Overload`, the pool never grows past its capacity.

/// Records of type `T`, at most `capacity` in use.
#[derive(Debug)]
pub struct Pool<T> {
    slots: Vec<(u8, Option<T>)>,
    free: Vec<u32>,
    capacity: usize,
}

impl<T> Default for Pool<T> {
    fn default() -> Pool<T> {
        Pool { slots: Vec::new(), free: Vec::new(), capacity: 0 }
    }
}

const INDEX_MASK: u32 = 0x00ff_ffff;
const GENERATION_MASK: u8 = 0x7f;

/// The bit no pool handle has set.
pub const SPARE_BIT: u32 = 1 << 31;

impl<T> Pool<T> {
    /// Sets the capacity (at most 2^24 records) and reserves up to `reserve` slots.
    pub fn set_capacity(&mut self, capacity: usize, reserve: usize) {
        self.capacity = capacity.min(INDEX_MASK as usize + 1);
        self.slots.reserve(reserve.min(self.capacity));
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores `record`; its handle, or `None` when the pool is full.
    pub fn alloc(&mut self, record: T) -> Option<u32> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < self.capacity => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let slot = &mut self.slots[index as usize];
        slot.0 = slot.0.wrapping_add(1) & GENERATION_MASK;
        slot.1 = Some(record);
        Some(index | (u32::from(slot.0) << 24))
    }

    /// The record of `handle`, when it is still the one the handle named.
    pub fn get(&mut self, handle: u32) -> Option<&mut T> {
        let (gen, rec) = self.slots.get_mut((handle & INDEX_MASK) as usize)?;
        if u32::from(*gen) != handle >> 24 {
            return None;
        }
        rec.as_mut()
    }

    /// Removes and returns the record of `handle`.
    pub fn free(&mut self, handle: u32) -> Option<T> {
        let index = handle & INDEX_MASK;
        let (gen, rec) = self.slots.get_mut(index as usize)?;
        if u32::from(*gen) != handle >> 24 {
            return None;
        }
        let rec = rec.take()?;
        self.free.push(index);
        Some(rec)
    }

    /// Records in use.
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The handles of the records in use, with the records.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, (gen, rec))| rec.as_mut().map(|r| (i as u32 | (u32::from(*gen) << 24), r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_handles_find_nothing_and_full_is_none() {
        let mut pool = Pool::default();
        pool.set_capacity(2, 2);
        let a = pool.alloc("a").unwrap();
        let b = pool.alloc("b").unwrap();
        assert_eq!(pool.alloc("c"), None);
        assert_eq!(pool.free(a), Some("a"));
        let c = pool.alloc("c").unwrap();
        assert_eq!(c & INDEX_MASK, a & INDEX_MASK);
        assert_eq!(pool.get(a), None, "the old handle of a reused slot");
        assert_eq!(pool.get(c).copied(), Some("c"));
        assert_eq!(pool.get(b).copied(), Some("b"));
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.free(0xdead_beef), None);
        pool.free(b);
        for _ in 0..300 {
            let h = pool.alloc("d").unwrap();
            assert_eq!(h & SPARE_BIT, 0);
            pool.free(h);
        }
    }
}
