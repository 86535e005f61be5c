"""Kafka client libraries over SASL_SSL (TLS, then SASL/PLAIN with a strom token):
confluent-kafka (librdkafka) produces 100 records idempotently with acks=all and
consumes them back in a group, committing; kafka-python produces 100 more and reads
all 200 back by assign. A wrong token fails to authenticate, and a principal the acl
grants nothing is refused the topic (TOPIC_AUTHORIZATION_FAILED).

Usage: kafka_security.py BOOTSTRAP TOPIC CA_PEM USER TOKEN STRANGER STRANGER_TOKEN.
Prints "ok N" with the records kafka-python read."""

import sys
import time

import confluent_kafka
import kafka
import kafka.errors

bootstrap, topic, ca, user, token, stranger, stranger_token = sys.argv[1:8]
N = 100
DEADLINE = time.time() + 60


def rdkafka(name, password, **more):
    config = {
        "bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN", "sasl.username": name, "sasl.password": password,
        "ssl.ca.location": ca,
    }
    config.update(more)
    return config


def produce_librdkafka():
    acked = []

    def delivered(err, msg):
        assert err is None, err
        acked.append(msg.offset())

    producer = confluent_kafka.Producer(rdkafka(user, token, **{
        "enable.idempotence": True, "acks": "all", "linger.ms": 5}))
    for i in range(N):
        producer.produce(topic, key=b"rd-%d" % i, value=b"librdkafka %d" % i,
                         on_delivery=delivered)
    assert producer.flush(30) == 0, "every record acknowledged"
    assert len(acked) == N


def consume_librdkafka_group():
    consumer = confluent_kafka.Consumer(rdkafka(user, token, **{
        "group.id": "billing", "auto.offset.reset": "earliest",
        "enable.auto.commit": False}))
    consumer.subscribe([topic])
    got = 0
    while got < N and time.time() < DEADLINE:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got += 1
    assert got == N, got
    consumer.commit(asynchronous=False)
    consumer.close()


def produce_and_read_kafka_python():
    common = dict(bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
                  sasl_mechanism="PLAIN", sasl_plain_username=user,
                  sasl_plain_password=token, ssl_cafile=ca)
    producer = kafka.KafkaProducer(acks="all", **common)
    futures = [producer.send(topic, key=b"kp-%d" % i, value=b"kafka-python %d" % i)
               for i in range(N)]
    producer.flush(30)
    for f in futures:
        f.get(10)
    producer.close()
    consumer = kafka.KafkaConsumer(enable_auto_commit=False, **common)
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
    producer = confluent_kafka.Producer(rdkafka(user, "not-" + token, **{
        "error_cb": lambda err: errors.append(err), "message.timeout.ms": 3000,
        "log_level": 0}))
    producer.produce(topic, value=b"never")
    producer.flush(5)
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors
    try:
        kafka.KafkaProducer(bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
                            sasl_mechanism="PLAIN", sasl_plain_username=user,
                            sasl_plain_password="not-" + token, ssl_cafile=ca,
                            request_timeout_ms=3000)
    except kafka.errors.KafkaError:  # NoBrokersAvailable, or the authentication's own
        return
    raise AssertionError("kafka-python authenticated with a wrong token")


def stranger_is_refused():
    failed = []
    producer = confluent_kafka.Producer(rdkafka(stranger, stranger_token, **{
        "message.timeout.ms": 5000}))
    producer.produce(topic, value=b"never",
                     on_delivery=lambda err, msg: failed.append(err))
    producer.flush(10)
    assert len(failed) == 1 and failed[0] is not None, failed
    assert failed[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED, failed


produce_librdkafka()
consume_librdkafka_group()
read = produce_and_read_kafka_python()
wrong_token_fails()
stranger_is_refused()
print("ok", read)
