//! EXPLAIN: the plan as lines of text, before anything runs: which index drives each scan and
//! its ranges, which partitions, which joins are lookups, where aggregation happens, and the
//! program each scan pushes to the data nodes.

use engine::index::{Range, RangeEnd};
use engine::program::compile::{compile, Expr, Query};
use engine::scan::ScanSpec;
use engine::schema::Table;

use super::exec::{KEY_BATCH, RANGE_BATCH};
use super::local;
use super::plan::{stage_queries, Access, Join, Method, Plan, Select, Shape, Source, SourceKind};

/// The plan's lines.
pub(super) fn render(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for cte in &plan.ctes {
        out.push(format!("CTE {} ({}): run first, its rows held in the client", cte.name, cte.select.names.join(", ")));
        select(&cte.select, &mut out);
    }
    out.push(format!("SELECT {}", plan.main.names.join(", ")));
    select(&plan.main, &mut out);
    out
}

/// An expression as the user would read it: `#aN` as its aggregate, `#gN` as its GROUP BY
/// expression, `#oN` as its output.
fn show(e: &Expr, sel: &Select) -> String {
    let named = local::rename(e, &|name: &str| {
        let (kind, n) = match (name.strip_prefix("#a"), name.strip_prefix("#g")) {
            (Some(n), _) => ("#a", n),
            (_, Some(n)) => ("#g", n),
            _ => return name.to_string(),
        };
        let Ok(n) = n.parse::<usize>() else { return name.to_string() };
        match (kind, &sel.shape) {
            ("#a", Shape::Aggregate { aggregates, .. }) => aggregates.get(n).map_or(name.to_string(), |(f, a)| {
                format!("{}({})", f.name(), a.as_ref().map_or("*".to_string(), |a| a.to_string()))
            }),
            ("#g", Shape::Aggregate { group_by, .. }) => group_by.get(n).map_or(name.to_string(), |g| g.to_string()),
            _ => name.to_string(),
        }
    });
    named.to_string()
}

fn select(sel: &Select, out: &mut Vec<String>) {
    source(sel, &sel.source, out);
    let (first, _) = stage_queries(sel);
    if sel.is_one_scan() {
        if let SourceKind::Table { table, .. } = &sel.source.kind {
            let bare = |e: &Expr| local::rename(e, &|k| k.split_once('.').map_or(k.to_string(), |(_, c)| c.to_string()));
            let query = Query {
                filter: sel.source.filter.as_ref().map(bare),
                output: first.output.iter().map(bare).collect(),
                group_by: first.group_by.iter().map(bare).collect(),
                aggregates: first.aggregates.iter().map(|(f, a)| (*f, a.as_ref().map(bare))).collect(),
            };
            match compile(table, &query) {
                Ok(p) => out.push(format!(
                    "    pushed program: {} instructions, {} registers, {} constants, {} bytes",
                    p.code.len(),
                    p.registers.len(),
                    p.constants.len(),
                    p.encoded_len()
                )),
                Err(e) => out.push(format!("    pushed program: does not compile for the data nodes: {e}")),
            }
        }
    }
    for j in &sel.joins {
        join(j, out);
    }
    if let Some(r) = &sel.residual {
        out.push(format!("  filter on the joined rows (client): {}", show(r, sel)));
    }
    let where_ = if sel.is_one_scan() { "on the data nodes, per partition, merged by the coordinator" } else { "in the client" };
    match &sel.shape {
        Shape::Rows { output } => {
            let outs: Vec<String> = output.iter().take(sel.names.len()).map(|e| show(e, sel)).collect();
            let place = if sel.is_one_scan() { "computed on the data nodes" } else { "computed in the client" };
            out.push(format!("  output ({place}): {}", outs.join(", ")));
        }
        Shape::Aggregate { group_by, aggregates, having, output } => {
            let groups: Vec<String> = group_by.iter().map(|g| g.to_string()).collect();
            let aggs: Vec<String> = aggregates
                .iter()
                .map(|(f, a)| format!("{}({})", f.name(), a.as_ref().map_or("*".to_string(), |a| a.to_string())))
                .collect();
            let by = if groups.is_empty() { "no GROUP BY".to_string() } else { format!("GROUP BY {}", groups.join(", ")) };
            out.push(format!("  aggregate ({where_}): {by}; {}", aggs.join(", ")));
            if let Some(h) = having {
                out.push(format!("  HAVING (client, over the groups): {}", show(h, sel)));
            }
            let outs: Vec<String> = output.iter().take(sel.names.len()).map(|e| show(e, sel)).collect();
            out.push(format!("  output (client, over the groups): {}", outs.join(", ")));
        }
    }
    if !sel.order.is_empty() {
        let output = match &sel.shape {
            Shape::Rows { output } | Shape::Aggregate { output, .. } => output,
        };
        let keys: Vec<String> = sel
            .order
            .iter()
            .map(|(i, desc)| format!("{}{}", show(&output[*i], sel), if *desc { " DESC" } else { "" }))
            .collect();
        let how = if sel.index_ordered {
            "the index order, partitions merged in the client"
        } else {
            "sorted in the client"
        };
        out.push(format!("  ORDER BY {}: {how}", keys.join(", ")));
    }
    if sel.limit.is_some() || sel.offset > 0 {
        let pushed = sel.is_one_scan() && matches!(sel.shape, Shape::Rows { .. }) && (sel.order.is_empty() || sel.index_ordered);
        let limit = sel.limit.map_or("no LIMIT".to_string(), |l| format!("LIMIT {l}"));
        out.push(format!(
            "  {limit} OFFSET {}{}",
            sel.offset,
            if pushed && sel.limit.is_some() { " (each partition stops after LIMIT + OFFSET rows)" } else { "" }
        ));
    }
}

