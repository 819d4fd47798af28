//! Partition scans on the storage side (NDB's LQH scan with TUP / TUX): a scan record per
//! `SCAN_FRAGREQ`, which walks one partition (its row slots in order, or an ordered index over
//! its ranges), runs the pushed-down program on each committed image, and sends what the
//! program returns in batches of at most `batch_rows` rows and `batch_bytes` bytes. After a
//! batch it waits for `SCAN_FRAG_NEXTREQ` (flow control: one batch between this block and the
//! client per partition). An aggregate scan sends nothing until its partition is done, then its
//! partial groups.
//!
//! Fairness: a step examines at most [`STEP_ROWS`] rows, then the scan sends itself
//! `SCAN_CONTINUE` and yields, so key operations and other scans run between steps.
//!
//! What a scan sees (read committed): each row's latest committed image at the moment the step
//! reaches it; never an uncommitted image. A full scan meets each key at most once (slots are
//! stable and not reaped while it is open, see `fragment`). An index scan resumes after the
//! last entry it examined, so each entry is met at most once; a row the scan met whose entry
//! a commit then moves ahead of the cursor is passed over at its new place (`met_before`), so
//! each row is met at most once (a row moved from ahead of the cursor to behind it is not met).
//!
//! Locking scans (shared or exclusive, for a transaction): each row is locked for the
//! transaction before it is read (a scan waits in the row's queue like an operation, state
//! `LockWait`); a returned row keeps its lock until the transaction ends
//! (`SCAN_LOCK_RELEASE` from the coordinator), so the transaction's key operations can update
//! or delete it (NDB's lock takeover); a row not returned has its lock dropped at once. A
//! locking scan reads the image its transaction sees (its own writes included).
//!
//! States: `Running` (a step is due: `SCAN_CONTINUE` in flight) -> `Waiting` (a batch is out)
//! -> `Running` on `SCAN_FRAG_NEXTREQ`; `Running` -> `LockWait` -> `Running` on the grant; the record is freed when the partition is done, on
//! close, or on an error (answered with `SCAN_FRAGREF`).

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use node::block::Context;
use signals::gsn::NodeFailRep;
use signals::{BlockRef, NodeId, SignalData, SignalView};

use super::fragment::{Fragment, Moved};
use super::Storage;
use crate::error::ErrorCode;
use crate::index;
use crate::locks::{Mode, TxKey};
use crate::program::{Groups, Outcome, Program, ProgramLimits, RunError, Verified};
use crate::protocol::*;
use crate::row;
use crate::scan::ScanSpec;
use crate::schema::Table;

/// Rows a scan examines in one step before it yields.
pub const STEP_ROWS: u32 = 16_384;

/// How many rows ahead a full scan prefetches row images.
const PREFETCH_ROWS: usize = 16;

/// Index entries read from the tree at a time.
const INDEX_CHUNK: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScanState {
    /// A step is due (`SCAN_CONTINUE` sent to this block).
    Running,
    /// A batch is out; waiting for `SCAN_FRAG_NEXTREQ`.
    Waiting,
    /// Waiting in a row's lock queue (a locking scan); the grant runs the next step.
    LockWait,
}

/// Marks a lock-queue entry as a waiting scan (its handle below), not an operation.
pub(super) const SCAN_WAITER: u32 = crate::pool::SPARE_BIT;

/// A range as entry-key bounds.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

#[derive(Debug)]
enum Cursor {
    /// A full scan: the next row slot.
    Slots { next: u32 },
    /// An index scan: the ranges as entry-key bounds, sorted by start; the range in hand and
    /// the last entry examined.
    Index { index: usize, ranges: Vec<KeyRange>, range: usize, after: Option<Box<[u8]>> },
}

