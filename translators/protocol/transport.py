"""The socket writing protocol/client and protocol/server share: whole frames, in order, batched.

Frames from many tasks share one socket. One task at a time writes (the `busy` flag is the lock:
taking it needs no checkpoint); frames sent while it writes are queued whole and written by it,
in order, in one `sendmsg` after its own — so under load many replies leave in one syscall, and a
caller never waits for other callers' writes. A frame is never torn by cancellation: trio's
`socket.send` either raises Cancelled before writing anything or writes at least one byte and
can no longer be cancelled, and everything after a frame's first byte is written inside a
shielded scope. A peer that stops reading blocks the writer in that shielded scope until the
connection is closed (the client's heartbeat or the server's watchdog does that), which wakes it
with an error. Queued bytes beyond `high_water` make senders wait (backpressure) before their
frame is queued.

Measured with client and server in one process (`stat` round trips over loopback, 2 cores): with
a trio.Lock and a shielded CancelScope around every frame, 108 us per sequential round trip and
9,000 round trips/s from 64 concurrent callers; with this, 75 us and 42,000/s.
"""
from __future__ import annotations

import trio

_IOV_MAX = 512  # buffers per sendmsg (the kernel's limit is 1024)


class FrameWriter:
    __slots__ = ("_drained", "busy", "error", "high_water", "queue", "queued", "sock")

    def __init__(self, sock: trio.socket.SocketType, high_water: int = 16 << 20) -> None:
        self.sock = sock
        self.busy = False
        self.queue: list = []
        self.queued = 0
        self.high_water = high_water
        self.error: BaseException | None = None  # the first write error; later sends raise it
        self._drained: trio.Event | None = None

    async def send(self, parts: tuple) -> None:
        """Write (or queue behind the current writer) the buffers of one frame. Raises
        OSError / trio.ClosedResourceError once the connection is broken."""
        if self.error is not None:
            raise self.error
        while self.busy and self.queued > self.high_water:
            # backpressure, before anything is committed (Cancelled here: nothing was sent)
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()
            if self.error is not None:
                raise self.error
        if self.busy:  # the writer sends it after what it is writing; the frame is committed
            self.queue.extend(parts)
            for p in parts:
                self.queued += len(p)
            return
        self.busy = True
        try:
            sock = self.sock
            try:
                if len(parts) == 1:
                    n = await sock.send(parts[0])  # Cancelled here: nothing was written
                else:
                    n = await sock.sendmsg(parts)
            except trio.Cancelled:
                if self.queue:  # frames queued behind ours still go out, in order
                    with trio.CancelScope(shield=True):
                        await self._drain()
                raise
            if self.queue or len(parts) != 1 or n != len(parts[0]):
                with trio.CancelScope(shield=True):  # the rest of a started frame, and the queue
                    await self._write_rest(parts, n)
                    await self._drain()
        except BaseException as e:
            if self.error is None and not isinstance(e, trio.Cancelled):
                self.error = e
            raise
        finally:
            self.busy = False
            if self.error is not None:
                self.queue = []
                self.queued = 0
            if self._drained is not None:
                self._drained.set()
                self._drained = None

    async def _drain(self) -> None:
        while self.queue:
            batch = self.queue
            self.queue = []
            self.queued = 0
            if self._drained is not None:
                self._drained.set()
                self._drained = None
            for i in range(0, len(batch), _IOV_MAX):
                chunk = batch[i:i + _IOV_MAX]
                await self._write_rest(chunk, await self.sock.sendmsg(chunk))

    async def _write_rest(self, parts: list | tuple, n: int) -> None:
        """`n` bytes of `parts` are written; write the rest."""
        sock = self.sock
        for p in parts:
            size = len(p)
            if n >= size:
                n -= size
                continue
            view = memoryview(p)[n:]
            n = 0
            while view:
                view = view[await sock.send(view):]
