//! Running a plan: the data nodes' scans and key reads, then the client's stages.

use std::collections::HashMap;
use std::sync::Arc;

use engine::program::compile::{Expr, Query};
use engine::protocol::{Exec, LockMode};
use engine::row::Value;
use engine::schema::{ColumnType, Table};

use super::local::{self, match_key, Rel};
use super::plan::{group_names, stage_queries, Access, Join, Method, Plan, Select, Shape, Source, SourceKind};
use super::{refused, SqlRows, MAX_CLIENT_ROWS};
use crate::error::Result;
use crate::session::{ScanRequest, Session};

/// Key reads sent together in one transaction batch.
pub(super) const KEY_BATCH: usize = 256;

/// Ranges of one index-join scan.
pub(super) const RANGE_BATCH: usize = 512;

/// Runs `plan`: its CTEs in order, then the main SELECT.
pub(super) fn run(session: &mut Session<'_>, plan: &Plan) -> Result<SqlRows> {
    let mut results: Vec<Rel> = Vec::new();
    for cte in &plan.ctes {
        let mut rel = select(session, &cte.select, &results)?;
        for (col, name) in rel.cols.iter_mut().zip(&cte.select.names) {
            col.0 = name.clone();
        }
        results.push(rel);
    }
    let rel = select(session, &plan.main, &results)?;
    let visible = plan.main.names.len();
    Ok(SqlRows { columns: plan.main.names.clone(), types: plan.main.types[..visible].to_vec(), rows: rel.rows })
}

/// One SELECT's visible result, ordered and limited.
fn select(session: &mut Session<'_>, sel: &Select, ctes: &[Rel]) -> Result<Rel> {
    let outputs: Vec<String> = (0..sel.types.len()).map(|i| format!("#o{i}")).collect();
    let (first, second) = stage_queries(sel);
    let out = if sel.is_one_scan() {
        one_scan(session, sel, &first, second.as_ref(), &outputs)?
    } else {
        let rel = joined(session, sel, ctes)?;
        match second {
            None => local::run(&rel, &first, &outputs)?,
            Some(second) => {
                let groups = local::run(&rel, &first, &group_names(sel))?;
                local::run(&no_empty_total(groups, sel), &second, &outputs)?
            }
        }
    };
    Ok(finish(out, sel))
}

/// `key` without its `alias.` (the name a table's scan knows).
fn bare_name(key: &str) -> String {
    key.split_once('.').map_or(key.to_string(), |(_, c)| c.to_string())
}

fn bare(e: &Expr) -> Expr {
    local::rename(e, &bare_name)
}

/// The whole SELECT as one scan: filter, outputs or GROUP BY and aggregates on the data nodes.
fn one_scan(
    session: &mut Session<'_>,
    sel: &Select,
    first: &Query,
    second: Option<&Query>,
    outputs: &[String],
) -> Result<Rel> {
    let SourceKind::Table { table, access: Access::Scan { index, ranges } } = &sel.source.kind else {
        unreachable!("is_one_scan checked the source")
    };
    let mut request = scan_request(table, &sel.source, index.as_deref(), ranges);
    match &sel.shape {
        Shape::Rows { output } => {
            for (name, e) in outputs.iter().zip(output) {
                request = request.select(name, bare(e));
            }
            if sel.index_ordered {
                request = request.ordered();
            }
            if let Some(limit) = sel.limit {
                if sel.order.is_empty() || sel.index_ordered {
                    request = request.limit(limit.saturating_add(sel.offset));
                }
            }
            let rows = collect(session, &request)?;
            let rows = rows.into_iter().map(|r| local::fit(r, &sel.types)).collect();
            Ok(Rel { cols: outputs.iter().cloned().zip(sel.types.iter().copied()).collect(), rows })
        }
        Shape::Aggregate { group_by, aggregates, .. } => {
            let names = group_names(sel);
            for (i, g) in group_by.iter().enumerate() {
                request = request.group_by(&names[i], bare(g));
            }
            for (i, (func, arg)) in aggregates.iter().enumerate() {
                request = request.aggregate(&names[group_by.len() + i], *func, arg.as_ref().map(bare));
            }
            let all: Vec<(String, ColumnType)> = sel.source.all.iter().map(|c| (c.key(), c.ty)).collect();
            let (_, _, types) = local::compile_over(&all, first)?;
            let rows = collect(session, &request)?.into_iter().map(|r| local::fit(r, &types)).collect();
            let groups = Rel { cols: names.into_iter().zip(types).collect(), rows };
            let second = second.expect("an aggregating SELECT has a second stage");
            local::run(&no_empty_total(groups, sel), second, outputs)
        }
    }
}

/// A scan of `table` for `source`: its pushed filter, on an index's ranges when given.
fn scan_request(table: &Arc<Table>, source: &Source, index: Option<&str>, ranges: &[engine::index::Range]) -> ScanRequest {
    let mut request = ScanRequest::new(table);
    if let Some(f) = &source.filter {
        request = request.filter(bare(f));
    }
    if let Some(i) = index {
        request = request.index(i);
        for r in ranges {
            request = request.range(r.clone());
        }
    }
    request
}

