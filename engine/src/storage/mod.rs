//! The storage block (NDB's DBLQH + DBACC + DBTUP in one): the partitions of tables this
//! instance holds, in memory; a hash index on the primary key; row locks
//! ([`crate::locks`]); and an operation record per (transaction, row) holding what commit and
//! abort need. It is one replica of the linear two-phase commit: a primary executes an
//! operation and passes it to the backup; the last replica answers the coordinator; commit and
//! complete come back along the chain (see [`crate::protocol`]).
//!
//! Row state: `committed` is what committed reads see; `working` is the image of the one
//! transaction holding the row exclusively (its reads see it); commit of an operation makes its
//! after-image committed, abort drops `working`; complete releases the locks. A row that never
//! committed (an aborted insert) goes when nobody holds or waits for it.
//!
//! Every request is checked (table and version, partition, key, values against the schema);
//! a refusal is an `LQH_KEYREF` naming what was wrong; a commit, complete or abort for an
//! operation this instance does not hold is a counted, logged drop. Memory is accounted per
//! row (key, images and a fixed overhead) against `memory_bytes`: full is `OutOfMemory`.
//! Records come from a pool of `max_operations`: full is `Overload`.
//!
//! The rows and indexes of one partition are a [`fragment`]; partition scans with the
//! pushed-down program are in [`scan`] (scan records from a pool of `max_scans`). Ordered
//! indexes change with the committed image, in the commit step.

use std::collections::HashMap;
use std::sync::Arc;

use node::block::{Block, Context, InitContext};
use node::stats::CounterId;
use signals::{gsn, BlockRef, SignalData, SignalView};

use crate::catalog::Catalog;
use crate::error::ErrorCode;
use crate::layout::{Layout, StorageSettings};
use crate::locks::{Lock, Mode, TxKey};
use crate::protocol::*;
use crate::row::{self, Value};
use crate::schema::Table;
use crate::pool::Pool;
use crate::resend::Resend;
use crate::Engine;

mod build;
mod checkpoint;
mod copy;
mod durable;
mod fragment;
mod repair;
mod restore;
mod scan;

pub use fragment::{INDEX_ENTRY_OVERHEAD_BYTES, ROW_OVERHEAD_BYTES};
use fragment::{Fragment, RowEntry};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpState {
    /// Queued for the row's lock.
    Waiting,
    /// Executed here (and passed on, when there is a next replica).
    Prepared,
    /// Its after-image is committed; the lock is held until complete.
    Committed,
}

#[derive(Debug)]
struct OpRecord {
    state: OpState,
    tx: TxKey,
    req: LqhKeyReq,
    table: Arc<Table>,
    row: u32,
    kind: OpKind,
    /// The values of an insert, update or write (checked).
    attrs: Vec<(usize, Value)>,
    /// Sections to pass on to the next replica.
    key_words: Vec<u32>,
    attr_words: Vec<u32>,
    forwarded: bool,
    after: Option<Vec<u8>>,
    /// Redo log bytes reserved for this operation's record (released at commit or abort).
    redo_reserved: u64,
    /// The global checkpoint its commit carried (once committed).
    gci: u64,
    /// An update or delete of a row a restarting replica has not copied yet: it changes
    /// nothing here (the copy brings the row with it).
    noop: bool,
}

#[derive(Debug, Default)]
struct Counters {
    operations: Option<CounterId>,
    lock_waits: Option<CounterId>,
    refused: Option<CounterId>,
    stale: Option<CounterId>,
    redo_bytes: Option<CounterId>,
    redo_syncs: Option<CounterId>,
    checkpoints: Option<CounterId>,
    copy_rows_sent: Option<CounterId>,
    copy_bytes_sent: Option<CounterId>,
    copy_rows_received: Option<CounterId>,
    copy_bytes_received: Option<CounterId>,
}

/// Why an operation could not run: a code and a message naming what was wrong.
type Refusal = (ErrorCode, String);

/// The storage block.
#[derive(Debug)]
pub struct Storage {
    engine: Arc<Engine>,
    /// Signals taken from other nodes, for the membership block (see [`crate::Heard`]).
    heard: Option<Arc<crate::Heard>>,
    out: Resend,
    settings: StorageSettings,
    layout: Option<Arc<Layout>>,
    catalog: Option<Arc<Catalog>>,
    fragments: HashMap<(u32, u32), Fragment>,
    ops: Pool<OpRecord>,
    scans: Pool<scan::ScanRecord>,
    builds: Pool<build::IndexBuild>,
    /// Row locks that locking scans returned, per transaction, until it ends.
    scan_holds: HashMap<TxKey, Vec<(u32, u32, u32)>>,
    by_tc: HashMap<(u32, u32, u32), u32>,
    memory_used: u64,
    /// Operations granted a lock by a release, to execute before the handler returns.
    ready: Vec<u32>,
    /// The redo log, when the node has a `data_dir`.
    durable: Option<durable::Durable>,
    /// Restoring from disk: operations and scans are refused until the restart is done.
    recovering: bool,
    lcps: checkpoint::LocalCheckpoints,
    /// The partition map as this instance knows it (which data nodes are dead).
    live: crate::layout::LiveMap,
    /// Partition copies for node restarts, both ends.
    copy: copy::Copies,
    counters: Counters,
}

