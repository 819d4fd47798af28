//! `blockwire sql`: SQL statements from `--execute`, a file or standard input (split at `;`
//! outside quotes), or an interactive prompt with line editing and history when standard
//! input is a terminal. Each result prints as an aligned table (with a row count) or as JSON
//! lines; EXPLAIN prints its plan.

use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;

use client::sql::SqlRows;
use client::{Session, Value};
use serde_json::Value as Json;
use sqlparser::dialect::MySqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::output::{aligned, json_object, json_of};
use crate::{input, CliError, Result};

/// Where the statements come from.
#[derive(Debug, clap::Args)]
pub(crate) struct SqlArgs {
    /// Runs these statements (separated by `;`) and exits.
    #[arg(short = 'e', long, value_name = "SQL", conflicts_with = "file")]
    pub execute: Option<String>,
    /// Runs the statements in this file (`-` for standard input) and exits.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

pub(crate) const HELP: &str = "\
Statements: SELECT (WITH non-recursive CTEs; INNER and LEFT JOIN ... ON equalities reaching the
joined table by its primary key or an ordered index, or a CTE; WHERE, GROUP BY, HAVING,
ORDER BY, LIMIT / OFFSET; USE / FORCE / IGNORE INDEX) and EXPLAIN SELECT. Expressions:
arithmetic, comparisons, AND / OR / NOT, LIKE, IN, BETWEEN, IS [NOT] NULL, CASE WHEN,
GREATEST / LEAST, EXTRACT(field FROM ts), DATE_ADD / DATE_SUB(ts, INTERVAL n unit),
ts +/- INTERVAL n unit, TIMESTAMP 'YYYY-MM-DD HH:MM:SS' (UTC), NOW(); aggregates COUNT(*),
COUNT, SUM, MIN, MAX, AVG. Everything runs pushed down to the data nodes; a query that cannot
is refused with the part it cannot run.

Without --execute or FILE, and with a terminal on standard input: an interactive prompt
(statements end with `;`; `quit` or Ctrl-D leaves; history in ~/.blockwire_history).

Examples:
  blockwire --config c.toml sql -e \"SELECT card, COUNT(*) FROM tx GROUP BY card\"
  blockwire --config c.toml --format json sql queries.sql";

/// Runs the statements `args` names (or the prompt); the first failing statement of a
/// script ends it with its error.
pub(crate) fn run(s: &mut Session<'_>, args: &SqlArgs, json: bool, out: &mut impl Write) -> Result<()> {
    let text = match (&args.execute, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) if path.as_os_str() != "-" => std::fs::read_to_string(path)
            .map_err(|e| input(format!("reading {}: {e}", path.display())))?,
        (None, None) if io::stdin().is_terminal() => return interactive(s, json, out),
        _ => {
            let mut text = String::new();
            io::stdin().read_to_string(&mut text).map_err(|e| input(format!("reading standard input: {e}")))?;
            text
        }
    };
    for statement in statements(&text)? {
        let rows = s.sql(&statement)?;
        print(&rows, json, out)?;
    }
    Ok(())
}

/// The statements of `text`, split at `;` tokens (not inside quotes or comments); empty ones
/// dropped.
pub(crate) fn statements(text: &str) -> Result<Vec<String>> {
    let tokens = Tokenizer::new(&MySqlDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| input(format!("cannot read the statements: {e}")))?;
    // Byte offsets of each line's start, to turn a token's (line, column) into an offset.
    let mut lines = vec![0];
    lines.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    let offset = |line: u64, column: u64| -> usize {
        let start = lines.get(line.saturating_sub(1) as usize).copied().unwrap_or(text.len());
        let rest = &text[start..];
        rest.char_indices().nth(column.saturating_sub(1) as usize).map_or(text.len(), |(i, _)| start + i)
    };
    let mut out = Vec::new();
    let mut from = 0;
    for t in tokens.iter().filter(|t| t.token == Token::SemiColon) {
        let at = offset(t.span.start.line, t.span.start.column);
        out.push(&text[from..at]);
        from = (at + 1).min(text.len());
    }
    out.push(&text[from..]);
    Ok(out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

fn interactive(s: &mut Session<'_>, json: bool, out: &mut impl Write) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new().map_err(|e| input(format!("the prompt: {e}")))?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".blockwire_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "blockwire> " } else { "        -> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(input(format!("the prompt: {e}"))),
        };
        let trimmed = line.trim();
        if pending.is_empty() && matches!(trimmed.to_ascii_lowercase().as_str(), "quit" | "exit" | "\\q") {
            break;
        }
        if trimmed.is_empty() && pending.is_empty() {
            continue;
        }
        pending += &line;
        pending.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(pending.trim_end());
        let text = std::mem::take(&mut pending);
        match statements(&text) {
            Ok(list) => {
                for statement in list {
                    match s.sql(&statement) {
                        Ok(rows) => print(&rows, json, out)?,
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// A result as an aligned table with its row count, or as JSON lines (one object per row).
pub(crate) fn print(rows: &SqlRows, json: bool, out: &mut impl Write) -> Result<()> {
    let text = if json {
        let mut text = String::new();
        for row in &rows.rows {
            let fields: Vec<(&str, Json)> =
                rows.columns.iter().map(String::as_str).zip(row.iter().map(json_of)).collect();
            text += &json_object(&fields);
        }
        text
    } else if rows.columns == ["plan"] {
        rows.rows.iter().map(|r| format!("{}\n", cell(&r[0]))).collect()
    } else {
        let mut table = vec![rows.columns.clone()];
        table.extend(rows.rows.iter().map(|r| r.iter().map(cell).collect()));
        let n = rows.rows.len();
        format!("{}({n} row{})\n", aligned(&table), if n == 1 { "" } else { "s" })
    };
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(CliError::Output)
}

/// A value as a table cell: text as written, timestamps as UTC date and time.
fn cell(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Timestamp(t) => timestamp_text(*t),
        v => v.to_string(),
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
fn timestamp_text(micros: i64) -> String {
    use engine::program::calendar::{extract, TimeField as F};
    let f = |field| extract(micros, field);
    let (y, mo, d, h, mi, s, us) =
        (f(F::Year), f(F::Month), f(F::Day), f(F::Hour), f(F::Minute), f(F::Second), f(F::Microsecond));
    let base = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
    if us == 0 {
        base
    } else {
        format!("{base}.{us:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes() {
        let list = statements("SELECT 'a;b' FROM t; -- c;\nSELECT 2 FROM t;;  ").unwrap();
        assert_eq!(list, vec!["SELECT 'a;b' FROM t", "-- c;\nSELECT 2 FROM t"]);
        assert!(statements("  ;; ").unwrap().is_empty());
    }

    #[test]
    fn timestamps_print_as_utc() {
        assert_eq!(timestamp_text(0), "1970-01-01 00:00:00");
        assert_eq!(timestamp_text(1_796_686_184_123_456), "2026-12-07 23:29:44.123456");
        assert_eq!(timestamp_text(-1), "1969-12-31 23:59:59.999999");
    }
}
