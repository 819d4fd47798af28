//! The coordinator after a data node failure (NDB's DBTC node-failure handling), for the
//! transactions it coordinates itself:
//! - one still executing, or open between batches, that has an operation on the dead node is
//!   aborted with `NodeFailure` (temporary: the client may run it again);
//! - one committing, completing or aborting goes on: each operation whose chain (primary, then
//!   backup for a write) the dead node broke is asked of its replica left alone
//!   (`REPAIR_REQ`), which commits, completes or aborts its record without passing anything
//!   on. So every transaction whose commit began ends committed on every live replica.
//!
//! The transactions whose coordinator died are taken over by the president's first
//! coordinator ([`super::takeover`]).

use node::block::Context;
use signals::{BlockRef, NodeId, SignalData, SignalView};

use super::{failure, Coordinator, TcOp, TxState};
use crate::error::ErrorCode;
use crate::layout::LiveMap;
use crate::protocol::*;

/// Whether a dead data node is on the operation's chain.
pub(super) fn broken(live: &LiveMap, op: &TcOp) -> bool {
    !live.is_alive(op.primary.node) || op.backup.is_some_and(|b| !live.is_alive(b.node))
}

/// Whether an unanswered write's primary may have passed it on to a replica of its node group
/// that has died (a restarting one the routing map did not name): then only the primary can
/// be asked, alone.
pub(super) fn passed_on_to_dead(layout: Option<&crate::layout::Layout>, live: &LiveMap, op: &TcOp) -> bool {
    let Some(layout) = layout else { return false };
    let primary = op.primary.node;
    op.backup.is_none()
        && op.kind.writes()
        && op.state == super::OpState::Sent
        && layout.group_of(primary).is_some_and(|g| layout.node_groups[g].iter().any(|n| *n != primary && !live.is_alive(*n)))
}

/// The action a phase's repair asks for.
fn action_of(state: TxState) -> Option<u32> {
    match state {
        TxState::Committing => Some(REPAIR_COMMIT),
        TxState::Completing => Some(REPAIR_COMPLETE),
        TxState::Aborting => Some(REPAIR_ABORT),
        _ => None,
    }
}

impl Coordinator {
    /// `MEMBER_MAP` from this node's membership block: a node restart's step (a restarting
    /// node's storage answers as a backup; a restarted one is a primary again).
    pub(super) fn on_member_map(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        if let Some(map) = crate::member_map(self.layout.as_ref(), signal, ctx) {
            self.live.adopt(&map);
        }
    }

    /// `NODE_FAILED` from this node's membership block.
    pub(super) fn on_node_failed(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(f) = ctx.typed::<NodeFailed>(signal).copied() else { return };
        let Some(dead) = NodeId::new(f.node) else { return };
        if !self.live.mark_dead(dead, f.version) {
            return;
        }
        let (mut aborted, mut repaired) = (0u32, 0u32);
        for slot in 0..self.slots.len() as u32 {
            let Some(tx) = self.slots[slot as usize].as_ref() else { continue };
            // An unanswered write may have been passed on to the dead node by its primary (a
            // restarting replica the routing map did not name): it may never be answered.
            let unanswered_write = |o: &TcOp| o.state == super::OpState::Sent && o.kind.writes();
            let touches = tx
                .ops
                .iter()
                .any(|o| o.primary.node == dead || o.backup.is_some_and(|b| b.node == dead) || unanswered_write(o));
            if !touches {
                continue;
            }
            let state = tx.state;
            match state {
                TxState::Open | TxState::Executing => {
                    aborted += 1;
                    let m = format!("data node {dead} failed while the transaction ran: run it again");
                    self.abort(slot, failure(ErrorCode::NodeFailure, u32::MAX, m), ctx);
                }
                TxState::Committing | TxState::Completing | TxState::Aborting => {
                    repaired += 1;
                    self.repair_chains(slot, ctx);
                    if self.slots[slot as usize].as_ref().is_some_and(|t| t.state == state && t.pending == 0) {
                        self.phase_done(slot, state, ctx);
                    }
                }
                TxState::Aborted => {}
            }
        }
        tracing::info!(%dead, map_version = f.version, aborted, repaired, "data node failed: transactions it touched are aborted or repaired");
        self.takeover_node_failed(dead, ctx);
        self.start_takeover(ctx);
    }

    /// Asks the replica left of every unanswered operation whose chain is broken to do the
    /// phase's step alone (again, after each failure: a repair lost on a link that failed is
    /// sent again). An operation with no replica left counts as answered.
    pub(super) fn repair_chains(&mut self, slot: u32, ctx: &mut Context<'_>) {
        if self.live.dead().next().is_none() {
            return;
        }
        let me = ctx.me().to_word();
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        let Some(action) = action_of(tx.state) else { return };
        let (tx_low, tx_high) = split(tx.id);
        let (gci_low, gci_high) = split(tx.gci);
        let layout = self.layout.as_deref();
        for (i, op) in tx.ops.iter_mut().enumerate() {
            if op.done || !(broken(&self.live, op) || passed_on_to_dead(layout, &self.live, op)) {
                continue;
            }
            let target = [Some(op.primary), op.backup].into_iter().flatten().find(|r| self.live.is_alive(r.node));
            let req = RepairReq { tx_low, tx_high, tc_ref: me, tc_slot: slot, tc_op: i as u32, action, gci_low, gci_high, tag: 0 };
            match target {
                // A failed send means that replica is going too: its NODE_FAILED repairs again.
                Some(to) => {
                    self.out.send(ctx, REPAIR_REQ, to, req.as_words(), &[]);
                }
                // No replica left: the partition is lost and the cluster stops (the membership
                // block's node-group check); nothing is left to wait for.
                None => {
                    op.done = true;
                    tx.pending = tx.pending.saturating_sub(1);
                }
            }
        }
    }

    /// `REPAIR_CONF`: for a transaction of this coordinator (tag 0) or a taken-over one.
    pub(super) fn on_repair_conf(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(conf) = ctx.typed::<RepairConf>(signal).copied() else { return };
        if conf.tag != 0 {
            return self.takeover_repaired(&conf, signal.sender(), ctx);
        }
        let expected = match conf.action {
            REPAIR_COMMIT => TxState::Committing,
            REPAIR_COMPLETE => TxState::Completing,
            _ => TxState::Aborting,
        };
        self.op_done(conf.tc_slot, join(conf.tx_low, conf.tx_high), conf.tc_op, expected, ctx);
    }

    /// The primary a scan of `partition` asks: the live one.
    pub(super) fn primary_of(&self, layout: &crate::layout::Layout, partition: u32) -> BlockRef {
        self.live.replicas(layout, partition).map_or_else(|| layout.replicas(partition).primary, |r| r.primary)
    }
}
