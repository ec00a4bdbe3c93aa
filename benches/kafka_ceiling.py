"""The Kafka ceiling: how fast a bare client reads a topic and writes every record to another
topic through the same broker, with no processing, in Python. `tickflow bench --kafka` now
measures its own ceiling with Rust clients (rdkafka, the engine's settings) after every catch-up
run; those read and write 2-3x faster than this script, whose per-record Python loop is its own
limit. Kept as an independent client's view of the broker.

Usage (broker from `deploy/kafka-broker.sh start PORT`, ticks from `tickflow gen`):

    tickflow topics create ceiling.in --partitions 4 --brokers 127.0.0.1:PORT
    tickflow produce ticks.jsonl --topic ceiling.in --brokers 127.0.0.1:PORT
    $(bash deploy/kafka-broker.sh python) benches/kafka_ceiling.py \\
        --brokers 127.0.0.1:PORT --topic ceiling.in --write-every 5

The clients are confluent-kafka (librdkafka, as tickflow uses), one process per share of the
partitions (`--clients`, 2 like the bench's workers), consuming in batches of 10,000 and producing with the settings tickflow's Kafka sink uses (acks=all, idempotence, one request
in flight, 2 ms linger) to a topic with as many partitions as the input.
"""

import argparse
import multiprocessing
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def copy(brokers: str, topic: str, out: str, partitions: list, write_every: int) -> tuple:
    """Reads `partitions` of `topic` from the start to their current end, writing one record per
    `write_every` to `out`; returns (records read, seconds from the first record)."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"ceiling-{time.time_ns()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 1,
            "linger.ms": 2,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    count = sum(ends.values())
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    n, started = 0, None
    while n < count:
        batch = consumer.consume(10_000, 0.05)
        if batch and started is None:
            started = time.perf_counter()
        for m in batch:
            if m.error():
                continue
            n += 1
            if not write_every or n % write_every:
                continue
            while True:
                try:
                    producer.produce(out, m.value(), key=m.key())
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    if left:
        raise SystemExit(f"{left} records not acknowledged")
    return n, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True, help="topic to read from the beginning")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--clients",
        type=int,
        default=2,
        help="client processes, the partitions spread over them (tickflow's bench runs 2 workers)",
    )
    ap.add_argument(
        "--write-every",
        type=int,
        default=1,
        help="write one record per this many read (0: read only); tickflow's bench writes a bar "
        "per ~5 ticks on its data",
    )
    args = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": args.brokers})
    parts = sorted(admin.list_topics(args.topic, timeout=10).topics[args.topic].partitions)
    rates = []
    for run in range(args.runs):
        out = f"{args.topic}.copy.{time.time_ns()}"
        # Written like tickflow's bench writes its outputs: to a topic with as many partitions.
        for f in admin.create_topics([NewTopic(out, len(parts), 1)]).values():
            f.result()
        shares = [parts[i :: args.clients] for i in range(args.clients)]
        started = time.perf_counter()
        with multiprocessing.Pool(args.clients) as pool:
            results = pool.starmap(
                copy, [(args.brokers, args.topic, out, s, args.write_every) for s in shares]
            )
        n = sum(r[0] for r in results)
        # From the first record read to the last acknowledged, over all clients.
        elapsed = max(r[1] for r in results)
        rates.append(n / elapsed)
        print(
            f"run {run + 1}: {args.clients} clients read {n} records (writing one per "
            f"{args.write_every or 'none'}) in {elapsed:.2f} s: {n / elapsed:,.0f} records read/s "
            f"({time.perf_counter() - started:.2f} s with client start)"
        )
    rates.sort()
    print(f"bare client ceiling: median {rates[len(rates) // 2]:,.0f} records read/s over {len(rates)} runs")


if __name__ == "__main__":
    main()
