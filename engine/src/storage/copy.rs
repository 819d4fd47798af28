//! Copying partitions into a restarted data node (NDB's DBLQH copy of fragments, driven by
//! the restarted node as DBDIH's COPY_FRAGREQ is). Both ends live here.
//!
//! The restarted node's storage instance, on `COPY_ORD`, marks every partition it holds as
//! copying and asks each partition's primary in turn (`COPY_REQ`). From that request on, the
//! primary passes every write of the partition on to the restarted node, as to a backup;
//! then it walks the partition's row slots and sends each committed row (`COPY_ROWS`,
//! batches of up to [`BATCH_BYTES`], throttled to `restart_copy_bytes_per_s`, [`WINDOW`] batches unacknowledged at most). Why the copy ends
//! identical:
//! - a row locked or waited for is read only under a shared lock the copy queues for (like
//!   any reader, [`COPY_WAITER`]): it takes the row's image after every write that held or
//!   queued for it before, whether that write was passed on (arrived after the request) or not
//!   (arrived before); a lock queue is first come, first served, so a busy row cannot starve
//!   the copy;
//! - a write that begins after the row was sent reaches the restarted node after the row,
//!   over the same link (one sender block, in order);
//! - on the restarted node, while its partition is copying, an update or delete of a row it
//!   does not hold yet does nothing: that row is sent later, with the write in its image.
//!
//! A restarted node that fails abandons its copies (the primaries forget them and stop
//! passing writes on); one that restarts again copies from the beginning. Rows copied are
//! checked like any row from a peer (key, partition, image against the schema): a bad one
//! stops the restart with a message naming it.

use std::collections::{HashMap, HashSet, VecDeque};

use node::block::Context;
use signals::{BlockRef, NodeId, SignalData, SignalView};

use super::fragment::{Fragment, RowEntry};
use super::{Storage, ROW_OVERHEAD_BYTES};
use crate::error::ErrorCode;
use crate::locks::{Lock, Mode};
use crate::protocol::*;
use crate::row;

/// The most row bytes one `COPY_ROWS` carries (less when a signal section is smaller).
pub(super) const BATCH_BYTES: usize = 32 * 1024;
/// Batches a copy keeps unacknowledged.
const WINDOW: u32 = 4;
/// A copy's lock requests in a row's queue: [`crate::pool::SPARE_BIT`] with index bits no
/// scan handle has (scan records are at most 2^16), the copy's id in the low 16 bits.
pub(super) const COPY_WAITER: u32 = crate::pool::SPARE_BIT | 0x00ff_0000;

/// The lock owner a copy's shared locks are taken for (no coordinator has reference 0).
fn copy_tx(id: u32) -> crate::locks::TxKey {
    (0, u64::from(id))
}
/// How long a restarted node waits before asking again after a temporary refusal, and how
/// many times it asks.
const RETRY_NS: u64 = 100_000_000;
const RETRIES: u32 = 50;
/// How many times (every [`RETRY_NS`]) a restarted node tries to reach a primary whose link is
/// not up yet: 30 s.
const LINK_RETRIES: u32 = 300;

/// A copy this instance sends (it is the partition's primary).
#[derive(Debug)]
struct Outgoing {
    to: BlockRef,
    table: u32,
    partition: u32,
    cursor: u32,
    /// Names its lock requests (with [`COPY_WAITER`]).
    id: u32,
    /// Batches sent and not acknowledged.
    in_flight: u32,
    /// A COPY_CONTINUE is on its way (the throttle).
    scheduled: bool,
    /// The row slot whose lock it waits for, or holds.
    waiting: Option<u32>,
    granted: Option<u32>,
    bytes: u64,
    rows: u64,
    started_ns: u64,
}

/// The copy this instance receives (it is restarting).
#[derive(Debug)]
struct Incoming {
    request: u32,
    from: BlockRef,
    table: u32,
    table_version: u32,
    partition: u32,
    rows: u64,
    bytes: u64,
    started_ns: u64,
    refusals: u32,
}

