//! The consistency checker: reads every inode, entry and block (full scans) and compares
//! them. Run it when no operation is in flight; each problem found is named.
//!
//! It checks that every entry names an inode of its kind; a file's link count is its
//! entries; a directory has exactly one entry (the root none), its `..` is that entry's
//! directory, its link count is 2 plus its subdirectories and its size its entries; no inode
//! is an orphan; walking down from the root reaches every directory once (a tree, no
//! cycles); readdir cookies are unique in their directory and below its next cookie; and
//! every block belongs to a file and lies within its size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use client::{Row, ScanRequest, Table, Value};

use crate::attr::{Attr, Kind};
use crate::error::{from_cluster, FsResult};
use crate::ns::{Dentry, Namespace};
use crate::schema::ROOT;

/// What the checker read and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Inodes read.
    pub inodes: usize,
    /// Entries read.
    pub entries: usize,
    /// Blocks read.
    pub blocks: usize,
    /// Directories reached from the root.
    pub directories: usize,
    /// Each inconsistency found (empty: the namespace is consistent).
    pub problems: Vec<String>,
}

impl Report {
    /// Whether nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn all_rows(ns: &mut Namespace<'_>, table: &Arc<Table>) -> FsResult<Vec<Row>> {
    let scan = ns.session.scan(&ScanRequest::new(table)).map_err(|e| from_cluster(&e))?;
    let mut out = Vec::new();
    for values in scan {
        out.push(Row { table: table.clone(), values: values.map_err(|e| from_cluster(&e))? });
    }
    Ok(out)
}

/// What the checker read: inodes by number, entries, and the entries of each directory.
struct Read<'a> {
    inodes: &'a BTreeMap<u64, Attr>,
    entries: &'a [Dentry],
    children: BTreeMap<u64, Vec<&'a Dentry>>,
    links: HashMap<u64, u64>,
}

/// Reads the whole namespace and checks it.
pub fn check(ns: &mut Namespace<'_>) -> FsResult<Report> {
    let tables = ns.tables.clone();
    let mut problems = Vec::new();
    let mut inodes: BTreeMap<u64, Attr> = BTreeMap::new();
    for row in all_rows(ns, &tables.inodes)? {
        match Attr::from_row(&row) {
            Ok(a) => {
                inodes.insert(a.ino, a);
            }
            Err(e) => problems.push(format!("an unreadable inode row: {e}")),
        }
    }
    let mut entries: Vec<Dentry> = Vec::new();
    for row in all_rows(ns, &tables.dentries)? {
        match Dentry::from_row(&row) {
            Ok(d) => entries.push(d),
            Err(e) => problems.push(format!("an unreadable entry row: {e}")),
        }
    }
    let blocks = all_rows(ns, &tables.blocks)?;
    let mut read = Read {
        inodes: &inodes,
        entries: &entries,
        children: BTreeMap::new(),
        links: HashMap::new(),
    };
    for d in &entries {
        *read.links.entry(d.ino).or_default() += 1;
        read.children.entry(d.parent).or_default().push(d);
    }
    check_entries(&read, &mut problems);
    for a in inodes.values() {
        check_inode(&read, a, &mut problems);
    }
    let directories = check_tree(&read, &mut problems);
    check_blocks(&inodes, &blocks, u64::from(ns.config.block_size), &mut problems);
    Ok(Report {
        inodes: inodes.len(),
        entries: entries.len(),
        blocks: blocks.len(),
        directories,
        problems,
    })
}

/// Each entry: its inode exists and is of its kind, it is in a directory, its cookie is
/// unique there and below the directory's next.
fn check_entries(read: &Read<'_>, problems: &mut Vec<String>) {
    let mut cookies: BTreeSet<(u64, u64)> = BTreeSet::new();
    for d in read.entries {
        if !cookies.insert((d.parent, d.cookie)) {
            problems
                .push(format!("entry {:?} of {} repeats cookie {}", d.name, d.parent, d.cookie));
        }
        match read.inodes.get(&d.ino) {
            None => problems.push(format!(
                "entry {:?} of directory {} names inode {}, which does not exist",
                d.name, d.parent, d.ino
            )),
            Some(a) if a.kind != d.kind => problems.push(format!(
                "entry {:?} of {} says {:?}, inode {} is {:?}",
                d.name, d.parent, d.kind, d.ino, a.kind
            )),
            Some(_) => {}
        }
        match read.inodes.get(&d.parent) {
            None => problems.push(format!(
                "entry {:?} is in directory {}, which does not exist",
                d.name, d.parent
            )),
            Some(p) if p.kind != Kind::Dir => problems
                .push(format!("entry {:?} is in inode {}, not a directory", d.name, d.parent)),
            Some(p) if d.cookie >= p.next_cookie => problems.push(format!(
                "entry {:?} of {} has cookie {} at or past the next, {}",
                d.name, d.parent, d.cookie, p.next_cookie
            )),
            Some(_) => {}
        }
    }
}

