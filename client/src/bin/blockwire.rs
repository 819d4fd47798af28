//! The `blockwire` command line: joins a cluster as an API node (from its cluster file) and runs
//! one schema request (`create-table`, `drop-table`, `tables`, `describe`), one key operation
//! (`get`, `put`, `delete`), or a bulk `load` of a CSV or JSON-lines file with many transactions
//! in flight. Owns the argument parsing, the text forms of values (parsed by column type; every
//! error names the table, the column and the value), the text and JSON outputs, and the loader.
//!
//! Exit codes: 0 done; 1 `get` found no row; 2 any other error, with `blockwire: <error>` on
//! stderr. Logs go to stderr through `tracing` (filter with `RUST_LOG`, default `warn`).
//!
//! Values on the command line and in CSV: integers (i32, i64, u64, timestamp in microseconds
//! since the Unix epoch), f64, `true`/`false`, varchar as written, bytes as hex (optional `0x`);
//! in `put` and CSV the literal `NULL` is NULL. In JSON lines: numbers, strings (also for any
//! type, as on the command line), booleans, null; bytes as hex strings. JSON output: integers
//! and f64 as numbers (a non-finite f64 as a string), bool, null, text as strings, bytes as
//! `"0x.."` strings, timestamps as integers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use client::{
    Cluster, Column, ColumnType, Completion, ConnectOptions, Exec, LockMode, Outcome, Session,
    Table, TableDef, Transaction, Value,
};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde_json::Value as Json;
use tracing_subscriber::EnvFilter;

/// How often a transaction that failed with a temporary error (deadlock, overload) is retried.
const RETRIES: u32 = 5;

/// Runs schema requests, key operations and bulk loads on a blockwire cluster.
#[derive(Debug, Parser)]
#[command(name = "blockwire", version)]
struct Args {
    /// The cluster file (TOML). Required.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The API node id to join as (default: the first API node, linked to every data node,
    /// that the cluster accepts).
    #[arg(long = "as", global = true, value_name = "N")]
    as_node: Option<u64>,
    /// The output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// How long to wait for the links and for each answer, in seconds (1 to 86400).
    #[arg(long, global = true, default_value_t = 30, value_parser = seconds())]
    timeout_s: u64,
    #[command(subcommand)]
    command: Command,
}

/// 1 to 86400 seconds.
fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=86_400)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Human-readable text.
    Text,
    /// JSON: one object per line.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Input {
    /// Comma-separated values with a header row naming the columns.
    Csv,
    /// One JSON object per line, column name -> value.
    Jsonl,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a table from a TOML definition (name, columns = [{name, type, nullable}],
    /// primary_key, and optionally partition_key, partitions, read_backup).
    CreateTable {
        /// The definition file.
        file: PathBuf,
    },
    /// Drops a table and its rows.
    DropTable {
        /// The table.
        name: String,
    },
    /// Lists the tables: id, name, version, partitions, column count.
    Tables,
    /// Shows a table's columns, keys and options.
    Describe {
        /// The table.
        name: String,
    },
    /// Reads a row (committed read) by its primary key; exit code 1 when there is none.
    Get {
        /// The table.
        table: String,
        /// One value per primary-key column, in key order.
        #[arg(required = true, allow_negative_numbers = true)]
        key: Vec<String>,
    },
    /// Writes a row (inserts it, or replaces the row with its key).
    Put {
        /// The table.
        table: String,
        /// The row's values: every NOT NULL column, key columns included (`NULL` is NULL).
        #[arg(required = true, value_name = "COLUMN=VALUE")]
        values: Vec<String>,
    },
    /// Deletes a row by its primary key.
    Delete {
        /// The table.
        table: String,
        /// One value per primary-key column, in key order.
        #[arg(required = true, allow_negative_numbers = true)]
        key: Vec<String>,
    },
    /// Loads rows from a CSV or JSON-lines file, a batch of rows per transaction.
    Load(LoadArgs),
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The table.
    table: String,
    /// The file (`-`: stdin, which needs --input).
    file: PathBuf,
    /// The file's format (default: from its extension, .csv or .jsonl/.json).
    #[arg(long, value_enum)]
    input: Option<Input>,
    /// Rows per transaction (1 to 100000).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
    /// Transactions in flight at once (1 to 1024).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    in_flight: u32,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] client::Error),
    /// Input that cannot be used: a value, a file, an argument.
    #[error("{0}")]
    Input(String),
    /// `get` found no row.
    #[error("not found: {0}")]
    NotFound(String),
    #[error("writing the output: {0}")]
    Output(io::Error),
}

