//! Partial aggregates: the group table one partition's scan folds rows into ([`Groups`]), its
//! wire form, and the coordinator's [`Merger`], which combines the partial states of every
//! partition and finishes them into result rows (the two-phase aggregation of RonSQL and of
//! most distributed SQL engines).
//!
//! A group's key is the group-by register values encoded as tagged tuple values (NULL is its
//! own value, so NULLs form one group; f64 -0.0 is encoded as 0.0 and every NaN as one NaN so
//! that equal values share a group). The key is built in a buffer the table reuses and looked
//! up by bytes in a `KeyTable` (`key_table.rs`): only a new group allocates. Groups are
//! numbered in the order they appear; each group's states sit at `group * aggregates` in one
//! vector, and the wire form lists the groups in that order.
//!
//! Partial state per aggregate, and what finishing makes of it:
//! COUNT: rows or non-NULL arguments -> i64;
//! SUM: checked sum (i64, u64) or f64 sum, and the non-NULL count -> the argument's type, NULL
//! when nothing was summed;
//! MIN / MAX: the best non-NULL value so far (NaN is passed over; bool orders false < true)
//! -> the argument's type or NULL;
//! AVG: exact i128 sum for integer arguments, f64 sum for floats, and the count -> f64 or NULL.
//!
//! ```text
//! partial aggregates (Groups::encode):
//! u32 LE group count
//! u16 LE key arity, u16 LE aggregate count
//! per group: key arity tagged values (tuple.rs), then per aggregate: u8 state kind, then
//!   1 count    i64 count
//!   2 sum i64  i64 sum, i64 count
//!   3 sum u64  u64 sum, i64 count
//!   4 sum f64  f64 sum, i64 count
//!   5 avg int  i128 sum, i64 count
//!   6 avg f64  f64 sum, i64 count
//!   7 min      tagged value (NULL when no input)
//!   8 max      tagged value (NULL when no input)
//! ```

use std::cmp::Ordering;

use super::key_table::{Full, KeyTable};
use super::run::{order, Slot};
use super::tuple::{self, tag, write_variable};
use super::{AggFn, RegType, RunError};
use crate::row::Value;

/// What an aggregating program folds: the key registers and the aggregates.
#[derive(Clone, Debug, Default)]
pub(super) struct Plan {
    /// Each key's slot and type.
    pub(super) keys: Vec<(u16, RegType)>,
    pub(super) aggregates: Vec<AggregatePlan>,
}

/// One aggregate: its fresh state and its argument slot (`None` for COUNT(*)).
#[derive(Clone, Debug)]
pub(super) struct AggregatePlan {
    pub(super) initial: Acc,
    pub(super) arg: Option<u16>,
}

impl AggregatePlan {
    /// The plan of `func` over an argument of type `arg_type` (`None` for COUNT(*)); `None`
    /// when the function does not take that type (the verifier's rule).
    pub(super) fn new(func: AggFn, arg: Option<(u16, RegType)>) -> Option<AggregatePlan> {
        let ty = arg.map(|(_, ty)| ty);
        let initial = match (func, ty) {
            (AggFn::Count, _) => Acc::Count(0),
            (AggFn::Sum, Some(RegType::I64)) => Acc::SumI64 { sum: 0, count: 0 },
            (AggFn::Sum, Some(RegType::U64)) => Acc::SumU64 { sum: 0, count: 0 },
            (AggFn::Sum, Some(RegType::F64)) => Acc::SumF64 { sum: 0.0, count: 0 },
            (AggFn::Avg, Some(RegType::I64 | RegType::U64)) => Acc::AvgInt { sum: 0, count: 0 },
            (AggFn::Avg, Some(RegType::F64)) => Acc::AvgF64 { sum: 0.0, count: 0 },
            (AggFn::Min | AggFn::Max, Some(ty)) => {
                Acc::Extreme { max: func == AggFn::Max, ty, best: Best::Unset }
            }
            _ => return None,
        };
        Some(AggregatePlan { initial, arg: arg.map(|(slot, _)| slot) })
    }
}

