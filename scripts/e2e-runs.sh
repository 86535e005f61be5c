#!/usr/bin/env bash
# Issue 14 item 5's measurement, repeatable: RUNS runs (default 8) of the standard e2e
# bench, each on a fresh server and an empty data directory after a 2 GB dd, each with
# the share of CPU time the hypervisor stole while it ran (`steal_percent`, see
# src/cli/bench/steal.rs), then one `strom bench jitter`. It prints every run and the
# p99s split by steal: a run with 0.15% or more says more about the host than about
# strom (BENCHMARKS.md, "What the slow hours are").
#
#   scripts/e2e-runs.sh                        # 8 runs, about 4 minutes
#   RUNS=16 scripts/e2e-runs.sh
#   SERVER_ENV="STROM_WORKER_THREADS=1" scripts/e2e-runs.sh   # a setting to compare
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
RUNS=${RUNS:-8}
STROM=${STROM:-$PWD/target/release/strom}
[ -x "$STROM" ] || cargo build --release --quiet
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-e2e.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

for n in $(seq "$RUNS"); do
  dd=$(dd if=/dev/zero of="$W/dd" bs=1M count=2000 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/\1/p')
  rm -f "$W/dd"
  rm -rf "$W/data"
  # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=VALUE words
  env ${SERVER_ENV:-} "$STROM" serve --listen 127.0.0.1:0 --data-dir "$W/data" \
    --log-level warn,strom=info >"$W/server.log" 2>&1 &
  PID=$!
  addr=$(strom_address "$W/server.log") || exit 1
  "$STROM" bench -s "$addr" e2e -t t --rate 10000 --duration 15s --record-size 1024 \
    --batch 1 --in-flight 64 --json >"$W/run.json"
  kill "$PID"; wait "$PID" || true; PID=
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1])); r["run"], r["dd"] = int(sys.argv[2]), sys.argv[3]
print(json.dumps(r))' "$W/run.json" "$n" "$dd" >>"$W/runs.jsonl"
  tail -1 "$W/runs.jsonl" | python3 -c '
import json, sys
r = json.load(sys.stdin); e = r["e2e_latency_ms"]; s = r.get("steal_percent")
print("run %d: e2e p50 %.2f p99 %.2f p99.9 %.2f ms, ack p99 %.2f ms, steal %s, dd %s" % (
    r["run"], e["p50"], e["p99"], e["p999"], r["ack_latency_ms"]["p99"],
    "n/a" if s is None else "%.2f%%" % s, r["dd"]))'
done
"$STROM" bench jitter --duration 20s

python3 - "$W/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
STEAL = 0.15  # percent of the machine's CPU time
calm = [r for r in runs if r.get("steal_percent") is not None and r["steal_percent"] < STEAL]
stolen = [r for r in runs if r not in calm]
for name, rs in (("steal under %.2f%%" % STEAL, calm), ("steal %.2f%% or more, or not known" % STEAL, stolen)):
    p99 = sorted(r["e2e_latency_ms"]["p99"] for r in rs)
    if p99:
        print("%s: %d runs, p99 %s ms; median %.2f, at or under 1 ms in %d" % (
            name, len(p99), ", ".join("%.2f" % v for v in p99), statistics.median(p99),
            sum(v <= 1.0 for v in p99)))
EOF
