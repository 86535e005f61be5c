#!/usr/bin/env bash
# The standard benchmark suite. Starts a fresh release server on a temporary data
# directory, runs every case RUNS times (default 3) with `strom bench --json` from a
# separate process over loopback, then runs the 1,000-partition soak on a server of its
# own, and writes medians and spreads (with machine, commit and commands) into
# BENCHMARKS.md between the "bench.sh" markers.
#
#   scripts/bench.sh                  # the whole suite, about 15 minutes
#   RUNS=1 SOAK=30s scripts/bench.sh  # a quick look (the soak target needs 300s)
#   SOAK=0 scripts/bench.sh           # skip the soak
#
# Page-cache produce runs are bound by how fast this VM hands the kernel memory for new
# page-cache pages, which varies with the machine's state, so after each such run the
# script measures the same write with dd into a fresh file and reports both. Latency
# tails are bound by how long this VM's threads wait to run, so before the e2e runs it
# measures that with `strom bench jitter` on the otherwise idle machine.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SOAK=${SOAK:-300s}
cargo build --release --quiet
B=$PWD/target/release/strom
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-bench.XXXXXX")
RESULTS=$WORK/results.jsonl
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a server on a free port; sets SERVER_PID and ADDR.
start_server() {
  "$B" serve --listen 127.0.0.1:0 --data-dir "$WORK/$1" --log-level info >"$WORK/$1.log" 2>&1 &
  SERVER_PID=$!
  ADDR=$(strom_address "$WORK/$1.log") || exit 1
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=; }

# run CASE N ARGS...: one run of `strom bench ARGS --json`, tagged for the report.
run() {
  local case=$1 n=$2; shift 2
  echo "== $case (run $n): strom bench $*" >&2
  "$B" bench -s "$ADDR" "$@" --json | python3 -c '
import json, sys
r = json.loads(sys.stdin.read()); r["case"], r["run"] = sys.argv[1], int(sys.argv[2]); r["args"] = sys.argv[3]
print(json.dumps(r))' "$case" "$n" "$*" >>"$RESULTS"
  tail -1 "$RESULTS" | python3 -c '
import json, sys
r = json.load(sys.stdin)
if "mb_per_sec" in r: print("   %.1f MB/s, %.0f records/s" % (r["mb_per_sec"], r["records_per_sec"]), file=sys.stderr)
else: print("   late p99.9 %.2f ms, max %.2f ms" % (r["late_ms"]["p999"], r["late_ms"]["max"]), file=sys.stderr)'
}

# The same bytes written with dd into a fresh file, in the state the run left behind.
ceiling() {
  local case=$1 n=$2 mb=$3
  local out; out=$(dd if=/dev/zero of="$WORK/dd" bs=1M count="$mb" 2>&1 | tail -1)
  rm -f "$WORK/dd"
  python3 -c '
import json, re, sys
m = re.search(r"copied, ([0-9.]+) s", sys.argv[3])
print(json.dumps({"case": sys.argv[1] + "-ceiling", "run": int(sys.argv[2]), "mb_per_sec": int(sys.argv[4]) * 1048576 / float(m.group(1)) / 1e6}))' \
    "$case" "$n" "$out" "$mb" >>"$RESULTS"
}

settle() { "$B" topic -s "$ADDR" delete "$1" >/dev/null; sync; }

start_server suite
for n in $(seq "$RUNS"); do
  run produce-1k "$n" produce -t p1k-$n --records 2000000 --record-size 1024 --batch 1000
  ceiling produce-1k "$n" 2048
  run consume-1k "$n" consume -t p1k-$n --consumers 1
  settle p1k-$n
  run produce-1k-fsync "$n" produce -t f1k-$n --records 2000000 --record-size 1024 --batch 1000 --durability fsync
  settle f1k-$n
  run produce-100b "$n" produce -t p100-$n --records 10000000 --record-size 100 --batch 1000
  ceiling produce-100b "$n" 1000
  settle p100-$n
  run produce-16p "$n" produce -t p16-$n --partitions 16 --producers 4 --records 2000000 --record-size 1024 --batch 1000
  ceiling produce-16p "$n" 2048
  settle p16-$n
  run produce-rtt "$n" produce -t rtt-$n --records 20000 --record-size 100 --batch 1 --unary --in-flight 1
  settle rtt-$n
  # The machine's own stalls, with the server idle: the floor under the e2e tails.
  run jitter "$n" jitter --duration 20s
  run e2e "$n" e2e -t e2e-$n --rate 10000 --duration 20s --record-size 1024 --batch 1 --in-flight 64
  settle e2e-$n
  run e2e-fsync "$n" e2e -t e2ef-$n --rate 10000 --duration 20s --record-size 1024 --batch 1 --in-flight 64 --durability fsync
  settle e2ef-$n
done
stop_server

if [ "$SOAK" != 0 ]; then
  start_server soak
  ( peak=0
    while kill -0 "$SERVER_PID" 2>/dev/null; do
      rss=$(awk '/VmRSS/ {print $2}' /proc/"$SERVER_PID"/status 2>/dev/null || echo 0)
      [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$WORK/rss-peak-kib"
      sleep 2
    done ) &
  run soak 1 produce -t soak --partitions 1000 --producers 50 --record-size 1024 --batch 100 \
    --rate 50000 --duration "$SOAK" --in-flight 4
  hwm=$(awk '/VmHWM/ {print $2}' /proc/"$SERVER_PID"/status)
  python3 -c 'import json,sys; print(json.dumps({"case": "soak-rss", "run": 1, "hwm_kib": int(sys.argv[1])}))' "$hwm" >>"$RESULTS"
  stop_server
fi

python3 scripts/bench_report.py "$RESULTS" BENCHMARKS.md "$RUNS" "$SOAK"
mkdir -p target && cp "$RESULTS" target/bench-results.jsonl
echo "BENCHMARKS.md updated; every run's JSON is in target/bench-results.jsonl" >&2
