//! The membership block (NDB's QMGR, with the node-failure part of DBDIH): one per data node.
//! It notices dead data nodes, makes every survivor agree on them before anyone acts, and
//! then tells its node's blocks, which change their partition maps ([`LiveMap`]: a dead
//! primary's backup is promoted) and repair or take over the transactions the dead node
//! touched (see [`crate::coordinator`]).
//!
//! Failure detection: every `heartbeat_interval_ms` each data node sends `MEMBER_HEARTBEAT` to its
//! right neighbour in the ring of live data nodes (id order); a node that hears nothing from its
//! left neighbour for `heartbeat_missed` intervals suspects it. A link that hangs up (the
//! runtime's `NODE_FAILREP`) is a suspicion at once.
//!
//! One agreement, run by the president (the live data node with the lowest id):
//! ```text
//! any node --FAIL_REPORT(n)--> president
//! president --FAIL_PREP(round, failed set)--> every survivor: stop trusting them
//!           <--FAIL_PREP_CONF(round)--
//! president: every node group keeps a survivor?      no: MEMBER_STOP(group lost) to all
//!            a whole group or a majority survives?   no: ARBIT_REQ to the arbitrator
//!                                                        (refused or silent: MEMBER_STOP)
//! president --FAIL_COMMIT(round, map version, failed set)--> every survivor
//! survivor  --NODE_FAILED(n, version)--> its coordinators, storage instances, checkpoint
//! ```
//! A survivor that fails during a round, or a new suspicion, starts a new round with the
//! larger set; a president that dies is replaced by the next live node, to which every node
//! reports its suspicions again. Survivors that lack a whole node group stop (exit 5): no
//! partition may be served without a replica. When survivors are not a majority and hold no
//! whole node group they may be one side of a network partition: the arbitrator (an API node
//! running `blockwire arbitrator`) grants the first side that asks and refuses any other, and
//! a refused or unanswered side stops (exit 6). Without an arbitrator configured such
//! survivors go on, and the node logs at start that a network partition could then split the
//! cluster.
//!
//! A data node the cluster declared dead that starts again is restarted ([`restart`]): the
//! president admits it, every live node passes writes of its partitions on to it while it
//! copies them from their primaries, and once copied it serves again (its primaries move
//! back). One that comes back without restarting (its link healed after it was declared
//! dead) is told to stop (exit 4) by the failure commit.

use std::collections::BTreeSet;
use std::sync::Arc;

use node::block::{Block, Context, InitContext};
use node::stats::CounterId;
use signals::gsn::{NodeConnected, NodeFailRep};
use signals::{gsn, BlockInstance, BlockRef, NodeId, Priority, SignalData, SignalView};

use crate::layout::{Layout, LiveMap, MembershipSettings};
use crate::protocol::*;
use crate::resend::Resend;
use crate::{Engine, API_SESSION, COORDINATOR, STORAGE};

mod restart;

/// How long a data node whose link is up may take to send its first heartbeat (its start).
const FIRST_HEARTBEAT_GRACE_NS: u64 = 30_000_000_000;

/// A failure round the president runs.
#[derive(Debug)]
struct Round {
    id: u32,
    failed: BTreeSet<NodeId>,
    waiting: BTreeSet<NodeId>,
    /// Waiting for the arbitrator until this time.
    arbitration_deadline: Option<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    heartbeats: Option<CounterId>,
    suspicions: Option<CounterId>,
    failures: Option<CounterId>,
    rounds: Option<CounterId>,
}

