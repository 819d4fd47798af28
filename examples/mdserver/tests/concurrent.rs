//! Concurrency through the library, each client its own API node: renames racing to make a
//! cycle, a random workload of every operation on shared directories, and a create / stat /
//! rename / remove loop through a data node's SIGKILL; the consistency checker after each.
//!
//! `BLOCKWIRE_MD_OPS` (default 250) sets the random workload's operations per client;
//! `BLOCKWIRE_MD_KILL_SECONDS` (default 4) how long the loop runs after the kill.

#[path = "../../../client/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Shape, TestCluster};
use mdserver::{Caller, FsConfig, FsError, Namespace, RenameFlags, ROOT};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let s = env(
        "BLOCKWIRE_MD_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64,
    );
    eprintln!("seed {s} (BLOCKWIRE_MD_SEED={s} repeats it)");
    s | 1
}

fn assert_clean(ns: &mut Namespace<'_>, what: &str) -> mdserver::check::Report {
    let report = mdserver::check::check(ns).unwrap();
    assert!(report.is_clean(), "{what}: {:#?}", report.problems);
    eprintln!(
        "{what}: {} inodes, {} entries, {} directories: consistent",
        report.inodes, report.entries, report.directories
    );
    report
}

#[test]
fn renames_racing_to_make_a_cycle_leave_a_tree() {
    let cluster = TestCluster::start("md-cycle", Shape { api_nodes: 3, ..Shape::default() });
    let root = Caller::root();
    let rounds = env("BLOCKWIRE_MD_CYCLE_ROUNDS", 12);
    let mut api = cluster.connect(0);
    let mut ns = Namespace::open(api.session().unwrap(), FsConfig::default()).unwrap();
    for r in 0..rounds {
        ns.mkdir(ROOT, &format!("a{r}"), 0o755, &root).unwrap();
        ns.mkdir(ROOT, &format!("b{r}"), 0o755, &root).unwrap();
    }
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [(1u32, "a", "b"), (2u32, "b", "a")]
        .into_iter()
        .map(|(index, from, into)| {
            let (path, barrier) = (cluster.path.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut api = common::connect_to(&path, index);
                let mut ns = Namespace::open(api.session().unwrap(), FsConfig::default()).unwrap();
                let root = Caller::root();
                let mut results = Vec::new();
                for r in 0..rounds {
                    let target = ns.lookup(ROOT, &format!("{into}{r}"), &root).unwrap().ino;
                    barrier.wait();
                    // a{r} into b{r} racing b{r} into a{r}: together they would make a cycle.
                    let res = ns.rename(
                        ROOT,
                        &format!("{from}{r}"),
                        target,
                        &format!("{from}{r}"),
                        RenameFlags::default(),
                        &root,
                    );
                    results.push(res.map_err(|e| e.name()));
                }
                results
            })
        })
        .collect();
    let results: Vec<Vec<Result<(), &str>>> =
        racers.into_iter().map(|t| t.join().unwrap()).collect();
    for (r, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        let outcomes = [*a, *b];
        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(ok, 1, "round {r}: exactly one of the two renames succeeds, got {outcomes:?}");
        assert!(
            outcomes.contains(&Err("EINVAL")),
            "round {r}: the other is EINVAL, got {outcomes:?}"
        );
    }
    let report = assert_clean(&mut ns, "after the cycle races");
    assert_eq!(report.directories as u64, 1 + 2 * rounds);
}

/// Errors a random operation may meet on a namespace others change at the same time.
const EVERYDAY: [&str; 7] =
    ["ENOENT", "EEXIST", "ENOTDIR", "EISDIR", "ENOTEMPTY", "EINVAL", "EPERM"];

fn random_op(
    ns: &mut Namespace<'_>,
    rng: &mut Rng,
    tops: &[u64],
    counts: &mut [u64; 9],
) -> Result<(), FsError> {
    let root = Caller::root();
    let name = |rng: &mut Rng| format!("n{}", rng.below(6));
    // A directory to work in: a top one, or an entry below one (when it is a directory).
    let dir = |rng: &mut Rng, ns: &mut Namespace<'_>| -> Result<u64, FsError> {
        let top = tops[rng.below(tops.len() as u64) as usize];
        if rng.below(3) == 0 {
            let a = ns.lookup(top, &name(rng), &root)?;
            a.dir()?;
            return Ok(a.ino);
        }
        Ok(top)
    };
    let op = rng.below(9) as usize;
    counts[op] += 1;
    let d = dir(rng, ns)?;
    let n = name(rng);
    match op {
        0 => ns.create(d, &n, 0o644, &root).map(drop),
        1 => ns.mkdir(d, &n, 0o755, &root).map(drop),
        2 => ns.unlink(d, &n, &root),
        3 => ns.rmdir(d, &n, &root),
        4 | 5 => {
            let d2 = dir(rng, ns)?;
            let flags = match rng.below(4) {
                0 => RenameFlags { noreplace: true, exchange: false },
                1 => RenameFlags { noreplace: false, exchange: true },
                _ => RenameFlags::default(),
            };
            ns.rename(d, &n, d2, &name(rng), flags, &root)
        }
        6 => {
            let a = ns.lookup(d, &n, &root)?;
            let d2 = dir(rng, ns)?;
            ns.link(a.ino, d2, &name(rng), &root).map(drop)
        }
        7 => {
            let a = ns.lookup(d, &n, &root)?;
            let at = rng.below(10_000);
            ns.write(a.ino, at, &[7u8; 700]).map(drop)
        }
        _ => {
            let a = ns.lookup(d, &n, &root)?;
            ns.setattr(
                a.ino,
                mdserver::SetAttr { size: Some(rng.below(5000)), ..Default::default() },
                &root,
            )
            .map(drop)
        }
    }
}

