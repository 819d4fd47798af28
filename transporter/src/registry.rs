//! The registry: one link per peer node, each with a state machine, its send-buffer pool and
//! counters, a manager thread that connects, accepts and handshakes, and the failure path.
//!
//! Rule for who connects: the node with the lower id connects, the higher accepts (unless the
//! configuration says otherwise for a peer, as for API nodes, which always connect), so two nodes
//! never open two links to each other (a hello in the wrong direction is refused).
//!
//! ```text
//!  Disconnected --(backoff elapsed, lower id: connect / higher id: hello claimed)--> Connecting
//!  Connecting   --(handshake done, transporter built)--------------------------> Connected
//!  Connecting   --(connect or handshake failed)-----------------------------------> Disconnected
//!  Connected    --(peer closed, I/O error, malformed batch, close_link)----------> Disconnecting
//!  Disconnecting--(sender dropped, unsent counted, event sent)--------------------> Disconnected
//! ```
//! Each connection gets a new generation number; a failure report carrying an old generation is
//! ignored, so a late report never kills a newer connection, and pages packed for an old
//! generation are dropped (and counted) instead of reaching a restarted peer.
//! Reconnects back off exponentially from `backoff_min` to `backoff_max`.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use signals::{Limits, NodeId};
use tracing::{debug, info, warn};

use crate::counters::{CounterSnapshot, LinkCounters};
use crate::handshake::{self, AcceptParams, HandshakeError, Hello, Refusal};
use crate::pages::PagePool;
use crate::poller::EventFd;
use crate::{shm, tcp, AnyReceiver, AnySender, TransportKind};

use crate::receive::ReceiveSide;
use crate::send_buffers::SendBuffers;

/// One configured peer.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The peer's node id.
    pub node: NodeId,
    /// Where the peer listens (used when this node connects).
    pub addr: SocketAddr,
    /// The link's transport.
    pub transport: TransportKind,
    /// Send-buffer memory for this link, in bytes.
    pub send_buffer_bytes: usize,
    /// Bytes of each ring (shared memory; RDMA receive ring), a power of two.
    pub ring_bytes: usize,
    /// Who opens the link: `Some(true)` this node, `Some(false)` the peer, `None` the lower
    /// node id (the default; the configuration layer lets API nodes always connect).
    pub this_connects: Option<bool>,
}

impl PeerConfig {
    /// A peer with default sizes: 8 MiB of send buffers, 1 MiB rings.
    pub fn new(node: NodeId, addr: SocketAddr, transport: TransportKind) -> PeerConfig {
        PeerConfig {
            node,
            addr,
            transport,
            send_buffer_bytes: 8 << 20,
            ring_bytes: 1 << 20,
            this_connects: None,
        }
    }
}

