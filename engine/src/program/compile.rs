//! The expression compiler: filters, projections and GROUP BY aggregates, as client libraries
//! and SQL write them ([`Expr`], [`Query`]), into [`Program`]s for a table.
//!
//! Layout of a compiled program: the filter's code (straight-line), `jump_if_not_true` to the
//! final `skip`, the code of the outputs (or of the group keys and aggregate arguments),
//! `return` (or `aggregate`), and the final `skip`. Without a filter there is no jump and no
//! `skip`. With no outputs and no aggregates the program returns every column.
//!
//! Typing rules:
//! - a column loads as its register type (i32/i64/timestamp -> i64, u64, f64, bool,
//!   varchar -> text, bytes); each column is loaded once and its register kept;
//! - a literal takes the type of the other operand when its value fits exactly (an integer
//!   against u64 when not negative, against f64 when exactly representable; text against
//!   bytes), else its own type (integers i64, u64 stays u64);
//! - i64 or u64 with f64: the integer side is converted with `to_f64`; i64 with u64 is
//!   refused (no common type holds both exactly: compare against a literal instead);
//! - `%` needs integers; logic and filters need bool; LIKE needs text or bytes;
//! - NULL literals take the type the context gives them (i64 when there is none) and are
//!   loaded as NULL constants, so comparing with NULL gives NULL;
//! - `x IN (...)` with NULL in the list is `x IN (the rest) OR NULL`, as in SQL; an empty
//!   list is false, as in SQLite.
//!
//! Temporary registers are reused per type once their value is consumed; column, output,
//! group-key and aggregate-argument registers are kept to the end. A column's register is a
//! fresh one, written only by its load, so that the verifier can replace it by the column.

use std::fmt;

use super::verify::{column_register_type, parse_pattern};
use super::{
    AggFn, Aggregate, ArithOp, CmpOp, Constant, Instr, Output, Program, ProgramLimits, RegType,
};
use super::calendar::TimeField;
use crate::row::Value;
use crate::schema::Table;

/// An expression over a row's columns.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A column, by name.
    Column(String),
    /// A literal value.
    Literal(Value),
    /// Arithmetic.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// A comparison.
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// `e IS NULL`.
    IsNull(Box<Expr>),
    /// `e IS NOT NULL`.
    IsNotNull(Box<Expr>),
    /// `e LIKE pattern` (`%`, `_`, `\` escapes; case-sensitive).
    Like(Box<Expr>, String),
    /// `e IN (values)`.
    In(Box<Expr>, Vec<Value>),
    /// `a AND b`.
    And(Box<Expr>, Box<Expr>),
    /// `a OR b`.
    Or(Box<Expr>, Box<Expr>),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `CASE WHEN c1 THEN v1 ... [ELSE e] END` (no ELSE: NULL); the values share one type
    /// (integers and f64 together make f64).
    Case(Vec<(Expr, Expr)>, Option<Box<Expr>>),
    /// `GREATEST(..)` (`true`) or `LEAST(..)` (`false`) of one or more values of one type:
    /// NULL when any of them is NULL.
    Extreme(bool, Vec<Expr>),
    /// `EXTRACT(field FROM e)` of a timestamp (or any i64 of microseconds).
    Extract(TimeField, Box<Expr>),
    /// A timestamp plus a number of calendar months (the day cut to the month's last day).
    AddMonths(Box<Expr>, Box<Expr>),
}

/// The column `name`.
pub fn col(name: &str) -> Expr {
    Expr::Column(name.to_string())
}

/// A literal.
pub fn lit(value: impl Into<Value>) -> Expr {
    Expr::Literal(value.into())
}

