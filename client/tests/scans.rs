//! Scans through a cluster of `blockwire-datanode` processes, checked against SQLite on the
//! same rows: filters, projections, aggregates and GROUP BY pushed down to the data nodes,
//! index range scans, ordered merges, pruning (asserted by the rows the data nodes examined),
//! scans concurrent with writers, a client that stops reading, and limits.
//!
//! Sizes come from `BLOCKWIRE_SCAN_ROWS` (rows, default 3000) and `BLOCKWIRE_SCAN_QUERIES`
//! (random queries, default 80).

mod common;

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

use client::{AggFn, Error, Exec, Expr, IndexDef, Range, RangeEnd, ScanRequest, Session, Value};
use common::bank::Rng;
use common::sqlite::{sqlite_rows, to_sql_value};
use common::{Shape, TestCluster};
use engine::program::{ArithOp, CmpOp};
use engine::schema::{Column, ColumnType, TableDef};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn facts_def() -> TableDef {
    let col = |name: &str, ty, nullable| Column { name: name.into(), ty, nullable };
    TableDef {
        name: "facts".into(),
        columns: vec![
            col("id", ColumnType::I64, false),
            col("grp", ColumnType::I32, false),
            col("amount", ColumnType::I64, true),
            col("price", ColumnType::F64, true),
            col("name", ColumnType::Varchar { max: 12 }, true),
        ],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(4),
        read_backup: false,
        indexes: vec![IndexDef { name: "by_grp".into(), columns: vec!["grp".into(), "amount".into()] }],
    }
}

const NAMES: [&str; 6] = ["alpha", "beta", "gamma", "al_x", "b%", "Alpha"];

fn random_row(rng: &mut Rng, id: i64) -> Vec<Value> {
    let amount = if rng.below(8) == 0 { Value::Null } else { Value::I64(rng.range(-500, 500)) };
    let price = if rng.below(8) == 0 { Value::Null } else { Value::F64(rng.range(0, 10_000) as f64 / 16.0) };
    let name = if rng.below(6) == 0 { Value::Null } else { Value::Text(NAMES[rng.below(6) as usize].into()) };
    vec![Value::I64(id), Value::I32(rng.range(0, 19) as i32), amount, price, name]
}

fn load(s: &mut Session<'_>, db: &rusqlite::Connection, rows: usize, rng: &mut Rng) -> std::sync::Arc<client::Table> {
    let t = s.create_table(&facts_def()).unwrap();
    db.execute_batch(
        "PRAGMA case_sensitive_like = ON;
         CREATE TABLE facts (id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, amount INTEGER, price REAL, name TEXT);",
    )
    .unwrap();
    let names = ["id", "grp", "amount", "price", "name"];
    for chunk in (0..rows as i64).collect::<Vec<_>>().chunks(250) {
        let mut tx = s.begin();
        for id in chunk {
            let row = random_row(rng, *id);
            let values: Vec<(&str, Value)> = names.iter().copied().zip(row.iter().cloned()).collect();
            tx.insert(&t, &values).unwrap();
            db.execute("INSERT INTO facts VALUES (?1, ?2, ?3, ?4, ?5)", rusqlite::params_from_iter(row.iter().map(to_sql_value)))
                .unwrap();
        }
        s.execute(&mut tx, Exec::Commit).unwrap();
    }
    t
}

/// A value as the comparison sees it: integers as i64, floats rounded to 9 significant digits.
fn norm(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::F64(f) => format!("{:.9e}", f),
        Value::Text(t) => format!("{t:?}"),
        v => v.as_i64().map_or_else(|| v.to_string(), |i| i.to_string()),
    }
}

fn as_multiset(rows: &[Vec<Value>]) -> Vec<String> {
    let mut out: Vec<String> = rows.iter().map(|r| r.iter().map(norm).collect::<Vec<_>>().join("|")).collect();
    out.sort();
    out
}

/// Asserts two row lists hold the same rows (in any order), naming at most 10 differences.
fn assert_same(got: &[Vec<Value>], want: &[Vec<Value>], context: &str) {
    let (g, w) = (as_multiset(got), as_multiset(want));
    if g != w {
        let only_got: Vec<&String> = g.iter().filter(|r| !w.contains(r)).take(10).collect();
        let only_want: Vec<&String> = w.iter().filter(|r| !g.contains(r)).take(10).collect();
        panic!("{context}: {} rows against {} expected; only got {only_got:?}; only expected {only_want:?}", g.len(), w.len());
    }
}

fn c(name: &str) -> Expr {
    Expr::Column(name.into())
}

fn l(v: Value) -> Expr {
    Expr::Literal(v)
}

fn b(e: Expr) -> Box<Expr> {
    Box::new(e)
}

