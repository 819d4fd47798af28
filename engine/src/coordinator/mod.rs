//! The coordinator block (NDB's DBTC): runs transactions for API nodes. A transaction is any
//! set of operations on any tables and partitions, sent in batches (`TC_KEYREQ`s ended by a
//! `TC_EXECREQ`). Each operation goes by the partition map to its primary's storage block,
//! which passes a write on to the backup (the linear two-phase commit); commit and complete
//! then run along each chain (see [`crate::protocol`]).
//!
//! Transaction states and their transitions, all in this file:
//! ```text
//!  Open --KEYREQ--> Executing --batch answered, NoCommit--> Open
//!                   Executing --Commit--> Committing --all COMMIT_CONF--> Completing --all COMPLETE_CONF--> freed
//!  any live state --failure, Rollback, timeout, client gone--> Aborting --all ABORT_CONF--> freed
//!                                                               (or Aborted, kept until the client hears)
//! ```
//! The client hears `TC_EXECCONF` after the commit phase (both replicas hold the commit in
//! memory), or after the complete phase when a table with `read_backup` was written (so a
//! committed read at either replica sees it). Any refusal aborts the whole transaction and
//! the client hears `TC_EXECREF` with the first error.
//!
//! Timeouts (checked by a periodic `TC_TIMER`): an operation unanswered longer than
//! `transaction_deadlock_timeout_ms` (a lock wait, a deadlock) aborts its transaction with
//! `Deadlock`; an open transaction idle longer than `transaction_inactive_timeout_ms` is
//! aborted with `InactiveTimeout`. An API node's link failure aborts its transactions.
//!
//! Scans (NDB's DBTC scan records) are in [`scan`]: one scan record per client scan, one
//! partition scan per partition it needs, batches passed on as the client asks for them, and
//! aggregates merged here.
//!
//! Every client signal is checked: a transaction is known by (API node, id), so one API node
//! cannot touch another's; unknown tables, bad keys, operations after commit and mismatched
//! batch counts are typed refusals; stale signals from storage are counted drops.

use std::collections::HashMap;
use std::sync::Arc;

use node::block::{Block, Context, InitContext};
use node::stats::CounterId;
use signals::gsn::NodeFailRep;
use signals::{gsn, BlockRef, NodeId, SignalData, SignalView};

use crate::catalog::Catalog;
use crate::error::ErrorCode;
use crate::layout::{CoordinatorSettings, Layout, LiveMap};
use crate::protocol::*;
use crate::row;
use crate::pool::Pool;
use crate::resend::Resend;
use crate::Engine;

mod gcp;
mod repair;
mod scan;
mod takeover;

