//! blockwire's database engine, built as blocks on the node runtime in the NDB / RonDB data-node
//! design:
//! - [`dictionary`] (NDB's DBDICT): tables; the master runs each change in two phases on every
//!   data node;
//! - [`storage`] (NDB's DBLQH + DBACC + DBTUP): rows in memory, the hash index on the primary
//!   key, row locks and operation records;
//! - [`coordinator`] (NDB's DBTC): transactions over any partitions by the linear two-phase
//!   commit;
//! - [`membership`] (NDB's QMGR and DBDIH's node-failure part): heartbeats, the agreement on
//!   failed data nodes, arbitration, and the partition map's changes;
//! - [`checkpoint`] (NDB's DBDIH, its global-checkpoint and restart parts): global checkpoints
//!   and the system restart, when data nodes keep their data on disk ([`redo`], [`lcp`],
//!   [`datadir`]).
//!
//! [`protocol`] declares the signals the blocks and the client speak; [`schema`] and [`row`] the
//! table definitions and the byte forms of keys, attributes and rows; [`layout`] the node
//! groups and the partition map every data node and client derives from the cluster file.
//!
//! One [`Engine`] per process holds what the blocks of a node share: the layout (set once the
//! cluster file is read) and, per data node, the catalog of installed tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use node::config::{Config, ConfigError};
use node::kinds::Kinds;
use signals::{BlockNumber, NodeId};

pub mod catalog;
pub mod checkpoint;
pub mod coordinator;
pub mod datadir;
pub mod dictionary;
pub mod error;
pub mod kinds;
pub mod layout;
pub mod lcp;
pub mod index;
pub mod locks;
pub mod membership;
pub mod program;
pub mod pool;
pub mod protocol;
pub mod redo;
pub mod resend;
pub mod row;
pub mod scan;
pub mod schema;
pub mod storage;

pub use catalog::Catalog;
pub use error::ErrorCode;
pub use layout::Layout;

/// The dictionary block's number.
pub const DICTIONARY: BlockNumber = BlockNumber(200);
/// The storage block's number.
pub const STORAGE: BlockNumber = BlockNumber(201);
/// The coordinator block's number.
pub const COORDINATOR: BlockNumber = BlockNumber(202);
/// The checkpoint block's number.
pub const CHECKPOINT: BlockNumber = BlockNumber(203);
/// The membership block's number.
pub const MEMBERSHIP: BlockNumber = BlockNumber(204);
/// The block number an API node's session sends from (and receives at).
pub const API_SESSION: BlockNumber = BlockNumber(900);

/// What the engine blocks of one process share.
#[derive(Debug, Default)]
pub struct Engine {
    layout: OnceLock<Arc<Layout>>,
    catalogs: Mutex<HashMap<NodeId, Arc<Catalog>>>,
    heard: Mutex<HashMap<NodeId, Arc<Heard>>>,
}

/// When a data node's engine blocks last took a signal from each other node (nanoseconds of
/// the node's clock; 0: never). The storage and coordinator blocks note every signal from
/// another node here, and the membership block counts it as a sign of life like a heartbeat:
/// a node whose heartbeat waits in a link behind a backlog of its own transaction traffic is
/// not suspected while that traffic is being taken (NDB counts any signal received, too).
#[derive(Debug)]
pub struct Heard {
    at: Vec<std::sync::atomic::AtomicU64>,
}

impl Heard {
    fn new() -> Heard {
        Heard { at: (0..=usize::from(u8::MAX)).map(|_| std::sync::atomic::AtomicU64::new(0)).collect() }
    }

