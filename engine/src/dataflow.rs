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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Concatenate, InputCapability};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use timely::progress::frontier::MutableAntichain;

use tickflow_connectors::file::{FileSink, LineReader, StdoutSink};
use tickflow_connectors::LineSink;
use tickflow_operators::normalize::Deduper;
use tickflow_operators::record::{
    Bar, DeadLetter, EnrichedTick, Ordinal, RawLine, Tick, ToJsonLine,
};
use tickflow_operators::tick::event_time_ms;
use tickflow_operators::window::WindowState;

use crate::metrics::{Metrics, NodeMetrics};
use crate::plan::{OperatorKind, OutputRef, Plan, SinkKind, SourceKind};

/// Lines a source reads before it moves its watermark.
pub const BATCH: usize = 1_000;

/// Batches (with distinct watermarks) a source may have in flight before the sinks have
/// completed them: the flow control that keeps memory flat when one worker reads for all.
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// The first error a worker hit; the run reports it when the dataflow ends.
pub type Failure = Arc<Mutex<Option<String>>>;

fn fail(failure: &Failure, message: String) {
    if let Ok(mut slot) = failure.lock() {
        slot.get_or_insert(message);
    }
}

/// A stable hash, the same in every worker and process.
fn route<H: Hash + ?Sized>(value: &H) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

type S<'s, D> = StreamVec<'s, u64, D>;

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

/// Builds the whole plan into `scope`.
pub fn build(scope: Scope<'_, u64>, plan: &Plan, metrics: &Arc<Metrics>, failure: &Failure) {
    let mut streams = Streams {
        scope,
        map: HashMap::new(),
    };
    // Completion at the sinks, which sources use to hold back.
    let probe = ProbeHandle::new();
    for (id, src) in plan.sources.iter().enumerate() {
        let stream = file_source(scope, plan, id, metrics, failure, probe.clone());
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
                let ticks = dedup(ticks, *dedup_retention_ms, counters);
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
                let (bars, late) = window(input, WindowState::new(*spec), counters);
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
            write_sink(
                lines,
                sink.kind.clone(),
                &sink.name,
                node("sink", &sink.name),
                failure,
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
/// completed the batch sent [`MAX_BATCHES_IN_FLIGHT`] watermarks ago.
fn file_source<'s>(
    scope: Scope<'s, u64>,
    plan: &Plan,
    id: usize,
    metrics: &Arc<Metrics>,
    failure: &Failure,
    probe: ProbeHandle<u64>,
) -> S<'s, RawLine> {
    let src = &plan.sources[id];
    let SourceKind::File { path } = &src.kind;
    let reads_here = id % scope.peers() == scope.index();
    let path = path.clone();
    let ooo = src.max_out_of_orderness_ms;
    let metrics = Arc::clone(metrics);
    let failure = Arc::clone(failure);
    let node_idx = metrics.index_of("source", &src.name);
    source(scope, &format!("Source({})", src.name), move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut state = None;
        if reads_here {
            match LineReader::open(&path) {
                Ok(reader) => {
                    metrics
                        .bytes_total
                        .fetch_add(reader.len(), Ordering::Relaxed);
                    activator.activate();
                    state = Some((reader, cap, None::<u64>));
                }
                Err(e) => fail(&failure, e.to_string()),
            }
        }
        let mut batch = Vec::with_capacity(BATCH);
        // Watermarks of recent batches, oldest first.
        let mut in_flight: std::collections::VecDeque<u64> = Default::default();
        move |output| {
            let Some((reader, cap, max_ts)) = state.as_mut() else {
                return;
            };
            while in_flight.front().is_some_and(|t| !probe.less_equal(t)) {
                in_flight.pop_front();
            }
            if in_flight.len() >= MAX_BATCHES_IN_FLIGHT
                && in_flight.front().is_some_and(|t| t < cap.time())
            {
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
            if let Some(ts) = *max_ts {
                let watermark = ts.saturating_sub(ooo);
                if watermark > *cap.time() {
                    in_flight.push_back(*cap.time());
                    cap.downgrade(&watermark);
                }
            }
            if more {
                activator.activate();
            } else {
                state = None;
            }
        }
    })
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
fn dedup<'s>(input: S<'s, Tick>, retention_ms: u64, counters_: Counters) -> S<'s, Tick> {
    let mut deduper = Deduper::new(retention_ms);
    let mut stash = TimeStash::new();
    input.unary_frontier(
        Exchange::new(|t: &Tick| route(&t.venue)),
        "Dedup",
        move |_cap, _info| {
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| stash.stash(&cap, 1, data));
                let mut kept = 0;
                let mut dups = 0;
                while let Some((time, caps, mut ticks)) = stash.pop_ready(frontier) {
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
) -> (S<'s, Bar>, S<'s, EnrichedTick>) {
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
    builder.build(move |_caps| {
        let mut stash = TimeStash::new();
        // Capabilities at the end of every window not yet emitted.
        let mut end_caps: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
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

            while let Some((time, caps, mut ticks)) = stash.pop_ready(frontier) {
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
            let upto = frontier.frontier().first().copied().unwrap_or(u64::MAX);
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
fn write_sink(
    lines: S<'_, String>,
    kind: SinkKind,
    name: &str,
    counters_: Counters,
    failure: &Failure,
) {
    let failure = Arc::clone(failure);
    let is_writer = lines.scope().index() == 0;
    let name = name.to_string();
    let mut writer: Option<Box<dyn LineSink>> = None;
    if is_writer {
        writer = match &kind {
            SinkKind::File { path } => match FileSink::create(path) {
                Ok(s) => Some(Box::new(s)),
                Err(e) => {
                    fail(&failure, format!("sink {name}: {e}"));
                    None
                }
            },
            SinkKind::Stdout => Some(Box::new(StdoutSink::new())),
        };
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
            let mut written = 0;
            while let Some(entry) = stash.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let mut batch = entry.remove();
                batch.sort_unstable();
                written += batch.len() as u64;
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
