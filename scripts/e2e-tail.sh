#!/usr/bin/env bash
# What delays the slowest records of `strom bench e2e`: one run on a fresh server under a
# scheduler trace of every CPU (`perf record -e sched:sched_switch,sched_wakeup -a -k
# CLOCK_MONOTONIC`), with the bench writing each record slower than SLOW_MS to a slow
# log on the same clock; then scripts/e2e_tail.py sums what each CPU ran while those
# records waited, and names the cause of each slow stretch (another task's long run,
# a long run of the server or client, or neither). Needs perf and root (or
# perf_event_paranoid <= -1). The trace itself adds a little to the tail ("perf" rows).
#   scripts/e2e-tail.sh                         # 15 s at 10,000 one-record requests/s
#   SLOW_MS=2 DURATION=30s scripts/e2e-tail.sh
#   KEEP=/tmp/tail scripts/e2e-tail.sh          # keep the slow log and the trace there
set -eu
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
STROM=${STROM:-$PWD/target/release/strom}
DURATION=${DURATION:-15s}
SLOW_MS=${SLOW_MS:-1}
RATE=${RATE:-10000}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-tail.XXXXXX")
OUT=${KEEP:-$W}
mkdir -p "$OUT"
SERVER=
PERF=
cleanup() {
  [ -n "$PERF" ] && kill "$PERF" 2>/dev/null && wait "$PERF" 2>/dev/null
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
command -v perf >/dev/null || { echo "needs perf" >&2; exit 1; }
[ -x "$STROM" ] || cargo build --release --quiet

"$STROM" serve --listen 127.0.0.1:0 --data-dir "$W/data" --log-level warn,strom=info >"$W/server.log" 2>&1 &
SERVER=$!
ADDR=$(strom_address "$W/server.log")

# The trace outlasts the bench by a few seconds; the bench's client is found by its
# pid, which the analysis needs to tell its threads from the server's.
secs=$(python3 -c "
import re, sys
m = re.fullmatch(r'(\d+)(ms|s|m|h)', sys.argv[1])
if not m: sys.exit('DURATION: a number with ms, s, m or h, e.g. 15s')
print(int(m[1]) * {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600}[m[2]] + 4)" "$DURATION")
perf record -q -e sched:sched_switch -e sched:sched_wakeup -a -k CLOCK_MONOTONIC -o "$OUT/perf.data" -- sleep "$secs" 2>"$W/perf.err" &
PERF=$!
sleep 1
"$STROM" bench -s "$ADDR" e2e -t tail --rate "$RATE" --duration "$DURATION" --record-size 1024 \
  --batch 1 --in-flight 64 --slow-log "$OUT/slow.log" --slow-ms "$SLOW_MS" &
CLIENT=$!
wait "$CLIENT"
wait "$PERF" || { cat "$W/perf.err" >&2; exit 1; }
PERF=
perf script -i "$OUT/perf.data" -F comm,pid,tid,cpu,time,event,trace --ns >"$OUT/sched.txt" 2>"$W/script.err" ||
  { cat "$W/script.err" >&2; exit 1; }
echo
python3 scripts/e2e_tail.py "$OUT/slow.log" "$OUT/sched.txt" "$SERVER" "$CLIENT" "$SLOW_MS"
