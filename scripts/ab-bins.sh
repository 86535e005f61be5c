#!/usr/bin/env bash
# Two strom servers on the same `strom bench` run, alternated A B B A per round so the
# machine's drift (page-cache state, the host's steal) falls on both. Each run: a 2 GB dd
# (its speed is the page cache's state), a fresh server on an empty directory, the bench,
# and one line with MB/s, the acknowledgement (or, for e2e, end-to-end) latency, the
# share of CPU time the hypervisor stole during the run, the CPU seconds of the server
# and of the bench client (per GB for throughput shapes, per run for e2e), and the
# transparent huge pages the whole machine faulted in during the run (`thp_fault_alloc`).
#   scripts/ab-bins.sh A_STROM B_STROM ROUNDS BENCH-ARGS...
# e.g. scripts/ab-bins.sh old/strom new/strom 4 e2e -t t --rate 10000 --duration 15s \
#        --record-size 1024 --batch 1 --in-flight 64
# The bench client is CLIENT (default A_STROM) in every run, so only the server differs;
# CLIENT=each runs each build's own client against its server (a change to both sides).
# SERVER_ENV adds NAME=VALUE words to both servers' environment. KEEP=DIR keeps each
# run's JSON and server log there (runN-A.json, runN-A.log, ...); with an e2e bench,
# its --slow-log too.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
A=$1 B=$2 R=$3
shift 3
CLIENT=${CLIENT:-$A}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-abbins.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

# steal and total jiffies of the whole machine, from /proc/stat's first line
cpu_line() { awk '/^cpu /{s=0; for (i=2; i<=NF; i++) s+=$i; print $9, s}' /proc/stat; }
# huge pages faulted in so far, machine-wide (0 on a kernel without transparent huge pages)
thp_faults() { awk '/^thp_fault_alloc /{n = $2} END {print n + 0}' /proc/vmstat; }

one() {
  local label=$1 bin=$2
  shift 2
  rm -rf "$W/data"
  local dd
  dd=$(dd if=/dev/zero of="$W/dd" bs=1M count=2000 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/\1/p')
  rm -f "$W/dd"
  # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=VALUE words
  env ${SERVER_ENV:-} "$bin" serve --listen 127.0.0.1:0 --data-dir "$W/data" \
    --log-level warn,strom=info >"$W/log" 2>&1 &
  PID=$!
  local addr
  addr=$(strom_address "$W/log") || exit 1
  local t0 t1 c0 c1 h0 h1 client=$CLIENT
  if [ "$client" = each ]; then client=$bin; fi
  t0=$(awk '{print $14+$15}' "/proc/$PID/stat")
  c0=$(cpu_line)
  h0=$(thp_faults)
  n=$((n + 1))
  local keep=()
  if [ -n "${KEEP:-}" ] && [ "$1" = e2e ]; then keep=(--slow-log "$KEEP/run$n-$label.slow"); fi
  /usr/bin/time -f '%U %S' -o "$W/time" "$client" bench -s "$addr" "$@" --json "${keep[@]}" >"$W/out"
  if [ -n "${KEEP:-}" ]; then cp "$W/out" "$KEEP/run$n-$label.json"; fi
  c1=$(cpu_line)
  h1=$(thp_faults)
  t1=$(awk '{print $14+$15}' "/proc/$PID/stat")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  if [ -n "${KEEP:-}" ]; then cp "$W/log" "$KEEP/run$n-$label.log"; fi
  python3 - "$label" "$dd" "$t0" "$t1" "$(cat "$W/time")" "$c0" "$c1" "$W/out" $((h1 - h0)) <<'PY'
import json, sys
label, dd, t0, t1, tm, c0, c1, out, thp = sys.argv[1:10]
j = json.load(open(out))
server = (int(t1) - int(t0)) / 100
client = sum(map(float, tm.split()))
(s0, a0), (s1, a1) = map(int, c0.split()), map(int, c1.split())
steal = 100 * (s1 - s0) / max(a1 - a0, 1)
kind = "e2e" if "e2e_latency_ms" in j else "ack"
lat = j.get(kind + "_latency_ms") or {}
tail = ""
if kind == "e2e":  # the acknowledgements' tail too: a stall in produce shows in both
    ack = j["ack_latency_ms"]
    tail = f" max {lat.get('max', 0):.1f} ms, ack p99 {ack['p99']:.3f} max {ack.get('max', 0):.1f}"
gb = j.get("bytes", 0) / 1e9
cpu = (f"server {server / gb:.2f} client {client / gb:.2f} s/GB" if gb >= 0.5
       else f"server {server:.2f} client {client:.2f} s")
print(f"{label} {j.get('mb_per_sec', 0):.0f} MB/s {kind} p50 {lat.get('p50', 0):.3f} "
      f"p99 {lat.get('p99', 0):.3f} p99.9 {lat.get('p999', 0):.3f}{tail} ms, steal {steal:.2f}%, "
      f"{cpu}, thp {thp}, dd {dd}", flush=True)
PY
}
n=0
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; fi
for _ in $(seq "$R"); do
  one A "$A" "$@"; one B "$B" "$@"; one B "$B" "$@"; one A "$A" "$@"
done
