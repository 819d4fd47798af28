//! Scans from the client: a [`ScanRequest`] (table or ordered index, ranges, a filter
//! expression, projection, aggregates and GROUP BY, order, limit) is compiled here into the
//! program the data nodes run ([`engine::program::compile`]), sent to a coordinator, and read
//! back as an iterator of rows ([`Scan`]).
//!
//! Flow control: each partition scan sends one batch and waits; the iterator asks for a
//! partition's next batch when that batch arrives, so the client holds at most two batches per
//! partition (one being read, one coming), and a client that stops reading stops the scan
//! (the coordinator closes it after `scan_inactive_timeout_ms`). Dropping a [`Scan`] before its
//! end closes it at once.
//!
//! Order: with [`ScanRequest::ordered`] on an index scan, the index columns travel first in
//! each row and the iterator merges the partitions' batches by them (each partition's rows
//! come in index order), so rows come out in index order over the whole table. An ordered
//! aggregate is sorted by its group columns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use engine::index::{self, Range};
use engine::program::compile::{compile, Expr, Query};
use engine::program::{tuple, AggFn};
use engine::protocol::*;
use engine::protocol::LockMode;
use engine::row::{self, Value};
use engine::scan::ScanSpec;
use engine::schema::{ColumnType, Table};
use engine::ErrorCode;
use signals::{NodeId, Signal, SignalData, SignalView};

use super::{message_of, Inbox, Session, Transaction};
use crate::error::{Error, Result};

/// What a scan asks for; build it, then run it with [`Session::scan`].
#[derive(Clone, Debug)]
pub struct ScanRequest {
    table: Arc<Table>,
    index: Option<String>,
    ranges: Vec<Range>,
    filter: Option<Expr>,
    output: Vec<(String, Expr)>,
    group_by: Vec<(String, Expr)>,
    aggregates: Vec<(String, AggFn, Option<Expr>)>,
    ordered: bool,
    limit: Option<u64>,
    batch_rows: u32,
    batch_bytes: u32,
}

impl ScanRequest {
    /// Every row of `table`, every column.
    pub fn new(table: &Arc<Table>) -> ScanRequest {
        ScanRequest {
            table: table.clone(),
            index: None,
            ranges: Vec::new(),
            filter: None,
            output: Vec::new(),
            group_by: Vec::new(),
            aggregates: Vec::new(),
            ordered: false,
            limit: None,
            batch_rows: 256,
            batch_bytes: 64 << 10,
        }
    }

    /// Scans the ordered index `name` (the ranges apply to its columns).
    pub fn index(mut self, name: &str) -> ScanRequest {
        self.index = Some(name.to_string());
        self
    }

    /// Adds a range on the index's leading columns (several ranges: their union).
    pub fn range(mut self, range: Range) -> ScanRequest {
        self.ranges.push(range);
        self
    }

    /// Keeps only rows where `filter` is true (run on the data nodes).
    pub fn filter(mut self, filter: Expr) -> ScanRequest {
        self.filter = Some(match self.filter.take() {
            Some(f) => Expr::And(Box::new(f), Box::new(filter)),
            None => filter,
        });
        self
    }

    /// Returns these columns (default: all).
    pub fn columns(mut self, names: &[&str]) -> ScanRequest {
        self.output.extend(names.iter().map(|n| (n.to_string(), Expr::Column(n.to_string()))));
        self
    }

    /// Returns an expression computed on the data nodes, named `name`.
    pub fn select(mut self, name: &str, expr: Expr) -> ScanRequest {
        self.output.push((name.to_string(), expr));
        self
    }

    /// Groups an aggregate by `expr`, named `name`.
    pub fn group_by(mut self, name: &str, expr: Expr) -> ScanRequest {
        self.group_by.push((name.to_string(), expr));
        self
    }

    /// Adds an aggregate (`None` with [`AggFn::Count`] is COUNT(*)), named `name`.
    pub fn aggregate(mut self, name: &str, func: AggFn, arg: Option<Expr>) -> ScanRequest {
        self.aggregates.push((name.to_string(), func, arg));
        self
    }

    /// Rows in index order over the whole table (an index scan), or groups sorted.
    pub fn ordered(mut self) -> ScanRequest {
        self.ordered = true;
        self
    }

