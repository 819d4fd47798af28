//! The verifier's rules: each instruction's operand types accepted and refused, constants,
//! jumps, terminators, outputs, group keys, aggregates and limits; each refusal's message.

use super::*;

use RegType::{Bool as BOOL, Bytes as BYTES, Text as TEXT, F64 as F, I64 as I, U64 as U};

/// A program of `registers` and `constants` whose code is `code` then `return` of register 0.
fn returning(registers: &[RegType], constants: Vec<Constant>, mut code: Vec<Instr>) -> Program {
    code.push(Instr::Return);
    Program {
        registers: registers.to_vec(),
        constants,
        code,
        output: vec![Output::Register(0)],
        ..Program::default()
    }
}

fn check(program: Program) -> Result<(), String> {
    program.verify(&table(), &ProgramLimits::default()).map(|_| ()).map_err(|e| e.to_string())
}

fn refused(program: Program) -> String {
    match check(program) {
        Ok(()) => panic!("the program should be refused"),
        Err(e) => e,
    }
}

#[test]
fn load_column_types_must_match_the_register() {
    let accepted =
        [(I, ID), (I, A), (F, B), (TEXT, S), (I, C), (U, U_COLUMN), (BOOL, T), (BYTES, Y), (I, TS)];
    for (ty, column) in accepted {
        assert_eq!(
            check(returning(&[ty], vec![], vec![Instr::LoadColumn { dst: 0, column }])),
            Ok(()),
            "{ty} {column}"
        );
    }
    let e = refused(returning(&[U], vec![], vec![Instr::LoadColumn { dst: 0, column: A }]));
    assert_eq!(
        e,
        "instruction 0 (load_column): column 1 (\"a\", i64) loads as i64, register 0 is u64"
    );
    let e = refused(returning(&[BYTES], vec![], vec![Instr::LoadColumn { dst: 0, column: S }]));
    assert!(e.contains("loads as text, register 0 is bytes"), "{e}");
    let e = refused(returning(&[I], vec![], vec![Instr::LoadColumn { dst: 0, column: 9 }]));
    assert_eq!(
        e,
        "instruction 0 (load_column): column 9 is out of range (table \"things\" has 9 columns)"
    );
    let e = refused(returning(&[I], vec![], vec![Instr::LoadColumn { dst: 3, column: A }]));
    assert_eq!(e, "instruction 0 (load_column): register 3 is out of range (1 registers)");
}

#[test]
fn load_const_values_must_fit_the_register() {
    let accepted = [
        (I, Value::I64(1)),
        (I, Value::I32(1)),
        (I, Value::Timestamp(1)),
        (U, Value::U64(1)),
        (F, Value::F64(1.0)),
        (BOOL, Value::Bool(true)),
        (TEXT, Value::Text("x".into())),
        (BYTES, Value::Bytes(vec![1])),
        (TEXT, Value::Null),
    ];
    for (ty, v) in accepted {
        let code = vec![Instr::LoadConst { dst: 0, constant: 0 }];
        assert_eq!(check(returning(&[ty], vec![value(v.clone())], code)), Ok(()), "{ty} {v:?}");
    }
    let refused_pairs = [
        (I, Value::U64(1)),
        (U, Value::I64(1)),
        (F, Value::I64(1)),
        (TEXT, Value::Bytes(vec![])),
        (BYTES, Value::Text(String::new())),
        (BOOL, Value::I64(1)),
    ];
    for (ty, v) in refused_pairs {
        let code = vec![Instr::LoadConst { dst: 0, constant: 0 }];
        let e = refused(returning(&[ty], vec![value(v.clone())], code));
        assert!(e.starts_with("instruction 0 (load_const): constant 0 is "), "{e}");
    }
    let code = vec![Instr::LoadConst { dst: 0, constant: 0 }];
    let e = refused(returning(&[I], vec![Constant::List(vec![])], code.clone()));
    assert_eq!(e, "instruction 0 (load_const): constant 0 is a list, not a value");
    let e = refused(returning(&[I], vec![], code));
    assert_eq!(e, "instruction 0 (load_const): constant 0 is out of range (0 constants)");
}

