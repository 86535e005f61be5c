#!/usr/bin/env bash
# Two strom binaries compared on the same produce and consume runs, alternated ABBA so
# the machine's drift (page-cache state, neighbours) falls on both: each run starts a
# fresh server of one binary, produces, consumes what it produced, and prints MB/s, with
# a dd of the same size into a fresh file right after for the page-cache ceiling.
#   scripts/ab.sh OLD_STROM NEW_STROM [ROUNDS]
# The client (`strom bench`) is NEW_STROM's in every run, so only the server differs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
A=$1 B=$2 ROUNDS=${3:-2}
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-ab.XXXXXX")
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
one() {
  local label=$1 bin=$2 n=$3
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$WORK/d$n" --log-level warn,strom=info >"$WORK/s$n.log" 2>&1 &
  PID=$!
  local addr
  addr=$(strom_address "$WORK/s$n.log") || exit 1
  local p c
  p=$("$B" bench -s "$addr" produce -t ab --records 1000000 --record-size 1024 --batch 1000 --json |
    python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["mb_per_sec"])')
  local dd_rate
  dd_rate=$(dd if=/dev/zero of="$WORK/dd" bs=1M count=1000 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/\1/p')
  rm -f "$WORK/dd"
  c=$("$B" bench -s "$addr" consume -t ab --json |
    python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["mb_per_sec"])')
  p100=$("$B" bench -s "$addr" produce -t ab100 --records 5000000 --record-size 100 --batch 1000 --json |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["records_per_sec"] / 1e6))')
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  rm -rf "$WORK/d$n"
  echo "$label produce 1 KiB ${p} MB/s (dd right after: $dd_rate), consume ${c} MB/s, produce 100 B ${p100} M records/s"
}
n=0
for _ in $(seq "$ROUNDS"); do
  for pair in "A $A" "B $B" "B $B" "A $A"; do
    n=$((n + 1))
    one $pair $n
  done
done
