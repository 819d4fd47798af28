//! The dictionary block (NDB's DBDICT): tables. Every data node runs one; the master (the
//! lowest-id data node this one is linked to, itself included) runs each schema change in two
//! phases on every data node, so all agree on table ids and versions:
//! ```text
//! client --DICT_CREATE_REQ / DICT_DROP_REQ--> any dictionary --(forwarded)--> master
//! master --DICT_PREPARE_REQ--> every data node's dictionary (checks, reserves; a drop stops new operations)
//!        <--DICT_PREPARE_CONF / REF--
//! master --DICT_COMMIT_REQ(install = no refusal)--> every dictionary (installs or abandons)
//!        <--DICT_COMMIT_CONF--
//! master --DICT_CONF / DICT_REF--> client
//! ```
//! Adding an ordered index to a table (`DICT_ADD_INDEX_REQ`) runs the same two phases; the
//! table keeps its id and version (its rows and keys do not change), and each dictionary, on
//! commit, installs the new definition, has its node's storage instances build the index from
//! the rows they hold while writes go on (`INDEX_BUILD_REQ` / `INDEX_BUILD_CONF`), and only
//! then confirms the commit: the client hears `DICT_CONF` when the index is built everywhere.
//!
//! One change runs at a time (another is refused with `SchemaBusy`, a temporary error). A
//! change needs every data node linked: one that is not is named in a `NotConnected` refusal.
//! Definitions are checked by every dictionary ([`crate::schema::TableDef::validate`]); a
//! refusal names the table and column. `DICT_LIST_REQ` answers with every installed table.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use node::block::{Block, Context, InitContext};
use signals::gsn::{NodeConnected, NodeFailRep};
use signals::{gsn, BlockInstance, BlockRef, NodeId, SignalData, SignalView};

use crate::catalog::Catalog;
use crate::error::ErrorCode;
use crate::layout::{DictionarySettings, Layout};
use crate::protocol::*;
use crate::row::{bytes_to_words, words_to_bytes};
use crate::schema::{IndexDef, Table, TableDef};
use crate::resend::Resend;
use crate::{Engine, STORAGE};

type Refusal = (ErrorCode, String);

/// The schema file cannot be read or written: the node stops (its tables would be unknown).
fn fatal_schema(path: &std::path::Path, error: &str) -> ! {
    crate::datadir::stop_node(&format!("schema file {}", path.display()), &error)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Prepare,
    Commit,
}

/// A change the master runs.
#[derive(Debug)]
struct Change {
    id: u32,
    kind: u32,
    table: Table,
    requester: BlockRef,
    request: u32,
    phase: Phase,
    waiting: BTreeSet<NodeId>,
    refused: Option<Refusal>,
}

/// The dictionary block.
#[derive(Debug)]
pub struct Dictionary {
    engine: Arc<Engine>,
    out: Resend,
    settings: DictionarySettings,
    layout: Option<Arc<Layout>>,
    catalog: Option<Arc<Catalog>>,
    connected: BTreeSet<NodeId>,
    change: Option<Change>,
    prepared: HashMap<u32, (u32, Table)>,
    changes: u32,
    /// Index builds of committed changes: storage instances still building, and the master
    /// to confirm to.
    building: HashMap<u32, (BTreeSet<u32>, BlockRef)>,
    /// The partition map as this node's membership block last told it: a schema change
    /// waits while a data node is dead or restarting (a restarting node got the schema as
    /// it was when it was admitted).
    live: crate::layout::LiveMap,
}

impl Dictionary {
    /// The dictionary of `engine`.
    pub fn new(engine: Arc<Engine>, settings: DictionarySettings) -> Dictionary {
        Dictionary {
            engine,
            out: Resend::default(),
            settings,
            layout: None,
            catalog: None,
            connected: BTreeSet::new(),
            change: None,
            prepared: HashMap::new(),
            changes: 0,
            building: HashMap::new(),
            live: crate::layout::LiveMap::default(),
        }
    }

