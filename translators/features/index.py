"""features/index: the brick's heal bookkeeping, and the side channel cluster/afr folds its
changelog into.

Index. Every object whose replication counters are not all zero has an entry named by its gfid:

    <brick>/.gvol/indices/xattrop/<gfid>   some `trusted.gvol.afr.<client>` counter is non-zero
    <brick>/.gvol/indices/dirty/<gfid>     `trusted.gvol.afr.dirty` is non-zero

Entries are hard links to one empty base file per directory (`<sub>/<sub>-base`, as GlusterFS's
index does): adding one is a linkat, with no inode to allocate (allocating one costs a
millisecond on some filesystems, a link microseconds). An entry is added when an xattrop (the
fop, or one folded into another fop through xdata) leaves a watched counter non-zero, or when an
object is created with such xattrs; it is removed when an xattrop brings them all back to zero.
The directories ARE the heal backlog and the resume state of a heal crawl: an entry disappears only
once its counters are zero. Clients list them through two virtual directories (opendir/readdir of
the gfids `INDEX_XATTROP_GFID` / `INDEX_DIRTY_GFID`; one entry per gfid, named by the gfid string).
A listing drops entries whose object is gone or whose counters are all zero (stale after a crash),
so what it returns is what needs a look.

Side channel (the `xdata` field of modifying requests, see translators/fops.py). Keys this
translator consumes and strips before winding on (other keys, say dht's expected gfid for
storage/posix, go on down):

    "xattrop.inode:<xattr>"     ADD_ARRAY operand (BE32s) for the fop's own object
    "xattrop.parent:<xattr>"    ... for the parent directory (entry fops; rename: the old parent)
    "xattrop.newparent:<xattr>" ... for rename's / link's new parent
    "lock.inodelk" = domain     create/mknod/symlink: grant the caller a whole-file inodelk on the
                                new object (its gfid is in the request) before creating it
    "lock.entrylk" = domain     mkdir: grant the caller a whole-directory entrylk on the new dir
    "unlock.inodelk" = domain   afterwards release the caller's whole-file inodelk
    "unlock.entrylk" = domain   afterwards release the caller's whole-directory entrylk
    "unlock.owner" = bytes      ... held by this lock owner instead of the caller's (a flush
                                carries the application's lk_owner for its POSIX locks)
    "gvol.name" = parent+name   afterwards record it as the object's gfid2path xattr (cluster/
                                afr sends it with a fop that accuses a brick: heal info can
                                then name the file)

The xattrops are applied before the fop and undone if the fop fails, so on this brick they take
effect exactly when the fop does: cluster/afr's pre-op costs no round trip of its own. A lock
taken for a create is dropped again if the create fails. This translator must sit above
features/locks (the locks it takes are the client's, in the client's own connection).
"""
from __future__ import annotations

import errno
import logging
import os
import stat as S
import struct
import uuid
from dataclasses import replace
from typing import Any

import trio

from ..changelog import (
    INDEX_DIRTY_GFID,
    INDEX_XATTROP_GFID,
    XATTR_AFR_DIRTY,
    XATTR_AFR_PREFIX,
    XD_INODE,
    XD_LOCK_ENTRY,
    XD_LOCK_INODE,
    XD_NEWPARENT,
    XD_PARENT,
    XD_UNLOCK_ENTRY,
    XD_UNLOCK_INODE,
    XD_UNLOCK_OWNER,
)
from ..fops import (
    EMPTY,
    ENTRYLK_LOCK_NB,
    ENTRYLK_UNLOCK,
    F_UNLCK,
    F_WRLCK,
    LK_SETLK,
    XATTROP_ADD_ARRAY,
    EntrylkReq,
    EntryRep,
    InodelkReq,
    LookupReq,
    OpenRep,
    ReaddirRep,
    SetxattrReq,
    XattropReq,
)
from ..types import (
    PID_INTERNAL,
    XDATA_NAME,
    Call,
    Dirent,
    Fd,
    FopError,
    Iatt,
    gfid2path_xattr,
    gfid_str,
)
from ..xlator import GraphError, Option, Translator, register

log = logging.getLogger(__name__)


