#!/usr/bin/env bash
# Share-group throughput (stream and unary, alternated, a dd figure before each run) and
# the delay of a record whose lock ends (BENCHMARKS.md, "Queues").
set -u
cd "$(dirname "$0")/.."
cargo build --release --quiet
S=$PWD/target/release/strom
D=$(mktemp -d /tmp/qbench.XXXX)
$S serve --listen 127.0.0.1:7481 --data-dir $D/data > $D/serve.log 2>&1 &
PID=$!
sleep 1
dd_fig() { dd if=/dev/zero of=$D/dd bs=1M count=256 conv=fdatasync 2>&1 | tail -1 | awk '{print $(NF-1), $NF}'; rm -f $D/dd; }
for round in 1 2 3; do
  echo "dd: $(dd_fig)"
  $S -s 127.0.0.1:7481 bench queue -t qs$round --records 400000 --workers 4 --json 2>/dev/null
  echo "dd: $(dd_fig)"
  $S -s 127.0.0.1:7481 bench queue -t qu$round --records 400000 --workers 4 --unary --batch 500 --json 2>/dev/null
done
$S -s 127.0.0.1:7481 bench queue-expiry --rounds 100 --lock-ms 200 --json 2>/dev/null
kill $PID; wait $PID; rm -rf $D
