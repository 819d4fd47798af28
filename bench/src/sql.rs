//! `blockwire-bench sql`: the fraud-feature queries through the SQL front end, beside the same
//! queries in SQLite (in this process, in memory, prepared once) on the same rows, in one run
//! per transport.
//!
//! Per transport, on the cluster of [`crate::cluster`] (two data-node processes, one node
//! group of two replicas, this process joined as the API node, and a writer thread joined as
//! a second API node), the run creates
//! `tx(card i64, id i64, merchant i32, amount i64, time timestamp, declined bool)` keyed by
//! `(card, id)` and partitioned by `card` ([`PARTITIONS`] partitions), with the ordered index
//! `by_card_time (card, time)`, and `merchant(id i32 key, category varchar, risk f64)` of
//! `--merchants` rows in [`CATEGORIES`] categories, and loads `--rows` transactions spread over
//! `--cards` cards and the last 24 hours. SQLite gets the same rows and index.
//!
//! Before measuring, both engines answer both queries for a number of cards and the answers
//! must be equal. Then the writer inserts new transactions (time: now) at `--insert-rate` per
//! second for the whole measurement, and each measured operation first inserts (untimed) a
//! marker transaction of the card it queries, with an amount larger than any other of that
//! card, and checks the per-card query's MAX(amount) is that marker: a row inserted before
//! the query starts is always in its result.
//!
//! The queries, per card, over the last hour:
//! - per card: `SELECT COUNT(*), SUM(amount), MAX(amount), AVG(amount),
//!   SUM(CASE WHEN declined THEN 1 ELSE 0 END) FROM tx WHERE card = ? AND time >= NOW() -
//!   INTERVAL 1 HOUR` (one ordered-index range pruned to one partition, aggregated there);
//! - by category: the CTE of the card's spend per merchant, joined to `merchant` by its key
//!   and grouped by category.
//!
//! Latency is each query's whole call (parse, plan, the data nodes' work, the client's stages)
//! for blockwire, and the prepared statement's execution for SQLite; HDR percentiles, each
//! beside SQLite's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Cluster, Column, ColumnType, ConnectOptions, Exec, IndexDef, Session, TableDef, Value};
use hdrhistogram::Histogram;

use crate::cluster::{self, client_error, ClusterSpec, Placement, Program, API_NODE, R, WRITER_NODE};
use crate::report::{self, verdict, LatencyRow};
use crate::scan::mix;
use crate::Transport;

/// Partitions of each table.
const PARTITIONS: u32 = 8;
/// Merchant categories.
const CATEGORIES: [&str; 8] = ["grocery", "travel", "fuel", "electronics", "dining", "pharmacy", "gaming", "transfer"];
/// Cards whose answers are compared with SQLite's before measuring.
const CHECKED_CARDS: i64 = 20;
/// Marker amounts start here (transactions' own amounts are at most 100,000).
const MARKER_AMOUNT: i64 = 1_000_000_000;
/// Ids of the writer's rows start here, the markers' above [`MARKER_IDS`].
const WRITER_IDS: i64 = 1 << 40;
const MARKER_IDS: i64 = 1 << 41;
const HOUR_US: i64 = 3_600_000_000;
/// The targets, over shm.
const PER_CARD_P99_US: f64 = 1_000.0;
const BY_CATEGORY_P99_US: f64 = 2_000.0;

/// Arguments of `blockwire-bench sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// Transports to measure, one after the other (default tcp and shm; rdma only when asked).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub transport: Vec<Transport>,
    /// Transactions loaded into `tx` (and into SQLite).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Cards the transactions belong to.
    #[arg(long, default_value_t = 10_000)]
    pub cards: u64,
    /// Rows of `merchant`.
    #[arg(long, default_value_t = 1_000)]
    pub merchants: u64,
    /// Measured operations of each query, each engine.
    #[arg(long, default_value_t = 2_000)]
    pub ops: u64,
    /// Operations run and discarded first.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// New transactions per second the writer inserts while the queries run (0: none).
    #[arg(long, default_value_t = 1_000)]
    pub insert_rate: u64,
    /// Where the data nodes run and how they wait.
    #[command(flatten)]
    pub engine: cluster::EngineArgs,
}

