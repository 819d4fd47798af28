//! Operations on one inode and its contents: setattr (chmod, chown, truncate, utimens),
//! access and open checks, read and write of the blocks, readlink, readdir and statfs.

use std::collections::BTreeMap;

use client::{AggFn, LockMode, Range, RangeEnd, ScanRequest, Transaction, Value};

use crate::attr::{Attr, Caller, Kind, MAY_READ, MAY_WRITE};
use crate::error::{err, from_cluster, FsError, FsResult};
use crate::ns::{attr_of, locked, now_ns, Dentry, Fail, Namespace, Step};

/// A time to set: a given one (ns since the epoch) or now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// This time.
    At(i64),
    /// The time of the operation.
    Now,
}

/// The attributes a setattr changes (`None`: unchanged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (chmod).
    pub mode: Option<u32>,
    /// New owner (chown).
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// The change is made through an open file handle (ftruncate: no write permission check).
    pub through_handle: bool,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The inode it names.
    pub ino: u64,
    /// The offset to continue after it.
    pub offset: u64,
    /// The named inode's kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
}

/// What `statfs` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Blocks of `block_size` in the configured capacity.
    pub blocks: u64,
    /// Of them free.
    pub free_blocks: u64,
    /// Inodes in the configured capacity.
    pub files: u64,
    /// Of them free.
    pub free_files: u64,
    /// The block size.
    pub block_size: u32,
    /// The longest name.
    pub name_max: u32,
}

/// Blocks one batch writes at most.
const BLOCK_BATCH: usize = 16;
/// Blocks one batch reads at most.
const BLOCK_READS: usize = 128;

