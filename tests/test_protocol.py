"""protocol/client <-> protocol/server over loopback TCP, in one trio run, against an in-memory
leaf translator on the brick side."""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from translators import fops
from translators.fops import (
    EMPTY,
    AccessReq,
    AttrRep,
    CreateReq,
    FdReq,
    GetxattrReq,
    InodeReq,
    LkReq,
    OpenRep,
    OpenReq,
    ReadRep,
    ReadReq,
    WriteRep,
    WriteReq,
)
from translators.protocol import codec
from translators.protocol.client import Client
from translators.protocol.server import Server
from translators.types import ROOT_CALL, ROOT_GFID, Call, Fd, FopError, Iatt, new_gfid
from translators.xlator import Event, Translator

CEILING = 20  # seconds: no network test may take longer
VOL_ID = "3f0c6d1e-4d55-4a43-9a39-5f3b9f0a5b11"


def mk_iatt(gfid: bytes, mode: int = stat.S_IFREG | 0o644, size: int = 0) -> Iatt:
    return Iatt(gfid, mode, 1, 0, 0, 0, size, 0, 4096, 1, 2, 3)


class MemLeaf(Translator):
    """A tiny in-memory brick: files by gfid, fds, and hooks to hold fops in flight."""

    min_children = 0
    max_children = 0

    def __init__(self, name: str = "mem") -> None:
        super().__init__(name)
        self.files: dict[bytes, bytearray] = {ROOT_GFID: bytearray()}
        self.modes: dict[bytes, int] = {ROOT_GFID: stat.S_IFDIR | 0o755}
        self.open_fds: dict[int, Fd] = {}
        self.opens = 0
        self.calls: list[tuple[str, Call]] = []
        self.disconnected: list[str] = []
        self.gate_n = 0  # access(): wait until this many are in flight
        self.gate_waiting = 0
        self.gate = trio.Event()
        self.hold = trio.Event()  # flush(): wait for this
        self.in_flight = 0
        self.max_in_flight = 0

    def _iatt(self, g: bytes) -> Iatt:
        if g not in self.files:
            raise FopError(errno.ENOENT, f"no gfid {g.hex()}")
        return mk_iatt(g, self.modes[g], len(self.files[g]))

    def _fd(self, req: Any) -> Fd:
        fd = req.fd
        if self not in fd.ctx or fd.ctx[self] not in self.open_fds:
            raise FopError(errno.EBADF, "not open here")
        return fd

    async def handle(self, fop: fops.Fop, call: Call, req: Any) -> Any:
        raise FopError(errno.ENOSYS, f"{fop.name} not in MemLeaf")

    async def stat(self, call: Call, req: InodeReq) -> AttrRep:
        self.calls.append(("stat", call))
        return AttrRep(self._iatt(req.gfid))

    async def access(self, call: Call, req: AccessReq) -> Any:
        self.calls.append(("access", call))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate_n:
                self.gate_waiting += 1
                if self.gate_waiting >= self.gate_n:
                    self.gate.set()
                await self.gate.wait()
            if req.mask == 99:
                raise RuntimeError("boom: a bug in the brick")
            return EMPTY
        finally:
            self.in_flight -= 1

    async def getxattr(self, call: Call, req: GetxattrReq) -> Any:
        raise FopError(errno.ENODATA, f"no xattr {req.name}")

    async def create(self, call: Call, req: CreateReq) -> Any:
        self.calls.append(("create", call))
        g = req.gfid
        self.files[g] = bytearray()
        self.modes[g] = stat.S_IFREG | (req.mode & 0o7777)
        fd = self._new_fd(g, req.flags)
        return fops.CreateRep(self._iatt(g), fd)

    def _new_fd(self, g: bytes, flags: int, is_dir: bool = False) -> Fd:
        self.opens += 1
        fd = Fd(g, flags, is_dir, {self: self.opens})
        self.open_fds[self.opens] = fd
        return fd

    async def open(self, call: Call, req: OpenReq) -> OpenRep:
        self.calls.append(("open", call))
        self._iatt(req.gfid)
        data = bytes(self.files[req.gfid])
        if not (req.prefetch and len(data) <= req.prefetch):
            data = b""
        return OpenRep(self._new_fd(req.gfid, req.flags), data)

    async def opendir(self, call: Call, req: InodeReq) -> OpenRep:
        self.calls.append(("opendir", call))
        return OpenRep(self._new_fd(req.gfid, 0, True))

    async def release(self, call: Call, req: FdReq) -> Any:
        self.calls.append(("release", call))
        del self.open_fds[self._fd(req).ctx[self]]
        return EMPTY

    releasedir = release

    async def write(self, call: Call, req: WriteReq) -> WriteRep:
        fd = self._fd(req)
        buf = self.files[fd.gfid]
        end = req.offset + len(req.data)
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        buf[req.offset:end] = req.data
        return WriteRep(len(req.data), self._iatt(fd.gfid))

    async def read(self, call: Call, req: ReadReq) -> ReadRep:
        fd = self._fd(req)
        return ReadRep(bytes(self.files[fd.gfid][req.offset:req.offset + req.size]))

    async def flush(self, call: Call, req: FdReq) -> Any:
        self._fd(req)
        self.calls.append(("flush", call))
        await self.hold.wait()
        return EMPTY

    async def lk(self, call: Call, req: LkReq) -> Any:
        self._fd(req)
        return fops.LkRep(req.type, req.start, req.length, req.pid)

    def client_disconnect(self, cid: str) -> None:
        self.disconnected.append(cid)


