//! The namespace's tables, HopsFS style, and their creation.
//!
//! - `fs_inode` (key `ino`): an inode's attributes; a directory also keeps its parent and the
//!   next readdir cookie; a symlink its target.
//! - `fs_dentry` (key `(parent, name)`, partitioned by `parent`): a directory entry naming
//!   inode `ino`, with its readdir cookie; the ordered index `by_cookie` on `(parent, cookie)`
//!   makes a listing one single-partition range scan whose offsets stay valid while the
//!   directory changes (a new entry gets a larger cookie; a removed one leaves a gap).
//! - `fs_block` (key `(ino, blk)`, partitioned by `ino`): a file's contents in fixed-size
//!   blocks (a missing block reads as zeros); the ordered index `by_ino` lists a file's blocks.
//! - `fs_meta` (key `name`): `next_ino`, the inode-number allocator every client reserves
//!   ranges from (one update per range, not per create), and `rename`, the row a rename that
//!   moves a directory to another parent locks first (as the kernel's per-file-system rename
//!   mutex does), so two such renames can never together make a cycle.

use std::sync::Arc;

use client::{Column, ColumnType, Error, IndexDef, Session, Table, TableDef};

use crate::error::{FsError, FsResult};

/// The inode table.
pub const INODES: &str = "fs_inode";
/// The directory-entry table.
pub const DENTRIES: &str = "fs_dentry";
/// The file-block table.
pub const BLOCKS: &str = "fs_block";
/// The allocator and lock rows.
pub const META: &str = "fs_meta";

/// The root directory's inode number (FUSE's root id).
pub const ROOT: u64 = 1;
/// The longest name of an entry, in bytes.
pub const NAME_MAX: usize = 255;
/// The longest symlink target, in bytes.
pub const TARGET_MAX: usize = 4095;
/// The most blocks a file has (its blocks go in one transaction when it is truncated or
/// removed, within the coordinator's operation limit).
pub const MAX_BLOCKS: u64 = 16_384;
/// The first readdir cookie of an entry (`.` is 1, `..` is 2).
pub const FIRST_COOKIE: u64 = 3;

/// The namespace's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsConfig {
    /// Bytes per stored file block (at most 4096: a block is one row).
    pub block_size: u32,
    /// The largest file, in bytes (a write or truncate beyond it is EFBIG).
    pub max_file_size: u64,
    /// Inode numbers a client reserves at a time.
    pub ino_range: u64,
    /// The capacity `statfs` reports, in bytes.
    pub capacity_bytes: u64,
    /// The inode count `statfs` reports as the total.
    pub capacity_inodes: u64,
}

impl Default for FsConfig {
    fn default() -> FsConfig {
        FsConfig {
            block_size: 4096,
            max_file_size: 16 << 20,
            ino_range: 1024,
            capacity_bytes: 1 << 30,
            capacity_inodes: 1 << 24,
        }
    }
}

impl FsConfig {
    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> FsResult<()> {
        let bad = |m: String| Err(FsError::new(libc::EINVAL, m));
        if !(512..=4096).contains(&self.block_size) {
            return bad(format!("block_size {} is not within 512..=4096", self.block_size));
        }
        if self.max_file_size == 0 || self.max_file_size > (1 << 40) {
            return bad(format!("max_file_size {} is not within 1..=2^40", self.max_file_size));
        }
        if self.max_file_size.div_ceil(u64::from(self.block_size)) > MAX_BLOCKS {
            return bad(format!(
                "max_file_size {} is over {MAX_BLOCKS} blocks of {} bytes (a truncate deletes them in one transaction)",
                self.max_file_size, self.block_size
            ));
        }
        if self.ino_range == 0 || self.ino_range > 1 << 20 {
            return bad(format!("ino_range {} is not within 1..=2^20", self.ino_range));
        }
        Ok(())
    }
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), ty, nullable: false }
}

fn i64s(names: &[&str]) -> Vec<Column> {
    names.iter().map(|n| col(n, ColumnType::I64)).collect()
}

