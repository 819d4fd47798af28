//! The client's stages: the engine's pushed-down program run over an intermediate result
//! (a CTE's rows, a join's output, the merged groups), through a table made of that result's
//! columns. Expressions then mean exactly what they mean on the data nodes (types, NULLs,
//! overflow, division by zero), and their types are known before anything runs.

use std::cmp::Ordering;

use engine::program::compile::{compile_with, Expr, Query};
use engine::program::{AggFn, Output, Program, ProgramLimits, RegType};
use engine::row::{self, Value};
use engine::schema::{Column, ColumnType, Table, TableDef};

use super::{refused, MAX_CLIENT_ROWS};
use crate::error::{Error, Result};

/// An intermediate result: named, typed columns and rows.
#[derive(Clone, Debug, Default)]
pub(super) struct Rel {
    pub cols: Vec<(String, ColumnType)>,
    pub rows: Vec<Vec<Value>>,
}

/// Limits of the client's own programs: as large as a program can be.
fn limits() -> ProgramLimits {
    ProgramLimits {
        max_bytes: 1 << 20,
        max_registers: engine::program::MAX_REGISTERS,
        max_instructions: usize::from(u16::MAX),
        max_groups: MAX_CLIENT_ROWS,
    }
}

/// A table whose columns are `cols` (all nullable), for compiling and running programs.
pub(super) fn table_of(cols: &[(String, ColumnType)]) -> Table {
    let columns = cols.iter().map(|(name, ty)| Column { name: name.clone(), ty: *ty, nullable: true }).collect();
    let def = TableDef {
        name: "result".into(),
        columns,
        primary_key: Vec::new(),
        partition_key: None,
        partitions: Some(1),
        read_backup: false,
        indexes: Vec::new(),
    };
    Table::new(0, 0, def, 1)
}

/// The column type a register of type `ty` comes back as.
pub(super) fn column_type(ty: RegType) -> ColumnType {
    match ty {
        RegType::I64 => ColumnType::I64,
        RegType::U64 => ColumnType::U64,
        RegType::F64 => ColumnType::F64,
        RegType::Bool => ColumnType::Bool,
        RegType::Text => ColumnType::Varchar { max: u32::MAX },
        RegType::Bytes => ColumnType::Bytes { max: u32::MAX },
    }
}

/// The types of what `program` returns for `table`: its outputs, or its group values then its
/// aggregates.
pub(super) fn result_types(table: &Table, program: &Program) -> Vec<ColumnType> {
    let reg = |r: u8| column_type(program.registers[usize::from(r)]);
    if program.aggregates.is_empty() {
        return program
            .output
            .iter()
            .map(|o| match o {
                Output::Column(c) => table.def.columns[usize::from(*c)].ty,
                Output::Register(r) => reg(*r),
            })
            .collect();
    }
    let keys = program.group_by.iter().map(|r| reg(*r));
    let aggregates = program.aggregates.iter().map(|a| match (a.func, a.arg) {
        (AggFn::Count, _) | (_, None) => ColumnType::I64,
        (AggFn::Avg, _) => ColumnType::F64,
        (_, Some(r)) => reg(r),
    });
    keys.chain(aggregates).collect()
}

/// Compiles `query` over a table of `cols`: the table, the program and its result types.
pub(super) fn compile_over(cols: &[(String, ColumnType)], query: &Query) -> Result<(Table, Program, Vec<ColumnType>)> {
    let table = table_of(cols);
    let program = compile_with(&table, query, &limits()).map_err(|e| refused(friendly(&e.to_string())))?;
    let mut types = result_types(&table, &program);
    timestamps(cols, query, &mut types);
    Ok((table, program, types))
}

/// Marks as timestamps the results that are one (the program computes them as i64):
/// a timestamp column, literal or `ts +/- n`, month arithmetic, a CASE / GREATEST / LEAST of
/// timestamps, and MIN / MAX of one.
fn timestamps(cols: &[(String, ColumnType)], query: &Query, types: &mut [ColumnType]) {
    let is = |e: &Expr| is_timestamp(e, cols);
    let flags: Vec<bool> = if query.aggregates.is_empty() {
        query.output.iter().map(is).collect()
    } else {
        let keys = query.group_by.iter().map(is);
        let aggregates = query.aggregates.iter().map(|(f, a)| {
            matches!(f, AggFn::Min | AggFn::Max) && a.as_ref().is_some_and(is)
        });
        keys.chain(aggregates).collect()
    };
    for (ty, ts) in types.iter_mut().zip(flags) {
        if ts && *ty == ColumnType::I64 {
            *ty = ColumnType::Timestamp;
        }
    }
}

