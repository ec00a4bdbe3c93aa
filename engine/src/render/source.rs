//! The source driver: one operator for every source type. A reader ([`SourceReader`]: a file,
//! a CSV file, a worker's Kafka partitions) only reads records and knows its own position; the
//! driver owns everything else:
//! - pause (the deployment is paused) and flow control (how far ahead of the sinks it may read);
//! - a watermark per partition and **watermark alignment**: each record gets a stamp, its
//!   partition's watermark (`newest event time - max_out_of_orderness`, in steps of
//!   the graph's [`watermark_step_ms`]) over the records before it ([`Progress`]); the worker's
//!   capability is the least next stamp
//!   over its partitions, and a record is emitted only once the capability has reached its
//!   stamp. A partition that runs ahead waits (its records held back, and past
//!   [`QUEUE_LIMIT`] left unread by its reader) until the slowest catches up. Every record is emitted at its own
//!   stamp, which depends only on its partition's order, so lateness, and every result, is
//!   the same on every run, for any worker count and any interleaving of the partitions'
//!   reads, and after a restore;
//! - idleness: a partition read to its end with nothing new and nothing held back for
//!   `idle_timeout` stops holding the watermark back (checked on every activation, also while
//!   flow control holds reading back); a worker whose partitions are all idle follows the
//!   other workers (or, when every one is idle, goes as far as its partitions got). A record
//!   that wakes an idle partition behind the watermark is emitted at the watermark;
//! - checkpoints: before it moves the capability past a checkpoint time it saves the
//!   watermark, each partition's progress and the reader's opaque position, rewound to the
//!   first record held back in each partition; once that checkpoint is committed it tells the
//!   reader (Kafka commits its group offsets); on restore it opens the reader there.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use timely::communication::{Pull, Push};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::Scope;
use timely::Bincode;

pub use tickflow_connectors::Resume;
use tickflow_operators::event_time::EventTime;
use tickflow_operators::record::{Ordinal, RawLine};
use tickflow_operators::tick::FieldSpans;

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
    /// Where the reader resumes to read it again (a file: bytes and lines before it; Kafka:
    /// its offset); see [`SourceReader::position`].
    pub at: Resume,
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
    /// Where the reader stands, opaque to the checkpoint, except that each partition listed
    /// in `rewind` resumes at the given record ([`Polled::at`]): records the driver read but
    /// has not emitted yet.
    fn position(&self, rewind: &[(i32, Resume)]) -> OpaquePosition;
    /// Stops (or resumes) reading a partition while the driver holds many of its records back
    /// (it runs ahead of the source's other partitions); a hint that bounds memory.
    fn leave_unread(&mut self, _partition: i32, _unread: bool) {}
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

/// One worker's offer: its index and its watermark (`None` while it has none).
type Offer = Bincode<(usize, Option<u64>)>;

/// The watermarks the workers of a parallel source offer each other: a worker whose
/// partitions are all idle follows the others. Sent over a timely broadcast channel addressed
/// to the source operator, so that it works across processes as within one, and a worker is
/// woken when another's offer arrives.
struct Offers {
    me: usize,
    send: Box<dyn Push<Offer>>,
    recv: Box<dyn Pull<Offer>>,
    /// The newest offer of every other worker heard from.
    others: HashMap<usize, Option<u64>>,
    /// What this worker last offered.
    published: Option<Option<u64>>,
}

impl Offers {
    /// Allocates the channel: every worker must, in the same order (at the source's
    /// construction), whether or not its source is parallel.
    fn new(scope: Scope<'_, u64>, address: Rc<[usize]>) -> Self {
        let worker = scope.worker();
        let (send, recv) = worker.broadcast::<Offer>(worker.new_identifier(), address);
        Offers {
            me: scope.index(),
            send,
            recv,
            others: HashMap::new(),
            published: None,
        }
    }

    /// Sends this worker's offer to every worker, if it changed.
    fn offer(&mut self, watermark: Option<u64>) {
        if self.published != Some(watermark) {
            self.published = Some(watermark);
            self.send.send(Bincode::from((self.me, watermark)));
            self.send.done();
        }
    }

    /// Takes in the offers that arrived (call on every activation, so none pile up).
    fn receive(&mut self) {
        while let Some(offer) = self.recv.recv() {
            let (worker, watermark) = offer.payload;
            if worker != self.me {
                self.others.insert(worker, watermark);
            }
        }
    }

    /// The least watermark the other workers offer.
    fn others(&self) -> Option<u64> {
        self.others.values().filter_map(|w| *w).min()
    }
}

