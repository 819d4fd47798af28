//! The checkpoint block (NDB's DBDIH, its global-checkpoint and restart parts): one per data
//! node of a cluster that keeps its data on disk. The master's (the lowest-id data node's)
//! runs the global checkpoint protocol (GCP); every node's takes part for its coordinators and
//! storage instances; at start, the restart protocol agrees on the restart GCI.
//!
//! Global checkpoint `g` + 1 replaces `g` every `gcp_interval_ms`, or at once when a
//! disk-durable commit waits (`GCP_CLOSE_REQ`):
//! ```text
//! master --GCP_PREPARE(g+1)--> every checkpoint --> its coordinators: hold new commits
//!        <--GCP_PREPARE_CONF-- (once every local coordinator holds)
//! master --GCP_COMMIT(g+1)---> every checkpoint --> coordinators: commits now carry g+1
//!        <--GCP_NODEFINISH(g)-- (once no commit of g or before runs on that node)
//! master --GCP_SAVE_REQ(g)---> every checkpoint --> storage: redo durable through g
//!        <--GCP_SAVE_CONF(g)--
//! master --GCP_SAVED(g)------> every checkpoint --> coordinators (disk-durable commits of g
//!                                                   are acknowledged) and storage
//! ```
//! Holding commits between prepare and commit means no node commits in `g + 1` while another
//! may still commit in `g`, so the GCI order agrees with the order of dependent transactions:
//! a transaction that saw another's write never has the lower GCI.
//!
//! System restart (start phase 2, deferred until done): every storage instance reports the
//! highest GCI saved in its files and the highest any record carries; the master takes the
//! lowest saved (the restart GCI: saved on every node, so every transaction in it is whole
//! everywhere) and the highest seen, and orders every storage instance to restore through the
//! restart GCI; new GCIs start above the highest seen (the storage fences what it discarded).
//! Every data node must take part: a node waits, saying which nodes it lacks.

use std::collections::BTreeSet;
use std::sync::Arc;

use node::block::{Block, Context, InitContext};
use node::stats::CounterId;
use signals::gsn::{NodeConnected, NodeFailRep};
use signals::{gsn, BlockInstance, BlockRef, NodeId, SignalData, SignalView};

use crate::layout::{CheckpointSettings, Layout, LiveMap};
use crate::protocol::*;
use crate::resend::Resend;
use crate::{Engine, COORDINATOR, STORAGE};

/// How often a starting node repeats what it asks of the master.
const RESTART_RETRY_NS: u64 = 100_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Round {
    Idle,
    Preparing { gci: u64, waiting: BTreeSet<NodeId> },
    Committing { closed: u64, waiting: BTreeSet<NodeId> },
    Saving { closed: u64, waiting: BTreeSet<NodeId> },
}

/// A step a node's checkpoint block runs for the master, waiting for its local blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Local {
    Idle,
    Preparing { gci: u64, left: u32 },
    Finishing { closed: u64, left: u32 },
    Saving { closed: u64, left: u32 },
}

#[derive(Debug, Default)]
struct Counters {
    rounds: Option<CounterId>,
    durable_gci: Option<CounterId>,
    early_closes: Option<CounterId>,
}

/// The restart protocol's state on this node.
#[derive(Debug, Default)]
struct Restart {
    /// Local storage instances yet to report / to finish.
    left: u32,
    /// The node's lowest saved and highest seen GCI, once every instance reported.
    mine: Option<(u64, u64)>,
    /// The master's: each node's report.
    reports: Vec<(NodeId, u64, u64)>,
    /// The master's decision (restart, max), once made.
    decided: Option<(u64, u64)>,
    /// Ordered to restore.
    ordered: bool,
    done: bool,
}

/// The checkpoint block.
#[derive(Debug)]
pub struct Checkpoint {
    engine: Arc<Engine>,
    out: Resend,
    settings: CheckpointSettings,
    layout: Option<Arc<Layout>>,
    /// The master's round.
    round: Round,
    /// The open GCI (master).
    current: u64,
    /// A disk-durable commit asked for the open GCI to close.
    close_asked: bool,
    timer_armed: bool,
    local: Local,
    durable: u64,
    restart: Restart,
    connected: BTreeSet<NodeId>,
    /// Which data nodes are dead (the membership block's `NODE_FAILED`).
    live: LiveMap,
    /// A step from a node that is not (yet) the master here: (gsn, gci, payload, sender).
    deferred: Option<(signals::Gsn, u64, Vec<u32>, NodeId)>,
    counters: Counters,
}