type Result<T> = std::result::Result<T, CliError>;

fn input(message: impl Into<String>) -> CliError {
    CliError::Input(message.into())
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that goes away early (`| head`) ends the output, not with an error.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blockwire: {e}");
            ExitCode::from(if matches!(e, CliError::NotFound(_)) { 1 } else { 2 })
        }
    }
}

/// Local input read before joining, so a bad file fails without touching the cluster.
enum Prepared {
    Nothing,
    Definition(TableDef),
    Load(LoadInput),
}

fn run(args: &Args) -> Result<()> {
    let config = args
        .config
        .as_deref()
        .ok_or_else(|| input("--config FILE (the cluster file) is required"))?;
    let prepared = match &args.command {
        Command::CreateTable { file } => Prepared::Definition(read_definition(file)?),
        Command::Load(load) => Prepared::Load(LoadInput::open(load)?),
        _ => Prepared::Nothing,
    };
    let timeout = Duration::from_secs(args.timeout_s);
    let options = ConnectOptions {
        api_node: args.as_node,
        connect_timeout: timeout,
        timeout,
        ..ConnectOptions::default()
    };
    let mut cluster = Cluster::connect(config, options)?;
    tracing::debug!(api_node = %cluster.node_id(), "joined the cluster");
    let mut session = cluster.session()?;
    let s = &mut session;
    let json = args.format == Format::Json;
    let text = match (&args.command, prepared) {
        (Command::CreateTable { .. }, Prepared::Definition(def)) => create_table(s, &def, json)?,
        (Command::DropTable { name }, _) => drop_table(s, name, json)?,
        (Command::Tables, _) => list_tables(s, json)?,
        (Command::Describe { name }, _) => describe(s, name, json)?,
        (Command::Get { table, key }, _) => get(s, table, key, json)?,
        (Command::Put { table, values }, _) => put(s, table, values, json)?,
        (Command::Delete { table, key }, _) => delete(s, table, key, json)?,
        (Command::Load(load), Prepared::Load(source)) => load_file(s, load, source, timeout, json)?,
        (command, _) => return Err(input(format!("internal: {command:?} was not prepared"))),
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(CliError::Output)
}

// ---------------------------------------------------------------------------------------------
// Schema commands.

fn read_definition(file: &Path) -> Result<TableDef> {
    let text =
        std::fs::read_to_string(file).map_err(|e| input(format!("{}: {e}", file.display())))?;
    toml::from_str(&text)
        .map_err(|e| input(format!("{}: not a table definition: {e}", file.display())))
}

fn create_table(session: &mut Session<'_>, def: &TableDef, json: bool) -> Result<String> {
    let t = session.create_table(def)?;
    Ok(if json {
        summary_json(&t)
    } else {
        format!(
            "created table {:?}: id {}, version {}, {} partitions\n",
            t.name(),
            t.id,
            t.version,
            t.partitions
        )
    })
}

fn drop_table(session: &mut Session<'_>, name: &str, json: bool) -> Result<String> {
    session.drop_table(name)?;
    Ok(if json {
        json_object(&[("dropped", Json::from(name))])
    } else {
        format!("dropped table {name:?}\n")
    })
}

/// One table as a JSON line: id, name, version, partitions, column count.
fn summary_json(t: &Table) -> String {
    json_object(&[
        ("id", Json::from(t.id)),
        ("name", Json::from(t.name())),
        ("version", Json::from(t.version)),
        ("partitions", Json::from(t.partitions)),
        ("columns", Json::from(t.def.columns.len())),
    ])
}

fn list_tables(session: &mut Session<'_>, json: bool) -> Result<String> {
    let tables = session.tables()?;
    if json {
        return Ok(tables.iter().map(|t| summary_json(t)).collect());
    }
    let mut rows =
        vec![["id", "name", "version", "partitions", "columns"].map(String::from).to_vec()];
    for t in &tables {
        rows.push(vec![
            t.id.to_string(),
            t.name().to_string(),
            t.version.to_string(),
            t.partitions.to_string(),
            t.def.columns.len().to_string(),
        ]);
    }
    Ok(aligned(&rows))
}

fn describe(session: &mut Session<'_>, name: &str, json: bool) -> Result<String> {
    let t = session.table(name)?;
    if json {
        let text = serde_json::to_string(&*t)
            .map_err(|e| input(format!("table {name:?} as JSON: {e}")))?;
        return Ok(text + "\n");
    }
    let mut rows = vec![["column", "type", "nullable", "key"].map(String::from).to_vec()];
    let composite = t.def.primary_key.len() > 1;
    for c in &t.def.columns {
        let key = match t.def.primary_key.iter().position(|k| *k == c.name) {
            Some(i) if composite => format!("PK {}", i + 1),
            Some(_) => "PK".to_string(),
            None => String::new(),
        };
        let nullable = if c.nullable { "yes" } else { "no" };
        rows.push(vec![c.name.clone(), c.ty.to_string(), nullable.to_string(), key]);
    }
    let partition_key =
        &t.def.primary_key[..usize::from(t.partition_key_columns).min(t.def.primary_key.len())];
    let mut out = format!("table {:?}: id {}, version {}\n", t.name(), t.id, t.version);
    out += &aligned(&rows);
    out += &format!("primary key: {}\n", t.def.primary_key.join(", "));
    out += &format!("partition key: {}\n", partition_key.join(", "));
    out += &format!("partitions: {}\n", t.partitions);
    out += &format!("read_backup: {}\n", t.def.read_backup);
    Ok(out)
}

/// Rows of cells as left-aligned columns two spaces apart.
fn aligned(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}", w = *w)).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Key commands.

/// Runs the transaction `define` builds and commits it; a temporary error retries it.
fn commit_one<'c, T>(
    session: &mut Session<'c>,
    mut define: impl FnMut(&mut Session<'c>) -> client::Result<(Transaction, T)>,
) -> Result<(Transaction, T)> {
    let mut attempt = 0;
    loop {
        let (mut tx, extra) = define(session)?;
        match session.execute(&mut tx, Exec::Commit) {
            Ok(_) => return Ok((tx, extra)),
            Err(e) if e.is_temporary() && attempt < RETRIES => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "temporary error: retrying");
                std::thread::sleep(backoff(attempt));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(20 * u64::from(attempt.min(10)))
}

fn get(session: &mut Session<'_>, name: &str, key_text: &[String], json: bool) -> Result<String> {
    let table = session.table(name)?;
    let key = parse_key(&table, key_text)?;
    let (tx, op) = commit_one(session, |s| {
        let mut tx = s.begin_hinted(&table, &key)?;
        let op = tx.read(&table, &key, LockMode::CommittedRead)?;
        Ok((tx, op))
    })?;
    let Some(row) = tx.row(op) else {
        return Err(CliError::NotFound(format!(
            "table {name:?} has no row with key {}",
            describe_key(&table, &key)
        )));
    };
    if json {
        return Ok(row_json(&table, &row.values));
    }
    let lines: Vec<String> = table
        .def
        .columns
        .iter()
        .zip(&row.values)
        .map(|(c, v)| format!("{} = {v}\n", c.name))
        .collect();
    Ok(lines.concat())
}

fn put(
    session: &mut Session<'_>,
    name: &str,
    assignments: &[String],
    json: bool,
) -> Result<String> {
    let table = session.table(name)?;
    let row = parse_assignments(&table, assignments)?;
    let pairs = named(&table, &row);
    commit_one(session, |s| {
        let mut tx = s.begin();
        tx.write(&table, &pairs)?;
        Ok((tx, ()))
    })?;
    Ok(if json {
        json_object(&[("table", Json::from(name)), ("put", Json::from(1))])
    } else {
        format!("put 1 row into table {name:?}\n")
    })
}

fn delete(
    session: &mut Session<'_>,
    name: &str,
    key_text: &[String],
    json: bool,
) -> Result<String> {
    let table = session.table(name)?;
    let key = parse_key(&table, key_text)?;
    commit_one(session, |s| {
        let mut tx = s.begin_hinted(&table, &key)?;
        tx.delete(&table, &key)?;
        Ok((tx, ()))
    })?;
    Ok(if json {
        json_object(&[("table", Json::from(name)), ("deleted", Json::from(1))])
    } else {
        format!("deleted 1 row from table {name:?}\n")
    })
}

fn describe_key(table: &Table, key: &[Value]) -> String {
    let parts: Vec<String> =
        table.def.primary_key.iter().zip(key).map(|(k, v)| format!("{k} = {v}")).collect();
    parts.join(", ")
}

/// The column of `index`, or an error naming the table (a table from the dictionary has it).
fn column_at(table: &Table, index: usize) -> Result<&Column> {
    table
        .column(index)
        .ok_or_else(|| input(format!("table {:?} has no column number {index}", table.name())))
}

/// Key values from text, one per key column in key order.
fn parse_key(table: &Table, texts: &[String]) -> Result<Vec<Value>> {
    if texts.len() != table.key_columns.len() {
        return Err(input(format!(
            "table {:?} has {} key column(s) ({}): give one value for each, got {}",
            table.name(),
            table.key_columns.len(),
            table.def.primary_key.join(", "),
            texts.len()
        )));
    }
    table
        .key_columns
        .iter()
        .zip(texts)
        .map(|(i, text)| parse_text(table, column_at(table, usize::from(*i))?, text))
        .collect()
}

/// `COLUMN=VALUE` arguments as a row (column index, value).
fn parse_assignments(table: &Table, items: &[String]) -> Result<Vec<(usize, Value)>> {
    let mut row: Vec<(usize, Value)> = Vec::with_capacity(items.len());
    for item in items {
        let (name, text) = item.split_once('=').ok_or_else(|| {
            input(format!("table {:?}: {item:?} is not COLUMN=VALUE", table.name()))
        })?;
        let index = column_index(table, name)?;
        if row.iter().any(|(i, _)| *i == index) {
            return Err(input(format!("table {:?}, column {name:?}: given twice", table.name())));
        }
        row.push((index, parse_cell(table, column_at(table, index)?, text)?));
    }
    check_complete(table, &row)?;
    Ok(row)
}

fn column_index(table: &Table, name: &str) -> Result<usize> {
    table.column_index(name).ok_or_else(|| {
        let names: Vec<&str> = table.def.columns.iter().map(|c| c.name.as_str()).collect();
        input(format!(
            "table {:?} has no column {name:?} (its columns: {})",
            table.name(),
            names.join(", ")
        ))
    })
}

/// Every NOT NULL column has a value (a write replaces the whole row).
fn check_complete(table: &Table, row: &[(usize, Value)]) -> Result<()> {
    let missing: Vec<&str> = table
        .def
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| !c.nullable && !row.iter().any(|(j, _)| j == i))
        .map(|(_, c)| c.name.as_str())
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(input(format!(
            "table {:?}, column {one:?}: needs a value (it is NOT NULL)",
            table.name()
        ))),
        many => Err(input(format!(
            "table {:?}: columns {} need values (they are NOT NULL)",
            table.name(),
            quoted(many)
        ))),
    }
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// A row as the client's (column name, value) pairs.
fn named<'t>(table: &'t Table, row: &[(usize, Value)]) -> Vec<(&'t str, Value)> {
    row.iter().filter_map(|(i, v)| table.column(*i).map(|c| (c.name.as_str(), v.clone()))).collect()
}

