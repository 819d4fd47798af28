//! Values from their text and JSON forms, by the column's type, and rows checked against a
//! table. Every error names the table, the column and the value (quoted, cut when long).

use client::{Column, ColumnType, Table, Value};
use serde_json::Value as Json;

use crate::{input, CliError, Result};

/// A value as it is shown in an error: quoted, and cut when long.
fn shown(text: &str) -> String {
    format!("{:?}{}", cut(text), if cut(text).len() < text.len() { "..." } else { "" })
}

/// The first 60 characters of `text`.
fn cut(text: &str) -> &str {
    text.char_indices().nth(60).map_or(text, |(at, _)| &text[..at])
}

fn bad_value(table: &Table, column: &Column, value: &str, what: &str) -> CliError {
    input(format!("table {:?}, column {:?}: {value} {what}", table.name(), column.name))
}

/// What a column's values look like, for "... is not <this>".
fn a_value_of(ty: ColumnType) -> String {
    match ty {
        ColumnType::I32 => "an i32".into(),
        ColumnType::I64 => "an i64".into(),
        ColumnType::U64 => "a u64".into(),
        ColumnType::F64 => "an f64".into(),
        ColumnType::Bool => "a bool (true or false)".into(),
        ColumnType::Timestamp => "a timestamp (integer microseconds since the Unix epoch)".into(),
        ColumnType::Bytes { max } => {
            format!("bytes({max}) (hex digits in pairs, optionally after 0x)")
        }
        ColumnType::Varchar { max } => format!("varchar({max}) (text)"),
    }
}

/// A value from its text form, by the column's type (`NULL` is not special here: see
/// [`parse_cell`]).
pub(crate) fn parse_text(table: &Table, column: &Column, text: &str) -> Result<Value> {
    let not =
        || bad_value(table, column, &shown(text), &format!("is not {}", a_value_of(column.ty)));
    let t = text.trim();
    let value = match column.ty {
        ColumnType::I32 => Value::I32(t.parse().map_err(|_| not())?),
        ColumnType::I64 => Value::I64(t.parse().map_err(|_| not())?),
        ColumnType::U64 => Value::U64(t.parse().map_err(|_| not())?),
        ColumnType::Timestamp => Value::Timestamp(t.parse().map_err(|_| not())?),
        ColumnType::F64 => Value::F64(t.parse().map_err(|_| not())?),
        ColumnType::Bool => match t {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(not()),
        },
        ColumnType::Bytes { max } => {
            let bytes = parse_hex(text).ok_or_else(not)?;
            check_length(table, column, text, bytes.len(), max)?;
            Value::Bytes(bytes)
        }
        ColumnType::Varchar { max } => {
            check_length(table, column, text, text.len(), max)?;
            Value::Text(text.to_owned())
        }
    };
    Ok(value)
}

fn check_length(table: &Table, column: &Column, text: &str, len: usize, max: u32) -> Result<()> {
    if len > max as usize {
        let what = format!("is {len} bytes, over the column's maximum of {max}");
        return Err(bad_value(table, column, &shown(text), &what));
    }
    Ok(())
}

/// Hex digits in pairs, optionally after `0x`.
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
    if digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| digits.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

/// NULL for `column`, or an error when it is NOT NULL.
fn null_for(table: &Table, column: &Column) -> Result<Value> {
    if column.nullable {
        Ok(Value::Null)
    } else {
        Err(bad_value(table, column, "NULL", "is not allowed (the column is NOT NULL)"))
    }
}

/// A value from `put` or a CSV field: the literal `NULL` is NULL.
pub(crate) fn parse_cell(table: &Table, column: &Column, text: &str) -> Result<Value> {
    if text == "NULL" {
        null_for(table, column)
    } else {
        parse_text(table, column, text)
    }
}

/// A value from a JSON line.
pub(crate) fn parse_json(table: &Table, column: &Column, value: &Json) -> Result<Value> {
    let not = || {
        // JSON as written (a string is quoted already), cut when long.
        let text = value.to_string();
        let more = if cut(&text).len() < text.len() { "..." } else { "" };
        bad_value(
            table,
            column,
            &format!("{}{more}", cut(&text)),
            &format!("is not {}", a_value_of(column.ty)),
        )
    };
    match (value, column.ty) {
        (Json::Null, _) => null_for(table, column),
        (Json::String(s), _) => parse_text(table, column, s),
        (Json::Bool(b), ColumnType::Bool) => Ok(Value::Bool(*b)),
        (Json::Number(n), ColumnType::I32) => {
            n.as_i64().and_then(|v| i32::try_from(v).ok()).map(Value::I32).ok_or_else(not)
        }
        (Json::Number(n), ColumnType::I64) => n.as_i64().map(Value::I64).ok_or_else(not),
        (Json::Number(n), ColumnType::U64) => n.as_u64().map(Value::U64).ok_or_else(not),
        (Json::Number(n), ColumnType::Timestamp) => {
            n.as_i64().map(Value::Timestamp).ok_or_else(not)
        }
        (Json::Number(n), ColumnType::F64) => n.as_f64().map(Value::F64).ok_or_else(not),
        _ => Err(not()),
    }
}

/// The column of `index`, or an error naming the table (a table from the dictionary has it).
pub(crate) fn column_at(table: &Table, index: usize) -> Result<&Column> {
    table
        .column(index)
        .ok_or_else(|| input(format!("table {:?} has no column number {index}", table.name())))
}

pub(crate) fn column_index(table: &Table, name: &str) -> Result<usize> {
    table.column_index(name).ok_or_else(|| {
        let names: Vec<&str> = table.def.columns.iter().map(|c| c.name.as_str()).collect();
        input(format!(
            "table {:?} has no column {name:?} (its columns: {})",
            table.name(),
            names.join(", ")
        ))
    })
}

/// Every NOT NULL column has a value (a write replaces the whole row).
pub(crate) fn check_complete(table: &Table, row: &[(usize, Value)]) -> Result<()> {
    let missing: Vec<&str> = table
        .def
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| !c.nullable && !row.iter().any(|(j, _)| j == i))
        .map(|(_, c)| c.name.as_str())
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(input(format!(
            "table {:?}, column {one:?}: needs a value (it is NOT NULL)",
            table.name()
        ))),
        many => Err(input(format!(
            "table {:?}: columns {} need values (they are NOT NULL)",
            table.name(),
            quoted(many)
        ))),
    }
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// A row as the client's (column name, value) pairs.
pub(crate) fn named<'t>(table: &'t Table, row: &[(usize, Value)]) -> Vec<(&'t str, Value)> {
    row.iter().filter_map(|(i, v)| table.column(*i).map(|c| (c.name.as_str(), v.clone()))).collect()
}