/// One open partition scan.
#[derive(Debug)]
pub(crate) struct ScanRecord {
    state: ScanState,
    coordinator: BlockRef,
    scan_slot: u32,
    fragment: u32,
    table: Arc<Table>,
    partition: u32,
    program: Verified,
    groups: Groups,
    cursor: Cursor,
    batch_rows: u32,
    batch_bytes: usize,
    /// Rows still to return (u64::MAX: no limit).
    left: u64,
    out: Vec<u8>,
    rows: u32,
    examined: u32,
    /// A locking scan: the mode and the transaction that holds the locks.
    lock: Option<(Mode, TxKey)>,
    /// The row whose lock was granted while the scan waited (held, not yet examined).
    granted: Option<u32>,
    /// Rows this scan locked and returned: their locks stay with the transaction.
    held: Vec<u32>,
    /// Row slots an index scan met already whose entries a commit moved ahead of the cursor:
    /// met again at the new place, they are passed over (each row at most once).
    met_before: HashSet<u32>,
}

type Refusal = (ErrorCode, String);

/// What a step ended with.
enum StepEnd {
    /// The step budget is spent: continue later.
    Yield,
    /// A batch is full.
    Batch,
    /// The partition is done (or the limit reached).
    Done,
    /// A locking scan waits for a row's lock.
    LockWait,
}

/// What became of one row.
enum Visit {
    /// Examined (returned, folded, skipped); go on.
    Next,
    /// It does not fit the batch: the batch ends before it.
    Full,
    /// Its lock is held by another transaction: wait in its queue.
    Wait,
}

