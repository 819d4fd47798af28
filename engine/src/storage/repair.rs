//! What a storage instance does after a data node failure (NDB's DBLQH part of node-failure
//! handling): it forgets the dead node's replicas ([`crate::layout::LiveMap`]), reports the
//! operation records whose coordinator died to the coordinator taking them over
//! (`TAKEOVER_REQ`), and commits, completes or aborts single records on request
//! (`REPAIR_REQ`), without passing anything along a chain that a dead node broke.

use signals::{BlockRef, NodeId, SignalData, SignalView};

use node::block::Context;

use super::{OpState, Storage};
use crate::protocol::*;

impl Storage {
    /// `NODE_FAILED` from this node's membership block.
    pub(super) fn on_node_failed(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(f) = ctx.typed::<NodeFailed>(signal).copied() else { return };
        let Some(node) = NodeId::new(f.node) else { return };
        self.live.mark_dead(node, f.version);
        self.copy_node_failed(node);
        self.run_ready(ctx);
    }

    /// `MEMBER_MAP` from this node's membership block: a restart's step.
    pub(super) fn on_member_map(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(map) = crate::member_map(self.layout.as_ref(), signal, ctx) else { return };
        if self.live.adopt(&map) {
            let gone: Vec<NodeId> = map.dead().collect();
            for node in gone {
                self.copy_node_failed(node);
            }
            self.run_ready(ctx);
        }
    }

    /// Reports every operation record whose coordinator is on a dead data node; records
    /// still waiting for a lock have run nowhere and are aborted here.
    pub(super) fn on_takeover_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<TakeoverReq>(signal).copied() else { return };
        // The president may ask before this node's own NODE_FAILED arrives.
        let is_data = |n: &NodeId| self.layout.as_ref().is_some_and(|l| l.is_data_node(*n));
        let dead: Option<Vec<NodeId>> =
            signal.section(0).unwrap_or(&[]).iter().map(|w| NodeId::new(*w).filter(is_data)).collect();
        let Some(dead) = dead else {
            tracing::warn!(sender = %signal.sender(), "TAKEOVER_REQ names a node that is no data node: dropped");
            return ctx.unhandled(signal);
        };
        for node in dead {
            self.live.mark_dead(node, self.live.version);
        }
        let live = self.live.clone();
        let orphaned = |tc_ref: u32| BlockRef::from_word(tc_ref).is_some_and(|r| !live.is_alive(r.node));
        let mut waiting = Vec::new();
        let mut reports = Vec::new();
        for (handle, rec) in self.ops.iter_mut() {
            if !orphaned(rec.req.tc_ref) {
                continue;
            }
            let state = match rec.state {
                OpState::Waiting => {
                    waiting.push(handle);
                    continue;
                }
                OpState::Prepared => TAKEOVER_PREPARED,
                OpState::Committed => TAKEOVER_COMMITTED,
            };
            let (gci_low, gci_high) = split(rec.gci);
            reports.push(TakeoverOp {
                tx_low: rec.req.tx_low,
                tx_high: rec.req.tx_high,
                tc_ref: rec.req.tc_ref,
                tc_slot: rec.req.tc_slot,
                tc_op: rec.req.tc_op,
                state,
                gci_low,
                gci_high,
                generation: req.generation,
                api_ref: rec.req.api_ref,
            });
        }
        for handle in &waiting {
            self.release_op(*handle, true);
        }
        let to = signal.sender();
        for r in &reports {
            self.out.send(ctx, TAKEOVER_OP, to, r.as_words(), &[]);
        }
        let conf = TakeoverConf { generation: req.generation, ops: reports.len() as u32 };
        self.out.send(ctx, TAKEOVER_CONF, to, conf.as_words(), &[]);
        tracing::info!(generation = req.generation, reported = reports.len(), aborted_waiting = waiting.len(), "operations of dead coordinators reported for takeover");
        self.run_ready(ctx);
    }

    /// Commits, completes or aborts the one record named, on this replica only.
    pub(super) fn on_repair(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<RepairReq>(signal).copied() else { return };
        let tx = join(req.tx_low, req.tx_high);
        let handle = self
            .by_tc
            .get(&(req.tc_ref, req.tc_slot, req.tc_op))
            .copied()
            .filter(|h| self.ops.get(*h).is_some_and(|r| r.tx == (req.tc_ref, tx)));
        let mut found = u32::from(handle.is_some());
        if let Some(handle) = handle {
            let state = self.ops.get(handle).map(|r| r.state);
            match (req.action, state) {
                (REPAIR_COMMIT, Some(OpState::Prepared | OpState::Committed)) => {
                    self.commit_record(handle, join(req.gci_low, req.gci_high), ctx);
                }
                (REPAIR_COMPLETE, Some(OpState::Committed)) => {
                    self.release_op(handle, false);
                }
                (REPAIR_ABORT, Some(OpState::Waiting | OpState::Prepared)) => {
                    self.release_op(handle, true);
                }
                (action, state) => {
                    found = 0;
                    tracing::error!(action, ?state, tx, "a repair that does not fit the record's state: refused");
                }
            }
        }
        let conf = RepairConf {
            tx_low: req.tx_low,
            tx_high: req.tx_high,
            tc_slot: req.tc_slot,
            tc_op: req.tc_op,
            action: req.action,
            found,
            tag: req.tag,
        };
        self.out.send(ctx, REPAIR_CONF, signal.sender(), conf.as_words(), &[]);
        self.run_ready(ctx);
    }
}
