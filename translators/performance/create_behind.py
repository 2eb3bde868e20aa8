"""performance/create-behind: a new small file reaches the bricks in one request.

Writing a small file is create + write + flush + release: four requests to every brick of a
replica set (five with the lookup the kernel makes first), where each one costs CPU on the
client and on every brick. This translator answers the create at once, with attributes it makes
itself (the gfid is the client's anyway), gathers the writes that follow while they extend the
file from 0 up to `max-size`, and at the flush (close) sends one create that carries the content
and closes again on the brick (CreateReq.data / CreateReq.close): the file appears on each brick
whole, or not at all.

Anything else makes the file real first, and then goes on as usual: a write that does not
append or would pass `max-size`, any other fop on the file's fd (fsync, fstat, read, setattr,
locks...: the file is created with what was gathered and keeps its fd), and any fop that is not
on such an fd (a lookup, readdir, rename, unlink, getattr, another create...): every file held
back is created first, so no one, this client included, can tell the difference by looking.
A flush of a dup'd fd after the file went out reopens it for what comes next.

What an application sees:
- errors of the create (no space, quota, a brick refusing it) come at close(), the way
  write-behind reports write errors; close() returning 0 means the file is on the bricks;
- other clients see the file once it is closed (or made real), like NFS's close-to-open;
- a name that appears meanwhile on another client wins the create, and the content is written
  into that file, as open(O_CREAT|O_TRUNC) would have done (an O_EXCL create cannot meet this:
  its name is reserved).

O_EXCL creates (cp, tar, lock files) are held back only when their name is reserved below
(an entrylk in RESERVE_DOMAIN, answered by cluster/replicate without a round trip): while this
client holds its eager lock on the directory and the lookup the kernel made just before found the
name on no brick, no other client can create it until our create arrives, so open() may return
success at once. Otherwise (no replication, no lock held, a brick missing) the create is made at
once, as without this translator. A file still open after `max-hold` seconds is created then
(with what was gathered), so reservations and invisibility stay short.

Not held back: O_APPEND/O_SYNC/O_DSYNC/O_DIRECT opens, read-only opens, set-id modes, creates
with xattrs or xdata of some translator above, creates in a set-group-id directory (the group
would differ), and internal (pid < 0) calls. A directory's mode is asked for when it was not seen
within `dir-ttl` seconds.
"""
from __future__ import annotations

import errno
import logging
import os
import stat as S
import time
from dataclasses import replace
from typing import Any

import trio

from ..fops import (
    EMPTY,
    ENTRYLK_LOCK_NB,
    ENTRYLK_UNLOCK,
    FOPS,
    CreateRep,
    EntrylkReq,
    FdReq,
    Fop,
    InodeReq,
    LookupReq,
    OpenReq,
    WriteRep,
    WriteReq,
)
from ..lru import LRU
from ..types import RESERVE_DOMAIN, XDATA_RESERVED, Call, Fd, FopError, Iatt, gfid_str
from ..xlator import Option, Translator, register

log = logging.getLogger(__name__)

HELD, OPEN, CLOSED, FAILED = range(4)
_NOT_HELD = os.O_APPEND | os.O_SYNC | os.O_DSYNC | getattr(os, "O_DIRECT", 0)
_REOPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_TRUNC


class _Held:
    """One file created through this translator, from its create to its release."""

    __slots__ = ("born", "call", "data", "err", "iatt", "lock", "real", "req", "reserved",
                 "state")

    def __init__(self, call: Call, req: Any, iatt: Iatt, reserved: bool) -> None:
        self.call = call
        self.req = req
        self.iatt = iatt
        self.reserved = reserved  # an O_EXCL create: its name is reserved below
        self.born = time.monotonic()
        self.data = bytearray()
        self.state = HELD
        self.real: Fd | None = None  # the fd below, once the file went out with one
        self.err: FopError | None = None
        self.lock = trio.Lock()


