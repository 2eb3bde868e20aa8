"""performance/create-behind over a real replica set (in-process storage/posix bricks, counted
links): what reaches the bricks, and what an application sees."""
from __future__ import annotations

import errno
import os
import stat as S
from pathlib import Path

import pytest
import trio
import trio.testing
from afrenv import FS, Replica, changelog, index_names, run, tree

from translators.fops import (
    SET_MODE,
    CreateReq,
    EntryReq,
    FdReq,
    FsetattrReq,
    FsyncReq,
    InodeReq,
    LookupReq,
    MkdirReq,
    ReadReq,
    WriteReq,
)
from translators.performance.create_behind import CreateBehind
from translators.types import ROOT_CALL, ROOT_GFID, Call, FopError, new_gfid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bricks need root (trusted.* xattrs)")


def consistent(r: Replica) -> None:
    t = [tree(b.path) for b in r.bricks]
    assert t[1] == t[0] and t[2] == t[0]
    for b in r.bricks:
        assert changelog(b.path) == {}, b.path
        assert index_names(b.path) == {"xattrop": [], "dirty": []}, b.path


class Env:
    def __init__(self, tmp: Path, **opts: str) -> None:
        self.r = Replica(tmp)
        self.afr = self.r.client()
        self.cb = CreateBehind("cb", opts, [self.afr])
        self.fs = FS(self.cb)

    async def start(self, n: trio.Nursery) -> None:
        await self.r.start(n)
        await self.cb.init(n)
        # the mount looks the root up first: create-behind learns its mode from that
        await self.cb.lookup(ROOT_CALL, LookupReq(gfid=ROOT_GFID))

    def calls(self) -> list[dict[str, int]]:
        return [dict(x.calls) for x in self.r.links(self.afr)]

    def clear(self) -> None:
        for x in self.r.links(self.afr):
            x.calls.clear()

    async def create(self, parent: bytes, name: bytes, flags: int = os.O_WRONLY | os.O_CREAT,
                     mode: int = 0o640, call: Call = ROOT_CALL):
        return await self.cb.create(call, CreateReq(parent, name, flags, mode, new_gfid(),
                                                    0o022))


def test_small_file_is_one_create_per_brick(tmp_path: Path) -> None:
    """create + writes + flush + release of a small file: one create request per brick, the
    file whole on every brick, nothing pending; the create's reply looked like the real one."""
    async def t() -> None:
        e = Env(tmp_path)
        async with trio.open_nursery() as n:
            await e.start(n)
            await e.afr.settle()
            e.clear()
            rep = await e.create(ROOT_GFID, b"f", mode=0o666)
            assert rep.iatt.mode == S.S_IFREG | 0o644 and rep.iatt.size == 0
            for k in range(3):
                w = await e.cb.write(ROOT_CALL, WriteReq(rep.fd, k * 1000, b"%d" % k * 1000))
                assert w.size == 1000 and w.iatt.size == (k + 1) * 1000
            for b in e.r.bricks:
                assert not (b.path / "f").exists()  # held back: nothing sent yet
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            await e.afr.settle()
            for c in e.calls():
                fops = {k: v for k, v in c.items() if k not in ("entrylk", "xattrop")}
                assert fops == {"create": 1}, c
            want = b"0" * 1000 + b"1" * 1000 + b"2" * 1000
            for b in e.r.bricks:
                assert (b.path / "f").read_bytes() == want
                assert S.S_IMODE((b.path / "f").stat().st_mode) == 0o644
            ia = await e.fs.lookup("/f")
            assert ia.gfid == rep.iatt.gfid and ia.size == 3000
            consistent(e.r)
            n.cancel_scope.cancel()
    run(t)


