//! The interpreter: runs a [`Verified`] program on one row image.
//!
//! The register file is a stack array (8 to 512 slots, the tier chosen by the program's size), reset
//! to NULL per row: the program's registers first, then one "field" slot per column the
//! program reads (`LoadColumn` becomes a copy from the field, or goes away when `alias.rs`
//! makes the register the field itself; `Output::Column` reads the field). One
//! walk over the row image per row fills the fields, stopping at the last column the program
//! reads. Text and bytes values are slices borrowed from the image or the constants, so the
//! filter path allocates nothing; returned tuples are appended to the caller's buffer.
//!
//! Invariants from the verifier (see `verify.rs`) that this file relies on: every slot index in
//! an [`Op`] is below [`Verified::slots`]; a register holds only its declared type or NULL;
//! jump targets are forward and in range and the last op is a terminator.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use super::aggregate::{Groups, Merger, Plan};
use super::calendar::{self, TimeField};
use super::tuple::{tag, write_variable};
use super::{ArithOp, CmpOp, Outcome, RunError};

/// A register's value during one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Slot<'a> {
    Null,
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    /// Text or bytes (the register's type says which).
    Bytes(&'a [u8]),
}

/// A verified constant value.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Datum {
    Null,
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Bytes(Box<[u8]>),
}

impl Datum {
    pub(super) fn slot(&self) -> Slot<'_> {
        match self {
            Datum::Null => Slot::Null,
            Datum::I64(v) => Slot::I64(*v),
            Datum::U64(v) => Slot::U64(*v),
            Datum::F64(v) => Slot::F64(*v),
            Datum::Bool(v) => Slot::Bool(*v),
            Datum::Bytes(v) => Slot::Bytes(v),
        }
    }
}

/// One element of a compiled LIKE pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PatternItem {
    /// This byte.
    Byte(u8),
    /// `_`: one character (one UTF-8 character for text, one byte for bytes).
    One,
    /// `%`: any run of characters.
    Any,
}

/// How a column is laid out in the row image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Width {
    Fixed(usize),
    Variable,
}

/// How a read column's bytes become a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FieldKind {
    I32,
    I64,
    U64,
    F64,
    Bool,
    Bytes,
}

/// One column of the walk over the row image.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    pub(super) width: Width,
    pub(super) kind: FieldKind,
    /// The field slot the column is read into, or [`NO_FIELD`].
    pub(super) field: u16,
}

/// A [`Step::field`] for a column the program does not read (the walk only skips it).
pub(super) const NO_FIELD: u16 = u16::MAX;

/// How one returned value is tagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OutputKind {
    I32,
    I64,
    U64,
    F64,
    Bool,
    Bytes,
    Text,
    Timestamp,
}

/// An instruction as the interpreter runs it: slot indices resolved, LoadColumn turned into a
/// copy from the column's field slot, constants resolved to their tables.
#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
    Copy {
        dst: u16,
        src: u16,
    },
    Const {
        dst: u16,
        datum: u32,
    },
    ArithI64 {
        op: ArithOp,
        dst: u16,
        a: u16,
        b: u16,
    },
    ArithU64 {
        op: ArithOp,
        dst: u16,
        a: u16,
        b: u16,
    },
    ArithF64 {
        op: ArithOp,
        dst: u16,
        a: u16,
        b: u16,
    },
    ToF64 {
        dst: u16,
        a: u16,
    },
    Compare {
        op: CmpOp,
        dst: u16,
        a: u16,
        b: u16,
    },
    IsNull {
        dst: u16,
        a: u16,
        negate: bool,
    },
    Like {
        dst: u16,
        a: u16,
        pattern: u32,
        text: bool,
    },
    In {
        dst: u16,
        a: u16,
        list: u32,
    },
    And {
        dst: u16,
        a: u16,
        b: u16,
    },
    Or {
        dst: u16,
        a: u16,
        b: u16,
    },
    Not {
        dst: u16,
        a: u16,
    },
    Extract {
        field: TimeField,
        dst: u16,
        a: u16,
    },
    AddMonths {
        dst: u16,
        a: u16,
        b: u16,
    },
    Jump {
        target: u32,
    },
    /// Jumps when the condition's being true equals `when`.
    JumpIf {
        cond: u16,
        target: u32,
        when: bool,
    },
    Skip,
    Return,
    Aggregate,
}