    /// A signal from `from` was taken at `now_ns`.
    #[inline]
    pub fn note(&self, from: NodeId, now_ns: u64) {
        self.at[usize::from(from.get())].store(now_ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// When a signal from `from` was last taken (0: never).
    pub fn last(&self, from: NodeId) -> u64 {
        self.at[usize::from(from.get())].load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Engine {
    /// A new engine, without its layout yet.
    pub fn new() -> Arc<Engine> {
        Arc::new(Engine::default())
    }

    /// The system block kinds and the engine's (dictionary, storage, coordinator).
    pub fn kinds(self: &Arc<Engine>) -> Kinds {
        kinds::engine_kinds(self)
    }

    /// Reads the layout from the cluster file (validated with [`Engine::kinds`]). Call once,
    /// before starting a data node.
    pub fn configure(&self, config: &Config) -> Result<Arc<Layout>, ConfigError> {
        let layout = Arc::new(Layout::from_config(config)?);
        Ok(self.layout.get_or_init(|| layout).clone())
    }

    /// The table of signals taken from other nodes by data node `me`'s blocks.
    pub fn heard(&self, me: NodeId) -> Arc<Heard> {
        let mut heard = self.heard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        heard.entry(me).or_insert_with(|| Arc::new(Heard::new())).clone()
    }

    /// The layout, once configured.
    pub fn layout(&self) -> Option<Arc<Layout>> {
        self.layout.get().cloned()
    }

    /// What a block of data node `node` needs at its first start phase: the layout and the
    /// node's catalog.
    pub fn attach(&self, node: NodeId) -> (Arc<Layout>, Arc<Catalog>) {
        let Some(layout) = self.layout() else {
            unreachable!("Engine::configure must run before a data node with engine blocks starts")
        };
        (layout, self.catalog(node))
    }

    /// The catalog of data node `node` in this process.
    pub fn catalog(&self, node: NodeId) -> Arc<Catalog> {
        let mut catalogs = self.catalogs.lock().unwrap_or_else(PoisonError::into_inner);
        catalogs.entry(node).or_insert_with(|| Arc::new(Catalog { tables: RwLock::default() })).clone()
    }
}

/// Whether `signal` is the `START_ORD` of phase 1 (when the engine blocks attach).
pub(crate) fn is_first_phase(ctx: &mut node::block::Context<'_>, signal: &signals::SignalView<'_>) -> bool {
    ctx.typed::<signals::gsn::StartOrd>(signal).is_some_and(|s| s.phase == 1)
}

/// Whether an engine-internal signal may be handled: it must come from a data node of
/// `layout`. One that does not (an API node forging a protocol step) is logged and handed to
/// the runtime as unhandled (counted), and `false` is returned.
pub(crate) fn internal_from_data_node(
    layout: Option<&Arc<layout::Layout>>,
    signal: &signals::SignalView<'_>,
    ctx: &mut node::block::Context<'_>,
) -> bool {
    if layout.is_some_and(|l| l.is_data_node(signal.sender().node)) {
        return true;
    }
    tracing::warn!(gsn = %signal.gsn(), sender = %signal.sender(), "engine-internal signal from a node that is not a data node: dropped");
    ctx.unhandled(signal);
    false
}

/// [`internal_from_data_node`], and the sender is not a data node the membership agreement
/// declared dead (a node cut off or hung must not change anything any more).
pub(crate) fn internal_from_live_data_node(
    layout: Option<&Arc<layout::Layout>>,
    live: &layout::LiveMap,
    signal: &signals::SignalView<'_>,
    ctx: &mut node::block::Context<'_>,
) -> bool {
    if !internal_from_data_node(layout, signal, ctx) {
        return false;
    }
    if live.is_alive(signal.sender().node) {
        return true;
    }
    tracing::debug!(gsn = %signal.gsn(), sender = %signal.sender(), "signal from a data node declared dead: dropped");
    ctx.unhandled(signal);
    false
}

/// Whether a `NODE_FAILED` comes from this node's membership block (it is dropped, counted,
/// otherwise).
pub(crate) fn from_own_membership(signal: &signals::SignalView<'_>, ctx: &mut node::block::Context<'_>) -> bool {
    if signal.sender() == layout::Layout::membership_of(ctx.node_id()) {
        return true;
    }
    tracing::warn!(sender = %signal.sender(), "NODE_FAILED not from this node's membership block: dropped");
    ctx.unhandled(signal);
    false
}

/// The partition map a `MEMBER_MAP` carries; `None` (logged, counted as unhandled) when its
/// node lists name a node that is no data node.
pub(crate) fn member_map(
    layout: Option<&Arc<layout::Layout>>,
    signal: &signals::SignalView<'_>,
    ctx: &mut node::block::Context<'_>,
) -> Option<layout::LiveMap> {
    let m = ctx.typed::<protocol::MemberMap>(signal).copied()?;
    let map = layout.and_then(|l| layout::LiveMap::from_words(l, m.version, signal.section(0).unwrap_or(&[])));
    if map.is_none() {
        tracing::warn!(sender = %signal.sender(), "MEMBER_MAP with a bad node list: dropped");
        ctx.unhandled(signal);
    }
    map
}

/// Whether the cluster file places any engine block (a file with only system blocks runs the
/// runtime alone).
pub fn places_engine_blocks(config: &Config) -> bool {
    config.blocks.iter().any(|b| matches!(b.kind.as_str(), "dictionary" | "storage" | "coordinator" | "checkpoint" | "membership"))
}

/// Prepares the data directory of data node `node_id` before it starts (see [`datadir`]);
/// with `initial`, empties it. Does nothing for a cluster kept in memory only.
pub fn prepare_node(layout: &Layout, node_id: u64, initial: bool) -> Result<(), ConfigError> {
    let Some(node) = u32::try_from(node_id).ok().and_then(NodeId::new) else { return Ok(()) };
    let Some(dir) = layout.data_dir(node) else { return Ok(()) };
    datadir::prepare(dir, layout.cluster_id, node, initial)
        .map(|_| ())
        .map_err(|e| ConfigError::DataDir { path: dir.to_owned(), message: e.to_string() })
}

/// Loads a cluster file with the engine's kinds and, when it places engine blocks, configures
/// `engine` from it (the layout is `None` otherwise).
pub fn load_config(
    engine: &Arc<Engine>,
    path: &std::path::Path,
) -> Result<(Config, Option<Arc<Layout>>), ConfigError> {
    let config = Config::load_with(path, &engine.kinds())?;
    let layout = if places_engine_blocks(&config) { Some(engine.configure(&config)?) } else { None };
    Ok((config, layout))
}
