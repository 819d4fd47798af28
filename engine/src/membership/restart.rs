//! Node restart (NDB's QMGR admission with DBDIH's copy of fragments): a data node the
//! cluster declared dead starts again, empty, and is brought back as a full replica.
//!
//! ```text
//! restarted --MEMBER_HELLO--> president (again every second until admitted)
//! president --MEMBER_MAP(version+1, node starting)--> every live node --MEMBER_MAP--> its blocks
//!           <--MEMBER_MAP_CONF--   (from now on coordinators accept the node's answers)
//! president --MEMBER_ADMIT(map, schema)--> restarted: installs the schema, then each storage
//!           instance copies each partition it holds from the primary (storage's copy module:
//!           COPY_REQ / COPY_ROWS / COPY_ACK; the primary passes every later write of that
//!           partition on to it, so it ends identical)
//! restarted --MEMBER_COPIED--> president
//! president --MEMBER_MAP(version+2, node started)--> every live node, the restarted one too:
//!           it serves again and the layout's primaries are primaries again (balance)
//! ```
//! One restart runs at a time; others wait their turn, and none finishes while a failure
//! round runs. A restarting node takes no part in failure rounds (it may not know the map
//! yet; the commit carries the whole map). A restarting node that fails is failed like any
//! node (its copy is abandoned by the primaries; it may restart again). A president that
//! fails mid-restart is replaced; the new one publishes its map and admits every node still
//! restarting again (admission is idempotent; a node already copying goes on and tells the
//! new president when it is done, again every second until it serves). A restarted node is
//! the youngest member: it never presides while an older one lives. Only a fresh process
//! (empty, never a member) is admitted: a node declared dead that comes back without
//! restarting (a healed cut, a hang) is told to stop (exit 4). A cluster that keeps its data
//! on disk refuses a node restart (exit 4): restoring the node's own files first and copying
//! only what changed is not built.
//!
//! Every live data node also tells every API node linked to it the partition map (on
//! link-up and on every change), so clients send nothing to a node that does not serve.

use std::collections::BTreeSet;

use node::block::Context;
use signals::{BlockInstance, BlockRef, NodeId, SignalData, SignalView};

use super::{stop, Membership};
use crate::layout::{Layout, LiveMap};
use crate::protocol::*;
use crate::{API_SESSION, STORAGE};

/// How many heartbeat intervals a node waiting to be admitted waits between hellos.
const HELLO_EVERY_TICKS: u32 = 10;
/// The most pieces a schema may come in (each up to a signal section).
const MAX_SCHEMA_PIECES: u32 = 4096;

/// The schema of an admission, arriving in pieces.
#[derive(Debug)]
pub(super) struct SchemaPieces {
    map: LiveMap,
    from: BlockRef,
    version: u32,
    chunks: u32,
    next: u32,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// `MEMBER_MAP(starting)` sent, confirmations outstanding.
    Admitting,
    /// `MEMBER_ADMIT` sent: the node copies.
    Copying,
    /// `MEMBER_MAP(started)` sent, confirmations outstanding.
    Finishing,
}

/// The president's record of one node restart.
#[derive(Debug)]
pub(super) struct Restart {
    node: NodeId,
    version: u32,
    phase: Phase,
    waiting: BTreeSet<NodeId>,
    started_ns: u64,
}

/// The restarting node's own record.
#[derive(Debug)]
pub(super) struct Admitted {
    version: u32,
    /// Storage instances still copying.
    left: u32,
    rows: u64,
    started_ns: u64,
}

impl Membership {
    /// Whether this node is a fresh process the cluster has not admitted yet (a restart in
    /// its first moments): it acts on no map step, and waits for its admission.
    pub(super) fn awaiting_admission(&self) -> bool {
        self.admission_pending && self.admitted.is_none()
    }

