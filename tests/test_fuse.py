"""fuse/: the pyfuse3 bridge and mount.gvol.

Two levels, as STYLE.md point 12 describes:
- GvolOperations called directly against an in-memory leaf translator (no kernel): inode table
  and lookup counts, readdir cookies, the error boundary, refused names and xattrs;
- real FUSE mounts of a local client volfile (debug/io-stats -> storage/posix on a temp brick),
  served by `mount.gvol --foreground` in a subprocess (tests/fusehelp.py), plus the mount.gvol
  command line itself.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from types import SimpleNamespace

import pyfuse3
import pytest
import trio

from fuse import mount as M
from fuse.ops import FuseOptions, GvolOperations
from fusehelp import (
    GvolMount,
    client_volfile,
    fuse_available,
    is_mounted,
    mount_command,
    mount_env,
    prepare_brick,
    unmount,
)
from translators import fops as F
from translators.types import ROOT_GFID, Dirent, Fd, FopError, Iatt, gfid_to_ino
from translators.xlator import Translator


# ====================================================================== level 1: no kernel
class MemLeaf(Translator):
    """A tiny in-memory filesystem leaf: enough fops to drive GvolOperations."""

    min_children = 0
    max_children = 0

    def __init__(self) -> None:
        super().__init__("mem")
        self.objs: dict[bytes, dict] = {ROOT_GFID: {"mode": stat.S_IFDIR | 0o755, "kids": {},
                                                   "xattrs": {}}}
        self.calls: list[tuple[str, object]] = []
        self.fail_with: BaseException | None = None

    def iatt(self, g: bytes) -> Iatt:
        o = self.objs[g]
        return Iatt(g, o["mode"], 1, 0, 0, 0, 0, 0, 4096, 1, 2, 3)

    def _child(self, parent: bytes, name: bytes) -> bytes:
        try:
            return self.objs[parent]["kids"][name]
        except KeyError:
            raise FopError(errno.ENOENT) from None

    async def handle(self, fop, call, req):
        raise FopError(errno.ENOSYS, fop.name)

    async def lookup(self, call, req):
        self.calls.append(("lookup", call))
        if self.fail_with is not None:
            raise self.fail_with
        return F.EntryRep(self.iatt(self._child(req.parent, req.name)))

    async def stat(self, call, req):
        return F.AttrRep(self.iatt(req.gfid))

    async def fstat(self, call, req):
        self.calls.append(("fstat", req.fd.gfid))
        return F.AttrRep(self.iatt(req.fd.gfid))

    async def _new(self, req, mode):
        kids = self.objs[req.parent]["kids"]
        if req.name in kids:
            raise FopError(errno.EEXIST)
        kids[req.name] = req.gfid
        self.objs[req.gfid] = {"mode": mode, "kids": {}, "xattrs": {}}
        return self.iatt(req.gfid)

    async def mkdir(self, call, req):
        return F.EntryRep(await self._new(req, stat.S_IFDIR | req.mode))

    async def create(self, call, req):
        self.calls.append(("create", call))
        iatt = await self._new(req, req.mode)
        return F.CreateRep(iatt, Fd(req.gfid, req.flags))

    async def open(self, call, req):
        return F.OpenRep(Fd(req.gfid, req.flags))

    async def release(self, call, req):
        self.calls.append(("release", call))
        return F.EMPTY

    async def opendir(self, call, req):
        return F.OpenRep(Fd(req.gfid, 0, is_dir=True))

    async def releasedir(self, call, req):
        return F.EMPTY

    async def readdir(self, call, req):
        self.calls.append(("readdir", req.offset))
        names = sorted(self.objs[req.fd.gfid]["kids"])
        ents = [Dirent(b".", 1, stat.S_IFDIR, self.iatt(req.fd.gfid))]
        ents += [Dirent(n, i + 2, 0, self.iatt(self.objs[req.fd.gfid]["kids"][n]))
                 for i, n in enumerate(names)]
        rest = [e for e in ents if e.off > req.offset]
        batch = rest[:7]  # small batches, so that the bridge has to ask again
        return F.ReaddirRep(batch, eof=len(batch) == len(rest))

    async def setxattr(self, call, req):
        self.objs[req.gfid]["xattrs"][req.name] = req.value
        return F.EMPTY

    async def getxattr(self, call, req):
        try:
            return F.XattrRep(self.objs[req.gfid]["xattrs"][req.name])
        except KeyError:
            raise FopError(errno.ENODATA) from None

    async def listxattr(self, call, req):
        return F.ListxattrRep(["user.a", "trusted.gvol.gfid"])


CTX = SimpleNamespace(uid=1000, gid=1000, pid=os.getpid(), umask=0o022)


def run(fn, *args):
    return trio.run(fn, *args)


def test_lookup_counts_and_forget():
    leaf = MemLeaf()
    ops = GvolOperations(leaf, FuseOptions(entry_timeout=2.5, attr_timeout=3.5))

    async def go():
        d = await ops.mkdir(pyfuse3.ROOT_INODE, b"d", 0o755, CTX)
        assert d.entry_timeout == 2.5 and d.attr_timeout == 3.5
        assert ops.lookup_count(d.st_ino) == 1
        e = await ops.lookup(pyfuse3.ROOT_INODE, b"d", CTX)
        assert e.st_ino == d.st_ino and ops.lookup_count(d.st_ino) == 2
        fi, f = await ops.create(d.st_ino, b"f", stat.S_IFREG | 0o644, os.O_RDWR, CTX)
        assert ops.lookup_count(f.st_ino) == 1
        # the call carries the caller, with its supplementary groups
        call = leaf.calls[-1][1]
        assert (call.uid, call.gid, call.pid) == (1000, 1000, os.getpid())
        assert set(call.groups) == set(os.getgroups())
        # getattr of an open file goes through its fd
        await ops.getattr(f.st_ino, CTX)
        dgfid = leaf.objs[ROOT_GFID]["kids"][b"d"]
        assert leaf.calls[-1] == ("fstat", leaf.objs[dgfid]["kids"][b"f"])
        await ops.release(fi.fh)
        ops.forget([(d.st_ino, 2), (f.st_ino, 1)])
        assert ops.lookup_count(d.st_ino) == 0 and ops.lookup_count(f.st_ino) == 0
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await ops.getattr(d.st_ino, CTX)
        assert ei.value.errno == errno.ESTALE
        ops.forget([(pyfuse3.ROOT_INODE, 10), (12345, 1)])  # root stays, unknown ignored
        assert ops.lookup_count(pyfuse3.ROOT_INODE) >= 1
        assert d.st_ino == gfid_to_ino(leaf.objs[ROOT_GFID]["kids"][b"d"])

    run(go)


def test_error_boundary():
    leaf = MemLeaf()
    ops = GvolOperations(leaf)

    async def go():
        for exc, want in ((FopError(errno.ENOTCONN), errno.ENOTCONN),
                          (RuntimeError("bug"), errno.EIO),
                          (KeyError("x"), errno.EIO),
                          (FopError(0), errno.EIO)):
            leaf.fail_with = exc
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await ops.lookup(pyfuse3.ROOT_INODE, b"x", CTX)
            assert ei.value.errno == want
        leaf.fail_with = None
        with pytest.raises(pyfuse3.FUSEError) as ei:  # a fop the leaf lacks
            await ops.statfs(CTX)
        assert ei.value.errno == errno.ENOSYS
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await ops.read(999, 0, 10)
        assert ei.value.errno == errno.EBADF

    run(go)


def test_names_refused():
    ops = GvolOperations(MemLeaf())

    async def go():
        for name, want in ((b"a/b", errno.EINVAL), (b"x" * 256, errno.ENAMETOOLONG),
                           (b"", errno.EINVAL)):
            for coro in (ops.lookup(pyfuse3.ROOT_INODE, name, CTX),
                         ops.mkdir(pyfuse3.ROOT_INODE, name, 0o755, CTX),
                         ops.unlink(pyfuse3.ROOT_INODE, name, CTX)):
                with pytest.raises(pyfuse3.FUSEError) as ei:
                    await coro
                assert ei.value.errno == want
        await ops.mkdir(pyfuse3.ROOT_INODE, b"x" * 255, 0o755, CTX)

    run(go)


def test_negative_timeout():
    ops = GvolOperations(MemLeaf(), FuseOptions(negative_timeout=7.0))

    async def go():
        e = await ops.lookup(pyfuse3.ROOT_INODE, b"nope", CTX)
        assert e.st_ino == 0 and e.entry_timeout == 7.0
        ops0 = GvolOperations(MemLeaf())
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await ops0.lookup(pyfuse3.ROOT_INODE, b"nope", CTX)
        assert ei.value.errno == errno.ENOENT

    run(go)


def test_xattrs_internal_refused():
    leaf = MemLeaf()
    ops = GvolOperations(leaf)

    async def go():
        root = pyfuse3.ROOT_INODE
        await ops.setxattr(root, b"user.a", b"1", CTX)
        assert await ops.getxattr(root, b"user.a", CTX) == b"1"
        for coro, want in ((ops.setxattr(root, b"trusted.gvol.gfid", b"x", CTX), errno.EPERM),
                           (ops.removexattr(root, b"trusted.gvol.dht", CTX), errno.EPERM),
                           (ops.getxattr(root, b"trusted.gvol.gfid", CTX), errno.ENODATA),
                           (ops.getxattr(root, b"security.selinux", CTX), errno.EOPNOTSUPP),
                           (ops.getxattr(root, b"system.posix_acl_access", CTX),
                            errno.EOPNOTSUPP),
                           (ops.setxattr(root, b"system.posix_acl_default", b"x", CTX),
                            errno.EOPNOTSUPP)):
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await coro
            assert ei.value.errno == want
        assert await ops.listxattr(root, CTX) == [b"user.a"]
        assert "trusted.gvol.gfid" not in leaf.objs[ROOT_GFID]["xattrs"]

    run(go)


def test_security_capability_absence_is_cached(monkeypatch):
    """The kernel asks for security.capability before every write(2): its absence is
    remembered for attr_timeout (a brick said ENODATA, or this mount created the file) and
    forgotten when it is set or removed through the mount."""
    leaf = MemLeaf()
    asked: list[str] = []
    real = leaf.getxattr

    async def getxattr(call, req):
        asked.append(req.name)
        return await real(call, req)

    async def removexattr(call, req):
        leaf.objs[req.gfid]["xattrs"].pop(req.name, None)
        return F.EMPTY

    leaf.getxattr = getxattr
    leaf.removexattr = removexattr
    now = [1000.0]
    monkeypatch.setattr("fuse.ops.time.monotonic", lambda: now[0])
    ops = GvolOperations(leaf)
    caps = b"security.capability"

    async def nodata(ino):
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await ops.getxattr(ino, caps, CTX)
        assert ei.value.errno == errno.ENODATA

    async def go():
        root = pyfuse3.ROOT_INODE
        _, e = await ops.create(root, b"f", 0o644, os.O_RDWR, CTX)
        ino = e.st_ino
        await nodata(ino)  # created here: known to have none
        assert asked == []
        now[0] += 1.5  # past attr_timeout: asked again, then remembered
        await nodata(ino)
        await nodata(ino)
        assert asked == ["security.capability"]
        await ops.setxattr(ino, caps, b"v", CTX)
        assert await ops.getxattr(ino, caps, CTX) == b"v"
        await ops.getxattr(ino, caps, CTX)  # present: never cached
        assert asked == ["security.capability"] * 3
        await ops.removexattr(ino, caps, CTX)
        await nodata(ino)
        await nodata(ino)
        assert asked == ["security.capability"] * 4
        await nodata(root)  # the root: asked once
        await nodata(root)
        assert asked == ["security.capability"] * 5

    run(go)

    ops0 = GvolOperations(leaf, FuseOptions(attr_timeout=0))
    asked.clear()

    async def go0():
        for _ in range(2):
            with pytest.raises(pyfuse3.FUSEError):
                await ops0.getxattr(pyfuse3.ROOT_INODE, caps, CTX)
        assert len(asked) == 2  # no attribute caching, no capability caching

    run(go0)


def test_readdir_cookies_and_counts(monkeypatch):
    leaf = MemLeaf()
    ops = GvolOperations(leaf)
    accepted: list[tuple[bytes, int, int]] = []
    room = {"n": 0}

    def reply(token, name, attr, next_id):
        if room["n"] == 0:
            return False
        room["n"] -= 1
        accepted.append((name, attr.st_ino, next_id))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)

    async def go():
        for i in range(20):
            fi, _ = await ops.create(pyfuse3.ROOT_INODE, b"f%02d" % i, stat.S_IFREG | 0o644, 0,
                                     CTX)
            await ops.release(fi.fh)
            ops.forget([(_.st_ino, 1)])
        fh = await ops.opendir(pyfuse3.ROOT_INODE, CTX)
        cookie = 0
        while True:  # the kernel asks for 3 entries at a time
            room["n"] = 3
            before = len(accepted)
            await ops.readdir(fh, cookie, None)
            if len(accepted) == before:
                break
            cookie = accepted[-1][2]
        names = [n for n, _, _ in accepted]
        assert names == [b"."] + [b"f%02d" % i for i in range(20)]
        # every accepted entry (not ".") counted once; refused ones not at all
        for name, ino, _ in accepted[1:]:
            assert ops.lookup_count(ino) == 1, name
        assert ops.lookup_count(pyfuse3.ROOT_INODE) == 1
        # cookies are stable: resuming after f09 gives f10 again
        after = dict((n, c) for n, _, c in accepted)
        room["n"] = 1
        await ops.readdir(fh, after[b"f09"], None)
        assert accepted[-1][0] == b"f10"
        # one graph readdir per batch of 7, not one per kernel request
        reads = [c for c in leaf.calls if c[0] == "readdir"]
        assert len(reads) <= 6, reads
        await ops.releasedir(fh)

    run(go)


# ====================================================================== mount.gvol parsing
def test_parse_source_and_options():
    servers, vol = M.parse_source("h1:/vol", 24200)
    assert servers == [("h1", 24200)] and vol == "vol"
    assert M.parse_source("h1:24555:/v", 1) == ([("h1", 24555)], "v")
    assert M.parse_source("[::1]:7:/v", 1) == ([("::1", 7)], "v")
    assert M.parse_source("a,b:9:/v", 1) == ([("a", 1), ("b", 9)], "v")
    for bad in ("novol", "h:/", "h:/v/sub"):
        with pytest.raises(M.MountError):
            M.parse_source(bad, 1)
    ns = M.build_parser().parse_args(
        ["h1:/vol", "/mnt/x", "-o", "defaults,_netdev,noauto,nofail,x-systemd.automount,rw",
         "-o", "backup-volfile-servers=h2:[fe80::1]:h3,entry-timeout=2,attribute-timeout=0.5,"
               "negative-timeout=3,log-file=/tmp/l,log-level=debug,writeback-cache,ro,bogus=1"])
    cfg = M.config_from_args(ns)
    assert cfg.servers == [("h1", 24200), ("h2", 24200), ("fe80::1", 24200), ("h3", 24200)]
    assert cfg.fuse.entry_timeout == 2 and cfg.fuse.attr_timeout == 0.5
    assert cfg.fuse.negative_timeout == 3 and cfg.fuse.writeback_cache
    assert cfg.log_file == "/tmp/l" and cfg.log_level == "DEBUG"
    assert cfg.kernel_flags == ["ro"] and cfg.fsname == "h1:/vol"
    assert cfg.warnings == ["ignoring unknown option 'bogus=1'"]
    opts = M.fuse_mount_options(cfg)
    assert {"fsname=h1:/vol", "subtype=gvol", "default_permissions", "ro"} <= opts
    assert "auto_unmount" not in opts
    with pytest.raises(M.MountError):
        M.config_from_args(M.build_parser().parse_args(["h:/v", "/m", "-o", "entry-timeout=x"]))
    assert M.default_log_file("/mnt/gv0") == "/var/log/gvol/mnt-mnt-gv0.log"


# ====================================================================== level 2: real mounts
needs_fuse = pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse and fusermount3")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _posix_ready() -> None:
    try:
        from translators.storage import posix
    except ImportError:
        pytest.skip("translators/storage/posix.py is not there yet")
    if not hasattr(posix, "prepare_brick"):
        pytest.skip("storage/posix has no prepare_brick yet")


@pytest.fixture
def mounts():
    """Start mounts with `mounts(mountpoint, volfile=..., options=...)`; all are cleaned up."""
    if not fuse_available():
        pytest.skip("needs /dev/fuse and fusermount3")
    started: list[GvolMount] = []

    def start(mountpoint, **kw) -> GvolMount:
        m = GvolMount(mountpoint, **kw)
        started.append(m)
        return m.start()

    yield start
    for m in reversed(started):
        m.stop()


def _make_volume(base) -> tuple[str, str, str]:
    """(brick, client volfile, empty mountpoint) under `base`."""
    _posix_ready()
    brick, mnt = os.path.join(base, "brick"), os.path.join(base, "mnt")
    prepare_brick(brick)
    os.makedirs(mnt, exist_ok=True)
    vf = os.path.join(base, "client.vol")
    with open(vf, "w") as f:
        f.write(client_volfile(brick))
    return brick, vf, mnt


@pytest.fixture(scope="module")
def vol():
    """One mount shared by the tests that only need a working filesystem; each test works in
    its own directory. Yields (mountpoint, brick)."""
    if not fuse_available():
        pytest.skip("needs /dev/fuse and fusermount3")
    # not under pytest's 0700 base directory: other users must reach the mount
    base = tempfile.mkdtemp(prefix="gvol-fuse-")
    os.chmod(base, 0o755)
    try:
        brick, vf, mnt = _make_volume(base)
        m = GvolMount(mnt, volfile=vf, options="entry-timeout=1,attribute-timeout=1")
        m.start()
        try:
            yield mnt, brick
        finally:
            m.stop()
    finally:
        if not is_mounted(os.path.join(base, "mnt")):
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def wd(vol, request):
    """A fresh directory on the shared mount."""
    d = os.path.join(vol[0], request.node.name)
    os.mkdir(d)
    return d


def _sh(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def test_files_read_write_append(wd):
    p = os.path.join(wd, "f")
    with open(p, "w") as f:
        f.write("hello\n")
    with open(p, "a") as f:
        f.write("world\n")
    with open(p) as f:
        assert f.read() == "hello\nworld\n"
    with open(p, "r+b") as f:
        f.seek(2)
        f.write(b"LL")
        f.seek(0)
        assert f.read() == b"heLLo\nworld\n"
    assert os.stat(p).st_size == 12
    data = os.urandom(3 * 1024 * 1024 + 123)
    big = os.path.join(wd, "big")
    with open(big, "wb") as f:
        f.write(data)
    with open(big, "rb") as f:
        assert f.read() == data
        f.seek(1024 * 1024 - 5)
        assert f.read(10) == data[1024 * 1024 - 5:1024 * 1024 + 5]
    st = os.stat(big)
    assert st.st_size == len(data) and st.st_blocks * 512 >= len(data) and st.st_blksize > 0
    with pytest.raises(FileExistsError):
        os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with open(p, "w") as f:  # O_TRUNC
        pass
    assert os.stat(p).st_size == 0
    os.unlink(p)
    assert not os.path.exists(p)
    with pytest.raises(FileNotFoundError):
        os.stat(p)


def test_dirs_and_rename(wd):
    d = os.path.join(wd, "d")
    os.mkdir(d, 0o750)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750
    open(os.path.join(d, "x"), "w").close()
    with pytest.raises(OSError) as ei:
        os.rmdir(d)
    assert ei.value.errno == errno.ENOTEMPTY
    os.rename(os.path.join(d, "x"), os.path.join(wd, "y"))
    assert sorted(os.listdir(wd)) == ["d", "y"]
    ino = os.stat(os.path.join(wd, "y")).st_ino
    open(os.path.join(wd, "z"), "w").close()
    os.rename(os.path.join(wd, "y"), os.path.join(wd, "z"))  # replaces z
    assert os.stat(os.path.join(wd, "z")).st_ino == ino
    os.rename(d, os.path.join(wd, "d2"))
    os.mkdir(os.path.join(wd, "d2", "sub"))
    assert os.listdir(os.path.join(wd, "d2")) == ["sub"]
    os.rmdir(os.path.join(wd, "d2", "sub"))
    os.rmdir(os.path.join(wd, "d2"))
    r = _sh("mv", "-n", os.path.join(wd, "z"), os.path.join(wd, "z"))
    assert os.listdir(wd) == ["z"], r.stderr
    with pytest.raises(OSError) as ei:
        os.mkdir(os.path.join(wd, "x" * 256))
    assert ei.value.errno == errno.ENAMETOOLONG
    os.mkdir(os.path.join(wd, "x" * 255))


def test_links_fifo(wd):
    f = os.path.join(wd, "f")
    with open(f, "w") as fh:
        fh.write("data")
    os.symlink("f", os.path.join(wd, "s"))
    assert os.readlink(os.path.join(wd, "s")) == "f"
    assert stat.S_ISLNK(os.lstat(os.path.join(wd, "s")).st_mode)
    with open(os.path.join(wd, "s")) as fh:
        assert fh.read() == "data"
    os.link(f, os.path.join(wd, "h"))
    st, sth = os.stat(f), os.stat(os.path.join(wd, "h"))
    assert st.st_ino == sth.st_ino and st.st_nlink == 2  # as a local filesystem shows it
    os.unlink(f)
    assert os.stat(os.path.join(wd, "h")).st_nlink == 1
    assert not os.path.exists(os.path.join(wd, "s"))  # dangling now
    os.mkfifo(os.path.join(wd, "p"), 0o640)
    st = os.stat(os.path.join(wd, "p"))
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    d = os.path.join(wd, "dir")
    os.mkdir(d)
    assert os.stat(d).st_nlink == 2
    os.mkdir(os.path.join(d, "a"))
    assert os.stat(d).st_nlink == 3


def test_chmod_chown_utime_truncate(wd):
    p = os.path.join(wd, "f")
    with open(p, "wb") as f:
        f.write(b"x" * 1000)
    os.chmod(p, 0o4751)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o4751
    os.chown(p, 1234, 5678)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(p, ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    os.utime(p)  # UTIME_NOW
    assert abs(os.stat(p).st_mtime_ns - time.time_ns()) < 5e9
    ctime = os.stat(p).st_ctime_ns
    os.truncate(p, 10)
    st = os.stat(p)
    assert st.st_size == 10 and st.st_ctime_ns >= ctime
    with open(p, "r+b") as f:
        os.ftruncate(f.fileno(), 100_000)
        assert os.fstat(f.fileno()).st_size == 100_000
        f.seek(0)
        assert f.read() == b"x" * 10 + b"\0" * 99_990
    os.truncate(p, 0)
    assert os.stat(p).st_size == 0
    os.symlink("f", os.path.join(wd, "s"))
    os.utime(os.path.join(wd, "s"), ns=(5, 6_000_000_007), follow_symlinks=False)
    assert os.lstat(os.path.join(wd, "s")).st_mtime_ns == 6_000_000_007


def test_xattrs(wd):
    p = os.path.join(wd, "f")
    open(p, "w").close()
    os.setxattr(p, "user.color", b"blue")
    assert os.getxattr(p, "user.color") == b"blue"
    assert "user.color" in os.listxattr(p)
    with pytest.raises(OSError) as ei:
        os.setxattr(p, "user.color", b"red", os.XATTR_CREATE)
    assert ei.value.errno == errno.EEXIST
    os.removexattr(p, "user.color")
    with pytest.raises(OSError) as ei:
        os.getxattr(p, "user.color")
    assert ei.value.errno == errno.ENODATA
    # the volume's own xattrs can be neither read, listed nor set through a mount
    with pytest.raises(OSError) as ei:
        os.setxattr(p, "trusted.gvol.gfid", b"x" * 16)
    assert ei.value.errno == errno.EPERM
    with pytest.raises(OSError) as ei:
        os.getxattr(p, "trusted.gvol.gfid")
    assert ei.value.errno == errno.ENODATA
    with pytest.raises(OSError) as ei:
        os.removexattr(p, "trusted.gvol.gfid")
    assert ei.value.errno == errno.EPERM
    assert not [n for n in os.listxattr(p) if n.startswith("trusted.gvol.")]
    os.setxattr(p, "trusted.other", b"ok")  # root may use other trusted.* names
    assert os.getxattr(p, "trusted.other") == b"ok"


def test_ls_l_1000_files(wd):
    for i in range(1000):
        os.close(os.open(os.path.join(wd, f"file{i:04d}"), os.O_CREAT | os.O_WRONLY, 0o644))
    r = _sh("ls", "-l", "--time-style=+%s", wd)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("total") and len(lines) == 1001
    assert all(ln.startswith("-rw-r--r--") for ln in lines[1:])
    inos = {e.name: e.inode() for e in os.scandir(wd)}
    assert len(set(inos.values())) == 1000
    assert inos["file0500"] == os.stat(os.path.join(wd, "file0500")).st_ino
    assert sorted(os.listdir(wd)) == sorted(inos)  # a second listing, same names


def test_statfs(vol):
    mnt, brick = vol
    s, b = os.statvfs(mnt), os.statvfs(brick)
    assert s.f_blocks * s.f_frsize == b.f_blocks * b.f_frsize
    assert s.f_namemax == 255 and s.f_bsize > 0
    r = _sh("df", "-P", mnt)
    assert r.returncode == 0 and "gvol:testvol" in r.stdout


def test_cp_a_and_diff(wd):
    src = next((d for d in ("/usr/share/doc/bash", "/usr/share/doc/coreutils",
                            "/usr/share/doc/apt", "/usr/share/doc/fuse3") if os.path.isdir(d)),
               None)
    if src is None:
        pytest.skip("no /usr/share/doc directory to copy")
    r = _sh("cp", "-a", src, wd + "/")
    assert r.returncode == 0, r.stderr
    dst = os.path.join(wd, os.path.basename(src))
    r = _sh("diff", "-r", "--no-dereference", src, dst)
    assert r.returncode == 0, r.stdout + r.stderr
    for root, dirs, files in os.walk(src):
        for n in files + dirs:
            a = os.lstat(os.path.join(root, n))
            b = os.lstat(os.path.join(dst, os.path.relpath(os.path.join(root, n), src)))
            assert (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid), n
            if not stat.S_ISDIR(a.st_mode):
                assert a.st_mtime_ns == b.st_mtime_ns, n


def test_permissions_as_nobody(wd):
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv")
    secret = os.path.join(wd, "secret")
    with open(secret, "w") as f:
        f.write("s")
    os.chmod(secret, 0o600)
    public = os.path.join(wd, "public")
    with open(public, "w") as f:
        f.write("p")
    os.chmod(wd, 0o755)
    r = _sh(*NOBODY, "cat", secret)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = _sh(*NOBODY, "cat", public)
    assert r.returncode == 0 and r.stdout == "p", r.stderr
    r = _sh(*NOBODY, "touch", os.path.join(wd, "new"))
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = _sh(*NOBODY, "sh", "-c", f"echo x >> {public}")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    shared = os.path.join(wd, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o777)
    r = _sh(*NOBODY, "sh", "-c", f"echo mine > {shared}/mine && mkdir {shared}/sub")
    assert r.returncode == 0, r.stderr
    st = os.stat(os.path.join(shared, "mine"))
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    r = _sh(*NOBODY, "chmod", "600", secret)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr


def test_kill_client_then_remount(tmp_path, mounts):
    brick, vf, mnt = _make_volume(str(tmp_path))
    m = mounts(mnt, volfile=vf)
    with open(os.path.join(mnt, "keep"), "w") as f:
        f.write("kept")
    m.kill(signal.SIGKILL)
    with pytest.raises(OSError) as ei:
        os.listdir(mnt)
    assert ei.value.errno == errno.ENOTCONN  # a dead mount, until cleaned up
    m.stop()
    assert not is_mounted(mnt)
    m2 = mounts(mnt, volfile=vf)
    with open(os.path.join(mnt, "keep")) as f:
        assert f.read() == "kept"
    assert m2.proc.poll() is None


def test_umount_and_sigterm_exit_cleanly(tmp_path, mounts):
    brick, vf, mnt = _make_volume(str(tmp_path))
    m = mounts(mnt, volfile=vf)
    r = _sh("umount", mnt)
    assert r.returncode == 0, r.stderr
    assert m.proc.wait(20) == 0
    assert not is_mounted(mnt)
    m = mounts(mnt, volfile=vf)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(20) == 0
    assert not is_mounted(mnt), m.stderr()
    assert "unmounted" in m.stderr()


def test_background_mount(tmp_path):
    brick, vf, mnt = _make_volume(str(tmp_path))
    log = tmp_path / "client.log"
    r = _sh(*mount_command(), "--volfile", vf, mnt, "-o", f"log-file={log},_netdev,defaults",
            env=mount_env(), cwd="/")
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        with open(os.path.join(mnt, "f"), "w") as f:
            f.write("bg")
        pid = _client_pid(mnt)
        assert pid is not None and os.getsid(pid) == pid  # its own session, detached
        r = _sh("fusermount3", "-u", mnt)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while _client_pid(mnt) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _client_pid(mnt) is None
        assert "unmounted" in log.read_text()
    finally:
        unmount(mnt)
        pid = _client_pid(mnt)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


def _client_pid(mnt: str) -> int | None:
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"fuse.mount" in args and os.fsencode(mnt) in args and b"--foreground" in args:
            return int(d)
    return None


@pytest.mark.parametrize("background", [False, True])
def test_bad_mountpoints(tmp_path, background):
    brick, vf, mnt = _make_volume(str(tmp_path))
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [(str(tmp_path / "missing"), "does not exist"), (str(full), "is not empty"),
             (str(afile), "is not a directory"), ("/proc", "is already a mount point")]
    for path, msg in cases:
        argv = [*mount_command(), "--volfile", vf, path] + ([] if background else
                                                             ["--foreground"])
        r = _sh(*argv, env=mount_env(), cwd="/")
        assert r.returncode != 0, path
        assert r.stderr.strip().splitlines() == [f"mount.gvol: mount point {path} {msg}"
                                                  if "already" not in msg else
                                                  f"mount.gvol: {path} {msg}"], r.stderr
    assert list(full.iterdir()) == [full / "x"] and not is_mounted(full)
    r = _sh(*mount_command(), "--volfile", str(tmp_path / "nope.vol"), mnt, env=mount_env())
    assert r.returncode != 0 and "cannot read volfile" in r.stderr
    assert not is_mounted(mnt)


def test_volfile_server_unreachable(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = _sh(*mount_command(), "127.0.0.1:1:/vol", str(mnt), "-o", "fetch-timeout=2",
            env=mount_env())
    assert r.returncode == 32
    assert r.stderr.startswith("mount.gvol: failed to fetch the volume file of vol:"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not is_mounted(mnt)


def test_writeback_cache_mount(tmp_path, mounts):
    brick, vf, mnt = _make_volume(str(tmp_path))
    mounts(mnt, volfile=vf, options="writeback-cache")
    p = os.path.join(mnt, "f")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)  # O_WRONLY, O_APPEND
    os.write(fd, b"a" * 1000)
    os.write(fd, b"b" * 10)
    os.close(fd)
    with open(p, "rb") as f:
        assert f.read() == b"a" * 1000 + b"b" * 10
    os.utime(p, ns=(10**9, 2 * 10**9))
    assert os.stat(p).st_mtime_ns == 2 * 10**9
    os.truncate(p, 5)
    assert os.path.getsize(p) == 5
    with open(os.path.join(brick, "f"), "rb") as f:  # and it reached the brick
        assert f.read() == b"aaaaa"


def test_fake_mount_checks_only(tmp_path):
    brick, vf, mnt = _make_volume(str(tmp_path))
    r = _sh(*mount_command(), "--volfile", vf, mnt, "-f", env=mount_env())
    assert r.returncode == 0, r.stderr
    assert not is_mounted(mnt)


def test_brick_unreachable_fails_fast(tmp_path, mounts):
    """A client graph whose brick is not there: the mount comes up (with a warning), and every
    request fails at once with ENOTCONN instead of hanging."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    vf = tmp_path / "client.vol"
    vf.write_text("volume v-client-0\n    type protocol/client\n"
                  "    option remote-host 127.0.0.1\n    option remote-port 1\n"
                  "    option remote-subvolume /nowhere\nend-volume\n\n"
                  "volume v\n    type debug/io-stats\n    subvolumes v-client-0\nend-volume\n")
    m = mounts(mnt, volfile=vf, options="connect-timeout=0.5")
    assert "not connected yet" in m.stderr()
    t = time.monotonic()
    r = _sh("ls", str(mnt))
    assert r.returncode != 0 and "Transport endpoint is not connected" in r.stderr
    with pytest.raises(OSError) as ei:
        open(mnt / "f", "w")
    assert ei.value.errno == errno.ENOTCONN
    assert time.monotonic() - t < 5


