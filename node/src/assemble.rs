//! From a validated cluster file to a [`NodeBuilder`] for one data node: thread count and
//! pinning, receive paths, tuning, and the system blocks placed where `[[blocks]]` says.
//!
//! This is the one place the data-node binary (and tests) turn configuration into a runtime;
//! the transporter wiring adds its remote factory and receive paths to the builder returned.

use signals::NodeId;

use crate::blocks;
use crate::config::{Config, ConfigError};
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

/// A builder for data node `node_id` of `config`, with its system blocks placed.
pub fn data_node_builder(config: &Config, node_id: u64) -> Result<NodeBuilder, AssembleError> {
    let me = config.data_node(node_id)?;
    let mut builder = NodeBuilder::new(me.id, config.threads.count, config.tuning())?
        .receive_paths(config.threads.receive);
    if let Some(cpus) = &config.threads.cpus {
        for (thread, cpu) in cpus.iter().enumerate() {
            builder.pin(thread, *cpu);
        }
    }
    let stats = builder.stats();
    for (i, placement) in config.blocks.iter().enumerate() {
        let block =
            blocks::make(&placement.kind, &stats, config.limits.signal).ok_or_else(|| {
                ConfigError::Invalid {
                    key: format!("blocks[{i}].kind"),
                    value: format!("{:?}", placement.kind),
                    allowed: "a system block kind".into(),
                }
            })?;
        builder.place(placement.thread, placement.number, placement.instance, block)?;
    }
    Ok(builder)
}

/// The id of the data node `node_id` names, checked against the file.
pub fn node_id(config: &Config, node_id: u64) -> Result<NodeId, ConfigError> {
    config.data_node(node_id).map(|n| n.id)
}