/// A random filter and its SQL text.
fn random_filter(rng: &mut Rng, depth: u32) -> (Expr, String) {
    if depth > 0 && rng.below(3) == 0 {
        let (a, sa) = random_filter(rng, depth - 1);
        let (z, sz) = random_filter(rng, depth - 1);
        return match rng.below(3) {
            0 => (Expr::And(b(a), b(z)), format!("({sa} AND {sz})")),
            1 => (Expr::Or(b(a), b(z)), format!("({sa} OR {sz})")),
            _ => (Expr::Not(b(a)), format!("(NOT {sa})")),
        };
    }
    let ops = [(CmpOp::Eq, "="), (CmpOp::Ne, "<>"), (CmpOp::Lt, "<"), (CmpOp::Le, "<="), (CmpOp::Gt, ">"), (CmpOp::Ge, ">=")];
    let (op, sym) = ops[rng.below(6) as usize];
    match rng.below(8) {
        0 => {
            let k = rng.range(-300, 300);
            (Expr::Compare(op, b(c("amount")), b(l(Value::I64(k)))), format!("amount {sym} {k}"))
        }
        1 => {
            let k = rng.range(0, 600);
            (Expr::Compare(op, b(c("price")), b(l(Value::I64(k)))), format!("price {sym} {k}"))
        }
        2 => (Expr::IsNull(b(c("amount"))), "amount IS NULL".into()),
        3 => (Expr::IsNotNull(b(c("name"))), "name IS NOT NULL".into()),
        4 => {
            let p = ["al%", "%a", "_eta", "b\\%", "%", "A%"][rng.below(6) as usize];
            (Expr::Like(b(c("name")), p.into()), format!("name LIKE '{p}' ESCAPE '\\'"))
        }
        5 => {
            let list: Vec<i64> = (0..1 + rng.below(4)).map(|_| rng.range(0, 19)).collect();
            let text = list.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
            (Expr::In(b(c("grp")), list.into_iter().map(Value::I64).collect()), format!("grp IN ({text})"))
        }
        6 => {
            let m = rng.range(2, 5);
            let e = Expr::Compare(
                CmpOp::Eq,
                b(Expr::Arith(ArithOp::Mod, b(Expr::Arith(ArithOp::Add, b(c("amount")), b(c("grp")))), b(l(Value::I64(m))))),
                b(l(Value::I64(0))),
            );
            (e, format!("((amount + grp) % {m}) = 0"))
        }
        _ => {
            let k = rng.range(0, 2000);
            let e = Expr::Compare(op, b(Expr::Arith(ArithOp::Mul, b(c("price")), b(l(Value::I64(2))))), b(l(Value::I64(k))));
            (e, format!("(price * 2) {sym} {k}"))
        }
    }
}

/// One random query: the request, its SQL, and whether order matters.
fn random_query(rng: &mut Rng, t: &std::sync::Arc<client::Table>) -> (ScanRequest, String) {
    let mut req = ScanRequest::new(t).batch_rows(1 + rng.below(300) as u32);
    let mut wheres = Vec::new();
    if rng.below(3) > 0 {
        let (f, sql) = random_filter(rng, 2);
        req = req.filter(f);
        wheres.push(sql);
    }
    if rng.below(3) == 0 {
        let (lo, hi) = (rng.range(0, 12), rng.range(5, 19));
        let (li, hi_inc) = (rng.below(2) == 0, rng.below(2) == 0);
        req = req.index("by_grp").range(Range {
            low: RangeEnd { values: vec![Value::I64(lo)], inclusive: li },
            high: RangeEnd { values: vec![Value::I64(hi)], inclusive: hi_inc },
        });
        wheres.push(format!("grp {} {lo} AND grp {} {hi}", if li { ">=" } else { ">" }, if hi_inc { "<=" } else { "<" }));
    }
    let where_sql = if wheres.is_empty() { String::new() } else { format!(" WHERE {}", wheres.join(" AND ")) };
    match rng.below(3) {
        0 => {
            req = req.columns(&["id", "amount", "name"]).select("calc", Expr::Arith(ArithOp::Sub, b(c("amount")), b(c("grp"))));
            (req, format!("SELECT id, amount, name, amount - grp FROM facts{where_sql}"))
        }
        1 => {
            req = req
                .group_by("grp", c("grp"))
                .aggregate("n", AggFn::Count, None)
                .aggregate("sum", AggFn::Sum, Some(c("amount")))
                .aggregate("min", AggFn::Min, Some(c("price")))
                .aggregate("max", AggFn::Max, Some(c("name")))
                .aggregate("avg", AggFn::Avg, Some(c("amount")));
            let sql = format!(
                "SELECT grp, COUNT(*), SUM(amount), MIN(price), MAX(name), AVG(amount) FROM facts{where_sql} GROUP BY grp"
            );
            (req, sql)
        }
        _ => {
            req = req
                .group_by("name", c("name"))
                .group_by("neg", Expr::Compare(CmpOp::Lt, b(c("amount")), b(l(Value::I64(0)))))
                .aggregate("n", AggFn::Count, Some(c("price")))
                .aggregate("total", AggFn::Sum, Some(c("price")));
            let sql = format!("SELECT name, amount < 0, COUNT(price), SUM(price) FROM facts{where_sql} GROUP BY name, amount < 0");
            (req, sql)
        }
    }
}