/// Runs `blockwire-bench sql`.
pub fn run(args: &SqlArgs) -> R<()> {
    let transports = cluster::transports("sql", &args.transport)?;
    if args.rows == 0 || args.cards == 0 || args.merchants == 0 || args.ops == 0 {
        return Err("--rows, --cards, --merchants and --ops must be at least 1".into());
    }
    if args.rows > 1 << 36 || args.cards > 1 << 36 || args.merchants > i32::MAX as u64 {
        return Err("--rows and --cards at most 2^36, --merchants at most 2^31".into());
    }
    let program = Program::find(args.engine.datanode.as_deref())?;
    let cpus = Placement::from_args(args.engine.cpus.as_deref())?;
    println!(
        "sql: tx(card i64, id i64, merchant i32, amount i64, time timestamp, declined bool) keyed \
         (card, id), partitioned by card ({PARTITIONS} partitions), ordered index by_card_time \
         (card, time); merchant(id key, category, risk) of {} rows; {} transactions over {} cards \
         and the last 24 hours; 2 data nodes (2 replicas), the queries from API node {API_NODE}, \
         a writer inserting {} rows/s as API node {WRITER_NODE}; data nodes: {}; {}; SQLite \
         {} in memory in this process, same rows and index, prepared statements",
        args.merchants,
        args.rows,
        args.cards,
        args.insert_rate,
        program.name(),
        Placement::describe(cpus),
        rusqlite::version()
    );
    if let Some(p) = cpus {
        crate::pin(p.driver);
    }
    let started = client::expr::clock_micros();
    let lite = sqlite(args, started)?;
    for t in transports {
        let spec = ClusterSpec {
            command: "sql",
            transport: t,
            spin_us: args.engine.spin_us,
            memory_bytes: cluster::memory_bytes_for(args.rows + args.merchants + 2 * (args.ops + args.warmup) + 1_000_000),
            partitions: PARTITIONS,
            timeout: Duration::from_secs(60),
            program: &program,
            nodes_cpus: cpus.map(|p| p.nodes),
            data_dir: None,
            gcp_interval_ms: cluster::GCP_INTERVAL_MS,
            writer: args.insert_rate > 0,
        };
        let rows = cluster::run_on_cluster_nodes(&spec, |s, nodes| {
            measure(args, t, s, nodes.config(), &lite, started)
        })?;
        report::print_latency(&rows);
        let p99 = |i: usize| rows[i].percentiles_ns[2] as f64 / 1000.0;
        println!(
            "target ({}): per-card p99 {:.0} us (< {PER_CARD_P99_US:.0}: {}), by-category p99 {:.0} us (< {BY_CATEGORY_P99_US:.0}: {}){}",
            t.name(),
            p99(0),
            verdict(p99(0) < PER_CARD_P99_US),
            p99(2),
            verdict(p99(2) < BY_CATEGORY_P99_US),
            if t == Transport::Shm { "" } else { " (the targets are judged over shm)" }
        );
    }
    Ok(())
}