class Recorder(Translator):
    """Sits above a protocol/client and records the events it notifies."""

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


def server_opts(**kw: Any) -> dict[str, Any]:
    o = {"listen-host": "127.0.0.1", "listen-port": "0", "volume-name": "vol",
         "volume-id": VOL_ID, "brick-path": "/bricks/b1", "ping-timeout": "5"}
    o.update({k.replace("_", "-"): str(v) for k, v in kw.items()})
    return o


def client_opts(port: int, **kw: Any) -> dict[str, Any]:
    o = {"remote-host": "127.0.0.1", "remote-port": str(port), "remote-subvolume": "/bricks/b1",
         "volume-name": "vol", "volume-id": VOL_ID, "ping-timeout": "5",
         "connect-timeout": "2", "reconnect-max-delay": "0.2"}
    o.update({k.replace("_", "-"): str(v) for k, v in kw.items()})
    return o


@asynccontextmanager
async def brick(leaf: MemLeaf | None = None, port: int = 0, **opts: Any):
    """A protocol/server over `leaf`, serving in the background; yields (server, leaf, scope)."""
    leaf = leaf or MemLeaf()
    o = server_opts(**opts)
    o["listen-port"] = str(port)
    srv = Server("srv", o, [leaf])
    async with trio.open_nursery() as n:
        scope = trio.CancelScope()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await srv.serve(task_status=task_status)

        await n.start(run)
        try:
            yield srv, leaf, scope
        finally:
            scope.cancel()


@asynccontextmanager
async def client_of(port: int, wait: bool = True, **opts: Any):
    c = Client("vol-client-0", client_opts(port, **opts))
    top = Recorder(c)
    async with trio.open_nursery() as n:
        await c.init(n)
        try:
            if wait:
                assert await c.wait_connected(5), "client did not connect"
            yield c, top
        finally:
            await c.fini()


def run(fn: Any) -> None:
    async def main() -> None:
        with trio.fail_after(CEILING):
            await fn()
    trio.run(main)


# ------------------------------------------------------------------ tests
def test_basic_fops_and_fd_lifecycle() -> None:
    async def t() -> None:
        async with brick() as (srv, leaf, _), client_of(srv.port) as (c, top):
            assert top.events == [Event.CHILD_UP]
            rep = await c.stat(Call(uid=5, gid=6, groups=(7, 8), lk_owner=b"o"),
                               InodeReq(ROOT_GFID))
            assert rep.iatt.gfid == ROOT_GFID and rep.iatt.is_dir
            name, call = leaf.calls[-1]
            # the brick sees the caller's identity, and which connection it came on
            assert (call.uid, call.gid, call.groups, call.lk_owner) == (5, 6, (7, 8), b"o")
            assert call.client and call.client in srv.connections
            g = new_gfid()
            cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR, 0o600, g))
            assert cr.fd.gfid == g and cr.fd.flags == os.O_RDWR and cr.iatt.gfid == g
            data = os.urandom(1 << 20)  # the largest I/O: travels as raw bulk bytes
            w = await c.write(ROOT_CALL, WriteReq(cr.fd, 10, data))
            assert w.size == len(data) and w.iatt.size == len(data) + 10
            r = await c.read(ROOT_CALL, ReadReq(cr.fd, 10, len(data)))
            assert r.data == data
            assert (await c.read(ROOT_CALL, ReadReq(cr.fd, 0, 10))).data == bytes(10)
            assert len(leaf.open_fds) == 1
            assert await c.release(ROOT_CALL, FdReq(cr.fd)) is EMPTY
            # release does not wait for its reply; the next round trip is ordered after it
            await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
            assert leaf.open_fds == {}
            # a released fd is gone on the brick
            with pytest.raises(FopError) as ei:
                await c.read(ROOT_CALL, ReadReq(cr.fd, 0, 1))
            assert ei.value.errno == errno.EBADF
            d = await c.opendir(ROOT_CALL, InodeReq(ROOT_GFID))
            assert d.fd.is_dir and d.fd.gfid == ROOT_GFID
    run(t)