fn run(s: &mut Session<'_>, req: &ScanRequest) -> Vec<Vec<Value>> {
    s.scan(req).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Bools from SQLite come back as integers: compare them as such.
fn bools_as_ints(rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|r| r.into_iter().map(|v| if let Value::Bool(b) = v { Value::I64(i64::from(b)) } else { v }).collect())
        .collect()
}

#[test]
fn pushed_down_filters_aggregates_and_ranges_match_sqlite() {
    let rows = env_count("BLOCKWIRE_SCAN_ROWS", 3000);
    let queries = env_count("BLOCKWIRE_SCAN_QUERIES", 80);
    let cluster = TestCluster::start("scan-sqlite", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let db = rusqlite::Connection::open_in_memory().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let t = load(&mut s, &db, rows, &mut rng);

    // Every row, every column.
    let all = run(&mut s, &ScanRequest::new(&t));
    assert_eq!(all.len(), rows);
    assert_same(&all, &sqlite_rows(&db, "SELECT * FROM facts"), "every row");

    for q in 0..queries {
        let (req, sql) = random_query(&mut rng, &t);
        let got = bools_as_ints(run(&mut s, &req));
        let want = sqlite_rows(&db, &sql);
        assert_same(&got, &want, &format!("query {q}: {sql}"));
    }

    // Aggregates without GROUP BY: one row, even over no rows.
    let none = ScanRequest::new(&t)
        .filter(Expr::Compare(CmpOp::Gt, b(c("amount")), b(l(Value::I64(10_000)))))
        .aggregate("n", AggFn::Count, None)
        .aggregate("s", AggFn::Sum, Some(c("amount")));
    assert_eq!(run(&mut s, &none), vec![vec![Value::I64(0), Value::Null]]);
}

#[test]
fn ordered_index_scans_merge_partitions_and_pruning_shows_in_the_rows_examined() {
    let cluster = TestCluster::start("scan-order", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let db = rusqlite::Connection::open_in_memory().unwrap();
    let mut rng = Rng(0x0bad_cafe_0000_0042);
    let t = load(&mut s, &db, 1500, &mut rng);

    // Ordered over every partition: index order (grp, amount with NULL first), then by key.
    let req = ScanRequest::new(&t).index("by_grp").ordered().columns(&["grp", "amount", "id"]).batch_rows(37);
    let mut scan = s.scan(&req).unwrap();
    let got: Vec<Vec<Value>> = scan.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(scan.stats().partitions, 4);
    drop(scan);
    let want = sqlite_rows(&db, "SELECT grp, amount, id FROM facts ORDER BY grp, amount IS NOT NULL, amount");
    let key = |r: &Vec<Value>| (norm(&r[0]), r[1].as_i64());
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(key(g), key(w), "row {i}: {g:?} against {w:?}");
    }

    // A limit stops early, still in order.
    let first: Vec<Vec<Value>> = s.scan(&req.clone().limit(10)).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first.iter().map(key).collect::<Vec<_>>(), want[..10].iter().map(key).collect::<Vec<_>>());

    // Pruning: a table partitioned by `parent`, listed by one parent through an index led by it.
    let col = |name: &str, ty| Column { name: name.into(), ty, nullable: false };
    let dirs = s
        .create_table(&TableDef {
            name: "entries".into(),
            columns: vec![col("parent", ColumnType::I64), col("name", ColumnType::Varchar { max: 32 }), col("inode", ColumnType::I64)],
            primary_key: vec!["parent".into(), "name".into()],
            partition_key: Some(vec!["parent".into()]),
            partitions: Some(8),
            read_backup: false,
            indexes: vec![IndexDef { name: "listing".into(), columns: vec!["parent".into(), "name".into()] }],
        })
        .unwrap();
    let mut tx = s.begin();
    for parent in 0..20i64 {
        for n in 0..25i64 {
            let name = Value::Text(format!("f{n:03}"));
            tx.insert(&dirs, &[("parent", Value::I64(parent)), ("name", name), ("inode", Value::I64(parent * 100 + n))])
                .unwrap();
        }
    }
    s.execute(&mut tx, Exec::Commit).unwrap();
    let listing = ScanRequest::new(&dirs).index("listing").range(Range::eq(vec![Value::I64(7)])).ordered();
    let mut scan = s.scan(&listing).unwrap();
    let names: Vec<Value> = scan.by_ref().map(|r| r.unwrap()[1].clone()).collect();
    let stats = scan.stats();
    drop(scan);
    assert_eq!(names, (0..25).map(|n| Value::Text(format!("f{n:03}"))).collect::<Vec<_>>());
    assert_eq!(stats.partitions, 1, "one parent is one partition");
    assert_eq!(stats.examined, 25, "only the parent's entries are examined: {stats:?}");
    let count = ScanRequest::new(&dirs).index("listing").range(Range::eq(vec![Value::I64(7)])).aggregate("n", AggFn::Count, None);
    let mut scan = s.scan(&count).unwrap();
    assert_eq!(scan.by_ref().collect::<Result<Vec<_>, _>>().unwrap(), vec![vec![Value::I64(25)]]);
    assert_eq!((scan.stats().partitions, scan.stats().examined), (1, 25), "a pruned aggregate");
    drop(scan);
    let everything = ScanRequest::new(&dirs).filter(Expr::Compare(CmpOp::Eq, b(c("parent")), b(l(Value::I64(7)))));
    let mut scan = s.scan(&everything).unwrap();
    assert_eq!(scan.by_ref().count(), 25);
    assert_eq!(scan.stats().partitions, 8, "a filter alone cannot prune");
    assert_eq!(scan.stats().examined, 500);
}

