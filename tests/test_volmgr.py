"""gvold and the gvol CLI, for real: a `python -m volmgr.daemon` subprocess with a private state
dir and ports, driven by `python -m volmgr.cli` subprocesses, with real brick processes.

Tests that need brick processes (brickd + storage/posix + features/locks + protocol/server)
skip until those modules exist. Every gvold and brick started here is killed in finalizers
(bricks by pid and pidfile too: they run in their own sessions and survive gvold).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from gvolenv import free_port, wait_for
from translators.types import XATTR_VOLUME_ID
from volmgr import mgmt_client, volgen
from volmgr.daemon import check_volname, parse_brick
from volmgr.errors import DaemonUnreachable, GvolError
from volmgr.store import Store, atomic_write

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])}
ENV.pop("GVOL_SERVER", None)
ENV.pop("GVOL_SECRET", None)
ENV.pop("NOTIFY_SOCKET", None)


def bricks_available() -> bool:
    try:
        if importlib.util.find_spec("brickd.main") is None:
            return False
    except ImportError:
        return False
    return all(volgen.schema_for(t) is not None for t in (
        "storage/posix", "features/locks", "debug/io-stats", "protocol/server"))


needs_bricks = pytest.mark.skipif(not bricks_available(),
                                  reason="brick processes need brickd/posix/locks/server")


def pid_alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rpartition(")")[2].split()[0] not in ("Z", "X")


def is_brickd(pid: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"brickd" in a for a in args) and b"--volfile" in args


class Node:
    """One gvold subprocess with a private state dir, TCP port and brick port range."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state = base / "state"
        self.logs = base / "logs"
        self.port = free_port()
        self.base_port = random.randrange(50000, 59000, 50)
        self.env = {**ENV, "GVOL_STATE_DIR": str(self.state)}
        self.proc: subprocess.Popen | None = None
        self.brick_pids: set[int] = set()

    def start(self) -> Node:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / "gvold.out", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "volmgr.daemon", "--foreground",
             "--state-dir", str(self.state), "--port", str(self.port), "--listen", "127.0.0.1",
             "--log-dir", str(self.logs), "--base-port", str(self.base_port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=REPO)
        log.close()
        sock = self.state / "gvold.sock"

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gvold exited {self.proc.returncode}: {self.log()}")
            if not sock.exists():
                return False
            try:  # not a stale socket of a killed gvold: this one answers
                return mgmt_client.call(str(sock), "ping", timeout=5)["pid"] == self.proc.pid
            except GvolError:
                return False

        wait_for(up, 30, "gvold's socket")
        return self

    def log(self) -> str:
        p = self.logs / "gvold.out"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill_bricks(self) -> None:
        pids = set(self.brick_pids)
        for p in self.state.rglob("*.pid"):
            with contextlib.suppress(ValueError, OSError, IndexError):
                pids.add(int(p.read_text().split()[0]))
        for pid in pids:
            if is_brickd(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def cli(self, *args: str, timeout: float = 120, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "volmgr.cli", *args],
                              env=env or self.env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def ok(self, *args: str, timeout: float = 120) -> str:
        r = self.cli(*args, timeout=timeout)
        assert r.returncode == 0, (f"gvol {' '.join(args)} -> {r.returncode}\n{r.stdout}\n"
                                   f"{r.stderr}\n--- gvold:\n{self.log()}")
        assert r.stderr == ""
        return r.stdout

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json"))

    def status(self, vol: str) -> list[dict]:
        bricks = self.json("volume", "status", vol)["bricks"]
        self.brick_pids |= {b["pid"] for b in bricks if b["pid"]}
        return bricks

    def snapshot(self, *dirs: Path) -> dict:
        """Everything a failed command must leave alone: state files and brick dirs."""
        snap = {"state": Store(self.state).snapshot()}
        for d in dirs:
            if d.exists():
                snap[str(d)] = (sorted(os.listdir(d)) if d.is_dir() else "file",
                                sorted(os.listxattr(d)))
        return snap


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path).start()
    try:
        yield n
    finally:
        n.stop(signal.SIGKILL)
        n.kill_bricks()


