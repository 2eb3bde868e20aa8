"""Sans-IO wire codec: frames, fop requests/replies, handshake and ping. No sockets, no trio.

A frame is a fixed 20-byte header, a msgpack "meta" section and raw bulk bytes:

    u32 total length (header included) | u8 version | u8 frame type | u16 opcode
    | u64 request id | u32 meta length  ||  meta (msgpack)  ||  bulk (raw bytes)

Request meta is ``[call, field, ...]`` (``Call.to_wire()`` then the request dataclass's fields in
declaration order, minus its bulk field); reply meta is ``[errno, message, field, ...]`` where an
error reply (errno != 0) is exactly ``[errno, message]`` with no bulk. The fop's ``req_bulk`` /
``rep_bulk`` field (write data, read data) is the bulk section and is never touched by msgpack.

The per-dataclass encoders and validating decoders are generated once at import from the fop
table (``fops.FOP_LIST``) and the dataclass annotations: add a fop there and it is on the wire.
Decoders check every value's type (a gfid is 16 bytes, names are bytes, ints are ints...) so that
garbage from the network becomes a ``ProtocolError`` here, never an exception deep inside a
translator. ``GENERATED_SOURCE`` holds the generated functions' source for reading.

``Fd`` values cross the wire as integers through caller-supplied hooks: ``fd_to_wire(fd) -> int``
and ``fd_from_wire(int) -> Fd`` (protocol/client maps an Fd to the brick's fd number;
protocol/server maps the number to its per-connection table). A hook may raise ``FopError``
(unknown fd: EBADF).
"""
from __future__ import annotations

import dataclasses
import functools
import struct
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..fops import EMPTY, FOP_LIST, Empty, Fop
from ..types import Call, Dirent, Fd, FopError, Iatt, Statvfs

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "MAX_IO",
    "T_HANDSHAKE",
    "T_HANDSHAKE_REPLY",
    "T_PING",
    "T_PONG",
    "T_REPLY",
    "T_REQUEST",
    "VERSION",
    "Frame",
    "FrameDecoder",
    "FrameTooLarge",
    "Hello",
    "HelloReply",
    "ProtocolError",
    "decode_hello",
    "decode_hello_reply",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_hello",
    "encode_hello_reply",
    "encode_ping",
    "encode_pong",
    "encode_reply",
    "encode_request",
    "fop_by_opcode",
]

VERSION = 1
_HDR = struct.Struct("!IBBHQI")
HEADER_SIZE = _HDR.size  # 20
MAX_IO = 1 << 20  # the largest read/write a client sends (1 MiB)
DEFAULT_MAX_FRAME = 4 * MAX_IO + HEADER_SIZE

T_REQUEST = 1
T_REPLY = 2
T_HANDSHAKE = 3
T_HANDSHAKE_REPLY = 4
T_PING = 5
T_PONG = 6
FRAME_TYPES = {T_REQUEST: "request", T_REPLY: "reply", T_HANDSHAKE: "handshake",
               T_HANDSHAKE_REPLY: "handshake-reply", T_PING: "ping", T_PONG: "pong"}

# below this, bulk is copied after the header into one buffer; above, it is sent as its own buffer
_JOIN_BULK_MAX = 16384
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1
MAX_ERRNO = 4095

# request/reply fields holding a gfid (16 raw bytes) by name; other bytes fields are free-form
GFID_FIELDS = frozenset({"gfid", "parent", "oldparent", "newparent"})


class ProtocolError(Exception):
    """The peer sent something that is not our protocol. The connection cannot continue."""


class FrameTooLarge(ProtocolError):
    """A frame (being decoded or encoded) exceeds the maximum frame size."""


# ================================================================ frames
class Frame:
    """One decoded frame: meta is the unpacked msgpack value (None when empty), bulk raw bytes."""

    __slots__ = ("bulk", "meta", "opcode", "rid", "type")

    def __init__(self, type: int, opcode: int, rid: int, meta: Any, bulk: bytes) -> None:
        self.type = type
        self.opcode = opcode
        self.rid = rid
        self.meta = meta
        self.bulk = bulk

    def __repr__(self) -> str:
        return (f"Frame({FRAME_TYPES.get(self.type, self.type)}, op={self.opcode}, "
                f"rid={self.rid}, meta={self.meta!r}, bulk={len(self.bulk)}B)")


