#!/usr/bin/env python3
"""How long a consumer group stops consuming across a server restart (SIGKILL).

    scripts/group_restart_gap.py BIN [BIN ...]

Runs once per BIN, in the order given (pass `old new new old` to alternate). Each run:
a fresh server on an empty directory, a topic of 4 partitions, two `strom consume
--group g --follow` members, and one `strom produce` per partition writing a record
every 100 ms. After 8 s (the members' auto-commit runs every 5 s) the server is killed
with SIGKILL and started again on the same port; production goes on for 15 s after
its ready line. Printed: the longest time any partition went without a record reaching
a member, from the ready line on (the members' pause), and how many records reached
the members more than once (redelivered).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PARTITIONS = 4
LIMIT = 60.0
AFTER = 15.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, data, port):
    """`strom serve`; returns the process and the monotonic time of its ready line."""
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + LIMIT
    for line in server.stderr:
        if "strom is ready" in line:
            ready = time.monotonic()
            # Keep reading, so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
            return server, ready
        if time.monotonic() > deadline:
            break
    server.kill()
    sys.exit(f"{binary} printed no ready line")


def run(binary):
    tmp = tempfile.mkdtemp(prefix="strom-gap-")
    data = os.path.join(tmp, "data")
    port = free_port()
    addr = f"127.0.0.1:{port}"
    server, _ = start(binary, data, port)
    seen = []  # (monotonic time, line)
    lock = threading.Lock()
    stop = threading.Event()

    def read(proc):
        for line in proc.stdout:
            with lock:
                seen.append((time.monotonic(), line.strip()))

    def produce(p):
        # A producer that gives up (its delivery timeout) is started again.
        i = 0
        while not stop.is_set():
            proc = subprocess.Popen(
                [binary, "-s", addr, "produce", "-t", "t", "-p", str(p), "--linger-ms", "0"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                text=True)
            try:
                while not stop.is_set() and proc.poll() is None:
                    proc.stdin.write(f"{p}-{i}\n")
                    proc.stdin.flush()
                    i += 1
                    time.sleep(0.1)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.wait()

    subprocess.run([binary, "-s", addr, "topic", "create", "t", "--partitions", str(PARTITIONS)],
                   check=True, capture_output=True, timeout=LIMIT)
    members = []
    for _ in range(2):
        proc = subprocess.Popen(
            [binary, "-s", addr, "consume", "-t", "t", "-g", "g", "-F", "--format", "%p %s\\n"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=read, args=(proc,), daemon=True).start()
        members.append(proc)
    producers = [threading.Thread(target=produce, args=(p,), daemon=True)
                 for p in range(PARTITIONS)]
    try:
        for t in producers:
            t.start()
        time.sleep(8)  # consuming, and the members' auto-commit (every 5 s)
        server.send_signal(signal.SIGKILL)
        server.wait()
        server, ready = start(binary, data, port)
        time.sleep(AFTER)
        stop.set()
        with lock:
            records = list(seen)
        pause = 0.0
        for p in range(PARTITIONS):
            times = sorted(t for t, line in records
                           if line.split(" ")[-1].startswith(f"{p}-") and t >= ready)
            if not times:
                sys.exit(f"{binary}: partition {p} was not consumed after the restart")
            points = [ready] + times + [ready + AFTER]
            pause = max(pause, max(b - a for a, b in zip(points, points[1:])))
        values = [line for _, line in records]
        redelivered = len(values) - len(set(values))
        print(f"{binary}: pause {pause:.2f} s, redelivered {redelivered}", flush=True)
        return pause
    finally:
        stop.set()
        for proc in members:
            proc.kill()
        server.kill()
        server.wait()
        for t in producers:
            t.join(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    pauses = {}
    for binary in sys.argv[1:]:
        pauses.setdefault(binary, []).append(run(binary))
    for binary, values in pauses.items():
        values.sort()
        print(f"{binary}: pauses {', '.join(f'{v:.2f}' for v in values)} s")


if __name__ == "__main__":
    main()