/// The membership block.
#[derive(Debug)]
pub struct Membership {
    engine: Arc<Engine>,
    out: Resend,
    settings: MembershipSettings,
    layout: Option<Arc<Layout>>,
    live: LiveMap,
    /// Data nodes suspected (by this node or a report) and not yet agreed dead.
    suspected: BTreeSet<NodeId>,
    /// The left neighbour watched, and when it was last heard.
    left: Option<NodeId>,
    last_heard: Option<u64>,
    /// When this block's heartbeat timer last ran (to tell a silent neighbour from a tick of
    /// our own that came late because this node's thread was busy or descheduled).
    last_tick: Option<u64>,
    round: Option<Round>,
    next_round: u32,
    /// Data nodes whose link is up.
    connected: BTreeSet<NodeId>,
    /// API nodes whose link is up (they hear every new partition map).
    api_nodes: BTreeSet<NodeId>,
    /// Nodes whose link came up before this block started.
    early: Vec<NodeId>,
    /// A neighbour's heartbeat counted this node as serving: it is a member (of the initial
    /// start, or restarted and serving), not a fresh process waiting to be admitted.
    heard: bool,
    /// The president's node restart in progress, and the dead nodes that asked to restart.
    restart: Option<restart::Restart>,
    hellos: BTreeSet<NodeId>,
    /// This node restarting: admitted, copying its partitions.
    admitted: Option<restart::Admitted>,
    /// The schema of this node's admission, while its pieces arrive.
    schema: Option<restart::SchemaPieces>,
    /// The president told this fresh node its admission begins.
    admission_pending: bool,
    /// Timer ticks since the last `MEMBER_HELLO` this node sent again.
    hello_ticks: u32,
    counters: Counters,
}

impl Membership {
    /// The membership block of `engine`.
    pub fn new(engine: Arc<Engine>, settings: MembershipSettings) -> Membership {
        Membership {
            engine,
            out: Resend::default(),
            settings,
            layout: None,
            live: LiveMap::default(),
            suspected: BTreeSet::new(),
            left: None,
            last_heard: None,
            last_tick: None,
            round: None,
            next_round: 1,
            connected: BTreeSet::new(),
            api_nodes: BTreeSet::new(),
            early: Vec::new(),
            heard: false,
            restart: None,
            hellos: BTreeSet::new(),
            admitted: None,
            schema: None,
            admission_pending: false,
            hello_ticks: 0,
            counters: Counters::default(),
        }
    }

    fn bump(&self, ctx: &Context<'_>, counter: Option<CounterId>) {
        if let Some(c) = counter {
            ctx.bump(c, 1);
        }
    }

    fn interval_ns(&self) -> u64 {
        self.settings.heartbeat_interval_ms * 1_000_000
    }

    fn start(&mut self, ctx: &mut Context<'_>) {
        let (layout, _) = self.engine.attach(ctx.node_id());
        let l = &layout;
        let needs_arbitration = l.data_nodes.len() > 1 && l.node_groups.iter().all(|g| g.len() > 1);
        if self.settings.arbitrator.is_none() && needs_arbitration && ctx.node_id() == l.data_nodes[0] {
            tracing::warn!(
                "no arbitrator configured (membership.arbitrator): survivors without a majority go on, so a network partition could split the cluster"
            );
        }
        let data: Vec<NodeId> = l.data_nodes.clone();
        self.layout = Some(layout);
        for node in std::mem::take(&mut self.early) {
            if data.contains(&node) {
                self.connected.insert(node);
                let hello = self.hello(ctx.node_id());
                let _ = ctx.send(&ctx.signal(MEMBER_HELLO, Layout::membership_of(node)).data(hello.as_words()));
            } else {
                self.api_nodes.insert(node);
                self.send_map_to_api(node, ctx);
            }
        }
        let _ = ctx.send_delayed(self.interval_ns(), MEMBER_TIMER, MemberTimer::default().as_words());
    }

    fn layout(&self) -> Option<&Arc<Layout>> {
        self.layout.as_ref()
    }

    /// The live data nodes not suspected.
    fn trusted(&self) -> Vec<NodeId> {
        let Some(l) = self.layout() else { return Vec::new() };
        self.live.alive(l).filter(|n| !self.suspected.contains(n)).collect()
    }

    /// The president: the oldest serving node not suspected (the map's rule,
    /// [`LiveMap::president_among`], which every block follows).
    fn president(&self) -> Option<NodeId> {
        let layout = self.layout()?;
        self.live.president_among(layout, |n| !self.suspected.contains(&n))
    }

