//! The storage block's redo log in use (NDB's DBLQH log handling), when the node has a
//! `data_dir`: opened at start phase 1 (what it holds is kept for the restart), each committed
//! write appended with its GCI as the commit reaches this replica, made durable per global
//! checkpoint (`GCP_SAVE_REQ`: a marker record saying "GCI g is complete here", then a round
//! with its linked fdatasync), and restored at the system restart.
//!
//! Control records: table id [`CONTROL_TABLE`], an empty key, a delete. Partition
//! [`MARKER`]: every record of its GCI (and before) is logged here before it. Partition
//! [`FENCE`]: written after a restart to GCI `R` that discarded records up to GCI `M`
//! (`transaction` = `M`): records before it with a GCI in `(R, M]` are never replayed.
//!
//! Space: an operation that will write a record reserves, at prepare, twice its record's size
//! plus a file-end record (the most a record can take at a file's end); a prepare that finds
//! the ring without room is refused with `RedoLogFull`, so a commit always has room and is
//! never lost. A round's buffer that is full at commit waits for the round in flight.
//!
//! Invariants: records of one row are appended in its commit order; the save of GCI `g` is
//! confirmed only once the marker of `g` is durable; a failed round stops the node (which of
//! its bytes reached the disk is unknown).

use std::path::PathBuf;

use node::block::Context;
use signals::{BlockRef, SignalData, SignalView};

use super::Storage;
use crate::lcp::{self, LcpInfo};
use crate::protocol::*;
use crate::redo::record::{self, Change, Record, MIN_RECORD_BYTES};
use crate::redo::{Identity, Lsn, Recovered, RedoError, RedoLog, Submit};

/// `partition` of a marker record.
pub const MARKER: u32 = 0;
/// `partition` of a fence record.
pub const FENCE: u32 = 1;
/// Room kept for control records beyond what operations reserve.
const CONTROL_MARGIN: u64 = 64 * MIN_RECORD_BYTES as u64;
/// The token of the log's eventfd in the thread's wait set.
pub(super) const REDO_TOKEN: u32 = 0x5245_444f;

/// The log and what the block tracks about it.
#[derive(Debug)]
pub(super) struct Durable {
    pub(super) log: RedoLog,
    pub(super) dir: PathBuf,
    pub(super) identity: Identity,
    /// What the log held at open, until the restart consumes it.
    pub(super) recovered: Option<Recovered>,
    /// Installed checkpoints, newest first.
    pub(super) checkpoints: Vec<LcpInfo>,
    /// Bytes reserved by prepared writes.
    pub(super) reserved: u64,
    /// Saves waiting for the log: (GCI, position the marker ends at, who asked).
    saves: Vec<(u64, Lsn, BlockRef)>,
    /// The highest GCI saved here (its marker durable, or from a checkpoint).
    pub(super) saved_gci: u64,
    /// The highest GCI any record carries.
    pub(super) max_gci: u64,
    /// The highest GCI the master announced durable.
    pub(super) durable_gci: u64,
    /// Bytes and syncs already counted.
    counted: (u64, u64),
}

pub(super) use crate::datadir::stop_node as fatal;

impl Durable {
    /// Opens the log and lists the checkpoints of storage `instance` of `node` in `dir`.
    pub(super) fn open(dir: PathBuf, identity: Identity, settings: &crate::layout::StorageSettings) -> Durable {
        let (log, recovered) = match RedoLog::open(&dir, &settings.redo, identity) {
            Ok(opened) => opened,
            Err(e) => fatal("cannot open the redo log", &e),
        };
        if let Some(t) = &recovered.truncation {
            tracing::warn!(%t, "redo log: torn end cut back to the last whole record");
        }
        if let Some(reason) = log.fallback_reason() {
            tracing::warn!(reason, "redo log: writing with pwrite + fdatasync, not io_uring");
        }
        let checkpoints = match lcp::list(&dir, identity) {
            Ok(list) => list,
            Err(e) => fatal("cannot read the local checkpoints", &e),
        };
        let mut saved_gci = checkpoints.iter().map(|c| c.start.saved_gci).max().unwrap_or(0);
        let mut max_gci = checkpoints.iter().map(|c| c.max_gci).max().unwrap_or(0);
        for r in &recovered.records {
            if r.table == CONTROL_TABLE && r.partition == MARKER {
                saved_gci = saved_gci.max(r.gci);
            }
            let fence_max = if r.table == CONTROL_TABLE && r.partition == FENCE { r.transaction } else { 0 };
            max_gci = max_gci.max(r.gci).max(fence_max);
        }
        tracing::info!(
            instance = identity.instance,
            records = recovered.records.len(),
            checkpoints = checkpoints.len(),
            saved_gci,
            max_gci,
            backend = ?log.backend(),
            "redo log open"
        );
        Durable {
            log,
            dir,
            identity,
            recovered: Some(recovered),
            checkpoints,
            reserved: 0,
            saves: Vec::new(),
            saved_gci,
            max_gci,
            durable_gci: 0,
            counted: (0, 0),
        }
    }

    /// Reserves room for a record of `key_bytes` and `image_bytes`; `None` when the ring lacks it.
    pub(super) fn reserve(&mut self, key_bytes: usize, image_bytes: usize) -> Result<u64, String> {
        let bytes = record::encoded_bytes(key_bytes, image_bytes).unwrap_or(usize::MAX) as u64;
        let need = bytes.saturating_mul(2) + MIN_RECORD_BYTES as u64;
        let free = self.log.free_bytes();
        if self.reserved + need + CONTROL_MARGIN > free {
            return Err(format!(
                "the redo log has {free} bytes free and {} reserved: no room until a local checkpoint frees space",
                self.reserved
            ));
        }
        self.reserved += need;
        Ok(need)
    }

