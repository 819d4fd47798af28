//! The engine cluster the engine benchmarks (`kv`, `scan`) run on, one per transport: a
//! generated cluster file with two data nodes (one node group, two replicas) and one API node,
//! every link of that transport; two data-node processes (`blockwire-datanode` beside this
//! binary, else this binary's own engine node, `kv-node`), pinned where the placement says;
//! and this process joined as the API node, with one session for the benchmark to drive.
//!
//! A spec with a `data_dir` root gives each data node a directory under it (`node-1`,
//! `node-2`) and places the checkpoint block: the cluster keeps its data on disk, and
//! [`run_on_cluster_nodes`] lets a benchmark kill both data nodes and start them again from
//! their files (`blockwire-bench commit`).
//!
//! Invariant: the data-node processes are killed and waited for, and the run's directory is
//! removed, when a transport's run ends, however it ends (a `data_dir` root is the caller's).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use client::{Cluster, ConnectOptions, Session};

use crate::{procstat, topology, Transport, TRANSPORTS};

/// The API node (this process).
pub const API_NODE: u32 = 100;

/// The second API node of a spec with `writer`.
pub const WRITER_NODE: u32 = 101;
/// Stderr lines of a data node kept for an error report.
const TAIL_LINES: usize = 30;
/// The checkpoint block's `gcp_interval_ms` unless a benchmark asks for another (the engine's
/// default).
pub const GCP_INTERVAL_MS: u64 = 100;
/// Data-node stderr lines kept with the time they arrived: restore reports and readiness.
const NOTABLE: [&str; 3] = ["the node serves", "storage restored", "every partition of this instance copied"];
/// Bytes of storage memory a row may take, for sizing `memory_bytes` (a row of `kv` costs
/// about 140, one of `scan`'s with its index entry about 220).
const ROW_BUDGET_BYTES: u64 = 512;

/// `memory_bytes` for a storage block that will hold `rows` rows (every row has a replica on
/// both data nodes, so each storage block holds them all): at least the engine's default.
pub fn memory_bytes_for(rows: u64) -> u64 {
    rows.saturating_mul(ROW_BUDGET_BYTES).clamp(256 << 20, 1 << 40)
}

/// What the engine benchmarks return: an error is a message for the user.
pub type R<T> = Result<T, String>;

/// A client error as a message naming what failed.
pub fn client_error(what: &str) -> impl Fn(client::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Where the driver and the data nodes run.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// This process: the client and its links.
    pub driver: usize,
    /// Data nodes 1 and 2.
    pub nodes: [usize; 2],
}

impl Placement {
    /// The placement `--cpus` asks for: the driver and both data nodes, or the driver, data
    /// node 1 and data node 2; by default two CPUs on separate cores as the kernel's topology
    /// shows them, the data nodes sharing the second; `None` (unpinned) with one CPU.
    pub fn from_args(cpus: Option<&[usize]>) -> R<Option<Placement>> {
        Ok(match cpus {
            Some(&[driver, nodes]) => Some(Placement { driver, nodes: [nodes, nodes] }),
            Some(&[driver, one, two]) => Some(Placement { driver, nodes: [one, two] }),
            Some(_) => return Err("--cpus takes two or three CPU numbers".into()),
            None if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 => {
                let (driver, nodes) = topology::default_cpus();
                Some(Placement { driver, nodes: [nodes, nodes] })
            }
            None => None,
        })
    }

    /// The header's line on where everything runs.
    pub fn describe(placement: Option<Placement>) -> String {
        match placement {
            Some(Placement { driver, nodes: [one, two] }) if one == two => format!(
                "cpus {driver} (driver, this process) and {one} (data nodes 1 and 2): {}, as \
                 the kernel's topology shows them",
                topology::relation(driver, one)
            ),
            Some(Placement { driver, nodes: [one, two] }) => format!(
                "cpus {driver} (driver, this process), {one} (data node 1) and {two} (data node \
                 2); driver and data node 1: {}; driver and data node 2: {}; data nodes 1 and \
                 2: {}; as the kernel's topology shows them",
                topology::relation(driver, one),
                topology::relation(driver, two),
                topology::relation(one, two)
            ),
            None => "cpus: not pinned (one CPU)".into(),
        }
    }
}

