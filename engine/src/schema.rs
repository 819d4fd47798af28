//! Table definitions: typed, nullable columns, a primary key of one or more columns, a
//! partition key that is a prefix of it, a partition count and table options; and the limits
//! every definition is checked against (configuration of the dictionary block).
//!
//! A definition travels as JSON (client -> dictionary, dictionary -> dictionary) and is read
//! from TOML by the CLI: both go through serde, and [`TableDef::validate`] is the one check,
//! run by every dictionary that installs the table (input from an API node is untrusted). Its
//! errors name the table and the column.
//!
//! Invariants of a validated definition: column names are unique and non-empty; the primary key
//! names existing, NOT NULL, non-float columns, each once; the partition key is a non-empty
//! prefix of the primary key; variable-length maxima are at least 1; every limit holds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 64-bit unsigned integer.
    U64,
    /// 64-bit IEEE float (not allowed in a key: NaN has no equality).
    F64,
    /// true or false.
    Bool,
    /// Bytes, at most `max` of them.
    Bytes { max: u32 },
    /// UTF-8 text of at most `max` bytes.
    Varchar { max: u32 },
    /// Microseconds since the Unix epoch (signed).
    Timestamp,
}

impl ColumnType {
    /// The bytes a value takes in a row or key when the type has a fixed size.
    pub const fn fixed_bytes(self) -> Option<usize> {
        match self {
            ColumnType::I32 => Some(4),
            ColumnType::I64 | ColumnType::U64 | ColumnType::F64 | ColumnType::Timestamp => Some(8),
            ColumnType::Bool => Some(1),
            ColumnType::Bytes { .. } | ColumnType::Varchar { .. } => None,
        }
    }

    /// The most bytes a value of this type takes encoded (length word included).
    pub const fn max_encoded_bytes(self) -> usize {
        match self {
            ColumnType::Bytes { max } | ColumnType::Varchar { max } => 4 + max as usize,
            _ => match self.fixed_bytes() {
                Some(n) => n,
                None => 0,
            },
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::I32 => f.write_str("i32"),
            ColumnType::I64 => f.write_str("i64"),
            ColumnType::U64 => f.write_str("u64"),
            ColumnType::F64 => f.write_str("f64"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Bytes { max } => write!(f, "bytes({max})"),
            ColumnType::Varchar { max } => write!(f, "varchar({max})"),
            ColumnType::Timestamp => f.write_str("timestamp"),
        }
    }
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(text: &str) -> Result<ColumnType, String> {
        let text = text.trim().to_ascii_lowercase();
        let sized = |prefix: &str| -> Option<Result<u32, String>> {
            let inner = text.strip_prefix(prefix)?.strip_prefix('(')?.strip_suffix(')')?;
            Some(inner.trim().parse::<u32>().map_err(|_| format!("{inner:?} is not a size in bytes")))
        };
        Ok(match text.as_str() {
            "i32" => ColumnType::I32,
            "i64" => ColumnType::I64,
            "u64" => ColumnType::U64,
            "f64" => ColumnType::F64,
            "bool" => ColumnType::Bool,
            "timestamp" => ColumnType::Timestamp,
            _ => {
                if let Some(max) = sized("bytes") {
                    ColumnType::Bytes { max: max? }
                } else if let Some(max) = sized("varchar") {
                    ColumnType::Varchar { max: max? }
                } else {
                    return Err(format!(
                        "unknown type {text:?} (allowed: i32, i64, u64, f64, bool, timestamp, bytes(N), varchar(N))"
                    ));
                }
            }
        })
    }
}

impl Serialize for ColumnType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ColumnType, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Its name, unique in the table.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether it may hold NULL (never for a key column).
    #[serde(default)]
    pub nullable: bool,
}

