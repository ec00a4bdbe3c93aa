//! Writing keyed records once across restores.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use super::*;
use crate::{ConnectorError, LineSink};

/// What a Kafka sink has made durable at a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaSinkPosition {
    /// The id of the run writing (kept across restores of one data directory).
    pub run: String,
    /// Per partition, the offset after this run's newest acknowledged record: a restore reads
    /// back from here.
    pub offsets: BTreeMap<i32, i64>,
}

/// A stable partitioner: FNV-1a of the key, modulo the partition count.
pub(super) fn partition_of(key: &[u8], partitions: usize) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as i32
}

/// The partition of a record: by key hash, or round robin on `n` without a key.
pub(super) fn pick_partition(partitions: &[i32], key: Option<&[u8]>, n: u64) -> i32 {
    let count = partitions.len().max(1);
    let index = match key {
        Some(k) => partition_of(k, count) as usize,
        None => (n % count as u64) as usize,
    };
    partitions.get(index).copied().unwrap_or(0)
}

/// Queues `record`, waiting while the local queue is full (a slow or absent broker) unless
/// `cancel` says to stop.
pub(super) fn send_waiting<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, [u8], str>,
    cancel: &dyn Fn() -> bool,
) -> Result<(), ConnectorError> {
    let topic = record.topic.to_string();
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if cancel() {
                    return Err(ConnectorError::Kafka(format!(
                        "topic {topic}: stopped while the producer queue was full"
                    )));
                }
                std::thread::sleep(Duration::from_millis(2));
                record = r;
            }
            Err((e, _)) => return Err(kafka_err(&format!("producing to {topic}"), e)),
        }
    }
}