/// A verified program bound to a table's column layout: built by [`super::Program::verify`].
#[derive(Debug)]
pub struct Verified {
    /// Distinguishes programs, so that groups are never folded by another program.
    pub(super) id: u64,
    pub(super) ops: Vec<Op>,
    /// Per op: the instruction it came from (named by overflow errors).
    pub(super) origins: Vec<u32>,
    /// The walk: one step per column up to the last column read.
    pub(super) steps: Vec<Step>,
    pub(super) bitmap_bytes: usize,
    /// Registers plus field slots.
    pub(super) slots: usize,
    pub(super) datums: Vec<Datum>,
    pub(super) lists: Vec<Vec<Datum>>,
    pub(super) patterns: Vec<Vec<PatternItem>>,
    pub(super) output: Vec<(u16, OutputKind)>,
    pub(super) plan: Plan,
    pub(super) max_groups: usize,
    /// The first `aggregate` instruction (named by overflow errors of a merge).
    pub(super) first_aggregate: usize,
}

/// The register-file sizes the interpreter is built for; the verifier refuses programs that
/// need more than the largest.
pub(super) const SLOT_TIERS: [usize; 5] = [8, 16, 32, 64, 512];

/// A new program id.
pub(super) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, AtomicOrdering::Relaxed)
}

impl Verified {
    /// Whether the program aggregates (rather than returning rows).
    pub fn is_aggregate(&self) -> bool {
        !self.plan.aggregates.is_empty()
    }

    /// Values per result row: the outputs, or the group-by values then the aggregates.
    pub fn output_arity(&self) -> usize {
        if self.is_aggregate() {
            self.plan.keys.len() + self.plan.aggregates.len()
        } else {
            self.output.len()
        }
    }

    /// An empty group table for this program, holding at most `limit` groups.
    pub fn groups(&self, limit: usize) -> Groups {
        Groups::new(self.id, &self.plan, limit)
    }

    /// A merger for this program's partial aggregates, holding at most the verified limit's
    /// `max_groups` groups.
    pub fn merger(&self) -> Merger {
        self.merger_with_limit(self.max_groups)
    }

    /// A merger holding at most `limit` groups.
    pub fn merger_with_limit(&self, limit: usize) -> Merger {
        Merger::new(&self.plan, limit, self.first_aggregate)
    }

    /// Runs the program on one row image (`row::encode_row` format). On Return appends the
    /// output tuple to `out`; on Aggregate folds the row into `groups` (which must come from
    /// this program's [`Verified::groups`]).
    pub fn apply(
        &self,
        image: &[u8],
        out: &mut Vec<u8>,
        groups: &mut Groups,
    ) -> Result<Outcome, RunError> {
        // A register file just large enough: resetting it is part of every row's cost.
        match self.slots {
            n if n <= SLOT_TIERS[0] => {
                self.apply_in(&mut [Slot::Null; SLOT_TIERS[0]], image, out, groups)
            }
            n if n <= SLOT_TIERS[1] => {
                self.apply_in(&mut [Slot::Null; SLOT_TIERS[1]], image, out, groups)
            }
            n if n <= SLOT_TIERS[2] => {
                self.apply_in(&mut [Slot::Null; SLOT_TIERS[2]], image, out, groups)
            }
            n if n <= SLOT_TIERS[3] => {
                self.apply_in(&mut [Slot::Null; SLOT_TIERS[3]], image, out, groups)
            }
            _ => self.apply_in(&mut [Slot::Null; SLOT_TIERS[4]], image, out, groups),
        }
    }