/// The four tables' definitions.
pub fn definitions(config: &FsConfig) -> Vec<TableDef> {
    let mut inode_columns = i64s(&[
        "ino",
        "mode",
        "uid",
        "gid",
        "size",
        "nlink",
        "atime",
        "mtime",
        "ctime",
        "rdev",
        "parent",
        "next_cookie",
    ]);
    inode_columns.push(Column {
        name: "target".into(),
        ty: ColumnType::Varchar { max: TARGET_MAX as u32 },
        nullable: true,
    });
    let inode = TableDef {
        name: INODES.into(),
        columns: inode_columns,
        primary_key: vec!["ino".into()],
        partition_key: None,
        partitions: None,
        read_backup: false,
        indexes: Vec::new(),
    };
    let mut dentry_columns = vec![
        col("parent", ColumnType::I64),
        col("name", ColumnType::Varchar { max: NAME_MAX as u32 }),
    ];
    dentry_columns.extend(i64s(&["ino", "cookie", "mode"]));
    let dentry = TableDef {
        name: DENTRIES.into(),
        columns: dentry_columns,
        primary_key: vec!["parent".into(), "name".into()],
        partition_key: Some(vec!["parent".into()]),
        partitions: None,
        read_backup: false,
        indexes: vec![IndexDef {
            name: "by_cookie".into(),
            columns: vec!["parent".into(), "cookie".into()],
        }],
    };
    let mut block_columns = i64s(&["ino", "blk"]);
    block_columns.push(col("data", ColumnType::Bytes { max: config.block_size }));
    let block = TableDef {
        name: BLOCKS.into(),
        columns: block_columns,
        primary_key: vec!["ino".into(), "blk".into()],
        partition_key: Some(vec!["ino".into()]),
        partitions: None,
        read_backup: false,
        indexes: vec![IndexDef {
            name: "by_ino".into(),
            columns: vec!["ino".into(), "blk".into()],
        }],
    };
    let meta = TableDef {
        name: META.into(),
        columns: vec![col("name", ColumnType::Varchar { max: 32 }), col("value", ColumnType::I64)],
        primary_key: vec!["name".into()],
        partition_key: None,
        partitions: None,
        read_backup: false,
        indexes: Vec::new(),
    };
    vec![inode, dentry, block, meta]
}

/// The namespace's tables, as the dictionary holds them.
#[derive(Clone, Debug)]
pub struct Tables {
    /// `fs_inode`.
    pub inodes: Arc<Table>,
    /// `fs_dentry`.
    pub dentries: Arc<Table>,
    /// `fs_block`.
    pub blocks: Arc<Table>,
    /// `fs_meta`.
    pub meta: Arc<Table>,
}

/// Creates any of the tables that does not exist (another client creating one at the same
/// time is fine) and returns all four. A table of that name with other columns is refused.
pub fn ensure_tables(session: &mut Session<'_>, config: &FsConfig) -> FsResult<Tables> {
    let mut found = Vec::new();
    for def in definitions(config) {
        let table = match session.table(&def.name) {
            Ok(t) => t,
            Err(Error::Schema { code: client::ErrorCode::NoSuchTable, .. }) => {
                match session.create_table(&def) {
                    Ok(t) => t,
                    Err(Error::Schema { code: client::ErrorCode::TableExists, .. }) => {
                        session.forget_tables();
                        session.table(&def.name).map_err(|e| crate::error::from_cluster(&e))?
                    }
                    Err(e) => {
                        return Err(FsError::new(
                            libc::EIO,
                            format!("creating table {}: {e}", def.name),
                        ))
                    }
                }
            }
            Err(e) => {
                return Err(FsError::new(libc::EIO, format!("reading table {}: {e}", def.name)))
            }
        };
        if table.def.columns != def.columns || table.def.primary_key != def.primary_key {
            return Err(FsError::new(
                libc::EINVAL,
                format!("table {} exists with other columns or key than this namespace's (block_size differs?)", def.name),
            ));
        }
        found.push(table);
    }
    let mut it = found.into_iter();
    let mut next = || it.next().ok_or_else(|| FsError::new(libc::EIO, "a table is missing"));
    Ok(Tables { inodes: next()?, dentries: next()?, blocks: next()?, meta: next()? })
}