    /// This node's hello: fresh while it has not been a running member (admitted and
    /// copying counts as fresh).
    pub(super) fn hello(&self, me: NodeId) -> MemberHello {
        let fresh = self.admitted.is_some() || !self.heard;
        MemberHello { node: u32::from(me.get()), fresh: u32::from(fresh) }
    }

    /// A data node introduces itself. One the cluster declared dead (or restarting without a
    /// president running its admission) asks to restart; the president admits it when it is
    /// a fresh process, and stops it otherwise.
    pub(super) fn on_hello(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(h) = ctx.typed::<MemberHello>(signal).copied() else { return };
        let node = signal.sender().node;
        if self.live.is_serving(node) && !self.suspected.contains(&node) {
            return;
        }
        if self.president() != Some(ctx.node_id()) || self.restart.as_ref().is_some_and(|r| r.node == node) {
            return;
        }
        if h.fresh == 0 && !self.live.is_alive(node) {
            let why = format!(
                "data node {node} was declared dead (partition map version {}) while it ran (cut off or hung): it must be restarted to rejoin",
                self.live.version
            );
            tracing::warn!(%node, "a node declared dead came back without restarting: told to stop");
            return self.tell_stop(node, STOP_DECLARED_DEAD, &why, ctx);
        }
        self.hellos.insert(node);
        self.admit_next(ctx);
    }

    /// Every second: a node waiting to be admitted says hello again (a president may have
    /// been busy or replaced); one that copied everything tells its president again until it
    /// serves.
    pub(super) fn restart_timer(&mut self, ctx: &mut Context<'_>) {
        let waiting = !self.heard && self.admitted.is_none();
        let copied = self.admitted.as_ref().is_some_and(|a| a.left == 0);
        if !waiting && !copied {
            return;
        }
        self.hello_ticks += 1;
        if self.hello_ticks < HELLO_EVERY_TICKS {
            return;
        }
        self.hello_ticks = 0;
        if copied {
            return self.report_copied(ctx);
        }
        let hello = self.hello(ctx.node_id());
        for n in self.connected.clone() {
            let _ = ctx.send(&ctx.signal(MEMBER_HELLO, Layout::membership_of(n)).data(hello.as_words()));
        }
    }

    /// The president starts the next waiting restart, when none runs.
    pub(super) fn admit_next(&mut self, ctx: &mut Context<'_>) {
        let me = ctx.node_id();
        if self.restart.is_some() || self.round.is_some() || self.president() != Some(me) {
            return;
        }
        let ready = |n: &NodeId| !self.live.is_serving(*n) && self.connected.contains(n) && !self.suspected.contains(n);
        let Some(node) = self.hellos.iter().copied().find(ready) else { return };
        self.hellos.remove(&node);
        let Some(layout) = self.layout.clone() else { return };
        if layout.durable() {
            let why = format!(
                "data node {node} was declared dead (partition map version {}); a node restart of a cluster that keeps its data on disk is not built (restoring the node's own files, then copying what changed): stop every data node and start the cluster again (a system restart)",
                self.live.version
            );
            tracing::warn!(%node, "a dead node asked to restart in a durable cluster: told to stop");
            return self.tell_stop(node, STOP_DECLARED_DEAD, &why, ctx);
        }
        let version = self.live.version.saturating_add(1);
        self.live.mark_starting(node, version);
        self.ring_changed(ctx.now_ns());
        tracing::info!(%node, map_version = version, "admitting a restarted data node: its partitions are copied to it");
        self.publish_map(ctx);
        let waiting = self.serving_others(me);
        self.send_map_step(version, node, MAP_STARTING, &BTreeSet::from([node]), ctx);
        self.send_map_step(version, node, MAP_STARTING, &waiting, ctx);
        self.restart = Some(Restart { node, version, phase: Phase::Admitting, waiting, started_ns: ctx.now_ns() });
        self.restart_step(ctx);
    }

