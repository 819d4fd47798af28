//! A block kind defined outside the node crate: declared with its own protocol, configured from
//! a cluster file (its settings checked and named by key), started by `DataNode::start`; a
//! clash of its protocol with the system one refused at start; and node events from a real
//! link, in order, after the peer comes up and after it is SIGKILLed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, inst, Probe, PROBE, WAIT};
use node::config::Config;
use node::runtime::failrep_reason;
use node::{BlockEnv, BlockKind, Context, DataNode, DataNodeError, InitContext, Kinds, Settings};
use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId, Protocol, Signal, SignalView};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AddReq {
    add: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AddConf {
    value: u32,
    instance: u32,
}

signals::protocol! {
    /// The counter kind's protocol.
    pub protocol COUNTER = "test-counter" {
        /// Adds to the counter.
        ADD_REQ = 1300 => AddReq;
        /// The new value.
        ADD_CONF = 1301 => AddConf;
    }
}

signals::protocol! {
    pub protocol CLASHES = "test-clashes" {
        NOT_PING = 2;
    }
}

const COUNTER_BLOCK: BlockNumber = BlockNumber(300);

#[derive(Debug)]
struct Counter {
    value: u32,
}

impl node::Block for Counter {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            ADD_REQ => {
                let Some(req) = ctx.typed::<AddReq>(s) else { return };
                self.value += req.add;
                let conf = AddConf { value: self.value, instance: u32::from(ctx.me().instance.0) };
                let _ = ctx.send(&Signal::typed(ctx.me(), s.sender(), &conf));
            }
            gsn::START_ORD | gsn::STOP_REQ => {}
            _ => ctx.unhandled(s),
        }
    }
}

#[derive(Debug)]
struct CounterKind {
    protocols: &'static [&'static Protocol],
}

impl BlockKind for CounterKind {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn number(&self) -> BlockNumber {
        COUNTER_BLOCK
    }
    fn protocols(&self) -> &'static [&'static Protocol] {
        self.protocols
    }
    fn make(
        &self,
        settings: &mut Settings<'_>,
        env: &BlockEnv,
    ) -> Result<Box<dyn node::Block>, node::config::ConfigError> {
        let start = settings.u64("start_value", 0, 0, 1000)?;
        let _memory = settings.bytes("memory_bytes", 1 << 20, 4096, 1 << 30)?;
        Ok(Box::new(Counter { value: start as u32 + u32::from(env.instance.0) * 1000 }))
    }
}

static COUNTER_PROTOCOLS: [&Protocol; 1] = [&COUNTER];
static CLASHING_PROTOCOLS: [&Protocol; 1] = [&CLASHES];

fn kinds() -> Kinds {
    Kinds::system().with(Arc::new(CounterKind { protocols: &COUNTER_PROTOCOLS })).unwrap()
}

fn cluster(blocks: &str, port: u16) -> String {
    format!(
        r#"
cluster_id = 77
[[nodes]]
id = 1
kind = "data"
host = "127.0.0.1"
port = {port}
[threads]
count = 2
[[blocks]]
kind = "ping"
{blocks}
"#
    )
}

fn port() -> u16 {
    free_port()
}

#[test]
fn a_kind_from_a_test_crate_runs_from_a_cluster_file() {
    let blocks = "[[blocks]]\nkind = \"counter\"\ninstances = 2\nthreads = [0, 1]\nstart_value = 5\nmemory_bytes = \"64M\"\n";
    let config =
        Config::parse_with(&cluster(blocks, port()), Path::new("k.toml"), &kinds()).unwrap();
    assert_eq!(config.blocks.len(), 3);
    let (tx, rx) = mpsc::channel();
    let mut builder = DataNode::builder(&config, 1, &kinds()).unwrap();
    let probe = builder.node().place(1, PROBE, inst(0), Box::new(Probe { tx })).unwrap();
    let data_node = builder.start().unwrap();
    assert!(data_node.node().wait_started(WAIT));
    assert!(
        data_node.node().protocols().spec(ADD_REQ).is_some(),
        "the kind's protocol is registered"
    );
    let me = NodeId::MIN;
    for instance in [0u8, 1] {
        let to = BlockRef::new(me, COUNTER_BLOCK, BlockInstance(instance));
        let add = AddReq { add: 3 };
        data_node.node().inject(&Signal::typed(probe, to, &add), WAIT).unwrap();
        let seen = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(seen.gsn, ADD_CONF);
        assert_eq!(seen.data, vec![8 + u32::from(instance) * 1000, u32::from(instance)]);
    }
    // A request of the wrong length is a counted drop; the block keeps serving.
    let to = BlockRef::new(me, COUNTER_BLOCK, BlockInstance(0));
    data_node.node().inject(&Signal::new(ADD_REQ, probe, to).data(&[1, 2]), WAIT).unwrap();
    data_node.node().inject(&Signal::typed(probe, to, &AddReq { add: 1 }), WAIT).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap().data, vec![9, 0]);
    let dropped: u64 =
        data_node.node().stats().threads().iter().map(|t| t.snapshot().signals_dropped).sum();
    assert_eq!(dropped, 1);
    data_node.stop().unwrap();
}