/// Both ends' copy state of one storage instance.
#[derive(Debug, Default)]
pub(super) struct Copies {
    /// Sending: by (restarted node's storage, request).
    outgoing: HashMap<(u32, u32), Outgoing>,
    next_id: u32,
    /// (table, partition) -> the restarted replica that gets every write of it passed on.
    targets: HashMap<(u32, u32), BlockRef>,
    /// Receiving: partitions not copied yet (an absent row's update or delete does nothing).
    copying: HashSet<(u32, u32)>,
    pending: VecDeque<(u32, u32)>,
    current: Option<Incoming>,
    next_request: u32,
    version: u32,
    partitions: u32,
    rows: u64,
    bytes: u64,
    started_ns: u64,
    last_report_ns: u64,
}

impl Copies {
    /// Whether partition `partition` of `table` is still being copied into this instance.
    pub(super) fn is_copying(&self, table: u32, partition: u32) -> bool {
        self.copying.contains(&(table, partition))
    }
}

impl Storage {
    /// A copy id no open copy has (16 bits: it goes in lock requests).
    fn next_copy_id(&mut self) -> u32 {
        loop {
            self.copy.next_id = (self.copy.next_id + 1) & 0xffff;
            let id = self.copy.next_id;
            if !self.copy.outgoing.values().any(|o| o.id == id) {
                return id;
            }
        }
    }

    /// The replica a write that came from a coordinator without one is passed on to: a
    /// restarted replica copying (or that copied) this partition from this instance.
    pub(super) fn copy_target(&self, table: u32, partition: u32) -> Option<BlockRef> {
        self.copy.targets.get(&(table, partition)).copied().filter(|t| self.live.is_alive(t.node))
    }

    /// `COPY_ORD` from this node's membership: copy every partition held here.
    pub(super) fn on_copy_ord(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(ord) = ctx.typed::<CopyOrd>(signal).copied() else { return };
        let (Some(layout), Some(catalog)) = (self.layout.clone(), self.catalog.clone()) else { return };
        let me = ctx.me();
        let mut tables = catalog.all();
        tables.sort_by_key(|t| t.id);
        let c = &mut self.copy;
        c.pending.clear();
        c.copying.clear();
        for t in tables {
            for p in 0..t.partitions {
                let r = layout.replicas(p);
                if r.primary == me || r.backup == Some(me) {
                    c.pending.push_back((t.id, p));
                    c.copying.insert((t.id, p));
                }
            }
        }
        c.version = ord.version;
        c.partitions = c.pending.len() as u32;
        c.started_ns = ctx.now_ns();
        c.last_report_ns = c.started_ns;
        tracing::info!(partitions = c.partitions, "copying this instance's partitions from their primaries");
        self.copy_next(ctx);
    }

    /// Asks for the next partition, or reports every one copied.
    fn copy_next(&mut self, ctx: &mut Context<'_>) {
        let Some((table, partition)) = self.copy.pending.pop_front() else {
            let c = &self.copy;
            let took = ctx.now_ns().saturating_sub(c.started_ns).max(1);
            tracing::info!(
                partitions = c.partitions,
                rows = c.rows,
                bytes = c.bytes,
                seconds = took as f64 / 1e9,
                mb_per_s = c.bytes as f64 / 1e6 / (took as f64 / 1e9),
                "every partition of this instance copied"
            );
            let (rows_low, rows_high) = split(c.rows);
            let done = MemberCopied { version: c.version, rows_low, rows_high };
            let to = crate::layout::Layout::membership_of(ctx.node_id());
            self.out.send(ctx, MEMBER_COPIED, to, done.as_words(), &[]);
            return;
        };
        let Some(version) = self.catalog.as_ref().and_then(|c| c.by_id(table)).map(|t| t.version) else {
            // Dropped meanwhile (schema changes wait for restarts, so this is a stale entry).
            self.copy.copying.remove(&(table, partition));
            return self.copy_next(ctx);
        };
        self.copy.next_request = self.copy.next_request.wrapping_add(1).max(1);
        let request = self.copy.next_request;
        let now = ctx.now_ns();
        self.copy.current = Some(Incoming {
            request,
            from: ctx.me(),
            table,
            table_version: version,
            partition,
            rows: 0,
            bytes: 0,
            started_ns: now,
            refusals: 0,
        });
        self.send_copy_req(ctx);
    }

