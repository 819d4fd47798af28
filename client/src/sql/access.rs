//! Access paths: how the planner reads a driving table (key reads, an ordered index's ranges,
//! a full scan) and reaches a joined one (its primary key, an ordered index's leading columns),
//! from the WHERE and ON terms on that table; and when an ordered index scan can give ORDER BY
//! its order.

use engine::index::{Range, RangeEnd};
use engine::program::compile::Expr;
use engine::program::CmpOp;
use engine::row::Value;
use engine::schema::Table;
use sqlparser::ast::TableFactor;

use super::local;
use super::plan::{Access, Hints, Method, Select, Shape, SourceKind};
use super::{at, refused};
use crate::error::Result;

/// Most ranges (or keys) one IN list product may make.
const MAX_RANGES: usize = 4096;

/// A term `alias.column op literal` (either way round), as (column, op, value).
fn bound_of<'e>(t: &'e Expr, key: &str) -> Option<(CmpOp, &'e Value)> {
    let Expr::Compare(op, a, b) = t else { return None };
    match (a.as_ref(), b.as_ref()) {
        (Expr::Column(c), Expr::Literal(v)) if c == key => Some((*op, v)),
        (Expr::Literal(v), Expr::Column(c)) if c == key => Some((
            match op {
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::Le => CmpOp::Ge,
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::Ge => CmpOp::Le,
                o => *o,
            },
            v,
        )),
        _ => None,
    }
}

/// The values a term fixes `key` to: `key = v` or `key IN (list)`.
fn fixed_values(terms: &[Expr], key: &str, table: &Table, column: usize) -> Option<Vec<Value>> {
    let fit = |v: &Value| engine::scan::coerce(table, column, v).filter(|v| *v != Value::Null);
    for t in terms {
        if let Some((CmpOp::Eq, v)) = bound_of(t, key) {
            if let Some(v) = fit(v) {
                return Some(vec![v]);
            }
        }
        if let Expr::In(c, list) = t {
            if matches!(c.as_ref(), Expr::Column(k) if k == key) {
                let values: Option<Vec<Value>> = list.iter().filter(|v| **v != Value::Null).map(fit).collect();
                if let Some(values) = values {
                    let mut seen = std::collections::HashSet::new();
                    let values: Vec<Value> =
                        values.into_iter().filter(|v| local::match_key(&[v]).is_some_and(|k| seen.insert(k))).collect();
                    // `IN (NULL)` fixes nothing a range can say: leave it to the filter.
                    if !values.is_empty() {
                        return Some(values);
                    }
                }
            }
        }
    }
    None
}

/// Ranges of index `index` from `terms` and their score (0: the index is not bounded).
fn index_ranges(table: &Table, index: usize, alias: &str, terms: &[Expr]) -> (Vec<Range>, usize) {
    let mut prefixes: Vec<Vec<Value>> = vec![Vec::new()];
    let mut score = 0;
    for &c in &table.index_columns[index] {
        let column = usize::from(c);
        let key = format!("{alias}.{}", table.def.columns[column].name);
        if let Some(values) = fixed_values(terms, &key, table, column) {
            if prefixes.len() * values.len() <= MAX_RANGES {
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| values.iter().map(move |v| [p.clone(), vec![v.clone()]].concat()))
                    .collect();
                score += 2;
                continue;
            }
        }
        let fit = |v: &Value| engine::scan::coerce(table, column, v).filter(|v| *v != Value::Null);
        let mut low: Option<(Value, bool)> = None;
        let mut high: Option<(Value, bool)> = None;
        for t in terms {
            match bound_of(t, &key) {
                Some((op @ (CmpOp::Gt | CmpOp::Ge), v)) if low.is_none() => low = fit(v).map(|v| (v, op == CmpOp::Ge)),
                Some((op @ (CmpOp::Lt | CmpOp::Le), v)) if high.is_none() => high = fit(v).map(|v| (v, op == CmpOp::Le)),
                _ => {}
            }
        }
        if low.is_some() || high.is_some() {
            score += 1;
            let ranges = prefixes
                .iter()
                .map(|p| {
                    let end = |b: &Option<(Value, bool)>| match b {
                        Some((v, inclusive)) => RangeEnd { values: [p.clone(), vec![v.clone()]].concat(), inclusive: *inclusive },
                        None => RangeEnd { values: p.clone(), inclusive: true },
                    };
                    Range { low: end(&low), high: end(&high) }
                })
                .collect();
            return (ranges, score);
        }
        break;
    }
    if score == 0 {
        return (vec![Range::all()], 0);
    }
    (prefixes.into_iter().map(Range::eq).collect(), score)
}

/// How a joined source is reached, and the outer columns giving its key (none for a driving
/// source).
pub(super) type Reach = Option<(Method, Vec<String>)>;

