//! Self-describing value tuples: how a pushed-down program's returned rows, its group keys and
//! its constants travel. Each value is a tag byte followed by its payload, so a reader needs
//! only the arity to split a byte string into tuples.
//!
//! ```text
//! tag  value      payload
//! 0    NULL       (none)
//! 1    i32        4 bytes LE
//! 2    i64        8 bytes LE
//! 3    u64        8 bytes LE
//! 4    f64        8 bytes LE (IEEE 754 bits)
//! 5    bool       1 byte (0 false, 1 true)
//! 6    bytes      u32 LE length, then the bytes
//! 7    text       u32 LE length, then UTF-8 bytes
//! 8    timestamp  8 bytes LE (microseconds since the Unix epoch)
//! ```
//! The encoding of a value is unique except for f64, whose bits are kept as given; group keys
//! canonicalise -0.0 and NaN before encoding (see `run.rs`). Decoding never panics and
//! never reserves memory from a length it has not checked against the bytes present.

use crate::row::Value;

/// The tag bytes.
pub(crate) mod tag {
    pub const NULL: u8 = 0;
    pub const I32: u8 = 1;
    pub const I64: u8 = 2;
    pub const U64: u8 = 3;
    pub const F64: u8 = 4;
    pub const BOOL: u8 = 5;
    pub const BYTES: u8 = 6;
    pub const TEXT: u8 = 7;
    pub const TIMESTAMP: u8 = 8;
}

/// Why bytes are not a sequence of tuples.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TupleError {
    /// A tag byte no value has.
    #[error("byte {at}: {tag} is not a value tag")]
    UnknownTag { at: usize, tag: u8 },
    /// A value's payload runs past the end.
    #[error("byte {at}: the {what} value ends early")]
    EndsEarly { at: usize, what: &'static str },
    /// A bool byte other than 0 or 1.
    #[error("byte {at}: {byte} is not a bool")]
    BadBool { at: usize, byte: u8 },
    /// Text that is not UTF-8.
    #[error("byte {at}: text is not UTF-8")]
    Utf8 { at: usize },
    /// Bytes left that do not make a whole tuple.
    #[error("{count} bytes after the last whole tuple of arity {arity}")]
    Trailing { count: usize, arity: usize },
}

/// Where encoded bytes go: a buffer, or a counter that only measures them.
pub(crate) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that counts the bytes it is given.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Appends `v`, tagged, to `out`.
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    write_value(v, out);
}

/// Writes `v`, tagged, to any sink.
pub(crate) fn write_value<S: Sink>(v: &Value, out: &mut S) {
    match v {
        Value::Null => out.put(&[tag::NULL]),
        Value::I32(x) => {
            out.put(&[tag::I32]);
            out.put(&x.to_le_bytes());
        }
        Value::I64(x) => {
            out.put(&[tag::I64]);
            out.put(&x.to_le_bytes());
        }
        Value::U64(x) => {
            out.put(&[tag::U64]);
            out.put(&x.to_le_bytes());
        }
        Value::F64(x) => {
            out.put(&[tag::F64]);
            out.put(&x.to_le_bytes());
        }
        Value::Bool(x) => out.put(&[tag::BOOL, u8::from(*x)]),
        Value::Bytes(b) => write_variable(tag::BYTES, b, out),
        Value::Text(t) => write_variable(tag::TEXT, t.as_bytes(), out),
        Value::Timestamp(x) => {
            out.put(&[tag::TIMESTAMP]);
            out.put(&x.to_le_bytes());
        }
    }
}

/// Writes a tagged variable-length value (bytes or text).
///
/// Lengths beyond `u32::MAX` cannot be written; callers bound their values (a row column holds
/// at most its declared maximum, a program at most its byte limit), and this asserts it.
pub(crate) fn write_variable<S: Sink>(value_tag: u8, body: &[u8], out: &mut S) {
    let length = u32::try_from(body.len());
    assert!(length.is_ok(), "a tuple value of {} bytes does not fit a u32 length", body.len());
    out.put(&[value_tag]);
    out.put(&length.unwrap_or(u32::MAX).to_le_bytes());
    out.put(body);
}

