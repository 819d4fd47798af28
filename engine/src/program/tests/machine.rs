//! Each instruction's meaning: loads, arithmetic (NULL, division by zero, overflow),
//! conversions, comparisons, NULL tests, three-valued logic, LIKE, IN, jumps and terminators.

use super::*;
use crate::program::run::{like, PatternItem};
use crate::program::verify::parse_pattern;

use RegType::{Bool as BOOL, Bytes as BYTES, Text as TEXT, F64 as F, I64 as I, U64 as U};

/// `a op b` on constants of register type `ty`.
fn binary(ty: RegType, op: ArithOp, a: Value, b: Value) -> Result<Value, RunError> {
    eval(
        &[ty, ty, ty],
        vec![value(a), value(b)],
        vec![
            Instr::LoadConst { dst: 0, constant: 0 },
            Instr::LoadConst { dst: 1, constant: 1 },
            Instr::Arith { op, dst: 2, a: 0, b: 1 },
        ],
        2,
        null_row(1),
    )
}

fn int(op: ArithOp, a: i64, b: i64) -> Result<Value, RunError> {
    binary(I, op, Value::I64(a), Value::I64(b))
}

#[test]
fn columns_load_as_their_register_types() {
    let row = full_row(3);
    let load = |ty: RegType, column: u16| {
        eval(&[ty], vec![], vec![Instr::LoadColumn { dst: 0, column }], 0, row.clone()).unwrap()
    };
    assert_eq!(load(I, ID), Value::I64(3));
    assert_eq!(load(I, A), Value::I64(30));
    assert_eq!(load(F, B), Value::F64(1.5));
    assert_eq!(load(TEXT, S), Value::Text("row 3".into()));
    assert_eq!(load(I, C), Value::I64(-3));
    assert_eq!(load(U, U_COLUMN), Value::U64(103));
    assert_eq!(load(BOOL, T), Value::Bool(false));
    assert_eq!(load(BYTES, Y), Value::Bytes(vec![3, 0xff]));
    assert_eq!(load(I, TS), Value::I64(3_000_000));
    let null = eval(&[TEXT], vec![], vec![Instr::LoadColumn { dst: 0, column: S }], 0, null_row(3))
        .unwrap();
    assert_eq!(null, Value::Null);
}

#[test]
fn output_columns_keep_their_own_types() {
    let program = Program {
        code: vec![Instr::Return],
        output: (0..9).map(Output::Column).collect(),
        ..Program::default()
    };
    let rows = run(program.clone(), &[full_row(4), null_row(5)]).unwrap();
    assert_eq!(rows, vec![full_row(4), null_row(5)]);
}

#[test]
fn integer_arithmetic_truncates_and_takes_the_dividends_sign() {
    use ArithOp::*;
    assert_eq!(int(Add, 2, 3), Ok(Value::I64(5)));
    assert_eq!(int(Sub, 2, 3), Ok(Value::I64(-1)));
    assert_eq!(int(Mul, -4, 3), Ok(Value::I64(-12)));
    assert_eq!(int(Div, -7, 2), Ok(Value::I64(-3)));
    assert_eq!(int(Div, 7, -2), Ok(Value::I64(-3)));
    assert_eq!(int(Mod, -7, 2), Ok(Value::I64(-1)));
    assert_eq!(int(Mod, 7, -2), Ok(Value::I64(1)));
    assert_eq!(int(Mod, i64::MIN, -1), Ok(Value::I64(0)));
    let unsigned = |op, a, b| binary(U, op, Value::U64(a), Value::U64(b));
    assert_eq!(unsigned(Div, 7, 2), Ok(Value::U64(3)));
    assert_eq!(unsigned(Mod, 7, 4), Ok(Value::U64(3)));
    assert_eq!(unsigned(Sub, 7, 4), Ok(Value::U64(3)));
    let float = |op, a, b| binary(F, op, Value::F64(a), Value::F64(b));
    assert_eq!(float(Div, 7.0, 2.0), Ok(Value::F64(3.5)));
    assert_eq!(float(Sub, 1.0, 2.5), Ok(Value::F64(-1.5)));
}