    fn apply_in<'a>(
        &'a self,
        registers: &mut [Slot<'a>],
        image: &'a [u8],
        out: &mut Vec<u8>,
        groups: &mut Groups,
    ) -> Result<Outcome, RunError> {
        assert!(self.slots <= registers.len(), "the verifier sizes the register file");
        let registers = &mut registers[..self.slots];
        self.walk(image, registers)?;
        self.run(registers, out, groups)
    }

    /// Reads the image's columns, up to the last one the program reads, into their fields.
    fn walk<'a>(&self, image: &'a [u8], registers: &mut [Slot<'a>]) -> Result<(), RunError> {
        let bad = |what: &str, column: usize| RunError::BadRow(format!("column {column}: {what}"));
        let Some(bitmap) = image.get(..self.bitmap_bytes) else {
            return Err(RunError::BadRow(format!(
                "{} bytes cannot hold the null bitmap",
                image.len()
            )));
        };
        let mut at = self.bitmap_bytes;
        for (column, step) in self.steps.iter().enumerate() {
            if bitmap[column / 8] & (1 << (column % 8)) != 0 {
                continue;
            }
            let (body, next) = match step.width {
                Width::Fixed(n) => (image.get(at..at + n), at + n),
                Width::Variable => {
                    let head =
                        image.get(at..at + 4).ok_or_else(|| bad("length ends early", column))?;
                    let length = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                    (image.get(at + 4..at + 4 + length), at + 4 + length)
                }
            };
            let body = body.ok_or_else(|| bad("ends early", column))?;
            if step.field != NO_FIELD {
                registers[usize::from(step.field)] =
                    read_field(step.kind, body).ok_or_else(|| bad("not a bool", column))?;
            }
            at = next;
        }
        Ok(())
    }

    fn run<'a>(
        &'a self,
        r: &mut [Slot<'a>],
        out: &mut Vec<u8>,
        groups: &mut Groups,
    ) -> Result<Outcome, RunError> {
        let mut pc = 0usize;
        loop {
            let op = self.ops[pc];
            let index = pc;
            pc += 1;
            match op {
                Op::Copy { dst, src } => r[usize::from(dst)] = r[usize::from(src)],
                Op::Const { dst, datum } => {
                    r[usize::from(dst)] = self.datums[datum as usize].slot()
                }
                Op::ArithI64 { op, dst, a, b } => {
                    r[usize::from(dst)] = arith_i64(op, &r[usize::from(a)], &r[usize::from(b)])
                        .ok_or_else(|| self.overflow(index))?;
                }
                Op::ArithU64 { op, dst, a, b } => {
                    r[usize::from(dst)] = arith_u64(op, &r[usize::from(a)], &r[usize::from(b)])
                        .ok_or_else(|| self.overflow(index))?;
                }
                Op::ArithF64 { op, dst, a, b } => {
                    r[usize::from(dst)] = arith_f64(op, &r[usize::from(a)], &r[usize::from(b)]);
                }
                Op::ToF64 { dst, a } => r[usize::from(dst)] = to_f64(&r[usize::from(a)]),
                Op::Compare { op, dst, a, b } => {
                    r[usize::from(dst)] = compare(op, &r[usize::from(a)], &r[usize::from(b)]);
                }
                Op::IsNull { dst, a, negate } => {
                    r[usize::from(dst)] =
                        Slot::Bool(matches!(r[usize::from(a)], Slot::Null) != negate);
                }
                Op::Like { dst, a, pattern, text } => {
                    let pattern = &self.patterns[pattern as usize];
                    r[usize::from(dst)] = like_slot(&r[usize::from(a)], pattern, text);
                }
                Op::In { dst, a, list } => {
                    r[usize::from(dst)] = is_in(&r[usize::from(a)], &self.lists[list as usize]);
                }
                Op::And { dst, a, b } => {
                    r[usize::from(dst)] = and(&r[usize::from(a)], &r[usize::from(b)])
                }
                Op::Or { dst, a, b } => {
                    r[usize::from(dst)] = or(&r[usize::from(a)], &r[usize::from(b)])
                }
                Op::Not { dst, a } => r[usize::from(dst)] = not(&r[usize::from(a)]),
                Op::Extract { field, dst, a } => {
                    r[usize::from(dst)] = match r[usize::from(a)] {
                        Slot::I64(t) => Slot::I64(calendar::extract(t, field)),
                        _ => Slot::Null,
                    };
                }
                Op::AddMonths { dst, a, b } => {
                    r[usize::from(dst)] = match (r[usize::from(a)], r[usize::from(b)]) {
                        (Slot::I64(t), Slot::I64(m)) => Slot::I64(
                            calendar::add_months(t, m).ok_or_else(|| self.overflow(index))?,
                        ),
                        _ => Slot::Null,
                    };
                }
                Op::Jump { target } => pc = target as usize,
                Op::JumpIf { cond, target, when } => {
                    if matches!(r[usize::from(cond)], Slot::Bool(true)) == when {
                        pc = target as usize;
                    }
                }
                Op::Skip => return Ok(Outcome::Skip),
                Op::Return => {
                    self.emit(r, out);
                    return Ok(Outcome::Return);
                }
                Op::Aggregate => {
                    groups.fold(self.id, &self.plan, r, self.origins[index] as usize)?;
                    return Ok(Outcome::Aggregate);
                }
            }
        }
    }

