"""storage/posix on real temporary brick directories (the tests run as root, like a brick)."""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import stat
import uuid
import zlib

import pytest
import trio

from translators import volfile
from translators.errgroups import collapsed
from translators.fops import (
    ENTRYLK_LOCK,
    F_WRLCK,
    LK_SETLK,
    SET_ATIME,
    SET_GID,
    SET_MODE,
    SET_MTIME,
    SET_MTIME_NOW,
    SET_SIZE,
    SET_UID,
    XATTROP_ADD_ARRAY,
    XATTROP_ADD_ARRAY64,
    XATTROP_GET_AND_SET,
    AccessReq,
    CreateReq,
    EntrylkReq,
    EntryReq,
    FallocateReq,
    FdReq,
    FgetxattrReq,
    FsetattrReq,
    FsetxattrReq,
    FsyncReq,
    FtruncateReq,
    GetxattrReq,
    InodelkReq,
    InodeReq,
    LinkReq,
    LkReq,
    LookupReq,
    MkdirReq,
    MknodReq,
    OpenReq,
    RangeReq,
    RchecksumReq,
    ReaddirReq,
    ReadReq,
    RemovexattrReq,
    RenameReq,
    SeekReq,
    SetattrReq,
    SetxattrReq,
    SymlinkReq,
    TruncateReq,
    WriteReq,
    XattropReq,
)
from translators.storage.brickdir import BrickError, prepare_brick
from translators.storage.posix import Posix
from translators.storage.syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE
from translators.types import (
    INTERNAL_CALL,
    ROOT_CALL,
    ROOT_GFID,
    XATTR_GFID,
    XATTR_VOLUME_ID,
    Call,
    FopError,
    gfid_str,
    new_gfid,
)
from translators.xlator import GraphError

VID = "6e1b3a52-2a4b-4f39-9d1c-1a2b3c4d5e6f"
OTHER = "11111111-2222-3333-4444-555555555555"
USER = Call(uid=1000, gid=1000, groups=(1000,), pid=42)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bricks need root (trusted.* xattrs)")


