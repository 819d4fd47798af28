//! Expression text into the engine's expressions ([`Expr`]): filters, computed columns, group
//! keys and aggregates written as SQL (MySQL dialect), parsed by the `sqlparser` crate and
//! converted from its syntax tree. The converter ([`from_ast`], [`aggregate_from_ast`]) also
//! serves callers that parse whole statements themselves.
//!
//! What converts:
//! - identifiers (plain or in backticks) -> [`Expr::Column`];
//! - literals: integers -> `i64` (`u64` above `i64::MAX`), decimals and exponents -> `f64`,
//!   `'text'` and `"text"` (MySQL reads both as strings) -> text, `X'0a1b'` -> bytes,
//!   `TRUE`, `FALSE`, `NULL`;
//! - `+ - * / %`; unary `-` (folded into a numeric literal, else `0 - e`) and unary `+`;
//! - `= <> != < <= > >=`, `AND`, `OR`, `NOT`, parentheses;
//! - `IS [NOT] NULL`, `[NOT] LIKE 'pattern'` (`ESCAPE '\\'` only: backslash is the engine's
//!   escape), `[NOT] IN (literals)`, `[NOT] BETWEEN a AND b` (two comparisons);
//! - aggregates: `count(*)`, `count(e)`, `sum(e)`, `min(e)`, `max(e)`, `avg(e)`, any case.
//!
//! Anything else is an [`Error::Invalid`] naming the part (as written, cut when long) and where
//! it starts (line and column, from the parser's spans). Types are not checked here: the
//! compiler does that against the table ([`engine::program::compile`]).
//!
//! Bounds: sqlparser limits its own recursion (nesting of parentheses, functions, unary
//! operators), but builds a chain of infix operators (`a + a + ...`) in a loop, one tree level
//! per operator; dropping, printing or converting such a tree recurses once per level. So text
//! is at most [`MAX_TOKENS`] tokens (and [`MAX_TEXT_BYTES`] bytes), which bounds every tree's
//! depth to about half that, and the converter refuses trees deeper than [`MAX_DEPTH`].
//! Callers of [`from_ast`] bound their trees in the same way.

use engine::program::compile::Expr;
use engine::program::{AggFn, ArithOp, CmpOp};
use engine::row::Value;
use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments,
    InTarget, ObjectNamePart, Spanned, UnaryOperator,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Span, Token, Tokenizer};

use crate::error::Error;

/// Longest expression text accepted.
pub const MAX_TEXT_BYTES: usize = 64 << 10;

/// Most tokens (not counting whitespace) in an expression's text.
pub const MAX_TOKENS: usize = 1024;

/// Deepest expression tree converted.
pub const MAX_DEPTH: usize = 256;

/// The aggregates [`parse_aggregate`] knows, for messages.
const AGGREGATES: &str = "count(*), count(e), sum(e), min(e), max(e), avg(e)";

type Result<T> = std::result::Result<T, Error>;

/// An expression (a computed column, a group key).
pub fn parse_expr(text: &str) -> Result<Expr> {
    from_ast(&parse_ast(text)?)
}

/// A filter: an expression that the compiler will require to be boolean.
pub fn parse_filter(text: &str) -> Result<Expr> {
    parse_expr(text)
}

/// One literal value (a number, `'text'`, `X'hex'`, `TRUE`, `FALSE`, `NULL`, a negative
/// number).
pub fn parse_literal(text: &str) -> Result<Value> {
    let tree = parse_ast(text)?;
    match from_ast(&tree)? {
        Expr::Literal(value) => Ok(value),
        _ => Err(invalid(format!(
            "`{}` is not a literal value (a number, 'text', true, false or NULL){}",
            snippet(&tree),
            at(tree.span())
        ))),
    }
}

/// An aggregate call: its function and argument (`None` for `count(*)`).
pub fn parse_aggregate(text: &str) -> Result<(AggFn, Option<Expr>)> {
    aggregate_from_ast(&parse_ast(text)?)
}

