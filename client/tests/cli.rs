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
