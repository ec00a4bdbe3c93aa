//! The Kafka source operator.
//!
//! Every worker reads its share of the topic's partitions (the `i`-th partition, in id order,
//! on worker `i % workers`), so the work is spread however many partitions and workers there
//! are. Each partition has its own watermark (`newest event time seen - max_out_of_orderness`);
//! a worker holds its capability at the least watermark of its partitions and emits what it
//! reads there, so the dataflow's frontier is the least watermark over every partition. A
//! partition read to its end with nothing new for `idle_timeout` stops holding the watermark
//! back (one with records waiting never does); a worker whose partitions are all idle follows
//! the others, or, when they are all idle too, goes as far as its partitions got.
//!
//! Checkpoints: before a worker moves its capability past a checkpoint time it saves the next
//! offset of each of its partitions (with their newest event times); a restore seeks there.
//! Once a checkpoint is committed, those offsets are also committed to the consumer group.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::operator::source;

use tickflow_connectors::kafka::{self, KafkaReader, KafkaRecord, KafkaSourceConfig};
use tickflow_operators::event_time::EventTime;
use tickflow_operators::record::{Ordinal, RawLine};

use crate::checkpoint::{PartInfo, PartitionPosition, SourcePosition};
use crate::metrics::Metrics;
use crate::EngineError;

use super::{fail, FlowControl, SourceCx, BATCH, S};

/// A Kafka source's validated settings.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Brokers, topic, start, options.
    pub config: KafkaSourceConfig,
    /// The consumer group offsets are committed to.
    pub group_id: String,
    /// A partition silent this long stops holding the watermark (0: never).
    pub idle_timeout_ms: u64,
    /// How far the watermark trails the newest event time.
    pub max_out_of_orderness_ms: u64,
    /// Where a record's event time is.
    pub event_time: EventTime,
}

/// How long a worker with nothing to read waits before polling again.
const POLL_PAUSE: Duration = Duration::from_millis(1);

/// One partition a worker reads.
struct PartitionState {
    id: i32,
    /// The next offset to read, once known.
    offset: Option<i64>,
    max_ts: Option<u64>,
    /// Since when the partition has been read to its end with nothing new: it is idle once
    /// this lasts `idle_timeout`. A partition with records waiting is never idle, however
    /// slowly they arrive (start-up, a restore's read-back, a busy machine).
    at_end_since: Option<Instant>,
    /// Bounded runs: stop once the end of the partition is reached.
    stop_at_end: bool,
    /// The end offset the broker reported when this reader first got there.
    end: Option<i64>,
}

impl PartitionState {
    fn done(&self) -> bool {
        self.stop_at_end
            && self
                .end
                .is_some_and(|end| self.offset.map_or(end == 0, |o| o >= end))
    }

    fn watermark(&self, ooo: u64) -> Option<u64> {
        self.max_ts.map(|t| t.saturating_sub(ooo))
    }
}

/// What a worker's source holds while it runs.
struct Reading {
    reader: KafkaReader,
    partitions: Vec<PartitionState>,
    cap: timely::dataflow::operators::Capability<u64>,
    /// Offsets saved for checkpoints not yet committed to the group: `(checkpoint, offsets)`.
    saved: VecDeque<(u64, Vec<(i32, i64)>)>,
}

impl Reading {
    /// `(partition, next offset)` of every partition read from.
    fn offsets(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter_map(|p| p.offset.map(|o| (p.id, o)))
            .collect()
    }

    fn position(&self, watermark: u64) -> SourcePosition {
        SourcePosition {
            offset: 0,
            line: 0,
            max_ts_ms: self.partitions.iter().filter_map(|p| p.max_ts).max(),
            watermark_ms: watermark,
            partitions: self
                .partitions
                .iter()
                .filter_map(|p| {
                    p.offset.map(|offset| {
                        (
                            p.id,
                            PartitionPosition {
                                offset,
                                max_ts_ms: p.max_ts,
                            },
                        )
                    })
                })
                .collect(),
        }
    }
}

