//! Builds a [`Plan`] into Timely operators.
//!
//! Timely times are event-time watermarks in milliseconds. Each file source is read by one
//! worker, which emits every line at its current watermark capability and downgrades it after
//! each batch of [`BATCH`] lines to `max event time seen - max_out_of_orderness`. Every
//! downstream frontier is therefore the global watermark. Stateful operators stash input by time
//! and apply it in time order, each time's records sorted by input position, once the frontier
//! has passed: results depend only on the input, never on worker count or scheduling.
//!
//! - `normalize` = parse and convert (spread over all workers by line) -> dedup (by venue);
//! - `enrich` = a per-worker lookup in the reference data;
//! - `window` = bars, exchanged by instrument;
//! - sinks render JSON lines, gather them on worker 0 and write each time's lines sorted.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Concatenate, InputCapability, Probe};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use timely::progress::frontier::MutableAntichain;

use tickflow_connectors::file::{FileSink, LineReader, StdoutSink};
use tickflow_connectors::kafka::KafkaWriter;
use tickflow_connectors::LineSink;
use tickflow_operators::normalize::Deduper;
use tickflow_operators::record::{
    Bar, DeadLetter, EnrichedTick, Ordinal, RawLine, Tick, ToJsonLine,
};
use tickflow_operators::tick::event_time_ms;
use tickflow_operators::window::WindowState;
use tickflow_state::{DeltaOp, Durable, Store};

use crate::checkpoint::{
    Cadence, Manifest, OperatorCheckpoint, PartId, PartInfo, Report, SinkPosition, SourcePosition,
};
use crate::fault;
use crate::live::{Live, ProjectionView};
use crate::metrics::{Metrics, NodeMetrics};
use crate::plan::{OperatorKind, OutputRef, Plan, SinkKind, SourceKind};

/// Lines a source reads before it moves its watermark.
pub const BATCH: usize = 1_000;

/// Batches (with distinct watermarks) a source may have in flight before the sinks have
/// completed them: the flow control that keeps memory flat when one worker reads for all.
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// A source's flow control: the watermarks of its recent batches, oldest first. A source holds
/// back while the sinks (`probe`) have not completed the batch sent [`MAX_BATCHES_IN_FLIGHT`]
/// watermarks ago, which keeps memory flat when sources read faster than sinks write.
pub(crate) struct FlowControl {
    probe: ProbeHandle<u64>,
    in_flight: std::collections::VecDeque<u64>,
}

impl FlowControl {
    pub(crate) fn new(probe: ProbeHandle<u64>) -> Self {
        FlowControl {
            probe,
            in_flight: Default::default(),
        }
    }

    /// Whether a source whose capability is at `now` should wait before reading more.
    pub(crate) fn hold(&mut self, now: u64) -> bool {
        while self
            .in_flight
            .front()
            .is_some_and(|t| !self.probe.less_equal(t))
        {
            self.in_flight.pop_front();
        }
        self.in_flight.len() >= MAX_BATCHES_IN_FLIGHT
            && self.in_flight.front().is_some_and(|t| *t < now)
    }

    /// Records that the source leaves watermark `t` behind.
    pub(crate) fn sent(&mut self, t: u64) {
        self.in_flight.push_back(t);
    }
}

/// The first error any worker hit. Every worker checks it between steps and drops the
/// dataflow once it is set, so a failure stops the run at once; the run then reports it.
#[derive(Debug, Default)]
pub struct FailureSlot {
    failed: std::sync::atomic::AtomicBool,
    message: Mutex<Option<String>>,
}

