"""features/locks: lock state of a brick (GlusterFS's posix-locks).

- `inodelk`: byte-range locks on a gfid in a named domain (AFR/DHT transactions). Locks of one
  owner never conflict with each other; an unlock must name a range the owner locked exactly.
  Blocked requests are served in arrival order: a new request also waits behind an earlier
  waiter it conflicts with, so a stream of readers cannot starve a writer.
- `entrylk`: locks on a name in a directory (name None = the whole directory) in a domain.
- `lk`: POSIX (fcntl) byte-range locks on a gfid: a lock replaces the owner's own locks on the
  range (upgrading, downgrading, splitting), adjacent or overlapping locks of one type merge,
  unlocking a sub-range splits a lock; GETLK reports a conflicting lock. close() (flush, and
  release of the fd) drops the owner's locks on the file, as POSIX says.

An owner is (call.client, call.lk_owner): the client connection and the lock owner within it.
`client_disconnect(client)` drops every lock of a connection and fails its waiters with ENOTCONN.
All state lives in the trio thread: there are no thread hops and nothing is wound to the child
for these fops. Waiters are woken when a conflicting lock goes away and re-check on waking, so a
cancelled waiter leaves no trace.
"""
from __future__ import annotations

import errno
import logging
from typing import Any

import trio

from ..fops import (
    EMPTY,
    ENTRYLK_LOCK,
    ENTRYLK_LOCK_NB,
    ENTRYLK_UNLOCK,
    F_RDLCK,
    F_UNLCK,
    F_WRLCK,
    LK_GETLK,
    LK_SETLK,
    LK_SETLKW,
    LkRep,
)
from ..types import Call, FopError
from ..xlator import Translator, register

log = logging.getLogger(__name__)

INF = 1 << 64  # "to end of file"


class _Lock:
    __slots__ = ("owner", "type", "start", "end", "pid", "name")

    def __init__(self, owner: tuple[str, bytes], type: int, start: int = 0, end: int = INF,
                 pid: int = 0, name: bytes | None = None) -> None:
        self.owner = owner
        self.type = type
        self.start = start
        self.end = end
        self.pid = pid
        self.name = name

    def __repr__(self) -> str:
        end = "EOF" if self.end >= INF else self.end
        return f"<lock {self.owner} {'RW'[self.type == F_WRLCK]} {self.start}..{end} {self.name}>"


def _range_conflict(a: _Lock, b: _Lock) -> bool:
    return (a.owner != b.owner and a.start < b.end and b.start < a.end
            and (a.type == F_WRLCK or b.type == F_WRLCK))


def _entry_conflict(a: _Lock, b: _Lock) -> bool:
    return (a.owner != b.owner and (a.name is None or b.name is None or a.name == b.name)
            and (a.type == F_WRLCK or b.type == F_WRLCK))


class _Waiter:
    __slots__ = ("lock", "event", "error")

    def __init__(self, lock: _Lock) -> None:
        self.lock = lock
        self.event = trio.Event()
        self.error = 0


class _Space:
    """The locks of one lockable thing: an inode in a domain, a directory in a domain, or an
    inode's POSIX locks."""

    __slots__ = ("granted", "waiters", "conflict", "fifo")

    def __init__(self, conflict, fifo: bool) -> None:
        self.granted: list[_Lock] = []
        self.waiters: list[_Waiter] = []
        self.conflict = conflict
        self.fifo = fifo

    def blocker(self, lock: _Lock, upto: int | None = None) -> _Lock | None:
        """The granted lock (or, with fifo, an earlier waiter's) that keeps `lock` waiting."""
        c = self.conflict
        for g in self.granted:
            if c(lock, g):
                return g
        if self.fifo:
            ws = self.waiters if upto is None else self.waiters[:upto]
            for w in ws:
                if c(lock, w.lock):
                    return w.lock
        return None

    def kick(self) -> None:
        for i, w in enumerate(self.waiters):
            if not w.event.is_set() and self.blocker(w.lock, i) is None:
                w.event.set()

    @property
    def idle(self) -> bool:
        return not self.granted and not self.waiters


def _forget(table: dict, key: Any, space: _Space) -> None:
    """Drop an idle space from its table (only if it is still the one there)."""
    if space.idle and table.get(key) is space:
        del table[key]


