"""Memory of the server under hostile produce requests, each case on a fresh server.

For each case, starts `strom serve` (the release build) on a new data directory, sends
the requests from Python grpcio as raw protobuf bytes, and reports the server's peak
resident memory (VmHWM) above what it had before, with the status each request got.
Figures go into BENCHMARKS.md. Run by scripts/hostile.sh.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import grpc

STROM = os.environ.get("STROM", "target/release/strom")


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(tag, payload):
    """A length-delimited field."""
    return varint(tag << 3 | 2) + varint(len(payload)) + payload


def produce_request(topic, records):
    return field(1, topic.encode()) + b"".join(field(3, r) for r in records)


def fast_records(record, count):
    """`count` copies of one encoded record, as field 3 of a request, built quickly."""
    return field(3, record) * count


def peak_kb(pid):
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))


def start_server(data):
    proc = subprocess.Popen(
        [STROM, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--log-level", "warn,strom=info"],
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        found = re.search(r"serving gRPC on ([0-9.:]+)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, found.group(1)
    raise RuntimeError("strom serve did not start")


def call_all(stub, requests):
    """Sends the requests at once; returns each one's status code name."""
    codes = [None] * len(requests)

    def one(i, body):
        try:
            stub(body, timeout=120)
            codes[i] = "OK"
        except grpc.RpcError as e:
            codes[i] = e.code().name
            if os.environ.get("VERBOSE"):
                print(f"request {i}: {e.code().name}: {e.details()}", file=sys.stderr)

    threads = [threading.Thread(target=one, args=(i, b)) for i, b in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def case(name, make_requests):
    with tempfile.TemporaryDirectory() as data:
        proc, addr = start_server(data)
        try:
            channel = grpc.insecure_channel(
                addr,
                options=[
                    ("grpc.max_send_message_length", 64 << 20),
                    ("grpc.max_receive_message_length", 64 << 20),
                ],
            )
            raw = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
            create = channel.unary_unary("/strom.v1.Admin/CreateTopic", **raw)
            create(field(1, b"t") + b"\x10\x01", timeout=30)
            produce = channel.unary_unary("/strom.v1.Log/Produce", **raw)
            requests = make_requests()
            wire = sum(len(r) for r in requests)
            time.sleep(0.5)
            before = peak_kb(proc.pid)
            codes = call_all(produce, requests)
            time.sleep(0.5)
            grown = peak_kb(proc.pid) - before
            print(
                json.dumps(
                    {
                        "case": name,
                        "requests": len(requests),
                        "wire_mb": round(wire / 1e6, 1),
                        "codes": sorted(set(codes)),
                        "peak_rss_growth_mb": round(grown / 1024, 1),
                        "growth_per_wire_byte": round(grown * 1024 / max(wire, 1), 2),
                    }
                ),
                flush=True,
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main():
    if len(sys.argv) > 1:
        only = sys.argv[1]
    else:
        only = None
    global case
    real_case = case
    case = lambda name, make: (only is None or only in name) and real_case(name, make)
    topic = field(1, b"t")
    empty = b""  # an empty Record: two bytes on the wire as field 3
    kib = field(4, b"v" * 1024)
    headers = b"\x2a\x00" * 2_000_000
    case("5M empty records (10 MB), one request", lambda: [topic + fast_records(empty, 5_000_000)])
    case("5M empty records (10 MB), four at once", lambda: [topic + fast_records(empty, 5_000_000)] * 4)
    case("one record with 2M empty headers, four at once", lambda: [topic + field(3, headers)] * 4)
    case("100,000 empty records (accepted), four at once", lambda: [topic + fast_records(empty, 100_000)] * 4)
    case("10,000 records of 1 KiB (accepted, 10 MB), four at once", lambda: [topic + fast_records(kib, 10_000)] * 4)
    case("15,000 records of 1 KiB (accepted, 15 MB), sixteen at once", lambda: [topic + fast_records(kib, 15_000)] * 16)


if __name__ == "__main__":
    sys.exit(main())