def mkbricks(base: Path, *names: str) -> list[Path]:
    out = []
    for n in names:
        p = base / n
        p.mkdir(parents=True, exist_ok=True)
        out.append(p)
    return out


# ================================================================ pure helpers
def test_parse_brick():
    assert parse_brick("h:/a/b/") == ("h", "/a/b")
    assert parse_brick("h://a//b") == ("h", "/a/b")
    assert parse_brick("[::1]:/x") == ("::1", "/x")
    for bad, msg in [("nocolon", "missing ':'"), ("h:rel/path", "absolute"),
                     (":/x", "missing host"), ("h:/", "root directory")]:
        with pytest.raises(GvolError, match=msg):
            parse_brick(bad)


def test_volume_names():
    for good in ("v", "vol_1", "A-b", "_x", "a" * 64):
        assert check_volname(good) == good
    for bad in ("", "1vol", "-v", "a b", "a/b", "a.b", "a" * 65, "all", "volume"):
        with pytest.raises(GvolError):
            check_volname(bad)


def test_parse_server():
    assert mgmt_client.parse_server("h") == ("h", 24200)
    assert mgmt_client.parse_server("h:1") == ("h", 1)
    assert mgmt_client.parse_server("[::1]:7") == ("::1", 7)
    assert mgmt_client.parse_server("::1") == ("::1", 24200)
    for bad in ("h:x", "h:0", "", "[::1"):
        with pytest.raises(GvolError):
            mgmt_client.parse_server(bad)


def test_frames_roundtrip():
    msg = {"v": 1, "cmd": "x", "args": {"a": [1, "b", b"\0"]}}
    f = mgmt_client.encode_frame(msg)
    n = mgmt_client.frame_length(f[:4])
    assert n == len(f) - 4
    assert mgmt_client.decode_body(f[4:]) == msg
    assert mgmt_client.unwrap({"ok": True, "result": 3}) == 3
    with pytest.raises(GvolError, match="boom"):
        mgmt_client.unwrap({"ok": False, "error": "boom"})


def test_atomic_write_and_store(tmp_path):
    p = tmp_path / "f"
    atomic_write(p, "one")
    atomic_write(p, b"two", mode=0o600)
    assert p.read_text() == "two"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["f"]  # no temporary left behind
    s = Store(tmp_path / "st")
    s.init()
    u = s.node_uuid
    s2 = Store(tmp_path / "st")
    s2.init()
    assert s2.node_uuid == u  # identity persists
    assert stat.S_IMODE((tmp_path / "st" / "secret").stat().st_mode) == 0o600