    /// At most `n` rows (each partition also stops after `n`).
    pub fn limit(mut self, n: u64) -> ScanRequest {
        self.limit = Some(n);
        self
    }

    /// Most rows in one batch of one partition.
    pub fn batch_rows(mut self, n: u32) -> ScanRequest {
        self.batch_rows = n.max(1);
        self
    }

    /// Most bytes in one batch of one partition (capped by the signal size).
    pub fn batch_bytes(mut self, n: u32) -> ScanRequest {
        self.batch_bytes = n.max(64);
        self
    }

    fn is_aggregate(&self) -> bool {
        !self.aggregates.is_empty()
    }

    /// Compiles the request: the spec to send, and how to read the rows.
    fn prepare(&self) -> Result<Prepared> {
        let table = &self.table;
        let index = match &self.index {
            Some(name) => Some(
                table
                    .index_number(name)
                    .ok_or_else(|| Error::invalid(format!("table {:?} has no index {name:?}", table.name())))?,
            ),
            None => None,
        };
        if index.is_none() && !self.ranges.is_empty() {
            return Err(Error::invalid("ranges need an index (ScanRequest::index)"));
        }
        if self.ordered && index.is_none() && !self.is_aggregate() {
            return Err(Error::invalid("an ordered scan needs an index (ScanRequest::index)"));
        }
        let mut output: Vec<(String, Expr)> = if self.output.is_empty() && !self.is_aggregate() {
            table.def.columns.iter().map(|c| (c.name.clone(), Expr::Column(c.name.clone()))).collect()
        } else {
            self.output.clone()
        };
        let mut order_types = Vec::new();
        if let (true, Some(i), false) = (self.ordered, index, self.is_aggregate()) {
            let keys: Vec<(String, Expr)> = table.index_columns[i]
                .iter()
                .map(|c| table.def.columns[usize::from(*c)].name.clone())
                .map(|n| (n.clone(), Expr::Column(n)))
                .collect();
            order_types = table.index_columns[i].iter().map(|c| table.def.columns[usize::from(*c)].ty).collect();
            output.splice(0..0, keys);
        }
        let query = Query {
            filter: self.filter.clone(),
            output: if self.is_aggregate() { Vec::new() } else { output.iter().map(|(_, e)| e.clone()).collect() },
            group_by: self.group_by.iter().map(|(_, e)| e.clone()).collect(),
            aggregates: self.aggregates.iter().map(|(_, f, e)| (*f, e.clone())).collect(),
        };
        let program = compile(table, &query).map_err(|e| Error::invalid(format!("table {:?}: {e}", table.name())))?;
        let ranges = match index {
            Some(i) => self.ranges.iter().map(|r| coerce_range(table, i, r)).collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let spec = ScanSpec { index: index.map(|i| i as u16), ranges, program: program.encode() };
        let mut columns: Vec<String> = if self.is_aggregate() {
            let groups = self.group_by.iter().map(|(n, _)| n.clone());
            groups.chain(self.aggregates.iter().map(|(n, _, _)| n.clone())).collect()
        } else {
            output.iter().map(|(n, _)| n.clone()).collect()
        };
        let arity = columns.len();
        let strip = order_types.len();
        columns.drain(..strip);
        Ok(Prepared {
            spec,
            arity,
            strip,
            order_types,
            columns,
            sort_groups: self.ordered && self.is_aggregate(),
            group_columns: self.group_by.len(),
        })
    }
}

/// Range values as the index columns' exact types, or an error naming the column.
fn coerce_range(table: &Table, index: usize, range: &Range) -> Result<Range> {
    let columns = &table.index_columns[index];
    let fix = |values: &[Value]| -> Result<Vec<Value>> {
        if values.len() > columns.len() {
            return Err(Error::invalid(format!(
                "index {:?} has {} columns, a bound gives {}",
                table.def.indexes[index].name,
                columns.len(),
                values.len()
            )));
        }
        values
            .iter()
            .zip(columns)
            .map(|(v, c)| {
                engine::scan::coerce(table, usize::from(*c), v).ok_or_else(|| {
                    let column = &table.def.columns[usize::from(*c)];
                    Error::invalid(format!("bound {v} does not fit column {:?} ({})", column.name, column.ty))
                })
            })
            .collect()
    };
    let mut out = range.clone();
    out.low.values = fix(&range.low.values)?;
    out.high.values = fix(&range.high.values)?;
    Ok(out)
}

#[derive(Debug)]
struct Prepared {
    spec: ScanSpec,
    arity: usize,
    strip: usize,
    order_types: Vec<ColumnType>,
    columns: Vec<String>,
    sort_groups: bool,
    /// Leading values of an aggregate's row that are its group values.
    group_columns: usize,
}

/// A batch as it arrived.
#[derive(Debug)]
pub(crate) struct Batch {
    fragment: u32,
    flags: u32,
    bytes: Vec<u8>,
}

/// What arrived for one scan.
#[derive(Debug)]
pub(crate) struct ScanInbox {
    coordinator: NodeId,
    batches: VecDeque<Batch>,
    error: Option<Error>,
    partitions: u32,
    examined: u64,
}

impl Inbox {
    pub(super) fn on_scan_signal(&mut self, view: &SignalView<'_>) {
        if view.gsn() == SCAN_TABREF {
            let Ok(r) = view.typed::<ScanTabRef>() else { return self.drop_one() };
            let Some(s) = self.scans.get_mut(&r.scan_id) else { return self.drop_one() };
            let code = ErrorCode::from_u32(r.error).unwrap_or(ErrorCode::Protocol);
            s.error = Some(Error::from_code(code, message_of(view), false));
            return;
        }
        let Ok(c) = view.typed::<ScanTabConf>() else { return self.drop_one() };
        let bytes = view.section(0).and_then(row::words_to_bytes);
        let Some(s) = self.scans.get_mut(&c.scan_id) else { return self.drop_one() };
        let Some(bytes) = bytes else {
            s.error = Some(Error::invalid("a scan batch with a malformed section"));
            return;
        };
        s.partitions = c.partitions;
        s.examined += u64::from(c.examined);
        s.batches.push_back(Batch { fragment: c.fragment, flags: c.flags, bytes });
    }