    /// The overflow error of op `index`, naming its instruction.
    #[cold]
    fn overflow(&self, index: usize) -> RunError {
        RunError::Overflow { instruction: self.origins[index] as usize }
    }

    /// Appends the output tuple.
    fn emit(&self, r: &[Slot<'_>], out: &mut Vec<u8>) {
        for &(slot, kind) in &self.output {
            write_output(r[usize::from(slot)], kind, out);
        }
    }
}

/// A column's bytes as a slot; `None` for a bool byte other than 0 or 1. The caller passes
/// exactly the column's width for fixed types.
fn read_field(kind: FieldKind, body: &[u8]) -> Option<Slot<'_>> {
    let eight = |b: &[u8]| -> [u8; 8] {
        let mut word = [0u8; 8];
        word.copy_from_slice(&b[..8]);
        word
    };
    Some(match kind {
        FieldKind::I32 => {
            Slot::I64(i64::from(i32::from_le_bytes([body[0], body[1], body[2], body[3]])))
        }
        FieldKind::I64 => Slot::I64(i64::from_le_bytes(eight(body))),
        FieldKind::U64 => Slot::U64(u64::from_le_bytes(eight(body))),
        FieldKind::F64 => Slot::F64(f64::from_le_bytes(eight(body))),
        FieldKind::Bool => match body[0] {
            0 => Slot::Bool(false),
            1 => Slot::Bool(true),
            _ => return None,
        },
        FieldKind::Bytes => Slot::Bytes(body),
    })
}

