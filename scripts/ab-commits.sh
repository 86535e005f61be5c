#!/usr/bin/env bash
# Two strom builds compared on durable offset commits (`strom bench commit`, 128
# committers on 4 connections, 8 s), alternated A B B A twice, one fresh server per run,
# with a dd of 256 MiB (conv=fdatasync) before each run for the machine's state. Each run
# uses its own build for both the server and the bench client.
#   scripts/ab-commits.sh A_STROM B_STROM
set -u
. "$(dirname "$0")/lib.sh"
A=$1 B=$2
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-ab-commits.XXXXXX")
trap 'rm -rf "$W"' EXIT
one() {
  local bin=$1 label=$2 n=$3
  local ddr
  ddr=$(dd if=/dev/zero of="$W/dd" bs=1M count=256 conv=fdatasync 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/\1/p')
  rm -f "$W/dd"
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$W/d$n" --log-level warn,strom=info >"$W/s$n.log" 2>&1 &
  local pid=$! addr
  addr=$(strom_address "$W/s$n.log") || exit 1
  local rate
  rate=$("$bin" bench -s "$addr" commit --committers 128 --duration 8s --json |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["records_per_sec"]))')
  local ticks
  ticks=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null
  echo "$label run$n commits/s=$rate server_ticks=$ticks dd=$ddr"
  rm -rf "$W/d$n"
}
n=0
for pair in "A B" "B A" "A B" "B A"; do
  for x in $pair; do
    n=$((n + 1))
    if [ "$x" = A ]; then one "$A" A $n; else one "$B" B $n; fi
  done
done
