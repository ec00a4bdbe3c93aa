//! Reading whole topics and loading files into topics: for tests, tools and benchmarks.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::*;
use crate::ConnectorError;

/// Reads every record of `topic` from the start to the end offsets found when called:
/// `(partition, offset, key, value, headers)`. For tests, tools and the benchmark.
pub fn read_topic(brokers: &str, topic: &str) -> Result<Vec<ConsumedRecord>, ConnectorError> {
    let none = BTreeMap::new();
    let starts: Vec<(i32, Option<i64>)> = partitions(brokers, topic, &none, &|| false)?
        .into_iter()
        .map(|p| (p, None))
        .collect();
    let mut out = Vec::new();
    read_to_end(brokers, &none, topic, &starts, |m| {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_string(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ConsumedRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            headers,
        });
    })?;
    Ok(out)
}

/// Reads `partitions` of `topic` from the given offsets (the beginning where none is given) to
/// their ends (the end the fetch reports), handing each record to `f`. Resumes like a source
/// does ([`resume_plan`]). Fails after 60 s without a record or an end.
pub(super) fn read_to_end(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    partitions: &[(i32, Option<i64>)],
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), ConnectorError> {
    let (starts, below) = resume_plan(brokers, options, topic, partitions, Offset::Beginning)?;
    let mut keep = |m: &rdkafka::message::BorrowedMessage<'_>| {
        if below.get(&m.partition()).is_none_or(|b| m.offset() >= *b) {
            f(m);
        }
    };
    read_until(brokers, options, topic, &starts, &mut keep, false)
}

/// Reads `starts` to each partition's end (or, with `first_only`, to its first record).
pub(super) fn read_until(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    starts: &[(i32, Offset)],
    f: &mut dyn FnMut(&rdkafka::message::BorrowedMessage<'_>),
    first_only: bool,
) -> Result<(), ConnectorError> {
    let stats = Arc::new(KafkaStats::default());
    let consumer: BaseConsumer<Context> = client_config(
        brokers,
        &[
            ("group.id", "tickflow.read"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("fetch.wait.max.ms", "10"),
        ],
        options,
    )
    .create_with_context(context(&format!("reader {topic}"), &stats))
    .map_err(|e| kafka_err(brokers, e))?;
    let mut tpl = TopicPartitionList::new();
    for (p, at) in starts {
        tpl.add_partition_offset(topic, *p, *at)
            .map_err(|e| kafka_err(topic, e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_err(&format!("reading {topic}"), e))?;
    let mut pending: std::collections::BTreeSet<i32> = starts.iter().map(|(p, _)| *p).collect();
    let mut progress = std::time::Instant::now();
    while !pending.is_empty() {
        if progress.elapsed() > Duration::from_secs(60) {
            return Err(ConnectorError::Kafka(format!(
                "reading {topic}: partitions {pending:?} did not reach their end (60 s without \
                 progress)"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => tracing::warn!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                progress = std::time::Instant::now();
                f(&m);
                if first_only {
                    pending.remove(&m.partition());
                }
            }
        }
    }
    Ok(())
}

/// A record read by [`read_topic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumedRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key as text.
    pub key: Option<String>,
    /// Value as text.
    pub value: String,
    /// Headers as text.
    pub headers: Vec<(String, String)>,
}

/// A plain producer for loading records (`tickflow produce`): JSON lines keyed by a field,
/// partitioned like [`KafkaWriter`].
pub struct LineProducer {
    producer: ThreadedProducer<Context>,
    topic: String,
    key_field: Option<String>,
    partitions: Vec<i32>,
    next: u64,
    stats: Arc<KafkaStats>,
}

impl LineProducer {
    /// A producer to `topic`, which must exist.
    pub fn new(
        brokers: &str,
        topic: &str,
        key_field: Option<&str>,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        let stats = Arc::new(KafkaStats::default());
        let partitions = partitions(brokers, topic, options, &|| false)?;
        let producer: ThreadedProducer<Context> = client_config(
            brokers,
            &[
                ("acks", "all"),
                ("linger.ms", "2"),
                ("max.in.flight.requests.per.connection", "1"),
                ("queue.buffering.max.messages", "1000000"),
            ],
            options,
        )
        .create_with_context(context(&format!("producer {topic}"), &stats))
        .map_err(|e| kafka_err(brokers, e))?;
        Ok(LineProducer {
            producer,
            topic: topic.to_string(),
            key_field: key_field.map(str::to_string),
            partitions,
            next: 0,
            stats,
        })
    }

    /// Queues one line (waits while the local queue is full); returns its partition.
    pub fn send(&mut self, line: &str) -> Result<i32, ConnectorError> {
        let key = self
            .key_field
            .as_deref()
            .and_then(|f| crate::record_key(line, f))
            .map(String::into_bytes);
        let partition = pick_partition(&self.partitions, key.as_deref(), self.next);
        self.next += 1;
        let mut record: BaseRecord<'_, [u8], str> = BaseRecord::to(&self.topic)
            .payload(line)
            .partition(partition);
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        send_waiting(&self.producer, record, &|| false).map(|_| partition)
    }

    /// Waits for every queued record to be acknowledged; returns how many were.
    pub fn finish(&mut self) -> Result<u64, ConnectorError> {
        self.producer
            .flush(Duration::from_secs(120))
            .map_err(|e| kafka_err(&format!("flushing {}", self.topic), e))?;
        delivery_failure(&self.producer, &self.topic)?;
        Ok(self.stats.records_out.load(Ordering::Relaxed))
    }
}