def test_gvold_errors_reach_the_user(tmp_path):
    """mount.gvol SERVER:PORT:/VOL against a real gvold: a missing or stopped volume is one
    clear line and exit 32, with nothing mounted; a started one mounts (background mode)."""
    from gvolenv import GvolNode, kill_pid, pids_of

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        _gvold_errors(GvolNode(tmp_path / "node"), mnt, tmp_path)
    finally:  # whatever gvold started for this node (it may have outlived its cleanup)
        for pid in pids_of(str(tmp_path / "node")):
            kill_pid(pid)


def _gvold_errors(node, mnt, tmp_path):
    with node:
        node.create_volume("stopped", bricks=1, start=False)
        for vol, msg in (("nosuch", "does not exist"), ("stopped", "is not started")):
            r = _sh(*mount_command(), f"127.0.0.1:{node.port}:/{vol}", str(mnt),
                    env=mount_env())
            assert r.returncode == 32, r.stderr
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("mount.gvol: ") and msg in lines[0]
            assert not is_mounted(mnt)
        node.create_volume("good", bricks=1)
        r = _sh(*mount_command(), f"127.0.0.1:{node.port}:/good", str(mnt), "-o",
                f"log-file={tmp_path}/client.log,backup-volfile-servers=127.0.0.2", env=mount_env())
        try:
            assert r.returncode == 0, r.stderr
            assert is_mounted(mnt)
            with open(mnt / "f", "w") as f:
                f.write("over the network")
            assert (node.brick_dir("good", 0) / "f").read_text() == "over the network"
            assert "127.0.0.1:" in subprocess.run(["df", "-P", str(mnt)], capture_output=True,
                                                  text=True).stdout
        finally:
            unmount(mnt)
            pid = _client_pid(str(mnt))
            if pid is not None:
                os.kill(pid, signal.SIGKILL)