impl FailureSlot {
    /// Whether a failure was recorded.
    pub fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The first failure recorded.
    pub fn message(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Shared by every worker of a run.
pub type Failure = Arc<FailureSlot>;

pub(crate) fn fail(failure: &Failure, message: String) {
    tracing::error!("{message}");
    failure
        .message
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(message);
    failure.failed.store(true, Ordering::Release);
}

/// A stable hash, the same in every worker and process.
fn route<H: Hash + ?Sized>(value: &H) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Stored entries of one table, read once before the workers start.
pub type RestoredTable = Vec<(Vec<u8>, Vec<u8>)>;

/// What a run with a data directory gives every worker.
#[derive(Clone)]
pub struct Durability {
    /// Operator state.
    pub store: Arc<Store>,
    /// Event time between checkpoints.
    pub interval_ms: u64,
    /// The checkpoint being resumed from.
    pub restore: Option<Arc<Manifest>>,
    /// Stored entries by column family (`operator/table`), as of `restore`.
    pub restored: Arc<HashMap<String, RestoredTable>>,
    /// Where parts report their saves.
    pub reports: crossbeam_channel::Sender<Report>,
    /// Longest time a worker spent taking its state back, µs.
    pub restore_us: Arc<AtomicU64>,
}

impl Durability {
    fn restored_at(&self) -> u64 {
        self.restore.as_ref().map_or(0, |m| m.id)
    }
}

/// One part's side of checkpointing: its cadence and where it reports.
pub(crate) struct Part {
    pub(crate) ctx: Durability,
    id: PartId,
    pub(crate) cadence: Cadence,
}

impl Part {
    fn new(ctx: &Durability, id: PartId) -> Self {
        Part {
            cadence: Cadence::new(ctx.interval_ms, ctx.restored_at()),
            ctx: ctx.clone(),
            id,
        }
    }

    /// A source's position in the checkpoint being restored: `None` without one, `Err(id)` if
    /// checkpoint `id` has none for `name`.
    pub(crate) fn restored_source(&self, name: &str) -> Option<Result<SourcePosition, u64>> {
        let m = self.ctx.restore.as_ref()?;
        Some(m.sources.get(name).cloned().ok_or(m.id))
    }

    pub(crate) fn report(
        &mut self,
        (label, through): (u64, u64),
        info: PartInfo,
        started: Instant,
    ) {
        let report = Report {
            part: self.id.clone(),
            label,
            through,
            info,
            write_us: started.elapsed().as_micros() as u64,
        };
        // The coordinator outlives the workers; a send can only fail once it has stopped.
        let _ = self.ctx.reports.send(report);
        self.cadence.mark(through);
    }

    /// Records a source's or sink's position in the store, then reports it.
    pub(crate) fn save_position(
        &mut self,
        due: (u64, u64),
        info: PartInfo,
        started: Instant,
    ) -> Result<(), String> {
        let bytes = serde_json::to_vec(&info).unwrap_or_default();
        self.ctx
            .store
            .put_part(due.0, &self.id.to_string(), &bytes)
            .map_err(|e| format!("{}: {e}", self.id))?;
        if matches!(info, PartInfo::Source(_)) {
            fault::point("after-positions-write");
        }
        self.report(due, info, started);
        Ok(())
    }
}

/// A stateful operator instance's part: snapshots its state into the store.
struct OperatorPart {
    part: Part,
    /// `(table, column family)`.
    tables: Vec<(&'static str, String)>,
}

impl OperatorPart {
    fn new(
        ctx: &Durability,
        op: &str,
        worker: usize,
        tables: &[tickflow_state::TableDescriptor],
    ) -> Self {
        OperatorPart {
            part: Part::new(ctx, PartId::Operator(op.to_string(), worker)),
            tables: tables
                .iter()
                .map(|t| (t.name, format!("{op}/{}", t.name)))
                .collect(),
        }
    }

    /// Takes this instance's share of the stored state back (entries whose routing key this
    /// worker owns under the operator's exchange).
    fn restore(&self, state: &mut dyn Durable, index: usize, peers: usize) -> Result<(), String> {
        let Some(manifest) = self.part.ctx.restore.as_ref() else {
            return Ok(());
        };
        let started = Instant::now();
        let owns = |key: &str| (route(key) % peers as u64) as usize == index;
        for (table, cf) in &self.tables {
            for (k, v) in self.part.ctx.restored.get(cf).into_iter().flatten() {
                state
                    .restore_entry(table, k, v, &owns)
                    .map_err(|e| format!("restoring {cf}: {e}"))?;
            }
        }
        state.finish_restore(manifest.id);
        self.part
            .ctx
            .restore_us
            .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Saves the state if reaching time `t` (all input before `t` applied, nothing at or after
    /// it) passes a checkpoint.
    fn save(&mut self, t: u64, state: &mut dyn Durable) -> Result<(), String> {
        let Some(due) = self.part.cadence.due(t) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut ops = Vec::new();
        state.snapshot(due.0, &mut ops);
        let ops: Vec<(String, DeltaOp)> = ops
            .into_iter()
            .filter_map(|(table, op)| {
                self.tables
                    .iter()
                    .find(|(t, _)| *t == table)
                    .map(|(_, cf)| (cf.clone(), op))
            })
            .collect();
        fault::point("before-state-write");
        let bytes_written = if ops.is_empty() {
            0
        } else {
            self.part
                .ctx
                .store
                .write_delta(due.0, &self.part.id.to_string(), &ops)
                .map_err(|e| format!("{}: {e}", self.part.id))?
        };
        fault::point("after-state-write");
        let info = PartInfo::Operator(OperatorCheckpoint {
            entries: state.entries(),
            bytes_written,
        });
        self.part.report(due, info, started);
        Ok(())
    }
}

/// The least time of a frontier, `u64::MAX` once it is empty.
fn frontier_time(frontier: &MutableAntichain<u64>) -> u64 {
    frontier.frontier().first().copied().unwrap_or(u64::MAX)
}

pub(crate) type S<'s, D> = StreamVec<'s, u64, D>;

/// A stream of any record kind.
#[derive(Clone)]
enum AnyStream<'s> {
    Raw(S<'s, RawLine>),
    Tick(S<'s, Tick>),
    Enriched(S<'s, EnrichedTick>),
    Bar(S<'s, Bar>),
    DeadLetter(S<'s, DeadLetter>),
}

/// Streams by `(node, output)`.
struct Streams<'s> {
    scope: Scope<'s, u64>,
    map: HashMap<(String, String), AnyStream<'s>>,
}

macro_rules! inputs_of_kind {
    ($name:ident, $variant:ident, $ty:ty) => {
        fn $name(&self, inputs: &[OutputRef]) -> Option<S<'s, $ty>> {
            let streams: Vec<S<'s, $ty>> = inputs
                .iter()
                .filter_map(
                    |i| match self.map.get(&(i.node.clone(), i.output.clone())) {
                        Some(AnyStream::$variant(s)) => Some(s.clone()),
                        _ => None,
                    },
                )
                .collect();
            match streams.len() {
                0 => None,
                1 => streams.into_iter().next(),
                _ => Some(self.scope.concatenate(streams)),
            }
        }
    };
}

impl<'s> Streams<'s> {
    inputs_of_kind!(raw, Raw, RawLine);
    inputs_of_kind!(ticks, Tick, Tick);
    inputs_of_kind!(enriched, Enriched, EnrichedTick);

    fn insert(&mut self, node: &str, output: &str, stream: AnyStream<'s>) {
        self.map
            .insert((node.to_string(), output.to_string()), stream);
    }

    /// Every input rendered as JSON lines.
    fn lines(&self, inputs: &[OutputRef], names: &Arc<Vec<String>>) -> Vec<S<'s, String>> {
        fn render<'s, D: ToJsonLine + Clone + 'static>(
            s: &S<'s, D>,
            names: &Arc<Vec<String>>,
        ) -> S<'s, String> {
            let names = Arc::clone(names);
            s.clone().map(move |r| r.to_json_line(&names))
        }
        inputs
            .iter()
            .filter_map(|i| self.map.get(&(i.node.clone(), i.output.clone())))
            .map(|s| match s {
                AnyStream::Raw(s) => render(s, names),
                AnyStream::Tick(s) => render(s, names),
                AnyStream::Enriched(s) => render(s, names),
                AnyStream::Bar(s) => render(s, names),
                AnyStream::DeadLetter(s) => render(s, names),
            })
            .collect()
    }
}

/// Builds the whole plan into `scope`; with `durable`, every part takes part in checkpoints
/// and resumes from the checkpoint being restored.
pub fn build(
    scope: Scope<'_, u64>,
    plan: &Plan,
    metrics: &Arc<Metrics>,
    failure: &Failure,
    durable: Option<&Durability>,
    live: Option<&Arc<Live>>,
) {
    let mut streams = Streams {
        scope,
        map: HashMap::new(),
    };
    // Completion at the sinks, which sources use to hold back.
    let probe = ProbeHandle::new();
    for (id, src) in plan.sources.iter().enumerate() {
        let stream = match &src.kind {
            SourceKind::File { .. } => file_source(
                scope,
                plan,
                id,
                (metrics, failure),
                probe.clone(),
                durable.map(|d| Part::new(d, PartId::Source(src.name.clone()))),
                live.cloned(),
            ),
            SourceKind::Kafka { .. } => crate::kafka::kafka_source(
                scope,
                plan,
                id,
                (metrics, failure),
                probe.clone(),
                durable
                    .map(|d| Part::new(d, PartId::SourceWorker(src.name.clone(), scope.index()))),
                live.cloned(),
            ),
        };
        streams.insert(&src.name, "out", AnyStream::Raw(stream));
    }
    let node = |role: &str, name: &str| (Arc::clone(metrics), metrics.index_of(role, name));
    for op in &plan.operators {
        let counters = node("operator", &op.name);
        match &op.kind {
            OperatorKind::Normalize {
                normalizer,
                dedup_retention_ms,
            } => {
                let Some(input) = streams.raw(&op.inputs) else {
                    fail(
                        failure,
                        format!("operator {}: input is not raw lines", op.name),
                    );
                    continue;
                };
                let normalizer = normalizer.clone();
                let m = Arc::clone(metrics);
                // Dedup reports normalize's `out`; the parse stage reports `in` and `dead_letter`.
                let (ticks, dead) = split_map(
                    input,
                    Exchange::new(|r: &RawLine| r.ordinal.line),
                    "NormalizeParse",
                    (counters.clone(), false),
                    move |line| {
                        normalizer
                            .normalize(line)
                            .inspect_err(|dl| m.dead_letter(dl.reason, 1))
                    },
                );
                let part = durable.map(|d| {
                    OperatorPart::new(
                        d,
                        &op.name,
                        scope.index(),
                        tickflow_operators::normalize::TABLES,
                    )
                });
                let ticks = dedup(ticks, *dedup_retention_ms, counters, part, failure);
                streams.insert(&op.name, "out", AnyStream::Tick(ticks));
                streams.insert(&op.name, "dead_letter", AnyStream::DeadLetter(dead));
            }
            OperatorKind::Enrich { reference } => {
                let Some(input) = streams.ticks(&op.inputs) else {
                    fail(failure, format!("operator {}: input is not ticks", op.name));
                    continue;
                };
                let reference = Arc::clone(reference);
                let m = Arc::clone(metrics);
                let (ok, dead) =
                    split_map(input, Pipeline, "Enrich", (counters, true), move |tick| {
                        reference
                            .enrich(tick)
                            .inspect_err(|dl| m.dead_letter(dl.reason, 1))
                    });
                streams.insert(&op.name, "out", AnyStream::Enriched(ok));
                streams.insert(&op.name, "dead_letter", AnyStream::DeadLetter(dead));
            }
            OperatorKind::Window { spec } => {
                let Some(input) = streams.enriched(&op.inputs) else {
                    fail(
                        failure,
                        format!("operator {}: input is not enriched ticks", op.name),
                    );
                    continue;
                };
                let part = durable.map(|d| {
                    OperatorPart::new(
                        d,
                        &op.name,
                        scope.index(),
                        tickflow_operators::window::TABLES,
                    )
                });
                let state = match part {
                    Some(_) => WindowState::durable(*spec),
                    None => WindowState::new(*spec),
                };
                let (bars, late) = window(input, state, counters, part, failure);
                streams.insert(&op.name, "out", AnyStream::Bar(bars));
                streams.insert(&op.name, "late", AnyStream::Enriched(late));
            }
        }
    }
    let names = Arc::new(plan.source_names());
    for sink in &plan.sinks {
        let lines = streams.lines(&sink.inputs, &names);
        let lines = match lines.len() {
            1 => lines.into_iter().next(),
            0 => None,
            _ => Some(scope.concatenate(lines)),
        };
        if let Some(lines) = lines {
            let part = durable
                .filter(|_| scope.index() == 0)
                .map(|d| Part::new(d, PartId::Sink(sink.name.clone())));
            let view = match &sink.kind {
                SinkKind::Projection { key } => {
                    let view = Arc::new(ProjectionView::new(key));
                    if let Some(live) = live.filter(|_| scope.index() == 0) {
                        live.add_view(&sink.name, Arc::clone(&view));
                    }
                    Some(view)
                }
                _ => None,
            };
            write_sink(
                lines.probe_with(&probe),
                sink.kind.clone(),
                &sink.name,
                node("sink", &sink.name),
                failure,
                part,
                (view, live.cloned()),
            );
        }
    }
}

type Counters = (Arc<Metrics>, Option<usize>);

fn counters(c: &Counters) -> Option<&NodeMetrics> {
    c.1.and_then(|i| c.0.nodes.get(i))
}

/// Reads one file on one worker (source `id` on worker `id % peers`), emitting lines at the
/// watermark and moving it after each batch. It pauses while the sinks (`probe`) have not
/// completed the batch sent [`MAX_BATCHES_IN_FLIGHT`] watermarks ago. With a checkpoint `part`,
/// it records its position before moving the watermark past a checkpoint time, and resumes
/// from the position of the checkpoint being restored.
fn file_source<'s>(
    scope: Scope<'s, u64>,
    plan: &Plan,
    id: usize,
    (metrics, failure): (&Arc<Metrics>, &Failure),
    probe: ProbeHandle<u64>,
    mut part: Option<Part>,
    live: Option<Arc<Live>>,
) -> S<'s, RawLine> {
    let src = &plan.sources[id];
    let SourceKind::File { path } = &src.kind else {
        fail(failure, format!("source {}: not a file source", src.name));
        return timely::dataflow::operators::generic::operator::empty(scope);
    };
    let reads_here = id % scope.peers() == scope.index();
    let path = path.clone();
    let name = src.name.clone();
    let ooo = src.max_out_of_orderness_ms;
    let metrics = Arc::clone(metrics);
    let failure = Arc::clone(failure);
    let node_idx = metrics.index_of("source", &src.name);
    source(
        scope,
        &format!("Source({})", src.name),
        move |mut cap, info| {
            let activator = scope.activator_for(info.address);
            let mut state = None;
            if reads_here {
                let restored = part.as_ref().and_then(|p| p.restored_source(&name));
                let opened = LineReader::open(&path).map_err(|e| e.to_string());
                match (opened, restored) {
                    (Err(e), _) => fail(&failure, e),
                    (Ok(_), Some(Err(ckpt))) => fail(
                        &failure,
                        format!("checkpoint {ckpt} has no position for source {name}"),
                    ),
                    (Ok(mut reader), restored) => {
                        let mut max_ts = None;
                        let mut exhausted = false;
                        if let Some(Ok(pos)) = restored {
                            max_ts = pos.max_ts_ms;
                            exhausted = pos.watermark_ms == u64::MAX;
                            if let Err(e) = reader.seek(pos.offset, pos.line) {
                                fail(&failure, e.to_string());
                                exhausted = true;
                            }
                            if !exhausted {
                                cap.downgrade(&pos.watermark_ms);
                            }
                            if let Some(node) = node_idx.and_then(|i| metrics.nodes.get(i)) {
                                node.watermark_ms.store(pos.watermark_ms, Ordering::Relaxed);
                            }
                            // The restored position also holds for checkpoints up to the watermark.
                            if let Some(p) = part.as_mut() {
                                if let Some(due) = p.cadence.due(pos.watermark_ms) {
                                    p.report(due, PartInfo::Source(pos), Instant::now());
                                }
                            }
                        }
                        metrics
                            .bytes_total
                            .fetch_add(reader.len() - reader.offset(), Ordering::Relaxed);
                        if !exhausted {
                            activator.activate();
                            state = Some((reader, cap, max_ts));
                        }
                    }
                }
            }
            let mut batch = Vec::with_capacity(BATCH);
            let mut flow = FlowControl::new(probe);
            move |output| {
                let Some((reader, cap, max_ts)) = state.as_mut() else {
                    return;
                };
                if live.as_ref().is_some_and(|l| l.is_paused()) {
                    activator.activate_after(std::time::Duration::from_millis(50));
                    return;
                }
                if flow.hold(*cap.time()) {
                    activator.activate_after(std::time::Duration::from_micros(200));
                    return;
                }
                batch.clear();
                let before = reader.offset();
                let more = match reader.read_batch(BATCH, &mut batch) {
                    Ok(more) => more,
                    Err(e) => {
                        fail(&failure, e.to_string());
                        false
                    }
                };
                let n_lines = batch.len() as u64;
                {
                    let mut session = output.session(&*cap);
                    for (line, text) in batch.drain(..) {
                        if let Some(ts) = event_time_ms(&text) {
                            *max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
                        }
                        session.give(RawLine {
                            ordinal: Ordinal {
                                source: id as u32,
                                line,
                            },
                            text,
                        });
                    }
                }
                metrics
                    .bytes_read
                    .fetch_add(reader.offset() - before, Ordering::Relaxed);
                if let Some(node) = node_idx.and_then(|i| metrics.nodes.get(i)) {
                    node.add_out(0, n_lines);
                }
                let watermark = max_ts.map(|ts| ts.saturating_sub(ooo));
                let next = match (more, watermark) {
                    (false, _) => Some(u64::MAX),
                    (true, Some(w)) if w > *cap.time() => Some(w),
                    _ => None,
                };
                if let (Some(next), Some(p)) = (next, part.as_mut()) {
                    if let Some(due) = p.cadence.due(next) {
                        let pos = SourcePosition {
                            offset: reader.offset(),
                            line: reader.line(),
                            max_ts_ms: *max_ts,
                            watermark_ms: next,
                            partitions: BTreeMap::new(),
                        };
                        if let Err(e) = p.save_position(due, PartInfo::Source(pos), Instant::now())
                        {
                            fail(&failure, e);
                        }
                    }
                }
                if let (Some(w), Some(node)) = (next, node_idx.and_then(|i| metrics.nodes.get(i))) {
                    node.watermark_ms.store(w, Ordering::Relaxed);
                }
                if more {
                    if let Some(w) = next {
                        flow.sent(*cap.time());
                        cap.downgrade(&w);
                    }
                    activator.activate();
                } else {
                    state = None;
                }
            }
        },
    )
}

/// Stashes records by time and hands each time's records back once the frontier has passed it.
struct TimeStash<D> {
    entries: BTreeMap<u64, (Vec<Capability<u64>>, Vec<D>)>,
}

impl<D> TimeStash<D> {
    fn new() -> Self {
        TimeStash {
            entries: BTreeMap::new(),
        }
    }

    fn stash<'a>(
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
    fn pop_ready(
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

/// A stateless operator with an ok and an error output.
fn split_map<'s, D, A, B, P>(
    input: S<'s, D>,
    pact: P,
    name: &str,
    (counters_, count_ok): (Counters, bool),
    mut logic: impl FnMut(D) -> Result<A, B> + 'static,
) -> (S<'s, A>, S<'s, B>)
where
    D: 'static,
    A: Clone + 'static,
    B: Clone + 'static,
    P: ParallelizationContract<u64, Vec<D>>,
{
    let mut builder = OperatorBuilder::new(name.to_string(), input.scope());
    let mut input = builder.new_input(input, pact);
    let (ok_out, ok) = builder.new_output();
    let (err_out, err) = builder.new_output();
    let mut ok_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<A>>>::from(ok_out);
    let mut err_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<B>>>::from(err_out);
    builder.build(move |_| {
        move |_frontiers| {
            let mut ok_handle = ok_out.activate();
            let mut err_handle = err_out.activate();
            let (mut n_in, mut n_ok, mut n_err) = (0, 0, 0);
            input.for_each_stamp(|cap, data| {
                let mut oks = ok_handle.session(&cap);
                let mut errs = err_handle.session(&cap);
                for record in data.flat_map(|d| d.drain(..)) {
                    n_in += 1;
                    match logic(record) {
                        Ok(a) => {
                            n_ok += 1;
                            oks.give(a);
                        }
                        Err(b) => {
                            n_err += 1;
                            errs.give(b);
                        }
                    }
                }
            });
            if let Some(c) = counters(&counters_) {
                c.add_in(n_in);
                if count_ok {
                    c.add_out(0, n_ok);
                }
                c.add_out(1, n_err);
            }
        }
    });
    (ok, err)
}

/// Drops ticks whose `(venue, seq)` was already seen, first in (time, input position) order.
fn dedup<'s>(
    input: S<'s, Tick>,
    retention_ms: u64,
    counters_: Counters,
    mut part: Option<OperatorPart>,
    failure: &Failure,
) -> S<'s, Tick> {
    let mut deduper = match part {
        Some(_) => Deduper::durable(retention_ms),
        None => Deduper::new(retention_ms),
    };
    let mut stash = TimeStash::new();
    let failure = Arc::clone(failure);
    let (index, peers) = (input.scope().index(), input.scope().peers());
    input.unary_frontier(
        Exchange::new(|t: &Tick| route(&t.venue)),
        "Dedup",
        move |_cap, _info| {
            if let Some(Err(e)) = part.as_ref().map(|p| p.restore(&mut deduper, index, peers)) {
                fail(&failure, e);
            }
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| stash.stash(&cap, 1, data));
                let mut kept = 0;
                let mut dups = 0;
                let mut save = |t: u64, deduper: &mut Deduper| {
                    if let Some(Err(e)) = part.as_mut().map(|p| p.save(t, deduper)) {
                        fail(&failure, e);
                    }
                };
                while let Some((time, caps, mut ticks)) = stash.pop_ready(frontier) {
                    save(time, &mut deduper);
                    deduper.advance(time);
                    ticks.sort_by_key(|t| t.ordinal);
                    let Some(cap) = caps.first() else { continue };
                    let mut session = output.session(cap);
                    for tick in ticks {
                        if deduper.first_seen(&tick) {
                            kept += 1;
                            session.give(tick);
                        } else {
                            dups += 1;
                        }
                    }
                }
                save(frontier_time(frontier), &mut deduper);
                if let Some(c) = counters(&counters_) {
                    counters_.0.duplicates.fetch_add(dups, Ordering::Relaxed);
                    c.add_out(0, kept);
                }
            }
        },
    )
}