// ---------------------------------------------------------------------------------------------
// Values: text and JSON in, text and JSON out.

/// A value as it is shown in an error: quoted, and cut when long.
fn shown(text: &str) -> String {
    format!("{:?}{}", cut(text), if cut(text).len() < text.len() { "..." } else { "" })
}

/// The first 60 characters of `text`.
fn cut(text: &str) -> &str {
    text.char_indices().nth(60).map_or(text, |(at, _)| &text[..at])
}

fn bad_value(table: &Table, column: &Column, value: &str, what: &str) -> CliError {
    input(format!("table {:?}, column {:?}: {value} {what}", table.name(), column.name))
}

/// What a column's values look like, for "... is not <this>".
fn a_value_of(ty: ColumnType) -> String {
    match ty {
        ColumnType::I32 => "an i32".into(),
        ColumnType::I64 => "an i64".into(),
        ColumnType::U64 => "a u64".into(),
        ColumnType::F64 => "an f64".into(),
        ColumnType::Bool => "a bool (true or false)".into(),
        ColumnType::Timestamp => "a timestamp (integer microseconds since the Unix epoch)".into(),
        ColumnType::Bytes { max } => {
            format!("bytes({max}) (hex digits in pairs, optionally after 0x)")
        }
        ColumnType::Varchar { max } => format!("varchar({max}) (text)"),
    }
}

