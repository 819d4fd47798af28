//! `blockwire-mdserver`: mounts a namespace kept in a blockwire cluster with FUSE, checks a
//! namespace's consistency, or mounts the pass-through file system the benchmark measures
//! against.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mdserver::fuse::MdFs;
use mdserver::{FsConfig, Namespace};

#[derive(Parser, Debug)]
#[command(
    name = "blockwire-mdserver",
    version,
    about = "A file-system namespace in a blockwire cluster, mounted with FUSE"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Join {
    /// The cluster file.
    #[arg(long)]
    config: PathBuf,
    /// The API node to join as.
    #[arg(long = "node-id")]
    node_id: u64,
    /// How long to wait for the data nodes, in ms.
    #[arg(long, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    /// Bytes per stored file block (512..=4096; fixed when the namespace is first made).
    #[arg(long, default_value_t = FsConfig::default().block_size)]
    block_size: u32,
    /// How long a waiting call polls the links before it sleeps, in us.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// The largest file in bytes (EFBIG beyond).
    #[arg(long, default_value_t = FsConfig::default().max_file_size)]
    max_file_size: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mounts the namespace at MOUNTPOINT until SIGTERM or SIGINT (then unmounts).
    Mount {
        #[command(flatten)]
        join: Join,
        /// How long the kernel may cache entries and attributes, in ms (0: never, so every
        /// mount of the cluster sees every change at once).
        #[arg(long, default_value_t = 0)]
        cache_ms: u64,
        /// Where to mount.
        mountpoint: PathBuf,
    },
    /// Walks the namespace and compares entries with inodes; exit 1 when anything is wrong.
    Check {
        #[command(flatten)]
        join: Join,
    },
    /// Mounts SOURCE (a local directory) at MOUNTPOINT through FUSE, passing every request
    /// through: the floor any FUSE mount pays, for the benchmark.
    Passthrough {
        /// The directory to pass through to.
        source: PathBuf,
        /// Where to mount.
        mountpoint: PathBuf,
        /// How long the kernel may cache entries and attributes, in ms.
        #[arg(long, default_value_t = 0)]
        cache_ms: u64,
    },
}

fn connect(join: &Join) -> Result<client::Cluster, String> {
    let options = client::ConnectOptions {
        api_node: Some(join.node_id),
        connect_timeout: Duration::from_millis(join.connect_timeout_ms),
        spin: Duration::from_micros(join.spin_us),
        ..client::ConnectOptions::default()
    };
    client::Cluster::connect(&join.config, options)
        .map_err(|e| format!("cannot reach the cluster of {}: {e}", join.config.display()))
}

fn fs_config(join: &Join) -> FsConfig {
    FsConfig {
        block_size: join.block_size,
        max_file_size: join.max_file_size,
        ..FsConfig::default()
    }
}

/// Runs a FUSE session over `fs` at `mountpoint` until SIGTERM or SIGINT unmounts it.
fn serve<F: fuser::Filesystem>(
    fs: F,
    mountpoint: &std::path::Path,
    name: &str,
) -> Result<(), String> {
    let mut options =
        vec![fuser::MountOption::FSName(name.into()), fuser::MountOption::Subtype(name.into())];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        options.push(fuser::MountOption::AllowOther);
    }
    let mut session = fuser::Session::new(fs, mountpoint, &options)
        .map_err(|e| format!("cannot mount at {}: {e}", mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "unmounting");
            let _ = unmounter.unmount();
        }
    });
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    session
        .run()
        .map_err(|e| format!("the FUSE session at {} failed: {e}", mountpoint.display()))?;
    tracing::info!("unmounted");
    Ok(())
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Mount { join, cache_ms, mountpoint } => {
            if !mountpoint.is_dir() {
                return Err(format!("mount point {} is not a directory", mountpoint.display()));
            }
            let mut cluster = connect(&join)?;
            let session = cluster.session().map_err(|e| e.to_string())?;
            let ns = Namespace::open(session, fs_config(&join))
                .map_err(|e| format!("opening the namespace: {e}"))?;
            serve(MdFs::new(ns, Duration::from_millis(cache_ms)), &mountpoint, "blockwire")?;
            Ok(true)
        }
        Command::Check { join } => {
            let mut cluster = connect(&join)?;
            let session = cluster.session().map_err(|e| e.to_string())?;
            let mut ns = Namespace::open(session, fs_config(&join))
                .map_err(|e| format!("opening the namespace: {e}"))?;
            let report = mdserver::check::check(&mut ns)
                .map_err(|e| format!("reading the namespace: {e}"))?;
            println!(
                "{} inodes, {} entries, {} blocks, {} directories reachable: {}",
                report.inodes,
                report.entries,
                report.blocks,
                report.directories,
                if report.is_clean() {
                    "consistent".to_string()
                } else {
                    format!("{} problems", report.problems.len())
                }
            );
            for p in &report.problems {
                println!("  {p}");
            }
            Ok(report.is_clean())
        }
        Command::Passthrough { source, mountpoint, cache_ms } => {
            let fs =
                mdserver::passthrough::Passthrough::new(&source, Duration::from_millis(cache_ms))
                    .map_err(|e| format!("source {}: {e}", source.display()))?;
            serve(fs, &mountpoint, "passthrough")?;
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("blockwire-mdserver: {e}");
            ExitCode::from(2)
        }
    }
}