    fn send_copy_req(&mut self, ctx: &mut Context<'_>) {
        let Some(layout) = self.layout.clone() else { return };
        let Some(cur) = self.copy.current.as_mut() else { return };
        let Some(primary) = self.live.replicas(&layout, cur.partition).map(|r| r.primary) else {
            let why = format!("partition {} has no serving replica to copy from", cur.partition);
            copy_failed(&why);
        };
        cur.from = primary;
        let req = CopyReq { request: cur.request, table: cur.table, table_version: cur.table_version, partition: cur.partition };
        if self.out.send(ctx, COPY_REQ, primary, req.as_words(), &[]) {
            return;
        }
        // Its link to that primary may not be up yet (the president's was): ask again soon.
        cur.refusals += 1;
        let retry = CopyContinue { request: cur.request | RETRY_FLAG };
        if cur.refusals >= LINK_RETRIES || ctx.send_delayed(RETRY_NS, COPY_CONTINUE, retry.as_words()).is_err() {
            copy_failed(&format!("cannot reach {primary}, the primary of partition {}, for {} s", req.partition, LINK_RETRIES / 10));
        }
    }

    /// `COPY_REQ` at the primary: start sending, and pass every later write on.
    pub(super) fn on_copy_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<CopyReq>(signal).copied() else { return };
        let to = signal.sender();
        if let Err((error, message)) = self.check_copy_req(&req, to, ctx) {
            tracing::warn!(%to, table = req.table, partition = req.partition, message, "copy refused");
            let r = CopyRef { request: req.request, error: error as u32 };
            let words = row::bytes_to_words(message.as_bytes());
            self.out.send(ctx, COPY_REF, to, r.as_words(), &[&words]);
            return;
        }
        let Some(table) = self.catalog.as_ref().and_then(|c| c.by_id(req.table)) else { return };
        let key = (req.table, req.partition);
        // A copy of the same partition to the same replica that is still open was abandoned.
        let stale: Vec<(u32, u32)> = self
            .copy
            .outgoing
            .iter()
            .filter(|(_, o)| o.to == to && (o.table, o.partition) == key)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.end_outgoing(k);
        }
        let id = self.next_copy_id();
        let slot = (to.to_word(), req.request);
        self.end_outgoing(slot);
        self.copy.targets.insert(key, to);
        self.fragments.entry(key).or_insert_with(|| Fragment::new(&table)).open_scans += 1;
        let out = Outgoing {
            to,
            table: req.table,
            partition: req.partition,
            cursor: 0,
            id,
            in_flight: 0,
            scheduled: false,
            waiting: None,
            granted: None,
            bytes: 0,
            rows: 0,
            started_ns: ctx.now_ns(),
        };
        tracing::info!(%to, table = table.name(), partition = req.partition, "copying a partition to a restarted replica");
        self.copy.outgoing.insert(slot, out);
        self.copy_step(slot, ctx);
    }

    fn check_copy_req(&self, req: &CopyReq, to: BlockRef, ctx: &Context<'_>) -> Result<(), (ErrorCode, String)> {
        let (Some(layout), Some(catalog)) = (&self.layout, &self.catalog) else {
            return Err((ErrorCode::NotConnected, "storage is not started".into()));
        };
        if !self.live.is_starting(to.node) {
            return Err((
                ErrorCode::NotConnected,
                format!("data node {} is not restarting in partition map version {}", to.node, self.live.version),
            ));
        }
        let table = catalog.get(req.table, req.table_version)?;
        if req.partition >= table.partitions {
            return Err((ErrorCode::WrongPartition, format!("table {:?} has no partition {}", table.name(), req.partition)));
        }
        let r = layout.replicas(req.partition);
        if r.primary != to && r.backup != Some(to) {
            return Err((ErrorCode::WrongPartition, format!("{to} holds no replica of partition {}", req.partition)));
        }
        if self.live.replicas(layout, req.partition).map(|r| r.primary) != Some(ctx.me()) {
            return Err((ErrorCode::WrongPartition, format!("{} is not the primary of partition {}", ctx.me(), req.partition)));
        }
        Ok(())
    }

    /// Sends the next batches of a copy (up to [`WINDOW`] unacknowledged), unless it waits for
    /// a row's lock or the throttle.
    fn copy_step(&mut self, key: (u32, u32), ctx: &mut Context<'_>) {
        let rate = self.settings.restart_copy_bytes_per_s.max(1);
        let now = ctx.now_ns();
        let limit = self.layout.as_ref().map_or(BATCH_BYTES, |l| l.max_section_bytes.saturating_sub(4).min(BATCH_BYTES));
        let Some(out) = self.copy.outgoing.get_mut(&key) else { return };
        if out.in_flight >= WINDOW || out.scheduled || out.waiting.is_some() {
            return;
        }
        // The throttle: bytes sent so far may not run ahead of the rate.
        let due = out.started_ns + (u128::from(out.bytes) * 1_000_000_000 / u128::from(rate)) as u64;
        if due > now {
            out.scheduled = ctx.send_delayed(due - now, COPY_CONTINUE, CopyContinue { request: key.1 }.as_words()).is_ok();
            return;
        }
        let (waiter, tx) = (COPY_WAITER | out.id, copy_tx(out.id));
        let mut batch = Vec::with_capacity(limit);
        let (mut rows, mut queued, mut oversized) = (0u32, false, false);
        let mut at = out.cursor;
        let slots = match self.fragments.get_mut(&(out.table, out.partition)) {
            None => 0,
            Some(fragment) => {
                let slots = fragment.rows.len() as u32;
                while at < slots {
                    let Some(entry) = fragment.rows[at as usize].as_mut() else {
                        at += 1;
                        continue;
                    };
                    if out.granted != Some(at) && (entry.working.is_some() || !entry.lock.is_free()) {
                        if !batch.is_empty() {
                            break;
                        }
                        // Queue for a shared lock behind every write that holds or waits.
                        if !entry.lock.acquire(waiter, tx, Mode::Shared) {
                            out.waiting = Some(at);
                            queued = true;
                            break;
                        }
                        out.granted = Some(at);
                    }
                    let size = entry.committed.as_ref().map_or(0, |i| 8 + entry.key.len() + i.len());
                    if batch.len() + size > limit {
                        oversized = batch.is_empty();
                        if !oversized {
                            break;
                        }
                    }
                    if let (Some(image), false) = (&entry.committed, oversized) {
                        push_bytes(&mut batch, &entry.key);
                        push_bytes(&mut batch, image);
                        rows += 1;
                    }
                    if out.granted.take().is_some() {
                        entry.lock.release(tx, true);
                        while let Some(next) = entry.lock.grant_next() {
                            self.ready.push(next);
                        }
                    }
                    if oversized {
                        break;
                    }
                    at += 1;
                }
                slots
            }
        };
        out.cursor = at;
        if oversized {
            let (to, request) = (out.to, key.1);
            let message = format!("a row of table id {} is larger than one signal section ({limit} bytes) and cannot be copied", out.table);
            tracing::error!(%to, message, "copy abandoned");
            self.end_outgoing(key);
            let r = CopyRef { request, error: ErrorCode::Protocol as u32 };
            let words = row::bytes_to_words(message.as_bytes());
            self.out.send(ctx, COPY_REF, to, r.as_words(), &[&words]);
            return;
        }
        if queued && rows == 0 {
            return;
        }
        let last = at >= slots && !queued;
        out.rows += u64::from(rows);
        out.bytes += batch.len() as u64;
        if !last {
            out.in_flight += 1;
        }
        let (to, total_rows, total_bytes, took) = (out.to, out.rows, out.bytes, now.saturating_sub(out.started_ns));
        let (table, partition) = (out.table, out.partition);
        let m = CopyRows { request: key.1, rows, last: u32::from(last), cursor: at, slots };
        let words = row::bytes_to_words(&batch);
        if let Some(c) = self.counters.copy_rows_sent {
            ctx.bump(c, u64::from(rows));
        }
        if let Some(c) = self.counters.copy_bytes_sent {
            ctx.bump(c, batch.len() as u64);
        }
        if !self.out.send(ctx, COPY_ROWS, to, m.as_words(), &[&words]) {
            tracing::warn!(%to, table, partition, "a copy's batch could not be sent: copy abandoned");
            return self.end_outgoing(key);
        }
        if last {
            tracing::info!(%to, table, partition, rows = total_rows, bytes = total_bytes, seconds = took as f64 / 1e9, "partition copied to a restarted replica");
            return self.end_outgoing(key);
        }
        if !queued {
            self.copy_step(key, ctx);
        }
    }

    /// A copy's shared lock on the row it waited for was granted (from the lock queue).
    pub(super) fn copy_lock_granted(&mut self, id: u32, ctx: &mut Context<'_>) {
        let Some((&key, out)) = self.copy.outgoing.iter_mut().find(|(_, o)| o.id == id) else { return };
        out.granted = out.waiting.take();
        self.copy_step(key, ctx);
    }

    /// Forgets a copy this instance sent (done or abandoned); the write pass-on stays while
    /// the replica lives. A lock it waits for or holds is given up.
    fn end_outgoing(&mut self, key: (u32, u32)) {
        let Some(out) = self.copy.outgoing.remove(&key) else { return };
        let Some(f) = self.fragments.get_mut(&(out.table, out.partition)) else { return };
        let (waiter, tx) = (COPY_WAITER | out.id, copy_tx(out.id));
        for at in [out.waiting, out.granted].into_iter().flatten() {
            if let Some(entry) = f.row(at) {
                entry.lock.cancel(waiter);
                entry.lock.release(tx, true);
                while let Some(next) = entry.lock.grant_next() {
                    self.ready.push(next);
                }
            }
        }
        let freed = f.scan_closed();
        self.memory_used = self.memory_used.saturating_sub(freed);
    }

    pub(super) fn on_copy_ack(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(a) = ctx.typed::<CopyAck>(signal).copied() else { return };
        let key = (signal.sender().to_word(), a.request);
        // Acknowledgements of batches sent before the last one arrive after the copy ended.
        let Some(out) = self.copy.outgoing.get_mut(&key).filter(|o| o.in_flight > 0) else { return };
        out.in_flight -= 1;
        self.copy_step(key, ctx);
    }

    pub(super) fn on_copy_continue(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(c) = ctx.typed::<CopyContinue>(signal).copied() else { return };
        if c.request & RETRY_FLAG != 0 {
            return self.retry_copy_req(c.request & !RETRY_FLAG, ctx);
        }
        let keys: Vec<(u32, u32)> = self.copy.outgoing.keys().filter(|(_, r)| *r == c.request).copied().collect();
        // (A continue is only ever the throttle's; lock waits end by the lock's grant.)
        for key in keys {
            if let Some(out) = self.copy.outgoing.get_mut(&key) {
                out.scheduled = false;
            }
            self.copy_step(key, ctx);
        }
    }

    /// `COPY_ROWS` at the restarted node: check and install the rows, then ask for more.
    pub(super) fn on_copy_rows(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(m) = ctx.typed::<CopyRows>(signal).copied() else { return };
        let Some(cur) = self.copy.current.as_ref().filter(|c| c.request == m.request && c.from == signal.sender()) else {
            return self.stale(ctx, "COPY_ROWS", 0, m.request);
        };
        let (table_id, partition) = (cur.table, cur.partition);
        let Some(table) = self.catalog.as_ref().and_then(|c| c.by_id(table_id)) else {
            copy_failed(&format!("table id {table_id} vanished during its copy"));
        };
        let bytes = signal.section(0).and_then(row::words_to_bytes).unwrap_or_default();
        let rows = match parse_rows(&bytes, m.rows) {
            Ok(rows) => rows,
            Err(e) => copy_failed(&format!("{} sent a malformed COPY_ROWS for table {:?}: {e}", signal.sender(), table.name())),
        };
        for (key, image) in &rows {
            let ok = row::check_key(&table, key)
                .ok()
                .filter(|prefix| row::partition_of(&table, key, *prefix) == partition)
                .and_then(|_| row::decode_row(&table, image).ok());
            if ok.is_none() {
                copy_failed(&format!(
                    "{} sent a row that is not a row of partition {partition} of table {:?}",
                    signal.sender(),
                    table.name()
                ));
            }
            if let Err(e) = self.install_copied(&table, partition, key, image) {
                copy_failed(&e);
            }
        }
        let n = rows.len() as u64;
        if let Some(c) = self.counters.copy_rows_received {
            ctx.bump(c, n);
        }
        if let Some(c) = self.counters.copy_bytes_received {
            ctx.bump(c, bytes.len() as u64);
        }
        let now = ctx.now_ns();
        let c = &mut self.copy;
        c.rows += n;
        c.bytes += bytes.len() as u64;
        if let Some(cur) = c.current.as_mut() {
            cur.rows += n;
            cur.bytes += bytes.len() as u64;
        }
        if now.saturating_sub(c.last_report_ns) > 1_000_000_000 {
            c.last_report_ns = now;
            report_progress(c, m.cursor, m.slots, now);
        }
        if m.last == 0 {
            let ack = CopyAck { request: m.request };
            self.out.send(ctx, COPY_ACK, signal.sender(), ack.as_words(), &[]);
            return;
        }
        if let Some(cur) = self.copy.current.take() {
            let took = now.saturating_sub(cur.started_ns);
            tracing::debug!(table = cur.table, partition = cur.partition, rows = cur.rows, bytes = cur.bytes, seconds = took as f64 / 1e9, "partition copied");
        }
        self.copy.copying.remove(&(table_id, partition));
        self.copy_next(ctx);
    }

    /// Makes a copied row this replica's committed image (over whatever it held).
    fn install_copied(&mut self, table: &std::sync::Arc<crate::schema::Table>, partition: u32, key: &[u8], image: &[u8]) -> Result<(), String> {
        let full = || format!("storage memory is full ({} bytes, memory_bytes) while copying table {:?}", self.settings.memory_bytes, table.name());
        let cost = ROW_OVERHEAD_BYTES + (key.len() + image.len()) as u64;
        if self.memory_used + cost > self.settings.memory_bytes {
            return Err(full());
        }
        let fragment = self.fragments.entry((table.id, partition)).or_insert_with(|| Fragment::new(table));
        let at = match fragment.index.get(key) {
            Some(at) => *at,
            None => {
                self.memory_used += ROW_OVERHEAD_BYTES + key.len() as u64;
                let key: Box<[u8]> = key.into();
                fragment.insert(RowEntry { key, committed: None, working: None, lock: Lock::default() })
            }
        };
        let mut moved = Vec::new();
        let change = fragment.set_committed(at, Some(image.to_vec()), &mut moved);
        self.memory_used = self.memory_used.saturating_add_signed(change);
        for m in moved {
            self.entry_moved((table.id, partition), &m);
        }
        Ok(())
    }

    /// `COPY_REF` at the restarted node: a temporary refusal (the primary has not seen the
    /// map that admits this node yet) is asked again a while later; any other stops the
    /// restart.
    pub(super) fn on_copy_ref(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(r) = ctx.typed::<CopyRef>(signal).copied() else { return };
        let from = signal.sender();
        let Some(cur) = self.copy.current.as_mut().filter(|c| c.request == r.request && c.from == from) else {
            return self.stale(ctx, "COPY_REF", 0, r.request);
        };
        let message = signal.section(0).and_then(row::words_to_bytes).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let code = ErrorCode::from_u32(r.error).unwrap_or(ErrorCode::Protocol);
        cur.refusals += 1;
        if code.is_temporary() && cur.refusals < RETRIES {
            tracing::info!(from = %signal.sender(), message, "copy refused for now: asking again");
            if ctx.send_delayed(RETRY_NS, COPY_CONTINUE, CopyContinue { request: cur.request | RETRY_FLAG }.as_words()).is_ok() {
                return;
            }
        }
        copy_failed(&format!("{} refused to copy partition {} of table id {}: {message}", signal.sender(), cur.partition, cur.table));
    }

    fn retry_copy_req(&mut self, request: u32, ctx: &mut Context<'_>) {
        if self.copy.current.as_ref().is_some_and(|c| c.request == request) {
            self.send_copy_req(ctx);
        }
    }

    /// A data node failed: copies to it are abandoned and writes no longer passed on to it.
    pub(super) fn copy_node_failed(&mut self, node: NodeId) {
        let keys: Vec<(u32, u32)> = self.copy.outgoing.iter().filter(|(_, o)| o.to.node == node).map(|(k, _)| *k).collect();
        for key in keys {
            tracing::warn!(%node, "a restarting data node failed: its copy is abandoned");
            self.end_outgoing(key);
        }
        self.copy.targets.retain(|_, t| t.node != node);
    }
}