def test_unreachable_daemon_exit_3(tmp_path):
    env = {**ENV, "GVOL_STATE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "volmgr.cli", "volume", "list"], env=env,
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 3
    assert "cannot reach gvold" in r.stderr and "is gvold running?" in r.stderr
    assert "Traceback" not in r.stderr
    with pytest.raises(DaemonUnreachable):
        mgmt_client.fetch_volfile([("127.0.0.1", free_port()), ("127.0.0.1", free_port())],
                                  "v", timeout=2)


# ================================================================ gvold without bricks
def test_daemon_basics(node, tmp_path):
    sock = node.state / "gvold.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    info = (node.state / "gvold.info").read_text()
    assert info.startswith("UUID=")
    pool = node.json("pool", "list")
    assert pool == [{"uuid": info.split("=")[1].split()[0], "hostname": "localhost",
                     "state": "Connected"}]
    assert node.json("peer", "status") == {"peers": []}
    assert "Number of Peers: 0" in node.ok("peer", "status")
    assert node.json("volume", "list") == []
    assert "No volumes present" in node.ok("volume", "list")
    # a second gvold on the same state dir is refused
    r = subprocess.run([sys.executable, "-m", "volmgr.daemon", "--foreground", "--state-dir",
                        str(node.state), "--port", "0"], env=node.env, capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert r.returncode == 1 and "another gvold" in r.stderr


def test_create_info_set_get_delete(node, tmp_path):
    b1, b2 = mkbricks(tmp_path, "b1", "b2")
    host = socket.gethostname()
    out = node.ok("volume", "create", "v1", f"{host}:{b1}", f"localhost:{b2}/")
    assert out.strip() == "volume create: v1: success: please start the volume to access data"
    for b in (b1, b2):
        assert len(os.getxattr(b, XATTR_VOLUME_ID)) == 16
    info = node.json("volume", "info", "v1")
    assert info["name"] == "v1" and info["status"] == "Created" and info["type"] == "Distribute"
    assert [b["name"] for b in info["bricks"]] == [f"{host}:{b1}", f"localhost:{b2}"]
    ports = [b["port"] for b in info["bricks"]]
    assert len(set(ports)) == 2 and all(p >= node.base_port for p in ports)
    assert "password" not in json.dumps(info)
    text = node.ok("volume", "info", "v1")
    for line in ("Volume Name: v1", "Type: Distribute", f"Volume ID: {info['id']}",
                 "Status: Created", "Number of Bricks: 2", "Transport-type: tcp", "Bricks:",
                 f"Brick1: {host}:{b1}", f"Brick2: localhost:{b2}", "Options Reconfigured:"):
        assert line in text.splitlines()
    # the generated volfiles parse, and name the allocated ports
    volfile = node.ok("volume", "info", "v1", "--volfile")
    from translators.volfile import parse
    specs = {s.name: s for s in parse(volfile)}
    assert specs["v1-client-0"].options["remote-port"] == str(ports[0])
    assert specs["v1-client-1"].options["remote-port"] == str(ports[1])
    assert specs["v1-dht"].subvolumes == ["v1-client-0", "v1-client-1"]
    st = node.json("volume", "status", "v1")
    assert [(b["host"], b["path"], b["port"], b["pid"], b["online"]) for b in st["bricks"]] == [
        (host, str(b1), ports[0], None, False), ("localhost", str(b2), ports[1], None, False)]
    assert node.json("volume", "list") == ["v1"]
    assert node.ok("volume", "list").split() == ["v1"]
    # set / get / reset
    assert node.ok("volume", "set", "v1", "brick.auto-restart", "off").strip() == \
        "volume set: success"
    got = node.json("volume", "get", "v1", "brick.auto-restart")
    assert got[0]["value"] == "off" and got[0]["source"] == "set"
    assert "brick.auto-restart: off" in node.ok("volume", "info", "v1")
    allopts = {o["key"]: o for o in node.json("volume", "get", "v1", "all")}
    assert allopts["brick.auto-restart"]["value"] == "off"
    assert allopts["auth.allow"]["value"] == "*"
    assert "brick.auto-restart" in node.ok("volume", "get", "v1", "all")
    if "storage.thread-count" in allopts:
        node.ok("volume", "set", "v1", "storage.thread-count", "8")
        vf = node.json("volume", "info", "v1", "--volfile")["bricks"][f"{host}:{b1}"]
        assert "option thread-count 8" in vf
    node.ok("volume", "reset", "v1", "brick.auto-restart")
    assert node.json("volume", "get", "v1", "brick.auto-restart")[0]["source"] == "default"
    version = node.json("volume", "info", "v1")["version"]
    assert version >= 3
    # stop of a created volume is refused; force is accepted
    r = node.cli("volume", "stop", "v1")
    assert r.returncode == 1 and r.stderr.strip() == "gvol: volume v1 is not started"
    node.ok("--mode=script", "volume", "stop", "v1", "force")
    assert node.ok("volume", "delete", "v1").strip() == "volume delete: v1: success"
    assert node.json("volume", "list") == []
    assert not (node.state / "vols" / "v1").exists()


def test_bad_input_changes_nothing(node, tmp_path):
    b1, b2, b3, free1, free2 = mkbricks(tmp_path, "b1", "b2", "b3", "free1", "free2")
    nested = mkbricks(b1, "inner")[0]
    parent = tmp_path / "parent"
    child = mkbricks(parent, "child")[0]
    afile = tmp_path / "afile"
    afile.write_text("x")
    tagged = mkbricks(tmp_path, "tagged")[0]
    os.setxattr(tagged, XATTR_VOLUME_ID, b"\1" * 16)
    node.ok("volume", "create", "good", f"localhost:{b1}", f"127.0.0.1:{b2}")
    node.ok("volume", "create", "other", f"localhost:{child}")
    dirs = [b1, b2, b3, free1, free2, nested, parent, child, tagged, afile]
    L = "localhost"
    cases = [
        # (args, exit code, expected message part)
        (["volume", "start", "nosuch"], 1, "volume nosuch does not exist"),
        (["volume", "stop", "nosuch"], 1, "volume nosuch does not exist"),
        (["volume", "delete", "nosuch"], 1, "volume nosuch does not exist"),
        (["volume", "info", "nosuch"], 1, "volume nosuch does not exist"),
        (["volume", "status", "nosuch"], 1, "volume nosuch does not exist"),
        (["volume", "set", "nosuch", "auth.allow", "*"], 1, "volume nosuch does not exist"),
        (["volume", "create", "n1", f"{L}:{tmp_path}/missing"], 1, "does not exist"),
        (["volume", "create", "n1", f"{L}:{afile}"], 1, "not a directory"),
        (["volume", "create", "n1", f"{L}:{tagged}"], 1, "already part of a volume"),
        (["volume", "create", "n1", f"{L}:{b3}", f"{L}:{b1}"], 1,
         "already part of volume good"),
        (["volume", "create", "n1", f"{L}:{nested}"], 1, "is inside brick"),
        (["volume", "create", "n1", f"{L}:{parent}"], 1, "contains brick"),
        (["volume", "create", "n1", f"{L}:{free1}", f"{L}:{free1}/"], 1, "duplicate brick"),
        (["volume", "create", "n1", f"{L}:{free1}", f"127.0.0.1:{free1}"], 1,
         "duplicate brick"),
        (["volume", "create", "n1", f"{L}:{free1}", f"{L}:{free1}/sub"], 1, "does not exist"),
        (["volume", "create", "n1", f"{L}:free1"], 1, "the path must be absolute"),
        (["volume", "create", "n1", str(free1)], 1, "missing ':'"),
        (["volume", "create", "n1", f"no-such-host.invalid:{free1}"], 1,
         "host no-such-host.invalid is not in the pool"),
        (["volume", "create", "n1", f"192.0.2.254:{free1}"], 1,
         "host 192.0.2.254 is not in the pool (run gvol peer probe 192.0.2.254)"),
        (["volume", "create", "good", f"{L}:{free1}"], 1, "volume good already exists"),
        (["volume", "create", "9lives", f"{L}:{free1}"], 1, "invalid volume name"),
        (["volume", "create", "a.b", f"{L}:{free1}"], 1, "invalid volume name"),
        (["volume", "create", "x" * 65, f"{L}:{free1}"], 1, "longer than 64"),
        (["volume", "create", "all", f"{L}:{free1}"], 1, "reserved"),
        (["volume", "create", "n1", "replica", "2", f"{L}:{free1}", f"{L}:{free2}"], 1,
         "replica set 1 has several bricks on localhost"),
        (["volume", "create", "n1", "replica", "2", f"{L}:{free1}"], 1,
         "not a multiple of the replica count"),
        (["volume", "create", "n1", "arbiter", "1", f"{L}:{free1}"], 1,
         "arbiter needs a replica count"),
        (["volume", "set", "good", "auth.alow", "*"], 1,
         "unknown option auth.alow; did you mean auth.allow"),
        (["volume", "set", "good", "brick.auto-restart", "sometimes"], 1,
         "invalid value for brick.auto-restart"),
        (["volume", "get", "good", "no.such-key"], 1, "unknown option no.such-key"),
        (["volume", "stop", "good"], 1, "volume good is not started"),
        (["mount", "good", str(tmp_path / "mnt")], 1,
         "volume good is not started (run: gvol volume start good)"),
        # usage errors
        (["volume", "create", "n1"], 2, ""),
        (["volume", "create", "n1", "replica"], 2, "replica needs a value"),
        (["volume", "start"], 2, ""),
        (["volume", "stop", "good", "now"], 2, "only 'force'"),
        (["volume", "frobnicate"], 2, ""),
    ]
    if "cluster.min-free-disk" in volgen.available_options():
        # the schema says "str"; cluster/dht's constructor refuses it: found by building
        cases.append((["volume", "set", "good", "cluster.min-free-disk", "lots"], 1,
                      "invalid value for cluster.min-free-disk"))
    if "network.ping-timeout" in volgen.available_options():
        cases.append((["volume", "set", "good", "network.ping-timeout", "-1"], 1,
                      "invalid value for network.ping-timeout"))
    before = node.snapshot(*dirs)
    for args, code, msg in cases:
        r = node.cli(*args)
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        if code == 1:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("gvol: "), (args, r.stderr)
            assert msg in lines[0], (args, lines[0])
            assert r.stdout == ""
        else:
            assert msg in r.stderr, (args, r.stderr)
        assert node.snapshot(*dirs) == before, f"gvol {' '.join(args)} changed the state"
    assert not (tmp_path / "mnt").exists()


def test_tcp_access(node, tmp_path):
    (b1,) = mkbricks(tmp_path, "b1")
    server = ["--server", f"127.0.0.1:{node.port}"]
    env = {k: v for k, v in node.env.items() if k != "GVOL_STATE_DIR"}
    env["GVOL_STATE_DIR"] = str(tmp_path / "elsewhere")  # no readable secret
    r = node.cli(*server, "volume", "create", "t1", f"localhost:{b1}", env=env)
    assert r.returncode == 1 and "needs the cluster secret" in r.stderr
    assert not (node.state / "vols" / "t1").exists()
    secret = (node.state / "secret").read_text().strip()
    r = node.cli(*server, "volume", "create", "t1", f"localhost:{b1}",
                 env={**env, "GVOL_SECRET": secret})
    assert r.returncode == 0, r.stderr
    r = node.cli(*server, "volume", "list", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout) == ["t1"]
    # getspec over TCP: the volume exists but is not started
    with pytest.raises(GvolError, match=r"volume t1 is not started \(run: gvol volume start t1\)"):
        mgmt_client.fetch_volfile([("127.0.0.1", node.port)], "t1")
    with pytest.raises(GvolError, match="volume nope does not exist"):
        mgmt_client.fetch_volfile([("127.0.0.1", free_port()), ("127.0.0.1", node.port)],
                                  "nope", timeout=5)
    # a client that sends garbage does not take the server down
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"\xff\xff\xff\xff garbage")
        s.settimeout(5)
        with contextlib.suppress(OSError):
            s.recv(10)
    assert mgmt_client.call(("127.0.0.1", node.port), "ping")["port"] == node.port

    async def from_trio():
        a = await mgmt_client.acall(str(node.state / "gvold.sock"), "volume-list", timeout=10)
        b = await mgmt_client.acall(("127.0.0.1", node.port), "volume-info", {"name": "t1"},
                                    timeout=10)
        with pytest.raises(GvolError, match="unknown command"):
            await mgmt_client.acall(("127.0.0.1", node.port), "frobnicate", timeout=10)
        with pytest.raises(DaemonUnreachable):
            await mgmt_client.acall(("127.0.0.1", free_port()), "ping", timeout=2)
        return a, b

    names, info = trio.run(from_trio)
    assert names == ["t1"] and info["name"] == "t1"


def test_sigterm_is_graceful(node):
    assert node.stop(signal.SIGTERM) == 0
    assert not (node.state / "gvold.sock").exists()


def test_systemd_notify(tmp_path):
    """Type=notify: READY=1 once the sockets are up, STOPPING=1 on SIGTERM."""
    addr = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ns:
        ns.bind(addr)
        ns.settimeout(30)
        n = Node(tmp_path / "n")
        n.env["NOTIFY_SOCKET"] = addr
        try:
            n.start()
            assert ns.recv(100) == b"READY=1"
            assert (n.state / "gvold.sock").exists()
            n.proc.send_signal(signal.SIGTERM)
            assert ns.recv(100) == b"STOPPING=1"
            assert n.proc.wait(20) == 0
        finally:
            n.stop(signal.SIGKILL)


# ================================================================ with brick processes
def brick_pids(node: Node, vol: str) -> list[int | None]:
    return [b["pid"] for b in node.status(vol)]


def all_online(node: Node, vol: str) -> bool:
    return all(b["online"] and b["pid"] for b in node.status(vol))


@needs_bricks
def test_bricks_lifecycle(node, tmp_path):
    b1, b2 = mkbricks(tmp_path, "b1", "b2")
    node.ok("volume", "create", "lv", f"localhost:{b1}", f"localhost:{b2}")
    assert node.ok("volume", "start", "lv").strip() == "volume start: lv: success"
    st = node.status("lv")
    ports = [b["port"] for b in node.json("volume", "info", "lv")["bricks"]]
    assert [b["port"] for b in st] == ports
    for b in st:
        assert b["online"] is True
        assert is_brickd(b["pid"])
        args = Path(f"/proc/{b['pid']}/cmdline").read_bytes().split(b"\0")
        assert any(a.endswith(b".vol") for a in args)
        # the brick really listens on its port
        socket.create_connection(("127.0.0.1", b["port"]), timeout=5).close()
    table = node.ok("volume", "status", "lv")
    assert "Brick localhost:" in table and str(ports[0]) in table and " Y " in table
    # client volfile served to mounts
    vf = mgmt_client.fetch_volfile([("127.0.0.1", node.port)], "lv")
    assert f"option remote-port {ports[0]}" in vf
    # bad inputs on a started volume: nothing changes
    before = node.snapshot(b1, b2)
    for args, msg in [(["volume", "start", "lv"], "volume lv is already started"),
                      (["volume", "delete", "lv"], "volume lv is started; stop it first")]:
        r = node.cli(*args)
        assert r.returncode == 1 and msg in r.stderr, (args, r.stderr)
        assert node.snapshot(b1, b2) == before
    assert brick_pids(node, "lv") == [b["pid"] for b in st]
    # a brick option while started says that the bricks must restart
    out = node.ok("volume", "set", "lv", "auth.allow", "127.0.0.1")
    assert "restart" in out
    # stop: bricks gone
    pids = [b["pid"] for b in st]
    assert node.ok("volume", "stop", "lv", "--mode=script").strip() == "volume stop: lv: success"
    wait_for(lambda: not any(pid_alive(p) for p in pids), 20, "bricks to exit")
    assert [b["online"] for b in node.status("lv")] == [False, False]
    assert node.json("volume", "info", "lv")["status"] == "Stopped"
    with pytest.raises(GvolError, match="not started"):
        mgmt_client.fetch_volfile([("127.0.0.1", node.port)], "lv")
    # start again (same ports), stop, delete
    node.ok("volume", "start", "lv")
    assert [b["port"] for b in node.status("lv")] == ports
    assert all_online(node, "lv")
    node.ok("volume", "stop", "lv")
    node.ok("volume", "delete", "lv")
    assert node.json("volume", "list") == []


@needs_bricks
def test_gvold_restart_adopts_bricks(node, tmp_path):
    b1, b2 = mkbricks(tmp_path, "b1", "b2")
    node.ok("volume", "create", "rv", f"localhost:{b1}", f"localhost:{b2}")
    node.ok("volume", "start", "rv")
    before = brick_pids(node, "rv")
    assert all(before)
    assert node.stop(signal.SIGTERM) == 0
    assert all(pid_alive(p) for p in before), "bricks must survive gvold"
    node.start()
    st = node.status("rv")
    assert [b["pid"] for b in st] == before  # adopted, not restarted
    assert all(b["online"] for b in st)
    # also after a crash of gvold
    node.stop(signal.SIGKILL)
    node.start()
    assert brick_pids(node, "rv") == before
    # the adopted bricks are still supervised and stoppable
    node.ok("volume", "stop", "rv")
    wait_for(lambda: not any(pid_alive(p) for p in before), 20, "adopted bricks to exit")


@needs_bricks
def test_supervisor_restarts_dead_bricks(node, tmp_path):
    b1, b2 = mkbricks(tmp_path, "b1", "b2")
    node.ok("volume", "create", "sv", f"localhost:{b1}", f"localhost:{b2}")
    node.ok("volume", "start", "sv")
    first = brick_pids(node, "sv")
    os.kill(first[0], signal.SIGKILL)

    def restarted():
        st = node.status("sv")
        return st[0]["pid"] not in (None, first[0]) and st[0]["online"] and st
    st = wait_for(restarted, 30, "the supervisor to restart the brick", interval=0.3)
    assert st[1]["pid"] == first[1]
    assert st[0]["port"] == node.json("volume", "info", "sv")["bricks"][0]["port"]


@needs_bricks
def test_no_auto_restart_then_start_force(node, tmp_path):
    b1, b2 = mkbricks(tmp_path, "b1", "b2")
    node.ok("volume", "create", "nv", f"localhost:{b1}", f"localhost:{b2}")
    node.ok("volume", "set", "nv", "brick.auto-restart", "off")
    node.ok("volume", "start", "nv")
    first = brick_pids(node, "nv")
    os.kill(first[1], signal.SIGKILL)
    wait_for(lambda: not pid_alive(first[1]), 10, "the brick to die")
    time.sleep(3)  # three supervisor rounds
    st = node.status("nv")
    assert st[1]["pid"] is None and st[1]["online"] is False
    assert st[0]["pid"] == first[0] and st[0]["online"]
    node.ok("volume", "start", "nv", "force")
    st = node.status("nv")
    assert st[1]["online"] and st[1]["pid"] not in (None, first[1])
    assert st[0]["pid"] == first[0]


@needs_bricks
def test_failed_brick_start_reports_log_and_changes_nothing(node, tmp_path):
    (b1,) = mkbricks(tmp_path, "b1")
    node.ok("volume", "create", "fv", f"localhost:{b1}")
    port = node.json("volume", "info", "fv")["bricks"][0]["port"]
    # break the brick: its directory vanishes (an unmounted disk)
    os.rename(b1, tmp_path / "b1-away")
    r = node.cli("volume", "start", "fv")
    assert r.returncode == 1 and "missing or not a directory" in r.stderr
    assert node.json("volume", "info", "fv")["status"] == "Created"
    os.rename(tmp_path / "b1-away", b1)
    # a port taken by someone else: the brick moves to another port
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen()
        node.ok("volume", "start", "fv")
        st = node.status("fv")
        assert st[0]["online"] and st[0]["port"] != port
    node.ok("volume", "stop", "fv")


def _mounted(path: Path) -> bool:
    p = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == p for line in f)


