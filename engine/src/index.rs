//! Ordered-index keys (the byte order of NDB's DBTUX trees): each index column's value encoded
//! so that comparing the bytes compares the values, then the row's primary key, which makes
//! every entry unique. A partition keeps one ordered map per index from these bytes to the row
//! (see `storage::fragment`), in step with its committed rows.
//!
//! ```text
//! per index column:  0x00                      NULL (sorts before every value)
//!                    0x01, then the value:
//!   i32              4 bytes big-endian, sign bit flipped
//!   i64, timestamp   8 bytes big-endian, sign bit flipped
//!   u64              8 bytes big-endian
//!   f64              8 bytes: bits with the sign bit flipped (positive) or all bits flipped
//!                    (negative); -0.0 is stored as 0.0; NaN sorts above +inf
//!   bool             1 byte, 0 or 1
//!   bytes, varchar   each 0x00 as 0x00 0xFF, other bytes as they are, then 0x00 0x00
//! entry key:         the columns as above, then the primary key's bytes (`crate::row`)
//! ```
//! Each column's encoding is prefix-free, so the keys starting with the encoding of a list of
//! leading values are exactly the entries whose leading columns equal those values: a range
//! bound on a prefix of the index columns is a byte bound ([`bounds`]). Text orders by its
//! UTF-8 bytes (binary collation).

use std::ops::Bound;

use crate::row::{self, Value};
use crate::schema::{ColumnType, Table};

/// One end of a range on the leading columns of an index.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeEnd {
    /// Values of the first `values.len()` index columns (empty: unbounded).
    pub values: Vec<Value>,
    /// Whether rows equal to `values` on those columns are in the range.
    pub inclusive: bool,
}

impl RangeEnd {
    /// No bound.
    pub fn unbounded() -> RangeEnd {
        RangeEnd { values: Vec::new(), inclusive: true }
    }
}

/// A range of an ordered index: rows between `low` and `high` on the leading columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Range {
    /// The lower end.
    pub low: RangeEnd,
    /// The upper end.
    pub high: RangeEnd,
}

impl Range {
    /// Every row.
    pub fn all() -> Range {
        Range { low: RangeEnd::unbounded(), high: RangeEnd::unbounded() }
    }

    /// Rows whose leading columns equal `values`.
    pub fn eq(values: Vec<Value>) -> Range {
        Range { low: RangeEnd { values: values.clone(), inclusive: true }, high: RangeEnd { values, inclusive: true } }
    }
}

