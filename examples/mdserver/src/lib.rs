//! A file-system namespace kept in blockwire's data nodes, HopsFS style: inodes, directory
//! entries and small files' blocks are engine rows, every operation is one transaction, and a
//! directory listing is one single-partition ordered-index scan.
//!
//! ```no_run
//! use mdserver::{Caller, FsConfig, Namespace, ROOT};
//! let mut cluster = client::Cluster::connect("cluster.toml".as_ref(), client::ConnectOptions::default())?;
//! let mut ns = Namespace::open(cluster.session()?, FsConfig::default())?;
//! let me = Caller::user(1000, 1000);
//! let dir = ns.mkdir(ROOT, "projects", 0o755, &Caller::root())?;
//! ns.create(dir.ino, "notes.txt", 0o644, &me)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`fuse`] mounts a namespace with the kernel's FUSE; [`check`] walks it and compares
//! entries with inodes; [`mdtest`] is the benchmark's workload.

pub mod attr;
pub mod check;
mod dir;
pub mod error;
mod file;
pub mod fuse;
pub mod mdtest;
mod ns;
pub mod passthrough;
pub mod schema;

pub use attr::{Attr, Caller, Kind, MAY_EXEC, MAY_READ, MAY_WRITE};
pub use dir::RenameFlags;
pub use error::{FsError, FsResult};
pub use file::{DirEntry, SetAttr, SetTime, StatFs};
pub use ns::{now_ns, Dentry, Namespace, NsStats};
pub use schema::{FsConfig, Tables, ROOT};
