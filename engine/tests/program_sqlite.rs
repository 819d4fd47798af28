//! The pushed-down program against SQLite: random rows, random filters (every operator kind,
//! bounded depth), random projections and random aggregates with up to two group-by
//! expressions are compiled, verified (after a trip through the wire form) and run over row
//! images split into one to four partitions, whose partial aggregates are merged; SQLite runs
//! the same query on the same rows. The results must be equal as multisets (floats within a
//! relative tolerance).
//!
//! The generator keeps to what both define alike: expressions are typed by family (i64 from
//! `id`, `a`, `c`; f64 from `b` mixed with i64; u64 from `u`; text from `s`) and never mix
//! i64 with u64 (the compiler refuses that); magnitudes stay small so integer arithmetic does
//! not overflow; there is no `%` on floats; LIKE runs case-sensitive with `\` as its escape.
//! A case where either side reports an overflow (SQLite's SUM over large u64 values) is
//! counted as skipped, and the test requires that most cases are compared.

use std::cell::Cell;

use engine::program::{
    col, compile_with, decode_tuples, lit, AggFn, ArithOp, CmpOp, Expr, Program, ProgramLimits,
    Query, RunError, TimeField,
};
use engine::row::{encode_row, Value};
use engine::schema::{Column, ColumnType, Table, TableDef};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

fn table() -> Table {
    let column =
        |name: &str, ty: ColumnType| Column { name: name.into(), ty, nullable: name != "id" };
    let def = TableDef {
        name: "t".into(),
        columns: vec![
            column("id", ColumnType::I64),
            column("a", ColumnType::I64),
            column("b", ColumnType::F64),
            column("s", ColumnType::Varchar { max: 12 }),
            column("c", ColumnType::I32),
            column("u", ColumnType::U64),
        ],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(4),
        read_backup: false,
        indexes: Vec::new(),
    };
    Table::new(1, 1, def, 4)
}

// ---- generators ----

fn text_value() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(vec!['a', 'b', 'A', 'é', '%', '_', '\\']),
        0..4,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// One row (without its id).
fn row() -> impl Strategy<Value = [Value; 5]> {
    let u = prop_oneof![20 => 0u64..200, 1 => (1u64 << 60)..(1u64 << 62)];
    (
        proptest::option::weighted(0.85, -20i64..20),
        proptest::option::weighted(0.85, (-40i64..40).prop_map(|q| q as f64 / 4.0)),
        proptest::option::weighted(0.85, text_value()),
        proptest::option::weighted(0.85, -5i32..6),
        proptest::option::weighted(0.85, u),
    )
        .prop_map(|(a, b, s, c, u)| {
            [
                a.map_or(Value::Null, Value::I64),
                b.map_or(Value::Null, Value::F64),
                s.map_or(Value::Null, Value::Text),
                c.map_or(Value::Null, Value::I32),
                u.map_or(Value::Null, Value::U64),
            ]
        })
}

fn arith(op: ArithOp, a: Expr, b: Expr) -> Expr {
    Expr::Arith(op, Box::new(a), Box::new(b))
}

fn compare(op: CmpOp, a: Expr, b: Expr) -> Expr {
    Expr::Compare(op, Box::new(a), Box::new(b))
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    proptest::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge])
}

fn int_literal() -> impl Strategy<Value = Expr> {
    (-5i64..6).prop_map(|v| lit(Value::I64(v)))
}

/// i64 expressions: `id`, `a`, `c`, small literals, and + - * / % of them.
fn int_expr(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![Just(col("a")), Just(col("id")), Just(col("c")), int_literal()];
    if depth == 0 {
        return leaf.boxed();
    }
    let op = proptest::sample::select(vec![
        ArithOp::Add,
        ArithOp::Sub,
        ArithOp::Mul,
        ArithOp::Div,
        ArithOp::Mod,
    ]);
    let cond = (cmp_op(), int_expr(0), int_expr(0)).prop_map(|(op, a, b)| compare(op, a, b));
    let whens = proptest::collection::vec((cond, int_expr(depth - 1)), 1..3);
    let otherwise = proptest::option::of(int_expr(depth - 1).prop_map(Box::new));
    let args = proptest::collection::vec(int_expr(depth - 1), 2..4);
    let field = proptest::sample::select(TimeField::ALL.to_vec());
    let scale = proptest::sample::select(vec![3_600_000_000i64, 37 * 86_400_000_000, 400 * 86_400_000_000 + 7_000_000]);
    prop_oneof![
        6 => leaf,
        3 => (op, int_expr(depth - 1), int_expr(depth - 1)).prop_map(|(op, a, b)| arith(op, a, b)),
        1 => (whens, otherwise).prop_map(|(w, e)| Expr::Case(w, e)),
        1 => (any::<bool>(), args).prop_map(|(g, a)| Expr::Extreme(g, a)),
        1 => (field, int_expr(0), scale)
            .prop_map(|(f, a, k)| Expr::Extract(f, Box::new(arith(ArithOp::Mul, a, lit(Value::I64(k)))))),
    ]
    .boxed()
}

