"""cluster/replicate over real storage/posix bricks (with features/locks and features/index) in
one process: replication, the changelog and its cost in round trips, quorum, arbiter, reads,
distributed-replicated under cluster/dht. Heal scenarios are in test_afr_heal.py."""
from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
import trio
from afrenv import FS, Replica, changelog, drop_object, index_names, run, tree

from translators.cluster.afr import Replicate, counters
from translators.cluster.afr_heal import index_entries
from translators.cluster.dht import Distribute
from translators.fops import (
    CreateReq,
    EntryReq,
    FdReq,
    FsyncReq,
    InodeReq,
    LookupReq,
    OpenReq,
    ReaddirReq,
    ReadReq,
    WriteReq,
    XattropReq,
)
from translators.types import (
    ROOT_CALL,
    ROOT_GFID,
    XDATA_EXPECT_GFID,
    Call,
    FopError,
    gfid_str,
    new_gfid,
)
from translators.volfile import build
from translators.xlator import GraphError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bricks need root (trusted.* xattrs)")


def same(r: Replica) -> None:
    t = [tree(b.path) for b in r.bricks]
    for x in t[1:]:
        assert x == t[0]


def clean(r: Replica) -> None:
    for b in r.bricks:
        assert changelog(b.path) == {}, b.path
        assert index_names(b.path) == {"xattrop": [], "dirty": []}, b.path


