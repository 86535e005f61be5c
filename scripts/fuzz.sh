#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every decoder of untrusted bytes:
# record batches, the recovery checkpoint, whole partition directories (crash and clean
# opens), sealed segments read through the read-only path, and topic.json. Not run by
# CI: fuzzing takes minutes per target and finds new inputs, not regressions; the
# inputs it has crashed on are replayed by `cargo test --test fuzz_regressions`.
#
# Usage: scripts/fuzz.sh [TARGET...]      (default: every target below, one at a time)
#   FUZZ_SECONDS      seconds per target (default 300)
#   CARGO_TARGET_DIR  where to build (default fuzz/target)
#
# The targets are listed in one place, TARGETS below, as `name:max_len` (the largest
# input worth trying for that format). Adding a target is one line there, plus its
# [[bin]] in fuzz/Cargo.toml and its file in fuzz/fuzz_targets/ (harness code goes in
# tests/fuzz_harness/, so the regression tests can run it too).
#
# Seeds are in fuzz/corpus/<target>/ (generated: see tests/fuzz_regressions.rs); what a
# run discovers goes to fuzz/work/<target>/corpus/ (not checked in) and is reused by the
# next run. A crash, hang or out-of-memory input is saved in fuzz/artifacts/<target>/;
# the script prints its path and exits 1 once every target has run. To keep it fixed:
#   cargo +nightly fuzz tmin -s none <target> <artifact>
# copy the minimized input to tests/fuzz_cases/<target>/ and add a test for it to
# tests/fuzz_regressions.rs.
set -euo pipefail

TARGETS=(
  records:4096
  checkpoint:128
  recovery:8192
  sealed_segment:8192
  topic_json:2048
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
  # AddressSanitizer would find nothing that a panic does not, at a third of the speed.
  # Debug assertions and overflow checks stay on (cargo-fuzz's default). One job, one
  # worker: the machine is shared. libFuzzer writes the job's output to fuzz-0.log in
  # the current directory, hence the cd.
  status=0
  (cd "$work" && cargo +nightly fuzz run --fuzz-dir "$root/fuzz" -s none "$target" \
    "$work/corpus" "$root/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
    -jobs=1 -workers=1 -print_final_stats=1) || status=$?
  grep -E '^(stat::|Done|#[0-9]+[[:space:]]+DONE)' "$work/fuzz-0.log" || true
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
