//! Values, and the three byte forms they travel and rest in: the key, the attribute list (an
//! operation's column values) and the row image (what storage keeps). All are checked against
//! the table when read, with errors naming the column, because every one may come from an
//! untrusted API node.
//!
//! ```text
//! key:        for each key column in key order: fixed LE bytes | u32 LE length + bytes
//! attributes: u16 LE count, then per entry: u16 LE column index, u8 flag (0 value, 1 NULL),
//!             then the value as in a key (absent when NULL)
//! row image:  null bitmap (1 bit per column, ceil(columns / 8) bytes; bit set = NULL),
//!             then each non-NULL column in column order, encoded as in a key
//! ```
//! Encodings are canonical (one byte string per value), so keys compare by bytes and the
//! partition key is a byte prefix of the key. The partition of a key is FNV-1a (64-bit) of that
//! prefix modulo the partition count: the same on every node and client.
//! Longs sections carry these bytes as words: a u32 byte length, then the bytes, zero-padded.

use std::fmt;

use crate::schema::{ColumnType, Table};

/// One column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// No value (nullable columns only).
    Null,
    /// An i32.
    I32(i32),
    /// An i64.
    I64(i64),
    /// A u64.
    U64(u64),
    /// An f64.
    F64(f64),
    /// A bool.
    Bool(bool),
    /// Bytes.
    Bytes(Vec<u8>),
    /// UTF-8 text.
    Text(String),
    /// Microseconds since the Unix epoch.
    Timestamp(i64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::I32(v) => write!(f, "{v}"),
            Value::I64(v) | Value::Timestamp(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Bytes(v) => {
                f.write_str("0x")?;
                v.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Value::Text(v) => write!(f, "{v:?}"),
        }
    }
}

impl Value {
    /// The value's type name, for errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::I32(_) => "i32",
            Value::I64(_) => "i64",
            Value::U64(_) => "u64",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::Bytes(_) => "bytes",
            Value::Text(_) => "text",
            Value::Timestamp(_) => "timestamp",
        }
    }

    /// The value as an i64, when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I32(v) => Some(i64::from(v)),
            Value::I64(v) | Value::Timestamp(v) => Some(v),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// Why bytes or values do not fit a table: each names the column where there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A value of the wrong type.
    #[error("column {column:?} is {expected}, not {found} ({value})")]
    Type { column: String, expected: String, found: &'static str, value: String },
    /// NULL in a column that does not allow it.
    #[error("column {column:?} cannot be NULL")]
    Null { column: String },
    /// A value over the column's maximum.
    #[error("column {column:?} holds at most {max} bytes, got {len}")]
    TooLong { column: String, max: u32, len: usize },
    /// A NOT NULL column without a value.
    #[error("column {column:?} needs a value")]
    Missing { column: String },
    /// A column number the table does not have.
    #[error("table {table:?} has no column number {index}")]
    NoColumn { table: String, index: usize },
    /// A column given twice.
    #[error("column {column:?} is given twice")]
    Twice { column: String },
    /// A key column in an update.
    #[error("column {column:?} is in the primary key and cannot be updated")]
    KeyUpdate { column: String },
    /// Bytes that end early or run on.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// Text that is not UTF-8.
    #[error("column {column:?} holds text that is not UTF-8")]
    Utf8 { column: String },
}

fn malformed(what: &'static str, reason: impl Into<String>) -> ValueError {
    ValueError::Malformed { what, reason: reason.into() }
}