def _acl_user_read(uid: int) -> bytes:
    """system.posix_acl_access value: owner rw, user `uid` r, group -, mask r, other -."""
    import struct

    u = 0xFFFFFFFF
    ents = ((0x01, 6, u), (0x02, 4, uid), (0x04, 0, u), (0x10, 4, u), (0x20, 0, u))
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in ents)


@pytest.mark.parametrize("acl", [False, True])
def test_posix_acls(acl, mounts):
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv")
    base = tempfile.mkdtemp(prefix="gvol-acl-")
    os.chmod(base, 0o755)  # nobody must reach the mount
    try:
        brick, vf, mnt = _make_volume(base)
        mounts(mnt, volfile=vf, options="acl" if acl else "")
        p = os.path.join(mnt, "f")
        with open(p, "w") as f:
            f.write("secret")
        os.chmod(p, 0o600)
        if not acl:  # refused here, not stored unenforced on the brick
            with pytest.raises(OSError) as ei:
                os.setxattr(p, "system.posix_acl_access", _acl_user_read(65534))
            assert ei.value.errno == errno.EOPNOTSUPP
            assert _sh(*NOBODY, "cat", p).returncode != 0
            return
        os.setxattr(p, "system.posix_acl_access", _acl_user_read(65534))
        assert os.getxattr(p, "system.posix_acl_access") == _acl_user_read(65534)
        r = _sh(*NOBODY, "cat", p)  # the kernel enforces it
        assert r.returncode == 0 and r.stdout == "secret", r.stderr
        assert _sh(*NOBODY, "sh", "-c", f"echo x >> {p}").returncode != 0
    finally:
        unmount(os.path.join(base, "mnt"))  # before removing what is under it
        shutil.rmtree(base, ignore_errors=True)