_unpackb = msgpack.unpackb
_packb = msgpack.packb
_pack_hdr = _HDR.pack
_unpack_hdr = _HDR.unpack_from
_VALID_OPCODES = frozenset(f.opcode for f in FOP_LIST)


def _check_header(ver: int, typ: int, opcode: int, total: int, mlen: int, max_frame: int) -> None:
    if ver != VERSION:
        raise ProtocolError(f"bad protocol version {ver} (expected {VERSION})")
    if typ not in FRAME_TYPES:
        raise ProtocolError(f"unknown frame type {typ}")
    if typ <= T_REPLY:
        if opcode not in _VALID_OPCODES:
            raise ProtocolError(f"unknown opcode {opcode}")
    elif opcode != 0:
        raise ProtocolError(f"{FRAME_TYPES[typ]} frame with opcode {opcode}")
    if total > max_frame:
        raise FrameTooLarge(f"frame of {total} bytes exceeds the maximum of {max_frame}")
    if total < HEADER_SIZE:
        raise ProtocolError(f"frame length {total} is shorter than the header")
    if mlen > total - HEADER_SIZE:
        raise ProtocolError(f"meta length {mlen} exceeds the frame length {total}")


class FrameDecoder:
    """Incremental frame parser: ``feed(bytes) -> [Frame, ...]``.

    Linear in the bytes fed: the unparsed tail lives in one bytearray with a read offset that is
    compacted only when more than half of the buffer is consumed; a chunk fed into an empty buffer
    is parsed in place. A header is validated as soon as it is complete (an oversize or garbage
    frame fails at once, without waiting for its body). After a ProtocolError the decoder stays
    failed.
    """

    __slots__ = ("_buf", "_failed", "_off", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._off = 0
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._off

    def wanted(self) -> int:
        """How many more bytes complete the frame in progress (a hint for receive sizes)."""
        avail = len(self._buf) - self._off
        if avail < HEADER_SIZE:
            return HEADER_SIZE - avail
        (total,) = struct.unpack_from("!I", self._buf, self._off)
        return max(total - avail, 1)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed is not None:
            raise self._failed
        try:
            return self._feed(data)
        except ProtocolError as e:
            self._failed = e
            self._buf = bytearray()
            self._off = 0
            raise

    def _feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        if self._off == len(buf):
            # nothing pending: parse the chunk where it is
            if buf:
                buf.clear()
            src: Any = data
            off = 0
        else:
            buf += data
            src = buf
            off = self._off
        end = len(src)
        out: list[Frame] = []
        max_frame = self.max_frame
        with memoryview(src) as mv:
            while end - off >= HEADER_SIZE:
                total, ver, typ, opcode, rid, mlen = _unpack_hdr(src, off)
                _check_header(ver, typ, opcode, total, mlen, max_frame)
                if end - off < total:
                    break
                mstart = off + HEADER_SIZE
                bstart = mstart + mlen
                meta = None
                if mlen:
                    why = ""
                    try:
                        meta = _unpackb(mv[mstart:bstart])
                    except Exception as e:  # msgpack raises many kinds
                        why = f"undecodable meta section: {e}"
                    if why:  # raised outside the handler: nothing may pin a view of `mv`
                        raise ProtocolError(why)
                fend = off + total
                bulk = bytes(mv[bstart:fend]) if fend > bstart else b""
                out.append(Frame(typ, opcode, rid, meta, bulk))
                off = fend
        if src is data:
            if off < end:
                buf += memoryview(data)[off:]
            self._off = 0
        elif off == end:
            buf.clear()
            self._off = 0
        elif off > (end >> 1):
            del buf[:off]
            self._off = 0
        else:
            self._off = off
        return out


def _frame(typ: int, opcode: int, rid: int, meta: bytes, bulk: Any, max_frame: int) -> tuple:
    n = len(bulk)
    total = HEADER_SIZE + len(meta) + n
    if total > max_frame:
        raise FrameTooLarge(f"frame of {total} bytes exceeds the maximum of {max_frame}")
    head = _pack_hdr(total, VERSION, typ, opcode, rid, len(meta)) + meta
    if not n:
        return (head,)
    if n <= _JOIN_BULK_MAX:
        return (head + bulk,)
    return (head, bulk)


def _bad(where: str, want: str, got: Any) -> typing.NoReturn:
    r = repr(got)
    if len(r) > 60:
        r = r[:57] + "..."
    raise ProtocolError(f"{where}: expected {want}, got {type(got).__name__} {r}")


def _check_xdict(where: str, d: Any) -> dict:
    """An xattr-style dict: str keys, scalar values (bytes usually)."""
    if type(d) is not dict:
        _bad(where, "dict", d)
    for k, v in d.items():
        if type(k) is not str:
            _bad(where + " key", "str", k)
        if v is not None and type(v) not in _XDICT_VALUES:
            _bad(where + f"[{k!r}]", "bytes", v)
    return d


_XDICT_VALUES = frozenset({bytes, str, int, bool})


# ================================================================ generated field codecs
# A field's wire shape, from its annotation:
#   ("gfid",) ("bytes",) ("str",) ("int",) ("bool",) ("xdict",) ("fd",)
#   ("opt", inner) ("seq", inner, as_tuple) ("rec", cls)
_RECORDS: tuple[type, ...] = (Iatt, Dirent, Statvfs)


def _shape(tp: Any, fname: str, where: str) -> tuple:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: unsupported union {tp}")
        return ("opt", _shape(args[0], fname, where))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"{where}: only tuple[X, ...] is supported, got {tp}")
        return ("seq", _shape(args[0], fname, where), origin is tuple)
    if origin is dict or tp is dict:
        return ("xdict",)
    if tp is bytes:
        return ("gfid",) if fname in GFID_FIELDS else ("bytes",)
    if tp is str:
        return ("str",)
    if tp is bool:
        return ("bool",)
    if tp is int:
        return ("int",)
    if tp is Fd:
        return ("fd",)
    if tp in _RECORDS:
        return ("rec", tp)
    raise TypeError(f"{where}: no wire encoding for {tp!r}")


