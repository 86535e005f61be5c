#!/usr/bin/env bash
# A topic of many small segments (default 100,000) read from its start through the real
# server, with the default limits: prints the time to write and read it and the peak of
# maps and descriptors the server held on the data. Figures go into BENCHMARKS.md.
# Usage: scripts/segments.sh [SEGMENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
STROM_SEGMENTS="${1:-100000}" cargo test --release --test many_segments -- --nocapture 2>&1 |
  grep -E "segments:|test result"