fn is_timestamp(e: &Expr, cols: &[(String, ColumnType)]) -> bool {
    use engine::program::ArithOp;
    let is = |e: &Expr| is_timestamp(e, cols);
    let typed = |e: &Expr| !matches!(e, Expr::Literal(Value::Null));
    match e {
        Expr::Column(name) => cols.iter().any(|(n, ty)| n == name && *ty == ColumnType::Timestamp),
        Expr::Literal(Value::Timestamp(_)) => true,
        Expr::Arith(ArithOp::Add, a, b) => is(a) != is(b),
        Expr::Arith(ArithOp::Sub, a, b) => is(a) && !is(b),
        Expr::AddMonths(..) => true,
        Expr::Case(whens, otherwise) => {
            let values: Vec<&Expr> =
                whens.iter().map(|(_, v)| v).chain(otherwise.as_deref()).filter(|v| typed(v)).collect();
            !values.is_empty() && values.into_iter().all(is)
        }
        Expr::Extreme(_, args) => {
            let values: Vec<&Expr> = args.iter().filter(|v| typed(v)).collect();
            !values.is_empty() && values.into_iter().all(is)
        }
        _ => false,
    }
}

/// A compiler message with the client's internal column names made readable.
pub(super) fn friendly(message: &str) -> String {
    message.replace("in table \"result\"", "").replace("#a", "aggregate ").replace("#g", "group ")
}

/// Runs `query` over `rel`; the result's columns are named `names`.
pub(super) fn run(rel: &Rel, query: &Query, names: &[String]) -> Result<Rel> {
    let (table, program, types) = compile_over(&rel.cols, query)?;
    let verified = program.verify(&table, &limits()).map_err(|e| refused(format!("a client stage: {e}")))?;
    let arity = verified.output_arity();
    let mut groups = verified.groups(MAX_CLIENT_ROWS);
    let mut out = Vec::new();
    for values in &rel.rows {
        let image = row::encode_row(&table, values).map_err(|e| Error::invalid(format!("an intermediate row: {e}")))?;
        verified.apply(&image, &mut out, &mut groups).map_err(|e| refused(format!("evaluating in the client: {e}")))?;
    }
    let rows = if verified.is_aggregate() {
        let mut merger = verified.merger_with_limit(MAX_CLIENT_ROWS);
        merger.merge(&groups.encode()).map_err(|e| refused(format!("aggregating in the client: {e}")))?;
        merger.finish()
    } else {
        engine::program::decode_tuples(&out, arity).map_err(|e| Error::invalid(format!("a client stage's rows: {e}")))?
    };
    let rows = rows.into_iter().map(|r| fit(r, &types)).collect();
    Ok(Rel { cols: names.iter().cloned().zip(types).collect(), rows })
}

/// Values as their column types (tuples carry i32 and timestamps as they are, and a
/// group's values as registers hold them).
pub(super) fn fit(row: Vec<Value>, types: &[ColumnType]) -> Vec<Value> {
    row.into_iter()
        .zip(types)
        .map(|(v, ty)| match (v, ty) {
            (Value::I64(v), ColumnType::Timestamp) => Value::Timestamp(v),
            (Value::I64(v), ColumnType::I32) => i32::try_from(v).map_or(Value::I64(v), Value::I32),
            (Value::Timestamp(v), ColumnType::I64) => Value::I64(v),
            (Value::I32(v), ColumnType::I64) => Value::I64(i64::from(v)),
            (Value::Bytes(b), ColumnType::Varchar { .. }) => match String::from_utf8(b) {
                Ok(t) => Value::Text(t),
                Err(e) => Value::Bytes(e.into_bytes()),
            },
            (v, _) => v,
        })
        .collect()
}

