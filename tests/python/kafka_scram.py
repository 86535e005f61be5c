"""Kafka client libraries authenticating with SCRAM (SASL_PLAINTEXT: the token never
crosses the network): confluent-kafka (librdkafka) produces 50 records idempotently with
acks=all over SCRAM-SHA-256 and consumes them back in a group over SCRAM-SHA-512;
kafka-python produces 50 more over SCRAM-SHA-512 and reads all 100 back by assign over
SCRAM-SHA-256. A wrong token fails to authenticate with both.

Usage: kafka_scram.py BOOTSTRAP TOPIC USER TOKEN. Prints "ok N" with the records
kafka-python read."""

import sys
import time

import confluent_kafka
import kafka
import kafka.errors

bootstrap, topic, user, token = sys.argv[1:5]
N = 50
DEADLINE = time.time() + 60


def rdkafka(mechanism, password, **more):
    config = {
        "bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
    }
    config.update(more)
    return config


def python_client(mechanism, password):
    return dict(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=mechanism, sasl_plain_username=user,
                sasl_plain_password=password)


def librdkafka():
    acked = []

    def delivered(err, msg):
        assert err is None, err
        acked.append(msg.offset())

    producer = confluent_kafka.Producer(rdkafka("SCRAM-SHA-256", token, **{
        "enable.idempotence": True, "acks": "all", "linger.ms": 5}))
    for i in range(N):
        producer.produce(topic, value=b"librdkafka %d" % i, on_delivery=delivered)
    assert producer.flush(30) == 0, "every record acknowledged"
    assert len(acked) == N
    consumer = confluent_kafka.Consumer(rdkafka("SCRAM-SHA-512", token, **{
        "group.id": "scram", "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    got = 0
    while got < N and time.time() < DEADLINE:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got += 1
    assert got == N, got
    consumer.close()


def kafka_python():
    producer = kafka.KafkaProducer(acks="all", **python_client("SCRAM-SHA-512", token))
    futures = [producer.send(topic, value=b"kafka-python %d" % i) for i in range(N)]
    producer.flush(30)
    for f in futures:
        f.get(10)
    producer.close()
    consumer = kafka.KafkaConsumer(enable_auto_commit=False,
                                   **python_client("SCRAM-SHA-256", token))
    tp = kafka.TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    values = []
    while len(values) < 2 * N and time.time() < DEADLINE:
        for records in consumer.poll(timeout_ms=1000).values():
            values.extend(r.value for r in records)
    consumer.close()
    assert sorted(values) == sorted([b"librdkafka %d" % i for i in range(N)]
                                    + [b"kafka-python %d" % i for i in range(N)]), len(values)
    return len(values)


def wrong_token_fails():
    errors = []
    producer = confluent_kafka.Producer(rdkafka("SCRAM-SHA-256", "not-" + token, **{
        "error_cb": lambda err: errors.append(err), "message.timeout.ms": 3000,
        "log_level": 0}))
    producer.produce(topic, value=b"never")
    producer.flush(5)
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors
    try:
        kafka.KafkaProducer(request_timeout_ms=3000,
                            **python_client("SCRAM-SHA-512", "not-" + token))
    except kafka.errors.KafkaError:  # NoBrokersAvailable, or the authentication's own
        return
    raise AssertionError("kafka-python authenticated with a wrong token")


librdkafka()
read = kafka_python()
wrong_token_fails()
print("ok", read)
