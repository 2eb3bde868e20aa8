"""The two systems under test: a GlusterFS 10.3 and a gvol distributed volume of two bricks.

Each has setup() (start the daemon, create and start the volume, mount it), remount(), and
teardown(), which is safe to call at any point, more than once, and after a failed setup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from procs import (
    BenchError,
    free_port,
    is_mounted,
    kill_pids,
    log,
    pid_alive,
    pids_matching,
    run,
    stop_popen,
    tail,
    tcp_open,
    unmount,
    wait_gone,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


LAYOUTS = ("distribute", "replica3")


def brick_dirs(root: str, layout: str) -> list[str]:
    """Two bricks for a plain distributed volume, three for replica 3."""
    n = 3 if layout == "replica3" else 2
    return [os.path.join(root, f"b{i + 1}") for i in range(n)]


def layout_args(layout: str) -> list[str]:
    return ["replica", "3"] if layout == "replica3" else []


class System:
    key = ""  # "gluster" | "gvol"
    title = ""
    mnt = ""

    def setup(self) -> None: ...
    def remount(self) -> None: ...
    def teardown(self) -> None: ...
    def info(self) -> dict:
        return {}
    def logs(self) -> str:
        return ""


# --------------------------------------------------------------------------------------------
# GlusterFS


def _proc_running(comm: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == comm:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == ppid and fields[0] != "Z":
                out.append(int(entry))
    return out


class Gluster(System):
    key = "gluster"
    title = "GlusterFS"
    VOL = "benchgl"

    def __init__(self, root: str, host: str, layout: str = "distribute"):
        self.root = os.path.join(root, "gluster")
        self.host = host
        self.layout = layout
        self.bricks = brick_dirs(self.root, layout)
        self.mnt = os.path.join(self.root, "mnt")
        self.pidfile = os.path.join(self.root, "glusterd.pid")
        self.started_glusterd: list[int] = []
        self.created = False
        self.version = ""

    def gluster(self, *args: str, timeout: float = 120, check: bool = True):
        return run(["gluster", "--mode=script", *args], timeout=timeout, check=check)

    def install(self) -> None:
        progs = ("gluster", "glusterd", "glusterfsd", "glusterfs")
        need = [b for b in progs if not shutil.which(b)]
        if not need and os.path.exists("/sbin/mount.glusterfs"):
            return
        log("GlusterFS is not installed; installing glusterfs-server and glusterfs-client")
        pkgs = ["glusterfs-server", "glusterfs-client"]
        cp = run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs],
                 timeout=900, check=False, env=APT_ENV)
        if cp.returncode != 0:
            run(["apt-get", "update"], timeout=600, env=APT_ENV)
            run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs],
                timeout=900, env=APT_ENV)

    def setup(self) -> None:
        for b in self.bricks:
            os.makedirs(b, exist_ok=True)
        os.makedirs(self.mnt, exist_ok=True)
        before = set(_proc_running("glusterd"))
        self.install()
        self.version = run(["gluster", "--version"], timeout=30, quiet=True).stdout.splitlines()[0]
        log(f"{self.version}")
        running = set(_proc_running("glusterd"))
        # a glusterd that the package's postinst started during our install is ours to stop too
        self.started_glusterd = sorted(running - before)
        if not running:
            run(["glusterd", f"--pid-file={self.pidfile}"], timeout=60)
            wait_until(lambda: bool(_proc_running("glusterd")), timeout=30, what="glusterd")
            self.started_glusterd = _proc_running("glusterd")
        elif before:
            log(f"reusing the running glusterd {sorted(before)} (it will be left running)")
        wait_until(
            lambda: self.gluster("volume", "list", timeout=20, check=False).returncode == 0,
            timeout=60, interval=1.0, what="glusterd to answer the CLI",
        )
        if self.gluster("volume", "info", self.VOL, check=False).returncode == 0:
            log(f"a volume {self.VOL} is left from an earlier run; removing it")
            self.gluster("volume", "stop", self.VOL, "force", check=False)
            self.gluster("volume", "delete", self.VOL, check=False)
        self.gluster("volume", "create", self.VOL, *layout_args(self.layout),
                     *[f"{self.host}:{b}" for b in self.bricks], "force")
        self.created = True
        self.gluster("volume", "start", self.VOL)
        self.mount()

    def mount(self) -> None:
        run(["mount", "-t", "glusterfs", f"{self.host}:/{self.VOL}", self.mnt], timeout=120)
        wait_until(lambda: is_mounted(self.mnt), timeout=30, what=f"{self.mnt} to be mounted")

    def unmount(self) -> None:
        unmount(self.mnt, fuse=False)
        wait_gone(pids_matching([self.mnt], comm="glusterfs"), 5)
        kill_pids(pids_matching([self.mnt], comm="glusterfs"), grace=5, what="glusterfs client")

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def teardown(self) -> None:
        steps = [
            self.unmount,
            self._delete_volume,
            lambda: kill_pids(pids_matching([self.root], comm="glusterfsd"), what="glusterfsd"),
            lambda: kill_pids([p for p in self.started_glusterd if pid_alive(p)], what="glusterd"),
        ]
        for step in steps:
            try:
                step()
            except Exception as e:
                log(f"cleanup: {e}")

    def _delete_volume(self) -> None:
        if not self.created:
            return
        if not (_proc_running("glusterd")):
            return
        self.gluster("volume", "stop", self.VOL, "force", check=False)
        self.gluster("volume", "delete", self.VOL, check=False)
        self.created = False
        # glusterd runs its post-delete hook scripts as children: let them finish
        try:
            wait_until(lambda: not any(_children(p) for p in _proc_running("glusterd")),
                       timeout=15, what="glusterd's hook scripts")
        except BenchError as e:
            log(str(e))

    def info(self) -> dict:
        return {"version": self.version,
                "volume": f"{self.layout}, {len(self.bricks)} bricks ({self.host}:{self.root})",
                "mount": f"mount -t glusterfs {self.host}:/{self.VOL}"}

    def logs(self) -> str:
        name = self.mnt.strip("/").replace("/", "-")
        return tail(f"/var/log/glusterfs/{name}.log") + tail("/var/log/glusterfs/glusterd.log")


# --------------------------------------------------------------------------------------------
# gvol


def gvol_readiness() -> str | None:
    """None when the gvol parts the bench needs are there, else what is missing."""
    missing = [
        p for p in (
            "translators/storage/posix.py",
            "translators/protocol/client.py",
            "translators/cluster/dht.py",
            "fuse/mount.py",
            "volmgr/cli.py",
            "volmgr/daemon.py",
        )
        if not (REPO / p).exists()
    ]
    if missing:
        return "missing " + ", ".join(missing)
    try:
        cp = subprocess.run(
            [sys.executable, "-m", "volmgr.cli", "--help"],
            cwd=REPO, env=_gvol_env({}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, timeout=60,
        )
    except subprocess.TimeoutExpired:
        return "`python3 -m volmgr.cli --help` timed out"
    if cp.returncode != 0:
        return f"`python3 -m volmgr.cli --help` failed: {cp.stdout.strip()[-500:]}"
    return None


def _gvol_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + old if old else "")
    env.update(extra)
    return env


class Gvol(System):
    key = "gvol"
    title = "gvol"
    VOL = "benchgv"

    def __init__(self, root: str, host: str, layout: str = "distribute"):
        self.root = os.path.join(root, "gvol")
        self.host = host
        self.layout = layout
        self.state = os.path.join(self.root, "state")
        self.bricks = brick_dirs(self.root, layout)
        self.mnt = os.path.join(self.root, "mnt")
        self.logdir = os.path.join(self.root, "logs")
        self.port = 0
        self.env: dict[str, str] = {}
        self.gvold: subprocess.Popen | None = None
        self.mountproc: subprocess.Popen | None = None
        self.created = False
        self.started = False
        self.rev = ""

    def cli(self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None):
        return run([sys.executable, "-m", "volmgr.cli", *args], timeout=timeout, check=check,
                   env=self.env, cwd=str(REPO), input=input)

    def setup(self) -> None:
        why = gvol_readiness()
        if why:
            raise BenchError(f"gvol is not ready: {why}")
        for d in (self.state, self.mnt, self.logdir, *self.bricks):
            os.makedirs(d, exist_ok=True)
        try:
            self.rev = run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                           timeout=30, quiet=True, check=False).stdout.strip()
        except BenchError:
            self.rev = ""
        self.port = free_port()
        self.env = _gvol_env({"GVOL_STATE_DIR": self.state, "GVOL_PORT": str(self.port)})
        # --foreground: gvold detaches by default; here it stays our child so that we stop it.
        cmd = [sys.executable, "-m", "volmgr.daemon", "--state-dir", self.state,
               "--port", str(self.port), "--listen", "127.0.0.1", "--log-dir", self.logdir,
               "--foreground"]
        log("$ " + " ".join(cmd) + " &")
        with open(os.path.join(self.logdir, "gvold.log"), "ab") as out:
            self.gvold = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)

        def ready() -> bool:
            if self.gvold.poll() is not None:
                raise BenchError(f"gvold exited with {self.gvold.returncode}:\n"
                                 + tail(os.path.join(self.logdir, "gvold.log")))
            return os.path.exists(os.path.join(self.state, "gvold.sock")) and tcp_open(
                "127.0.0.1", self.port)

        wait_until(ready, timeout=60, what=f"gvold on port {self.port}")
        self.cli("volume", "create", self.VOL, *layout_args(self.layout),
                 *[f"{self.host}:{b}" for b in self.bricks], "force")
        self.created = True
        self.cli("volume", "start", self.VOL)
        self.started = True
        self.mount()

    def mount(self) -> None:
        cmd = [sys.executable, "-m", "volmgr.cli", "mount", self.VOL, self.mnt,
               "-o", f"log-file={os.path.join(self.logdir, 'client.log')}"]
        log("$ " + " ".join(cmd))
        # `gvol mount` may stay in the foreground serving the mount or daemonize: handle both.
        with open(os.path.join(self.logdir, "mount.log"), "ab") as out:
            self.mountproc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                              stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True)

        def mounted() -> bool:
            if is_mounted(self.mnt):
                return True
            rc = self.mountproc.poll()
            if rc not in (None, 0):
                raise BenchError(f"gvol mount exited with {rc}:\n"
                                 + tail(os.path.join(self.logdir, "mount.log")))
            return False

        wait_until(mounted, timeout=60, what=f"{self.mnt} to be mounted")

    def unmount(self) -> None:
        unmount(self.mnt, fuse=True)
        if self.mountproc is not None:
            try:
                self.mountproc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                stop_popen(self.mountproc, what="gvol mount")
            self.mountproc = None
        # a daemonized client names the mountpoint on its command line
        wait_gone(pids_matching([self.mnt]), 5)
        kill_pids(pids_matching([self.mnt]), grace=5, what="gvol client")

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def teardown(self) -> None:
        steps = [self.unmount, self._stop_delete, self._stop_daemons]
        for step in steps:
            try:
                step()
            except Exception as e:
                log(f"cleanup: {e}")

    def _stop_delete(self) -> None:
        if self.gvold is None or self.gvold.poll() is not None:
            return
        if self.started:
            self.cli("volume", "stop", self.VOL, timeout=60, check=False, input="y\n")
            self.started = False
        if self.created:
            self.cli("volume", "delete", self.VOL, timeout=60, check=False, input="y\n")
            self.created = False

    def _stop_daemons(self) -> None:
        stop_popen(self.gvold, what="gvold")
        # bricks run in their own sessions and outlive gvold: their pidfiles are in the state
        # dir; kill those (if they still name our temp dir) and anything else that names it
        pids = set(pids_matching([self.root]))
        for dirpath, _dirs, names in os.walk(self.state):
            for name in names:
                if name.endswith(".pid"):
                    try:
                        with open(os.path.join(dirpath, name)) as f:
                            pid = int(f.read().split()[0])
                    except (OSError, ValueError, IndexError):
                        continue
                    if pid in pids_matching(["brickd"]):  # guard against a reused pid
                        pids.add(pid)
        kill_pids(sorted(pids), what="gvol process")

    def info(self) -> dict:
        return {"revision": self.rev,
                "volume": f"{self.layout}, {len(self.bricks)} bricks ({self.host}:{self.root})",
                "mount": f"gvol mount {self.VOL}"}

    def logs(self) -> str:
        out = []
        for dirpath, _dirs, names in os.walk(self.logdir):
            for name in sorted(names):
                out.append(f"--- {name}\n" + tail(os.path.join(dirpath, name)))
        # the detached mount client logs to /var/log/gvol/mnt-<mountpoint-dashed>.log
        mlog = "/var/log/gvol/mnt-" + self.mnt.strip("/").replace("/", "-") + ".log"
        if os.path.exists(mlog):
            out.append(f"--- {mlog}\n" + tail(mlog))
        return "\n".join(out)