#[test]
fn arith_needs_one_numeric_type() {
    for ty in [I, U, F] {
        for op in [ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div, ArithOp::Mod] {
            let result = check(returning(
                &[ty, ty, ty],
                vec![],
                vec![Instr::Arith { op, dst: 0, a: 1, b: 2 }],
            ));
            if ty == F && op == ArithOp::Mod {
                assert_eq!(result, Err("instruction 0 (arith): % needs integers, not f64".into()));
            } else {
                assert_eq!(result, Ok(()), "{ty} {op:?}");
            }
        }
    }
    let arith = Instr::Arith { op: ArithOp::Add, dst: 0, a: 1, b: 2 };
    let e = refused(returning(&[I, I, U], vec![], vec![arith]));
    assert_eq!(e, "instruction 0 (arith): right register 2 is u64, needs i64");
    let e = refused(returning(&[TEXT, TEXT, TEXT], vec![], vec![arith]));
    assert_eq!(e, "instruction 0 (arith): destination register 0 is text, needs a number");
    let e = refused(returning(&[F, I, I], vec![], vec![arith]));
    assert!(e.contains("left register 1 is i64, needs f64"), "{e}");
    let far = Instr::Arith { op: ArithOp::Add, dst: 0, a: 1, b: 40 };
    let e = refused(returning(&[I; 32], vec![], vec![far]));
    assert_eq!(e, "instruction 0 (arith): register 40 is out of range (32 registers)");
}

#[test]
fn to_f64_compare_and_null_tests() {
    let ok = |registers: &[RegType], instr| check(returning(registers, vec![], vec![instr]));
    assert_eq!(ok(&[F, I], Instr::ToF64 { dst: 0, a: 1 }), Ok(()));
    assert_eq!(ok(&[F, U], Instr::ToF64 { dst: 0, a: 1 }), Ok(()));
    assert!(ok(&[F, F], Instr::ToF64 { dst: 0, a: 1 })
        .unwrap_err()
        .contains("source register 1 is f64, needs i64 or u64"));
    assert!(ok(&[I, I], Instr::ToF64 { dst: 0, a: 1 })
        .unwrap_err()
        .contains("destination register 0 is i64, needs f64"));
    for ty in [I, U, F, BOOL, TEXT, BYTES] {
        assert_eq!(
            ok(&[BOOL, ty, ty], Instr::Compare { op: CmpOp::Lt, dst: 0, a: 1, b: 2 }),
            Ok(()),
            "{ty}"
        );
        assert_eq!(ok(&[BOOL, ty], Instr::IsNull { dst: 0, a: 1 }), Ok(()));
        assert_eq!(ok(&[BOOL, ty], Instr::IsNotNull { dst: 0, a: 1 }), Ok(()));
    }
    let e = ok(&[BOOL, I, F], Instr::Compare { op: CmpOp::Eq, dst: 0, a: 1, b: 2 }).unwrap_err();
    assert_eq!(e, "instruction 0 (compare): right register 2 is f64, needs i64");
    let e = ok(&[I, I, I], Instr::Compare { op: CmpOp::Eq, dst: 0, a: 1, b: 2 }).unwrap_err();
    assert_eq!(e, "instruction 0 (compare): destination register 0 is i64, needs bool");
    assert!(ok(&[I, I], Instr::IsNull { dst: 0, a: 1 }).unwrap_err().contains("needs bool"));
    assert!(ok(&[BOOL], Instr::IsNull { dst: 0, a: 9 })
        .unwrap_err()
        .contains("register 9 is out of range"));
}

