//! The cluster's engine layout, read from the cluster file the same way by every data node and
//! every client: the data nodes in id order, node groups of `replicas` of them, how many
//! storage and coordinator instances each data node runs, the settings of each engine block
//! kind, and the partition map (NDB's DBDIH distribution: which node group and which replica of
//! it holds each partition of a table).
//!
//! The partition map is one versioned structure: partition `p` of a table belongs to node group
//! `p % groups`; within the group the primary is member `(p / groups) % replicas` (so primaries
//! alternate), the backup the next member; on a node the partition lives in storage instance
//! `(p / groups) % storage_instances`. Version 1 is the map a cluster starts with; the
//! membership work changes it at run time (a backup promoted) and raises the version.

use std::sync::Arc;

use node::config::{Config, ConfigError, NodeKind};
use node::kinds::Settings;
use signals::{BlockInstance, BlockRef, NodeId};

use crate::redo::{IoUringMode, RedoSettings};
use crate::schema::SchemaLimits;
use crate::{CHECKPOINT, COORDINATOR, DICTIONARY, MEMBERSHIP, STORAGE};

/// The dictionary's settings (`[[blocks]] kind = "dictionary"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DictionarySettings {
    /// Replicas of each partition: 1 or 2.
    pub replicas: usize,
    /// Table limits.
    pub limits: SchemaLimits,
}

impl DictionarySettings {
    /// Reads the settings, naming the key of any bad one.
    pub fn read(s: &mut Settings<'_>) -> Result<DictionarySettings, ConfigError> {
        let d = SchemaLimits::default();
        Ok(DictionarySettings {
            replicas: s.u64("replicas", 2, 1, 2)? as usize,
            limits: SchemaLimits {
                max_tables: s.u64("max_tables", u64::from(d.max_tables), 1, 65_535)? as u32,
                max_columns: s.u64("max_columns", u64::from(d.max_columns), 1, 1024)? as u32,
                max_row_bytes: s.bytes("max_row_bytes", u64::from(d.max_row_bytes), 16, 1 << 20)? as u32,
                max_key_bytes: s.bytes("max_key_bytes", u64::from(d.max_key_bytes), 4, 4096)? as u32,
                max_partitions: s.u64("max_partitions", u64::from(d.max_partitions), 1, 65_535)? as u32,
                default_partitions: s.u64("default_partitions", u64::from(d.default_partitions), 1, 65_535)?
                    as u32,
                max_indexes: s.u64("max_indexes", u64::from(d.max_indexes), 0, 64)? as u32,
            },
        })
    }
}

/// The storage block's settings (`[[blocks]] kind = "storage"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageSettings {
    /// Bytes of rows (keys, images and per-row overhead) an instance may hold.
    pub memory_bytes: u64,
    /// Operation records of an instance (operations in flight on it).
    pub max_operations: u32,
    /// Scan records of an instance (partition scans open on it).
    pub max_scans: u32,
    /// Groups one partition's aggregate may hold (one more is `TooManyGroups`).
    pub scan_max_groups: u32,
    /// Row slots an index build examines per step, between which other signals run.
    pub index_build_step_slots: u32,
    /// The redo log (used when the node has a `data_dir`): `redo_files`, `redo_file_bytes`,
    /// `redo_buffer_bytes`, `redo_io_uring`.
    pub redo: RedoSettings,
    /// Bytes per second a local checkpoint writes at most (`checkpoint_bytes_per_s`).
    pub checkpoint_bytes_per_s: u64,
    /// A local checkpoint starts when this share of the redo log (percent) is in use, or
    /// `checkpoint_interval_ms` after the last one when anything changed.
    pub checkpoint_log_percent: u32,
    /// The longest time between local checkpoints while rows change (`checkpoint_interval_ms`).
    pub checkpoint_interval_ms: u64,
    /// Bytes of rows per second a primary sends at most to one restarting replica
    /// (`restart_copy_bytes_per_s`): a node restart's copy is throttled so the load goes on.
    pub restart_copy_bytes_per_s: u64,
}