/// Waits until the broker has acknowledged every record `producer` was given, for at most
/// `limit` (none: until `stop` says to stop).
///
/// rust-rdkafka's `flush` with a timeout polls the producer's main queue for up to 100 ms
/// between checks; a threaded producer's own thread takes the delivery reports from that queue,
/// so every flush with a record in flight took 100 ms or more (for a sink, on its worker thread,
/// at every checkpoint). Here each check is `rd_kafka_flush` with no wait (which also sends
/// what lingers), 1 ms apart.
pub(super) fn wait_acknowledged<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    topic: &str,
    limit: Option<Duration>,
    stop: &dyn Fn() -> bool,
) -> Result<(), ConnectorError> {
    let started = std::time::Instant::now();
    loop {
        match producer.flush(Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(e) if stop() || limit.is_some_and(|l| started.elapsed() >= l) => {
                return Err(kafka_err(&format!("flushing {topic}"), e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// The first delivery of `producer` that failed for good, as an error naming `topic`.
pub(super) fn delivery_failure(
    producer: &ThreadedProducer<Context>,
    topic: &str,
) -> Result<(), ConnectorError> {
    let failed = producer
        .context()
        .failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match failed {
        Some(f) => Err(ConnectorError::Kafka(format!("topic {topic}: {f}"))),
        None => Ok(()),
    }
}

/// The sink producer's settings (before the sink's `options`).
pub(super) const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("linger.ms", "2"),
    // Keep retrying through broker outages; the dataflow waits at its next checkpoint.
    ("message.timeout.ms", "0"),
    // Retries after a lost acknowledgement (a broker restart) are not written twice, and
    // one request in flight keeps each partition in order (5 made tansu slower).
    ("enable.idempotence", "true"),
    ("max.in.flight.requests.per.connection", "1"),
    ("statistics.interval.ms", "1000"),
    ("reconnect.backoff.max.ms", "1000"),
];

/// Writes rendered records to a topic, each keyed by a field and tagged with the run and its
/// sequence number.
pub struct KafkaWriter {
    producer: ThreadedProducer<Context>,
    topic: String,
    key_field: Option<String>,
    partitions: Vec<i32>,
    run: String,
    seq: u64,
    /// Records this run wrote after the checkpoint being resumed from, by (partition, key and
    /// value): a regenerated record found here is not written again.
    written: HashMap<(i32, Vec<u8>, Vec<u8>), u32>,
    /// Where the restore read back from, per partition.
    read_back_from: BTreeMap<i32, i64>,
    stats: Arc<KafkaStats>,
    cancel: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl KafkaWriter {
    /// A writer to `config.topic` for a new run `run` (no earlier output to reconcile).
    /// `cancel` is asked while waiting for the broker, so a stop does not hang on an outage.
    pub fn create(
        config: &KafkaSinkConfig,
        run: &str,
        stats: &Arc<KafkaStats>,
        cancel: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<Self, ConnectorError> {
        let partitions = partitions(&config.brokers, &config.topic, &config.options, &*cancel)?;
        let producer: ThreadedProducer<Context> =
            client_config(&config.brokers, PRODUCER_DEFAULTS, &config.options)
                .create_with_context(context(&format!("sink {}", config.topic), stats))
                .map_err(|e| kafka_err(&config.brokers, e))?;
        Ok(KafkaWriter {
            producer,
            topic: config.topic.clone(),
            key_field: config.key.clone(),
            partitions,
            run: run.to_string(),
            seq: 0,
            written: HashMap::new(),
            read_back_from: BTreeMap::new(),
            stats: Arc::clone(stats),
            cancel,
        })
    }

    /// A writer continuing the run of checkpoint `position`, whose sink had written `lines`
    /// records. Everything the run wrote after that checkpoint (read back from the offsets
    /// it recorded to the end of each partition) is remembered by partition, key and value;
    /// the records the restored dataflow regenerates are compared against it and written only
    /// if not already there. Consumers therefore see each record once, in the order first
    /// written.
    pub fn resume(
        config: &KafkaSinkConfig,
        position: &KafkaSinkPosition,
        lines: u64,
        stats: &Arc<KafkaStats>,
        cancel: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<Self, ConnectorError> {
        let mut writer = Self::create(config, &position.run, stats, cancel)?;
        writer.seq = lines;
        writer.read_back_from = writer
            .partitions
            .iter()
            .map(|p| (*p, position.offsets.get(p).copied().unwrap_or(0)))
            .collect();
        let starts: Vec<(i32, Option<i64>)> = writer
            .read_back_from
            .iter()
            .map(|(p, o)| (*p, Some(*o)))
            .collect();
        let written = &mut writer.written;
        read_to_end(
            &config.brokers,
            &config.options,
            &config.topic,
            &starts,
            |m| {
                let ours = m.headers().is_some_and(|h| {
                    h.iter()
                        .any(|h| h.key == RUN_HEADER && h.value == Some(position.run.as_bytes()))
                });
                if ours {
                    let key = m.key().unwrap_or_default().to_vec();
                    let value = m.payload().unwrap_or_default().to_vec();
                    *written.entry((m.partition(), key, value)).or_default() += 1;
                }
            },
        )?;
        let found: u32 = writer.written.values().sum();
        if found > 0 {
            tracing::info!(
                "sink {}: {found} record(s) written after the checkpoint are already there; \
                 they will not be written again",
                config.topic
            );
        }
        Ok(writer)
    }

    fn check_failed(&self) -> Result<(), ConnectorError> {
        delivery_failure(&self.producer, &self.topic)
    }
}

impl LineSink for KafkaWriter {
    fn write_line(&mut self, line: &str) -> Result<(), ConnectorError> {
        let seq = self.seq;
        self.seq += 1;
        let key = self
            .key_field
            .as_deref()
            .and_then(|f| crate::record_key(line, f))
            .map(String::into_bytes);
        let partition = pick_partition(&self.partitions, key.as_deref(), seq);
        if !self.written.is_empty() {
            let id = (
                partition,
                key.clone().unwrap_or_default(),
                line.as_bytes().to_vec(),
            );
            if let Some(count) = self.written.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    self.written.remove(&id);
                }
                self.stats.replay_skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let seq_text = seq.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: RUN_HEADER,
                value: Some(self.run.as_bytes()),
            })
            .insert(Header {
                key: SEQ_HEADER,
                value: Some(seq_text.as_bytes()),
            });
        let mut record: BaseRecord<'_, [u8], str> = BaseRecord::to(&self.topic)
            .payload(line)
            .partition(partition)
            .headers(headers);
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        send_waiting(&self.producer, record, &*self.cancel).inspect_err(|_| {
            self.stats.produce_errors.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.sync(false).map(|_| ())
    }

    /// Waits until the broker has acknowledged every record written so far (through outages,
    /// until told to stop), then returns the records written.
    fn sync(&mut self, _fsync: bool) -> Result<u64, ConnectorError> {
        let stop = || self.check_failed().is_err() || (self.cancel)();
        let waited = wait_acknowledged(&self.producer, &self.topic, None, &stop);
        // A record that failed for good is the error to report, before the wait's own.
        self.check_failed()?;
        waited?;
        Ok(self.seq)
    }
}

impl KafkaWriter {
    /// The run and, per partition, where a restore from now on must read back from: after the
    /// newest acknowledged record; but while records read back at this writer's own restore
    /// have not all been regenerated, some of them may belong after this point, so the earlier
    /// start is kept.
    pub fn position(&self) -> KafkaSinkPosition {
        let acked = self
            .producer
            .context()
            .acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let offsets = if self.written.is_empty() {
            let mut offsets = self.read_back_from.clone();
            offsets.extend(acked);
            offsets
        } else {
            self.read_back_from.clone()
        };
        KafkaSinkPosition {
            run: self.run.clone(),
            offsets,
        }
    }
}
