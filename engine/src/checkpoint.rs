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

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tickflow_state::Store;

use crate::plan::Plan;
use crate::EngineError;

/// Default `checkpoint.interval`, in ms of event time.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Default `checkpoint.min_pause`, wall-clock ms.
pub const DEFAULT_MIN_PAUSE_MS: u64 = 50;
/// Default `checkpoint.retain`.
pub const DEFAULT_RETAIN: usize = 3;
/// State is folded into the base once the oldest kept checkpoint is this many intervals past it.
pub const FOLD_EVERY: u64 = 8;
/// Manifest format written by this build.
pub const MANIFEST_FORMAT: u32 = 2;

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

    /// The checkpoint times a part passes on reaching time `t` (all input before `t` done),
    /// as `(label, through)`, or `None` if none is new.
    pub fn due(&self, t: u64) -> Option<(u64, u64)> {
        let through = self.floor(t);
        (through > self.done).then(|| {
            let label = (self.done / self.interval)
                .saturating_add(1)
                .saturating_mul(self.interval);
            (label, through)
        })
    }

    /// Records that checkpoints up to `through` are saved.
    pub fn mark(&mut self, through: u64) {
        self.done = through;
    }
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
    /// A sink (written by worker 0).
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
    /// Newest event time seen, ms, per partition (a file has one, 0).
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
}

impl GraphIdentity {
    /// The identity of `plan`.
    pub fn of(plan: &Plan) -> Self {
        GraphIdentity {
            name: plan.name.clone(),
            version: plan.version,
            fingerprint: plan.fingerprint.clone(),
            state: plan.state_fingerprint(),
        }
    }

    /// Whether checkpoints made by `other` can be restored by this graph: the same graph, or
    /// another version of it whose state has the same shape.
    pub fn can_restore(&self, other: &GraphIdentity) -> bool {
        self.same_graph(other) || (!self.state.is_empty() && self.state == other.state)
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
    /// Workers of the run that wrote it.
    pub workers: usize,
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

impl Manifest {
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

const CRC_PREFIX: &str = "crc32c ";

fn manifest_name(id: u64) -> String {
    format!("{id:020}.ckpt")
}

/// Why a commit marker cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// Not text.
    #[error("not UTF-8")]
    NotUtf8,
    /// Cut short (a crash while it was written, or damage).
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// The checksum line is not a checksum.
    #[error("bad checksum line")]
    BadChecksumLine,
    /// The bytes changed after they were written.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// The JSON is not a manifest.
    #[error("bad manifest: {0}")]
    Json(#[source] serde_json::Error),
    /// Written by a build with another manifest format.
    #[error("unsupported manifest format {0} (this build reads format {MANIFEST_FORMAT})")]
    Format(u32),
}

/// Encodes a manifest: JSON, a newline, `crc32c <hex of the JSON bytes>`, a newline.
pub fn encode_manifest(m: &Manifest) -> Result<Vec<u8>, EngineError> {
    let json = serde_json::to_vec_pretty(m).map_err(|source| EngineError::Encode {
        what: format!("manifest {}", m.id),
        source,
    })?;
    let mut out = json.clone();
    out.extend_from_slice(format!("\n{CRC_PREFIX}{:08x}\n", crc32c::crc32c(&json)).as_bytes());
    Ok(out)
}

/// Decodes and checks a manifest; the error says what is wrong.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
    let body = text
        .strip_suffix('\n')
        .ok_or(ManifestError::Truncated("no final newline"))?;
    let (json, crc_line) = body
        .rsplit_once('\n')
        .ok_or(ManifestError::Truncated("no checksum line"))?;
    let crc_hex = crc_line
        .strip_prefix(CRC_PREFIX)
        .ok_or(ManifestError::Truncated("no checksum line"))?;
    let stored = u32::from_str_radix(crc_hex, 16).map_err(|_| ManifestError::BadChecksumLine)?;
    let computed = crc32c::crc32c(json.as_bytes());
    if computed != stored {
        return Err(ManifestError::Checksum { stored, computed });
    }
    let m: Manifest = serde_json::from_str(json).map_err(ManifestError::Json)?;
    if m.format != MANIFEST_FORMAT {
        return Err(ManifestError::Format(m.format));
    }
    Ok(m)
}

/// A data directory's identity file.
fn identity_bytes(identity: &GraphIdentity) -> Result<Vec<u8>, EngineError> {
    serde_json::to_vec_pretty(identity).map_err(|source| EngineError::Encode {
        what: "the graph identity".into(),
        source,
    })
}

fn io(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Checkpoint(format!("{}: {e}", path.display()))
}

fn sync_dir(path: &Path) -> Result<(), EngineError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(path, e))
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync of
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// One marker file found in a data directory.
#[derive(Debug)]
pub struct MarkerFile {
    /// The file.
    pub path: PathBuf,
    /// Its manifest, or why it cannot be used.
    pub manifest: Result<Manifest, ManifestError>,
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
                .map(move |t| (name.clone(), format!("{name}/{}", t.name), t.name))
        })
        .collect()
}

