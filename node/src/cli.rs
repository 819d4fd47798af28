//! The data-node command line, shared by every binary that runs a data node (the runtime's
//! `blockwire-node` with the system blocks, the engine's `blockwire-datanode` with the engine
//! blocks too): each passes how it loads a cluster file and which block kinds it links.
//!
//! `NAME --config FILE --node-id N`: runs one data node of a cluster file.
//! `NAME stats --config FILE --node-id N [--as M]`: prints a running node's
//! counters, joining the cluster as API node M (by default the first API node linked to N).
//!
//! Loads and validates the whole cluster file (a bad value exits 2 with a message naming the
//! key), builds the node's block threads and system blocks, and runs until SIGINT or SIGTERM,
//! then stops every thread, joins them, and exits 0. Logs go to stderr through `tracing`
//! (filter with `RUST_LOG`, default `info`).
//!
//! Start-up: install signal handlers (so a signal during start-up is not fatal), load and
//! validate the cluster file against the block kinds this binary links, then
//! [`crate::DataNode::start`] (assembly, links, threads; a port in use fails there with exit 2);
//! wait for a signal; stop in order and join. Shared-memory segments are anonymous (memfd) and
//! never have a file name, so a stop (or a crash) leaves none behind.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use crate::blocks::stats::StatsReport;
use crate::config::{Config, ConfigError, NodeKind};
use crate::links::registry_config;
use crate::runtime::ThreadPanicked;
use crate::{DataNode, DataNodeError, Kinds};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId, Signal};
use tracing_subscriber::EnvFilter;
use transporter::{LinkEvent, Registry, RegistryError};

/// Runs one data node of a blockwire cluster.
#[derive(Debug, Parser)]
#[command(version, subcommand_negates_reqs = true)]
struct Args {
    /// The cluster file (TOML).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// This node's id in the cluster file (a data node).
    #[arg(long, required = true)]
    node_id: Option<u64>,
    /// Wipe this node's data directory and start empty (every data node of a cluster starts
    /// with --initial the first time, or all of them start from their files).
    #[arg(long)]
    initial: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints the counters of a running data node (per thread and per link).
    Stats {
        /// The cluster file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The data node to ask.
        #[arg(long)]
        node_id: u64,
        /// The API node id to join as (default: the first API node linked to the data node).
        #[arg(long = "as")]
        as_node: Option<u64>,
        /// How long to wait for the link and the answer, in seconds (1 to 86400).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout_s: u64,
    },
}

/// Why the data node stopped with an error.
#[derive(Debug, thiserror::Error)]
enum DatanodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    DataNode(#[from] DataNodeError),
    #[error("could not start the links: {0}")]
    Registry(#[from] RegistryError),
    #[error("could not install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Panicked(#[from] ThreadPanicked),
    #[error("stats: {0}")]
    Stats(String),
}

/// Which node a loader prepares to run, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The data node's id.
    pub node_id: u64,
    /// `--initial`: wipe the node's data directory and start empty.
    pub initial: bool,
}

/// How a binary reads a cluster file: the validated file and the block kinds it links. With a
/// [`Start`] (not for `stats`) it also prepares that node's files.
pub type Loader<'a> =
    &'a dyn Fn(&std::path::Path, Option<Start>) -> Result<(Config, Kinds), ConfigError>;

/// The system blocks' loader (the runtime alone).
pub fn system_loader(path: &std::path::Path, _start: Option<Start>) -> Result<(Config, Kinds), ConfigError> {
    let kinds = Kinds::system();
    Ok((Config::load_with(path, &kinds)?, kinds))
}