#[test]
fn logic_needs_bool() {
    let ok = |registers: &[RegType], instr| check(returning(registers, vec![], vec![instr]));
    assert_eq!(ok(&[BOOL; 3], Instr::And { dst: 0, a: 1, b: 2 }), Ok(()));
    assert_eq!(ok(&[BOOL; 3], Instr::Or { dst: 0, a: 1, b: 2 }), Ok(()));
    assert_eq!(ok(&[BOOL; 2], Instr::Not { dst: 0, a: 1 }), Ok(()));
    let e = ok(&[BOOL, BOOL, I], Instr::Or { dst: 0, a: 1, b: 2 }).unwrap_err();
    assert_eq!(e, "instruction 0 (or): right register 2 is i64, needs bool");
    let e = ok(&[BOOL, TEXT], Instr::Not { dst: 0, a: 1 }).unwrap_err();
    assert_eq!(e, "instruction 0 (not): operand register 1 is text, needs bool");
}

#[test]
fn like_needs_text_or_bytes_and_a_text_pattern() {
    let like = Instr::Like { dst: 0, a: 1, pattern: 0 };
    let pattern = |p: &str| vec![value(Value::Text(p.into()))];
    assert_eq!(check(returning(&[BOOL, TEXT], pattern("a%"), vec![like])), Ok(()));
    assert_eq!(check(returning(&[BOOL, BYTES], pattern("a%"), vec![like])), Ok(()));
    let e = refused(returning(&[BOOL, I], pattern("a%"), vec![like]));
    assert_eq!(e, "instruction 0 (like): operand register 1 is i64, needs text or bytes");
    let e = refused(returning(&[BOOL, TEXT], vec![value(Value::Bytes(b"a".to_vec()))], vec![like]));
    assert_eq!(e, "instruction 0 (like): pattern constant 0 is not text");
    let e = refused(returning(&[BOOL, TEXT], pattern("a\\"), vec![like]));
    assert!(e.contains("lone escape"), "{e}");
    assert_eq!(check(returning(&[BOOL, TEXT], pattern(&"%a".repeat(500)), vec![like])), Ok(()));
    let e = refused(returning(&[BOOL, TEXT], pattern(&"é".repeat(1001)), vec![like]));
    assert_eq!(e, "instruction 0 (like): the pattern has 1001 characters (limit 1000)");
}

#[test]
fn in_needs_a_list_of_the_operands_type_without_null() {
    let is_in = Instr::In { dst: 0, a: 1, list: 0 };
    let list = |values: Vec<Value>| vec![Constant::List(values)];
    assert_eq!(
        check(returning(&[BOOL, I], list(vec![Value::I64(1), Value::I32(2)]), vec![is_in])),
        Ok(())
    );
    assert_eq!(
        check(returning(&[BOOL, TEXT], list(vec![Value::Text("x".into())]), vec![is_in])),
        Ok(())
    );
    assert_eq!(check(returning(&[BOOL, F], list(vec![]), vec![is_in])), Ok(()));
    let e = refused(returning(&[BOOL, I], list(vec![Value::I64(1), Value::Null]), vec![is_in]));
    assert_eq!(e, "instruction 0 (in): list constant 0 holds NULL at 1");
    let e = refused(returning(&[BOOL, I], list(vec![Value::Text("x".into())]), vec![is_in]));
    assert_eq!(e, "instruction 0 (in): list constant 0 holds text at 0, register 1 is i64");
    let e = refused(returning(&[BOOL, I], vec![value(Value::I64(1))], vec![is_in]));
    assert_eq!(e, "instruction 0 (in): constant 0 is a value, not a list");
}

