#!/usr/bin/env bash
# The one command that runs every check and test on a fresh machine.
# It needs the Rust toolchain, python3 and Node.js 20: every crate comes from the
# registry; the Python tools (moto, cfn-lint, SAM CLI + cargo-lambda + zig) are installed
# from PyPI into virtualenvs under the target dir; the npm packages come from their
# lockfiles and Debian's chromium from apt-get when it is missing (infra/js-test.sh);
# every server the tests use (the local stack, moto) is started on loopback by the tests
# themselves and stops with them.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target dir for everything (CI reuses it across steps).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Keep the 2-core machines responsive: two jobs, as many test threads as cores.
jobs=$(nproc 2>/dev/null || echo 2)

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --jobs "$jobs" -- -D warnings

echo "== moto (AWS-protocol emulator for the adapter contract tests)"
BANDSYNC_MOTO_SERVER="$(./infra/moto.sh)"
export BANDSYNC_MOTO_SERVER

echo "== tests"
cargo test --workspace --jobs "$jobs" 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt"

./infra/js-test.sh

echo "== cfn-lint"
./infra/cfn-lint.sh

echo "== sam build (release, arm64, offline)"
./infra/sam-build.sh

# One closing line with the totals of every test binary and of node's test runs.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     /^# pass / { p += $3 } /^# fail / { f += $3 }
     END { printf "%d passed, %d failed\n", p, f }' "$CARGO_TARGET_DIR/test-output.txt" "$CARGO_TARGET_DIR/js-test-output.txt"
