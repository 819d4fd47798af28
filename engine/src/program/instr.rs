//! The pushed-down program's parts (register types, instructions, constants, outputs,
//! aggregates) and its byte form: what a client or coordinator sends to storage with a scan.
//!
//! All integers are little-endian. Counts are u32 so that no in-memory program is ever cut to
//! fit a field; the decoder checks each count against its limit and against the bytes left
//! before reserving anything.
//!
//! ```text
//! offset  bytes  field
//! 0       4      magic "BWPG"
//! 4       1      format version (1)
//! 5       4      register count R, then R type bytes (0 i64, 1 u64, 2 f64, 3 bool, 4 text, 5 bytes)
//! .       4      constant count C, then C constants:
//!                  u8 kind 0 (one value): a tagged value (see tuple.rs)
//!                  u8 kind 1 (a list):    u32 count N, then N tagged values
//! .       4      instruction count I, then I instructions: u8 opcode, then its operands
//!                  0x01 load_column       dst u8, column u16
//!                  0x02 load_const        dst u8, constant u16
//!                  0x03 arith             op u8 (0 + 1 - 2 * 3 / 4 %), dst u8, a u8, b u8
//!                  0x04 to_f64            dst u8, a u8
//!                  0x05 compare           op u8 (0 = 1 <> 2 < 3 <= 4 > 5 >=), dst u8, a u8, b u8
//!                  0x06 is_null           dst u8, a u8
//!                  0x07 is_not_null       dst u8, a u8
//!                  0x08 like              dst u8, a u8, pattern u16
//!                  0x09 in                dst u8, a u8, list u16
//!                  0x0a and / 0x0b or     dst u8, a u8, b u8
//!                  0x0c not               dst u8, a u8
//!                  0x0d jump              target u16
//!                  0x0e jump_if_true      cond u8, target u16
//!                  0x0f jump_if_not_true  cond u8, target u16
//!                  0x10 skip / 0x11 return / 0x12 aggregate   (no operands)
//!                  0x13 move              dst u8, a u8 (one type)
//!                  0x14 extract           field u8 (0 year 1 quarter 2 month 3 day 4 hour
//!                                         5 minute 6 second 7 microsecond), dst u8, a u8
//!                  0x15 add_months        dst u8, a u8, b u8 (i64 microseconds, i64 months)
//! .       4      output count O, then O outputs: u8 kind 0 (column) + u16, or kind 1 (register) + u8
//! .       4      group-by count G, then G register bytes
//! .       4      aggregate count A, then A aggregates: u8 function (0 count 1 sum 2 min 3 max
//!                4 avg), u8 has-argument (0 or 1), u8 argument register (0 when none)
//! end            no bytes may follow
//! ```

use std::fmt;

use super::calendar::TimeField;
use super::tuple::{self, Counter, Sink};
use super::{ProgramError, ProgramLimits};
use crate::row::Value;

/// The magic bytes that open an encoded program.
pub const MAGIC: [u8; 4] = *b"BWPG";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;

/// A register's type, fixed for the whole program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegType {
    /// Signed 64-bit (columns of type i32, i64 and timestamp load as this).
    I64,
    /// Unsigned 64-bit.
    U64,
    /// 64-bit float.
    F64,
    /// true or false.
    Bool,
    /// UTF-8 text (varchar columns).
    Text,
    /// Bytes.
    Bytes,
}

impl RegType {
    /// Whether arithmetic applies.
    pub fn is_numeric(self) -> bool {
        matches!(self, RegType::I64 | RegType::U64 | RegType::F64)
    }

    fn code(self) -> u8 {
        match self {
            RegType::I64 => 0,
            RegType::U64 => 1,
            RegType::F64 => 2,
            RegType::Bool => 3,
            RegType::Text => 4,
            RegType::Bytes => 5,
        }
    }

    fn from_code(code: u8) -> Option<RegType> {
        Some(match code {
            0 => RegType::I64,
            1 => RegType::U64,
            2 => RegType::F64,
            3 => RegType::Bool,
            4 => RegType::Text,
            5 => RegType::Bytes,
            _ => return None,
        })
    }
}

impl fmt::Display for RegType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegType::I64 => "i64",
            RegType::U64 => "u64",
            RegType::F64 => "f64",
            RegType::Bool => "bool",
            RegType::Text => "text",
            RegType::Bytes => "bytes",
        })
    }
}

/// An arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (integers truncate toward zero)
    Div,
    /// `%` (integers only; the result takes the dividend's sign)
    Mod,
}