/// f64 expressions: `b`, quarter literals, and + - * / of floats with floats or i64.
fn float_expr(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![3 => Just(col("b")), 1 => (-16i64..16).prop_map(|q| lit(Value::F64(q as f64 / 4.0)))];
    if depth == 0 {
        return leaf.boxed();
    }
    let op = proptest::sample::select(vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div]);
    let other = prop_oneof![float_expr(depth - 1), int_expr(depth - 1)];
    let cond = (cmp_op(), float_expr(0), float_expr(0)).prop_map(|(op, a, b)| compare(op, a, b));
    let case = (cond, float_expr(depth - 1), float_expr(depth - 1))
        .prop_map(|(c, a, b)| Expr::Case(vec![(c, a)], Some(Box::new(b))));
    prop_oneof![
        4 => leaf,
        1 => case,
        1 => (op, float_expr(depth - 1), other, any::<bool>())
            .prop_map(|(op, f, o, flip)| if flip { arith(op, o, f) } else { arith(op, f, o) }),
    ]
    .boxed()
}

/// u64 expressions: `u`, literals, and `+` of two of them.
fn u_expr() -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![2 => Just(col("u")), 1 => (0u64..200).prop_map(|v| lit(Value::U64(v)))];
    prop_oneof![3 => leaf.clone(), 1 => (leaf.clone(), leaf).prop_map(|(a, b)| arith(ArithOp::Add, a, b))].boxed()
}

fn text_expr() -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![3 => Just(col("s")), 1 => text_value().prop_map(|t| lit(Value::Text(t)))];
    let cond = (cmp_op(), int_expr(0), int_expr(0)).prop_map(|(op, a, b)| compare(op, a, b));
    let branch = prop_oneof![Just(col("s")), text_value().prop_map(|t| lit(Value::Text(t))), Just(lit(Value::Null))];
    prop_oneof![
        6 => leaf.clone(),
        1 => (cond, branch.clone(), branch).prop_map(|(c, a, b)| Expr::Case(vec![(c, a)], Some(Box::new(b)))),
        1 => (any::<bool>(), leaf.clone(), leaf).prop_map(|(g, a, b)| Expr::Extreme(g, vec![a, b])),
    ]
    .boxed()
}

/// Any expression of any family.
fn any_expr() -> BoxedStrategy<Expr> {
    prop_oneof![int_expr(1), float_expr(1), u_expr(), text_expr(), Just(lit(Value::Null))].boxed()
}

/// A LIKE pattern: literal characters, `%`, `_` and escaped `%`, `_`, `\` or letters.
fn pattern() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => proptest::sample::select(vec!["a", "b", "A", "é"]).prop_map(String::from),
        2 => Just("%".to_string()),
        2 => Just("_".to_string()),
        1 => proptest::sample::select(vec!["\\%", "\\_", "\\\\", "\\a"]).prop_map(String::from),
    ];
    proptest::collection::vec(token, 0..5).prop_map(|tokens| tokens.concat())
}

fn with_null(values: Vec<Value>, null: bool) -> Vec<Value> {
    let mut values = values;
    if null {
        values.push(Value::Null);
    }
    values
}

