//! `blockwire-bench scan`: the engine's scans through the client library. A pushed-down
//! aggregate (filter, GROUP BY and aggregates run by the data nodes) beside the same aggregate
//! computed in this process from a plain full scan, both in rows examined per second; and the
//! latency of ordered-index range scans returning 1, 100 and 10,000 rows beside a one-row read
//! by primary key ([`latency`]), both unpruned (on every partition) and pruned to one
//! partition, all measured side by side in one run per transport.
//!
//! Per transport, on the cluster of [`crate::cluster`] (two data-node processes, one node group
//! of two replicas, this process joined as the API node), the run creates
//! `txn(id i64 key, card i64, merchant i32, amount i64, ts timestamp, declined bool)` with
//! [`PARTITIONS`] partitions (by `id`) and the ordered index [`INDEX`] on `(card, ts)`, and loads
//! `--rows` rows in transactions of [`LOAD_BATCH`] inserts, [`LOAD_IN_FLIGHT`] in flight.
//!
//! Every column is a function of `id` ([`Data`]), so the bench knows every answer in advance:
//! rows `0..bulk` belong to cards of [`ROWS_PER_CARD`] rows each (card `id / 100`), the last
//! `singles` rows to cards of one row each; a range of one single card, one bulk card or 100
//! consecutive bulk cards returns exactly 1, 100 or 10,000 rows, and every range scan's count
//! (and each row's card) is checked. The aggregate's groups are computed from the generator and
//! both ways of computing them must match them exactly, and the pushed-down aggregate must
//! report exactly the table's rows as examined. A wrong answer ends the run with an error: a
//! figure is printed only for work that was right.
//!
//! A range on `card` fixes no partition of `txn`, so its range scans run on all [`PARTITIONS`]
//! partitions. The pruned range scans read a second, fixed-size table, [`by_card`]'s
//! `txn_by_card` (100,000 rows, whatever `--rows` is): it is partitioned by `card` and its index
//! on `(card, ts)` leads with it, so a range fixing one card runs on that card's partition
//! alone; its cards hold 1, 100 or 10,000 rows (one card, not 100 consecutive ones, for the
//! 10,000-row case: a range over several cards fixes no partition).
//!
//! The aggregate runs `--repeat` times each way after one discarded run of each, pushed-down
//! and client-side alternating, so a drift of the shared host weighs on both alike.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{
    col, lit, AggFn, Column, ColumnType, Exec, Outcome, ScanRequest, ScanStats, Session, Table,
    TableDef, Transaction, Value,
};
use engine::schema::IndexDef;
use engine::ErrorCode;

use crate::cluster::{self, client_error, ClusterSpec, Placement, Program, API_NODE, R};
use crate::report::verdict;
use crate::{procstat, Transport};
use latency::{latencies, print_latency, LatencyCase, Tables};

mod by_card;
mod latency;

/// Partitions of each table.
const PARTITIONS: u32 = 8;
/// The ordered index on `(card, ts)` (of each table).
const INDEX: &str = "by_card_ts";
/// Rows of each bulk card.
const ROWS_PER_CARD: i64 = 100;
/// Cards of one row each (at least; the rows that do not fill a bulk card join them).
const SINGLE_CARDS: i64 = 1_000;
/// Bulk cards one 10,000-row range covers.
const LARGE_RANGE_CARDS: i64 = 100;
/// The fewest rows a run accepts: one 10,000-row range and the single cards.
const MIN_ROWS: u64 = (LARGE_RANGE_CARDS * ROWS_PER_CARD + SINGLE_CARDS) as u64;
/// Inserts per loading transaction.
const LOAD_BATCH: i64 = 1_000;
/// Loading transactions in flight at once.
const LOAD_IN_FLIGHT: usize = 16;
/// Loading transactions that failed for a passing reason (an overloaded pool, or an operation
/// unanswered past the deadlock timeout on a busy host: the transaction was aborted) and are
/// sent again before the run gives up.
const LOAD_RETRIES: u32 = 1_000;
/// The aggregate's filter: `amount > AMOUNT_OVER` (amounts are 1..=100,000).
const AMOUNT_OVER: i64 = 10_000;
/// The aggregate's groups: `merchant % GROUPS`.
const GROUPS: i64 = 16;
/// `ts` of row 0: 2026-01-01T00:00:00Z in microseconds; row `id` is `id` seconds later.
const TS_BASE_US: i64 = 1_767_225_600_000_000;
/// Walks over cards and keys take every `STRIDE`th (a prime): they spread over the table.
const STRIDE: u64 = 7_919;

