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
use engine::program::{AggFn, ArithOp, CmpOp, TimeField};
use engine::row::Value;
use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments,
    InTarget, ObjectNamePart, Spanned, UnaryOperator,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};

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
    if text.trim().is_empty() {
        return Err(invalid("an empty expression"));
    }
    let dialect = MySqlDialect {};
    let tokens = bounded_tokens(text, MAX_TEXT_BYTES, MAX_TOKENS, "expression")?;
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

/// The tokens of `text` (MySQL dialect, with positions), refused when it is over `max_bytes`
/// or has more than `max_tokens` tokens besides whitespace: the bound on the depth of any
/// tree parsed from them. `what` names the text in messages ("expression", "statement").
pub(crate) fn bounded_tokens(text: &str, max_bytes: usize, max_tokens: usize, what: &str) -> Result<Vec<TokenWithSpan>> {
    if text.len() > max_bytes {
        return Err(invalid(format!("the {what} is {} bytes, over the limit of {max_bytes}", text.len())));
    }
    let tokens = Tokenizer::new(&MySqlDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| invalid(format!("cannot parse the {what}: {e}")))?;
    let count = tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).count();
    if count > max_tokens {
        return Err(invalid(format!("the {what} has {count} tokens, over the limit of {max_tokens}")));
    }
    Ok(tokens)
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

/// What the caller of a conversion decides itself: what a name refers to, what an aggregate
/// call becomes, and the statement's time (`NOW()`).
pub trait Context {
    /// A column named by `parts` (`t.c` has two); `tree` is the name as written.
    fn column(&mut self, parts: &[String], tree: &ast::Expr) -> Result<Expr>;
    /// An aggregate call (`arg` is `None` for `COUNT(*)`).
    fn aggregate(&mut self, func: AggFn, arg: Option<&ast::Expr>, tree: &ast::Expr) -> Result<Expr>;
    /// The statement's time, microseconds since the epoch (one value per statement).
    fn now(&mut self) -> i64;
}

/// The context of a lone expression (`--where`, `--agg`): plain column names only, no
/// aggregate inside an expression, `NOW()` read from the clock once.
#[derive(Debug, Default)]
pub struct Plain {
    now: Option<i64>,
}

impl Context for Plain {
    fn column(&mut self, parts: &[String], tree: &ast::Expr) -> Result<Expr> {
        match parts {
            [name] => Ok(Expr::Column(name.clone())),
            _ => Err(unsupported("qualified name", tree)),
        }
    }

    fn aggregate(&mut self, _: AggFn, _: Option<&ast::Expr>, tree: &ast::Expr) -> Result<Expr> {
        Err(unsupported("function call", tree))
    }

    fn now(&mut self) -> i64 {
        *self.now.get_or_insert_with(clock_micros)
    }
}