class _Gen:
    """Emits Python source for one encoder or decoder function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0

    def var(self) -> str:
        self.n += 1
        return f"_v{self.n}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _rec_name(cls: type) -> str:
    return f"_rec_{cls.__name__}"


def _simple_bad(kind: str, x: str, strict_int: bool) -> tuple[str, str] | None:
    """(condition that `x` is bad, what was expected) for the scalar shapes, else None."""
    if kind == "gfid":
        return f"type({x}) is not bytes or len({x}) != 16", "16-byte gfid"
    if kind in ("bytes", "str"):
        return f"type({x}) is not {kind}", kind
    if kind == "bool":
        return f"{x} is not True and {x} is not False", "bool"
    if kind == "int":
        if strict_int:  # requests: what a syscall can take
            return (f"not isinstance({x}, int) or not {_I64_MIN} <= {x} <= {_U64_MAX >> 1}",
                    "64-bit int")
        return f"not isinstance({x}, int)", "int"
    return None


def _gen_check(g: _Gen, ind: int, shape: tuple, x: str, where: str, strict_int: bool) -> str:
    """Emit checks of variable `x`; return an expression of the decoded value."""
    kind = shape[0]
    w = repr(where)
    simple = _simple_bad(kind, x, strict_int)
    if simple is not None:
        g.emit(ind, f"if {simple[0]}: _bad({w}, {simple[1]!r}, {x})")
        return x
    if kind == "xdict":
        return f"_check_xdict({w}, {x})"
    if kind == "fd":
        g.emit(ind, f"if type({x}) is not int or {x} < 0: _bad({w}, 'fd number', {x})")
        return f"fd_from_wire({x})"
    if kind == "rec":
        return f"{_rec_name(shape[1])}({x})"
    if kind == "opt":
        inner = shape[1]
        simple = _simple_bad(inner[0], x, strict_int)
        if simple is not None:
            g.emit(ind, f"if {x} is not None and ({simple[0]}): _bad({w}, {simple[1]!r}, {x})")
            return x
        y = g.var()
        g.emit(ind, f"if {x} is None: {y} = None")
        g.emit(ind, "else:")
        expr = _gen_check(g, ind + 1, inner, x, where, strict_int)
        g.emit(ind + 1, f"{y} = {expr}")
        return y
    if kind == "seq":
        inner, as_tuple = shape[1], shape[2]
        g.emit(ind, f"if type({x}) is not list: _bad({w}, 'array', {x})")
        e = g.var()
        simple = _simple_bad(inner[0], e, strict_int)
        if simple is not None:
            g.emit(ind, f"for {e} in {x}:")
            g.emit(ind + 1, f"if {simple[0]}: _bad({w + '[]'!r}, {simple[1]!r}, {e})")
            return f"tuple({x})" if as_tuple else x
        if inner[0] not in ("rec", "xdict"):
            raise TypeError(f"{where}: unsupported sequence element {inner}")
        expr = _gen_check(g, ind, inner, e, where + "[]", strict_int)
        comp = f"[{expr} for {e} in {x}]"
        return f"tuple({comp})" if as_tuple else comp
    raise AssertionError(kind)


def _gen_encode(shape: tuple, x: str) -> str:
    """Expression encoding attribute expression `x` for msgpack."""
    kind = shape[0]
    if kind in ("gfid", "bytes", "str", "int", "xdict"):
        return x
    if kind == "bool":
        return f"(True if {x} else False)"
    if kind == "fd":
        return f"fd_to_wire({x})"
    if kind == "rec":
        return f"{x}.to_wire()"
    if kind == "opt":
        inner = _gen_encode(shape[1], "_t")
        if inner == "_t":
            return x
        return f"(None if (_t := {x}) is None else {inner})"
    if kind == "seq":
        inner = _gen_encode(shape[1], "_e")
        if inner == "_e":
            return x
        return f"[{inner} for _e in {x}]"
    raise AssertionError(kind)


_NS: dict[str, Any] = {
    "_bad": _bad, "_check_xdict": _check_xdict, "EMPTY": EMPTY, "ProtocolError": ProtocolError,
}
GENERATED_SOURCE: dict[str, str] = {}  # function name -> source, for reading and debugging


def _compile(name: str, src: str) -> Callable:
    GENERATED_SOURCE[name] = src
    exec(compile(src, f"<codec {name}>", "exec"), _NS)
    return _NS[name]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _fields(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[str, tuple]]:
    hints = _hints(cls)
    return [(f.name, _shape(hints[f.name], f.name, f"{cls.__name__}.{f.name}"))
            for f in dataclasses.fields(cls) if f.name not in skip]


def _gen_record(cls: type, skip: tuple[str, ...] = (), strict_int: bool = True) -> None:
    """Validator+constructor for a nested record (wire = its to_wire list, field order)."""
    flds = _fields(cls, skip)
    n = len(flds)
    g = _Gen()
    name = _rec_name(cls)
    g.emit(0, f"def {name}(v, client):" if cls is Call else f"def {name}(v):")
    g.emit(1, f"if type(v) is not list or len(v) != {n}: _bad({cls.__name__!r}, "
              f"'array of {n}', v)")
    vars_ = [f"f_{fname}" for fname, _ in flds]
    g.emit(1, f"{', '.join(vars_)}{',' if n == 1 else ''} = v")
    exprs = [_gen_check(g, 1, shape, v, f"{cls.__name__}.{fname}", strict_int)
             for (fname, shape), v in zip(flds, vars_)]
    if cls is Call:
        g.emit(1, f"return _Call({', '.join(exprs)}, client)")
    else:
        g.emit(1, f"return _{cls.__name__}({', '.join(exprs)})")
    _NS["_" + cls.__name__] = cls
    _compile(name, "\n".join(g.lines) + "\n")


for _r in _RECORDS:
    _gen_record(_r, strict_int=False)
_gen_record(Call, skip=("client",))
_dec_call = _NS["_rec_Call"]


class _MsgCodec:
    """Generated encode/decode pair of one request or reply dataclass."""

    __slots__ = ("bulk", "cls", "decode", "encode", "nfields")

    def __init__(self, cls: type, bulk: str | None, is_req: bool) -> None:
        self.cls = cls
        self.bulk = bulk
        flds = _fields(cls)
        if bulk is not None:
            shapes = dict(flds)
            if shapes.get(bulk) != ("bytes",):
                raise TypeError(f"{cls.__name__}.{bulk}: bulk field must be bytes")
        wire = [(n, s) for n, s in flds if n != bulk]
        self.nfields = len(wire)
        tag = ("req_" if is_req else "rep_") + cls.__name__ + (f"_{bulk}" if bulk else "")
        # encoder: (call,) o, fd_to_wire -> (meta list, bulk)
        items = [_gen_encode(s, f"o.{n}") for n, s in wire]
        bulk_expr = f"o.{bulk}" if bulk else "b''"
        if is_req:
            head = f"def enc_{tag}(call, o, fd_to_wire):"
            meta = "[call.to_wire(), " + "".join(i + ", " for i in items) + "]"
        else:
            head = f"def enc_{tag}(o, fd_to_wire):"
            meta = "[0, None, " + "".join(i + ", " for i in items) + "]"
        self.encode = _compile(f"enc_{tag}", f"{head}\n    return {meta}, {bulk_expr}\n")
        # decoder: meta list (already length-checked), bulk, fd_from_wire -> object
        g = _Gen()
        g.emit(0, f"def dec_{tag}(m, bulk, fd_from_wire):")
        skip = 1 if is_req else 2
        if not bulk:
            g.emit(1, f"if bulk: _bad({cls.__name__!r}, 'no bulk data', bulk)")
        if cls is Empty:
            g.emit(1, "return EMPTY")
        else:
            vars_ = [f"f_{n}" for n, _ in wire]
            lhs = ", ".join(["_"] * skip + vars_)
            g.emit(1, f"{lhs} = m")
            exprs = {}
            for (n, s), v in zip(wire, vars_):
                exprs[n] = _gen_check(g, 1, s, v, f"{cls.__name__}.{n}", is_req)
            if bulk:
                exprs[bulk] = "bulk"
            _NS["_" + cls.__name__] = cls
            args = ", ".join(exprs[n] for n, _ in flds)
            g.emit(1, f"return _{cls.__name__}({args})")
        self.decode = _compile(f"dec_{tag}", "\n".join(g.lines) + "\n")


class _FopCodec:
    __slots__ = ("fop", "rep", "req")

    def __init__(self, fop: Fop) -> None:
        self.fop = fop
        self.req = _MsgCodec(fop.req, fop.req_bulk, True)
        self.rep = _MsgCodec(fop.rep, fop.rep_bulk, False)


_BY_OPCODE: dict[int, _FopCodec] = {f.opcode: _FopCodec(f) for f in FOP_LIST}
_MAX_OPCODE = max(_BY_OPCODE)


def fop_by_opcode(opcode: int) -> Fop:
    try:
        return _BY_OPCODE[opcode].fop
    except KeyError:
        raise ProtocolError(f"unknown opcode {opcode}") from None


# ================================================================ fop requests and replies
FdToWire = Callable[[Fd], int]
FdFromWire = Callable[[int], Fd]


def _no_fd_to_wire(fd: Fd) -> int:
    raise ProtocolError("this message cannot carry an Fd (no fd_to_wire hook)")


def _no_fd_from_wire(n: int) -> Fd:
    raise ProtocolError("this message cannot carry an Fd (no fd_from_wire hook)")


def encode_request(fop: Fop, rid: int, call: Call, req: Any,
                   fd_to_wire: FdToWire = _no_fd_to_wire,
                   max_frame: int = DEFAULT_MAX_FRAME) -> tuple:
    """A request frame as a tuple of buffers to send in order."""
    meta, bulk = _BY_OPCODE[fop.opcode].req.encode(call, req, fd_to_wire)
    return _frame(T_REQUEST, fop.opcode, rid, _packb(meta), bulk, max_frame)


def encode_reply(fop: Fop, rid: int, rep: Any, fd_to_wire: FdToWire = _no_fd_to_wire,
                 max_frame: int = DEFAULT_MAX_FRAME) -> tuple:
    """A success reply frame as a tuple of buffers to send in order."""
    meta, bulk = _BY_OPCODE[fop.opcode].rep.encode(rep, fd_to_wire)
    return _frame(T_REPLY, fop.opcode, rid, _packb(meta), bulk, max_frame)


def encode_error(fop: Fop, rid: int, err: int, msg: str = "") -> tuple:
    """An error reply: errno (1..4095) and a message, no payload."""
    if not 0 < err <= MAX_ERRNO:
        raise ValueError(f"errno {err} out of range")
    meta = _packb([err, msg or None])
    return (_pack_hdr(HEADER_SIZE + len(meta), VERSION, T_REPLY, fop.opcode, rid, len(meta))
            + meta,)


def decode_request(frame: Frame, fd_from_wire: FdFromWire = _no_fd_from_wire,
                   client: str = "") -> tuple[Fop, Call, Any]:
    """-> (fop, call, request). The Call's `client` is set to `client` (never from the wire).
    Raises ProtocolError on a malformed request; fd_from_wire may raise FopError."""
    if frame.type != T_REQUEST:
        raise ProtocolError(f"expected a request, got a {FRAME_TYPES.get(frame.type)} frame")
    c = _BY_OPCODE.get(frame.opcode)
    if c is None:
        raise ProtocolError(f"unknown opcode {frame.opcode}")
    m = frame.meta
    rc = c.req
    if type(m) is not list or len(m) != rc.nfields + 1:
        _bad(f"{c.fop.name} request", f"array of {rc.nfields + 1}", m)
    call = _dec_call(m[0], client)
    return c.fop, call, rc.decode(m, frame.bulk, fd_from_wire)


def decode_reply(frame: Frame, fop: Fop, fd_from_wire: FdFromWire = _no_fd_from_wire) -> Any:
    """-> the reply dataclass of `fop`. An error reply is raised as FopError (that is the
    answer); a malformed reply raises ProtocolError."""
    if frame.type != T_REPLY:
        raise ProtocolError(f"expected a reply, got a {FRAME_TYPES.get(frame.type)} frame")
    if frame.opcode != fop.opcode:
        raise ProtocolError(f"reply opcode {frame.opcode} does not match the request's "
                            f"({fop.name}={fop.opcode})")
    m = frame.meta
    if type(m) is not list or len(m) < 2:
        _bad(f"{fop.name} reply", "array", m)
    err = m[0]
    if err:
        if type(err) is not int or not 0 < err <= MAX_ERRNO:
            _bad(f"{fop.name} reply errno", "errno", err)
        msg = m[1]
        if len(m) != 2 or frame.bulk or (msg is not None and type(msg) is not str):
            raise ProtocolError(f"{fop.name} error reply carries a payload or a bad message")
        raise FopError(err, msg or "")
    if type(err) is not int or m[1] is not None:  # 0, not False
        _bad(f"{fop.name} reply status", "0, None", m[:2])
    rc = _BY_OPCODE[fop.opcode].rep
    if len(m) != rc.nfields + 2:
        _bad(f"{fop.name} reply", f"array of {rc.nfields + 2}", m)
    return rc.decode(m, frame.bulk, fd_from_wire)


# ================================================================ handshake, ping
@dataclass(frozen=True, slots=True)
class Hello:
    """The client's handshake: which brick it wants and who it is."""

    volume: str
    volume_id: str
    brick: str
    username: str = ""
    password: str = ""
    client_uuid: str = ""
    version: int = VERSION
    ping_interval: float = 0.0  # how often the client pings (0 = never); the server's idle limit
    name: str = ""  # the client translator's name, for logs