def trio_test(fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return trio.run(functools.partial(fn, *a, **kw))
    return wrapper


@contextlib.asynccontextmanager
async def brick(path, vid=VID, **opts):
    x = Posix("posix", {"directory": str(path), "volume-id": vid, **opts})
    with collapsed():  # init's BrickError as itself, as init_graph's callers see it
        async with trio.open_nursery() as n:
            await x.init(n)
            try:
                yield x
            finally:
                await x.fini()


@pytest.fixture
def bdir(tmp_path):
    d = tmp_path / "brick"
    prepare_brick(str(d), VID)
    return d


def handle(bdir, g) -> str:
    s = gfid_str(g)
    return os.path.join(bdir, ".gvol", "handles", s[:2], s)


async def mkfile(p, parent, name, call=ROOT_CALL, mode=0o644, data=b"", **kw):
    g = new_gfid()
    rep = await p.create(call, CreateReq(parent, name, os.O_RDWR, mode, g, **kw))
    if data:
        await p.write(call, WriteReq(rep.fd, 0, data))
    await p.release(call, FdReq(rep.fd))
    return g


async def mkdir(p, parent, name, call=ROOT_CALL, mode=0o755):
    g = new_gfid()
    await p.mkdir(call, MkdirReq(parent, name, mode, g))
    return g


async def fails(err, coro):
    with pytest.raises(FopError) as ei:
        await coro
    assert ei.value.errno == err, f"expected {errno.errorcode[err]}, got {ei.value}"
    return ei.value


# ---------------------------------------------------------------- brick identity
def test_refuses_missing_path(tmp_path):
    async def main():
        async with brick(tmp_path / "nope"):
            pass
    with pytest.raises(BrickError, match="does not exist.*mount"):
        trio.run(main)


def test_refuses_file(tmp_path):
    (tmp_path / "f").write_bytes(b"x")

    async def main():
        async with brick(tmp_path / "f"):
            pass
    with pytest.raises(BrickError, match="is not a directory"):
        trio.run(main)


def test_refuses_no_volume_id(tmp_path):
    async def main():
        async with brick(tmp_path):
            pass
    with pytest.raises(BrickError, match="has no trusted.gvol.volume-id: it is not a brick of "
                       "this volume, or the disk that should be mounted there is not mounted"):
        trio.run(main)
    assert not (tmp_path / ".gvol").exists()  # nothing written to a wrong directory


def test_refuses_other_volume(bdir):
    async def main():
        async with brick(bdir, vid=OTHER):
            pass
    with pytest.raises(BrickError, match=f"belongs to volume {VID}, not to {OTHER}"):
        trio.run(main)


def test_options_required_and_checked(tmp_path):
    with pytest.raises(GraphError, match="directory is required"):
        Posix("p", {"volume-id": VID})
    with pytest.raises(GraphError, match="not a uuid"):
        Posix("p", {"directory": str(tmp_path), "volume-id": "nope"})
    with pytest.raises(GraphError, match="unknown option"):
        Posix("p", {"directory": str(tmp_path), "volume-id": VID, "colour": "red"})


def test_prepare_brick(tmp_path):
    d = tmp_path / "b"
    prepare_brick(str(d), VID)
    prepare_brick(str(d), VID)  # idempotent
    assert os.getxattr(d, XATTR_VOLUME_ID) == uuid.UUID(VID).bytes
    assert os.getxattr(d, XATTR_GFID) == ROOT_GFID
    for sub in ("handles", "indices"):
        assert (d / ".gvol" / sub).is_dir()
    root_handle = handle(d, ROOT_GFID)
    assert os.readlink(root_handle) == "../../.."
    assert os.path.samefile(root_handle, d)
    with pytest.raises(BrickError, match=f"already belongs to volume {VID}"):
        prepare_brick(str(d), OTHER)
    with pytest.raises(BrickError, match="lies inside"):
        prepare_brick(str(d / "sub"), OTHER)


@trio_test
async def test_build_from_volfile(bdir):
    top = volfile.build(f"""
volume b-posix
    type storage/posix
    option directory {bdir}
    option volume-id {VID}
    option thread-count 4
end-volume
volume b-locks
    type features/locks
    subvolumes b-posix
end-volume
""")
    async with trio.open_nursery() as n:
        await volfile.init_graph(top, n)
        assert top.children[0].limiter.total_tokens == 4
        g = await mkfile(top, ROOT_GFID, b"f")
        rep = await top.lookup(ROOT_CALL, LookupReq(ROOT_GFID, b"f"))
        assert rep.iatt.gfid == g
        await volfile.fini_graph(top)


# ---------------------------------------------------------------- entries and handles
@trio_test
async def test_create_lookup_handle(bdir):
    async with brick(bdir) as p:
        g = new_gfid()
        rep = await p.create(INTERNAL_CALL, CreateReq(
            ROOT_GFID, b"a", os.O_RDWR, 0o640, g,
            xattrs={"trusted.gvol.dht.linkto": b"x", "user.k": b"v"}))
        assert rep.iatt.gfid == g and rep.iatt.is_reg and rep.iatt.nlink == 1
        assert stat.S_IMODE(rep.iatt.mode) == 0o640
        assert rep.iatt.ino == int.from_bytes(g[8:], "big")
        await p.release(ROOT_CALL, FdReq(rep.fd))
        st = os.lstat(bdir / "a")
        assert st.st_nlink == 2  # the name and the handle
        assert os.stat(handle(bdir, g)).st_ino == st.st_ino
        assert os.getxattr(bdir / "a", XATTR_GFID) == g
        lk = await p.lookup(INTERNAL_CALL, LookupReq(ROOT_GFID, b"a", xattrs=("*",)))
        assert lk.iatt.gfid == g and lk.iatt.nlink == 1 and lk.iatt.size == 0
        assert lk.xattrs["user.k"] == b"v"
        assert lk.xattrs["trusted.gvol.dht.linkto"] == b"x"
        assert lk.xattrs[XATTR_GFID] == g
        # users never see internal xattrs, even when asking for them by name
        lk = await p.lookup(USER, LookupReq(ROOT_GFID, b"a",
                                            xattrs=("*", "trusted.gvol.dht.linkto")))
        assert lk.xattrs == {"user.k": b"v"}
        lk = await p.lookup(ROOT_CALL, LookupReq(ROOT_GFID, b"a", xattrs=("user.nope",)))
        assert lk.xattrs == {}
        # nameless
        nl = await p.lookup(ROOT_CALL, LookupReq(gfid=g))
        assert nl.iatt == lk.iatt
        await fails(errno.ENOENT, p.lookup(ROOT_CALL, LookupReq(ROOT_GFID, b"nope")))
        await fails(errno.ESTALE, p.lookup(ROOT_CALL, LookupReq(gfid=new_gfid())))
        await fails(errno.EEXIST, p.create(ROOT_CALL, CreateReq(
            ROOT_GFID, b"a", os.O_RDWR, 0o644, new_gfid())))
        # a gfid already used on this brick cannot name a second object
        await fails(errno.EEXIST, p.create(ROOT_CALL, CreateReq(
            ROOT_GFID, b"b", os.O_RDWR, 0o644, g)))
        assert not (bdir / "b").exists()
        # users cannot smuggle internal xattrs in with a create
        await fails(errno.EPERM, p.create(USER, CreateReq(
            ROOT_GFID, b"c", os.O_RDWR, 0o644, new_gfid(), xattrs={"trusted.gvol.x": b"1"})))
        assert not (bdir / "c").exists()
        root = await p.lookup(ROOT_CALL, LookupReq(gfid=ROOT_GFID))
        assert root.iatt.is_dir and root.iatt.ino == 1


@pytest.mark.parametrize("name,err", [
    (b"", errno.EINVAL), (b".", errno.EINVAL), (b"..", errno.EINVAL),
    (b"a/b", errno.EINVAL), (b"../../etc", errno.EINVAL), (b"a\0b", errno.EINVAL),
    (b"x" * 256, errno.ENAMETOOLONG), (b".gvol", errno.EPERM),
])
@trio_test
async def test_name_validation(bdir, name, err):
    async with brick(bdir) as p:
        e = await fails(err, p.lookup(ROOT_CALL, LookupReq(ROOT_GFID, name)))
        assert e.msg
        await fails(err, p.create(ROOT_CALL, CreateReq(ROOT_GFID, name, 0, 0o644, new_gfid())))
        await fails(err, p.mkdir(ROOT_CALL, MkdirReq(ROOT_GFID, name, 0o755, new_gfid())))
        await fails(err, p.unlink(ROOT_CALL, EntryReq(ROOT_GFID, name)))
        await fails(err, p.rmdir(ROOT_CALL, EntryReq(ROOT_GFID, name)))
        g = await mkfile(p, ROOT_GFID, b"ok")
        await fails(err, p.rename(ROOT_CALL, RenameReq(ROOT_GFID, b"ok", ROOT_GFID, name)))
        await fails(err, p.link(ROOT_CALL, LinkReq(g, ROOT_GFID, name)))
    assert os.path.isdir(bdir / ".gvol" / "handles")


@trio_test
async def test_255_bytes_ok_and_gvol_only_reserved_at_root(bdir):
    async with brick(bdir) as p:
        await mkfile(p, ROOT_GFID, b"x" * 255)
        d = await mkdir(p, ROOT_GFID, b"d")
        await mkfile(p, d, b".gvol")
        assert (bdir / "d" / ".gvol").is_file()


@trio_test
async def test_nlink_excludes_handle(bdir):
    async with brick(bdir) as p:
        d = await mkdir(p, ROOT_GFID, b"d")
        g = await mkfile(p, ROOT_GFID, b"f")
        rep = await p.link(ROOT_CALL, LinkReq(g, d, b"f2"))
        assert rep.iatt.nlink == 2 and rep.iatt.gfid == g
        assert (await p.stat(ROOT_CALL, InodeReq(g))).iatt.nlink == 2
        await p.unlink(ROOT_CALL, EntryReq(ROOT_GFID, b"f"))
        assert (await p.lookup(ROOT_CALL, LookupReq(d, b"f2"))).iatt.nlink == 1
        assert os.path.exists(handle(bdir, g))
        await p.unlink(ROOT_CALL, EntryReq(d, b"f2"))
        assert not os.path.lexists(handle(bdir, g))
        await fails(errno.ESTALE, p.stat(ROOT_CALL, InodeReq(g)))
        await fails(errno.ENOENT, p.unlink(ROOT_CALL, EntryReq(d, b"f2")))
        await fails(errno.EISDIR, p.unlink(ROOT_CALL, EntryReq(ROOT_GFID, b"d")))
        await fails(errno.EPERM, p.link(ROOT_CALL, LinkReq(d, ROOT_GFID, b"dl")))
        dst = await p.stat(ROOT_CALL, InodeReq(d))
        assert dst.iatt.nlink == 2 and dst.iatt.is_dir


@trio_test
async def test_mkdir_rmdir_and_dir_handles(bdir):
    async with brick(bdir) as p:
        a = await mkdir(p, ROOT_GFID, b"a")
        b = await mkdir(p, a, b"b")
        assert os.readlink(handle(bdir, a)) == f"../00/{gfid_str(ROOT_GFID)}/a"
        assert os.readlink(handle(bdir, b)) == f"../{gfid_str(a)[:2]}/{gfid_str(a)}/b"
        assert os.path.samefile(handle(bdir, b), bdir / "a" / "b")
        await fails(errno.EEXIST, p.mkdir(ROOT_CALL, MkdirReq(ROOT_GFID, b"a", 0o755,
                                                              new_gfid())))
        await fails(errno.ENOTEMPTY, p.rmdir(ROOT_CALL, EntryReq(ROOT_GFID, b"a")))
        f = await mkfile(p, b, b"f")
        await fails(errno.ENOTDIR, p.rmdir(ROOT_CALL, EntryReq(b, b"f")))
        await fails(errno.ENOTDIR, p.opendir(ROOT_CALL, InodeReq(f)))
        await fails(errno.EISDIR, p.open(ROOT_CALL, OpenReq(b, os.O_RDONLY)))
        await p.unlink(ROOT_CALL, EntryReq(b, b"f"))
        await p.rmdir(ROOT_CALL, EntryReq(a, b"b"))
        assert not os.path.lexists(handle(bdir, b))
        await fails(errno.ESTALE, p.stat(ROOT_CALL, InodeReq(b)))
        await fails(errno.ESTALE, p.create(ROOT_CALL, CreateReq(b, b"x", 0, 0o644, new_gfid())))
        assert os.listdir(bdir / ".gvol" / "tmp") == []


@trio_test
async def test_deep_directories_beyond_symlink_limit(bdir):
    depth = 60  # the kernel follows at most 40 nested symlinks
    async with brick(bdir) as p:
        g = ROOT_GFID
        chain = []
        for i in range(depth):
            g = await mkdir(p, g, b"d%d" % i)
            chain.append(g)
        leaf = await mkfile(p, g, b"leaf", data=b"deep")
    with pytest.raises(OSError) as ei:
        os.stat(handle(bdir, chain[-1]))
    assert ei.value.errno == errno.ELOOP
    async with brick(bdir, **{"dir-cache-size": "16"}) as p:  # cold cache, small LRU
        rep = await p.lookup(ROOT_CALL, LookupReq(chain[-1], b"leaf"))
        assert rep.iatt.gfid == leaf and rep.iatt.size == 4
        for g in reversed(chain[::7]):
            assert (await p.stat(ROOT_CALL, InodeReq(g))).iatt.is_dir


@trio_test
async def test_symlink_readlink_and_no_escape(bdir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    async with brick(bdir) as p:
        g = new_gfid()
        rep = await p.symlink(USER, SymlinkReq(ROOT_GFID, b"ln", str(outside).encode(), g))
        assert rep.iatt.is_lnk and rep.iatt.gfid == g and rep.iatt.uid == 1000
        assert rep.iatt.nlink == 1
        assert (await p.readlink(ROOT_CALL, InodeReq(g))).target == str(outside).encode()
        lk = await p.lookup(ROOT_CALL, LookupReq(ROOT_GFID, b"ln"))
        assert lk.iatt.gfid == g and lk.iatt.is_lnk
        # a symlink is never followed: not as a parent, not by open, not by opendir
        await fails(errno.ENOTDIR, p.lookup(ROOT_CALL, LookupReq(g, b"secret")))
        await fails(errno.ENOTDIR, p.opendir(ROOT_CALL, InodeReq(g)))
        await fails(errno.ELOOP, p.open(ROOT_CALL, OpenReq(g, os.O_RDONLY)))
        await fails(errno.EINVAL, p.truncate(ROOT_CALL, TruncateReq(g, 0)))
        assert (await p.stat(ROOT_CALL, InodeReq(g))).iatt.is_lnk
        f = await mkfile(p, ROOT_GFID, b"f")
        await fails(errno.EINVAL, p.readlink(ROOT_CALL, InodeReq(f)))
        await fails(errno.EINVAL, p.readlink(ROOT_CALL, InodeReq(ROOT_GFID)))
        await p.unlink(ROOT_CALL, EntryReq(ROOT_GFID, b"ln"))
        assert not os.path.lexists(handle(bdir, g))
    assert (outside / "secret").read_bytes() == b"s"


@trio_test
async def test_mknod_types(bdir):
    async with brick(bdir) as p:
        for name, mode in ((b"fifo", stat.S_IFIFO), (b"sock", stat.S_IFSOCK),
                           (b"reg", stat.S_IFREG)):
            g = new_gfid()
            rep = await p.mknod(USER, MknodReq(ROOT_GFID, name, mode | 0o640, 0, g, umask=0o022))
            assert stat.S_IFMT(rep.iatt.mode) == mode and rep.iatt.gfid == g
            assert stat.S_IMODE(rep.iatt.mode) == 0o640 and rep.iatt.uid == 1000
            assert rep.iatt.nlink == 1
            assert stat.S_IFMT(os.lstat(bdir / name.decode()).st_mode) == mode
        try:
            rep = await p.mknod(ROOT_CALL, MknodReq(ROOT_GFID, b"null", stat.S_IFCHR | 0o666,
                                                    os.makedev(1, 3), new_gfid()))
        except FopError as e:
            assert e.errno == errno.EPERM  # no CAP_MKNOD in this container
        else:
            assert stat.S_ISCHR(rep.iatt.mode) and rep.iatt.rdev == os.makedev(1, 3)
        await fails(errno.EINVAL, p.mknod(ROOT_CALL, MknodReq(ROOT_GFID, b"d",
                                                              stat.S_IFDIR | 0o755, 0, new_gfid())))


# ---------------------------------------------------------------- rename
@trio_test
async def test_rename_matrix(bdir):
    async with brick(bdir) as p:
        a = await mkdir(p, ROOT_GFID, b"a")
        b = await mkdir(p, ROOT_GFID, b"b")
        f = await mkfile(p, a, b"f", data=b"ffff")
        g = await mkfile(p, b, b"g", data=b"g")
        # file to a new name in another dir: gfid and handle follow
        await p.rename(ROOT_CALL, RenameReq(a, b"f", b, b"f2"))
        assert (await p.lookup(ROOT_CALL, LookupReq(b, b"f2"))).iatt.gfid == f
        assert (await p.stat(ROOT_CALL, InodeReq(f))).iatt.size == 4
        # file over file: the replaced file's handle goes with its last name
        await p.rename(ROOT_CALL, RenameReq(b, b"f2", b, b"g"))
        assert (await p.lookup(ROOT_CALL, LookupReq(b, b"g"))).iatt.gfid == f
        assert not os.path.lexists(handle(bdir, g))
        await fails(errno.ESTALE, p.stat(ROOT_CALL, InodeReq(g)))
        # a replaced file that keeps another name keeps its handle
        h = await mkfile(p, a, b"h")
        await p.link(ROOT_CALL, LinkReq(h, a, b"h2"))
        await p.rename(ROOT_CALL, RenameReq(b, b"g", a, b"h"))
        assert (await p.stat(ROOT_CALL, InodeReq(h))).iatt.nlink == 1
        # two names of one file: nothing happens
        await p.rename(ROOT_CALL, RenameReq(a, b"h2", a, b"h2"))
        await p.link(ROOT_CALL, LinkReq(h, a, b"h3"))
        await p.rename(ROOT_CALL, RenameReq(a, b"h2", a, b"h3"))
        assert (await p.stat(ROOT_CALL, InodeReq(h))).iatt.nlink == 2
        # directory moves: its handle is rewritten, its subtree stays reachable by gfid
        c = await mkdir(p, a, b"c")
        deep = await mkfile(p, c, b"deep")
        await p.rename(ROOT_CALL, RenameReq(a, b"c", b, b"c2"))
        assert os.readlink(handle(bdir, c)).endswith(f"{gfid_str(b)}/c2")
        assert os.path.samefile(handle(bdir, c), bdir / "b" / "c2")
        # dir over empty dir
        e = await mkdir(p, ROOT_GFID, b"e")
        await p.rename(ROOT_CALL, RenameReq(b, b"c2", ROOT_GFID, b"e"))
        assert not os.path.lexists(handle(bdir, e))
        await fails(errno.ESTALE, p.stat(ROOT_CALL, InodeReq(e)))
        assert os.readlink(handle(bdir, c)).endswith(f"{gfid_str(ROOT_GFID)}/e")
        assert (await p.lookup(ROOT_CALL, LookupReq(c, b"deep"))).iatt.gfid == deep
        # the rules
        await fails(errno.ENOTEMPTY, p.rename(ROOT_CALL, RenameReq(ROOT_GFID, b"a",
                                                                   ROOT_GFID, b"e")))
        await fails(errno.EISDIR, p.rename(ROOT_CALL, RenameReq(a, b"h", ROOT_GFID, b"b")))
        await fails(errno.ENOTDIR, p.rename(ROOT_CALL, RenameReq(ROOT_GFID, b"e", a, b"h")))
        await fails(errno.EINVAL, p.rename(ROOT_CALL, RenameReq(ROOT_GFID, b"e", c, b"sub")))
        await fails(errno.ENOENT, p.rename(ROOT_CALL, RenameReq(a, b"nope", a, b"x")))
        await fails(errno.EEXIST, p.rename(ROOT_CALL, RenameReq(a, b"h", a, b"h3",
                                                                RENAME_NOREPLACE)))
        await fails(errno.EINVAL, p.rename(ROOT_CALL, RenameReq(a, b"h", a, b"z", 64)))
        await p.rename(ROOT_CALL, RenameReq(a, b"h3", a, b"h4", RENAME_NOREPLACE))
        # exchange a file and a directory: both handles stay right
        await p.rename(ROOT_CALL, RenameReq(a, b"h4", ROOT_GFID, b"e", RENAME_EXCHANGE))
        assert (await p.lookup(ROOT_CALL, LookupReq(ROOT_GFID, b"e"))).iatt.gfid == h
        assert (await p.lookup(ROOT_CALL, LookupReq(a, b"h4"))).iatt.gfid == c
        assert os.readlink(handle(bdir, c)).endswith(f"{gfid_str(a)}/h4")
    async with brick(bdir) as p:  # cold cache: resolution through the rewritten handles
        assert (await p.lookup(ROOT_CALL, LookupReq(c, b"deep"))).iatt.gfid == deep
        assert (await p.stat(ROOT_CALL, InodeReq(h))).iatt.nlink == 2


# ---------------------------------------------------------------- attributes
@trio_test
async def test_setattr_and_times(bdir):
    async with brick(bdir) as p:
        g = await mkfile(p, ROOT_GFID, b"f", data=b"0123456789")
        before = (await p.stat(ROOT_CALL, InodeReq(g))).iatt
        rep = await p.setattr(ROOT_CALL, SetattrReq(
            g, SET_MODE | SET_UID | SET_GID | SET_SIZE | SET_ATIME | SET_MTIME,
            mode=0o4750, uid=7, gid=8, size=3, atime_ns=1_000_000_123, mtime_ns=2_000_000_456))
        it = rep.iatt
        assert stat.S_IMODE(it.mode) == 0o4750 and (it.uid, it.gid, it.size) == (7, 8, 3)
        assert (it.atime_ns, it.mtime_ns) == (1_000_000_123, 2_000_000_456)
        assert it.ctime_ns >= before.ctime_ns
        st = os.stat(bdir / "f")
        assert st.st_mtime_ns == 2_000_000_456 and st.st_size == 3
        rep = await p.setattr(ROOT_CALL, SetattrReq(g, SET_MTIME_NOW))
        assert rep.iatt.mtime_ns > 2_000_000_456 and rep.iatt.atime_ns == 1_000_000_123
        d = await mkdir(p, ROOT_GFID, b"d")
        rep = await p.setattr(ROOT_CALL, SetattrReq(d, SET_MODE | SET_MTIME, mode=0o1777,
                                                    mtime_ns=5))
        assert stat.S_IMODE(rep.iatt.mode) == 0o1777 and rep.iatt.mtime_ns == 5
        await fails(errno.EISDIR, p.setattr(ROOT_CALL, SetattrReq(d, SET_SIZE, size=0)))
        o = await p.open(ROOT_CALL, OpenReq(g, os.O_RDWR))
        rep = await p.fsetattr(ROOT_CALL, FsetattrReq(o.fd, SET_SIZE | SET_MODE, size=100,
                                                      mode=0o600))
        assert rep.iatt.size == 100 and stat.S_IMODE(rep.iatt.mode) == 0o600
        rep = await p.ftruncate(ROOT_CALL, FtruncateReq(o.fd, 5))
        assert rep.iatt.size == 5
        assert (await p.fstat(ROOT_CALL, FdReq(o.fd))).iatt.size == 5
        await p.release(ROOT_CALL, FdReq(o.fd))
        rep = await p.truncate(ROOT_CALL, TruncateReq(g, 1))
        assert rep.iatt.size == 1 and os.path.getsize(bdir / "f") == 1
        await fails(errno.EINVAL, p.truncate(ROOT_CALL, TruncateReq(d, 0)))


@trio_test
async def test_access(bdir):
    async with brick(bdir) as p:
        g = await mkfile(p, ROOT_GFID, b"f", mode=0o640)
        await p.setattr(ROOT_CALL, SetattrReq(g, SET_UID | SET_GID, uid=1000, gid=2000))
        owner = USER
        member = Call(uid=1001, gid=5, groups=(2000,))
        other = Call(uid=1002, gid=5)
        await p.access(owner, AccessReq(g, os.R_OK | os.W_OK))
        await fails(errno.EACCES, p.access(owner, AccessReq(g, os.X_OK)))
        await p.access(member, AccessReq(g, os.R_OK))
        await fails(errno.EACCES, p.access(member, AccessReq(g, os.W_OK)))
        await fails(errno.EACCES, p.access(other, AccessReq(g, os.R_OK)))
        await p.access(other, AccessReq(g, os.F_OK))
        await p.access(ROOT_CALL, AccessReq(g, os.R_OK | os.W_OK))
        await fails(errno.EACCES, p.access(ROOT_CALL, AccessReq(g, os.X_OK)))
        await p.setattr(ROOT_CALL, SetattrReq(g, SET_MODE, mode=0o071))
        await p.access(ROOT_CALL, AccessReq(g, os.X_OK))
        await p.access(other, AccessReq(g, os.X_OK))
        await fails(errno.EACCES, p.access(owner, AccessReq(g, os.R_OK)))
        d = await mkdir(p, ROOT_GFID, b"d", mode=0o700)
        await p.access(ROOT_CALL, AccessReq(d, os.X_OK | os.W_OK))
        await fails(errno.EACCES, p.access(other, AccessReq(d, os.X_OK)))


@trio_test
async def test_ownership_umask_and_setgid_dirs(bdir):
    async with brick(bdir) as p:
        rep = await p.create(USER, CreateReq(ROOT_GFID, b"f", os.O_WRONLY, 0o666,
                                             new_gfid(), umask=0o027))
        await p.release(USER, FdReq(rep.fd))
        st = os.stat(bdir / "f")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o640)
        assert (rep.iatt.uid, rep.iatt.gid) == (1000, 1000)
        rep = await p.mkdir(USER, MkdirReq(ROOT_GFID, b"u", 0o777, new_gfid(), umask=0o002))
        assert stat.S_IMODE(rep.iatt.mode) == 0o775 and rep.iatt.uid == 1000
        sg = await mkdir(p, ROOT_GFID, b"sg")
        await p.setattr(ROOT_CALL, SetattrReq(sg, SET_MODE | SET_GID, mode=0o2777, gid=3000))
        rep = await p.create(USER, CreateReq(sg, b"f", os.O_RDWR, 0o644, new_gfid()))
        await p.release(USER, FdReq(rep.fd))
        assert (rep.iatt.uid, rep.iatt.gid) == (1000, 3000)
        assert os.stat(bdir / "sg" / "f").st_gid == 3000
        rep = await p.mkdir(USER, MkdirReq(sg, b"sub", 0o755, new_gfid()))
        assert rep.iatt.gid == 3000 and rep.iatt.mode & stat.S_ISGID
        st = os.stat(bdir / "sg" / "sub")
        assert st.st_gid == 3000 and st.st_mode & stat.S_ISGID and st.st_uid == 1000
        rep = await p.symlink(USER, SymlinkReq(sg, b"ln", b"t", new_gfid()))
        assert rep.iatt.gid == 3000
        rep = await p.mknod(USER, MknodReq(sg, b"p", stat.S_IFIFO | 0o600, 0, new_gfid()))
        assert rep.iatt.gid == 3000


@trio_test
async def test_write_clears_setuid_for_non_root(bdir):
    async with brick(bdir) as p:
        g = await mkfile(p, ROOT_GFID, b"f")
        await p.setattr(ROOT_CALL, SetattrReq(g, SET_MODE | SET_UID | SET_GID, mode=0o6755,
                                              uid=1000, gid=1000))
        o = await p.open(ROOT_CALL, OpenReq(g, os.O_WRONLY))
        rep = await p.write(ROOT_CALL, WriteReq(o.fd, 0, b"root"))
        assert stat.S_IMODE(rep.iatt.mode) == 0o6755  # root keeps them, as the kernel does
        rep = await p.write(USER, WriteReq(o.fd, 4, b"user"))
        assert stat.S_IMODE(rep.iatt.mode) == 0o755 and rep.iatt.size == 8
        assert stat.S_IMODE(os.stat(bdir / "f").st_mode) == 0o755
        # setgid without group execute is a mandatory-locking mark: kept
        await p.setattr(ROOT_CALL, SetattrReq(g, SET_MODE, mode=0o2640))
        rep = await p.write(USER, WriteReq(o.fd, 0, b"x"))
        assert stat.S_IMODE(rep.iatt.mode) == 0o2640
        await p.release(ROOT_CALL, FdReq(o.fd))


# ---------------------------------------------------------------- data
@trio_test
async def test_io_and_sparse(bdir):
    async with brick(bdir) as p:
        g = new_gfid()
        c = await p.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR, 0o644, g))
        fd = c.fd
        rep = await p.write(ROOT_CALL, WriteReq(fd, 0, b"hello"))
        assert rep.size == 5 and rep.iatt.size == 5 and rep.iatt.gfid == g
        big = 64 << 20
        rep = await p.write(ROOT_CALL, WriteReq(fd, big, b"tail"))
        assert rep.iatt.size == big + 4
        st = os.stat(bdir / "f")
        assert st.st_blocks * 512 < 1 << 20, "the hole was filled"
        assert (await p.read(ROOT_CALL, ReadReq(fd, 0, 5))).data == b"hello"
        assert (await p.read(ROOT_CALL, ReadReq(fd, 3, 100))).data[:2] == b"lo"
        assert (await p.read(ROOT_CALL, ReadReq(fd, 4096, 8))).data == bytes(8)
        assert (await p.read(ROOT_CALL, ReadReq(fd, big, 100))).data == b"tail"
        assert (await p.read(ROOT_CALL, ReadReq(fd, big + 10, 100))).data == b""
        assert (await p.read(ROOT_CALL, ReadReq(fd, 0, 0))).data == b""
        # seek
        assert (await p.seek(ROOT_CALL, SeekReq(fd, 10, os.SEEK_HOLE))).offset < big
        assert (await p.seek(ROOT_CALL, SeekReq(fd, 1 << 20, os.SEEK_DATA))).offset <= big
        await fails(errno.ENXIO, p.seek(ROOT_CALL, SeekReq(fd, big + 100, os.SEEK_DATA)))
        await fails(errno.EINVAL, p.seek(ROOT_CALL, SeekReq(fd, 0, os.SEEK_END)))
        # rchecksum
        rc = await p.rchecksum(ROOT_CALL, RchecksumReq(fd, 0, 5))
        assert rc.weak == zlib.adler32(b"hello") and rc.strong == hashlib.sha256(b"hello").digest()
        # fallocate / discard / zerofill
        rep = await p.fallocate(ROOT_CALL, FallocateReq(fd, 0, 1 << 20, 1 << 20))
        blocks = rep.iatt.blocks
        assert blocks * 512 >= 1 << 20 and rep.iatt.size == big + 4
        rep = await p.discard(ROOT_CALL, RangeReq(fd, 1 << 20, 1 << 20))
        assert rep.iatt.blocks < blocks and rep.iatt.size == big + 4
        await p.write(ROOT_CALL, WriteReq(fd, 8192, b"x" * 8192))
        rep = await p.zerofill(ROOT_CALL, RangeReq(fd, 8192, 4096))
        assert (await p.read(ROOT_CALL, ReadReq(fd, 8192, 8192))).data == bytes(4096) + b"x" * 4096
        rep = await p.fallocate(ROOT_CALL, FallocateReq(fd, 1, big + 4, 1 << 16))  # KEEP_SIZE
        assert rep.iatt.size == big + 4
        rep = await p.fallocate(ROOT_CALL, FallocateReq(fd, 0, big + 4, 100))
        assert rep.iatt.size == big + 104
        await p.fsync(ROOT_CALL, FsyncReq(fd))
        await p.fsync(ROOT_CALL, FsyncReq(fd, datasync=True))
        await p.flush(ROOT_CALL, FdReq(fd))
        await p.release(ROOT_CALL, FdReq(fd))
        await fails(errno.EBADF, p.read(ROOT_CALL, ReadReq(fd, 0, 1)))
        # reopen by gfid, O_TRUNC and O_APPEND
        o = await p.open(ROOT_CALL, OpenReq(g, os.O_WRONLY | os.O_TRUNC))
        assert (await p.fstat(ROOT_CALL, FdReq(o.fd))).iatt.size == 0
        await p.write(ROOT_CALL, WriteReq(o.fd, 0, b"abc"))
        await p.release(ROOT_CALL, FdReq(o.fd))
        o = await p.open(ROOT_CALL, OpenReq(g, os.O_WRONLY | os.O_APPEND))
        rep = await p.write(ROOT_CALL, WriteReq(o.fd, 0, b"def"))
        assert rep.iatt.size == 6
        await p.release(ROOT_CALL, FdReq(o.fd))
        assert (bdir / "f").read_bytes() == b"abcdef"


