#!/usr/bin/env bash
# The long form of the load test (tests/load.rs): CLIENTS concurrent clients against
# `strom serve` on loopback for SECS seconds, half idempotent producers (each with its
# own connection and producer id, half of them waiting for fsync), half long-polling
# consumers. Fails on any error, on an unbounded server heap or on leaked descriptors,
# and prints the figures BENCHMARKS.md quotes. CI runs the same test for 8 seconds.
#
# Usage: scripts/load.sh [CLIENTS] [SECS]      (defaults: 500, 180)
set -euo pipefail
cd "$(dirname "$0")/.."
STROM_LOAD_CLIENTS="${1:-500}" STROM_LOAD_SECS="${2:-180}" \
  cargo test --release --test load -- --nocapture