/// A table as its creator wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// Its name, unique in the cluster.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<Column>,
    /// The primary key's column names, in key order.
    pub primary_key: Vec<String>,
    /// The partition key: a prefix of the primary key (default: all of it).
    #[serde(default)]
    pub partition_key: Option<Vec<String>>,
    /// How many partitions (default: the dictionary's `default_partitions`).
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Committed reads may be served by either replica, with read-your-writes (the commit is
    /// acknowledged after the complete phase).
    #[serde(default)]
    pub read_backup: bool,
    /// Ordered indexes (NDB's DBTUX), each on a list of columns.
    #[serde(default)]
    pub indexes: Vec<IndexDef>,
}

/// An ordered index as its creator wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexDef {
    /// Its name, unique in the table.
    pub name: String,
    /// The columns it orders by, most significant first.
    pub columns: Vec<String>,
}

/// Limits a definition is checked against (the dictionary's settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaLimits {
    /// Most tables in the cluster.
    pub max_tables: u32,
    /// Most columns in a table.
    pub max_columns: u32,
    /// Most bytes a row can take encoded.
    pub max_row_bytes: u32,
    /// Most bytes a primary key can take encoded.
    pub max_key_bytes: u32,
    /// Most partitions of a table.
    pub max_partitions: u32,
    /// Partitions of a table that does not say.
    pub default_partitions: u32,
    /// Most ordered indexes on a table.
    #[serde(default = "default_max_indexes")]
    pub max_indexes: u32,
}

fn default_max_indexes() -> u32 {
    16
}

impl Default for SchemaLimits {
    fn default() -> SchemaLimits {
        SchemaLimits {
            max_tables: 256,
            max_columns: 128,
            max_row_bytes: 6000,
            max_key_bytes: 1024,
            max_partitions: 1024,
            default_partitions: 8,
            max_indexes: default_max_indexes(),
        }
    }
}

/// Why a definition was refused: each names the table, and the column where there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The definition itself is wrong.
    #[error("table {table:?}: {reason}")]
    Invalid { table: String, reason: String },
    /// A column of it is wrong.
    #[error("table {table:?}, column {column:?}: {reason}")]
    Column { table: String, column: String, reason: String },
    /// A limit of the dictionary is exceeded.
    #[error("table {table:?}: {what} is {value}, over the limit {limit}")]
    Limit { table: String, what: &'static str, value: u64, limit: u64 },
}

/// Names are 1..=64 bytes of letters, digits, `_`, `-` and `.`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("name {name:?} must be 1 to 64 bytes"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(format!("name {name:?} may hold only letters, digits, '_', '-' and '.'"));
    }
    Ok(())
}

