//! [`Store`]: operator state and checkpoint records in RocksDB.
//!
//! Three column families, however many tables: `tables` holds every (operator, table), each
//! under its own key prefix (`u16 length ‖ "operator/table"`), `parts` what sources and sinks
//! recorded at each checkpoint, and `meta` the base version and the table names. (RocksDB
//! rewrites and re-reads its options file for every column family it creates, so one column
//! family per table made opening a graph of N stateful nodes O(N²): minutes at 1,000 windows.)
//! Inside a table's prefix:
//!
//! - `0x00 ‖ key` is the **base**: the table as of the base checkpoint (the oldest one kept);
//! - `0x01 ‖ label ‖ writer` are **deltas**: the changes one snapshot of one writer (an operator
//!   instance) made, as one value, `label` being the first checkpoint time the snapshot covers
//!   (big-endian, so deltas sort by checkpoint). One RocksDB entry per snapshot keeps the
//!   per-checkpoint cost flat however many keys changed.
//!
//! Reading the table as of checkpoint `T` is base ⊕ every delta with `label <= T`, in order
//! (within one label: range deletes first, then puts and deletes).
//! When a checkpoint leaves the retention window, [`Store::fold_through`] merges its deltas into
//! the base in one atomic batch; deltas past the checkpoint a restart resumes from are dropped
//! by [`Store::discard_after`]. Snapshot writes are not synced one by one: [`Store::sync`] syncs
//! the write-ahead log once, before a checkpoint's commit marker is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};

use crate::delta::{split_u64, DeltaOp};
use crate::StateError;

/// Column family with the store's own records.
pub const META_CF: &str = "meta";
/// Column family with per-checkpoint records of sources and sinks.
pub const PARTS_CF: &str = "parts";
/// Column family holding every table, each under its own key prefix.
pub const TABLES_CF: &str = "tables";
const RESERVED: [&str; 4] = ["default", META_CF, PARTS_CF, TABLES_CF];
/// Prefix of the `meta` keys naming the tables.
const TABLE_NAME_KEY: &[u8] = b"table/";

const BASE: u8 = 0;
const DELTA: u8 = 1;
const OP_RANGE: u8 = 0;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const BASE_VERSION_KEY: &[u8] = b"base_version";

/// Operator state and checkpoint records in one RocksDB database.
pub struct Store {
    db: DB,
    path: PathBuf,
    /// The tables (`operator/table`), as opened.
    tables: Vec<String>,
}

/// One table: the shared column family and the table's key prefix.
struct Tbl<'a> {
    cf: &'a ColumnFamily,
    prefix: Vec<u8>,
}

impl Tbl<'_> {
    /// The stored key of `inner` (a base or delta key inside the table).
    fn key(&self, inner: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + inner.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(inner);
        k
    }
}

