//! The pushed-down program: a small register machine that storage runs on each row of a scan
//! (NDB's interpreted programs run by DBTUP; RonSQL's pushed-down aggregation), so that a
//! filter, a projection or a GROUP BY aggregate runs next to the data and only results cross
//! the network.
//!
//! - [`instr`]: the program's parts and its byte form (what travels with a scan request);
//! - `verify.rs`: the checks a program from an untrusted peer must pass before it runs, and
//!   its translation into the form the interpreter runs ([`Verified`]);
//! - `alias.rs`: the verified program's optimisation (column registers become the column);
//! - `run.rs`: the interpreter ([`Verified::apply`], one row image at a time);
//! - [`aggregate`]: partial aggregates per partition ([`Groups`]), their wire form, and the
//!   coordinator's [`Merger`] that combines partitions and finishes the results;
//! - `key_table.rs`: the hash table from group keys to groups both of them use;
//! - [`compile`]: expressions and queries, as client libraries and SQL write them, into programs;
//! - [`calendar`]: the timestamp fields and month arithmetic of `extract` and `add_months`;
//! - [`tuple`]: the self-describing value tuples returned rows and group keys travel as.
//!
//! Invariants every verified program keeps, which the interpreter relies on (and never
//! re-checks per row): each register holds only its declared type or NULL; every register,
//! column, constant and jump target is in range; jumps go forward only, so a row runs at most
//! `code.len()` instructions and always reaches a terminator.

pub mod aggregate;
mod alias;
pub mod calendar;
pub mod compile;
pub mod instr;
mod key_table;
mod run;
pub mod tuple;
mod verify;

pub use aggregate::{Groups, Merger};
pub use calendar::TimeField;
pub use compile::{col, compile, compile_with, lit, CompileError, Expr, Query};
pub use instr::{AggFn, Aggregate, ArithOp, CmpOp, Constant, Instr, Output, Program, RegType};
pub use run::Verified;
pub use tuple::{decode_tuples, encode_value, TupleError};

/// The most registers any program may declare (register operands are one byte).
pub const MAX_REGISTERS: usize = 255;

/// The limits a storage node holds programs to (its configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramLimits {
    /// Most bytes of an encoded program.
    pub max_bytes: usize,
    /// Most registers (at most [`MAX_REGISTERS`] whatever this says).
    pub max_registers: usize,
    /// Most instructions.
    pub max_instructions: usize,
    /// Most groups an aggregating program may make in one partition (and the merger in all).
    pub max_groups: usize,
}

impl Default for ProgramLimits {
    fn default() -> ProgramLimits {
        ProgramLimits {
            max_bytes: 64 * 1024,
            max_registers: 32,
            max_instructions: 4096,
            max_groups: 65_536,
        }
    }
}

/// Why a program was refused: each names the instruction, output, group-by entry or
/// aggregate that is wrong, and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// The encoded program is over the byte limit.
    #[error("program is {bytes} bytes (limit {limit})")]
    TooLarge { bytes: usize, limit: usize },
    /// A count over its limit.
    #[error("program has {count} {what} (limit {limit})")]
    Limit { what: &'static str, count: usize, limit: usize },
    /// Bytes that are not a program.
    #[error("malformed program at byte {at}: {reason}")]
    Malformed { at: usize, reason: String },
    /// An instruction breaks a rule.
    #[error("instruction {index} ({name}): {reason}")]
    Instruction { index: usize, name: &'static str, reason: String },
    /// An output entry breaks a rule.
    #[error("output {index}: {reason}")]
    Output { index: usize, reason: String },
    /// A group-by entry breaks a rule.
    #[error("group-by {index}: {reason}")]
    GroupBy { index: usize, reason: String },
    /// An aggregate breaks a rule.
    #[error("aggregate {index}: {reason}")]
    Aggregate { index: usize, reason: String },
    /// The program as a whole is wrong.
    #[error("program: {reason}")]
    Shape { reason: String },
}

/// What became of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not wanted.
    Skip,
    /// Its output tuple was appended.
    Return,
    /// It was folded into its group.
    Aggregate,
}

/// Why a verified program stopped on a row, or why partial aggregates could not be merged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// Integer arithmetic, an integer SUM, AVG or COUNT left its type's range. `instruction` is
    /// the instruction that overflowed (for a merge: the program's first `aggregate`).
    #[error("instruction {instruction}: integer overflow")]
    Overflow { instruction: usize },
    /// One group more than the limit.
    #[error("more than {limit} groups")]
    TooManyGroups { limit: usize },
    /// A row image that does not fit the table (storage checks rows on write: a bug).
    #[error("malformed row image: {0}")]
    BadRow(String),
    /// Partial aggregates from a peer that do not fit the program.
    #[error("malformed partial aggregates: {0}")]
    BadPartial(String),
}

#[cfg(test)]
mod tests;
