#!/usr/bin/env bash
# README's second command: install what gvol and its tests need, then run the test suite.
#   bash scripts/test.sh [PYTEST ARGS...]      (as root on Debian; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/install-deps.sh
source scripts/install-deps.sh
gvol_install_system_deps
gvol_python_env
gvol_install_project test
gvol_link_scripts  # `mount -t gvol` in the tests needs /sbin/mount.gvol

gvol_log "$GVOL_PY -m pytest tests -q $*"
rc=0
"$GVOL_PY" -m pytest tests -q "$@" </dev/null || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests (exit 5): the suite is missing" >&2
fi
exit "$rc"
