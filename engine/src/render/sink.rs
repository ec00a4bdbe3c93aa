//! The sink driver: gathers rendered lines on the last worker ([`sink_worker`]) and writes each time's lines, sorted,
//! once the frontier passes it. Before writing the first line at or after a checkpoint time it
//! asks the writer for its durable position and saves it (the coordinator fsyncs files and
//! syncs the store before committing); on restore the sink's [`Sink::open`] continues from the
//! restored position (truncating a file, skipping a Kafka topic's already-written records).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use tickflow_state::DeltaOp;

use crate::checkpoint::{table_key, PartId, PartInfo, SinkPosition};
use crate::component::{Sink, SinkWriter};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::EngineError;

use super::part::{Durability, Part, RestoredTable};
use super::stash::frontier_time;
use super::{counters, fail, Failure, S};

/// The worker that writes every sink: the last one, so that with several workers the sinks'
/// writing does not share a core with a file source's reading (file sources read on the first
/// workers).
pub fn sink_worker(peers: usize) -> usize {
    peers.saturating_sub(1)
}

/// What a sink's writer is opened and checkpointed with (on [`sink_worker`] only).
pub struct SinkCx {
    /// The sink's name.
    pub name: String,
    /// The run's metrics.
    pub metrics: Arc<Metrics>,
    /// The run's failure slot.
    pub failure: Failure,
    /// Pause, stop and projection views.
    pub live: Option<Arc<Live>>,
    /// Checkpointing, when the run has a data directory (the writing worker's copy).
    pub durable: Option<Durability>,
    /// Its tables hold another version's state it does not continue: cleared at the first
    /// write (see [`Durability::wipe`]).
    pub wipe: std::sync::atomic::AtomicBool,
}

impl SinkCx {
    /// The stored entries of the sink's table `table` as of the checkpoint being restored.
    pub fn restored_table(&self, table: &str) -> Option<&RestoredTable> {
        let d = self.durable.as_ref()?;
        d.restored.get(&table_key(&self.name, table))
    }

    /// Writes changes to the sink's table `table` for checkpoint `label`.
    pub fn write_table(
        &self,
        label: u64,
        table: &str,
        ops: Vec<DeltaOp>,
    ) -> Result<u64, EngineError> {
        let Some(d) = self.durable.as_ref() else {
            return Ok(0);
        };
        let cf = table_key(&self.name, table);
        let mut ops: Vec<(String, DeltaOp)> = ops.into_iter().map(|op| (cf.clone(), op)).collect();
        if self.wipe.swap(false, std::sync::atomic::Ordering::Relaxed) {
            ops.push((cf.clone(), super::part::clear_all()));
        }
        let part = PartId::Sink(self.name.clone()).to_string();
        d.store
            .write_delta(label, &part, &ops)
            .map_err(|e| EngineError::Checkpoint(format!("{part}: {e}")))
    }

    /// Whether the run is failing or stopping (long waits end then).
    pub fn cancel(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let failure = Arc::clone(&self.failure);
        let live = self.live.clone();
        Arc::new(move || failure.is_set() || live.as_ref().is_some_and(|l| l.is_stopping()))
    }
}

/// A writer being opened on a thread of its own, so that every sink of a run opens at once
/// (a Kafka sink's restore reads its topic back, which takes a while). Dropping it waits for
/// the thread: nothing of the run (its store) outlives the run.
struct Opening(Option<Pending>);

/// What an [`Opening`] waits for.
enum Pending {
    /// The thread opening the writer.
    Thread(std::thread::JoinHandle<Result<Box<dyn SinkWriter>, EngineError>>),
    /// The thread could not be started.
    Failed(EngineError),
}

impl Opening {
    /// Opens with `open` on a thread named after sink `name`.
    fn start(
        name: &str,
        open: impl FnOnce() -> Result<Box<dyn SinkWriter>, EngineError> + Send + 'static,
    ) -> Opening {
        let pending = match std::thread::Builder::new()
            .name(format!("open-{name}"))
            .spawn(open)
        {
            Ok(handle) => Pending::Thread(handle),
            Err(e) => Pending::Failed(EngineError::Dataflow(format!(
                "cannot start the thread that opens it: {e}"
            ))),
        };
        Opening(Some(pending))
    }

