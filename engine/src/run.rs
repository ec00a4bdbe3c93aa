//! Runs a plan on N worker threads and summarizes what happened.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tickflow_operators::record::DeadLetterReason;

use crate::dataflow::{self, Failure};
use crate::{EngineError, Metrics, Plan};

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads in this process (at least 1).
    pub workers: usize,
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
}

impl Summary {
    fn from_metrics(plan: &Plan, workers: usize, metrics: &Metrics, elapsed_secs: f64) -> Self {
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
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "graph {} v{} on {} worker(s)",
            self.graph, self.version, self.workers
        )?;
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
        Ok(())
    }
}

/// Runs `plan` to completion on `options.workers` threads, updating `metrics` as it goes.
/// With file sources the run ends when every input is read and every window flushed.
pub fn run(
    plan: Arc<Plan>,
    options: &RunOptions,
    metrics: Arc<Metrics>,
) -> Result<Summary, EngineError> {
    let workers = options.workers.max(1);
    let failure: Failure = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let guards = {
        let plan = Arc::clone(&plan);
        let metrics = Arc::clone(&metrics);
        let failure = Arc::clone(&failure);
        timely::execute(timely::Config::process(workers), move |worker| {
            worker.dataflow::<u64, _, _>(|scope| dataflow::build(scope, &plan, &metrics, &failure));
        })
        .map_err(EngineError::Dataflow)?
    };
    let results = guards.join();
    let elapsed = start.elapsed().as_secs_f64();
    metrics.finished.store(true, Ordering::Relaxed);
    for r in results {
        r.map_err(EngineError::Dataflow)?;
    }
    if let Some(message) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(EngineError::Connector(message));
    }
    Ok(Summary::from_metrics(&plan, workers, &metrics, elapsed))
}