# ---------------------------------------------------------------- basics
def test_replicates_everything_with_one_gfid(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/d")
            await fs.create("/d/f", b"hello world")
            await fs.symlink("/d/l", b"f")
            await fs.link("/d/f", "/d/hard")
            await fs.mkdir("/d/sub", 0o700)
            await fs.rename("/d/sub", "/d/sub2")
            await fs.chmod("/d/f", 0o640)
            await fs.chown("/d/f", 1234, 5678)
            await fs.setxattr("/d/f", "user.colour", b"blue")
            await fs.write("/d/f", 6, b"there")
            await fs.create("/d/gone", b"x")
            await fs.unlink("/d/gone")
            assert await fs.read("/d/f") == b"hello there"
            assert await fs.listdir("/d") == ["f", "hard", "l", "sub2"]
            await afr.settle()
            same(r)
            clean(r)
            assert tree(r.bricks[0].path)["d/f"][2:4] == (1234, 5678)
            n.cancel_scope.cancel()
    run(t)


def test_options_are_checked(tmp_path: Path) -> None:
    r = Replica(tmp_path)
    with pytest.raises(GraphError):
        r.client(**{"quorum-type": "fixed"})  # needs quorum-count
    with pytest.raises(GraphError):
        r.client(**{"afr-pending-xattr": "a,b"})
    with pytest.raises(GraphError):
        r.client(**{"self-heal-window-size": "1k"})
    a = r.client(**{"quorum-type": "fixed", "quorum-count": "2",
                    "self-heal-window-size": "2"})
    assert a.window == 256 * 1024 and a.quorum_count == 2


def test_volfile_types_and_alias(tmp_path: Path) -> None:
    Replica(tmp_path)  # prepares the bricks
    parts = []
    for i in range(3):
        parts.append(f"""
volume b{i}
    type storage/posix
    option directory {tmp_path}/b{i}
    option volume-id 3c9b6a52-8f0e-4a8e-9d7c-2b5f1e0a7d11
end-volume
volume b{i}-locks
    type features/locks
    subvolumes b{i}
end-volume
volume vol-client-{i}
    type features/index
    subvolumes b{i}-locks
end-volume
""")
    for t in ("cluster/replicate", "cluster/afr"):
        top = build("".join(parts) + f"""
volume vol-replicate-0
    type {t}
    option afr-pending-xattr vol-client-0,vol-client-1,vol-client-2
    option quorum-type auto
    option favorite-child-policy mtime
    subvolumes vol-client-0 vol-client-1 vol-client-2
end-volume
""")
        assert isinstance(top, Replicate)
        assert top.keys == [f"trusted.gvol.afr.vol-client-{i}" for i in range(3)]


# ---------------------------------------------------------------- cost
def test_creates_and_writes_cost_one_round_trip_each(tmp_path: Path) -> None:
    """With eager locking, the pre-op folded into the fop and the post-op into the flush,
    creating, writing and closing a file costs one request per brick per fop, like a plain
    distributed volume; a lock is taken once for the whole directory. GlusterFS with its
    default pre-op-compat sends lock, pre-op, op, post-op and unlock."""
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            d = await fs.mkdir("/d")
            await afr.settle()
            links = r.links(afr)
            for x in links:
                x.calls.clear()
            files = 50
            for i in range(files):
                rep = await afr.create(ROOT_CALL, CreateReq(d, b"f%d" % i, os.O_RDWR, 0o644,
                                                            new_gfid()))
                for k in range(4):
                    await afr.write(ROOT_CALL, WriteReq(rep.fd, k * 100, b"x" * 100))
                await afr.flush(ROOT_CALL, FdReq(rep.fd))
                await afr.release(ROOT_CALL, FdReq(rep.fd))
            await afr.settle()
            for x in links:
                c = x.calls
                assert c["create"] == files and c["write"] == 4 * files
                assert c["entrylk"] + c["inodelk"] <= 2, c  # one directory lock (+ unlock)
                # the post-op + unlock of each file travels in its flush; one for the dir
                assert c["flush"] == files and c["xattrop"] <= 2, c
                assert c["lookup"] == 0, c
            same(r)
            clean(r)
            # a stream of writes to an open file: one request per write
            g = await fs.create("/d/stream")
            fd = (await afr.open(ROOT_CALL, OpenReq(g, os.O_RDWR))).fd
            for x in links:
                x.calls.clear()
            for k in range(200):
                await afr.write(ROOT_CALL, WriteReq(fd, k * 512, b"y" * 512))
            assert all(x.calls["write"] == 200 and sum(x.calls.values()) <= 202
                       for x in links), [x.calls for x in links]
            await afr.release(ROOT_CALL, FdReq(fd))
            await afr.settle()
            clean(r)
            n.cancel_scope.cancel()
    run(t)


def test_reads_go_to_one_brick_spread_by_gfid(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            for i in range(30):
                await fs.create(f"/f{i}", b"data %d" % i)
            links = r.links(afr)
            for x in links:
                x.calls.clear()
            for i in range(30):
                assert await fs.read(f"/f{i}") == b"data %d" % i
            reads = [x.calls["read"] for x in links]
            assert sum(reads) >= 30 and all(reads), reads  # every brick serves some
            # the same file is always read from the same brick
            for x in links:
                x.calls.clear()
            for _ in range(5):
                await fs.read("/f7")
            assert sorted(x.calls["read"] for x in links)[:2] == [0, 0]
            # ... and opened there only (a read-only open); fsync opens it on the others
            for x in links:
                x.calls.clear()
            g = await fs.gfid("/f7")
            fd = (await afr.open(ROOT_CALL, OpenReq(g, os.O_RDONLY))).fd
            assert sorted(x.calls["open"] for x in links) == [0, 0, 1]
            reader = next(x for x in links if x.calls["open"])
            assert (await afr.read(ROOT_CALL, ReadReq(fd, 0, 100))).data == b"data 7"
            await afr.fsync(ROOT_CALL, FsyncReq(fd, False))
            assert [x.calls["open"] for x in links] == [1, 1, 1]
            await afr.release(ROOT_CALL, FdReq(fd))
            # the brick it was opened on goes away: the read fails over (opening elsewhere)
            fd = (await afr.open(ROOT_CALL, OpenReq(g, os.O_RDONLY))).fd
            await reader.cut()
            assert (await afr.read(ROOT_CALL, ReadReq(fd, 0, 100))).data == b"data 7"
            await afr.release(ROOT_CALL, FdReq(fd))
            await reader.restore()
            # a brick going away: reads fail over
            await links[0].cut()
            await links[1].cut()
            for i in range(30):
                assert await fs.read(f"/f{i}") == b"data %d" % i
            n.cancel_scope.cancel()
    run(t)


def test_changelog_is_invisible_to_clients(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/f", b"x")
            await r.links(afr)[2].cut()
            await fs.write("/f", 0, b"y")
            g = await fs.gfid("/f")
            rep = await afr.lookup(ROOT_CALL, LookupReq(parent=ROOT_GFID, name=b"f",
                                                        xattrs=("user.x",)))
            assert not rep.xattrs
            rep = await afr.lookup(ROOT_CALL, LookupReq(gfid=g))
            assert rep.xattrs is None
            lx = await afr.listxattr(ROOT_CALL, InodeReq(g))
            assert not [x for x in lx.names if x.startswith("trusted.gvol")]
            n.cancel_scope.cancel()
    run(t)


# ---------------------------------------------------------------- quorum
def test_quorum_auto_replica3(tmp_path: Path) -> None:
    """2 of 3 down: modifying fops fail with EROFS and nothing is sent; reads of good data
    work; back up: writes work again."""
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/d")
            await fs.create("/d/f", b"good data")
            await afr.settle()
            links = r.links(afr)
            before = [tree(b.path) for b in r.bricks]
            await links[1].cut()
            await fs.write("/d/f", 0, b"still")  # 2 of 3: fine
            await links[2].cut()
            for op in (fs.write("/d/f", 0, b"x"), fs.create("/d/new", b"x"), fs.mkdir("/d/n"),
                       fs.unlink("/d/f"), fs.chmod("/d/f", 0o600), fs.truncate("/d/f", 0),
                       fs.rename("/d/f", "/d/g"), fs.setxattr("/d/f", "user.a", b"b")):
                with pytest.raises(FopError) as ei:
                    await op
                assert ei.value.errno == errno.EROFS, ei.value
            assert await fs.read("/d/f") == b"stilldata"
            assert await fs.listdir("/d") == ["f"]
            # nothing diverged on the brick that stayed
            assert tree(r.bricks[0].path)["d"] == before[0]["d"]
            await links[1].restore()
            await links[2].restore()
            await fs.write("/d/f", 0, b"again")
            await fs.create("/d/new", b"x")
            assert await fs.read("/d/f") == b"againdata"
            n.cancel_scope.cancel()
    run(t)


def test_quorum_rules(tmp_path: Path) -> None:
    r = Replica(tmp_path, 2)
    a = r.client()
    assert a.quorum(0b01) and not a.quorum(0b10) and a.quorum(0b11)  # first brick breaks ties
    r4 = Replica(tmp_path / "four", 4)
    b = r4.client()
    assert b.quorum(0b0011) and not b.quorum(0b1100) and b.quorum(0b1110)
    c = r4.client(**{"quorum-type": "fixed", "quorum-count": "3"})
    assert not c.quorum(0b0011) and c.quorum(0b0111)
    d = r4.client(**{"quorum-type": "none"})
    assert d.quorum(0b1000) and not d.quorum(0)


def test_quorum_none_and_fixed(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        a_none = r.client(**{"quorum-type": "none"})
        a_fix = r.client(**{"quorum-type": "fixed", "quorum-count": "3"})
        async with trio.open_nursery() as n:
            await r.start(n)
            await FS(a_none).create("/f", b"x")
            await a_none.settle()
            for a in (a_none, a_fix):
                await r.links(a)[2].cut()
            with pytest.raises(FopError) as ei:
                await FS(a_fix).write("/f", 0, b"y")
            assert ei.value.errno == errno.EROFS
            for a in (a_none,):
                await r.links(a)[1].cut()
            await FS(a_none).write("/f", 0, b"z")  # one brick is enough
            assert await FS(a_fix).read("/f") in (b"x", b"z")
            n.cancel_scope.cancel()
    run(t)


# ---------------------------------------------------------------- failures during fops
def test_brick_failing_a_fop_is_accused_at_once(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/f", b"x" * 10)
            await afr.settle()
            g = await fs.gfid("/f")
            # brick 1's copy vanishes behind our back: the write fails there only
            drop_object(r.bricks[1].path, "f", g)
            fd = (await afr.open(ROOT_CALL, OpenReq(g, os.O_RDWR))).fd
            await afr.write(ROOT_CALL, WriteReq(fd, 0, b"y"))
            await afr.release(ROOT_CALL, FdReq(fd))
            await afr.settle()
            cl = changelog(r.bricks[0].path)
            d, m, e = counters(cl["f"]["trusted.gvol.afr.vol-client-1"])
            assert d > 0
            assert "f" not in changelog(r.bricks[1].path)
            n.cancel_scope.cancel()
    run(t)


def test_symmetric_failure_leaves_no_trace(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/f", b"x")
            with pytest.raises(FopError) as ei:
                await fs.create("/f", b"x")
            assert ei.value.errno == errno.EEXIST
            with pytest.raises(FopError) as ei:
                await fs.unlink("/nope")
            assert ei.value.errno == errno.ENOENT
            await afr.settle()
            clean(r)
            same(r)
            n.cancel_scope.cancel()
    run(t)


def test_two_clients_writing_one_file_stay_consistent(tmp_path: Path) -> None:
    """Eager locks of two clients on one file: each waits for the other's lock, the bricks
    apply the writes in one order."""
    async def t() -> None:
        r = Replica(tmp_path)
        a = r.client(**{"post-op-delay-secs": "0.05"})
        b = r.client(**{"post-op-delay-secs": "0.05"})
        async with trio.open_nursery() as n:
            await r.start(n)
            g = await FS(a).create("/shared", b"")
            fa = (await a.open(ROOT_CALL, OpenReq(g, os.O_RDWR))).fd
            fb = (await b.open(ROOT_CALL, OpenReq(g, os.O_RDWR))).fd

            async def writer(afr: Replicate, fd, tag: bytes) -> None:
                for k in range(20):
                    await afr.write(ROOT_CALL, WriteReq(fd, 0, tag * 8 + b"%02d" % k))

            async with trio.open_nursery() as w:
                w.start_soon(writer, a, fa, b"A")
                w.start_soon(writer, b, fb, b"B")
            await a.release(ROOT_CALL, FdReq(fa))
            await b.release(ROOT_CALL, FdReq(fb))
            await a.settle()
            await b.settle()
            same(r)
            clean(r)
            n.cancel_scope.cancel()
    run(t)


def test_client_does_not_read_a_returned_brick_it_knew_as_good(tmp_path: Path) -> None:
    """Client A knew every copy as good; a brick goes away, client B changes the file and
    the directory, the brick returns: A's reads (on an fd opened before, and the directory
    listing) come from the good copies, not the returned brick that missed the changes."""
    async def t() -> None:
        r = Replica(tmp_path)
        a = r.client(**{"read-policy": "first", "background-self-heal-count": "0"})
        b = r.client(**{"background-self-heal-count": "0"})
        async with trio.open_nursery() as n:
            await r.start(n)
            await FS(b).create("/f", b"old")
            await b.settle()
            g = await FS(a).gfid("/f")
            fd = (await a.open(ROOT_CALL, OpenReq(g, os.O_RDONLY))).fd
            assert (await a.read(ROOT_CALL, ReadReq(fd, 0, 100))).data == b"old"
            dfd = (await a.opendir(ROOT_CALL, InodeReq(ROOT_GFID))).fd
            for afr in (a, b):
                await r.links(afr)[0].cut()
            await FS(b).write("/f", 0, b"new")
            await FS(b).create("/g", b"made while brick 0 was away")
            await b.settle()
            for afr in (a, b):
                await r.links(afr)[0].restore()
            assert (await a.read(ROOT_CALL, ReadReq(fd, 0, 100))).data == b"new"
            ents = (await a.readdir(ROOT_CALL, ReaddirReq(dfd, 0, 4096))).entries
            assert b"g" in {e.name for e in ents}
            await a.release(ROOT_CALL, FdReq(fd))
            await a.releasedir(ROOT_CALL, FdReq(dfd))
            n.cancel_scope.cancel()
    run(t)


def test_readdirplus_attributes_never_come_from_a_stale_copy(tmp_path: Path) -> None:
    """The brick serving a listing may hold an entry's stale copy (its data heal pending): the
    attributes readdirplus returns for it are a good copy's (the kernel caches the size)."""
    async def t() -> None:
        r = Replica(tmp_path)
        a = r.client(**{"read-policy": "first", "background-self-heal-count": "0"})
        async with trio.open_nursery() as n:
            await r.start(n)
            await FS(a).create("/f", b"old")
            await a.settle()
            await r.links(a)[0].cut()
            await FS(a).write("/f", 0, b"the new, longer content")
            await a.settle()
            await r.links(a)[0].restore()
            dfd = (await a.opendir(ROOT_CALL, InodeReq(ROOT_GFID))).fd
            ents = (await a.readdir(ROOT_CALL, ReaddirReq(dfd, 0, 65536, plus=True))).entries
            f = next(e for e in ents if e.name == b"f")
            assert f.iatt is None or f.iatt.size == len(b"the new, longer content")
            await a.releasedir(ROOT_CALL, FdReq(dfd))
            n.cancel_scope.cancel()
    run(t)


def test_callers_xdata_reaches_the_bricks(tmp_path: Path) -> None:
    """dht's expected gfid (xdata of unlink) travels with afr's own changelog keys: a name
    that is now another file is not removed."""
    async def t() -> None:
        r = Replica(tmp_path)
        a = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            g = await FS(a).create("/f", b"x")
            with pytest.raises(FopError) as ei:
                await a.unlink(ROOT_CALL, EntryReq(ROOT_GFID, b"f",
                                                   xdata={XDATA_EXPECT_GFID: new_gfid()}))
            assert ei.value.errno == errno.ESTALE
            assert await FS(a).gfid("/f") == g
            await a.unlink(ROOT_CALL, EntryReq(ROOT_GFID, b"f", xdata={XDATA_EXPECT_GFID: g}))
            await a.settle()
            for b in r.bricks:
                assert not (b.path / "f").exists()
            n.cancel_scope.cancel()
    run(t)


# ---------------------------------------------------------------- arbiter
def test_arbiter_holds_names_and_metadata_only(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path, 3, arbiter=True)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/d")
            await fs.create("/d/f", b"payload" * 1000)
            await fs.chmod("/d/f", 0o600)
            await fs.setxattr("/d/f", "user.k", b"v")
            await afr.settle()
            arb = r.bricks[2].path / "d" / "f"
            assert arb.stat().st_size == 0
            assert (r.bricks[0].path / "d" / "f").stat().st_size == 7000
            t0, t2 = tree(r.bricks[0].path, False), tree(r.bricks[2].path, False)
            assert t0 == t2  # names, modes, owners, xattrs, gfids
            assert os.getxattr(arb, "user.k") == b"v"
            links = r.links(afr)
            for x in links:
                x.calls.clear()
            for _ in range(5):
                assert await fs.read("/d/f") == b"payload" * 1000
                await fs.stat("/d/f")
            await afr.statfs(ROOT_CALL, InodeReq(ROOT_GFID))
            assert links[2].calls["read"] == 0 and links[2].calls["statfs"] == 0
            assert (await fs.stat("/d/f")).size == 7000
            clean(r)
            n.cancel_scope.cancel()
    run(t)


def test_arbiter_never_the_only_good_copy(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path, 3, arbiter=True)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/f", b"v1")
            await afr.settle()
            links = r.links(afr)
            await links[0].cut()
            await fs.write("/f", 0, b"v2")  # brick 1 + arbiter: brick 1 is good
            await afr.settle()
            await links[0].restore()
            await links[1].cut()
            # left: brick 0 (stale: accused by 1 and the arbiter) and the arbiter
            await fs.lookup("/f")
            with pytest.raises(FopError) as ei:
                await fs.write("/f", 0, b"v3")
            assert ei.value.errno == errno.ENOTCONN
            with pytest.raises(FopError):
                await fs.read("/f")  # no good data copy is up
            # metadata lives on the arbiter too: it can still change
            await fs.chmod("/f", 0o600)
            await links[1].restore()
            assert await fs.read("/f") == b"v2"
            n.cancel_scope.cancel()
    run(t)


# ---------------------------------------------------------------- index
def test_index_records_and_forgets(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            g = await fs.create("/f", b"x")
            await afr.settle()
            b0 = r.bricks[0]
            one = struct.pack(">3i", 1, 0, 0)
            minus = struct.pack(">3i", -1, 0, 0)
            key = "trusted.gvol.afr.vol-client-1"
            call = Call(pid=-1)
            await b0.top.xattrop(call, XattropReq(g, 0, {key: one}))
            gs = gfid_str(g)
            assert index_names(b0.path)["xattrop"] == [gs]
            await b0.top.xattrop(call, XattropReq(g, 0, {"trusted.gvol.afr.dirty": one}))
            assert index_names(b0.path)["dirty"] == [gs]
            await b0.top.xattrop(call, XattropReq(g, 0, {key: minus}))
            assert index_names(b0.path)["xattrop"] == []
            assert index_names(b0.path)["dirty"] == [gs]
            # a stale entry (object gone) is dropped when the index is listed
            drop_object(b0.path, "f", g)
            idx = await index_entries(afr)
            assert idx[0]["dirty"] == []
            n.cancel_scope.cancel()
    run(t)


# ---------------------------------------------------------------- distributed-replicated
def test_distributed_replicated_2x3(tmp_path: Path) -> None:
    async def t() -> None:
        sets = [Replica(tmp_path, 3, set_index=k, first_brick=3 * k) for k in range(2)]
        afrs = [s.client() for s in sets]
        dht = Distribute("vol-dht", {}, afrs)
        async with trio.open_nursery() as n:
            for s in sets:
                await s.start(n)
            await dht.init(n)
            fs = FS(dht)
            await fs.mkdir("/d")
            for i in range(40):
                await fs.create(f"/d/f{i}", b"content %d" % i)
            await fs.mkdir("/d/sub")
            await fs.create("/d/sub/x", b"x")
            for i in range(0, 40, 3):
                await fs.rename(f"/d/f{i}", f"/d/r{i}")
            names = await fs.listdir("/d")
            assert len(names) == 41
            for i in range(1, 40, 3):
                assert await fs.read(f"/d/f{i}") == b"content %d" % i
            for a in afrs:
                await a.settle()
            counts = []
            for s in sets:
                same(s)
                clean(s)
                counts.append(len([x for x in os.listdir(s.bricks[0].path / "d")
                                   if x.startswith(("f", "r"))]))
            assert all(counts), counts  # both replica sets hold files
            # a brick of each set down: the volume keeps working
            await sets[0].links(afrs[0])[1].cut()
            await sets[1].links(afrs[1])[2].cut()
            await fs.create("/d/later", b"l")
            assert await fs.read("/d/later") == b"l"
            n.cancel_scope.cancel()
    run(t)


def test_concurrent_writes_to_one_file_do_not_reorder(tmp_path: Path) -> None:
    """Overlapping writes in flight together from one client wait for each other: every
    brick ends with the same bytes."""
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            g = await FS(afr).create("/f")
            fd = (await afr.open(ROOT_CALL, OpenReq(g, os.O_RDWR))).fd
            async with trio.open_nursery() as w:
                for k in range(30):
                    w.start_soon(afr.write, ROOT_CALL, WriteReq(fd, k % 3, bytes([65 + k]) * 8))
            data = (await afr.read(ROOT_CALL, ReadReq(fd, 0, 100))).data
            assert len(data) == 10
            await afr.release(ROOT_CALL, FdReq(fd))
            await afr.settle()
            same(r)
            n.cancel_scope.cancel()
    run(t)