/// Event-time bars by instrument, with a `late` output.
fn window<'s>(
    input: S<'s, EnrichedTick>,
    mut state: WindowState,
    counters_: Counters,
    mut part: Option<OperatorPart>,
    failure: &Failure,
) -> (S<'s, Bar>, S<'s, EnrichedTick>) {
    let failure = Arc::clone(failure);
    let (index, peers) = (input.scope().index(), input.scope().peers());
    let mut builder = OperatorBuilder::new("Window".to_string(), input.scope());
    let mut input = builder.new_input(
        input,
        Exchange::new(|t: &EnrichedTick| route(&*t.instrument.instrument_id)),
    );
    let (bars_out, bars) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let mut bars_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<Bar>>>::from(bars_out);
    let mut late_out = OutputBuilder::<
        _,
        timely::container::CapacityContainerBuilder<Vec<EnrichedTick>>,
    >::from(late_out);
    builder.build(move |caps| {
        let mut stash = TimeStash::new();
        // Capabilities at the end of every window not yet emitted.
        let mut end_caps: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        if let Some(p) = part.as_ref() {
            match p.restore(&mut state, index, peers) {
                Ok(()) => {
                    if let Some(cap) = caps.first() {
                        for end in state.pending_ends() {
                            end_caps.insert(end, cap.delayed(&end));
                        }
                    }
                }
                Err(e) => fail(&failure, e),
            }
        }
        drop(caps);
        let mut bars_buf = Vec::new();
        move |frontiers| {
            let frontier = &frontiers[0];
            let mut bars_handle = bars_out.activate();
            let mut late_handle = late_out.activate();
            let (mut n_in, mut n_bars, mut n_late) = (0u64, 0u64, 0u64);
            input.for_each_stamp(|cap, data| stash.stash(&cap, 2, data));

            let emit_closed =
                |bars_buf: &mut Vec<Bar>,
                 end_caps: &mut BTreeMap<u64, Capability<u64>>,
                 bars_handle: &mut timely::dataflow::operators::generic::OutputBuilderSession<
                    '_,
                    u64,
                    timely::container::CapacityContainerBuilder<Vec<Bar>>,
                >,
                 upto: u64| {
                    for bar in bars_buf.drain(..) {
                        if let Some(cap) = end_caps.get(&bar.window_end_ms) {
                            bars_handle.session(cap).give(bar);
                        }
                    }
                    let keep = end_caps.split_off(&upto.saturating_add(1));
                    *end_caps = keep;
                };

            let mut save = |t: u64, state: &mut WindowState| {
                if let Some(Err(e)) = part.as_mut().map(|p| p.save(t, state)) {
                    fail(&failure, e);
                }
            };
            while let Some((time, caps, mut ticks)) = stash.pop_ready(frontier) {
                save(time, &mut state);
                state.advance(time, &mut bars_buf);
                n_bars += bars_buf.len() as u64;
                emit_closed(&mut bars_buf, &mut end_caps, &mut bars_handle, time);
                let (Some(bar_cap), Some(late_cap)) = (caps.first(), caps.get(1)) else {
                    continue;
                };
                ticks.sort_by_key(|t| t.tick.ordinal);
                n_in += ticks.len() as u64;
                let mut revisions = Vec::new();
                let mut late_ticks = Vec::new();
                for tick in ticks {
                    for (_, end) in state.spec().windows_of(tick.tick.ts_ms()) {
                        if end > time {
                            end_caps.entry(end).or_insert_with(|| bar_cap.delayed(&end));
                        }
                    }
                    if let Some(late) = state.apply(time, tick, &mut revisions) {
                        late_ticks.push(late);
                    }
                }
                n_bars += revisions.len() as u64;
                n_late += late_ticks.len() as u64;
                bars_handle
                    .session(bar_cap)
                    .give_iterator(revisions.into_iter());
                late_handle
                    .session(late_cap)
                    .give_iterator(late_ticks.into_iter());
            }
            let upto = frontier_time(frontier);
            save(upto, &mut state);
            state.advance(upto, &mut bars_buf);
            n_bars += bars_buf.len() as u64;
            emit_closed(&mut bars_buf, &mut end_caps, &mut bars_handle, upto);
            if let Some(c) = counters(&counters_) {
                c.add_in(n_in);
                c.add_out(0, n_bars);
                c.add_out(1, n_late);
                counters_.0.late.fetch_add(n_late, Ordering::Relaxed);
            }
        }
    });
    (bars, late)
}