impl ArithOp {
    const ALL: [ArithOp; 5] =
        [ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div, ArithOp::Mod];

    /// The operator as SQL writes it.
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    const ALL: [CmpOp; 6] = [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge];

    /// The operator as SQL writes it.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggFn {
    /// Rows (no argument) or non-NULL arguments.
    Count,
    /// Sum of the non-NULL arguments.
    Sum,
    /// Least non-NULL argument.
    Min,
    /// Greatest non-NULL argument.
    Max,
    /// Mean of the non-NULL arguments, as f64.
    Avg,
}

impl AggFn {
    const ALL: [AggFn; 5] = [AggFn::Count, AggFn::Sum, AggFn::Min, AggFn::Max, AggFn::Avg];

    /// The function as SQL writes it.
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Count => "COUNT",
            AggFn::Sum => "SUM",
            AggFn::Min => "MIN",
            AggFn::Max => "MAX",
            AggFn::Avg => "AVG",
        }
    }
}

/// One instruction. Register operands are indices into `Program::registers`, constants into
/// `Program::constants`, columns into the table's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    /// `dst = column` (NULL when the row's column is NULL).
    LoadColumn { dst: u8, column: u16 },
    /// `dst = constants[constant]` (a single value of dst's type, or NULL).
    LoadConst { dst: u8, constant: u16 },
    /// `dst = a op b` on one numeric type.
    Arith { op: ArithOp, dst: u8, a: u8, b: u8 },
    /// `dst = a as f64` from I64 or U64.
    ToF64 { dst: u8, a: u8 },
    /// `dst = a op b`, both of one type; dst is Bool.
    Compare { op: CmpOp, dst: u8, a: u8, b: u8 },
    /// `dst = a IS NULL`.
    IsNull { dst: u8, a: u8 },
    /// `dst = a IS NOT NULL`.
    IsNotNull { dst: u8, a: u8 },
    /// `dst = a LIKE constants[pattern]`.
    Like { dst: u8, a: u8, pattern: u16 },
    /// `dst = a IN constants[list]`.
    In { dst: u8, a: u8, list: u16 },
    /// `dst = a AND b` (three-valued).
    And { dst: u8, a: u8, b: u8 },
    /// `dst = a OR b` (three-valued).
    Or { dst: u8, a: u8, b: u8 },
    /// `dst = NOT a` (three-valued).
    Not { dst: u8, a: u8 },
    /// Continue at `target` (forward only).
    Jump { target: u16 },
    /// Continue at `target` when `cond` is true.
    JumpIfTrue { cond: u8, target: u16 },
    /// Continue at `target` when `cond` is false or NULL.
    JumpIfNotTrue { cond: u8, target: u16 },
    /// The row is not wanted.
    Skip,
    /// Return the row's output tuple.
    Return,
    /// Fold the row into its group.
    Aggregate,
    /// `dst = a`, both of one type (CASE and GREATEST / LEAST results).
    Move { dst: u8, a: u8 },
    /// `dst = field of a`: a timestamp (i64 microseconds) to an i64.
    Extract { field: TimeField, dst: u8, a: u8 },
    /// `dst = a + b months` (i64 microseconds, i64 months; the day cut to the month's end).
    AddMonths { dst: u8, a: u8, b: u8 },
}

impl Instr {
    /// The instruction's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Instr::LoadColumn { .. } => "load_column",
            Instr::LoadConst { .. } => "load_const",
            Instr::Arith { .. } => "arith",
            Instr::ToF64 { .. } => "to_f64",
            Instr::Compare { .. } => "compare",
            Instr::IsNull { .. } => "is_null",
            Instr::IsNotNull { .. } => "is_not_null",
            Instr::Like { .. } => "like",
            Instr::In { .. } => "in",
            Instr::And { .. } => "and",
            Instr::Or { .. } => "or",
            Instr::Not { .. } => "not",
            Instr::Jump { .. } => "jump",
            Instr::JumpIfTrue { .. } => "jump_if_true",
            Instr::JumpIfNotTrue { .. } => "jump_if_not_true",
            Instr::Skip => "skip",
            Instr::Return => "return",
            Instr::Aggregate => "aggregate",
            Instr::Move { .. } => "move",
            Instr::Extract { .. } => "extract",
            Instr::AddMonths { .. } => "add_months",
        }
    }

    /// Whether the instruction ends the program for the row.
    pub fn is_terminator(&self) -> bool {
        matches!(self, Instr::Skip | Instr::Return | Instr::Aggregate)
    }
}