INDEX_DIRS = {INDEX_XATTROP_GFID: "xattrop", INDEX_DIRTY_GFID: "dirty"}

_OWN = (XD_INODE, XD_PARENT, XD_NEWPARENT, XD_LOCK_INODE, XD_LOCK_ENTRY, XD_UNLOCK_INODE,
        XD_UNLOCK_ENTRY, XD_UNLOCK_OWNER, XDATA_NAME)


def _others(xd: dict) -> dict | None:
    """xdata keys meant for the translators below (say storage/posix's expected gfid)."""
    rest = {k: v for k, v in xd.items() if not k.startswith(_OWN)}
    return rest or None


def _nonzero(v: bytes | None) -> bool:
    return bool(v) and any(v)  # type: ignore[arg-type]


def _negate(v: bytes) -> bytes:
    n = len(v) // 4
    return struct.pack(f">{n}i", *(-x for x in struct.unpack(f">{n}i", v)))


def _icall(call: Call) -> Call:
    return Call(0, 0, (), PID_INTERNAL, call.lk_owner, call.client)


class _IndexDir:
    """State of an opendir of a virtual index directory: the verified snapshot."""

    __slots__ = ("names",)

    def __init__(self, names: list[bytes]) -> None:
        self.names = names


@register("features/index")
class Index(Translator):
    options_schema = {
        "index-base": Option("str", "", doc="directory of the indices (default: "
                             "<brick>/.gvol/indices of the storage/posix below)"),
        "xattrop-pending-watchlist": Option("str", XATTR_AFR_PREFIX,
                                            doc="xattr prefix of the pending counters"),
        "xattrop-dirty-watchlist": Option("str", XATTR_AFR_DIRTY,
                                          doc="xattr name of the dirty counter"),
    }

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.pending_prefix: str = self.opts["xattrop-pending-watchlist"]
        self.dirty_key: str = self.opts["xattrop-dirty-watchlist"]
        self.base = self.opts["index-base"]
        self.entries: dict[str, set[bytes]] = {"xattrop": set(), "dirty": set()}
        self._busy: dict[bytes, trio.Lock] = {}

    # ------------------------------------------------------------ lifecycle
    async def init(self, nursery: trio.Nursery) -> None:
        if not self.base:
            for x in self.walk():
                path = getattr(x, "path", None)
                if x.type_name == "storage/posix" and path:
                    self.base = os.path.join(path, ".gvol", "indices")
                    break
        if not self.base:
            raise GraphError(f"{self.name}: option index-base is required when no "
                             "storage/posix is below")
        await trio.to_thread.run_sync(self._load)

    def _load(self) -> None:
        for sub, names in self.entries.items():
            d = os.path.join(self.base, sub)
            os.makedirs(d, 0o700, exist_ok=True)
            base = os.path.join(d, f"{sub}-base")
            if not os.path.exists(base):
                fd = os.open(base, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
                os.fsync(fd)
                os.close(fd)
            names.clear()
            for n in os.listdir(d):
                if n == f"{sub}-base":
                    continue
                try:
                    names.add(uuid.UUID(n).bytes)
                except ValueError:
                    log.warning("%s: ignoring stray file %s in %s", self.name, n, d)
        n = sum(len(v) for v in self.entries.values())
        if n:
            log.info("%s: %d index entries pending heal (%d dirty)", self.name, n,
                     len(self.entries["dirty"]))

    # ------------------------------------------------------------ the index itself
    def _kinds(self, xattrs: dict[str, bytes]) -> tuple[bool | None, bool | None]:
        """(any pending non-zero, dirty non-zero) among `xattrs`; None = not present."""
        pend: bool | None = None
        dirty: bool | None = None
        for k, v in xattrs.items():
            if k == self.dirty_key:
                dirty = _nonzero(v)
            elif k.startswith(self.pending_prefix):
                pend = pend or _nonzero(v)
        return pend, dirty

    def _set(self, sub: str, g: bytes, on: bool) -> None:
        path = os.path.join(self.base, sub, gfid_str(g))
        if on:
            try:
                os.link(os.path.join(self.base, sub, f"{sub}-base"), path)
            except FileExistsError:
                pass
            except FileNotFoundError:  # the base went away (an admin's cleanup): a new one
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                                 0o600))
                os.link(path, os.path.join(self.base, sub, f"{sub}-base"))
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    async def _mark(self, call: Call, g: bytes, xattrs: dict[str, bytes]) -> None:
        """Bring the index entries of `g` in line with counters just written (`xattrs` holds
        the new values of the keys that changed)."""
        pend, dirty = self._kinds(xattrs)
        want: dict[str, bool] = {}
        have_p = g in self.entries["xattrop"]
        have_d = g in self.entries["dirty"]
        if pend is True and not have_p:
            want["xattrop"] = True
        if dirty is True and not have_d:
            want["dirty"] = True
        if dirty is False and have_d:
            want["dirty"] = False  # one counter: the reply says it all
        if pend is False and have_p:
            # this xattrop zeroed some pending counters: are they all zero now?
            allx = await self._all_counters(call, g)
            if allx is not None and not self._kinds(allx)[0]:
                want["xattrop"] = False
        if not want:
            return
        for sub, on in want.items():
            if on:
                self.entries[sub].add(g)
            else:
                self.entries[sub].discard(g)
        # linking or unlinking a name in a directory that is always in the dentry cache
        # costs microseconds: not worth a thread hop (which costs ~100 us)
        self._apply(g, want)

    def _apply(self, g: bytes, want: dict[str, bool]) -> None:
        for sub, on in want.items():
            try:
                self._set(sub, g, on)
            except OSError as e:
                log.error("%s: cannot %s index entry %s/%s: %s", self.name,
                          "add" if on else "remove", sub, gfid_str(g), e)

    async def _forget(self, g: bytes) -> None:
        want = {sub: False for sub, names in self.entries.items() if g in names}
        if want:
            for sub in want:
                self.entries[sub].discard(g)
            self._apply(g, want)

    async def _all_counters(self, call: Call, g: bytes) -> dict[str, bytes] | None:
        """Every watched counter of `g` (None when the object is gone)."""
        try:
            rep = await self.children[0].lookup(_icall(call), LookupReq(gfid=g, xattrs=("*",)))
        except FopError as e:
            if e.errno in (errno.ENOENT, errno.ESTALE):
                return None
            raise
        return {k: v for k, v in (rep.xattrs or {}).items()
                if k == self.dirty_key or k.startswith(self.pending_prefix)}

    def pending(self) -> dict[str, list[str]]:
        """The index as it is in memory: {"xattrop": [gfid strings], "dirty": [...]}."""
        return {k: sorted(gfid_str(g) for g in v) for k, v in self.entries.items()}

    # ------------------------------------------------------------ xattrop
    async def _ordered_xattrop(self, call: Call, req: XattropReq) -> Any:
        """Wind an xattrop and update the index from its result, in order per object."""
        g = req.gfid
        lock = self._busy.get(g)
        if lock is None:
            lock = self._busy[g] = trio.Lock()
        try:
            async with lock:
                try:
                    rep = await self.children[0].xattrop(call, req)
                except FopError as e:
                    if e.errno in (errno.ENOENT, errno.ESTALE):
                        await self._forget(g)  # the object is gone: so is its backlog
                    raise
                if req.op == XATTROP_ADD_ARRAY:
                    await self._mark(call, g, rep.xattrs)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._busy.pop(g, None)
        return rep

    async def _xattrop(self, call: Call, g: bytes, ops: dict[str, bytes]) -> dict[str, bytes]:
        rep = await self._ordered_xattrop(_icall(call), XattropReq(g, XATTROP_ADD_ARRAY, ops))
        return rep.xattrs

    async def xattrop(self, call: Call, req: XattropReq):
        xd = req.xdata
        if not xd:
            return await self._ordered_xattrop(call, req)
        try:
            return await self._ordered_xattrop(call, XattropReq(req.gfid, req.op, req.xattrs))
        finally:
            await self._unlocks(call, req.gfid, xd)

    async def _unlocks(self, call: Call, g: bytes, xd: dict) -> None:
        owner = xd.get(XD_UNLOCK_OWNER)
        if type(owner) is bytes:
            call = replace(call, lk_owner=owner)
        with trio.CancelScope(shield=True):
            dom = xd.get(XD_UNLOCK_INODE)
            if dom:
                try:
                    await self.children[0].inodelk(call, InodelkReq(g, dom, LK_SETLK, F_UNLCK))
                except FopError as e:
                    log.warning("%s: unlock of %s in %s after xattrop: %s", self.name, gfid_str(g),
                                dom, e)
            dom = xd.get(XD_UNLOCK_ENTRY)
            if dom:
                try:
                    await self.children[0].entrylk(call, EntrylkReq(g, None, dom,
                                                                    ENTRYLK_UNLOCK))
                except FopError as e:
                    log.warning("%s: entry unlock of %s in %s after xattrop: %s", self.name,
                                gfid_str(g), dom, e)

    # ------------------------------------------------------------ fops carrying xdata
    async def handle(self, fop, call: Call, req: Any) -> Any:
        xd = getattr(req, "xdata", None)
        if not xd:
            if fop.creates and req.xattrs:
                return await self._create_marked(fop, call, req)
            return await getattr(self.children[0], fop.name)(call, req)
        return await self._with_xdata(fop, call, req, xd)

    async def _create_marked(self, fop, call: Call, req: Any) -> Any:
        rep = await getattr(self.children[0], fop.name)(call, req)
        pend, dirty = self._kinds(req.xattrs)
        if pend or dirty:
            await self._mark(call, req.gfid, {k: v for k, v in req.xattrs.items()
                                              if k == self.dirty_key
                                              or k.startswith(self.pending_prefix)})
        return rep

    def _targets(self, fop, req: Any, xd: dict) -> list[tuple[bytes, dict[str, bytes]]]:
        groups: dict[str, dict[str, bytes]] = {}
        for k, v in xd.items():
            for pfx in (XD_INODE, XD_PARENT, XD_NEWPARENT):
                if k.startswith(pfx):
                    if type(v) is not bytes or not v or len(v) % 4:
                        raise FopError(errno.EINVAL, f"xdata {k}: operand must be BE32s")
                    groups.setdefault(pfx, {})[k[len(pfx):]] = v
                    break
        out: list[tuple[bytes, dict[str, bytes]]] = []
        name = fop.name
        for pfx, ops in groups.items():
            if pfx == XD_INODE:
                if fop.object is None:
                    raise FopError(errno.EINVAL, f"xdata {pfx}: {name} has no own object")
                g = self._object_of(fop, req)
            elif pfx == XD_PARENT:
                f = fop.parent
                if f is None:
                    raise FopError(errno.EINVAL, f"xdata {pfx}: {name} has no parent")
                g = getattr(req, f)
            else:
                f = fop.newparent
                if f is None:
                    raise FopError(errno.EINVAL, f"xdata {pfx}: {name} has no new parent")
                g = getattr(req, f)
            # rename within one directory: one xattrop with the operands added up
            for i, (og, oops) in enumerate(out):
                if og == g:
                    merged = dict(oops)
                    for k, v in ops.items():
                        if k in merged:
                            n = len(v) // 4
                            a = struct.unpack(f">{n}i", merged[k])
                            b = struct.unpack(f">{n}i", v)
                            merged[k] = struct.pack(f">{n}i", *(x + y for x, y in zip(a, b)))
                        else:
                            merged[k] = v
                    out[i] = (g, merged)
                    break
            else:
                out.append((g, ops))
        return out

    async def _with_xdata(self, fop, call: Call, req: Any, xd: dict) -> Any:
        targets = self._targets(fop, req, xd)
        child = self.children[0]
        # a new directory comes with an entry lock, any other new object with an inode lock
        new_dir = "entry" in fop.creates
        lock_inode = xd.get(XD_LOCK_INODE) if fop.creates and not new_dir else None
        lock_entry = xd.get(XD_LOCK_ENTRY) if new_dir else None
        done: list[tuple[bytes, dict[str, bytes]]] = []
        locked = False
        try:
            for g, ops in targets:
                await self._xattrop(call, g, ops)
                done.append((g, ops))
            if lock_inode:
                await child.inodelk(call, InodelkReq(req.gfid, lock_inode, LK_SETLK, F_WRLCK))
                locked = True
            elif lock_entry:
                await child.entrylk(call, EntrylkReq(req.gfid, None, lock_entry,
                                                     ENTRYLK_LOCK_NB))
                locked = True
            inner = replace(req, xdata=_others(xd))
            if fop.creates and inner.xattrs:
                rep = await self._create_marked(fop, call, inner)
            else:
                rep = await getattr(child, fop.name)(call, inner)
        except BaseException:
            with trio.CancelScope(shield=True):
                if locked:
                    try:
                        if lock_inode:
                            await child.inodelk(call, InodelkReq(req.gfid, lock_inode, LK_SETLK,
                                                                 F_UNLCK))
                        else:
                            await child.entrylk(call, EntrylkReq(req.gfid, None, lock_entry,
                                                                 ENTRYLK_UNLOCK))
                    except FopError:
                        pass
                for g, ops in done:  # the fop failed here: so did its changelog
                    try:
                        await self._xattrop(call, g, {k: _negate(v) for k, v in ops.items()})
                    except FopError as e:
                        log.error("%s: cannot undo the changelog of a failed %s on %s: %s",
                                  self.name, fop.name, gfid_str(g), e)
                if XD_UNLOCK_INODE in xd or XD_UNLOCK_ENTRY in xd:
                    await self._unlocks(call, self._object_of(fop, req), xd)
            raise
        if XD_UNLOCK_INODE in xd or XD_UNLOCK_ENTRY in xd:
            await self._unlocks(call, self._object_of(fop, req), xd)
        name = xd.get(XDATA_NAME)
        if name and fop.object is not None:
            g = self._object_of(fop, req)
            k, v = gfid2path_xattr(name[:16], name[16:])
            try:
                await child.setxattr(_icall(call), SetxattrReq(g, k, v))
            except FopError as e:  # only heal info's path display depends on it
                log.warning("%s: cannot record the name of %s: %s", self.name, gfid_str(g), e)
        return rep

    @staticmethod
    def _object_of(fop, req: Any) -> bytes:
        """The object the fop acts on (fop.object in the fop table; a new object's gfid for a
        create)."""
        if fop.object == "fd":
            return req.fd.gfid
        return getattr(req, fop.object or "gfid")

    # ------------------------------------------------------------ the virtual directories
    async def lookup(self, call: Call, req: LookupReq):
        if req.name is None and req.gfid in INDEX_DIRS:
            return EntryRep(Iatt(req.gfid, S.S_IFDIR | 0o700, 2, 0, 0, 0, 0, 0, 4096, 0, 0, 0))
        return await self.children[0].lookup(call, req)

    async def opendir(self, call: Call, req):
        sub = INDEX_DIRS.get(req.gfid)
        if sub is None:
            return await self.children[0].opendir(call, req)
        if not call.internal:
            raise FopError(errno.EPERM, "the heal index is internal")
        names: list[bytes] = []
        for g in sorted(self.entries[sub]):
            allx = await self._all_counters(call, g)
            p, d = self._kinds(allx or {})
            live = (p if sub == "xattrop" else d) if allx is not None else False
            if live:
                names.append(gfid_str(g).encode())
            else:  # stale: the object is gone or its counters are back to zero
                self.entries[sub].discard(g)
                await trio.to_thread.run_sync(self._apply, g, {sub: False})
        return OpenRep(Fd(req.gfid, os.O_RDONLY | os.O_DIRECTORY, True, {self: _IndexDir(names)}))

    async def readdir(self, call: Call, req):
        ctx = req.fd.ctx.get(self)
        if ctx is None:
            return await self.children[0].readdir(call, req)
        i = max(req.offset, 0)
        out: list[Dirent] = []
        budget = req.size
        while i < len(ctx.names) and (not out or budget > 0):
            name = ctx.names[i]
            budget -= 32 + len(name)
            i += 1
            out.append(Dirent(name, i, S.S_IFREG))
        return ReaddirRep(out, i >= len(ctx.names))

    async def releasedir(self, call: Call, req):
        if req.fd.ctx.pop(self, None) is not None:
            return EMPTY
        return await self.children[0].releasedir(call, req)