/// The coarsest granularity of stamps: a partition's watermark is rounded down to a multiple
/// of the graph's step, so that consecutive records share a timely time (and a batch: 1 s
/// steps cost a fifth of the throughput on the realistic shape, 5 s steps nothing).
pub const MAX_WATERMARK_STEP_MS: u64 = 5_000;

/// A graph's watermark step: the greatest divisor of [`MAX_WATERMARK_STEP_MS`] and of every
/// event-time length its operators judge results on ([`crate::component::Operator::event_time_grid_ms`]),
/// so that every window end and every `end + allowed_lateness` is a multiple of it: windows
/// close, and lateness is judged, exactly as against an exact watermark.
pub fn watermark_step_ms(grid: impl IntoIterator<Item = u64>) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    grid.into_iter().fold(MAX_WATERMARK_STEP_MS, gcd)
}

/// How a partition's watermark trails its newest event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// `max_out_of_orderness`.
    pub ooo_ms: u64,
    /// The graph's [`watermark_step_ms`].
    pub step_ms: u64,
}

impl Lag {
    /// The watermark after event time `max_ts`.
    fn watermark(self, max_ts: u64) -> u64 {
        let w = max_ts.saturating_sub(self.ooo_ms);
        w - w % self.step_ms
    }
}

/// A partition's progress in event time, over the records read from it in order. A record's
/// stamp is the partition's watermark over the records *before* it (`newest event time -
/// max_out_of_orderness`, rounded down to the graph's [`watermark_step_ms`]): it depends only
/// on the partition's own order, never on how partitions' reads interleave, on worker count or
/// on timing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Newest event time read.
    pub max_ts: Option<u64>,
}

impl Progress {
    /// The stamp of the partition's next record (`None`: no event time yet).
    fn stamp(&self, lag: Lag) -> Option<u64> {
        self.max_ts.map(|t| lag.watermark(t))
    }

    /// Takes in the next record's event time and returns its stamp.
    fn read(&mut self, ts: Option<u64>, lag: Lag) -> Option<u64> {
        let stamp = self.stamp(lag);
        if let Some(ts) = ts {
            self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        }
        stamp
    }
}

/// A record read but not yet emitted: the source's watermark has not reached its stamp.
struct Queued {
    stamp: Option<u64>,
    /// Where the tick fields lie in the record, when the event-time scan found them.
    spans: Option<FieldSpans>,
    /// The partition's progress before it (where a checkpoint resumes if it is held back).
    before: Progress,
    rec: Polled,
}

/// Where raw records are parsed: a Kafka record by its offset over every worker; a file's
/// lines round-robin over the workers other than the one reading the file (when there are
/// others), since that worker already reads and scans every line. Parsing is stateless, so
/// this spreads load without changing any result.
pub fn raw_route(peers: usize) -> impl Fn(&RawLine) -> u64 + 'static {
    let peers = peers.max(1) as u64;
    move |r: &RawLine| {
        if r.ordinal.kafka_position().is_some() || peers == 1 {
            return r.ordinal.line;
        }
        let reader =
            crate::components::file_source::reading_worker(r.ordinal.source, peers as usize) as u64;
        let k = r.ordinal.line % (peers - 1);
        if k >= reader {
            k + 1
        } else {
            k
        }
    }
}

/// Records a partition may hold back before its reader is asked to leave it unread.
const QUEUE_LIMIT: usize = 4 * BATCH;

/// The driver's view of one partition.
struct Partition {
    id: i32,
    progress: Progress,
    queue: VecDeque<Queued>,
    /// Since when it has been read to its end with nothing new: idle once this lasts
    /// `idle_timeout` with nothing held back. One with records waiting is never idle, however
    /// slowly they arrive.
    at_end_since: Option<Instant>,
    /// Whether its reader was asked to leave it unread.
    unread: bool,
}

impl Partition {
    /// The stamp of the next record it will emit (a lower bound while nothing is held back).
    fn next_stamp(&self, lag: Lag) -> Option<u64> {
        match self.queue.front() {
            Some(q) => q.stamp,
            None => self.progress.stamp(lag),
        }
    }

