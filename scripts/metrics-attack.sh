#!/usr/bin/env bash
# The metrics endpoint against clients that request a scrape and hang up at once: a
# fresh server filled by scripts/metrics_load.py (TOPICS one-partition topics, GROUPS
# groups committing all of them), then 32 such clients for 20 s
# (scripts/metrics_hangup.py), with the server's RSS, threads and CPU each second;
# prints the start, the peaks and the end. Python from target/pyenv (scripts/test.sh).
#   scripts/metrics-attack.sh [STROM] [TOPICS GROUPS]   (default 500 1000)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
BIN=${1:-target/release/strom}
T=${2:-500} G=${3:-1000}
strom_serve_with_metrics "$BIN" metrics-attack
target/pyenv/bin/python "$(dirname "$0")/metrics_load.py" "$ADDR" "$T" 1 "$G" >/dev/null
curl -s -o /dev/null -w "one scrape: %{size_download} bytes in %{time_total} s\n" "http://127.0.0.1:$MPORT/metrics"
( for _ in $(seq 26); do
    awk '/VmRSS/{r=$2} /Threads/{t=$2} END{printf "%s %s ", r, t}' "/proc/$PID/status"
    awk '{print $14+$15}' "/proc/$PID/stat"
    sleep 1
  done ) >"$W/mon" &
MON=$!
target/pyenv/bin/python "$(dirname "$0")/metrics_hangup.py" "$MPORT" 20 32
wait "$MON"
awk 'NR==1{print "start: RSS " $1 " kB, " $2 " threads"; c0=$3} {if ($1>r) r=$1; if ($2>t) t=$2; c=$3} END{print "peak: RSS " r " kB, " t " threads; server CPU during the 26 s: " (c-c0)/100 " s"}' "$W/mon"
