#!/usr/bin/env bash
# `sam build` of template.yaml, offline: every function built by cargo-lambda for arm64
# (provided.al2023), in release, into the shared cargo target dir; then each bootstrap's
# size. No AWS account or credentials are needed.
#
# SAM CLI, cargo-lambda and zig come from PyPI, pinned, into their OWN virtualenv under the
# cargo target dir (installed next to moto, SAM CLI downgrades boto3 and click), installed
# once and reused. The arm64 Rust target is added with rustup when missing.
#
#   ./infra/sam-build.sh                 build everything (release, arm64)
#   SAM_BUILD_ARGS="WebhookFunction" ./infra/sam-build.sh   one function
#
# Output: <target>/sam/build (template + one directory per function with its bootstrap).
# For a deploy from your own machine, plain `sam build && sam deploy --guided` at the
# workspace root does the same (see README.md, "Deploy to AWS").
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

SAM_CLI_VERSION="1.170.0"
CARGO_LAMBDA_VERSION="1.9.2"
ZIGLANG_VERSION="0.15.2"
RUST_TARGET="aarch64-unknown-linux-gnu"
pins="aws-sam-cli==$SAM_CLI_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION ziglang==$ZIGLANG_VERSION"

# One absolute target dir for cargo, cargo-lambda and SAM (SAM would otherwise set
# CARGO_TARGET_DIR=target relative to each function's CodeUri).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$CARGO_TARGET_DIR"
CARGO_TARGET_DIR="$(cd "$CARGO_TARGET_DIR" && pwd -P)"
venv="$CARGO_TARGET_DIR/venvs/sam"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/sam" ]] || [[ "$(cat "$venv/.pinned" 2>/dev/null)" != "$pins" ]]; then
  echo "== installing $pins into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  # One resolve, so cargo-lambda's `ziglang>=0.10` takes the pinned zig.
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pins
  echo "$pins" > "$venv/.pinned"
fi
export PATH="$venv/bin:$PATH"
# cargo-zigbuild (inside cargo-lambda) runs zig as `python3 -m ziglang`: this venv's.
export CARGO_ZIGBUILD_PYTHON_PATH="$venv/bin/python3"

if ! rustup target list --installed | grep -qx "$RUST_TARGET"; then
  echo "== rustup target add $RUST_TARGET"
  rustup target add "$RUST_TARGET"
fi

# SAM copies each bootstrap from <CodeUri>/target/lambda/<binary>/bootstrap, CodeUri being
# the workspace root; cargo-lambda writes it to $CARGO_TARGET_DIR/lambda. When the target
# dir is elsewhere, point target/lambda at it.
if [[ "$CARGO_TARGET_DIR" != "$(mkdir -p "$root/target" && cd "$root/target" && pwd -P)" ]]; then
  mkdir -p "$CARGO_TARGET_DIR/lambda"
  if [[ -L "$root/target/lambda" || ! -e "$root/target/lambda" ]]; then
    ln -sfn "$CARGO_TARGET_DIR/lambda" "$root/target/lambda"
  else
    echo "target/lambda exists and is not a link to $CARGO_TARGET_DIR/lambda" >&2
    exit 1
  fi
fi

# Offline and non-interactive: no telemetry, no credentials, no instance metadata lookups.
export SAM_CLI_TELEMETRY=0
export SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_EC2_METADATA_DISABLED=true
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

build_dir="$CARGO_TARGET_DIR/sam/build"
echo "== sam build ($(sam --version), cargo-lambda $(cargo lambda --version 2>/dev/null | awk '{print $2}'), zig $("$venv/bin/python3" -m ziglang version))"
start=$(date +%s)
# shellcheck disable=SC2086
sam build --template-file template.yaml --build-dir "$build_dir" --beta-features ${SAM_BUILD_ARGS:-} </dev/null
elapsed=$(($(date +%s) - start))

echo "== bootstraps (sam build took ${elapsed}s)"
found=0
for bootstrap in "$build_dir"/*/bootstrap; do
  [[ -f "$bootstrap" ]] || continue
  found=$((found + 1))
  bytes=$(stat -c %s "$bootstrap")
  printf '%-24s %10d bytes  %6.1f MiB  %s\n' "$(basename "$(dirname "$bootstrap")")" "$bytes" \
    "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" "$(file -b "$bootstrap" 2>/dev/null | cut -d, -f1-2)"
done
if (( found == 0 )); then
  echo "no bootstrap was built" >&2
  exit 1
fi
