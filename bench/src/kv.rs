//! `blockwire-bench kv`: the engine's key-value operations through the client library, each
//! latency beside its ideal (the round trips the protocol needs by design times the bare round
//! trip, measured in the same run) and the throughput of one client thread.
//!
//! Per transport, on the cluster of [`crate::cluster`] (two data-node processes, one node group
//! of two replicas, this process joined as the API node), the run creates
//! `kv(k i64 key, v i64, pad varchar(16) nullable)` with 8 partitions, preloaded with
//! [`PRELOAD`] rows. Then:
//! - latency (HDR histograms in ns): the bare round trip (`Session::ping` to a data node's echo
//!   block), and one committed transaction of one operation and of a batch of [`BATCH`] for a
//!   committed read by primary key, an insert of fresh keys and an update of existing ones,
//!   each transaction hinted to its keys' primary node;
//! - throughput: 1, 16 and 256 transactions of [`BATCH`] operations in flight from this one
//!   thread (the asynchronous API), reads and updates.
//!
//! A batch's keys all have their primary on the coordinator's node, so a batch needs the round
//! trips of one of its operations (they run in parallel); transactions in flight at once never
//! share a key (no lock waits between them, no deadlocks). Latency cases go to one data node
//! [`RUN`] times in a row: the data nodes share a CPU by default (the driver has the other), and
//! a change of node then waits for a switch between their processes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{
    Column, ColumnType, Exec, LockMode, Outcome, Session, Table, TableDef, Transaction, Value,
};
use engine::Layout;
use hdrhistogram::Histogram;
use signals::NodeId;

use crate::cluster::{self, client_error, ClusterSpec, Placement, Program, API_NODE, R};
use crate::report::{self, latency_case, verdict, LatencyRow};
use crate::Transport;

/// Operations per transaction in the batch cases and the throughput cases.
const BATCH: usize = 16;
/// Transactions in flight in the throughput cases.
const IN_FLIGHT: [usize; 3] = [1, 16, 256];
/// Rows inserted before measuring (keys `0..PRELOAD`): the reads' and updates' keys.
const PRELOAD: i64 = 16_384;
/// Latency cases send this many transactions in a row to one data node before the next (the
/// bare round trip too): with both data nodes on one CPU, a change of node waits for a switch
/// between their processes, which is the placement's cost, not the transport's.
const RUN: u64 = 256;
/// Inserts per preloading transaction.
const PRELOAD_BATCH: i64 = 256;
/// Partitions of the table.
const PARTITIONS: u32 = 8;
/// What inserts put in `pad`: 16 bytes.
const PAD: &str = "blockwire-kv-pad";

/// The targets (shm, separate cores): p50 over the ideal p50.
const READ_RATIO_TARGET: f64 = 2.5;
const UPDATE_RATIO_TARGET: f64 = 3.0;
/// The targets: operations per second from one client thread.
const READS_PER_SECOND_TARGET: f64 = 1e6;
const UPDATES_PER_SECOND_TARGET: f64 = 3e5;

/// Arguments of `blockwire-bench kv`.
#[derive(Debug, clap::Args)]
pub struct KvArgs {
    /// Transports to measure, one after the other (repeat the option or give a list, e.g.
    /// tcp,shm; default tcp and shm; rdma only when asked).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub transport: Vec<Transport>,
    /// Measured transactions (round trips for the bare case) per latency case.
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    /// Transactions run and discarded before each latency case.
    #[arg(long, default_value_t = 2_000)]
    pub warmup: u64,
    /// Seconds of each throughput case.
    #[arg(long, default_value_t = 2.0)]
    pub throughput_seconds: f64,
    /// Where the data nodes run and how they wait.
    #[command(flatten)]
    pub engine: cluster::EngineArgs,
}

/// Runs `blockwire-bench kv`.
pub fn run(args: &KvArgs) -> R<()> {
    let transports = cluster::transports("kv", &args.transport)?;
    if args.ops == 0 {
        return Err("--ops must be at least 1".into());
    }
    if !(args.throughput_seconds.is_finite() && args.throughput_seconds > 0.0) {
        return Err(format!("--throughput-seconds {}: more than 0", args.throughput_seconds));
    }
    let program = Program::find(args.engine.datanode.as_deref())?;
    let cpus = Placement::from_args(args.engine.cpus.as_deref())?;
    print_header(args, &program, cpus);
    if let Some(p) = cpus {
        // The client's links (and their manager thread, started later) run here too.
        crate::pin(p.driver);
    }
    for t in transports {
        let measured = run_transport(args, t, &program, cpus.map(|p| p.nodes))?;
        print_transport(t, args, &program, &measured);
    }
    Ok(())
}

