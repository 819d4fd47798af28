//! The coordinator's part in global checkpoints (NDB's DBTC GCP handling), in a cluster whose
//! data nodes keep their data on disk: every commit carries the open GCI to the storage blocks
//! (whose redo records keep it); between `GCP_PREPARE` and `GCP_COMMIT` new commits wait, so
//! no commit of the next GCI starts while another node may still start one of the current;
//! after `GCP_COMMIT` the node's checkpoint block hears `GCP_NODEFINISH` once no commit of the
//! closed GCI is still in its commit phase here. A disk-durable commit's acknowledgement waits
//! until `GCP_SAVED` names its GCI (or a later one).
//!
//! Invariants: `committing[g]` counts the transactions of GCI `g` between the start of their
//! commit phase and the last `COMMIT_CONF` (when every replica has logged them); a GCI's
//! finish is reported only when no count at or below it is left; commits wait while holding
//! and until the first `GCP_COMMIT` names a GCI.

use std::collections::BTreeMap;

use node::block::Context;
use signals::{BlockRef, SignalData, SignalView};

use super::{reply_committed, Coordinator};
use crate::protocol::*;

/// The coordinator's global checkpoint state.
#[derive(Debug, Default)]
pub(super) struct GcpState {
    /// The cluster keeps its data on disk (a checkpoint block runs global checkpoints).
    pub(super) durable_cluster: bool,
    /// The GCI new commits carry (0 until the first `GCP_COMMIT`).
    pub(super) open_gci: u64,
    /// Between `GCP_PREPARE` and `GCP_COMMIT`.
    pub(super) holding: bool,
    /// Transactions (slot, id) whose commit waits for the hold to end.
    pub(super) held: Vec<(u32, u64)>,
    /// Transactions in their commit phase, per GCI.
    pub(super) committing: BTreeMap<u64, u32>,
    /// The closed GCI whose finish the checkpoint block waits for, and where to report it.
    finish_wanted: Option<(u64, BlockRef)>,
    /// Disk-durable acknowledgements waiting for their GCI: (client, transaction).
    disk_waiting: BTreeMap<u64, Vec<(BlockRef, u64)>>,
    /// The highest GCI known durable.
    durable_gci: u64,
    /// The highest GCI this coordinator asked to close early.
    pub(super) close_asked: u64,
}

impl GcpState {
    /// Whether a commit starting now must wait.
    pub(super) fn must_hold(&self) -> bool {
        self.durable_cluster && (self.holding || self.open_gci == 0)
    }

    /// A transaction of `gci` left its commit phase.
    pub(super) fn commit_done(&mut self, gci: u64) {
        if let Some(n) = self.committing.get_mut(&gci) {
            *n -= 1;
            if *n == 0 {
                self.committing.remove(&gci);
            }
        }
    }
}

impl Coordinator {
    /// Answers the client of a committed transaction now, or (disk-durable, with writes) once
    /// its GCI is durable. Once per transaction.
    pub(super) fn acknowledge(&mut self, slot: u32, ctx: &mut Context<'_>) {
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        if tx.replied {
            return;
        }
        tx.replied = true;
        if tx.disk && tx.writes && tx.gci > self.gcp.durable_gci {
            self.gcp.disk_waiting.entry(tx.gci).or_default().push((tx.client, tx.id));
            return;
        }
        reply_committed(&mut self.out, ctx, tx.client, tx.id, tx.gci);
    }

    /// Reports the closed GCI's finish once nothing at or below it is committing.
    pub(super) fn check_finish(&mut self, ctx: &mut Context<'_>) {
        let Some((closed, to)) = self.gcp.finish_wanted else { return };
        if self.gcp.committing.range(..=closed).next().is_some() {
            return;
        }
        self.gcp.finish_wanted = None;
        let (gci_low, gci_high) = split(closed);
        let node = u32::from(ctx.node_id().get());
        self.out.send(ctx, GCP_NODEFINISH, to, GcpNodeFinish { gci_low, gci_high, node }.as_words(), &[]);
    }

    pub(super) fn on_gcp_prepare(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(gci) = gcp_step_gci(signal, ctx) else { return };
        self.gcp.holding = true;
        let words = gcp_answer_words(GCP_PREPARE_CONF, gci, u32::from(ctx.node_id().get()));
        self.out.send(ctx, GCP_PREPARE_CONF, signal.sender(), &words, &[]);
    }

    pub(super) fn on_gcp_commit(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(gci) = gcp_step_gci(signal, ctx) else { return };
        if gci == 0 {
            tracing::warn!("GCP_COMMIT names GCI 0: dropped");
            return;
        }
        // A new master repeats the step of a round the old one left half done: the GCI
        // never moves back, and the finish of the closed one is reported again.
        self.gcp.open_gci = self.gcp.open_gci.max(gci);
        self.gcp.holding = false;
        self.gcp.finish_wanted = Some((gci - 1, signal.sender()));
        for (slot, id) in std::mem::take(&mut self.gcp.held) {
            let waiting = self.slots.get(slot as usize).and_then(Option::as_ref);
            if waiting.is_some_and(|t| t.id == id && t.state == super::TxState::Executing) {
                self.commit(slot, ctx);
            }
        }
        self.check_finish(ctx);
    }

    pub(super) fn on_gcp_saved(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(gci) = gcp_step_gci(signal, ctx) else { return };
        self.gcp.durable_gci = self.gcp.durable_gci.max(gci);
        let later = self.gcp.disk_waiting.split_off(&(gci + 1));
        let ready = std::mem::replace(&mut self.gcp.disk_waiting, later);
        for (g, waiters) in ready {
            for (client, id) in waiters {
                reply_committed(&mut self.out, ctx, client, id, g);
            }
        }
    }
}