/// A value from its text form, by the column's type (`NULL` is not special here: see
/// [`parse_cell`]).
fn parse_text(table: &Table, column: &Column, text: &str) -> Result<Value> {
    let not =
        || bad_value(table, column, &shown(text), &format!("is not {}", a_value_of(column.ty)));
    let t = text.trim();
    let value = match column.ty {
        ColumnType::I32 => Value::I32(t.parse().map_err(|_| not())?),
        ColumnType::I64 => Value::I64(t.parse().map_err(|_| not())?),
        ColumnType::U64 => Value::U64(t.parse().map_err(|_| not())?),
        ColumnType::Timestamp => Value::Timestamp(t.parse().map_err(|_| not())?),
        ColumnType::F64 => Value::F64(t.parse().map_err(|_| not())?),
        ColumnType::Bool => match t {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(not()),
        },
        ColumnType::Bytes { max } => {
            let bytes = parse_hex(text).ok_or_else(not)?;
            check_length(table, column, text, bytes.len(), max)?;
            Value::Bytes(bytes)
        }
        ColumnType::Varchar { max } => {
            check_length(table, column, text, text.len(), max)?;
            Value::Text(text.to_owned())
        }
    };
    Ok(value)
}

fn check_length(table: &Table, column: &Column, text: &str, len: usize, max: u32) -> Result<()> {
    if len > max as usize {
        let what = format!("is {len} bytes, over the column's maximum of {max}");
        return Err(bad_value(table, column, &shown(text), &what));
    }
    Ok(())
}