/// The text parsed as exactly one expression (anything after it is refused).
fn parse_ast(text: &str) -> Result<ast::Expr> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(invalid(format!(
            "the expression is {} bytes, over the limit of {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Err(invalid("an empty expression"));
    }
    let dialect = MySqlDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| parse_error(e.into()))?;
    let count = tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).count();
    if count > MAX_TOKENS {
        return Err(invalid(format!(
            "the expression has {count} tokens, over the limit of {MAX_TOKENS}"
        )));
    }
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let tree = parser.parse_expr().map_err(parse_error)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(invalid(format!(
            "unexpected `{}` after the expression{}",
            next.token,
            at(next.span)
        )));
    }
    Ok(tree)
}

fn parse_error(e: ParserError) -> Error {
    match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
            invalid(format!("cannot parse the expression: {m}"))
        }
        ParserError::RecursionLimitExceeded => {
            invalid("cannot parse the expression: it nests too deeply")
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid(message)
}

/// " at line L, column C", or nothing where the parser kept no position.
fn at(span: Span) -> String {
    let start = span.start;
    if start.line == 0 {
        String::new()
    } else {
        format!(" at line {}, column {}", start.line, start.column)
    }
}

/// A node as SQL, cut to 60 characters.
fn snippet(node: &impl std::fmt::Display) -> String {
    let text = node.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// "unsupported <what> `<node>` at line L, column C".
fn unsupported(what: &str, node: &ast::Expr) -> Error {
    invalid(format!("unsupported {what} `{}`{}", snippet(node), at(node.span())))
}

fn boxed(e: Expr) -> Box<Expr> {
    Box::new(e)
}

/// Converts a parsed expression (no aggregates: those are [`aggregate_from_ast`]'s).
pub fn from_ast(tree: &ast::Expr) -> Result<Expr> {
    convert(tree, 0)
}

/// `tree` as an [`Expr`]; `depth` counts the levels above it.
fn convert(tree: &ast::Expr, depth: usize) -> Result<Expr> {
    if depth >= MAX_DEPTH {
        return Err(invalid(format!("the expression nests deeper than {MAX_DEPTH} levels")));
    }
    let inner = |e: &ast::Expr| convert(e, depth + 1).map(boxed);
    Ok(match tree {
        ast::Expr::Identifier(ident) => Expr::Column(ident.value.clone()),
        ast::Expr::Nested(e) => convert(e, depth + 1)?,
        ast::Expr::Value(v) => Expr::Literal(literal(&v.value, v.span)?),
        ast::Expr::BinaryOp { left, op, right } => {
            let op = Binary::of(tree, op)?;
            op.build(inner(left)?, inner(right)?)
        }
        ast::Expr::UnaryOp { op, expr } => unary(tree, *op, expr, depth)?,
        ast::Expr::IsNull(e) => Expr::IsNull(inner(e)?),
        ast::Expr::IsNotNull(e) => Expr::IsNotNull(inner(e)?),
        ast::Expr::Like { negated, any: false, expr, pattern, escape_char } => {
            check_escape(escape_char.as_deref())?;
            let like = Expr::Like(inner(expr)?, text_pattern(pattern, depth)?);
            negate_if(*negated, like)
        }
        ast::Expr::In { expr, target: InTarget::List(items), negated, global: false } => {
            let values =
                items.iter().map(|item| list_value(item, depth)).collect::<Result<Vec<_>>>()?;
            negate_if(*negated, Expr::In(inner(expr)?, values))
        }
        ast::Expr::Between { expr, negated, low, high } => {
            between(convert(expr, depth + 1)?, *negated, inner(low)?, inner(high)?)
        }
        other => return Err(unsupported(kind(other), other)),
    })
}

/// What a refused node is, in words.
fn kind(tree: &ast::Expr) -> &'static str {
    match tree {
        ast::Expr::CompoundIdentifier(_) => "qualified name",
        ast::Expr::Function(_) => "function call",
        ast::Expr::Case { .. } => "CASE expression",
        ast::Expr::Cast { .. } | ast::Expr::Convert { .. } => "conversion",
        ast::Expr::Subquery(_)
        | ast::Expr::Exists { .. }
        | ast::Expr::In { target: InTarget::Subquery(_), .. } => "subquery",
        ast::Expr::In { .. } => "IN form (IN takes a list of literals)",
        ast::Expr::Like { .. } => "LIKE form",
        ast::Expr::ILike { .. } | ast::Expr::RLike { .. } | ast::Expr::SimilarTo { .. } => {
            "pattern match (only LIKE is supported)"
        }
        ast::Expr::IsTrue(_)
        | ast::Expr::IsNotTrue(_)
        | ast::Expr::IsFalse(_)
        | ast::Expr::IsNotFalse(_)
        | ast::Expr::IsUnknown(_)
        | ast::Expr::IsNotUnknown(_)
        | ast::Expr::IsDistinctFrom(..)
        | ast::Expr::IsNotDistinctFrom(..) => "IS test (only IS [NOT] NULL is supported)",
        ast::Expr::Tuple(_) => "tuple",
        ast::Expr::Wildcard(_) | ast::Expr::QualifiedWildcard(..) => "wildcard",
        _ => "expression",
    }
}