impl Storage {
    /// A storage instance of `engine` with `settings`.
    pub fn new(engine: Arc<Engine>, settings: StorageSettings) -> Storage {
        Storage {
            engine,
            heard: None,
            out: Resend::default(),
            settings,
            layout: None,
            catalog: None,
            fragments: HashMap::new(),
            ops: Pool::default(),
            scans: Pool::default(),
            builds: Pool::default(),
            scan_holds: HashMap::new(),
            by_tc: HashMap::new(),
            memory_used: 0,
            ready: Vec::new(),
            durable: None,
            recovering: false,
            lcps: checkpoint::LocalCheckpoints::default(),
            live: crate::layout::LiveMap::default(),
            copy: copy::Copies::default(),
            counters: Counters::default(),
        }
    }

    fn start(&mut self, ctx: &mut Context<'_>) {
        let (layout, catalog) = self.engine.attach(ctx.node_id());
        if let Some(dir) = layout.data_dir(ctx.node_id()) {
            let identity = crate::redo::Identity {
                cluster_id: layout.cluster_id,
                node_id: u32::from(ctx.node_id().get()),
                instance: u32::from(ctx.me().instance.0),
            };
            self.durable = Some(durable::Durable::open(dir.to_owned(), identity, &self.settings));
            self.recovering = true;
        }
        self.layout = Some(layout);
        self.catalog = Some(catalog);
        self.ops.set_capacity(self.settings.max_operations as usize, 1 << 16);
        self.scans.set_capacity(self.settings.max_scans as usize, 64);
        self.builds.set_capacity(64, 4);
    }

    fn bump(&self, ctx: &Context<'_>, counter: Option<CounterId>) {
        if let Some(c) = counter {
            ctx.bump(c, 1);
        }
    }

