//! A data node from its cluster file, as a library: [`DataNode::start`] does what the
//! `blockwire-datanode` binary does (the binary, the tests and the benchmarks all call it), so
//! the wiring of a node is written once.
//!
//! Start-up order:
//! 1. assemble the node: threads, pinning, and the blocks `[[blocks]]` places, made by their
//!    kinds (`crate::assemble::data_node_builder`), protocols registered and checked;
//! 2. start the transporter registry for this node's links (it listens on the node's address even
//!    with no links, so a second copy of the node fails here, naming the address);
//! 3. start the block threads (with `threads.receive = 0`, block thread 0 receives from every
//!    link in its own rounds; with 1, a receive thread routes what the links deliver), the send
//!    thread when `threads.send = 1`, and the event thread that hands each link event to the
//!    blocks that subscribed (`NODE_CONNECTED`, `NODE_FAILREP`) in the order the registry saw them.
//!
//! [`DataNode::stop`] stops in order: every block gets `STOP_REQ` (the node waits for them, at
//! most its grace time), then the threads stop and are joined, then the send thread writes what
//! they handed over and stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use transporter::{LinkEvent, Registry, RegistryConfig, RegistryError};

use crate::assemble::{data_node_builder, AssembleError};
use crate::config::Config;
use crate::kinds::Kinds;
use crate::links::{
    receive_loop, receive_spin_time, registry_config, RegistryRemote, RegistryStats,
};
use crate::runtime::{Injector, NodeBuilder, RunningNode, StartError, Stopper, ThreadPanicked};

