//! `blockwire scan`: a table or ordered-index scan from the command line. The options are
//! parsed into a [`ScanPlan`] before joining the cluster (so bad expression or range text fails
//! without touching it), built into a [`ScanRequest`], and the rows printed as they arrive.
//!
//! Output: JSON lines are written one row at a time. The text table needs its column widths,
//! so it is printed in blocks of [`TEXT_BLOCK_ROWS`] rows: the header and the first block once
//! that many rows arrived (or the scan ended), then each further block; widths only grow, so a
//! later block with a wider cell shifts that column from there on.

use std::io::Write;

use client::expr::{parse_aggregate, parse_expr, parse_filter};
use client::{AggFn, Expr, Range, ScanRequest, ScanStats, Session, Value};
use serde_json::Value as Json;

use crate::output::{aligned_within, json_object, json_of};
use crate::range::parse_range;
use crate::{input, CliError, Result};

/// Rows of text buffered to align one block of the table.
const TEXT_BLOCK_ROWS: usize = 1000;

/// The syntax notes under `blockwire scan --help`.
pub(crate) const HELP: &str = "\
Expressions (--where, --select, --group-by, --agg) are SQL as MySQL writes it: columns by
name (or in `backticks`), numbers, 'text', X'hex', TRUE, FALSE, NULL, + - * / %, = <> != < <=
> >=, AND, OR, NOT, IS [NOT] NULL, [NOT] LIKE 'pattern' (% and _, \\ escapes), [NOT] IN (list
of literals), [NOT] BETWEEN a AND b, parentheses. Aggregates: count(*), count(EXPR),
sum(EXPR), min(EXPR), max(EXPR), avg(EXPR).

RANGE (on the leading columns of --index; several --range are their union):
  [LOW..HIGH]   [ and ] include the bound, ( and ) exclude it: [5..10), (0..1.5]
  [LOW..]       no upper bound; (..HIGH) no lower bound; [..] everything
  =V1,V2        the rows whose first index columns equal V1, V2
  LOW and HIGH are comma-separated literals for the first index columns, in index order:
  [3,'a'..3,'m') on an index (grp, name). Literals as in expressions (numbers, 'text',
  true, false, NULL); write decimals with digits on both sides of the point.

Output: columns from --columns then --select (default: every column); with --agg, the
--group-by columns (named as written) then the aggregates (named as written). Text output is
an aligned table, printed in blocks of 1000 rows (widths may grow between blocks); JSON
output is one object per row, written as each row arrives. --stats prints the partitions
scanned, the rows the data nodes examined and the batches received to stderr.

Examples:
  blockwire scan accounts --where \"balance > 100 AND owner LIKE 'a%'\" --columns id,balance
  blockwire scan facts --index by_grp --range '[3..5)' --order --limit 20
  blockwire scan facts --group-by grp --agg 'count(*)' --agg 'sum(amount)' --order";

/// The options of `blockwire scan`.
#[derive(Debug, clap::Args)]
pub(crate) struct ScanArgs {
    /// The table.
    table: String,
    /// Scans this ordered index (needed by --range, and by --order without --agg).
    #[arg(long, value_name = "NAME")]
    index: Option<String>,
    /// A range of the index's leading columns (repeatable: their union); see RANGE below.
    #[arg(long = "range", value_name = "RANGE", allow_hyphen_values = true)]
    ranges: Vec<String>,
    /// Keeps the rows for which EXPR is true (run on the data nodes).
    #[arg(long = "where", value_name = "EXPR", allow_hyphen_values = true)]
    filter: Option<String>,
    /// Returns these columns, in this order (default: every column).
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    columns: Vec<String>,
    /// Returns EXPR as the column NAME, after any --columns (repeatable).
    #[arg(long = "select", value_name = "NAME=EXPR", allow_hyphen_values = true)]
    selects: Vec<String>,
    /// Groups the aggregates by EXPR (repeatable); needs --agg.
    #[arg(long = "group-by", value_name = "EXPR", allow_hyphen_values = true)]
    group_by: Vec<String>,
    /// An aggregate: count(*), count(EXPR), sum(EXPR), min(EXPR), max(EXPR), avg(EXPR)
    /// (repeatable).
    #[arg(long = "agg", value_name = "EXPR")]
    aggregates: Vec<String>,
    /// Rows in index order over the whole table (needs --index), or with --agg the groups
    /// sorted by their group columns.
    #[arg(long)]
    order: bool,
    /// At most N rows (N >= 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Most rows in one batch of one partition (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_rows: u32,
    /// Prints partitions scanned, rows examined and batches received to stderr after the rows.
    #[arg(long)]
    stats: bool,
}

