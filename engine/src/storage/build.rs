//! Building an ordered index that was added to a table with rows (NDB's online index build):
//! on `INDEX_BUILD_REQ` from its node's dictionary, a storage instance gives each partition of
//! the table it holds the new, empty index and fills it from the rows' committed images, a
//! bounded number of row slots per step (then `INDEX_BUILD_CONTINUE` to itself), so key
//! operations and scans run between steps. Writes go on during the build: a commit keeps the
//! entries of slots the builder has passed, and the builder adds the rest as it reaches them
//! (see `fragment`). Scans of the index are refused with `SchemaBusy` (retry) until it is built.
//! When every partition is done the instance answers `INDEX_BUILD_CONF`.

use node::block::Context;
use signals::{BlockRef, SignalData, SignalView};

use super::Storage;
use crate::protocol::*;

/// One index build on this instance.
#[derive(Debug)]
pub(crate) struct IndexBuild {
    dictionary: BlockRef,
    change: u32,
    table: u32,
    /// Partitions still building.
    partitions: Vec<u32>,
}

impl Storage {
    pub(super) fn on_index_build_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<IndexBuildReq>(signal).copied() else { return };
        let table = self.catalog.as_ref().and_then(|c| c.get(req.table, req.version).ok());
        let mut partitions = Vec::new();
        match table {
            Some(table) if (req.index as usize) < table.index_columns.len() => {
                for (&(t, p), fragment) in self.fragments.iter_mut() {
                    if t == req.table {
                        fragment.begin_build(&table, req.index as usize);
                        partitions.push(p);
                    }
                }
            }
            // Dropped since (or a bad request from a data node): nothing to build.
            _ => tracing::warn!(table = req.table, index = req.index, "index build for no such table or index: nothing built"),
        }
        let build = IndexBuild { dictionary: signal.sender(), change: req.change, table: req.table, partitions };
        match self.builds.alloc(build) {
            Some(handle) => self.build_step(handle, ctx),
            None => tracing::error!(change = req.change, "no record for an index build"),
        }
    }

    pub(super) fn on_index_build_continue(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        if signal.sender() != ctx.me() {
            tracing::warn!(sender = %signal.sender(), "INDEX_BUILD_CONTINUE from another block: dropped");
            return ctx.unhandled(signal);
        }
        if let Some(c) = ctx.typed::<IndexBuildContinue>(signal).copied() {
            self.build_step(c.build, ctx);
        }
    }

    fn build_step(&mut self, handle: u32, ctx: &mut Context<'_>) {
        let Some(build) = self.builds.get(handle) else { return };
        let mut budget = self.settings.index_build_step_slots.max(1);
        while let Some(&partition) = build.partitions.last() {
            let (cost, done) = match self.fragments.get_mut(&(build.table, partition)) {
                Some(f) => {
                    let before = f.building.map_or(0, |(_, next)| next);
                    let (cost, done) = f.build_step(budget);
                    let after = f.building.map_or(f.rows.len() as u32, |(_, next)| next);
                    budget = budget.saturating_sub(after.saturating_sub(before).max(1));
                    (cost, done)
                }
                None => (0, true),
            };
            self.memory_used += cost;
            if done {
                build.partitions.pop();
            }
            if budget == 0 {
                break;
            }
        }
        if !build.partitions.is_empty() {
            let me = ctx.me();
            self.out.send(ctx, INDEX_BUILD_CONTINUE, me, IndexBuildContinue { build: handle }.as_words(), &[]);
            return;
        }
        let Some(build) = self.builds.free(handle) else { return };
        tracing::info!(table = build.table, change = build.change, "index built on this storage instance");
        let conf = IndexBuildConf { change: build.change, instance: u32::from(ctx.me().instance.0) };
        self.out.send(ctx, INDEX_BUILD_CONF, build.dictionary, conf.as_words(), &[]);
    }
}
