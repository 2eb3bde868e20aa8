"""protocol/server: the top of a brick graph; serves the graph below it to clients over TCP.

One trio task per connection reads frames and starts one task per request, so many fops are in
flight on one connection; replies are written under one lock in a shielded scope. Per connection:
a handshake (volume, brick, credentials, peer address against auth.allow/auth.reject) before any
fop, a table of the brick graph's open Fds (fd number -> Fd), and on disconnect every remaining fd
is released down the graph and `client_disconnect(conn_id)` is called on every translator that has
it (features/locks drops the client's locks). Garbage or an oversize frame closes that connection
only, with a warning naming the peer and the reason.
"""
from __future__ import annotations

import errno
import fnmatch
import hmac
import inspect
import ipaddress
import itertools
import logging
import uuid
from functools import partial
from typing import Any

import trio

from ..errgroups import collapsed
from ..fops import CLOSES_FD, FOP_LIST, OPENS_FD, FdReq, Fop
from ..types import Call, Fd, FopError
from ..xlator import Option, Translator, register
from .codec import (
    DEFAULT_MAX_FRAME,
    FRAME_TYPES,
    HEADER_SIZE,
    MAX_ERRNO,
    T_PING,
    T_REQUEST,
    VERSION,
    Frame,
    FrameDecoder,
    Hello,
    HelloReply,
    ProtocolError,
    decode_hello,
    decode_request,
    encode_error,
    encode_hello_reply,
    encode_pong,
    encode_reply,
    fop_by_opcode,
)
from .transport import FrameWriter

log = logging.getLogger(__name__)

_OPENS_DIR = frozenset(f.opcode for f in FOP_LIST if f.name == "opendir")
_OPENS = frozenset(f.opcode for f in FOP_LIST if f.name in OPENS_FD)
_CLOSES = frozenset(f.opcode for f in FOP_LIST if f.name in CLOSES_FD)
_RECV_MIN = 65536
_RECV_MAX = 4 << 20
_CLEANUP_TIMEOUT = 10.0  # bound on releasing a dead connection's fds and locks


def normalize_volume_id(v: str) -> str:
    try:
        return str(uuid.UUID(v))
    except ValueError:
        return v.strip().lower()


def _norm_addr(host: str) -> str:
    try:
        a = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


