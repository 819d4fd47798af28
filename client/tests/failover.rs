//! Membership and failover, with real data-node processes: a data node is SIGKILLed under a
//! bank-transfer load (over tcp and shm; the president and another node), and afterwards
//! - the load goes on: the survivor commits transfers on every partition;
//! - no acknowledged commit is lost: every transfer the client heard committed is there;
//! - transactions are whole: the balances agree with the transfer records and the total holds;
//! - a transfer whose outcome the client could not know is there or not, but never in part;
//! - the killed node, started again under the load, is admitted, copies its partitions from
//!   the survivor and serves again, and then both replicas of every partition are identical.
//!
//! `BLOCKWIRE_FAILOVER_SECONDS` (default 2) is how long the load runs after the kill;
//! `BLOCKWIRE_SEED` replays the pauses.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Durability, Exec, RetryPolicy, Session, Value};
use common::bank::{check_bank, pair, seed, setup_bank, transfer, Rng, ACCOUNTS, START_BALANCE};
use common::{Shape, TestCluster};

fn failover_seconds() -> u64 {
    std::env::var("BLOCKWIRE_FAILOVER_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// What a load thread saw.
#[derive(Debug, Default)]
struct Seen {
    acked: Vec<i64>,
    unknown: Vec<i64>,
    /// Commits acknowledged after the kill, and the first one's time.
    after_kill: usize,
    first_after_kill: Option<Instant>,
}

/// Transfers (each retried on temporary errors) until `stop`.
fn load(path: std::path::PathBuf, index: u32, first_id: i64, stop: Arc<AtomicBool>, killed: Arc<Mutex<Option<Instant>>>, seed: u64) -> Seen {
    paced_load(path, index, first_id, stop, killed, seed, Duration::ZERO)
}

/// [`load`], pausing `pause` after each transfer.
fn paced_load(
    path: std::path::PathBuf,
    index: u32,
    first_id: i64,
    stop: Arc<AtomicBool>,
    killed: Arc<Mutex<Option<Instant>>>,
    seed: u64,
    pause: Duration,
) -> Seen {
    let mut cluster = common::connect_to(&path, index);
    let mut s = cluster.session().unwrap();
    let mut rng = Rng(seed);
    let mut seen = Seen::default();
    let policy = RetryPolicy { attempts: 100, ..RetryPolicy::default() };
    let mut id = first_id;
    while !stop.load(Ordering::SeqCst) {
        let (a, b) = pair(&mut rng);
        match s.retry(&policy, |s| transfer(s, id, a, b, Durability::Memory)) {
            Ok(_) => {
                seen.acked.push(id);
                if killed.lock().unwrap().is_some() {
                    seen.after_kill += 1;
                    seen.first_after_kill.get_or_insert_with(Instant::now);
                }
            }
            Err(client::Error::NodeFailure { outcome_unknown: true, .. }) => seen.unknown.push(id),
            Err(e) => panic!("transfer {id}: {e} (not temporary, or still failing after {} tries)", policy.attempts),
        }
        id += 1;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    seen
}

/// Kills data node `victim` under two clients' transfers, lets the load run on, and checks.
fn kill_under_load(name: &str, transport: &'static str, victim: u32) {
    let mut rng = Rng(seed());
    let shape = Shape { transport, api_nodes: 4, ..Shape::default() };
    let mut cluster = TestCluster::start(name, shape);
    {
        let mut c = cluster.connect(0);
        let mut s = c.session().unwrap();
        setup_bank(&mut s, Durability::Memory);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(Mutex::new(None));
    let workers: Vec<_> = (1..=2)
        .map(|i| {
            let (path, stop, killed, seed) = (cluster.path.clone(), stop.clone(), killed.clone(), rng.next() | 1);
            std::thread::spawn(move || load(path, i, i64::from(i) << 40, stop, killed, seed))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400 + rng.next() % 600));
    let at = Instant::now();
    cluster.kill_node(victim);
    *killed.lock().unwrap() = Some(at);
    std::thread::sleep(Duration::from_secs(failover_seconds()));
    stop.store(true, Ordering::SeqCst);
    let seen: Vec<Seen> = workers.into_iter().map(|w| w.join().expect("load thread")).collect();
    let acked: usize = seen.iter().map(|s| s.acked.len()).sum();
    let after: usize = seen.iter().map(|s| s.after_kill).sum();
    let first = seen.iter().filter_map(|s| s.first_after_kill).min();
    eprintln!(
        "{name}: {acked} transfers acknowledged, {after} after the kill (the first {:?} after it), {} with unknown outcome",
        first.map(|f| f - at),
        seen.iter().map(|s| s.unknown.len()).sum::<usize>()
    );
    assert!(after > 0, "no transfer committed after data node {victim} was killed: the load did not go on");
    assert!(cluster.all_running(), "a survivor stopped");

    let mut c = cluster.connect(3);
    let mut s = c.session().unwrap();
    let present = check_bank(&mut s);
    for w in &seen {
        let lost: Vec<&i64> = w.acked.iter().filter(|id| !present.contains(id)).collect();
        assert!(lost.is_empty(), "acknowledged transfers lost: {lost:?}");
    }
    let attempted: HashSet<i64> = seen.iter().flat_map(|w| w.acked.iter().chain(&w.unknown)).copied().collect();
    let invented: Vec<&i64> = present.iter().filter(|id| !attempted.contains(id)).collect();
    assert!(invented.is_empty(), "transfers present that no client saw commit or end unknown: {invented:?}");
    // The survivor holds every partition alone: one replica answers, with every row.
    let accounts = s.table("accounts").unwrap();
    let mut rows = 0;
    for p in 0..accounts.partitions {
        let sums = s.partition_checksums(&accounts, p).unwrap();
        assert_eq!(sums.len(), 1, "partition {p}: one live replica expected, got {sums:?}");
        assert_ne!(sums[0].0.get() as u32, victim);
        rows += sums[0].1;
    }
    assert_eq!(i64::from(rows), ACCOUNTS);
    drop(s);
    drop(c);

    // The killed node restarts under the load: it is admitted, copies every partition from
    // the survivor while transfers go on, and serves again; then both replicas are identical.
    let load_again: Vec<_> = (1..=2)
        .map(|i| {
            let (path, seed) = (cluster.path.clone(), rng.next() | 1);
            let (stop, killed) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(None)));
            let handle = {
                let stop = stop.clone();
                std::thread::spawn(move || load(path, i, (i64::from(i) << 40) + (1 << 30), stop, killed, seed))
            };
            (stop, handle)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let restart_at = Instant::now();
    cluster.start_node(victim);
    let serving = cluster.serving.clone();
    assert!(cluster.wait_for(&serving, victim, Duration::from_secs(60)), "the restarted data node {victim} did not serve within 60 s");
    let took = restart_at.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    for (stop, _) in &load_again {
        stop.store(true, Ordering::SeqCst);
    }
    let seen_again: Vec<Seen> = load_again.into_iter().map(|(_, h)| h.join().expect("load thread")).collect();
    eprintln!(
        "{name}: data node {victim} restarted and served after {took:?}; {} transfers acknowledged meanwhile",
        seen_again.iter().map(|s| s.acked.len()).sum::<usize>()
    );
    assert!(cluster.all_running(), "a data node stopped during the node restart");
    let mut c = cluster.connect(3);
    let mut s = c.session().unwrap();
    let present = check_bank(&mut s);
    for w in seen.iter().chain(&seen_again) {
        let lost: Vec<&i64> = w.acked.iter().filter(|id| !present.contains(id)).collect();
        assert!(lost.is_empty(), "acknowledged transfers lost: {lost:?}");
    }
    assert_replicas_identical(&mut s, 2);
    // The restarted node is a primary again (balance): it coordinates and serves commits.
    s.retry(&RetryPolicy::default(), |s| transfer(s, -1, 0, 1, Durability::Memory)).unwrap();
    check_bank(&mut s);
}

/// Sends a signal (`-STOP`, `-CONT`) to process `pid`; after `-STOP`, waits until the kernel
/// shows it stopped (delivery is asynchronous: a busy process runs on a moment).
fn send_signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").args([name, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {name} {pid} failed");
    if name != "-STOP" {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name in parentheses.
        let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).unwrap_or("");
        if state == "T" || state == "t" {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop (state {state:?})");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn restart_cycles() -> u32 {
    std::env::var("BLOCKWIRE_RESTART_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// A paced transfer load by API node `100 + index` until the returned flag is set.
fn start_load(cluster: &TestCluster, index: u32, first_id: i64, seed: u64) -> (Arc<AtomicBool>, std::thread::JoinHandle<Seen>) {
    let (path, stop) = (cluster.path.clone(), Arc::new(AtomicBool::new(false)));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        paced_load(path, index, first_id, flag, Arc::new(Mutex::new(None)), seed, Duration::from_millis(1))
    });
    (stop, handle)
}

/// Stops a load, then checks: every acknowledged transfer there, balances whole, replicas
/// identical. Returns how many transfers it acknowledged.
fn stop_and_check(cluster: &TestCluster, load: (Arc<AtomicBool>, std::thread::JoinHandle<Seen>), what: &str) -> usize {
    load.0.store(true, Ordering::SeqCst);
    let seen = load.1.join().expect("load thread");
    let mut c = cluster.connect(3);
    let mut s = c.session().unwrap();
    let present = check_bank(&mut s);
    let lost: Vec<&i64> = seen.acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(lost.is_empty(), "{what}: acknowledged transfers lost: {lost:?}");
    assert_replicas_identical(&mut s, 2);
    let filler = s.table("filler").unwrap();
    for p in 0..filler.partitions {
        let sums = s.partition_checksums(&filler, p).unwrap();
        assert!(sums.len() == 2 && (sums[0].1, sums[0].2) == (sums[1].1, sums[1].2), "{what}: filler partition {p} differs: {sums:?}");
    }
    seen.acked.len()
}

/// A node restart whose copy is cut by a kill of the restarting node is abandoned cleanly
/// (the survivor goes on serving) and the next restart completes; then
/// `BLOCKWIRE_RESTART_CYCLES` (default 2) kill-and-restart cycles of either node, each under
/// a transfer load and each followed by the checks (no acknowledged commit lost, balances
/// whole, both replicas of every partition identical).
#[test]
fn a_kill_during_a_node_restarts_copy_is_abandoned_and_kill_restart_cycles_lose_nothing() {
    let mut rng = Rng(seed());
    let storage = "restart_copy_bytes_per_s = 131072";
    let shape = Shape { api_nodes: 4, storage, ..Shape::default() };
    let mut cluster = TestCluster::start("restart-cycles", shape);
    {
        let mut c = cluster.connect(0);
        let mut s = c.session().unwrap();
        setup_bank(&mut s, Durability::Memory);
        let filler = s.create_table(&filler_def()).unwrap();
        // About 600 KB of rows: the throttled copy takes seconds.
        for chunk in 0..20 {
            let mut tx = s.begin();
            for i in 0..100 {
                let id = chunk * 100 + i;
                tx.insert(&filler, &[("id", Value::I64(id)), ("pad", Value::Text(format!("{id:0>290}")))]).unwrap();
            }
            s.execute(&mut tx, Exec::Commit).unwrap();
        }
    }
    let admitted = cluster.admitted.clone();
    let serving = cluster.serving.clone();
    let mut next_id = 1i64 << 50;

    // The copy is cut.
    let load = start_load(&cluster, 1, next_id, rng.next() | 1);
    cluster.kill_node(2);
    std::thread::sleep(Duration::from_millis(200));
    cluster.start_node(2);
    assert!(cluster.wait_for(&admitted, 2, Duration::from_secs(30)), "the restarted node 2 was not admitted");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!serving.lock().unwrap().contains(&2), "the copy finished before the kill: the test needs a slower copy");
    cluster.kill_node(2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cluster.all_running(), "the survivor stopped when a restarting node died during its copy");
    cluster.start_node(2);
    assert!(cluster.wait_for(&serving, 2, Duration::from_secs(60)), "the restart after an abandoned copy did not finish");
    let acked = stop_and_check(&cluster, load, "after a kill during the copy");
    eprintln!("restart-cycles: copy cut and restarted; {acked} transfers acknowledged meanwhile");

    for cycle in 0..restart_cycles() {
        next_id += 1 << 40;
        let victim = 1 + cycle % 2;
        let load = start_load(&cluster, 1, next_id, rng.next() | 1);
        std::thread::sleep(Duration::from_millis(100));
        let at = Instant::now();
        cluster.kill_node(victim);
        std::thread::sleep(Duration::from_millis(200));
        cluster.start_node(victim);
        assert!(cluster.wait_for(&serving, victim, Duration::from_secs(60)), "cycle {cycle}: node {victim} did not serve again");
        let took = at.elapsed();
        let acked = stop_and_check(&cluster, load, &format!("cycle {cycle}"));
        eprintln!("restart-cycles: cycle {cycle}: node {victim} killed and serving again after {took:?}; {acked} transfers acknowledged");
        assert!(cluster.all_running(), "cycle {cycle}: a data node stopped");
    }
}

/// Every partition of the accounts table has `replicas` replicas answering, with equal row
/// counts and checksums.
fn assert_replicas_identical(s: &mut Session<'_>, replicas: usize) {
    let accounts = s.table("accounts").unwrap();
    let mut rows = 0;
    for p in 0..accounts.partitions {
        let sums = s.partition_checksums(&accounts, p).unwrap();
        assert_eq!(sums.len(), replicas, "partition {p}: {replicas} replicas expected, got {sums:?}");
        assert!(sums.windows(2).all(|w| (w[0].1, w[0].2) == (w[1].1, w[1].2)), "partition {p}: replicas differ: {sums:?}");
        rows += sums[0].1;
    }
    assert_eq!(i64::from(rows), ACCOUNTS);
}

#[test]
fn sigkill_of_a_data_node_over_tcp_loses_no_acknowledged_commit() {
    kill_under_load("failover-tcp", "tcp", 2);
}

#[test]
fn sigkill_of_the_president_over_shm_loses_no_acknowledged_commit() {
    kill_under_load("failover-shm", "shm", 1);
}

/// In a cluster that keeps its data on disk, the global checkpoint master is the president:
/// when it is killed, the survivor takes global checkpoints over, and disk-durable commits
/// (acknowledged only once their GCI is synced) go on.
#[test]
fn disk_durable_commits_go_on_after_the_global_checkpoint_master_dies() {
    let shape = Shape { api_nodes: 2, durable: Some("gcp_interval_ms = 50"), ..Shape::default() };
    let mut cluster = TestCluster::start("failover-disk", shape);
    let mut c = cluster.connect(0);
    let mut s = c.session().unwrap();
    setup_bank(&mut s, Durability::Memory);
    let commit = |s: &mut Session<'_>, id: i64, durability: client::Durability| {
        s.retry(&RetryPolicy { attempts: 100, ..RetryPolicy::default() }, |s| {
            let accounts = s.table("accounts")?;
            let mut tx = s.begin();
            tx.update(&accounts, &[Value::I64(id % ACCOUNTS)], &[("balance", Value::I64(START_BALANCE))])?;
            tx.set_durability(durability);
            s.execute(&mut tx, Exec::Commit)?;
            Ok(tx.gci())
        })
    };
    let disk = |s: &mut Session<'_>, id: i64| commit(s, id, client::Durability::Disk);
    let before = disk(&mut s, 0).unwrap();
    cluster.kill_node(1);
    // Memory-durable commits ask nothing of the master: the survivor must run global
    // checkpoints at the interval by itself (their GCIs advance).
    let started = Instant::now();
    let first = commit(&mut s, 0, client::Durability::Memory).unwrap();
    let mut last = first;
    while started.elapsed() < Duration::from_millis(600) {
        last = commit(&mut s, 0, client::Durability::Memory).unwrap();
    }
    assert!(last > first, "global checkpoints stopped after the master died: GCI {first} 600 ms later is {last}");
    let mut gcis = Vec::new();
    for id in 1..20 {
        gcis.push(disk(&mut s, id).unwrap_or_else(|e| panic!("disk-durable commit {id} after the master died: {e}")));
    }
    assert!(gcis.iter().all(|g| *g > before), "commits after the failover must carry later GCIs: {before} then {gcis:?}");
    assert!(gcis.last() > gcis.first(), "global checkpoints must advance after the failover: {gcis:?}");
    check_bank(&mut s);
}

/// A transaction that wrote a row before the restarted node asked for its partition, and
/// commits only after the copy reached that row: the copy waits for the row's lock, so the
/// restarted replica gets the committed image (mutation-checked: a copy that ignores locks
/// sends the old image and the replicas differ).
#[test]
fn a_write_open_across_a_node_restarts_copy_reaches_the_restarted_replica() {
    let shape = Shape { api_nodes: 3, ..Shape::default() };
    let mut cluster = TestCluster::start("restart-open-write", shape);
    let mut c = cluster.connect(0);
    let mut s = c.session().unwrap();
    setup_bank(&mut s, Durability::Memory);
    let accounts = s.table("accounts").unwrap();
    cluster.kill_node(2);
    // Wait until the survivor serves alone, then hold a write on account 0 open.
    s.retry(&RetryPolicy::default(), |s| transfer(s, 1, 2, 3, Durability::Memory)).unwrap();
    let mut tx = s.begin();
    tx.update(&accounts, &[Value::I64(0)], &[("balance", Value::I64(12_345))]).unwrap();
    assert_eq!(s.execute(&mut tx, Exec::NoCommit).unwrap(), client::Outcome::Executed);
    cluster.start_node(2);
    let (admitted, serving) = (cluster.admitted.clone(), cluster.serving.clone());
    assert!(cluster.wait_for(&admitted, 2, Duration::from_secs(30)), "node 2 was not admitted");
    // The copy of account 0's partition waits for the open write's lock.
    std::thread::sleep(Duration::from_millis(700));
    assert!(!serving.lock().unwrap().contains(&2), "node 2 served while a row it copies was locked by an open write");
    assert_eq!(s.execute(&mut tx, Exec::Commit).unwrap(), client::Outcome::Committed);
    assert!(cluster.wait_for(&serving, 2, Duration::from_secs(30)), "node 2 did not serve after the write committed");
    drop(s);
    drop(c);
    let mut c = cluster.connect(1);
    let mut s = c.session().unwrap();
    assert_replicas_identical(&mut s, 2);
    let mut read = s.begin();
    let op = read.read(&accounts, &[Value::I64(0)], client::LockMode::CommittedRead).unwrap();
    s.execute(&mut read, Exec::Commit).unwrap();
    assert_eq!(read.row(op).and_then(|r| r.get("balance")).and_then(Value::as_i64), Some(12_345));
}

/// A data node that hangs (SIGSTOP; its links stay up) is declared dead by the heartbeat
/// ring: the survivor commits again within a few heartbeat intervals. When the hung node wakes
/// (SIGCONT) it is not let back in: it hears it was declared dead and stops with exit 4.
/// Started again (a fresh process), it is admitted, copies, and both replicas are identical.
#[test]
fn a_hung_data_node_is_declared_dead_by_heartbeat_and_stopped_when_it_wakes() {
    let shape = Shape { api_nodes: 3, ..Shape::default() };
    let mut cluster = TestCluster::start("failover-hang", shape);
    let mut c = cluster.connect(0);
    let mut s = c.session().unwrap();
    setup_bank(&mut s, Durability::Memory);
    // Past the start: a neighbour that never sent a heartbeat has 30 s to send its first.
    std::thread::sleep(Duration::from_millis(500));
    let pid = cluster.pid(2);
    let signal = |name: &str| send_signal(pid, name);
    signal("-STOP");
    let hung = Instant::now();
    // A transfer whose commit reached node 2 before it stopped ends with an unknown outcome:
    // the next one (a new id) is tried.
    let policy = RetryPolicy { attempts: 100, ..RetryPolicy::default() };
    for id in 1.. {
        match s.retry(&policy, |s| transfer(s, id, 2, 3, Durability::Memory)) {
            Ok(_) => break,
            Err(client::Error::NodeFailure { outcome_unknown: true, .. }) if id < 5 => {}
            Err(e) => panic!("a transfer after a data node hung: {e}"),
        }
    }
    let took = hung.elapsed();
    eprintln!("failover-hang: first commit {took:?} after data node 2 hung (heartbeat 100 ms, 3 missed)");
    assert!(took < Duration::from_secs(10), "the survivor took {took:?} to commit after a node hung");
    signal("-CONT");
    assert_eq!(cluster.wait_exit(2, Duration::from_secs(20)), Some(4), "a node declared dead while hung must stop with exit 4");
    assert!(cluster.all_running(), "the survivor stopped");
    cluster.start_node(2);
    let serving = cluster.serving.clone();
    assert!(cluster.wait_for(&serving, 2, Duration::from_secs(60)), "node 2 did not serve again after its restart");
    // This session hears the new map (and its link to the restarted node comes up).
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.serving_data_nodes().len() < 2 {
        assert!(Instant::now() < deadline, "the session never saw node 2 serving again");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_replicas_identical(&mut s, 2);
    check_bank(&mut s);
}

/// A restarted node gets a schema larger than one signal section (40 tables: the admission
/// sends it in pieces), installs every table, and copies their rows.
#[test]
fn a_restarted_node_gets_a_schema_larger_than_a_signal_section() {
    let shape = Shape { api_nodes: 3, ..Shape::default() };
    let mut cluster = TestCluster::start("restart-schema", shape);
    let mut c = cluster.connect(0);
    let mut s = c.session().unwrap();
    let col = |name: String, ty| client::Column { name, ty, nullable: true };
    for t in 0..40 {
        let mut columns = vec![client::Column { name: "id".into(), ty: client::ColumnType::I64, nullable: false }];
        columns.extend((0..12).map(|i| col(format!("a_rather_long_column_name_{i:02}"), client::ColumnType::I64)));
        let def = client::TableDef {
            name: format!("table_with_a_long_name_{t:02}"),
            columns,
            primary_key: vec!["id".into()],
            partition_key: None,
            partitions: Some(4),
            read_backup: false,
            indexes: Vec::new(),
        };
        let table = s.create_table(&def).unwrap();
        let mut tx = s.begin();
        for id in 0..8 {
            tx.insert(&table, &[("id", Value::I64(id)), ("a_rather_long_column_name_03", Value::I64(id * t))]).unwrap();
        }
        s.execute(&mut tx, Exec::Commit).unwrap();
    }
    drop(s);
    drop(c);
    cluster.kill_node(2);
    std::thread::sleep(Duration::from_millis(200));
    cluster.start_node(2);
    let serving = cluster.serving.clone();
    assert!(cluster.wait_for(&serving, 2, Duration::from_secs(60)), "node 2 did not serve after its restart");
    let mut c = cluster.connect(1);
    let mut s = c.session().unwrap();
    for t in [0, 17, 39] {
        let table = s.table(&format!("table_with_a_long_name_{t:02}")).unwrap();
        for p in 0..table.partitions {
            let sums = s.partition_checksums(&table, p).unwrap();
            assert!(sums.len() == 2 && (sums[0].1, sums[0].2) == (sums[1].1, sums[1].2), "table {t} partition {p}: {sums:?}");
        }
    }
}

/// A commit whose coordinator hangs after the client asked for it ends
/// `NodeFailure { outcome_unknown: true }` once the cluster declares that node dead; the
/// president takes the coordinator's transactions over (no replica committed this one: it is
/// aborted everywhere) and tells the client's session, where `Session::outcome` reads it.
#[test]
fn a_commit_whose_coordinator_hung_learns_its_outcome_from_the_takeover() {
    let shape = Shape { api_nodes: 3, ..Shape::default() };
    let mut cluster = TestCluster::start("failover-outcome", shape);
    let mut c = cluster.connect(0);
    let mut s = c.session().unwrap();
    setup_bank(&mut s, Durability::Memory);
    std::thread::sleep(Duration::from_millis(500));
    let accounts = s.table("accounts").unwrap();
    let mut tx = (0..16).map(|_| s.begin()).find(|t| t.coordinator_node().get() == 2).expect("a transaction on node 2's coordinator");
    tx.update(&accounts, &[Value::I64(0)], &[("balance", Value::I64(777))]).unwrap();
    assert_eq!(s.execute(&mut tx, Exec::NoCommit).unwrap(), client::Outcome::Executed);
    let pid = cluster.pid(2);
    let signal = |name: &str| send_signal(pid, name);
    signal("-STOP");
    match s.execute(&mut tx, Exec::Commit) {
        Err(client::Error::NodeFailure { outcome_unknown: true, .. }) => {}
        other => panic!("a commit on a hung coordinator must end with an unknown outcome, got {other:?}"),
    }
    assert_eq!(s.outcome(tx.id(), Duration::from_secs(10)), Some(client::TxOutcome::Aborted));
    assert_eq!(s.outcome(tx.id() + 1, Duration::ZERO), None, "no outcome for a transaction that never ended unknown");
    let mut read = s.begin();
    let op = read.read(&accounts, &[Value::I64(0)], client::LockMode::CommittedRead).unwrap();
    s.execute(&mut read, Exec::Commit).unwrap();
    assert_eq!(read.row(op).and_then(|r| r.get("balance")).and_then(Value::as_i64), Some(START_BALANCE));
    signal("-CONT");
    assert_eq!(cluster.wait_exit(2, Duration::from_secs(20)), Some(4));
    check_bank(&mut s);
}

/// Four data nodes in two node groups: node 1 (the first president) restarts and becomes the
/// youngest member; then node 3 restarts (admitted by node 2, the oldest now); then node 2,
/// the president, restarts (node 3 presides... until it is younger than node 4: node 4 does).
/// Under a transfer load; after each restart every acknowledged transfer is there, the bank
/// is whole and both replicas of every partition are identical.
#[test]
fn restarts_in_a_four_node_cluster_follow_one_president() {
    let mut rng = Rng(seed());
    let shape = Shape { data_nodes: 4, api_nodes: 4, ..Shape::default() };
    let mut cluster = TestCluster::start("restart-four", shape);
    {
        let mut c = cluster.connect(0);
        let mut s = c.session().unwrap();
        setup_bank(&mut s, Durability::Memory);
        let filler = s.create_table(&filler_def()).unwrap();
        let mut tx = s.begin();
        for id in 0..400 {
            tx.insert(&filler, &[("id", Value::I64(id)), ("pad", Value::Text(format!("{id:0>100}")))]).unwrap();
        }
        s.execute(&mut tx, Exec::Commit).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let serving = cluster.serving.clone();
    let mut next_id = 1i64 << 52;
    for victim in [1, 3, 2] {
        next_id += 1 << 40;
        let load = start_load(&cluster, 1, next_id, rng.next() | 1);
        std::thread::sleep(Duration::from_millis(100));
        cluster.kill_node(victim);
        std::thread::sleep(Duration::from_millis(300));
        cluster.start_node(victim);
        assert!(cluster.wait_for(&serving, victim, Duration::from_secs(60)), "node {victim} did not serve again");
        stop_and_check(&cluster, load, &format!("after node {victim} restarted"));
        assert!(cluster.all_running(), "a data node stopped after node {victim} restarted");
    }
}

fn filler_def() -> client::TableDef {
    client::TableDef {
        name: "filler".into(),
        columns: vec![
            client::Column { name: "id".into(), ty: client::ColumnType::I64, nullable: false },
            client::Column { name: "pad".into(), ty: client::ColumnType::Varchar { max: 300 }, nullable: false },
        ],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(8),
        read_backup: false,
        indexes: Vec::new(),
    }
}
