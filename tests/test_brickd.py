"""gvol-brickd as a real process serving a real storage/posix brick, with protocol/client in
the test process."""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from translators.fops import CreateReq, InodeReq, ReadReq, WriteReq
from translators.protocol import codec
from translators.protocol.client import Client
from translators.types import ROOT_CALL, ROOT_GFID, FopError, new_gfid
from translators.xlator import Event, Translator

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bricks need root (trusted.* xattrs)")

REPO = Path(__file__).resolve().parent.parent
VOL_ID = "6b1f3c1e-2a8d-4c1b-9a47-0f3e2d1c0b9a"
CEILING = 30


def brick_volfile(brick: Path, port: int = 0, **server_opts: str) -> str:
    extra = "".join(f"    option {k} {v}\n" for k, v in server_opts.items())
    return f"""
volume vol-posix
    type storage/posix
    option directory {brick}
    option volume-id {VOL_ID}
end-volume

volume vol-locks
    type features/locks
    subvolumes vol-posix
end-volume

volume {brick}
    type debug/io-stats
    subvolumes vol-locks
end-volume

volume vol-server
    type protocol/server
    option listen-host 127.0.0.1
    option listen-port {port}
    option volume-name vol
    option volume-id {VOL_ID}
    option brick-path {brick}
    option ping-timeout 5
{extra}    subvolumes {brick}
end-volume
"""


class Brickd:
    """One gvol-brickd subprocess; stderr goes to a file so it can never block on a pipe."""

    def __init__(self, tmp: Path, brick: Path, port: int = 0, env: dict | None = None,
                 volfile_text: str | None = None) -> None:
        self.tmp = tmp
        self.volfile = tmp / f"brick-{port}.vol"
        self.volfile.write_text(volfile_text or brick_volfile(brick, port))
        self.pidfile = tmp / "brickd.pid"
        self.errpath = tmp / f"brickd-{os.urandom(4).hex()}.err"
        self.err = open(self.errpath, "w")
        e = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        e.pop("NOTIFY_SOCKET", None)
        e.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "brickd.main", "--volfile", str(self.volfile),
             "--pidfile", str(self.pidfile), "--log-level", "INFO"],
            stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL, text=True,
            cwd=tmp, env=e)
        self.port = 0

    async def started(self) -> int:
        line = await trio.to_thread.run_sync(self.proc.stdout.readline,
                                             abandon_on_cancel=True)
        assert line.startswith("listening on 127.0.0.1:"), (line, self.stderr())
        self.port = int(line.rsplit(":", 1)[1])
        return self.port

    def stderr(self) -> str:
        return self.errpath.read_text()

    async def wait_stderr(self, text: str) -> str:
        while text not in self.stderr():
            await trio.sleep(0.02)
        return self.stderr()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.err.close()


def run(fn: Any) -> None:
    async def main() -> None:
        with trio.fail_after(CEILING):
            await fn()
    trio.run(main)


@pytest.fixture
def brick(tmp_path: Path) -> Path:
    from translators.storage.brickdir import prepare_brick
    b = tmp_path / "b1"
    prepare_brick(str(b), VOL_ID)
    return b


class Recorder(Translator):
    def __init__(self, child: Translator) -> None:
        super().__init__("top", None, [child])
        self.events: list[Event] = []
        self.changed = trio.Event()

    async def notify(self, event: Event, child: Translator | None) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_event(self, ev: Event, count: int = 1) -> None:
        while self.events.count(ev) < count:
            await self.changed.wait()


def make_client(port: int, brick: Path) -> tuple[Client, Recorder]:
    c = Client("vol-client-0", {
        "remote-host": "127.0.0.1", "remote-port": str(port), "remote-subvolume": str(brick),
        "volume-name": "vol", "volume-id": VOL_ID, "ping-timeout": "5",
        "reconnect-max-delay": "0.2"})
    return c, Recorder(c)


# ------------------------------------------------------------------ tests
def test_serves_posix_brick_and_garbage_closes_only_that_connection(
        tmp_path: Path, brick: Path) -> None:
    async def t() -> None:
        b = Brickd(tmp_path, brick)
        try:
            port = await b.started()
            c, top = make_client(port, brick)
            async with trio.open_nursery() as n:
                await c.init(n)
                assert await c.wait_connected(10)
                g = new_gfid()
                cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"file", os.O_RDWR, 0o644, g))
                data = os.urandom(300_000)
                await c.write(ROOT_CALL, WriteReq(cr.fd, 0, data))
                assert (await c.read(ROOT_CALL, ReadReq(cr.fd, 0, len(data)))).data == data
                assert (brick / "file").read_bytes() == data  # really on the brick

                # garbage, then an oversize frame, each on its own connection
                for junk, why in ((b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(60),
                                   "bad protocol version"),
                                  (codec._HDR.pack(64 << 20, codec.VERSION, codec.T_HANDSHAKE,
                                                   0, 0, 0), "exceeds the maximum")):
                    s = await trio.open_tcp_stream("127.0.0.1", port)
                    await s.send_all(junk)
                    try:
                        assert await s.receive_some(100) == b""  # the brick hung up
                    except trio.BrokenResourceError:
                        pass  # ...possibly with a reset
                    await s.aclose()
                    log = await b.wait_stderr(why)
                    line = [x for x in log.splitlines() if why in x][0]
                    assert "closing connection from 127.0.0.1:" in line and "WARNING" in line

                # the connected client never noticed
                assert c.connected and top.events == [Event.CHILD_UP]
                assert (await c.stat(ROOT_CALL, InodeReq(g))).iatt.size == len(data)
                assert b.proc.poll() is None
                await c.fini()
        finally:
            b.kill()
        assert "Traceback" not in b.stderr()
    run(t)