    /// Appends `record`, waiting for the round in flight when the round buffer is full.
    pub(super) fn append(&mut self, record: &Record<'_>) -> Result<Lsn, RedoError> {
        loop {
            match self.log.append(record) {
                Err(RedoError::BufferFull { .. }) => {
                    if let Some(done) = self.log.wait() {
                        done.result?;
                    }
                    if self.log.submit()? == Submit::Idle {
                        return self.log.append(record);
                    }
                }
                other => {
                    if other.is_ok() {
                        self.max_gci = self.max_gci.max(record.gci);
                    }
                    return other;
                }
            }
        }
    }

    fn control(&mut self, partition: u32, gci: u64, extra: u64) -> Result<Lsn, RedoError> {
        let r = Record {
            gci,
            transaction: extra,
            table: CONTROL_TABLE,
            table_version: 0,
            partition,
            key: &[],
            change: Change::Delete,
        };
        self.append(&r)
    }

    /// Writes a fence after a restart to `restart` that discarded records up to `max`, and
    /// makes it durable before anything new is logged.
    pub(super) fn fence(&mut self, restart: u64, max: u64) -> Result<(), RedoError> {
        self.control(FENCE, restart, max)?;
        self.log.flush()?;
        self.saved_gci = restart;
        self.durable_gci = restart;
        Ok(())
    }

    /// Bytes of the ring in use (appended, not released).
    pub(super) fn used_percent(&self) -> u64 {
        let free = self.log.free_bytes();
        let ring = free + (self.log.appended_through().get() - self.log.tail().get());
        (free * 100).checked_div(ring).map_or(0, |f| 100 - f)
    }
}

impl Storage {
    /// `GCP_SAVE_REQ`: the marker of the GCI, then a round; confirmed once durable.
    pub(super) fn on_gcp_save(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(req) = ctx.typed::<GcpSaveReq>(signal).copied() else { return };
        let gci = join(req.gci_low, req.gci_high);
        let from = signal.sender();
        let Some(d) = self.durable.as_mut() else {
            let node = u32::from(ctx.node_id().get());
            let conf = GcpSaveConf { gci_low: req.gci_low, gci_high: req.gci_high, node };
            self.out.send(ctx, GCP_SAVE_CONF, from, conf.as_words(), &[]);
            return;
        };
        match d.control(MARKER, gci, 0) {
            Ok(end) => d.saves.push((gci, end, from)),
            Err(e) => fatal("cannot log a global checkpoint marker", &e),
        }
        self.pump_redo(ctx);
    }

    /// Reaps completed rounds, confirms the saves they made durable, and starts the next round
    /// when saves wait or the buffer is half full.
    pub(super) fn pump_redo(&mut self, ctx: &mut Context<'_>) {
        let node = u32::from(ctx.node_id().get());
        let Some(d) = self.durable.as_mut() else { return };
        let mut confirms = Vec::new();
        loop {
            while let Some(done) = d.log.poll_completions() {
                if let Err(e) = done.result {
                    fatal("a redo log round failed", &e);
                }
            }
            let durable = d.log.durable_through();
            d.saves.retain(|(gci, end, from)| {
                let ready = *end <= durable;
                if ready {
                    confirms.push((*gci, *from));
                }
                !ready
            });
            let behind = d.log.appended_through().get() - durable.get();
            if d.saves.is_empty() && behind < self.settings.redo.buffer_bytes / 2 {
                break;
            }
            match d.log.submit() {
                Ok(Submit::Started(_)) => continue,
                Ok(Submit::Busy(_) | Submit::Idle) => break,
                Err(e) => fatal("cannot write the redo log", &e),
            }
        }
        let stats = d.log.stats();
        let (bytes, syncs) = (stats.bytes_written - d.counted.0, stats.syncs - d.counted.1);
        d.counted = (stats.bytes_written, stats.syncs);
        if let (Some(b), Some(s)) = (self.counters.redo_bytes, self.counters.redo_syncs) {
            ctx.bump(b, bytes);
            ctx.bump(s, syncs);
        }
        for (gci, from) in confirms {
            d.saved_gci = d.saved_gci.max(gci);
            let (gci_low, gci_high) = split(gci);
            self.out.send(ctx, GCP_SAVE_CONF, from, GcpSaveConf { gci_low, gci_high, node }.as_words(), &[]);
        }
    }

    /// `GCP_SAVED`: a GCI is durable everywhere; a finished checkpoint may now free the log.
    pub(super) fn on_gcp_saved(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(s) = ctx.typed::<GcpSaved>(signal).copied() else { return };
        if let Some(d) = self.durable.as_mut() {
            d.durable_gci = d.durable_gci.max(join(s.gci_low, s.gci_high));
        }
        self.lcp_validate(ctx);
    }

    /// `RESTART_INFO_REQ`: what this instance's files hold.
    pub(super) fn on_restart_info_req(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        let (saved, max) = self.durable.as_ref().map_or((0, 0), |d| (d.saved_gci, d.max_gci));
        let (saved_low, saved_high) = split(saved);
        let (max_low, max_high) = split(max);
        let info = RestartInfo { node: u32::from(ctx.node_id().get()), saved_low, saved_high, max_low, max_high };
        self.out.send(ctx, RESTART_INFO, signal.sender(), info.as_words(), &[]);
    }
}