/// Marker files of the data directory at `dir`, newest first.
pub fn list_markers(dir: &Path) -> Result<Vec<MarkerFile>, EngineError> {
    let folder = dir.join("checkpoints");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(&folder, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io(&folder, e))?.path();
        if path.extension().is_some_and(|e| e == "ckpt") {
            let manifest = fs::read(&path)
                .map_err(ManifestError::Read)
                .and_then(|b| decode_manifest(&b));
            out.push(MarkerFile { path, manifest });
        }
    }
    out.sort_by(|a, b| b.path.cmp(&a.path));
    Ok(out)
}

/// An open data directory.
#[derive(Debug)]
pub struct DataDir {
    /// The folder.
    pub path: PathBuf,
    /// Operator state.
    pub store: Arc<Store>,
    /// The graph it belongs to.
    pub identity: GraphIdentity,
    /// The graph's checkpoint settings.
    pub config: CheckpointConfig,
}

impl DataDir {
    fn state_error(&self, source: tickflow_state::StateError) -> EngineError {
        EngineError::State {
            part: format!("{}/state", self.path.display()),
            source,
        }
    }

    /// Opens (or creates) `path` for `plan`. With `fresh`, earlier state and checkpoints are
    /// deleted first; otherwise a directory made by another graph is refused, unless `adopt`
    /// is set and it was made by a version of the graph whose state has the same shape (the
    /// control plane continuing a deployment with another version).
    pub fn open(
        path: &Path,
        plan: &Plan,
        fresh: bool,
        adopt: bool,
    ) -> Result<DataDir, EngineError> {
        let identity = GraphIdentity::of(plan);
        let id_file = path.join("graph.json");
        if fresh {
            for sub in ["state", "checkpoints"] {
                let p = path.join(sub);
                if p.exists() {
                    fs::remove_dir_all(&p).map_err(|e| io(&p, e))?;
                }
            }
            if id_file.exists() {
                fs::remove_file(&id_file).map_err(|e| io(&id_file, e))?;
            }
        }
        fs::create_dir_all(path.join("checkpoints")).map_err(|e| io(path, e))?;
        match fs::read(&id_file) {
            Ok(bytes) => {
                let found: GraphIdentity = serde_json::from_slice(&bytes).map_err(|e| {
                    EngineError::Checkpoint(format!("{}: unreadable: {e}", id_file.display()))
                })?;
                if !found.same_graph(&identity) && adopt && identity.can_restore(&found) {
                    tracing::info!(
                        "{}: continuing from the checkpoints of graph `{}` v{}",
                        path.display(),
                        found.name,
                        found.version
                    );
                    write_atomic(&id_file, &identity_bytes(&identity)?)?;
                } else if !found.same_graph(&identity) {
                    return Err(EngineError::Checkpoint(format!(
                        "data dir {} holds the state of graph `{}` v{} (fingerprint {}), not of \
                         this graph `{}` v{} (fingerprint {}); use another --data-dir, or \
                         --fresh to discard that state",
                        path.display(),
                        found.name,
                        found.version,
                        short(&found.fingerprint),
                        identity.name,
                        identity.version,
                        short(&identity.fingerprint),
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&id_file, &identity_bytes(&identity)?)?;
            }
            Err(e) => return Err(io(&id_file, e)),
        }
        let tables: Vec<String> = state_tables(plan).into_iter().map(|t| t.1).collect();
        let store =
            Store::open(&path.join("state"), &tables).map_err(|source| EngineError::State {
                part: format!("{}/state", path.display()),
                source,
            })?;
        Ok(DataDir {
            path: path.to_path_buf(),
            store: Arc::new(store),
            identity,
            config: plan.checkpoint,
        })
    }

    /// Picks the newest usable checkpoint, drops whatever was saved after it, and returns it.
    /// Markers that are corrupt, truncated or newer than the state allows are skipped with a
    /// warning naming them (and renamed to `*.skipped`).
    pub fn prepare_restore(&self) -> Result<Option<Manifest>, EngineError> {
        let base = self.store.base_version().map_err(|e| self.state_error(e))?;
        let mut chosen = None;
        for marker in list_markers(&self.path)? {
            let problem = match &marker.manifest {
                Err(why) => why.to_string(),
                Ok(m) if !self.identity.can_restore(&m.graph) => {
                    "made by another graph".to_string()
                }
                Ok(m) if m.id < base => {
                    format!("older than the state kept (base checkpoint {base})")
                }
                Ok(m) => {
                    chosen = Some(m.clone());
                    break;
                }
            };
            tracing::warn!("skipping checkpoint {}: {problem}", marker.path.display());
            eprintln!(
                "warning: skipping checkpoint {}: {problem}",
                marker.path.display()
            );
            let skipped = marker.path.with_extension("skipped");
            fs::rename(&marker.path, &skipped).map_err(|e| io(&marker.path, e))?;
        }
        if chosen.is_none() && base > 0 {
            return Err(EngineError::Checkpoint(format!(
                "data dir {} holds state as of checkpoint {base} but no usable commit marker \
                 for it; use --fresh to start over",
                self.path.display()
            )));
        }
        let after = chosen.as_ref().map_or(0, |m| m.id);
        let dropped = self
            .store
            .discard_after(after)
            .map_err(|e| self.state_error(e))?;
        if !dropped.is_empty() {
            let labels: Vec<String> = dropped.iter().map(|l| l.to_string()).collect();
            eprintln!(
                "warning: discarding incomplete checkpoint(s) {} (no commit marker)",
                labels.join(", ")
            );
        }
        Ok(chosen)
    }

    /// Writes the commit marker for `m` once the state log and the sink files are synced,
    /// then applies retention: keeps the newest `retain` markers and deletes older ones; once it
    /// is [`FOLD_EVERY`] intervals behind, state older than the oldest kept marker is folded into the base.
    pub fn commit(&self, m: &Manifest, sink_files: &[PathBuf]) -> Result<(), EngineError> {
        self.store.sync().map_err(|e| self.state_error(e))?;
        for path in sink_files {
            File::open(path)
                .and_then(|f| f.sync_data())
                .map_err(|e| io(path, e))?;
        }
        crate::fault::point("before-marker");
        let path = self.path.join("checkpoints").join(manifest_name(m.id));
        write_atomic(&path, &encode_manifest(m)?)?;
        crate::fault::point("after-marker");
        let markers = list_markers(&self.path)?;
        let valid: Vec<&MarkerFile> = markers.iter().filter(|f| f.manifest.is_ok()).collect();
        let keep = self.config.retain.max(1);
        if let Some(oldest_kept) = valid.get(keep - 1).and_then(|f| f.manifest.as_ref().ok()) {
            // Old markers go first, right after the new one is durable (a crash between the
            // two leaves one marker more than `retain`, never fewer), then the slow fold.
            for old in markers.iter().filter(|f| {
                f.manifest
                    .as_ref()
                    .map_or(true, |om| om.id < oldest_kept.id)
            }) {
                fs::remove_file(&old.path).map_err(|e| io(&old.path, e))?;
            }
            let base = self.store.base_version().map_err(|e| self.state_error(e))?;
            // Deltas of deleted markers stay readable (a restore reads base + every delta up to
            // its checkpoint), so folding can wait and batch many checkpoints into one pass.
            let batch = FOLD_EVERY.saturating_mul(self.config.interval_ms);
            if oldest_kept.id > base && oldest_kept.id - base >= batch {
                self.store
                    .fold_through(oldest_kept.id)
                    .map_err(|e| self.state_error(e))?;
            }
        }
        Ok(())
    }
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

/// What the coordinator did during a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStats {
    /// Checkpoints committed.
    pub committed: u64,
    /// The newest one.
    pub last_id: Option<u64>,
    /// Align time (first save to marker) of each, ms.
    pub align_ms: Vec<f64>,
    /// Longest part save of each, ms.
    pub write_ms: Vec<f64>,
    /// Time all parts spent saving, summed over every save, ms.
    #[serde(default)]
    pub save_ms_total: f64,
}

/// Collects part reports and commits checkpoints every part has passed.
pub struct Coordinator {
    dir: Arc<DataDir>,
    sink_files: Vec<PathBuf>,
    expected: Vec<PartId>,
    workers: usize,
    committed: u64,
    reports: HashMap<PartId, Vec<(Report, Instant)>>,
    stats: CheckpointStats,
    metrics: Option<Arc<crate::Metrics>>,
}

impl Coordinator {
    /// A coordinator waiting for `expected` parts; `restored` is the checkpoint resumed from;
    /// `sink_files` are fsync'd before every commit.
    pub fn new(
        dir: Arc<DataDir>,
        expected: Vec<PartId>,
        sink_files: Vec<PathBuf>,
        workers: usize,
        restored: u64,
    ) -> Self {
        Coordinator {
            dir,
            sink_files,
            expected,
            workers,
            committed: restored,
            reports: HashMap::new(),
            stats: CheckpointStats::default(),
            metrics: None,
        }
    }

    /// Also counts commits in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::Metrics>) -> Self {
        metrics
            .last_checkpoint
            .store(self.committed, Ordering::Relaxed);
        self.metrics = Some(metrics);
        self
    }

    /// Handles reports until every sender is gone.
    pub fn run(
        mut self,
        reports: crossbeam_channel::Receiver<Report>,
    ) -> Result<CheckpointStats, EngineError> {
        let mut result = Ok(());
        let pause = std::time::Duration::from_millis(self.dir.config.min_pause_ms);
        let mut last_commit: Option<Instant> = None;
        loop {
            let wait = last_commit.map_or(pause, |t| pause.saturating_sub(t.elapsed()));
            let (first, open) = match reports.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(r) => (Some(r), true),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => (None, true),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => (None, false),
            };
            // Take every report already waiting, then commit only the newest checkpoint.
            for report in first.into_iter().chain(reports.try_iter()) {
                self.stats.save_ms_total += report.write_us as f64 / 1000.0;
                self.reports
                    .entry(report.part.clone())
                    .or_default()
                    .push((report, Instant::now()));
            }
            let due = !open || last_commit.is_none_or(|t| t.elapsed() >= pause);
            if result.is_ok() && due {
                let before = self.committed;
                result = self.try_commit();
                if self.committed != before {
                    last_commit = Some(Instant::now());
                }
            }
            if !open {
                break;
            }
        }
        result.map(|_| self.stats)
    }

    fn try_commit(&mut self) -> Result<(), EngineError> {
        let mut through = u64::MAX;
        for part in &self.expected {
            match self.reports.get(part).and_then(|r| r.last()) {
                Some((r, _)) => through = through.min(r.through),
                None => return Ok(()),
            }
        }
        if through <= self.committed {
            return Ok(());
        }
        let id = through;
        let mut m = Manifest {
            format: MANIFEST_FORMAT,
            id,
            complete: id == final_id(self.dir.config.interval_ms),
            graph: self.dir.identity.clone(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            workers: self.workers,
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            operators: BTreeMap::new(),
            align_ms: 0.0,
            write_ms: 0.0,
        };
        let mut first: Option<Instant> = None;
        for part in &self.expected {
            let Some((r, at)) = self
                .reports
                .get(part)
                .and_then(|rs| rs.iter().find(|(r, _)| r.label <= id && id <= r.through))
            else {
                return Err(EngineError::Checkpoint(format!(
                    "part {part} has no save covering checkpoint {id}"
                )));
            };
            first = Some(first.map_or(*at, |f| f.min(*at)));
            m.write_ms = m.write_ms.max(r.write_us as f64 / 1000.0);
            match (&r.part, &r.info) {
                (PartId::Source(name), PartInfo::Source(p)) => {
                    m.sources.insert(name.clone(), p.clone());
                }
                (PartId::SourceWorker(name, _), PartInfo::Source(p)) => {
                    match m.sources.get_mut(name) {
                        Some(merged) => merged.merge(p),
                        None => {
                            m.sources.insert(name.clone(), p.clone());
                        }
                    }
                }
                (PartId::Sink(name), PartInfo::Sink(p)) => {
                    m.sinks.insert(name.clone(), p.clone());
                }
                (PartId::Operator(name, _), PartInfo::Operator(o)) => {
                    let e = m.operators.entry(name.clone()).or_default();
                    e.entries += o.entries;
                    e.bytes_written += o.bytes_written;
                }
                (part, info) => {
                    return Err(EngineError::Checkpoint(format!(
                        "part {part} reported {info:?}"
                    )))
                }
            }
        }
        m.align_ms = first.map_or(0.0, |f| f.elapsed().as_secs_f64() * 1000.0);
        self.dir.commit(&m, &self.sink_files)?;
        self.committed = id;
        self.stats.committed += 1;
        self.stats.last_id = Some(id);
        self.stats.align_ms.push(m.align_ms);
        if let Some(metrics) = &self.metrics {
            metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
            metrics.last_checkpoint.store(id, Ordering::Relaxed);
            metrics.observe_align(m.align_ms);
        }
        self.stats.write_ms.push(m.write_ms);
        for rs in self.reports.values_mut() {
            rs.retain(|(r, _)| r.through > id);
        }
        Ok(())
    }
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
    fn cadence_covers_jumps_with_one_save() {
        let mut c = Cadence::new(10, 0);
        assert_eq!(c.due(9), None);
        assert_eq!(c.due(10), Some((10, 10)));
        assert_eq!(c.due(47), Some((10, 40)));
        c.mark(40);
        assert_eq!(c.due(49), None);
        assert_eq!(c.due(50), Some((50, 50)));
        assert_eq!(c.due(u64::MAX), Some((50, final_id(10))));
    }

    #[test]
    fn manifest_round_trip_and_damage_is_detected() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            id: 20_000,
            complete: false,
            graph: GraphIdentity {
                name: "g".into(),
                version: 1,
                fingerprint: "ab".into(),
                state: "cd".into(),
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