/// `u16 length ‖ name`: no table's prefix is a prefix of another's.
fn table_prefix(name: &str) -> Vec<u8> {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut p = len.to_be_bytes().to_vec();
    p.extend_from_slice(name.as_bytes());
    p
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Entry count and bytes of one table as of a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Entries.
    pub entries: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

fn db_err(path: &Path, e: rocksdb::Error) -> StateError {
    let text = e.to_string();
    if text.contains("lock") {
        StateError::Db(format!(
            "{}: in use by another tickflow process ({text})",
            path.display()
        ))
    } else {
        StateError::Db(format!("{}: {text}", path.display()))
    }
}

/// Refuses a data directory of the layout with a column family per table.
fn check_layout(path: &Path, existing: &[String]) -> Result<(), StateError> {
    match existing.iter().find(|n| !RESERVED.contains(&n.as_str())) {
        Some(old) => Err(StateError::Db(format!(
            "{}: written by an older tickflow (a column family per table, such as `{old}`); \
             start over with --fresh",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// Exclusive end of the deltas with `label <= as_of`.
fn deltas_end(as_of: u64) -> Vec<u8> {
    match as_of.checked_add(1) {
        Some(next) => delta_prefix(next),
        None => vec![DELTA + 1],
    }
}

fn delta_prefix(label: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(DELTA);
    k.extend_from_slice(&label.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the store at `path` with `tables` (`operator/table`); tables already
    /// recorded there are kept too.
    pub fn open(path: &Path, tables: &[String]) -> Result<Store, StateError> {
        std::fs::create_dir_all(path).map_err(|e| StateError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_total_wal_size(64 << 20);
        // Snapshots are small and frequent: modest memtables keep memory flat.
        opts.set_write_buffer_size(8 << 20);
        opts.set_db_write_buffer_size(32 << 20);
        // Snapshots only append; reads happen at restore and fold. A vector memtable makes an
        // insert an append (sorted once, when flushed or read) instead of a skiplist search.
        opts.set_allow_concurrent_memtable_write(false);
        let names: BTreeSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
        if let Ok(existing) = DB::list_cf(&Options::default(), path) {
            check_layout(path, &existing)?;
        }
        let cfs = names.iter().map(|n| {
            let mut cf = Options::default();
            // Every table shares `tables`: it gets the memtable budget the per-table column
            // families had between them.
            cf.set_write_buffer_size(if n == TABLES_CF { 32 << 20 } else { 8 << 20 });
            cf.set_memtable_factory(rocksdb::MemtableFactory::Vector);
            // Values are small and short-lived: compression would cost more than it saves.
            cf.set_compression_type(rocksdb::DBCompressionType::None);
            ColumnFamilyDescriptor::new(n, cf)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| db_err(path, e))?;
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            tables: Vec::new(),
        };
        let mut known: BTreeSet<String> = store.recorded_tables()?.into_iter().collect();
        let new: Vec<&String> = tables.iter().filter(|t| !known.contains(*t)).collect();
        if !new.is_empty() {
            let meta = store.cf(META_CF)?;
            let mut batch = WriteBatch::default();
            for t in &new {
                batch.put_cf(meta, [TABLE_NAME_KEY, t.as_bytes()].concat(), []);
            }
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            store.db.write_opt(batch, &wo).map_err(|e| store.err(e))?;
        }
        known.extend(tables.iter().cloned());
        store.tables = known.into_iter().collect();
        Ok(store)
    }

    /// The table names recorded in `meta`, sorted.
    fn recorded_tables(&self) -> Result<Vec<String>, StateError> {
        let mut out = Vec::new();
        let mut end = TABLE_NAME_KEY.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        self.scan(self.cf(META_CF)?, TABLE_NAME_KEY, &end, |k, _| {
            let name = std::str::from_utf8(&k[TABLE_NAME_KEY.len()..])
                .map_err(|_| StateError::Corrupt("a table name is not UTF-8".into()))?;
            out.push(name.to_string());
            Ok(())
        })?;
        Ok(out)
    }

    /// Opens an existing store for reading while a run may hold it open for writing.
    pub fn open_read_only(path: &Path) -> Result<Store, StateError> {
        let names = DB::list_cf(&Options::default(), path).map_err(|e| db_err(path, e))?;
        check_layout(path, &names)?;
        let db = DB::open_cf_for_read_only(&Options::default(), path, &names, false)
            .map_err(|e| db_err(path, e))?;
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            tables: Vec::new(),
        };
        store.tables = store.recorded_tables()?;
        Ok(store)
    }

    /// The tables (`operator/table`) this store holds.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    fn err(&self, e: rocksdb::Error) -> StateError {
        db_err(&self.path, e)
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StateError> {
        self.db.cf_handle(name).ok_or_else(|| {
            StateError::Db(format!(
                "{}: no column family `{name}`",
                self.path.display()
            ))
        })
    }

    fn table(&self, name: &str) -> Result<Tbl<'_>, StateError> {
        if !self.tables.iter().any(|t| t == name) {
            return Err(StateError::Db(format!(
                "{}: no table `{name}`",
                self.path.display()
            )));
        }
        Ok(Tbl {
            cf: self.cf(TABLES_CF)?,
            prefix: table_prefix(name),
        })
    }

    /// Every `(key, value)` of table `t` with `from <= key < to` (keys inside the table), in
    /// key order.
    fn scan_table(
        &self,
        t: &Tbl<'_>,
        from: &[u8],
        to: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let n = t.prefix.len();
        self.scan(t.cf, &t.key(from), &t.key(to), |k, v| f(&k[n..], v))
    }

    /// Every `(key, value)` of `cf` with `from <= key < to`, in key order.
    fn scan(
        &self,
        cf: &ColumnFamily,
        from: &[u8],
        to: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(to.to_vec());
        for item in self
            .db
            .iterator_cf_opt(cf, ro, IteratorMode::From(from, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Writes one snapshot's changes for checkpoint `label`, made by `writer` (unique among
    /// the snapshots of one checkpoint), in one atomic batch (not synced; see [`Store::sync`]).
    /// Returns the bytes written.
    pub fn write_delta(
        &self,
        label: u64,
        writer: &str,
        ops: &[(String, DeltaOp)],
    ) -> Result<u64, StateError> {
        let mut delta = Delta::default();
        for (table, op) in ops {
            delta.push(table, op);
        }
        self.write_encoded(label, writer, &delta)
    }

    /// Writes `delta` (encoded as it was built) as `writer`'s changes for checkpoint `label`.
    /// Returns the bytes written.
    pub fn write_encoded(
        &self,
        label: u64,
        writer: &str,
        delta: &Delta,
    ) -> Result<u64, StateError> {
        let mut batch = WriteBatch::default();
        let mut bytes = 0u64;
        let mut key = delta_prefix(label);
        key.extend_from_slice(writer.as_bytes());
        for (table, blob) in &delta.blobs {
            bytes += (key.len() + blob.len()) as u64;
            let t = self.table(table)?;
            batch.put_cf(t.cf, t.key(&key), blob);
        }
        self.db.write(batch).map_err(|e| self.err(e))?;
        Ok(bytes)
    }

    /// Every delta of `cf` with `from <= label < to`, label by label: `f(label, ops)` with the
    /// range deletes of all writers first.
    fn deltas(
        &self,
        t: &Tbl<'_>,
        from: &[u8],
        to: &[u8],
        mut f: impl FnMut(u64, Vec<DeltaOp>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut current: Option<(u64, Vec<DeltaOp>, Vec<DeltaOp>)> = None;
        self.scan_table(t, from, to, |k, v| {
            let (label, _writer) = split_u64(&k[1..])?;
            if current.as_ref().is_some_and(|c| c.0 != label) {
                if let Some((l, mut ranges, keys)) = current.take() {
                    ranges.extend(keys);
                    f(l, ranges)?;
                }
            }
            let entry = current.get_or_insert_with(|| (label, Vec::new(), Vec::new()));
            for op in decode_ops(v)? {
                match op {
                    DeltaOp::DeleteBelow { .. } => entry.1.push(op),
                    _ => entry.2.push(op),
                }
            }
            Ok(())
        })?;
        if let Some((l, mut ranges, keys)) = current {
            ranges.extend(keys);
            f(l, ranges)?;
        }
        Ok(())
    }

    /// Replaces the base of `table` with `entries`, synced: for tables written once, when a
    /// data directory is created.
    pub fn put_base(&self, table: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        let t = self.table(table)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(t.cf, t.key(&[BASE]), t.key(&[DELTA]));
        for (k, v) in entries {
            let mut key = Vec::with_capacity(k.len() + 1);
            key.push(BASE);
            key.extend_from_slice(k);
            batch.put_cf(t.cf, t.key(&key), v);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.err(e))
    }

    /// Records what part `part` (a source or sink) made durable for checkpoint `label`.
    pub fn put_part(&self, label: u64, part: &str, value: &[u8]) -> Result<(), StateError> {
        let mut key = label.to_be_bytes().to_vec();
        key.extend_from_slice(part.as_bytes());
        self.db
            .put_cf(self.cf(PARTS_CF)?, key, value)
            .map_err(|e| self.err(e))
    }

    /// Syncs the write-ahead log: every write made so far is durable when this returns.
    pub fn sync(&self) -> Result<(), StateError> {
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }

    /// The checkpoint the base holds (0 before any fold).
    pub fn base_version(&self) -> Result<u64, StateError> {
        match self
            .db
            .get_cf(self.cf(META_CF)?, BASE_VERSION_KEY)
            .map_err(|e| self.err(e))?
        {
            None => Ok(0),
            Some(v) => Ok(split_u64(&v)?.0),
        }
    }

    /// Calls `f` with every entry of `table` as of checkpoint `as_of` (base ⊕ deltas up to it),
    /// in key order.
    pub fn load(
        &self,
        table: &str,
        as_of: u64,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let t = self.table(table)?;
        let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        self.scan_table(&t, &[BASE], &[DELTA], |k, v| {
            map.insert(k[1..].to_vec(), v.to_vec());
            Ok(())
        })?;
        self.deltas(&t, &[DELTA], &deltas_end(as_of), |_, ops| {
            ops.into_iter().for_each(|op| op.apply(&mut map));
            Ok(())
        })?;
        for (k, v) in &map {
            f(k, v)?;
        }
        Ok(())
    }

    /// Entries and bytes of `table` as of checkpoint `as_of`.
    pub fn stats(&self, table: &str, as_of: u64) -> Result<TableStats, StateError> {
        let mut s = TableStats::default();
        self.load(table, as_of, |k, v| {
            s.entries += 1;
            s.bytes += (k.len() + v.len()) as u64;
            Ok(())
        })?;
        Ok(s)
    }

    /// Merges every delta with `label <= version` into the base and makes `version` the base
    /// version, in one atomic batch (durable with the next [`Store::sync`]; losing it in a
    /// crash loses nothing, the deltas stay); part records up to `version` are dropped with
    /// them.
    pub fn fold_through(&self, version: u64) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        let end = deltas_end(version);
        let base_key = |key: &[u8]| {
            let mut b = Vec::with_capacity(key.len() + 1);
            b.push(BASE);
            b.extend_from_slice(key);
            b
        };
        for table in self.tables() {
            let t = self.table(table)?;
            // Merge the deltas first, so a key updated at many checkpoints is written once.
            let mut cut: Option<Vec<u8>> = None;
            let mut overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            self.deltas(&t, &[DELTA], &end, |_, ops| {
                for op in ops {
                    match op {
                        DeltaOp::DeleteBelow { key } => {
                            overlay = overlay.split_off(&key);
                            if cut.as_deref().is_none_or(|c| c < key.as_slice()) {
                                cut = Some(key);
                            }
                        }
                        DeltaOp::Put { key, value } => {
                            overlay.insert(key, Some(value));
                        }
                        DeltaOp::Delete { key } => {
                            overlay.insert(key, None);
                        }
                    }
                }
                Ok(())
            })?;
            if let Some(cut) = cut {
                batch.delete_range_cf(t.cf, t.key(&[BASE]), t.key(&base_key(&cut)));
            }
            for (key, value) in overlay {
                match value {
                    Some(v) => batch.put_cf(t.cf, t.key(&base_key(&key)), v),
                    None => batch.delete_cf(t.cf, t.key(&base_key(&key))),
                }
            }
            batch.delete_range_cf(t.cf, t.key(&[DELTA]), t.key(&end));
        }
        batch.delete_range_cf(
            self.cf(PARTS_CF)?,
            vec![],
            version.saturating_add(1).to_be_bytes().to_vec(),
        );
        batch.put_cf(self.cf(META_CF)?, BASE_VERSION_KEY, version.to_be_bytes());
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Drops every delta and part record after checkpoint `version` (left by a checkpoint that
    /// never committed). Returns the checkpoint labels dropped.
    pub fn discard_after(&self, version: u64) -> Result<Vec<u64>, StateError> {
        let mut labels = BTreeSet::new();
        let Some(from_label) = version.checked_add(1) else {
            return Ok(Vec::new());
        };
        let from = delta_prefix(from_label);
        let mut batch = WriteBatch::default();
        for table in self.tables() {
            let t = self.table(table)?;
            self.scan_table(&t, &from, &[DELTA + 1], |k, _| {
                labels.insert(split_u64(&k[1..])?.0);
                Ok(())
            })?;
            batch.delete_range_cf(t.cf, t.key(&from), t.key(&[DELTA + 1]));
        }
        let parts = self.cf(PARTS_CF)?;
        self.scan(parts, &from_label.to_be_bytes(), &[0xff; 9], |k, _| {
            labels.insert(split_u64(k)?.0);
            Ok(())
        })?;
        batch.delete_range_cf(parts, from_label.to_be_bytes().to_vec(), vec![0xff; 9]);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.err(e))?;
        Ok(labels.into_iter().collect())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends one op: `op ‖ len ‖ key ‖ (len ‖ value)`.
/// One writer's changes for a checkpoint, encoded per table as they are added, so a snapshot
/// is held as bytes rather than also as a second list of operations with a table name each
/// (see [`Store::write_encoded`]).
#[derive(Debug, Default)]
pub struct Delta {
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Delta {
    /// Adds `op` on `table`.
    pub fn push(&mut self, table: &str, op: &DeltaOp) {
        let blob = match self.blobs.get_mut(table) {
            Some(b) => b,
            None => self.blobs.entry(table.to_string()).or_default(),
        };
        encode_op(blob, op);
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

fn encode_op(out: &mut Vec<u8>, op: &DeltaOp) {
    match op {
        DeltaOp::DeleteBelow { key } => {
            out.push(OP_RANGE);
            put_bytes(out, key);
        }
        DeltaOp::Put { key, value } => {
            out.push(OP_PUT);
            put_bytes(out, key);
            put_bytes(out, value);
        }
        DeltaOp::Delete { key } => {
            out.push(OP_DELETE);
            put_bytes(out, key);
        }
    }
}

fn decode_ops(mut bytes: &[u8]) -> Result<Vec<DeltaOp>, StateError> {
    fn take<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], StateError> {
        let corrupt = || StateError::Corrupt("truncated delta".into());
        let len: [u8; 4] = bytes
            .get(..4)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?;
        let len = u32::from_le_bytes(len) as usize;
        let body = bytes.get(4..4 + len).ok_or_else(corrupt)?;
        *bytes = &bytes[4 + len..];
        Ok(body)
    }
    let mut ops = Vec::new();
    while let Some((&op, rest)) = bytes.split_first() {
        bytes = rest;
        let key = take(&mut bytes)?.to_vec();
        ops.push(match op {
            OP_RANGE => DeltaOp::DeleteBelow { key },
            OP_PUT => DeltaOp::Put {
                key,
                value: take(&mut bytes)?.to_vec(),
            },
            OP_DELETE => DeltaOp::Delete { key },
            other => return Err(StateError::Corrupt(format!("unknown delta op {other}"))),
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_tables_share_three_column_families_and_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..600).map(|i| format!("w{i}/windows")).collect();
        let store = Store::open(dir.path(), &names).unwrap();
        // `w1/windows` must not see `w10/windows`, nor the reverse.
        let ops = |t: &str, k: &[u8]| {
            vec![(
                t.to_string(),
                DeltaOp::Put {
                    key: k.to_vec(),
                    value: t.as_bytes().to_vec(),
                },
            )]
        };
        store.write_delta(5, "0", &ops("w1/windows", b"a")).unwrap();
        store
            .write_delta(5, "0", &ops("w10/windows", b"b"))
            .unwrap();
        let read = |t: &str| {
            let mut out = Vec::new();
            store
                .load(t, 5, |k, v| {
                    out.push((k.to_vec(), v.to_vec()));
                    Ok(())
                })
                .unwrap();
            out
        };
        assert_eq!(
            read("w1/windows"),
            vec![(b"a".to_vec(), b"w1/windows".to_vec())]
        );
        assert_eq!(
            read("w10/windows"),
            vec![(b"b".to_vec(), b"w10/windows".to_vec())]
        );
        store.fold_through(5).unwrap();
        assert_eq!(read("w10/windows").len(), 1);
        drop(store);
        let cfs = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert_eq!(cfs.len(), 4, "{cfs:?}");
        let again = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(again.tables().len(), 600);
        assert!(again.load("w2/missing", 5, |_, _| Ok(())).is_err());
    }

    fn put(k: &[u8], v: &[u8]) -> (String, DeltaOp) {
        (
            "op/t".into(),
            DeltaOp::Put {
                key: k.to_vec(),
                value: v.to_vec(),
            },
        )
    }

    fn all(store: &Store, as_of: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        store
            .load("op/t", as_of, |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn deltas_fold_into_the_base_and_reads_see_each_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &["op/t".into()]).unwrap();
        store
            .write_delta(
                10,
                "w",
                &[put(b"a", b"1"), put(b"b", b"1"), put(b"c", b"1")],
            )
            .unwrap();
        store
            .write_delta(
                20,
                "w",
                &[
                    ("op/t".into(), DeltaOp::DeleteBelow { key: b"b".to_vec() }),
                    put(b"a", b"2"),
                    ("op/t".into(), DeltaOp::Delete { key: b"c".to_vec() }),
                ],
            )
            .unwrap();
        store.write_delta(30, "w", &[put(b"d", b"3")]).unwrap();
        let v = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        assert_eq!(all(&store, 10), vec![v("a", "1"), v("b", "1"), v("c", "1")]);
        // The range delete runs before the same snapshot's puts.
        assert_eq!(all(&store, 20), vec![v("a", "2"), v("b", "1")]);
        assert_eq!(all(&store, 30), vec![v("a", "2"), v("b", "1"), v("d", "3")]);
        store.fold_through(20).unwrap();
        assert_eq!(store.base_version().unwrap(), 20);
        assert_eq!(all(&store, 20), vec![v("a", "2"), v("b", "1")]);
        assert_eq!(all(&store, 30), vec![v("a", "2"), v("b", "1"), v("d", "3")]);
        assert_eq!(store.stats("op/t", 30).unwrap().entries, 3);
        assert_eq!(store.discard_after(20).unwrap(), vec![30]);
        assert_eq!(all(&store, u64::MAX), vec![v("a", "2"), v("b", "1")]);
        drop(store);
        // Reopened, read-only: the same.
        let ro = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.tables(), ["op/t".to_string()]);
        assert_eq!(all(&ro, 99), vec![v("a", "2"), v("b", "1")]);
    }

    #[test]
    fn part_records_are_dropped_after_the_resumed_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        store.put_part(10, "source/ticks", b"x").unwrap();
        store.put_part(20, "source/ticks", b"y").unwrap();
        assert_eq!(store.discard_after(10).unwrap(), vec![20]);
        store.sync().unwrap();
        assert!(
            Store::open(dir.path(), &[]).is_err(),
            "second writer is refused"
        );
    }
}