    fn start(&mut self, ctx: &mut Context<'_>) {
        let (layout, catalog) = self.engine.attach(ctx.node_id());
        if let Some(dir) = layout.data_dir(ctx.node_id()) {
            let path = dir.join(crate::datadir::SCHEMA_FILE);
            match std::fs::read(&path) {
                Ok(bytes) => match catalog.load_file_bytes(&bytes) {
                    Ok(n) => tracing::info!(tables = n, path = %path.display(), "schema restored"),
                    Err(e) => fatal_schema(&path, &e),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => fatal_schema(&path, &e.to_string()),
            }
        }
        self.layout = Some(layout);
        self.catalog = Some(catalog);
    }

    /// Writes the schema file (installed atomically) after a committed change, when the node
    /// keeps its data on disk: the schema is durable before the change is confirmed.
    fn persist(&self, ctx: &Context<'_>) {
        let (Some(layout), Some(catalog)) = (&self.layout, &self.catalog) else { return };
        let Some(dir) = layout.data_dir(ctx.node_id()) else { return };
        let path = dir.join(crate::datadir::SCHEMA_FILE);
        let bytes = catalog.to_file_bytes().unwrap_or_else(|e| fatal_schema(&path, &e));
        if let Err(e) = crate::datadir::install(dir, crate::datadir::SCHEMA_FILE, &bytes) {
            fatal_schema(&path, &e.to_string());
        }
    }

    /// The master as this node sees it: the lowest-id data node linked to it that serves
    /// (not dead, not restarting).
    fn master(&self, me: NodeId) -> NodeId {
        self.connected.iter().copied().filter(|n| self.live.is_serving(*n)).chain([me]).min().unwrap_or(me)
    }

    fn data_nodes(&self) -> Vec<NodeId> {
        self.layout.as_ref().map(|l| l.data_nodes.clone()).unwrap_or_default()
    }

    fn send_ref(&mut self, ctx: &mut Context<'_>, to: BlockRef, request: u32, (error, message): Refusal) {
        let r = DictRef { request, error: error as u32 };
        let words = bytes_to_words(message.as_bytes());
        self.out.send(ctx, DICT_REF, to, r.as_words(), &[&words]);
    }

    /// A create or drop from a client (or forwarded by another dictionary).
    fn on_request(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let (request, requester) = match signal.gsn() {
            DICT_CREATE_REQ => match ctx.typed::<DictCreateReq>(signal) {
                Some(r) => (r.request, r.requester),
                None => return,
            },
            DICT_ADD_INDEX_REQ => match ctx.typed::<DictAddIndexReq>(signal) {
                Some(r) => (r.request, r.requester),
                None => return,
            },
            _ => match ctx.typed::<DictDropReq>(signal) {
                Some(r) => (r.request, r.requester),
                None => return,
            },
        };
        // Only a dictionary forwards on someone's behalf; an API node is answered itself.
        let forwarded = self.layout.as_ref().is_some_and(|l| l.is_data_node(signal.sender().node));
        let requester = BlockRef::from_word(requester).filter(|_| forwarded).unwrap_or(signal.sender());
        let master = self.master(ctx.node_id());
        if master != ctx.node_id() {
            let words = [request, requester.to_word()];
            let sections: Vec<&[u32]> = signal.sections().take(1).collect();
            let to = Layout::dictionary_of(master);
            self.out.send(ctx, signal.gsn(), to, &words, &sections);
            return;
        }
        let body = signal.section(0).and_then(words_to_bytes).unwrap_or_default();
        let planned = match signal.gsn() {
            DICT_CREATE_REQ => self.plan_create(&body).map(|t| (CHANGE_CREATE, t)),
            DICT_ADD_INDEX_REQ => self.plan_add_index(&body).map(|t| (CHANGE_ADD_INDEX, t)),
            _ => self.plan_drop(&body).map(|t| (CHANGE_DROP, t)),
        };
        match planned.and_then(|(kind, table)| self.check_cluster(ctx.node_id()).map(|()| (kind, table))) {
            Ok((kind, table)) => self.prepare(kind, table, requester, request, ctx),
            Err(refusal) => self.send_ref(ctx, requester, request, refusal),
        }
    }

    fn check_cluster(&self, me: NodeId) -> Result<(), Refusal> {
        if self.change.is_some() {
            return Err((ErrorCode::SchemaBusy, "another schema change is running: retry".into()));
        }
        if let Some(n) = self.live.dead().next() {
            return Err((
                ErrorCode::NotConnected,
                format!("data node {n} is dead: a schema change needs every data node serving (start it again: it rejoins, and the change can run)"),
            ));
        }
        if let Some(n) = self.live.starting().next() {
            return Err((
                ErrorCode::NotConnected,
                format!("data node {n} is restarting (copying its partitions): a schema change waits until it serves again"),
            ));
        }
        let missing: Vec<String> = self
            .data_nodes()
            .into_iter()
            .filter(|n| *n != me && !self.connected.contains(n))
            .map(|n| n.to_string())
            .collect();
        if !missing.is_empty() {
            return Err((
                ErrorCode::NotConnected,
                format!("data node(s) {} not linked to the master: a schema change needs every data node", missing.join(", ")),
            ));
        }
        Ok(())
    }

    fn plan_create(&self, body: &[u8]) -> Result<Table, Refusal> {
        let def: TableDef = serde_json::from_slice(body)
            .map_err(|e| (ErrorCode::BadSchema, format!("table definition: {e}")))?;
        let partitions = def.validate(&self.settings.limits).map_err(|e| (ErrorCode::BadSchema, e.to_string()))?;
        let catalog = self.catalog.as_ref().ok_or((ErrorCode::NotConnected, "dictionary not started".into()))?;
        if catalog.len() >= self.settings.limits.max_tables as usize {
            return Err((
                ErrorCode::TooManyTables,
                format!("the cluster holds {} tables, the limit (max_tables)", self.settings.limits.max_tables),
            ));
        }
        if catalog.by_name(&def.name).is_some() {
            return Err((ErrorCode::TableExists, format!("table {:?} exists", def.name)));
        }
        let (id, version) = catalog.next_identity();
        self.fits_a_section(Table::new(id, version, def, partitions))
    }

    /// `table`, unless its definition is too large for a long section.
    fn fits_a_section(&self, table: Table) -> Result<Table, Refusal> {
        let json_bytes = serde_json::to_vec(&table).map(|v| v.len()).unwrap_or(usize::MAX);
        let section_bytes = self.layout.as_ref().map_or(0, |l| l.max_section_bytes);
        if json_bytes > section_bytes {
            return Err((
                ErrorCode::BadSchema,
                format!("table {:?}: its definition takes {json_bytes} bytes, over a long section ({section_bytes})", table.name()),
            ));
        }
        Ok(table)
    }

    /// The table with the requested index added (same id and version), checked as a whole.
    fn plan_add_index(&self, body: &[u8]) -> Result<Table, Refusal> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct AddIndex {
            table: String,
            index: IndexDef,
        }
        let req: AddIndex =
            serde_json::from_slice(body).map_err(|e| (ErrorCode::BadSchema, format!("index definition: {e}")))?;
        let catalog = self.catalog.as_ref().ok_or((ErrorCode::NotConnected, "dictionary not started".into()))?;
        let table = catalog.by_name(&req.table).ok_or_else(|| (ErrorCode::NoSuchTable, format!("no table {:?}", req.table)))?;
        let mut def = table.def.clone();
        def.indexes.push(req.index);
        let partitions = def.validate(&self.settings.limits).map_err(|e| (ErrorCode::BadSchema, e.to_string()))?;
        self.fits_a_section(Table::new(table.id, table.version, def, partitions))
    }

