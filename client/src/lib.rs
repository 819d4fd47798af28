//! blockwire's client library: an API node that joins a cluster from its cluster file and runs
//! schema requests, transactions and scans on the engine ([`session`]), its typed errors
//! ([`error`]), expression text for scans ([`expr`]),
//! and the checkers the tests use on recorded histories ([`check`]).
//!
//! ```no_run
//! use client::{Cluster, ConnectOptions, Exec, LockMode, Value};
//! let mut cluster = Cluster::connect("cluster.toml".as_ref(), ConnectOptions::default())?;
//! let mut session = cluster.session()?;
//! let accounts = session.table("accounts")?;
//! let mut tx = session.begin();
//! let read = tx.read(&accounts, &[Value::I64(7)], LockMode::Exclusive)?;
//! session.execute(&mut tx, Exec::NoCommit)?;
//! let balance = tx.row(read).and_then(|r| r.get("balance")).and_then(Value::as_i64).unwrap_or(0);
//! tx.update(&accounts, &[Value::I64(7)], &[("balance", Value::I64(balance + 10))])?;
//! session.execute(&mut tx, Exec::Commit)?;
//! # Ok::<(), client::Error>(())
//! ```

pub mod arbitrator;
pub mod check;
pub mod error;
pub mod expr;
pub mod retry;
pub mod session;
pub mod sql;

pub use engine::protocol::{Exec, LockMode};
pub use engine::ErrorCode;
pub use engine::row::Value;
pub use engine::schema::{Column, ColumnType, IndexDef, Table, TableDef};
pub use error::{Error, Result};
pub use retry::RetryPolicy;
pub use engine::index::{Range, RangeEnd};
pub use engine::program::compile::{col, lit, Expr};
pub use engine::program::AggFn;
pub use session::{
    TxOutcome,
    Cluster, Completion, ConnectOptions, Durability, OpId, Outcome, Row, Scan, ScanRequest, ScanStats, Session, Transaction, TxState,
};