/// Hex digits in pairs, optionally after `0x`.
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
    if digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| digits.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

/// NULL for `column`, or an error when it is NOT NULL.
fn null_for(table: &Table, column: &Column) -> Result<Value> {
    if column.nullable {
        Ok(Value::Null)
    } else {
        Err(bad_value(table, column, "NULL", "is not allowed (the column is NOT NULL)"))
    }
}

/// A value from `put` or a CSV field: the literal `NULL` is NULL.
fn parse_cell(table: &Table, column: &Column, text: &str) -> Result<Value> {
    if text == "NULL" {
        null_for(table, column)
    } else {
        parse_text(table, column, text)
    }
}

/// A value from a JSON line.
fn parse_json(table: &Table, column: &Column, value: &Json) -> Result<Value> {
    let not = || {
        // JSON as written (a string is quoted already), cut when long.
        let text = value.to_string();
        let more = if cut(&text).len() < text.len() { "..." } else { "" };
        bad_value(
            table,
            column,
            &format!("{}{more}", cut(&text)),
            &format!("is not {}", a_value_of(column.ty)),
        )
    };
    match (value, column.ty) {
        (Json::Null, _) => null_for(table, column),
        (Json::String(s), _) => parse_text(table, column, s),
        (Json::Bool(b), ColumnType::Bool) => Ok(Value::Bool(*b)),
        (Json::Number(n), ColumnType::I32) => {
            n.as_i64().and_then(|v| i32::try_from(v).ok()).map(Value::I32).ok_or_else(not)
        }
        (Json::Number(n), ColumnType::I64) => n.as_i64().map(Value::I64).ok_or_else(not),
        (Json::Number(n), ColumnType::U64) => n.as_u64().map(Value::U64).ok_or_else(not),
        (Json::Number(n), ColumnType::Timestamp) => {
            n.as_i64().map(Value::Timestamp).ok_or_else(not)
        }
        (Json::Number(n), ColumnType::F64) => n.as_f64().map(Value::F64).ok_or_else(not),
        _ => Err(not()),
    }
}

