"""In-process replica sets for the cluster/afr tests: real storage/posix bricks (with
features/locks and features/index, features/arbiter on an arbiter) on temp dirs, one
cluster/replicate on top of them per client, and `Link`s in between that can be cut (what a
brick kill or a network failure looks like to the client: ENOTCONN, CHILD_DOWN, the brick drops
the client's locks) and restored."""
from __future__ import annotations

import errno
import hashlib
import os
import stat as S
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from translators.cluster.afr import Replicate
from translators.features.arbiter import Arbiter
from translators.features.index import Index
from translators.features.locks import Locks
from translators.fops import (
    SET_GID,
    SET_MODE,
    SET_UID,
    CreateReq,
    EntryReq,
    FdReq,
    InodeReq,
    LinkReq,
    LookupReq,
    MkdirReq,
    OpenReq,
    ReaddirReq,
    ReadReq,
    RemovexattrReq,
    RenameReq,
    SetattrReq,
    SetxattrReq,
    SymlinkReq,
    TruncateReq,
    WriteReq,
)
from translators.storage.brickdir import prepare_brick
from translators.storage.posix import Posix
from translators.types import (
    ROOT_CALL,
    ROOT_GFID,
    XATTR_GFID2PATH,
    Call,
    FopError,
    Iatt,
    new_gfid,
)
from translators.xlator import Event, Translator

VOL_ID = "3c9b6a52-8f0e-4a8e-9d7c-2b5f1e0a7d11"
CEILING = 60
AFR_PREFIX = "trusted.gvol.afr."


class Link(Translator):
    """One client's connection to one in-process brick. Counts the fops sent through it."""

    min_children = 1
    max_children = 1

    def __init__(self, name: str, child: Translator, cid: str) -> None:
        super().__init__(name, {}, [child])
        self.on = True
        self.cid = cid
        self.calls: Counter[str] = Counter()
        # awaited with (fop name, request) before a fop goes through: lets a test act at an
        # exact point of a running operation
        self.hook: Callable[[str, Any], Awaitable[None]] | None = None

    @property
    def connected(self) -> bool:
        return self.on

    async def handle(self, fop: Any, call: Call, req: Any) -> Any:
        if not self.on:
            raise FopError(errno.ENOTCONN, f"{self.name}: link is cut")
        self.calls[fop.name] += 1
        if self.hook is not None:
            await self.hook(fop.name, req)
        return await getattr(self.children[0], fop.name)(replace(call, client=self.cid), req)

    async def cut(self) -> None:
        self.on = False
        for x in self.children[0].walk():
            hook = getattr(x, "client_disconnect", None)
            if hook is not None:
                hook(self.cid)
        for p in self.parents:
            await p.notify(Event.CHILD_DOWN, self)

    async def restore(self) -> None:
        self.on = True
        for p in self.parents:
            await p.notify(Event.CHILD_UP, self)


class Brick:
    def __init__(self, path: Path, name: str, arbiter: bool = False) -> None:
        self.path = path
        prepare_brick(str(path), VOL_ID)
        self.posix = Posix(f"{name}-posix", {"directory": str(path), "volume-id": VOL_ID})
        below: Translator = self.posix
        if arbiter:
            below = Arbiter(f"{name}-arbiter", {}, [self.posix])
        self.locks = Locks(f"{name}-locks", {}, [below])
        self.index = Index(f"{name}-index", {}, [self.locks])
        self.top = self.index

    async def init(self, nursery: trio.Nursery) -> None:
        for x in self.top.walk():
            await x.init(nursery)


class Replica:
    """N bricks and any number of clients (Replicate translators) over them."""

    def __init__(self, base: Path, n: int = 3, arbiter: bool = False, name: str = "vol",
                 set_index: int = 0, first_brick: int = 0) -> None:
        self.base = base
        self.name = f"{name}-replicate-{set_index}"
        self.client_names = [f"{name}-client-{first_brick + i}" for i in range(n)]
        self.bricks = [Brick(base / f"b{first_brick + i}", self.client_names[i],
                             arbiter and i == n - 1) for i in range(n)]
        self.clients: list[tuple[Replicate, list[Link]]] = []

    def client(self, **opts: Any) -> Replicate:
        k = len(self.clients)
        links = [Link(self.client_names[i], b.top, f"client{k}") for i, b in
                 enumerate(self.bricks)]
        o = {"afr-pending-xattr": ",".join(self.client_names)}
        if any(isinstance(x, Arbiter) for b in self.bricks for x in b.top.walk()):
            o["arbiter-count"] = "1"
        o.update({k2: str(v) for k2, v in opts.items()})
        afr = Replicate(self.name, o, links)
        self.clients.append((afr, links))
        return afr

    def links(self, afr: Replicate) -> list[Link]:
        for a, ls in self.clients:
            if a is afr:
                return ls
        raise KeyError(afr)

    async def start(self, nursery: trio.Nursery) -> None:
        for b in self.bricks:
            await b.init(nursery)
        for afr, links in self.clients:
            for x in links:
                await x.init(nursery)
            await afr.init(nursery)


