#!/usr/bin/env bash
# Side-by-side throughput: redis-server and strata with the same settings,
# the same redis-benchmark runs against each in one go, and strata/Redis
# ratios. Installs redis-server and redis-tools from Debian if missing.
#
#   scripts/bench-vs-redis.sh [requests] [tests]
#
# Every line runs against Redis and strata alternately, ROUNDS times
# (default 3), plain and with -P 16 and -P 64, and prints the median ratio
# with each round's. SET and GET also run with 1 KiB and 16 KiB values.
# `memory` in tests (in the default list) then runs scripts/bench-memory.sh:
# bytes per key for both servers and strata's peak RSS under a 64 MiB cap.
#
# requests defaults to 300000; tests is redis-benchmark's -t list (default
# set,get,incr,hset,memory) and may include xadd, run as `XADD s * f v`, and
# evalsha, run as `EVALSHA <sha> 1 key:__rand_int__` of a script doing
# `return redis.call('incr', KEYS[1])` (loaded with SCRIPT LOAD first), and
# multi, transactions of five commands (MULTI INCR SET GET HSET HGET EXEC,
# as `strata bench --workload multi-exec` sends them; redis-benchmark can't),
# reported in transactions per second. The data
# types line of the README comes from
#   scripts/bench-vs-redis.sh 200000 lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,lrange_600,xadd
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis
N="${1:-300000}"
TESTS="${2:-set,get,incr,hset,memory}"
ROUNDS="${ROUNDS:-3}"
XADD=0
EVALSHA=0
MULTI=0
MEMORY=0
if [[ ",$TESTS," == *,memory,* ]]; then
  MEMORY=1
  TESTS=$(echo ",$TESTS," | sed 's/,memory,/,/; s/^,//; s/,$//')
fi
if [[ ",$TESTS," == *,multi,* ]]; then
  MULTI=1
  TESTS=$(echo ",$TESTS," | sed 's/,multi,/,/; s/^,//; s/,$//')
fi
if [[ ",$TESTS," == *,xadd,* ]]; then
  XADD=1
  TESTS=$(echo ",$TESTS," | sed 's/,xadd,/,/; s/^,//; s/,$//')
fi
if [[ ",$TESTS," == *,evalsha,* ]]; then
  EVALSHA=1
  TESTS=$(echo ",$TESTS," | sed 's/,evalsha,/,/; s/^,//; s/,$//')
fi
SCRIPT="return redis.call('incr', KEYS[1])"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"

# STRATA_BIN compares another build (e.g. the one before a change) as is.
[ -n "${STRATA_BIN:-}" ] || cargo build --release -q
STRATA="${STRATA_BIN:-$CARGO_TARGET_DIR/release/strata}"

WORK=$(mktemp -d)
RP=$(free_port); SP=$(free_port); SH=$(free_port)
cleanup() { kill "$RPID" "$SPID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# Same durability and memory settings on both: AOF/WAL with fsync every second, 1 GiB cap.
redis-server --port "$RP" --dir "$WORK" --save '' --appendonly yes --appendfsync everysec \
  --maxmemory 1gb --maxmemory-policy noeviction --daemonize no >/dev/null &
RPID=$!
"$STRATA" server --port "$SP" --http-port "$SH" --data-dir "$WORK/strata" --maxmemory 1gb --appendfsync everysec 2>/dev/null >/dev/null &
SPID=$!
for p in "$RP" "$SP"; do
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done

run() { # port, extra args -> "TEST rps" lines
  if [ -n "$TESTS" ]; then
    redis-benchmark -p "$1" -t "$TESTS" -c 50 -n "$N" -r 100000 --csv "${@:2}" 2>/dev/null \
      | awk -F'","' 'NR>1 {gsub(/"/,""); split($0,a,","); if (a[1] ~ /needed/) next; split(a[1],n," "); print n[1], a[2]}'
  fi
  if [ "$XADD" = 1 ]; then
    redis-benchmark -p "$1" -c 50 -n "$N" --csv "${@:2}" XADD s '*' f v 2>/dev/null \
      | awk -F'","' 'NR>1 {gsub(/"/,""); split($0,a,","); print "XADD", a[2]}'
  fi
  if [ "$EVALSHA" = 1 ]; then
    sha=$(redis-cli -p "$1" SCRIPT LOAD "$SCRIPT")
    redis-benchmark -p "$1" -c 50 -n "$N" -r 100000 --csv "${@:2}" EVALSHA "$sha" 1 key:__rand_int__ 2>/dev/null \
      | awk -F'","' 'NR>1 {gsub(/"/,""); split($0,a,","); print "EVALSHA", a[2]}'
  fi
  if [ "$MULTI" = 1 ]; then
    # $2 is "-P" when pipelining: transactions in flight per connection.
    "$STRATA" bench --port "$1" --workload multi-exec -c 50 -n $((N / 5)) -P "${3:-1}" \
      --quiet --json 2>/dev/null | tail -1 \
      | python3 -c 'import json,sys; print("MULTI/EXEC", json.load(sys.stdin)["throughput"])'
  fi
}

large() { # port, value size -> "TEST -d SIZE rps" lines for SET and GET
  redis-benchmark -p "$1" -t set,get -c 50 -n "$((N / 3))" -r 100000 -d "$2" --csv 2>/dev/null \
    | awk -F'","' -v d="$2" 'NR>1 {gsub(/"/,""); split($0,a,","); split(a[1],n," "); print n[1] " -d " d, a[2]}'
}

# One round: every line against Redis, then against strata, as
# "server<TAB>label<TAB>rps" lines.
round() {
  for mode in "" "-P 16" "-P 64"; do
    for server in redis strata; do
      port=$RP; [ "$server" = strata ] && port=$SP
      # shellcheck disable=SC2086
      run "$port" $mode | awk -v s="$server" -v m="$mode" '{ rps = $NF; $NF = ""; sub(/ $/, ""); print s "\t" $0 (m == "" ? "" : " " m) "\t" rps }'
    done
  done
  if [[ ",$TESTS," == *,set,* || ",$TESTS," == *,get,* ]]; then
    for d in 1024 16384; do
      for server in redis strata; do
        port=$RP; [ "$server" = strata ] && port=$SP
        large "$port" "$d" | awk -v s="$server" '{ rps = $NF; $NF = ""; sub(/ $/, ""); print s "\t" $0 "\t" rps }'
      done
    done
  fi
}

for r in $(seq "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  round >> "$WORK/results.tsv"
done
python3 - "$WORK/results.tsv" <<'PY'
import sys, statistics
rps = {}
order = []
for line in open(sys.argv[1]):
    server, label, value = line.rstrip("\n").split("\t")
    if label not in order:
        order.append(label)
    rps.setdefault((server, label), []).append(float(value))
print(f"{'test':<18} {'redis rps':>12} {'strata rps':>12} {'ratio':>7}  rounds")
for label in order:
    r, s = rps.get(("redis", label), []), rps.get(("strata", label), [])
    if not r or not s:
        continue
    ratios = [b / a for a, b in zip(r, s)]
    each = ", ".join(f"{x:.2f}" for x in ratios)
    print(f"{label:<18} {statistics.median(r):>12.0f} {statistics.median(s):>12.0f} {statistics.median(ratios):>7.2f}  ({each})")
PY
if [ "$MEMORY" = 1 ]; then
  kill "$RPID" "$SPID" 2>/dev/null || true
  wait 2>/dev/null || true
  echo
  STRATA_BIN="$STRATA" bash scripts/bench-memory.sh
fi
