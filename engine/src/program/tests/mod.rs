//! Unit tests of the pushed-down program, by role: the machine's instructions
//! (`machine.rs`), the verifier's rules (`verify.rs`), hostile and random programs
//! (`hostile.rs`), aggregates and their merge (`aggregate.rs`) and the compiler
//! (`compile.rs`). This file holds what they share: a table with a column of every type and
//! helpers that run a program over rows.

mod aggregate;
mod compile;
mod hostile;
mod machine;
mod verify;

use super::*;
use crate::row::{encode_row, Value};
use crate::schema::{Column, ColumnType, Table, TableDef};

/// Column numbers of [`table`].
pub(super) const ID: u16 = 0;
pub(super) const A: u16 = 1;
pub(super) const B: u16 = 2;
pub(super) const S: u16 = 3;
pub(super) const C: u16 = 4;
pub(super) const U_COLUMN: u16 = 5;
pub(super) const T: u16 = 6;
pub(super) const Y: u16 = 7;
pub(super) const TS: u16 = 8;

/// A table with a column of every type: id i64 (key), a i64, b f64, s varchar(40), c i32,
/// u u64, t bool, y bytes(16), ts timestamp (all but id nullable).
pub(super) fn table() -> Table {
    let column =
        |name: &str, ty: ColumnType| Column { name: name.into(), ty, nullable: name != "id" };
    let def = TableDef {
        name: "things".into(),
        columns: vec![
            column("id", ColumnType::I64),
            column("a", ColumnType::I64),
            column("b", ColumnType::F64),
            column("s", ColumnType::Varchar { max: 40 }),
            column("c", ColumnType::I32),
            column("u", ColumnType::U64),
            column("t", ColumnType::Bool),
            column("y", ColumnType::Bytes { max: 16 }),
            column("ts", ColumnType::Timestamp),
        ],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(4),
        read_backup: false,
        indexes: Vec::new(),
    };
    Table::new(1, 1, def, 4)
}

/// A row of [`table`] with every nullable column NULL.
pub(super) fn null_row(id: i64) -> Vec<Value> {
    let mut row = vec![Value::Null; 9];
    row[0] = Value::I64(id);
    row
}

/// A row of [`table`] with every column set.
pub(super) fn full_row(id: i64) -> Vec<Value> {
    vec![
        Value::I64(id),
        Value::I64(id * 10),
        Value::F64(id as f64 / 2.0),
        Value::Text(format!("row {id}")),
        Value::I32(-(id as i32)),
        Value::U64((id + 100) as u64),
        Value::Bool(id % 2 == 0),
        Value::Bytes(vec![id as u8, 0xff]),
        Value::Timestamp(id * 1_000_000),
    ]
}

/// Generous limits for tests that need many registers.
pub(super) fn wide() -> ProgramLimits {
    ProgramLimits { max_registers: MAX_REGISTERS, ..ProgramLimits::default() }
}

/// Verifies `program` for [`table`] and runs it over `rows` in `partitions` partitions (row i
/// in partition i % partitions); returns the returned tuples or the finished aggregate rows.
pub(super) fn run_split(
    program: Program,
    rows: &[Vec<Value>],
    partitions: usize,
) -> Result<Vec<Vec<Value>>, RunError> {
    let t = table();
    let verified = match program.verify(&t, &wide()) {
        Ok(v) => v,
        Err(e) => panic!("the program should verify: {e}"),
    };
    let mut out = Vec::new();
    let mut groups: Vec<Groups> = (0..partitions).map(|_| verified.groups(1000)).collect();
    for (i, row) in rows.iter().enumerate() {
        let image = encode_row(&t, row).unwrap();
        verified.apply(&image, &mut out, &mut groups[i % partitions])?;
    }
    if verified.is_aggregate() {
        let mut merger = verified.merger();
        for g in &groups {
            merger.merge(&g.encode())?;
        }
        Ok(merger.finish())
    } else {
        Ok(decode_tuples(&out, verified.output_arity()).unwrap())
    }
}

/// [`run_split`] in one partition.
pub(super) fn run(program: Program, rows: &[Vec<Value>]) -> Result<Vec<Vec<Value>>, RunError> {
    run_split(program, rows, 1)
}

/// Runs `code` (then `return` of register `out`) on `row` and gives the one returned value.
pub(super) fn eval(
    registers: &[RegType],
    constants: Vec<Constant>,
    mut code: Vec<Instr>,
    out: u8,
    row: Vec<Value>,
) -> Result<Value, RunError> {
    code.push(Instr::Return);
    let program = Program {
        registers: registers.to_vec(),
        constants,
        code,
        output: vec![Output::Register(out)],
        ..Program::default()
    };
    let mut rows = run(program, &[row])?;
    assert_eq!(rows.len(), 1);
    let mut row = rows.remove(0);
    assert_eq!(row.len(), 1);
    Ok(row.remove(0))
}

/// A constant value.
pub(super) fn value(v: Value) -> Constant {
    Constant::Value(v)
}
