//! The compiler: program layout, literal typing and promotion, NULL literals, IN with NULL,
//! register reuse, and errors that name the column or expression.

use super::*;

fn compiled(query: &Query) -> Program {
    match compile(&table(), query) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn error(query: &Query) -> String {
    compile(&table(), query).unwrap_err().to_string()
}

fn filter(e: Expr) -> Query {
    Query { filter: Some(e), output: vec![col("id")], ..Query::default() }
}

fn i(v: i64) -> Expr {
    lit(Value::I64(v))
}

/// The ids of `rows` (ids 1..=6 of `full_row`, plus 7 and 8 as `null_row`) the filter keeps.
fn ids(e: Expr) -> Vec<i64> {
    let mut rows: Vec<Vec<Value>> = (1..=6).map(full_row).collect();
    rows.push(null_row(7));
    rows.push(null_row(8));
    run(compiled(&filter(e)), &rows)
        .unwrap()
        .into_iter()
        .map(|r| match r[0] {
            Value::I64(id) => id,
            ref v => panic!("id {v:?}"),
        })
        .collect()
}

#[test]
fn a_filter_jumps_to_the_final_skip() {
    let program = compiled(&filter(col("a").gt(i(25))));
    let last = program.code.len() - 1;
    assert_eq!(program.code[last], Instr::Skip);
    assert_eq!(program.code[last - 1], Instr::Return);
    assert!(
        program.code.contains(&Instr::JumpIfNotTrue { cond: 2, target: last as u16 }),
        "{:?}",
        program.code
    );
    assert_eq!(program.output, vec![Output::Column(ID)]);
    let everything = compiled(&Query::default());
    assert_eq!(everything.code, vec![Instr::Return]);
    assert_eq!(everything.output, (0..9).map(Output::Column).collect::<Vec<_>>());
    assert_eq!(run(everything, &[full_row(3)]).unwrap(), vec![full_row(3)]);
}

#[test]
fn filters_select_rows() {
    assert_eq!(ids(col("a").gt(i(25))), vec![3, 4, 5, 6]);
    assert_eq!(ids(col("a").gt(i(25)).and(col("c").ge(i(-4)))), vec![3, 4]);
    assert_eq!(ids(col("a").lt(i(15)).or(col("a").is_null())), vec![1, 7, 8]);
    assert_eq!(ids(col("a").lt(i(15)).not()), vec![2, 3, 4, 5, 6]);
    assert_eq!(ids(col("s").like("row _")), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(ids(col("s").like("%3")), vec![3]);
    assert_eq!(ids(col("y").like("\u{2}%")), vec![2]);
    assert_eq!(ids(col("t")), vec![2, 4, 6]);
    assert_eq!(ids(col("a").rem(i(20)).eq(i(0))), vec![2, 4, 6]);
    assert_eq!(ids(col("a").div(i(0)).is_null()), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(ids(col("ts").ge(lit(Value::Timestamp(5_000_000)))), vec![5, 6]);
    assert_eq!(ids(col("id").mul(i(10)).eq(col("a"))), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(ids(col("s").eq(lit(Value::Text("row 2".into())))), vec![2]);
}

#[test]
fn literals_take_the_other_sides_type() {
    // u64 against a non-negative integer literal; f64 against an integer literal.
    assert_eq!(ids(col("u").ge(i(105))), vec![5, 6]);
    assert_eq!(ids(i(105).le(col("u"))), vec![5, 6]);
    assert_eq!(ids(col("b").eq(i(2))), vec![4]);
    // An i64 column against a fraction: the column is converted.
    assert_eq!(ids(col("a").lt(lit(Value::F64(20.5)))), vec![1, 2]);
    assert_eq!(ids(col("c").add(lit(Value::F64(0.5))).lt(lit(Value::F64(-4.0)))), vec![5, 6]);
    // Bytes against text.
    assert_eq!(ids(col("y").eq(lit(Value::Text("\u{3}\u{7f}".into())))), Vec::<i64>::new());
    let program = compiled(&filter(col("u").ge(i(105))));
    assert!(
        program.constants.contains(&Constant::Value(Value::U64(105))),
        "{:?}",
        program.constants
    );
    let program = compiled(&filter(col("b").eq(i(2))));
    assert!(
        program.constants.contains(&Constant::Value(Value::F64(2.0))),
        "{:?}",
        program.constants
    );
    let program = compiled(&filter(col("y").eq(lit(Value::Text("ab".into())))));
    assert!(program.constants.contains(&Constant::Value(Value::Bytes(b"ab".to_vec()))));
}

#[test]
fn null_literals_make_null() {
    let null = || lit(Value::Null);
    assert_eq!(ids(col("a").eq(null())), Vec::<i64>::new());
    assert_eq!(ids(null().ne(col("s"))), Vec::<i64>::new());
    assert_eq!(ids(col("a").eq(null()).is_null()), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(ids(null().eq(null()).is_null()), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(ids(col("a").add(null()).is_null()), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(ids(null().or(col("t"))), vec![2, 4, 6]);
    // NOT (NULL AND t): NULL where t is true, true where t is false.
    assert_eq!(ids(null().and(col("t")).not()), vec![1, 3, 5]);
}

#[test]
fn in_lists_with_null_are_three_valued() {
    let list = vec![Value::I64(20), Value::I64(40)];
    assert_eq!(ids(col("a").in_list(list.clone())), vec![2, 4]);
    assert_eq!(ids(col("a").in_list(list.clone()).not()), vec![1, 3, 5, 6]);
    let with_null = vec![Value::I64(20), Value::Null];
    assert_eq!(ids(col("a").in_list(with_null.clone())), vec![2]);
    // NOT (a IN (20, NULL)) is never true: NULL for every a but 20.
    assert_eq!(ids(col("a").in_list(with_null).not()), Vec::<i64>::new());
    assert_eq!(ids(col("a").in_list(vec![Value::Null]).is_null()), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(ids(col("a").in_list(vec![]).not()), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(ids(col("s").in_list(vec![Value::Text("row 5".into())])), vec![5]);
    assert_eq!(ids(col("b").in_list(vec![Value::I64(1), Value::F64(1.5)])), vec![2, 3]);
}

#[test]
fn outputs_and_aggregates() {
    let query = Query {
        filter: Some(col("id").le(i(3))),
        output: vec![
            col("c"),
            col("a").add(col("id")),
            col("b").mul(i(2)),
            lit(Value::Text("k".into())),
        ],
        ..Query::default()
    };
    let rows =
        run(compiled(&query), &[full_row(1), full_row(3), full_row(5), null_row(2)]).unwrap();
    let k = Value::Text("k".into());
    assert_eq!(
        rows,
        vec![
            vec![Value::I32(-1), Value::I64(11), Value::F64(1.0), k.clone()],
            vec![Value::I32(-3), Value::I64(33), Value::F64(3.0), k.clone()],
            vec![Value::Null, Value::Null, Value::Null, k],
        ]
    );
    let query = Query {
        filter: Some(col("id").ne(i(2))),
        group_by: vec![col("t"), col("id").rem(i(3))],
        aggregates: vec![
            (AggFn::Count, None),
            (AggFn::Sum, Some(col("a").mul(i(2)))),
            (AggFn::Max, Some(col("s"))),
        ],
        ..Query::default()
    };
    let program = compiled(&query);
    assert_eq!(program.code.last(), Some(&Instr::Skip));
    let mut rows = run_split(program, &(1..=6).map(full_row).collect::<Vec<_>>(), 3).unwrap();
    rows.sort_by_key(|r| format!("{r:?}"));
    let row = |t: bool, k: i64, count: i64, sum: i64, max: &str| {
        vec![
            Value::Bool(t),
            Value::I64(k),
            Value::I64(count),
            Value::I64(sum),
            Value::Text(max.into()),
        ]
    };
    assert_eq!(
        rows,
        vec![
            row(false, 0, 1, 60, "row 3"),
            row(false, 1, 1, 20, "row 1"),
            row(false, 2, 1, 100, "row 5"),
            row(true, 0, 1, 120, "row 6"),
            row(true, 1, 1, 80, "row 4")
        ]
    );
}

#[test]
fn column_registers_become_their_columns() {
    let query = Query {
        filter: Some(col("a").gt(i(10)).and(col("c").lt(i(50)))),
        group_by: vec![col("s")],
        aggregates: vec![
            (AggFn::Count, None),
            (AggFn::Sum, Some(col("a"))),
            (AggFn::Max, Some(col("u"))),
        ],
        ..Query::default()
    };
    let program = compiled(&query);
    let loads = program.code.iter().filter(|i| matches!(i, Instr::LoadColumn { .. })).count();
    assert_eq!(loads, 4);
    let t = table();
    let plain = program.clone().verify_with(&t, &ProgramLimits::default(), false).unwrap();
    let optimized = program.clone().verify_with(&t, &ProgramLimits::default(), true).unwrap();
    assert_eq!(optimized.ops.len(), plain.ops.len() - loads);
    assert!(optimized.ops.iter().all(|op| !matches!(op, crate::program::run::Op::Copy { .. })));
    assert!(optimized.slots < plain.slots, "{} slots, {} before", optimized.slots, plain.slots);
    // The walk stops at `u` (column 5); nothing after it is read.
    assert_eq!(optimized.steps.len(), 6);
    let rows: Vec<Vec<Value>> = (1..=6).map(full_row).collect();
    let mut a = run_split(program.clone(), &rows, 2).unwrap();
    a.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(a.len(), 5);
    assert_eq!(
        a[0],
        vec![Value::Text("row 2".into()), Value::I64(1), Value::I64(20), Value::U64(102)]
    );
}

#[test]
fn overflow_names_the_instruction_after_loads_are_removed() {
    let query = Query { output: vec![col("a").mul(col("id"))], ..Query::default() };
    let program = compiled(&query);
    let arith = program.code.iter().position(|i| matches!(i, Instr::Arith { .. })).unwrap();
    assert_eq!(arith, 2);
    let mut row = full_row(3);
    row[A as usize] = Value::I64(i64::MAX);
    assert_eq!(run(program, &[row]), Err(RunError::Overflow { instruction: 2 }));
}

#[test]
fn registers_are_reused() {
    // Twenty comparisons joined by AND: far more subexpressions than the 32 registers.
    let mut e = col("a").gt(i(0));
    for k in 1..20 {
        e = e.and(col("a").add(i(k)).gt(col("id").mul(i(k))));
    }
    let program = compiled(&filter(e));
    assert!(program.registers.len() <= 8, "{} registers", program.registers.len());
    assert_eq!(run(program, &[full_row(1), full_row(2)]).unwrap().len(), 2);
}

#[test]
fn errors_name_what_is_wrong() {
    assert_eq!(error(&filter(col("nope").eq(i(1)))), "unknown column \"nope\" in table \"things\"");
    assert_eq!(error(&filter(col("a").like("x%"))), "LIKE needs text, column \"a\" is i64");
    assert_eq!(error(&filter(col("c").add(i(1)).like("x%"))), "LIKE needs text, `(c + 1)` is i64");
    assert_eq!(
        error(&filter(col("s").like("x\\"))),
        "pattern \"x\\\\\" ends with a lone escape '\\'"
    );
    let e = error(&filter(col("a").eq(col("u"))));
    assert_eq!(e, "`=` cannot mix i64 and u64 exactly in `(a = u)`: column \"a\" is i64 and column \"u\" is u64");
    assert!(error(&filter(col("u").gt(i(-1)))).contains("cannot mix i64 and u64"));
    let e = error(&filter(col("s").lt(i(3))));
    assert_eq!(e, "`<` needs operands of one type in `(s < 3)`: column \"s\" is varchar(40) and literal 3 is i64");
    assert_eq!(error(&filter(col("b").rem(i(2)).eq(i(0)))), "`%` needs integers, `(b % 2)` is f64");
    assert_eq!(
        error(&filter(col("s").add(col("s")))),
        "`+` needs numbers, column \"s\" is varchar(40)"
    );
    assert_eq!(error(&filter(col("a"))), "a filter needs bool, column \"a\" is i64");
    assert_eq!(
        error(&filter(col("a").and(col("t")))),
        "AND, OR and NOT need bool, column \"a\" is i64"
    );
    let e = error(&filter(col("a").in_list(vec![Value::Text("x".into())])));
    assert_eq!(e, "IN list value \"x\" (text) does not fit: column \"a\" is i64");
    let sum_text = Query { aggregates: vec![(AggFn::Sum, Some(col("s")))], ..Query::default() };
    assert_eq!(error(&sum_text), "SUM needs a number, column \"s\" is varchar(40)");
    let avg_star = Query { aggregates: vec![(AggFn::Avg, None)], ..Query::default() };
    assert_eq!(error(&avg_star), "AVG needs an argument");
    let both = Query {
        output: vec![col("a")],
        aggregates: vec![(AggFn::Count, None)],
        ..Query::default()
    };
    assert!(error(&both).contains("not both"));
    let keys_only = Query { group_by: vec![col("a")], ..Query::default() };
    assert_eq!(error(&keys_only), "GROUP BY needs at least one aggregate");
    // Each left operand stays live while the right one is computed: 40 at once.
    let mut deep = col("a");
    for k in 0..40 {
        deep = col("a").add(i(k)).mul(deep);
    }
    let e = compile(&table(), &filter(deep.gt(i(0)))).unwrap_err();
    assert_eq!(e, CompileError::OutOfRegisters { limit: 32 });
    let tight = ProgramLimits { max_registers: 4, ..ProgramLimits::default() };
    let e =
        compile_with(&table(), &filter(col("a").add(col("id")).gt(col("c").mul(col("u")))), &tight)
            .unwrap_err();
    assert_eq!(e, CompileError::OutOfRegisters { limit: 4 });
}

#[test]
fn builder_operators_match_methods() {
    assert_eq!(col("a") + i(1), col("a").add(i(1)));
    assert_eq!(col("a") - i(1), col("a").sub(i(1)));
    assert_eq!(col("a") * i(1), col("a").mul(i(1)));
    assert_eq!(col("a") / i(1), col("a").div(i(1)));
    assert_eq!(col("a") % i(1), col("a").rem(i(1)));
    assert_eq!(!col("t"), col("t").not());
    assert_eq!(col("a").is_not_null().to_string(), "(a IS NOT NULL)");
    let e = col("s").like("it's").or(col("s").in_list(vec![Value::Text("x".into()), Value::Null]));
    assert_eq!(e.to_string(), "((s LIKE 'it''s') OR (s IN ('x', NULL)))");
}