    fn plan_drop(&self, body: &[u8]) -> Result<Table, Refusal> {
        let name = String::from_utf8_lossy(body);
        let catalog = self.catalog.as_ref().ok_or((ErrorCode::NotConnected, "dictionary not started".into()))?;
        catalog
            .by_name(&name)
            .map(|t| (*t).clone())
            .ok_or_else(|| (ErrorCode::NoSuchTable, format!("no table {name:?}")))
    }

    fn prepare(&mut self, kind: u32, table: Table, requester: BlockRef, request: u32, ctx: &mut Context<'_>) {
        self.changes += 1;
        let id = (u32::from(ctx.node_id().get()) << 24) | (self.changes & 0x00ff_ffff);
        let json = serde_json::to_vec(&table).unwrap_or_default();
        let words = bytes_to_words(&json);
        let req = DictPrepareReq { change: id, kind, table: table.id, version: table.version };
        let nodes = self.data_nodes();
        for node in &nodes {
            let to = Layout::dictionary_of(*node);
            self.out.send(ctx, DICT_PREPARE_REQ, to, req.as_words(), &[&words]);
        }
        tracing::info!(table = table.name(), kind, change = id, "schema change: prepare");
        self.change = Some(Change {
            id,
            kind,
            table,
            requester,
            request,
            phase: Phase::Prepare,
            waiting: nodes.into_iter().collect(),
            refused: None,
        });
    }

