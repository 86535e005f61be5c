#!/usr/bin/env python3
"""Turns scripts/bench.sh's results (one JSON object per run) into the suite's table
and writes it into BENCHMARKS.md between the bench.sh markers."""
import json
import platform
import statistics
import subprocess
import sys
from datetime import date

results_path, doc_path, runs, soak = sys.argv[1:5]
rows = [json.loads(line) for line in open(results_path)]
BEGIN, END = "<!-- bench.sh:begin -->", "<!-- bench.sh:end -->"


def runs_of(case):
    return [r for r in rows if r["case"] == case]


def steal(r):
    """The share of the machine's CPU time the hypervisor took during a run."""
    v = r.get("steal_percent")
    return "steal n/a" if v is None else f"{v:.2f}% steal"


def spread(values, fmt):
    values = sorted(values)
    med = statistics.median(values)
    return f"**{fmt(med)}**", f"[{fmt(values[0])}, {fmt(values[-1])}]" if len(values) > 1 else ""


def mbs(v):
    return f"{v:,.0f} MB/s"


def recs(v):
    return f"{v / 1e6:.2f} M records/s"


def ms(v):
    return f"{v:.2f}"


CASES = [
    # case, what the row is, headline metric, target
    ("produce-1k", "produce, 1 partition, 1 producer, 1 KiB x 1000 per request, page cache", "mb", ">= 900 MB/s"),
    ("produce-1k-fsync", "same, durability fsync (group commit)", "mb", ">= 400 MB/s"),
    ("produce-100b", "produce, 100-byte records, batches of 1000, page cache", "rec", ">= 2,000,000 records/s"),
    ("produce-16p", "produce, 16 partitions, 4 producers, 1 KiB x 1000, page cache", "mb", ">= 1 GB/s total"),
    ("consume-1k", "consume the first run's data (2 GB), 1 consumer", "mb", ">= 1.2 GB/s"),
    ("produce-rtt", "single-record unary Produce (100 B), one at a time, page cache", "rtt", "p99 < 0.5 ms (issue 3)"),
    ("e2e", "e2e, 10,000 records/s of 1 KiB, one per request (ProduceStream), page cache", "lat", "p99 <= 1 ms, p99.9 <= 3 ms"),
    ("e2e-fsync", "same, fsync durability", "lat", "p99 <= 3 ms"),
]

out = []
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem_gib = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20
out.append(f"Suite of {date.today()}, commit `{commit}`{' (with uncommitted changes)' if dirty else ''}, "
           f"{platform.machine()} {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
           f"{mem_gib:.0f} GiB, Linux {platform.release()}. Medians of {runs} runs, [min, max] beside them. "
           "Client and server are separate processes on this machine, over loopback.")
out.append("")
out.append("| run | median | [min, max] | latency p50 / p99 / p99.9 ms (medians) | target | `strom bench` arguments |")
out.append("|---|---|---|---|---|---|")
for case, what, metric, target in CASES:
    rs = runs_of(case)
    if not rs:
        continue
    key = "e2e" if case.startswith("e2e") else ("message" if case.startswith("consume") else "ack")
    lat = [r[f"{key}_latency_ms"] for r in rs]
    latency = " / ".join(ms(statistics.median(l[p] for l in lat)) for p in ("p50", "p99", "p999"))
    if metric == "rec":
        med, rng = spread([r["records_per_sec"] for r in rs], recs)
    elif metric == "rtt":
        med, rng = spread([r["ack_latency_ms"]["p99"] for r in rs], lambda v: f"p99 {v:.3f} ms")
    elif metric == "lat":
        # Produce call to consumer receipt, and to the acknowledgement: with fsync a
        # consumer sees a record before its fsync, so the acknowledgement is the later.
        med, rng = spread([r["e2e_latency_ms"]["p99"] for r in rs], lambda v: f"e2e p99 {v:.2f} ms")
        med += f", p99.9 {statistics.median(r['e2e_latency_ms']['p999'] for r in rs):.2f} ms"
        med += f"; ack p99 {statistics.median(r['ack_latency_ms']['p99'] for r in rs):.2f} ms"
        med += f", p99.9 {statistics.median(r['ack_latency_ms']['p999'] for r in rs):.2f} ms"
        med += f" (client timer woke late by p99 {statistics.median(r['timer_latency_ms']['p99'] for r in rs):.2f} ms, not counted)"
        # Steal is the largest cause of slow runs seen so far (steal.rs): each run's p99
        # beside its steal, so a slow run and a slow host can be told apart.
        med += "; per run, p99 at steal: " + ", ".join(
            f"{r['e2e_latency_ms']['p99']:.2f} ms at {steal(r)}" for r in rs)
    else:
        med, rng = spread([r["mb_per_sec"] for r in rs], mbs)
    ceiling = runs_of(case + "-ceiling")
    if ceiling:
        c = statistics.median(r["mb_per_sec"] for r in ceiling)
        what += f" (dd, same bytes, right after: {c:,.0f} MB/s)"
    out.append(f"| {what} | {med} | {rng} | {latency} | {target} | `{rs[0]['args']}` |")

jitter = runs_of("jitter")
if jitter:
    late = lambda p: statistics.median(r["late_ms"][p] for r in jitter)
    per_min = lambda ms: statistics.median(r[f"late_over_{ms}ms_per_minute"] for r in jitter)
    med, rng = spread([r["late_ms"]["p999"] for r in jitter], lambda v: f"late p99.9 {v:.2f} ms")
    med += (f", max {late('max'):.2f} ms; later than 2 ms {per_min(2):.0f} times a minute,"
            f" later than 4 ms {per_min(4):.0f}")
    med += "; steal per run: " + ", ".join(steal(r) for r in jitter)
    out.append(f"| the machine's floor: a thread sleeping 1 ms, server idle, 20 s (`jitter`, no strom traffic) | {med} | {rng} | "
               f"{late('p50'):.2f} / {late('p99'):.2f} / {late('p999'):.2f} (lateness) | none: context for the e2e tails | `{jitter[0]['args']}` |")

soak_runs = runs_of("soak")
if soak_runs:
    s = soak_runs[0]
    hwm = runs_of("soak-rss")[0]["hwm_kib"] / 1024
    out.append(f"| 1,000 partitions, 50 producers, {soak}, 50,000 records/s of 1 KiB, page cache | "
               f"{s['records']:,} records, no errors; peak RSS **{hwm:,.0f} MiB** | | "
               f"{' / '.join(ms(s['ack_latency_ms'][p]) for p in ('p50', 'p99', 'p999'))} | no errors, RSS < 1 GiB | `{s['args']}` |")

doc = open(doc_path).read()
start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
open(doc_path, "w").write(doc[:start] + "\n" + "\n".join(out) + "\n" + doc[end:])
