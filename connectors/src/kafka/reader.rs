//! Reading assigned partitions, resuming at checkpoint offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::*;
use crate::ConnectorError;

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

/// Reads a fixed set of partitions of one topic, each from its own queue, so that a
/// partition can be left unread while others are read (watermark alignment) without pausing
/// its fetches: a fetch that resumes inside a record batch is not safe on every broker (see
/// [`resume_plan`]).
pub struct KafkaReader {
    consumer: Arc<BaseConsumer<Context>>,
    queues: Vec<PartQueue>,
    topic: String,
    stats: Arc<KafkaStats>,
    /// Per partition, the next offset to hand out: anything below it (records read again
    /// after starting early to resume, or delivered twice by the client, which the kill test
    /// saw happen under load) is dropped, so each offset is handed out once.
    next: HashMap<i32, i64>,
}

/// One partition's own queue of fetched records.
struct PartQueue {
    id: i32,
    queue: PartitionQueue<Context>,
    /// Left unread while the driver holds many of its records back.
    unread: bool,
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
pub(super) fn resume_plan(
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

/// The source consumer's settings (before the source's `options`; the group id comes apart).
pub(super) const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    // The end of a partition is told by the fetch's high watermark (PartitionEOF), not
    // by ListOffsets, which tansu 0.6's memory storage answers with stale offsets.
    ("enable.partition.eof", "true"),
    ("fetch.wait.max.ms", "10"),
    // Fetched records a partition's queue may hold (librdkafka's default, 64 MiB, is
    // per partition here: each has its own queue); a reader of many partitions holds less
    // per partition (see `QUEUED_KBYTES_BUDGET`). The driver leaves a partition that ran
    // ahead unread, so its queue fills to this bound: 4 partitions at 16 MiB made the
    // Kafka catch-up's peak RSS 215 MiB against 55 MiB for the same ticks from a file; at 2
    // MiB and 2,000 records (below) 128-142 MiB, at a speed within noise (2,000,000 ticks,
    // 2 workers, three runs each interleaved: 770k-855k against 785k-835k ticks/s). Before
    // the consumers fetched metadata before assigning and before `queued.min.messages` was
    // lowered from librdkafka's default, 8 MiB had made catch-up 25 % slower.
    ("queued.max.messages.kbytes", "2048"),
    // Records a partition's queue keeps fetched ahead, and how long its fetching pauses once
    // it holds more. librdkafka's defaults (100,000 records, then 1 s) stalled catch-up: the
    // driver reads partitions aligned on event time, so a partition that ran ahead filled its
    // queue, stopped fetching for a whole second, was drained meanwhile, and then held the
    // watermark (and every worker) while it waited for its next fetch. 2,000,000 ticks, 2
    // workers: 6.0-6.4 s -> 4.5-5.0 s. 2,000 (from 20,000) lowered the peak RSS by another
    // 30 MiB at the same speed.
    ("queued.min.messages", "2000"),
    ("fetch.queue.backoff.ms", "10"),
    ("statistics.interval.ms", "1000"),
    ("reconnect.backoff.max.ms", "1000"),
];

/// Fetched records (KiB) the client may hold for one reader, over all its partitions, when
/// they are many: memory stays bounded whatever the topic's partition count.
const QUEUED_KBYTES_BUDGET: usize = 8 * 1024;

/// `queued.max.messages.kbytes` for a reader of `partitions` partitions: the default above,
/// less per partition once the budget is shared by more than four, never under 256 KiB.
fn queued_kbytes(partitions: usize) -> usize {
    (QUEUED_KBYTES_BUDGET / partitions.max(1)).clamp(256, 2048)
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
        let mut defaults = vec![("group.id", group_id)];
        defaults.extend_from_slice(CONSUMER_DEFAULTS);
        let per_partition = queued_kbytes(partitions.len()).to_string();
        defaults.push(("queued.max.messages.kbytes", &per_partition));
        let consumer: Arc<BaseConsumer<Context>> = Arc::new(
            client_config(&config.brokers, &defaults, &config.options)
                .create_with_context(context(&format!("source {}", config.topic), stats))
                .map_err(|e| kafka_err(&config.brokers, e))?,
        );
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
        for (p, at) in &assignment {
            tpl.add_partition_offset(&config.topic, *p, *at)
                .map_err(|e| kafka_err(&config.topic, e))?;
        }
        assign(&consumer, &config.topic, &tpl)?;
        let mut queues = Vec::new();
        for (p, _) in &assignment {
            let queue = consumer
                .split_partition_queue(&config.topic, *p)
                .ok_or_else(|| {
                    ConnectorError::Kafka(format!(
                        "{}: the client has no queue for partition {p}",
                        config.topic
                    ))
                })?;
            queues.push(PartQueue {
                id: *p,
                queue,
                unread: false,
            });
        }
        Ok(KafkaReader {
            consumer,
            queues,
            topic: config.topic.clone(),
            stats: Arc::clone(stats),
            next,
        })
    }

    /// Appends to `out` up to `max` records of each partition not left unread that have
    /// arrived, and to `at_end` the partitions whose end was reached, with the end offset where
    /// the client knows it (records before it may still be queued behind the notice; `None`
    /// when nothing was read from the partition by this reader: its start is its end).
    /// Transport errors (a broker down) are counted and logged, not returned: the client
    /// reconnects by itself.
    pub fn poll_batch(
        &mut self,
        max: usize,
        out: &mut Vec<KafkaRecord>,
        at_end: &mut Vec<(i32, Option<i64>)>,
    ) {
        // The consumer's own queue serves callbacks and client-wide errors.
        for _ in 0..max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.stats
                        .client_error(&format!("source {}", self.topic), &e, "consuming");
                    break;
                }
            }
        }
        for q in self.queues.iter().filter(|q| !q.unread) {
            for _ in 0..max {
                match q.queue.poll(Duration::ZERO) {
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
                        break;
                    }
                    Some(Err(e)) => {
                        self.stats.client_error(
                            &format!("source {} partition {}", self.topic, q.id),
                            &e,
                            "consuming",
                        );
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            self.stats.broker_down.store(false, Ordering::Relaxed);
        }
    }

    /// Leaves `partition` unread (or reads it again): its fetched records wait in its queue,
    /// which the client keeps within `queued.max.messages.kbytes`; nothing is skipped.
    pub fn leave_unread(&mut self, partition: i32, unread: bool) {
        if let Some(q) = self.queues.iter_mut().find(|q| q.id == partition) {
            q.unread = unread;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_partitions_share_one_queue_budget() {
        assert_eq!(queued_kbytes(1), 2048);
        assert_eq!(queued_kbytes(4), 2048);
        assert_eq!(queued_kbytes(16), 512);
        // The floor keeps a fetch's worth per partition however many there are.
        assert_eq!(queued_kbytes(1000), 256);
        let total = |n: usize| n * queued_kbytes(n);
        assert!((1..=32).all(|n| total(n) <= QUEUED_KBYTES_BUDGET));
    }
}