/// `COPY_CONTINUE.request` with this bit: ask the primary again (at the restarted node).
const RETRY_FLAG: u32 = 1 << 31;

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A copied row: its key and its committed image.
type CopiedRow<'a> = (&'a [u8], &'a [u8]);

/// The (key, image) pairs of a `COPY_ROWS` section, exactly `count` of them.
fn parse_rows(bytes: &[u8], count: u32) -> Result<Vec<CopiedRow<'_>>, String> {
    let mut rows = Vec::with_capacity(count.min(65_536) as usize);
    let mut at = 0usize;
    let mut take = |what: &str| -> Result<&[u8], String> {
        let len = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("a {what} length is cut off at byte {at}"))?;
        let body = bytes.get(at + 4..at + 4 + len).ok_or_else(|| format!("a {what} of {len} bytes runs past the section"))?;
        at += 4 + len;
        Ok(body)
    };
    for _ in 0..count {
        let key = take("key")?;
        let image = take("image")?;
        rows.push((key, image));
    }
    if at != bytes.len() {
        return Err(format!("{} bytes follow the {count} rows announced", bytes.len() - at));
    }
    Ok(rows)
}

fn report_progress(c: &Copies, cursor: u32, slots: u32, now: u64) {
    let done = c.partitions.saturating_sub(c.pending.len() as u32 + 1);
    let fraction = (f64::from(done) + f64::from(cursor) / f64::from(slots.max(1))) / f64::from(c.partitions.max(1));
    let elapsed = now.saturating_sub(c.started_ns) as f64 / 1e9;
    let eta = if fraction > 0.0 { elapsed / fraction - elapsed } else { f64::NAN };
    tracing::info!(
        partitions_done = done,
        partitions = c.partitions,
        rows = c.rows,
        bytes = c.bytes,
        mb_per_s = c.bytes as f64 / 1e6 / elapsed.max(1e-9),
        eta_s = eta,
        "copying partitions"
    );
}

/// The restart cannot go on: the node stops, saying why (it is started again to retry).
fn copy_failed(why: &str) -> ! {
    crate::membership::stop(STOP_RESTART_FAILED, &format!("the node restart's copy failed: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_rows_parse_back_and_malformed_batches_are_named_not_trusted() {
        let mut batch = Vec::new();
        push_bytes(&mut batch, b"k1");
        push_bytes(&mut batch, b"image-1");
        push_bytes(&mut batch, b"");
        push_bytes(&mut batch, b"x");
        let rows = parse_rows(&batch, 2).unwrap();
        assert_eq!(rows, vec![(&b"k1"[..], &b"image-1"[..]), (&b""[..], &b"x"[..])]);
        assert!(parse_rows(&batch, 3).unwrap_err().contains("cut off"));
        assert!(parse_rows(&batch, 1).unwrap_err().contains("follow the 1 rows"));
        let mut long = Vec::new();
        long.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_rows(&long, 1).unwrap_err().contains("runs past the section"));
        assert!(parse_rows(&batch[..3], 1).is_err());
    }
}
