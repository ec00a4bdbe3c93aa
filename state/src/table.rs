//! [`Table`] and [`HashTable`]: an operator's keyed working set, with change tracking.

use std::collections::BTreeMap;
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

/// One change to a table since the last call to [`Tracked::take_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<K, V> {
    /// The key now holds this value.
    Put(K, V),
    /// The key was removed.
    Delete(K),
}

/// Where a tracked table keeps its entries: each value with whether it changed since the last
/// drain. Implemented by an ordered map ([`Table`]) and a hash map ([`HashTable`]).
pub trait Entries<K, V>: Default {
    /// The entry under `key`.
    fn entry_ref(&self, key: &K) -> Option<&(V, bool)>;
    /// The entry under `key`, for update.
    fn entry_mut(&mut self, key: &K) -> Option<&mut (V, bool)>;
    /// Sets `key`'s entry, returning the old one.
    fn put(&mut self, key: K, entry: (V, bool)) -> Option<(V, bool)>;
    /// Removes `key`'s entry.
    fn take(&mut self, key: &K) -> Option<(V, bool)>;
    /// Number of entries.
    fn count(&self) -> usize;
    /// Calls `f` on every key with its entry's changed flag.
    fn for_each_flag(&mut self, f: impl FnMut(&K, &mut bool));
    /// The entry under `key`, made with `make` when absent, and whether it was made.
    fn get_or_make(&mut self, key: K, make: impl FnOnce() -> (V, bool)) -> (&mut (V, bool), bool);
}

/// [`Entries`] for a std map type whose API names match (`get`, `entry`, ...).
macro_rules! entries_for {
    ($map:ident, $entry:path, $($bound:tt)+) => {
        impl<K: $($bound)+, V> Entries<K, V> for $map<K, (V, bool)> {
            fn entry_ref(&self, key: &K) -> Option<&(V, bool)> {
                self.get(key)
            }
            fn entry_mut(&mut self, key: &K) -> Option<&mut (V, bool)> {
                self.get_mut(key)
            }
            fn put(&mut self, key: K, entry: (V, bool)) -> Option<(V, bool)> {
                self.insert(key, entry)
            }
            fn take(&mut self, key: &K) -> Option<(V, bool)> {
                self.remove(key)
            }
            fn count(&self) -> usize {
                self.len()
            }
            fn for_each_flag(&mut self, mut f: impl FnMut(&K, &mut bool)) {
                self.iter_mut().for_each(|(k, (_, dirty))| f(k, dirty));
            }
            fn get_or_make(
                &mut self,
                key: K,
                make: impl FnOnce() -> (V, bool),
            ) -> (&mut (V, bool), bool) {
                use $entry as Entry;
                match self.entry(key) {
                    Entry::Occupied(e) => (e.into_mut(), false),
                    Entry::Vacant(e) => (e.insert(make()), true),
                }
            }
        }
    };
}

entries_for!(BTreeMap, std::collections::btree_map::Entry, Ord);
entries_for!(FxHashMap, std::collections::hash_map::Entry, Hash + Eq);

/// A keyed working set that remembers which keys changed, so that a snapshot needs to write
/// only those: [`Table`] (ordered by key) or [`HashTable`] (a hash lookup per access).
#[derive(Debug, Clone)]
pub struct Tracked<K, V, M> {
    /// Each value with whether it changed since the last drain.
    entries: M,
    /// Keys that became dirty (in order) and keys removed, when tracking.
    changed: Option<(Vec<K>, Vec<K>)>,
    /// The dirty list's length after it was last compacted (see [`Tracked::forget`]).
    compacted: usize,
    _values: std::marker::PhantomData<V>,
}

/// An ordered map that remembers which keys changed. Ordering by key lets operators find
/// expired entries with a range scan.
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
pub type Table<K, V> = Tracked<K, V, BTreeMap<K, (V, bool)>>;

/// A table without key order, for hot lookups by keys that are slow to compare (a hash lookup
/// instead of a dozen string comparisons); its changes still drain in key order, so snapshots
/// stay deterministic.
pub type HashTable<K, V> = Tracked<K, V, FxHashMap<K, (V, bool)>>;

