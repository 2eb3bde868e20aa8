"""The brick directory layout: what makes a directory a brick, and how objects are found in it.

    <brick>/                      the root: trusted.gvol.volume-id and the root gfid
    <brick>/.gvol/handles/<xx>/<gfid>   one handle per object (xx = the gfid's first byte in hex):
                                  files, symlinks and special files: a hard link to the object;
                                  directories: a symlink ../<p0p1>/<parent-gfid>/<basename>;
                                  the root's is ../../..
    <brick>/.gvol/indices/        features/index's heal indices
    <brick>/.gvol/tmp/            objects being made (storage/posix moves them into place)

gvold prepares a brick with `prepare_brick` when a volume is created; storage/posix checks it with
`check_brick` and completes it with `ensure_layout` when it starts serving it. Neither needs the
storage translator.
"""
from __future__ import annotations

import errno
import os
import stat as S
import uuid
from typing import Any

from ..types import ROOT_GFID, XATTR_GFID, XATTR_VOLUME_ID, gfid_str
from ..xlator import GraphError


class BrickError(GraphError):
    """The brick directory cannot be served (missing, not a directory, wrong or no volume-id)."""


GVOL_DIR = ".gvol"
GVOL_NAME = b".gvol"  # GVOL_DIR as an entry name
_ROOT_LINK = b"../../.."  # the root's handle


def handle_rel(g: bytes) -> bytes:
    """Handle path relative to .gvol/handles."""
    h = g.hex()
    return f"{h[:2]}/{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


def dir_link(parent: bytes, name: bytes) -> bytes:
    return b"../" + handle_rel(parent) + b"/" + name


def parse_dir_link(target: bytes) -> tuple[bytes, bytes] | None:
    """'../xx/<gfid>/<name>' -> (parent gfid, name); None if it is not a handle link."""
    if len(target) < 44 or not target.startswith(b"../") or target[42:43] != b"/":
        return None
    try:
        pg = uuid.UUID(target[6:42].decode()).bytes
    except ValueError:
        return None
    name = target[43:]
    if not name or b"/" in name:
        return None
    return pg, name


def _volume_uuid(volume_id: Any) -> bytes:
    if isinstance(volume_id, (bytes, bytearray)) and len(volume_id) == 16:
        return bytes(volume_id)
    if isinstance(volume_id, uuid.UUID):
        return volume_id.bytes
    try:
        return uuid.UUID(str(volume_id)).bytes
    except ValueError:
        raise BrickError(f"volume-id {volume_id!r} is not a uuid") from None


def _read_volume_id(path: str) -> bytes | None:
    try:
        return os.getxattr(path, XATTR_VOLUME_ID)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def ensure_layout(path: str) -> None:
    """Root gfid, .gvol/{handles,indices,tmp}, the root handle. Idempotent."""
    try:
        g = os.getxattr(path, XATTR_GFID)
    except OSError as e:
        if e.errno != errno.ENODATA:
            raise
        os.setxattr(path, XATTR_GFID, ROOT_GFID)
    else:
        if g != ROOT_GFID:
            raise BrickError(f"brick {path}: its root has gfid {gfid_str(g)} instead of the "
                             f"root gfid {gfid_str(ROOT_GFID)}: this directory is a subdirectory "
                             "of some other brick, not a brick root")
    for sub in (GVOL_DIR, f"{GVOL_DIR}/handles", f"{GVOL_DIR}/indices", f"{GVOL_DIR}/tmp"):
        try:
            os.mkdir(os.path.join(path, sub), 0o700)
        except FileExistsError:
            pass
    handles = os.path.join(path, GVOL_DIR, "handles")
    if len(os.listdir(handles)) < 256:
        for i in range(256):  # the fan-out level
            try:
                os.mkdir(os.path.join(handles, f"{i:02x}"), 0o700)
            except FileExistsError:
                pass
    rel = handle_rel(ROOT_GFID).decode()
    hdir = os.path.join(path, GVOL_DIR, "handles", os.path.dirname(rel))
    os.makedirs(hdir, 0o700, exist_ok=True)
    link = os.path.join(path, GVOL_DIR, "handles", rel)
    try:
        if os.readlink(link) != _ROOT_LINK.decode():
            os.unlink(link)
            os.symlink(_ROOT_LINK, link.encode())
    except FileNotFoundError:
        os.symlink(_ROOT_LINK, link.encode())


def prepare_brick(path: str, volume_id: Any) -> None:
    """Make `path` a brick of the volume (gvold calls this at volume create): write the
    volume-id and the root gfid, create .gvol/. Creates the directory if it does not exist.
    Refuses a directory that belongs to another volume or lies inside another brick."""
    vid = _volume_uuid(volume_id)
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise BrickError(f"brick {path} is not a directory")
    parent = os.path.dirname(path)
    while True:
        if os.path.isdir(parent):
            try:
                other = _read_volume_id(parent)
            except OSError:
                other = None
            if other is not None:
                raise BrickError(f"brick {path} lies inside {parent}, a brick of volume "
                                 f"{gfid_str(other)}: choose a directory outside every other brick")
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    os.makedirs(path, 0o755, exist_ok=True)
    have = _read_volume_id(path)
    if have is not None and have != vid:
        raise BrickError(f"brick {path} already belongs to volume {gfid_str(have)}, not "
                         f"{gfid_str(vid)}: "
                         "delete that volume first, or clear its xattrs and .gvol if it is gone")
    if have is None:
        os.setxattr(path, XATTR_VOLUME_ID, vid)
    ensure_layout(path)


def check_brick(path: str, vid: bytes) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BrickError(f"brick {path} does not exist: if a disk should be mounted there, mount "
                         "it; if the brick is new, create the volume with gvol") from None
    if not S.S_ISDIR(st.st_mode):
        raise BrickError(f"brick {path} is not a directory")
    have = _read_volume_id(path)
    if have is None:
        raise BrickError(f"brick {path} has no {XATTR_VOLUME_ID}: it is not a brick of this "
                         "volume, or the disk that should be mounted there is not mounted")
    if have != vid:
        raise BrickError(f"brick {path} belongs to volume {gfid_str(have)}, not to "
                         f"{gfid_str(vid)}: the "
                         "wrong disk is mounted there, or the volume was re-created")