    /// Phase one on this node: check and reserve.
    fn on_prepare(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<DictPrepareReq>(signal).copied() else { return };
        let me = u32::from(ctx.node_id().get());
        let result = self.check_prepare(&req, signal);
        match result {
            Ok(table) => {
                self.prepared.insert(req.change, (req.kind, table));
                let conf = DictPrepareConf { change: req.change, node: me };
                self.out.send(ctx, DICT_PREPARE_CONF, signal.sender(), conf.as_words(), &[]);
            }
            Err((error, message)) => {
                let r = DictPrepareRef { change: req.change, node: me, error: error as u32 };
                let words = bytes_to_words(message.as_bytes());
                self.out.send(ctx, DICT_PREPARE_REF, signal.sender(), r.as_words(), &[&words]);
            }
        }
    }

    fn check_prepare(&self, req: &DictPrepareReq, signal: &SignalView<'_>) -> Result<Table, Refusal> {
        let catalog = self.catalog.as_ref().ok_or((ErrorCode::NotConnected, "dictionary not started".into()))?;
        let body = signal.section(0).and_then(words_to_bytes).unwrap_or_default();
        let table: Table = serde_json::from_slice(&body)
            .map_err(|e| (ErrorCode::BadSchema, format!("table from the master: {e}")))?;
        if table.id != req.table || table.version != req.version {
            return Err((ErrorCode::Protocol, "the table does not match the request".into()));
        }
        match req.kind {
            CHANGE_CREATE => {
                let partitions =
                    table.def.validate(&self.settings.limits).map_err(|e| (ErrorCode::BadSchema, e.to_string()))?;
                if partitions != table.partitions {
                    return Err((ErrorCode::BadSchema, "partition counts differ between dictionaries".into()));
                }
                catalog.can_install(&table)?;
                Ok(Table::new(table.id, table.version, table.def, partitions))
            }
            CHANGE_DROP => {
                catalog.get(table.id, table.version)?;
                catalog.set_dropping(table.id, true);
                Ok(table)
            }
            CHANGE_ADD_INDEX => {
                let current = catalog.get(table.id, table.version)?;
                let partitions =
                    table.def.validate(&self.settings.limits).map_err(|e| (ErrorCode::BadSchema, e.to_string()))?;
                let mut before = table.def.clone();
                before.indexes.pop();
                if before != current.def || partitions != current.partitions {
                    return Err((ErrorCode::SchemaVersion, format!("table {:?} changed during the change", table.name())));
                }
                Ok(Table::new(table.id, table.version, table.def, partitions))
            }
            k => Err((ErrorCode::Protocol, format!("unknown change kind {k}"))),
        }
    }

    fn on_prepare_answer(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let words = signal.data();
        let (Some(&change), Some(&node)) = (words.first(), words.get(1)) else { return ctx.unhandled(signal) };
        let refusal = (signal.gsn() == DICT_PREPARE_REF).then(|| {
            let code = words.get(2).and_then(|c| ErrorCode::from_u32(*c)).unwrap_or(ErrorCode::Protocol);
            let message = signal.section(0).and_then(words_to_bytes).unwrap_or_default();
            (code, format!("data node {node}: {}", String::from_utf8_lossy(&message)))
        });
        self.answered(change, node, refusal, Phase::Prepare, ctx);
    }

