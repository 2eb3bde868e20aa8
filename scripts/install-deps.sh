# shellcheck shell=bash
# How gvol is installed: shared by scripts/setup-demo.sh and scripts/test.sh (source this file),
# so the test suite runs in exactly the kind of install a user gets.
#
#   gvol_install_system_deps [PKG...]
#               Debian packages: fuse3 (fusermount3), libfuse3-dev, pkg-config, gcc and the
#               Python headers (pyfuse3 ships no wheels: pip builds it), attr (getfattr/setfattr),
#               python3-venv; plus any PKG named. apt-get update runs only when one is missing.
#   gvol_make_venv DIR [fresh]
#               a virtualenv at DIR made by $PYTHON (default python3, >= 3.11). gvol is never
#               installed into a system or pre-loaded Python: its packages are whatever happens
#               to be there. With `fresh`, an existing DIR is removed first. Sets GVOL_PY (the
#               venv's interpreter) and GVOL_BIN (its bin/).
#   gvol_install_project [EXTRAS]
#               pip install -e of this repository (+ extras, e.g. "test") into GVOL_PY, by
#               GVOL_DEPS: `lock` (default) pins every package to requirements.lock, the versions
#               the suite last passed with; `newest` takes the newest releases; `oldest` pins
#               each direct dependency to the minimum pyproject.toml declares (to keep those
#               minimums honest).
#   gvol_link_scripts
#               /sbin/mount.gvol (mount -t gvol) and gvol, gvold, gvol-brickd, mount.gvol in
#               /usr/local/bin, pointing into the venv.
#
# Environment: PYTHON (python3), GVOL_DEPS (lock | newest | oldest).
# Refresh the lock: bash scripts/lock.sh (see the README).

GVOL_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GVOL_LOCK="$GVOL_REPO/requirements.lock"
export DEBIAN_FRONTEND=noninteractive
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

gvol_log() { printf '==> %s\n' "$*" >&2; }
gvol_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    GVOL_SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    GVOL_SUDO=(sudo)
else
    GVOL_SUDO=()
fi

_gvol_apt_updated=0
_gvol_missing_pkgs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

# gvol_apt_install PKG...: install the packages that are not installed yet.
gvol_apt_install() {
    local missing
    if ! command -v dpkg-query >/dev/null 2>&1; then
        gvol_log "not a Debian system: install by hand if missing: $*"
        return 0
    fi
    missing=$(_gvol_missing_pkgs "$@")
    [ -z "$missing" ] && return 0
    gvol_log "installing $(tr '\n' ' ' <<<"$missing")"
    if [ "$_gvol_apt_updated" -eq 0 ]; then
        timeout 900 "${GVOL_SUDO[@]}" apt-get update -q >/dev/null || gvol_die "apt-get update failed"
        _gvol_apt_updated=1
    fi
    # shellcheck disable=SC2086
    timeout 1800 "${GVOL_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold $missing </dev/null >/dev/null \
        || gvol_die "apt-get install $missing failed"
}

_gvol_py() { echo "${PYTHON:-python3}"; }

gvol_install_system_deps() {
    local py pkgs minor
    py=$(_gvol_py)
    pkgs=(fuse3 libfuse3-dev pkg-config gcc attr ca-certificates "$@")
    if ! command -v "$py" >/dev/null 2>&1; then
        pkgs+=(python3)
        py=python3
    fi
    gvol_apt_install "${pkgs[@]}"
    command -v "$py" >/dev/null 2>&1 || gvol_die "$py not found"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || gvol_die "gvol needs Python >= 3.11; $py is $("$py" -V 2>&1) (set PYTHON=...)"
    # Python headers, to build pyfuse3 (only the system Python can lack them)
    if ! "$py" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        gvol_apt_install python3-dev
    fi
    # venv with pip (Debian splits ensurepip into python3.X-venv)
    if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
        minor=$("$py" -c 'import sys; print(sys.version_info[1])')
        gvol_apt_install python3-venv "python3.$minor-venv"
    fi
    # /dev/fuse: load the module where the kernel has it as a module
    if [ ! -e /dev/fuse ]; then
        "${GVOL_SUDO[@]}" modprobe fuse 2>/dev/null || gvol_log "warning: /dev/fuse is missing (mounts will not work)"
    fi
}

