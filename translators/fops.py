"""The one fop table.

Every file operation is declared here exactly once: its name, its opcode on the wire, what it
addresses (an entry = parent gfid + name, an inode = gfid, an fd, or nothing), its request and reply
dataclasses, and which field (if any) is bulk data that travels raw on the wire.

The translator base class (translators/xlator.py), the wire codec (translators/protocol/codec.py),
the server dispatch and debug/io-stats are all derived from `FOPS`; so are the per-fop decisions of
cluster/replicate, features/index and storage/posix, from the facts in each entry (see `Fop`).
Add a fop here and they follow (tests/test_fop_table.py adds some to a copy of the table).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .types import Dirent, Fd, Iatt, Statvfs

# setattr `valid` bits (which fields of a SetattrReq to apply)
SET_MODE = 1
SET_UID = 2
SET_GID = 4
SET_SIZE = 8
SET_ATIME = 16
SET_MTIME = 32
SET_ATIME_NOW = 64
SET_MTIME_NOW = 128

# xattrop operations
XATTROP_ADD_ARRAY = 0  # element-wise add of big-endian signed 32-bit integers
XATTROP_ADD_ARRAY64 = 1  # same with 64-bit integers
XATTROP_GET_AND_SET = 4

# lock commands/types for inodelk/entrylk/lk (fcntl values for the types)
LK_GETLK = 5
LK_SETLK = 6
LK_SETLKW = 7
F_RDLCK = 0
F_WRLCK = 1
F_UNLCK = 2
ENTRYLK_LOCK = 0
ENTRYLK_UNLOCK = 1
ENTRYLK_LOCK_NB = 2


# `xdata` (GlusterFS's side channel) on the requests of modifying fops and xattrop: a flat dict
# of str -> bytes/str/int/bool that translators use to ask a brick-side translator for extra
# work done together with the fop, in the same round trip. None (the default) = nothing extra.
# Keys are namespaced by the translator that consumes them and removes them before winding on;
# see translators/changelog.py for the ones cluster/afr uses (changelog pre-op folded into the
# fop, lock-on-create, unlock-after-post-op) and features/index.py for how a brick applies them.


class Kind(Enum):
    NONE = "none"
    ENTRY = "entry"  # (parent gfid, name)
    INODE = "inode"  # gfid
    FD = "fd"  # an open fd


# ---------------------------------------------------------------- requests
@dataclass(frozen=True, slots=True)
class LookupReq:
    """Named lookup (parent + name) or nameless lookup (gfid only).
    `xattrs` names the xattrs to return with the attributes ("*" = all)."""
    parent: bytes | None = None
    name: bytes | None = None
    gfid: bytes | None = None
    xattrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InodeReq:
    gfid: bytes


@dataclass(frozen=True, slots=True)
class FdReq:
    fd: Fd
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class EntryReq:
    parent: bytes
    name: bytes
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class SetattrReq:
    gfid: bytes
    valid: int
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class FsetattrReq:
    fd: Fd
    valid: int
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class AccessReq:
    gfid: bytes
    mask: int


@dataclass(frozen=True, slots=True)
class MknodReq:
    parent: bytes
    name: bytes
    mode: int
    rdev: int
    gfid: bytes
    umask: int = 0
    xattrs: dict | None = None  # set atomically with creation (internal callers only)
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class MkdirReq:
    parent: bytes
    name: bytes
    mode: int
    gfid: bytes
    umask: int = 0
    xattrs: dict | None = None
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class SymlinkReq:
    parent: bytes
    name: bytes
    target: bytes
    gfid: bytes
    xattrs: dict | None = None
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class RenameReq:
    oldparent: bytes
    oldname: bytes
    newparent: bytes
    newname: bytes
    flags: int = 0  # RENAME_NOREPLACE / RENAME_EXCHANGE
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class LinkReq:
    gfid: bytes
    newparent: bytes
    newname: bytes
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class CreateReq:
    """Create and open a regular file. `data` is its first content, written before the name
    appears; with `close` the brick keeps no fd (the reply's fd is None): a whole small file
    in one request (performance/create-behind sends these)."""
    parent: bytes
    name: bytes
    flags: int
    mode: int
    gfid: bytes
    umask: int = 0
    xattrs: dict | None = None
    xdata: dict | None = None
    data: bytes = b""
    close: bool = False


@dataclass(frozen=True, slots=True)
class OpenReq:
    """`prefetch` > 0: if the file is regular and at most that long, the reply carries its
    whole content (protocol/client serves the first reads of a small file from it)."""
    gfid: bytes
    flags: int
    prefetch: int = 0


@dataclass(frozen=True, slots=True)
class ReadReq:
    fd: Fd
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class WriteReq:
    fd: Fd
    offset: int
    data: bytes
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class FsyncReq:
    fd: Fd
    datasync: bool = False


@dataclass(frozen=True, slots=True)
class ReaddirReq:
    """Read entries after cookie `offset` (0 = from the start), up to about `size` bytes.
    plus=True returns attributes (and the requested xattrs) of every entry (readdirplus)."""
    fd: Fd
    offset: int
    size: int = 65536
    plus: bool = False
    xattrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetxattrReq:
    gfid: bytes
    name: str
    value: bytes
    flags: int = 0
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class FsetxattrReq:
    fd: Fd
    name: str
    value: bytes
    flags: int = 0
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class GetxattrReq:
    gfid: bytes
    name: str


@dataclass(frozen=True, slots=True)
class FgetxattrReq:
    fd: Fd
    name: str


@dataclass(frozen=True, slots=True)
class RemovexattrReq:
    gfid: bytes
    name: str
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class TruncateReq:
    gfid: bytes
    size: int
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class FtruncateReq:
    fd: Fd
    size: int
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class FallocateReq:
    fd: Fd
    mode: int
    offset: int
    length: int
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class RangeReq:
    fd: Fd
    offset: int
    length: int
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class SeekReq:
    fd: Fd
    offset: int
    whence: int  # os.SEEK_DATA / os.SEEK_HOLE


@dataclass(frozen=True, slots=True)
class LkReq:
    """POSIX byte-range lock; the owner is call.lk_owner. length 0 = to end of file."""
    fd: Fd
    cmd: int  # LK_GETLK / LK_SETLK / LK_SETLKW
    type: int  # F_RDLCK / F_WRLCK / F_UNLCK
    start: int
    length: int
    pid: int = 0


@dataclass(frozen=True, slots=True)
class InodelkReq:
    """Internal byte-range lock on an inode in a named domain; owner = call.lk_owner."""
    gfid: bytes
    domain: str
    cmd: int
    type: int
    start: int = 0
    length: int = 0


@dataclass(frozen=True, slots=True)
class EntrylkReq:
    """Internal lock on a name in a directory (name None = the whole directory)."""
    parent: bytes
    name: bytes | None
    domain: str
    cmd: int  # ENTRYLK_LOCK / ENTRYLK_UNLOCK / ENTRYLK_LOCK_NB
    type: int = F_WRLCK


@dataclass(frozen=True, slots=True)
class XattropReq:
    gfid: bytes
    op: int
    xattrs: dict  # name -> bytes operand
    xdata: dict | None = None


@dataclass(frozen=True, slots=True)
class RchecksumReq:
    fd: Fd
    offset: int
    length: int


# ---------------------------------------------------------------- replies
@dataclass(frozen=True, slots=True)
class Empty:
    pass


EMPTY = Empty()


@dataclass(frozen=True, slots=True)
class EntryRep:
    iatt: Iatt
    xattrs: dict | None = None


@dataclass(frozen=True, slots=True)
class AttrRep:
    iatt: Iatt


@dataclass(frozen=True, slots=True)
class ReadlinkRep:
    target: bytes


@dataclass(frozen=True, slots=True)
class CreateRep:
    iatt: Iatt
    fd: Fd | None  # None after CreateReq.close


@dataclass(frozen=True, slots=True)
class OpenRep:
    fd: Fd
    data: bytes = b""  # open with prefetch: the whole file, when it was small enough


@dataclass(frozen=True, slots=True)
class ReadRep:
    data: bytes


@dataclass(frozen=True, slots=True)
class WriteRep:
    size: int
    iatt: Iatt  # attributes after the write


@dataclass(frozen=True, slots=True)
class ReaddirRep:
    entries: list[Dirent]
    eof: bool = False


@dataclass(frozen=True, slots=True)
class StatfsRep:
    statvfs: Statvfs


@dataclass(frozen=True, slots=True)
class XattrRep:
    value: bytes


@dataclass(frozen=True, slots=True)
class ListxattrRep:
    names: list[str]


@dataclass(frozen=True, slots=True)
class SeekRep:
    offset: int


@dataclass(frozen=True, slots=True)
class LkRep:
    type: int
    start: int
    length: int
    pid: int


@dataclass(frozen=True, slots=True)
class XattropRep:
    xattrs: dict


@dataclass(frozen=True, slots=True)
class RchecksumRep:
    weak: int
    strong: bytes


# ---------------------------------------------------------------- the table
# What of an object a fop reads or changes, in the changelog's terms (translators/changelog.py):
D, M, E = "data", "metadata", "entry"


@dataclass(frozen=True, slots=True)
class Fop:
    """One fop and the facts about it that translators act on, so that a new fop is one entry
    here: the base class, the codec, the server, io-stats, dht, cluster/afr (which route it
    takes: read from one good copy, replicate in a transaction, create, lock), features/index
    (which objects an xdata changelog applies to) and storage/posix (whether it may run in the
    event loop) all follow from these fields."""
    name: str
    opcode: int
    kind: Kind
    req: type
    rep: type
    req_bulk: str | None = None  # field sent as raw bytes after the header
    rep_bulk: str | None = None
    reads: tuple[str, ...] = ()  # what of its object the reply depends on (D, M, E)
    changes: tuple[str, ...] = ()  # what of its object it changes (entry fops: the parent's E)
    creates: tuple[str, ...] = ()  # makes a new object (gfid in the request) holding these
    object: str | None = None  # request field naming the existing object it acts on ("fd": the
    #                            fd's object)
    parent: str | None = None  # request field naming the directory whose entries it changes
    newparent: str | None = None  # ... and the second one (rename's target directory)
    lock: bool = False  # a lock request of the layers above (POSIX lk, inodelk, entrylk)
    inline: bool = False  # storage/posix may run it in the event loop while the brick is idle
    #                       (short: no reads, fsyncs, truncates, allocations, listings)
    cached: bool = False  # storage/posix first tries it without blocking, from the kernel's
    #                       caches, in the event loop (read-only metadata fops)

    @property
    def modifies(self) -> bool:
        """Changes data, metadata or names (replication/heal bookkeeping)."""
        return bool(self.changes or self.creates)


_E, _I, _F = Kind.ENTRY, Kind.INODE, Kind.FD
_P = "parent"

FOP_LIST: tuple[Fop, ...] = (
    Fop("lookup", 1, _E, LookupReq, EntryRep, inline=True, cached=True),
    Fop("stat", 2, _I, InodeReq, AttrRep, reads=(D, M), object="gfid", inline=True,
        cached=True),
    Fop("fstat", 3, _F, FdReq, AttrRep, reads=(D, M), object="fd"),
    Fop("setattr", 4, _I, SetattrReq, AttrRep, changes=(M,), object="gfid",
        inline=True),
    Fop("fsetattr", 5, _F, FsetattrReq, AttrRep, changes=(M,), object="fd",
        inline=True),
    Fop("access", 6, _I, AccessReq, Empty, reads=(M,), object="gfid", inline=True, cached=True),
    Fop("readlink", 7, _I, InodeReq, ReadlinkRep, reads=(M,), object="gfid", inline=True),
    Fop("mknod", 8, _E, MknodReq, EntryRep, changes=(E,), creates=(M,),
        parent=_P, inline=True),
    Fop("mkdir", 9, _E, MkdirReq, EntryRep, changes=(E,), creates=(M, E),
        parent=_P, inline=True),
    Fop("unlink", 10, _E, EntryReq, Empty, changes=(E,), parent=_P, inline=True),
    Fop("rmdir", 11, _E, EntryReq, Empty, changes=(E,), parent=_P, inline=True),
    Fop("symlink", 12, _E, SymlinkReq, EntryRep, changes=(E,), creates=(M,),
        parent=_P, inline=True),
    Fop("rename", 13, _E, RenameReq, Empty, changes=(E,), parent="oldparent",
        newparent="newparent", inline=True),
    Fop("link", 14, _E, LinkReq, EntryRep, changes=(E,), object="gfid",
        parent="newparent", inline=True),
    Fop("create", 15, _E, CreateReq, CreateRep, req_bulk="data", changes=(E,),
        creates=(D, M), parent=_P, inline=True),
    Fop("open", 16, _I, OpenReq, OpenRep, rep_bulk="data", object="gfid", inline=True,
        cached=True),
    Fop("read", 17, _F, ReadReq, ReadRep, rep_bulk="data", reads=(D,), object="fd"),
    Fop("write", 18, _F, WriteReq, WriteRep, req_bulk="data", changes=(D,),
        object="fd", inline=True),
    Fop("flush", 19, _F, FdReq, Empty, object="fd"),
    Fop("fsync", 20, _F, FsyncReq, Empty, object="fd"),
    Fop("release", 21, _F, FdReq, Empty, object="fd"),
    Fop("opendir", 22, _I, InodeReq, OpenRep, object="gfid", inline=True),
    Fop("readdir", 23, _F, ReaddirReq, ReaddirRep, reads=(E,), object="fd"),
    Fop("releasedir", 24, _F, FdReq, Empty, object="fd"),
    Fop("fsyncdir", 25, _F, FsyncReq, Empty, object="fd"),
    Fop("statfs", 26, _I, InodeReq, StatfsRep),
    Fop("setxattr", 27, _I, SetxattrReq, Empty, changes=(M,), object="gfid",
        inline=True),
    Fop("getxattr", 28, _I, GetxattrReq, XattrRep, reads=(M,), object="gfid", inline=True,
        cached=True),
    Fop("listxattr", 29, _I, InodeReq, ListxattrRep, reads=(M,), object="gfid", inline=True),
    Fop("removexattr", 30, _I, RemovexattrReq, Empty, changes=(M,),
        object="gfid", inline=True),
    Fop("fgetxattr", 31, _F, FgetxattrReq, XattrRep, reads=(M,), object="fd"),
    Fop("fsetxattr", 32, _F, FsetxattrReq, Empty, changes=(M,), object="fd",
        inline=True),
    Fop("truncate", 33, _I, TruncateReq, AttrRep, changes=(D,), object="gfid"),
    Fop("ftruncate", 34, _F, FtruncateReq, AttrRep, changes=(D,), object="fd"),
    Fop("fallocate", 35, _F, FallocateReq, AttrRep, changes=(D,), object="fd"),
    Fop("discard", 36, _F, RangeReq, AttrRep, changes=(D,), object="fd"),
    Fop("zerofill", 37, _F, RangeReq, AttrRep, changes=(D,), object="fd"),
    Fop("seek", 38, _F, SeekReq, SeekRep, reads=(D,), object="fd"),
    Fop("lk", 39, _F, LkReq, LkRep, object="fd", lock=True),
    Fop("inodelk", 40, _I, InodelkReq, Empty, object="gfid", lock=True),
    Fop("entrylk", 41, _E, EntrylkReq, Empty, lock=True),
    Fop("xattrop", 42, _I, XattropReq, XattropRep, object="gfid", inline=True),
    Fop("rchecksum", 43, _F, RchecksumReq, RchecksumRep, reads=(D,), object="fd"),
)

FOPS: dict[str, Fop] = {f.name: f for f in FOP_LIST}
BY_OPCODE: dict[int, Fop] = {f.opcode: f for f in FOP_LIST}

assert len(FOPS) == len(FOP_LIST) and len(BY_OPCODE) == len(FOP_LIST), "duplicate fop"

# Fops that open an fd (the reply's fd becomes an open handle) and the one that closes it.
OPENS_FD = frozenset({"create", "open", "opendir"})
CLOSES_FD = frozenset({"release", "releasedir"})
