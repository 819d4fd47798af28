//! Transactions on multi-process clusters: the bank-transfer invariant with concurrent
//! clients (two data nodes over tcp; four data nodes in two node groups over shm), single-key
//! histories checked for linearizability, a deadlock broken by the timeout, abandoned
//! transactions whose locks go at the inactive timeout and when their client disconnects, and
//! the storage memory limit as a typed error.
//!
//! Loop sizes come from `BLOCKWIRE_BANK_TRANSFERS` (per client, default 150) and
//! `BLOCKWIRE_LINEAR_OPS` (per client, default 300).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use client::check::{self, Input, Operation, Output};
use client::{Column, ColumnType, Error, Exec, LockMode, Outcome, Session, TableDef, Value};
use common::{accounts_def, Shape, TestCluster};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// splitmix64: the tests' deterministic randomness.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ACCOUNTS: i64 = 32;
const START_BALANCE: i64 = 1000;

fn balance_of(tx: &client::Transaction, op: client::OpId) -> i64 {
    tx.row(op).and_then(|r| r.get("balance")).and_then(Value::as_i64).expect("account row")
}

/// One transfer: lock both accounts, move `amount`, commit. Retries temporary errors.
fn transfer(s: &mut Session<'_>, t: &Arc<client::Table>, a: i64, b: i64, amount: i64) -> u32 {
    let mut retries = 0;
    loop {
        let mut tx = s.begin_hinted(t, &[Value::I64(a)]).unwrap();
        let ra = tx.read(t, &[Value::I64(a)], LockMode::Exclusive).unwrap();
        let rb = tx.read(t, &[Value::I64(b)], LockMode::Exclusive).unwrap();
        let result = s.execute(&mut tx, Exec::NoCommit).and_then(|_| {
            let (ba, bb) = (balance_of(&tx, ra), balance_of(&tx, rb));
            tx.update(t, &[Value::I64(a)], &[("balance", Value::I64(ba - amount))])?;
            tx.update(t, &[Value::I64(b)], &[("balance", Value::I64(bb + amount))])?;
            s.execute(&mut tx, Exec::Commit)
        });
        match result {
            Ok(Outcome::Committed) => return retries,
            Err(e) if e.is_temporary() => retries += 1,
            other => panic!("transfer {a} -> {b}: {other:?}"),
        }
        assert!(retries < 200, "transfer {a} -> {b} kept failing");
    }
}

/// Reads every account under shared locks; returns the total (None: a temporary error).
fn audit(s: &mut Session<'_>, t: &Arc<client::Table>) -> Option<i64> {
    let mut tx = s.begin();
    let ops: Vec<_> = (0..ACCOUNTS).map(|id| tx.read(t, &[Value::I64(id)], LockMode::Shared).unwrap()).collect();
    match s.execute(&mut tx, Exec::Commit) {
        Ok(_) => Some(ops.iter().map(|op| balance_of(&tx, *op)).sum()),
        Err(e) if e.is_temporary() => None,
        Err(e) => panic!("audit: {e}"),
    }
}

fn bank(cluster: &TestCluster, clients: u32) {
    bank_with(cluster, clients, env_count("BLOCKWIRE_BANK_TRANSFERS", 150));
}

