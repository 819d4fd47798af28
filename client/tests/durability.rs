//! Durability across whole-cluster crashes, with data-node processes killed by SIGKILL:
//! - every disk-durable commit acknowledged before the kill is there after the restart, and
//!   the bank's total is intact (a transfer is all there or not at all);
//! - memory-durable commits are lost only back to a global checkpoint, never partially: the
//!   survivors are exactly the acknowledged commits up to some GCI;
//! - a redo log far smaller than what is written is freed by local checkpoints, and a restart
//!   restores the checkpoint and replays the log (with the io_uring writer and the fallback);
//! - a data directory of another node is refused by name.
//!
//! Loop counts come from the environment: `BLOCKWIRE_KILL_CYCLES` (default 3),
//! `BLOCKWIRE_DURABLE_ROWS` (default 20000).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Durability, Exec, LockMode, Session, Value};
use common::bank::{check_bank, pair, rows_of, seed, setup_bank, transfer, Rng};
use common::{accounts_def, Shape, TestCluster};

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn durable_shape(storage: &'static str) -> Shape {
    Shape { api_nodes: 3, durable: Some("gcp_interval_ms = 50"), storage, ..Shape::default() }
}

/// Transfers until the first error after `stop` is set (the kill); returns (id, gci) of
/// every acknowledged one. Temporary errors before the kill are retried.
fn load(path: std::path::PathBuf, first_id: i64, durability: Durability, stop: Arc<AtomicBool>, seed: u64) -> Vec<(i64, u64)> {
    let mut cluster = common::connect_to(&path, 1);
    let mut s = cluster.session().unwrap();
    let mut rng = Rng(seed);
    let mut acked = Vec::new();
    let mut id = first_id;
    loop {
        let (a, b) = pair(&mut rng);
        match transfer(&mut s, id, a, b, durability) {
            Ok(gci) => acked.push((id, gci)),
            Err(_) if stop.load(Ordering::SeqCst) => return acked,
            Err(e) if e.is_temporary() => {}
            Err(e) => panic!("transfer {id} before the kill: {e}"),
        }
        id += 1;
    }
}

fn run_and_kill(cluster: &mut TestCluster, first_id: i64, durability: Durability, rng: &mut Rng) -> Vec<(i64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (path, flag, seed) = (cluster.path.clone(), stop.clone(), rng.next() | 1);
    let worker = std::thread::spawn(move || load(path, first_id, durability, flag, seed));
    std::thread::sleep(Duration::from_millis(300 + rng.next() % 900));
    stop.store(true, Ordering::SeqCst);
    cluster.kill_all();
    let acked = worker.join().expect("load thread");
    cluster.restart_all();
    acked
}

#[test]
fn disk_durable_commits_survive_sigkill_of_every_data_node() {
    let mut rng = Rng(seed());
    let mut cluster = TestCluster::start("kill-disk", durable_shape(""));
    {
        let mut c = cluster.connect(0);
        setup_bank(&mut c.session().unwrap(), Durability::Disk);
    }
    let cycles = env_count("BLOCKWIRE_KILL_CYCLES", 3);
    let mut all_acked = Vec::new();
    for cycle in 0..cycles {
        let acked = run_and_kill(&mut cluster, (cycle as i64 + 1) * 1_000_000, Durability::Disk, &mut rng);
        assert!(!acked.is_empty(), "cycle {cycle}: no transfer was acknowledged before the kill");
        all_acked.extend(acked.iter().map(|(id, _)| *id));
        let mut c = cluster.connect(0);
        let present = check_bank(&mut c.session().unwrap());
        let lost: Vec<&i64> = all_acked.iter().filter(|id| !present.contains(id)).collect();
        assert!(lost.is_empty(), "cycle {cycle}: acknowledged disk-durable transfers lost: {lost:?}");
        eprintln!("cycle {cycle}: {} acknowledged, {} present in all", acked.len(), present.len());
    }
}

