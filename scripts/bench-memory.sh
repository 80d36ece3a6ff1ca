#!/usr/bin/env bash
# Memory against redis-server, in one run on the same machine:
#  - bytes per key: growth of the process RSS (and of INFO's used_memory)
#    after writing N keys (default 1M) with 16-byte values, and N hashes of
#    10 small fields, into a fresh server with a 4 GiB cap (nothing spills),
#    measured once the server has settled (15 s: strata's first checkpoint);
#  - the cap: peak RSS while 1M keys with 100-byte values are written into a
#    fresh strata with `--maxmemory 64mb` (sampled every 50 ms), against the
#    promise of maxmemory + 32 MiB; every key must still be there.
# Both servers run with AOF/WAL fsync every second. Installs redis-server
# and redis-tools from Debian if missing.
#
#   scripts/bench-memory.sh [keys]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis
N="${1:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"

cargo build --release -q
STRATA="${STRATA_BIN:-$CARGO_TARGET_DIR/release/strata}"
WORK=$(mktemp -d)
PID=""
MON=""
cleanup() {
  [ -n "$MON" ] && kill "$MON" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# RESP commands for N keys of one shape, written to a file once.
commands() { # strings|hashes|strings100
  python3 - "$1" "$N" <<'PY'
import sys
kind, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout.buffer
def cmd(*args):
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))
for i in range(n):
    key = b"key:%012d" % i
    if kind == "strings":
        cmd(b"SET", key, b"v" * 16)
    elif kind == "strings100":
        cmd(b"SET", key, b"x" * 100)
    else:
        args = [b"HSET", key]
        for f in range(10):
            args += [b"field:%d" % f, b"value:%d" % (i % 1000)]
        cmd(*args)
PY
}
for kind in strings hashes strings100; do commands "$kind" > "$WORK/$kind.resp"; done

start() { # server maxmemory -> sets PORT and PID
  local port dir; port=$(free_port)
  # A fresh directory each time: a server must not load the last one's data.
  dir=$(mktemp -d -p "$WORK")
  if [ "$1" = redis ]; then
    redis-server --port "$port" --dir "$dir" --save '' --appendonly yes --appendfsync everysec \
      --maxmemory "$2" --maxmemory-policy noeviction --daemonize no >/dev/null &
  else
    "$STRATA" server --port "$port" --http-port "$(free_port)" --data-dir "$dir/data" \
      --maxmemory "$2" --appendfsync everysec >/dev/null 2>&1 &
  fi
  PID=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1
  PORT=$port
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

per_key() { # server kind -> sets RSS_PER and USED_PER
  local u0 r0 u1 r1
  start "$1" 4gb
  u0=$(used_memory "$PORT"); r0=$(rss_bytes "$PID")
  redis-cli -p "$PORT" --pipe < "$WORK/$2.resp" >/dev/null 2>&1
  sleep 15
  u1=$(used_memory "$PORT"); r1=$(rss_bytes "$PID")
  stop
  RSS_PER=$(( (r1 - r0) / N )); USED_PER=$(( (u1 - u0) / N ))
}

printf '%-34s %12s %12s %8s\n' "memory" "redis" "strata" "ratio"
for kind in strings hashes; do
  per_key redis "$kind"; rr=$RSS_PER; ru=$USED_PER
  per_key strata "$kind"; sr=$RSS_PER; su=$USED_PER
  label="RSS B/key, $kind"; [ "$kind" = hashes ] && label="RSS B/key, hashes of 10 fields"
  awk -v l="$label" -v r="$rr" -v s="$sr" 'BEGIN { printf "%-34s %12d %12d %8.2f\n", l, r, s, s/r }'
  awk -v l="used_memory B/key, $kind" -v r="$ru" -v s="$su" 'BEGIN { printf "%-34s %12d %12d %8.2f\n", l, r, s, s/r }'
done

# The cap: strata alone (Redis refuses writes at its cap instead).
start strata 64mb
idle=$(rss_bytes "$PID")
( while sleep 0.05; do rss_bytes "$PID"; done ) > "$WORK/rss.log" 2>/dev/null &
MON=$!
redis-cli -p "$PORT" --pipe < "$WORK/strings100.resp" >/dev/null 2>&1
sleep 3
kill "$MON"; wait "$MON" 2>/dev/null || true; MON=""
peak=$(sort -n "$WORK/rss.log" | tail -1)
keys=$(redis-cli -p "$PORT" dbsize)
stop
awk -v i="$idle" -v p="$peak" -v k="$keys" 'BEGIN {
  printf "%-34s %12s %12.1f\n", "idle RSS MiB (strata)", "", i/1048576
  printf "%-34s %12s %12.1f %8s\n", "peak RSS MiB, 64 MiB cap", "96.0 goal", p/1048576, (p <= (96 * 1048576) ? "ok" : "over")
  printf "%-34s %12s %12d\n", "keys kept under the cap", "", k
}'
