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

/// What the coordinators of a cluster's processes tell each other (through
/// [`crate::render::relay`]). Process 0 chooses checkpoints; each process writes its own
/// marker; a checkpoint is committed once every process has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ctrl {
    /// Process 0: take checkpoint `.0`.
    Arm(u64),
    /// A process: a source here has already passed `at` (it is at `furthest`).
    Missed {
        /// The checkpoint.
        at: u64,
        /// Where the furthest source here is.
        furthest: u64,
    },
    /// A process: my marker for this checkpoint is written.
    Durable(u64),
    /// Process 0: every process has written its marker for this checkpoint.
    Committed(u64),
}

/// A coordinator's line to the others of its cluster.
pub struct Link {
    /// This process.
    pub process: usize,
    /// How many there are.
    pub processes: usize,
    /// To the relay, which sends to every other process: `(from, message)`.
    pub send: crossbeam_channel::Sender<(usize, Ctrl)>,
    /// Wakes the relay (set once it is built).
    pub wake: Arc<std::sync::Mutex<Option<timely::scheduling::SyncActivator>>>,
    /// From the relay: what the others sent.
    pub recv: crossbeam_channel::Receiver<(usize, Ctrl)>,
}

impl Link {
    fn tell(&self, message: Ctrl) {
        let _ = self.send.send((self.process, message));
        if let Some(wake) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = wake.activate();
        }
    }
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
    /// In a cluster: the line to the other processes, and what process 0 tracks.
    link: Option<Link>,
    /// In a cluster, the newest checkpoint every process has a marker for (this process's
    /// newest marker otherwise): retention never drops it.
    global: u64,
    /// Process 0: the checkpoint armed and not yet committed everywhere, which processes
    /// have written their marker for which checkpoint, and where to arm the next past.
    pending: Option<u64>,
    durable: BTreeMap<u64, std::collections::BTreeSet<usize>>,
    hint: u64,
    /// The old shape's state a reshape restored from: deleted at the first commit complete on
    /// every process (see [`super::layout`]).
    retire: Option<PathBuf>,
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
            link: None,
            global: restored,
            pending: None,
            durable: BTreeMap::new(),
            hint: restored,
            retire: None,
        }
    }

    /// Deletes `from`, the old shape's state a reshape restored from, once a checkpoint is
    /// committed on every process.
    pub fn retiring(mut self, from: Option<PathBuf>) -> Self {
        self.retire = from;
        self
    }

    fn committed_everywhere(&mut self) {
        if let Some(from) = self.retire.take() {
            match super::layout::retire(&from) {
                Ok(()) => tracing::info!(
                    "the new shape committed a checkpoint: deleted the old shape's state {}",
                    from.display()
                ),
                // The next start deletes it (it sees the newer complete checkpoint).
                Err(e) => tracing::warn!("could not delete the old shape's state: {e}"),
            }
        }
    }

    /// Runs as one process's coordinator in a cluster.
    pub fn in_cluster(mut self, link: Link) -> Self {
        self.link = Some(link);
        self
    }

    /// Handles what the other processes sent, and (process 0) arms the next checkpoint.
    fn cluster_step(&mut self, may_arm: bool) {
        let Some(link) = &self.link else {
            return;
        };
        let mut committed_now = None;
        for (from, message) in link.recv.try_iter() {
            match message {
                Ctrl::Arm(at) => {
                    if let Err(furthest) = self.epochs.arm_exact(at) {
                        link.tell(Ctrl::Missed { at, furthest });
                    }
                }
                Ctrl::Missed { at, furthest } if link.process == 0 => {
                    self.hint = self.hint.max(furthest);
                    if self.pending == Some(at) {
                        self.pending = None;
                    }
                }
                Ctrl::Durable(id) if link.process == 0 => {
                    self.durable.entry(id).or_default().insert(from);
                }
                Ctrl::Committed(id) if link.process != 0 => committed_now = Some(id),
                _ => {}
            }
        }
        if link.process == 0 {
            let processes = link.processes;
            if let Some((&id, _)) = self
                .durable
                .iter()
                .rev()
                .find(|(_, who)| who.len() == processes)
            {
                if id > self.global {
                    link.tell(Ctrl::Committed(id));
                    committed_now = Some(id);
                }
                self.durable.retain(|k, _| *k > id);
            }
            if self
                .pending
                .is_some_and(|p| p <= self.global.max(committed_now.unwrap_or(0)))
            {
                self.pending = None;
            }
            if may_arm && self.pending.is_none() {
                // Under the lock sources take here, so never behind a source of this process.
                if let Some(at) = self.epochs.arm(self.hint.max(self.global)) {
                    self.pending = Some(at);
                    link.tell(Ctrl::Arm(at));
                }
            }
        }
        if let Some(id) = committed_now.filter(|id| *id > self.global) {
            self.global = id;
            self.committed_everywhere();
            if let Some(metrics) = &self.metrics {
                metrics.last_checkpoint.store(id, Ordering::Relaxed);
            }
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
            if self.link.is_some() {
                let before = self.pending;
                self.cluster_step(result.is_ok() && due);
                if self.pending.is_some() && self.pending != before {
                    last_arm = Some(Instant::now());
                }
            } else if result.is_ok() && !pending && due && self.epochs.arm(self.committed).is_some()
            {
                last_arm = Some(Instant::now());
            }
            let wait = match last_arm {
                Some(t) if !pending => pause.saturating_sub(t.elapsed()),
                _ => Duration::from_millis(100),
            }
            .clamp(
                Duration::from_millis(1),
                Duration::from_millis(if self.link.is_some() { 10 } else { 100 }),
            );
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
        // The others may still write markers after this process is done: let process 0 commit
        // what it can see (the markers on disk decide what a restore uses anyway).
        if self.link.is_some() {
            self.cluster_step(false);
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
            processes: self.link.as_ref().map_or(1, |l| l.processes),
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
        // In a cluster only a checkpoint every process has a marker for is committed: until
        // then retention keeps the newest such one.
        let protect = if self.link.is_some() { self.global } else { id };
        self.dir.commit(&m, &self.sink_files, protect)?;
        self.committed = id;
        self.stats.committed += 1;
        self.stats.last_id = Some(id);
        self.stats.align_ms.push(m.align_ms);
        if let Some(metrics) = &self.metrics {
            metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
            if self.link.is_none() {
                metrics.last_checkpoint.store(id, Ordering::Relaxed);
            }
            metrics.observe_align(m.align_ms);
        }
        if self.link.is_none() {
            self.committed_everywhere();
        }
        if let Some(link) = &self.link {
            if link.process == 0 {
                self.durable.entry(id).or_default().insert(0);
            } else {
                link.tell(Ctrl::Durable(id));
            }
        }
        self.stats.write_ms.push(m.write_ms);
        for rs in self.reports.values_mut() {
            rs.retain(|(r, _)| r.through > id);
        }
        Ok(())
    }
}