impl TableDef {
    /// Checks the definition against the rules and `limits`; returns the partition count to use.
    pub fn validate(&self, limits: &SchemaLimits) -> Result<u32, SchemaError> {
        let table = self.name.clone();
        let invalid = |reason: String| SchemaError::Invalid { table: table.clone(), reason };
        check_name(&self.name).map_err(invalid)?;
        let limit = |what, value: u64, limit: u64| {
            if value > limit {
                Err(SchemaError::Limit { table: self.name.clone(), what, value, limit })
            } else {
                Ok(())
            }
        };
        if self.columns.is_empty() {
            return Err(invalid("a table needs at least one column".into()));
        }
        limit("the column count", self.columns.len() as u64, u64::from(limits.max_columns))?;
        let mut row_bytes = self.columns.len().div_ceil(8) as u64;
        for (i, c) in self.columns.iter().enumerate() {
            let column = |reason: String| SchemaError::Column {
                table: self.name.clone(),
                column: c.name.clone(),
                reason,
            };
            check_name(&c.name).map_err(column)?;
            if self.columns[..i].iter().any(|d| d.name == c.name) {
                return Err(column("appears twice".into()));
            }
            if let ColumnType::Bytes { max: 0 } | ColumnType::Varchar { max: 0 } = c.ty {
                return Err(column(format!("type {} must allow at least 1 byte", c.ty)));
            }
            row_bytes += c.ty.max_encoded_bytes() as u64;
        }
        limit("the largest row in bytes", row_bytes, u64::from(limits.max_row_bytes))?;
        if self.primary_key.is_empty() {
            return Err(invalid("the primary key needs at least one column".into()));
        }
        let mut key_bytes = 0u64;
        for (i, name) in self.primary_key.iter().enumerate() {
            let column = |reason: String| SchemaError::Column {
                table: self.name.clone(),
                column: name.clone(),
                reason,
            };
            let Some(c) = self.columns.iter().find(|c| &c.name == name) else {
                return Err(column("is in the primary key but is not a column".into()));
            };
            if self.primary_key[..i].contains(name) {
                return Err(column("appears twice in the primary key".into()));
            }
            if c.nullable {
                return Err(column("a primary-key column cannot be nullable".into()));
            }
            if c.ty == ColumnType::F64 {
                return Err(column("a primary-key column cannot be f64".into()));
            }
            key_bytes += c.ty.max_encoded_bytes() as u64;
        }
        limit("the largest key in bytes", key_bytes, u64::from(limits.max_key_bytes))?;
        if let Some(pk) = &self.partition_key {
            if pk.is_empty() || pk.len() > self.primary_key.len() || self.primary_key[..pk.len()] != pk[..] {
                return Err(invalid(format!(
                    "partition key {pk:?} must be a non-empty prefix of the primary key {:?}",
                    self.primary_key
                )));
            }
        }
        let partitions = self.partitions.unwrap_or(limits.default_partitions);
        if partitions == 0 {
            return Err(invalid("partitions must be at least 1".into()));
        }
        limit("the partition count", u64::from(partitions), u64::from(limits.max_partitions))?;
        limit("the index count", self.indexes.len() as u64, u64::from(limits.max_indexes))?;
        for (i, index) in self.indexes.iter().enumerate() {
            self.validate_index(i, index)?;
        }
        Ok(partitions)
    }

    fn validate_index(&self, i: usize, index: &IndexDef) -> Result<(), SchemaError> {
        let invalid = |reason: String| SchemaError::Invalid {
            table: self.name.clone(),
            reason: format!("index {:?}: {reason}", index.name),
        };
        check_name(&index.name).map_err(invalid)?;
        if self.indexes[..i].iter().any(|d| d.name == index.name) {
            return Err(invalid("appears twice".into()));
        }
        if index.columns.is_empty() {
            return Err(invalid("an index needs at least one column".into()));
        }
        for (j, name) in index.columns.iter().enumerate() {
            if !self.columns.iter().any(|c| &c.name == name) {
                return Err(invalid(format!("column {name:?} is not a column of the table")));
            }
            if index.columns[..j].contains(name) {
                return Err(invalid(format!("column {name:?} appears twice")));
            }
        }
        Ok(())
    }
}

/// A validated table with its identity: what every data node and client holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Its id (stable while it exists; reused only after a drop).
    pub id: u32,
    /// Its version: a new table gets a version no earlier table with this id had.
    pub version: u32,
    /// Its definition.
    pub def: TableDef,
    /// Its partition count.
    pub partitions: u32,
    /// The column index of each primary-key column, in key order.
    pub key_columns: Vec<u16>,
    /// How many leading key columns form the partition key.
    pub partition_key_columns: u16,
    /// The column indexes of each ordered index, in index order (as `def.indexes`).
    #[serde(default)]
    pub index_columns: Vec<Vec<u16>>,
}

impl Table {
    /// A table from a definition `validate` accepted.
    pub fn new(id: u32, version: u32, def: TableDef, partitions: u32) -> Table {
        let key_columns: Vec<u16> = def
            .primary_key
            .iter()
            .filter_map(|k| def.columns.iter().position(|c| &c.name == k))
            .map(|i| i as u16)
            .collect();
        let partition_key_columns =
            def.partition_key.as_ref().map_or(key_columns.len(), |p| p.len()) as u16;
        let index_columns = def
            .indexes
            .iter()
            .map(|i| {
                i.columns
                    .iter()
                    .filter_map(|n| def.columns.iter().position(|c| &c.name == n))
                    .map(|c| c as u16)
                    .collect()
            })
            .collect();
        Table { id, version, def, partitions, key_columns, partition_key_columns, index_columns }
    }

