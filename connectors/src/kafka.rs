//! Kafka sources and sinks (rdkafka, with its bundled librdkafka).
//!
//! ```toml
//! [sources.ticks]
//! type = "kafka"
//! brokers = "127.0.0.1:9092"
//! topic = "ingestion.market.raw.v1"
//! start = "earliest"            # or "latest"; a checkpoint's offsets always win
//! idle_timeout = "5s"           # a partition silent this long stops holding the watermark
//! options = { "fetch.wait.max.ms" = "5" }   # any librdkafka consumer property
//!
//! [sinks.bars]
//! type = "kafka"
//! input = "bars"
//! brokers = "127.0.0.1:9092"
//! topic = "market.bars.1m.v1"
//! key = "instrument_id"
//! ```
//!
//! The source reads partitions assigned to it explicitly ([`KafkaReader`]; no group
//! rebalancing: the engine spreads partitions over its workers and keeps offsets in its
//! checkpoints) and commits those offsets to the consumer group after each checkpoint, so lag
//! shows in the usual tools. The sink ([`KafkaWriter`]) writes JSON values keyed by a record
//! field and tags every record with headers naming the run and the record's sequence number;
//! after a restore it reads back what the run wrote past the checkpoint and does not write it
//! again (see [`KafkaWriter::resume`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::{ConnectorError, LineSink};

/// Header holding the writing run's id.
pub const RUN_HEADER: &str = "tickflow-run";
/// Header holding the record's sequence number within its sink.
pub const SEQ_HEADER: &str = "tickflow-seq";
/// How long metadata and watermark requests wait for the broker.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a source starts in partitions its checkpoint has no offset for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// The oldest record still in the topic.
    #[default]
    Earliest,
    /// Only records produced after the source starts.
    Latest,
}

/// Configuration of a `kafka` source (besides `type`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `bootstrap.servers`: comma-separated `host:port`.
    pub brokers: String,
    /// The topic to read (one per source; list several sources to read several topics).
    pub topic: String,
    /// Where to start without a checkpoint: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start: StartPosition,
    /// Consumer group the offsets are committed to (default `tickflow.<graph>.<source>`).
    pub group_id: Option<String>,
    /// How far behind the newest event time of a partition its watermark trails; defaults to
    /// `[graph.defaults].max_out_of_orderness`.
    pub max_out_of_orderness: Option<String>,
    /// A partition with no record for this long stops holding the watermark back (default
    /// `5s`; `0s` turns idleness off).
    pub idle_timeout: Option<String>,
    /// Stop at the end offsets found at start (a bounded run, like a file), instead of
    /// running until stopped.
    #[serde(default)]
    pub stop_at_end: bool,
    /// Where a record's event time is when it is not in `ts` (RFC 3339 or epoch ms), such
    /// as venue records a `map` operator rewrites later: `{ field = "time_ns", unit = "ns" }`
    /// (or `format = "..."`). The watermark follows it.
    pub event_time: Option<tickflow_operators::event_time::TimestampConfig>,
    /// librdkafka consumer properties, passed through (`"fetch.wait.max.ms" = "5"`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Configuration of a `kafka` sink (besides `type` and `input`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic to write; it must exist.
    pub topic: String,
    /// The record field whose value is the message key (for example `instrument_id`); records
    /// without it, or a sink without `key`, are written without a key.
    pub key: Option<String>,
    /// librdkafka producer properties, passed through.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Counters of one Kafka client, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Bytes of keys and values consumed.
    pub bytes_in: AtomicU64,
    /// Bytes of keys and values produced (acknowledged).
    pub bytes_out: AtomicU64,
    /// Records produced and acknowledged.
    pub records_out: AtomicU64,
    /// Records whose delivery failed, or that could not be queued.
    pub produce_errors: AtomicU64,
    /// Errors the client reported (broker down, transport failures, ...).
    pub client_errors: AtomicU64,
    /// Records a restored sink found already written by its run and did not write again.
    pub replay_skipped: AtomicU64,
    /// Consumer lag by `(topic, partition)`, from librdkafka's statistics.
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Whether the last client error is newer than the last good delivery or fetch.
    pub broker_down: AtomicBool,
}

