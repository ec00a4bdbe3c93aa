//! `kafka` source: JSON records from a topic, partitions spread over every worker.

use std::sync::Arc;

use tickflow_connectors::kafka::KafkaSourceConfig;
use tickflow_operators::record::RawLine;

use crate::component::{BuildCx, Source, SourceType};
use crate::render::kafka_source::{kafka_source, KafkaSettings};
use crate::render::{SourceCx, S};

/// Default `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5_000;

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
struct KafkaSource(KafkaSettings);

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
    Some(Arc::new(KafkaSource(KafkaSettings {
        config: cfg,
        group_id,
        idle_timeout_ms: idle,
        max_out_of_orderness_ms: ooo,
        event_time,
    })))
}

impl Source for KafkaSource {
    fn state_identity(&self) -> String {
        let s = &self.0;
        format!(
            "Kafka {{ config: {:?}, group_id: {:?}, idle_timeout_ms: {} }}",
            s.config, s.group_id, s.idle_timeout_ms
        )
    }

    fn max_out_of_orderness_ms(&self) -> u64 {
        self.0.max_out_of_orderness_ms
    }

    fn parallel(&self) -> bool {
        true
    }

    fn render<'s>(&self, cx: SourceCx<'s>) -> S<'s, RawLine> {
        kafka_source(cx, self.0.clone())
    }
}
