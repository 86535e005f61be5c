"""Kafka client libraries against strom's Kafka listener: confluent-kafka (librdkafka,
with idempotence and acks=all; 100 records in each of its five compression types) and
kafka-python (gzip) each produce 500 records (after each library's admin client has
made, grown, trimmed with DeleteRecords and deleted a topic) to a topic of three
partitions, then read back every record either wrote, by assign and seek (consumer
groups are `kafka_groups.py`'s), and check keys, values, headers and offsets.

Usage: kafka_clients.py BOOTSTRAP TOPIC. Prints "ok N" with the records read."""

import sys
import time

import confluent_kafka
import kafka

bootstrap, topic = sys.argv[1], sys.argv[2]
N = 500
DEADLINE = time.time() + 60


def produce_librdkafka():
    acked = {}

    def delivered(err, msg):
        assert err is None, err
        acked[msg.key()] = (msg.partition(), msg.offset())

    codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
    for n, codec in enumerate(codecs):
        producer = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "compression.type": codec,
        })
        for i in range(n * N // len(codecs), (n + 1) * N // len(codecs)):
            producer.produce(topic, key=b"rd-%d" % i, value=b"librdkafka %d" % i,
                             headers=[("n", str(i).encode())], on_delivery=delivered)
        assert producer.flush(30) == 0, "every record acknowledged"
    assert len(acked) == N
    return acked


def produce_kafka_python():
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                   compression_type="gzip")
    futures = {b"kp-%d" % i: producer.send(topic, key=b"kp-%d" % i, value=b"kafka-python %d" % i,
                                           headers=[("n", str(i).encode())]) for i in range(N)}
    producer.flush(30)
    acked = {key: (f.get(10).partition, f.get(10).offset) for key, f in futures.items()}
    producer.close()
    return acked


def read_librdkafka(expected):
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                                         "enable.auto.commit": False})
    consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                     for p in range(3)])
    got = {}
    while len(got) < expected and time.time() < DEADLINE:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got[msg.key()] = (msg.partition(), msg.offset(), msg.value(), msg.headers())
    consumer.close()
    return got


def read_kafka_python(expected):
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                   group_id=None)
    partitions = [kafka.TopicPartition(topic, p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    got = {}
    while len(got) < expected and time.time() < DEADLINE:
        for records in consumer.poll(1000).values():
            for m in records:
                got[m.key] = (m.partition, m.offset, m.value, m.headers)
    ends = consumer.end_offsets(partitions)
    consumer.close()
    return got, ends


def administer():
    """Topics made and removed with both libraries' admin clients."""
    import confluent_kafka.admin
    import kafka.admin
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
    made = admin.create_topics([confluent_kafka.admin.NewTopic(
        "rd-made", num_partitions=2, config={"retention.ms": "60000"})])
    made["rd-made"].result(30)
    try:
        admin.create_topics([confluent_kafka.admin.NewTopic("rd-made", 1)])["rd-made"].result(30)
        raise AssertionError("a topic made twice")
    except confluent_kafka.KafkaException as e:
        assert e.args[0].code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS, e
    listed = admin.list_topics(timeout=10).topics
    assert len(listed["rd-made"].partitions) == 2, listed
    resource = confluent_kafka.admin.ConfigResource("topic", "rd-made")
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "60000", configs["retention.ms"]
    change = confluent_kafka.admin.ConfigResource("topic", "rd-made", incremental_configs=[
        confluent_kafka.admin.ConfigEntry("cleanup.policy", "compact",
                                          incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET)])
    admin.incremental_alter_configs([change])[change].result(30)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["cleanup.policy"].value == "compact", configs["cleanup.policy"]
    admin.create_partitions([confluent_kafka.admin.NewPartitions("rd-made", 4)])["rd-made"].result(30)
    assert len(admin.list_topics("rd-made", timeout=10).topics["rd-made"].partitions) == 4
    try:
        admin.create_partitions([confluent_kafka.admin.NewPartitions("rd-made", 3)])["rd-made"].result(30)
        raise AssertionError("partitions removed")
    except confluent_kafka.KafkaException as e:
        assert e.args[0].code() == confluent_kafka.KafkaError.INVALID_PARTITIONS, e
    # DeleteRecords: 5 records, the first 3 deleted, then the rest (-1, the end).
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(5):
        producer.produce("rd-made", key=b"%d" % i, value=b"%d" % i, partition=1)  # compacted: keyed
    assert producer.flush(30) == 0
    for offset, start in ((3, 3), (confluent_kafka.OFFSET_END, 5)):
        asked = confluent_kafka.TopicPartition("rd-made", 1, offset)
        deleted = admin.delete_records([asked])[asked].result(30)
        assert deleted.low_watermark == start, (offset, deleted)
    admin.delete_topics(["rd-made"])["rd-made"].result(30)
    python = kafka.admin.KafkaAdminClient(bootstrap_servers=bootstrap)
    python.create_topics([kafka.admin.NewTopic("kp-made", 3, 1,
                                                topic_configs={"retention.ms": "60000"})])
    assert "kp-made" in python.list_topics()
    described = python.describe_configs([kafka.admin.ConfigResource("TOPIC", "kp-made")])
    # Those set for the topic (kafka-python shows only configs not at their default).
    assert list(described["topic"]["kp-made"]) == ["retention.ms"], described
    python.create_partitions({"kp-made": kafka.admin.NewPartitions(5)})
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap)
    assert consumer.partitions_for_topic("kp-made") == set(range(5)), consumer.partitions_for_topic("kp-made")
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(4):
        producer.send("kp-made", value=b"%d" % i, partition=4)
    producer.flush(30)
    producer.close()
    where = kafka.TopicPartition("kp-made", 4)
    deleted = python.delete_records({where: 2})
    assert deleted[where]["low_watermark"] == 2, deleted
    consumer.assign([where])
    assert consumer.beginning_offsets([where]) == {where: 2}
    consumer.close()
    python.delete_topics(["kp-made"])
    assert "kp-made" not in python.list_topics()
    python.close()


administer()
acked = produce_librdkafka()
acked.update(produce_kafka_python())
assert len(acked) == 2 * N
for read in (read_librdkafka(2 * N), read_kafka_python(2 * N)[0]):
    assert len(read) == 2 * N, len(read)
    for key, (partition, offset) in acked.items():
        p, o, value, headers = read[key]
        assert (p, o) == (partition, offset), (key, p, o, partition, offset)
        i = int(key.split(b"-")[1])
        library = b"librdkafka" if key.startswith(b"rd-") else b"kafka-python"
        assert value == library + b" %d" % i, value
        assert list(headers) == [("n", str(i).encode())], headers
_, ends = read_kafka_python(2 * N)
assert sum(ends.values()) == 2 * N, ends
print("ok", 2 * N)