/// How often timeouts are checked, at most.
const TIMER_PERIOD_NS: u64 = 50_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxState {
    /// Between batches: the client owes the next one.
    Open,
    /// A batch is being run.
    Executing,
    /// Commit sent along every chain.
    Committing,
    /// Complete sent along every chain (the client may have heard already).
    Completing,
    /// Abort sent for every operation.
    Aborting,
    /// Aborted while the client was not waiting: the reason waits for its next signal.
    Aborted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpState {
    /// `LQH_KEYREQ` sent, no answer yet.
    Sent,
    /// Answered with a confirm.
    Prepared,
    /// Refused.
    Refused,
}

#[derive(Clone, Copy, Debug)]
struct TcOp {
    op_no: u32,
    table: u32,
    kind: OpKind,
    /// Holds a storage record (not a committed read).
    locked: bool,
    state: OpState,
    primary: BlockRef,
    /// The backup a write went on to (as routed).
    backup: Option<BlockRef>,
    /// Answered in the current phase (commit, complete or abort).
    done: bool,
    primary_ref: u32,
    primary_op: u32,
    backup_ref: u32,
    backup_op: u32,
}

#[derive(Clone, Debug)]
struct Failure {
    code: ErrorCode,
    op_no: u32,
    message: String,
    /// Abort asked for by the client (answered with a confirm).
    rollback: bool,
}

#[derive(Debug)]
struct Tx {
    id: u64,
    client: BlockRef,
    state: TxState,
    ops: Vec<TcOp>,
    /// Operations of this batch received, and answers outstanding.
    batch_ops: u32,
    outstanding: u32,
    /// Commit, complete or abort confirms outstanding.
    pending: u32,
    exec: Option<Exec>,
    failure: Option<Failure>,
    read_backup: bool,
    /// The client waits for an answer to its batch.
    client_waiting: bool,
    replied: bool,
    last_activity_ns: u64,
    batch_started_ns: u64,
    /// Storage blocks where a locking scan of this transaction ran (they hold its scan locks).
    scan_storages: Vec<BlockRef>,
    /// The client asked for a disk-durable commit.
    disk: bool,
    /// The global checkpoint its commit carries (set when the commit phase starts).
    gci: u64,
    /// It wrote a row (a disk-durable acknowledgement waits for its GCI).
    writes: bool,
}

#[derive(Debug, Default)]
struct Counters {
    committed: Option<CounterId>,
    aborted: Option<CounterId>,
    deadlocks: Option<CounterId>,
    stale: Option<CounterId>,
    scans: Option<CounterId>,
    scans_pruned: Option<CounterId>,
}

/// The coordinator block.
#[derive(Debug)]
pub struct Coordinator {
    engine: Arc<Engine>,
    /// Signals taken from other nodes, for the membership block (see [`crate::Heard`]).
    heard: Option<Arc<crate::Heard>>,
    out: Resend,
    settings: CoordinatorSettings,
    layout: Option<Arc<Layout>>,
    catalog: Option<Arc<Catalog>>,
    slots: Vec<Option<Tx>>,
    free: Vec<u32>,
    by_id: HashMap<(NodeId, u64), u32>,
    scans: Pool<scan::Scan>,
    scans_by_id: HashMap<(NodeId, u32), u32>,
    gcp: gcp::GcpState,
    /// The partition map as this coordinator knows it (which data nodes are dead).
    live: LiveMap,
    takeovers: takeover::Takeovers,
    counters: Counters,
}

impl Coordinator {
    /// A coordinator instance of `engine`.
    pub fn new(engine: Arc<Engine>, settings: CoordinatorSettings) -> Coordinator {
        Coordinator {
            engine,
            heard: None,
            out: Resend::default(),
            settings,
            layout: None,
            catalog: None,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            scans: Pool::default(),
            scans_by_id: HashMap::new(),
            gcp: gcp::GcpState::default(),
            live: LiveMap::default(),
            takeovers: takeover::Takeovers::default(),
            counters: Counters::default(),
        }
    }

    fn start(&mut self, ctx: &mut Context<'_>) {
        let (layout, catalog) = self.engine.attach(ctx.node_id());
        self.gcp.durable_cluster = layout.durable();
        self.layout = Some(layout);
        self.catalog = Some(catalog);
        self.slots.reserve(self.settings.max_transactions.min(1 << 16) as usize);
        self.scans.set_capacity(self.settings.max_scans as usize, 64);
        let _ = ctx.send_delayed(TIMER_PERIOD_NS, TC_TIMER, TcTimer::default().as_words());
    }

    fn bump(&self, ctx: &Context<'_>, counter: Option<CounterId>) {
        if let Some(c) = counter {
            ctx.bump(c, 1);
        }
    }

    fn tx_in(slots: &mut [Option<Tx>], slot: u32, id: u64) -> Option<&mut Tx> {
        slots.get_mut(slot as usize).and_then(Option::as_mut).filter(|t| t.id == id)
    }

    /// The transaction `id` of `client`, made when new.
    fn find_or_open(&mut self, client: BlockRef, id: u64, now: u64) -> Result<u32, Failure> {
        if let Some(slot) = self.by_id.get(&(client.node, id)) {
            return Ok(*slot);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.slots.len() < self.settings.max_transactions as usize => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
            None => {
                return Err(failure(
                    ErrorCode::Overload,
                    u32::MAX,
                    format!("all {} transaction records of this coordinator are in use", self.settings.max_transactions),
                ))
            }
        };
        self.slots[slot as usize] = Some(Tx {
            id,
            client,
            state: TxState::Open,
            ops: Vec::new(),
            batch_ops: 0,
            outstanding: 0,
            pending: 0,
            exec: None,
            failure: None,
            read_backup: false,
            client_waiting: false,
            replied: false,
            last_activity_ns: now,
            batch_started_ns: now,
            scan_storages: Vec::new(),
            disk: false,
            gci: 0,
            writes: false,
        });
        self.by_id.insert((client.node, id), slot);
        Ok(slot)
    }

    fn free_tx(&mut self, slot: u32) {
        if let Some(tx) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.by_id.remove(&(tx.client.node, tx.id));
            self.free.push(slot);
        }
    }

    fn on_key_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<TcKeyReq>(signal).copied() else { return };
        let id = join(req.tx_low, req.tx_high);
        let client = signal.sender();
        let now = ctx.now_ns();
        let slot = match self.find_or_open(client, id, now) {
            Ok(slot) => slot,
            Err(f) => return reply_ref(&mut self.out, ctx, client, id, &f),
        };
        let max_ops = self.settings.max_operations_per_transaction as usize;
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        tx.last_activity_ns = now;
        match tx.state {
            TxState::Open => {
                tx.state = TxState::Executing;
                tx.batch_ops = 0;
                tx.batch_started_ns = now;
            }
            TxState::Executing => {}
            TxState::Aborted => return,
            _ => {
                let f = failure(ErrorCode::Protocol, req.op_no, "an operation after commit or abort began".into());
                tx.failure.get_or_insert(f);
                return;
            }
        }
        tx.batch_ops += 1;
        if tx.failure.is_some() {
            return;
        }
        if tx.ops.len() >= max_ops {
            tx.failure = Some(failure(
                ErrorCode::Overload,
                req.op_no,
                format!("a transaction holds at most {max_ops} operations (max_operations_per_transaction)"),
            ));
            return;
        }
        match self.route(&req, signal, ctx.me().node) {
            Ok((op, lqh, to, read_backup)) => self.send_op(slot, op, lqh, to, read_backup, signal, ctx),
            Err(f) => {
                if let Some(tx) = self.slots[slot as usize].as_mut() {
                    tx.failure.get_or_insert(f);
                }
            }
        }
    }

    /// Where an operation goes: its table, partition and replicas.
    fn route(
        &self,
        req: &TcKeyReq,
        signal: &SignalView<'_>,
        me: NodeId,
    ) -> Result<(TcOp, LqhKeyReq, BlockRef, bool), Failure> {
        let (Some(catalog), Some(layout)) = (&self.catalog, &self.layout) else {
            return Err(failure(ErrorCode::NotConnected, req.op_no, "coordinator not started".into()));
        };
        let table =
            catalog.get(req.table, req.table_version).map_err(|(code, m)| failure(code, req.op_no, m))?;
        let kind = OpKind::from_u32(req.operation).ok_or_else(|| {
            failure(ErrorCode::Protocol, req.op_no, format!("unknown operation {}", req.operation))
        })?;
        let lock = LockMode::from_u32(req.lock)
            .ok_or_else(|| failure(ErrorCode::Protocol, req.op_no, format!("unknown lock mode {}", req.lock)))?;
        let key = signal.section(0).and_then(row::words_to_bytes).ok_or_else(|| {
            failure(ErrorCode::BadKey, req.op_no, format!("table {:?}: no key section", table.name()))
        })?;
        let prefix = row::check_key(&table, &key)
            .map_err(|e| failure(ErrorCode::BadKey, req.op_no, format!("table {:?}: {e}", table.name())))?;
        let partition = row::partition_of(&table, &key, prefix);
        let replicas = self.live.replicas(layout, partition).ok_or_else(|| {
            failure(ErrorCode::NodeFailure, req.op_no, format!("every replica of partition {partition} is on a dead data node"))
        })?;
        let committed_read = kind == OpKind::Read && lock == LockMode::CommittedRead;
        // A committed read of a read-backup table goes to the replica on this node when there
        // is one; every other operation starts at the primary.
        let to = match replicas.backup {
            Some(b) if committed_read && table.def.read_backup && b.node == me => b,
            _ => replicas.primary,
        };
        let next = if kind.writes() { replicas.backup.map_or(0, BlockRef::to_word) } else { 0 };
        let lqh = LqhKeyReq {
            tx_low: req.tx_low,
            tx_high: req.tx_high,
            table: req.table,
            table_version: req.table_version,
            partition,
            operation: req.operation,
            lock: if kind.writes() { LockMode::Exclusive as u32 } else { req.lock },
            flags: if next == 0 { LQH_LAST_REPLICA } else { 0 },
            next_ref: next,
            api_ref: signal.sender().to_word(),
            ..LqhKeyReq::default()
        };
        let op = TcOp {
            op_no: req.op_no,
            table: req.table,
            kind,
            locked: !committed_read,
            state: OpState::Sent,
            primary: replicas.primary,
            backup: replicas.backup.filter(|_| kind.writes()),
            done: false,
            primary_ref: 0,
            primary_op: 0,
            backup_ref: 0,
            backup_op: 0,
        };
        Ok((op, lqh, to, table.def.read_backup && kind.writes()))
    }

    #[allow(clippy::too_many_arguments)]
    fn send_op(
        &mut self,
        slot: u32,
        op: TcOp,
        mut lqh: LqhKeyReq,
        to: BlockRef,
        read_backup: bool,
        signal: &SignalView<'_>,
        ctx: &mut Context<'_>,
    ) {
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        lqh.tc_ref = ctx.me().to_word();
        lqh.tc_slot = slot;
        lqh.tc_op = tx.ops.len() as u32;
        tx.ops.push(op);
        tx.outstanding += 1;
        tx.read_backup |= read_backup;
        let sections: Vec<&[u32]> = signal.sections().take(2).collect();
        if !self.out.send(ctx, LQH_KEYREQ, to, lqh.as_words(), &sections) {
            let tx = self.slots[slot as usize].as_mut();
            if let Some(tx) = tx {
                tx.outstanding -= 1;
                if let Some(o) = tx.ops.last_mut() {
                    o.state = OpState::Refused;
                }
                tx.failure.get_or_insert(failure(
                    ErrorCode::NodeFailure,
                    op.op_no,
                    format!("cannot reach storage {to}"),
                ));
            }
        }
    }

    fn on_exec_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<TcExecReq>(signal).copied() else { return };
        let id = join(req.tx_low, req.tx_high);
        let client = signal.sender();
        let now = ctx.now_ns();
        let slot = match self.find_or_open(client, id, now) {
            Ok(slot) => slot,
            Err(f) => return reply_ref(&mut self.out, ctx, client, id, &f),
        };
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        tx.last_activity_ns = now;
        match tx.state {
            TxState::Aborted => {
                let f = tx.failure.clone().unwrap_or_else(|| failure(ErrorCode::Aborted, u32::MAX, String::new()));
                reply_ref(&mut self.out, ctx, client, id, &f);
                self.free_tx(slot);
                return;
            }
            TxState::Open => {
                tx.state = TxState::Executing;
                tx.batch_ops = 0;
                tx.batch_started_ns = now;
            }
            TxState::Executing => {}
            _ => {
                tracing::warn!(tx = id, "TC_EXECREQ while committing or aborting: dropped");
                return;
            }
        }
        let Some(exec) = Exec::from_u32(req.exec) else {
            tx.failure.get_or_insert(failure(ErrorCode::Protocol, u32::MAX, format!("unknown execute {}", req.exec)));
            tx.exec = Some(Exec::Rollback);
            tx.client_waiting = true;
            return self.check_batch(slot, ctx);
        };
        match (req.durability, exec) {
            (DURABILITY_MEMORY, _) => {}
            (DURABILITY_DISK, Exec::Commit) if !self.gcp.durable_cluster => {
                let m = "a disk-durable commit needs data nodes with a data_dir (this cluster keeps its data in memory only)";
                tx.failure.get_or_insert(failure(ErrorCode::NotDurable, u32::MAX, m.into()));
            }
            (DURABILITY_DISK, _) => tx.disk = true,
            (other, _) => {
                tx.failure.get_or_insert(failure(ErrorCode::Protocol, u32::MAX, format!("unknown durability {other}")));
            }
        }
        if req.operations != tx.batch_ops {
            tx.failure.get_or_insert(failure(
                ErrorCode::Protocol,
                u32::MAX,
                format!("the batch announced {} operations, {} arrived", req.operations, tx.batch_ops),
            ));
        }
        tx.exec = Some(exec);
        tx.client_waiting = true;
        self.check_batch(slot, ctx);
    }

    /// When every operation of the batch is answered and the execute has come: what next.
    fn check_batch(&mut self, slot: u32, ctx: &mut Context<'_>) {
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        if tx.state != TxState::Executing || tx.outstanding > 0 {
            return;
        }
        let Some(exec) = tx.exec else { return };
        if let Some(f) = tx.failure.clone() {
            return self.abort(slot, f, ctx);
        }
        match exec {
            Exec::NoCommit => {
                tx.state = TxState::Open;
                tx.exec = None;
                tx.client_waiting = false;
                let (tx_low, tx_high) = split(tx.id);
                let conf = TcExecConf { tx_low, tx_high, outcome: OUTCOME_EXECUTED, ..TcExecConf::default() };
                self.out.send(ctx, TC_EXECCONF, tx.client, conf.as_words(), &[]);
            }
            Exec::Commit => self.commit(slot, ctx),
            Exec::Rollback => {
                let f = Failure { rollback: true, ..failure(ErrorCode::Aborted, u32::MAX, "rolled back".into()) };
                self.abort(slot, f, ctx)
            }
        }
    }

    fn commit(&mut self, slot: u32, ctx: &mut Context<'_>) {
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        // A transaction that wrote nothing logs nothing: it needs no GCI and never waits.
        tx.writes = tx.ops.iter().any(|o| o.kind.writes());
        if tx.writes && self.gcp.must_hold() {
            self.gcp.held.push((slot, tx.id));
            return;
        }
        tx.state = TxState::Committing;
        if tx.writes {
            tx.gci = self.gcp.open_gci;
            *self.gcp.committing.entry(tx.gci).or_insert(0) += 1;
        }
        if tx.disk && tx.writes && self.gcp.close_asked < tx.gci {
            self.gcp.close_asked = tx.gci;
            let (gci_low, gci_high) = split(tx.gci);
            let to = Layout::checkpoint_of(ctx.node_id());
            self.out.send(ctx, GCP_CLOSE_REQ, to, GcpCloseReq { gci_low, gci_high }.as_words(), &[]);
        }
        if self.send_along_chains(slot, COMMIT_REQ, ctx) == 0 {
            self.committed(slot, ctx);
        }
    }

    /// Sends `gsn` (`COMMIT_REQ` or `COMPLETE_REQ`: one layout) for every operation of the
    /// transaction that holds storage records, to its last replica first (the backup, which
    /// passes it to the primary); records how many answers to wait for and returns it.
    fn send_along_chains(&mut self, slot: u32, gsn: signals::Gsn, ctx: &mut Context<'_>) -> u32 {
        const _: () = assert!(std::mem::size_of::<CommitReq>() == std::mem::size_of::<CompleteReq>());
        let me = ctx.me().to_word();
        let Some(tx) = self.slots[slot as usize].as_mut() else { return 0 };
        let (tx_low, tx_high) = split(tx.id);
        let mut sent = 0;
        for (i, op) in tx.ops.iter_mut().enumerate() {
            op.done = true;
            if !op.locked || op.primary_ref == 0 {
                continue;
            }
            if repair::broken(&self.live, op) {
                op.done = false;
                sent += 1;
                continue;
            }
            let (first, first_op, next_ref, next_op) = if op.backup_ref != 0 {
                (op.backup_ref, op.backup_op, op.primary_ref, op.primary_op)
            } else {
                (op.primary_ref, op.primary_op, 0, 0)
            };
            let (gci_low, gci_high) = split(tx.gci);
            let req = CommitReq {
                tx_low,
                tx_high,
                tc_ref: me,
                tc_slot: slot,
                tc_op: i as u32,
                op: first_op,
                next_ref,
                next_op,
                gci_low,
                gci_high,
            };
            // A send that fails (the link is down) waits, unanswered, for the membership's
            // NODE_FAILED, which repairs the chain.
            op.done = false;
            sent += 1;
            if let Some(to) = BlockRef::from_word(first) {
                self.out.send(ctx, gsn, to, req.as_words(), &[]);
            }
        }
        tx.pending = sent;
        // A chain a dead data node broke is repaired (its replica left is asked alone).
        self.repair_chains(slot, ctx);
        self.slots[slot as usize].as_ref().map_or(0, |t| t.pending)
    }

    /// Every chain committed: answer (unless read-backup waits for complete), then complete.
    fn committed(&mut self, slot: u32, ctx: &mut Context<'_>) {
        self.bump(ctx, self.counters.committed);
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        let (gci, writes) = (tx.gci, tx.writes);
        if !tx.read_backup {
            self.acknowledge(slot, ctx);
        }
        if writes {
            self.gcp.commit_done(gci);
        }
        self.check_finish(ctx);
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        tx.state = TxState::Completing;
        self.release_scan_locks(slot, ctx);
        if self.send_along_chains(slot, COMPLETE_REQ, ctx) > 0 {
            return;
        }
        self.acknowledge(slot, ctx);
        self.free_tx(slot);
    }

    /// Aborts every operation that may hold a record, then answers.
    fn abort(&mut self, slot: u32, f: Failure, ctx: &mut Context<'_>) {
        if !f.rollback {
            self.bump(ctx, self.counters.aborted);
        }
        self.release_scan_locks(slot, ctx);
        let me = ctx.me().to_word();
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        tx.state = TxState::Aborting;
        tx.failure = Some(f);
        let (tx_low, tx_high) = split(tx.id);
        let mut sent = 0;
        let layout = self.layout.as_deref();
        for (i, op) in tx.ops.iter_mut().enumerate() {
            op.done = true;
            if !op.locked {
                continue;
            }
            if repair::broken(&self.live, op) || repair::passed_on_to_dead(layout, &self.live, op) {
                op.done = false;
                sent += 1;
                continue;
            }
            let req = AbortReq { tx_low, tx_high, tc_ref: me, tc_slot: slot, tc_op: i as u32 };
            // As for commit: a failed send waits for NODE_FAILED to repair it.
            op.done = false;
            sent += 1;
            self.out.send(ctx, ABORT_REQ, op.primary, req.as_words(), &[]);
        }
        tx.pending = sent;
        tx.outstanding = 0;
        self.repair_chains(slot, ctx);
        if self.slots[slot as usize].as_ref().is_some_and(|t| t.pending == 0) {
            self.aborted(slot, ctx);
        }
    }

    fn aborted(&mut self, slot: u32, ctx: &mut Context<'_>) {
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        let f = tx.failure.clone().unwrap_or_else(|| failure(ErrorCode::Aborted, u32::MAX, String::new()));
        if !tx.client_waiting {
            tx.state = TxState::Aborted;
            return;
        }
        if f.rollback {
            let (tx_low, tx_high) = split(tx.id);
            let conf = TcExecConf { tx_low, tx_high, outcome: OUTCOME_ROLLED_BACK, ..TcExecConf::default() };
            self.out.send(ctx, TC_EXECCONF, tx.client, conf.as_words(), &[]);
        } else {
            reply_ref(&mut self.out, ctx, tx.client, tx.id, &f);
        }
        self.free_tx(slot);
    }

    fn on_lqh_conf(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(conf) = ctx.typed::<LqhKeyConf>(signal).copied() else { return };
        let id = join(conf.tx_low, conf.tx_high);
        let Some(tx) = Self::tx_in(&mut self.slots, conf.tc_slot, id) else { return self.stale(ctx, "LQH_KEYCONF", id) };
        let Some(op) = tx.ops.get_mut(conf.tc_op as usize).filter(|o| o.state == OpState::Sent) else {
            return self.stale(ctx, "LQH_KEYCONF", id);
        };
        if tx.state != TxState::Executing {
            return;
        }
        op.state = OpState::Prepared;
        op.primary_ref = conf.primary_ref;
        op.primary_op = conf.primary_op;
        op.backup_ref = conf.backup_ref;
        op.backup_op = conf.backup_op;
        if op.backup.is_none() && conf.backup_ref != 0 {
            // The primary passed the write on to a restarting replica this map does not name.
            op.backup = BlockRef::from_word(conf.backup_ref);
        }
        let op_no = op.op_no;
        if op.kind == OpKind::Read {
            let (tx_low, tx_high) = split(id);
            let keyconf = TcKeyConf { tx_low, tx_high, op_no, found: conf.found };
            let section: Vec<&[u32]> = signal.section(0).into_iter().collect();
            self.out.send(ctx, TC_KEYCONF, tx.client, keyconf.as_words(), &section);
        }
        tx.outstanding -= 1;
        self.check_batch(conf.tc_slot, ctx);
    }

    fn on_lqh_ref(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(r) = ctx.typed::<LqhKeyRef>(signal).copied() else { return };
        let id = join(r.tx_low, r.tx_high);
        let Some(tx) = Self::tx_in(&mut self.slots, r.tc_slot, id) else { return self.stale(ctx, "LQH_KEYREF", id) };
        let Some(op) = tx.ops.get_mut(r.tc_op as usize).filter(|o| o.state == OpState::Sent) else {
            return self.stale(ctx, "LQH_KEYREF", id);
        };
        if tx.state != TxState::Executing {
            return;
        }
        op.state = OpState::Refused;
        let code = ErrorCode::from_u32(r.error).unwrap_or(ErrorCode::Protocol);
        let message = signal
            .section(0)
            .and_then(row::words_to_bytes)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| code.name().to_string());
        let op_no = op.op_no;
        tx.failure.get_or_insert(failure(code, op_no, message));
        tx.outstanding -= 1;
        self.check_batch(r.tc_slot, ctx);
    }

    /// A commit, complete or abort confirm.
    fn on_phase_conf(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let words = signal.data();
        let (Some(&tx_low), Some(&tx_high), Some(&slot)) = (words.first(), words.get(1), words.get(2)) else {
            return ctx.unhandled(signal);
        };
        let id = join(tx_low, tx_high);
        let expected = match signal.gsn() {
            COMMIT_CONF => TxState::Committing,
            COMPLETE_CONF => TxState::Completing,
            _ => TxState::Aborting,
        };
        let op = words.get(3).copied().unwrap_or(u32::MAX);
        self.op_done(slot, id, op, expected, ctx);
    }

    /// Operation `op` of the transaction in `slot` answered its phase (`expected` is the
    /// state that phase runs in); the phase ends when every operation has.
    fn op_done(&mut self, slot: u32, id: u64, op: u32, expected: TxState, ctx: &mut Context<'_>) {
        let Some(tx) = Self::tx_in(&mut self.slots, slot, id).filter(|t| t.state == expected && t.pending > 0) else {
            return self.stale(ctx, "phase confirm", id);
        };
        let Some(op) = tx.ops.get_mut(op as usize).filter(|o| !o.done) else {
            return self.stale(ctx, "phase confirm", id);
        };
        op.done = true;
        tx.pending -= 1;
        if tx.pending > 0 {
            return;
        }
        self.phase_done(slot, expected, ctx);
    }

    /// Every operation answered the phase that runs in state `expected`: the next step.
    fn phase_done(&mut self, slot: u32, expected: TxState, ctx: &mut Context<'_>) {
        match expected {
            TxState::Committing => self.committed(slot, ctx),
            TxState::Completing => {
                self.acknowledge(slot, ctx);
                self.free_tx(slot);
            }
            _ => self.aborted(slot, ctx),
        }
    }

    fn stale(&self, ctx: &Context<'_>, what: &str, id: u64) {
        self.bump(ctx, self.counters.stale);
        tracing::debug!(what, tx = id, "answer for a transaction no longer here: dropped");
    }

    /// Deadlock and inactive timeouts.
    fn on_timer(&mut self, ctx: &mut Context<'_>) {
        let now = ctx.now_ns();
        let deadlock_ns = self.settings.transaction_deadlock_timeout_ms * 1_000_000;
        let inactive_ns = self.settings.transaction_inactive_timeout_ms * 1_000_000;
        let mut expired = Vec::new();
        for (slot, tx) in self.slots.iter().enumerate() {
            let Some(tx) = tx else { continue };
            match tx.state {
                TxState::Executing if tx.outstanding > 0 && now.saturating_sub(tx.batch_started_ns) > deadlock_ns => {
                    let op = tx.ops.iter().find(|o| o.state == OpState::Sent);
                    let message = format!(
                        "an operation waited over {} ms (transaction_deadlock_timeout_ms) for a lock{}: probably a deadlock",
                        self.settings.transaction_deadlock_timeout_ms,
                        op.map(|o| format!(" on table id {}", o.table)).unwrap_or_default()
                    );
                    expired.push((slot as u32, failure(ErrorCode::Deadlock, op.map_or(u32::MAX, |o| o.op_no), message)));
                }
                TxState::Open if inactive_ns > 0 && now.saturating_sub(tx.last_activity_ns) > inactive_ns => {
                    let message = format!(
                        "the transaction was idle over {} ms (transaction_inactive_timeout_ms)",
                        self.settings.transaction_inactive_timeout_ms
                    );
                    expired.push((slot as u32, failure(ErrorCode::InactiveTimeout, u32::MAX, message)));
                }
                TxState::Aborted if now.saturating_sub(tx.last_activity_ns) > inactive_ns.max(deadlock_ns) * 10 => {
                    expired.push((slot as u32, failure(ErrorCode::Aborted, u32::MAX, String::new())));
                }
                _ => {}
            }
        }
        self.expire_scans(now, ctx);
        for (slot, f) in expired {
            match self.slots[slot as usize].as_ref().map(|t| t.state) {
                Some(TxState::Aborted) => self.free_tx(slot),
                _ => {
                    if f.code == ErrorCode::Deadlock {
                        self.bump(ctx, self.counters.deadlocks);
                    }
                    self.abort(slot, f, ctx)
                }
            }
        }
        let _ = ctx.send_delayed(TIMER_PERIOD_NS, TC_TIMER, TcTimer::default().as_words());
    }

    /// A node's link failed: its transactions (an API node) abort.
    fn on_node_failure(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(rep) = ctx.typed_head::<NodeFailRep>(signal).map(|(r, _)| *r) else { return };
        let Some(node) = NodeId::new(rep.node) else { return };
        if self.layout.as_ref().is_some_and(|l| l.is_data_node(node)) {
            // A scan with a partition on that node cannot finish: its client hears so now.
            // The rest of data-node failure handling (takeover, promotion) is the membership
            // block's.
            self.fail_scans_on(node, ctx);
            return;
        }
        self.close_scans_of(node, ctx);
        let slots: Vec<u32> = self.by_id.iter().filter(|((n, _), _)| *n == node).map(|(_, s)| *s).collect();
        for slot in slots {
            let Some(tx) = self.slots[slot as usize].as_mut() else { continue };
            tx.client_waiting = false;
            match tx.state {
                TxState::Open | TxState::Executing => {
                    let message = format!("API node {node} disconnected");
                    self.abort(slot, failure(ErrorCode::NodeFailure, u32::MAX, message), ctx);
                }
                TxState::Aborted => self.free_tx(slot),
                _ => {}
            }
        }
        tracing::info!(%node, "API node gone: its transactions aborted");
    }
}

