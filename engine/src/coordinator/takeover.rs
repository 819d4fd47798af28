//! Coordinator takeover (NDB's DBTC take-over of a failed node's transactions): when a data
//! node dies, the first coordinator of the president finishes the transactions the dead
//! node's coordinators were running.
//! ```text
//! president's coordinator --TAKEOVER_REQ(dead)--> every live storage instance
//!     <--TAKEOVER_OP-- each record whose coordinator is on a dead node (its state, its GCI)
//!     <--TAKEOVER_CONF(count)--
//! per transaction: committed on any replica? --REPAIR_REQ(commit)--> its other records,
//!                                             then REPAIR_REQ(complete) to all of them
//!                  otherwise                  --REPAIR_REQ(abort)--> all of them
//! ```
//! A storage instance marks the dead node dead when asked, and from then on drops requests
//! (operations, commits, completes, aborts) that name a dead coordinator, so a signal still in
//! flight from before the failure cannot change a record after it was reported. A commit is
//! decided only by what a replica holds: a transaction some replica committed commits
//! everywhere, any other aborts. Its client saw `NodeFailure` (with `outcome_unknown` when it
//! had asked to commit: its link to the dead coordinator failed, or its map called that node
//! dead); once the transaction is finished everywhere, this coordinator tells the client's
//! session the outcome (`TC_OUTCOME_REP`, NDB's commit-ack marker's role), which a client asks
//! for with `Session::outcome`. A transaction no replica holds a record of is not reported:
//! none of its operations was prepared (it did not commit), or it had finished its complete
//! phase (it committed; a disk-durable commit's reply may still have been waiting for its
//! global checkpoint): its outcome stays unknown to the client (NDB's marker, kept until the
//! client is answered, is not built).

use std::collections::{BTreeSet, HashMap};

use node::block::Context;
use signals::{BlockInstance, BlockRef, NodeId, SignalData, SignalView};

use super::Coordinator;
use crate::protocol::*;
use crate::STORAGE;

/// One record of a taken-over transaction.
#[derive(Clone, Copy, Debug)]
struct TakenOp {
    storage: BlockRef,
    tc_ref: u32,
    tc_slot: u32,
    tc_op: u32,
    committed: bool,
    done: bool,
}

/// A taken-over transaction.
#[derive(Debug, Default)]
struct Taken {
    tx: u64,
    ops: Vec<TakenOp>,
    committed: bool,
    gci: u64,
    /// The action of the current step.
    action: u32,
    pending: u32,
    /// The API node session it belongs to (0: unknown).
    client: u32,
}

/// The takeovers of this coordinator.
#[derive(Debug, Default)]
pub(super) struct Takeovers {
    /// The collection running (a later failure starts a new one, and answers to an older
    /// one are dropped).
    generation: u32,
    /// Storage instances yet to report.
    waiting: BTreeSet<BlockRef>,
    /// What they reported, per (coordinator, transaction).
    collected: HashMap<(u32, u64), Taken>,
    /// Transactions being finished, by tag.
    running: HashMap<u32, Taken>,
    next_tag: u32,
    committed: u64,
    aborted: u64,
}

impl Coordinator {
    /// The president's first coordinator asks every live storage instance for the records of
    /// dead coordinators (again, from the start, when another node fails meanwhile).
    pub(super) fn start_takeover(&mut self, ctx: &mut Context<'_>) {
        let Some(layout) = self.layout.clone() else { return };
        if self.live.president(&layout) != Some(ctx.node_id()) || ctx.me().instance != BlockInstance(0) {
            return;
        }
        let storages: Vec<BlockRef> = self
            .live
            .alive(&layout)
            .flat_map(|n| (0..layout.storage_instances).map(move |i| BlockRef::new(n, STORAGE, BlockInstance(i))))
            .collect();
        self.takeovers.collected.clear();
        self.takeovers.generation = self.takeovers.generation.wrapping_add(1);
        self.takeovers.waiting = storages.iter().copied().collect();
        let req = TakeoverReq { generation: self.takeovers.generation };
        let dead: Vec<u32> = self.live.dead().map(|n| u32::from(n.get())).collect();
        for to in storages {
            // A storage instance that cannot be asked is on a node going dead: its failure
            // starts the collection again.
            self.out.send(ctx, TAKEOVER_REQ, to, req.as_words(), &[&dead]);
        }
        tracing::info!(?dead, storages = self.takeovers.waiting.len(), "taking over the transactions of dead coordinators");
    }

    pub(super) fn on_takeover_op(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(op) = ctx.typed::<TakeoverOp>(signal).copied() else { return };
        if op.generation != self.takeovers.generation || !self.takeovers.waiting.contains(&signal.sender()) {
            return self.stale(ctx, "TAKEOVER_OP", join(op.tx_low, op.tx_high));
        }
        let tx = join(op.tx_low, op.tx_high);
        let t = self.takeovers.collected.entry((op.tc_ref, tx)).or_insert_with(|| Taken { tx, ..Taken::default() });
        let committed = op.state == TAKEOVER_COMMITTED;
        if t.client == 0 {
            t.client = op.api_ref;
        }
        if committed {
            t.committed = true;
            t.gci = t.gci.max(join(op.gci_low, op.gci_high));
        }
        t.ops.push(TakenOp {
            storage: signal.sender(),
            tc_ref: op.tc_ref,
            tc_slot: op.tc_slot,
            tc_op: op.tc_op,
            committed,
            done: false,
        });
    }