fn negate_if(negated: bool, e: Expr) -> Expr {
    if negated {
        Expr::Not(boxed(e))
    } else {
        e
    }
}

/// A literal as a value.
fn literal(value: &ast::Value, span: Span) -> Result<Value> {
    Ok(match value {
        ast::Value::Number(text, _) => number(text, span)?,
        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
            Value::Text(s.clone())
        }
        ast::Value::HexStringLiteral(hex) => {
            Value::Bytes(bytes_of_hex(hex).ok_or_else(|| {
                invalid(format!("X'{hex}' is not hex digits in pairs{}", at(span)))
            })?)
        }
        ast::Value::Boolean(b) => Value::Bool(*b),
        ast::Value::Null => Value::Null,
        other => {
            return Err(invalid(format!("unsupported literal `{}`{}", snippet(other), at(span))))
        }
    })
}

/// A number literal: integers as i64 (u64 when larger), anything with `.` or an exponent
/// as f64.
fn number(text: &str, span: Span) -> Result<Value> {
    let out_of_range = || invalid(format!("the number {text} is out of range{}", at(span)));
    if text.contains(['.', 'e', 'E']) {
        let v: f64 = text.parse().map_err(|_| invalid(format!("bad number {text}{}", at(span))))?;
        return if v.is_finite() { Ok(Value::F64(v)) } else { Err(out_of_range()) };
    }
    if let Ok(v) = text.parse::<i64>() {
        return Ok(Value::I64(v));
    }
    text.parse::<u64>().map(Value::U64).map_err(|_| out_of_range())
}

fn bytes_of_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// What a binary operator builds.
#[derive(Clone, Copy)]
enum Binary {
    Arith(ArithOp),
    Compare(CmpOp),
    And,
    Or,
}

impl Binary {
    fn of(tree: &ast::Expr, op: &BinaryOperator) -> Result<Binary> {
        Ok(match op {
            BinaryOperator::Plus => Binary::Arith(ArithOp::Add),
            BinaryOperator::Minus => Binary::Arith(ArithOp::Sub),
            BinaryOperator::Multiply => Binary::Arith(ArithOp::Mul),
            BinaryOperator::Divide => Binary::Arith(ArithOp::Div),
            BinaryOperator::Modulo => Binary::Arith(ArithOp::Mod),
            BinaryOperator::Eq => Binary::Compare(CmpOp::Eq),
            BinaryOperator::NotEq => Binary::Compare(CmpOp::Ne),
            BinaryOperator::Lt => Binary::Compare(CmpOp::Lt),
            BinaryOperator::LtEq => Binary::Compare(CmpOp::Le),
            BinaryOperator::Gt => Binary::Compare(CmpOp::Gt),
            BinaryOperator::GtEq => Binary::Compare(CmpOp::Ge),
            BinaryOperator::And => Binary::And,
            BinaryOperator::Or => Binary::Or,
            other => {
                return Err(invalid(format!(
                    "unsupported operator `{other}` in `{}`{}",
                    snippet(tree),
                    at(tree.span())
                )))
            }
        })
    }

