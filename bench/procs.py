"""Process, mount and command helpers for the bench: every step bounded in time."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

T0 = time.monotonic()


class BenchError(Exception):
    """A step failed; the message says which and why."""


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    input: str | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command in a child process with a timeout; raise BenchError on failure."""
    if not quiet:
        log("$ " + shlex.join(cmd))
    try:
        cp = subprocess.run(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL if input is None else None,
            input=input,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            start_new_session=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        msg = f"timed out after {timeout:.0f}s: {shlex.join(cmd)}\n{out[-2000:]}"
        raise BenchError(msg) from None
    except FileNotFoundError as e:
        raise BenchError(f"cannot run {cmd[0]}: {e}") from None
    if check and cp.returncode != 0:
        raise BenchError(
            f"exit {cp.returncode}: {shlex.join(cmd)}\n{(cp.stdout or '').strip()[-2000:]}"
        )
    return cp


def mounted_paths() -> set[str]:
    """Mountpoints from /proc/self/mountinfo (never touches a FUSE mount itself)."""
    out = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4:
                out.add(parts[4].encode().decode("unicode_escape"))
    return out


def is_mounted(path: str) -> bool:
    return os.path.realpath(path) in mounted_paths()


def wait_until(pred, *, timeout: float, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pids_matching(needles: Iterable[str], *, comm: str | None = None) -> list[int]:
    """Pids (not ours) whose command line contains every needle (and whose comm is `comm`)."""
    needles = [n.encode() for n in needles]
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
            if comm is not None:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != comm:
                        continue
        except OSError:
            continue
        if cmdline and all(n in cmdline for n in needles):
            found.append(int(entry))
    return found


def wait_gone(pids: Iterable[int], timeout: float) -> None:
    """Give processes up to `timeout` seconds to exit by themselves."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)


def kill_pids(pids: Iterable[int], *, grace: float = 10.0, what: str = "process") -> None:
    """SIGTERM each pid, wait up to `grace` seconds, then SIGKILL the ones still alive."""
    pids = [p for p in pids if pid_alive(p)]
    if not pids:
        return
    log(f"stopping {what} {' '.join(map(str, pids))}")
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    for p in pids:
        if pid_alive(p):
            log(f"{what} {p} ignored SIGTERM; SIGKILL")
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop_popen(
    proc: subprocess.Popen | None, *, grace: float = 10.0, what: str = "process"
) -> None:
    """Terminate a child we started (and its process group, it was started in a new session)."""
    if proc is None or proc.poll() is not None:
        return
    log(f"stopping {what} (pid {proc.pid})")
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"{what} ignored SIGTERM; SIGKILL to its process group")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def unmount(path: str, *, fuse: bool = True) -> None:
    """Unmount, escalating: fusermount3 -u / umount, then a lazy unmount."""
    if not is_mounted(path):
        return
    attempts: list[list[str]] = []
    if fuse:
        attempts.append(["fusermount3", "-u", path])
    attempts.append(["umount", path])
    attempts.append(["umount", "-l", path])
    if fuse:
        attempts.append(["fusermount3", "-uz", path])
    for cmd in attempts:
        try:
            run(cmd, timeout=60, check=False)
        except BenchError as e:
            log(str(e))
        if not is_mounted(path):
            return
        time.sleep(0.5)
    log(f"WARNING: {path} is still mounted")


def drop_caches() -> bool:
    """sync, then drop the page, dentry and inode caches (in a child, bounded)."""
    try:
        run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], timeout=300, quiet=True)
        return True
    except BenchError as e:
        log(f"WARNING: could not drop caches: {e}")
        return False


def tail(path: str, n: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""
