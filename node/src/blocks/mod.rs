//! System blocks every node may run, and their kinds (see [`crate::kinds`]).
//!
//! - [`ping`]: the echo block (answers `PING_REQ` with `PING_CONF`), for tests and benchmarks.
//! - [`stats`]: the statistics block (answers `STATS_REQ` with the node's counters).
//!
//! Block numbers are part of the protocol (they travel in block references): never renumber,
//! only add. Range 1..=99 is for system blocks.

use signals::BlockNumber;

use crate::block::Block;
use crate::config::ConfigError;
use crate::kinds::{BlockEnv, BlockKind, Settings};

pub mod ping;
pub mod stats;

/// The echo block's number.
pub const PING: BlockNumber = BlockNumber(1);
/// The statistics block's number.
pub const STATS: BlockNumber = BlockNumber(2);

/// The echo block's kind, `ping` (no settings).
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoKind;

impl BlockKind for EchoKind {
    fn name(&self) -> &'static str {
        "ping"
    }
    fn number(&self) -> BlockNumber {
        PING
    }
    fn make(
        &self,
        settings: &mut Settings<'_>,
        _env: &BlockEnv,
    ) -> Result<Box<dyn Block>, ConfigError> {
        settings.finish()?;
        Ok(Box::new(ping::Echo::new()))
    }
}

/// The statistics block's kind, `stats` (no settings).
#[derive(Clone, Copy, Debug, Default)]
pub struct StatsKind;

impl BlockKind for StatsKind {
    fn name(&self) -> &'static str {
        "stats"
    }
    fn number(&self) -> BlockNumber {
        STATS
    }
    fn make(
        &self,
        settings: &mut Settings<'_>,
        env: &BlockEnv,
    ) -> Result<Box<dyn Block>, ConfigError> {
        settings.finish()?;
        Ok(Box::new(stats::Statistics::new(env.stats.clone(), env.limits)))
    }
}
