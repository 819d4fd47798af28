//! What the commands print: rows of cells as aligned text, and values and rows as JSON lines
//! (integers and f64 as numbers, a non-finite f64 as a string, bool, null, text as strings,
//! bytes as `"0x.."` strings, timestamps as integers).

use client::{Table, Value};
use serde_json::Value as Json;

/// Rows of cells as left-aligned columns two spaces apart.
pub(crate) fn aligned(rows: &[Vec<String>]) -> String {
    aligned_within(rows, &mut Vec::new())
}

/// Rows of cells as left-aligned columns two spaces apart, each column at least as wide as
/// `widths` says; `widths` grows to the widest cells, so blocks of one table printed one after
/// another stay aligned unless a later block holds a wider cell.
pub(crate) fn aligned_within(rows: &[Vec<String>], widths: &mut Vec<usize>) -> String {
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(widths.iter()).map(|(cell, w)| format!("{cell:<w$}", w = *w)).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// A value as JSON.
pub(crate) fn json_of(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::I32(v) => Json::from(*v),
        Value::I64(v) | Value::Timestamp(v) => Json::from(*v),
        Value::U64(v) => Json::from(*v),
        Value::F64(v) => serde_json::Number::from_f64(*v)
            .map_or_else(|| Json::String(v.to_string()), Json::Number),
        Value::Bool(v) => Json::Bool(*v),
        Value::Bytes(_) => Json::String(value.to_string()),
        Value::Text(v) => Json::String(v.clone()),
    }
}

/// A JSON object with its fields in the order given, as one line.
pub(crate) fn json_object(fields: &[(&str, Json)]) -> String {
    let parts: Vec<String> =
        fields.iter().map(|(k, v)| format!("{}:{v}", Json::from(*k))).collect();
    format!("{{{}}}\n", parts.join(","))
}

/// A row as one JSON object, columns in table order.
pub(crate) fn row_json(table: &Table, values: &[Value]) -> String {
    let fields: Vec<(&str, Json)> =
        table.def.columns.iter().zip(values).map(|(c, v)| (c.name.as_str(), json_of(v))).collect();
    json_object(&fields)
}