/// A constant: one value (for `LoadConst` and `Like`) or a list (for `In`).
#[derive(Clone, Debug, PartialEq)]
pub enum Constant {
    /// One value.
    Value(Value),
    /// A list of values.
    List(Vec<Value>),
}

/// One value of a returned tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A column, with the column's own value type.
    Column(u16),
    /// A register, with the register's type.
    Register(u8),
}

/// One aggregate of an aggregating program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// The function.
    pub func: AggFn,
    /// The argument register; `None` only for `COUNT(*)`.
    pub arg: Option<u8>,
}

/// A program as sent: see the module comment for its byte form and `verify.rs` for its rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    /// Register types; every register starts each row as NULL.
    pub registers: Vec<RegType>,
    /// Constants the instructions name.
    pub constants: Vec<Constant>,
    /// The instructions.
    pub code: Vec<Instr>,
    /// The returned tuple (programs that return rows).
    pub output: Vec<Output>,
    /// The group key registers (aggregating programs).
    pub group_by: Vec<u8>,
    /// The aggregates (aggregating programs).
    pub aggregates: Vec<Aggregate>,
}

fn put_count<S: Sink>(count: usize, out: &mut S) {
    let count = u32::try_from(count);
    assert!(count.is_ok(), "a program part has more than u32::MAX entries");
    out.put(&count.unwrap_or(u32::MAX).to_le_bytes());
}

fn write_instr<S: Sink>(instr: &Instr, out: &mut S) {
    let [t0, t1] = match instr {
        Instr::Jump { target }
        | Instr::JumpIfTrue { target, .. }
        | Instr::JumpIfNotTrue { target, .. } => target.to_le_bytes(),
        _ => [0, 0],
    };
    match *instr {
        Instr::LoadColumn { dst, column } => {
            out.put(&[0x01, dst, column.to_le_bytes()[0], column.to_le_bytes()[1]])
        }
        Instr::LoadConst { dst, constant: c } => {
            out.put(&[0x02, dst, c.to_le_bytes()[0], c.to_le_bytes()[1]])
        }
        Instr::Arith { op, dst, a, b } => out.put(&[0x03, op as u8, dst, a, b]),
        Instr::ToF64 { dst, a } => out.put(&[0x04, dst, a]),
        Instr::Compare { op, dst, a, b } => out.put(&[0x05, op as u8, dst, a, b]),
        Instr::IsNull { dst, a } => out.put(&[0x06, dst, a]),
        Instr::IsNotNull { dst, a } => out.put(&[0x07, dst, a]),
        Instr::Like { dst, a, pattern: p } => {
            out.put(&[0x08, dst, a, p.to_le_bytes()[0], p.to_le_bytes()[1]])
        }
        Instr::In { dst, a, list: l } => {
            out.put(&[0x09, dst, a, l.to_le_bytes()[0], l.to_le_bytes()[1]])
        }
        Instr::And { dst, a, b } => out.put(&[0x0a, dst, a, b]),
        Instr::Or { dst, a, b } => out.put(&[0x0b, dst, a, b]),
        Instr::Not { dst, a } => out.put(&[0x0c, dst, a]),
        Instr::Jump { .. } => out.put(&[0x0d, t0, t1]),
        Instr::JumpIfTrue { cond, .. } => out.put(&[0x0e, cond, t0, t1]),
        Instr::JumpIfNotTrue { cond, .. } => out.put(&[0x0f, cond, t0, t1]),
        Instr::Skip => out.put(&[0x10]),
        Instr::Return => out.put(&[0x11]),
        Instr::Aggregate => out.put(&[0x12]),
        Instr::Move { dst, a } => out.put(&[0x13, dst, a]),
        Instr::Extract { field, dst, a } => out.put(&[0x14, field as u8, dst, a]),
        Instr::AddMonths { dst, a, b } => out.put(&[0x15, dst, a, b]),
    }
}

