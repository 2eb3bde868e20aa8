"""End-to-end harness: a real gvold with real bricks and real FUSE mounts, all cleaned up.

Used by the tests/test_e2e_*.py files:

    with GvolNode(tmp_path) as node:
        node.create_volume("v", bricks=2)          # gvol volume create + start
        with node.mount("v") as mnt:               # gvol mount; always unmounted afterwards
            ...
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV_BASE = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def is_mounted(path: Path | str) -> bool:
    p = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == p for line in f)


def unmount(path: Path | str) -> None:
    """fusermount3 -u, then lazy, then give up loudly."""
    for args in (["fusermount3", "-u"], ["fusermount3", "-u", "-z"], ["umount", "-l"]):
        if not is_mounted(path):
            return
        subprocess.run([*args, str(path)], capture_output=True, timeout=30)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not is_mounted(path), 5, f"unmount of {path}")
    if is_mounted(path):
        raise RuntimeError(f"could not unmount {path}")


def pids_of(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class CliError(AssertionError):
    pass


class GvolNode:
    """One gvold with a private state dir and port, and everything it starts."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.state = self.base / "state"
        self.logs = self.base / "logs"
        self.bricks = self.base / "bricks"
        self.port = free_port()
        self.env = {**ENV_BASE, "GVOL_STATE_DIR": str(self.state), "GVOL_PORT": str(self.port)}
        self.proc: subprocess.Popen | None = None
        self.mounts: list[Path] = []
        self.brick_pids: set[int] = set()
        self.tmp_mounts: list[Path] = []

    # ------------------------------------------------------------ gvold
    def start(self) -> GvolNode:
        for d in (self.state, self.logs, self.bricks):
            d.mkdir(parents=True, exist_ok=True)
        self.gvold_log = open(self.logs / "gvold.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "volmgr.daemon", "--state-dir", str(self.state),
             "--port", str(self.port), "--listen", "127.0.0.1", "--log-dir", str(self.logs),
             "--foreground"],
            env=self.env, stdout=self.gvold_log, stderr=subprocess.STDOUT, cwd=REPO)
        sock = self.state / "gvold.sock"

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gvold exited with {self.proc.returncode}:\n{self.log_tail()}")
            return sock.exists()

        wait_for(up, 30, "gvold socket")
        return self

    def log_tail(self, name: str = "gvold.log", n: int = 4000) -> str:
        p = self.logs / name
        return p.read_bytes()[-n:].decode(errors="replace") if p.exists() else ""

    def stop_gvold(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> GvolNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        errors = []
        for m in reversed(self.mounts):
            try:
                unmount(m)
            except Exception as e:  # keep cleaning up the rest
                errors.append(e)
        # mount clients of this node's mountpoints that survived the unmount
        for m in self.mounts:
            for pid in pids_of(f"fuse.mount.*{m}"):
                kill_pid(pid)
        with contextlib.suppress(Exception):
            self.collect_brick_pids()
        self.stop_gvold()
        for pid in self.brick_pids | set(self._pidfile_pids()):
            kill_pid(pid, signal.SIGKILL)
        for m in self.tmp_mounts:
            with contextlib.suppress(OSError):
                m.rmdir()
        if errors:
            raise errors[0]

    def _pidfile_pids(self) -> list[int]:
        out = []
        for p in self.state.rglob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                out.append(int(p.read_text().split()[0]))
        return out

    # ------------------------------------------------------------ CLI
    def cli(self, *args: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "volmgr.cli", *args], env=self.env, cwd=REPO,
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise CliError(f"gvol {' '.join(args)} exited {r.returncode}\nstdout: {r.stdout}\n"
                           f"stderr: {r.stderr}\ngvold log:\n{self.log_tail()}")
        return r

    def cli_json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def brick_dir(self, vol: str, i: int) -> Path:
        return self.bricks / f"{vol}-b{i}"

    def create_volume(self, vol: str, bricks: int = 2, start: bool = True,
                      options: dict[str, str] | None = None, replica: int = 1,
                      arbiter: int = 0) -> list[Path]:
        """gvol volume create [replica N [arbiter 1]] BRICKS... force, the options, start."""
        dirs = []
        for i in range(bricks):
            d = self.brick_dir(vol, i)
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
        layout = [] if replica <= 1 else ["replica", str(replica)]
        if arbiter:
            layout += ["arbiter", str(arbiter)]
        self.cli("volume", "create", vol, *layout, *[f"127.0.0.1:{d}" for d in dirs], "force")
        for k, v in (options or {}).items():
            self.cli("volume", "set", vol, k, v)
        if start:
            self.cli("volume", "start", vol)
            self.collect_brick_pids()
        return dirs

    def status(self, vol: str) -> list[dict]:
        st = self.cli_json("volume", "status", vol)
        return st["bricks"] if isinstance(st, dict) else st

    def collect_brick_pids(self) -> None:
        for vol in self.cli_json("volume", "list"):
            name = vol if isinstance(vol, str) else vol.get("name")
            with contextlib.suppress(Exception):
                for b in self.status(name):
                    if b.get("pid"):
                        self.brick_pids.add(int(b["pid"]))

    def brick_pid(self, vol: str, path: Path | str) -> int | None:
        b = next(b for b in self.status(vol) if b["path"] == str(path))
        return int(b["pid"]) if b.get("pid") and b.get("online") else None

    def kill_brick(self, vol: str, path: Path | str) -> int:
        """SIGKILL one brick (pid from `volume status --json`); returns once status says it is
        offline. Use `brick.auto-restart off` where it must stay down."""
        pid = self.brick_pid(vol, path)
        assert pid, f"brick {path} of {vol} is not online"
        kill_pid(pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or
                 Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", 30,
                 f"brick pid {pid} to die")
        wait_for(lambda: not next(b for b in self.status(vol)
                                  if b["path"] == str(path))["online"] or
                 self.brick_pid(vol, path) != pid, 30, f"brick {path} to show offline")
        return pid

    def start_force(self, vol: str) -> None:
        """`gvol volume start VOL force`, then wait until every brick is online."""
        self.cli("volume", "start", vol, "force")
        wait_for(lambda: all(b["online"] for b in self.status(vol)), 60,
                 f"every brick of {vol} online")
        self.collect_brick_pids()

    # ------------------------------------------------------------ mounts
    @contextlib.contextmanager
    def mount(self, vol: str, where: Path | None = None, *opts: str):
        if where is None:
            # outside pytest's 0700 tmp dirs, so that tests can act as a non-root user
            where = Path(tempfile.mkdtemp(prefix=f"gvol-mnt-{vol}-", dir="/tmp"))
            where.chmod(0o755)
            self.tmp_mounts.append(where)
        mnt = Path(where)
        mnt.mkdir(parents=True, exist_ok=True)
        self.mounts.append(mnt)
        args = ["mount", vol, str(mnt)]
        if opts:
            args += ["-o", ",".join(opts)]
        try:
            self.cli(*args, timeout=60)
            wait_for(lambda: is_mounted(mnt), 10, f"mount at {mnt}")
            yield mnt
        finally:
            unmount(mnt)
            for pid in pids_of(f"fuse.mount.*{mnt}"):
                kill_pid(pid)