/// The best value of a MIN or MAX so far.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Best {
    Unset,
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Bytes(Vec<u8>),
}

impl Best {
    fn slot(&self) -> Slot<'_> {
        match self {
            Best::Unset => Slot::Null,
            Best::I64(v) => Slot::I64(*v),
            Best::U64(v) => Slot::U64(*v),
            Best::F64(v) => Slot::F64(*v),
            Best::Bool(v) => Slot::Bool(*v),
            Best::Bytes(v) => Slot::Bytes(v),
        }
    }

    /// Takes `value` (non-NULL), reusing the byte buffer when there is one.
    fn set(&mut self, value: Slot<'_>) {
        *self = match value {
            Slot::Null => Best::Unset,
            Slot::I64(v) => Best::I64(v),
            Slot::U64(v) => Best::U64(v),
            Slot::F64(v) => Best::F64(v),
            Slot::Bool(v) => Best::Bool(v),
            Slot::Bytes(v) => {
                if let Best::Bytes(buffer) = self {
                    buffer.clear();
                    buffer.extend_from_slice(v);
                    return;
                }
                Best::Bytes(v.to_vec())
            }
        };
    }
}

/// One aggregate's partial state.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Acc {
    Count(i64),
    SumI64 { sum: i64, count: i64 },
    SumU64 { sum: u64, count: i64 },
    SumF64 { sum: f64, count: i64 },
    AvgInt { sum: i128, count: i64 },
    AvgF64 { sum: f64, count: i64 },
    Extreme { max: bool, ty: RegType, best: Best },
}

/// Integer overflow while folding or merging.
struct Overflow;

impl Acc {
    /// Folds one argument (`None` for COUNT(*)).
    fn fold(&mut self, arg: Option<&Slot<'_>>) -> Result<(), Overflow> {
        let Some(value) = arg else {
            if let Acc::Count(count) = self {
                *count = count.checked_add(1).ok_or(Overflow)?;
            }
            return Ok(());
        };
        if matches!(value, Slot::Null) {
            return Ok(());
        }
        match (self, *value) {
            (Acc::Count(count), _) => *count = count.checked_add(1).ok_or(Overflow)?,
            (Acc::SumI64 { sum, count }, Slot::I64(v)) => {
                *sum = sum.checked_add(v).ok_or(Overflow)?;
                *count += 1;
            }
            (Acc::SumU64 { sum, count }, Slot::U64(v)) => {
                *sum = sum.checked_add(v).ok_or(Overflow)?;
                *count += 1;
            }
            (Acc::SumF64 { sum, count } | Acc::AvgF64 { sum, count }, Slot::F64(v)) => {
                *sum += v;
                *count += 1;
            }
            (Acc::AvgInt { sum, count }, Slot::I64(v)) => {
                *sum = sum.checked_add(i128::from(v)).ok_or(Overflow)?;
                *count += 1;
            }
            (Acc::AvgInt { sum, count }, Slot::U64(v)) => {
                *sum = sum.checked_add(i128::from(v)).ok_or(Overflow)?;
                *count += 1;
            }
            (Acc::Extreme { max, best, .. }, value) => {
                let better = match best {
                    Best::Unset => !matches!(value, Slot::F64(v) if v.is_nan()),
                    _ => {
                        order(&value, &best.slot())
                            == Some(if *max { Ordering::Greater } else { Ordering::Less })
                    }
                };
                if better {
                    best.set(value);
                }
            }
            (acc, value) => unreachable!(
                "verified: the argument's type fits the aggregate ({acc:?}, {value:?})"
            ),
        }
        Ok(())
    }