def test_many_requests_in_flight_on_one_connection() -> None:
    n = 200

    async def t() -> None:
        leaf = MemLeaf()
        # every access() blocks until all n have arrived: a server that served one request at
        # a time, or a client that waited for each reply, would hang here until the ceiling
        leaf.gate_n = n
        async with brick(leaf) as (srv, _, _), client_of(srv.port) as (c, _top):
            results: list[Any] = []

            async def one(i: int) -> None:
                results.append(await c.access(Call(uid=i), AccessReq(ROOT_GFID, i % 8)))

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
            assert results == [EMPTY] * n
            assert leaf.max_in_flight == n
            assert sorted(call.uid for name, call in leaf.calls if name == "access") == \
                list(range(n))
            assert len(srv.connections) == 1
    run(t)


def test_errno_propagation(caplog: pytest.LogCaptureFixture) -> None:
    async def t() -> None:
        async with brick() as (srv, _, _), client_of(srv.port) as (c, _top):
            with pytest.raises(FopError) as ei:
                await c.stat(ROOT_CALL, InodeReq(b"\x07" * 16))
            assert ei.value.errno == errno.ENOENT and "no gfid" in ei.value.msg
            with pytest.raises(FopError) as ei:
                await c.getxattr(ROOT_CALL, GetxattrReq(ROOT_GFID, "user.x"))
            assert ei.value.errno == errno.ENODATA and ei.value.msg == "no xattr user.x"
            with pytest.raises(FopError) as ei:  # not implemented by the leaf
                await c.readlink(ROOT_CALL, InodeReq(ROOT_GFID))
            assert ei.value.errno == errno.ENOSYS
            # a bug (non-FopError) in the brick graph: EIO to the client, traceback in the log
            with pytest.raises(FopError) as ei:
                await c.access(ROOT_CALL, AccessReq(ROOT_GFID, 99))
            assert ei.value.errno == errno.EIO
            # and the connection keeps serving
            assert (await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))).iatt.gfid == ROOT_GFID
            assert c.connected
    with caplog.at_level(logging.INFO):
        run(t)
    bug = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert bug and bug[0].exc_info and "boom" in str(bug[0].exc_info[1])


@pytest.mark.parametrize("case", ["password", "reject", "volume-id", "brick", "allow"])
def test_handshake_rejected(case: str, caplog: pytest.LogCaptureFixture) -> None:
    srv_kw: dict[str, Any] = {}
    cli_kw: dict[str, Any] = {}
    expect = ""
    if case == "password":
        srv_kw = {"auth.username": "alice", "auth.password": "secret"}
        cli_kw = {"username": "alice", "password": "wrong"}
        expect = "authentication failed"
    elif case == "reject":
        srv_kw = {"auth.reject": "10.1.2.3, 127.0.0.1"}
        expect = "rejected by auth.reject"
    elif case == "allow":
        srv_kw = {"auth.allow": "192.168.*"}
        expect = "not in auth.allow"
    elif case == "volume-id":
        cli_kw = {"volume-id": "00000000-0000-0000-0000-00000000beef"}
        expect = "volume id mismatch"
    elif case == "brick":
        cli_kw = {"remote-subvolume": "/bricks/other"}
        expect = "serves brick"

    async def t() -> None:
        async with brick(**srv_kw) as (srv, leaf, _):
            async with client_of(srv.port, wait=False, **cli_kw) as (c, top):
                await top.wait_event(Event.CHILD_DOWN)
                assert not c.connected
                assert Event.CHILD_UP not in top.events
                with pytest.raises(FopError) as ei:
                    await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
                assert ei.value.errno == errno.ENOTCONN and expect in ei.value.msg
            assert leaf.calls == []  # no fop was served
            assert srv.connections == {}
    with caplog.at_level(logging.INFO):
        run(t)
    client_logs = [r for r in caplog.records if r.name.endswith("protocol.client")
                   and r.levelno == logging.ERROR and expect in r.getMessage()]
    server_logs = [r for r in caplog.records if r.name.endswith("protocol.server")
                   and "rejected client" in r.getMessage() and expect in r.getMessage()]
    assert client_logs and server_logs, [r.getMessage() for r in caplog.records]