/// SQL's order of values: NULL first, numbers by value across types, then by type.
pub(super) fn compare(a: &Value, b: &Value) -> Ordering {
    use Value as V;
    let rank = |v: &Value| match v {
        V::Null => 0,
        V::Bool(_) => 1,
        V::I32(_) | V::I64(_) | V::U64(_) | V::F64(_) | V::Timestamp(_) => 2,
        V::Text(_) => 3,
        V::Bytes(_) => 4,
    };
    match (a, b) {
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        (V::Text(x), V::Text(y)) => x.cmp(y),
        (V::Bytes(x), V::Bytes(y)) => x.cmp(y),
        (V::U64(x), V::U64(y)) => x.cmp(y),
        // A total order (NaN after +inf), so sorting never meets an inconsistent comparison.
        (V::F64(_), _) | (_, V::F64(_)) if rank(a) == 2 && rank(b) == 2 => number(a).total_cmp(&number(b)),
        _ if rank(a) == 2 && rank(b) == 2 => wide(a).cmp(&wide(b)),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn number(v: &Value) -> f64 {
    match *v {
        Value::I32(x) => f64::from(x),
        Value::I64(x) | Value::Timestamp(x) => x as f64,
        Value::U64(x) => x as f64,
        Value::F64(x) => x,
        _ => 0.0,
    }
}

fn wide(v: &Value) -> i128 {
    match *v {
        Value::I32(x) => i128::from(x),
        Value::I64(x) | Value::Timestamp(x) => i128::from(x),
        Value::U64(x) => i128::from(x),
        _ => 0,
    }
}

/// A key for matching join values of possibly different types (an i32 and an i64 of one
/// number match); `None` when a value is NULL (NULL never matches).
pub(super) fn match_key(values: &[&Value]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for v in values {
        match **v {
            Value::Null => return None,
            Value::Bool(b) => out.extend_from_slice(&[b'b', u8::from(b)]),
            Value::F64(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
                out.push(b'i');
                out.extend_from_slice(&(f as i128).to_le_bytes());
            }
            Value::F64(f) => {
                out.push(b'f');
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Text(ref t) => {
                out.push(b't');
                out.extend_from_slice(&(t.len() as u64).to_le_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            Value::Bytes(ref t) => {
                out.push(b'x');
                out.extend_from_slice(&(t.len() as u64).to_le_bytes());
                out.extend_from_slice(t);
            }
            ref n => {
                out.push(b'i');
                out.extend_from_slice(&wide(n).to_le_bytes());
            }
        }
    }
    Some(out)
}

/// Applies `f` to each direct child of `e`, rebuilding it.
pub(super) fn map_children(e: &Expr, f: &mut dyn FnMut(&Expr) -> Result<Expr>) -> Result<Expr> {
    let mut b = |x: &Expr| f(x).map(Box::new);
    Ok(match e {
        Expr::Column(_) | Expr::Literal(_) => e.clone(),
        Expr::Arith(op, x, y) => Expr::Arith(*op, b(x)?, b(y)?),
        Expr::Compare(op, x, y) => Expr::Compare(*op, b(x)?, b(y)?),
        Expr::IsNull(x) => Expr::IsNull(b(x)?),
        Expr::IsNotNull(x) => Expr::IsNotNull(b(x)?),
        Expr::Like(x, p) => Expr::Like(b(x)?, p.clone()),
        Expr::In(x, list) => Expr::In(b(x)?, list.clone()),
        Expr::And(x, y) => Expr::And(b(x)?, b(y)?),
        Expr::Or(x, y) => Expr::Or(b(x)?, b(y)?),
        Expr::Not(x) => Expr::Not(b(x)?),
        Expr::Case(whens, otherwise) => {
            let mut out = Vec::with_capacity(whens.len());
            for (c, v) in whens {
                out.push((f(c)?, f(v)?));
            }
            let otherwise = match otherwise {
                Some(o) => Some(Box::new(f(o)?)),
                None => None,
            };
            Expr::Case(out, otherwise)
        }
        Expr::Extreme(g, args) => Expr::Extreme(*g, args.iter().map(&mut *f).collect::<Result<Vec<_>>>()?),
        Expr::Extract(field, x) => Expr::Extract(*field, b(x)?),
        Expr::AddMonths(x, y) => Expr::AddMonths(b(x)?, b(y)?),
    })
}

/// Renames every column of `e` by `f`.
pub(super) fn rename(e: &Expr, f: &dyn Fn(&str) -> String) -> Expr {
    fn go(e: &Expr, f: &dyn Fn(&str) -> String) -> Result<Expr> {
        match e {
            Expr::Column(name) => Ok(Expr::Column(f(name))),
            e => map_children(e, &mut |c| go(c, f)),
        }
    }
    go(e, f).unwrap_or_else(|_| e.clone())
}

/// Adds every column `e` names to `out`.
pub(super) fn columns(e: &Expr, out: &mut Vec<String>) {
    let mut visit = |c: &Expr| {
        columns(c, out);
        Ok(c.clone())
    };
    match e {
        Expr::Column(name) => {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        e => {
            let _ = map_children(e, &mut visit);
        }
    }
}

/// The conjuncts of `e` (its AND terms).
pub(super) fn conjuncts(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::And(a, b) => {
            conjuncts(*a, out);
            conjuncts(*b, out);
        }
        e => out.push(e),
    }
}

/// The AND of `terms` (`None` when there are none).
pub(super) fn and_all(terms: Vec<Expr>) -> Option<Expr> {
    terms.into_iter().reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
}
