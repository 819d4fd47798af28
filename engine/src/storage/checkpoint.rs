//! The storage block's local checkpoints (NDB's LCP, run by DBLQH and BACKUP): a fuzzy copy of
//! every committed row of this instance into a checkpoint file, written in steps between other
//! signals and throttled to `checkpoint_bytes_per_s`, then installed atomically ([`crate::lcp`]).
//!
//! A checkpoint starts when the redo log is `checkpoint_log_percent` full, or
//! `checkpoint_interval_ms` after the last one when rows changed. It records the log position
//! at its start; rows change while it runs, so it holds some images newer than that position,
//! all of GCIs at or below the highest GCI logged when it finishes (its `max_gci`). It is
//! usable once that GCI is durable: then recovery can restore it and replay the log from its
//! start position, so the log before that position is released and older checkpoint files
//! removed. Until then the previous checkpoint and the log from its start stay.
//!
//! A checkpoint that cannot be written (a full disk) is abandoned and retried later; the log
//! keeps everything meanwhile, and fills (operations are refused with `RedoLogFull`) rather
//! than lose a record.

use node::block::Context;
use signals::SignalData;

use super::durable::fatal;
use super::Storage;
use crate::lcp::{self, LcpInfo, LcpStart, LcpWriter};
use crate::protocol::*;
use crate::redo::Lsn;

/// How often a running checkpoint takes a step (and an idle one checks whether to start).
const STEP_NS: u64 = 10_000_000;
/// After a failed checkpoint, how long before the next try.
const RETRY_NS: u64 = 1_000_000_000;

/// A checkpoint in progress or waiting to become usable.
#[derive(Debug, Default)]
pub(super) struct LocalCheckpoints {
    writer: Option<LcpWriter>,
    /// Fragments left to copy, and the next slot of the first.
    todo: Vec<(u32, u32)>,
    slot: usize,
    /// Finished, waiting for its `max_gci` to be durable.
    finished: Option<LcpInfo>,
    last_seq: u64,
    last_ns: u64,
    /// Rows changed since the last checkpoint started.
    pub(super) dirty: bool,
    retry_at_ns: u64,
    armed: bool,
    /// Checkpoints completed (usable) since start.
    pub(super) completed: u64,
}

impl Storage {
    /// Arms the periodic step.
    pub(super) fn lcp_arm(&mut self, ctx: &mut Context<'_>) {
        if self.durable.is_some() && !self.lcps.armed {
            self.lcps.armed = true;
            let _ = ctx.send_delayed(STEP_NS, LCP_CONTINUE, LcpContinue::default().as_words());
        }
    }

    /// `LCP_CONTINUE`: start a checkpoint when due, or write the next step of the running one.
    pub(super) fn on_lcp_continue(&mut self, ctx: &mut Context<'_>) {
        self.lcps.armed = false;
        let now = ctx.now_ns();
        if self.lcps.writer.is_none() && self.lcps.finished.is_none() && now >= self.lcps.retry_at_ns {
            let Some(d) = self.durable.as_ref() else { return };
            let interval_ns = self.settings.checkpoint_interval_ms * 1_000_000;
            let due = d.used_percent() >= u64::from(self.settings.checkpoint_log_percent)
                || (self.lcps.dirty && now.saturating_sub(self.lcps.last_ns) >= interval_ns);
            if due {
                self.lcp_start(now);
            }
        }
        if self.lcps.writer.is_some() {
            self.lcp_step(now);
        }
        self.lcp_validate(ctx);
        self.lcp_arm(ctx);
    }