    /// Where a checkpoint taken now resumes it: its progress before the first record held
    /// back, and that record's place (none: after everything read).
    fn resume(&self) -> (Progress, Option<Resume>) {
        match self.queue.front() {
            Some(q) => (q.before, Some(q.rec.at)),
            None => (self.progress, None),
        }
    }
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
    /// The position a checkpoint at `watermark` resumes from: records held back are read again.
    fn position(&self, watermark: u64) -> SourcePosition {
        let mut max_ts_ms = std::collections::BTreeMap::new();
        let mut rewind = Vec::new();
        for p in &self.partitions {
            let (progress, at) = p.resume();
            if let Some(t) = progress.max_ts {
                max_ts_ms.insert(p.id, t);
            }
            if let Some(at) = at {
                rewind.push((p.id, at));
            }
        }
        SourcePosition {
            watermark_ms: watermark,
            max_ts_ms,
            readers: vec![self.reader.position(&rewind)],
        }
    }

    /// Takes in a polled batch: each record gets its stamp and waits in its partition's queue.
    fn take_in(
        &mut self,
        batch: &mut Vec<Polled>,
        at_end: &[i32],
        event_time: &EventTime,
        lag: Lag,
    ) -> u64 {
        let mut newest = 0;
        for rec in batch.drain(..) {
            let Some(p) = self.partitions.iter_mut().find(|p| p.id == rec.partition) else {
                continue;
            };
            p.at_end_since = None;
            let before = p.progress;
            let (ts, spans) = event_time.read(&rec.text);
            newest = newest.max(ts.unwrap_or(0));
            let stamp = p.progress.read(ts, lag);
            p.queue.push_back(Queued {
                stamp,
                spans,
                before,
                rec,
            });
        }
        // After the batch's records: the end notice follows the records before it.
        let now = Instant::now();
        for id in at_end {
            if let Some(p) = self.partitions.iter_mut().find(|p| p.id == *id) {
                p.at_end_since.get_or_insert(now);
            }
        }
        newest
    }

    /// Emits every held-back record whose stamp the capability has reached; returns how many.
    fn emit(&mut self, output: &mut SourceOutput<'_>) -> u64 {
        let cap = *self.cap.time();
        let ready = |q: &Queued| q.stamp.is_none_or(|s| s <= cap);
        if !self
            .partitions
            .iter()
            .any(|p| p.queue.front().is_some_and(ready))
        {
            return 0;
        }
        let mut n = 0;
        let mut session = output.session(&self.cap);
        for p in &mut self.partitions {
            while let Some(q) = p.queue.pop_front() {
                if !ready(&q) {
                    p.queue.push_front(q);
                    break;
                }
                session.give(RawLine {
                    ordinal: q.rec.ordinal,
                    text: q.rec.text,
                    spans: q.spans,
                });
                n += 1;
            }
        }
        n
    }
}

/// A source operator's output handle.
type SourceOutput<'a> = timely::dataflow::operators::generic::OutputBuilderSession<
    'a,
    u64,
    timely::container::CapacityContainerBuilder<Vec<RawLine>>,