/// Reads one tagged value starting at `at`; returns it and the offset after it.
pub(crate) fn read_value(bytes: &[u8], at: usize) -> Result<(Value, usize), TupleError> {
    let Some(&value_tag) = bytes.get(at) else {
        return Err(TupleError::EndsEarly { at, what: "tag" });
    };
    let body = at + 1;
    let fixed = |n: usize, what: &'static str| -> Result<&[u8], TupleError> {
        bytes.get(body..body + n).ok_or(TupleError::EndsEarly { at, what })
    };
    let eight = |what| -> Result<[u8; 8], TupleError> {
        let b = fixed(8, what)?;
        Ok([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    };
    Ok(match value_tag {
        tag::NULL => (Value::Null, body),
        tag::I32 => {
            let b = fixed(4, "i32")?;
            (Value::I32(i32::from_le_bytes([b[0], b[1], b[2], b[3]])), body + 4)
        }
        tag::I64 => (Value::I64(i64::from_le_bytes(eight("i64")?)), body + 8),
        tag::U64 => (Value::U64(u64::from_le_bytes(eight("u64")?)), body + 8),
        tag::F64 => (Value::F64(f64::from_le_bytes(eight("f64")?)), body + 8),
        tag::TIMESTAMP => (Value::Timestamp(i64::from_le_bytes(eight("timestamp")?)), body + 8),
        tag::BOOL => match fixed(1, "bool")?[0] {
            0 => (Value::Bool(false), body + 1),
            1 => (Value::Bool(true), body + 1),
            byte => return Err(TupleError::BadBool { at, byte }),
        },
        tag::BYTES | tag::TEXT => {
            let what = if value_tag == tag::TEXT { "text" } else { "bytes" };
            let (payload, next) =
                read_variable(bytes, body, what).map_err(|_| TupleError::EndsEarly { at, what })?;
            let value = if value_tag == tag::TEXT {
                match std::str::from_utf8(payload) {
                    Ok(text) => Value::Text(text.to_owned()),
                    Err(_) => return Err(TupleError::Utf8 { at }),
                }
            } else {
                Value::Bytes(payload.to_vec())
            };
            (value, next)
        }
        other => return Err(TupleError::UnknownTag { at, tag: other }),
    })
}

/// Reads a u32 length and that many bytes starting at `at`; returns them and the offset after.
pub(crate) fn read_variable<'a>(
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
) -> Result<(&'a [u8], usize), TupleError> {
    let head = bytes.get(at..at + 4).ok_or(TupleError::EndsEarly { at, what })?;
    let length = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let end = (at + 4).checked_add(length).ok_or(TupleError::EndsEarly { at, what })?;
    let payload = bytes.get(at + 4..end).ok_or(TupleError::EndsEarly { at, what })?;
    Ok((payload, end))
}

/// Splits `bytes` into tuples of `arity` values each. Arity 0 accepts only empty bytes (and
/// gives no tuples: a tuple of no values has no bytes to count).
pub fn decode_tuples(bytes: &[u8], arity: usize) -> Result<Vec<Vec<Value>>, TupleError> {
    let mut tuples = Vec::new();
    if arity == 0 {
        if !bytes.is_empty() {
            return Err(TupleError::Trailing { count: bytes.len(), arity });
        }
        return Ok(tuples);
    }
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        // Each value takes at least its tag byte: an arity beyond the bytes left cannot fit.
        if arity > bytes.len() - at {
            return Err(TupleError::Trailing { count: bytes.len() - start, arity });
        }
        let mut tuple = Vec::with_capacity(arity);
        for _ in 0..arity {
            let (value, next) = read_value(bytes, at)?;
            tuple.push(value);
            at = next;
        }
        tuples.push(tuple);
    }
    Ok(tuples)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(Value::I32),
            any::<i64>().prop_map(Value::I64),
            any::<u64>().prop_map(Value::U64),
            any::<u64>().prop_map(|bits| Value::F64(f64::from_bits(bits))),
            any::<bool>().prop_map(Value::Bool),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
            ".{0,6}".prop_map(Value::Text),
            any::<i64>().prop_map(Value::Timestamp),
        ]
    }

    /// Equality that treats two f64 values with the same bits as equal (NaN included).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn tuples_round_trip(rows in proptest::collection::vec(proptest::collection::vec(any_value(), 3), 0..6)) {
            let mut bytes = Vec::new();
            for row in &rows {
                for v in row {
                    encode_value(v, &mut bytes);
                }
            }
            let mut counter = Counter::default();
            rows.iter().flatten().for_each(|v| write_value(v, &mut counter));
            prop_assert_eq!(counter.0, bytes.len());
            let back = decode_tuples(&bytes, 3).unwrap();
            prop_assert_eq!(back.len(), rows.len());
            for (a, b) in back.iter().flatten().zip(rows.iter().flatten()) {
                prop_assert!(same(a, b), "{a:?} != {b:?}");
            }
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..48), arity in 0usize..5) {
            let _ = decode_tuples(&bytes, arity);
        }
    }

    #[test]
    fn malformed_tuples_name_the_problem() {
        assert_eq!(decode_tuples(&[9], 1), Err(TupleError::UnknownTag { at: 0, tag: 9 }));
        assert_eq!(
            decode_tuples(&[tag::I64, 1, 2], 1),
            Err(TupleError::EndsEarly { at: 0, what: "i64" })
        );
        assert_eq!(decode_tuples(&[tag::BOOL, 2], 1), Err(TupleError::BadBool { at: 0, byte: 2 }));
        assert_eq!(
            decode_tuples(&[tag::TEXT, 1, 0, 0, 0, 0xff], 1),
            Err(TupleError::Utf8 { at: 0 })
        );
        let huge = [tag::BYTES, 0xff, 0xff, 0xff, 0xff, 1];
        assert_eq!(decode_tuples(&huge, 1), Err(TupleError::EndsEarly { at: 0, what: "bytes" }));
        assert_eq!(
            decode_tuples(&[tag::NULL, tag::NULL, tag::NULL], 2),
            Err(TupleError::Trailing { count: 1, arity: 2 })
        );
        assert_eq!(
            decode_tuples(&[tag::NULL], 0),
            Err(TupleError::Trailing { count: 1, arity: 0 })
        );
        assert_eq!(decode_tuples(&[], 0), Ok(vec![]));
        let mut bytes = Vec::new();
        encode_value(&Value::Text("hé".into()), &mut bytes);
        encode_value(&Value::Null, &mut bytes);
        assert_eq!(bytes, [tag::TEXT, 3, 0, 0, 0, b'h', 0xc3, 0xa9, tag::NULL]);
        assert_eq!(decode_tuples(&bytes, 2), Ok(vec![vec![Value::Text("hé".into()), Value::Null]]));
    }
}
