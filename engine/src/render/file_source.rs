//! The file source driver: one worker reads a file-like input (JSON lines, CSV) through a
//! [`RecordReader`], emitting records at the watermark and moving it after each batch.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use timely::dataflow::operators::generic::operator::source;

use tickflow_connectors::{ConnectorError, RecordReader};
use tickflow_operators::event_time::EventTime;
use tickflow_operators::record::{Ordinal, RawLine};

use crate::checkpoint::{PartInfo, SourcePosition};

use super::{fail, FlowControl, SourceCx, BATCH, S};

/// Opens the reader (on the worker that reads the source).
pub type OpenReader = Box<dyn FnOnce() -> Result<Box<dyn RecordReader>, ConnectorError>>;

/// Reads one input on one worker (source `id` on worker `id % peers`), emitting records at the
/// watermark and moving it after each batch. It pauses while the sinks have not completed the
/// batch sent [`super::MAX_BATCHES_IN_FLIGHT`] watermarks ago. With a checkpoint part, it
/// records its position before moving the watermark past a checkpoint time, and resumes from
/// the position of the checkpoint being restored.
pub fn file_source(
    cx: SourceCx<'_>,
    (ooo, event_time): (u64, EventTime),
    open: OpenReader,
) -> S<'_, RawLine> {
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
    let reads_here = id % scope.peers() == scope.index();
    let node_idx = metrics.index_of("source", &name);
    source(scope, &format!("Source({name})"), move |mut cap, info| {
        let activator = scope.activator_for(info.address);
        let mut state = None;
        if reads_here {
            let restored = part.as_ref().and_then(|p| p.restored_source(&name));
            let opened = open();
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
                    if let Some(ts) = event_time.ms(&text) {
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
                    if let Err(e) = p.save_position(due, PartInfo::Source(pos), Instant::now()) {
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
    })
}
