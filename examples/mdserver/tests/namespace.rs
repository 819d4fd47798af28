//! Every namespace operation and its errors through the library, on a two-data-node cluster
//! (processes, tcp), then the consistency checker.

#[path = "../../../client/tests/common/mod.rs"]
mod common;

use client::Value;
use common::{Shape, TestCluster};
use mdserver::{Caller, FsConfig, Kind, Namespace, RenameFlags, SetAttr, SetTime, ROOT};

fn errno<T: std::fmt::Debug>(r: mdserver::FsResult<T>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.name(),
    }
}

fn names(ns: &mut Namespace<'_>, dir: u64) -> Vec<String> {
    let mut out: Vec<String> =
        ns.readdir(dir, 0, 10_000).unwrap().into_iter().map(|e| e.name).collect();
    out.sort();
    out
}

#[test]
fn every_operation_and_error_through_the_library() {
    let cluster = TestCluster::start("md-ops", Shape::default());
    let mut api = cluster.connect(0);
    let config =
        FsConfig { block_size: 512, max_file_size: 256 << 10, ino_range: 8, ..FsConfig::default() };
    let mut ns = Namespace::open(api.session().unwrap(), config).unwrap();
    let root = Caller::root();
    let alice = Caller::user(1000, 1000);
    let bob = Caller::user(1001, 1001);

    // mkdir, lookup, getattr, create, ENOENT, EEXIST, ENOTDIR, ENAMETOOLONG.
    let home = ns.mkdir(ROOT, "home", 0o755, &root).unwrap();
    assert_eq!((home.kind, home.nlink, home.parent), (Kind::Dir, 2, ROOT));
    let adir = ns.mkdir(home.ino, "alice", 0o755, &root).unwrap();
    ns.setattr(adir.ino, SetAttr { uid: Some(1000), gid: Some(1000), ..SetAttr::default() }, &root)
        .unwrap();
    assert_eq!(ns.getattr(home.ino).unwrap().nlink, 3);
    assert_eq!(ns.lookup(ROOT, "home", &alice).unwrap().ino, home.ino);
    assert_eq!(errno(ns.lookup(ROOT, "nope", &alice)), "ENOENT");
    let f = ns.create(adir.ino, "notes", 0o644, &alice).unwrap();
    assert_eq!((f.kind, f.uid, f.gid, f.nlink, f.size), (Kind::File, 1000, 1000, 1, 0));
    assert_eq!(errno(ns.create(adir.ino, "notes", 0o644, &alice)), "EEXIST");
    assert_eq!(errno(ns.mkdir(adir.ino, "notes", 0o755, &alice)), "EEXIST");
    assert_eq!(errno(ns.create(f.ino, "x", 0o644, &alice)), "ENOTDIR");
    assert_eq!(errno(ns.lookup(f.ino, "x", &alice)), "ENOTDIR");
    assert_eq!(errno(ns.create(adir.ino, &"n".repeat(256), 0o644, &alice)), "ENAMETOOLONG");
    assert_eq!(errno(ns.create(99_999_999, "x", 0o644, &alice)), "ENOENT");

    // EACCES: bob may not create in alice's directory or read her 0600 file.
    assert_eq!(errno(ns.create(adir.ino, "bobs", 0o644, &bob)), "EACCES");
    let secret = ns.create(adir.ino, "secret", 0o600, &alice).unwrap();
    assert_eq!(errno(ns.open_file(secret.ino, libc::O_RDONLY, &bob)), "EACCES");
    ns.open_file(secret.ino, libc::O_RDWR, &alice).unwrap();
    ns.setattr(adir.ino, SetAttr { mode: Some(0o700), ..SetAttr::default() }, &alice).unwrap();
    assert_eq!(errno(ns.lookup(adir.ino, "notes", &bob)), "EACCES");
    ns.lookup(adir.ino, "notes", &root).unwrap();
    ns.setattr(adir.ino, SetAttr { mode: Some(0o755), ..SetAttr::default() }, &alice).unwrap();

    // setattr: chmod by a stranger, chown by a user, chgrp to a group not one's own: EPERM.
    assert_eq!(
        errno(ns.setattr(f.ino, SetAttr { mode: Some(0o777), ..SetAttr::default() }, &bob)),
        "EPERM"
    );
    assert_eq!(
        errno(ns.setattr(f.ino, SetAttr { uid: Some(1001), ..SetAttr::default() }, &alice)),
        "EPERM"
    );
    assert_eq!(
        errno(ns.setattr(f.ino, SetAttr { gid: Some(5), ..SetAttr::default() }, &alice)),
        "EPERM"
    );
    let a = ns.setattr(f.ino, SetAttr { mode: Some(0o640), ..SetAttr::default() }, &alice).unwrap();
    assert_eq!(a.perm, 0o640);
    let t = ns
        .setattr(
            f.ino,
            SetAttr {
                atime: Some(SetTime::At(7)),
                mtime: Some(SetTime::At(9)),
                ..SetAttr::default()
            },
            &alice,
        )
        .unwrap();
    assert_eq!((t.atime, t.mtime), (7, 9));
    assert_eq!(
        errno(ns.setattr(
            f.ino,
            SetAttr { mtime: Some(SetTime::At(1)), ..SetAttr::default() },
            &bob
        )),
        "EPERM"
    );

    // write, read (holes read as zeros), truncate, EFBIG, EISDIR.
    assert_eq!(ns.write(f.ino, 0, b"hello world").unwrap(), 11);
    assert_eq!(ns.read(f.ino, 0, 100).unwrap(), b"hello world");
    assert_eq!(ns.read(f.ino, 6, 3).unwrap(), b"wor");
    let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    ns.write(f.ino, 700, &big).unwrap();
    let mut expect = vec![0u8; 3700];
    expect[..11].copy_from_slice(b"hello world");
    expect[700..].copy_from_slice(&big);
    assert_eq!(ns.read(f.ino, 0, 8192).unwrap(), expect);
    assert_eq!(ns.getattr(f.ino).unwrap().size, 3700);
    ns.setattr(f.ino, SetAttr { size: Some(5), ..SetAttr::default() }, &alice).unwrap();
    assert_eq!(ns.read(f.ino, 0, 100).unwrap(), b"hello");
    ns.setattr(f.ino, SetAttr { size: Some(1000), ..SetAttr::default() }, &alice).unwrap();
    let grown = ns.read(f.ino, 0, 2000).unwrap();
    assert_eq!(grown.len(), 1000);
    assert_eq!(&grown[..5], b"hello");
    assert!(grown[5..].iter().all(|b| *b == 0), "bytes past a truncate read as zeros");
    assert_eq!(errno(ns.write(f.ino, (256 << 10) - 10, &[1u8; 500])), "EFBIG");
    assert_eq!(
        errno(ns.setattr(f.ino, SetAttr { size: Some(300 << 10), ..SetAttr::default() }, &alice)),
        "EFBIG"
    );
    assert_eq!(errno(ns.write(adir.ino, 0, b"x")), "EISDIR");
    // A file of 200 blocks read in one call: more blocks than one batch reads.
    let wide = ns.create(adir.ino, "wide", 0o644, &alice).unwrap();
    let pattern: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    for (k, chunk) in pattern.chunks(30_000).enumerate() {
        ns.write(wide.ino, (k * 30_000) as u64, chunk).unwrap();
    }
    assert_eq!(ns.read(wide.ino, 0, 131_072).unwrap(), pattern);
    ns.unlink(adir.ino, "wide", &alice).unwrap();
    assert_eq!(
        errno(ns.setattr(f.ino, SetAttr { size: Some(0), ..SetAttr::default() }, &bob)),
        "EACCES"
    );

    // A stranger may not chown even to the same owner; the sticky bit keeps bob from
    // removing alice's file in a shared directory: EPERM.
    assert_eq!(
        errno(ns.setattr(f.ino, SetAttr { uid: Some(1000), ..SetAttr::default() }, &bob)),
        "EPERM"
    );
    let shared = ns.mkdir(ROOT, "shared", 0o1777, &root).unwrap();
    ns.create(shared.ino, "alices", 0o644, &alice).unwrap();
    assert_eq!(errno(ns.unlink(shared.ino, "alices", &bob)), "EPERM");
    assert_eq!(
        errno(ns.rename(shared.ino, "alices", shared.ino, "bobs", RenameFlags::default(), &bob)),
        "EPERM"
    );
    ns.unlink(shared.ino, "alices", &alice).unwrap();

    // symlink, readlink, mknod, link.
    let l = ns.symlink(adir.ino, "link", "notes", &alice).unwrap();
    assert_eq!((l.kind, ns.readlink(l.ino).unwrap().as_str()), (Kind::Symlink, "notes"));
    assert_eq!(errno(ns.readlink(f.ino)), "EINVAL");
    let fifo = ns.mknod(adir.ino, "pipe", libc::S_IFIFO | 0o644, 0, &alice).unwrap();
    assert_eq!(fifo.kind, Kind::Fifo);
    let hard = ns.link(f.ino, home.ino, "notes-link", &root).unwrap();
    assert_eq!(hard.nlink, 2);
    assert_eq!(errno(ns.link(adir.ino, home.ino, "dirlink", &root)), "EPERM");
    assert_eq!(errno(ns.link(f.ino, home.ino, "notes-link", &root)), "EEXIST");

    // readdir lists every entry once, with offsets that survive changes in between.
    assert_eq!(names(&mut ns, adir.ino), [".", "..", "link", "notes", "pipe", "secret"]);
    let first = ns.readdir(adir.ino, 0, 3).unwrap();
    let first_names: Vec<&str> = first.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(first_names, [".", "..", "notes"], "entries come in creation order");
    ns.create(adir.ino, "zz-new", 0o644, &alice).unwrap();
    ns.unlink(adir.ino, "secret", &alice).unwrap();
    ns.rename(adir.ino, "notes", adir.ino, "notes-renamed", RenameFlags::default(), &alice)
        .unwrap();
    let rest: Vec<String> =
        ns.readdir(adir.ino, first[2].offset, 100).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(
        rest,
        ["link", "pipe", "zz-new", "notes-renamed"],
        "a removed entry goes, new ones come after the cursor"
    );
    ns.rename(adir.ino, "notes-renamed", adir.ino, "notes", RenameFlags::default(), &alice)
        .unwrap();
    assert_eq!(errno(ns.readdir(f.ino, 0, 10)), "ENOTDIR");

    // unlink and rmdir.
    assert_eq!(errno(ns.unlink(home.ino, "alice", &root)), "EISDIR");
    assert_eq!(errno(ns.rmdir(home.ino, "alice", &root)), "ENOTEMPTY");
    assert_eq!(errno(ns.rmdir(adir.ino, "notes", &alice)), "ENOTDIR");
    assert_eq!(errno(ns.unlink(adir.ino, "nothing", &alice)), "ENOENT");
    assert_eq!(errno(ns.unlink(adir.ino, "notes", &bob)), "EACCES");
    ns.unlink(home.ino, "notes-link", &root).unwrap();
    assert_eq!(ns.getattr(f.ino).unwrap().nlink, 1);
    let empty = ns.mkdir(home.ino, "empty", 0o755, &root).unwrap();
    ns.rmdir(home.ino, "empty", &root).unwrap();
    assert_eq!(errno(ns.getattr(empty.ino)), "ENOENT");

    // rename: within and across directories, replacing, NOREPLACE, EXCHANGE, errors.
    let plain = RenameFlags::default();
    ns.rename(adir.ino, "notes", adir.ino, "notes2", plain, &alice).unwrap();
    assert_eq!(ns.lookup(adir.ino, "notes2", &alice).unwrap().ino, f.ino);
    assert_eq!(errno(ns.lookup(adir.ino, "notes", &alice)), "ENOENT");
    let other = ns.create(home.ino, "other", 0o644, &root).unwrap();
    ns.rename(home.ino, "other", adir.ino, "notes2", plain, &root).unwrap();
    assert_eq!(ns.lookup(adir.ino, "notes2", &alice).unwrap().ino, other.ino);
    assert_eq!(errno(ns.getattr(f.ino)), "ENOENT", "the replaced file's last link went");
    let noreplace = RenameFlags { noreplace: true, exchange: false };
    assert_eq!(errno(ns.rename(adir.ino, "pipe", adir.ino, "notes2", noreplace, &alice)), "EEXIST");
    let exchange = RenameFlags { noreplace: false, exchange: true };
    ns.rename(adir.ino, "pipe", adir.ino, "notes2", exchange, &alice).unwrap();
    assert_eq!(ns.lookup(adir.ino, "pipe", &alice).unwrap().ino, other.ino);
    assert_eq!(ns.lookup(adir.ino, "notes2", &alice).unwrap().ino, fifo.ino);
    assert_eq!(errno(ns.rename(adir.ino, "pipe", adir.ino, "absent", exchange, &alice)), "ENOENT");
    let d1 = ns.mkdir(ROOT, "d1", 0o755, &root).unwrap();
    let d2 = ns.mkdir(d1.ino, "d2", 0o755, &root).unwrap();
    assert_eq!(
        errno(ns.rename(ROOT, "d1", d2.ino, "d1", plain, &root)),
        "EINVAL",
        "a directory under itself"
    );
    assert_eq!(errno(ns.rename(ROOT, "d1", d1.ino, "x", plain, &root)), "EINVAL");
    assert_eq!(errno(ns.rename(adir.ino, "pipe", ROOT, "d1", plain, &root)), "EISDIR");
    assert_eq!(errno(ns.rename(ROOT, "d1", adir.ino, "pipe", plain, &root)), "ENOTDIR");
    ns.mkdir(d2.ino, "d3", 0o755, &root).unwrap();
    assert_eq!(errno(ns.rename(ROOT, "home", d1.ino, "d2", plain, &root)), "ENOTEMPTY");
    ns.rename(d1.ino, "d2", ROOT, "moved", plain, &root).unwrap();
    assert_eq!(ns.getattr(d2.ino).unwrap().parent, ROOT);
    assert_eq!(ns.getattr(d1.ino).unwrap().nlink, 2);
    ns.rename(ROOT, "d1", adir.ino, "d1", RenameFlags::from_bits(0).unwrap(), &root).unwrap();
    assert_eq!(
        errno(RenameFlags::from_bits(libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE)),
        "EINVAL"
    );

    // statfs counts the inodes.
    let st = ns.statfs().unwrap();
    assert!(st.files - st.free_files >= 8, "{st:?}");

    let report = mdserver::check::check(&mut ns).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert!(report.directories >= 5);

    // The checker finds what is wrong: a directory's link count, an orphan inode, an entry
    // naming no inode, a directory named twice (a cycle's way in).
    let tables = ns.tables().clone();
    let session = ns.session();
    let mut tx = session.begin();
    tx.update(&tables.inodes, &[Value::I64(d1.ino as i64)], &[("nlink", Value::I64(7))]).unwrap();
    tx.insert(&tables.inodes, &ns_attr_values(99_000_001)).unwrap();
    let dangling = [
        ("parent", Value::I64(ROOT as i64)),
        ("name", Value::Text("dangling".into())),
        ("ino", Value::I64(99_000_002)),
        ("cookie", Value::I64(2_000_000)),
        ("mode", Value::I64(i64::from(libc::S_IFREG | 0o644))),
    ];
    tx.insert(&tables.dentries, &dangling).unwrap();
    let twice = [
        ("parent", Value::I64(d1.ino as i64)),
        ("name", Value::Text("again".into())),
        ("ino", Value::I64(home.ino as i64)),
        ("cookie", Value::I64(900)),
        ("mode", Value::I64(i64::from(libc::S_IFDIR | 0o755))),
    ];
    tx.insert(&tables.dentries, &twice).unwrap();
    session.execute(&mut tx, client::Exec::Commit).unwrap();
    let report = mdserver::check::check(&mut ns).unwrap();
    let all = report.problems.join("\n");
    for expected in [
        format!("directory {} has nlink 7", d1.ino),
        "inode 99000001 (File) is an orphan".to_string(),
        "names inode 99000002, which does not exist".to_string(),
        format!("directory {} is named by 2 entries", home.ino),
        "at or past the next".to_string(),
    ] {
        assert!(all.contains(&expected), "the checker missed {expected:?}: {all}");
    }
}

/// An inode row's values for a file `ino` (made by hand, outside the namespace's operations).
fn ns_attr_values(ino: u64) -> Vec<(&'static str, Value)> {
    vec![
        ("ino", Value::I64(ino as i64)),
        ("mode", Value::I64(i64::from(libc::S_IFREG | 0o644))),
        ("uid", Value::I64(0)),
        ("gid", Value::I64(0)),
        ("size", Value::I64(0)),
        ("nlink", Value::I64(1)),
        ("atime", Value::I64(0)),
        ("mtime", Value::I64(0)),
        ("ctime", Value::I64(0)),
        ("rdev", Value::I64(0)),
        ("parent", Value::I64(0)),
        ("next_cookie", Value::I64(3)),
        ("target", Value::Null),
    ]
}
