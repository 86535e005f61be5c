#!/usr/bin/env bash
# Does the cleaner disturb producers? Each run starts a fresh release server with a
# cleaner pass every second and two background producers: 40 MB/s of 1 KiB records into
# topic `churn` (1 MiB segments) and 20 MB/s of 1 KiB records over 10,000 keys into
# topic `keyed` (1 MiB segments); it measures `strom bench produce` on a third topic `m`
# (1 KiB records, 1000 per request, 8 in flight, page cache) for 15 s. In runs B, `churn`
# has retention.bytes=64 MiB, so the cleaner deletes about 40 of its segments a second,
# and `keyed` has cleanup.policy=compact, so it is compacted every second; in runs A both
# keep everything. Alternated A B B A, twice, with a dd of 1 GiB into a fresh file before
# each run.
#   scripts/bench-retention.sh [STROM]
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
B=${1:-$PWD/target/release/strom}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-bench-retention.XXXXXX")
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
one() {
  local label=$1 n=$2 retention policy
  if [ "$label" = B ]; then retention=67108864 policy=compact; else retention=-1 policy=delete; fi
  local ddr
  ddr=$(dd if=/dev/zero of="$W/dd" bs=1M count=1024 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/\1/p')
  rm -f "$W/dd"
  "$B" serve --listen 127.0.0.1:0 --data-dir "$W/d$n" --retention-check-interval-ms 1000 \
    --log-level warn,strom=info >"$W/s$n.log" 2>&1 &
  PID=$!
  local addr
  addr=$(strom_address "$W/s$n.log") || exit 1
  "$B" topic -s "$addr" create churn -c segment.bytes=1048576 -c "retention.bytes=$retention" \
    -c durability=page_cache >/dev/null
  "$B" topic -s "$addr" create keyed -c segment.bytes=1048576 -c "cleanup.policy=$policy" \
    -c retention.ms=-1 -c durability=page_cache >/dev/null
  "$B" topic -s "$addr" create m -c durability=page_cache >/dev/null
  "$B" bench -s "$addr" produce -t churn --duration 22s --rate 40000 --record-size 1024 \
    --batch 100 --json >"$W/churn$n.json" &
  local churn=$!
  "$B" bench -s "$addr" produce -t keyed --duration 22s --rate 20000 --record-size 1024 \
    --batch 100 --keys uniform --json >"$W/keyed$n.json" &
  local keyed=$!
  sleep 4
  local out
  out=$("$B" bench -s "$addr" produce -t m --duration 15s --record-size 1024 --batch 1000 \
    --in-flight 8 --json)
  wait "$churn" "$keyed"
  local deleted compacted
  deleted=$(grep -c "deleted old segments" "$W/s$n.log")
  compacted=$(grep -c "compacted" "$W/s$n.log")
  kill "$PID"; wait "$PID" 2>/dev/null; PID=
  echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
l = d["ack_latency_ms"]
print("%s run%d MB/s=%.0f p50=%.2fms p99=%.2fms deletion_passes=%s compaction_passes=%s dd=%s" % (
    sys.argv[1], int(sys.argv[2]), d["mb_per_sec"], l["p50"], l["p99"], sys.argv[3], sys.argv[4], sys.argv[5]))
' "$label" "$n" "$deleted" "$compacted" "$ddr"
  rm -rf "$W/d$n"
}
n=0
for pair in "A B" "B A" "A B" "B A"; do
  for x in $pair; do
    n=$((n + 1))
    one "$x" "$n"
  done
done