/// Opens this worker's partitions: from the restored checkpoint's offsets where it has them,
/// else from the configured start.
fn open(
    (name, settings): (&str, &KafkaSettings),
    (index, peers): (usize, usize),
    restored: Option<&SourcePosition>,
    metrics: &Metrics,
    cancel: &dyn Fn() -> bool,
) -> Result<Option<(KafkaReader, Vec<PartitionState>)>, EngineError> {
    let KafkaSettings {
        config, group_id, ..
    } = settings;
    let all = kafka::partitions(&config.brokers, &config.topic, &config.options, cancel)?;
    let mine: Vec<i32> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % peers == index)
        .map(|(_, p)| *p)
        .collect();
    if mine.is_empty() {
        return Ok(None);
    }
    let stats = metrics.kafka_stats(name);
    let partitions: Vec<PartitionState> = mine
        .iter()
        .map(|p| {
            let pos = restored.and_then(|r| r.partitions.get(p));
            PartitionState {
                id: *p,
                offset: pos.map(|pos| pos.offset),
                max_ts: pos.and_then(|pos| pos.max_ts_ms),
                at_end_since: None,
                stop_at_end: config.stop_at_end,
                end: None,
            }
        })
        .collect();
    let assignment: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (p.id, p.offset)).collect();
    let reader = KafkaReader::open(config, group_id, &assignment, &stats)?;
    Ok(Some((reader, partitions)))
}