impl Storage {
    /// Opens a partition scan and runs its first step.
    pub(super) fn on_scan_frag_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<ScanFragReq>(signal).copied() else { return };
        let coordinator = signal.sender();
        let spec_words = signal.section(0).unwrap_or(&[]);
        match self.open_scan(&req, coordinator, spec_words, ctx) {
            Ok(handle) => self.step(handle, ctx),
            Err((error, message)) => self.scan_ref(ctx, coordinator, req.scan_slot, req.fragment, error, &message),
        }
        self.run_ready(ctx);
    }

    fn open_scan(&mut self, req: &ScanFragReq, coordinator: BlockRef, spec_words: &[u32], ctx: &Context<'_>) -> Result<u32, Refusal> {
        let (Some(catalog), Some(layout)) = (&self.catalog, &self.layout) else {
            return Err((ErrorCode::NotConnected, "storage is not started".into()));
        };
        if self.recovering {
            return Err((ErrorCode::Recovering, "the data node is restoring its data from disk".into()));
        }
        let table = catalog.get(req.table, req.table_version)?;
        let replicas = layout.replicas(req.partition);
        if req.partition >= table.partitions || !(replicas.primary == ctx.me() || replicas.backup == Some(ctx.me())) {
            return Err((ErrorCode::WrongPartition, format!("partition {} is not held by {}", req.partition, ctx.me())));
        }
        let bad = |m: String| (ErrorCode::BadProgram, m);
        let bytes = row::words_to_bytes(spec_words).ok_or_else(|| bad("malformed scan section".into()))?;
        let spec = ScanSpec::decode(&bytes).map_err(|e| bad(e.to_string()))?;
        let limits = ProgramLimits {
            max_groups: (req.max_groups.min(self.settings.scan_max_groups) as usize).max(1),
            ..ProgramLimits::default()
        };
        let program = Program::decode(&spec.program, &limits)
            .and_then(|p| p.verify(&table, &limits))
            .map_err(|e| bad(format!("table {:?}: {e}", table.name())))?;
        let cursor = match spec.index {
            None => Cursor::Slots { next: 0 },
            Some(i) => Cursor::Index { index: usize::from(i), ranges: index_ranges(&table, &spec)?, range: 0, after: None },
        };
        if let (Some(i), Some(f)) = (spec.index, self.fragments.get(&(table.id, req.partition))) {
            if !f.index_ready(usize::from(i)) {
                let name = table.def.indexes.get(usize::from(i)).map_or("?", |x| x.name.as_str());
                return Err((ErrorCode::SchemaBusy, format!("index {name:?} of table {:?} is being built: retry", table.name())));
            }
        }
        let groups = program.groups(limits.max_groups);
        let lock = match LockMode::from_u32(req.lock) {
            Some(LockMode::CommittedRead) => None,
            Some(LockMode::Shared) => Some((Mode::Shared, (coordinator.to_word(), join(req.tx_low, req.tx_high)))),
            Some(LockMode::Exclusive) => Some((Mode::Exclusive, (coordinator.to_word(), join(req.tx_low, req.tx_high)))),
            None => return Err((ErrorCode::Protocol, format!("unknown lock mode {}", req.lock))),
        };
        if lock.is_some() && program.is_aggregate() {
            return Err(bad("a locking scan cannot aggregate (it returns the rows it locks)".into()));
        }
        let record = ScanRecord {
            state: ScanState::Running,
            coordinator,
            scan_slot: req.scan_slot,
            fragment: req.fragment,
            table: table.clone(),
            partition: req.partition,
            program,
            groups,
            cursor,
            batch_rows: req.batch_rows.max(1),
            batch_bytes: (req.batch_bytes as usize).clamp(64, layout.max_section_bytes),
            left: if req.limit == 0 { u64::MAX } else { u64::from(req.limit) },
            out: Vec::new(),
            rows: 0,
            examined: 0,
            lock,
            granted: None,
            held: Vec::new(),
            met_before: HashSet::new(),
        };
        let handle = self.scans.alloc(record).ok_or_else(|| {
            (ErrorCode::Overload, format!("all {} scan records are in use (max_scans)", self.scans.capacity()))
        })?;
        self.fragments.entry((table.id, req.partition)).or_insert_with(|| Fragment::new(&table)).open_scans += 1;
        Ok(handle)
    }

    /// Runs one step of a scan and sends what it ended with.
    fn step(&mut self, handle: u32, ctx: &mut Context<'_>) {
        let Some(rec) = self.scans.get(handle) else { return };
        let key = (rec.table.id, rec.partition);
        let result = match self.fragments.get_mut(&key) {
            Some(fragment) => run_step(rec, handle, fragment, &mut self.ready),
            None => Err((ErrorCode::NoSuchTable, format!("table {:?} was dropped", rec.table.name()))),
        };
        match result {
            Ok(StepEnd::Yield) => {
                let me = ctx.me();
                self.out.send(ctx, SCAN_CONTINUE, me, ScanContinue { storage_scan: handle }.as_words(), &[]);
            }
            Ok(StepEnd::LockWait) => {
                if let Some(rec) = self.scans.get(handle) {
                    rec.state = ScanState::LockWait;
                }
            }
            Ok(StepEnd::Batch) => self.send_batch(handle, false, ctx),
            Ok(StepEnd::Done) => self.send_batch(handle, true, ctx),
            Err((error, message)) => {
                if let Some(rec) = self.close_scan(handle) {
                    self.scan_ref(ctx, rec.coordinator, rec.scan_slot, rec.fragment, error, &message);
                }
            }
        }
    }

    /// Sends the batch in hand (the rows, or when done, an aggregate's groups); frees the
    /// record when done.
    fn send_batch(&mut self, handle: u32, done: bool, ctx: &mut Context<'_>) {
        let max_bytes = self.layout.as_ref().map_or(4096, |l| l.max_section_bytes);
        let Some(rec) = self.scans.get(handle) else { return };
        let mut sections: Vec<(u32, Vec<u8>)> = Vec::new();
        if rec.program.is_aggregate() {
            if done {
                sections = rec.groups.encode_chunks(max_bytes);
            }
        } else {
            sections.push((rec.rows, std::mem::take(&mut rec.out)));
        }
        if sections.is_empty() {
            sections.push((0, Vec::new()));
        }
        let (to, scan_slot, fragment, examined) = (rec.coordinator, rec.scan_slot, rec.fragment, rec.examined);
        rec.rows = 0;
        rec.examined = 0;
        rec.state = ScanState::Waiting;
        let last = sections.len() - 1;
        for (i, (rows, bytes)) in sections.into_iter().enumerate() {
            let conf = ScanFragConf {
                scan_slot,
                fragment,
                storage_scan: handle,
                rows,
                done: u32::from(done && i == last),
                examined: if i == last { examined } else { 0 },
            };
            let words = row::bytes_to_words(&bytes);
            self.out.send(ctx, SCAN_FRAGCONF, to, conf.as_words(), &[&words]);
        }
        if done {
            self.close_scan(handle);
        }
    }

    /// Frees a scan record: a lock it waits for is given up (or, granted but not yet used,
    /// released), the locks it returned stay with its transaction, and the fragment reaps what
    /// waited for the scan.
    fn close_scan(&mut self, handle: u32) -> Option<ScanRecord> {
        let mut rec = self.scans.free(handle)?;
        let fragment = self.fragments.get_mut(&(rec.table.id, rec.partition));
        if let (Some(f), Some((_, tx))) = (fragment, rec.lock) {
            if let Some(entry) = rec.granted.and_then(|at| f.row(at)) {
                if !entry.lock.cancel(SCAN_WAITER | handle) {
                    entry.lock.release(tx, false);
                    while let Some(next) = entry.lock.grant_next() {
                        self.ready.push(next);
                    }
                }
            }
            let holds = self.scan_holds.entry(tx).or_default();
            holds.extend(rec.held.drain(..).map(|at| (rec.table.id, rec.partition, at)));
        }
        if let Some(f) = self.fragments.get_mut(&(rec.table.id, rec.partition)) {
            let freed = f.scan_closed();
            self.memory_used = self.memory_used.saturating_sub(freed);
        }
        Some(rec)
    }

    /// A commit moved (or deleted) an index entry of partition `key` while scans were open: an
    /// index scan of that index that met the row at its old place and has not reached its new
    /// one (or, deleted, the place it may come back to: its slot stays while the scan is open)
    /// will pass it over there.
    pub(super) fn entry_moved(&mut self, key: (u32, u32), m: &Moved) {
        for (_, rec) in self.scans.iter_mut() {
            if (rec.table.id, rec.partition) != key {
                continue;
            }
            let Cursor::Index { index, ranges, range, after: Some(after) } = &rec.cursor else { continue };
            let (old, after) = (m.old.as_slice(), after.as_ref());
            let met = old <= after && ranges[..=(*range).min(ranges.len().saturating_sub(1))].iter().any(|r| in_range(old, r));
            if *index == m.index && met && m.new.as_deref().map_or(true, |new| new > after) {
                rec.met_before.insert(m.at);
            }
        }
    }

    /// A waiting locking scan got its row's lock: run its next step.
    pub(super) fn scan_lock_granted(&mut self, handle: u32, ctx: &mut Context<'_>) {
        let Some(rec) = self.scans.get(handle) else { return };
        if rec.state == ScanState::LockWait {
            rec.state = ScanState::Running;
            self.step(handle, ctx);
        }
    }

    /// A transaction ended: its open scans close and the row locks its scans kept go.
    pub(super) fn on_scan_lock_release(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(r) = ctx.typed::<ScanLockRelease>(signal).copied() else { return };
        let tx: TxKey = (signal.sender().to_word(), join(r.tx_low, r.tx_high));
        let open: Vec<u32> =
            self.scans.iter_mut().filter(|(_, s)| s.lock.is_some_and(|(_, t)| t == tx)).map(|(h, _)| h).collect();
        for handle in open {
            self.close_scan(handle);
        }
        for (table, partition, at) in self.scan_holds.remove(&tx).unwrap_or_default() {
            let Some(f) = self.fragments.get_mut(&(table, partition)) else { continue };
            if let Some(entry) = f.row(at) {
                entry.lock.release(tx, false);
                while let Some(next) = entry.lock.grant_next() {
                    self.ready.push(next);
                }
            }
            self.reap(table, partition, at);
        }
        self.run_ready(ctx);
    }

    fn scan_ref(&mut self, ctx: &mut Context<'_>, to: BlockRef, scan_slot: u32, fragment: u32, error: ErrorCode, message: &str) {
        let r = ScanFragRef { scan_slot, fragment, error: error as u32 };
        let words = row::bytes_to_words(message.as_bytes());
        self.out.send(ctx, SCAN_FRAGREF, to, r.as_words(), &[&words]);
    }

    /// The coordinator asks for the next batch, or closes.
    pub(super) fn on_scan_frag_next(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<ScanFragNextReq>(signal).copied() else { return };
        let from = signal.sender();
        let known = self.scans.get(req.storage_scan).filter(|r| {
            r.coordinator == from && r.scan_slot == req.scan_slot && r.fragment == req.fragment
        });
        let Some(rec) = known else {
            return self.stale(ctx, "SCAN_FRAG_NEXTREQ", 0, req.storage_scan);
        };
        if req.close != 0 {
            let (to, slot, fragment) = (rec.coordinator, rec.scan_slot, rec.fragment);
            self.close_scan(req.storage_scan);
            let conf = ScanFragConf { scan_slot: slot, fragment, storage_scan: req.storage_scan, rows: 0, done: 1, examined: 0 };
            let words = row::bytes_to_words(&[]);
            self.out.send(ctx, SCAN_FRAGCONF, to, conf.as_words(), &[&words]);
            self.run_ready(ctx);
            return;
        }
        if rec.state != ScanState::Waiting {
            return self.stale(ctx, "SCAN_FRAG_NEXTREQ (no batch out)", 0, req.storage_scan);
        }
        rec.state = ScanState::Running;
        self.step(req.storage_scan, ctx);
        self.run_ready(ctx);
    }

    /// The next step of a running scan (from this block only).
    pub(super) fn on_scan_continue(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        if signal.sender() != ctx.me() {
            tracing::warn!(sender = %signal.sender(), "SCAN_CONTINUE from another block: dropped");
            return ctx.unhandled(signal);
        }
        let Some(c) = ctx.typed::<ScanContinue>(signal).copied() else { return };
        if self.scans.get(c.storage_scan).is_some_and(|r| r.state == ScanState::Running) {
            self.step(c.storage_scan, ctx);
            self.run_ready(ctx);
        }
    }

    /// A node failed: the scans its coordinator ran here have nobody to send batches to or ask
    /// for more; their records are freed. (Locks a locking scan returned stay with their
    /// transaction, whose outcome the membership's takeover decides.)
    pub(super) fn on_node_failure(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(node) = ctx.typed_head::<NodeFailRep>(signal).and_then(|(r, _)| NodeId::new(r.node)) else { return };
        let orphans: Vec<u32> = self.scans.iter_mut().filter(|(_, r)| r.coordinator.node == node).map(|(h, _)| h).collect();
        if orphans.is_empty() {
            return;
        }
        for handle in &orphans {
            self.close_scan(*handle);
        }
        tracing::info!(%node, scans = orphans.len(), "node failed: the scans it coordinated here are closed");
        self.run_ready(ctx);
    }

    /// Closes every scan a dropped table had open (their coordinators hear `NoSuchTable`).
    pub(super) fn close_scans_of(&mut self, table: u32, ctx: &mut Context<'_>) {
        let handles: Vec<u32> = self.scans.iter_mut().filter(|(_, r)| r.table.id == table).map(|(h, _)| h).collect();
        for handle in handles {
            if let Some(rec) = self.close_scan(handle) {
                let message = format!("table {:?} was dropped during the scan", rec.table.name());
                self.scan_ref(ctx, rec.coordinator, rec.scan_slot, rec.fragment, ErrorCode::NoSuchTable, &message);
            }
        }
    }
}

