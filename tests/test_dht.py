"""cluster/dht over 2-4 real storage/posix bricks in one process (temp dirs, no mocks of posix).

Every placement claim is checked on the brick directories themselves: the layout xattr of each
brick's copy of a directory, the hash of the name, where the data file and linkto files are.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from translators import volfile
from translators.cluster.dht import LINKTO_MODE, Distribute
from translators.cluster.hashfn import NameHasher
from translators.cluster.layout import COMMIT_HASH_INVALID, Layout, decode, encode
from translators.fops import (
    SET_MODE,
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
    RenameReq,
    SetattrReq,
    SetxattrReq,
    StatfsRep,
    WriteReq,
)
from translators.storage.brickdir import prepare_brick
from translators.types import (
    ROOT_CALL,
    ROOT_GFID,
    XATTR_DHT,
    XATTR_GFID,
    XATTR_LINKTO,
    FopError,
    Iatt,
    gfid_str,
    new_gfid,
)
from translators.xlator import Event, Option, Translator, register

VOLUME_ID = str(uuid.uuid4())
HASH = NameHasher()
CALL = ROOT_CALL


# ---------------------------------------------------------------- a test-only translator
@register("test/fake-df")
class FakeDf(Translator):
    """Passes everything through but reports `free-percent` free space in statfs."""
    options_schema = {"free-percent": Option("float", 50.0)}

    async def statfs(self, call, req):
        rep = await self.children[0].statfs(call, req)
        v = rep.statvfs
        free = int(v.blocks * self.opts["free-percent"] / 100)
        return StatfsRep(type(v)(v.bsize, v.frsize, v.blocks, free, free, v.files, v.ffree,
                                 v.favail, v.namemax, v.fsid))


# ---------------------------------------------------------------- graph and helpers
def make_bricks(tmp: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        b = tmp / f"b{i}"
        prepare_brick(str(b), VOLUME_ID)
        out.append(b)
    return out


def volfile_text(bricks: list[Path], opts: dict[str, str] | None = None,
                 fake_df: dict[int, float] | None = None) -> str:
    lines = []
    subs = []
    for i, b in enumerate(bricks):
        lines += [f"volume v-client-{i}", "    type storage/posix",
                  f"    option directory {b}", f"    option volume-id {VOLUME_ID}",
                  "end-volume", ""]
        name = f"v-client-{i}"
        if fake_df and i in fake_df:
            lines += [f"volume v-df-{i}", "    type test/fake-df",
                      f"    option free-percent {fake_df[i]}", f"    subvolumes {name}",
                      "end-volume", ""]
            name = f"v-df-{i}"
        subs.append(name)
    lines += ["volume v-dht", "    type cluster/dht"]
    for k, v in (opts or {}).items():
        lines.append(f"    option {k} {v}")
    lines += ["    subvolumes " + " ".join(subs), "end-volume", ""]
    return "\n".join(lines)


class Vol:
    """A DHT graph over the bricks plus helpers that go through it."""

    def __init__(self, top: Distribute, bricks: list[Path]) -> None:
        self.dht = top
        self.bricks = bricks

    async def create(self, parent: bytes, name: bytes, data: bytes = b"") -> Iatt:
        rep = await self.dht.create(CALL, CreateReq(parent, name, os.O_RDWR, 0o100644,
                                                    new_gfid()))
        if data:
            await self.dht.write(CALL, WriteReq(rep.fd, 0, data))
        await self.dht.release(CALL, FdReq(rep.fd))
        return rep.iatt

    async def mkdir(self, parent: bytes, name: bytes, mode: int = 0o755) -> bytes:
        rep = await self.dht.mkdir(CALL, MkdirReq(parent, name, mode, new_gfid()))
        return rep.iatt.gfid

    async def lookup(self, parent: bytes, name: bytes) -> Iatt:
        return (await self.dht.lookup(CALL, LookupReq(parent=parent, name=name))).iatt

    async def read(self, parent: bytes, name: bytes) -> bytes:
        it = await self.lookup(parent, name)
        fd = (await self.dht.open(CALL, OpenReq(it.gfid, os.O_RDONLY))).fd
        try:
            return (await self.dht.read(CALL, ReadReq(fd, 0, 1 << 20))).data
        finally:
            await self.dht.release(CALL, FdReq(fd))

    async def listdir(self, gfid: bytes, size: int = 65536) -> list[Any]:
        fd = (await self.dht.opendir(CALL, InodeReq(gfid))).fd
        out = []
        off = 0
        try:
            while True:
                rep = await self.dht.readdir(CALL, ReaddirReq(fd, off, size, plus=True))
                out += rep.entries
                if rep.eof or not rep.entries:
                    return out
                off = rep.entries[-1].off
        finally:
            await self.dht.releasedir(CALL, FdReq(fd))


@contextlib.asynccontextmanager
async def graph(bricks: list[Path], **kw: Any):
    top = volfile.build(volfile_text(bricks, **kw))
    assert isinstance(top, Distribute)
    async with trio.open_nursery() as nursery:
        await volfile.init_graph(top, nursery)
        try:
            yield Vol(top, bricks)
        finally:
            await volfile.fini_graph(top)
            nursery.cancel_scope.cancel()


def run(tmp: Path, n: int, body, timeout: float = 120, **kw: Any) -> None:
    bricks = make_bricks(tmp, n)

    async def main() -> None:
        with trio.fail_after(timeout):
            async with graph(bricks, **kw) as vol:
                await body(vol)

    trio.run(main)


def expect_errno(err: int):
    return pytest.raises(FopError, match=errno.errorcode[err])


# ---------------------------------------------------------------- brick-side inspection
def ranges(bricks: list[Path], rel: str) -> list[tuple[int, int] | None]:
    out: list[tuple[int, int] | None] = []
    for b in bricks:
        try:
            v = os.getxattr(b / rel, XATTR_DHT)
        except OSError:
            out.append(None)
            continue
        _, _, s, e = decode(v)
        out.append(None if (s, e) == (0, 0) else (s, e))
    return out


def hashed_brick(bricks: list[Path], rel: str, name: bytes) -> int:
    h = HASH(name)
    owners = [i for i, r in enumerate(ranges(bricks, rel)) if r and r[0] <= h <= r[1]]
    assert len(owners) == 1, f"hash {h:#x} of {name!r} owned by {owners}"
    return owners[0]


def names_hashing_to(bricks: list[Path], rel: str, target: int, prefix: str,
                     count: int = 1) -> list[bytes]:
    lay = Layout(ranges(bricks, rel))
    assert lay.complete, f"layout of {rel!r} on the bricks is incomplete: {lay}"
    out: list[bytes] = []
    for i in itertools.count():
        nm = f"{prefix}{i}".encode()
        if lay.search(HASH(nm)) == target:
            out.append(nm)
            if len(out) == count:
                return out
    raise AssertionError


def is_linkto(p: Path) -> bool:
    st = os.lstat(p)
    return st.st_mode == LINKTO_MODE and XATTR_LINKTO in os.listxattr(p, follow_symlinks=False)


def handle_exists(brick: Path, gfid: bytes) -> bool:
    h = gfid.hex()
    return os.path.lexists(brick / ".gvol" / "handles" / h[:2] / gfid_str(gfid))


def entries_on_disk(bricks: list[Path], rel: str) -> dict[bytes, list[tuple[int, str, bytes]]]:
    """name -> [(brick index, 'dir'|'data'|'linkto:<target>', gfid)]"""
    out: dict[bytes, list[tuple[int, str, bytes]]] = {}
    for i, b in enumerate(bricks):
        d = b / rel
        for name in os.listdir(os.fsencode(d)):
            if rel in ("", ".") and name == b".gvol":
                continue
            p = Path(os.fsdecode(os.path.join(os.fsencode(d), name)))
            st = os.lstat(p)
            g = os.getxattr(p, XATTR_GFID, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                kind = "dir"
            elif is_linkto(p):
                kind = "linkto:" + os.getxattr(p, XATTR_LINKTO, follow_symlinks=False) \
                    .rstrip(b"\0").decode()
            else:
                kind = "data"
            out.setdefault(name, []).append((i, kind, g))
    return out


def check_dir(bricks: list[Path], rel: str,
              subvols: list[str] | None = None) -> dict[bytes, list[tuple[int, str, bytes]]]:
    """The distribute invariants of one directory, on disk: a complete layout; every data file
    on exactly one brick, which is its hashed brick unless that holds a linkto to it; no other
    linkto files; directories on every brick with one gfid."""
    lay = Layout(ranges(bricks, rel))
    assert lay.complete, f"layout of {rel!r} incomplete: {lay}"
    subvols = subvols or [f"v-client-{i}" for i in range(len(bricks))]
    ents = entries_on_disk(bricks, rel)
    for name, lst in ents.items():
        kinds = [k for _, k, _ in lst]
        if "dir" in kinds:
            assert kinds == ["dir"] * len(bricks), f"{rel}/{name!r}: {lst}"
            assert len({g for _, _, g in lst}) == 1
            continue
        data = [(i, g) for i, k, g in lst if k == "data"]
        links = [(i, k, g) for i, k, g in lst if k.startswith("linkto:")]
        assert len(data) == 1, f"{rel}/{name!r}: data on {data}"
        di, dg = data[0]
        h = lay.search(HASH(name))
        if di == h:
            assert not links, f"{rel}/{name!r}: needless linkto {links}"
        else:
            assert links == [(h, f"linkto:{subvols[di]}", dg)], \
                f"{rel}/{name!r}: data on {di}, hashed {h}, linktos {links}"
    return ents


# ---------------------------------------------------------------- placement
def test_files_spread_and_each_sits_on_its_hashed_brick(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        sub = await vol.mkdir(ROOT_GFID, b"sub")
        names = [f"file-{i:03d}.txt".encode() for i in range(90)]
        for parent in (ROOT_GFID, sub):
            for nm in names:
                await vol.create(parent, nm, b"data of " + nm)
        for rel in ("", "sub"):
            ents = check_dir(vol.bricks, rel)
            where = {nm: [i for i, k, _ in ents[nm] if k == "data"][0] for nm in names}
            for nm in names:
                assert where[nm] == hashed_brick(vol.bricks, rel, nm)
            counts = [sum(1 for v in where.values() if v == i) for i in range(3)]
            assert all(c > 10 for c in counts), counts
        # the two directories' layouts differ (start rotated by gfid) or at least are complete
        for rel in ("", "sub"):
            assert Layout(ranges(vol.bricks, rel)).complete
        for nm in names[:10]:
            assert await vol.read(sub, nm) == b"data of " + nm

    run(tmp_path, 3, body)


def test_layout_rotation_spreads_directories(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        owners = set()
        for i in range(24):
            await vol.mkdir(ROOT_GFID, f"d{i}".encode())
            lay = Layout(ranges(vol.bricks, f"d{i}"))
            assert lay.complete
            owners.add(lay.search(0))
        assert owners == {0, 1, 2, 3}

    run(tmp_path, 4, body)


def test_root_layout_created_on_first_lookup(tmp_path: Path) -> None:
    bricks = make_bricks(tmp_path, 3)
    assert ranges(bricks, "") == [None, None, None]

    async def main() -> None:
        async with graph(bricks) as vol:
            it = (await vol.dht.lookup(CALL, LookupReq(gfid=ROOT_GFID))).iatt
            assert it.is_dir and it.gfid == ROOT_GFID
        lay = Layout(ranges(bricks, ""))
        assert lay.complete
        assert all(r is not None for r in lay.ranges)
        # the user never sees the internal xattrs
        async with graph(bricks) as vol:
            rep = await vol.dht.lookup(CALL, LookupReq(gfid=ROOT_GFID, xattrs=("*",)))
            assert not any(k.startswith("trusted.gvol") for k in rep.xattrs or {})

    trio.run(main)


def test_lookup_stat_setattr_and_nameless(tmp_path: Path) -> None:
    bricks = make_bricks(tmp_path, 3)

    async def main() -> None:
        async with graph(bricks) as vol:
            d = await vol.mkdir(ROOT_GFID, b"dir")
            it = await vol.create(d, b"f", b"hello")
            with expect_errno(errno.ENOENT):
                await vol.lookup(d, b"nope")
            st = (await vol.dht.stat(CALL, InodeReq(it.gfid))).iatt
            assert st.size == 5 and st.gfid == it.gfid
            # setattr of a directory reaches every brick
            await vol.dht.setattr(CALL, SetattrReq(d, SET_MODE, mode=0o700))
            for b in bricks:
                assert stat.S_IMODE(os.stat(b / "dir").st_mode) == 0o700
            # directory attributes are one consistent iatt: lookup, stat and readdirplus agree
            a = await vol.lookup(ROOT_GFID, b"dir")
            s = (await vol.dht.stat(CALL, InodeReq(d))).iatt
            listed = [e for e in await vol.listdir(ROOT_GFID) if e.name == b"dir"]
            assert len(listed) == 1
            assert a == s == listed[0].iatt
        # a fresh client (no caches) reaches both by gfid alone
        async with graph(bricks) as vol:
            rep = await vol.dht.lookup(CALL, LookupReq(gfid=it.gfid))
            assert rep.iatt.size == 5
            fd = (await vol.dht.open(CALL, OpenReq(it.gfid, os.O_RDONLY))).fd
            assert (await vol.dht.read(CALL, ReadReq(fd, 0, 10))).data == b"hello"
            await vol.dht.release(CALL, FdReq(fd))
            assert (await vol.dht.stat(CALL, InodeReq(d))).iatt.is_dir

    trio.run(main)


def test_rsync_temp_name_renames_without_linkto(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        for i in range(12):
            final = f"report-{i}.csv".encode()
            temp = b"." + final + b".Xy12Ab"
            await vol.create(ROOT_GFID, temp, b"x")
            await vol.dht.rename(CALL, RenameReq(ROOT_GFID, temp, ROOT_GFID, final))
        ents = check_dir(vol.bricks, "")
        assert not any(k.startswith("linkto") for lst in ents.values() for _, k, _ in lst)

    run(tmp_path, 3, body)


# ---------------------------------------------------------------- rename
async def place(vol: Vol, parent: bytes, rel: str, hashed: int, cached: int, prefix: str,
                data: bytes) -> bytes:
    """A file whose data is on brick `cached` and whose name hashes to `hashed`."""
    first = names_hashing_to(vol.bricks, rel, cached, prefix + "c")[0]
    await vol.create(parent, first, data)
    if hashed == cached:
        return first
    name = names_hashing_to(vol.bricks, rel, hashed, prefix + "h")[0]
    await vol.dht.rename(CALL, RenameReq(parent, first, parent, name))
    return name


def disk_ino(brick: Path, rel: str, name: bytes) -> int:
    return os.lstat(os.path.join(os.fsencode(brick / rel), name)).st_ino


@pytest.mark.parametrize("cross_dir", [False, True], ids=["same-dir", "cross-dir"])
def test_rename_matrix(tmp_path: Path, cross_dir: bool) -> None:
    """Every combination of (src hashed, src cached) x (dst absent | dst hashed, dst cached)
    on 3 bricks (cf. GlusterFS tests/basic/distribute/file-rename.t)."""
    n = 3

    async def body(vol: Vol) -> None:
        sdir = await vol.mkdir(ROOT_GFID, b"s")
        ddir = await vol.mkdir(ROOT_GFID, b"d") if cross_dir else sdir
        srel, drel = "s", ("d" if cross_dir else "s")
        case = 0
        dst_cases: list[tuple[int, int | None]] = [(h, None) for h in range(n)]
        dst_cases += list(itertools.product(range(n), range(n)))
        for s_h, s_c in itertools.product(range(n), range(n)):
            for d_h, d_c in dst_cases:
                case += 1
                tag = f"k{case}-"
                sdata = f"source {case}".encode()
                src = await place(vol, sdir, srel, s_h, s_c, tag + "s", sdata)
                sg = (await vol.lookup(sdir, src)).gfid
                ino = disk_ino(vol.bricks[s_c], srel, src)
                old_dst_gfid = None
                if d_c is None:
                    dst = names_hashing_to(vol.bricks, drel, d_h, tag + "new")[0]
                else:
                    dst = await place(vol, ddir, drel, d_h, d_c, tag + "d", b"old dst")
                    old_dst_gfid = (await vol.lookup(ddir, dst)).gfid
                await vol.dht.rename(CALL, RenameReq(sdir, src, ddir, dst))
                what = f"case {case}: src h{s_h} c{s_c} dst h{d_h} c{d_c}"
                assert (await vol.lookup(ddir, dst)).gfid == sg, what
                assert await vol.read(ddir, dst) == sdata, what
                with expect_errno(errno.ENOENT):
                    await vol.lookup(sdir, src)
                # data never moved: same inode on the same brick, now under the new name
                assert disk_ino(vol.bricks[s_c], drel, dst) == ino, what
                if d_h != s_c:
                    assert is_linkto(vol.bricks[d_h] / drel / os.fsdecode(dst)), what
                for b in vol.bricks:
                    assert not os.path.lexists(b / srel / os.fsdecode(src)), what
                    if old_dst_gfid is not None:
                        assert not handle_exists(b, old_dst_gfid), what
                check_dir(vol.bricks, srel)
                check_dir(vol.bricks, drel)
                await vol.dht.unlink(CALL, EntryReq(ddir, dst))
                for b in vol.bricks:
                    assert not os.path.lexists(b / drel / os.fsdecode(dst)), what
                    assert not handle_exists(b, sg), what
        assert case == 9 * 12

    run(tmp_path, n, body, timeout=300)


def test_rename_to_name_hashing_elsewhere_then_fresh_client(tmp_path: Path) -> None:
    bricks = make_bricks(tmp_path, 2)

    async def main() -> None:
        async with graph(bricks) as vol:
            await vol.dht.lookup(CALL, LookupReq(gfid=ROOT_GFID))  # lays out the root
            a = names_hashing_to(bricks, "", 0, "a")[0]
            b = names_hashing_to(bricks, "", 1, "b")[0]
            await vol.create(ROOT_GFID, a, b"payload")
            await vol.dht.rename(CALL, RenameReq(ROOT_GFID, a, ROOT_GFID, b))
        assert is_linkto(bricks[1] / os.fsdecode(b))
        assert os.lstat(bricks[0] / os.fsdecode(b)).st_size == 7
        async with graph(bricks) as vol:  # no caches: found through the linkto
            assert await vol.read(ROOT_GFID, b) == b"payload"
            with expect_errno(errno.ENOENT):
                await vol.lookup(ROOT_GFID, a)
            names = [e.name for e in await vol.listdir(ROOT_GFID)]
            assert names.count(b) == 1 and a not in names

    trio.run(main)


def test_rename_noreplace_and_same_file(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        await vol.create(ROOT_GFID, b"x", b"1")
        await vol.create(ROOT_GFID, b"y", b"2")
        with expect_errno(errno.EEXIST):
            await vol.dht.rename(CALL, RenameReq(ROOT_GFID, b"x", ROOT_GFID, b"y", 1))
        it = await vol.lookup(ROOT_GFID, b"x")
        await vol.dht.link(CALL, LinkReq(it.gfid, ROOT_GFID, b"x2"))
        await vol.dht.rename(CALL, RenameReq(ROOT_GFID, b"x", ROOT_GFID, b"x2"))  # no-op
        assert (await vol.lookup(ROOT_GFID, b"x")).gfid == it.gfid
        with expect_errno(errno.ENOENT):
            await vol.dht.rename(CALL, RenameReq(ROOT_GFID, b"nope", ROOT_GFID, b"z"))
        check_dir(vol.bricks, "")

    run(tmp_path, 3, body)


def test_directory_rename_everywhere_and_rollback(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        bricks = vol.bricks
        a = await vol.mkdir(ROOT_GFID, b"a")
        for i in range(10):
            await vol.create(a, f"f{i}".encode(), b"x")
        await vol.dht.rename(CALL, RenameReq(ROOT_GFID, b"a", ROOT_GFID, b"b"))
        for br in bricks:
            assert not (br / "a").exists()
            assert os.getxattr(br / "b", XATTR_GFID) == a
        for i in range(10):
            assert await vol.read(a, f"f{i}".encode()) == b"x"
        # rename over a destination that is empty on its hashed brick but not on another:
        # the hashed brick goes first, the other fails, everything is rolled back
        dst_name = None
        for i in range(100):
            nm = f"dst{i}".encode()
            if hashed_brick(bricks, "", nm) == 0:
                dst_name = nm
                break
        assert dst_name is not None
        dg = await vol.mkdir(ROOT_GFID, dst_name)
        inner = names_hashing_to(bricks, os.fsdecode(dst_name), 2, "inner")[0]
        await vol.create(dg, inner, b"keep")
        with expect_errno(errno.ENOTEMPTY):
            await vol.dht.rename(CALL, RenameReq(ROOT_GFID, b"b", ROOT_GFID, dst_name))
        for br in bricks:
            assert os.getxattr(br / "b", XATTR_GFID) == a
            assert os.getxattr(br / os.fsdecode(dst_name), XATTR_GFID) == dg
        assert await vol.read(dg, inner) == b"keep"
        check_dir(bricks, "")
        check_dir(bricks, os.fsdecode(dst_name))
        check_dir(bricks, "b")

    run(tmp_path, 3, body)


# ---------------------------------------------------------------- link / unlink
def test_link_to_name_hashing_elsewhere(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        bricks = vol.bricks
        d = await vol.mkdir(ROOT_GFID, b"d")
        a = names_hashing_to(bricks, "d", 0, "a")[0]
        b, c = names_hashing_to(bricks, "d", 1, "b", 2)
        it = await vol.create(d, a, b"shared")
        rep = await vol.dht.link(CALL, LinkReq(it.gfid, d, b))
        assert rep.iatt.nlink == 2
        # the hard link is on the data brick; the new name's hashed brick has a linkto
        assert disk_ino(bricks[0], "d", a) == disk_ino(bricks[0], "d", b)
        assert is_linkto(bricks[1] / "d" / os.fsdecode(b))
        # a second link hashing to the same brick: the gfid is already there as a linkto
        await vol.dht.link(CALL, LinkReq(it.gfid, d, c))
        assert is_linkto(bricks[1] / "d" / os.fsdecode(c))
        check_dir(bricks, "d")
        assert await vol.read(d, b) == b"shared"
        with expect_errno(errno.EEXIST):
            await vol.dht.link(CALL, LinkReq(it.gfid, d, a))
        await vol.dht.unlink(CALL, EntryReq(d, a))
        assert await vol.read(d, c) == b"shared"
        await vol.dht.unlink(CALL, EntryReq(d, b))
        await vol.dht.unlink(CALL, EntryReq(d, c))
        for br in bricks:
            assert os.listdir(br / "d") == []
            assert not handle_exists(br, it.gfid)

    run(tmp_path, 3, body)


# ---------------------------------------------------------------- mkdir / rmdir / heal
def test_mkdir_rmdir_everywhere_and_enotempty(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        bricks = vol.bricks
        g = await vol.mkdir(ROOT_GFID, b"d", 0o750)
        for br in bricks:
            assert os.getxattr(br / "d", XATTR_GFID) == g
            assert stat.S_IMODE(os.stat(br / "d").st_mode) == 0o750
        assert Layout(ranges(bricks, "d")).complete
        with expect_errno(errno.EEXIST):
            await vol.mkdir(ROOT_GFID, b"d")
        for target in range(len(bricks)):
            nm = names_hashing_to(bricks, "d", target, "f")[0]
            await vol.create(g, nm)
            with expect_errno(errno.ENOTEMPTY):
                await vol.dht.rmdir(CALL, EntryReq(ROOT_GFID, b"d"))
            # the copies removed meanwhile are back, with gfid and layout
            for br in bricks:
                assert os.getxattr(br / "d", XATTR_GFID) == g
            assert Layout(ranges(bricks, "d")).complete
            await vol.dht.unlink(CALL, EntryReq(g, nm))
        # a subdirectory makes it non-empty everywhere
        await vol.mkdir(g, b"sub")
        with expect_errno(errno.ENOTEMPTY):
            await vol.dht.rmdir(CALL, EntryReq(ROOT_GFID, b"d"))
        await vol.dht.rmdir(CALL, EntryReq(g, b"sub"))
        await vol.dht.rmdir(CALL, EntryReq(ROOT_GFID, b"d"))
        for br in bricks:
            assert not (br / "d").exists()
            assert not handle_exists(br, g)
        with expect_errno(errno.ENOENT):
            await vol.lookup(ROOT_GFID, b"d")
        with expect_errno(errno.ENOENT):
            await vol.dht.rmdir(CALL, EntryReq(ROOT_GFID, b"d"))

    run(tmp_path, 4, body)


def test_rmdir_cleans_stale_linkto(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        bricks = vol.bricks
        g = await vol.mkdir(ROOT_GFID, b"d")
        name = await place(vol, g, "d", 1, 0, "x", b"data")
        assert is_linkto(bricks[1] / "d" / os.fsdecode(name))
        # the data file vanishes behind gvol's back: the linkto on brick 1 is stale
        it = await vol.lookup(g, name)
        os.unlink(bricks[0] / "d" / os.fsdecode(name))
        h = it.gfid.hex()
        os.unlink(bricks[0] / ".gvol" / "handles" / h[:2] / gfid_str(it.gfid))
        await vol.dht.rmdir(CALL, EntryReq(ROOT_GFID, b"d"))
        for br in bricks:
            assert not (br / "d").exists()

    run(tmp_path, 3, body)


def _remove_dir_copy(brick: Path, rel: str, gfid: bytes) -> None:
    os.rmdir(brick / rel)
    h = gfid.hex()
    os.unlink(brick / ".gvol" / "handles" / h[:2] / gfid_str(gfid))


def test_directory_heal_missing_copy_and_holey_layout(tmp_path: Path) -> None:
    bricks = make_bricks(tmp_path, 3)

    async def main() -> None:
        async with graph(bricks) as vol:
            g = await vol.mkdir(ROOT_GFID, b"d", 0o711)
            g2 = await vol.mkdir(ROOT_GFID, b"e")
            await vol.mkdir(ROOT_GFID, b"f")
        before_d = ranges(bricks, "d")
        before_e = ranges(bricks, "e")
        _remove_dir_copy(bricks[1], "d", g)
        os.removexattr(bricks[2] / "e", XATTR_DHT)  # a hole in e's layout
        assert not Layout(ranges(bricks, "e")).complete
        # an overlap in f's layout: it is laid out afresh
        os.setxattr(bricks[0] / "f", XATTR_DHT, encode(0, 0xFFFFFFFF))
        async with graph(bricks) as vol:
            it = await vol.lookup(ROOT_GFID, b"d")
            assert it.gfid == g
            assert os.getxattr(bricks[1] / "d", XATTR_GFID) == g
            assert stat.S_IMODE(os.stat(bricks[1] / "d").st_mode) == 0o711
            # the lost slices come back as they were: names stay where they hash
            assert ranges(bricks, "d") == before_d
            await vol.lookup(ROOT_GFID, b"e")
            assert ranges(bricks, "e") == before_e
            lay = Layout.from_xattrs([os.getxattr(b / "e", XATTR_DHT) for b in bricks])
            assert lay.complete and lay.commit_hash != COMMIT_HASH_INVALID
            await vol.lookup(ROOT_GFID, b"f")
            lay = Layout.from_xattrs([os.getxattr(b / "f", XATTR_DHT) for b in bricks])
            assert lay.complete and lay.commit_hash == COMMIT_HASH_INVALID
            for i in range(30):  # files can be made everywhere in both
                await vol.create(g, f"f{i}".encode())
                await vol.create(g2, f"f{i}".encode())
            check_dir(bricks, "d")
            check_dir(bricks, "e")
            check_dir(bricks, "f")
        # a create into a directory whose copy vanished on the hashed brick heals it too
        nm = names_hashing_to(bricks, "d", 2, "late")[0]
        async with graph(bricks) as vol:
            await vol.lookup(ROOT_GFID, b"d")  # cached now
            # brick 2 loses its copy behind dht's back (through that brick's own posix)
            posix2 = vol.dht.children[2]
            for f in os.listdir(os.fsencode(bricks[2] / "d")):
                await posix2.unlink(CALL, EntryReq(g, f))
            await posix2.rmdir(CALL, EntryReq(ROOT_GFID, b"d"))
            await vol.create(g, nm, b"ok")
            assert (bricks[2] / "d" / os.fsdecode(nm)).exists()

    trio.run(main)


def test_lookup_everywhere_when_commit_hash_is_not_current(tmp_path: Path) -> None:
    bricks = make_bricks(tmp_path, 3)

    async def main() -> None:
        async with graph(bricks) as vol:
            g = await vol.mkdir(ROOT_GFID, b"d")
            name = await place(vol, g, "d", 2, 0, "m", b"misplaced")
        os.unlink(bricks[2] / "d" / os.fsdecode(name))  # lose the linkto
        async with graph(bricks) as vol:  # commit hash current: the miss is final
            with expect_errno(errno.ENOENT):
                await vol.lookup(g, name)
        for b in bricks:  # mark the directory "not settled"
            _, t, s, e = decode(os.getxattr(b / "d", XATTR_DHT))
            os.setxattr(b / "d", XATTR_DHT, encode(s, e, COMMIT_HASH_INVALID, t))
        async with graph(bricks) as vol:
            assert await vol.read(g, name) == b"misplaced"
        assert is_linkto(bricks[2] / "d" / os.fsdecode(name))  # re-created
        async with graph(bricks, opts={"lookup-optimize": "off"}) as vol:
            assert await vol.read(g, name) == b"misplaced"
        check_dir(bricks, "d")

    trio.run(main)


def test_file_and_directory_with_one_name_is_eio(tmp_path: Path) -> None:
    bricks = make_bricks(tmp_path, 2)

    async def main() -> None:
        async with graph(bricks) as vol:
            await vol.dht.lookup(CALL, LookupReq(gfid=ROOT_GFID))
            # a directory whose name hashes to brick 0 (a lookup of a name that is a plain
            # file on its hashed brick takes one round trip and is not cross-checked)
            x = names_hashing_to(bricks, "", 0, "x")[0]
            g = await vol.mkdir(ROOT_GFID, x)
            _remove_dir_copy(bricks[1], os.fsdecode(x), g)
            # make a *file* of that name on brick 1 through that brick's own posix
            posix1 = vol.dht.children[1]
            await posix1.create(CALL, CreateReq(ROOT_GFID, x, os.O_RDWR, 0o100644,
                                                new_gfid()))
        async with graph(bricks) as vol:
            with expect_errno(errno.EIO):
                await vol.lookup(ROOT_GFID, x)
            # a gfid mismatch between directory copies is EIO too
            g2 = await vol.mkdir(ROOT_GFID, b"y")
        os.setxattr(bricks[1] / "y", XATTR_GFID, new_gfid())
        async with graph(bricks) as vol:
            with expect_errno(errno.EIO):
                await vol.lookup(ROOT_GFID, b"y")
        assert g2

    trio.run(main)


# ---------------------------------------------------------------- readdir
def test_readdir_every_entry_once_with_small_batches_and_resume(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        bricks = vol.bricks
        d = await vol.mkdir(ROOT_GFID, b"d")
        want: set[bytes] = set()
        for i in range(120):
            nm = f"file-{i}".encode()
            await vol.create(d, nm)
            want.add(nm)
        for i in range(6):
            await vol.mkdir(d, f"sub-{i}".encode())
            want.add(f"sub-{i}".encode())
        # files whose names hash elsewhere than their data: linkto files on disk
        for i in range(4):
            nm = await place(vol, d, "d", (i + 1) % 3, i % 3, f"moved{i}-", b"m")
            want.add(nm)
        ents = check_dir(bricks, "d")
        assert any(k.startswith("linkto") for lst in ents.values() for _, k, _ in lst)
        for size in (1, 400, 3000, 1 << 20):
            listing = await vol.listdir(d, size)
            names = [e.name for e in listing]
            assert len(names) == len(set(names)), f"duplicates at size {size}"
            assert set(names) == want
            assert all(e.iatt is not None and e.iatt.mode != LINKTO_MODE for e in listing)
            offs = [e.off for e in listing]
            assert len(set(offs)) == len(offs) and 0 not in offs
        # resume at any returned cookie, on a new fd, gives exactly the rest
        full = await vol.listdir(d, 500)
        for k in list(range(0, len(full), 7)) + [len(full) - 1]:
            fd = (await vol.dht.opendir(CALL, InodeReq(d))).fd
            got = []
            off = full[k].off
            while True:
                rep = await vol.dht.readdir(CALL, ReaddirReq(fd, off, 500, plus=True))
                got += [e.name for e in rep.entries]
                if rep.eof or not rep.entries:
                    break
                off = rep.entries[-1].off
            await vol.dht.releasedir(CALL, FdReq(fd))
            assert got == [e.name for e in full[k + 1:]], f"resume after entry {k}"
        # plain readdir (no plus) hides linkto files too and carries no attributes
        fd = (await vol.dht.opendir(CALL, InodeReq(d))).fd
        rep = await vol.dht.readdir(CALL, ReaddirReq(fd, 0, 1 << 20, plus=False))
        await vol.dht.releasedir(CALL, FdReq(fd))
        assert rep.eof and {e.name for e in rep.entries} == want
        assert all(e.iatt is None for e in rep.entries)

    run(tmp_path, 3, body)


def test_readdir_stable_while_directory_changes(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        rnd = random.Random(7)
        d = await vol.mkdir(ROOT_GFID, b"d")
        old = [f"old-{i}".encode() for i in range(150)]
        for nm in old:
            await vol.create(d, nm)
        removed: set[bytes] = set()
        seen: list[bytes] = []
        fd = (await vol.dht.opendir(CALL, InodeReq(d))).fd
        off = 0
        k = 0
        while True:
            rep = await vol.dht.readdir(CALL, ReaddirReq(fd, off, 500, plus=True))
            seen += [e.name for e in rep.entries]
            if rep.eof or not rep.entries:
                break
            off = rep.entries[-1].off
            # meanwhile: new names appear, names not listed yet go away
            for _ in range(3):
                k += 1
                await vol.create(d, f"new-{k}".encode())
            left = [nm for nm in old if nm not in removed and nm not in seen]
            for nm in rnd.sample(left, min(2, len(left))):
                await vol.dht.unlink(CALL, EntryReq(d, nm))
                removed.add(nm)
        await vol.dht.releasedir(CALL, FdReq(fd))
        assert len(seen) == len(set(seen)), "an entry was returned twice"
        stayed = set(old) - removed
        assert stayed <= set(seen), f"skipped: {sorted(stayed - set(seen))[:5]}"
        assert removed, "the test removed nothing"

    run(tmp_path, 3, body)


# ---------------------------------------------------------------- statfs / space
def test_statfs_counts_a_shared_filesystem_once(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        v = (await vol.dht.statfs(CALL, InodeReq(ROOT_GFID))).statvfs
        ref = os.statvfs(vol.bricks[0])
        assert v.frsize == ref.f_frsize
        assert v.blocks == ref.f_blocks
        assert v.files == ref.f_files
        assert abs(v.bfree - ref.f_bfree) < ref.f_blocks // 100 + 1000

    run(tmp_path, 3, body)


def test_min_free_disk_places_elsewhere_with_linkto(tmp_path: Path) -> None:
    bricks = make_bricks(tmp_path, 3)

    async def main() -> None:
        async with graph(bricks, fake_df={0: 2.0, 1: 40.0, 2: 60.0}) as vol:
            with expect_errno(errno.ENOENT):
                await vol.lookup(ROOT_GFID, b"probe")
            names = names_hashing_to(bricks, "", 0, "full", 5)
            for nm in names:
                await vol.create(ROOT_GFID, nm, b"spilled")
            for nm in names:
                assert is_linkto(bricks[0] / os.fsdecode(nm))
                assert (bricks[2] / os.fsdecode(nm)).read_bytes() == b"spilled"
            other = names_hashing_to(bricks, "", 1, "fine")[0]
            await vol.create(ROOT_GFID, other, b"here")
            assert (bricks[1] / os.fsdecode(other)).read_bytes() == b"here"
            check_dir(bricks, "", [c.name for c in vol.dht.children])
        async with graph(bricks) as vol:
            for nm in names:
                assert await vol.read(ROOT_GFID, nm) == b"spilled"
                await vol.dht.unlink(CALL, EntryReq(ROOT_GFID, nm))
            for b in bricks:
                assert not any(os.fsencode(n).startswith(b"full") for n in os.listdir(b))

    trio.run(main)


# ---------------------------------------------------------------- child down
def test_child_down_gives_enotconn(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        bricks = vol.bricks
        dht = vol.dht
        d = await vol.mkdir(ROOT_GFID, b"d")
        on0 = names_hashing_to(bricks, "d", 0, "zero", 2)
        on1 = names_hashing_to(bricks, "d", 1, "one")[0]
        it0 = await vol.create(d, on0[0], b"0")
        it1 = await vol.create(d, on1, b"1")
        await dht.notify(Event.CHILD_DOWN, dht.children[0])
        with expect_errno(errno.ENOTCONN):
            await dht.stat(CALL, InodeReq(it0.gfid))
        with expect_errno(errno.ENOTCONN):
            await dht.open(CALL, OpenReq(it0.gfid, os.O_RDONLY))
        with expect_errno(errno.ENOTCONN):
            await vol.lookup(d, on0[0])
        with expect_errno(errno.ENOTCONN):
            await vol.create(d, on0[1])
        with expect_errno(errno.ENOTCONN):
            await dht.rmdir(CALL, EntryReq(ROOT_GFID, b"d"))
        # what lives on the other bricks keeps working
        assert await vol.read(d, on1) == b"1"
        assert (await dht.stat(CALL, InodeReq(it1.gfid))).iatt.size == 1
        # a directory hashing to an up brick is made on the up bricks only
        sub = names_hashing_to(bricks, "d", 1, "dir")[0]
        sg = await vol.mkdir(d, sub)
        assert not (bricks[0] / "d" / os.fsdecode(sub)).exists()
        listing = {e.name for e in await vol.listdir(d)}
        assert on1 in listing and sub in listing and on0[0] not in listing
        await dht.notify(Event.CHILD_UP, dht.children[0])
        # back: the lookup heals the directory onto brick 0
        assert (await vol.lookup(d, sub)).gfid == sg
        assert os.getxattr(bricks[0] / "d" / os.fsdecode(sub), XATTR_GFID) == sg
        assert await vol.read(d, on0[0]) == b"0"
        check_dir(bricks, "d")
        check_dir(bricks, "d/" + os.fsdecode(sub))

    run(tmp_path, 3, body)


def test_options_and_alias() -> None:
    text = ("volume p\n type storage/posix\n option directory /nonexistent\n"
            f" option volume-id {VOLUME_ID}\nend-volume\n"
            "volume v\n type cluster/distribute\n option min-free-disk 5%\n"
            " option rsync-hash-regex none\n subvolumes p\nend-volume\n")
    top = volfile.build(text)
    assert isinstance(top, Distribute)
    assert top._min_free_pct == 5.0
    assert top._hash(b".a.b") != top._hash(b"a")
    top2 = volfile.build(text.replace("5%", "2GB"))
    assert top2._min_free_bytes == 2 << 30
    from translators.xlator import GraphError
    with pytest.raises(GraphError):
        volfile.build(text.replace("5%", "150%"))
    with pytest.raises(GraphError):
        volfile.build(text.replace("rsync-hash-regex none", "rsync-hash-regex ("))


def test_setxattr_on_directory_reaches_all_bricks(tmp_path: Path) -> None:
    async def body(vol: Vol) -> None:
        d = await vol.mkdir(ROOT_GFID, b"d")
        await vol.dht.setxattr(CALL, SetxattrReq(d, "user.color", b"blue"))
        for b in vol.bricks:
            assert os.getxattr(b / "d", "user.color") == b"blue"
        # a non-internal caller never sees or sets the layout
        with pytest.raises(FopError):
            await vol.dht.setxattr(CALL, SetxattrReq(d, XATTR_DHT, b"x" * 16))

    run(tmp_path, 2, body)


def test_unlink_after_lookup_when_another_client_moved_the_name(tmp_path: Path) -> None:
    """unlink trusts the lookup that preceded it (one round trip instead of two); when another
    client renamed the file away in between, the unlink finds out and answers from a fresh
    lookup instead of removing anything else."""
    bricks = make_bricks(tmp_path, 2)

    async def main() -> None:
        async with graph(bricks) as a, graph(bricks) as b:
            await a.dht.lookup(CALL, LookupReq(gfid=ROOT_GFID))
            x = names_hashing_to(bricks, "", 0, "x")[0]
            y = names_hashing_to(bricks, "", 1, "y")[0]
            await a.create(ROOT_GFID, x, b"data")
            await a.lookup(ROOT_GFID, x)  # client a now remembers where x is
            await b.dht.rename(CALL, RenameReq(ROOT_GFID, x, ROOT_GFID, y))
            with expect_errno(errno.ENOENT):
                await a.dht.unlink(CALL, EntryReq(ROOT_GFID, x))
            assert await a.read(ROOT_GFID, y) == b"data"
            # the fast path itself: lookup then unlink removes the data file and its linkto
            await a.lookup(ROOT_GFID, y)
            await a.dht.unlink(CALL, EntryReq(ROOT_GFID, y))
            for br in bricks:
                assert not os.path.lexists(br / os.fsdecode(y))
            with expect_errno(errno.ENOENT):
                await b.lookup(ROOT_GFID, y)

    trio.run(main)


def test_unlink_after_lookup_when_the_name_was_replaced_by_a_file_elsewhere(tmp_path: Path):
    """Client a looked x up on brick 0; client b then replaced x by a file whose data is on
    brick 1 (a linkto x on brick 0). a's unlink must remove b's file, data and linkto, not
    just the linkto (which would orphan the data)."""
    bricks = make_bricks(tmp_path, 2)

    async def main() -> None:
        async with graph(bricks) as a, graph(bricks) as b:
            await a.dht.lookup(CALL, LookupReq(gfid=ROOT_GFID))
            x = names_hashing_to(bricks, "", 0, "x")[0]
            t = names_hashing_to(bricks, "", 1, "t")[0]
            await a.create(ROOT_GFID, x, b"old")
            await a.lookup(ROOT_GFID, x)  # a remembers: x is on brick 0
            await b.dht.unlink(CALL, EntryReq(ROOT_GFID, x))
            await b.create(ROOT_GFID, t, b"new")
            await b.dht.rename(CALL, RenameReq(ROOT_GFID, t, ROOT_GFID, x))
            assert is_linkto(bricks[0] / os.fsdecode(x))
            await a.dht.unlink(CALL, EntryReq(ROOT_GFID, x))
            for br in bricks:
                assert not os.path.lexists(br / os.fsdecode(x)), br

    trio.run(main)


def test_readdirplus_then_unlink_everything(tmp_path: Path) -> None:
    """What `rm -rf` does: list with readdirplus, unlink every name (the listing tells DHT
    where each file is); files whose data sits away from their hashed brick lose their linkto
    too."""
    bricks = make_bricks(tmp_path, 3)

    async def main() -> None:
        async with graph(bricks) as vol:
            await vol.dht.lookup(CALL, LookupReq(gfid=ROOT_GFID))
            names = [f"f{i}".encode() for i in range(30)]
            for nm in names:
                await vol.create(ROOT_GFID, nm, nm)
            for i, nm in enumerate(names[:10]):  # moved names: data stays, linkto appears
                await vol.dht.rename(CALL, RenameReq(ROOT_GFID, nm, ROOT_GFID, b"r" + nm))
                names[i] = b"r" + nm
            listed = [e.name for e in await vol.listdir(ROOT_GFID)]
            assert sorted(listed) == sorted(names)
            for nm in listed:
                await vol.dht.unlink(CALL, EntryReq(ROOT_GFID, nm))
            for br in bricks:
                assert [p for p in os.listdir(br) if p != ".gvol"] == [], br

    trio.run(main)