fn print_header(args: &KvArgs, program: &Program, cpus: Option<Placement>) {
    println!(
        "kv: table kv(k i64 key, v i64, pad varchar(16)), {PARTITIONS} partitions, 2 data nodes \
         in one node group (2 replicas), one client thread joined as API node {API_NODE}; data \
         nodes: {}; spin {} us",
        program.name(),
        args.engine.spin_us
    );
    println!(
        "ideal RTs: round trips by design: committed read 1 (client <-> coordinator on the key's \
         primary node, whose storage answers it locally); insert and update with 2 replicas 3 \
         (the client's round trip + prepare primary -> backup -> coordinator + commit \
         coordinator -> backup -> primary); a batch of {BATCH} the same (its operations run in \
         parallel). ideal p50 = ideal RTs x p50 of the bare round trip (ping to a data node's \
         echo block); ratio = p50 / ideal p50"
    );
    println!(
        "targets (the issue's, for shm between separate cores): committed read p50 within \
         {READ_RATIO_TARGET}x its ideal; two-replica update p50 within {UPDATE_RATIO_TARGET}x \
         its ideal; >= 1M primary-key reads/s and >= 300k two-replica updates/s from one client \
         thread"
    );
    println!(
        "every transaction is hinted to its keys' primary node; a batch's {BATCH} keys share \
         that primary; transactions in flight at once share no key; latency cases (the bare \
         round trip too) go to one data node {RUN} times in a row, then to the other"
    );
    println!("{}", Placement::describe(cpus));
}

/// The operation of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Insert,
    Update,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Insert => "insert",
            Op::Update => "update",
        }
    }

    /// Round trips by design with two replicas (see the header the run prints).
    fn ideal_round_trips(self) -> u32 {
        match self {
            Op::Read => 1,
            Op::Insert | Op::Update => 3,
        }
    }
}

/// The keys of a run: which data node holds each one's primary.
#[derive(Debug)]
struct Keys {
    table: Arc<Table>,
    layout: Arc<Layout>,
    /// Data nodes, in id order.
    nodes: Vec<NodeId>,
    /// Per data node (index into `nodes`): groups of [`BATCH`] preloaded keys whose primary it
    /// holds.
    groups: Vec<Vec<[i64; BATCH]>>,
    /// Per data node: the keys of its groups, in order.
    on_node: Vec<Vec<i64>>,
    /// The next key never inserted.
    next_fresh: i64,
    /// Fresh keys taken from `next_fresh` and not used yet, per data node of their primary.
    fresh: Vec<VecDeque<i64>>,
}