#[test]
fn memory_durable_commits_are_lost_only_back_to_a_global_checkpoint() {
    let mut rng = Rng(seed());
    let mut cluster = TestCluster::start("kill-memory", durable_shape(""));
    {
        let mut c = cluster.connect(0);
        setup_bank(&mut c.session().unwrap(), Durability::Disk);
    }
    let acked = run_and_kill(&mut cluster, 1, Durability::Memory, &mut rng);
    assert!(!acked.is_empty(), "no transfer was acknowledged before the kill");
    let mut c = cluster.connect(0);
    let present = check_bank(&mut c.session().unwrap());
    // The restart GCI is at least the GCI of every survivor; every acknowledged commit of a
    // GCI at or below the highest surviving one must be there too.
    let gci_of: std::collections::HashMap<i64, u64> = acked.iter().copied().collect();
    let restored = present.iter().filter_map(|id| gci_of.get(id)).max().copied().unwrap_or(0);
    let missing: Vec<&(i64, u64)> = acked.iter().filter(|(id, gci)| *gci <= restored && !present.contains(id)).collect();
    assert!(missing.is_empty(), "commits of GCIs up to the restored {restored} are missing: {missing:?}");
    assert!(acked.iter().all(|(_, gci)| *gci > 0), "a commit without a GCI in a durable cluster");
    eprintln!("{} acknowledged, {} survived (through GCI {restored})", acked.len(), present.len());
}

