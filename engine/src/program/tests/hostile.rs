//! Hostile and random programs: decoding and verifying arbitrary bytes, mutated encodings of
//! valid programs and random instruction sequences never panics, and whatever verifies runs
//! on rows (also with NULLs) without panicking. Encodings round-trip.

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;

use RegType::{Bool as BOOL, I64 as I};

/// Valid programs of every shape, as bytes to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let t = table();
    let queries = [
        Query::default(),
        Query {
            filter: Some(
                col("a").gt(lit(Value::I64(3))).and(col("s").like("row%")).or(col("b").is_null()),
            ),
            output: vec![col("id"), col("a").add(col("c")), col("b").mul(col("a"))],
            ..Query::default()
        },
        Query {
            filter: Some(col("c").in_list(vec![Value::I64(1), Value::Null]).not()),
            group_by: vec![col("t"), col("s")],
            aggregates: vec![
                (AggFn::Count, None),
                (AggFn::Sum, Some(col("a"))),
                (AggFn::Avg, Some(col("u"))),
                (AggFn::Min, Some(col("y"))),
                (AggFn::Max, Some(col("b"))),
            ],
            ..Query::default()
        },
    ];
    queries.iter().map(|q| compile(&t, q).unwrap().encode()).collect()
}

/// Decodes and verifies `bytes`; when they verify, runs them over a few rows. Never panics.
fn exercise(bytes: &[u8]) {
    let t = table();
    let limits = ProgramLimits::default();
    let Ok(program) = Program::decode(bytes, &limits) else { return };
    assert_eq!(program.encode(), bytes, "a decoded program encodes to its bytes");
    let Ok(verified) = program.verify(&t, &limits) else { return };
    let mut groups = verified.groups(16);
    let mut out = Vec::new();
    for row in [full_row(1), null_row(2), full_row(-3), full_row(0)] {
        let image = encode_row(&t, &row).unwrap();
        let _ = verified.apply(&image, &mut out, &mut groups);
    }
    if verified.is_aggregate() {
        let mut merger = verified.merger();
        merger.merge(&groups.encode()).unwrap();
        let arity = verified.output_arity();
        assert!(merger.finish().iter().all(|r| r.len() == arity));
    } else {
        let tuples = decode_tuples(&out, verified.output_arity()).unwrap();
        assert!(tuples.len() <= 4);
    }
}