impl StorageSettings {
    /// Reads the settings, naming the key of any bad one.
    pub fn read(s: &mut Settings<'_>) -> Result<StorageSettings, ConfigError> {
        Ok(StorageSettings {
            memory_bytes: s.bytes("memory_bytes", 256 << 20, 1 << 16, 1 << 40)?,
            max_operations: s.u64("max_operations", 65_536, 16, 1 << 24)? as u32,
            max_scans: s.u64("max_scans", 256, 1, 1 << 16)? as u32,
            scan_max_groups: s.u64("scan_max_groups", 65_536, 1, 1 << 24)? as u32,
            index_build_step_slots: s.u64("index_build_step_slots", 16_384, 1, 1 << 24)? as u32,
            redo: read_redo(s)?,
            checkpoint_bytes_per_s: s.bytes("checkpoint_bytes_per_s", 64 << 20, 1 << 16, 1 << 40)?,
            checkpoint_log_percent: s.u64("checkpoint_log_percent", 25, 1, 90)? as u32,
            checkpoint_interval_ms: s.u64("checkpoint_interval_ms", 60_000, 100, 86_400_000)?,
            restart_copy_bytes_per_s: s.bytes("restart_copy_bytes_per_s", 256 << 20, 1 << 16, 1 << 40)?,
        })
    }
}

fn read_redo(s: &mut Settings<'_>) -> Result<RedoSettings, ConfigError> {
    let d = RedoSettings::default();
    let io_uring = match s.string("redo_io_uring")?.as_deref() {
        None | Some("auto") => IoUringMode::Auto,
        Some("off") => IoUringMode::Off,
        Some(other) => {
            return Err(invalid(format!("{}.redo_io_uring", s.prefix()), format!("{other:?}"), "\"auto\" or \"off\""))
        }
    };
    let redo = RedoSettings {
        files: s.u64("redo_files", u64::from(d.files), 1, u64::from(crate::redo::settings::MAX_FILES))? as u32,
        file_bytes: s.bytes("redo_file_bytes", d.file_bytes, crate::redo::settings::MIN_FILE_BYTES, crate::redo::settings::MAX_FILE_BYTES)?,
        buffer_bytes: s.bytes("redo_buffer_bytes", d.buffer_bytes, crate::redo::settings::MIN_BUFFER_BYTES, crate::redo::settings::MAX_BUFFER_BYTES)?,
        io_uring,
    };
    redo.validate().map_err(|e| match e {
        crate::redo::RedoError::Setting { key, value, allowed } => invalid(format!("{}.redo_{key}", s.prefix()), value, allowed),
        other => invalid(format!("{}.redo", s.prefix()), other, "valid redo settings"),
    })?;
    Ok(redo)
}

/// The checkpoint block's settings (`[[blocks]] kind = "checkpoint"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// The master opens a new global checkpoint this often (NDB's `TimeBetweenGlobalCheckpoints`).
    pub gcp_interval_ms: u64,
}

impl CheckpointSettings {
    /// Reads the settings, naming the key of any bad one.
    pub fn read(s: &mut Settings<'_>) -> Result<CheckpointSettings, ConfigError> {
        Ok(CheckpointSettings { gcp_interval_ms: s.u64("gcp_interval_ms", 100, 1, 60_000)? })
    }
}

/// The membership block's settings (`[[blocks]] kind = "membership"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipSettings {
    /// Each data node sends a heartbeat to its right neighbour in the ring this often.
    pub heartbeat_interval_ms: u64,
    /// Heartbeats missed in a row before the left neighbour is suspected dead.
    pub heartbeat_missed: u32,
    /// The API node that decides which side of a possible network partition lives (`None`:
    /// no arbitration; survivors without a majority go on).
    pub arbitrator: Option<NodeId>,
    /// How long survivors wait for the arbitrator's answer before they stop.
    pub arbitration_timeout_ms: u64,
}

impl MembershipSettings {
    /// Reads the settings, naming the key of any bad one.
    pub fn read(s: &mut Settings<'_>) -> Result<MembershipSettings, ConfigError> {
        let arbitrator = s.u64("arbitrator", 0, 0, 255)?;
        Ok(MembershipSettings {
            heartbeat_interval_ms: s.u64("heartbeat_interval_ms", 100, 5, 60_000)?,
            heartbeat_missed: s.u64("heartbeat_missed", 3, 2, 100)? as u32,
            arbitrator: u32::try_from(arbitrator).ok().and_then(NodeId::new),
            arbitration_timeout_ms: s.u64("arbitration_timeout_ms", 2000, 10, 600_000)?,
        })
    }
}