/// Appends the order-preserving encoding of `value` as a value of type `ty`; integers of
/// another integer type are accepted when they fit. The error names what did not fit.
pub fn encode_ordered(ty: ColumnType, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    if *value == Value::Null {
        out.push(0);
        return Ok(());
    }
    out.push(1);
    let wrong = || format!("{} value {value} does not fit a {ty} column", value.type_name());
    match ty {
        ColumnType::I32 => {
            let v = value.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or_else(wrong)?;
            out.extend_from_slice(&((v as u32) ^ 0x8000_0000).to_be_bytes());
        }
        ColumnType::I64 | ColumnType::Timestamp => {
            let v = value.as_i64().ok_or_else(wrong)?;
            out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
        }
        ColumnType::U64 => {
            let v = match *value {
                Value::U64(v) => v,
                _ => value.as_i64().and_then(|v| u64::try_from(v).ok()).ok_or_else(wrong)?,
            };
            out.extend_from_slice(&v.to_be_bytes());
        }
        ColumnType::F64 => {
            let v = match *value {
                Value::F64(v) => v,
                _ => value.as_i64().ok_or_else(wrong)? as f64,
            };
            let v = if v == 0.0 { 0.0 } else { v };
            let bits = v.to_bits();
            let bits = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        ColumnType::Bool => match value {
            Value::Bool(b) => out.push(u8::from(*b)),
            _ => return Err(wrong()),
        },
        ColumnType::Bytes { .. } | ColumnType::Varchar { .. } => {
            let bytes = match value {
                Value::Bytes(b) => b.as_slice(),
                Value::Text(t) => t.as_bytes(),
                _ => return Err(wrong()),
            };
            for &b in bytes {
                out.push(b);
                if b == 0 {
                    out.push(0xff);
                }
            }
            out.extend_from_slice(&[0, 0]);
        }
    }
    Ok(())
}

/// The encoding of the leading index columns' `values` (a bound), or an error naming the
/// column whose value does not fit.
pub fn encode_prefix(table: &Table, index: usize, values: &[Value]) -> Result<Vec<u8>, String> {
    let columns = table.index_columns.get(index).ok_or_else(|| format!("table {:?} has no index {index}", table.name()))?;
    if values.len() > columns.len() {
        return Err(format!(
            "index {:?} has {} columns, the bound gives {}",
            table.def.indexes[index].name,
            columns.len(),
            values.len()
        ));
    }
    let mut out = Vec::new();
    for (c, v) in columns.iter().zip(values) {
        let column = &table.def.columns[usize::from(*c)];
        encode_ordered(column.ty, v, &mut out).map_err(|e| format!("column {:?}: {e}", column.name))?;
    }
    Ok(out)
}

/// The entry key of a row (its image and primary key) in index `index`.
pub fn entry_key(table: &Table, index: usize, image: &[u8], key: &[u8]) -> Result<Vec<u8>, row::ValueError> {
    let values = row::decode_row(table, image)?;
    let mut out = Vec::with_capacity(key.len() + 16);
    for c in &table.index_columns[index] {
        let column = &table.def.columns[usize::from(*c)];
        encode_ordered(column.ty, &values[usize::from(*c)], &mut out).map_err(|_| row::ValueError::Type {
            column: column.name.clone(),
            expected: column.ty.to_string(),
            found: values[usize::from(*c)].type_name(),
            value: values[usize::from(*c)].to_string(),
        })?;
    }
    out.extend_from_slice(key);
    Ok(out)
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// when there is none (the prefix is all 0xFF, or empty).
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// The entry-key bounds of a range, from its encoded ends.
pub fn bounds(low: &[u8], low_inclusive: bool, high: &[u8], high_inclusive: bool) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match (low.is_empty(), low_inclusive) {
        (true, _) => Bound::Unbounded,
        (false, true) => Bound::Included(low.to_vec()),
        // Past every entry that starts with `low`; nothing is when no successor exists.
        (false, false) => match successor(low) {
            Some(s) => Bound::Included(s),
            None => Bound::Excluded(vec![0xff; low.len() + 1]),
        },
    };
    let end = match (high.is_empty(), high_inclusive) {
        (true, _) => Bound::Unbounded,
        (false, true) => successor(high).map_or(Bound::Unbounded, Bound::Excluded),
        (false, false) => Bound::Excluded(high.to_vec()),
    };
    (start, end)
}

/// Whether `key` lies before the range's end.
pub fn before_end(key: &[u8], end: &Bound<Vec<u8>>) -> bool {
    match end {
        Bound::Unbounded => true,
        Bound::Included(e) => key <= e.as_slice(),
        Bound::Excluded(e) => key < e.as_slice(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn enc(ty: ColumnType, v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_ordered(ty, v, &mut out).unwrap();
        out
    }

    proptest! {
        #[test]
        fn integers_order_as_bytes(a in any::<i64>(), b in any::<i64>()) {
            let (x, y) = (enc(ColumnType::I64, &Value::I64(a)), enc(ColumnType::I64, &Value::I64(b)));
            prop_assert_eq!(a.cmp(&b), x.cmp(&y));
        }

        #[test]
        fn i32_and_u64_order_as_bytes(a in any::<i32>(), b in any::<i32>(), c in any::<u64>(), d in any::<u64>()) {
            prop_assert_eq!(a.cmp(&b), enc(ColumnType::I32, &Value::I32(a)).cmp(&enc(ColumnType::I32, &Value::I32(b))));
            prop_assert_eq!(c.cmp(&d), enc(ColumnType::U64, &Value::U64(c)).cmp(&enc(ColumnType::U64, &Value::U64(d))));
        }

        #[test]
        fn floats_order_as_bytes(a in -1e300f64..1e300, b in -1e300f64..1e300) {
            let (x, y) = (enc(ColumnType::F64, &Value::F64(a)), enc(ColumnType::F64, &Value::F64(b)));
            prop_assert_eq!(a.partial_cmp(&b).unwrap(), x.cmp(&y));
        }

        #[test]
        fn strings_order_as_bytes_and_prefixes_are_free(a in proptest::collection::vec(0u8..4, 0..6), b in proptest::collection::vec(0u8..4, 0..6), tail in any::<u8>()) {
            let ty = ColumnType::Bytes { max: 16 };
            let (x, y) = (enc(ty, &Value::Bytes(a.clone())), enc(ty, &Value::Bytes(b.clone())));
            prop_assert_eq!(a.cmp(&b), x.cmp(&y));
            // A longer key after the column never reorders two different values.
            let mut x2 = x.clone();
            x2.push(tail);
            if a != b {
                prop_assert_eq!(x2.cmp(&y), x.cmp(&y));
            }
        }
    }

    #[test]
    fn null_sorts_first_and_mismatched_types_are_named() {
        assert!(enc(ColumnType::I64, &Value::Null) < enc(ColumnType::I64, &Value::I64(i64::MIN)));
        let mut out = Vec::new();
        let e = encode_ordered(ColumnType::I32, &Value::I64(1 << 40), &mut out).unwrap_err();
        assert!(e.contains("does not fit a i32"), "{e}");
        assert!(encode_ordered(ColumnType::Bool, &Value::I64(1), &mut out).is_err());
    }

    #[test]
    fn successor_and_bounds() {
        assert_eq!(successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(successor(&[0xff, 0xff]), None);
        let p = enc(ColumnType::I64, &Value::I64(5));
        let mut inside = p.clone();
        inside.extend_from_slice(&[9, 9, 9]);
        let (start, end) = bounds(&p, false, &[], true);
        let Bound::Included(s) = start else { panic!("{start:?}") };
        assert!(s > inside, "an exclusive low bound skips every entry with that prefix");
        assert!(before_end(&inside, &end));
        let (_, end) = bounds(&[], true, &p, true);
        assert!(before_end(&inside, &end), "an inclusive high bound keeps entries with that prefix");
        let (_, end) = bounds(&[], true, &p, false);
        assert!(!before_end(&inside, &end), "an exclusive high bound drops them");
    }
}
