#!/usr/bin/env bash
# The JavaScript tests: the TypeScript client's own (shared/clients/ts: build check,
# conformance scenarios, units) and the client against the real local stack in Node and
# in headless Chromium (tests/js). It installs what it needs itself: Debian's `chromium`
# (when /usr/bin/chromium is missing) and the npm packages of the two lockfiles; it
# builds the stack binary with cargo. Bounded: each npm test run has a hard timeout.
# Writes node's `# pass N` / `# fail N` lines to $CARGO_TARGET_DIR/js-test-output.txt
# (infra/test.sh adds them to its totals) and closes with one totals line of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
jobs=$(nproc 2>/dev/null || echo 2)
started=$(date +%s)

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if [ -z "${BANDSYNC_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "== chromium (Debian's package)"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n --preserve-env=DEBIAN_FRONTEND)
  else
    echo "Chromium is missing and this user cannot install it: run" >&2
    echo "  sudo apt-get install chromium   (Debian; or set BANDSYNC_CHROMIUM to a Chromium binary)" >&2
    exit 1
  fi
  if ! { "${as_root[@]}" apt-get update -qq &&
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    echo "could not install Debian's chromium: install it (apt-get install chromium) or set BANDSYNC_CHROMIUM" >&2
    exit 1
  fi
fi

echo "== the local stack binary"
cargo build -p bandsync-local --jobs "$jobs"
export BANDSYNC_LOCAL_BIN="$CARGO_TARGET_DIR/debug/bandsync-local"

echo "== npm ci"
(cd shared/clients/ts && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)

out="$CARGO_TARGET_DIR/js-test-output.txt"
mkdir -p "$CARGO_TARGET_DIR"
: >"$out"
status=0
echo "== the TypeScript client's own tests"
(cd shared/clients/ts && timeout --kill-after=10 120 npm test) 2>&1 | tee -a "$out" || status=1
echo "== the client against the real stack: Node, then headless Chromium"
(cd tests/js && timeout --kill-after=10 180 npm test) 2>&1 | tee -a "$out" || status=1

echo "== js tests took $(($(date +%s) - started)) s"
awk '/^# pass / { p += $3 } /^# fail / { f += $3 } END { printf "js: %d passed, %d failed\n", p, f }' "$out"
exit "$status"