fn bank_with(cluster: &TestCluster, clients: u32, transfers: usize) {
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let t = s.create_table(&accounts_def(8)).unwrap();
    let mut tx = s.begin();
    for id in 0..ACCOUNTS {
        tx.insert(&t, &[("id", Value::I64(id)), ("balance", Value::I64(START_BALANCE))]).unwrap();
    }
    s.execute(&mut tx, Exec::Commit).unwrap();
    let expected = ACCOUNTS * START_BALANCE;
    let done = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(clients as usize + 1));
    let workers: Vec<_> = (1..=clients)
        .map(|c| {
            let (path, barrier, retries) = (cluster.path.clone(), barrier.clone(), retries.clone());
            std::thread::spawn(move || {
                let mut api = common::connect_to(&path, c);
                let mut s = api.session().unwrap();
                let t = s.table("accounts").unwrap();
                let mut rng = Rng(u64::from(c) * 7919);
                barrier.wait();
                for _ in 0..transfers {
                    let a = rng.below(ACCOUNTS as u64) as i64;
                    let b = (a + 1 + rng.below(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
                    let n = transfer(&mut s, &t, a, b, 1 + rng.below(50) as i64);
                    retries.fetch_add(u64::from(n), Ordering::Relaxed);
                }
            })
        })
        .collect();
    barrier.wait();
    let mut audits = 0;
    while !done.load(Ordering::Relaxed) {
        if let Some(total) = audit(&mut s, &t) {
            assert_eq!(total, expected, "an audit saw a total other than {expected}");
            audits += 1;
        }
        if workers.iter().all(|w| w.is_finished()) {
            done.store(true, Ordering::Relaxed);
        }
    }
    for w in workers {
        w.join().expect("a transfer client failed");
    }
    assert_eq!(audit(&mut s, &t), Some(expected));
    assert!(audits > 0);
    for p in 0..t.partitions {
        let sums = s.partition_checksums(&t, p).unwrap();
        assert_eq!(sums.len(), 2, "two replicas");
        assert!(sums[0].1 > 0 || ACCOUNTS < 8, "partition {p} has rows");
        assert_eq!((sums[0].1, sums[0].2), (sums[1].1, sums[1].2), "replicas of partition {p} differ: {sums:?}");
    }
    eprintln!(
        "bank: {clients} clients x {transfers} transfers, {audits} consistent audits, {} retries",
        retries.load(Ordering::Relaxed)
    );
}

#[test]
fn bank_transfers_keep_the_total_on_two_data_nodes_over_tcp() {
    let shape = Shape { coordinator: "transaction_deadlock_timeout_ms = 200", ..Shape::default() };
    let cluster = TestCluster::start("bank-tcp", shape);
    bank(&cluster, 3);
}

#[test]
fn bank_transfers_keep_the_total_on_two_node_groups_over_shm() {
    let shape = Shape {
        data_nodes: 4,
        transport: "shm",
        coordinator: "transaction_deadlock_timeout_ms = 200",
        ..Shape::default()
    };
    let cluster = TestCluster::start("bank-shm", shape);
    bank(&cluster, 3);
}

#[test]
fn bank_transfers_keep_the_total_over_rdma() {
    if !common::rdma_device_here() {
        return;
    }
    let shape = Shape { transport: "rdma", coordinator: "transaction_deadlock_timeout_ms = 2000", ..Shape::default() };
    let cluster = TestCluster::start("bank-rdma", shape);
    // The rig's CPU is emulated: fewer transfers.
    bank_with(&cluster, 2, env_count("BLOCKWIRE_BANK_TRANSFERS", 40));
}

fn kv_def() -> TableDef {
    TableDef {
        name: "kv".into(),
        columns: vec![
            Column { name: "k".into(), ty: ColumnType::I64, nullable: false },
            Column { name: "v".into(), ty: ColumnType::I64, nullable: false },
        ],
        primary_key: vec!["k".into()],
        partition_key: None,
        partitions: Some(4),
        read_backup: false,
        indexes: Vec::new(),
    }
}

/// One single-key operation against the cluster, as the checker records it.
fn run_op(s: &mut Session<'_>, t: &Arc<client::Table>, key: i64, input: Input) -> Output {
    let k = [Value::I64(key)];
    let mut tx = s.begin();
    let result = match input {
        Input::Read => {
            let r = tx.read(t, &k, LockMode::CommittedRead).unwrap();
            s.execute(&mut tx, Exec::Commit)
                .map(|_| Output::Read(tx.row(r).and_then(|r| r.get("v")).and_then(Value::as_i64)))
        }
        Input::Write(v) => {
            tx.write(t, &[("k", Value::I64(key)), ("v", Value::I64(v))]).unwrap();
            s.execute(&mut tx, Exec::Commit).map(|_| Output::Written)
        }
        Input::CompareAndSet { expect, new } => {
            let r = tx.read(t, &k, LockMode::Exclusive).unwrap();
            s.execute(&mut tx, Exec::NoCommit).and_then(|_| {
                let now = tx.row(r).and_then(|r| r.get("v")).and_then(Value::as_i64);
                if now != expect {
                    s.execute(&mut tx, Exec::Rollback).map(|_| Output::CompareAndSet(false))
                } else {
                    tx.write(t, &[("k", Value::I64(key)), ("v", Value::I64(new))])?;
                    s.execute(&mut tx, Exec::Commit).map(|_| Output::CompareAndSet(true))
                }
            })
        }
    };
    match result {
        Ok(out) => out,
        Err(Error::NodeFailure { outcome_unknown: true, .. }) | Err(Error::Timeout(_)) => Output::Unknown,
        Err(e) if e.is_temporary() => Output::Failed,
        Err(e) => panic!("{input:?} on key {key}: {e}"),
    }
}

#[test]
fn single_key_histories_are_linearizable() {
    let shape = Shape { coordinator: "transaction_deadlock_timeout_ms = 200", ..Shape::default() };
    let cluster = TestCluster::start("linear", shape);
    {
        let mut api = cluster.connect(0);
        api.session().unwrap().create_table(&kv_def()).unwrap();
    }
    let ops = env_count("BLOCKWIRE_LINEAR_OPS", 300);
    let epoch = Instant::now();
    let clients = 4u32;
    let barrier = Arc::new(Barrier::new(clients as usize));
    let workers: Vec<_> = (1..=clients)
        .map(|c| {
            let (path, barrier) = (cluster.path.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut api = common::connect_to(&path, c);
                let mut s = api.session().unwrap();
                let t = s.table("kv").unwrap();
                let mut rng = Rng(u64::from(c) * 104_729);
                let mut history = Vec::with_capacity(ops);
                barrier.wait();
                for i in 0..ops {
                    let key = rng.below(3);
                    let value = i64::from(c) * 1_000_000 + i as i64;
                    let input = match rng.below(3) {
                        0 => Input::Read,
                        1 => Input::Write(value),
                        _ => {
                            let seen = run_op(&mut s, &t, key as i64, Input::Read);
                            let expect = if let Output::Read(v) = seen { v } else { None };
                            Input::CompareAndSet { expect, new: value }
                        }
                    };
                    let call_ns = epoch.elapsed().as_nanos() as u64;
                    let output = run_op(&mut s, &t, key as i64, input);
                    let return_ns = epoch.elapsed().as_nanos() as u64;
                    history.push(Operation { client: c, key, call_ns, return_ns, input, output });
                }
                history
            })
        })
        .collect();
    let history: Vec<Operation> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let cas_true = history.iter().filter(|o| o.output == Output::CompareAndSet(true)).count();
    match check::check(&history, None) {
        Ok(report) => eprintln!(
            "linearizable: {} operations on {} keys ({cas_true} successful compare-and-sets), {} states",
            report.operations, report.keys, report.states_explored
        ),
        Err(e) => panic!("{e}"),
    }
    assert!(cas_true > 0, "the workload exercised compare-and-set");
}

