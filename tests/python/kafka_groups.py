"""Kafka consumer groups against strom's Kafka listener, with Kafka's own clients:
two librdkafka consumers (confluent-kafka) subscribe in one group and split the
topic's partitions between them, each record read once; they commit and close; a
kafka-python consumer of the same group then resumes after what they committed;
both libraries' admin clients then list and describe the group and read its offsets,
and kafka-python's deletes partition 2's.

Usage: kafka_groups.py BOOTSTRAP TOPIC GROUP. The topic has 3 partitions and 300
records. Prints "ok" and the counts."""

import sys
import threading
import time

import confluent_kafka
import kafka

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
DEADLINE = time.time() + 90

producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})
for i in range(300):
    producer.produce(topic, key=b"%d" % i, value=b"first %d" % i, partition=i % 3)
assert producer.flush(30) == 0

read = {}          # value -> consumer name
assigned = {}      # consumer name -> partitions held at the end
lock = threading.Lock()
stop = threading.Event()
# Both record their assignment before either leaves (a leave rebalances the other).
recorded = threading.Barrier(2, timeout=30)


def consume(name):
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
    })
    consumer.subscribe([topic])
    while not stop.is_set() and time.time() < DEADLINE:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        with lock:
            assert msg.value() not in read, ("read twice", msg.value(), name, read[msg.value()])
            read[msg.value()] = name
        consumer.commit(msg, asynchronous=False)
    with lock:
        assigned[name] = sorted(tp.partition for tp in consumer.assignment())
    recorded.wait()
    consumer.close()


threads = [threading.Thread(target=consume, args=(n,)) for n in ("a", "b")]
threads[0].start()
time.sleep(1)  # a takes every partition; b's join makes them share
threads[1].start()
while len(read) < 300 and time.time() < DEADLINE:
    time.sleep(0.2)
time.sleep(2)  # both settled into the shared assignment
stop.set()
for t in threads:
    t.join()
assert len(read) == 300, len(read)
both = assigned["a"] + assigned["b"]
assert sorted(both) == [0, 1, 2] and assigned["a"] and assigned["b"], assigned

# More records; a kafka-python consumer of the group starts after the commits.
for i in range(30):
    producer.produce(topic, value=b"second %d" % i, partition=i % 3)
assert producer.flush(30) == 0
consumer = kafka.KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                               enable_auto_commit=False, auto_offset_reset="earliest")
later = []
while len(later) < 30 and time.time() < DEADLINE:
    for records in consumer.poll(1000).values():
        later += [m.value for m in records]
consumer.commit()
consumer.close()
assert sorted(later) == sorted(b"second %d" % i for i in range(30)), later[:5]

# The group through both libraries' admin clients: listed, described (no members
# now), its offsets read back; a group of nothing deleted is refused.
import confluent_kafka.admin
admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
listed = admin.list_consumer_groups().result(30)
assert group in [g.group_id for g in listed.valid], listed.valid
described = admin.describe_consumer_groups([group])[group].result(30)
assert described.group_id == group and not described.members, described
offsets = admin.list_consumer_group_offsets(
    [confluent_kafka.ConsumerGroupTopicPartitions(group)])[group].result(30)
assert sorted(tp.offset for tp in offsets.topic_partitions) == [110, 110, 110], offsets
missing = admin.delete_consumer_groups(["no-such-group"])["no-such-group"]
try:
    missing.result(30)
    raise AssertionError("a group of nothing deleted")
except confluent_kafka.KafkaException as e:
    assert e.args[0].code() == confluent_kafka.KafkaError.GROUP_ID_NOT_FOUND, e
python_admin = kafka.admin.KafkaAdminClient(bootstrap_servers=bootstrap)
listed = python_admin.list_groups()
assert any(group in str(g) for g in listed), listed
described = python_admin.describe_groups([group])[group]
assert described["error"] is None and described["group_state"] == "Empty", described
# OffsetDelete: partition 2's committed offset goes (kafka-python's admin client).
gone = kafka.TopicPartition(topic, 2)
answer = python_admin.delete_group_offsets(group, [gone])
assert answer == {gone: kafka.errors.NoError}, answer
left = python_admin.list_group_offsets(group)[group]
assert sorted(tp.partition for tp in left) == [0, 1], left
python_admin.close()
print("ok", len(read), len(later), assigned)
