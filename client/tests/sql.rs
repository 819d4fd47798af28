//! SQL through a cluster of `blockwire-datanode` processes, checked against SQLite on the same
//! rows: the fraud-feature queries (a per-card aggregate over the last hour on an ordered index,
//! and a CTE of per-merchant spend joined to the merchant table and grouped by category), a
//! generated corpus of queries over random data (filters, expressions, CASE, GREATEST / LEAST,
//! EXTRACT, key reads, index ranges, GROUP BY, HAVING, ORDER BY, LIMIT, INNER and LEFT joins by
//! primary key and by ordered index, CTEs), EXPLAIN, and every refused construct with its
//! message.
//!
//! Sizes come from `BLOCKWIRE_SQL_ROWS` (rows, default 2000) and `BLOCKWIRE_SQL_QUERIES`
//! (generated queries, default 150).

mod common;

use client::{Column, ColumnType, Exec, IndexDef, Session, TableDef, Value};
use common::bank::Rng;
use common::sqlite::{sqlite_rows, to_sql_value};
use common::{Shape, TestCluster};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column { name: name.into(), ty, nullable }
}

fn table(name: &str, columns: Vec<Column>, key: &[&str], partition_key: Option<&[&str]>, indexes: &[(&str, &[&str])]) -> TableDef {
    TableDef {
        name: name.into(),
        columns,
        primary_key: key.iter().map(|k| k.to_string()).collect(),
        partition_key: partition_key.map(|p| p.iter().map(|k| k.to_string()).collect()),
        partitions: Some(4),
        read_backup: false,
        indexes: indexes
            .iter()
            .map(|(n, cols)| IndexDef { name: n.to_string(), columns: cols.iter().map(|c| c.to_string()).collect() })
            .collect(),
    }
}

/// Inserts `rows` into the cluster's `t` and SQLite's table of the same name.
fn insert(s: &mut Session<'_>, db: &rusqlite::Connection, name: &str, columns: &[&str], rows: &[Vec<Value>]) {
    let t = s.table(name).unwrap();
    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let sql = format!("INSERT INTO {name} ({}) VALUES ({})", columns.join(", "), marks.join(", "));
    for chunk in rows.chunks(200) {
        let mut tx = s.begin();
        for row in chunk {
            let values: Vec<(&str, Value)> = columns.iter().copied().zip(row.iter().cloned()).collect();
            tx.insert(&t, &values).unwrap();
            db.execute(&sql, rusqlite::params_from_iter(row.iter().map(to_sql_value))).unwrap();
        }
        s.execute(&mut tx, Exec::Commit).unwrap();
    }
}

/// A value as compared: integers and bools as i64, other floats to 9 significant digits.
fn norm(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        // SQLite types per value (LEAST(1.5, 2) can be an integer there): integral floats
        // compare as integers.
        Value::F64(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", *f as i64),
        Value::F64(f) => format!("{:.9e}", f),
        Value::Text(t) => format!("{t:?}"),
        Value::Bool(b) => i64::from(*b).to_string(),
        v => v.as_i64().map_or_else(|| v.to_string(), |i| i.to_string()),
    }
}

fn lines(rows: &[Vec<Value>]) -> Vec<String> {
    rows.iter().map(|r| r.iter().map(norm).collect::<Vec<_>>().join("|")).collect()
}

/// Asserts equal rows: in order when `ordered`, else as multisets.
fn assert_same(got: &[Vec<Value>], want: &[Vec<Value>], ordered: bool, context: &str) {
    let (mut g, mut w) = (lines(got), lines(want));
    if !ordered {
        g.sort();
        w.sort();
    }
    if g != w {
        let only_got: Vec<&String> = g.iter().filter(|r| !w.contains(r)).take(8).collect();
        let only_want: Vec<&String> = w.iter().filter(|r| !g.contains(r)).take(8).collect();
        panic!(
            "{context}: {} rows against {} expected (ordered {ordered}); only got {only_got:?}; only expected {only_want:?}; got {:?}",
            g.len(),
            w.len(),
            g.iter().take(8).collect::<Vec<_>>()
        );
    }
}

