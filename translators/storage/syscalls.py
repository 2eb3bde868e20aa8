"""ctypes shims for the Linux calls Python's os module lacks, as storage/posix uses them:
renameat2 (RENAME_NOREPLACE / RENAME_EXCHANGE), fallocate (hole punching, zeroing), utimensat /
futimens with UTIME_NOW and UTIME_OMIT, and openat2(RESOLVE_CACHED) to learn without blocking
whether a path resolves from the dentry cache alone."""
from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2

_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint)
    _renameat2.restype = ctypes.c_int

_fallocate = _libc.fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_fallocate.restype = ctypes.c_int


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_Times = _Timespec * 2
_utimensat = _libc.utimensat
_utimensat.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int)
_utimensat.restype = ctypes.c_int
_futimens = _libc.futimens
_futimens.argtypes = (ctypes.c_int, ctypes.POINTER(_Timespec))
_futimens.restype = ctypes.c_int


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_SYS_openat2 = 437  # the same number on every Linux architecture
_RESOLVE_CACHED = 0x20  # fail with EAGAIN rather than read the disk to resolve a path
_PROBE_HOW = _OpenHow(os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, 0, _RESOLVE_CACHED)
_PROBE_REF = ctypes.byref(_PROBE_HOW)
_PROBE_SIZE = ctypes.sizeof(_PROBE_HOW)


class WouldBlock(Exception):
    """probe_cached needs the disk: the caller redoes its work in a worker thread."""


WOULD_BLOCK = WouldBlock()


def probe_cached(dfd: int, rel: bytes) -> int:
    """O_PATH fd of `rel` under `dfd` if every component is in the dentry cache; a cached
    negative entry raises ENOENT; anything that needs the disk raises WouldBlock."""
    fd = _syscall(_SYS_openat2, dfd, rel, _PROBE_REF, _PROBE_SIZE)
    if fd >= 0:
        return fd
    e = ctypes.get_errno()
    if e == errno.EAGAIN:
        raise WOULD_BLOCK
    raise OSError(e, os.strerror(e))


def _oserror(what: Any = None) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, os.strerror(e), what)


def renameat2(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int) -> None:
    if flags == 0:
        os.rename(old, new, src_dir_fd=olddirfd, dst_dir_fd=newdirfd)
        return
    if _renameat2 is None:
        raise OSError(errno.EINVAL, "rename flags need renameat2, which this libc lacks")
    if _renameat2(olddirfd, old, newdirfd, new, flags) != 0:
        raise _oserror(new)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _fallocate(fd, mode, offset, length) != 0:
        raise _oserror()


def set_times(fd: int, path: bytes | None, atime: int | None, mtime: int | None,
               anow: bool, mnow: bool) -> None:
    """utimensat with UTIME_NOW/UTIME_OMIT (os.utime cannot leave one of the two alone)."""
    t = _Times()
    for i, (ns, now) in enumerate(((atime, anow), (mtime, mnow))):
        if now:
            t[i].tv_sec, t[i].tv_nsec = 0, _UTIME_NOW
        elif ns is None:
            t[i].tv_sec, t[i].tv_nsec = 0, _UTIME_OMIT
        else:
            t[i].tv_sec, t[i].tv_nsec = divmod(ns, 1_000_000_000)
    if path is None:
        rc = _futimens(fd, t)
    else:
        rc = _utimensat(_AT_FDCWD, path, t, _AT_SYMLINK_NOFOLLOW)
    if rc != 0:
        raise _oserror(path)
