#!/usr/bin/env bash
# Memory per element of one big collection, strata against redis-server in
# the same run: a list, a set and a sorted set of N elements (default 1M,
# members "member:<i>", scores i), each written into a fresh server. Prints
# the growth of INFO's used_memory and of the process RSS per element.
# Installs redis-server and redis-tools from Debian if missing.
#
#   scripts/mem-per-element.sh [elements]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_redis
N="${1:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"

cargo build --release -q
STRATA="$CARGO_TARGET_DIR/release/strata"
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# RESP commands adding N elements, 1000 per command.
commands() { # type
  python3 - "$1" "$N" <<'EOF'
import sys
kind, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout.buffer
def cmd(args):
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))
for start in range(0, n, 1000):
    items = range(start, min(n, start + 1000))
    if kind == "list":
        cmd(["RPUSH", "big"] + [f"member:{i}" for i in items])
    elif kind == "set":
        cmd(["SADD", "big"] + [f"member:{i}" for i in items])
    else:
        args = ["ZADD", "big"]
        for i in items:
            args += [str(i), f"member:{i}"]
        cmd(args)
EOF
}


measure() { # server type -> "used_per rss_per"
  local port; port=$(free_port)
  rm -rf "$WORK/data"
  if [ "$1" = redis ]; then
    redis-server --port "$port" --dir "$WORK" --save '' --appendonly no --daemonize no >/dev/null &
  else
    "$STRATA" server --port "$port" --http-port "$(free_port)" --data-dir "$WORK/data" \
      --maxmemory 4gb --appendfsync everysec >/dev/null 2>&1 &
  fi
  PID=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  local u0 r0 u1 r1
  u0=$(used_memory "$port"); r0=$(rss_bytes "$PID")
  commands "$2" | redis-cli -p "$port" --pipe >/dev/null
  sleep 1
  u1=$(used_memory "$port"); r1=$(rss_bytes "$PID")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  awk -v u="$((u1 - u0))" -v r="$((r1 - r0))" -v n="$N" 'BEGIN { printf "%.1f %.1f", u/n, r/n }'
}

printf '%-10s %16s %16s %16s %16s %8s\n' type "redis used B/el" "strata used B/el" "redis RSS B/el" "strata RSS B/el" "RSS ratio"
for t in list set zset; do
  read -r ru rr <<< "$(measure redis "$t")"
  read -r su sr <<< "$(measure strata "$t")"
  awk -v t="$t" -v ru="$ru" -v su="$su" -v rr="$rr" -v sr="$sr" \
    'BEGIN { printf "%-10s %16.1f %16.1f %16.1f %16.1f %8.2f\n", t, ru, su, rr, sr, sr/rr }'
done