/// Row `id` of `tx`: card, id, merchant, amount, time, declined.
fn tx_row(args: &SqlArgs, started: i64, id: i64) -> [(&'static str, Value); 6] {
    let m = mix(id);
    let rows = args.rows as i64;
    [
        ("card", Value::I64(id % args.cards as i64)),
        ("id", Value::I64(id)),
        ("merchant", Value::I32((m % args.merchants) as i32)),
        ("amount", Value::I64(1 + ((m >> 16) % 100_000) as i64)),
        ("time", Value::Timestamp(started - (24 * HOUR_US / rows.max(1)) * (rows - 1 - id))),
        ("declined", Value::Bool((m >> 48) % 20 == 0)),
    ]
}

fn merchant_row(id: i64) -> [(&'static str, Value); 3] {
    [
        ("id", Value::I32(id as i32)),
        ("category", Value::Text(CATEGORIES[(mix(id) % CATEGORIES.len() as u64) as usize].into())),
        ("risk", Value::F64((mix(id) >> 20) as f64 % 1000.0 / 1000.0)),
    ]
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::F64(f) => S::Real(*f),
        Value::Text(t) => S::Text(t.clone()),
        Value::Bool(b) => S::Integer(i64::from(*b)),
        v => S::Integer(v.as_i64().unwrap_or(0)),
    }
}

/// The SQLite copy: both tables and the index.
fn sqlite(args: &SqlArgs, started: i64) -> R<rusqlite::Connection> {
    let e = |e: rusqlite::Error| format!("sqlite: {e}");
    let db = rusqlite::Connection::open_in_memory().map_err(e)?;
    db.execute_batch(
        "CREATE TABLE tx (card INTEGER, id INTEGER, merchant INTEGER, amount INTEGER, time INTEGER, declined INTEGER, PRIMARY KEY (card, id));
         CREATE INDEX by_card_time ON tx (card, time);
         CREATE TABLE merchant (id INTEGER PRIMARY KEY, category TEXT, risk REAL);
         BEGIN;",
    )
    .map_err(e)?;
    {
        let mut insert = db.prepare("INSERT INTO tx VALUES (?1, ?2, ?3, ?4, ?5, ?6)").map_err(e)?;
        for id in 0..args.rows as i64 {
            let row = tx_row(args, started, id);
            insert.execute(rusqlite::params_from_iter(row.iter().map(|(_, v)| sqlite_value(v)))).map_err(e)?;
        }
        let mut insert = db.prepare("INSERT INTO merchant VALUES (?1, ?2, ?3)").map_err(e)?;
        for id in 0..args.merchants as i64 {
            let row = merchant_row(id);
            insert.execute(rusqlite::params_from_iter(row.iter().map(|(_, v)| sqlite_value(v)))).map_err(e)?;
        }
    }
    db.execute_batch("COMMIT; ANALYZE;").map_err(e)?;
    Ok(db)
}

fn per_card(card: i64) -> String {
    format!(
        "SELECT COUNT(*) AS n, SUM(amount) AS total, MAX(amount) AS biggest, AVG(amount) AS mean, \
         SUM(CASE WHEN declined THEN 1 ELSE 0 END) AS declines \
         FROM tx WHERE card = {card} AND time >= NOW() - INTERVAL 1 HOUR"
    )
}

const PER_CARD_SQLITE: &str = "SELECT COUNT(*), SUM(amount), MAX(amount), AVG(amount), \
     SUM(CASE WHEN declined THEN 1 ELSE 0 END) FROM tx WHERE card = ?1 AND time >= ?2";

fn by_category(card: i64) -> String {
    format!(
        "WITH spend AS (SELECT merchant, SUM(amount) AS total FROM tx \
                        WHERE card = {card} AND time >= NOW() - INTERVAL 1 HOUR GROUP BY merchant) \
         SELECT m.category, SUM(s.total) AS total, COUNT(*) AS merchants \
         FROM spend s JOIN merchant m ON m.id = s.merchant GROUP BY m.category ORDER BY m.category"
    )
}

const BY_CATEGORY_SQLITE: &str = "WITH spend AS (SELECT merchant, SUM(amount) AS total FROM tx \
     WHERE card = ?1 AND time >= ?2 GROUP BY merchant) \
     SELECT m.category, SUM(s.total), COUNT(*) FROM spend s JOIN merchant m ON m.id = s.merchant \
     GROUP BY m.category ORDER BY m.category";

/// SQLite's rows of a prepared query for `card` since `cut`.
fn sqlite_rows(stmt: &mut rusqlite::Statement<'_>, card: i64, cut: i64) -> R<Vec<Vec<Value>>> {
    let n = stmt.column_count();
    let rows = stmt
        .query_map(rusqlite::params![card, cut], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => Value::Null,
                        rusqlite::types::ValueRef::Integer(v) => Value::I64(v),
                        rusqlite::types::ValueRef::Real(v) => Value::F64(v),
                        rusqlite::types::ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        rusqlite::types::ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                    })
                })
                .collect::<rusqlite::Result<Vec<Value>>>()
        })
        .map_err(|e| format!("sqlite: {e}"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| format!("sqlite: {e}"))
}