    /// The ring neighbours of `me` among the trusted nodes: (left, right).
    fn neighbours(&self, me: NodeId) -> (Option<NodeId>, Option<NodeId>) {
        let ring = self.trusted();
        let Some(i) = ring.iter().position(|n| *n == me) else { return (None, None) };
        if ring.len() < 2 {
            return (None, None);
        }
        (Some(ring[(i + ring.len() - 1) % ring.len()]), Some(ring[(i + 1) % ring.len()]))
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>) {
        let now = ctx.now_ns();
        let me = ctx.node_id();
        let (left, right) = self.neighbours(me);
        if let Some(right) = right {
            let hb = Heartbeat { node: u32::from(me.get()), you_serve: u32::from(self.live.is_serving(right)) };
            // Priority A: a heartbeat is taken before the node's queued transaction signals, so
            // a node busy with a backlog of work still hears its neighbour in time.
            let signal = ctx.signal(MEMBER_HEARTBEAT, Layout::membership_of(right)).data(hb.as_words());
            let _ = ctx.send(&signal.priority(Priority::A));
        }
        // A tick that comes far later than the interval means this node did not run (a busy
        // thread, a descheduled process): what it did not hear meanwhile says nothing about the
        // neighbour, which gets a fresh interval from now (its heartbeats may be waiting in
        // this node's queue). A neighbour that is really silent is suspected by the next
        // ticks, which come on time.
        let late = self.last_tick.is_some_and(|t| now.saturating_sub(t) > 2 * self.interval_ns());
        self.last_tick = Some(now);
        if late {
            self.last_heard = self.last_heard.map(|h| h.max(now.saturating_sub(self.interval_ns())));
        }
        if left != self.left {
            // A new neighbour to watch: it counts from now.
            self.left = left;
            self.last_heard = self.last_heard.map(|_| now);
        }
        if self.last_heard.is_none() && self.left.is_some_and(|l| self.connected.contains(&l)) {
            // A neighbour whose link is up but which has not sent a heartbeat yet may still be
            // starting (opening its files): it has FIRST_HEARTBEAT_GRACE_NS from now, so one
            // that hangs before its first heartbeat is still noticed.
            self.last_heard = Some(now + FIRST_HEARTBEAT_GRACE_NS);
        }
        // Any signal the engine's blocks took from the neighbour since counts as a heartbeat.
        if let (Some(left), Some(heard)) = (self.left, self.last_heard) {
            let traffic = self.engine.heard(me).last(left);
            if traffic > heard {
                self.last_heard = Some(traffic);
            }
        }
        let limit = self.interval_ns() * u64::from(self.settings.heartbeat_missed);
        if let (Some(left), Some(heard)) = (self.left, self.last_heard) {
            if now.saturating_sub(heard) > limit {
                let why = format!(
                    "no heartbeat for {} ms ({} intervals of {} ms)",
                    now.saturating_sub(heard) / 1_000_000,
                    self.settings.heartbeat_missed,
                    self.settings.heartbeat_interval_ms
                );
                self.suspect(left, &why, ctx);
            }
        }
        if let Some(deadline) = self.round.as_ref().and_then(|r| r.arbitration_deadline) {
            if now > deadline {
                let arbitrator = self.settings.arbitrator.map_or(0, NodeId::get);
                let why = format!(
                    "the arbitrator (API node {arbitrator}) did not answer within {} ms (arbitration_timeout_ms): these survivors may be the smaller side of a network partition",
                    self.settings.arbitration_timeout_ms
                );
                self.stop_survivors(STOP_ARBITRATION, &why, ctx);
            }
        }
        self.restart_timer(ctx);
        let _ = ctx.send_delayed(self.interval_ns(), MEMBER_TIMER, MemberTimer::default().as_words());
    }

