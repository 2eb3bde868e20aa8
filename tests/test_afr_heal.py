"""Self-heal, heal info and split-brain of cluster/replicate: in-process replica sets over real
storage/posix bricks, and (where a real kill matters) gvol-brickd processes behind
protocol/client."""
from __future__ import annotations

import errno
import os
import shutil
import stat as S
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from afrenv import FS, VOL_ID, Link, Replica, changelog, index_names, run, tree

from translators.cluster import afr_heal
from translators.cluster.afr import Replicate
from translators.features.index import INDEX_XATTROP_GFID
from translators.fops import (
    CreateReq,
    FdReq,
    GetxattrReq,
    InodeReq,
    OpenReq,
    SetxattrReq,
    WriteReq,
)
from translators.protocol.client import Client
from translators.storage.brickdir import prepare_brick
from translators.types import ROOT_CALL, FopError, gfid_str, new_gfid
from translators.xlator import Event

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bricks need root (trusted.* xattrs)")


def assert_healed(r: Replica, data: bool = True) -> None:
    """Pending 0 everywhere, empty indices, and identical brick trees."""
    for b in r.bricks:
        assert changelog(b.path) == {}, (b.path, changelog(b.path))
        assert index_names(b.path) == {"xattrop": [], "dirty": []}, b.path
    t = [tree(b.path, with_size=data) for b in r.bricks]
    for i, x in enumerate(t[1:], 1):
        diff = {k: (t[0].get(k), x.get(k)) for k in set(t[0]) | set(x) if t[0].get(k) != x.get(k)}
        assert not diff, (r.bricks[i].path, diff)


async def heal_all(afr: Replicate) -> afr_heal.HealStats:
    await afr.settle()
    st = await afr_heal.index_heal(afr)
    await afr.settle()
    return st


# ---------------------------------------------------------------- a brick away, then back
def test_brick_down_during_changes_then_healed(tmp_path: Path) -> None:
    """Everything a client can do while one brick of replica 3 is down comes back to it:
    writes, truncate, chmod, chown, xattrs, creates and removals of files and directories,
    renames, links, a file replaced by a directory and a directory by a file."""
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/d")
            await fs.create("/d/f", b"hello world")
            await fs.create("/d/g", os.urandom(300_000))
            await fs.mkdir("/d/sub")
            await fs.create("/d/sub/h", b"hhh")
            await fs.create("/d/x", b"becomes a directory")
            await fs.mkdir("/d/y")
            await fs.create("/d/y/inner", b"y will become a file")
            await fs.create("/d/mv", b"moved")
            await fs.setxattr("/d/f", "user.old", b"1")
            await afr.settle()
            links = r.links(afr)
            await links[2].cut()
            await fs.write("/d/f", 6, b"there, and more")
            await fs.truncate("/d/g", 5000)
            await fs.chmod("/d/f", 0o600)
            await fs.chown("/d/g", 1000, 1001)
            await fs.setxattr("/d/f", "user.new", b"2")
            await fs.removexattr("/d/f", "user.old")
            await fs.create("/d/new", b"new file")
            await fs.mkdir("/d/newdir", 0o750)
            await fs.create("/d/newdir/deep", b"deep")
            await fs.symlink("/d/newdir/ln", b"../f")
            await fs.link("/d/f", "/d/newdir/hard")
            await fs.rmtree("/d/sub")
            await fs.unlink("/d/x")
            await fs.mkdir("/d/x")
            await fs.create("/d/x/inside", b"in")
            await fs.rmtree("/d/y")
            await fs.create("/d/y", b"now a file")
            await fs.rename("/d/mv", "/d/newdir/moved")
            await fs.chmod("/d", 0o711)
            await afr.settle()
            assert changelog(r.bricks[0].path)  # the others accuse brick 2
            assert index_names(r.bricks[0].path)["xattrop"]
            await links[2].restore()
            st = await heal_all(afr)
            assert st.split_brain == 0 and st.failed == 0, st
            assert_healed(r)
            t2 = tree(r.bricks[2].path)
            assert t2["d/x"][0] == S.S_IFDIR and t2["d/y"][0] == S.S_IFREG
            assert "d/sub" not in t2 and t2["d/newdir/ln"][-1] == ("../f",)
            assert os.stat(r.bricks[2].path / "d/newdir/hard").st_ino == \
                os.stat(r.bricks[2].path / "d/f").st_ino
            # the healed brick serves reads alone
            await links[0].cut()
            await links[1].cut()
            assert await fs.read("/d/f") == b"hello there, and more"
            assert await fs.read("/d/newdir/moved") == b"moved"
            n.cancel_scope.cancel()
    run(t)