/// The targets.
const ROWS_PER_CORE_TARGET: f64 = 20e6;
const PUSHED_RATIO_TARGET: f64 = 10.0;
const RANGE_100_RATIO_TARGET: f64 = 3.0;

/// Arguments of `blockwire-bench scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Transports to measure, one after the other (repeat the option or give a list, e.g.
    /// tcp,shm; default tcp and shm; rdma only when asked).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub transport: Vec<Transport>,
    /// Rows loaded into the table txn (at least 11,000; the pruned range scans' table
    /// txn_by_card has 100,000 whatever this is).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Measured runs of the aggregate each way (after one discarded run of each).
    #[arg(long, default_value_t = 5)]
    pub repeat: u32,
    /// Measured operations of the one-row key read and of the 1- and 100-row range scans (of
    /// each, unpruned and pruned).
    #[arg(long, default_value_t = 2_000)]
    pub ops: u64,
    /// Measured 10,000-row range scans, unpruned and pruned each (default: --ops / 10, at least
    /// 1).
    #[arg(long)]
    pub ops_10000: Option<u64>,
    /// Operations run and discarded before each latency case (a tenth before the
    /// 10,000-row case).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Most rows in one partition's batch of the scans that return rows (the range scans and
    /// the client-side aggregate's full scan); batches are also capped at the largest signal.
    #[arg(long, default_value_t = 1_024)]
    pub batch_rows: u32,
    /// Range scans return rows in index order over all partitions (merged in the client).
    #[arg(long)]
    pub ordered: bool,
    /// Where the data nodes run and how they wait.
    #[command(flatten)]
    pub engine: cluster::EngineArgs,
}

/// Runs `blockwire-bench scan`.
pub fn run(args: &ScanArgs) -> R<()> {
    let transports = cluster::transports("scan", &args.transport)?;
    if args.rows < MIN_ROWS || args.rows > i64::MAX as u64 {
        return Err(format!(
            "--rows {}: at least {MIN_ROWS} (one 10,000-row range and {SINGLE_CARDS} one-row \
             cards)",
            args.rows
        ));
    }
    if args.repeat == 0 {
        return Err("--repeat must be at least 1".into());
    }
    if args.ops == 0 || args.ops_10000 == Some(0) {
        return Err("--ops and --ops-10000 must be at least 1".into());
    }
    if args.batch_rows == 0 {
        return Err("--batch-rows must be at least 1".into());
    }
    let program = Program::find(args.engine.datanode.as_deref())?;
    let cpus = Placement::from_args(args.engine.cpus.as_deref())?;
    let data = Data::new(args.rows as i64);
    print_header(args, &program, cpus, &data);
    if let Some(p) = cpus {
        // The client's links (and their manager thread, started later) run here too.
        crate::pin(p.driver);
    }
    let cores = DataNodeCores::of(cpus);
    for t in transports {
        let spec = ClusterSpec {
            command: "scan",
            transport: t,
            spin_us: args.engine.spin_us,
            memory_bytes: cluster::memory_bytes_for(args.rows + by_card::ROWS as u64),
            partitions: PARTITIONS,
            // An aggregate answers once every partition is scanned: seconds for 10 M rows.
            timeout: Duration::from_secs(120),
            program: &program,
            nodes_cpus: cpus.map(|p| p.nodes),
            data_dir: None,
            gcp_interval_ms: cluster::GCP_INTERVAL_MS,
            writer: false,
        };
        let measured = cluster::run_on_cluster(&spec, |s, pids| measure(args, t, &data, s, pids))?;
        print_transport(t, args, &program, &cores, &measured);
    }
    Ok(())
}

/// The cores the data nodes run on, for the per-core rate.
#[derive(Debug)]
struct DataNodeCores {
    count: usize,
    how: String,
}