/// Bool leaves: comparisons in every family, NULL tests, LIKE, IN, literals.
fn bool_leaf() -> BoxedStrategy<Expr> {
    let ints = proptest::collection::vec(-5i64..6, 1..4)
        .prop_map(|v| v.into_iter().map(Value::I64).collect());
    let texts = proptest::collection::vec(text_value(), 1..3)
        .prop_map(|v| v.into_iter().map(Value::Text).collect());
    prop_oneof![
        3 => (cmp_op(), int_expr(2), int_expr(2)).prop_map(|(op, a, b)| compare(op, a, b)),
        2 => (cmp_op(), float_expr(1), prop_oneof![float_expr(1), int_expr(1)]).prop_map(|(op, a, b)| compare(op, a, b)),
        1 => (cmp_op(), u_expr(), u_expr()).prop_map(|(op, a, b)| compare(op, a, b)),
        2 => (cmp_op(), text_expr(), text_expr()).prop_map(|(op, a, b)| compare(op, a, b)),
        1 => (cmp_op(), int_expr(1)).prop_map(|(op, a)| compare(op, a, lit(Value::Null))),
        1 => any_expr().prop_map(|e| e.is_null()),
        1 => any_expr().prop_map(|e| e.is_not_null()),
        3 => (text_expr(), pattern()).prop_map(|(e, p)| Expr::Like(Box::new(e), p)),
        2 => (int_expr(1), ints, proptest::bool::weighted(0.2)).prop_map(|(e, l, n)| e.in_list(with_null(l, n))),
        1 => (text_expr(), texts, proptest::bool::weighted(0.2)).prop_map(|(e, l, n)| e.in_list(with_null(l, n))),
        1 => prop_oneof![Just(Value::Bool(true)), Just(Value::Bool(false)), Just(Value::Null)].prop_map(lit),
    ]
    .boxed()
}

/// Bool expressions: leaves joined by AND, OR and NOT.
fn bool_expr(depth: u32) -> BoxedStrategy<Expr> {
    if depth == 0 {
        return bool_leaf();
    }
    prop_oneof![
        2 => bool_leaf(),
        1 => (bool_expr(depth - 1), bool_expr(depth - 1)).prop_map(|(a, b)| a.and(b)),
        1 => (bool_expr(depth - 1), bool_expr(depth - 1)).prop_map(|(a, b)| a.or(b)),
        1 => bool_expr(depth - 1).prop_map(|e| e.not()),
    ]
    .boxed()
}

fn output_expr() -> BoxedStrategy<Expr> {
    prop_oneof![
        2 => proptest::sample::select(vec!["id", "a", "b", "s", "c", "u"]).prop_map(col),
        2 => int_expr(2),
        2 => float_expr(2),
        1 => u_expr(),
        1 => text_expr(),
    ]
    .boxed()
}

fn aggregate() -> BoxedStrategy<(AggFn, Option<Expr>)> {
    let numeric = || prop_oneof![2 => int_expr(1), 2 => float_expr(1), 1 => u_expr()];
    prop_oneof![
        2 => Just((AggFn::Count, None)),
        1 => any_expr().prop_map(|e| (AggFn::Count, Some(e))),
        2 => numeric().prop_map(|e| (AggFn::Sum, Some(e))),
        2 => numeric().prop_map(|e| (AggFn::Avg, Some(e))),
        2 => prop_oneof![numeric(), text_expr()].prop_map(|e| (AggFn::Min, Some(e))),
        2 => prop_oneof![numeric(), text_expr()].prop_map(|e| (AggFn::Max, Some(e))),
    ]
    .boxed()
}

