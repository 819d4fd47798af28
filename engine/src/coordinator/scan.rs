//! Scans on the coordinator (NDB's DBTC scan records): a `SCAN_TABREQ` opens a scan record,
//! checks the table, the ranges and the program (so a bad one is refused before any partition
//! runs it), chooses the partitions (all, or those the ranges fix: pruning, counted in
//! `scans_pruned`), and starts one partition scan on each partition's primary, all in parallel.
//!
//! Row batches pass through to the client as they come; each partition then waits until the
//! client asks for its next batch (`SCAN_NEXTREQ`), so at most one batch per partition is
//! between a storage block and the client. Aggregates: each partition's partial groups are
//! merged here and the client gets the merged result once every partition is done.
//!
//! Partition scan states: `Asked` (a batch is being made) -> `Delivered` (passed to the
//! client, which owes a `SCAN_NEXTREQ`) -> `Asked` ... -> `Done`. The scan record goes when
//! every partition is done, when the client closes, on the first refusal (the client hears
//! `SCAN_TABREF` and the other partitions are closed), when the client has not asked for a
//! batch within `scan_inactive_timeout_ms`, when the client's node fails, or when a data node
//! holding one of its unfinished partition scans fails (`NodeFailure`). A batch that
//! arrives for a scan no longer here is answered by closing its partition scan, so no storage
//! record waits forever for a client that went.

use node::block::Context;
use signals::{BlockRef, NodeId, SignalData, SignalView};

use super::Coordinator;
use crate::error::ErrorCode;
use crate::program::{tuple, Merger, Program, ProgramLimits, RunError};
use crate::protocol::*;
use crate::row;
use crate::scan::ScanSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FragState {
    /// A batch is being made by the storage block.
    Asked,
    /// The batch went to the client, which owes a `SCAN_NEXTREQ`.
    Delivered,
    /// No more rows.
    Done,
}

#[derive(Debug)]
struct FragScan {
    storage: BlockRef,
    storage_scan: u32,
    state: FragState,
    /// When the batch being made was asked for.
    asked_ns: u64,
}

/// One client scan.
#[derive(Debug)]
pub(super) struct Scan {
    client: BlockRef,
    scan_id: u32,
    fragments: Vec<FragScan>,
    merger: Option<Merger>,
    batch_bytes: usize,
    last_client_ns: u64,
    /// A locking scan's transaction.
    tx: Option<u64>,
    /// Rows the partitions examined, for an aggregate (reported with its result).
    examined: u32,
}

type Refusal = (ErrorCode, String);

