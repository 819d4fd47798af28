//! Addresses and names of signals: node ids, block numbers and instances, block references,
//! global signal numbers (GSNs) and priorities.
//!
//! Invariants kept here:
//! - a [`NodeId`] is always in `1..=255` (0 is "no node" and never constructed);
//! - a [`BlockRef`] packs into one little-endian 32-bit wire word and unpacks back to itself;
//!   unpacking a word from a peer validates the node id and never panics.
//!
//! The packing follows the idea of NDB's `BlockReference` (node id in the high half, block
//! number and instance below), with our own field widths: 8-bit node, 8-bit instance, 16-bit block.

use core::fmt;

use crate::gsn;

/// A node of the cluster, `1..=255`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u8);

impl NodeId {
    /// The smallest valid node id.
    pub const MIN: NodeId = NodeId(1);
    /// The largest valid node id.
    pub const MAX: NodeId = NodeId(255);

    /// A node id from a number, or `None` for 0 (or anything over 255).
    pub const fn new(id: u32) -> Option<NodeId> {
        if id >= 1 && id <= 255 {
            Some(NodeId(id as u8))
        } else {
            None
        }
    }

    /// The id as a number in `1..=255`.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u32> for NodeId {
    type Error = InvalidNodeId;
    fn try_from(id: u32) -> Result<Self, Self::Error> {
        NodeId::new(id).ok_or(InvalidNodeId(id))
    }
}

/// A node id outside `1..=255`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node id {0} is out of range (allowed: 1..=255)")]
pub struct InvalidNodeId(pub u32);

/// The kind of a block (what it does); blocks of one kind share a number on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockNumber(pub u16);

/// Which of several instances of one block kind on a node (0 for a block with one instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockInstance(pub u8);

/// A block instance somewhere in the cluster: where a signal comes from or goes to.
///
/// Wire form, one 32-bit little-endian word:
/// ```text
///  bit 31      24 23      16 15                     0
///     +----------+----------+------------------------+
///     | node id  | instance |      block number      |
///     +----------+----------+------------------------+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    /// The node the block runs on.
    pub node: NodeId,
    /// The block's kind.
    pub block: BlockNumber,
    /// The instance of that kind on the node.
    pub instance: BlockInstance,
}

impl BlockRef {
    /// A reference to `block` instance `instance` on `node`.
    pub const fn new(node: NodeId, block: BlockNumber, instance: BlockInstance) -> BlockRef {
        BlockRef { node, block, instance }
    }

    /// The packed wire word.
    pub const fn to_word(self) -> u32 {
        ((self.node.0 as u32) << 24) | ((self.instance.0 as u32) << 16) | self.block.0 as u32
    }

    /// Unpacks a wire word; `None` when its node id is 0.
    pub const fn from_word(word: u32) -> Option<BlockRef> {
        let node = (word >> 24) as u8;
        if node == 0 {
            return None;
        }
        Some(BlockRef {
            node: NodeId(node),
            instance: BlockInstance((word >> 16) as u8),
            block: BlockNumber(word as u16),
        })
    }
}

impl fmt::Display for BlockRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}.{}", self.node, self.block.0, self.instance.0)
    }
}

/// A global signal number: names the signal, and so chooses its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gsn(pub u16);

impl Gsn {
    /// The signal's name from the catalogue ([`crate::gsn`]), or `None` for an unknown number.
    pub fn name(self) -> Option<&'static str> {
        gsn::name(self)
    }
}

impl fmt::Display for Gsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "GSN_{}", self.0),
        }
    }
}

/// Signal priority: A (control: membership, failure handling) is always served before B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Control traffic, served first.
    A,
    /// Everything else.
    #[default]
    B,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_range() {
        assert_eq!(NodeId::new(0), None);
        assert_eq!(NodeId::new(1).map(NodeId::get), Some(1));
        assert_eq!(NodeId::new(255).map(NodeId::get), Some(255));
        assert_eq!(NodeId::new(256), None);
        let err = NodeId::try_from(300).unwrap_err();
        assert_eq!(err.to_string(), "node id 300 is out of range (allowed: 1..=255)");
    }

    #[test]
    fn block_ref_round_trips_and_rejects_node_zero() {
        let node = NodeId::new(7).unwrap();
        let r = BlockRef::new(node, BlockNumber(0xBEEF), BlockInstance(3));
        assert_eq!(r.to_word(), 0x0703_BEEF);
        assert_eq!(BlockRef::from_word(r.to_word()), Some(r));
        assert_eq!(BlockRef::from_word(0x00FF_FFFF), None);
        assert_eq!(r.to_string(), "7/48879.3");
    }

    #[test]
    fn gsn_display_uses_catalogue() {
        assert_eq!(gsn::PING_REQ.to_string(), "PING_REQ");
        assert_eq!(Gsn(65000).to_string(), "GSN_65000");
    }
}
