//! The engine's block kinds, for the cluster file's `[[blocks]]`: `dictionary` (one per data
//! node), `storage` and `coordinator` (one or more instances), `membership` (one per data
//! node), `checkpoint` (one per data node,
//! when data nodes have a `data_dir`). Each reads its settings
//! ([`crate::layout`]) and names any bad key; the blocks share the process's [`Engine`].

use std::sync::Arc;

use node::block::Block;
use node::config::ConfigError;
use node::kinds::{BlockEnv, BlockKind, Kinds, Settings};
use signals::{BlockNumber, Protocol};

use crate::checkpoint::Checkpoint;
use crate::coordinator::Coordinator;
use crate::dictionary::Dictionary;
use crate::membership::Membership;
use crate::layout::{CheckpointSettings, CoordinatorSettings, DictionarySettings, MembershipSettings, StorageSettings};
use crate::protocol::ENGINE;
use crate::storage::Storage;
use crate::{Engine, CHECKPOINT, COORDINATOR, DICTIONARY, MEMBERSHIP, STORAGE};

static PROTOCOLS: [&Protocol; 1] = [&ENGINE];

macro_rules! kind {
    ($kind:ident, $name:literal, $number:expr, $settings:ident, $block:ident) => {
        #[doc = concat!("The `", $name, "` block kind.")]
        #[derive(Debug)]
        pub struct $kind(pub Arc<Engine>);

        impl BlockKind for $kind {
            fn name(&self) -> &'static str {
                $name
            }
            fn number(&self) -> BlockNumber {
                $number
            }
            fn protocols(&self) -> &'static [&'static Protocol] {
                &PROTOCOLS
            }
            fn make(&self, settings: &mut Settings<'_>, _env: &BlockEnv) -> Result<Box<dyn Block>, ConfigError> {
                let s = $settings::read(settings)?;
                settings.finish()?;
                Ok(Box::new($block::new(self.0.clone(), s)))
            }
        }
    };
}

kind!(DictionaryKind, "dictionary", DICTIONARY, DictionarySettings, Dictionary);
kind!(StorageKind, "storage", STORAGE, StorageSettings, Storage);
kind!(CoordinatorKind, "coordinator", COORDINATOR, CoordinatorSettings, Coordinator);
kind!(MembershipKind, "membership", MEMBERSHIP, MembershipSettings, Membership);

/// The `checkpoint` block kind (one per data node of a cluster with `data_dir`s): it runs the
/// restart protocol in start phase 2.
#[derive(Debug)]
pub struct CheckpointKind(pub Arc<Engine>);

impl BlockKind for CheckpointKind {
    fn name(&self) -> &'static str {
        "checkpoint"
    }
    fn number(&self) -> BlockNumber {
        CHECKPOINT
    }
    fn protocols(&self) -> &'static [&'static Protocol] {
        &PROTOCOLS
    }
    fn start_phases(&self) -> u32 {
        2
    }
    fn make(&self, settings: &mut Settings<'_>, _env: &BlockEnv) -> Result<Box<dyn Block>, ConfigError> {
        let s = CheckpointSettings::read(settings)?;
        settings.finish()?;
        Ok(Box::new(Checkpoint::new(self.0.clone(), s)))
    }
}

/// The system kinds and the engine's.
pub fn engine_kinds(engine: &Arc<Engine>) -> Kinds {
    let mut kinds = Kinds::system();
    for kind in [
        Arc::new(DictionaryKind(engine.clone())) as Arc<dyn BlockKind>,
        Arc::new(StorageKind(engine.clone())),
        Arc::new(CoordinatorKind(engine.clone())),
        Arc::new(MembershipKind(engine.clone())),
        Arc::new(CheckpointKind(engine.clone())),
    ] {
        kinds.add(kind).unwrap_or_else(|e| unreachable!("the engine's kinds are distinct: {e}"));
    }
    kinds
}