    /// The number of the ordered index named `name`.
    pub fn index_number(&self, name: &str) -> Option<usize> {
        self.def.indexes.iter().position(|i| i.name == name)
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The column `index`.
    pub fn column(&self, index: usize) -> Option<&Column> {
        self.def.columns.get(index)
    }

    /// The index of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.def.columns.iter().position(|c| c.name == name)
    }

    /// Whether column `index` is in the primary key.
    pub fn is_key_column(&self, index: usize) -> bool {
        self.key_columns.iter().any(|k| usize::from(*k) == index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> TableDef {
        TableDef {
            name: "accounts".into(),
            columns: vec![
                Column { name: "id".into(), ty: ColumnType::I64, nullable: false },
                Column { name: "owner".into(), ty: ColumnType::Varchar { max: 32 }, nullable: true },
                Column { name: "balance".into(), ty: ColumnType::I64, nullable: false },
            ],
            primary_key: vec!["id".into()],
            partition_key: None,
            partitions: Some(4),
            read_backup: false,
            indexes: Vec::new(),
        }
    }

    #[test]
    fn a_good_definition_passes_and_round_trips_through_json() {
        let d = def();
        assert_eq!(d.validate(&SchemaLimits::default()), Ok(4));
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"varchar(32)\""), "{json}");
        assert_eq!(serde_json::from_str::<TableDef>(&json).unwrap(), d);
    }

    #[test]
    fn each_rule_names_what_was_wrong() {
        let limits = SchemaLimits::default();
        let mut d = def();
        d.columns[1].name = "id".into();
        let e = d.validate(&limits).unwrap_err().to_string();
        assert!(e.contains("\"accounts\"") && e.contains("\"id\"") && e.contains("twice"), "{e}");
        let mut d = def();
        d.primary_key = vec!["owner".into()];
        let e = d.validate(&limits).unwrap_err().to_string();
        assert!(e.contains("\"owner\"") && e.contains("nullable"), "{e}");
        let mut d = def();
        d.primary_key = vec!["nope".into()];
        assert!(d.validate(&limits).unwrap_err().to_string().contains("\"nope\""));
        let mut d = def();
        d.columns.push(Column { name: "f".into(), ty: ColumnType::F64, nullable: false });
        d.primary_key = vec!["id".into(), "f".into()];
        assert!(d.validate(&limits).unwrap_err().to_string().contains("f64"));
        let mut d = def();
        d.partition_key = Some(vec!["balance".into()]);
        assert!(d.validate(&limits).unwrap_err().to_string().contains("prefix"));
        let mut d = def();
        d.columns[1].ty = ColumnType::Varchar { max: 100_000 };
        let e = d.validate(&limits).unwrap_err();
        assert!(matches!(e, SchemaError::Limit { what: "the largest row in bytes", .. }), "{e}");
        let mut d = def();
        d.name = "bad name".into();
        assert!(d.validate(&limits).unwrap_err().to_string().contains("letters"));
        let tight = SchemaLimits { max_columns: 2, ..limits };
        assert!(def().validate(&tight).unwrap_err().to_string().contains("column count"));
    }

    #[test]
    fn types_parse_and_print() {
        for t in ["i32", "i64", "u64", "f64", "bool", "timestamp", "bytes(10)", "varchar(200)"] {
            assert_eq!(t.parse::<ColumnType>().unwrap().to_string(), t);
        }
        assert!("varchar(x)".parse::<ColumnType>().unwrap_err().contains("\"x\""));
        assert!("int".parse::<ColumnType>().unwrap_err().contains("unknown type"));
    }

    #[test]
    fn key_columns_follow_the_key_order() {
        let mut d = def();
        d.primary_key = vec!["balance".into(), "id".into()];
        d.partition_key = Some(vec!["balance".into()]);
        let t = Table::new(1, 1, d, 4);
        assert_eq!(t.key_columns, vec![2, 0]);
        assert_eq!(t.partition_key_columns, 1);
    }
}
