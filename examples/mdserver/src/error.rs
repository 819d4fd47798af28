//! The namespace's errors: a POSIX errno the FUSE layer returns as it is, with a message that
//! says what was wrong for the log and the library's callers.

use std::fmt;

/// A failed namespace operation: its errno and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    /// The POSIX error number (`libc::ENOENT`, ...).
    pub errno: i32,
    /// What was wrong, naming the entry or inode.
    pub message: String,
}

impl FsError {
    /// An error with `errno` and a message.
    pub fn new(errno: i32, message: impl Into<String>) -> FsError {
        FsError { errno, message: message.into() }
    }

    /// The errno's symbolic name (`ENOENT`), for messages and tests.
    pub fn name(&self) -> &'static str {
        errno_name(self.errno)
    }
}

/// The symbolic name of the errnos this namespace returns.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::EIO => "EIO",
        libc::EAGAIN => "EAGAIN",
        libc::ENOSPC => "ENOSPC",
        libc::EMLINK => "EMLINK",
        libc::EXDEV => "EXDEV",
        libc::ELOOP => "ELOOP",
        _ => "E?",
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.message)
    }
}

impl std::error::Error for FsError {}

/// The namespace's result.
pub type FsResult<T> = Result<T, FsError>;

/// Shorthands for the errors operations return.
pub(crate) fn err<T>(errno: i32, message: impl Into<String>) -> FsResult<T> {
    Err(FsError::new(errno, message))
}

/// A cluster error that no retry fixed: EIO (or ENOSPC when the data nodes are out of memory),
/// naming the cluster's reason.
pub(crate) fn from_cluster(e: &client::Error) -> FsError {
    let errno = match e.code() {
        Some(client::ErrorCode::OutOfMemory) | Some(client::ErrorCode::RedoLogFull) => libc::ENOSPC,
        _ => libc::EIO,
    };
    FsError::new(errno, format!("cluster: {e}"))
}