impl DataNodeCores {
    fn of(placement: Option<Placement>) -> DataNodeCores {
        match placement {
            Some(Placement { nodes: [one, two], .. }) if one == two => DataNodeCores {
                count: 1,
                how: format!("1 core (cpu {one}, both data nodes pinned to it)"),
            },
            Some(Placement { nodes: [one, two], .. }) => DataNodeCores {
                count: 2,
                how: format!("2 cores (data node 1 pinned to cpu {one}, data node 2 to {two})"),
            },
            None => {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                DataNodeCores {
                    count: n,
                    how: format!("{n} core(s) (not pinned: every CPU of the machine counted)"),
                }
            }
        }
    }
}

/// 64 well-mixed bits of `id` (splitmix64's finaliser): the benches' rows are functions of it.
pub(crate) fn mix(id: i64) -> u64 {
    let mut z = (id as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The table's rows, each a function of its `id`.
#[derive(Clone, Copy, Debug)]
struct Data {
    /// Rows `0..rows`.
    rows: i64,
    /// Rows `0..bulk` are in bulk cards of [`ROWS_PER_CARD`].
    bulk: i64,
    /// Bulk cards: `0..bulk_cards`; single cards follow, one per row.
    bulk_cards: i64,
}

impl Data {
    fn new(rows: i64) -> Data {
        let singles = SINGLE_CARDS + rows % ROWS_PER_CARD;
        let bulk = rows - singles;
        Data { rows, bulk, bulk_cards: bulk / ROWS_PER_CARD }
    }

    fn singles(&self) -> i64 {
        self.rows - self.bulk
    }

    fn card(&self, id: i64) -> i64 {
        if id < self.bulk {
            id / ROWS_PER_CARD
        } else {
            self.bulk_cards + (id - self.bulk)
        }
    }


    /// `(merchant, amount, declined)` of row `id`: merchants 0..10,000, amounts 1..=100,000,
    /// one row in 20 declined.
    fn facts(id: i64) -> (i32, i64, bool) {
        let m = mix(id);
        ((m % 10_000) as i32, 1 + ((m >> 16) % 100_000) as i64, (m >> 48) % 20 == 0)
    }

    fn values(&self, id: i64) -> [(&'static str, Value); 6] {
        let (merchant, amount, declined) = Data::facts(id);
        [
            ("id", Value::I64(id)),
            ("card", Value::I64(self.card(id))),
            ("merchant", Value::I32(merchant)),
            ("amount", Value::I64(amount)),
            ("ts", Value::Timestamp(TS_BASE_US + id * 1_000_000)),
            ("declined", Value::Bool(declined)),
        ]
    }

    /// The aggregate's answer, computed here.
    fn expected(&self) -> Groups {
        let mut g = GroupsInProgress::new();
        for id in 0..self.rows {
            let (merchant, amount, declined) = Data::facts(id);
            g.add(merchant, amount, declined);
        }
        g.finish()
    }
}

/// `COUNT(*)`, `SUM(amount)` and `MAX(amount)` of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Group {
    count: i64,
    sum: i64,
    max: i64,
}

/// The aggregate's answer: each non-empty group by its `merchant % 16`.
type Groups = BTreeMap<i64, Group>;

/// The client-side aggregate as it runs: the filter and one group per `merchant % 16`.
#[derive(Debug)]
struct GroupsInProgress([Group; GROUPS as usize]);

impl GroupsInProgress {
    fn new() -> GroupsInProgress {
        GroupsInProgress([Group { count: 0, sum: 0, max: i64::MIN }; GROUPS as usize])
    }

    fn add(&mut self, merchant: i32, amount: i64, declined: bool) {
        if declined || amount <= AMOUNT_OVER {
            return;
        }
        // SQL's `%` keeps the dividend's sign; merchants are never negative here.
        debug_assert!(merchant >= 0);
        let g = &mut self.0[(i64::from(merchant) % GROUPS) as usize];
        g.count += 1;
        g.sum += amount;
        g.max = g.max.max(amount);
    }

    fn finish(self) -> Groups {
        (0..GROUPS).zip(self.0).filter(|(_, g)| g.count > 0).collect()
    }
}

/// `txn(id i64 key, card i64, merchant i32, amount i64, ts timestamp, declined bool)` with the
/// ordered index [`INDEX`] on `(card, ts)`.
fn txn_def() -> TableDef {
    let column = |name: &str, ty| Column { name: name.into(), ty, nullable: false };
    TableDef {
        name: "txn".into(),
        columns: vec![
            column("id", ColumnType::I64),
            column("card", ColumnType::I64),
            column("merchant", ColumnType::I32),
            column("amount", ColumnType::I64),
            column("ts", ColumnType::Timestamp),
            column("declined", ColumnType::Bool),
        ],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(PARTITIONS),
        read_backup: false,
        indexes: vec![IndexDef { name: INDEX.into(), columns: vec!["card".into(), "ts".into()] }],
    }
}

/// A transaction inserting rows `first..first + LOAD_BATCH` of `0..rows` (fewer at the end),
/// row `n` being `values(n)`.
fn load_transaction<const N: usize>(
    s: &mut Session<'_>,
    table: &Arc<Table>,
    (rows, values): (i64, &impl Fn(i64) -> [(&'static str, Value); N]),
    first: i64,
) -> R<Transaction> {
    let mut tx = s.begin();
    for n in first..(first + LOAD_BATCH).min(rows) {
        tx.insert(table, &values(n)).map_err(client_error("insert"))?;
    }
    s.send(&mut tx, Exec::Commit).map_err(client_error("send"))?;
    Ok(tx)
}

/// Inserts rows `0..rows`, row `n` being `values(n)`, [`LOAD_IN_FLIGHT`] transactions at once
/// (one aborted for a passing reason is sent again): its rows, the seconds it took and the
/// transactions sent again.
pub(crate) fn load<const N: usize>(
    s: &mut Session<'_>,
    table: &Arc<Table>,
    rows: i64,
    values: impl Fn(i64) -> [(&'static str, Value); N],
) -> R<Load> {
    let start = Instant::now();
    let mut open: HashMap<u64, (i64, Transaction)> = HashMap::with_capacity(LOAD_IN_FLIGHT);
    let (mut next, mut retries) = (0i64, 0u32);
    let mut last_answer = Instant::now();
    loop {
        while open.len() < LOAD_IN_FLIGHT && next < rows {
            let tx = load_transaction(s, table, (rows, &values), next)?;
            open.insert(tx.id(), (next, tx));
            next += LOAD_BATCH;
        }
        if open.is_empty() {
            return Ok(Load { rows, seconds: start.elapsed().as_secs_f64(), retries });
        }
        if last_answer.elapsed() > Duration::from_secs(60) {
            return Err(format!("loading: {} transactions unanswered for 60 s", open.len()));
        }
        for c in s.poll(Duration::from_millis(10)) {
            let Some((first, mut tx)) = open.remove(&c.tx) else { continue };
            last_answer = Instant::now();
            match tx.absorb(c) {
                Ok(Outcome::Committed) => {}
                Ok(other) => return Err(format!("loading rows from {first}: ended {other:?}")),
                Err(e) if passing(&e) && retries < LOAD_RETRIES => {
                    retries += 1;
                    let tx = load_transaction(s, table, (rows, &values), first)?;
                    open.insert(tx.id(), (first, tx));
                }
                Err(e) => return Err(format!("loading rows from {first}: {e}")),
            }
        }
    }
}

/// How loading one table went.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    pub(crate) rows: i64,
    pub(crate) seconds: f64,
    /// Loading transactions sent again.
    pub(crate) retries: u32,
}

/// Whether a loading transaction that failed with `e` may succeed when sent again (it was
/// aborted: nothing of it committed). Full storage memory is not passing.
fn passing(e: &client::Error) -> bool {
    e.is_temporary() && e.code() != Some(ErrorCode::OutOfMemory)
}

/// One timed run of the aggregate.
#[derive(Clone, Copy, Debug)]
struct AggregateRun {
    /// Table rows over the wall time of the scan.
    rows_per_second: f64,
    /// CPU time the two data-node processes used during the scan (`/proc`, in clock ticks of
    /// 10 ms: a total over several runs says more than one run).
    data_node_cpu: Duration,
    /// Batches the client received.
    batches: u64,
    /// Rows the data nodes examined, as the scan reported them.
    examined: u64,
}

/// How the aggregate is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// By the data nodes: filter, GROUP BY and aggregates in the scan request.
    Pushed,
    /// In this process, from a full scan returning the columns it needs.
    ClientSide,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Pushed => "pushed-down aggregate",
            Way::ClientSide => "client-side aggregate",
        }
    }
}

/// `SELECT merchant % 16 AS g, COUNT(*), SUM(amount), MAX(amount) FROM txn WHERE declined =
/// false AND amount > AMOUNT_OVER GROUP BY g`, computed by the data nodes.
fn pushed(s: &mut Session<'_>, table: &Arc<Table>) -> R<(Groups, ScanStats)> {
    let request = ScanRequest::new(table)
        .filter(col("declined").eq(lit(Value::Bool(false))))
        .filter(col("amount").gt(lit(Value::I64(AMOUNT_OVER))))
        .group_by("g", col("merchant").rem(lit(Value::I64(GROUPS))))
        .aggregate("n", AggFn::Count, None)
        .aggregate("total", AggFn::Sum, Some(col("amount")))
        .aggregate("largest", AggFn::Max, Some(col("amount")));
    let mut scan = s.scan(&request).map_err(client_error("pushed-down aggregate"))?;
    let mut groups = Groups::new();
    for row in scan.by_ref() {
        let row = row.map_err(client_error("pushed-down aggregate"))?;
        let n: Vec<i64> = row.iter().filter_map(Value::as_i64).collect();
        let &[g, count, sum, max] = n.as_slice() else {
            return Err(format!("pushed-down aggregate: a row that is not 4 integers: {row:?}"));
        };
        if groups.insert(g, Group { count, sum, max }).is_some() {
            return Err(format!("pushed-down aggregate: group {g} came twice"));
        }
    }
    Ok((groups, scan.stats()))
}

/// The same aggregate computed here from a full scan of `merchant, amount, declined`.
fn client_side(s: &mut Session<'_>, table: &Arc<Table>, batch_rows: u32) -> R<(Groups, ScanStats)> {
    let request = ScanRequest::new(table)
        .columns(&["merchant", "amount", "declined"])
        .batch_rows(batch_rows)
        .batch_bytes(u32::MAX);
    let mut scan = s.scan(&request).map_err(client_error("full scan"))?;
    let mut groups = GroupsInProgress::new();
    for row in scan.by_ref() {
        let row = row.map_err(client_error("full scan"))?;
        match row.as_slice() {
            [Value::I32(merchant), Value::I64(amount), Value::Bool(declined)] => {
                groups.add(*merchant, *amount, *declined)
            }
            other => return Err(format!("full scan: a row of unexpected types: {other:?}")),
        }
    }
    Ok((groups.finish(), scan.stats()))
}

/// One run of the aggregate `way`, timed, its answer checked against `expected`.
fn aggregate_run(
    args: &ScanArgs,
    s: &mut Session<'_>,
    table: &Arc<Table>,
    data: &Data,
    expected: &Groups,
    pids: &[u32],
    way: Way,
) -> R<AggregateRun> {
    let cpu = || pids.iter().map(|&p| procstat::process_cpu(p)).sum::<Duration>();
    let cpu_before = cpu();
    let start = Instant::now();
    let (groups, stats) = match way {
        Way::Pushed => pushed(s, table)?,
        Way::ClientSide => client_side(s, table, args.batch_rows)?,
    };
    let seconds = start.elapsed().as_secs_f64();
    let data_node_cpu = cpu().saturating_sub(cpu_before);
    if groups != *expected {
        return Err(format!(
            "{}: wrong answer\n got      {groups:?}\n expected {expected:?}",
            way.name()
        ));
    }
    if stats.partitions != PARTITIONS {
        return Err(format!(
            "{}: ran on {} partitions, not {PARTITIONS}",
            way.name(),
            stats.partitions
        ));
    }
    // The data nodes count the rows they examine: a full scan examines every row (a row that
    // did not fit a batch twice), an aggregate every row exactly once (it returns no rows, so
    // none is left for a next batch). rows/s stays table rows over wall time, the same
    // figure for both ways.
    let rows = data.rows as u64;
    match way {
        Way::Pushed if stats.examined != rows => {
            return Err(format!(
                "pushed-down aggregate: the data nodes examined {} rows, not the table's {rows}",
                stats.examined
            ))
        }
        Way::ClientSide if stats.examined < rows => {
            return Err(format!("full scan examined {} rows of {rows}", stats.examined))
        }
        _ => {}
    }
    Ok(AggregateRun {
        rows_per_second: data.rows as f64 / seconds,
        data_node_cpu,
        batches: stats.batches,
        examined: stats.examined,
    })
}

/// Both ways, alternating: one discarded run of each, then `--repeat` measured ones.
fn aggregates(
    args: &ScanArgs,
    s: &mut Session<'_>,
    table: &Arc<Table>,
    data: &Data,
    pids: &[u32],
) -> R<[Vec<AggregateRun>; 2]> {
    let expected = data.expected();
    let mut runs = [Vec::new(), Vec::new()];
    for i in 0..=args.repeat {
        for (slot, way) in [Way::Pushed, Way::ClientSide].into_iter().enumerate() {
            let run = aggregate_run(args, s, table, data, &expected, pids, way)?;
            if i > 0 {
                runs[slot].push(run);
            }
        }
    }
    Ok(runs)
}

/// The cards of the `i`th scan of a range case returning `rows` rows.
fn range_of(data: &Data, rows: u64, i: u64) -> (i64, i64) {
    let walk = |n: i64| (i.wrapping_mul(STRIDE) % n as u64) as i64;
    match rows {
        1 => {
            let card = data.bulk_cards + walk(data.singles());
            (card, card)
        }
        100 => {
            let card = walk(data.bulk_cards);
            (card, card)
        }
        _ => {
            let low = walk(data.bulk_cards - LARGE_RANGE_CARDS + 1);
            (low, low + LARGE_RANGE_CARDS - 1)
        }
    }
}

/// What one transport's run measured.
#[derive(Debug)]
struct Measured {
    /// Loading `txn`, then `txn_by_card`.
    loads: [Load; 2],
    /// Pushed-down runs, then client-side runs.
    aggregate: [Vec<AggregateRun>; 2],
    latency: Vec<LatencyCase>,
}

fn measure(
    args: &ScanArgs,
    t: Transport,
    data: &Data,
    s: &mut Session<'_>,
    pids: &[u32],
) -> R<Measured> {
    let txn = s.create_table(&txn_def()).map_err(client_error("create table txn"))?;
    let txn_load = load(s, &txn, data.rows, |id| data.values(id))?;
    let aggregate = aggregates(args, s, &txn, data, pids)?;
    // Loaded after the aggregates, which then run as they did before this table existed.
    let by_card = s
        .create_table(&by_card::def())
        .map_err(client_error(&format!("create table {}", by_card::TABLE)))?;
    let by_card_load = load(s, &by_card, by_card::ROWS, by_card::values)?;
    let tables = Tables { txn: &txn, by_card: &by_card };
    let latency = latencies(args, t, s, tables, data)?;
    Ok(Measured { loads: [txn_load, by_card_load], aggregate, latency })
}

fn print_header(args: &ScanArgs, program: &Program, cpus: Option<Placement>, data: &Data) {
    println!(
        "scan: table txn(id i64 key, card i64, merchant i32, amount i64, ts timestamp, declined \
         bool), ordered index {INDEX} (card, ts), {PARTITIONS} partitions by id, {} rows; 2 data \
         nodes in one node group (2 replicas), one client thread joined as API node \
         {API_NODE}; data nodes: {}; spin {} us",
        args.rows,
        program.name(),
        args.engine.spin_us
    );
    println!(
        "rows: ids 0..{} in cards 0..{} of {ROWS_PER_CARD} rows each, then {} cards of one row \
         each; merchant 0..10,000, amount 1..=100,000, declined 1 in 20, ts one second apart",
        data.bulk,
        data.bulk_cards,
        data.singles()
    );
    println!(
        "aggregate: SELECT merchant % {GROUPS} AS g, COUNT(*), SUM(amount), MAX(amount) FROM txn \
         WHERE declined = false AND amount > {AMOUNT_OVER} GROUP BY g. pushed-down: one scan \
         request whose filter, grouping and aggregates the data nodes run on each partition \
         (the coordinator merges the partitions' groups); client-side: a full scan returning \
         merchant, amount, declined (batches of up to {} rows per partition), filtered and \
         grouped in this process. {} measured runs each after one discarded run of each, \
         alternating; rows/s = table rows / wall time of one scan; every answer checked \
         against the groups computed from the generator, and the rows the data nodes report \
         examined by the pushed-down one against the table's",
        args.batch_rows, args.repeat
    );
    println!(
        "latency: a one-row committed read by primary key on txn (a transaction hinted to the \
         key's primary, as kv) beside {}range scans of {INDEX} on card returning 1 row (a \
         one-row card), 100 (one card) and 10,000 (100 consecutive cards); a range on card fixes \
         no partition of txn (it is partitioned by id), so each of these scans runs on all \
         {PARTITIONS} partitions",
        if args.ordered { "ordered (merged by (card, ts)) " } else { "" }
    );
    println!(
        "pruned: the same range scans on table {}(card i64, seq i64, amount i64, ts timestamp), \
         primary key (card, seq), partition key card, {PARTITIONS} partitions, ordered index \
         {INDEX} (card, ts), {} rows whatever --rows is: cards 0..{} of {} rows each, then {} \
         cards of {} rows, then {} cards of one row; each scan fixes one card (both ends of its \
         range), so it runs on that card's partition alone: 1 row (a one-row card), 100 (one \
         card) and 10,000 (one card of 10,000 rows, not 100 consecutive cards: a range over \
         several cards fixes no partition and would run on all {PARTITIONS}). every scan's row \
         count, each row's card and the partitions it ran on ({PARTITIONS} unpruned, 1 pruned) \
         checked",
        by_card::TABLE,
        by_card::ROWS,
        by_card::BULK_CARDS,
        by_card::BULK_CARD_ROWS,
        by_card::LARGE_CARDS,
        by_card::LARGE_CARD_ROWS,
        by_card::SINGLE_CARDS
    );
    println!(
        "targets (the issue's): pushed-down aggregate >= {}M rows/s per data-node core and >= \
         {PUSHED_RATIO_TARGET}x the client-side one; 100-row range scan p50 within \
         {RANGE_100_RATIO_TARGET}x the one-row key read's p50, unpruned and pruned",
        ROWS_PER_CORE_TARGET / 1e6
    );
    println!("{}", Placement::describe(cpus));
}

/// The best (highest-rate) of `runs`.
fn best(runs: &[AggregateRun]) -> AggregateRun {
    runs.iter()
        .copied()
        .max_by(|a, b| a.rows_per_second.total_cmp(&b.rows_per_second))
        .unwrap_or_else(|| unreachable!("--repeat is at least 1"))
}

fn print_aggregates(t: Transport, rows: u64, cores: &DataNodeCores, runs: &[Vec<AggregateRun>; 2]) {
    let m = |r: f64| format!("{:.2}", r / 1e6);
    println!(
        "{:<34} {:>40} {:>9} {:>14} {:>14}  target",
        "aggregate (M rows/s)", "each run", "best", "per core", "per CPU-s"
    );
    for (way, runs) in [Way::Pushed, Way::ClientSide].into_iter().zip(runs) {
        let each: Vec<String> = runs.iter().map(|r| m(r.rows_per_second)).collect();
        let b = best(runs);
        let per_core = b.rows_per_second / cores.count as f64;
        let cpu: Duration = runs.iter().map(|r| r.data_node_cpu).sum();
        let cpu = if cpu.is_zero() {
            "-".into()
        } else {
            m((rows * runs.len() as u64) as f64 / cpu.as_secs_f64())
        };
        let target = match way {
            Way::Pushed => format!(
                ">= {}M per core: {}",
                ROWS_PER_CORE_TARGET / 1e6,
                verdict(per_core >= ROWS_PER_CORE_TARGET)
            ),
            Way::ClientSide => String::new(),
        };
        println!(
            "{:<34} {:>40} {:>9} {:>14} {:>14}  {target}",
            format!("{} {}", t.name(), way.name()),
            each.join(" "),
            m(b.rows_per_second),
            m(per_core),
            cpu
        );
    }
    let (pushed, client) = (best(&runs[0]), best(&runs[1]));
    let ratio = pushed.rows_per_second / client.rows_per_second;
    let each: Vec<String> = runs[0]
        .iter()
        .zip(&runs[1])
        .map(|(p, c)| format!("{:.2}x", p.rows_per_second / c.rows_per_second))
        .collect();
    println!(
        "{} pushed-down / client-side: best {ratio:.2}x (run by run: {}); >= \
         {PUSHED_RATIO_TARGET}x: {}",
        t.name(),
        each.join(" "),
        verdict(ratio >= PUSHED_RATIO_TARGET)
    );
    println!(
        "data nodes on {}; per CPU-s: rows of all runs over the CPU time both data-node \
         processes used during them (/proc); the client-side scan came in {} batches",
        cores.how, client.batches
    );
    println!(
        "{} rows examined by the data nodes per run: pushed-down {} (checked equal to the \
         table's {rows} rows), client-side {} (at least the table's rows: a row that did not \
         fit a batch is examined again)",
        t.name(),
        examined_span(&runs[0]),
        examined_span(&runs[1])
    );
}

/// The rows examined over `runs`: one figure, or the least and the most.
fn examined_span(runs: &[AggregateRun]) -> String {
    let least = runs.iter().map(|r| r.examined).min().unwrap_or(0);
    let most = runs.iter().map(|r| r.examined).max().unwrap_or(0);
    if least == most {
        least.to_string()
    } else {
        format!("{least}..={most}")
    }
}

fn print_transport(
    t: Transport,
    args: &ScanArgs,
    program: &Program,
    cores: &DataNodeCores,
    m: &Measured,
) {
    println!();
    let [txn, by_card] = m.loads;
    println!(
        "{}: data nodes 1 and 2 ({} processes), API node {API_NODE} (this process), every link \
         {}; loaded {} rows in {:.1} s ({:.0} rows/s; {LOAD_BATCH} inserts per transaction, \
         {LOAD_IN_FLIGHT} in flight; {} sent again after an overload or a lock timeout); {} \
         loaded {} rows in {:.1} s ({} sent again)",
        t.name(),
        program.peer(),
        t.name(),
        txn.rows,
        txn.seconds,
        txn.rows as f64 / txn.seconds,
        txn.retries,
        by_card::TABLE,
        by_card.rows,
        by_card.seconds,
        by_card.retries
    );
    print_aggregates(t, args.rows, cores, &m.aggregate);
    print_latency(t, &m.latency);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of cards `low..=high`, counted from the generator.
    fn rows_of_cards(data: &Data, (low, high): (i64, i64)) -> u64 {
        (0..data.rows).filter(|&id| (low..=high).contains(&data.card(id))).count() as u64
    }

    #[test]
    fn every_range_holds_exactly_its_rows() {
        for rows in [MIN_ROWS as i64, 12_345, 40_099] {
            let data = Data::new(rows);
            assert_eq!(data.bulk % ROWS_PER_CARD, 0);
            assert!(data.singles() >= SINGLE_CARDS);
            assert_eq!(data.card(rows - 1), data.bulk_cards + data.singles() - 1);
            for expect in [1, 100, 10_000] {
                for i in [0, 1, 2, 77, 1_000_003] {
                    let range = range_of(&data, expect, i);
                    assert_eq!(rows_of_cards(&data, range), expect, "{rows} rows, {range:?}");
                }
            }
        }
    }

    #[test]
    fn the_expected_groups_follow_the_filter() {
        let mut g = GroupsInProgress::new();
        g.add(17, AMOUNT_OVER + 1, false);
        g.add(33, AMOUNT_OVER + 5, false);
        g.add(1, AMOUNT_OVER + 9, true);
        g.add(1, AMOUNT_OVER, false);
        g.add(2, 100_000, false);
        let groups = g.finish();
        let one = Group { count: 2, sum: 2 * AMOUNT_OVER + 6, max: AMOUNT_OVER + 5 };
        let two = Group { count: 1, sum: 100_000, max: 100_000 };
        assert_eq!(groups, Groups::from([(1, one), (2, two)]));
        // Over a whole table: every row is counted once, in some group or filtered out.
        let data = Data::new(20_000);
        let kept: i64 = data.expected().values().map(|g| g.count).sum();
        let filtered = (0..data.rows)
            .filter(|&id| {
                let (_, amount, declined) = Data::facts(id);
                declined || amount <= AMOUNT_OVER
            })
            .count() as i64;
        assert_eq!(kept + filtered, data.rows);
        assert!(filtered > 0 && kept > filtered, "{kept} kept, {filtered} filtered out");
    }
}
