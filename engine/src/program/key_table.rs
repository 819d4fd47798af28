//! The group key table: encoded group keys -> group numbers, for [`super::Groups`] (one
//! partition's scan, once per row) and [`super::Merger`] (the coordinator).
//!
//! Open addressing with linear probing over a power-of-two slot array kept at most half full;
//! keys live back to back in one byte arena, in group order, each with its full hash (compared
//! before the bytes). Only a new group writes memory (its key bytes, and now and then a
//! doubling of the slots or the arena); looking up an existing group allocates nothing and
//! calls no library comparison (`memcmp` on short keys costs more than the whole lookup on
//! some CPUs, and an empty key's dangling pointer made it slower still).
//!
//! The hash is a multiply-rotate mix over 8-byte words (in the manner of rustc's FxHash) with
//! a per-table random seed, so crafted keys cannot be made to collide on purpose, and a final
//! avalanche so that the low bits the slot index takes depend on every input bit.
//!
//! Invariants: `slots.len()` is 0 or a power of two at least twice the group count; a slot
//! holds 0 (empty) or a group number + 1; the groups' key spans tile `keys` in group order.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Where one group's key sits, and its hash.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    end: usize,
    hash: u64,
}

/// See the module comment.
#[derive(Debug)]
pub(super) struct KeyTable {
    seed: u64,
    slots: Vec<u32>,
    entries: Vec<Entry>,
    keys: Vec<u8>,
}

/// The table holds as many groups as it was allowed: the key is new and would be one more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Full;

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// The 8 bytes at the front of `bytes` (which has at least 8) as a word.
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(w)
}

/// Whether two keys are equal, compared a word at a time.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let whole = a.len() / 8 * 8;
    let mut at = 0;
    while at < whole {
        if word(&a[at..]) != word(&b[at..]) {
            return false;
        }
        at += 8;
    }
    a[whole..].iter().zip(&b[whole..]).all(|(x, y)| x == y)
}

impl KeyTable {
    pub(super) fn new() -> KeyTable {
        KeyTable {
            seed: RandomState::new().hash_one(0x5eed_u64),
            slots: Vec::new(),
            entries: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// How many groups.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The key of group `group` (< `len()`).
    pub(super) fn key(&self, group: usize) -> &[u8] {
        let e = self.entries[group];
        &self.keys[e.start..e.end]
    }

    fn hash(&self, key: &[u8]) -> u64 {
        let mut h = self.seed ^ (key.len() as u64).wrapping_mul(MIX);
        let whole = key.len() / 8 * 8;
        let mut at = 0;
        while at < whole {
            h = (h.rotate_left(26) ^ word(&key[at..])).wrapping_mul(MIX);
            at += 8;
        }
        let mut tail = [0u8; 8];
        tail[..key.len() - whole].copy_from_slice(&key[whole..]);
        h = (h.rotate_left(26) ^ u64::from_le_bytes(tail)).wrapping_mul(MIX);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    /// The group of `key`, made when new unless the table already holds `limit` groups.
    /// Returns the group number and whether it is new.
    pub(super) fn find_or_insert(
        &mut self,
        key: &[u8],
        limit: usize,
    ) -> Result<(usize, bool), Full> {
        let hash = self.hash(key);
        if !self.slots.is_empty() {
            let mask = self.slots.len() - 1;
            let mut at = hash as usize & mask;
            loop {
                let slot = self.slots[at];
                if slot == 0 {
                    break;
                }
                let e = self.entries[slot as usize - 1];
                if e.hash == hash && same(&self.keys[e.start..e.end], key) {
                    return Ok((slot as usize - 1, false));
                }
                at = (at + 1) & mask;
            }
        }
        let group = self.entries.len();
        if group >= limit || group >= u32::MAX as usize - 1 {
            return Err(Full);
        }
        if (group + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let start = self.keys.len();
        self.keys.extend_from_slice(key);
        self.entries.push(Entry { start, end: self.keys.len(), hash });
        self.place(group, hash);
        Ok((group, true))
    }

    /// Puts group `group` with hash `hash` in the first empty slot of its probe sequence.
    fn place(&mut self, group: usize, hash: u64) {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = group as u32 + 1;
    }

    /// Doubles the slots (16 at first) and places every group again.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        self.slots = vec![0; size];
        for group in 0..self.entries.len() {
            self.place(group, self.entries[group].hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn finds_what_it_holds_and_nothing_else(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..200)) {
            let mut table = KeyTable::new();
            let mut expected: Vec<Vec<u8>> = Vec::new();
            for key in &keys {
                let (group, new) = table.find_or_insert(key, usize::MAX).unwrap();
                match expected.iter().position(|k| k == key) {
                    Some(g) => prop_assert_eq!((group, new), (g, false)),
                    None => {
                        prop_assert_eq!((group, new), (expected.len(), true));
                        expected.push(key.clone());
                    }
                }
            }
            prop_assert_eq!(table.len(), expected.len());
            for (g, key) in expected.iter().enumerate() {
                prop_assert_eq!(table.key(g), &key[..]);
            }
            prop_assert!(table.slots.is_empty() || table.slots.len() >= 2 * table.len());
        }
    }

    #[test]
    fn the_limit_refuses_only_new_keys() {
        let mut table = KeyTable::new();
        assert_eq!(table.find_or_insert(b"", 2), Ok((0, true)));
        assert_eq!(table.find_or_insert(b"a longer key of bytes", 2), Ok((1, true)));
        assert_eq!(table.find_or_insert(b"third", 2), Err(Full));
        assert_eq!(table.find_or_insert(b"", 2), Ok((0, false)));
        assert_eq!(table.find_or_insert(b"a longer key of bytes", 2), Ok((1, false)));
        assert!(
            !same(b"abcdefgh1", b"abcdefgh2")
                && same(b"abcdefgh1", b"abcdefgh1")
                && !same(b"ab", b"abc")
        );
    }
}