/// Chooses how a source is read (a driving table) or reached (a joined one).
pub(super) fn access(
    kind: SourceKind,
    hints: &Hints,
    alias: &str,
    terms: &[Expr],
    pairs: &[(String, String)],
    joined: bool,
    factor: &TableFactor,
) -> Result<(SourceKind, Reach)> {
    let SourceKind::Table { table, .. } = kind else { return Ok((kind, Some((Method::Hash, Vec::new())))) };
    let allowed = |name: &str| {
        !hints.only.as_ref().is_some_and(|v| !v.iter().any(|n| n == name)) && !hints.ignore.iter().any(|n| n == name)
    };
    let indexes: Vec<usize> = (0..table.def.indexes.len()).filter(|i| allowed(&table.def.indexes[*i].name)).collect();
    if joined {
        let column_of = |inner: &str| inner.split_once('.').map(|(_, c)| c.to_string()).unwrap_or_default();
        let key: Vec<String> = table.def.primary_key.clone();
        let covers = |cols: &[String]| cols.iter().all(|k| pairs.iter().any(|(_, y)| column_of(y) == *k));
        // The outer column giving each of `cols` (the first pair that names it).
        let outer_of = |cols: &[String]| -> Vec<String> {
            cols.iter()
                .filter_map(|c| pairs.iter().find(|(_, y)| column_of(y) == *c).map(|(x, _)| x.clone()))
                .collect()
        };
        if !hints.force && covers(&key) {
            let keys = outer_of(&key);
            let kind = SourceKind::Table { table, access: Access::Scan { index: None, ranges: Vec::new() } };
            return Ok((kind, Some((Method::PrimaryKey, keys))));
        }
        let mut best: Option<(usize, usize)> = None;
        for &i in &indexes {
            let cols: Vec<String> =
                table.index_columns[i].iter().map(|c| table.def.columns[usize::from(*c)].name.clone()).collect();
            let prefix = cols.iter().take_while(|c| pairs.iter().any(|(_, y)| column_of(y) == **c)).count();
            if prefix > 0 && !best.is_some_and(|(_, p)| p >= prefix) {
                best = Some((i, prefix));
            }
        }
        let Some((i, prefix)) = best else {
            return Err(refused(format!(
                "the join of `{alias}`{}: its ON equates neither the whole primary key ({}) nor the leading columns of an ordered index{}, so it cannot run as a lookup join",
                at(factor),
                key.join(", "),
                if hints.only.is_some() || !hints.ignore.is_empty() { " allowed by the hints" } else { "" }
            )));
        };
        let cols: Vec<String> =
            table.index_columns[i].iter().map(|c| table.def.columns[usize::from(*c)].name.clone()).collect();
        let keys = outer_of(&cols[..prefix]);
        let name = table.def.indexes[i].name.clone();
        let kind = SourceKind::Table { table, access: Access::Scan { index: None, ranges: Vec::new() } };
        return Ok((kind, Some((Method::Index { name, prefix }, keys))));
    }
    // A driving table: key reads, an index range scan, or a full scan.
    if !hints.force {
        let mut keys: Vec<Vec<Value>> = vec![Vec::new()];
        for &c in &table.key_columns {
            let column = usize::from(c);
            let key = format!("{alias}.{}", table.def.columns[column].name);
            match fixed_values(terms, &key, &table, column) {
                Some(values) if keys.len() * values.len() <= MAX_RANGES => {
                    keys = keys.iter().flat_map(|k| values.iter().map(move |v| [k.clone(), vec![v.clone()]].concat())).collect();
                }
                _ => {
                    keys.clear();
                    break;
                }
            }
        }
        if !keys.is_empty() {
            return Ok((SourceKind::Table { table, access: Access::Keys(keys) }, None));
        }
    }
    let mut best: Option<(usize, Vec<Range>, usize)> = None;
    for &i in &indexes {
        let (ranges, score) = index_ranges(&table, i, alias, terms);
        if (score > 0 || hints.force) && !best.as_ref().is_some_and(|(_, _, s)| *s >= score) {
            best = Some((i, ranges, score));
        }
    }
    let access = match best {
        Some((i, ranges, _)) => Access::Scan { index: Some(table.def.indexes[i].name.clone()), ranges },
        None => Access::Scan { index: None, ranges: Vec::new() },
    };
    Ok((SourceKind::Table { table, access }, None))
}

/// For a one-scan SELECT of rows whose ORDER BY is ascending on the leading columns of an
/// ordered index (the chosen one, or any when the scan uses none): scan that index in order,
/// so the client need not sort and LIMIT can stop the scan.
pub(super) fn order_by_index(select: &mut Select, visible: usize) {
    let _ = visible;
    if select.order.is_empty() || !select.is_one_scan() || select.order.iter().any(|(_, desc)| *desc) {
        return;
    }
    let Shape::Rows { output } = &select.shape else { return };
    let SourceKind::Table { table, access: Access::Scan { index, ranges } } = &mut select.source.kind else { return };
    let keys: Option<Vec<String>> = select
        .order
        .iter()
        .map(|(i, _)| match &output[*i] {
            Expr::Column(k) => k.split_once('.').map(|(_, c)| c.to_string()),
            _ => None,
        })
        .collect();
    let Some(keys) = keys else { return };
    let fits = |i: usize| {
        let cols = &table.index_columns[i];
        keys.len() <= cols.len()
            && keys.iter().zip(cols.iter()).all(|(k, c)| table.def.columns[usize::from(*c)].name == *k)
    };
    match index {
        Some(name) => {
            if let Some(i) = table.index_number(name) {
                select.index_ordered = fits(i);
            }
        }
        None => {
            if let Some(i) = (0..table.def.indexes.len()).find(|i| fits(*i)) {
                *index = Some(table.def.indexes[i].name.clone());
                *ranges = vec![Range::all()];
                select.index_ordered = true;
            }
        }
    }
}

