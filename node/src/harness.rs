//! Blocks without threads: a [`Harness`] runs the blocks of one or several nodes in the
//! calling thread, on a manual clock. Every signal a block sends (to a block of its own node, of
//! another harness node, or outside) is held in the harness's pending list, recorded in its
//! log, and delivered only when the test says so, in the order it chooses: first in, by index,
//! by a predicate, or in a seeded random order. Timers fire when the test advances the clock.
//! This is how the engine's block-level tests drive coordinators and storage without processes
//! or sockets, and what a deterministic simulator stands on.
//!
//! The harness reuses the runtime's own pieces (the block dispatch, the outbox and its job
//! buffers, the timers, the lifecycle), so a block runs here exactly as on a block thread: the
//! same `Context`, the same start phases and stop, the same counted drops.
//!
//! Invariants: one signal is delivered per step, to the block it names, to completion; what the
//! handler sent is in the pending list, in send order, before the step returns; nothing is
//! delivered twice; a signal for a node the harness does not run goes to
//! [`Harness::take_outside`].

use std::sync::{Arc, Mutex, PoisonError};

use signals::{BlockInstance, BlockNumber, BlockRef, Gsn, Limits, NodeId, Signal, SignalView};

use crate::block::{Block, ThreadLocal};
use crate::clock::{Clock, ManualClock};
use crate::jobbuf::{job_buffer, JobReader};
use crate::lane::LaneShape;
use crate::lifecycle::Lifecycle;
use crate::outbox::Outbox;
use crate::parker::Parker;
use crate::remote::{Flushed, RemoteError, RemoteSink};
use crate::routing::{Location, Routing};
use crate::runtime::{init_blocks, StartError, Tuning};
use crate::thread::Exec;

/// One signal as it was sent (its wire words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    words: Vec<u32>,
    limits: Limits,
}

impl Envelope {
    /// The signal, to read.
    pub fn view(&self) -> SignalView<'_> {
        SignalView::trusted(&self.words, self.limits)
    }

    /// Its GSN.
    pub fn gsn(&self) -> Gsn {
        self.view().gsn()
    }

    /// Its sender.
    pub fn sender(&self) -> BlockRef {
        self.view().sender()
    }

    /// Its receiver.
    pub fn receiver(&self) -> BlockRef {
        self.view().receiver()
    }

    /// Its data words.
    pub fn data(&self) -> Vec<u32> {
        self.view().data().to_vec()
    }
}

/// Sends to other nodes, captured for the harness.
#[derive(Debug)]
struct Captured(Arc<Mutex<Vec<Envelope>>>, Limits);

impl RemoteSink for Captured {
    fn pack(&mut self, _peer: NodeId, signal: &Signal<'_>) -> Result<(), RemoteError> {
        let words = pack(signal, self.1).map_err(RemoteError::Pack)?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Envelope { words, limits: self.1 });
        Ok(())
    }
    fn flush(&mut self) -> Flushed {
        Flushed::default()
    }
}

/// One signal packed alone.
fn pack(signal: &Signal<'_>, limits: Limits) -> Result<Vec<u32>, signals::PackError> {
    let mut page = vec![0u32; signal.wire_words(signals::WriteOptions::default())];
    let mut writer = signals::BatchWriter::new(&mut page, limits, signals::WriteOptions::default());
    writer.push(signal)?;
    Ok(page)
}

/// One node of the harness.
#[derive(Debug)]
struct HarnessNode {
    exec: Exec,
    inbound: [JobReader; 2],
}

/// A node's blocks before [`Harness::start`].
#[derive(Debug, Default)]
struct Plan {
    node: Option<NodeId>,
    blocks: Vec<(BlockRef, Box<dyn Block>)>,
    last_phase: u32,
}

/// Runs blocks of one or several nodes in this thread, delivering what they send in the order
/// the test chooses.
#[derive(Debug)]
pub struct Harness {
    tuning: Tuning,
    clock: Arc<ManualClock>,
    plans: Vec<Plan>,
    nodes: Vec<HarnessNode>,
    pending: Vec<Envelope>,
    log: Vec<Envelope>,
    outside: Vec<Envelope>,
    remote: Arc<Mutex<Vec<Envelope>>>,
    random: u64,
}

impl Harness {
    /// An empty harness with the default tuning.
    pub fn new() -> Harness {
        Harness::with_tuning(Tuning::default())
    }

