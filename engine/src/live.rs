//! [`Live`]: the handle a supervisor keeps on a running dataflow: pause, resume and stop it,
//! learn when it has started, and read its projection views.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tickflow_state::{codec, DeltaOp, StateError, Table, TableDescriptor};

const RUN: u8 = 0;
const PAUSE: u8 = 1;
const STOP: u8 = 2;

/// Called once the dataflow is built, with the checkpoint it resumed from.
pub type OnStarted = Box<dyn FnOnce(Option<u64>) + Send>;

/// Control of one running dataflow, shared by its workers and its owner.
pub struct Live {
    mode: AtomicU8,
    views: Mutex<BTreeMap<String, Arc<ProjectionView>>>,
    on_started: Mutex<Option<OnStarted>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("mode", &self.mode.load(Ordering::Relaxed))
            .finish()
    }
}

impl Live {
    /// A handle for a dataflow that starts paused or running.
    pub fn new(paused: bool, on_started: Option<OnStarted>) -> Arc<Live> {
        Arc::new(Live {
            mode: AtomicU8::new(if paused { PAUSE } else { RUN }),
            views: Mutex::new(BTreeMap::new()),
            on_started: Mutex::new(on_started),
        })
    }

    /// Sources stop reading (state, capabilities and outputs stay).
    pub fn pause(&self) {
        let _ = self
            .mode
            .compare_exchange(RUN, PAUSE, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Sources read again.
    pub fn resume(&self) {
        let _ = self
            .mode
            .compare_exchange(PAUSE, RUN, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Workers drop the dataflow at their next step. Nothing is flushed: what was not
    /// checkpointed is redone by whoever continues from the newest checkpoint.
    pub fn stop(&self) {
        self.mode.store(STOP, Ordering::SeqCst);
    }

    /// Whether sources should hold.
    pub fn is_paused(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == PAUSE
    }

    /// Whether the dataflow should be dropped.
    pub fn is_stopping(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == STOP
    }

    pub(crate) fn started(&self, restored_from: Option<u64>) {
        let f = self.on_started.lock().ok().and_then(|mut f| f.take());
        if let Some(f) = f {
            f(restored_from);
        }
    }

    pub(crate) fn add_view(&self, name: &str, view: Arc<ProjectionView>) {
        if let Ok(mut views) = self.views.lock() {
            views.insert(name.to_string(), view);
        }
    }

    /// The projection view of sink `name`, while its dataflow exists (and after it stopped).
    pub fn view(&self, name: &str) -> Option<Arc<ProjectionView>> {
        self.views.lock().ok().and_then(|v| v.get(name).cloned())
    }
}

/// The table a projection sink keeps.
pub const PROJECTION_TABLES: &[TableDescriptor] = &[TableDescriptor {
    name: "latest",
    description: "the latest record (JSON) per key",
}];

/// The column family holding projection sink `sink`'s entries.
pub fn projection_table(sink: &str) -> String {
    crate::checkpoint::table_key(sink, PROJECTION_TABLES[0].name)
}

/// The latest record per key of a `projection` sink: updated by the sink as records complete,
/// read by the API, saved to RocksDB at every checkpoint (changed keys only).
#[derive(Debug)]
pub struct ProjectionView {
    key_field: String,
    table: Mutex<Table<String, String>>,
}

impl ProjectionView {
    /// An empty view keyed by `key_field`.
    pub fn new(key_field: &str) -> Self {
        ProjectionView {
            key_field: key_field.to_string(),
            table: Mutex::new(Table::new(true)),
        }
    }

    /// Keeps `line` as the latest record of its key; `false` if it has no key.
    pub fn upsert(&self, line: &str) -> bool {
        let Some(key) = tickflow_connectors::record_key(line, &self.key_field) else {
            return false;
        };
        if let Ok(mut t) = self.table.lock() {
            t.insert(key, line.to_string());
        }
        true
    }

    /// The latest record of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.table
            .lock()
            .ok()
            .and_then(|t| t.get(&key.to_string()).cloned())
    }

    /// Keys held, in order (at most `limit`).
    pub fn keys(&self, limit: usize) -> (usize, Vec<String>) {
        self.table.lock().map_or((0, Vec::new()), |t| {
            (
                t.len(),
                t.iter().take(limit).map(|(k, _)| k.clone()).collect(),
            )
        })
    }

    /// The changes since the last snapshot, as store operations on table `latest`.
    pub fn snapshot(&self) -> Result<Vec<DeltaOp>, StateError> {
        let mut ops = Vec::new();
        let mut error = None;
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.drain_changes(|k, v| {
            let key = k.as_bytes().to_vec();
            match v.map(codec::encode) {
                Some(Ok(value)) => ops.push(DeltaOp::Put { key, value }),
                Some(Err(e)) => error = Some(e),
                None => ops.push(DeltaOp::Delete { key }),
            }
        });
        error.map_or(Ok(ops), Err)
    }

    /// Takes stored entries back (all of them: one worker keeps the view); with `rewrite`
    /// (restored from another cluster shape, into a store that holds none of them) the next
    /// snapshot writes them all.
    pub fn restore<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        rewrite: bool,
    ) -> Result<(), StateError> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in entries {
            let key = String::from_utf8(k.to_vec())
                .map_err(|_| StateError::Corrupt("projection key is not UTF-8".into()))?;
            let value: String = codec::decode(v)?;
            t.insert(key, value);
        }
        t.forget_changes();
        if rewrite {
            t.mark_all_changed();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_record_per_key_and_round_trips() {
        let v = ProjectionView::new("instrument_id");
        assert!(v.upsert(r#"{"instrument_id":"A","close":"1"}"#));
        assert!(v.upsert(r#"{"instrument_id":7,"close":"2"}"#));
        assert!(v.upsert(r#"{"instrument_id":"A","close":"3"}"#));
        assert!(!v.upsert(r#"{"close":"4"}"#));
        assert!(!v.upsert("not json"));
        assert_eq!(
            v.get("A").as_deref(),
            Some(r#"{"instrument_id":"A","close":"3"}"#)
        );
        assert_eq!(v.keys(10), (2, vec!["7".to_string(), "A".to_string()]));
        let mut stored = BTreeMap::new();
        for op in v.snapshot().unwrap() {
            op.apply(&mut stored);
        }
        assert!(v.snapshot().unwrap().is_empty());
        let back = ProjectionView::new("instrument_id");
        back.restore(
            stored.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            false,
        )
        .unwrap();
        assert_eq!(back.get("A"), v.get("A"));
        assert!(back.snapshot().unwrap().is_empty());
        let moved = ProjectionView::new("instrument_id");
        moved
            .restore(
                stored.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                true,
            )
            .unwrap();
        assert_eq!(moved.snapshot().unwrap().len(), 2, "rewritten whole");
    }
}