#[test]
fn division_by_zero_and_null_operands_give_null() {
    use ArithOp::*;
    assert_eq!(int(Div, 5, 0), Ok(Value::Null));
    assert_eq!(int(Mod, 5, 0), Ok(Value::Null));
    assert_eq!(binary(U, Div, Value::U64(5), Value::U64(0)), Ok(Value::Null));
    assert_eq!(binary(U, Mod, Value::U64(5), Value::U64(0)), Ok(Value::Null));
    assert_eq!(binary(F, Div, Value::F64(5.0), Value::F64(0.0)), Ok(Value::Null));
    assert_eq!(binary(F, Div, Value::F64(5.0), Value::F64(-0.0)), Ok(Value::Null));
    for op in [Add, Sub, Mul, Div, Mod] {
        assert_eq!(binary(I, op, Value::Null, Value::I64(1)), Ok(Value::Null), "{op:?}");
        assert_eq!(binary(I, op, Value::I64(1), Value::Null), Ok(Value::Null), "{op:?}");
        assert_eq!(binary(U, op, Value::Null, Value::U64(1)), Ok(Value::Null), "{op:?}");
    }
    assert_eq!(binary(F, Add, Value::F64(1.0), Value::Null), Ok(Value::Null));
}

#[test]
fn integer_overflow_names_the_instruction() {
    use ArithOp::*;
    let overflow = Err(RunError::Overflow { instruction: 2 });
    assert_eq!(int(Add, i64::MAX, 1), overflow);
    assert_eq!(int(Sub, i64::MIN, 1), overflow);
    assert_eq!(int(Mul, i64::MAX, 2), overflow);
    assert_eq!(int(Div, i64::MIN, -1), overflow);
    assert_eq!(binary(U, Sub, Value::U64(1), Value::U64(2)), overflow);
    assert_eq!(binary(U, Add, Value::U64(u64::MAX), Value::U64(1)), overflow);
    assert_eq!(binary(U, Mul, Value::U64(u64::MAX), Value::U64(2)), overflow);
    assert_eq!(
        RunError::Overflow { instruction: 2 }.to_string(),
        "instruction 2: integer overflow"
    );
    assert_eq!(
        binary(F, Mul, Value::F64(f64::MAX), Value::F64(2.0)),
        Ok(Value::F64(f64::INFINITY))
    );
}

#[test]
fn to_f64_converts_both_integer_types() {
    let convert = |ty: RegType, v: Value| {
        eval(
            &[ty, F],
            vec![value(v)],
            vec![Instr::LoadConst { dst: 0, constant: 0 }, Instr::ToF64 { dst: 1, a: 0 }],
            1,
            null_row(1),
        )
        .unwrap()
    };
    assert_eq!(convert(I, Value::I64(-3)), Value::F64(-3.0));
    assert_eq!(convert(U, Value::U64(1 << 60)), Value::F64((1u64 << 60) as f64));
    assert_eq!(convert(I, Value::Null), Value::Null);
}

/// `a op b` comparing constants of register type `ty`.
fn compare(ty: RegType, op: CmpOp, a: Value, b: Value) -> Value {
    eval(
        &[ty, ty, BOOL],
        vec![value(a), value(b)],
        vec![
            Instr::LoadConst { dst: 0, constant: 0 },
            Instr::LoadConst { dst: 1, constant: 1 },
            Instr::Compare { op, dst: 2, a: 0, b: 1 },
        ],
        2,
        null_row(1),
    )
    .unwrap()
}

#[test]
fn comparisons_of_every_type() {
    use CmpOp::*;
    let expected = [(Eq, false), (Ne, true), (Lt, true), (Le, true), (Gt, false), (Ge, false)];
    for (op, result) in expected {
        assert_eq!(compare(I, op, Value::I64(-2), Value::I64(1)), Value::Bool(result), "{op:?}");
        assert_eq!(
            compare(U, op, Value::U64(1), Value::U64(u64::MAX)),
            Value::Bool(result),
            "{op:?}"
        );
        assert_eq!(
            compare(F, op, Value::F64(-0.5), Value::F64(0.25)),
            Value::Bool(result),
            "{op:?}"
        );
        assert_eq!(
            compare(BOOL, op, Value::Bool(false), Value::Bool(true)),
            Value::Bool(result),
            "{op:?}"
        );
        // Bytewise: "B" (0x42) sorts before "a" (0x61); a prefix sorts first.
        assert_eq!(
            compare(TEXT, op, Value::Text("B".into()), Value::Text("a".into())),
            Value::Bool(result)
        );
        assert_eq!(
            compare(TEXT, op, Value::Text("ab".into()), Value::Text("abc".into())),
            Value::Bool(result)
        );
        assert_eq!(
            compare(BYTES, op, Value::Bytes(vec![1, 2]), Value::Bytes(vec![1, 0xff])),
            Value::Bool(result)
        );
        assert_eq!(compare(I, op, Value::Null, Value::I64(1)), Value::Null, "{op:?}");
        assert_eq!(compare(TEXT, op, Value::Text("x".into()), Value::Null), Value::Null, "{op:?}");
    }
    assert_eq!(compare(I, Eq, Value::I64(5), Value::I64(5)), Value::Bool(true));
    assert_eq!(compare(F, Eq, Value::F64(0.0), Value::F64(-0.0)), Value::Bool(true));
    for (op, result) in
        [(Eq, false), (Ne, true), (Lt, false), (Le, false), (Gt, false), (Ge, false)]
    {
        assert_eq!(
            compare(F, op, Value::F64(f64::NAN), Value::F64(1.0)),
            Value::Bool(result),
            "NaN {op:?}"
        );
    }
}

