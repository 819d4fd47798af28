//! The API node: [`Cluster::connect`] joins the cluster as an API node of the cluster file (its
//! links to the data nodes over tcp, shm or rdma as the file says); a [`Session`] (one per
//! thread) runs schema requests and transactions, sending from and polling its links in the
//! caller's thread (no background thread touches a signal).
//!
//! Transactions follow NDB's asynchronous API: define operations on a [`Transaction`], then
//! [`Session::send`] it with an [`Exec`] (many transactions can be in flight at once),
//! [`Session::poll`] for completions and [`Transaction::absorb`] each; [`Session::execute`] is
//! the blocking form. A transaction starts on a coordinator chosen round-robin over the data
//! nodes, or on the node holding its first key's primary when the caller gives a hint
//! ([`Session::begin_hinted`]); all its batches go to that coordinator.
//!
//! Scans ([`Session::scan`] with a [`ScanRequest`]) run on every partition in parallel with
//! the filter, projection and aggregates pushed down to the data nodes; rows come back as an
//! iterator that asks for each partition's next batch as it consumes the last ([`scan`]).
//!
//! Ids: a transaction id is 64 bits, unique for this API node's lifetime (the session start
//! time in ns plus a counter), so a reconnected API node does not reuse a past id.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::layout::Layout;
use engine::protocol::*;
use engine::row::{self, Value};
use engine::schema::{IndexDef, Table, TableDef};
use engine::{Engine, ErrorCode, API_SESSION, STORAGE};
use node::config::{Config, NodeKind};
use node::links::registry_config;
use signals::{BlockInstance, BlockRef, NodeId, Signal, SignalData, SignalView};
use transporter::{LinkEvent, ReceiveSide, Registry, SendBuffers, SendError};

use crate::error::{Error, Result};

mod scan;

pub use scan::{Scan, ScanRequest, ScanStats};

/// How to join.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The API node to join as (default: the first API node linked to every data node that
    /// accepts this process).
    pub api_node: Option<u64>,
    /// How long to wait for the links.
    pub connect_timeout: Duration,
    /// How long a call waits for its answer.
    pub timeout: Duration,
    /// How long a waiting call polls its links before it sleeps.
    pub spin: Duration,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            api_node: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            spin: Duration::from_micros(50),
        }
    }
}

/// A joined API node.
#[derive(Debug)]
pub struct Cluster {
    registry: Registry,
    layout: Arc<Layout>,
    me: NodeId,
    options: ConnectOptions,
    session_taken: bool,
    /// Data nodes not linked when the API node joined.
    down: std::collections::BTreeSet<NodeId>,
}

impl Cluster {
    /// Joins the cluster of the cluster file at `path`.
    pub fn connect(path: &Path, options: ConnectOptions) -> Result<Cluster> {
        let engine = Engine::new();
        let (config, layout) = engine::load_config(&engine, path).map_err(|e| Error::Connect(e.to_string()))?;
        let layout = layout.ok_or_else(|| {
            Error::Connect(format!("{} places no engine blocks (dictionary, storage, coordinator)", path.display()))
        })?;
        let candidates = api_candidates(&config, &layout, options.api_node)?;
        let mut last = String::new();
        for (i, me) in candidates.iter().enumerate() {
            let last_try = i + 1 == candidates.len();
            let wait = if last_try || options.api_node.is_some() {
                options.connect_timeout
            } else {
                options.connect_timeout.min(Duration::from_secs(2))
            };
            match join_as(&config, &layout, *me, wait) {
                Ok((registry, down)) => {
                    let down = down.into_iter().collect();
                    return Ok(Cluster { registry, layout, me: *me, options, session_taken: false, down });
                }
                Err(e) => last = e,
            }
        }
        Err(Error::Connect(last))
    }

    /// This API node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The layout (node groups, partition map) of the cluster.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// The session of this API node (one: it owns the receive side of the links).
    pub fn session(&mut self) -> Result<Session<'_>> {
        if self.session_taken {
            return Err(Error::invalid("this API node has its session; connect as another API node for another"));
        }
        let receive = self
            .registry
            .take_receive_side()
            .ok_or_else(|| Error::invalid("the receive side of the links is taken"))?;
        self.session_taken = true;
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Ok(Session {
            send: self.registry.send_buffers(),
            receive,
            events: self.registry.events().clone(),
            layout: self.layout.clone(),
            me: BlockRef::new(self.me, API_SESSION, BlockInstance(0)),
            options: self.options.clone(),
            inbox: Inbox::default(),
            tables: HashMap::new(),
            next_tx: started << 8,
            next_request: 1,
            next_scan: 0,
            round_robin: 0,
            down: self.down.clone(),
            map: engine::layout::LiveMap::default(),
            maps_from: std::collections::BTreeSet::new(),
            _cluster: PhantomData,
        })
        .map(|mut s| {
            s.await_maps();
            s
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.registry.shutdown();
    }
}

fn api_candidates(config: &Config, layout: &Layout, asked: Option<u64>) -> Result<Vec<NodeId>> {
    let linked_to_all = |n: NodeId| {
        layout.data_nodes.iter().all(|d| config.links_of(n).any(|l| l.nodes.contains(d)))
    };
    if let Some(id) = asked {
        let node = u32::try_from(id)
            .ok()
            .and_then(NodeId::new)
            .filter(|n| config.node(*n).is_some_and(|c| c.kind == NodeKind::Api))
            .ok_or_else(|| Error::Connect(format!("node {id} is not an API node of the cluster file")))?;
        if !linked_to_all(node) {
            return Err(Error::Connect(format!("API node {id} is not linked to every data node in the cluster file")));
        }
        return Ok(vec![node]);
    }
    // The arbitrator's id is left to `blockwire arbitrator` (asked for by id).
    let arbitrator = layout.membership.arbitrator;
    let all: Vec<NodeId> = config
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Api && Some(n.id) != arbitrator)
        .map(|n| n.id)
        .filter(|n| linked_to_all(*n))
        .collect();
    if all.is_empty() {
        return Err(Error::Connect("the cluster file has no API node linked to every data node".into()));
    }
    Ok(all)
}