@dataclass(frozen=True, slots=True)
class HelloReply:
    ok: bool
    reason: str = ""
    server_uuid: str = ""


def _dec_map(frame: Frame, typ: int, cls: type, required: tuple[str, ...]) -> Any:
    if frame.type != typ:
        raise ProtocolError(f"expected a {FRAME_TYPES[typ]}, got a "
                            f"{FRAME_TYPES.get(frame.type)} frame")
    m = frame.meta
    if type(m) is not dict or frame.bulk:
        _bad(FRAME_TYPES[typ], "map", m)
    kw: dict[str, Any] = {}
    for fname, want in _hints(cls).items():
        if fname not in m:
            if fname in required:
                raise ProtocolError(f"{FRAME_TYPES[typ]}: missing {fname!r}")
            continue
        v = m[fname]
        if want is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e9
        elif want is int:
            ok = type(v) is int
        else:
            ok = type(v) is want
        if not ok:
            _bad(f"{FRAME_TYPES[typ]} {fname}", want.__name__, v)
        kw[fname] = v
    return cls(**kw)


def encode_hello(h: Hello) -> bytes:
    meta = _packb(dataclasses.asdict(h))
    return _pack_hdr(HEADER_SIZE + len(meta), VERSION, T_HANDSHAKE, 0, 0, len(meta)) + meta


def decode_hello(frame: Frame) -> Hello:
    return _dec_map(frame, T_HANDSHAKE, Hello, ("volume", "volume_id", "brick", "version"))


def encode_hello_reply(r: HelloReply) -> bytes:
    meta = _packb(dataclasses.asdict(r))
    return _pack_hdr(HEADER_SIZE + len(meta), VERSION, T_HANDSHAKE_REPLY, 0, 0, len(meta)) + meta


def decode_hello_reply(frame: Frame) -> HelloReply:
    return _dec_map(frame, T_HANDSHAKE_REPLY, HelloReply, ("ok",))


def encode_ping(rid: int = 0) -> bytes:
    return _pack_hdr(HEADER_SIZE, VERSION, T_PING, 0, rid, 0)


def encode_pong(rid: int = 0) -> bytes:
    return _pack_hdr(HEADER_SIZE, VERSION, T_PONG, 0, rid, 0)