@trio_test
async def test_large_read_write_roundtrip_and_unlinked_open_file(bdir):
    async with brick(bdir) as p:
        data = os.urandom(3 << 20)
        g = new_gfid()
        c = await p.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR, 0o644, g))
        assert (await p.write(ROOT_CALL, WriteReq(c.fd, 0, data))).size == len(data)
        got = b"".join([(await p.read(ROOT_CALL, ReadReq(c.fd, off, 1 << 20))).data
                        for off in range(0, len(data), 1 << 20)])
        assert got == data
        await p.unlink(ROOT_CALL, EntryReq(ROOT_GFID, b"f"))
        assert not os.path.lexists(handle(bdir, g))
        it = (await p.fstat(ROOT_CALL, FdReq(c.fd))).iatt
        assert it.nlink == 0 and it.size == len(data)
        assert (await p.read(ROOT_CALL, ReadReq(c.fd, 0, 4))).data == data[:4]
        await p.release(ROOT_CALL, FdReq(c.fd))


# ---------------------------------------------------------------- xattrs
@trio_test
async def test_xattrs(bdir):
    async with brick(bdir) as p:
        g = await mkfile(p, ROOT_GFID, b"f")
        d = await mkdir(p, ROOT_GFID, b"d")
        for obj in (g, d):
            await p.setxattr(USER, SetxattrReq(obj, "user.a", b"1"))
            await fails(errno.EEXIST, p.setxattr(USER, SetxattrReq(obj, "user.a", b"2",
                                                                   os.XATTR_CREATE)))
            await fails(errno.ENODATA, p.setxattr(USER, SetxattrReq(obj, "user.b", b"2",
                                                                    os.XATTR_REPLACE)))
            await p.setxattr(USER, SetxattrReq(obj, "user.a", b"3", os.XATTR_REPLACE))
            assert (await p.getxattr(USER, GetxattrReq(obj, "user.a"))).value == b"3"
            await fails(errno.ENODATA, p.getxattr(USER, GetxattrReq(obj, "user.zz")))
            # internal xattrs: users can neither set nor read them; nobody lists them
            e = await fails(errno.EPERM, p.setxattr(USER, SetxattrReq(obj, "trusted.gvol.x",
                                                                      b"1")))
            assert "internal" in e.msg
            await p.setxattr(INTERNAL_CALL, SetxattrReq(obj, "trusted.gvol.x", b"9"))
            assert (await p.getxattr(INTERNAL_CALL, GetxattrReq(obj, "trusted.gvol.x"))) \
                .value == b"9"
            await fails(errno.ENODATA, p.getxattr(USER, GetxattrReq(obj, "trusted.gvol.x")))
            await fails(errno.ENODATA, p.getxattr(ROOT_CALL, GetxattrReq(obj, XATTR_GFID)))
            await fails(errno.EPERM, p.removexattr(USER, RemovexattrReq(obj, "trusted.gvol.x")))
            await fails(errno.EPERM, p.setxattr(INTERNAL_CALL, SetxattrReq(obj, XATTR_GFID,
                                                                           new_gfid())))
            await p.setxattr(ROOT_CALL, SetxattrReq(obj, "trusted.other", b"t"))
            for who in (USER, INTERNAL_CALL):
                names = (await p.listxattr(who, InodeReq(obj))).names
                assert sorted(names) == ["trusted.other", "user.a"]
            await p.removexattr(USER, RemovexattrReq(obj, "user.a"))
            await fails(errno.ENODATA, p.removexattr(USER, RemovexattrReq(obj, "user.a")))
            await fails(errno.EOPNOTSUPP, p.setxattr(USER, SetxattrReq(obj, "weird.a", b"")))
        assert os.getxattr(bdir / "f", XATTR_GFID) == g
        o = await p.open(ROOT_CALL, OpenReq(g, os.O_RDONLY))
        await p.fsetxattr(USER, FsetxattrReq(o.fd, "user.fd", b"v"))
        assert (await p.fgetxattr(USER, FgetxattrReq(o.fd, "user.fd"))).value == b"v"
        await fails(errno.ENODATA, p.fgetxattr(USER, FgetxattrReq(o.fd, "trusted.gvol.x")))
        await fails(errno.EPERM, p.fsetxattr(USER, FsetxattrReq(o.fd, "trusted.gvol.y", b"")))
        await fails(errno.ENODATA, p.fgetxattr(USER, FgetxattrReq(o.fd, "user.none")))
        await p.release(ROOT_CALL, FdReq(o.fd))


