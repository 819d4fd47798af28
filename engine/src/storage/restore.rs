//! The storage block's part of a system restart (NDB's DBLQH restart with DBTUP's restore):
//! `RESTART_ORD(R, M)` restores the newest local checkpoint whose rows are all of GCIs at or
//! below `R`, then replays the redo log from that checkpoint's start position, in log order,
//! applying every record of a GCI at or below `R` that no later fence discarded, then writes
//! a fence `(R, M)` so records of GCIs above `R` are never replayed later, and answers
//! `RESTART_DONE`. Until then the instance refuses operations with `Recovering`.
//!
//! Why this is whole transactions in commit order: `R` is saved on every node, so every
//! record of a GCI at or below `R` reached every replica's log before its marker; records of
//! one row are in its commit order in each log; a checkpoint is used only when all its rows
//! are of GCIs at or below `R` (its `max_gci`), and replay from its start re-applies every
//! later change of each row in order.

use std::sync::Arc;

use node::block::Context;
use signals::{SignalData, SignalView};

use super::durable::{fatal, FENCE};
use super::fragment::{Fragment, RowEntry};
use super::{Storage, ROW_OVERHEAD_BYTES};
use crate::lcp::{self, LcpError};
use crate::locks::Lock;
use crate::protocol::*;
use crate::redo::RecoveredRecord;
use crate::schema::Table;

impl Storage {
    /// `RESTART_ORD`: restore and replay through the restart GCI, fence, answer.
    pub(super) fn on_restart_ord(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(ord) = ctx.typed::<RestartOrd>(signal).copied() else { return };
        let (restart, max) = (join(ord.restart_low, ord.restart_high), join(ord.max_low, ord.max_high));
        let rows = if self.durable.is_some() { self.restore(restart, max) } else { 0 };
        self.recovering = false;
        let (rows_low, rows_high) = split(rows);
        let done = RestartDone { node: u32::from(ctx.node_id().get()), rows_low, rows_high };
        self.out.send(ctx, RESTART_DONE, signal.sender(), done.as_words(), &[]);
        if let Some(d) = self.durable.as_ref() {
            if let Some(fd) = d.log.event_fd() {
                if let Err(e) = ctx.watch_fd(fd, super::durable::REDO_TOKEN) {
                    fatal("cannot watch the redo log's completions", &e);
                }
            }
        }
        self.lcp_arm(ctx);
    }

    fn restore(&mut self, restart: u64, max: u64) -> u64 {
        let Some(d) = self.durable.as_mut() else { return 0 };
        let Some(recovered) = d.recovered.take() else { return 0 };
        let (dir, identity) = (d.dir.clone(), d.identity);
        let usable = d.checkpoints.iter().find(|c| c.max_gci <= restart && c.start.start_position >= recovered.tail.get());
        let (from, base) = match usable {
            Some(c) => (c.start.start_position, Some(c.clone())),
            None if recovered.tail.get() == 0 => (0, None),
            None => fatal(
                "no usable local checkpoint",
                &format!(
                    "the redo log in {} starts at position {} and no checkpoint with rows of GCI <= {restart} covers what was released",
                    dir.display(),
                    recovered.tail
                ),
            ),
        };
        let started = std::time::Instant::now();
        let mut rows = 0;
        if let Some(info) = &base {
            rows = self.load_checkpoint(info, identity);
        }
        let fences: Vec<(u64, u64, u64)> = recovered
            .records
            .iter()
            .filter(|r| r.table == CONTROL_TABLE && r.partition == FENCE)
            .map(|r| (r.lsn.get(), r.gci, r.transaction))
            .collect();
        let mut replayed = 0u64;
        for r in recovered.records.iter().filter(|r| r.lsn.get() >= from) {
            let fenced = fences.iter().any(|(at, lo, hi)| *at > r.lsn.get() && r.gci > *lo && r.gci <= *hi);
            if r.table == CONTROL_TABLE || r.gci > restart || fenced {
                continue;
            }
            self.replay(r);
            replayed += 1;
        }
        let Some(d) = self.durable.as_mut() else { return rows };
        if let Err(e) = d.fence(restart, max) {
            fatal("cannot write the restart fence to the redo log", &e);
        }
        let live: u64 = self.fragments.values().map(|f| f.rows.iter().flatten().filter(|r| r.committed.is_some()).count() as u64).sum();
        tracing::info!(
            checkpoint = base.as_ref().map_or(0, |c| c.start.seq),
            checkpoint_rows = rows,
            replayed,
            rows = live,
            restart_gci = restart,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage restored"
        );
        live
    }

    fn table_for(&self, id: u32, version: u32) -> Option<Arc<Table>> {
        self.catalog.as_ref()?.get(id, version).ok()
    }

    fn load_checkpoint(&mut self, info: &lcp::LcpInfo, identity: crate::redo::Identity) -> u64 {
        let result = lcp::read(info, identity, |table, version, partition, key, image| {
            if let Some(t) = self.table_for(table, version) {
                self.install(&t, partition, key.to_vec(), Some(image.to_vec()));
            }
            Ok::<(), LcpError>(())
        });
        match result {
            Ok(rows) => rows,
            Err(e) => fatal("cannot read the local checkpoint", &e),
        }
    }

    fn replay(&mut self, r: &RecoveredRecord) {
        let Some(table) = self.table_for(r.table, r.table_version) else { return };
        self.install(&table, r.partition, r.key.clone(), r.image.clone());
    }

    /// Makes `image` the committed row of `key` (or removes it), keeping indexes and memory.
    fn install(&mut self, table: &Arc<Table>, partition: u32, key: Vec<u8>, image: Option<Vec<u8>>) {
        let fragment = self.fragments.entry((table.id, partition)).or_insert_with(|| Fragment::new(table));
        let at = match fragment.index.get(key.as_slice()) {
            Some(at) => *at,
            None if image.is_none() => return,
            None => {
                self.memory_used += ROW_OVERHEAD_BYTES + key.len() as u64;
                let key: Box<[u8]> = key.into_boxed_slice();
                fragment.insert(RowEntry { key, committed: None, working: None, lock: Lock::default() })
            }
        };
        let mut moved = Vec::new();
        let change = fragment.set_committed(at, image, &mut moved);
        self.memory_used = self.memory_used.saturating_add_signed(change);
        self.reap(table.id, partition, at);
    }
}
