//! `blockwire-datanode --config FILE --node-id N`: runs one data node of a cluster file.
//!
//! Loads and validates the whole cluster file (a bad value exits 2 with a message naming the
//! key), builds the node's block threads and system blocks, and runs until SIGINT or SIGTERM,
//! then stops every thread, joins them, and exits 0. Logs go to stderr through `tracing`
//! (filter with `RUST_LOG`, default `info`).
//!
//! Start-up order, with the place the transporter registry goes:
//! 1. install signal handlers (so a signal during start-up is not fatal);
//! 2. load and validate the cluster file;
//! 3. assemble the node (`node::assemble::data_node_builder`);
//! 4. [registry] start the transporter registry for this node's links and hand it to the
//!    builder (`builder.remote(..)`); after start, run its receive loops on the configured
//!    receive paths (`RunningNode::spawn_receive_thread`); a port in use fails here with exit 2;
//! 5. start the block threads; wait for a signal; stop and join.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use node::assemble::{data_node_builder, AssembleError};
use node::config::{Config, ConfigError};
use node::runtime::{StartError, ThreadPanicked};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

/// Runs one data node of a blockwire cluster.
#[derive(Debug, Parser)]
#[command(name = "blockwire-datanode", version)]
struct Args {
    /// The cluster file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// This node's id in the cluster file (a data node).
    #[arg(long)]
    node_id: u64,
}

/// Why the data node stopped with an error.
#[derive(Debug, thiserror::Error)]
enum DatanodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error("could not start the node: {0}")]
    Start(#[from] StartError),
    #[error("could not install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Panicked(#[from] ThreadPanicked),
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "data node failed");
            eprintln!("blockwire-datanode: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), DatanodeError> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(DatanodeError::Signals)?;
    let config = Config::load(&args.config)?;
    let builder = data_node_builder(&config, args.node_id)?;
    let node_id = builder.node();
    // [registry] Start the transporter registry for this node's links here and pass it on:
    // `let builder = builder.remote(Box::new(registry.remote_factory()));`
    let node = builder.start()?;
    tracing::info!(
        cluster = config.cluster_id,
        node = %node_id,
        threads = config.threads.count,
        blocks = config.blocks.len(),
        links = config.links_of(node_id).count(),
        "data node running"
    );
    let signal = signals.forever().next();
    tracing::info!(signal = ?signal, "stopping");
    let stats = node.stats().clone();
    node.stop()?;
    for (i, t) in stats.threads().iter().enumerate() {
        let s = t.snapshot();
        tracing::info!(
            thread = i,
            signals_run = s.signals_run,
            rounds = s.rounds,
            sleeps = s.sleeps,
            wakeups = s.wakeups,
            "block thread counters"
        );
    }
    tracing::info!("data node stopped");
    Ok(())
}
