//! Multi-process engine clusters for the client's tests: a cluster file with free ports, data
//! nodes as `blockwire-datanode` processes (killed when the cluster is dropped), and API nodes
//! for the test's sessions.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use client::{Cluster, ConnectOptions};

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The data-node binary beside this test's binary (built by `cargo test --workspace`).
pub fn datanode_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("blockwire-datanode");
    assert!(bin.exists(), "{} is missing: build it (cargo build -p blockwire-engine)", bin.display());
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
    pub threads: u32,
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
            threads: 1,
        }
    }
}

/// The cluster file text for `shape`: data nodes 1..=n, API nodes 100.., every pair linked.
pub fn cluster_file(shape: &Shape) -> String {
    let mut s = String::from("cluster_id = 7\n");
    let data: Vec<u32> = (1..=shape.data_nodes).collect();
    let api: Vec<u32> = (100..100 + shape.api_nodes).collect();
    for id in data.iter().chain(&api) {
        let kind = if *id < 100 { "data" } else { "api" };
        s += &format!("[[nodes]]\nid = {id}\nkind = \"{kind}\"\nhost = \"127.0.0.1\"\nport = {}\n", free_port());
    }
    for (i, a) in data.iter().enumerate() {
        for b in data[i + 1..].iter().chain(&api) {
            s += &format!("[[links]]\nnodes = [{a}, {b}]\ntransport = \"{}\"\nspin_time_us = 0\n", shape.transport);
        }
    }
    let threads: Vec<String> = (0..shape.threads).map(|t| t.to_string()).collect();
    s += &format!("[threads]\ncount = {}\nreceive = 0\nspin_time_us = 0\n", shape.threads);
    s += &format!("[[blocks]]\nkind = \"dictionary\"\nreplicas = {}\ndefault_partitions = 8\n", shape.replicas);
    let storage_threads: Vec<String> =
        (0..shape.storage_instances).map(|i| threads[i as usize % threads.len()].clone()).collect();
    s += &format!(
        "[[blocks]]\nkind = \"storage\"\ninstances = {}\nthreads = [{}]\n{}\n",
        shape.storage_instances,
        storage_threads.join(", "),
        shape.storage
    );
    s += &format!("[[blocks]]\nkind = \"coordinator\"\n{}\n", shape.coordinator);
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
}

impl TestCluster {
    /// Writes the cluster file for `shape` and starts every data node.
    pub fn start(name: &str, shape: Shape) -> TestCluster {
        let dir = std::env::temp_dir().join(format!("blockwire-client-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.toml");
        std::fs::write(&path, cluster_file(&shape)).unwrap();
        let mut cluster = TestCluster { dir, path, shape: shape.clone(), nodes: Vec::new() };
        for id in 1..=shape.data_nodes {
            cluster.start_node(id);
        }
        cluster
    }

    /// Starts data node `id` and waits until it runs.
    pub fn start_node(&mut self, id: u32) {
        let mut child = Command::new(datanode_binary())
            .args(["--config", self.path.to_str().unwrap(), "--node-id", &id.to_string()])
            .env("RUST_LOG", "warn,node=info,engine=info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("data node running") {
                    let _ = tx.send(());
                    sent = true;
                }
                if std::env::var_os("BLOCKWIRE_TEST_NODE_LOG").is_some() || line.contains("panicked") {
                    eprintln!("[node {id}] {line}");
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("data node did not start");
        self.nodes.push((id, child));
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
    }
}
