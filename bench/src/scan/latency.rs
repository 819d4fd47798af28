//! The latency cases of `blockwire-bench scan`: a one-row committed read by primary key on
//! `txn`, then ordered-index range scans on `(card, ts)` returning 1, 100 and 10,000 rows,
//! first on `txn` (partitioned by `id`: a range on `card` fixes no partition, so every scan
//! runs on all [`PARTITIONS`] partitions), then on [`by_card`]'s `txn_by_card` (partitioned by
//! `card`: a range fixing one card runs on that card's partition alone).
//!
//! Every scan's row count, each row's card (and its `(card, ts)` order when ordered) and the
//! partitions the scan ran on are checked: a wrong one ends the run. Each case warms up, then
//! its measured operations go into an HDR histogram, printed as p50..p99.99 and max beside the
//! ratio of its p50 to the key read's.

use std::sync::Arc;

use client::{
    Exec, LockMode, Outcome, Range, RangeEnd, ScanRequest, ScanStats, Session, Table, Value,
};
use hdrhistogram::Histogram;

use super::{by_card, range_of, Data, ScanArgs, INDEX, PARTITIONS, RANGE_100_RATIO_TARGET, STRIDE};
use crate::cluster::{client_error, R};
use crate::report::{self, latency_case, verdict, LatencyRow};
use crate::Transport;

/// The table a range case reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RangeTable {
    /// `txn`, partitioned by `id`: a range on `card` runs on every partition.
    Txn,
    /// `txn_by_card`, partitioned by `card`: a range fixing one card runs on one partition.
    TxnByCard,
}

impl RangeTable {
    /// The partitions every scan of the table must run on.
    fn partitions(self) -> u32 {
        match self {
            RangeTable::Txn => PARTITIONS,
            RangeTable::TxnByCard => 1,
        }
    }

    /// Where a row of the table holds `card` and `ts`.
    fn card_ts_columns(self) -> (usize, usize) {
        match self {
            RangeTable::Txn => (1, 4),
            RangeTable::TxnByCard => by_card::CARD_TS_COLUMNS,
        }
    }

    /// The cards of the `i`th scan of the case returning `rows` rows.
    fn range(self, data: &Data, rows: u64, i: u64) -> (i64, i64) {
        match self {
            RangeTable::Txn => range_of(data, rows, i),
            RangeTable::TxnByCard => {
                let card = by_card::card_of(rows, i);
                (card, card)
            }
        }
    }

    /// What a case's name adds after its rows.
    fn label(self) -> &'static str {
        match self {
            RangeTable::Txn => "",
            RangeTable::TxnByCard => ", pruned to 1 partition",
        }
    }
}

/// A range on the index's first column: cards `low..=high`.
fn cards(low: i64, high: i64) -> Range {
    Range {
        low: RangeEnd { values: vec![Value::I64(low)], inclusive: true },
        high: RangeEnd { values: vec![Value::I64(high)], inclusive: true },
    }
}

/// One range scan of cards `low..=high` on `table`, which must return exactly `expect` rows,
/// each of a card in the range (in `(card, ts)` order when ordered), and must run on the
/// partitions `table` promises.
fn range_scan(
    s: &mut Session<'_>,
    request: ScanRequest,
    table: RangeTable,
    (low, high): (i64, i64),
    expect: u64,
    ordered: bool,
) -> R<ScanStats> {
    let what = format!("range scan of cards {low}..={high} ({table:?})");
    let mut scan = s.scan(&request.range(cards(low, high))).map_err(client_error(&what))?;
    let (card_at, ts_at) = table.card_ts_columns();
    let (mut got, mut last) = (0u64, (i64::MIN, i64::MIN));
    for row in scan.by_ref() {
        let row = row.map_err(client_error(&what))?;
        let card = row.get(card_at).and_then(Value::as_i64);
        let ts = row.get(ts_at).and_then(Value::as_i64);
        let (Some(card), Some(ts)) = (card, ts) else {
            return Err(format!("{what}: a row without card, ts: {row:?}"));
        };
        if !(low..=high).contains(&card) || (ordered && (card, ts) < last) {
            return Err(format!(
                "{what}: row {row:?} is out of the range or out of order (after card {}, ts {})",
                last.0, last.1
            ));
        }
        last = (card, ts);
        got += 1;
    }
    if got != expect {
        return Err(format!("{what} returned {got} rows, expected {expect}"));
    }
    let stats = scan.stats();
    if stats.partitions != table.partitions() {
        return Err(format!(
            "{what} ran on {} partitions, expected {}",
            stats.partitions,
            table.partitions()
        ));
    }
    Ok(stats)
}

/// One committed read of row `id` by primary key, in a transaction hinted to its primary.
fn key_read(s: &mut Session<'_>, table: &Arc<Table>, id: i64) -> R<()> {
    let key = [Value::I64(id)];
    let mut tx = s.begin_hinted(table, &key).map_err(client_error("begin"))?;
    let read = tx.read(table, &key, LockMode::CommittedRead).map_err(client_error("read"))?;
    match s.execute(&mut tx, Exec::Commit).map_err(client_error("read"))? {
        Outcome::Committed => {}
        other => return Err(format!("read transaction ended {other:?}, not committed")),
    }
    match tx.row(read).and_then(|r| r.get("id")) {
        Some(Value::I64(got)) if *got == id => Ok(()),
        other => Err(format!("the read of key {id} found {other:?}")),
    }
}