/// Why a data node did not start.
#[derive(Debug, thiserror::Error)]
pub enum DataNodeError {
    /// The configuration or the layout is unusable for this node.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// The links could not start (a port in use, no RDMA device, ...).
    #[error("could not start the links: {0}")]
    Registry(#[from] RegistryError),
    /// The block threads could not start.
    #[error("could not start the node: {0}")]
    Start(#[from] StartError),
    /// A thread of the node's own could not be spawned.
    #[error("could not start the {what} thread: {source}")]
    Spawn { what: &'static str, source: std::io::Error },
    /// A caller's hook refused.
    #[error("{0}")]
    Hook(String),
}

/// How long the event thread waits for room in a subscriber's job buffer before it logs the
/// event as not delivered.
const EVENT_ROOM_WAIT: Duration = Duration::from_secs(1);

/// A data node being set up: the [`NodeBuilder`] from the cluster file, open for more blocks.
#[derive(Debug)]
pub struct DataNodeBuilder {
    config: Config,
    builder: NodeBuilder,
    links: RegistryConfig,
    receive_cpu: Option<usize>,
}

impl DataNodeBuilder {
    /// The node builder (to place more blocks, pin threads, register protocols).
    pub fn node(&mut self) -> &mut NodeBuilder {
        &mut self.builder
    }

    /// Runs without a send thread, whatever `threads.send` says (block threads write).
    pub fn without_send_thread(mut self) -> DataNodeBuilder {
        self.links.send_thread = false;
        self
    }

    /// Pins the receive thread to `cpu`.
    pub fn receive_cpu(mut self, cpu: Option<usize>) -> DataNodeBuilder {
        self.receive_cpu = cpu;
        self
    }

    /// Starts the links, then the node.
    pub fn start(self) -> Result<DataNode, DataNodeError> {
        self.start_after(|_| Ok(()))
    }

    /// Starts the links, calls `ready` with the registry (to wait for a peer, say), then starts
    /// the node.
    pub fn start_after(
        self,
        ready: impl FnOnce(&Registry) -> Result<(), String>,
    ) -> Result<DataNode, DataNodeError> {
        let DataNodeBuilder { config, builder, links, receive_cpu } = self;
        let me = builder.node();
        let link_count = config.links_of(me).count();
        let mut registry = Registry::start(links)?;
        let Some(side) = registry.take_receive_side() else {
            unreachable!("a registry just started has its receive side");
        };
        let send_thread = registry.take_send_thread();
        let registry = Arc::new(registry);
        builder.stats().set_link_source(Arc::new(RegistryStats::new(registry.clone())));
        let mut builder = builder
            .remote(Box::new(RegistryRemote::new(registry.clone())))
            .receive_paths(config.threads.receive);
        // threads.receive = 0: block thread 0 receives from every link in its own rounds.
        let side = match config.threads.receive {
            0 => {
                builder.receive_in_thread(0, Box::new(side))?;
                None
            }
            _ => Some(side),
        };
        ready(&registry).map_err(DataNodeError::Hook)?;
        let mut node = builder.start()?;
        if let Some(side) = side {
            let spin = receive_spin_time(&config, me);
            node.spawn_receive_thread(0, receive_cpu, move |router, stopper| {
                receive_loop(side, router, stopper, spin)
            })?;
        }
        let stop_threads = Arc::new(AtomicBool::new(false));
        let events = spawn_events(&registry, node.injector(), stop_threads.clone())?;
        let mut send = None;
        if let Some(mut t) = send_thread {
            // threads.send = 1: block threads hand their pages over; this thread writes them.
            let stop = stop_threads.clone();
            let spin = Duration::from_micros(config.threads.spin_time_us);
            // Numbered after the block and receive threads; a panic in it stops the node.
            let (guard, number) = (node.stopper(), config.threads.count + 1);
            let handle = std::thread::Builder::new()
                .name("send-0".into())
                .spawn(move || {
                    guard.run_guarded(number, || {
                        t.run(spin, Duration::from_millis(50), &|| stop.load(Ordering::Relaxed))
                    })
                })
                .map_err(|source| DataNodeError::Spawn { what: "send", source })?;
            send = Some((number, handle));
        }
        tracing::info!(
            cluster = config.cluster_id,
            node = %me,
            threads = config.threads.count,
            blocks = config.blocks.len(),
            links = link_count,
            listen = ?registry.local_addr(),
            "data node running"
        );
        Ok(DataNode { node: Some(node), registry, stop_threads, events: Some(events), send })
    }
}

/// A running data node.
#[derive(Debug)]
pub struct DataNode {
    node: Option<RunningNode>,
    registry: Arc<Registry>,
    stop_threads: Arc<AtomicBool>,
    events: Option<JoinHandle<()>>,
    send: Option<(usize, JoinHandle<()>)>,
}

impl DataNode {
    /// Data node `node_id` of `config`, its blocks made by `kinds`, ready to start.
    pub fn builder(
        config: &Config,
        node_id: u64,
        kinds: &Kinds,
    ) -> Result<DataNodeBuilder, DataNodeError> {
        let builder = data_node_builder(config, node_id, kinds)?;
        let links = registry_config(config, builder.node()).map_err(AssembleError::from)?;
        Ok(DataNodeBuilder { config: config.clone(), builder, links, receive_cpu: None })
    }

    /// Starts data node `node_id` of `config`, its blocks made by `kinds`.
    pub fn start(config: &Config, node_id: u64, kinds: &Kinds) -> Result<DataNode, DataNodeError> {
        DataNode::builder(config, node_id, kinds)?.start()
    }

    /// The running block runtime.
    pub fn node(&self) -> &RunningNode {
        match &self.node {
            Some(node) => node,
            None => unreachable!("the node is taken only by stop, which consumes self"),
        }
    }

    /// The link registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A handle that stops the node from anywhere (at once, not in order).
    pub fn stopper(&self) -> Stopper {
        self.node().stopper()
    }

    /// Stops in order and joins every thread; reports the first thread that panicked.
    pub fn stop(mut self) -> Result<(), ThreadPanicked> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), ThreadPanicked> {
        let Some(node) = self.node.take() else { return Ok(()) };
        let stats = node.stats().clone();
        let stopped = node.stop();
        // The block threads are joined: the send thread writes what they handed over, then
        // stops; a send thread that panicked fails the stop as a block thread's panic does.
        self.stop_threads.store(true, Ordering::Relaxed);
        let stopped = match self.send.take().map(|(thread, t)| (thread, t.join())) {
            Some((thread, Err(_))) => stopped.and(Err(ThreadPanicked { thread })),
            _ => stopped,
        };
        if let Some(events) = self.events.take() {
            let _ = events.join();
        }
        for (i, t) in stats.threads().iter().enumerate() {
            let s = t.snapshot();
            tracing::info!(
                thread = i,
                signals_run = s.signals_run,
                rounds = s.rounds,
                sleeps = s.sleeps,
                wakeups = s.wakeups,
                dropped = s.signals_dropped,
                "block thread counters"
            );
        }
        for peer in self.registry.peers() {
            if let Some(c) = self.registry.counters(peer) {
                tracing::info!(peer = %peer, signals_sent = c.signals_sent, signals_received = c.signals_received, bytes_sent = c.bytes_sent, failures = c.failures, dropped = c.signals_dropped, "link counters");
            }
        }
        stopped
    }
}

impl Drop for DataNode {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// Logs each link event and hands it to the subscribed blocks, in the registry's order, until
/// `stop` is set.
fn spawn_events(
    registry: &Registry,
    injector: Injector,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, DataNodeError> {
    let events = registry.events().clone();
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(event) = events.recv_timeout(Duration::from_millis(50)) else { continue };
                match &event {
                    LinkEvent::Connected { peer, transport } => {
                        tracing::info!(peer = %peer, %transport, "link up")
                    }
                    LinkEvent::Failed { peer, reason } => {
                        tracing::warn!(peer = %peer, %reason, "node failure: link down")
                    }
                }
                injector.node_event(&event, EVENT_ROOM_WAIT);
            }
        })
        .map_err(|source| DataNodeError::Spawn { what: "events", source })
}
