//! Stashing records by time until the frontier passes it.

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

/// The least time of a frontier, `u64::MAX` once it is empty.
pub fn frontier_time(frontier: &MutableAntichain<u64>) -> u64 {
    frontier.frontier().first().copied().unwrap_or(u64::MAX)
}

/// Stashes records by time and hands each time's records back once the frontier has passed it.
pub struct TimeStash<D> {
    entries: BTreeMap<u64, Stashed<D>>,
}

/// A time's capabilities and the batches that arrived at it, each kept whole (taken from the
/// channel, not copied) until the time is handed back.
type Stashed<D> = (Vec<Capability<u64>>, Vec<Vec<D>>);

impl<D> Default for TimeStash<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D> TimeStash<D> {
    /// An empty stash.
    pub fn new() -> Self {
        TimeStash {
            entries: BTreeMap::new(),
        }
    }

    /// Stashes a batch at its capability's time, keeping a capability for each of `outputs`.
    pub fn stash<'a>(
        &mut self,
        cap: &InputCapability<u64>,
        outputs: usize,
        data: impl Iterator<Item = &'a mut Vec<D>>,
    ) where
        D: 'a,
    {
        let Some(time) = cap.least().copied() else {
            return;
        };
        let entry = self.entries.entry(time).or_insert_with(|| {
            let caps = (0..outputs)
                .filter_map(|port| cap.retain_least(port))
                .collect();
            (caps, Vec::new())
        });
        for batch in data.filter(|b| !b.is_empty()) {
            match entry.1.last_mut() {
                // A sparse batch (a container flushed early) is copied into the last one kept,
                // so that a time's batches hold about what they carry, not a full container's
                // capacity each.
                Some(last) if batch.len() * 2 < batch.capacity() => last.append(batch),
                _ => entry.1.push(std::mem::take(batch)),
            }
        }
    }

    /// The earliest stashed time the frontier has passed, with its capabilities and records.
    pub fn pop_ready(
        &mut self,
        frontier: &MutableAntichain<u64>,
    ) -> Option<(u64, Vec<Capability<u64>>, Vec<D>)> {
        let entry = self.entries.first_entry()?;
        if frontier.less_equal(entry.key()) {
            return None;
        }
        let (time, (caps, mut batches)) = entry.remove_entry();
        // One batch is handed back as it came; several are copied once into one.
        let data = if batches.len() == 1 {
            batches.pop().unwrap_or_default()
        } else {
            let mut all = Vec::with_capacity(batches.iter().map(Vec::len).sum());
            batches.iter_mut().for_each(|b| all.append(b));
            all
        };
        Some((time, caps, data))
    }
}
