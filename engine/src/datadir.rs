//! A data node's directory (NDB's `DataDir` file system): the redo logs of its storage
//! instances, their local checkpoint files, and the dictionary's schema file, with an
//! `identity` file that says whose they are.
//!
//! [`prepare`] runs before the node starts: it makes the directory when missing, refuses one
//! whose identity names another cluster or node (by file and field, even with `--initial`: a
//! wrong path in a cluster file must never wipe another node's data), writes the identity when
//! new, and with `--initial` removes every file the engine writes there (and nothing else).
//!
//! Invariant: the identity is written (and the directory synced) before any other file, so a
//! directory with engine files always says whose they are.

use std::io::Write;
use std::path::{Path, PathBuf};

use signals::NodeId;

/// The identity file's name.
pub const IDENTITY_FILE: &str = "identity";
/// The dictionary's schema file.
pub const SCHEMA_FILE: &str = "schema.json";

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    /// The identity file names another cluster or node, or cannot be read as one.
    #[error("{path}: {message}")]
    Identity { path: PathBuf, message: String },
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io { path: path.to_owned(), action, source }
}

/// Whether `name` is a file the engine writes in a data directory.
fn is_engine_file(name: &str) -> bool {
    name == SCHEMA_FILE
        || name.starts_with("schema.")
        || name.starts_with("redo-")
        || name.starts_with("lcp-")
}

/// Makes `dir` ready for data node `node` of cluster `cluster_id`; with `initial`, empties it
/// of engine files first. Returns whether the directory was new (no identity yet).
pub fn prepare(dir: &Path, cluster_id: u64, node: NodeId, initial: bool) -> Result<bool, DataDirError> {
    std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    let identity = dir.join(IDENTITY_FILE);
    let expected = format!("blockwire data directory\ncluster_id = {cluster_id}\nnode_id = {node}\n");
    let fresh = match std::fs::read_to_string(&identity) {
        Ok(found) => {
            check_identity(&identity, &found, cluster_id, node)?;
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_engine_files = std::fs::read_dir(dir)
                .map_err(io(dir, "list"))?
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_str().is_some_and(is_engine_file));
            if has_engine_files && !initial {
                return Err(DataDirError::Identity {
                    path: identity,
                    message: "missing while engine files are present: start with --initial to wipe them".into(),
                });
            }
            true
        }
        Err(e) => return Err(DataDirError::Io { path: identity, action: "read", source: e }),
    };
    if initial {
        for entry in std::fs::read_dir(dir).map_err(io(dir, "list"))?.filter_map(Result::ok) {
            if entry.file_name().to_str().is_some_and(is_engine_file) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io(&path, "remove"))?;
            }
        }
        tracing::info!(dir = %dir.display(), "--initial: engine files removed");
    }
    if fresh {
        let tmp = dir.join("identity.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp, "create"))?;
        f.write_all(expected.as_bytes()).map_err(io(&tmp, "write"))?;
        f.sync_all().map_err(io(&tmp, "fsync"))?;
        std::fs::rename(&tmp, &identity).map_err(io(&identity, "rename into"))?;
    }
    sync_dir(dir).map_err(io(dir, "fsync directory"))?;
    Ok(fresh)
}

fn check_identity(path: &Path, found: &str, cluster_id: u64, node: NodeId) -> Result<(), DataDirError> {
    let field = |name: &str| {
        found.lines().find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix('=')?.trim().parse::<u64>().ok())
    };
    let bad = |message: String| Err(DataDirError::Identity { path: path.to_owned(), message });
    if !found.starts_with("blockwire data directory\n") {
        return bad("not a blockwire identity file".into());
    }
    match (field("cluster_id"), field("node_id")) {
        (Some(c), _) if c != cluster_id => {
            bad(format!("belongs to cluster_id {c}, not {cluster_id}: refusing another cluster's data directory"))
        }
        (Some(_), Some(n)) if n != u64::from(node.get()) => {
            bad(format!("belongs to node_id {n}, not {node}: refusing another node's data directory"))
        }
        (Some(_), Some(_)) => Ok(()),
        _ => bad("has no cluster_id or node_id line".into()),
    }
}

/// Stops the data node: a file the node depends on (the redo log, a checkpoint, the schema)
/// cannot be trusted or written, and going on could lose or invent data (NDB stops a data
/// node on a redo error likewise). The message names the file and, where known, the offset.
pub(crate) fn stop_node(what: &str, error: &dyn std::fmt::Display) -> ! {
    tracing::error!(%error, "{what}: the data node stops");
    eprintln!("blockwire-datanode: {what}: {error}");
    std::process::exit(3)
}

/// Fsyncs a directory (after a rename into it).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync, rename, fsync the
/// directory. A crash leaves the old file or the new one, never a mix.
pub fn install(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp, "create"))?;
    f.write_all(bytes).map_err(io(&tmp, "write"))?;
    f.sync_all().map_err(io(&tmp, "fsync"))?;
    std::fs::rename(&tmp, &path).map_err(io(&path, "rename into"))?;
    sync_dir(dir).map_err(io(dir, "fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bw-datadir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn node(n: u32) -> NodeId {
        NodeId::new(n).expect("a node id")
    }

    #[test]
    fn another_cluster_or_node_is_refused_by_name_even_with_initial() {
        let dir = temp("owner");
        assert!(prepare(&dir, 7, node(1), false).expect("new"));
        assert!(!prepare(&dir, 7, node(1), false).expect("same owner"));
        let e = prepare(&dir, 8, node(1), true).expect_err("other cluster").to_string();
        assert!(e.contains("cluster_id 7") && e.contains("identity"), "{e}");
        let e = prepare(&dir, 7, node(2), false).expect_err("other node").to_string();
        assert!(e.contains("node_id 1"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn initial_removes_engine_files_only() {
        let dir = temp("initial");
        prepare(&dir, 7, node(1), false).expect("new");
        std::fs::write(dir.join("redo-0-0.log"), b"x").expect("write");
        std::fs::write(dir.join("notes.txt"), b"keep").expect("write");
        prepare(&dir, 7, node(1), true).expect("initial");
        assert!(!dir.join("redo-0-0.log").exists());
        assert!(dir.join("notes.txt").exists());
        std::fs::remove_file(dir.join(IDENTITY_FILE)).expect("remove identity");
        std::fs::write(dir.join("lcp-0-1.dat"), b"x").expect("write");
        let e = prepare(&dir, 7, node(1), false).expect_err("files without identity").to_string();
        assert!(e.contains("--initial"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
