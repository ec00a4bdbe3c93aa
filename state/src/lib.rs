//! Operator state for tickflow.
//!
//! Operators keep their working set in memory ([`Table`], an ordered map that records which
//! keys changed) and never see the storage engine: at a checkpoint they hand their changes as
//! [`DeltaOp`]s through the [`Durable`] trait, with values in a versioned encoding ([`codec`]:
//! a format-version byte, then bincode 1.3). [`Store`] keeps those changes in RocksDB, one column
//! family per (operator, table), and reads a table back as of any retained checkpoint.
//! [`EventLog`] is the control plane's append-only, checksummed, fsync'd record of decisions,
//! whose payloads are [`events::Event`]s.

pub mod codec;
mod delta;
mod error;
mod eventlog;
pub mod events;
mod store;
mod table;
pub mod text;

pub use delta::{route, split_u64, DeltaOp, Durable};
pub use error::StateError;
pub use eventlog::{Cut, EventLog, LogRecord, OpenReport};
pub use store::{Delta, Store, TableStats, META_CF, PARTS_CF};
pub use table::{retain_once_doubled, Change, Entries, HashTable, Table, TableDescriptor, Tracked};