impl<K: Ord + Clone, V, M: Entries<K, V>> Tracked<K, V, M> {
    /// An empty table; with `track_changes` it records changed keys for
    /// [`Tracked::drain_changes`]. Tracking costs one flag check per update: a key is listed
    /// once per snapshot interval.
    pub fn new(track_changes: bool) -> Self {
        Tracked {
            entries: M::default(),
            changed: track_changes.then(Default::default),
            compacted: 0,
            _values: std::marker::PhantomData,
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.entry_ref(key).map(|(v, _)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.entry_ref(key).is_some()
    }

    /// The value under `key`, for update; marks the key changed.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (value, dirty) = self.entries.entry_mut(key)?;
        if let (false, Some((keys, _))) = (*dirty, self.changed.as_mut()) {
            *dirty = true;
            keys.push(key.clone());
        }
        Some(value)
    }

    /// The value under `key` and whether it was just made with `make`; marks the key changed.
    pub fn get_or_insert(&mut self, key: K, make: impl FnOnce() -> V) -> (&mut V, bool) {
        let tracking = self.changed.is_some();
        // The key is listed by its clone only when it becomes dirty.
        let listed = self.changed.as_mut().map(|(keys, _)| (keys, key.clone()));
        let ((value, dirty), made) = self.entries.get_or_make(key, || (make(), tracking));
        if let (Some((keys, key)), true) = (listed, made || (tracking && !*dirty)) {
            *dirty = true;
            keys.push(key);
        }
        (value, made)
    }

    /// The value under `key`, inserted with `make` when absent; marks the key changed.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.get_or_insert(key, make).0
    }

    /// Sets `key` to `value`; marks the key changed.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let tracking = self.changed.is_some();
        let old = self.entries.put(key.clone(), (value, tracking));
        if let (Some((keys, _)), false) = (self.changed.as_mut(), old.as_ref().is_some_and(|o| o.1))
        {
            keys.push(key);
        }
        old.map(|(v, _)| v)
    }

    /// Removes `key`; marks the key changed.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, _) = self.entries.take(key)?;
        if let Some((_, removed)) = self.changed.as_mut() {
            removed.push(key.clone());
        }
        Some(value)
    }

    /// Removes `key` without recording it, even if it changed since the last drain: for
    /// entries whose removal storage learns another way (a range delete covering them).
    ///
    /// A forgotten key stays in the list of dirty keys until the next drain skips it; the list
    /// is compacted to the keys still present once it has doubled, so a table whose keys come
    /// and go between two drains (windows opened and expired during a catch-up) holds about
    /// its live keys, not every key it saw.
    pub fn forget(&mut self, key: &K) -> Option<V> {
        let value = self.entries.take(key).map(|(v, _)| v);
        if let Some((keys, _)) = self.changed.as_mut() {
            let entries = &self.entries;
            retain_once_doubled(keys, &mut self.compacted, |k| {
                entries.entry_ref(k).is_some()
            });
        }
        value
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.count()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.count() == 0
    }

    /// Forgets which keys changed (after loading entries that storage already holds).
    pub fn forget_changes(&mut self) {
        if self.changed.is_some() {
            self.entries.for_each_flag(|_, dirty| *dirty = false);
            self.changed = Some(Default::default());
            self.compacted = 0;
        }
    }

    /// Marks every entry changed, so the next drain lists them all: for state restored into
    /// a store that holds none of it (a checkpoint taken by another cluster shape).
    pub fn mark_all_changed(&mut self) {
        let Some((keys, _)) = self.changed.as_mut() else {
            return;
        };
        self.entries.for_each_flag(|k, dirty| {
            if !*dirty {
                *dirty = true;
                keys.push(k.clone());
            }
        });
    }

    /// The changes since the last call, one per changed key, with the key's current value,
    /// in key order. Empty when the table does not track changes.
    pub fn take_changes(&mut self) -> Vec<Change<K, V>>
    where
        V: Clone,
    {
        let mut out = Vec::new();
        self.drain_changes(|k, v| {
            out.push(match v {
                Some(v) => Change::Put(k.clone(), v.clone()),
                None => Change::Delete(k.clone()),
            })
        });
        out
    }

    /// Like [`Tracked::take_changes`], without copying: `f(key, Some(current value))` for each
    /// changed key, `f(key, None)` for each removed one, in key order.
    pub fn drain_changes(&mut self, mut f: impl FnMut(&K, Option<&V>)) {
        let Some((keys, removed)) = self.changed.as_mut().map(std::mem::take) else {
            return;
        };
        self.compacted = 0;
        // Each touched key, with whether it was removed (a key changed and then forgotten is
        // neither: storage learns of it another way).
        let mut touched: BTreeMap<K, bool> = removed.into_iter().map(|k| (k, true)).collect();
        for k in keys {
            touched.entry(k).or_insert(false);
        }
        for (k, removed) in touched {
            match self.entries.entry_mut(&k) {
                Some((v, dirty)) => {
                    *dirty = false;
                    f(&k, Some(v));
                }
                None if removed => f(&k, None),
                None => {}
            }
        }
    }
}