/// A scan's options, parsed and checked.
#[derive(Debug)]
pub(crate) struct ScanPlan {
    table: String,
    index: Option<String>,
    ranges: Vec<Range>,
    filter: Option<Expr>,
    /// Output columns: `--columns` as column expressions, then `--select`.
    output: Vec<(String, Expr)>,
    group_by: Vec<(String, Expr)>,
    aggregates: Vec<(String, AggFn, Option<Expr>)>,
    order: bool,
    limit: Option<u64>,
    batch_rows: u32,
    stats: bool,
}

/// A parse error of `option`'s `text`, with the parser's message.
fn bad_option(option: &str, text: &str, e: client::Error) -> CliError {
    let message = match e {
        client::Error::Invalid { message, .. } => message,
        other => other.to_string(),
    };
    input(format!("{option} {text:?}: {message}"))
}

impl ScanPlan {
    /// Parses the options' expressions and ranges, and checks that they go together.
    pub(crate) fn parse(args: &ScanArgs) -> Result<ScanPlan> {
        check_combination(args)?;
        let filter = match &args.filter {
            Some(text) => Some(parse_filter(text).map_err(|e| bad_option("--where", text, e))?),
            None => None,
        };
        let mut output = Vec::new();
        for name in &args.columns {
            let name = name.trim();
            if name.is_empty() {
                return Err(input(format!(
                    "--columns {:?}: an empty column name",
                    args.columns.join(",")
                )));
            }
            output.push((name.to_string(), Expr::Column(name.to_string())));
        }
        for text in &args.selects {
            output.push(parse_select(text)?);
        }
        let mut group_by = Vec::new();
        for text in &args.group_by {
            let expr = parse_expr(text).map_err(|e| bad_option("--group-by", text, e))?;
            group_by.push((text.trim().to_string(), expr));
        }
        let mut aggregates = Vec::new();
        for text in &args.aggregates {
            let (func, arg) = parse_aggregate(text).map_err(|e| bad_option("--agg", text, e))?;
            aggregates.push((text.trim().to_string(), func, arg));
        }
        let names = output.iter().map(|(n, _)| n).chain(group_by.iter().map(|(n, _)| n));
        check_unique(names.chain(aggregates.iter().map(|(n, _, _)| n)))?;
        Ok(ScanPlan {
            table: args.table.clone(),
            index: args.index.clone(),
            ranges: args.ranges.iter().map(|r| parse_range(r)).collect::<Result<_>>()?,
            filter,
            output,
            group_by,
            aggregates,
            order: args.order,
            limit: args.limit,
            batch_rows: args.batch_rows,
            stats: args.stats,
        })
    }

    /// The client's request for `table` (the plan's table, from the dictionary).
    fn request(&self, table: &std::sync::Arc<client::Table>) -> ScanRequest {
        let mut request = ScanRequest::new(table).batch_rows(self.batch_rows);
        if let Some(index) = &self.index {
            request = request.index(index);
        }
        for range in &self.ranges {
            request = request.range(range.clone());
        }
        if let Some(filter) = &self.filter {
            request = request.filter(filter.clone());
        }
        for (name, expr) in &self.output {
            request = request.select(name, expr.clone());
        }
        for (name, expr) in &self.group_by {
            request = request.group_by(name, expr.clone());
        }
        for (name, func, arg) in &self.aggregates {
            request = request.aggregate(name, *func, arg.clone());
        }
        if self.order {
            request = request.ordered();
        }
        if let Some(n) = self.limit {
            request = request.limit(n);
        }
        request
    }
}

/// Options that cannot go together, named.
fn check_combination(args: &ScanArgs) -> Result<()> {
    let aggregate = !args.aggregates.is_empty();
    if !args.ranges.is_empty() && args.index.is_none() {
        return Err(input("--range needs --index NAME (a range is on an ordered index's columns)"));
    }
    if args.order && args.index.is_none() && !aggregate {
        return Err(input(
            "--order needs --index NAME (rows come in index order), or --agg (groups come sorted)",
        ));
    }
    if !args.group_by.is_empty() && !aggregate {
        return Err(input("--group-by needs at least one --agg"));
    }
    if aggregate && (!args.columns.is_empty() || !args.selects.is_empty()) {
        return Err(input(
            "--columns and --select do not go with --agg (an aggregate returns its --group-by \
             columns, then its aggregates)",
        ));
    }
    Ok(())
}