# ---------------------------------------------------------------- a path-level client
class FS:
    """Path operations on a translator graph, the way the fuse bridge would send them."""

    def __init__(self, top: Translator, call: Call = ROOT_CALL) -> None:
        self.top = top
        self.call = call

    async def lookup(self, path: str) -> Iatt:
        g = ROOT_GFID
        ia = (await self.top.lookup(self.call, LookupReq(gfid=ROOT_GFID))).iatt
        for p in [x for x in path.split("/") if x]:
            ia = (await self.top.lookup(self.call, LookupReq(parent=g, name=p.encode()))).iatt
            g = ia.gfid
        return ia

    async def gfid(self, path: str) -> bytes:
        return (await self.lookup(path)).gfid

    async def _pn(self, path: str) -> tuple[bytes, bytes]:
        d, _, n = path.rstrip("/").rpartition("/")
        return await self.gfid(d), n.encode()

    async def create(self, path: str, data: bytes = b"", mode: int = 0o644) -> bytes:
        p, n = await self._pn(path)
        g = new_gfid()
        rep = await self.top.create(self.call, CreateReq(p, n, os.O_RDWR, mode, g))
        try:
            if data:
                await self._write_all(rep.fd, 0, data)
            await self.top.flush(self.call, FdReq(rep.fd))
        finally:
            await self.top.release(self.call, FdReq(rep.fd))
        return g

    async def _write_all(self, fd: Any, off: int, data: bytes, chunk: int = 1 << 20) -> None:
        for i in range(0, len(data), chunk):
            await self.top.write(self.call, WriteReq(fd, off + i, data[i:i + chunk]))

    async def write(self, path: str, off: int, data: bytes) -> None:
        g = await self.gfid(path)
        fd = (await self.top.open(self.call, OpenReq(g, os.O_RDWR))).fd
        try:
            await self._write_all(fd, off, data)
            await self.top.flush(self.call, FdReq(fd))
        finally:
            await self.top.release(self.call, FdReq(fd))

    async def read(self, path: str) -> bytes:
        g = await self.gfid(path)
        fd = (await self.top.open(self.call, OpenReq(g, os.O_RDONLY))).fd
        out = bytearray()
        try:
            while True:
                d = (await self.top.read(self.call, ReadReq(fd, len(out), 1 << 20))).data
                if not d:
                    break
                out += d
        finally:
            await self.top.release(self.call, FdReq(fd))
        return bytes(out)

    async def mkdir(self, path: str, mode: int = 0o755) -> bytes:
        p, n = await self._pn(path)
        g = new_gfid()
        await self.top.mkdir(self.call, MkdirReq(p, n, mode, g))
        return g

    async def symlink(self, path: str, target: bytes) -> None:
        p, n = await self._pn(path)
        await self.top.symlink(self.call, SymlinkReq(p, n, target, new_gfid()))

    async def link(self, old: str, new: str) -> None:
        g = await self.gfid(old)
        p, n = await self._pn(new)
        await self.top.link(self.call, LinkReq(g, p, n))

    async def unlink(self, path: str) -> None:
        p, n = await self._pn(path)
        await self.top.unlink(self.call, EntryReq(p, n))

    async def rmdir(self, path: str) -> None:
        p, n = await self._pn(path)
        await self.top.rmdir(self.call, EntryReq(p, n))

    async def rmtree(self, path: str) -> None:
        for name in await self.listdir(path):
            sub = f"{path}/{name}"
            if S.S_ISDIR((await self.lookup(sub)).mode):
                await self.rmtree(sub)
            else:
                await self.unlink(sub)
        await self.rmdir(path)

    async def rename(self, old: str, new: str) -> None:
        op, on = await self._pn(old)
        np, nn = await self._pn(new)
        await self.top.rename(self.call, RenameReq(op, on, np, nn))

    async def chmod(self, path: str, mode: int) -> None:
        g = await self.gfid(path)
        await self.top.setattr(self.call, SetattrReq(g, SET_MODE, mode=mode))

    async def chown(self, path: str, uid: int, gid: int) -> None:
        g = await self.gfid(path)
        await self.top.setattr(self.call, SetattrReq(g, SET_UID | SET_GID, uid=uid, gid=gid))

    async def truncate(self, path: str, size: int) -> None:
        g = await self.gfid(path)
        await self.top.truncate(self.call, TruncateReq(g, size))

    async def setxattr(self, path: str, name: str, value: bytes) -> None:
        g = await self.gfid(path)
        await self.top.setxattr(self.call, SetxattrReq(g, name, value))

    async def removexattr(self, path: str, name: str) -> None:
        g = await self.gfid(path)
        await self.top.removexattr(self.call, RemovexattrReq(g, name))

    async def listdir(self, path: str) -> list[str]:
        g = await self.gfid(path)
        fd = (await self.top.opendir(self.call, InodeReq(g))).fd
        names: list[str] = []
        try:
            off = 0
            while True:
                r = await self.top.readdir(self.call, ReaddirReq(fd, off, 65536, True))
                names += [e.name.decode() for e in r.entries if e.name not in (b".", b"..")]
                if r.eof or not r.entries:
                    break
                off = r.entries[-1].off
        finally:
            await self.top.releasedir(self.call, FdReq(fd))
        return sorted(n for n in names if not (path.strip("/") == "" and n == ".gvol"))

    async def stat(self, path: str) -> Iatt:
        return (await self.top.stat(self.call, InodeReq(await self.gfid(path)))).iatt