#[test]
fn a_kinds_settings_are_checked_by_key() {
    let refused = |blocks: &str| {
        Config::parse_with(&cluster(blocks, 1), Path::new("k.toml"), &kinds()).unwrap_err()
    };
    let e = refused("[[blocks]]\nkind = \"counter\"\nstart_value = 5000\n");
    assert_eq!(e.key(), Some("blocks[1].start_value"), "{e}");
    let e = refused("[[blocks]]\nkind = \"counter\"\nmemory_bytes = \"lots\"\n");
    assert_eq!(e.key(), Some("blocks[1].memory_bytes"), "{e}");
    let e = refused("[[blocks]]\nkind = \"counter\"\nstart_valu = 1\n");
    assert_eq!(e.key(), Some("blocks[1].start_valu"), "{e}");
    assert!(e.to_string().contains("start_value"), "names the settings it has: {e}");
    let e = refused("[[blocks]]\nkind = \"counter\"\ninstances = 2\nthreads = [0]\n");
    assert_eq!(e.key(), Some("blocks[1].threads"), "{e}");
    let e = refused("[[blocks]]\nkind = \"counter\"\ninstances = 2\nthreads = [0, 2]\n");
    assert_eq!(e.key(), Some("blocks[1].threads[1]"), "{e}");
    let e = refused("[[blocks]]\nkind = \"storage\"\n");
    assert_eq!(e.key(), Some("blocks[1].kind"), "{e}");
    assert!(e.to_string().contains("counter"), "{e}");
    // The system kinds alone do not know "counter".
    let e = Config::parse(&cluster("[[blocks]]\nkind = \"counter\"\n", 1), Path::new("k.toml"))
        .unwrap_err();
    assert_eq!(e.key(), Some("blocks[1].kind"));
}

#[test]
fn a_kind_whose_protocol_clashes_is_refused_at_start_naming_both() {
    let kinds =
        Kinds::system().with(Arc::new(CounterKind { protocols: &CLASHING_PROTOCOLS })).unwrap();
    let config = Config::parse_with(
        &cluster("[[blocks]]\nkind = \"counter\"\n", port()),
        Path::new("k.toml"),
        &kinds,
    )
    .unwrap();
    let e = DataNode::start(&config, 1, &kinds).unwrap_err();
    assert!(matches!(e, DataNodeError::Assemble(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("NOT_PING") && text.contains("test-clashes"), "{text}");
    assert!(text.contains("PING_REQ") && text.contains("system"), "{text}");
    let _ = NOT_PING;
}

/// Forwards node events to the test.
#[derive(Debug)]
struct Watcher {
    seen: Arc<Mutex<mpsc::Sender<(signals::Gsn, u32, String)>>>,
}

impl node::Block for Watcher {
    fn init(&mut self, init: &mut InitContext<'_>) {
        init.subscribe_node_events();
    }
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::NODE_CONNECTED | gsn::NODE_FAILREP => {
                let node = s.data().first().copied().unwrap_or(0);
                let seen = self.seen.lock().unwrap();
                let _ = seen.send((s.gsn(), node, failrep_reason(s)));
            }
            gsn::START_ORD | gsn::STOP_REQ => {}
            _ => ctx.unhandled(s),
        }
    }
}

#[test]
fn node_events_arrive_in_order_after_a_link_comes_up_and_after_the_peer_is_killed() {
    let (p1, p2) = (port(), port());
    let text = format!(
        r#"
cluster_id = 78
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
[[links]]
nodes = [1, 2]
transport = "tcp"
[[blocks]]
kind = "ping"
"#
    );
    let dir = std::env::temp_dir().join(format!("blockwire-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cluster.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::parse(&text, &path).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut builder = DataNode::builder(&config, 1, &Kinds::system()).unwrap();
    let watcher = Watcher { seen: Arc::new(Mutex::new(tx)) };
    builder.node().place(0, PROBE, inst(0), Box::new(watcher)).unwrap();
    let one = builder.start().unwrap();
    let mut peer = Command::new(env!("CARGO_BIN_EXE_blockwire-node"))
        .args(["--config", path.to_str().unwrap(), "--node-id", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = rx.recv_timeout(WAIT).expect("NODE_CONNECTED");
    assert_eq!((up.0, up.1), (gsn::NODE_CONNECTED, 2));
    peer.kill().unwrap();
    let _ = peer.wait();
    let down = rx.recv_timeout(WAIT).expect("NODE_FAILREP");
    assert_eq!((down.0, down.1), (gsn::NODE_FAILREP, 2));
    assert!(!down.2.is_empty(), "the reason travels with it");
    // Nothing else arrives while node 2 stays dead (reconnects fail without a new event).
    let until = Instant::now() + Duration::from_millis(300);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Ok(extra) = rx.recv_timeout(left) {
            assert_ne!(extra.0, gsn::NODE_CONNECTED, "no link to a dead node: {extra:?}");
        }
    }
    one.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