impl KafkaStats {
    fn client_error(&self, who: &str, error: &KafkaError, reason: &str) {
        self.client_errors.fetch_add(1, Ordering::Relaxed);
        self.broker_down.store(true, Ordering::Relaxed);
        tracing::warn!("kafka {who}: {error}: {reason}");
    }
}

/// The client context: statistics into [`KafkaStats`], errors into logs and counters.
struct Context {
    who: String,
    stats: Arc<KafkaStats>,
    /// Sink only: the first delivery that failed for good.
    failed: Mutex<Option<String>>,
    /// Sink only: per partition, the offset after the newest acknowledged record.
    acked: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut lag = self.stats.lag.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // The partition's end (the fetch's high watermark) minus the application's
                // position; librdkafka's own `consumer_lag` counts from the committed offset.
                let value = if p.hi_offset >= 0 && p.app_offset >= 0 {
                    (p.hi_offset - p.app_offset).max(0)
                } else {
                    p.consumer_lag
                };
                if partition >= 0 && value >= 0 {
                    lag.insert((topic.clone(), partition), value);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news, not an error (it also arrives through poll).
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        self.stats.client_error(&self.who, &error, reason);
    }
}

impl ConsumerContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let bytes = m.payload_len() + m.key().map_or(0, <[u8]>::len);
                self.stats
                    .bytes_out
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                self.stats.records_out.fetch_add(1, Ordering::Relaxed);
                self.stats.broker_down.store(false, Ordering::Relaxed);
                let mut acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
                let next = acked.entry(m.partition()).or_insert(0);
                *next = (*next).max(m.offset() + 1);
            }
            Err((e, _)) => {
                self.stats.produce_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("kafka {}: delivery failed: {e}", self.who);
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                failed.get_or_insert_with(|| format!("delivery failed: {e}"));
            }
        }
    }
}

fn context(who: &str, stats: &Arc<KafkaStats>) -> Context {
    Context {
        who: who.to_string(),
        stats: Arc::clone(stats),
        failed: Mutex::new(None),
        acked: Mutex::new(HashMap::new()),
    }
}

fn kafka_err(what: &str, e: KafkaError) -> ConnectorError {
    ConnectorError::Kafka(format!("{what}: {e}"))
}

/// A client configuration: tickflow's defaults, then the user's `options` over them.
fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    options: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in options {
        config.set(k, v);
    }
    config
}