#[allow(clippy::should_implement_trait)] // the operator traits are implemented too, below
impl Expr {
    fn arith(self, op: ArithOp, other: Expr) -> Expr {
        Expr::Arith(op, Box::new(self), Box::new(other))
    }
    fn compare(self, op: CmpOp, other: Expr) -> Expr {
        Expr::Compare(op, Box::new(self), Box::new(other))
    }
    /// `self = other`
    pub fn eq(self, other: Expr) -> Expr {
        self.compare(CmpOp::Eq, other)
    }
    /// `self <> other`
    pub fn ne(self, other: Expr) -> Expr {
        self.compare(CmpOp::Ne, other)
    }
    /// `self < other`
    pub fn lt(self, other: Expr) -> Expr {
        self.compare(CmpOp::Lt, other)
    }
    /// `self <= other`
    pub fn le(self, other: Expr) -> Expr {
        self.compare(CmpOp::Le, other)
    }
    /// `self > other`
    pub fn gt(self, other: Expr) -> Expr {
        self.compare(CmpOp::Gt, other)
    }
    /// `self >= other`
    pub fn ge(self, other: Expr) -> Expr {
        self.compare(CmpOp::Ge, other)
    }
    /// `self + other`
    pub fn add(self, other: Expr) -> Expr {
        self.arith(ArithOp::Add, other)
    }
    /// `self - other`
    pub fn sub(self, other: Expr) -> Expr {
        self.arith(ArithOp::Sub, other)
    }
    /// `self * other`
    pub fn mul(self, other: Expr) -> Expr {
        self.arith(ArithOp::Mul, other)
    }
    /// `self / other`
    pub fn div(self, other: Expr) -> Expr {
        self.arith(ArithOp::Div, other)
    }
    /// `self % other`
    pub fn rem(self, other: Expr) -> Expr {
        self.arith(ArithOp::Mod, other)
    }
    /// `self AND other`
    pub fn and(self, other: Expr) -> Expr {
        Expr::And(Box::new(self), Box::new(other))
    }
    /// `self OR other`
    pub fn or(self, other: Expr) -> Expr {
        Expr::Or(Box::new(self), Box::new(other))
    }
    /// `NOT self`
    pub fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }
    /// `self IS NULL`
    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }
    /// `self IS NOT NULL`
    pub fn is_not_null(self) -> Expr {
        Expr::IsNotNull(Box::new(self))
    }
    /// `self LIKE pattern`
    pub fn like(self, pattern: &str) -> Expr {
        Expr::Like(Box::new(self), pattern.to_string())
    }
    /// `self IN (values)`
    pub fn in_list(self, values: Vec<Value>) -> Expr {
        Expr::In(Box::new(self), values)
    }
}

macro_rules! operator {
    ($trait:ident, $method:ident, $op:expr) => {
        impl std::ops::$trait for Expr {
            type Output = Expr;
            fn $method(self, other: Expr) -> Expr {
                self.arith($op, other)
            }
        }
    };
}
operator!(Add, add, ArithOp::Add);
operator!(Sub, sub, ArithOp::Sub);
operator!(Mul, mul, ArithOp::Mul);
operator!(Div, div, ArithOp::Div);
operator!(Rem, rem, ArithOp::Mod);

impl std::ops::Not for Expr {
    type Output = Expr;
    fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(name) => f.write_str(name),
            Expr::Literal(Value::Text(t)) => write!(f, "'{}'", t.replace('\'', "''")),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Arith(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::Compare(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::IsNull(e) => write!(f, "({e} IS NULL)"),
            Expr::IsNotNull(e) => write!(f, "({e} IS NOT NULL)"),
            Expr::Like(e, p) => write!(f, "({e} LIKE '{}')", p.replace('\'', "''")),
            Expr::In(e, values) => {
                write!(f, "({e} IN (")?;
                for (i, v) in values.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}", Expr::Literal(v.clone()))?;
                }
                f.write_str("))")
            }
            Expr::And(a, b) => write!(f, "({a} AND {b})"),
            Expr::Or(a, b) => write!(f, "({a} OR {b})"),
            Expr::Not(e) => write!(f, "(NOT {e})"),
            Expr::Case(whens, otherwise) => {
                f.write_str("CASE")?;
                for (c, v) in whens {
                    write!(f, " WHEN {c} THEN {v}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END")
            }
            Expr::Extreme(greatest, args) => {
                f.write_str(if *greatest { "GREATEST(" } else { "LEAST(" })?;
                for (i, a) in args.iter().enumerate() {
                    write!(f, "{}{a}", if i == 0 { "" } else { ", " })?;
                }
                f.write_str(")")
            }
            Expr::Extract(field, e) => write!(f, "EXTRACT({} FROM {e})", field.name()),
            Expr::AddMonths(e, n) => write!(f, "ADD_MONTHS({e}, {n})"),
        }
    }
}

/// A scan's query: `SELECT output | group_by, aggregates WHERE filter GROUP BY group_by`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Rows for which this is not true are skipped.
    pub filter: Option<Expr>,
    /// Returned values (a bare column returns the column's own type). Empty, with no
    /// aggregates: every column.
    pub output: Vec<Expr>,
    /// Group keys (aggregating queries only).
    pub group_by: Vec<Expr>,
    /// Aggregates; the argument is `None` only for COUNT(*).
    pub aggregates: Vec<(AggFn, Option<Expr>)>,
}

