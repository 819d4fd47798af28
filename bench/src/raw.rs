//! The bare transporter, without the block runtime: two registries in one process (node 1
//! connects to node 2 over loopback), a ping-pong of PING_REQ/PING_CONF signals, and a one-way
//! stream. Comparing these with `limit` shows what the transporter itself costs; comparing them
//! with the full-stack figures shows what the runtime costs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId, Signal};
use transporter::{LinkEvent, PeerConfig, Registry, RegistryConfig, SendError, TransportKind};

use crate::report::{histogram, record};
use crate::{pin, Mode, Plan};

/// The block both benchmark ends use.
const BENCH_BLOCK: BlockNumber = BlockNumber(200);

fn node(n: u32) -> NodeId {
    NodeId::new(n).unwrap_or(NodeId::MIN)
}

fn reference(n: u32) -> BlockRef {
    BlockRef::new(node(n), BENCH_BLOCK, BlockInstance(0))
}

/// Two connected registries: (node 1, node 2).
fn pair(kind: TransportKind) -> Result<(Registry, Registry), String> {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let two_config = RegistryConfig::new(
        1,
        node(2),
        Some(any),
        vec![PeerConfig { send_buffer_bytes: 16 << 20, ..PeerConfig::new(node(1), any, kind) }],
    );
    let two = Registry::start(two_config).map_err(|e| e.to_string())?;
    let addr = two.local_addr().ok_or("node 2 does not listen")?;
    let one_config = RegistryConfig::new(
        1,
        node(1),
        None,
        vec![PeerConfig { send_buffer_bytes: 16 << 20, ..PeerConfig::new(node(2), addr, kind) }],
    );
    let one = Registry::start(one_config).map_err(|e| e.to_string())?;
    for r in [&one, &two] {
        match r.events().recv_timeout(Duration::from_secs(10)) {
            Ok(LinkEvent::Connected { .. }) => {}
            other => return Err(format!("link did not come up: {other:?}")),
        }
    }
    Ok((one, two))
}

fn poll_timeout(mode: Mode) -> Option<Duration> {
    match mode {
        Mode::Spin => Some(Duration::ZERO),
        Mode::Sleep => Some(Duration::from_millis(50)),
    }
}

/// Round trips of a signal with `data_words` data words through the transporter.
pub fn pingpong(
    plan: &Plan,
    kind: TransportKind,
    data_words: usize,
    mode: Mode,
) -> Result<Histogram<u64>, String> {
    let (mut one, mut two) = pair(kind)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut echo_side = two.take_receive_side().ok_or("receive side taken")?;
    let mut echo_send = two.send_buffers();
    let echo_stop = stop.clone();
    let cpu = plan.cpus.1;
    let echo = std::thread::spawn(move || {
        pin(cpu);
        while !echo_stop.load(Ordering::Relaxed) {
            echo_side.poll(poll_timeout(mode), &mut |from, s| {
                let answer = Signal::new(gsn::PING_CONF, s.receiver(), s.sender()).data(s.data());
                let _ = echo_send.pack(from, &answer);
            });
            echo_send.flush();
        }
    });
    pin(plan.cpus.0);
    let mut side = one.take_receive_side().ok_or("receive side taken")?;
    let mut send = one.send_buffers();
    let data: Vec<u32> = (0..data_words as u32).collect();
    let mut h = histogram();
    for i in 0..plan.warmup + plan.count {
        let start = Instant::now();
        send.pack(node(2), &Signal::new(gsn::PING_REQ, reference(1), reference(2)).data(&data))
            .map_err(|e| e.to_string())?;
        send.flush();
        let mut answered = false;
        while !answered {
            side.poll(poll_timeout(mode), &mut |_, s| answered |= s.gsn() == gsn::PING_CONF);
        }
        if i >= plan.warmup {
            record(&mut h, start.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    Ok(h)
}

/// What a stream run measured.
#[derive(Clone, Copy, Debug)]
pub struct StreamResult {
    /// Signals per second, from the first pack to the last signal received.
    pub per_second: f64,
    /// Receiver sleeps per 1,000 signals (each ends in a kernel wakeup on TCP).
    pub sleeps_per_1000: f64,
}

/// One-way stream of `plan.count` signals of `data_words` words, flushed every `batch` signals.
pub fn stream(
    plan: &Plan,
    kind: TransportKind,
    data_words: usize,
    batch: usize,
) -> Result<StreamResult, String> {
    let (one, mut two) = pair(kind)?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut side = two.take_receive_side().ok_or("receive side taken")?;
    let (r, s) = (received.clone(), stop.clone());
    let cpu = plan.cpus.1;
    let receiver = std::thread::spawn(move || {
        pin(cpu);
        side.run(
            Duration::from_micros(50),
            Duration::from_millis(20),
            &|| s.load(Ordering::Relaxed),
            &mut |_, _| {
                r.fetch_add(1, Ordering::Relaxed);
            },
        );
    });
    pin(plan.cpus.0);
    let mut send = one.send_buffers();
    let data: Vec<u32> = (0..data_words as u32).collect();
    let signal = Signal::new(gsn::PING_REQ, reference(1), reference(2)).data(&data);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < plan.count {
        match send.pack(node(2), &signal) {
            Ok(()) => sent += 1,
            Err(SendError::Overloaded { .. }) => {
                send.flush();
                continue;
            }
            Err(e) => return Err(e.to_string()),
        }
        if sent % batch as u64 == 0 {
            send.flush();
        }
    }
    while send.has_unsent() {
        send.flush();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < plan.count {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} signals arrived",
                received.load(Ordering::Relaxed),
                plan.count
            ));
        }
        std::hint::spin_loop();
    }
    let elapsed = start.elapsed().max(Duration::from_nanos(1));
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    let sleeps = two.counters(node(1)).map_or(0, |c| c.sleeps);
    Ok(StreamResult {
        per_second: plan.count as f64 / elapsed.as_secs_f64(),
        sleeps_per_1000: sleeps as f64 * 1000.0 / plan.count as f64,
    })
}
