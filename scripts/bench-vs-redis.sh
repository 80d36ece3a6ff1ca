#!/usr/bin/env bash
# Side-by-side throughput: redis-server and strata with the same settings,
# the same redis-benchmark runs against each in one go, and strata/Redis
# ratios. Installs redis-server and redis-tools from Debian if missing.
#
#   scripts/bench-vs-redis.sh [requests] [tests]
#
# requests defaults to 300000; tests is redis-benchmark's -t list (default
# set,get,incr,hset) and may include xadd, run as `XADD s * f v`, and
# evalsha, run as `EVALSHA <sha> 1 key:__rand_int__` of a script doing
# `return redis.call('incr', KEYS[1])` (loaded with SCRIPT LOAD first), and
# multi, transactions of five commands (MULTI INCR SET GET HSET HGET EXEC,
# as `strata bench --workload multi-exec` sends them; redis-benchmark can't),
# reported in transactions per second. The data
# types line of the README comes from
#   scripts/bench-vs-redis.sh 200000 lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,lrange_600,xadd
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-300000}"
TESTS="${2:-set,get,incr,hset}"
XADD=0
EVALSHA=0
MULTI=0
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

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "installing redis-server and redis-tools..." >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release -q
STRATA="$CARGO_TARGET_DIR/release/strata"

. scripts/lib.sh
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

printf '%-16s %14s %14s %8s\n' "test" "redis rps" "strata rps" "ratio"
for mode in "" "-P 16"; do
  # shellcheck disable=SC2086
  R=$(run "$RP" $mode); S=$(run "$SP" $mode)
  while read -r t rr; do
    sr=$(echo "$S" | awk -v t="$t" '$1==t {print $2}')
    label="$t${mode:+ $mode}"
    awk -v l="$label" -v r="$rr" -v s="$sr" 'BEGIN { printf "%-16s %14.0f %14.0f %8.2f\n", l, r, s, s/r }'
  done <<< "$R"
done
