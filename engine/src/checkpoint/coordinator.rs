//! The coordinator: collects part reports and commits checkpoints every part has passed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{final_id, DataDir, Epochs, Manifest, PartId, PartInfo, Report, MANIFEST_FORMAT};
use crate::EngineError;

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
    epochs: Arc<Epochs>,
}

impl Coordinator {
    /// A coordinator waiting for `expected` parts; `restored` is the checkpoint resumed from;
    /// `sink_files` are fsync'd before every commit; it arms checkpoints in `epochs`.
    pub fn new(
        dir: Arc<DataDir>,
        expected: Vec<PartId>,
        (sink_files, workers): (Vec<PathBuf>, usize),
        restored: u64,
        epochs: Arc<Epochs>,
    ) -> Self {
        Coordinator {
            epochs,
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

    /// Handles reports until every sender is gone: arms a checkpoint whenever none is
    /// pending and `min_pause` has passed since the last one was armed, and commits each once
    /// every part has saved it.
    pub fn run(
        mut self,
        reports: crossbeam_channel::Receiver<Report>,
    ) -> Result<CheckpointStats, EngineError> {
        let mut result = Ok(());
        let pause = Duration::from_millis(self.dir.config.min_pause_ms);
        let mut last_arm: Option<Instant> = None;
        loop {
            let pending = self.epochs.armed() > self.committed;
            let due = last_arm.is_none_or(|t| t.elapsed() >= pause);
            if result.is_ok() && !pending && due && self.epochs.arm(self.committed).is_some() {
                last_arm = Some(Instant::now());
            }
            let wait = match last_arm {
                Some(t) if !pending => pause.saturating_sub(t.elapsed()),
                _ => Duration::from_millis(100),
            }
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
            let (first, open) = match reports.recv_timeout(wait) {
                Ok(r) => (Some(r), true),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => (None, true),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => (None, false),
            };
            for report in first.into_iter().chain(reports.try_iter()) {
                self.stats.save_ms_total += report.write_us as f64 / 1000.0;
                self.reports
                    .entry(report.part.clone())
                    .or_default()
                    .push((report, Instant::now()));
            }
            if result.is_ok() {
                result = self.try_commit();
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
