#!/usr/bin/env bash
# Lint template.yaml with cfn-lint (CloudFormation + SAM transform; exits non-zero on
# errors). cfn-lint comes from PyPI, pinned, into its own virtualenv under the cargo target
# dir, installed once and reused (CI caches the target dir).
#
#   ./infra/cfn-lint.sh            lint template.yaml
#   ./infra/cfn-lint.sh other.yaml lint another template
#
# cfn-lint does not check every enum the services accept (it let
# `ProtocolType: WEBSOCKETS` through); tests/template.rs checks the values that matter.
set -euo pipefail
cd "$(dirname "$0")/.."

CFN_LINT_VERSION="1.58.0"
target="${CARGO_TARGET_DIR:-target}"
venv="$target/venvs/cfn-lint"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/cfn-lint" ]] || [[ "$(cat "$venv/.pinned" 2>/dev/null)" != "$CFN_LINT_VERSION" ]]; then
  echo "== installing cfn-lint $CFN_LINT_VERSION into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "cfn-lint==$CFN_LINT_VERSION"
  echo "$CFN_LINT_VERSION" > "$venv/.pinned"
fi

template="${1:-template.yaml}"
echo "== cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}') $template"
# Exit codes are a bit mask: 2 = error, 4 = warning, 8 = informational. Errors fail the
# run; warnings are printed and pass.
set +e
"$venv/bin/cfn-lint" --format parseable -- "$template"
status=$?
set -e
if (( status & 2 )) || (( status & 1 )); then
  echo "cfn-lint: errors in $template" >&2
  exit 1
fi
if (( status != 0 )); then
  echo "cfn-lint: warnings or informational findings in $template (not failing)"
fi
echo "cfn-lint: no errors"
