"""Consumers started together form one generation: three librdkafka consumers
(confluent-kafka) of one group start half a second apart, as the processes of a
deployment do. Each must be assigned once, its share of the topic's six
partitions, and never have partitions revoked: the group's first rebalance waits
for them (Kafka's group.initial.rebalance.delay.ms), where without the wait the
first consumer formed a generation alone and every later one rebalanced it.

Usage: kafka_together.py BOOTSTRAP TOPIC GROUP. Prints "ok" and how long the
consumers waited for their assignment."""

import sys
import threading
import time

import confluent_kafka

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
DEADLINE = time.time() + 60
lock = threading.Lock()
events = {}  # consumer -> [(what, partitions)]
stop = threading.Event()


def run(name):
    c = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group,
        "auto.offset.reset": "earliest", "session.timeout.ms": 30000,
        "heartbeat.interval.ms": 500,
        "error_cb": lambda err: record(name, "error", str(err)),
    })

    def record(who, what, partitions):
        with lock:
            events[who].append((what, partitions))

    parts = lambda ps: sorted(p.partition for p in ps)
    c.subscribe([topic], on_assign=lambda _, ps: record(name, "assigned", parts(ps)),
                on_revoke=lambda _, ps: record(name, "revoked", parts(ps)))
    while not stop.is_set():
        c.poll(0.1)
    c.close()


started = time.time()
threads = []
for name in ("a", "b", "c"):
    events[name] = []
    thread = threading.Thread(target=run, args=(name,), daemon=True)
    thread.start()
    threads.append(thread)
    time.sleep(0.5)


def assigned():
    with lock:
        last = [next((e[1] for e in reversed(v) if e[0] == "assigned"), None)
                for v in events.values()]
    return None if None in last else sorted(p for ps in last for p in ps)


while assigned() != list(range(6)):
    assert time.time() < DEADLINE, events
    time.sleep(0.1)
took = time.time() - started
time.sleep(3)  # long enough for a rebalance to show, if one follows
with lock:
    seen = {name: list(v) for name, v in events.items()}
stop.set()
for thread in threads:
    thread.join(10)
for name, lines in seen.items():
    assert [e[0] for e in lines] == ["assigned"], ("rebalanced", seen)
    assert len(lines[0][1]) == 2, ("an even share", seen)
print("ok", "three consumers assigned in %.1f s, once each" % took)
