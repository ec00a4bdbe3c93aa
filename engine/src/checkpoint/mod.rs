//! Consistent checkpoints: cadence, part reports, commit markers, the data directory.
//!
//! Timely times are event-time watermarks, so "the frontier has passed `T`" is a consistent cut.
//! Checkpoint times are the multiples of `checkpoint.interval`. Every **part** — a source, a sink,
//! or one worker's instance of a stateful operator — saves what it has as of each checkpoint time
//! it passes, at the exact point of its own processing where every record before `T` is done and
//! nothing at or after `T` has started:
//!
//! - a source writes its position (byte offset, line, newest event time) before it moves its
//!   watermark past `T`;
//! - a stateful operator writes the changes to its tables (one RocksDB `WriteBatch`) before it
//!   applies the first input at or after `T`;
//! - a sink flushes and fsyncs its file before it writes the first line at or after `T`, and
//!   records the file length.
//!
//! When the watermark jumps over several checkpoint times, one save covers them all: each
//! [`Report`] says it covers `label ..= through` (`label` being the first checkpoint time it
//! covers). The [`Coordinator`] commits checkpoint `T` once every expected part has reported a
//! range containing `T`: it syncs RocksDB's log, then writes the commit marker (a manifest file
//! with a CRC32C, written to a temporary name, fsync'd, renamed, directory fsync'd). It keeps the
//! newest `checkpoint.retain` markers and folds older state into the store's base.
//!
//! Data directory layout: `graph.json` (which graph made it), `state/` (RocksDB, see
//! [`tickflow_state::Store`]), `checkpoints/<id>.ckpt` (commit markers).

mod coordinator;
mod data_dir;
pub mod layout;
mod manifest;
pub mod restore;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::EngineError;

pub use coordinator::{CheckpointStats, Coordinator, Ctrl, Link};
pub use data_dir::DataDir;
pub use manifest::{
    decode_manifest, encode_manifest, list_markers, write_atomic, ManifestError, MarkerFile,
};

/// Default `checkpoint.interval`, in ms of event time.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Default `checkpoint.min_pause`: wall-clock ms between checkpoints at least.
pub const DEFAULT_MIN_PAUSE_MS: u64 = 1_000;
/// Default `checkpoint.retain`.
pub const DEFAULT_RETAIN: usize = 3;
/// State is folded into the base once the oldest kept checkpoint is this many intervals past it.
pub const FOLD_EVERY: u64 = 8;
/// Manifest format written by this build. 3: dedup keys are routed by `(venue, seq)` and
/// stored with their worker (`bucket ‖ checkpoint ‖ worker ‖ venue`); 2 stored them by venue.
pub const MANIFEST_FORMAT: u32 = 3;

/// `[checkpoint]` of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Event time between checkpoints.
    pub interval_ms: u64,
    /// Complete checkpoints kept.
    pub retain: usize,
    /// Least wall-clock time between two commit markers: when checkpoints complete faster
    /// (replaying a backlog), only the newest complete one gets a marker.
    pub min_pause_ms: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval_ms: DEFAULT_INTERVAL_MS,
            retain: DEFAULT_RETAIN,
            min_pause_ms: DEFAULT_MIN_PAUSE_MS,
        }
    }
}

/// Which checkpoint times a part has saved.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    interval: u64,
    done: u64,
}

impl Cadence {
    /// A cadence of `interval` ms whose checkpoints up to `done` are saved.
    pub fn new(interval: u64, done: u64) -> Self {
        Cadence {
            interval: interval.max(1),
            done,
        }
    }

    /// The newest checkpoint time at or before `t`.
    pub fn floor(&self, t: u64) -> u64 {
        t - t % self.interval
    }

    /// The checkpoint a part passes on reaching time `t` (all input before `t` done), as
    /// `(label, through)` (the save covers checkpoints `label..=through`), or `None`: the
    /// `armed` checkpoint once `t` passes it, and at the end of the input (`t == u64::MAX`)
    /// every checkpoint after the last one saved through the final one (nothing is processed
    /// after it, so its state holds for all of them).
    pub fn due(&self, t: u64, armed: u64) -> Option<(u64, u64)> {
        if t == u64::MAX {
            let last = self.floor(u64::MAX);
            return (last > self.done).then(|| {
                let label = (self.done / self.interval)
                    .saturating_add(1)
                    .saturating_mul(self.interval);
                (label, last)
            });
        }
        (armed > self.done && armed <= t).then_some((armed, armed))
    }