/// The ranges of an index scan as entry-key bounds, sorted by where they start.
fn index_ranges(table: &Table, spec: &ScanSpec) -> Result<Vec<KeyRange>, Refusal> {
    let i = usize::from(spec.index.unwrap_or(0));
    if i >= table.index_columns.len() {
        return Err((ErrorCode::BadProgram, format!("table {:?} has no index number {i}", table.name())));
    }
    let bad = |which: &str, n: usize, e: String| (ErrorCode::BadProgram, format!("range {n}, {which} end: {e}"));
    let mut out = Vec::with_capacity(spec.ranges.len().max(1));
    for (n, r) in spec.ranges.iter().enumerate() {
        let low = index::encode_prefix(table, i, &r.low.values).map_err(|e| bad("low", n, e))?;
        let high = index::encode_prefix(table, i, &r.high.values).map_err(|e| bad("high", n, e))?;
        out.push(index::bounds(&low, r.low.inclusive, &high, r.high.inclusive));
    }
    if out.is_empty() {
        out.push((Bound::Unbounded, Bound::Unbounded));
    }
    out.sort_by(|a, b| start_key(&a.0).cmp(&start_key(&b.0)));
    Ok(out)
}

fn start_key(b: &Bound<Vec<u8>>) -> (&[u8], bool) {
    match b {
        Bound::Unbounded => (&[], false),
        Bound::Included(k) => (k, false),
        Bound::Excluded(k) => (k, true),
    }
}