/// How long joining waits for the remaining data nodes once every node group has a linked
/// one (a dead data node must not hold up a client for the whole connect timeout).
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// How long a new session waits for the partition maps of the linked data nodes.
const MAP_WAIT: Duration = Duration::from_millis(500);

/// Starts the links of API node `me` and waits until every data node accepted one, or, once
/// every node group has a data node linked, [`JOIN_GRACE`] more; returns the registry and the
/// data nodes not linked (taken as down until their link comes up).
fn join_as(
    config: &Config,
    layout: &Layout,
    me: NodeId,
    wait: Duration,
) -> std::result::Result<(Registry, Vec<NodeId>), String> {
    let mut links = registry_config(config, me).map_err(|e| e.to_string())?;
    links.send_thread = false;
    let mut registry = Registry::start(links).map_err(|e| format!("API node {me}: {e}"))?;
    let mut deadline = Instant::now() + wait;
    let mut missing: Vec<NodeId> = layout.data_nodes.clone();
    let mut grace_started = false;
    while !missing.is_empty() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
        if let Ok(LinkEvent::Connected { peer, .. }) = registry.events().recv_timeout(left) {
            missing.retain(|n| *n != peer);
        }
        let every_group = layout.node_groups.iter().all(|g| g.iter().any(|n| !missing.contains(n)));
        if every_group && !grace_started {
            grace_started = true;
            deadline = deadline.min(Instant::now() + JOIN_GRACE);
        }
    }
    if missing.is_empty() || grace_started {
        if !missing.is_empty() {
            tracing::warn!(?missing, "joined without a link to these data nodes (taken as down)");
        }
        return Ok((registry, missing));
    }
    let why: Vec<String> = missing
        .iter()
        .map(|n| format!("data node {n}{}", registry.last_error(*n).map_or(String::new(), |e| format!(" ({e})"))))
        .collect();
    registry.shutdown();
    Err(format!("as API node {me}: no link within {wait:?} to {}", why.join(", ")))
}

/// A row read back: its table and its values by column.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Its table.
    pub table: Arc<Table>,
    /// One value per column, in column order.
    pub values: Vec<Value>,
}

impl Row {
    /// The value of column `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.table.column_index(name).and_then(|i| self.values.get(i))
    }
}

/// A transaction's operation, defined and not yet sent.
#[derive(Clone, Debug)]
struct PendingOp {
    table: Arc<Table>,
    kind: OpKind,
    lock: LockMode,
    key: Vec<u32>,
    attributes: Vec<u32>,
}

/// What a transaction is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxState {
    /// Open: operations can be added and sent.
    Open,
    /// A batch is in flight.
    InFlight,
    /// Committed.
    Committed,
    /// Aborted or rolled back.
    Aborted,
}

/// A transaction: define operations, then send or execute.
#[derive(Debug)]
pub struct Transaction {
    id: u64,
    coordinator: BlockRef,
    pending: Vec<PendingOp>,
    next_op: u32,
    state: TxState,
    reads: HashMap<u32, Option<Row>>,
    tables: HashMap<u32, Arc<Table>>,
    durability: Durability,
    gci: u64,
}

/// When a commit is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once every replica holds it in memory (NDB's network durability): a whole-cluster crash
    /// loses it unless its global checkpoint became durable first.
    #[default]
    Memory,
    /// Once its global checkpoint is on disk on every data node: it survives any crash.
    Disk,
}

/// A handle to an operation's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(pub u32);

impl Transaction {
    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The data node whose coordinator runs it.
    pub fn coordinator_node(&self) -> NodeId {
        self.coordinator.node
    }

    /// Where it is.
    pub fn state(&self) -> TxState {
        self.state
    }

    /// Sets when its commit is acknowledged (default [`Durability::Memory`]).
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// The global checkpoint its commit went into, once committed (0 in a cluster kept in
    /// memory only).
    pub fn gci(&self) -> u64 {
        self.gci
    }

    fn add(&mut self, op: PendingOp) -> Result<OpId> {
        if self.state != TxState::Open {
            return Err(Error::invalid(format!("transaction {} is {:?}: no more operations", self.id, self.state)));
        }
        self.tables.insert(op.table.id, op.table.clone());
        self.pending.push(op);
        let id = OpId(self.next_op + self.pending.len() as u32 - 1);
        Ok(id)
    }

    /// Reads the row with primary key `key` (values in key order).
    pub fn read(&mut self, table: &Arc<Table>, key: &[Value], lock: LockMode) -> Result<OpId> {
        let key = key_words(table, key)?;
        self.add(PendingOp { table: table.clone(), kind: OpKind::Read, lock, key, attributes: Vec::new() })
    }