def _mount_pids(mnt: Path) -> list[int]:
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            args = Path(f"/proc/{e}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"fuse.mount" in a or b"mount.gvol" in a for a in args) and \
                str(mnt).encode() in args:
            out.append(int(e))
    return out


def _unmount(mnt: Path) -> None:
    for args in (["fusermount3", "-u"], ["fusermount3", "-u", "-z"]):
        if _mounted(mnt):
            subprocess.run([*args, str(mnt)], capture_output=True, timeout=30)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not _mounted(mnt), 10, "unmount")
    for pid in _mount_pids(mnt):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.mount
@needs_bricks
def test_gvol_mount(node, tmp_path):
    if not os.path.exists("/dev/fuse") or subprocess.run(
            ["which", "fusermount3"], capture_output=True).returncode != 0:
        pytest.skip("needs /dev/fuse and fusermount3")
    if importlib.util.find_spec("fuse.mount") is None or volgen.schema_for("cluster/dht") is None:
        pytest.skip("needs fuse.mount and cluster/dht")
    b1, b2, mnt = mkbricks(tmp_path, "b1", "b2", "mnt")
    node.ok("volume", "create", "mv", f"localhost:{b1}", f"localhost:{b2}")
    node.ok("volume", "start", "mv")
    try:
        node.ok("mount", "mv", str(mnt), "-o", "entry-timeout=1,_netdev", timeout=60)
        wait_for(lambda: _mounted(mnt), 20, "the mount")
        for i in range(8):
            (mnt / f"f{i}").write_text(f"hello {i}")
        assert sorted(os.listdir(mnt)) == [f"f{i}" for i in range(8)]
        assert (mnt / "f5").read_text() == "hello 5"
        on_bricks = sorted(os.listdir(b1) + os.listdir(b2))
        assert [n for n in on_bricks if not n.startswith(".")] == [f"f{i}" for i in range(8)]
    finally:
        _unmount(mnt)