# gvol_make_venv DIR [fresh]
gvol_make_venv() {
    local venv=$1 py
    py=$(_gvol_py)
    if [ "${2:-}" = fresh ] && [ -e "$venv" ]; then
        gvol_log "removing the old virtualenv $venv"
        "${GVOL_SUDO[@]}" rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        gvol_log "creating a virtualenv at $venv ($("$py" -V 2>&1))"
        "${GVOL_SUDO[@]}" mkdir -p "$(dirname "$venv")"
        "${GVOL_SUDO[@]}" "$py" -m venv --clear "$venv" || gvol_die "cannot create a venv at $venv"
    fi
    GVOL_PY="$venv/bin/python"
    GVOL_BIN="$venv/bin"
    export GVOL_PY GVOL_BIN
}

# gvol_install_project [EXTRAS]
gvol_install_project() {
    local target="$GVOL_REPO" how
    local -a pins=()
    [ -n "${1:-}" ] && target="${GVOL_REPO}[$1]"
    case "${GVOL_DEPS:-lock}" in
        lock)
            [ -f "$GVOL_LOCK" ] || gvol_die "$GVOL_LOCK is missing (make it with: bash scripts/lock.sh)"
            how="the tested versions in requirements.lock"
            pins=(--constraint "$GVOL_LOCK")
            ;;
        newest)
            how="the newest releases (GVOL_DEPS=newest)"
            pins=(--upgrade --upgrade-strategy eager)
            ;;
        oldest)
            how="the minimum versions pyproject.toml declares (GVOL_DEPS=oldest)"
            "$GVOL_PY" - "$GVOL_REPO/pyproject.toml" >"$GVOL_BIN/../oldest.txt" <<'EOF2' \
                || gvol_die "cannot read the minimum versions from pyproject.toml"
import re, sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
reqs = project["dependencies"] + [r for rs in project["optional-dependencies"].values() for r in rs]
for req in reqs:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)\s*", req)
    if not m:
        sys.exit(f"no plain minimum in {req!r}")
    print(f"{m[1]}=={m[2]}")
EOF2
            pins=(--constraint "$GVOL_BIN/../oldest.txt")
            ;;
        *) gvol_die "GVOL_DEPS must be lock, newest or oldest, not ${GVOL_DEPS}" ;;
    esac
    gvol_log "pip install -e $target with $how"
    timeout 1800 "${GVOL_SUDO[@]}" env PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$GVOL_PY" -m pip install -q "${pins[@]}" -e "$target" </dev/null \
        || gvol_die "pip install -e $target failed"
    "$GVOL_PY" -m pip check >/dev/null || gvol_die "pip check: $("$GVOL_PY" -m pip check 2>&1 | head -3)"
    gvol_log "installed: $(gvol_versions)"
}

# gvol_versions: `name==version` of gvol's direct dependencies in GVOL_PY, one line.
gvol_versions() {
    "$GVOL_PY" - <<'EOF'
import importlib.metadata as md
import re
names = []
for req in md.requires("gvol") or []:
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
    if name not in names:
        names.append(name)
out = []
for n in names:
    try:
        out.append(f"{n}=={md.version(n)}")
    except md.PackageNotFoundError:
        continue  # an extra that was not asked for
print(" ".join(out))
EOF
}

gvol_link_scripts() {
    local s
    [ -x "$GVOL_BIN/mount.gvol" ] || gvol_die "$GVOL_BIN/mount.gvol not found"
    "${GVOL_SUDO[@]}" ln -sfn "$GVOL_BIN/mount.gvol" /sbin/mount.gvol
    for s in gvol gvold gvol-brickd mount.gvol; do
        [ -x "$GVOL_BIN/$s" ] && "${GVOL_SUDO[@]}" ln -sfn "$GVOL_BIN/$s" "/usr/local/bin/$s"
    done
    return 0
}
