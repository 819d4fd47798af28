//! Wires the transporter registry into the runtime: the registry's configuration from the
//! cluster file, one [`RemoteSink`] per block thread over the registry's send buffers, the
//! receive loop that routes received signals into job buffers, and the per-link counters the
//! statistics block reports.
//!
//! Who opens a link: an API node always connects to a data node; between two data nodes the lower
//! id connects. Invariants: every signal a sink packs is either written, refused with a typed
//! error at `pack`, or dropped and counted by the registry when its link fails; a received signal
//! is routed or, when no local block can take it, dropped with a logged reason (the link stays up).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signals::{NodeId, Signal, SignalView};
use transporter::{
    PeerConfig, ReceiveSide, Registry, RegistryConfig, SendBuffers, SendError, TransportKind,
};

use crate::config::{Config, ConfigError, NodeKind, Transport};
use crate::inbound::InboundRouter;
use crate::remote::{Flushed, LocalReceive, RemoteError, RemoteFactory, RemoteSink, RouteError};
use crate::runtime::Stopper;
use crate::stats::{LinkCounters, LinkStatsSource};

/// Send-buffer page size: one page must hold the largest signal.
const MIN_PAGE_BYTES: usize = 64 * 1024;

/// The send-buffer page of a node with these signal limits: 64 KiB, or the largest signal
/// rounded up to a power of two.
pub(crate) fn send_page_bytes(limits: &signals::Limits) -> usize {
    MIN_PAGE_BYTES.max((limits.max_signal_words() * 4).next_power_of_two())
}

fn invalid(key: String, value: impl ToString, allowed: &str) -> ConfigError {
    ConfigError::Invalid { key, value: value.to_string(), allowed: allowed.to_string() }
}

/// The address node `id` listens on, from its `host` and `port`.
fn address(config: &Config, id: NodeId) -> Result<SocketAddr, ConfigError> {
    let (index, node) = config
        .nodes
        .iter()
        .enumerate()
        .find(|(_, n)| n.id == id)
        .ok_or_else(|| invalid("nodes".into(), id, "a node with this id"))?;
    (node.host.as_str(), node.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            invalid(
                format!("nodes[{index}].host"),
                &node.host,
                "a resolvable host name or IP address",
            )
        })
}

