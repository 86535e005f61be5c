#!/usr/bin/env bash
# Start, stop and crash-restart times of a server holding thousands of partitions
# (BENCHMARKS.md, "Thousands of partitions: start and stop").
#
#   scripts/restart-many.sh                      # this tree's release build
#   BINS="/tmp/a /tmp/b /tmp/b /tmp/a" scripts/restart-many.sh   # builds alternated
#
# Fills one data directory with TOPICS topics of PARTS partitions (about 40 KB in each,
# from `strom bench produce` with uniform keys), then, for each binary in BINS in turn,
# on that same directory: a `dd` of 1 GiB, a start after a clean stop (exec to the ready
# line), the SIGTERM stop (signal to exit), a start after SIGKILL (every partition
# recovered; a little is produced first so the logs have a tail past their checkpoint),
# and the creation of one more topic of PARTS partitions (deleted again). During the
# start after SIGKILL, scripts/health_probe.py (Python grpcio, PYTHON) polls the health
# Check from the exec: the seconds to its first answer and to SERVING; and
# scripts/metrics_probe.py scrapes the metrics endpoint: the seconds to its first answer
# and to the ready server's figures. Prints each run, then the medians per binary.
set -euo pipefail
cd "$(dirname "$0")/.."
TOPICS=${TOPICS:-5} PARTS=${PARTS:-1000}
PYTHON=${PYTHON:-target/pyenv/bin/python}
if [ -z "${BINS:-}" ]; then
  cargo build --release --quiet --bin strom
  BINS=$PWD/target/release/strom
fi
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-restart.XXXXXX")
ADDR=127.0.0.1:${PORT:-7591}
METRICS=127.0.0.1:${METRICS_PORT:-7592}
LOG=$W/serve.log
PID=
trap 'if [ -n "$PID" ]; then kill -KILL "$PID" 2>/dev/null || true; fi; rm -rf "$W"' EXIT
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

# start BIN: starts BIN on the directory; sets PID, and TOOK to the seconds from its
# exec to its ready line.
start() {
  local t0
  t0=$(now)
  "$1" serve --listen "$ADDR" --metrics-listen "$METRICS" --data-dir "$W/data" >"$LOG" 2>&1 &
  PID=$!
  until grep -q "serving gRPC" "$LOG"; do
    kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
    sleep 0.005
  done
  TOOK=$(since "$t0")
}
# stop: SIGTERM, and TOOK to the seconds until the server exited.
stop() {
  local t0
  t0=$(now)
  kill -TERM "$PID"
  wait "$PID" || true
  PID=
  TOOK=$(since "$t0")
}
cli() { STROM_SERVER=$ADDR "$BIN" "$@" >/dev/null 2>&1; }
# after T0 KEY FILE: the seconds from T0 to the time a probe printed as KEY=TIME in
# FILE; nan if it printed none (its limit passed first).
after() {
  local at
  at=$(sed -n "s/.*$2=\([0-9.]*\).*/\1/p" "$3")
  if [ -n "$at" ]; then echo "$at - $1" | bc; else echo nan; fi
}

BIN=${BINS%% *}
start "$BIN"
for t in $(seq "$TOPICS"); do
  cli topic create "t$t" --partitions "$PARTS"
  cli bench produce -t "t$t" --keys uniform --records $((PARTS * 400)) --batch 10 --record-size 100
done
stop
echo "data: $((TOPICS * PARTS)) partitions, $(du -sh --apparent-size "$W/data/topics" | cut -f1) of files, $(du -sh "$W/data/topics" | cut -f1) of disk"

RESULTS=$W/results
for BIN in $BINS; do
  dd=$(dd if=/dev/zero of="$W/dd" bs=1M count=1024 conv=fdatasync 2>&1 | sed -n 's/.*, \([0-9.]* [MG]B\/s\)/\1/p')
  rm -f "$W/dd"
  start "$BIN"
  clean=$TOOK
  stop
  term=$TOOK
  start "$BIN"
  cli bench produce -t t1 --keys uniform --records $((PARTS * 20)) --batch 10 --record-size 100
  rm -f "$W/go"
  "$PYTHON" scripts/health_probe.py "$ADDR" "$W/go" >"$W/probe" &
  probe=$!
  "$PYTHON" scripts/metrics_probe.py "$METRICS" "$W/go" >"$W/mprobe" &
  mprobe=$!
  sleep 3 # the probe's imports, before it waits for $W/go
  kill -KILL "$PID"
  wait "$PID" 2>/dev/null || true
  t0=$(now)
  touch "$W/go"
  start "$BIN"
  crash=$TOOK
  wait "$probe"
  wait "$mprobe"
  answered=$(after "$t0" first_answer "$W/probe")
  serving=$(after "$t0" serving "$W/probe")
  scraped=$(after "$t0" first_answer "$W/mprobe")
  figures=$(after "$t0" figures "$W/mprobe")
  recovered=$(grep -c "recovered log after unclean shutdown" "$LOG" || true)
  t0=$(now)
  cli topic create extra --partitions "$PARTS"
  create=$(since "$t0")
  cli topic delete extra
  stop
  printf '%s  dd %s  clean start %.3f s  SIGTERM stop %.3f s  start after SIGKILL %.3f s (%s logs recovered; health answered at %.3f s, SERVING at %.3f s; metrics answered at %.3f s, figures at %.3f s)  create %s partitions %.3f s\n' \
    "$BIN" "$dd" "$clean" "$term" "$crash" "$recovered" "$answered" "$serving" "$scraped" "$figures" "$PARTS" "$create"
  echo "$BIN $clean $term $crash $answered $serving $scraped $figures $create" >>"$RESULTS"
done
python3 - "$RESULTS" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, *xs = line.split()
    runs.setdefault(name, []).append([float(x) for x in xs])
print("medians (min-max) in seconds:")
for name, rows in runs.items():
    cols = list(zip(*rows))
    cell = lambda c: "%.2f (%.2f-%.2f)" % (statistics.median(c), min(c), max(c))
    print("  %s: clean start %s, SIGTERM stop %s, start after SIGKILL %s "
          "(health first answered %s, SERVING %s; metrics first answered %s, "
          "figures %s), create %s"
          % (name, *(cell(c) for c in cols)))
EOF