def test_anything_else_makes_the_file_real_first(tmp_path: Path) -> None:
    """fstat/fsync on the fd, a write that does not append, a lookup of another name: the
    held file is created (with what was gathered) before, and the rest goes on as usual."""
    async def t() -> None:
        e = Env(tmp_path)
        async with trio.open_nursery() as n:
            await e.start(n)
            fs = e.fs
            # a fop on the fd
            rep = await e.create(ROOT_GFID, b"a", os.O_RDWR | os.O_CREAT)
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"hello"))
            await e.cb.fsync(ROOT_CALL, FsyncReq(rep.fd, False))
            for b in e.r.bricks:
                assert (b.path / "a").read_bytes() == b"hello"
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 5, b" world"))
            got = await e.cb.read(ROOT_CALL, ReadReq(rep.fd, 0, 100))
            assert got.data == b"hello world"
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            # a write that does not append
            rep = await e.create(ROOT_GFID, b"b")
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"xxxxxxxx"))
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 2, b"YY"))
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            # another fop, not on the file: a lookup of its name finds it
            rep = await e.create(ROOT_GFID, b"c")
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"cc"))
            ia = await fs.lookup("/c")
            assert ia.gfid == rep.iatt.gfid and ia.size == 2
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 2, b"CC"))
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            await e.afr.settle()
            for b in e.r.bricks:
                assert (b.path / "b").read_bytes() == b"xxYYxxxx"
                assert (b.path / "c").read_bytes() == b"ccCC"
            consistent(e.r)
            n.cancel_scope.cancel()
    run(t)


def test_a_flush_of_a_dup_then_more_writes(tmp_path: Path) -> None:
    """close() of one dup sends the file; writes through the other dup still land."""
    async def t() -> None:
        e = Env(tmp_path)
        async with trio.open_nursery() as n:
            await e.start(n)
            rep = await e.create(ROOT_GFID, b"d")
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"first "))
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))  # one of two dups closed
            for b in e.r.bricks:
                assert (b.path / "d").read_bytes() == b"first "
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 6, b"second"))
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            await e.afr.settle()
            for b in e.r.bricks:
                assert (b.path / "d").read_bytes() == b"first second"
            consistent(e.r)
            n.cancel_scope.cancel()
    run(t)


def test_o_excl_held_only_with_its_name_reserved(tmp_path: Path) -> None:
    """An O_EXCL create is held back when the kernel's lookup found the name absent under this
    client's lock on the directory: another client's create of that name waits for ours and
    fails with EEXIST. Without such a lookup it is made at once."""
    async def t() -> None:
        e = Env(tmp_path)
        other = e.r.client()
        excl = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        async with trio.open_nursery() as n:
            await e.start(n)
            d = await e.fs.mkdir("/d")  # made with this client's lock on it
            with pytest.raises(FopError) as ei:
                await e.cb.lookup(ROOT_CALL, LookupReq(d, b"x"))
            assert ei.value.errno == errno.ENOENT
            e.clear()
            rep = await e.create(d, b"x", excl)
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"ours"))
            assert not any((b.path / "d" / "x").exists() for b in e.r.bricks)
            done: list[int] = []

            async def theirs() -> None:
                try:
                    await other.create(ROOT_CALL, CreateReq(d, b"x", excl, 0o644, new_gfid()))
                except FopError as err:
                    done.append(err.errno)
                else:
                    done.append(0)
            n.start_soon(theirs)
            await trio.testing.wait_all_tasks_blocked()
            assert done == []  # waits for the directory lock our reservation keeps
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            with trio.fail_after(30):
                while not done:
                    await trio.sleep(0.02)
            assert done == [errno.EEXIST]
            for b in e.r.bricks:
                assert (b.path / "d" / "x").read_bytes() == b"ours"
            for c in e.calls():
                assert c.get("create") == 1 and not c.get("write"), c
            # no lookup under the lock first: made at once
            rep = await e.create(d, b"y", excl)
            assert all((b.path / "d" / "y").exists() for b in e.r.bricks)
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            await e.afr.settle()
            await other.settle()
            consistent(e.r)
            n.cancel_scope.cancel()
    run(t)