#[test]
fn null_tests_are_never_null() {
    for (v, is_null) in [(Value::Null, true), (Value::I64(0), false)] {
        for (negate, result) in [(false, is_null), (true, !is_null)] {
            let test = if negate {
                Instr::IsNotNull { dst: 1, a: 0 }
            } else {
                Instr::IsNull { dst: 1, a: 0 }
            };
            let code = vec![Instr::LoadConst { dst: 0, constant: 0 }, test];
            assert_eq!(
                eval(&[I, BOOL], vec![value(v.clone())], code, 1, null_row(1)),
                Ok(Value::Bool(result))
            );
        }
    }
}

#[test]
fn logic_is_three_valued() {
    let t = Value::Bool(true);
    let f = Value::Bool(false);
    let n = Value::Null;
    let logic = |instr: Instr, a: &Value, b: &Value| {
        let code = vec![
            Instr::LoadConst { dst: 0, constant: 0 },
            Instr::LoadConst { dst: 1, constant: 1 },
            instr,
        ];
        eval(&[BOOL; 3], vec![value(a.clone()), value(b.clone())], code, 2, null_row(1)).unwrap()
    };
    #[rustfmt::skip]
    let and = [
        (&t, &t, &t), (&t, &f, &f), (&t, &n, &n),
        (&f, &t, &f), (&f, &f, &f), (&f, &n, &f),
        (&n, &t, &n), (&n, &f, &f), (&n, &n, &n),
    ];
    for (a, b, result) in and {
        assert_eq!(&logic(Instr::And { dst: 2, a: 0, b: 1 }, a, b), result, "{a} AND {b}");
    }
    #[rustfmt::skip]
    let or = [
        (&t, &t, &t), (&t, &f, &t), (&t, &n, &t),
        (&f, &t, &t), (&f, &f, &f), (&f, &n, &n),
        (&n, &t, &t), (&n, &f, &n), (&n, &n, &n),
    ];
    for (a, b, result) in or {
        assert_eq!(&logic(Instr::Or { dst: 2, a: 0, b: 1 }, a, b), result, "{a} OR {b}");
    }
    for (a, result) in [(&t, &f), (&f, &t), (&n, &n)] {
        assert_eq!(&logic(Instr::Not { dst: 2, a: 0 }, a, &n), result, "NOT {a}");
    }
}

fn matches(value: &str, pattern: &str) -> bool {
    like(value.as_bytes(), &parse_pattern(pattern).unwrap(), true)
}

#[test]
fn like_patterns() {
    let cases = [
        ("abc", "abc", true),
        ("abc", "ab", false),
        ("abc", "a%", true),
        ("abc", "%c", true),
        ("abc", "%b%", true),
        ("abc", "%d%", false),
        ("", "%", true),
        ("", "_", false),
        ("abc", "a_c", true),
        ("abc", "a__c", false),
        ("abc", "___", true),
        ("aXbXc", "a%b%c", true),
        ("aXbXc", "a%c%b", false),
        ("mississippi", "%iss%ipp%", true),
        ("mississippi", "m%s_i%i", true),
        ("ABC", "abc", false),
        ("50%", "50\\%", true),
        ("500", "50\\%", false),
        ("a_b", "a\\_b", true),
        ("axb", "a\\_b", false),
        ("a\\b", "a\\\\b", true),
        ("héllo", "h_llo", true),
        ("héllo", "h__llo", false),
        ("日本語", "_本_", true),
        ("日本語", "%語", true),
        ("日本語", "___", true),
        ("日本語", "____", false),
        ("x%%%y", "x%y", true),
    ];
    for (value, pattern, expected) in cases {
        assert_eq!(matches(value, pattern), expected, "{value:?} LIKE {pattern:?}");
    }
    assert_eq!(
        parse_pattern("a%%b").unwrap(),
        vec![PatternItem::Byte(b'a'), PatternItem::Any, PatternItem::Byte(b'b')]
    );
    assert!(parse_pattern("ab\\").unwrap_err().contains("lone escape"));
    // Over bytes, `_` is one byte: the two bytes of "é" need two.
    let pattern = parse_pattern("h__llo").unwrap();
    assert!(like("héllo".as_bytes(), &pattern, false));
    assert!(!like("héllo".as_bytes(), &pattern, true));
}