#[test]
fn a_deadlock_is_broken_by_the_timeout_and_the_other_transaction_commits() {
    let shape = Shape { coordinator: "transaction_deadlock_timeout_ms = 400", ..Shape::default() };
    let cluster = TestCluster::start("deadlock", shape);
    let mut a = cluster.connect(0);
    let mut sa = a.session().unwrap();
    let t = sa.create_table(&accounts_def(4)).unwrap();
    let mut tx = sa.begin();
    for id in 0..2 {
        tx.insert(&t, &[("id", Value::I64(id)), ("balance", Value::I64(0))]).unwrap();
    }
    sa.execute(&mut tx, Exec::Commit).unwrap();
    let mut b = cluster.connect(1);
    let mut sb = b.session().unwrap();
    let tb_table = sb.table("accounts").unwrap();

    // A locks 0, B locks 1; then A asks for 1 and, 150 ms later, B asks for 0.
    let mut ta = sa.begin();
    ta.read(&t, &[Value::I64(0)], LockMode::Exclusive).unwrap();
    sa.execute(&mut ta, Exec::NoCommit).unwrap();
    let mut tb = sb.begin();
    tb.read(&tb_table, &[Value::I64(1)], LockMode::Exclusive).unwrap();
    sb.execute(&mut tb, Exec::NoCommit).unwrap();
    ta.update(&t, &[Value::I64(1)], &[("balance", Value::I64(1))]).unwrap();
    sa.send(&mut ta, Exec::Commit).unwrap();
    let _ = sa.poll(Duration::from_millis(150));
    tb.update(&tb_table, &[Value::I64(0)], &[("balance", Value::I64(2))]).unwrap();
    sb.send(&mut tb, Exec::Commit).unwrap();

    let started = Instant::now();
    let mut a_result = None;
    let mut b_result = None;
    while (a_result.is_none() || b_result.is_none()) && started.elapsed() < Duration::from_secs(10) {
        for c in sa.poll(Duration::from_millis(5)) {
            a_result = Some(ta.absorb(c));
        }
        for c in sb.poll(Duration::from_millis(5)) {
            b_result = Some(tb.absorb(c));
        }
    }
    let a_result = a_result.expect("A answered");
    let b_result = b_result.expect("B answered");
    assert!(matches!(a_result, Err(Error::Deadlock(ref m)) if m.contains("transaction_deadlock_timeout_ms")), "{a_result:?}");
    assert_eq!(b_result.unwrap(), Outcome::Committed);
    let mut check = sa.begin();
    let r0 = check.read(&t, &[Value::I64(0)], LockMode::CommittedRead).unwrap();
    let r1 = check.read(&t, &[Value::I64(1)], LockMode::CommittedRead).unwrap();
    sa.execute(&mut check, Exec::Commit).unwrap();
    assert_eq!(balance_of(&check, r0), 2, "B's write");
    assert_eq!(balance_of(&check, r1), 0, "A's write was undone");
}

