//! Block kinds from any crate: a [`BlockKind`] is a factory the node builder and the
//! configuration validator both know by name. A cluster file places kinds with `[[blocks]]`
//! entries; each entry's keys other than the placement ones (`kind`, `instance` or
//! `instances`, `thread` or `threads`) are the kind's own settings, read through [`Settings`],
//! whose getters check each value and name the key (`blocks[2].memory_bytes`) in the error, and
//! which refuses a key the kind did not read.
//!
//! [`Kinds`] is the set a binary links: [`Kinds::system`] has the echo and statistics blocks;
//! an engine adds its own with [`Kinds::add`], which refuses a second kind of the same name or
//! block number. NDB has a fixed list of blocks compiled into the data node; here the list is
//! whatever the binary registers.

use std::path::PathBuf;
use std::sync::Arc;

use signals::{BlockInstance, BlockNumber, Limits, NodeId, Protocol};

use crate::block::Block;
use crate::blocks;
use crate::config::ConfigError;
use crate::stats::NodeStats;

/// What a kind's factory gets besides its settings.
#[derive(Debug)]
pub struct BlockEnv {
    /// The node the block runs on.
    pub node: NodeId,
    /// The instance being made.
    pub instance: BlockInstance,
    /// The node's counters (what the statistics block reports).
    pub stats: Arc<NodeStats>,
    /// The node's signal limits.
    pub limits: Limits,
}

/// A kind of block the configuration can place.
pub trait BlockKind: Send + Sync + std::fmt::Debug {
    /// The name `[[blocks]] kind = "..."` uses.
    fn name(&self) -> &'static str;

    /// Its block number (part of the protocol: never renumber). 1..=99 are system blocks'.
    fn number(&self) -> BlockNumber;

    /// The protocols its blocks speak (registered and checked at start).
    fn protocols(&self) -> &'static [&'static Protocol] {
        &[]
    }

    /// The last start phase its blocks need (the node runs the largest of its kinds').
    fn start_phases(&self) -> u32 {
        1
    }

    /// Reads its settings and makes one instance. The validator calls it too (and drops the
    /// block), so it should be cheap: size large pools in a start phase, not here.
    fn make(
        &self,
        settings: &mut Settings<'_>,
        env: &BlockEnv,
    ) -> Result<Box<dyn Block>, ConfigError>;
}

/// Why a kind could not join a [`Kinds`] set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// Two kinds of one name.
    #[error("block kind {name:?} is registered twice")]
    Name { name: &'static str },
    /// Two kinds of one number.
    #[error("block kinds {first:?} and {second:?} both have block number {number}")]
    Number { number: u16, first: &'static str, second: &'static str },
}

/// The block kinds a binary links.
#[derive(Clone, Debug, Default)]
pub struct Kinds {
    kinds: Vec<Arc<dyn BlockKind>>,
}

impl Kinds {
    /// No kinds.
    pub fn new() -> Kinds {
        Kinds::default()
    }

    /// The system kinds: `ping` (the echo block) and `stats`.
    pub fn system() -> Kinds {
        let mut kinds = Kinds::new();
        for kind in [Arc::new(blocks::EchoKind) as Arc<dyn BlockKind>, Arc::new(blocks::StatsKind)]
        {
            if let Err(e) = kinds.add(kind) {
                unreachable!("the system kinds are distinct: {e}");
            }
        }
        kinds
    }

    /// Adds `kind`; refuses a name or block number already taken.
    pub fn add(&mut self, kind: Arc<dyn BlockKind>) -> Result<(), KindError> {
        for k in &self.kinds {
            if k.name() == kind.name() {
                return Err(KindError::Name { name: kind.name() });
            }
            if k.number() == kind.number() {
                return Err(KindError::Number {
                    number: kind.number().0,
                    first: k.name(),
                    second: kind.name(),
                });
            }
        }
        self.kinds.push(kind);
        Ok(())
    }

    /// [`Kinds::add`], chained.
    pub fn with(mut self, kind: Arc<dyn BlockKind>) -> Result<Kinds, KindError> {
        self.add(kind)?;
        Ok(self)
    }

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn BlockKind>> {
        self.kinds.iter().find(|k| k.name() == name)
    }

    /// The names, for errors.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    /// Every kind.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn BlockKind>> {
        self.kinds.iter()
    }
}