#[test]
fn like_instruction_on_text_bytes_and_null() {
    let run_like = |ty: RegType, column: u16, pattern: &str, row: Vec<Value>| {
        let code =
            vec![Instr::LoadColumn { dst: 0, column }, Instr::Like { dst: 1, a: 0, pattern: 0 }];
        eval(&[ty, BOOL], vec![value(Value::Text(pattern.into()))], code, 1, row).unwrap()
    };
    assert_eq!(run_like(TEXT, S, "row _", full_row(7)), Value::Bool(true));
    assert_eq!(run_like(TEXT, S, "Row%", full_row(7)), Value::Bool(false));
    assert_eq!(run_like(TEXT, S, "%", null_row(7)), Value::Null);
    assert_eq!(run_like(BYTES, Y, "\u{7}_", full_row(7)), Value::Bool(true));
}

#[test]
fn in_lists() {
    let is_in = |ty: RegType, v: Value, list: Vec<Value>| {
        let code =
            vec![Instr::LoadConst { dst: 0, constant: 0 }, Instr::In { dst: 1, a: 0, list: 1 }];
        eval(&[ty, BOOL], vec![value(v), Constant::List(list)], code, 1, null_row(1)).unwrap()
    };
    let ints = vec![Value::I64(1), Value::I32(5), Value::Timestamp(9)];
    assert_eq!(is_in(I, Value::I64(5), ints.clone()), Value::Bool(true));
    assert_eq!(is_in(I, Value::I64(9), ints.clone()), Value::Bool(true));
    assert_eq!(is_in(I, Value::I64(2), ints.clone()), Value::Bool(false));
    assert_eq!(is_in(I, Value::Null, ints), Value::Null);
    assert_eq!(is_in(I, Value::I64(2), vec![]), Value::Bool(false));
    let texts = vec![Value::Text("a".into()), Value::Text("bc".into())];
    assert_eq!(is_in(TEXT, Value::Text("bc".into()), texts.clone()), Value::Bool(true));
    assert_eq!(is_in(TEXT, Value::Text("b".into()), texts), Value::Bool(false));
    assert_eq!(is_in(F, Value::F64(f64::NAN), vec![Value::F64(f64::NAN)]), Value::Bool(false));
    assert_eq!(is_in(F, Value::F64(-0.0), vec![Value::F64(0.0)]), Value::Bool(true));
}

/// `dst = 1; if cond goes (jump) skip the next load; dst = 2`: which value survives.
fn branch(jump: Instr, cond: Value) -> Value {
    let code = vec![
        Instr::LoadConst { dst: 1, constant: 0 },
        Instr::LoadConst { dst: 0, constant: 1 },
        jump,
        Instr::LoadConst { dst: 0, constant: 2 },
    ];
    let constants = vec![value(cond), value(Value::I64(1)), value(Value::I64(2))];
    eval(&[I, BOOL], constants, code, 0, null_row(1)).unwrap()
}

#[test]
fn jumps_go_forward_and_null_is_not_true() {
    let went = Value::I64(1);
    let stayed = Value::I64(2);
    let if_true = Instr::JumpIfTrue { cond: 1, target: 4 };
    let if_not_true = Instr::JumpIfNotTrue { cond: 1, target: 4 };
    assert_eq!(branch(if_true, Value::Bool(true)), went);
    assert_eq!(branch(if_true, Value::Bool(false)), stayed);
    assert_eq!(branch(if_true, Value::Null), stayed);
    assert_eq!(branch(if_not_true, Value::Bool(true)), stayed);
    assert_eq!(branch(if_not_true, Value::Bool(false)), went);
    assert_eq!(branch(if_not_true, Value::Null), went);
    assert_eq!(branch(Instr::Jump { target: 4 }, Value::Null), went);
}