/// How long [`partitions`] keeps retrying while the brokers do not answer.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// One metadata request of [`partitions`]: short, so that a stop is seen soon (it retries).
const RETRY_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The partitions of `topic`, sorted; an error names the topic and brokers if it does not
/// exist. While the brokers do not answer it retries (logging each failure) for
/// [`CONNECT_PATIENCE`], so a graph started during a short broker outage waits for the broker;
/// then it gives up with an error naming brokers and topic. `cancel` is asked between
/// attempts: a stop (SIGTERM, Ctrl-C, an API stop) ends the wait at once.
pub fn partitions(
    brokers: &str,
    topic: &str,
    options: &BTreeMap<String, String>,
    cancel: &dyn Fn() -> bool,
) -> Result<Vec<i32>, ConnectorError> {
    let started = std::time::Instant::now();
    loop {
        if cancel() {
            return Err(ConnectorError::Kafka(format!(
                "topic {topic} on {brokers}: stopped before its partitions were known"
            )));
        }
        match partitions_once(brokers, topic, options, RETRY_REQUEST_TIMEOUT) {
            Ok(found) => return Ok(found),
            Err(Lookup::Unanswered(e)) if cancel() => {
                return Err(ConnectorError::Kafka(format!("{e}; stopped while waiting")))
            }
            Err(Lookup::Unanswered(e)) if started.elapsed() < CONNECT_PATIENCE => {
                tracing::warn!("{e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(Lookup::Unanswered(e)) => {
                return Err(ConnectorError::Kafka(format!(
                    "{e}; gave up after {} s",
                    CONNECT_PATIENCE.as_secs()
                )))
            }
            Err(Lookup::Failed(e)) => return Err(e),
        }
    }
}

/// Why a metadata lookup failed: the brokers did not answer (worth retrying), or anything else.
enum Lookup {
    Unanswered(ConnectorError),
    Failed(ConnectorError),
}

fn partitions_once(
    brokers: &str,
    topic: &str,
    options: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Vec<i32>, Lookup> {
    let consumer: BaseConsumer = client_config(brokers, &[], options)
        .create()
        .map_err(|e| Lookup::Failed(kafka_err(brokers, e)))?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| {
        Lookup::Unanswered(kafka_err(
            &format!("reading metadata of topic {topic} from {brokers}"),
            e,
        ))
    })?;
    let mut out: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if out.is_empty() {
        return Err(Lookup::Failed(ConnectorError::Kafka(format!(
            "topic {topic} does not exist on {brokers} (create it first: `tickflow topics create \
             --brokers {brokers} {topic} --partitions N`)"
        ))));
    }
    out.sort_unstable();
    Ok(out)
}

/// Creates `topic` with `partitions` partitions; an existing topic is left as it is.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<bool, ConnectorError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, &[], &BTreeMap::new())
        .create()
        .map_err(|e| kafka_err(brokers, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConnectorError::Kafka(e.to_string()))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = runtime
        .block_on(admin.create_topics([&new], &options))
        .map_err(|e| kafka_err(&format!("creating topic {topic} on {brokers}"), e))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(ConnectorError::Kafka(format!(
            "creating topic {topic} on {brokers}: {code}"
        ))),
        None => Err(ConnectorError::Kafka(format!(
            "creating topic {topic} on {brokers}: no answer"
        ))),
    }
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its value as text (bytes that are not UTF-8 are replaced; no value gives "").
    pub text: String,
}

/// Reads a fixed set of partitions of one topic.
pub struct KafkaReader {
    consumer: BaseConsumer<Context>,
    topic: String,
    stats: Arc<KafkaStats>,
    /// Per partition, the next offset to hand out: anything below it (records read again
    /// after starting early to resume, or delivered twice by the client, which the kill test
    /// saw happen under load) is dropped, so each offset is handed out once.
    next: HashMap<i32, i64>,
}

/// How far before a resume offset a reader starts: at least one producer batch (librdkafka's
/// `batch.num.messages` default), so the fetch starts at or before the batch holding the
/// offset.
const SEEK_BACK: i64 = 10_000;

/// Where each partition starts, and below which offset its records are dropped.
type ResumePlan = (Vec<(i32, Offset)>, HashMap<i32, i64>);