    /// Records that checkpoints up to `through` are saved.
    pub fn mark(&mut self, through: u64) {
        self.done = through;
    }
}

/// Which checkpoint is being taken. Checkpoint times are multiples of the interval on the
/// watermark, but not every multiple is taken: the coordinator arms one at a time, at most
/// every `min_pause` of wall-clock time, as the first multiple past every source's watermark.
/// Every part saves when it passes the armed time; a source records where it moves and reads
/// the armed time under the lock arming takes, so a checkpoint is never armed behind a source
/// (which would then pass it without saving). A backfill therefore checkpoints at a steady
/// wall-clock pace instead of at every interval of event time, and the final checkpoint of a
/// bounded run is always taken.
#[derive(Debug)]
pub struct Epochs {
    interval: u64,
    armed: std::sync::atomic::AtomicU64,
    sources: std::sync::Mutex<HashMap<PartId, u64>>,
}

impl Epochs {
    /// Nothing armed past `committed` (the checkpoint resumed from, or 0).
    pub fn new(interval: u64, committed: u64) -> Self {
        Epochs {
            interval: interval.max(1),
            armed: std::sync::atomic::AtomicU64::new(committed),
            sources: Default::default(),
        }
    }

    /// The armed checkpoint (at or below the newest committed one when none is pending).
    pub fn armed(&self) -> u64 {
        self.armed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A source part about to move its capability to `to`: records it and returns the armed
    /// checkpoint, under the lock [`Epochs::arm`] takes.
    pub fn source_moves(&self, part: &PartId, to: u64) -> u64 {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.insert(part.clone(), to);
        self.armed()
    }

    /// Arms the next checkpoint: the first multiple of the interval past every source's
    /// watermark and past `past` (the newest committed checkpoint; in a cluster, process 0
    /// also passes where the others said their sources are). `None` (nothing armed) once every
    /// source is finished.
    pub fn arm(&self, past: u64) -> Option<u64> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if !sources.is_empty() && sources.values().all(|t| *t == u64::MAX) {
            return None;
        }
        let ahead = furthest(&sources).max(past);
        let next = (ahead / self.interval)
            .checked_add(1)?
            .checked_mul(self.interval)?;
        if next >= final_id(self.interval) {
            return None;
        }
        self.armed.store(next, std::sync::atomic::Ordering::Release);
        Some(next)
    }

    /// Arms `at`, chosen by another process of a cluster, unless a source here has already
    /// moved past it (it would pass it without saving): then nothing is armed and the
    /// furthest position here is returned, for the next choice to be past it.
    pub fn arm_exact(&self, at: u64) -> Result<(), u64> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let furthest = furthest(&sources);
        if furthest >= at {
            return Err(furthest);
        }
        self.armed.store(at, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// The furthest position a source has moved to, finished sources aside (0 if none has).
fn furthest(sources: &HashMap<PartId, u64>) -> u64 {
    sources
        .values()
        .copied()
        .filter(|t| *t != u64::MAX)
        .max()
        .unwrap_or(0)
}

/// The id of the final checkpoint of a bounded run, written once every input is consumed.
pub fn final_id(interval_ms: u64) -> u64 {
    Cadence::new(interval_ms, 0).floor(u64::MAX)
}

/// One part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PartId {
    /// A source (read by one worker).
    Source(String),
    /// One worker's share of a source read by every worker (Kafka partitions).
    SourceWorker(String, usize),
    /// A sink (written by the last worker).
    Sink(String),
    /// One worker's instance of a stateful operator.
    Operator(String, usize),
}

impl std::fmt::Display for PartId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartId::Source(s) => write!(f, "source/{s}"),
            PartId::SourceWorker(s, w) => write!(f, "source/{s}@{w}"),
            PartId::Sink(s) => write!(f, "sink/{s}"),
            PartId::Operator(s, w) => write!(f, "operator/{s}@{w}"),
        }
    }
}

/// A source reader's or sink writer's own position, opaque to the checkpoint: what wrote it
/// (`file/1`, `kafka/1`: component and version) and its state, which only it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpaquePosition {
    /// The reader and the version of its state's shape.
    pub format: String,
    /// The state.
    pub state: serde_json::Value,
}

