//! Operations that change directories: create (mknod, mkdir, symlink), link, unlink, rmdir
//! and rename. Each is one transaction under the lock order of [`crate::ns`].

use std::collections::BTreeMap;

use client::{Error, LockMode, Transaction, Value};

use crate::attr::{Attr, Caller, Kind, MAY_EXEC, MAY_WRITE};
use crate::error::{err, FsError, FsResult};
use crate::ns::{check_name, dentry_key, locked, now_ns, Dentry, Fail, Namespace, Step};
use crate::schema::{FIRST_COOKIE, ROOT, TARGET_MAX};

/// How a rename treats an existing target (`renameat2`'s flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with EEXIST when the target exists (`RENAME_NOREPLACE`).
    pub noreplace: bool,
    /// Swap source and target, which must both exist (`RENAME_EXCHANGE`).
    pub exchange: bool,
}

impl RenameFlags {
    /// The flags of a `renameat2` flag word; EINVAL for others or for both at once.
    pub fn from_bits(bits: u32) -> FsResult<RenameFlags> {
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        let flags = RenameFlags {
            noreplace: bits & libc::RENAME_NOREPLACE != 0,
            exchange: bits & libc::RENAME_EXCHANGE != 0,
        };
        if bits & !known != 0 || (flags.noreplace && flags.exchange) {
            return err(
                libc::EINVAL,
                format!("rename flags {bits:#x} are not NOREPLACE or EXCHANGE alone"),
            );
        }
        Ok(flags)
    }
}

/// What a new inode is.
struct NewNode {
    kind: Kind,
    perm: u32,
    rdev: u64,
    target: Option<String>,
}

/// The longest path walked up when checking a directory move for a cycle.
const MAX_DEPTH: usize = 4096;