impl Checkpoint {
    /// The checkpoint block of `engine`.
    pub fn new(engine: Arc<Engine>, settings: CheckpointSettings) -> Checkpoint {
        Checkpoint {
            engine,
            out: Resend::default(),
            settings,
            layout: None,
            round: Round::Idle,
            current: 0,
            close_asked: false,
            timer_armed: false,
            local: Local::Idle,
            durable: 0,
            restart: Restart::default(),
            connected: BTreeSet::new(),
            live: LiveMap::default(),
            deferred: None,
            counters: Counters::default(),
        }
    }

    fn layout(&self) -> &Layout {
        match &self.layout {
            Some(l) => l,
            None => unreachable!("the layout is attached at start phase 1, before any signal"),
        }
    }

    /// The master: the live data node with the lowest id (the membership's president).
    fn master(&self) -> NodeId {
        self.live.president(self.layout()).unwrap_or(self.layout().data_nodes[0])
    }

    fn is_master(&self, ctx: &Context<'_>) -> bool {
        self.layout.is_some() && self.master() == ctx.node_id()
    }

    fn send(&mut self, ctx: &mut Context<'_>, gsn: signals::Gsn, to: BlockRef, data: &[u32]) {
        self.out.send(ctx, gsn, to, data, &[]);
    }

    fn send_all_nodes(&mut self, ctx: &mut Context<'_>, gsn: signals::Gsn, data: &[u32]) -> BTreeSet<NodeId> {
        let nodes: Vec<NodeId> = self.live.alive(self.layout()).collect();
        for n in &nodes {
            self.send(ctx, gsn, Layout::checkpoint_of(*n), data);
        }
        nodes.into_iter().collect()
    }

    /// Sends `gsn` to every local instance of `block`; returns how many.
    fn send_local(&mut self, ctx: &mut Context<'_>, block: signals::BlockNumber, gsn: signals::Gsn, data: &[u32]) -> u32 {
        let count = if block == STORAGE { self.layout().storage_instances } else { self.layout().coordinator_instances };
        let node = ctx.node_id();
        for i in 0..count {
            self.send(ctx, gsn, BlockRef::new(node, block, BlockInstance(i)), data);
        }
        u32::from(count)
    }

    // ---- restart ----

    fn begin_restart(&mut self, ctx: &mut Context<'_>) {
        ctx.defer_start();
        self.restart.left = self.send_local(ctx, STORAGE, RESTART_INFO_REQ, RestartInfoReq::default().as_words());
        let _ = ctx.send_delayed(RESTART_RETRY_NS, GCP_TIMER, GcpTimer::default().as_words());
        self.timer_armed = true;
    }

    fn on_restart_info(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(info) = ctx.typed::<RestartInfo>(signal).copied() else { return };
        let (saved, max) = (join(info.saved_low, info.saved_high), join(info.max_low, info.max_high));
        if signal.sender().block == STORAGE && signal.sender().node == ctx.node_id() {
            if self.restart.left == 0 {
                return;
            }
            self.restart.left -= 1;
            let (s, m) = self.restart.mine.unwrap_or((u64::MAX, 0));
            self.restart.mine = Some((s.min(saved), m.max(max)));
            if self.restart.left == 0 {
                self.report_to_master(ctx);
            }
            return;
        }
        if !self.is_master(ctx) {
            return ctx.unhandled(signal);
        }
        let Some(node) = NodeId::new(info.node).filter(|n| self.layout().is_data_node(*n)) else { return };
        if let Some((restart, max)) = self.restart.decided {
            return self.order_restart(ctx, Some(node), restart, max);
        }
        self.restart.reports.retain(|(n, _, _)| *n != node);
        self.restart.reports.push((node, saved, max));
        let missing: Vec<NodeId> =
            self.layout().data_nodes.iter().copied().filter(|n| !self.restart.reports.iter().any(|r| r.0 == *n)).collect();
        if !missing.is_empty() {
            tracing::info!(?missing, "system restart: waiting for every data node to report");
            return;
        }
        let empty: Vec<NodeId> = self.restart.reports.iter().filter(|r| r.2 == 0).map(|r| r.0).collect();
        let holding: Vec<(NodeId, u64)> = self.restart.reports.iter().filter(|r| r.1 > 0).map(|r| (r.0, r.1)).collect();
        if !empty.is_empty() && !holding.is_empty() {
            // Restoring to the lowest saved GCI would empty every node: refuse, and wait.
            tracing::error!(
                ?empty,
                ?holding,
                "system restart refused: some data nodes start empty (--initial or a new data_dir) while others \
                 hold data; restart the empty ones from their files, or start every data node with --initial"
            );
            self.restart.reports.retain(|r| r.2 != 0);
            return;
        }
        let restart = self.restart.reports.iter().map(|r| r.1).min().unwrap_or(0);
        let max = self.restart.reports.iter().map(|r| r.2).max().unwrap_or(0).max(restart);
        tracing::info!(restart_gci = restart, highest_gci = max, "system restart: restoring every node through the restart GCI");
        self.restart.decided = Some((restart, max));
        self.current = max;
        self.order_restart(ctx, None, restart, max);
    }