    /// Inserts a row: every NOT NULL column by name, key columns included.
    pub fn insert(&mut self, table: &Arc<Table>, values: &[(&str, Value)]) -> Result<OpId> {
        self.keyed_row(table, OpKind::Insert, values)
    }

    /// Inserts or replaces a row (as insert).
    pub fn write(&mut self, table: &Arc<Table>, values: &[(&str, Value)]) -> Result<OpId> {
        self.keyed_row(table, OpKind::Write, values)
    }

    /// Sets the named columns of the row with primary key `key`.
    pub fn update(&mut self, table: &Arc<Table>, key: &[Value], values: &[(&str, Value)]) -> Result<OpId> {
        let key = key_words(table, key)?;
        let attributes = attribute_words(table, values)?;
        self.add(PendingOp { table: table.clone(), kind: OpKind::Update, lock: LockMode::Exclusive, key, attributes })
    }

    /// Deletes the row with primary key `key`.
    pub fn delete(&mut self, table: &Arc<Table>, key: &[Value]) -> Result<OpId> {
        let key = key_words(table, key)?;
        self.add(PendingOp {
            table: table.clone(),
            kind: OpKind::Delete,
            lock: LockMode::Exclusive,
            key,
            attributes: Vec::new(),
        })
    }

    fn keyed_row(&mut self, table: &Arc<Table>, kind: OpKind, values: &[(&str, Value)]) -> Result<OpId> {
        let mut key = Vec::with_capacity(table.key_columns.len());
        for k in &table.def.primary_key {
            let v = values
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Error::invalid(format!("table {:?}: key column {k:?} has no value", table.name())))?;
            key.push(v);
        }
        let rest: Vec<(&str, Value)> = values
            .iter()
            .filter(|(n, _)| !table.def.primary_key.iter().any(|k| k == n))
            .cloned()
            .collect();
        let key = key_words(table, &key)?;
        let attributes = attribute_words(table, &rest)?;
        self.add(PendingOp { table: table.clone(), kind, lock: LockMode::Exclusive, key, attributes })
    }

    /// The row a read found (`None`: no such row, or not answered yet).
    pub fn row(&self, op: OpId) -> Option<&Row> {
        self.reads.get(&op.0).and_then(Option::as_ref)
    }

    /// Whether a read was answered.
    pub fn answered(&self, op: OpId) -> bool {
        self.reads.contains_key(&op.0)
    }

    /// Takes a completion of this transaction (from [`Session::poll`]): its rows and state.
    pub fn absorb(&mut self, completion: Completion) -> Result<Outcome> {
        if completion.tx != self.id {
            return Err(Error::invalid(format!("completion of transaction {} given to {}", completion.tx, self.id)));
        }
        for (op, image) in completion.rows {
            let row = match image {
                Some((table_id, bytes)) => {
                    let table = self.tables.get(&table_id).cloned().ok_or_else(|| {
                        Error::invalid(format!("a row of table id {table_id}, which the transaction did not use"))
                    })?;
                    let values = row::decode_row(&table, &bytes)
                        .map_err(|e| Error::invalid(format!("row from the data node: {e}")))?;
                    Some(Row { table, values })
                }
                None => None,
            };
            self.reads.insert(op, row);
        }
        self.gci = completion.gci;
        self.state = match &completion.result {
            Ok(Outcome::Executed) => TxState::Open,
            Ok(Outcome::Committed) => TxState::Committed,
            Ok(Outcome::RolledBack) | Err(_) => TxState::Aborted,
        };
        completion.result
    }
}

fn key_words(table: &Table, key: &[Value]) -> Result<Vec<u32>> {
    let bytes = row::encode_key(table, key)
        .map_err(|e| Error::Invalid { code: Some(ErrorCode::BadKey), message: format!("table {:?}: {e}", table.name()) })?;
    Ok(row::bytes_to_words(&bytes))
}

fn attribute_words(table: &Table, values: &[(&str, Value)]) -> Result<Vec<u32>> {
    let mut indexed = Vec::with_capacity(values.len());
    for (name, v) in values {
        let i = table
            .column_index(name)
            .ok_or_else(|| Error::invalid(format!("table {:?} has no column {name:?}", table.name())))?;
        indexed.push((i, v.clone()));
    }
    let bytes = row::encode_attributes(table, &indexed)
        .map_err(|e| Error::Invalid { code: Some(ErrorCode::BadValue), message: format!("table {:?}: {e}", table.name()) })?;
    Ok(row::bytes_to_words(&bytes))
}

/// How a batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ran; the transaction is open.
    Executed,
    /// Committed on every replica.
    Committed,
    /// Rolled back as asked.
    RolledBack,
}

/// What became of a transaction whose commit ended `NodeFailure { outcome_unknown: true }`,
/// as the data node that took over its dead coordinator's transactions reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// Committed on every live replica, in global checkpoint `gci`.
    Committed { gci: u64 },
    /// Aborted on every live replica.
    Aborted,
}

/// Transactions with an unknown outcome remembered, at most (the oldest are forgotten).
const MAX_UNKNOWN: usize = 65_536;
/// Outcome reports kept that came before their transaction's coordinator was seen to die.
const EARLY_REPORTS: usize = 1024;

/// A read's answer: operation number, and (table id, row image) when found.
type ReadResult = (u32, Option<(u32, Vec<u8>)>);

