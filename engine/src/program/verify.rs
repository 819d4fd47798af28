//! The verifier: every rule a program from an untrusted peer must pass before storage runs it,
//! and the program's translation into the form the interpreter runs ([`Verified`]).
//!
//! Rules (each refusal names the instruction, output, group-by entry or aggregate):
//! - size: the encoded program within `max_bytes`; registers within `max_registers` (and 255);
//!   instructions within `max_instructions` and at least one; group-by entries and aggregates
//!   at most 255 each; registers plus read columns at most 512 (the largest register file);
//! - operands: every register, column and constant index in range; a column's type loads as
//!   i32/i64/timestamp -> i64, u64 -> u64, f64 -> f64, bool -> bool, varchar -> text,
//!   bytes -> bytes, and must match the destination register;
//! - types: `arith` on one numeric type (no `%` on f64); `to_f64` from i64 or u64; `compare`
//!   on one type of any kind; logic and conditions on bool; `like` on text or bytes with a text
//!   pattern constant (not ending in a lone escape); `in` with a list of non-NULL values of the
//!   operand's type; `load_const` a single value of the register's type or NULL (i64 registers
//!   take i32, i64 and timestamp values);
//! - control: jumps go forward and stay inside the program; the last instruction is a
//!   terminator; `return` only with outputs and no aggregates; `aggregate` only with
//!   aggregates; a program does not have both outputs and aggregates, nor group-by entries
//!   without aggregates;
//! - aggregates: an argument for all but COUNT; SUM and AVG on numbers; MIN and MAX on any type
//!   (bool orders false < true).
//!
//! A program that passes is then optimised (`alias.rs`): registers that only hold a column
//! become the column's field slot.

use super::aggregate::{AggregatePlan, Plan};
use super::alias;
use super::run::{
    self, Datum, FieldKind, Op, OutputKind, PatternItem, Step, Verified, Width, NO_FIELD,
    SLOT_TIERS,
};
use super::{
    AggFn, ArithOp, Constant, Instr, Output, Program, ProgramError, ProgramLimits, RegType,
    MAX_REGISTERS,
};
use crate::row::Value;
use crate::schema::{ColumnType, Table};

/// The register type a column loads as.
pub(super) fn column_register_type(ty: ColumnType) -> RegType {
    match ty {
        ColumnType::I32 | ColumnType::I64 | ColumnType::Timestamp => RegType::I64,
        ColumnType::U64 => RegType::U64,
        ColumnType::F64 => RegType::F64,
        ColumnType::Bool => RegType::Bool,
        ColumnType::Varchar { .. } => RegType::Text,
        ColumnType::Bytes { .. } => RegType::Bytes,
    }
}

fn field_kind(ty: ColumnType) -> FieldKind {
    match ty {
        ColumnType::I32 => FieldKind::I32,
        ColumnType::I64 | ColumnType::Timestamp => FieldKind::I64,
        ColumnType::U64 => FieldKind::U64,
        ColumnType::F64 => FieldKind::F64,
        ColumnType::Bool => FieldKind::Bool,
        ColumnType::Varchar { .. } | ColumnType::Bytes { .. } => FieldKind::Bytes,
    }
}

fn column_output_kind(ty: ColumnType) -> OutputKind {
    match ty {
        ColumnType::I32 => OutputKind::I32,
        ColumnType::I64 => OutputKind::I64,
        ColumnType::Timestamp => OutputKind::Timestamp,
        ColumnType::U64 => OutputKind::U64,
        ColumnType::F64 => OutputKind::F64,
        ColumnType::Bool => OutputKind::Bool,
        ColumnType::Varchar { .. } => OutputKind::Text,
        ColumnType::Bytes { .. } => OutputKind::Bytes,
    }
}

fn register_output_kind(ty: RegType) -> OutputKind {
    match ty {
        RegType::I64 => OutputKind::I64,
        RegType::U64 => OutputKind::U64,
        RegType::F64 => OutputKind::F64,
        RegType::Bool => OutputKind::Bool,
        RegType::Text => OutputKind::Text,
        RegType::Bytes => OutputKind::Bytes,
    }
}