/// Runs the program on one image; `Ok(false)` when the row does not fit the batch (it is left
/// for the next one).
fn visit(rec: &mut ScanRecord, image: &[u8]) -> Result<bool, Refusal> {
    let mark = rec.out.len();
    let outcome = rec.program.apply(image, &mut rec.out, &mut rec.groups).map_err(|e| run_error(&rec.table, e))?;
    if outcome == Outcome::Return {
        if rec.out.len() > rec.batch_bytes && rec.rows > 0 {
            rec.out.truncate(mark);
            return Ok(false);
        }
        rec.rows += 1;
        rec.left = rec.left.saturating_sub(1);
    }
    Ok(true)
}

/// Visits the row in slot `at`: a read-committed scan reads its committed image; a locking
/// scan first takes the row's lock for its transaction (or queues for it), reads the image the
/// transaction sees, keeps the lock when the row is returned and drops it otherwise.
fn visit_at(rec: &mut ScanRecord, handle: u32, fragment: &mut Fragment, at: u32, ready: &mut Vec<u32>) -> Result<Visit, Refusal> {
    let Some(entry) = fragment.rows.get_mut(at as usize).and_then(Option::as_mut) else { return Ok(Visit::Next) };
    let Some((mode, tx)) = rec.lock else {
        let Some(image) = entry.committed.as_deref() else { return Ok(Visit::Next) };
        rec.examined += 1;
        return Ok(if visit(rec, image)? { Visit::Next } else { Visit::Full });
    };
    let own = entry.working.as_ref().is_some_and(|(t, _)| *t == tx);
    if entry.committed.is_none() && !own {
        return Ok(Visit::Next);
    }
    if rec.granted != Some(at) && !entry.lock.acquire(SCAN_WAITER | handle, tx, mode) {
        rec.granted = Some(at);
        return Ok(Visit::Wait);
    }
    rec.granted = None;
    rec.examined += 1;
    let rows_before = rec.rows;
    let image = entry.image_for(tx).cloned();
    let fits = match image.as_deref() {
        Some(image) => visit(rec, image)?,
        None => true,
    };
    if rec.rows > rows_before {
        rec.held.push(at);
    } else {
        // Not returned (filtered out, deleted, or left for the next batch): the lock goes.
        entry.lock.release(tx, false);
        while let Some(next) = entry.lock.grant_next() {
            ready.push(next);
        }
    }
    Ok(if fits { Visit::Next } else { Visit::Full })
}

