//! The namespace client: one cluster session, the namespace's tables, and the transaction
//! discipline every operation follows.
//!
//! Locks are taken in one fixed order, so two operations never wait on each other in a cycle:
//! the `rename` row of `fs_meta` (only renames that move a directory to another parent), then
//! inode rows in ascending inode number, one round trip each. Entry and block rows of a
//! directory or file are written only by a transaction that holds its inode's exclusive lock,
//! so they need no order of their own. An entry found by a committed read before the locks is
//! read again under them; if it changed meanwhile the transaction is rolled back and the
//! operation starts again (HopsFS resolves paths the same way: read, lock in total order,
//! validate).
//!
//! A transaction that fails for a temporary reason (a lock wait past the deadlock timeout, an
//! overloaded or failed data node) is retried with back-off; a commit whose outcome a node
//! failure left unknown is resolved by asking the data node that took over its coordinator.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{Error, Exec, LockMode, OpId, Row, Session, Transaction, TxOutcome, TxState, Value};

use crate::attr::{Attr, Caller, Kind};
use crate::error::{err, from_cluster, FsError, FsResult};
use crate::schema::{self, FsConfig, Tables, FIRST_COOKIE, NAME_MAX, ROOT};

/// Why one attempt of an operation stopped.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The operation's answer (an errno): not retried.
    Fs(FsError),
    /// The cluster refused or failed: retried when temporary.
    Cluster(Error),
    /// An entry changed between the committed read and the locks: retried.
    Stale,
}

impl From<FsError> for Fail {
    fn from(e: FsError) -> Fail {
        Fail::Fs(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Cluster(e)
    }
}

/// One attempt's result.
pub(crate) type Step<T> = Result<T, Fail>;

/// Attempts an operation makes before it gives up with EIO (temporary failures only).
const MAX_ATTEMPTS: u32 = 40;
/// How long an operation keeps retrying, at most.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long a commit with an unknown outcome waits for the outcome report.
const OUTCOME_WAIT: Duration = Duration::from_secs(2);

/// A directory entry as `fs_dentry` holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dentry {
    /// The directory.
    pub parent: u64,
    /// The name.
    pub name: String,
    /// The inode it names.
    pub ino: u64,
    /// Its readdir cookie (the offset after it).
    pub cookie: u64,
    /// The named inode's kind.
    pub kind: Kind,
}

impl Dentry {
    pub(crate) fn from_row(row: &Row) -> FsResult<Dentry> {
        let int = |c: &str| {
            row.get(c)
                .and_then(Value::as_i64)
                .ok_or_else(|| FsError::new(libc::EIO, format!("entry row without {c:?}")))
        };
        let name = match row.get("name") {
            Some(Value::Text(t)) => t.clone(),
            _ => return err(libc::EIO, "entry row without a name"),
        };
        let mode = int("mode")? as u32;
        let kind = Kind::of_mode(mode)
            .ok_or_else(|| FsError::new(libc::EIO, format!("entry {name:?} has mode {mode:#o}")))?;
        Ok(Dentry {
            parent: int("parent")? as u64,
            name,
            ino: int("ino")? as u64,
            cookie: int("cookie")? as u64,
            kind,
        })
    }
}

/// Counters of what the namespace did, for the benchmark and the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsStats {
    /// Attempts retried after a temporary cluster failure.
    pub retried: u64,
    /// Attempts retried because an entry changed before its locks.
    pub stale: u64,
    /// Commits whose outcome a node failure left unknown and a report resolved.
    pub resolved: u64,
    /// Inode ranges reserved.
    pub ranges: u64,
}

/// The namespace through one cluster session (one thread).
#[derive(Debug)]
pub struct Namespace<'c> {
    pub(crate) session: Session<'c>,
    pub(crate) tables: Tables,
    pub(crate) config: FsConfig,
    next_ino: u64,
    ino_end: u64,
    /// Whether the attempt's transaction has sent anything (a rollback then releases locks).
    sent: bool,
    /// An earlier attempt of this operation committed with an outcome nobody could report
    /// (its coordinator died): a retry that finds the operation's effect takes it as done.
    pub(crate) uncertain: bool,
    pub(crate) stats: NsStats,
}

/// Inodes locked (by number) and the rows of reads made with the last lock.
pub(crate) type Locked = (BTreeMap<u64, Attr>, Vec<Option<Row>>);

