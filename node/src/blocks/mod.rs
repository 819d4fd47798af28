//! System blocks every node runs, and the catalogue the configuration names them by.
//!
//! - [`ping`]: the echo block (answers `PING_REQ` with `PING_CONF`), for tests and benchmarks.
//! - [`stats`]: the statistics block (answers `STATS_REQ` with the node's counters).
//!
//! Block numbers are part of the protocol (they travel in block references): never renumber,
//! only add. Range 1..=99 is for system blocks.

use std::sync::Arc;

use signals::{BlockNumber, Limits};

use crate::block::Block;
use crate::stats::NodeStats;

pub mod ping;
pub mod stats;

/// The echo block's number.
pub const PING: BlockNumber = BlockNumber(1);
/// The statistics block's number.
pub const STATS: BlockNumber = BlockNumber(2);

/// Block kinds the configuration may name, with their numbers.
pub const KINDS: &[(&str, BlockNumber)] = &[("ping", PING), ("stats", STATS)];

/// The number of the block kind `kind`, if it is a system block.
pub fn number_of(kind: &str) -> Option<BlockNumber> {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, n)| *n)
}

/// A new block of kind `kind`, if it is a system block.
pub fn make(kind: &str, node_stats: &Arc<NodeStats>, limits: Limits) -> Option<Box<dyn Block>> {
    match kind {
        "ping" => Some(Box::new(ping::Echo::new())),
        "stats" => Some(Box::new(stats::Statistics::new(node_stats.clone(), limits))),
        _ => None,
    }
}