    /// Combines another partition's state of the same aggregate (checked by the decoder).
    fn merge(&mut self, other: &Acc) -> Result<(), Overflow> {
        let add = |a: i64, b: i64| a.checked_add(b).ok_or(Overflow);
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a = add(*a, *b)?,
            (Acc::SumI64 { sum, count }, Acc::SumI64 { sum: s, count: c }) => {
                *sum = sum.checked_add(*s).ok_or(Overflow)?;
                *count = add(*count, *c)?;
            }
            (Acc::SumU64 { sum, count }, Acc::SumU64 { sum: s, count: c }) => {
                *sum = sum.checked_add(*s).ok_or(Overflow)?;
                *count = add(*count, *c)?;
            }
            (Acc::SumF64 { sum, count }, Acc::SumF64 { sum: s, count: c })
            | (Acc::AvgF64 { sum, count }, Acc::AvgF64 { sum: s, count: c }) => {
                *sum += *s;
                *count = add(*count, *c)?;
            }
            (Acc::AvgInt { sum, count }, Acc::AvgInt { sum: s, count: c }) => {
                *sum = sum.checked_add(*s).ok_or(Overflow)?;
                *count = add(*count, *c)?;
            }
            (Acc::Extreme { best: Best::Unset, .. }, Acc::Extreme { best: Best::Unset, .. }) => {}
            (this @ Acc::Extreme { .. }, Acc::Extreme { best, .. }) => {
                this.fold(Some(&best.slot()))?
            }
            (a, b) => unreachable!("the merger checks partial state kinds ({a:?}, {b:?})"),
        }
        Ok(())
    }

    /// The kind byte of the wire form.
    fn kind(&self) -> u8 {
        match self {
            Acc::Count(_) => 1,
            Acc::SumI64 { .. } => 2,
            Acc::SumU64 { .. } => 3,
            Acc::SumF64 { .. } => 4,
            Acc::AvgInt { .. } => 5,
            Acc::AvgF64 { .. } => 6,
            Acc::Extreme { max: false, .. } => 7,
            Acc::Extreme { max: true, .. } => 8,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind());
        match self {
            Acc::Count(count) => out.extend_from_slice(&count.to_le_bytes()),
            Acc::SumI64 { sum, count } => {
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            Acc::SumU64 { sum, count } => {
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            Acc::SumF64 { sum, count } | Acc::AvgF64 { sum, count } => {
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            Acc::AvgInt { sum, count } => {
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            Acc::Extreme { ty, best, .. } => write_key(&best.slot(), *ty, out),
        }
    }

    /// The finished value.
    fn finish(&self) -> Value {
        match self {
            Acc::Count(count) => Value::I64(*count),
            Acc::SumI64 { count: 0, .. }
            | Acc::SumU64 { count: 0, .. }
            | Acc::SumF64 { count: 0, .. }
            | Acc::AvgInt { count: 0, .. }
            | Acc::AvgF64 { count: 0, .. } => Value::Null,
            Acc::SumI64 { sum, .. } => Value::I64(*sum),
            Acc::SumU64 { sum, .. } => Value::U64(*sum),
            Acc::SumF64 { sum, .. } => Value::F64(*sum),
            Acc::AvgInt { sum, count } => Value::F64(*sum as f64 / *count as f64),
            Acc::AvgF64 { sum, count } => Value::F64(*sum / *count as f64),
            Acc::Extreme { ty, best, .. } => slot_value(best.slot(), *ty),
        }
    }
}

/// A slot of type `ty` as a value (text bytes were checked as UTF-8 where they entered).
fn slot_value(slot: Slot<'_>, ty: RegType) -> Value {
    match (slot, ty) {
        (Slot::Null, _) => Value::Null,
        (Slot::I64(v), _) => Value::I64(v),
        (Slot::U64(v), _) => Value::U64(v),
        (Slot::F64(v), _) => Value::F64(v),
        (Slot::Bool(v), _) => Value::Bool(v),
        (Slot::Bytes(v), RegType::Text) => Value::Text(String::from_utf8_lossy(v).into_owned()),
        (Slot::Bytes(v), _) => Value::Bytes(v.to_vec()),
    }
}

/// A value as a slot of type `ty`, or `None` when it is not of that type.
fn value_slot(value: &Value, ty: RegType) -> Option<Slot<'_>> {
    Some(match (value, ty) {
        (Value::Null, _) => Slot::Null,
        (Value::I64(v), RegType::I64) => Slot::I64(*v),
        (Value::U64(v), RegType::U64) => Slot::U64(*v),
        (Value::F64(v), RegType::F64) => Slot::F64(*v),
        (Value::Bool(v), RegType::Bool) => Slot::Bool(*v),
        (Value::Text(v), RegType::Text) => Slot::Bytes(v.as_bytes()),
        (Value::Bytes(v), RegType::Bytes) => Slot::Bytes(v),
        _ => return None,
    })
}

/// Appends a key value of type `ty` in its canonical tagged form.
pub(super) fn write_key(value: &Slot<'_>, ty: RegType, out: &mut Vec<u8>) {
    match *value {
        Slot::Null => out.push(tag::NULL),
        Slot::I64(v) => {
            out.push(tag::I64);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Slot::U64(v) => {
            out.push(tag::U64);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Slot::F64(v) => {
            let canonical = if v == 0.0 {
                0.0
            } else if v.is_nan() {
                f64::NAN
            } else {
                v
            };
            out.push(tag::F64);
            out.extend_from_slice(&canonical.to_le_bytes());
        }
        Slot::Bool(v) => out.extend_from_slice(&[tag::BOOL, u8::from(v)]),
        Slot::Bytes(v) if ty == RegType::Text => write_variable(tag::TEXT, v, out),
        Slot::Bytes(v) => write_variable(tag::BYTES, v, out),
    }
}

/// The partial aggregates of one partition, keyed by the group-by values. Holds at most
/// `limit` groups: one more is [`RunError::TooManyGroups`].
#[derive(Debug)]
pub struct Groups {
    /// The program whose rows these are.
    program: u64,
    limit: usize,
    key_arity: u16,
    /// Group key bytes -> group number.
    table: KeyTable,
    /// Each group's aggregate states, `initial.len()` per group in group order.
    states: Vec<Acc>,
    initial: Vec<Acc>,
    /// The key of the row being folded (reused).
    key: Vec<u8>,
}

impl Groups {
    pub(super) fn new(program: u64, plan: &Plan, limit: usize) -> Groups {
        Groups {
            program,
            limit,
            key_arity: plan.keys.len() as u16,
            table: KeyTable::new(),
            states: Vec::new(),
            initial: plan.aggregates.iter().map(|a| a.initial.clone()).collect(),
            key: Vec::new(),
        }
    }

    /// How many groups.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Folds one row (its registers) into its group. `instruction` is the `aggregate`
    /// instruction, named when a sum overflows.
    pub(super) fn fold(
        &mut self,
        program: u64,
        plan: &Plan,
        r: &[Slot<'_>],
        instruction: usize,
    ) -> Result<(), RunError> {
        assert_eq!(
            self.program, program,
            "a program folds only into groups it made (Verified::groups)"
        );
        self.key.clear();
        for &(slot, ty) in &plan.keys {
            write_key(&r[usize::from(slot)], ty, &mut self.key);
        }
        let stride = self.initial.len();
        let found = self.table.find_or_insert(&self.key, self.limit);
        let (group, new) = found.map_err(|Full| RunError::TooManyGroups { limit: self.limit })?;
        if new {
            self.states.extend_from_slice(&self.initial);
        }
        let states = &mut self.states[group * stride..(group + 1) * stride];
        for (acc, aggregate) in states.iter_mut().zip(&plan.aggregates) {
            let arg = aggregate.arg.map(|slot| &r[usize::from(slot)]);
            acc.fold(arg).map_err(|Overflow| RunError::Overflow { instruction })?;
        }
        Ok(())
    }

    /// The partial state for the wire (see the module comment).
    pub fn encode(&self) -> Vec<u8> {
        let mut chunks = self.encode_chunks(usize::MAX);
        match chunks.pop() {
            Some((_, bytes)) if chunks.is_empty() => bytes,
            _ => self.header(0),
        }
    }

    /// The partial state in pieces of at most `max_bytes` each (a group larger than that
    /// alone makes a piece), each piece a whole encoding [`Merger::merge`] takes, paired with
    /// its group count. No groups, no pieces.
    pub fn encode_chunks(&self, max_bytes: usize) -> Vec<(u32, Vec<u8>)> {
        let stride = self.initial.len();
        let mut chunks = Vec::new();
        let mut chunk = self.header(0);
        let mut count = 0u32;
        let mut group_bytes = Vec::new();
        for group in 0..self.table.len() {
            group_bytes.clear();
            group_bytes.extend_from_slice(self.table.key(group));
            self.states[group * stride..(group + 1) * stride]
                .iter()
                .for_each(|acc| acc.encode(&mut group_bytes));
            if count > 0 && chunk.len() + group_bytes.len() > max_bytes {
                chunk[..4].copy_from_slice(&count.to_le_bytes());
                chunks.push((count, std::mem::replace(&mut chunk, self.header(0))));
                count = 0;
            }
            chunk.extend_from_slice(&group_bytes);
            count += 1;
        }
        if count > 0 {
            chunk[..4].copy_from_slice(&count.to_le_bytes());
            chunks.push((count, chunk));
        }
        chunks
    }

    /// The header of an encoding of `count` groups.
    fn header(&self, count: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&self.key_arity.to_le_bytes());
        out.extend_from_slice(&(self.initial.len() as u16).to_le_bytes());
        out
    }
}

/// Combines the partial aggregates of every partition and finishes them into rows.
#[derive(Debug)]
pub struct Merger {
    key_types: Vec<RegType>,
    initial: Vec<Acc>,
    limit: usize,
    /// Named by overflow errors.
    instruction: usize,
    /// Group key bytes -> group number.
    table: KeyTable,
    /// Per group: its key values and its states.
    groups: Vec<(Vec<Value>, Vec<Acc>)>,
}

/// A cursor over partial aggregates from a peer.
struct PartialReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> PartialReader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], RunError> {
        let part = self.bytes.get(self.at..self.at.saturating_add(n));
        let part = part.ok_or_else(|| {
            RunError::BadPartial(format!("byte {}: ends inside the {what}", self.at))
        })?;
        self.at += n;
        Ok(part)
    }

    fn i64(&mut self, what: &str) -> Result<i64, RunError> {
        let b = self.take(8, what)?;
        Ok(i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn value(&mut self) -> Result<Value, RunError> {
        let (value, next) = tuple::read_value(self.bytes, self.at)
            .map_err(|e| RunError::BadPartial(e.to_string()))?;
        self.at = next;
        Ok(value)
    }

    /// A state of the same kind as `expected`.
    fn state(&mut self, expected: &Acc) -> Result<Acc, RunError> {
        let at = self.at;
        let kind = self.take(1, "state kind")?[0];
        if kind != expected.kind() {
            return Err(RunError::BadPartial(format!(
                "byte {at}: state kind {kind}, expected {}",
                expected.kind()
            )));
        }
        let negative = |count: i64| {
            if count < 0 {
                Err(RunError::BadPartial(format!("byte {at}: negative count {count}")))
            } else {
                Ok(count)
            }
        };
        Ok(match expected {
            Acc::Count(_) => Acc::Count(negative(self.i64("count")?)?),
            Acc::SumI64 { .. } => {
                Acc::SumI64 { sum: self.i64("sum")?, count: negative(self.i64("count")?)? }
            }
            Acc::SumU64 { .. } => {
                Acc::SumU64 { sum: self.i64("sum")? as u64, count: negative(self.i64("count")?)? }
            }
            Acc::SumF64 { .. } => Acc::SumF64 {
                sum: f64::from_bits(self.i64("sum")? as u64),
                count: negative(self.i64("count")?)?,
            },
            Acc::AvgF64 { .. } => Acc::AvgF64 {
                sum: f64::from_bits(self.i64("sum")? as u64),
                count: negative(self.i64("count")?)?,
            },
            Acc::AvgInt { .. } => {
                let b = self.take(16, "sum")?;
                let mut word = [0u8; 16];
                word.copy_from_slice(b);
                Acc::AvgInt { sum: i128::from_le_bytes(word), count: negative(self.i64("count")?)? }
            }
            Acc::Extreme { max, ty, .. } => {
                let value = self.value()?;
                let slot = value_slot(&value, *ty).ok_or_else(|| {
                    RunError::BadPartial(format!(
                        "byte {at}: {} is not a {ty} MIN/MAX",
                        value.type_name()
                    ))
                })?;
                let mut best = Best::Unset;
                best.set(slot);
                Acc::Extreme { max: *max, ty: *ty, best }
            }
        })
    }
}

impl Merger {
    pub(super) fn new(plan: &Plan, limit: usize, instruction: usize) -> Merger {
        Merger {
            key_types: plan.keys.iter().map(|&(_, ty)| ty).collect(),
            initial: plan.aggregates.iter().map(|a| a.initial.clone()).collect(),
            limit,
            instruction,
            table: KeyTable::new(),
            groups: Vec::new(),
        }
    }

    /// Merges one partition's partial aggregates ([`Groups::encode`], or one piece of
    /// [`Groups::encode_chunks`]), which come from a peer: every byte is checked against the
    /// program. Empty bytes merge nothing. After an error the merger may hold part of
    /// `encoded`: the scan fails as a whole.
    pub fn merge(&mut self, encoded: &[u8]) -> Result<(), RunError> {
        if encoded.is_empty() {
            return Ok(());
        }
        let mut r = PartialReader { bytes: encoded, at: 0 };
        let head = r.take(8, "header")?;
        let count = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let arity = usize::from(u16::from_le_bytes([head[4], head[5]]));
        let aggregates = usize::from(u16::from_le_bytes([head[6], head[7]]));
        if arity != self.key_types.len() || aggregates != self.initial.len() {
            return Err(RunError::BadPartial(format!(
                "{arity} keys and {aggregates} aggregates, the program has {} and {}",
                self.key_types.len(),
                self.initial.len()
            )));
        }
        // Each key value takes at least its tag byte, each state its kind byte and one more.
        let group_bytes = arity + 2 * aggregates;
        if count > 0 && (group_bytes == 0 || count > (encoded.len() - 8) / group_bytes) {
            let left = encoded.len() - 8;
            return Err(RunError::BadPartial(format!("{count} groups cannot fit in {left} bytes")));
        }
        let mut key = Vec::new();
        for _ in 0..count {
            key.clear();
            let mut values = Vec::with_capacity(arity);
            for ty in &self.key_types {
                let at = r.at;
                let value = r.value()?;
                let slot = value_slot(&value, *ty).ok_or_else(|| {
                    RunError::BadPartial(format!(
                        "byte {at}: key value {} is not {ty}",
                        value.type_name()
                    ))
                })?;
                write_key(&slot, *ty, &mut key);
                values.push(value);
            }
            let states = self
                .initial
                .iter()
                .map(|expected| r.state(expected))
                .collect::<Result<Vec<_>, _>>()?;
            self.add(&key, values, states)?;
        }
        if r.at != encoded.len() {
            return Err(RunError::BadPartial(format!(
                "{} bytes after the last group",
                encoded.len() - r.at
            )));
        }
        Ok(())
    }

    /// Adds one group's partial states to the group with the same key.
    fn add(&mut self, key: &[u8], values: Vec<Value>, states: Vec<Acc>) -> Result<(), RunError> {
        let overflow = |Overflow| RunError::Overflow { instruction: self.instruction };
        let found = self.table.find_or_insert(key, self.limit);
        match found.map_err(|Full| RunError::TooManyGroups { limit: self.limit })? {
            (group, false) => {
                for (acc, other) in self.groups[group].1.iter_mut().zip(&states) {
                    acc.merge(other).map_err(overflow)?;
                }
            }
            (_, true) => self.groups.push((values, states)),
        }
        Ok(())
    }

    /// How many groups so far.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups so far.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The result rows: the group values, then each aggregate's result. Without GROUP BY there
    /// is exactly one row, even over no rows (COUNT 0, the others NULL), as in SQL.
    pub fn finish(self) -> Vec<Vec<Value>> {
        let mut groups = self.groups;
        if groups.is_empty() && self.key_types.is_empty() {
            groups.push((Vec::new(), self.initial));
        }
        groups
            .into_iter()
            .map(|(mut values, states)| {
                values.extend(states.iter().map(Acc::finish));
                values
            })
            .collect()
    }
}