/// The coordinator's settings (`[[blocks]] kind = "coordinator"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorSettings {
    /// Transaction records of an instance.
    pub max_transactions: u32,
    /// Operations one transaction may hold.
    pub max_operations_per_transaction: u32,
    /// A lock wait (an operation unanswered) longer than this aborts the transaction.
    pub transaction_deadlock_timeout_ms: u64,
    /// An open transaction idle longer than this is aborted (0: never).
    pub transaction_inactive_timeout_ms: u64,
    /// Scan records of an instance (scans open through it).
    pub max_scans: u32,
    /// A scan whose client has not asked for its next batch for this long is closed (0: never).
    pub scan_inactive_timeout_ms: u64,
    /// Groups a merged aggregate may hold (one more is `TooManyGroups`); also sent to storage.
    pub scan_max_groups: u32,
}

impl CoordinatorSettings {
    /// Reads the settings, naming the key of any bad one.
    pub fn read(s: &mut Settings<'_>) -> Result<CoordinatorSettings, ConfigError> {
        Ok(CoordinatorSettings {
            max_transactions: s.u64("max_transactions", 16_384, 1, 1 << 22)? as u32,
            max_operations_per_transaction: s.u64("max_operations_per_transaction", 65_536, 1, 1 << 22)?
                as u32,
            transaction_deadlock_timeout_ms: s.u64("transaction_deadlock_timeout_ms", 1200, 10, 3_600_000)?,
            transaction_inactive_timeout_ms: s.u64("transaction_inactive_timeout_ms", 10_000, 0, 86_400_000)?,
            max_scans: s.u64("max_scans", 1024, 1, 1 << 20)? as u32,
            scan_inactive_timeout_ms: s.u64("scan_inactive_timeout_ms", 10_000, 0, 86_400_000)?,
            scan_max_groups: s.u64("scan_max_groups", 65_536, 1, 1 << 24)? as u32,
        })
    }
}

/// The two (or one) replicas of a partition: storage blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas {
    /// The primary's storage block.
    pub primary: BlockRef,
    /// The backup's, with two replicas.
    pub backup: Option<BlockRef>,
}

/// The engine layout of a cluster file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Data nodes, in id order.
    pub data_nodes: Vec<NodeId>,
    /// Node groups: `replicas` data nodes each, in id order.
    pub node_groups: Vec<Vec<NodeId>>,
    /// The dictionary's settings.
    pub dictionary: DictionarySettings,
    /// Storage instances on each data node.
    pub storage_instances: u8,
    /// Coordinator instances on each data node.
    pub coordinator_instances: u8,
    /// The storage blocks' settings (the first entry's).
    pub storage: StorageSettings,
    /// The coordinators' settings (the first entry's).
    pub coordinator: CoordinatorSettings,
    /// The partition map's version.
    pub map_version: u32,
    /// The largest long section, in bytes (rows and keys must fit).
    pub max_section_bytes: usize,
    /// The cluster file's `cluster_id` (written into every data file).
    pub cluster_id: u64,
    /// Each data node's `data_dir`, in `data_nodes` order: all set (durable) or none.
    pub data_dirs: Vec<Option<std::path::PathBuf>>,
    /// The checkpoint block's settings, when the cluster keeps its data on disk.
    pub checkpoint: Option<CheckpointSettings>,
    /// The membership block's settings.
    pub membership: MembershipSettings,
}

fn invalid(key: String, value: impl ToString, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, value: value.to_string(), allowed: allowed.into() }
}

