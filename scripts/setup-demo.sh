#!/usr/bin/env bash
# README's first command: a working gvol demo on a fresh Debian machine, as root.
#
#   sudo bash scripts/setup-demo.sh
#
# 1. installs what is missing (scripts/install-deps.sh: Debian packages, then `pip install -e .`
#    of this repo, pinned to requirements.lock, into a venv at /opt/gvol/venv);
# 2. links /sbin/mount.gvol (so `mount -t gvol` works) and gvol, gvold, gvol-brickd into
#    /usr/local/bin;
# 3. starts gvold (state /var/lib/gvol, logs /var/log/gvol) unless one is already answering;
# 4. creates the distributed volume `demo` on two local bricks (/srv/gvol/demo/b1 and b2, or
#    /var/tmp/gvol/demo/b1 and b2 where /srv is not usable), starts it, and mounts it at
#    /mnt/gvol-demo.
# Running it again changes nothing that is already in place.
#
# Environment: GVOL_STATE_DIR (/var/lib/gvol), GVOL_PORT (gvold's default), GVOL_DEMO_MNT
# (/mnt/gvol-demo), GVOL_DEMO_BRICKS (brick base directory), PYTHON (the Python the venv is made
# from, >= 3.11), GVOL_VENV (/opt/gvol/venv), GVOL_DEPS=newest (newest releases, not the lock).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    echo "setup-demo.sh must run as root" >&2
    exit 1
fi

# shellcheck source=scripts/install-deps.sh
source scripts/install-deps.sh
gvol_install_system_deps
gvol_make_venv "${GVOL_VENV:-/opt/gvol/venv}"
gvol_install_project
gvol_link_scripts

VOL=demo
MNT=${GVOL_DEMO_MNT:-/mnt/gvol-demo}
export GVOL_STATE_DIR=${GVOL_STATE_DIR:-/var/lib/gvol}
[ -n "${GVOL_PORT:-}" ] && export GVOL_PORT

gvol() { timeout 120 "$GVOL_PY" -m volmgr.cli "$@" </dev/null; }

# ---------------------------------------------------------------- gvold
if gvol volume list >/dev/null 2>&1; then
    gvol_log "gvold is running (state $GVOL_STATE_DIR); reusing it"
else
    if [ -d /run/systemd/system ] && systemctl cat gvold.service >/dev/null 2>&1; then
        gvol_log "starting gvold (systemctl start gvold)"
        timeout 120 systemctl start gvold.service
    else
        gvol_log "starting gvold --state-dir $GVOL_STATE_DIR"
        # gvold detaches by itself and returns once it is serving
        timeout 120 "$GVOL_PY" -m volmgr.daemon --state-dir "$GVOL_STATE_DIR" </dev/null \
            || gvol_die "gvold did not start (see /var/log/gvol/gvold.log)"
    fi
    for _ in $(seq 1 60); do
        gvol volume list >/dev/null 2>&1 && break
        sleep 0.5
    done
    gvol volume list >/dev/null 2>&1 || gvol_die "gvold does not answer (see /var/log/gvol/gvold.log)"
fi

# ---------------------------------------------------------------- bricks and volume
usable_brick_base() {  # a directory we can create, whose filesystem takes trusted.* xattrs
    local d=$1
    mkdir -p "$d/b1" "$d/b2" 2>/dev/null || return 1
    setfattr -n trusted.gvol.probe -v 1 "$d" 2>/dev/null || return 1
    setfattr -x trusted.gvol.probe "$d" 2>/dev/null || true
}

HOST=$(hostname)
getent hosts "$HOST" >/dev/null 2>&1 || HOST=127.0.0.1

if gvol volume info "$VOL" >/dev/null 2>&1; then
    gvol_log "volume $VOL exists; reusing it"
else
    BASE=${GVOL_DEMO_BRICKS:-}
    if [ -z "$BASE" ]; then
        for cand in /srv/gvol/demo /var/tmp/gvol/demo; do
            if usable_brick_base "$cand"; then BASE=$cand; break; fi
        done
        [ -n "$BASE" ] || gvol_die "neither /srv/gvol/demo nor /var/tmp/gvol/demo can hold bricks"
    else
        usable_brick_base "$BASE" || gvol_die "$BASE cannot hold bricks (trusted.* xattrs?)"
    fi
    gvol_log "gvol volume create $VOL $HOST:$BASE/b1 $HOST:$BASE/b2 force"
    gvol volume create "$VOL" "$HOST:$BASE/b1" "$HOST:$BASE/b2" force
fi

is_started() { gvol volume info "$VOL" 2>/dev/null | grep -Eqi 'status:[[:space:]]*started'; }
if is_started; then
    gvol_log "volume $VOL is started"
else
    gvol_log "gvol volume start $VOL"
    gvol volume start "$VOL" || is_started || gvol_die "cannot start volume $VOL"
fi

# ---------------------------------------------------------------- mount
in_mounts() { awk -v m="$MNT" '$5 == m {found=1} END {exit !found}' /proc/self/mountinfo; }
if in_mounts && ! stat -t "$MNT" >/dev/null 2>&1; then
    gvol_log "$MNT is a dead mount (its client is gone); unmounting it"
    fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT" || true
fi
if in_mounts; then
    gvol_log "$MNT is already mounted"
else
    mkdir -p "$MNT"
    gvol_log "gvol mount $VOL $MNT"
    gvol mount "$VOL" "$MNT" || gvol_die "mount failed (see /var/log/gvol/mnt-*.log)"
    for _ in $(seq 1 40); do in_mounts && break; sleep 0.25; done
    in_mounts || gvol_die "$MNT did not appear as mounted"
fi

BRICKS=$(gvol volume info "$VOL" 2>/dev/null | grep -Ei '^[[:space:]]*brick[0-9]+:' || true)
B1=$(sed -n 's/^[[:space:]]*Brick1:[[:space:]]*[^:]*://p' <<<"$BRICKS")
cat <<EOF

gvol is running: volume '$VOL' (distributed over two bricks) is mounted at $MNT.
${BRICKS:+
$BRICKS
}
Use it like any directory:
    cp -a /usr/share/doc $MNT/ && ls -l $MNT/doc | head
    ls ${B1:-<brick>}/doc | head    # each brick holds about half of the files, at their real paths
    gvol volume info $VOL
    gvol volume status $VOL

Mount it elsewhere too:     mount -t gvol $HOST:/$VOL /mnt/other
Unmount:                    umount $MNT            (or: fusermount3 -u $MNT)
Stop the volume:            gvol volume stop $VOL
Delete it (data stays on the bricks): gvol volume delete $VOL
Stop gvold:                 kill \$(cat $GVOL_STATE_DIR/gvold.lock)   (bricks keep running until the volume is stopped)
Logs:                       /var/log/gvol/
Run this script again at any time: it only does what is missing.
EOF
