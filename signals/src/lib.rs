//! blockwire's signal model and wire format: the data every other layer moves. No I/O, no
//! threads, and no allocation when packing or walking a batch.
//!
//! - [`ids`]: node ids, block numbers and instances, block references, GSNs, priority.
//! - [`gsn`]: the system protocol (the runtime's signals and the system blocks').
//! - [`protocol`]: [`protocol!`] declares a protocol anywhere; [`ProtocolSet`] checks them.
//! - [`header`]: the fixed wire header, drawn as a ruler and checked at compile time.
//! - [`encode`]: [`BatchWriter`] packs whole signals into a caller's send-buffer page.
//! - [`walk`]: [`BatchWalker`] yields zero-copy [`SignalView`]s from a received batch, telling an
//!   incomplete tail apart from malformed input.
//! - [`typed`]: signal data declared as `#[repr(C)]` `Pod` structs tied to their GSN.
//! - [`limits`]: the configured largest section and signal, validated.
//! - [`checksum`]: the optional per-signal checksum.
//!
//! The format is modelled on NDB's Protocol6 signal (`TransporterInternalDefinitions.hpp`,
//! `Packer.cpp`): a length-first header so batches can be walked without knowing GSNs, a short
//! part of up to 25 words, and up to three long sections.
#![deny(unsafe_code)]

pub mod checksum;
pub mod encode;
pub mod gsn;
pub mod header;
pub mod ids;
pub mod limits;
pub mod protocol;
pub mod typed;
pub mod walk;

pub use encode::{BatchWriter, PackError, Signal, WriteOptions};
pub use header::{WireHeader, HEADER_BYTES, MAX_DATA_WORDS, MAX_SECTIONS};
pub use ids::{BlockInstance, BlockNumber, BlockRef, Gsn, InvalidNodeId, NodeId, Priority};
pub use limits::{Limits, LimitsError};
pub use protocol::{Payload, Protocol, ProtocolClash, ProtocolSet, SignalSpec};
pub use typed::{SignalData, TypedError};
pub use walk::{BatchWalker, Malformed, MisalignedBatch, SignalView, WalkError};
