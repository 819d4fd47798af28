//! A data node's catalog: the tables its dictionary has installed, shared read-mostly by the
//! node's storage and coordinator instances (each looks a table up per operation; the
//! dictionary alone writes, at the commit of a schema change).
//!
//! Invariants: ids are unique among installed tables; a table's version is higher than that of
//! every table the catalog held before it (so a client holding an old definition is told the
//! table changed); a table marked dropping refuses new operations.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::ErrorCode;
use crate::schema::Table;

/// The installed tables of one data node.
#[derive(Debug)]
pub struct Catalog {
    pub(crate) tables: RwLock<CatalogState>,
}

/// What the catalog holds.
#[derive(Debug, Default)]
pub struct CatalogState {
    by_id: HashMap<u32, Arc<Table>>,
    dropping: HashSet<u32>,
    highest_version: u32,
}

impl Catalog {
    /// Table `id` at `version`, or the error a client gets for it.
    pub fn get(&self, id: u32, version: u32) -> Result<Arc<Table>, (ErrorCode, String)> {
        let state = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        match state.by_id.get(&id) {
            Some(t) if state.dropping.contains(&id) => {
                Err((ErrorCode::NoSuchTable, format!("table {:?} is being dropped", t.name())))
            }
            Some(t) if t.version == version => Ok(t.clone()),
            Some(t) => Err((
                ErrorCode::SchemaVersion,
                format!(
                    "table {:?} (id {id}) is at version {}, the request used version {version}: read the table again",
                    t.name(),
                    t.version
                ),
            )),
            None => Err((ErrorCode::NoSuchTable, format!("no table with id {id}"))),
        }
    }

    /// Table `id`, any version.
    pub fn by_id(&self, id: u32) -> Option<Arc<Table>> {
        self.tables.read().unwrap_or_else(PoisonError::into_inner).by_id.get(&id).cloned()
    }

    /// The table named `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<Table>> {
        let state = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        state.by_id.values().find(|t| t.name() == name).cloned()
    }

    /// Every table, by id.
    pub fn all(&self) -> Vec<Arc<Table>> {
        let state = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = state.by_id.values().cloned().collect();
        all.sort_by_key(|t| t.id);
        all
    }

    /// How many tables are installed.
    pub fn len(&self) -> usize {
        self.tables.read().unwrap_or_else(PoisonError::into_inner).by_id.len()
    }

    /// Whether no table is installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lowest id no installed table uses, and a version above every one seen.
    pub fn next_identity(&self) -> (u32, u32) {
        let state = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let id = (1..).find(|i| !state.by_id.contains_key(i)).unwrap_or(u32::MAX);
        (id, state.highest_version + 1)
    }

    /// Whether `table` could be installed: its id and name are free.
    pub fn can_install(&self, table: &Table) -> Result<(), (ErrorCode, String)> {
        let state = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        if state.by_id.values().any(|t| t.name() == table.name()) {
            return Err((ErrorCode::TableExists, format!("table {:?} exists", table.name())));
        }
        if state.by_id.contains_key(&table.id) {
            return Err((ErrorCode::SchemaBusy, format!("table id {} is in use", table.id)));
        }
        Ok(())
    }

    /// Installs a table.
    pub fn install(&self, table: Table) {
        let mut state = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        state.highest_version = state.highest_version.max(table.version);
        state.by_id.insert(table.id, Arc::new(table));
    }

    /// Marks table `id` as being dropped (new operations are refused), or clears the mark.
    pub fn set_dropping(&self, id: u32, dropping: bool) {
        let mut state = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        if dropping {
            state.dropping.insert(id);
        } else {
            state.dropping.remove(&id);
        }
    }

    /// Removes table `id`; returns it.
    pub fn remove(&self, id: u32) -> Option<Arc<Table>> {
        let mut state = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        state.dropping.remove(&id);
        state.by_id.remove(&id)
    }

    /// The schema as a file holds it (JSON): the highest version given out and every table.
    pub fn to_file_bytes(&self) -> Result<Vec<u8>, String> {
        let state = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let mut tables: Vec<&Table> = state.by_id.values().map(|t| &**t).collect();
        tables.sort_by_key(|t| t.id);
        let file = SchemaFileRef { highest_version: state.highest_version, tables };
        serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())
    }

    /// Installs the tables of a schema file (at start, into an empty catalog).
    pub fn load_file_bytes(&self, bytes: &[u8]) -> Result<usize, String> {
        let file: SchemaFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut state = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        state.highest_version = state.highest_version.max(file.highest_version);
        let n = file.tables.len();
        for t in file.tables {
            state.highest_version = state.highest_version.max(t.version);
            state.by_id.insert(t.id, Arc::new(t));
        }
        Ok(n)
    }
}

impl Catalog {
    /// Installs the tables of a schema another data node sent (a restarted node's admission),
    /// each definition checked against `limits` and its derived fields computed here, never
    /// taken from the bytes; a table of the same id is replaced. Nothing is installed when
    /// any table is refused.
    pub fn load_checked(&self, bytes: &[u8], limits: &crate::schema::SchemaLimits) -> Result<usize, String> {
        let file: SchemaFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.tables.len() > limits.max_tables as usize {
            return Err(format!("{} tables (max_tables is {})", file.tables.len(), limits.max_tables));
        }
        let (mut ids, mut names) = (HashSet::new(), HashSet::new());
        let mut tables = Vec::with_capacity(file.tables.len());
        for t in file.tables {
            if !ids.insert(t.id) || !names.insert(t.def.name.clone()) {
                return Err(format!("table {:?} (id {}) appears twice", t.def.name, t.id));
            }
            t.def.validate(limits).map_err(|e| e.to_string())?;
            if t.partitions == 0 || t.partitions > limits.max_partitions {
                return Err(format!("table {:?}: {} partitions (allowed 1..={})", t.def.name, t.partitions, limits.max_partitions));
            }
            tables.push(Table::new(t.id, t.version, t.def, t.partitions));
        }
        let mut state = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        state.highest_version = state.highest_version.max(file.highest_version);
        let n = tables.len();
        for t in tables {
            state.highest_version = state.highest_version.max(t.version);
            state.by_id.insert(t.id, Arc::new(t));
        }
        Ok(n)
    }
}

#[derive(serde::Serialize)]
struct SchemaFileRef<'a> {
    highest_version: u32,
    tables: Vec<&'a Table>,
}

#[derive(serde::Deserialize)]
struct SchemaFile {
    highest_version: u32,
    tables: Vec<Table>,
}
