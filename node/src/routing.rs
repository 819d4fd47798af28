//! Where each block instance of this node runs: (block number, instance) -> (thread, slot),
//! built once at start and shared read-only by every thread. Lookup is two array indexings,
//! no hashing, so routing a signal costs a few loads.
//!
//! Invariant: each (block number, instance) appears at most once.

use signals::{BlockInstance, BlockNumber, BlockRef, NodeId};

/// Where one block instance runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Block thread index.
    pub thread: u16,
    /// Index of the block within its thread.
    pub slot: u16,
}

/// The routing table of one node.
#[derive(Clone, Debug)]
pub struct Routing {
    node: NodeId,
    by_block: Vec<Vec<Option<Location>>>,
}

/// A block placed twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("block {block}.{instance} is placed twice")]
pub struct DuplicateBlock {
    /// Block number.
    pub block: u16,
    /// Instance.
    pub instance: u8,
}

impl Routing {
    /// An empty table for `node`.
    pub fn new(node: NodeId) -> Routing {
        Routing { node, by_block: Vec::new() }
    }

    /// The node this table routes for.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Places `block`/`instance` at `location`.
    pub fn insert(
        &mut self,
        block: BlockNumber,
        instance: BlockInstance,
        location: Location,
    ) -> Result<(), DuplicateBlock> {
        let b = block.0 as usize;
        if self.by_block.len() <= b {
            self.by_block.resize(b + 1, Vec::new());
        }
        let instances = &mut self.by_block[b];
        let i = instance.0 as usize;
        if instances.len() <= i {
            instances.resize(i + 1, None);
        }
        if instances[i].is_some() {
            return Err(DuplicateBlock { block: block.0, instance: instance.0 });
        }
        instances[i] = Some(location);
        Ok(())
    }

    /// Where `block`/`instance` runs on this node.
    #[inline]
    pub fn locate(&self, block: BlockNumber, instance: BlockInstance) -> Option<Location> {
        *self.by_block.get(block.0 as usize)?.get(instance.0 as usize)?
    }

    /// Where the block `r` names runs, if `r` is on this node.
    #[inline]
    pub fn locate_ref(&self, r: BlockRef) -> Option<Location> {
        if r.node != self.node {
            return None;
        }
        self.locate(r.block, r.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_locate_and_reject_duplicates() {
        let node = NodeId::MIN;
        let mut r = Routing::new(node);
        let at = Location { thread: 1, slot: 2 };
        r.insert(BlockNumber(5), BlockInstance(3), at).unwrap();
        assert_eq!(r.locate(BlockNumber(5), BlockInstance(3)), Some(at));
        assert_eq!(r.locate(BlockNumber(5), BlockInstance(2)), None);
        assert_eq!(r.locate(BlockNumber(500), BlockInstance(0)), None);
        let other = BlockRef::new(NodeId::MAX, BlockNumber(5), BlockInstance(3));
        assert_eq!(r.locate_ref(other), None);
        assert_eq!(
            r.insert(BlockNumber(5), BlockInstance(3), at),
            Err(DuplicateBlock { block: 5, instance: 3 })
        );
    }
}
