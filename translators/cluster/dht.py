"""cluster/dht (alias cluster/distribute): the elastic hash over N subvolumes.

Placement. A name lives on the subvolume whose range, in its parent directory's layout, holds the
name's hash (hashfn.py; rsync temp names hash like their final name). Every directory exists on
every subvolume with the same gfid and carries its slice of the layout in `trusted.gvol.dht`
(layout.py). A file kept elsewhere than its hash says (space, rename, hard link) is found through a
zero-byte *linkto* file on the hashed subvolume: mode exactly S_IFREG|S_ISVTX, same gfid, xattr
`trusted.gvol.dht.linkto` = the data subvolume's translator name, NUL-terminated.

Caches (in memory, bounded LRU): directory gfid -> layout (+ the name it was looked up by, used to
heal it), file gfid -> the subvolume holding the data ("cached subvolume"). A cached entry found
stale (ESTALE from the subvolume) is rediscovered by a nameless lookup on all subvolumes. Child
up/down events clear the layout cache, so layouts seen while a subvolume was away are re-read.

Routing. Named lookup goes to the hashed subvolume (one round trip for a file); a directory is
then looked up on all others in parallel, its layout merged and healed (missing copies created
with the same gfid, mode and owner; when every subvolume answered, a single copy that lost its
slice gets exactly that slice back and the commit hash stays valid, while any other hole or
overlap means a fresh layout with an invalid commit hash, so misses there look everywhere). A
miss is final when lookup-optimize is on and the parent's layout commit hash is the volume's;
otherwise every subvolume is asked and a linkto is made for a file found elsewhere. File inode and
fd fops go to the cached subvolume (file fds are the child's own `Fd`, `ctx[self]` = subvolume
index). Directory fops that modify go to every subvolume, the *first up* one first; reads go to
the first up one. That first up subvolume is the authoritative copy of a directory's attributes
everywhere (lookup, stat, readdirplus, setattr order): it needs no name, so nameless fops agree
with named ones. (GlusterFS uses the directory's hashed subvolume, its MDS; mkdir still creates
on the hashed subvolume first and rmdir removes it there last, so lookups, which go to the hashed
subvolume, never see a half-made or half-removed directory.)

readdir(plus). opendir opens the directory on every up subvolume; the DHT fd keeps the children's
fds. The listing is subvolume 0 exhausted, then 1, ... (stable order). The first readdir also
fetches the first batch of every later subvolume in parallel, so a directory that fits one batch
per brick is listed in one parallel round trip; a batch not returned yet is kept in the fd for
the next call. Entries carry off = child_cookie * N + subvolume index (GlusterFS's itransform for
small offsets): storage/posix's cookies are positions i+1 in a per-fd snapshot of the directory,
so the product stays small, and a readdir at any returned off resumes exactly on the right brick
at the right place; an entry that exists for the whole listing is returned exactly once however
the directory changes meanwhile. The last entry of an exhausted subvolume gets off = index of the
next subvolume (its cookie 0), which saves a round trip per brick. Linkto files are dropped;
directories are listed only from the first subvolume that had the directory open (the attribute
authority), so each appears once.

rmdir. Removed on all non-hashed subvolumes in parallel, then on the hashed one. A subvolume that
is ENOTEMPTY only because of linkto files (stale after renames) is cleaned when no subvolume holds
a real entry. On any failure the copies already removed are re-created (same gfid, mode, owner and
layout slice) and the error (ENOTEMPTY, ...) is returned; if even that fails it is logged loudly
and the next lookup of the directory heals the missing copies. rmdir and directory rename need
every subvolume up (ENOTCONN otherwise): a copy left on a down brick would come back later.
"""
from __future__ import annotations

import errno
import logging
import re
import stat as S
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from ..fanout import fan_out
from ..fops import (
    EMPTY,
    CreateRep,
    EntryRep,
    EntryReq,
    FdReq,
    Fop,
    InodeReq,
    Kind,
    LinkReq,
    LookupReq,
    MkdirReq,
    MknodReq,
    OpenRep,
    ReaddirRep,
    ReaddirReq,
    RenameReq,
    SetxattrReq,
    StatfsRep,
)
from ..lru import LRU
from ..types import (
    PID_INTERNAL,
    ROOT_GFID,
    XATTR_DHT,
    XATTR_LINKTO,
    XATTR_PREFIX,
    XDATA_EXPECT_GFID,
    Call,
    Dirent,
    Fd,
    FopError,
    Statvfs,
    gfid_str,
)
from ..xlator import REGISTRY, Event, GraphError, Option, Translator, parse_size, register
from .hashfn import RSYNC_HASH_REGEX, NameHasher
from .layout import (
    COMMIT_HASH_INVALID,
    DEFAULT_COMMIT_HASH,
    Layout,
    brick_weight,
    start_index,
)

log = logging.getLogger(__name__)

LINKTO_MODE = S.S_IFREG | S.S_ISVTX
XATTR_COMMITHASH = XATTR_DHT + ".commithash"  # BE32 volume commit hash on the root
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
DU_REFRESH = 5.0  # seconds between statfs sweeps for weights and min-free-disk
CACHE_SIZE = 65536
# A file name resolved by a lookup is trusted this long by the unlink that usually follows it
# (the kernel looks a name up right before unlinking it), saving a second lookup round trip.
# A stale answer costs nothing: the brick refuses to unlink a name that is no longer that gfid
# (XDATA_EXPECT_GFID), and the unlink is redone after a fresh lookup.
RECENT_TTL = 1.0
_RD_COST = 160  # estimated bytes of a readdirplus entry besides its name (as storage/posix)
_GONE = (errno.ENOENT, errno.ESTALE)
_LK_XATTRS = (XATTR_LINKTO, XATTR_DHT)


@dataclass(slots=True)
class _DirInfo:
    layout: Layout
    parent: bytes | None = None  # how it was last looked up by name (for healing it)
    name: bytes | None = None


@dataclass(slots=True)
class _Found:
    """An entry as DHT resolved it."""
    rep: EntryRep  # attributes (and xattrs) of the data file / the authoritative dir copy
    idx: int  # cached subvolume (files) or the attribute authority (dirs)
    hashed: int | None  # hashed subvolume of the name (None: nameless or a hole)
    linkto: bool = False  # the hashed subvolume holds a linkto for it
    info: _DirInfo | None = None  # directories

    @property
    def is_dir(self) -> bool:
        return self.info is not None


@dataclass(slots=True)
class _DirFd:
    """ctx of a DHT directory fd: the children's fds and readdir batches fetched ahead."""
    fds: list[Fd | None]
    home: int  # directories are listed from this subvolume only
    ahead: dict[tuple[int, int], tuple[list[Dirent], bool]] = field(default_factory=dict)
    primed: bool = False  # first batches of the later subvolumes were requested


def _is_linkto(rep: EntryRep) -> bool:
    return rep.iatt.mode == LINKTO_MODE and bool(rep.xattrs) and XATTR_LINKTO in rep.xattrs


def _internal(call: Call) -> Call:
    if call.pid < 0:
        return call
    return Call(call.uid, call.gid, call.groups, PID_INTERNAL, call.lk_owner, call.client)


async def _both(a: Awaitable[Any], b: Awaitable[Any]) -> tuple[Any, Any]:
    """Await two things in parallel; the first FopError (in argument order) is raised."""
    out: list[Any] = [None, None]

    async def one(k: int, aw: Awaitable[Any]) -> None:
        try:
            out[k] = await aw
        except FopError as e:
            out[k] = e

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0, a)
        nursery.start_soon(one, 1, b)
    for r in out:
        if isinstance(r, FopError):
            raise r
    return out[0], out[1]


