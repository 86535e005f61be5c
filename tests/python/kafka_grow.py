"""Partitions added to a topic while a Kafka consumer group reads it, with Kafka's own
clients: two librdkafka consumers (confluent-kafka) share a two-partition topic;
the admin client adds two partitions; the consumers see them at their next metadata
refresh, rebalance over all four, and read every record produced to the new ones.

Usage: kafka_grow.py BOOTSTRAP TOPIC GROUP. Prints "ok" and the assignments."""

import sys
import threading
import time

import confluent_kafka
import confluent_kafka.admin

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
DEADLINE = time.time() + 90

read = {}          # value -> consumer name
assigned = {}      # consumer name -> partitions held now
lock = threading.Lock()
stop = threading.Event()


def consume(name):
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group,
        "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500, "topic.metadata.refresh.interval.ms": 500,
    })
    consumer.subscribe([topic])
    while not stop.is_set() and time.time() < DEADLINE:
        msg = consumer.poll(0.2)
        with lock:
            if stop.is_set():  # what the main thread saw last is what it checks
                break
            assigned[name] = sorted(tp.partition for tp in consumer.assignment())
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        with lock:
            assert msg.value() not in read, ("read twice", msg.value(), name)
            read[msg.value()] = name
    consumer.close()


def settled(partitions):
    with lock:
        both = assigned.get("a", []) + assigned.get("b", [])
        return sorted(both) == partitions and assigned.get("a") and assigned.get("b")


threads = [threading.Thread(target=consume, args=(n,)) for n in ("a", "b")]
for t in threads:
    t.start()
while not settled([0, 1]) and time.time() < DEADLINE:
    time.sleep(0.1)
assert settled([0, 1]), assigned

admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
admin.create_partitions([confluent_kafka.admin.NewPartitions(topic, 4)])[topic].result(30)
producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})
for i in range(40):
    producer.produce(topic, value=b"grown %d" % i, partition=i % 4)
assert producer.flush(30) == 0
# Settled for a second and a half: a rebalance passes through empty assignments.
steady_since = None
while time.time() < DEADLINE:
    if not (len(read) == 40 and settled([0, 1, 2, 3])):
        steady_since = None
    elif steady_since is None:
        steady_since = time.time()
    elif time.time() - steady_since > 1.5:
        break
    time.sleep(0.1)
with lock:
    stop.set()
for t in threads:
    t.join()
assert sorted(read) == sorted(b"grown %d" % i for i in range(40)), sorted(read)
assert settled([0, 1, 2, 3]), assigned
print("ok", len(read), assigned)
