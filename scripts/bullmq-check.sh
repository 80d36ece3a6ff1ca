#!/usr/bin/env bash
# BullMQ end to end: installs Node's `bullmq` package from npm into a temp
# dir, then runs scripts/bullmq-check.mjs against a strata node and against
# redis-server in the same run (normal, delayed, prioritised and repeatable
# jobs, retries with exponential backoff, a worker killed mid-job, QueueEvents,
# a flow). Fails unless every job completes exactly once with the right
# result; prints both throughputs and their ratio.
#
#   scripts/bullmq-check.sh [jobs]        (STRATA_BIN=path: use that binary)
#
# Needs Node and npm: without them it says so and exits non-zero. Installs
# redis-server from Debian for the comparison if missing (and skips the
# comparison if it can't).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${1:-2000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "bullmq-check: Node.js and npm are required and missing" >&2
  exit 1
fi
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server..." >&2
  (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) || true
fi
# STRATA_BIN: a strata binary already built (CI passes the one its tests
# used); otherwise a release build.
if [ -n "${STRATA_BIN:-}" ]; then
  STRATA="$STRATA_BIN"
else
  cargo build --release -q
  STRATA="$CARGO_TARGET_DIR/release/strata"
fi

WORK=$(mktemp -d)
SPID=""; RPID=""
cleanup() {
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
  [ -n "$RPID" ] && kill "$RPID" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cp scripts/bullmq-check.mjs "$WORK/"
(
  cd "$WORK"
  npm init -y >/dev/null 2>&1
  npm install --no-audit --no-fund --loglevel=error bullmq@5 >/dev/null
) || { echo "bullmq-check: installing bullmq from npm failed" >&2; exit 1; }

. scripts/lib.sh

SP=$(free_port); SH=$(free_port)
"$STRATA" server --port "$SP" --http-port "$SH" --data-dir "$WORK/strata" >/dev/null 2>&1 &
SPID=$!
wait_port "$SP"
STRATA_OUT=$(timeout 600 node "$WORK/bullmq-check.mjs" "$SP" strata "$JOBS")
echo "$STRATA_OUT" | grep -v '^RESULT'
S_RATE=$(echo "$STRATA_OUT" | awk '/^RESULT/ {print $3}')

if command -v redis-server >/dev/null; then
  RP=$(free_port)
  redis-server --port "$RP" --dir "$WORK" --save '' --appendonly yes --appendfsync everysec \
    --daemonize no >/dev/null &
  RPID=$!
  wait_port "$RP"
  REDIS_OUT=$(timeout 600 node "$WORK/bullmq-check.mjs" "$RP" redis "$JOBS")
  echo "$REDIS_OUT" | grep -v '^RESULT'
  R_RATE=$(echo "$REDIS_OUT" | awk '/^RESULT/ {print $3}')
  printf '%-10s %12s %12s %8s\n' "bullmq" "redis jobs/s" "strata jobs/s" "ratio"
  awk -v r="$R_RATE" -v s="$S_RATE" 'BEGIN { printf "%-10s %12.0f %12.0f %8.2f\n", "jobs", r, s, s/r }'
else
  echo "redis-server unavailable: strata alone ran $S_RATE jobs/s"
fi
