//! `kafka` source: JSON records from a topic, partitions spread over every worker (the `i`-th
//! partition, in id order, on worker `i % workers`). The source driver gives each partition
//! its own watermark and idleness; this reader reads and knows its partitions' next offsets,
//! which it commits to the consumer group once a checkpoint holding them is committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tickflow_connectors::kafka::{self, KafkaReader, KafkaRecord, KafkaSourceConfig};
use tickflow_operators::record::{Ordinal, RawLine};

use crate::checkpoint::OpaquePosition;
use crate::component::{BuildCx, Source, SourceType};
use crate::render::source::{
    drive, reader_state, DriverSettings, OpenCx, Polled, Resume, SourceReader,
};
use crate::render::{SourceCx, S};
use crate::EngineError;

/// Default `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5_000;

/// The position format this reader writes.
const POSITION: &str = "kafka/1";

/// The registry entry.
pub const TYPE: SourceType = SourceType {
    name: "kafka",
    description: "JSON records from a Kafka topic, partitions spread over the workers, \
                  offsets in checkpoints",
    example: r#"brokers = "127.0.0.1:9092"
topic = "ingestion.market.raw.v1"
idle_timeout = "5s""#,
    schema: || schemars::schema_for!(KafkaSourceConfig),
    build,
};

#[derive(Debug)]
struct KafkaSource {
    config: KafkaSourceConfig,
    /// The consumer group offsets are committed to.
    group_id: String,
    driver: DriverSettings,
}

fn build(cx: &mut BuildCx) -> Option<Arc<dyn Source>> {
    let cfg: KafkaSourceConfig = cx.config()?;
    let ooo = cx.duration(
        "max_out_of_orderness",
        cfg.max_out_of_orderness.as_deref(),
        cx.graph.max_out_of_orderness_ms,
    );
    let idle = cx.duration(
        "idle_timeout",
        cfg.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT_MS,
    );
    // Whether the topic exists is checked when the graph runs: the broker may not be up now.
    let brokers = cx.non_empty("brokers", &cfg.brokers, "must not be empty");
    let topic = cx.non_empty("topic", &cfg.topic, "must not be empty");
    if !(brokers && topic) {
        return None;
    }
    let event_time = cx.event_time(cfg.event_time.as_ref());
    let group_id = cfg
        .group_id
        .clone()
        .unwrap_or_else(|| format!("tickflow.{}.{}", cx.graph.name, cx.node));
    Some(Arc::new(KafkaSource {
        config: cfg,
        group_id,
        driver: DriverSettings {
            max_out_of_orderness_ms: ooo,
            idle_timeout: Duration::from_millis(idle),
            event_time,
            parallel: true,
        },
    }))
}

impl Source for KafkaSource {
    /// The consumer group is left out: the positions live in the checkpoint, the group only
    /// gets copies of them for lag tools, so a version reading as another group (a canary's
    /// new version, promoted) continues the same positions.
    fn state_identity(&self) -> String {
        let config = KafkaSourceConfig {
            group_id: None,
            ..self.config.clone()
        };
        format!(
            "Kafka {{ config: {config:?}, idle_timeout_ms: {} }}",
            self.driver.idle_timeout.as_millis()
        )
    }

    fn driver(&self) -> &DriverSettings {
        &self.driver
    }

    fn render<'s>(&self, cx: SourceCx<'s>) -> S<'s, RawLine> {
        let settings = self.driver.clone();
        let (config, group_id) = (self.config.clone(), self.group_id.clone());
        drive(
            cx,
            settings,
            Box::new(move |cx| open(cx, &config, &group_id)),
        )
    }
}

/// The offsets a position holds, by partition.
fn offsets_of(state: &serde_json::Value) -> BTreeMap<i32, i64> {
    state["offsets"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(p, o)| Some((p.parse().ok()?, o.as_i64()?)))
        .collect()
}

/// Opens this worker's partitions: from the restored checkpoint's offsets where it has them
/// (saved by any worker of the run that wrote it), else from the configured start.
fn open(
    cx: &OpenCx,
    config: &KafkaSourceConfig,
    group_id: &str,
) -> Result<Option<Box<dyn SourceReader>>, EngineError> {
    let (index, peers) = cx.worker;
    let mut restored = BTreeMap::new();
    if let Some(pos) = cx.restored {
        for state in reader_state(&pos.readers, POSITION)? {
            restored.extend(offsets_of(state));
        }
    }
    let all = kafka::partitions(&config.brokers, &config.topic, &config.options, cx.cancel)?;
    let parts: Vec<Part> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % peers == index)
        .map(|(_, p)| Part {
            id: *p,
            offset: restored.get(p).copied(),
            end: None,
            stop_at_end: config.stop_at_end,
        })
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    let stats = cx.metrics.kafka_stats(cx.name);
    let assignment: Vec<(i32, Option<i64>)> = parts.iter().map(|p| (p.id, p.offset)).collect();
    let reader = KafkaReader::open(config, group_id, &assignment, &stats)?;
    Ok(Some(Box::new(Partitions {
        reader,
        parts,
        source: cx.source,
        name: cx.name.to_string(),
        batch: Vec::new(),
        ends: Vec::new(),
    })))
}