    pub(super) fn scans_node_failed(&mut self, node: NodeId, reason: &str) {
        for s in self.scans.values_mut().filter(|s| s.coordinator == node) {
            let message = format!("data node {node} (the scan's coordinator): {reason}");
            s.error.get_or_insert(Error::NodeFailure { outcome_unknown: false, message });
        }
    }
}

/// What a scan did, for the caller to see (pruning, work done).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Partitions the scan ran on.
    pub partitions: u32,
    /// Rows the data nodes examined (before the filter).
    pub examined: u64,
    /// Batches received.
    pub batches: u64,
}

/// A running scan: an iterator of rows (each a value per column of [`Scan::columns`]).
#[derive(Debug)]
pub struct Scan<'s, 'c> {
    session: &'s mut Session<'c>,
    id: u32,
    coordinator: signals::BlockRef,
    prepared: Prepared,
    queues: HashMap<u32, VecDeque<Vec<Value>>>,
    fragments_done: HashMap<u32, bool>,
    /// Every partition's end has arrived (`SCAN_DONE`), or the scan was closed.
    remote_done: bool,
    failed: bool,
    limit: Option<u64>,
    returned: u64,
    stats: ScanStats,
}

impl<'c> Session<'c> {
    /// Starts a read-committed scan: on a coordinator of the node that holds the primaries of
    /// every partition the scan needs, when one node does (a pruned scan then costs no hop
    /// between data nodes), else on one chosen round-robin.
    pub fn scan(&mut self, request: &ScanRequest) -> Result<Scan<'_, 'c>> {
        let prepared = request.prepare()?;
        self.round_robin += 1;
        let nodes = self.up_nodes();
        let mut node = nodes[(self.round_robin as usize) % nodes.len()];
        let mut primaries = prepared.spec.partitions(&request.table).into_iter().map(|p| self.primary_node(p));
        if let Some(first) = primaries.next() {
            if primaries.all(|n| n == first) {
                node = first;
            }
        }
        let coordinator = self.layout.coordinator_of(node, self.round_robin / nodes.len() as u64);
        self.start_scan(request, prepared, coordinator, LockMode::CommittedRead, 0)
    }

