//! Runs a plan on N worker threads and summarizes what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tickflow_operators::record::DeadLetterReason;

use crate::checkpoint::{CheckpointStats, Coordinator, Epochs, PartId};
use crate::cluster::Cluster;
use crate::live::Live;
use crate::render::{self, Durability, Failure};
use crate::{EngineError, Metrics, Plan};

/// How to run a plan.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Worker threads in this process (at least 1).
    pub workers: usize,
    /// Where state and checkpoints live; without one, nothing is checkpointed.
    pub data_dir: Option<PathBuf>,
    /// Discard the state in `data_dir` and start over.
    pub fresh: bool,
    /// Continue from a data directory made by another version of the graph whose state has
    /// the same shape (see [`Plan::state_fingerprint`]).
    pub adopt: bool,
    /// Pause, resume and stop from outside, and projection views; without one the run
    /// goes to the end of its input.
    pub live: Option<Arc<Live>>,
    /// Run as one process of a cluster (see [`crate::cluster`]); `workers` is then the
    /// number of worker threads of every process.
    pub cluster: Option<Cluster>,
}

/// Counts for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// The node's name.
    pub name: String,
    /// `source`, `operator` or `sink`.
    pub role: String,
    /// Records received.
    pub records_in: u64,
    /// Records sent per named output.
    pub records_out: BTreeMap<String, u64>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Graph name.
    pub graph: String,
    /// Graph version.
    pub version: i64,
    /// Worker threads.
    pub workers: usize,
    /// Lines read by all sources.
    pub input_records: u64,
    /// Per-node counts.
    pub nodes: Vec<NodeSummary>,
    /// Dead letters by reason (every reason listed, zero included).
    pub dead_letters: BTreeMap<String, u64>,
    /// Ticks sent to `late` outputs.
    pub late: u64,
    /// Duplicate ticks dropped.
    pub duplicates: u64,
    /// Wall-clock seconds.
    pub elapsed_secs: f64,
    /// Input lines per second.
    pub ticks_per_sec: f64,
    /// Peak resident memory of the process, where the platform reports it.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    /// The checkpoint this run resumed from (its event time in ms).
    #[serde(default)]
    pub restored_from: Option<u64>,
    /// Time to take the restored state back: reading the store plus the slowest worker.
    #[serde(default)]
    pub restore_ms: Option<f64>,
    /// Checkpoints committed by this run.
    #[serde(default)]
    pub checkpoints: CheckpointStats,
    /// Whether the run was stopped (through [`Live::stop`]) before the end of its input.
    #[serde(default)]
    pub stopped: bool,
    /// In a cluster, this process's index and the number of processes; the counts are then
    /// this process's share.
    #[serde(default)]
    pub process: Option<(usize, usize)>,
    /// In a cluster, the bytes this process sent to the others.
    #[serde(default)]
    pub bytes_to_peers: Option<u64>,
}