fn run_error(table: &Table, e: RunError) -> Refusal {
    let code = match e {
        RunError::Overflow { .. } => ErrorCode::Overflow,
        RunError::TooManyGroups { .. } => ErrorCode::TooManyGroups,
        _ => ErrorCode::BadProgram,
    };
    (code, format!("table {:?}: {e}", table.name()))
}

fn batch_full(rec: &ScanRecord) -> bool {
    rec.rows >= rec.batch_rows || rec.out.len() >= rec.batch_bytes
}

/// Examines rows until the step budget is spent, the batch is full, a lock must be waited for
/// or the partition is done.
fn run_step(rec: &mut ScanRecord, handle: u32, fragment: &mut Fragment, ready: &mut Vec<u32>) -> Result<StepEnd, Refusal> {
    let mut budget = STEP_ROWS;
    let Cursor::Slots { next } = rec.cursor else { return index_step(rec, handle, fragment, ready, budget) };
    let mut at = next;
    let result = loop {
        if rec.left == 0 || at as usize >= fragment.rows.len() {
            break StepEnd::Done;
        }
        if budget == 0 {
            break StepEnd::Yield;
        }
        if batch_full(rec) {
            break StepEnd::Batch;
        }
        budget -= 1;
        fragment.prefetch_image(at as usize + PREFETCH_ROWS);
        match visit_at(rec, handle, fragment, at, ready)? {
            Visit::Next => at += 1,
            Visit::Full => break StepEnd::Batch,
            Visit::Wait => break StepEnd::LockWait,
        }
    };
    rec.cursor = Cursor::Slots { next: at };
    Ok(result)
}