/// The system clock, microseconds since the epoch.
pub fn clock_micros() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Converts a parsed expression (no aggregates: those are [`aggregate_from_ast`]'s).
pub fn from_ast(tree: &ast::Expr) -> Result<Expr> {
    convert(tree, 0, &mut Plain::default())
}

/// Converts a parsed expression, names, aggregates and `NOW()` resolved by `context`.
pub fn from_ast_in(tree: &ast::Expr, context: &mut dyn Context) -> Result<Expr> {
    convert(tree, 0, context)
}

/// `tree` as an [`Expr`]; `depth` counts the levels above it.
fn convert(tree: &ast::Expr, depth: usize, cx: &mut dyn Context) -> Result<Expr> {
    if depth >= MAX_DEPTH {
        return Err(invalid(format!("the expression nests deeper than {MAX_DEPTH} levels")));
    }
    let inner = |e: &ast::Expr, cx: &mut dyn Context| convert(e, depth + 1, cx).map(boxed);
    Ok(match tree {
        ast::Expr::Identifier(ident) => cx.column(std::slice::from_ref(&ident.value), tree)?,
        ast::Expr::CompoundIdentifier(parts) => {
            let parts: Vec<String> = parts.iter().map(|p| p.value.clone()).collect();
            cx.column(&parts, tree)?
        }
        ast::Expr::Nested(e) => convert(e, depth + 1, cx)?,
        ast::Expr::Value(v) => Expr::Literal(literal(&v.value, v.span)?),
        ast::Expr::TypedString(t) => typed_string(tree, t)?,
        ast::Expr::BinaryOp { left, op, right } => {
            if let (BinaryOperator::Plus | BinaryOperator::Minus, ast::Expr::Interval(iv)) = (op, right.as_ref()) {
                let minus = *op == BinaryOperator::Minus;
                let base = convert(left, depth + 1, cx)?;
                return interval_add(tree, base, iv, minus, depth, cx);
            }
            if let (BinaryOperator::Plus, ast::Expr::Interval(iv)) = (op, left.as_ref()) {
                let base = convert(right, depth + 1, cx)?;
                return interval_add(tree, base, iv, false, depth, cx);
            }
            let op = Binary::of(tree, op)?;
            let left = inner(left, cx)?;
            op.build(left, inner(right, cx)?)
        }
        ast::Expr::Case { operand, conditions, else_result, .. } => {
            let operand = match operand {
                Some(o) => Some(convert(o, depth + 1, cx)?),
                None => None,
            };
            let mut whens = Vec::with_capacity(conditions.len());
            for w in conditions {
                let condition = convert(&w.condition, depth + 1, cx)?;
                let condition = match &operand {
                    Some(o) => Expr::Compare(CmpOp::Eq, boxed(o.clone()), boxed(condition)),
                    None => condition,
                };
                whens.push((condition, convert(&w.result, depth + 1, cx)?));
            }
            let otherwise = match else_result {
                Some(e) => Some(inner(e, cx)?),
                None => None,
            };
            Expr::Case(whens, otherwise)
        }
        ast::Expr::Extract { field, expr, .. } => {
            let field = time_field(field).ok_or_else(|| {
                invalid(format!(
                    "unsupported EXTRACT field {field} in `{}`{} (supported: YEAR, QUARTER, MONTH, DAY, HOUR, MINUTE, SECOND, MICROSECOND)",
                    snippet(tree),
                    at(tree.span())
                ))
            })?;
            match convert(expr, depth + 1, cx)? {
                Expr::Literal(Value::Timestamp(t) | Value::I64(t)) => {
                    Expr::Literal(Value::I64(engine::program::calendar::extract(t, field)))
                }
                e => Expr::Extract(field, boxed(e)),
            }
        }
        ast::Expr::Function(call) => function(tree, call, depth, cx)?,
        ast::Expr::UnaryOp { op, expr } => unary(tree, *op, expr, depth, cx)?,
        ast::Expr::IsNull(e) => Expr::IsNull(inner(e, cx)?),
        ast::Expr::IsNotNull(e) => Expr::IsNotNull(inner(e, cx)?),
        ast::Expr::Like { negated, any: false, expr, pattern, escape_char } => {
            check_escape(escape_char.as_deref())?;
            let like = Expr::Like(inner(expr, cx)?, text_pattern(pattern, depth, cx)?);
            negate_if(*negated, like)
        }
        ast::Expr::In { expr, target: InTarget::List(items), negated, global: false } => {
            let values =
                items.iter().map(|item| list_value(item, depth, cx)).collect::<Result<Vec<_>>>()?;
            negate_if(*negated, Expr::In(inner(expr, cx)?, values))
        }
        ast::Expr::Between { expr, negated, low, high } => {
            let e = convert(expr, depth + 1, cx)?;
            let low = inner(low, cx)?;
            between(e, *negated, low, inner(high, cx)?)
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

fn unary(
    tree: &ast::Expr,
    op: UnaryOperator,
    operand: &ast::Expr,
    depth: usize,
    cx: &mut dyn Context,
) -> Result<Expr> {
    let mut operand = || convert(operand, depth + 1, cx);
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
fn text_pattern(pattern: &ast::Expr, depth: usize, cx: &mut dyn Context) -> Result<String> {
    match convert(pattern, depth + 1, cx)? {
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
fn list_value(item: &ast::Expr, depth: usize, cx: &mut dyn Context) -> Result<Value> {
    match convert(item, depth + 1, cx)? {
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
    let (func, arg) = aggregate_call(tree)?;
    Ok((func, arg.map(from_ast).transpose()?))
}

/// The call's name when it is a plain one-part name.
fn call_name(call: &ast::Function) -> Option<&str> {
    match call.name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Some(ident.value.as_str()),
        _ => None,
    }
}

/// An aggregate call's function and argument as written (`None` for `count(*)`).
pub fn aggregate_call(tree: &ast::Expr) -> Result<(AggFn, Option<&ast::Expr>)> {
    let not_aggregate = || {
        invalid(format!(
            "`{}`{} is not an aggregate (one of {AGGREGATES})",
            snippet(tree),
            at(tree.span())
        ))
    };
    let ast::Expr::Function(call) = tree else { return Err(not_aggregate()) };
    let name = call_name(call).ok_or_else(not_aggregate)?;
    let func = aggregate_function(name).ok_or_else(not_aggregate)?;
    let list = plain_arguments(tree, call, "aggregate")?;
    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return Err(unsupported("DISTINCT aggregate", tree));
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if func == AggFn::Count => {
            Ok((func, None))
        }
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => Ok((func, Some(arg))),
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

/// The argument list of a plain call (no FILTER, OVER, WITHIN GROUP, clauses).
fn plain_arguments<'t>(
    tree: &ast::Expr,
    call: &'t ast::Function,
    what: &str,
) -> Result<&'t ast::FunctionArgumentList> {
    let plain = !call.uses_odbc_syntax
        && matches!(call.parameters, FunctionArguments::None)
        && call.within_group.is_empty()
        && call.filter.is_none()
        && call.null_treatment.is_none()
        && call.over.is_none();
    if !plain {
        return Err(unsupported(&format!("{what} form (FILTER, OVER, WITHIN GROUP, ...)"), tree));
    }
    let FunctionArguments::List(list) = &call.args else {
        let name = call_name(call).unwrap_or("the function");
        return Err(invalid(format!("`{name}` needs its arguments in parentheses{}", at(tree.span()))));
    };
    if !list.clauses.is_empty() {
        return Err(unsupported(&format!("clause in a {what}'s arguments"), tree));
    }
    Ok(list)
}

/// The functions an expression may call besides aggregates.
const FUNCTIONS: &str = "GREATEST, LEAST, DATE_ADD, DATE_SUB, NOW, CURRENT_TIMESTAMP";

/// A function call: an aggregate (the context decides), or one of [`FUNCTIONS`].
fn function(tree: &ast::Expr, call: &ast::Function, depth: usize, cx: &mut dyn Context) -> Result<Expr> {
    let Some(name) = call_name(call).map(str::to_ascii_lowercase) else {
        return Err(unsupported("function call", tree));
    };
    if let Some(func) = aggregate_function(&name) {
        let (_, arg) = aggregate_call(tree)?;
        return cx.aggregate(func, arg, tree);
    }
    let known = ["greatest", "least", "date_add", "date_sub", "adddate", "subdate", "now", "current_timestamp", "localtimestamp"];
    if !known.contains(&name.as_str()) {
        return Err(invalid(format!(
            "unsupported function call `{}`{} (functions: {FUNCTIONS}, and the aggregates {AGGREGATES})",
            snippet(tree),
            at(tree.span())
        )));
    }
    if matches!(call.args, FunctionArguments::None) && name != "greatest" && name != "least" {
        if let "now" | "current_timestamp" | "localtimestamp" = name.as_str() {
            return Ok(Expr::Literal(Value::Timestamp(cx.now())));
        }
    }
    let list = plain_arguments(tree, call, "function")?;
    let mut args = Vec::with_capacity(list.args.len());
    for a in &list.args {
        match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e),
            _ => return Err(unsupported("argument", tree)),
        }
    }
    let count = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(invalid(format!("`{}`{}: {name} takes {n} arguments", snippet(tree), at(tree.span()))))
        }
    };
    match name.as_str() {
        "now" | "current_timestamp" | "localtimestamp" => {
            count(0)?;
            Ok(Expr::Literal(Value::Timestamp(cx.now())))
        }
        "greatest" | "least" => {
            if args.is_empty() {
                return Err(invalid(format!("`{}`{}: {name} needs arguments", snippet(tree), at(tree.span()))));
            }
            let values = args.iter().map(|a| convert(a, depth + 1, cx)).collect::<Result<Vec<_>>>()?;
            Ok(Expr::Extreme(name == "greatest", values))
        }
        _ => {
            count(2)?;
            let minus = name == "date_sub" || name == "subdate";
            let base = convert(args[0], depth + 1, cx)?;
            match args[1] {
                ast::Expr::Interval(iv) => interval_add(tree, base, iv, minus, depth, cx),
                other => Err(invalid(format!(
                    "`{name}` takes INTERVAL n unit as its second argument, not `{}`{}",
                    snippet(other),
                    at(other.span())
                ))),
            }
        }
    }
}

/// How an interval's unit moves a timestamp.
enum Step {
    /// This many microseconds per unit.
    Micros(i64),
    /// This many months per unit.
    Months(i64),
}

/// The unit of an interval.
fn step(field: &ast::DateTimeField) -> Option<Step> {
    use ast::DateTimeField as F;
    Some(match field {
        F::Microsecond | F::Microseconds => Step::Micros(1),
        F::Millisecond | F::Milliseconds => Step::Micros(1_000),
        F::Second | F::Seconds => Step::Micros(1_000_000),
        F::Minute | F::Minutes => Step::Micros(60_000_000),
        F::Hour | F::Hours => Step::Micros(3_600_000_000),
        F::Day | F::Days => Step::Micros(86_400_000_000),
        F::Week(None) | F::Weeks => Step::Micros(7 * 86_400_000_000),
        F::Month | F::Months => Step::Months(1),
        F::Quarter => Step::Months(3),
        F::Year | F::Years => Step::Months(12),
        _ => return None,
    })
}

/// `base + interval` (or `-`): microsecond units as arithmetic, calendar units as month
/// arithmetic; folded to a literal when both sides are literals.
fn interval_add(
    tree: &ast::Expr,
    base: Expr,
    iv: &ast::Interval,
    minus: bool,
    depth: usize,
    cx: &mut dyn Context,
) -> Result<Expr> {
    let bad = |why: &str| invalid(format!("{why} in `{}`{}", snippet(tree), at(tree.span())));
    if iv.last_field.is_some() || iv.fractional_seconds_precision.is_some() {
        return Err(bad("unsupported compound interval (one unit only, such as INTERVAL 90 MINUTE)"));
    }
    let field = iv.leading_field.as_ref().ok_or_else(|| bad("an interval needs a unit"))?;
    let unit = step(field).ok_or_else(|| {
        bad(&format!("unsupported interval unit {field} (MICROSECOND to YEAR)"))
    })?;
    let amount = match convert(&iv.value, depth + 1, cx)? {
        // MySQL reads INTERVAL '2' HOUR as 2.
        Expr::Literal(Value::Text(t)) => Expr::Literal(Value::I64(
            t.trim().parse().map_err(|_| bad(&format!("interval amount '{t}' is not an integer")))?,
        )),
        e => e,
    };
    let overflow = || bad("the interval overflows");
    let (per, months) = match unit {
        Step::Micros(k) => (k, false),
        Step::Months(k) => (k, true),
    };
    let sign = if minus { -1 } else { 1 };
    match (&base, &amount) {
        (Expr::Literal(b), Expr::Literal(a)) if b.as_i64().is_some() && a.as_i64().is_some() => {
            let (b, a) = (b.as_i64().unwrap_or(0), a.as_i64().unwrap_or(0));
            let delta = a.checked_mul(per).and_then(|d| d.checked_mul(sign)).ok_or_else(overflow)?;
            let t = if months {
                engine::program::calendar::add_months(b, delta)
            } else {
                b.checked_add(delta)
            };
            return Ok(Expr::Literal(Value::Timestamp(t.ok_or_else(overflow)?)));
        }
        (Expr::Literal(Value::Null), _) | (_, Expr::Literal(Value::Null)) => return Ok(Expr::Literal(Value::Null)),
        _ => {}
    }
    let delta = match amount {
        Expr::Literal(a) => {
            let a = a.as_i64().ok_or_else(|| bad("an interval amount must be an integer"))?;
            Expr::Literal(Value::I64(a.checked_mul(per).and_then(|d| d.checked_mul(sign)).ok_or_else(overflow)?))
        }
        e => {
            let scaled = if per == 1 { e } else { Expr::Arith(ArithOp::Mul, boxed(e), boxed(Expr::Literal(Value::I64(per)))) };
            if minus {
                Expr::Arith(ArithOp::Sub, boxed(Expr::Literal(Value::I64(0))), boxed(scaled))
            } else {
                scaled
            }
        }
    };
    Ok(if months { Expr::AddMonths(boxed(base), boxed(delta)) } else { Expr::Arith(ArithOp::Add, boxed(base), boxed(delta)) })
}

/// The timestamp field `EXTRACT` names.
fn time_field(field: &ast::DateTimeField) -> Option<TimeField> {
    use ast::DateTimeField as F;
    Some(match field {
        F::Year | F::Years => TimeField::Year,
        F::Quarter => TimeField::Quarter,
        F::Month | F::Months => TimeField::Month,
        F::Day | F::Days => TimeField::Day,
        F::Hour | F::Hours => TimeField::Hour,
        F::Minute | F::Minutes => TimeField::Minute,
        F::Second | F::Seconds => TimeField::Second,
        F::Microsecond | F::Microseconds => TimeField::Microsecond,
        _ => return None,
    })
}

/// `TIMESTAMP '2026-12-07 10:00:00[.ffffff]'`, `DATETIME '...'` or `DATE '2026-12-07'`.
fn typed_string(tree: &ast::Expr, t: &ast::TypedString) -> Result<Expr> {
    use ast::DataType as D;
    let text = t.value.value.clone().into_string();
    match (&t.data_type, text) {
        (D::Timestamp(..) | D::Datetime(_) | D::Date, Some(text)) => {
            let micros = parse_timestamp(&text).ok_or_else(|| {
                invalid(format!(
                    "`{}`{}: '{text}' is not a date and time (YYYY-MM-DD[ HH:MM:SS[.ffffff]], UTC)",
                    snippet(tree),
                    at(tree.span())
                ))
            })?;
            Ok(Expr::Literal(Value::Timestamp(micros)))
        }
        _ => Err(unsupported("typed literal", tree)),
    }
}

/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` (or `T` between) as UTC microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (text, None),
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) =
        (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let month_days = [31, if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || day < 1 || day > month_days[(m - 1) as usize] {
        return None;
    }
    let mut micros = engine::program::calendar::days_from_civil(y, m, day) * 86_400_000_000;
    if let Some(time) = time {
        let (hms, fraction) = match time.split_once('.') {
            Some((a, f)) => (a, Some(f)),
            None => (time, None),
        };
        let mut p = hms.splitn(3, ':');
        let (h, mi, s): (i64, i64, i64) =
            (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next().unwrap_or("0").parse().ok()?);
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..60).contains(&s) {
            return None;
        }
        micros += ((h * 60 + mi) * 60 + s) * 1_000_000;
        if let Some(f) = fraction {
            if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            micros += f.parse::<i64>().ok()? * 10i64.pow(6 - f.len() as u32);
        }
    }
    Some(micros)
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

    #[test]
    fn case_greatest_least_and_time() {
        let a = || col("a");
        assert_eq!(
            parsed("CASE WHEN a > 1 THEN 2 WHEN a IS NULL THEN 3 END"),
            Expr::Case(vec![(a().gt(int(1)), int(2)), (a().is_null(), int(3))], None)
        );
        assert_eq!(
            parsed("CASE a WHEN 1 THEN 'x' ELSE 'y' END"),
            Expr::Case(
                vec![(a().eq(int(1)), Expr::Literal(Value::Text("x".into())))],
                Some(b(Expr::Literal(Value::Text("y".into()))))
            )
        );
        assert_eq!(parsed("GREATEST(a, 1, b)"), Expr::Extreme(true, vec![a(), int(1), col("b")]));
        assert_eq!(parsed("least(a)"), Expr::Extreme(false, vec![a()]));
        assert_eq!(parsed("EXTRACT(HOUR FROM ts)"), Expr::Extract(TimeField::Hour, b(col("ts"))));
        let noon = 1_796_637_600_000_000; // 2026-12-07 10:00:00 UTC
        let ts = |v: i64| Expr::Literal(Value::Timestamp(v));
        assert_eq!(parsed("TIMESTAMP '2026-12-07 10:00:00'"), ts(noon));
        assert_eq!(parsed("TIMESTAMP '2026-12-07 10:00:00.25'"), ts(noon + 250_000));
        assert_eq!(parsed("DATE '2026-12-07'"), ts(noon - 10 * 3_600_000_000));
        assert_eq!(parsed("TIMESTAMP '2026-12-07 10:00:00' - INTERVAL 1 HOUR"), ts(noon - 3_600_000_000));
        assert_eq!(parsed("DATE_ADD(TIMESTAMP '2026-12-07 10:00:00', INTERVAL '2' DAY)"), ts(noon + 2 * 86_400_000_000));
        assert_eq!(
            parsed("DATE_SUB(TIMESTAMP '2026-03-31 10:00:00', INTERVAL 1 MONTH)"),
            parsed("TIMESTAMP '2026-02-28 10:00:00'")
        );
        assert_eq!(parsed("EXTRACT(MONTH FROM TIMESTAMP '2026-12-07 10:00:00')"), int(12));
        assert_eq!(parsed("ts + INTERVAL 90 MINUTE"), col("ts") + int(90 * 60_000_000));
        assert_eq!(parsed("ts - INTERVAL n SECOND"), col("ts") + (int(0) - col("n") * int(1_000_000)));
        assert_eq!(parsed("DATE_ADD(ts, INTERVAL 1 QUARTER)"), Expr::AddMonths(b(col("ts")), b(int(3))));
        assert_eq!(parsed("INTERVAL 1 DAY + ts"), col("ts") + int(86_400_000_000));
        let now = match parsed("NOW()") {
            Expr::Literal(Value::Timestamp(t)) => t,
            other => panic!("NOW() is {other:?}"),
        };
        assert!((now - clock_micros()).abs() < 60_000_000);
        refused("TIMESTAMP '2026-02-30 00:00:00'", "is not a date and time", None);
        refused("TIMESTAMP '2026-12-07 24:00:00'", "is not a date and time", None);
        refused("ts + INTERVAL 1 WEEK_DAY", "", None);
        refused("EXTRACT(DOW FROM ts)", "unsupported EXTRACT field", None);
        refused("DATE_ADD(ts, 3)", "takes INTERVAL n unit", None);
        refused("ts + INTERVAL '1:30' HOUR_MINUTE", "", None);
        refused("TIMESTAMP '9999-12-31 00:00:00' + INTERVAL 9223372036854775807 DAY", "overflows", None);
        refused("lower(a)", "unsupported function call `lower(a)`", Some((1, 1)));
    }
}