    /// A participant answered (or failed): on the last answer, the next phase.
    fn answered(&mut self, change: u32, node: u32, refusal: Option<Refusal>, phase: Phase, ctx: &mut Context<'_>) {
        let Some(c) = self.change.as_mut().filter(|c| c.id == change && c.phase == phase) else {
            tracing::warn!(change, node, "answer for no running schema change: dropped");
            return;
        };
        if let Some(node) = NodeId::new(node) {
            c.waiting.remove(&node);
        }
        if let Some(r) = refusal {
            c.refused.get_or_insert(r);
        }
        if !c.waiting.is_empty() {
            return;
        }
        match c.phase {
            Phase::Prepare => {
                c.phase = Phase::Commit;
                let install = u32::from(c.refused.is_none());
                let req = DictCommitReq { change, install };
                let nodes = self.data_nodes();
                let connected: Vec<NodeId> =
                    nodes.into_iter().filter(|n| *n == ctx.node_id() || self.connected.contains(n)).collect();
                if let Some(c) = self.change.as_mut() {
                    c.waiting = connected.iter().copied().collect();
                }
                for node in connected {
                    self.out.send(ctx, DICT_COMMIT_REQ, Layout::dictionary_of(node), req.as_words(), &[]);
                }
            }
            Phase::Commit => {
                let Some(c) = self.change.take() else { return };
                match c.refused {
                    Some(r) => self.send_ref(ctx, c.requester, c.request, r),
                    None => {
                        let conf = DictConf { request: c.request, table: c.table.id, version: c.table.version };
                        self.out.send(ctx, DICT_CONF, c.requester, conf.as_words(), &[]);
                        tracing::info!(table = c.table.name(), kind = c.kind, "schema change committed on every data node");
                    }
                }
            }
        }
    }

    /// Phase two on this node: install or abandon (an added index: build it, then confirm).
    fn on_commit(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<DictCommitReq>(signal).copied() else { return };
        if let (Some((kind, table)), Some(catalog)) = (self.prepared.remove(&req.change), self.catalog.clone()) {
            match (kind, req.install != 0) {
                (CHANGE_CREATE, true) => {
                    catalog.install(table);
                    self.persist(ctx);
                }
                (CHANGE_ADD_INDEX, true) => {
                    catalog.install(table.clone());
                    self.persist(ctx);
                    let build = IndexBuildReq {
                        change: req.change,
                        table: table.id,
                        version: table.version,
                        index: table.def.indexes.len().saturating_sub(1) as u32,
                    };
                    let instances = self.layout.as_ref().map_or(0, |l| l.storage_instances);
                    self.building.insert(req.change, ((0..u32::from(instances)).collect(), signal.sender()));
                    for i in 0..instances {
                        let to = BlockRef::new(ctx.node_id(), STORAGE, BlockInstance(i));
                        self.out.send(ctx, INDEX_BUILD_REQ, to, build.as_words(), &[]);
                    }
                    return;
                }
                (CHANGE_DROP, true) => {
                    catalog.remove(table.id);
                    self.persist(ctx);
                    let instances = self.layout.as_ref().map_or(0, |l| l.storage_instances);
                    let ord = DropTableOrd { table: table.id, version: table.version };
                    for i in 0..instances {
                        let to = BlockRef::new(ctx.node_id(), STORAGE, BlockInstance(i));
                        self.out.send(ctx, DROP_TABLE_ORD, to, ord.as_words(), &[]);
                    }
                }
                (CHANGE_DROP, false) => catalog.set_dropping(table.id, false),
                _ => {}
            }
        }
        let conf = DictCommitConf { change: req.change, node: u32::from(ctx.node_id().get()) };
        self.out.send(ctx, DICT_COMMIT_CONF, signal.sender(), conf.as_words(), &[]);
    }

    /// A storage instance built an index: when the last has, the commit is confirmed.
    fn on_index_built(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(conf) = ctx.typed::<IndexBuildConf>(signal).copied() else { return };
        let Some((waiting, _)) = self.building.get_mut(&conf.change) else { return };
        waiting.remove(&conf.instance);
        if !waiting.is_empty() {
            return;
        }
        if let Some((_, master)) = self.building.remove(&conf.change) {
            let done = DictCommitConf { change: conf.change, node: u32::from(ctx.node_id().get()) };
            self.out.send(ctx, DICT_COMMIT_CONF, master, done.as_words(), &[]);
        }
    }