impl Keys {
    fn new(table: Arc<Table>, layout: Arc<Layout>) -> R<Keys> {
        let nodes = layout.data_nodes.clone();
        let mut keys = Keys {
            table,
            layout,
            groups: vec![Vec::new(); nodes.len()],
            on_node: Vec::new(),
            fresh: vec![VecDeque::new(); nodes.len()],
            nodes,
            next_fresh: PRELOAD,
        };
        let mut partial: Vec<Vec<i64>> = vec![Vec::new(); keys.nodes.len()];
        for k in 0..PRELOAD {
            let n = keys.primary(k)?;
            partial[n].push(k);
            if partial[n].len() == BATCH {
                let group: [i64; BATCH] = std::mem::take(&mut partial[n])
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("a group is BATCH keys"));
                keys.groups[n].push(group);
            }
        }
        keys.on_node = keys.groups.iter().map(|g| g.concat()).collect();
        let fewest = keys.groups.iter().map(Vec::len).min().unwrap_or(0);
        let most_in_flight = IN_FLIGHT.iter().copied().max().unwrap_or(1);
        if fewest < most_in_flight {
            return Err(format!(
                "{PRELOAD} keys give a data node only {fewest} groups of {BATCH} (need \
                 {most_in_flight})"
            ));
        }
        Ok(keys)
    }

    /// The index (into `nodes`) of the data node holding `k`'s primary.
    fn primary(&self, k: i64) -> R<usize> {
        let bytes = engine::row::encode_key(&self.table, &[Value::I64(k)])
            .map_err(|e| format!("key {k}: {e}"))?;
        let prefix =
            engine::row::check_key(&self.table, &bytes).map_err(|e| format!("key {k}: {e}"))?;
        let partition = engine::row::partition_of(&self.table, &bytes, prefix);
        let node = self.layout.replicas(partition).primary.node;
        self.nodes
            .iter()
            .position(|n| *n == node)
            .ok_or_else(|| format!("partition {partition}'s primary {node} is not a data node"))
    }

    /// A key never inserted whose primary is data node `n` (an index into `nodes`).
    fn fresh_on(&mut self, n: usize) -> R<i64> {
        loop {
            if let Some(k) = self.fresh[n].pop_front() {
                return Ok(k);
            }
            let k = self.next_fresh;
            self.next_fresh += 1;
            let at = self.primary(k)?;
            self.fresh[at].push_back(k);
        }
    }

    /// The data node (an index into `nodes`) of the `i`th transaction of a latency case.
    fn node_of(&self, i: u64) -> usize {
        ((i / RUN) % self.nodes.len() as u64) as usize
    }

    /// A preloaded key whose primary is data node `n`: the `i`th of a walk over all of them
    /// that spreads over the partitions.
    fn preloaded_on(&self, n: usize, i: u64) -> i64 {
        let keys = &self.on_node[n];
        keys[(i.wrapping_mul(7919) % keys.len() as u64) as usize]
    }
}

/// A transaction of `op` on `keys`, hinted to the first key's primary node.
fn define(s: &mut Session<'_>, table: &Arc<Table>, op: Op, keys: &[i64], v: i64) -> R<Transaction> {
    let first = keys.first().copied().unwrap_or(0);
    let mut tx = s.begin_hinted(table, &[Value::I64(first)]).map_err(client_error("begin"))?;
    for &k in keys {
        match op {
            Op::Read => tx.read(table, &[Value::I64(k)], LockMode::CommittedRead),
            Op::Insert => tx.insert(
                table,
                &[("k", Value::I64(k)), ("v", Value::I64(v)), ("pad", Value::Text(PAD.into()))],
            ),
            Op::Update => tx.update(table, &[Value::I64(k)], &[("v", Value::I64(v))]),
        }
        .map_err(client_error(op.name()))?;
    }
    Ok(tx)
}

/// Sends `tx` with its commit and waits for the answer; committed or an error.
fn commit(s: &mut Session<'_>, tx: &mut Transaction, op: Op) -> R<()> {
    match s.execute(tx, Exec::Commit).map_err(client_error(op.name()))? {
        Outcome::Committed => Ok(()),
        other => Err(format!("{} transaction ended {other:?}, not committed", op.name())),
    }
}

/// Inserts keys `0..PRELOAD`.
fn preload(s: &mut Session<'_>, table: &Arc<Table>) -> R<()> {
    let mut start = 0;
    while start < PRELOAD {
        let keys: Vec<i64> = (start..(start + PRELOAD_BATCH).min(PRELOAD)).collect();
        let mut tx = define(s, table, Op::Insert, &keys, 0)?;
        commit(s, &mut tx, Op::Insert).map_err(|e| format!("preloading: {e}"))?;
        start += PRELOAD_BATCH;
    }
    Ok(())
}

/// The `i`th transaction of a latency case: one operation, or a batch of [`BATCH`].
fn one_transaction(s: &mut Session<'_>, keys: &mut Keys, op: Op, batch: bool, i: u64) -> R<()> {
    let node = keys.node_of(i);
    let chosen: Vec<i64> = match (op, batch) {
        (Op::Insert, false) => vec![keys.fresh_on(node)?],
        (Op::Insert, true) => (0..BATCH).map(|_| keys.fresh_on(node)).collect::<R<_>>()?,
        (_, false) => vec![keys.preloaded_on(node, i)],
        (_, true) => {
            let groups = &keys.groups[node];
            groups[(i % groups.len() as u64) as usize].to_vec()
        }
    };
    let table = keys.table.clone();
    let mut tx = define(s, &table, op, &chosen, i as i64)?;
    commit(s, &mut tx, op)?;
    if op == Op::Read {
        // Every read has its operation number in order from 0.
        let mut missing = (0..chosen.len() as u32).filter(|&o| tx.row(client::OpId(o)).is_none());
        if let Some(o) = missing.next() {
            return Err(format!("the read of preloaded key {} found no row", chosen[o as usize]));
        }
    }
    Ok(())
}

