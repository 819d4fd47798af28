//! An inode's attributes as the namespace keeps them, the caller's identity, and the POSIX
//! permission check made with them.

use client::{Row, Value};

use crate::error::{err, FsError, FsResult};

/// What an inode is (the `S_IFMT` part of its mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
}

impl Kind {
    /// The kind of a full mode (`S_IFREG | 0o644`), if its type bits name one.
    pub fn of_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            libc::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }

    /// Its `S_IFMT` bits.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::CharDevice => libc::S_IFCHR,
            Kind::BlockDevice => libc::S_IFBLK,
            Kind::Socket => libc::S_IFSOCK,
        }
    }
}

/// Who asks: the caller's uid, gid and supplementary groups (root, uid 0, passes every
/// permission check except execute on a file nobody may execute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Caller {
    /// The superuser.
    pub fn root() -> Caller {
        Caller { uid: 0, gid: 0, groups: Vec::new() }
    }

    /// A user with one group.
    pub fn user(uid: u32, gid: u32) -> Caller {
        Caller { uid, gid, groups: Vec::new() }
    }

    /// Whether the caller is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Read permission (the `R_OK` bit of `access`).
pub const MAY_READ: u32 = 4;
/// Write permission.
pub const MAY_WRITE: u32 = 2;
/// Execute permission, or search for a directory.
pub const MAY_EXEC: u32 = 1;

/// An inode's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Its number.
    pub ino: u64,
    /// What it is.
    pub kind: Kind,
    /// Permission bits and set-id and sticky bits (no type bits).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (a directory's is its entry count; a symlink's its target's length).
    pub size: u64,
    /// Hard links (a directory: 2 plus its subdirectories).
    pub nlink: u64,
    /// Access, modification and change times, ns since the epoch.
    pub atime: i64,
    /// Modification time.
    pub mtime: i64,
    /// Change time.
    pub ctime: i64,
    /// Device number (character and block devices).
    pub rdev: u64,
    /// A directory's parent (the root is its own); 0 for other kinds, which may have several.
    pub parent: u64,
    /// The next readdir cookie a new entry of this directory gets.
    pub next_cookie: u64,
    /// A symlink's target.
    pub target: Option<String>,
}

fn int(row: &Row, column: &str) -> FsResult<i64> {
    row.get(column)
        .and_then(Value::as_i64)
        .ok_or_else(|| FsError::new(libc::EIO, format!("inode row without an integer {column:?}")))
}

impl Attr {
    /// The attributes of an inode row.
    pub(crate) fn from_row(row: &Row) -> FsResult<Attr> {
        let ino = int(row, "ino")? as u64;
        let mode = int(row, "mode")? as u32;
        let Some(kind) = Kind::of_mode(mode) else {
            return err(libc::EIO, format!("inode {ino} has mode {mode:#o}, of no file type"));
        };
        let target = match row.get("target") {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        Ok(Attr {
            ino,
            kind,
            perm: mode & 0o7777,
            uid: int(row, "uid")? as u32,
            gid: int(row, "gid")? as u32,
            size: int(row, "size")? as u64,
            nlink: int(row, "nlink")? as u64,
            atime: int(row, "atime")?,
            mtime: int(row, "mtime")?,
            ctime: int(row, "ctime")?,
            rdev: int(row, "rdev")? as u64,
            parent: int(row, "parent")? as u64,
            next_cookie: int(row, "next_cookie")? as u64,
            target,
        })
    }

    /// The full mode: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.type_bits() | self.perm
    }

    /// The row's values by column, for an insert or a write.
    pub(crate) fn values(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("ino", Value::I64(self.ino as i64)),
            ("mode", Value::I64(i64::from(self.mode()))),
            ("uid", Value::I64(i64::from(self.uid))),
            ("gid", Value::I64(i64::from(self.gid))),
            ("size", Value::I64(self.size as i64)),
            ("nlink", Value::I64(self.nlink as i64)),
            ("atime", Value::I64(self.atime)),
            ("mtime", Value::I64(self.mtime)),
            ("ctime", Value::I64(self.ctime)),
            ("rdev", Value::I64(self.rdev as i64)),
            ("parent", Value::I64(self.parent as i64)),
            ("next_cookie", Value::I64(self.next_cookie as i64)),
            ("target", self.target.clone().map_or(Value::Null, Value::Text)),
        ]
    }

    /// The columns an update writes (all but the key).
    pub(crate) fn update_values(&self) -> Vec<(&'static str, Value)> {
        let mut v = self.values();
        v.remove(0);
        v
    }

    /// Whether `caller` may do `mask` (`MAY_READ | MAY_WRITE | MAY_EXEC`) on this inode.
    pub fn permits(&self, caller: &Caller, mask: u32) -> bool {
        if caller.uid == 0 {
            // Root reads and writes anything; executes a file only if someone may.
            return mask & MAY_EXEC == 0 || self.kind == Kind::Dir || self.perm & 0o111 != 0;
        }
        let bits = if caller.uid == self.uid {
            (self.perm >> 6) & 7
        } else if caller.in_group(self.gid) {
            (self.perm >> 3) & 7
        } else {
            self.perm & 7
        };
        bits & mask == mask
    }

    /// EACCES unless `caller` may do `mask`.
    pub fn check(&self, caller: &Caller, mask: u32, what: &str) -> FsResult<()> {
        if self.permits(caller, mask) {
            return Ok(());
        }
        err(
            libc::EACCES,
            format!(
                "uid {} gid {} may not {what} inode {} (mode {:o}, owner {}:{})",
                caller.uid, caller.gid, self.ino, self.perm, self.uid, self.gid
            ),
        )
    }

    /// ENOTDIR unless a directory.
    pub fn dir(&self) -> FsResult<()> {
        if self.kind == Kind::Dir {
            Ok(())
        } else {
            err(libc::ENOTDIR, format!("inode {} is not a directory", self.ino))
        }
    }

    /// The sticky-bit rule: in a sticky directory only the owner of the entry, of the
    /// directory, or root may remove or rename it.
    pub fn sticky_allows(&self, child: &Attr, caller: &Caller) -> FsResult<()> {
        if self.perm & libc::S_ISVTX == 0
            || caller.uid == 0
            || caller.uid == self.uid
            || caller.uid == child.uid
        {
            return Ok(());
        }
        err(
            libc::EPERM,
            format!(
                "directory {} is sticky and uid {} owns neither it nor inode {}",
                self.ino, caller.uid, child.ino
            ),
        )
    }
}