/// A finished batch, from [`Session::poll`].
#[derive(Debug)]
pub struct Completion {
    /// The transaction.
    pub tx: u64,
    /// Read results: operation number, and (table id, row image) when found.
    rows: Vec<ReadResult>,
    /// The global checkpoint a commit went into (0 for other outcomes, and in a cluster kept in
    /// memory only).
    pub gci: u64,
    /// The batch's end.
    pub result: Result<Outcome>,
}

/// A transaction in flight, as the session tracks it.
#[derive(Debug)]
struct InFlight {
    coordinator: NodeId,
    commit: bool,
    tables: HashMap<u32, u32>,
    rows: Vec<ReadResult>,
}

/// What arrived, kept apart from the links so polling can borrow both.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    in_flight: HashMap<u64, InFlight>,
    done: Vec<Completion>,
    dictionary: HashMap<u32, DictAnswer>,
    list: HashMap<u32, (u32, Vec<Table>)>,
    checksums: HashMap<u32, ChecksumConf>,
    pongs: Vec<u32>,
    scans: HashMap<u32, scan::ScanInbox>,
    /// Arbitration requests (when this API node is the arbitrator).
    pub(crate) arbitration: Vec<crate::arbitrator::Request>,
    /// Partition maps data nodes sent (sender, version, the map's words), not applied yet.
    maps: Vec<(NodeId, u32, Vec<u32>)>,
    /// Transactions whose commit ended with an unknown outcome, and the outcome once a data
    /// node reported it; the oldest go first when there are too many.
    unknown: HashMap<u64, Option<TxOutcome>>,
    unknown_order: std::collections::VecDeque<u64>,
    /// Reports that came before this session saw their coordinator die (a few, briefly).
    early: std::collections::VecDeque<(u64, TxOutcome)>,
    /// Outcome reports (sender, transaction, outcome), not checked yet.
    reports: Vec<(NodeId, u64, TxOutcome)>,
    dropped: u64,
}

#[derive(Debug)]
enum DictAnswer {
    Done,
    Refused(ErrorCode, String),
}

