//! Multi-process engine clusters for the client's tests: a cluster file with free ports, data
//! nodes as `blockwire-datanode` processes (killed when the cluster is dropped), and API nodes
//! for the test's sessions.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Cluster, ConnectOptions};

pub mod bank;
pub mod sqlite;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The data-node binary beside this test's binary (built by `cargo test --workspace`).
pub fn datanode_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("blockwire-datanode");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build -p blockwire-engine)",
        bin.display()
    );
    bin
}

/// What a test cluster looks like.
#[derive(Clone, Debug)]
pub struct Shape {
    pub data_nodes: u32,
    pub api_nodes: u32,
    pub transport: &'static str,
    pub replicas: u32,
    pub storage_instances: u32,
    pub coordinator: &'static str,
    pub storage: &'static str,
    /// The membership block's settings (TOML lines).
    pub membership: String,
    pub threads: u32,
    /// Data nodes keep their data on disk: a `data_dir` each (under the test's directory)
    /// and a checkpoint block with these settings.
    pub durable: Option<&'static str>,
    /// Environment variables for the data-node processes.
    pub node_env: Vec<(&'static str, &'static str)>,
    /// Each durable node's `data_dir` is a tmpfs of this many bytes (mounted by the test, as
    /// root; unmounted when the cluster is dropped).
    pub tmpfs_bytes: Option<u64>,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            data_nodes: 2,
            api_nodes: 6,
            transport: "tcp",
            replicas: 2,
            storage_instances: 2,
            coordinator: "",
            storage: "",
            membership: String::new(),
            threads: 1,
            durable: None,
            node_env: Vec::new(),
            tmpfs_bytes: None,
        }
    }
}

