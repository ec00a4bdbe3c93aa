//! Checkpoint parts: what a source, sink or stateful operator instance saves and reports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tickflow_state::{Delta, DeltaOp, Durable, Store};

use crate::checkpoint::{
    table_key, Cadence, Epochs, Manifest, OperatorCheckpoint, PartId, PartInfo, Report,
    SourcePosition,
};
use crate::fault;
use crate::EngineError;

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
    /// The state was restored from another cluster shape: the store holds none of it, so
    /// every part's first snapshot writes all it holds.
    pub rewrite: bool,
    /// Nodes whose stored tables hold another version's state they do not continue: their
    /// first snapshot clears them first.
    pub wipe: Arc<std::collections::BTreeSet<String>>,
    /// Sinks the state plan starts afresh (new or changed): no position to continue.
    pub fresh: Arc<std::collections::BTreeSet<String>>,
    /// Where parts report their saves.
    pub reports: crossbeam_channel::Sender<Report>,
    /// Which checkpoint is being taken.
    pub epochs: Arc<Epochs>,
    /// Longest time a worker spent taking its state back, µs.
    pub restore_us: Arc<AtomicU64>,
    /// In a cluster, the checkpoint coordinators' line between the processes.
    pub relay: Option<super::relay::RelayEnds>,
}

impl Durability {
    fn restored_at(&self) -> u64 {
        self.restore.as_ref().map_or(0, |m| m.id)
    }
}

/// One part's side of checkpointing: its cadence and where it reports.
pub struct Part {
    pub(crate) ctx: Durability,
    id: PartId,
    pub(crate) cadence: Cadence,
}

impl Part {
    pub fn new(ctx: &Durability, id: PartId) -> Self {
        Part {
            cadence: Cadence::new(ctx.interval_ms, ctx.restored_at()),
            ctx: ctx.clone(),
            id,
        }
    }

    /// The checkpoint this part passes on reaching time `t`, if any (see [`Cadence::due`]).
    pub fn due(&self, t: u64) -> Option<(u64, u64)> {
        self.cadence.due(t, self.ctx.epochs.armed())
    }

    /// Like [`Part::due`] for a source about to move its capability to `t`: the move is
    /// recorded first, so no checkpoint is armed behind it.
    pub fn source_due(&self, t: u64) -> Option<(u64, u64)> {
        let armed = self.ctx.epochs.source_moves(&self.id, t);
        self.cadence.due(t, armed)
    }

    /// A source's position in the checkpoint being restored: `None` without one, `Err(id)` if
    /// checkpoint `id` has none for `name`.
    pub fn restored_source(&self, name: &str) -> Option<Result<SourcePosition, u64>> {
        let m = self.ctx.restore.as_ref()?;
        // A source the state plan starts afresh reads from its beginning.
        if self.ctx.fresh.contains(name) {
            return None;
        }
        Some(m.sources.get(name).cloned().ok_or(m.id))
    }

    pub fn report(&mut self, (label, through): (u64, u64), info: PartInfo, started: Instant) {
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
    pub fn save_position(
        &mut self,
        due: (u64, u64),
        info: PartInfo,
        started: Instant,
    ) -> Result<(), EngineError> {
        let bytes = serde_json::to_vec(&info).map_err(|e| EngineError::Encode {
            what: self.id.to_string(),
            source: e,
        })?;
        self.ctx
            .store
            .put_part(due.0, &self.id.to_string(), &bytes)
            .map_err(|source| EngineError::State {
                part: self.id.to_string(),
                source,
            })?;
        if matches!(info, PartInfo::Source(_)) {
            fault::point("after-positions-write");
        }
        self.report(due, info, started);
        Ok(())
    }
}

/// A stateful operator instance's part: snapshots its state into the store.
pub struct OperatorPart {
    part: Part,
    /// `(table, column family)`.
    tables: Vec<(&'static str, String)>,
    /// Its tables hold another version's state: cleared by the first snapshot.
    wipe: bool,
}

/// The range delete that clears a table before a part's first snapshot writes it afresh:
/// every stored key sorts below it (keys start with a big-endian time, or are UTF-8, which
/// never holds the byte `0xFF`).
pub fn clear_all() -> DeltaOp {
    DeltaOp::DeleteBelow {
        key: vec![0xFF; 16],
    }
}

impl OperatorPart {
    pub fn new(
        ctx: &Durability,
        op: &str,
        worker: usize,
        tables: &[tickflow_state::TableDescriptor],
    ) -> Self {
        OperatorPart {
            wipe: ctx.wipe.contains(op),
            part: Part::new(ctx, PartId::Operator(op.to_string(), worker)),
            tables: tables
                .iter()
                .map(|t| (t.name, table_key(op, t.name)))
                .collect(),
        }
    }

    /// Takes this instance's share of the stored state back (entries whose routing key this
    /// worker owns under the operator's exchange).
    pub fn restore(
        &self,
        state: &mut dyn Durable,
        index: usize,
        peers: usize,
    ) -> Result<(), EngineError> {
        let Some(manifest) = self.part.ctx.restore.as_ref() else {
            return Ok(());
        };
        let started = Instant::now();
        let owns = |hash: u64| (hash % peers as u64) as usize == index;
        for (table, cf) in &self.tables {
            for (k, v) in self.part.ctx.restored.get(cf).into_iter().flatten() {
                state
                    .restore_entry(table, k, v, &owns)
                    .map_err(|source| EngineError::State {
                        part: format!("restoring {cf}"),
                        source,
                    })?;
            }
        }
        state.finish_restore(manifest.id);
        if self.part.ctx.rewrite {
            state.rewrite_all();
        }
        self.part
            .ctx
            .restore_us
            .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The checkpoint this part passes on reaching time `t`, if any (see [`Part::due`]).
    pub fn due(&self, t: u64) -> Option<(u64, u64)> {
        self.part.due(t)
    }

    /// Saves the state if reaching time `t` (all input before `t` applied, nothing at or after
    /// it) passes a checkpoint.
    pub fn save(&mut self, t: u64, state: &mut dyn Durable) -> Result<(), EngineError> {
        let Some(due) = self.part.due(t) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut ops = Vec::new();
        state
            .snapshot(due.0, &mut ops)
            .map_err(|source| EngineError::State {
                part: self.part.id.to_string(),
                source,
            })?;
        // Encoded op by op, each dropped once encoded: the snapshot is held once, as bytes.
        let mut delta = Delta::default();
        for (table, op) in ops {
            if let Some((_, cf)) = self.tables.iter().find(|(t, _)| *t == table) {
                delta.push(cf, &op);
            }
        }
        if std::mem::take(&mut self.wipe) {
            // Range deletes apply before the puts of the same snapshot.
            for (_, cf) in &self.tables {
                delta.push(cf, &clear_all());
            }
        }
        fault::point("before-state-write");
        let bytes_written = if delta.is_empty() {
            0
        } else {
            self.part
                .ctx
                .store
                .write_encoded(due.0, &self.part.id.to_string(), &delta)
                .map_err(|source| EngineError::State {
                    part: self.part.id.to_string(),
                    source,
                })?
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