    /// The serving trusted data nodes other than `me` (those that confirm a map step).
    fn serving_others(&self, me: NodeId) -> BTreeSet<NodeId> {
        self.trusted().into_iter().filter(|n| *n != me && self.live.is_serving(*n)).collect()
    }

    fn send_map_step(&mut self, version: u32, node: NodeId, event: u32, to: &BTreeSet<NodeId>, ctx: &mut Context<'_>) {
        let map = self.live.to_words();
        let step = MemberMap { version, node: u32::from(node.get()), event };
        for n in to {
            self.out.send(ctx, MEMBER_MAP, Layout::membership_of(*n), step.as_words(), &[&map]);
        }
    }

    /// The next phase once every confirmation of the current one came.
    fn restart_step(&mut self, ctx: &mut Context<'_>) {
        let Some(r) = self.restart.as_ref().filter(|r| r.waiting.is_empty()) else { return };
        let (node, version, phase) = (r.node, r.version, r.phase);
        match phase {
            Phase::Admitting => {
                // The map as it is now (a failure may have raised its version since).
                if let Err(why) = self.send_admit(node, self.live.version, ctx) {
                    tracing::warn!(%node, why, "node restart abandoned");
                    self.restart = None;
                    self.tell_stop(node, STOP_RESTART_FAILED, &why, ctx);
                    return self.suspect(node, &why, ctx);
                }
                if let Some(r) = self.restart.as_mut() {
                    r.phase = Phase::Copying;
                }
            }
            Phase::Copying => {}
            Phase::Finishing => {
                let took = ctx.now_ns().saturating_sub(r.started_ns);
                tracing::info!(%node, map_version = version, seconds = took as f64 / 1e9, "data node restarted: it serves its partitions again");
                self.restart = None;
                self.admit_next(ctx);
            }
        }
    }

    /// `MEMBER_ADMIT` with the map and the schema's first piece, then `MEMBER_SCHEMA` with
    /// the others (pieces fit one signal section each; one link keeps them in order).
    fn send_admit(&mut self, node: NodeId, version: u32, ctx: &mut Context<'_>) -> Result<(), String> {
        let schema = self.engine.catalog(ctx.node_id()).to_file_bytes().map_err(|e| format!("the schema could not be written: {e}"))?;
        let piece = self.layout.as_ref().map_or(4096, |l| l.max_section_bytes.saturating_sub(4).max(64));
        let pieces: Vec<&[u8]> = schema.chunks(piece).collect();
        let chunks = pieces.len().max(1) as u32;
        let to = Layout::membership_of(node);
        let map = self.live.to_words();
        let first = crate::row::bytes_to_words(pieces.first().copied().unwrap_or_default());
        let unreachable = || format!("data node {node} could not be reached");
        if !self.out.send(ctx, MEMBER_ADMIT, to, MemberAdmit { version, chunks }.as_words(), &[&map, &first]) {
            return Err(unreachable());
        }
        for (index, p) in pieces.iter().enumerate().skip(1) {
            let words = crate::row::bytes_to_words(p);
            let m = MemberSchema { version, index: index as u32 };
            if !self.out.send(ctx, MEMBER_SCHEMA, to, m.as_words(), &[&words]) {
                return Err(unreachable());
            }
        }
        Ok(())
    }

    fn tell_stop(&mut self, node: NodeId, code: u32, why: &str, ctx: &mut Context<'_>) {
        let words = crate::row::bytes_to_words(why.as_bytes());
        let s = MemberStop { code };
        let _ = ctx.send(&ctx.signal(MEMBER_STOP, Layout::membership_of(node)).data(s.as_words()).sections(&[&words]));
    }

