"""storage/posix: the brick directory.

Every object on a brick carries a 16-byte gfid in `trusted.gvol.gfid` and can be reached by gfid
alone through the handle store `.gvol/handles/<g0g1>/<gfid>` (one fan-out level of 256 directories,
made with the brick: a second level, as GlusterFS's `.glusterfs/xx/yy`, would cost a mkdir for
nearly every new file of a young brick, half a millisecond of inode allocation on ext4):

- files, symlinks and special files: the handle is a hard link to the object;
- directories: a symlink `../<p0p1>/<parent-gfid>/<basename>`; the root's is `../../..`.

Resolution never follows a client's symlink and never leaves the brick: a directory gfid is resolved
by reading the chain of handle symlinks ourselves and opening each basename with O_NOFOLLOW relative
to its parent's fd, checking the gfid xattr of what we opened (so directories of any depth work: the
kernel's 40-symlink limit never applies). Open directory fds are kept in a small LRU (`_DirCache`),
so an entry fop usually finds its parent's fd with one dict lookup. Names are applied to that fd
with the `*at()` calls; xattrs of a name in a directory go through `/proc/self/fd/<dirfd>/<name>`.

Creation is atomic with the gfid: regular files are made with O_TMPFILE, get their xattrs, owner
and handle, and only then a name (linkat); directories, symlinks and special files are made in
`.gvol/tmp/`, completed there and moved into place with renameat2(RENAME_NOREPLACE). A lookup
therefore never sees an entry without its gfid.

Threads: a trio -> worker thread -> trio hop costs about 100 us on this machine class, while a
metadata syscall on a cached inode costs 1-2 us (fstat 0.9, fgetxattr 1.1, lstat 1.7, open+close
2.1, pread of 4 KiB from the page cache 0.4). Blocking work runs in threads through the named
limiter `self.limiter` (option thread-count), each fop's syscalls batched into one hop; calls on an
already open fd that cannot wait for the disk run inline: fstat, fgetxattr, flush, statfs
(fstatvfs), release of a still-linked file, readdir without attributes from the directory
snapshot, and reads that the page cache can serve entirely (preadv with RWF_NOWAIT, falling back
to a thread). open of a regular file runs inline too when its name (remembered from the lookup
that usually precedes it, checked against the gfid xattr) or its handle is in the dentry cache,
and the content it prefetches (OpenReq.prefetch) is in the page cache; a lookup that had to read
the disk for a small regular file starts reading its content (POSIX_FADV_WILLNEED) for that open.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat as S
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from typing import Any

import trio

from ..fops import (
    EMPTY,
    FOPS,
    SET_ATIME,
    SET_ATIME_NOW,
    SET_GID,
    SET_MODE,
    SET_MTIME,
    SET_MTIME_NOW,
    SET_SIZE,
    SET_UID,
    XATTROP_ADD_ARRAY,
    XATTROP_ADD_ARRAY64,
    XATTROP_GET_AND_SET,
    AttrRep,
    CreateRep,
    EntryRep,
    Fop,
    ListxattrRep,
    OpenRep,
    RchecksumRep,
    ReaddirRep,
    ReadlinkRep,
    ReadRep,
    SeekRep,
    StatfsRep,
    WriteRep,
    XattropRep,
    XattrRep,
)
from ..types import (
    NULL_GFID,
    ROOT_GFID,
    XATTR_GFID,
    XATTR_GFID2PATH,
    XATTR_PATH,
    XATTR_PREFIX,
    XATTR_VOLUME_ID,
    XDATA_EXPECT_GFID,
    Call,
    Dirent,
    Fd,
    FopError,
    Iatt,
    Statvfs,
    gfid2path_xattr,
    gfid_str,
)
from ..xlator import GraphError, Option, Translator, register
from .brickdir import (
    GVOL_DIR,
    GVOL_NAME,
    check_brick,
    dir_link,
    ensure_layout,
    handle_rel,
    parse_dir_link,
)
from .brickdir import prepare_brick as prepare_brick  # for callers that make and serve a brick
from .syscalls import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    WOULD_BLOCK,
    WouldBlock,
    fallocate,
    probe_cached,
    renameat2,
    set_times,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- errors and brick setup
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# flags a client may not pass through to the brick's open()
_OPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_DIRECT | os.O_DIRECTORY | \
    getattr(os, "O_TMPFILE", 0) | os.O_PATH
_PREFETCH_MAX = 1 << 20  # the most file content an open's reply carries
_NAMES_MAX = 4096  # gfid -> last looked-up name, for open
_WILLNEED_MAX = 64 << 10  # a lookup that read the disk starts reading files up to this size


def _willneed(path: bytes, size: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOATIME
                     | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


_XATTR_NS = ("user.", "trusted.", "security.", "system.posix_acl_access",
             "system.posix_acl_default")


def _pwrite_all(fd: int, data: bytes, off: int) -> int:
    """pwrite until everything is written or the disk takes no more; -> bytes written."""
    n = os.pwrite(fd, data, off)
    if n < len(data):
        mv = memoryview(data)
        while n < len(data):
            w = os.pwrite(fd, mv[n:], off + n)
            if w <= 0:
                break
            n += w
    return n


def _write_first(fd: int, data: bytes) -> None:
    """The content a create brings (CreateReq.data): all of it, or the create fails."""
    if _pwrite_all(fd, data, 0) < len(data):
        raise OSError(errno.ENOSPC, "no space left for the file's content")


# ---------------------------------------------------------------- directory fd cache
class _DirEnt:
    __slots__ = ("fd", "refs", "dead")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.refs = 1
        self.dead = False


class _DirCache:
    """gfid -> open directory fd, LRU. Entries are pinned while a worker uses them, so an fd is
    never closed (and its number reused) under a thread's feet: eviction of a pinned entry only
    marks it dead and the last unpin closes it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._d: OrderedDict[bytes, _DirEnt] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, g: bytes) -> _DirEnt | None:
        with self._lock:
            e = self._d.get(g)
            if e is not None:
                e.refs += 1
                self._d.move_to_end(g)
            return e

    def put(self, g: bytes, fd: int) -> _DirEnt:
        """Insert a fresh fd (pinned once for the caller); if another thread won, keep theirs."""
        close: list[int] = []
        with self._lock:
            e = self._d.get(g)
            if e is not None:
                e.refs += 1
                self._d.move_to_end(g)
                close.append(fd)
            else:
                e = self._d[g] = _DirEnt(fd)
                while len(self._d) > self.limit:
                    _, old = self._d.popitem(last=False)
                    old.dead = True
                    if old.refs == 0:
                        close.append(old.fd)
        for fd in close:
            os.close(fd)
        return e

    def release(self, e: _DirEnt) -> None:
        with self._lock:
            e.refs -= 1
            if e.refs or not e.dead:
                return
        os.close(e.fd)

    def drop(self, g: bytes) -> None:
        with self._lock:
            e = self._d.pop(g, None)
            if e is None:
                return
            e.dead = True
            if e.refs:
                return
        os.close(e.fd)

    def close_all(self) -> None:
        with self._lock:
            ents = list(self._d.values())
            self._d.clear()
        for e in ents:
            e.dead = True
            if e.refs == 0:
                os.close(e.fd)


class _DirCtx:
    """State of one opendir: the pinned directory and the snapshot that readdir serves."""

    __slots__ = ("ent", "names", "types", "lock")

    def __init__(self, ent: _DirEnt) -> None:
        self.ent = ent
        self.names: list[bytes] | None = None
        self.types: list[int] | None = None
        self.lock = trio.Lock()


def _dtype(de: os.DirEntry) -> int:
    if de.is_dir(follow_symlinks=False):
        return S.S_IFDIR
    if de.is_file(follow_symlinks=False):
        return S.S_IFREG
    if de.is_symlink():
        return S.S_IFLNK
    return S.S_IFMT(de.stat(follow_symlinks=False).st_mode)


