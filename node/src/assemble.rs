//! From a validated cluster file to a [`NodeBuilder`] for one data node: thread count and
//! pinning, receive paths, tuning, and the blocks placed where `[[blocks]]` says, made by their
//! kinds.
//!
//! This is the one place the data-node binary (and tests) turn configuration into a runtime;
//! the transporter wiring adds its remote factory and receive paths to the builder returned.

use signals::NodeId;

use crate::config::{Config, ConfigError};
use crate::kinds::{BlockEnv, Kinds, Settings};
use crate::runtime::{NodeBuilder, StartError};

/// Why a node could not be assembled from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The configuration is unusable for this node.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime refused the layout.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A builder for data node `node_id` of `config`, with its blocks placed where `[[blocks]]`
/// says, made by their kinds in `kinds`, whose protocols are registered (and checked) and
/// whose start phases the node runs.
pub fn data_node_builder(
    config: &Config,
    node_id: u64,
    kinds: &Kinds,
) -> Result<NodeBuilder, AssembleError> {
    let me = config.data_node(node_id)?;
    let mut builder = NodeBuilder::new(me.id, config.threads.count, config.tuning())?
        .receive_paths(config.threads.receive);
    if let Some(cpus) = &config.threads.cpus {
        for (thread, cpu) in cpus.iter().enumerate() {
            builder.pin(thread, *cpu);
        }
    }
    let stats = builder.stats();
    for placement in &config.blocks {
        let kind = kinds.get(&placement.kind).ok_or_else(|| ConfigError::Invalid {
            key: format!("blocks[{}].kind", placement.entry),
            value: format!("{:?}", placement.kind),
            allowed: format!("one of {:?}", kinds.names()),
        })?;
        for protocol in kind.protocols() {
            builder.protocol(protocol)?;
        }
        builder.start_phases(kind.start_phases());
        let env = BlockEnv {
            node: me.id,
            instance: placement.instance,
            stats: stats.clone(),
            limits: config.limits.signal,
        };
        let mut settings =
            Settings::new(&placement.settings.0, format!("blocks[{}]", placement.entry));
        let block = kind.make(&mut settings, &env)?;
        settings.finish()?;
        builder.place(placement.thread, placement.number, placement.instance, block)?;
    }
    Ok(builder)
}

/// The id of the data node `node_id` names, checked against the file.
pub fn node_id(config: &Config, node_id: u64) -> Result<NodeId, ConfigError> {
    config.data_node(node_id).map(|n| n.id)
}