impl Coordinator {
    pub(super) fn on_scan_tab_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<ScanTabReq>(signal).copied() else { return };
        let client = signal.sender();
        let words = signal.section(0).unwrap_or(&[]);
        if let Err((code, message)) = self.open_scan(&req, client, words, ctx) {
            scan_tab_ref(self, ctx, client, req.scan_id, code, &message);
        }
    }

    fn open_scan(&mut self, req: &ScanTabReq, client: BlockRef, words: &[u32], ctx: &mut Context<'_>) -> Result<(), Refusal> {
        let (Some(catalog), Some(layout)) = (self.catalog.clone(), self.layout.clone()) else {
            return Err((ErrorCode::NotConnected, "the coordinator is not started".into()));
        };
        if self.scans_by_id.contains_key(&(client.node, req.scan_id)) {
            return Err((ErrorCode::Protocol, format!("scan id {} is already open", req.scan_id)));
        }
        let table = catalog.get(req.table, req.table_version)?;
        let bad = |m: String| (ErrorCode::BadProgram, format!("table {:?}: {m}", table.name()));
        let bytes = row::words_to_bytes(words).ok_or_else(|| bad("malformed scan section".into()))?;
        let spec = ScanSpec::decode(&bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(i) = spec.index {
            if usize::from(i) >= table.index_columns.len() {
                return Err(bad(format!("no index number {i}")));
            }
        }
        let limits = ProgramLimits { max_groups: self.settings.scan_max_groups as usize, ..ProgramLimits::default() };
        let program = Program::decode(&spec.program, &limits)
            .and_then(|p| p.verify(&table, &limits))
            .map_err(|e| bad(e.to_string()))?;
        let partitions = spec.partitions(&table);
        let tx = self.scan_transaction(req, client, &partitions, &layout, ctx)?;
        let now = ctx.now_ns();
        let batch_bytes = (req.batch_bytes as usize).clamp(64, layout.max_section_bytes);
        let scan = Scan {
            client,
            scan_id: req.scan_id,
            fragments: partitions
                .iter()
                .map(|p| FragScan {
                    storage: self.primary_of(&layout, *p),
                    storage_scan: 0,
                    state: FragState::Asked,
                    asked_ns: now,
                })
                .collect(),
            merger: program.is_aggregate().then(|| program.merger_with_limit(self.settings.scan_max_groups as usize)),
            batch_bytes,
            last_client_ns: now,
            tx,
            examined: 0,
        };
        let slot = self.scans.alloc(scan).ok_or_else(|| {
            (ErrorCode::Overload, format!("all {} scan records are in use (max_scans)", self.scans.capacity()))
        })?;
        self.scans_by_id.insert((client.node, req.scan_id), slot);
        self.bump(ctx, self.counters.scans);
        if partitions.len() < table.partitions as usize {
            self.bump(ctx, self.counters.scans_pruned);
        }
        for (fragment, partition) in partitions.iter().enumerate() {
            let frag = ScanFragReq {
                scan_slot: slot,
                fragment: fragment as u32,
                table: table.id,
                table_version: table.version,
                partition: *partition,
                batch_rows: req.batch_rows.max(1),
                batch_bytes: batch_bytes as u32,
                limit: req.limit,
                max_groups: self.settings.scan_max_groups,
                lock: req.lock,
                tx_low: req.tx_low,
                tx_high: req.tx_high,
            };
            let to = self.primary_of(&layout, *partition);
            self.out.send(ctx, SCAN_FRAGREQ, to, frag.as_words(), &[words]);
        }
        Ok(())
    }

    pub(super) fn on_scan_frag_conf(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(conf) = ctx.typed::<ScanFragConf>(signal).copied() else { return };
        let from = signal.sender();
        let section = signal.section(0).unwrap_or(&[]);
        let Some(scan) = self.scans.get(conf.scan_slot) else {
            return self.close_orphan(&conf, from, ctx);
        };
        let Some(frag) = scan.fragments.get_mut(conf.fragment as usize) else { return };
        if frag.storage != from || frag.state != FragState::Asked {
            return self.close_orphan(&conf, from, ctx);
        }
        frag.storage_scan = conf.storage_scan;
        frag.state = match (conf.done != 0, scan.merger.is_some()) {
            (true, _) => FragState::Done,
            // An aggregate's partial groups may come in several signals.
            (false, true) => FragState::Asked,
            (false, false) => FragState::Delivered,
        };
        let all_done = scan.fragments.iter().all(|f| f.state == FragState::Done);
        let partitions = scan.fragments.len() as u32;
        scan.examined = scan.examined.saturating_add(conf.examined);
        if let Some(merger) = scan.merger.as_mut() {
            let merged = match row::words_to_bytes(section) {
                None => Err((ErrorCode::Protocol, "malformed groups section".to_string())),
                Some(b) if b.is_empty() => Ok(()),
                Some(b) => merger.merge(&b).map_err(|e| {
                    let code = match e {
                        RunError::Overflow { .. } => ErrorCode::Overflow,
                        RunError::TooManyGroups { .. } => ErrorCode::TooManyGroups,
                        _ => ErrorCode::Protocol,
                    };
                    (code, e.to_string())
                }),
            };
            if let Err((code, message)) = merged {
                return self.fail_scan(conf.scan_slot, code, &message, ctx);
            }
            if all_done {
                self.finish_aggregate(conf.scan_slot, ctx);
            }
            return;
        }
        let mut flags = if conf.done != 0 { SCAN_FRAGMENT_DONE } else { 0 };
        if all_done {
            flags |= SCAN_DONE;
        }
        let out = ScanTabConf {
            scan_id: scan.scan_id,
            fragment: conf.fragment,
            rows: conf.rows,
            flags,
            partitions,
            examined: conf.examined,
        };
        let client = scan.client;
        self.out.send(ctx, SCAN_TABCONF, client, out.as_words(), &[section]);
        if all_done {
            self.free_scan(conf.scan_slot);
        }
    }

    /// A batch for a scan (or partition scan) no longer here: close the partition scan.
    fn close_orphan(&mut self, conf: &ScanFragConf, from: BlockRef, ctx: &mut Context<'_>) {
        self.bump(ctx, self.counters.stale);
        if conf.done == 0 {
            let close = ScanFragNextReq { storage_scan: conf.storage_scan, scan_slot: conf.scan_slot, fragment: conf.fragment, close: 1 };
            self.out.send(ctx, SCAN_FRAG_NEXTREQ, from, close.as_words(), &[]);
        }
    }

    fn finish_aggregate(&mut self, slot: u32, ctx: &mut Context<'_>) {
        let Some(mut scan) = self.free_scan(slot) else { return };
        let Some(merger) = scan.merger.take() else { return };
        let rows = merger.finish();
        let mut chunks: Vec<(u32, Vec<u8>)> = vec![(0, Vec::new())];
        for row in &rows {
            let mut bytes = Vec::new();
            row.iter().for_each(|v| tuple::encode_value(v, &mut bytes));
            let last = chunks.last_mut().expect("one chunk at least");
            if last.0 > 0 && last.1.len() + bytes.len() > scan.batch_bytes {
                chunks.push((0, Vec::new()));
            }
            let last = chunks.last_mut().expect("one chunk at least");
            last.0 += 1;
            last.1.extend_from_slice(&bytes);
        }
        let n = chunks.len();
        for (i, (rows, bytes)) in chunks.into_iter().enumerate() {
            let conf = ScanTabConf {
                scan_id: scan.scan_id,
                fragment: u32::MAX,
                rows,
                flags: if i + 1 == n { SCAN_FRAGMENT_DONE | SCAN_DONE } else { 0 },
                partitions: scan.fragments.len() as u32,
                examined: if i + 1 == n { scan.examined } else { 0 },
            };
            let words = row::bytes_to_words(&bytes);
            self.out.send(ctx, SCAN_TABCONF, scan.client, conf.as_words(), &[&words]);
        }
    }

    pub(super) fn on_scan_frag_ref(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(r) = ctx.typed::<ScanFragRef>(signal).copied() else { return };
        let known = self.scans.get(r.scan_slot).and_then(|s| s.fragments.get_mut(r.fragment as usize));
        let Some(frag) = known.filter(|f| f.storage == signal.sender() && f.state == FragState::Asked) else {
            return self.bump(ctx, self.counters.stale);
        };
        frag.state = FragState::Done;
        let code = ErrorCode::from_u32(r.error).unwrap_or(ErrorCode::Protocol);
        let message = signal.section(0).and_then(row::words_to_bytes).map(|b| String::from_utf8_lossy(&b).into_owned());
        self.fail_scan(r.scan_slot, code, &message.unwrap_or_default(), ctx);
    }

    /// Ends a scan with an error: the client hears it, the other partition scans close.
    fn fail_scan(&mut self, slot: u32, code: ErrorCode, message: &str, ctx: &mut Context<'_>) {
        let Some(scan) = self.close_scan(slot, ctx) else { return };
        scan_tab_ref(self, ctx, scan.client, scan.scan_id, code, message);
    }

    /// Closes every partition scan that is waiting for the client and frees the record; those
    /// still making a batch are closed when it arrives (`close_orphan`).
    fn close_scan(&mut self, slot: u32, ctx: &mut Context<'_>) -> Option<Scan> {
        let scan = self.free_scan(slot)?;
        for (i, f) in scan.fragments.iter().enumerate() {
            if f.state == FragState::Delivered {
                let close = ScanFragNextReq { storage_scan: f.storage_scan, scan_slot: slot, fragment: i as u32, close: 1 };
                self.out.send(ctx, SCAN_FRAG_NEXTREQ, f.storage, close.as_words(), &[]);
            }
        }
        Some(scan)
    }

    fn free_scan(&mut self, slot: u32) -> Option<Scan> {
        let scan = self.scans.free(slot)?;
        self.scans_by_id.remove(&(scan.client.node, scan.scan_id));
        Some(scan)
    }

    /// The client asks for a partition's next batch, or closes the scan.
    pub(super) fn on_scan_next(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<ScanNextReq>(signal).copied() else { return };
        let client = signal.sender();
        let Some(&slot) = self.scans_by_id.get(&(client.node, req.scan_id)) else {
            // Closed already (done, failed or timed out): the client heard why, or will.
            return self.bump(ctx, self.counters.stale);
        };
        if req.close != 0 {
            self.close_scan(slot, ctx);
            return;
        }
        let now = ctx.now_ns();
        let Some(scan) = self.scans.get(slot) else { return };
        let Some(frag) = scan.fragments.get_mut(req.fragment as usize).filter(|f| f.state == FragState::Delivered) else {
            let message = format!("scan {}: partition scan {} has no batch to follow", req.scan_id, req.fragment);
            return self.fail_scan(slot, ErrorCode::Protocol, &message, ctx);
        };
        frag.state = FragState::Asked;
        frag.asked_ns = now;
        scan.last_client_ns = now;
        if let Some(id) = scan.tx {
            if let Some(&t) = self.by_id.get(&(client.node, id)) {
                if let Some(tx) = self.slots[t as usize].as_mut() {
                    tx.last_activity_ns = now;
                }
            }
        }
        let Some(scan) = self.scans.get(slot) else { return };
        let Some(frag) = scan.fragments.get_mut(req.fragment as usize) else { return };
        let next = ScanFragNextReq { storage_scan: frag.storage_scan, scan_slot: slot, fragment: req.fragment, close: 0 };
        let to = frag.storage;
        self.out.send(ctx, SCAN_FRAG_NEXTREQ, to, next.as_words(), &[]);
    }

    /// Closes scans whose client has not asked for a batch within the inactive timeout.
    pub(super) fn expire_scans(&mut self, now: u64, ctx: &mut Context<'_>) {
        let deadlock_ns = self.settings.transaction_deadlock_timeout_ms * 1_000_000;
        let waited: Vec<u32> = self
            .scans
            .iter_mut()
            .filter(|(_, s)| {
                s.tx.is_some()
                    && s.fragments.iter().any(|f| f.state == FragState::Asked && now.saturating_sub(f.asked_ns) > deadlock_ns)
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in waited {
            let message = format!(
                "a locking scan waited over {} ms (transaction_deadlock_timeout_ms) for a row lock: probably a deadlock",
                self.settings.transaction_deadlock_timeout_ms
            );
            self.bump(ctx, self.counters.deadlocks);
            self.fail_scan(slot, ErrorCode::Deadlock, &message, ctx);
        }
        let timeout_ns = self.settings.scan_inactive_timeout_ms * 1_000_000;
        if timeout_ns == 0 {
            return;
        }
        let expired: Vec<u32> = self
            .scans
            .iter_mut()
            .filter(|(_, s)| {
                s.fragments.iter().any(|f| f.state == FragState::Delivered)
                    && now.saturating_sub(s.last_client_ns) > timeout_ns
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in expired {
            let message = format!(
                "the client did not ask for the next batch within {} ms (scan_inactive_timeout_ms)",
                self.settings.scan_inactive_timeout_ms
            );
            self.fail_scan(slot, ErrorCode::InactiveTimeout, &message, ctx);
        }
    }

    /// An API node failed: its scans close.
    /// A data node failed: every scan with a partition scan there that has not finished fails
    /// with `NodeFailure` (the other partition scans close).
    pub(super) fn fail_scans_on(&mut self, node: NodeId, ctx: &mut Context<'_>) {
        let hit: Vec<u32> = self
            .scans
            .iter_mut()
            .filter(|(_, s)| s.fragments.iter().any(|f| f.storage.node == node && f.state != FragState::Done))
            .map(|(slot, _)| slot)
            .collect();
        for slot in hit {
            // A closed partition scan on the failed node has nobody to hear the close.
            if let Some(scan) = self.scans.get(slot) {
                for f in scan.fragments.iter_mut().filter(|f| f.storage.node == node) {
                    f.state = FragState::Done;
                }
            }
            let message = format!("data node {node} failed during the scan");
            self.fail_scan(slot, ErrorCode::NodeFailure, &message, ctx);
        }
    }

    pub(super) fn close_scans_of(&mut self, node: NodeId, ctx: &mut Context<'_>) {
        let slots: Vec<u32> = self.scans_by_id.iter().filter(|((n, _), _)| *n == node).map(|(_, s)| *s).collect();
        for slot in slots {
            self.close_scan(slot, ctx);
        }
    }
}

impl Coordinator {
    /// A locking scan's transaction (opened when new), which must be between batches; its
    /// scan storages are noted so its end releases their locks. `None` for a committed read.
    fn scan_transaction(
        &mut self,
        req: &ScanTabReq,
        client: BlockRef,
        partitions: &[u32],
        layout: &crate::layout::Layout,
        ctx: &mut Context<'_>,
    ) -> Result<Option<u64>, Refusal> {
        let live = self.live.clone();
        match LockMode::from_u32(req.lock) {
            Some(LockMode::CommittedRead) => return Ok(None),
            Some(_) => {}
            None => return Err((ErrorCode::Protocol, format!("unknown lock mode {}", req.lock))),
        }
        let id = join(req.tx_low, req.tx_high);
        let now = ctx.now_ns();
        let slot = self.find_or_open(client, id, now).map_err(|f| (f.code, f.message))?;
        let Some(tx) = self.slots[slot as usize].as_mut() else {
            return Err((ErrorCode::Protocol, format!("transaction {id} is gone")));
        };
        if tx.state != super::TxState::Open {
            return Err((ErrorCode::Protocol, format!("transaction {id} is {:?}: a locking scan needs it open between batches", tx.state)));
        }
        tx.last_activity_ns = now;
        for p in partitions {
            let storage = live.replicas(layout, *p).map_or_else(|| layout.replicas(*p).primary, |r| r.primary);
            if !tx.scan_storages.contains(&storage) {
                tx.scan_storages.push(storage);
            }
        }
        Ok(Some(id))
    }

    /// The transaction in `slot` ends: its open locking scans close (the client hears
    /// `Aborted`) and every storage block its scans ran on releases their locks.
    pub(super) fn release_scan_locks(&mut self, slot: u32, ctx: &mut Context<'_>) {
        let Some(tx) = self.slots[slot as usize].as_mut() else { return };
        let (id, node) = (tx.id, tx.client.node);
        let storages = std::mem::take(&mut tx.scan_storages);
        if storages.is_empty() {
            return;
        }
        let open: Vec<u32> = self
            .scans
            .iter_mut()
            .filter(|(_, s)| s.tx == Some(id) && s.client.node == node)
            .map(|(h, _)| h)
            .collect();
        for scan in open {
            self.fail_scan(scan, ErrorCode::Aborted, "the scan's transaction ended before the scan", ctx);
        }
        let (tx_low, tx_high) = split(id);
        for storage in storages {
            self.out.send(ctx, SCAN_LOCK_RELEASE, storage, ScanLockRelease { tx_low, tx_high }.as_words(), &[]);
        }
    }
}

fn scan_tab_ref(c: &mut Coordinator, ctx: &mut Context<'_>, client: BlockRef, scan_id: u32, code: ErrorCode, message: &str) {
    let r = ScanTabRef { scan_id, error: code as u32 };
    let words = row::bytes_to_words(message.as_bytes());
    c.out.send(ctx, SCAN_TABREF, client, r.as_words(), &[&words]);
}
