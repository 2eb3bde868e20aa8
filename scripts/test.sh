#!/usr/bin/env bash
# README's second command: install what gvol and its tests need, then run the whole test suite
# in a fresh virtualenv built the way users' installs are built (scripts/install-deps.sh).
#
#   bash scripts/test.sh [--newest | --oldest] [PYTEST ARGS...]   (as root on Debian; CI: .ci/run)
#
# The venv (.venv-test in this checkout, or $GVOL_TEST_VENV) is made anew on every run from
# requirements.lock; --newest (GVOL_DEPS=newest) takes the newest releases instead, to meet the
# next upstream change before users do; --oldest (GVOL_DEPS=oldest) the minimum versions that
# pyproject.toml declares. /sbin/mount.gvol points into the test venv while the
# suite runs and is put back as it was afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    --newest) export GVOL_DEPS=newest; shift ;;
    --oldest) export GVOL_DEPS=oldest; shift ;;
esac

# shellcheck source=scripts/install-deps.sh
source scripts/install-deps.sh
# the tests also use: etcd (multi-server state), ip (network namespaces), setfacl/getfacl
gvol_install_system_deps etcd-server iproute2 acl
gvol_make_venv "${GVOL_TEST_VENV:-$GVOL_REPO/.venv-test}" fresh
gvol_install_project test

# `mount -t gvol` in the tests runs /sbin/mount.gvol: the test venv's, for this run only
old_link=$(readlink /sbin/mount.gvol 2>/dev/null || true)
restore_link() {
    if [ -n "$old_link" ]; then
        ln -sfn "$old_link" /sbin/mount.gvol
    else
        rm -f /sbin/mount.gvol
    fi
}
trap restore_link EXIT
ln -sfn "$GVOL_BIN/mount.gvol" /sbin/mount.gvol

gvol_log "$GVOL_PY -m pytest tests $*"
rc=0
"$GVOL_PY" -m pytest tests -q -p no:cacheprovider "$@" </dev/null || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests (exit 5): the suite is missing" >&2
fi
gvol_log "tested (GVOL_DEPS=${GVOL_DEPS:-lock}) with: $(gvol_versions)"
exit "$rc"