impl Summary {
    /// The counters of `metrics` so far, as a summary of a run of `plan`.
    pub fn of(plan: &Plan, workers: usize, metrics: &Metrics, elapsed_secs: f64) -> Self {
        let input_records = metrics.source_records();
        Summary {
            graph: plan.name.clone(),
            version: plan.version,
            workers,
            input_records,
            nodes: metrics
                .nodes
                .iter()
                .map(|n| NodeSummary {
                    name: n.name.clone(),
                    role: n.role.to_string(),
                    records_in: n.records_in.load(Ordering::Relaxed),
                    records_out: n
                        .outputs
                        .iter()
                        .map(|(o, c)| (o.clone(), c.load(Ordering::Relaxed)))
                        .collect(),
                })
                .collect(),
            dead_letters: DeadLetterReason::ALL
                .iter()
                .zip(&metrics.dead_letters)
                .map(|(r, c)| (r.name().to_string(), c.load(Ordering::Relaxed)))
                .collect(),
            late: metrics.late.load(Ordering::Relaxed),
            duplicates: metrics.duplicates.load(Ordering::Relaxed),
            elapsed_secs,
            ticks_per_sec: if elapsed_secs > 0.0 {
                input_records as f64 / elapsed_secs
            } else {
                0.0
            },
            peak_rss_bytes: None,
            restored_from: None,
            restore_ms: None,
            checkpoints: CheckpointStats::default(),
            stopped: false,
            process: None,
            bytes_to_peers: None,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "graph {} v{} on {} worker(s)",
            self.graph, self.version, self.workers
        )?;
        match self.process {
            Some((process, processes)) => writeln!(
                f,
                " of process {process} of a cluster of {processes} (counts are this \
                 process's share; {:.1} MiB sent to the others)",
                self.bytes_to_peers.unwrap_or(0) as f64 / (1024.0 * 1024.0)
            )?,
            None => writeln!(f)?,
        }
        writeln!(f, "  {:<10} {:<24} {:>12}  out", "role", "node", "in")?;
        for n in &self.nodes {
            let outs: Vec<String> = n
                .records_out
                .iter()
                .map(|(o, c)| format!("{o}={c}"))
                .collect();
            writeln!(
                f,
                "  {:<10} {:<24} {:>12}  {}",
                n.role,
                n.name,
                n.records_in,
                outs.join(" ")
            )?;
        }
        let dl: Vec<String> = self
            .dead_letters
            .iter()
            .map(|(r, c)| format!("{r}={c}"))
            .collect();
        writeln!(f, "  dead letters: {}", dl.join(" "))?;
        writeln!(
            f,
            "  late ticks: {}  duplicates: {}",
            self.late, self.duplicates
        )?;
        write!(
            f,
            "  {} ticks in {:.3}s: {:.0} ticks/s",
            self.input_records, self.elapsed_secs, self.ticks_per_sec
        )?;
        if let Some(rss) = self.peak_rss_bytes {
            write!(f, ", peak RSS {:.1} MiB", rss as f64 / (1024.0 * 1024.0))?;
        }
        if let (Some(id), Some(ms)) = (self.restored_from, self.restore_ms) {
            write!(
                f,
                "\n  resumed from checkpoint {id} ({}), state restored in {ms:.1} ms",
                crate::checkpoint::final_label(id)
            )?;
        }
        let c = &self.checkpoints;
        if c.committed > 0 {
            let mut align = c.align_ms.clone();
            align.sort_by(f64::total_cmp);
            write!(
                f,
                "\n  checkpoints committed: {} (median {:.1} ms from first save to commit)",
                c.committed,
                align[align.len() / 2]
            )?;
        }
        Ok(())
    }
}