fn failure(code: ErrorCode, op_no: u32, message: String) -> Failure {
    Failure { code, op_no, message, rollback: false }
}

fn reply_committed(out: &mut Resend, ctx: &mut Context<'_>, client: BlockRef, id: u64, gci: u64) {
    let (tx_low, tx_high) = split(id);
    let (gci_low, gci_high) = split(gci);
    let conf = TcExecConf { tx_low, tx_high, outcome: OUTCOME_COMMITTED, gci_low, gci_high };
    out.send(ctx, TC_EXECCONF, client, conf.as_words(), &[]);
}

fn reply_ref(out: &mut Resend, ctx: &mut Context<'_>, client: BlockRef, id: u64, f: &Failure) {
    let (tx_low, tx_high) = split(id);
    let r = TcExecRef { tx_low, tx_high, error: f.code as u32, op_no: f.op_no, outcome_unknown: 0 };
    let words = row::bytes_to_words(f.message.as_bytes());
    out.send(ctx, TC_EXECREF, client, r.as_words(), &[&words]);
}

impl Block for Coordinator {
    fn init(&mut self, init: &mut InitContext<'_>) {
        init.subscribe_node_events();
        self.counters = Counters {
            committed: Some(init.counter("transactions_committed")),
            aborted: Some(init.counter("transactions_aborted")),
            deadlocks: Some(init.counter("deadlock_timeouts")),
            stale: Some(init.counter("stale_signals")),
            scans: Some(init.counter("scans")),
            scans_pruned: Some(init.counter("scans_pruned")),
        };
    }