def addr_matches(addr: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """Does `addr` match any pattern: an address, a CIDR network or an fnmatch glob."""
    for p in patterns:
        if p == "*" or p == addr or fnmatch.fnmatchcase(addr, p):
            return True
        if "/" in p:
            try:
                if ipaddress.ip_address(addr) in ipaddress.ip_network(p, strict=False):
                    return True
            except ValueError:
                continue
    return False


class _Conn:
    """Server side of one client connection."""

    __slots__ = ("cid", "peer", "stream", "writer", "fds", "dirs", "next_fd", "last_rx",
                 "send_since", "broken", "hello", "served", "idle_limit", "reason")

    def __init__(self, cid: str, peer: str, stream: trio.abc.Stream) -> None:
        self.cid = cid
        self.peer = peer
        self.stream = stream
        self.writer = FrameWriter(stream.socket)
        self.fds: dict[int, Fd] = {}
        self.dirs: set[int] = set()
        self.next_fd = 1
        self.last_rx = trio.current_time()
        self.send_since = 0.0  # when the write in progress started (0: none)
        self.broken = False
        self.hello: Hello | None = None
        self.served = 0
        self.idle_limit = 0.0
        self.reason = ""  # why the server closed it, if it did

    # codec hooks
    def add_fd(self, fd: Fd) -> int:
        n = self.next_fd
        self.next_fd = n + 1
        self.fds[n] = fd
        return n

    def add_dir(self, fd: Fd) -> int:
        n = self.add_fd(fd)
        self.dirs.add(n)
        return n

    def get_fd(self, n: int) -> Fd:
        try:
            return self.fds[n]
        except KeyError:
            raise FopError(errno.EBADF, f"fd {n} is not open on this connection") from None

    def take_fd(self, n: int) -> Fd:
        fd = self.get_fd(n)
        del self.fds[n]
        self.dirs.discard(n)
        return fd

    async def send(self, parts: tuple) -> None:
        if self.broken:
            return
        if not self.send_since:
            self.send_since = trio.current_time()
        try:
            await self.writer.send(parts)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.broken = True
        # a write finished: progress (the watchdog times the one queued next, if any)
        self.send_since = trio.current_time() if self.writer.busy else 0.0


def _no_fd(fd: Fd) -> int:
    raise ProtocolError("reply carries an fd but the fop does not open one")


@register("protocol/server")
class Server(Translator):
    options_schema = {
        "listen-host": Option("str", "0.0.0.0", doc="address to listen on ('' = all)"),
        "listen-port": Option("int", 0, min=0, max=65535, doc="TCP port (0 = ephemeral)"),
        "volume-name": Option("str", "", doc="volume this brick belongs to"),
        "volume-id": Option("str", "", doc="volume uuid; clients naming another are refused"),
        "brick-path": Option("str", "", doc="the brick name clients ask for in the handshake"),
        "auth.username": Option("str", "", doc="if set, clients must present it"),
        "auth.password": Option("str", "", doc="if set, clients must present it"),
        "auth.allow": Option("list", ("*",), doc="addresses, CIDR networks or globs allowed"),
        "auth.reject": Option("list", (), doc="addresses, networks or globs refused (wins)"),
        "frame-max-size": Option("size", DEFAULT_MAX_FRAME, min=65536 + HEADER_SIZE,
                                 doc="largest frame accepted or sent"),
        "ping-timeout": Option("float", 10.0, min=0.05,
                               doc="handshake deadline; a connection silent for longer than "
                                   "this and 3 client ping intervals is closed"),
    }

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        o = self.opts
        self.max_frame: int = o["frame-max-size"]
        self.ping_timeout: float = o["ping-timeout"]
        self.port: int | None = None
        self.server_uuid = str(uuid.uuid4())
        self.connections: dict[str, _Conn] = {}
        self._ids = itertools.count(1)
        self._volume_id = normalize_volume_id(o["volume-id"]) if o["volume-id"] else ""

    # ------------------------------------------------------------ listening
    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; `task_status.started(bound_port)`."""
        host = self.opts["listen-host"] or None
        with collapsed():  # a port in use reaches the caller as the OSError it is
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(partial(
                    trio.serve_tcp, self._handle_stream, self.opts["listen-port"], host=host))
                self.port = listeners[0].socket.getsockname()[1]
                log.info("%s: serving %s on %s:%d", self.name,
                         self.opts["brick-path"] or self.children[0].name, host or "*",
                         self.port)
                task_status.started(self.port)

    # ------------------------------------------------------------ one connection
    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        peer = "?"
        try:
            addr = stream.socket.getpeername()
            peer = f"{addr[0]}:{addr[1]}" if ":" not in addr[0] else f"[{addr[0]}]:{addr[1]}"
            await self._connection(stream, _norm_addr(addr[0]), peer)
        except Exception:
            log.exception("%s: connection from %s failed", self.name, peer)
        finally:
            await trio.aclose_forcefully(stream)

    async def _connection(self, stream: trio.SocketStream, host: str, peer: str) -> None:
        decoder = FrameDecoder(self.max_frame)
        conn = _Conn(f"{peer}#{next(self._ids)}", peer, stream)
        try:
            hello = await self._handshake(conn, decoder, host)
        except ProtocolError as e:
            log.warning("%s: closing connection from %s: bad handshake: %s", self.name, peer, e)
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        if hello is None:
            return
        conn.hello = hello
        conn.cid = f"{hello.client_uuid or 'anonymous'}@{peer}#{conn.cid.rsplit('#', 1)[1]}"
        conn.idle_limit = max(self.ping_timeout, 3 * hello.ping_interval) \
            if hello.ping_interval > 0 else 0.0
        self.connections[conn.cid] = conn
        log.info("%s: client %s (%s) connected", self.name, conn.cid, hello.name or "?")
        reason = "brick shutting down"  # unless the read loop ends first
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watchdog, conn, nursery.cancel_scope)
                try:
                    reason = await self._read_loop(conn, decoder, nursery)
                except ProtocolError as e:
                    reason = f"protocol error: {e}"
                    log.warning("%s: closing connection from %s: %s", self.name, peer, e)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    reason = f"connection lost: {e or type(e).__name__}"
                finally:
                    # also on cancellation (shutdown): closing the socket wakes a reply write
                    # blocked in its shielded scope on a peer that stopped reading
                    conn.broken = True
                    stream.socket.close()
                nursery.cancel_scope.cancel()  # in-flight fops of a gone client are moot
        finally:
            del self.connections[conn.cid]
            await self._cleanup(conn, conn.reason or reason)

    async def _handshake(self, conn: _Conn, decoder: FrameDecoder, host: str) -> Hello | None:
        frames: list[Frame] = []
        with trio.move_on_after(self.ping_timeout):
            while not frames:
                data = await conn.stream.receive_some(_RECV_MIN)
                if not data:
                    return None
                frames = decoder.feed(data)
        if not frames:
            log.warning("%s: closing connection from %s: no handshake within %.3gs",
                        self.name, conn.peer, self.ping_timeout)
            return None
        hello = decode_hello(frames[0])
        if len(frames) > 1:
            raise ProtocolError("frames sent before the handshake was answered")
        why = self._check_hello(hello, host)
        if why:
            log.warning("%s: rejected client %s (%s, %s): %s", self.name, conn.peer,
                        hello.name or "?", hello.client_uuid or "no uuid", why)
            await conn.send((encode_hello_reply(HelloReply(False, why, self.server_uuid)),))
            return None
        await conn.send((encode_hello_reply(HelloReply(True, "", self.server_uuid)),))
        return hello

    def _check_hello(self, h: Hello, host: str) -> str:
        o = self.opts
        if h.version != VERSION:
            return f"unsupported protocol version {h.version}"
        if addr_matches(host, o["auth.reject"]):
            return f"address {host} is rejected by auth.reject"
        if not addr_matches(host, o["auth.allow"]):
            return f"address {host} is not in auth.allow"
        if o["volume-name"] and h.volume and h.volume != o["volume-name"]:
            return f"brick belongs to volume {o['volume-name']!r}, not {h.volume!r}"
        if self._volume_id and h.volume_id and \
                normalize_volume_id(h.volume_id) != self._volume_id:
            return f"volume id mismatch: brick serves {self._volume_id}, client asked for " \
                   f"{h.volume_id}"
        if o["brick-path"] and h.brick and h.brick != o["brick-path"]:
            return f"this port serves brick {o['brick-path']!r}, not {h.brick!r}"
        if o["auth.username"] or o["auth.password"]:
            ok_user = hmac.compare_digest(h.username.encode(), o["auth.username"].encode())
            ok_pass = hmac.compare_digest(h.password.encode(), o["auth.password"].encode())
            if not (ok_user and ok_pass):
                return "authentication failed (bad username or password)"
        return ""

    async def _read_loop(self, conn: _Conn, decoder: FrameDecoder,
                         nursery: trio.Nursery) -> str:
        stream = conn.stream
        serve_one = self._serve_one
        cid = conn.cid
        get_fd, take_fd = conn.get_fd, conn.take_fd
        while True:
            want = decoder.wanted()
            data = await stream.receive_some(
                _RECV_MIN if want <= _RECV_MIN else min(want, _RECV_MAX))
            if not data:
                return "closed by the client"
            conn.last_rx = trio.current_time()
            for f in decoder.feed(data):
                if f.type == T_REQUEST:
                    try:
                        fop, call, req = decode_request(
                            f, take_fd if f.opcode in _CLOSES else get_fd, cid)
                    except FopError as e:
                        nursery.start_soon(conn.send, encode_error(
                            fop_by_opcode(f.opcode), f.rid, e.errno, e.msg))
                        continue
                    nursery.start_soon(serve_one, conn, fop, call, req, f.rid)
                elif f.type == T_PING:
                    await conn.send((encode_pong(f.rid),))
                else:
                    raise ProtocolError(f"unexpected {FRAME_TYPES[f.type]} frame from a client")

    async def _serve_one(self, conn: _Conn, fop: Fop, call: Call, req: Any, rid: int) -> None:
        try:
            rep = await getattr(self.children[0], fop.name)(call, req)
            op = fop.opcode
            hook = (conn.add_dir if op in _OPENS_DIR else conn.add_fd) if op in _OPENS else _no_fd
            parts = encode_reply(fop, rid, rep, hook, self.max_frame)
        except FopError as e:
            err = e.errno if isinstance(e.errno, int) and 0 < e.errno <= MAX_ERRNO else errno.EIO
            parts = encode_error(fop, rid, err, e.msg if isinstance(e.msg, str) else "")
        except Exception as e:
            log.exception("%s: %s from %s failed unexpectedly", self.name, fop.name, conn.cid)
            parts = encode_error(fop, rid, errno.EIO, f"brick error in {fop.name}: "
                                                      f"{type(e).__name__}")
        conn.served += 1
        await conn.send(parts)

    async def _watchdog(self, conn: _Conn, scope: trio.CancelScope) -> None:
        """Close a connection that went silent, or whose peer stopped reading our replies."""
        limit = conn.idle_limit
        tick = max(min(self.ping_timeout, limit or self.ping_timeout) / 4, 0.01)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            why = ""
            if limit and now - conn.last_rx > limit:
                why = f"nothing received for {now - conn.last_rx:.1f}s"
            elif conn.send_since and now - conn.send_since > max(self.ping_timeout, limit):
                why = f"a reply could not be written for {now - conn.send_since:.1f}s"
            if why:
                log.warning("%s: closing connection from %s: %s", self.name, conn.peer, why)
                conn.reason = why
                conn.broken = True
                await trio.aclose_forcefully(conn.stream)
                scope.cancel()
                return

    async def _cleanup(self, conn: _Conn, reason: str) -> None:
        """Release what a gone client held: its open fds, then its locks."""
        child = self.children[0]
        call = Call(client=conn.cid)
        nfds = len(conn.fds)
        with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_TIMEOUT) as cs:
            for n, fd in list(conn.fds.items()):
                try:
                    if n in conn.dirs:
                        await child.releasedir(call, FdReq(fd))
                    else:
                        await child.release(call, FdReq(fd))
                except Exception as e:
                    log.warning("%s: releasing fd %d of %s: %s", self.name, n, conn.cid, e)
            conn.fds.clear()
            conn.dirs.clear()
            for x in self.walk():
                hook = getattr(x, "client_disconnect", None)
                if hook is None:
                    continue
                try:
                    r = hook(conn.cid)
                    if inspect.isawaitable(r):
                        await r
                except Exception:
                    log.exception("%s: client_disconnect(%s) in %s failed", self.name,
                                  conn.cid, x.name)
        if cs.cancelled_caught:
            log.error("%s: cleanup of %s did not finish within %ss", self.name, conn.cid,
                      _CLEANUP_TIMEOUT)
        log.info("%s: client %s disconnected (%s); served %d fops, released %d fds",
                 self.name, conn.cid, reason, conn.served, nfds)


