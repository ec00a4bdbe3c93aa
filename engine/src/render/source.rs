//! The source driver: one operator for every source type. A reader ([`SourceReader`]: a file,
//! a CSV file, a worker's Kafka partitions) only reads records and knows its own position; the
//! driver owns everything else:
//! - pause (the deployment is paused) and flow control (how far ahead of the sinks it may run);
//! - a watermark per partition (`newest event time - max_out_of_orderness`) and the worker's
//!   capability at the least of them, so the dataflow's frontier is the least over every
//!   partition of every source;
//! - idleness: a partition read to its end with nothing new for `idle_timeout` stops holding
//!   the watermark back; a worker whose partitions are all idle follows the other workers (or,
//!   when every one is idle, goes as far as its partitions got);
//! - checkpoints: before it moves the capability past a checkpoint time it saves the
//!   watermark, the newest event time of each partition and the reader's opaque position;
//!   once that checkpoint is committed it tells the reader (Kafka commits its group offsets);
//!   on restore it opens the reader at the restored position.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::operator::source;

use tickflow_operators::event_time::EventTime;
use tickflow_operators::record::{Ordinal, RawLine};

use crate::checkpoint::{OpaquePosition, PartInfo, SourcePosition};
use crate::metrics::Metrics;
use crate::EngineError;

use super::{fail, FlowControl, SourceCx, BATCH, S};

/// How long a worker with nothing to read waits before polling again.
const POLL_PAUSE: Duration = Duration::from_millis(1);

/// One record a reader read.
#[derive(Debug, Clone)]
pub struct Polled {
    /// The reader's partition it came from.
    pub partition: i32,
    /// Its position, for ordering and dead letters.
    pub ordinal: Ordinal,
    /// The raw record.
    pub text: String,
}

/// What a source's reader does on one worker; see the module docs for what the driver does.
pub trait SourceReader {
    /// The partitions this worker reads (a file: `[0]`).
    fn partitions(&self) -> Vec<i32>;
    /// Reads up to `max` records into `out`, and into `at_end` the partitions read to their
    /// current end. Returns the input bytes consumed.
    fn poll(
        &mut self,
        max: usize,
        out: &mut Vec<Polled>,
        at_end: &mut Vec<i32>,
    ) -> Result<u64, EngineError>;
    /// Whether a partition is finished for good (a bounded input read to its end).
    fn done(&self, partition: i32) -> bool;
    /// Where the reader stands, opaque to the checkpoint.
    fn position(&self) -> OpaquePosition;
    /// A checkpoint holding `position` (from [`SourceReader::position`]) was committed.
    fn committed(&mut self, _position: &OpaquePosition) {}
    /// Every partition is finished.
    fn finish(&mut self) {}
}

/// What a reader is opened with.
pub struct OpenCx<'a> {
    /// The source's name.
    pub name: &'a str,
    /// The source's id in record ordinals.
    pub source: u32,
    /// This worker and the number of workers.
    pub worker: (usize, usize),
    /// The checkpoint position being restored.
    pub restored: Option<&'a SourcePosition>,
    /// The run's metrics.
    pub metrics: &'a Metrics,
    /// Whether the run is failing or stopping (long waits end then).
    pub cancel: &'a dyn Fn() -> bool,
}

/// Opens the reader of this worker; `None` when this worker reads nothing of the source.
pub type OpenReader =
    Box<dyn FnOnce(&OpenCx) -> Result<Option<Box<dyn SourceReader>>, EngineError>>;

/// How the driver runs a source.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// How far a partition's watermark trails its newest event time.
    pub max_out_of_orderness_ms: u64,
    /// A partition at its end this long stops holding the watermark (zero: never).
    pub idle_timeout: Duration,
    /// Where a record's event time is.
    pub event_time: EventTime,
    /// Every worker reads a share (one checkpoint part per worker).
    pub parallel: bool,
}

/// Watermarks the workers of a parallel source offer each other: a worker whose partitions
/// are all idle follows the others.
#[derive(Debug, Default)]
pub struct WatermarkOffers(Mutex<HashMap<(String, usize), Option<u64>>>);

impl WatermarkOffers {
    fn offer(&self, source: &str, worker: usize, watermark: Option<u64>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((source.to_string(), worker), watermark);
    }

    /// The least watermark the other workers of `source` offer.
    fn others(&self, source: &str, worker: usize) -> Option<u64> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|((s, w), _)| s == source && *w != worker)
            .filter_map(|(_, wm)| *wm)
            .min()
    }
}