    fn execute(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let from = signal.sender().node;
        if from != ctx.node_id() {
            let now = ctx.now_ns();
            self.heard.get_or_insert_with(|| self.engine.heard(ctx.node_id())).note(from, now);
        }
        // Answers of the commit protocol come from storage blocks (data nodes); timers from
        // this block.
        let internal = matches!(
            signal.gsn(),
            LQH_KEYCONF
                | LQH_KEYREF
                | COMMIT_CONF
                | COMPLETE_CONF
                | ABORT_CONF
                | TC_TIMER
                | RESEND
                | SCAN_FRAGCONF
                | SCAN_FRAGREF
                | GCP_PREPARE
                | GCP_COMMIT
                | GCP_SAVED
                | REPAIR_CONF
                | TAKEOVER_OP
                | TAKEOVER_CONF
        );
        if internal && !crate::internal_from_live_data_node(self.layout.as_ref(), &self.live, signal, ctx) {
            return;
        }
        if matches!(signal.gsn(), NODE_FAILED | MEMBER_MAP) && !crate::from_own_membership(signal, ctx) {
            return;
        }
        match signal.gsn() {
            TC_KEYREQ => self.on_key_req(signal, ctx),
            TC_EXECREQ => self.on_exec_req(signal, ctx),
            LQH_KEYCONF => self.on_lqh_conf(signal, ctx),
            LQH_KEYREF => self.on_lqh_ref(signal, ctx),
            COMMIT_CONF | COMPLETE_CONF | ABORT_CONF => self.on_phase_conf(signal, ctx),
            SCAN_TABREQ => self.on_scan_tab_req(signal, ctx),
            SCAN_NEXTREQ => self.on_scan_next(signal, ctx),
            SCAN_FRAGCONF => self.on_scan_frag_conf(signal, ctx),
            SCAN_FRAGREF => self.on_scan_frag_ref(signal, ctx),
            TC_TIMER => self.on_timer(ctx),
            GCP_PREPARE => self.on_gcp_prepare(signal, ctx),
            GCP_COMMIT => self.on_gcp_commit(signal, ctx),
            GCP_SAVED => self.on_gcp_saved(signal, ctx),
            RESEND => self.out.on_timer(ctx),
            gsn::NODE_FAILREP => self.on_node_failure(signal, ctx),
            NODE_FAILED => self.on_node_failed(signal, ctx),
            MEMBER_MAP => self.on_member_map(signal, ctx),
            REPAIR_CONF => self.on_repair_conf(signal, ctx),
            TAKEOVER_OP => self.on_takeover_op(signal, ctx),
            TAKEOVER_CONF => self.on_takeover_conf(signal, ctx),
            gsn::NODE_CONNECTED => {}
            gsn::START_ORD => {
                if crate::is_first_phase(ctx, signal) {
                    self.start(ctx);
                }
            }
            gsn::STOP_REQ => {}
            _ => ctx.unhandled(signal),
        }
    }
}
