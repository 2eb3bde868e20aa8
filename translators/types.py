"""Value types shared by every translator: gfids, attributes, call context, fds, errors.

Everything here is plain data; nothing does I/O.
"""
from __future__ import annotations

import errno as _errno
import os
import stat as _stat
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, NewType

Gfid = NewType("Gfid", bytes)  # 16 raw bytes

ROOT_GFID = Gfid(b"\x00" * 15 + b"\x01")
NULL_GFID = Gfid(b"\x00" * 16)

# Internal xattrs live under this prefix on bricks; clients can neither see nor set them.
XATTR_PREFIX = "trusted.gvol."
XATTR_GFID = XATTR_PREFIX + "gfid"
XATTR_VOLUME_ID = XATTR_PREFIX + "volume-id"
XATTR_DHT = XATTR_PREFIX + "dht"
XATTR_LINKTO = XATTR_PREFIX + "dht.linkto"
# parent gfid (16 bytes) + name, one per name, on a file that needs heal (cluster/replicate
# records it when it accuses a brick: a file created or written while a brick is away). Lets a
# brick tell the path of a file it knows by gfid (heal info); a name since removed is recognised
# by checking it. Not on every file: with the gfid it would no longer fit in a 256-byte ext4
# inode, and a cold `ls -l` would read one more block per file (measured: 2.5x slower).
XATTR_GFID2PATH = XATTR_PREFIX + "gfid2path."
# virtual, read-only, internal: the object's path on this brick, computed from the handles
XATTR_PATH = XATTR_PREFIX + "path"
# xdata key (cluster/replicate -> features/index): parent + name of the fop's object, to be
# recorded as its gfid2path xattr along with the fop
XDATA_NAME = "gvol.name"


def gfid2path_xattr(parent: bytes, name: bytes) -> tuple[str, bytes]:
    """The gfid2path xattr (name, value) recording `name` in directory `parent`."""
    return f"{XATTR_GFID2PATH}{zlib.crc32(parent + name):08x}", parent + name

# xdata key of unlink: remove the name only if it is still this gfid (else ESTALE). DHT sends it
# when it unlinks on the strength of an earlier lookup instead of a fresh one.
XDATA_EXPECT_GFID = "gvol.expect-gfid"

# Name reservations of performance/create-behind, kept by cluster/replicate in the client and
# never sent to a brick: an entrylk in RESERVE_DOMAIN on (parent, name) is granted while this
# client's eager lock on the directory is held and a lookup under it found the name absent on
# every brick (no one else can create it meanwhile: an O_EXCL create may then wait until
# close); the create that carries XDATA_RESERVED uses that lock and ends the reservation.
RESERVE_DOMAIN = "gvol.create-behind"
XDATA_RESERVED = "gvol.reserved"

# Internal callers (DHT, AFR, heal, rebalance) use negative pids, as GlusterFS does;
# only they may touch trusted.gvol.* xattrs.
PID_INTERNAL = -1


def new_gfid() -> Gfid:
    return Gfid(uuid.uuid4().bytes)


def gfid_str(g: bytes) -> str:
    return str(uuid.UUID(bytes=bytes(g)))


def gfid_from_str(s: str) -> Gfid:
    return Gfid(uuid.UUID(s).bytes)


def gfid_to_ino(g: bytes) -> int:
    """Stable inode number: low 64 bits of the gfid (root maps to 1)."""
    ino = int.from_bytes(g[8:16], "big")
    return ino or 1


class FopError(Exception):
    """A fop failed with an errno. The only exception translators raise on purpose."""

    __slots__ = ("errno", "msg")

    def __init__(self, err: int, msg: str = "") -> None:
        self.errno = err
        self.msg = msg
        super().__init__(err, msg or os.strerror(err))

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"{name}: {self.msg}" if self.msg else f"{name} ({os.strerror(self.errno)})"


@dataclass(frozen=True, slots=True)
class Iatt:
    """Portable stat of one object (GlusterFS's iatt). Times are integer nanoseconds."""

    gfid: bytes
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int
    blksize: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int

    @property
    def ino(self) -> int:
        return gfid_to_ino(self.gfid)

    @property
    def is_dir(self) -> bool:
        return _stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return _stat.S_ISREG(self.mode)

    @property
    def is_lnk(self) -> bool:
        return _stat.S_ISLNK(self.mode)

    def to_wire(self) -> list:
        return [self.gfid, self.mode, self.nlink, self.uid, self.gid, self.rdev, self.size,
                self.blocks, self.blksize, self.atime_ns, self.mtime_ns, self.ctime_ns]

    @classmethod
    def from_wire(cls, v: list) -> Iatt:
        return cls(*v)


@dataclass(frozen=True, slots=True)
class Dirent:
    """One readdir entry. `off` is the cookie to resume *after* this entry.
    `iatt` is filled by readdir with plus=True (None otherwise); `xattrs` holds what was asked."""

    name: bytes
    off: int
    type: int  # S_IFMT bits of the entry
    iatt: Iatt | None = None
    xattrs: dict | None = None

    def to_wire(self) -> list:
        return [self.name, self.off, self.type,
                None if self.iatt is None else self.iatt.to_wire(), self.xattrs]

    @classmethod
    def from_wire(cls, v: list) -> Dirent:
        return cls(v[0], v[1], v[2], None if v[3] is None else Iatt.from_wire(v[3]), v[4])


@dataclass(frozen=True, slots=True)
class Statvfs:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    namemax: int
    fsid: int  # identifies the underlying filesystem (bricks sharing one fs count once)

    def to_wire(self) -> list:
        return [self.bsize, self.frsize, self.blocks, self.bfree, self.bavail, self.files,
                self.ffree, self.favail, self.namemax, self.fsid]

    @classmethod
    def from_wire(cls, v: list) -> Statvfs:
        return cls(*v)


@dataclass(frozen=True, slots=True)
class Call:
    """Who is asking: carried by every fop (GlusterFS's call stack root)."""

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    pid: int = 0
    lk_owner: bytes = b""
    # Set by protocol/server from the connection, never taken from the wire: which client
    # connection this call came from (locks are released when it disconnects).
    client: str = ""

    @property
    def internal(self) -> bool:
        return self.pid < 0

    def to_wire(self) -> list:
        return [self.uid, self.gid, list(self.groups), self.pid, self.lk_owner]

    @classmethod
    def from_wire(cls, v: list) -> Call:
        return cls(v[0], v[1], tuple(v[2]), v[3], v[4])


ROOT_CALL = Call()
INTERNAL_CALL = Call(pid=PID_INTERNAL)


@dataclass(eq=False, slots=True)
class Fd:
    """An open file or directory as one graph sees it. Each translator keeps its own
    per-fd state in `ctx[translator]` (the remote fd number in protocol/client, the
    OS fd in storage/posix, the chosen subvolume in cluster/dht...)."""

    gfid: bytes
    flags: int = 0
    is_dir: bool = False
    ctx: dict[Any, Any] = field(default_factory=dict)