#[test]
fn jumps_go_forward_and_stay_inside() {
    let program = |jump: Instr| returning(&[BOOL], vec![], vec![Instr::Skip, jump, Instr::Skip]);
    assert_eq!(check(program(Instr::Jump { target: 2 })), Ok(()));
    assert_eq!(check(program(Instr::Jump { target: 3 })), Ok(()));
    assert_eq!(check(program(Instr::JumpIfTrue { cond: 0, target: 3 })), Ok(()));
    let e = refused(program(Instr::Jump { target: 0 }));
    assert_eq!(
        e,
        "instruction 1 (jump): target 0 is not after the instruction (jumps go forward only)"
    );
    let e = refused(program(Instr::JumpIfNotTrue { cond: 0, target: 1 }));
    assert_eq!(e, "instruction 1 (jump_if_not_true): target 1 is not after the instruction (jumps go forward only)");
    let e = refused(program(Instr::Jump { target: 4 }));
    assert_eq!(e, "instruction 1 (jump): target 4 is past the end (4 instructions)");
    let e = refused(returning(&[I], vec![], vec![Instr::JumpIfTrue { cond: 0, target: 1 }]));
    assert_eq!(e, "instruction 0 (jump_if_true): condition register 0 is i64, needs bool");
    let e = refused(Program {
        registers: vec![I, I, I, I, I, I],
        code: vec![
            Instr::Skip,
            Instr::Skip,
            Instr::Skip,
            Instr::Skip,
            Instr::Skip,
            Instr::Jump { target: 2 },
            Instr::Skip,
        ],
        ..Program::default()
    });
    assert_eq!(
        e,
        "instruction 5 (jump): target 2 is not after the instruction (jumps go forward only)"
    );
}

#[test]
fn terminators_and_program_shape() {
    let e = refused(Program {
        registers: vec![I],
        code: vec![Instr::LoadColumn { dst: 0, column: A }],
        ..Program::default()
    });
    assert_eq!(
        e,
        "instruction 0 (load_column): the last instruction must be skip, return or aggregate"
    );
    let e = refused(Program::default());
    assert!(e.contains("no instructions"), "{e}");
    assert_eq!(check(Program { code: vec![Instr::Skip], ..Program::default() }), Ok(()));
    let e = refused(Program { code: vec![Instr::Return], ..Program::default() });
    assert_eq!(e, "instruction 0 (return): return needs outputs and no aggregates");
    let e = refused(Program {
        registers: vec![I],
        code: vec![Instr::Aggregate],
        output: vec![Output::Register(0)],
        ..Program::default()
    });
    assert_eq!(e, "instruction 0 (aggregate): aggregate needs aggregates");
    let count = Aggregate { func: AggFn::Count, arg: None };
    let e = refused(Program {
        registers: vec![I],
        code: vec![Instr::Return],
        output: vec![Output::Register(0)],
        aggregates: vec![count],
        ..Program::default()
    });
    assert!(e.contains("both outputs and aggregates"), "{e}");
    let e = refused(Program {
        registers: vec![I],
        code: vec![Instr::Skip],
        group_by: vec![0],
        ..Program::default()
    });
    assert!(e.contains("group-by registers but no aggregates"), "{e}");
    let e = refused(Program {
        code: vec![Instr::Aggregate, Instr::Return],
        aggregates: vec![count],
        ..Program::default()
    });
    assert_eq!(e, "instruction 1 (return): return needs outputs and no aggregates");
}