fn index_step(rec: &mut ScanRecord, handle: u32, fragment: &mut Fragment, ready: &mut Vec<u32>, mut budget: u32) -> Result<StepEnd, Refusal> {
    let Cursor::Index { index, ranges, range, after } = &mut rec.cursor else { unreachable!("an index cursor") };
    let (index, mut r, mut last) = (*index, *range, after.take());
    let ranges = std::mem::take(ranges);
    let result = 'ranges: loop {
        let Some((start, end)) = ranges.get(r) else { break StepEnd::Done };
        // Entries are read from the tree a chunk at a time (the visit needs the fragment
        // mutably, so no iterator can stay open across it).
        // The chunk's keys are copied into one buffer (`keys`, ends in `chunk`), not one
        // allocation per entry; only the last visited key is kept as the cursor.
        let (mut keys, mut chunk): (Vec<u8>, Vec<(usize, u32)>) = (Vec::new(), Vec::with_capacity(INDEX_CHUNK));
        loop {
            let from = match &last {
                Some(k) if !below_start(k, start) => Bound::Excluded(k.as_ref()),
                _ => as_slice(start),
            };
            keys.clear();
            chunk.clear();
            let entries = fragment.ordered[index].range::<[u8], _>((from, Bound::Unbounded));
            for (k, at) in entries.take_while(|(k, _)| index::before_end(k, end)).take(INDEX_CHUNK) {
                keys.extend_from_slice(k);
                chunk.push((keys.len(), *at));
            }
            if chunk.is_empty() {
                break;
            }
            for (_, at) in &chunk {
                fragment.prefetch_image(*at as usize);
            }
            let mut key_start = 0;
            let mut visited_end = None;
            for &(key_end, at) in &chunk {
                let this = (key_start, key_end);
                key_start = key_end;
                if rec.left == 0 {
                    remember(&mut last, &keys, visited_end);
                    break 'ranges StepEnd::Done;
                }
                if budget == 0 {
                    remember(&mut last, &keys, visited_end);
                    break 'ranges StepEnd::Yield;
                }
                if batch_full(rec) {
                    remember(&mut last, &keys, visited_end);
                    break 'ranges StepEnd::Batch;
                }
                budget -= 1;
                if !rec.met_before.is_empty() && rec.met_before.remove(&at) {
                    visited_end = Some(this);
                    continue;
                }
                match visit_at(rec, handle, fragment, at, ready) {
                    Ok(Visit::Next) => visited_end = Some(this),
                    Ok(Visit::Full) => {
                        remember(&mut last, &keys, visited_end);
                        break 'ranges StepEnd::Batch;
                    }
                    Ok(Visit::Wait) => {
                        remember(&mut last, &keys, visited_end);
                        break 'ranges StepEnd::LockWait;
                    }
                    Err(e) => return Err(e),
                }
            }
            remember(&mut last, &keys, visited_end);
        }
        r += 1;
    };
    if let Cursor::Index { ranges: slot, range, after, .. } = &mut rec.cursor {
        *slot = ranges;
        *range = r;
        *after = last;
    }
    Ok(result)
}

/// Makes the cursor the last visited key of a chunk (`keys[start..end]`), if any was visited.
fn remember(last: &mut Option<Box<[u8]>>, keys: &[u8], visited: Option<(usize, usize)>) {
    if let Some((start, end)) = visited {
        *last = Some(keys[start..end].into());
    }
}

/// Whether `key` lies in `range`.
fn in_range(key: &[u8], (start, end): &KeyRange) -> bool {
    !below_start(key, start) && index::before_end(key, end)
}

/// Whether `key` lies before the range's start (so the range starts at its own bound).
fn below_start(key: &[u8], start: &Bound<Vec<u8>>) -> bool {
    match start {
        Bound::Unbounded => false,
        Bound::Included(s) => key < s.as_slice(),
        Bound::Excluded(s) => key <= s.as_slice(),
    }
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
    }
}