fn group_key() -> BoxedStrategy<Expr> {
    prop_oneof![
        3 => proptest::sample::select(vec!["a", "b", "s", "c", "u"]).prop_map(col),
        // SQLite reads a bare integer in GROUP BY as a result column number: no bare literals.
        1 => int_expr(1).prop_filter("a bare literal", |e| !matches!(e, Expr::Literal(_))),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
struct Case {
    rows: Vec<[Value; 5]>,
    partitions: usize,
    /// Added to the row number to place a row: partition (number + shift) % partitions.
    shift: usize,
    filter: Option<Expr>,
    output: Vec<Expr>,
    group_by: Vec<Expr>,
    aggregates: Vec<(AggFn, Option<Expr>)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(row(), 0..40),
        1usize..5,
        0usize..4,
        proptest::option::weighted(0.85, bool_expr(2)),
        proptest::collection::vec(output_expr(), 1..4),
        proptest::collection::vec(group_key(), 0..3),
        proptest::collection::vec(aggregate(), 1..4),
    )
        .prop_map(|(rows, partitions, shift, filter, output, group_by, aggregates)| Case {
            rows,
            partitions,
            shift,
            filter,
            output,
            group_by,
            aggregates,
        })
}

// ---- SQL text ----

fn sql_literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::I32(x) => format!("({x})"),
        Value::I64(x) | Value::Timestamp(x) => format!("({x})"),
        Value::U64(x) => format!("({x})"),
        Value::F64(x) => format!("({x:?})"),
        Value::Bool(x) => if *x { "TRUE" } else { "FALSE" }.into(),
        Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Value::Bytes(b) => {
            format!("X'{}'", b.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    }
}

fn sql(e: &Expr) -> String {
    match e {
        Expr::Column(name) => name.clone(),
        Expr::Literal(v) => sql_literal(v),
        Expr::Arith(op, a, b) => format!("({} {} {})", sql(a), op.symbol(), sql(b)),
        Expr::Compare(op, a, b) => format!("({} {} {})", sql(a), op.symbol(), sql(b)),
        Expr::IsNull(a) => format!("({} IS NULL)", sql(a)),
        Expr::IsNotNull(a) => format!("({} IS NOT NULL)", sql(a)),
        Expr::Like(a, p) => {
            format!("({} LIKE {} ESCAPE '\\')", sql(a), sql_literal(&Value::Text(p.clone())))
        }
        Expr::In(a, values) => {
            let list: Vec<String> = values.iter().map(sql_literal).collect();
            format!("({} IN ({}))", sql(a), list.join(", "))
        }
        Expr::And(a, b) => format!("({} AND {})", sql(a), sql(b)),
        Expr::Or(a, b) => format!("({} OR {})", sql(a), sql(b)),
        Expr::Not(a) => format!("(NOT {})", sql(a)),
        Expr::Case(whens, otherwise) => {
            let mut text = "(CASE".to_string();
            for (c, v) in whens {
                text += &format!(" WHEN {} THEN {}", sql(c), sql(v));
            }
            if let Some(e) = otherwise {
                text += &format!(" ELSE {}", sql(e));
            }
            text + " END)"
        }
        Expr::Extreme(greatest, args) => {
            let args: Vec<String> = args.iter().map(sql).collect();
            format!("{}({})", if *greatest { "max" } else { "min" }, args.join(", "))
        }
        Expr::Extract(field, a) => {
            // Whole seconds here (the generator scales to hours and days).
            let t = format!("(({}) / 1000000)", sql(a));
            let part = |f: &str| format!("CAST(strftime('{f}', {t}, 'unixepoch') AS INTEGER)");
            match field {
                TimeField::Year => part("%Y"),
                TimeField::Quarter => format!("(({} + 2) / 3)", part("%m")),
                TimeField::Month => part("%m"),
                TimeField::Day => part("%d"),
                TimeField::Hour => part("%H"),
                TimeField::Minute => part("%M"),
                TimeField::Second => part("%S"),
                TimeField::Microsecond => format!("(({}) % 1000000)", sql(a)),
            }
        }
        Expr::AddMonths(..) => unreachable!("the generator makes no month arithmetic"),
    }
}

fn select(query: &Query) -> String {
    let mut items: Vec<String> = query.output.iter().map(sql).collect();
    items.extend(query.group_by.iter().map(sql));
    for (func, arg) in &query.aggregates {
        items.push(format!("{}({})", func.name(), arg.as_ref().map_or("*".into(), sql)));
    }
    let mut text = format!("SELECT {} FROM t", items.join(", "));
    if let Some(filter) = &query.filter {
        text += &format!(" WHERE {}", sql(filter));
    }
    if !query.group_by.is_empty() {
        let keys: Vec<String> = query.group_by.iter().map(sql).collect();
        text += &format!(" GROUP BY {}", keys.join(", "));
    }
    text
}

// ---- results ----

/// A value as both sides can be compared: SQLite has integers, reals and text.
#[derive(Clone, Debug, PartialEq)]
enum Scalar {
    Null,
    Int(i128),
    Real(f64),
    Text(String),
}

fn ours(v: &Value) -> Scalar {
    match v {
        Value::Null => Scalar::Null,
        Value::I32(x) => Scalar::Int(i128::from(*x)),
        Value::I64(x) | Value::Timestamp(x) => Scalar::Int(i128::from(*x)),
        Value::U64(x) => Scalar::Int(i128::from(*x)),
        Value::F64(x) => Scalar::Real(*x),
        Value::Bool(x) => Scalar::Int(i128::from(*x)),
        Value::Text(t) => Scalar::Text(t.clone()),
        Value::Bytes(b) => Scalar::Text(String::from_utf8_lossy(b).into_owned()),
    }
}

fn theirs(v: ValueRef<'_>) -> Scalar {
    match v {
        ValueRef::Null => Scalar::Null,
        ValueRef::Integer(x) => Scalar::Int(i128::from(x)),
        ValueRef::Real(x) => Scalar::Real(x),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Scalar::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

fn same(a: &[Scalar], b: &[Scalar]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Scalar::Real(x), Scalar::Real(y)) => {
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            _ => x == y,
        })
}

/// Whether `a` and `b` are equal as multisets (rows matched greedily within the tolerance).
fn same_multiset(a: &[Vec<Scalar>], b: &[Vec<Scalar>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|row| {
        let found = (0..b.len()).find(|&i| !used[i] && same(row, &b[i]));
        found.map(|i| used[i] = true).is_some()
    })
}

/// What became of one query.
enum Compared {
    /// Both sides agreed; this many result rows.
    Agreed(usize),
    /// One side overflowed.
    Skipped,
}

/// Runs `query` over the case's rows with the program, in the case's partitions.
fn run_program(
    case: &Case,
    query: &Query,
    images: &[Vec<u8>],
) -> Result<Option<Vec<Vec<Value>>>, TestCaseError> {
    let t = table();
    let limits = ProgramLimits { max_registers: 255, ..ProgramLimits::default() };
    let program = compile_with(&t, query, &limits)
        .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
    let program = Program::decode(&program.encode(), &limits)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let verified =
        program.verify(&t, &limits).map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
    let mut out = Vec::new();
    let mut groups: Vec<_> = (0..case.partitions).map(|_| verified.groups(1000)).collect();
    for (i, image) in images.iter().enumerate() {
        match verified.apply(image, &mut out, &mut groups[(i + case.shift) % case.partitions]) {
            Ok(_) => {}
            Err(RunError::Overflow { .. }) => return Ok(None),
            Err(e) => return Err(TestCaseError::fail(format!("apply: {e}"))),
        }
    }
    if !verified.is_aggregate() {
        let rows = decode_tuples(&out, verified.output_arity())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        return Ok(Some(rows));
    }
    let mut merger = verified.merger();
    for g in &groups {
        match merger.merge(&g.encode()) {
            Ok(()) => {}
            Err(RunError::Overflow { .. }) => return Ok(None),
            Err(e) => return Err(TestCaseError::fail(format!("merge: {e}"))),
        }
    }
    let rows = merger.finish();
    prop_assert!(rows.iter().all(|r| r.len() == verified.output_arity()));
    Ok(Some(rows))
}

fn run_sqlite(db: &Connection, text: &str) -> Result<Option<Vec<Vec<Scalar>>>, TestCaseError> {
    let mut statement =
        db.prepare(text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    let columns = statement.column_count();
    let mut rows = statement.query([]).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    let mut out = Vec::new();
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let cells =
                    (0..columns).map(|i| row.get_ref(i).map(theirs)).collect::<Result<Vec<_>, _>>();
                out.push(cells.map_err(|e| TestCaseError::fail(e.to_string()))?);
            }
            Ok(None) => return Ok(Some(out)),
            Err(e) if e.to_string().contains("integer overflow") => return Ok(None),
            Err(e) => return Err(TestCaseError::fail(format!("{text}: {e}"))),
        }
    }
}