def test_a_file_held_too_long_goes_out(tmp_path: Path) -> None:
    """A file kept open past max-hold is created with what was gathered, and stays open."""
    async def t() -> None:
        e = Env(tmp_path, **{"max-hold": "0.1"})
        async with trio.open_nursery() as n:
            await e.start(n)
            rep = await e.create(ROOT_GFID, b"slow")
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"part one, "))
            with trio.fail_after(30):
                while not (e.r.bricks[0].path / "slow").exists():
                    await trio.sleep(0.02)
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 10, b"part two"))
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            await e.afr.settle()
            for b in e.r.bricks:
                assert (b.path / "slow").read_bytes() == b"part one, part two"
            consistent(e.r)
            n.cancel_scope.cancel()
    run(t)


def test_not_held_back(tmp_path: Path) -> None:
    """O_EXCL without a reservation, set-group-id directories, big files, and `enable off`:
    created at once."""
    async def t() -> None:
        e = Env(tmp_path, **{"max-size": "4096"})
        off = CreateBehind("cb-off", {"enable": "off"}, [e.afr])
        async with trio.open_nursery() as n:
            await e.start(n)
            await off.init(n)
            rep = await e.create(ROOT_GFID, b"excl", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            assert (e.r.bricks[0].path / "excl").exists()
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            with pytest.raises(FopError) as ei:
                await e.create(ROOT_GFID, b"excl", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            assert ei.value.errno == errno.EEXIST
            sg = (await e.cb.mkdir(ROOT_CALL, MkdirReq(ROOT_GFID, b"sg", 0o2775, new_gfid(),
                                                        0))).iatt
            assert sg.mode & S.S_ISGID
            rep = await e.create(sg.gfid, b"f", call=Call(1000, 1000))
            assert (e.r.bricks[0].path / "sg" / "f").exists()
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            rep = await e.create(ROOT_GFID, b"big")
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"x" * 4096))
            assert not (e.r.bricks[0].path / "big").exists()
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 4096, b"y"))  # past max-size
            assert (e.r.bricks[0].path / "big").stat().st_size == 4097
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            rep = await off.create(ROOT_CALL, CreateReq(ROOT_GFID, b"plain", os.O_WRONLY,
                                                        0o644, new_gfid()))
            assert (e.r.bricks[0].path / "plain").exists()
            await off.release(ROOT_CALL, FdReq(rep.fd))
            await e.afr.settle()
            consistent(e.r)
            n.cancel_scope.cancel()
    run(t)


def test_errors_of_the_create_come_at_close(tmp_path: Path) -> None:
    """The directory went away before the close: the flush fails with the create's errno,
    and the file's fd then reports it too; a name made meanwhile elsewhere gets the content
    (as O_CREAT|O_TRUNC would)."""
    async def t() -> None:
        e = Env(tmp_path)
        other = e.r.client()  # a second client of the same bricks
        async with trio.open_nursery() as n:
            await e.start(n)
            d = await e.fs.mkdir("/d")
            rep = await e.create(d, b"f")
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"lost"))
            await FS(other).rmdir("/d")
            await other.settle()
            await e.afr.settle()
            with pytest.raises(FopError) as ei:
                await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            assert ei.value.errno in (errno.ENOENT, errno.ESTALE), ei.value
            with pytest.raises(FopError):
                await e.cb.fsetattr(ROOT_CALL, FsetattrReq(rep.fd, SET_MODE, 0o600))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            # the name appears elsewhere first: our content goes into that file
            rep = await e.create(ROOT_GFID, b"race")
            await e.cb.write(ROOT_CALL, WriteReq(rep.fd, 0, b"ours"))
            await FS(other).create("/race", b"theirs, longer")
            await other.settle()
            await e.cb.flush(ROOT_CALL, FdReq(rep.fd))
            await e.cb.release(ROOT_CALL, FdReq(rep.fd))
            await e.afr.settle()
            for b in e.r.bricks:
                assert (b.path / "race").read_bytes() == b"ours"
            with pytest.raises(FopError):
                await e.cb.stat(ROOT_CALL, InodeReq(rep.iatt.gfid))  # that gfid never was
            await e.cb.unlink(ROOT_CALL, EntryReq(ROOT_GFID, b"race"))
            await e.afr.settle()
            consistent(e.r)
            n.cancel_scope.cancel()
    run(t)
