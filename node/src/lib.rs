//! blockwire's block runtime: blocks, block threads, job buffers, timers, configuration, and
//! the data-node binary (`src/bin/datanode.rs`).
//!
//! - [`block`]: the [`Block`] trait and the [`Context`] a handler sends, sets timers and counts
//!   through.
//! - [`runtime`]: [`NodeBuilder`] places blocks on threads and starts them; [`RunningNode`].
//! - [`thread`]: the round of a block thread (A first, bounded B per lane, timers, flush) and
//!   its spin-then-sleep idle path.
//! - [`lane`]: job buffers, bounded single-producer page queues between threads.
//! - [`sleep`], [`parker`], [`waitset`]: the amortised-wakeup protocol (loom-checked), bound
//!   to an eventfd in an epoll set that transporter descriptors can join.
//! - [`remote`]: the seam to the transporter layer ([`RemoteSink`], [`RemoteFactory`]);
//!   [`inbound`]: [`InboundRouter`], where receive paths hand signals in.
//! - [`timers`], [`clock`], [`routing`], [`outbox`], [`stats`], [`sync`].
//! - [`config`]: the TOML cluster file, validated.
//! - [`blocks`]: system blocks (ping/echo, statistics); [`kinds`]: block kinds from any crate.
//! - [`datanode`]: [`DataNode::start`], a whole data node from its cluster file.
//! - [`lifecycle`]: start phases and the ordered stop; [`harness`]: blocks run without threads.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod assemble;
pub mod block;
pub mod blocks;
pub mod cli;
pub mod clock;
pub mod config;
mod congestion;
pub mod datanode;
pub mod harness;
pub mod inbound;
mod io;
pub mod jobbuf;
pub mod kinds;
pub mod lane;
pub mod lifecycle;
pub mod links;
pub mod outbox;
pub mod parker;
pub mod remote;
pub mod ring;
pub mod routing;
pub mod runtime;
pub mod sleep;
pub mod stats;
pub mod sync;
pub mod thread;
pub mod timers;
pub mod waitset;

pub use block::{Block, Context, InitContext, SendError};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use datanode::{DataNode, DataNodeBuilder, DataNodeError};
pub use inbound::InboundRouter;
pub use kinds::{BlockEnv, BlockKind, Kinds, Settings};
pub use remote::{Flushed, NoRemote, RemoteError, RemoteFactory, RemoteSink, RouteError};
pub use runtime::{Injector, NodeBuilder, RunningNode, StartError, Stopper, Tuning};
pub use stats::{CounterId, LinkCounters, LinkStatsSource, NodeStats};
