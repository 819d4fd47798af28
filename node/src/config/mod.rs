//! The cluster file: one TOML file describing the whole cluster — its id, nodes, links, the
//! block threads of a data node and which blocks run where, and size limits — read with serde
//! and validated in full at start ([`validate`]), so a bad value stops the node with an error
//! naming the key, the value and what is allowed, instead of failing later.
//!
//! The file is read into raw types (numbers as `u64`, choices as strings) so that every range
//! and choice is checked by our rules and reported the same way; unknown keys are refused by
//! serde, whose message names the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use signals::{BlockInstance, BlockNumber, Limits, NodeId};

use crate::kinds::Kinds;
use crate::runtime::Tuning;

#[cfg(test)]
mod tests;
pub mod validate;

/// Why a cluster file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read cluster file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML for a cluster file (syntax, types, unknown keys).
    #[error("cluster file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of its allowed range or set.
    #[error("`{key}` = {value} is invalid (allowed: {allowed})")]
    Invalid { key: String, value: String, allowed: String },
    /// A node's data directory cannot be used (another cluster's or node's, unreadable).
    #[error("data directory {path}: {message}")]
    DataDir { path: PathBuf, message: String },
}

impl ConfigError {
    /// The key an `Invalid` error names.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub cluster_id: u64,
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub links: Vec<RawLink>,
    #[serde(default)]
    pub threads: RawThreads,
    #[serde(default)]
    pub blocks: Vec<RawBlock>,
    #[serde(default)]
    pub limits: RawLimits,
}

/// `[[nodes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: u64,
    pub kind: String,
    pub host: String,
    pub port: u64,
    /// The RDMA device this node's rdma links use (default: the first one).
    #[serde(default)]
    pub rdma_device: Option<String>,
    /// Where a data node keeps its files (redo log, checkpoints, schema).
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// `[[links]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub nodes: Vec<u64>,
    pub transport: String,
    #[serde(default = "defaults::ring_bytes")]
    pub ring_bytes: u64,
    #[serde(default = "defaults::link_spin_time_us")]
    pub spin_time_us: u64,
    #[serde(default)]
    pub secret: Option<String>,
}

/// `[threads]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreads {
    #[serde(default = "defaults::thread_count")]
    pub count: u64,
    #[serde(default)]
    pub cpus: Option<Vec<u64>>,
    #[serde(default)]
    pub receive: u64,
    #[serde(default)]
    pub send: u64,
    #[serde(default = "defaults::spin_time_us")]
    pub spin_time_us: u64,
    #[serde(default = "defaults::b_signals_per_round")]
    pub b_signals_per_round: u64,
    #[serde(default = "defaults::timers_per_thread")]
    pub timers_per_thread: u64,
}

impl Default for RawThreads {
    fn default() -> Self {
        RawThreads {
            count: defaults::thread_count(),
            cpus: None,
            receive: 0,
            send: 0,
            spin_time_us: defaults::spin_time_us(),
            b_signals_per_round: defaults::b_signals_per_round(),
            timers_per_thread: defaults::timers_per_thread(),
        }
    }
}

/// `[[blocks]]`: the placement keys, and the kind's own settings (every other key, checked by
/// the kind: see [`crate::kinds::Settings`]).
#[derive(Debug, Deserialize)]
pub struct RawBlock {
    pub kind: String,
    /// One instance of this number (default 0)...
    #[serde(default)]
    pub instance: Option<u64>,
    /// ...or instances `0..instances`.
    #[serde(default)]
    pub instances: Option<u64>,
    /// The thread of every instance (default 0)...
    #[serde(default)]
    pub thread: Option<u64>,
    /// ...or one thread per instance.
    #[serde(default)]
    pub threads: Option<Vec<u64>>,
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// `[limits]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "defaults::send_buffer_bytes")]
    pub send_buffer_bytes: u64,
    #[serde(default = "defaults::job_buffer_pages")]
    pub job_buffer_pages: u64,
    #[serde(default = "defaults::job_buffer_page_words")]
    pub job_buffer_page_words: u64,
    #[serde(default = "defaults::max_section_words")]
    pub max_section_words: u64,
    #[serde(default = "defaults::max_signal_words")]
    pub max_signal_words: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            send_buffer_bytes: defaults::send_buffer_bytes(),
            job_buffer_pages: defaults::job_buffer_pages(),
            job_buffer_page_words: defaults::job_buffer_page_words(),
            max_section_words: defaults::max_section_words(),
            max_signal_words: defaults::max_signal_words(),
        }
    }
}

