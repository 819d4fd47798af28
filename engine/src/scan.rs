//! A scan as it travels (client -> coordinator -> storage, section 0 of `SCAN_TABREQ` and
//! `SCAN_FRAGREQ`): which ordered index drives it (or none: every row of the partition in row
//! order), the ranges on that index, and the pushed-down program ([`crate::program`]) that
//! filters each row and returns it or folds it into aggregates. Also the pruning rule: which
//! partitions a scan needs.
//!
//! ```text
//! u16 index + 1 (0: no index, a full scan)   u16 range count
//! per range: u8 flags (bit 0 low inclusive, bit 1 high inclusive), u16 low values,
//!            u16 high values, u32 byte length, the low then the high values as one tuple
//!            (crate::program::tuple)
//! u32 program length, the program's bytes (crate::program::Program::encode)
//! ```
//! All numbers little-endian. Decoding checks every length against the bytes it has and the
//! limits below, so a hostile spec is an error naming what was wrong, never a panic.

use crate::index::{Range, RangeEnd};
use crate::program::tuple;
use crate::row::{self, Value};
use crate::schema::Table;

/// Most ranges in one scan.
pub const MAX_RANGES: usize = 4096;

/// A scan's request.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanSpec {
    /// The ordered index (its number in the table) that drives the scan; `None`: a full scan.
    pub index: Option<u16>,
    /// Ranges on the index (none: the whole index). Ignored without an index.
    pub ranges: Vec<Range>,
    /// The encoded program.
    pub program: Vec<u8>,
}

/// Why a spec could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("scan request: {0}")]
pub struct SpecError(pub String);

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SpecError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| SpecError(format!("{what} runs past the end ({} bytes)", self.bytes.len())))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, SpecError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, SpecError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, SpecError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl ScanSpec {
    /// The spec's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.program.len());
        out.extend_from_slice(&self.index.map_or(0, |i| i + 1).to_le_bytes());
        out.extend_from_slice(&(self.ranges.len() as u16).to_le_bytes());
        for r in &self.ranges {
            out.push(u8::from(r.low.inclusive) | (u8::from(r.high.inclusive) << 1));
            out.extend_from_slice(&(r.low.values.len() as u16).to_le_bytes());
            out.extend_from_slice(&(r.high.values.len() as u16).to_le_bytes());
            let mut values = Vec::new();
            for v in r.low.values.iter().chain(&r.high.values) {
                tuple::encode_value(v, &mut values);
            }
            out.extend_from_slice(&(values.len() as u32).to_le_bytes());
            out.extend_from_slice(&values);
        }
        out.extend_from_slice(&(self.program.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.program);
        out
    }

    /// Reads a spec, checking its structure (not yet against a table).
    pub fn decode(bytes: &[u8]) -> Result<ScanSpec, SpecError> {
        let mut r = Reader { bytes, at: 0 };
        let index = r.u16("the index number")?.checked_sub(1);
        let count = usize::from(r.u16("the range count")?);
        if count > MAX_RANGES {
            return Err(SpecError(format!("{count} ranges (limit {MAX_RANGES})")));
        }
        let mut ranges = Vec::with_capacity(count);
        for i in 0..count {
            let flags = r.u8("a range's flags")?;
            let (lows, highs) = (usize::from(r.u16("a range")?), usize::from(r.u16("a range")?));
            let len = r.u32("a range")? as usize;
            let body = r.take(len, &format!("range {i}"))?;
            let mut values = if lows + highs == 0 {
                if !body.is_empty() {
                    return Err(SpecError(format!("range {i}: {len} bytes of values for none")));
                }
                Vec::new()
            } else {
                let mut tuples = tuple::decode_tuples(body, lows + highs)
                    .map_err(|e| SpecError(format!("range {i}: {e}")))?;
                if tuples.len() != 1 {
                    return Err(SpecError(format!("range {i}: {} value lists, expected one", tuples.len())));
                }
                tuples.remove(0)
            };
            let high = values.split_off(lows);
            ranges.push(Range {
                low: RangeEnd { values, inclusive: flags & 1 != 0 },
                high: RangeEnd { values: high, inclusive: flags & 2 != 0 },
            });
        }
        let len = r.u32("the program length")? as usize;
        let program = r.take(len, "the program")?.to_vec();
        if r.at != bytes.len() {
            return Err(SpecError(format!("{} bytes after the program", bytes.len() - r.at)));
        }
        Ok(ScanSpec { index, ranges, program })
    }

    /// The partitions the scan needs: every partition, unless the scan is on an index whose
    /// leading columns are the table's partition key and every range fixes those columns (its
    /// two ends agree on them), when only the partitions of those values (pruning).
    pub fn partitions(&self, table: &Table) -> Vec<u32> {
        self.pruned(table).unwrap_or_else(|| (0..table.partitions).collect())
    }

    fn pruned(&self, table: &Table) -> Option<Vec<u32>> {
        let columns = table.index_columns.get(usize::from(self.index?))?;
        let key = usize::from(table.partition_key_columns);
        if self.ranges.is_empty() || columns.len() < key || columns[..key] != table.key_columns[..key] {
            return None;
        }
        let mut partitions = Vec::new();
        for r in &self.ranges {
            let (low, high) = (&r.low.values, &r.high.values);
            if low.len() < key || high.len() < key || low[..key] != high[..key] {
                return None;
            }
            let mut bytes = Vec::new();
            for (c, v) in table.key_columns[..key].iter().zip(&low[..key]) {
                row::encode_value(table, usize::from(*c), &coerce(table, usize::from(*c), v)?, &mut bytes).ok()?;
            }
            let p = row::partition_of(table, &bytes, bytes.len());
            if !partitions.contains(&p) {
                partitions.push(p);
            }
        }
        partitions.sort_unstable();
        Some(partitions)
    }
}