/// A constant value as a datum of register type `ty` (NULL fits every type); `None` when it
/// does not fit.
fn datum(value: &Value, ty: RegType) -> Option<Datum> {
    Some(match (value, ty) {
        (Value::Null, _) => Datum::Null,
        (Value::I32(v), RegType::I64) => Datum::I64(i64::from(*v)),
        (Value::I64(v) | Value::Timestamp(v), RegType::I64) => Datum::I64(*v),
        (Value::U64(v), RegType::U64) => Datum::U64(*v),
        (Value::F64(v), RegType::F64) => Datum::F64(*v),
        (Value::Bool(v), RegType::Bool) => Datum::Bool(*v),
        (Value::Text(v), RegType::Text) => Datum::Bytes(v.as_bytes().into()),
        (Value::Bytes(v), RegType::Bytes) => Datum::Bytes(v.as_slice().into()),
        _ => return None,
    })
}

/// At most this many characters: matching takes up to (value length x pattern length) steps,
/// and a row's value may be thousands of bytes.
pub(super) const MAX_PATTERN_CHARS: usize = 1000;

/// A LIKE pattern: `%` any run, `_` one character, `\` makes the next character literal.
pub(super) fn parse_pattern(pattern: &str) -> Result<Vec<PatternItem>, String> {
    let length = pattern.chars().count();
    if length > MAX_PATTERN_CHARS {
        return Err(format!("the pattern has {length} characters (limit {MAX_PATTERN_CHARS})"));
    }
    let mut items = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    let mut buffer = [0u8; 4];
    while let Some(c) = chars.next() {
        let literal = match c {
            '%' => {
                if items.last() != Some(&PatternItem::Any) {
                    items.push(PatternItem::Any);
                }
                continue;
            }
            '_' => {
                items.push(PatternItem::One);
                continue;
            }
            '\\' => chars
                .next()
                .ok_or_else(|| format!("pattern {pattern:?} ends with a lone escape '\\'"))?,
            c => c,
        };
        items.extend(literal.encode_utf8(&mut buffer).bytes().map(PatternItem::Byte));
    }
    Ok(items)
}

/// What verification builds besides the ops.
struct Builder<'p> {
    program: &'p Program,
    table: &'p Table,
    /// Per table column: its field slot, or NO_FIELD.
    fields: Vec<u16>,
    field_count: usize,
    datums: Vec<Datum>,
    lists: Vec<Vec<Datum>>,
    patterns: Vec<Vec<PatternItem>>,
}

/// Where an error is, for its message.
#[derive(Clone, Copy)]
struct At {
    index: usize,
    name: &'static str,
}

impl At {
    fn err(self, reason: String) -> ProgramError {
        ProgramError::Instruction { index: self.index, name: self.name, reason }
    }
}

impl<'p> Builder<'p> {
    fn register(&self, r: u8) -> Result<RegType, String> {
        let count = self.program.registers.len();
        self.program
            .registers
            .get(usize::from(r))
            .copied()
            .ok_or_else(|| format!("register {r} is out of range ({count} registers)"))
    }

    /// Checks that register `r` (playing `role`) has a type `allowed` accepts.
    fn typed(
        &self,
        at: At,
        role: &str,
        r: u8,
        allowed: impl Fn(RegType) -> bool,
        needs: &str,
    ) -> Result<RegType, ProgramError> {
        let ty = self.register(r).map_err(|e| at.err(e))?;
        if !allowed(ty) {
            return Err(at.err(format!("{role} register {r} is {ty}, needs {needs}")));
        }
        Ok(ty)
    }

    fn is(&self, at: At, role: &str, r: u8, want: RegType) -> Result<(), ProgramError> {
        self.typed(at, role, r, |ty| ty == want, &want.to_string()).map(|_| ())
    }

