//! Local checkpoint files of one storage instance (NDB's LCP): a copy of every row the instance
//! holds, written while it goes on serving, so that a restart loads the newest checkpoint and
//! replays the redo log only from the checkpoint's start. NDB's BACKUP block writes each
//! fragment's LCP into data files plus a control file naming the valid ones, and its RESTORE
//! block reads them back at restart; here one file holds a whole checkpoint of an instance,
//! and its rename into place plays the control file's part.
//!
//! The parts: [`format`] (the header, row record and trailer, drawn and checked), [`writer`]
//! ([`LcpWriter`]: create, add rows, finish or abandon), [`reader`] ([`list`], [`read`],
//! [`remove_older`], [`remove_tmp`]).
//!
//! The life of a checkpoint: [`LcpWriter::create`] writes `lcp-<instance>-<seq>.tmp` with a
//! header saying whose it is and where it started ([`LcpStart`]); [`LcpWriter::add_row`]
//! buffers rows and writes them out a mebibyte at a time; [`LcpWriter::finish`] appends the
//! trailer, fsyncs the file, renames it to `lcp-<instance>-<seq>.dat` and fsyncs the
//! directory. Only then does [`list`] see it. The storage block then drops the redo log before
//! [`LcpStart::start_position`] and removes older checkpoints with [`remove_older`].
//!
//! Invariants:
//! - an installed (`.dat`) file is whole: it is renamed into place only after its trailer is
//!   written and synced, so a `.dat` without a valid trailer is corruption, never a torn
//!   write, and is refused naming the file;
//! - a `.tmp` file is never read; it is an unfinished or abandoned checkpoint;
//! - every byte of an installed file is under a CRC-32C (header, each row, trailer, and the
//!   trailer's checksum of all bytes before it), and lengths read from a file are bounded
//!   before anything is allocated: reading never panics and never returns fewer rows than the
//!   file was written with without an error;
//! - a file is read only by the instance it names, and its header must say the same cluster,
//!   node, instance and sequence number.

use std::path::{Path, PathBuf};

pub mod format;
pub mod reader;
pub mod writer;

#[cfg(test)]
mod tests;

pub use crate::redo::Identity;
pub use reader::{list, read, remove_older, remove_tmp};
pub use writer::LcpWriter;

/// What a checkpoint's header says: written at create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LcpStart {
    /// The checkpoint's number; a newer checkpoint of the instance has a higher one.
    pub seq: u64,
    /// The redo log position (a [`crate::redo::Lsn`]) when the checkpoint began: replay after
    /// loading the checkpoint starts there.
    pub start_position: u64,
    /// The global checkpoint running when the checkpoint began.
    pub start_gci: u64,
    /// The newest global checkpoint complete on disk when the checkpoint began.
    pub saved_gci: u64,
}

/// An installed checkpoint: its file, its header, and what its trailer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LcpInfo {
    /// The `.dat` file.
    pub path: PathBuf,
    /// The header.
    pub start: LcpStart,
    /// The highest GCI of any row in the checkpoint (given to [`LcpWriter::finish`]).
    pub max_gci: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes of the whole file, header and trailer included.
    pub bytes: u64,
}

/// What went wrong, naming the file and, for corruption, the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum LcpError {
    /// A file operation failed.
    #[error("local checkpoint {action} on {path}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    /// A file is not a whole checkpoint this build can read (bad header, missing trailer,
    /// wrong length).
    #[error("{path} is not a usable local checkpoint file: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// A file belongs to another cluster, node or instance.
    #[error("{path} belongs to {field} {found}, not {expected}: refusing another node's local checkpoint")]
    WrongOwner { path: PathBuf, field: &'static str, found: u64, expected: u64 },
    /// A row record, or the file's checksum, is bad.
    #[error("local checkpoint {path} corrupt at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// A row's key or image is larger than a checkpoint can hold.
    #[error("row of {key_bytes} key and {image_bytes} image bytes exceeds the largest key or image, {max} bytes")]
    RowTooLarge { key_bytes: usize, image_bytes: usize, max: usize },
    /// The checkpoint to create is installed already.
    #[error("local checkpoint {path} is installed already: refusing to write over it")]
    Exists { path: PathBuf },
    /// [`remove_older`] was asked to keep a checkpoint that is not installed.
    #[error("no installed local checkpoint {seq} in {dir}: refusing to remove the older ones")]
    NotInstalled { dir: PathBuf, seq: u64 },
    /// An earlier write of this checkpoint failed: what reached the file is unknown.
    #[error("local checkpoint {path} stopped after a failed write: abandon it")]
    Stopped { path: PathBuf },
    /// The row callback of [`read`] refused a row.
    #[error("local checkpoint row refused: {0}")]
    Row(String),
}

/// The name of `instance`'s installed checkpoint `seq`.
pub fn file_name(instance: u32, seq: u64) -> String {
    format!("lcp-{instance}-{seq}.dat")
}

/// The name of `instance`'s checkpoint `seq` while it is written.
pub fn tmp_name(instance: u32, seq: u64) -> String {
    format!("lcp-{instance}-{seq}.tmp")
}

/// What a directory entry's name is to `instance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// An installed checkpoint of the instance, with its seq.
    Installed(u64),
    /// A checkpoint of the instance being written or abandoned, with its seq.
    Tmp(u64),
    /// Anything else (another instance's files included).
    Other,
}

/// Classifies `name`: only the exact names [`file_name`] and [`tmp_name`] make for `instance`
/// count (no leading zeros or signs), so parsing a name and naming its seq agree.
pub(crate) fn classify(name: &str, instance: u32) -> Name {
    let prefix = format!("lcp-{instance}-");
    let Some(rest) = name.strip_prefix(&prefix) else {
        return Name::Other;
    };
    let (seq, tmp) = if let Some(seq) = rest.strip_suffix(".dat") {
        (seq, false)
    } else if let Some(seq) = rest.strip_suffix(".tmp") {
        (seq, true)
    } else {
        return Name::Other;
    };
    match seq.parse::<u64>() {
        Ok(n) if n.to_string() == seq => {
            if tmp {
                Name::Tmp(n)
            } else {
                Name::Installed(n)
            }
        }
        _ => Name::Other,
    }
}

/// Maps an I/O error to [`LcpError::Io`] naming `path` and `action`.
pub(crate) fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> LcpError + 'a {
    move |source| LcpError::Io { path: path.to_owned(), action, source }
}

/// Fsyncs directory `dir`, so renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LcpError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync the checkpoint directory"))
}