    fn report_to_master(&mut self, ctx: &mut Context<'_>) {
        let Some((saved, max)) = self.restart.mine else { return };
        let (saved_low, saved_high) = split(saved);
        let (max_low, max_high) = split(max);
        let info = RestartInfo { node: u32::from(ctx.node_id().get()), saved_low, saved_high, max_low, max_high };
        let master = self.master();
        self.send(ctx, RESTART_INFO, Layout::checkpoint_of(master), info.as_words());
    }

    fn order_restart(&mut self, ctx: &mut Context<'_>, to: Option<NodeId>, restart: u64, max: u64) {
        let (restart_low, restart_high) = split(restart);
        let (max_low, max_high) = split(max);
        let ord = RestartOrd { restart_low, restart_high, max_low, max_high };
        match to {
            Some(n) => self.send(ctx, RESTART_ORD, Layout::checkpoint_of(n), ord.as_words()),
            None => {
                self.send_all_nodes(ctx, RESTART_ORD, ord.as_words());
            }
        }
    }

    fn on_restart_ord(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(ord) = ctx.typed::<RestartOrd>(signal).copied() else { return };
        if self.restart.ordered || signal.sender().node != self.master() {
            return;
        }
        self.restart.ordered = true;
        self.durable = join(ord.restart_low, ord.restart_high);
        self.restart.left = self.send_local(ctx, STORAGE, RESTART_ORD, ord.as_words());
    }

    fn on_restart_done(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(done) = ctx.typed::<RestartDone>(signal).copied() else { return };
        if self.restart.done || !self.restart.ordered || self.restart.left == 0 {
            return;
        }
        let _ = done;
        self.restart.left -= 1;
        if self.restart.left == 0 {
            self.restart.done = true;
            tracing::info!(durable_gci = self.durable, "restored from disk: the node serves");
            ctx.start_done();
            if self.is_master(ctx) {
                self.arm(ctx, 0);
            }
        }
    }

    // ---- the master's rounds ----

    fn arm(&mut self, ctx: &mut Context<'_>, delay_ns: u64) {
        if !self.timer_armed {
            self.timer_armed = true;
            let _ = ctx.send_delayed(delay_ns, GCP_TIMER, GcpTimer::default().as_words());
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>) {
        self.timer_armed = false;
        if !self.restart.done {
            if !self.restart.ordered && self.restart.left == 0 {
                self.report_to_master(ctx);
            }
            if let (true, Some((restart, max))) = (self.is_master(ctx), self.restart.decided) {
                self.order_restart(ctx, None, restart, max);
            }
            return self.arm(ctx, RESTART_RETRY_NS);
        }
        if self.is_master(ctx) && self.round == Round::Idle {
            self.start_round(ctx);
        }
    }

    fn start_round(&mut self, ctx: &mut Context<'_>) {
        self.close_asked = false;
        let gci = self.current + 1;
        let (gci_low, gci_high) = split(gci);
        let waiting = self.send_all_nodes(ctx, GCP_PREPARE, GcpPrepare { gci_low, gci_high }.as_words());
        self.round = Round::Preparing { gci, waiting };
    }

    fn on_close_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<GcpCloseReq>(signal).copied() else { return };
        if !self.is_master(ctx) {
            let master = self.master();
            return self.send(ctx, GCP_CLOSE_REQ, Layout::checkpoint_of(master), req.as_words());
        }
        let gci = join(req.gci_low, req.gci_high);
        if gci < self.current || !self.restart.done {
            return;
        }
        if let Some(c) = self.counters.early_closes {
            ctx.bump(c, 1);
        }
        if self.round == Round::Idle {
            self.start_round(ctx);
        } else {
            self.close_asked = true;
        }
    }

    /// A node's answer in the master's round.
    fn on_round_answer(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some((gci, node)) = gcp_answer(signal, ctx) else { return };
        let Some(node) = NodeId::new(node) else { return };
        let gsn = signal.gsn();
        let waiting = match &mut self.round {
            Round::Preparing { gci: g, waiting } if gsn == GCP_PREPARE_CONF && *g == gci => waiting,
            Round::Committing { closed, waiting } if gsn == GCP_NODEFINISH && *closed == gci => waiting,
            Round::Saving { closed, waiting } if gsn == GCP_SAVE_CONF && *closed == gci => waiting,
            _ => return tracing::debug!(%gsn, gci, %node, "answer for no round in progress: dropped"),
        };
        waiting.remove(&node);
        if waiting.is_empty() {
            self.advance(ctx);
        }
    }