/// A value as JSON.
fn json_of(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::I32(v) => Json::from(*v),
        Value::I64(v) | Value::Timestamp(v) => Json::from(*v),
        Value::U64(v) => Json::from(*v),
        Value::F64(v) => serde_json::Number::from_f64(*v)
            .map_or_else(|| Json::String(v.to_string()), Json::Number),
        Value::Bool(v) => Json::Bool(*v),
        Value::Bytes(_) => Json::String(value.to_string()),
        Value::Text(v) => Json::String(v.clone()),
    }
}

/// A JSON object with its fields in the order given, as one line.
fn json_object(fields: &[(&str, Json)]) -> String {
    let parts: Vec<String> =
        fields.iter().map(|(k, v)| format!("{}:{v}", Json::from(*k))).collect();
    format!("{{{}}}\n", parts.join(","))
}

/// A row as one JSON object, columns in table order.
fn row_json(table: &Table, values: &[Value]) -> String {
    let fields: Vec<(&str, Json)> =
        table.def.columns.iter().zip(values).map(|(c, v)| (c.name.as_str(), json_of(v))).collect();
    json_object(&fields)
}

// ---------------------------------------------------------------------------------------------
// Load: reading rows.

/// The opened input of a load, before the table is known.
struct LoadInput {
    kind: Input,
    reader: Box<dyn Read>,
    /// The file's name for errors (`stdin` for `-`).
    place: String,
}

impl LoadInput {
    fn open(args: &LoadArgs) -> Result<LoadInput> {
        let file = &args.file;
        let stdin = file.as_os_str() == "-";
        let kind = match (args.input, stdin) {
            (Some(kind), _) => kind,
            (None, true) => {
                return Err(input("reading stdin (-) needs --input csv or --input jsonl"))
            }
            (None, false) => kind_of(file)?,
        };
        let (reader, place): (Box<dyn Read>, String) = if stdin {
            (Box::new(io::stdin()), "stdin".into())
        } else {
            let f = File::open(file).map_err(|e| input(format!("{}: {e}", file.display())))?;
            (Box::new(f), file.display().to_string())
        };
        Ok(LoadInput { kind, reader, place })
    }
}

/// The format a file's extension names.
fn kind_of(file: &Path) -> Result<Input> {
    let extension = file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => Ok(Input::Csv),
        Some("jsonl" | "json" | "ndjson") => Ok(Input::Jsonl),
        _ => Err(input(format!(
            "{}: cannot tell the format from the file name: give --input csv or --input jsonl",
            file.display()
        ))),
    }
}

/// One row of input: its line number and its values by column index.
type InputRow = (u64, Vec<(usize, Value)>);

/// Rows from a CSV or JSON-lines input, checked against the table.
enum Source {
    Csv { reader: csv::Reader<Box<dyn Read>>, columns: Vec<usize>, place: String },
    Jsonl { lines: io::Lines<BufReader<Box<dyn Read>>>, line: u64, place: String },
}

fn at_line(place: &str, line: u64, e: CliError) -> CliError {
    input(format!("{place} line {line}: {e}"))
}

impl Source {
    fn open(from: LoadInput, table: &Table) -> Result<Source> {
        let LoadInput { kind, reader, place } = from;
        match kind {
            Input::Jsonl => {
                Ok(Source::Jsonl { lines: BufReader::new(reader).lines(), line: 0, place })
            }
            Input::Csv => {
                let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
                let header = reader.headers().map_err(|e| input(format!("{place}: {e}")))?.clone();
                let mut columns: Vec<usize> = Vec::with_capacity(header.len());
                for name in &header {
                    let index = column_index(table, name).map_err(|e| at_line(&place, 1, e))?;
                    if columns.contains(&index) {
                        return Err(input(format!(
                            "{place} line 1: column {name:?} appears twice in the header"
                        )));
                    }
                    columns.push(index);
                }
                let present: Vec<(usize, Value)> =
                    columns.iter().map(|i| (*i, Value::Null)).collect();
                check_complete(table, &present).map_err(|e| at_line(&place, 1, e))?;
                Ok(Source::Csv { reader, columns, place })
            }
        }
    }