/// Where each partition starts: `fresh` where no offset is given, else where resuming at the
/// offset is safe, with the offsets below which records are read again only to be dropped.
///
/// A fetch from an offset inside a record batch should return that batch (the client drops
/// the records before the offset), but tansu 0.6's memory storage returns the *next* batch,
/// silently skipping records. So a resume starts up to [`SEEK_BACK`] records earlier, checked
/// with a probe: if the first record fetched from there is still past the offset, it starts
/// from the beginning of the partition instead.
fn resume_plan(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    partitions: &[(i32, Option<i64>)],
    fresh: Offset,
) -> Result<ResumePlan, ConnectorError> {
    let resumes: HashMap<i32, i64> = partitions
        .iter()
        .filter_map(|(p, o)| o.map(|o| (*p, o)))
        .collect();
    let mut safe: HashMap<i32, Offset> = HashMap::new();
    for (round, back) in [(0, SEEK_BACK), (1, i64::MAX)] {
        let pending: Vec<(i32, i64)> = resumes
            .iter()
            .map(|(p, o)| (*p, *o))
            .filter(|(p, _)| !safe.contains_key(p))
            .collect();
        if pending.is_empty() {
            break;
        }
        let starts: Vec<(i32, Offset)> = pending
            .iter()
            .map(|(p, o)| match o.saturating_sub(back) {
                s if s <= 0 => (*p, Offset::Beginning),
                s => (*p, Offset::Offset(s)),
            })
            .collect();
        let firsts = first_offsets(brokers, options, topic, &starts)?;
        for ((p, o), (_, start)) in pending.iter().zip(&starts) {
            match firsts.get(p) {
                // Nothing from there on, or the first record is at or before the offset.
                None => {
                    safe.insert(*p, *start);
                }
                Some(first) if first <= o => {
                    safe.insert(*p, *start);
                }
                Some(first) if round == 1 => {
                    tracing::warn!(
                        "{topic}/{p}: resuming at offset {o}, but the partition starts at \
                         {first}: records {o}..{first} are gone (retention?)"
                    );
                    safe.insert(*p, Offset::Offset(*first));
                }
                Some(_) => {}
            }
        }
    }
    let assignment = partitions
        .iter()
        .map(|(p, o)| match o {
            Some(o) => (*p, safe.get(p).copied().unwrap_or(Offset::Offset(*o))),
            None => (*p, fresh),
        })
        .collect();
    Ok((assignment, resumes))
}

/// The offset of the first record each partition delivers from `starts` (none: the
/// partition ended first).
fn first_offsets(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    starts: &[(i32, Offset)],
) -> Result<HashMap<i32, i64>, ConnectorError> {
    let mut firsts = HashMap::new();
    let mut first = |m: &rdkafka::message::BorrowedMessage<'_>| {
        firsts.entry(m.partition()).or_insert(m.offset());
    };
    read_until(brokers, options, topic, starts, &mut first, true)?;
    Ok(firsts)
}