/// Why a query cannot be compiled for a table: each names the column or expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// A column the table does not have.
    #[error("unknown column {name:?} in table {table:?}")]
    UnknownColumn { name: String, table: String },
    /// Operand types that do not fit the operator.
    #[error("{0}")]
    Type(String),
    /// More registers than the limit.
    #[error("the query needs more than {limit} registers")]
    OutOfRegisters { limit: usize },
    /// More instructions or constants than a program holds.
    #[error("the query needs {count} {what} (limit {limit})")]
    TooLarge { what: &'static str, count: usize, limit: usize },
    /// A query whose parts do not go together.
    #[error("{0}")]
    Shape(String),
}

/// A compiled value: its register and type; `temporary` registers go back to the pool once
/// consumed.
#[derive(Clone, Copy, Debug)]
struct Operand {
    register: u8,
    ty: RegType,
    temporary: bool,
}

/// Whether `e` is NULL without a type of its own (a NULL literal, or a CASE, GREATEST or
/// LEAST of nothing else): it takes the type of what it meets.
fn untyped(e: &Expr) -> bool {
    match e {
        Expr::Literal(Value::Null) => true,
        Expr::Case(whens, otherwise) => {
            whens.iter().all(|(_, v)| untyped(v)) && !otherwise.as_deref().is_some_and(|e| !untyped(e))
        }
        Expr::Extreme(_, args) => args.iter().all(untyped),
        _ => false,
    }
}

/// The natural register type of a literal (`None` for NULL).
fn literal_type(value: &Value) -> Option<RegType> {
    Some(match value {
        Value::Null => return None,
        Value::I32(_) | Value::I64(_) | Value::Timestamp(_) => RegType::I64,
        Value::U64(_) => RegType::U64,
        Value::F64(_) => RegType::F64,
        Value::Bool(_) => RegType::Bool,
        Value::Text(_) => RegType::Text,
        Value::Bytes(_) => RegType::Bytes,
    })
}

/// `value` as a constant for a register of type `ty`, when it fits exactly.
fn coerce(value: &Value, ty: RegType) -> Option<Value> {
    const EXACT_F64: i64 = 1 << 53;
    Some(match (value, ty) {
        (Value::Null, _) => Value::Null,
        (Value::I32(_) | Value::I64(_) | Value::Timestamp(_), RegType::I64) => value.clone(),
        (Value::U64(v), RegType::I64) => Value::I64(i64::try_from(*v).ok()?),
        (Value::U64(_), RegType::U64) => value.clone(),
        (v, RegType::U64) => Value::U64(u64::try_from(v.as_i64()?).ok()?),
        (Value::F64(_), RegType::F64) => value.clone(),
        (Value::U64(v), RegType::F64) => {
            Value::F64(if *v <= EXACT_F64 as u64 { *v as f64 } else { return None })
        }
        (v, RegType::F64) => {
            let v = v.as_i64()?;
            if !(-EXACT_F64..=EXACT_F64).contains(&v) {
                return None;
            }
            Value::F64(v as f64)
        }
        (Value::Bool(_), RegType::Bool)
        | (Value::Text(_), RegType::Text)
        | (Value::Bytes(_), RegType::Bytes) => value.clone(),
        (Value::Text(t), RegType::Bytes) => Value::Bytes(t.as_bytes().to_vec()),
        _ => return None,
    })
}

/// Compiles `query` for `table` within the default [`ProgramLimits`].
pub fn compile(table: &Table, query: &Query) -> Result<Program, CompileError> {
    compile_with(table, query, &ProgramLimits::default())
}

/// Compiles `query` for `table` within `limits` (registers and instructions).
pub fn compile_with(
    table: &Table,
    query: &Query,
    limits: &ProgramLimits,
) -> Result<Program, CompileError> {
    let mut c = Compiler {
        table,
        limit: limits.max_registers.min(super::MAX_REGISTERS),
        program: Program::default(),
        free: Vec::new(),
        columns: Vec::new(),
        probed: Default::default(),
    };
    c.query(query)?;
    let program = c.program;
    let too_large = |what, count, limit| Err(CompileError::TooLarge { what, count, limit });
    if program.code.len() > limits.max_instructions {
        return too_large("instructions", program.code.len(), limits.max_instructions);
    }
    if program.constants.len() > usize::from(u16::MAX) + 1 {
        return too_large("constants", program.constants.len(), usize::from(u16::MAX) + 1);
    }
    let bytes = program.encoded_len();
    if bytes > limits.max_bytes {
        return too_large("bytes", bytes, limits.max_bytes);
    }
    Ok(program)
}

/// Probed types by (node address, hint), shared between a compiler and its copies.
type Probed = std::rc::Rc<std::cell::RefCell<std::collections::HashMap<(usize, Option<RegType>), RegType>>>;

