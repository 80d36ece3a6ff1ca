#!/usr/bin/env bash
# Growing a loaded cluster by one node, side by side in one run:
#   - Redis Cluster, 3 primaries + 3 replicas: `redis-cli --cluster
#     add-node` of an empty 4th primary, then `--cluster rebalance
#     --cluster-use-empty-masters`;
#   - a strata cluster of 3 nodes, replicas 3 (created with --shards 12 so
#     whole shards can spread over 4 nodes): `strata cluster add-node`.
# Both are loaded with the same data first (SET of KEYS random keys out of
# KEYS, 100-byte values). While each grows, back-to-back short
# `redis-benchmark --cluster -t set,get` runs measure the throughput
# clients see, as a ratio of the same runs before the move, and count the
# requests that failed.
# Installs redis-server and redis-tools from Debian if missing.
#
#   scripts/bench-elastic.sh [keys]     (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis
KEYS="${1:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"

cargo build --release -q
STRATA="$CARGO_TARGET_DIR/release/strata"
WORK=$(mktemp -d)
RBASE=${RBASE:-7501}
SBASE=${SBASE:-7601}

cleanup() {
  for i in 0 1 2 3 4 5 6; do redis-cli -p $((RBASE + i)) shutdown nosave >/dev/null 2>&1 || true; done
  for f in "$WORK"/strata/node-*/pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for f in "$WORK"/strata/node-*/pid; do
    for _ in $(seq 100); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

redis_node() { # index
  local p=$((RBASE + $1))
  local d="$WORK/redis-$1"
  mkdir -p "$d"
  redis-server --port "$p" --dir "$d" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 2000 --appendonly yes --appendfsync everysec --save '' \
    --daemonize yes --logfile "$d/log" >/dev/null
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# One short client run: "set_rps get_rps errors".
probe() { # port
  local out
  out=$(redis-benchmark -p "$1" --cluster -t set,get -c 50 -n 50000 -r "$KEYS" -d 100 --csv 2>&1 || true)
  local set get errs
  set=$(echo "$out" | awk -F'","' '/^"SET"/ {gsub(/"/,""); split($0,a,","); print a[2]}')
  get=$(echo "$out" | awk -F'","' '/^"GET"/ {gsub(/"/,""); split($0,a,","); print a[2]}')
  errs=$(echo "$out" | grep -ci "error" || true)
  echo "${set:-0} ${get:-0} ${errs:-0}"
}

# Probes back to back while "$@" runs; prints the move's seconds, then
# the mean SET and GET rate of the probes and the failed requests seen.
during() { # port, command...
  local port=$1; shift
  local t0 t1 pid
  t0=$(date +%s.%N)
  "$@" > "$WORK/move.log" 2>&1 &
  pid=$!
  : > "$WORK/probes"
  while kill -0 "$pid" 2>/dev/null; do probe "$port" >> "$WORK/probes"; done
  wait "$pid" || { cat "$WORK/move.log" >&2; return 1; }
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc) $(awk '{s+=$1; g+=$2; e+=$3; n++} END {if (n==0) n=1; printf "%.0f %.0f %d %d", s/n, g/n, e, n}' "$WORK/probes")"
}

before() { # port -> "set get"
  local a b
  a=$(probe "$1"); b=$(probe "$1")
  echo "$a $b" | awk '{printf "%.0f %.0f", ($1+$4)/2, ($2+$5)/2}'
}

echo "== Redis Cluster: 3 primaries + 3 replicas, $KEYS SETs of 100 bytes"
for i in 0 1 2 3 4 5; do redis_node "$i"; done
redis-cli --cluster create $(for i in 0 1 2 3 4 5; do printf '127.0.0.1:%d ' $((RBASE + i)); done) \
  --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 100); do redis-cli -p "$RBASE" cluster info | grep -q cluster_state:ok && break; sleep 0.2; done
