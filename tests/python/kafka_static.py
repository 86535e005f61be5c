"""Static group members (group.instance.id) with Kafka's own client: two librdkafka
consumers (confluent-kafka), each its own process with an instance id, share a
two-partition topic; one is killed with SIGKILL and started again with the same
instance id. The new process must get the partition the killed one had, and the
other consumer must go on without a rebalance (no revocation, no new assignment),
and the records produced after the restart must all be read. Then kafka-python's
admin client removes the member by its instance id, and its process joins again.

Usage: kafka_static.py BOOTSTRAP TOPIC GROUP. Prints "ok" and what it saw.
(`kafka_static.py consumer BOOTSTRAP TOPIC GROUP INSTANCE` is one consumer
process: it prints "assigned P,..", "revoked P,..", "read P VALUE" and errors.)"""

import signal
import subprocess
import sys
import threading
import time

import confluent_kafka
import kafka
import kafka.admin
import kafka.errors


def consumer(bootstrap, topic, group, instance):
    def say(*words):
        print(*words, flush=True)

    c = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "group.instance.id": instance,
        "auto.offset.reset": "earliest", "session.timeout.ms": 30000,
        "heartbeat.interval.ms": 500, "auto.commit.interval.ms": 200,
        "error_cb": lambda err: say("error", err),
    })
    parts = lambda ps: ",".join(str(p.partition) for p in ps)
    c.subscribe([topic], on_assign=lambda _, ps: say("assigned", parts(ps)),
                on_revoke=lambda _, ps: say("revoked", parts(ps)))
    while True:
        msg = c.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            say("error", msg.error())
            continue
        say("read", msg.partition(), msg.value().decode())


if sys.argv[1] == "consumer":
    consumer(*sys.argv[2:6])
    sys.exit(0)

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
DEADLINE = time.time() + 120
lock = threading.Lock()
events = {}  # process name -> its lines, in order


def start(name, instance):
    process = subprocess.Popen(
        [sys.executable, __file__, "consumer", bootstrap, topic, group, instance],
        stdout=subprocess.PIPE, text=True)
    events[name] = []

    def read():
        for line in process.stdout:
            with lock:
                events[name].append(line.split(None, 1))

    threading.Thread(target=read, daemon=True).start()
    return process


def assignment(name):
    """The partitions the process was last assigned (None before any)."""
    with lock:
        assigned = [e for e in events[name] if e[0] in ("assigned", "revoked")]
    if not assigned or assigned[-1][0] == "revoked":
        return None
    return sorted(int(p) for p in assigned[-1][1].split(",") if p.strip())


def read_values():
    with lock:
        return {e[1].split()[1]: name for name, lines in events.items()
                for e in lines if e[0] == "read"}


def wait(what, check):
    while not check():
        assert time.time() < DEADLINE, (what, events)
        time.sleep(0.1)


producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})


def produce(prefix):
    for i in range(20):
        producer.produce(topic, value=b"%s-%d" % (prefix, i), partition=i % 2)
    assert producer.flush(30) == 0
    return {"%s-%d" % (prefix.decode(), i) for i in range(20)}


processes = {"a": start("a", "instance-a"), "b": start("b", "instance-b")}
try:
    wait("both assigned one partition each",
         lambda: assignment("a") and assignment("b")
         and sorted(assignment("a") + assignment("b")) == [0, 1])
    before = produce(b"before")
    wait("the first records read", lambda: before <= set(read_values()))
    time.sleep(1)  # the reads' commits (every 200 ms)
    b_had = assignment("b")
    with lock:
        a_seen = len([e for e in events["a"] if e[0] != "read"])

    processes["b"].send_signal(signal.SIGKILL)
    processes["b"].wait()
    restarted = time.time()
    processes["b2"] = start("b2", "instance-b")
    wait("the restarted process assigned", lambda: assignment("b2"))
    took = time.time() - restarted
    after = produce(b"after")
    wait("the records after the restart read", lambda: after <= set(read_values()))
    time.sleep(1)

    with lock:
        a_later = [e for e in events["a"] if e[0] != "read"][a_seen:]
        errors = [e for lines in events.values() for e in lines if e[0] == "error"]
    assert assignment("b2") == b_had, (assignment("b2"), b_had)
    assert a_later == [], ("the other consumer was rebalanced", a_later)
    assert errors == [], errors
    values = read_values()
    assert all(values[v] == "a" for v in after if int(v.split("-")[1]) % 2 == assignment("a")[0])

    # An administrator removes the restarted member by its instance id (kafka-python's
    # LeaveGroup v3+): the process finds out, joins again, and is assigned again.
    with lock:
        b2_seen = len(events["b2"])
    admin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap)
    removed = admin.remove_group_members(
        group, [kafka.admin.MemberToRemove(group_instance_id="instance-b")])
    admin.close()
    assert removed == {"instance-b": kafka.errors.NoError}, removed
    wait("the removed process assigned again", lambda: any(
        e[0] == "assigned" and e[1].strip() for e in events["b2"][b2_seen:]))
    print("ok", "restarted process assigned %s in %.1f s" % (b_had, took))
finally:
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.wait()