fn source(sel: &Select, s: &Source, out: &mut Vec<String>) {
    let cols: Vec<String> = s.columns.iter().map(|c| c.name.clone()).collect();
    match &s.kind {
        SourceKind::Table { table, access: Access::Keys(keys) } => {
            let shown: Vec<String> = keys.iter().take(4).map(|k| values(k)).collect();
            out.push(format!(
                "  read {} AS {} by primary key: {} key(s) {}{} ({} per round trip; each read on its partition's data node)",
                table.name(),
                s.alias,
                keys.len(),
                shown.join(", "),
                if keys.len() > 4 { ", ..." } else { "" },
                KEY_BATCH
            ));
            if let Some(f) = &s.filter {
                out.push(format!("    filter (client, on the rows read): {}", show(f, sel)));
            }
        }
        SourceKind::Table { table, access: Access::Scan { index, ranges } } => {
            match index {
                Some(name) => out.push(format!(
                    "  scan {} AS {} by ordered index {} ({}), ranges {}; {}",
                    table.name(),
                    s.alias,
                    name,
                    index_columns(table, name),
                    show_ranges(ranges),
                    partitions(table, Some(name), ranges)
                )),
                None => out.push(format!(
                    "  full scan of {} AS {}; {}",
                    table.name(),
                    s.alias,
                    partitions(table, None, &[])
                )),
            }
            if let Some(f) = &s.filter {
                out.push(format!("    pushed filter: {}", show(f, sel)));
            }
            if !sel.is_one_scan() {
                out.push(format!("    columns returned: {}", cols.join(", ")));
            }
        }
        SourceKind::Cte { name, .. } => {
            out.push(format!("  rows of CTE {name} AS {} (in the client)", s.alias));
            if let Some(f) = &s.filter {
                out.push(format!("    filter (client): {}", show(f, sel)));
            }
        }
    }
}