/// Reads this worker's partitions of Kafka source `id`; see the module docs.
pub fn kafka_source(cx: SourceCx<'_>, settings: KafkaSettings) -> S<'_, RawLine> {
    let SourceCx {
        scope,
        id,
        name,
        metrics,
        failure,
        probe,
        mut part,
        live,
    } = cx;
    let ooo = settings.max_out_of_orderness_ms;
    let idle = Duration::from_millis(settings.idle_timeout_ms);
    let node_idx = metrics.index_of("source", &name);
    let (index, peers) = (scope.index(), scope.peers());
    source(scope, &format!("Source({name})"), move |cap, info| {
        let activator = scope.activator_for(info.address);
        let restored = part.as_ref().and_then(|p| p.restored_source(&name));
        let mut state = None;
        match restored {
            Some(Err(ckpt)) => fail(
                &failure,
                format!("checkpoint {ckpt} has no position for source {name}"),
            ),
            Some(Ok(pos)) if pos.watermark_ms == u64::MAX => {}
            restored => {
                let restored = restored.and_then(Result::ok);
                let cancel = || failure.is_set() || live.as_ref().is_some_and(|l| l.is_stopping());
                let opened = open(
                    (&name, &settings),
                    (index, peers),
                    restored.as_ref(),
                    &metrics,
                    &cancel,
                );
                match opened {
                    Err(e) => fail(&failure, format!("source {name}: {e}")),
                    // More workers than partitions: nothing to read here, ever.
                    Ok(None) => {
                        if let Some(p) = part.as_mut() {
                            let pos = SourcePosition {
                                offset: 0,
                                line: 0,
                                max_ts_ms: None,
                                watermark_ms: u64::MAX,
                                partitions: BTreeMap::new(),
                            };
                            if let Some(due) = p.cadence.due(u64::MAX) {
                                p.report(due, PartInfo::Source(pos), Instant::now());
                            }
                        }
                    }
                    Ok(Some((reader, partitions))) => {
                        let mut reading = Reading {
                            reader,
                            partitions,
                            cap,
                            saved: VecDeque::new(),
                        };
                        if let Some(pos) = &restored {
                            reading.cap.downgrade(&pos.watermark_ms);
                            if let Some(p) = part.as_mut() {
                                if let Some(due) = p.cadence.due(pos.watermark_ms) {
                                    let mine = reading.position(pos.watermark_ms);
                                    p.report(due, PartInfo::Source(mine), Instant::now());
                                }
                            }
                        }
                        activator.activate();
                        state = Some(reading);
                    }
                }
            }
        }
        let mut batch: Vec<KafkaRecord> = Vec::with_capacity(BATCH);
        let mut at_end: Vec<(i32, Option<i64>)> = Vec::new();
        let mut flow = FlowControl::new(probe);
        // What this worker last published in `active_watermarks`.
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
            r.reader
                .poll_batch(BATCH, Duration::ZERO, &mut batch, &mut at_end);
            let now = Instant::now();
            let mut bytes = 0u64;
            let got = batch.len() as u64;
            if !batch.is_empty() {
                let mut session = output.session(&r.cap);
                for rec in batch.drain(..) {
                    bytes += rec.text.len() as u64;
                    if let Some(p) = r.partitions.iter_mut().find(|p| p.id == rec.partition) {
                        p.offset = Some(rec.offset + 1);
                        p.at_end_since = None;
                        if let Some(ts) = settings.event_time.ms(&rec.text) {
                            p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
                        }
                    }
                    session.give(RawLine {
                        ordinal: Ordinal::kafka(id as u32, rec.partition, rec.offset),
                        text: rec.text,
                    });
                }
            }
            // After this batch's records: the end notice follows the records before it.
            for (id, end) in &at_end {
                let Some(p) = r.partitions.iter_mut().find(|p| p.id == *id) else {
                    continue;
                };
                p.at_end_since.get_or_insert(now);
                if p.end.is_none() {
                    // Without a position the reader read nothing: where it started is the end.
                    let end = end.or(p.offset).unwrap_or(0);
                    tracing::debug!("source {name}: partition {id} ends at offset {end}");
                    p.end = Some(end);
                }
            }
            metrics.bytes_read.fetch_add(bytes, Ordering::Relaxed);
            let node = node_idx.and_then(|i| metrics.nodes.get(i));

            // The worker's watermark: the least over partitions that are neither finished
            // nor idle (unknown while one of them has no event time yet).
            let live_parts: Vec<&PartitionState> =
                r.partitions.iter().filter(|p| !p.done()).collect();
            let active: Vec<&PartitionState> = live_parts
                .iter()
                .copied()
                .filter(|p| {
                    idle.is_zero()
                        || p.at_end_since
                            .is_none_or(|since| now.duration_since(since) < idle)
                })
                .collect();
            let own = if active.iter().all(|p| p.max_ts.is_some()) {
                active.iter().filter_map(|p| p.watermark(ooo)).min()
            } else {
                None
            };
            // What this worker offers the others: its watermark, or, when every partition here
            // is idle, the greatest watermark its partitions reached (nothing here is pending).
            let offer = if active.is_empty() {
                live_parts.iter().filter_map(|p| p.watermark(ooo)).max()
            } else {
                own
            };
            let target = if live_parts.is_empty() {
                Some(u64::MAX)
            } else if active.is_empty() {
                // Every partition here is idle: follow the other workers' offers, or, when they
                // have none, go as far as these partitions got.
                let shared = metrics
                    .active_watermarks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                shared
                    .iter()
                    .filter(|((s, w), _)| *s == name && *w != index)
                    .filter_map(|(_, wm)| *wm)
                    .min()
                    .or(offer)
            } else {
                own
            };
            // Shared with the other workers only when it changes (a lock and a key per change).
            if published != Some(offer) {
                published = Some(offer);
                metrics
                    .active_watermarks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((name.clone(), index), offer);
            }
            let next = target.filter(|w| w > r.cap.time());
            if let (Some(next), Some(p)) = (next, part.as_mut()) {
                if let Some(due) = p.cadence.due(next) {
                    let pos = r.position(next);
                    match p.save_position(due, PartInfo::Source(pos), Instant::now()) {
                        Ok(()) => r.saved.push_back((due.1, r.offsets())),
                        Err(e) => fail(&failure, e),
                    }
                }
            }
            // Commit to the consumer group the offsets of the newest committed checkpoint.
            let committed = metrics.last_checkpoint.load(Ordering::Relaxed);
            let mut newest = None;
            while r.saved.front().is_some_and(|(t, _)| *t <= committed) {
                newest = r.saved.pop_front();
            }
            if let Some((_, offsets)) = newest {
                r.reader.commit(&offsets);
            }
            if let Some(node) = node {
                node.add_out(0, got);
                if let Some(w) = next {
                    node.watermark_ms.store(w, Ordering::Relaxed);
                }
            }
            match next {
                Some(u64::MAX) => {
                    // Bounded and finished: the group gets the final offsets now.
                    r.reader.commit(&r.offsets());
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
