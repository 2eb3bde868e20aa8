# shellcheck shell=bash
# Prerequisites of gvol, shared by scripts/setup-demo.sh and scripts/test.sh (source this file).
#
#   gvol_install_system_deps   Debian packages: fuse3 (fusermount3), libfuse3-dev, pkg-config, gcc
#                              and the Python headers (pyfuse3 has no wheels: pip builds it), attr
#                              (getfattr/setfattr), pip/venv when missing. apt-get update runs only
#                              when a package is missing.
#   gvol_python_env            chooses the Python that gvol is installed into and sets GVOL_PY
#                              (its interpreter) and GVOL_BIN (its console-scripts directory):
#                                - the active virtualenv, if python3 runs in one;
#                                - else python3 itself when its installation is not marked
#                                  EXTERNALLY-MANAGED (pyenv, a source build, CI images);
#                                - else (Debian's /usr/bin/python3, PEP 668) a venv at
#                                  ${GVOL_VENV:-/opt/gvol/venv}: we never pip-install into the
#                                  system Python, and never pass --break-system-packages.
#   gvol_install_project [EXTRAS]  pip install -e of this repo (with extras, e.g. "test").
#   gvol_link_scripts          /sbin/mount.gvol -> the console script; with a venv, also
#                              gvol, gvold, gvol-brickd in /usr/local/bin.
#
# Environment: PYTHON (default python3), GVOL_VENV (default /opt/gvol/venv).

GVOL_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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
    local py pkgs
    py=$(_gvol_py)
    pkgs=(fuse3 libfuse3-dev pkg-config gcc attr ca-certificates)
    if ! command -v "$py" >/dev/null 2>&1; then
        pkgs+=(python3)
        py=python3
    fi
    gvol_apt_install "${pkgs[@]}"
    command -v "$py" >/dev/null 2>&1 || gvol_die "$py not found"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || gvol_die "gvol needs Python >= 3.11; $py is $("$py" -V 2>&1)"
    # Python headers, to build pyfuse3 (only the system Python can lack them)
    if ! "$py" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        gvol_apt_install python3-dev
    fi
    if ! "$py" -m pip --version >/dev/null 2>&1; then
        gvol_apt_install python3-pip
    fi
    # /dev/fuse: load the module where the kernel has it as a module
    if [ ! -e /dev/fuse ]; then
        "${GVOL_SUDO[@]}" modprobe fuse 2>/dev/null || gvol_log "warning: /dev/fuse is missing (mounts will not work)"
    fi
}

gvol_python_env() {
    local py managed
    py=$(_gvol_py)
    if "$py" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        GVOL_PY=$(command -v "$py")                         # an active virtualenv
    else
        managed=$("$py" -c 'import os, sysconfig
print(int(os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED"))))')
        if [ "$managed" = 0 ]; then
            GVOL_PY=$("$py" -c 'import sys; print(sys.executable)')
        else
            local venv="${GVOL_VENV:-/opt/gvol/venv}"
            if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
                "$py" -c 'import ensurepip, venv' 2>/dev/null \
                    || gvol_apt_install "python3-venv" "python3.$("$py" -c 'import sys; print(sys.version_info[1])')-venv"
                gvol_log "creating a virtualenv at $venv (the system Python is externally managed)"
                "${GVOL_SUDO[@]}" mkdir -p "$(dirname "$venv")"
                "${GVOL_SUDO[@]}" "$py" -m venv "$venv" || gvol_die "cannot create a venv at $venv"
            fi
            GVOL_PY="$venv/bin/python"
        fi
    fi
    GVOL_BIN=$("$GVOL_PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    export GVOL_PY GVOL_BIN
    gvol_log "python: $GVOL_PY ($("$GVOL_PY" -V 2>&1))"
}

# gvol_install_project [EXTRAS]: pip install -e of this repository (+ extras).
# shellcheck disable=SC2120
gvol_install_project() {
    local target="$GVOL_REPO"
    [ -n "${1:-}" ] && target="${GVOL_REPO}[$1]"
    gvol_log "pip install -e $target"
    timeout 1800 "${GVOL_SUDO[@]}" env PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$GVOL_PY" -m pip install -q -e "$target" </dev/null \
        || gvol_die "pip install -e $target failed"
}

gvol_link_scripts() {
    local s
    if [ -x "$GVOL_BIN/mount.gvol" ]; then
        "${GVOL_SUDO[@]}" ln -sfn "$GVOL_BIN/mount.gvol" /sbin/mount.gvol
    else
        gvol_log "warning: $GVOL_BIN/mount.gvol not found; /sbin/mount.gvol not linked"
    fi
    case ":$PATH:" in
        *":$GVOL_BIN:"*) ;;
        *)
            for s in gvol gvold gvol-brickd mount.gvol; do
                [ -x "$GVOL_BIN/$s" ] && "${GVOL_SUDO[@]}" ln -sfn "$GVOL_BIN/$s" "/usr/local/bin/$s"
            done
            ;;
    esac
    return 0
}
