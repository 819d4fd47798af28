//! The client's typed errors: what an application acts on (retry a deadlock, fix a value,
//! re-read a changed table), each with the message the data node gave, which names the table,
//! column and value where there is one.

use engine::ErrorCode;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer within the session's timeout (the commit's outcome, if one was asked, is
    /// unknown: see [`Error::NodeFailure`]).
    #[error("timed out: {0}")]
    Timeout(String),
    /// A lock wait took longer than the deadlock timeout; the transaction was aborted: retry it.
    #[error("deadlock: {0}")]
    Deadlock(String),
    /// A node the transaction used failed or its link went down.
    #[error("node failure (outcome {}): {message}", if *.outcome_unknown { "unknown" } else { "aborted" })]
    NodeFailure { outcome_unknown: bool, message: String },
    /// Insert of a key that exists.
    #[error("duplicate key: {0}")]
    DuplicateKey(String),
    /// Update or delete of a key that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The table does not exist, changed, or its definition was refused.
    #[error("schema: {message}")]
    Schema { code: ErrorCode, message: String },
    /// A pool, memory or a link is full, or a schema change is running: retry later.
    #[error("overload: {message}")]
    Overload { code: ErrorCode, message: String },
    /// A value, key or request that can never succeed as it is.
    #[error("invalid: {message}")]
    Invalid { code: Option<ErrorCode>, message: String },
    /// The transaction was aborted (idle too long, rolled back earlier, ...).
    #[error("aborted: {0}")]
    Aborted(String),
    /// The cluster file or the connection.
    #[error("connect: {0}")]
    Connect(String),
}

impl Error {
    /// The error a refusal with `code` and `message` means.
    pub fn from_code(code: ErrorCode, message: String, outcome_unknown: bool) -> Error {
        use ErrorCode::*;
        match code {
            Deadlock => Error::Deadlock(message),
            InactiveTimeout => Error::Aborted(format!("inactive timeout: {message}")),
            ErrorCode::DuplicateKey => Error::DuplicateKey(message),
            ErrorCode::NotFound => Error::NotFound(message),
            NoSuchTable | SchemaVersion | BadSchema | TableExists | TooManyTables => Error::Schema { code, message },
            Overload | OutOfMemory | SchemaBusy | NotConnected | RedoLogFull | Recovering => Error::Overload { code, message },
            ErrorCode::NodeFailure => Error::NodeFailure { outcome_unknown, message },
            BadValue | BadKey | WrongPartition | Protocol | BadProgram | TooManyGroups | Overflow | NotDurable => {
                Error::Invalid { code: Some(code), message }
            }
            ErrorCode::Aborted => Error::Aborted(message),
        }
    }

    /// The engine's code, where the error came from a data node.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Deadlock(_) => Some(ErrorCode::Deadlock),
            Error::DuplicateKey(_) => Some(ErrorCode::DuplicateKey),
            Error::NotFound(_) => Some(ErrorCode::NotFound),
            Error::Schema { code, .. } | Error::Overload { code, .. } => Some(*code),
            Error::Invalid { code, .. } => *code,
            Error::NodeFailure { .. } => Some(ErrorCode::NodeFailure),
            _ => None,
        }
    }

    /// Whether retrying the same transaction may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Deadlock(_) | Error::Overload { .. } | Error::NodeFailure { outcome_unknown: false, .. })
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid { code: None, message: message.into() }
    }
}

/// The client's result.
pub type Result<T> = std::result::Result<T, Error>;