impl Program {
    /// The program's byte form (see the module comment).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write(&mut out);
        out
    }

    /// The length of [`Program::encode`]'s result, computed without building it.
    pub fn encoded_len(&self) -> usize {
        let mut counter = Counter::default();
        self.write(&mut counter);
        counter.0
    }

    fn write<S: Sink>(&self, out: &mut S) {
        out.put(&MAGIC);
        out.put(&[VERSION]);
        put_count(self.registers.len(), out);
        for r in &self.registers {
            out.put(&[r.code()]);
        }
        put_count(self.constants.len(), out);
        for c in &self.constants {
            match c {
                Constant::Value(v) => {
                    out.put(&[0]);
                    tuple::write_value(v, out);
                }
                Constant::List(list) => {
                    out.put(&[1]);
                    put_count(list.len(), out);
                    list.iter().for_each(|v| tuple::write_value(v, out));
                }
            }
        }
        put_count(self.code.len(), out);
        self.code.iter().for_each(|i| write_instr(i, out));
        put_count(self.output.len(), out);
        for o in &self.output {
            match *o {
                Output::Column(c) => out.put(&[0, c.to_le_bytes()[0], c.to_le_bytes()[1]]),
                Output::Register(r) => out.put(&[1, r]),
            }
        }
        put_count(self.group_by.len(), out);
        out.put(&self.group_by);
        put_count(self.aggregates.len(), out);
        for a in &self.aggregates {
            out.put(&[a.func as u8, u8::from(a.arg.is_some()), a.arg.unwrap_or(0)]);
        }
    }

    /// Reads a program from untrusted bytes. Checks the size limit first, then each count
    /// against its limit and the bytes left before reserving memory; never panics. The result
    /// still has to pass [`Program::verify`].
    pub fn decode(bytes: &[u8], limits: &ProgramLimits) -> Result<Program, ProgramError> {
        if bytes.len() > limits.max_bytes {
            return Err(ProgramError::TooLarge { bytes: bytes.len(), limit: limits.max_bytes });
        }
        let mut r = Reader { bytes, at: 0 };
        if r.take(4, "magic")? != MAGIC {
            return Err(r.malformed(0, "does not start with the magic \"BWPG\"".into()));
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(
                r.malformed(4, format!("format version {version} (this reader knows {VERSION})"))
            );
        }
        let mut program = Program::default();
        let count = r.count("registers", 1, limits.max_registers.min(super::MAX_REGISTERS))?;
        program.registers.reserve_exact(count);
        for _ in 0..count {
            let at = r.at;
            let code = r.u8("register type")?;
            let ty = RegType::from_code(code)
                .ok_or_else(|| r.malformed(at, format!("{code} is not a register type")))?;
            program.registers.push(ty);
        }
        let count = r.count("constants", 2, usize::MAX)?;
        program.constants.reserve_exact(count);
        for _ in 0..count {
            program.constants.push(r.constant()?);
        }
        let count = r.count("instructions", 1, limits.max_instructions)?;
        program.code.reserve_exact(count);
        for _ in 0..count {
            program.code.push(r.instr()?);
        }
        let count = r.count("outputs", 2, usize::MAX)?;
        program.output.reserve_exact(count);
        for _ in 0..count {
            let at = r.at;
            program.output.push(match r.u8("output kind")? {
                0 => Output::Column(r.u16("output column")?),
                1 => Output::Register(r.u8("output register")?),
                kind => return Err(r.malformed(at, format!("{kind} is not an output kind"))),
            });
        }
        let count = r.count("group-by registers", 1, usize::MAX)?;
        program.group_by = r.take(count, "group-by registers")?.to_vec();
        let count = r.count("aggregates", 3, usize::MAX)?;
        program.aggregates.reserve_exact(count);
        for _ in 0..count {
            program.aggregates.push(r.aggregate()?);
        }
        if r.at != bytes.len() {
            return Err(
                r.malformed(r.at, format!("{} bytes after the program", bytes.len() - r.at))
            );
        }
        Ok(program)
    }
}