    /// An empty harness whose nodes have `tuning` (job-buffer sizes, timers, limits).
    pub fn with_tuning(tuning: Tuning) -> Harness {
        Harness {
            tuning,
            clock: Arc::new(ManualClock::new()),
            plans: Vec::new(),
            nodes: Vec::new(),
            pending: Vec::new(),
            log: Vec::new(),
            outside: Vec::new(),
            remote: Arc::new(Mutex::new(Vec::new())),
            random: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Places `block` as `number`.`instance` of `node`; returns its reference.
    pub fn place(
        &mut self,
        node: NodeId,
        number: BlockNumber,
        instance: BlockInstance,
        block: Box<dyn Block>,
    ) -> Result<BlockRef, StartError> {
        let r = BlockRef::new(node, number, instance);
        let plan = match self.plans.iter().position(|p| p.node == Some(node)) {
            Some(i) => &mut self.plans[i],
            None => {
                self.plans.push(Plan { node: Some(node), blocks: Vec::new(), last_phase: 1 });
                let last = self.plans.len() - 1;
                &mut self.plans[last]
            }
        };
        if plan.blocks.iter().any(|(b, _)| *b == r) {
            return Err(
                crate::routing::DuplicateBlock { block: number.0, instance: instance.0 }.into()
            );
        }
        plan.blocks.push((r, block));
        Ok(r)
    }

    /// Runs start phases `1..=last` on `node`.
    pub fn start_phases(&mut self, node: NodeId, last: u32) {
        if let Some(p) = self.plans.iter_mut().find(|p| p.node == Some(node)) {
            p.last_phase = p.last_phase.max(last);
        }
    }

    /// The harness's clock (nanoseconds; it moves only with [`Harness::advance_ns`]).
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Initialises every block and runs start phase 1 on every node (what the blocks send is
    /// pending; later phases run as blocks finish theirs).
    pub fn start(&mut self) -> Result<(), StartError> {
        let shape = LaneShape {
            depth: self.tuning.job_buffer_pages,
            page_words: self.tuning.job_buffer_page_words,
            limits: self.tuning.limits,
        };
        for plan in std::mem::take(&mut self.plans) {
            let Some(node) = plan.node else { continue };
            let mut routing = Routing::new(node);
            for (slot, (r, _)) in plan.blocks.iter().enumerate() {
                routing.insert(r.block, r.instance, Location { thread: 0, slot: slot as u16 })?;
            }
            let parker = Arc::new(Parker::new().map_err(StartError::WaitSet)?);
            let (wa, ra) = job_buffer(shape, parker.clone(), parker.clone());
            let (wb, rb) = job_buffer(shape, parker.clone(), parker.clone());
            let lifecycle = Lifecycle::new(plan.blocks.len(), plan.last_phase);
            let local = ThreadLocal::new(self.tuning.timers_per_thread, parker, lifecycle);
            let mut blocks = plan.blocks;
            let named = init_blocks(&mut blocks, &mut Vec::new());
            let mut out = Outbox::new(
                Arc::new(routing),
                vec![wa],
                vec![wb],
                Box::new(Captured(self.remote.clone(), self.tuning.limits)),
            );
            // Every send, local ones too, is captured in send order.
            out.capture_all = true;
            let exec = Exec::new(0, blocks, out, local, named, self.clock.clone());
            self.nodes.push(HarnessNode { exec, inbound: [ra, rb] });
        }
        self.settle();
        Ok(())
    }

    /// Runs due lifecycle orders and collects what every node sent into the pending list.
    fn settle(&mut self) {
        let limits = self.tuning.limits;
        loop {
            let mut ran = 0;
            for n in 0..self.nodes.len() {
                ran += self.nodes[n].exec.run_lifecycle(limits);
                self.collect(n);
            }
            if ran == 0 {
                break;
            }
        }
    }

    /// Moves what node `n` sent (its job buffers and captured remote sends) to the pending list.
    fn collect(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.exec.out.flush();
        for lane in node.inbound.iter_mut() {
            while let Some(view) = lane.peek() {
                let words = view.wire_words().to_vec();
                let len = words.len();
                let envelope = Envelope { words, limits: self.tuning.limits };
                self.log.push(envelope.clone());
                self.pending.push(envelope);
                lane.advance(len);
            }
            lane.release();
        }
        let sent = std::mem::take(&mut *self.remote.lock().unwrap_or_else(PoisonError::into_inner));
        for e in sent {
            self.log.push(e.clone());
            if self.nodes.iter().any(|n| n.exec.out.routing.node() == e.receiver().node) {
                self.pending.push(e);
            } else {
                self.outside.push(e);
            }
        }
    }

    /// Signals sent and not yet delivered, in send order.
    pub fn pending(&self) -> &[Envelope] {
        &self.pending
    }

    /// Every signal sent so far, in send order.
    pub fn log(&self) -> &[Envelope] {
        &self.log
    }

    /// Takes the signals sent to nodes the harness does not run.
    pub fn take_outside(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.outside)
    }

    /// Puts `signal` in the pending list as if sent (from a client, say).
    pub fn inject(&mut self, signal: &Signal<'_>) -> Result<(), signals::PackError> {
        let envelope =
            Envelope { words: pack(signal, self.tuning.limits)?, limits: self.tuning.limits };
        self.log.push(envelope.clone());
        self.pending.push(envelope);
        Ok(())
    }

    /// Delivers pending signal `index`; returns it, or `None` when there is no such signal. A
    /// signal for a block its node does not run is dropped (and logged).
    pub fn deliver(&mut self, index: usize) -> Option<Envelope> {
        if index >= self.pending.len() {
            return None;
        }
        let envelope = self.pending.remove(index);
        let view = envelope.view();
        let receiver = view.receiver();
        let Some(n) = self.nodes.iter().position(|n| n.exec.out.routing.node() == receiver.node)
        else {
            self.outside.push(envelope.clone());
            return Some(envelope);
        };
        if self.nodes[n].exec.out.routing.locate_ref(receiver).is_none() {
            tracing::warn!(gsn = %view.gsn(), receiver = %receiver, "harness: no such block; signal dropped");
            return Some(envelope);
        }
        self.nodes[n].exec.dispatch(&view);
        self.collect(n);
        self.settle();
        Some(envelope)
    }

    /// Delivers the first pending signal for which `which` holds.
    pub fn deliver_where(&mut self, which: impl Fn(&Envelope) -> bool) -> Option<Envelope> {
        let index = self.pending.iter().position(which)?;
        self.deliver(index)
    }

    /// Delivers pending signals first in, first out, until none is left or `max` were
    /// delivered; returns how many were.
    pub fn run(&mut self, max: usize) -> usize {
        let mut delivered = 0;
        while delivered < max && self.deliver(0).is_some() {
            delivered += 1;
        }
        delivered
    }

    /// Delivers pending signals in an order drawn from `seed` (the same seed, the same order),
    /// until none is left or `max` were delivered; returns how many were.
    pub fn run_random(&mut self, seed: u64, max: usize) -> usize {
        self.random = seed;
        let mut delivered = 0;
        while delivered < max && !self.pending.is_empty() {
            // splitmix64: small, seeded, and the same everywhere.
            self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.random;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let index = (z % self.pending.len() as u64) as usize;
            self.deliver(index);
            delivered += 1;
        }
        delivered
    }

    /// Moves the clock on by `delta_ns` and fires every timer then due, on every node; returns
    /// how many fired.
    pub fn advance_ns(&mut self, delta_ns: u64) -> usize {
        self.clock.advance_ns(delta_ns);
        let limits = self.tuning.limits;
        let mut fired = 0;
        for n in 0..self.nodes.len() {
            loop {
                let now = self.nodes[n].exec.fire_timers(limits);
                self.collect(n);
                if now == 0 {
                    break;
                }
                fired += now;
            }
        }
        self.settle();
        fired
    }

    /// Whether every block of every node has run every start phase.
    pub fn started(&self) -> bool {
        self.nodes.iter().all(|n| {
            let life = &n.exec.local.lifecycle;
            life.phase() > life.last_phase()
        })
    }

    /// Asks every block of every node to stop (`STOP_REQ`); what they send is pending.
    pub fn stop(&mut self) {
        for n in &self.nodes {
            n.exec.local.lifecycle.request_stop(std::time::Duration::ZERO);
        }
        self.settle();
    }

    /// Signals dropped by the blocks of `node` (not handled, or ill-sized).
    pub fn dropped(&self, node: NodeId) -> u64 {
        self.nodes
            .iter()
            .find(|n| n.exec.out.routing.node() == node)
            .map_or(0, |n| n.exec.local.dropped)
    }
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}
