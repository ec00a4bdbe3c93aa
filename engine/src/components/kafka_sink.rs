//! `kafka` sink: JSON records to a topic, keyed by a field, each record once across restores.

use std::sync::Arc;

use tickflow_connectors::kafka::{KafkaSinkConfig, KafkaSinkPosition, KafkaWriter};
use tickflow_connectors::LineSink;

use crate::checkpoint::{OpaquePosition, SinkPosition};
use crate::component::{BuildCx, Sink, SinkType, SinkWriter};
use crate::render::SinkCx;
use crate::EngineError;

/// The registry entry.
pub const TYPE: SinkType = SinkType {
    name: "kafka",
    description: "JSON records to a Kafka topic, keyed by `key`; each record once across \
                  restores",
    example: r#"brokers = "127.0.0.1:9092"
topic = "market.bars.1m.v1"
key = "instrument_id""#,
    schema: || schemars::schema_for!(KafkaSinkConfig),
    build,
};

/// The position format: the run id and, per partition, where a restore reads back from.
const POSITION: &str = "kafka/1";

#[derive(Debug)]
struct KafkaOut {
    config: KafkaSinkConfig,
}

fn build(cx: &mut BuildCx) -> Option<Arc<dyn Sink>> {
    let cfg: KafkaSinkConfig = cx.config()?;
    let brokers = cx.non_empty("brokers", &cfg.brokers, "must not be empty");
    let topic = cx.non_empty("topic", &cfg.topic, "must not be empty");
    (brokers && topic).then(|| Arc::new(KafkaOut { config: cfg }) as Arc<dyn Sink>)
}

impl Sink for KafkaOut {
    fn state_identity(&self) -> String {
        format!("Kafka {{ config: {:?} }}", self.config)
    }

    fn open(
        &self,
        cx: &SinkCx,
        resume: Option<&SinkPosition>,
    ) -> Result<Box<dyn SinkWriter>, EngineError> {
        let stats = cx.metrics.kafka_stats(&cx.name);
        let writer = match resume {
            Some(pos) => {
                let state = pos.writer.state_of(POSITION)?;
                let kafka: KafkaSinkPosition = serde_json::from_value(state.clone())
                    .map_err(|e| EngineError::Checkpoint(format!("sink {}: {e}", cx.name)))?;
                KafkaWriter::resume(&self.config, &kafka, pos.lines, &stats, cx.cancel())?
            }
            None => KafkaWriter::create(&self.config, &new_run_id(), &stats, cx.cancel())?,
        };
        Ok(Box::new(KafkaLines(writer)))
    }
}

struct KafkaLines(KafkaWriter);

impl SinkWriter for KafkaLines {
    fn write_line(&mut self, line: &str) -> Result<(), EngineError> {
        Ok(self.0.write_line(line)?)
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        Ok(self.0.flush()?)
    }

    /// Waits for every earlier record's acknowledgement; the position is where a restore
    /// reads the topic back from.
    fn checkpoint(&mut self, _label: u64, _cx: &SinkCx) -> Result<OpaquePosition, EngineError> {
        self.0.sync(false)?;
        let state =
            serde_json::to_value(self.0.position()).map_err(|source| EngineError::Encode {
                what: "kafka sink position".into(),
                source,
            })?;
        Ok(OpaquePosition::new(POSITION, state))
    }
}

/// A fresh id for a Kafka sink's run: what its records' `tickflow-run` header carries.
fn new_run_id() -> String {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let salt = std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
    format!("{:016x}", salt)
}
