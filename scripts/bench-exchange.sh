#!/usr/bin/env bash
# What routing through an exchange costs: unary Produce calls to a topic (A) against
# unary Publish calls to a topic exchange (B) whose binding "bench.#" takes them to that
# topic, and with FANOUT > 1 to FANOUT topics in all (the others bound with "#"),
# alternated ABBA. Each run starts a fresh server on an empty directory, writes a 2 GB
# dd first (the page-cache state and its speed), runs the bench, and prints MB/s and
# records/s of the publisher's payload (counted once however many topics it reaches),
# acknowledgement latency, and the CPU seconds of the server and the bench client.
#   scripts/bench-exchange.sh ROUNDS FANOUT BENCH-ARGS...
# e.g. scripts/bench-exchange.sh 2 1 --batch 1 --in-flight 1 --records 50000
# STROM= picks the binary (default target/release/strom).
set -u
. "$(dirname "$0")/lib.sh"
R=$1; N=$2; shift 2; ARGS=("$@")
S=${STROM:-$(cd "$(dirname "$0")/.." && pwd)/target/release/strom}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-exchange.XXXXXX")
trap 'rm -rf "$W"' EXIT
one() {
  local label=$1
  rm -rf "$W/data"
  "$S" serve --listen 127.0.0.1:0 --data-dir "$W/data" --log-level warn,strom=info > "$W/log" 2>&1 &
  local P=$!
  local A extra=()
  A=$(strom_address "$W/log") || exit 1
  "$S" topic create t -s "$A" > /dev/null
  if [ "$label" = B ]; then
    "$S" exchange create x --type topic -s "$A" 2> /dev/null
    "$S" exchange bind x t -k 'bench.#' -s "$A" 2> /dev/null
    for i in $(seq 2 "$N"); do
      "$S" topic create "t$i" -s "$A" > /dev/null
      "$S" exchange bind x "t$i" -k '#' -s "$A" 2> /dev/null
    done
    extra=(--exchange x --routing-key bench.orders.created)
  fi
  local d
  d=$(dd if=/dev/zero of="$W/dd" bs=1M count=2000 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/\1/p'); rm -f "$W/dd"
  local t0 t1 out
  t0=$(awk '{print $14+$15}' /proc/$P/stat)
  out=$(/usr/bin/time -f '%U %S' -o "$W/time" "$S" bench -s "$A" produce -t t --unary "${ARGS[@]}" "${extra[@]}" --json)
  t1=$(awk '{print $14+$15}' /proc/$P/stat)
  kill $P; wait $P 2>/dev/null
  python3 - "$label" "$d" "$t0" "$t1" "$(cat "$W/time")" "$out" <<'PY'
import json,sys
label,d,t0,t1,tm,out=sys.argv[1:7]
j=json.loads(out)
u,s=map(float,tm.split())
lat=j.get("ack_latency_ms",{})
print(f"{label} {j['mb_per_sec']:.0f} MB/s {j.get('records_per_sec',0):.0f} rec/s p50 {lat.get('p50',0):.4f} p99 {lat.get('p99',0):.3f} server {(int(t1)-int(t0))/100:.2f} s client {u+s:.2f} s dd {d}", flush=True)
PY
}
for _ in $(seq "$R"); do one A; one B; one B; one A; done
