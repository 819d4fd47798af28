//! The validation rules of the cluster file, one function per section. Each rule refuses a
//! value with [`ConfigError::Invalid`] naming the key (with its index, e.g. `nodes[1].port`),
//! the value, and what is allowed. Every rule has a test in `tests.rs`.

use std::collections::HashSet;

use signals::{BlockInstance, Limits, LimitsError, NodeId};

use super::{
    BlockPlacement, BlockSettings, Config, ConfigError, LimitsConfig, LinkConfig, NodeConfig,
    NodeKind, RawBlock, RawCluster, RawLimits, RawLink, RawNode, RawThreads, ThreadsConfig,
    Transport,
};
use crate::kinds::{BlockEnv, Kinds, Settings};
use crate::runtime::MAX_BLOCK_THREADS;
use crate::stats::NodeStats;

/// Longest spin any thread or link may be configured to (1 s).
const SPIN_TIME_US_MAX: u64 = 1_000_000;
/// Receive threads at most: one receive thread serves every link of a node (it sleeps in one
/// epoll set on all of them).
const RECEIVE_THREADS_MAX: u64 = 1;
/// Send threads at most: with 0, block threads write their send buffers to the transporters at
/// the end of each round themselves; with 1, they hand the pages to one send thread that
/// writes for every link.
const SEND_THREADS_MAX: u64 = 1;

fn bad(key: impl Into<String>, value: impl ToString, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), value: value.to_string(), allowed: allowed.into() }
}

/// Checks `value` is in `min..=max`.
fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(bad(key, value, format!("{min}..={max}")))
    }
}

/// Validates the whole file.
pub fn validate(raw: &RawCluster, kinds: &Kinds) -> Result<Config, ConfigError> {
    let cluster_id = in_range("cluster_id", raw.cluster_id, 1, u32::MAX as u64)? as u32;
    let nodes = nodes(&raw.nodes)?;
    let links = raw
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| link(i, l, &nodes))
        .collect::<Result<Vec<_>, _>>()?;
    unique_links(&links)?;
    let threads = threads(&raw.threads)?;
    let blocks = block_placements(&raw.blocks, threads.count, kinds)?;
    let limits = limits(&raw.limits)?;
    same_secret_per_node(&links)?;
    links_fit_signals(&links, &limits)?;
    send_pages_for_every_thread(&threads, &limits)?;
    buffers_fit_memory(&nodes, &links, &threads, &limits)?;
    Ok(Config { cluster_id, nodes, links, threads, blocks, limits })
}

/// A node uses one cluster secret on all its links (the handshake has one per node): every link
/// of a node carries the same secret, or none does. A secret on some links only would have the
/// node offer it on the others too, where the peer refuses it.
fn same_secret_per_node(links: &[LinkConfig]) -> Result<(), ConfigError> {
    for (i, l) in links.iter().enumerate() {
        let earlier = links[..i]
            .iter()
            .enumerate()
            .find(|(_, e)| e.nodes.iter().any(|n| l.nodes.contains(n)) && e.secret != l.secret);
        if let Some((j, e)) = earlier {
            let shared =
                e.nodes.iter().find(|n| l.nodes.contains(n)).copied().unwrap_or(e.nodes[0]);
            let value = if l.secret.is_some() { "(a secret, hidden)" } else { "(none)" };
            return Err(bad(
                format!("links[{i}].secret"),
                value,
                format!(
                    "the same secret as links[{j}] ({}): node {shared} is on both, and every \
                     link of a node carries the same cluster secret, or none does",
                    if e.secret.is_some() { "a secret" } else { "none" }
                ),
            ));
        }
    }
    Ok(())
}