impl Namespace<'_> {
    /// Changes attributes, with POSIX's rules on who may change what.
    pub fn setattr(&mut self, ino: u64, set: SetAttr, caller: &Caller) -> FsResult<Attr> {
        if let Some(size) = set.size.filter(|s| *s > self.config.max_file_size) {
            return err(
                libc::EFBIG,
                format!(
                    "size {size} is over the largest file, {} bytes",
                    self.config.max_file_size
                ),
            );
        }
        self.run(Some(ino), |ns, tx| {
            let (before, _) = ns.lock_inodes(tx, &[ino], &[])?;
            let mut a = locked(&before, ino)?;
            let now = now_ns();
            let mut changed = set_mode(&mut a, &set, caller)?;
            changed |= set_owner(&mut a, &set, caller)?;
            changed |= set_times(&mut a, &set, caller, now)?;
            if let Some(size) = set.size {
                match a.kind {
                    Kind::Dir => {
                        return Err(FsError::new(
                            libc::EISDIR,
                            format!("truncate of directory {ino}"),
                        )
                        .into())
                    }
                    Kind::File => {}
                    _ => {
                        return Err(FsError::new(
                            libc::EINVAL,
                            format!("truncate of inode {ino}, not a regular file"),
                        )
                        .into())
                    }
                }
                if !set.through_handle {
                    a.check(caller, MAY_WRITE, "truncate")?;
                }
                if size < a.size {
                    cut_blocks(ns, tx, ino, size)?;
                }
                a.size = size;
                a.mtime = now;
                changed = true;
            }
            if changed {
                a.ctime = now;
                let mut after = BTreeMap::new();
                after.insert(ino, a.clone());
                ns.write_inodes(tx, &before, &after)?;
            }
            ns.commit(tx)?;
            Ok(a)
        })
    }

    /// EACCES unless `caller` may do `mask` on inode `ino` (F_OK: 0 checks that it exists).
    pub fn access(&mut self, ino: u64, mask: u32, caller: &Caller) -> FsResult<Attr> {
        let a = self.getattr(ino)?;
        if mask != 0 {
            a.check(caller, mask, "access")?;
        }
        Ok(a)
    }

    /// The checks of an open with `flags` (`O_RDONLY`, `O_WRONLY`, `O_RDWR`): permission, and
    /// EISDIR for writing a directory. O_TRUNC is a separate setattr.
    pub fn open_file(&mut self, ino: u64, flags: i32, caller: &Caller) -> FsResult<Attr> {
        let a = self.getattr(ino)?;
        let mask = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => MAY_WRITE,
            libc::O_RDWR => MAY_READ | MAY_WRITE,
            _ => MAY_READ,
        };
        if a.kind == Kind::Dir && mask & MAY_WRITE != 0 {
            return err(libc::EISDIR, format!("inode {ino} is a directory (open for writing)"));
        }
        a.check(caller, mask, "open")?;
        Ok(a)
    }

    /// Up to `size` bytes of file `ino` from `offset` (fewer at the end of the file; a block
    /// never written reads as zeros).
    pub fn read(&mut self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let bs = u64::from(self.config.block_size);
        let (inodes, blocks) = (self.tables.inodes.clone(), self.tables.blocks.clone());
        let want_end = offset.saturating_add(u64::from(size)).min(self.config.max_file_size);
        self.run(Some(ino), |ns, tx| {
            // The inode and the blocks, committed reads, in batches of BLOCK_READS.
            let op = tx.read(&inodes, &[Value::I64(ino as i64)], LockMode::CommittedRead)?;
            let mut ops = Vec::new();
            let mut blk = offset / bs;
            while blk * bs < want_end {
                let key = [Value::I64(ino as i64), Value::I64(blk as i64)];
                ops.push((blk, tx.read(&blocks, &key, LockMode::CommittedRead)?));
                blk += 1;
                if ops.len() % BLOCK_READS == 0 && blk * bs < want_end {
                    ns.exec(tx)?;
                }
            }
            ns.commit(tx)?;
            let a = attr_of(tx, op, ino)?;
            if a.kind == Kind::Dir {
                return Err(FsError::new(libc::EISDIR, format!("read of directory {ino}")).into());
            }
            let end = want_end.min(a.size);
            if offset >= end {
                return Ok(Vec::new());
            }
            let mut out = vec![0u8; (end - offset) as usize];
            for (blk, op) in ops {
                let Some(Value::Bytes(data)) = tx.row(op).and_then(|r| r.get("data")) else {
                    continue;
                };
                copy_block(&mut out, offset, blk * bs, data);
            }
            Ok(out)
        })
    }

    /// Writes `data` at `offset` of file `ino`; returns the bytes written (all of them).
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.config.max_file_size {
            let max = self.config.max_file_size;
            return err(
                libc::EFBIG,
                format!(
                    "a write to byte {end} of inode {ino} is over the largest file, {max} bytes"
                ),
            );
        }
        if data.is_empty() {
            return Ok(0);
        }
        let bs = u64::from(self.config.block_size);
        let blocks = self.tables.blocks.clone();
        self.run(Some(ino), |ns, tx| {
            let (before, _) = ns.lock_inodes(tx, &[ino], &[])?;
            let mut a = locked(&before, ino)?;
            if a.kind != Kind::File {
                return Err(FsError::new(
                    libc::EISDIR,
                    format!("write to inode {ino}, not a regular file"),
                )
                .into());
            }
            let (first, last) = (offset / bs, (end - 1) / bs);
            let old = partial_blocks(ns, tx, &a, offset, end)?;
            let mut pending = 0;
            for blk in first..=last {
                let start = blk * bs;
                let mut buf = old.get(&blk).cloned().unwrap_or_default();
                // Bytes past the old end of file in a kept block are zeros, as a hole reads.
                buf.truncate(a.size.saturating_sub(start).min(bs) as usize);
                let (lo, hi) = (offset.max(start), end.min(start + bs));
                let need = (hi - start) as usize;
                if buf.len() < need {
                    buf.resize(need, 0);
                }
                buf[(lo - start) as usize..need]
                    .copy_from_slice(&data[(lo - offset) as usize..(hi - offset) as usize]);
                let row = [
                    ("ino", Value::I64(ino as i64)),
                    ("blk", Value::I64(blk as i64)),
                    ("data", Value::Bytes(buf)),
                ];
                tx.write(&blocks, &row)?;
                pending += 1;
                if pending == BLOCK_BATCH && blk != last {
                    ns.exec(tx)?;
                    pending = 0;
                }
            }
            let now = now_ns();
            a.size = a.size.max(end);
            a.mtime = now;
            a.ctime = now;
            let mut after = BTreeMap::new();
            after.insert(ino, a);
            ns.write_inodes(tx, &before, &after)?;
            ns.commit(tx)?;
            Ok(data.len() as u32)
        })
    }

    /// A symlink's target.
    pub fn readlink(&mut self, ino: u64) -> FsResult<String> {
        let a = self.getattr(ino)?;
        match (a.kind, a.target) {
            (Kind::Symlink, Some(t)) => Ok(t),
            _ => err(libc::EINVAL, format!("inode {ino} is not a symlink")),
        }
    }

    /// Up to `max` entries of directory `ino` after `offset` (0 starts with `.` and `..`;
    /// continue from the last entry's offset). Offsets stay valid while the directory
    /// changes: an entry present throughout is listed exactly once.
    pub fn readdir(&mut self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        let mut out = Vec::new();
        if offset < 2 {
            let a = self.getattr(ino)?;
            a.dir()?;
            if offset < 1 {
                out.push(DirEntry { ino, offset: 1, kind: Kind::Dir, name: ".".into() });
            }
            out.push(DirEntry { ino: a.parent, offset: 2, kind: Kind::Dir, name: "..".into() });
        }
        if out.len() >= max {
            out.truncate(max);
            return Ok(out);
        }
        let after = offset.max(2);
        let request = ScanRequest::new(&self.tables.dentries)
            .index("by_cookie")
            .range(Range {
                low: RangeEnd {
                    values: vec![Value::I64(ino as i64), Value::I64(after as i64)],
                    inclusive: false,
                },
                high: RangeEnd { values: vec![Value::I64(ino as i64)], inclusive: true },
            })
            .ordered()
            .limit((max - out.len()) as u64)
            .batch_rows(((max - out.len()) as u32).clamp(1, 256));
        let table = self.tables.dentries.clone();
        let scan = self.session.scan(&request).map_err(|e| from_cluster(&e))?;
        let columns: Vec<String> = scan.columns().to_vec();
        for row in scan {
            let values = row.map_err(|e| from_cluster(&e))?;
            let mut full = vec![Value::Null; table.def.columns.len()];
            for (name, v) in columns.iter().zip(values) {
                if let Some(i) = table.column_index(name) {
                    full[i] = v;
                }
            }
            let d = Dentry::from_row(&client::Row { table: table.clone(), values: full })?;
            out.push(DirEntry { ino: d.ino, offset: d.cookie, kind: d.kind, name: d.name });
        }
        Ok(out)
    }

    /// The configured capacity, less the inodes and bytes in use (an aggregate pushed to the
    /// data nodes).
    pub fn statfs(&mut self) -> FsResult<StatFs> {
        let request = ScanRequest::new(&self.tables.inodes)
            .aggregate("n", AggFn::Count, None)
            .aggregate("bytes", AggFn::Sum, Some(client::col("size")));
        let mut scan = self.session.scan(&request).map_err(|e| from_cluster(&e))?;
        let row = match scan.next() {
            Some(r) => r.map_err(|e| from_cluster(&e))?,
            None => Vec::new(),
        };
        drop(scan);
        let n = row.first().and_then(Value::as_i64).unwrap_or(0) as u64;
        let bytes = row.get(1).and_then(Value::as_i64).unwrap_or(0) as u64;
        let bs = u64::from(self.config.block_size);
        let blocks = self.config.capacity_bytes / bs;
        Ok(StatFs {
            blocks,
            free_blocks: blocks.saturating_sub(bytes.div_ceil(bs)),
            files: self.config.capacity_inodes,
            free_files: self.config.capacity_inodes.saturating_sub(n),
            block_size: self.config.block_size,
            name_max: crate::schema::NAME_MAX as u32,
        })
    }
}

