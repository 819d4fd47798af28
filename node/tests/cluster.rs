//! Nodes linked through the transporter registry: blocks on two nodes ping each other over TCP
//! and shared memory (in one process, through the real registry, sinks and receive loop), and
//! the data-node binary runs as a two-process cluster that answers the `stats` command, stops
//! cleanly on SIGTERM leaving no shared-memory file, and refuses a port in use. The RDMA cases
//! need a verbs device (`scripts/test.sh` runs them inside `scripts/rxe-vm.sh`); on a host
//! without one they say skipped, and the binary's clear "no RDMA device" exit is checked
//! instead.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, inst, wait_exit, Pinger, PINGER, WAIT};
use node::blocks;
use node::config::Config;
use node::links::registry_config;
use node::{DataNode, Kinds, NodeBuilder};
use signals::{gsn, BlockInstance, BlockRef, NodeId, Signal};
use transporter::{LinkEvent, Registry};

/// A cluster file: data nodes 1 and 2 linked by `transport`, API node 100 linked to both.
fn cluster_text(cluster_id: u32, transport: &str, ports: [u16; 3]) -> String {
    format!(
        r#"
cluster_id = {cluster_id}

[[nodes]]
id = 1
kind = "data"
host = "127.0.0.1"
port = {p1}

[[nodes]]
id = 2
kind = "data"
host = "127.0.0.1"
port = {p2}

[[nodes]]
id = 100
kind = "api"
host = "127.0.0.1"
port = {p3}

[[links]]
nodes = [1, 2]
transport = "{transport}"
ring_bytes = 1048576
spin_time_us = 20

[[links]]
nodes = [1, 100]
transport = "tcp"

[[links]]
nodes = [2, 100]
transport = "tcp"

[threads]
count = 1
receive = 1
spin_time_us = 20

[[blocks]]
kind = "ping"

[[blocks]]
kind = "stats"
"#,
        p1 = ports[0],
        p2 = ports[1],
        p3 = ports[2]
    )
}

fn node(n: u32) -> NodeId {
    NodeId::new(n).unwrap()
}

/// Starts node `me` of `config` in this process as the data-node binary does
/// ([`DataNode`]), with `place` adding blocks; returns the running node and its registry.
fn start_node(config: &Config, me: u32, place: impl FnOnce(&mut NodeBuilder)) -> DataNode {
    let mut builder = DataNode::builder(config, u64::from(me), &Kinds::system()).unwrap();
    place(builder.node());
    builder.start().unwrap()
}