/// The whole command line of a data-node binary called `name`; returns its exit code.
pub fn main(name: &'static str, load: Loader<'_>) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let matches = Args::command().name(name).get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let result = match (&args.command, &args.config, args.node_id) {
        (Some(Command::Stats { config, node_id, as_node, timeout_s }), _, _) => {
            stats(config, *node_id, *as_node, Duration::from_secs(*timeout_s), load)
        }
        (None, Some(config), Some(node_id)) => {
            run(config, Start { node_id, initial: args.initial }, load)
        }
        _ => Err(DatanodeError::Stats("--config and --node-id are required".into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path, start: Start, load: Loader<'_>) -> Result<(), DatanodeError> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(DatanodeError::Signals)?;
    let (config, kinds) = load(path, Some(start))?;
    let node = DataNode::start(&config, start.node_id, &kinds)?;
    // A node that stops by itself (a thread panicked) ends the wait for a signal too.
    let (stopper, signal_handle) = (node.stopper(), signals.handle());
    let watcher = std::thread::spawn(move || {
        stopper.wait(None);
        signal_handle.close();
    });
    match signals.forever().next() {
        Some(signal) => tracing::info!(signal, "stopping"),
        None => tracing::error!("a thread of the node failed: stopping"),
    }
    // Ordered: every block gets STOP_REQ, then the threads are joined; a panic is reported
    // after the rest is shut down.
    let stopped = node.stop();
    let _ = watcher.join();
    stopped?;
    tracing::info!("data node stopped");
    Ok(())
}

/// Asks data node `node_id` for its counters and prints them.
fn stats(
    path: &std::path::Path,
    node_id: u64,
    as_node: Option<u64>,
    timeout: Duration,
    load: Loader<'_>,
) -> Result<(), DatanodeError> {
    let (config, _) = load(path, None)?;
    let target = config.data_node(node_id)?.id;
    let me = match as_node {
        Some(id) => u32::try_from(id)
            .ok()
            .and_then(NodeId::new)
            .filter(|n| config.node(*n).is_some_and(|c| c.kind == NodeKind::Api))
            .ok_or_else(|| DatanodeError::Stats(format!("--as {id} is not an API node of the cluster file")))
            .and_then(|me| {
                if config.links_of(me).any(|l| l.nodes.contains(&target)) {
                    Ok(me)
                } else {
                    Err(DatanodeError::Stats(format!("--as {id}: the cluster file has no link between node {id} and node {target}")))
                }
            })?,
        None => config
            .links_of(target)
            .flat_map(|l| l.nodes)
            .find(|n| config.node(*n).is_some_and(|c| c.kind == NodeKind::Api))
            .ok_or_else(|| DatanodeError::Stats(format!("no API node is linked to node {target} in the cluster file; add one to ask it for statistics")))?,
    };
    let mut links = registry_config(&config, me)?;
    // The stats client writes its own request: it runs no send thread.
    links.send_thread = false;
    let mut registry = Registry::start(links)?;
    let deadline = Instant::now() + timeout;
    // The reason the last attempt failed is what a user needs: a node not running, a refused
    // secret, another client already connected as this API node.
    let no_link = |registry: &Registry| {
        let why =
            registry.last_error(target).map_or(String::new(), |e| format!(" (last attempt: {e})"));
        DatanodeError::Stats(format!("node {target} did not accept a link within {timeout:?}{why}"))
    };
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Err(no_link(&registry));
        };
        match registry.events().recv_timeout(left) {
            Ok(LinkEvent::Connected { peer, .. }) if peer == target => break,
            Ok(_) => continue,
            Err(_) => return Err(no_link(&registry)),
        }
    }
    let mut side =
        registry.take_receive_side().ok_or(DatanodeError::Stats("receive side taken".into()))?;
    let mut send = registry.send_buffers();
    let from = BlockRef::new(me, BlockNumber(900), BlockInstance(0));
    let to = BlockRef::new(target, crate::blocks::STATS, BlockInstance(0));
    send.pack(target, &Signal::new(gsn::STATS_REQ, from, to).data(&[1]))
        .map_err(|e| DatanodeError::Stats(e.to_string()))?;
    send.flush();
    let mut report = None;
    while report.is_none() {
        if Instant::now() > deadline {
            return Err(DatanodeError::Stats(format!(
                "node {target} did not answer within {timeout:?} (does it run a stats block?)"
            )));
        }
        side.poll(Some(Duration::from_millis(50)), &mut |_, view| {
            if view.gsn() == gsn::STATS_CONF {
                report = Some(StatsReport::decode(&view).map_err(|e| e.to_string()));
            }
        });
    }
    let report = report
        .unwrap_or_else(|| unreachable!("loop ends with a report"))
        .map_err(DatanodeError::Stats)?;
    // A reader that goes away early (`| head`) ends the output, not the process with a panic.
    match print_report(&mut std::io::stdout().lock(), target, &report) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(DatanodeError::Stats(format!("writing the report: {e}")))
        }
        _ => Ok(()),
    }
}

/// Writes the report to `out`.
fn print_report(out: &mut impl Write, node: NodeId, report: &StatsReport) -> std::io::Result<()> {
    writeln!(out, "node {node}")?;
    writeln!(
        out,
        "{:<8} {:>14} {:>12} {:>10} {:>10} {:>10}",
        "thread", "signals_run", "rounds", "sleeps", "wakeups", "dropped"
    )?;
    for (i, t) in report.threads.iter().enumerate() {
        writeln!(
            out,
            "{i:<8} {:>14} {:>12} {:>10} {:>10} {:>10}",
            t.signals_run, t.rounds, t.sleeps, t.wakeups, t.signals_dropped
        )?;
    }
    writeln!(
        out,
        "{:<8} {:>14} {:>14} {:>10} {:>12} {:>18} {:>12} {:>10}",
        "link",
        "signals_sent",
        "bytes_sent",
        "batches",
        "wakeups_sent",
        "send_buffer_hwm_B",
        "recv_sleeps",
        "cq_events"
    )?;
    for l in &report.links {
        let peer = l.peer.map_or("-".to_string(), |p| p.to_string());
        let [signals, bytes, batches, wakeups, high_water, sleeps, cq_events] = l.values();
        writeln!(
            out,
            "{peer:<8} {signals:>14} {bytes:>14} {batches:>10} {wakeups:>12} {high_water:>18} {sleeps:>12} {cq_events:>10}"
        )?;
    }
    for (owner, value) in &report.named {
        writeln!(out, "counter {owner} = {value}")?;
    }
    Ok(())
}