    /// The ring changed (a node died, restarts or serves again): the left neighbour is
    /// worked out again at the next interval and counts from now, never from a heartbeat of
    /// an earlier incarnation.
    fn ring_changed(&mut self, now: u64) {
        self.left = None;
        self.last_heard = Some(now);
    }

    fn on_heartbeat(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        self.bump(ctx, self.counters.heartbeats);
        // A node is a member once a neighbour counts it as serving (never while it restarts).
        if ctx.typed::<Heartbeat>(signal).is_some_and(|h| h.you_serve == 1) {
            self.heard = true;
        }
        if Some(signal.sender().node) == self.left || self.left.is_none() {
            self.left = Some(signal.sender().node);
            self.last_heard = Some(ctx.now_ns());
        }
    }

    /// `node` may be dead: report it to the president (or, being it, start a round).
    fn suspect(&mut self, node: NodeId, why: &str, ctx: &mut Context<'_>) {
        if !self.live.is_alive(node) || node == ctx.node_id() || !self.suspected.insert(node) {
            return;
        }
        self.bump(ctx, self.counters.suspicions);
        tracing::warn!(%node, why, "data node suspected dead");
        self.report(ctx);
    }

    /// Reports every suspicion to the president, or starts a round when this node is it.
    fn report(&mut self, ctx: &mut Context<'_>) {
        let Some(president) = self.president() else { return };
        if president == ctx.node_id() {
            return self.start_round(ctx);
        }
        let to = Layout::membership_of(president);
        for node in self.suspected.clone() {
            let r = FailReport { node: u32::from(node.get()) };
            self.out.send(ctx, FAIL_REPORT, to, r.as_words(), &[]);
        }
    }

    fn on_fail_report(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(r) = ctx.typed::<FailReport>(signal).copied() else { return };
        let Some(node) = self.data_node(r.node) else {
            tracing::warn!(node = r.node, sender = %signal.sender(), "FAIL_REPORT names no data node: dropped");
            return ctx.unhandled(signal);
        };
        let why = format!("reported by data node {}", signal.sender().node);
        let reporter = signal.sender().node;
        if self.president() == Some(ctx.node_id()) {
            if !self.live.is_alive(node) {
                // The reporter missed the commit (its president died before it came): again.
                let version = self.live.version;
                return self.send_commit(0, version, &[reporter], ctx);
            }
            if let Some(round) = self.round.as_ref().filter(|r| r.waiting.contains(&reporter) && r.failed.contains(&node)) {
                // The reporter did not take this node as its president when the round
                // started; now it does.
                let list = node_words(&round.failed);
                let prep = FailPrep { round: round.id };
                self.out.send(ctx, FAIL_PREP, Layout::membership_of(reporter), prep.as_words(), &[&list]);
                return;
            }
        }
        if node == ctx.node_id() {
            // Someone cannot hear this node; the president decides (it may exclude it).
            tracing::warn!(reporter = %signal.sender().node, "this node was reported dead");
            return;
        }
        if self.suspected.contains(&node) && self.president() == Some(ctx.node_id()) && self.round.is_none() {
            return self.start_round(ctx);
        }
        self.suspect(node, &why, ctx);
    }

    fn data_node(&self, word: u32) -> Option<NodeId> {
        NodeId::new(word).filter(|n| self.layout().is_some_and(|l| l.is_data_node(*n)))
    }

    /// The president starts (or restarts, with a larger set) a failure round.
    fn start_round(&mut self, ctx: &mut Context<'_>) {
        if self.suspected.is_empty() {
            return;
        }
        self.bump(ctx, self.counters.rounds);
        let id = self.next_round;
        self.next_round += 1;
        let failed = self.suspected.clone();
        // A restarting node does not take part: it may not know the map (or its president)
        // yet; it hears the commit with the whole map.
        let waiting: BTreeSet<NodeId> = self.trusted().into_iter().filter(|n| self.live.is_serving(*n)).collect();
        let list = node_words(&failed);
        tracing::info!(round = id, failed = ?failed, survivors = ?waiting, "failure round");
        for n in &waiting {
            self.out.send(ctx, FAIL_PREP, Layout::membership_of(*n), FailPrep { round: id }.as_words(), &[&list]);
        }
        self.round = Some(Round { id, failed, waiting, arbitration_deadline: None });
    }

