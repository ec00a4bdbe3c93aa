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
    entries: BTreeMap<u64, (Vec<Capability<u64>>, Vec<D>)>,
}

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
        for batch in data {
            entry.1.append(batch);
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
        let (time, (caps, data)) = entry.remove_entry();
        Some((time, caps, data))
    }
}
