//! Starting and stopping one node's block threads: [`NodeBuilder`] places block instances on
//! threads, builds the routing table and every job-buffer lane, runs each block's init hook, and
//! spawns the threads; [`RunningNode`] stops and joins them.
//!
//! Invariants: there is one lane per (producer, block thread, priority), where producers are
//! the block threads followed by the receive paths; all job buffers, timers and counters are allocated
//! here, before any thread runs; stopping sets one flag, wakes every thread, and joins them all.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use signals::gsn::{NodeConnected, NodeFailRep};
use signals::{
    gsn, BlockInstance, BlockNumber, BlockRef, Limits, NodeId, Priority, Protocol, ProtocolClash,
    ProtocolSet, Signal, SignalData,
};
use transporter::{LinkEvent, TransportKind};

use crate::block::{Block, InitContext, ThreadLocal};
use crate::clock::{Clock, MonotonicClock};
use crate::congestion::Waits;
use crate::inbound::InboundRouter;
use crate::jobbuf::{job_buffer, JobReader, JobWriter};
use crate::lane::LaneShape;
use crate::lifecycle::Lifecycle;
use crate::outbox::Outbox;
use crate::parker::Parker;
use crate::remote::{LocalReceive, NoRemote, RemoteFactory};
use crate::routing::{DuplicateBlock, Location, Routing};
use crate::stats::{NamedCounters, NodeStats};
use crate::sync::Flag;
use crate::thread::{BlockThread, Exec, ThreadTuning};

/// The most block threads a node runs (congestion masks are 64 bits).
pub const MAX_BLOCK_THREADS: usize = 64;

/// Sizes and knobs of a node's runtime (from the `[threads]` and `[limits]` configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Spin this long (µs) after running out of work before sleeping.
    pub spin_time_us: u64,
    /// At most this many B signals from one job buffer per round.
    pub b_signals_per_round: usize,
    /// Job-buffer size, in units of `job_buffer_page_words`: a job buffer holds
    /// `job_buffer_pages * job_buffer_page_words` words (rounded up to a power of two).
    pub job_buffer_pages: usize,
    /// Words per job-buffer page, at least `limits.max_signal_words()`.
    pub job_buffer_page_words: usize,
    /// Pending timers per thread.
    pub timers_per_thread: usize,
    /// Signal size limits.
    pub limits: Limits,
}