#[test]
fn outputs_group_keys_and_aggregates_are_checked() {
    let e = refused(Program {
        registers: vec![I],
        code: vec![Instr::Return],
        output: vec![Output::Register(1)],
        ..Program::default()
    });
    assert_eq!(e, "output 0: register 1 is out of range (1 registers)");
    let e = refused(Program {
        code: vec![Instr::Return],
        output: vec![Output::Column(ID), Output::Column(40)],
        ..Program::default()
    });
    assert_eq!(e, "output 1: column 40 is out of range (table \"things\" has 9 columns)");
    let aggregating =
        |registers: Vec<RegType>, group_by: Vec<u8>, aggregates: Vec<Aggregate>| Program {
            registers,
            code: vec![Instr::Aggregate],
            group_by,
            aggregates,
            ..Program::default()
        };
    let of = |func, arg| Aggregate { func, arg };
    let e = refused(aggregating(vec![I], vec![0, 3], vec![of(AggFn::Count, None)]));
    assert_eq!(e, "group-by 1: register 3 is out of range (1 registers)");
    let e = refused(aggregating(vec![TEXT], vec![], vec![of(AggFn::Sum, Some(0))]));
    assert_eq!(e, "aggregate 0: SUM needs a number, register 0 is text");
    let e = refused(aggregating(
        vec![BOOL],
        vec![],
        vec![of(AggFn::Count, None), of(AggFn::Avg, Some(0))],
    ));
    assert_eq!(e, "aggregate 1: AVG needs a number, register 0 is bool");
    let e = refused(aggregating(vec![I], vec![], vec![of(AggFn::Min, None)]));
    assert_eq!(e, "aggregate 0: MIN needs an argument");
    let e = refused(aggregating(vec![I], vec![], vec![of(AggFn::Max, Some(2))]));
    assert_eq!(e, "aggregate 0: register 2 is out of range (1 registers)");
    let all_types = vec![I, U, F, BOOL, TEXT, BYTES];
    let mut aggregates = vec![of(AggFn::Count, None)];
    for r in 0..6u8 {
        aggregates.push(of(AggFn::Min, Some(r)));
        aggregates.push(of(AggFn::Max, Some(r)));
        aggregates.push(of(AggFn::Count, Some(r)));
    }
    for r in 0..3u8 {
        aggregates.push(of(AggFn::Sum, Some(r)));
        aggregates.push(of(AggFn::Avg, Some(r)));
    }
    assert_eq!(check(aggregating(all_types, vec![0, 1, 2, 3, 4, 5], aggregates)), Ok(()));
}

#[test]
fn limits_are_enforced() {
    let limits = ProgramLimits::default();
    let t = table();
    let e = returning(&[I; 33], vec![], vec![]).verify(&t, &limits).unwrap_err();
    assert_eq!(e, ProgramError::Limit { what: "registers", count: 33, limit: 32 });
    assert_eq!(e.to_string(), "program has 33 registers (limit 32)");
    assert!(returning(&[I; 255], vec![], vec![]).verify(&t, &wide()).is_ok());
    let huge = ProgramLimits { max_registers: 100_000, ..limits };
    let e = returning(&[I; 256], vec![], vec![]).verify(&t, &huge).unwrap_err();
    assert_eq!(e, ProgramError::Limit { what: "registers", count: 256, limit: 255 });
    let e = returning(&[I], vec![], vec![Instr::Skip; 4096]).verify(&t, &limits).unwrap_err();
    assert_eq!(e, ProgramError::Limit { what: "instructions", count: 4097, limit: 4096 });
    // A huge constant: the encoded size is checked first.
    let big = returning(&[TEXT], vec![value(Value::Text("x".repeat(69_990)))], vec![]);
    let bytes = big.encoded_len();
    assert_eq!(bytes, big.encode().len());
    assert_eq!(
        big.verify(&t, &limits).unwrap_err().to_string(),
        format!("program is {bytes} bytes (limit 65536)")
    );
    let big = returning(&[I], vec![Constant::List(vec![Value::I64(0); 8000])], vec![]);
    assert!(matches!(big.verify(&t, &limits), Err(ProgramError::TooLarge { limit: 65536, .. })));
}

#[test]
fn min_and_max_order_bools() {
    let program = Program {
        registers: vec![BOOL],
        code: vec![Instr::LoadColumn { dst: 0, column: T }, Instr::Aggregate],
        aggregates: vec![
            Aggregate { func: AggFn::Min, arg: Some(0) },
            Aggregate { func: AggFn::Max, arg: Some(0) },
        ],
        ..Program::default()
    };
    let rows = run(program, &[full_row(1), full_row(2), null_row(3)]).unwrap();
    assert_eq!(rows, vec![vec![Value::Bool(false), Value::Bool(true)]]);
}