impl KafkaReader {
    /// A reader of `partitions` of the source's topic, each starting at the offset given, or
    /// at `start` where none is given.
    pub fn open(
        config: &KafkaSourceConfig,
        group_id: &str,
        partitions: &[(i32, Option<i64>)],
        stats: &Arc<KafkaStats>,
    ) -> Result<Self, ConnectorError> {
        let defaults = [
            ("group.id", group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // The end of a partition is told by the fetch's high watermark (PartitionEOF), not
            // by ListOffsets, which tansu 0.6's memory storage answers with stale offsets.
            ("enable.partition.eof", "true"),
            ("fetch.wait.max.ms", "10"),
            ("statistics.interval.ms", "1000"),
            ("reconnect.backoff.max.ms", "1000"),
        ];
        let consumer: BaseConsumer<Context> =
            client_config(&config.brokers, &defaults, &config.options)
                .create_with_context(context(&format!("source {}", config.topic), stats))
                .map_err(|e| kafka_err(&config.brokers, e))?;
        let fresh = match config.start {
            StartPosition::Earliest => Offset::Beginning,
            StartPosition::Latest => Offset::End,
        };
        let (assignment, next) = resume_plan(
            &config.brokers,
            &config.options,
            &config.topic,
            partitions,
            fresh,
        )?;
        let mut tpl = TopicPartitionList::new();
        for (p, at) in assignment {
            tpl.add_partition_offset(&config.topic, p, at)
                .map_err(|e| kafka_err(&config.topic, e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| kafka_err(&format!("assigning partitions of {}", config.topic), e))?;
        Ok(KafkaReader {
            consumer,
            topic: config.topic.clone(),
            stats: Arc::clone(stats),
            next,
        })
    }

    /// Appends up to `max` records that have arrived to `out`, waiting at most `wait` for the
    /// first, and to `at_end` the partitions whose end was reached, with the end offset where
    /// the client knows it (records before it may still be queued behind the notice; `None`
    /// when nothing was read from the partition by this reader: its start is its end). Transport errors (a broker
    /// down) are counted and logged, not returned: the client reconnects by itself.
    pub fn poll_batch(
        &mut self,
        max: usize,
        wait: Duration,
        out: &mut Vec<KafkaRecord>,
        at_end: &mut Vec<(i32, Option<i64>)>,
    ) {
        let mut timeout = wait;
        for _ in 0..max {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    let next = self.next.entry(m.partition()).or_insert(0);
                    if m.offset() < *next {
                        continue;
                    }
                    *next = m.offset() + 1;
                    let payload = m.payload().unwrap_or_default();
                    let bytes = payload.len() + m.key().map_or(0, <[u8]>::len);
                    self.stats
                        .bytes_in
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                    out.push(KafkaRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        text: tickflow_state::text::line_text(payload),
                    });
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let end = self.consumer.position().ok().and_then(|tpl| {
                        match tpl.find_partition(&self.topic, p)?.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        }
                    });
                    at_end.push((p, end));
                }
                Some(Err(e)) => {
                    self.stats
                        .client_error(&format!("source {}", self.topic), &e, "consuming");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        if !out.is_empty() {
            self.stats.broker_down.store(false, Ordering::Relaxed);
        }
    }

    /// Commits `offsets` (partition, next offset to read) to the consumer group, without
    /// waiting for the answer; a failure is logged and counted.
    pub fn commit(&self, offsets: &[(i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            if tpl
                .add_partition_offset(&self.topic, *p, Offset::Offset(*o))
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            self.stats
                .client_error(&format!("source {}", self.topic), &e, "committing offsets");
        }
    }
}

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
fn partition_of(key: &[u8], partitions: usize) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as i32
}

/// The partition of a record: by key hash, or round robin on `n` without a key.
fn pick_partition(partitions: &[i32], key: Option<&[u8]>, n: u64) -> i32 {
    let count = partitions.len().max(1);
    let index = match key {
        Some(k) => partition_of(k, count) as usize,
        None => (n % count as u64) as usize,
    };
    partitions.get(index).copied().unwrap_or(0)
}

/// Queues `record`, waiting while the local queue is full (a slow or absent broker) unless
/// `cancel` says to stop.
fn send_waiting<C: ProducerContext<DeliveryOpaque = ()>>(
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

/// The first delivery of `producer` that failed for good, as an error naming `topic`.
fn delivery_failure(
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
        let defaults = [
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
        let producer: ThreadedProducer<Context> =
            client_config(&config.brokers, &defaults, &config.options)
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
        loop {
            self.check_failed()?;
            match self.producer.flush(Duration::from_millis(200)) {
                Ok(()) => break,
                Err(_) if !(self.cancel)() => continue,
                Err(e) => return Err(kafka_err(&format!("flushing {}", self.topic), e)),
            }
        }
        self.check_failed()?;
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
fn read_to_end(
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
fn read_until(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioner_is_stable_and_spreads_keys() {
        assert_eq!(partition_of(b"AAPL", 4), partition_of(b"AAPL", 4));
        let used: std::collections::BTreeSet<i32> = (0..100)
            .map(|i| partition_of(format!("I{i}").as_bytes(), 4))
            .collect();
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn configs_reject_unknown_keys_and_read_options() {
        let c: KafkaSourceConfig = toml::from_str(
            "brokers = \"b:1\"\ntopic = \"t\"\nstart = \"latest\"\noptions = { \"fetch.wait.max.ms\" = \"5\" }",
        )
        .unwrap();
        assert_eq!(c.start, StartPosition::Latest);
        assert_eq!(c.options["fetch.wait.max.ms"], "5");
        assert!(
            toml::from_str::<KafkaSourceConfig>("brokers = \"b\"\ntopic = \"t\"\ntopics = []")
                .is_err()
        );
        assert!(toml::from_str::<KafkaSourceConfig>(
            "brokers = \"b\"\ntopic = \"t\"\nstart = \"middle\""
        )
        .is_err());
        let s: KafkaSinkConfig =
            toml::from_str("brokers = \"b\"\ntopic = \"t\"\nkey = \"instrument_id\"").unwrap();
        assert_eq!(s.key.as_deref(), Some("instrument_id"));
    }
}