    /// A step of a restart from the president (or its map, published by a new president):
    /// applied, then confirmed.
    pub(super) fn on_member_map(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(m) = ctx.typed::<MemberMap>(signal).copied() else { return };
        if m.event == MAP_STARTING && self.data_node(m.node) == Some(ctx.node_id()) && self.admitted.is_none() {
            // This node's admission begins (the president sends this first, on the link its
            // admission follows): until it comes, no map step nor failure commit is acted on
            // here (its own start-up map is not the cluster's).
            self.admission_pending = true;
            return;
        }
        if self.awaiting_admission() || !self.sent_by_president(signal) {
            return;
        }
        let words = signal.section(0).unwrap_or(&[]);
        let map = self.layout.as_deref().and_then(|l| LiveMap::from_words(l, m.version, words));
        let node = self.data_node(m.node);
        let (Some(map), Some(node)) = (map, node.or(if m.event == 0 { Some(ctx.node_id()) } else { None })) else {
            tracing::warn!(sender = %signal.sender(), node = m.node, "MEMBER_MAP with a bad node list or node: dropped");
            return ctx.unhandled(signal);
        };
        match m.event {
            0 => {}
            MAP_STARTING => self.live.mark_starting(node, m.version),
            MAP_STARTED => self.live.mark_started(node, m.version),
            other => {
                tracing::warn!(sender = %signal.sender(), event = other, "MEMBER_MAP with an unknown event: dropped");
                return ctx.unhandled(signal);
            }
        }
        // Nodes this one knows dead stay dead (their failure was committed to it), but by a
        // newer map.
        if self.live.dead().all(|n| !map.is_alive(n)) || map.version > self.live.version {
            self.live.adopt(&map);
        }
        self.ring_changed(ctx.now_ns());
        if self.live.is_serving(ctx.node_id()) {
            if let Some(a) = self.admitted.take() {
                let took = ctx.now_ns().saturating_sub(a.started_ns);
                tracing::info!(rows = a.rows, seconds = took as f64 / 1e9, map_version = m.version, "this data node has restarted: it serves its partitions");
            }
        }
        self.publish_map(ctx);
        let conf = MemberMapConf { version: m.version, node: u32::from(ctx.node_id().get()) };
        self.out.send(ctx, MEMBER_MAP_CONF, signal.sender(), conf.as_words(), &[]);
    }

    pub(super) fn on_member_map_conf(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(c) = ctx.typed::<MemberMapConf>(signal).copied() else { return };
        let Some(r) = self.restart.as_mut().filter(|r| r.version == c.version) else { return };
        r.waiting.remove(&signal.sender().node);
        self.restart_step(ctx);
    }

    /// This node is admitted: the map and the schema, then its storage instances copy.
    pub(super) fn on_admit(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(a) = ctx.typed::<MemberAdmit>(signal).copied() else { return };
        let Some(layout) = self.layout.clone() else { return };
        let Some(map) = LiveMap::from_words(&layout, a.version, signal.section(0).unwrap_or(&[])) else {
            tracing::warn!(sender = %signal.sender(), "MEMBER_ADMIT with a bad node list: dropped");
            return ctx.unhandled(signal);
        };
        let me = ctx.node_id();
        let sender = signal.sender().node;
        let from_president = map.president(&layout) == Some(sender) && self.live.is_alive(sender);
        if !map.is_starting(me) || !from_president || map.version < self.live.version {
            tracing::warn!(%sender, "MEMBER_ADMIT that does not admit this node, is not newer than its map, or is not from the president its map names: dropped");
            return ctx.unhandled(signal);
        }
        if let Some(ad) = self.admitted.as_mut() {
            // A new president admits again: the copy goes on; MEMBER_COPIED goes to it.
            ad.version = ad.version.max(a.version);
            self.live.adopt(&map);
            self.publish_map(ctx);
            return self.report_copied(ctx);
        }
        if self.heard {
            tracing::warn!(%sender, "MEMBER_ADMIT for a node that is a running member: dropped");
            return ctx.unhandled(signal);
        }
        let Some(first) = signal.section(1).and_then(crate::row::words_to_bytes) else {
            stop(STOP_RESTART_FAILED, &format!("MEMBER_ADMIT from data node {sender} carries no schema"));
        };
        if a.chunks == 0 || a.chunks > MAX_SCHEMA_PIECES {
            stop(STOP_RESTART_FAILED, &format!("MEMBER_ADMIT from data node {sender} announces {} schema pieces (1..={MAX_SCHEMA_PIECES})", a.chunks));
        }
        self.schema = Some(SchemaPieces { map, from: signal.sender(), version: a.version, chunks: a.chunks, next: 1, bytes: first });
        self.schema_done(ctx);
    }