    fn on_list(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<DictListReq>(signal).copied() else { return };
        let tables = self.catalog.as_ref().map(|c| c.all()).unwrap_or_default();
        let conf = DictListConf { request: req.request, count: tables.len() as u32 };
        if tables.is_empty() {
            self.out.send(ctx, DICT_LIST_CONF, signal.sender(), conf.as_words(), &[]);
        }
        for t in tables {
            let words = bytes_to_words(&serde_json::to_vec(&*t).unwrap_or_default());
            self.out.send(ctx, DICT_LIST_CONF, signal.sender(), conf.as_words(), &[&words]);
        }
    }

    /// `NODE_FAILED` or `MEMBER_MAP` from this node's membership block.
    fn on_map_change(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        if !crate::from_own_membership(signal, ctx) {
            return;
        }
        if signal.gsn() == MEMBER_MAP {
            if let Some(map) = crate::member_map(self.layout.as_ref(), signal, ctx) {
                self.live.adopt(&map);
            }
        } else if let Some(f) = ctx.typed::<NodeFailed>(signal).copied() {
            if let Some(n) = NodeId::new(f.node) {
                self.live.mark_dead(n, f.version);
            }
        }
    }

    fn on_node_event(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let is_data = |n: NodeId| self.layout.as_ref().is_some_and(|l| l.is_data_node(n));
        if signal.gsn() == gsn::NODE_CONNECTED {
            if let Some(node) = ctx.typed::<NodeConnected>(signal).and_then(|c| NodeId::new(c.node)) {
                if is_data(node) {
                    self.connected.insert(node);
                }
            }
            return;
        }
        let Some(node) = ctx.typed_head::<NodeFailRep>(signal).and_then(|(r, _)| NodeId::new(r.node)) else { return };
        self.connected.remove(&node);
        let phase = self.change.as_ref().filter(|c| c.waiting.contains(&node)).map(|c| (c.id, c.phase));
        if let Some((change, phase)) = phase {
            let refusal = (ErrorCode::NotConnected, format!("data node {node} failed during the schema change"));
            self.answered(change, u32::from(node.get()), Some(refusal), phase, ctx);
        }
    }
}

impl Block for Dictionary {
    fn init(&mut self, init: &mut InitContext<'_>) {
        init.subscribe_node_events();
    }

    fn execute(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        // The two phases run between dictionaries (data nodes) only.
        let internal = matches!(
            signal.gsn(),
            DICT_PREPARE_REQ
                | DICT_PREPARE_CONF
                | DICT_PREPARE_REF
                | DICT_COMMIT_REQ
                | DICT_COMMIT_CONF
                | INDEX_BUILD_CONF
                | RESEND
        );
        if internal && !crate::internal_from_data_node(self.layout.as_ref(), signal, ctx) {
            return;
        }
        match signal.gsn() {
            DICT_CREATE_REQ | DICT_DROP_REQ | DICT_ADD_INDEX_REQ => self.on_request(signal, ctx),
            INDEX_BUILD_CONF => self.on_index_built(signal, ctx),
            DICT_PREPARE_REQ => self.on_prepare(signal, ctx),
            DICT_PREPARE_CONF | DICT_PREPARE_REF => self.on_prepare_answer(signal, ctx),
            DICT_COMMIT_REQ => self.on_commit(signal, ctx),
            DICT_COMMIT_CONF => {
                if let Some(c) = ctx.typed::<DictCommitConf>(signal).copied() {
                    self.answered(c.change, c.node, None, Phase::Commit, ctx);
                }
            }
            DICT_LIST_REQ => self.on_list(signal, ctx),
            NODE_FAILED | MEMBER_MAP => self.on_map_change(signal, ctx),
            gsn::NODE_CONNECTED | gsn::NODE_FAILREP => self.on_node_event(signal, ctx),
            gsn::START_ORD => {
                if crate::is_first_phase(ctx, signal) {
                    self.start(ctx);
                }
            }
            RESEND => self.out.on_timer(ctx),
            gsn::STOP_REQ => {}
            _ => ctx.unhandled(signal),
        }
    }
}