    /// Starts a scan that locks each row it returns for `tx` (shared or exclusive) until `tx`
    /// ends, on `tx`'s coordinator: `tx`'s key operations may then update or delete those rows
    /// while the scan runs (through [`Scan::session`]) or after it (lock takeover). `tx` must
    /// be open (no batch in flight); ending `tx` closes the scan.
    pub fn scan_locked(&mut self, tx: &Transaction, request: &ScanRequest, lock: LockMode) -> Result<Scan<'_, 'c>> {
        if lock == LockMode::CommittedRead {
            return Err(Error::invalid("scan_locked needs LockMode::Shared or LockMode::Exclusive (use scan for committed reads)"));
        }
        if tx.state != super::TxState::Open {
            return Err(Error::invalid(format!("transaction {} is {:?}: a locking scan needs it open", tx.id, tx.state)));
        }
        if request.is_aggregate() {
            return Err(Error::invalid("a locking scan returns the rows it locks: it cannot aggregate"));
        }
        let prepared = request.prepare()?;
        self.start_scan(request, prepared, tx.coordinator, lock, tx.id)
    }

    fn start_scan(
        &mut self,
        request: &ScanRequest,
        prepared: Prepared,
        coordinator: signals::BlockRef,
        lock: LockMode,
        tx: u64,
    ) -> Result<Scan<'_, 'c>> {
        self.next_scan = self.next_scan.wrapping_add(1);
        let id = self.next_scan;
        let (tx_low, tx_high) = split(tx);
        let req = ScanTabReq {
            scan_id: id,
            table: request.table.id,
            table_version: request.table.version,
            batch_rows: request.batch_rows,
            batch_bytes: request.batch_bytes,
            limit: request.limit.map_or(0, |l| l.min(u64::from(u32::MAX)) as u32),
            map_version: self.layout.map_version,
            lock: lock as u32,
            tx_low,
            tx_high,
        };
        let words = row::bytes_to_words(&prepared.spec.encode());
        let inbox =
            ScanInbox { coordinator: coordinator.node, batches: VecDeque::new(), error: None, partitions: 0, examined: 0 };
        self.inbox.scans.insert(id, inbox);
        let sections: [&[u32]; 1] = [&words];
        let signal = Signal::new(SCAN_TABREQ, self.me, coordinator).data(req.as_words()).sections(&sections);
        if let Err(e) = self.pack(coordinator, &signal) {
            self.inbox.scans.remove(&id);
            return Err(e);
        }
        self.send.flush();
        Ok(Scan {
            session: self,
            id,
            coordinator,
            prepared,
            queues: HashMap::new(),
            fragments_done: HashMap::new(),
            remote_done: false,
            failed: false,
            limit: request.limit,
            returned: 0,
            stats: ScanStats::default(),
        })
    }
}