    /// `MEMBER_SCHEMA`: the next piece of the schema, from the president that admitted this
    /// node.
    pub(super) fn on_member_schema(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(m) = ctx.typed::<MemberSchema>(signal).copied() else { return };
        let Some(p) = self.schema.as_mut().filter(|p| p.from == signal.sender() && p.version == m.version && p.next == m.index) else {
            tracing::warn!(sender = %signal.sender(), index = m.index, "MEMBER_SCHEMA out of order or not from the admitting president: dropped");
            return ctx.unhandled(signal);
        };
        let Some(bytes) = signal.section(0).and_then(crate::row::words_to_bytes) else {
            stop(STOP_RESTART_FAILED, &format!("MEMBER_SCHEMA piece {} from {} is malformed", m.index, signal.sender()));
        };
        p.bytes.extend_from_slice(&bytes);
        p.next += 1;
        self.schema_done(ctx);
    }

    /// Once every piece of the schema came: install it, take the map, and copy.
    fn schema_done(&mut self, ctx: &mut Context<'_>) {
        if !self.schema.as_ref().is_some_and(|p| p.next >= p.chunks) {
            return;
        }
        let Some(SchemaPieces { map, from, version, bytes, chunks, .. }) = self.schema.take() else { return };
        let Some(layout) = self.layout.clone() else { return };
        let me = ctx.node_id();
        let sender = from.node;
        let tables = match self.engine.catalog(me).load_checked(&bytes, &layout.dictionary.limits) {
            Ok(n) => n,
            Err(e) => stop(STOP_RESTART_FAILED, &format!("the schema from the president (data node {sender}) is not valid: {e}")),
        };
        let a = MemberAdmit { version, chunks: 0 };
        tracing::info!(president = %sender, map_version = a.version, tables, schema_bytes = bytes.len(), pieces = chunks, "admitted to the cluster: copying this node's partitions");
        self.live.adopt(&map);
        // What this node thought before it knew the cluster goes.
        self.suspected.clear();
        self.round = None;
        self.restart = None;
        self.hellos.clear();
        self.ring_changed(ctx.now_ns());
        self.publish_map(ctx);
        let instances = u32::from(layout.storage_instances);
        for i in 0..layout.storage_instances {
            let to = BlockRef::new(me, STORAGE, BlockInstance(i));
            self.out.send(ctx, COPY_ORD, to, CopyOrd { version: a.version }.as_words(), &[]);
        }
        self.admitted = Some(Admitted { version: a.version, left: instances, rows: 0, started_ns: ctx.now_ns() });
        self.admission_pending = false;
    }

