//! The engine's error codes: what a refusal (`*_REF`) carries on the wire, one number per
//! reason, and the class a client acts on (retry, fix the request, fix the schema). Numbers are
//! part of the protocol: never renumber, only add.

/// Why an operation, a transaction or a schema change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// A lock wait or a participant's answer took longer than the deadlock timeout.
    Deadlock = 1,
    /// The transaction was idle longer than the inactive timeout.
    InactiveTimeout = 2,
    /// Insert of a key that exists.
    DuplicateKey = 3,
    /// Update or delete of a key that does not exist.
    NotFound = 4,
    /// The table does not exist (dropped, or never created).
    NoSuchTable = 5,
    /// The table changed since the client read its definition.
    SchemaVersion = 6,
    /// A value does not fit its column (type, NULL, length), or a column does not exist.
    BadValue = 7,
    /// The key bytes do not fit the table's key.
    BadKey = 8,
    /// A pool is full (transactions, operations): retry later.
    Overload = 9,
    /// The storage instance's memory limit is reached.
    OutOfMemory = 10,
    /// A node the transaction needs failed.
    NodeFailure = 11,
    /// A request out of order (an operation after commit, an unknown transaction).
    Protocol = 12,
    /// A schema change is running: retry.
    SchemaBusy = 13,
    /// A table definition was refused.
    BadSchema = 14,
    /// A table of that name exists.
    TableExists = 15,
    /// A node the change needs is not connected.
    NotConnected = 16,
    /// The transaction was aborted earlier (the reason was reported then).
    Aborted = 17,
    /// A table limit of the dictionary is reached.
    TooManyTables = 18,
    /// A partition this node does not hold.
    WrongPartition = 19,
    /// A scan's pushed-down program or ranges were refused (the message names the instruction).
    BadProgram = 20,
    /// An aggregate has more groups than `scan_max_groups`.
    TooManyGroups = 21,
    /// Integer arithmetic of a pushed-down program overflowed.
    Overflow = 22,
    /// The redo log has no room for the operation until a local checkpoint frees space
    /// (temporary).
    RedoLogFull = 23,
    /// A disk-durable commit was asked of a cluster that keeps no redo log (no `data_dir`).
    NotDurable = 24,
    /// The data node is recovering from its files and does not serve yet (temporary).
    Recovering = 25,
}

impl ErrorCode {
    /// The code for a wire number.
    pub fn from_u32(code: u32) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match code {
            1 => Deadlock,
            2 => InactiveTimeout,
            3 => DuplicateKey,
            4 => NotFound,
            5 => NoSuchTable,
            6 => SchemaVersion,
            7 => BadValue,
            8 => BadKey,
            9 => Overload,
            10 => OutOfMemory,
            11 => NodeFailure,
            12 => Protocol,
            13 => SchemaBusy,
            14 => BadSchema,
            15 => TableExists,
            16 => NotConnected,
            17 => Aborted,
            18 => TooManyTables,
            19 => WrongPartition,
            20 => BadProgram,
            21 => TooManyGroups,
            22 => Overflow,
            23 => RedoLogFull,
            24 => NotDurable,
            25 => Recovering,
            _ => return None,
        })
    }

    /// Whether the same request may succeed when retried unchanged.
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            ErrorCode::Deadlock
                | ErrorCode::Overload
                | ErrorCode::OutOfMemory
                | ErrorCode::NodeFailure
                | ErrorCode::SchemaBusy
                | ErrorCode::NotConnected
                | ErrorCode::RedoLogFull
                | ErrorCode::Recovering
        )
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Deadlock => "deadlock timeout",
            InactiveTimeout => "inactive timeout",
            DuplicateKey => "duplicate key",
            NotFound => "not found",
            NoSuchTable => "no such table",
            SchemaVersion => "table changed",
            BadValue => "bad value",
            BadKey => "bad key",
            Overload => "overload",
            OutOfMemory => "out of memory",
            NodeFailure => "node failure",
            Protocol => "protocol error",
            SchemaBusy => "schema change running",
            BadSchema => "bad table definition",
            TableExists => "table exists",
            NotConnected => "node not connected",
            Aborted => "transaction aborted",
            TooManyTables => "too many tables",
            WrongPartition => "wrong partition",
            BadProgram => "bad scan program",
            TooManyGroups => "too many groups",
            Overflow => "arithmetic overflow",
            RedoLogFull => "redo log full",
            NotDurable => "no redo log",
            Recovering => "node recovering",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_code_round_trips() {
        let mut seen = 0;
        for n in 0..64 {
            if let Some(c) = ErrorCode::from_u32(n) {
                assert_eq!(c as u32, n);
                seen += 1;
            }
        }
        assert_eq!(seen, 25);
    }
}