impl<'c> Scan<'_, 'c> {
    /// The session, for the scan's transaction's key operations while the scan runs (a
    /// locking scan's rows are locked for that transaction).
    pub fn session(&mut self) -> &mut Session<'c> {
        self.session
    }

    /// The names of the columns each row holds.
    pub fn columns(&self) -> &[String] {
        &self.prepared.columns
    }

    /// What the scan did so far.
    pub fn stats(&self) -> ScanStats {
        self.stats
    }

    /// Takes what arrived into the queues, asking for each partition's next batch.
    fn absorb(&mut self) -> Result<bool> {
        let Some(inbox) = self.session.inbox.scans.get_mut(&self.id) else { return Ok(false) };
        self.stats.partitions = inbox.partitions;
        self.stats.examined = inbox.examined;
        let batches: Vec<Batch> = inbox.batches.drain(..).collect();
        if batches.is_empty() {
            if let Some(e) = inbox.error.take() {
                return Err(e);
            }
            return Ok(false);
        }
        // Ask for every partition's next batch first, so the data nodes make it while this
        // thread decodes the ones that came.
        let mut asked = false;
        for batch in &batches {
            if batch.flags & SCAN_FRAGMENT_DONE == 0 && batch.fragment != u32::MAX {
                let next = ScanNextReq { scan_id: self.id, fragment: batch.fragment, close: 0 };
                let signal = Signal::new(SCAN_NEXTREQ, self.session.me, self.coordinator).data(next.as_words());
                self.session.pack(self.coordinator, &signal)?;
                asked = true;
            }
        }
        if asked {
            self.session.send.flush();
        }
        for batch in batches {
            self.stats.batches += 1;
            let rows = tuple::decode_tuples(&batch.bytes, self.prepared.arity)
                .map_err(|e| Error::invalid(format!("a scan batch that does not decode: {e}")))?;
            self.queues.entry(batch.fragment).or_default().extend(rows);
            self.fragments_done.insert(batch.fragment, batch.flags & SCAN_FRAGMENT_DONE != 0);
            if batch.flags & SCAN_DONE != 0 {
                self.remote_done = true;
            }
        }
        if self.remote_done && self.prepared.sort_groups {
            self.sort_groups();
        }
        Ok(true)
    }

    fn sort_groups(&mut self) {
        let groups = self.prepared.group_columns;
        if let Some(q) = self.queues.get_mut(&u32::MAX) {
            let mut rows: Vec<Vec<Value>> = q.drain(..).collect();
            rows.sort_by(|a, b| compare_values(&a[..groups.min(a.len())], &b[..groups.min(b.len())]));
            q.extend(rows);
        }
    }

    /// The next row that may be returned now, if any.
    fn pop_ready(&mut self) -> Option<Vec<Value>> {
        if self.prepared.order_types.is_empty() {
            let q = self.queues.values_mut().find(|q| !q.is_empty())?;
            return q.pop_front();
        }
        // Ordered merge: every partition not done must have a row in hand.
        let waiting = self.fragments_done.iter().any(|(f, done)| !done && !self.queues.get(f).is_some_and(|q| !q.is_empty()));
        if waiting || (!self.remote_done && self.fragments_done.len() < self.stats.partitions as usize) {
            return None;
        }
        let types = &self.prepared.order_types;
        let key = |row: &Vec<Value>| {
            let mut out = Vec::new();
            for (t, v) in types.iter().zip(row) {
                let _ = index::encode_ordered(*t, v, &mut out);
            }
            out
        };
        let best = self
            .queues
            .iter()
            .filter_map(|(f, q)| q.front().map(|r| (*f, key(r))))
            .min_by(|a, b| a.1.cmp(&b.1))?
            .0;
        self.queues.get_mut(&best)?.pop_front()
    }

    fn close(&mut self) {
        if !self.remote_done {
            let close = ScanNextReq { scan_id: self.id, fragment: 0, close: 1 };
            let signal = Signal::new(SCAN_NEXTREQ, self.session.me, self.coordinator).data(close.as_words());
            let _ = self.session.pack(self.coordinator, &signal);
            self.session.send.flush();
            self.remote_done = true;
        }
        self.session.inbox.scans.remove(&self.id);
    }
}

/// Orders value lists (NULL first, then by value; numbers of different types by value).
fn compare_values(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            (Value::F64(p), Value::F64(q)) => p.total_cmp(q),
            (Value::Text(p), Value::Text(q)) => p.cmp(q),
            (Value::Bytes(p), Value::Bytes(q)) => p.cmp(q),
            (Value::Bool(p), Value::Bool(q)) => p.cmp(q),
            (Value::U64(p), Value::U64(q)) => p.cmp(q),
            (p, q) => p.as_i64().cmp(&q.as_i64()),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

impl Iterator for Scan<'_, '_> {
    type Item = Result<Vec<Value>>;

    fn next(&mut self) -> Option<Result<Vec<Value>>> {
        if self.failed || self.limit.is_some_and(|l| self.returned >= l) {
            self.close();
            return None;
        }
        loop {
            if let Some(mut row) = self.pop_ready() {
                self.returned += 1;
                row.drain(..self.prepared.strip);
                return Some(Ok(row));
            }
            if self.remote_done && self.queues.values().all(VecDeque::is_empty) {
                self.close();
                return None;
            }
            let id = self.id;
            let waited = self.session.wait_until(&format!("scan {id}"), |i| {
                !i.scans.get(&id).is_some_and(|s| s.batches.is_empty() && s.error.is_none())
            });
            let absorbed = waited.and_then(|()| self.absorb());
            match absorbed {
                Ok(true) => {}
                Ok(false) if self.session.inbox.scans.contains_key(&id) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    self.close();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Drop for Scan<'_, '_> {
    fn drop(&mut self) {
        self.close();
    }
}
