//! Counters shared by every worker of a run: records in and out per node and output, dead
//! letters by reason, late ticks, duplicates and source progress. Workers add per batch, so
//! the atomics are touched once per ~1,000 records, not per record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tickflow_connectors::kafka::KafkaStats;

use tickflow_operators::record::DeadLetterReason;

use crate::Plan;

/// Upper bounds (seconds) of the checkpoint align-time histogram's buckets.
pub const ALIGN_BUCKETS_SECONDS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Counters of one source, operator or sink.
#[derive(Debug)]
pub struct NodeMetrics {
    /// The node's name.
    pub name: String,
    /// `source`, `operator` or `sink`.
    pub role: &'static str,
    /// Records received.
    pub records_in: AtomicU64,
    /// Records sent, per named output.
    pub outputs: Vec<(String, AtomicU64)>,
    /// A source's current watermark, ms of event time (0 until it has one).
    pub watermark_ms: AtomicU64,
    /// The latest event time a source has read, ms (0 until it has read one).
    pub max_event_ms: AtomicU64,
}

impl NodeMetrics {
    /// Adds to the records received.
    pub fn add_in(&self, n: u64) {
        if n > 0 {
            self.records_in.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds to the records sent on output `port`.
    pub fn add_out(&self, port: usize, n: u64) {
        if let (Some((_, c)), true) = (self.outputs.get(port), n > 0) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Every counter of one run.
#[derive(Debug)]
pub struct Metrics {
    /// Sources, operators (plan order), then sinks.
    pub nodes: Vec<NodeMetrics>,
    /// Dead letters by reason, indexed like [`DeadLetterReason::ALL`].
    pub dead_letters: [AtomicU64; 5],
    /// Ticks sent to a window's `late` output.
    pub late: AtomicU64,
    /// Duplicate ticks dropped.
    pub duplicates: AtomicU64,
    /// Input bytes read by all sources.
    pub bytes_read: AtomicU64,
    /// Input bytes all file sources will read.
    pub bytes_total: AtomicU64,
    /// Set once the run is over.
    pub finished: AtomicBool,
    /// Checkpoints committed.
    pub checkpoints: AtomicU64,
    /// The newest committed checkpoint's id (event time, ms); 0 for none.
    pub last_checkpoint: AtomicU64,
    /// Time from first save to commit, summed over committed checkpoints, µs.
    pub checkpoint_us_total: AtomicU64,
    /// Committed checkpoints by align time: one count per bound of
    /// [`ALIGN_BUCKETS_SECONDS`] (at or below it, above the one before), the last for
    /// slower ones.
    pub checkpoint_align_buckets: [AtomicU64; ALIGN_BUCKETS_SECONDS.len() + 1],
    /// Records a projection sink could not key (no key field).
    pub unkeyed: AtomicU64,
    /// Kafka client counters by source or sink name.
    pub kafka: Mutex<Vec<(String, Arc<KafkaStats>)>>,
    /// A canary's bars of both versions compared: matched, differing, only one version's
    /// (see [`crate::render::divergence`]).
    pub divergence: [AtomicU64; 3],
}

impl Metrics {
    /// Counts one committed checkpoint that took `align_ms` from first save to commit.
    pub fn observe_align(&self, align_ms: f64) {
        let secs = align_ms / 1000.0;
        let bucket = ALIGN_BUCKETS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(ALIGN_BUCKETS_SECONDS.len());
        self.checkpoint_align_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.checkpoint_us_total
            .fetch_add((align_ms * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Zeroed counters for every node of `plan`.
    pub fn for_plan(plan: &Plan) -> Self {
        let node = |name: &str, role, outputs: &[&str]| NodeMetrics {
            name: name.to_string(),
            role,
            records_in: AtomicU64::new(0),
            watermark_ms: AtomicU64::new(0),
            max_event_ms: AtomicU64::new(0),
            outputs: outputs
                .iter()
                .map(|o| (o.to_string(), AtomicU64::new(0)))
                .collect(),
        };
        let mut nodes = Vec::new();
        for s in &plan.sources {
            nodes.push(node(&s.name, "source", &["out"]));
        }
        for o in &plan.operators {
            let outputs: Vec<&str> = o.kind.outputs.iter().map(|(n, _)| *n).collect();
            nodes.push(node(&o.name, "operator", &outputs));
        }
        for s in &plan.sinks {
            nodes.push(node(&s.name, "sink", &[]));
        }
        Metrics {
            nodes,
            dead_letters: Default::default(),
            late: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            checkpoints: AtomicU64::new(0),
            last_checkpoint: AtomicU64::new(0),
            checkpoint_us_total: AtomicU64::new(0),
            checkpoint_align_buckets: Default::default(),
            unkeyed: AtomicU64::new(0),
            kafka: Mutex::new(Vec::new()),
            divergence: Default::default(),
        }
    }

    /// The Kafka counters of source or sink `node`, created on first use.
    pub fn kafka_stats(&self, node: &str) -> Arc<KafkaStats> {
        let mut all = self.kafka.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = all.iter().find(|(n, _)| n == node) {
            return Arc::clone(s);
        }
        let stats = Arc::new(KafkaStats::default());
        all.push((node.to_string(), Arc::clone(&stats)));
        stats
    }

    /// The watermark of the whole graph: the least over its sources (`None` before every
    /// source has one). A finished source counts as `u64::MAX`.
    pub fn watermark_ms(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|n| n.role == "source")
            .map(|n| n.watermark_ms.load(Ordering::Relaxed))
            .min()
            .filter(|w| *w > 0)
    }

    /// The index in [`Metrics::nodes`] of the node `name` with `role`.
    pub fn index_of(&self, role: &str, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.role == role && n.name == name)
    }

    /// The counters of the node `name` with `role`.
    pub fn node(&self, role: &str, name: &str) -> Option<&NodeMetrics> {
        self.index_of(role, name).and_then(|i| self.nodes.get(i))
    }

    /// Counts one dead letter.
    pub fn dead_letter(&self, reason: DeadLetterReason, n: u64) {
        let idx = DeadLetterReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dead_letters[idx].fetch_add(n, Ordering::Relaxed);
    }

    /// Records read by all sources.
    pub fn source_records(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.role == "source")
            .flat_map(|n| n.outputs.iter())
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }
}