/// The registry configuration of node `me`: where it listens, its peers and their transports.
pub fn registry_config(config: &Config, me: NodeId) -> Result<RegistryConfig, ConfigError> {
    let my_kind = config
        .node(me)
        .map(|n| n.kind)
        .ok_or_else(|| invalid("--node-id".into(), me, "a node of the file"))?;
    let listen = match my_kind {
        NodeKind::Data => Some(address(config, me)?),
        NodeKind::Api => None,
    };
    let signal_bytes = config.limits.signal.max_signal_words() * 4;
    let mut peers = Vec::new();
    let mut secret: Option<&str> = None;
    for (i, link) in config.links.iter().enumerate() {
        let Some(&other) =
            link.nodes.iter().find(|n| **n != me).filter(|_| link.nodes.contains(&me))
        else {
            continue;
        };
        let transport = match link.transport {
            Transport::Tcp => TransportKind::Tcp,
            Transport::Shm => TransportKind::Shm,
            Transport::Rdma => TransportKind::Rdma,
            Transport::Local => return Err(invalid(
                format!("links[{i}].transport"),
                "local",
                "tcp, shm or rdma between two node processes (local is for blocks in one process)",
            )),
        };
        if let Some(s) = link.secret.as_deref() {
            if secret.is_some_and(|known| known != s) {
                return Err(invalid(
                    format!("links[{i}].secret"),
                    "(hidden)",
                    "the same cluster secret on every link of a node",
                ));
            }
            secret = Some(s);
        }
        let other_kind = config.node(other).map(|n| n.kind);
        let this_connects = match (my_kind, other_kind) {
            (NodeKind::Api, _) => Some(true),
            (_, Some(NodeKind::Api)) => Some(false),
            _ => None,
        };
        let addr = match other_kind {
            Some(NodeKind::Data) => address(config, other)?,
            _ => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        peers.push(PeerConfig {
            node: other,
            addr,
            transport,
            send_buffer_bytes: config.limits.send_buffer_bytes,
            ring_bytes: link.ring_bytes,
            this_connects,
        });
    }
    let mut registry = RegistryConfig::new(u64::from(config.cluster_id), me, listen, peers);
    registry.secret = secret.map(|s| s.as_bytes().to_vec());
    registry.send_thread = config.threads.send > 0;
    registry.rdma_device = config.node(me).and_then(|n| n.rdma_device.clone());
    registry.limits = config.limits.signal;
    registry.page_bytes = send_page_bytes(&config.limits.signal);
    registry.receive_buffer_bytes = registry.receive_buffer_bytes.max(2 * signal_bytes);
    Ok(registry)
}

/// The receive loop's spin time: the longest of this node's links.
pub fn receive_spin_time(config: &Config, me: NodeId) -> Duration {
    let us = config.links_of(me).map(|l| l.spin_time_us).max().unwrap_or(0);
    Duration::from_micros(us)
}

/// Hands out one [`RegistrySink`] per block thread.
#[derive(Debug)]
pub struct RegistryRemote {
    registry: Arc<Registry>,
}

impl RegistryRemote {
    /// Sinks over `registry`.
    pub fn new(registry: Arc<Registry>) -> RegistryRemote {
        RegistryRemote { registry }
    }
}

impl RemoteFactory for RegistryRemote {
    fn sink(&self, _thread: usize) -> Box<dyn RemoteSink> {
        Box::new(RegistrySink { send: self.registry.send_buffers() })
    }
}

/// One block thread's send buffers to every peer.
#[derive(Debug)]
pub struct RegistrySink {
    send: SendBuffers,
}

impl RemoteSink for RegistrySink {
    #[inline]
    fn pack(&mut self, peer: NodeId, signal: &Signal<'_>) -> Result<(), RemoteError> {
        self.send.pack(peer, signal).map_err(|e| match e {
            SendError::UnknownPeer(peer) => RemoteError::UnknownPeer { peer },
            SendError::NotConnected(peer) => RemoteError::Disconnected { peer },
            SendError::Overloaded { peer, queued_bytes, .. } => {
                RemoteError::Overloaded { peer, bytes: queued_bytes }
            }
            SendError::Pack(p) => RemoteError::Pack(p),
        })
    }

    fn flush(&mut self) -> Flushed {
        let report = self.send.flush();
        Flushed {
            peers: report.peers,
            moved: report.bytes > 0 || report.dropped > 0,
            blocked: report.blocked,
        }
    }

    fn has_unsent(&self) -> bool {
        self.send.has_unsent()
    }
}

/// Receives from every link until the node stops: polls while signals arrived within
/// `spin_time`, then sleeps in the registry's epoll set; routes each signal to its block's
/// thread and publishes once per poll. A full job buffer stops reading (back-pressure reaches the
/// peer through the transport) until the block thread makes room.
pub fn receive_loop(
    mut side: ReceiveSide,
    mut router: InboundRouter,
    stopper: Stopper,
    spin_time: Duration,
) {
    let mut last_signal = Instant::now();
    let mut dropped = 0u64;
    let mut idle_polls = 0u32;
    while !stopper.is_stopping() {
        let spinning = last_signal.elapsed() < spin_time;
        let timeout = if spinning { Duration::ZERO } else { Duration::from_millis(20) };
        let signals = side.poll(Some(timeout), &mut |from, view: SignalView<'_>| loop {
            match router.route_from(from, &view) {
                Ok(()) => break,
                Err(RouteError::Full { thread, priority }) if !stopper.is_stopping() => {
                    router.wait_for_room(thread, priority, Duration::from_millis(10));
                }
                Err(e) => {
                    dropped += 1;
                    tracing::warn!(peer = %from, gsn = %view.gsn(), error = %e, dropped, "received signal dropped");
                    break;
                }
            }
        });
        if signals > 0 {
            router.flush();
            last_signal = Instant::now();
        } else if spinning {
            // As the block threads do: every 64 empty polls, let another runnable thread of
            // this CPU run (where threads outnumber CPUs, that is the next hop's).
            idle_polls = idle_polls.wrapping_add(1);
            if idle_polls % 64 == 0 {
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    }
}

impl LocalReceive for ReceiveSide {
    #[inline]
    fn poll(&mut self, woken: bool, deliver: &mut dyn FnMut(NodeId, &SignalView<'_>)) -> usize {
        let mut each = |peer, view: SignalView<'_>| deliver(peer, &view);
        if woken {
            self.poll_woken(&mut each)
        } else {
            ReceiveSide::poll(self, Some(Duration::ZERO), &mut each)
        }
    }

    fn prepare_sleep(&mut self) -> bool {
        ReceiveSide::prepare_sleep(self)
    }

    fn wait_fd(&self) -> std::os::fd::RawFd {
        ReceiveSide::wait_fd(self)
    }
}

/// The registry's per-link counters, for the statistics block.
#[derive(Debug)]
pub struct RegistryStats {
    registry: Arc<Registry>,
}

impl RegistryStats {
    /// Counters of `registry`'s links.
    pub fn new(registry: Arc<Registry>) -> RegistryStats {
        RegistryStats { registry }
    }
}

impl LinkStatsSource for RegistryStats {
    fn for_each_link(&self, each: &mut dyn FnMut(LinkCounters)) {
        for peer in self.registry.peers() {
            if let Some(c) = self.registry.counters(peer) {
                each(LinkCounters {
                    peer: Some(peer),
                    signals: c.signals_sent,
                    bytes: c.bytes_sent,
                    batches: c.batches_sent,
                    wakeups_sent: c.wakeups_sent,
                    send_buffer_high_water_bytes: c.send_buffer_high_water_bytes,
                    receiver_sleeps: c.sleeps,
                    cq_events: c.cq_events,
                });
            }
        }
    }
}