/// `NAME=EXPR`: NAME letters, digits and `_`, not starting with a digit.
fn parse_select(text: &str) -> Result<(String, Expr)> {
    let not_named =
        || input(format!("--select {text:?}: not NAME=EXPR (NAME: letters, digits, _)"));
    let (name, expr_text) = text.split_once('=').ok_or_else(not_named)?;
    let name = name.trim();
    let word = name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if name.is_empty() || !word || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(not_named());
    }
    let expr = parse_expr(expr_text).map_err(|e| bad_option("--select", text, e))?;
    Ok((name.to_string(), expr))
}

fn check_unique<'a>(names: impl Iterator<Item = &'a String>) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if seen.contains(&name.as_str()) {
            return Err(input(format!("the output names the column {name:?} twice")));
        }
        seen.push(name);
    }
    Ok(())
}

/// Runs the scan and prints its rows to `out` as they arrive; then, with `--stats`, its
/// statistics to stderr.
pub(crate) fn run(
    session: &mut Session<'_>,
    plan: &ScanPlan,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let table = session.table(&plan.table)?;
    let request = plan.request(&table);
    let mut scan = session.scan(&request)?;
    let mut printer = Printer::new(scan.columns().to_vec(), json);
    let mut rows = 0u64;
    let mut printed = Ok(());
    for row in &mut scan {
        match row.map_err(CliError::from).and_then(|row| printer.row(out, row)) {
            Ok(()) => rows += 1,
            Err(e) => {
                printed = Err(e);
                break;
            }
        }
    }
    let stats = scan.stats();
    drop(scan);
    // The rows that arrived before an error are printed before it (a table with no row yet
    // prints no header).
    if printed.is_err() && rows == 0 {
        return printed;
    }
    let finished = printer.finish(out);
    printed?;
    finished?;
    if plan.stats {
        eprint!("{}", stats_text(&stats, rows, json));
    }
    Ok(())
}

fn stats_text(stats: &ScanStats, rows: u64, json: bool) -> String {
    if json {
        json_object(&[
            ("partitions", Json::from(stats.partitions)),
            ("examined", Json::from(stats.examined)),
            ("batches", Json::from(stats.batches)),
            ("rows", Json::from(rows)),
        ])
    } else {
        format!(
            "scanned {} partitions: {} rows examined, {} batches, {rows} rows returned\n",
            stats.partitions, stats.examined, stats.batches
        )
    }
}

/// Prints rows as JSON lines or as an aligned table in blocks.
struct Printer {
    columns: Vec<String>,
    json: bool,
    /// Text: the rows of the block being filled, after the header while it is not printed.
    block: Vec<Vec<String>>,
    /// Whether `block` starts with the header.
    header_in_block: bool,
    widths: Vec<usize>,
}

impl Printer {
    fn new(columns: Vec<String>, json: bool) -> Printer {
        let block = if json { Vec::new() } else { vec![columns.clone()] };
        Printer { columns, json, block, header_in_block: !json, widths: Vec::new() }
    }

    fn row(&mut self, out: &mut dyn Write, row: Vec<Value>) -> Result<()> {
        if row.len() != self.columns.len() {
            return Err(input(format!(
                "internal: a row of {} values for {} columns",
                row.len(),
                self.columns.len()
            )));
        }
        if self.json {
            let fields: Vec<(&str, Json)> =
                self.columns.iter().zip(&row).map(|(c, v)| (c.as_str(), json_of(v))).collect();
            return out.write_all(json_object(&fields).as_bytes()).map_err(CliError::Output);
        }
        self.block.push(row.iter().map(Value::to_string).collect());
        if self.block.len() - usize::from(self.header_in_block) >= TEXT_BLOCK_ROWS {
            self.flush_block(out)?;
        }
        Ok(())
    }

    fn flush_block(&mut self, out: &mut dyn Write) -> Result<()> {
        let text = aligned_within(&self.block, &mut self.widths);
        self.block.clear();
        self.header_in_block = false;
        out.write_all(text.as_bytes()).map_err(CliError::Output)
    }