    /// The field slot of `column`, made on first use.
    fn field(&mut self, column: u16) -> Result<(u16, ColumnType), String> {
        let count = self.table.def.columns.len();
        let Some(c) = self.table.def.columns.get(usize::from(column)) else {
            return Err(format!(
                "column {column} is out of range (table {:?} has {count} columns)",
                self.table.name()
            ));
        };
        let slot = &mut self.fields[usize::from(column)];
        if *slot == NO_FIELD {
            let index = self.program.registers.len() + self.field_count;
            let most = SLOT_TIERS[SLOT_TIERS.len() - 1];
            if index >= most {
                return Err(format!("registers and read columns need more than {most} slots"));
            }
            *slot = index as u16;
            self.field_count += 1;
        }
        Ok((*slot, c.ty))
    }

    fn constant(&self, at: At, index: u16) -> Result<&'p Constant, ProgramError> {
        self.program.constants.get(usize::from(index)).ok_or_else(|| {
            at.err(format!(
                "constant {index} is out of range ({} constants)",
                self.program.constants.len()
            ))
        })
    }

    fn target(&self, at: At, target: u16) -> Result<u32, ProgramError> {
        let t = usize::from(target);
        if t <= at.index {
            return Err(at.err(format!(
                "target {target} is not after the instruction (jumps go forward only)"
            )));
        }
        if t >= self.program.code.len() {
            let count = self.program.code.len();
            return Err(at.err(format!("target {target} is past the end ({count} instructions)")));
        }
        Ok(u32::from(target))
    }

    fn instr(&mut self, index: usize, instr: &Instr) -> Result<Op, ProgramError> {
        let at = At { index, name: instr.name() };
        let reg = |r: u8| u16::from(r);
        Ok(match *instr {
            Instr::LoadColumn { dst, column } => self.load_column(at, dst, column)?,
            Instr::LoadConst { dst, constant } => self.load_const(at, dst, constant)?,
            Instr::Arith { op, dst, a, b } => self.arith(at, op, dst, a, b)?,
            Instr::ToF64 { dst, a } => {
                self.is(at, "destination", dst, RegType::F64)?;
                let integer = |ty| matches!(ty, RegType::I64 | RegType::U64);
                self.typed(at, "source", a, integer, "i64 or u64")?;
                Op::ToF64 { dst: reg(dst), a: reg(a) }
            }
            Instr::Compare { op, dst, a, b } => {
                self.is(at, "destination", dst, RegType::Bool)?;
                let ty = self.register(a).map_err(|e| at.err(e))?;
                self.is(at, "right", b, ty)?;
                Op::Compare { op, dst: reg(dst), a: reg(a), b: reg(b) }
            }
            Instr::IsNull { dst, a } | Instr::IsNotNull { dst, a } => {
                self.is(at, "destination", dst, RegType::Bool)?;
                self.register(a).map_err(|e| at.err(e))?;
                let negate = matches!(instr, Instr::IsNotNull { .. });
                Op::IsNull { dst: reg(dst), a: reg(a), negate }
            }
            Instr::Like { dst, a, pattern } => self.like(at, dst, a, pattern)?,
            Instr::In { dst, a, list } => self.is_in(at, dst, a, list)?,
            Instr::And { dst, a, b } | Instr::Or { dst, a, b } => {
                for (role, r) in [("destination", dst), ("left", a), ("right", b)] {
                    self.is(at, role, r, RegType::Bool)?;
                }
                let (dst, a, b) = (reg(dst), reg(a), reg(b));
                if let Instr::And { .. } = instr {
                    Op::And { dst, a, b }
                } else {
                    Op::Or { dst, a, b }
                }
            }
            Instr::Not { dst, a } => {
                self.is(at, "destination", dst, RegType::Bool)?;
                self.is(at, "operand", a, RegType::Bool)?;
                Op::Not { dst: reg(dst), a: reg(a) }
            }
            Instr::Move { dst, a } => {
                let ty = self.register(dst).map_err(|e| at.err(e))?;
                self.is(at, "source", a, ty)?;
                Op::Copy { dst: reg(dst), src: reg(a) }
            }
            Instr::Extract { field, dst, a } => {
                self.is(at, "destination", dst, RegType::I64)?;
                self.is(at, "timestamp", a, RegType::I64)?;
                Op::Extract { field, dst: reg(dst), a: reg(a) }
            }
            Instr::AddMonths { dst, a, b } => {
                for (role, r) in [("destination", dst), ("timestamp", a), ("months", b)] {
                    self.is(at, role, r, RegType::I64)?;
                }
                Op::AddMonths { dst: reg(dst), a: reg(a), b: reg(b) }
            }
            _ => self.control(at, instr)?,
        })
    }

    /// Jumps and terminators.
    fn control(&self, at: At, instr: &Instr) -> Result<Op, ProgramError> {
        Ok(match *instr {
            Instr::Jump { target } => Op::Jump { target: self.target(at, target)? },
            Instr::JumpIfTrue { cond, target } | Instr::JumpIfNotTrue { cond, target } => {
                self.is(at, "condition", cond, RegType::Bool)?;
                let when = matches!(instr, Instr::JumpIfTrue { .. });
                Op::JumpIf { cond: u16::from(cond), target: self.target(at, target)?, when }
            }
            Instr::Skip => Op::Skip,
            Instr::Return => {
                if self.program.output.is_empty() || !self.program.aggregates.is_empty() {
                    return Err(at.err("return needs outputs and no aggregates".into()));
                }
                Op::Return
            }
            Instr::Aggregate => {
                if self.program.aggregates.is_empty() {
                    return Err(at.err("aggregate needs aggregates".into()));
                }
                Op::Aggregate
            }
            _ => unreachable!("Builder::instr handles every other instruction"),
        })
    }

    fn load_column(&mut self, at: At, dst: u8, column: u16) -> Result<Op, ProgramError> {
        let ty = self.register(dst).map_err(|e| at.err(e))?;
        let (src, column_type) = self.field(column).map_err(|e| at.err(e))?;
        let loads = column_register_type(column_type);
        if loads != ty {
            let name = &self.table.def.columns[usize::from(column)].name;
            return Err(at.err(format!(
                "column {column} ({name:?}, {column_type}) loads as {loads}, register {dst} is {ty}"
            )));
        }
        Ok(Op::Copy { dst: u16::from(dst), src })
    }

    fn load_const(&mut self, at: At, dst: u8, constant: u16) -> Result<Op, ProgramError> {
        let ty = self.register(dst).map_err(|e| at.err(e))?;
        let value = match self.constant(at, constant)? {
            Constant::Value(v) => v,
            Constant::List(_) => {
                return Err(at.err(format!("constant {constant} is a list, not a value")))
            }
        };
        let d = datum(value, ty).ok_or_else(|| {
            at.err(format!("constant {constant} is {}, register {dst} is {ty}", value.type_name()))
        })?;
        self.datums.push(d);
        Ok(Op::Const { dst: u16::from(dst), datum: (self.datums.len() - 1) as u32 })
    }

    fn arith(&self, at: At, op: ArithOp, dst: u8, a: u8, b: u8) -> Result<Op, ProgramError> {
        let ty = self.typed(at, "destination", dst, |ty| ty.is_numeric(), "a number")?;
        self.is(at, "left", a, ty)?;
        self.is(at, "right", b, ty)?;
        let (dst, a, b) = (u16::from(dst), u16::from(a), u16::from(b));
        Ok(match ty {
            RegType::I64 => Op::ArithI64 { op, dst, a, b },
            RegType::U64 => Op::ArithU64 { op, dst, a, b },
            _ if op == ArithOp::Mod => return Err(at.err("% needs integers, not f64".into())),
            _ => Op::ArithF64 { op, dst, a, b },
        })
    }

    fn like(&mut self, at: At, dst: u8, a: u8, pattern: u16) -> Result<Op, ProgramError> {
        self.is(at, "destination", dst, RegType::Bool)?;
        let ty = self.typed(
            at,
            "operand",
            a,
            |ty| matches!(ty, RegType::Text | RegType::Bytes),
            "text or bytes",
        )?;
        let Constant::Value(Value::Text(text)) = self.constant(at, pattern)? else {
            return Err(at.err(format!("pattern constant {pattern} is not text")));
        };
        self.patterns.push(parse_pattern(text).map_err(|e| at.err(e))?);
        let index = (self.patterns.len() - 1) as u32;
        Ok(Op::Like {
            dst: u16::from(dst),
            a: u16::from(a),
            pattern: index,
            text: ty == RegType::Text,
        })
    }

    fn is_in(&mut self, at: At, dst: u8, a: u8, list: u16) -> Result<Op, ProgramError> {
        self.is(at, "destination", dst, RegType::Bool)?;
        let ty = self.register(a).map_err(|e| at.err(e))?;
        let Constant::List(values) = self.constant(at, list)? else {
            return Err(at.err(format!("constant {list} is a value, not a list")));
        };
        let mut datums = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            match datum(value, ty) {
                Some(Datum::Null) => {
                    return Err(at.err(format!("list constant {list} holds NULL at {i}")))
                }
                Some(d) => datums.push(d),
                None => {
                    let found = value.type_name();
                    return Err(at.err(format!(
                        "list constant {list} holds {found} at {i}, register {a} is {ty}"
                    )));
                }
            }
        }
        self.lists.push(datums);
        Ok(Op::In { dst: u16::from(dst), a: u16::from(a), list: (self.lists.len() - 1) as u32 })
    }
}