/// Defaults of optional keys.
mod defaults {
    pub fn ring_bytes() -> u64 {
        1 << 20
    }
    pub fn link_spin_time_us() -> u64 {
        20
    }
    pub fn thread_count() -> u64 {
        1
    }
    /// Longer than a block-to-block round trip in spin mode (well under 1 µs in
    /// `benches/pingpong.rs`) and than a sleep/wake cycle (tens of µs there), so a thread in a
    /// conversation does not sleep between messages, while an idle thread stops spinning soon.
    pub fn spin_time_us() -> u64 {
        50
    }
    pub fn b_signals_per_round() -> u64 {
        64
    }
    pub fn timers_per_thread() -> u64 {
        1024
    }
    pub fn send_buffer_bytes() -> u64 {
        4 << 20
    }
    pub fn job_buffer_pages() -> u64 {
        8
    }
    pub fn job_buffer_page_words() -> u64 {
        8192
    }
    pub fn max_section_words() -> u64 {
        2048
    }
    pub fn max_signal_words() -> u64 {
        8192
    }
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Runs blocks (a data node).
    Data,
    /// A client process joining the cluster.
    Api,
}

/// How two nodes are linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// In one process.
    Local,
    /// TCP sockets.
    Tcp,
    /// A shared-memory ring (same host).
    Shm,
    /// RDMA verbs.
    Rdma,
}

/// A validated node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub kind: NodeKind,
    pub host: String,
    pub port: u16,
    /// The RDMA device for this node's rdma links (`None`: the first one).
    pub rdma_device: Option<String>,
    /// Where a data node keeps its files (`None`: in memory only).
    pub data_dir: Option<std::path::PathBuf>,
}

/// A validated link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    pub nodes: [NodeId; 2],
    pub transport: Transport,
    pub ring_bytes: usize,
    pub spin_time_us: u64,
    pub secret: Option<String>,
}

/// Validated thread layout of a data node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadsConfig {
    pub count: usize,
    pub cpus: Option<Vec<usize>>,
    pub receive: usize,
    pub send: usize,
    pub spin_time_us: u64,
    pub b_signals_per_round: usize,
    pub timers_per_thread: usize,
}

/// A validated block placement (one instance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPlacement {
    pub kind: String,
    pub number: BlockNumber,
    pub instance: BlockInstance,
    pub thread: usize,
    /// Which `[[blocks]]` entry placed it (errors name `blocks[entry]`).
    pub entry: usize,
    /// The entry's own settings, for its kind.
    pub settings: BlockSettings,
}

/// A `[[blocks]]` entry's settings (compared as TOML values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockSettings(pub toml::Table);

impl Eq for BlockSettings {}

/// Validated limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    pub send_buffer_bytes: usize,
    pub job_buffer_pages: usize,
    pub job_buffer_page_words: usize,
    pub signal: Limits,
}

/// A validated cluster file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub cluster_id: u32,
    pub nodes: Vec<NodeConfig>,
    pub links: Vec<LinkConfig>,
    pub threads: ThreadsConfig,
    pub blocks: Vec<BlockPlacement>,
    pub limits: LimitsConfig,
}

impl Config {
    /// Reads and validates the cluster file at `path`, knowing the system block kinds.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &Kinds::system())
    }

    /// Reads and validates the cluster file at `path`, knowing the block kinds `kinds`.
    pub fn load_with(path: &Path, kinds: &Kinds) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse_with(&text, path, kinds)
    }

    /// Parses and validates cluster-file text (`path` only names it in errors), knowing the
    /// system block kinds.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, &Kinds::system())
    }

    /// Parses and validates cluster-file text, knowing the block kinds `kinds`: each
    /// `[[blocks]]` entry names one of them, and its settings are checked by that kind.
    pub fn parse_with(text: &str, path: &Path, kinds: &Kinds) -> Result<Config, ConfigError> {
        let raw: RawCluster = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        validate::validate(&raw, kinds)
    }

    /// The node `id`, if it is in the file.
    pub fn node(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The data node a process was told to be (`--node-id`), checked.
    pub fn data_node(&self, id: u64) -> Result<&NodeConfig, ConfigError> {
        let ids: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Data)
            .map(|n| n.id.to_string())
            .collect();
        let invalid = || ConfigError::Invalid {
            key: "--node-id".into(),
            value: id.to_string(),
            allowed: format!("a data node of the cluster file: {}", ids.join(", ")),
        };
        let node_id = u32::try_from(id).ok().and_then(NodeId::new).ok_or_else(invalid)?;
        self.node(node_id).filter(|n| n.kind == NodeKind::Data).ok_or_else(invalid)
    }

    /// The links `id` takes part in.
    pub fn links_of(&self, id: NodeId) -> impl Iterator<Item = &LinkConfig> {
        self.links.iter().filter(move |l| l.nodes.contains(&id))
    }

    /// The runtime knobs of a data node.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            spin_time_us: self.threads.spin_time_us,
            b_signals_per_round: self.threads.b_signals_per_round,
            job_buffer_pages: self.limits.job_buffer_pages,
            job_buffer_page_words: self.limits.job_buffer_page_words,
            timers_per_thread: self.threads.timers_per_thread,
            limits: self.limits.signal,
        }
    }
}