    fn build(self, l: Box<Expr>, r: Box<Expr>) -> Expr {
        match self {
            Binary::Arith(op) => Expr::Arith(op, l, r),
            Binary::Compare(op) => Expr::Compare(op, l, r),
            Binary::And => Expr::And(l, r),
            Binary::Or => Expr::Or(l, r),
        }
    }
}

fn unary(tree: &ast::Expr, op: UnaryOperator, operand: &ast::Expr, depth: usize) -> Result<Expr> {
    let operand = || convert(operand, depth + 1);
    match op {
        UnaryOperator::Not => Ok(Expr::Not(boxed(operand()?))),
        UnaryOperator::Plus => operand(),
        UnaryOperator::Minus => negate(tree, operand()?),
        other => Err(invalid(format!(
            "unsupported operator `{other}` in `{}`{}",
            snippet(tree),
            at(tree.span())
        ))),
    }
}

/// `-e`: a numeric literal negated, any other operand as `0 - e`.
fn negate(tree: &ast::Expr, e: Expr) -> Result<Expr> {
    const MIN_MAGNITUDE: u64 = 1 << 63;
    let out_of_range =
        || invalid(format!("the number `{}` is out of range{}", snippet(tree), at(tree.span())));
    Ok(match e {
        Expr::Literal(Value::I64(v)) => {
            Expr::Literal(Value::I64(v.checked_neg().ok_or_else(out_of_range)?))
        }
        // -9223372036854775808: its magnitude parsed as u64.
        Expr::Literal(Value::U64(MIN_MAGNITUDE)) => Expr::Literal(Value::I64(i64::MIN)),
        Expr::Literal(Value::U64(_)) => return Err(out_of_range()),
        Expr::Literal(Value::F64(v)) => Expr::Literal(Value::F64(-v)),
        Expr::Literal(Value::Null) => Expr::Literal(Value::Null),
        Expr::Literal(other) => {
            return Err(invalid(format!(
                "cannot negate the {} literal in `{}`{}",
                other.type_name(),
                snippet(tree),
                at(tree.span())
            )))
        }
        other => Expr::Arith(ArithOp::Sub, boxed(Expr::Literal(Value::I64(0))), boxed(other)),
    })
}

/// A LIKE pattern: a text literal.
fn text_pattern(pattern: &ast::Expr, depth: usize) -> Result<String> {
    match convert(pattern, depth + 1)? {
        Expr::Literal(Value::Text(p)) => Ok(p),
        _ => Err(invalid(format!(
            "LIKE needs a 'quoted' pattern, not `{}`{}",
            snippet(pattern),
            at(pattern.span())
        ))),
    }
}

/// `ESCAPE`: absent, or the engine's own escape, a backslash.
fn check_escape(escape: Option<&ast::Expr>) -> Result<()> {
    let Some(e) = escape else { return Ok(()) };
    match e {
        ast::Expr::Value(v) if v.value.clone().into_string().as_deref() == Some("\\") => Ok(()),
        _ => Err(invalid(format!(
            "unsupported ESCAPE `{}`{}: LIKE patterns escape with a backslash",
            snippet(e),
            at(e.span())
        ))),
    }
}