# ---------------------------------------------------------------- what is on the bricks
def _xattrs(p: str) -> dict[str, bytes]:
    out = {}
    for k in os.listxattr(p, follow_symlinks=False):
        if k.startswith((AFR_PREFIX, XATTR_GFID2PATH)):  # each brick's own bookkeeping
            continue
        out[k] = os.getxattr(p, k, follow_symlinks=False)
    return out


def tree(brick: Path, with_size: bool = True) -> dict[str, tuple]:
    """Everything a brick holds (but .gvol and the changelog): type, mode, owner, gfid,
    xattrs, and content / target. Two bricks of a healed set compare equal."""
    out: dict[str, tuple] = {}
    root = str(brick)
    for d, dirs, files in os.walk(root):
        if d == root:
            dirs[:] = [x for x in dirs if x != ".gvol"]
        for name in dirs + files:
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            xa = _xattrs(p)
            if S.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
                extra: tuple = (st.st_size if with_size else None, h if with_size else None)
            elif S.S_ISLNK(st.st_mode):
                extra = (os.readlink(p),)
            else:
                extra = ()
            out[rel] = (S.S_IFMT(st.st_mode), S.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        tuple(sorted(xa.items())), extra)
    return out


def changelog(brick: Path) -> dict[str, dict[str, bytes]]:
    """Non-zero changelog xattrs (pending and dirty) of every object on a brick."""
    out: dict[str, dict[str, bytes]] = {}
    root = str(brick)
    for d, dirs, files in os.walk(root):
        if d == root:
            dirs[:] = [x for x in dirs if x != ".gvol"]
        for name in ([""] if d == root else []) + dirs + files:
            p = os.path.join(d, name) if name else d
            for k in os.listxattr(p, follow_symlinks=False):
                if k.startswith(AFR_PREFIX):
                    v = os.getxattr(p, k, follow_symlinks=False)
                    if any(v):
                        out.setdefault(os.path.relpath(p, root), {})[k] = v
    return out


def drop_object(brick: Path, rel: str, gfid: bytes) -> None:
    """Remove a file from one brick behind gvol's back: its name and its gfid handle."""
    os.unlink(brick / rel)
    h = gfid.hex()
    os.unlink(brick / ".gvol" / "handles" / h[:2] /
              f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")


def index_names(brick: Path) -> dict[str, list[str]]:
    base = brick / ".gvol" / "indices"
    return {sub: sorted(n for n in os.listdir(base / sub) if n != f"{sub}-base")
            if (base / sub).exists() else [] for sub in ("xattrop", "dirty")}


def run(fn: Any, *args: Any) -> None:
    async def main() -> None:
        with trio.fail_after(CEILING):
            await fn(*args)
    trio.run(main)