    /// Prints what is buffered (the header at least, in text) and flushes.
    fn finish(&mut self, out: &mut dyn Write) -> Result<()> {
        if !self.block.is_empty() {
            self.flush_block(out)?;
        }
        out.flush().map_err(CliError::Output)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Line {
        #[command(flatten)]
        scan: ScanArgs,
    }

    fn plan(args: &[&str]) -> Result<ScanPlan> {
        let line = Line::try_parse_from(["scan", "orders"].iter().chain(args)).unwrap();
        ScanPlan::parse(&line.scan)
    }

    fn refused(args: &[&str], part: &str) {
        let e = plan(args).expect_err(part).to_string();
        assert!(e.contains(part), "{args:?}: {e:?} does not name {part:?}");
    }

    #[test]
    fn options_become_a_plan() {
        let p = plan(&["--where", "a > 1", "--columns", "a, b", "--select", "c = a + 1"]).unwrap();
        assert_eq!(p.filter, Some(Expr::Column("a".into()).gt(Expr::Literal(Value::I64(1)))));
        let names: Vec<&str> = p.output.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(p.output[2].1, Expr::Column("a".into()).add(Expr::Literal(Value::I64(1))));
        let p = plan(&["--group-by", " g % 2 ", "--agg", "count(*)", "--agg", "SUM(x)"]).unwrap();
        assert_eq!(p.group_by[0].0, "g % 2");
        let aggregates: Vec<(&str, AggFn)> =
            p.aggregates.iter().map(|(n, f, _)| (n.as_str(), *f)).collect();
        assert_eq!(aggregates, [("count(*)", AggFn::Count), ("SUM(x)", AggFn::Sum)]);
        let p = plan(&["--index", "i", "--range", "[1..2)", "--range", "=-3", "--order"]).unwrap();
        assert_eq!(p.ranges.len(), 2);
        assert!(p.order);
    }

    #[test]
    fn options_that_do_not_go_together() {
        refused(&["--range", "=1"], "--range needs --index NAME");
        refused(&["--order"], "--order needs --index NAME");
        refused(&["--group-by", "g"], "--group-by needs at least one --agg");
        refused(&["--agg", "count(*)", "--columns", "a"], "--columns and --select do not go");
        refused(&["--columns", "a,,b"], "--columns \"a,,b\": an empty column name");
        refused(&["--columns", "a", "--select", "a=b"], "names the column \"a\" twice");
        refused(&["--select", "1x=b"], "--select \"1x=b\": not NAME=EXPR");
        refused(&["--select", "b"], "--select \"b\": not NAME=EXPR");
        refused(&["--select", "x=b +"], "--select \"x=b +\": cannot parse the expression");
        refused(&["--where", "a ="], "--where \"a =\": cannot parse the expression");
        refused(&["--agg", "sum(*)"], "--agg \"sum(*)\": `sum(*)` at line 1, column 1");
        refused(&["--index", "i", "--range", "1..2"], "--range \"1..2\": a range starts");
    }

    fn printed(rows: &[Vec<Value>], json: bool) -> String {
        let mut out = Vec::new();
        let mut printer = Printer::new(vec!["id".into(), "name".into()], json);
        for row in rows {
            printer.row(&mut out, row.clone()).unwrap();
        }
        printer.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_in_aligned_blocks_and_json_lines() {
        let row = |id: i64, name: &str| vec![Value::I64(id), Value::Text(name.into())];
        let rows = [row(1, "a"), row(22, "bb"), vec![Value::I64(3), Value::Null]];
        assert_eq!(printed(&rows, false), "id  name\n1   \"a\"\n22  \"bb\"\n3   NULL\n");
        assert_eq!(printed(&[], false), "id  name\n");
        let json =
            "{\"id\":1,\"name\":\"a\"}\n{\"id\":22,\"name\":\"bb\"}\n{\"id\":3,\"name\":null}\n";
        assert_eq!(printed(&rows, true), json);
        assert_eq!(printed(&[], true), "");

        // A wider cell after the first block widens its column from there on.
        let mut rows: Vec<Vec<Value>> =
            (0..TEXT_BLOCK_ROWS as i64).map(|i| row(i % 10, "x")).collect();
        rows.push(row(123_456, "y"));
        let text = printed(&rows, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), TEXT_BLOCK_ROWS + 2);
        assert_eq!(
            (lines[0], lines[1], lines[TEXT_BLOCK_ROWS]),
            ("id  name", "0   \"x\"", "9   \"x\"")
        );
        assert_eq!(lines[TEXT_BLOCK_ROWS + 1], "123456  \"y\"");
        assert!(HELP.contains(&format!("blocks of {TEXT_BLOCK_ROWS} rows")));
    }
}
