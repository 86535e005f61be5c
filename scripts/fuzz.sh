#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every decoder of untrusted bytes:
# record batches, the recovery checkpoint, whole partition directories (crash and clean
# opens), sealed segments read through the read-only path, topic.json, produce requests
# and a consumer group's and a share group's snapshot and journal. Not run by
# CI: fuzzing takes minutes per target and finds new inputs, not regressions; the
# inputs it has crashed on are replayed by `cargo test --test fuzz_regressions`.
#
# Usage: scripts/fuzz.sh [TARGET...]      (default: every target below, one at a time)
#   FUZZ_SECONDS      seconds per target (default 300)
#   CARGO_TARGET_DIR  where to build (default fuzz/target)
#
# The targets are listed in one place, TARGETS below, as `name:max_len` (the largest
# input worth trying for that format): adding a target to this script is one line
# there. The target itself is a [[bin]] in fuzz/Cargo.toml and a file in
# fuzz/fuzz_targets/; put its harness code in tests/fuzz_harness/ and name it in
# TARGETS and `run` of tests/fuzz_regressions.rs, so its seeds and crash cases are
# replayed on stable.
#
# Seeds are in fuzz/corpus/<target>/ (generated: see tests/fuzz_regressions.rs); what a
# run discovers goes to fuzz/work/<target>/corpus/ (not checked in) and is reused by the
# next run. A crash, hang or out-of-memory input is saved in fuzz/artifacts/<target>/;
# the script prints its path and exits 1 once every target has run. To keep it fixed:
#   cargo +nightly fuzz tmin -s none <target> <artifact>
# copy the minimized input to tests/fuzz_cases/<target>/ and add a test for it to
# tests/fuzz_regressions.rs. (tmin shrinks the file-based targets' inputs poorly, as
# they hold length-prefixed files: a case written by hand with the few bytes that
# matter makes a clearer test; keep the fuzzer's input beside it. Set
# STROM_FUZZ_SCRATCH=/dev/shm for tmin too, or every run waits on real fsyncs.)
set -euo pipefail

TARGETS=(
  records:4096
  checkpoint:128
  recovery:8192
  sealed_segment:8192
  topic_json:2048
  produce:8192
  group_files:8192
  share_files:8192
)

cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-300}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# Runs share one scratch directory for the partition directories they write, in memory
# when /dev/shm is there, removed at exit.
scratch_parent=/dev/shm
[[ -d $scratch_parent && -w $scratch_parent ]] || scratch_parent=${TMPDIR:-/tmp}
STROM_FUZZ_SCRATCH=$(mktemp -d "$scratch_parent/strom-fuzz.XXXXXX")
export STROM_FUZZ_SCRATCH
trap 'rm -rf "$STROM_FUZZ_SCRATCH"' EXIT

wanted=("$@")
failed=()
for entry in "${TARGETS[@]}"; do
  target=${entry%%:*}
  max_len=${entry##*:}
  if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $target "* ]]; then
    continue
  fi
  work=$root/fuzz/work/$target
  artifacts=$root/fuzz/artifacts/$target
  mkdir -p "$work/corpus" "$artifacts"
  before=$(ls "$artifacts")
  echo "== $target: ${seconds}s, inputs up to $max_len bytes (log: $work/fuzz-0.log)"
  # Without a sanitizer: the code is safe Rust (its one unsafe call is the mmap), so
  # AddressSanitizer would find little that a panic does not, and slows every run.
  # Debug assertions and overflow checks stay on (cargo-fuzz's default). A run takes
  # milliseconds, so one that takes 10 s is a hang. One job, one worker: the machine is
  # shared. libFuzzer writes the job's output to fuzz-0.log in the current directory,
  # hence the cd.
  status=0
  (cd "$work" && cargo +nightly fuzz run --fuzz-dir "$root/fuzz" -s none "$target" \
    "$work/corpus" "$root/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
    -jobs=1 -workers=1 -print_final_stats=1) || status=$?
  # libFuzzer prints its final stats twice; show them once.
  grep -E '^(stat::|Done|#[0-9]+[[:space:]]+DONE)' "$work/fuzz-0.log" | awk '!seen[$0]++' || true
  new=$(comm -13 <(echo "$before") <(ls "$artifacts"))
  if ((status != 0)) || [[ -n $new ]]; then
    echo "!! $target failed (exit status $status); see $work/fuzz-0.log"
    for file in $new; do
      echo "!! input: $artifacts/$file"
    done
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "fuzzing found problems in: ${failed[*]}"
  exit 1
fi
echo "no crashes"