/// Every row of a scan, within the client's limit.
fn collect(session: &mut Session<'_>, request: &ScanRequest) -> Result<Vec<Vec<Value>>> {
    let mut rows = Vec::new();
    for row in session.scan(request)? {
        rows.push(row?);
        if rows.len() > MAX_CLIENT_ROWS {
            return Err(too_many());
        }
    }
    Ok(rows)
}

fn too_many() -> crate::error::Error {
    refused(format!(
        "the query would hold more than {MAX_CLIENT_ROWS} rows in the client (a result, a CTE or a join): add a LIMIT or narrow the WHERE"
    ))
}

/// An aggregate without GROUP BY over no rows still has its one row (COUNT 0, the rest NULL).
fn no_empty_total(mut groups: Rel, sel: &Select) -> Rel {
    if let Shape::Aggregate { group_by, aggregates, .. } = &sel.shape {
        if group_by.is_empty() && groups.rows.is_empty() {
            let row = aggregates
                .iter()
                .map(|(f, _)| if *f == engine::program::AggFn::Count { Value::I64(0) } else { Value::Null })
                .collect();
            groups.rows.push(row);
        }
    }
    groups
}

/// Sorts (unless an ordered scan did), applies OFFSET and LIMIT, drops ORDER BY's hidden
/// columns.
fn finish(mut rel: Rel, sel: &Select) -> Rel {
    if !sel.order.is_empty() && !sel.index_ordered {
        rel.rows.sort_by(|a, b| {
            for &(i, desc) in &sel.order {
                let o = local::compare(&a[i], &b[i]);
                let o = if desc { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let offset = usize::try_from(sel.offset).unwrap_or(usize::MAX);
    let limit = sel.limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let visible = sel.names.len();
    let rows = rel.rows.into_iter().skip(offset).take(limit).map(|mut r| {
        r.truncate(visible);
        r
    });
    rel.rows = rows.collect();
    rel.cols.truncate(visible);
    rel
}

/// The driving source's rows joined with each joined source's.
fn joined(session: &mut Session<'_>, sel: &Select, ctes: &[Rel]) -> Result<Rel> {
    let mut rel = source_rows(session, &sel.source, ctes)?;
    for j in &sel.joins {
        rel = join(session, rel, j, ctes)?;
    }
    Ok(rel)
}

fn needed(source: &Source) -> Vec<(String, ColumnType)> {
    source.columns.iter().map(|c| (c.key(), c.ty)).collect()
}

/// `rel` (columns `source.all`) filtered by the source's terms and cut to its needed columns.
fn filter_and_project(rel: Rel, source: &Source) -> Result<Rel> {
    let want = needed(source);
    let query = Query {
        filter: source.filter.clone(),
        output: want.iter().map(|(k, _)| Expr::Column(k.clone())).collect(),
        ..Query::default()
    };
    let names: Vec<String> = want.into_iter().map(|(k, _)| k).collect();
    local::run(&rel, &query, &names)
}

/// A CTE's rows under the alias `source` gives them.
fn cte_rows(source: &Source, rel: &Rel) -> Rel {
    let cols = source.all.iter().map(|c| (c.key(), c.ty)).collect();
    Rel { cols, rows: rel.rows.clone() }
}

fn source_rows(session: &mut Session<'_>, source: &Source, ctes: &[Rel]) -> Result<Rel> {
    match &source.kind {
        SourceKind::Table { table, access: Access::Scan { index, ranges } } => {
            let mut request = scan_request(table, source, index.as_deref(), ranges);
            let want = needed(source);
            for (k, _) in &want {
                request = request.select(k, Expr::Column(bare_name(k)));
            }
            let types: Vec<ColumnType> = want.iter().map(|(_, t)| *t).collect();
            let rows = collect(session, &request)?.into_iter().map(|r| local::fit(r, &types)).collect();
            Ok(Rel { cols: want, rows })
        }
        SourceKind::Table { table, access: Access::Keys(keys) } => {
            let rows = read_rows(session, table, keys)?.into_iter().flatten().collect();
            let all = Rel { cols: source.all.iter().map(|c| (c.key(), c.ty)).collect(), rows };
            filter_and_project(all, source)
        }
        SourceKind::Cte { index, .. } => filter_and_project(cte_rows(source, &ctes[*index]), source),
    }
}

/// Committed reads of `keys` (values in key order), [`KEY_BATCH`] per round trip: each read
/// goes to its partition's data node, all of a batch at once.
fn read_rows(session: &mut Session<'_>, table: &Arc<Table>, keys: &[Vec<Value>]) -> Result<Vec<Option<Vec<Value>>>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(KEY_BATCH) {
        let mut tx = session.begin();
        let mut ops = Vec::with_capacity(chunk.len());
        for key in chunk {
            ops.push(tx.read(table, key, LockMode::CommittedRead)?);
        }
        session.execute(&mut tx, Exec::Commit)?;
        out.extend(ops.iter().map(|op| tx.row(*op).map(|r| r.values.clone())));
    }
    Ok(out)
}

/// Positions of `names` in `cols`.
fn positions(cols: &[(String, ColumnType)], names: impl Iterator<Item = String>) -> Vec<usize> {
    names.map(|n| cols.iter().position(|(c, _)| *c == n).expect("the planner fetches every join column")).collect()
}

/// `outer` joined with `j`'s rows.
fn join(session: &mut Session<'_>, outer: Rel, j: &Join, ctes: &[Rel]) -> Result<Rel> {
    let outer_at = positions(&outer.cols, j.pairs.iter().map(|(x, _)| x.clone()));
    let inner = inner_rows(session, &outer, j, ctes)?;
    let inner_at = positions(&inner.cols, j.pairs.iter().map(|(_, y)| y.clone()));
    let mut index: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, row) in inner.rows.iter().enumerate() {
        if let Some(k) = match_key(&inner_at.iter().map(|p| &row[*p]).collect::<Vec<_>>()) {
            index.entry(k).or_default().push(i);
        }
    }
    let width = inner.cols.len();
    let mut rows = Vec::new();
    for row in &outer.rows {
        let key = match_key(&outer_at.iter().map(|p| &row[*p]).collect::<Vec<_>>());
        match key.as_ref().and_then(|k| index.get(k)) {
            Some(matches) => {
                for m in matches {
                    rows.push([row.clone(), inner.rows[*m].clone()].concat());
                }
            }
            None if j.left => rows.push([row.clone(), vec![Value::Null; width]].concat()),
            None => {}
        }
        if rows.len() > MAX_CLIENT_ROWS {
            return Err(too_many());
        }
    }
    let cols = [outer.cols, inner.cols].concat();
    Ok(Rel { cols, rows })
}

/// The outer rows' distinct join values (the columns `outer_at`), as the joined table's
/// column types (values that cannot equal a value of the column match nothing and are left
/// out).
fn outer_keys(outer: &Rel, outer_at: &[usize], table: &Table, inner_columns: &[usize]) -> Vec<Vec<Value>> {
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::new();
    for row in &outer.rows {
        let key: Option<Vec<Value>> =
            outer_at.iter().zip(inner_columns).map(|(p, c)| key_value(table, *c, &row[*p])).collect();
        if let Some(key) = key {
            if let Some(k) = match_key(&key.iter().collect::<Vec<_>>()) {
                if seen.insert(k) {
                    keys.push(key);
                }
            }
        }
    }
    keys
}

/// `v` as a value of column `column` when some value of it equals `v` (an integral float
/// equals an integer).
fn key_value(table: &Table, column: usize, v: &Value) -> Option<Value> {
    let exact = engine::scan::coerce(table, column, v);
    let v = match (exact, v) {
        (Some(v), _) => v,
        (None, Value::F64(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
            engine::scan::coerce(table, column, &Value::I64(*f as i64))?
        }
        (None, _) => return None,
    };
    (v != Value::Null).then_some(v)
}

/// The joined source's rows for the outer rows' values: filtered and cut to the needed columns.
fn inner_rows(session: &mut Session<'_>, outer: &Rel, j: &Join, ctes: &[Rel]) -> Result<Rel> {
    let source = &j.source;
    let key_at = &positions(&outer.cols, j.keys.iter().cloned());
    match (&source.kind, &j.method) {
        (SourceKind::Cte { index, .. }, _) => filter_and_project(cte_rows(source, &ctes[*index]), source),
        (SourceKind::Table { table, .. }, Method::PrimaryKey) => {
            let columns: Vec<usize> = table.key_columns.iter().map(|c| usize::from(*c)).collect();
            let keys = outer_keys(outer, key_at, table, &columns);
            let rows: Vec<Vec<Value>> = read_rows(session, table, &keys)?.into_iter().flatten().collect();
            let all = Rel { cols: source.all.iter().map(|c| (c.key(), c.ty)).collect(), rows };
            filter_and_project(all, source)
        }
        (SourceKind::Table { table, .. }, Method::Index { name, prefix }) => {
            let i = table.index_number(name).expect("the planner chose an index of the table");
            let columns: Vec<usize> = table.index_columns[i][..*prefix].iter().map(|c| usize::from(*c)).collect();
            let keys = outer_keys(outer, key_at, table, &columns);
            let want = needed(source);
            let types: Vec<ColumnType> = want.iter().map(|(_, t)| *t).collect();
            let mut rows = Vec::new();
            for chunk in keys.chunks(RANGE_BATCH) {
                let ranges: Vec<engine::index::Range> = chunk.iter().cloned().map(engine::index::Range::eq).collect();
                let mut request = scan_request(table, source, Some(name), &ranges);
                for (k, _) in &want {
                    request = request.select(k, Expr::Column(bare_name(k)));
                }
                for r in collect(session, &request)? {
                    rows.push(local::fit(r, &types));
                    if rows.len() > MAX_CLIENT_ROWS {
                        return Err(too_many());
                    }
                }
            }
            Ok(Rel { cols: want, rows })
        }
        (SourceKind::Table { .. }, Method::Hash) => unreachable!("a table is joined by key or index"),
    }
}