    /// The next row, `None` at the end of the input.
    fn next_row(&mut self, table: &Table) -> Result<Option<InputRow>> {
        match self {
            Source::Csv { reader, columns, place } => {
                let mut record = csv::StringRecord::new();
                match reader.read_record(&mut record) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {}
                    Err(e) => return Err(input(format!("{place}: {e}"))),
                }
                let line = record.position().map_or(0, csv::Position::line);
                let mut row = Vec::with_capacity(columns.len());
                for (index, text) in columns.iter().zip(&record) {
                    let value = parse_cell(table, column_at(table, *index)?, text);
                    row.push((*index, value.map_err(|e| at_line(place, line, e))?));
                }
                Ok(Some((line, row)))
            }
            Source::Jsonl { lines, line, place } => loop {
                let Some(text) = lines.next() else { return Ok(None) };
                *line += 1;
                let text = text.map_err(|e| input(format!("{place} line {line}: {e}")))?;
                if text.trim().is_empty() {
                    continue;
                }
                let row = json_row(table, &text).map_err(|e| at_line(place, *line, e))?;
                return Ok(Some((*line, row)));
            },
        }
    }
}

/// A JSON-lines row: one object, column name -> value, every NOT NULL column present.
fn json_row(table: &Table, text: &str) -> Result<Vec<(usize, Value)>> {
    let object: serde_json::Map<String, Json> =
        serde_json::from_str(text).map_err(|e| input(format!("not a JSON object: {e}")))?;
    let mut row = Vec::with_capacity(object.len());
    for (name, value) in &object {
        let index = column_index(table, name)?;
        row.push((index, parse_json(table, column_at(table, index)?, value)?));
    }
    check_complete(table, &row)?;
    Ok(row)
}

// ---------------------------------------------------------------------------------------------
// Load: batches in flight.

/// Rows for one transaction, and how often it was tried.
#[derive(Debug)]
struct Batch {
    rows: Vec<InputRow>,
    attempts: u32,
    sent: Instant,
}

impl Batch {
    fn new(rows: Vec<InputRow>) -> Batch {
        Batch { rows, attempts: 0, sent: Instant::now() }
    }

    /// Its input lines, for errors.
    fn lines(&self) -> String {
        match (self.rows.first(), self.rows.last()) {
            (Some((a, _)), Some((b, _))) if a != b => format!("the batch of lines {a} to {b}"),
            (Some((a, _)), _) => format!("the batch of line {a}"),
            _ => "an empty batch".into(),
        }
    }
}

/// Sends batches as transactions, keeping up to `max_in_flight` in flight.
struct Loader<'s, 'c> {
    session: &'s mut Session<'c>,
    table: Arc<Table>,
    in_flight: HashMap<u64, (Transaction, Batch)>,
    max_in_flight: usize,
    timeout: Duration,
    loaded: u64,
    batches: u64,
    retries: u64,
    progress: ProgressBar,
}

impl Loader<'_, '_> {
    /// Reads `source` to its end in batches of `batch_size`, then waits for every batch.
    fn run(&mut self, source: &mut Source, batch_size: usize) -> Result<()> {
        let mut rows = Vec::with_capacity(batch_size);
        let read = loop {
            match source.next_row(&self.table) {
                Ok(Some(row)) => {
                    rows.push(row);
                    if rows.len() >= batch_size {
                        if let Err(e) = self.submit(Batch::new(std::mem::take(&mut rows))) {
                            break Err(e);
                        }
                    }
                }
                Ok(None) if rows.is_empty() => break Ok(()),
                Ok(None) => break self.submit(Batch::new(std::mem::take(&mut rows))),
                Err(e) => break Err(e),
            }
        };
        match read {
            Ok(()) => self.finish(),
            Err(e) => {
                // What was sent before the bad row still ends, so the count of rows loaded is
                // exact where it can be.
                if let Err(more) = self.finish() {
                    tracing::warn!(error = %more, "after the load failed");
                }
                Err(e)
            }
        }
    }

