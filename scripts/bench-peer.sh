#!/usr/bin/env bash
# strom against Apache Iggy (../shared/peers/iggy), alternately: blocks of strom, Iggy,
# Iggy, strom (BLOCKS of them, default 2), every shape on a fresh server and an empty
# data directory, a 2 GB dd into a fresh file (deleted after) before each run. Shapes,
# 1000-byte messages, 2,000,000 of them unless said:
#   pc8     produce to the page cache, 1000 a request, 8 in flight (Iggy: 1, its only way)
#   pc1     the same, 1 in flight (strom only; compared with Iggy's pc8 and pcw runs)
#   fsync8  produce acknowledged once on disk, 8 in flight (Iggy: --enforce-fsync, which
#           acknowledges every other batch before it is on disk)
#   fsync1  the same, 1 in flight (strom only; compared with Iggy's fsync8 and fsyncw runs)
#   consume read back what pc8 wrote (same server)
#   single  1 message a request, 1 in flight, 20,000 requests: latency
#   p16     16 partitions, 4 producers
#   pcw     Iggy only: pc8's run on a topic that writes every batch before acknowledging it
#           (messages_required_to_save = 1; by default Iggy writes every 1,024 messages or
#           1 MiB, so half its 1000-message batches are acknowledged from memory): the
#           acknowledgement strom's page_cache gives. Compared with strom's pc1 and pc8.
#   fsyncw  Iggy only: fsync8's run on a topic that also syncs every batch before
#           acknowledging it: strom's fsync. Compared with strom's fsync1 and fsync8.
#           (Their rows need those strom shapes in ONLY too.) Each skipped, with a
#           warning, if Iggy's HTTP API (127.0.0.1:3000) cannot make the topic.
# Prints each run, then medians, strom/Iggy ratios, and CPU seconds per GB of payload of
# each server and each bench client (from /proc/<pid>/stat and /usr/bin/time), and the
# share of the machine's CPU time the hypervisor stole during each server's runs
# (counted in clock ticks: a run of S seconds on N vCPUs moves in steps of 1/(S*N) %).
#   scripts/bench-peer.sh            # about 15-20 minutes
#   BLOCKS=1 scripts/bench-peer.sh   # a quick look
#   ONLY="pc8 consume" scripts/bench-peer.sh   # some shapes (pc8 and consume go together)
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
BLOCKS=${BLOCKS:-2}
ONLY=${ONLY:-pc8 consume pc1 fsync8 fsync1 single p16 pcw fsyncw}
want() { [[ " $ONLY " == *" $1 "* ]]; }
STROM=${STROM:-$PWD/target/release/strom}
IGGY_DIR=${IGGY_DIR:-$PWD/../shared/peers/iggy}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/strom-peer.XXXXXX")
RESULTS=$W/results.jsonl
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
[ -x "$STROM" ] || cargo build --release --quiet

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The machine's stolen and total CPU ticks (/proc/stat): steal is time the hypervisor ran
# another guest on a vCPU that was ready, and it stalls both servers alike (see
# src/cli/bench/steal.rs), so each run records its share.
# printf, not print: awk writes numbers from 2^31 up in short form (3e+09), and the total
# passes that after months of uptime on 2 vCPUs (days on 64). No figure (empty, saved as
# null) where /proc/stat has no steal column or no time passed, as in steal.rs.
cpu_ticks() { awk '/^cpu / && NF >= 9 {t = 0; for (i = 2; i <= 9; i++) t += $i; printf "%.0f %.0f\n", $9, t}' /proc/stat 2>/dev/null; }
steal_pct() { echo "$1 $2" | awk 'NF == 4 && $4 > $2 {print 100 * ($3 - $1) / ($4 - $2)}'; }
dd_rate() {
  local r
  r=$(dd if=/dev/zero of="$W/dd" bs=1M count=2000 2>&1 | sed -n 's/.* \([0-9.]* [GM]B\/s\).*/\1/p')
  rm -f "$W/dd"
  echo "$r"
}

start_strom() {
  rm -rf "$W/data"
  "$STROM" serve --listen 127.0.0.1:0 --data-dir "$W/data" --log-level warn,strom=info >"$W/server.log" 2>&1 &
  PID=$!
  ADDR=$(strom_address "$W/server.log") || exit 1
}

start_iggy() {
  rm -rf "$W/data"
  "$IGGY_DIR/run-server.sh" "$W/data" >"$W/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/8090) 2>/dev/null && return
    sleep 0.1
  done
  echo "iggy did not start" >&2
  exit 1
}