/// Checks `value` against column `index` of `table` and appends its encoding to `out`.
/// NULL is refused here: callers encode NULL in their own way (bitmap, flag).
pub fn encode_value(table: &Table, index: usize, value: &Value, out: &mut Vec<u8>) -> Result<(), ValueError> {
    let column = table
        .column(index)
        .ok_or_else(|| ValueError::NoColumn { table: table.name().into(), index })?;
    let wrong = || ValueError::Type {
        column: column.name.clone(),
        expected: column.ty.to_string(),
        found: value.type_name(),
        value: value.to_string(),
    };
    let var = |bytes: &[u8], max: u32, out: &mut Vec<u8>| {
        if bytes.len() > max as usize {
            return Err(ValueError::TooLong { column: column.name.clone(), max, len: bytes.len() });
        }
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    };
    match (column.ty, value) {
        (_, Value::Null) => return Err(ValueError::Null { column: column.name.clone() }),
        (ColumnType::I32, Value::I32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (ColumnType::I32, v) => {
            let v = v.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or_else(wrong)?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        (ColumnType::I64, v) => out.extend_from_slice(&v.as_i64().ok_or_else(wrong)?.to_le_bytes()),
        (ColumnType::Timestamp, Value::Timestamp(v) | Value::I64(v)) => {
            out.extend_from_slice(&v.to_le_bytes())
        }
        (ColumnType::U64, Value::U64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (ColumnType::U64, v) => {
            let v = v.as_i64().and_then(|v| u64::try_from(v).ok()).ok_or_else(wrong)?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        (ColumnType::F64, Value::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (ColumnType::Bool, Value::Bool(v)) => out.push(u8::from(*v)),
        (ColumnType::Bytes { max }, Value::Bytes(b)) => var(b, max, out)?,
        (ColumnType::Varchar { max }, Value::Text(t)) => var(t.as_bytes(), max, out)?,
        _ => return Err(wrong()),
    }
    Ok(())
}

/// Reads one value of column `index` from the front of `bytes`; returns it and the bytes used.
pub fn decode_value(table: &Table, index: usize, bytes: &[u8], what: &'static str) -> Result<(Value, usize), ValueError> {
    let column = table
        .column(index)
        .ok_or_else(|| ValueError::NoColumn { table: table.name().into(), index })?;
    let take = |n: usize| -> Result<&[u8], ValueError> {
        bytes.get(..n).ok_or_else(|| malformed(what, format!("column {:?} ends early", column.name)))
    };
    let fixed8 = || -> Result<[u8; 8], ValueError> {
        take(8).map(|b| b.try_into().unwrap_or([0; 8]))
    };
    Ok(match column.ty {
        ColumnType::I32 => (Value::I32(i32::from_le_bytes(take(4)?.try_into().unwrap_or([0; 4]))), 4),
        ColumnType::I64 => (Value::I64(i64::from_le_bytes(fixed8()?)), 8),
        ColumnType::U64 => (Value::U64(u64::from_le_bytes(fixed8()?)), 8),
        ColumnType::F64 => (Value::F64(f64::from_le_bytes(fixed8()?)), 8),
        ColumnType::Timestamp => (Value::Timestamp(i64::from_le_bytes(fixed8()?)), 8),
        ColumnType::Bool => match take(1)?[0] {
            0 => (Value::Bool(false), 1),
            1 => (Value::Bool(true), 1),
            b => return Err(malformed(what, format!("column {:?}: {b} is not a bool", column.name))),
        },
        ColumnType::Bytes { max } | ColumnType::Varchar { max } => {
            let len = u32::from_le_bytes(take(4)?.try_into().unwrap_or([0; 4])) as usize;
            if len > max as usize {
                return Err(ValueError::TooLong { column: column.name.clone(), max, len });
            }
            let body = bytes
                .get(4..4 + len)
                .ok_or_else(|| malformed(what, format!("column {:?} ends early", column.name)))?;
            let value = if let ColumnType::Varchar { .. } = column.ty {
                Value::Text(
                    std::str::from_utf8(body)
                        .map_err(|_| ValueError::Utf8 { column: column.name.clone() })?
                        .to_owned(),
                )
            } else {
                Value::Bytes(body.to_vec())
            };
            (value, 4 + len)
        }
    })
}

/// The key bytes of `values` (one per key column, in key order).
pub fn encode_key(table: &Table, values: &[Value]) -> Result<Vec<u8>, ValueError> {
    if values.len() != table.key_columns.len() {
        return Err(malformed(
            "key",
            format!(
                "table {:?} has {} key columns ({}), got {} values",
                table.name(),
                table.key_columns.len(),
                table.def.primary_key.join(", "),
                values.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for (k, v) in table.key_columns.iter().zip(values) {
        encode_value(table, usize::from(*k), v, &mut out)?;
    }
    Ok(out)
}

/// Checks key bytes from a peer: whole values of every key column and nothing after. Returns the
/// length of the partition-key prefix.
pub fn check_key(table: &Table, key: &[u8]) -> Result<usize, ValueError> {
    let mut at = 0;
    let mut prefix = 0;
    for (i, k) in table.key_columns.iter().enumerate() {
        let (_, used) = decode_value(table, usize::from(*k), &key[at..], "key")?;
        at += used;
        if i + 1 == usize::from(table.partition_key_columns) {
            prefix = at;
        }
    }
    if at != key.len() {
        return Err(malformed("key", format!("{} bytes after the last key column", key.len() - at)));
    }
    Ok(prefix)
}

/// The key's values, in key order.
pub fn decode_key(table: &Table, key: &[u8]) -> Result<Vec<Value>, ValueError> {
    let mut at = 0;
    let mut out = Vec::with_capacity(table.key_columns.len());
    for k in &table.key_columns {
        let (v, used) = decode_value(table, usize::from(*k), &key[at..], "key")?;
        at += used;
        out.push(v);
    }
    Ok(out)
}

/// FNV-1a, 64-bit: the partition hash (stable across processes and versions).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The partition of a checked key whose partition-key prefix is `prefix` bytes: FNV-1a of the
/// prefix, mixed (the splitmix64 finaliser) so that every bit of the key reaches the low bits
/// the modulo keeps (FNV-1a's low bits depend only on the keys' low bits: without the mix,
/// keys of one parity would share a node).
pub fn partition_of(table: &Table, key: &[u8], prefix: usize) -> u32 {
    let mut h = fnv1a(&key[..prefix.min(key.len())]);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % u64::from(table.partitions.max(1))) as u32
}

/// An attribute list: `(column index, value)` pairs.
pub fn encode_attributes(table: &Table, values: &[(usize, Value)]) -> Result<Vec<u8>, ValueError> {
    let mut out = Vec::new();
    out.extend_from_slice(&(values.len() as u16).to_le_bytes());
    for (index, value) in values {
        out.extend_from_slice(&(*index as u16).to_le_bytes());
        if *value == Value::Null {
            let column = table
                .column(*index)
                .ok_or_else(|| ValueError::NoColumn { table: table.name().into(), index: *index })?;
            if !column.nullable {
                return Err(ValueError::Null { column: column.name.clone() });
            }
            out.push(1);
        } else {
            out.push(0);
            encode_value(table, *index, value, &mut out)?;
        }
    }
    Ok(out)
}

/// Reads an attribute list from a peer, checking each value against the table (type, NULL,
/// length) and that no column is given twice.
pub fn decode_attributes(table: &Table, bytes: &[u8]) -> Result<Vec<(usize, Value)>, ValueError> {
    let count = u16::from_le_bytes(
        bytes.get(..2).ok_or_else(|| malformed("attributes", "no count"))?.try_into().unwrap_or([0; 2]),
    );
    let mut at = 2;
    let mut out: Vec<(usize, Value)> = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let head = bytes.get(at..at + 3).ok_or_else(|| malformed("attributes", "ends early"))?;
        let index = usize::from(u16::from_le_bytes([head[0], head[1]]));
        let column = table
            .column(index)
            .ok_or_else(|| ValueError::NoColumn { table: table.name().into(), index })?;
        if out.iter().any(|(i, _)| *i == index) {
            return Err(ValueError::Twice { column: column.name.clone() });
        }
        at += 3;
        let value = match head[2] {
            0 => {
                let (v, used) = decode_value(table, index, &bytes[at..], "attributes")?;
                at += used;
                v
            }
            1 if column.nullable => Value::Null,
            1 => return Err(ValueError::Null { column: column.name.clone() }),
            f => return Err(malformed("attributes", format!("flag {f} for column {:?}", column.name))),
        };
        out.push((index, value));
    }
    if at != bytes.len() {
        return Err(malformed("attributes", format!("{} bytes after the last entry", bytes.len() - at)));
    }
    Ok(out)
}

/// A row image from all of a row's values (one per column, in column order).
pub fn encode_row(table: &Table, values: &[Value]) -> Result<Vec<u8>, ValueError> {
    let columns = table.def.columns.len();
    if values.len() != columns {
        return Err(malformed("row", format!("{} values for {columns} columns", values.len())));
    }
    let mut out = vec![0u8; columns.div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        if *v == Value::Null {
            if !table.def.columns[i].nullable {
                return Err(ValueError::Null { column: table.def.columns[i].name.clone() });
            }
            out[i / 8] |= 1 << (i % 8);
        } else {
            encode_value(table, i, v, &mut out)?;
        }
    }
    Ok(out)
}

/// A row image's values, in column order.
pub fn decode_row(table: &Table, bytes: &[u8]) -> Result<Vec<Value>, ValueError> {
    let columns = table.def.columns.len();
    let bitmap = bytes.get(..columns.div_ceil(8)).ok_or_else(|| malformed("row", "no null bitmap"))?;
    let mut at = bitmap.len();
    let mut out = Vec::with_capacity(columns);
    for i in 0..columns {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push(Value::Null);
        } else {
            let (v, used) = decode_value(table, i, &bytes[at..], "row")?;
            at += used;
            out.push(v);
        }
    }
    if at != bytes.len() {
        return Err(malformed("row", format!("{} bytes after the last column", bytes.len() - at)));
    }
    Ok(out)
}

/// Bytes as a long section: a length word, then the bytes zero-padded to whole words.
pub fn bytes_to_words(bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(1 + bytes.len().div_ceil(4));
    out.push(bytes.len() as u32);
    for chunk in bytes.chunks(4) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        out.push(u32::from_le_bytes(w));
    }
    out
}

/// A long section's bytes (see [`bytes_to_words`]), or `None` when the length word does not fit.
pub fn words_to_bytes(words: &[u32]) -> Option<Vec<u8>> {
    let (&len, body) = words.split_first()?;
    let len = len as usize;
    if len.div_ceil(4) != body.len() {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    for w in body {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.truncate(len);
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::schema::{Column, TableDef};

    fn table() -> Table {
        let columns = vec![
            Column { name: "a".into(), ty: ColumnType::I32, nullable: false },
            Column { name: "b".into(), ty: ColumnType::Varchar { max: 20 }, nullable: false },
            Column { name: "c".into(), ty: ColumnType::I64, nullable: true },
            Column { name: "d".into(), ty: ColumnType::U64, nullable: true },
            Column { name: "e".into(), ty: ColumnType::F64, nullable: true },
            Column { name: "f".into(), ty: ColumnType::Bool, nullable: true },
            Column { name: "g".into(), ty: ColumnType::Bytes { max: 16 }, nullable: true },
            Column { name: "h".into(), ty: ColumnType::Timestamp, nullable: true },
            Column { name: "i".into(), ty: ColumnType::Varchar { max: 8 }, nullable: true },
        ];
        let def = TableDef {
            name: "t".into(),
            columns,
            primary_key: vec!["a".into(), "b".into()],
            partition_key: Some(vec!["a".into()]),
            partitions: Some(8),
            read_backup: false,
            indexes: Vec::new(),
        };
        Table::new(1, 1, def, 8)
    }

    fn value_for(ty: ColumnType, nullable: bool) -> BoxedStrategy<Value> {
        let v: BoxedStrategy<Value> = match ty {
            ColumnType::I32 => any::<i32>().prop_map(Value::I32).boxed(),
            ColumnType::I64 => any::<i64>().prop_map(Value::I64).boxed(),
            ColumnType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
            ColumnType::F64 => (-1e12f64..1e12).prop_map(Value::F64).boxed(),
            ColumnType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            ColumnType::Timestamp => any::<i64>().prop_map(Value::Timestamp).boxed(),
            ColumnType::Bytes { max } => {
                proptest::collection::vec(any::<u8>(), 0..=max as usize).prop_map(Value::Bytes).boxed()
            }
            ColumnType::Varchar { max } => proptest::string::string_regex(&format!(".{{0,{}}}", max / 4))
                .unwrap()
                .prop_map(Value::Text)
                .boxed(),
        };
        if nullable {
            prop_oneof![1 => Just(Value::Null), 4 => v].boxed()
        } else {
            v
        }
    }

    fn row_strategy() -> impl Strategy<Value = Vec<Value>> {
        let t = table();
        t.def.columns.iter().map(|c| value_for(c.ty, c.nullable)).collect::<Vec<_>>()
    }

    proptest! {
        #[test]
        fn rows_round_trip(values in row_strategy()) {
            let t = table();
            let bytes = encode_row(&t, &values).unwrap();
            prop_assert_eq!(decode_row(&t, &bytes).unwrap(), values.clone());
            let words = bytes_to_words(&bytes);
            prop_assert_eq!(words_to_bytes(&words).unwrap(), bytes);
            let key = encode_key(&t, &values[..2]).unwrap();
            let prefix = check_key(&t, &key).unwrap();
            prop_assert_eq!(prefix, 4);
            prop_assert_eq!(decode_key(&t, &key).unwrap(), values[..2].to_vec());
            let attrs: Vec<(usize, Value)> = values.iter().cloned().enumerate().collect();
            let a = encode_attributes(&t, &attrs).unwrap();
            prop_assert_eq!(decode_attributes(&t, &a).unwrap(), attrs);
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let t = table();
            let _ = decode_row(&t, &bytes);
            let _ = decode_attributes(&t, &bytes);
            let _ = check_key(&t, &bytes);
            let words: Vec<u32> = bytes.chunks(4).map(|c| c.iter().fold(0u32, |w, b| w << 8 | u32::from(*b))).collect();
            let _ = words_to_bytes(&words);
        }

        #[test]
        fn equal_keys_are_equal_bytes(a in any::<i32>(), b in ".{0,5}") {
            let t = table();
            let k1 = encode_key(&t, &[Value::I32(a), Value::Text(b.clone())]).unwrap();
            let k2 = encode_key(&t, &[Value::I64(i64::from(a)), Value::Text(b)]).unwrap();
            prop_assert_eq!(k1, k2);
        }
    }

    #[test]
    fn bad_values_name_the_column() {
        let t = table();
        let e = encode_key(&t, &[Value::Text("x".into()), Value::Text("y".into())]).unwrap_err();
        assert!(e.to_string().contains("column \"a\" is i32, not text"), "{e}");
        let e = encode_attributes(&t, &[(1, Value::Text("x".repeat(21)))]).unwrap_err();
        assert_eq!(e, ValueError::TooLong { column: "b".into(), max: 20, len: 21 });
        let e = encode_attributes(&t, &[(0, Value::Null)]).unwrap_err();
        assert_eq!(e.to_string(), "column \"a\" cannot be NULL");
        let e = encode_attributes(&t, &[(42, Value::I32(1))]).unwrap_err();
        assert!(e.to_string().contains("no column number 42"), "{e}");
        let mut a = encode_attributes(&t, &[(2, Value::I64(1))]).unwrap();
        a.extend_from_slice(&[0, 0]);
        a[0] = 2;
        assert!(decode_attributes(&t, &a).is_err());
        let bad_utf8 = [2u8, 0, 8, 0, 0, 2, 0, 0, 0, 0xff, 0xfe];
        let e = decode_attributes(&t, &bad_utf8[..]).unwrap_err();
        assert!(e.to_string().contains("\"i\""), "{e}");
        let e = encode_key(&t, &[Value::I32(1)]).unwrap_err();
        assert!(e.to_string().contains("2 key columns (a, b)"), "{e}");
    }

    #[test]
    fn keys_spread_over_partitions_and_both_parities() {
        let t = table();
        let mut seen = [0u32; 8];
        for i in 0..8000i32 {
            let key = encode_key(&t, &[Value::I32(i * 7919), Value::Text(String::new())]).unwrap();
            seen[partition_of(&t, &key, 4) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }

    #[test]
    fn i64_values_narrow_into_i32_only_when_they_fit() {
        let t = table();
        assert!(encode_key(&t, &[Value::I64(5), Value::Text(String::new())]).is_ok());
        let e = encode_key(&t, &[Value::I64(1 << 40), Value::Text(String::new())]).unwrap_err();
        assert!(e.to_string().contains("is i32, not i64"), "{e}");
    }
}