/// Appends one tagged output value.
pub(super) fn write_output(value: Slot<'_>, kind: OutputKind, out: &mut Vec<u8>) {
    match (value, kind) {
        (Slot::Null, _) => out.push(tag::NULL),
        (Slot::I64(v), OutputKind::I32) => {
            // An i32 column's value was widened on load; it fits back.
            out.push(tag::I32);
            out.extend_from_slice(&(v as i32).to_le_bytes());
        }
        (Slot::I64(v), OutputKind::Timestamp) => {
            out.push(tag::TIMESTAMP);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Slot::I64(v), _) => {
            out.push(tag::I64);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Slot::U64(v), _) => {
            out.push(tag::U64);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Slot::F64(v), _) => {
            out.push(tag::F64);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (Slot::Bool(v), _) => out.extend_from_slice(&[tag::BOOL, u8::from(v)]),
        (Slot::Bytes(v), OutputKind::Text) => write_variable(tag::TEXT, v, out),
        (Slot::Bytes(v), _) => write_variable(tag::BYTES, v, out),
    }
}

/// Integer arithmetic: `Some(Null)` for a NULL operand or a zero divisor, `None` on overflow.
/// (Operands by reference: matching slots by value made the compiler copy them through the
/// stack on every instruction.)
fn arith_i64(op: ArithOp, a: &Slot<'_>, b: &Slot<'_>) -> Option<Slot<'static>> {
    let (&Slot::I64(x), &Slot::I64(y)) = (a, b) else {
        return Some(Slot::Null);
    };
    let value = match op {
        ArithOp::Add => x.checked_add(y)?,
        ArithOp::Sub => x.checked_sub(y)?,
        ArithOp::Mul => x.checked_mul(y)?,
        ArithOp::Div if y == 0 => return Some(Slot::Null),
        ArithOp::Div => x.checked_div(y)?,
        ArithOp::Mod if y == 0 => return Some(Slot::Null),
        // i64::MIN % -1 is 0, which fits: the remainder never overflows.
        ArithOp::Mod => x.wrapping_rem(y),
    };
    Some(Slot::I64(value))
}

/// Unsigned arithmetic, as [`arith_i64`].
fn arith_u64(op: ArithOp, a: &Slot<'_>, b: &Slot<'_>) -> Option<Slot<'static>> {
    let (&Slot::U64(x), &Slot::U64(y)) = (a, b) else {
        return Some(Slot::Null);
    };
    let value = match op {
        ArithOp::Add => x.checked_add(y)?,
        ArithOp::Sub => x.checked_sub(y)?,
        ArithOp::Mul => x.checked_mul(y)?,
        ArithOp::Div | ArithOp::Mod if y == 0 => return Some(Slot::Null),
        ArithOp::Div => x / y,
        ArithOp::Mod => x % y,
    };
    Some(Slot::U64(value))
}

/// Float arithmetic: NULL for a NULL operand or a zero divisor; IEEE otherwise (the verifier
/// refuses `%` on floats; it would be the IEEE remainder here).
fn arith_f64(op: ArithOp, a: &Slot<'_>, b: &Slot<'_>) -> Slot<'static> {
    let (&Slot::F64(x), &Slot::F64(y)) = (a, b) else {
        return Slot::Null;
    };
    Slot::F64(match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div | ArithOp::Mod if y == 0.0 => return Slot::Null,
        ArithOp::Div => x / y,
        ArithOp::Mod => x % y,
    })
}

fn to_f64(a: &Slot<'_>) -> Slot<'static> {
    match *a {
        Slot::I64(v) => Slot::F64(v as f64),
        Slot::U64(v) => Slot::F64(v as f64),
        _ => Slot::Null,
    }
}

/// The order of two non-NULL slots of one type; `None` for NaN.
pub(super) fn order(a: &Slot<'_>, b: &Slot<'_>) -> Option<Ordering> {
    match (a, b) {
        (Slot::I64(x), Slot::I64(y)) => Some(x.cmp(y)),
        (Slot::U64(x), Slot::U64(y)) => Some(x.cmp(y)),
        (Slot::F64(x), Slot::F64(y)) => x.partial_cmp(y),
        (Slot::Bool(x), Slot::Bool(y)) => Some(x.cmp(y)),
        (Slot::Bytes(x), Slot::Bytes(y)) => Some(x.cmp(y)),
        _ => {
            unreachable!("verified: both operands have one type and neither is NULL ({a:?}, {b:?})")
        }
    }
}

/// `x op y` by the type's own operators: for f64 these are IEEE's, so with NaN every
/// comparison is false except `<>`.
fn test<T: PartialOrd + ?Sized>(op: CmpOp, x: &T, y: &T) -> bool {
    match op {
        CmpOp::Eq => x == y,
        CmpOp::Ne => x != y,
        CmpOp::Lt => x < y,
        CmpOp::Le => x <= y,
        CmpOp::Gt => x > y,
        CmpOp::Ge => x >= y,
    }
}

/// SQL comparison: NULL if either side is NULL (the verifier makes both sides one type).
fn compare(op: CmpOp, a: &Slot<'_>, b: &Slot<'_>) -> Slot<'static> {
    Slot::Bool(match (a, b) {
        (Slot::I64(x), Slot::I64(y)) => test(op, x, y),
        (Slot::U64(x), Slot::U64(y)) => test(op, x, y),
        (Slot::F64(x), Slot::F64(y)) => test(op, x, y),
        (Slot::Bool(x), Slot::Bool(y)) => test(op, x, y),
        (Slot::Bytes(x), Slot::Bytes(y)) => test(op, *x, *y),
        _ => return Slot::Null,
    })
}