/// Everything the registry needs.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// The cluster's id; links to other clusters are refused.
    pub cluster_id: u64,
    /// This node.
    pub node: NodeId,
    /// Where to accept links from lower node ids (`None`: accept none).
    pub listen: Option<SocketAddr>,
    /// The peers.
    pub peers: Vec<PeerConfig>,
    /// The cluster secret, if any.
    pub secret: Option<Vec<u8>>,
    /// The RDMA device RDMA links use (`None`: the first one).
    pub rdma_device: Option<String>,
    /// Whether a send thread writes to the transports ([`Registry::take_send_thread`]); without
    /// one, each sending thread writes its own send buffers at `flush`.
    pub send_thread: bool,
    /// Signal size limits, for packing and walking.
    pub limits: Limits,
    /// Send-buffer page size in bytes.
    pub page_bytes: usize,
    /// Receive buffer per link in bytes (at least one largest signal).
    pub receive_buffer_bytes: usize,
    /// Longest a handshake may take.
    pub handshake_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl RegistryConfig {
    /// A configuration with defaults for everything but identity and peers.
    pub fn new(
        cluster_id: u64,
        node: NodeId,
        listen: Option<SocketAddr>,
        peers: Vec<PeerConfig>,
    ) -> RegistryConfig {
        RegistryConfig {
            cluster_id,
            node,
            listen,
            peers,
            secret: None,
            rdma_device: None,
            send_thread: false,
            limits: Limits::default(),
            page_bytes: 64 * 1024,
            receive_buffer_bytes: 256 * 1024,
            handshake_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Why the registry did not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    /// A configuration value is out of range.
    #[error("{key} = {value}: {allowed}")]
    Config { key: String, value: String, allowed: String },
    /// A system call failed at start.
    #[error("{op} failed: {source}")]
    Io { op: &'static str, source: io::Error },
    /// A link is configured as RDMA, but there is no usable RDMA device (or this build has no
    /// RDMA support).
    #[error("link to node {peer} is configured as rdma, but {why}")]
    NoRdma { peer: NodeId, why: String },
}

/// What happened to a link, for the upper layer (membership).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link to `peer` is up.
    Connected { peer: NodeId, transport: TransportKind },
    /// The link to `peer` failed; it will reconnect with back-off.
    Failed { peer: NodeId, reason: String },
}

/// A link's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection; a reconnect is scheduled.
    Disconnected = 0,
    /// Connecting or handshaking.
    Connecting = 1,
    /// Signals flow.
    Connected = 2,
    /// Failing: the connection is being torn down.
    Disconnecting = 3,
}

impl LinkState {
    fn from_u8(v: u8) -> LinkState {
        match v {
            0 => LinkState::Disconnected,
            1 => LinkState::Connecting,
            2 => LinkState::Connected,
            _ => LinkState::Disconnecting,
        }
    }
}

/// A connected link's sending half, with the generation it belongs to.
pub(crate) struct LiveSender {
    pub(crate) generation: u64,
    pub(crate) sender: AnySender,
}

struct Retry {
    next_attempt: Instant,
    backoff: Duration,
    /// Why the last attempt to bring the link up failed (cleared when it comes up).
    last_error: Option<String>,
}

/// One peer's link.
pub(crate) struct Link {
    pub(crate) config: PeerConfig,
    state: AtomicU8,
    pub(crate) generation: AtomicU64,
    pub(crate) sender: Mutex<Option<LiveSender>>,
    shutdown: Mutex<Option<TcpStream>>,
    retry: Mutex<Retry>,
    /// Held while a state change and its event go out together, so events keep their order.
    event_order: Mutex<()>,
    pub(crate) pool: Arc<PagePool>,
    pub(crate) counters: Arc<LinkCounters>,
}

impl Link {
    pub(crate) fn state(&self) -> LinkState {
        LinkState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn transition(&self, from: LinkState, to: LinkState) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn set_state(&self, to: LinkState) {
        self.state.store(to as u8, Ordering::Release);
    }
}

/// A new connection's receiving half, on its way to the receive side.
pub(crate) struct NewReceiver {
    pub(crate) peer: NodeId,
    pub(crate) generation: u64,
    pub(crate) receiver: AnyReceiver,
}

/// State shared by the registry, its manager thread, the receive side and send buffers.
pub(crate) struct Inner {
    pub(crate) config: RegistryConfig,
    links: Vec<Option<Link>>,
    events: Sender<LinkEvent>,
    pub(crate) new_receivers: Receiver<NewReceiver>,
    new_receivers_tx: Sender<NewReceiver>,
    pub(crate) receive_wake: EventFd,
    stop: AtomicBool,
    handshakes_in_flight: AtomicUsize,
    /// Pages on their way to the send thread, when there is one.
    pub(crate) handoff: Option<Arc<crate::send_thread::Handoff>>,
    /// The device RDMA links use, opened at start when any link is RDMA.
    #[cfg(feature = "rdma")]
    rdma: Option<Arc<verbs::Device>>,
}

/// Most handshakes under way at once; more connections are closed unread.
const MAX_HANDSHAKES: usize = 16;

impl Inner {
    /// Whether this node opens the link to `link`'s peer.
    fn connects(&self, link: &Link) -> bool {
        link.config.this_connects.unwrap_or(self.config.node < link.config.node)
    }

    pub(crate) fn link(&self, peer: NodeId) -> Option<&Link> {
        self.links.get(peer.get() as usize).and_then(Option::as_ref)
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        // A panic while holding one of these locks leaves plain data behind; carry on with it.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_sender<'l>(&self, link: &'l Link) -> MutexGuard<'l, Option<LiveSender>> {
        Inner::lock(&link.sender)
    }

    /// Closes the connection of `generation` to `peer` and reports it; stale reports are ignored.
    pub(crate) fn fail(&self, peer: NodeId, generation: u64, reason: &str) {
        let Some(link) = self.link(peer) else { return };
        if link.generation.load(Ordering::Acquire) != generation
            || !link.transition(LinkState::Connected, LinkState::Disconnecting)
        {
            return;
        }
        if let Some(stream) = Inner::lock(&link.shutdown).take() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let dropped = match Inner::lock(&link.sender).take() {
            Some(mut live) => crate::LinkSender::discard_pending(&mut live.sender),
            None => 0,
        };
        LinkCounters::add(&link.counters.signals_dropped, dropped as u64);
        LinkCounters::add(&link.counters.failures, 1);
        {
            let mut retry = Inner::lock(&link.retry);
            retry.next_attempt = Instant::now() + retry.backoff;
            retry.backoff = (retry.backoff * 2).min(self.config.backoff_max);
        }
        warn!(peer = %peer, %reason, "link failed");
        let _order = Inner::lock(&link.event_order);
        link.set_state(LinkState::Disconnected);
        let _ = self.events.send(LinkEvent::Failed { peer, reason: reason.to_string() });
    }

    /// Builds the transporter halves over a handshaken stream; `connecting` says which side of
    /// the link this node is (the connecting side creates shared state).
    fn build(
        &self,
        link: &Link,
        stream: TcpStream,
        connecting: bool,
    ) -> io::Result<(TcpStream, AnySender, AnyReceiver)> {
        let peer = link.config.node;
        let timeout = self.config.handshake_timeout;
        match link.config.transport {
            TransportKind::Tcp => stream.try_clone().and_then(|handle| {
                let (s, r) = tcp::split(
                    stream,
                    link.pool.clone(),
                    link.counters.clone(),
                    self.config.limits,
                    self.config.receive_buffer_bytes,
                )?;
                Ok((handle, AnySender::Tcp(s), AnyReceiver::Tcp(r)))
            }),
            TransportKind::Shm => {
                let mut stream = stream;
                let me = self.config.node;
                let ring = link.config.ring_bytes;
                let shared = if connecting {
                    shm::setup::create(&mut stream, self.config.cluster_id, me, peer, ring, timeout)
                } else {
                    shm::setup::open(&mut stream, me, peer, ring, timeout)
                }
                .map_err(|e| io::Error::other(e.to_string()))?;
                let handle = stream.try_clone()?;
                let (s, r) = shm::split(
                    shared,
                    stream,
                    link.pool.clone(),
                    link.counters.clone(),
                    self.config.limits,
                )?;
                Ok((handle, AnySender::Shm(s), AnyReceiver::Shm(r)))
            }
            #[cfg(feature = "rdma")]
            TransportKind::Rdma => {
                let mut stream = stream;
                let device = self.rdma.clone().ok_or_else(|| io::Error::other("no RDMA device"))?;
                let params = crate::rdma::RdmaParams::new(
                    device,
                    link.config.ring_bytes,
                    self.config.limits,
                );
                let rdma = crate::rdma::setup::establish(&mut stream, &params)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let handle = stream.try_clone()?;
                let (s, r) = crate::rdma::split(
                    rdma,
                    stream,
                    link.pool.clone(),
                    link.counters.clone(),
                    self.config.limits,
                )?;
                Ok((handle, AnySender::Rdma(s), AnyReceiver::Rdma(r)))
            }
            #[cfg(not(feature = "rdma"))]
            TransportKind::Rdma => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this build has no RDMA support (the `rdma` feature is off)",
            )),
        }
    }

    /// Makes a handshaken stream a live link (`link` is in Connecting and ours).
    fn install(&self, link: &Link, stream: TcpStream, connecting: bool) {
        let peer = link.config.node;
        let (handle, sender, receiver) = match self.build(link, stream, connecting) {
            Ok(parts) => parts,
            Err(e) => {
                warn!(peer = %peer, error = %e, "link set-up failed");
                self.retry_later(link, format!("link set-up failed: {e}"));
                return;
            }
        };
        if self.stop.load(Ordering::Acquire) {
            // The registry shut down while this link was being set up: drop it (closing the
            // socket tells the peer) rather than leave it live with nobody serving it.
            let _ = handle.shutdown(std::net::Shutdown::Both);
            link.set_state(LinkState::Disconnected);
            return;
        }
        let generation = link.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *Inner::lock(&link.shutdown) = Some(handle);
        *Inner::lock(&link.sender) = Some(LiveSender { generation, sender });
        {
            let mut retry = Inner::lock(&link.retry);
            retry.backoff = self.config.backoff_min;
            retry.last_error = None;
        }
        LinkCounters::add(&link.counters.connects, 1);
        info!(peer = %peer, transport = %link.config.transport, "link up");
        {
            // State first (whoever sees the event may send at once), event under the link's
            // event lock: a `fail` that slips in between waits for it, so Failed never precedes
            // the Connected of the same connection.
            let _order = Inner::lock(&link.event_order);
            link.set_state(LinkState::Connected);
            let _ =
                self.events.send(LinkEvent::Connected { peer, transport: link.config.transport });
        }
        let _ = self.new_receivers_tx.send(NewReceiver { peer, generation, receiver });
        self.receive_wake.notify();
    }

    fn retry_later(&self, link: &Link, why: String) {
        let mut retry = Inner::lock(&link.retry);
        retry.last_error = Some(why);
        retry.next_attempt = Instant::now() + retry.backoff;
        retry.backoff = (retry.backoff * 2).min(self.config.backoff_max);
        drop(retry);
        link.set_state(LinkState::Disconnected);
    }

    /// Connects to a higher-numbered peer and handshakes (runs on its own thread).
    fn connect(&self, link: &Link) {
        let peer = link.config.node;
        let timeout = self.config.handshake_timeout;
        let attempt =
            TcpStream::connect_timeout(&link.config.addr, timeout).and_then(|mut stream| {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                let hello = Hello::new(
                    self.config.cluster_id,
                    self.config.node,
                    peer,
                    link.config.transport,
                    self.config.secret.is_some(),
                );
                handshake::connect(&mut stream, &hello, self.config.secret.as_deref())
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Ok(stream)
            });
        match attempt {
            Ok(stream) => self.install(link, stream, true),
            Err(e) => {
                debug!(peer = %peer, addr = %link.config.addr, error = %e, "connect failed; will retry");
                self.retry_later(link, format!("connecting to {}: {e}", link.config.addr));
            }
        }
    }

    /// Handshakes an incoming connection (runs on its own thread).
    fn accept(&self, mut stream: TcpStream, from: SocketAddr) {
        let timeout = self.config.handshake_timeout;
        if stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .is_err()
        {
            return;
        }
        let params = AcceptParams {
            cluster_id: self.config.cluster_id,
            me: self.config.node,
            secret: self.config.secret.as_deref(),
        };
        let check = |hello: &Hello| {
            let link = NodeId::new(hello.from as u32)
                .and_then(|n| self.link(n))
                .ok_or(Refusal::UnknownNode)?;
            if TransportKind::from_code(hello.transport) != Some(link.config.transport) {
                return Err(Refusal::WrongTransport);
            }
            if self.connects(link) {
                return Err(Refusal::WrongDirection);
            }
            Ok(())
        };
        let claimed: std::cell::Cell<Option<NodeId>> = std::cell::Cell::new(None);
        let claim = |hello: &Hello| {
            let node = NodeId::new(hello.from as u32).ok_or(Refusal::UnknownNode)?;
            let link = self.link(node).ok_or(Refusal::UnknownNode)?;
            if self.stop.load(Ordering::Acquire) {
                return Err(Refusal::Busy);
            }
            if link.transition(LinkState::Disconnected, LinkState::Connecting) {
                claimed.set(Some(node));
                Ok(())
            } else {
                Err(Refusal::AlreadyConnected)
            }
        };
        let result = handshake::accept(&mut stream, &params, check, claim);
        match (result, claimed.get().and_then(|n| self.link(n))) {
            (Ok(_), Some(link)) => self.install(link, stream, false),
            (Ok(_), None) => unreachable!("an accepted handshake claimed its link"),
            (Err(e), claimed) => {
                // A handshake that failed after claiming its link (the last write failed) must
                // give the link back, or every later hello would be refused as a duplicate.
                if let Some(link) = claimed {
                    self.retry_later(link, format!("accepting from {from}: {e}"));
                }
                match e {
                    HandshakeError::RefusedPeer { .. } => {
                        warn!(%from, error = %e, "handshake refused")
                    }
                    _ => warn!(%from, error = %e, "handshake failed"),
                }
            }
        }
    }
}

