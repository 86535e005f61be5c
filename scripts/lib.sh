# Shell functions the scripts share: `. "$(dirname "$0")/lib.sh"` near the top.

# strom_address LOG: waits up to 10 s for the ready line of the `strom serve` that
# writes LOG, and prints the address it serves on. Without one it prints LOG to stderr
# and fails: the reason the server did not start is in its log, not in the bench's
# "cannot connect to : invalid URI".
# The second pattern reads the ready line of builds older than the current one, which
# scripts/ab.sh may time.
strom_address() {
  local log=$1 addr
  for _ in $(seq 100); do
    addr=$(sed -n -e 's/.*serving gRPC on \([0-9.:]*\).*/\1/p' \
      -e 's/.*strom is ready listen=\([0-9.:]*\).*/\1/p' "$log" 2>/dev/null | head -1)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    sleep 0.1
  done
  echo "strom serve did not start within 10 s; its log ($log):" >&2
  cat "$log" >&2
  return 1
}