    /// Sends `batch`, first waiting while the most batches are in flight.
    fn submit(&mut self, batch: Batch) -> Result<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.collect()?;
        }
        self.send(batch)
    }

    /// Sends `batch` as one transaction of writes with a commit.
    fn send(&mut self, mut batch: Batch) -> Result<()> {
        loop {
            let mut tx = self.session.begin();
            for (line, row) in &batch.rows {
                let pairs = named(&self.table, row);
                tx.write(&self.table, &pairs).map_err(|e| input(format!("line {line}: {e}")))?;
            }
            batch.sent = Instant::now();
            match self.session.send(&mut tx, Exec::Commit) {
                Ok(()) => {
                    self.batches += 1;
                    self.in_flight.insert(tx.id(), (tx, batch));
                    return Ok(());
                }
                Err(e) if e.is_temporary() && batch.attempts < RETRIES => {
                    self.pause_for_retry(&mut batch, &e)
                }
                Err(e) => return Err(input(format!("{}: {e}", batch.lines()))),
            }
        }
    }

    fn pause_for_retry(&mut self, batch: &mut Batch, e: &client::Error) {
        batch.attempts += 1;
        self.retries += 1;
        let lines = batch.lines();
        tracing::warn!(error = %e, attempt = batch.attempts, "{lines}: temporary error: retrying");
        std::thread::sleep(backoff(batch.attempts));
    }

    /// Polls once and handles what completed; the first error after all of them.
    fn collect(&mut self) -> Result<()> {
        let mut first = None;
        for completion in self.session.poll(Duration::from_millis(20)) {
            if let Err(e) = self.complete(completion) {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        match self.in_flight.values().find(|(_, b)| b.sent.elapsed() > self.timeout) {
            Some((_, b)) => Err(input(format!(
                "{}: no answer within {:?}; its outcome is unknown",
                b.lines(),
                self.timeout
            ))),
            None => Ok(()),
        }
    }

    fn complete(&mut self, completion: Completion) -> Result<()> {
        let Some((mut tx, mut batch)) = self.in_flight.remove(&completion.tx) else {
            tracing::debug!(tx = completion.tx, "a completion of no batch in flight");
            return Ok(());
        };
        match tx.absorb(completion) {
            Ok(Outcome::Committed) => {
                let rows = batch.rows.len() as u64;
                self.loaded += rows;
                self.progress.inc(rows);
                Ok(())
            }
            Ok(other) => Err(input(format!("{}: the commit ended {other:?}", batch.lines()))),
            Err(e) if e.is_temporary() && batch.attempts < RETRIES => {
                self.pause_for_retry(&mut batch, &e);
                self.send(batch)
            }
            Err(e) => Err(input(format!("{}: {e}", batch.lines()))),
        }
    }

    /// Waits until every batch in flight ended.
    fn finish(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.collect()?;
        }
        Ok(())
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {human_pos} rows  {rate}  {elapsed}")
    {
        bar.set_style(style.with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", state.per_sec());
            },
        ));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn load_file(
    session: &mut Session<'_>,
    args: &LoadArgs,
    from: LoadInput,
    timeout: Duration,
    json: bool,
) -> Result<String> {
    let table = session.table(&args.table)?;
    let mut source = Source::open(from, &table)?;
    let start = Instant::now();
    let mut loader = Loader {
        session,
        table: table.clone(),
        in_flight: HashMap::new(),
        max_in_flight: args.in_flight as usize,
        timeout,
        loaded: 0,
        batches: 0,
        retries: 0,
        progress: progress_bar(),
    };
    let result = loader.run(&mut source, args.batch as usize);
    loader.progress.finish_and_clear();
    let (rows, batches, retries) = (loader.loaded, loader.batches, loader.retries);
    if let Err(e) = result {
        return Err(input(format!("{e} ({rows} rows were loaded before it)")));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 { rows as f64 / elapsed } else { 0.0 };
    Ok(if json {
        json_object(&[
            ("table", Json::from(table.name())),
            ("rows", Json::from(rows)),
            ("batches", Json::from(batches)),
            ("retries", Json::from(retries)),
            ("elapsed_s", Json::from((elapsed * 1000.0).round() / 1000.0)),
        ])
    } else {
        let retried =
            if retries > 0 { format!(", {retries} batches retried") } else { String::new() };
        format!(
            "loaded {rows} rows into table {:?} in {elapsed:.2} s ({rate:.0} rows/s{retried})\n",
            table.name()
        )
    })
}
