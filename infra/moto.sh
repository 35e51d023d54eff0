#!/usr/bin/env bash
# Install (or reuse) moto's server in its own virtualenv and print the path of its
# `moto_server` binary on stdout, for the AWS adapter tests:
#
#   BANDSYNC_MOTO_SERVER=$(infra/moto.sh) cargo test -p bandsync-tests --test aws
#
# The venv lives under the cargo target dir ("${CARGO_TARGET_DIR:-target}/venvs/moto"),
# so `cargo clean` removes it too. Idempotent: when the pinned version is already
# installed, pip is not run at all (no registry access). Everything but the final path
# goes to stderr.
#
# moto is pinned: its emulation changes between releases, and the tests assert what this
# version does (DynamoDB, SQS FIFO + dedup, SNS -> SQS, apigatewaymanagementapi).
# Keep it in its own venv: SAM CLI installed next to it would downgrade boto3 and click.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION="5.2.5"

target="${CARGO_TARGET_DIR:-target}"
venv="$target/venvs/moto"
# Absolute path, so the printed binary works from any directory.
mkdir -p "$venv"
venv="$(cd "$venv" && pwd)"
python="${PYTHON:-python3}"

# A venv whose creation was cut short has a python but no pip: start it over.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "moto.sh: creating virtualenv $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv" >&2
fi

installed="$("$venv/bin/python" - <<'EOF' 2>/dev/null || true
from importlib.metadata import version
print(version("moto"))
EOF
)"

if [ "$installed" != "$MOTO_VERSION" ] || [ ! -x "$venv/bin/moto_server" ]; then
  echo "moto.sh: installing moto[server]==$MOTO_VERSION into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "moto[server]==$MOTO_VERSION" >&2
fi

# Fail loudly if the install did not produce a working server.
"$venv/bin/python" -c "import moto.server" >&2
echo "$venv/bin/moto_server"
