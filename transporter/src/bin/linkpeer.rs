//! `blockwire-linkpeer`: a one-link peer process over the registry, for the transporter
//! conformance suite, soak tests and benchmarks. It joins a cluster as one node with one peer
//! and then echoes, sinks (checking order) or sources a numbered stream of signals.
//!
//! Stream signals are the numbered signals of `transporter::stream`, checked word for word. It prints `ready <addr>` once listening, `connected <peer>` when the link is up,
//! and `sink ok <n>` or `sink bad <why>` in sink mode.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use signals::{BlockInstance, BlockNumber, BlockRef, NodeId, Signal, SignalView};
use transporter::stream::{self, StreamStorage};
use transporter::{LinkEvent, PeerConfig, Registry, RegistryConfig, SendError, TransportKind};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Answer every signal with the same words and sections.
    Echo,
    /// Check the order and content of `--count` stream signals, then print the verdict.
    Sink,
    /// Send `--count` stream signals (0 = until killed) to the peer.
    Source,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Tcp,
    Shm,
    Rdma,
}

impl Transport {
    fn kind(self) -> TransportKind {
        match self {
            Transport::Tcp => TransportKind::Tcp,
            Transport::Shm => TransportKind::Shm,
            Transport::Rdma => TransportKind::Rdma,
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "A one-link blockwire peer for transporter tests")]
struct Args {
    /// This node's id.
    #[arg(long)]
    node_id: u32,
    /// The cluster id.
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
    /// Where to listen (for peers with lower ids), e.g. 127.0.0.1:0.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The peer's node id.
    #[arg(long)]
    peer_id: u32,
    /// The peer's address (used when this node has the lower id).
    #[arg(long, default_value = "127.0.0.1:1")]
    peer_addr: SocketAddr,
    /// The cluster secret.
    #[arg(long)]
    secret: Option<String>,
    /// What to do.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The link's transport.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Ring size of a shared-memory link (both sides must agree).
    #[arg(long, default_value_t = 1 << 20)]
    ring_bytes: usize,
    /// Stream length.
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// The block all stream signals come from and go to.
pub const STREAM_BLOCK: BlockNumber = BlockNumber(100);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("blockwire-linkpeer: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let me =
        NodeId::new(args.node_id).ok_or(format!("--node-id {} is not in 1..=255", args.node_id))?;
    let peer =
        NodeId::new(args.peer_id).ok_or(format!("--peer-id {} is not in 1..=255", args.peer_id))?;
    let mut config = RegistryConfig::new(
        args.cluster_id,
        me,
        args.listen,
        vec![PeerConfig {
            ring_bytes: args.ring_bytes,
            ..PeerConfig::new(peer, args.peer_addr, args.transport.kind())
        }],
    );
    config.secret = args.secret.as_ref().map(|s| s.as_bytes().to_vec());
    let mut registry = Registry::start(config).map_err(|e| e.to_string())?;
    if let Some(addr) = registry.local_addr() {
        println!("ready {addr}");
    }
    let _ = std::io::stdout().flush();
    match args.mode {
        Mode::Echo => echo(&mut registry),
        Mode::Sink => Ok(sink(&mut registry, args.count)),
        Mode::Source => source(&mut registry, peer, args.count),
    }
}

fn wait_connected(registry: &Registry) -> NodeId {
    loop {
        if let Ok(LinkEvent::Connected { peer, .. }) = registry.events().recv() {
            println!("connected {peer}");
            let _ = std::io::stdout().flush();
            return peer;
        }
    }
}

fn echo(registry: &mut Registry) -> Result<ExitCode, String> {
    let mut receive = registry.take_receive_side().ok_or("receive side taken")?;
    let mut send = registry.send_buffers();
    wait_connected(registry);
    loop {
        receive.poll(Some(Duration::from_millis(100)), &mut |from, s: SignalView<'_>| {
            let sections: Vec<&[u32]> = s.sections().collect();
            let answer = Signal::new(s.gsn(), s.receiver(), s.sender())
                .data(s.data())
                .sections(&sections)
                .priority(s.priority());
            // An echo to a peer that went away is dropped; the failure event says why.
            while let Err(SendError::Overloaded { .. }) = send.pack(from, &answer) {
                send.flush();
            }
        });
        send.flush();
    }
}

fn sink(registry: &mut Registry, count: u64) -> ExitCode {
    let Some(mut receive) = registry.take_receive_side() else { return ExitCode::from(2) };
    wait_connected(registry);
    let mut next = 0u64;
    let mut bad: Option<String> = None;
    while next < count && bad.is_none() {
        receive.poll(Some(Duration::from_millis(100)), &mut |_, s| {
            if bad.is_none() {
                if let Err(why) = stream::check(&s, next) {
                    bad = Some(why);
                }
                next += 1;
            }
        });
    }
    match bad {
        None => {
            println!("sink ok {next}");
            ExitCode::SUCCESS
        }
        Some(why) => {
            println!("sink bad {why}");
            ExitCode::from(1)
        }
    }
}

fn source(registry: &mut Registry, peer: NodeId, count: u64) -> Result<ExitCode, String> {
    let mut receive = registry.take_receive_side().ok_or("receive side taken")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_receive = stop.clone();
    // Drain (and ignore) anything the peer sends, so its failure is noticed.
    let drain = std::thread::spawn(move || {
        receive.run(
            Duration::ZERO,
            Duration::from_millis(50),
            &|| stop_receive.load(Ordering::Relaxed),
            &mut |_, _| {},
        );
    });
    let mut send = registry.send_buffers();
    wait_connected(registry);
    let mut storage = StreamStorage::default();
    let mut seq = 0u64;
    let started = Instant::now();
    while count == 0 || seq < count {
        let (from, to) = (me_ref(registry.node()), me_ref(peer));
        match storage.with_signal(seq, from, to, |signal| send.pack(peer, signal)) {
            Ok(()) => seq += 1,
            Err(SendError::Overloaded { .. }) => {
                send.flush();
            }
            Err(e) => return Err(format!("pack failed after {seq} signals: {e}")),
        }
        if seq % 64 == 0 {
            send.flush();
        }
    }
    while send.has_unsent() {
        send.flush();
    }
    eprintln!("source sent {seq} in {:?}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    Ok(ExitCode::SUCCESS)
}

fn me_ref(node: NodeId) -> BlockRef {
    BlockRef::new(node, STREAM_BLOCK, BlockInstance(0))
}
