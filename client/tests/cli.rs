//! The `blockwire` command line against a two-data-node cluster of `blockwire-datanode`
//! processes: every subcommand in text and JSON, a CSV and a JSON-lines load, and the errors a
//! user sees (a missing row exits 1; a bad value exits 2 naming the line, column and value).

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use common::{Shape, TestCluster};
use serde_json::Value as Json;

/// What one run of the binary gave.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `blockwire --config <cluster file> --as 101 <args>`.
fn blockwire(cluster: &TestCluster, args: &[&str]) -> Ran {
    let out = Command::new(env!("CARGO_BIN_EXE_blockwire"))
        .arg("--config")
        .arg(&cluster.path)
        .args(["--as", "101", "--timeout-s", "20"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and expects success; returns stdout.
fn ok(cluster: &TestCluster, args: &[&str]) -> String {
    let ran = blockwire(cluster, args);
    assert_eq!(ran.code, Some(0), "blockwire {args:?}: {ran:?}");
    ran.stdout
}

/// Runs and expects exit code `code`; returns stderr.
fn fails(cluster: &TestCluster, code: i32, args: &[&str]) -> String {
    let ran = blockwire(cluster, args);
    assert_eq!(ran.code, Some(code), "blockwire {args:?}: {ran:?}");
    assert!(ran.stderr.contains("blockwire: "), "{ran:?}");
    ran.stderr
}

/// Where each space-separated cell of `line` starts.
fn cell_starts(line: &str) -> Vec<usize> {
    let b = line.as_bytes();
    (0..b.len()).filter(|&i| b[i] != b' ' && (i == 0 || b[i - 1] == b' ')).collect()
}

fn json(text: &str) -> Json {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON value ({e}): {text}"))
}

const DEFINITION: &str = r#"
name = "people"
primary_key = ["id"]
partitions = 4
columns = [
    { name = "id", type = "i64" },
    { name = "name", type = "varchar(32)", nullable = true },
    { name = "score", type = "f64", nullable = true },
    { name = "active", type = "bool" },
    { name = "blob", type = "bytes(8)", nullable = true },
    { name = "seen", type = "timestamp", nullable = true },
]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn every_subcommand_in_text_and_json() {
    let cluster = TestCluster::start("cli", Shape::default());
    let def = write(&cluster.dir, "people.toml", DEFINITION);

    let out = ok(&cluster, &["create-table", &def]);
    assert!(
        out.starts_with("created table \"people\": id ") && out.contains("4 partitions"),
        "{out}"
    );
    schema_commands(&cluster);
    key_commands(&cluster);
    loads(&cluster);

    let out = ok(&cluster, &["drop-table", "people"]);
    assert_eq!(out, "dropped table \"people\"\n");
    let out = ok(&cluster, &["tables"]);
    assert!(!out.contains("people"), "{out}");
    let e = fails(&cluster, 2, &["describe", "people"]);
    assert!(e.contains("\"people\""), "{e}");
}

fn schema_commands(cluster: &TestCluster) {
    let out = ok(cluster, &["tables"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("id  name") && lines[0].ends_with("partitions  columns"), "{out}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&cells[1..], ["people", cells[2], "4", "6"], "{out}");
    assert_eq!(cell_starts(lines[0]), cell_starts(lines[1]), "aligned: {out}");

    let out = ok(cluster, &["tables", "--format", "json"]);
    let t = json(&out);
    assert_eq!(
        (t["name"].as_str(), t["partitions"].as_u64(), t["columns"].as_u64()),
        (Some("people"), Some(4), Some(6))
    );
    assert!(t["id"].is_u64() && t["version"].is_u64(), "{out}");

    let out = ok(cluster, &["describe", "people"]);
    assert!(out.starts_with("table \"people\": id "), "{out}");
    let id_line = out.lines().find(|l| l.starts_with("id ")).unwrap();
    assert_eq!(id_line.split_whitespace().collect::<Vec<_>>(), ["id", "i64", "no", "PK"], "{out}");
    let blob_line = out.lines().find(|l| l.starts_with("blob ")).unwrap();
    assert_eq!(
        blob_line.split_whitespace().collect::<Vec<_>>(),
        ["blob", "bytes(8)", "yes"],
        "{out}"
    );
    for line in
        ["primary key: id\n", "partition key: id\n", "partitions: 4\n", "read_backup: false\n"]
    {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    let t = json(&ok(cluster, &["--format", "json", "describe", "people"]));
    assert_eq!(t["def"]["name"], "people");
    assert_eq!(t["def"]["columns"][1]["type"], "varchar(32)");
    assert_eq!(t["partitions"], 4);
    assert_eq!(t["key_columns"], serde_json::json!([0]));
}

fn key_commands(cluster: &TestCluster) {
    let put = [
        "put",
        "people",
        "id=-7",
        "name=Ann Lee",
        "score=1.5",
        "active=true",
        "blob=0xBEEF",
        "seen=1700000000000001",
    ];
    assert_eq!(ok(cluster, &put), "put 1 row into table \"people\"\n");
    let out = ok(cluster, &["get", "people", "-7"]);
    let want = "id = -7\nname = \"Ann Lee\"\nscore = 1.5\nactive = true\nblob = 0xbeef\n\
                seen = 1700000000000001\n";
    assert_eq!(out, want);
    let row = json(&ok(cluster, &["get", "people", "-7", "--format", "json"]));
    let want = serde_json::json!({
        "id": -7, "name": "Ann Lee", "score": 1.5, "active": true, "blob": "0xbeef",
        "seen": 1700000000000001i64
    });
    assert_eq!(row, want);

    // NULL, and a put replaces the whole row.
    ok(cluster, &["put", "people", "id=-7", "active=false", "name=NULL"]);
    let row = json(&ok(cluster, &["--format", "json", "get", "people", "-7"]));
    assert_eq!(
        row,
        serde_json::json!({
            "id": -7, "name": null, "score": null, "active": false, "blob": null, "seen": null
        })
    );

    let e = fails(cluster, 1, &["get", "people", "12345"]);
    assert!(e.contains("not found") && e.contains("\"people\"") && e.contains("id = 12345"), "{e}");
    let e = fails(cluster, 2, &["put", "people", "id=9", "active=maybe"]);
    assert!(e.contains("table \"people\", column \"active\": \"maybe\" is not a bool"), "{e}");
    let e = fails(cluster, 2, &["put", "people", "id=9", "active=true", "score=abc"]);
    assert!(e.contains("table \"people\", column \"score\": \"abc\" is not an f64"), "{e}");
    let e = fails(cluster, 2, &["put", "people", "id=9", "active=true", "colour=red"]);
    assert!(e.contains("no column \"colour\""), "{e}");
    let e = fails(cluster, 2, &["put", "people", "id=9", "active=NULL"]);
    assert!(e.contains("column \"active\": NULL is not allowed"), "{e}");
    let e =
        fails(cluster, 2, &["put", "people", "id=9", "active=true", "blob=0x123456789abcdef012"]);
    assert!(e.contains("column \"blob\"") && e.contains("over the column's maximum of 8"), "{e}");
    let e = fails(cluster, 2, &["get", "people", "1", "2"]);
    assert!(e.contains("1 key column(s) (id)") && e.contains("got 2"), "{e}");
    let e = fails(cluster, 2, &["get", "people", "x1"]);
    assert!(e.contains("table \"people\", column \"id\": \"x1\" is not an i64"), "{e}");

    assert_eq!(ok(cluster, &["delete", "people", "-7"]), "deleted 1 row from table \"people\"\n");
    fails(cluster, 1, &["get", "people", "-7"]);
}

fn loads(cluster: &TestCluster) {
    let mut csv = String::from("id,name,score,active,blob,seen\n");
    for i in 0..1000 {
        let seen = if i % 3 == 0 { "NULL".to_string() } else { (i * 1_000_000).to_string() };
        writeln!(
            csv,
            "{i},\"name {i}, the {i}th\",{},{},{:04x},{seen}",
            f64::from(i) / 2.0,
            i % 2 == 0,
            i
        )
        .unwrap();
    }
    let file = write(&cluster.dir, "people.csv", &csv);
    let out = ok(cluster, &["load", "people", &file, "--batch", "64", "--in-flight", "4"]);
    assert!(out.starts_with("loaded 1000 rows into table \"people\" in "), "{out}");

    let mut jsonl = String::new();
    for i in 2000..2100 {
        let blob = if i % 2 == 0 { Json::Null } else { Json::from(format!("0x{i:04x}")) };
        let line = serde_json::json!({
            "id": i, "name": format!("j{i}"), "score": i, "active": i % 2 == 1, "blob": blob
        });
        writeln!(jsonl, "{line}").unwrap();
    }
    jsonl.push('\n');
    let file = write(&cluster.dir, "people.jsonl", &jsonl);
    let report = json(&ok(cluster, &["--format", "json", "load", "people", &file]));
    assert_eq!(
        (report["table"].as_str(), report["rows"].as_u64()),
        (Some("people"), Some(100)),
        "{report}"
    );

    let row = json(&ok(cluster, &["get", "people", "502", "--format", "json"]));
    let want = serde_json::json!({
        "id": 502, "name": "name 502, the 502th", "score": 251.0, "active": true,
        "blob": "0x01f6", "seen": 502_000_000
    });
    assert_eq!(row, want);
    let row = json(&ok(cluster, &["get", "people", "999", "--format", "json"]));
    assert_eq!(row["seen"], Json::Null);
    let row = json(&ok(cluster, &["get", "people", "2001", "--format", "json"]));
    let want = serde_json::json!({
        "id": 2001, "name": "j2001", "score": 2001.0, "active": true, "blob": "0x07d1", "seen": null
    });
    assert_eq!(row, want);

    // A bad value stops the load with its line, column and value.
    let file = write(
        &cluster.dir,
        "bad.csv",
        "id,active,score\n3000,true,1\n3001,false,abc\n3002,true,2\n",
    );
    let e = fails(cluster, 2, &["load", "people", &file]);
    assert!(e.contains("line 3") && e.contains("column \"score\": \"abc\" is not an f64"), "{e}");
    let file = write(
        &cluster.dir,
        "bad.jsonl",
        "{\"id\": 3100, \"active\": true}\n{\"id\": 3101, \"active\": 7}\n",
    );
    let e = fails(cluster, 2, &["load", "people", &file]);
    assert!(e.contains("line 2") && e.contains("column \"active\": 7 is not a bool"), "{e}");
    let e = fails(cluster, 2, &["load", "people", "-"]);
    assert!(e.contains("--input"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// `blockwire scan`: every expected output is computed from the rows loaded.

const ORDERS: &str = r#"
name = "orders"
primary_key = ["id"]
partitions = 4
columns = [
    { name = "id", type = "i64" },
    { name = "grp", type = "i32" },
    { name = "amount", type = "i64", nullable = true },
    { name = "item", type = "varchar(16)", nullable = true },
]
indexes = [{ name = "by_grp", columns = ["grp", "amount"] }]
"#;

/// One loaded row of `orders`.
#[derive(Clone, Debug)]
struct Order {
    id: i64,
    grp: i64,
    amount: Option<i64>,
    item: Option<String>,
}

fn orders() -> Vec<Order> {
    (0..60)
        .map(|id| Order {
            id,
            grp: id % 5,
            amount: (id % 13 != 3).then_some(id * 10 - 150),
            item: (id % 11 != 0).then(|| format!("item{}", id % 4)),
        })
        .collect()
}

/// A cell as the text table shows it (a value's display: text quoted, NULL bare).
fn cell_int(v: Option<i64>) -> String {
    v.map_or_else(|| "NULL".into(), |v| v.to_string())
}

fn cell_text(v: &Option<String>) -> String {
    v.as_ref().map_or_else(|| "NULL".into(), |t| format!("{t:?}"))
}

/// Rows of cells as the CLI aligns them: columns two spaces apart, trailing spaces cut.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap())
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// The header line, then the other lines sorted (rows of an unordered scan come in any order).
fn sorted_body(text: &str) -> (String, Vec<String>) {
    let mut lines = text.lines().map(str::to_string);
    let header = lines.next().unwrap_or_default();
    let mut body: Vec<String> = lines.collect();
    body.sort();
    (header, body)
}

/// The loaded rows in `by_grp` order: (grp, amount), NULL amounts first.
fn in_index_order(rows: impl Iterator<Item = Order>) -> Vec<Order> {
    let mut rows: Vec<Order> = rows.collect();
    rows.sort_by_key(|o| (o.grp, o.amount));
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!((a.grp, a.amount) != (b.grp, b.amount), "the test data needs distinct keys");
    }
    rows
}

#[test]
fn scan_filters_ranges_aggregates_and_errors() {
    let cluster = TestCluster::start("cli-scan", Shape::default());
    let def = write(&cluster.dir, "orders.toml", ORDERS);
    ok(&cluster, &["create-table", &def]);
    let rows = orders();
    let mut csv = String::from("id,grp,amount,item\n");
    for o in &rows {
        let item = o.item.clone().unwrap_or_else(|| "NULL".into());
        writeln!(csv, "{},{},{},{item}", o.id, o.grp, cell_int(o.amount)).unwrap();
    }
    let file = write(&cluster.dir, "orders.csv", &csv);
    let out = ok(&cluster, &["load", "orders", &file]);
    assert!(out.starts_with("loaded 60 rows"), "{out}");

    scan_filtered(&cluster, &rows);
    scan_ranges_in_order(&cluster, &rows);
    scan_aggregates(&cluster, &rows);
    scan_limits_and_stats(&cluster, &rows);
    scan_errors(&cluster);
    index_added_later(&cluster, &rows);
    sql_statements(&cluster, &rows);
}

/// `blockwire sql`: `--execute`, a file of statements, standard input, JSON lines, EXPLAIN,
/// and a refused statement (exit 2, naming the part and its position).
fn sql_statements(cluster: &TestCluster, rows: &[Order]) {
    let query = "SELECT grp, COUNT(*) AS n, SUM(amount) AS total FROM orders WHERE grp < 3 GROUP BY grp ORDER BY grp";
    let mut want = vec![vec!["grp".to_string(), "n".into(), "total".into()]];
    for g in 0..3 {
        let of: Vec<&Order> = rows.iter().filter(|o| o.grp == g).collect();
        let total: Option<i64> = of.iter().filter_map(|o| o.amount).reduce(|a, b| a + b);
        want.push(vec![g.to_string(), of.len().to_string(), cell_int(total)]);
    }
    let text = ok(cluster, &["sql", "-e", query]);
    assert_eq!(text, format!("{}(3 rows)\n", table(&want)));

    let out = ok(cluster, &["--format", "json", "sql", "-e", &format!("{query};")]);
    let lines: Vec<Json> = out.lines().map(json).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[1]["grp"], 1);
    assert_eq!(lines[1]["n"], want[2][1].parse::<i64>().unwrap());

    let file = write(&cluster.dir, "queries.sql", "SELECT COUNT(*) AS n FROM orders;\n-- a comment; with a semicolon\nSELECT id FROM orders WHERE id = 7;\n");
    assert_eq!(ok(cluster, &["sql", &file]), "n\n60\n(1 row)\nid\n7\n(1 row)\n");

    let mut child = Command::new(env!("CARGO_BIN_EXE_blockwire"))
        .arg("--config")
        .arg(&cluster.path)
        .args(["--as", "101", "sql", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"SELECT item FROM orders WHERE id = 1").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "item\nitem1\n(1 row)\n");

    let plan = ok(cluster, &["sql", "-e", "EXPLAIN SELECT id FROM orders WHERE id IN (1, 2)"]);
    assert!(plan.contains("by primary key: 2 key(s)"), "{plan}");
    let err = fails(cluster, 2, &["sql", "-e", "SELECT o.id FROM orders o JOIN orders p ON p.grp < o.grp"]);
    assert!(err.contains("no equality with an earlier table"), "{err}");
    let err = fails(cluster, 2, &["sql", "-e", "SELECT idd FROM orders"]);
    assert!(err.contains("unknown column `idd` at line 1, column 8"), "{err}");
}

/// `create-index` on the loaded table; `describe` lists it and a range scan uses it.
fn index_added_later(cluster: &TestCluster, rows: &[Order]) {
    let out = ok(cluster, &["create-index", "orders", "by_amount", "amount", "id"]);
    assert_eq!(out, "created index \"by_amount\" on table \"orders\" (amount, id), built on every data node\n");
    let out = ok(cluster, &["describe", "orders"]);
    assert!(out.contains("index by_amount: amount, id\n"), "{out}");
    let out = ok(cluster, &["--format", "json", "scan", "orders", "--index", "by_amount", "--range", "[100..]", "--order", "--columns", "id"]);
    let got: Vec<i64> = out.lines().map(|l| json(l)["id"].as_i64().unwrap()).collect();
    let mut want: Vec<(i64, i64)> = rows.iter().filter_map(|o| o.amount.filter(|a| *a >= 100).map(|a| (a, o.id))).collect();
    want.sort_unstable();
    assert_eq!(got, want.iter().map(|(_, id)| *id).collect::<Vec<_>>());
    let err = fails(cluster, 2, &["create-index", "orders", "by_amount", "grp"]);
    assert!(err.contains("by_amount") && err.contains("twice"), "{err}");
}

fn scan_filtered(cluster: &TestCluster, rows: &[Order]) {
    let args = [
        "scan",
        "orders",
        "--where",
        "amount BETWEEN -50 AND 300 AND (item LIKE '%1' OR item IS NULL) AND grp <> 2",
        "--columns",
        "id,item",
        "--select",
        "twice=amount * 2",
    ];
    let out = ok(cluster, &args);
    let kept: Vec<&Order> = rows
        .iter()
        .filter(|o| o.amount.is_some_and(|a| (-50..=300).contains(&a)))
        .filter(|o| o.item.as_deref().map_or(true, |i| i.ends_with('1')) && o.grp != 2)
        .collect();
    assert!(kept.len() >= 3 && kept.len() < rows.len() / 2, "a filter that means something");
    let mut want = vec![vec!["id".to_string(), "item".into(), "twice".into()]];
    for o in &kept {
        want.push(vec![o.id.to_string(), cell_text(&o.item), cell_int(o.amount.map(|a| a * 2))]);
    }
    assert_eq!(sorted_body(&out), sorted_body(&table(&want)), "{out}");

    // The same as JSON lines: one object per row, the columns by name.
    let json_args = [&args[..], &["--format", "json"]].concat();
    let out = ok(cluster, &json_args);
    let mut got: Vec<Json> = out.lines().map(json).collect();
    got.sort_by_key(|r| r["id"].as_i64());
    let want: Vec<Json> = kept
        .iter()
        .map(|o| serde_json::json!({"id": o.id, "item": o.item, "twice": o.amount.map(|a| a * 2)}))
        .collect();
    assert_eq!(got, want, "{out}");
    // Every column, in table order, when no column is named.
    let out = ok(cluster, &["--format", "json", "scan", "orders", "--where", "id = 13"]);
    assert_eq!(json(&out), serde_json::json!({"id": 13, "grp": 3, "amount": -20, "item": "item1"}));
}

fn scan_ranges_in_order(cluster: &TestCluster, rows: &[Order]) {
    // grp 1 and 2 (the high end excluded), in index order over every partition.
    let out = ok(
        cluster,
        &[
            "scan",
            "orders",
            "--index",
            "by_grp",
            "--range",
            "[1..3)",
            "--order",
            "--columns",
            "grp,amount,id",
        ],
    );
    let ordered = in_index_order(rows.iter().filter(|o| (1..3).contains(&o.grp)).cloned());
    let mut want = vec![vec!["grp".to_string(), "amount".into(), "id".into()]];
    for o in &ordered {
        want.push(vec![o.grp.to_string(), cell_int(o.amount), o.id.to_string()]);
    }
    assert_eq!(out, table(&want));

    // Two columns of the index on the low end, a union of two ranges, and equality on a
    // prefix, as JSON lines in index order.
    let out = ok(
        cluster,
        &[
            "--format",
            "json",
            "scan",
            "orders",
            "--index",
            "by_grp",
            "--order",
            "--range",
            "(3, 0..3]",
            "--range",
            "=0",
            "--columns",
            "id",
        ],
    );
    let got: Vec<i64> = out.lines().map(|l| json(l)["id"].as_i64().unwrap()).collect();
    let want: Vec<i64> = in_index_order(
        rows.iter()
            .filter(|o| o.grp == 0 || (o.grp == 3 && o.amount.is_some_and(|a| a > 0)))
            .cloned(),
    )
    .iter()
    .map(|o| o.id)
    .collect();
    assert!(want.len() >= 10, "{want:?}");
    assert_eq!(got, want, "{out}");
}

fn scan_aggregates(cluster: &TestCluster, rows: &[Order]) {
    let out = ok(
        cluster,
        &[
            "scan",
            "orders",
            "--group-by",
            "grp",
            "--agg",
            "count(*)",
            "--agg",
            "sum(amount)",
            "--agg",
            "COUNT(item)",
            "--order",
        ],
    );
    let mut want = vec![vec![
        "grp".to_string(),
        "count(*)".into(),
        "sum(amount)".into(),
        "COUNT(item)".into(),
    ]];
    for g in 0..5 {
        let group: Vec<&Order> = rows.iter().filter(|o| o.grp == g).collect();
        let sum: i64 = group.iter().filter_map(|o| o.amount).sum();
        let items = group.iter().filter(|o| o.item.is_some()).count();
        want.push(vec![g.to_string(), group.len().to_string(), sum.to_string(), items.to_string()]);
    }
    assert_eq!(out, table(&want));

    // A filtered aggregate over an expression, as JSON.
    let out = ok(
        cluster,
        &[
            "scan",
            "orders",
            "--format",
            "json",
            "--where",
            "id < 30",
            "--group-by",
            "grp % 2",
            "--agg",
            "max(amount)",
            "--order",
        ],
    );
    let got: Vec<Json> = out.lines().map(json).collect();
    let max_of = |parity: i64| {
        rows.iter().filter(|o| o.id < 30 && o.grp % 2 == parity).filter_map(|o| o.amount).max()
    };
    let want = vec![
        serde_json::json!({"grp % 2": 0, "max(amount)": max_of(0)}),
        serde_json::json!({"grp % 2": 1, "max(amount)": max_of(1)}),
    ];
    assert_eq!(got, want, "{out}");
}

fn scan_limits_and_stats(cluster: &TestCluster, rows: &[Order]) {
    let out = ok(
        cluster,
        &["scan", "orders", "--index", "by_grp", "--order", "--limit", "4", "--columns", "id"],
    );
    let first: Vec<String> =
        in_index_order(rows.iter().cloned()).iter().take(4).map(|o| o.id.to_string()).collect();
    assert_eq!(out, format!("id\n{}\n", first.join("\n")));

    // An unordered limit: that many distinct rows of the table.
    let out =
        ok(cluster, &["scan", "orders", "--format", "json", "--limit", "7", "--batch-rows", "2"]);
    let ids: std::collections::HashSet<i64> =
        out.lines().map(|l| json(l)["id"].as_i64().unwrap()).collect();
    assert_eq!((out.lines().count(), ids.len()), (7, 7), "{out}");
    assert!(ids.iter().all(|id| (0..60).contains(id)), "{out}");

    // --stats on stderr, after the rows on stdout.
    let ran =
        blockwire(cluster, &["scan", "orders", "--where", "grp = 4", "--columns", "id", "--stats"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.stdout.lines().count(), 1 + rows.iter().filter(|o| o.grp == 4).count());
    let stats = ran.stderr.lines().find(|l| l.starts_with("scanned ")).unwrap_or_default();
    assert!(stats.starts_with("scanned 4 partitions: 60 rows examined, "), "{ran:?}");
    assert!(stats.ends_with(", 12 rows returned"), "{ran:?}");
    let ran =
        blockwire(cluster, &["--format", "json", "scan", "orders", "--stats", "--limit", "2"]);
    let stats = json(ran.stderr.lines().last().unwrap_or_default());
    assert_eq!(
        (stats["partitions"].as_u64(), stats["rows"].as_u64()),
        (Some(4), Some(2)),
        "{ran:?}"
    );
    assert!(stats["batches"].as_u64().is_some_and(|b| b >= 1), "{ran:?}");
}

fn scan_errors(cluster: &TestCluster) {
    let e = fails(cluster, 2, &["scan", "orders", "--where", "colour = 'red'"]);
    assert!(e.contains("unknown column \"colour\" in table \"orders\""), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--where", "amount >> 2 = 1"]);
    assert!(
        e.contains("--where \"amount >> 2 = 1\": unsupported operator `>>` in `amount >> 2` at line 1, column 1"),
        "{e}"
    );
    let e = fails(cluster, 2, &["scan", "orders", "--where", "lower(item) = 'a'"]);
    assert!(e.contains("unsupported function call `lower(item)` at line 1, column 1"), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--where", "amount > "]);
    assert!(e.contains("--where \"amount > \": cannot parse the expression"), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--index", "by_grp", "--range", "[1..3"]);
    assert!(e.contains("--range \"[1..3\": a range ends with ] or )"), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--index", "by_grp", "--range", "[1..x]"]);
    assert!(e.contains("--range \"[1..x]\": high end: \"x\": `x` is not a literal value"), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--range", "=1"]);
    assert!(e.contains("--range needs --index NAME"), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--index", "by_grp", "--range", "=1,2,3"]);
    assert!(e.contains("index \"by_grp\" has 2 columns, a bound gives 3"), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--index", "by_id"]);
    assert!(e.contains("table \"orders\" has no index \"by_id\""), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--agg", "median(amount)"]);
    assert!(
        e.contains(
            "--agg \"median(amount)\": `median(amount)` at line 1, column 1 is not an aggregate"
        ),
        "{e}"
    );
    let e = fails(cluster, 2, &["scan", "orders", "--group-by", "grp"]);
    assert!(e.contains("--group-by needs at least one --agg"), "{e}");
    let e = fails(cluster, 2, &["scan", "orders", "--select", "a b=1"]);
    assert!(e.contains("--select \"a b=1\": not NAME=EXPR"), "{e}");
    let e = fails(cluster, 2, &["scan", "nothing"]);
    assert!(e.contains("\"nothing\""), "{e}");
}