/// Ring sizes the transports need for the largest signal, checked here so the error names the
/// file's keys (the transporter checks them again, by its own names). The send buffer's size is
/// checked with the thread count ([`send_pages_for_every_thread`]), which asks for more.
fn links_fit_signals(links: &[LinkConfig], limits: &LimitsConfig) -> Result<(), ConfigError> {
    let signal_bytes = limits.signal.max_signal_words() * 4;
    for (i, l) in links.iter().enumerate() {
        let allowed = match l.transport {
            Transport::Shm => transporter::shm::layout::check_ring_bytes(
                l.ring_bytes,
                signal_bytes,
            )
            .err()
            .map(|e| format!("{e}, with max_signal_words = {}", limits.signal.max_signal_words())),
            #[cfg(feature = "rdma")]
            Transport::Rdma => {
                let min = transporter::rdma::setup::min_ring_bytes(&limits.signal);
                (l.ring_bytes < min).then(|| {
                    format!(
                        "a power of two from {min} (four largest signals, with max_signal_words \
                         = {})",
                        limits.signal.max_signal_words()
                    )
                })
            }
            _ => None,
        };
        if let Some(allowed) = allowed {
            return Err(bad(format!("links[{i}].ring_bytes"), l.ring_bytes, allowed));
        }
    }
    Ok(())
}

/// Every block thread keeps one send page per peer it sends to (its open page, reused from
/// round to round), so a link's pool needs a page for each block thread and two more for what is
/// queued; with fewer, the threads that came last would find none and be refused as overloaded
/// with nothing queued.
fn send_pages_for_every_thread(
    threads: &ThreadsConfig,
    limits: &LimitsConfig,
) -> Result<(), ConfigError> {
    let page = crate::links::send_page_bytes(&limits.signal);
    let need = (threads.count + 2) * page;
    if limits.send_buffer_bytes < need {
        return Err(bad(
            "limits.send_buffer_bytes",
            limits.send_buffer_bytes,
            format!(
                "at least {need} bytes: a {page}-byte send page for each of the {} block threads \
                 and two more (a page is 64 KiB or the largest signal, {} words, rounded up to a \
                 power of two)",
                threads.count,
                limits.signal.max_signal_words()
            ),
        ));
    }
    Ok(())
}

/// Job buffers (two lanes from every block or receive thread to every block thread), send
/// buffers (one per link) and link rings are allocated whole at start or at link set-up: for
/// every node, together they must fit in half of this machine's memory, so a node fails here,
/// by name, not later by the allocator or the OOM killer.
fn buffers_fit_memory(
    nodes: &[NodeConfig],
    links: &[LinkConfig],
    threads: &ThreadsConfig,
    limits: &LimitsConfig,
) -> Result<(), ConfigError> {
    match machine_memory() {
        Some(memory) => buffers_fit(memory, nodes, links, threads, limits),
        None => Ok(()),
    }
}

/// Bytes a link's rings take at each end: shared memory maps a segment of both rings (and a
/// page of control lines) and keeps a ring-sized copy buffer; RDMA registers its own ring and
/// a staging copy of the peer's, and keeps a ring-sized copy buffer. TCP and local links keep
/// no ring.
fn ring_memory(l: &LinkConfig) -> u128 {
    let ring = l.ring_bytes as u128;
    match l.transport {
        Transport::Shm => 3 * ring + 4096,
        Transport::Rdma => 3 * ring,
        Transport::Tcp | Transport::Local => 0,
    }
}

/// [`buffers_fit_memory`] for a machine of `memory` bytes.
pub(super) fn buffers_fit(
    memory: u128,
    nodes: &[NodeConfig],
    links: &[LinkConfig],
    threads: &ThreadsConfig,
    limits: &LimitsConfig,
) -> Result<(), ConfigError> {
    let ring_words = (limits.job_buffer_pages as u128 * limits.job_buffer_page_words as u128)
        .max(2 * limits.signal.max_signal_words() as u128 + 4)
        .next_power_of_two();
    // A node receives on one receive thread even when `threads.receive` is 0 (the data-node
    // binary starts one for its links), and that thread has its lanes too.
    let receive = threads.receive.max(1);
    let lanes = 2 * (threads.count + receive) as u128 * threads.count as u128;
    let job_bytes = lanes * ring_words * 4;
    for n in nodes {
        let mine: Vec<(usize, &LinkConfig)> =
            links.iter().enumerate().filter(|(_, l)| l.nodes.contains(&n.id)).collect();
        let send_bytes = mine.len() as u128 * limits.send_buffer_bytes as u128;
        let ring_bytes: u128 = mine.iter().map(|(_, l)| ring_memory(l)).sum();
        let total = job_bytes + send_bytes + ring_bytes;
        if total <= memory / 2 {
            continue;
        }
        // The key of the largest share (for the rings, the node's largest ring).
        let largest_ring = mine.iter().max_by_key(|(_, l)| ring_memory(l));
        let (key, value) = match largest_ring {
            Some((i, l)) if ring_bytes > job_bytes && ring_bytes > send_bytes => {
                (format!("links[{i}].ring_bytes"), l.ring_bytes.to_string())
            }
            _ if job_bytes >= send_bytes => {
                ("limits.job_buffer_pages".to_string(), limits.job_buffer_pages.to_string())
            }
            _ => ("limits.send_buffer_bytes".to_string(), limits.send_buffer_bytes.to_string()),
        };
        return Err(bad(
            key,
            value,
            format!(
                "buffers that fit in half of this machine's {memory} bytes of memory: node {} \
                 has {lanes} job buffers of {} bytes (threads.count = {}, {receive} receive \
                 thread, job_buffer_page_words = {}), {} send buffers of {} bytes and {} bytes \
                 of link rings, {total} bytes in all",
                n.id,
                ring_words * 4,
                threads.count,
                limits.job_buffer_page_words,
                mine.len(),
                limits.send_buffer_bytes,
                ring_bytes,
            ),
        ));
    }
    Ok(())
}

