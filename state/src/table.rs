//! [`Table`]: an operator's keyed working set, ordered by key, with change tracking.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// Names one table of one operator: the unit a durable backend stores separately
/// (one column family per operator and table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDescriptor {
    /// The table's name, unique within its operator (`"windows"`, `"dedup"`).
    pub name: &'static str,
    /// What the table holds, for `checkpoints inspect` and docs.
    pub description: &'static str,
}

/// One change to a table since the last call to [`Table::take_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<K, V> {
    /// The key now holds this value.
    Put(K, V),
    /// The key was removed.
    Delete(K),
}

/// An ordered map that remembers which keys changed, so that a snapshot needs to write
/// only those. Ordering by key lets operators find expired entries with a range scan
/// (window state is keyed by window end first).
///
/// ```
/// use tickflow_state::{Change, Table};
/// let mut t = Table::new(true);
/// t.insert(3u64, "c");
/// t.insert(1u64, "a");
/// assert_eq!(t.pop_first_while(|k, _| *k < 2), vec![(1, "a")]);
/// let mut changes = t.take_changes();
/// changes.sort_by_key(|c| match c { Change::Put(k, _) | Change::Delete(k) => *k });
/// assert_eq!(changes, vec![Change::Delete(1), Change::Put(3, "c")]);
/// ```
#[derive(Debug, Clone)]
pub struct Table<K: Ord + Clone, V> {
    /// Each value with whether it changed since the last [`Table::take_changes`].
    entries: BTreeMap<K, (V, bool)>,
    /// Keys that became dirty (in order) and keys removed, when tracking.
    changed: Option<(Vec<K>, Vec<K>)>,
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    /// An empty table; with `track_changes` it records changed keys for [`Table::take_changes`].
    /// Tracking costs one flag check per update: a key is listed once per snapshot interval.
    pub fn new(track_changes: bool) -> Self {
        Table {
            entries: BTreeMap::new(),
            changed: track_changes.then(Default::default),
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// The value under `key`, for update; marks the key changed.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (value, dirty) = self.entries.get_mut(key)?;
        if let (false, Some((keys, _))) = (*dirty, self.changed.as_mut()) {
            *dirty = true;
            keys.push(key.clone());
        }
        Some(value)
    }

    /// The value under `key`, inserted with `make` when absent; marks the key changed.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        use std::collections::btree_map::Entry;
        let tracking = self.changed.is_some();
        match self.entries.entry(key) {
            Entry::Occupied(e) => {
                let (k, slot) = (e.key().clone(), e.into_mut());
                if tracking && !slot.1 {
                    slot.1 = true;
                    if let Some((keys, _)) = self.changed.as_mut() {
                        keys.push(k);
                    }
                }
                &mut slot.0
            }
            Entry::Vacant(e) => {
                if let Some((keys, _)) = self.changed.as_mut() {
                    keys.push(e.key().clone());
                }
                &mut e.insert((make(), tracking)).0
            }
        }
    }

