#!/usr/bin/env bash
# Metric pipeline ingest on one fresh node: `runs` back-to-back runs of
# `strata generate --shape metric` at full speed (1000 servers x 20 metrics,
# batches of 1000, 4 connections), each `secs` long, so later runs meet
# partition streams that already hold the earlier runs' events. Prints each
# run's accepted events per second, then the node's memory and disk use.
#
#   scripts/bench-pipeline.sh [runs] [secs]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
SECS="${2:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"
cargo build --release -q
STRATA="$CARGO_TARGET_DIR/release/strata"

. scripts/lib.sh
WORK=$(mktemp -d)
SP=$(free_port); SH=$(free_port)
cleanup() { kill "$SPID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
"$STRATA" server --port "$SP" --http-port "$SH" --data-dir "$WORK/strata" >/dev/null 2>&1 &
SPID=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$SH/health" >/dev/null 2>&1 && break
  sleep 0.1
done
for r in $(seq "$RUNS"); do
  "$STRATA" generate --shape metric --url "http://127.0.0.1:$SH" --servers 1000 --metrics 20 \
    --batch-interval 0 --batch-size 1000 --connections 4 --duration "$SECS" --json 2>/dev/null \
    | tail -1 | python3 -c "import json,sys; j=json.load(sys.stdin); print('run $r:', round(j['ok'] / j['seconds']), 'events/s accepted')"
done
curl -sf "http://127.0.0.1:$SH/metrics" | grep -E '^strata_(memory_used_bytes|disk_bytes) ' || true
