//! The redo log of one storage instance (NDB's DBLQH fragment log): each committed operation's
//! after-image, with its global checkpoint id (GCI) and transaction id, appended to a ring of
//! pre-allocated files; written in rounds (group commit), each round's writes followed by a
//! linked fdatasync through io_uring, or by pwrite + fdatasync where io_uring is refused; read
//! back at start so recovery can replay what the last checkpoint lacks.
//!
//! The parts: [`record`] (the record format), [`ring`] (files, positions, the anchor that
//! persists the tail), [`io`] (the two writer backends), [`recovery`] (the scan at open and
//! the tail/mid-log rule), [`log`] ([`RedoLog`]: append, submit, completions, release),
//! [`settings`].
//!
//! The life of a record: [`RedoLog::append`] encodes it into the filling buffer and returns the
//! [`Lsn`] just past it; [`RedoLog::submit`] hands the buffer to the backend as one round (its
//! last record flagged as the round's end, then the writes, then one fdatasync per file
//! touched, all linked); when [`RedoLog::poll_completions`] (or [`RedoLog::wait`]) reports the
//! round, [`RedoLog::durable_through`] has moved past it. One round is in flight at a time;
//! appends go on into the other buffer meanwhile. After a checkpoint the owner calls
//! [`RedoLog::release_through`] (a position) or [`RedoLog::release_through_gci`]; the new tail
//! is written to the anchor in the next round and the space is reused once that round is
//! durable. A full ring refuses appends with [`RedoError::LogFull`]; nothing unreleased is
//! ever overwritten.
//!
//! Invariants:
//! - `tail <= durable <= head <= tail + ring`: positions only grow, and the bytes from the
//!   tail to the head are never written over;
//! - one round in flight, so at a crash only the last round can be torn, with holes in any
//!   place (the device may persist its sectors in any order before the fdatasync returns);
//!   every earlier round is whole on disk;
//! - at open, after the scan, records left past the end by a torn round are erased and every
//!   file is synced before anything new is written.

use std::path::PathBuf;

pub mod io;
pub mod log;
pub mod record;
pub mod recovery;
pub mod ring;
pub mod settings;

pub use log::{Backend, Completion, RedoLog, RedoStats, RoundId, Submit};
pub use record::{Change, DecodeError, Record};
pub use recovery::{Recovered, RecoveredRecord, Truncation};
pub use settings::{IoUringMode, RedoSettings, IO_URING_ENV};

/// A position in the redo log: bytes of records since the log was created (file-end gaps
/// included). It never goes back; the positions a log hands out ([`RedoLog::append`],
/// [`RedoLog::durable_through`], [`RecoveredRecord::end`]) are record boundaries, which is
/// what [`RedoLog::release_through`] needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The position in bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whose log a directory holds: written into every file's header and checked at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's id (the cluster file's `cluster_id`).
    pub cluster_id: u64,
    /// The data node.
    pub node_id: u32,
    /// The storage instance on the node.
    pub instance: u32,
}

/// What went wrong, naming the setting, file, offset or position.
#[derive(Debug, thiserror::Error)]
pub enum RedoError {
    /// A setting is out of range.
    #[error("redo setting `{key}` = {value} is invalid (allowed: {allowed})")]
    Setting { key: &'static str, value: String, allowed: String },
    /// A file operation failed.
    #[error("redo log {action} on {path}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    /// A file is not a log file this build can use.
    #[error("{path} is not a usable redo log file: {reason}")]
    BadFileHeader { path: PathBuf, reason: String },
    /// A file belongs to another cluster, node or instance.
    #[error("{path} belongs to {field} {found}, not {expected}: refusing another node's redo log")]
    WrongOwner { path: PathBuf, field: &'static str, found: u64, expected: u64 },
    /// A file was made with other settings.
    #[error("{path} was made with {field} = {found}, the settings say {configured}")]
    GeometryMismatch { path: PathBuf, field: &'static str, found: u64, configured: u64 },
    /// File 0 is missing while other files of the log exist.
    #[error("redo log in {dir} is incomplete: {missing} is missing while {present} exists")]
    Incomplete { dir: PathBuf, missing: PathBuf, present: PathBuf },
    /// Neither anchor slot is valid.
    #[error("{path} has no valid anchor (the log's tail): {reasons}")]
    NoAnchor { path: PathBuf, reasons: String },
    /// A record before the end of the log is bad: a valid record of a later round follows it.
    #[error(
        "redo log corrupt at {path} offset {offset} (position {position}): {reason}; \
         yet round {later_round} follows at {later_path} offset {later_offset}, so this is not a torn end"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        position: u64,
        reason: String,
        later_path: PathBuf,
        later_offset: u64,
        later_round: u64,
    },
    /// The ring has no room for the record until space is released.
    #[error("redo log full: {needed} bytes needed, {free} free until a checkpoint releases space")]
    LogFull { needed: u64, free: u64 },
    /// The filling round buffer has no room: submit, and append again once a round completes.
    #[error("redo round buffer full: {needed} bytes needed, {free} free until the next submit")]
    BufferFull { needed: usize, free: usize },
    /// The record cannot be logged at any time.
    #[error("redo record of {key_bytes} key and {image_bytes} image bytes exceeds the largest record, {max} bytes")]
    RecordTooLarge { key_bytes: usize, image_bytes: usize, max: usize },
    /// Release past what is durable.
    #[error("cannot release through position {requested}: only {durable} is durable")]
    ReleaseBeyondDurable { requested: u64, durable: u64 },
    /// Release at a position where no record starts.
    #[error("cannot release through position {position}: no record starts there ({reason})")]
    NotABoundary { position: u64, reason: String },
    /// A round's write or sync failed; the log accepts nothing more.
    #[error("redo round {round} failed: {action} of {path}: {source}")]
    RoundFailed { round: u64, path: PathBuf, action: &'static str, source: std::io::Error },
    /// An earlier round failed: what was not synced is unknown, so the node must stop.
    #[error("redo log stopped after round {round} failed")]
    Stopped { round: u64 },
}