    pub(super) fn on_takeover_conf(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(conf) = ctx.typed::<TakeoverConf>(signal).copied() else { return };
        if conf.generation != self.takeovers.generation || !self.takeovers.waiting.remove(&signal.sender()) {
            return;
        }
        if !self.takeovers.waiting.is_empty() {
            return;
        }
        let collected: Vec<Taken> = self.takeovers.collected.drain().map(|(_, t)| t).collect();
        let (commits, aborts) = (collected.iter().filter(|t| t.committed).count(), collected.iter().filter(|t| !t.committed).count());
        tracing::info!(commits, aborts, "takeover: every storage instance reported");
        for mut t in collected {
            self.takeovers.next_tag = self.takeovers.next_tag.wrapping_add(1).max(1);
            let tag = self.takeovers.next_tag;
            t.action = if t.committed { REPAIR_COMMIT } else { REPAIR_ABORT };
            self.takeover_step(tag, t, ctx);
        }
    }

    /// Sends the step's repair to every record that needs it; with none, the next step.
    fn takeover_step(&mut self, tag: u32, mut t: Taken, ctx: &mut Context<'_>) {
        loop {
            let (tx_low, tx_high) = split(t.tx);
            let (gci_low, gci_high) = split(t.gci);
            t.pending = 0;
            for op in &mut t.ops {
                op.done = t.action == REPAIR_COMMIT && op.committed;
                if op.done || !self.live.is_alive(op.storage.node) {
                    op.done = true;
                    continue;
                }
                let req = RepairReq {
                    tx_low,
                    tx_high,
                    tc_ref: op.tc_ref,
                    tc_slot: op.tc_slot,
                    tc_op: op.tc_op,
                    action: t.action,
                    gci_low,
                    gci_high,
                    tag,
                };
                // A failed send means that node is going: its failure marks the record done.
                self.out.send(ctx, REPAIR_REQ, op.storage, req.as_words(), &[]);
                t.pending += 1;
            }
            if t.pending > 0 {
                self.takeovers.running.insert(tag, t);
                return;
            }
            if t.action != REPAIR_COMMIT {
                return self.takeover_finished(&t, ctx);
            }
            t.action = REPAIR_COMPLETE;
        }
    }

    /// A data node died during takeovers: its storage instances answer nothing more (what
    /// they held is gone with them, and the new collection covers the rest).
    pub(super) fn takeover_node_failed(&mut self, dead: NodeId, ctx: &mut Context<'_>) {
        let mut advanced = Vec::new();
        for (tag, t) in &mut self.takeovers.running {
            for op in t.ops.iter_mut().filter(|o| !o.done && o.storage.node == dead) {
                op.done = true;
                t.pending -= 1;
            }
            if t.pending == 0 {
                advanced.push(*tag);
            }
        }
        for tag in advanced {
            let Some(mut t) = self.takeovers.running.remove(&tag) else { continue };
            if t.action == REPAIR_COMMIT {
                t.action = REPAIR_COMPLETE;
                self.takeover_step(tag, t, ctx);
            } else {
                self.takeover_finished(&t, ctx);
            }
        }
    }

    fn takeover_finished(&mut self, t: &Taken, ctx: &mut Context<'_>) {
        if t.committed {
            self.takeovers.committed += 1;
        } else {
            self.takeovers.aborted += 1;
        }
        // The client learns the outcome (an API node gone meanwhile does not).
        if let Some(client) = BlockRef::from_word(t.client).filter(|c| self.layout.as_ref().is_some_and(|l| !l.is_data_node(c.node))) {
            let (tx_low, tx_high) = split(t.tx);
            let (gci_low, gci_high) = split(t.gci);
            let outcome = if t.committed { OUTCOME_COMMITTED } else { OUTCOME_ABORTED };
            let rep = TcOutcomeRep { tx_low, tx_high, outcome, gci_low, gci_high };
            self.out.send(ctx, TC_OUTCOME_REP, client, rep.as_words(), &[]);
        }
        tracing::debug!(tx = t.tx, committed = t.committed, "taken-over transaction finished");
        if self.takeovers.running.is_empty() {
            tracing::info!(
                committed = self.takeovers.committed,
                aborted = self.takeovers.aborted,
                "takeover done: every transaction of the dead coordinators is committed or aborted on every live replica"
            );
        }
    }

    /// A `REPAIR_CONF` of a taken-over transaction.
    pub(super) fn takeover_repaired(&mut self, conf: &RepairConf, from: BlockRef, ctx: &mut Context<'_>) {
        let Some(t) = self.takeovers.running.get_mut(&conf.tag).filter(|t| t.action == conf.action) else {
            return self.stale(ctx, "REPAIR_CONF", join(conf.tx_low, conf.tx_high));
        };
        let tx = t.tx;
        let Some(op) = t.ops.iter_mut().find(|o| !o.done && o.storage == from && o.tc_slot == conf.tc_slot && o.tc_op == conf.tc_op) else {
            return self.stale(ctx, "REPAIR_CONF", tx);
        };
        op.done = true;
        t.pending -= 1;
        if t.pending > 0 {
            return;
        }
        let Some(mut t) = self.takeovers.running.remove(&conf.tag) else { return };
        if t.action == REPAIR_COMMIT {
            t.action = REPAIR_COMPLETE;
            return self.takeover_step(conf.tag, t, ctx);
        }
        self.takeover_finished(&t, ctx);
    }
}