def _posix_apply(space: _Space, lk: _Lock) -> None:
    """Set (or with F_UNLCK clear) the owner's lock on [start, end) the way fcntl does."""
    owner, typ, start, end = lk.owner, lk.type, lk.start, lk.end
    out: list[_Lock] = []
    ns, ne = start, end
    for g in space.granted:
        if g.owner != owner or g.end < start or g.start > end:
            out.append(g)  # someone else's, or ours and neither overlapping nor adjacent
        elif g.type == typ and typ != F_UNLCK:
            ns, ne = min(ns, g.start), max(ne, g.end)  # same type: merge
        elif g.end <= start or g.start >= end:
            out.append(g)  # adjacent with another type: keep
        else:
            if g.start < start:
                out.append(_Lock(owner, g.type, g.start, start, g.pid))
            if g.end > end:
                out.append(_Lock(owner, g.type, end, g.end, g.pid))
    if typ != F_UNLCK:
        out.append(_Lock(owner, typ, ns, ne, lk.pid))
    out.sort(key=lambda x: x.start)
    space.granted = out


@register("features/locks")
class Locks(Translator):
    options_schema: dict = {}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.inodelks: dict[tuple[bytes, str], _Space] = {}
        self.entrylks: dict[tuple[bytes, str], _Space] = {}
        self.posix: dict[bytes, _Space] = {}

    # ------------------------------------------------------------ machinery
    @staticmethod
    def _owner(call: Call) -> tuple[str, bytes]:
        return (call.client, call.lk_owner)

    async def _acquire(self, table: dict, key: Any, space: _Space, lock: _Lock, block: bool,
                       apply) -> None:
        if space.blocker(lock) is None:
            apply(space, lock)
            return
        if not block:
            _forget(table, key, space)
            raise FopError(errno.EAGAIN, f"lock {lock!r} conflicts with a held lock")
        w = _Waiter(lock)
        space.waiters.append(w)
        try:
            while True:
                await w.event.wait()
                if w.error:
                    raise FopError(w.error, "lock wait ended: the client disconnected")
                i = space.waiters.index(w)
                if space.blocker(lock, i) is None:
                    break
                w.event = trio.Event()
            space.waiters.remove(w)
            apply(space, lock)
            space.kick()  # fifo waiters queued behind us may go now
        except BaseException:
            if w in space.waiters:
                space.waiters.remove(w)
                space.kick()
            _forget(table, key, space)
            raise

    @staticmethod
    def _append(space: _Space, lock: _Lock) -> None:
        space.granted.append(lock)

    def _released(self, table: dict, key: Any, space: _Space) -> None:
        if space.idle:
            _forget(table, key, space)
        else:
            space.kick()

    # ------------------------------------------------------------ inodelk
    async def inodelk(self, call: Call, req):
        if req.start < 0 or req.length < 0:
            raise FopError(errno.EINVAL, "inodelk: negative start or length")
        end = req.start + req.length if req.length else INF
        key = (req.gfid, req.domain)
        owner = self._owner(call)
        if req.type == F_UNLCK:
            space = self.inodelks.get(key)
            if space is not None:
                for i, g in enumerate(space.granted):
                    if g.owner == owner and g.start == req.start and g.end == end:
                        del space.granted[i]
                        self._released(self.inodelks, key, space)
                        return EMPTY
            raise FopError(errno.EINVAL, f"inodelk: unlock of a range not locked by this owner "
                           f"in domain {req.domain}")
        if req.type not in (F_RDLCK, F_WRLCK) or req.cmd not in (LK_SETLK, LK_SETLKW):
            raise FopError(errno.EINVAL, f"inodelk: bad cmd {req.cmd} / type {req.type}")
        space = self.inodelks.get(key)
        if space is None:
            space = self.inodelks[key] = _Space(_range_conflict, True)
        await self._acquire(self.inodelks, key, space, _Lock(owner, req.type, req.start, end),
                            req.cmd == LK_SETLKW, self._append)
        return EMPTY

    # ------------------------------------------------------------ entrylk
    async def entrylk(self, call: Call, req):
        key = (req.parent, req.domain)
        owner = self._owner(call)
        if req.cmd == ENTRYLK_UNLOCK:
            space = self.entrylks.get(key)
            if space is not None:
                for i, g in enumerate(space.granted):
                    if g.owner == owner and g.name == req.name:
                        del space.granted[i]
                        self._released(self.entrylks, key, space)
                        return EMPTY
            raise FopError(errno.EINVAL, f"entrylk: unlock of {req.name!r} not locked by this "
                           f"owner in domain {req.domain}")
        if req.cmd not in (ENTRYLK_LOCK, ENTRYLK_LOCK_NB) or req.type not in (F_RDLCK, F_WRLCK):
            raise FopError(errno.EINVAL, f"entrylk: bad cmd {req.cmd} / type {req.type}")
        space = self.entrylks.get(key)
        if space is None:
            space = self.entrylks[key] = _Space(_entry_conflict, True)
        await self._acquire(self.entrylks, key, space, _Lock(owner, req.type, name=req.name),
                            req.cmd == ENTRYLK_LOCK, self._append)
        return EMPTY

    # ------------------------------------------------------------ POSIX lk
    async def lk(self, call: Call, req):
        if req.start < 0 or req.length < 0:
            raise FopError(errno.EINVAL, "lk: negative start or length")
        if req.type not in (F_RDLCK, F_WRLCK, F_UNLCK):
            raise FopError(errno.EINVAL, f"lk: bad lock type {req.type}")
        end = req.start + req.length if req.length else INF
        g = req.fd.gfid
        owner = self._owner(call)
        lock = _Lock(owner, req.type, req.start, end, req.pid)
        space = self.posix.get(g)
        if req.cmd == LK_GETLK:
            if req.type != F_UNLCK and space is not None:
                for h in space.granted:
                    if _range_conflict(lock, h):
                        return LkRep(h.type, h.start, 0 if h.end >= INF else h.end - h.start,
                                     h.pid)
            return LkRep(F_UNLCK, req.start, req.length, req.pid)
        if req.cmd not in (LK_SETLK, LK_SETLKW):
            raise FopError(errno.EINVAL, f"lk: bad cmd {req.cmd}")
        if req.type == F_UNLCK:
            if space is not None:
                _posix_apply(space, lock)
                self._released(self.posix, g, space)
            return LkRep(F_UNLCK, req.start, req.length, req.pid)
        if space is None:
            space = self.posix[g] = _Space(_range_conflict, False)
        await self._acquire(self.posix, g, space, lock, req.cmd == LK_SETLKW, _posix_apply)
        owners = req.fd.ctx.get(self)
        if owners is None:
            owners = req.fd.ctx[self] = set()
        owners.add(owner)
        return LkRep(req.type, req.start, req.length, req.pid)

    def _drop_posix(self, gfid: bytes, owners) -> None:
        space = self.posix.get(gfid)
        if space is None:
            return
        before = len(space.granted)
        space.granted = [x for x in space.granted if x.owner not in owners]
        if len(space.granted) != before:
            self._released(self.posix, gfid, space)

    async def flush(self, call: Call, req):
        self._drop_posix(req.fd.gfid, (self._owner(call),))
        return await self.children[0].flush(call, req)

    async def release(self, call: Call, req):
        owners = req.fd.ctx.pop(self, None)
        if owners:
            self._drop_posix(req.fd.gfid, owners)
        return await self.children[0].release(call, req)

    # ------------------------------------------------------------ connections
    def client_disconnect(self, client: str) -> int:
        """Drop every lock held by `client` and fail its waiters; returns how many locks went."""
        dropped = 0
        for table in (self.inodelks, self.entrylks, self.posix):
            for key, space in list(table.items()):
                keep = [x for x in space.granted if x.owner[0] != client]
                dropped += len(space.granted) - len(keep)
                space.granted = keep
                for w in space.waiters:
                    if w.lock.owner[0] == client:
                        w.error = errno.ENOTCONN
                        w.event.set()
                space.waiters = [w for w in space.waiters if w.lock.owner[0] != client]
                self._released(table, key, space)
        if dropped:
            log.info("%s: released %d locks of disconnected client %s", self.name, dropped, client)
        return dropped

    def dump(self) -> dict:
        """Lock state for statedump-like inspection and tests."""
        return {
            "inodelk": {k: list(v.granted) for k, v in self.inodelks.items()},
            "entrylk": {k: list(v.granted) for k, v in self.entrylks.items()},
            "posix": {k: list(v.granted) for k, v in self.posix.items()},
        }