/// Nanoseconds since the epoch now.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// EINVAL, ENAMETOOLONG or Ok for an entry name.
pub(crate) fn check_name(name: &str) -> FsResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return err(libc::EINVAL, format!("{name:?} is not a valid entry name"));
    }
    if name.len() > NAME_MAX {
        return err(
            libc::ENAMETOOLONG,
            format!("a name of {} bytes (at most {NAME_MAX})", name.len()),
        );
    }
    Ok(())
}

impl<'c> Namespace<'c> {
    /// Opens the namespace on `session`: creates its tables and the root directory when they
    /// do not exist (any number of clients may do this at once).
    pub fn open(mut session: Session<'c>, config: FsConfig) -> FsResult<Namespace<'c>> {
        config.validate()?;
        let tables = schema::ensure_tables(&mut session, &config)?;
        let mut ns = Namespace {
            session,
            tables,
            config,
            next_ino: 0,
            ino_end: 0,
            sent: false,
            uncertain: false,
            stats: NsStats::default(),
        };
        let now = now_ns();
        let root = Attr {
            ino: ROOT,
            kind: Kind::Dir,
            perm: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: 2,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
            parent: ROOT,
            next_cookie: FIRST_COOKIE,
            target: None,
        };
        let inodes = ns.tables.inodes.clone();
        let meta = ns.tables.meta.clone();
        ns.insert_once(&inodes, &root.values())?;
        ns.insert_once(
            &meta,
            &[("name", Value::Text("next_ino".into())), ("value", Value::I64(ROOT as i64 + 1))],
        )?;
        ns.insert_once(&meta, &[("name", Value::Text("rename".into())), ("value", Value::I64(0))])?;
        Ok(ns)
    }

    fn insert_once(
        &mut self,
        table: &std::sync::Arc<client::Table>,
        values: &[(&str, Value)],
    ) -> FsResult<()> {
        self.run(None, |ns, tx| {
            tx.insert(table, values)?;
            match ns.commit(tx) {
                Err(Fail::Cluster(Error::DuplicateKey(_))) => Ok(()),
                r => r,
            }
        })
    }

    /// The settings.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> NsStats {
        self.stats
    }

    /// The cluster session (for checks and tests).
    pub fn session(&mut self) -> &mut Session<'c> {
        &mut self.session
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Runs `body` as one transaction, again after temporary failures and stale reads; a
    /// transaction left open by a failed attempt is rolled back (its locks released at once).
    /// `hint`: an inode whose primary replica's node should coordinate.
    pub(crate) fn run<T>(
        &mut self,
        hint: Option<u64>,
        mut body: impl FnMut(&mut Self, &mut Transaction) -> Step<T>,
    ) -> FsResult<T> {
        let started = Instant::now();
        let mut attempt = 0u32;
        self.uncertain = false;
        loop {
            attempt += 1;
            let mut tx = match hint {
                Some(ino) => self
                    .session
                    .begin_hinted(&self.tables.inodes, &[Value::I64(ino as i64)])
                    .map_err(|e| from_cluster(&e))?,
                None => self.session.begin(),
            };
            self.sent = false;
            let result = body(self, &mut tx);
            if self.sent && tx.state() == TxState::Open {
                let _ = self.session.execute(&mut tx, Exec::Rollback);
            }
            let retry = match result {
                Ok(v) => return Ok(v),
                Err(Fail::Fs(e)) => return Err(e),
                Err(Fail::Stale) => {
                    self.stats.stale += 1;
                    if attempt >= MAX_ATTEMPTS || started.elapsed() >= RETRY_FOR {
                        return Err(FsError::new(
                            libc::EAGAIN,
                            format!("an entry kept changing ({attempt} attempts)"),
                        ));
                    }
                    true
                }
                Err(Fail::Cluster(e)) if e.is_temporary() => {
                    self.stats.retried += 1;
                    tracing::debug!(error = %e, attempt, "retrying");
                    if attempt >= MAX_ATTEMPTS || started.elapsed() >= RETRY_FOR {
                        return Err(from_cluster(&e));
                    }
                    true
                }
                Err(Fail::Cluster(Error::Schema { .. })) if attempt == 1 => {
                    // The tables changed under a cached definition: read them again once.
                    self.session.forget_tables();
                    self.tables = schema::ensure_tables(&mut self.session, &self.config)?;
                    true
                }
                Err(Fail::Cluster(e)) => return Err(from_cluster(&e)),
            };
            if retry && attempt > 1 {
                std::thread::sleep(
                    Duration::from_micros(200u64 << attempt.min(10))
                        .min(Duration::from_millis(100)),
                );
            }
        }
    }