    /// A storage instance of this node copied its partitions (local), or a restarted node
    /// copied all of them (at the president).
    pub(super) fn on_copied(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(c) = ctx.typed::<MemberCopied>(signal).copied() else { return };
        let sender = signal.sender().node;
        if sender == ctx.node_id() {
            let Some(a) = self.admitted.as_mut().filter(|a| a.left > 0) else { return };
            a.left -= 1;
            a.rows += join(c.rows_low, c.rows_high);
            if a.left == 0 {
                self.report_copied(ctx);
            }
            return;
        }
        let me = ctx.node_id();
        if self.president() != Some(me) {
            return;
        }
        if self.live.is_serving(sender) {
            // It missed the step that made it serve (its president died first): again.
            let to = BTreeSet::from([sender]);
            return self.send_map_step(self.live.version, sender, MAP_STARTED, &to, ctx);
        }
        // Not while a failure round runs, nor over another node's restart: it asks again.
        let busy = self.round.is_some() || self.restart.as_ref().is_some_and(|r| r.node != sender);
        if !self.live.is_starting(sender) || busy {
            return;
        }
        let version = self.live.version.saturating_add(1);
        self.live.mark_started(sender, version);
        self.ring_changed(ctx.now_ns());
        tracing::info!(node = %sender, rows = join(c.rows_low, c.rows_high), map_version = version, "restarted data node copied its partitions: it serves them again");
        self.publish_map(ctx);
        let waiting = self.serving_others(me);
        self.send_map_step(version, sender, MAP_STARTED, &waiting, ctx);
        let started_ns = self.restart.as_ref().filter(|r| r.node == sender).map_or(ctx.now_ns(), |r| r.started_ns);
        self.restart = Some(Restart { node: sender, version, phase: Phase::Finishing, waiting, started_ns });
        self.restart_step(ctx);
    }

    /// Tells the president this node copied everything.
    fn report_copied(&mut self, ctx: &mut Context<'_>) {
        let Some(a) = self.admitted.as_ref().filter(|a| a.left == 0) else { return };
        let Some(president) = self.president() else { return };
        let (rows_low, rows_high) = split(a.rows);
        let c = MemberCopied { version: a.version, rows_low, rows_high };
        self.out.send(ctx, MEMBER_COPIED, Layout::membership_of(president), c.as_words(), &[]);
    }

    /// After an agreed failure: a restart whose node died ends; a node that died is no longer
    /// waited for; a new president admits the nodes still restarting again; a restarted node
    /// that finished copying tells its (maybe new) president again.
    pub(super) fn restart_after_failure(&mut self, ctx: &mut Context<'_>) {
        let live = self.live.clone();
        self.hellos.retain(|n| live.is_alive(*n) || self.connected.contains(n));
        if let Some(r) = self.restart.as_mut() {
            if !live.is_alive(r.node) {
                tracing::warn!(node = %r.node, "a restarting data node failed: its restart is abandoned");
                self.restart = None;
            } else {
                r.waiting.retain(|n| live.is_alive(*n));
            }
        }
        if self.president() == Some(ctx.node_id()) {
            if self.restart.is_none() {
                let restarting: Vec<NodeId> = live.starting().collect();
                self.hellos.extend(restarting);
                // Survivors that missed a restart's step agree again.
                let others: BTreeSet<NodeId> = self.trusted().into_iter().filter(|n| *n != ctx.node_id()).collect();
                self.send_map_step(live.version, ctx.node_id(), 0, &others, ctx);
            }
            self.restart_step(ctx);
            self.admit_next(ctx);
        }
        self.report_copied(ctx);
    }

    /// Sends the map to this node's blocks and to every API node linked here.
    pub(super) fn publish_map(&mut self, ctx: &mut Context<'_>) {
        let map = self.live.to_words();
        let m = MemberMap { version: self.live.version, node: 0, event: 0 };
        for to in super::local_blocks(self.layout.as_deref(), ctx.node_id()) {
            // The checkpoint block (durable clusters only, which refuse node restarts) follows
            // failures alone, by NODE_FAILED.
            if to.block != crate::CHECKPOINT {
                self.out.send(ctx, MEMBER_MAP, to, m.as_words(), &[&map]);
            }
        }
        for api in self.api_nodes.clone() {
            self.send_map_to_api(api, ctx);
        }
    }

    /// The map, to one API node.
    pub(super) fn send_map_to_api(&mut self, api: NodeId, ctx: &mut Context<'_>) {
        let map = self.live.to_words();
        let m = MemberMap { version: self.live.version, node: 0, event: 0 };
        let to = BlockRef::new(api, API_SESSION, BlockInstance(0));
        let _ = ctx.send(&ctx.signal(MEMBER_MAP, to).data(m.as_words()).sections(&[&map]));
    }
}