def test_heal_on_lookup(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/d")
            await fs.create("/d/f", b"v1")
            await afr.settle()
            links = r.links(afr)
            await links[0].cut()
            await fs.write("/d/f", 0, b"v2")
            await fs.create("/d/g", b"g")
            await afr.settle()
            await links[0].restore()
            await fs.lookup("/d")  # the directory's entries
            await afr.settle()  # waits for the background heals
            await fs.lookup("/d/g")
            await fs.lookup("/d/f")
            await afr.settle()
            assert afr.stats["heals"] >= 2
            assert_healed(r)
            n.cancel_scope.cancel()
    run(t)


def test_big_file_heals_in_windows_and_only_what_differs(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client(**{"self-heal-window-size": "128KB"})
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            size = 4 << 20
            await fs.create("/big", os.urandom(size))
            await afr.settle()
            await r.links(afr)[1].cut()
            await fs.write("/big", 1 << 20, b"A" * 1000)
            await fs.write("/big", 3 << 20, b"B" * 200_000)
            await afr.settle()
            await r.links(afr)[1].restore()
            g = await fs.gfid("/big")
            res = await afr_heal.heal_gfid(afr, g)
            assert res.healed == ["data"] or res.healed == ["metadata", "data"], res
            # two windows hold the first change, two the second (it spans a boundary)
            assert 0 < res.bytes_copied <= 4 * 128 * 1024, res
            await afr.settle()
            assert_healed(r)
            n.cancel_scope.cancel()
    run(t)


def _pause_at_seek(link: Link, at: int, act: Callable[[], Awaitable[None]]) -> list[bool]:
    """Run `act` once, when the heal looks for data at or past `at` on the source: between
    two windows."""
    fired: list[bool] = []

    async def hook(fop: str, req: object) -> None:
        if fop == "seek" and not fired and getattr(req, "offset", 0) >= at:
            fired.append(True)
            await act()
    link.hook = hook
    return fired


async def _missed_writes(r: Replica, healer: Replicate, writer: Replicate,
                         writes: tuple[tuple[int, bytes], ...]) -> bytearray:
    """A 4 MiB file whose copy on brick 1 missed `writes` (both clients saw brick 1 go away
    and come back) -> the content the other bricks hold."""
    fs = FS(healer)
    want = bytearray(os.urandom(4 << 20))
    await fs.create("/big", bytes(want))
    await healer.settle()
    for a in (healer, writer):
        await r.links(a)[1].cut()
    for off, d in writes:
        await fs.write("/big", off, d)
        want[off:off + len(d)] = d
    await healer.settle()
    for a in (healer, writer):
        await r.links(a)[1].restore()
    return want


def test_data_heal_lets_clients_write_between_windows(tmp_path: Path) -> None:
    """A data heal locks one window at a time: a client writing the same file while it
    runs waits for one window, not for the whole copy; what it writes, before or after the
    window being copied, ends up on every copy."""
    async def t() -> None:
        r = Replica(tmp_path)
        healer = r.client(**{"self-heal-window-size": "128KB"})
        writer = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs, fs2 = FS(healer), FS(writer)
            want = await _missed_writes(r, healer, writer,
                                        ((1 << 20, b"A" * 1000), (3 << 20, b"B" * 200_000)))

            async def write_meanwhile() -> None:
                with trio.fail_after(30):  # a whole-file heal lock would hold this forever
                    for off, d in ((0, b"C" * 5000), (3_500_000, b"D" * 5000)):
                        await fs2.write("/big", off, d)
                        want[off:off + len(d)] = d
                    await writer.settle()
            fired = _pause_at_seek(r.links(healer)[0], 2 << 20, write_meanwhile)
            res = await afr_heal.heal_gfid(healer, await fs.gfid("/big"))
            assert fired, "the heal never paused between two windows"
            assert "data" in res.healed and not res.skipped, res
            await healer.settle()
            assert_healed(r)
            for b in r.bricks:
                assert (b.path / "big").read_bytes() == want, b.path
            n.cancel_scope.cancel()
    run(t)


def test_data_heal_stops_when_a_write_fails_on_its_source(tmp_path: Path) -> None:
    """A client write that reaches the heal's sink but not its source while the copy runs
    makes the source stale: the heal stops instead of copying old data over the new, and the
    next heal takes the copy that has everything."""
    async def t() -> None:
        r = Replica(tmp_path)
        healer = r.client(**{"self-heal-window-size": "128KB"})
        writer = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs, fs2 = FS(healer), FS(writer)
            want = await _missed_writes(r, healer, writer, ((3 << 20, b"B" * 300_000),))

            async def source_misses_a_write() -> None:
                with trio.fail_after(30):
                    await r.links(writer)[0].cut()
                    off, d = 3_200_000, b"E" * 70_000  # a window not copied yet
                    await fs2.write("/big", off, d)
                    want[off:off + len(d)] = d
                    await writer.settle()
                    await r.links(writer)[0].restore()
            fired = _pause_at_seek(r.links(healer)[0], 2 << 20, source_misses_a_write)
            res = await afr_heal.heal_gfid(healer, await fs.gfid("/big"))
            assert fired
            assert "write failed on the source" in res.skipped, res
            assert "data" not in res.healed, res
            r.links(healer)[0].hook = None
            await heal_all(healer)
            assert_healed(r)
            for b in r.bricks:
                assert (b.path / "big").read_bytes() == want, b.path
            n.cancel_scope.cancel()
    run(t)


def test_sparse_file_heals_without_filling_holes(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            g = await fs.create("/sparse", b"")
            await afr.settle()
            await r.links(afr)[2].cut()
            fd = (await afr.open(ROOT_CALL, OpenReq(g, os.O_RDWR))).fd
            for off in (0, 10 << 20, 50 << 20, (200 << 20) - 4096):
                await afr.write(ROOT_CALL, WriteReq(fd, off, os.urandom(4096)))
            await afr.release(ROOT_CALL, FdReq(fd))
            await afr.settle()
            # and a sink holding data where the source now has a hole
            await r.links(afr)[2].restore()
            st = await heal_all(afr)
            assert st.healed >= 1
            assert_healed(r)
            src = os.stat(r.bricks[0].path / "sparse")
            sink = os.stat(r.bricks[2].path / "sparse")
            assert sink.st_size == src.st_size == 200 << 20
            assert sink.st_blocks <= src.st_blocks + 64, (sink.st_blocks, src.st_blocks)
            assert sink.st_blocks * 512 < 2 << 20
            n.cancel_scope.cancel()
    run(t)


def test_sink_data_over_source_hole_is_punched(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/f", os.urandom(1 << 20))
            await afr.settle()
            await r.links(afr)[1].cut()
            await fs.truncate("/f", 0)
            await fs.truncate("/f", 1 << 20)  # all hole now
            await afr.settle()
            await r.links(afr)[1].restore()
            await heal_all(afr)
            assert_healed(r)
            assert os.stat(r.bricks[1].path / "f").st_blocks < 64
            n.cancel_scope.cancel()
    run(t)


def test_full_heal_rebuilds_an_emptied_brick(tmp_path: Path) -> None:
    """A brick replaced by an empty one (no changelog says anything): `heal full` walks the
    tree and rebuilds it."""
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/a")
            await fs.mkdir("/a/b")
            await fs.create("/a/b/c", b"deep data")
            await fs.create("/top", os.urandom(70_000))
            await fs.symlink("/sl", b"a/b/c")
            await fs.chown("/a", 7, 8)
            await afr.settle()
            n.cancel_scope.cancel()
        shutil.rmtree(tmp_path / "b1")  # a new, empty disk
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            st = await afr_heal.full_heal(afr)
            assert st.failed == 0 and st.split_brain == 0, st
            await afr.settle()
            assert_healed(r)
            n.cancel_scope.cancel()
    run(t)


def test_index_survives_a_restart(tmp_path: Path) -> None:
    """The index is the crawl's state: fresh translators over the same bricks (a restarted
    brick and heal daemon) find and heal what is pending."""
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/f", b"one")
            await r.links(afr)[0].cut()
            await fs.write("/f", 0, b"two")
            await fs.create("/g", b"gee")
            await afr.settle()
            n.cancel_scope.cancel()
        # entries are hard links to the index's base file: no inode allocated per entry
        xdir = tmp_path / "b1" / ".gvol" / "indices" / "xattrop"
        names = index_names(tmp_path / "b1")["xattrop"]
        assert len(names) >= 2
        base = (xdir / "xattrop-base").stat()
        assert all((xdir / x).stat().st_ino == base.st_ino for x in names)
        assert base.st_nlink == len(names) + 1
        r2 = Replica(tmp_path)  # same directories, new translators
        afr2 = r2.client()
        async with trio.open_nursery() as n:
            await r2.start(n)
            info = await afr_heal.heal_info(afr2)
            assert info["total"] >= 2 and info["split_brain"] == 0
            assert info["bricks"][1]["count"] >= 2 and info["bricks"][2]["count"] >= 2
            await heal_all(afr2)
            assert_healed(r2)
            info = await afr_heal.heal_info(afr2)
            assert info["total"] == 0
            n.cancel_scope.cancel()
    run(t)


def test_heal_info_names_entries_by_path(tmp_path: Path) -> None:
    """heal info gives each pending entry's path, as the brick knows it: after a rename, for a
    second hard link whose first name is gone, for a directory; <gfid> stays for a gfid no
    brick can name."""
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/d")
            await fs.mkdir("/d/sub")
            await fs.create("/d/sub/f", b"f")
            await fs.create("/d/g", b"g")
            await fs.link("/d/g", "/d/h")
            await fs.rename("/d/sub/f", "/d/sub/f2")
            await fs.unlink("/d/g")
            await afr.settle()
            await r.links(afr)[0].cut()
            await fs.write("/d/sub/f2", 0, b"F2")
            await fs.write("/d/h", 0, b"H")
            await fs.mkdir("/d/new")
            await afr.settle()
            info = await afr_heal.heal_info(afr)
            paths = {e["path"] for e in info["bricks"][1]["entries"]}
            assert {"/d/sub/f2", "/d/h", "/d"} <= paths, info["bricks"][1]
            assert await afr_heal.path_on(afr, 1, new_gfid()) is None
            with pytest.raises(FopError) as ei:  # virtual and read-only
                await afr.children[1].setxattr(afr_heal._hcall(afr), SetxattrReq(
                    await fs.gfid("/d/h"), "trusted.gvol.path", b"/x"))
            assert ei.value.errno == errno.EPERM
            await r.links(afr)[0].restore()
            await heal_all(afr)
            assert_healed(r)
            n.cancel_scope.cancel()
    run(t)


def test_heal_info_reports_down_bricks(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/f", b"x")
            await r.links(afr)[1].cut()
            await fs.write("/f", 0, b"y")
            await afr.settle()
            info = await afr_heal.heal_info(afr)
            b = info["bricks"]
            assert b[1]["status"] != "Connected" and b[1]["count"] is None
            assert b[0]["count"] == b[2]["count"] == 1
            assert b[0]["entries"][0]["gfid"] == gfid_str(await fs.gfid("/f"))
            n.cancel_scope.cancel()
    run(t)


# ---------------------------------------------------------------- split-brain
async def make_data_split_brain(r: Replica, afr: Replicate, fs: FS) -> bytes:
    """Alternate which brick is down while writing the same file: each side accuses the
    other. Brick 0 ends with the bigger file, brick 1 with the newer one."""
    g = await fs.create("/sb", b"base")
    await afr.settle()
    links = r.links(afr)
    await links[1].cut()
    await fs.write("/sb", 0, b"brick zero wrote a longer text")
    await afr.settle()
    await links[1].restore()
    await links[0].cut()
    await trio.sleep(0.01)  # a later mtime
    await fs.write("/sb", 0, b"one")
    await afr.settle()
    await links[0].restore()
    return g


@pytest.mark.parametrize("policy", ["bigger-file", "latest-mtime", "source-brick"])
def test_data_split_brain_detected_listed_resolved(tmp_path: Path, policy: str) -> None:
    async def t() -> None:
        r = Replica(tmp_path, 2)
        afr = r.client(**{"quorum-type": "none", "background-self-heal-count": "0"})
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            g = await make_data_split_brain(r, afr, fs)
            await fs.lookup("/sb")
            with pytest.raises(FopError) as ei:
                await fs.read("/sb")
            assert ei.value.errno == errno.EIO
            with pytest.raises(FopError) as ei:
                await fs.write("/sb", 0, b"no")
            assert ei.value.errno == errno.EIO
            sb = await afr_heal.split_brain_info(afr)
            assert [e["gfid"] for e in sb] == [gfid_str(g)] and "data" in sb[0]["kinds"]
            info = await afr_heal.heal_info(afr)
            assert info["split_brain"] >= 1
            st = await afr_heal.index_heal(afr)  # a plain heal leaves it alone
            assert st.split_brain == 1
            if policy == "source-brick":
                res = await afr_heal.resolve_split_brain(afr, "/sb", policy, brick=1)
                want = b"onee"
            elif policy == "bigger-file":
                res = await afr_heal.resolve_split_brain(afr, "/sb", policy)
                want = b"brick zero wrote a longer text"
            else:
                res = await afr_heal.resolve_split_brain(afr, f"gfid:{gfid_str(g)}", policy)
                want = b"onee"
            assert "data" in res.healed
            await fs.lookup("/sb")
            assert await fs.read("/sb") == want
            await heal_all(afr)
            assert_healed(r)
            assert await afr_heal.split_brain_info(afr) == []
            n.cancel_scope.cancel()
    run(t)


def test_metadata_split_brain(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path, 2)
        afr = r.client(**{"quorum-type": "none", "background-self-heal-count": "0"})
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/m", b"x")
            await afr.settle()
            links = r.links(afr)
            await links[0].cut()
            await fs.chmod("/m", 0o600)
            await afr.settle()
            await links[0].restore()
            await links[1].cut()
            await fs.chmod("/m", 0o604)
            await afr.settle()
            await links[1].restore()
            g = (await fs.lookup("/m")).gfid
            with pytest.raises(FopError) as ei:
                await afr.getxattr(ROOT_CALL, GetxattrReq(g, "user.x"))
            assert ei.value.errno == errno.EIO
            sb = await afr_heal.split_brain_info(afr)
            assert sb and "metadata" in sb[0]["kinds"]
            await afr_heal.resolve_split_brain(afr, "/m", "source-brick", brick=0)
            await heal_all(afr)
            assert_healed(r)
            assert S.S_IMODE(os.stat(r.bricks[1].path / "m").st_mode) == 0o604
            n.cancel_scope.cancel()
    run(t)


def test_gfid_split_brain_of_a_name(tmp_path: Path) -> None:
    """The same name created on each side while the other was down: two gfids."""
    async def t() -> None:
        r = Replica(tmp_path, 2)
        afr = r.client(**{"quorum-type": "none", "background-self-heal-count": "0"})
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/d")
            await afr.settle()
            links = r.links(afr)
            await links[1].cut()
            await fs.create("/d/same", b"created on brick zero, longer")
            await afr.settle()
            await links[1].restore()
            await links[0].cut()
            await fs.create("/d/same", b"on one")
            await afr.settle()
            await links[0].restore()
            afr.inodes.clear()
            with pytest.raises(FopError) as ei:
                await fs.lookup("/d/same")
            assert ei.value.errno == errno.EIO
            st = await afr_heal.index_heal(afr)
            assert st.split_brain >= 1
            sb = await afr_heal.split_brain_info(afr)
            assert any(e["names"] == ["same"] and "gfid" in e["kinds"] for e in sb), sb
            res = await afr_heal.resolve_split_brain(afr, "/d/same", "bigger-file")
            assert "gfid" in res.healed
            assert await fs.read("/d/same") == b"created on brick zero, longer"
            await heal_all(afr)
            assert_healed(r)
            n.cancel_scope.cancel()
    run(t)


@pytest.mark.parametrize("policy", ["size", "mtime", "majority"])
def test_favorite_child_policy_resolves_automatically(tmp_path: Path, policy: str) -> None:
    async def t() -> None:
        n_bricks = 3 if policy == "majority" else 2
        r = Replica(tmp_path, n_bricks)
        afr = r.client(**{"quorum-type": "none", "favorite-child-policy": policy,
                          "background-self-heal-count": "0"})
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            if policy == "majority":
                # bricks 0 and 1 agree (both accuse 2), 2 accuses them: the majority wins
                await fs.create("/sb", b"base")
                await afr.settle()
                links = r.links(afr)
                await links[2].cut()
                await fs.write("/sb", 0, b"majority")
                await afr.settle()
                await links[2].restore()
                await links[0].cut()
                await links[1].cut()
                await fs.write("/sb", 0, b"lonely")
                await afr.settle()
                await links[0].restore()
                await links[1].restore()
                want = b"majority"
            else:
                await make_data_split_brain(r, afr, fs)
                want = b"brick zero wrote a longer text" if policy == "size" else \
                    b"onee"
            st = await heal_all(afr)
            assert st.split_brain == 0, st
            await fs.lookup("/sb")
            assert await fs.read("/sb") == want
            assert_healed(r)
            n.cancel_scope.cancel()
    run(t)


# ---------------------------------------------------------------- arbiter
def test_arbiter_heal_copies_no_data_to_or_from_it(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path, 3, arbiter=True)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.create("/f", b"v1")
            await afr.settle()
            links = r.links(afr)
            await links[1].cut()
            await fs.write("/f", 0, b"version two")
            await fs.create("/g", b"new while away")
            await fs.chmod("/f", 0o640)
            await afr.settle()
            await links[1].restore()
            for x in links:
                x.calls.clear()
            await heal_all(afr)
            assert links[2].calls["read"] == links[2].calls["write"] == 0
            assert links[2].calls["rchecksum"] == 0
            for b in r.bricks:
                assert changelog(b.path) == {}
            assert tree(r.bricks[0].path) == tree(r.bricks[1].path)
            assert tree(r.bricks[0].path, False) == tree(r.bricks[2].path, False)
            assert os.stat(r.bricks[2].path / "g").st_size == 0
            assert (r.bricks[1].path / "f").read_bytes() == b"version two"
            n.cancel_scope.cancel()
    run(t)


def test_arbiter_brick_down_then_healed(tmp_path: Path) -> None:
    async def t() -> None:
        r = Replica(tmp_path, 3, arbiter=True)
        afr = r.client()
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            await fs.mkdir("/d")
            await afr.settle()
            await r.links(afr)[2].cut()
            await fs.create("/d/f", b"data")
            await fs.setxattr("/d/f", "user.a", b"1")
            await afr.settle()
            await r.links(afr)[2].restore()
            await heal_all(afr)
            assert os.getxattr(r.bricks[2].path / "d/f", "user.a") == b"1"
            assert os.stat(r.bricks[2].path / "d/f").st_size == 0
            for b in r.bricks:
                assert changelog(b.path) == {}
            n.cancel_scope.cancel()
    run(t)


# ---------------------------------------------------------------- real bricks, real kills
def test_brick_killed_mid_large_write_over_the_network(tmp_path: Path) -> None:
    """Three gvol-brickd processes, protocol/client to each: a brick is SIGKILLed in the
    middle of a large write; the write goes on; the brick restarts on its port, the client
    reconnects, the heal makes it identical. Also reports the requests per fop."""
    from test_brickd import Brickd

    def volfile(brick: Path, port: int) -> str:
        return f"""
volume b-posix
    type storage/posix
    option directory {brick}
    option volume-id {VOL_ID}
end-volume
volume b-locks
    type features/locks
    subvolumes b-posix
end-volume
volume b-index
    type features/index
    subvolumes b-locks
end-volume
volume b-server
    type protocol/server
    option listen-host 127.0.0.1
    option listen-port {port}
    option volume-name vol
    option volume-id {VOL_ID}
    option brick-path {brick}
    option ping-timeout 5
    subvolumes b-index
end-volume
"""

    async def t() -> None:
        bricks = [tmp_path / f"b{i}" for i in range(3)]
        procs: list[Brickd] = []
        try:
            ports = []
            for i, b in enumerate(bricks):
                prepare_brick(str(b), VOL_ID)
                d = tmp_path / f"run{i}"
                d.mkdir()
                p = Brickd(d, b, volfile_text=volfile(b, 0))
                procs.append(p)
                ports.append(await p.started())
            clients = [Client(f"vol-client-{i}", {
                "remote-host": "127.0.0.1", "remote-port": str(ports[i]),
                "remote-subvolume": str(bricks[i]), "volume-name": "vol", "volume-id": VOL_ID,
                "reconnect-max-delay": "0.1", "ping-timeout": "5"}) for i in range(3)]
            counters = [Link(f"count-{i}", c, "") for i, c in enumerate(clients)]
            for x in counters:
                x.on = True
                type(x).connected = property(lambda self: self.children[0].connected)
            afr = Replicate("vol-replicate-0", {"afr-pending-xattr":
                                                "vol-client-0,vol-client-1,vol-client-2"},
                            counters)
            async with trio.open_nursery() as n:
                for c in clients:
                    await c.init(n)
                for c in clients:
                    assert await c.wait_connected(10)
                for x in counters:
                    await x.init(n)
                await afr.init(n)
                for i in range(3):
                    await afr.notify(Event.CHILD_UP, counters[i])
                fs = FS(afr)
                # requests per fop on replica 3 over the network
                d = await fs.mkdir("/d")
                await afr.settle()
                for x in counters:
                    x.calls.clear()
                nfiles = 100
                t0 = trio.current_time()
                for k in range(nfiles):
                    await fs.top.create(ROOT_CALL, CreateReq(d, b"s%d" % k, os.O_RDWR, 0o644,
                                                             new_gfid()))
                dt = trio.current_time() - t0
                await afr.settle()
                per = [dict(x.calls) for x in counters]
                print(f"\n{nfiles} creates on replica 3 over protocol/client: "
                      f"{dt / nfiles * 1e6:.0f} us each; requests per brick: {per[0]}")
                # one create each; the directory's lock once; the post-op + unlock of each
                # new file (born locked and dirty) later, off the fops' path
                for p in per:
                    assert p["create"] == nfiles and p["entrylk"] <= 2, per
                    assert p["xattrop"] + p.get("inodelk", 0) <= nfiles + 1, per
                    assert p.get("lookup", 0) == 0, per
                # the kill, mid-write
                g = await fs.create("/d/large", b"")
                fd = (await afr.open(ROOT_CALL, OpenReq(g, os.O_RDWR))).fd
                chunk = 128 * 1024
                total = 64
                for k in range(total):
                    if k == total // 3:
                        procs[2].kill()
                    await afr.write(ROOT_CALL, WriteReq(fd, k * chunk, bytes([k]) * chunk))
                await afr.release(ROOT_CALL, FdReq(fd))
                await afr.settle()
                assert not clients[2].connected
                # back on its port
                d2 = tmp_path / "run2b"
                d2.mkdir()
                procs[2] = Brickd(d2, bricks[2], volfile_text=volfile(bricks[2], ports[2]))
                await procs[2].started()
                assert await clients[2].wait_connected(10)
                while not afr.up[2]:
                    await trio.sleep(0.01)
                st = await afr_heal.index_heal(afr)
                assert st.failed == 0 and st.split_brain == 0, st
                await afr.settle()
                data = await fs.read("/d/large")
                assert data == b"".join(bytes([k]) * chunk for k in range(total))
                await afr.fini()
                for c in clients:
                    await c.fini()
                n.cancel_scope.cancel()
        finally:
            for p in procs:
                p.kill()
        for b in bricks:
            assert changelog(b) == {}, b
        t = [tree(b) for b in bricks]
        assert t[0] == t[1] == t[2]
        assert (bricks[2] / "d" / "large").read_bytes() == (bricks[0] / "d" / "large").read_bytes()

    async def main() -> None:
        with trio.fail_after(120):
            await t()
    trio.run(main)


def test_statfs_and_reads_unaffected_by_index_dirs(tmp_path: Path) -> None:
    """The virtual index directories are internal: a user call cannot open them."""
    async def t() -> None:
        r = Replica(tmp_path)
        async with trio.open_nursery() as n:
            await r.start(n)
            with pytest.raises(FopError) as ei:
                await r.bricks[0].top.opendir(ROOT_CALL, InodeReq(INDEX_XATTROP_GFID))
            assert ei.value.errno == errno.EPERM
            n.cancel_scope.cancel()
    run(t)
