"""protocol/client: the leaf of a client graph; one TCP connection to one brick.

A connection manager task (started by `init`) connects, handshakes, runs one reader task that
completes waiting calls by request id (so any number of fops are in flight on the socket) and a
heartbeat task that pings every ping-timeout/4 and declares the brick dead when nothing at all has
arrived for ping-timeout. A lost connection fails every in-flight call with ENOTCONN, notifies
CHILD_DOWN to the parents, and is re-established with jittered exponential backoff (capped at
`reconnect-max-delay`, 2 s by default, so a restarted brick is picked up quickly) followed by
CHILD_UP. While down, fops fail at once with ENOTCONN; nothing waits for a reconnect.

Open files survive a reconnect: the client keeps each Fd's gfid and flags, and the first fop on an
Fd opened on an earlier connection re-opens it by gfid on the new one (release of such an Fd is a
no-op: the brick dropped it with the old connection). An Fd that held POSIX locks is not re-opened
(the brick released its locks when the connection dropped): its fops fail with EBADF, as
GlusterFS's strict-locks does, rather than run unlocked.

Round trips saved: a flush reaches the brick only when it carries xdata or this client ever
took a POSIX lock on the file (a brick's flush does nothing else than drop the caller's locks).
A read-only open asks the brick for the content of a file of at most `open-prefetch` bytes
(GlusterFS's quick-read, at open rather than at lookup); reads on that fd within a second are
answered from it, unless this client changes the file (any modifying fop on its gfid, also one
racing with the open) or locks it meanwhile.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import random
import uuid
from dataclasses import replace
from typing import Any

import outcome
import trio

from ..fops import (
    CLOSES_FD,
    EMPTY,
    F_UNLCK,
    FOPS,
    LK_SETLK,
    LK_SETLKW,
    OPENS_FD,
    FdReq,
    Fop,
    InodeReq,
    Kind,
    OpenReq,
    ReadRep,
)
from ..types import NULL_GFID, RESERVE_DOMAIN, Call, Fd, FopError
from ..xlator import Event, GraphError, Option, Translator, register
from .codec import (
    DEFAULT_MAX_FRAME,
    FRAME_TYPES,
    HEADER_SIZE,
    T_PONG,
    T_REPLY,
    Frame,
    FrameDecoder,
    Hello,
    ProtocolError,
    decode_hello_reply,
    decode_reply,
    encode_hello,
    encode_ping,
    encode_request,
)
from .transport import FrameWriter

log = logging.getLogger(__name__)

_OP_OPEN = FOPS["open"].opcode
_OP_CREATE = FOPS["create"].opcode
_OP_OPENDIR = FOPS["opendir"].opcode
_OP_LK = FOPS["lk"].opcode
_OP_FLUSH = FOPS["flush"].opcode
_OP_READ = FOPS["read"].opcode
_OP_ENTRYLK = FOPS["entrylk"].opcode
_PREFETCH_TTL = 1.0  # seconds an open's prefetched content may answer reads (as attr-timeout)
_OPENS = frozenset(FOPS[n].opcode for n in OPENS_FD)
_CLOSES = frozenset(FOPS[n].opcode for n in CLOSES_FD)
_REOPEN_DROP = os.O_CREAT | os.O_EXCL | os.O_TRUNC
_PREFETCH_NOT = os.O_ACCMODE | os.O_DIRECT | os.O_TRUNC  # prefetch for O_RDONLY only
_RECV_MIN = 65536
_RECV_MAX = 4 << 20
_FIRST_RETRY = 0.05
_REJECT_RETRY = 5.0
_KIND_FD = Kind.FD
_reschedule = trio.lowlevel.reschedule
_current_task = trio.lowlevel.current_task
_wait_rescheduled = trio.lowlevel.wait_task_rescheduled
_ABORT_OK = trio.lowlevel.Abort.SUCCEEDED


def _describe(e: BaseException) -> str:
    """The useful part of a connect error: trio wraps the per-address errors."""
    cause = e.__cause__
    subs = getattr(cause, "exceptions", None)
    if subs:
        e = subs[-1]
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class _Rejected(Exception):
    """The brick refused our handshake."""


class _RemoteFd:
    """protocol/client's state of an Fd (`fd.ctx[client]`): the brick's fd number and the
    connection generation it is valid on."""

    __slots__ = ("data", "data_until", "gen", "lock", "locked", "num")

    def __init__(self, num: int, gen: int) -> None:
        self.num = num
        self.gen = gen
        self.locked = False  # held POSIX locks: not re-opened after a reconnect
        self.lock: trio.Lock | None = None  # serialises a re-open
        # a read-only open's prefetched content of the whole (small) file, and until when
        # it may answer reads
        self.data: bytes | None = None
        self.data_until = 0.0

    def __repr__(self) -> str:
        return f"<remote fd {self.num} gen {self.gen}>"


class _Waiter:
    """One call waiting for its reply."""

    __slots__ = ("abandoned", "done", "fop", "result", "task")

    def __init__(self, fop: Fop) -> None:
        self.fop = fop
        self.task: Any = None  # set while the caller is parked
        self.result: Any = None  # outcome.Value / outcome.Error once done
        self.done = False
        self.abandoned = False


class _Connection:
    __slots__ = ("client", "decoder", "dead", "gen", "last_rx", "nursery", "pending",
                 "reason", "stream", "writer")

    def __init__(self, client: Client, stream: trio.SocketStream, decoder: FrameDecoder,
                 gen: int) -> None:
        self.client = client
        self.stream = stream
        self.decoder = decoder
        self.gen = gen
        self.writer = FrameWriter(stream.socket)
        self.pending: dict[int, _Waiter] = {}
        self.last_rx = trio.current_time()
        self.dead = False
        self.reason = ""
        self.nursery: trio.Nursery | None = None

    def new_fd(self, n: int) -> Fd:
        """fd_from_wire hook for replies: the caller fills in gfid/flags/is_dir."""
        return Fd(NULL_GFID, ctx={self.client: _RemoteFd(n, self.gen)})

    def kill(self, reason: str) -> None:
        """Declare the connection dead (first reason wins) and unblock its tasks."""
        if self.dead:
            return
        self.dead = True
        self.reason = reason
        # closing the socket wakes the reader and any blocked sender
        self.stream.socket.close()
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def send(self, parts: tuple) -> None:
        if self.dead:
            raise FopError(errno.ENOTCONN, self.client.down_message(self))
        try:
            await self.writer.send(parts)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            self.kill(f"send failed: {e or type(e).__name__}")
            raise FopError(errno.ENOTCONN, self.client.down_message(self)) from None


@register("protocol/client")
class Client(Translator):
    min_children = 0
    max_children = 0
    options_schema = {
        "remote-host": Option("str", "", doc="brick host"),
        "remote-port": Option("int", 0, min=0, max=65535, doc="brick port"),
        "remote-subvolume": Option("str", "", doc="brick path, checked by the brick"),
        "volume-name": Option("str", ""),
        "volume-id": Option("str", ""),
        "username": Option("str", ""),
        "password": Option("str", ""),
        "ping-timeout": Option("float", 10.0, min=0.05,
                               doc="seconds without any traffic from the brick before it is "
                                   "declared down"),
        "connect-timeout": Option("float", 5.0, min=0.01, doc="connect + handshake deadline"),
        "reconnect-max-delay": Option("float", 2.0, min=0.01, doc="cap of the retry backoff"),
        "transport-type": Option("choice", "tcp", choices=("tcp",),
                                 doc="tcp, the only transport: any other is refused"),
        "frame-max-size": Option("size", DEFAULT_MAX_FRAME, min=65536 + HEADER_SIZE),
        "open-prefetch": Option("size", 64 << 10, min=0, max=1 << 20,
                                doc="a read-only open of a regular file up to this size brings "
                                    "its content back with it, and reads within 1 s of the "
                                    "open are answered from it (GlusterFS's quick-read); "
                                    "0 = off"),
    }

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        o = self.opts
        if not o["remote-host"] or not o["remote-port"]:
            raise GraphError(f"{self.type_name}: remote-host and remote-port are required")
        self.host: str = o["remote-host"]
        self.port: int = o["remote-port"]
        self.ping_timeout: float = o["ping-timeout"]
        self.max_frame: int = o["frame-max-size"]
        self.prefetch: int = o["open-prefetch"]
        self.client_uuid = str(uuid.uuid4())
        self._conn: _Connection | None = None
        self._gen = 0
        self._rids = itertools.count(1)
        self._state: bool | None = None  # None: not yet known, True: up, False: down
        self._up = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None
        self._last_error = "not connected yet"
        self._closing = False
        # files this client ever took a POSIX lock on (lk): only their flushes reach the brick
        self._lk_gfids: set[bytes] = set()
        # gfid -> open fds holding prefetched content (dropped when this client modifies it)
        self._prefetched: dict[bytes, set[_RemoteFd]] = {}

    # ------------------------------------------------------------ public
    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.dead

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until connected (True) or `timeout` seconds pass (False)."""
        if self.connected:
            return True
        with trio.move_on_after(float("inf") if timeout is None else timeout):
            while not self.connected:
                await self._up.wait()
            return True
        return False

    def down_message(self, conn: _Connection | None = None) -> str:
        why = conn.reason if conn is not None and conn.reason else self._last_error
        return f"{self.name}: brick {self.host}:{self.port} is not connected ({why})"

    # ------------------------------------------------------------ lifecycle
    async def init(self, nursery: trio.Nursery) -> None:
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        nursery.start_soon(self._manager)

    async def fini(self) -> None:
        self._closing = True
        if self._scope is not None:
            self._scope.cancel()
        conn = self._conn
        if conn is not None:
            conn.kill("client shut down")
        if self._stopped is not None:
            with trio.move_on_after(5):
                await self._stopped.wait()

    # ------------------------------------------------------------ fops
    async def handle(self, fop: Fop, call: Call, req: Any) -> Any:
        op = fop.opcode
        if op == _OP_ENTRYLK and req.domain == RESERVE_DOMAIN:
            # reservations live in cluster/replicate; a brick has nothing to reserve with
            raise FopError(errno.EOPNOTSUPP, f"{self.name}: no name reservations here")
        if op == _OP_FLUSH and req.xdata is None and req.fd.gfid not in self._lk_gfids:
            # a brick's flush only drops the POSIX locks of the caller's lock owner on the
            # file (features/locks; storage/posix does nothing): no lk through this client on
            # the file, no locks to drop, no round trip. (POSIX drops a process's locks on
            # close of *any* fd of the file, so this is tracked per file, not per fd.)
            if req.fd.ctx.get(self) is None:
                raise FopError(errno.EBADF, f"{self.name}: fd was not opened through this "
                                            "client")
            return EMPTY
        if op == _OP_READ:
            rfd = req.fd.ctx.get(self)
            if rfd is not None and rfd.data is not None:
                if trio.current_time() < rfd.data_until:
                    return ReadRep(rfd.data[req.offset:req.offset + req.size])
                self._unprefetch(req.fd.gfid, rfd)
        elif self._prefetched and (fop.modifies or op == _OP_LK):
            self._stale(fop, req)
        conn = self._conn
        if conn is None or conn.dead:
            raise FopError(errno.ENOTCONN, self.down_message(conn))
        if fop.kind is _KIND_FD:
            rfd = req.fd.ctx.get(self)
            if rfd is None:
                raise FopError(errno.EBADF, f"{self.name}: fd was not opened through this "
                                            "client")
            if rfd.gen != conn.gen:
                if op in _CLOSES:
                    return EMPTY  # released already, or the brick did when the connection went
                if rfd.gen < 0:
                    raise FopError(errno.EBADF, f"{self.name}: fd was released")
                await self._reopen(call, req.fd, rfd, conn)
            if op in _CLOSES:
                # fire and forget, but in order: the frame is on the socket before we return
                if rfd.data is not None:
                    self._unprefetch(req.fd.gfid, rfd)
                rfd.gen = -1
                try:
                    await conn.send(encode_request(fop, next(self._rids), call, req,
                                                   self._fd_to_wire, self.max_frame))
                except FopError:
                    pass  # connection gone: the brick releases it
                return EMPTY
        if op == _OP_LK:
            self._lk_gfids.add(req.fd.gfid)  # before the lock can be granted
        token = None
        if (op == _OP_OPEN and self.prefetch and req.flags & _PREFETCH_NOT == os.O_RDONLY
                and req.gfid not in self._lk_gfids):
            req = replace(req, prefetch=self.prefetch)
            # a change of the file by this client while the open is under way removes the
            # token (_stale): the content the open brings back may predate it
            token = _RemoteFd(-1, -1)
            self._prefetched.setdefault(req.gfid, set()).add(token)
        try:
            rep = await self._roundtrip(conn, fop, call, req)
        finally:
            if token is not None:
                fresh = token in self._prefetched.get(req.gfid, ())
                self._unprefetch(req.gfid, token)
            elif self._prefetched and (fop.modifies or op == _OP_LK):
                self._stale(fop, req)  # again: an open may have raced with it
        if op in _OPENS and rep.fd is not None:  # (a create with `close` leaves no fd)
            fd = rep.fd
            if op == _OP_OPEN:
                fd.gfid = req.gfid
                fd.flags = req.flags
                if rep.data and token is not None and fresh:
                    rfd = fd.ctx[self]
                    rfd.data = rep.data
                    rfd.data_until = trio.current_time() + _PREFETCH_TTL
                    self._prefetched.setdefault(req.gfid, set()).add(rfd)
            elif op == _OP_CREATE:
                fd.gfid = rep.iatt.gfid
                fd.flags = req.flags
            else:
                fd.gfid = req.gfid
                fd.is_dir = True
        elif op == _OP_LK and req.cmd in (LK_SETLK, LK_SETLKW) and req.type != F_UNLCK:
            req.fd.ctx[self].locked = True
        return rep

    def _stale(self, fop: Fop, req: Any) -> None:
        """This client changes a file (or locks it): content prefetched by opens is stale."""
        g = req.fd.gfid if fop.kind is _KIND_FD else getattr(req, "gfid", None)
        fds = self._prefetched.pop(g, None) if g is not None else None
        if fds:
            for x in fds:
                x.data = None

    def _unprefetch(self, gfid: bytes, rfd: _RemoteFd) -> None:
        rfd.data = None
        fds = self._prefetched.get(gfid)
        if fds is not None:
            fds.discard(rfd)
            if not fds:
                del self._prefetched[gfid]

    def _fd_to_wire(self, fd: Fd) -> int:
        return fd.ctx[self].num

    async def _roundtrip(self, conn: _Connection, fop: Fop, call: Call, req: Any) -> Any:
        rid = next(self._rids)
        try:
            parts = encode_request(fop, rid, call, req, self._fd_to_wire, self.max_frame)
        except ProtocolError as e:  # too large to send
            raise FopError(errno.EMSGSIZE, f"{self.name}: {fop.name}: {e}") from None
        w = _Waiter(fop)
        pending = conn.pending
        pending[rid] = w
        try:
            await conn.send(parts)
        except BaseException:
            pending.pop(rid, None)
            raise
        if not w.done:
            w.task = _current_task()

            def abort(_: Any) -> Any:
                # cancelled while waiting: the reader drops (or cleans up after) the late reply
                w.abandoned = True
                w.task = None
                return _ABORT_OK

            return await _wait_rescheduled(abort)  # the reader reschedules us with the outcome
        return w.result.unwrap()

    async def _reopen(self, call: Call, fd: Fd, rfd: _RemoteFd, conn: _Connection) -> None:
        if rfd.locked:
            raise FopError(errno.EBADF, f"{self.name}: fd held POSIX locks on a lost "
                                        "connection to the brick; not re-opened")
        if rfd.lock is None:
            rfd.lock = trio.Lock()
        async with rfd.lock:
            if rfd.gen == conn.gen:
                return  # another task re-opened it meanwhile
            try:
                if fd.is_dir:
                    rep = await self._roundtrip(conn, FOPS["opendir"], call, InodeReq(fd.gfid))
                else:
                    rep = await self._roundtrip(conn, FOPS["open"], call,
                                                OpenReq(fd.gfid, fd.flags & ~_REOPEN_DROP))
            except FopError as e:
                if e.errno == errno.ENOTCONN:
                    raise
                raise FopError(errno.EBADF, f"{self.name}: re-opening the fd after a reconnect "
                                            f"failed: {e}") from None
            new = rep.fd.ctx[self]
            rfd.num, rfd.gen = new.num, new.gen
            log.info("%s: re-opened fd of %s on the new connection", self.name, fd.gfid.hex())

    # ------------------------------------------------------------ connection manager
    async def _manager(self) -> None:
        assert self._scope is not None and self._stopped is not None
        delay = _FIRST_RETRY
        last_logged = ""
        try:
            with self._scope:
                while True:
                    try:
                        stream, decoder = await self._connect()
                    except _Rejected as e:
                        self._last_error = f"handshake rejected: {e}"
                        if self._last_error != last_logged:
                            log.error("%s: brick %s:%d rejected the connection: %s",
                                      self.name, self.host, self.port, e)
                            last_logged = self._last_error
                        await self._set_state(False)
                        await trio.sleep(_REJECT_RETRY * random.uniform(0.8, 1.2))
                        continue
                    except (OSError, trio.TooSlowError, trio.BrokenResourceError,
                            trio.ClosedResourceError, ProtocolError, EOFError) as e:
                        msg = _describe(e)
                        if isinstance(e, trio.TooSlowError):
                            msg = f"no answer within {self.opts['connect-timeout']}s"
                        self._last_error = f"cannot connect: {msg}"
                        if self._last_error != last_logged:
                            log.warning("%s: cannot connect to brick %s:%d: %s", self.name,
                                        self.host, self.port, msg)
                            last_logged = self._last_error
                        await self._set_state(False)
                        await trio.sleep(delay * random.uniform(0.5, 1.0))
                        delay = min(delay * 2, self.opts["reconnect-max-delay"])
                        continue
                    delay = _FIRST_RETRY
                    last_logged = ""
                    await self._run_connection(stream, decoder)
                    # lost: try again at once (a brick restart is usually quick)
        finally:
            self._stopped.set()

    async def _connect(self) -> tuple[trio.SocketStream, FrameDecoder]:
        hello = Hello(volume=self.opts["volume-name"], volume_id=self.opts["volume-id"],
                      brick=self.opts["remote-subvolume"], username=self.opts["username"],
                      password=self.opts["password"], client_uuid=self.client_uuid,
                      ping_interval=self._ping_interval(), name=self.name)
        with trio.fail_after(self.opts["connect-timeout"]):
            stream = await trio.open_tcp_stream(self.host, self.port)
            try:
                await stream.send_all(encode_hello(hello))
                decoder = FrameDecoder(self.max_frame)
                frames: list[Frame] = []
                while not frames:
                    data = await stream.receive_some(_RECV_MIN)
                    if not data:
                        raise EOFError("the brick closed the connection during the handshake")
                    frames = decoder.feed(data)
                if len(frames) > 1:
                    raise ProtocolError("unexpected frames after the handshake reply")
                reply = decode_hello_reply(frames[0])
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        if not reply.ok:
            await trio.aclose_forcefully(stream)
            raise _Rejected(reply.reason or "no reason given")
        return stream, decoder

    def _ping_interval(self) -> float:
        return self.ping_timeout / 4

    async def _run_connection(self, stream: trio.SocketStream, decoder: FrameDecoder) -> None:
        self._gen += 1
        conn = _Connection(self, stream, decoder, self._gen)
        try:
            async with trio.open_nursery() as nursery:
                conn.nursery = nursery
                nursery.start_soon(self._reader, conn)
                nursery.start_soon(self._heartbeat, conn)
                self._conn = conn
                log.info("%s: connected to brick %s:%d (%s)", self.name, self.host, self.port,
                         self.opts["remote-subvolume"] or "?")
                await self._set_state(True)
        finally:
            conn.kill(conn.reason or "client shut down")
            if self._conn is conn:
                self._conn = None
            if self._up.is_set():
                self._up = trio.Event()
            self._last_error = conn.reason
            self._fail_pending(conn)
            await trio.aclose_forcefully(stream)
        if not self._closing:
            log.warning("%s: disconnected from brick %s:%d: %s", self.name, self.host,
                        self.port, conn.reason)
            await self._set_state(False)

    def _fail_pending(self, conn: _Connection) -> None:
        pending = conn.pending
        conn.pending = {}
        msg = self.down_message(conn)
        for w in pending.values():
            if w.done:
                continue
            w.done = True
            w.result = outcome.Error(FopError(errno.ENOTCONN, msg))
            if w.task is not None:
                task, w.task = w.task, None
                _reschedule(task, w.result)

    async def _set_state(self, up: bool) -> None:
        if up:
            self._up.set()
        if self._state is up:
            return
        self._state = up
        event = Event.CHILD_UP if up else Event.CHILD_DOWN
        for p in self.parents:
            try:
                await p.notify(event, self)
            except Exception:
                log.exception("%s: %s notify of %s failed", self.name, event.value, p.name)

    async def _reader(self, conn: _Connection) -> None:
        stream = conn.stream
        decoder = conn.decoder
        complete = self._complete
        try:
            while True:
                want = decoder.wanted()
                data = await stream.receive_some(
                    _RECV_MIN if want <= _RECV_MIN else min(want, _RECV_MAX))
                if not data:
                    conn.kill("connection closed by the brick")
                    return
                conn.last_rx = trio.current_time()
                for f in decoder.feed(data):
                    if f.type == T_REPLY:
                        complete(conn, f)
                    elif f.type != T_PONG:
                        raise ProtocolError(f"unexpected {FRAME_TYPES[f.type]} frame")
        except ProtocolError as e:
            log.error("%s: protocol error from brick %s:%d: %s", self.name, self.host,
                      self.port, e)
            conn.kill(f"protocol error: {e}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            conn.kill(f"connection lost: {e or type(e).__name__}")
        finally:
            # also on cancellation: closing the socket wakes writes blocked in shielded scopes
            conn.kill("connection closed")

    def _complete(self, conn: _Connection, f: Frame) -> None:
        w = conn.pending.pop(f.rid, None)
        if w is None:
            return  # reply to a fire-and-forget release
        if f.opcode != w.fop.opcode:
            raise ProtocolError(f"reply opcode {f.opcode} for a {w.fop.name} request")
        try:
            result = outcome.Value(decode_reply(f, w.fop, conn.new_fd))
        except FopError as e:
            result = outcome.Error(e)
        except ProtocolError as e:
            # the frame is intact, only its payload is wrong (a brick bug): fail this call only
            log.error("%s: malformed %s reply from brick %s:%d: %s", self.name, w.fop.name,
                      self.host, self.port, e)
            result = outcome.Error(FopError(errno.EIO, f"malformed reply from the brick: {e}"))
        if w.abandoned:
            if f.opcode in _OPENS and isinstance(result, outcome.Value):
                # the caller gave up on an open that succeeded: close it on the brick
                rep = result.value
                conn.nursery.start_soon(self._release_orphan, conn, rep.fd,
                                        f.opcode == _OP_OPENDIR)
            return
        w.done = True
        w.result = result
        if w.task is not None:
            task, w.task = w.task, None
            _reschedule(task, result)

    async def _release_orphan(self, conn: _Connection, fd: Fd, is_dir: bool) -> None:
        fop = FOPS["releasedir" if is_dir else "release"]
        try:
            await conn.send(encode_request(fop, next(self._rids), Call(), FdReq(fd),
                                           self._fd_to_wire))
        except FopError:
            pass

    async def _heartbeat(self, conn: _Connection) -> None:
        tick = self._ping_interval()
        ping = encode_ping()
        while True:
            await trio.sleep(tick)
            idle = trio.current_time() - conn.last_rx
            if idle > self.ping_timeout:
                log.error("%s: brick %s:%d did not answer for %.1fs (ping-timeout %gs)",
                          self.name, self.host, self.port, idle, self.ping_timeout)
                conn.kill(f"no answer for {idle:.1f}s (ping-timeout {self.ping_timeout:g}s)")
                return
            if not conn.writer.busy:  # a busy socket needs no ping
                conn.nursery.start_soon(self._send_ping, conn, ping)

    async def _send_ping(self, conn: _Connection, ping: bytes) -> None:
        try:
            await conn.send((ping,))
        except FopError:
            pass