/// Runs `in_flight` transactions of [`BATCH`] operations at once for `seconds` (on each
/// completion the next is sent); committed transactions per second.
fn throughput(s: &mut Session<'_>, keys: &Keys, op: Op, in_flight: usize, seconds: f64) -> R<f64> {
    let nodes = keys.nodes.len();
    // Slot `slot` sends its `k`th transaction to node (slot + k) % nodes, on group
    // slot + in_flight * j of that node: slots never share a group.
    let usable: Vec<usize> = keys.groups.iter().map(|g| g.len() / in_flight * in_flight).collect();
    let mut sent = vec![0u64; in_flight];
    let mut open: HashMap<u64, (usize, Transaction)> = HashMap::with_capacity(in_flight);
    let table = keys.table.clone();
    let mut send = |s: &mut Session<'_>,
                    open: &mut HashMap<u64, (usize, Transaction)>,
                    slot: usize|
     -> R<()> {
        let k = sent[slot];
        sent[slot] += 1;
        let node = (slot + k as usize) % nodes;
        let round = k as usize / nodes;
        let group = &keys.groups[node][(slot + in_flight * round) % usable[node]];
        let mut tx = define(s, &table, op, group, k as i64)?;
        s.send(&mut tx, Exec::Commit).map_err(client_error("send"))?;
        open.insert(tx.id(), (slot, tx));
        Ok(())
    };
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let give_up = end + Duration::from_secs(10);
    for slot in 0..in_flight {
        send(s, &mut open, slot)?;
    }
    let mut committed = 0u64;
    while !open.is_empty() {
        if Instant::now() > give_up {
            return Err(format!("{} transactions unanswered 10 s after the case", open.len()));
        }
        for c in s.poll(Duration::from_millis(10)) {
            let Some((slot, mut tx)) = open.remove(&c.tx) else { continue };
            match tx.absorb(c).map_err(client_error(op.name()))? {
                Outcome::Committed => {}
                other => return Err(format!("{} transaction ended {other:?}", op.name())),
            }
            if Instant::now() < end {
                committed += 1;
                send(s, &mut open, slot)?;
            }
        }
    }
    Ok(committed as f64 / seconds)
}

/// What one transport's run measured.
#[derive(Debug)]
struct Measured {
    /// The bare round trip, then each operation single and batched.
    latency: Vec<(LatencyRow, Option<Op>)>,
    /// (operation, in flight, transactions per second).
    throughput: Vec<(Op, usize, f64)>,
}

fn run_transport(
    args: &KvArgs,
    t: Transport,
    program: &Program,
    nodes_cpus: Option<[usize; 2]>,
) -> R<Measured> {
    // Rows: the preload, and every insert of the latency cases.
    let rows = PRELOAD as u64 + (args.warmup + args.ops) * (1 + BATCH as u64);
    let spec = ClusterSpec {
        command: "kv",
        transport: t,
        spin_us: args.engine.spin_us,
        memory_bytes: cluster::memory_bytes_for(rows),
        partitions: PARTITIONS,
        // Every call answers within microseconds: a data node that died is noticed soon.
        timeout: Duration::from_secs(10),
        program,
        nodes_cpus,
        data_dir: None,
        gcp_interval_ms: cluster::GCP_INTERVAL_MS,
        writer: false,
    };
    cluster::run_on_cluster(&spec, |s, _| measure(args, t, s))
}

