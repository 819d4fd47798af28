//! One partition of one table on a storage instance (NDB's fragment): its rows, the hash index
//! on the primary key, and one ordered index per index of the table (NDB's DBTUX), kept in
//! step with the committed images: an entry for every row with a committed image, keyed by
//! [`crate::index::entry_key`], changed in the same step that changes the image.
//!
//! Row slots are stable: a row keeps its slot from insert until it is reaped. While a scan of
//! the fragment is open, rows are not reaped (their slots and hash entries stay, so a key
//! deleted and inserted again during the scan comes back to the same slot); they are reaped
//! when the last scan closes. A full scan walks the slots in order, so it meets each key at
//! most once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::index;
use crate::locks::{Lock, TxKey};
use crate::schema::Table;

/// Bytes a row costs beyond its key and images (entry, index slot, lock).
pub const ROW_OVERHEAD_BYTES: u64 = 96;

/// Bytes an ordered-index entry costs beyond its key.
pub const INDEX_ENTRY_OVERHEAD_BYTES: u64 = 48;

#[derive(Debug)]
pub(super) struct RowEntry {
    pub key: Box<[u8]>,
    pub committed: Option<Vec<u8>>,
    /// The image of the transaction holding the row exclusively (`None` inside: deleted).
    pub working: Option<(TxKey, Option<Vec<u8>>)>,
    pub lock: Lock,
}

impl RowEntry {
    pub fn cost(&self) -> u64 {
        let image = |i: &Option<Vec<u8>>| i.as_ref().map_or(0, Vec::len) as u64;
        ROW_OVERHEAD_BYTES
            + self.key.len() as u64
            + image(&self.committed)
            + self.working.as_ref().map_or(0, |(_, w)| image(w))
    }

    /// What `tx` sees: its own working image, else the committed one.
    pub fn image_for(&self, tx: TxKey) -> Option<&Vec<u8>> {
        match &self.working {
            Some((owner, image)) if *owner == tx => image.as_ref(),
            _ => self.committed.as_ref(),
        }
    }
}

/// An index entry a commit moved (or removed: a delete) while a scan was open.
#[derive(Debug)]
pub(super) struct Moved {
    pub index: usize,
    pub at: u32,
    pub old: Vec<u8>,
    pub new: Option<Vec<u8>>,
}

/// Hash tables a fragment's primary-key index is split into.
const KEY_SHARDS: usize = 64;

/// The primary-key index of a fragment (key -> row slot), split by the key's hash into
/// [`KEY_SHARDS`] hash tables. A hash table grows by moving every key at once: one table per
/// fragment stalled the storage thread for tens of milliseconds at each doubling past a
/// million rows, in every fragment at nearly the same insert (keys spread evenly), long enough
/// for a node's neighbour to miss its heartbeats. Split, a growth moves a 64th of the keys,
/// and the shards grow at different inserts.
#[derive(Debug)]
pub(super) struct KeyIndex {
    shards: Vec<HashMap<Box<[u8]>, u32>>,
}

impl KeyIndex {
    fn new() -> KeyIndex {
        KeyIndex { shards: (0..KEY_SHARDS).map(|_| HashMap::new()).collect() }
    }

    /// The shard of `key`: the top bits of its FNV-1a hash, mixed (splitmix64's finaliser),
    /// so keys of one partition (whose hashes share a residue) still spread.
    fn shard(key: &[u8]) -> usize {
        let mut z = crate::row::fnv1a(key);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % KEY_SHARDS as u64) as usize
    }

    pub fn get(&self, key: &[u8]) -> Option<&u32> {
        self.shards[Self::shard(key)].get(key)
    }

    pub fn insert(&mut self, key: Box<[u8]>, at: u32) -> Option<u32> {
        self.shards[Self::shard(&key)].insert(key, at)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<u32> {
        self.shards[Self::shard(key)].remove(key)
    }
}

/// One partition of one table on this instance.
#[derive(Debug)]
pub(super) struct Fragment {
    /// The table as this fragment's indexes follow it (the latest definition installed).
    pub table: Arc<Table>,
    /// An index being built: its number and the next slot the builder adds (rows below it are
    /// kept in step at commit; rows from it on are added by the builder when it gets there).
    pub building: Option<(usize, u32)>,
    pub index: KeyIndex,
    pub rows: Vec<Option<RowEntry>>,
    free: Vec<u32>,
    /// One ordered map per index of the table: entry key -> row slot.
    pub ordered: Vec<BTreeMap<Box<[u8]>, u32>>,
    /// Scans open on this fragment: while any is, rows are not reaped.
    pub open_scans: u32,
    deferred: Vec<u32>,
}

impl Fragment {
    /// An empty fragment of `table`.
    pub fn new(table: &Arc<Table>) -> Fragment {
        Fragment {
            table: table.clone(),
            building: None,
            index: KeyIndex::new(),
            rows: Vec::new(),
            free: Vec::new(),
            ordered: vec![BTreeMap::new(); table.index_columns.len()],
            open_scans: 0,
            deferred: Vec::new(),
        }
    }

