//! Aggregates: every function over NULLs and empty input, NULL groups, merging partial
//! states of several partitions (equal to one partition over all rows), the group limit,
//! overflow, the wire form's checks and its pieces.

use proptest::prelude::*;

use super::*;

use RegType::{Bytes as BYTES, Text as TEXT, F64 as F, I64 as I, U64 as U};

/// `SELECT keys..., aggregates... GROUP BY keys` with each register loaded from a column.
fn aggregating(
    loads: &[(RegType, u16)],
    group_by: Vec<u8>,
    aggregates: Vec<(AggFn, Option<u8>)>,
) -> Program {
    let mut code: Vec<Instr> = loads
        .iter()
        .enumerate()
        .map(|(r, &(_, column))| Instr::LoadColumn { dst: r as u8, column })
        .collect();
    code.push(Instr::Aggregate);
    Program {
        registers: loads.iter().map(|&(ty, _)| ty).collect(),
        code,
        group_by,
        aggregates: aggregates.into_iter().map(|(func, arg)| Aggregate { func, arg }).collect(),
        ..Program::default()
    }
}

/// Registers: 0 a (i64), 1 b (f64), 2 s (text), 3 u (u64), 4 y (bytes), 5 c (i64).
const LOADS: [(RegType, u16); 6] = [(I, A), (F, B), (TEXT, S), (U, U_COLUMN), (BYTES, Y), (I, C)];

/// Every function over every argument type it takes.
fn every_aggregate() -> Vec<(AggFn, Option<u8>)> {
    use AggFn::*;
    vec![
        (Count, None),
        (Count, Some(0)),
        (Sum, Some(0)),
        (Sum, Some(1)),
        (Sum, Some(3)),
        (Avg, Some(0)),
        (Avg, Some(1)),
        (Avg, Some(3)),
        (Min, Some(0)),
        (Max, Some(1)),
        (Min, Some(2)),
        (Max, Some(2)),
        (Min, Some(4)),
        (Max, Some(3)),
    ]
}

#[test]
fn every_function_over_values_and_nulls() {
    let rows = vec![full_row(1), null_row(2), full_row(4), full_row(3)];
    let result = run(aggregating(&LOADS, vec![], every_aggregate()), &rows).unwrap();
    let expected = vec![
        Value::I64(4),
        Value::I64(3),
        Value::I64(80),
        Value::F64(4.0),
        Value::U64(308),
        Value::F64(80.0 / 3.0),
        Value::F64(4.0 / 3.0),
        Value::F64(308.0 / 3.0),
        Value::I64(10),
        Value::F64(2.0),
        Value::Text("row 1".into()),
        Value::Text("row 4".into()),
        Value::Bytes(vec![1, 0xff]),
        Value::U64(104),
    ];
    assert_eq!(result, vec![expected]);
}

#[test]
fn no_rows_give_one_row_without_group_by_and_none_with() {
    let result = run(aggregating(&LOADS, vec![], every_aggregate()), &[]).unwrap();
    let mut expected = vec![Value::I64(0), Value::I64(0)];
    expected.extend(vec![Value::Null; 12]);
    assert_eq!(result, vec![expected.clone()]);
    // Only NULL arguments: the same but COUNT(*) counts the rows.
    let result =
        run(aggregating(&LOADS, vec![], every_aggregate()), &[null_row(1), null_row(2)]).unwrap();
    expected[0] = Value::I64(2);
    assert_eq!(result, vec![expected]);
    let result = run(aggregating(&LOADS, vec![2], every_aggregate()), &[]).unwrap();
    assert_eq!(result, Vec::<Vec<Value>>::new());
}

#[test]
fn null_is_its_own_group() {
    let program = aggregating(&LOADS, vec![2], vec![(AggFn::Count, None), (AggFn::Sum, Some(0))]);
    let mut rows = vec![full_row(1), null_row(2), null_row(3), full_row(1)];
    rows[3][0] = Value::I64(9);
    let mut result = run(program, &rows).unwrap();
    result.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        result,
        vec![
            vec![Value::Null, Value::I64(2), Value::Null],
            vec![Value::Text("row 1".into()), Value::I64(2), Value::I64(20)],
        ]
    );
}

