"""Client side of the management protocol spoken by gvold.

Wire format (both directions, over the unix socket `STATE_DIR/gvold.sock` or TCP port 24200):

    frame    = uint32 big-endian length N, then N bytes of msgpack
    request  = {"v": 1, "cmd": "<command>", "args": {...}}
    response = {"ok": true, "result": <any>}  |  {"ok": false, "error": "<one-line message>"}

One connection may carry several request/response pairs in turn. The commands are listed in
volmgr.daemon (`COMMANDS`). Everything here is synchronous (plain sockets with timeouts) so it
can be used by the CLI and by mount.gvol before its trio loop starts; `acall` is the trio variant.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any, Union

import msgpack

from .errors import DaemonUnreachable, GvolError, ProtocolError

PROTO_VERSION = 1
DEFAULT_PORT = 24200
MAX_FRAME = 64 << 20
_LEN = struct.Struct(">I")

# a unix socket path, or (host, port)
Target = Union[str, "os.PathLike[str]", tuple[str, int]]


# ---------------------------------------------------------------- framing (sans-IO)
def encode_frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"management frame too large ({len(body)} bytes)")
    return _LEN.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (n,) = _LEN.unpack(header)
    if n > MAX_FRAME:
        raise ProtocolError(f"management frame too large ({n} bytes)")
    return n


def decode_body(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise ProtocolError(f"bad management frame: {e}") from None


def unwrap(resp: Any) -> Any:
    """Turn a response into its result, or raise GvolError with the daemon's message."""
    if not isinstance(resp, dict) or "ok" not in resp:
        raise ProtocolError("bad management response")
    if resp["ok"]:
        return resp.get("result")
    raise GvolError(str(resp.get("error") or "unknown error"))


# ---------------------------------------------------------------- addresses
def parse_server(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'HOST', 'HOST:PORT', '[v6]', '[v6]:PORT' -> (host, port)."""
    s = text.strip()
    if not s:
        raise GvolError("empty server address")
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep:
            raise GvolError(f"bad server address {text!r}")
        port = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, port = s.split(":")
    else:
        host, port = s, ""  # bare host (or bare IPv6 without a port)
    if not host:
        raise GvolError(f"bad server address {text!r}")
    if not port:
        return host, default_port
    try:
        p = int(port)
    except ValueError:
        raise GvolError(f"bad port in server address {text!r}") from None
    if not 0 < p < 65536:
        raise GvolError(f"bad port in server address {text!r}")
    return host, p


def describe(target: Target) -> str:
    if isinstance(target, tuple):
        host, port = target
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return os.fspath(target)


# ---------------------------------------------------------------- synchronous client
def _connect(target: Target, timeout: float) -> socket.socket:
    try:
        if isinstance(target, tuple):
            return socket.create_connection(target, timeout=timeout)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(os.fspath(target))
        except BaseException:
            s.close()
            raise
        return s
    except (TimeoutError, OSError) as e:
        raise DaemonUnreachable(f"cannot reach gvold at {describe(target)}: "
                                f"{_oserror_text(e)}") from None


def _oserror_text(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed by gvold")
        buf += chunk
    return bytes(buf)


def call(target: Target, cmd: str, args: dict[str, Any] | None = None,
         timeout: float = 30.0) -> Any:
    """Send one command to gvold and return its result; GvolError carries gvold's message.
    DaemonUnreachable (a GvolError) when nothing answers or the connection breaks."""
    s = _connect(target, timeout)
    try:
        deadline = time.monotonic() + timeout
        try:
            s.sendall(encode_frame({"v": PROTO_VERSION, "cmd": cmd, "args": args or {}}))
            s.settimeout(max(0.01, deadline - time.monotonic()))
            n = frame_length(_recv_exact(s, 4))
            s.settimeout(max(0.01, deadline - time.monotonic()))
            body = _recv_exact(s, n)
        except (TimeoutError, OSError, ConnectionError) as e:
            raise DaemonUnreachable(f"no answer from gvold at {describe(target)} to {cmd}: "
                                    f"{_oserror_text(e)}") from None
    finally:
        s.close()
    return unwrap(decode_body(body))


def fetch_volfile_info(servers: list[tuple[str, int]], volname: str,
                       timeout: float = 10.0) -> dict[str, Any]:
    """Like fetch_volfile, returning gvold's whole answer:
    {"volfile": text, "version": int, "volume-id": str, "server": "host:port"}."""
    if not servers:
        raise GvolError("no volfile server given")
    failures: list[str] = []
    for server in servers:
        try:
            res = call(tuple(server), "getspec", {"volname": volname}, timeout=timeout)
        except DaemonUnreachable as e:
            failures.append(e.message)
            continue
        res = dict(res)
        res["server"] = describe(tuple(server))
        return res
    raise DaemonUnreachable("; ".join(failures))


def fetch_volfile(servers: list[tuple[str, int]], volname: str, timeout: float = 10.0) -> str:
    """The client volfile of `volname` from the first gvold in `servers` that answers.

    A server that cannot be reached is skipped; a server that answers with an error (the volume
    does not exist, is not started) ends the search, since every server shares one definition.
    Raises GvolError ("volume X does not exist", "volume X is not started (run: gvol volume
    start X)", or "cannot reach gvold at H:P: ..." for each server tried)."""
    return fetch_volfile_info(servers, volname, timeout)["volfile"]


# ---------------------------------------------------------------- trio client
async def acall(target: Target, cmd: str, args: dict[str, Any] | None = None,
                timeout: float = 30.0) -> Any:
    """`call` for code already running in a trio loop."""
    import trio

    try:
        with trio.fail_after(timeout):
            if isinstance(target, tuple):
                stream = await trio.open_tcp_stream(*target)
            else:
                stream = await trio.open_unix_socket(os.fspath(target))
    except (OSError, trio.TooSlowError) as e:
        raise DaemonUnreachable(f"cannot reach gvold at {describe(target)}: "
                                f"{_oserror_text(e) if isinstance(e, OSError) else 'timed out'}"
                                ) from None
    async with stream:
        try:
            with trio.fail_after(timeout):
                await stream.send_all(encode_frame({"v": PROTO_VERSION, "cmd": cmd,
                                                    "args": args or {}}))
                buf = bytearray()
                need = 4
                n = None
                while len(buf) < need:
                    chunk = await stream.receive_some(1 << 20)
                    if not chunk:
                        raise ConnectionError("connection closed by gvold")
                    buf += chunk
                    if n is None and len(buf) >= 4:
                        n = frame_length(bytes(buf[:4]))
                        need = 4 + n
        except (OSError, ConnectionError, trio.BrokenResourceError, trio.TooSlowError) as e:
            raise DaemonUnreachable(f"no answer from gvold at {describe(target)} to {cmd}: "
                                    f"{e or type(e).__name__}") from None
    return unwrap(decode_body(bytes(buf[4:need])))
