#!/usr/bin/env python3
"""Lines up the slow records of `strom bench e2e --slow-log` with a scheduler trace.

Usage: e2e_tail.py SLOW_LOG PERF_SCRIPT_TEXT SERVER_PID CLIENT_PID [MIN_MS]

SLOW_LOG: lines `ack|e2e DUE_NS AT_NS ID` on CLOCK_MONOTONIC. PERF_SCRIPT_TEXT: the output
of `perf script -F comm,pid,tid,cpu,time,event,trace --ns` for a `perf record -a -k
CLOCK_MONOTONIC -e sched:sched_switch -e sched:sched_wakeup`, so both share one clock. For each stretch of
time in which records were slower than MIN_MS (default: the slow log's own threshold,
every line), it sums what each CPU ran, and names the cause of the stretch:
  - another task (not the server, not the bench client) ran 0.7 ms or more of the
    stretch without a break: named after it;
  - else a server or client thread did;
  - else 0.7 ms or more of the stretch is a span whose switches perf did not record;
  - else "none": no single long run; the stretch is made of the two processes' own work
    and hand-offs.
Standard library only.
"""
import bisect
import collections
import functools
import re
import sys

UNTRACED = "untraced (perf recorded no switch)"
IDLE_THEN = "idle, then "  # a switch out of idle perf did not record, and no wake-up
LONG_NS = 700_000  # a run this long without a break is named as the cause
GAP_NS = 3_000_000  # slow records closer than this belong to one stretch

SWITCH = re.compile(
    r"\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:sched_switch:\s+"
    r"prev_comm=(.*) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+)"
)


WAKEUP = re.compile(r".*\s([\d.]+):\s+sched:sched_wakeup:\s+comm=.* pid=(\d+) ")


def load_runs(path):
    """Per CPU, the list of (start, end, comm, tid) runs; and tid -> process id."""
    runs = collections.defaultdict(list)
    current = {}
    process = {}
    woken = {}
    for line in open(path, errors="replace"):
        w = WAKEUP.match(line)
        if w:
            woken[int(w[2])] = int(round(float(w[1]) * 1e9))
            continue
        m = SWITCH.match(line)
        if not m:
            continue
        _, pid, tid, cpu, t, prev_comm, _, _, next_comm, next_tid = m.groups()
        cpu, now, tid = int(cpu), int(round(float(t) * 1e9)), int(tid)
        process[tid] = int(pid)
        if cpu in current:
            start, comm, ran = current[cpu]
            if ran != tid:
                # A switch in between went unrecorded (on this VM perf misses some
                # switches out of idle, and every event while the threads of its init
                # process run). Out of idle, the task that ran next started when it
                # was woken; otherwise who ran when in this span is unknown.
                began = woken.get(tid, 0)
                if ran == 0 and start <= began <= now:
                    runs[cpu].append((start, began, comm, 0))
                    start, comm, ran = began, prev_comm, tid
                elif ran == 0:
                    comm, ran = IDLE_THEN + prev_comm, tid
                else:
                    comm, ran = UNTRACED, -1
            runs[cpu].append((start, now, comm, ran))
        current[cpu] = (now, next_comm, int(next_tid))
    for cpu in runs:
        runs[cpu].sort()
    return runs, process