#[test]
fn float_keys_group_zeroes_and_nans_together() {
    let program = aggregating(&LOADS, vec![1], vec![(AggFn::Count, None), (AggFn::Max, Some(1))]);
    let mut rows = Vec::new();
    for (id, b) in [(1, 0.0), (2, -0.0), (3, f64::NAN), (4, -f64::NAN), (5, 1.5)] {
        let mut row = null_row(id);
        row[B as usize] = Value::F64(b);
        rows.push(row);
    }
    let result = run(program, &rows).unwrap();
    assert_eq!(result.len(), 3, "{result:?}");
    let counts: Vec<&Value> = result.iter().map(|r| &r[1]).collect();
    assert_eq!(counts.iter().filter(|c| ***c == Value::I64(2)).count(), 2, "{result:?}");
    // MAX passes NaN over: the NaN group's MAX is NULL.
    assert!(
        result.iter().any(|r| matches!(r[0], Value::F64(k) if k.is_nan()) && r[2] == Value::Null),
        "{result:?}"
    );
}

#[test]
fn sums_that_overflow_are_errors() {
    let program = aggregating(&LOADS, vec![], vec![(AggFn::Sum, Some(0))]);
    let mut rows = vec![full_row(1), full_row(2)];
    rows[0][A as usize] = Value::I64(i64::MAX);
    assert_eq!(run(program.clone(), &rows), Err(RunError::Overflow { instruction: 6 }));
    // In two partitions the partial sums fit; their merge does not.
    assert_eq!(run_split(program, &rows, 2), Err(RunError::Overflow { instruction: 6 }));
    // AVG sums exactly in i128: no overflow, and the mean is right.
    let program = aggregating(&LOADS, vec![], vec![(AggFn::Avg, Some(0))]);
    rows[1][A as usize] = Value::I64(i64::MAX);
    assert_eq!(run_split(program, &rows, 2), Ok(vec![vec![Value::F64(i64::MAX as f64)]]));
}

#[test]
fn the_group_limit_holds_in_partitions_and_in_the_merger() {
    let t = table();
    let program = aggregating(&LOADS, vec![0], vec![(AggFn::Count, None)]);
    let verified =
        program.verify(&t, &ProgramLimits { max_groups: 4, ..ProgramLimits::default() }).unwrap();
    let mut groups = verified.groups(3);
    let mut out = Vec::new();
    for id in 1..=3 {
        let image = encode_row(&t, &full_row(id)).unwrap();
        assert_eq!(verified.apply(&image, &mut out, &mut groups), Ok(Outcome::Aggregate));
    }
    // An existing group still folds; a fourth does not fit.
    let image = encode_row(&t, &full_row(2)).unwrap();
    assert_eq!(verified.apply(&image, &mut out, &mut groups), Ok(Outcome::Aggregate));
    let image = encode_row(&t, &full_row(4)).unwrap();
    assert_eq!(
        verified.apply(&image, &mut out, &mut groups),
        Err(RunError::TooManyGroups { limit: 3 })
    );
    assert_eq!(groups.len(), 3);
    let mut other = verified.groups(3);
    for id in 4..=5 {
        let image = encode_row(&t, &full_row(id)).unwrap();
        verified.apply(&image, &mut out, &mut other).unwrap();
    }
    let mut merger = verified.merger();
    merger.merge(&groups.encode()).unwrap();
    assert_eq!(merger.len(), 3);
    assert_eq!(merger.merge(&other.encode()), Err(RunError::TooManyGroups { limit: 4 }));
    assert!(out.is_empty());
}

#[test]
#[should_panic(expected = "groups it made")]
fn groups_belong_to_their_program() {
    let t = table();
    let program = aggregating(&LOADS, vec![], vec![(AggFn::Count, None)]);
    let first = program.clone().verify(&t, &ProgramLimits::default()).unwrap();
    let second = program.verify(&t, &ProgramLimits::default()).unwrap();
    let mut groups = first.groups(10);
    let image = encode_row(&t, &full_row(1)).unwrap();
    let _ = second.apply(&image, &mut Vec::new(), &mut groups);
}

