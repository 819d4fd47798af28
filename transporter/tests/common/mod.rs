//! Helpers the transporter test files share: node ids and configs, link-event waits, a stream
//! checker over the numbered test stream, raw peers (the test playing a node by hand), and the
//! rule for skipping RDMA cases where there is no device.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use signals::{BlockInstance, BlockNumber, BlockRef, NodeId};
use transporter::handshake::{self, Hello};
use transporter::shm::{self, ShmLink};
use transporter::stream::{self, StreamStorage};
use transporter::{
    LinkEvent, PeerConfig, Registry, RegistryConfig, SendBuffers, SendError, TransportKind,
};

pub fn node(n: u32) -> NodeId {
    NodeId::new(n).expect("test node id")
}

pub fn block(n: u32) -> BlockRef {
    BlockRef::new(node(n), BlockNumber(100), BlockInstance(0))
}

pub fn peer(n: u32, addr: SocketAddr, kind: TransportKind) -> PeerConfig {
    PeerConfig {
        send_buffer_bytes: 1 << 20,
        ring_bytes: 256 << 10,
        ..PeerConfig::new(node(n), addr, kind)
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("loopback address")
}

pub fn unused() -> SocketAddr {
    "127.0.0.1:1".parse().expect("address")
}

pub fn config(me: u32, listen: bool, peers: Vec<PeerConfig>) -> RegistryConfig {
    let mut c = RegistryConfig::new(7, node(me), listen.then(loopback), peers);
    c.page_bytes = 64 * 1024;
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

/// Waits for the next event matching `want`, up to `timeout`; returns it and how long it took.
pub fn wait_event(
    events: &Receiver<LinkEvent>,
    timeout: Duration,
    want: impl Fn(&LinkEvent) -> bool,
) -> (LinkEvent, Duration) {
    let start = Instant::now();
    loop {
        let left = timeout
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("no matching link event within {timeout:?}"));
        match events.recv_timeout(left) {
            Ok(e) if want(&e) => return (e, start.elapsed()),
            Ok(_) => continue,
            Err(_) => panic!("no matching link event within {timeout:?}"),
        }
    }
}

pub fn connected(p: u32) -> impl Fn(&LinkEvent) -> bool {
    move |e| matches!(e, LinkEvent::Connected { peer, .. } if peer.get() as u32 == p)
}

pub fn failed(p: u32) -> impl Fn(&LinkEvent) -> bool {
    move |e| matches!(e, LinkEvent::Failed { peer, .. } if peer.get() as u32 == p)
}

/// Fails if a shared-memory segment file of this suite's cluster stays in /dev/shm (files exist
/// for a moment during set-up, so it waits a little for those to go).
pub fn assert_no_leftover_segments() {
    let leftovers = || -> Vec<String> {
        std::fs::read_dir("/dev/shm")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("blockwire-7-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let start = Instant::now();
    while !leftovers().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "segment files left in /dev/shm: {:?}",
            leftovers()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `registry`'s counters for the link to `peer`, once `done` holds of them (at most 10 s): a
/// thread counts what it wrote or delivered just after, so a test that saw the signals arrive
/// can read a counter a moment before it is up to date.
pub fn counters_when(
    registry: &Registry,
    peer: u32,
    done: impl Fn(&transporter::CounterSnapshot) -> bool,
) -> transporter::CounterSnapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = registry.counters(node(peer)).expect("a configured link");
        if done(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A receive thread that checks a numbered stream (restarting at 0 after a reconnect) and counts.
pub struct StreamChecker {
    pub received: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StreamChecker {
    pub fn start(registry: &mut Registry) -> StreamChecker {
        let mut side = registry.take_receive_side().expect("receive side");
        let received = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, e, s) = (received.clone(), error.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut expected = 0u64;
            side.run(
                Duration::from_micros(50),
                Duration::from_millis(20),
                &|| s.load(Ordering::Relaxed),
                &mut |_, sig| {
                    if sig.data().first() == Some(&0) {
                        expected = 0;
                    }
                    if let Err(why) = stream::check(&sig, expected) {
                        e.lock().unwrap().get_or_insert(why);
                    }
                    expected += 1;
                    r.fetch_add(1, Ordering::Relaxed);
                },
            );
        });
        StreamChecker { received, error, stop, thread: Some(thread) }
    }

    pub fn wait_for(&self, count: u64, timeout: Duration) {
        let start = Instant::now();
        while self.received.load(Ordering::Relaxed) < count {
            assert!(
                start.elapsed() < timeout,
                "only {} of {count} signals arrived",
                self.received.load(Ordering::Relaxed)
            );
            assert_eq!(*self.error.lock().unwrap(), None);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(*self.error.lock().unwrap(), None);
    }
}

impl Drop for StreamChecker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends stream signals `from..to` to `peer`, flushing as it goes and waiting out overload.
pub fn send_stream(registry: &Registry, from_node: u32, peer: u32, range: std::ops::Range<u64>) {
    send_stream_with(registry, &mut registry.send_buffers(), from_node, peer, range)
}

pub fn send_stream_with(
    registry: &Registry,
    send: &mut SendBuffers,
    from_node: u32,
    peer: u32,
    range: std::ops::Range<u64>,
) {
    send_stream_mixed(registry, send, from_node, peer, range, |_| false)
}

/// As [`send_stream_with`], with the signals for which `now` says so sent by
/// [`SendBuffers::send_now`] instead of packed.
pub fn send_stream_mixed(
    registry: &Registry,
    send: &mut SendBuffers,
    from_node: u32,
    peer: u32,
    range: std::ops::Range<u64>,
    now: impl Fn(u64) -> bool,
) {
    let mut storage = StreamStorage::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seq = range.start;
    while seq < range.end {
        let sent = storage.with_signal(seq, block(from_node), block(peer), |s| {
            if now(seq) {
                send.send_now(node(peer), s).map(drop)
            } else {
                send.pack(node(peer), s)
            }
        });
        match sent {
            Ok(()) => seq += 1,
            Err(SendError::Overloaded { .. }) => {
                send.flush();
            }
            Err(e) => panic!(
                "signal {seq} failed: {e}; events: {:?}",
                registry.events().try_iter().collect::<Vec<_>>()
            ),
        }
        if seq % 256 == 0 {
            send.flush();
        }
        assert!(Instant::now() < deadline, "sending stalled at {seq}");
    }
    while send.has_unsent() {
        send.flush();
        assert!(Instant::now() < deadline, "flush stalled");
    }
}

/// Two in-process nodes, 1 (connects) and 2 (accepts), with a stream checker on node 2.
pub fn pair(
    kind: TransportKind,
    tweak: impl Fn(&mut RegistryConfig),
) -> (Registry, Registry, StreamChecker) {
    let mut c2 = config(2, true, vec![peer(1, unused(), kind)]);
    tweak(&mut c2);
    let mut two = Registry::start(c2).expect("node 2 starts");
    let checker = StreamChecker::start(&mut two);
    let addr = two.local_addr().expect("listening");
    let mut c1 = config(1, false, vec![peer(2, addr, kind)]);
    tweak(&mut c1);
    let mut one = Registry::start(c1).expect("node 1 starts");
    // Node 1's own receive side must run too, so a failure of the link is seen from both ends.
    let mut side = one.take_receive_side().expect("receive side");
    std::thread::spawn(move || {
        side.run(Duration::ZERO, Duration::from_millis(20), &|| false, &mut |_, _| {})
    });
    wait_event(one.events(), Duration::from_secs(5), connected(2));
    wait_event(two.events(), Duration::from_secs(5), connected(1));
    (one, two, checker)
}

/// The transport state of a raw peer (the test playing a node by hand).
pub enum Raw {
    /// TCP: the stream is the link.
    Tcp,
    /// Shared memory: the segment the raw peer created.
    Shm(ShmLink),
    /// RDMA: the raw peer's queue pair and memory.
    #[cfg(feature = "rdma")]
    Rdma(transporter::rdma::RdmaLink),
}

impl Raw {
    pub fn shm(&self) -> Option<&ShmLink> {
        match self {
            Raw::Shm(link) => Some(link),
            _ => None,
        }
    }
}

/// Connects to `addr` as `hello.from` by hand: the handshake, then the transport's set-up, so
/// a test can then misbehave as that peer.
pub fn raw_connect(
    addr: SocketAddr,
    kind: TransportKind,
    hello: &Hello,
    secret: Option<&[u8]>,
) -> (TcpStream, Raw) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    handshake::connect(&mut s, hello, secret).unwrap();
    let me = NodeId::new(hello.from as u32).unwrap();
    let peer = NodeId::new(hello.to as u32).unwrap();
    let raw = match kind {
        TransportKind::Tcp => Raw::Tcp,
        TransportKind::Shm => Raw::Shm(
            shm::setup::create(
                &mut s,
                hello.cluster_id,
                me,
                peer,
                256 << 10,
                Duration::from_secs(5),
            )
            .unwrap(),
        ),
        #[cfg(feature = "rdma")]
        TransportKind::Rdma => {
            use transporter::rdma;
            let device = verbs::Device::open(None).unwrap();
            let params = rdma::RdmaParams::new(device, 256 << 10, signals::Limits::default());
            Raw::Rdma(rdma::setup::establish(&mut s, &params).unwrap())
        }
        #[cfg(not(feature = "rdma"))]
        TransportKind::Rdma => unreachable!("RDMA cases are skipped in this build"),
    };
    (s, raw)
}

/// Writes one frame at ring offset `at` of the peer's ring with a plain RDMA WRITE, as the RDMA
/// sender does: head (`seq`, `head` word), `body`, tail (checksum, `seq`). With `bad_sum` the
/// checksum is off by one (a frame read while still being placed looks like this). Like the
/// sender, it first stores where its posts end (the frame's end, within the first lap) in its
/// posted word, which the receiver reads before it sleeps.
#[cfg(feature = "rdma")]
pub fn rdma_frame(
    link: &transporter::rdma::RdmaLink,
    at: usize,
    seq: u32,
    head: u32,
    body: &[u8],
    bad_sum: bool,
) {
    assert!(body.len() % 4 == 0 && at + body.len() + 16 <= link.staging.len());
    let words: Vec<u32> =
        body.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let sum = transporter::rdma::frame_checksum(head, seq, &words) ^ u32::from(bad_sum);
    let mut frame = Vec::with_capacity(body.len() + 16);
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&head.to_le_bytes());
    frame.extend_from_slice(body);
    frame.extend_from_slice(&sum.to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    // SAFETY: the test owns this staging region; nothing else writes it.
    unsafe {
        std::ptr::copy_nonoverlapping(frame.as_ptr(), link.staging.as_ptr().add(at), frame.len())
    };
    let (posted, _) = rdma_posted(link);
    rdma_set_posted(link, posted.max((at + frame.len()) as u64), true);
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let write = verbs::Write {
        wr_id: 1,
        local_addr: link.staging.addr() + at as u64,
        remote_addr: link.peer.ring_addr + at as u64,
        length: frame.len() as u32,
        lkey: link.staging.lkey(),
        rkey: link.peer.ring_rkey,
        imm: 0,
        flags: verbs::WRITE_SIGNALED,
        pad: 0,
    };
    // SAFETY: the local span is in the registered staging region, alive while `link` is.
    unsafe { link.endpoint.post_writes(&[write]) }.unwrap();
}

/// Whether an RDMA case must be skipped: there is no RDMA device here (the host kernel has no
/// RDMA support). Inside the rxe rig (`RXE_VM=1`) or with `BLOCKWIRE_REQUIRE_RDMA=1`, a missing
/// device fails the case instead.
pub fn skip(kind: TransportKind) -> bool {
    if kind != TransportKind::Rdma {
        return false;
    }
    #[cfg(feature = "rdma")]
    let why = match verbs::Device::open(None) {
        Ok(_) => return false,
        Err(e) => e.to_string(),
    };
    #[cfg(not(feature = "rdma"))]
    let why = "built without the `rdma` feature".to_string();
    let required = std::env::var("RXE_VM").is_ok_and(|v| v == "1")
        || std::env::var("BLOCKWIRE_REQUIRE_RDMA").is_ok_and(|v| v == "1");
    assert!(!required, "an RDMA device is required here: {why}");
    eprintln!("skipped: {why} (scripts/test.sh runs the RDMA cases inside scripts/rxe-vm.sh)");
    true
}

/// This raw peer's posted word and its check word (in the control line after its own ring,
/// where the peer's receiver READs them).
#[cfg(feature = "rdma")]
pub fn rdma_posted(link: &transporter::rdma::RdmaLink) -> (u64, u64) {
    let at = link.ring_bytes + transporter::rdma::POSTED_AT;
    // SAFETY: the control line after the raw peer's own ring; the test owns it.
    unsafe {
        let word = link.ring.as_ptr().add(at).cast::<u64>();
        (word.read_volatile(), word.add(1).read_volatile())
    }
}

/// Stores this raw peer's posted word, with its seal when `sealed` (else a check that does not
/// match, as when a READ catches the pair mid-store).
#[cfg(feature = "rdma")]
pub fn rdma_set_posted(link: &transporter::rdma::RdmaLink, posted: u64, sealed: bool) {
    let at = link.ring_bytes + transporter::rdma::POSTED_AT;
    let check = transporter::rdma::seal(posted) ^ u64::from(!sealed);
    // SAFETY: the control line after the raw peer's own ring; the test owns it.
    unsafe {
        let word = link.ring.as_ptr().add(at).cast::<u64>();
        word.write_volatile(posted);
        word.add(1).write_volatile(check);
    }
}

/// Writes `word` into the peer's credit word, as a raw RDMA peer (one plain RDMA WRITE of the
/// word and its check word; with `sealed` false, a check that does not match).
#[cfg(feature = "rdma")]
pub fn rdma_write_credit(link: &transporter::rdma::RdmaLink, word: u64, sealed: bool) {
    let at = link.peer.ring_bytes as usize + transporter::rdma::CREDIT_AT;
    let check = transporter::rdma::seal(word) ^ u64::from(!sealed);
    // SAFETY: the staging region is the peer's ring plus a credit line; the test owns it.
    unsafe {
        let to = link.staging.as_ptr().add(at).cast::<u64>();
        to.write_volatile(word);
        to.add(1).write_volatile(check);
    }
    let write = verbs::Write {
        wr_id: 1,
        local_addr: link.staging.addr() + at as u64,
        remote_addr: link.peer.credit_addr + transporter::rdma::CREDIT_AT as u64,
        length: transporter::rdma::SEALED as u32,
        lkey: link.staging.lkey(),
        rkey: link.peer.ring_rkey,
        imm: 0,
        flags: verbs::WRITE_SIGNALED,
        pad: 0,
    };
    // SAFETY: the local span is in the registered staging region, alive while `link` is.
    unsafe { link.endpoint.post_writes(&[write]) }.unwrap();
}

/// Node `me` listening for one raw peer `from` over `kind`, with its receive side running until
/// the returned flag is set (signals are dropped: the cases watch link events).
pub fn listening_node(
    me: u32,
    from: u32,
    kind: TransportKind,
) -> (Registry, Arc<AtomicBool>, JoinHandle<()>) {
    listening_node_spinning(me, from, kind, Duration::ZERO)
}

/// [`listening_node`] whose receive side spins for `spin` after each signal before it sleeps.
pub fn listening_node_spinning(
    me: u32,
    from: u32,
    kind: TransportKind,
    spin: Duration,
) -> (Registry, Arc<AtomicBool>, JoinHandle<()>) {
    let mut registry = Registry::start(config(me, true, vec![peer(from, unused(), kind)])).unwrap();
    let mut side = registry.take_receive_side().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let receiver = std::thread::spawn(move || {
        side.run(spin, Duration::from_millis(20), &|| s.load(Ordering::Relaxed), &mut |_, _| {})
    });
    (registry, stop, receiver)
}
