//! A real network partition between test hosts: three network namespaces made by the test
//! (data node 1 in one, data node 2 in another, the arbitrator and a client in a third),
//! joined pairwise by veth links. Cutting the link between the two data nodes
//! (`ip link set ... down`, so TCP sees silence, not a reset) leaves each side alone and no
//! majority: both ask the arbitrator, exactly one side is granted and serves every partition,
//! and the other stops with exit code 6. Needs root and iproute2 (CI runs as root; `ip netns
//! add` fails naming the reason otherwise).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NAMESPACES: [&str; 3] = ["bwpA", "bwpB", "bwpC"];

/// Runs `ip` with `args`; panics naming the command when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the ip command (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The namespaces and links; removed when dropped (a leftover of an earlier run first).
struct Net;

impl Net {
    fn build() -> Net {
        Net::remove();
        for ns in NAMESPACES {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Each host's address lives on its loopback; each link carries /32 routes to the two
        // hosts at its ends.
        let addr = |i: usize| format!("10.77.0.{}", i + 1);
        for (i, ns) in NAMESPACES.iter().enumerate() {
            ip(&["-n", ns, "addr", "add", &format!("{}/32", addr(i)), "dev", "lo"]);
        }
        for (a, b) in [(0usize, 1usize), (0, 2), (1, 2)] {
            let (ea, eb) = (format!("v{a}{b}"), format!("v{b}{a}"));
            ip(&["link", "add", &ea, "netns", NAMESPACES[a], "type", "veth", "peer", "name", &eb, "netns", NAMESPACES[b]]);
            for (ns, dev, peer, me) in [(NAMESPACES[a], &ea, addr(b), addr(a)), (NAMESPACES[b], &eb, addr(a), addr(b))] {
                ip(&["-n", ns, "link", "set", dev, "up"]);
                ip(&["-n", ns, "route", "add", &format!("{peer}/32"), "dev", dev, "src", &me]);
            }
        }
        Net
    }

    fn remove() {
        for ns in NAMESPACES {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }

    /// Cuts the link between data nodes 1 and 2.
    fn cut(&self) {
        ip(&["-n", NAMESPACES[0], "link", "set", "v01", "down"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Net::remove();
    }
}

fn cluster_file(dir: &Path) -> PathBuf {
    let text = r#"cluster_id = 77
[[nodes]]
id = 1
kind = "data"
host = "10.77.0.1"
port = 12701
[[nodes]]
id = 2
kind = "data"
host = "10.77.0.2"
port = 12702
[[nodes]]
id = 100
kind = "api"
host = "10.77.0.3"
port = 12703
[[nodes]]
id = 101
kind = "api"
host = "10.77.0.3"
port = 12704
[[links]]
nodes = [1, 2]
transport = "tcp"
[[links]]
nodes = [1, 100]
transport = "tcp"
[[links]]
nodes = [2, 100]
transport = "tcp"
[[links]]
nodes = [1, 101]
transport = "tcp"
[[links]]
nodes = [2, 101]
transport = "tcp"
[threads]
count = 1
receive = 0
[[blocks]]
kind = "dictionary"
replicas = 2
default_partitions = 4
[[blocks]]
kind = "storage"
[[blocks]]
kind = "coordinator"
[[blocks]]
kind = "membership"
heartbeat_interval_ms = 100
heartbeat_missed = 3
arbitrator = 100
arbitration_timeout_ms = 3000
"#;
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn blockwire_binary() -> PathBuf {
    common::datanode_binary().with_file_name("blockwire")
}

/// `blockwire --config FILE --as 101 ARGS...` in the client's namespace.
fn cli(path: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", NAMESPACES[2]])
        .arg(blockwire_binary())
        .args(["--config", path.to_str().unwrap(), "--as", "101", "--timeout-s", "20"])
        .args(args)
        .output()
        .unwrap()
}

fn spawn_in(ns: &str, program: &Path, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .env("RUST_LOG", "warn,engine=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills the processes when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_network_partition_leaves_exactly_the_side_the_arbitrator_chose() {
    let dir = std::env::temp_dir().join(format!("blockwire-partition-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = cluster_file(&dir);
    let net = Net::build();
    let config = path.to_str().unwrap();
    let datanode = common::datanode_binary();
    let mut procs = Procs(Vec::new());
    for (i, ns) in NAMESPACES[..2].iter().enumerate() {
        let id = (i + 1).to_string();
        procs.0.push(spawn_in(ns, &datanode, &["--config", config, "--node-id", &id]));
    }
    let mut arbitrator = spawn_in(NAMESPACES[2], &blockwire_binary(), &["--config", config, "--as", "100", "arbitrator", "--seconds", "120"]);
    let decisions = BufReader::new(arbitrator.stdout.take().unwrap());
    procs.0.push(arbitrator);

    // The cluster serves a table through the client's namespace.
    let table = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tables/accounts.toml");
    let created = cli(&path, &["create-table", table.to_str().unwrap()]);
    assert!(created.status.success(), "create-table: {}", String::from_utf8_lossy(&created.stderr));
    for id in 0..8 {
        let put = cli(&path, &["put", "accounts", &format!("id={id}"), "balance=100"]);
        assert!(put.status.success(), "put: {}", String::from_utf8_lossy(&put.stderr));
    }

    net.cut();
    let cut_at = Instant::now();
    // Exactly one data node stops, with exit code 6 (the arbitrator refused its side).
    let mut stopped = None;
    while stopped.is_none() && cut_at.elapsed() < Duration::from_secs(20) {
        for (i, c) in procs.0[..2].iter_mut().enumerate() {
            if let Some(status) = c.try_wait().unwrap() {
                stopped = Some((i + 1, status.code()));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (loser, code) = stopped.expect("neither data node stopped within 20 s of the partition: split brain");
    eprintln!("data node {loser} stopped {:?} after the cut, exit code {code:?}", cut_at.elapsed());
    assert_eq!(code, Some(6), "the side the arbitrator refused stops with exit code 6");
    let winner = 3 - loser;
    std::thread::sleep(Duration::from_millis(500));
    assert!(procs.0[winner - 1].try_wait().unwrap().is_none(), "the granted side (data node {winner}) must keep running");

    // The arbitrator granted one side and refused the other.
    let mut lines = Vec::new();
    for line in decisions.lines().map_while(Result::ok) {
        lines.push(line);
        if lines.len() == 2 {
            break;
        }
    }
    assert!(lines[0].starts_with(&format!("granted data nodes [{winner}]")), "arbitrator said {lines:?}");
    assert!(lines[1].starts_with(&format!("refused data nodes [{loser}]")), "arbitrator said {lines:?}");

    // The winner serves every row alone, and takes writes.
    for id in 0..8 {
        let got = cli(&path, &["get", "accounts", &id.to_string()]);
        assert!(got.status.success(), "get {id} from the surviving side: {}", String::from_utf8_lossy(&got.stderr));
    }
    let put = cli(&path, &["put", "accounts", "id=99", "balance=1"]);
    assert!(put.status.success(), "put on the surviving side: {}", String::from_utf8_lossy(&put.stderr));
    drop(procs);
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
