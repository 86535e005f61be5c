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

# strom_serve_with_metrics STROM NAME: starts STROM serve on a fresh directory under a
# new temporary one ($W, removed on exit with the server stopped), gRPC on a free port
# and metrics on another, and waits for it: sets W, PID, ADDR (gRPC) and MPORT.
strom_serve_with_metrics() {
  local bin=$1 name=$2
  W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-$name.XXXXXX")
  PID=
  trap 'if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; rm -rf "$W"' EXIT
  # A free port for the metrics: bound and released by Python, then given to the server.
  MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" serve --listen 127.0.0.1:0 --metrics-listen "127.0.0.1:$MPORT" --data-dir "$W/d" \
    --log-level warn,strom=info >"$W/log" 2>&1 &
  PID=$!
  ADDR=$(strom_address "$W/log")
}
