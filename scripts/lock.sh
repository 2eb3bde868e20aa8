#!/usr/bin/env bash
# Refresh requirements.lock: the exact versions of every dependency (and their dependencies)
# that scripts/install-deps.sh installs, resolved by pip-tools' pip-compile from pyproject.toml
# (runtime dependencies and the `test` extra), newest releases first.
#
#   bash scripts/lock.sh && bash scripts/test.sh     # then commit requirements.lock if it passes
#
# The lock is a pip constraints file: `pip install -c requirements.lock -e .` takes only what gvol
# needs at those versions; `-e .[test]` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/install-deps.sh
source scripts/install-deps.sh
gvol_install_system_deps
tools=$(mktemp -d /tmp/gvol-lock.XXXXXX)
trap 'rm -rf "$tools"' EXIT
gvol_make_venv "$tools/venv"
"$GVOL_PY" -m pip install -q pip-tools </dev/null || gvol_die "cannot install pip-tools"
gvol_log "pip-compile pyproject.toml (+ extra test) -> requirements.lock"
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$GVOL_BIN/pip-compile" -q --upgrade \
    --extra test --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe \
    --output-file requirements.lock pyproject.toml </dev/null
gvol_log "requirements.lock written; now run: bash scripts/test.sh"
