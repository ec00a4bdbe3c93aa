//! Operator state for tickflow.
//!
//! This crate owns how operator state is kept and encoded. Operators never see a storage engine:
//! they keep their working set in a [`Table`], an ordered in-memory map that can record which
//! keys changed since the last snapshot, and they declare their tables by name
//! ([`TableDescriptor`]). Values cross a storage boundary only through [`codec`], a versioned
//! encoding (a format-version byte followed by bincode 1.3), so a durable backend can be added
//! behind this interface without touching operator logic.

pub mod codec;
mod error;
mod table;

pub use error::StateError;
pub use table::{Change, Table, TableDescriptor};