    /// Reads and checks an `LQH_KEYREQ`, then runs it.
    fn on_key_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(mut req) = ctx.typed::<LqhKeyReq>(signal).copied() else { return };
        let writes = OpKind::from_u32(req.operation).is_some_and(OpKind::writes);
        if req.next_ref == 0 && req.primary_ref == 0 && writes {
            // A restarted replica copying this partition gets every write of it that arrives
            // from now on, also from a coordinator whose map does not name it yet. (One that
            // arrived before waits for its lock, or holds it: the copy waits for it.)
            if let Some(t) = self.copy_target(req.table, req.partition).filter(|t| *t != ctx.me()) {
                req.next_ref = t.to_word();
                req.flags &= !LQH_LAST_REPLICA;
            }
        }
        self.bump(ctx, self.counters.operations);
        let key_words = signal.section(0).unwrap_or(&[]);
        let attr_words = signal.section(1).unwrap_or(&[]);
        match self.check(&req, key_words, attr_words, ctx) {
            Ok((table, kind, mode, key, attrs)) => {
                let committed_read = kind == OpKind::Read && mode.is_none();
                if committed_read {
                    self.committed_read(&req, &table, &key, ctx);
                } else {
                    let mode = mode.unwrap_or(Mode::Exclusive);
                    let forward = (req.next_ref != 0).then(|| (key_words.to_vec(), attr_words.to_vec()));
                    if let Err(refusal) = self.begin(req, table, kind, mode, key, attrs, forward, ctx) {
                        self.refuse(&req, refusal, ctx);
                    }
                }
            }
            Err(refusal) => self.refuse(&req, refusal, ctx),
        }
        self.run_ready(ctx);
    }

    /// The checks of a request: table, partition, kind, lock, key and values.
    #[allow(clippy::type_complexity)]
    fn check(
        &self,
        req: &LqhKeyReq,
        key_words: &[u32],
        attr_words: &[u32],
        ctx: &Context<'_>,
    ) -> Result<(Arc<Table>, OpKind, Option<Mode>, Vec<u8>, Vec<(usize, Value)>), Refusal> {
        let (Some(catalog), Some(layout)) = (&self.catalog, &self.layout) else {
            return Err((ErrorCode::NotConnected, "storage is not started".into()));
        };
        if self.recovering {
            return Err((ErrorCode::Recovering, "the data node is restoring its data from disk".into()));
        }
        let table = catalog.get(req.table, req.table_version)?;
        let kind = OpKind::from_u32(req.operation)
            .ok_or_else(|| (ErrorCode::Protocol, format!("unknown operation {}", req.operation)))?;
        let mode = match (kind, LockMode::from_u32(req.lock)) {
            (OpKind::Read, Some(LockMode::CommittedRead)) => None,
            (OpKind::Read, Some(LockMode::Shared)) => Some(Mode::Shared),
            (_, Some(_)) => Some(Mode::Exclusive),
            (_, None) => return Err((ErrorCode::Protocol, format!("unknown lock mode {}", req.lock))),
        };
        let bad_key = |e: row::ValueError| (ErrorCode::BadKey, format!("table {:?}: {e}", table.name()));
        let key = row::words_to_bytes(key_words)
            .ok_or_else(|| (ErrorCode::BadKey, format!("table {:?}: malformed key section", table.name())))?;
        let prefix = row::check_key(&table, &key).map_err(bad_key)?;
        let partition = row::partition_of(&table, &key, prefix);
        let replicas = layout.replicas(partition);
        let mine = ctx.me();
        let holds = replicas.primary == mine || replicas.backup == Some(mine);
        if partition != req.partition || !holds {
            return Err((
                ErrorCode::WrongPartition,
                format!("table {:?}: the key is in partition {partition}, not held by {mine}", table.name()),
            ));
        }
        let attrs = if matches!(kind, OpKind::Insert | OpKind::Update | OpKind::Write) {
            let bytes = row::words_to_bytes(attr_words).ok_or_else(|| {
                (ErrorCode::BadValue, format!("table {:?}: malformed attribute section", table.name()))
            })?;
            let attrs = row::decode_attributes(&table, &bytes)
                .map_err(|e| (ErrorCode::BadValue, format!("table {:?}: {e}", table.name())))?;
            if let Some((i, _)) = attrs.iter().find(|(i, _)| table.is_key_column(*i)) {
                return Err((
                    ErrorCode::BadValue,
                    format!(
                        "table {:?}: column {:?} is in the primary key: give it in the key, not as a value",
                        table.name(),
                        table.def.columns[*i].name
                    ),
                ));
            }
            attrs
        } else {
            Vec::new()
        };
        Ok((table, kind, mode, key, attrs))
    }

    /// A read without a lock: the committed image, answered at once.
    fn committed_read(&mut self, req: &LqhKeyReq, table: &Table, key: &[u8], ctx: &mut Context<'_>) {
        let image = self
            .fragments
            .get(&(table.id, req.partition))
            .and_then(|f| f.index.get(key).and_then(|at| f.rows.get(*at as usize)))
            .and_then(|r| r.as_ref())
            .and_then(|r| r.committed.clone());
        let conf = LqhKeyConf {
            tx_low: req.tx_low,
            tx_high: req.tx_high,
            tc_slot: req.tc_slot,
            tc_op: req.tc_op,
            found: u32::from(image.is_some()),
            ..LqhKeyConf::default()
        };
        let words = image.map(|i| row::bytes_to_words(&i));
        self.send_to_word(ctx, req.tc_ref, LQH_KEYCONF, conf.as_words(), words.as_deref());
    }

    /// Sends to a block named by its reference word; `false` when it could not be sent.
    fn send_to_word(&mut self, ctx: &mut Context<'_>, to: u32, gsn: signals::Gsn, data: &[u32], section: Option<&[u32]>) -> bool {
        let Some(to) = BlockRef::from_word(to) else {
            tracing::warn!(%gsn, "no block to answer (reference 0): dropped");
            return false;
        };
        let sections: [&[u32]; 1] = [section.unwrap_or(&[])];
        let signal = ctx.signal(gsn, to).data(data).sections(if section.is_some() { &sections } else { &[] });
        self.out.send_signal(ctx, &signal)
    }

    fn refuse(&mut self, req: &LqhKeyReq, (error, message): Refusal, ctx: &mut Context<'_>) {
        self.bump(ctx, self.counters.refused);
        let r = LqhKeyRef {
            tx_low: req.tx_low,
            tx_high: req.tx_high,
            tc_slot: req.tc_slot,
            tc_op: req.tc_op,
            error: error as u32,
            primary_ref: req.primary_ref,
            primary_op: req.primary_op,
        };
        let words = row::bytes_to_words(message.as_bytes());
        self.send_to_word(ctx, req.tc_ref, LQH_KEYREF, r.as_words(), Some(&words));
    }

    /// Makes the operation record, finds or makes the row, and locks it (or queues).
    #[allow(clippy::too_many_arguments)]
    fn begin(
        &mut self,
        req: LqhKeyReq,
        table: Arc<Table>,
        kind: OpKind,
        mode: Mode,
        key: Vec<u8>,
        attrs: Vec<(usize, Value)>,
        forward: Option<(Vec<u32>, Vec<u32>)>,
        ctx: &mut Context<'_>,
    ) -> Result<(), Refusal> {
        let tc_key = (req.tc_ref, req.tc_slot, req.tc_op);
        if self.by_tc.contains_key(&tc_key) {
            return Err((ErrorCode::Protocol, format!("operation {} of the transaction is already here", req.tc_op)));
        }
        let fragment = self.fragments.entry((table.id, req.partition)).or_insert_with(|| Fragment::new(&table));
        let at = match fragment.index.get(key.as_slice()) {
            Some(at) => *at,
            // An insert, a write, and a locking read of an absent key make the row's entry
            // (no image yet) to lock the key itself: a transaction that read "absent" under a
            // lock keeps it absent until it completes (no lost update by a concurrent insert).
            None if matches!(kind, OpKind::Insert | OpKind::Write | OpKind::Read)
                || self.copy.is_copying(table.id, req.partition) =>
            {
                let cost = ROW_OVERHEAD_BYTES + key.len() as u64;
                if self.memory_used + cost > self.settings.memory_bytes {
                    return Err(out_of_memory(&self.settings));
                }
                self.memory_used += cost;
                let key: Box<[u8]> = key.into_boxed_slice();
                fragment.insert(RowEntry { key, committed: None, working: None, lock: Lock::default() })
            }
            None => return Err(not_found(&table)),
        };
        let tx: TxKey = (req.tc_ref, join(req.tx_low, req.tx_high));
        let (key_words, attr_words) = forward.unwrap_or_default();
        let rec = OpRecord {
            state: OpState::Waiting,
            tx,
            req,
            table,
            row: at,
            kind,
            attrs,
            key_words,
            attr_words,
            forwarded: false,
            after: None,
            redo_reserved: 0,
            gci: 0,
            noop: false,
        };
        let Some(handle) = self.ops.alloc(rec) else {
            self.reap(req.table, req.partition, at);
            return Err((ErrorCode::Overload, format!("all {} operation records are in use", self.ops.capacity())));
        };
        self.by_tc.insert(tc_key, handle);
        let granted = self
            .fragments
            .get_mut(&(req.table, req.partition))
            .and_then(|f| f.row(at))
            .is_some_and(|r| r.lock.acquire(handle, tx, mode));
        if granted {
            self.execute(handle, ctx);
        } else {
            self.bump(ctx, self.counters.lock_waits);
        }
        Ok(())
    }

    fn reap(&mut self, table: u32, partition: u32, at: u32) {
        if let Some(f) = self.fragments.get_mut(&(table, partition)) {
            self.memory_used -= f.reap(at).min(self.memory_used);
        }
    }

    /// Runs operations whose locks were granted by a release.
    fn run_ready(&mut self, ctx: &mut Context<'_>) {
        while let Some(handle) = self.ready.pop() {
            if handle & copy::COPY_WAITER == copy::COPY_WAITER {
                self.copy_lock_granted(handle & 0xffff, ctx);
            } else if handle & scan::SCAN_WAITER != 0 {
                self.scan_lock_granted(handle & !scan::SCAN_WAITER, ctx);
            } else {
                self.execute(handle, ctx);
            }
        }
    }

    /// Runs a locked operation on its row, then passes it on or answers.
    fn execute(&mut self, handle: u32, ctx: &mut Context<'_>) {
        match self.apply(handle) {
            Ok(read_image) => self.prepared(handle, read_image, ctx),
            Err(refusal) => {
                if let Some(rec) = self.release_op(handle, true) {
                    self.refuse(&rec.req, refusal, ctx);
                }
            }
        }
    }

    /// The operation's effect on the row's working image; a read's image to return.
    fn apply(&mut self, handle: u32) -> Result<Option<Vec<u8>>, Refusal> {
        let limit = self.settings.memory_bytes;
        let used = self.memory_used;
        let Some(rec) = self.ops.get(handle) else { return Ok(None) };
        rec.state = OpState::Prepared;
        let (tx, kind, at) = (rec.tx, rec.kind, rec.row);
        let key = (rec.req.table, rec.req.partition);
        let table = rec.table.clone();
        let attrs = std::mem::take(&mut rec.attrs);
        let Some(entry) = self.fragments.get_mut(&key).and_then(|f| f.row(at)) else {
            return Err((ErrorCode::NoSuchTable, format!("table {:?} was dropped", table.name())));
        };
        let current = entry.image_for(tx).cloned();
        if matches!(kind, OpKind::Update | OpKind::Delete) && current.is_none() && self.copy.is_copying(key.0, key.1) {
            // Not copied here yet: the copy brings the row, this write in it.
            if let Some(rec) = self.ops.get(handle) {
                rec.noop = true;
            }
            return Ok(None);
        }
        let after = match kind {
            OpKind::Read => return Ok(current),
            OpKind::Insert if current.is_some() => return Err(duplicate(&table, &entry.key)),
            OpKind::Update | OpKind::Delete if current.is_none() => return Err(not_found(&table)),
            OpKind::Delete => None,
            OpKind::Insert | OpKind::Write => Some(build_row(&table, &entry.key, None, &attrs)?),
            OpKind::Update => Some(build_row(&table, &entry.key, current.as_deref(), &attrs)?),
        };
        let reserved = match self.durable.as_mut() {
            Some(d) => d
                .reserve(entry.key.len(), after.as_ref().map_or(0, Vec::len))
                .map_err(|m| (ErrorCode::RedoLogFull, format!("table {:?}: {m}", table.name())))?,
            None => 0,
        };
        let old = entry.cost();
        let previous = entry.working.replace((tx, after.clone()));
        let new = entry.cost();
        if new > old && used + (new - old) > limit {
            entry.working = previous;
            if let Some(d) = self.durable.as_mut() {
                d.reserved -= reserved;
            }
            return Err(out_of_memory(&self.settings));
        }
        self.memory_used = (used + new).saturating_sub(old);
        if let Some(rec) = self.ops.get(handle) {
            rec.after = after;
            rec.redo_reserved += reserved;
        }
        Ok(None)
    }

    /// Passes a prepared operation to the next replica, or answers the coordinator.
    fn prepared(&mut self, handle: u32, read_image: Option<Vec<u8>>, ctx: &mut Context<'_>) {
        let me = ctx.me().to_word();
        let Some(rec) = self.ops.get(handle) else { return };
        let req = rec.req;
        if req.next_ref != 0 && rec.kind.writes() {
            rec.forwarded = true;
            let next = LqhKeyReq {
                next_ref: 0,
                flags: LQH_LAST_REPLICA,
                primary_ref: me,
                primary_op: handle,
                ..req
            };
            let (k, a) = (std::mem::take(&mut rec.key_words), std::mem::take(&mut rec.attr_words));
            if let Some(to) = BlockRef::from_word(req.next_ref) {
                self.out.send(ctx, LQH_KEYREQ, to, next.as_words(), &[&k, &a]);
            }
            return;
        }
        let (primary_ref, primary_op, backup_ref, backup_op) = if req.primary_ref != 0 {
            (req.primary_ref, req.primary_op, me, handle)
        } else {
            (me, handle, 0, 0)
        };
        let conf = LqhKeyConf {
            tx_low: req.tx_low,
            tx_high: req.tx_high,
            tc_slot: req.tc_slot,
            tc_op: req.tc_op,
            primary_ref,
            primary_op,
            backup_ref,
            backup_op,
            found: u32::from(read_image.is_some()),
        };
        let words = read_image.map(|i| row::bytes_to_words(&i));
        self.send_to_word(ctx, req.tc_ref, LQH_KEYCONF, conf.as_words(), words.as_deref());
    }

    /// Frees an operation: its lock hold (or its place in the queue) goes, and with `abort`
    /// its working image; the row goes when nothing refers to it.
    fn release_op(&mut self, handle: u32, abort: bool) -> Option<OpRecord> {
        let rec = self.ops.free(handle)?;
        if let Some(d) = self.durable.as_mut() {
            d.reserved = d.reserved.saturating_sub(rec.redo_reserved);
        }
        self.by_tc.remove(&(rec.req.tc_ref, rec.req.tc_slot, rec.req.tc_op));
        let key = (rec.req.table, rec.req.partition);
        if let Some(entry) = self.fragments.get_mut(&key).and_then(|f| f.row(rec.row)) {
            let before = entry.cost();
            if rec.state == OpState::Waiting {
                entry.lock.cancel(handle);
            } else {
                if abort && entry.working.as_ref().is_some_and(|(t, _)| *t == rec.tx) {
                    entry.working = None;
                }
                entry.lock.release(rec.tx, false);
                if !entry.lock.held_by(rec.tx) && entry.working.as_ref().is_some_and(|(t, _)| *t == rec.tx) {
                    entry.working = None;
                }
            }
            let after = entry.cost();
            self.memory_used = (self.memory_used + after).saturating_sub(before);
            while let Some(next) = entry.lock.grant_next() {
                self.ready.push(next);
            }
            self.reap(key.0, key.1, rec.row);
        }
        Some(rec)
    }

    fn on_commit(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<CommitReq>(signal).copied() else { return };
        let tx = join(req.tx_low, req.tx_high);
        if !self.ops.get(req.op).is_some_and(|r| r.tx == (req.tc_ref, tx) && r.state != OpState::Waiting) {
            self.stale(ctx, "COMMIT_REQ", tx, req.op);
            return;
        }
        self.commit_record(req.op, join(req.gci_low, req.gci_high), ctx);
        if req.next_ref != 0 {
            let next = CommitReq { op: req.next_op, next_ref: 0, next_op: 0, ..req };
            self.send_to_word(ctx, req.next_ref, COMMIT_REQ, next.as_words(), None);
        } else {
            let conf = CommitConf { tx_low: req.tx_low, tx_high: req.tx_high, tc_slot: req.tc_slot, tc_op: req.tc_op };
            self.send_to_word(ctx, req.tc_ref, COMMIT_CONF, conf.as_words(), None);
        }
    }

    /// Commits a prepared operation record on this replica: its after-image becomes the
    /// row's committed image (logged first when the node keeps a redo log). A record already
    /// committed is left as it is.
    fn commit_record(&mut self, handle: u32, gci: u64, ctx: &mut Context<'_>) {
        let Some(rec) = self.ops.get(handle) else { return };
        let mut moved = Vec::new();
        let key = (rec.req.table, rec.req.partition);
        if rec.state == OpState::Prepared && rec.kind.writes() && !rec.noop {
            if let Some(d) = self.durable.as_mut() {
                let row_key = self.fragments.get(&key).and_then(|f| f.rows.get(rec.row as usize)).and_then(Option::as_ref);
                log_commit(d, rec, row_key.map(|r| &*r.key), gci, rec.tx.1);
                self.lcps.dirty = true;
            }
            let (at, after) = (rec.row, rec.after.clone());
            if let Some(fragment) = self.fragments.get_mut(&key) {
                let change = fragment.set_committed(at, after, &mut moved);
                self.memory_used = self.memory_used.saturating_add_signed(change);
            }
        }
        if let Some(rec) = self.ops.get(handle) {
            if rec.state == OpState::Prepared {
                rec.gci = gci;
            }
            rec.state = OpState::Committed;
        }
        for m in moved {
            self.entry_moved(key, &m);
        }
        if self.durable.is_some() {
            self.pump_redo(ctx);
        }
    }

    fn on_complete(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<CompleteReq>(signal).copied() else { return };
        let tx = join(req.tx_low, req.tx_high);
        if !self.ops.get(req.op).is_some_and(|r| r.tx == (req.tc_ref, tx) && r.state == OpState::Committed) {
            self.stale(ctx, "COMPLETE_REQ", tx, req.op);
            return;
        }
        self.release_op(req.op, false);
        if req.next_ref != 0 {
            let next = CompleteReq { op: req.next_op, next_ref: 0, next_op: 0, ..req };
            self.send_to_word(ctx, req.next_ref, COMPLETE_REQ, next.as_words(), None);
        } else {
            let conf = CompleteConf { tx_low: req.tx_low, tx_high: req.tx_high, tc_slot: req.tc_slot, tc_op: req.tc_op };
            self.send_to_word(ctx, req.tc_ref, COMPLETE_CONF, conf.as_words(), None);
        }
        self.run_ready(ctx);
    }

    /// Aborts the operation the coordinator's ids name (if this replica holds it), passes the
    /// abort on when this replica passed the operation on, else confirms.
    fn on_abort(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<AbortReq>(signal).copied() else { return };
        let tx = join(req.tx_low, req.tx_high);
        let handle = self.by_tc.get(&(req.tc_ref, req.tc_slot, req.tc_op)).copied();
        let mut forward = None;
        if let Some(handle) = handle {
            match self.ops.get(handle) {
                Some(rec) if rec.tx == (req.tc_ref, tx) && rec.state != OpState::Committed => {
                    if rec.forwarded {
                        forward = Some(rec.req.next_ref);
                    }
                    self.release_op(handle, true);
                }
                _ => self.stale(ctx, "ABORT_REQ", tx, handle),
            }
        }
        // A next replica this instance knows dead (a restarting one it passed the write on
        // to) has nothing left to abort: confirm here. One whose link is down but that is not
        // known dead yet may still hold the record: the coordinator repairs it once the
        // failure is agreed (its repair of a chain the failure broke).
        let next_dead = forward.is_some_and(|n| !BlockRef::from_word(n).is_some_and(|r| self.live.is_alive(r.node)));
        if let Some(next) = forward.filter(|_| !next_dead) {
            self.send_to_word(ctx, next, ABORT_REQ, req.as_words(), None);
        } else {
            let conf = AbortConf { tx_low: req.tx_low, tx_high: req.tx_high, tc_slot: req.tc_slot, tc_op: req.tc_op };
            self.send_to_word(ctx, req.tc_ref, ABORT_CONF, conf.as_words(), None);
        }
        self.run_ready(ctx);
    }

    fn stale(&self, ctx: &Context<'_>, what: &str, tx: u64, op: u32) {
        self.bump(ctx, self.counters.stale);
        tracing::warn!(what, tx, op, "no such operation here (stale or forged): dropped");
    }

    fn on_checksum(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<ChecksumReq>(signal).copied() else { return };
        let (mut rows, mut sum) = (0u32, 0u64);
        let fragment = self.fragments.get(&(req.table, req.partition));
        for entry in fragment.into_iter().flat_map(|f| f.rows.iter().flatten()) {
            if let Some(image) = &entry.committed {
                rows += 1;
                let mut bytes = entry.key.to_vec();
                bytes.extend_from_slice(image);
                sum = sum.wrapping_add(row::fnv1a(&bytes));
            }
        }
        let held = self
            .layout
            .as_ref()
            .map(|l| l.replicas(req.partition))
            .is_some_and(|r| r.primary == ctx.me() || r.backup == Some(ctx.me()));
        let (checksum_low, checksum_high) = split(sum);
        let conf = ChecksumConf {
            request: req.request,
            table: req.table,
            partition: req.partition,
            held: u32::from(held),
            rows,
            checksum_low,
            checksum_high,
        };
        self.out.send(ctx, CHECKSUM_CONF, signal.sender(), conf.as_words(), &[]);
    }

    fn on_drop(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(ord) = ctx.typed::<DropTableOrd>(signal).copied() else { return };
        self.close_scans_of(ord.table, ctx);
        let keys: Vec<_> = self.fragments.keys().filter(|(t, _)| *t == ord.table).copied().collect();
        for key in keys {
            if let Some(f) = self.fragments.remove(&key) {
                let entries = f.ordered.iter().flat_map(|t| t.keys()).map(|k| k.len() as u64 + INDEX_ENTRY_OVERHEAD_BYTES);
                let freed: u64 = f.rows.iter().flatten().map(RowEntry::cost).sum::<u64>() + entries.sum::<u64>();
                self.memory_used = self.memory_used.saturating_sub(freed);
            }
        }
        tracing::info!(table = ord.table, in_use = self.ops.in_use(), "table dropped from storage");
    }
}