def test_sigkill_gives_enotconn_and_restart_recovers(tmp_path: Path, brick: Path) -> None:
    async def t() -> None:
        b = Brickd(tmp_path, brick)
        b2 = None
        try:
            port = await b.started()
            c, top = make_client(port, brick)
            async with trio.open_nursery() as n:
                await c.init(n)
                assert await c.wait_connected(10)
                g = new_gfid()
                cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR, 0o644, g))
                await c.write(ROOT_CALL, WriteReq(cr.fd, 0, b"before"))

                b.proc.send_signal(signal.SIGKILL)
                await top.wait_event(Event.CHILD_DOWN)  # promptly: no ping timeout needed
                with pytest.raises(FopError) as ei:
                    await c.stat(ROOT_CALL, InodeReq(g))
                assert ei.value.errno == errno.ENOTCONN

                b2 = Brickd(tmp_path, brick, port=port)
                assert await b2.started() == port
                await top.wait_event(Event.CHILD_UP, 2)
                assert (await c.stat(ROOT_CALL, InodeReq(g))).iatt.size == 6
                # the fd from before the restart still works (re-opened by gfid)
                await c.write(ROOT_CALL, WriteReq(cr.fd, 6, b"+after"))
                assert (await c.read(ROOT_CALL, ReadReq(cr.fd, 0, 100))).data == b"before+after"
                await c.fini()
        finally:
            b.kill()
            if b2 is not None:
                b2.kill()
    run(t)


def test_sigterm_graceful_with_readiness(tmp_path: Path, brick: Path) -> None:
    async def t() -> None:
        sock_path = str(tmp_path / "notify.sock")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(sock_path)
        ns.setblocking(False)
        b = Brickd(tmp_path, brick, env={"NOTIFY_SOCKET": sock_path})
        try:
            port = await b.started()
            assert b.pidfile.read_text().strip() == str(b.proc.pid)
            tns = trio.socket.from_stdlib_socket(ns)
            assert b"READY=1" in (await tns.recv(4096)).split(b"\n")
            c, top = make_client(port, brick)
            async with trio.open_nursery() as n:
                await c.init(n)
                assert await c.wait_connected(10)
                b.proc.send_signal(signal.SIGTERM)
                await top.wait_event(Event.CHILD_DOWN)
                rc = await trio.to_thread.run_sync(b.proc.wait, abandon_on_cancel=True)
                assert rc == 0
                await c.fini()
            assert not b.pidfile.exists()
            assert b"STOPPING=1" in (await tns.recv(4096))
            err = b.stderr()
            assert "received SIGTERM" in err and "disconnected" in err
        finally:
            b.kill()
            ns.close()
        assert "Traceback" not in b.stderr()
    run(t)


def _expect_exit_2(tmp_path: Path, brick: Path, volfile_text: str | None, want: str,
                   port: int = 0) -> None:
    async def t() -> None:
        b = Brickd(tmp_path, brick, port=port, volfile_text=volfile_text)
        try:
            rc = await trio.to_thread.run_sync(b.proc.wait, abandon_on_cancel=True)
            out = b.proc.stdout.read()
        finally:
            b.kill()
        err = b.stderr()
        assert rc == 2, err
        assert out == ""
        assert "Traceback" not in err
        errors = [x for x in err.splitlines() if x.startswith("gvol-brickd: error:")]
        assert len(errors) == 1 and want in errors[0], err
    run(t)


def test_missing_volume_id_exits_2(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()  # no trusted.gvol.volume-id: not a brick (an unmounted disk, say)
    _expect_exit_2(tmp_path, bare, None, "volume-id")


def test_bad_volfile_exits_2(tmp_path: Path, brick: Path) -> None:
    text = brick_volfile(brick).replace("option ping-timeout 5", "option ping-timout 5")
    _expect_exit_2(tmp_path, brick, text, "unknown option")
    not_server = brick_volfile(brick).split("volume vol-server")[0]
    _expect_exit_2(tmp_path, brick, not_server, "not protocol/server")


def test_port_in_use_exits_2(tmp_path: Path, brick: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        _expect_exit_2(tmp_path, brick, None, "cannot listen", port=s.getsockname()[1])
