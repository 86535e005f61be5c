#!/usr/bin/env bash
# A share group that has accepted RECORDS records (10 million by default) and holds HOLD
# (1,000) in flight (BENCHMARKS.md, "Queues"): its state on disk, the server's memory
# with and without it, and how long restarts take: clean (SIGTERM) and after SIGKILL,
# to the ready line and to the first ShareFetch answered.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-10000000} HOLD=${HOLD:-1000} ROUNDS=${ROUNDS:-3}
ADDR=127.0.0.1:${PORT:-7492}
cargo build --release --quiet
STROM=$PWD/target/release/strom
DIR=$(mktemp -d /tmp/strom-queue.XXXXXX)
LOG=$DIR/serve.log
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT

start() {
  local t0 t1 t2
  t0=$(date +%s.%N)
  "$STROM" serve --listen "$ADDR" --data-dir "$DIR/data" >"$LOG" 2>&1 &
  PID=$!
  until grep -q "serving gRPC" "$LOG"; do sleep 0.002; done
  t1=$(date +%s.%N)
  # The group is read before the ready line (share groups are read at start-up, for
  # retention); describe is the first request that uses it.
  "$STROM" -s "$ADDR" queue describe big >/dev/null 2>&1 || true
  t2=$(date +%s.%N)
  printf '%s: ready in %.3f s, describe answered at %.3f s, RSS %s kB\n' "$1" \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t0" | bc)" \
    "$(awk '/VmRSS/ {print $2}' /proc/$PID/status)"
}
stop() { kill -TERM "$PID"; wait "$PID" || true; }

start fill
"$STROM" -s "$ADDR" bench queue -t q --partitions 4 --records "$RECORDS" --record-size 16 \
  --unary --batch 10000 --workers 2 --group big --hold "$HOLD"
"$STROM" -s "$ADDR" queue describe big
stop
echo "share group on disk: $(du -sb "$DIR/data/share-groups" | cut -f1) bytes (du):"
ls -l "$DIR"/data/share-groups/*/
for i in $(seq "$ROUNDS"); do start "clean restart $i"; stop; done
for i in $(seq "$ROUNDS"); do
  start "before SIGKILL $i" >/dev/null
  kill -KILL "$PID"; wait "$PID" || true
  start "restart after SIGKILL $i"; stop
done
mv "$DIR/data/share-groups" "$DIR/share-groups.aside"
mkdir "$DIR/data/share-groups"
start "without the share group" 2>/dev/null || true
stop