    /// The opened writer, once (waiting for the thread).
    fn take(&mut self) -> Option<Result<Box<dyn SinkWriter>, EngineError>> {
        Some(match self.0.take()? {
            Pending::Failed(e) => Err(e),
            Pending::Thread(handle) => handle.join().unwrap_or_else(|_| {
                Err(EngineError::Dataflow(
                    "the thread opening it panicked".into(),
                ))
            }),
        })
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let _ = self.take();
    }
}

/// A writer dropped on a thread of its own once the input ended and it was flushed: a Kafka
/// producer's drop waits up to 100 ms for its polling thread, and the sinks of a run then drop
/// at once instead of one after another. Dropping the guard waits for the thread.
struct Closing(Option<std::thread::JoinHandle<()>>);

impl Closing {
    /// Drops `writer` on a thread of its own.
    fn start(&mut self, name: &str, writer: Box<dyn SinkWriter>) {
        self.0 = std::thread::Builder::new()
            .name(format!("close-{name}"))
            .spawn(move || drop(writer))
            .ok();
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

/// Drives `sink`'s writer with `lines`; see the module docs.
pub(crate) fn drive(lines: S<'_, String>, sink: Arc<dyn Sink>, cx: SinkCx) {
    let cx = Arc::new(cx);
    let failure = Arc::clone(&cx.failure);
    let writer_worker = sink_worker(lines.scope().peers());
    let is_writer = lines.scope().index() == writer_worker;
    let name = cx.name.clone();
    let counters_ = (Arc::clone(&cx.metrics), cx.metrics.index_of("sink", &name));
    let mut part = cx
        .durable
        .as_ref()
        .map(|d| Part::new(d, PartId::Sink(name.clone())));
    let mut writer: Option<Box<dyn SinkWriter>> = None;
    let mut opening = Opening(None);
    let mut closing = Closing(None);
    let mut lines_written = 0u64;
    if is_writer {
        // A sink the state plan starts afresh (new, or changed) has no position to continue.
        let restored = cx
            .durable
            .as_ref()
            .filter(|d| !d.fresh.contains(&name))
            .and_then(|d| d.restore.as_ref())
            .map(|m| m.sinks.get(&name).cloned().ok_or(m.id));
        match restored {
            Some(Err(ckpt)) => fail(
                &failure,
                format!("sink {name}: checkpoint {ckpt} has no position for it"),
            ),
            Some(Ok(pos)) => {
                lines_written = pos.lines;
                let cx = Arc::clone(&cx);
                opening = Opening::start(&name, move || sink.open(&cx, Some(&pos)));
            }
            None => {
                let cx = Arc::clone(&cx);
                opening = Opening::start(&name, move || sink.open(&cx, None));
            }
        }
    } else {
        part = None;
    }
    let mut stash: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut flushed = false;
    lines.sink(
        Exchange::new(move |_: &String| writer_worker as u64),
        &format!("Sink({name})"),
        move |(input, frontier)| {
            if let Some(opened) = opening.take() {
                let stopping =
                    cx.live.as_ref().is_some_and(|l| l.is_stopping()) && !failure.is_set();
                writer = match opened {
                    Ok(w) => Some(w),
                    // Stopped on purpose while it opened (a Kafka sink waits for its topic):
                    // no failure. Without a writer it saves no position, so no later
                    // checkpoint commits.
                    Err(e) if stopping => {
                        tracing::info!("sink {name}: not opened, the run is stopping ({e})");
                        None
                    }
                    Err(e) => {
                        fail(&failure, format!("sink {name}: {e}"));
                        None
                    }
                };
            }
            input.for_each(|cap, data| {
                if let Some(time) = cap.least() {
                    stash.entry(*time).or_default().append(data);
                }
            });
            let mut save = |t: u64, writer: &mut Option<Box<dyn SinkWriter>>, lines: u64| {
                let (Some(p), Some(w)) = (part.as_mut(), writer.as_mut()) else {
                    return;
                };
                let Some(due) = p.due(t) else {
                    return;
                };
                let started = Instant::now();
                let saved = w.checkpoint(due.0, &cx).and_then(|writer| {
                    let pos = SinkPosition { lines, writer };
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
                if let Some(mut w) = writer.take() {
                    match w.flush() {
                        Err(e) => fail(&failure, format!("sink {name}: {e}")),
                        Ok(()) => closing.start(&name, w),
                    }
                }
            }
        },
    );
}