#[test]
fn a_random_workload_of_every_operation_leaves_a_consistent_namespace() {
    let clients = 3u32;
    let cluster =
        TestCluster::start("md-random", Shape { api_nodes: clients + 1, ..Shape::default() });
    let ops = env("BLOCKWIRE_MD_OPS", 250);
    let mut rng = Rng(seed());
    let mut api = cluster.connect(0);
    let mut ns = Namespace::open(api.session().unwrap(), FsConfig::default()).unwrap();
    let tops: Vec<u64> = (0..3)
        .map(|i| ns.mkdir(ROOT, &format!("top{i}"), 0o755, &Caller::root()).unwrap().ino)
        .collect();
    let workers: Vec<_> = (1..=clients)
        .map(|index| {
            let (path, tops, seed) = (cluster.path.clone(), tops.clone(), rng.next() | 1);
            std::thread::spawn(move || {
                let mut api = common::connect_to(&path, index);
                let mut ns = Namespace::open(api.session().unwrap(), FsConfig::default()).unwrap();
                let mut rng = Rng(seed);
                let mut counts = [0u64; 9];
                let mut errors = std::collections::BTreeMap::new();
                for _ in 0..ops {
                    if let Err(e) = random_op(&mut ns, &mut rng, &tops, &mut counts) {
                        assert!(EVERYDAY.contains(&e.name()), "an operation failed with {e}");
                        *errors.entry(e.name()).or_insert(0u64) += 1;
                    }
                }
                (counts, errors, ns.stats())
            })
        })
        .collect();
    for w in workers {
        let (counts, errors, stats) = w.join().expect("worker");
        eprintln!("ops by kind {counts:?}, refused {errors:?}, {stats:?}");
    }
    assert_clean(&mut ns, "after the random workload");
}

#[test]
fn create_stat_rename_remove_go_on_through_a_data_node_kill() {
    let cluster_shape = Shape { api_nodes: 4, ..Shape::default() };
    let mut cluster = TestCluster::start("md-kill", cluster_shape);
    let seconds = env("BLOCKWIRE_MD_KILL_SECONDS", 4);
    let stop = Arc::new(AtomicBool::new(false));
    let killed: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    {
        let mut api = cluster.connect(0);
        let mut ns = Namespace::open(api.session().unwrap(), FsConfig::default()).unwrap();
        for i in 1..=2 {
            ns.mkdir(ROOT, &format!("w{i}"), 0o755, &Caller::root()).unwrap();
        }
    }
    let workers: Vec<_> = (1..=2u32)
        .map(|index| {
            let (path, stop, killed) = (cluster.path.clone(), stop.clone(), killed.clone());
            std::thread::spawn(move || {
                let mut api = common::connect_to(&path, index);
                let mut ns = Namespace::open(api.session().unwrap(), FsConfig::default()).unwrap();
                let root = Caller::root();
                let dir = ns.lookup(ROOT, &format!("w{index}"), &root).unwrap().ino;
                let (mut done, mut after_kill, mut failed) = (0u64, 0u64, Vec::new());
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let (f, g) = (format!("f{i}"), format!("g{i}"));
                    let round = (|| {
                        let a = ns.create(dir, &f, 0o644, &root)?;
                        let b = ns.lookup(dir, &f, &root)?;
                        assert_eq!(a.ino, b.ino);
                        ns.rename(dir, &f, dir, &g, RenameFlags::default(), &root)?;
                        ns.getattr(a.ino)?;
                        ns.unlink(dir, &g, &root)
                    })();
                    match round {
                        Ok(()) => {
                            done += 1;
                            if killed.lock().unwrap().is_some() {
                                after_kill += 1;
                            }
                        }
                        Err(e) => failed.push(e),
                    }
                }
                (done, after_kill, failed, ns.stats())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    cluster.kill_node(2);
    *killed.lock().unwrap() = Some(Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let (done, after_kill, failed, stats) = w.join().expect("worker");
        eprintln!("{done} rounds, {after_kill} after the kill, failed {failed:?}, {stats:?}");
        assert!(after_kill > 0, "no round completed after the kill");
        // A commit whose coordinator died is resolved (the survivor's report, or a retry that
        // finds the first attempt's effect): no round fails.
        assert!(failed.is_empty(), "rounds failed: {failed:?}");
    }
    assert!(cluster.all_running(), "the survivor stopped");
    let mut api = cluster.connect(3);
    let mut ns = Namespace::open(api.session().unwrap(), FsConfig::default()).unwrap();
    assert_clean(&mut ns, "after the kill");
}