fn compare_query(
    case: &Case,
    query: &Query,
    db: &Connection,
    images: &[Vec<u8>],
) -> Result<Compared, TestCaseError> {
    let text = select(query);
    let (Some(ours_rows), Some(their_rows)) =
        (run_program(case, query, images)?, run_sqlite(db, &text)?)
    else {
        return Ok(Compared::Skipped);
    };
    let ours_rows: Vec<Vec<Scalar>> =
        ours_rows.iter().map(|r| r.iter().map(ours).collect()).collect();
    prop_assert!(
        same_multiset(&ours_rows, &their_rows),
        "{text}\nprogram: {ours_rows:?}\nsqlite:  {their_rows:?}\nrows: {:?}",
        case.rows
    );
    Ok(Compared::Agreed(ours_rows.len()))
}

fn load(case: &Case) -> Result<(Connection, Vec<Vec<u8>>), TestCaseError> {
    let fail = |e: rusqlite::Error| TestCaseError::fail(e.to_string());
    let db = Connection::open_in_memory().map_err(fail)?;
    db.execute_batch(
        "PRAGMA case_sensitive_like = ON;
         CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a INTEGER, b REAL, s TEXT, c INTEGER, u INTEGER);",
    )
    .map_err(fail)?;
    let t = table();
    let mut images = Vec::with_capacity(case.rows.len());
    for (id, values) in case.rows.iter().enumerate() {
        let mut row = vec![Value::I64(id as i64)];
        row.extend(values.iter().cloned());
        images.push(encode_row(&t, &row).map_err(|e| TestCaseError::fail(e.to_string()))?);
        let params: Vec<rusqlite::types::Value> = row
            .iter()
            .map(|v| match v {
                Value::I64(x) => rusqlite::types::Value::Integer(*x),
                Value::I32(x) => rusqlite::types::Value::Integer(i64::from(*x)),
                Value::U64(x) => rusqlite::types::Value::Integer(*x as i64),
                Value::F64(x) => rusqlite::types::Value::Real(*x),
                Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
                _ => rusqlite::types::Value::Null,
            })
            .collect();
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params_from_iter(params),
        )
        .map_err(fail)?;
    }
    Ok((db, images))
}