    fn node_list(&self, signal: &SignalView<'_>) -> Option<BTreeSet<NodeId>> {
        signal.section(0)?.iter().map(|w| self.data_node(*w)).collect()
    }

    /// Whether a round's signal comes from the node this one takes as president. One that
    /// does not is ignored: two nodes that each suspect the other (a cut link) must not both
    /// get the others' agreement; the one the others trust decides.
    fn sent_by_president(&self, signal: &SignalView<'_>) -> bool {
        if self.president() == Some(signal.sender().node) {
            return true;
        }
        tracing::warn!(gsn = %signal.gsn(), sender = %signal.sender().node, president = ?self.president(), "a failure round's step from a node that is not the president here: ignored");
        false
    }

    fn on_fail_prep(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(prep) = ctx.typed::<FailPrep>(signal).copied() else { return };
        if !self.sent_by_president(signal) {
            return;
        }
        let Some(failed) = self.node_list(signal) else {
            tracing::warn!(sender = %signal.sender(), "FAIL_PREP with a bad node list: dropped");
            return ctx.unhandled(signal);
        };
        if failed.contains(&ctx.node_id()) {
            let why = format!("the president (data node {}) declared this node dead", signal.sender().node);
            stop(STOP_DECLARED_DEAD, &why);
        }
        for n in failed {
            if self.live.is_alive(n) && self.suspected.insert(n) {
                tracing::warn!(node = %n, president = %signal.sender().node, "data node suspected dead by the president");
            }
        }
        let conf = FailPrepConf { round: prep.round, node: u32::from(ctx.node_id().get()) };
        self.out.send(ctx, FAIL_PREP_CONF, signal.sender(), conf.as_words(), &[]);
    }

    fn on_fail_prep_conf(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(conf) = ctx.typed::<FailPrepConf>(signal).copied() else { return };
        let Some(round) = self.round.as_mut().filter(|r| r.id == conf.round) else { return };
        round.waiting.remove(&signal.sender().node);
        if round.waiting.is_empty() && round.arbitration_deadline.is_none() {
            self.decide(ctx);
        }
    }

    /// Every survivor agreed: check the node groups, arbitrate when needed, commit.
    fn decide(&mut self, ctx: &mut Context<'_>) {
        let (Some(layout), Some(round)) = (self.layout.clone(), self.round.as_ref()) else { return };
        // Restarting nodes hold no partition yet: they count for nothing here.
        let alive: Vec<NodeId> = self.live.alive(&layout).filter(|n| self.live.is_serving(*n)).collect();
        let survivors: Vec<NodeId> = alive.iter().copied().filter(|n| !round.failed.contains(n)).collect();
        let serving = |n: &NodeId| survivors.contains(n);
        if let Some(group) = layout.node_groups.iter().find(|g| !g.iter().any(serving)) {
            let why = format!(
                "every data node of node group {:?} that holds its partitions failed (a restarting one has not copied them yet): the survivors lack a replica of its partitions",
                group.iter().map(|n| n.get()).collect::<Vec<_>>()
            );
            self.stop_survivors(STOP_GROUP_LOST, &why, ctx);
        }
        let whole_group = layout.node_groups.iter().any(|g| g.iter().all(|n| survivors.contains(n)));
        let majority = survivors.len() * 2 > alive.len();
        match self.settings.arbitrator {
            Some(arbitrator) if !whole_group && !majority => {
                let id = round.id;
                let (ticket_low, ticket_high) = split(layout.cluster_id);
                let req = ArbitReq { round: id, ticket_low, ticket_high };
                let list = node_words(&survivors);
                let to = BlockRef::new(arbitrator, API_SESSION, BlockInstance(0));
                tracing::info!(round = id, %arbitrator, "no majority among the survivors: asking the arbitrator");
                if !self.out.send(ctx, ARBIT_REQ, to, req.as_words(), &[&list]) {
                    let why = format!("the arbitrator (API node {arbitrator}) is not reachable and the survivors are no majority");
                    self.stop_survivors(STOP_ARBITRATION, &why, ctx);
                }
                let deadline = ctx.now_ns() + self.settings.arbitration_timeout_ms * 1_000_000;
                if let Some(r) = self.round.as_mut() {
                    r.arbitration_deadline = Some(deadline);
                }
            }
            _ => self.commit(ctx),
        }
    }