/// The cluster file text for `shape`: data nodes 1..=n, API nodes 100.., every pair linked.
pub fn cluster_file(shape: &Shape, dir: &Path) -> String {
    let mut s = String::from("cluster_id = 7\n");
    let data: Vec<u32> = (1..=shape.data_nodes).collect();
    let api: Vec<u32> = (100..100 + shape.api_nodes).collect();
    let mut ports = HashSet::new();
    for id in data.iter().chain(&api) {
        let kind = if *id < 100 { "data" } else { "api" };
        let port = std::iter::repeat_with(free_port).find(|p| ports.insert(*p)).unwrap_or_default();
        s += &format!(
            "[[nodes]]\nid = {id}\nkind = \"{kind}\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        );
        if kind == "data" && shape.durable.is_some() {
            s += &format!("data_dir = \"{}\"\n", dir.join(format!("node-{id}")).display());
        }
    }
    for (i, a) in data.iter().enumerate() {
        for b in data[i + 1..].iter().chain(&api) {
            s += &format!(
                "[[links]]\nnodes = [{a}, {b}]\ntransport = \"{}\"\nspin_time_us = 0\n",
                shape.transport
            );
        }
    }
    let threads: Vec<String> = (0..shape.threads).map(|t| t.to_string()).collect();
    s += &format!("[threads]\ncount = {}\nreceive = 0\nspin_time_us = 0\n", shape.threads);
    s += &format!(
        "[[blocks]]\nkind = \"dictionary\"\nreplicas = {}\ndefault_partitions = 8\n",
        shape.replicas
    );
    let storage_threads: Vec<String> =
        (0..shape.storage_instances).map(|i| threads[i as usize % threads.len()].clone()).collect();
    s += &format!(
        "[[blocks]]\nkind = \"storage\"\ninstances = {}\nthreads = [{}]\n{}\n",
        shape.storage_instances,
        storage_threads.join(", "),
        shape.storage
    );
    s += &format!("[[blocks]]\nkind = \"coordinator\"\n{}\n", shape.coordinator);
    s += &format!("[[blocks]]\nkind = \"membership\"\n{}\n", shape.membership);
    if let Some(settings) = shape.durable {
        s += &format!("[[blocks]]\nkind = \"checkpoint\"\n{settings}\n");
    }
    s += "[[blocks]]\nkind = \"stats\"\n";
    s
}

/// Joins the cluster of the file at `path` as API node `100 + index`.
pub fn connect_to(path: &Path, index: u32) -> Cluster {
    let options = ConnectOptions {
        api_node: Some(u64::from(100 + index)),
        connect_timeout: Duration::from_secs(20),
        timeout: Duration::from_secs(20),
        ..ConnectOptions::default()
    };
    Cluster::connect(path, options).unwrap()
}

/// A running cluster of data-node processes.
pub struct TestCluster {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub shape: Shape,
    pub nodes: Vec<(u32, Child)>,
    /// (node, peer) pairs whose link a node logged as up.
    pub links_up: Arc<Mutex<HashSet<(u32, u32)>>>,
    /// Nodes that logged they serve after restoring from disk (durable clusters), or after
    /// a node restart's copy.
    pub serving: Arc<Mutex<HashSet<u32>>>,
    /// Restarted nodes that logged they were admitted (they copy their partitions).
    pub admitted: Arc<Mutex<HashSet<u32>>>,
}

/// A log line without its colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The peer of a "link up" line.
fn link_up_peer(line: &str) -> Option<u32> {
    let line = plain(line);
    if !line.contains("link up") {
        return None;
    }
    let at = line.find("peer=")? + 5;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

impl TestCluster {
    /// Writes the cluster file for `shape` and starts every data node. A port another test
    /// took between choosing it and binding it means a new file with new ports (three tries).
    pub fn start(name: &str, shape: Shape) -> TestCluster {
        let dir =
            std::env::temp_dir().join(format!("blockwire-client-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.toml");
        let links_up = Arc::new(Mutex::new(HashSet::new()));
        if let (Some(_), Some(bytes)) = (shape.durable, shape.tmpfs_bytes) {
            for id in 1..=shape.data_nodes {
                let mount = dir.join(format!("node-{id}"));
                std::fs::create_dir_all(&mount).unwrap();
                let status = Command::new("mount")
                    .args([
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={bytes}"),
                        "tmpfs",
                        mount.to_str().unwrap(),
                    ])
                    .status()
                    .unwrap();
                assert!(
                    status.success(),
                    "mounting a tmpfs at {} failed (the test needs root)",
                    mount.display()
                );
            }
        }
        let serving = Arc::new(Mutex::new(HashSet::new()));
        let admitted = Arc::new(Mutex::new(HashSet::new()));
        let mut cluster = TestCluster {
            dir,
            path,
            shape: shape.clone(),
            nodes: Vec::new(),
            links_up,
            serving,
            admitted,
        };
        for attempt in 1..=3 {
            std::fs::write(&cluster.path, cluster_file(&shape, &cluster.dir)).unwrap();
            let started = (1..=shape.data_nodes).try_for_each(|id| cluster.try_start_node(id));
            match started {
                Ok(()) => {
                    cluster.wait_linked();
                    if shape.durable.is_some() {
                        cluster.wait_serving();
                    }
                    return cluster;
                }
                Err(log) if attempt < 3 && log.contains("in use") => {
                    for (_, mut child) in cluster.nodes.drain(..) {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
                Err(log) => panic!("a data node did not start:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Waits until every data node logged its link to every other data node as up.
    pub fn wait_linked(&self) {
        let n = self.shape.data_nodes;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = self.links_up.lock().unwrap();
            let missing: Vec<(u32, u32)> = (1..=n)
                .flat_map(|a| (1..=n).filter(move |b| *b != a).map(move |b| (a, b)))
                .filter(|pair| !up.contains(pair))
                .collect();
            drop(up);
            if missing.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "data-node links not up within 30 s: {missing:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until every data node logged that it serves (restored from its files).
    pub fn wait_serving(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let missing: Vec<u32> = (1..=self.shape.data_nodes)
                .filter(|n| !self.serving.lock().unwrap().contains(n))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "data nodes {missing:?} did not restore within 120 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs every data node (no stop, no flush: as a power cut to the processes).
    pub fn kill_all(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
        }
        for (_, mut child) in self.nodes.drain(..) {
            let _ = child.wait();
        }
        self.links_up.lock().unwrap().clear();
        self.serving.lock().unwrap().clear();
    }

    /// SIGKILLs data node `id` alone.
    pub fn kill_node(&mut self, id: u32) {
        let Some(at) = self.nodes.iter().position(|(n, _)| *n == id) else {
            panic!("data node {id} is not running")
        };
        let (_, mut child) = self.nodes.remove(at);
        let _ = child.kill();
        let _ = child.wait();
        self.links_up.lock().unwrap().retain(|(a, b)| *a != id && *b != id);
        self.serving.lock().unwrap().remove(&id);
        self.admitted.lock().unwrap().remove(&id);
    }

    /// The process id of data node `id` (running).
    pub fn pid(&self, id: u32) -> u32 {
        self.nodes
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, child)| child.id())
            .unwrap_or_else(|| panic!("data node {id} is not running"))
    }

    /// Waits up to `timeout` until data node `id` is in `set` (`serving` or `admitted`).
    pub fn wait_for(&self, set: &Arc<Mutex<HashSet<u32>>>, id: u32, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !set.lock().unwrap().contains(&id) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Waits up to `timeout` for data node `id` to exit by itself; its exit code.
    pub fn wait_exit(&mut self, id: u32, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        let at = self.nodes.iter().position(|(n, _)| *n == id)?;
        loop {
            if let Some(status) = self.nodes[at].1.try_wait().unwrap() {
                self.nodes.remove(at);
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts every data node again from its files and waits until all serve.
    pub fn restart_all(&mut self) {
        for id in 1..=self.shape.data_nodes {
            self.start_node(id);
        }
        self.wait_linked();
        self.wait_serving();
    }

    /// Starts data node `id` and waits until it runs.
    pub fn start_node(&mut self, id: u32) {
        if let Err(log) = self.try_start_node(id) {
            panic!("data node {id} did not start:\n{log}");
        }
    }

    /// Starts data node `id`; its log when it does not come up.
    fn try_start_node(&mut self, id: u32) -> Result<(), String> {
        let mut child = Command::new(datanode_binary())
            .args(["--config", self.path.to_str().unwrap(), "--node-id", &id.to_string()])
            .env("RUST_LOG", "warn,node=info,engine=info")
            .envs(self.shape.node_env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let links_up = self.links_up.clone();
        let serving = self.serving.clone();
        let admitted = self.admitted.clone();
        std::thread::spawn(move || {
            let mut log = String::new();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(peer) = link_up_peer(&line) {
                    links_up.lock().unwrap().insert((id, peer));
                }
                if line.contains("the node serves") || line.contains("this data node has restarted")
                {
                    serving.lock().unwrap().insert(id);
                }
                if line.contains("admitted to the cluster") {
                    admitted.lock().unwrap().insert(id);
                }
                if !sent && line.contains("data node running") {
                    let _ = tx.send(Ok(()));
                    sent = true;
                }
                if !sent {
                    log.push_str(&line);
                    log.push('\n');
                }
                if std::env::var_os("BLOCKWIRE_TEST_NODE_LOG").is_some()
                    || line.contains("panicked")
                {
                    eprintln!("[node {id}] {line}");
                }
            }
            if !sent {
                let _ = tx.send(Err(log));
            }
        });
        let result = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| Err(format!("no start within 30 s: {e}")));
        match result {
            Ok(()) => {
                self.nodes.push((id, child));
                Ok(())
            }
            Err(log) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(log)
            }
        }
    }

    /// Joins as API node `100 + index`.
    pub fn connect(&self, index: u32) -> Cluster {
        connect_to(&self.path, index)
    }

    /// Whether every data node still runs.
    pub fn all_running(&mut self) -> bool {
        self.nodes.iter_mut().all(|(_, c)| c.try_wait().unwrap().is_none())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.shape.tmpfs_bytes.is_some() {
            for id in 1..=self.shape.data_nodes {
                let _ = Command::new("umount").arg(self.dir.join(format!("node-{id}"))).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The bank table: `accounts(id i64, balance i64)`.
pub fn accounts_def(partitions: u32) -> client::TableDef {
    use client::{Column, ColumnType, TableDef};
    TableDef {
        name: "accounts".into(),
        columns: vec![
            Column { name: "id".into(), ty: ColumnType::I64, nullable: false },
            Column { name: "balance".into(), ty: ColumnType::I64, nullable: false },
            Column { name: "note".into(), ty: ColumnType::Varchar { max: 32 }, nullable: true },
        ],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(partitions),
        read_backup: false,
        indexes: Vec::new(),
    }
}

/// Whether this machine has an RDMA device (in the rxe rig, `RXE_VM=1`, it must).
pub fn rdma_device_here() -> bool {
    let found = std::fs::read_dir("/sys/class/infiniband").map(|d| d.count() > 0).unwrap_or(false);
    if !found {
        assert!(
            std::env::var("RXE_VM").map_or(true, |v| v != "1"),
            "in the rxe rig without an RDMA device"
        );
        eprintln!("skipped: no RDMA device here (the rxe rig runs this test)");
    }
    found
}