/// This machine's physical memory in bytes, if the system says.
fn machine_memory() -> Option<u128> {
    // SAFETY: sysconf takes an integer name and returns an integer; no memory is passed.
    let (pages, page) =
        unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && page > 0).then(|| pages as u128 * page as u128)
}

fn nodes(raw: &[RawNode]) -> Result<Vec<NodeConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(bad("nodes", "[]", "at least one [[nodes]] entry"));
    }
    let mut out: Vec<NodeConfig> = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let id = u32::try_from(n.id)
            .ok()
            .and_then(NodeId::new)
            .ok_or_else(|| bad(format!("nodes[{i}].id"), n.id, "1..=255"))?;
        if let Some(j) = out.iter().position(|o| o.id == id) {
            return Err(bad(
                format!("nodes[{i}].id"),
                n.id,
                format!("a unique id (nodes[{j}] has it)"),
            ));
        }
        let kind = match n.kind.as_str() {
            "data" => NodeKind::Data,
            "api" => NodeKind::Api,
            other => {
                return Err(bad(
                    format!("nodes[{i}].kind"),
                    format!("{other:?}"),
                    "\"data\" or \"api\"",
                ))
            }
        };
        if n.host.is_empty()
            || n.host.len() > 253
            || n.host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad(
                format!("nodes[{i}].host"),
                format!("{:?}", n.host),
                "a host name or IP address (1..=253 characters, no spaces)",
            ));
        }
        let port = in_range(&format!("nodes[{i}].port"), n.port, 1, u16::MAX as u64)? as u16;
        if let Some(j) = out.iter().position(|o| o.host == n.host && o.port == port) {
            return Err(bad(
                format!("nodes[{i}].port"),
                port,
                format!("a host:port not used by another node (nodes[{j}] uses {}:{port})", n.host),
            ));
        }
        if let Some(d) = &n.rdma_device {
            if d.is_empty() || d.len() > 63 || !d.chars().all(|c| c.is_ascii_graphic()) {
                return Err(bad(
                    format!("nodes[{i}].rdma_device"),
                    format!("{d:?}"),
                    "a verbs device name such as \"rxe0\" or \"mlx5_0\" (1..=63 printable characters)",
                ));
            }
        }
        if let Some(d) = &n.data_dir {
            let text = d.to_string_lossy();
            if kind != NodeKind::Data || text.is_empty() || text.len() > 4000 || text.contains('\0') {
                return Err(bad(
                    format!("nodes[{i}].data_dir"),
                    format!("{text:?}"),
                    "a directory path (1..=4000 bytes) on a data node",
                ));
            }
        }
        out.push(NodeConfig {
            id,
            kind,
            host: n.host.clone(),
            port,
            rdma_device: n.rdma_device.clone(),
            data_dir: n.data_dir.clone(),
        });
    }
    Ok(out)
}

