//! SQLite beside the cluster: values into SQLite's and back, and a query's rows, for the
//! tests that check the cluster's answers against SQLite on the same rows.

use client::Value;

/// A value as SQLite stores it (bools and timestamps as integers).
pub fn to_sql_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::F64(f) => S::Real(*f),
        Value::Text(t) => S::Text(t.clone()),
        Value::Bool(b) => S::Integer(i64::from(*b)),
        v => S::Integer(v.as_i64().expect("an integer")),
    }
}

/// A value SQLite returned.
pub fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef as S;
    match v {
        S::Null => Value::Null,
        S::Integer(i) => Value::I64(i),
        S::Real(f) => Value::F64(f),
        S::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        S::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

/// Every row of `sql` in SQLite.
pub fn sqlite_rows(db: &rusqlite::Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut stmt = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        Ok((0..n).map(|i| from_sqlite(r.get_ref(i).unwrap())).collect::<Vec<_>>())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}