#[derive(Debug, Default)]
struct Tally {
    compared: Cell<usize>,
    skipped: Cell<usize>,
    rows_in: Cell<usize>,
    rows_out: Cell<usize>,
    groups: Cell<usize>,
}

fn bump(cell: &Cell<usize>, by: usize) {
    cell.set(cell.get() + by);
}

#[test]
fn programs_agree_with_sqlite() {
    let mut runner =
        TestRunner::new(Config { cases: 1000, failure_persistence: None, ..Config::default() });
    let tally = Tally::default();
    let result = runner.run(&case(), |case| {
        let (db, images) = load(&case)?;
        let projection =
            Query { filter: case.filter.clone(), output: case.output.clone(), ..Query::default() };
        let aggregation = Query {
            filter: case.filter.clone(),
            group_by: case.group_by.clone(),
            aggregates: case.aggregates.clone(),
            ..Query::default()
        };
        for (query, rows) in [(&projection, &tally.rows_out), (&aggregation, &tally.groups)] {
            match compare_query(&case, query, &db, &images)? {
                Compared::Agreed(n) => {
                    bump(&tally.compared, 1);
                    bump(rows, n);
                }
                Compared::Skipped => bump(&tally.skipped, 1),
            }
        }
        bump(&tally.rows_in, case.rows.len());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The comparison means something only if most queries ran and filters kept some rows and
    // dropped others.
    eprintln!("{tally:?}");
    let (compared, skipped) = (tally.compared.get(), tally.skipped.get());
    assert!(compared >= 1800, "only {compared} of 2000 queries compared ({skipped} skipped)");
    let (rows_in, rows_out) = (tally.rows_in.get(), tally.rows_out.get());
    assert!(
        rows_out > rows_in / 10 && rows_out < rows_in * 9 / 10,
        "filters kept {rows_out} of {rows_in} rows"
    );
    assert!(tally.groups.get() > 1000, "only {} groups", tally.groups.get());
}

#[test]
fn sqlite_likes_are_case_sensitive_here() {
    let db = Connection::open_in_memory().unwrap();
    db.execute_batch("PRAGMA case_sensitive_like = ON;").unwrap();
    let matches: i64 = db.query_row("SELECT 'A' LIKE 'a' ESCAPE '\\'", [], |r| r.get(0)).unwrap();
    assert_eq!(matches, 0);
    let matches: i64 = db.query_row("SELECT 'é' LIKE '_' ESCAPE '\\'", [], |r| r.get(0)).unwrap();
    assert_eq!(matches, 1);
}

/// Nested CASE and GREATEST compile in time polynomial in their depth (each branch's type is
/// probed once), and run to the right value.
#[test]
fn deeply_nested_case_and_greatest_compile_and_run() {
    let t = table();
    let mut e = col("a");
    for i in 0..45 {
        e = if i % 2 == 0 {
            Expr::Extreme(true, vec![e, lit(Value::I64(i))])
        } else {
            Expr::Case(vec![(col("a").is_null(), lit(Value::I64(-1)))], Some(Box::new(e)))
        };
    }
    let query = Query { output: vec![e], ..Query::default() };
    let limits = ProgramLimits { max_registers: 255, max_instructions: 60_000, ..ProgramLimits::default() };
    let program = compile_with(&t, &query, &limits).unwrap();
    let verified = program.verify(&t, &limits).unwrap();
    let mut out = Vec::new();
    let mut groups = verified.groups(1);
    let row = [Value::I64(1), Value::I64(7), Value::Null, Value::Null, Value::Null, Value::Null];
    verified.apply(&encode_row(&t, &row).unwrap(), &mut out, &mut groups).unwrap();
    assert_eq!(decode_tuples(&out, 1).unwrap(), vec![vec![Value::I64(44)]]);
}