@register("cluster/dht")
class Distribute(Translator):
    min_children = 1
    max_children = None
    options_schema = {
        "lookup-optimize": Option("bool", True, doc="a miss on the hashed subvolume is final "
                                  "when the parent's layout commit hash is current"),
        "rsync-hash-regex": Option("str", RSYNC_HASH_REGEX, doc="names matching it hash like "
                                   "their group 1 (rsync temp files); 'none' disables"),
        "extra-hash-regex": Option("str", "", doc="a further regex, tried before "
                                   "rsync-hash-regex: matching names hash like their group 1"),
        "min-free-disk": Option("str", "10", doc="percent (10 or 10%) or a size (5GB): a create "
                                "hashing to a brick with less free goes to the roomiest brick"),
        "weighted-rebalance": Option("bool", True, doc="layout ranges proportional to brick "
                                     "size"),
    }

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.n = len(self.children)
        self.up = [True] * self.n  # optimistic: a child that is not there fails with ENOTCONN
        self._index = {id(c): i for i, c in enumerate(self.children)}
        self._by_name = {c.name: i for i, c in enumerate(self.children)}
        self._lt_value = [c.name.encode() + b"\0" for c in self.children]
        self.lookup_optimize: bool = self.opts["lookup-optimize"]
        try:
            self._hash = NameHasher(self.opts["rsync-hash-regex"],
                                    self.opts["extra-hash-regex"])
        except (re.error, UnicodeError) as e:
            raise GraphError(f"cluster/dht: bad rsync-hash-regex or extra-hash-regex: {e}") \
                from None
        self.weighted: bool = self.opts["weighted-rebalance"]
        self._min_free_pct, self._min_free_bytes = self._parse_min_free(
            self.opts["min-free-disk"])
        self.vol_commit = DEFAULT_COMMIT_HASH
        self._dirs: LRU = LRU(CACHE_SIZE)  # dir gfid -> _DirInfo
        self._files: LRU = LRU(CACHE_SIZE)  # file gfid -> subvolume index
        # (parent, name) -> (subvolume, gfid, time) of files seen by lookup or readdirplus
        self._recent: LRU = LRU(8192)
        self._inflight: dict[bytes, trio.Event] = {}
        self._du: list[Statvfs | None] = [None] * self.n
        self._du_time = -1e9

    @staticmethod
    def _parse_min_free(v: str) -> tuple[float, int]:
        s = str(v).strip()
        try:
            if s.endswith("%"):
                pct = float(s[:-1])
            else:
                try:
                    pct = float(s)
                except ValueError:
                    return 0.0, parse_size(s)
            if not 0 <= pct <= 100:
                raise ValueError("a percentage must be within 0..100")
            return pct, 0
        except ValueError as e:
            raise GraphError(f"cluster/dht: option min-free-disk: bad value {v!r}: {e}") \
                from None

    # ------------------------------------------------------------ children
    async def notify(self, event: Event, child: Translator | None) -> None:
        i = self._index.get(id(child))
        if i is None:
            return await super().notify(event, child)
        was_any = any(self.up)
        upnow = event is Event.CHILD_UP
        if self.up[i] != upnow:
            self.up[i] = upnow
            log.info("%s: subvolume %s is %s", self.name, child.name if child else "?",
                     "up" if upnow else "down")
            if upnow:  # layouts read while it was away may be partial: read them again
                self._dirs.clear()
            self._du_time = -1e9
        if upnow or (was_any and not any(self.up)):
            for p in self.parents:
                await p.notify(Event.CHILD_UP if any(self.up) else Event.CHILD_DOWN, self)

    def _child(self, i: int) -> Translator:
        if not self.up[i]:
            raise FopError(errno.ENOTCONN, f"subvolume {self.children[i].name} is down")
        return self.children[i]

    def _ups(self) -> list[int]:
        return [i for i in range(self.n) if self.up[i]]

    def _first_up(self) -> int:
        for i in range(self.n):
            if self.up[i]:
                return i
        raise FopError(errno.ENOTCONN, f"{self.name}: every subvolume is down")

    def _need_all_up(self, what: str) -> None:
        down = [self.children[i].name for i in range(self.n) if not self.up[i]]
        if down:
            raise FopError(errno.ENOTCONN, f"{what} needs every subvolume; down: "
                           + ", ".join(down))

    async def _fan(self, idxs: list[int], fn: Callable[[int], Awaitable[Any]]) -> list[Any]:
        """Run fn(i) for each i in parallel; -> list of length N: the reply or the FopError at
        each index asked, None elsewhere."""
        return await fan_out(self.n, idxs, fn)

    def _sv(self, i: int | None) -> str:
        return "-" if i is None else self.children[i].name

    # ------------------------------------------------------------ layouts
    def _hashed(self, layout: Layout, name: bytes, parent: bytes) -> int:
        i = layout.search(self._hash(name))
        if i is None:
            if all(self.up):
                self._dirs.pop(parent, None)  # re-read (and heal) on the next access
                raise FopError(errno.EIO, f"layout of {gfid_str(parent)} has a hole at the hash "
                               f"of {name!r}")
            raise FopError(errno.ENOTCONN, f"no up subvolume owns the hash of {name!r}")
        if not self.up[i]:
            raise FopError(errno.ENOTCONN, f"{name!r} hashes to {self._sv(i)}, which is down")
        return i

    async def _hashed_in(self, call: Call, parent: bytes, name: bytes) -> int:
        """The hashed subvolume of `name` in `parent`; a hole in a cached layout (every
        subvolume up) re-reads, and so heals, the parent's layout once."""
        layout = await self._layout(call, parent)
        try:
            return self._hashed(layout, name, parent)
        except FopError as e:
            if e.errno != errno.EIO:
                raise
        return self._hashed(await self._layout(call, parent), name, parent)

    async def _layout(self, call: Call, gfid: bytes) -> Layout:
        info = self._dirs.get(gfid)
        if info is not None:
            return info.layout
        ev = self._inflight.get(gfid)
        if ev is not None:
            await ev.wait()
            info = self._dirs.get(gfid)
            if info is not None:
                return info.layout
        ev = self._inflight[gfid] = trio.Event()
        try:
            f = await self._discover(call, gfid, ())
        finally:
            del self._inflight[gfid]
            ev.set()
        if f.info is None:
            raise FopError(errno.ENOTDIR, f"{gfid_str(gfid)} is not a directory")
        return f.info.layout

    async def _du_refresh(self, call: Call) -> None:
        now = time.monotonic()
        if now - self._du_time < DU_REFRESH:
            return
        self._du_time = now
        icall = _internal(call)
        req = InodeReq(ROOT_GFID)
        res = await self._fan(self._ups(), lambda i: self.children[i].statfs(icall, req))
        for i, r in enumerate(res):
            if isinstance(r, StatfsRep):
                self._du[i] = r.statvfs

    async def _weights(self, call: Call, members: list[int]) -> list[int]:
        if not self.weighted:
            return [1 if i in members else 0 for i in range(self.n)]
        await self._du_refresh(call)
        w: list[int | None] = []
        for i in range(self.n):
            v = self._du[i] if i in members else None
            w.append(brick_weight(v.blocks, v.frsize) if v is not None else
                     (None if i in members else 0))
        known = [x for x in w if x]
        dflt = max(known) if known else 1
        return [dflt if x is None else x for x in w]

    def _low(self, i: int) -> bool:
        v = self._du[i]
        if v is None:
            return False
        if self._min_free_bytes:
            return v.bavail * v.frsize < self._min_free_bytes
        return v.bavail * 100 < self._min_free_pct * v.blocks

    async def _placement(self, call: Call, hashed: int) -> int:
        """Where a new file hashing to `hashed` goes: there, unless it is below min-free-disk
        and another up subvolume is not."""
        if not (self._min_free_pct or self._min_free_bytes) or self.n == 1:
            return hashed
        await self._du_refresh(call)
        if not self._low(hashed):
            return hashed
        best, room = hashed, -1
        for i in self._ups():
            v = self._du[i]
            if v is not None and not self._low(i) and v.bavail * v.frsize > room:
                best, room = i, v.bavail * v.frsize
        return best

    # ------------------------------------------------------------ replies
    @staticmethod
    def _user_rep(rep: EntryRep, want: tuple[str, ...], call: Call) -> EntryRep:
        xa = rep.xattrs
        if not want:
            return rep if xa is None else EntryRep(rep.iatt, None)
        if not xa:
            return rep
        every = "*" in want
        keep = {k: v for k, v in xa.items()
                if (every or k in want) and (call.internal or not k.startswith(XATTR_PREFIX))}
        return EntryRep(rep.iatt, keep)

    @staticmethod
    def _xattrs_for(want: tuple[str, ...]) -> tuple[str, ...]:
        if not want:
            return _LK_XATTRS
        return tuple(dict.fromkeys(_LK_XATTRS + tuple(want)))

    # ------------------------------------------------------------ lookup
    async def lookup(self, call: Call, req: LookupReq) -> EntryRep:
        if req.name is None:
            if req.gfid is None:
                raise FopError(errno.EINVAL, "lookup needs a parent and a name, or a gfid")
            f = await self._lookup_gfid(call, req.gfid, req.xattrs)
        else:
            f = await self._resolve(call, req.parent, req.name, req.xattrs)
            if not f.is_dir:
                self._recent.put((req.parent, req.name),
                                 (f.idx, f.rep.iatt.gfid, time.monotonic()))
        return self._user_rep(f.rep, req.xattrs, call)

    async def _resolve(self, call: Call, parent: bytes, name: bytes,
                       want: tuple[str, ...] = (), retry: bool = True) -> _Found:
        layout = await self._layout(call, parent)
        i = layout.search(self._hash(name))
        if i is None or not self.up[i]:
            return await self._everywhere(call, parent, name, i, layout, want, None)
        icall = _internal(call)
        lreq = LookupReq(parent=parent, name=name, xattrs=self._xattrs_for(want))
        try:
            rep = await self.children[i].lookup(icall, lreq)
        except FopError as e:
            if e.errno == errno.ESTALE:  # the parent is missing on the hashed subvolume
                if retry:
                    await self._refresh_dir(call, parent)
                    return await self._resolve(call, parent, name, want, False)
                return await self._everywhere(call, parent, name, i, layout, want, None)
            if e.errno != errno.ENOENT:
                raise
            if (self.lookup_optimize and layout.commit_hash == self.vol_commit
                    and self.vol_commit != COMMIT_HASH_INVALID):
                raise
            return await self._everywhere(call, parent, name, i, layout, want, e)
        if rep.iatt.is_dir:
            res: list[Any] = [None] * self.n
            res[i] = rep
            others = [k for k in self._ups() if k != i]
            if others:
                part = await self._fan(others, lambda k: self.children[k].lookup(icall, lreq))
                for k in others:
                    res[k] = part[k]
            return await self._dir_merge(call, rep.iatt.gfid, parent, name, res, i, want)
        if _is_linkto(rep):
            t = self._by_name.get(rep.xattrs[XATTR_LINKTO].rstrip(b"\0").decode(errors="replace"))
            if t is None or t == i:
                log.warning("%s: linkto %r on %s names an unknown subvolume %r", self.name, name,
                            self._sv(i), rep.xattrs[XATTR_LINKTO])
                return await self._everywhere(call, parent, name, i, layout, want, None)
            try:
                trep = await self._child(t).lookup(icall, lreq)
            except FopError as e:
                if e.errno not in _GONE:
                    raise
                trep = None
            if (trep is None or trep.iatt.gfid != rep.iatt.gfid or trep.iatt.is_dir
                    or _is_linkto(trep)):
                # stale linkto: the file moved on; find it
                return await self._everywhere(call, parent, name, i, layout, want, None)
            self._files.put(trep.iatt.gfid, t)
            return _Found(trep, t, i, True)
        self._files.put(rep.iatt.gfid, i)
        return _Found(rep, i, i)

    async def _resolve_opt(self, call: Call, parent: bytes, name: bytes) -> _Found | None:
        try:
            return await self._resolve(call, parent, name)
        except FopError as e:
            if e.errno == errno.ENOENT:
                return None
            raise

    async def _everywhere(self, call: Call, parent: bytes, name: bytes, hashed: int | None,
                          layout: Layout, want: tuple[str, ...],
                          hashed_err: FopError | None) -> _Found:
        """Look the name up on every up subvolume (the hashed one was missing, or down)."""
        icall = _internal(call)
        lreq = LookupReq(parent=parent, name=name, xattrs=self._xattrs_for(want))
        ask = [k for k in self._ups() if not (k == hashed and hashed_err is not None)]
        res = await self._fan(ask, lambda k: self.children[k].lookup(icall, lreq))
        if hashed_err is not None and hashed is not None:
            res[hashed] = hashed_err
        dirs = [k for k, r in enumerate(res) if isinstance(r, EntryRep) and r.iatt.is_dir]
        data = [k for k, r in enumerate(res) if isinstance(r, EntryRep) and not r.iatt.is_dir
                and not _is_linkto(r)]
        if dirs and data:
            log.error("%s: %r in %s is a directory on %s but a file on %s", self.name, name,
                      gfid_str(parent), ", ".join(self._sv(k) for k in dirs),
                      ", ".join(self._sv(k) for k in data))
            raise FopError(errno.EIO, f"{name!r} is a directory on some subvolumes and a file "
                           "on others")
        if dirs:
            return await self._dir_merge(call, res[dirs[0]].iatt.gfid, parent, name, res,
                                         hashed, want)
        if not data:
            errs = [r for r in res if isinstance(r, FopError) and r.errno not in _GONE]
            if hashed is not None and not self.up[hashed]:
                raise FopError(errno.ENOTCONN, f"{name!r} hashes to {self._sv(hashed)}, "
                               "which is down")
            if hashed is None and not all(self.up):
                raise FopError(errno.ENOTCONN, f"{name!r} may be on a subvolume that is down")
            if errs:
                raise errs[0]
            raise FopError(errno.ENOENT, f"{name!r}: no such entry")
        gfids = {res[k].iatt.gfid for k in data}
        if len(gfids) > 1:
            log.error("%s: %r in %s has different gfids on %s", self.name, name,
                      gfid_str(parent), ", ".join(self._sv(k) for k in data))
            raise FopError(errno.EIO, f"{name!r} has different gfids on different subvolumes")
        if len(data) > 1:
            log.warning("%s: %r in %s: data file on several subvolumes: %s", self.name, name,
                        gfid_str(parent), ", ".join(self._sv(k) for k in data))
        k = hashed if hashed in data else data[0]
        rep = res[k]
        self._files.put(rep.iatt.gfid, k)
        linked = False
        if hashed is not None and hashed != k and self.up[hashed]:
            h = res[hashed]
            if isinstance(h, EntryRep) and _is_linkto(h) and h.iatt.gfid == rep.iatt.gfid:
                linked = True
            elif isinstance(h, FopError) and h.errno == errno.ENOENT:
                try:  # a linkto so the next lookup takes one round trip
                    await self._make_linkto(icall, hashed, parent, name, rep.iatt.gfid, k)
                    linked = True
                except FopError as e:
                    log.info("%s: cannot create linkto %r on %s: %s", self.name, name,
                             self._sv(hashed), e)
        return _Found(rep, k, hashed, linked)

    async def _lookup_gfid(self, call: Call, gfid: bytes, want: tuple[str, ...]) -> _Found:
        i = self._files.get(gfid)
        if i is not None and self.up[i]:
            try:
                rep = await self.children[i].lookup(
                    _internal(call), LookupReq(gfid=gfid, xattrs=self._xattrs_for(want)))
            except FopError as e:
                if e.errno not in _GONE:
                    raise
            else:
                if not rep.iatt.is_dir and not _is_linkto(rep):
                    return _Found(rep, i, None)
            self._files.pop(gfid, None)
        return await self._discover(call, gfid, want)

    async def _discover(self, call: Call, gfid: bytes, want: tuple[str, ...]) -> _Found:
        """Nameless lookup on every up subvolume: what and where is `gfid`?"""
        ups = self._ups()
        if not ups:
            raise FopError(errno.ENOTCONN, f"{self.name}: every subvolume is down")
        icall = _internal(call)
        xattrs = self._xattrs_for(want)
        if gfid == ROOT_GFID:
            xattrs += (XATTR_COMMITHASH,)
        lreq = LookupReq(gfid=gfid, xattrs=xattrs)
        res = await self._fan(ups, lambda k: self.children[k].lookup(icall, lreq))
        dirs = [k for k, r in enumerate(res) if isinstance(r, EntryRep) and r.iatt.is_dir]
        if dirs:
            if gfid == ROOT_GFID:
                for k in dirs:
                    v = (res[k].xattrs or {}).get(XATTR_COMMITHASH)
                    if v is not None and len(v) == 4:
                        self.vol_commit = struct.unpack(">I", v)[0]
                        break
            old = self._dirs.get(gfid)
            parent, name = (old.parent, old.name) if old is not None else (None, None)
            return await self._dir_merge(call, gfid, parent, name, res, None, want)
        data = [k for k, r in enumerate(res) if isinstance(r, EntryRep) and not _is_linkto(r)]
        if data:
            if len(data) > 1:
                log.warning("%s: gfid %s has data on several subvolumes: %s", self.name,
                            gfid_str(gfid), ", ".join(self._sv(k) for k in data))
            k = data[0]
            self._files.put(gfid, k)
            return _Found(res[k], k, None)
        errs = [r for r in res if isinstance(r, FopError) and r.errno not in _GONE]
        if errs:
            raise errs[0]
        raise FopError(errno.ESTALE, f"no object with gfid {gfid_str(gfid)}")

    async def _dir_merge(self, call: Call, gfid: bytes, parent: bytes | None,
                         name: bytes | None, res: list[Any], hashed: int | None,
                         want: tuple[str, ...]) -> _Found:
        """Check, merge and heal the copies of a directory. res[k]: EntryRep, FopError or
        None (not asked: down)."""
        n = self.n
        for k, r in enumerate(res):
            if not isinstance(r, EntryRep):
                continue
            if not r.iatt.is_dir or r.iatt.gfid != gfid:
                what = "a file" if not r.iatt.is_dir else f"gfid {gfid_str(r.iatt.gfid)}"
                log.error("%s: directory %r (gfid %s) is %s on %s", self.name, name,
                          gfid_str(gfid), what, self._sv(k))
                raise FopError(errno.EIO, f"directory {name!r} is {what} on "
                               f"{self._sv(k)}")
        present = [k for k in range(n) if isinstance(res[k], EntryRep)]
        missing = [k for k in range(n)
                   if isinstance(res[k], FopError) and res[k].errno in _GONE]
        unknown = [k for k in range(n) if k not in present and k not in missing]
        values = [(res[k].xattrs or {}).get(XATTR_DHT) if k in present else None
                  for k in range(n)]
        layout = Layout.from_xattrs(values)
        healable = parent is not None and name is not None
        relaid = False
        members = present + (missing if healable else [])
        lost = [k for k in members if values[k] is None]  # copies without any layout xattr
        gaps = layout.gaps()
        if (not layout.complete and not unknown and len(lost) == 1 and len(gaps) == 1
                and layout.anomalies()[1] == 0 and layout.commit_hash != COMMIT_HASH_INVALID):
            # one copy lost its slice: give it back, so every name stays where it hashes
            layout = layout.with_range(lost[0], gaps[0], layout.commit_hash)
            relaid = True
            log.info("%s: directory %s (%r): %s gets its range back %#x..%#x", self.name,
                     gfid_str(gfid), name, self._sv(lost[0]), *gaps[0])
        if not layout.complete and not unknown:
            weights = await self._weights(call, members)
            fresh = all(v is None for v in values) and gfid == ROOT_GFID
            layout = Layout.new(weights, start_index(gfid, n),
                                self.vol_commit if fresh else COMMIT_HASH_INVALID)
            relaid = True
            log.info("%s: directory %s (%r): new layout %r", self.name, gfid_str(gfid), name,
                     layout)
        elif not layout.complete:
            log.warning("%s: directory %s (%r) has an incomplete layout while %s are away",
                        self.name, gfid_str(gfid), name, ", ".join(self._sv(k) for k in unknown))
        icall = _internal(call)
        ref = res[present[0]].iatt if present else None
        if healable and missing and ref is not None:
            hcall = Call(ref.uid, ref.gid, (), PID_INTERNAL, call.lk_owner, call.client)

            def mk(k: int) -> Awaitable[Any]:
                return self.children[k].mkdir(hcall, MkdirReq(
                    parent, name, ref.mode & 0o7777, gfid, 0,  # type: ignore[arg-type]
                    {XATTR_DHT: layout.encode(k)}))

            made = await self._fan(missing, mk)
            for k in missing:
                r = made[k]
                if isinstance(r, EntryRep):
                    log.info("%s: healed directory %r (%s) on %s", self.name, name,
                             gfid_str(gfid), self._sv(k))
                    res[k] = EntryRep(r.iatt, {XATTR_DHT: layout.encode(k)})
                    values[k] = layout.encode(k)
                else:
                    log.warning("%s: cannot heal directory %r (%s) on %s: %s", self.name,
                                name, gfid_str(gfid), self._sv(k), r)
        if relaid:
            fix = [k for k in range(n) if isinstance(res[k], EntryRep)
                   and values[k] != layout.encode(k)]
            if fix:
                out = await self._fan(fix, lambda k: self.children[k].setxattr(
                    icall, SetxattrReq(gfid, XATTR_DHT, layout.encode(k))))
                for k in fix:
                    if isinstance(out[k], FopError):
                        log.warning("%s: cannot write layout of %s on %s: %s", self.name,
                                    gfid_str(gfid), self._sv(k), out[k])
        home = next((k for k in range(n) if self.up[k] and isinstance(res[k], EntryRep)), None)
        if home is None:
            errs = [r for r in res if isinstance(r, FopError)]
            raise errs[0] if errs else FopError(errno.ENOTCONN, "no copy of the directory")
        info = _DirInfo(layout, parent, name)
        if parent is None:
            old = self._dirs.get(gfid)
            if old is not None:
                info.parent, info.name = old.parent, old.name
        self._dirs.put(gfid, info)
        self._files.pop(gfid, None)
        return _Found(res[home], home, hashed, False, info)

    async def _refresh_dir(self, call: Call, gfid: bytes) -> None:
        """Re-read (and heal) a directory whose copy a subvolume lacked."""
        info = self._dirs.pop(gfid, None)
        if info is not None and info.parent is not None and info.name is not None:
            try:
                await self._resolve(call, info.parent, info.name, (), False)
                return
            except FopError:
                pass
        await self._layout(call, gfid)

    # ------------------------------------------------------------ linkto files
    async def _make_linkto(self, icall: Call, sub: int, parent: bytes, name: bytes, gfid: bytes,
                           target: int) -> None:
        """Linkto (parent, name) -> target on `sub` with the file's gfid. If the gfid already
        lives on `sub` (a linkto of another hard link), the new name is a hard link of it.
        EEXIST when the name exists."""
        child = self._child(sub)
        try:
            await child.mknod(icall, MknodReq(parent, name, LINKTO_MODE, 0, gfid, 0,
                                              {XATTR_LINKTO: self._lt_value[target]}))
            return
        except FopError as e:
            if e.errno != errno.EEXIST:
                raise
            first = e
        try:
            await child.lookup(icall, LookupReq(parent=parent, name=name))
            raise first  # the name exists
        except FopError as e:
            if e.errno != errno.ENOENT:
                raise
        rep = await child.link(icall, LinkReq(gfid, parent, name))
        if rep.iatt.mode != LINKTO_MODE:
            log.warning("%s: gfid %s is a data file on %s as well as on %s", self.name,
                        gfid_str(gfid), self._sv(sub), self._sv(target))

    async def _unlink_quiet(self, icall: Call, sub: int, parent: bytes, name: bytes,
                            what: str) -> None:
        try:
            await self._child(sub).unlink(icall, EntryReq(parent, name))
        except FopError as e:
            if e.errno != errno.ENOENT:
                log.warning("%s: cannot remove %s %r on %s: %s", self.name, what, name,
                            self._sv(sub), e)

    async def _clear_stale(self, call: Call, sub: int, parent: bytes, name: bytes) -> bool:
        """If (parent, name) on `sub` is a linkto whose target lacks the file, remove it."""
        icall = _internal(call)
        lreq = LookupReq(parent=parent, name=name, xattrs=_LK_XATTRS)
        try:
            rep = await self._child(sub).lookup(icall, lreq)
        except FopError:
            return False
        if not _is_linkto(rep):
            return False
        t = self._by_name.get(rep.xattrs[XATTR_LINKTO].rstrip(b"\0").decode(errors="replace"))
        if t is not None and t != sub:
            try:
                trep = await self._child(t).lookup(icall, lreq)
            except FopError as e:
                if e.errno not in _GONE:
                    return False
            else:
                if trep.iatt.gfid == rep.iatt.gfid and not _is_linkto(trep):
                    return False
        log.info("%s: removing stale linkto %r on %s", self.name, name, self._sv(sub))
        await self._unlink_quiet(icall, sub, parent, name, "stale linkto")
        return True

    # ------------------------------------------------------------ inode routing
    async def _where(self, call: Call, gfid: bytes) -> int | _DirInfo:
        i = self._files.get(gfid)
        if i is not None:
            return i
        info = self._dirs.get(gfid)
        if info is not None:
            return info
        f = await self._discover(call, gfid, ())
        return f.info if f.info is not None else f.idx

    async def handle(self, fop: Fop, call: Call, req: Any) -> Any:
        kind = fop.kind
        if kind is Kind.FD:
            st = req.fd.ctx.get(self)
            if type(st) is int:
                return await getattr(self._child(st), fop.name)(call, req)
            if type(st) is _DirFd:
                return await self._dir_fd_fop(fop, call, req, st)
            raise FopError(errno.EBADF, f"{fop.name}: fd was not opened through {self.name}")
        if kind is Kind.INODE:
            return await self._inode_fop(fop, call, req)
        if kind is Kind.ENTRY:  # entrylk
            if req.name is None:
                return await getattr(self.children[self._first_up()], fop.name)(call, req)
            i = await self._hashed_in(call, req.parent, req.name)
            return await getattr(self.children[i], fop.name)(call, req)
        return await super().handle(fop, call, req)

    async def _inode_fop(self, fop: Fop, call: Call, req: Any) -> Any:
        gfid = req.gfid
        w = await self._where(call, gfid)
        if type(w) is int:
            try:
                return await getattr(self._child(w), fop.name)(call, req)
            except FopError as e:
                if e.errno != errno.ESTALE:
                    raise
            self._files.pop(gfid, None)  # moved or gone: ask everyone, then once more
            w = await self._where(call, gfid)
            if type(w) is int:
                return await getattr(self._child(w), fop.name)(call, req)
        return await self._dir_inode_fop(fop, call, req)

    async def _dir_inode_fop(self, fop: Fop, call: Call, req: Any) -> Any:
        ups = self._ups()
        if not ups:
            raise FopError(errno.ENOTCONN, f"{self.name}: every subvolume is down")
        err: FopError | None = None
        for pos, k in enumerate(ups):  # the first copy that has the directory answers
            try:
                rep = await getattr(self.children[k], fop.name)(call, req)
            except FopError as e:
                # ENOTCONN: that brick died before its child-down event reached us
                if e.errno not in (errno.ESTALE, errno.ENOTCONN):
                    raise
                err = e
                continue
            if fop.modifies:
                rest = ups[pos + 1:]
                if rest:
                    out = await self._fan(rest, lambda j: getattr(self.children[j], fop.name)(
                        call, req))
                    for j in rest:
                        if isinstance(out[j], FopError):
                            log.warning("%s: %s of directory %s failed on %s: %s", self.name,
                                        fop.name, gfid_str(req.gfid), self._sv(j), out[j])
            return rep
        assert err is not None
        raise err

    async def _dir_fd_fop(self, fop: Fop, call: Call, req: Any, st: _DirFd) -> Any:
        order = [k for k in range(self.n) if st.fds[k] is not None and self.up[k]]
        if not order:
            raise FopError(errno.ENOTCONN, f"{fop.name}: no subvolume of the directory is up")
        if st.home in order:
            order.remove(st.home)
            order.insert(0, st.home)
        first = order[0]
        rep = await getattr(self.children[first], fop.name)(call, replace(req, fd=st.fds[first]))
        if fop.modifies or fop.name == "fsyncdir":
            rest = order[1:]
            if rest:
                out = await self._fan(rest, lambda j: getattr(self.children[j], fop.name)(
                    call, replace(req, fd=st.fds[j])))
                for j in rest:
                    if isinstance(out[j], FopError):
                        log.warning("%s: %s of directory %s failed on %s: %s", self.name,
                                    fop.name, gfid_str(req.fd.gfid), self._sv(j), out[j])
        return rep

    async def open(self, call: Call, req: Any) -> OpenRep:
        gfid = req.gfid
        for attempt in (0, 1):
            w = await self._where(call, gfid)
            if type(w) is not int:
                rep = await self.children[self._first_up()].open(call, req)
                rep.fd.ctx[self] = self._first_up()
                return rep
            try:
                rep = await self._child(w).open(call, req)
            except FopError as e:
                if e.errno != errno.ESTALE or attempt:
                    raise
                self._files.pop(gfid, None)
                continue
            rep.fd.ctx[self] = w
            return rep
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ creation
    async def _new_entry(self, fopname: str, call: Call, req: Any) -> Any:
        """create / mknod / symlink: on the hashed subvolume (or, below min-free-disk, on the
        roomiest one with a linkto on the hashed one). One round trip in the common case."""
        icall = _internal(call)
        for attempt in range(3):
            h = await self._hashed_in(call, req.parent, req.name)
            t = await self._placement(call, h)
            if t != h:
                try:
                    await self._make_linkto(icall, h, req.parent, req.name, req.gfid, t)
                except FopError as e:
                    if e.errno == errno.EEXIST and attempt < 2 and \
                            await self._clear_stale(call, h, req.parent, req.name):
                        continue
                    raise
            try:
                rep = await getattr(self.children[t], fopname)(call, req)
            except FopError as e:
                if t != h:
                    await self._unlink_quiet(icall, h, req.parent, req.name, "linkto")
                if attempt < 2:
                    if e.errno == errno.ESTALE:  # the parent is missing there: heal, retry
                        await self._refresh_dir(call, req.parent)
                        continue
                    if e.errno == errno.EEXIST and \
                            await self._clear_stale(call, t, req.parent, req.name):
                        continue
                raise
            self._files.put(req.gfid, t)
            return rep, t
        raise AssertionError("unreachable")

    async def create(self, call: Call, req: Any) -> CreateRep:
        rep, t = await self._new_entry("create", call, req)
        if rep.fd is not None:
            rep.fd.ctx[self] = t
        return rep

    async def mknod(self, call: Call, req: Any) -> EntryRep:
        return (await self._new_entry("mknod", call, req))[0]

    async def symlink(self, call: Call, req: Any) -> EntryRep:
        return (await self._new_entry("symlink", call, req))[0]

    async def mkdir(self, call: Call, req: MkdirReq) -> EntryRep:
        icall = _internal(call)
        for attempt in (0, 1):
            h = await self._hashed_in(call, req.parent, req.name)
            ups = self._ups()
            weights = await self._weights(call, ups)
            new = Layout.new(weights, start_index(req.gfid, self.n), self.vol_commit)
            extra = dict(req.xattrs or {})
            try:
                rep = await self.children[h].mkdir(
                    icall, replace(req, xattrs={**extra, XATTR_DHT: new.encode(h)}))
            except FopError as e:
                if attempt == 0 and e.errno == errno.ESTALE:
                    await self._refresh_dir(call, req.parent)
                    continue
                if attempt == 0 and e.errno == errno.EEXIST and \
                        await self._clear_stale(call, h, req.parent, req.name):
                    continue
                raise
            break
        others = [k for k in ups if k != h]
        res: list[Any] = [None] * self.n
        if others:
            res = await self._fan(others, lambda k: self.children[k].mkdir(
                icall, replace(req, xattrs={**extra, XATTR_DHT: new.encode(k)})))
        res[h] = rep
        ok = True
        for k in others:
            r = res[k]
            if isinstance(r, FopError):
                ok = False
                log.warning("%s: mkdir %r (%s) failed on %s: %s; the next lookup heals it",
                            self.name, req.name, gfid_str(req.gfid), self._sv(k), r)
        if ok:
            self._dirs.put(req.gfid, _DirInfo(new, req.parent, req.name))
        home = next(k for k in range(self.n) if isinstance(res[k], EntryRep))
        return EntryRep(res[home].iatt, None)

    # ------------------------------------------------------------ removal
    async def unlink(self, call: Call, req: EntryReq) -> Any:
        hit = self._recent.pop((req.parent, req.name), None)
        info = self._dirs.get(req.parent) if hit is not None else None
        if info is not None and time.monotonic() - hit[2] < RECENT_TTL:
            idx, gfid, _ = hit
            hashed = info.layout.search(self._hash(req.name))
            # the brick refuses if the name is now another file (ESTALE): no orphaned data
            xd = dict(req.xdata or {})
            xd[XDATA_EXPECT_GFID] = gfid
            try:
                rep = await self._child(idx).unlink(call, replace(req, xdata=xd))
            except FopError as e:
                if e.errno not in _GONE:
                    raise
                # the name moved or was replaced since: resolve it afresh below
            else:
                if hashed is not None and hashed != idx:
                    await self._unlink_quiet(_internal(call), hashed, req.parent, req.name,
                                             "linkto")
                return rep
        f = await self._resolve(call, req.parent, req.name)
        if f.is_dir:
            raise FopError(errno.EISDIR, f"unlink {req.name!r}: is a directory")
        rep = await self._child(f.idx).unlink(call, req)
        if f.linkto and f.hashed is not None and f.hashed != f.idx:
            await self._unlink_quiet(_internal(call), f.hashed, req.parent, req.name, "linkto")
        return rep

    async def _linkto_only(self, call: Call, sub: int, parent: bytes,
                           name: bytes) -> list[bytes] | None:
        """Names in directory (parent, name) on `sub` if all of them are linkto files, else
        None (a real entry is there)."""
        icall = _internal(call)
        child = self.children[sub]
        try:
            rep = await child.lookup(icall, LookupReq(parent=parent, name=name))
            fd = (await child.opendir(icall, InodeReq(rep.iatt.gfid))).fd
        except FopError:
            return None
        names: list[bytes] = []
        try:
            off = 0
            while True:
                r = await child.readdir(icall, ReaddirReq(fd, off, 65536, True, (XATTR_LINKTO,)))
                for e in r.entries:
                    if (e.iatt is None or e.iatt.mode != LINKTO_MODE or not e.xattrs
                            or XATTR_LINKTO not in e.xattrs):
                        return None
                    names.append(e.name)
                if r.eof or not r.entries:
                    return names
                off = r.entries[-1].off
        except FopError:
            return None
        finally:
            try:
                await child.releasedir(icall, FdReq(fd))
            except FopError:
                pass

    async def rmdir(self, call: Call, req: EntryReq) -> Any:
        self._need_all_up("rmdir")
        h = await self._hashed_in(call, req.parent, req.name)
        icall = _internal(call)
        # what a rollback would need: the directory as the hashed subvolume has it
        try:
            ref = await self.children[h].lookup(icall, LookupReq(parent=req.parent,
                                                                 name=req.name))
        except FopError as e:
            if e.errno != errno.ENOENT:
                raise
            ref = None
        if ref is not None and not ref.iatt.is_dir:
            raise FopError(errno.ENOTDIR, f"rmdir {req.name!r}: not a directory")
        others = [k for k in range(self.n) if k != h]
        res = await self._fan(others, lambda k: self.children[k].rmdir(call, req)) \
            if others else [None] * self.n
        removed = [k for k in others if res[k] is not None and not isinstance(res[k], FopError)]
        bad = [k for k in others if isinstance(res[k], FopError) and res[k].errno not in _GONE]
        stale: dict[int, list[bytes]] = {}
        err: FopError | None = None
        for k in bad:
            if res[k].errno == errno.ENOTEMPTY:
                names = await self._linkto_only(call, k, req.parent, req.name)
                if names is not None:
                    stale[k] = names
                    continue
            err = res[k]
            break
        if err is None and stale:
            names = await self._linkto_only(call, h, req.parent, req.name)
            if names is None:  # real entries on the hashed subvolume
                err = FopError(errno.ENOTEMPTY, f"rmdir {req.name!r}: directory not empty")
            else:
                for k, lst in stale.items():
                    err = await self._purge_and_rmdir(call, k, req, ref, lst)
                    if err is not None:
                        break
                    removed.append(k)
        if err is None:
            try:
                await self.children[h].rmdir(call, req)
            except FopError as e:
                err = e
                if e.errno == errno.ENOTEMPTY:
                    names = await self._linkto_only(call, h, req.parent, req.name)
                    if names is not None:
                        err = await self._purge_and_rmdir(call, h, req, ref, names)
                elif e.errno == errno.ENOENT and ref is None and removed:
                    err = None  # it was only on the others
        if err is not None:
            if ref is not None:
                await self._rollback_rmdir(call, req, ref, removed)
            raise err
        if ref is not None:
            self._dirs.pop(ref.iatt.gfid, None)
        return EMPTY

    async def _purge_and_rmdir(self, call: Call, k: int, req: EntryReq, ref: EntryRep | None,
                               names: list[bytes]) -> FopError | None:
        icall = _internal(call)
        child = self.children[k]
        try:
            gfid = ref.iatt.gfid if ref is not None else \
                (await child.lookup(icall, LookupReq(parent=req.parent, name=req.name))).iatt.gfid
            for nm in names:
                log.info("%s: rmdir %r: removing stale linkto %r on %s", self.name, req.name,
                         nm, self._sv(k))
                await self._unlink_quiet(icall, k, gfid, nm, "stale linkto")
            await child.rmdir(call, req)
        except FopError as e:
            return e
        return None

    async def _rollback_rmdir(self, call: Call, req: EntryReq, ref: EntryRep,
                              removed: list[int]) -> None:
        if not removed:
            return
        it = ref.iatt
        info = self._dirs.get(it.gfid)
        hcall = Call(it.uid, it.gid, (), PID_INTERNAL, call.lk_owner, call.client)

        def mk(k: int) -> Awaitable[Any]:
            xa = {XATTR_DHT: info.layout.encode(k)} if info is not None else None
            return self.children[k].mkdir(hcall, MkdirReq(req.parent, req.name, it.mode & 0o7777,
                                                          it.gfid, 0, xa))

        out = await self._fan(removed, mk)
        for k in removed:
            if isinstance(out[k], FopError):
                log.error("%s: rmdir %r failed part way and the copy on %s could not be "
                          "re-created (%s); the next lookup heals it", self.name, req.name,
                          self._sv(k), out[k])
        if info is None:
            self._dirs.pop(it.gfid, None)

    # ------------------------------------------------------------ link and rename
    async def link(self, call: Call, req: LinkReq) -> EntryRep:
        icall = _internal(call)
        for attempt in (0, 1):
            w = await self._where(call, req.gfid)
            if type(w) is not int:
                raise FopError(errno.EPERM, "hard links to directories are not allowed")
            h = await self._hashed_in(call, req.newparent, req.newname)
            if h != w:
                try:
                    await self._make_linkto(icall, h, req.newparent, req.newname, req.gfid, w)
                except FopError as e:
                    if e.errno == errno.EEXIST and attempt == 0 and \
                            await self._clear_stale(call, h, req.newparent, req.newname):
                        continue
                    raise
            try:
                return await self._child(w).link(call, req)
            except FopError as e:
                if h != w:
                    await self._unlink_quiet(icall, h, req.newparent, req.newname, "linkto")
                if e.errno == errno.ESTALE and attempt == 0:
                    self._files.pop(req.gfid, None)
                    continue
                if e.errno == errno.EEXIST and attempt == 0 and \
                        await self._clear_stale(call, w, req.newparent, req.newname):
                    continue
                raise
        raise AssertionError("unreachable")

    async def rename(self, call: Call, req: RenameReq) -> Any:
        if req.flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or \
                req.flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise FopError(errno.EINVAL, f"rename: bad flags {req.flags:#x}")
        self._recent.pop((req.oldparent, req.oldname), None)
        self._recent.pop((req.newparent, req.newname), None)
        if req.oldparent == req.newparent and req.oldname == req.newname:
            await self._resolve(call, req.oldparent, req.oldname)
            return EMPTY
        src, dst = await _both(self._resolve(call, req.oldparent, req.oldname),
                               self._resolve_opt(call, req.newparent, req.newname))
        if dst is not None and dst.rep.iatt.gfid == src.rep.iatt.gfid:
            if req.flags & RENAME_NOREPLACE:
                raise FopError(errno.EEXIST, f"rename: {req.newname!r} exists")
            return EMPTY  # two names of one file: POSIX says do nothing
        if dst is not None and req.flags & RENAME_NOREPLACE:
            raise FopError(errno.EEXIST, f"rename: {req.newname!r} exists")
        if req.flags & RENAME_EXCHANGE and dst is None:
            raise FopError(errno.ENOENT, f"rename: {req.newname!r} does not exist")
        if src.is_dir:
            if dst is not None and not dst.is_dir and not req.flags & RENAME_EXCHANGE:
                raise FopError(errno.ENOTDIR, f"rename: {req.newname!r} is not a directory")
            return await self._rename_dir(call, req, src, dst)
        if dst is not None and dst.is_dir and not req.flags & RENAME_EXCHANGE:
            raise FopError(errno.EISDIR, f"rename: {req.newname!r} is a directory")
        dh = await self._hashed_in(call, req.newparent, req.newname)
        if req.flags & RENAME_EXCHANGE:
            assert dst is not None
            # only when no linkto is involved before or after: both names live where they hash
            if dst.is_dir or not (src.idx == dst.idx == dh == src.hashed):
                raise FopError(errno.EINVAL, "rename exchange across subvolumes is not "
                               "supported")
            return await self._child(src.idx).rename(call, req)
        return await self._rename_file(call, req, src, dst, dh)

    async def _rename_file(self, call: Call, req: RenameReq, src: _Found, dst: _Found | None,
                           dh: int) -> Any:
        icall = _internal(call)
        sc = src.idx
        gfid = src.rep.iatt.gfid
        made: bytes | None = None  # name of the linkto made on dh for the new name
        replace_dst = False
        if dh != sc:
            # "create links before rename": the new name never disappears
            replace_dst = dst is not None and (dst.idx == dh or dst.linkto)
            if not replace_dst:
                try:
                    await self._make_linkto(icall, dh, req.newparent, req.newname, gfid, sc)
                    made = req.newname
                except FopError as e:
                    if e.errno != errno.EEXIST:
                        raise
                    replace_dst = True
            if replace_dst:  # an entry holds the name on dh: swap our linkto in afterwards
                made = b".gvol-dht-" + gfid.hex().encode() + b".tmp"
                await self._unlink_quiet(icall, dh, req.newparent, made, "leftover")
                await self._make_linkto(icall, dh, req.newparent, made, gfid, sc)
        try:
            await self._child(sc).rename(call, req)
        except FopError:
            if made is not None:
                await self._unlink_quiet(icall, dh, req.newparent, made, "linkto")
            raise
        if replace_dst and made is not None:
            try:
                await self._child(dh).rename(icall, RenameReq(req.newparent, made,
                                                              req.newparent, req.newname))
            except FopError as e:
                log.warning("%s: rename %r: cannot put the linkto in place on %s: %s",
                            self.name, req.newname, self._sv(dh), e)
                await self._unlink_quiet(icall, dh, req.newparent, made, "linkto")
        if dst is not None and dst.idx not in (sc, dh):
            # the overwritten destination's data lived on a third subvolume
            await self._unlink_quiet(icall, dst.idx, req.newparent, req.newname,
                                     "overwritten file")
        if src.linkto and src.hashed is not None and src.hashed != sc:
            await self._unlink_quiet(icall, src.hashed, req.oldparent, req.oldname,
                                     "old linkto")
        self._files.put(gfid, sc)
        return EMPTY

    async def _rename_dir(self, call: Call, req: RenameReq, src: _Found,
                          dst: _Found | None) -> Any:
        self._need_all_up("directory rename")
        dh = await self._hashed_in(call, req.newparent, req.newname)
        await self.children[dh].rename(call, req)
        others = [k for k in range(self.n) if k != dh]
        res = await self._fan(others, lambda k: self.children[k].rename(call, req)) \
            if others else [None] * self.n
        failed = [k for k in others if isinstance(res[k], FopError)
                  and res[k].errno not in _GONE]
        if failed:
            err = res[failed[0]]
            done = [dh] + [k for k in others if not isinstance(res[k], FopError)]
            await self._rollback_rename_dir(call, req, dst, done)
            log.warning("%s: rename of directory %r failed on %s (%s); rolled back", self.name,
                        req.oldname, self._sv(failed[0]), err)
            raise err
        info = self._dirs.get(src.rep.iatt.gfid)
        if info is not None:
            info.parent, info.name = req.newparent, req.newname
        if dst is not None and not req.flags & RENAME_EXCHANGE:
            self._dirs.pop(dst.rep.iatt.gfid, None)
        return EMPTY

    async def _rollback_rename_dir(self, call: Call, req: RenameReq, dst: _Found | None,
                                   done: list[int]) -> None:
        icall = _internal(call)
        back = RenameReq(req.newparent, req.newname, req.oldparent, req.oldname, req.flags)
        out = await self._fan(done, lambda k: self.children[k].rename(icall, back))
        for k in done:
            if isinstance(out[k], FopError):
                log.error("%s: cannot roll back the rename of directory %r on %s: %s",
                          self.name, req.oldname, self._sv(k), out[k])
        if dst is not None and dst.is_dir and not req.flags & RENAME_EXCHANGE:
            # the (empty) destination was replaced on those subvolumes: re-create it
            it = dst.rep.iatt
            hcall = Call(it.uid, it.gid, (), PID_INTERNAL, call.lk_owner, call.client)
            info = self._dirs.get(it.gfid)

            def mk(k: int) -> Awaitable[Any]:
                xa = {XATTR_DHT: info.layout.encode(k)} if info is not None else None
                return self.children[k].mkdir(hcall, MkdirReq(
                    req.newparent, req.newname, it.mode & 0o7777, it.gfid, 0, xa))

            made = await self._fan(done, mk)
            for k in done:
                if isinstance(made[k], FopError) and made[k].errno != errno.EEXIST:
                    log.error("%s: cannot re-create directory %r on %s: %s", self.name,
                              req.newname, self._sv(k), made[k])

    # ------------------------------------------------------------ directories
    async def opendir(self, call: Call, req: InodeReq) -> OpenRep:
        ups = self._ups()
        if not ups:
            raise FopError(errno.ENOTCONN, f"{self.name}: every subvolume is down")
        res = await self._fan(ups, lambda k: self.children[k].opendir(call, req))
        fds: list[Fd | None] = [None] * self.n
        for k in ups:
            if isinstance(res[k], OpenRep):
                fds[k] = res[k].fd
        opened = [k for k in range(self.n) if fds[k] is not None]
        if not opened:
            errs = [r for r in res if isinstance(r, FopError)]
            raise next((e for e in errs if e.errno != errno.ESTALE), errs[0])
        errs = [k for k in ups if isinstance(res[k], FopError) and res[k].errno != errno.ESTALE]
        if errs:
            # a real error (not "this copy is missing") fails the opendir like it would locally
            await self._release_fds(call, fds)
            raise res[errs[0]]
        first = fds[opened[0]]
        assert first is not None
        return OpenRep(Fd(req.gfid, first.flags, True, {self: _DirFd(fds, opened[0])}))

    async def _release_fds(self, call: Call, fds: list[Fd | None]) -> None:
        idxs = [k for k in range(self.n) if fds[k] is not None and self.up[k]]
        if idxs:
            await self._fan(idxs, lambda k: self.children[k].releasedir(
                call, FdReq(fds[k])))  # type: ignore[arg-type]

    async def releasedir(self, call: Call, req: Any) -> Any:
        st = req.fd.ctx.pop(self, None)
        if type(st) is _DirFd:
            st.ahead.clear()
            await self._release_fds(call, st.fds)
        return EMPTY

    async def readdir(self, call: Call, req: ReaddirReq) -> ReaddirRep:
        st = req.fd.ctx.get(self)
        if type(st) is not _DirFd:
            raise FopError(errno.EBADF, f"readdir: fd was not opened through {self.name}")
        n = self.n
        off = req.offset
        if off < 0:
            raise FopError(errno.EINVAL, f"readdir: bad offset {off}")
        if off == 0:  # (re)start: drop what was fetched ahead, fetch afresh
            st.ahead.clear()
            st.primed = False
        j, c = off % n, off // n
        icall = _internal(call)
        xattrs = (XATTR_LINKTO,) + tuple(x for x in req.xattrs if x != XATTR_LINKTO)
        size = req.size
        keys = [] if (j, c) in st.ahead else [(j, c)]
        if not st.primed:
            st.primed = True
            keys += [(k, 0) for k in range(j + 1, n)
                     if st.fds[k] is not None and (k, 0) not in st.ahead]
        if keys:
            await self._rd_fetch(st, icall, keys, size, xattrs)
        out: list[Dirent] = []
        budget = size
        plus = req.plus
        want = req.xattrs
        keep_xattrs = bool(want)
        home = st.home
        eof = False
        recent = self._recent  # an `rm -rf` unlinks what it lists: remember where files are
        dgfid, now = req.fd.gfid, time.monotonic()
        while True:
            while j < n and st.fds[j] is None:
                j, c = j + 1, 0
            if j >= n:
                eof = True
                break
            key = (j, c)
            batch = st.ahead.pop(key, None)
            if batch is None:
                if out:
                    break
                await self._rd_fetch(st, icall, [key], size, xattrs)
                batch = st.ahead.pop(key)
            entries, sub_eof = batch
            first_new = len(out)
            last_kept = -1
            stopped = False
            for pos, e in enumerate(entries):
                if e.type == S.S_IFDIR:
                    if j != home:
                        continue
                else:
                    it = e.iatt
                    if it is not None and it.mode == LINKTO_MODE and e.xattrs and \
                            XATTR_LINKTO in e.xattrs:
                        continue
                cost = _RD_COST + len(e.name)
                if out and cost > budget:
                    # keep the rest for a readdir at the last returned cookie
                    if last_kept >= 0:
                        st.ahead[(j, entries[last_kept].off)] = (entries[last_kept + 1:],
                                                                  sub_eof)
                    else:
                        st.ahead[(j, c)] = (entries, sub_eof)
                    stopped = True
                    break
                last_kept = pos
                budget -= cost
                xa = e.xattrs
                if xa is not None:
                    if not keep_xattrs:
                        xa = None
                    elif XATTR_LINKTO in xa and (XATTR_LINKTO not in want or not call.internal):
                        xa = {k: v for k, v in xa.items() if k != XATTR_LINKTO}
                if e.type != S.S_IFDIR and e.iatt is not None:
                    recent.put((dgfid, e.name), (j, e.iatt.gfid, now))
                out.append(Dirent(e.name, e.off * n + j, e.type, e.iatt if plus else None, xa))
            if stopped:
                break
            if not sub_eof and entries:
                c = entries[-1].off
                continue
            nxt = j + 1
            while nxt < n and st.fds[nxt] is None:
                nxt += 1
            if len(out) > first_new and nxt < n:
                last = out[-1]  # resume at the next subvolume's start: saves a round trip
                out[-1] = Dirent(last.name, nxt, last.type, last.iatt, last.xattrs)
            j, c = nxt, 0
            if budget <= 0:
                if j >= n:
                    eof = True
                break
        return ReaddirRep(out, eof)

    async def _rd_fetch(self, st: _DirFd, icall: Call, keys: list[tuple[int, int]], size: int,
                        xattrs: tuple[str, ...]) -> None:
        async def one(key: tuple[int, int]) -> None:
            k, cookie = key
            fd = st.fds[k]
            try:
                r = await self._child(k).readdir(icall, ReaddirReq(fd, cookie, size, True, xattrs))
            except FopError as e:
                log.warning("%s: readdir of %s on %s failed: %s; listing the others",
                            self.name, gfid_str(fd.gfid) if fd else "?", self._sv(k), e)
                st.ahead[key] = ([], True)
                return
            st.ahead[key] = (r.entries, r.eof or not r.entries)

        if len(keys) == 1:
            await one(keys[0])
            return
        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(one, key)

    async def statfs(self, call: Call, req: InodeReq) -> StatfsRep:
        ups = self._ups()
        if not ups:
            raise FopError(errno.ENOTCONN, f"{self.name}: every subvolume is down")
        res = await self._fan(ups, lambda k: self.children[k].statfs(call, req))
        got = [res[k].statvfs for k in ups if isinstance(res[k], StatfsRep)]
        if not got:
            raise next(r for r in res if isinstance(r, FopError))
        base = got[0]
        fr = base.frsize or 1
        seen: set[int] = set()
        blocks = bfree = bavail = files = ffree = favail = 0
        namemax = base.namemax
        for v in got:
            if v.fsid in seen:  # several bricks on one filesystem count once
                continue
            seen.add(v.fsid)
            f = v.frsize or fr
            blocks += v.blocks * f // fr
            bfree += v.bfree * f // fr
            bavail += v.bavail * f // fr
            files += v.files
            ffree += v.ffree
            favail += v.favail
            namemax = min(namemax, v.namemax)
        return StatfsRep(Statvfs(base.bsize, fr, blocks, bfree, bavail, files, ffree, favail,
                                 namemax, base.fsid))


REGISTRY["cluster/distribute"] = Distribute