impl Namespace<'_> {
    /// Creates a file, device, fifo or socket node (`mode` holds its type bits and permission
    /// bits, the umask already applied).
    pub fn mknod(
        &mut self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u64,
        caller: &Caller,
    ) -> FsResult<Attr> {
        let kind = Kind::of_mode(mode).unwrap_or(Kind::File);
        if matches!(kind, Kind::Dir | Kind::Symlink) {
            return err(libc::EINVAL, format!("mknod of a {kind:?}: use mkdir or symlink"));
        }
        self.create_node(
            parent,
            name,
            NewNode { kind, perm: mode & 0o7777, rdev, target: None },
            caller,
        )
    }

    /// Creates a regular file.
    pub fn create(
        &mut self,
        parent: u64,
        name: &str,
        perm: u32,
        caller: &Caller,
    ) -> FsResult<Attr> {
        self.create_node(
            parent,
            name,
            NewNode { kind: Kind::File, perm: perm & 0o7777, rdev: 0, target: None },
            caller,
        )
    }

    /// Creates a directory.
    pub fn mkdir(&mut self, parent: u64, name: &str, perm: u32, caller: &Caller) -> FsResult<Attr> {
        self.create_node(
            parent,
            name,
            NewNode { kind: Kind::Dir, perm: perm & 0o7777, rdev: 0, target: None },
            caller,
        )
    }

    /// Creates a symbolic link to `target`.
    pub fn symlink(
        &mut self,
        parent: u64,
        name: &str,
        target: &str,
        caller: &Caller,
    ) -> FsResult<Attr> {
        if target.is_empty() || target.len() > TARGET_MAX {
            return err(
                libc::ENAMETOOLONG,
                format!("a symlink target of {} bytes (1 to {TARGET_MAX})", target.len()),
            );
        }
        self.create_node(
            parent,
            name,
            NewNode { kind: Kind::Symlink, perm: 0o777, rdev: 0, target: Some(target.into()) },
            caller,
        )
    }

    fn create_node(
        &mut self,
        parent: u64,
        name: &str,
        node: NewNode,
        caller: &Caller,
    ) -> FsResult<Attr> {
        check_name(name)?;
        let ino = self.alloc_ino()?;
        let dentries = self.tables.dentries.clone();
        let inodes = self.tables.inodes.clone();
        self.run(Some(parent), |ns, tx| {
            let (before, _) = ns.lock_inodes(tx, &[parent], &[])?;
            let mut p = locked(&before, parent)?;
            p.dir()?;
            p.check(caller, MAY_WRITE | MAY_EXEC, "create entries in")?;
            let now = now_ns();
            let gid = if p.perm & libc::S_ISGID != 0 { p.gid } else { caller.gid };
            let mut perm = node.perm;
            if node.kind == Kind::Dir && p.perm & libc::S_ISGID != 0 {
                perm |= libc::S_ISGID;
            }
            let attr = Attr {
                ino,
                kind: node.kind,
                perm,
                uid: caller.uid,
                gid,
                size: node.target.as_ref().map_or(0, |t| t.len() as u64),
                nlink: if node.kind == Kind::Dir { 2 } else { 1 },
                atime: now,
                mtime: now,
                ctime: now,
                rdev: node.rdev,
                parent: if node.kind == Kind::Dir { parent } else { 0 },
                next_cookie: FIRST_COOKIE,
                target: node.target.clone(),
            };
            insert_dentry(tx, &dentries, parent, name, &attr, p.next_cookie)?;
            tx.insert(&inodes, &attr.values())?;
            p.next_cookie += 1;
            p.size += 1;
            p.mtime = now;
            p.ctime = now;
            if node.kind == Kind::Dir {
                p.nlink += 1;
            }
            tx.update(&inodes, &[Value::I64(parent as i64)], &p.update_values())?;
            match commit_new_entry(ns, tx, parent, name) {
                Err(Fail::Fs(e)) if e.errno == libc::EEXIST && ns.uncertain => {
                    made_by(ns, parent, name, ino)?;
                    Ok(attr)
                }
                r => r.map(|()| attr),
            }
        })
    }

    /// Adds entry `newname` in `newparent` for inode `ino` (not a directory).
    pub fn link(
        &mut self,
        ino: u64,
        newparent: u64,
        newname: &str,
        caller: &Caller,
    ) -> FsResult<Attr> {
        check_name(newname)?;
        let dentries = self.tables.dentries.clone();
        self.run(Some(newparent), |ns, tx| {
            let (before, _) = ns.lock_inodes(tx, &[ino, newparent], &[])?;
            let mut attrs = before.clone();
            let mut c = locked(&before, ino)?;
            let mut np = locked(&before, newparent)?;
            np.dir()?;
            if c.kind == Kind::Dir {
                return Err(FsError::new(
                    libc::EPERM,
                    format!("inode {ino} is a directory: no hard links"),
                )
                .into());
            }
            np.check(caller, MAY_WRITE | MAY_EXEC, "create entries in")?;
            let now = now_ns();
            insert_dentry(tx, &dentries, newparent, newname, &c, np.next_cookie)?;
            np.next_cookie += 1;
            np.size += 1;
            np.mtime = now;
            np.ctime = now;
            c.nlink += 1;
            c.ctime = now;
            attrs.insert(newparent, np);
            attrs.insert(ino, c.clone());
            ns.write_inodes(tx, &before, &attrs)?;
            match commit_new_entry(ns, tx, newparent, newname) {
                Err(Fail::Fs(e)) if e.errno == libc::EEXIST && ns.uncertain => {
                    made_by(ns, newparent, newname, ino)?;
                    Ok(c)
                }
                r => r.map(|()| c),
            }
        })
    }

    /// Removes entry `name` of `parent` (not a directory: EISDIR).
    pub fn unlink(&mut self, parent: u64, name: &str, caller: &Caller) -> FsResult<()> {
        self.remove(parent, name, false, caller)
    }

    /// Removes the empty directory `name` of `parent`.
    pub fn rmdir(&mut self, parent: u64, name: &str, caller: &Caller) -> FsResult<()> {
        if name == "." {
            return err(libc::EINVAL, "rmdir of \".\"");
        }
        if name == ".." {
            return err(libc::ENOTEMPTY, "rmdir of \"..\"");
        }
        self.remove(parent, name, true, caller)
    }

    fn remove(&mut self, parent: u64, name: &str, dir: bool, caller: &Caller) -> FsResult<()> {
        check_name(name)?;
        let dentries = self.tables.dentries.clone();
        let key = dentry_key(parent, name);
        self.run(Some(parent), |ns, tx| {
            let seen = match read_entry(ns, tx, parent, name) {
                // The uncertain first attempt removed it.
                Err(Fail::Fs(e)) if e.errno == libc::ENOENT && ns.uncertain => return Ok(()),
                r => r?,
            };
            let (before, rows) = ns.lock_inodes(tx, &[parent, seen.ino], &[(parent, name)])?;
            validate(rows.first(), Some(seen.ino))?;
            let mut attrs = before.clone();
            let mut p = locked(&before, parent)?;
            let c = named(&before, seen.ino)?;
            p.check(caller, MAY_WRITE | MAY_EXEC, "remove entries from")?;
            p.sticky_allows(&c, caller)?;
            if dir && c.kind != Kind::Dir {
                return Err(FsError::new(
                    libc::ENOTDIR,
                    format!("{name:?} in directory {parent} is not a directory"),
                )
                .into());
            }
            if !dir && c.kind == Kind::Dir {
                return Err(FsError::new(
                    libc::EISDIR,
                    format!("{name:?} in directory {parent} is a directory"),
                )
                .into());
            }
            if dir && c.size > 0 {
                return Err(FsError::new(
                    libc::ENOTEMPTY,
                    format!("directory {name:?} has {} entries", c.size),
                )
                .into());
            }
            if c.ino == ROOT {
                return Err(FsError::new(libc::EBUSY, "the root directory").into());
            }
            let now = now_ns();
            tx.delete(&dentries, &key)?;
            p.size = p.size.saturating_sub(1);
            p.mtime = now;
            p.ctime = now;
            if dir {
                p.nlink = p.nlink.saturating_sub(1);
            }
            attrs.insert(parent, p);
            drop_link(ns, tx, &mut attrs, c, now)?;
            ns.write_inodes(tx, &before, &attrs)?;
            ns.commit(tx)
        })
    }

    /// Renames entry `name` of `parent` to `newname` of `newparent` (atomically; replacing a
    /// target of the same kind, or as `flags` say). A directory moved under itself is EINVAL.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        flags: RenameFlags,
        caller: &Caller,
    ) -> FsResult<()> {
        check_name(name)?;
        check_name(newname)?;
        let r = Rename { from: (parent, name), to: (newparent, newname), flags, caller };
        let mut first: Option<(u64, Option<u64>)> = None;
        self.run(Some(newparent), |ns, tx| rename_once(ns, tx, &r, &mut first))
    }
}

