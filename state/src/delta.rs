//! What a snapshot hands to storage: changes to an operator's tables since the previous one.

use std::collections::BTreeMap;

use crate::StateError;

/// The routing hash of a key: the same in every worker and process (FxHash, deterministic),
/// so an exchange that routes by it and a restore that asks who owns a stored key agree.
pub fn route<H: std::hash::Hash + ?Sized>(value: &H) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    value.hash(&mut h);
    h.finish()
}

/// One change to a table, with keys and values already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaOp {
    /// The key now holds this value.
    Put {
        /// Encoded key; its byte order is the table's scan order.
        key: Vec<u8>,
        /// Encoded value (see [`crate::codec`]).
        value: Vec<u8>,
    },
    /// The key was removed.
    Delete {
        /// Encoded key.
        key: Vec<u8>,
    },
    /// Every key ordered before `key` was removed: how expired windows or dedup buckets leave
    /// storage with one range delete instead of one tombstone each. Applied before the puts
    /// and deletes of the same snapshot.
    DeleteBelow {
        /// Exclusive upper bound.
        key: Vec<u8>,
    },
}

impl DeltaOp {
    /// Applies this change to a table held as an ordered map of encoded keys and values: what
    /// reading a table back does with each stored change.
    pub fn apply(self, table: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        match self {
            DeltaOp::DeleteBelow { key } => *table = table.split_off(&key),
            DeltaOp::Put { key, value } => {
                table.insert(key, value);
            }
            DeltaOp::Delete { key } => {
                table.remove(&key);
            }
        }
    }

    /// Bytes of key and value.
    pub fn size(&self) -> usize {
        match self {
            DeltaOp::Put { key, value } => key.len() + value.len(),
            DeltaOp::Delete { key } | DeltaOp::DeleteBelow { key } => key.len(),
        }
    }
}

/// Operator state that can be saved at checkpoints and taken back after a restart.
///
/// Snapshots are incremental: each returns the changes since the previous one. A restart loads
/// every stored entry once, through [`Durable::restore_entry`], then calls
/// [`Durable::finish_restore`] with the checkpoint time.
pub trait Durable {
    /// The changes since the previous snapshot, as `(table name, change)`, for a checkpoint
    /// whose first covered time is `label` (the time the caller's checkpoint cadence names).
    /// An error (a value that cannot be encoded) fails the checkpoint: nothing is skipped.
    fn snapshot(
        &mut self,
        label: u64,
        out: &mut Vec<(&'static str, DeltaOp)>,
    ) -> Result<(), StateError>;

    /// Takes back one stored entry of `table`, or the parts of it this instance owns: `owns`
    /// says whether a routing key's [`route`] hash (of what the operator's exchange routes by:
    /// an instrument id, a `(venue, seq)` pair) belongs to this instance.
    fn restore_entry(
        &mut self,
        table: &str,
        key: &[u8],
        value: &[u8],
        owns: &dyn Fn(u64) -> bool,
    ) -> Result<(), StateError>;

    /// Called once after every entry is restored, with the checkpoint time `as_of`: moves the
    /// state to "every input before `as_of` applied". Outputs this produces were already made
    /// before the checkpoint and are not emitted again.
    fn finish_restore(&mut self, as_of: u64);

    /// Called after [`Durable::finish_restore`] when the state was restored from a checkpoint
    /// of another cluster shape into a store that holds none of it: the next snapshot writes
    /// every entry held, as if all were new.
    fn rewrite_all(&mut self);

    /// Number of entries held in memory.
    fn entries(&self) -> u64;
}

/// Big-endian `u64` at the start of `bytes`, and the rest.
pub fn split_u64(bytes: &[u8]) -> Result<(u64, &[u8]), StateError> {
    if bytes.len() < 8 {
        return Err(StateError::Corrupt(format!(
            "key of {} bytes is shorter than its 8-byte prefix",
            bytes.len()
        )));
    }
    let (head, rest) = bytes.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(head);
    Ok((u64::from_be_bytes(b), rest))
}
