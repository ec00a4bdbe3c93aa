//! Reading whole topics and loading files into topics: for tests, tools and benchmarks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, ThreadedProducer};
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

/// The values of `topic`'s records in the offset ranges `ranges` (partition -> `[from, to)`),
/// ordered by their Kafka timestamps, then partition and offset: one deterministic sequence of
/// a recorded range (a backtest's input). Fails when a partition ends before its range does,
/// or when the values pass `max_bytes`.
pub fn read_range(
    brokers: &str,
    topic: &str,
    ranges: &BTreeMap<i32, (i64, i64)>,
    max_bytes: u64,
) -> Result<Vec<String>, ConnectorError> {
    let known = partitions(brokers, topic, &BTreeMap::new(), &|| false)?;
    if let Some(p) = ranges.keys().find(|p| !known.contains(p)) {
        return Err(ConnectorError::Kafka(format!(
            "topic {topic} has no partition {p} (partitions: {known:?})"
        )));
    }
    if let Some((p, (from, to))) = ranges.iter().find(|(_, (f, t))| *f < 0 || f >= t) {
        return Err(ConnectorError::Kafka(format!(
            "partition {p}: the range {from}-{to} is empty or negative"
        )));
    }
    let starts: Vec<(i32, Option<i64>)> = ranges.iter().map(|(p, (f, _))| (*p, Some(*f))).collect();
    let mut records: Vec<(i64, i32, i64, String)> = Vec::new();
    let mut reached: BTreeMap<i32, i64> = BTreeMap::new();
    let (mut bytes, mut over) = (0u64, false);
    read_to_end(brokers, &BTreeMap::new(), topic, &starts, |m| {
        let Some((from, to)) = ranges.get(&m.partition()) else {
            return;
        };
        if m.offset() < *from || m.offset() >= *to || over {
            return;
        }
        reached.insert(m.partition(), m.offset() + 1);
        let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        bytes += value.len() as u64 + 1;
        over = bytes > max_bytes;
        let at = m.timestamp().to_millis().unwrap_or(0);
        records.push((at, m.partition(), m.offset(), value));
    })?;
    if over {
        return Err(ConnectorError::Kafka(format!(
            "the range holds more than {max_bytes} bytes"
        )));
    }
    for (p, (_, to)) in ranges {
        let got = reached.get(p).copied().unwrap_or(0);
        if got < *to {
            return Err(ConnectorError::Kafka(format!(
                "partition {p} of {topic} ends at offset {got}, before the range's end {to}"
            )));
        }
    }
    records.sort_by_key(|r| (r.0, r.1, r.2));
    Ok(records.into_iter().map(|r| r.3).collect())
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
    assign(&consumer, topic, &tpl)?;
    let partitions: Vec<i32> = starts.iter().map(|(p, _)| *p).collect();
    consume(&consumer, topic, &partitions, None, &mut |m| {
        f(m);
        Ok(first_only)
    })
}

/// Polls `consumer` (assigned `partitions` of `topic`) until each partition reached its end,
/// or, with `until`, until the flag is set; `f` takes each record and says whether its
/// partition is done. Fails after 60 s without a record or an end (not with `until`).
fn consume<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    until: Option<&AtomicBool>,
    f: &mut dyn FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<bool, ConnectorError>,
) -> Result<(), ConnectorError> {
    let mut pending: std::collections::BTreeSet<i32> = partitions.iter().copied().collect();
    let mut progress = std::time::Instant::now();
    while match until {
        None => !pending.is_empty(),
        Some(stop) => !stop.load(Ordering::Relaxed),
    } {
        if until.is_none() && progress.elapsed() > Duration::from_secs(60) {
            return Err(ConnectorError::Kafka(format!(
                "reading {topic}: partitions {pending:?} did not reach their end (60 s without \
                 progress)"
            )));
        }
        match consumer.poll(Duration::from_millis(5)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => tracing::warn!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                progress = std::time::Instant::now();
                if f(&m)? {
                    pending.remove(&m.partition());
                }
            }
        }
    }
    Ok(())
}

/// What a [`bare_copy`] does.
pub struct BareCopy<'a> {
    /// Read from the beginning of these partitions of `topic`.
    pub topic: &'a str,
    /// The partitions.
    pub partitions: &'a [i32],
    /// Write to this topic.
    pub out: &'a str,
    /// Write one record per this many read (0: none).
    pub write_every: u64,
    /// Applied over the Kafka source's consumer settings, as a graph's source `options` are.
    pub source_options: &'a BTreeMap<String, String>,
    /// Applied over the Kafka sink's producer settings, as a graph's sink `options` are.
    pub sink_options: &'a BTreeMap<String, String>,
    /// `None`: stop at the partitions' ends (a catch-up); `Some`: ignore ends and relay what
    /// arrives until the flag is set (a steady stream).
    pub until: Option<&'a AtomicBool>,
}

/// The bare clients `tickflow bench --kafka` measures the engine against: reads with a
/// consumer set up like the Kafka source's and writes records (key and value as read) with a
/// producer set up like the Kafka sink's. No parsing, no state: what the broker and the client
/// library alone allow. Returns the records read, once every written record is acknowledged.
pub fn bare_copy(brokers: &str, copy: &BareCopy<'_>) -> Result<u64, ConnectorError> {
    let BareCopy {
        topic,
        partitions,
        out,
        write_every,
        source_options,
        sink_options,
        until,
    } = *copy;
    let stats = Arc::new(KafkaStats::default());
    let mut settings = vec![("group.id", "tickflow.bench.ceiling")];
    settings.extend_from_slice(reader::CONSUMER_DEFAULTS);
    let consumer: BaseConsumer<Context> = client_config(brokers, &settings, source_options)
        .create_with_context(context(&format!("ceiling reader {topic}"), &stats))
        .map_err(|e| kafka_err(brokers, e))?;
    let producer: ThreadedProducer<Context> =
        client_config(brokers, writer::PRODUCER_DEFAULTS, sink_options)
            .create_with_context(context(&format!("ceiling writer {out}"), &stats))
            .map_err(|e| kafka_err(brokers, e))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| kafka_err(topic, e))?;
    }
    assign(&consumer, topic, &tpl)?;
    let mut read = 0u64;
    consume(&consumer, topic, partitions, until, &mut |m| {
        read += 1;
        if write_every > 0 && read.is_multiple_of(write_every) {
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
            let mut record = BaseRecord::to(out).payload(&*value);
            if let Some(key) = m.key() {
                record = record.key(key);
            }
            writer::send_waiting(&producer, record, &|| false)?;
        }
        Ok(false)
    })?;
    writer::wait_acknowledged(&producer, out, Some(Duration::from_secs(60)), &|| false)?;
    Ok(read)
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
        writer::wait_acknowledged(
            &self.producer,
            &self.topic,
            Some(Duration::from_secs(120)),
            &|| false,
        )?;
        delivery_failure(&self.producer, &self.topic)?;
        Ok(self.stats.records_out.load(Ordering::Relaxed))
    }
}