# iggy_topic OPTIONS_JSON: the stream and topic iggy-bench would create (it is then run
# with --reuse-streams), made over Iggy's HTTP API with these topic options, which the
# bench has no flags for. Iggy opens its HTTP port after its TCP one and may answer 503
# while it starts, so each call is retried for a while. Fails (with a warning) if the
# topic could not be made: the caller then skips the run, which would otherwise make
# its own topic with the defaults and measure the wrong thing.
iggy_topic() {
  local c=(curl -sf --retry 30 --retry-connrefused --retry-delay 1 --retry-max-time 30 --max-time 10
    -H 'content-type: application/json')
  local token
  token=$("${c[@]}" -X POST 127.0.0.1:3000/users/login -d '{"username": "iggy", "password": "iggy"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"]["token"])') &&
    c+=(-o /dev/null -H "authorization: Bearer $token") &&
    "${c[@]}" -X POST 127.0.0.1:3000/streams -d '{"name": "bench-stream-1"}' &&
    "${c[@]}" -X POST 127.0.0.1:3000/streams/bench-stream-1/topics -d '{"name": "topic-1",
      "partitions_count": 1, "compression_algorithm": "none", "message_expiry": 0,
      "max_topic_size": 0, "options": '"$1"'}' && return 0
  echo "could not make iggy's topic over its HTTP API (127.0.0.1:3000): run skipped" >&2
  return 1
}

# iggy_on_topic SHAPE OPTIONS_JSON TRANSPORT...: pc8's run on a fresh server whose topic
# has these options (skipped if it cannot be made).
iggy_on_topic() {
  local dd
  dd=$(dd_rate); start_iggy
  iggy_topic "$2" &&
    iggy_run "$1" "$dd" -m 1000 -P 1000 -b 2000 --reuse-streams pinned-producer -s 1 -p 1 "${@:3}"
  stop
}

stop() {
  kill "$PID" 2>/dev/null
  wait "$PID" 2>/dev/null
  PID=
}

# record SERVER SHAPE MB_S P50 P99 BYTES SERVER_TICKS CLIENT_CPU_S DD STEAL_PCT
record() {
  python3 - "$@" >>"$RESULTS" <<'EOF'
import json, sys
s, shape, mb, p50, p99, nbytes, ticks, client, dd, steal = sys.argv[1:11]
print(json.dumps({"server": s, "shape": shape, "mb_s": float(mb), "p50": float(p50),
                  "p99": float(p99), "bytes": int(nbytes), "server_cpu_s": int(ticks) / 100,
                  "client_cpu_s": float(client), "dd": dd, "steal": float(steal) if steal else None}))
EOF
  tail -1 "$RESULTS"
}

# strom_run SHAPE DD ARGS...: one `strom bench` run against the running server.
strom_run() {
  local shape=$1 dd=$2
  shift 2
  local t0 c0
  t0=$(ticks "$PID")
  c0=$(cpu_ticks)
  /usr/bin/time -f '%U %S' -o "$W/time" "$STROM" bench -s "$ADDR" "$@" --json >"$W/out.json"
  local t1 client steal
  t1=$(ticks "$PID")
  steal=$(steal_pct "$c0" "$(cpu_ticks)")
  client=$(awk '{print $1 + $2}' "$W/time")
  read -r mb p50 p99 nbytes < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
lat = d.get("ack_latency_ms") or d.get("fetch_latency_ms") or {"p50": 0, "p99": 0}
print(d["mb_per_sec"], lat.get("p50", 0), lat.get("p99", 0), d["bytes"])' "$W/out.json")
  record strom "$shape" "$mb" "$p50" "$p99" "$nbytes" $((t1 - t0)) "$client" "$dd" "$steal"
}

# iggy_run SHAPE DD ARGS...: one iggy-bench run against the running server.
iggy_run() {
  local shape=$1 dd=$2
  shift 2
  rm -rf "$W/iggy-out"
  local t0 c0
  t0=$(ticks "$PID")
  c0=$(cpu_ticks)
  /usr/bin/time -f '%U %S' -o "$W/time" "$IGGY_DIR/iggy-bench" "$@" output -o "$W/iggy-out" >"$W/iggy.log" 2>&1
  local t1 client steal
  t1=$(ticks "$PID")
  steal=$(steal_pct "$c0" "$(cpu_ticks)")
  client=$(awk '{print $1 + $2}' "$W/time")
  local report
  report=$(find "$W/iggy-out" -name report.json | head -1)
  read -r mb p50 p99 nbytes < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
s = d["group_metrics"][0]["summary"]
# Messages the server holds after the run (each server is fresh), in payload bytes.
n = d["server_stats"]["messages_count"] * d["params"]["message_size"]
print(s["total_throughput_megabytes_per_second"], s["average_p50_latency_ms"], s["average_p99_latency_ms"], n)' "$report")
  record iggy "$shape" "$mb" "$p50" "$p99" "$nbytes" $((t1 - t0)) "$client" "$dd" "$steal"
}

# strom_alone SHAPE ARGS...: if SHAPE is wanted, one `strom bench ARGS` run on a fresh
# server after a dd.
strom_alone() {
  local shape=$1 dd
  shift
  want "$shape" || return 0
  dd=$(dd_rate); start_strom
  strom_run "$shape" "$dd" "$@"
  stop
}