/// Where a source stands at a checkpoint: the source driver's part (watermark, newest event
/// time per partition) and its readers' opaque positions (one per worker that read a share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The watermark the source continues from (`u64::MAX` once the input is exhausted).
    pub watermark_ms: u64,
    /// Newest event time, ms, per partition, of the records before where it resumes (a file
    /// has one partition, 0).
    #[serde(default)]
    pub max_ts_ms: BTreeMap<i32, u64>,
    /// The readers' positions.
    #[serde(default)]
    pub readers: Vec<OpaquePosition>,
}

impl SourcePosition {
    /// The position of a worker with nothing (left) to read.
    pub fn finished() -> Self {
        SourcePosition {
            watermark_ms: u64::MAX,
            max_ts_ms: BTreeMap::new(),
            readers: Vec::new(),
        }
    }

    /// Folds another worker's position of the same source into this one: the least watermark,
    /// every partition's event time, every reader's position.
    fn merge(&mut self, other: &SourcePosition) {
        self.watermark_ms = self.watermark_ms.min(other.watermark_ms);
        self.max_ts_ms.extend(&other.max_ts_ms);
        self.readers.extend(other.readers.iter().cloned());
    }
}

/// What a sink has made durable at a checkpoint: the sink driver's part (lines written) and
/// the writer's opaque position (a file's length, a Kafka topic's acknowledged offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkPosition {
    /// Lines written.
    pub lines: u64,
    /// The writer's position.
    pub writer: OpaquePosition,
}

impl OpaquePosition {
    /// A position of `format` with `state`.
    pub fn new(format: &str, state: serde_json::Value) -> Self {
        OpaquePosition {
            format: format.to_string(),
            state,
        }
    }

    /// The state, if this position has `format` (else an error naming both).
    pub fn state_of(&self, format: &str) -> Result<&serde_json::Value, EngineError> {
        if self.format == format {
            Ok(&self.state)
        } else {
            Err(EngineError::Checkpoint(format!(
                "the checkpoint holds a `{}` position; this component reads `{format}`",
                self.format
            )))
        }
    }
}

/// State of one stateful operator at a checkpoint, summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCheckpoint {
    /// Entries held in memory.
    pub entries: u64,
    /// Bytes the snapshots covering this checkpoint wrote.
    pub bytes_written: u64,
}

/// What a part saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartInfo {
    /// A source's position.
    Source(SourcePosition),
    /// A sink's durable output.
    Sink(SinkPosition),
    /// An operator instance's state.
    Operator(OperatorCheckpoint),
}

/// A part's message to the coordinator: saved, covering checkpoints `label ..= through`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Who.
    pub part: PartId,
    /// First checkpoint time covered.
    pub label: u64,
    /// Last checkpoint time covered.
    pub through: u64,
    /// What was saved.
    pub info: PartInfo,
    /// Time spent saving, µs.
    pub write_us: u64,
}

/// Which graph a data directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphIdentity {
    /// `[graph].name`.
    pub name: String,
    /// `[graph].version`.
    pub version: i64,
    /// SHA-256 of the graph definition without `[checkpoint]` (comments and layout ignored).
    pub fingerprint: String,
    /// [`Plan::state_fingerprint`]: another version with the same one can continue from
    /// this graph's checkpoints.
    #[serde(default)]
    pub state: String,
    /// Each stateful part's identity ([`crate::state_plan`]): another version of the graph
    /// continues the parts whose identity it shares, if it keeps every source.
    #[serde(default)]
    pub parts: BTreeMap<String, crate::state_plan::StatePart>,
}

impl GraphIdentity {
    /// The identity of `plan`.
    pub fn of(plan: &Plan) -> Self {
        GraphIdentity {
            name: plan.name.clone(),
            version: plan.version,
            fingerprint: plan.fingerprint.clone(),
            state: plan.state_fingerprint(),
            parts: crate::state_plan::parts_of(plan),
        }
    }

    /// Whether checkpoints made by `other` can be restored by this graph: the same graph,
    /// another version of it whose state has the same shape, or one that keeps every source
    /// (the parts it does not keep start empty; see [`crate::state_plan`]).
    pub fn can_restore(&self, other: &GraphIdentity) -> bool {
        // A canary's checkpoint, continued by its new version alone: that version's lane.
        if let Some(lane) = crate::canary::lane_of(self, other) {
            return self.state_plan(&lane).is_some_and(|p| p.continues);
        }
        self.same_graph(other)
            || (!self.state.is_empty() && self.state == other.state)
            || (self.name == other.name && self.state_plan(other).is_some_and(|p| p.continues))
    }