    /// Every live node answered the round's step: the next step.
    fn advance(&mut self, ctx: &mut Context<'_>) {
        match self.round.clone() {
            Round::Preparing { gci, .. } => {
                self.current = gci;
                let (gci_low, gci_high) = split(gci);
                let waiting = self.send_all_nodes(ctx, GCP_COMMIT, GcpCommit { gci_low, gci_high }.as_words());
                self.round = Round::Committing { closed: gci - 1, waiting };
            }
            Round::Committing { closed, .. } => {
                let (gci_low, gci_high) = split(closed);
                let waiting = self.send_all_nodes(ctx, GCP_SAVE_REQ, GcpSaveReq { gci_low, gci_high }.as_words());
                self.round = Round::Saving { closed, waiting };
            }
            Round::Saving { closed, .. } => {
                let (gci_low, gci_high) = split(closed);
                self.send_all_nodes(ctx, GCP_SAVED, GcpSaved { gci_low, gci_high }.as_words());
                self.round = Round::Idle;
                if let Some(c) = self.counters.rounds {
                    ctx.bump(c, 1);
                }
                if self.close_asked {
                    self.start_round(ctx);
                } else {
                    self.arm(ctx, self.settings.gcp_interval_ms * 1_000_000);
                }
            }
            Round::Idle => {}
        }
    }

    // ---- a node's part ----

    fn is_from_master(&self, signal: &SignalView<'_>) -> bool {
        signal.sender().node == self.master() && signal.sender().block == crate::CHECKPOINT
    }

    fn on_master_step(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(gci) = gcp_step_gci(signal, ctx) else { return };
        if !self.is_from_master(signal) {
            // A new master may start its first round before this node's NODE_FAILED for the
            // old one arrives: a step from a live data node is kept (the last one) and run if
            // its sender becomes the master.
            let sender = signal.sender();
            if sender.block == crate::CHECKPOINT && self.live.is_alive(sender.node) && sender.node > self.master() {
                self.deferred = Some((signal.gsn(), gci, signal.data().to_vec(), sender.node));
                return;
            }
            tracing::warn!(gsn = %signal.gsn(), sender = %signal.sender(), "a global checkpoint step not from the master: dropped");
            return ctx.unhandled(signal);
        }
        self.run_step(signal.gsn(), gci, signal.data(), ctx);
    }

    /// Runs a step of the master's: it goes on to the local blocks with the master's payload
    /// as it came.
    fn run_step(&mut self, gsn: signals::Gsn, gci: u64, words: &[u32], ctx: &mut Context<'_>) {
        match gsn {
            GCP_PREPARE => {
                let left = self.send_local(ctx, COORDINATOR, GCP_PREPARE, words);
                self.local = Local::Preparing { gci, left };
            }
            GCP_COMMIT => {
                self.current = self.current.max(gci);
                let left = self.send_local(ctx, COORDINATOR, GCP_COMMIT, words);
                self.local = Local::Finishing { closed: gci.saturating_sub(1), left };
            }
            GCP_SAVE_REQ => {
                let left = self.send_local(ctx, STORAGE, GCP_SAVE_REQ, words);
                self.local = Local::Saving { closed: gci, left };
            }
            _ => {
                let before = self.durable;
                self.durable = self.durable.max(gci);
                if let Some(c) = self.counters.durable_gci {
                    ctx.bump(c, self.durable - before);
                }
                self.send_local(ctx, COORDINATOR, GCP_SAVED, words);
                self.send_local(ctx, STORAGE, GCP_SAVED, words);
            }
        }
    }

    /// A local coordinator's or storage instance's answer to a step.
    fn on_local_answer(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        if signal.sender().block == crate::CHECKPOINT {
            return self.on_round_answer(signal, ctx);
        }
        if signal.sender().node != ctx.node_id() {
            return ctx.unhandled(signal);
        }
        let Some((gci, _)) = gcp_answer(signal, ctx) else { return };
        let (answer, left) = match (&mut self.local, signal.gsn()) {
            (Local::Preparing { gci: g, left }, GCP_PREPARE_CONF) if *g == gci => (GCP_PREPARE_CONF, left),
            (Local::Finishing { closed, left }, GCP_NODEFINISH) if *closed == gci => (GCP_NODEFINISH, left),
            (Local::Saving { closed, left }, GCP_SAVE_CONF) if *closed == gci => (GCP_SAVE_CONF, left),
            _ => return tracing::debug!(gsn = %signal.gsn(), gci, "local answer for no step: dropped"),
        };
        *left = left.saturating_sub(1);
        if *left > 0 {
            return;
        }
        self.local = Local::Idle;
        let node = u32::from(ctx.node_id().get());
        let master = self.master();
        self.send(ctx, answer, Layout::checkpoint_of(master), &gcp_answer_words(answer, gci, node));
    }