/// A row as compared: integers as i64, floats to 9 significant digits.
fn norm(rows: &[Vec<Value>]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    Value::F64(f) => format!("{f:.9e}"),
                    Value::Text(t) => t.clone(),
                    Value::Null => "NULL".into(),
                    v => v.as_i64().map_or(v.to_string(), |i| i.to_string()),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

fn load(s: &mut Session<'_>, args: &SqlArgs, started: i64) -> R<()> {
    let tx = table_def(
        "tx",
        vec![
            col("card", ColumnType::I64),
            col("id", ColumnType::I64),
            col("merchant", ColumnType::I32),
            col("amount", ColumnType::I64),
            col("time", ColumnType::Timestamp),
            col("declined", ColumnType::Bool),
        ],
        &["card", "id"],
        Some(vec!["card".into()]),
        vec![IndexDef { name: "by_card_time".into(), columns: vec!["card".into(), "time".into()] }],
    );
    let merchant = table_def(
        "merchant",
        vec![col("id", ColumnType::I32), col("category", ColumnType::Varchar { max: 32 }), col("risk", ColumnType::F64)],
        &["id"],
        None,
        Vec::new(),
    );
    let tx = s.create_table(&tx).map_err(client_error("create table tx"))?;
    let merchant = s.create_table(&merchant).map_err(client_error("create table merchant"))?;
    let loaded = crate::scan::load(s, &merchant, args.merchants as i64, merchant_row)?;
    let rows = crate::scan::load(s, &tx, args.rows as i64, |id| tx_row(args, started, id))?;
    println!(
        "loaded {} + {} rows in {:.1} s ({} transactions sent again)",
        rows.rows,
        loaded.rows,
        rows.seconds + loaded.seconds,
        rows.retries + loaded.retries
    );
    Ok(())
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), ty, nullable: false }
}

fn table_def(name: &str, columns: Vec<Column>, key: &[&str], partition_key: Option<Vec<String>>, indexes: Vec<IndexDef>) -> TableDef {
    TableDef {
        name: name.into(),
        columns,
        primary_key: key.iter().map(|k| k.to_string()).collect(),
        partition_key,
        partitions: Some(PARTITIONS),
        read_backup: false,
        indexes,
    }
}

/// Inserts new transactions as [`WRITER_NODE`] at `rate` per second until `stop`; counts them.
fn writer(config: std::path::PathBuf, args_cards: u64, rate: u64, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) -> R<()> {
    let options = ConnectOptions {
        api_node: Some(u64::from(WRITER_NODE)),
        connect_timeout: Duration::from_secs(30),
        timeout: Duration::from_secs(30),
        ..ConnectOptions::default()
    };
    let mut cluster = Cluster::connect(&config, options).map_err(client_error("the writer joining"))?;
    let mut s = cluster.session().map_err(client_error("the writer's session"))?;
    let table = s.table("tx").map_err(client_error("the writer's table"))?;
    let start = Instant::now();
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.min(Duration::from_millis(50)));
            continue;
        }
        let id = WRITER_IDS + n;
        let mut tx = s.begin();
        tx.insert(&table, &[
            ("card", Value::I64((mix(id) % args_cards) as i64)),
            ("id", Value::I64(id)),
            ("merchant", Value::I32((mix(id) % 1_000) as i32)),
            ("amount", Value::I64(1 + (mix(id) >> 20) as i64 % 100_000)),
            ("time", Value::Timestamp(client::expr::clock_micros())),
            ("declined", Value::Bool(false)),
        ])
        .map_err(client_error("the writer's insert"))?;
        match s.execute(&mut tx, Exec::Commit) {
            Ok(_) => {
                count.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.is_temporary() => {}
            Err(e) => return Err(format!("the writer's commit: {e}")),
        }
        n += 1;
    }
    Ok(())
}

