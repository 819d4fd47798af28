//! The FUSE mount: the kernel's file-system requests answered from a [`Namespace`].
//!
//! Every request runs in the session's one thread as one namespace operation with the
//! caller's uid and gid, and its supplementary groups when those decide (this file system
//! checks permissions itself; the mount does not ask the kernel to). Kernel caching of
//! entries and attributes is off unless a time-to-live is given, so several mounts of one
//! cluster see one namespace. Names must be UTF-8 (EINVAL otherwise). A file handle carries
//! nothing: each write is committed when it returns, so flush, fsync and release have nothing
//! left to do.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use crate::attr::{Attr, Caller, Kind, MAY_READ};
use crate::dir::RenameFlags;
use crate::error::{FsError, FsResult};
use crate::file::{SetAttr, SetTime};
use crate::ns::Namespace;

/// The mounted file system.
#[derive(Debug)]
pub struct MdFs<'c> {
    ns: Namespace<'c>,
    ttl: Duration,
}

impl<'c> MdFs<'c> {
    /// A file system over `ns`; the kernel may cache entries and attributes for `ttl`
    /// (zero: not at all).
    pub fn new(ns: Namespace<'c>, ttl: Duration) -> MdFs<'c> {
        MdFs { ns, ttl }
    }
}

fn caller(req: &Request<'_>) -> Caller {
    Caller::user(req.uid(), req.gid())
}

/// The supplementary groups of process `pid` (from `/proc/PID/status`; none when it is gone).
fn groups_of(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

/// The kernel's view of an inode.
pub fn file_attr(a: &Attr, block_size: u32) -> FileAttr {
    FileAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink.min(u64::from(u32::MAX)) as u32,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: block_size,
        flags: 0,
    }
}

fn utf8(name: &OsStr) -> FsResult<&str> {
    name.to_str().ok_or_else(|| FsError::new(libc::EINVAL, format!("name {name:?} is not UTF-8")))
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(ns_of(t)),
    })
}

/// Logs an error that is not an everyday answer (EIO: the cluster failed under it).
fn errno(e: FsError) -> i32 {
    if e.errno == libc::EIO {
        tracing::warn!(error = %e, "operation failed");
    } else {
        tracing::debug!(error = %e, "operation refused");
    }
    e.errno
}

impl<'c> MdFs<'c> {
    /// Runs `op` as the request's caller. FUSE passes only the primary group: when that is
    /// refused (EACCES, EPERM) the caller's supplementary groups are read from /proc and the
    /// operation runs again with them (a refused operation changed nothing).
    fn as_caller<T>(
        &mut self,
        req: &Request<'_>,
        mut op: impl FnMut(&mut Namespace<'c>, &Caller) -> FsResult<T>,
    ) -> FsResult<T> {
        let mut who = caller(req);
        match op(&mut self.ns, &who) {
            Err(e) if (e.errno == libc::EACCES || e.errno == libc::EPERM) && who.uid != 0 => {
                who.groups = groups_of(req.pid());
                if who.groups.iter().all(|g| *g == who.gid) {
                    return Err(e);
                }
                op(&mut self.ns, &who)
            }
            r => r,
        }
    }

    fn entry(&self, r: FsResult<Attr>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&self.ttl, &file_attr(&a, self.ns.config().block_size), 0),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn empty(r: FsResult<()>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

impl Filesystem for MdFs<'_> {
    fn lookup(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let r = utf8(name).and_then(|n| self.as_caller(req, |ns, who| ns.lookup(parent, n, who)));
        self.entry(r, reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.ns.getattr(ino) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a, self.ns.config().block_size)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            through_handle: fh.is_some(),
        };
        match self.as_caller(req, |ns, who| ns.setattr(ino, set, who)) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a, self.ns.config().block_size)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.ns.readlink(ino) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = utf8(name).and_then(|n| {
            self.as_caller(req, |ns, who| ns.mknod(parent, n, mode & !umask, u64::from(rdev), who))
        });
        self.entry(r, reply);
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = utf8(name)
            .and_then(|n| self.as_caller(req, |ns, who| ns.mkdir(parent, n, mode & !umask, who)));
        self.entry(r, reply);
    }

    fn unlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = utf8(name).and_then(|n| self.as_caller(req, |ns, who| ns.unlink(parent, n, who)));
        Self::empty(r, reply);
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = utf8(name).and_then(|n| self.as_caller(req, |ns, who| ns.rmdir(parent, n, who)));
        Self::empty(r, reply);
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = utf8(link_name).and_then(|n| {
            let t = utf8(target.as_os_str())?;
            self.as_caller(req, |ns, who| ns.symlink(parent, n, t, who))
        });
        self.entry(r, reply);
    }

    fn rename(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let flags = RenameFlags::from_bits(flags)?;
            let (name, newname) = (utf8(name)?, utf8(newname)?);
            self.as_caller(req, |ns, who| ns.rename(parent, name, newparent, newname, flags, who))
        })();
        Self::empty(r, reply);
    }

    fn link(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = utf8(newname)
            .and_then(|n| self.as_caller(req, |ns, who| ns.link(ino, newparent, n, who)));
        self.entry(r, reply);
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        match self.as_caller(req, |ns, who| ns.open_file(ino, flags, who)) {
            Ok(_) => reply.opened(0, 0),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        match self.ns.read(ino, offset.max(0) as u64, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match self.ns.write(ino, offset.max(0) as u64, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&mut self, req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let r = self.as_caller(req, |ns, who| ns.access(ino, MAY_READ, who)).and_then(|a| a.dir());
        match r {
            Ok(()) => reply.opened(0, 0),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        match self.ns.readdir(ino, offset.max(0) as u64, 128) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(e.ino, e.offset as i64, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        match self.ns.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.free_blocks,
                s.free_blocks,
                s.files,
                s.free_files,
                s.block_size,
                s.name_max,
                s.block_size,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&mut self, req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        let r = self.as_caller(req, |ns, who| ns.access(ino, mask as u32 & 7, who));
        Self::empty(r.map(|_| ()), reply);
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = utf8(name).and_then(|n| {
            self.as_caller(req, |ns, who| match ns.create(parent, n, mode & !umask, who) {
                // Another mount made it since the kernel's lookup: without O_EXCL, open it.
                Err(e) if e.errno == libc::EEXIST && flags & libc::O_EXCL == 0 => {
                    let a = ns.lookup(parent, n, who)?;
                    ns.open_file(a.ino, flags, who)
                }
                r => r,
            })
        });
        match r {
            Ok(a) => reply.created(&self.ttl, &file_attr(&a, self.ns.config().block_size), 0, 0, 0),
            Err(e) => reply.error(errno(e)),
        }
    }
}
