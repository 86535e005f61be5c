#!/usr/bin/env bash
# The long form of the whole-server crash test (tests/crash_server.rs): idempotent
# producers and a group committer against `strom serve`, which is killed with SIGKILL
# and restarted CYCLES times, with fsync and with page-cache durability; then every
# acknowledged record must be stored exactly once, in order per partition and producer,
# and no committed group offset past the data; and a share group worked through the
# kills (tests/queue_crash.rs). CI runs the same tests with 30 and 15 kills.
#
# Usage: scripts/crash.sh [CYCLES] [SEED]      (defaults: 300, a random seed)
# A failure prints the seed; run it again with that seed to replay the kill timing.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-300}"
seed="${2:-$RANDOM$RANDOM}"
echo "crash test: $cycles kills per durability, seed $seed" >&2
STROM_CRASH_CYCLES="$cycles" STROM_CRASH_SEED="$seed" \
  cargo test --release --test crash_server --test queue_crash -- --nocapture --test-threads 1 \
  || { echo "FAILED with seed $seed: scripts/crash.sh $cycles $seed" >&2; exit 1; }