fn measure(
    args: &SqlArgs,
    t: Transport,
    s: &mut Session<'_>,
    config: &std::path::Path,
    lite: &rusqlite::Connection,
    started: i64,
) -> R<Vec<LatencyRow>> {
    load(s, args, started)?;
    let mut card_stmt = lite.prepare_cached(PER_CARD_SQLITE).map_err(|e| format!("sqlite: {e}"))?;
    let mut category_stmt = lite.prepare_cached(BY_CATEGORY_SQLITE).map_err(|e| format!("sqlite: {e}"))?;
    // Both engines agree before the writer starts (the cut: the same NOW(), give or take the
    // time between the two calls, so the cards checked have no row near it).
    let cards = args.cards as i64;
    for i in 0..CHECKED_CARDS.min(cards) {
        let card = (i * 7_919) % cards;
        let cut = client::expr::clock_micros() - HOUR_US;
        let theirs = sqlite_rows(&mut card_stmt, card, cut)?;
        let ours = s.sql(&per_card(card)).map_err(client_error("per-card query"))?.rows;
        let theirs_cat = sqlite_rows(&mut category_stmt, card, cut)?;
        let ours_cat = s.sql(&by_category(card)).map_err(client_error("by-category query"))?.rows;
        if norm(&ours) != norm(&theirs) || norm(&ours_cat) != norm(&theirs_cat) {
            return Err(format!(
                "card {card}: blockwire {:?} / {:?}, SQLite {:?} / {:?}",
                norm(&ours),
                norm(&ours_cat),
                norm(&theirs),
                norm(&theirs_cat)
            ));
        }
    }
    for (what, text) in [("per card", per_card(7)), ("by category", by_category(7))] {
        let plan = s.explain(&text).map_err(client_error("explain"))?;
        println!("{}: EXPLAIN of the {what} query (card 7):\n{plan}", t.name());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicU64::new(0));
    let handle = (args.insert_rate > 0).then(|| {
        let (config, stop, inserted) = (config.to_path_buf(), stop.clone(), inserted.clone());
        let (cards, rate) = (args.cards, args.insert_rate);
        std::thread::spawn(move || writer(config, cards, rate, stop, inserted))
    });
    let measured = measure_queries(args, s, &mut card_stmt, &mut category_stmt);
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = handle {
        h.join().map_err(|_| "the writer thread panicked".to_string())??;
    }
    let [ours_card, theirs_card, ours_cat, theirs_cat] = measured?;
    println!("{}: the writer inserted {} rows while the queries ran", t.name(), inserted.load(Ordering::Relaxed));
    let name = |q: &str, who: &str| format!("{q} ({who}, {})", t.name());
    let theirs_card = LatencyRow::from_histogram(&name("per card", "SQLite"), &theirs_card);
    let theirs_cat = LatencyRow::from_histogram(&name("by category", "SQLite"), &theirs_cat);
    Ok(vec![
        LatencyRow::from_histogram(&name("per card", "blockwire"), &ours_card).against(&theirs_card),
        theirs_card,
        LatencyRow::from_histogram(&name("by category", "blockwire"), &ours_cat).against(&theirs_cat),
        theirs_cat,
    ])
}

/// The measured loop: per operation, a marker insert (untimed), then the four queries timed
/// one after the other.
fn measure_queries(
    args: &SqlArgs,
    s: &mut Session<'_>,
    card_stmt: &mut rusqlite::Statement<'_>,
    category_stmt: &mut rusqlite::Statement<'_>,
) -> R<[Histogram<u64>; 4]> {
    let mut h = [report::histogram(), report::histogram(), report::histogram(), report::histogram()];
    let table = s.table("tx").map_err(client_error("table tx"))?;
    let cards = args.cards as i64;
    for i in 0..args.warmup + args.ops {
        let card = (i as i64 * 7_919) % cards;
        let marker = MARKER_AMOUNT + i as i64;
        let mut tx = s.begin();
        tx.insert(&table, &[
            ("card", Value::I64(card)),
            ("id", Value::I64(MARKER_IDS + i as i64)),
            ("merchant", Value::I32(0)),
            ("amount", Value::I64(marker)),
            ("time", Value::Timestamp(client::expr::clock_micros())),
            ("declined", Value::Bool(false)),
        ])
        .map_err(client_error("marker insert"))?;
        s.execute(&mut tx, Exec::Commit).map_err(client_error("marker commit"))?;
        let keep = i >= args.warmup;
        let time = |h: &mut Histogram<u64>, f: &mut dyn FnMut() -> R<Vec<Vec<Value>>>| -> R<Vec<Vec<Value>>> {
            let t = Instant::now();
            let rows = f()?;
            if keep {
                report::record(h, t.elapsed());
            }
            Ok(rows)
        };
        let [a, b, c, d] = &mut h;
        let rows = time(a, &mut || s.sql(&per_card(card)).map(|r| r.rows).map_err(client_error("per-card query")))?;
        if rows.first().and_then(|r| r.get(2)) != Some(&Value::I64(marker)) {
            return Err(format!("card {card}: the marker {marker} inserted before the query is not its MAX(amount): {rows:?}"));
        }
        let cut = client::expr::clock_micros() - HOUR_US;
        time(b, &mut || sqlite_rows(card_stmt, card, cut))?;
        time(c, &mut || s.sql(&by_category(card)).map(|r| r.rows).map_err(client_error("by-category query")))?;
        time(d, &mut || sqlite_rows(category_stmt, card, cut))?;
    }
    Ok(h)
}
