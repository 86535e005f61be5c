#!/usr/bin/env bash
# Start-up time and memory of a server holding many consumer groups (BENCHMARKS.md,
# "Consumer groups"): fills a data directory with N_GROUPS groups of PARTITIONS committed
# offsets, then starts the server ROUNDS times with a warm page cache and once after
# dropping it (as root), and reports the time to the ready line and the RSS, then the RSS
# once every group has been loaded again.
set -euo pipefail
cd "$(dirname "$0")/.."
N_GROUPS=${N_GROUPS:-10000} PARTITIONS=${PARTITIONS:-1000} ROUNDS=${ROUNDS:-5}
ADDR=127.0.0.1:${PORT:-7491}
cargo build --release --quiet
STROM=$PWD/target/release/strom
DIR=$(mktemp -d /tmp/strom-groups.XXXXXX)
LOG=$DIR/serve.log
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT

start() {
  local t0 t1
  t0=$(date +%s.%N)
  "$STROM" serve --listen "$ADDR" --data-dir "$DIR/data" >"$LOG" 2>&1 &
  PID=$!
  until grep -q "serving gRPC" "$LOG"; do sleep 0.002; done
  t1=$(date +%s.%N)
  # The groups' share: from the broker's "opened" line to the groups' "listed" line.
  local b g
  b=$(grep -m1 "broker opened" "$LOG" | cut -c12-26 | awk -F: '{printf "%.6f", $1*3600+$2*60+$3}')
  g=$(grep -m1 "groups listed" "$LOG" | cut -c12-26 | awk -F: '{printf "%.6f", $1*3600+$2*60+$3}')
  printf '%s: ready in %.3f s (listing the groups: %.3f s), RSS %s kB\n' "$1" \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$g - $b" | bc)" \
    "$(awk '/VmRSS/ {print $2}' /proc/$PID/status)"
}
stop() { kill -TERM "$PID"; wait "$PID" || true; }

start fill
STROM_SERVER=$ADDR "$STROM" bench fill-groups --groups "$N_GROUPS" --partitions "$PARTITIONS" 2>/dev/null
stop
echo "data: $(du -sh "$DIR/data/groups" | cut -f1) in $N_GROUPS group directories"
for i in $(seq "$ROUNDS"); do start "warm start $i"; stop; done
if [ -w /proc/sys/vm/drop_caches ]; then
  sync; echo 3 >/proc/sys/vm/drop_caches
  start "cold start"; stop
fi
start "start"
STROM_SERVER=$ADDR "$STROM" bench fill-groups --groups "$N_GROUPS" --partitions "$PARTITIONS" 2>/dev/null
echo "after loading every group again: RSS $(awk '/VmRSS/ {print $2}' /proc/$PID/status) kB"
stop