@register("performance/create-behind")
class CreateBehind(Translator):
    options_schema = {
        "enable": Option("bool", True, doc="hold back the create of new files until close"),
        "max-size": Option("int", 256 << 10, min=0, max=2 << 20,
                           doc="most bytes gathered for one file before it is created"),
        "max-files": Option("int", 64, min=1, max=4096,
                            doc="most files held back at one time"),
        "dir-ttl": Option("float", 1.0, min=0.0, max=60.0,
                          doc="seconds a directory's mode (set-group-id or not) is trusted"),
        "max-hold": Option("float", 1.0, min=0.05, max=60.0,
                           doc="seconds after which a file still open is created anyway"),
    }

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        o = self.opts
        self.enabled = o["enable"]
        self.max_size = o["max-size"]
        self.max_files = o["max-files"]
        self.dir_ttl = o["dir-ttl"]
        self.max_hold = o["max-hold"]
        self.unsent: dict[bytes, _Held] = {}  # gfid -> file still held back
        self.dirs: LRU[bytes, tuple[float, int]] = LRU(4096)  # dir gfid -> (until, mode)

    # ------------------------------------------------------------ directories' modes
    def _learn(self, rep: Any) -> None:
        ia = getattr(rep, "iatt", None)
        if isinstance(ia, Iatt) and S.S_ISDIR(ia.mode):
            self.dirs.put(ia.gfid, (time.monotonic() + self.dir_ttl, ia.mode))
        for e in getattr(rep, "entries", None) or ():
            if e.iatt is not None and S.S_ISDIR(e.iatt.mode):
                self.dirs.put(e.iatt.gfid, (time.monotonic() + self.dir_ttl, e.iatt.mode))

    async def _dir_mode(self, call: Call, g: bytes) -> int:
        hit = self.dirs.get(g)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        rep = await self.children[0].stat(call, InodeReq(g))
        self._learn(rep)
        return rep.iatt.mode

    # ------------------------------------------------------------ lifecycle
    async def init(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._sender)

    async def _sender(self) -> None:
        """Files held longer than max-hold go out (still open): other clients see them, and
        a reserved name does not keep the directory locked."""
        while True:
            await trio.sleep(self.max_hold / 4)
            await self._send_all(time.monotonic() - self.max_hold)

    # ------------------------------------------------------------ create
    async def _holdable(self, call: Call, req: Any) -> bool | None:
        """None: not held back; False: held; True: held, with its name reserved."""
        if (not self.enabled or call.internal or req.flags & _NOT_HELD
                or req.flags & os.O_ACCMODE == os.O_RDONLY or req.mode & (S.S_ISUID | S.S_ISGID)
                or req.xattrs or req.xdata or req.data or req.close
                or len(self.unsent) >= self.max_files):
            return None
        try:
            if await self._dir_mode(call, req.parent) & S.S_ISGID:
                return None
        except FopError:
            return None  # the create itself will say what is wrong
        if not req.flags & os.O_EXCL:
            return False
        # O_EXCL: only while no one else can create the name before our create arrives
        try:
            await self.children[0].entrylk(call, EntrylkReq(req.parent, req.name,
                                                            RESERVE_DOMAIN, ENTRYLK_LOCK_NB))
        except FopError:
            return None
        return True

    async def create(self, call: Call, req: Any) -> CreateRep:
        how = await self._holdable(call, req)
        if how is None:
            await self._send_all()
            return await self.children[0].create(call, req)
        now = time.time_ns()
        mode = S.S_IFREG | (req.mode & 0o7777 & ~req.umask)
        h = _Held(call, req, Iatt(req.gfid, mode, 1, call.uid, call.gid, 0, 0, 0, 4096,
                                  now, now, now), how)
        self.unsent[req.gfid] = h
        return CreateRep(h.iatt, Fd(req.gfid, req.flags, False, {self: h}))

    # ------------------------------------------------------------ sending
    async def _send(self, h: _Held, close: bool) -> None:
        """Create the held file below, with its content; `close`: and no fd (caller holds
        h.lock)."""
        self.unsent.pop(h.req.gfid, None)
        req = replace(h.req, data=bytes(h.data), close=close,
                      xdata={XDATA_RESERVED: True} if h.reserved else None)
        try:
            try:
                rep = await self.children[0].create(h.call, req)
                fd = rep.fd
            except FopError as e:
                if e.errno != errno.EEXIST or h.req.flags & os.O_EXCL:
                    raise
                fd = await self._into_existing(h, close)
            finally:
                if h.reserved:  # used by the create, or dropped now
                    h.reserved = False
                    with trio.CancelScope(shield=True):
                        try:
                            await self.children[0].entrylk(h.call, EntrylkReq(
                                h.req.parent, h.req.name, RESERVE_DOMAIN, ENTRYLK_UNLOCK))
                        except FopError as e:
                            log.warning("%s: dropping the reservation of %r: %s", self.name,
                                        h.req.name, e)
        except FopError as e:
            h.state = FAILED
            h.err = e
            log.warning("%s: creating %r in %s failed: %s", self.name, h.req.name,
                        gfid_str(h.req.parent), e)
            raise
        finally:
            h.data = bytearray()
        if fd is None:
            h.state = CLOSED
        else:
            h.state = OPEN
            h.real = fd

    async def _into_existing(self, h: _Held, close: bool) -> Fd | None:
        """The name appeared meanwhile: write into that file, as O_CREAT|O_TRUNC would."""
        c = self.children[0]
        r = h.req
        ia = (await c.lookup(h.call, LookupReq(r.parent, r.name))).iatt
        if not S.S_ISREG(ia.mode):
            raise FopError(errno.EISDIR if S.S_ISDIR(ia.mode) else errno.EEXIST,
                           f"create {r.name!r}: a non-file of that name appeared")
        log.info("%s: %r in %s appeared before our create reached it: writing into it",
                 self.name, r.name, gfid_str(r.parent))
        fd = (await c.open(h.call, OpenReq(ia.gfid, (r.flags & ~_REOPEN_STRIP) | os.O_TRUNC))).fd
        try:
            if h.data:
                await c.write(h.call, WriteReq(fd, 0, bytes(h.data)))
            if not close:
                return fd
            await c.flush(h.call, FdReq(fd))
        finally:
            if close:
                await c.release(h.call, FdReq(fd))
        return None

    async def _real(self, h: _Held) -> Fd:
        """The fd below for a file of ours (caller holds h.lock): created or reopened now if
        need be."""
        if h.state == HELD:
            await self._send(h, close=False)
        elif h.state == CLOSED:
            r = h.req
            h.real = (await self.children[0].open(h.call, OpenReq(
                h.iatt.gfid, r.flags & ~_REOPEN_STRIP))).fd
            h.state = OPEN
        elif h.state == FAILED:
            assert h.err is not None
            raise FopError(h.err.errno, f"the file was not created: {h.err.msg}")
        assert h.real is not None
        return h.real

    async def _send_all(self, born_by: float | None = None) -> None:
        """Every file still held back (or only those held since `born_by`) goes out, keeping
        its fd: before a fop that could see or touch it."""
        for h in [h for h in self.unsent.values() if born_by is None or h.born <= born_by]:
            async with h.lock:
                if h.state == HELD:
                    try:
                        await self._send(h, close=False)
                    except FopError:
                        pass  # reported on that file's next write / flush

    # ------------------------------------------------------------ the file's own fops
    async def write(self, call: Call, req: Any) -> WriteRep:
        h = req.fd.ctx.get(self)
        if h is None:
            if self.unsent:
                await self._send_all()
            return await self.children[0].write(call, req)
        async with h.lock:
            if (h.state == HELD and req.offset == len(h.data)
                    and len(h.data) + len(req.data) <= self.max_size):
                h.data += req.data
                now = time.time_ns()
                h.iatt = replace(h.iatt, size=len(h.data), blocks=(len(h.data) + 511) // 512,
                                 mtime_ns=now, ctime_ns=now)
                return WriteRep(len(req.data), h.iatt)
            fd = await self._real(h)
        return await self.children[0].write(call, replace(req, fd=fd))

    async def flush(self, call: Call, req: FdReq) -> Any:
        h = req.fd.ctx.get(self)
        if h is None:
            return await self.handle(FOPS["flush"], call, req)
        async with h.lock:
            if h.state == HELD:
                await self._send(h, close=True)
                return EMPTY
            if h.state == FAILED:
                assert h.err is not None
                raise h.err
            if h.state == CLOSED:
                return EMPTY
            fd = h.real
        return await self.children[0].flush(call, replace(req, fd=fd))

    async def release(self, call: Call, req: FdReq) -> Any:
        h = req.fd.ctx.get(self)
        if h is None:
            return await self.children[0].release(call, req)
        async with h.lock:
            try:
                if h.state == HELD:  # released without a flush: it must still go out
                    await self._send(h, close=True)
                elif h.state == OPEN:
                    await self.children[0].release(call, replace(req, fd=h.real))
            except FopError as e:
                log.error("%s: %r in %s: %s", self.name, h.req.name, gfid_str(h.req.parent), e)
            finally:
                self.unsent.pop(h.req.gfid, None)
                h.state = CLOSED
                h.real = None
        return EMPTY

    # ------------------------------------------------------------ everything else
    async def handle(self, fop: Fop, call: Call, req: Any) -> Any:
        fd = getattr(req, "fd", None)
        h = fd.ctx.get(self) if isinstance(fd, Fd) else None
        if h is not None:
            async with h.lock:
                real = await self._real(h)
            req = replace(req, fd=real)
        elif self.unsent:
            await self._send_all()
        rep = await getattr(self.children[0], fop.name)(call, req)
        self._learn(rep)
        return rep