/// Gathers lines on worker 0 and writes each time's lines, sorted, once the frontier passes it.
/// With a checkpoint `part`, it flushes and records the output length before writing the first
/// line at or after a checkpoint time (the coordinator fsyncs the file before committing), and on restore truncates the output back to the length
/// the restored checkpoint recorded.
fn write_sink(
    lines: S<'_, String>,
    kind: SinkKind,
    name: &str,
    counters_: Counters,
    failure: &Failure,
    mut part: Option<Part>,
    (view, live): (Option<Arc<ProjectionView>>, Option<Arc<Live>>),
) {
    let failure = Arc::clone(failure);
    let is_writer = lines.scope().index() == 0;
    let name = name.to_string();
    let mut writer: Option<Box<dyn LineSink>> = None;
    let restored = part
        .as_ref()
        .and_then(|p| p.ctx.restore.as_ref())
        .map(|m| m.sinks.get(&name).cloned().ok_or(m.id));
    let mut lines_written = 0u64;
    if is_writer {
        let opened: Result<Box<dyn LineSink>, String> = match (&kind, restored) {
            (_, Some(Err(ckpt))) => {
                Err(format!("checkpoint {ckpt} has no position for sink {name}"))
            }
            (SinkKind::File { path }, Some(Ok(pos))) => {
                lines_written = pos.lines;
                FileSink::open_at(path, pos.bytes)
                    .map(|s| Box::new(s) as Box<dyn LineSink>)
                    .map_err(|e| format!("sink {name}: {e}"))
            }
            (SinkKind::File { path }, None) => FileSink::create(path)
                .map(|s| Box::new(s) as Box<dyn LineSink>)
                .map_err(|e| format!("sink {name}: {e}")),
            (SinkKind::Stdout, _) => Ok(Box::new(StdoutSink::new())),
            (SinkKind::Kafka { config }, restored) => {
                let stats = counters_.0.kafka_stats(&name);
                let live = live.clone();
                let failed = Arc::clone(&failure);
                let cancel: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || {
                    failed.is_set() || live.as_ref().is_some_and(|l| l.is_stopping())
                });
                let resumed = restored.and_then(Result::ok);
                let opened = match resumed
                    .as_ref()
                    .and_then(|p| p.kafka.as_ref().map(|k| (p, k)))
                {
                    Some((pos, kafka)) => {
                        lines_written = pos.lines;
                        KafkaWriter::resume(config, kafka, pos.lines, &stats, cancel)
                    }
                    None => KafkaWriter::create(config, &new_run_id(), &stats, cancel),
                };
                opened
                    .map(|s| Box::new(s) as Box<dyn LineSink>)
                    .map_err(|e| format!("sink {name}: {e}"))
            }
            (SinkKind::Projection { .. }, restored) => {
                lines_written = restored.and_then(Result::ok).map_or(0, |p| p.lines);
                let view = view.clone().ok_or_else(|| format!("sink {name}: no view"));
                view.and_then(|v| {
                    let cf = crate::live::projection_table(&name);
                    let stored = part.as_ref().and_then(|p| p.ctx.restored.get(&cf));
                    let entries = stored.into_iter().flatten();
                    v.restore(entries.map(|(k, v)| (k.as_slice(), v.as_slice())))
                        .map_err(|e| format!("sink {name}: restoring {cf}: {e}"))?;
                    Ok(Box::new(ProjectionWriter {
                        view: v,
                        metrics: Arc::clone(&counters_.0),
                    }) as Box<dyn LineSink>)
                })
            }
        };
        writer = opened.map_err(|e| fail(&failure, e)).ok();
    }
    let mut stash: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut flushed = false;
    lines.sink(
        Exchange::new(|_: &String| 0),
        &format!("Sink({name})"),
        move |(input, frontier)| {
            input.for_each(|cap, data| {
                if let Some(time) = cap.least() {
                    stash.entry(*time).or_default().append(data);
                }
            });
            let mut save = |t: u64, writer: &mut Option<Box<dyn LineSink>>, lines: u64| {
                let (Some(p), Some(w)) = (part.as_mut(), writer.as_mut()) else {
                    return;
                };
                let Some(due) = p.cadence.due(t) else {
                    return;
                };
                let started = Instant::now();
                // A projection writes its changed keys; the coordinator syncs the store and
                // fsyncs files before committing.
                let saved = match &view {
                    Some(v) => v.snapshot().and_then(|ops| {
                        let cf = crate::live::projection_table(&name);
                        let ops: Vec<(String, DeltaOp)> =
                            ops.into_iter().map(|op| (cf.clone(), op)).collect();
                        p.ctx
                            .store
                            .write_delta(due.0, &p.id.to_string(), &ops)
                            .map_err(|e| e.to_string())
                    }),
                    None => Ok(0),
                };
                let saved = saved
                    .and_then(|_| w.sync(false).map_err(|e| e.to_string()))
                    .and_then(|bytes| {
                        let pos = SinkPosition {
                            bytes,
                            lines,
                            kafka: w.kafka_position(),
                        };
                        p.save_position(due, PartInfo::Sink(pos), started)
                    });
                if let Err(e) = saved {
                    fail(&failure, format!("sink {name}: {e}"));
                    *writer = None;
                }
            };
            let mut written = 0;
            while let Some(entry) = stash.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                save(*entry.key(), &mut writer, lines_written);
                let mut batch = entry.remove();
                batch.sort_unstable();
                written += batch.len() as u64;
                lines_written += batch.len() as u64;
                if let Some(w) = writer.as_mut() {
                    for line in &batch {
                        if let Err(e) = w.write_line(line) {
                            fail(&failure, format!("sink {name}: {e}"));
                            writer = None;
                            break;
                        }
                    }
                }
            }
            save(frontier_time(frontier), &mut writer, lines_written);
            if let Some(c) = counters(&counters_) {
                c.add_in(written);
            }
            if frontier.frontier().is_empty() && !flushed {
                flushed = true;
                if let Some(w) = writer.as_mut() {
                    if let Err(e) = w.flush() {
                        fail(&failure, format!("sink {name}: {e}"));
                    }
                }
            }
        },
    );
}

/// A fresh id for a Kafka sink's run: what its records' `tickflow-run` header carries.
fn new_run_id() -> String {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let salt = std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
    format!("{:016x}", salt)
}

/// A projection sink's writer: each line becomes the latest record of its key.
struct ProjectionWriter {
    view: Arc<ProjectionView>,
    metrics: Arc<Metrics>,
}

impl LineSink for ProjectionWriter {
    fn write_line(&mut self, line: &str) -> Result<(), tickflow_connectors::ConnectorError> {
        if !self.view.upsert(line) {
            self.metrics.unkeyed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), tickflow_connectors::ConnectorError> {
        Ok(())
    }

    fn sync(&mut self, _fsync: bool) -> Result<u64, tickflow_connectors::ConnectorError> {
        Ok(0)
    }
}
