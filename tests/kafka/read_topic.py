#!/usr/bin/env python3
"""An independent reader of a tickflow output topic: Python's confluent-kafka (PyPI).

Reads every partition of TOPIC from the beginning to its end and
prints one JSON object per record: partition, offset, key, value and headers.

    python3 tests/kafka/read_topic.py --brokers 127.0.0.1:9092 --topic market.bars.1m.v1
"""
import argparse
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "tickflow-python-reader",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
        "enable.partition.eof": True,
    })
    meta = consumer.list_topics(args.topic, timeout=10)
    topic = meta.topics.get(args.topic)
    if topic is None or topic.error is not None:
        print(f"topic {args.topic} not found: {topic and topic.error}", file=sys.stderr)
        return 1
    # The end of each partition is told by the fetch (PartitionEOF), not ListOffsets.
    pending = set(topic.partitions)
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
    deadline = time.monotonic() + args.timeout
    out = sys.stdout
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
            else:
                print(f"error: {msg.error()}", file=sys.stderr)
            continue
        headers = [[k, (v or b"").decode("utf-8", "replace")] for k, v in (msg.headers() or [])]
        key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
        out.write(json.dumps({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": key,
            "value": (msg.value() or b"").decode("utf-8", "replace"),
            "headers": headers,
        }) + "\n")
    consumer.close()
    if pending:
        print(f"partitions {sorted(pending)} did not reach their end", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