sleep 2
redis-benchmark -p "$RBASE" --cluster -t set -c 50 -n "$KEYS" -r "$KEYS" -d 100 -P 16 -q >/dev/null 2>&1
rkeys=$(for i in 0 1 2; do redis-cli -p $((RBASE + i)) dbsize; done | awk '{s+=$1} END {print s}')
rbefore=$(before "$RBASE")
redis_node 6
grow_redis() {
  redis-cli --cluster add-node 127.0.0.1:$((RBASE + 6)) 127.0.0.1:"$RBASE" >/dev/null
  sleep 2
  redis-cli --cluster rebalance 127.0.0.1:"$RBASE" --cluster-use-empty-masters >/dev/null
}
rduring=$(during "$RBASE" grow_redis)
rmoved=$(redis-cli -p $((RBASE + 6)) dbsize)

echo "== strata: 3 nodes, replicas 3, 12 shards, the same load"
mkdir -p "$WORK/strata"
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
start_strata() { # index
  local i=$1
  local d="$WORK/strata/node-$i"
  mkdir -p "$d"
  STRATA_CLUSTER_SECRET=$secret setsid "$STRATA" server --port $((SBASE + i)) --http-port $((SBASE + 1000 + i)) \
    --cluster-port $((SBASE + 10000 + i)) --data-dir "$d/data" --maxmemory 2gb > "$d/log" 2>&1 &
  echo $! > "$d/pid"
  for _ in $(seq 600); do redis-cli -p $((SBASE + i)) ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "strata node $i did not start:" >&2; tail -20 "$d/log" >&2; return 1
}
for i in 0 1 2; do start_strata "$i"; done
"$STRATA" cluster create --replicas 3 --shards 12 $(for i in 0 1 2; do printf '127.0.0.1:%d ' $((SBASE + i)); done) >/dev/null
redis-benchmark -p "$SBASE" --cluster -t set -c 50 -n "$KEYS" -r "$KEYS" -d 100 -P 16 -q >/dev/null 2>&1
skeys=$(redis-cli -p "$SBASE" dbsize)
sbefore=$(before "$SBASE")
start_strata 3
sduring=$(during "$SBASE" "$STRATA" cluster add-node 127.0.0.1:$((SBASE + 3)) 127.0.0.1:"$SBASE")
grep "OK\]" "$WORK/move.log" || true
smoved=$(redis-cli -p $((SBASE + 3)) info keyspace | awk -F'[=,:]' '/^db/ {s+=$3} END {print s+0}')

for i in 0 1 2 3; do kill "$(cat "$WORK/strata/node-$i/pid")" 2>/dev/null || true; done

read -r rt rs rg re rn <<< "$rduring"
read -r st ss sg se sn <<< "$sduring"
read -r rbs rbg <<< "$rbefore"
read -r sbs sbg <<< "$sbefore"
printf '\n%-44s %16s %16s\n' "" "redis-cluster" "strata"
printf '%-44s %16s %16s\n' "keys before the move" "$rkeys" "$skeys"
printf '%-44s %15.1fs %15.1fs\n' "time to add a 4th node and rebalance" "$rt" "$st"
printf '%-44s %16s %16s\n' "keys the 4th node holds" "$rmoved" "$smoved"
printf '%-44s %16d %16d\n' "failed client requests during the move" "$re" "$se"
printf '%-44s %16.2f %16.2f\n' "SET rate during / before" "$(echo "$rs / $rbs" | bc -l)" "$(echo "$ss / $sbs" | bc -l)"
printf '%-44s %16.2f %16.2f\n' "GET rate during / before" "$(echo "$rg / $rbg" | bc -l)" "$(echo "$sg / $sbg" | bc -l)"
printf '%-44s %16s %16s\n' "client runs during the move" "$rn" "$sn"
printf '%-44s %16.2f\n' "strata time / redis time" "$(echo "$st / $rt" | bc -l)"