/// The transports `asked` (default tcp and shm), each once, or why one cannot run here.
pub fn transports(command: &str, asked: &[Transport]) -> R<Vec<Transport>> {
    let asked = if asked.is_empty() { &[Transport::Tcp, Transport::Shm][..] } else { asked };
    let mut out = Vec::new();
    for &t in asked {
        if t == Transport::Local {
            return Err(format!(
                "{command} runs data nodes as processes: --transport tcp, shm or rdma"
            ));
        }
        if !TRANSPORTS.contains(&t) {
            return Err(format!("transport {} is not available in this build", t.name()));
        }
        crate::check_transport(t)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// What runs a data node.
#[derive(Clone, Debug)]
pub enum Program {
    /// A `blockwire-datanode` binary.
    Datanode(PathBuf),
    /// This binary's `kv-node`.
    Own(PathBuf),
}

impl Program {
    /// `given`, else `blockwire-datanode` beside this binary, else this binary's `kv-node`.
    pub fn find(given: Option<&Path>) -> R<Program> {
        if let Some(path) = given {
            if !path.is_file() {
                return Err(format!("--datanode {}: no such file", path.display()));
            }
            return Ok(Program::Datanode(path.to_path_buf()));
        }
        if let Some(path) = crate::stack::sibling_datanode() {
            return Ok(Program::Datanode(path));
        }
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
        Ok(Program::Own(exe))
    }

    /// The program, as the header names it.
    pub fn name(&self) -> String {
        match self {
            Program::Datanode(path) => path.display().to_string(),
            Program::Own(_) => "blockwire-bench kv-node (no blockwire-datanode beside it)".into(),
        }
    }

    /// The data-node processes, as a transport's table names them.
    pub fn peer(&self) -> &'static str {
        match self {
            Program::Datanode(_) => "blockwire-datanode",
            Program::Own(_) => "blockwire-bench kv-node",
        }
    }

    fn command(&self, config: &Path, id: u32) -> Command {
        let mut c = match self {
            Program::Datanode(path) => Command::new(path),
            Program::Own(exe) => {
                let mut c = Command::new(exe);
                c.arg("kv-node");
                c
            }
        };
        c.args(["--config".as_ref(), config.as_os_str()]).args(["--node-id", &id.to_string()]);
        c
    }
}

/// `blockwire-bench kv-node`: data node `node_id` of the cluster file with the engine's blocks,
/// as `blockwire-datanode` runs it, until stdin ends or the process is killed.
pub fn engine_node(config: &Path, node_id: u64) -> R<()> {
    let engine = engine::Engine::new();
    let (config, layout) = engine::load_config(&engine, config).map_err(|e| e.to_string())?;
    if let Some(layout) = &layout {
        // Its data directory, as blockwire-datanode makes it ready (never with --initial).
        engine::prepare_node(layout, node_id, false).map_err(|e| e.to_string())?;
    }
    let node =
        node::DataNode::start(&config, node_id, &engine.kinds()).map_err(|e| e.to_string())?;
    // What the parent waits for (blockwire-datanode logs the same words).
    eprintln!("data node running");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    node.stop().map_err(|e| e.to_string())
}

fn free_port() -> R<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("no free port: {e}"))
}

/// One transport's cluster: what the generated file says and where its data nodes run.
#[derive(Debug)]
pub struct ClusterSpec<'a> {
    /// The subcommand (names the run's directory and the file's comment).
    pub command: &'static str,
    /// Every link's transport.
    pub transport: Transport,
    /// Spin time of the data nodes' threads and links and of the client's waits.
    pub spin_us: u64,
    /// Storage memory of each storage block (`memory_bytes`).
    pub memory_bytes: u64,
    /// The dictionary's `default_partitions`.
    pub partitions: u32,
    /// The client's timeout for one answer.
    pub timeout: Duration,
    /// What runs a data node.
    pub program: &'a Program,
    /// CPUs of data nodes 1 and 2 (unpinned when `None`).
    pub nodes_cpus: Option<[usize; 2]>,
    /// Keep the data on disk: data node N's `data_dir` is `node-N` under this root, and the
    /// checkpoint block is placed (`None`: in memory only).
    pub data_dir: Option<PathBuf>,
    /// The checkpoint block's `gcp_interval_ms` (with a `data_dir` only).
    pub gcp_interval_ms: u64,
    /// A second API node, [`WRITER_NODE`], linked to both data nodes (a writer thread of the
    /// bench joins as it: see [`DataNodes::config`]).
    pub writer: bool,
}