/// The stored bytes of the blocks a write of `offset..end` covers only in part (its first
/// and last), where they lie within the file: the write keeps their other bytes. Read under
/// the inode's lock, which the caller holds.
fn partial_blocks(
    ns: &mut Namespace<'_>,
    tx: &mut Transaction,
    a: &Attr,
    offset: u64,
    end: u64,
) -> Step<BTreeMap<u64, Vec<u8>>> {
    let bs = u64::from(ns.config.block_size);
    let blocks = ns.tables.blocks.clone();
    let mut partial = Vec::new();
    for blk in [offset / bs, (end - 1) / bs] {
        let covers = offset <= blk * bs && end >= (blk + 1) * bs;
        if !covers && blk * bs < a.size && !partial.iter().any(|(b, _)| *b == blk) {
            let key = [Value::I64(a.ino as i64), Value::I64(blk as i64)];
            partial.push((blk, tx.read(&blocks, &key, LockMode::CommittedRead)?));
        }
    }
    if !partial.is_empty() {
        ns.exec(tx)?;
    }
    Ok(partial
        .into_iter()
        .filter_map(|(b, op)| match tx.row(op).and_then(|r| r.get("data")) {
            Some(Value::Bytes(d)) => Some((b, d.clone())),
            _ => None,
        })
        .collect())
}

/// chmod: the owner or root; anyone may drop the set-id bits (the kernel asks so when a
/// non-owner writes a set-id file). A non-root caller outside the file's group loses set-gid.
fn set_mode(a: &mut Attr, set: &SetAttr, caller: &Caller) -> FsResult<bool> {
    let Some(mode) = set.mode else { return Ok(false) };
    let (root, owner) = (caller.uid == 0, caller.uid == 0 || caller.uid == a.uid);
    let kill_setid = mode & 0o7777 == a.perm & !(libc::S_ISUID | libc::S_ISGID);
    if !owner && !kill_setid {
        return err(
            libc::EPERM,
            format!("uid {} does not own inode {} (chmod)", caller.uid, a.ino),
        );
    }
    a.perm = mode & 0o7777;
    if !root && !caller.in_group(set.gid.unwrap_or(a.gid)) {
        a.perm &= !libc::S_ISGID;
    }
    Ok(true)
}