/// Runs `plan` to completion on `options.workers` threads, updating `metrics` as it goes.
/// With file sources the run ends when every input is read and every window flushed. With a
/// data directory, it resumes from the newest complete checkpoint there and checkpoints as it
/// goes.
pub fn run(
    mut plan: Arc<Plan>,
    options: &RunOptions,
    metrics: Arc<Metrics>,
) -> Result<Summary, EngineError> {
    let workers = options.workers.max(1);
    crate::policy::check_plan_files(&plan, options.data_dir.as_deref(), &[])?;
    // In a cluster, connect first: the processes agree on the checkpoint to restore over
    // these connections before Timely takes them.
    let mut peers = match &options.cluster {
        Some(c) => {
            let live = options.live.clone();
            let cancel = move || live.as_ref().is_some_and(|l| l.is_stopping());
            match c.connect_peers(&cancel) {
                Err(EngineError::Dataflow(why)) if !c.halts && !cancel() => {
                    return Err(EngineError::PeerLost(why))
                }
                other => Some(other?),
            }
        }
        None => None,
    };
    let failure: Failure = Arc::default();
    let start = Instant::now();
    let mut restored_from = None;
    let mut restore_read = None;
    let mut coordinator = None;
    let durability = match &options.data_dir {
        None => None,
        Some(path) => {
            let read_started = Instant::now();
            let cluster = options.cluster.as_ref().zip(peers.as_mut());
            let opened = crate::checkpoint::restore::open(
                &mut plan,
                path,
                (options.fresh, options.adopt),
                cluster,
                workers,
            )?;
            let (dir, manifest, restored) = (opened.dir, opened.manifest, opened.restored);
            let (wipe, fresh) = (Arc::new(opened.wipe), Arc::new(opened.fresh));
            let reshaped = opened.reshape.is_some() || opened.rewrite;
            // Process 0 deletes the old shape's state once the new one has committed.
            let retire = opened
                .reshape
                .filter(|_| options.cluster.as_ref().is_none_or(|c| c.process == 0))
                .map(|r| r.from);
            if let Some(m) = &manifest {
                restored_from = Some(m.id);
                restore_read = Some(read_started.elapsed());
                tracing::info!("resuming from checkpoint {} ({})", m.id, m.time_label());
            }
            let (tx, rx) = crossbeam_channel::unbounded();
            // This process's workers, among all of the cluster's.
            let (mine, peers_count) = match &options.cluster {
                Some(c) => (
                    c.process * workers..(c.process + 1) * workers,
                    c.processes() * workers,
                ),
                None => (0..workers, workers),
            };
            let expected = expected_parts(&plan, mine.clone(), peers_count);
            // Sink files are written (and synced) by the process of the sink worker only.
            let sink_files = if mine.contains(&render::sink::sink_worker(peers_count)) {
                plan.sinks
                    .iter()
                    .filter_map(|s| s.component.output_file().map(PathBuf::from))
                    .collect()
            } else {
                Vec::new()
            };
            let resumed_at = manifest.as_ref().map_or(0, |m| m.id);
            let epochs = Arc::new(Epochs::new(plan.checkpoint.interval_ms, resumed_at));
            let c = Coordinator::new(
                Arc::clone(&dir),
                expected,
                (sink_files, workers),
                resumed_at,
                Arc::clone(&epochs),
            )
            .with_metrics(Arc::clone(&metrics))
            .retiring(retire);
            // In a cluster, the coordinators talk through a relay in the dataflow.
            let (c, relay) = match &options.cluster {
                None => (c, None),
                Some(cluster) => {
                    let (to_relay, outbox) = crossbeam_channel::unbounded();
                    let (inbox, from_relay) = crossbeam_channel::unbounded();
                    let wake = Arc::new(std::sync::Mutex::new(None));
                    let link = crate::checkpoint::Link {
                        process: cluster.process,
                        processes: cluster.processes(),
                        send: to_relay,
                        wake: Arc::clone(&wake),
                        recv: from_relay,
                    };
                    let ends = render::relay::RelayEnds {
                        process: cluster.process,
                        worker: mine.start,
                        outbox,
                        inbox,
                        wake,
                    };
                    (c.in_cluster(link), Some(ends))
                }
            };
            coordinator = Some(
                std::thread::Builder::new()
                    .name("checkpoint-coordinator".into())
                    .spawn(move || c.run(rx))
                    .map_err(EngineError::Thread)?,
            );
            Some(Durability {
                store: Arc::clone(&dir.store),
                interval_ms: plan.checkpoint.interval_ms,
                restore: manifest.map(Arc::new),
                restored: Arc::new(restored),
                rewrite: reshaped,
                wipe,
                fresh,
                reports: tx,
                epochs,
                restore_us: Arc::new(AtomicU64::new(0)),
                relay,
            })
        }
    };
    let restore_us = durability.as_ref().map(|d| Arc::clone(&d.restore_us));
    // One process's threads, or this process's share of a cluster, connected to its peers.
    let (builders, network, sent) = match &options.cluster {
        None => {
            let (builders, guard) = timely::CommunicationConfig::Process(workers)
                .try_build()
                .map_err(EngineError::Dataflow)?;
            (builders, guard, None)
        }
        Some(c) => {
            let peers = peers
                .take()
                .ok_or_else(|| EngineError::Dataflow("the cluster is not connected".into()))?;
            let n = c.network(peers, workers)?;
            (n.builders, n.guard, Some((n.sent, n.closed, n.released)))
        }
    };
    // `tickflow run` on a cluster halts the process; `serve` ends only the run.
    let halts = options.cluster.as_ref().is_some_and(|c| c.halts);
    let closed = sent.as_ref().map(|(_, closed, _)| Arc::clone(closed));
    // Under `serve`, the network threads learn when every worker here is done (see `cluster`).
    let released = sent.as_ref().map(|(_, _, released)| Arc::clone(released));
    let done_workers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let live = options.live.clone();
    let guards = {
        let closed = closed.clone();
        let plan = Arc::clone(&plan);
        let metrics = Arc::clone(&metrics);
        let failure = Arc::clone(&failure);
        let live = live.clone();
        timely::execute::execute_from(
            builders,
            network,
            timely::WorkerConfig::default(),
            move |worker| {
                let me = worker.index();
                let index = worker.next_dataflow_index();
                // A panic in an operator fails the run (and so every worker) instead of leaving
                // the other workers waiting for this one for ever.
                let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker.dataflow::<u64, _, _>(|scope| {
                        render::build(
                            scope,
                            &plan,
                            &metrics,
                            &failure,
                            durability.as_ref(),
                            live.as_ref(),
                        )
                    });
                    // Step until done, told to stop, or failed (here or on another worker); a
                    // stop or a failure drops the dataflow unflushed.
                    while worker.has_dataflows() {
                        // Under `serve`, a peer that vanished fails this run (see `cluster`).
                        if !halts && closed.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                            render::fail(&failure, crate::cluster::PEER_CLOSED.to_string());
                        }
                        if halts {
                            // No orderly drop in a cluster: the peers would wait for this
                            // process's workers for ever (see `cluster`).
                            if let Some(why) = failure.message() {
                                crate::cluster::halt(
                                    1,
                                    &format!("{why}; the other processes stop too"),
                                );
                            }
                            if live.as_ref().is_some_and(|l| l.is_stopping()) {
                                crate::cluster::halt(
                                    0,
                                    "stopped; the other processes of the cluster stop too",
                                );
                            }
                        }
                        if failure.is_set() || live.as_ref().is_some_and(|l| l.is_stopping()) {
                            worker.drop_dataflow(index);
                            break;
                        }
                        worker.step_or_park(Some(std::time::Duration::from_millis(20)));
                    }
                }));
                if let Err(panic) = stepped {
                    let what = crate::error::panic_message(&*panic);
                    render::fail(&failure, format!("worker {me} panicked: {what}"));
                    // Timely steps a worker until it has no dataflow left: drop the broken one
                    // (if even that panics, the thread ends and the run reports it).
                    if worker.has_dataflows() {
                        worker.drop_dataflow(index);
                    }
                }
                if done_workers.fetch_add(1, Ordering::SeqCst) + 1 == workers {
                    if let Some(released) = &released {
                        released.store(true, Ordering::SeqCst);
                    }
                }
            },
        )
        .map_err(EngineError::Dataflow)?
    };
    if let Some(live) = &live {
        live.started(restored_from);
    }
    // Under `serve`, Timely's network threads of a run that lost a peer panicked, and joining
    // them (when the guards drop) panics in turn: that ends this run, not the process.
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
    let elapsed = start.elapsed().as_secs_f64();
    metrics.finished.store(true, Ordering::Relaxed);
    let checkpoints = match coordinator {
        Some(handle) => handle
            .join()
            .map_err(|_| EngineError::Checkpoint("the checkpoint coordinator panicked".into()))??,
        None => CheckpointStats::default(),
    };
    let stopped = live.as_ref().is_some_and(|l| l.is_stopping());
    let results = match joined {
        Ok(results) => results,
        Err(_) if stopped => Vec::new(),
        Err(panic) if options.cluster.is_some() && !halts => {
            return Err(EngineError::PeerLost(format!(
                "the connections to the other processes broke ({})",
                crate::error::panic_message(&*panic)
            )))
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let peer_gone =
        !halts && !stopped && closed.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
    for r in results {
        match r {
            Err(e) if peer_gone => return Err(EngineError::PeerLost(e)),
            r => r.map_err(EngineError::Dataflow)?,
        };
    }
    if let Some(message) = failure.message() {
        if message == crate::cluster::PEER_CLOSED && !stopped {
            return Err(EngineError::PeerLost(message));
        }
        if message != crate::cluster::PEER_CLOSED {
            return Err(EngineError::Connector(message));
        }
    }
    let mut summary = Summary::of(&plan, workers, &metrics, elapsed);
    summary.restored_from = restored_from;
    summary.restore_ms = restore_read.map(|read| {
        let workers_us = restore_us.map_or(0, |u| u.load(Ordering::Relaxed));
        read.as_secs_f64() * 1000.0 + workers_us as f64 / 1000.0
    });
    summary.checkpoints = checkpoints;
    summary.stopped = stopped;
    summary.process = options.cluster.as_ref().map(|c| (c.process, c.processes()));
    summary.bytes_to_peers = sent.map(|(s, _, _)| s.load(Ordering::Relaxed));
    Ok(summary)
}

/// Every part a checkpoint of `plan` needs a save from, on the workers `mine` (all of them in
/// one process; this process's in a cluster) of `peers`.
fn expected_parts(plan: &Plan, mine: std::ops::Range<usize>, peers: usize) -> Vec<PartId> {
    let mut parts: Vec<PartId> = Vec::new();
    for (id, s) in plan.sources.iter().enumerate() {
        if s.component.driver().parallel {
            parts.extend(
                mine.clone()
                    .map(|w| PartId::SourceWorker(s.name.clone(), w)),
            )
        } else if mine.contains(&crate::components::file_source::reading_worker(
            id as u32, peers,
        )) {
            parts.push(PartId::Source(s.name.clone()))
        }
    }
    if mine.contains(&render::sink::sink_worker(peers)) {
        parts.extend(plan.sinks.iter().map(|s| PartId::Sink(s.name.clone())));
    }
    let stateful: BTreeSet<String> = crate::checkpoint::restore::checkpointed_tables(plan)
        .into_iter()
        .map(|t| t.0)
        .filter(|name| plan.operators.iter().any(|o| o.name == *name))
        .collect();
    for op in stateful {
        parts.extend(mine.clone().map(|w| PartId::Operator(op.clone(), w)));
    }
    parts
}