/// `path` as a TOML basic string, quotes included.
fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The cluster file: data nodes 1 and 2 (one node group of two replicas) and API node
/// [`API_NODE`], every pair linked by the spec's transport; one block thread per data node
/// that receives too; the engine's blocks and the echo block `ping`; with a `data_dir` root,
/// each data node's directory under it and the checkpoint block.
fn cluster_text(spec: &ClusterSpec<'_>, ports: [u16; 4]) -> String {
    let (transport, spin_us) = (spec.transport.name(), spec.spin_us);
    let mut s = format!(
        "# Generated by blockwire-bench {} for one run.\ncluster_id = {}\n",
        spec.command,
        2000 + std::process::id() % 1_000_000
    );
    for (id, kind, port) in [(1, "data", ports[0]), (2, "data", ports[1])]
        .into_iter()
        .chain([(API_NODE, "api", ports[2])])
        .chain(spec.writer.then_some((WRITER_NODE, "api", ports[3])))
    {
        s += &format!(
            "\n[[nodes]]\nid = {id}\nkind = \"{kind}\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        );
        if let (Some(root), "data") = (&spec.data_dir, kind) {
            s += &format!("data_dir = {}\n", toml_string(&root.join(format!("node-{id}"))));
        }
    }
    let writer = if spec.writer { vec![[1, WRITER_NODE], [2, WRITER_NODE]] } else { Vec::new() };
    for pair in [[1, 2], [1, API_NODE], [2, API_NODE]].into_iter().chain(writer) {
        s += &format!(
            "\n[[links]]\nnodes = [{}, {}]\ntransport = \"{transport}\"\nring_bytes = 4194304\n\
             spin_time_us = {spin_us}\n",
            pair[0], pair[1]
        );
    }
    s += &format!("\n[threads]\ncount = 1\nreceive = 0\nspin_time_us = {spin_us}\n");
    s += &format!(
        "\n[[blocks]]\nkind = \"dictionary\"\nreplicas = 2\ndefault_partitions = {}\n",
        spec.partitions
    );
    s += &format!("\n[[blocks]]\nkind = \"storage\"\nmemory_bytes = {}\n", spec.memory_bytes);
    s += "\n[[blocks]]\nkind = \"coordinator\"\n\n[[blocks]]\nkind = \"membership\"\n\n[[blocks]]\nkind = \"ping\"\n";
    if spec.data_dir.is_some() {
        s += &format!(
            "\n[[blocks]]\nkind = \"checkpoint\"\ngcp_interval_ms = {}\n",
            spec.gcp_interval_ms
        );
    }
    s
}

/// Starts the cluster of `spec`, joins it as the API node, runs `measure` with a session and
/// the data nodes' process ids, and stops the cluster. An error names a data node that exited
/// (with the end of its stderr) when one did.
pub fn run_on_cluster<T>(
    spec: &ClusterSpec<'_>,
    measure: impl FnOnce(&mut Session<'_>, &[u32]) -> R<T>,
) -> R<T> {
    run_on_cluster_nodes(spec, |s, nodes| measure(s, &nodes.pids()))
}

/// As [`run_on_cluster`], with the data nodes themselves (to kill and restart them).
pub fn run_on_cluster_nodes<T>(
    spec: &ClusterSpec<'_>,
    measure: impl FnOnce(&mut Session<'_>, &mut DataNodes) -> R<T>,
) -> R<T> {
    let t = spec.transport;
    let dir = std::env::temp_dir().join(format!(
        "blockwire-bench-{}-{}-{}",
        spec.command,
        std::process::id(),
        t.name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let text = cluster_text(spec, [free_port()?, free_port()?, free_port()?, free_port()?]);
    let path = dir.join("cluster.toml");
    if let Err(e) = std::fs::write(&path, text) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    let mut nodes = DataNodes::start(dir, spec.program, path.clone(), spec.nodes_cpus)?;
    let options = ConnectOptions {
        api_node: Some(u64::from(API_NODE)),
        connect_timeout: Duration::from_secs(30),
        timeout: spec.timeout,
        spin: Duration::from_micros(spec.spin_us),
    };
    let mut cluster =
        Cluster::connect(&path, options).map_err(|e| nodes.explain("joining the cluster", e))?;
    let mut s = cluster.session().map_err(|e| nodes.explain("session", e))?;
    let measured = measure(&mut s, &mut nodes).map_err(|e| nodes.explain(t.name(), e));
    let measured = measured.and_then(|m| nodes.check_alive().map(|()| m));
    drop(s);
    drop(cluster);
    measured
}

/// One data-node process and the end of its stderr.
#[derive(Debug)]
struct NodeProcess {
    id: u32,
    child: Child,
    /// When it was started.
    spawned: Instant,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Its stderr lines holding one of [`NOTABLE`], with when each arrived.
    notable: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<JoinHandle<()>>,
    ready: mpsc::Receiver<()>,
}

/// The run's data nodes and directory; both go when dropped.
#[derive(Debug)]
pub struct DataNodes {
    dir: PathBuf,
    program: Program,
    config: PathBuf,
    cpus: Option<[usize; 2]>,
    nodes: Vec<NodeProcess>,
}

impl DataNodes {
    /// Starts data nodes 1 and 2 of the file at `config` (pinned to `cpus` when given) and
    /// waits until both run.
    fn start(
        dir: PathBuf,
        program: &Program,
        config: PathBuf,
        cpus: Option<[usize; 2]>,
    ) -> R<DataNodes> {
        let mut nodes =
            DataNodes { dir, program: program.clone(), config, cpus, nodes: Vec::new() };
        nodes.spawn_all()?;
        Ok(nodes)
    }

    /// The cluster file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// SIGKILLs both data nodes (no stop, no flush: a power cut to the processes) and waits
    /// for them to be gone.
    pub fn kill_all(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
        }
        for mut n in self.nodes.drain(..) {
            let _ = n.child.wait();
            if let Some(reader) = n.reader.take() {
                let _ = reader.join();
            }
        }
    }

    /// Starts data nodes 1 and 2 again with the same file (from their data directories, when
    /// they have them) and waits until both run.
    pub fn restart(&mut self) -> R<()> {
        self.kill_all();
        self.spawn_all()
    }

    /// SIGKILLs data node `id` alone and waits for it to be gone.
    pub fn kill_node(&mut self, id: u32) -> R<()> {
        let at = self.nodes.iter().position(|n| n.id == id).ok_or_else(|| format!("data node {id} is not running"))?;
        let mut n = self.nodes.remove(at);
        let _ = n.child.kill();
        let _ = n.child.wait();
        if let Some(reader) = n.reader.take() {
            let _ = reader.join();
        }
        Ok(())
    }

    /// Starts data node `id` again (it was killed), without waiting for it: a restarted node
    /// of a running cluster copies its partitions and then serves.
    pub fn start_node(&mut self, id: u32) -> R<()> {
        if self.nodes.iter().any(|n| n.id == id) {
            return Err(format!("data node {id} runs already"));
        }
        let cpu = self.cpus.map(|c| c[usize::from(id != 1)]);
        let node = self.spawn(id, cpu)?;
        self.nodes.push(node);
        Ok(())
    }

    /// Per data node, the stderr lines since it was started holding `pattern` (one of
    /// [`NOTABLE`]), each with the time from its start; empty when its program does not log
    /// (this binary's `kv-node`).
    pub fn notable(&self, pattern: &str) -> Vec<Vec<(Duration, String)>> {
        debug_assert!(NOTABLE.contains(&pattern), "{pattern:?} is not kept");
        self.nodes
            .iter()
            .map(|n| {
                let lines = n.notable.lock().unwrap_or_else(PoisonError::into_inner);
                lines
                    .iter()
                    .filter(|(_, l)| l.contains(pattern))
                    .map(|(at, l)| (at.saturating_duration_since(n.spawned), l.clone()))
                    .collect()
            })
            .collect()
    }

    /// Starts data nodes 1 and 2 and waits until both run.
    fn spawn_all(&mut self) -> R<()> {
        for (i, id) in [1, 2].into_iter().enumerate() {
            let node = self.spawn(id, self.cpus.map(|c| c[i]))?;
            self.nodes.push(node);
        }
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            match node.ready.recv_timeout(Duration::from_secs(30)) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("data node {} did not start within 30 s", node.id))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Its stderr ended: it exited (or is about to).
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline {
                        self.check_alive()?;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return Err(format!("data node {} closed its stderr", self.nodes[i].id));
                }
            }
        }
        Ok(())
    }

    /// Starts data node `id` (pinned to `cpu` when given) with a thread reading its stderr.
    fn spawn(&self, id: u32, cpu: Option<usize>) -> R<NodeProcess> {
        let mut command = self.program.command(&self.config, id);
        command
            .env("RUST_LOG", "warn,node=info,engine=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cpu) = cpu {
            procstat::pin_child(&mut command, cpu);
        }
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start data node {id} ({}): {e}", self.program.name()))?;
        let stderr = child.stderr.take();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let notable = Arc::new(Mutex::new(Vec::new()));
        let (tx, ready) = mpsc::channel();
        let (kept, noted) = (tail.clone(), notable.clone());
        let reader = std::thread::spawn(move || {
            let Some(stderr) = stderr else { return };
            let mut told = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !told && line.contains("data node running") {
                    told = tx.send(()).is_ok();
                }
                if NOTABLE.iter().any(|p| line.contains(p)) {
                    let mut n = noted.lock().unwrap_or_else(PoisonError::into_inner);
                    n.push((Instant::now(), line.clone()));
                }
                // A panic, and a suspicion of a peer (with its reason: a missed heartbeat or a
                // link's hang-up), are worth seeing when a run fails.
                if line.contains("panicked") || line.contains("suspected dead") {
                    eprintln!("[data node {id}] {line}");
                }
                let mut t = kept.lock().unwrap_or_else(PoisonError::into_inner);
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Ok(NodeProcess { id, child, spawned, tail, notable, reader: Some(reader), ready })
    }

    /// The process ids of data nodes 1 and 2.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.child.id()).collect()
    }

    /// An error when a data node has exited, with the end of its stderr.
    pub fn check_alive(&mut self) -> R<()> {
        for n in &mut self.nodes {
            if let Ok(Some(status)) = n.child.try_wait() {
                // The reader ends with the pipe: join it so the tail is complete.
                if let Some(reader) = n.reader.take() {
                    let _ = reader.join();
                }
                let tail = n.tail.lock().unwrap_or_else(PoisonError::into_inner);
                let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
                return Err(format!(
                    "data node {} exited early ({status}); the end of its stderr:\n{}",
                    n.id,
                    lines.join("\n")
                ));
            }
        }
        Ok(())
    }

    /// `e` from `what`, or the exit of a data node when one has exited (the likelier cause).
    fn explain(&mut self, what: &str, e: impl std::fmt::Display) -> String {
        match self.check_alive() {
            Err(exited) => format!("{what}: {e}\n{exited}"),
            Ok(()) => format!("{what}: {e}"),
        }
    }
}

impl Drop for DataNodes {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The options every engine benchmark shares: placement, spinning, the data-node binary and
/// where histograms go.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// CPUs of the driver (this process) and of both data nodes, e.g. 0,1, or of the driver,
    /// data node 1 and data node 2, e.g. 0,1,2 (default: two CPUs on separate cores as the
    /// kernel's topology shows them, the data nodes sharing the second; unpinned with one CPU).
    #[arg(long, value_delimiter = ',', num_args = 1..=3)]
    pub cpus: Option<Vec<usize>>,
    /// Spin time before sleeping, in microseconds: the data nodes' threads and links, and the
    /// client's waits.
    #[arg(long, default_value_t = 50)]
    pub spin_us: u64,
    /// The data-node binary (default: blockwire-datanode next to this binary, else this
    /// binary's own engine node in a child process).
    #[arg(long)]
    pub datanode: Option<PathBuf>,
    /// Directory to write one `.hgrm` file per latency case into.
    #[arg(long)]
    pub hgrm_dir: Option<PathBuf>,
}