    fn on_arbit_answer(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(answer) = ctx.typed::<ArbitAnswer>(signal).copied() else { return };
        if Some(signal.sender().node) != self.settings.arbitrator {
            tracing::warn!(sender = %signal.sender(), "ARBIT_ANSWER from a node that is not the arbitrator: dropped");
            return ctx.unhandled(signal);
        }
        if !self.round.as_ref().is_some_and(|r| r.id == answer.round && r.arbitration_deadline.is_some()) {
            return;
        }
        if answer.granted == 1 {
            tracing::info!(round = answer.round, "the arbitrator chose these survivors");
            self.commit(ctx);
        } else {
            let why = "the arbitrator chose the other side of a network partition";
            self.stop_survivors(STOP_ARBITRATION, why, ctx);
        }
    }

    fn commit(&mut self, ctx: &mut Context<'_>) {
        let Some(round) = self.round.as_ref() else { return };
        let (id, version) = (round.id, self.live.version + 1);
        let to = self.trusted();
        self.send_commit(id, version, &to, ctx);
    }

    /// Sends FAIL_COMMIT naming the round's failed set and every data node dead before, so a
    /// survivor that missed an earlier commit (its president died first) catches up.
    fn send_commit(&mut self, round: u32, version: u32, to: &[NodeId], ctx: &mut Context<'_>) {
        let mut dead: BTreeSet<NodeId> = self.live.dead().collect();
        if let Some(r) = self.round.as_ref().filter(|r| r.id == round) {
            dead.extend(r.failed.iter().copied());
        }
        let list = node_words(&dead);
        // The map as it is once this commit applies.
        let mut after = self.live.clone();
        for n in &dead {
            after.mark_dead(*n, version);
        }
        let map = after.to_words();
        let commit = FailCommit { round, version };
        for n in to {
            self.out.send(ctx, FAIL_COMMIT, Layout::membership_of(*n), commit.as_words(), &[&list, &map]);
        }
    }

    fn on_fail_commit(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(commit) = ctx.typed::<FailCommit>(signal).copied() else { return };
        if !self.sent_by_president(signal) {
            return;
        }
        let Some(failed) = self.node_list(signal) else {
            tracing::warn!(sender = %signal.sender(), "FAIL_COMMIT with a bad node list: dropped");
            return ctx.unhandled(signal);
        };
        if failed.contains(&ctx.node_id()) {
            stop(STOP_DECLARED_DEAD, "the cluster declared this node dead");
        }
        if self.awaiting_admission() {
            // Its start-up map is not the cluster's: the admission brings the map.
            return;
        }
        let me = ctx.node_id();
        let layout = self.layout.clone();
        for node in failed {
            self.suspected.remove(&node);
            if !self.live.mark_dead(node, commit.version) {
                continue;
            }
            self.bump(ctx, self.counters.failures);
            tracing::warn!(%node, map_version = commit.version, "data node declared dead: its partitions' backups are primaries now");
            let failed = NodeFailed { node: u32::from(node.get()), version: commit.version };
            for to in local_blocks(layout.as_deref(), me) {
                self.out.send(ctx, NODE_FAILED, to, failed.as_words(), &[]);
            }
            // If it is still there (hung, or cut off), it must stop.
            let words = crate::row::bytes_to_words(b"the cluster declared this node dead");
            let _ = ctx.send(
                &ctx.signal(MEMBER_STOP, Layout::membership_of(node))
                    .data(MemberStop { code: STOP_DECLARED_DEAD }.as_words())
                    .sections(&[&words]),
            );
        }
        if self.round.as_ref().is_some_and(|r| r.id == commit.round) {
            self.round = None;
        }
        self.ring_changed(ctx.now_ns());
        // The whole map of this version, as the president has it.
        let words = signal.section(1).unwrap_or(&[]);
        if let Some(map) = self.layout.as_deref().and_then(|l| LiveMap::from_words(l, commit.version, words)) {
            // Never back to life a node whose death this one knows, but by a newer map.
            if self.live.dead().all(|n| !map.is_alive(n)) || map.version > self.live.version {
                self.live.adopt(&map);
            }
        }
        self.publish_map(ctx);
        // Suspicions raised meanwhile go on to the (maybe new) president.
        if !self.suspected.is_empty() {
            self.report(ctx);
        }
        self.restart_after_failure(ctx);
    }