/// Keeps the items of `list` for which `keep` holds, once `list` has doubled since the last
/// time (its length then is `kept`, and the list is at least 4,096 long): a list that is
/// appended to and pruned of stale items this way holds about its live items, and looks at
/// each item a bounded number of times. Reset `kept` to 0 when the list is emptied.
pub fn retain_once_doubled<T>(list: &mut Vec<T>, kept: &mut usize, keep: impl FnMut(&T) -> bool) {
    if list.len() >= 2 * (*kept).max(4096) {
        list.retain(keep);
        *kept = list.len();
    }
}

impl<K: Ord + Clone, V> Table<K, V> {
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
    fn marking_all_changed_lists_every_entry_once_in_the_next_drain() {
        let mut t: HashTable<u64, u32> = HashTable::new(true);
        for k in [3, 1, 2] {
            t.insert(k, k as u32 * 10);
        }
        t.forget_changes();
        *t.get_mut(&2).unwrap() += 1;
        t.mark_all_changed();
        assert_eq!(
            t.take_changes(),
            vec![Change::Put(1, 10), Change::Put(2, 21), Change::Put(3, 30)]
        );
        assert!(t.take_changes().is_empty());
    }

    #[test]
    fn a_hash_table_tracks_changes_like_a_table_and_reports_them_in_key_order() {
        let mut t: HashTable<(u64, String), u32> = HashTable::new(true);
        t.insert((120, "B".into()), 1);
        t.insert((60, "A".into()), 1);
        t.forget_changes();
        *t.get_mut(&(60, "A".into())).unwrap() += 1;
        let (v, new) = t.get_or_insert((120, "B".into()), || 0);
        *v += 5;
        assert!(!new);
        assert!(t.get_or_insert((30, "C".into()), || 7).1);
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
    fn a_forgotten_key_is_reported_neither_changed_nor_removed() {
        let mut t: HashTable<u64, u32> = HashTable::new(true);
        t.insert(1, 1);
        t.insert(2, 2);
        t.forget_changes();
        *t.get_mut(&1).unwrap() += 1;
        assert_eq!(t.forget(&1), Some(2));
        t.remove(&2);
        let mut changes = Vec::new();
        t.drain_changes(|k, v| changes.push((*k, v.copied())));
        assert_eq!(changes, vec![(2, None)]);
        assert!(t.is_empty());
    }

    #[test]
    fn keys_forgotten_between_drains_are_not_held_until_the_next() {
        let mut t: HashTable<u64, u64> = HashTable::new(true);
        let mut longest = 0;
        // 100,000 keys come and go between two drains, at most 100 present at a time.
        for k in 0..100_000u64 {
            t.insert(k, k);
            if k >= 100 {
                t.forget(&(k - 100));
            }
            *t.get_mut(&k).unwrap() += 1;
            longest = longest.max(t.changed.as_ref().map_or(0, |c| c.0.len()));
        }
        assert!(longest <= 8192, "listed {longest} keys");
        let mut changes = Vec::new();
        t.drain_changes(|k, v| changes.push((*k, v.copied())));
        let live: Vec<_> = (99_900..100_000).map(|k| (k, Some(k + 1))).collect();
        assert_eq!(changes, live, "each present key once, in key order");
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