#[derive(Clone)]
struct Compiler<'t> {
    table: &'t Table,
    limit: usize,
    program: Program,
    /// Temporary registers free for reuse.
    free: Vec<Operand>,
    /// Loaded columns: (column index, register).
    columns: Vec<(usize, Operand)>,
    /// Types found by [`Compiler::probe`], by node (its address in the query, which lives
    /// as long as the compile) and hint, shared by the copies probes compile on: each node
    /// is probed once, so nested CASE / GREATEST compile in polynomial, not exponential, time.
    probed: Probed,
}

impl Compiler<'_> {
    fn query(&mut self, query: &Query) -> Result<(), CompileError> {
        let aggregating = !query.aggregates.is_empty();
        if aggregating && !query.output.is_empty() {
            return Err(CompileError::Shape(
                "a query has output expressions or aggregates, not both (group-by values lead each aggregate row)".into(),
            ));
        }
        if !aggregating && !query.group_by.is_empty() {
            return Err(CompileError::Shape("GROUP BY needs at least one aggregate".into()));
        }
        let mut jump = None;
        if let Some(filter) = &query.filter {
            let cond = self.expr(filter, Some(RegType::Bool))?;
            self.want(filter, cond, RegType::Bool, "a filter needs bool")?;
            jump = Some(self.program.code.len());
            self.emit(Instr::JumpIfNotTrue { cond: cond.register, target: 0 });
            self.release(cond);
        }
        if aggregating {
            for key in &query.group_by {
                let key = self.expr(key, None)?;
                self.program.group_by.push(key.register);
            }
            for (func, arg) in &query.aggregates {
                let aggregate = self.aggregate(*func, arg.as_ref())?;
                self.program.aggregates.push(aggregate);
            }
            self.emit(Instr::Aggregate);
        } else {
            if query.output.is_empty() {
                let columns = self.table.def.columns.len();
                self.program.output = (0..columns).map(|c| Output::Column(c as u16)).collect();
            }
            for e in &query.output {
                let output = match e {
                    Expr::Column(name) => Output::Column(self.column_index(name)? as u16),
                    e => Output::Register(self.expr(e, None)?.register),
                };
                self.program.output.push(output);
            }
            self.emit(Instr::Return);
        }
        if let Some(at) = jump {
            let target =
                u16::try_from(self.program.code.len()).map_err(|_| CompileError::TooLarge {
                    what: "instructions",
                    count: self.program.code.len() + 1,
                    limit: usize::from(u16::MAX),
                })?;
            let cond = match self.program.code[at] {
                Instr::JumpIfNotTrue { cond, .. } => cond,
                _ => unreachable!("instruction {at} is the filter's jump"),
            };
            self.program.code[at] = Instr::JumpIfNotTrue { cond, target };
            self.emit(Instr::Skip);
        }
        Ok(())
    }

    fn aggregate(&mut self, func: AggFn, arg: Option<&Expr>) -> Result<Aggregate, CompileError> {
        let Some(arg) = arg else {
            if func != AggFn::Count {
                return Err(CompileError::Shape(format!("{} needs an argument", func.name())));
            }
            return Ok(Aggregate { func, arg: None });
        };
        let operand = self.expr(arg, None)?;
        if matches!(func, AggFn::Sum | AggFn::Avg) && !operand.ty.is_numeric() {
            return Err(CompileError::Type(format!(
                "{} needs a number, {}",
                func.name(),
                self.what(arg, operand.ty)
            )));
        }
        Ok(Aggregate { func, arg: Some(operand.register) })
    }

    fn emit(&mut self, instr: Instr) {
        self.program.code.push(instr);
    }

    fn column_index(&self, name: &str) -> Result<usize, CompileError> {
        self.table.column_index(name).ok_or_else(|| CompileError::UnknownColumn {
            name: name.to_string(),
            table: self.table.name().to_string(),
        })
    }

    /// A register of type `ty`: a freed temporary of that type, or a new one.
    fn allocate(&mut self, ty: RegType, temporary: bool) -> Result<Operand, CompileError> {
        if let Some(i) = self.free.iter().position(|o| o.ty == ty) {
            let mut operand = self.free.swap_remove(i);
            operand.temporary = temporary;
            return Ok(operand);
        }
        self.fresh(ty, temporary)
    }

    /// A register never used before (a column's: written once, so the verifier can make it
    /// the column itself).
    fn fresh(&mut self, ty: RegType, temporary: bool) -> Result<Operand, CompileError> {
        if self.program.registers.len() >= self.limit {
            return Err(CompileError::OutOfRegisters { limit: self.limit });
        }
        self.program.registers.push(ty);
        Ok(Operand { register: (self.program.registers.len() - 1) as u8, ty, temporary })
    }

    fn release(&mut self, operand: Operand) {
        if operand.temporary {
            self.free.push(operand);
        }
    }

    /// How `e` of type `ty` is named in errors.
    fn what(&self, e: &Expr, ty: RegType) -> String {
        match e {
            Expr::Column(name) => match self.table.column_index(name) {
                Some(i) => format!("column {name:?} is {}", self.table.def.columns[i].ty),
                None => format!("column {name:?} is {ty}"),
            },
            Expr::Literal(v) => format!("literal {v} is {}", v.type_name()),
            e => format!("`{e}` is {ty}"),
        }
    }

    fn want(
        &self,
        e: &Expr,
        operand: Operand,
        ty: RegType,
        context: &str,
    ) -> Result<(), CompileError> {
        if operand.ty != ty {
            return Err(CompileError::Type(format!("{context}, {}", self.what(e, operand.ty))));
        }
        Ok(())
    }

    fn constant(&mut self, constant: Constant) -> Result<u16, CompileError> {
        let index = match self.program.constants.iter().position(|c| *c == constant) {
            Some(index) => index,
            None => {
                self.program.constants.push(constant);
                self.program.constants.len() - 1
            }
        };
        u16::try_from(index).map_err(|_| CompileError::TooLarge {
            what: "constants",
            count: index + 1,
            limit: usize::from(u16::MAX) + 1,
        })
    }

    /// Loads a literal as type `ty` (the caller checked that it fits).
    fn literal(&mut self, value: Value, ty: RegType) -> Result<Operand, CompileError> {
        let constant = self.constant(Constant::Value(value))?;
        let operand = self.allocate(ty, true)?;
        self.emit(Instr::LoadConst { dst: operand.register, constant });
        Ok(operand)
    }

    /// Compiles `e`; `hint` is the type a literal should take when it fits.
    fn expr(&mut self, e: &Expr, hint: Option<RegType>) -> Result<Operand, CompileError> {
        match e {
            Expr::Column(name) => self.load_column(name),
            Expr::Literal(v) => {
                let ty = hint.filter(|ty| coerce(v, *ty).is_some()).or_else(|| literal_type(v));
                let ty = ty.unwrap_or(RegType::I64);
                let value = coerce(v, ty).unwrap_or(Value::Null);
                self.literal(value, ty)
            }
            Expr::Arith(op, a, b) => self.arith(e, *op, a, b),
            Expr::Compare(op, a, b) => {
                let (a, b) = self.pair(e, a, b)?;
                self.release(a);
                self.release(b);
                let dst = self.allocate(RegType::Bool, true)?;
                self.emit(Instr::Compare {
                    op: *op,
                    dst: dst.register,
                    a: a.register,
                    b: b.register,
                });
                Ok(dst)
            }
            Expr::IsNull(a) | Expr::IsNotNull(a) => {
                let a = self.expr(a, None)?;
                self.release(a);
                let dst = self.allocate(RegType::Bool, true)?;
                self.emit(match e {
                    Expr::IsNull(_) => Instr::IsNull { dst: dst.register, a: a.register },
                    _ => Instr::IsNotNull { dst: dst.register, a: a.register },
                });
                Ok(dst)
            }
            Expr::Like(a, pattern) => self.like(a, pattern),
            Expr::In(a, values) => self.is_in(a, values),
            Expr::And(a, b) | Expr::Or(a, b) => {
                let (x, y) = (self.boolean(a)?, self.boolean(b)?);
                self.release(x);
                self.release(y);
                let dst = self.allocate(RegType::Bool, true)?;
                let (dst_register, a, b) = (dst.register, x.register, y.register);
                self.emit(match e {
                    Expr::And(..) => Instr::And { dst: dst_register, a, b },
                    _ => Instr::Or { dst: dst_register, a, b },
                });
                Ok(dst)
            }
            Expr::Not(a) => {
                let a = self.boolean(a)?;
                self.release(a);
                let dst = self.allocate(RegType::Bool, true)?;
                self.emit(Instr::Not { dst: dst.register, a: a.register });
                Ok(dst)
            }
            Expr::Case(whens, otherwise) => self.case(e, whens, otherwise.as_deref(), hint),
            Expr::Extreme(greatest, args) => self.extreme(e, *greatest, args, hint),
            Expr::Extract(field, a) => {
                let a = self.timestamp(a, "EXTRACT needs a timestamp")?;
                self.release(a);
                let dst = self.allocate(RegType::I64, true)?;
                self.emit(Instr::Extract { field: *field, dst: dst.register, a: a.register });
                Ok(dst)
            }
            Expr::AddMonths(a, n) => {
                let a = self.timestamp(a, "a month interval needs a timestamp")?;
                let n = self.timestamp(n, "a number of months needs an integer")?;
                self.release(a);
                self.release(n);
                let dst = self.allocate(RegType::I64, true)?;
                self.emit(Instr::AddMonths { dst: dst.register, a: a.register, b: n.register });
                Ok(dst)
            }
        }
    }

    /// `e` as an i64 (timestamps load as i64 microseconds).
    fn timestamp(&mut self, e: &Expr, context: &str) -> Result<Operand, CompileError> {
        let operand = self.expr(e, Some(RegType::I64))?;
        self.want(e, operand, RegType::I64, context)?;
        Ok(operand)
    }

    /// The type `e` compiles to with `hint`, found by compiling it on a copy of the compiler.
    fn probe(&self, e: &Expr, hint: Option<RegType>) -> Result<RegType, CompileError> {
        let key = (e as *const Expr as usize, hint);
        if let Some(ty) = self.probed.borrow().get(&key) {
            return Ok(*ty);
        }
        let ty = self.clone().expr(e, hint)?.ty;
        self.probed.borrow_mut().insert(key, ty);
        Ok(ty)
    }

    /// The one type of several values (CASE branches, GREATEST / LEAST arguments): their
    /// common type, integers and f64 together making f64; NULL literals take it.
    fn common_type<'e>(
        &self,
        whole: &Expr,
        values: impl Iterator<Item = &'e Expr> + Clone,
        hint: Option<RegType>,
    ) -> Result<RegType, CompileError> {
        let mut ty: Option<RegType> = None;
        for v in values.clone().filter(|v| !matches!(v, Expr::Literal(Value::Null))) {
            let t = self.probe(v, ty)?;
            ty = Some(match (ty, t) {
                (None, t) => t,
                (Some(a), b) if a == b => a,
                (Some(RegType::F64), RegType::I64 | RegType::U64)
                | (Some(RegType::I64 | RegType::U64), RegType::F64) => RegType::F64,
                (Some(a), b) => {
                    return Err(CompileError::Type(format!(
                        "the values of `{whole}` need one type: {a} and {}",
                        self.what(v, b)
                    )))
                }
            });
        }
        Ok(ty.or(hint).unwrap_or(RegType::I64))
    }

    /// Compiles `e` and puts it into `dst` (of type `ty`, converting an integer to f64).
    fn compute_into(&mut self, e: &Expr, dst: Operand) -> Result<(), CompileError> {
        if let Expr::Literal(Value::Null) = e {
            let constant = self.constant(Constant::Value(Value::Null))?;
            self.emit(Instr::LoadConst { dst: dst.register, constant });
            return Ok(());
        }
        let v = self.expr(e, Some(dst.ty))?;
        self.release(v);
        match (v.ty, dst.ty) {
            (a, b) if a == b => self.emit(Instr::Move { dst: dst.register, a: v.register }),
            (RegType::I64 | RegType::U64, RegType::F64) => {
                self.emit(Instr::ToF64 { dst: dst.register, a: v.register })
            }
            (_, ty) => {
                return Err(CompileError::Type(format!("a value of {ty} is needed, {}", self.what(e, v.ty))))
            }
        }
        Ok(())
    }

    /// The index the next instruction will have, as a jump target.
    fn here(&self) -> Result<u16, CompileError> {
        u16::try_from(self.program.code.len()).map_err(|_| CompileError::TooLarge {
            what: "instructions",
            count: self.program.code.len() + 1,
            limit: usize::from(u16::MAX),
        })
    }

    /// Points the jump at `at` to the next instruction.
    fn patch(&mut self, at: usize) -> Result<(), CompileError> {
        let here = self.here()?;
        match &mut self.program.code[at] {
            Instr::Jump { target }
            | Instr::JumpIfTrue { target, .. }
            | Instr::JumpIfNotTrue { target, .. } => *target = here,
            other => unreachable!("instruction {at} ({}) is not a jump", other.name()),
        }
        Ok(())
    }

    /// CASE: each condition in turn; the first true one's value goes into the result.
    ///
    /// A column first loaded inside a branch is loaded only on that branch's path, so the
    /// compiler forgets it after the branch (a later use loads it again); columns loaded by
    /// the first condition are loaded on every path.
    fn case(
        &mut self,
        whole: &Expr,
        whens: &[(Expr, Expr)],
        otherwise: Option<&Expr>,
        hint: Option<RegType>,
    ) -> Result<Operand, CompileError> {
        if whens.is_empty() {
            return Err(CompileError::Shape(format!("`{whole}` has no WHEN")));
        }
        let values = whens.iter().map(|(_, v)| v).chain(otherwise);
        let ty = self.common_type(whole, values, hint)?;
        let result = self.allocate(ty, true)?;
        let mut ends = Vec::new();
        let mut known = None;
        for (cond, value) in whens {
            let c = self.boolean(cond)?;
            known.get_or_insert(self.columns.len());
            let mark = self.columns.len();
            let skip = self.program.code.len();
            self.emit(Instr::JumpIfNotTrue { cond: c.register, target: 0 });
            self.release(c);
            self.compute_into(value, result)?;
            self.columns.truncate(mark);
            ends.push(self.program.code.len());
            self.emit(Instr::Jump { target: 0 });
            self.patch(skip)?;
        }
        self.compute_into(otherwise.unwrap_or(&Expr::Literal(Value::Null)), result)?;
        self.columns.truncate(known.unwrap_or(0));
        for at in ends {
            self.patch(at)?;
        }
        Ok(result)
    }

    /// GREATEST / LEAST: every argument computed (on every path), then the best kept; any
    /// NULL argument makes the result NULL.
    fn extreme(
        &mut self,
        whole: &Expr,
        greatest: bool,
        args: &[Expr],
        hint: Option<RegType>,
    ) -> Result<Operand, CompileError> {
        if args.is_empty() {
            return Err(CompileError::Shape(format!("`{whole}` needs at least one argument")));
        }
        let ty = self.common_type(whole, args.iter(), hint)?;
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            let slot = self.allocate(ty, true)?;
            self.compute_into(a, slot)?;
            values.push(slot);
        }
        let result = self.allocate(ty, true)?;
        self.emit(Instr::Move { dst: result.register, a: values[0].register });
        let op = if greatest { CmpOp::Gt } else { CmpOp::Lt };
        let better = self.allocate(RegType::Bool, true)?;
        for v in &values[1..] {
            self.emit(Instr::Compare { op, dst: better.register, a: v.register, b: result.register });
            let skip = self.program.code.len();
            self.emit(Instr::JumpIfNotTrue { cond: better.register, target: 0 });
            self.emit(Instr::Move { dst: result.register, a: v.register });
            self.patch(skip)?;
        }
        let mut nulls = Vec::with_capacity(values.len());
        for v in &values {
            self.emit(Instr::IsNull { dst: better.register, a: v.register });
            nulls.push(self.program.code.len());
            self.emit(Instr::JumpIfTrue { cond: better.register, target: 0 });
        }
        let end = self.program.code.len();
        self.emit(Instr::Jump { target: 0 });
        for at in nulls {
            self.patch(at)?;
        }
        let constant = self.constant(Constant::Value(Value::Null))?;
        self.emit(Instr::LoadConst { dst: result.register, constant });
        self.patch(end)?;
        self.release(better);
        for v in values {
            self.release(v);
        }
        Ok(result)
    }

    fn boolean(&mut self, e: &Expr) -> Result<Operand, CompileError> {
        let operand = self.expr(e, Some(RegType::Bool))?;
        self.want(e, operand, RegType::Bool, "AND, OR and NOT need bool")?;
        Ok(operand)
    }

    fn load_column(&mut self, name: &str) -> Result<Operand, CompileError> {
        let index = self.column_index(name)?;
        if let Some((_, operand)) = self.columns.iter().find(|(c, _)| *c == index) {
            return Ok(*operand);
        }
        let ty = column_register_type(self.table.def.columns[index].ty);
        let operand = self.fresh(ty, false)?;
        self.emit(Instr::LoadColumn { dst: operand.register, column: index as u16 });
        self.columns.push((index, operand));
        Ok(operand)
    }

    /// Compiles both operands of a binary operator into one type (see the module comment).
    fn pair(
        &mut self,
        whole: &Expr,
        a: &Expr,
        b: &Expr,
    ) -> Result<(Operand, Operand), CompileError> {
        // A literal takes its type from the other side, so that side is compiled first; of
        // two literals, a NULL takes the other's type.
        let b_first = match (a, b) {
            (a, _) if untyped(a) => true,
            (_, b) if untyped(b) => false,
            (Expr::Literal(_), Expr::Literal(_)) => false,
            (Expr::Literal(_), _) => true,
            _ => false,
        };
        let (x, y) = if b_first {
            let y = self.expr(b, None)?;
            (self.expr(a, Some(y.ty))?, y)
        } else {
            let x = self.expr(a, None)?;
            (x, self.expr(b, Some(x.ty))?)
        };
        let op = match whole {
            Expr::Arith(op, ..) => op.symbol(),
            Expr::Compare(op, ..) => op.symbol(),
            _ => "operator",
        };
        match (x.ty, y.ty) {
            (tx, ty) if tx == ty => Ok((x, y)),
            (RegType::I64 | RegType::U64, RegType::F64) => Ok((self.convert_to_f64(x)?, y)),
            (RegType::F64, RegType::I64 | RegType::U64) => Ok((x, self.convert_to_f64(y)?)),
            (RegType::I64, RegType::U64) | (RegType::U64, RegType::I64) => {
                Err(CompileError::Type(format!(
                    "`{op}` cannot mix i64 and u64 exactly in `{whole}`: {} and {}",
                    self.what(a, x.ty),
                    self.what(b, y.ty)
                )))
            }
            _ => Err(CompileError::Type(format!(
                "`{op}` needs operands of one type in `{whole}`: {} and {}",
                self.what(a, x.ty),
                self.what(b, y.ty)
            ))),
        }
    }

    fn convert_to_f64(&mut self, a: Operand) -> Result<Operand, CompileError> {
        self.release(a);
        let dst = self.allocate(RegType::F64, true)?;
        self.emit(Instr::ToF64 { dst: dst.register, a: a.register });
        Ok(dst)
    }

    fn arith(
        &mut self,
        whole: &Expr,
        op: ArithOp,
        a: &Expr,
        b: &Expr,
    ) -> Result<Operand, CompileError> {
        let (x, y) = self.pair(whole, a, b)?;
        if !x.ty.is_numeric() {
            return Err(CompileError::Type(format!(
                "`{}` needs numbers, {}",
                op.symbol(),
                self.what(a, x.ty)
            )));
        }
        if op == ArithOp::Mod && x.ty == RegType::F64 {
            return Err(CompileError::Type(format!("`%` needs integers, `{whole}` is f64")));
        }
        self.release(x);
        self.release(y);
        let dst = self.allocate(x.ty, true)?;
        self.emit(Instr::Arith { op, dst: dst.register, a: x.register, b: y.register });
        Ok(dst)
    }

    fn like(&mut self, a: &Expr, pattern: &str) -> Result<Operand, CompileError> {
        parse_pattern(pattern).map_err(CompileError::Type)?;
        let operand = self.expr(a, Some(RegType::Text))?;
        if !matches!(operand.ty, RegType::Text | RegType::Bytes) {
            return Err(CompileError::Type(format!(
                "LIKE needs text, {}",
                self.what(a, operand.ty)
            )));
        }
        let constant = self.constant(Constant::Value(Value::Text(pattern.to_string())))?;
        self.release(operand);
        let dst = self.allocate(RegType::Bool, true)?;
        self.emit(Instr::Like { dst: dst.register, a: operand.register, pattern: constant });
        Ok(dst)
    }

    fn is_in(&mut self, a: &Expr, values: &[Value]) -> Result<Operand, CompileError> {
        let hint = values.iter().find_map(literal_type);
        let operand = self.expr(a, hint)?;
        let mut list = Vec::with_capacity(values.len());
        let mut has_null = false;
        for v in values {
            match coerce(v, operand.ty) {
                Some(Value::Null) => has_null = true,
                Some(v) => list.push(v),
                None => {
                    return Err(CompileError::Type(format!(
                        "IN list value {v} ({}) does not fit: {}",
                        v.type_name(),
                        self.what(a, operand.ty)
                    )))
                }
            }
        }
        self.release(operand);
        if values.is_empty() {
            return self.literal(Value::Bool(false), RegType::Bool);
        }
        let found = if list.is_empty() {
            self.literal(Value::Null, RegType::Bool)?
        } else {
            let constant = self.constant(Constant::List(list))?;
            let dst = self.allocate(RegType::Bool, true)?;
            self.emit(Instr::In { dst: dst.register, a: operand.register, list: constant });
            dst
        };
        if !has_null || values.iter().all(|v| *v == Value::Null) {
            return Ok(found);
        }
        let null = self.literal(Value::Null, RegType::Bool)?;
        self.release(found);
        self.release(null);
        let dst = self.allocate(RegType::Bool, true)?;
        self.emit(Instr::Or { dst: dst.register, a: found.register, b: null.register });
        Ok(dst)
    }
}