/// Writers commit and roll back while scans run: each scan returns each key at most once and
/// only committed images (every value a scan returns was committed by some transaction).
#[test]
fn scans_concurrent_with_writers_see_each_row_once_and_only_committed_data() {
    let cluster = TestCluster::start("scan-concurrent", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let col = |name: &str, ty| Column { name: name.into(), ty, nullable: false };
    let def = TableDef {
        name: "churn".into(),
        columns: vec![col("id", ColumnType::I64), col("value", ColumnType::I64)],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(4),
        read_backup: false,
        indexes: vec![
            IndexDef { name: "by_id".into(), columns: vec!["id".into()] },
            IndexDef { name: "by_value".into(), columns: vec!["value".into()] },
        ],
    };
    let t = s.create_table(&def).unwrap();
    let mut tx = s.begin();
    for id in 0..600i64 {
        tx.insert(&t, &[("id", Value::I64(id)), ("value", Value::I64(id))]).unwrap();
    }
    s.execute(&mut tx, Exec::Commit).unwrap();

    let path = cluster.path.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_writer = stop.clone();
    // Committed values are k * 1000 + id (any k < 1000, so a row's `by_value` entry jumps
    // anywhere in the index); rolled-back writes use negative values.
    let writer = thread::spawn(move || {
        let mut api = common::connect_to(&path, 1);
        let mut s = api.session().unwrap();
        let t = s.table("churn").unwrap();
        let mut rng = Rng(99);
        let mut commits = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            let mut tx = s.begin();
            for _ in 0..4 {
                let id = rng.range(0, 799);
                match rng.below(4) {
                    0 => drop(tx.delete(&t, &[Value::I64(id)])),
                    _ => drop(tx.write(&t, &[("id", Value::I64(id)), ("value", Value::I64(rng.range(0, 999) * 1000 + id))])),
                }
            }
            if rng.below(3) == 0 {
                let id = rng.range(0, 799);
                let _ = tx.write(&t, &[("id", Value::I64(id)), ("value", Value::I64(-1))]);
                let _ = s.execute(&mut tx, Exec::NoCommit);
                let _ = s.execute(&mut tx, Exec::Rollback);
            } else if s.execute(&mut tx, Exec::Commit).is_ok() {
                commits += 1;
            }
        }
        commits
    });

    let mut scans = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while scans < 15 && Instant::now() < deadline {
        // Writers change `value` all the time: entries of `by_value` move under its scans.
        let req = match scans % 3 {
            0 => ScanRequest::new(&t).batch_rows(7),
            1 => ScanRequest::new(&t).index("by_id").ordered().batch_rows(5),
            _ => ScanRequest::new(&t).index("by_value").batch_rows(3),
        };
        let mut seen = HashSet::new();
        for row in s.scan(&req).unwrap() {
            let row = row.unwrap();
            let (id, value) = (row[0].as_i64().unwrap(), row[1].as_i64().unwrap());
            assert!(seen.insert(id), "scan {scans}: key {id} returned twice");
            assert!(value >= 0 && value % 1000 == id, "scan {scans}: key {id} has {value}, never committed");
        }
        scans += 1;
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = writer.join().unwrap();
    assert!(scans >= 4 && commits > 10, "scans {scans}, commits {commits}: too little overlap to mean anything");
}

/// A client that stops reading: the coordinator closes the scan after
/// `scan_inactive_timeout_ms` and the storage records are freed (with one scan record per
/// storage instance, a new scan runs only if the old one's records went).
#[test]
fn a_client_that_stops_reading_is_timed_out_and_its_records_are_freed() {
    let shape = Shape {
        coordinator: "scan_inactive_timeout_ms = 400",
        storage: "max_scans = 1",
        storage_instances: 1,
        ..Shape::default()
    };
    let cluster = TestCluster::start("scan-stall", shape);
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let col = |name: &str, ty| Column { name: name.into(), ty, nullable: false };
    let t = s
        .create_table(&TableDef {
            name: "many".into(),
            columns: vec![col("id", ColumnType::I64), col("v", ColumnType::I64)],
            primary_key: vec!["id".into()],
            partition_key: None,
            partitions: Some(2),
            read_backup: false,
            indexes: Vec::new(),
        })
        .unwrap();
    let mut tx = s.begin();
    for id in 0..2000i64 {
        tx.insert(&t, &[("id", Value::I64(id)), ("v", Value::I64(id))]).unwrap();
    }
    s.execute(&mut tx, Exec::Commit).unwrap();

    let req = ScanRequest::new(&t).batch_rows(10);
    let mut stalled = s.scan(&req).unwrap();
    assert!(stalled.next().unwrap().is_ok());
    // The stalled scan holds each storage instance's only scan record: another scan is refused.
    thread::sleep(Duration::from_millis(100));
    let mut api2 = cluster.connect(1);
    let mut s2 = api2.session().unwrap();
    let t2 = s2.table("many").unwrap();
    let refused = s2.scan(&ScanRequest::new(&t2)).unwrap().collect::<Result<Vec<_>, _>>();
    match refused {
        Err(Error::Overload { message, .. }) => assert!(message.contains("max_scans"), "{message}"),
        other => panic!("expected the scan records to be full, got {:?}", other.map(|r| r.len())),
    }
    // The stalled client stops reading; the coordinator closes its scan.
    thread::sleep(Duration::from_millis(1200));
    let rest: Vec<_> = stalled.by_ref().collect();
    let error = rest.last().and_then(|r| r.as_ref().err()).map(ToString::to_string);
    assert!(
        error.as_deref().is_some_and(|e| e.contains("scan_inactive_timeout_ms")),
        "the stalled scan should end with the timeout, got {error:?} after {} rows",
        rest.len()
    );
    drop(stalled);
    let rows = s2.scan(&ScanRequest::new(&t2)).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(rows.len(), 2000, "the timed-out scan's records were freed");
}

#[test]
fn group_limits_bad_requests_and_dropped_tables_are_typed_errors() {
    let shape = Shape { coordinator: "scan_max_groups = 50", ..Shape::default() };
    let cluster = TestCluster::start("scan-errors", shape);
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let db = rusqlite::Connection::open_in_memory().unwrap();
    let mut rng = Rng(7);
    let t = load(&mut s, &db, 400, &mut rng);

    let too_many = ScanRequest::new(&t).group_by("id", c("id")).aggregate("n", AggFn::Count, None);
    let e = s.scan(&too_many).unwrap().collect::<Result<Vec<_>, _>>().unwrap_err();
    assert_eq!(e.code(), Some(engine::ErrorCode::TooManyGroups), "{e}");
    let fine = ScanRequest::new(&t).group_by("grp", c("grp")).aggregate("n", AggFn::Count, None);
    assert_eq!(run(&mut s, &fine).len(), 20);

    // Errors the library finds before sending, naming what was wrong.
    let unknown = ScanRequest::new(&t).filter(Expr::IsNull(b(c("nope"))));
    assert!(s.scan(&unknown).unwrap_err().to_string().contains("nope"));
    let like_int = ScanRequest::new(&t).filter(Expr::Like(b(c("amount")), "1%".into()));
    assert!(s.scan(&like_int).unwrap_err().to_string().contains("amount"));
    let no_index = ScanRequest::new(&t).index("missing");
    assert!(s.scan(&no_index).unwrap_err().to_string().contains("missing"));
    let bad_bound = ScanRequest::new(&t).index("by_grp").range(Range::eq(vec![Value::Text("x".into())]));
    assert!(s.scan(&bad_bound).unwrap_err().to_string().contains("grp"));

    // Overflow in a pushed-down expression is an error, not a wrapped number.
    let huge = ScanRequest::new(&t).select("x", Expr::Arith(ArithOp::Mul, b(c("id")), b(l(Value::I64(i64::MAX)))));
    let e = s.scan(&huge).unwrap().collect::<Result<Vec<_>, _>>().unwrap_err();
    assert_eq!(e.code(), Some(engine::ErrorCode::Overflow), "{e}");

    // A scan of a dropped table.
    s.drop_table("facts").unwrap();
    let e = s.scan(&ScanRequest::new(&t)).unwrap().collect::<Result<Vec<_>, _>>().unwrap_err();
    assert!(matches!(e, Error::Schema { .. }), "{e}");
}

/// Lock takeover: a scan takes exclusive locks for its transaction, which updates each row it
/// returned from the value the scan read, while writers move money between the same rows.
/// Were a lock not held from the scan to the commit, a transfer in between would be lost: the
/// total must fall by exactly one per row the committed scanning transactions updated.
#[test]
fn locking_scans_hand_their_rows_to_the_transaction_against_concurrent_writers() {
    let rounds = env_count("BLOCKWIRE_LOCKSCAN_ROUNDS", 8);
    let cluster = TestCluster::start("scan-locks", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let t = s.create_table(&common::accounts_def(4)).unwrap();
    let accounts = 40i64;
    let mut tx = s.begin();
    for id in 0..accounts {
        tx.insert(&t, &[("id", Value::I64(id)), ("balance", Value::I64(1000))]).unwrap();
    }
    s.execute(&mut tx, Exec::Commit).unwrap();

    let path = cluster.path.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_writer = stop.clone();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress_writer = progress.clone();
    let writer = thread::spawn(move || {
        let mut api = common::connect_to(&path, 1);
        let mut s = api.session().unwrap();
        let t = s.table("accounts").unwrap();
        let mut rng = Rng(4242);
        let (mut commits, deadline) = (0u64, Instant::now() + Duration::from_secs(60));
        while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            let (a, b) = (rng.range(0, accounts - 1), rng.range(0, accounts - 1));
            if a == b {
                continue;
            }
            let amount = rng.range(1, 10);
            let mut tx = s.begin();
            let ra = tx.read(&t, &[Value::I64(a)], client::LockMode::Exclusive).unwrap();
            let rb = tx.read(&t, &[Value::I64(b)], client::LockMode::Exclusive).unwrap();
            if s.execute(&mut tx, Exec::NoCommit).is_err() {
                continue;
            }
            let balance = |op| tx.row(op).and_then(|r| r.get("balance")).and_then(Value::as_i64).unwrap();
            let (va, vb) = (balance(ra), balance(rb));
            tx.update(&t, &[Value::I64(a)], &[("balance", Value::I64(va - amount))]).unwrap();
            tx.update(&t, &[Value::I64(b)], &[("balance", Value::I64(vb + amount))]).unwrap();
            if s.execute(&mut tx, Exec::Commit).is_ok() {
                commits += 1;
                progress_writer.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        commits
    });
    let started = Instant::now();
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 5 && started.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(10));
    }

    let (mut decrements, mut committed_rounds, mut failed_rounds) = (0i64, 0, 0);
    for round in 0..rounds {
        let mut tx = s.begin();
        let req = ScanRequest::new(&t).filter(Expr::Compare(CmpOp::Ge, b(c("id")), b(l(Value::I64(round as i64 % 3))))).batch_rows(6);
        let mut updated = 0i64;
        let outcome: Result<(), Error> = (|| {
            let mut scan = s.scan_locked(&tx, &req, client::LockMode::Exclusive)?;
            while let Some(row) = scan.next() {
                let row = row?;
                let (id, balance) = (row[0].clone(), row[1].as_i64().unwrap());
                tx.update(&t, &[id], &[("balance", Value::I64(balance - 1))])?;
                updated += 1;
                if updated % 5 == 0 {
                    scan.session().execute(&mut tx, Exec::NoCommit)?;
                }
            }
            drop(scan);
            s.execute(&mut tx, Exec::Commit)?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                committed_rounds += 1;
                decrements += updated;
            }
            Err(e) => {
                assert!(e.is_temporary() || matches!(e, Error::Aborted(_)), "round {round}: {e}");
                failed_rounds += 1;
                let _ = s.execute(&mut tx, Exec::Rollback);
            }
        }
        thread::sleep(Duration::from_millis(30));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let transfers = writer.join().unwrap();
    let sum = ScanRequest::new(&t).aggregate("total", AggFn::Sum, Some(c("balance")));
    let total = run(&mut s, &sum)[0][0].as_i64().unwrap();
    assert!(committed_rounds > 0 && transfers > 0, "rounds {committed_rounds} (failed {failed_rounds}), transfers {transfers}");
    assert_eq!(total, accounts * 1000 - decrements, "{committed_rounds} scanning transactions, {transfers} transfers");
}

/// An ordered index added to a table with rows, built in small steps while writers update,
/// delete and insert rows: once `create_index` returns, the index holds exactly the table's
/// rows, in order, and range scans through it agree with filtered full scans.
#[test]
fn an_index_added_to_a_table_with_rows_is_built_while_writes_continue() {
    let rows = env_count("BLOCKWIRE_INDEX_ROWS", 12_000) as i64;
    let shape = Shape { storage: "index_build_step_slots = 1", ..Shape::default() };
    let cluster = TestCluster::start("scan-index-build", shape);
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let col = |name: &str, ty, nullable| Column { name: name.into(), ty, nullable };
    let def = TableDef {
        name: "items".into(),
        columns: vec![col("id", ColumnType::I64, false), col("score", ColumnType::I64, true), col("tag", ColumnType::Varchar { max: 8 }, true)],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(4),
        read_backup: false,
        indexes: Vec::new(),
    };
    let t = s.create_table(&def).unwrap();
    let mut rng = Rng(31337);
    for chunk in (0..rows).collect::<Vec<_>>().chunks(500) {
        let mut tx = s.begin();
        for id in chunk {
            let score = if rng.below(10) == 0 { Value::Null } else { Value::I64(rng.range(-1000, 1000)) };
            tx.insert(&t, &[("id", Value::I64(*id)), ("score", score)]).unwrap();
        }
        s.execute(&mut tx, Exec::Commit).unwrap();
    }

    let path = cluster.path.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (stop_writer, progress_writer) = (stop.clone(), progress.clone());
    let writer = thread::spawn(move || {
        let mut api = common::connect_to(&path, 1);
        let mut s = api.session().unwrap();
        let t = s.table("items").unwrap();
        let mut rng = Rng(777);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            let mut tx = s.begin();
            for _ in 0..8 {
                let id = rng.range(0, rows + rows / 10);
                let _ = match rng.below(5) {
                    0 => tx.delete(&t, &[Value::I64(id)]),
                    _ => tx.write(&t, &[("id", Value::I64(id)), ("score", Value::I64(rng.range(-1000, 1000)))]),
                };
            }
            if s.execute(&mut tx, Exec::Commit).is_ok() {
                progress_writer.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let wait_for = |n: u64| {
        let started = Instant::now();
        while progress.load(std::sync::atomic::Ordering::Relaxed) < n && started.elapsed() < Duration::from_secs(30) {
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(5);
    let before = progress.load(std::sync::atomic::Ordering::Relaxed);
    let t = s.create_index("items", &IndexDef { name: "by_score".into(), columns: vec!["score".into()] }).unwrap();
    let during = progress.load(std::sync::atomic::Ordering::Relaxed) - before;
    wait_for(before + during + 20);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(t.def.indexes.len(), 1);
    eprintln!("{during} writer commits during the index build");
    assert!(during > 0, "no write overlapped the build: the test proves nothing");

    // The index holds exactly the table's rows, in score order (NULL first).
    let full = run(&mut s, &ScanRequest::new(&t).columns(&["id", "score"]));
    let through_index = run(&mut s, &ScanRequest::new(&t).index("by_score").ordered().columns(&["id", "score"]).batch_rows(97));
    assert_same(&through_index, &full, &format!("{during} writer commits ran during the build"));
    let scores: Vec<Option<i64>> = through_index.iter().map(|r| r[1].as_i64()).collect();
    assert!(scores.windows(2).all(|w| w[0] <= w[1]), "index order");
    for _ in 0..10 {
        let (lo, hi) = (rng.range(-1000, 900), rng.range(-900, 1000));
        let req = ScanRequest::new(&t).index("by_score").columns(&["id"]).range(Range {
            low: RangeEnd { values: vec![Value::I64(lo)], inclusive: true },
            high: RangeEnd { values: vec![Value::I64(hi)], inclusive: false },
        });
        let mut scan = s.scan(&req).unwrap();
        let got: Vec<Vec<Value>> = scan.by_ref().collect::<Result<_, _>>().unwrap();
        let examined = scan.stats().examined;
        drop(scan);
        let want: Vec<Vec<Value>> = full
            .iter()
            .filter(|r| r[1].as_i64().is_some_and(|v| v >= lo && v < hi))
            .map(|r| vec![r[0].clone()])
            .collect();
        assert_same(&got, &want, &format!("range [{lo}, {hi})"));
        assert_eq!(examined, want.len() as u64, "the range reads only its own entries");
    }

    // Refusals name what was wrong; the table is unchanged by them.
    let e = s.create_index("items", &IndexDef { name: "by_score".into(), columns: vec!["tag".into()] }).unwrap_err();
    assert!(e.to_string().contains("by_score") && e.to_string().contains("twice"), "{e}");
    let e = s.create_index("items", &IndexDef { name: "bad".into(), columns: vec!["nope".into()] }).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = s.create_index("missing", &IndexDef { name: "x".into(), columns: vec!["id".into()] }).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    assert_eq!(s.table("items").unwrap().def.indexes.len(), 1);
}

/// A data node killed (SIGKILL) while scans that need it are open: each scan ends with
/// `NodeFailure` promptly, whether its coordinator ran on the dead node (the client sees the
/// link fail) or on the survivor (the coordinator hears of the failure and ends the scan).
#[test]
fn a_data_node_failure_ends_the_scans_that_need_it_with_node_failure() {
    let mut cluster = TestCluster::start("scan-node-failure", Shape::default());
    let mut api0 = cluster.connect(0);
    let mut s0 = api0.session().unwrap();
    let t = s0.create_table(&common::accounts_def(4)).unwrap();
    let mut tx = s0.begin();
    for id in 0..400i64 {
        tx.insert(&t, &[("id", Value::I64(id)), ("balance", Value::I64(id))]).unwrap();
    }
    s0.execute(&mut tx, Exec::Commit).unwrap();
    let mut api1 = cluster.connect(1);
    let mut s1 = api1.session().unwrap();
    let t1 = s1.table("accounts").unwrap();
    // Sessions pick coordinators round-robin: one scan first puts s1's next on the other node.
    assert_eq!(run(&mut s1, &ScanRequest::new(&t1)).len(), 400);

    let req = ScanRequest::new(&t).batch_rows(5);
    let mut a = s0.scan(&req).unwrap();
    assert!(a.next().unwrap().is_ok());
    let mut b = s1.scan(&ScanRequest::new(&t1).batch_rows(5)).unwrap();
    assert!(b.next().unwrap().is_ok());
    let killed = Instant::now();
    for (id, child) in cluster.nodes.iter_mut() {
        if *id == 2 {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    for (name, scan) in [("first", &mut a), ("second", &mut b)] {
        let end = scan.by_ref().find_map(Result::err);
        assert!(matches!(end, Some(Error::NodeFailure { .. })), "{name} scan ended with {end:?}");
    }
    assert!(killed.elapsed() < Duration::from_secs(15), "the scans waited {:?}", killed.elapsed());
}

/// A coordinator's node killed while its scan is stalled on the other node's storage: that
/// storage frees the orphaned scan record (with one record per instance, a later scan there
/// runs only because it did).
#[test]
fn a_dead_coordinators_scan_records_are_freed_on_the_survivor() {
    let shape = Shape { storage: "max_scans = 1", storage_instances: 1, ..Shape::default() };
    let mut cluster = TestCluster::start("scan-orphan", shape);
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let col = |name: &str| Column { name: name.into(), ty: ColumnType::I64, nullable: false };
    let t = s
        .create_table(&TableDef {
            name: "keyed".into(),
            columns: vec![col("id"), col("v")],
            primary_key: vec!["id".into()],
            partition_key: None,
            partitions: Some(2),
            read_backup: false,
            indexes: vec![IndexDef { name: "by_id".into(), columns: vec!["id".into()] }],
        })
        .unwrap();
    let mut tx = s.begin();
    for id in 0..200i64 {
        tx.insert(&t, &[("id", Value::I64(id)), ("v", Value::I64(id))]).unwrap();
    }
    s.execute(&mut tx, Exec::Commit).unwrap();
    // A key whose partition's primary is data node 1, the survivor.
    let node1 = signals::NodeId::new(1).unwrap();
    let survivor_key = (0..200i64)
        .find(|id| {
            let key = engine::row::encode_key(&t, &[Value::I64(*id)]).unwrap();
            let p = engine::row::partition_of(&t, &key, key.len());
            s.layout().replicas(p).primary.node == node1
        })
        .unwrap();
    let pruned = ScanRequest::new(&t).index("by_id").range(Range::eq(vec![Value::I64(survivor_key)]));

    // A full scan coordinated on data node 2 (the session's first round-robin pick), stalled
    // after its first row: node 1's storage holds its partition scan, its only scan record.
    let mut api2 = cluster.connect(1);
    let mut s2 = api2.session().unwrap();
    let t2 = s2.table("keyed").unwrap();
    let mut stalled = s2.scan(&ScanRequest::new(&t2).batch_rows(1)).unwrap();
    assert!(stalled.next().unwrap().is_ok());
    thread::sleep(Duration::from_millis(100));
    let busy = s.scan(&pruned).unwrap().collect::<Result<Vec<_>, _>>();
    match busy {
        Err(Error::Overload { message, .. }) => assert!(message.contains("max_scans"), "{message}"),
        other => panic!("node 1's scan record should be taken by the stalled scan: {other:?}"),
    }

    for (id, child) in cluster.nodes.iter_mut() {
        if *id == 2 {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    let end = stalled.by_ref().find_map(Result::err);
    assert!(matches!(end, Some(Error::NodeFailure { .. })), "the stalled scan ended with {end:?}");
    drop(stalled);
    // Node 1 learns of the failure and frees the orphaned record: the pruned scan now runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.scan(&pruned).unwrap().collect::<Result<Vec<_>, _>>() {
            Ok(rows) => {
                assert_eq!(rows, vec![vec![Value::I64(survivor_key), Value::I64(survivor_key)]]);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_temporary(), "{e}");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the orphaned scan record was not freed: {e}"),
        }
    }
}