/// An item of an IN list: a literal.
fn list_value(item: &ast::Expr, depth: usize) -> Result<Value> {
    match convert(item, depth + 1)? {
        Expr::Literal(v) => Ok(v),
        _ => Err(invalid(format!(
            "IN takes a list of literal values, not `{}`{}",
            snippet(item),
            at(item.span())
        ))),
    }
}

/// `e BETWEEN low AND high` as `e >= low AND e <= high`; NOT BETWEEN as `e < low OR e > high`
/// (the same under SQL's three-valued logic).
fn between(e: Expr, negated: bool, low: Box<Expr>, high: Box<Expr>) -> Expr {
    let compare = |op, bound| Expr::Compare(op, boxed(e.clone()), bound);
    if negated {
        Expr::Or(boxed(compare(CmpOp::Lt, low)), boxed(compare(CmpOp::Gt, high)))
    } else {
        Expr::And(boxed(compare(CmpOp::Ge, low)), boxed(compare(CmpOp::Le, high)))
    }
}

/// The aggregate function `name` names (any case).
pub fn aggregate_function(name: &str) -> Option<AggFn> {
    Some(match name.to_ascii_lowercase().as_str() {
        "count" => AggFn::Count,
        "sum" => AggFn::Sum,
        "min" => AggFn::Min,
        "max" => AggFn::Max,
        "avg" => AggFn::Avg,
        _ => return None,
    })
}