@functools.lru_cache(maxsize=None)
def process_name(pid):
    """A process's name, read from /proc once (while it still runs), or ""."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def main():
    slow_path, perf_path, server, client = sys.argv[1:5]
    server, client = int(server), int(client)
    min_ns = float(sys.argv[5]) * 1e6 if len(sys.argv) > 5 else 0
    runs, process = load_runs(perf_path)
    starts = {cpu: [r[0] for r in runs[cpu]] for cpu in runs}
    if not runs:
        sys.exit("no sched_switch events in the trace")
    first = min(r[0][0] for r in runs.values() if r)
    last = max(r[-1][1] for r in runs.values() if r)

    def who(comm, tid):
        if comm.startswith("swapper"):
            return "idle"
        if comm == UNTRACED:
            return comm
        if comm.startswith(IDLE_THEN):
            # How long each part lasted is unknown: counted apart, never a long run.
            return IDLE_THEN + who(comm[len(IDLE_THEN):], tid)
        owner = process.get(tid)
        if owner == server:
            return "server"
        if owner == client:
            return "client"
        if owner is not None and owner != tid:
            # A thread of another process: named with its process (`tokio-rt-worker`
            # alone says nothing).
            return f"{process_name(owner)}[{owner}]/{comm}"
        return comm.split("/")[0]  # per-CPU threads by name: kworker/1:2 -> kworker

    def window(t0, t1):
        spent, longest = collections.Counter(), {}
        for cpu, rs in runs.items():
            i = max(0, bisect.bisect_left(starts[cpu], t0) - 1)
            while i < len(rs) and rs[i][0] < t1:
                s, e, comm, tid = rs[i]
                overlap = min(e, t1) - max(s, t0)
                if overlap > 0:
                    name = who(comm, tid)
                    spent[name] += overlap
                    # Only a run whose length is known, and only its part in the stretch.
                    if name not in ("idle", UNTRACED) and not name.startswith(IDLE_THEN):
                        longest[name] = max(longest.get(name, 0), overlap)
                i += 1
        return spent, longest

    slow = []
    for line in open(slow_path):
        kind, due, at, _ = line.split()
        due, at = int(due), int(at)
        if kind == "e2e" and at - due > min_ns and first <= due and at <= last:
            slow.append((due, at))
    slow.sort()
    stretches = []
    for due, at in slow:
        if stretches and due - stretches[-1][1] < GAP_NS:
            s = stretches[-1]
            s[1], s[2], s[3] = due, max(s[2], at), s[3] + 1
        else:
            stretches.append([due, due, at, 1])

    causes, records, cpu_ms = collections.Counter(), collections.Counter(), {}
    for t0, _, t1, n in stretches:
        spent, longest = window(t0, t1)
        others = sorted(k for k, v in longest.items() if k not in ("server", "client") and v >= LONG_NS)
        own = sorted(k for k, v in longest.items() if k in ("server", "client") and v >= LONG_NS)
        if others:
            cause = "another task ran >=0.7 ms: " + ", ".join(others)
        elif own:
            cause = "a thread of the " + " and the ".join(own) + " ran >=0.7 ms"
        elif spent[UNTRACED] >= LONG_NS:
            cause = "0.7 ms or more untraced (perf recorded no switch: who ran is unknown)"
        else:
            cause = "none: the two processes' own work and hand-offs"
        causes[cause] += 1
        records[cause] += n
        acc = cpu_ms.setdefault(cause, collections.Counter())
        for k, v in spent.items():
            acc[k] += v

    span = (last - first) / 1e9
    print(f"trace {span:.1f} s; e2e records slower than {min_ns / 1e6:g} ms: {len(slow)} in {len(stretches)} stretches")
    print()
    print("| cause | stretches | slow records | share | CPU ms in the stretches |")
    print("|---|---|---|---|---|")
    for cause, k in causes.most_common():
        spent = ", ".join(f"{name} {v / 1e6:.0f}" for name, v in cpu_ms[cause].most_common(5))
        print(f"| {cause} | {k} | {records[cause]} | {records[cause] / max(1, len(slow)):.0%} | {spent} |")
    print()
    print("What else ran on the CPUs over the whole trace (ms a second; runs of 1 ms or more a second):")
    total, long_runs = collections.Counter(), collections.Counter()
    for rs in runs.values():
        for s, e, comm, tid in rs:
            name = who(comm, tid)
            total[name] += e - s
            if e - s >= 1_000_000:
                long_runs[name] += 1
    for name, v in total.most_common(12):
        print(f"  {name:24} {v / 1e6 / span:7.1f} ms/s  {long_runs[name] / span:5.1f} runs >= 1 ms/s")


if __name__ == "__main__":
    main()