    /// What continuing from `other`'s checkpoints does with each part's state, when both
    /// identities list their parts.
    pub fn state_plan(&self, other: &GraphIdentity) -> Option<crate::state_plan::StatePlan> {
        (!self.parts.is_empty() && !other.parts.is_empty())
            .then(|| crate::state_plan::StatePlan::between(&other.parts, &self.parts))
    }

    /// The same graph definition (`[checkpoint]` may differ).
    pub fn same_graph(&self, other: &GraphIdentity) -> bool {
        (&self.name, self.version, &self.fingerprint)
            == (&other.name, other.version, &other.fingerprint)
    }
}

/// A commit marker: everything a restart needs besides operator state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// The checkpoint time, ms of event time (see [`final_id`]).
    pub id: u64,
    /// Whether this is the final checkpoint of a run that consumed all its input.
    pub complete: bool,
    /// The graph.
    pub graph: GraphIdentity,
    /// Wall-clock time the marker was written (RFC 3339).
    pub created_at: String,
    /// Workers of the run that wrote it (per process, in a cluster).
    pub workers: usize,
    /// Processes of the run that wrote it (1 but in a cluster, where each process writes
    /// its own marker holding its own parts).
    #[serde(default = "one")]
    pub processes: usize,
    /// Source positions by source name.
    pub sources: BTreeMap<String, SourcePosition>,
    /// Sink positions by sink name.
    pub sinks: BTreeMap<String, SinkPosition>,
    /// State by operator name.
    pub operators: BTreeMap<String, OperatorCheckpoint>,
    /// From the first part's save to the marker, ms.
    pub align_ms: f64,
    /// Longest single part save, ms.
    pub write_ms: f64,
}

fn one() -> usize {
    1
}

