"""Real FUSE mounts for tests: start `mount.gvol` in a subprocess, wait for the mount, and always
clean up (fusermount3 -u, then lazy -uz, then kill the client).

    from fusehelp import GvolMount, fuse_available, client_volfile

    with GvolMount(mnt, volfile=path) as m:           # or source="host:/vol"
        ...  # use mnt from this (test) process: the client serves it from another process
    m.stderr()                                         # the client's log/stderr, for messages

or the `gvol_mount` fixture (a factory): `m = gvol_mount(mnt, volfile=path, options="...")`,
unmounted at teardown even when the test fails. Import it into a test module
(`from fusehelp import gvol_mount  # noqa: F401`) or a conftest.py to use it.

The mount process never runs in the test's own process: a blocking syscall on the mountpoint
from the loop that must answer it would deadlock (STYLE.md point 11).
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def fuse_available() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


def _unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mount_entry(path: str | os.PathLike) -> tuple[str, str] | None:
    """(fstype, source) of the mount at `path`, from /proc/self/mountinfo, or None."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == path:
                sep = fields.index("-")
                return fields[sep + 1], _unescape(fields[sep + 2])
    return None


def is_mounted(path: str | os.PathLike) -> bool:
    return mount_entry(path) is not None


def unmount(path: str | os.PathLike, proc: subprocess.Popen | None = None,
            timeout: float = 10.0) -> None:
    """fusermount3 -u, then lazy fusermount3 -uz, then kill the client; never raises."""
    path = os.fspath(path)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", path], capture_output=True, timeout=30)
        if is_mounted(path):
            subprocess.run(["fusermount3", "-uz", path], capture_output=True, timeout=30)
    if proc is not None and proc.poll() is None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if is_mounted(path):  # a mount the client was still holding
        subprocess.run(["fusermount3", "-uz", path], capture_output=True, timeout=30)


TEST_VOLUME_ID = "00000000-0000-0000-0000-0000000000aa"


def prepare_brick(brick: str | os.PathLike, volume_id: str = TEST_VOLUME_ID) -> None:
    """Make `brick` a brick directory of `volume_id` (storage/posix's prepare_brick)."""
    from translators.storage.brickdir import prepare_brick as prep

    os.makedirs(brick, exist_ok=True)
    prep(os.fspath(brick), volume_id)


def client_volfile(brick: str | os.PathLike, volname: str = "testvol",
                   volume_id: str = TEST_VOLUME_ID,
                   posix_options: dict[str, str] | None = None) -> str:
    """A local client graph: debug/io-stats -> storage/posix on `brick` directly (the brick must
    have been prepared with the same volume id, see prepare_brick)."""
    opts = {"directory": os.fspath(brick), "volume-id": volume_id, **(posix_options or {})}
    lines = [f"volume {volname}-posix", "    type storage/posix"]
    lines += [f"    option {k} {v}" for k, v in opts.items()]
    lines += ["end-volume", "", f"volume {volname}", "    type debug/io-stats",
              f"    subvolumes {volname}-posix", "end-volume", ""]
    return "\n".join(lines)


def mount_command() -> list[str]:
    """How to run mount.gvol from this checkout (the console script may not be installed)."""
    return [sys.executable, "-m", "fuse.mount"]


def mount_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


class GvolMount:
    """One `mount.gvol --foreground` client process serving `mountpoint`."""

    def __init__(self, mountpoint: str | os.PathLike, *, volfile: str | os.PathLike | None = None,
                 source: str | None = None, options: str = "", timeout: float = 30.0,
                 extra_args: list[str] | None = None) -> None:
        if (volfile is None) == (source is None):
            raise ValueError("give exactly one of volfile= or source=")
        self.mountpoint = os.path.realpath(mountpoint)
        self.volfile = volfile
        self.source = source
        self.options = options
        self.timeout = timeout
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self._err = tempfile.TemporaryFile()

    def argv(self) -> list[str]:
        argv = mount_command()
        if self.volfile is not None:
            argv += ["--volfile", os.fspath(self.volfile), self.mountpoint]
        else:
            argv += [self.source, self.mountpoint]
        if self.options:
            argv += ["-o", self.options]
        return argv + ["--foreground"] + self.extra_args

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode("utf-8", "replace")

    def start(self) -> GvolMount:
        # the client reports "OK" or "E <error>" on this pipe once the kernel started the mount
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(self.argv() + ["--ready-fd", str(w)],
                                         stdin=subprocess.DEVNULL, stdout=self._err,
                                         stderr=self._err, env=mount_env(), cwd="/",
                                         pass_fds=(w,))
        finally:
            os.close(w)
        deadline = time.monotonic() + self.timeout
        got = b""
        try:
            while True:
                if b"\n" in got:
                    line = got.split(b"\n")[-2].decode()
                    if line == "OK" and is_mounted(self.mountpoint):
                        return self
                    if line.startswith("E "):
                        self.stop()
                        raise RuntimeError(f"mount.gvol failed: {line[2:]}\n{self.stderr()}")
                rc = self.proc.poll()
                if rc is not None:
                    self.stop()
                    raise RuntimeError(f"mount.gvol exited with {rc} before mounting "
                                       f"{self.mountpoint}:\n{self.stderr()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mount.gvol did not mount {self.mountpoint} within "
                                       f"{self.timeout} s:\n{self.stderr()}")
                if select.select([r], [], [], 0.05)[0]:
                    chunk = os.read(r, 4096)
                    got += chunk
                    if not chunk and b"\n" not in got:
                        time.sleep(0.05)
        finally:
            os.close(r)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Kill the client (the mount stays behind, dead, until stop() cleans it)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(30)

    def stop(self) -> int | None:
        """Unmount (gently, then lazily) and make sure the client is gone."""
        unmount(self.mountpoint, self.proc)
        return None if self.proc is None else self.proc.returncode

    def __enter__(self) -> GvolMount:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def gvol_mount():
    """Factory fixture: `gvol_mount(mountpoint, volfile=... | source=..., options=...)`
    starts a mount; every mount it started is cleaned up at teardown."""
    if not fuse_available():
        pytest.skip("needs /dev/fuse and fusermount3")
    mounts: list[GvolMount] = []

    def start(mountpoint, **kw) -> GvolMount:
        m = GvolMount(mountpoint, **kw)
        mounts.append(m)
        return m.start()

    yield start
    for m in reversed(mounts):
        m.stop()