fn measure(args: &KvArgs, t: Transport, s: &mut Session<'_>) -> R<Measured> {
    let table = s.create_table(&kv_def()).map_err(client_error("create table kv"))?;
    preload(s, &table)?;
    let mut keys = Keys::new(table, s.layout().clone())?;
    let mut latency = Vec::new();
    let mut row = |case: String, h: &Histogram<u64>, op| -> R<()> {
        if let Some(dir) = &args.engine.hgrm_dir {
            report::write_case_hgrm(dir, "kv_", &case, h)?;
        }
        latency.push((LatencyRow::from_histogram(&case, h), op));
        Ok(())
    };
    let (warmup, ops) = (args.warmup, args.ops);
    let ping = latency_case(warmup, ops, |i| {
        s.ping(keys.nodes[keys.node_of(i)]).map(|_| ()).map_err(client_error("ping"))
    })?;
    row(format!("{} bare round trip (ping)", t.name()), &ping, None)?;
    for batch in [false, true] {
        for op in [Op::Read, Op::Insert, Op::Update] {
            let h = latency_case(warmup, ops, |i| one_transaction(s, &mut keys, op, batch, i))?;
            let size = if batch { format!("batch of {BATCH}") } else { "1 op".into() };
            row(format!("{} {}, {size}", t.name(), op.name()), &h, Some(op))?;
        }
    }
    let mut rates = Vec::new();
    for op in [Op::Read, Op::Update] {
        for n in IN_FLIGHT {
            rates.push((op, n, throughput(s, &keys, op, n, args.throughput_seconds)?));
        }
    }
    Ok(Measured { latency, throughput: rates })
}

/// `kv(k i64 key, v i64, pad varchar(16) nullable)`.
fn kv_def() -> TableDef {
    key_value_def("kv", 16, true)
}

/// `name(k i64 key, v i64, pad varchar(pad_max))` in the benchmarks' partition count: the
/// shape of the kv and commit benchmarks' tables.
pub(crate) fn key_value_def(name: &str, pad_max: u32, pad_nullable: bool) -> TableDef {
    let column = |name: &str, ty, nullable| Column { name: name.into(), ty, nullable };
    TableDef {
        name: name.into(),
        columns: vec![
            column("k", ColumnType::I64, false),
            column("v", ColumnType::I64, false),
            column("pad", ColumnType::Varchar { max: pad_max }, pad_nullable),
        ],
        primary_key: vec!["k".into()],
        partition_key: None,
        partitions: Some(PARTITIONS),
        read_backup: false,
        indexes: Vec::new(),
    }
}

fn print_transport(t: Transport, args: &KvArgs, program: &Program, m: &Measured) {
    let peer = program.peer();
    println!();
    println!(
        "{}: data nodes 1 and 2 ({peer} processes), API node {API_NODE} (this process), every \
         link {}; {} ops per latency case after {} warm-up",
        t.name(),
        t.name(),
        args.ops,
        args.warmup
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}  target",
        "latency (us)",
        "count",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "ideal RTs",
        "ideal p50",
        "ratio"
    );
    let us = |ns: u64| format!("{:.2}", ns as f64 / 1000.0);
    let bare_p50 = m.latency.first().map_or(0, |(r, _)| r.percentiles_ns[0]);
    for (r, op) in &m.latency {
        let rts = op.map_or(1, Op::ideal_round_trips);
        let ideal = u64::from(rts) * bare_p50;
        let ratio = r.percentiles_ns[0] as f64 / ideal.max(1) as f64;
        let single = r.case.ends_with("1 op");
        let target = match op {
            Some(Op::Read) if single => {
                format!("<= {READ_RATIO_TARGET}x: {}", verdict(ratio <= READ_RATIO_TARGET))
            }
            Some(Op::Update) if single => {
                format!("<= {UPDATE_RATIO_TARGET}x: {}", verdict(ratio <= UPDATE_RATIO_TARGET))
            }
            _ => String::new(),
        };
        println!(
            "{:<44} {} {:>9} {:>9} {:>7}  {target}",
            r.case,
            r.cells(9),
            rts,
            us(ideal),
            format!("{ratio:.2}x")
        );
    }
    println!(
        "{:<44} {:>14} {:>12}  target",
        format!("throughput, {BATCH} ops per transaction"),
        "ops/s",
        "tx/s"
    );
    for &(op, n, tx_per_second) in &m.throughput {
        let ops = tx_per_second * BATCH as f64;
        let (target, name) = match op {
            Op::Update => (UPDATES_PER_SECOND_TARGET, "300k"),
            _ => (READS_PER_SECOND_TARGET, "1M"),
        };
        println!(
            "{:<44} {:>14.0} {:>12.0}  >= {name} ops/s: {} ({:.2} of it)",
            format!("{} {}, {n} in flight", t.name(), op.name()),
            ops,
            tx_per_second,
            verdict(ops >= target),
            ops / target
        );
    }
}
