//! Helpers shared by the signals integration tests.
#![allow(dead_code)]

use signals::{BlockInstance, BlockNumber, BlockRef, NodeId};

/// A block reference on `node` (which must be 1..=255).
pub fn block(node: u32, number: u16, instance: u8) -> BlockRef {
    BlockRef::new(
        NodeId::new(node).expect("test node id"),
        BlockNumber(number),
        BlockInstance(instance),
    )
}
