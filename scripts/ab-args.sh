#!/usr/bin/env bash
# One strom binary, two sets of `strom bench` arguments, alternated ABBA so the
# machine's drift falls on both (as scripts/ab.sh does for two binaries): each run starts
# a fresh server on an empty directory, writes a 2 GB dd first (the page-cache state and
# its speed), runs the bench, and prints MB/s, records/s, acknowledgement latency, and
# the CPU seconds per GB of the server and of the bench client.
#   scripts/ab-args.sh "ARGS_A" "ARGS_B" ROUNDS BENCH-ARGS...
# e.g. scripts/ab-args.sh "" "--idempotent" 3 produce --batch 1 --in-flight 5
# STROM= picks the binary (default target/release/strom).
set -u
. "$(dirname "$0")/lib.sh"
AA=$1; AB=$2; R=$3; shift 3; ARGS=("$@")
S=${STROM:-$(cd "$(dirname "$0")/.." && pwd)/target/release/strom}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-abargs.XXXXXX")
one() {
  local label=$1 extra=$2
  rm -rf $W/data
  $S serve --listen 127.0.0.1:0 --data-dir $W/data --log-level warn,strom=info > $W/log 2>&1 &
  local P=$!
  local A
  A=$(strom_address $W/log) || exit 1
  local d=$(dd if=/dev/zero of=$W/dd bs=1M count=2000 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/\1/p'); rm -f $W/dd
  local t0=$(awk '{print $14+$15}' /proc/$P/stat)
  local out=$(/usr/bin/time -f '%U %S' -o $W/time $S bench -s $A "${ARGS[@]}" $extra --json)
  local t1=$(awk '{print $14+$15}' /proc/$P/stat)
  kill $P; wait $P 2>/dev/null
  python3 - "$label" "$d" "$t0" "$t1" "$(cat $W/time)" "$out" <<'PY'
import json,sys
label,d,t0,t1,tm,out=sys.argv[1:7]
j=json.loads(out); gb=j.get("bytes", 0)/1e9 or 1
u,s=map(float,tm.split())
lat=j.get("ack_latency_ms",{})
print(f"{label} {j['mb_per_sec']:.0f} MB/s {j.get('records_per_sec',0):.0f} rec/s p50 {lat.get('p50',0):.3f} p99 {lat.get('p99',0):.3f} p999 {lat.get('p999',0):.3f} server {(int(t1)-int(t0))/100/gb:.2f} s/GB client {(u+s)/gb:.2f} s/GB dd {d}", flush=True)
PY
}
for r in $(seq $R); do one A "$AA"; one B "$AB"; one B "$AB"; one A "$AA"; done
rm -rf $W