/// One `[[blocks]]` entry's own settings, read by its kind. Every getter checks the value and
/// names the key in its error; [`Settings::finish`] refuses the keys nobody read.
#[derive(Debug)]
pub struct Settings<'a> {
    table: &'a toml::Table,
    prefix: String,
    /// Every setting a getter asked for, present or not.
    asked: Vec<String>,
}

impl<'a> Settings<'a> {
    /// The name errors give this entry (`blocks[2]`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The settings of `table`, named `prefix` (`blocks[2]`) in errors.
    pub fn new(table: &'a toml::Table, prefix: impl Into<String>) -> Settings<'a> {
        Settings { table, prefix: prefix.into(), asked: Vec::new() }
    }

    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn bad(&self, name: &str, value: &toml::Value, allowed: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: self.key(name),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    fn take(&mut self, name: &str) -> Option<&'a toml::Value> {
        if !self.asked.iter().any(|a| a == name) {
            self.asked.push(name.to_string());
        }
        self.table.get(name)
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn u64(
        &mut self,
        name: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(value) = self.take(name) else { return Ok(default) };
        match value.as_integer().and_then(|v| u64::try_from(v).ok()) {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(self.bad(name, value, format!("an integer in {min}..={max}"))),
        }
    }

    /// A true or false, `default` when absent.
    pub fn bool(&mut self, name: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(value) = self.take(name) else { return Ok(default) };
        value.as_bool().ok_or_else(|| self.bad(name, value, "true or false"))
    }

    /// A string, `None` when absent.
    pub fn string(&mut self, name: &str) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.take(name) else { return Ok(None) };
        match value.as_str() {
            Some(s) => Ok(Some(s.to_string())),
            None => Err(self.bad(name, value, "a string")),
        }
    }

    /// A directory path (not empty), `None` when absent. Whether it exists is the kind's call.
    pub fn path(&mut self, name: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(value) = self.take(name) else { return Ok(None) };
        match value.as_str() {
            Some(s) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
            _ => Err(self.bad(name, value, "a path, as a non-empty string")),
        }
    }

    /// A size in bytes in `min..=max`: an integer, or a string with a K, M or G suffix
    /// (powers of 1024), `default` when absent.
    pub fn bytes(
        &mut self,
        name: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(value) = self.take(name) else { return Ok(default) };
        let parsed = match value {
            toml::Value::Integer(v) => u64::try_from(*v).ok(),
            toml::Value::String(s) => parse_size(s),
            _ => None,
        };
        match parsed {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(self.bad(
                name,
                value,
                format!(
                    "a size in bytes from {min} to {max} (an integer, or a string like \"64M\")"
                ),
            )),
        }
    }

    /// Refuses any key no getter read, naming it.
    pub fn finish(&self) -> Result<(), ConfigError> {
        let mut unread: Vec<&String> =
            self.table.keys().filter(|k| !self.asked.iter().any(|a| a == *k)).collect();
        unread.sort();
        match unread.first() {
            None => Ok(()),
            Some(k) => Err(ConfigError::Invalid {
                key: self.key(k),
                value: self.table[k.as_str()].to_string(),
                allowed: format!(
                    "no such setting for this block kind (its settings: {})",
                    if self.asked.is_empty() { "none".to_string() } else { self.asked.join(", ") }
                ),
            }),
        }
    }
}

/// `"64M"` as bytes (K, M, G: powers of 1024; no suffix: bytes).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.chars().last()? {
        'K' | 'k' => (&text[..text.len() - 1], 10),
        'M' | 'm' => (&text[..text.len() - 1], 20),
        'G' | 'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_key_and_refuse_unread_ones() {
        let table: toml::Table =
            toml::from_str("memory_bytes = \"2M\"\ncount = 0\nextra = 1\n").unwrap();
        let mut s = Settings::new(&table, "blocks[3]");
        assert_eq!(s.bytes("memory_bytes", 0, 1, 1 << 30).unwrap(), 2 << 20);
        let e = s.u64("count", 1, 1, 8).unwrap_err();
        assert_eq!(e.key(), Some("blocks[3].count"));
        assert!(e.to_string().contains("1..=8"), "{e}");
        let e = s.finish().unwrap_err();
        assert_eq!(e.key(), Some("blocks[3].extra"));
        assert!(e.to_string().contains("memory_bytes"), "{e}");
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn a_second_kind_of_one_name_or_number_is_refused() {
        let mut kinds = Kinds::system();
        assert!(matches!(
            kinds.add(Arc::new(blocks::EchoKind)),
            Err(KindError::Name { name: "ping" })
        ));
        assert_eq!(kinds.names(), vec!["ping", "stats"]);
    }
}