fn message_of(view: &SignalView<'_>) -> String {
    view.section(0).and_then(row::words_to_bytes).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

impl Inbox {
    fn on_signal(&mut self, view: SignalView<'_>) {
        match view.gsn() {
            TC_KEYCONF => {
                let Ok(conf) = view.typed::<TcKeyConf>() else { return self.drop_one() };
                let tx = join(conf.tx_low, conf.tx_high);
                let Some(f) = self.in_flight.get_mut(&tx) else { return self.drop_one() };
                let table = f.tables.get(&conf.op_no).copied().unwrap_or(0);
                let image = (conf.found != 0).then(|| view.section(0).and_then(row::words_to_bytes)).flatten();
                f.rows.push((conf.op_no, image.map(|b| (table, b))));
            }
            TC_EXECCONF => {
                let Ok(conf) = view.typed::<TcExecConf>() else { return self.drop_one() };
                let outcome = match conf.outcome {
                    OUTCOME_EXECUTED => Outcome::Executed,
                    OUTCOME_COMMITTED => Outcome::Committed,
                    _ => Outcome::RolledBack,
                };
                let tx = join(conf.tx_low, conf.tx_high);
                self.finish(tx, Ok(outcome));
                if let Some(done) = self.done.last_mut().filter(|d| d.tx == tx) {
                    done.gci = join(conf.gci_low, conf.gci_high);
                }
            }
            TC_EXECREF => {
                let Ok(r) = view.typed::<TcExecRef>() else { return self.drop_one() };
                let code = ErrorCode::from_u32(r.error).unwrap_or(ErrorCode::Protocol);
                let op = if r.op_no == u32::MAX { String::new() } else { format!(" (operation {})", r.op_no) };
                let error = Error::from_code(code, format!("{}{op}", message_of(&view)), r.outcome_unknown != 0);
                self.finish(join(r.tx_low, r.tx_high), Err(error));
            }
            TC_OUTCOME_REP => {
                let Ok(r) = view.typed::<TcOutcomeRep>() else { return self.drop_one() };
                let outcome = match r.outcome {
                    OUTCOME_COMMITTED => TxOutcome::Committed { gci: join(r.gci_low, r.gci_high) },
                    OUTCOME_ABORTED => TxOutcome::Aborted,
                    _ => return self.drop_one(),
                };
                self.reports.push((view.sender().node, join(r.tx_low, r.tx_high), outcome));
            }
            MEMBER_MAP => {
                let Ok(m) = view.typed::<MemberMap>() else { return self.drop_one() };
                let words = view.section(0).map(<[u32]>::to_vec).unwrap_or_default();
                self.maps.push((view.sender().node, m.version, words));
            }
            ARBIT_REQ => match crate::arbitrator::Request::read(&view) {
                Some(r) => self.arbitration.push(r),
                None => self.drop_one(),
            },
            DICT_CONF => {
                if let Ok(c) = view.typed::<DictConf>() {
                    self.dictionary.insert(c.request, DictAnswer::Done);
                }
            }
            DICT_REF => {
                if let Ok(r) = view.typed::<DictRef>() {
                    let code = ErrorCode::from_u32(r.error).unwrap_or(ErrorCode::Protocol);
                    self.dictionary.insert(r.request, DictAnswer::Refused(code, message_of(&view)));
                }
            }
            DICT_LIST_CONF => {
                let Ok(c) = view.typed::<DictListConf>() else { return self.drop_one() };
                let entry = self.list.entry(c.request).or_insert((c.count, Vec::new()));
                let body = view.section(0).and_then(row::words_to_bytes);
                if let Some(Ok(table)) = body.map(|b| serde_json::from_slice::<Table>(&b)) {
                    entry.1.push(table);
                }
            }
            CHECKSUM_CONF => {
                if let Ok(c) = view.typed::<ChecksumConf>() {
                    self.checksums.insert(c.request, *c);
                }
            }
            SCAN_TABCONF | SCAN_TABREF => self.on_scan_signal(&view),
            signals::gsn::PING_CONF => match view.typed_head::<signals::gsn::PingConf>() {
                Ok((conf, _)) => self.pongs.push(conf.sequence),
                Err(_) => self.drop_one(),
            },
            _ => self.drop_one(),
        }
    }

    fn drop_one(&mut self) {
        self.dropped += 1;
    }

    fn finish(&mut self, tx: u64, result: Result<Outcome>) {
        let Some(f) = self.in_flight.remove(&tx) else { return self.drop_one() };
        self.done.push(Completion { tx, rows: f.rows, gci: 0, result });
    }

    /// A data node's link failed: its transactions end.
    /// Records transaction `tx` as ended with an unknown outcome (known: `outcome`).
    fn remember_unknown(&mut self, tx: u64, outcome: Option<TxOutcome>) {
        if !self.unknown.contains_key(&tx) {
            if self.unknown.len() >= MAX_UNKNOWN {
                if let Some(old) = self.unknown_order.pop_front() {
                    self.unknown.remove(&old);
                }
            }
            self.unknown_order.push_back(tx);
        }
        let slot = self.unknown.entry(tx).or_insert(None);
        if outcome.is_some() {
            *slot = outcome;
        }
    }

    fn node_failed(&mut self, node: NodeId, reason: &str) {
        let gone: Vec<u64> = self.in_flight.iter().filter(|(_, f)| f.coordinator == node).map(|(t, _)| *t).collect();
        for tx in gone {
            let commit = self.in_flight.get(&tx).is_some_and(|f| f.commit);
            if commit {
                let early = self.early.iter().position(|(t, _)| *t == tx).and_then(|i| self.early.remove(i)).map(|(_, o)| o);
                self.remember_unknown(tx, early);
            }
            let message = format!("data node {node}: {reason}");
            self.finish(tx, Err(Error::NodeFailure { outcome_unknown: commit, message }));
        }
        self.scans_node_failed(node, reason);
    }
}

/// A session: schema requests and transactions from one thread.
#[derive(Debug)]
pub struct Session<'c> {
    pub(crate) send: SendBuffers,
    receive: ReceiveSide,
    events: crossbeam_channel::Receiver<LinkEvent>,
    layout: Arc<Layout>,
    pub(crate) me: BlockRef,
    options: ConnectOptions,
    pub(crate) inbox: Inbox,
    tables: HashMap<String, Arc<Table>>,
    next_tx: u64,
    next_request: u32,
    next_scan: u32,
    round_robin: u64,
    /// Data nodes whose link to this API node is down (coordinators are chosen among the
    /// others, and a dead primary's backup is taken as its partition's primary).
    down: std::collections::BTreeSet<NodeId>,
    /// The newest partition map the data nodes sent: nothing goes to a node it calls dead or
    /// restarting.
    map: engine::layout::LiveMap,
    /// Data nodes whose map arrived.
    maps_from: std::collections::BTreeSet<NodeId>,
    _cluster: PhantomData<&'c Cluster>,
}