@trio_test
async def test_xattrop_atomic(bdir):
    async with brick(bdir) as p:
        g = await mkfile(p, ROOT_GFID, b"f")
        key = "trusted.gvol.afr.v-client-0"
        one = (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + (-1).to_bytes(4, "big",
                                                                              signed=True)
        n = 60

        async def bump():
            await p.xattrop(INTERNAL_CALL, XattropReq(g, XATTROP_ADD_ARRAY, {key: one}))

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(bump)
        raw = os.getxattr(bdir / "f", key)
        vals = [int.from_bytes(raw[i:i + 4], "big", signed=True) for i in (0, 4, 8)]
        assert vals == [n, 2 * n, -n]
        rep = await p.xattrop(INTERNAL_CALL, XattropReq(g, XATTROP_ADD_ARRAY, {key: bytes(12)}))
        assert rep.xattrs[key] == raw
        # 64-bit, and wrap-around like C
        k64 = "trusted.gvol.ec.size"
        big = (2 ** 63 - 1).to_bytes(8, "big")
        rep = await p.xattrop(INTERNAL_CALL, XattropReq(g, XATTROP_ADD_ARRAY64, {k64: big}))
        assert rep.xattrs[k64] == big
        rep = await p.xattrop(INTERNAL_CALL, XattropReq(g, XATTROP_ADD_ARRAY64,
                                                        {k64: (1).to_bytes(8, "big")}))
        assert int.from_bytes(rep.xattrs[k64], "big", signed=True) == -2 ** 63
        rep = await p.xattrop(INTERNAL_CALL, XattropReq(g, XATTROP_GET_AND_SET,
                                                        {"trusted.gvol.s": b"new"}))
        assert rep.xattrs["trusted.gvol.s"] == b""
        rep = await p.xattrop(INTERNAL_CALL, XattropReq(g, XATTROP_GET_AND_SET,
                                                        {"trusted.gvol.s": b"newer"}))
        assert rep.xattrs["trusted.gvol.s"] == b"new"
        await fails(errno.EPERM, p.xattrop(USER, XattropReq(g, XATTROP_ADD_ARRAY, {key: one})))
        await fails(errno.EINVAL, p.xattrop(INTERNAL_CALL, XattropReq(g, XATTROP_ADD_ARRAY,
                                                                      {key: b"abc"})))
        d = await mkdir(p, ROOT_GFID, b"d")
        rep = await p.xattrop(ROOT_CALL, XattropReq(d, XATTROP_ADD_ARRAY, {"user.c": one}))
        assert rep.xattrs["user.c"] == one
        assert not p._xlocks


# ---------------------------------------------------------------- directories
async def listdir(p, g, size=65536, plus=False, xattrs=()):
    o = await p.opendir(ROOT_CALL, InodeReq(g))
    out = []
    off = 0
    while True:
        rep = await p.readdir(ROOT_CALL, ReaddirReq(o.fd, off, size, plus, xattrs))
        out.extend(rep.entries)
        if rep.eof:
            break
        assert rep.entries, "no progress without eof"
        off = rep.entries[-1].off
    await p.releasedir(ROOT_CALL, FdReq(o.fd))
    return out


@trio_test
async def test_readdir(bdir):
    async with brick(bdir) as p:
        d = await mkdir(p, ROOT_GFID, b"d")
        names = {b"f%d" % i: await mkfile(p, d, b"f%d" % i, data=b"x" * i) for i in range(30)}
        sub = await mkdir(p, d, b"sub")
        await p.symlink(ROOT_CALL, SymlinkReq(d, b"ln", b"f1", new_gfid()))
        ents = await listdir(p, d, size=200)
        got = [e.name for e in ents]
        assert sorted(got) == sorted([*names, b"sub", b"ln"])
        assert b"." not in got and b".." not in got
        types = {e.name: e.type for e in ents}
        assert types[b"sub"] == stat.S_IFDIR and types[b"ln"] == stat.S_IFLNK
        assert types[b"f3"] == stat.S_IFREG
        assert len({e.off for e in ents}) == len(ents)
        assert all(e.iatt is None for e in ents)
        plus = await listdir(p, d, size=1000, plus=True, xattrs=("user.k",))
        by = {e.name: e for e in plus}
        for n, g in names.items():
            assert by[n].iatt.gfid == g and by[n].iatt.size == int(n[1:]) and by[n].iatt.nlink == 1
        assert by[b"sub"].iatt.gfid == sub and by[b"sub"].iatt.is_dir
        assert by[b"f0"].xattrs == {}
        root = [e.name for e in await listdir(p, ROOT_GFID)]
        assert root == [b"d"]
        # rewind (offset 0) sees new entries
        o = await p.opendir(ROOT_CALL, InodeReq(d))
        r1 = await p.readdir(ROOT_CALL, ReaddirReq(o.fd, 0))
        await mkfile(p, d, b"late")
        r2 = await p.readdir(ROOT_CALL, ReaddirReq(o.fd, 0))
        assert len(r2.entries) == len(r1.entries) + 1 and r2.eof
        await p.fsyncdir(ROOT_CALL, FsyncReq(o.fd))
        await p.releasedir(ROOT_CALL, FdReq(o.fd))
        await fails(errno.EBADF, p.readdir(ROOT_CALL, ReaddirReq(o.fd, 0)))


@pytest.mark.parametrize("plus", [False, True])
@trio_test
async def test_readdir_cookies_stable_while_directory_changes(bdir, plus):
    async with brick(bdir) as p:
        d = await mkdir(p, ROOT_GFID, b"d")
        stable = {b"s%03d" % i for i in range(120)}
        volatile = [b"v%03d" % i for i in range(60)]
        for n in sorted(stable) + volatile:
            await mkfile(p, d, n)
        o = await p.opendir(ROOT_CALL, InodeReq(d))
        seen: list[bytes] = []
        off, k, added = 0, 0, 0
        while True:
            rep = await p.readdir(ROOT_CALL, ReaddirReq(o.fd, off, 400, plus))
            seen.extend(e.name for e in rep.entries)
            if rep.eof:
                break
            off = rep.entries[-1].off
            # between batches, other clients remove and add entries
            for _ in range(3):
                if k < len(volatile):
                    await p.unlink(ROOT_CALL, EntryReq(d, volatile[k]))
                    k += 1
                added += 1
                await mkfile(p, d, b"new%03d" % added)
        await p.releasedir(ROOT_CALL, FdReq(o.fd))
        assert k > 10, "the directory did change during the listing"
        assert len(seen) == len(set(seen)), "an entry was repeated"
        assert stable <= set(seen), "an entry present throughout was skipped"


@trio_test
async def test_statfs(bdir):
    async with brick(bdir) as p:
        sv = (await p.statfs(ROOT_CALL, InodeReq(ROOT_GFID))).statvfs
        assert sv.fsid == os.stat(bdir).st_dev
        ref = os.statvfs(bdir)
        assert sv.blocks == ref.f_blocks and sv.bsize == ref.f_bsize and sv.namemax == 255


@trio_test
async def test_locks_are_not_posix_business(bdir):
    async with brick(bdir) as p:
        g = await mkfile(p, ROOT_GFID, b"f")
        o = await p.open(ROOT_CALL, OpenReq(g, os.O_RDWR))
        await fails(errno.ENOSYS, p.lk(ROOT_CALL, LkReq(o.fd, LK_SETLK, F_WRLCK, 0, 0)))
        await fails(errno.ENOSYS, p.inodelk(ROOT_CALL, InodelkReq(g, "d", LK_SETLK, F_WRLCK)))
        await fails(errno.ENOSYS, p.entrylk(ROOT_CALL, EntrylkReq(ROOT_GFID, b"f", "d",
                                                                  ENTRYLK_LOCK)))
        await p.release(ROOT_CALL, FdReq(o.fd))


@trio_test
async def test_every_fop_is_implemented(bdir):
    from translators.fops import FOP_LIST
    from translators.xlator import Translator
    for f in FOP_LIST:  # a method of its own, or the _do_<fop> that Posix.handle runs
        own = getattr(Posix, f.name) is not getattr(Translator, f.name)
        assert own or callable(getattr(Posix, "_do_" + f.name, None)), f.name


@trio_test
async def test_concurrent_creates_and_lookups(bdir):
    async with brick(bdir, **{"thread-count": "8"}) as p:
        d = await mkdir(p, ROOT_GFID, b"d")
        made: dict[bytes, bytes] = {}

        async def worker(i):
            for j in range(20):
                name = b"w%d-%d" % (i, j)
                made[name] = await mkfile(p, d, name)
                rep = await p.lookup(ROOT_CALL, LookupReq(d, name))
                assert rep.iatt.gfid == made[name]

        async with trio.open_nursery() as n:
            for i in range(8):
                n.start_soon(worker, i)
        ents = await listdir(p, d, plus=True)
        assert {e.name: e.iatt.gfid for e in ents} == made
        assert os.listdir(bdir / ".gvol" / "tmp") == []


@pytest.mark.parametrize("cached", [True, False])
@trio_test
async def test_inline_and_threaded_paths_agree(bdir, cached):
    async with brick(bdir) as p:
        p._cached = cached  # False: every lookup/stat/access/getxattr takes a thread hop
        d = await mkdir(p, ROOT_GFID, b"d")
        g = await mkfile(p, d, b"f", data=b"abc")
        await p.setxattr(USER, SetxattrReq(g, "user.x", b"1"))
        lk = await p.lookup(ROOT_CALL, LookupReq(d, b"f", xattrs=("user.x",)))
        assert lk.iatt.gfid == g and lk.iatt.size == 3 and lk.xattrs == {"user.x": b"1"}
        assert (await p.lookup(ROOT_CALL, LookupReq(ROOT_GFID, b"d"))).iatt.gfid == d
        assert (await p.lookup(ROOT_CALL, LookupReq(gfid=g))).iatt == lk.iatt
        assert (await p.stat(ROOT_CALL, InodeReq(g))).iatt == lk.iatt
        assert (await p.stat(ROOT_CALL, InodeReq(d))).iatt.is_dir
        assert (await p.getxattr(USER, GetxattrReq(g, "user.x"))).value == b"1"
        await p.access(USER, AccessReq(g, os.R_OK))
        await fails(errno.ENOENT, p.lookup(ROOT_CALL, LookupReq(d, b"nope")))
        await fails(errno.ESTALE, p.stat(ROOT_CALL, InodeReq(new_gfid())))
        p._dirs.close_all()  # a directory that is not cached yet: resolved in a thread
        assert (await p.lookup(ROOT_CALL, LookupReq(d, b"f"))).iatt.gfid == g


@trio_test
async def test_mkdir_with_xattrs_and_tmp_cleanup(bdir):
    (bdir / ".gvol" / "tmp" / "leftover").write_bytes(b"")
    (bdir / ".gvol" / "tmp" / "leftdir").mkdir()
    async with brick(bdir) as p:
        assert os.listdir(bdir / ".gvol" / "tmp") == []
        d = new_gfid()
        layout = bytes(range(16))
        rep = await p.mkdir(INTERNAL_CALL, MkdirReq(ROOT_GFID, b"d", 0o755, d,
                                                    xattrs={"trusted.gvol.dht": layout}))
        assert rep.iatt.gfid == d
        lk = await p.lookup(INTERNAL_CALL, LookupReq(ROOT_GFID, b"d",
                                                     xattrs=("trusted.gvol.dht",)))
        assert lk.xattrs == {"trusted.gvol.dht": layout}
        await fails(errno.EEXIST, p.mkdir(ROOT_CALL, MkdirReq(ROOT_GFID, b"e", 0o755, d)))
        assert not (bdir / "e").exists()
        rep = await p.mknod(INTERNAL_CALL, MknodReq(
            d, b"linkto", stat.S_IFREG | stat.S_ISVTX, 0, new_gfid(),
            xattrs={"trusted.gvol.dht.linkto": b"vol-client-1"}))
        assert stat.S_IMODE(rep.iatt.mode) == stat.S_ISVTX
        assert os.getxattr(bdir / "d" / "linkto", "trusted.gvol.dht.linkto") == b"vol-client-1"
        assert os.listdir(bdir / ".gvol" / "tmp") == []


@trio_test
async def test_open_prefetch(bdir):
    async with brick(bdir) as p:
        small = await mkfile(p, ROOT_GFID, b"small", data=b"hello")
        big = await mkfile(p, ROOT_GFID, b"big", data=b"x" * 5000)
        empty = await mkfile(p, ROOT_GFID, b"empty")
        d = await mkdir(p, ROOT_GFID, b"d")
        fifo = new_gfid()
        await p.mknod(ROOT_CALL, MknodReq(ROOT_GFID, b"fifo", stat.S_IFIFO | 0o644, 0, fifo))
        for inline in (True, False):  # the inline attempt (cached handle) and the thread
            p._cached = inline
            o = await p.open(ROOT_CALL, OpenReq(small, os.O_RDONLY, 4096))
            assert o.data == b"hello"
            assert (await p.read(ROOT_CALL, ReadReq(o.fd, 0, 10))).data == b"hello"
            await p.release(ROOT_CALL, FdReq(o.fd))
            for g in (big, empty):
                o = await p.open(ROOT_CALL, OpenReq(g, os.O_RDONLY, 4096))
                assert o.data == b""
                await p.release(ROOT_CALL, FdReq(o.fd))
            o = await p.open(ROOT_CALL, OpenReq(small, os.O_RDONLY))  # not asked
            assert o.data == b""
            await p.release(ROOT_CALL, FdReq(o.fd))
            await fails(errno.EISDIR, p.open(ROOT_CALL, OpenReq(d, os.O_RDONLY, 4096)))
            await fails(errno.ESTALE, p.open(ROOT_CALL, OpenReq(new_gfid(), os.O_RDONLY, 4096)))
            # a FIFO opened non-blocking: nothing read from it
            o = await p.open(ROOT_CALL, OpenReq(fifo, os.O_RDONLY | os.O_NONBLOCK, 4096))
            assert o.data == b""
            await p.release(ROOT_CALL, FdReq(o.fd))


@trio_test
async def test_open_after_lookup_checks_the_name_still_holds_the_file(bdir):
    async with brick(bdir) as p:
        a = await mkfile(p, ROOT_GFID, b"a", data=b"A")
        b = await mkfile(p, ROOT_GFID, b"b", data=b"B")
        for inline in (True, False):
            p._cached = inline
            await p.lookup(ROOT_CALL, LookupReq(parent=ROOT_GFID, name=b"a"))
            o = await p.open(ROOT_CALL, OpenReq(a, os.O_RDONLY, 10))  # through the name
            assert o.data == b"A"
            await p.release(ROOT_CALL, FdReq(o.fd))
            # the name now holds another file: the open finds `a` by its handle
            await p.rename(ROOT_CALL, RenameReq(ROOT_GFID, b"a", ROOT_GFID, b"a2"))
            await p.rename(ROOT_CALL, RenameReq(ROOT_GFID, b"b", ROOT_GFID, b"a"))
            o = await p.open(ROOT_CALL, OpenReq(a, os.O_RDONLY, 10))
            assert o.data == b"A"
            await p.release(ROOT_CALL, FdReq(o.fd))
            await p.rename(ROOT_CALL, RenameReq(ROOT_GFID, b"a", ROOT_GFID, b"b"))
            await p.rename(ROOT_CALL, RenameReq(ROOT_GFID, b"a2", ROOT_GFID, b"a"))
            # gone altogether
            await p.lookup(ROOT_CALL, LookupReq(parent=ROOT_GFID, name=b"b"))
            await p.unlink(ROOT_CALL, EntryReq(ROOT_GFID, b"b"))
            await fails(errno.ESTALE, p.open(ROOT_CALL, OpenReq(b, os.O_RDONLY)))
            b = await mkfile(p, ROOT_GFID, b"b", data=b"B")


# ---------------------------------------------------------------- where fops run
@trio_test
async def test_short_fops_run_inline_only_while_the_brick_is_idle(bdir):
    """inline-when-idle: a metadata fop runs in the event loop's thread when nothing else of
    the brick is in a worker thread; a slow one sends everything to threads for a while."""
    import threading
    import time

    seen: list[str] = []
    async with brick(bdir) as p:
        real = p._do_mkdir

        def spy(call, req, slow=0.0):
            seen.append(threading.current_thread().name)
            time.sleep(slow)
            return real(call, req)
        p._do_mkdir = spy  # posix runs _do_<fop>; the fop table says mkdir may run inline
        await mkdir(p, ROOT_GFID, b"a")
        assert seen[-1] == threading.main_thread().name
        p._do_mkdir = functools.partial(spy, slow=0.02)
        await mkdir(p, ROOT_GFID, b"b")  # inline, but slow
        p._do_mkdir = spy
        await mkdir(p, ROOT_GFID, b"c")
        assert seen[-1] != threading.main_thread().name  # backed off to a worker thread
    async with brick(bdir, **{"inline-when-idle": "off"}) as p:
        real = p._do_mkdir
        p._do_mkdir = spy
        await mkdir(p, ROOT_GFID, b"d")
        assert seen[-1] != threading.main_thread().name
