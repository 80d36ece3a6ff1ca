#!/usr/bin/env bash
# Cluster throughput and failover, side by side in one run:
#   - Redis Cluster, 3 primaries + 3 replicas, appendfsync everysec,
#     cluster-node-timeout 2000;
#   - a strata cluster of 3 nodes, replicas 3, appendfsync everysec.
# Throughput: redis-benchmark --cluster -t set,get -c 50, plain and -P 16.
# One hot key read by a simple client: on Redis Cluster through the key's
# owner (any other node answers MOVED), on strata through a node that
# doesn't lead its shard (served from that node's cache of hot keys).
# Failover: under a write loop, kill -9 the primary/leader owning key
# "failover:probe" and time until a write to it succeeds again.
# Installs redis-server and redis-tools from Debian if missing.
#
#   scripts/bench-cluster.sh [requests]     (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis
N="${1:-200000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"

cargo build --release -q
STRATA="$CARGO_TARGET_DIR/release/strata"
WORK=$(mktemp -d)
RBASE=${RBASE:-7301}
SBASE=${SBASE:-7401}

cleanup() {
  for i in 0 1 2 3 4 5; do redis-cli -p $((RBASE + i)) shutdown nosave >/dev/null 2>&1 || true; done
  "$STRATA" cluster down --dir "$WORK/strata" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_redis_cluster() {
  for i in 0 1 2 3 4 5; do
    local p=$((RBASE + i)) d="$WORK/redis-$i"
    mkdir -p "$d"
    redis-server --port "$p" --dir "$d" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 2000 --appendonly yes --appendfsync everysec --save '' \
      --daemonize yes --logfile "$d/log" >/dev/null
  done
  for i in 0 1 2 3 4 5; do
    for _ in $(seq 100); do redis-cli -p $((RBASE + i)) ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create $(for i in 0 1 2 3 4 5; do printf '127.0.0.1:%d ' $((RBASE + i)); done) \
    --cluster-replicas 1 --cluster-yes >/dev/null
  for _ in $(seq 100); do
    redis-cli -p "$RBASE" cluster info | grep -q cluster_state:ok && break; sleep 0.2
  done
  sleep 2
}

bench() { # port, extra args -> "TEST rps" lines
  redis-benchmark -p "$1" --cluster -t set,get -c 50 -n "$N" -r 100000 --csv "${@:2}" 2>/dev/null \
    | awk -F'","' '/^"(SET|GET)/ {gsub(/"/,""); split($0,a,","); print a[1], a[2]}'
}

# Time from kill -9 of the owner of "failover:probe" until a write to it succeeds.
failover() { # entry port, pid-of-owner
  local port=$1 pid=$2 t0 t1
  t0=$(date +%s.%N)
  kill -9 "$pid"
  for _ in $(seq 600); do
    if [ "$(redis-cli -c -p "$port" set failover:probe 1 2>/dev/null)" = "OK" ]; then break; fi
    sleep 0.05
  done
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

start_redis_cluster
"$STRATA" cluster up --nodes 3 --replicas 3 --base-port "$SBASE" --dir "$WORK/strata" --maxmemory 1gb >/dev/null

printf '%-16s %14s %14s %8s\n' "test" "redis-cluster" "strata" "ratio"
for mode in "" "-P 16"; do
  # shellcheck disable=SC2086
  R=$(bench "$RBASE" $mode); S=$(bench "$SBASE" $mode)
  while read -r t rr; do
    sr=$(echo "$S" | awk -v t="$t" '$1==t {print $2}')
    awk -v l="$t${mode:+ $mode}" -v r="$rr" -v s="${sr:-0}" 'BEGIN { printf "%-16s %14.0f %14.0f %8.2f\n", l, r, s, s/r }'
  done <<< "$R"
done

# One hot key, read through a node by a client that doesn't route.
owner_of() { # entry port, key -> port of the node that serves the key's slot
  redis-cli -p "$1" cluster nodes | awk -v s="$(redis-cli -p "$1" cluster keyslot "$2")" '
    $3 ~ /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (s >= r[1] && s <= (r[2] == "" ? r[1] : r[2])) { split($2, a, "[:@]"); print a[2] } } }'
}
hot_get() { # port -> rps
  redis-benchmark -p "$1" -c 50 -n "$N" --csv GET hot:probe 2>/dev/null | awk -F'","' '/^"GET/ {print $2}'
}
redis-cli -c -p "$RBASE" set hot:probe "$(head -c 100 /dev/zero | tr '\0' x)" >/dev/null
redis-cli -p "$SBASE" set hot:probe "$(head -c 100 /dev/zero | tr '\0' x)" >/dev/null
rr=$(hot_get "$(owner_of "$RBASE" hot:probe)")
sowner=$(owner_of "$SBASE" hot:probe); other=$SBASE; [ "$sowner" = "$SBASE" ] && other=$((SBASE + 1))
sr=$(hot_get "$other")
awk -v r="$rr" -v s="$sr" 'BEGIN { printf "%-16s %14.0f %14.0f %8.2f\n", "GET 1 hot key", r, s, s/r }'

# Failover: the owner of the probe key's slot.
rport=$(redis-cli -c -p "$RBASE" cluster nodes | awk -v s="$(redis-cli -p "$RBASE" cluster keyslot failover:probe)" '
  $3 ~ /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (s >= r[1] && s <= (r[2] == "" ? r[1] : r[2])) { split($2, a, "[:@]"); print a[2] } } }')
rpid=$(redis-cli -p "$rport" info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
entry=$RBASE; [ "$rport" = "$RBASE" ] && entry=$((RBASE + 1))
rt=$(failover "$entry" "$rpid")
sport=$(redis-cli -p "$SBASE" cluster nodes | awk -v s="$(redis-cli -p "$SBASE" cluster keyslot failover:probe)" '
  { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (s >= r[1] && s <= (r[2] == "" ? r[1] : r[2])) { split($2, a, "[:@]"); print a[2] } } }')
spid=$(redis-cli -p "$sport" info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
entry=$SBASE; [ "$sport" = "$SBASE" ] && entry=$((SBASE + 1))
st=$(failover "$entry" "$spid")
printf '%-16s %13.2fs %13.2fs %8.2f\n' "failover" "$rt" "$st" "$(echo "$st / $rt" | bc -l)"