fn join(j: &Join, out: &mut Vec<String>) {
    let s = &j.source;
    let kind = if j.left { "LEFT JOIN" } else { "JOIN" };
    let on: Vec<String> = j.pairs.iter().map(|(x, y)| format!("{y} = {x}")).collect();
    let table_name = match &s.kind {
        SourceKind::Table { table, .. } => table.name().to_string(),
        SourceKind::Cte { name, .. } => name.clone(),
    };
    let how = match &j.method {
        Method::PrimaryKey => format!(
            "lookup by primary key, the distinct keys read {KEY_BATCH} per round trip, in parallel on their data nodes"
        ),
        Method::Index { name, prefix } => {
            let pruned = match &s.kind {
                SourceKind::Table { table, .. } => {
                    let spec = ScanSpec {
                        index: table.index_number(name).map(|i| i as u16),
                        ranges: Vec::new(),
                        program: Vec::new(),
                    };
                    leads_with_partition_key(table, &spec)
                }
                SourceKind::Cte { .. } => false,
            };
            format!(
                "lookup by ordered index {name} on its first {prefix} column(s): one index scan with a range per distinct key ({RANGE_BATCH} ranges per scan), {}",
                if pruned {
                    "on the partitions those keys fix"
                } else {
                    "on every partition (the index does not lead with the partition key)"
                }
            )
        }
        Method::Hash => "hash match with the CTE's rows in the client".to_string(),
    };
    out.push(format!("  {kind} {table_name} AS {} ON {}: {how}", s.alias, on.join(" AND ")));
    if let Some(f) = &s.filter {
        let place = match (&s.kind, &j.method) {
            (SourceKind::Table { .. }, Method::Index { .. }) => "pushed filter",
            _ => "filter (client, on the rows reached)",
        };
        out.push(format!("    {place}: {f}"));
    }
}

/// Whether ranges of `spec`'s index that fix its leading columns fix the partition.
fn leads_with_partition_key(table: &Table, spec: &ScanSpec) -> bool {
    let Some(i) = spec.index else { return false };
    let columns = &table.index_columns[usize::from(i)];
    let key = usize::from(table.partition_key_columns);
    columns.len() >= key && columns[..key] == table.key_columns[..key]
}

fn index_columns(table: &Table, name: &str) -> String {
    match table.index_number(name) {
        Some(i) => table.index_columns[i]
            .iter()
            .map(|c| table.def.columns[usize::from(*c)].name.clone())
            .collect::<Vec<_>>()
            .join(", "),
        None => "?".into(),
    }
}

fn values(v: &[engine::row::Value]) -> String {
    format!("({})", v.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
}

fn show_ranges(ranges: &[Range]) -> String {
    let end = |e: &RangeEnd, low: bool| {
        if e.values.is_empty() {
            return if low { "[-inf".to_string() } else { "+inf]".to_string() };
        }
        let v = values(&e.values);
        match (low, e.inclusive) {
            (true, true) => format!("[{v}"),
            (true, false) => format!("({v}"),
            (false, true) => format!("{v}]"),
            (false, false) => format!("{v})"),
        }
    };
    let shown: Vec<String> = ranges
        .iter()
        .take(4)
        .map(|r| {
            if r.low == r.high && r.low.inclusive && !r.low.values.is_empty() {
                format!("= {}", values(&r.low.values))
            } else {
                format!("{} .. {}", end(&r.low, true), end(&r.high, false))
            }
        })
        .collect();
    let more = if ranges.len() > 4 { format!(" and {} more", ranges.len() - 4) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// Which partitions a scan runs on.
fn partitions(table: &Table, index: Option<&str>, ranges: &[Range]) -> String {
    let index = index.and_then(|n| table.index_number(n)).map(|i| i as u16);
    let spec = ScanSpec { index, ranges: ranges.to_vec(), program: Vec::new() };
    let list = spec.partitions(table);
    if list.len() as u32 == table.partitions {
        format!("all {} partitions in parallel", table.partitions)
    } else {
        format!(
            "pruned to partition(s) {} of {} (the bounds fix the partition key)",
            list.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
            table.partitions
        )
    }
}