    /// Executes the transaction's defined operations, keeping it open.
    pub(crate) fn exec(&mut self, tx: &mut Transaction) -> Step<()> {
        self.sent = true;
        self.session.execute(tx, Exec::NoCommit)?;
        Ok(())
    }

    /// Executes and commits. A commit whose outcome a node failure left unknown is resolved:
    /// committed is success, aborted is a retry; with no report the operation is retried as
    /// uncertain, and a retry that finds the first attempt's effect (the entry it made names
    /// its inode, the entry it removed is gone) takes it as done.
    pub(crate) fn commit(&mut self, tx: &mut Transaction) -> Step<()> {
        self.sent = true;
        match self.session.execute(tx, Exec::Commit) {
            Ok(_) => Ok(()),
            Err(Error::NodeFailure { outcome_unknown: true, message }) => {
                match self.session.outcome(tx.id(), OUTCOME_WAIT) {
                    Some(TxOutcome::Committed { .. }) => {
                        self.stats.resolved += 1;
                        Ok(())
                    }
                    Some(TxOutcome::Aborted) => {
                        self.stats.resolved += 1;
                        Err(Fail::Cluster(Error::NodeFailure { outcome_unknown: false, message }))
                    }
                    None => {
                        self.uncertain = true;
                        tracing::info!(
                            tx = tx.id(),
                            "a commit's outcome is unknown: retrying the operation as uncertain"
                        );
                        Err(Fail::Cluster(Error::NodeFailure { outcome_unknown: false, message }))
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A fresh inode number from this client's reserved range (a new range, one transaction
    /// on the `next_ino` row, when it is used up).
    pub(crate) fn alloc_ino(&mut self) -> FsResult<u64> {
        if self.next_ino >= self.ino_end {
            let range = self.config.ino_range;
            let meta = self.tables.meta.clone();
            let key = [Value::Text("next_ino".into())];
            let start = self.run(None, |ns, tx| {
                let op = tx.read(&meta, &key, LockMode::Exclusive)?;
                ns.exec(tx)?;
                let next =
                    tx.row(op).and_then(|r| r.get("value")).and_then(Value::as_i64).ok_or_else(
                        || FsError::new(libc::EIO, "the next_ino row of fs_meta is missing"),
                    )?;
                tx.update(&meta, &key, &[("value", Value::I64(next + range as i64))])?;
                ns.commit(tx)?;
                Ok(next as u64)
            })?;
            self.stats.ranges += 1;
            self.next_ino = start;
            self.ino_end = start + range;
        }
        self.next_ino += 1;
        Ok(self.next_ino - 1)
    }

    /// Reads inode `ino` (committed read, no lock).
    pub fn getattr(&mut self, ino: u64) -> FsResult<Attr> {
        let inodes = self.tables.inodes.clone();
        self.run(Some(ino), |ns, tx| {
            let op = tx.read(&inodes, &[Value::I64(ino as i64)], LockMode::CommittedRead)?;
            ns.commit(tx)?;
            Ok(attr_of(tx, op, ino)?)
        })
    }

    /// The entry `name` of directory `parent` and its inode, checking search permission on
    /// the directory.
    pub fn lookup(&mut self, parent: u64, name: &str, caller: &Caller) -> FsResult<Attr> {
        if name.len() > NAME_MAX {
            return err(
                libc::ENAMETOOLONG,
                format!("a name of {} bytes (at most {NAME_MAX})", name.len()),
            );
        }
        let (inodes, dentries) = (self.tables.inodes.clone(), self.tables.dentries.clone());
        self.run(Some(parent), |ns, tx| {
            let p = tx.read(&inodes, &[Value::I64(parent as i64)], LockMode::CommittedRead)?;
            let d = tx.read(&dentries, &dentry_key(parent, name), LockMode::CommittedRead)?;
            ns.exec(tx)?;
            let dir = attr_of(tx, p, parent)?;
            dir.dir()?;
            dir.check(caller, crate::attr::MAY_EXEC, "search")?;
            let Some(entry) = tx.row(d).map(Dentry::from_row).transpose()? else {
                return Err(FsError::new(
                    libc::ENOENT,
                    format!("no entry {name:?} in directory {parent}"),
                )
                .into());
            };
            let c = tx.read(&inodes, &[Value::I64(entry.ino as i64)], LockMode::CommittedRead)?;
            ns.commit(tx)?;
            match tx.row(c) {
                Some(row) => Ok(Attr::from_row(row)?),
                // Removed between the two reads: as if the entry had not been there.
                None => Err(FsError::new(
                    libc::ENOENT,
                    format!("entry {name:?} in directory {parent} was just removed"),
                )
                .into()),
            }
        })
    }

    /// Takes exclusive locks on `inos` in ascending order, one round trip each, then reads the
    /// entries `extra` (committed reads: each entry's directory, its owner, is among `inos`
    /// and locked, so nobody else can change it). The entries go with the last lock when
    /// none of them belongs to the inode that lock takes (a batch's operations run in
    /// parallel, so an entry read beside its owner's lock could be read before the lock is
    /// held); otherwise in a round of their own. Returns the inodes found (by number) and the
    /// entries' rows.
    pub(crate) fn lock_inodes(
        &mut self,
        tx: &mut Transaction,
        inos: &[u64],
        extra: &[(u64, &str)],
    ) -> Step<Locked> {
        let mut sorted: Vec<u64> = inos.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let inodes = self.tables.inodes.clone();
        let dentries = self.tables.dentries.clone();
        let last = sorted.last().copied();
        let with_last = !extra.iter().any(|(owner, _)| Some(*owner) == last);
        let mut found = BTreeMap::new();
        let mut extra_ops: Vec<OpId> = Vec::new();
        let mut read_entries = |tx: &mut Transaction| -> Step<()> {
            for (owner, name) in extra {
                let key = dentry_key(*owner, name);
                extra_ops.push(tx.read(&dentries, &key, LockMode::CommittedRead)?);
            }
            Ok(())
        };
        for (i, ino) in sorted.iter().enumerate() {
            let op = tx.read(&inodes, &[Value::I64(*ino as i64)], LockMode::Exclusive)?;
            if i + 1 == sorted.len() && with_last {
                read_entries(tx)?;
            }
            self.exec(tx)?;
            if let Some(row) = tx.row(op) {
                found.insert(*ino, Attr::from_row(row)?);
            }
        }
        if !with_last && !extra.is_empty() {
            read_entries(tx)?;
            self.exec(tx)?;
        }
        let extras = extra_ops.into_iter().map(|o| tx.row(o).cloned()).collect();
        Ok((found, extras))
    }

    /// Writes every inode of `attrs` that differs from `before` (an update each).
    pub(crate) fn write_inodes(
        &self,
        tx: &mut Transaction,
        before: &BTreeMap<u64, Attr>,
        attrs: &BTreeMap<u64, Attr>,
    ) -> Step<()> {
        for (ino, a) in attrs {
            if before.get(ino) != Some(a) {
                tx.update(&self.tables.inodes, &[Value::I64(*ino as i64)], &a.update_values())?;
            }
        }
        Ok(())
    }

    /// Reads every block number of file `ino` at or after `from` (committed; the caller holds
    /// the inode's lock, so the list is stable).
    pub(crate) fn block_numbers(&mut self, ino: u64, from: u64) -> Step<Vec<u64>> {
        let request = client::ScanRequest::new(&self.tables.blocks)
            .index("by_ino")
            .range(client::Range {
                low: client::RangeEnd {
                    values: vec![Value::I64(ino as i64), Value::I64(from as i64)],
                    inclusive: true,
                },
                high: client::RangeEnd { values: vec![Value::I64(ino as i64)], inclusive: true },
            })
            .columns(&["blk"]);
        let mut out = Vec::new();
        for row in self.session.scan(&request)? {
            let row = row?;
            if let Some(b) = row.first().and_then(Value::as_i64) {
                out.push(b as u64);
            }
        }
        Ok(out)
    }
}

/// The key of entry `name` in `parent`.
pub(crate) fn dentry_key(parent: u64, name: &str) -> Vec<Value> {
    vec![Value::I64(parent as i64), Value::Text(name.to_string())]
}

/// The inode a read found, or ENOENT naming it.
pub(crate) fn attr_of(tx: &Transaction, op: OpId, ino: u64) -> FsResult<Attr> {
    match tx.row(op) {
        Some(row) => Attr::from_row(row),
        None => err(libc::ENOENT, format!("no inode {ino}")),
    }
}

/// The inode of `attrs`, or ENOENT (it was removed before its lock was taken).
pub(crate) fn locked(attrs: &BTreeMap<u64, Attr>, ino: u64) -> Step<Attr> {
    attrs
        .get(&ino)
        .cloned()
        .ok_or_else(|| Fail::Fs(FsError::new(libc::ENOENT, format!("no inode {ino}"))))
}