#[test]
fn partial_states_are_checked() {
    let t = table();
    let program = aggregating(&LOADS, vec![2], every_aggregate());
    let verified = program.verify(&t, &ProgramLimits::default()).unwrap();
    let mut groups = verified.groups(10);
    for row in [full_row(1), null_row(2), full_row(3)] {
        verified.apply(&encode_row(&t, &row).unwrap(), &mut Vec::new(), &mut groups).unwrap();
    }
    let bytes = groups.encode();
    let mut merger = verified.merger();
    for cut in 0..bytes.len() {
        let e = merger.merge(&bytes[..cut]);
        assert!(cut == 0 || matches!(e, Err(RunError::BadPartial(_))), "cut at {cut}: {e:?}");
    }
    // Four billion groups announced in a few bytes: refused before any is read.
    let mut huge = bytes.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = verified.merger().merge(&huge).unwrap_err();
    assert!(
        matches!(&e, RunError::BadPartial(m) if m.contains("4294967295 groups cannot fit")),
        "{e:?}"
    );
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(
        matches!(merger.merge(&extra), Err(RunError::BadPartial(m)) if m.contains("after the last group"))
    );
    // A partial of another shape (no keys, one aggregate).
    let other = aggregating(&LOADS, vec![], vec![(AggFn::Count, None)])
        .verify(&t, &ProgramLimits::default())
        .unwrap();
    let e = verified.merger().merge(&other.groups(1).encode()).unwrap_err();
    assert_eq!(e, RunError::BadPartial("0 keys and 1 aggregates, the program has 1 and 14".into()));
    // A key of the wrong type: text where the key is i64.
    let numbers = aggregating(&LOADS, vec![0], every_aggregate())
        .verify(&t, &ProgramLimits::default())
        .unwrap();
    let e = numbers.merger().merge(&bytes).unwrap_err();
    assert!(matches!(&e, RunError::BadPartial(m) if m.contains("text is not i64")), "{e:?}");
    merger.merge(&bytes).unwrap();
    assert_eq!(merger.finish().len(), 3);
}

proptest! {
    #[test]
    fn merged_partitions_equal_one_partition(
        keys in proptest::collection::vec((0i64..4, proptest::option::of(-50i64..50)), 0..40),
        partitions in 1usize..5,
        group_by in proptest::sample::select(vec![vec![], vec![0u8], vec![2u8], vec![0u8, 2u8]]),
    ) {
        let rows: Vec<Vec<Value>> = keys
            .iter()
            .enumerate()
            .map(|(i, &(k, a))| {
                let mut row = full_row(i as i64);
                row[A as usize] = a.map_or(Value::Null, Value::I64);
                row[S as usize] = if k == 0 { Value::Null } else { Value::Text(format!("k{k}")) };
                row[B as usize] = a.map_or(Value::Null, |a| Value::F64(a as f64 / 4.0));
                row
            })
            .collect();
        let program = aggregating(&LOADS, group_by, every_aggregate());
        let sort = |mut rows: Vec<Vec<Value>>| {
            rows.sort_by_key(|r| format!("{:?}", &r[..]));
            rows
        };
        let whole = sort(run(program.clone(), &rows).unwrap());
        let split = sort(run_split(program, &rows, partitions).unwrap());
        prop_assert_eq!(whole.len(), split.len());
        for (w, s) in whole.iter().zip(&split) {
            for (x, y) in w.iter().zip(s) {
                match (x, y) {
                    (Value::F64(x), Value::F64(y)) => prop_assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{x} {y}"),
                    _ => prop_assert_eq!(x, y),
                }
            }
        }
    }

    #[test]
    fn pieces_merge_to_the_whole(rows in 0i64..60, max_bytes in 1usize..300) {
        let t = table();
        let program = aggregating(&LOADS, vec![2], vec![(AggFn::Count, None), (AggFn::Max, Some(0))]);
        let verified = program.verify(&t, &ProgramLimits::default()).unwrap();
        let mut groups = verified.groups(1000);
        for id in 0..rows {
            let mut row = full_row(id);
            row[S as usize] = Value::Text(format!("group {}", id % 17));
            verified.apply(&encode_row(&t, &row).unwrap(), &mut Vec::new(), &mut groups).unwrap();
        }
        let pieces = groups.encode_chunks(max_bytes);
        prop_assert_eq!(pieces.iter().map(|(n, _)| *n as usize).sum::<usize>(), groups.len());
        let mut merger = verified.merger();
        for (count, bytes) in &pieces {
            prop_assert!(bytes.len() <= max_bytes || *count == 1, "{} bytes hold {count} groups", bytes.len());
            merger.merge(bytes).unwrap();
        }
        let mut whole = verified.merger();
        whole.merge(&groups.encode()).unwrap();
        let sort = |mut rows: Vec<Vec<Value>>| {
            rows.sort_by_key(|r| format!("{r:?}"));
            rows
        };
        prop_assert_eq!(sort(merger.finish()), sort(whole.finish()));
    }

    #[test]
    fn arbitrary_partials_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let t = table();
        let program = aggregating(&LOADS, vec![2, 0], every_aggregate());
        let verified = program.verify(&t, &ProgramLimits::default()).unwrap();
        let mut merger = verified.merger();
        let _ = merger.merge(&bytes);
        let mut framed = vec![1, 0, 0, 0, 2, 0, 14, 0];
        framed.extend_from_slice(&bytes);
        let _ = merger.merge(&framed);
        let _ = merger.finish();
    }
}
