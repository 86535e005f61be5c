#!/usr/bin/env python3
"""What Kafka's protocol costs strom's server, against its own gRPC, in one run.

Each run starts a fresh `strom serve` (gRPC and --kafka-listen) on an empty directory,
writes a `dd` figure (1 GiB into the page cache) beside it, makes a topic of one
partition (durability page_cache), and then either:
  kafka: confluent-kafka (librdkafka) produces RECORDS records of SIZE bytes with
         acks=1 (the page cache), linger.ms=5, batch.size=1 MB; then one consumer
         reads them all back from the start;
  grpc:  `strom bench produce --records RECORDS --record-size SIZE --batch 1000
         --durability page_cache --in-flight 1`, then `strom bench consume`.
Measured for each step: wall time, MB/s of payload, and the server's CPU seconds per
GB of payload (from /proc/PID/stat), which is what the protocol costs the server
whatever the client is. Runs alternate kafka, grpc, grpc, kafka (ABBA), BLOCKS times.

Usage: scripts/kafka_bench.py STROM_BINARY [BLOCKS] [RECORDS] [SIZE] [KINDS]
KINDS is "kafka,grpc" by default; "kafka" runs the Kafka case alone (once a block,
to alternate two builds from outside: A B B A).
Needs confluent-kafka (scripts/test.sh installs it into target/pyenv)."""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import confluent_kafka

STROM = sys.argv[1]
BLOCKS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
RECORDS = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
SIZE = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
KINDS = (sys.argv[5] if len(sys.argv) > 5 else "kafka,grpc").split(",")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def dd(directory):
    out = subprocess.run(["dd", "if=/dev/zero", f"of={directory}/dd", "bs=1M", "count=1024"],
                         capture_output=True, text=True).stderr
    os.unlink(f"{directory}/dd")
    m = re.search(r"([\d.]+) ([GM])B/s", out)
    return float(m.group(1)) * (1000 if m.group(2) == "G" else 1) if m else 0.0


class Server:
    def __init__(self, root):
        self.grpc, self.kafka = free_port(), free_port()
        self.log = open(f"{root}/log", "w")
        self.proc = subprocess.Popen(
            [STROM, "serve", "--listen", f"127.0.0.1:{self.grpc}", "--kafka-listen",
             f"127.0.0.1:{self.kafka}", "--data-dir", f"{root}/data", "--log-level", "warn"],
            stdout=self.log, stderr=self.log)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.kafka), 0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run([STROM, "-s", f"127.0.0.1:{self.grpc}", "topic", "create", "bench",
                        "--partitions", "1", "--config", "durability=page_cache"],
                       check=True, capture_output=True)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def timed(server, step):
    before, start = cpu(server.proc.pid), time.monotonic()
    step()
    wall = time.monotonic() - start
    gb = RECORDS * SIZE / 1e9
    return {"mb_s": RECORDS * SIZE / 1e6 / wall, "server_s_per_gb": (cpu(server.proc.pid) - before) / gb}


def kafka_run(server):
    bootstrap = f"127.0.0.1:{server.kafka}"
    value = b"x" * SIZE

    def produce():
        p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5,
                                      "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
                                      "queue.buffering.max.messages": 1_000_000})
        for _ in range(RECORDS):
            while True:
                try:
                    p.produce("bench", value, partition=0)
                    break
                except BufferError:
                    p.poll(0.001)
        assert p.flush(120) == 0

    def consume():
        c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench",
                                      "enable.auto.commit": False, "fetch.max.bytes": 16 << 20,
                                      "max.partition.fetch.bytes": 16 << 20})
        c.assign([confluent_kafka.TopicPartition("bench", 0, confluent_kafka.OFFSET_BEGINNING)])
        n = 0
        while n < RECORDS:
            for m in c.consume(10_000, 5.0):
                assert m.error() is None, m.error()
                n += 1
        c.close()

    return {"produce": timed(server, produce), "consume": timed(server, consume)}


def grpc_run(server):
    addr = f"127.0.0.1:{server.grpc}"

    def produce():
        subprocess.run([STROM, "bench", "produce", "-s", addr, "-t", "bench", "--records", str(RECORDS),
                        "--record-size", str(SIZE), "--batch", "1000", "--durability", "page_cache",
                        "--in-flight", "1", "--json"], check=True, capture_output=True)

    def consume():
        subprocess.run([STROM, "bench", "consume", "-s", addr, "-t", "bench", "--json"],
                       check=True, capture_output=True)

    return {"produce": timed(server, produce), "consume": timed(server, consume)}


results = {kind: [] for kind in KINDS}
order = ["kafka", "grpc", "grpc", "kafka"] if len(KINDS) == 2 else KINDS
for block in range(BLOCKS):
    for kind in order:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as root:
            figure = dd(root)
            server = Server(root)
            try:
                run = kafka_run(server) if kind == "kafka" else grpc_run(server)
            finally:
                server.stop()
            run["dd_mb_s"] = figure
            results[kind].append(run)
            print(kind, json.dumps(run), flush=True)

print(f"\n{RECORDS} records of {SIZE} bytes, one partition, page cache; medians of "
      f"{len(results[KINDS[0]])} runs (min-max)")
for kind, runs in results.items():
    for step in ("produce", "consume"):
        for metric in ("mb_s", "server_s_per_gb"):
            xs = [r[step][metric] for r in runs]
            print(f"{kind:6} {step:8} {metric:16} {statistics.median(xs):8.2f} "
                  f"({min(xs):.2f}-{max(xs):.2f})")
    dds = [r["dd_mb_s"] for r in runs]
    print(f"{kind:6} dd MB/s {statistics.median(dds):.0f} ({min(dds):.0f}-{max(dds):.0f})")