fn link(i: usize, l: &RawLink, nodes: &[NodeConfig]) -> Result<LinkConfig, ConfigError> {
    let key = |k: &str| format!("links[{i}].{k}");
    let find = |id: u64| nodes.iter().find(|n| n.id.get() as u64 == id);
    let (a, b) = match l.nodes.as_slice() {
        &[a, b] if a != b => match (find(a), find(b)) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(bad(
                    key("nodes"),
                    format!("{:?}", l.nodes),
                    "two node ids from [[nodes]]",
                ))
            }
        },
        _ => return Err(bad(key("nodes"), format!("{:?}", l.nodes), "two different node ids")),
    };
    if a.kind == NodeKind::Api && b.kind == NodeKind::Api {
        // An API node only connects (to data nodes); nobody would listen for this link.
        return Err(bad(
            key("nodes"),
            format!("{:?}", l.nodes),
            "at least one data node (an API node connects to data nodes; two API nodes have no link)",
        ));
    }
    let transport = match l.transport.as_str() {
        "local" => Transport::Local,
        "tcp" => Transport::Tcp,
        "shm" => Transport::Shm,
        "rdma" => Transport::Rdma,
        other => {
            return Err(bad(
                key("transport"),
                format!("{other:?}"),
                "\"local\", \"tcp\", \"shm\" or \"rdma\"",
            ))
        }
    };
    if matches!(transport, Transport::Local | Transport::Shm) && a.host != b.host {
        return Err(bad(
            key("transport"),
            format!("{:?}", l.transport),
            format!("\"tcp\" or \"rdma\" between different hosts ({} and {})", a.host, b.host),
        ));
    }
    let ring_bytes = l.ring_bytes;
    if !ring_bytes.is_power_of_two() || !(4096..=1 << 30).contains(&ring_bytes) {
        return Err(bad(key("ring_bytes"), ring_bytes, "a power of two in 4096..=1073741824"));
    }
    let spin_time_us = in_range(&key("spin_time_us"), l.spin_time_us, 0, SPIN_TIME_US_MAX)?;
    if let Some(s) = &l.secret {
        if !(16..=1024).contains(&s.len()) {
            return Err(bad(key("secret"), format!("<{} bytes>", s.len()), "16..=1024 bytes"));
        }
    }
    Ok(LinkConfig {
        nodes: [a.id, b.id],
        transport,
        ring_bytes: ring_bytes as usize,
        spin_time_us,
        secret: l.secret.clone(),
    })
}

fn unique_links(links: &[LinkConfig]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, l) in links.iter().enumerate() {
        let pair = (l.nodes[0].min(l.nodes[1]), l.nodes[0].max(l.nodes[1]));
        if !seen.insert(pair) {
            return Err(bad(
                format!("links[{i}].nodes"),
                format!("[{}, {}]", l.nodes[0], l.nodes[1]),
                "one link per pair of nodes",
            ));
        }
    }
    Ok(())
}

fn threads(t: &RawThreads) -> Result<ThreadsConfig, ConfigError> {
    let count = in_range("threads.count", t.count, 1, MAX_BLOCK_THREADS as u64)? as usize;
    let cpus = match &t.cpus {
        None => None,
        Some(list) => {
            if list.len() != count {
                return Err(bad(
                    "threads.cpus",
                    format!("{list:?}"),
                    format!("one CPU per block thread ({count} entries)"),
                ));
            }
            let available: Vec<usize> = core_affinity::get_core_ids()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.id)
                .collect();
            for (i, &cpu) in list.iter().enumerate() {
                if !available.iter().any(|&a| a as u64 == cpu) {
                    return Err(bad(
                        format!("threads.cpus[{i}]"),
                        cpu,
                        format!("a CPU of this machine: {available:?}"),
                    ));
                }
            }
            Some(list.iter().map(|&c| c as usize).collect())
        }
    };
    Ok(ThreadsConfig {
        count,
        cpus,
        receive: in_range("threads.receive", t.receive, 0, RECEIVE_THREADS_MAX)? as usize,
        send: in_range("threads.send", t.send, 0, SEND_THREADS_MAX)? as usize,
        spin_time_us: in_range("threads.spin_time_us", t.spin_time_us, 0, SPIN_TIME_US_MAX)?,
        b_signals_per_round: in_range(
            "threads.b_signals_per_round",
            t.b_signals_per_round,
            1,
            65536,
        )? as usize,
        timers_per_thread: in_range("threads.timers_per_thread", t.timers_per_thread, 1, 1 << 20)?
            as usize,
    })
}