def _iatt(g: bytes, st: os.stat_result) -> Iatt:
    n = st.st_nlink
    if not S.S_ISDIR(st.st_mode):
        n = n - 1 if n > 1 else 0  # hide the handle store's own hard link
    return Iatt(g, st.st_mode, n, st.st_uid, st.st_gid, st.st_rdev, st.st_size, st.st_blocks,
                st.st_blksize, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


def _check_name(name: Any) -> None:
    if type(name) is not bytes:
        raise FopError(errno.EINVAL, f"entry name must be bytes, got {type(name).__name__}")
    if not name or name == b"." or name == b"..":
        raise FopError(errno.EINVAL, f"invalid entry name {name!r}")
    if b"/" in name or b"\0" in name:
        raise FopError(errno.EINVAL, f"entry name {name!r} contains '/' or NUL")
    if len(name) > 255:
        raise FopError(errno.ENAMETOOLONG, f"entry name of {len(name)} bytes (max 255)")


def _check_entry(parent: Any, name: Any) -> None:
    _check_name(name)
    if name == GVOL_NAME and parent == ROOT_GFID:
        raise FopError(errno.EPERM, ".gvol at the brick root is reserved for gvol's own data")


def _check_gfid(g: Any) -> None:
    if type(g) is not bytes or len(g) != 16 or g == NULL_GFID:
        raise FopError(errno.EINVAL, f"invalid gfid {g!r}")


def _access_ok(st: os.stat_result, call: Call, mask: int) -> bool:
    mask &= 7
    if not mask:
        return True
    mode = st.st_mode
    if call.uid == 0:
        # root may read and write anything; execute needs one x bit (directories: always)
        return not (mask & os.X_OK) or S.S_ISDIR(mode) or bool(mode & 0o111)
    if st.st_uid == call.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid == call.gid or st.st_gid in call.groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return (mask & bits) == mask


def _wrap(v: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return ((v + half) % (1 << bits)) - half


# (which fops may run in the event loop: `inline` and `cached` in the fop table)
_INLINE_WRITE_MAX = 128 << 10
_INLINE_SLOW = 0.005  # an inline fop that took longer than this ...
_INLINE_BACKOFF = 2.0  # ... sends every fop to threads for this long


# ---------------------------------------------------------------- the translator
@register("storage/posix")
class Posix(Translator):
    min_children = 0
    max_children = 0
    options_schema = {
        "directory": Option("str", None, doc="the brick directory"),
        "volume-id": Option("str", None, doc="uuid the brick root must carry"),
        "thread-count": Option("int", 16, min=1, max=1024,
                               doc="threads for blocking syscalls (trio CapacityLimiter)"),
        "brick-name": Option("str", "", doc="name used in logs"),
        "dir-cache-size": Option("int", 1024, min=16, max=1 << 20,
                                 doc="open directory fds kept for entry fops"),
        "inline-when-idle": Option("bool", True,
                                   doc="run a metadata fop (or a write of up to 128 KiB) in "
                                   "the event loop itself when no other fop of this brick is "
                                   "in a worker thread: a lone client's creates skip the "
                                   "thread hop; concurrent fops still overlap in threads, "
                                   "and one that took over 5 ms (a slow disk) sends every "
                                   "fop to threads for 2 s"),
    }

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        for key in ("directory", "volume-id"):
            if not self.opts[key]:
                raise GraphError(f"storage/posix: option {key} is required")
        self.path = os.path.abspath(self.opts["directory"])
        try:
            self.volume_id = uuid.UUID(self.opts["volume-id"]).bytes
        except ValueError:
            raise GraphError(f"storage/posix: volume-id {self.opts['volume-id']!r} is not a "
                             "uuid") from None
        self.brick_name = self.opts["brick-name"] or self.path
        self.limiter = trio.CapacityLimiter(self.opts["thread-count"])
        self._inline_idle = self.opts["inline-when-idle"]
        self._in_threads = 0  # fops of this brick now in worker threads
        self._inline_off_until = 0.0  # no inline fops before this (monotonic) time
        self._dirs = _DirCache(self.opts["dir-cache-size"])
        # file gfid -> (parent gfid, name) it was last looked up by: open tries that name (its
        # dentry is hot after the lookup) before the handle store (cold .gvol/handles/xx
        # directories cost disk reads); the opened file's gfid xattr is checked
        self._names: dict[bytes, tuple[bytes, bytes]] = {}
        self._xlocks: dict[bytes, list] = {}
        self._rootfd = -1
        self._hfd = -1
        self._tfd = -1
        self._root: _DirEnt | None = None
        self._hpath = b""
        self._tpath = b""
        self._tmpfile = hasattr(os, "O_TMPFILE")
        self._nowait = hasattr(os, "RWF_NOWAIT")
        self._cached = True  # openat2(RESOLVE_CACHED) works (Linux 5.12+)
        self._umask = 0o022
        self.fsid = 0

    # ------------------------------------------------------------ lifecycle
    async def init(self, nursery: trio.Nursery) -> None:
        await trio.to_thread.run_sync(self._init_sync)
        log.info("brick %s: serving %s", self.brick_name, self.path)

    def _init_sync(self) -> None:
        check_brick(self.path, self.volume_id)
        ensure_layout(self.path)
        self._rootfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._root = _DirEnt(self._rootfd)  # pinned forever: refs never reaches 0
        self._hfd = os.open(GVOL_DIR + "/handles", _O_DIR, dir_fd=self._rootfd)
        self._tfd = os.open(GVOL_DIR + "/tmp", _O_DIR, dir_fd=self._rootfd)
        self._hpath = os.fsencode(os.path.join(self.path, GVOL_DIR, "handles")) + b"/"
        self._tpath = os.fsencode(os.path.join(self.path, GVOL_DIR, "tmp")) + b"/"
        self.fsid = os.fstat(self._rootfd).st_dev
        u = os.umask(0o022)
        os.umask(u)
        self._umask = u
        # leftovers of creations interrupted by a crash
        for name in os.listdir(self._tfd):
            try:
                st = os.stat(name, dir_fd=self._tfd, follow_symlinks=False)
                if S.S_ISDIR(st.st_mode):
                    os.rmdir(name, dir_fd=self._tfd)
                else:
                    os.unlink(name, dir_fd=self._tfd)
            except OSError as e:
                log.warning("brick %s: cannot clean .gvol/tmp/%s: %s", self.brick_name, name, e)
        if self._tmpfile:
            try:
                os.close(os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600, dir_fd=self._tfd))
            except OSError:
                self._tmpfile = False
        try:
            os.close(probe_cached(self._tfd, b"."))
        except (OSError, WouldBlock):
            self._cached = False

    async def fini(self) -> None:
        self._dirs.close_all()
        for fd in (self._hfd, self._tfd, self._rootfd):
            if fd >= 0:
                os.close(fd)
        self._hfd = self._tfd = self._rootfd = -1

    # ------------------------------------------------------------ plumbing
    def _fail(self, op: str, req: Any, e: OSError) -> FopError:
        name = getattr(req, "name", None) or getattr(req, "newname", None)
        what = f" {name!r}" if isinstance(name, bytes) else ""
        g = getattr(req, "gfid", None) or getattr(req, "parent", None)
        if isinstance(g, bytes) and len(g) == 16:
            what += f" (gfid {gfid_str(g)})" if not what else f" in {gfid_str(g)}"
        return FopError(e.errno, f"{op}{what}: {e.strerror}")

    async def handle(self, fop: Fop, call: Call, req: Any) -> Any:
        """A fop without a method of its own here runs `_do_<fop>` (the fop table says
        whether it may run inline, or be tried from the kernel's caches first)."""
        if fop.cached:
            return await self._fast(fop, call, req)
        return await self._run(fop, call, req)

    def _impl(self, fop: Fop):
        fn = getattr(self, "_do_" + fop.name, None)
        if fn is None:
            raise FopError(errno.ENOSYS, f"storage/posix does not implement {fop.name}")
        return fn

    async def _run(self, fop: Fop, call: Call, req: Any) -> Any:
        """`_do_<fop>` in a worker thread; inline instead when nothing of this brick is in a
        thread and the fop table marks the fop `inline` (a short metadata fop: a hop costs
        ~100 us of CPU, more than such a fop's syscalls; with a lone client the event loop has
        nothing else to do meanwhile)."""
        fn = self._impl(fop)
        try:
            if (self._inline_idle and not self._in_threads and fop.inline
                    and len(getattr(req, "data", b"")) <= _INLINE_WRITE_MAX):
                t0 = time.monotonic()
                if t0 >= self._inline_off_until:
                    try:
                        return fn(call, req)
                    finally:
                        if time.monotonic() - t0 > _INLINE_SLOW:
                            # a slow disk: everyone waited for it; threads for a while
                            self._inline_off_until = time.monotonic() + _INLINE_BACKOFF
            self._in_threads += 1
            try:
                return await trio.to_thread.run_sync(fn, call, req, limiter=self.limiter)
            finally:
                self._in_threads -= 1
        except OSError as e:
            raise self._fail(fop.name, req, e) from None

    async def _fast(self, fop: Fop, call: Call, req: Any) -> Any:
        """Run a read-only fop inline when everything it touches is cached (a thread hop costs
        10-20 times the syscalls here), else as `_run` does. `_do_<fop>` takes a third
        argument: inline=True means raise WouldBlock rather than wait for the disk."""
        if self._cached:
            try:
                return self._impl(fop)(call, req, True)
            except WouldBlock:
                pass
            except OSError as e:
                raise self._fail(fop.name, req, e) from None
        return await self._run(fop, call, req)

    def _handle_path(self, g: bytes) -> bytes:
        """Absolute path of the handle of `g`."""
        return self._hpath + handle_rel(g)

    def _dir(self, g: bytes, inline: bool = False) -> _DirEnt:
        """Pinned open fd of directory `g` (release with self._rel)."""
        if g == ROOT_GFID:
            return self._root  # type: ignore[return-value]
        e = self._dirs.get(g)
        if e is not None:
            return e
        if inline:
            raise WOULD_BLOCK
        chain: list[tuple[bytes, bytes]] = []
        cur = g
        while True:
            try:
                target = os.readlink(handle_rel(cur), dir_fd=self._hfd)
            except OSError as err:
                if err.errno == errno.ENOENT:
                    raise FopError(errno.ESTALE, f"no object with gfid {gfid_str(cur)}") from None
                if err.errno == errno.EINVAL:
                    raise FopError(errno.ENOTDIR,
                                   f"gfid {gfid_str(cur)} is not a directory") from None
                raise
            parsed = parse_dir_link(target)
            if parsed is None:
                raise FopError(errno.ENOTDIR, f"gfid {gfid_str(cur)} is not a directory")
            pg, name = parsed
            chain.append((cur, name))
            if pg == ROOT_GFID:
                pe = self._root
                break
            pe = self._dirs.get(pg)
            if pe is not None:
                break
            if len(chain) > 8192:
                raise FopError(errno.ELOOP,
                               f"handle chain of {gfid_str(g)} does not reach the root")
            cur = pg
        for cg, name in reversed(chain):
            try:
                fd = os.open(name, _O_DIR, dir_fd=pe.fd)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise FopError(errno.ESTALE, f"directory {gfid_str(cg)} is gone") from None
                raise
            finally:
                if pe is not self._root:
                    self._dirs.release(pe)
            try:
                have = os.getxattr(fd, XATTR_GFID)
            except OSError:
                have = None
            if have != cg:
                os.close(fd)
                raise FopError(errno.ESTALE, f"handle of {gfid_str(cg)} leads to another directory")
            pe = self._dirs.put(cg, fd)
        return pe

    def _rel(self, e: _DirEnt) -> None:
        if e is not self._root:
            self._dirs.release(e)

    def _resolve(self, g: bytes, inline: bool = False
                 ) -> tuple[_DirEnt | None, bytes, os.stat_result | None]:
        """Object by gfid: (pinned dir entry, b"", None) for a directory, else
        (None, absolute handle path, lstat of the object)."""
        if g == ROOT_GFID:
            return self._root, b"", None
        e = self._dirs.get(g)
        if e is not None:
            return e, b"", None
        rel = handle_rel(g)
        try:
            if inline:
                fd = probe_cached(self._hfd, rel)
                try:
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
            else:
                st = os.stat(rel, dir_fd=self._hfd, follow_symlinks=False)
        except FileNotFoundError:
            raise FopError(errno.ESTALE, f"no object with gfid {gfid_str(g)}") from None
        if S.S_ISLNK(st.st_mode) and st.st_nlink == 1:
            return self._dir(g, inline), b"", None
        return None, self._hpath + rel, st

    def _new_handle(self, g: bytes, make) -> None:
        """Create the handle with `make(rel)` (its fan-out directory made if it went away)."""
        rel = handle_rel(g)
        try:
            make(rel)
        except FileNotFoundError:
            for d in (rel[:2],):
                try:
                    os.mkdir(d, 0o700, dir_fd=self._hfd)
                except FileExistsError:
                    pass
            make(rel)
        except FileExistsError:
            raise FopError(errno.EEXIST,
                           f"gfid {gfid_str(g)} already exists on this brick") from None

    def _drop_handle_if_last(self, g: bytes) -> None:
        rel = handle_rel(g)
        try:
            if os.stat(rel, dir_fd=self._hfd, follow_symlinks=False).st_nlink == 1:
                os.unlink(rel, dir_fd=self._hfd)
        except FileNotFoundError:
            pass

    def _entry_gfid(self, pfd: int, name: bytes) -> bytes | None:
        try:
            return os.getxattr(b"/proc/self/fd/%d/%s" % (pfd, name), XATTR_GFID,
                               follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:
                return None
            raise

    def _xattrs(self, target: Any, names: tuple[str, ...], internal: bool) -> dict:
        """Requested xattrs of an fd or a path (not following symlinks); "*" = all visible."""
        follow = type(target) is int
        out: dict[str, bytes] = {}
        if "*" in names:
            want: Any = os.listxattr(target) if follow else \
                os.listxattr(target, follow_symlinks=False)
            want = [n for n in want if internal or not n.startswith(XATTR_PREFIX)]
            want.extend(n for n in names if n != "*" and n not in want)
        else:
            want = names
        for n in want:
            if not internal and n.startswith(XATTR_PREFIX):
                continue
            try:
                out[n] = os.getxattr(target, n) if follow else \
                    os.getxattr(target, n, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                    raise
        return out

    def _check_xattr(self, call: Call, name: Any, setting: bool) -> None:
        if type(name) is not str or not name:
            raise FopError(errno.EINVAL, f"invalid xattr name {name!r}")
        if len(name) > 255:
            raise FopError(errno.ERANGE, f"xattr name of {len(name)} characters (max 255)")
        if name.startswith(XATTR_PREFIX):
            if not call.internal:
                if setting:
                    raise FopError(errno.EPERM, f"{name}: {XATTR_PREFIX}* xattrs are internal")
                raise FopError(errno.ENODATA, f"{name}: no such xattr")
            if setting and name in (XATTR_GFID, XATTR_VOLUME_ID, XATTR_PATH):
                raise FopError(errno.EPERM, f"{name} cannot be changed by a fop")
        elif not name.startswith(_XATTR_NS):
            raise FopError(errno.EOPNOTSUPP, f"xattr namespace of {name!r} is not supported "
                           "(user., trusted., security. and POSIX ACLs are)")

    def _check_new(self, call: Call, req: Any) -> None:
        _check_entry(req.parent, req.name)
        _check_gfid(req.gfid)
        if req.gfid == ROOT_GFID:
            raise FopError(errno.EINVAL, "the root gfid cannot name a new entry")
        if req.xattrs:
            for k, v in req.xattrs.items():
                self._check_xattr(call, k, True)
                if type(v) is not bytes:
                    raise FopError(errno.EINVAL, f"xattr {k}: value must be bytes")

    def _owner(self, call: Call, pfd: int) -> tuple[int, bool]:
        """gid for a new entry in the directory `pfd` and whether that dir is setgid."""
        pst = os.fstat(pfd)
        if pst.st_mode & S.S_ISGID:
            return pst.st_gid, True
        return call.gid, False

    def _finish_new(self, call: Call, req: Any, target: Any, gid: int, mode: int,
                    fmt: int) -> None:
        """Set gfid + xattrs, owner and exact mode on a new object (fd or staging path)."""
        isfd = type(target) is int
        xattrs = req.xattrs or {}
        if isfd:
            os.setxattr(target, XATTR_GFID, req.gfid)
            for k, v in xattrs.items():
                os.setxattr(target, k, v)
        else:
            os.setxattr(target, XATTR_GFID, req.gfid, follow_symlinks=False)
            for k, v in xattrs.items():
                os.setxattr(target, k, v, follow_symlinks=False)
        chowned = call.uid != 0 or gid != 0
        if chowned:
            if isfd:
                os.fchown(target, call.uid, gid)
            else:
                os.chown(target, call.uid, gid, follow_symlinks=False)
        if fmt == S.S_IFLNK:
            return
        # the kernel applied the brick's umask, mkdir ignores set-id bits and chown clears
        # them: set the exact mode when any of that matters
        if (mode & self._umask) or (mode & 0o7000):
            if isfd:
                os.fchmod(target, mode)
            else:
                os.chmod(target, mode)

    # ------------------------------------------------------------ lookup / stat
    async def lookup(self, call: Call, req):
        if req.name is not None:
            _check_entry(req.parent, req.name)
        elif req.gfid is None:
            raise FopError(errno.EINVAL, "lookup needs a parent and a name, or a gfid")
        return await self._fast(FOPS["lookup"], call, req)

    def _do_lookup(self, call: Call, req, inline: bool = False) -> EntryRep:
        if req.name is None:
            e, p, st = self._resolve(req.gfid, inline)
            try:
                if e is not None:
                    st = os.fstat(e.fd)
                    xa = self._xattrs(e.fd, req.xattrs, call.internal) if req.xattrs else None
                else:
                    xa = self._xattrs(p, req.xattrs, call.internal) if req.xattrs else None
                return EntryRep(_iatt(req.gfid, st), xa)
            finally:
                if e is not None:
                    self._rel(e)
        pe = self._dir(req.parent, inline)
        try:
            try:
                if inline:
                    fd = probe_cached(pe.fd, req.name)
                    try:
                        st = os.fstat(fd)
                    finally:
                        os.close(fd)
                else:
                    st = os.stat(req.name, dir_fd=pe.fd, follow_symlinks=False)
            except FileNotFoundError:
                raise FopError(errno.ENOENT, f"lookup {req.name!r}: no such entry") from None
            if S.S_ISDIR(st.st_mode):
                fd = os.open(req.name, _O_DIR, dir_fd=pe.fd)
                try:
                    g = os.getxattr(fd, XATTR_GFID)
                except OSError:
                    os.close(fd)
                    raise FopError(errno.ENODATA, f"lookup {req.name!r}: entry has no gfid "
                                   "(made on the brick directly?)") from None
                de = self._dirs.put(g, fd)
                try:
                    st = os.fstat(de.fd)
                    xa = self._xattrs(de.fd, req.xattrs, call.internal) if req.xattrs else None
                finally:
                    self._dirs.release(de)
                return EntryRep(_iatt(g, st), xa)
            path = b"/proc/self/fd/%d/%s" % (pe.fd, req.name)
            try:
                g = os.getxattr(path, XATTR_GFID, follow_symlinks=False)
            except OSError as e:
                if e.errno == errno.ENODATA:
                    raise FopError(errno.ENODATA, f"lookup {req.name!r}: entry has no gfid "
                                   "(made on the brick directly?)") from None
                raise
            xa = self._xattrs(path, req.xattrs, call.internal) if req.xattrs else None
            if S.S_ISREG(st.st_mode):
                names = self._names
                if len(names) >= _NAMES_MAX:
                    names.clear()
                names[g] = (req.parent, req.name)
                if not inline and 0 < st.st_size <= _WILLNEED_MAX:
                    # the disk was needed for the name: start reading the (small) file too, so
                    # that an open that follows finds it cached and needs no thread hop
                    _willneed(path, st.st_size)
            return EntryRep(_iatt(g, st), xa)
        finally:
            self._rel(pe)

    def _do_stat(self, call: Call, req, inline: bool = False) -> AttrRep:
        e, _, st = self._resolve(req.gfid, inline)
        if e is not None:
            try:
                st = os.fstat(e.fd)
            finally:
                self._rel(e)
        return AttrRep(_iatt(req.gfid, st))

    async def fstat(self, call: Call, req):
        fd = req.fd
        try:
            return AttrRep(_iatt(fd.gfid, os.fstat(self._osfd(fd))))
        except OSError as e:
            raise self._fail("fstat", req, e) from None

    def _osfd(self, fd: Fd) -> int:
        try:
            c = fd.ctx[self]
        except KeyError:
            raise FopError(errno.EBADF, "fd was not opened by this brick") from None
        return c if type(c) is int else c.ent.fd

    # ------------------------------------------------------------ setattr / access
    def _do_setattr(self, call: Call, req) -> AttrRep:
        e, p, st = self._resolve(req.gfid)
        try:
            if e is not None:
                return AttrRep(_iatt(req.gfid, self._apply_attrs(e.fd, None, req, True)))
            return AttrRep(_iatt(req.gfid, self._apply_attrs(-1, p, req,
                                                             False, S.S_IFMT(st.st_mode))))
        finally:
            if e is not None:
                self._rel(e)

    def _do_fsetattr(self, call: Call, req) -> AttrRep:
        fd = self._osfd(req.fd)
        return AttrRep(_iatt(req.fd.gfid, self._apply_attrs(fd, None, req, req.fd.is_dir)))

    def _apply_attrs(self, fd: int, path: bytes | None, req: Any, isdir: bool,
                     fmt: int = 0) -> os.stat_result:
        v = req.valid
        if v & (SET_UID | SET_GID):
            uid = req.uid if v & SET_UID else -1
            gid = req.gid if v & SET_GID else -1
            if path is None:
                os.fchown(fd, uid, gid)
            else:
                os.chown(path, uid, gid, follow_symlinks=False)
        if v & SET_MODE:
            if path is None:
                os.fchmod(fd, req.mode & 0o7777)
            elif fmt == S.S_IFLNK:
                raise FopError(errno.EOPNOTSUPP, "the mode of a symlink cannot be changed")
            else:
                os.chmod(path, req.mode & 0o7777)  # not a symlink: nothing to follow
        if v & SET_SIZE:
            if isdir:
                raise FopError(errno.EISDIR, "cannot truncate a directory")
            if path is None:
                os.ftruncate(fd, req.size)
            else:
                if fmt != S.S_IFREG:
                    raise FopError(errno.EINVAL, "only regular files can be truncated")
                tfd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.ftruncate(tfd, req.size)
                finally:
                    os.close(tfd)
        if v & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW):
            set_times(fd, path, req.atime_ns if v & SET_ATIME else None,
                       req.mtime_ns if v & SET_MTIME else None,
                       bool(v & SET_ATIME_NOW), bool(v & SET_MTIME_NOW))
        return os.fstat(fd) if path is None else os.lstat(path)

    def _do_access(self, call: Call, req, inline: bool = False):
        e, _, st = self._resolve(req.gfid, inline)
        if e is not None:
            try:
                st = os.fstat(e.fd)
            finally:
                self._rel(e)
        if not _access_ok(st, call, req.mask):
            raise FopError(errno.EACCES, f"access {req.mask:o} denied to uid {call.uid}")
        return EMPTY

    def _do_readlink(self, call: Call, req) -> ReadlinkRep:
        e, p, st = self._resolve(req.gfid)
        if e is not None:
            self._rel(e)
            raise FopError(errno.EINVAL, "readlink of a directory")
        if not S.S_ISLNK(st.st_mode):
            raise FopError(errno.EINVAL, "readlink of something that is not a symlink")
        return ReadlinkRep(os.readlink(p))

    # ------------------------------------------------------------ creation
    async def mknod(self, call: Call, req):
        self._check_new(call, req)
        fmt = S.S_IFMT(req.mode)
        if fmt not in (S.S_IFREG, S.S_IFIFO, S.S_IFCHR, S.S_IFBLK, S.S_IFSOCK, 0):
            raise FopError(errno.EINVAL, f"mknod: bad file type {fmt:o}")
        return await self._run(FOPS["mknod"], call, req)

    async def mkdir(self, call: Call, req):
        self._check_new(call, req)
        return await self._run(FOPS["mkdir"], call, req)

    async def symlink(self, call: Call, req):
        self._check_new(call, req)
        t = req.target
        if type(t) is not bytes or not t or b"\0" in t:
            raise FopError(errno.EINVAL, "symlink target must be non-empty bytes without NUL")
        if len(t) >= 4096:
            raise FopError(errno.ENAMETOOLONG, "symlink target longer than 4095 bytes")
        return await self._run(FOPS["symlink"], call, req)

    def _stage(self, call: Call, req: Any, fmt: int, make) -> EntryRep:
        """Make the object in .gvol/tmp, complete it there, link its handle, and move it into
        place atomically (RENAME_NOREPLACE): no one ever sees it without its gfid."""
        tmp = gfid_str(req.gfid).encode()
        pe = self._dir(req.parent)
        try:
            gid, sgid = self._owner(call, pe.fd)
            mode = (req.mode & 0o7777 & ~getattr(req, "umask", 0)) if fmt != S.S_IFLNK else 0
            if fmt == S.S_IFDIR and sgid:
                mode |= S.S_ISGID
            try:
                make(tmp)
            except FileExistsError:
                raise FopError(errno.EEXIST,
                               f"gfid {gfid_str(req.gfid)} is being created") from None
            tpath = self._tpath + tmp
            dfd = -1
            handle = False
            try:
                if fmt == S.S_IFDIR:
                    dfd = os.open(tmp, _O_DIR, dir_fd=self._tfd)
                    self._finish_new(call, req, dfd, gid, mode, fmt)
                    self._new_handle(req.gfid, lambda rel: os.symlink(
                        dir_link(req.parent, req.name), rel, dir_fd=self._hfd))
                else:
                    self._finish_new(call, req, tpath, gid, mode, fmt)
                    self._new_handle(req.gfid, lambda rel: os.link(
                        tmp, rel, src_dir_fd=self._tfd, dst_dir_fd=self._hfd,
                        follow_symlinks=False))
                handle = True
                try:
                    renameat2(self._tfd, tmp, pe.fd, req.name, RENAME_NOREPLACE)
                except OSError as e:
                    if e.errno == errno.EEXIST:
                        raise FopError(errno.EEXIST, f"{req.name!r} exists") from None
                    raise
            except BaseException:
                if handle:
                    try:
                        os.unlink(handle_rel(req.gfid), dir_fd=self._hfd)
                    except OSError:
                        pass
                try:
                    if fmt == S.S_IFDIR:
                        os.rmdir(tmp, dir_fd=self._tfd)
                    else:
                        os.unlink(tmp, dir_fd=self._tfd)
                except OSError:
                    pass
                if dfd >= 0:
                    os.close(dfd)
                raise
            # in place: from here on nothing is rolled back
            if dfd >= 0:
                e = self._dirs.put(req.gfid, dfd)
                try:
                    st = os.fstat(e.fd)
                finally:
                    self._dirs.release(e)
            else:
                st = os.lstat(self._hpath + handle_rel(req.gfid))
            return EntryRep(_iatt(req.gfid, st), None)
        finally:
            self._rel(pe)

    def _do_mkdir(self, call: Call, req) -> EntryRep:
        return self._stage(call, req, S.S_IFDIR, lambda tmp: os.mkdir(
            tmp, req.mode & 0o7777 & ~req.umask, dir_fd=self._tfd))

    def _do_mknod(self, call: Call, req) -> EntryRep:
        fmt = S.S_IFMT(req.mode) or S.S_IFREG
        perm = req.mode & 0o7777 & ~req.umask
        return self._stage(call, req, fmt, lambda tmp: os.mknod(
            tmp, fmt | perm, req.rdev, dir_fd=self._tfd))

    def _do_symlink(self, call: Call, req) -> EntryRep:
        return self._stage(call, req, S.S_IFLNK, lambda tmp: os.symlink(
            req.target, tmp, dir_fd=self._tfd))

    async def create(self, call: Call, req):
        self._check_new(call, req)
        return await self._run(FOPS["create"], call, req)

    def _do_create(self, call: Call, req) -> CreateRep:
        pe = self._dir(req.parent)
        try:
            gid, _ = self._owner(call, pe.fd)
            mode = req.mode & 0o7777 & ~req.umask
            flags = req.flags & ~(_OPEN_STRIP | os.O_TRUNC | os.O_ACCMODE)
            if not self._tmpfile:
                return self._create_plain(call, req, pe.fd, gid, mode, flags)
            fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode, dir_fd=pe.fd)
            handle = False
            try:
                self._finish_new(call, req, fd, gid, mode, S.S_IFREG)
                if req.data:  # before the name exists: no one sees it half written
                    _write_first(fd, req.data)
                src = b"/proc/self/fd/%d" % fd
                self._new_handle(req.gfid, lambda rel: os.link(
                    src, rel, dst_dir_fd=self._hfd, follow_symlinks=True))
                handle = True
                try:
                    os.link(src, req.name, dst_dir_fd=pe.fd, follow_symlinks=True)
                except FileExistsError:
                    raise FopError(errno.EEXIST, f"create {req.name!r}: exists") from None
                handle = False  # in place: from here on nothing is rolled back
                st = os.fstat(fd)
                if req.close:
                    os.close(fd)
                    return CreateRep(_iatt(req.gfid, st), None)
                if flags & (os.O_SYNC | os.O_DSYNC | os.O_APPEND | os.O_NOATIME):
                    nfd = os.open(src, os.O_RDWR | os.O_CLOEXEC | flags)
                    os.close(fd)
                    fd = nfd
            except BaseException:
                if handle:
                    try:
                        os.unlink(handle_rel(req.gfid), dir_fd=self._hfd)
                    except OSError:
                        pass
                os.close(fd)
                raise
        finally:
            self._rel(pe)
        return CreateRep(_iatt(req.gfid, st), Fd(req.gfid, req.flags, False, {self: fd}))

    def _create_plain(self, call: Call, req, pfd: int, gid: int, mode: int,
                      flags: int) -> CreateRep:
        """Without O_TMPFILE: the name exists for a moment before its gfid is set."""
        try:
            fd = os.open(req.name, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC | flags,
                         mode, dir_fd=pfd)
        except FileExistsError:
            raise FopError(errno.EEXIST, f"create {req.name!r}: exists") from None
        try:
            self._finish_new(call, req, fd, gid, mode, S.S_IFREG)
            if req.data:
                _write_first(fd, req.data)
            self._new_handle(req.gfid, lambda rel: os.link(
                req.name, rel, src_dir_fd=pfd, dst_dir_fd=self._hfd, follow_symlinks=False))
            st = os.fstat(fd)
        except BaseException:
            os.unlink(req.name, dir_fd=pfd)
            os.close(fd)
            raise
        if req.close:
            os.close(fd)
            return CreateRep(_iatt(req.gfid, st), None)
        return CreateRep(_iatt(req.gfid, st), Fd(req.gfid, req.flags, False, {self: fd}))

    async def link(self, call: Call, req):
        _check_entry(req.newparent, req.newname)
        return await self._run(FOPS["link"], call, req)

    def _do_link(self, call: Call, req) -> EntryRep:
        e, _, _ = self._resolve(req.gfid)
        if e is not None:
            self._rel(e)
            raise FopError(errno.EPERM, "hard links to directories are not allowed")
        pe = self._dir(req.newparent)
        try:
            rel = handle_rel(req.gfid)
            os.link(rel, req.newname, src_dir_fd=self._hfd, dst_dir_fd=pe.fd,
                    follow_symlinks=False)
            return EntryRep(_iatt(req.gfid, os.stat(rel, dir_fd=self._hfd,
                                                    follow_symlinks=False)), None)
        finally:
            self._rel(pe)

    # ------------------------------------------------------------ removal and rename
    async def unlink(self, call: Call, req):
        _check_entry(req.parent, req.name)
        return await self._run(FOPS["unlink"], call, req)

    def _do_unlink(self, call: Call, req):
        pe = self._dir(req.parent)
        try:
            st = os.stat(req.name, dir_fd=pe.fd, follow_symlinks=False)
            if S.S_ISDIR(st.st_mode):
                raise FopError(errno.EISDIR, f"unlink {req.name!r}: is a directory")
            g = self._entry_gfid(pe.fd, req.name)
            want = req.xdata.get(XDATA_EXPECT_GFID) if req.xdata else None
            if want is not None and g != want:
                raise FopError(errno.ESTALE, f"unlink {req.name!r}: the name is now another file")
            os.unlink(req.name, dir_fd=pe.fd)
            if g is not None:
                self._drop_handle_if_last(g)
            return EMPTY
        finally:
            self._rel(pe)

    async def rmdir(self, call: Call, req):
        _check_entry(req.parent, req.name)
        return await self._run(FOPS["rmdir"], call, req)

    def _do_rmdir(self, call: Call, req):
        pe = self._dir(req.parent)
        try:
            st = os.stat(req.name, dir_fd=pe.fd, follow_symlinks=False)
            if not S.S_ISDIR(st.st_mode):
                raise FopError(errno.ENOTDIR, f"rmdir {req.name!r}: not a directory")
            g = self._entry_gfid(pe.fd, req.name)
            os.rmdir(req.name, dir_fd=pe.fd)
            if g is not None:
                self._dirs.drop(g)
                try:
                    os.unlink(handle_rel(g), dir_fd=self._hfd)
                except FileNotFoundError:
                    pass
            return EMPTY
        finally:
            self._rel(pe)

    async def rename(self, call: Call, req):
        _check_entry(req.oldparent, req.oldname)
        _check_entry(req.newparent, req.newname)
        if req.flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or \
                req.flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise FopError(errno.EINVAL, f"rename: bad flags {req.flags:#x}")
        return await self._run(FOPS["rename"], call, req)

    def _do_rename(self, call: Call, req):
        ope = self._dir(req.oldparent)
        try:
            npe = self._dir(req.newparent)
            try:
                return self._rename_in(req, ope.fd, npe.fd)
            finally:
                self._rel(npe)
        finally:
            self._rel(ope)

    def _rename_in(self, req, ofd: int, nfd: int):
        sst = os.stat(req.oldname, dir_fd=ofd, follow_symlinks=False)
        sg = self._entry_gfid(ofd, req.oldname)
        try:
            tst: os.stat_result | None = os.stat(req.newname, dir_fd=nfd, follow_symlinks=False)
        except FileNotFoundError:
            tst = None
        if tst is not None and (tst.st_ino, tst.st_dev) == (sst.st_ino, sst.st_dev):
            if req.flags & RENAME_NOREPLACE:
                raise FopError(errno.EEXIST, f"rename: {req.newname!r} exists")
            return EMPTY  # two names of one file: POSIX says do nothing
        tg = self._entry_gfid(nfd, req.newname) if tst is not None else None
        renameat2(ofd, req.oldname, nfd, req.newname, req.flags)
        if sg is not None and S.S_ISDIR(sst.st_mode):
            self._relink_dir(sg, req.newparent, req.newname)
        elif sg is not None:
            self._name_added(sg, req.newparent, req.newname, (req.oldparent, req.oldname))
        if tst is None or tg is None:
            return EMPTY
        if req.flags & RENAME_EXCHANGE:
            if S.S_ISDIR(tst.st_mode):
                self._relink_dir(tg, req.oldparent, req.oldname)
            else:
                self._name_added(tg, req.oldparent, req.oldname, (req.newparent, req.newname))
        elif S.S_ISDIR(tst.st_mode):
            self._dirs.drop(tg)
            try:
                os.unlink(handle_rel(tg), dir_fd=self._hfd)
            except FileNotFoundError:
                pass
        else:
            self._drop_handle_if_last(tg)
        return EMPTY

    def _name_added(self, g: bytes, parent: bytes, name: bytes,
                    gone: tuple[bytes, bytes]) -> None:
        """A renamed non-directory: if its old name is recorded in its gfid2path xattrs, record
        the new one instead. Only heal info reads them; a failure here must not fail the
        rename."""
        hp = self._handle_path(g)
        try:
            try:
                os.removexattr(hp, gfid2path_xattr(*gone)[0], follow_symlinks=False)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
                return
            k, v = gfid2path_xattr(parent, name)
            os.setxattr(hp, k, v, follow_symlinks=False)
        except OSError as e:
            log.warning("brick %s: cannot record the name %r of %s: %s", self.brick_name, name,
                        gfid_str(g), e)

    def _path_of(self, g: bytes) -> bytes:
        """The path of `g` on this brick: a directory's from its handle symlinks, a file's from
        its gfid2path xattrs (the first name still in place)."""
        parts: list[bytes] = []
        cur = g
        for _ in range(4096):
            if cur == ROOT_GFID:
                return b"/" + b"/".join(reversed(parts))
            rel = handle_rel(cur)
            try:
                st = os.stat(rel, dir_fd=self._hfd, follow_symlinks=False)
            except FileNotFoundError:
                raise FopError(errno.ENOENT, f"no object with gfid {gfid_str(cur)}") from None
            if S.S_ISLNK(st.st_mode) and st.st_nlink == 1:  # a directory's handle
                link = parse_dir_link(os.readlink(rel, dir_fd=self._hfd))
                if link is None:
                    raise FopError(errno.EIO, f"bad directory handle for {gfid_str(cur)}")
                cur, name = link
                parts.append(name)
                continue
            hp = self._handle_path(cur)
            for k in os.listxattr(hp, follow_symlinks=False):
                if not k.startswith(XATTR_GFID2PATH):
                    continue
                v = os.getxattr(hp, k, follow_symlinks=False)
                pg, name = v[:16], v[16:]
                try:
                    pe = self._dir(pg)
                except (FopError, OSError):
                    continue
                try:
                    here = self._entry_gfid(pe.fd, name) == cur
                except OSError:
                    here = False
                finally:
                    self._rel(pe)
                if here:
                    parts.append(name)
                    cur = pg
                    break
            else:
                raise FopError(errno.ENOENT, f"no name of {gfid_str(cur)} is known on this brick")
        raise FopError(errno.ELOOP, f"the path of {gfid_str(g)} is too deep")

    def _relink_dir(self, g: bytes, parent: bytes, name: bytes) -> None:
        rel = handle_rel(g)
        tmp = rel + b".%d" % threading.get_ident()
        os.symlink(dir_link(parent, name), tmp, dir_fd=self._hfd)
        os.rename(tmp, rel, src_dir_fd=self._hfd, dst_dir_fd=self._hfd)

    # ------------------------------------------------------------ open / io
    def _do_open(self, call: Call, req, inline: bool = False) -> OpenRep:
        flags = req.flags & ~_OPEN_STRIP
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR  # the writeback cache reads too
        if not flags & os.O_TRUNC:  # (a truncate must not hit another file first)
            got = self._open_by_name(req.gfid, flags, inline)
            if got is not None:
                fd, st = got
                try:
                    data = self._prefetch(fd, st, req.prefetch, inline) if req.prefetch else b""
                except BaseException:
                    os.close(fd)
                    raise
                return OpenRep(Fd(req.gfid, req.flags, False, {self: fd}), data)
        if inline:
            # opening a regular file whose handle is in the dentry cache needs no disk (unless
            # it truncates): no thread hop. Anything else (a directory's handle symlink, a
            # FIFO or device that may block on open, a handle not cached) goes to a thread.
            if flags & os.O_TRUNC:
                raise WOULD_BLOCK
            try:
                pfd = probe_cached(self._hfd, handle_rel(req.gfid))
            except FileNotFoundError:
                raise FopError(errno.ESTALE, f"open: no object with gfid {gfid_str(req.gfid)}") \
                    from None
            try:
                st = os.fstat(pfd)
                if not S.S_ISREG(st.st_mode):
                    raise WOULD_BLOCK
                fd = os.open(b"/proc/self/fd/%d" % pfd, flags | os.O_CLOEXEC)
            finally:
                os.close(pfd)
            try:
                data = self._prefetch(fd, st, req.prefetch, True)
            except BaseException:
                os.close(fd)
                raise
            return OpenRep(Fd(req.gfid, req.flags, False, {self: fd}), data)
        try:
            fd = os.open(self._hpath + handle_rel(req.gfid), flags | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise FopError(errno.ESTALE, f"open: no object with gfid {gfid_str(req.gfid)}") \
                    from None
            if e.errno == errno.ELOOP:
                e2, _, _ = self._resolve(req.gfid)
                if e2 is not None:
                    self._rel(e2)
                    raise FopError(errno.EISDIR, "open of a directory (use opendir)") from None
            raise
        data = b""
        if req.prefetch > 0:
            try:
                data = self._prefetch(fd, os.fstat(fd), req.prefetch, False)
            except BaseException:
                os.close(fd)
                raise
        return OpenRep(Fd(req.gfid, req.flags, False, {self: fd}), data)

    def _open_by_name(self, g: bytes, flags: int, inline: bool
                      ) -> tuple[int, os.stat_result] | None:
        """Open regular file `g` through the name it was last looked up by, if that name still
        holds it: (fd, stat), else None (use the handle)."""
        hint = self._names.get(g)
        if hint is None:
            return None
        parent, name = hint
        pe = self._root if parent == ROOT_GFID else self._dirs.get(parent)
        if pe is None:
            return None
        try:
            if inline:
                pfd = probe_cached(pe.fd, name)
            else:
                pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pe.fd)
        except FileNotFoundError:
            self._names.pop(g, None)
            return None
        finally:
            self._rel(pe)
        try:
            st = os.fstat(pfd)
            if not S.S_ISREG(st.st_mode):
                self._names.pop(g, None)
                return None
            fd = os.open(b"/proc/self/fd/%d" % pfd, flags | os.O_CLOEXEC)
        finally:
            os.close(pfd)
        try:
            have = os.getxattr(fd, XATTR_GFID)
        except OSError:
            have = None
        if have != g:  # renamed away or replaced since: the handle knows
            os.close(fd)
            self._names.pop(g, None)
            return None
        return fd, st

    def _prefetch(self, fd: int, st: os.stat_result, limit: int, inline: bool) -> bytes:
        """The whole content of a regular file of 1..`limit` bytes (open's prefetch), else
        b"". Inline, only what the page cache holds (else WouldBlock: redo in a thread)."""
        limit = min(limit, _PREFETCH_MAX)
        if not S.S_ISREG(st.st_mode) or not 0 < st.st_size <= limit:
            return b""
        # one byte more than the size: a file that grew meanwhile is not taken for whole
        buf = bytearray(st.st_size + 1)
        if inline:
            if not self._nowait:
                raise WOULD_BLOCK
            try:
                n = os.preadv(fd, (buf,), 0, os.RWF_NOWAIT)
            except OSError as e:  # EAGAIN: not cached
                if e.errno == errno.EOPNOTSUPP:
                    self._nowait = False
                raise WOULD_BLOCK from None
            if n < st.st_size:  # partly cached (or truncated meanwhile: let the thread see)
                raise WOULD_BLOCK
        else:
            n = os.preadv(fd, (buf,), 0)
        if n > st.st_size:
            return b""
        return bytes(memoryview(buf)[:n])

    async def read(self, call: Call, req):
        fd = self._osfd(req.fd)
        size = req.size
        if size <= 0:
            return ReadRep(b"")
        if self._nowait and size <= 1 << 20:
            buf = bytearray(size)
            try:
                n = os.preadv(fd, (buf,), req.offset, os.RWF_NOWAIT)
            except OSError as e:
                if e.errno == errno.EOPNOTSUPP:
                    self._nowait = False
                n = -1
            if n == size:
                return ReadRep(bytes(buf))
            if n >= 0 and req.offset + n >= os.fstat(fd).st_size:  # short only at EOF
                return ReadRep(bytes(memoryview(buf)[:n]))
        return await self._run(FOPS["read"], call, req)

    def _do_read(self, call: Call, req) -> ReadRep:
        return ReadRep(os.pread(self._osfd(req.fd), req.size, req.offset))

    def _do_write(self, call: Call, req) -> WriteRep:
        fd = self._osfd(req.fd)
        n = _pwrite_all(fd, req.data, req.offset)
        st = os.fstat(fd)
        if call.uid != 0 and st.st_mode & (S.S_ISUID | S.S_ISGID):
            # the kernel spares writes of root (our brick process): clear them as it would for
            # the caller: setuid always, setgid when group-executable
            kill = S.S_ISUID | (S.S_ISGID if st.st_mode & S.S_IXGRP else 0)
            if st.st_mode & kill:
                os.fchmod(fd, S.S_IMODE(st.st_mode) & ~kill)
                st = os.fstat(fd)
        return WriteRep(n, _iatt(req.fd.gfid, st))

    async def flush(self, call: Call, req):
        self._osfd(req.fd)
        return EMPTY

    def _do_fsync(self, call: Call, req):
        fd = self._osfd(req.fd)
        if req.datasync:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
        return EMPTY

    async def release(self, call: Call, req):
        fd = req.fd.ctx.pop(self, None)
        if fd is None:
            return EMPTY
        if type(fd) is _DirCtx:
            self._rel(fd.ent)
            return EMPTY
        try:
            linked = os.fstat(fd).st_nlink > 0
        except OSError:
            linked = False
        if linked:
            os.close(fd)  # still linked: close only drops a reference, nothing to free
        else:
            # the last close of an unlinked file frees its blocks: that can take long
            await trio.to_thread.run_sync(os.close, fd, limiter=self.limiter)
        return EMPTY

    # ------------------------------------------------------------ directories
    async def opendir(self, call: Call, req):
        e = await self._run(FOPS["opendir"], call, req)
        return OpenRep(Fd(req.gfid, os.O_RDONLY | os.O_DIRECTORY, True, {self: _DirCtx(e)}))

    def _do_opendir(self, call: Call, req) -> _DirEnt:
        return self._dir(req.gfid)

    async def readdir(self, call: Call, req):
        """Cookies are positions in a snapshot of the directory's names taken when a reader
        starts at offset 0 (opendir, rewinddir): entry i has cookie i+1. Serving later batches
        from the snapshot means an entry present for the whole listing is returned exactly once
        however the directory changes meanwhile (entries added later are not seen; entries
        removed meanwhile are still listed by name, and skipped by readdirplus when they are
        gone). A cookie > 0 on a fresh fd (say after a brick restart) takes a new snapshot and
        continues from that position: the best that can be done without a kernel cookie.
        Cookies are small integers, so cluster/dht can pack a subvolume index beside them."""
        ctx = req.fd.ctx.get(self)
        if type(ctx) is not _DirCtx:
            raise FopError(errno.EBADF, "readdir: fd is not a directory opened by this brick")
        async with ctx.lock:
            if req.plus or ctx.names is None or req.offset == 0:
                return await self._run(FOPS["readdir"], call, req)
            return self._serve(ctx, req, None)

    def _do_readdir(self, call: Call, req) -> ReaddirRep:
        ctx: _DirCtx = req.fd.ctx[self]
        if ctx.names is None or req.offset == 0:
            names: list[bytes] = []
            types: list[int] = []
            hide = req.fd.gfid == ROOT_GFID
            with os.scandir(b"/proc/self/fd/%d" % ctx.ent.fd) as it:
                for de in it:
                    if hide and de.name == GVOL_NAME:
                        continue
                    names.append(de.name)
                    types.append(_dtype(de))
            ctx.names, ctx.types = names, types
        return self._serve(ctx, req, call if req.plus else None)

    def _serve(self, ctx: _DirCtx, req, call: Call | None) -> ReaddirRep:
        names, types = ctx.names, ctx.types
        assert names is not None and types is not None
        i = max(req.offset, 0)
        n = len(names)
        budget = req.size
        out: list[Dirent] = []
        per = 160 if call is not None else 32
        dfd = ctx.ent.fd
        while i < n:
            name = names[i]
            cost = per + len(name)
            if out and cost > budget:
                break
            budget -= cost
            i += 1
            if call is None:
                out.append(Dirent(name, i, types[i - 1]))
                continue
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the snapshot
            path = b"/proc/self/fd/%d/%s" % (dfd, name)
            try:
                g = os.getxattr(path, XATTR_GFID, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOENT):
                    raise
                out.append(Dirent(name, i, S.S_IFMT(st.st_mode)))
                continue
            xa = self._xattrs(path, req.xattrs, call.internal) if req.xattrs else None
            out.append(Dirent(name, i, S.S_IFMT(st.st_mode), _iatt(g, st), xa))
        return ReaddirRep(out, i >= n)

    async def releasedir(self, call: Call, req):
        ctx = req.fd.ctx.pop(self, None)
        if type(ctx) is _DirCtx:
            self._rel(ctx.ent)
        return EMPTY

    def _do_fsyncdir(self, call: Call, req):
        os.fsync(self._osfd(req.fd))
        return EMPTY

    async def statfs(self, call: Call, req):
        try:
            v = os.fstatvfs(self._rootfd)
        except OSError as e:
            raise self._fail("statfs", req, e) from None
        return StatfsRep(Statvfs(v.f_bsize, v.f_frsize, v.f_blocks, v.f_bfree, v.f_bavail,
                                 v.f_files, v.f_ffree, v.f_favail, min(v.f_namemax, 255),
                                 self.fsid))

    # ------------------------------------------------------------ xattrs
    async def setxattr(self, call: Call, req):
        self._check_xattr(call, req.name, True)
        return await self._run(FOPS["setxattr"], call, req)

    def _do_setxattr(self, call: Call, req):
        e, p, _ = self._resolve(req.gfid)
        try:
            if e is not None:
                os.setxattr(e.fd, req.name, req.value, req.flags)
            else:
                os.setxattr(p, req.name, req.value, req.flags, follow_symlinks=False)
        finally:
            if e is not None:
                self._rel(e)
        return EMPTY

    async def fsetxattr(self, call: Call, req):
        self._check_xattr(call, req.name, True)
        return await self._run(FOPS["fsetxattr"], call, req)

    def _do_fsetxattr(self, call: Call, req):
        os.setxattr(self._osfd(req.fd), req.name, req.value, req.flags)
        return EMPTY

    async def getxattr(self, call: Call, req):
        self._check_xattr(call, req.name, False)
        return await self._fast(FOPS["getxattr"], call, req)

    def _do_getxattr(self, call: Call, req, inline: bool = False) -> XattrRep:
        if req.name == XATTR_PATH:
            if inline:
                raise WOULD_BLOCK
            return XattrRep(self._path_of(req.gfid))
        e, p, _ = self._resolve(req.gfid, inline)
        try:
            if e is not None:
                return XattrRep(os.getxattr(e.fd, req.name))
            return XattrRep(os.getxattr(p, req.name, follow_symlinks=False))
        finally:
            if e is not None:
                self._rel(e)

    async def fgetxattr(self, call: Call, req):
        self._check_xattr(call, req.name, False)
        try:
            return XattrRep(os.getxattr(self._osfd(req.fd), req.name))
        except OSError as e:
            raise self._fail("fgetxattr", req, e) from None

    def _do_listxattr(self, call: Call, req) -> ListxattrRep:
        e, p, _ = self._resolve(req.gfid)
        try:
            names = os.listxattr(e.fd) if e is not None else \
                os.listxattr(p, follow_symlinks=False)
        finally:
            if e is not None:
                self._rel(e)
        return ListxattrRep([n for n in names if not n.startswith(XATTR_PREFIX)])

    async def removexattr(self, call: Call, req):
        self._check_xattr(call, req.name, True)
        return await self._run(FOPS["removexattr"], call, req)

    def _do_removexattr(self, call: Call, req):
        e, p, _ = self._resolve(req.gfid)
        try:
            if e is not None:
                os.removexattr(e.fd, req.name)
            else:
                os.removexattr(p, req.name, follow_symlinks=False)
        finally:
            if e is not None:
                self._rel(e)
        return EMPTY

    # ------------------------------------------------------------ size and space
    def _do_truncate(self, call: Call, req) -> AttrRep:
        try:
            fd = os.open(self._hpath + handle_rel(req.gfid),
                         os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise FopError(errno.ESTALE, f"truncate: no object {gfid_str(req.gfid)}") from None
            if e.errno == errno.ELOOP:
                raise FopError(errno.EINVAL, "truncate of a symlink or directory") from None
            raise
        try:
            os.ftruncate(fd, req.size)
            return AttrRep(_iatt(req.gfid, os.fstat(fd)))
        finally:
            os.close(fd)

    def _do_ftruncate(self, call: Call, req) -> AttrRep:
        fd = self._osfd(req.fd)
        os.ftruncate(fd, req.size)
        return AttrRep(_iatt(req.fd.gfid, os.fstat(fd)))

    def _do_fallocate(self, call: Call, req) -> AttrRep:
        fd = self._osfd(req.fd)
        fallocate(fd, req.mode, req.offset, req.length)
        return AttrRep(_iatt(req.fd.gfid, os.fstat(fd)))

    def _do_discard(self, call: Call, req) -> AttrRep:
        fd = self._osfd(req.fd)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, req.offset, req.length)
        return AttrRep(_iatt(req.fd.gfid, os.fstat(fd)))

    def _do_zerofill(self, call: Call, req) -> AttrRep:
        fd = self._osfd(req.fd)
        try:
            fallocate(fd, FALLOC_FL_ZERO_RANGE, req.offset, req.length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            chunk = bytes(min(req.length, 1 << 20))
            done = 0
            while done < req.length:
                done += os.pwrite(fd, chunk[:req.length - done], req.offset + done)
        return AttrRep(_iatt(req.fd.gfid, os.fstat(fd)))

    async def seek(self, call: Call, req):
        if req.whence not in (os.SEEK_DATA, os.SEEK_HOLE):
            raise FopError(errno.EINVAL, "seek: whence must be SEEK_DATA or SEEK_HOLE")
        return await self._run(FOPS["seek"], call, req)

    def _do_seek(self, call: Call, req) -> SeekRep:
        # the fd's own position is never used (all io is pread/pwrite), and lseek returns the
        # offset it computed, so no dup is needed
        return SeekRep(os.lseek(self._osfd(req.fd), req.offset, req.whence))

    # ------------------------------------------------------------ locks live above us
    async def lk(self, call: Call, req):
        raise FopError(errno.ENOSYS, "lk: storage/posix needs features/locks above it")

    async def inodelk(self, call: Call, req):
        raise FopError(errno.ENOSYS, "inodelk: storage/posix needs features/locks above it")

    async def entrylk(self, call: Call, req):
        raise FopError(errno.ENOSYS, "entrylk: storage/posix needs features/locks above it")

    # ------------------------------------------------------------ xattrop / rchecksum
    async def xattrop(self, call: Call, req):
        if req.op not in (XATTROP_ADD_ARRAY, XATTROP_ADD_ARRAY64, XATTROP_GET_AND_SET):
            raise FopError(errno.EINVAL, f"xattrop: unsupported op {req.op}")
        width = 8 if req.op == XATTROP_ADD_ARRAY64 else 4
        for k, v in req.xattrs.items():
            self._check_xattr(call, k, True)
            if type(v) is not bytes or (req.op != XATTROP_GET_AND_SET and len(v) % width):
                raise FopError(errno.EINVAL, f"xattrop {k}: operand must be bytes, a multiple "
                               f"of {width} long")
        slot = self._xlocks.get(req.gfid)
        if slot is None:
            slot = self._xlocks[req.gfid] = [trio.Lock(), 0]
        slot[1] += 1
        try:
            async with slot[0]:
                return await self._run(FOPS["xattrop"], call, req)
        finally:
            slot[1] -= 1
            if not slot[1]:
                del self._xlocks[req.gfid]

    def _do_xattrop(self, call: Call, req) -> XattropRep:
        e, p, _ = self._resolve(req.gfid)
        tgt: Any = e.fd if e is not None else p
        kw = {} if e is not None else {"follow_symlinks": False}
        out: dict[str, bytes] = {}
        try:
            for k, v in req.xattrs.items():
                try:
                    cur = os.getxattr(tgt, k, **kw)
                except OSError as err:
                    if err.errno != errno.ENODATA:
                        raise
                    cur = None
                if req.op == XATTROP_GET_AND_SET:
                    os.setxattr(tgt, k, v, 0, **kw)
                    out[k] = cur if cur is not None else b""
                    continue
                bits = 64 if req.op == XATTROP_ADD_ARRAY64 else 32
                c = "q" if bits == 64 else "i"
                n = len(v) // (bits // 8)
                if cur is None:
                    old = (0,) * n
                elif len(cur) != len(v):
                    raise FopError(errno.EINVAL, f"xattrop {k}: stored value is {len(cur)} "
                                   f"bytes, operand {len(v)}")
                else:
                    old = struct.unpack(f">{n}{c}", cur)
                add = struct.unpack(f">{n}{c}", v)
                new = struct.pack(f">{n}{c}", *(_wrap(a + b, bits) for a, b in zip(old, add)))
                if new != cur:
                    os.setxattr(tgt, k, new, 0, **kw)
                out[k] = new
        finally:
            if e is not None:
                self._rel(e)
        return XattropRep(out)

    def _do_rchecksum(self, call: Call, req) -> RchecksumRep:
        data = os.pread(self._osfd(req.fd), req.length, req.offset)
        return RchecksumRep(zlib.adler32(data), hashlib.sha256(data).digest())
