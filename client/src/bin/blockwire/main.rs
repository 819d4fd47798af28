//! The `blockwire` command line: joins a cluster as an API node (from its cluster file) and runs
//! one schema request (`create-table`, `drop-table`, `tables`, `describe`), one key operation
//! (`get`, `put`, `delete`), a bulk `load` of a CSV or JSON-lines file with many transactions
//! in flight, a `scan` (filters, ranges, projections, aggregates), or `sql` (statements, or an
//! interactive prompt; [`sql`]). This file owns the
//! arguments, the errors and exit codes, and the dispatch; each role is a module:
//! [`schema`] (schema commands), [`keys`] (key commands), [`load`] (the loader), [`scan`] and
//! [`range`] (scans and their `--range` syntax), [`values`] (values from text and JSON, checked
//! against the table: every error names the table, the column and the value) and [`output`]
//! (aligned text and JSON lines).
//!
//! Exit codes: 0 done; 1 `get` found no row; 2 any other error, with `blockwire: <error>` on
//! stderr. Logs go to stderr through `tracing` (filter with `RUST_LOG`, default `warn`).
//!
//! Values on the command line and in CSV: integers (i32, i64, u64, timestamp in microseconds
//! since the Unix epoch), f64, `true`/`false`, varchar as written, bytes as hex (optional `0x`);
//! in `put` and CSV the literal `NULL` is NULL. In JSON lines: numbers, strings (also for any
//! type, as on the command line), booleans, null; bytes as hex strings. JSON output: integers
//! and f64 as numbers (a non-finite f64 as a string), bool, null, text as strings, bytes as
//! `"0x.."` strings, timestamps as integers. A scan's expressions and ranges write values as
//! SQL literals (`'text'`, numbers, `NULL`; see `blockwire scan --help`).

mod keys;
mod load;
mod output;
mod range;
mod scan;
mod schema;
mod sql;
mod values;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use client::{Cluster, ConnectOptions, TableDef};
use tracing_subscriber::EnvFilter;

use load::{LoadArgs, LoadInput};
use scan::{ScanArgs, ScanPlan};

/// Runs schema requests, key operations, bulk loads and scans on a blockwire cluster.
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a table from a TOML definition (name, columns = [{name, type, nullable}],
    /// primary_key, and optionally partition_key, partitions, read_backup and
    /// indexes = [{name, columns}]).
    CreateTable {
        /// The definition file.
        file: PathBuf,
    },
    /// Adds an ordered index to a table that may hold rows; returns once it is built.
    CreateIndex {
        /// The table.
        table: String,
        /// The index's name.
        name: String,
        /// Its columns, most significant first.
        #[arg(required = true)]
        columns: Vec<String>,
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
    /// Scans a table or an ordered index: rows (or groups) as they arrive.
    #[command(after_help = scan::HELP)]
    Scan(ScanArgs),
    /// Runs SQL: SELECT and EXPLAIN SELECT, pushed down to the data nodes.
    #[command(after_help = sql::HELP)]
    Sql(sql::SqlArgs),
    /// Runs as the cluster's arbitrator (the API node `arbitrator` names in the membership
    /// block): decides which side of a possible network partition keeps running, and prints
    /// each decision. Runs until killed, or for `--seconds`.
    Arbitrator {
        /// Stop after this many seconds (default: run until killed).
        #[arg(long)]
        seconds: Option<u64>,
        /// How long a grant is remembered (while it is, only that side is granted again).
        #[arg(long, default_value_t = 30)]
        memory_s: u64,
    },
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

/// How often a transaction that failed with a temporary error (deadlock, overload) is retried.
const RETRIES: u32 = 5;

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
    Scan(ScanPlan),
}

fn run(args: &Args) -> Result<()> {
    let config = args
        .config
        .as_deref()
        .ok_or_else(|| input("--config FILE (the cluster file) is required"))?;
    let prepared = match &args.command {
        Command::CreateTable { file } => Prepared::Definition(schema::read_definition(file)?),
        Command::Load(load) => Prepared::Load(LoadInput::open(load)?),
        Command::Scan(scan) => Prepared::Scan(ScanPlan::parse(scan)?),
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
    let mut out = io::stdout().lock();
    let text = match (&args.command, prepared) {
        (Command::CreateTable { .. }, Prepared::Definition(def)) => {
            schema::create_table(s, &def, json)?
        }
        (Command::DropTable { name }, _) => schema::drop_table(s, name, json)?,
        (Command::CreateIndex { table, name, columns }, _) => schema::create_index(s, table, name, columns, json)?,
        (Command::Tables, _) => schema::list_tables(s, json)?,
        (Command::Describe { name }, _) => schema::describe(s, name, json)?,
        (Command::Get { table, key }, _) => keys::get(s, table, key, json)?,
        (Command::Put { table, values }, _) => keys::put(s, table, values, json)?,
        (Command::Delete { table, key }, _) => keys::delete(s, table, key, json)?,
        (Command::Load(load), Prepared::Load(source)) => {
            load::load_file(s, load, source, timeout, json)?
        }
        (Command::Arbitrator { seconds, memory_s }, _) => {
            let layout = s.layout().clone();
            let mut arbitrator = client::arbitrator::Arbitrator::new(layout.cluster_id, Duration::from_secs(*memory_s));
            let until = seconds.map(|n| std::time::Instant::now() + Duration::from_secs(n));
            eprintln!("blockwire: arbitrating for cluster {} as API node {}", layout.cluster_id, args.as_node.map_or("(first free)".into(), |n| n.to_string()));
            let mut failed = None;
            s.arbitrate(
                &mut arbitrator,
                || until.is_some_and(|u| std::time::Instant::now() >= u),
                |d| {
                    let survivors: Vec<String> = d.survivors.iter().map(ToString::to_string).collect();
                    let line = if json {
                        format!(
                            "{{\"president\":{},\"survivors\":[{}],\"granted\":{},\"reason\":{:?}}}\n",
                            d.president,
                            survivors.join(","),
                            d.granted,
                            d.reason
                        )
                    } else {
                        let verdict = if d.granted { "granted" } else { "refused" };
                        format!("{verdict} data nodes [{}] (asked by {}): {}\n", survivors.join(", "), d.president, d.reason)
                    };
                    if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                        failed.get_or_insert(e);
                    }
                },
            )?;
            if let Some(e) = failed {
                return Err(CliError::Output(e));
            }
            String::new()
        }
        (Command::Sql(args), _) => {
            sql::run(s, args, json, &mut out)?;
            String::new()
        }
        // A scan streams its rows itself.
        (Command::Scan(_), Prepared::Scan(plan)) => {
            scan::run(s, &plan, json, &mut out)?;
            String::new()
        }
        (command, _) => return Err(input(format!("internal: {command:?} was not prepared"))),
    };
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(CliError::Output)
}