/// One inode: named by its entries as its link count says (a directory by one, the root by
/// none), a directory's size, nlink and parent agree with its entries, no orphan.
fn check_inode(read: &Read<'_>, a: &Attr, problems: &mut Vec<String>) {
    let named = read.links.get(&a.ino).copied().unwrap_or(0);
    let kids = read.children.get(&a.ino).map_or(&[][..], Vec::as_slice);
    if a.ino == ROOT {
        if named != 0 {
            problems.push(format!("the root is named by {named} entries"));
        }
    } else if named == 0 {
        problems.push(format!("inode {} ({:?}) is an orphan: no entry names it", a.ino, a.kind));
    }
    if a.kind != Kind::Dir {
        if a.nlink != named && a.ino != ROOT {
            problems.push(format!("inode {} has nlink {} but {named} entries", a.ino, a.nlink));
        }
        if !kids.is_empty() {
            problems.push(format!(
                "inode {} is not a directory but holds {} entries",
                a.ino,
                kids.len()
            ));
        }
        return;
    }
    if a.ino != ROOT && named != 1 {
        problems.push(format!("directory {} is named by {named} entries", a.ino));
    }
    let subdirs = kids.iter().filter(|d| d.kind == Kind::Dir).count() as u64;
    if a.nlink != 2 + subdirs {
        problems.push(format!(
            "directory {} has nlink {} but {subdirs} subdirectories",
            a.ino, a.nlink
        ));
    }
    if a.size != kids.len() as u64 {
        problems.push(format!(
            "directory {} has size {} but {} entries",
            a.ino,
            a.size,
            kids.len()
        ));
    }
    if a.ino != ROOT {
        let up: Vec<u64> =
            read.entries.iter().filter(|d| d.ino == a.ino).map(|d| d.parent).collect();
        if up.first().is_some_and(|p| *p != a.parent) {
            problems.push(format!(
                "directory {} says its parent is {}, its entry is in {:?}",
                a.ino, a.parent, up
            ));
        }
    }
}

/// Down from the root: each directory is reached once, and every directory is reached.
/// Returns how many were.
fn check_tree(read: &Read<'_>, problems: &mut Vec<String>) -> usize {
    let mut seen = BTreeSet::from([ROOT]);
    let mut todo = vec![ROOT];
    while let Some(dir) = todo.pop() {
        for d in read.children.get(&dir).map_or(&[][..], Vec::as_slice) {
            if d.kind != Kind::Dir {
                continue;
            }
            if seen.insert(d.ino) {
                todo.push(d.ino);
            } else {
                problems.push(format!(
                    "directory {} is reached twice (again as {:?} in {dir})",
                    d.ino, d.name
                ));
            }
        }
    }
    let dirs = read.inodes.values().filter(|a| a.kind == Kind::Dir).count();
    if seen.len() != dirs {
        problems.push(format!(
            "{} directories exist, {} are reachable from the root",
            dirs,
            seen.len()
        ));
    }
    seen.len()
}

/// Every block belongs to a file and lies within its size.
fn check_blocks(inodes: &BTreeMap<u64, Attr>, blocks: &[Row], bs: u64, problems: &mut Vec<String>) {
    for row in blocks {
        let (Some(ino), Some(blk)) =
            (row.get("ino").and_then(Value::as_i64), row.get("blk").and_then(Value::as_i64))
        else {
            problems.push("an unreadable block row".into());
            continue;
        };
        match inodes.get(&(ino as u64)) {
            Some(a) if a.kind == Kind::File && (blk as u64) * bs < a.size => {}
            Some(a) => problems.push(format!(
                "block {blk} of inode {ino} lies past its size {} or it is no file",
                a.size
            )),
            None => {
                problems.push(format!("block {blk} belongs to inode {ino}, which does not exist"))
            }
        }
    }
}