/// chown: only root changes the owner; the owner may give a group it is in; a non-root
/// chown of a file drops its set-id bits.
fn set_owner(a: &mut Attr, set: &SetAttr, caller: &Caller) -> FsResult<bool> {
    if set.uid.is_none() && set.gid.is_none() {
        return Ok(false);
    }
    let (root, owner) = (caller.uid == 0, caller.uid == 0 || caller.uid == a.uid);
    if !owner {
        return err(
            libc::EPERM,
            format!("uid {} does not own inode {} (chown)", caller.uid, a.ino),
        );
    }
    if set.uid.is_some_and(|u| u != a.uid) && !root {
        return err(libc::EPERM, format!("only root changes an owner (inode {})", a.ino));
    }
    if let Some(g) = set.gid.filter(|g| *g != a.gid && !root && !caller.in_group(*g)) {
        return err(
            libc::EPERM,
            format!("uid {} may not give inode {} group {g}", caller.uid, a.ino),
        );
    }
    a.uid = set.uid.unwrap_or(a.uid);
    a.gid = set.gid.unwrap_or(a.gid);
    if !root && a.kind != Kind::Dir {
        a.perm &= !(libc::S_ISUID | libc::S_ISGID);
    }
    Ok(true)
}

/// utimens: a given time needs the owner or root; "now" also anyone who may write.
fn set_times(a: &mut Attr, set: &SetAttr, caller: &Caller, now: i64) -> FsResult<bool> {
    let owner = caller.uid == 0 || caller.uid == a.uid;
    let mut changed = false;
    for (t, slot) in [(set.atime, 0), (set.mtime, 1)] {
        let Some(t) = t else { continue };
        let value = match t {
            SetTime::At(v) if owner => v,
            SetTime::At(_) => {
                return err(
                    libc::EPERM,
                    format!("uid {} does not own inode {} (utimens)", caller.uid, a.ino),
                )
            }
            SetTime::Now => {
                if !owner {
                    a.check(caller, MAY_WRITE, "touch")?;
                }
                now
            }
        };
        if slot == 0 {
            a.atime = value;
        } else {
            a.mtime = value;
        }
        changed = true;
    }
    Ok(changed)
}

/// Copies the part of block `data` (which starts at file offset `start`) that falls in `out`
/// (which starts at file offset `offset`).
fn copy_block(out: &mut [u8], offset: u64, start: u64, data: &[u8]) {
    let lo = offset.max(start);
    let hi = (offset + out.len() as u64).min(start + data.len() as u64);
    if lo < hi {
        out[(lo - offset) as usize..(hi - offset) as usize]
            .copy_from_slice(&data[(lo - start) as usize..(hi - start) as usize]);
    }
}

/// Cuts file `ino` to `size` bytes: blocks past it are deleted, the last kept block is cut
/// (so bytes past the end read as zeros if the file grows again). The caller holds the lock.
fn cut_blocks(ns: &mut Namespace<'_>, tx: &mut Transaction, ino: u64, size: u64) -> Step<()> {
    let bs = u64::from(ns.config.block_size);
    let blocks = ns.tables.blocks.clone();
    let keep = size.div_ceil(bs);
    for blk in ns.block_numbers(ino, keep)? {
        tx.delete(&blocks, &[Value::I64(ino as i64), Value::I64(blk as i64)])?;
    }
    if size % bs != 0 {
        let blk = size / bs;
        let op = tx.read(
            &blocks,
            &[Value::I64(ino as i64), Value::I64(blk as i64)],
            LockMode::CommittedRead,
        )?;
        ns.exec(tx)?;
        if let Some(Value::Bytes(mut d)) = tx.row(op).and_then(|r| r.get("data")).cloned() {
            d.truncate((size % bs) as usize);
            tx.write(
                &blocks,
                &[
                    ("ino", Value::I64(ino as i64)),
                    ("blk", Value::I64(blk as i64)),
                    ("data", Value::Bytes(d)),
                ],
            )?;
        }
    }
    Ok(())
}

impl From<Fail> for FsError {
    fn from(f: Fail) -> FsError {
        match f {
            Fail::Fs(e) => e,
            Fail::Cluster(e) => from_cluster(&e),
            Fail::Stale => FsError::new(libc::EAGAIN, "an entry kept changing"),
        }
    }
}
