#!/usr/bin/env python3
"""How long a consumer group stops consuming across a server restart (SIGKILL).

    scripts/group_restart_gap.py BIN [BIN ...]

Runs once per BIN, in the order given (pass `old new new old` to alternate). Each run:
a fresh server on an empty directory, a topic of 4 partitions, two `strom consume
--group g --follow` members. One record per partition is produced and consumed, then
the members' auto-commit (every 5 s) is waited out. The server is killed with SIGKILL
and started again on the same port; as soon as it prints its ready line, one record
per partition is produced. The gap is from the ready line to the last of those four
records printed by a member. Also printed: how many of the first four records were
printed again (redelivered after the restart).
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
    seen = []  # (monotonic time, member, line)
    lock = threading.Lock()

    def cli(*args, stdin=""):
        subprocess.run([binary, "-s", addr, *args], input=stdin, text=True, check=True,
                       capture_output=True, timeout=LIMIT)

    def read(member, proc):
        for line in proc.stdout:
            with lock:
                seen.append((time.monotonic(), member, line.strip()))

    def wait_for(prefix):
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline:
            with lock:
                got = {line for _, _, line in seen if line.split(" ")[-1].startswith(prefix)}
            if len(got) == PARTITIONS:
                return
            time.sleep(0.01)
        sys.exit(f"{binary}: the {prefix} records were not all consumed within {LIMIT} s")

    cli("topic", "create", "t", "--partitions", str(PARTITIONS))
    members = []
    for m in range(2):
        proc = subprocess.Popen(
            [binary, "-s", addr, "consume", "-t", "t", "-g", "g", "-F", "--format", "%p %s\\n"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=read, args=(m, proc), daemon=True).start()
        members.append(proc)
    try:
        for p in range(PARTITIONS):
            cli("produce", "-t", "t", "-p", str(p), stdin=f"before-{p}\n")
        wait_for("before-")
        time.sleep(6)  # the members' auto-commit, every 5 s
        server.send_signal(signal.SIGKILL)
        server.wait()
        server, ready = start(binary, data, port)
        for p in range(PARTITIONS):
            cli("produce", "-t", "t", "-p", str(p), stdin=f"after-{p}\n")
        wait_for("after-")
        with lock:
            after = [t for t, _, line in seen if line.split(" ")[-1].startswith("after-")]
            before = [line for _, _, line in seen if line.split(" ")[-1].startswith("before-")]
        gap = max(after) - ready
        print(f"{binary}: gap {gap:.2f} s, redelivered {len(before) - PARTITIONS}", flush=True)
        return gap
    finally:
        for proc in members:
            proc.kill()
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    gaps = {}
    for binary in sys.argv[1:]:
        gaps.setdefault(binary, []).append(run(binary))
    for binary, values in gaps.items():
        values.sort()
        print(f"{binary}: gaps {', '.join(f'{v:.2f}' for v in values)} s")


if __name__ == "__main__":
    main()
