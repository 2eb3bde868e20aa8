"""The sans-IO wire codec: every fop round-trips, garbage only ever raises ProtocolError."""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from translators import fops
from translators.fops import FOP_LIST, FOPS, Fop
from translators.protocol import codec
from translators.protocol.codec import (
    Frame,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
)
from translators.types import ROOT_GFID, Call, Dirent, Fd, FopError, Iatt, Statvfs

GFID_NAMES = {"gfid", "parent", "oldparent", "newparent"}
I64 = st.integers(-(1 << 63), (1 << 63) - 1)


# ------------------------------------------------------------------ strategies from annotations
def strategy_for(tp: Any, fname: str) -> st.SearchStrategy:
    """A hypothesis strategy for a field, from its type annotation (independent of the codec's
    own reading of the annotations)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        assert len(args) == 1, tp
        return st.none() | strategy_for(args[0], fname)
    if origin is tuple:
        return st.lists(strategy_for(typing.get_args(tp)[0], fname), max_size=5).map(tuple)
    if origin is list:
        return st.lists(strategy_for(typing.get_args(tp)[0], fname), max_size=5)
    if tp is dict or origin is dict:
        return st.dictionaries(st.text(max_size=20), st.binary(max_size=40), max_size=4)
    if tp is bytes:
        if fname in GFID_NAMES:
            return st.binary(min_size=16, max_size=16)
        return st.binary(max_size=300)
    if tp is str:
        return st.text(max_size=40)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return I64
    if tp is Fd:
        return st.builds(Fd, st.binary(min_size=16, max_size=16), st.integers(0, 1 << 20),
                         st.booleans())
    if dataclasses.is_dataclass(tp):
        return dataclass_strategy(tp)
    raise AssertionError(f"no strategy for {tp!r}")


def dataclass_strategy(cls: type, skip: tuple[str, ...] = ()) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    kw = {f.name: strategy_for(hints[f.name], f.name)
          for f in dataclasses.fields(cls) if f.name not in skip}
    return st.builds(cls, **kw)


CALLS = dataclass_strategy(Call, skip=("client",))


class FdTable:
    """Codec hooks that map Fds to numbers and back to the very same objects."""

    def __init__(self) -> None:
        self.fds: list[Fd] = []

    def to_wire(self, fd: Fd) -> int:
        self.fds.append(fd)
        return len(self.fds) - 1

    def from_wire(self, n: int) -> Fd:
        if n >= len(self.fds):
            raise FopError(9, "unknown fd")
        return self.fds[n]


def decode_all(data: bytes, chunk: int | None = None, max_frame: int = codec.DEFAULT_MAX_FRAME
               ) -> list[Frame]:
    dec = FrameDecoder(max_frame)
    if chunk is None:
        return dec.feed(data)
    out: list[Frame] = []
    for i in range(0, len(data), chunk):
        out += dec.feed(data[i:i + chunk])
    return out


def frame_key(f: Frame) -> tuple:
    return (f.type, f.opcode, f.rid, repr(f.meta), f.bulk)


# ------------------------------------------------------------------ round trips
def test_every_fop_has_a_codec() -> None:
    for fop in FOP_LIST:
        assert codec.fop_by_opcode(fop.opcode) is fop
    assert {n for n in codec.GENERATED_SOURCE if n.startswith("dec_req_")} >= {
        f"dec_req_{f.req.__name__}" + (f"_{f.req_bulk}" if f.req_bulk else "") for f in FOP_LIST}


@pytest.mark.parametrize("fop", FOP_LIST, ids=lambda f: f.name)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_request_roundtrip(fop: Fop, data: st.DataObject) -> None:
    call = data.draw(CALLS)
    req = data.draw(dataclass_strategy(fop.req))
    rid = data.draw(st.integers(0, (1 << 64) - 1))
    table = FdTable()
    parts = encode_request(fop, rid, call, req, table.to_wire)
    frames = decode_all(b"".join(parts))
    assert len(frames) == 1
    got_fop, got_call, got_req = decode_request(frames[0], table.from_wire, client="conn-1")
    assert got_fop is fop and frames[0].rid == rid
    assert got_call == dataclasses.replace(call, client="conn-1")
    assert got_req == req
    if fop.req_bulk:
        bulk = getattr(req, fop.req_bulk)
        assert frames[0].bulk == bulk
        # raw bulk bytes: the frame ends with them verbatim, outside the msgpack section
        assert b"".join(parts).endswith(bulk) and len(parts[0]) >= codec.HEADER_SIZE


@pytest.mark.parametrize("fop", FOP_LIST, ids=lambda f: f.name)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reply_roundtrip(fop: Fop, data: st.DataObject) -> None:
    rep = data.draw(dataclass_strategy(fop.rep))
    rid = data.draw(st.integers(0, (1 << 64) - 1))
    table = FdTable()
    frames = decode_all(b"".join(encode_reply(fop, rid, rep, table.to_wire)))
    assert len(frames) == 1 and frames[0].rid == rid
    assert decode_reply(frames[0], fop, table.from_wire) == rep
    # error replies: errno and message, no payload
    err = data.draw(st.integers(1, codec.MAX_ERRNO))
    msg = data.draw(st.text(max_size=50))
    frames = decode_all(b"".join(encode_error(fop, rid, err, msg)))
    with pytest.raises(FopError) as ei:
        decode_reply(frames[0], fop, table.from_wire)
    assert ei.value.errno == err and ei.value.msg == msg


def test_handshake_and_ping_roundtrip() -> None:
    h = codec.Hello("vol", "id", "/b", "u", "p", "uuid", codec.VERSION, 2.5, "c0")
    assert codec.decode_hello(decode_all(codec.encode_hello(h))[0]) == h
    r = codec.HelloReply(False, "nope", "srv")
    assert codec.decode_hello_reply(decode_all(codec.encode_hello_reply(r))[0]) == r
    ping, pong = decode_all(codec.encode_ping(7) + codec.encode_pong(7))
    assert (ping.type, ping.rid, pong.type, pong.rid) == (codec.T_PING, 7, codec.T_PONG, 7)


# ------------------------------------------------------------------ framing
def _sample_stream() -> bytes:
    t = FdTable()
    fd = Fd(ROOT_GFID)
    iatt = Iatt(ROOT_GFID, 0o40755, 2, 0, 0, 0, 4096, 8, 4096, 1, 2, 3)
    parts = [
        codec.encode_hello(codec.Hello("v", "i", "/b")),
        *encode_request(FOPS["write"], 1, Call(uid=1), fops.WriteReq(fd, 0, b"x" * 3000),
                        t.to_wire),
        *encode_reply(FOPS["readdir"], 2, fops.ReaddirRep(
            [Dirent(b"a", 1, 0o100000, iatt, {"k": b"v"}), Dirent(b"b", 2, 0)], True)),
        codec.encode_ping(3),
        *encode_reply(FOPS["read"], 4, fops.ReadRep(b"data" * 10)),
        *encode_error(FOPS["stat"], 5, 2, "gone"),
        *encode_reply(FOPS["statfs"], 6, fops.StatfsRep(Statvfs(*range(10)))),
    ]
    return b"".join(parts)


def test_split_at_every_byte_boundary() -> None:
    data = _sample_stream()
    whole = [frame_key(f) for f in decode_all(data)]
    assert len(whole) == 7
    for i in range(len(data) + 1):
        dec = FrameDecoder()
        got = dec.feed(data[:i]) + dec.feed(data[i:])
        assert [frame_key(f) for f in got] == whole, i
        assert dec.buffered == 0
    for chunk in (1, 2, 3, 7, 64, 1000):
        assert [frame_key(f) for f in decode_all(data, chunk)] == whole


def test_decoder_buffer_stays_small() -> None:
    """Many frames fed in small chunks: consumed bytes are dropped (linear, not quadratic)."""
    frame = b"".join(encode_request(FOPS["stat"], 1, Call(), fops.InodeReq(ROOT_GFID)))
    data = frame * 2000
    dec = FrameDecoder()
    n = 0
    biggest = 0
    for i in range(0, len(data), 500):
        n += len(dec.feed(data[i:i + 500]))
        biggest = max(biggest, len(dec._buf))
    assert n == 2000
    assert biggest <= 2 * (500 + len(frame))


def test_oversize_frame_fails_on_its_header() -> None:
    dec = FrameDecoder(max_frame=1 << 16)
    hdr = codec._HDR.pack(1 << 17, codec.VERSION, codec.T_REQUEST, 2, 1, 10)
    with pytest.raises(FrameTooLarge):
        dec.feed(hdr)  # no need to wait for the body
    with pytest.raises(ProtocolError):  # and the decoder stays failed
        dec.feed(b"")
    big = fops.WriteReq(Fd(ROOT_GFID), 0, bytes(1 << 16))
    with pytest.raises(FrameTooLarge):
        encode_request(FOPS["write"], 1, Call(), big, lambda fd: 0, max_frame=1 << 16)
    # the default admits the largest I/O
    parts = encode_request(FOPS["write"], 1, Call(), fops.WriteReq(Fd(ROOT_GFID), 0,
                                                                   bytes(codec.MAX_IO)),
                           lambda fd: 0)
    assert len(decode_all(b"".join(parts))) == 1


def _req_frame(fop: Fop, meta: Any, bulk: bytes = b"") -> Frame:
    m = msgpack.packb(meta)
    data = codec._HDR.pack(codec.HEADER_SIZE + len(m) + len(bulk), codec.VERSION,
                           codec.T_REQUEST, fop.opcode, 1, len(m)) + m + bulk
    return decode_all(data)[0]


CALL_W = [0, 0, [], 0, b""]


@pytest.mark.parametrize("fop,meta,bulk", [
    (FOPS["stat"], [CALL_W, b"\x01" * 15], b""),  # short gfid
    (FOPS["stat"], [CALL_W, "0" * 16], b""),  # str gfid
    (FOPS["stat"], [CALL_W, ROOT_GFID, 1], b""),  # extra field
    (FOPS["stat"], [CALL_W], b""),  # missing field
    (FOPS["stat"], [CALL_W, ROOT_GFID], b"bulk"),  # bulk on a fop without one
    (FOPS["stat"], {"gfid": ROOT_GFID}, b""),  # not an array
    (FOPS["stat"], [[0, 0, [], 0], ROOT_GFID], b""),  # short call
    (FOPS["stat"], [[0, 0, ["x"], 0, b""], ROOT_GFID], b""),  # bad group
    (FOPS["unlink"], [CALL_W, ROOT_GFID, "name"], b""),  # name as str
    (FOPS["read"], [CALL_W, -1, 0, 10], b""),  # negative fd number
    (FOPS["read"], [CALL_W, 0, 1 << 63, 10], b""),  # offset beyond int64
    (FOPS["read"], [CALL_W, 0, 1.5, 10], b""),  # float
    (FOPS["fsync"], [CALL_W, 0, 1], b""),  # int for bool
    (FOPS["mknod"], [CALL_W, ROOT_GFID, b"n", 0, 0, ROOT_GFID, 0, {"a": [1]}], b""),
    (FOPS["lookup"], [CALL_W, None, None, None, [1]], b""),  # xattr name not str
])
def test_malformed_requests_are_protocol_errors(fop: Fop, meta: Any, bulk: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(_req_frame(fop, meta, bulk), FdTable().from_wire)


def test_fd_hook_errors_propagate() -> None:
    f = _req_frame(FOPS["read"], [CALL_W, 5, 0, 10])
    with pytest.raises(FopError):
        decode_request(f, FdTable().from_wire)


def test_reply_validation() -> None:
    stat = FOPS["stat"]
    t = FdTable()

    def rep(meta: Any, bulk: bytes = b"", opcode: int = stat.opcode) -> Frame:
        m = msgpack.packb(meta)
        return decode_all(codec._HDR.pack(codec.HEADER_SIZE + len(m) + len(bulk), codec.VERSION,
                                          codec.T_REPLY, opcode, 1, len(m)) + m + bulk)[0]
    good_iatt = [ROOT_GFID] + [0] * 11
    assert decode_reply(rep([0, None, good_iatt]), stat, t.from_wire).iatt.gfid == ROOT_GFID
    for bad in ([0, None, good_iatt[:-1]], [0, None, [b"x"] + [0] * 11], [0, "msg", good_iatt],
                [False, None, good_iatt], [2, "x", good_iatt], [5000, "x"], [-1, "x"], [2, 3],
                [0, None], [0]):
        with pytest.raises(ProtocolError):
            decode_reply(rep(bad), stat, t.from_wire)
    with pytest.raises(ProtocolError):  # error reply with a payload
        decode_reply(rep([2, "x"], b"bulk"), stat, t.from_wire)
    with pytest.raises(ProtocolError):  # answer to another fop
        decode_reply(rep([0, None, good_iatt], opcode=FOPS["fstat"].opcode), stat, t.from_wire)


@pytest.mark.parametrize("header", [
    (100, 2, codec.T_REQUEST, 2, 0, 0),  # version
    (100, codec.VERSION, 9, 0, 0, 0),  # frame type
    (100, codec.VERSION, 0, 0, 0, 0),  # frame type 0
    (100, codec.VERSION, codec.T_REQUEST, 999, 0, 0),  # opcode
    (100, codec.VERSION, codec.T_PING, 2, 0, 0),  # opcode on a ping
    (10, codec.VERSION, codec.T_PING, 0, 0, 0),  # shorter than a header
    (30, codec.VERSION, codec.T_REQUEST, 2, 0, 11),  # meta longer than the frame
])
def test_bad_headers(header: tuple) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(codec._HDR.pack(*header) + bytes(200))


# ------------------------------------------------------------------ fuzz
def _consume(frames: list[Frame]) -> None:
    """Run every decoded frame through the matching message decoder; only ProtocolError (or
    the FopError that an error reply or an unknown fd is) may come out."""
    t = FdTable()
    t.fds = [Fd(ROOT_GFID) for _ in range(4)]
    for f in frames:
        try:
            if f.type == codec.T_REQUEST:
                decode_request(f, t.from_wire)
            elif f.type == codec.T_REPLY:
                decode_reply(f, codec.fop_by_opcode(f.opcode), t.from_wire)
            elif f.type == codec.T_HANDSHAKE:
                codec.decode_hello(f)
            elif f.type == codec.T_HANDSHAKE_REPLY:
                codec.decode_hello_reply(f)
        except (ProtocolError, FopError):
            pass


def _feed_all(chunks: list[bytes]) -> None:
    dec = FrameDecoder(max_frame=1 << 16)
    try:
        for c in chunks:
            _consume(dec.feed(c))
    except ProtocolError:
        pass


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_garbage_only_raises_protocol_error(chunks: list[bytes]) -> None:
    _feed_all(chunks)


@settings(max_examples=300)
@given(st.data())
def test_garbage_with_valid_headers(data: st.DataObject) -> None:
    """Plausible headers (right version, real opcodes) followed by random meta/bulk."""
    fop = data.draw(st.sampled_from(FOP_LIST))
    typ = data.draw(st.sampled_from([codec.T_REQUEST, codec.T_REPLY]))
    meta = data.draw(st.binary(max_size=200))
    bulk = data.draw(st.binary(max_size=50))
    raw = codec._HDR.pack(codec.HEADER_SIZE + len(meta) + len(bulk), codec.VERSION, typ,
                          fop.opcode, 1, len(meta)) + meta + bulk
    _feed_all([raw])


@settings(max_examples=300)
@given(st.data())
def test_random_msgpack_meta(data: st.DataObject) -> None:
    """Well-formed msgpack of the wrong shape in every fop's request and reply."""
    leaf = st.none() | st.booleans() | I64 | st.floats() | st.text(max_size=5) | \
        st.binary(max_size=20)
    value = st.recursive(leaf, lambda c: st.lists(c, max_size=6) |
                         st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=20)
    fop = data.draw(st.sampled_from(FOP_LIST))
    meta = data.draw(st.lists(value, max_size=10) | value)
    if data.draw(st.booleans()) and isinstance(meta, list):
        meta = [CALL_W] + meta
    m = msgpack.packb(meta)
    for typ in (codec.T_REQUEST, codec.T_REPLY):
        raw = codec._HDR.pack(codec.HEADER_SIZE + len(m), codec.VERSION, typ, fop.opcode, 1,
                              len(m)) + m
        _feed_all([raw])


@settings(max_examples=300)
@given(st.data())
def test_bitflips_and_truncation(data: st.DataObject) -> None:
    stream = bytearray(_sample_stream())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(stream) - 1))
        stream[pos] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(stream)))
    chunk = data.draw(st.integers(1, 4096))
    b = bytes(stream[:cut])
    _feed_all([b[i:i + chunk] for i in range(0, len(b), chunk)])