/// Converts a parsed aggregate call: its function and argument (`None` for `count(*)`).
pub fn aggregate_from_ast(tree: &ast::Expr) -> Result<(AggFn, Option<Expr>)> {
    let not_aggregate = || {
        invalid(format!(
            "`{}`{} is not an aggregate (one of {AGGREGATES})",
            snippet(tree),
            at(tree.span())
        ))
    };
    let ast::Expr::Function(call) = tree else { return Err(not_aggregate()) };
    let name = match call.name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => ident.value.as_str(),
        _ => return Err(not_aggregate()),
    };
    let func = aggregate_function(name).ok_or_else(not_aggregate)?;
    let plain = !call.uses_odbc_syntax
        && matches!(call.parameters, FunctionArguments::None)
        && call.within_group.is_empty()
        && call.filter.is_none()
        && call.null_treatment.is_none()
        && call.over.is_none();
    if !plain {
        return Err(unsupported("aggregate form (FILTER, OVER, WITHIN GROUP, ...)", tree));
    }
    let FunctionArguments::List(list) = &call.args else {
        return Err(invalid(format!(
            "`{name}` needs its argument in parentheses{}",
            at(tree.span())
        )));
    };
    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return Err(unsupported("DISTINCT aggregate", tree));
    }
    if !list.clauses.is_empty() {
        return Err(unsupported("clause in an aggregate's arguments", tree));
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if func == AggFn::Count => {
            Ok((func, None))
        }
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => Ok((func, Some(from_ast(arg)?))),
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => {
            Err(invalid(format!("`{name}(*)`{}: only count takes `*`", at(tree.span()))))
        }
        _ => Err(invalid(format!(
            "`{}`{}: `{name}` takes exactly one argument",
            snippet(tree),
            at(tree.span())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::program::compile::col;

    fn int(v: i64) -> Expr {
        Expr::Literal(Value::I64(v))
    }

    fn float(v: f64) -> Expr {
        Expr::Literal(Value::F64(v))
    }

    fn parsed(text: &str) -> Expr {
        parse_filter(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The refusal's message, which must name `part` and the position `line:column`.
    fn refused(text: &str, part: &str, position: Option<(u64, u64)>) -> String {
        let message = match parse_filter(text) {
            Ok(e) => panic!("{text:.200} parsed as {e:?}"),
            Err(Error::Invalid { code: None, message }) => message,
            Err(other) => panic!("{text:.200}: not Invalid: {other:?}"),
        };
        assert!(message.contains(part), "{text:.200}: {message:.200} does not name {part:?}");
        if let Some((line, column)) = position {
            let at = format!("at line {line}, column {column}");
            assert!(message.contains(&at), "{text}: {message:?} does not say {at:?}");
        }
        message
    }

    fn b(e: Expr) -> Box<Expr> {
        Box::new(e)
    }

    #[test]
    fn columns_and_literals() {
        assert_eq!(parsed("amount"), col("amount"));
        assert_eq!(parsed("`select`"), col("select"));
        assert_eq!(parsed("42"), int(42));
        assert_eq!(parsed("18446744073709551615"), Expr::Literal(Value::U64(u64::MAX)));
        assert_eq!(parsed("1.5"), float(1.5));
        assert_eq!(parsed("2e3"), float(2000.0));
        assert_eq!(parsed("'it''s'"), Expr::Literal(Value::Text("it's".into())));
        assert_eq!(parsed("\"dq\""), Expr::Literal(Value::Text("dq".into())));
        assert_eq!(parsed("X'beef'"), Expr::Literal(Value::Bytes(vec![0xbe, 0xef])));
        assert_eq!(parsed("TRUE"), Expr::Literal(Value::Bool(true)));
        assert_eq!(parsed("false"), Expr::Literal(Value::Bool(false)));
        assert_eq!(parsed("NULL"), Expr::Literal(Value::Null));
    }

    #[test]
    fn unary_minus_and_plus() {
        assert_eq!(parsed("-7"), int(-7));
        assert_eq!(parsed("-(7)"), int(-7));
        assert_eq!(parsed("- -7"), int(7));
        assert_eq!(parsed("-2.5"), float(-2.5));
        assert_eq!(parsed("-9223372036854775808"), int(i64::MIN));
        assert_eq!(parsed("+3"), int(3));
        assert_eq!(parsed("-amount"), int(0) - col("amount"));
        // sqlparser's span of a unary operation starts at its operand.
        refused("-18446744073709551615", "out of range", Some((1, 2)));
        refused("-'x'", "cannot negate the text literal", Some((1, 2)));
        refused("99999999999999999999999", "out of range", Some((1, 1)));
    }

    #[test]
    fn arithmetic_with_precedence() {
        assert_eq!(parsed("a + b * 2"), col("a") + col("b") * int(2));
        assert_eq!(parsed("(a + b) * 2"), (col("a") + col("b")) * int(2));
        assert_eq!(parsed("a - b / c % 3"), col("a") - (col("b") / col("c")) % int(3));
    }

    #[test]
    fn comparisons() {
        let a = || col("a");
        assert_eq!(parsed("a = 1"), a().eq(int(1)));
        assert_eq!(parsed("a <> 1"), a().ne(int(1)));
        assert_eq!(parsed("a != 1"), a().ne(int(1)));
        assert_eq!(parsed("a < 1"), a().lt(int(1)));
        assert_eq!(parsed("a <= 1"), a().le(int(1)));
        assert_eq!(parsed("a > 1"), a().gt(int(1)));
        assert_eq!(parsed("a >= b + 1"), a().ge(col("b") + int(1)));
    }

    #[test]
    fn logic_with_precedence() {
        let x = || col("x").eq(int(1));
        let y = || col("y").eq(int(2));
        let z = || col("z").eq(int(3));
        assert_eq!(parsed("x = 1 OR y = 2 AND z = 3"), x().or(y().and(z())));
        assert_eq!(parsed("(x = 1 OR y = 2) AND z = 3"), x().or(y()).and(z()));
        assert_eq!(parsed("NOT x = 1 and y = 2"), x().not().and(y()));
        assert_eq!(parsed("flag"), col("flag"));
    }

    #[test]
    fn null_tests() {
        assert_eq!(parsed("a IS NULL"), col("a").is_null());
        assert_eq!(parsed("a IS NOT NULL"), col("a").is_not_null());
        assert_eq!(parsed("a + 1 is null"), (col("a") + int(1)).is_null());
    }

    #[test]
    fn like() {
        assert_eq!(parsed("name LIKE 'al%'"), col("name").like("al%"));
        assert_eq!(parsed("name NOT LIKE '_eta'"), col("name").like("_eta").not());
        // MySQL keeps the backslash before % and _: the engine's escape.
        assert_eq!(parsed(r"name LIKE 'b\%'"), col("name").like(r"b\%"));
        assert_eq!(parsed(r"name LIKE 'b\%' ESCAPE '\\'"), col("name").like(r"b\%"));
        refused("name LIKE 'a!%' ESCAPE '!'", "unsupported ESCAPE `'!'`", Some((1, 24)));
        refused("name LIKE other", "LIKE needs a 'quoted' pattern, not `other`", Some((1, 11)));
    }

    #[test]
    fn in_lists() {
        let values = vec![Value::I64(1), Value::I64(-2), Value::Text("x".into()), Value::Null];
        assert_eq!(parsed("g IN (1, -2, 'x', NULL)"), col("g").in_list(values));
        assert_eq!(parsed("g NOT IN (3)"), col("g").in_list(vec![Value::I64(3)]).not());
        refused("g IN (1, h)", "IN takes a list of literal values, not `h`", Some((1, 10)));
        refused("g IN (SELECT 1)", "subquery", Some((1, 1)));
    }

    #[test]
    fn between() {
        let a = || col("a");
        assert_eq!(parsed("a BETWEEN 1 AND 5"), a().ge(int(1)).and(a().le(int(5))));
        assert_eq!(parsed("a NOT BETWEEN 1 AND 5"), a().lt(int(1)).or(a().gt(int(5))));
        assert_eq!(
            parsed("a + 1 BETWEEN b AND 5 AND c"),
            Expr::And(b((a() + int(1)).ge(col("b")).and((a() + int(1)).le(int(5)))), b(col("c")))
        );
    }

    #[test]
    fn refusals_name_the_part_and_where() {
        refused("lower(name) = 'a'", "unsupported function call `lower(name)`", Some((1, 1)));
        refused("a = 1 AND t.b = 2", "unsupported qualified name `t.b`", Some((1, 11)));
        refused("a >> 2", "unsupported operator `>>`", Some((1, 1)));
        refused("a DIV 2", "unsupported operator `DIV`", Some((1, 1)));
        refused("a = 1 AND b IS TRUE", "unsupported IS test", Some((1, 11)));
        refused("CASE WHEN a THEN 1 END", "unsupported CASE expression", None);
        refused("CAST(a AS SIGNED) = 1", "unsupported conversion", None);
        refused("name RLIKE 'a.*'", "only LIKE is supported", None);
        refused("a = ?", "unsupported literal `?`", Some((1, 5)));
        refused("X'abc' = a", "is not hex digits in pairs", Some((1, 1)));
        refused("a = 1 b", "unexpected `b` after the expression at line 1, column 7", None);
        refused("a = 1; DROP TABLE t", "unexpected `;`", Some((1, 6)));
        refused("a =", "cannot parse the expression: Expected: an expression", None);
        refused("a = 'open", "cannot parse the expression: Unterminated string", None);
        refused("  ", "an empty expression", None);
        refused("count(*) > 1", "unsupported function call `count(*)`", Some((1, 1)));
    }

    #[test]
    fn refusals_of_size_and_depth() {
        let long = format!("a = '{}'", "x".repeat(MAX_TEXT_BYTES));
        refused(&long, "over the limit of 65536", None);
        let many = format!("a IN (0{})", ", 1".repeat(MAX_TOKENS));
        refused(&many, &format!("tokens, over the limit of {MAX_TOKENS}"), None);
        let chain = format!("a{}", " + a".repeat(MAX_DEPTH + 5));
        refused(&chain, &format!("nests deeper than {MAX_DEPTH} levels"), None);
        let parens = format!("{}a{}", "(".repeat(80), ")".repeat(80));
        refused(&parens, "nests too deeply", None);
        // Within the bounds converts.
        parsed(&format!("a{}", " + a".repeat(MAX_DEPTH - 5)));
        parsed(&format!("a IN (0{})", ",1".repeat(MAX_TOKENS / 2 - 4)));
    }

    /// The deepest trees the token limit lets through: refused (printed in the message,
    /// spanned, dropped) on a quarter of a spawned thread's default stack.
    #[test]
    fn the_deepest_trees_need_little_stack() {
        let chain = |n: usize| "a+".repeat(n) + "a";
        let cases = [
            (chain(MAX_TOKENS / 2 - 1), "nests deeper than"),
            (format!("lower({})", chain(MAX_TOKENS / 2 - 3)), "unsupported function call"),
            (format!("{} >> 1", chain(MAX_TOKENS / 2 - 2)), "unsupported operator `>>`"),
            (format!("{} IS TRUE", chain(MAX_TOKENS / 2 - 2)), "unsupported IS test"),
        ];
        for (text, part) in cases {
            let small = std::thread::Builder::new().stack_size(512 << 10);
            let run = small.spawn(move || parse_filter(&text).map_err(|e| e.to_string())).unwrap();
            let e = run.join().unwrap().unwrap_err();
            assert!(e.contains(part), "{e:.200}");
        }
    }

    #[test]
    fn literals_alone() {
        assert_eq!(parse_literal("-5").unwrap(), Value::I64(-5));
        assert_eq!(parse_literal("'a,b'").unwrap(), Value::Text("a,b".into()));
        assert_eq!(parse_literal("null").unwrap(), Value::Null);
        assert_eq!(parse_literal("true").unwrap(), Value::Bool(true));
        let e = parse_literal("a + 1").unwrap_err().to_string();
        assert!(
            e.contains("`a + 1` is not a literal value") && e.contains("line 1, column 1"),
            "{e}"
        );
    }

    #[test]
    fn aggregates() {
        let agg = |text: &str| parse_aggregate(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(agg("count(*)"), (AggFn::Count, None));
        assert_eq!(agg("COUNT(*)"), (AggFn::Count, None));
        assert_eq!(agg("count(x)"), (AggFn::Count, Some(col("x"))));
        assert_eq!(agg("Sum(price * 2)"), (AggFn::Sum, Some(col("price") * int(2))));
        assert_eq!(agg("min(a)"), (AggFn::Min, Some(col("a"))));
        assert_eq!(agg("MAX(-a)"), (AggFn::Max, Some(int(0) - col("a"))));
        assert_eq!(agg("avg(a)"), (AggFn::Avg, Some(col("a"))));
        assert_eq!(agg("sum(ALL a)"), (AggFn::Sum, Some(col("a"))));
    }

    #[test]
    fn aggregate_refusals() {
        let refused = |text: &str, part: &str| {
            let e = parse_aggregate(text).unwrap_err().to_string();
            assert!(e.contains(part), "{text}: {e:?} does not name {part:?}");
        };
        refused(
            "median(a)",
            "`median(a)` at line 1, column 1 is not an aggregate (one of count(*)",
        );
        refused("a + 1", "`a + 1` at line 1, column 1 is not an aggregate");
        refused("sum(*)", "`sum(*)` at line 1, column 1: only count takes `*`");
        refused("sum(a, b)", "`sum` takes exactly one argument");
        refused("count()", "`count` takes exactly one argument");
        refused("count(DISTINCT a)", "unsupported DISTINCT aggregate `count(DISTINCT a)`");
        refused("sum(a) OVER ()", "unsupported aggregate form");
        refused("sum(lower(a))", "unsupported function call `lower(a)` at line 1, column 5");
        refused("sum(a) + 1", "is not an aggregate");
        refused("sum(a", "cannot parse the expression");
    }
}