    /// Every survivor (this node last) must stop.
    fn stop_survivors(&mut self, code: u32, why: &str, ctx: &mut Context<'_>) -> ! {
        let words = crate::row::bytes_to_words(why.as_bytes());
        let me = ctx.node_id();
        for n in self.trusted().into_iter().filter(|n| *n != me) {
            let _ = ctx.send(
                &ctx.signal(MEMBER_STOP, Layout::membership_of(n)).data(MemberStop { code }.as_words()).sections(&[&words]),
            );
        }
        // The signals above leave with this thread's round; give them a moment.
        std::thread::sleep(std::time::Duration::from_millis(50));
        stop(code, why)
    }

    fn on_member_stop(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(s) = ctx.typed::<MemberStop>(signal).copied() else { return };
        if !matches!(s.code, STOP_DECLARED_DEAD | STOP_GROUP_LOST | STOP_ARBITRATION | STOP_RESTART_FAILED) {
            tracing::warn!(code = s.code, sender = %signal.sender(), "MEMBER_STOP with an unknown code: dropped");
            return ctx.unhandled(signal);
        }
        let reason = signal
            .section(0)
            .and_then(crate::row::words_to_bytes)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        stop(s.code, &format!("data node {} says: {reason}", signal.sender().node))
    }

    fn on_node_event(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let is_data = |n: NodeId| self.layout().is_some_and(|l| l.is_data_node(n));
        if signal.gsn() == gsn::NODE_CONNECTED {
            if let Some(node) = ctx.typed::<NodeConnected>(signal).and_then(|c| NodeId::new(c.node)) {
                if self.layout.is_none() {
                    // Before the start: sorted into data and API nodes then.
                    self.early.push(node);
                } else if is_data(node) {
                    self.connected.insert(node);
                    let hello = self.hello(ctx.node_id());
                    let _ = ctx.send(&ctx.signal(MEMBER_HELLO, Layout::membership_of(node)).data(hello.as_words()));
                    // Its hello may have come before this event.
                    self.admit_next(ctx);
                } else {
                    self.api_nodes.insert(node);
                    self.send_map_to_api(node, ctx);
                }
            }
            return;
        }
        let Some(rep) = ctx.typed_head::<NodeFailRep>(signal).map(|(r, _)| *r) else { return };
        let reason = node::runtime::failrep_reason(signal);
        let failed = NodeId::new(rep.node);
        let data = failed.filter(|n| is_data(*n));
        self.early.retain(|n| Some(*n) != failed);
        if let Some(node) = failed {
            self.api_nodes.remove(&node);
        }
        if let Some(node) = data {
            self.connected.remove(&node);
            self.hellos.remove(&node);
            self.suspect(node, &format!("its link failed: {reason}"), ctx);
        }
    }
}

/// The node ids of `nodes` as words.
fn node_words<'a>(nodes: impl IntoIterator<Item = &'a NodeId>) -> Vec<u32> {
    nodes.into_iter().map(|n| u32::from(n.get())).collect()
}

