#!/usr/bin/env bash
# The dashboard in a real browser: installs Debian's chromium if missing
# and Node's puppeteer-core from npm into a temp dir, starts a strata node
# with data, and runs scripts/dashboard-check.mjs against /dashboard. The
# screenshot goes to $ARTIFACTS (default: $CARGO_TARGET_DIR/artifacts).
#
#   scripts/dashboard-check.sh            (STRATA_BIN=path: use that binary)
#
# Skips, with the reason, when Node, npm or a browser can't be had.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"
ARTIFACTS="${ARTIFACTS:-$CARGO_TARGET_DIR/artifacts}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "dashboard-check: skipped: Node.js and npm are not installed"
  exit 0
fi
CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$CHROMIUM" ]; then
  echo "installing chromium..." >&2
  (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || true
  CHROMIUM="$(command -v chromium || true)"
fi
if [ -z "$CHROMIUM" ]; then
  echo "dashboard-check: skipped: chromium could not be installed"
  exit 0
fi
if [ -n "${STRATA_BIN:-}" ]; then
  STRATA="$STRATA_BIN"
else
  cargo build --release -q
  STRATA="$CARGO_TARGET_DIR/release/strata"
fi

WORK=$(mktemp -d)
SPID=""
cleanup() {
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cp scripts/dashboard-check.mjs "$WORK/"
(
  cd "$WORK"
  npm init -y >/dev/null 2>&1
  npm install --no-audit --no-fund --loglevel=error puppeteer-core@24 >/dev/null
) || { echo "dashboard-check: skipped: installing puppeteer-core from npm failed"; exit 0; }

. scripts/lib.sh

SP=$(free_port); SH=$(free_port)
KEY="dash-$RANDOM$RANDOM"
# A small memory tier that only spills above 95%, so the 80% alert fires
# for real; a low hot-key threshold; a one-second monitor.
cat > "$WORK/strata.toml" <<TOML
port = $SP
http_port = $SH
api_key = "$KEY"
hotkey_threshold_per_min = 100
[storage]
data_dir = "$WORK/data"
maxmemory = 4194304
overflow_ratio = 0.95
spill_low_ratio = 0.9
offload_force_ratio = 0.97
[monitoring]
interval_secs = 1
TOML
"$STRATA" server --config "$WORK/strata.toml" > "$WORK/node.log" 2>&1 &
SPID=$!
wait_port "$SH" || { echo "dashboard-check: the node did not start"; tail -20 "$WORK/node.log"; exit 1; }

mkdir -p "$ARTIFACTS"
if ! timeout 300 node "$WORK/dashboard-check.mjs" "$SH" "$SP" "$KEY" "$CHROMIUM" "$ARTIFACTS/dashboard.png"; then
  echo "--- node log (tail)"; tail -30 "$WORK/node.log"
  exit 1
fi