/// The registry of one node's links.
pub struct Registry {
    inner: Arc<Inner>,
    events: Receiver<LinkEvent>,
    local_addr: Option<SocketAddr>,
    manager: Option<JoinHandle<()>>,
    receive_side: Option<ReceiveSide>,
    send_thread_taken: bool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("node", &self.inner.config.node)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

fn config_error(key: &str, value: impl ToString, allowed: &str) -> RegistryError {
    RegistryError::Config {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
    let signal_bytes = config.limits.max_signal_words() * 4;
    if config.page_bytes < signal_bytes
        || config.page_bytes % 4 != 0
        || config.page_bytes > 64 << 20
    {
        return Err(config_error(
            "page_bytes",
            config.page_bytes,
            &format!("a multiple of 4 from the largest signal ({signal_bytes} bytes) to 64 MiB"),
        ));
    }
    if config.receive_buffer_bytes < signal_bytes || config.receive_buffer_bytes > 256 << 20 {
        return Err(config_error(
            "receive_buffer_bytes",
            config.receive_buffer_bytes,
            &format!("from the largest signal ({signal_bytes} bytes) to 256 MiB"),
        ));
    }
    let mut seen = HashSet::new();
    for p in &config.peers {
        let key = format!("peers[{}]", p.node);
        if p.node == config.node {
            return Err(config_error(&format!("{key}.node"), p.node, "a node other than this one"));
        }
        if !seen.insert(p.node) {
            return Err(config_error(&format!("{key}.node"), p.node, "each peer once"));
        }
        if p.transport == TransportKind::Shm {
            shm::layout::check_ring_bytes(p.ring_bytes, signal_bytes).map_err(|allowed| {
                config_error(&format!("{key}.ring_bytes"), p.ring_bytes, &allowed)
            })?;
        }
        #[cfg(feature = "rdma")]
        if p.transport == TransportKind::Rdma {
            let min = crate::rdma::setup::min_ring_bytes(&config.limits);
            let max = crate::rdma::setup::MAX_RING_BYTES;
            if !p.ring_bytes.is_power_of_two() || p.ring_bytes < min || p.ring_bytes > max {
                return Err(config_error(
                    &format!("{key}.ring_bytes"),
                    p.ring_bytes,
                    &format!("a power of two from {min} (four largest signals) to {max}"),
                ));
            }
        }
        if p.send_buffer_bytes < 2 * config.page_bytes {
            return Err(config_error(
                &format!("{key}.send_buffer_bytes"),
                p.send_buffer_bytes,
                &format!("at least two pages ({} bytes)", 2 * config.page_bytes),
            ));
        }
    }
    if config.backoff_min.is_zero() || config.backoff_max < config.backoff_min {
        return Err(config_error(
            "backoff_min",
            format!("{:?}", config.backoff_min),
            "non-zero and at most backoff_max",
        ));
    }
    Ok(())
}

/// Opens the RDMA device when any link is RDMA.
#[cfg(feature = "rdma")]
fn open_rdma(config: &RegistryConfig) -> Result<Option<Arc<verbs::Device>>, RegistryError> {
    let Some(p) = config.peers.iter().find(|p| p.transport == TransportKind::Rdma) else {
        return Ok(None);
    };
    match verbs::Device::open(config.rdma_device.as_deref()) {
        Ok(device) => {
            info!(device = device.name(), "RDMA device open");
            Ok(Some(device))
        }
        Err(e) => Err(RegistryError::NoRdma { peer: p.node, why: e.to_string() }),
    }
}

impl Registry {
    /// Validates `config`, listens, and starts connecting to peers.
    pub fn start(config: RegistryConfig) -> Result<Registry, RegistryError> {
        validate(&config)?;
        #[cfg(feature = "rdma")]
        let rdma = open_rdma(&config)?;
        #[cfg(not(feature = "rdma"))]
        if let Some(p) = config.peers.iter().find(|p| p.transport == TransportKind::Rdma) {
            return Err(RegistryError::NoRdma {
                peer: p.node,
                why: "this build has no RDMA support (built without the `rdma` feature)".into(),
            });
        }
        let listener = match config.listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .map_err(|source| RegistryError::Listen { addr, source })?;
                l.set_nonblocking(true)
                    .map_err(|source| RegistryError::Io { op: "set_nonblocking", source })?;
                Some(l)
            }
            None => None,
        };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let mut links: Vec<Option<Link>> = (0..=255).map(|_| None).collect();
        for p in &config.peers {
            let pages = p.send_buffer_bytes / config.page_bytes;
            links[p.node.get() as usize] = Some(Link {
                config: p.clone(),
                state: AtomicU8::new(LinkState::Disconnected as u8),
                generation: AtomicU64::new(0),
                sender: Mutex::new(None),
                shutdown: Mutex::new(None),
                retry: Mutex::new(Retry {
                    next_attempt: Instant::now(),
                    backoff: config.backoff_min,
                    last_error: None,
                }),
                event_order: Mutex::new(()),
                pool: Arc::new(PagePool::new(pages, config.page_bytes / 4)),
                counters: Arc::new(LinkCounters::default()),
            });
        }
        let handoff = if config.send_thread {
            let h = crate::send_thread::Handoff::new(config.peers.iter().map(|p| p.node))
                .map_err(|source| RegistryError::Io { op: "eventfd", source })?;
            Some(Arc::new(h))
        } else {
            None
        };
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (new_receivers_tx, new_receivers) = crossbeam_channel::unbounded();
        let receive_wake =
            EventFd::new().map_err(|source| RegistryError::Io { op: "eventfd", source })?;
        let inner = Arc::new(Inner {
            config,
            links,
            events: events_tx,
            new_receivers,
            new_receivers_tx,
            receive_wake,
            stop: AtomicBool::new(false),
            handshakes_in_flight: AtomicUsize::new(0),
            handoff,
            #[cfg(feature = "rdma")]
            rdma,
        });
        let receive_side = ReceiveSide::new(inner.clone())
            .map_err(|source| RegistryError::Io { op: "epoll", source })?;
        let manager_inner = inner.clone();
        let manager = std::thread::Builder::new()
            .name(format!("links-{}", inner.config.node))
            .spawn(move || manage(manager_inner, listener))
            .map_err(|source| RegistryError::Io { op: "spawn link manager", source })?;
        Ok(Registry {
            inner,
            events,
            local_addr,
            manager: Some(manager),
            receive_side: Some(receive_side),
            send_thread_taken: false,
        })
    }