    fn on_node_event(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        if signal.gsn() == gsn::NODE_CONNECTED {
            if let Some(node) = ctx.typed::<NodeConnected>(signal).and_then(|c| NodeId::new(c.node)) {
                self.connected.insert(node);
            }
            return;
        }
        let Some(node) = ctx.typed_head::<NodeFailRep>(signal).and_then(|(r, _)| NodeId::new(r.node)) else { return };
        self.connected.remove(&node);
        if self.layout.as_ref().is_some_and(|l| l.is_data_node(node)) && !self.restart.done {
            // The system restart needs every data node.
            tracing::warn!(%node, "data node failed during the system restart: the restart waits for it to return");
        }
    }

    /// A data node is dead (agreed): global checkpoints go on without it. The master drops
    /// it from the round's waiting set; a node that became master (the old one died) starts
    /// a round above the highest GCI it saw committed, which also closes any round the old
    /// master left half done (every step is idempotent for a GCI already reached).
    fn on_node_failed(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(f) = ctx.typed::<NodeFailed>(signal).copied() else { return };
        let Some(dead) = NodeId::new(f.node) else { return };
        let was_master = self.is_master(ctx);
        if !self.live.mark_dead(dead, f.version) {
            return;
        }
        if let Some((gsn, gci, words, from)) = self.deferred.take() {
            if from == self.master() {
                self.run_step(gsn, gci, &words, ctx);
            }
        }
        if !self.restart.done || !self.is_master(ctx) {
            return;
        }
        if !was_master {
            tracing::info!(current_gci = self.current, "the master died: this node runs global checkpoints now");
            self.round = Round::Idle;
            self.timer_armed = false;
            return self.start_round(ctx);
        }
        let waiting = match &mut self.round {
            Round::Preparing { waiting, .. } | Round::Committing { waiting, .. } | Round::Saving { waiting, .. } => waiting,
            Round::Idle => return,
        };
        waiting.remove(&dead);
        if waiting.is_empty() {
            self.advance(ctx);
        }
    }
}

impl Block for Checkpoint {
    fn init(&mut self, init: &mut InitContext<'_>) {
        init.subscribe_node_events();
        self.counters = Counters {
            rounds: Some(init.counter("gcp_rounds")),
            durable_gci: Some(init.counter("durable_gci")),
            early_closes: Some(init.counter("gcp_early_closes")),
        };
    }

    fn execute(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let internal = !matches!(signal.gsn(), gsn::START_ORD | gsn::STOP_REQ | gsn::NODE_FAILREP | gsn::NODE_CONNECTED);
        if internal && !crate::internal_from_live_data_node(self.layout.as_ref(), &self.live, signal, ctx) {
            return;
        }
        if signal.gsn() == NODE_FAILED && !crate::from_own_membership(signal, ctx) {
            return;
        }
        match signal.gsn() {
            NODE_FAILED => self.on_node_failed(signal, ctx),
            GCP_PREPARE | GCP_COMMIT | GCP_SAVE_REQ | GCP_SAVED => self.on_master_step(signal, ctx),
            GCP_PREPARE_CONF | GCP_NODEFINISH | GCP_SAVE_CONF => self.on_local_answer(signal, ctx),
            GCP_CLOSE_REQ => self.on_close_req(signal, ctx),
            GCP_TIMER => self.on_timer(ctx),
            RESTART_INFO => self.on_restart_info(signal, ctx),
            RESTART_ORD => self.on_restart_ord(signal, ctx),
            RESTART_DONE => self.on_restart_done(signal, ctx),
            RESEND => self.out.on_timer(ctx),
            gsn::NODE_FAILREP | gsn::NODE_CONNECTED => self.on_node_event(signal, ctx),
            gsn::START_ORD => match ctx.typed::<signals::gsn::StartOrd>(signal).map(|s| s.phase) {
                Some(1) => self.layout = Some(self.engine.attach(ctx.node_id()).0),
                Some(2) => self.begin_restart(ctx),
                _ => {}
            },
            gsn::STOP_REQ => {}
            _ => ctx.unhandled(signal),
        }
    }
}