impl Manifest {
    /// Folds the marker another process of a cluster wrote for the same checkpoint into this
    /// one: what one coordinator would have written for the whole cluster.
    pub fn merge(&mut self, other: &Manifest) {
        for (name, p) in &other.sources {
            match self.sources.get_mut(name) {
                Some(merged) => merged.merge(p),
                None => {
                    self.sources.insert(name.clone(), p.clone());
                }
            }
        }
        self.sinks
            .extend(other.sinks.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (name, o) in &other.operators {
            let e = self.operators.entry(name.clone()).or_default();
            e.entries += o.entries;
            e.bytes_written += o.bytes_written;
        }
        self.align_ms = self.align_ms.max(other.align_ms);
        self.write_ms = self.write_ms.max(other.write_ms);
    }

    /// The checkpoint time as RFC 3339, or `final`.
    pub fn time_label(&self) -> String {
        if self.complete {
            "final".to_string()
        } else {
            final_label(self.id)
        }
    }
}

/// A checkpoint id as RFC 3339 event time (ids past year 9999 are final checkpoints).
pub fn final_label(id: u64) -> String {
    if id > 253_402_300_799_999 {
        "final".to_string()
    } else {
        tickflow_operators::record::format_ts_ms(id)
    }
}

/// Where table `table` of node `node` is stored (`node/table`).
pub fn table_key(node: &str, table: &str) -> String {
    format!("{node}/{table}")
}

/// The state tables of a plan: `(operator name, CF name, table name)`. Enrich's reference table
/// is written once per data directory; the others at every checkpoint.
pub fn state_tables(plan: &Plan) -> Vec<(String, String, &'static str)> {
    let sinks = plan
        .sinks
        .iter()
        .map(|s| (&s.name, s.component.state_tables()));
    let operators = plan
        .operators
        .iter()
        .map(|o| (&o.name, o.component.state_tables()));
    sinks
        .chain(operators)
        .flat_map(|(name, tables)| {
            tables
                .iter()
                .map(move |t| (name.clone(), table_key(name, t.name), t.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_positions_merge_into_one_source_position() {
        let pos = |p: i32, offset: i64, wm: u64| SourcePosition {
            watermark_ms: wm,
            max_ts_ms: [(p, wm + 1000)].into(),
            readers: vec![OpaquePosition {
                format: "kafka/1".into(),
                state: serde_json::json!({ "offsets": { p.to_string(): offset } }),
            }],
        };
        let mut merged = pos(0, 100, 5_000);
        merged.merge(&pos(1, 70, 4_000));
        assert_eq!(merged.watermark_ms, 4_000, "the least watermark");
        assert_eq!(merged.max_ts_ms, [(0, 6_000), (1, 5_000)].into());
        assert_eq!(
            merged.readers.len(),
            2,
            "each worker's reader position, opaque"
        );
        assert_eq!(merged.readers[1].state["offsets"]["1"], 70);
    }

    #[test]
    fn a_manifest_of_another_format_is_named_as_such_even_if_its_shape_differs() {
        // Format 1 held a source's `offset` and `line` where format 2 has `readers`.
        let json = r#"{"format":1,"id":5,"sources":{"ticks":{"offset":3,"line":1,"max_ts_ms":1}}}"#;
        let bytes = format!("{json}\ncrc32c {:08x}\n", crc32c::crc32c(json.as_bytes()));
        match decode_manifest(bytes.as_bytes()) {
            Err(ManifestError::Format(1)) => {}
            other => panic!("expected the format to be named, got {other:?}"),
        }
    }

    #[test]
    fn parts_save_at_the_armed_checkpoint_and_at_the_end() {
        let mut c = Cadence::new(10, 0);
        assert_eq!(c.due(47, 0), None, "nothing armed");
        assert_eq!(c.due(39, 40), None);
        assert_eq!(c.due(47, 40), Some((40, 40)));
        c.mark(40);
        assert_eq!(c.due(90, 40), None, "saved already");
        assert_eq!(c.due(u64::MAX, 40), Some((50, final_id(10))));
    }

    #[test]
    fn a_checkpoint_chosen_elsewhere_is_armed_only_if_no_source_here_passed_it() {
        let e = Epochs::new(10, 0);
        let a = PartId::SourceWorker("a".into(), 1);
        assert_eq!(e.source_moves(&a, 47), 0);
        assert_eq!(e.arm_exact(40), Err(47), "passed already: said, not armed");
        assert_eq!(e.armed(), 0);
        assert_eq!(e.arm_exact(50), Ok(()));
        assert_eq!(e.armed(), 50);
        // Process 0 chooses past what the others said and what it sees.
        assert_eq!(e.arm(63), Some(70));
        e.source_moves(&a, u64::MAX);
        assert_eq!(e.arm(70), None, "every source here is finished");
    }

    #[test]
    fn checkpoints_are_armed_past_every_source() {
        let e = Epochs::new(10, 20);
        assert_eq!(e.arm(20), Some(30), "past the committed one");
        let (a, b) = (PartId::Source("a".into()), PartId::Source("b".into()));
        assert_eq!(e.source_moves(&a, 47), 30);
        e.source_moves(&b, 12);
        assert_eq!(e.arm(30), Some(50), "past the furthest source");
        e.source_moves(&a, u64::MAX);
        assert_eq!(e.arm(50), Some(60), "finished sources do not count");
        e.source_moves(&b, u64::MAX);
        assert_eq!(e.arm(50), None, "every source finished");
    }

    #[test]
    fn manifest_round_trip_and_damage_is_detected() {
        let m = Manifest {
            processes: 1,
            format: MANIFEST_FORMAT,
            id: 20_000,
            complete: false,
            graph: GraphIdentity {
                name: "g".into(),
                version: 1,
                fingerprint: "ab".into(),
                state: "cd".into(),
                parts: BTreeMap::new(),
            },
            created_at: "2026-01-01T00:00:00.000Z".into(),
            workers: 2,
            sources: [(
                "ticks".to_string(),
                SourcePosition {
                    watermark_ms: 4,
                    max_ts_ms: [(0, 5)].into(),
                    readers: vec![OpaquePosition {
                        format: "file/1".into(),
                        state: serde_json::json!({ "offset": 10, "line": 1 }),
                    }],
                },
            )]
            .into(),
            sinks: BTreeMap::new(),
            operators: BTreeMap::new(),
            align_ms: 1.0,
            write_ms: 0.5,
        };
        let bytes = encode_manifest(&m).unwrap();
        assert_eq!(decode_manifest(&bytes).unwrap(), m);
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_manifest(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for bit in [0, 8 * 20 + 3, 8 * (bytes.len() - 3)] {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_manifest(&flipped).is_err(), "bit {bit}");
        }
    }
}