/// The counts and size rules, checked before anything else.
fn check_limits(program: &Program, limits: &ProgramLimits) -> Result<(), ProgramError> {
    let bytes = program.encoded_len();
    if bytes > limits.max_bytes {
        return Err(ProgramError::TooLarge { bytes, limit: limits.max_bytes });
    }
    let counts = [
        ("registers", program.registers.len(), limits.max_registers.min(MAX_REGISTERS)),
        ("instructions", program.code.len(), limits.max_instructions),
        ("group-by registers", program.group_by.len(), MAX_REGISTERS),
        ("aggregates", program.aggregates.len(), MAX_REGISTERS),
    ];
    for (what, count, limit) in counts {
        if count > limit {
            return Err(ProgramError::Limit { what, count, limit });
        }
    }
    let shape = |reason: &str| Err(ProgramError::Shape { reason: reason.into() });
    match program.code.last() {
        None => {
            return shape("it has no instructions (the last must be skip, return or aggregate)")
        }
        Some(last) if !last.is_terminator() => {
            let index = program.code.len() - 1;
            let reason = "the last instruction must be skip, return or aggregate".into();
            return Err(ProgramError::Instruction { index, name: last.name(), reason });
        }
        Some(_) => {}
    }
    if !program.output.is_empty() && !program.aggregates.is_empty() {
        return shape(
            "it has both outputs and aggregates (group-by values lead each aggregate row)",
        );
    }
    if !program.group_by.is_empty() && program.aggregates.is_empty() {
        return shape("it has group-by registers but no aggregates");
    }
    Ok(())
}