fn wait_connected(registry: &Registry, peer: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.state(node(peer)) != Some(transporter::LinkState::Connected) {
        assert!(Instant::now() < deadline, "link to {peer} did not come up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How the nodes of a ping test receive.
#[derive(Clone, Copy, Debug)]
enum Receiving {
    /// One block thread and a receive thread.
    Thread,
    /// One block thread that receives, runs and sends (NDB's single-threaded data node).
    SingleThread,
    /// Two block threads, the echo block on the second: thread 0 receives and forwards to it.
    ForwardingThread,
}

fn blocks_ping_across_nodes(transport: &str, cluster_id: u32, receiving: Receiving) {
    let text = cluster_text(cluster_id, transport, [free_port(), free_port(), free_port()]);
    let text = match receiving {
        Receiving::Thread => text,
        Receiving::SingleThread => text.replace("receive = 1", "receive = 0"),
        Receiving::ForwardingThread => text
            .replace("count = 1\nreceive = 1", "count = 2\nreceive = 0")
            .replace("kind = \"ping\"", "kind = \"ping\"\nthread = 1"),
    };
    let config = Config::parse(&text, Path::new("test.toml")).unwrap();
    let echo_ref = BlockRef::new(node(2), blocks::PING, BlockInstance(0));
    // Node 2's echo block is placed by the cluster file.
    let two = start_node(&config, 2, |_| {});
    let two_registry = two.registry().clone();
    let (done_tx, done_rx) = mpsc::channel();
    // Node 1 starts its pinger only once the link is up: START_ORD comes at start.
    let mut builder = DataNode::builder(&config, 1, &Kinds::system()).unwrap();
    let pinger = Pinger {
        targets: vec![echo_ref],
        rounds: 2000,
        done_count: 0,
        done: done_tx,
        answered: None,
    };
    builder.node().place(0, PINGER, inst(0), Box::new(pinger)).unwrap();
    let one = builder
        .start_after(|registry| {
            wait_connected(registry, 2);
            Ok(())
        })
        .unwrap();
    wait_connected(&two_registry, 1);
    let registry = one.registry().clone();
    let (_, rounds) = done_rx.recv_timeout(WAIT).expect("pinger finished");
    assert_eq!(rounds, 2000);
    // Counters are bumped after the write or the delivery that they count, so the last answer
    // can reach the pinger a moment before its sender's counter moves: wait for them to settle.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sent = registry.counters(node(2)).unwrap();
        let echoed = two_registry.counters(node(1)).unwrap();
        let seen = (
            sent.signals_sent,
            sent.signals_received,
            echoed.signals_received,
            echoed.signals_sent,
        );
        if seen == (2000, 2000, 2000, 2000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "link counters (sent, received, echoed in, echoed out) = {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    one.stop().unwrap();
    two.stop().unwrap();
}

#[test]
fn blocks_ping_across_nodes_over_tcp() {
    blocks_ping_across_nodes("tcp", 41, Receiving::Thread);
}

#[test]
fn blocks_ping_across_nodes_over_shared_memory() {
    blocks_ping_across_nodes("shm", 42, Receiving::Thread);
}

#[test]
fn single_thread_nodes_ping_over_tcp() {
    blocks_ping_across_nodes("tcp", 53, Receiving::SingleThread);
}

#[test]
fn single_thread_nodes_ping_over_shared_memory() {
    blocks_ping_across_nodes("shm", 54, Receiving::SingleThread);
}

#[test]
fn a_block_thread_that_receives_forwards_to_another_over_tcp() {
    blocks_ping_across_nodes("tcp", 55, Receiving::ForwardingThread);
}

#[test]
fn a_block_thread_that_receives_forwards_to_another_over_shared_memory() {
    blocks_ping_across_nodes("shm", 56, Receiving::ForwardingThread);
}

/// Whether this machine has an RDMA device, found as the registry finds it. Inside the rxe rig
/// (`RXE_VM=1`) a missing device is a failure, not a skip.
fn rdma_device_here() -> bool {
    let text = cluster_text(49, "rdma", [free_port(), free_port(), free_port()]);
    let config = Config::parse(&text, Path::new("probe.toml")).unwrap();
    let mut registry = registry_config(&config, node(1)).unwrap();
    registry.listen = None;
    match Registry::start(registry) {
        Ok(_) => true,
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("no RDMA device"), "{e}");
            assert!(std::env::var("RXE_VM").map_or(true, |v| v != "1"), "in the rxe rig: {e}");
            eprintln!("skipped: {e}");
            false
        }
    }
}

#[test]
fn blocks_ping_across_nodes_over_rdma() {
    if rdma_device_here() {
        blocks_ping_across_nodes("rdma", 47, Receiving::Thread);
    }
}

#[test]
fn single_thread_nodes_ping_over_rdma() {
    if rdma_device_here() {
        blocks_ping_across_nodes("rdma", 57, Receiving::SingleThread);
    }
}

#[test]
fn rdma_cluster_answers_stats_or_says_there_is_no_device() {
    let path = write_config(
        &cluster_text(48, "rdma", [free_port(), free_port(), free_port()]),
        "rdma-cluster",
    );
    let config = path.to_str().unwrap();
    if !rdma_device_here() {
        let out = datanode(&["--config", config, "--node-id", "1"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("link to node 2 is configured as rdma, but no RDMA device"), "{err}");
        return;
    }
    let stdout = two_process_stats(config, "2", "30");
    assert!(stdout.lines().any(|l| l.starts_with("1 ")), "no link row for node 1: {stdout}");
    let _ = std::fs::remove_file(&path);
}

/// Starts data nodes 1 and 2 of `config` as `blockwire-datanode` processes, asks node `ask` for
/// its counters with the `stats` command (as API node 100), stops both with SIGTERM and checks
/// they exit 0. Returns what `stats` printed.
fn two_process_stats(config: &str, ask: &str, timeout_s: &str) -> String {
    let mut nodes: Vec<Child> = ["1", "2"]
        .iter()
        .map(|id| {
            datanode(&["--config", config, "--node-id", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let out = datanode(&["stats", "--config", config, "--node-id", ask, "--timeout-s", timeout_s])
        .output()
        .unwrap();
    // Again, into a pipe whose reader is gone before the report is written (as `| head -0`):
    // the report ends there, with no panic and exit 0.
    let mut closed =
        datanode(&["stats", "--config", config, "--node-id", ask, "--timeout-s", timeout_s])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    drop(closed.stdout.take());
    let closed = closed.wait_with_output().unwrap();
    let closed_err = String::from_utf8_lossy(&closed.stderr);
    assert!(closed.status.success(), "stats into a closed pipe: {closed_err}");
    assert!(!closed_err.contains("panicked"), "{closed_err}");
    for child in &nodes {
        // SAFETY: kill with a child's pid and a valid signal number has no memory effects.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    }
    for child in &mut nodes {
        assert_eq!(wait_exit(child).code(), Some(0), "{config}");
    }
    assert!(out.status.success(), "stats failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_config(text: &str, name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("blockwire-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn datanode(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blockwire-node"));
    c.args(args).env("RUST_LOG", "info");
    c
}

fn segment_files(cluster_id: u32) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("blockwire-{cluster_id}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_process_cluster_answers_stats_and_stops_cleanly() {
    // The last case runs a send thread in each node (threads.send = 1): block threads hand
    // their pages over and it writes them.
    // The last two run single-thread nodes (threads.receive = 0).
    let cases = [
        ("tcp", 43u32, 0, 1),
        ("shm", 44, 0, 1),
        ("tcp", 50, 1, 1),
        ("shm", 58, 0, 0),
        ("tcp", 59, 1, 0),
    ];
    for (transport, cluster_id, send, receive) in cases {
        let text = cluster_text(cluster_id, transport, [free_port(), free_port(), free_port()])
            .replace("receive = 1", &format!("receive = {receive}\nsend = {send}"));
        let path = write_config(&text, &format!("{transport}-{send}"));
        let config = path.to_str().unwrap();
        let stdout = two_process_stats(config, "1", "20");
        assert!(stdout.starts_with("node 1"), "{stdout}");
        assert!(stdout.lines().any(|l| l.starts_with("2 ")), "no link row for node 2: {stdout}");
        assert!(stdout.lines().any(|l| l.starts_with("0 ")), "no thread row: {stdout}");
        assert_eq!(segment_files(cluster_id), Vec::<String>::new(), "{transport}");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn port_in_use_exits_non_zero_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path =
        write_config(&cluster_text(45, "tcp", [port, free_port(), free_port()]), "port-in-use");
    let mut child = datanode(&["--config", path.to_str().unwrap(), "--node-id", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn stats_without_an_api_node_says_what_to_add() {
    let text = cluster_text(46, "tcp", [free_port(), free_port(), free_port()])
        .replace("kind = \"api\"", "kind = \"data\"");
    let path = write_config(&text, "no-api");
    let out = datanode(&[
        "stats",
        "--config",
        path.to_str().unwrap(),
        "--node-id",
        "1",
        "--timeout-s",
        "1",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no API node is linked to node 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn stats_refuses_an_out_of_range_timeout_or_node_id() {
    let text = cluster_text(47, "tcp", [free_port(), free_port(), free_port()]);
    let path = write_config(&text, "stats-args");
    let config = path.to_str().unwrap();
    // A timeout past the clock's range (it used to overflow and panic) and a node id that used
    // to be truncated to 32 bits (4294967396 read as 100, an API node of the file).
    for (args, says) in [
        (["--timeout-s", "18446744073709551615"], "--timeout-s"),
        (["--as", "4294967396"], "--as 4294967396 is not an API node"),
    ] {
        let out = datanode(&["stats", "--config", config, "--node-id", "1", args[0], args[1]])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn stats_names_why_it_got_no_link() {
    let text = cluster_text(51, "tcp", [free_port(), free_port(), free_port()]);
    // API node 100 with no link to node 2: refused before any attempt.
    let unlinked = text.replace("[[links]]\nnodes = [2, 100]\ntransport = \"tcp\"\n", "");
    assert_ne!(unlinked, text, "test bug: the link to remove is not in the file");
    let path = write_config(&unlinked, "stats-unlinked");
    let out = datanode(&["stats", "--config", path.to_str().unwrap(), "--node-id", "2"])
        .args(["--as", "100", "--timeout-s", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--as 100: the cluster file has no link between node 100 and node 2"),
        "{err}"
    );
    let _ = std::fs::remove_file(&path);
    // Node 1 is not running: the timeout says what the last attempt met.
    let path = write_config(&text, "stats-down");
    let out = datanode(&["stats", "--config", path.to_str().unwrap(), "--node-id", "1"])
        .args(["--timeout-s", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("did not accept a link within 1s (last attempt: connecting to 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_peer_cannot_have_a_block_answer_a_third_node_in_its_name() {
    // Node 2 runs the echo block. API node 100 sends it a ping that names a block of node 1 as
    // its sender: node 2 must not answer node 1, which asked nothing.
    let text = cluster_text(48, "tcp", [free_port(), free_port(), free_port()]);
    let config = Config::parse(&text, Path::new("test.toml")).unwrap();
    let two = start_node(&config, 2, |_| {});
    let mut one = Registry::start(registry_config(&config, node(1)).unwrap()).unwrap();
    let mut spoofer = Registry::start(registry_config(&config, node(100)).unwrap()).unwrap();
    wait_connected(&one, 2);
    wait_connected(&spoofer, 2);
    let echo = BlockRef::new(node(2), blocks::PING, BlockInstance(0));
    let victim = BlockRef::new(node(1), PINGER, BlockInstance(0));
    let me = BlockRef::new(node(100), PINGER, BlockInstance(0));
    let mut send = spoofer.send_buffers();
    send.pack(node(2), &Signal::new(gsn::PING_REQ, victim, echo).data(&[1])).unwrap();
    // Then a ping in its own name, on the same link: once its answer is back, node 2 has
    // dealt with the one before it.
    send.pack(node(2), &Signal::new(gsn::PING_REQ, me, echo).data(&[2])).unwrap();
    send.flush();
    let mut side = spoofer.take_receive_side().unwrap();
    let mut answers = Vec::new();
    let deadline = Instant::now() + WAIT;
    while answers.is_empty() {
        assert!(Instant::now() < deadline, "no answer to the ping in the sender's own name");
        side.poll(Some(Duration::from_millis(20)), &mut |_, s| answers.push(s.data().to_vec()));
    }
    assert_eq!(answers, vec![vec![2]]);
    // Node 1 gets nothing (an answer would have been sent before the one above, on its own
    // link; give it a moment to arrive all the same).
    let mut one_side = one.take_receive_side().unwrap();
    let mut unasked = Vec::new();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        one_side.poll(Some(Duration::from_millis(20)), &mut |_, s| unasked.push(s.data().to_vec()));
    }
    assert!(unasked.is_empty(), "node 1 was answered in its name: {unasked:?}");
    two.stop().unwrap();
}

#[test]
fn link_events_reach_the_registry_owner() {
    // The events channel of a node's registry reports the peer's arrival and departure.
    let text = cluster_text(47, "tcp", [free_port(), free_port(), free_port()]);
    let config = Config::parse(&text, Path::new("test.toml")).unwrap();
    let two = Registry::start(registry_config(&config, node(2)).unwrap()).unwrap();
    {
        let _one = Registry::start(registry_config(&config, node(1)).unwrap()).unwrap();
        assert!(
            matches!(two.events().recv_timeout(WAIT), Ok(LinkEvent::Connected { peer, .. }) if peer == node(1))
        );
    }
    // Without a receive loop nobody reads the socket; the registry still sees the hang-up once
    // its receive side polls.
    let mut two = two;
    let mut side = two.take_receive_side().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        side.poll(Some(Duration::from_millis(20)), &mut |_, _| {});
        if let Ok(LinkEvent::Failed { peer, .. }) = two.events().try_recv() {
            assert_eq!(peer, node(1));
            break;
        }
        assert!(Instant::now() < deadline, "no failure event");
    }
}

#[test]
fn rdma_device_from_the_cluster_file_reaches_the_registry() {
    let text = cluster_text(51, "rdma", [free_port(), free_port(), free_port()]).replacen(
        "kind = \"data\"",
        "kind = \"data\"\nrdma_device = \"no-such-device\"",
        1,
    );
    let config = Config::parse(&text, Path::new("device.toml")).unwrap();
    let mut links = registry_config(&config, node(1)).unwrap();
    assert_eq!(links.rdma_device.as_deref(), Some("no-such-device"));
    links.listen = None;
    let Err(e) = Registry::start(links) else { panic!("a missing device must be refused") };
    let e = e.to_string();
    // With a device here (the rxe rig) the name is looked up; without one, the kernel says so.
    assert!(
        e.contains("no device named \"no-such-device\"") || e.contains("no RDMA support"),
        "{e}"
    );
}