/// The driver's view of one partition.
struct Partition {
    id: i32,
    max_ts: Option<u64>,
    /// Since when it has been read to its end with nothing new: idle once this lasts
    /// `idle_timeout`. One with records waiting is never idle, however slowly they arrive.
    at_end_since: Option<Instant>,
}

/// A reading worker's state.
struct Reading {
    reader: Box<dyn SourceReader>,
    partitions: Vec<Partition>,
    cap: timely::dataflow::operators::Capability<u64>,
    /// Positions saved for checkpoints not yet committed: `(checkpoint, position)`.
    saved: VecDeque<(u64, OpaquePosition)>,
}

impl Reading {
    fn position(&self, watermark: u64) -> SourcePosition {
        SourcePosition {
            watermark_ms: watermark,
            max_ts_ms: self
                .partitions
                .iter()
                .filter_map(|p| p.max_ts.map(|t| (p.id, t)))
                .collect(),
            readers: vec![self.reader.position()],
        }
    }
}

/// Renders a source: `open` gives this worker's reader; see the module docs.
pub fn drive<'s>(cx: SourceCx<'s>, settings: DriverSettings, open: OpenReader) -> S<'s, RawLine> {
    let SourceCx {
        scope,
        id,
        name,
        metrics,
        failure,
        probe,
        mut part,
        live,
        offers,
    } = cx;
    let ooo = settings.max_out_of_orderness_ms;
    let idle = settings.idle_timeout;
    let node_idx = metrics.index_of("source", &name);
    let (index, peers) = (scope.index(), scope.peers());
    source(scope, &format!("Source({name})"), move |cap, info| {
        let activator = scope.activator_for(info.address);
        let restored = part.as_ref().and_then(|p| p.restored_source(&name));
        let mut state = None;
        // What this worker reports as its position for checkpoints it resumes past.
        let report_restored = |part: &mut Option<super::Part>, pos: SourcePosition| {
            if let Some(p) = part.as_mut() {
                if let Some(due) = p.source_due(pos.watermark_ms) {
                    p.report(due, PartInfo::Source(pos), Instant::now());
                }
            }
        };
        match restored {
            Some(Err(ckpt)) => fail(
                &failure,
                format!("checkpoint {ckpt} has no position for source {name}"),
            ),
            Some(Ok(pos)) if pos.watermark_ms == u64::MAX => {
                // Read to its end before the checkpoint: nothing left to read. One worker
                // carries the position on.
                if index == 0 || !settings.parallel {
                    report_restored(&mut part, pos);
                } else {
                    report_restored(&mut part, SourcePosition::finished());
                }
            }
            restored => {
                let restored = restored.and_then(Result::ok);
                let cancel = || failure.is_set() || live.as_ref().is_some_and(|l| l.is_stopping());
                let opened = open(&OpenCx {
                    name: &name,
                    source: id as u32,
                    worker: (index, peers),
                    restored: restored.as_ref(),
                    metrics: &metrics,
                    cancel: &cancel,
                });
                match opened {
                    Err(e) => fail(&failure, format!("source {name}: {e}")),
                    // Nothing to read here, ever (a file read by another worker; more workers
                    // than partitions): a parallel source's part says so.
                    Ok(None) => {
                        if settings.parallel {
                            report_restored(&mut part, SourcePosition::finished());
                        }
                    }
                    Ok(Some(reader)) => {
                        let partitions = reader
                            .partitions()
                            .into_iter()
                            .map(|id| Partition {
                                id,
                                max_ts: restored
                                    .as_ref()
                                    .and_then(|r| r.max_ts_ms.get(&id).copied()),
                                at_end_since: None,
                            })
                            .collect();
                        let mut reading = Reading {
                            reader,
                            partitions,
                            cap,
                            saved: VecDeque::new(),
                        };
                        if let Some(pos) = &restored {
                            reading.cap.downgrade(&pos.watermark_ms);
                            if let Some(node) = node_idx.and_then(|i| metrics.nodes.get(i)) {
                                node.watermark_ms.store(pos.watermark_ms, Ordering::Relaxed);
                            }
                            // The restored position also holds for checkpoints up to the
                            // watermark.
                            let mine = reading.position(pos.watermark_ms);
                            report_restored(&mut part, mine);
                        }
                        activator.activate();
                        state = Some(reading);
                    }
                }
            }
        }
        let mut batch: Vec<Polled> = Vec::with_capacity(BATCH);
        let mut at_end: Vec<i32> = Vec::new();
        let mut flow = FlowControl::new(probe);
        // What this worker last offered the others.
        let mut published: Option<Option<u64>> = None;
        move |output| {
            let Some(r) = state.as_mut() else {
                return;
            };
            if live.as_ref().is_some_and(|l| l.is_paused()) {
                activator.activate_after(Duration::from_millis(50));
                return;
            }
            if flow.hold(*r.cap.time()) {
                activator.activate_after(Duration::from_micros(200));
                return;
            }
            batch.clear();
            at_end.clear();
            let bytes = match r.reader.poll(BATCH, &mut batch, &mut at_end) {
                Ok(bytes) => bytes,
                Err(e) => {
                    fail(&failure, format!("source {name}: {e}"));
                    state = None;
                    return;
                }
            };
            let now = Instant::now();
            let got = batch.len() as u64;
            if !batch.is_empty() {
                let mut session = output.session(&r.cap);
                for rec in batch.drain(..) {
                    if let Some(p) = r.partitions.iter_mut().find(|p| p.id == rec.partition) {
                        p.at_end_since = None;
                        if let Some(ts) = settings.event_time.ms(&rec.text) {
                            p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
                        }
                    }
                    session.give(RawLine {
                        ordinal: rec.ordinal,
                        text: rec.text,
                    });
                }
            }
            // After this batch's records: the end notice follows the records before it.
            for id in &at_end {
                if let Some(p) = r.partitions.iter_mut().find(|p| p.id == *id) {
                    p.at_end_since.get_or_insert(now);
                }
            }
            metrics.bytes_read.fetch_add(bytes, Ordering::Relaxed);

            // The worker's watermark: the least over partitions that are neither finished
            // nor idle (unknown while one of them has no event time yet).
            let watermark = |p: &Partition| p.max_ts.map(|t| t.saturating_sub(ooo));
            let reader = &r.reader;
            let open_parts: Vec<&Partition> =
                r.partitions.iter().filter(|p| !reader.done(p.id)).collect();
            let active: Vec<&Partition> = open_parts
                .iter()
                .copied()
                .filter(|p| {
                    idle.is_zero()
                        || p.at_end_since
                            .is_none_or(|since| now.duration_since(since) < idle)
                })
                .collect();
            let own = if active.iter().all(|p| p.max_ts.is_some()) {
                active.iter().filter_map(|p| watermark(p)).min()
            } else {
                None
            };
            // What this worker offers the others: its watermark, or, when every partition here
            // is idle, the greatest watermark its partitions reached (nothing here is pending).
            let offer = if active.is_empty() {
                open_parts.iter().filter_map(|p| watermark(p)).max()
            } else {
                own
            };
            let target = if open_parts.is_empty() {
                Some(u64::MAX)
            } else if active.is_empty() {
                offers.others(&name, index).or(offer)
            } else {
                own
            };
            if settings.parallel && published != Some(offer) {
                published = Some(offer);
                offers.offer(&name, index, offer);
            }
            let next = target.filter(|w| w > r.cap.time());
            if let (Some(next), Some(p)) = (next, part.as_mut()) {
                if let Some(due) = p.source_due(next) {
                    let pos = r.position(next);
                    let reader_pos = pos.readers[0].clone();
                    match p.save_position(due, PartInfo::Source(pos), Instant::now()) {
                        Ok(()) => r.saved.push_back((due.1, reader_pos)),
                        Err(e) => fail(&failure, e),
                    }
                }
            }
            // Tell the reader about the newest committed checkpoint it saved a position for.
            let committed = metrics.last_checkpoint.load(Ordering::Relaxed);
            let mut newest = None;
            while r.saved.front().is_some_and(|(t, _)| *t <= committed) {
                newest = r.saved.pop_front();
            }
            if let Some((_, pos)) = newest {
                r.reader.committed(&pos);
            }
            if let Some(node) = node_idx.and_then(|i| metrics.nodes.get(i)) {
                node.add_out(0, got);
                if let Some(w) = next {
                    node.watermark_ms.store(w, Ordering::Relaxed);
                }
            }
            match next {
                Some(u64::MAX) => {
                    r.reader.finish();
                    state = None;
                    return;
                }
                Some(w) => {
                    flow.sent(*r.cap.time());
                    r.cap.downgrade(&w);
                }
                None => {}
            }
            if got > 0 {
                activator.activate();
            } else {
                activator.activate_after(POLL_PAUSE);
            }
        }
    })
}

/// The states of reader positions, each checked against the format its reader writes.
pub fn reader_state<'a>(
    positions: &'a [OpaquePosition],
    format: &str,
) -> Result<Vec<&'a serde_json::Value>, EngineError> {
    positions.iter().map(|p| p.state_of(format)).collect()
}