impl Program {
    /// Checks the program against the rules (see the module comment) for `table`, and binds
    /// it to the table's column layout (optimised, see `alias.rs`).
    pub fn verify(self, table: &Table, limits: &ProgramLimits) -> Result<Verified, ProgramError> {
        self.verify_with(table, limits, true)
    }

    /// [`Program::verify`], optionally without the optimisation (tests compare the two).
    pub(super) fn verify_with(
        self,
        table: &Table,
        limits: &ProgramLimits,
        optimize: bool,
    ) -> Result<Verified, ProgramError> {
        check_limits(&self, limits)?;
        let mut builder = Builder {
            program: &self,
            table,
            fields: vec![NO_FIELD; table.def.columns.len()],
            field_count: 0,
            datums: Vec::new(),
            lists: Vec::new(),
            patterns: Vec::new(),
        };
        let mut ops = Vec::with_capacity(self.code.len());
        for (index, instr) in self.code.iter().enumerate() {
            ops.push(builder.instr(index, instr)?);
        }
        let mut output = outputs(&mut builder)?;
        let mut plan = plan(&builder)?;
        let mut slots = self.registers.len() + builder.field_count;
        let most = SLOT_TIERS[SLOT_TIERS.len() - 1];
        if slots > most {
            return Err(ProgramError::Limit {
                what: "registers and read columns",
                count: slots,
                limit: most,
            });
        }
        let mut steps = walk_steps(table, &builder.fields);
        let mut origins = (0..ops.len() as u32).collect();
        if optimize {
            alias::optimize(&mut alias::Parts {
                ops: &mut ops,
                origins: &mut origins,
                output: &mut output,
                plan: &mut plan,
                steps: &mut steps,
                slots: &mut slots,
                registers: self.registers.len(),
            });
        }
        let first_aggregate = self.code.iter().position(|i| *i == Instr::Aggregate).unwrap_or(0);
        let (datums, lists, patterns) = (builder.datums, builder.lists, builder.patterns);
        Ok(Verified {
            id: run::next_id(),
            ops,
            origins,
            steps,
            bitmap_bytes: table.def.columns.len().div_ceil(8),
            slots,
            datums,
            lists,
            patterns,
            output,
            plan,
            max_groups: limits.max_groups,
            first_aggregate,
        })
    }
}

