#!/usr/bin/env bash
# Produce latency while a topic gains partitions: a fresh server BIN on PORT, topics t and
# u of one partition, one unary producer on each (one record a call, one in flight, 8 s,
# the bench client CLIENT, default BIN), and 2 s in `strom topic alter t --partitions
# 1024`. Prints one line: how long the add took, a 2 GB dd's speed before the run, and
# each producer's acknowledgement p50, p99, p99.9 and max (ms).
#   scripts/add-partitions-isolation.sh LABEL BIN PORT
# Alternate two builds by hand (B A A B ...); BENCHMARKS.md has the figures.
set -euo pipefail
label=$1 bin=$2 port=$3
client=${CLIENT:-$bin}
d=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-iso.XXXXXX")
dd if=/dev/zero of=$d/dd bs=1M count=2000 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/dd \1/p' > $d/ddspeed; rm -f $d/dd
$bin serve --listen 127.0.0.1:$port --data-dir $d/data > $d/log 2>&1 &
pid=$!
for i in $(seq 100); do grep -q "serving gRPC\|ready" $d/log 2>/dev/null && break; sleep 0.05; done
c="$client -s 127.0.0.1:$port"
$c topic create t -p 1 > /dev/null; $c topic create u -p 1 > /dev/null
$c bench produce -t t --batch 1 --in-flight 1 --record-size 100 --duration 8s --json > $d/t.json 2>/dev/null &
b1=$!
$c bench produce -t u --batch 1 --in-flight 1 --record-size 100 --duration 8s --json > $d/u.json 2>/dev/null &
b2=$!
sleep 2
s=$(date +%s.%N)
$bin -s 127.0.0.1:$port topic alter t --partitions 1024 > /dev/null
e=$(date +%s.%N)
wait $b1 $b2
kill $pid; wait $pid 2>/dev/null || true
python3 - "$label" "$d" "$s" "$e" <<'PY'
import json, sys
label, d, s, e = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
def lat(name):
    j = json.load(open(f"{d}/{name}.json"))
    a = j["ack_latency_ms"]
    return j, a
out = [label, f"add {e - s:.2f} s", open(f"{d}/ddspeed").read().strip()]
for name in ("t", "u"):
    j, a = lat(name)
    out.append(f"{name}: p50 {a.get('p50')} p99 {a.get('p99')} p99.9 {a.get('p999')} max {a.get('max')}")
print(" | ".join(out))
PY
rm -rf $d
