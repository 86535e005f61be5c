#!/usr/bin/env bash
# The test command from the README: every unit, model, crash, server and Python test.
# Installs the Python clients the cross-language tests need (grpcio, and the Kafka
# clients kafka-python and confluent-kafka, from PyPI) into target/pyenv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! target/pyenv/bin/python -c "import grpc, grpc_tools, prometheus_client, kafka, confluent_kafka" 2>/dev/null; then
  mkdir -p target
  python3 -m venv target/pyenv
  target/pyenv/bin/pip install --quiet --disable-pip-version-check "grpcio>=1.60" "grpcio-tools>=1.60" "prometheus-client>=0.20" "kafka-python>=2.2" "confluent-kafka>=2.6"
fi
export STROM_PYTHON="$PWD/target/pyenv/bin/python"
# Build first, then look at the disk: the tests' servers keep the default 1 GiB
# `min_free_disk` floor, so on a nearly full disk every test that produces is refused.
cargo test --no-run "$@"
free_kib=$(df -Pk target | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt $((2 * 1024 * 1024)) ]; then
  echo "warning: $((free_kib / 1024)) MiB free on the disk of target/: tests that produce fail below the servers' 1 GiB min_free_disk floor" >&2
fi
cargo test "$@"
