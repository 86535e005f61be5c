#!/usr/bin/env bash
# What a scrape of /metrics costs on a loaded server: a fresh release server on a
# temporary directory, TOPICS topics of PARTITIONS partitions with three records each,
# GROUPS consumer groups each committing every partition (scripts/metrics_load.py, with
# the Python from target/pyenv that scripts/test.sh installs), then five scrapes timed
# by curl, with the series, the bytes and the server's RSS.
#   scripts/metrics-scrape.sh [STROM] [TOPICS PARTITIONS GROUPS]   (default 1 1000 100)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
BIN=${1:-target/release/strom}
T=${2:-1} P=${3:-1000} G=${4:-100}
strom_serve_with_metrics "$BIN" scrape
target/pyenv/bin/python "$(dirname "$0")/metrics_load.py" "$ADDR" "$T" "$P" "$G"
for _ in 1 2 3 4 5; do
  curl -s -o "$W/scrape" -w "scrape %{time_total} s, %{size_download} bytes\n" "http://127.0.0.1:$MPORT/metrics"
done
echo "series $(grep -c '^strom' "$W/scrape"), server RSS $(awk '/VmRSS/{print $2, $3}' /proc/$PID/status)"