    /// Hints the CPU to bring the committed image of the row in slot `at` into cache: a scan
    /// reads it a few rows later. Row images are separate allocations, so without this a scan
    /// waits on a cache miss per row.
    #[inline]
    pub fn prefetch_image(&self, at: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(image) = self.rows.get(at).and_then(Option::as_ref).and_then(|e| e.committed.as_ref()) {
            // SAFETY: a prefetch is only a hint: it reads nothing the program sees and never
            // faults, whatever the address (here a live allocation).
            unsafe { core::arch::x86_64::_mm_prefetch(image.as_ptr().cast::<i8>(), core::arch::x86_64::_MM_HINT_T0) };
        }
    }

    pub fn row(&mut self, at: u32) -> Option<&mut RowEntry> {
        self.rows.get_mut(at as usize).and_then(Option::as_mut)
    }

    pub fn insert(&mut self, entry: RowEntry) -> u32 {
        let key = entry.key.clone();
        let at = match self.free.pop() {
            Some(at) => {
                self.rows[at as usize] = Some(entry);
                at
            }
            None => {
                self.rows.push(Some(entry));
                (self.rows.len() - 1) as u32
            }
        };
        self.index.insert(key, at);
        at
    }

    /// Makes `image` the committed image of the row at `at`, moving its ordered-index entries;
    /// returns the change in bytes the row and its entries cost. While a scan is open, each
    /// entry that moved (index, old key, new key) is added to `moved`, for the scans.
    pub fn set_committed(&mut self, at: u32, image: Option<Vec<u8>>, moved: &mut Vec<Moved>) -> i64 {
        let table = self.table.clone();
        let Some(entry) = self.rows.get_mut(at as usize).and_then(Option::as_mut) else { return 0 };
        let before = entry.cost() as i64;
        let old = std::mem::replace(&mut entry.committed, image);
        let mut change = entry.cost() as i64 - before;
        let key = entry.key.clone();
        let new = entry.committed.as_deref();
        for (i, tree) in self.ordered.iter_mut().enumerate() {
            if matches!(self.building, Some((b, next)) if b == i && at >= next) {
                continue;
            }
            // Images were checked against the table when written: a failure here is a bug.
            let old_key = old.as_deref().map(|old| index::entry_key(&table, i, old, &key).expect("committed image decodes"));
            if let Some(k) = &old_key {
                if tree.remove(k.as_slice()).is_some() {
                    change -= (k.len() as u64 + INDEX_ENTRY_OVERHEAD_BYTES) as i64;
                }
            }
            let new_key = new.map(|new| index::entry_key(&table, i, new, &key).expect("committed image decodes"));
            if let Some(k) = &new_key {
                change += (k.len() as u64 + INDEX_ENTRY_OVERHEAD_BYTES) as i64;
                tree.insert(k.clone().into_boxed_slice(), at);
            }
            if let Some(old_key) = old_key.filter(|o| self.open_scans > 0 && Some(o) != new_key.as_ref()) {
                moved.push(Moved { index: i, at, old: old_key, new: new_key });
            }
        }
        change
    }

    /// Removes the row when nothing refers to it any more (deferred while a scan is open);
    /// returns the bytes freed.
    pub fn reap(&mut self, at: u32) -> u64 {
        let Some(entry) = self.rows.get(at as usize).and_then(Option::as_ref) else { return 0 };
        if entry.committed.is_some() || entry.working.is_some() || !entry.lock.is_free() {
            return 0;
        }
        if self.open_scans > 0 {
            self.deferred.push(at);
            return 0;
        }
        let cost = entry.cost();
        if let Some(entry) = self.rows[at as usize].take() {
            self.index.remove(&entry.key);
        }
        self.free.push(at);
        cost
    }

    /// Starts building index `index` of `table` (the fragment's table gains it).
    pub fn begin_build(&mut self, table: &Arc<Table>, index: usize) {
        self.table = table.clone();
        while self.ordered.len() <= index {
            self.ordered.push(BTreeMap::new());
        }
        self.building = Some((index, 0));
    }

    /// Adds the entries of up to `budget` slots to the index being built; returns the bytes
    /// the entries cost and whether the build is done.
    pub fn build_step(&mut self, budget: u32) -> (u64, bool) {
        let Some((index, next)) = self.building else { return (0, true) };
        let end = (next as usize).saturating_add(budget as usize).min(self.rows.len());
        let mut cost = 0;
        for at in next as usize..end {
            let Some(entry) = self.rows[at].as_ref() else { continue };
            let Some(image) = entry.committed.as_deref() else { continue };
            let k = index::entry_key(&self.table, index, image, &entry.key).expect("committed image decodes");
            cost += k.len() as u64 + INDEX_ENTRY_OVERHEAD_BYTES;
            self.ordered[index].insert(k.into_boxed_slice(), at as u32);
        }
        let done = end >= self.rows.len();
        self.building = if done { None } else { Some((index, end as u32)) };
        (cost, done)
    }

    /// Whether index `index` can serve scans here (it exists and is not being built).
    pub fn index_ready(&self, index: usize) -> bool {
        index < self.ordered.len() && !matches!(self.building, Some((b, _)) if b == index)
    }

    /// A scan closed; when it was the last, reaps what waited for it. Returns the bytes freed.
    pub fn scan_closed(&mut self) -> u64 {
        self.open_scans = self.open_scans.saturating_sub(1);
        if self.open_scans > 0 {
            return 0;
        }
        let deferred = std::mem::take(&mut self.deferred);
        deferred.into_iter().map(|at| self.reap(at)).sum()
    }
}