strom_block() {
  local dd
  if want pc8; then
    dd=$(dd_rate); start_strom
    strom_run pc8 "$dd" produce -t t --records 2000000 --record-size 1000 --batch 1000 --in-flight 8 --durability page_cache
    if want consume; then
      dd=$(dd_rate)
      strom_run consume "$dd" consume -t t
    fi
    stop
  fi
  strom_alone pc1 produce -t t --records 2000000 --record-size 1000 --batch 1000 --in-flight 1 --durability page_cache
  strom_alone fsync8 produce -t t --records 2000000 --record-size 1000 --batch 1000 --in-flight 8 --durability fsync
  strom_alone fsync1 produce -t t --records 2000000 --record-size 1000 --batch 1000 --in-flight 1 --durability fsync
  strom_alone single produce -t t --records 20000 --record-size 1000 --batch 1 --in-flight 1 --durability page_cache
  strom_alone p16 produce -t t --partitions 16 --producers 4 --records 2000000 --record-size 1000 --batch 1000 --durability page_cache
}

iggy_block() {
  local dd T=(tcp --server-address 127.0.0.1:8090)
  if want pc8 || want pc1; then
    dd=$(dd_rate); start_iggy
    iggy_run pc8 "$dd" -m 1000 -P 1000 -b 2000 pinned-producer -s 1 -p 1 "${T[@]}"
    if want consume; then
      dd=$(dd_rate)
      iggy_run consume "$dd" -m 1000 -P 1000 -b 2000 pinned-consumer -s 1 -c 1 "${T[@]}"
    fi
    stop
  fi
  if want fsync8 || want fsync1; then
    dd=$(dd_rate); start_iggy
    iggy_run fsync8 "$dd" -m 1000 -P 1000 -b 2000 --enforce-fsync pinned-producer -s 1 -p 1 "${T[@]}"
    stop
  fi
  want pcw && iggy_on_topic pcw '{"messages_required_to_save": "1"}' "${T[@]}"
  want fsyncw && iggy_on_topic fsyncw '{"messages_required_to_save": "1", "enforce_fsync": "true"}' "${T[@]}"
  if want single; then
    dd=$(dd_rate); start_iggy
    iggy_run single "$dd" -m 1000 -P 1 -b 20000 pinned-producer -s 1 -p 1 "${T[@]}"
    stop
  fi
  if want p16; then
    # -b counts batches per producer: 4 x 500 x 1000 = 2,000,000 messages.
    dd=$(dd_rate); start_iggy
    iggy_run p16 "$dd" -m 1000 -P 1000 -b 500 balanced-producer -s 1 -a 16 -p 4 "${T[@]}"
    stop
  fi
}

for _ in $(seq "$BLOCKS"); do
  strom_block
  iggy_block
  iggy_block
  strom_block
done

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(server, shape, key):
    xs = [r[key] for r in runs if r["server"] == server and r["shape"] == shape]
    return statistics.median(xs) if xs else None
def spread(server, shape, key):
    xs = [r[key] for r in runs if r["server"] == server and r["shape"] == shape]
    return "[%s]" % ", ".join("%.4g" % x for x in xs)
# (row, strom shape, the Iggy run it is compared with)
peer = [("pc8", "pc8", "pc8"), ("pc1", "pc1", "pc8"), ("fsync8", "fsync8", "fsync8"),
        ("fsync1", "fsync1", "fsync8"), ("consume", "consume", "consume"),
        ("single", "single", "single"), ("p16", "p16", "p16"),
        ("pc8 / Iggy writing every batch", "pc8", "pcw"),
        ("pc1 / Iggy writing every batch", "pc1", "pcw"),
        ("fsync8 / Iggy syncing every batch", "fsync8", "fsyncw"),
        ("fsync1 / Iggy syncing every batch", "fsync1", "fsyncw")]
print("\n| shape | strom MB/s | Iggy MB/s | strom/Iggy | strom p50/p99 ms | Iggy p50/p99 ms | server CPU s/GB strom / Iggy | client CPU s/GB strom / Iggy |")
print("|---|---|---|---|---|---|---|---|")
for row, shape, ishape in peer:
    sm, im = med("strom", shape, "mb_s"), med("iggy", ishape, "mb_s")
    if sm is None or im is None:
        continue
    def per_gb(server, sh, key):
        xs = [r[key] / (r["bytes"] / 1e9) for r in runs if r["server"] == server and r["shape"] == sh and r["bytes"]]
        return statistics.median(xs) if xs else float("nan")
    print("| %s | %.0f %s | %.0f %s | %.2f | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f |" % (
        row, sm, spread("strom", shape, "mb_s"), im, spread("iggy", ishape, "mb_s"), sm / im,
        med("strom", shape, "p50"), med("strom", shape, "p99"),
        med("iggy", ishape, "p50"), med("iggy", ishape, "p99"),
        per_gb("strom", shape, "server_cpu_s"), per_gb("iggy", ishape, "server_cpu_s"),
        per_gb("strom", shape, "client_cpu_s"), per_gb("iggy", ishape, "client_cpu_s")))
print("\ndd before the runs: " + ", ".join(sorted({r["dd"] for r in runs})))
for server in ("strom", "iggy"):
    xs = sorted(r["steal"] for r in runs if r["server"] == server and r.get("steal") is not None)
    if xs:
        print("steal during %s's runs (%% of CPU time): median %.2f, max %.2f, %d of %d runs over 0.15%%"
              % (server, statistics.median(xs), xs[-1], sum(x > 0.15 for x in xs), len(xs)))
EOF