impl Layout {
    /// Reads the layout from a validated cluster file (placed with the engine's kinds).
    pub fn from_config(config: &Config) -> Result<Layout, ConfigError> {
        let mut data_nodes: Vec<NodeId> =
            config.nodes.iter().filter(|n| n.kind == NodeKind::Data).map(|n| n.id).collect();
        data_nodes.sort();
        let of = |name: &'static str| config.blocks.iter().filter(move |b| b.kind == name);
        let entry = |name: &'static str| {
            of(name).next().ok_or_else(|| {
                invalid("blocks".into(), format!("no {name} block"), format!("a [[blocks]] entry of kind \"{name}\""))
            })
        };
        let dict_entry = entry("dictionary")?;
        let mut s = Settings::new(&dict_entry.settings.0, format!("blocks[{}]", dict_entry.entry));
        let dictionary = DictionarySettings::read(&mut s)?;
        let storage_entry = entry("storage")?;
        let storage = StorageSettings::read(&mut Settings::new(
            &storage_entry.settings.0,
            format!("blocks[{}]", storage_entry.entry),
        ))?;
        let coordinator_entry = entry("coordinator")?;
        let coordinator = CoordinatorSettings::read(&mut Settings::new(
            &coordinator_entry.settings.0,
            format!("blocks[{}]", coordinator_entry.entry),
        ))?;
        let count = |name: &'static str| -> Result<u8, ConfigError> {
            let mut instances: Vec<u8> = of(name).map(|b| b.instance.0).collect();
            instances.sort();
            if instances.iter().enumerate().any(|(i, n)| usize::from(*n) != i) {
                return Err(invalid(
                    "blocks".into(),
                    format!("{name} instances {instances:?}"),
                    "instances 0, 1, ... without gaps",
                ));
            }
            Ok(instances.len() as u8)
        };
        if of("dictionary").count() != 1 || dict_entry.instance != BlockInstance(0) {
            return Err(invalid(
                format!("blocks[{}]", dict_entry.entry),
                "dictionary",
                "exactly one dictionary block, instance 0",
            ));
        }
        let replicas = dictionary.replicas;
        if data_nodes.is_empty() || data_nodes.len() % replicas != 0 {
            return Err(invalid(
                format!("blocks[{}].replicas", dict_entry.entry),
                replicas,
                format!("a divisor of the number of data nodes ({})", data_nodes.len()),
            ));
        }
        let max_section_bytes = config.limits.signal.max_section_words() * 4 - 4;
        if dictionary.limits.max_row_bytes as usize > max_section_bytes {
            return Err(invalid(
                format!("blocks[{}].max_row_bytes", dict_entry.entry),
                dictionary.limits.max_row_bytes,
                format!("at most limits.max_section_words * 4 - 4 = {max_section_bytes}"),
            ));
        }
        let node_groups = data_nodes.chunks(replicas).map(<[NodeId]>::to_vec).collect();
        let (data_dirs, checkpoint) = durability(config, &data_nodes)?;
        let membership_entry = entry("membership")?;
        if of("membership").count() != 1 || membership_entry.instance != BlockInstance(0) {
            return Err(invalid(
                format!("blocks[{}]", membership_entry.entry),
                "membership",
                "exactly one membership block, instance 0",
            ));
        }
        let membership = MembershipSettings::read(&mut Settings::new(
            &membership_entry.settings.0,
            format!("blocks[{}]", membership_entry.entry),
        ))?;
        if let Some(a) = membership.arbitrator {
            if !config.nodes.iter().any(|n| n.id == a && n.kind == NodeKind::Api) {
                return Err(invalid(
                    format!("blocks[{}].arbitrator", membership_entry.entry),
                    a,
                    "the id of an API node of the cluster file",
                ));
            }
        }
        Ok(Layout {
            data_nodes,
            node_groups,
            dictionary,
            storage_instances: count("storage")?,
            coordinator_instances: count("coordinator")?,
            storage,
            coordinator,
            map_version: 1,
            max_section_bytes,
            cluster_id: u64::from(config.cluster_id),
            data_dirs,
            checkpoint,
            membership,
        })
    }

    /// Whether the cluster keeps a redo log and checkpoints (every data node has a `data_dir`).
    pub fn durable(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// The `data_dir` of data node `node`.
    pub fn data_dir(&self, node: NodeId) -> Option<&std::path::Path> {
        let i = self.data_nodes.iter().position(|n| *n == node)?;
        self.data_dirs.get(i)?.as_deref()
    }

    /// The membership block of `node`.
    pub fn membership_of(node: NodeId) -> BlockRef {
        BlockRef::new(node, MEMBERSHIP, BlockInstance(0))
    }

    /// The checkpoint block of `node`.
    pub fn checkpoint_of(node: NodeId) -> BlockRef {
        BlockRef::new(node, CHECKPOINT, BlockInstance(0))
    }

    /// The replicas of partition `partition` in the map a cluster starts with (every data
    /// node alive: version 1).
    pub fn replicas(&self, partition: u32) -> Replicas {
        match self.replicas_among(partition, |_| true) {
            Some(r) => r,
            None => unreachable!("a node group has at least one member"),
        }
    }

    /// The replicas of partition `partition` among the data nodes `alive` accepts: the group's
    /// members in their turn order from the partition's first primary, dead ones skipped (a
    /// dead primary's backup is promoted). `None` when every member of the group is dead.
    pub fn replicas_among(&self, partition: u32, alive: impl Fn(NodeId) -> bool) -> Option<Replicas> {
        let groups = self.node_groups.len().max(1) as u32;
        let group = &self.node_groups[(partition % groups) as usize];
        let turn = (partition / groups) as usize;
        let instance = BlockInstance((turn % usize::from(self.storage_instances.max(1))) as u8);
        let mut live = (0..group.len()).map(|i| group[(turn + i) % group.len()]).filter(|n| alive(*n));
        let at = |n: NodeId| BlockRef::new(n, STORAGE, instance);
        let primary = at(live.next()?);
        Some(Replicas { primary, backup: live.next().map(at) })
    }

    /// The node group `node` belongs to.
    pub fn group_of(&self, node: NodeId) -> Option<usize> {
        self.node_groups.iter().position(|g| g.contains(&node))
    }

    /// Whether `node` is a data node.
    pub fn is_data_node(&self, node: NodeId) -> bool {
        self.data_nodes.contains(&node)
    }

    /// The dictionary block of `node`.
    pub fn dictionary_of(node: NodeId) -> BlockRef {
        BlockRef::new(node, DICTIONARY, BlockInstance(0))
    }

    /// Coordinator `instance` of `node`.
    pub fn coordinator_of(&self, node: NodeId, instance: u64) -> BlockRef {
        let n = u64::from(self.coordinator_instances.max(1));
        BlockRef::new(node, COORDINATOR, BlockInstance((instance % n) as u8))
    }
}

