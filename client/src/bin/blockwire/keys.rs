//! The key commands: `get` (a committed read), `put` (a write of a whole row) and `delete`,
//! each one transaction retried on a temporary error.

use std::time::Duration;

use client::{Exec, LockMode, Session, Table, Transaction, Value};
use serde_json::Value as Json;

use crate::output::{json_object, row_json};
use crate::values::{check_complete, column_at, column_index, named, parse_cell, parse_text};
use crate::{input, CliError, Result, RETRIES};

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

pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(20 * u64::from(attempt.min(10)))
}

pub(crate) fn get(
    session: &mut Session<'_>,
    name: &str,
    key_text: &[String],
    json: bool,
) -> Result<String> {
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

pub(crate) fn put(
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

pub(crate) fn delete(
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
