//! The system protocol: the signals of the block runtime and its system blocks (echo,
//! statistics), declared with [`protocol!`](crate::protocol) as every other protocol is. Other
//! crates declare theirs beside the code that speaks them and register them with a
//! [`ProtocolSet`](crate::ProtocolSet) (see [`crate::protocol`]).
//!
//! Numbers are part of the wire protocol: never renumber a signal, only add new ones. Ranges:
//! 1..=99 runtime and system blocks, 100..=199 transport and membership, 200.. engine blocks.

use crate::ids::Gsn;
use crate::protocol::SignalSpec;

/// `START_ORD`: the runtime starts phase `phase` of a block (1, then 2, ... up to the node's
/// last phase; see the runtime's start phases).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StartOrd {
    /// The phase, from 1.
    pub phase: u32,
    /// The node's last phase.
    pub last_phase: u32,
}

/// `STOP_REQ`: the node is stopping in order; finish or abort your work.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StopReq {
    /// How long the node waits for every block to say it is done, in milliseconds.
    pub grace_ms: u32,
}

/// `NODE_CONNECTED`: a link to `node` came up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NodeConnected {
    /// The peer.
    pub node: u32,
    /// Its transport: 1 tcp, 2 shm, 3 rdma, 0 other.
    pub transport: u32,
}

/// `NODE_FAILREP`: the link to `node` failed (or the node was declared dead). The reason, as
/// UTF-8 text, is long section 0 (bytes padded with zeros to whole words).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NodeFailRep {
    /// The failed peer.
    pub node: u32,
    /// The reason's length in bytes (in section 0).
    pub reason_bytes: u32,
}

/// `IO_READY`: a descriptor the block registered with its thread's wait set is ready.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct IoReady {
    /// The token the block gave when it registered the descriptor.
    pub token: u32,
}

/// The head of `PING_REQ`: a sequence word, then any words (echoed as sent).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PingReq {
    /// The sender's sequence number (or any word it likes).
    pub sequence: u32,
}

/// The head of `PING_CONF`: the request's words, as sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PingConf {
    /// The request's sequence word.
    pub sequence: u32,
}

/// `STATS_REQ`: a request word, echoed in the answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StatsReq {
    /// Echoed back in [`StatsConf::request`].
    pub request: u32,
}

/// `STATS_CONF`: the counts of the three sections (see the statistics block for their layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StatsConf {
    /// The request word of the `STATS_REQ`.
    pub request: u32,
    /// Entries of section 0 (threads).
    pub threads: u32,
    /// Entries of section 1 (links).
    pub links: u32,
    /// Entries of section 2 (named counters).
    pub named: u32,
}

crate::protocol! {
    /// The runtime's own signals and those of the system blocks.
    pub protocol SYSTEM = "system" {
        /// A block's message to itself after a delay or as a continuation step (NDB's CONTINUEB).
        CONTINUE = 1;
        /// Echo request: the receiver answers with `PING_CONF` carrying the same words and sections.
        PING_REQ = 2 => PingReq, ..;
        /// Echo answer.
        PING_CONF = 3 => PingConf, ..;
        /// Asks a node's statistics block for its counters.
        STATS_REQ = 4 => StatsReq;
        /// The counters: counts as data, entries as sections.
        STATS_CONF = 5 => StatsConf;
        /// Starts a phase of a block (NDB's STTOR).
        START_ORD = 6 => StartOrd;
        /// Asks a block to finish or abort its work: the node is stopping in order.
        STOP_REQ = 7 => StopReq;
        /// A descriptor a block registered is ready.
        IO_READY = 8 => IoReady;
        /// Heartbeat between membership blocks.
        HEARTBEAT = 100;
        /// A link to a node failed, or a node was declared dead.
        NODE_FAILREP = 101 => NodeFailRep;
        /// A link to a node came up.
        NODE_CONNECTED = 102 => NodeConnected;
    }
}

/// Every system signal, in declaration order.
pub const ALL: &[SignalSpec] = SYSTEM.signals;

/// The name of a signal of any protocol registered in this process, or `None`.
pub fn name(gsn: Gsn) -> Option<&'static str> {
    crate::protocol::name_of(gsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_and_named() {
        for (i, spec) in ALL.iter().enumerate() {
            assert_eq!(name(spec.gsn), Some(spec.name));
            for other in &ALL[i + 1..] {
                assert_ne!(spec.gsn, other.gsn, "{} and {} share a number", spec.name, other.name);
            }
        }
        assert_eq!(name(Gsn(0)), None);
    }
}
