#!/usr/bin/env bash
# Peak memory of a fresh release server under hostile and heavy produce requests, sent
# as raw protobuf from Python grpcio (installed into target/pyenv as scripts/test.sh
# does). One JSON line per case. Figures go into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! target/pyenv/bin/python -c "import grpc" 2>/dev/null; then
  python3 -m venv target/pyenv
  target/pyenv/bin/pip install --quiet --disable-pip-version-check "grpcio>=1.60" "grpcio-tools>=1.60"
fi
cargo build --release --quiet
target/pyenv/bin/python scripts/hostile.py