/// Locks row 0 in an open transaction of API node `holder` and leaves it; returns how long
/// another client waited to update the row.
fn wait_behind_abandoned(cluster: &TestCluster, disconnect: bool) -> (Duration, Result<Outcome, Error>) {
    let mut a = cluster.connect(0);
    let mut sa = a.session().unwrap();
    let t = sa.create_table(&accounts_def(4)).unwrap();
    let mut tx = sa.begin();
    tx.insert(&t, &[("id", Value::I64(0)), ("balance", Value::I64(0))]).unwrap();
    sa.execute(&mut tx, Exec::Commit).unwrap();
    let mut holder = cluster.connect(1);
    let mut sh = holder.session().unwrap();
    let th = sh.table("accounts").unwrap();
    let mut abandoned = sh.begin();
    abandoned.update(&th, &[Value::I64(0)], &[("balance", Value::I64(99))]).unwrap();
    sh.execute(&mut abandoned, Exec::NoCommit).unwrap();
    if disconnect {
        drop(sh);
        drop(holder);
    }
    let started = Instant::now();
    let mut tx = sa.begin();
    tx.update(&t, &[Value::I64(0)], &[("balance", Value::I64(7))]).unwrap();
    let result = sa.execute(&mut tx, Exec::Commit);
    (started.elapsed(), result)
}

#[test]
fn an_abandoned_transaction_loses_its_locks_at_the_inactive_timeout() {
    let shape = Shape {
        coordinator: "transaction_deadlock_timeout_ms = 5000\ntransaction_inactive_timeout_ms = 300",
        ..Shape::default()
    };
    let cluster = TestCluster::start("inactive", shape);
    let (waited, result) = wait_behind_abandoned(&cluster, false);
    assert_eq!(result.unwrap(), Outcome::Committed);
    assert!(waited < Duration::from_millis(4000), "released by the inactive timeout, not the deadlock one: {waited:?}");
}

#[test]
fn a_disconnected_clients_transaction_aborts_and_its_locks_go() {
    let shape = Shape {
        coordinator: "transaction_deadlock_timeout_ms = 8000\ntransaction_inactive_timeout_ms = 0",
        ..Shape::default()
    };
    let cluster = TestCluster::start("disconnect", shape);
    let (waited, result) = wait_behind_abandoned(&cluster, true);
    assert_eq!(result.unwrap(), Outcome::Committed);
    assert!(waited < Duration::from_millis(6000), "released at the disconnect: {waited:?}");
}

#[test]
fn a_full_storage_memory_is_a_typed_error_and_the_node_keeps_serving() {
    let shape = Shape { storage: "memory_bytes = \"64K\"", storage_instances: 1, ..Shape::default() };
    let mut cluster = TestCluster::start("memory", shape);
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let t = s.create_table(&accounts_def(2)).unwrap();
    let mut full = None;
    for id in 0..5000i64 {
        let mut tx = s.begin();
        tx.insert(&t, &[("id", Value::I64(id)), ("balance", Value::I64(id)), ("note", Value::Text("x".repeat(32)))])
            .unwrap();
        if let Err(e) = s.execute(&mut tx, Exec::Commit) {
            full = Some((id, e));
            break;
        }
    }
    let (id, e) = full.expect("the memory limit was reached");
    assert!(matches!(e, Error::Overload { code: engine::ErrorCode::OutOfMemory, .. }), "{e}");
    assert!(e.to_string().contains("memory_bytes"), "{e}");
    assert!(id > 100, "rows fit before the limit: {id}");
    let mut tx = s.begin();
    let r = tx.read(&t, &[Value::I64(1)], LockMode::CommittedRead).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    assert_eq!(balance_of(&tx, r), 1);
    // Deleting frees memory for new rows.
    let mut tx = s.begin();
    for d in 0..50 {
        tx.delete(&t, &[Value::I64(d)]).unwrap();
    }
    s.execute(&mut tx, Exec::Commit).unwrap();
    let mut tx = s.begin();
    tx.insert(&t, &[("id", Value::I64(id)), ("balance", Value::I64(0))]).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    assert!(cluster.all_running());
}