/// Appends a committed operation's after-image to the redo log; its reservation is spent.
fn log_commit(d: &mut durable::Durable, rec: &mut OpRecord, row_key: Option<&[u8]>, gci: u64, tx: u64) {
    let Some(entry_key) = row_key else { return };
    let change = match &rec.after {
        Some(image) => crate::redo::Change::Write(image),
        None => crate::redo::Change::Delete,
    };
    let record = crate::redo::Record {
        gci,
        transaction: tx,
        table: rec.req.table,
        table_version: rec.req.table_version,
        partition: rec.req.partition,
        key: entry_key,
        change,
    };
    if let Err(e) = d.append(&record) {
        durable::fatal("cannot log a commit", &e);
    }
    d.reserved = d.reserved.saturating_sub(rec.redo_reserved);
    rec.redo_reserved = 0;
}

fn out_of_memory(settings: &StorageSettings) -> Refusal {
    (ErrorCode::OutOfMemory, format!("storage memory is full ({} bytes, memory_bytes)", settings.memory_bytes))
}

fn not_found(table: &Table) -> Refusal {
    (ErrorCode::NotFound, format!("table {:?}: no row with that key", table.name()))
}

fn duplicate(table: &Table, key: &[u8]) -> Refusal {
    let shown = row::decode_key(table, key)
        .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    (ErrorCode::DuplicateKey, format!("table {:?}: a row with key ({shown}) exists", table.name()))
}