/// One partition this worker reads.
struct Part {
    id: i32,
    /// The next offset to read, once known.
    offset: Option<i64>,
    /// The end offset the broker reported when this reader first got there.
    end: Option<i64>,
    /// Bounded runs: finished once the end found at start is reached.
    stop_at_end: bool,
}

/// A worker's partitions of the topic.
struct Partitions {
    reader: KafkaReader,
    parts: Vec<Part>,
    source: u32,
    name: String,
    batch: Vec<KafkaRecord>,
    ends: Vec<(i32, Option<i64>)>,
}

impl Partitions {
    /// `(partition, next offset)` of every partition read from.
    fn offsets(&self) -> Vec<(i32, i64)> {
        self.parts
            .iter()
            .filter_map(|p| p.offset.map(|o| (p.id, o)))
            .collect()
    }
}

impl SourceReader for Partitions {
    fn partitions(&self) -> Vec<i32> {
        self.parts.iter().map(|p| p.id).collect()
    }

    fn poll(
        &mut self,
        max: usize,
        out: &mut Vec<Polled>,
        at_end: &mut Vec<i32>,
    ) -> Result<u64, EngineError> {
        self.batch.clear();
        self.ends.clear();
        self.reader.poll_batch(max, &mut self.batch, &mut self.ends);
        let mut bytes = 0;
        for rec in self.batch.drain(..) {
            bytes += rec.text.len() as u64;
            if let Some(p) = self.parts.iter_mut().find(|p| p.id == rec.partition) {
                p.offset = Some(rec.offset + 1);
            }
            out.push(Polled {
                partition: rec.partition,
                ordinal: Ordinal::kafka(self.source, rec.partition, rec.offset),
                text: rec.text,
                at: Resume {
                    offset: rec.offset as u64,
                    line: 0,
                },
            });
        }
        for (id, end) in &self.ends {
            let Some(p) = self.parts.iter_mut().find(|p| p.id == *id) else {
                continue;
            };
            if p.end.is_none() {
                // Without a position the reader read nothing: where it started is the end.
                let end = end.or(p.offset).unwrap_or(0);
                tracing::debug!("source {}: partition {id} ends at offset {end}", self.name);
                p.end = Some(end);
            }
            at_end.push(*id);
        }
        Ok(bytes)
    }

    fn done(&self, partition: i32) -> bool {
        self.parts
            .iter()
            .find(|p| p.id == partition)
            .is_some_and(|p| {
                p.stop_at_end
                    && p.end
                        .is_some_and(|end| p.offset.map_or(end == 0, |o| o >= end))
            })
    }

    fn position(&self, rewind: &[(i32, Resume)]) -> OpaquePosition {
        let offsets: serde_json::Map<String, serde_json::Value> = self
            .offsets()
            .into_iter()
            .map(|(p, o)| {
                let o = rewind
                    .iter()
                    .find(|(id, _)| *id == p)
                    .map_or(o, |(_, at)| at.offset as i64);
                (p.to_string(), o.into())
            })
            .collect();
        OpaquePosition {
            format: POSITION.to_string(),
            state: serde_json::json!({ "offsets": offsets }),
        }
    }

    fn leave_unread(&mut self, partition: i32, unread: bool) {
        self.reader.leave_unread(partition, unread);
    }

    /// Commits the offsets of the newest committed checkpoint to the consumer group.
    fn committed(&mut self, position: &OpaquePosition) {
        let offsets: Vec<(i32, i64)> = offsets_of(&position.state).into_iter().collect();
        self.reader.commit(&offsets);
    }

    /// Bounded and finished: the group gets the final offsets now.
    fn finish(&mut self) {
        self.reader.commit(&self.offsets());
    }
}

#[cfg(test)]
mod tests {
    use crate::checkpoint::GraphIdentity;

    fn graph(extra: &str) -> String {
        format!(
            "[graph]\nname = \"g\"\nversion = 1\n\n[sources.ticks]\ntype = \"kafka\"\n\
             brokers = \"127.0.0.1:9092\"\ntopic = \"raw\"\n{extra}\n\n[operators.n]\n\
             type = \"normalize\"\ninput = \"ticks\"\n\n[sinks.out]\ntype = \"stdout\"\n\
             input = \"n\"\n"
        )
    }

    #[test]
    fn the_consumer_group_is_not_part_of_the_source_state() {
        let identity = |extra: &str| {
            let plan = crate::compile_str(&graph(extra), "g.toml").unwrap();
            GraphIdentity::of(&plan).parts["source/ticks"]
                .identity
                .clone()
        };
        let default = identity("");
        assert_eq!(
            identity("group_id = \"tickflow.g.ticks.canary-d2\""),
            default
        );
        assert_ne!(identity("start = \"latest\""), default);
        assert_ne!(identity("idle_timeout = \"1s\""), default);
    }
}