def test_handshake_accepts_good_credentials() -> None:
    async def t() -> None:
        async with brick(**{"auth.username": "alice", "auth.password": "secret",
                            "auth.allow": "10.0.0.0/8 127.0.0.*", "auth.reject": "10.9.9.9"}
                         ) as (srv, _, _):
            async with client_of(srv.port, username="alice", password="secret") as (c, _top):
                await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
    run(t)


async def _silent_brick(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Accepts the handshake, then reads everything and never answers (a hung brick)."""
    async def handler(stream: trio.SocketStream) -> None:
        dec = codec.FrameDecoder()
        frames: list[codec.Frame] = []
        while not frames:
            frames = dec.feed(await stream.receive_some(65536))
        await stream.send_all(codec.encode_hello_reply(codec.HelloReply(True)))
        while await stream.receive_some(65536):
            pass

    await trio.serve_tcp(handler, 0, host="127.0.0.1", task_status=task_status)


def test_ping_timeout_detects_hung_brick(caplog: pytest.LogCaptureFixture) -> None:
    async def t() -> None:
        async with trio.open_nursery() as n:
            listeners = await n.start(_silent_brick)
            port = listeners[0].socket.getsockname()[1]
            async with client_of(port, ping_timeout="0.4") as (c, top):
                assert top.events == [Event.CHILD_UP]
                with pytest.raises(FopError) as ei:
                    await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))  # never answered
                assert ei.value.errno == errno.ENOTCONN
                assert "ping-timeout" in ei.value.msg
                await top.wait_event(Event.CHILD_DOWN)
            n.cancel_scope.cancel()
    with caplog.at_level(logging.INFO):
        run(t)
    assert any("did not answer" in r.getMessage() for r in caplog.records)


def test_live_idle_connection_is_not_dropped() -> None:
    """Pings keep an idle connection alive on both sides for several ping-timeouts."""
    async def t() -> None:
        async with brick(ping_timeout="0.5") as (srv, _, _), \
                client_of(srv.port, ping_timeout="0.5") as (c, top):
            await trio.sleep(2.0)  # four ping-timeouts
            assert top.events == [Event.CHILD_UP] and c.connected
            await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
    run(t)


def test_server_restart_enotconn_then_reconnect_and_reopen() -> None:
    async def t() -> None:
        leaf = MemLeaf()
        async with brick(leaf) as (srv, _, scope):
            port = srv.port
            async with client_of(port) as (c, top):
                g = new_gfid()
                cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR | os.O_CREAT
                                                         | os.O_TRUNC, 0o644, g))
                await c.write(ROOT_CALL, WriteReq(cr.fd, 0, b"hello"))
                # a POSIX lock on the file (through another fd) makes the flush a brick fop
                # (close() drops the process's locks on the file)
                o2 = await c.open(ROOT_CALL, OpenReq(g, os.O_RDWR))
                await c.lk(ROOT_CALL, LkReq(o2.fd, fops.LK_SETLK, fops.F_WRLCK, 0, 0))
                # a fop in flight when the brick goes away
                errors: list[int] = []

                async def stuck() -> None:
                    try:
                        await c.flush(ROOT_CALL, FdReq(cr.fd))
                    except FopError as e:
                        errors.append(e.errno)

                async with trio.open_nursery() as n:
                    n.start_soon(stuck)
                    while not any(name == "flush" for name, _ in leaf.calls):
                        await trio.sleep(0.01)
                    scope.cancel()  # the brick stops: its connections close
                assert errors == [errno.ENOTCONN]
                await top.wait_event(Event.CHILD_DOWN)
                # the brick released the fd and the client's locks when it went
                assert leaf.open_fds == {} and len(leaf.disconnected) == 1
                with pytest.raises(FopError) as ei:  # while down: fails at once
                    await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
                assert ei.value.errno == errno.ENOTCONN
                leaf.hold.set()
                # the brick comes back on the same port: the client reconnects by itself
                async with brick(leaf, port=port) as (srv2, _, _):
                    await top.wait_event(Event.CHILD_UP, 2)
                    assert top.events == [Event.CHILD_UP, Event.CHILD_DOWN, Event.CHILD_UP]
                    assert (await c.stat(ROOT_CALL, InodeReq(g))).iatt.size == 5
                    # the fd opened on the old connection is re-opened transparently
                    opens = leaf.opens
                    assert (await c.read(ROOT_CALL, ReadReq(cr.fd, 0, 5))).data == b"hello"
                    assert leaf.opens == opens + 1
                    reopened = leaf.open_fds[leaf.opens]
                    assert reopened.gfid == g and not reopened.flags & (os.O_CREAT | os.O_TRUNC)
                    await c.write(ROOT_CALL, WriteReq(cr.fd, 5, b"!"))
                    await c.release(ROOT_CALL, FdReq(cr.fd))
                    await c.stat(ROOT_CALL, InodeReq(g))
                    assert leaf.open_fds == {}
                    assert bytes(leaf.files[g]) == b"hello!"
    run(t)


def test_locked_fd_is_not_reopened() -> None:
    async def t() -> None:
        leaf = MemLeaf()
        async with brick(leaf) as (srv, _, scope):
            port = srv.port
            async with client_of(port) as (c, top):
                o = await c.open(ROOT_CALL, OpenReq(ROOT_GFID, os.O_RDONLY))
                await c.lk(ROOT_CALL, LkReq(o.fd, fops.LK_SETLK, fops.F_WRLCK, 0, 0))
                scope.cancel()
                await top.wait_event(Event.CHILD_DOWN)
                async with brick(leaf, port=port):
                    await top.wait_event(Event.CHILD_UP, 2)
                    with pytest.raises(FopError) as ei:
                        await c.read(ROOT_CALL, ReadReq(o.fd, 0, 1))
                    assert ei.value.errno == errno.EBADF
    run(t)


def test_disconnect_releases_fds_and_locks() -> None:
    async def t() -> None:
        async with brick() as (srv, leaf, _):
            async with client_of(srv.port) as (c, _top):
                await c.open(ROOT_CALL, OpenReq(ROOT_GFID, os.O_RDONLY))
                await c.opendir(ROOT_CALL, InodeReq(ROOT_GFID))
                cid = next(iter(srv.connections))
                assert len(leaf.open_fds) == 2
            while srv.connections:
                await trio.sleep(0.01)
            assert leaf.open_fds == {}
            assert leaf.disconnected == [cid]
            assert sorted(n for n, _ in leaf.calls if n.startswith("release")) == ["release"] * 2
            assert all(call.client == cid for _, call in leaf.calls)
    run(t)


def test_cancelled_caller_and_late_open_reply() -> None:
    """A caller that gives up does not break the connection; an open whose caller gave up
    is released on the brick when its reply arrives."""
    async def t() -> None:
        leaf = MemLeaf()
        gate = trio.Event()
        orig_open = leaf.open

        async def slow_open(call: Call, req: OpenReq) -> OpenRep:
            await gate.wait()
            return await orig_open(call, req)

        leaf.open = slow_open  # type: ignore[method-assign]
        async with brick(leaf) as (srv, _, _), client_of(srv.port) as (c, _top):
            with trio.move_on_after(0.05):
                await c.open(ROOT_CALL, OpenReq(ROOT_GFID, 0))
            gate.set()
            while leaf.opens == 0 or leaf.open_fds:
                await trio.sleep(0.01)
            assert c.connected
            await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
    run(t)


def test_garbage_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def t() -> None:
        async with brick() as (srv, _, _), client_of(srv.port) as (c, _top):
            for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3,
                         # a valid header announcing a frame far over the limit
                         codec._HDR.pack(1 << 30, codec.VERSION, codec.T_HANDSHAKE, 0, 0, 0)):
                s = await trio.open_tcp_stream("127.0.0.1", srv.port)
                await s.send_all(junk)
                assert await s.receive_some(100) == b""  # the brick hung up on us
                await s.aclose()
            # garbage after a good handshake
            s = await trio.open_tcp_stream("127.0.0.1", srv.port)
            await s.send_all(codec.encode_hello(codec.Hello("vol", VOL_ID, "/bricks/b1")))
            assert codec.FrameDecoder().feed(await s.receive_some(1000))[0].meta["ok"]
            await s.send_all(b"\x00\x00\x00\x20\x7f" + bytes(35))
            assert await s.receive_some(100) == b""
            await s.aclose()
            assert (await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))).iatt.gfid == ROOT_GFID
            assert c.connected and len(srv.connections) == 1
    with caplog.at_level(logging.INFO):
        run(t)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "closing connection from 127.0.0.1" in r.getMessage()]
    assert len(warnings) == 3, warnings
    assert any("exceeds the maximum" in w for w in warnings)


def test_client_requires_remote() -> None:
    from translators.xlator import GraphError
    with pytest.raises(GraphError):
        Client("c", {"remote-host": "127.0.0.1"})


def test_volfile_builds_protocol_graphs() -> None:
    from translators.volfile import build
    top = build("""
volume c0
    type protocol/client
    option remote-host 127.0.0.1
    option remote-port 24009
    option ping-timeout 3
end-volume
""")
    assert isinstance(top, Client) and top.ping_timeout == 3.0


async def _raw_session(port: int, ping_interval: float = 0.0) -> trio.SocketStream:
    s = await trio.open_tcp_stream("127.0.0.1", port)
    await s.send_all(codec.encode_hello(codec.Hello("vol", VOL_ID, "/bricks/b1",
                                                    ping_interval=ping_interval)))
    assert codec.FrameDecoder().feed(await s.receive_some(1000))[0].meta["ok"]
    return s


def test_server_drops_silent_client(caplog: pytest.LogCaptureFixture) -> None:
    """A client that promised pings and went silent is dropped, and its fds released."""
    async def t() -> None:
        async with brick(ping_timeout="0.2") as (srv, leaf, _):
            s = await _raw_session(srv.port, ping_interval=0.05)
            await s.send_all(b"".join(codec.encode_request(
                fops.FOPS["opendir"], 1, ROOT_CALL, InodeReq(ROOT_GFID))))
            assert await s.receive_some(1000)
            assert len(leaf.open_fds) == 1
            assert await s.receive_some(1000) == b""  # ...and then nothing: dropped
            while srv.connections or not leaf.disconnected:
                await trio.sleep(0.01)
            assert leaf.open_fds == {}
            await s.aclose()
    with caplog.at_level(logging.INFO):
        run(t)
    assert any("nothing received for" in r.getMessage() for r in caplog.records)


def test_server_drops_client_that_stops_reading(caplog: pytest.LogCaptureFixture) -> None:
    """Replies that cannot be written for ping-timeout (the peer reads nothing) end the
    connection instead of holding the brick's memory and the client's locks forever."""
    async def t() -> None:
        leaf = MemLeaf()
        g = new_gfid()
        leaf.files[g] = bytearray(os.urandom(1 << 20))
        leaf.modes[g] = stat.S_IFREG | 0o644
        async with brick(leaf, ping_timeout="0.3") as (srv, _, _):
            s = await _raw_session(srv.port)
            await s.send_all(b"".join(codec.encode_request(
                fops.FOPS["open"], 1, ROOT_CALL, OpenReq(g, os.O_RDONLY))))
            dec = codec.FrameDecoder()
            frames: list[codec.Frame] = []
            while not frames:
                frames = dec.feed(await s.receive_some(1000))
            fdnum = frames[0].meta[2]
            fd = Fd(g)
            reads = b"".join(b"".join(codec.encode_request(
                fops.FOPS["read"], 2 + i, ROOT_CALL, ReadReq(fd, 0, 1 << 20), lambda _: fdnum))
                for i in range(64))
            await s.send_all(reads)  # 64 MiB of replies that we never read
            while srv.connections or not leaf.disconnected:
                await trio.sleep(0.01)
            assert leaf.open_fds == {}
            await s.aclose()
    with caplog.at_level(logging.INFO):
        run(t)
    assert any("could not be written" in r.getMessage() for r in caplog.records)


def test_nothing_listening_then_brick_appears() -> None:
    """Down from the start: one CHILD_DOWN, fops fail at once; then the brick starts and the
    client finds it by itself."""
    async def t() -> None:
        with socket.socket() as s:  # a port with nothing listening (yet)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        async with client_of(port, wait=False) as (c, top):
            await top.wait_event(Event.CHILD_DOWN)
            assert not await c.wait_connected(0.3)
            with pytest.raises(FopError) as ei:
                await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
            assert ei.value.errno == errno.ENOTCONN and "cannot connect" in ei.value.msg
            assert top.events == [Event.CHILD_DOWN]  # retries do not repeat it
            async with brick(port=port):
                assert await c.wait_connected(10)
                await top.wait_event(Event.CHILD_UP)
                await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
            assert top.events[:2] == [Event.CHILD_DOWN, Event.CHILD_UP]
    run(t)


def test_cancellation_storm_never_tears_a_frame(caplog: pytest.LogCaptureFixture) -> None:
    """Many concurrent writes of up to 1 MiB, most of their callers cancelled at random
    moments: every frame still arrives whole (a torn one would be a protocol error that closes
    the connection), and the calls that completed wrote exactly their data."""
    import random

    async def t() -> None:
        rnd = random.Random(1234)
        async with brick() as (srv, leaf, _), client_of(srv.port) as (c, top):
            fds = []
            for i in range(8):
                cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f%d" % i, os.O_RDWR,
                                                         0o644, new_gfid()))
                fds.append(cr.fd)
            done: list[tuple[Fd, bytes]] = []

            async def one(fd: Fd, data: bytes, timeout: float) -> None:
                with trio.move_on_after(timeout):
                    await c.write(ROOT_CALL, WriteReq(fd, 0, data))
                    done.append((fd, data))

            for _ in range(5):
                async with trio.open_nursery() as n:
                    for k in range(40):
                        size = rnd.choice([1, 100, 5000, 70000, 300000, 1 << 20])
                        n.start_soon(one, fds[k % 8], os.urandom(size), rnd.random() * 0.02)
            assert c.connected and top.events == [Event.CHILD_UP]
            # fresh writes after the storm are exact
            for fd in fds:
                await c.write(ROOT_CALL, WriteReq(fd, 0, b"x" * 10))
                assert (await c.read(ROOT_CALL, ReadReq(fd, 0, 10))).data == b"x" * 10
            assert done  # some completed
    with caplog.at_level(logging.WARNING):
        run(t)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
        [r.getMessage() for r in caplog.records]


def test_malformed_reply_payload_fails_only_that_call(caplog: pytest.LogCaptureFixture) -> None:
    async def t() -> None:
        leaf = MemLeaf()

        async def bad_readlink(call: Call, req: InodeReq) -> Any:
            return fops.ReadlinkRep("a str where bytes belong")  # a brick bug

        leaf.readlink = bad_readlink  # type: ignore[method-assign]
        async with brick(leaf) as (srv, _, _), client_of(srv.port) as (c, top):
            with pytest.raises(FopError) as ei:
                await c.readlink(ROOT_CALL, InodeReq(ROOT_GFID))
            assert ei.value.errno == errno.EIO and "malformed reply" in ei.value.msg
            await c.stat(ROOT_CALL, InodeReq(ROOT_GFID))
            assert top.events == [Event.CHILD_UP]
    with caplog.at_level(logging.INFO):
        run(t)
    assert any("malformed readlink reply" in r.getMessage() for r in caplog.records)


def test_flush_reaches_the_brick_only_when_it_has_locks_to_drop() -> None:
    async def t() -> None:
        leaf = MemLeaf()
        leaf.hold.set()
        async with brick(leaf) as (srv, _, _), client_of(srv.port) as (c, _):
            g = new_gfid()
            cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR, 0o644, g))
            o = await c.open(ROOT_CALL, OpenReq(g, os.O_RDONLY))
            await c.flush(ROOT_CALL, FdReq(cr.fd))
            await c.flush(ROOT_CALL, FdReq(o.fd))
            await c.access(ROOT_CALL, AccessReq(ROOT_GFID, 0))  # the socket is in order
            assert [n for n, _ in leaf.calls].count("flush") == 0
            # xdata asks the brick for work: it goes
            await c.flush(ROOT_CALL, FdReq(o.fd, xdata={"x": 1}))
            assert [n for n, _ in leaf.calls].count("flush") == 1
            # a POSIX lock on the file through any fd: every close of the file goes
            await c.lk(ROOT_CALL, LkReq(cr.fd, fops.LK_SETLK, fops.F_WRLCK, 0, 0))
            await c.flush(ROOT_CALL, FdReq(o.fd))
            assert [n for n, _ in leaf.calls].count("flush") == 2
            with pytest.raises(FopError) as ei:  # an fd of another client is still refused
                await c.flush(ROOT_CALL, FdReq(Fd(g)))
            assert ei.value.errno == errno.EBADF

    run(t)


def _reads(leaf: MemLeaf) -> int:
    return [n for n, _ in leaf.calls].count("read")


def _track_reads(leaf: MemLeaf) -> MemLeaf:
    real = leaf.read

    async def read(call: Call, req: ReadReq) -> ReadRep:
        leaf.calls.append(("read", call))
        return await real(call, req)

    leaf.read = read  # type: ignore[method-assign]
    return leaf


def test_open_prefetch_answers_reads_until_this_client_changes_the_file() -> None:
    async def t() -> None:
        leaf = _track_reads(MemLeaf())
        async with brick(leaf) as (srv, _, _), client_of(srv.port) as (c, _):
            g = new_gfid()
            cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR, 0o644, g))
            await c.write(ROOT_CALL, WriteReq(cr.fd, 0, b"hello world"))
            o = await c.open(ROOT_CALL, OpenReq(g, os.O_RDONLY))
            assert (await c.read(ROOT_CALL, ReadReq(o.fd, 0, 4096))).data == b"hello world"
            assert (await c.read(ROOT_CALL, ReadReq(o.fd, 6, 3))).data == b"wor"
            assert (await c.read(ROOT_CALL, ReadReq(o.fd, 100, 10))).data == b""
            assert _reads(leaf) == 0
            # this client writes the file through another fd: the next read goes to the brick
            await c.write(ROOT_CALL, WriteReq(cr.fd, 0, b"HELLO"))
            assert (await c.read(ROOT_CALL, ReadReq(o.fd, 0, 4096))).data == b"HELLO world"
            assert _reads(leaf) == 1
            # read-write opens and files over the limit bring nothing back
            rw = await c.open(ROOT_CALL, OpenReq(g, os.O_RDWR))
            await c.read(ROOT_CALL, ReadReq(rw.fd, 0, 10))
            assert _reads(leaf) == 2
            await c.write(ROOT_CALL, WriteReq(cr.fd, 0, bytes(65 << 10)))
            big = await c.open(ROOT_CALL, OpenReq(g, os.O_RDONLY))
            await c.read(ROOT_CALL, ReadReq(big.fd, 0, 10))
            assert _reads(leaf) == 3
            for fd in (cr.fd, o.fd, rw.fd, big.fd):
                await c.release(ROOT_CALL, FdReq(fd))
            assert c._prefetched == {}

    run(t)


def test_open_prefetch_is_dropped_when_a_write_races_with_the_open() -> None:
    async def t() -> None:
        leaf = _track_reads(MemLeaf())
        async with brick(leaf) as (srv, _, _), client_of(srv.port) as (c, _):
            g = new_gfid()
            cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR, 0o644, g))
            await c.write(ROOT_CALL, WriteReq(cr.fd, 0, b"old"))
            opened: list[Any] = []
            gate = trio.Event()
            real_open = leaf.open

            async def slow_open(call: Call, req: OpenReq) -> OpenRep:
                rep = await real_open(call, req)  # content read before the write lands
                await gate.wait()
                return rep

            leaf.open = slow_open  # type: ignore[method-assign]
            async with trio.open_nursery() as n:
                async def opener() -> None:
                    opened.append(await c.open(ROOT_CALL, OpenReq(g, os.O_RDONLY)))
                n.start_soon(opener)
                while not any(name == "open" for name, _ in leaf.calls):
                    await trio.sleep(0.01)
                await c.write(ROOT_CALL, WriteReq(cr.fd, 0, b"new"))
                gate.set()
            assert (await c.read(ROOT_CALL, ReadReq(opened[0].fd, 0, 10))).data == b"new"
            assert _reads(leaf) == 1

    run(t)


def test_open_prefetch_off() -> None:
    async def t() -> None:
        leaf = _track_reads(MemLeaf())
        async with brick(leaf) as (srv, _, _), \
                client_of(srv.port, **{"open-prefetch": "0"}) as (c, _):
            g = new_gfid()
            cr = await c.create(ROOT_CALL, CreateReq(ROOT_GFID, b"f", os.O_RDWR, 0o644, g))
            await c.write(ROOT_CALL, WriteReq(cr.fd, 0, b"x"))
            o = await c.open(ROOT_CALL, OpenReq(g, os.O_RDONLY))
            assert (await c.read(ROOT_CALL, ReadReq(o.fd, 0, 10))).data == b"x"
            assert _reads(leaf) == 1

    run(t)