/// Everything a run shows: each row's outcome or error, the returned bytes, the merged
/// aggregate rows (sorted).
fn observe(
    verified: &Verified,
    rows: &[Vec<Value>],
) -> (Vec<Result<Outcome, RunError>>, Vec<u8>, String) {
    let t = table();
    let mut groups = verified.groups(1000);
    let mut out = Vec::new();
    let outcomes = rows
        .iter()
        .map(|row| verified.apply(&encode_row(&t, row).unwrap(), &mut out, &mut groups))
        .collect();
    let mut merger = verified.merger();
    let merged = match merger.merge(&groups.encode()) {
        Ok(()) => {
            let mut rows: Vec<String> = merger.finish().iter().map(|r| format!("{r:?}")).collect();
            rows.sort();
            rows.join("\n")
        }
        Err(e) => e.to_string(),
    };
    (outcomes, out, merged)
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply_mutation(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match *m {
        Mutation::Set(at, b) if !bytes.is_empty() => bytes[at % len] = b,
        Mutation::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
        Mutation::Remove(at) if !bytes.is_empty() => {
            bytes.remove(at % len);
        }
        Mutation::Truncate(at) => bytes.truncate(at % len),
        _ => {}
    }
}

/// Instructions over registers 0..6 (types below), columns 0..10, constants 0..4, targets 0..8.
fn instr() -> impl Strategy<Value = Instr> {
    let r = || 0u8..6;
    prop_oneof![
        (r(), 0u16..10).prop_map(|(dst, column)| Instr::LoadColumn { dst, column }),
        (r(), 0u16..4).prop_map(|(dst, constant)| Instr::LoadConst { dst, constant }),
        (0usize..5, r(), r(), r()).prop_map(|(op, dst, a, b)| Instr::Arith {
            op: [ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div, ArithOp::Mod][op],
            dst,
            a,
            b
        }),
        (r(), r()).prop_map(|(dst, a)| Instr::ToF64 { dst, a }),
        (0usize..6, r(), r(), r()).prop_map(|(op, dst, a, b)| Instr::Compare {
            op: [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge][op],
            dst,
            a,
            b
        }),
        (r(), r()).prop_map(|(dst, a)| Instr::IsNull { dst, a }),
        (r(), r(), 0u16..4).prop_map(|(dst, a, pattern)| Instr::Like { dst, a, pattern }),
        (r(), r(), 0u16..4).prop_map(|(dst, a, list)| Instr::In { dst, a, list }),
        (r(), r(), r()).prop_map(|(dst, a, b)| Instr::And { dst, a, b }),
        (r(), r(), r()).prop_map(|(dst, a, b)| Instr::Or { dst, a, b }),
        (r(), r()).prop_map(|(dst, a)| Instr::Not { dst, a }),
        (0u16..8).prop_map(|target| Instr::Jump { target }),
        (r(), 0u16..8).prop_map(|(cond, target)| Instr::JumpIfNotTrue { cond, target }),
        (r(), 0u16..8).prop_map(|(cond, target)| Instr::JumpIfTrue { cond, target }),
        Just(Instr::Skip),
        Just(Instr::Return),
        Just(Instr::Aggregate),
    ]
}

/// Random programs over registers i64, i64, bool, bool, f64, text: many are refused, some verify.
fn random_program() -> impl Strategy<Value = Program> {
    let aggregate = (0usize..5, proptest::option::of(0u8..7)).prop_map(|(f, arg)| Aggregate {
        func: [AggFn::Count, AggFn::Sum, AggFn::Min, AggFn::Max, AggFn::Avg][f],
        arg,
    });
    (
        proptest::collection::vec(instr(), 0..8),
        prop_oneof![Just(Instr::Return), Just(Instr::Aggregate), Just(Instr::Skip)],
        proptest::collection::vec(
            (any::<bool>(), 0u16..10).prop_map(|(column, i)| {
                if column {
                    Output::Column(i)
                } else {
                    Output::Register(i as u8)
                }
            }),
            0..3,
        ),
        proptest::collection::vec(0u8..7, 0..2),
        proptest::collection::vec(aggregate, 0..3),
    )
        .prop_map(|(mut code, last, output, group_by, aggregates)| {
            code.push(last);
            Program {
                registers: vec![I, I, BOOL, BOOL, RegType::F64, RegType::Text],
                constants: vec![
                    Constant::Value(Value::I64(3)),
                    Constant::Value(Value::Text("r%".into())),
                    Constant::List(vec![Value::I64(10), Value::I64(-3)]),
                    Constant::Value(Value::Bool(true)),
                ],
                code,
                output,
                group_by,
                aggregates,
            }
        })
}

/// Registers of [`typed_program`]: 0 and 1 i64, 2 and 3 bool, 4 f64, 5 text, 6 u64.
const TYPED_REGISTERS: [RegType; 7] = [I, I, BOOL, BOOL, RegType::F64, RegType::Text, RegType::U64];

/// Instructions whose operands mostly have the right types, so that most programs verify and
/// the interpreter runs random code (jump targets are fixed up to go forward).
fn typed_instr() -> impl Strategy<Value = Instr> {
    let int = || 0u8..2;
    let boolean = || 2u8..4;
    let any_register = || 0u8..7;
    let arith = proptest::sample::select(vec![
        ArithOp::Add,
        ArithOp::Sub,
        ArithOp::Mul,
        ArithOp::Div,
        ArithOp::Mod,
    ]);
    let cmp = proptest::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ]);
    let same_type_pair = prop_oneof![
        (int(), int()),
        (boolean(), boolean()),
        Just((4u8, 4u8)),
        Just((5u8, 5u8)),
        Just((6u8, 6u8)),
    ];
    prop_oneof![
        (int(), proptest::sample::select(vec![ID, A, C, TS]))
            .prop_map(|(dst, column)| Instr::LoadColumn { dst, column }),
        boolean().prop_map(|dst| Instr::LoadColumn { dst, column: T }),
        Just(Instr::LoadColumn { dst: 4, column: B }),
        Just(Instr::LoadColumn { dst: 5, column: S }),
        Just(Instr::LoadColumn { dst: 6, column: U_COLUMN }),
        int().prop_map(|dst| Instr::LoadConst { dst, constant: 0 }),
        boolean().prop_map(|dst| Instr::LoadConst { dst, constant: 3 }),
        Just(Instr::LoadConst { dst: 5, constant: 1 }),
        (arith.clone(), int(), int(), int()).prop_map(|(op, dst, a, b)| Instr::Arith {
            op,
            dst,
            a,
            b
        }),
        arith.prop_map(|op| Instr::Arith { op, dst: 6, a: 6, b: 6 }),
        int().prop_map(|a| Instr::ToF64 { dst: 4, a }),
        Just(Instr::Arith { op: ArithOp::Div, dst: 4, a: 4, b: 4 }),
        (cmp, boolean(), same_type_pair).prop_map(|(op, dst, (a, b))| Instr::Compare {
            op,
            dst,
            a,
            b
        }),
        (boolean(), any_register()).prop_map(|(dst, a)| Instr::IsNull { dst, a }),
        (boolean(), any_register()).prop_map(|(dst, a)| Instr::IsNotNull { dst, a }),
        boolean().prop_map(|dst| Instr::Like { dst, a: 5, pattern: 1 }),
        (boolean(), int()).prop_map(|(dst, a)| Instr::In { dst, a, list: 2 }),
        (boolean(), boolean(), boolean()).prop_map(|(dst, a, b)| Instr::And { dst, a, b }),
        (boolean(), boolean(), boolean()).prop_map(|(dst, a, b)| Instr::Or { dst, a, b }),
        (boolean(), boolean()).prop_map(|(dst, a)| Instr::Not { dst, a }),
        any::<u16>().prop_map(|target| Instr::Jump { target }),
        (boolean(), any::<u16>()).prop_map(|(cond, target)| Instr::JumpIfTrue { cond, target }),
        (boolean(), any::<u16>()).prop_map(|(cond, target)| Instr::JumpIfNotTrue { cond, target }),
        Just(Instr::Skip),
    ]
}