/// The blocks of data node `me` that act on a node failure.
fn local_blocks(layout: Option<&Layout>, me: NodeId) -> Vec<BlockRef> {
    let Some(l) = layout else { return Vec::new() };
    let mut to: Vec<BlockRef> = (0..l.coordinator_instances).map(|i| BlockRef::new(me, COORDINATOR, BlockInstance(i))).collect();
    to.extend((0..l.storage_instances).map(|i| BlockRef::new(me, STORAGE, BlockInstance(i))));
    to.push(Layout::dictionary_of(me));
    if l.durable() {
        to.push(Layout::checkpoint_of(me));
    }
    to
}

/// Stops this data node with exit `code`, saying why.
pub(crate) fn stop(code: u32, why: &str) -> ! {
    tracing::error!(code, why, "the data node stops");
    eprintln!("blockwire-datanode: the data node stops: {why}");
    std::process::exit(code as i32)
}

impl Block for Membership {
    fn init(&mut self, init: &mut InitContext<'_>) {
        init.subscribe_node_events();
        self.counters = Counters {
            heartbeats: Some(init.counter("heartbeats_received")),
            suspicions: Some(init.counter("nodes_suspected")),
            failures: Some(init.counter("nodes_failed")),
            rounds: Some(init.counter("failure_rounds")),
        };
    }

    fn execute(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let from_data = |s: &Self| s.layout().is_some_and(|l| l.is_data_node(signal.sender().node));
        let from_live = |s: &Self| from_data(s) && s.live.is_alive(signal.sender().node);
        let allowed = match signal.gsn() {
            // A restarted node introduces itself, and the president of a cluster this node
            // thinks dead may stop it: any data node.
            MEMBER_HELLO | MEMBER_STOP => from_data(self),
            MEMBER_HEARTBEAT | FAIL_REPORT | FAIL_PREP | FAIL_PREP_CONF | FAIL_COMMIT | MEMBER_MAP | MEMBER_MAP_CONF => {
                from_live(self)
            }
            // A restarted node hears from the president before it knows the map, and sends
            // MEMBER_COPIED as a live (restarting) node; each handler checks its sender.
            MEMBER_ADMIT | MEMBER_SCHEMA => from_data(self),
            MEMBER_COPIED => from_live(self) || signal.sender().node == ctx.node_id(),
            ARBIT_ANSWER => true,
            MEMBER_TIMER | RESEND => signal.sender().node == ctx.node_id(),
            _ => true,
        };
        if !allowed {
            tracing::debug!(gsn = %signal.gsn(), sender = %signal.sender(), "membership signal from a node not trusted: dropped");
            return ctx.unhandled(signal);
        }
        match signal.gsn() {
            MEMBER_HEARTBEAT => self.on_heartbeat(signal, ctx),
            MEMBER_HELLO => self.on_hello(signal, ctx),
            FAIL_REPORT => self.on_fail_report(signal, ctx),
            FAIL_PREP => self.on_fail_prep(signal, ctx),
            FAIL_PREP_CONF => self.on_fail_prep_conf(signal, ctx),
            FAIL_COMMIT => self.on_fail_commit(signal, ctx),
            MEMBER_STOP => self.on_member_stop(signal, ctx),
            ARBIT_ANSWER => self.on_arbit_answer(signal, ctx),
            MEMBER_MAP => self.on_member_map(signal, ctx),
            MEMBER_MAP_CONF => self.on_member_map_conf(signal, ctx),
            MEMBER_ADMIT => self.on_admit(signal, ctx),
            MEMBER_SCHEMA => self.on_member_schema(signal, ctx),
            MEMBER_COPIED => self.on_copied(signal, ctx),
            MEMBER_TIMER => self.on_timer(ctx),
            RESEND => self.out.on_timer(ctx),
            gsn::NODE_CONNECTED | gsn::NODE_FAILREP => self.on_node_event(signal, ctx),
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