/// A cursor over an encoded program.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn malformed(&self, at: usize, reason: String) -> ProgramError {
        ProgramError::Malformed { at, reason }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProgramError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.malformed(self.at, format!("ends inside the {what}")));
        };
        let part = &self.bytes[self.at..end];
        self.at = end;
        Ok(part)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ProgramError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ProgramError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// A u32 count of items taking at least `min_item_bytes` each, at most `limit`.
    fn count(
        &mut self,
        what: &'static str,
        min_item_bytes: usize,
        limit: usize,
    ) -> Result<usize, ProgramError> {
        let at = self.at;
        let b = self.take(4, what)?;
        let count = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if count > limit {
            return Err(ProgramError::Limit { what, count, limit });
        }
        let left = self.bytes.len() - self.at;
        if count > left / min_item_bytes.max(1) {
            return Err(
                self.malformed(at, format!("{count} {what} cannot fit in the {left} bytes left"))
            );
        }
        Ok(count)
    }

    fn value(&mut self) -> Result<Value, ProgramError> {
        let at = self.at;
        let (value, next) = tuple::read_value(self.bytes, at)
            .map_err(|e| self.malformed(at, format!("constant value: {e}")))?;
        self.at = next;
        Ok(value)
    }

    fn constant(&mut self) -> Result<Constant, ProgramError> {
        let at = self.at;
        match self.u8("constant kind")? {
            0 => Ok(Constant::Value(self.value()?)),
            1 => {
                let count = self.count("list values", 1, usize::MAX)?;
                let mut list = Vec::with_capacity(count);
                for _ in 0..count {
                    list.push(self.value()?);
                }
                Ok(Constant::List(list))
            }
            kind => Err(self.malformed(at, format!("{kind} is not a constant kind"))),
        }
    }

    fn instr(&mut self) -> Result<Instr, ProgramError> {
        let at = self.at;
        let opcode = self.u8("opcode")?;
        Ok(match opcode {
            0x01 => Instr::LoadColumn { dst: self.u8("dst")?, column: self.u16("column")? },
            0x02 => Instr::LoadConst { dst: self.u8("dst")?, constant: self.u16("constant")? },
            0x03 => {
                let code = self.u8("operator")?;
                let op = ArithOp::ALL.get(usize::from(code)).copied();
                let op = op.ok_or_else(|| {
                    self.malformed(at + 1, format!("{code} is not an arithmetic operator"))
                })?;
                Instr::Arith { op, dst: self.u8("dst")?, a: self.u8("a")?, b: self.u8("b")? }
            }
            0x04 => Instr::ToF64 { dst: self.u8("dst")?, a: self.u8("a")? },
            0x05 => {
                let code = self.u8("operator")?;
                let op = CmpOp::ALL.get(usize::from(code)).copied();
                let op = op.ok_or_else(|| {
                    self.malformed(at + 1, format!("{code} is not a comparison operator"))
                })?;
                Instr::Compare { op, dst: self.u8("dst")?, a: self.u8("a")?, b: self.u8("b")? }
            }
            0x06 => Instr::IsNull { dst: self.u8("dst")?, a: self.u8("a")? },
            0x07 => Instr::IsNotNull { dst: self.u8("dst")?, a: self.u8("a")? },
            0x08 => Instr::Like {
                dst: self.u8("dst")?,
                a: self.u8("a")?,
                pattern: self.u16("pattern")?,
            },
            0x09 => Instr::In { dst: self.u8("dst")?, a: self.u8("a")?, list: self.u16("list")? },
            0x0a => Instr::And { dst: self.u8("dst")?, a: self.u8("a")?, b: self.u8("b")? },
            0x0b => Instr::Or { dst: self.u8("dst")?, a: self.u8("a")?, b: self.u8("b")? },
            0x0c => Instr::Not { dst: self.u8("dst")?, a: self.u8("a")? },
            0x0d => Instr::Jump { target: self.u16("target")? },
            0x0e => Instr::JumpIfTrue { cond: self.u8("cond")?, target: self.u16("target")? },
            0x0f => Instr::JumpIfNotTrue { cond: self.u8("cond")?, target: self.u16("target")? },
            0x10 => Instr::Skip,
            0x11 => Instr::Return,
            0x12 => Instr::Aggregate,
            0x13 => Instr::Move { dst: self.u8("dst")?, a: self.u8("a")? },
            0x14 => {
                let code = self.u8("field")?;
                let field = TimeField::ALL.get(usize::from(code)).copied();
                let field = field.ok_or_else(|| {
                    self.malformed(at + 1, format!("{code} is not a timestamp field"))
                })?;
                Instr::Extract { field, dst: self.u8("dst")?, a: self.u8("a")? }
            }
            0x15 => Instr::AddMonths { dst: self.u8("dst")?, a: self.u8("a")?, b: self.u8("b")? },
            other => return Err(self.malformed(at, format!("{other:#04x} is not an opcode"))),
        })
    }

    fn aggregate(&mut self) -> Result<Aggregate, ProgramError> {
        let at = self.at;
        let code = self.u8("aggregate function")?;
        let func = AggFn::ALL.get(usize::from(code)).copied();
        let func =
            func.ok_or_else(|| self.malformed(at, format!("{code} is not an aggregate function")))?;
        let has_arg = self.u8("aggregate flag")?;
        let arg = self.u8("aggregate argument")?;
        let arg = match (has_arg, arg) {
            (0, 0) => None,
            (0, arg) => {
                return Err(self
                    .malformed(at + 2, format!("aggregate without argument names register {arg}")))
            }
            (1, arg) => Some(arg),
            (flag, _) => {
                return Err(self.malformed(at + 1, format!("aggregate flag {flag} is not 0 or 1")))
            }
        };
        Ok(Aggregate { func, arg })
    }
}