    /// Where this node accepts links (with the real port when configured as 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.inner.config.node
    }

    /// Link events: connected and failed links, in order.
    pub fn events(&self) -> &Receiver<LinkEvent> {
        &self.events
    }

    /// The receive side, to be driven by one receive thread (once; later calls get `None`).
    pub fn take_receive_side(&mut self) -> Option<ReceiveSide> {
        self.receive_side.take()
    }

    /// The send thread's state, once (when configured with `send_thread`): run it on a thread
    /// of its own with [`SendThread::run`](crate::send_thread::SendThread::run).
    pub fn take_send_thread(&mut self) -> Option<crate::send_thread::SendThread> {
        if self.inner.handoff.is_none() || self.send_thread_taken {
            return None;
        }
        self.send_thread_taken = true;
        Some(crate::send_thread::SendThread::new(self.inner.clone()))
    }

    /// Send buffers for one sending thread.
    pub fn send_buffers(&self) -> SendBuffers {
        SendBuffers::new(self.inner.clone())
    }

    /// The state of the link to `peer` (`None` when not configured).
    pub fn state(&self, peer: NodeId) -> Option<LinkState> {
        self.inner.link(peer).map(Link::state)
    }

    /// Why the last attempt to bring the link to `peer` up failed, while it has not come up
    /// since: a refused connection, a handshake the peer refused (and why), a failed set-up.
    pub fn last_error(&self, peer: NodeId) -> Option<String> {
        self.inner.link(peer).and_then(|l| Inner::lock(&l.retry).last_error.clone())
    }

    /// The counters of the link to `peer`.
    pub fn counters(&self, peer: NodeId) -> Option<CounterSnapshot> {
        self.inner.link(peer).map(|l| l.counters.snapshot())
    }

    /// The configured peers.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.inner.config.peers.iter().map(|p| p.node)
    }

    /// Closes the link to `peer` on the upper layer's word (for example heartbeat silence).
    pub fn close_link(&self, peer: NodeId, reason: &str) {
        if let Some(link) = self.inner.link(peer) {
            self.inner.fail(
                peer,
                link.generation.load(Ordering::Acquire),
                &format!("closed by the upper layer: {reason}"),
            );
        }
    }

    /// Stops the manager thread and closes every link.
    pub fn shutdown(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(m) = self.manager.take() {
            let _ = m.join();
        }
        for link in self.inner.links.iter().flatten() {
            if let Some(stream) = Inner::lock(&link.shutdown).take() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            Inner::lock(&link.sender).take();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The manager thread: accepts incoming links and starts outgoing ones when due.
fn manage(inner: Arc<Inner>, listener: Option<TcpListener>) {
    while !inner.stop.load(Ordering::Acquire) {
        if let Some(l) = &listener {
            wait_readable(l.as_raw_fd(), Duration::from_millis(10));
            loop {
                match l.accept() {
                    Ok((stream, from)) => spawn_handshake(&inner, stream, from),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        break;
                    }
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
        let now = Instant::now();
        for link in inner.links.iter().flatten() {
            if !inner.connects(link) || link.state() != LinkState::Disconnected {
                continue;
            }
            if Inner::lock(&link.retry).next_attempt > now
                || !link.transition(LinkState::Disconnected, LinkState::Connecting)
            {
                continue;
            }
            let worker = inner.clone();
            let peer = link.config.node;
            let spawned =
                std::thread::Builder::new().name(format!("connect-{peer}")).spawn(move || {
                    if let Some(link) = worker.link(peer) {
                        worker.connect(link);
                    }
                });
            if let Err(e) = spawned {
                inner.retry_later(link, format!("cannot start a connect thread: {e}"));
            }
        }
    }
}

fn spawn_handshake(inner: &Arc<Inner>, stream: TcpStream, from: SocketAddr) {
    if inner.handshakes_in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_HANDSHAKES {
        inner.handshakes_in_flight.fetch_sub(1, Ordering::AcqRel);
        warn!(%from, "too many handshakes under way; connection closed");
        return;
    }
    let worker = inner.clone();
    let spawned = std::thread::Builder::new().name("handshake".into()).spawn(move || {
        worker.accept(stream, from);
        worker.handshakes_in_flight.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        inner.handshakes_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits until `fd` is readable or `timeout` passes.
fn wait_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe {
        libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int);
    }
}