/// A rename's arguments.
struct Rename<'a> {
    from: (u64, &'a str),
    to: (u64, &'a str),
    flags: RenameFlags,
    caller: &'a Caller,
}

/// One attempt of a rename. `first` keeps the inodes the first attempt found (source, and
/// target if any), by which a retry after an uncertain commit recognises its effect.
fn rename_once(
    ns: &mut Namespace<'_>,
    tx: &mut Transaction,
    r: &Rename<'_>,
    first: &mut Option<(u64, Option<u64>)>,
) -> Step<()> {
    let ((parent, name), (newparent, newname), flags) = (r.from, r.to, r.flags);
    if r.from == r.to {
        read_entry(ns, tx, parent, name)?;
        return Ok(());
    }
    let (src, dst) = read_two(ns, tx, r.from, r.to)?;
    if let Some((s0, d0)) = first.filter(|_| ns.uncertain) {
        let (now_src, now_dst) = (src.as_ref().map(|d| d.ino), dst.as_ref().map(|d| d.ino));
        // The uncertain first attempt moved it, or swapped the two.
        let moved = !flags.exchange && now_src.is_none() && now_dst == Some(s0);
        let swapped = flags.exchange && now_src == d0 && now_dst == Some(s0);
        if moved || swapped {
            return Ok(());
        }
    }
    let src = src.ok_or_else(|| {
        FsError::new(libc::ENOENT, format!("no entry {name:?} in directory {parent}"))
    })?;
    first.get_or_insert((src.ino, dst.as_ref().map(|d| d.ino)));
    let moves_dir = parent != newparent
        && (src.kind == Kind::Dir
            || (flags.exchange && dst.as_ref().is_some_and(|d| d.kind == Kind::Dir)));
    if moves_dir {
        // The per-namespace rename lock: directory parents change only under it.
        let meta = ns.tables.meta.clone();
        tx.read(&meta, &[Value::Text("rename".into())], LockMode::Exclusive)?;
        ns.exec(tx)?;
        if src.kind == Kind::Dir {
            no_cycle(ns, tx, src.ino, newparent)?;
        }
        if let Some(d) = dst.as_ref().filter(|d| flags.exchange && d.kind == Kind::Dir) {
            no_cycle(ns, tx, d.ino, parent)?;
        }
    }
    let mut inos = vec![parent, newparent, src.ino];
    inos.extend(dst.as_ref().map(|d| d.ino));
    let (before, rows) = ns.lock_inodes(tx, &inos, &[r.from, r.to])?;
    validate(rows.first(), Some(src.ino))?;
    validate(rows.get(1), dst.as_ref().map(|d| d.ino))?;
    let s = named(&before, src.ino)?;
    let d = match &dst {
        Some(d) => Some(named(&before, d.ino)?),
        None => None,
    };
    rename_allowed(&before, r, &s, d.as_ref())?;
    if d.as_ref().is_some_and(|d| d.ino == s.ino) {
        // Two names of one inode: POSIX says do nothing.
        return Ok(());
    }
    let now = now_ns();
    let mut attrs = before.clone();
    match (flags.exchange, d, dst.as_ref()) {
        (true, Some(d), Some(de)) => exchange(ns, tx, &mut attrs, (&src, &s), (de, &d), now)?,
        (true, _, _) => {
            return Err(FsError::new(
                libc::ENOENT,
                format!("no entry {newname:?} in directory {newparent} to exchange with"),
            )
            .into())
        }
        (false, d, _) => {
            move_entry(ns, tx, &mut attrs, (&src, &s), dst.as_ref().zip(d), r.to, now)?
        }
    }
    ns.write_inodes(tx, &before, &attrs)?;
    ns.commit(tx)
}

/// The checks of a rename with source inode `s` and target inode `d` (if any), the locks
/// held: permissions on both directories, the sticky bit, and what may replace what.
fn rename_allowed(
    locked_inodes: &BTreeMap<u64, Attr>,
    r: &Rename<'_>,
    s: &Attr,
    d: Option<&Attr>,
) -> Step<()> {
    let ((parent, _), (newparent, newname)) = (r.from, r.to);
    let p = locked(locked_inodes, parent)?;
    let np = locked(locked_inodes, newparent)?;
    np.dir()?;
    p.check(r.caller, MAY_WRITE | MAY_EXEC, "remove entries from")?;
    np.check(r.caller, MAY_WRITE | MAY_EXEC, "create entries in")?;
    p.sticky_allows(s, r.caller)?;
    if s.kind == Kind::Dir && parent != newparent {
        s.check(r.caller, MAY_WRITE, "move (its \"..\" changes)")?;
    }
    let Some(d) = d else { return Ok(()) };
    np.sticky_allows(d, r.caller)?;
    if d.ino == s.ino || r.flags.exchange {
        return Ok(());
    }
    let refuse = |errno: i32, message: String| Err(FsError::new(errno, message).into());
    if r.flags.noreplace {
        return refuse(libc::EEXIST, format!("{newname:?} exists in directory {newparent}"));
    }
    match (s.kind == Kind::Dir, d.kind == Kind::Dir) {
        (true, false) => refuse(libc::ENOTDIR, format!("{newname:?} is not a directory")),
        (false, true) => refuse(libc::EISDIR, format!("{newname:?} is a directory")),
        (true, true) if d.size > 0 => {
            refuse(libc::ENOTEMPTY, format!("directory {newname:?} has {} entries", d.size))
        }
        _ => Ok(()),
    }
}

/// Inserts the entry `name` of `parent` for `attr` with readdir cookie `cookie`.
fn insert_dentry(
    tx: &mut Transaction,
    dentries: &std::sync::Arc<client::Table>,
    parent: u64,
    name: &str,
    attr: &Attr,
    cookie: u64,
) -> Step<()> {
    tx.insert(
        dentries,
        &[
            ("parent", Value::I64(parent as i64)),
            ("name", Value::Text(name.into())),
            ("ino", Value::I64(attr.ino as i64)),
            ("cookie", Value::I64(cookie as i64)),
            ("mode", Value::I64(i64::from(attr.mode()))),
        ],
    )?;
    Ok(())
}

/// Commits a transaction that inserted entry `name` of `parent`: a duplicate key is EEXIST.
fn commit_new_entry(
    ns: &mut Namespace<'_>,
    tx: &mut Transaction,
    parent: u64,
    name: &str,
) -> Step<()> {
    match ns.commit(tx) {
        Err(Fail::Cluster(Error::DuplicateKey(_))) => {
            Err(FsError::new(libc::EEXIST, format!("{name:?} exists in directory {parent}")).into())
        }
        r => r,
    }
}

/// Ok when entry `name` of `parent` names inode `ino` (an uncertain attempt made it), else
/// EEXIST. Reads in a transaction of its own, committed at once.
fn made_by(ns: &mut Namespace<'_>, parent: u64, name: &str, ino: u64) -> Step<()> {
    let mut tx = ns.session.begin();
    let op = tx.read(&ns.tables.dentries, &dentry_key(parent, name), LockMode::CommittedRead)?;
    ns.commit(&mut tx)?;
    match tx.row(op).map(Dentry::from_row).transpose()? {
        Some(d) if d.ino == ino => Ok(()),
        _ => {
            Err(FsError::new(libc::EEXIST, format!("{name:?} exists in directory {parent}")).into())
        }
    }
}

/// The inode an entry validated under its directory's lock names: it exists (it goes only
/// with its last entry, under the same lock), so its absence is corruption, EIO.
fn named(attrs: &BTreeMap<u64, Attr>, ino: u64) -> Step<Attr> {
    attrs.get(&ino).cloned().ok_or_else(|| {
        Fail::Fs(FsError::new(
            libc::EIO,
            format!("an entry names inode {ino}, which does not exist (check the namespace)"),
        ))
    })
}

/// The entry `name` of `parent` by a committed read, or ENOENT.
fn read_entry(
    ns: &mut Namespace<'_>,
    tx: &mut Transaction,
    parent: u64,
    name: &str,
) -> Step<Dentry> {
    let (found, _) = read_two(ns, tx, (parent, name), (parent, name))?;
    found.ok_or_else(|| {
        FsError::new(libc::ENOENT, format!("no entry {name:?} in directory {parent}")).into()
    })
}

/// Two entries by committed reads, in one round trip.
fn read_two(
    ns: &mut Namespace<'_>,
    tx: &mut Transaction,
    a: (u64, &str),
    b: (u64, &str),
) -> Step<(Option<Dentry>, Option<Dentry>)> {
    let dentries = ns.tables.dentries.clone();
    let oa = tx.read(&dentries, &dentry_key(a.0, a.1), LockMode::CommittedRead)?;
    let ob = if a == b {
        oa
    } else {
        tx.read(&dentries, &dentry_key(b.0, b.1), LockMode::CommittedRead)?
    };
    ns.exec(tx)?;
    let ra = tx.row(oa).map(Dentry::from_row).transpose()?;
    let rb = tx.row(ob).map(Dentry::from_row).transpose()?;
    Ok((ra, rb))
}

/// Stale unless the entry read under the locks names `expected` (or is absent as expected).
fn validate(row: Option<&Option<client::Row>>, expected: Option<u64>) -> Step<()> {
    let now = match row.and_then(Option::as_ref) {
        Some(r) => Some(Dentry::from_row(r)?.ino),
        None => None,
    };
    if now == expected {
        Ok(())
    } else {
        Err(Fail::Stale)
    }
}

/// EINVAL when directory `moved` is `to` or one of its ancestors (walked up by the parent
/// links, which only change under the rename lock the caller holds).
fn no_cycle(ns: &mut Namespace<'_>, tx: &mut Transaction, moved: u64, to: u64) -> Step<()> {
    let inodes = ns.tables.inodes.clone();
    let mut at = to;
    for _ in 0..MAX_DEPTH {
        if at == moved {
            return Err(FsError::new(
                libc::EINVAL,
                format!("directory {moved} would move under itself (into {to})"),
            )
            .into());
        }
        if at == ROOT {
            return Ok(());
        }
        let op = tx.read(&inodes, &[Value::I64(at as i64)], LockMode::CommittedRead)?;
        ns.exec(tx)?;
        let a = crate::ns::attr_of(tx, op, at)?;
        a.dir()?;
        at = a.parent;
    }
    Err(FsError::new(libc::ELOOP, format!("directory {to} is more than {MAX_DEPTH} levels deep"))
        .into())
}

/// One link of `c` goes: its nlink drops, and at zero the inode and its blocks are deleted
/// (a directory at once: its `.` link goes with its entry).
fn drop_link(
    ns: &mut Namespace<'_>,
    tx: &mut Transaction,
    attrs: &mut BTreeMap<u64, Attr>,
    mut c: Attr,
    now: i64,
) -> Step<()> {
    let last = c.kind == Kind::Dir || c.nlink <= 1;
    if last {
        attrs.remove(&c.ino);
        tx.delete(&ns.tables.inodes, &[Value::I64(c.ino as i64)])?;
        if c.kind == Kind::File && c.size > 0 {
            let blocks = ns.tables.blocks.clone();
            for blk in ns.block_numbers(c.ino, 0)? {
                tx.delete(&blocks, &[Value::I64(c.ino as i64), Value::I64(blk as i64)])?;
            }
        }
    } else {
        c.nlink -= 1;
        c.ctime = now;
        attrs.insert(c.ino, c);
    }
    Ok(())
}

/// A plain rename: the source entry goes, the target entry names the source inode (replacing
/// `replaced`, whose link drops), and a directory moved to another parent takes it as `..`.
fn move_entry(
    ns: &mut Namespace<'_>,
    tx: &mut Transaction,
    attrs: &mut BTreeMap<u64, Attr>,
    (src, s): (&Dentry, &Attr),
    replaced: Option<(&Dentry, Attr)>,
    (newparent, newname): (u64, &str),
    now: i64,
) -> Step<()> {
    let dentries = ns.tables.dentries.clone();
    tx.delete(&dentries, &dentry_key(src.parent, &src.name))?;
    let with = |attrs: &mut BTreeMap<u64, Attr>, ino: u64, f: &mut dyn FnMut(&mut Attr)| {
        if let Some(a) = attrs.get_mut(&ino) {
            f(a);
        }
    };
    with(attrs, src.parent, &mut |p| {
        p.size = p.size.saturating_sub(1);
        p.mtime = now;
        p.ctime = now;
    });
    match replaced {
        Some((de, d)) => {
            tx.update(
                &dentries,
                &dentry_key(newparent, newname),
                &[("ino", Value::I64(s.ino as i64)), ("mode", Value::I64(i64::from(s.mode())))],
            )?;
            if d.kind == Kind::Dir {
                with(attrs, de.parent, &mut |np| np.nlink = np.nlink.saturating_sub(1));
            }
            drop_link(ns, tx, attrs, d, now)?;
        }
        None => {
            let cookie = attrs.get(&newparent).map_or(FIRST_COOKIE, |np| np.next_cookie);
            insert_dentry(tx, &dentries, newparent, newname, s, cookie)?;
            with(attrs, newparent, &mut |np| {
                np.next_cookie += 1;
                np.size += 1;
            });
        }
    }
    with(attrs, newparent, &mut |np| {
        np.mtime = now;
        np.ctime = now;
    });
    with(attrs, s.ino, &mut |a| {
        a.ctime = now;
        if a.kind == Kind::Dir && src.parent != newparent {
            a.parent = newparent;
        }
    });
    if s.kind == Kind::Dir && src.parent != newparent {
        with(attrs, src.parent, &mut |p| p.nlink = p.nlink.saturating_sub(1));
        with(attrs, newparent, &mut |np| np.nlink += 1);
    }
    Ok(())
}

/// RENAME_EXCHANGE: the two entries swap inodes (each keeps its cookie).
fn exchange(
    ns: &mut Namespace<'_>,
    tx: &mut Transaction,
    attrs: &mut BTreeMap<u64, Attr>,
    (src, s): (&Dentry, &Attr),
    (dst, d): (&Dentry, &Attr),
    now: i64,
) -> Step<()> {
    let dentries = ns.tables.dentries.clone();
    let point =
        |a: &Attr| [("ino", Value::I64(a.ino as i64)), ("mode", Value::I64(i64::from(a.mode())))];
    tx.update(&dentries, &dentry_key(src.parent, &src.name), &point(d))?;
    tx.update(&dentries, &dentry_key(dst.parent, &dst.name), &point(s))?;
    for (moved, from, to) in [(s, src.parent, dst.parent), (d, dst.parent, src.parent)] {
        if let Some(a) = attrs.get_mut(&moved.ino) {
            a.ctime = now;
            if a.kind == Kind::Dir && from != to {
                a.parent = to;
            }
        }
        if moved.kind == Kind::Dir && from != to {
            if let Some(p) = attrs.get_mut(&from) {
                p.nlink = p.nlink.saturating_sub(1);
            }
            if let Some(p) = attrs.get_mut(&to) {
                p.nlink += 1;
            }
        }
    }
    for p in [src.parent, dst.parent] {
        if let Some(a) = attrs.get_mut(&p) {
            a.mtime = now;
            a.ctime = now;
        }
    }
    Ok(())
}