impl Session<'_> {
    /// The layout (node groups, partition map).
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// Signals that arrived and fit nothing in flight (late answers), counted.
    pub fn dropped(&self) -> u64 {
        self.inbox.dropped
    }

    pub(crate) fn pack(&mut self, to: BlockRef, signal: &Signal<'_>) -> Result<()> {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            match self.send.pack(to.node, signal) {
                Ok(()) => return Ok(()),
                Err(SendError::Overloaded { .. }) if Instant::now() < deadline => {
                    self.send.flush();
                    self.pump(Duration::from_micros(100));
                }
                Err(e @ SendError::NotConnected(_)) => {
                    return Err(Error::NodeFailure { outcome_unknown: false, message: e.to_string() })
                }
                Err(e) => return Err(Error::Overload { code: ErrorCode::Overload, message: e.to_string() }),
            }
        }
    }

    /// Polls the links once (waiting up to `wait`), handling link events.
    pub(crate) fn pump(&mut self, wait: Duration) {
        let Session { receive, inbox, .. } = self;
        let got = receive.poll(Some(Duration::ZERO), &mut |_, view| inbox.on_signal(view));
        if got == 0 && !wait.is_zero() {
            receive.poll(Some(wait), &mut |_, view| inbox.on_signal(view));
        }
        while let Ok(event) = self.events.try_recv() {
            match event {
                LinkEvent::Failed { peer, reason } => {
                    if self.layout.is_data_node(peer) {
                        self.down.insert(peer);
                    }
                    self.inbox.node_failed(peer, &format!("its link failed: {reason}"));
                }
                LinkEvent::Connected { peer, .. } => {
                    self.down.remove(&peer);
                }
            }
        }
        for (from, tx, outcome) in std::mem::take(&mut self.inbox.reports) {
            if !self.layout.is_data_node(from) {
                self.inbox.dropped += 1;
            } else if self.inbox.unknown.contains_key(&tx) {
                self.inbox.remember_unknown(tx, Some(outcome));
            } else {
                // It may come before this session saw the coordinator die; a report of a
                // transaction it saw end (its complete phase was cut) is dropped in time.
                if self.inbox.early.len() >= EARLY_REPORTS {
                    self.inbox.early.pop_front();
                }
                self.inbox.early.push_back((tx, outcome));
            }
        }
        for (from, version, words) in std::mem::take(&mut self.inbox.maps) {
            if !self.layout.is_data_node(from) {
                self.inbox.dropped += 1;
                continue;
            }
            self.maps_from.insert(from);
            match engine::layout::LiveMap::from_words(&self.layout, version, &words) {
                Some(map) => {
                    let before = self.map.clone();
                    if self.map.replace_if_newer(&map) {
                        // A coordinator on a node the cluster declared dead (hung, or cut off
                        // from the others but not from this API node) never answers.
                        let died: Vec<NodeId> = map.dead().filter(|n| before.is_alive(*n)).collect();
                        for n in died {
                            self.inbox.node_failed(n, &format!("declared dead by the cluster (partition map version {version})"));
                        }
                    }
                }
                None => self.inbox.dropped += 1,
            }
        }
    }

    /// Waits (a moment at most) for the partition map from every linked data node, so the
    /// first transaction goes to no node that is dead or restarting.
    fn await_maps(&mut self) {
        let deadline = Instant::now() + MAP_WAIT;
        loop {
            self.pump(Duration::from_millis(1));
            let linked = self.layout.data_nodes.iter().filter(|n| !self.down.contains(n));
            if linked.clone().all(|n| self.maps_from.contains(n)) || Instant::now() >= deadline {
                return;
            }
        }
    }

    /// What became of transaction `tx_id` (see [`Transaction::id`]) whose commit ended with
    /// `NodeFailure { outcome_unknown: true }`: the data node that took over its dead
    /// coordinator's transactions finishes it on every replica and then reports it here.
    /// Waits up to `wait` for that report. `None` means the outcome stays unknown: no report
    /// came (no replica held a record of the transaction: it never prepared, or it had
    /// finished its complete phase, as a disk-durable commit does while its reply waits for
    /// its global checkpoint; or the report was lost with another failure), or `tx_id` never
    /// ended with an unknown outcome in this session.
    pub fn outcome(&mut self, tx_id: u64, wait: Duration) -> Option<TxOutcome> {
        let deadline = Instant::now() + wait;
        loop {
            self.pump(Duration::from_millis(1));
            match self.inbox.unknown.get(&tx_id) {
                None => return None,
                Some(Some(outcome)) => {
                    let outcome = *outcome;
                    self.inbox.unknown.remove(&tx_id);
                    self.inbox.unknown_order.retain(|t| *t != tx_id);
                    return Some(outcome);
                }
                Some(None) if Instant::now() >= deadline => return None,
                Some(None) => {}
            }
        }
    }

    /// The data nodes that serve their partitions (linked, and neither dead nor restarting
    /// in the newest partition map a data node sent), after taking in what has arrived.
    pub fn serving_data_nodes(&mut self) -> Vec<NodeId> {
        self.pump(Duration::ZERO);
        self.layout.data_nodes.iter().copied().filter(|n| self.serving(*n)).collect()
    }

    /// Whether data node `n` may be sent work: linked, and serving in the newest map.
    fn serving(&self, n: NodeId) -> bool {
        !self.down.contains(&n) && self.map.is_serving(n)
    }

    /// Waits for `done` (spinning `options.spin`, then sleeping in short steps) or the timeout.
    fn wait_until(&mut self, what: &str, mut done: impl FnMut(&Inbox) -> bool) -> Result<()> {
        self.send.flush();
        let start = Instant::now();
        let deadline = start + self.options.timeout;
        while !done(&self.inbox) {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format!("no answer to {what} within {:?}", self.options.timeout)));
            }
            let wait = if now - start < self.options.spin { Duration::ZERO } else { Duration::from_millis(5) };
            self.pump(wait);
            self.send.flush();
        }
        Ok(())
    }

    fn dictionary_node(&self) -> NodeId {
        self.up_nodes().first().copied().unwrap_or(self.layout.data_nodes[0])
    }

    /// The data nodes whose link is up, in id order (all of them when none is).
    pub(crate) fn up_nodes(&self) -> Vec<NodeId> {
        let up: Vec<NodeId> = self.layout.data_nodes.iter().copied().filter(|n| self.serving(*n)).collect();
        if up.is_empty() {
            self.layout.data_nodes.clone()
        } else {
            up
        }
    }

    /// The node of `partition`'s primary among the data nodes whose link is up.
    pub(crate) fn primary_node(&self, partition: u32) -> NodeId {
        self.layout
            .replicas_among(partition, |n| self.serving(n))
            .map_or_else(|| self.layout.replicas(partition).primary.node, |r| r.primary.node)
    }

    fn request_id(&mut self) -> u32 {
        self.next_request = self.next_request.wrapping_add(1).max(1);
        self.next_request
    }

    fn dictionary_call(&mut self, gsn: signals::Gsn, body: &[u8], what: &str) -> Result<()> {
        let (started, mut attempt) = (Instant::now(), 0u64);
        loop {
            let request = self.request_id();
            let words = row::bytes_to_words(body);
            let data = [request, 0];
            let to = Layout::dictionary_of(self.dictionary_node());
            let sections: [&[u32]; 1] = [&words];
            let signal = Signal::new(gsn, self.me, to).data(&data).sections(&sections);
            self.pack(to, &signal)?;
            self.wait_until(what, |i| i.dictionary.contains_key(&request))?;
            match self.inbox.dictionary.remove(&request) {
                // Another change running, or a data node's links still coming up: retry
                // within the session's timeout.
                Some(DictAnswer::Refused(ErrorCode::SchemaBusy | ErrorCode::NotConnected, _))
                    if started.elapsed() < self.options.timeout =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20.min(5 * attempt)));
                }
                Some(DictAnswer::Refused(code, message)) => return Err(Error::from_code(code, message, false)),
                _ => return Ok(()),
            }
        }
    }

    /// Creates a table; returns it as installed.
    pub fn create_table(&mut self, def: &TableDef) -> Result<Arc<Table>> {
        let body = serde_json::to_vec(def).map_err(|e| Error::invalid(e.to_string()))?;
        self.dictionary_call(DICT_CREATE_REQ, &body, &format!("create table {:?}", def.name))?;
        self.refresh_tables()?;
        self.table(&def.name)
    }

    /// Adds an ordered index to table `table` (which may hold rows and take writes meanwhile);
    /// returns when the index is built on every data node, with the table's new definition.
    pub fn create_index(&mut self, table: &str, index: &IndexDef) -> Result<Arc<Table>> {
        let body = serde_json::json!({ "table": table, "index": index });
        let body = serde_json::to_vec(&body).map_err(|e| Error::invalid(e.to_string()))?;
        self.dictionary_call(DICT_ADD_INDEX_REQ, &body, &format!("create index {:?} on {table:?}", index.name))?;
        self.refresh_tables()?;
        self.table(table)
    }

    /// Drops a table.
    pub fn drop_table(&mut self, name: &str) -> Result<()> {
        self.dictionary_call(DICT_DROP_REQ, name.as_bytes(), &format!("drop table {name:?}"))?;
        self.tables.remove(name);
        Ok(())
    }

    /// Every table, read from the dictionary now.
    pub fn tables(&mut self) -> Result<Vec<Arc<Table>>> {
        self.refresh_tables()?;
        let mut all: Vec<_> = self.tables.values().cloned().collect();
        all.sort_by_key(|t| t.id);
        Ok(all)
    }

    fn refresh_tables(&mut self) -> Result<()> {
        let request = self.request_id();
        let to = Layout::dictionary_of(self.dictionary_node());
        let data = DictListReq { request };
        let signal = Signal::new(DICT_LIST_REQ, self.me, to).data(data.as_words());
        self.pack(to, &signal)?;
        self.wait_until("list tables", |i| i.list.get(&request).is_some_and(|(n, t)| t.len() >= *n as usize))?;
        let (_, tables) = self.inbox.list.remove(&request).unwrap_or_default();
        self.tables = tables.into_iter().map(|t| (t.name().to_string(), Arc::new(t))).collect();
        Ok(())
    }

    /// Table `name` (from the session's cache; read from the dictionary when not there).
    pub fn table(&mut self, name: &str) -> Result<Arc<Table>> {
        if let Some(t) = self.tables.get(name) {
            return Ok(t.clone());
        }
        self.refresh_tables()?;
        self.tables.get(name).cloned().ok_or_else(|| Error::Schema {
            code: ErrorCode::NoSuchTable,
            message: format!("no table {name:?}"),
        })
    }

    /// Forgets cached definitions (after a `Schema` error: the table changed).
    pub fn forget_tables(&mut self) {
        self.tables.clear();
    }

    /// A new transaction on a coordinator chosen round-robin.
    pub fn begin(&mut self) -> Transaction {
        self.round_robin += 1;
        let nodes = self.up_nodes();
        let node = nodes[(self.round_robin as usize) % nodes.len()];
        let coordinator = self.layout.coordinator_of(node, self.round_robin / nodes.len() as u64);
        self.new_tx(coordinator)
    }

    /// A new transaction on a coordinator of the node holding `key`'s primary.
    pub fn begin_hinted(&mut self, table: &Table, key: &[Value]) -> Result<Transaction> {
        let bytes = row::encode_key(table, key).map_err(|e| Error::invalid(e.to_string()))?;
        let prefix = row::check_key(table, &bytes).map_err(|e| Error::invalid(e.to_string()))?;
        let partition = row::partition_of(table, &bytes, prefix);
        let node = self.primary_node(partition);
        self.round_robin += 1;
        let coordinator = self.layout.coordinator_of(node, self.round_robin);
        Ok(self.new_tx(coordinator))
    }

    fn new_tx(&mut self, coordinator: BlockRef) -> Transaction {
        self.next_tx += 1;
        Transaction {
            id: self.next_tx,
            coordinator,
            pending: Vec::new(),
            next_op: 0,
            state: TxState::Open,
            reads: HashMap::new(),
            tables: HashMap::new(),
            durability: Durability::Memory,
            gci: 0,
        }
    }

    /// Sends the transaction's defined operations and `exec`; the answer comes from
    /// [`Session::poll`].
    pub fn send(&mut self, tx: &mut Transaction, exec: Exec) -> Result<()> {
        if tx.state != TxState::Open {
            return Err(Error::invalid(format!("transaction {} is {:?}", tx.id, tx.state)));
        }
        let (tx_low, tx_high) = split(tx.id);
        let ops = std::mem::take(&mut tx.pending);
        let mut tables = HashMap::new();
        let to = tx.coordinator;
        for (i, op) in ops.iter().enumerate() {
            let op_no = tx.next_op + i as u32;
            tables.insert(op_no, op.table.id);
            let req = TcKeyReq {
                tx_low,
                tx_high,
                op_no,
                table: op.table.id,
                table_version: op.table.version,
                operation: op.kind as u32,
                lock: op.lock as u32,
                map_version: self.layout.map_version,
            };
            let sections: [&[u32]; 2] = [&op.key, &op.attributes];
            let n = if op.attributes.is_empty() { 1 } else { 2 };
            let signal = Signal::new(TC_KEYREQ, self.me, to).data(req.as_words()).sections(&sections[..n]);
            self.pack(to, &signal)?;
        }
        tx.next_op += ops.len() as u32;
        let durability = match tx.durability {
            Durability::Memory => DURABILITY_MEMORY,
            Durability::Disk => DURABILITY_DISK,
        };
        let exec_req = TcExecReq { tx_low, tx_high, exec: exec as u32, operations: ops.len() as u32, durability };
        self.pack(to, &Signal::new(TC_EXECREQ, self.me, to).data(exec_req.as_words()))?;
        tx.state = TxState::InFlight;
        self.inbox.in_flight.insert(
            tx.id,
            InFlight { coordinator: to.node, commit: exec == Exec::Commit, tables, rows: Vec::new() },
        );
        Ok(())
    }

    /// Sends what is packed and polls for completions, waiting up to `wait` when none is ready.
    pub fn poll(&mut self, wait: Duration) -> Vec<Completion> {
        self.send.flush();
        if self.inbox.done.is_empty() {
            let start = Instant::now();
            loop {
                self.pump(Duration::ZERO);
                if !self.inbox.done.is_empty() || start.elapsed() >= wait.min(self.options.spin) {
                    break;
                }
            }
            if self.inbox.done.is_empty() && !wait.is_zero() {
                self.pump(wait.saturating_sub(start.elapsed()));
            }
        }
        std::mem::take(&mut self.inbox.done)
    }

    /// Stops waiting for a transaction in flight (its answer, if one comes, is dropped and
    /// counted); its outcome stays unknown to this session.
    pub fn abandon(&mut self, tx: &mut Transaction) {
        self.inbox.in_flight.remove(&tx.id);
        tx.state = TxState::Aborted;
    }

    /// Transactions sent and not finished.
    pub fn in_flight(&self) -> usize {
        self.inbox.in_flight.len()
    }

    /// Sends and waits for the answer.
    pub fn execute(&mut self, tx: &mut Transaction, exec: Exec) -> Result<Outcome> {
        self.send(tx, exec)?;
        let id = tx.id;
        let waited = self.wait_until(&format!("transaction {id}"), |i| i.done.iter().any(|c| c.tx == id));
        if let Err(e) = waited {
            self.inbox.in_flight.remove(&id);
            tx.state = TxState::Aborted;
            return Err(match e {
                Error::Timeout(m) if exec == Exec::Commit => Error::NodeFailure { outcome_unknown: true, message: m },
                e => e,
            });
        }
        let at = self.inbox.done.iter().position(|c| c.tx == id).unwrap_or_default();
        let completion = self.inbox.done.swap_remove(at);
        tx.absorb(completion)
    }

    /// One round trip to data node `node`'s echo block (`ping`, which the cluster file must
    /// place): the bare transport and runtime cost, beside which the engine's operations are
    /// measured.
    pub fn ping(&mut self, node: NodeId) -> Result<Duration> {
        let sequence = self.request_id();
        let to = BlockRef::new(node, node::blocks::PING, BlockInstance(0));
        let started = Instant::now();
        let req = signals::gsn::PingReq { sequence };
        self.pack(to, &Signal::new(signals::gsn::PING_REQ, self.me, to).data(req.as_words()))?;
        self.wait_until("ping", |i| i.pongs.contains(&sequence))?;
        self.inbox.pongs.retain(|s| *s != sequence);
        Ok(started.elapsed())
    }

    /// The checksum and row count of `partition` of `table` on each of its replicas whose
    /// link is up, primary first.
    pub fn partition_checksums(&mut self, table: &Table, partition: u32) -> Result<Vec<(NodeId, u32, u64)>> {
        let replicas = self.layout.replicas(partition);
        let mut out = Vec::new();
        let down = self.down.clone();
        for to in std::iter::once(replicas.primary).chain(replicas.backup).filter(|r| !down.contains(&r.node)) {
            let request = self.request_id();
            let req = ChecksumReq { request, table: table.id, partition };
            let to = BlockRef::new(to.node, STORAGE, to.instance);
            self.pack(to, &Signal::new(CHECKSUM_REQ, self.me, to).data(req.as_words()))?;
            self.wait_until("checksum", |i| i.checksums.contains_key(&request))?;
            if let Some(c) = self.inbox.checksums.remove(&request) {
                out.push((to.node, c.rows, join(c.checksum_low, c.checksum_high)));
            }
        }
        Ok(out)
    }
}