#[test]
fn registers_start_every_row_as_null() {
    // Row 1 loads `a` into register 0 only when `t` is true; row 2 must not see row 1's value.
    let program = Program {
        registers: vec![BOOL, I],
        code: vec![
            Instr::LoadColumn { dst: 0, column: T },
            Instr::JumpIfNotTrue { cond: 0, target: 3 },
            Instr::LoadColumn { dst: 1, column: A },
            Instr::Return,
        ],
        output: vec![Output::Register(1)],
        ..Program::default()
    };
    let rows = run(program, &[full_row(2), full_row(3)]).unwrap();
    assert_eq!(rows, vec![vec![Value::I64(20)], vec![Value::Null]]);
}

#[test]
fn skip_returns_nothing_and_filters_rows() {
    // WHERE a > 25 returning id.
    let program = Program {
        registers: vec![I, I, BOOL],
        constants: vec![value(Value::I64(25))],
        code: vec![
            Instr::LoadColumn { dst: 0, column: A },
            Instr::LoadConst { dst: 1, constant: 0 },
            Instr::Compare { op: CmpOp::Gt, dst: 2, a: 0, b: 1 },
            Instr::JumpIfNotTrue { cond: 2, target: 5 },
            Instr::Return,
            Instr::Skip,
        ],
        output: vec![Output::Column(ID)],
        ..Program::default()
    };
    let t = table();
    let verified = program.verify(&t, &ProgramLimits::default()).unwrap();
    let mut out = Vec::new();
    let mut groups = verified.groups(1);
    let mut outcomes = Vec::new();
    for id in 1..6 {
        let image = encode_row(&t, &full_row(id)).unwrap();
        outcomes.push(verified.apply(&image, &mut out, &mut groups).unwrap());
    }
    use Outcome::{Return as R, Skip as K};
    assert_eq!(outcomes, vec![K, K, R, R, R]);
    let ids = decode_tuples(&out, 1).unwrap();
    assert_eq!(ids, vec![vec![Value::I64(3)], vec![Value::I64(4)], vec![Value::I64(5)]]);
    assert!(groups.is_empty());
}

#[test]
fn malformed_row_images_are_errors_not_panics() {
    let program = Program {
        registers: vec![TEXT, BOOL],
        code: vec![
            Instr::LoadColumn { dst: 0, column: S },
            Instr::LoadColumn { dst: 1, column: T },
            Instr::Return,
        ],
        output: vec![Output::Register(0), Output::Column(Y), Output::Register(1)],
        ..Program::default()
    };
    let t = table();
    let verified = program.verify(&t, &ProgramLimits::default()).unwrap();
    let image = encode_row(&t, &full_row(2)).unwrap();
    let mut groups = verified.groups(1);
    // The walk stops after `y`, the last column read: the timestamp after it is not looked at.
    let unread = 8;
    for cut in 0..image.len() - unread {
        let result = verified.apply(&image[..cut], &mut Vec::new(), &mut groups);
        assert!(matches!(result, Err(RunError::BadRow(_))), "cut at {cut}: {result:?}");
    }
    assert_eq!(
        verified.apply(&image[..image.len() - unread], &mut Vec::new(), &mut groups),
        Ok(Outcome::Return)
    );
    let mut bad_bool = encode_row(&t, &null_row(2)).unwrap();
    bad_bool[0] &= !(1 << T);
    bad_bool.push(7);
    let result = verified.apply(&bad_bool, &mut Vec::new(), &mut groups);
    assert!(matches!(&result, Err(RunError::BadRow(m)) if m.contains("column 6")), "{result:?}");
    assert_eq!(verified.apply(&image, &mut Vec::new(), &mut groups), Ok(Outcome::Return));
}

#[test]
fn large_register_files_run() {
    // 200 registers plus every column: the largest register file.
    let registers = vec![I; 200];
    let code = vec![
        Instr::LoadColumn { dst: 0, column: ID },
        Instr::LoadColumn { dst: 199, column: A },
        Instr::Arith { op: ArithOp::Add, dst: 150, a: 0, b: 199 },
        Instr::Return,
    ];
    let mut output: Vec<Output> = (0..9).map(Output::Column).collect();
    output.push(Output::Register(150));
    let program = Program { registers, code, output, ..Program::default() };
    let rows = run(program, &[full_row(3)]).unwrap();
    let mut expected = full_row(3);
    expected.push(Value::I64(33));
    assert_eq!(rows, vec![expected]);
}