/// A full row from the key, an earlier image (update) and the given values; a NOT NULL column
/// with no value is refused by name.
fn build_row(table: &Table, key: &[u8], base: Option<&[u8]>, attrs: &[(usize, Value)]) -> Result<Vec<u8>, Refusal> {
    let bad = |e: row::ValueError| (ErrorCode::BadValue, format!("table {:?}: {e}", table.name()));
    let mut values = match base {
        Some(image) => row::decode_row(table, image).map_err(bad)?,
        None => vec![Value::Null; table.def.columns.len()],
    };
    for (k, v) in table.key_columns.iter().zip(row::decode_key(table, key).map_err(bad)?) {
        values[usize::from(*k)] = v;
    }
    for (i, v) in attrs {
        values[*i] = v.clone();
    }
    if let Some(c) = table.def.columns.iter().zip(&values).find(|(c, v)| !c.nullable && **v == Value::Null) {
        return Err(bad(row::ValueError::Missing { column: c.0.name.clone() }));
    }
    row::encode_row(table, &values).map_err(bad)
}

impl Block for Storage {
    fn init(&mut self, init: &mut InitContext<'_>) {
        init.subscribe_node_events();
        self.counters = Counters {
            operations: Some(init.counter("operations")),
            lock_waits: Some(init.counter("lock_waits")),
            refused: Some(init.counter("operations_refused")),
            stale: Some(init.counter("stale_signals")),
            redo_bytes: Some(init.counter("redo_bytes")),
            redo_syncs: Some(init.counter("redo_syncs")),
            checkpoints: Some(init.counter("checkpoints_completed")),
            copy_rows_sent: Some(init.counter("copy_rows_sent")),
            copy_bytes_sent: Some(init.counter("copy_bytes_sent")),
            copy_rows_received: Some(init.counter("copy_rows_received")),
            copy_bytes_received: Some(init.counter("copy_bytes_received")),
        };
    }

