#!/usr/bin/env bash
# The test command from the README: every unit, model, crash and corruption test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test "$@"