    /// Sets `key` to `value`; marks the key changed.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let tracking = self.changed.is_some();
        let old = self.entries.insert(key.clone(), (value, tracking));
        if let (Some((keys, _)), false) = (self.changed.as_mut(), old.as_ref().is_some_and(|o| o.1))
        {
            keys.push(key);
        }
        old.map(|(v, _)| v)
    }

    /// Removes `key`; marks the key changed.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, _) = self.entries.remove(key)?;
        if let Some((_, removed)) = self.changed.as_mut() {
            removed.push(key.clone());
        }
        Some(value)
    }

    /// Removes and returns entries from the smallest key up, while `keep_going` holds.
    pub fn pop_first_while(&mut self, mut keep_going: impl FnMut(&K, &V) -> bool) -> Vec<(K, V)> {
        let mut out = Vec::new();
        while let Some(entry) = self.entries.first_entry() {
            if !keep_going(entry.key(), &entry.get().0) {
                break;
            }
            let (k, (v, _)) = entry.remove_entry();
            if let Some((_, removed)) = self.changed.as_mut() {
                removed.push(k.clone());
            }
            out.push((k, v));
        }
        out
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, (v, _))| (k, v))
    }

    /// Entries with keys in `range`, in key order.
    pub fn range<R: std::ops::RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (&K, &V)> {
        self.entries.range(range).map(|(k, (v, _))| (k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets which keys changed (after loading entries that storage already holds).
    pub fn forget_changes(&mut self) {
        if self.changed.is_some() {
            for (_, dirty) in self.entries.values_mut() {
                *dirty = false;
            }
            self.changed = Some(Default::default());
        }
    }

    /// The changes since the last call, one per changed key, with the key's current value,
    /// in key order. Empty when the table does not track changes.
    pub fn take_changes(&mut self) -> Vec<Change<K, V>> {
        let mut out = Vec::new();
        self.drain_changes(|k, v| {
            out.push(match v {
                Some(v) => Change::Put(k.clone(), v.clone()),
                None => Change::Delete(k.clone()),
            })
        });
        out
    }

    /// Like [`Table::take_changes`], without copying: `f(key, Some(current value))` for each
    /// changed key, `f(key, None)` for each removed one, in key order.
    pub fn drain_changes(&mut self, mut f: impl FnMut(&K, Option<&V>)) {
        let Some((keys, removed)) = self.changed.as_mut().map(std::mem::take) else {
            return;
        };
        let mut touched: BTreeSet<K> = removed.into_iter().collect();
        touched.extend(keys);
        for k in touched {
            match self.entries.get_mut(&k) {
                Some((v, dirty)) => {
                    *dirty = false;
                    f(&k, Some(v));
                }
                None => f(&k, None),
            }
        }
    }
}

/// A [`Table`] without key order, for hot lookups by keys that are slow to compare (a hash
/// lookup instead of a dozen string comparisons): the same change tracking, and
/// [`HashTable::drain_changes`] still reports in key order, so snapshots stay deterministic.
#[derive(Debug, Clone)]
pub struct HashTable<K: Ord + Hash + Clone, V> {
    entries: FxHashMap<K, (V, bool)>,
    changed: Option<(Vec<K>, Vec<K>)>,
}

impl<K: Ord + Hash + Clone, V> HashTable<K, V> {
    /// An empty table; with `track_changes` it records changed keys for
    /// [`HashTable::drain_changes`].
    pub fn new(track_changes: bool) -> Self {
        HashTable {
            entries: FxHashMap::default(),
            changed: track_changes.then(Default::default),
        }
    }

    /// The value under `key`, for update; marks the key changed.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (value, dirty) = self.entries.get_mut(key)?;
        if let (false, Some((keys, _))) = (*dirty, self.changed.as_mut()) {
            *dirty = true;
            keys.push(key.clone());
        }
        Some(value)
    }

    /// The value under `key` and whether it was just made with `make`; marks the key changed.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> (&mut V, bool) {
        use std::collections::hash_map::Entry;
        let tracking = self.changed.is_some();
        match self.entries.entry(key) {
            Entry::Occupied(e) => {
                if tracking && !e.get().1 {
                    let key = e.key().clone();
                    let slot = e.into_mut();
                    slot.1 = true;
                    if let Some((keys, _)) = self.changed.as_mut() {
                        keys.push(key);
                    }
                    return (&mut slot.0, false);
                }
                (&mut e.into_mut().0, false)
            }
            Entry::Vacant(e) => {
                if let Some((keys, _)) = self.changed.as_mut() {
                    keys.push(e.key().clone());
                }
                (&mut e.insert((make(), tracking)).0, true)
            }
        }
    }

    /// Sets `key` to `value`; marks the key changed.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let tracking = self.changed.is_some();
        let old = self.entries.insert(key.clone(), (value, tracking));
        if let (Some((keys, _)), false) = (self.changed.as_mut(), old.as_ref().is_some_and(|o| o.1))
        {
            keys.push(key);
        }
        old.map(|(v, _)| v)
    }

    /// Removes `key`; marks the key changed.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, _) = self.entries.remove(key)?;
        if let Some((_, removed)) = self.changed.as_mut() {
            removed.push(key.clone());
        }
        Some(value)
    }

    /// The value under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets which keys changed (after loading entries that storage already holds).
    pub fn forget_changes(&mut self) {
        if self.changed.is_some() {
            for (_, dirty) in self.entries.values_mut() {
                *dirty = false;
            }
            self.changed = Some(Default::default());
        }
    }

    /// `f(key, Some(current value))` for each key changed since the last call, `f(key, None)`
    /// for each removed one, in key order.
    pub fn drain_changes(&mut self, mut f: impl FnMut(&K, Option<&V>)) {
        let Some((keys, removed)) = self.changed.as_mut().map(std::mem::take) else {
            return;
        };
        let mut touched: BTreeSet<K> = removed.into_iter().collect();
        touched.extend(keys);
        for k in touched {
            match self.entries.get_mut(&k) {
                Some((v, dirty)) => {
                    *dirty = false;
                    f(&k, Some(v));
                }
                None => f(&k, None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_puts_updates_and_deletes_once_per_key() {
        let mut t: Table<(u64, String), u32> = Table::new(true);
        t.insert((60, "A".into()), 1);
        *t.get_mut(&(60, "A".into())).unwrap() += 1;
        *t.get_or_insert_with((120, "B".into()), || 0) += 5;
        t.insert((180, "C".into()), 9);
        t.remove(&(180, "C".into()));
        let changes = t.take_changes();
        assert_eq!(
            changes,
            vec![
                Change::Put((60, "A".into()), 2),
                Change::Put((120, "B".into()), 5),
                Change::Delete((180, "C".into())),
            ]
        );
        assert!(t.take_changes().is_empty());
        assert_eq!(t.range((100, String::new())..).count(), 1);
    }

    #[test]
    fn a_hash_table_tracks_changes_like_a_table_and_reports_them_in_key_order() {
        let mut t: HashTable<(u64, String), u32> = HashTable::new(true);
        t.insert((120, "B".into()), 1);
        t.insert((60, "A".into()), 1);
        t.forget_changes();
        *t.get_mut(&(60, "A".into())).unwrap() += 1;
        let (v, new) = t.get_or_insert_with((120, "B".into()), || 0);
        *v += 5;
        assert!(!new);
        assert!(t.get_or_insert_with((30, "C".into()), || 7).1);
        t.insert((180, "D".into()), 9);
        t.remove(&(180, "D".into()));
        let mut changes = Vec::new();
        t.drain_changes(|k, v| changes.push((k.clone(), v.copied())));
        assert_eq!(
            changes,
            vec![
                ((30, "C".into()), Some(7)),
                ((60, "A".into()), Some(2)),
                ((120, "B".into()), Some(6)),
                ((180, "D".into()), None),
            ]
        );
        t.drain_changes(|_, _| panic!("no changes left"));
        assert_eq!((t.len(), t.get(&(30, "C".into()))), (3, Some(&7)));
    }

    #[test]
    fn untracked_table_reports_no_changes() {
        let mut t = Table::new(false);
        t.insert(1u8, 1u8);
        assert!(t.take_changes().is_empty());
        assert_eq!(t.len(), 1);
        assert!(!t.is_empty());
    }
}