/// Writes many more bytes than the redo log holds: local checkpoints must free it, and a
/// restart must restore the newest checkpoint plus the log after it.
fn checkpoints_free_the_log_and_restore(name: &str, env: Vec<(&'static str, &'static str)>) {
    let storage = "redo_files = 2\nredo_file_bytes = \"256K\"\nredo_buffer_bytes = \"64K\"\ncheckpoint_interval_ms = 200\ncheckpoint_log_percent = 20";
    let mut shape = durable_shape(storage);
    shape.node_env = env;
    let mut cluster = TestCluster::start(name, shape);
    let rows = env_count("BLOCKWIRE_DURABLE_ROWS", 20000) as i64;
    let mut c = cluster.connect(0);
    let mut s = c.session().unwrap();
    let t = s.create_table(&accounts_def(8)).unwrap();
    let note = "n".repeat(32);
    let started = Instant::now();
    let mut refused = 0;
    let mut id = 0;
    while id < rows {
        let mut tx = s.begin();
        for k in id..(id + 50).min(rows) {
            let values = [("id", Value::I64(k)), ("balance", Value::I64(k * 3)), ("note", Value::Text(note.clone()))];
            tx.write(&t, &values).unwrap();
        }
        tx.set_durability(Durability::Disk);
        match s.execute(&mut tx, Exec::Commit) {
            Ok(_) => id += 50,
            Err(e) if e.code() == Some(engine::ErrorCode::RedoLogFull) => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("batch at {id}: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(300), "writes stalled: the log was never freed");
    }
    // Delete a few so the restore must apply deletes too.
    let mut tx = s.begin();
    for k in 0..10 {
        tx.delete(&t, &[Value::I64(k)]).unwrap();
    }
    tx.set_durability(Durability::Disk);
    s.execute(&mut tx, Exec::Commit).unwrap();
    drop(s);
    drop(c);
    eprintln!("{rows} rows written ({refused} batches refused with RedoLogFull and retried)");
    cluster.kill_all();
    cluster.restart_all();
    let mut c = cluster.connect(0);
    let mut s = c.session().unwrap();
    let found = rows_of(&mut s, "accounts");
    assert_eq!(found.len() as i64, rows - 10, "rows after the restart");
    for row in found {
        let (Value::I64(k), Value::I64(b)) = (&row[0], &row[1]) else { panic!("row {row:?}") };
        assert!(*k >= 10 && *b == k * 3, "row {row:?}");
    }
    let checkpoints = std::fs::read_dir(cluster.dir.join("node-1")).unwrap().filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("lcp-") && e.file_name().to_string_lossy().ends_with(".dat"))
        .count();
    assert!(checkpoints >= 1, "no local checkpoint was installed");
}

#[test]
fn local_checkpoints_free_the_redo_log_and_a_restart_restores_them() {
    checkpoints_free_the_log_and_restore("lcp", Vec::new());
}

#[test]
fn the_pwrite_fallback_passes_the_same_restore() {
    checkpoints_free_the_log_and_restore("lcp-fallback", vec![("BLOCKWIRE_IO_URING", "off")]);
}

#[test]
fn another_nodes_data_directory_is_refused_by_name() {
    let mut cluster = TestCluster::start("identity", durable_shape(""));
    cluster.kill_all();
    let (one, two) = (cluster.dir.join("node-1"), cluster.dir.join("node-2"));
    std::fs::rename(&one, cluster.dir.join("swap")).unwrap();
    std::fs::rename(&two, &one).unwrap();
    std::fs::rename(cluster.dir.join("swap"), &two).unwrap();
    let out = std::process::Command::new(common::datanode_binary())
        .args(["--config", cluster.path.to_str().unwrap(), "--node-id", "1", "--initial"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("node_id 2") && stderr.contains("identity"), "{stderr}");
}

/// Fills a data node's file system: local checkpoints cannot be written, the redo log fills,
/// writes are refused with `RedoLogFull` while reads go on; when space returns, a checkpoint
/// frees the log and writes resume; every acknowledged row survives a restart.
#[test]
fn a_full_disk_refuses_writes_with_redo_log_full_and_they_resume_when_space_returns() {
    let storage = "redo_files = 2\nredo_file_bytes = \"256K\"\nredo_buffer_bytes = \"64K\"\ncheckpoint_interval_ms = 200\ncheckpoint_log_percent = 20";
    let shape = Shape { tmpfs_bytes: Some(3 << 20), ..durable_shape(storage) };
    let mut cluster = TestCluster::start("disk-full", shape);
    let mut c = cluster.connect(0);
    let mut s = c.session().unwrap();
    let t = s.create_table(&accounts_def(8)).unwrap();
    let junk = cluster.dir.join("node-1").join("junk");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&junk).unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
    }
    let note = "n".repeat(32);
    let mut acked = 0i64;
    let mut refused = 0;
    let started = Instant::now();
    let write_batch = |s: &mut Session<'_>, from: i64| {
        let mut tx = s.begin();
        for k in from..from + 50 {
            tx.write(&t, &[("id", Value::I64(k)), ("balance", Value::I64(k)), ("note", Value::Text(note.clone()))])?;
        }
        tx.set_durability(Durability::Disk);
        s.execute(&mut tx, Exec::Commit)
    };
    while refused == 0 {
        match write_batch(&mut s, acked) {
            Ok(_) => acked += 50,
            Err(e) if e.code() == Some(engine::ErrorCode::RedoLogFull) => refused += 1,
            Err(e) => panic!("batch at {acked}: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the log never filled ({acked} rows written)");
    }
    eprintln!("log full after {acked} rows");
    assert!(cluster.all_running(), "a data node stopped on a full disk");
    let last = s.table("accounts").unwrap();
    let mut tx = s.begin();
    let r = tx.read(&last, &[Value::I64(acked - 1)], LockMode::CommittedRead).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    assert!(tx.row(r).is_some(), "the last acknowledged row is readable while the log is full");
    std::fs::remove_file(&junk).unwrap();
    let resumed = Instant::now();
    let mut more = 0;
    while more < 20 {
        match write_batch(&mut s, acked) {
            Ok(_) => {
                acked += 50;
                more += 1;
            }
            Err(e) if e.code() == Some(engine::ErrorCode::RedoLogFull) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("batch at {acked} after space returned: {e}"),
        }
        assert!(resumed.elapsed() < Duration::from_secs(60), "writes did not resume after space returned");
    }
    drop(s);
    drop(c);
    cluster.kill_all();
    cluster.restart_all();
    let mut c = cluster.connect(0);
    let found = rows_of(&mut c.session().unwrap(), "accounts");
    assert_eq!(found.len() as i64, acked, "acknowledged rows after the restart");
}