/// Each data node's `data_dir` and the checkpoint block's settings: every data node has a
/// `data_dir` and one checkpoint block (instance 0) is placed, or neither.
fn durability(
    config: &Config,
    data_nodes: &[NodeId],
) -> Result<(Vec<Option<std::path::PathBuf>>, Option<CheckpointSettings>), ConfigError> {
    let dirs: Vec<Option<std::path::PathBuf>> = data_nodes
        .iter()
        .map(|id| config.nodes.iter().find(|n| n.id == *id).and_then(|n| n.data_dir.clone()))
        .collect();
    let entries: Vec<_> = config.blocks.iter().filter(|b| b.kind == "checkpoint").collect();
    let with_dir = dirs.iter().filter(|d| d.is_some()).count();
    if with_dir != 0 && with_dir != dirs.len() {
        let missing = data_nodes.iter().zip(&dirs).find(|(_, d)| d.is_none()).map(|(n, _)| *n);
        return Err(invalid(
            "nodes.data_dir".into(),
            format!("missing on data node {}", missing.map_or(0, NodeId::get)),
            "a data_dir on every data node, or on none (in memory only)",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = dirs.iter().flatten().find(|d| !seen.insert(d.as_path())) {
        return Err(invalid("nodes.data_dir".into(), dup.display(), "a different data_dir for each data node"));
    }
    match (with_dir, entries.as_slice()) {
        (0, []) => Ok((dirs, None)),
        (0, [e, ..]) => Err(invalid(
            format!("blocks[{}].kind", e.entry),
            "checkpoint",
            "a checkpoint block only with a data_dir on every data node",
        )),
        (_, [e]) if e.instance == BlockInstance(0) => {
            let mut s = Settings::new(&e.settings.0, format!("blocks[{}]", e.entry));
            Ok((dirs, Some(CheckpointSettings::read(&mut s)?)))
        }
        _ => Err(invalid(
            "blocks".into(),
            format!("{} checkpoint blocks", entries.len()),
            "exactly one [[blocks]] entry of kind \"checkpoint\" (instance 0) when data nodes have a data_dir",
        )),
    }
}

/// A shared, replaceable layout handle.
pub type SharedLayout = Arc<Layout>;

/// The partition map as one block sees it: the layout's map with the data nodes the
/// membership agreement declared dead left out (their partitions' backups promoted), the data
/// nodes restarting (admitted, copying their partitions: alive, but never a primary nor read
/// from), and the map's version (1 at start, raised by each agreed failure and each step of a
/// node restart). Each block keeps its own copy, changed only by the signals of its node's
/// membership block (`NODE_FAILED`, `MEMBER_MAP`), so it changes between two signals and never
/// under a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveMap {
    /// The map's version.
    pub version: u32,
    dead: std::collections::BTreeSet<NodeId>,
    starting: std::collections::BTreeSet<NodeId>,
    /// Restarted nodes serving again, in the order they did (the youngest last): the president
    /// is the oldest serving node, so a restarted one comes after every node that never left.
    rejoined: Vec<NodeId>,
}

impl Default for LiveMap {
    fn default() -> LiveMap {
        LiveMap {
            version: 1,
            dead: std::collections::BTreeSet::new(),
            starting: std::collections::BTreeSet::new(),
            rejoined: Vec::new(),
        }
    }
}

impl LiveMap {
    /// A map of `version` with these dead and restarting data nodes, and these restarted
    /// ones in the order they served again.
    pub fn from_parts(
        version: u32,
        dead: impl IntoIterator<Item = NodeId>,
        starting: impl IntoIterator<Item = NodeId>,
        rejoined: impl IntoIterator<Item = NodeId>,
    ) -> LiveMap {
        let dead: std::collections::BTreeSet<NodeId> = dead.into_iter().collect();
        let starting: std::collections::BTreeSet<NodeId> = starting.into_iter().filter(|n| !dead.contains(n)).collect();
        let mut order = Vec::new();
        for n in rejoined {
            if !dead.contains(&n) && !starting.contains(&n) && !order.contains(&n) {
                order.push(n);
            }
        }
        LiveMap { version, dead, starting, rejoined: order }
    }

    /// Takes `other` when its version is not older (a map the president sent is the truth
    /// of its version); whether it did.
    pub fn adopt(&mut self, other: &LiveMap) -> bool {
        if other.version < self.version {
            return false;
        }
        *self = other.clone();
        true
    }

    /// Whether data node `node` is alive in this map (a restarting node is).
    pub fn is_alive(&self, node: NodeId) -> bool {
        !self.dead.contains(&node)
    }

    /// Whether data node `node` is alive and serves its partitions (not restarting).
    pub fn is_serving(&self, node: NodeId) -> bool {
        self.is_alive(node) && !self.starting.contains(&node)
    }

    /// Whether data node `node` is restarting (admitted, copying its partitions).
    pub fn is_starting(&self, node: NodeId) -> bool {
        self.starting.contains(&node)
    }

    /// The data nodes declared dead.
    pub fn dead(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dead.iter().copied()
    }

    /// The data nodes restarting.
    pub fn starting(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.starting.iter().copied()
    }

    /// Records `node` dead as of map `version`; whether it was alive before.
    pub fn mark_dead(&mut self, node: NodeId, version: u32) -> bool {
        self.version = self.version.max(version);
        self.starting.remove(&node);
        self.rejoined.retain(|n| *n != node);
        self.dead.insert(node)
    }

    /// Records `node` admitted and restarting as of map `version`.
    pub fn mark_starting(&mut self, node: NodeId, version: u32) {
        self.version = self.version.max(version);
        self.dead.remove(&node);
        self.rejoined.retain(|n| *n != node);
        self.starting.insert(node);
    }

    /// Records `node` serving again as of map `version` (its restart is done).
    pub fn mark_started(&mut self, node: NodeId, version: u32) {
        self.version = self.version.max(version);
        self.dead.remove(&node);
        if self.starting.remove(&node) && !self.rejoined.contains(&node) {
            self.rejoined.push(node);
        }
    }

    /// The map's node lists as one section: the dead count and nodes, the restarting count
    /// and nodes, then the rejoined nodes in order (`MEMBER_MAP`, `MEMBER_ADMIT`,
    /// `FAIL_COMMIT`).
    pub fn to_words(&self) -> Vec<u32> {
        let id = |n: &NodeId| u32::from(n.get());
        let mut w = vec![self.dead.len() as u32];
        w.extend(self.dead.iter().map(id));
        w.push(self.starting.len() as u32);
        w.extend(self.starting.iter().map(id));
        w.extend(self.rejoined.iter().map(id));
        w
    }

    /// A map of `version` from [`LiveMap::to_words`]; `None` when the words are cut short or
    /// a word names no data node of `layout`.
    pub fn from_words(layout: &Layout, version: u32, words: &[u32]) -> Option<LiveMap> {
        let node = |w: &u32| NodeId::new(*w).filter(|n| layout.is_data_node(*n));
        let (&n_dead, rest) = words.split_first()?;
        let dead = rest.get(..n_dead as usize)?;
        let (&n_starting, rest) = rest.get(n_dead as usize..)?.split_first()?;
        let starting = rest.get(..n_starting as usize)?;
        let rejoined = rest.get(n_starting as usize..)?;
        let list = |l: &[u32]| l.iter().map(node).collect::<Option<Vec<NodeId>>>();
        Some(LiveMap::from_parts(version, list(dead)?, list(starting)?, list(rejoined)?))
    }

    /// Takes `other` when it is a newer version (the membership's map replaces a block's
    /// copy); whether it did.
    pub fn replace_if_newer(&mut self, other: &LiveMap) -> bool {
        if other.version <= self.version {
            return false;
        }
        *self = other.clone();
        true
    }

    /// The replicas of `partition` among the serving data nodes (`None`: none serves).
    pub fn replicas(&self, layout: &Layout, partition: u32) -> Option<Replicas> {
        layout.replicas_among(partition, |n| self.is_serving(n))
    }

    /// The live data nodes (restarting ones included), in id order.
    pub fn alive<'a>(&'a self, layout: &'a Layout) -> impl Iterator<Item = NodeId> + 'a {
        layout.data_nodes.iter().copied().filter(|n| self.is_alive(*n))
    }

    /// The president: the oldest serving data node. Every data node starts together, so
    /// among those that never left the lowest id is the oldest; a restarted node is younger
    /// than all of them, and than every node restarted before it.
    pub fn president(&self, layout: &Layout) -> Option<NodeId> {
        self.president_among(layout, |_| true)
    }

    /// [`LiveMap::president`] among the nodes `trusted` accepts (the membership block leaves
    /// out the nodes it suspects).
    pub fn president_among(&self, layout: &Layout, trusted: impl Fn(NodeId) -> bool) -> Option<NodeId> {
        self.alive(layout)
            .find(|n| self.is_serving(*n) && !self.rejoined.contains(n) && trusted(*n))
            .or_else(|| self.rejoined.iter().copied().find(|n| trusted(*n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(nodes: &[u32], replicas: usize, instances: u8) -> Layout {
        let data_nodes: Vec<NodeId> = nodes.iter().filter_map(|n| NodeId::new(*n)).collect();
        Layout {
            node_groups: data_nodes.chunks(replicas).map(<[NodeId]>::to_vec).collect(),
            data_nodes,
            dictionary: DictionarySettings { replicas, limits: SchemaLimits::default() },
            storage_instances: instances,
            coordinator_instances: 1,
            storage: StorageSettings {
                memory_bytes: 1 << 20,
                max_operations: 16,
                max_scans: 1,
                scan_max_groups: 1,
                index_build_step_slots: 1,
                redo: RedoSettings::default(),
                checkpoint_bytes_per_s: 1 << 20,
                checkpoint_log_percent: 25,
                checkpoint_interval_ms: 1000,
                restart_copy_bytes_per_s: 1 << 20,
            },
            coordinator: CoordinatorSettings {
                max_transactions: 1,
                max_operations_per_transaction: 1,
                transaction_deadlock_timeout_ms: 1200,
                transaction_inactive_timeout_ms: 0,
                max_scans: 1,
                scan_inactive_timeout_ms: 0,
                scan_max_groups: 1,
            },
            map_version: 1,
            max_section_bytes: 8188,
            cluster_id: 1,
            data_dirs: vec![None; nodes.len()],
            checkpoint: None,
            membership: MembershipSettings {
                heartbeat_interval_ms: 100,
                heartbeat_missed: 3,
                arbitrator: None,
                arbitration_timeout_ms: 1000,
            },
        }
    }

    #[test]
    fn primaries_alternate_within_a_group_and_groups_share_partitions() {
        let l = layout(&[1, 2, 3, 4], 2, 2);
        let n = |r: BlockRef| r.node.get();
        // Partition 0: group 0 (1, 2), primary 1; 1: group 1 (3, 4), primary 3;
        // 2: group 0, primary 2; 3: group 1, primary 4.
        let seen: Vec<(u8, u8)> =
            (0..4).map(|p| l.replicas(p)).map(|r| (n(r.primary), n(r.backup.unwrap()))).collect();
        assert_eq!(seen, vec![(1, 2), (3, 4), (2, 1), (4, 3)]);
        assert_eq!(l.replicas(0).primary.instance, BlockInstance(0));
        assert_eq!(l.replicas(2).primary.instance, BlockInstance(1));
        assert_eq!(l.replicas(4).primary.instance, BlockInstance(0));
        let one = layout(&[1, 2], 1, 1);
        assert_eq!(one.replicas(1).backup, None);
        assert_eq!(n(one.replicas(1).primary), 2);
    }

    #[test]
    fn a_dead_primary_s_backup_is_promoted_and_a_dead_group_holds_nothing() {
        let l = layout(&[1, 2, 3, 4], 2, 2);
        let mut live = LiveMap::default();
        assert!(live.mark_dead(NodeId::new(1).unwrap(), 2));
        assert!(!live.mark_dead(NodeId::new(1).unwrap(), 2));
        assert_eq!(live.version, 2);
        let n = |r: BlockRef| r.node.get();
        let seen: Vec<(u8, Option<u8>)> =
            (0..4).map(|p| live.replicas(&l, p).unwrap()).map(|r| (n(r.primary), r.backup.map(n))).collect();
        // Partitions 0 and 2 (group 1, 2) are on node 2 alone; group 3, 4 is untouched.
        assert_eq!(seen, vec![(2, None), (3, Some(4)), (2, None), (4, Some(3))]);
        assert_eq!(live.replicas(&l, 2).unwrap().primary.instance, l.replicas(2).primary.instance);
        assert_eq!(live.president(&l).map(NodeId::get), Some(2));
        live.mark_dead(NodeId::new(2).unwrap(), 3);
        assert_eq!(live.replicas(&l, 0), None);
        assert_eq!(live.replicas(&l, 1).map(|r| n(r.primary)), Some(3));
    }

    #[test]
    fn a_restarting_node_is_alive_but_never_a_primary_nor_the_president_until_it_has_started() {
        let l = layout(&[1, 2, 3, 4], 2, 1);
        let one = NodeId::new(1).unwrap();
        let mut live = LiveMap::default();
        live.mark_dead(one, 2);
        live.mark_starting(one, 3);
        assert!(live.is_alive(one) && live.is_starting(one) && !live.is_serving(one));
        let n = |r: BlockRef| r.node.get();
        assert_eq!(live.replicas(&l, 0).map(|r| (n(r.primary), r.backup.map(n))), Some((2, None)));
        assert_eq!(live.president(&l).map(NodeId::get), Some(2));
        assert_eq!(live.alive(&l).map(NodeId::get).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(live.to_words(), vec![0, 1, 1]);
        assert_eq!(LiveMap::from_words(&l, 3, &live.to_words()).unwrap(), live);
        assert!(LiveMap::from_words(&l, 3, &[1, 9, 0]).is_none(), "a word naming no data node is refused");
        assert!(LiveMap::from_words(&l, 3, &[2, 1]).is_none(), "a list cut short is refused");
        assert!(LiveMap::from_words(&l, 3, &[]).is_none());
        let mut copy = LiveMap::default();
        assert!(copy.replace_if_newer(&live) && !copy.replace_if_newer(&live));
        live.mark_started(one, 4);
        assert!(live.is_serving(one));
        // Primaries move back to the layout's (balance); the president stays the oldest.
        assert_eq!(live.replicas(&l, 0).map(|r| (n(r.primary), r.backup.map(n))), Some((1, Some(2))));
        assert_eq!(live.president(&l).map(NodeId::get), Some(2));
        assert_eq!(LiveMap::from_words(&l, 4, &live.to_words()).unwrap(), live);
        // Only restarted nodes left: the first to have served again presides.
        let mut only = live.clone();
        for id in [2, 3, 4] {
            only.mark_dead(NodeId::new(id).unwrap(), 5);
        }
        assert_eq!(only.president(&l).map(NodeId::get), Some(1));
        // A restarting node that dies again is dead, not restarting.
        live.mark_starting(one, 5);
        assert!(live.mark_dead(one, 6) && !live.is_starting(one));
    }
}