>;

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
        watermark_step_ms,
    } = cx;
    let lag = Lag {
        ooo_ms: settings.max_out_of_orderness_ms,
        step_ms: watermark_step_ms,
    };
    let idle = settings.idle_timeout;
    let node_idx = metrics.index_of("source", &name);
    let (index, peers) = (scope.index(), scope.peers());
    source(scope, &format!("Source({name})"), move |cap, info| {
        let mut offers = Offers::new(scope, Rc::clone(&info.address));
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
                                progress: Progress {
                                    max_ts: restored
                                        .as_ref()
                                        .and_then(|r| r.max_ts_ms.get(&id).copied()),
                                },
                                queue: VecDeque::new(),
                                at_end_since: None,
                                unread: false,
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
        // Records emitted at the capability's current time, for flow control.
        let mut at_time = 0;
        move |output| {
            offers.receive();
            let Some(r) = state.as_mut() else {
                return;
            };
            if live.as_ref().is_some_and(|l| l.is_paused()) {
                activator.activate_after(Duration::from_millis(50));
                return;
            }
            // Flow control holds reading back, not the records already read, nor idleness.
            let held = flow.hold(*r.cap.time());
            let mut read = 0;
            if !held {
                batch.clear();
                at_end.clear();
                match r.reader.poll(BATCH, &mut batch, &mut at_end) {
                    Ok(bytes) => metrics.bytes_read.fetch_add(bytes, Ordering::Relaxed),
                    Err(e) => {
                        fail(&failure, format!("source {name}: {e}"));
                        state = None;
                        return;
                    }
                };
                read = batch.len();
                let newest = r.take_in(&mut batch, &at_end, &settings.event_time, lag);
                if let Some(node) = node_idx.and_then(|i| metrics.nodes.get(i)) {
                    node.max_event_ms.fetch_max(newest, Ordering::Relaxed);
                }
            }
            let mut emitted = 0;
            // Emit what the capability has reached, move it as far as every partition allows
            // (saving positions for checkpoints it passes), and again, until it stays.
            loop {
                let n = r.emit(output);
                emitted += n;
                at_time += n as usize;
                let now = Instant::now();
                // The worker's watermark: the least next stamp over partitions that are
                // neither finished nor idle (unknown while one of them has no event time).
                let reader = &r.reader;
                let open_parts: Vec<&Partition> = r
                    .partitions
                    .iter()
                    .filter(|p| !reader.done(p.id) || !p.queue.is_empty())
                    .collect();
                let active: Vec<&Partition> = open_parts
                    .iter()
                    .copied()
                    .filter(|p| {
                        idle.is_zero()
                            || !p.queue.is_empty()
                            || p.at_end_since
                                .is_none_or(|since| now.duration_since(since) < idle)
                    })
                    .collect();
                let own = if active.iter().all(|p| p.next_stamp(lag).is_some()) {
                    active.iter().filter_map(|p| p.next_stamp(lag)).min()
                } else {
                    None
                };
                // What this worker offers the others: its watermark, or, when every partition
                // here is idle, the greatest watermark its partitions reached (nothing here is
                // pending).
                let offer = if active.is_empty() {
                    open_parts.iter().filter_map(|p| p.next_stamp(lag)).max()
                } else {
                    own
                };
                let target = if open_parts.is_empty() {
                    Some(u64::MAX)
                } else if active.is_empty() {
                    offers.others().or(offer)
                } else {
                    own
                };
                if settings.parallel {
                    offers.offer(offer);
                }
                let Some(next) = target.filter(|w| w > r.cap.time()) else {
                    break;
                };
                if let Some(p) = part.as_mut() {
                    if let Some(due) = p.source_due(next) {
                        let pos = r.position(next);
                        let reader_pos = pos.readers[0].clone();
                        match p.save_position(due, PartInfo::Source(pos), Instant::now()) {
                            Ok(()) => r.saved.push_back((due.1, reader_pos)),
                            Err(e) => fail(&failure, e),
                        }
                    }
                }
                if let Some(node) = node_idx.and_then(|i| metrics.nodes.get(i)) {
                    node.watermark_ms.store(next, Ordering::Relaxed);
                }
                if next == u64::MAX {
                    if let Some(node) = node_idx.and_then(|i| metrics.nodes.get(i)) {
                        node.add_out(0, emitted);
                    }
                    r.reader.finish();
                    state = None;
                    return;
                }
                flow.sent(*r.cap.time(), std::mem::take(&mut at_time));
                r.cap.downgrade(&next);
            }
            // Partitions holding many records back stop being fetched until they drain.
            for p in &mut r.partitions {
                let unread = p.queue.len() >= QUEUE_LIMIT;
                if unread != p.unread {
                    p.unread = unread;
                    r.reader.leave_unread(p.id, unread);
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
                node.add_out(0, emitted);
            }
            if held {
                activator.activate_after(Duration::from_micros(200));
            } else if read > 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_stamp_is_its_partitions_watermark_before_it_in_whole_steps() {
        let lag = Lag {
            ooo_ms: 1_000,
            step_ms: 5_000,
        };
        let mut p = Progress::default();
        // No event time yet: no stamp (emitted at the source's watermark).
        assert_eq!(p.read(Some(14_400), lag), None);
        assert_eq!(p.read(Some(16_900), lag), Some(10_000));
        // A late record does not move the watermark; one without event time neither.
        assert_eq!(p.read(Some(1_000), lag), Some(15_000));
        assert_eq!(p.read(None, lag), Some(15_000));
        assert_eq!(p.stamp(lag), Some(15_000));
        assert_eq!(p.max_ts, Some(16_900));
    }

    #[test]
    fn the_step_divides_every_window_length_and_is_at_most_5_s() {
        assert_eq!(watermark_step_ms([]), 5_000);
        // One-minute bars, 30 s of allowed lateness.
        assert_eq!(watermark_step_ms([60_000, 60_000, 30_000]), 5_000);
        // 250 ms bars, no lateness (zero constrains nothing).
        assert_eq!(watermark_step_ms([250, 250, 0]), 250);
        // 30 s windows sliding by 10 s, 3 s lateness.
        assert_eq!(watermark_step_ms([30_000, 10_000, 3_000]), 1_000);
    }
}
