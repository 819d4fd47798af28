//! The `--range` syntax of `blockwire scan`: a range of an ordered index on its leading
//! columns, as [`client::Range`].
//!
//! ```text
//! RANGE   := OPEN LOW ".." HIGH CLOSE  |  "=" VALUES
//! OPEN    := "[" (LOW included) | "(" (LOW excluded)
//! CLOSE   := "]" (HIGH included) | ")" (HIGH excluded)
//! LOW     := VALUES | nothing (no lower bound)
//! HIGH    := VALUES | nothing (no upper bound)
//! VALUES  := LITERAL ("," LITERAL)*      values of the first index columns, in index order
//! ```
//! Literals follow the expression rules ([`client::expr::parse_literal`]): numbers, `'text'`,
//! `true`, `false`, `NULL`, `X'hex'`. Commas and `..` inside quotes are text; a decimal is
//! written with digits on both sides of its point (`1.5`, not `1.` or `.5`) so that `..` is
//! never part of a number.

use client::{Range, RangeEnd, Value};

use crate::{input, Result};

/// A `--range` argument as a range.
pub(crate) fn parse_range(text: &str) -> Result<Range> {
    let fail = |why: &str| input(format!("--range {text:?}: {why}"));
    let body = text.trim();
    if let Some(values) = body.strip_prefix('=') {
        let values = literals(values).map_err(|e| fail(&e))?;
        if values.is_empty() {
            return Err(fail("`=` needs at least one value"));
        }
        return Ok(Range::eq(values));
    }
    let low_inclusive = match body.chars().next() {
        Some('[') => true,
        Some('(') => false,
        _ => return Err(fail("a range starts with [ or ( (or is =VALUES)")),
    };
    let high_inclusive = match body.chars().last() {
        Some(']') if body.len() > 1 => true,
        Some(')') if body.len() > 1 => false,
        _ => return Err(fail("a range ends with ] or )")),
    };
    let inner = &body[1..body.len() - 1];
    let (low, high) = match top_level(inner, "..").as_slice() {
        [at] => (&inner[..*at], &inner[at + 2..]),
        [] => return Err(fail("a range needs `..` between its low and high ends")),
        _ => return Err(fail("a range has one `..` (put `..` in text inside quotes)")),
    };
    let low = literals(low).map_err(|e| fail(&format!("low end: {e}")))?;
    let high = literals(high).map_err(|e| fail(&format!("high end: {e}")))?;
    Ok(Range {
        low: RangeEnd { values: low, inclusive: low_inclusive },
        high: RangeEnd { values: high, inclusive: high_inclusive },
    })
}

/// Comma-separated literals; nothing (only spaces) is an empty list.
fn literals(text: &str) -> std::result::Result<Vec<Value>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut values = Vec::new();
    let mut start = 0;
    let commas = top_level(text, ",");
    for end in commas.iter().copied().chain([text.len()]) {
        let item = &text[start..end];
        if item.trim().is_empty() {
            return Err(format!("an empty value in {text:?}"));
        }
        let value = client::expr::parse_literal(item).map_err(|e| match e {
            client::Error::Invalid { message, .. } => format!("{:?}: {message}", item.trim()),
            other => format!("{:?}: {other}", item.trim()),
        })?;
        values.push(value);
        start = end + 1;
    }
    Ok(values)
}

/// Byte offsets of `needle` in `text` outside quoted strings (`'..'` and `".."`, where a
/// backslash escapes the next character and a doubled quote is a quote).
fn top_level(text: &str, needle: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if bytes[i..].starts_with(needle.as_bytes()) => {
                found.push(i);
                i += needle.len();
                continue;
            }
            None => {}
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(values: Vec<Value>, inclusive: bool) -> RangeEnd {
        RangeEnd { values, inclusive }
    }

    fn range(text: &str) -> Range {
        parse_range(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(text: &str, part: &str) {
        let e = parse_range(text).expect_err(text).to_string();
        assert!(e.starts_with(&format!("--range {text:?}: ")), "{e}");
        assert!(e.contains(part), "{text}: {e:?} does not name {part:?}");
    }

    #[test]
    fn bounds_and_brackets() {
        let r = range("[5..10)");
        assert_eq!(r.low, end(vec![Value::I64(5)], true));
        assert_eq!(r.high, end(vec![Value::I64(10)], false));
        let r = range("(-1.5..2.5]");
        assert_eq!(r.low, end(vec![Value::F64(-1.5)], false));
        assert_eq!(r.high, end(vec![Value::F64(2.5)], true));
        let r = range(" [3, 'a'..3, 'b'] ");
        assert_eq!(r.low, end(vec![Value::I64(3), Value::Text("a".into())], true));
        assert_eq!(r.high, end(vec![Value::I64(3), Value::Text("b".into())], true));
    }

    #[test]
    fn open_ends() {
        let r = range("[5..]");
        assert_eq!((r.low, r.high.values), (end(vec![Value::I64(5)], true), vec![]));
        let r = range("(..10)");
        assert_eq!((r.low.values, r.high), (vec![], end(vec![Value::I64(10)], false)));
        let r = range("[..]");
        assert!(r.low.values.is_empty() && r.high.values.is_empty());
    }

    #[test]
    fn equality_on_a_prefix() {
        assert_eq!(range("=7"), Range::eq(vec![Value::I64(7)]));
        let values = vec![Value::I64(7), Value::Text("x".into()), Value::Null, Value::Bool(true)];
        assert_eq!(range("=7, 'x', NULL, true"), Range::eq(values));
    }

    #[test]
    fn quotes_hide_separators() {
        let r = range("['a..b', 'c,d'..'it''s', \"e\\\"..\"]");
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(r.low.values, vec![text("a..b"), text("c,d")]);
        assert_eq!(r.high.values, vec![text("it's"), text("e\"..")]);
    }

    #[test]
    fn refusals() {
        refused("5..10", "starts with [ or (");
        refused("[5..10", "ends with ] or )");
        refused("[", "ends with ] or )");
        refused("[5,10]", "needs `..`");
        refused("[1..2..3]", "has one `..`");
        refused("[1,,2..]", "low end: an empty value");
        refused("[..x]", "high end: \"x\": `x` is not a literal value");
        refused("[..1 + 2]", "is not a literal value");
        refused("[..'open]", "high end: \"'open\": cannot parse the expression");
        refused("=", "needs at least one value");
        refused("= 1, lower(a)", "unsupported function call `lower(a)`");
    }
}