    fn execute(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let from = signal.sender().node;
        if from != ctx.node_id() {
            let now = ctx.now_ns();
            self.heard.get_or_insert_with(|| self.engine.heard(ctx.node_id())).note(from, now);
        }
        // The commit protocol's signals come from coordinators and storage blocks: data nodes.
        let internal = matches!(
            signal.gsn(),
            LQH_KEYREQ
                | COMMIT_REQ
                | COMPLETE_REQ
                | ABORT_REQ
                | DROP_TABLE_ORD
                | SCAN_FRAGREQ
                | SCAN_FRAG_NEXTREQ
                | SCAN_LOCK_RELEASE
                | INDEX_BUILD_REQ
                | GCP_SAVE_REQ
                | GCP_SAVED
                | RESTART_INFO_REQ
                | RESTART_ORD
                | TAKEOVER_REQ
                | REPAIR_REQ
                | COPY_ROWS
                | COPY_ACK
                | COPY_REF
        );
        if internal && !crate::internal_from_live_data_node(self.layout.as_ref(), &self.live, signal, ctx) {
            return;
        }
        // A restarted node may ask before this instance has the map that admits it: the copy
        // checks that and refuses for now (it asks again).
        if signal.gsn() == COPY_REQ && !crate::internal_from_data_node(self.layout.as_ref(), signal, ctx) {
            return;
        }
        if matches!(signal.gsn(), NODE_FAILED | MEMBER_MAP | COPY_ORD) && !crate::from_own_membership(signal, ctx) {
            return;
        }
        if signal.gsn() == COPY_CONTINUE && signal.sender() != ctx.me() {
            return ctx.unhandled(signal);
        }
        // Once a coordinator's node is dead its records belong to the takeover: a request
        // still in flight from before the failure must not change them.
        if matches!(signal.gsn(), LQH_KEYREQ | COMMIT_REQ | COMPLETE_REQ | ABORT_REQ) {
            let tc = signal.data().get(2).and_then(|w| BlockRef::from_word(*w));
            if tc.is_some_and(|r| !self.live.is_alive(r.node)) {
                self.bump(ctx, self.counters.stale);
                tracing::debug!(gsn = %signal.gsn(), "request of a dead coordinator: dropped");
                return;
            }
        }
        match signal.gsn() {
            LQH_KEYREQ => self.on_key_req(signal, ctx),
            COMMIT_REQ => self.on_commit(signal, ctx),
            COMPLETE_REQ => self.on_complete(signal, ctx),
            ABORT_REQ => self.on_abort(signal, ctx),
            CHECKSUM_REQ => self.on_checksum(signal, ctx),
            DROP_TABLE_ORD => self.on_drop(signal, ctx),
            SCAN_FRAGREQ => self.on_scan_frag_req(signal, ctx),
            SCAN_FRAG_NEXTREQ => self.on_scan_frag_next(signal, ctx),
            SCAN_CONTINUE => self.on_scan_continue(signal, ctx),
            SCAN_LOCK_RELEASE => self.on_scan_lock_release(signal, ctx),
            INDEX_BUILD_REQ => self.on_index_build_req(signal, ctx),
            INDEX_BUILD_CONTINUE => self.on_index_build_continue(signal, ctx),
            gsn::NODE_FAILREP => self.on_node_failure(signal, ctx),
            NODE_FAILED => self.on_node_failed(signal, ctx),
            TAKEOVER_REQ => self.on_takeover_req(signal, ctx),
            REPAIR_REQ => self.on_repair(signal, ctx),
            MEMBER_MAP => self.on_member_map(signal, ctx),
            COPY_ORD => self.on_copy_ord(signal, ctx),
            COPY_REQ | COPY_ACK | COPY_CONTINUE => {
                match signal.gsn() {
                    COPY_REQ => self.on_copy_req(signal, ctx),
                    COPY_ACK => self.on_copy_ack(signal, ctx),
                    _ => self.on_copy_continue(signal, ctx),
                }
                // A copy that gave up a row's lock may have granted it to waiting operations.
                self.run_ready(ctx);
            }
            COPY_ROWS => self.on_copy_rows(signal, ctx),
            COPY_REF => self.on_copy_ref(signal, ctx),
            gsn::NODE_CONNECTED => {}
            gsn::START_ORD => {
                if crate::is_first_phase(ctx, signal) {
                    self.start(ctx);
                }
            }
            RESEND => self.out.on_timer(ctx),
            GCP_SAVE_REQ => self.on_gcp_save(signal, ctx),
            GCP_SAVED => self.on_gcp_saved(signal, ctx),
            RESTART_INFO_REQ => self.on_restart_info_req(signal, ctx),
            RESTART_ORD => self.on_restart_ord(signal, ctx),
            LCP_CONTINUE => self.on_lcp_continue(ctx),
            gsn::IO_READY => self.pump_redo(ctx),
            gsn::STOP_REQ => {}
            _ => ctx.unhandled(signal),
        }
    }
}
