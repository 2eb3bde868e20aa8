"""Brick processes as gvold sees them: spawning `gvol-brickd`, finding running ones after a
gvold restart (pidfile + /proc/<pid>/cmdline), liveness, port checks, stopping.

Synchronous helpers only (each call is a few syscalls); the daemon drives them from trio.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BASE_PORT = 49152
MAX_PORT = 60999
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the directory holding volmgr/, brickd/


@dataclass
class BrickProc:
    """What gvold knows about the process serving one local brick."""

    vol: str
    host: str
    path: str
    volfile: Path
    pidfile: Path
    logfile: Path
    pid: int | None = None
    popen: subprocess.Popen | None = None  # None for a brick adopted after a gvold restart
    exit_code: int | None = None
    restarts: list[float] = field(default_factory=list)  # times of supervisor restarts

    @property
    def name(self) -> str:
        return f"{self.host}:{self.path}"

    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self.popen is not None:
            rc = self.popen.poll()  # reaps our own child
            if rc is None:
                return True
            self.exit_code = rc
            return False
        return is_brick_process(self.pid, self.volfile)

    def forget(self) -> None:
        self.pid = None
        self.popen = None


# ---------------------------------------------------------------- /proc
def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # the state follows the parenthesised command name, which may contain spaces
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


def is_brick_process(pid: int, volfile: Path) -> bool:
    """True if `pid` is a live gvol-brickd serving `volfile` (guards against pid reuse)."""
    args = _cmdline(pid)
    if not args or _is_zombie(pid):
        return False
    if not any("brickd" in a for a in args):
        return False
    vf = str(volfile)
    for i, a in enumerate(args):
        if a == "--volfile" and i + 1 < len(args) and args[i + 1] == vf:
            return True
        if a == f"--volfile={vf}":
            return True
    return False


def find_brick_pid(pidfile: Path, volfile: Path) -> int | None:
    """The pid of a running brickd serving `volfile`: from its pidfile, else by scanning /proc."""
    try:
        pid = int(pidfile.read_text().split()[0])
        if is_brick_process(pid, volfile):
            return pid
    except (OSError, ValueError, IndexError):
        pass
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for e in entries:
        if e.isdigit() and int(e) != os.getpid() and is_brick_process(int(e), volfile):
            return int(e)
    return None


# ---------------------------------------------------------------- ports
def _proc_listening_ports() -> set[int] | None:
    ports: set[int] = set()
    found = False
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(f).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A":  # TCP_LISTEN
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept TCP connections on `port`? Read from /proc/net/tcp (no connection
    that the brick would have to log), else by connecting."""
    ports = _proc_listening_ports()
    if ports is not None:
        return port in ports
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    """Could a brick listen on `port`? (bind with SO_REUSEADDR, as the brick's listener does,
    so connections of a dead brick in TIME_WAIT do not count)."""
    listening = _proc_listening_ports()
    if listening is not None and port in listening:
        return False
    for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(fam, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def allocate_ports(n: int, taken: set[int], base: int = BASE_PORT) -> list[int]:
    """`n` ports from `base` upwards, skipping `taken` and ports in use."""
    out: list[int] = []
    p = base
    while len(out) < n:
        if p > MAX_PORT:
            raise OSError(f"no free brick port left in {base}..{MAX_PORT}")
        if p not in taken and port_free(p):
            out.append(p)
        p += 1
    return out


# ---------------------------------------------------------------- processes
def brick_command(volfile: Path, pidfile: Path) -> list[str]:
    # `python -m brickd.main` works with or without the console scripts on PATH
    return [sys.executable, "-m", "brickd.main", "--volfile", str(volfile),
            "--pidfile", str(pidfile)]


def brick_env() -> dict[str, str]:
    env = dict(os.environ)
    if (SOURCE_ROOT / "brickd").is_dir():
        pp = env.get("PYTHONPATH", "")
        parts = [p for p in pp.split(os.pathsep) if p]
        if str(SOURCE_ROOT) not in parts:
            env["PYTHONPATH"] = os.pathsep.join([str(SOURCE_ROOT), *parts])
    env.pop("NOTIFY_SOCKET", None)  # systemd's readiness socket is gvold's, not the brick's
    return env


def spawn(bp: BrickProc) -> int:
    """Start the brick process in its own session (it survives gvold); returns the log offset
    where its output starts."""
    bp.pidfile.parent.mkdir(parents=True, exist_ok=True)
    bp.logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(bp.logfile, "ab") as logf:
        logf.write(f"--- gvold: starting brick {bp.name} of volume {bp.vol} at "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        logf.flush()
        offset = logf.tell()
        bp.popen = subprocess.Popen(
            brick_command(bp.volfile, bp.pidfile), stdin=subprocess.DEVNULL, stdout=logf,
            stderr=logf, cwd="/", env=brick_env(), start_new_session=True, close_fds=True)
    bp.pid = bp.popen.pid
    bp.exit_code = None
    return offset


def log_tail(logfile: Path, offset: int = 0, lines: int = 8) -> str:
    try:
        with open(logfile, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            start = max(offset, end - 4096)
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail)


def signal_brick(bp: BrickProc, sig: int) -> None:
    if bp.pid is None or not bp.alive():
        return
    try:
        os.killpg(bp.pid, sig)  # the brick leads its own session and process group
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(bp.pid, sig)
        except ProcessLookupError:
            pass


def signal_name(rc: int | None) -> str:
    if rc is None:
        return "unknown"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"