fn block_placements(
    raw: &[RawBlock],
    threads: usize,
    kinds: &Kinds,
) -> Result<Vec<BlockPlacement>, ConfigError> {
    let mut out: Vec<BlockPlacement> = Vec::with_capacity(raw.len());
    for (i, b) in raw.iter().enumerate() {
        let kind = kinds.get(&b.kind).ok_or_else(|| {
            bad(
                format!("blocks[{i}].kind"),
                format!("{:?}", b.kind),
                format!("one of {:?}", kinds.names()),
            )
        })?;
        let number = kind.number();
        let (first, count) = match (b.instance, b.instances) {
            (Some(_), Some(n)) => {
                return Err(bad(
                    format!("blocks[{i}].instances"),
                    n,
                    "either instance or instances, not both",
                ))
            }
            (Some(instance), None) => {
                (in_range(&format!("blocks[{i}].instance"), instance, 0, 255)?, 1)
            }
            (None, Some(n)) => (0, in_range(&format!("blocks[{i}].instances"), n, 1, 256)?),
            (None, None) => (0, 1),
        };
        let on = |t: u64, key: String| in_range(&key, t, 0, threads as u64 - 1).map(|t| t as usize);
        let thread_of: Vec<usize> = match (&b.thread, &b.threads) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    format!("blocks[{i}].threads"),
                    "[..]",
                    "either thread or threads, not both",
                ))
            }
            (_, Some(list)) => {
                if list.len() as u64 != count {
                    return Err(bad(
                        format!("blocks[{i}].threads"),
                        format!("{list:?}"),
                        format!("one thread per instance ({count})"),
                    ));
                }
                list.iter()
                    .enumerate()
                    .map(|(j, t)| on(*t, format!("blocks[{i}].threads[{j}]")))
                    .collect::<Result<_, _>>()?
            }
            (thread, None) => {
                let t = on(thread.unwrap_or(0), format!("blocks[{i}].thread"))?;
                vec![t; count as usize]
            }
        };
        for (n, thread) in thread_of.into_iter().enumerate() {
            let instance = (first + n as u64) as u8;
            if let Some(j) = out.iter().position(|o| o.number == number && o.instance.0 == instance)
            {
                let key = if b.instances.is_some() { "instances" } else { "instance" };
                return Err(bad(
                    format!("blocks[{i}].{key}"),
                    instance,
                    format!(
                        "an instance not already placed (blocks[{}] is {} instance {instance})",
                        out[j].entry, b.kind
                    ),
                ));
            }
            out.push(BlockPlacement {
                kind: b.kind.clone(),
                number,
                instance: BlockInstance(instance),
                thread,
                entry: i,
                settings: BlockSettings(b.settings.clone()),
            });
        }
        // The kind checks its own settings, on an instance made and dropped here.
        let env = BlockEnv {
            node: NodeId::MIN,
            instance: BlockInstance(first as u8),
            stats: std::sync::Arc::new(NodeStats::new(NodeId::MIN, threads)),
            limits: Limits::default(),
        };
        let mut settings = Settings::new(&b.settings, format!("blocks[{i}]"));
        drop(kind.make(&mut settings, &env)?);
        settings.finish()?;
    }
    Ok(out)
}

fn limits(l: &RawLimits) -> Result<LimitsConfig, ConfigError> {
    let send_buffer_bytes =
        in_range("limits.send_buffer_bytes", l.send_buffer_bytes, 64 << 10, 1 << 30)? as usize;
    let job_buffer_pages =
        in_range("limits.job_buffer_pages", l.job_buffer_pages, 2, 4096)? as usize;
    let signal = Limits::new(l.max_section_words, l.max_signal_words).map_err(|e| match e {
        LimitsError::SignalWordsOutOfRange { value, min, max } => {
            bad("limits.max_signal_words", value, format!("{min}..={max}"))
        }
        LimitsError::SectionWordsOutOfRange { value, min, max, signal_words } => bad(
            "limits.max_section_words",
            value,
            format!("{min}..={max} (with max_signal_words = {signal_words})"),
        ),
    })?;
    let page_min = signal.max_signal_words() as u64;
    let job_buffer_page_words =
        in_range("limits.job_buffer_page_words", l.job_buffer_page_words, page_min, 1 << 20)?
            as usize;
    Ok(LimitsConfig { send_buffer_bytes, job_buffer_pages, job_buffer_page_words, signal })
}
