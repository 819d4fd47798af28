//! The mdtest-style workload: N client threads, each in its own tree of depth `depth` and
//! branching `branch` (mdtest's `-u -z -b`), run phase after phase (tree create, directory
//! create / stat / rename / remove, file create / stat / read / rename / remove, tree
//! remove), every thread starting a phase together. Each operation's latency goes into an
//! HDR histogram; a phase's rate is its operations over its wall time.
//!
//! The same phases run through any [`Client`]: the library ([`LibClient`], a namespace per
//! thread) or a directory of a mounted file system ([`PathClient`]: the blockwire mount,
//! tmpfs, a pass-through FUSE mount).

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::attr::Caller;
use crate::dir::RenameFlags;
use crate::error::FsError;
use crate::ns::Namespace;

/// What one client thread does, by directory handle and name.
pub trait Client {
    /// A directory.
    type Dir: Clone;
    /// The directory the client starts in.
    fn root(&mut self) -> Self::Dir;
    /// Makes a directory.
    fn mkdir(&mut self, parent: &Self::Dir, name: &str) -> io::Result<Self::Dir>;
    /// Creates a file holding `data`.
    fn create(&mut self, parent: &Self::Dir, name: &str, data: &[u8]) -> io::Result<()>;
    /// Stats an entry by name.
    fn stat(&mut self, parent: &Self::Dir, name: &str) -> io::Result<()>;
    /// Opens a file by name and reads `len` bytes.
    fn read(&mut self, parent: &Self::Dir, name: &str, len: usize) -> io::Result<()>;
    /// Renames an entry within its directory.
    fn rename(&mut self, parent: &Self::Dir, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file.
    fn unlink(&mut self, parent: &Self::Dir, name: &str) -> io::Result<()>;
    /// Removes an empty directory.
    fn rmdir(&mut self, parent: &Self::Dir, name: &str) -> io::Result<()>;
}

fn io_err(e: FsError) -> io::Error {
    io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e.to_string())
}

/// The library: a namespace (one API node) per thread, as root.
#[derive(Debug)]
pub struct LibClient<'c> {
    ns: Namespace<'c>,
    caller: Caller,
    base: u64,
}

impl<'c> LibClient<'c> {
    /// A client working under directory `base` of `ns`.
    pub fn new(ns: Namespace<'c>, base: u64) -> LibClient<'c> {
        LibClient { ns, caller: Caller::root(), base }
    }

    /// Its namespace.
    pub fn namespace(&mut self) -> &mut Namespace<'c> {
        &mut self.ns
    }
}

impl Client for LibClient<'_> {
    type Dir = u64;
    fn root(&mut self) -> u64 {
        self.base
    }
    fn mkdir(&mut self, parent: &u64, name: &str) -> io::Result<u64> {
        self.ns.mkdir(*parent, name, 0o755, &self.caller).map(|a| a.ino).map_err(io_err)
    }
    fn create(&mut self, parent: &u64, name: &str, data: &[u8]) -> io::Result<()> {
        let a = self.ns.create(*parent, name, 0o644, &self.caller).map_err(io_err)?;
        if !data.is_empty() {
            self.ns.write(a.ino, 0, data).map_err(io_err)?;
        }
        Ok(())
    }
    fn stat(&mut self, parent: &u64, name: &str) -> io::Result<()> {
        self.ns.lookup(*parent, name, &self.caller).map(drop).map_err(io_err)
    }
    fn read(&mut self, parent: &u64, name: &str, len: usize) -> io::Result<()> {
        let a = self.ns.lookup(*parent, name, &self.caller).map_err(io_err)?;
        if len > 0 {
            self.ns.read(a.ino, 0, len as u32).map_err(io_err)?;
        }
        Ok(())
    }
    fn rename(&mut self, parent: &u64, from: &str, to: &str) -> io::Result<()> {
        self.ns
            .rename(*parent, from, *parent, to, RenameFlags::default(), &self.caller)
            .map_err(io_err)
    }
    fn unlink(&mut self, parent: &u64, name: &str) -> io::Result<()> {
        self.ns.unlink(*parent, name, &self.caller).map_err(io_err)
    }
    fn rmdir(&mut self, parent: &u64, name: &str) -> io::Result<()> {
        self.ns.rmdir(*parent, name, &self.caller).map_err(io_err)
    }
}

/// A directory of a mounted file system, through the kernel's system calls.
#[derive(Debug)]
pub struct PathClient {
    base: PathBuf,
}

impl PathClient {
    /// A client working under `base`.
    pub fn new(base: PathBuf) -> PathClient {
        PathClient { base }
    }
}