    fn lcp_start(&mut self, now: u64) {
        let Some(d) = self.durable.as_ref() else { return };
        if self.lcps.last_seq == 0 {
            self.lcps.last_seq = d.checkpoints.first().map_or(0, |c| c.start.seq);
        }
        let seq = self.lcps.last_seq + 1;
        let start = LcpStart {
            seq,
            start_position: d.log.appended_through().get(),
            start_gci: d.max_gci,
            saved_gci: d.saved_gci,
        };
        match LcpWriter::create(&d.dir, d.identity, start) {
            Ok(w) => {
                self.lcps.writer = Some(w);
                self.lcps.last_seq = seq;
                self.lcps.last_ns = now;
                self.lcps.dirty = false;
                let mut todo: Vec<(u32, u32)> = self.fragments.keys().copied().collect();
                todo.sort_unstable_by(|a, b| b.cmp(a));
                self.lcps.todo = todo;
                self.lcps.slot = 0;
            }
            Err(e) => {
                tracing::warn!(error = %e, "local checkpoint cannot start; retrying");
                self.lcps.retry_at_ns = now + RETRY_NS;
            }
        }
    }

    /// Copies rows until this step's byte budget is spent; finishes when every fragment is done.
    fn lcp_step(&mut self, now: u64) {
        let budget = (self.settings.checkpoint_bytes_per_s * STEP_NS / 1_000_000_000).max(4096);
        let Some(writer) = self.lcps.writer.as_mut() else { return };
        let target = writer.bytes_written() + budget;
        let mut failed = None;
        while writer.bytes_written() < target {
            let Some(&key) = self.lcps.todo.last() else { break };
            let Some(f) = self.fragments.get(&key) else {
                self.lcps.todo.pop();
                self.lcps.slot = 0;
                continue;
            };
            let Some(slot) = f.rows.get(self.lcps.slot) else {
                self.lcps.todo.pop();
                self.lcps.slot = 0;
                continue;
            };
            self.lcps.slot += 1;
            let Some((entry, image)) = slot.as_ref().and_then(|e| Some((e, e.committed.as_ref()?))) else { continue };
            if let Err(e) = writer.add_row(f.table.id, f.table.version, key.1, &entry.key, image) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "local checkpoint abandoned (the log keeps everything); retrying");
            if let Some(w) = self.lcps.writer.take() {
                w.abandon();
            }
            self.lcps.dirty = true;
            self.lcps.retry_at_ns = now + RETRY_NS;
            return;
        }
        if !self.lcps.todo.is_empty() {
            return;
        }
        let max_gci = self.durable.as_ref().map_or(0, |d| d.max_gci);
        let Some(writer) = self.lcps.writer.take() else { return };
        match writer.finish(max_gci) {
            Ok(info) => {
                tracing::info!(seq = info.start.seq, rows = info.rows, bytes = info.bytes, max_gci, "local checkpoint written");
                self.lcps.finished = Some(info);
            }
            Err(e) => {
                tracing::warn!(error = %e, "local checkpoint could not be installed; retrying");
                self.lcps.dirty = true;
                self.lcps.retry_at_ns = now + RETRY_NS;
            }
        }
    }

    /// A finished checkpoint whose rows are all durable becomes the one recovery uses: the
    /// log before its start is released and older files go.
    pub(super) fn lcp_validate(&mut self, ctx: &mut Context<'_>) {
        let Some(d) = self.durable.as_mut() else { return };
        let Some(info) = self.lcps.finished.as_ref() else { return };
        let start = Lsn(info.start.start_position);
        if d.durable_gci < info.max_gci || d.saved_gci < info.max_gci || d.log.durable_through() < start {
            return;
        }
        let Some(info) = self.lcps.finished.take() else { return };
        if let Err(e) = d.log.release_through(start) {
            fatal("cannot release the redo log after a local checkpoint", &e);
        }
        if let Err(e) = lcp::remove_older(&d.dir, d.identity, info.start.seq) {
            tracing::warn!(error = %e, "older local checkpoints not removed");
        }
        d.checkpoints.insert(0, info);
        d.checkpoints.truncate(1);
        self.lcps.completed += 1;
        if let Some(c) = self.counters.checkpoints {
            ctx.bump(c, 1);
        }
    }
}
