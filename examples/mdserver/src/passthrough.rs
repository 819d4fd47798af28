//! A pass-through FUSE file system over a local directory: every request becomes the same
//! system call on the source. The benchmark mounts it over tmpfs beside the blockwire mount
//! as the floor any FUSE file system pays (the role of libfuse's `passthrough_ll` example).
//! It keeps an inode-to-path table (its own inode numbers), and runs with the daemon's
//! credentials: it checks no permissions of its own.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

/// The pass-through file system.
#[derive(Debug)]
pub struct Passthrough {
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    files: HashMap<u64, File>,
    dirs: HashMap<u64, Vec<(u64, FileType, std::ffi::OsString)>>,
    next_fh: u64,
    ttl: Duration,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn time(s: i64, ns: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns as u32)
    } else {
        UNIX_EPOCH
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        }
    }
}

impl Passthrough {
    /// Passes through to directory `source`.
    pub fn new(source: &Path, ttl: Duration) -> io::Result<Passthrough> {
        let source = source.canonicalize()?;
        if !source.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory"));
        }
        let mut fs = Passthrough {
            paths: HashMap::new(),
            inos: HashMap::new(),
            next_ino: 2,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            ttl,
        };
        fs.paths.insert(fuser::FUSE_ROOT_ID, source.clone());
        fs.inos.insert(source, fuser::FUSE_ROOT_ID);
        Ok(fs)
    }

    /// A new file or directory handle number.
    fn handle(&mut self) -> u64 {
        self.next_fh += 1;
        self.next_fh - 1
    }

    fn path(&self, ino: u64) -> io::Result<PathBuf> {
        self.paths.get(&ino).cloned().ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))
    }

    fn child(&self, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    fn ino_of(&mut self, path: &Path) -> u64 {
        if let Some(i) = self.inos.get(path) {
            return *i;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(ino, path.to_path_buf());
        self.inos.insert(path.to_path_buf(), ino);
        ino
    }

    fn forget_path(&mut self, path: &Path) {
        if let Some(ino) = self.inos.remove(path) {
            self.paths.remove(&ino);
        }
    }

    fn attr(&mut self, path: &Path) -> io::Result<FileAttr> {
        let m = fs::symlink_metadata(path)?;
        let ino = self.ino_of(path);
        Ok(FileAttr {
            ino,
            size: m.size(),
            blocks: m.blocks(),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: time(m.ctime(), m.ctime_nsec()),
            kind: kind_of(m.mode()),
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            blksize: m.blksize() as u32,
            flags: 0,
        })
    }

    fn entry(&mut self, path: io::Result<PathBuf>, reply: ReplyEntry) {
        match path.and_then(|p| self.attr(&p)) {
            Ok(a) => reply.entry(&self.ttl, &a, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// `from` now lives at `to`: its table entry moves, and a directory's descendants with it
    /// (a file's rename touches one entry, as a real pass-through's would).
    fn renamed(&mut self, from: &Path, to: &Path) {
        self.forget_path(to);
        let is_dir = fs::symlink_metadata(to).is_ok_and(|m| m.is_dir());
        let moved: Vec<(PathBuf, u64)> = if is_dir {
            self.inos
                .iter()
                .filter(|(p, _)| p.starts_with(from))
                .map(|(p, i)| (p.clone(), *i))
                .collect()
        } else {
            self.inos.get(from).map(|i| (from.to_path_buf(), *i)).into_iter().collect()
        };
        for (old, ino) in moved {
            let new = to.join(old.strip_prefix(from).unwrap_or(Path::new("")));
            self.inos.remove(&old);
            self.inos.insert(new.clone(), ino);
            self.paths.insert(ino, new);
        }
    }
}

fn empty(r: io::Result<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for Passthrough {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let p = self.child(parent, name);
        self.entry(p, reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.path(ino).and_then(|p| self.attr(&p)) {
            Ok(a) => reply.attr(&self.ttl, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let r = (|| {
            let path = self.path(ino)?;
            let c = cpath(&path)?;
            if let Some(m) = mode {
                // SAFETY: `c` is a NUL-terminated path that outlives the call.
                check(unsafe { libc::chmod(c.as_ptr(), m & 0o7777) })?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid)?;
            }
            if let Some(s) = size {
                // SAFETY: as above.
                check(unsafe { libc::truncate(c.as_ptr(), s as libc::off_t) })?;
            }
            if atime.is_some() || mtime.is_some() {
                let times = [timespec(atime), timespec(mtime)];
                // SAFETY: `c` is a valid path and `times` two timespecs, as utimensat reads.
                check(unsafe {
                    libc::utimensat(
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        times.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
            }
            self.attr(&path)
        })();
        match r {
            Ok(a) => reply.attr(&self.ttl, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.path(ino).and_then(fs::read_link) {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let p = self.child(parent, name).and_then(|p| {
            let c = cpath(&p)?;
            // SAFETY: `c` is a NUL-terminated path that outlives the call.
            check(unsafe { libc::mknod(c.as_ptr(), mode & !umask, libc::dev_t::from(rdev)) })?;
            Ok(p)
        });
        self.entry(p, reply);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let p = self
            .child(parent, name)
            .and_then(|p| fs::DirBuilder::new().mode(mode & !umask).create(&p).map(|()| p));
        self.entry(p, reply);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .child(parent, name)
            .and_then(|p| fs::remove_file(&p).map(|()| self.forget_path(&p)));
        empty(r, reply);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .child(parent, name)
            .and_then(|p| fs::remove_dir(&p).map(|()| self.forget_path(&p)));
        empty(r, reply);
    }

    fn symlink(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let p = self
            .child(parent, link_name)
            .and_then(|p| std::os::unix::fs::symlink(target, &p).map(|()| p));
        self.entry(p, reply);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let (from, to) = (self.child(parent, name)?, self.child(newparent, newname)?);
            let (cf, ct) = (cpath(&from)?, cpath(&to)?);
            // SAFETY: both paths are NUL-terminated and outlive the call.
            check(unsafe {
                libc::renameat2(libc::AT_FDCWD, cf.as_ptr(), libc::AT_FDCWD, ct.as_ptr(), flags)
            })?;
            if flags & libc::RENAME_EXCHANGE != 0 {
                let tmp = from.with_extension("\0swap");
                self.renamed(&from, &tmp);
                self.renamed(&to, &from);
                self.renamed(&tmp, &to);
            } else {
                self.renamed(&from, &to);
            }
            Ok(())
        })();
        empty(r, reply);
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let p = self.path(ino).and_then(|old| {
            let new = self.child(newparent, newname)?;
            fs::hard_link(old, &new).map(|()| new)
        });
        self.entry(p, reply);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let r = self.path(ino).and_then(|p| {
            let acc = flags & libc::O_ACCMODE;
            OpenOptions::new()
                .read(acc != libc::O_WRONLY)
                .write(acc != libc::O_RDONLY)
                .custom_flags(
                    flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY),
                )
                .open(p)
        });
        match r {
            Ok(f) => {
                let fh = self.handle();
                self.files.insert(fh, f);
                reply.opened(fh, 0);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(f) = self.files.get(&fh) else { return reply.error(libc::EBADF) };
        let mut buf = vec![0u8; size as usize];
        match f.read_at(&mut buf, offset.max(0) as u64) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Some(f) = self.files.get(&fh) else { return reply.error(libc::EBADF) };
        match f.write_at(data, offset.max(0) as u64) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
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

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.remove(&fh);
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let r = self.path(ino).and_then(|p| {
            let mut list = vec![
                (ino, FileType::Directory, ".".into()),
                (ino, FileType::Directory, "..".into()),
            ];
            for e in fs::read_dir(&p)? {
                let e = e?;
                let kind = e.file_type().map_or(FileType::RegularFile, |t| {
                    kind_of(if t.is_dir() {
                        libc::S_IFDIR
                    } else if t.is_symlink() {
                        libc::S_IFLNK
                    } else {
                        libc::S_IFREG
                    })
                });
                let child = self.ino_of(&e.path());
                list.push((child, kind, e.file_name()));
            }
            Ok(list)
        });
        match r {
            Ok(list) => {
                let fh = self.handle();
                self.dirs.insert(fh, list);
                reply.opened(fh, 0);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(list) = self.dirs.get(&fh) else { return reply.error(libc::EBADF) };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(*ino, i as i64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.dirs.remove(&fh);
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyStatfs) {
        let r = self.path(ino).and_then(|p| {
            let c = cpath(&p)?;
            // SAFETY: statvfs is plain data; zeroed is a valid value of it.
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: `c` is a valid path and `s` a writable statvfs.
            check(unsafe { libc::statvfs(c.as_ptr(), &mut s) })?;
            Ok(s)
        });
        match r {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.child(parent, name).and_then(|p| {
            let acc = flags & libc::O_ACCMODE;
            let f = OpenOptions::new()
                .read(acc != libc::O_WRONLY)
                .write(true)
                .create(true)
                .truncate(flags & libc::O_TRUNC != 0)
                .mode(mode & !umask)
                .custom_flags(flags & libc::O_EXCL)
                .open(&p)?;
            let a = self.attr(&p)?;
            Ok((f, a))
        });
        match r {
            Ok((f, a)) => {
                let fh = self.handle();
                self.files.insert(fh, f);
                reply.created(&self.ttl, &a, 0, fh, 0);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}
