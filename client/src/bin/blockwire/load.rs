//! `blockwire load`: rows from a CSV or JSON-lines file (or stdin), checked against the table,
//! written in batches of one transaction each with many transactions in flight; a temporary
//! error retries its batch, a bad row stops the load naming its line, column and value.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use client::{Completion, Exec, Outcome, Session, Table, Transaction, Value};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde_json::Value as Json;

use crate::keys::backoff;
use crate::output::json_object;
use crate::values::{check_complete, column_at, column_index, named, parse_cell, parse_json};
use crate::{input, CliError, Result, RETRIES};

/// The format of a load's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Input {
    /// Comma-separated values with a header row naming the columns.
    Csv,
    /// One JSON object per line, column name -> value.
    Jsonl,
}

/// The options of `blockwire load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
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

/// The opened input of a load, before the table is known.
pub(crate) struct LoadInput {
    kind: Input,
    reader: Box<dyn Read>,
    /// The file's name for errors (`stdin` for `-`).
    place: String,
}

impl LoadInput {
    pub(crate) fn open(args: &LoadArgs) -> Result<LoadInput> {
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

pub(crate) fn load_file(
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