/// Three-valued AND: false wins, then NULL.
fn and(a: &Slot<'_>, b: &Slot<'_>) -> Slot<'static> {
    match (a, b) {
        (Slot::Bool(false), _) | (_, Slot::Bool(false)) => Slot::Bool(false),
        (Slot::Bool(true), Slot::Bool(true)) => Slot::Bool(true),
        _ => Slot::Null,
    }
}

/// Three-valued OR: true wins, then NULL.
fn or(a: &Slot<'_>, b: &Slot<'_>) -> Slot<'static> {
    match (a, b) {
        (Slot::Bool(true), _) | (_, Slot::Bool(true)) => Slot::Bool(true),
        (Slot::Bool(false), Slot::Bool(false)) => Slot::Bool(false),
        _ => Slot::Null,
    }
}

/// Three-valued NOT.
fn not(a: &Slot<'_>) -> Slot<'static> {
    match *a {
        Slot::Bool(v) => Slot::Bool(!v),
        _ => Slot::Null,
    }
}

/// `a LIKE pattern`: NULL for a NULL `a`.
fn like_slot(a: &Slot<'_>, pattern: &[PatternItem], text: bool) -> Slot<'static> {
    match *a {
        Slot::Bytes(v) => Slot::Bool(like(v, pattern, text)),
        _ => Slot::Null,
    }
}

/// `a IN list`: NULL for a NULL `a`; the list holds no NULL.
fn is_in(a: &Slot<'_>, list: &[Datum]) -> Slot<'static> {
    if matches!(a, Slot::Null) {
        return Slot::Null;
    }
    Slot::Bool(list.iter().any(|d| d.slot() == *a))
}

/// The length of the UTF-8 character starting with `lead` (1 for a byte that cannot start one).
fn char_length(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Whether `value` matches the pattern. `text` makes `_` one UTF-8 character rather than one
/// byte. Greedy matching that backtracks to the last `%` only: O(value x pattern) time, no
/// allocation.
pub(super) fn like(value: &[u8], pattern: &[PatternItem], text: bool) -> bool {
    let step = |at: usize| if text { char_length(value[at]).min(value.len() - at) } else { 1 };
    let (mut v, mut p) = (0usize, 0usize);
    // After the last `%`: the pattern position after it and where in `value` its run ends.
    let mut resume: Option<(usize, usize)> = None;
    loop {
        if let Some(item) = pattern.get(p) {
            match *item {
                PatternItem::Any => {
                    resume = Some((p + 1, v));
                    p += 1;
                    continue;
                }
                PatternItem::One if v < value.len() => {
                    v += step(v);
                    p += 1;
                    continue;
                }
                PatternItem::Byte(b) if value.get(v) == Some(&b) => {
                    v += 1;
                    p += 1;
                    continue;
                }
                _ => {}
            }
        } else if v == value.len() {
            return true;
        }
        match resume {
            Some((after, run_end)) if run_end < value.len() => {
                let run_end = run_end + step(run_end);
                resume = Some((after, run_end));
                p = after;
                v = run_end;
            }
            _ => return false,
        }
    }
}
