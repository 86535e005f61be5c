#!/usr/bin/env bash
# Produce latency on one topic while unrelated heavy work runs on the same server:
# creating a 1,024-partition topic, and reading a cold 2 GB topic from its start (the
# page cache dropped first). Quiet and disturbed runs alternate (quiet, disturbed,
# disturbed, quiet, per round) on one fresh release server; each run is a `strom bench
# produce` of one 100-byte record per request at 1,000 requests/s for SECS seconds, and
# prints its p50/p99/p99.9/max. Needs root for drop_caches. Figures go into BENCHMARKS.md.
#   scripts/isolation.sh            # 2 rounds of each, 10 s runs
#   ROUNDS=1 SECS=5 scripts/isolation.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
SECS=${SECS:-10}
cargo build --release --quiet
B=$PWD/target/release/strom
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-isolation.XXXXXX")
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
"$B" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --log-level warn,strom=info >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
ADDR=$(strom_address "$WORK/server.log")
export STROM_SERVER=$ADDR
"$B" topic create steady --config durability=page_cache >/dev/null
echo "writing the 2 GB topic to read cold..." >&2
"$B" bench produce -t cold --records 2000000 --record-size 1024 --batch 1000 --json >/dev/null

# probe KIND: one measured run on `steady`, with KIND's disturbance beside it.
N=0
probe() {
  local kind=$1
  N=$((N + 1))
  sync
  echo 3 >/proc/sys/vm/drop_caches
  case $kind in
    create) (sleep 2; "$B" topic create "wide$N" -p 1024 >/dev/null) & ;;
    cold) (sleep 2; "$B" consume -t cold --from earliest --until latest >/dev/null) & ;;
    quiet) (true) & ;;
  esac
  local helper=$!
  "$B" bench produce -t steady --rate 1000 --batch 1 --record-size 100 --unary \
    --duration "${SECS}s" --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
l = r["ack_latency_ms"]
print("%-6s p50 %6.2f  p99 %6.2f  p99.9 %6.2f  max %7.2f ms" % (sys.argv[1], l["p50"], l["p99"], l["p999"], l["max"]))' "$kind"
  local started=$SECONDS
  wait "$helper"
  [ "$kind" = create ] && echo "        (the create took until $((SECONDS - started)) s after the run)" >&2
  [ "$kind" = create ] && "$B" topic delete "wide$N" >/dev/null 2>&1
  true
}
for disturbance in create cold; do
  for _ in $(seq "$ROUNDS"); do
    probe quiet; probe "$disturbance"; probe "$disturbance"; probe quiet
  done
done