impl Client for PathClient {
    type Dir = PathBuf;
    fn root(&mut self) -> PathBuf {
        self.base.clone()
    }
    fn mkdir(&mut self, parent: &PathBuf, name: &str) -> io::Result<PathBuf> {
        let p = parent.join(name);
        std::fs::create_dir(&p)?;
        Ok(p)
    }
    fn create(&mut self, parent: &PathBuf, name: &str, data: &[u8]) -> io::Result<()> {
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).open(parent.join(name))?;
        if !data.is_empty() {
            io::Write::write_all(&mut f, data)?;
        }
        Ok(())
    }
    fn stat(&mut self, parent: &PathBuf, name: &str) -> io::Result<()> {
        std::fs::metadata(parent.join(name)).map(drop)
    }
    fn read(&mut self, parent: &PathBuf, name: &str, len: usize) -> io::Result<()> {
        let mut f = std::fs::File::open(parent.join(name))?;
        if len > 0 {
            let mut buf = vec![0u8; len];
            io::Read::read_exact(&mut f, &mut buf)?;
        }
        Ok(())
    }
    fn rename(&mut self, parent: &PathBuf, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(parent.join(from), parent.join(to))
    }
    fn unlink(&mut self, parent: &PathBuf, name: &str) -> io::Result<()> {
        std::fs::remove_file(parent.join(name))
    }
    fn rmdir(&mut self, parent: &PathBuf, name: &str) -> io::Result<()> {
        std::fs::remove_dir(parent.join(name))
    }
}

/// The workload's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Levels of directories below each thread's tree root.
    pub depth: u32,
    /// Subdirectories of each tree directory.
    pub branch: u32,
    /// Directories and files each thread makes per phase (spread over its tree).
    pub items: u32,
    /// Bytes written into each file at create and read back.
    pub bytes: u32,
}

/// The phases, in the order they run.
pub const PHASES: [&str; 11] = [
    "tree create",
    "dir create",
    "dir stat",
    "dir rename",
    "dir remove",
    "file create",
    "file stat",
    "file read",
    "file rename",
    "file remove",
    "tree remove",
];

/// One phase's result over every thread.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// Its name.
    pub phase: &'static str,
    /// Operations done.
    pub ops: u64,
    /// From the first thread's start to the last thread's end.
    pub wall: Duration,
    /// Each operation's latency, ns.
    pub latency: Histogram<u64>,
}

impl PhaseResult {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// A barrier the threads of a run meet at before each phase, which a failed thread opens for
/// good (the others then stop at their next phase instead of waiting forever).
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<(u32, u64, bool)>,
    turned: std::sync::Condvar,
}

impl Gate {
    /// Waits for `n` threads; Err once any thread failed.
    fn wait(&self, n: u32) -> Result<(), String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.2 {
            return Err("another thread failed".into());
        }
        s.0 += 1;
        if s.0 == n {
            s.0 = 0;
            s.1 += 1;
            self.turned.notify_all();
            return Ok(());
        }
        let generation = s.1;
        while s.1 == generation && !s.2 {
            s = self.turned.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.2 {
            Err("another thread failed".into())
        } else {
            Ok(())
        }
    }

    fn fail(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.2 = true;
        self.turned.notify_all();
    }
}

/// One thread's share of a phase: start, end, latencies, operations.
pub type Timed = Vec<(Instant, Instant, Histogram<u64>, u64)>;

/// Thread `t`'s work, handed to the [`Spawner`] that makes its client.
#[derive(Debug)]
pub struct Work<'a> {
    t: u32,
    threads: u32,
    shape: Shape,
    gate: &'a Gate,
}

impl Work<'_> {
    /// The thread's number (0-based).
    pub fn thread(&self) -> u32 {
        self.t
    }

    /// Runs every phase with client `c`.
    pub fn go<C: Client>(&self, c: &mut C) -> Result<Timed, String> {
        one_thread(c, self.t, &self.shape, &|| self.gate.wait(self.threads))
    }
}