/// The walk over a row image: one step per column up to the last one read.
fn walk_steps(table: &Table, fields: &[u16]) -> Vec<Step> {
    let last_read = fields.iter().rposition(|f| *f != NO_FIELD).map_or(0, |c| c + 1);
    table.def.columns[..last_read]
        .iter()
        .zip(fields)
        .map(|(c, &field)| Step {
            width: c.ty.fixed_bytes().map_or(Width::Variable, Width::Fixed),
            kind: field_kind(c.ty),
            field,
        })
        .collect()
}

fn outputs(builder: &mut Builder<'_>) -> Result<Vec<(u16, OutputKind)>, ProgramError> {
    let mut output = Vec::with_capacity(builder.program.output.len());
    for (index, o) in builder.program.output.iter().enumerate() {
        let err = |reason: String| ProgramError::Output { index, reason };
        output.push(match *o {
            Output::Column(column) => {
                let (slot, ty) = builder.field(column).map_err(err)?;
                (slot, column_output_kind(ty))
            }
            Output::Register(r) => {
                (u16::from(r), register_output_kind(builder.register(r).map_err(err)?))
            }
        });
    }
    Ok(output)
}

fn plan(builder: &Builder<'_>) -> Result<Plan, ProgramError> {
    let program = builder.program;
    let mut plan = Plan::default();
    for (index, &r) in program.group_by.iter().enumerate() {
        let ty = builder.register(r).map_err(|reason| ProgramError::GroupBy { index, reason })?;
        plan.keys.push((u16::from(r), ty));
    }
    for (index, a) in program.aggregates.iter().enumerate() {
        let err = |reason: String| ProgramError::Aggregate { index, reason };
        let arg = match a.arg {
            None if a.func != AggFn::Count => {
                return Err(err(format!("{} needs an argument", a.func.name())))
            }
            None => None,
            Some(r) => Some((u16::from(r), builder.register(r).map_err(err)?)),
        };
        let aggregate = AggregatePlan::new(a.func, arg).ok_or_else(|| {
            let ty = arg.map_or("nothing".to_string(), |(_, ty)| ty.to_string());
            err(format!(
                "{} needs a number, register {} is {ty}",
                a.func.name(),
                a.arg.unwrap_or(0)
            ))
        })?;
        plan.aggregates.push(aggregate);
    }
    Ok(plan)
}