fn sql(s: &mut Session<'_>, text: &str) -> Vec<Vec<Value>> {
    s.sql(text).unwrap_or_else(|e| panic!("{text}: {e}")).rows
}

fn explain(s: &mut Session<'_>, text: &str) -> String {
    s.explain(text).unwrap_or_else(|e| panic!("EXPLAIN {text}: {e}"))
}

/// 2026-12-07 10:00:00 UTC in microseconds.
const NOON_ISH: i64 = 1_796_637_600_000_000;
const HOUR: i64 = 3_600_000_000;

#[test]
fn the_fraud_feature_queries_match_sqlite_and_explain_their_plans() {
    let cluster = TestCluster::start("sql-fraud", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let db = rusqlite::Connection::open_in_memory().unwrap();
    let tx_def = table(
        "tx",
        vec![
            col("card", ColumnType::I64, false),
            col("id", ColumnType::I64, false),
            col("merchant", ColumnType::I32, false),
            col("amount", ColumnType::I64, false),
            col("time", ColumnType::Timestamp, false),
            col("declined", ColumnType::Bool, false),
        ],
        &["card", "id"],
        Some(&["card"]),
        &[("by_card_time", &["card", "time"])],
    );
    let merchant_def = table(
        "merchant",
        vec![
            col("id", ColumnType::I32, false),
            col("category", ColumnType::Varchar { max: 32 }, false),
            col("risk", ColumnType::F64, true),
        ],
        &["id"],
        None,
        &[],
    );
    s.create_table(&tx_def).unwrap();
    s.create_table(&merchant_def).unwrap();
    db.execute_batch(
        "CREATE TABLE tx (card INTEGER, id INTEGER, merchant INTEGER, amount INTEGER, time INTEGER, declined INTEGER, PRIMARY KEY (card, id));
         CREATE TABLE merchant (id INTEGER PRIMARY KEY, category TEXT, risk REAL);",
    )
    .unwrap();
    let categories = ["grocery", "travel", "fuel", "electronics", "dining"];
    let merchants: Vec<Vec<Value>> = (0..40)
        .map(|m| vec![Value::I32(m), Value::Text(categories[m as usize % 5].into()), Value::F64(f64::from(m % 7) / 8.0)])
        .collect();
    insert(&mut s, &db, "merchant", &["id", "category", "risk"], &merchants);
    let mut rng = Rng(0x0f7a_0d5e_ed00_0001);
    let rows = env_count("BLOCKWIRE_SQL_ROWS", 2000);
    let txs: Vec<Vec<Value>> = (0..rows as i64)
        .map(|id| {
            vec![
                Value::I64(rng.range(0, 49)),
                Value::I64(id),
                Value::I32(rng.range(0, 41) as i32), // 40 and 41 have no merchant row
                Value::I64(rng.range(100, 50_000)),
                Value::Timestamp(NOON_ISH - rng.range(0, 3 * HOUR)),
                Value::Bool(rng.below(10) == 0),
            ]
        })
        .collect();
    insert(&mut s, &db, "tx", &["card", "id", "merchant", "amount", "time", "declined"], &txs);

    let per_card = |card: i64, since: &str| {
        format!(
            "SELECT COUNT(*) AS n, SUM(amount) AS total, MAX(amount) AS biggest, AVG(amount) AS mean, \
             SUM(CASE WHEN declined THEN 1 ELSE 0 END) AS declines \
             FROM tx WHERE card = {card} AND time >= {since}"
        )
    };
    let cut = NOON_ISH - HOUR;
    for card in [0, 7, 23, 49, 77] {
        let ours = per_card(card, "TIMESTAMP '2026-12-07 10:00:00' - INTERVAL 1 HOUR");
        let want = sqlite_rows(&db, &per_card(card, &cut.to_string()));
        assert_same(&sql(&mut s, &ours), &want, true, &ours);
    }
    let plan = explain(&mut s, &per_card(7, "TIMESTAMP '2026-12-07 10:00:00' - INTERVAL 1 HOUR"));
    assert!(plan.contains("by ordered index by_card_time"), "{plan}");
    assert!(plan.contains("pruned to partition"), "{plan}");
    assert!(plan.contains("aggregate (on the data nodes"), "{plan}");
    assert!(plan.contains("pushed program"), "{plan}");

    let by_category = |card: i64, since: &str| {
        format!(
            "WITH spend AS (SELECT merchant, SUM(amount) AS total, COUNT(*) AS n FROM tx \
                            WHERE card = {card} AND time >= {since} GROUP BY merchant) \
             SELECT m.category, SUM(s.total) AS total, SUM(s.n) AS n, MAX(m.risk) AS risk \
             FROM spend s JOIN merchant m ON m.id = s.merchant GROUP BY m.category ORDER BY total DESC, m.category"
        )
    };
    for card in [3, 7, 31] {
        let ours = by_category(card, "DATE_SUB(TIMESTAMP '2026-12-07 10:00:00', INTERVAL 60 MINUTE)");
        let want = sqlite_rows(&db, &by_category(card, &cut.to_string()));
        assert!(!want.is_empty());
        assert_same(&sql(&mut s, &ours), &want, true, &ours);
    }
    let plan = explain(&mut s, &by_category(3, "NOW() - INTERVAL 1 HOUR"));
    assert!(plan.contains("CTE spend"), "{plan}");
    assert!(plan.contains("lookup by primary key"), "{plan}");
    assert!(plan.contains("aggregate (in the client)"), "{plan}");

    // A row inserted just before the query is in its result (NOW() is the statement's time).
    let mut tx = s.begin();
    let t = s.table("tx").unwrap();
    let now = client::expr::clock_micros();
    tx.insert(&t, &[
        ("card", Value::I64(1000)),
        ("id", Value::I64(1)),
        ("merchant", Value::I32(1)),
        ("amount", Value::I64(4321)),
        ("time", Value::Timestamp(now)),
        ("declined", Value::Bool(true)),
    ])
    .unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    let fresh = sql(&mut s, &per_card(1000, "NOW() - INTERVAL 1 HOUR"));
    assert_eq!(
        fresh,
        vec![vec![Value::I64(1), Value::I64(4321), Value::I64(4321), Value::F64(4321.0), Value::I64(1)]]
    );

    // EXPLAIN through sql(): rows of text.
    let rows = sql(&mut s, &format!("EXPLAIN {}", per_card(7, "0")));
    assert!(rows.iter().any(|r| matches!(&r[0], Value::Text(t) if t.contains("by_card_time"))));

    refusals(&mut s);
}

/// Every refused construct, with the part its message names.
fn refusals(s: &mut Session<'_>) {
    let cases: &[(&str, &str)] = &[
        ("SELECT DISTINCT card FROM tx", "DISTINCT"),
        ("SELECT card FROM tx UNION SELECT id FROM merchant", "UNION"),
        ("SELECT card FROM tx WHERE merchant IN (SELECT id FROM merchant)", "subquery"),
        ("SELECT * FROM tx, merchant", "comma join"),
        ("SELECT * FROM tx t RIGHT JOIN merchant m ON m.id = t.merchant", "only INNER and LEFT joins"),
        ("SELECT * FROM merchant m JOIN tx t ON t.amount = m.id", "cannot run as a lookup join"),
        ("SELECT * FROM tx t JOIN merchant m ON m.risk > 0.5", "no equality with an earlier table"),
        ("SELECT * FROM tx t LEFT JOIN merchant m ON m.id = t.merchant AND m.risk > t.amount", "LEFT JOIN"),
        ("SELECT lower(category) FROM merchant", "unsupported function call `lower(category)` at line 1, column 8"),
        ("SELECT nope FROM merchant", "unknown column `nope` at line 1, column 8"),
        ("SELECT id FROM tx t JOIN merchant m ON m.id = t.merchant", "ambiguous"),
        ("SELECT category, risk, COUNT(*) FROM merchant GROUP BY category", "`risk` at line 1, column 18 uses `merchant.risk`"),
        ("SELECT id FROM merchant HAVING id > 1", "HAVING at line 1, column 32 needs GROUP BY"),
        ("WITH RECURSIVE r AS (SELECT id FROM merchant) SELECT * FROM r", "WITH RECURSIVE"),
        ("INSERT INTO merchant VALUES (1, 'x', 0.5)", "SELECT and EXPLAIN SELECT"),
        ("SELECT COUNT(*) OVER () FROM merchant", "OVER"),
        ("SELECT id FROM merchant WHERE COUNT(*) > 1", "not allowed in WHERE"),
        ("SELECT id FROM nowhere", "nowhere"),
        ("SELECT id FROM merchant ORDER BY 3", "column number 3"),
        ("SELECT id FROM merchant LIMIT -1", "LIMIT"),
        ("SELECT EXTRACT(WEEK FROM time) FROM tx", "unsupported EXTRACT field WEEK"),
        ("SELECT * FROM tx FORCE INDEX (no_such) WHERE card = 1", "has no index `no_such`"),
        ("SELECT id FROM merchant WHERE category = 1", "needs operands of one type"),
        ("SELECT id FROM", "cannot parse the statement"),
        ("SELECT id FROM merchant; SELECT 1 FROM merchant", "2 statements"),
        ("SELECT id FROM (SELECT id FROM merchant) x", "FROM takes tables and CTEs"),
        ("SELECT * FROM tx t JOIN merchant m ON m.id = t.declined", "`m.id = t.declined` compares i32 with bool"),
    ];
    for (text, part) in cases {
        match s.sql(text) {
            Ok(r) => panic!("{text}: ran, {} rows", r.rows.len()),
            Err(client::Error::Invalid { message, .. }) | Err(client::Error::Schema { message, .. }) => {
                assert!(message.contains(part), "{text}: {message:?} does not name {part:?}")
            }
            Err(other) => panic!("{text}: {other:?}"),
        }
    }
}

/// The corpus's tables: `facts` (random rows with NULLs), `dim` (keyed by the facts' group,
/// some groups missing), `lines` (several rows per group, reached by an ordered index).
fn corpus_tables(s: &mut Session<'_>, db: &rusqlite::Connection, rows: usize, rng: &mut Rng) {
    let facts = table(
        "facts",
        vec![
            col("id", ColumnType::I64, false),
            col("grp", ColumnType::I32, false),
            col("amount", ColumnType::I64, true),
            col("price", ColumnType::F64, true),
            col("name", ColumnType::Varchar { max: 12 }, true),
            col("ts", ColumnType::Timestamp, true),
        ],
        &["id"],
        None,
        &[("by_grp", &["grp", "amount"]), ("by_ts", &["ts"])],
    );
    let dim = table(
        "dim",
        vec![
            col("id", ColumnType::I32, false),
            col("label", ColumnType::Varchar { max: 12 }, false),
            col("weight", ColumnType::I64, true),
        ],
        &["id"],
        None,
        &[],
    );
    let line = table(
        "lines",
        vec![col("dim_id", ColumnType::I32, false), col("seq", ColumnType::I32, false), col("qty", ColumnType::I64, true)],
        &["dim_id", "seq"],
        Some(&["dim_id"]),
        &[("by_dim", &["dim_id"])],
    );
    for d in [&facts, &dim, &line] {
        s.create_table(d).unwrap();
    }
    db.execute_batch(
        "PRAGMA case_sensitive_like = ON;
         CREATE TABLE facts (id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, amount INTEGER, price REAL, name TEXT, ts INTEGER);
         CREATE TABLE dim (id INTEGER PRIMARY KEY, label TEXT, weight INTEGER);
         CREATE TABLE lines (dim_id INTEGER, seq INTEGER, qty INTEGER, PRIMARY KEY (dim_id, seq));",
    )
    .unwrap();
    const NAMES: [&str; 6] = ["alpha", "beta", "gamma", "al_x", "b%", "Alpha"];
    let null_or = |rng: &mut Rng, v: Value| if rng.below(8) == 0 { Value::Null } else { v };
    let facts_rows: Vec<Vec<Value>> = (0..rows as i64)
        .map(|id| {
            let amount = Value::I64(rng.range(-500, 500));
            let price = Value::F64(rng.range(0, 10_000) as f64 / 16.0);
            let name = Value::Text(NAMES[rng.below(6) as usize].into());
            let ts = Value::Timestamp(NOON_ISH - rng.range(0, 400 * 24) * HOUR - rng.range(0, 3_599_999_999));
            vec![
                Value::I64(id),
                Value::I32(rng.range(0, 19) as i32),
                null_or(rng, amount),
                null_or(rng, price),
                null_or(rng, name),
                null_or(rng, ts),
            ]
        })
        .collect();
    insert(s, db, "facts", &["id", "grp", "amount", "price", "name", "ts"], &facts_rows);
    let dims: Vec<Vec<Value>> = (0..15)
        .map(|i| {
            let weight = Value::I64(rng.range(1, 9));
            vec![Value::I32(i), Value::Text(format!("d{}", i % 6)), null_or(rng, weight)]
        })
        .collect();
    insert(s, db, "dim", &["id", "label", "weight"], &dims);
    let lines_rows: Vec<Vec<Value>> = (0..20)
        .flat_map(|d| (0..(d % 4)).map(move |q| (d, q)))
        .map(|(d, q)| vec![Value::I32(d), Value::I32(q), Value::I64(i64::from(d * 10 + q))])
        .collect();
    insert(s, db, "lines", &["dim_id", "seq", "qty"], &lines_rows);
}

/// A random WHERE term over `facts` (aliased `p`, "" for none): ours and SQLite's.
fn term(rng: &mut Rng, p: &str, depth: u32) -> (String, String) {
    if depth > 0 && rng.below(3) == 0 {
        let (a, sa) = term(rng, p, depth - 1);
        let (z, sz) = term(rng, p, depth - 1);
        return match rng.below(3) {
            0 => (format!("({a} AND {z})"), format!("({sa} AND {sz})")),
            1 => (format!("({a} OR {z})"), format!("({sa} OR {sz})")),
            _ => (format!("(NOT {a})"), format!("(NOT {sa})")),
        };
    }
    let same = |t: String| (t.clone(), t);
    let op = ["=", "<>", "<", "<=", ">", ">="][rng.below(6) as usize];
    match rng.below(12) {
        0 => same(format!("{p}amount {op} {}", rng.range(-300, 300))),
        1 => same(format!("{p}price {op} {}", rng.range(0, 600))),
        2 => same(format!("{p}amount IS NULL")),
        3 => same(format!("{p}name IS NOT NULL")),
        4 => {
            let pat = ["al%", "%a", "_eta", "b\\%", "%", "A%"][rng.below(6) as usize];
            (format!("{p}name LIKE '{pat}'"), format!("{p}name LIKE '{pat}' ESCAPE '\\'"))
        }
        5 => {
            let list: Vec<String> = (0..1 + rng.below(4)).map(|_| rng.range(0, 19).to_string()).collect();
            same(format!("{p}grp IN ({})", list.join(", ")))
        }
        6 => same(format!("{p}grp = {}", rng.range(0, 19))),
        7 => {
            let (a, b) = (rng.range(-400, 0), rng.range(0, 400));
            same(format!("{p}amount BETWEEN {a} AND {b}"))
        }
        8 => {
            let day = rng.range(1, 28);
            let month = rng.range(1, 12);
            let micros = days_from_civil(2026, month, day) * 24 * HOUR;
            (
                format!("{p}ts >= TIMESTAMP '2026-{month:02}-{day:02} 00:00:00'"),
                format!("{p}ts >= {micros}"),
            )
        }
        9 => {
            let list: Vec<String> = (0..1 + rng.below(3)).map(|_| rng.range(0, rows_hint()).to_string()).collect();
            same(format!("{p}id IN ({})", list.join(", ")))
        }
        10 => same(format!("({p}amount + {p}grp) % {} = 0", rng.range(2, 5))),
        _ => same(format!("{p}price * 2 {op} {}", rng.range(0, 2000))),
    }
}

fn rows_hint() -> i64 {
    env_count("BLOCKWIRE_SQL_ROWS", 2000) as i64
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    engine::program::calendar::days_from_civil(y, m, d)
}

/// A random row expression over `facts` (alias prefix `p`): ours and SQLite's.
fn expression(rng: &mut Rng, p: &str) -> (String, String) {
    let choice = rng.below(9);
    expression_of(rng, p, choice)
}

/// A random numeric expression (for AVG).
fn numeric(rng: &mut Rng, p: &str) -> (String, String) {
    let choice = rng.below(7);
    expression_of(rng, p, choice)
}

fn expression_of(rng: &mut Rng, p: &str, choice: u64) -> (String, String) {
    let same = |t: String| (t.clone(), t);
    match choice {
        0 => same(format!("{p}amount + {p}grp")),
        1 => same(format!("{p}amount * 2 - {p}grp")),
        2 => same(format!("CASE WHEN {p}amount > {} THEN {p}amount WHEN {p}grp < 5 THEN -1 ELSE 0 END", rng.range(-100, 100))),
        3 => (format!("GREATEST({p}amount, {p}grp)"), format!("max({p}amount, {p}grp)")),
        4 => (format!("LEAST({p}price, {p}grp)"), format!("min({p}price, {p}grp)")),
        5 => {
            let (f, s) = [("HOUR", "%H"), ("DAY", "%d"), ("MONTH", "%m"), ("YEAR", "%Y"), ("MINUTE", "%M")][rng.below(5) as usize];
            (
                format!("EXTRACT({f} FROM {p}ts)"),
                format!("CAST(strftime('{s}', {p}ts / 1000000, 'unixepoch') AS INTEGER)"),
            )
        }
        6 => same(format!("{p}price / 4")),
        7 => same(format!("{p}amount IS NULL")),
        _ => same(format!("CASE {p}grp WHEN 1 THEN 'one' WHEN 2 THEN 'two' ELSE {p}name END")),
    }
}

/// One random query: ours, SQLite's, and whether its order is defined.
fn query(rng: &mut Rng) -> (String, String, bool) {
    let (w, sw) = term(rng, "f.", 2);
    let (e1, se1) = expression(rng, "f.");
    let (e2, se2) = expression(rng, "f.");
    let hint = ["", " USE INDEX (by_grp)", " IGNORE INDEX (by_grp)", " FORCE INDEX (by_ts)"][rng.below(8).min(3) as usize];
    let k = rng.range(0, 40);
    match rng.below(8) {
        0 => (
            format!("SELECT f.id, {e1}, {e2} FROM facts f{hint} WHERE {w} ORDER BY f.id LIMIT {k}"),
            format!("SELECT f.id, {se1}, {se2} FROM facts f WHERE {sw} ORDER BY f.id LIMIT {k}"),
            true,
        ),
        1 => (
            format!("SELECT f.id, {e1} AS x FROM facts f{hint} WHERE {w}"),
            format!("SELECT f.id, {se1} FROM facts f WHERE {sw}"),
            false,
        ),
        2 => {
            let n = rng.range(0, 30);
            let (e1, se1) = numeric(rng, "f.");
            (
                format!(
                    "SELECT f.grp, COUNT(*), SUM(f.amount), MIN(f.price), MAX(f.name), AVG({e1}) AS a \
                     FROM facts f{hint} WHERE {w} GROUP BY f.grp HAVING COUNT(*) > {n} ORDER BY a DESC, f.grp"
                ),
                format!(
                    "SELECT f.grp, COUNT(*), SUM(f.amount), MIN(f.price), MAX(f.name), AVG({se1}) AS a \
                     FROM facts f WHERE {sw} GROUP BY f.grp HAVING COUNT(*) > {n} ORDER BY a DESC, f.grp"
                ),
                true,
            )
        }
        3 => (
            format!("SELECT d.label, COUNT(*), SUM(f.amount) + 1, MAX(d.weight) FROM facts f JOIN dim d ON d.id = f.grp WHERE {w} GROUP BY d.label"),
            format!("SELECT d.label, COUNT(*), SUM(f.amount) + 1, MAX(d.weight) FROM facts f JOIN dim d ON d.id = f.grp WHERE {sw} GROUP BY d.label"),
            false,
        ),
        4 => (
            format!("SELECT f.id, d.label, d.weight, {e1} FROM facts f LEFT JOIN dim d ON d.id = f.grp AND d.weight > 3 WHERE {w} ORDER BY f.id LIMIT {k}"),
            format!("SELECT f.id, d.label, d.weight, {se1} FROM facts f LEFT JOIN dim d ON d.id = f.grp AND d.weight > 3 WHERE {sw} ORDER BY f.id LIMIT {k}"),
            true,
        ),
        5 => (
            format!("SELECT f.id, l.seq, l.qty FROM facts f JOIN lines l ON l.dim_id = f.grp WHERE {w} AND l.qty <> 41"),
            format!("SELECT f.id, l.seq, l.qty FROM facts f JOIN lines l ON l.dim_id = f.grp WHERE {sw} AND l.qty <> 41"),
            false,
        ),
        6 => (
            format!(
                "WITH g AS (SELECT f.grp, SUM(f.amount) AS total, COUNT(*) AS n FROM facts f WHERE {w} GROUP BY f.grp), \
                      h AS (SELECT grp, total FROM g WHERE n > 1) \
                 SELECT d.label, h.total, d.weight FROM h JOIN dim d ON d.id = h.grp"
            ),
            format!(
                "WITH g AS (SELECT f.grp, SUM(f.amount) AS total, COUNT(*) AS n FROM facts f WHERE {sw} GROUP BY f.grp), \
                      h AS (SELECT grp, total FROM g WHERE n > 1) \
                 SELECT d.label, h.total, d.weight FROM h JOIN dim d ON d.id = h.grp"
            ),
            false,
        ),
        _ => (
            format!(
                "WITH g AS (SELECT f.grp AS grp, COUNT(*) AS n FROM facts f WHERE {w} GROUP BY f.grp) \
                 SELECT d.id, d.label, g.n FROM dim d LEFT JOIN g ON g.grp = d.id"
            ),
            format!(
                "WITH g AS (SELECT f.grp AS grp, COUNT(*) AS n FROM facts f WHERE {sw} GROUP BY f.grp) \
                 SELECT d.id, d.label, g.n FROM dim d LEFT JOIN g ON g.grp = d.id"
            ),
            false,
        ),
    }
}

#[test]
fn a_generated_corpus_of_queries_matches_sqlite() {
    let cluster = TestCluster::start("sql-corpus", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let db = rusqlite::Connection::open_in_memory().unwrap();
    let seed = common::bank::seed();
    let mut rng = Rng(seed);
    corpus_tables(&mut s, &db, env_count("BLOCKWIRE_SQL_ROWS", 2000), &mut rng);

    // Fixed forms first: key reads, index ranges, ordered index scans, a whole-table aggregate.
    let fixed: &[(&str, &str, bool)] = &[
        ("SELECT * FROM facts WHERE id IN (3, 1, 2000000, 7)", "SELECT * FROM facts WHERE id IN (3, 1, 2000000, 7)", false),
        ("SELECT id, amount FROM facts WHERE grp = 4 AND amount >= -20 AND amount < 300", "SELECT id, amount FROM facts WHERE grp = 4 AND amount >= -20 AND amount < 300", false),
        ("SELECT grp, amount FROM facts ORDER BY grp, amount LIMIT 25", "SELECT grp, amount FROM facts ORDER BY grp, amount LIMIT 25", true),
        ("SELECT COUNT(*), SUM(amount), MIN(ts), MAX(name) FROM facts", "SELECT COUNT(*), SUM(amount), MIN(ts), MAX(name) FROM facts", true),
        ("SELECT COUNT(*), SUM(amount) FROM facts WHERE amount > 100000", "SELECT COUNT(*), SUM(amount) FROM facts WHERE amount > 100000", true),
        ("SELECT grp, COUNT(*) AS n FROM facts GROUP BY 1 ORDER BY n DESC, grp LIMIT 5 OFFSET 2", "SELECT grp, COUNT(*) AS n FROM facts GROUP BY 1 ORDER BY n DESC, grp LIMIT 5 OFFSET 2", true),
        // A key named twice in an IN list is read once.
        ("SELECT * FROM facts WHERE id IN (1, 2, 1, 2)", "SELECT * FROM facts WHERE id IN (1, 2, 1, 2)", false),
        ("SELECT id FROM facts WHERE grp IN (NULL)", "SELECT id FROM facts WHERE grp IN (NULL)", false),
        // One joined key column equated to two outer columns: the key comes from one, the
        // other is matched.
        (
            "SELECT f.id, l.qty FROM facts f JOIN dim d ON d.id = f.grp JOIN lines l ON l.dim_id = d.id AND l.dim_id = f.grp AND l.seq = f.grp % 3",
            "SELECT f.id, l.qty FROM facts f JOIN dim d ON d.id = f.grp JOIN lines l ON l.dim_id = d.id AND l.dim_id = f.grp AND l.seq = f.grp % 3",
            false,
        ),
        // A float key that equals an integer key reaches it.
        (
            "WITH g AS (SELECT grp, AVG(grp) AS k FROM facts GROUP BY grp) SELECT g.grp, d.label FROM g JOIN dim d ON d.id = g.k",
            "WITH g AS (SELECT grp, AVG(grp) AS k FROM facts GROUP BY grp) SELECT g.grp, d.label FROM g JOIN dim d ON d.id = g.k",
            false,
        ),
    ];
    for (ours, theirs, ordered) in fixed {
        assert_same(&sql(&mut s, ours), &sqlite_rows(&db, theirs), *ordered, ours);
    }
    // Computed timestamps are timestamps.
    let r = s.sql("SELECT MAX(ts) AS a, MIN(ts + INTERVAL 1 HOUR) AS b, DATE_ADD(TIMESTAMP '2026-01-31 00:00:00', INTERVAL 1 MONTH) AS c, COUNT(*) AS n FROM facts").unwrap();
    assert_eq!(r.types, vec![ColumnType::Timestamp, ColumnType::Timestamp, ColumnType::Timestamp, ColumnType::I64]);
    assert!(matches!(r.rows[0][0], Value::Timestamp(_)));
    assert_eq!(r.rows[0][2], Value::Timestamp(days_from_civil(2026, 2, 28) * 24 * HOUR));
    let plan = explain(&mut s, "SELECT * FROM facts WHERE id IN (3, 1)");
    assert!(plan.contains("by primary key: 2 key(s)"), "{plan}");
    let plan = explain(&mut s, "SELECT id FROM facts WHERE grp = 4 AND amount > 3");
    assert!(plan.contains("by ordered index by_grp (grp, amount), ranges ((4, 3) .. (4)]"), "{plan}");
    let plan = explain(&mut s, "SELECT grp, amount FROM facts ORDER BY grp, amount LIMIT 3");
    assert!(plan.contains("the index order") && plan.contains("each partition stops"), "{plan}");
    let plan = explain(&mut s, "SELECT id FROM facts IGNORE INDEX (by_grp) WHERE grp = 4");
    assert!(plan.contains("full scan of facts"), "{plan}");
    let plan = explain(&mut s, "SELECT f.id FROM facts f JOIN lines l ON l.dim_id = f.grp");
    assert!(plan.contains("lookup by ordered index by_dim"), "{plan}");

    let queries = env_count("BLOCKWIRE_SQL_QUERIES", 150);
    for q in 0..queries {
        let (ours, theirs, ordered) = query(&mut rng);
        let got = sql(&mut s, &ours);
        let want = sqlite_rows(&db, &theirs);
        assert_same(&got, &want, ordered, &format!("query {q} (seed {seed}): {ours}"));
    }
}
