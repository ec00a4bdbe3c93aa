#!/usr/bin/env python3
"""Prints the offsets a consumer group has committed for TOPIC, and each partition's lag, as
one JSON object: {"partitions": {P: {"committed": C, "end": E, "lag": E - C}}, "lag": total}.
What standard tools show (kafka-consumer-groups --describe), read with confluent-kafka.

    python3 tests/kafka/group_offsets.py --brokers 127.0.0.1:9092 --topic T --group G
"""
import argparse
import json
import sys

from confluent_kafka import Consumer, TopicPartition


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    args = ap.parse_args()
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "enable.auto.commit": False,
    })
    meta = consumer.list_topics(args.topic, timeout=10)
    parts = sorted(meta.topics[args.topic].partitions)
    committed = consumer.committed([TopicPartition(args.topic, p) for p in parts], timeout=10)
    out = {"partitions": {}, "lag": 0}
    for tp in committed:
        _, end = consumer.get_watermark_offsets(TopicPartition(args.topic, tp.partition), timeout=10)
        lag = end - tp.offset if tp.offset >= 0 else None
        out["partitions"][tp.partition] = {"committed": tp.offset, "end": end, "lag": lag}
        out["lag"] += lag or 0
    consumer.close()
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
