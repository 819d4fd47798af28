//! The FUSE mount, as a shell user meets it: `blockwire-mdserver mount` processes (as root,
//! on /dev/fuse) over a two-data-node cluster; every operation and error through the
//! kernel, the everyday tools (mkdir -p, ls -l, touch, mv, cp -r, rm -r, tar x, git init),
//! two mounts of one cluster seeing one namespace and racing to create one name, SIGTERM
//! unmounting, a mount of an unreachable cluster failing at start with the reason, and a
//! create / stat / rename / read / remove loop on a mount going on through a data node's
//! SIGKILL (`BLOCKWIRE_MD_KILL_SECONDS`, default 4, after the kill).

#[path = "../../../client/tests/common/mod.rs"]
mod common;

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Shape, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_blockwire-mdserver");

fn mounted(dir: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*dir))
}

struct Mount {
    child: Child,
    dir: PathBuf,
}

impl Mount {
    fn start(cluster: &TestCluster, api_index: u32, dir: &Path, extra: &[&str]) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let log = fs::File::create(dir.with_extension("log")).unwrap();
        let mut child = Command::new(BIN)
            .args([
                "mount",
                "--config",
                cluster.path.to_str().unwrap(),
                "--node-id",
                &(100 + api_index).to_string(),
            ])
            .args(extra)
            .arg(dir)
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mounted(dir) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the mount exited with {status}: {}",
                    fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "no mount at {} within 30 s", dir.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        Mount { child, dir: dir.to_path_buf() }
    }

    /// SIGTERM, then the exit code; the mount point is no longer mounted.
    fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn errno(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let (f, t) = (
        std::ffi::CString::new(from.as_os_str().as_bytes())?,
        std::ffi::CString::new(to.as_os_str().as_bytes())?,
    );
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `blockwire-mdserver check` (as API node 101) finds the namespace consistent.
fn assert_checked_consistent(cluster: &TestCluster) {
    let check = Command::new(BIN)
        .args(["check", "--config", cluster.path.to_str().unwrap(), "--node-id", "101"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && said.contains("consistent"),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

fn sh(dir: &Path, script: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(script).current_dir(dir).output().unwrap()
}

fn sh_ok(dir: &Path, script: &str) -> String {
    let out = sh(dir, script);
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_operation_and_the_everyday_tools_through_a_mount() {
    let cluster = TestCluster::start("md-mount", Shape { api_nodes: 2, ..Shape::default() });
    let m = Mount::start(&cluster, 0, &cluster.dir.join("mnt"), &["--max-file-size", "65536"]);
    let d = m.dir.clone();

    // Files: create, write, read, stat, truncate, chmod, chown, utimens.
    fs::create_dir(d.join("a")).unwrap();
    let mut f = fs::File::create(d.join("a/f")).unwrap();
    f.write_all(b"hello, mount").unwrap();
    drop(f);
    assert_eq!(fs::read(d.join("a/f")).unwrap(), b"hello, mount");
    let meta = fs::metadata(d.join("a/f")).unwrap();
    assert_eq!((meta.len(), meta.nlink(), meta.mode() & 0o777), (12, 1, 0o644));
    OpenOptions::new().write(true).open(d.join("a/f")).unwrap().set_len(5).unwrap();
    assert_eq!(fs::read(d.join("a/f")).unwrap(), b"hello");
    fs::set_permissions(d.join("a/f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(d.join("a/f")).unwrap().mode() & 0o7777, 0o600);
    std::os::unix::fs::chown(d.join("a/f"), Some(1000), Some(1000)).unwrap();
    assert_eq!(
        (fs::metadata(d.join("a/f")).unwrap().uid(), fs::metadata(d.join("a/f")).unwrap().gid()),
        (1000, 1000)
    );
    sh_ok(&d, "touch -d '2001-02-03 04:05:06 UTC' a/f");
    assert_eq!(fs::metadata(d.join("a/f")).unwrap().mtime(), 981173106);
    let mut big = OpenOptions::new().write(true).open(d.join("a/f")).unwrap();
    assert_eq!(errno(std::os::unix::fs::FileExt::write_at(&big, b"x", 70_000)), libc::EFBIG);
    big.write_all(&[1u8; 9000]).unwrap();
    drop(big);
    let mut back = Vec::new();
    fs::File::open(d.join("a/f")).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), 9000);

    // Links, symlinks, renames (with renameat2's flags), removal.
    std::os::unix::fs::symlink("f", d.join("a/s")).unwrap();
    assert_eq!(fs::read_link(d.join("a/s")).unwrap(), Path::new("f"));
    assert_eq!(fs::read(d.join("a/s")).unwrap().len(), 9000, "the kernel follows the symlink");
    fs::hard_link(d.join("a/f"), d.join("a/h")).unwrap();
    assert_eq!(fs::metadata(d.join("a/f")).unwrap().nlink(), 2);
    fs::rename(d.join("a/h"), d.join("h2")).unwrap();
    fs::write(d.join("g"), b"g").unwrap();
    assert_eq!(errno(renameat2(&d.join("g"), &d.join("h2"), libc::RENAME_NOREPLACE)), libc::EEXIST);
    renameat2(&d.join("g"), &d.join("h2"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(d.join("h2")).unwrap(), b"g");
    assert_eq!(fs::metadata(d.join("g")).unwrap().len(), 9000);
    fs::create_dir_all(d.join("x/y/z")).unwrap();
    assert_eq!(errno(fs::rename(d.join("x"), d.join("x/y/z/x"))), libc::EINVAL);
    fs::remove_file(d.join("h2")).unwrap();
    fs::remove_file(d.join("g")).unwrap();
    assert_eq!(fs::metadata(d.join("a/f")).unwrap().nlink(), 1);

    // Errors through the kernel.
    assert_eq!(errno(fs::metadata(d.join("nope"))), libc::ENOENT);
    assert_eq!(errno(fs::create_dir(d.join("a"))), libc::EEXIST);
    assert_eq!(errno(fs::File::create(d.join("a/f/under"))), libc::ENOTDIR);
    assert_eq!(errno(fs::remove_file(d.join("x"))), libc::EISDIR);
    assert_eq!(errno(fs::remove_dir(d.join("x"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::File::create(d.join("n".repeat(256)))), libc::ENAMETOOLONG);
    fs::set_permissions(d.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
    let denied = Command::new("touch")
        .arg(d.join("a/by-user"))
        .uid(1000)
        .gid(1000)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Permission denied"), "{denied:?}");
    let denied = Command::new("cat")
        .arg(d.join("a/f"))
        .uid(1001)
        .gid(1001)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "a 0600 file of uid 1000: {denied:?}"
    );
    let allowed = Command::new("cat").arg(d.join("a/f")).uid(1000).gid(1000).output().unwrap();
    assert!(allowed.status.success(), "its owner reads it: {allowed:?}");
    // A supplementary group counts (FUSE passes only the primary one; the mount reads the rest).
    fs::create_dir(d.join("team")).unwrap();
    std::os::unix::fs::chown(d.join("team"), Some(0), Some(2000)).unwrap();
    fs::set_permissions(d.join("team"), fs::Permissions::from_mode(0o770)).unwrap();
    let setpriv = |groups: &str, path: &Path| {
        Command::new("setpriv")
            .args(["--reuid", "1001", "--regid", "1001", "--groups", groups, "touch"])
            .arg(path)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let member = setpriv("2000", &d.join("team/by-member"));
    assert!(member.status.success(), "a member of group 2000 by a supplementary group: {member:?}");
    let stranger = setpriv("3000", &d.join("team/by-stranger"));
    assert!(
        String::from_utf8_lossy(&stranger.stderr).contains("Permission denied"),
        "{stranger:?}"
    );

    // A listing of many entries, in several readdir calls.
    fs::create_dir(d.join("many")).unwrap();
    for i in 0..300 {
        fs::File::create(d.join(format!("many/file-{i:03}"))).unwrap();
    }
    let mut listed: Vec<String> = fs::read_dir(d.join("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(listed.len(), 300);
    assert_eq!(listed[0], "file-000");

    // mknod through the kernel: a fifo.
    sh_ok(&d, "mkfifo a/fifo && test -p a/fifo");
    fs::remove_file(d.join("a/fifo")).unwrap();

    // The everyday tools.
    sh_ok(&d, "mkdir -p t/u/v && touch t/u/v/w && ls -l t/u/v | grep -q ' w$' && mv t/u t/u2 && test -f t/u2/v/w");
    let src = cluster.dir.join("tree");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("sub/f{i}")), format!("file {i}\n").repeat(i + 1)).unwrap();
    }
    fs::write(src.join("sub/deeper/big"), vec![42u8; 20_000]).unwrap();
    sh_ok(&cluster.dir, "tar cf tree.tar -C tree .");
    sh_ok(
        &d,
        &format!(
            "mkdir untar && tar xf {} -C untar && diff -r untar {}",
            cluster.dir.join("tree.tar").display(),
            src.display()
        ),
    );
    sh_ok(&d, "cp -r untar copy && diff -r untar copy && rm -r copy untar && test ! -e copy");
    if Command::new("git").arg("--version").output().is_ok_and(|o| o.status.success()) {
        sh_ok(&d, "git init -q repo && cd repo && echo x > x && git add x && git -c user.email=t@t -c user.name=t commit -qm first && git log --oneline | grep -q first");
    }
    let df = sh_ok(&d, "df -P .");
    assert!(df.contains("blockwire"), "{df}");

    assert_eq!(m.stop(), Some(0), "SIGTERM unmounts and exits 0");
    assert!(!mounted(&d), "still mounted after SIGTERM");

    assert_checked_consistent(&cluster);
}

#[test]
fn two_mounts_see_one_namespace_and_exactly_one_create_of_a_name_wins() {
    let cluster = TestCluster::start("md-mounts", Shape { api_nodes: 2, ..Shape::default() });
    let a = Mount::start(&cluster, 0, &cluster.dir.join("mnt-a"), &[]);
    let b = Mount::start(&cluster, 1, &cluster.dir.join("mnt-b"), &[]);
    fs::write(a.dir.join("from-a"), b"written through a").unwrap();
    assert_eq!(fs::read(b.dir.join("from-a")).unwrap(), b"written through a");
    fs::rename(b.dir.join("from-a"), b.dir.join("renamed-in-b")).unwrap();
    assert_eq!(
        errno(fs::metadata(a.dir.join("from-a"))),
        libc::ENOENT,
        "no stale entry: caching is off"
    );
    assert!(a.dir.join("renamed-in-b").exists());

    let rounds = 40;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [a.dir.clone(), b.dir.clone()]
        .into_iter()
        .map(|dir| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                (0..rounds)
                    .map(|i| {
                        barrier.wait();
                        match OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(dir.join(format!("race-{i}")))
                        {
                            Ok(_) => Ok(()),
                            Err(e) => Err(e.kind()),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<Result<(), ErrorKind>>> =
        racers.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, (x, y)) in results[0].iter().zip(&results[1]).enumerate() {
        let outcomes = [*x, *y];
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "round {i}: {outcomes:?}");
        assert!(
            outcomes.contains(&Err(ErrorKind::AlreadyExists)),
            "round {i}: the loser gets EEXIST, {outcomes:?}"
        );
    }
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
}

#[test]
fn a_mount_of_an_unreachable_cluster_fails_at_start_naming_why() {
    let dir = std::env::temp_dir().join(format!("blockwire-md-unreachable-{}", std::process::id()));
    fs::create_dir_all(dir.join("mnt")).unwrap();
    let shape = Shape { api_nodes: 1, ..Shape::default() };
    let path = dir.join("cluster.toml");
    fs::write(&path, common::cluster_file(&shape, &dir)).unwrap();
    let out = Command::new(BIN)
        .args([
            "mount",
            "--config",
            path.to_str().unwrap(),
            "--node-id",
            "100",
            "--connect-timeout-ms",
            "1000",
        ])
        .arg(dir.join("mnt"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("cannot reach the cluster") && said.contains("data node"), "{said}");
    assert!(!mounted(&dir.join("mnt")));
    let bad = Command::new(BIN)
        .args(["mount", "--config", path.to_str().unwrap(), "--node-id", "100"])
        .arg(dir.join("absent"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a directory"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_shell_loop_on_a_mount_goes_on_through_a_data_node_kill() {
    let mut cluster =
        TestCluster::start("md-mount-kill", Shape { api_nodes: 2, ..Shape::default() });
    let m = Mount::start(&cluster, 0, &cluster.dir.join("mnt"), &[]);
    let dir = m.dir.join("loop");
    fs::create_dir(&dir).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let worker = {
        let (dir, stop, killed) = (dir.clone(), stop.clone(), killed.clone());
        std::thread::spawn(move || {
            let (mut rounds, mut after_kill, mut failed) = (0u64, 0u64, Vec::new());
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let (f, g) = (dir.join(format!("f{i}")), dir.join(format!("g{i}")));
                let round = (|| {
                    fs::write(&f, b"through the kill")?;
                    fs::metadata(&f)?;
                    fs::rename(&f, &g)?;
                    assert_eq!(fs::read(&g)?, b"through the kill");
                    fs::remove_file(&g)
                })();
                match round {
                    Ok(()) => {
                        rounds += 1;
                        if killed.lock().unwrap().is_some() {
                            after_kill += 1;
                        }
                    }
                    Err(e) => failed.push(format!("round {i}: {e}")),
                }
            }
            (rounds, after_kill, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    cluster.kill_node(2);
    *killed.lock().unwrap() = Some(Instant::now());
    std::thread::sleep(Duration::from_secs(
        std::env::var("BLOCKWIRE_MD_KILL_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4),
    ));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (rounds, after_kill, failed) = worker.join().unwrap();
    eprintln!("{rounds} rounds through the mount, {after_kill} after the kill, failed {failed:?}");
    assert!(after_kill > 0, "no round completed after the kill");
    assert!(failed.is_empty(), "rounds failed through the mount: {failed:?}");
    assert!(cluster.all_running(), "the survivor stopped");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "every round removed what it made");
    assert_eq!(m.stop(), Some(0));
    assert_checked_consistent(&cluster);
}
