"""Kafka's clients under strom's quotas: a confluent-kafka (librdkafka) producer with
idempotence and acks=all writes 1.5 MiB at a produce quota of 512 KiB/s, and a
kafka-python consumer reads it back at a fetch quota of 512 KiB/s. Each must take at
least the time the rate allows (after the first second's burst), lose nothing, and
see no error: the clients sit out `throttle_time_ms`, and the server's muted
connection is not taken for a dead one. librdkafka's statistics show it was told.

Usage: kafka_quotas.py BOOTSTRAP TOPIC. Prints "ok produce=S consume=S throttle=MS"."""

import json
import sys
import time

import confluent_kafka
import kafka

bootstrap, topic = sys.argv[1], sys.argv[2]
N, SIZE = 1536, 1024
DEADLINE = time.time() + 90

throttles = []


def stats(text):
    for broker in json.loads(text).get("brokers", {}).values():
        throttles.append(broker.get("throttle", {}).get("max", 0))


acked = []


def delivered(err, msg):
    assert err is None, err
    acked.append(msg.offset())


producer = confluent_kafka.Producer({
    "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
    "linger.ms": 5, "batch.size": 65536, "statistics.interval.ms": 200, "stats_cb": stats,
})
started = time.time()
for i in range(N):
    producer.produce(topic, key=b"%d" % i, value=b"x" * SIZE, partition=0, on_delivery=delivered)
    producer.poll(0)
assert producer.flush(60) == 0, "every record acknowledged"
produced = time.time() - started
producer.poll(0.5)  # a last statistics callback
assert sorted(acked) == list(range(N)), "each record once, in order"

consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                               fetch_max_bytes=8 << 20, max_partition_fetch_bytes=8 << 20)
tp = kafka.TopicPartition(topic, 0)
consumer.assign([tp])
consumer.seek_to_beginning(tp)
started = time.time()
got = 0
while got < N and time.time() < DEADLINE:
    for records in consumer.poll(timeout_ms=1000).values():
        for record in records:
            assert record.offset == got and len(record.value) == SIZE
            got += 1
consumed = time.time() - started
assert got == N, got
print("ok produce=%.2f consume=%.2f throttle=%d" % (produced, consumed, max(throttles + [0])))
