"""The pyfuse3 bridge: kernel requests -> fops on the top translator of a client graph.

Only kernel-facing state lives here:

- the inode table: kernel inode number <-> gfid, with the kernel's lookup count. The kernel inode
  number is the low 64 bits of the gfid (`Iatt.ino`), so numbers are stable across mounts and
  clients; root (pyfuse3.ROOT_INODE) is ROOT_GFID and is never forgotten. The count rises once
  for every entry handed to the kernel (lookup, create, mkdir, mknod, symlink, link, and each
  readdirplus entry that `readdir_reply` accepted) and falls in `forget`, which frees the entry.
- the handle table: fh -> the graph's `Fd` (plus the caller of the open, since pyfuse3 gives
  read/write/flush/fsync/release no request context).
- one error boundary (`_boundary`): FopError -> FUSEError(errno); anything else is logged with its
  traceback and answered EIO. Nothing escapes a handler, so nothing kills the mount.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import stat
import time
from dataclasses import dataclass
from typing import Any

import pyfuse3

from translators import fops as F
from translators.types import (
    ROOT_GFID,
    XATTR_PREFIX,
    Call,
    Dirent,
    Fd,
    FopError,
    Iatt,
    new_gfid,
)
from translators.xlator import Translator

log = logging.getLogger(__name__)

NAME_MAX = 255
_XATTR_INTERNAL = XATTR_PREFIX.encode()
_SELINUX = b"security.selinux"
# the kernel asks for it before every write(2) to a file (file_remove_privs: FUSE sets no
# SB_NOSEC, and pyfuse3 cannot ask for FUSE_HANDLE_KILLPRIV_V2)
_CAPS = b"security.capability"
_NOCAP_MAX = 65536
_POSIX_ACL = (b"system.posix_acl_access", b"system.posix_acl_default")
_DOTS = (b".", b"..")


@dataclass(frozen=True, slots=True)
class FuseOptions:
    """Kernel-facing behaviour of one mount (from mount.gvol's -o options)."""

    entry_timeout: float = 1.0
    attr_timeout: float = 1.0
    negative_timeout: float = 0.0
    writeback_cache: bool = False
    direct_io: bool = False
    # security.selinux is answered locally (EOPNOTSUPP) unless asked for, as GlusterFS does:
    # `ls -l` asks for it once per file and it would cost a brick round trip each time.
    selinux: bool = False
    # POSIX ACLs: with `acl` the kernel enforces and caches them (FUSE_CAP_POSIX_ACL); without,
    # system.posix_acl_* is answered locally with EOPNOTSUPP (as GlusterFS does) - the kernel
    # would not enforce stored ACLs, and `ls -l` asks for one per file (a brick round trip each)
    acl: bool = False
    readdir_size: int = 128 * 1024  # bytes of entries asked of the graph per readdir fop


def _boundary(fn):
    """The one error boundary of every request handler."""
    name = fn.__name__

    @functools.wraps(fn)
    async def handler(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except FopError as e:
            err = e.errno if isinstance(e.errno, int) and e.errno > 0 else errno.EIO
            raise pyfuse3.FUSEError(err) from None
        except Exception:
            log.exception("fuse %s%r failed unexpectedly", name, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


def _check_name(name: bytes) -> None:
    if not name or b"/" in name or b"\0" in name:
        raise FopError(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > NAME_MAX:
        raise FopError(errno.ENAMETOOLONG, "name longer than 255 bytes")


class _Inode:
    __slots__ = ("gfid", "nlookup")

    def __init__(self, gfid: bytes, nlookup: int) -> None:
        self.gfid = gfid
        self.nlookup = nlookup


class _Handle:
    __slots__ = ("after", "call", "entries", "eof", "fd", "ino")

    def __init__(self, fd: Fd, ino: int, call: Call) -> None:
        self.fd = fd
        self.ino = ino
        self.call = call
        # directories: the last batch of entries read from the graph, and for each cookie the
        # index of the entry that follows it, so the kernel's small readdir requests are served
        # from one large graph readdir
        self.entries: list[Dirent] = []
        self.after: dict[int, int] = {}
        self.eof = False


class GvolOperations(pyfuse3.Operations):
    """pyfuse3 Operations over the top translator of a client graph."""

    supports_dot_lookup = False  # no NFS export: the kernel never looks up "." or ".."

    def __init__(self, top: Translator, options: FuseOptions | None = None) -> None:
        super().__init__()
        self.top = top
        self.opts = options or FuseOptions()
        self.enable_writeback_cache = self.opts.writeback_cache
        self.enable_acl = self.opts.acl
        self._inodes: dict[int, _Inode] = {pyfuse3.ROOT_INODE: _Inode(ROOT_GFID, 1)}
        self._handles: dict[int, _Handle] = {}
        self._open: dict[int, set[int]] = {}  # ino -> open file handles (for fstat)
        self._next_fh = 1
        self._calls: dict[tuple[int, int, int], tuple[float, Call]] = {}
        # ino -> until when it is known to have no security.capability (for attr_timeout, like
        # any attribute: a brick answered ENODATA, or this mount created the file)
        self._nocap: dict[int, float] = {}
        # Directory attributes, as GlusterFS's md-cache keeps them: ino -> (valid until, Iatt).
        # After an entry op in a directory the kernel drops the directory's attributes and,
        # with default_permissions, asks for them again before the next create in it; this
        # answers from what the mount already knows for the attribute timeout, with mtime,
        # ctime and nlink brought forward by the entry ops this mount did there.
        self._dattr: dict[int, tuple[float, Iatt]] = {}
        self.initialized = False  # set when the kernel's INIT arrived (the mount is live)
        self.on_init = None  # optional callback run at INIT
        self.on_root_getattr = None  # optional callback run when the root's getattr is served

    # ------------------------------------------------------------ kernel-facing state
    def init(self) -> None:
        self.initialized = True
        if self.on_init is not None:
            try:
                self.on_init()
            except Exception:
                log.exception("init callback failed")

    def _gfid(self, ino: int) -> bytes:
        node = self._inodes.get(ino)
        if node is None:
            raise FopError(errno.ESTALE, f"inode {ino} is not known")
        return node.gfid

    def _remember(self, iatt: Iatt) -> int:
        """Count one more kernel reference to the object (its entry was returned)."""
        ino = iatt.ino
        node = self._inodes.get(ino)
        if node is None:
            self._inodes[ino] = _Inode(iatt.gfid, 1)
        elif node.gfid != iatt.gfid:
            # two gfids sharing their low 64 bits: never expected with random gfids
            log.error("inode number collision: %s and %s map to %d",
                      node.gfid.hex(), bytes(iatt.gfid).hex(), ino)
            raise FopError(errno.EIO, "inode number collision")
        else:
            node.nlookup += 1
        return ino

    def forget(self, inode_list) -> None:
        try:
            for ino, n in inode_list:
                if ino == pyfuse3.ROOT_INODE:
                    continue
                node = self._inodes.get(ino)
                if node is None:
                    continue
                node.nlookup -= n
                if node.nlookup <= 0:
                    del self._inodes[ino]
                    self._nocap.pop(ino, None)
                    self._dattr.pop(ino, None)
        except Exception:  # forget must not raise
            log.exception("forget failed")

    def lookup_count(self, ino: int) -> int:
        node = self._inodes.get(ino)
        return node.nlookup if node else 0

    def _call(self, ctx: Any) -> Call:
        """The caller of a request: uid, gid, pid, supplementary groups (cached ~1 s)."""
        key = (ctx.pid, ctx.uid, ctx.gid)
        now = time.monotonic()
        hit = self._calls.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._calls) > 4096:
            self._calls.clear()
        call = Call(uid=ctx.uid, gid=ctx.gid, groups=_groups(ctx.pid), pid=ctx.pid,
                    lk_owner=ctx.pid.to_bytes(8, "little", signed=True))
        self._calls[key] = (now + 1.0, call)
        return call

    def _entry(self, iatt: Iatt, attr_timeout: float | None = None) -> pyfuse3.EntryAttributes:
        if attr_timeout is None:
            attr_timeout = self.opts.attr_timeout
            if iatt.is_dir and attr_timeout > 0:
                self._dattr[iatt.ino] = (time.monotonic() + attr_timeout, iatt)
        e = pyfuse3.EntryAttributes()
        e.st_ino = iatt.ino
        e.generation = 0
        e.entry_timeout = self.opts.entry_timeout
        e.attr_timeout = attr_timeout
        e.st_mode = iatt.mode
        e.st_nlink = iatt.nlink
        e.st_uid = iatt.uid
        e.st_gid = iatt.gid
        e.st_rdev = iatt.rdev
        e.st_size = iatt.size
        e.st_blksize = iatt.blksize
        e.st_blocks = iatt.blocks
        e.st_atime_ns = iatt.atime_ns
        e.st_mtime_ns = iatt.mtime_ns
        e.st_ctime_ns = iatt.ctime_ns
        return e

    def _dir_changed(self, ino: int, nlink: int = 0) -> None:
        """This mount changed an entry in directory `ino`: move the cached mtime/ctime to now
        (and nlink by `nlink` for a subdirectory made or removed)."""
        hit = self._dattr.get(ino)
        if hit is None:
            return
        now = time.time_ns()
        self._dattr[ino] = (hit[0], dataclasses.replace(
            hit[1], mtime_ns=now, ctime_ns=now, nlink=hit[1].nlink + nlink))

    def _new_entry(self, iatt: Iatt) -> pyfuse3.EntryAttributes:
        e = self._entry(iatt)
        self._remember(iatt)
        return e

    def _add_handle(self, fd: Fd, ino: int, call: Call) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(fd, ino, call)
        if not fd.is_dir:
            self._open.setdefault(ino, set()).add(fh)
        return fh

    def _handle(self, fh: int) -> _Handle:
        h = self._handles.get(fh)
        if h is None:
            raise FopError(errno.EBADF, f"file handle {fh} is not open")
        return h

    def _drop_handle(self, fh: int) -> _Handle | None:
        h = self._handles.pop(fh, None)
        if h is not None and not h.fd.is_dir:
            fhs = self._open.get(h.ino)
            if fhs is not None:
                fhs.discard(fh)
                if not fhs:
                    del self._open[h.ino]
        return h

    def _open_flags(self, flags: int) -> int:
        if self.opts.writeback_cache:
            # the kernel may read pages of a write-only file to fill its cache, and it keeps
            # track of the end of file itself
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
            flags &= ~os.O_APPEND
        return flags

    def _file_info(self, fh: int) -> pyfuse3.FileInfo:
        fi = pyfuse3.FileInfo(fh=fh)
        fi.direct_io = self.opts.direct_io
        fi.keep_cache = False  # other clients may have changed the file since the last open
        return fi

    # ------------------------------------------------------------ names
    @_boundary
    async def lookup(self, parent_inode, name, ctx):
        _check_name(name)
        parent = self._gfid(parent_inode)
        try:
            rep = await self.top.lookup(self._call(ctx), F.LookupReq(parent=parent, name=name))
        except FopError as e:
            if e.errno == errno.ENOENT and self.opts.negative_timeout > 0:
                neg = pyfuse3.EntryAttributes()
                neg.st_ino = 0  # a negative entry the kernel may cache
                neg.entry_timeout = self.opts.negative_timeout
                return neg
            raise
        return self._new_entry(rep.iatt)

    @_boundary
    async def getattr(self, inode, ctx):
        if inode == pyfuse3.ROOT_INODE and self.on_root_getattr is not None:
            self.on_root_getattr()
        hit = self._dattr.get(inode)
        if hit is not None:
            left = hit[0] - time.monotonic()
            if left > 0:
                return self._entry(hit[1], left)
            del self._dattr[inode]
        fhs = self._open.get(inode)
        if fhs:
            h = self._handles[next(iter(fhs))]
            rep = await self.top.fstat(self._call(ctx), F.FdReq(h.fd))
        else:
            rep = await self.top.stat(self._call(ctx), F.InodeReq(self._gfid(inode)))
        return self._entry(rep.iatt)

    @_boundary
    async def setattr(self, inode, attr, fields, fh, ctx):
        call = self._call(ctx)
        gfid = self._gfid(inode)
        h = self._handle(fh) if fh is not None else None
        iatt = None
        if fields.update_size:
            if h is not None:
                iatt = (await self.top.ftruncate(call, F.FtruncateReq(h.fd, attr.st_size))).iatt
            else:
                iatt = (await self.top.truncate(call, F.TruncateReq(gfid, attr.st_size))).iatt
        valid = 0
        if fields.update_mode:
            valid |= F.SET_MODE
        if fields.update_uid:
            valid |= F.SET_UID
        if fields.update_gid:
            valid |= F.SET_GID
        if fields.update_atime:
            valid |= F.SET_ATIME
        if fields.update_mtime:
            valid |= F.SET_MTIME
        if valid:
            kw = {"valid": valid, "mode": attr.st_mode & 0o7777, "uid": attr.st_uid,
                  "gid": attr.st_gid, "atime_ns": attr.st_atime_ns, "mtime_ns": attr.st_mtime_ns}
            if h is not None:
                iatt = (await self.top.fsetattr(call, F.FsetattrReq(h.fd, **kw))).iatt
            else:
                iatt = (await self.top.setattr(call, F.SetattrReq(gfid, **kw))).iatt
        if iatt is None:  # nothing we apply (ctime only): report the current attributes
            if h is not None:
                iatt = (await self.top.fstat(call, F.FdReq(h.fd))).iatt
            else:
                iatt = (await self.top.stat(call, F.InodeReq(gfid))).iatt
        return self._entry(iatt)

    @_boundary
    async def readlink(self, inode, ctx):
        rep = await self.top.readlink(self._call(ctx), F.InodeReq(self._gfid(inode)))
        return rep.target

    @_boundary
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        _check_name(name)
        req = F.MknodReq(self._gfid(parent_inode), name, mode, rdev, new_gfid(), ctx.umask)
        rep = await self.top.mknod(self._call(ctx), req)
        self._dir_changed(parent_inode)
        return self._new_entry(rep.iatt)

    @_boundary
    async def mkdir(self, parent_inode, name, mode, ctx):
        _check_name(name)
        req = F.MkdirReq(self._gfid(parent_inode), name, mode, new_gfid(), ctx.umask)
        rep = await self.top.mkdir(self._call(ctx), req)
        self._dir_changed(parent_inode, +1)
        return self._new_entry(rep.iatt)

    @_boundary
    async def symlink(self, parent_inode, name, target, ctx):
        _check_name(name)
        req = F.SymlinkReq(self._gfid(parent_inode), name, target, new_gfid())
        rep = await self.top.symlink(self._call(ctx), req)
        self._dir_changed(parent_inode)
        return self._new_entry(rep.iatt)

    @_boundary
    async def link(self, inode, new_parent_inode, new_name, ctx):
        _check_name(new_name)
        req = F.LinkReq(self._gfid(inode), self._gfid(new_parent_inode), new_name)
        rep = await self.top.link(self._call(ctx), req)
        self._dir_changed(new_parent_inode)
        return self._new_entry(rep.iatt)

    @_boundary
    async def unlink(self, parent_inode, name, ctx):
        _check_name(name)
        await self.top.unlink(self._call(ctx), F.EntryReq(self._gfid(parent_inode), name))
        self._dir_changed(parent_inode)

    @_boundary
    async def rmdir(self, parent_inode, name, ctx):
        _check_name(name)
        await self.top.rmdir(self._call(ctx), F.EntryReq(self._gfid(parent_inode), name))
        self._dir_changed(parent_inode, -1)

    @_boundary
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        _check_name(name_old)
        _check_name(name_new)
        req = F.RenameReq(self._gfid(parent_inode_old), name_old,
                          self._gfid(parent_inode_new), name_new, flags)
        await self.top.rename(self._call(ctx), req)
        # a directory moved or replaced changes link counts we cannot see from here: ask again
        self._dattr.pop(parent_inode_old, None)
        self._dattr.pop(parent_inode_new, None)

    # ------------------------------------------------------------ files
    @_boundary
    async def open(self, inode, flags, ctx):
        call = self._call(ctx)
        rep = await self.top.open(call, F.OpenReq(self._gfid(inode), self._open_flags(flags)))
        return self._file_info(self._add_handle(rep.fd, inode, call))

    @_boundary
    async def create(self, parent_inode, name, mode, flags, ctx):
        _check_name(name)
        call = self._call(ctx)
        req = F.CreateReq(self._gfid(parent_inode), name, self._open_flags(flags), mode,
                          new_gfid(), ctx.umask)
        rep = await self.top.create(call, req)
        self._dir_changed(parent_inode)
        entry = self._new_entry(rep.iatt)
        self._no_caps(rep.iatt.ino)
        return self._file_info(self._add_handle(rep.fd, rep.iatt.ino, call)), entry

    @_boundary
    async def read(self, fh, off, size):
        h = self._handle(fh)
        return (await self.top.read(h.call, F.ReadReq(h.fd, off, size))).data

    @_boundary
    async def write(self, fh, off, buf):
        h = self._handle(fh)
        return (await self.top.write(h.call, F.WriteReq(h.fd, off, buf))).size

    @_boundary
    async def flush(self, fh):
        h = self._handle(fh)
        await self.top.flush(h.call, F.FdReq(h.fd))

    @_boundary
    async def fsync(self, fh, datasync):
        h = self._handle(fh)
        await self.top.fsync(h.call, F.FsyncReq(h.fd, bool(datasync)))

    @_boundary
    async def release(self, fh):
        h = self._drop_handle(fh)
        if h is not None:
            await self.top.release(h.call, F.FdReq(h.fd))

    # ------------------------------------------------------------ directories
    @_boundary
    async def opendir(self, inode, ctx):
        call = self._call(ctx)
        rep = await self.top.opendir(call, F.InodeReq(self._gfid(inode)))
        return self._add_handle(rep.fd, inode, call)

    async def _fill(self, h: _Handle, offset: int) -> None:
        rep = await self.top.readdir(
            h.call, F.ReaddirReq(h.fd, offset, self.opts.readdir_size, plus=True))
        h.entries = rep.entries
        h.after = {e.off: i + 1 for i, e in enumerate(rep.entries)}
        h.after[offset] = 0
        h.eof = rep.eof or not rep.entries

    @_boundary
    async def readdir(self, fh, start_id, token):
        h = self._handle(fh)
        i = h.after.get(start_id) if start_id else None
        if i is None:  # a fresh listing (start_id 0 re-reads), or a cookie from an older batch
            await self._fill(h, start_id)
            i = 0
        while True:
            if i >= len(h.entries):
                if h.eof:
                    return
                await self._fill(h, h.entries[-1].off)
                i = 0
                continue
            e = h.entries[i]
            if e.name in _DOTS:
                # may be listed, but the kernel does not link them: no lookup count
                attr = self._dot_attr(h, e)
                if not pyfuse3.readdir_reply(token, e.name, attr, e.off):
                    return
                i += 1
                continue
            iatt = e.iatt
            if iatt is None:  # readdirplus could not stat it: look it up, skip it if gone
                try:
                    iatt = (await self.top.lookup(
                        h.call, F.LookupReq(parent=h.fd.gfid, name=e.name))).iatt
                except FopError as err:
                    if err.errno not in (errno.ENOENT, errno.ESTALE):
                        raise
                    i += 1
                    continue
            if not pyfuse3.readdir_reply(token, e.name, self._entry(iatt), e.off):
                return
            self._remember(iatt)
            i += 1

    def _dot_attr(self, h: _Handle, e: Dirent) -> pyfuse3.EntryAttributes:
        # "." is this directory; ".." of the root would be the brick's own parent: show root
        if e.iatt is not None and not (e.name == b".." and h.ino == pyfuse3.ROOT_INODE):
            a = self._entry(e.iatt)
        else:
            a = pyfuse3.EntryAttributes()
            a.st_mode = stat.S_IFDIR | 0o755
            a.st_ino = h.ino
        if e.name == b".":
            a.st_ino = h.ino
        return a

    @_boundary
    async def releasedir(self, fh):
        h = self._drop_handle(fh)
        if h is not None:
            await self.top.releasedir(h.call, F.FdReq(h.fd))

    @_boundary
    async def fsyncdir(self, fh, datasync):
        h = self._handle(fh)
        await self.top.fsyncdir(h.call, F.FsyncReq(h.fd, bool(datasync)))

    # ------------------------------------------------------------ filesystem
    @_boundary
    async def statfs(self, ctx):
        s = (await self.top.statfs(self._call(ctx), F.InodeReq(ROOT_GFID))).statvfs
        st = pyfuse3.StatvfsData()
        st.f_bsize = s.bsize
        st.f_frsize = s.frsize
        st.f_blocks = s.blocks
        st.f_bfree = s.bfree
        st.f_bavail = s.bavail
        st.f_files = s.files
        st.f_ffree = s.ffree
        st.f_favail = s.favail
        st.f_namemax = min(s.namemax, NAME_MAX) if s.namemax else NAME_MAX
        return st

    @_boundary
    async def access(self, inode, mode, ctx):
        await self.top.access(self._call(ctx), F.AccessReq(self._gfid(inode), mode))
        return True

    # ------------------------------------------------------------ xattrs
    def _xattr_name(self, name: bytes, internal_errno: int) -> str:
        if name.startswith(_XATTR_INTERNAL):
            raise FopError(internal_errno, "internal xattr")
        if name == _SELINUX and not self.opts.selinux:
            raise FopError(errno.EOPNOTSUPP, "selinux labels are not enabled on this mount")
        if name in _POSIX_ACL and not self.opts.acl:
            raise FopError(errno.EOPNOTSUPP, "POSIX ACLs are not enabled on this mount")
        return os.fsdecode(name)

    def _no_caps(self, ino: int) -> None:
        """`ino` has no security.capability (for one attribute timeout)."""
        if self.opts.attr_timeout > 0:
            if len(self._nocap) >= _NOCAP_MAX:
                self._nocap.clear()
            self._nocap[ino] = time.monotonic() + self.opts.attr_timeout

    @_boundary
    async def setxattr(self, inode, name, value, ctx):
        req = F.SetxattrReq(self._gfid(inode), self._xattr_name(name, errno.EPERM), value)
        try:
            await self.top.setxattr(self._call(ctx), req)
        finally:
            if name == _CAPS:
                self._nocap.pop(inode, None)

    @_boundary
    async def getxattr(self, inode, name, ctx):
        if name == _CAPS:
            until = self._nocap.get(inode)
            if until is not None:
                if until > time.monotonic():
                    raise FopError(errno.ENODATA, "no security.capability (cached)")
                del self._nocap[inode]
        req = F.GetxattrReq(self._gfid(inode), self._xattr_name(name, errno.ENODATA))
        try:
            return (await self.top.getxattr(self._call(ctx), req)).value
        except FopError as e:
            if e.errno == errno.ENODATA and name == _CAPS:
                self._no_caps(inode)
            raise

    @_boundary
    async def listxattr(self, inode, ctx):
        rep = await self.top.listxattr(self._call(ctx), F.InodeReq(self._gfid(inode)))
        return [n for n in map(os.fsencode, rep.names) if not n.startswith(_XATTR_INTERNAL)]

    @_boundary
    async def removexattr(self, inode, name, ctx):
        req = F.RemovexattrReq(self._gfid(inode), self._xattr_name(name, errno.EPERM))
        try:
            await self.top.removexattr(self._call(ctx), req)
        finally:
            if name == _CAPS:
                self._nocap.pop(inode, None)


def _groups(pid: int) -> tuple[int, ...]:
    """Supplementary groups of a process, from /proc/<pid>/status; () if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    return tuple(int(x) for x in line.split()[1:])
    except OSError:
        pass
    return ()