/// Makes each thread's client (in the thread, so a client may borrow what lives there) and
/// hands it to [`Work::go`].
pub trait Spawner: Sync {
    /// Runs thread `t`'s work.
    fn run_thread(&self, work: Work<'_>) -> Result<Timed, String>;
}

/// Runs every phase with `threads` threads, each with the client `spawner` makes, and
/// returns each phase's result. An operation that fails stops the run with its error, naming
/// the phase and the entry.
pub fn run(threads: u32, shape: Shape, spawner: &dyn Spawner) -> Result<Vec<PhaseResult>, String> {
    let gate = Gate::default();
    let results: Mutex<Vec<Result<Timed, String>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (gate, results) = (&gate, &results);
            scope.spawn(move || {
                let r = spawner.run_thread(Work { t, threads, shape, gate });
                if r.is_err() {
                    gate.fail();
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            });
        }
    });
    let mut per_thread = Vec::new();
    let mut errors = Vec::new();
    for r in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r {
            Ok(t) => per_thread.push(t),
            Err(e) if e == "another thread failed" => {}
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let mut out = Vec::new();
    for (i, phase) in PHASES.iter().enumerate() {
        let start = per_thread.iter().map(|t| t[i].0).min();
        let end = per_thread.iter().map(|t| t[i].1).max();
        let mut latency = Histogram::new(3).map_err(|e| e.to_string())?;
        let mut ops = 0;
        for t in &per_thread {
            latency.add(&t[i].2).map_err(|e| e.to_string())?;
            ops += t[i].3;
        }
        let wall = end.zip(start).map_or(Duration::ZERO, |(e, s)| e - s);
        out.push(PhaseResult { phase, ops, wall, latency });
    }
    Ok(out)
}

/// Thread `t`'s tree, parents before children: its top `mdtest.T`, then `depth` levels of
/// `branch` subdirectories each. Returns each directory's parent (by index) and name.
fn tree(t: u32, shape: &Shape) -> Vec<(Option<usize>, String)> {
    let mut dirs = vec![(None, format!("mdtest.{t}"))];
    let mut level = vec![0usize];
    for _ in 0..shape.depth {
        let mut next = Vec::new();
        for &p in &level {
            for b in 0..shape.branch {
                dirs.push((Some(p), format!("b{b}")));
                next.push(dirs.len() - 1);
            }
        }
        level = next;
    }
    dirs
}

/// Item `k`'s operation of phase `i` (1 to 9) in directory `dir`: what it is, its result
/// and how long it took (the names are made before the clock starts).
fn item_op<C: Client>(
    c: &mut C,
    i: usize,
    dir: &C::Dir,
    k: usize,
    data: &[u8],
) -> (String, io::Result<()>, Duration) {
    let (a, b) = (format!("item.{k}"), format!("moved.{k}"));
    let (what, name) = match i {
        1 => ("mkdir", &a),
        2 | 6 => ("stat", &a),
        3 | 8 => ("rename", &a),
        4 => ("rmdir", &b),
        5 => ("create", &a),
        7 => ("read", &a),
        _ => ("unlink", &b),
    };
    let t0 = Instant::now();
    let r = match i {
        1 => c.mkdir(dir, &a).map(drop),
        2 | 6 => c.stat(dir, &a),
        3 | 8 => c.rename(dir, &a, &b),
        4 => c.rmdir(dir, &b),
        5 => c.create(dir, &a, data),
        7 => c.read(dir, &a, data.len()),
        _ => c.unlink(dir, &b),
    };
    (format!("{what} {name}"), r, t0.elapsed())
}

fn one_thread<C: Client>(
    c: &mut C,
    t: u32,
    shape: &Shape,
    barrier: &dyn Fn() -> Result<(), String>,
) -> Result<Timed, String> {
    let tree = tree(t, shape);
    // Each tree directory's handle, once made.
    let mut made: Vec<Option<C::Dir>> = vec![None; tree.len()];
    let data = vec![0x5au8; shape.bytes as usize];
    let mut timed = Vec::new();
    for (i, phase) in PHASES.iter().enumerate() {
        barrier()?;
        let mut h = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let timed_op = |h: &mut Histogram<u64>,
                        (what, r, took): (String, io::Result<()>, Duration)|
         -> Result<(), String> {
            r.map_err(|e| format!("{phase}: {what}: {e}"))?;
            h.record(took.as_nanos() as u64).map_err(|e| e.to_string())
        };
        let order: Vec<usize> = match i {
            0 => (0..tree.len()).collect(),
            10 => (0..tree.len()).rev().collect(),
            _ => Vec::new(),
        };
        for d in order {
            let parent = match tree[d].0 {
                None => c.root(),
                Some(p) => made[p].clone().ok_or("a parent was not made")?,
            };
            let name = &tree[d].1;
            let what = format!("{} {name}", if i == 0 { "mkdir" } else { "rmdir" });
            let t0 = Instant::now();
            let r = if i == 0 {
                c.mkdir(&parent, name).map(|x| made[d] = Some(x))
            } else {
                c.rmdir(&parent, name)
            };
            timed_op(&mut h, (what, r, t0.elapsed()))?;
        }
        if (1..=9).contains(&i) {
            for k in 0..shape.items as usize {
                let dir = made[k % tree.len()].clone().ok_or("a tree directory was not made")?;
                timed_op(&mut h, item_op(c, i, &dir, k, &data))?;
            }
        }
        let ops = h.len();
        timed.push((start, Instant::now(), h, ops));
    }
    Ok(timed)
}