impl Default for Tuning {
    fn default() -> Tuning {
        let limits = Limits::default();
        Tuning {
            spin_time_us: 50,
            b_signals_per_round: 64,
            job_buffer_pages: 8,
            job_buffer_page_words: limits.max_signal_words(),
            timers_per_thread: 1024,
            limits,
        }
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Thread count outside `1..=64`.
    #[error("threads.count = {0} is out of range (allowed: 1..={MAX_BLOCK_THREADS})")]
    ThreadCount(usize),
    /// A block placed on a thread that does not exist.
    #[error("block {block} placed on thread {thread}, but the node has {threads} threads")]
    NoSuchThread { block: BlockRef, thread: usize, threads: usize },
    /// The same block instance placed twice.
    #[error(transparent)]
    Duplicate(#[from] DuplicateBlock),
    /// A lane shape the runtime cannot use.
    #[error("job buffer of {pages} pages of {page_words} words is invalid (need at least 2 pages of at least max_signal_words = {max_signal_words} words)")]
    LaneShape { pages: usize, page_words: usize, max_signal_words: usize },
    /// No such receive path, or its router was already taken.
    #[error("receive path {path} does not exist or is already in use")]
    NoReceivePath { path: usize },
    /// An eventfd or epoll set could not be made.
    #[error("could not create a wait set: {0}")]
    WaitSet(#[source] io::Error),
    /// A thread could not be spawned.
    #[error("could not spawn block thread {thread}: {source}")]
    Spawn { thread: usize, source: io::Error },
    /// Two protocols declare the same signal number or name.
    #[error("protocols clash: {0}")]
    Protocol(#[from] ProtocolClash),
}

/// How long an ordered stop waits for the blocks by default.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The block reference the runtime sends node events from (block number 0 is no block's).
pub fn runtime_ref(node: NodeId) -> BlockRef {
    BlockRef::new(node, BlockNumber(0), BlockInstance(0))
}

/// One block thread's plan.
#[derive(Debug, Default)]
struct ThreadPlan {
    cpu: Option<usize>,
    blocks: Vec<(BlockRef, Box<dyn Block>)>,
    receive: Option<Box<dyn LocalReceive>>,
}

/// Places blocks on threads, then starts the node.
#[derive(Debug)]
pub struct NodeBuilder {
    node: NodeId,
    tuning: Tuning,
    threads: Vec<ThreadPlan>,
    receive_paths: usize,
    clock: Arc<dyn Clock>,
    remote: Box<dyn RemoteFactory>,
    stats: Arc<NodeStats>,
    protocols: ProtocolSet,
    last_phase: u32,
    stop_grace: Duration,
}

impl NodeBuilder {
    /// A node `node` with `threads` block threads.
    pub fn new(node: NodeId, threads: usize, tuning: Tuning) -> Result<NodeBuilder, StartError> {
        if !(1..=MAX_BLOCK_THREADS).contains(&threads) {
            return Err(StartError::ThreadCount(threads));
        }
        if tuning.job_buffer_pages < 2
            || tuning.job_buffer_page_words < tuning.limits.max_signal_words()
        {
            return Err(StartError::LaneShape {
                pages: tuning.job_buffer_pages,
                page_words: tuning.job_buffer_page_words,
                max_signal_words: tuning.limits.max_signal_words(),
            });
        }
        Ok(NodeBuilder {
            node,
            tuning,
            threads: (0..threads).map(|_| ThreadPlan::default()).collect(),
            receive_paths: 0,
            clock: Arc::new(MonotonicClock::new()),
            remote: Box::new(NoRemote),
            stats: Arc::new(NodeStats::new(node, threads)),
            protocols: ProtocolSet::with_system(),
            last_phase: 1,
            stop_grace: STOP_GRACE,
        })
    }

    /// Registers a protocol the node's blocks speak; a signal number or name another registered
    /// protocol declares is refused, naming both.
    pub fn protocol(&mut self, protocol: &'static Protocol) -> Result<(), StartError> {
        Ok(self.protocols.register(protocol)?)
    }

    /// The protocols registered.
    pub fn protocols(&self) -> &ProtocolSet {
        &self.protocols
    }

    /// Runs start phases `1..=last` (at least 1): every block gets `START_ORD` of each, a phase
    /// starting once every block is done with the one before.
    pub fn start_phases(&mut self, last: u32) {
        self.last_phase = self.last_phase.max(last);
    }

    /// How long [`RunningNode::stop`] waits for the blocks to finish their `STOP_REQ`.
    pub fn stop_grace(&mut self, grace: Duration) {
        self.stop_grace = grace;
    }

    /// The node's counters (for a statistics block, before it is placed).
    pub fn stats(&self) -> Arc<NodeStats> {
        self.stats.clone()
    }

    /// The node id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Uses `clock` instead of the monotonic clock (tests drive time by hand).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> NodeBuilder {
        self.clock = clock;
        self
    }

    /// Uses `remote` for signals to other nodes (the transporter registry).
    pub fn remote(mut self, remote: Box<dyn RemoteFactory>) -> NodeBuilder {
        self.remote = remote;
        self
    }

    /// Reserves `paths` inbound routers (receive threads, injectors).
    pub fn receive_paths(mut self, paths: usize) -> NodeBuilder {
        self.receive_paths = paths;
        self
    }

    /// Has block thread `thread` receive from `receive` itself, in its rounds, sleeping on it
    /// in its own epoll set (`threads.receive = 0`): no receive thread, and signals for its own
    /// blocks run with no job-buffer hop.
    pub fn receive_in_thread(
        &mut self,
        thread: usize,
        receive: Box<dyn LocalReceive>,
    ) -> Result<(), StartError> {
        let threads = self.threads.len();
        match self.threads.get_mut(thread) {
            Some(t) => {
                t.receive = Some(receive);
                Ok(())
            }
            None => {
                Err(StartError::NoSuchThread { block: runtime_ref(self.node), thread, threads })
            }
        }
    }

    /// Pins block thread `thread` to CPU `cpu`.
    pub fn pin(&mut self, thread: usize, cpu: usize) {
        if let Some(t) = self.threads.get_mut(thread) {
            t.cpu = Some(cpu);
        }
    }

    /// Places `block` as `number`.`instance` on `thread`; returns its reference.
    pub fn place(
        &mut self,
        thread: usize,
        number: BlockNumber,
        instance: BlockInstance,
        block: Box<dyn Block>,
    ) -> Result<BlockRef, StartError> {
        let r = BlockRef::new(self.node, number, instance);
        let threads = self.threads.len();
        if thread >= threads {
            return Err(StartError::NoSuchThread { block: r, thread, threads });
        }
        if self.threads.iter().flat_map(|t| &t.blocks).any(|(b, _)| *b == r) {
            return Err(DuplicateBlock { block: number.0, instance: instance.0 }.into());
        }
        self.threads[thread].blocks.push((r, block));
        Ok(r)
    }

    /// Builds routing, lanes, timers and counters, initialises every block, and starts the
    /// threads.
    pub fn start(mut self) -> Result<RunningNode, StartError> {
        let threads = self.threads.len();
        let routing = Arc::new(self.routing()?);
        let block_count = self.threads.iter().map(|t| t.blocks.len()).sum();
        let lifecycle = Lifecycle::new(block_count, self.last_phase);
        let block_parkers = parkers(threads)?;
        // One more path than asked: the control path node events and tests inject through.
        let path_parkers = parkers(self.receive_paths + 1)?;
        lifecycle.set_parkers(block_parkers.clone());
        let all_parkers: Vec<Arc<Parker>> =
            block_parkers.iter().chain(&path_parkers).cloned().collect();
        let shape = LaneShape {
            depth: self.tuning.job_buffer_pages,
            page_words: self.tuning.job_buffer_page_words,
            limits: self.tuning.limits,
        };
        let mut lanes = Lanes::new(shape, &all_parkers, &block_parkers);
        let waits = Waits::new(all_parkers.len());
        let stop = Arc::new(Flag::new());
        let tuning = ThreadTuning {
            spin_time: Duration::from_micros(self.tuning.spin_time_us),
            b_signals_per_round: self.tuning.b_signals_per_round,
            limits: self.tuning.limits,
        };
        let plans = std::mem::take(&mut self.threads);
        let mut bodies = Vec::with_capacity(threads);
        let mut subscribers = Vec::new();
        for (t, plan) in plans.into_iter().enumerate() {
            let (out_a, out_b) = lanes.take_out(t);
            let (in_a, in_b) = lanes.take_in(t);
            let local = ThreadLocal::new(
                self.tuning.timers_per_thread,
                block_parkers[t].clone(),
                lifecycle.clone(),
            );
            let exec = self.exec(
                t,
                plan.blocks,
                Outbox::new(routing.clone(), out_a, out_b, self.remote.sink(t)),
                local,
                &mut subscribers,
            );
            let parker = block_parkers[t].clone();
            let stats = self.stats.clone();
            let receive = plan.receive;
            let mut body = BlockThread::new(
                exec,
                in_a,
                in_b,
                threads,
                parker,
                stop.clone(),
                tuning,
                stats,
                plan.cpu,
                waits.clone(),
            );
            if let Some(receive) = receive {
                body.receive_here(receive).map_err(StartError::WaitSet)?;
            }
            bodies.push(body);
        }
        let mut inbound: Vec<Option<InboundRouter>> = (0..=self.receive_paths)
            .map(|i| {
                let (a, b) = lanes.take_out(threads + i);
                let parker = path_parkers[i].clone();
                let producer = threads + i;
                Some(InboundRouter::new(
                    i,
                    routing.clone(),
                    a,
                    b,
                    parker,
                    (waits.clone(), producer),
                ))
            })
            .collect();
        let control = inbound.pop().flatten();
        let mut node = RunningNode {
            handles: Vec::with_capacity(threads + self.receive_paths),
            injector: Injector {
                control: Arc::new(std::sync::Mutex::new(control)),
                subscribers: subscribers.into(),
                node: self.node,
                stop: stop.clone(),
            },
            lifecycle,
            stop_grace: self.stop_grace,
            protocols: self.protocols,
            stopper: Stopper {
                stop,
                parkers: all_parkers.clone(),
                stopping: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
            },
            parkers: block_parkers,
            stats: self.stats,
            inbound,
        };
        for (t, body) in bodies.into_iter().enumerate() {
            let stopper = node.stopper.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("block-{t}"))
                .spawn(move || stopper.run_guarded(t, || body.run()));
            match spawned {
                Ok(h) => node.handles.push((t, h)),
                Err(source) => return Err(StartError::Spawn { thread: t, source }),
            }
        }
        Ok(node)
    }

    /// Initialises thread `t`'s blocks (registering their counters) and bundles what its
    /// handlers may touch.
    fn exec(
        &self,
        t: usize,
        mut blocks: Vec<(BlockRef, Box<dyn Block>)>,
        out: Outbox,
        local: ThreadLocal,
        subscribers: &mut Vec<BlockRef>,
    ) -> Exec {
        let named = init_blocks(&mut blocks, subscribers);
        self.stats.set_named(t, named.clone());
        Exec::new(t, blocks, out, local, named, self.clock.clone())
    }

    /// The routing table of the placed blocks.
    fn routing(&self) -> Result<Routing, StartError> {
        let mut routing = Routing::new(self.node);
        for (t, plan) in self.threads.iter().enumerate() {
            for (slot, (r, _)) in plan.blocks.iter().enumerate() {
                let at = Location { thread: t as u16, slot: slot as u16 };
                routing.insert(r.block, r.instance, at)?;
            }
        }
        Ok(routing)
    }
}

/// Runs each block's init hook; returns the named counters they registered (and adds the
/// node-event subscribers to `subscribers`).
pub(crate) fn init_blocks(
    blocks: &mut [(BlockRef, Box<dyn Block>)],
    subscribers: &mut Vec<BlockRef>,
) -> Arc<NamedCounters> {
    let mut named = NamedCounters::default();
    for (me, block) in blocks.iter_mut() {
        block.init(&mut InitContext { me: *me, counters: &mut named, node_events: subscribers });
    }
    Arc::new(named)
}

/// The node-event signal for `event`: its GSN and data, with the reason section in `reason`.
pub(crate) fn node_event_signal(
    event: &LinkEvent,
    reason: &mut Vec<u32>,
) -> (signals::Gsn, [u32; 2]) {
    match event {
        LinkEvent::Connected { peer, transport } => {
            let transport = match transport {
                TransportKind::Tcp => 1,
                TransportKind::Shm => 2,
                TransportKind::Rdma => 3,
            };
            let data = NodeConnected { node: u32::from(peer.get()), transport };
            let words = data.as_words();
            (gsn::NODE_CONNECTED, [words[0], words[1]])
        }
        LinkEvent::Failed { peer, reason: why } => {
            let text = why.to_string();
            reason.clear();
            for chunk in text.as_bytes().chunks(4) {
                let mut word = [0u8; 4];
                word[..chunk.len()].copy_from_slice(chunk);
                reason.push(u32::from_le_bytes(word));
            }
            let data = NodeFailRep { node: u32::from(peer.get()), reason_bytes: text.len() as u32 };
            let words = data.as_words();
            (gsn::NODE_FAILREP, [words[0], words[1]])
        }
    }
}

/// The reason text of a `NODE_FAILREP` (section 0, `reason_bytes` long).
pub fn failrep_reason(signal: &signals::SignalView<'_>) -> String {
    let (Ok(rep), Some(section)) = (signal.typed::<NodeFailRep>(), signal.section(0)) else {
        return String::new();
    };
    let bytes: Vec<u8> = section.iter().flat_map(|w| w.to_le_bytes()).collect();
    let len = (rep.reason_bytes as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

fn parkers(n: usize) -> Result<Vec<Arc<Parker>>, StartError> {
    (0..n).map(|_| Parker::new().map(Arc::new).map_err(StartError::WaitSet)).collect()
}

/// Every lane of a node, sorted by end until each thread and router takes its own.
struct Lanes {
    /// `out[p]` = (A lanes, B lanes) of producer `p`, indexed by block thread.
    out: Vec<Option<(Vec<JobWriter>, Vec<JobWriter>)>>,
    /// `inb[t]` = (A lanes, B lanes) into block thread `t`, indexed by producer.
    inb: Vec<Option<(Vec<JobReader>, Vec<JobReader>)>>,
}

impl Lanes {
    fn new(shape: LaneShape, producers: &[Arc<Parker>], consumers: &[Arc<Parker>]) -> Lanes {
        let mut out: Vec<_> = producers.iter().map(|_| Some((Vec::new(), Vec::new()))).collect();
        let mut inb: Vec<_> = consumers.iter().map(|_| Some((Vec::new(), Vec::new()))).collect();
        for (p, pp) in producers.iter().enumerate() {
            for (t, cp) in consumers.iter().enumerate() {
                let (wa, ra) = job_buffer(shape, pp.clone(), cp.clone());
                let (wb, rb) = job_buffer(shape, pp.clone(), cp.clone());
                if let (Some(o), Some(i)) = (out[p].as_mut(), inb[t].as_mut()) {
                    o.0.push(wa);
                    o.1.push(wb);
                    i.0.push(ra);
                    i.1.push(rb);
                }
            }
        }
        Lanes { out, inb }
    }

    fn take_out(&mut self, producer: usize) -> (Vec<JobWriter>, Vec<JobWriter>) {
        self.out[producer].take().unwrap_or_default()
    }

    fn take_in(&mut self, thread: usize) -> (Vec<JobReader>, Vec<JobReader>) {
        self.inb[thread].take().unwrap_or_default()
    }
}

/// A block or receive thread panicked (receive threads are numbered after block threads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("thread {thread} panicked")]
pub struct ThreadPanicked {
    /// Which thread.
    pub thread: usize,
}

/// Tells every block thread of a node to stop (cheap to clone; usable from a signal watcher).
#[derive(Clone, Debug)]
pub struct Stopper {
    stop: Arc<Flag>,
    parkers: Vec<Arc<Parker>>,
    /// Set (and waiters told) once the node is stopping, for [`Stopper::wait`].
    stopping: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Stopper {
    /// Whether the node is stopping (receive threads poll this after each wakeup).
    pub fn is_stopping(&self) -> bool {
        self.stop.is_set()
    }

    /// Sets the stop flag and wakes every sleeping thread.
    pub fn stop(&self) {
        self.stop.set();
        for p in &self.parkers {
            p.wake();
        }
        let (lock, told) = &*self.stopping;
        *lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        told.notify_all();
    }

    /// Waits until the node is stopping (told to, or because one of its threads panicked), at
    /// most `timeout` (`None`: for as long as it takes). Returns whether it is.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let (lock, told) = &*self.stopping;
        let guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let guard = match timeout {
            Some(t) => {
                told.wait_timeout_while(guard, t, |stopping| !*stopping)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            }
            None => told
                .wait_while(guard, |stopping| !*stopping)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
        *guard
    }

    /// Runs `body` as thread `thread` of the node: a panic in it (a block's bug) stops the whole
    /// node at once, logged, instead of leaving the other threads to fill the dead thread's job
    /// buffers and stall behind them; the panic still reaches [`RunningNode::stop`].
    pub fn run_guarded(&self, thread: usize, body: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(thread, panic = %what, "thread panicked: stopping the node");
            self.stop();
            std::panic::resume_unwind(panic);
        }
    }
}

/// Sends signals into a running node from outside its threads, through its control path (one
/// producer: calls from several handles take turns on a lock). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Injector {
    control: Arc<std::sync::Mutex<Option<InboundRouter>>>,
    subscribers: Arc<[BlockRef]>,
    node: NodeId,
    stop: Arc<Flag>,
}

impl Injector {
    /// Delivers a link event to every subscribed block as a priority-A signal
    /// (`NODE_CONNECTED`, or `NODE_FAILREP` with the reason), in the order of the calls. Waits
    /// for room while a job buffer is full, at most `timeout`; returns how many blocks got it.
    pub fn node_event(&self, event: &LinkEvent, timeout: Duration) -> usize {
        let mut reason = Vec::new();
        let from = runtime_ref(self.node);
        let mut delivered = 0;
        for &to in self.subscribers.iter() {
            let (gsn, data) = node_event_signal(event, &mut reason);
            let with_reason: [&[u32]; 1] = [&reason];
            let sections: &[&[u32]] = if gsn == gsn::NODE_FAILREP { &with_reason } else { &[] };
            let signal =
                Signal::new(gsn, from, to).priority(Priority::A).data(&data).sections(sections);
            match self.inject(&signal, timeout) {
                Ok(()) => delivered += 1,
                Err(e) => {
                    tracing::warn!(to = %to, gsn = %gsn, error = %e, "node event not delivered")
                }
            }
        }
        delivered
    }

    /// Sends `signal` to a block of this node, waiting for room while its job buffer is full,
    /// at most `timeout`.
    pub fn inject(
        &self,
        signal: &Signal<'_>,
        timeout: Duration,
    ) -> Result<(), crate::remote::RouteError> {
        let mut guard = self.control.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(router) = guard.as_mut() else {
            unreachable!("the control path is made at start and never taken");
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match router.send(signal) {
                Ok(()) => {
                    router.flush();
                    return Ok(());
                }
                Err(crate::remote::RouteError::Full { thread, priority })
                    if std::time::Instant::now() < deadline && !self.stop.is_set() =>
                {
                    router.wait_for_room(thread, priority, Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    handles: Vec<(usize, JoinHandle<()>)>,
    /// The path node events (and [`RunningNode::inject`]) come in on.
    injector: Injector,
    lifecycle: Arc<Lifecycle>,
    stop_grace: Duration,
    protocols: ProtocolSet,
    stopper: Stopper,
    parkers: Vec<Arc<Parker>>,
    stats: Arc<NodeStats>,
    inbound: Vec<Option<InboundRouter>>,
}

impl RunningNode {
    /// Takes the router of receive path `path` (once).
    pub fn take_inbound(&mut self, path: usize) -> Option<InboundRouter> {
        self.inbound.get_mut(path)?.take()
    }

    /// The node's counters.
    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    /// Block thread `thread`'s parker (add transporter descriptors to its epoll set).
    pub fn parker(&self, thread: usize) -> Option<&Arc<Parker>> {
        self.parkers.get(thread)
    }

    /// A handle that stops the node from anywhere.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Starts a receive thread for receive path `path`, pinned to `cpu` if given: `body` gets
    /// the path's [`InboundRouter`] (whose parker's epoll set is where it should sleep, with
    /// its sockets added) and a [`Stopper`] to poll with [`Stopper::is_stopping`]; the node
    /// wakes it through that parker and joins it on stop.
    pub fn spawn_receive_thread(
        &mut self,
        path: usize,
        cpu: Option<usize>,
        body: impl FnOnce(InboundRouter, Stopper) + Send + 'static,
    ) -> Result<(), StartError> {
        let router = self.take_inbound(path).ok_or(StartError::NoReceivePath { path })?;
        let stopper = self.stopper.clone();
        let thread = self.parkers.len() + path;
        let spawned =
            std::thread::Builder::new().name(format!("receive-{path}")).spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        tracing::warn!(path, cpu, "could not pin receive thread");
                    }
                }
                let guard = stopper.clone();
                guard.run_guarded(thread, || body(router, stopper))
            });
        let handle = spawned.map_err(|source| StartError::Spawn { thread, source })?;
        self.handles.push((thread, handle));
        Ok(())
    }

    /// Waits until every block has run every start phase, at most `timeout`; returns whether
    /// the node has started.
    pub fn wait_started(&self, timeout: Duration) -> bool {
        self.lifecycle.wait_started(timeout)
    }

    /// The protocols the node registered.
    pub fn protocols(&self) -> &ProtocolSet {
        &self.protocols
    }

    /// The blocks subscribed to node events.
    pub fn node_event_subscribers(&self) -> &[BlockRef] {
        &self.injector.subscribers
    }

    /// See [`Injector::node_event`].
    pub fn node_event(&self, event: &LinkEvent, timeout: Duration) -> usize {
        self.injector.node_event(event, timeout)
    }

    /// See [`Injector::inject`].
    pub fn inject(
        &self,
        signal: &Signal<'_>,
        timeout: Duration,
    ) -> Result<(), crate::remote::RouteError> {
        self.injector.inject(signal, timeout)
    }

    /// A handle that injects signals and node events from another thread.
    pub fn injector(&self) -> Injector {
        self.injector.clone()
    }

    /// Stops in order: every block gets `STOP_REQ` and finishes or aborts its work (the node
    /// waits for them at most its stop grace), then every thread stops and is joined; reports
    /// the first thread that panicked.
    pub fn stop(mut self) -> Result<(), ThreadPanicked> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ThreadPanicked> {
        if !self.stopper.is_stopping() && !self.handles.is_empty() {
            self.lifecycle.request_stop(self.stop_grace);
            if !self.lifecycle.wait_stopped(self.stop_grace) {
                tracing::warn!(grace = ?self.stop_grace, "blocks did not finish their STOP_REQ in time: stopping the threads");
            }
        }
        self.stopper.stop();
        let mut result = Ok(());
        for (thread, h) in self.handles.drain(..) {
            if h.join().is_err() && result.is_ok() {
                result = Err(ThreadPanicked { thread });
            }
        }
        result
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
