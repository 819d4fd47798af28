//! The schema commands: `create-table` (from a TOML definition), `drop-table`, `tables` and
//! `describe`, each answering in text or as JSON.

use std::path::Path;

use client::{Session, Table, TableDef};
use serde_json::Value as Json;

use crate::output::{aligned, json_object};
use crate::{input, Result};

pub(crate) fn read_definition(file: &Path) -> Result<TableDef> {
    let text =
        std::fs::read_to_string(file).map_err(|e| input(format!("{}: {e}", file.display())))?;
    toml::from_str(&text)
        .map_err(|e| input(format!("{}: not a table definition: {e}", file.display())))
}

pub(crate) fn create_table(
    session: &mut Session<'_>,
    def: &TableDef,
    json: bool,
) -> Result<String> {
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

pub(crate) fn drop_table(session: &mut Session<'_>, name: &str, json: bool) -> Result<String> {
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

pub(crate) fn list_tables(session: &mut Session<'_>, json: bool) -> Result<String> {
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

pub(crate) fn describe(session: &mut Session<'_>, name: &str, json: bool) -> Result<String> {
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
    for index in &t.def.indexes {
        out += &format!("index {}: {}\n", index.name, index.columns.join(", "));
    }
    Ok(out)
}

/// Adds an ordered index to a table (built from its rows while writes go on).
pub(crate) fn create_index(session: &mut Session<'_>, table: &str, name: &str, columns: &[String], json: bool) -> Result<String> {
    let index = client::IndexDef { name: name.to_string(), columns: columns.to_vec() };
    let t = session.create_index(table, &index)?;
    Ok(if json {
        json_object(&[("table", Json::from(t.name())), ("index", Json::from(name)), ("columns", Json::from(columns.to_vec()))])
    } else {
        format!("created index {name:?} on table {:?} ({}), built on every data node\n", t.name(), columns.join(", "))
    })
}