/// Random, mostly well-typed programs that return registers or aggregate them.
fn typed_program() -> impl Strategy<Value = Program> {
    let aggregate = prop_oneof![
        Just(Aggregate { func: AggFn::Count, arg: None }),
        (0u8..7).prop_map(|r| Aggregate { func: AggFn::Count, arg: Some(r) }),
        proptest::sample::select(vec![0u8, 1, 4, 6])
            .prop_map(|r| Aggregate { func: AggFn::Sum, arg: Some(r) }),
        proptest::sample::select(vec![0u8, 1, 4, 6])
            .prop_map(|r| Aggregate { func: AggFn::Avg, arg: Some(r) }),
        (0u8..7).prop_map(|r| Aggregate { func: AggFn::Min, arg: Some(r) }),
        (0u8..7).prop_map(|r| Aggregate { func: AggFn::Max, arg: Some(r) }),
    ];
    (
        proptest::collection::vec(typed_instr(), 0..16),
        any::<bool>(),
        proptest::collection::vec(0u8..7, 1..4),
        proptest::collection::vec(0u8..7, 0..3),
        proptest::collection::vec(aggregate, 1..4),
    )
        .prop_map(|(mut code, aggregating, outputs, group_by, aggregates)| {
            code.push(if aggregating { Instr::Aggregate } else { Instr::Return });
            let count = code.len();
            for (at, instr) in code.iter_mut().enumerate() {
                if let Instr::Jump { target }
                | Instr::JumpIfTrue { target, .. }
                | Instr::JumpIfNotTrue { target, .. } = instr
                {
                    *target = (at + 1 + usize::from(*target) % (count - at - 1).max(1)) as u16;
                }
            }
            let mut program = Program {
                registers: TYPED_REGISTERS.to_vec(),
                constants: vec![
                    Constant::Value(Value::I64(3)),
                    Constant::Value(Value::Text("r%".into())),
                    Constant::List(vec![Value::I64(10), Value::I64(-3)]),
                    Constant::Value(Value::Bool(true)),
                ],
                code,
                ..Program::default()
            };
            if aggregating {
                program.group_by = group_by;
                program.aggregates = aggregates;
            } else {
                program.output = outputs.into_iter().map(Output::Register).collect();
            }
            program
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        exercise(&bytes);
        let mut framed = b"BWPG\x01".to_vec();
        framed.extend_from_slice(&bytes);
        exercise(&framed);
    }

    #[test]
    fn mutated_valid_programs_never_panic(seed in 0usize..3, mutations in proptest::collection::vec(mutation(), 1..4)) {
        let mut bytes = seeds().swap_remove(seed);
        for m in &mutations {
            apply_mutation(&mut bytes, m);
        }
        exercise(&bytes);
    }

    #[test]
    fn random_programs_round_trip_and_never_panic(program in random_program()) {
        let bytes = program.encode();
        let back = Program::decode(&bytes, &ProgramLimits::default()).unwrap();
        prop_assert_eq!(&back, &program);
        exercise(&bytes);
    }
    #[test]
    fn typed_random_programs_run_without_panicking(program in typed_program()) {
        exercise(&program.encode());
    }

    #[test]
    fn the_optimisation_changes_no_result(program in typed_program(), ids in proptest::collection::vec(-4i64..8, 1..12)) {
        let t = table();
        let limits = ProgramLimits::default();
        let (Ok(plain), Ok(optimized)) = (
            program.clone().verify_with(&t, &limits, false),
            program.verify_with(&t, &limits, true),
        ) else {
            return Ok(());
        };
        prop_assert!(optimized.ops.len() <= plain.ops.len() && optimized.slots <= plain.slots);
        let rows: Vec<Vec<Value>> = ids.iter().map(|&id| if id % 3 == 0 { null_row(id) } else { full_row(id) }).collect();
        prop_assert_eq!(observe(&plain, &rows), observe(&optimized, &rows));
    }
}

#[test]
fn random_programs_get_past_the_verifier() {
    // The random strategies are only useful if part of them gets past the verifier: some of
    // the untyped ones, most of the typed ones.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let t = table();
    let mut verified = |strategy: &dyn Fn(&mut proptest::test_runner::TestRunner) -> Program| {
        (0..3000)
            .filter(|_| strategy(&mut runner).verify(&t, &ProgramLimits::default()).is_ok())
            .count()
    };
    let untyped = verified(&|runner| random_program().new_tree(runner).unwrap().current());
    assert!(untyped > 30, "only {untyped} of 3000 random programs verified");
    let typed = verified(&|runner| typed_program().new_tree(runner).unwrap().current());
    assert!(typed > 2000, "only {typed} of 3000 typed random programs verified");
}

#[test]
fn hostile_encodings_are_refused_with_reasons() {
    let limits = ProgramLimits::default();
    let decode = |bytes: &[u8]| Program::decode(bytes, &limits).unwrap_err().to_string();
    assert_eq!(
        decode(b"XXXX\x01"),
        "malformed program at byte 0: does not start with the magic \"BWPG\""
    );
    assert_eq!(
        decode(b"BWPG\x02"),
        "malformed program at byte 4: format version 2 (this reader knows 1)"
    );
    assert_eq!(decode(b"BWPG\x01\x21\0\0\0"), "program has 33 registers (limit 32)");
    assert_eq!(
        decode(b"BWPG\x01\x02\0\0\0\0"),
        "malformed program at byte 5: 2 registers cannot fit in the 1 bytes left"
    );
    // A billion constants announced in a few bytes: refused before anything is reserved.
    let e = decode(b"BWPG\x01\0\0\0\0\0\xca\x9a\x3b\0\0");
    assert!(e.contains("1000000000 constants cannot fit"), "{e}");
    // A text constant claiming 4 GiB.
    let e = decode(b"BWPG\x01\0\0\0\0\x01\0\0\0\0\x07\xff\xff\xff\xff");
    assert!(e.contains("constant value") && e.contains("ends early"), "{e}");
    let too_big = vec![0u8; 70_000];
    assert_eq!(decode(&too_big), "program is 70000 bytes (limit 65536)");
    let mut bytes = seeds().swap_remove(1);
    bytes.push(0);
    assert!(decode(&bytes).contains("1 bytes after the program"));
    let program = Program { code: vec![Instr::Skip; 5000], ..Program::default() };
    assert_eq!(decode(&program.encode()), "program has 5000 instructions (limit 4096)");
}

#[test]
fn seeds_round_trip_and_verify() {
    let t = table();
    for bytes in seeds() {
        let program = Program::decode(&bytes, &ProgramLimits::default()).unwrap();
        assert_eq!(program.encode(), bytes);
        program.verify(&t, &ProgramLimits::default()).unwrap();
    }
}