/// `value` as the exact type of column `column` (an integer of another width, when it fits).
pub fn coerce(table: &Table, column: usize, value: &Value) -> Option<Value> {
    use crate::schema::ColumnType as T;
    let ty = table.column(column)?.ty;
    Some(match (ty, value) {
        (_, Value::Null) => Value::Null,
        (T::I32, v) => Value::I32(i32::try_from(v.as_i64()?).ok()?),
        (T::I64, v) => Value::I64(v.as_i64()?),
        (T::Timestamp, v) => Value::Timestamp(v.as_i64()?),
        (T::U64, Value::U64(v)) => Value::U64(*v),
        (T::U64, v) => Value::U64(u64::try_from(v.as_i64()?).ok()?),
        (T::F64, Value::F64(v)) => Value::F64(*v),
        (T::F64, v) => Value::F64(v.as_i64()? as f64),
        (T::Bytes { .. }, Value::Text(t)) => Value::Bytes(t.as_bytes().to_vec()),
        (T::Varchar { .. }, Value::Bytes(b)) => Value::Text(String::from_utf8(b.clone()).ok()?),
        (_, v) => v.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, ColumnType, IndexDef, TableDef};

    fn table() -> Table {
        let col = |name: &str, ty| Column { name: name.into(), ty, nullable: false };
        let def = TableDef {
            name: "entries".into(),
            columns: vec![col("parent", ColumnType::I64), col("name", ColumnType::Varchar { max: 64 }), col("inode", ColumnType::I64)],
            primary_key: vec!["parent".into(), "name".into()],
            partition_key: Some(vec!["parent".into()]),
            partitions: Some(8),
            read_backup: false,
            indexes: vec![
                IndexDef { name: "by_parent".into(), columns: vec!["parent".into(), "name".into()] },
                IndexDef { name: "by_inode".into(), columns: vec!["inode".into()] },
            ],
        };
        Table::new(1, 1, def, 8)
    }

    #[test]
    fn specs_round_trip_and_hostile_bytes_are_errors() {
        let spec = ScanSpec {
            index: Some(0),
            ranges: vec![
                Range::eq(vec![Value::I64(7)]),
                Range {
                    low: RangeEnd { values: vec![Value::I64(9), Value::Text("a".into())], inclusive: false },
                    high: RangeEnd::unbounded(),
                },
            ],
            program: vec![1, 2, 3],
        };
        let bytes = spec.encode();
        assert_eq!(ScanSpec::decode(&bytes).unwrap(), spec);
        for cut in 0..bytes.len() {
            assert!(ScanSpec::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(ScanSpec::decode(&long).unwrap_err().0.contains("after the program"));
        let mut many = bytes;
        many[2..4].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(ScanSpec::decode(&many).unwrap_err().0.contains("limit"));
    }

    #[test]
    fn ranges_that_fix_the_partition_key_prune() {
        let t = table();
        let one = ScanSpec { index: Some(0), ranges: vec![Range::eq(vec![Value::I64(7)])], program: vec![] };
        let p = one.partitions(&t);
        assert_eq!(p.len(), 1);
        let key = row::encode_key(&t, &[Value::I64(7), Value::Text("x".into())]).unwrap();
        assert_eq!(p[0], row::partition_of(&t, &key, 8), "the partition of parent 7");
        let two = ScanSpec {
            index: Some(0),
            ranges: vec![Range::eq(vec![Value::I64(7)]), Range::eq(vec![Value::I64(7), Value::Text("b".into())])],
            program: vec![],
        };
        assert_eq!(two.partitions(&t), p, "two ranges in one partition");
        let open = ScanSpec { index: Some(0), ranges: vec![Range::all()], program: vec![] };
        assert_eq!(open.partitions(&t).len(), 8);
        let other = ScanSpec { index: Some(1), ranges: vec![Range::eq(vec![Value::I64(7)])], program: vec![] };
        assert_eq!(other.partitions(&t).len(), 8, "an index not led by the partition key cannot prune");
        let full = ScanSpec { index: None, ranges: vec![], program: vec![] };
        assert_eq!(full.partitions(&t).len(), 8);
    }
}