/// A latency case: its histogram, and partitions and batches per operation (scans only).
#[derive(Debug)]
pub(super) struct LatencyCase {
    row: LatencyRow,
    /// The table each operation scans and the rows it returns (`None`: the key read).
    scan: Option<(RangeTable, u64)>,
    partitions: u32,
    batches_per_op: f64,
}

/// The tables the latency cases read.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tables<'a> {
    pub txn: &'a Arc<Table>,
    pub by_card: &'a Arc<Table>,
}

/// The range scans of one case, timed: their histogram, the partitions each ran on and the
/// batches of the measured ones.
fn range_case(
    args: &ScanArgs,
    s: &mut Session<'_>,
    table: (RangeTable, &Arc<Table>),
    data: &Data,
    (rows, warmup, ops): (u64, u64, u64),
) -> R<(Histogram<u64>, u32, u64)> {
    let mut request =
        ScanRequest::new(table.1).index(INDEX).batch_rows(args.batch_rows).batch_bytes(u32::MAX);
    if args.ordered {
        request = request.ordered();
    }
    let (mut partitions, mut batches) = (0, 0);
    let h = latency_case(warmup, ops, |i| {
        let range = table.0.range(data, rows, i);
        let stats = range_scan(s, request.clone(), table.0, range, rows, args.ordered)?;
        partitions = stats.partitions;
        if i >= warmup {
            batches += stats.batches;
        }
        Ok::<(), String>(())
    })?;
    Ok((h, partitions, batches))
}

/// The key read, then range scans returning 1, 100 and 10,000 rows on `txn`, then the same on
/// `txn_by_card`.
pub(super) fn latencies(
    args: &ScanArgs,
    t: Transport,
    s: &mut Session<'_>,
    tables: Tables<'_>,
    data: &Data,
) -> R<Vec<LatencyCase>> {
    let mut cases = Vec::new();
    let mut add = |case: String, h: &Histogram<u64>, scan, stats: (u32, u64)| -> R<()> {
        if let Some(dir) = &args.engine.hgrm_dir {
            report::write_case_hgrm(dir, "scan_", &case, h)?;
        }
        let ops = h.len().max(1) as f64;
        let row = LatencyRow::from_histogram(&case, h);
        cases.push(LatencyCase {
            row,
            scan,
            partitions: stats.0,
            batches_per_op: stats.1 as f64 / ops,
        });
        Ok(())
    };
    let h = latency_case(args.warmup, args.ops, |i| {
        key_read(s, tables.txn, (i.wrapping_mul(STRIDE) % data.rows as u64) as i64)
    })?;
    add(format!("{} key read, 1 row", t.name()), &h, None, (1, 0))?;
    let large_ops = args.ops_10000.unwrap_or((args.ops / 10).max(1));
    for (range_table, table) in
        [(RangeTable::Txn, tables.txn), (RangeTable::TxnByCard, tables.by_card)]
    {
        for (rows, warmup, ops) in [
            (1, args.warmup, args.ops),
            (100, args.warmup, args.ops),
            (10_000, args.warmup / 10, large_ops),
        ] {
            let (h, partitions, batches) =
                range_case(args, s, (range_table, table), data, (rows, warmup, ops))?;
            let plural = if rows == 1 { "" } else { "s" };
            add(
                format!("{} range scan, {rows} row{plural}{}", t.name(), range_table.label()),
                &h,
                Some((range_table, rows)),
                (partitions, batches),
            )?;
        }
    }
    Ok(cases)
}

/// Prints the cases as a table, then the 100-row target for both tables.
pub(super) fn print_latency(t: Transport, cases: &[LatencyCase]) {
    println!(
        "{:<50} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>5} {:>8} {:>10}  target",
        "latency (us)",
        "count",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "parts",
        "batches",
        "/ key p50"
    );
    let key_p50 = cases.first().map_or(1, |c| c.row.percentiles_ns[0]).max(1);
    let ratio = |c: &LatencyCase| c.row.percentiles_ns[0] as f64 / key_p50 as f64;
    let target = |c: &LatencyCase| ratio(c) <= RANGE_100_RATIO_TARGET;
    for c in cases {
        let r = &c.row;
        let (parts, batches, target) = match c.scan {
            Some((_, rows)) => (
                c.partitions.to_string(),
                format!("{:.1}", c.batches_per_op),
                match rows {
                    100 => format!("<= {RANGE_100_RATIO_TARGET}x: {}", verdict(target(c))),
                    _ => String::new(),
                },
            ),
            None => ("-".into(), "-".into(), String::new()),
        };
        println!(
            "{:<50} {} {:>5} {:>8} {:>10}  {target}",
            r.case,
            r.cells(7),
            parts,
            batches,
            format!("{:.2}x", ratio(c))
        );
    }
    let hundred = |table| cases.iter().find(|c| c.scan == Some((table, 100)));
    if let (Some(all), Some(pruned)) = (hundred(RangeTable::Txn), hundred(RangeTable::TxnByCard)) {
        println!(
            "{} 100-row range scan p50 within {RANGE_100_RATIO_TARGET}x the key read's: \
             unpruned ({} partitions) {:.2}x {}, pruned ({} partition) {:.2}x {}",
            t.name(),
            all.partitions,
            ratio(all),
            verdict(target(all)),
            pruned.partitions,
            ratio(pruned),
            verdict(target(pruned))
        );
    }
}
