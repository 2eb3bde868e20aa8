"""Pure DHT logic: the name hash (bit-exact with GlusterFS) and directory layouts."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from translators.cluster.hashfn import NameHasher, dm_hash
from translators.cluster.layout import (
    COMMIT_HASH_INVALID,
    HASH_MAX,
    Layout,
    brick_weight,
    decode,
    encode,
    new_ranges,
    start_index,
)
from translators.types import ROOT_GFID

# glusterfs-reference.md §2.1 (matched against a live GlusterFS 10.3)
REFERENCE = {b"a": 0x3A17E4E6, b"foo": 0x0B55AC76, b"bar": 0xE5873BD2,
             b"hello.txt": 0xE68D61CC, b"/": 0x8619BD58}
# computed by a C transcription of libglusterfs gf_dm_hashfn built with gcc on x86-64 (signed
# char): non-ASCII tails (the sign-extension quirk), whole 16-byte blocks, and longer names
C_VECTORS = {"ü": 0xFA57015E, "file-é": 0xEA48A029, "ñandú": 0x685067EE,
             "a-much-longer-file-name-with-34by": 0x738A390D,
             "0123456789abcdef": 0x6ECB5ADA,
             "0123456789abcdef0123456789abcdefXYZ": 0x66C36857,
             "ééééééééé": 0xFF2D8F7F}


@pytest.mark.parametrize("name,value", sorted(REFERENCE.items()))
def test_reference_values(name: bytes, value: int) -> None:
    assert dm_hash(name) == value


@pytest.mark.parametrize("name,value", sorted(C_VECTORS.items()))
def test_c_vectors(name: str, value: int) -> None:
    assert dm_hash(name.encode()) == value


def _unsigned_variant(msg: bytes) -> int:
    """The same hash with *unsigned* tail bytes: must differ on some non-ASCII names."""
    m = 0xFFFFFFFF
    n = len(msg)
    pad = (n | n << 8) & m
    pad = (pad | pad << 16) & m

    def rnd(r: int, a: list[int], h0: int, h1: int) -> tuple[int, int]:
        b0, b1, s = h0, h1, 0
        for _ in range(r):
            s = (s + 0x9E3779B9) & m
            b0 = (b0 + ((((b1 << 4) + a[0]) & m) ^ ((b1 + s) & m) ^ (((b1 >> 5) + a[1]) & m))) & m
            b1 = (b1 + ((((b0 << 4) + a[2]) & m) ^ ((b0 + s) & m) ^ (((b0 >> 5) + a[3]) & m))) & m
        return (h0 + b0) & m, (h1 + b1) & m

    h0, h1 = 0x9464A485, 0x542E1A94
    pos = 0
    while n - pos >= 16:
        a = [int.from_bytes(msg[pos + 4 * j:pos + 4 * j + 4], "little") for j in range(4)]
        h0, h1 = rnd(6, a, h0, h1)
        pos += 16
    a = []
    for _ in range(4):
        if n - pos >= 4:
            a.append(int.from_bytes(msg[pos:pos + 4], "little"))
            pos += 4
        else:
            v = pad
            while pos < n:
                v = ((v << 8) & m) | msg[pos]
                pos += 1
            a.append(v)
    h0, h1 = rnd(10, a, h0, h1)
    return h0 ^ h1


def test_signed_char_quirk_matters() -> None:
    # the unsigned variant disagrees with GlusterFS exactly where a tail byte is >= 0x80
    assert _unsigned_variant("ü".encode()) != C_VECTORS["ü"]
    assert _unsigned_variant(b"hello.txt") == REFERENCE[b"hello.txt"]


@given(st.binary(max_size=80))
def test_hash_matches_straight_port_on_ascii_tails(msg: bytes) -> None:
    # where no tail byte is >= 0x80 both variants are the same function
    tail = msg[len(msg) // 4 * 4:]
    if all(c < 0x80 for c in tail):
        assert dm_hash(msg) == _unsigned_variant(msg)
    assert 0 <= dm_hash(msg) <= HASH_MAX


def test_rsync_normalisation() -> None:
    h = NameHasher()
    assert h.normalise(b".hello.txt.Xy12Ab") == b"hello.txt"
    assert h(b".hello.txt.Xy12Ab") == REFERENCE[b"hello.txt"]
    assert h(b".foo.123456") == REFERENCE[b"foo"]
    # no match: hashed as is
    for name in (b"hello.txt", b".hidden", b"..", b".a.", b"plain.tar.gz", b".x"):
        assert h.normalise(name) == name
        assert h(name) == dm_hash(name)
    # "none" disables munging
    off = NameHasher("none")
    assert off(b".hello.txt.Xy12Ab") == dm_hash(b".hello.txt.Xy12Ab")
    # a custom regex: hash over group 1
    custom = NameHasher(r"^(.+)\.tmp$")
    assert custom(b"data.tmp") == dm_hash(b"data")


def test_extra_hash_regex_is_tried_before_the_rsync_regex() -> None:
    h = NameHasher(extra=r"^(.+)\.part$")
    assert h(b"movie.mkv.part") == dm_hash(b"movie.mkv")
    assert h(b".hello.txt.Xy12Ab") == dm_hash(b"hello.txt")  # rsync's still applies
    both = NameHasher(r"^(.+)\.part$", extra=r"^(.+)\.mkv\.part$")
    assert both(b"movie.mkv.part") == dm_hash(b"movie")  # extra first
    # the dht option reaches the hasher
    from translators.cluster.dht import Distribute
    from translators.xlator import Translator

    leaf = type("Leaf", (Translator,), {"min_children": 0, "max_children": 0})("c")
    d = Distribute("d", {"extra-hash-regex": r"^(.+)\.part$"}, [leaf])
    assert d._hash(b"movie.mkv.part") == dm_hash(b"movie.mkv")


@given(st.binary(min_size=1, max_size=40), st.binary(min_size=1, max_size=8).filter(
    lambda s: b"." not in s))
def test_rsync_temp_names_hash_like_final_name(name: bytes, suffix: bytes) -> None:
    h = NameHasher()
    temp = b"." + name + b"." + suffix
    assert h(temp) == dm_hash(name)


# ---------------------------------------------------------------- layouts
def _check_cover(ranges: list) -> None:
    got = sorted(r for r in ranges if r is not None)
    assert got, "no ranges at all"
    assert got[0][0] == 0
    assert got[-1][1] == HASH_MAX
    for (s1, e1), (s2, e2) in itertools.pairwise(got):
        assert s1 <= e1 and s2 <= e2
        assert s2 == e1 + 1, f"hole or overlap between {e1:#x} and {s2:#x}"
    for r in got:
        assert r != (0, 0), "a real range must not read back as 'no range'"


weights_st = st.lists(st.integers(min_value=0, max_value=1 << 40), min_size=1, max_size=24)


@given(weights_st, st.integers(min_value=0, max_value=1000))
@settings(max_examples=400)
def test_new_layout_covers_everything(weights: list[int], start: int) -> None:
    ranges = new_ranges(weights, start % len(weights))
    _check_cover(ranges)
    lay = Layout(ranges)
    assert lay.complete
    assert lay.anomalies() == (0, 0)
    # zero weights get no range (unless everything is zero: then all count alike)
    if any(w > 0 for w in weights):
        for w, r in zip(weights, ranges):
            assert (r is None) == (w == 0)
    # the start subvolume (first positive one from start) owns hash 0
    n = len(weights)
    eff = weights if any(w > 0 for w in weights) else [1] * n
    first = next(i for i in ((start + k) % n for k in range(n)) if eff[i] > 0)
    assert lay.search(0) == first


@given(weights_st, st.integers(min_value=0, max_value=1000),
       st.lists(st.integers(min_value=0, max_value=HASH_MAX), max_size=30))
def test_search_agrees_with_ranges(weights: list[int], start: int, hashes: list[int]) -> None:
    lay = Layout.new(weights, start % len(weights))
    for h in hashes + [0, HASH_MAX]:
        i = lay.search(h)
        assert i is not None
        s, e = lay.ranges[i]
        assert s <= h <= e


@given(st.lists(st.integers(min_value=1, max_value=1 << 20), min_size=1, max_size=16))
def test_weighting_is_proportional(weights: list[int]) -> None:
    lay = Layout.new(weights)
    total = sum(weights)
    for i, w in enumerate(weights):
        # chunk = floor(0xffffffff / total): each share is off by under w / 2^32, and the
        # last range also takes the remainder (under total hashes)
        assert abs(lay.share(i) - w / total) <= (w + total + 1) / 2**32


@given(weights_st, st.integers(min_value=0, max_value=1000),
       st.integers(min_value=0, max_value=HASH_MAX))
def test_encode_decode_round_trip(weights: list[int], start: int, commit: int) -> None:
    lay = Layout.new(weights, start % len(weights), commit_hash=commit)
    values = [lay.encode(i) for i in range(len(lay))]
    assert all(len(v) == 16 for v in values)
    back = Layout.from_xattrs(values)
    assert back.ranges == lay.ranges
    assert back.commit_hash == commit
    for i, v in enumerate(values):
        c, t, s, e = decode(v)
        assert c == commit and t == 0
        assert (s, e) == (lay.ranges[i] or (0, 0))


def test_encode_format_is_big_endian() -> None:
    v = encode(0x7FFFFFFF, 0xFFFFFFFF, commit_hash=1)
    assert v == bytes.fromhex("00000001" "00000000" "7fffffff" "ffffffff")
    with pytest.raises(ValueError):
        decode(v[:15])
    with pytest.raises(ValueError):
        decode(encode(5, 4))


def test_glusterfs_root_layout_example() -> None:
    # glusterfs-reference §2.3: hash("/") % 2 == 0 -> client-0 gets 0..0x7ffffffe
    assert start_index(ROOT_GFID, 2) == 0
    lay = Layout.new([1, 1], start_index(ROOT_GFID, 2))
    assert lay.ranges == ((0, 0x7FFFFFFE), (0x7FFFFFFF, 0xFFFFFFFF))


def test_directories_rotate_start() -> None:
    import uuid
    starts = {start_index(uuid.uuid4().bytes, 4) for _ in range(200)}
    assert starts == {0, 1, 2, 3}


@given(st.lists(st.one_of(st.none(), st.tuples(st.integers(0, HASH_MAX),
                                                  st.integers(0, HASH_MAX))), min_size=1,
                max_size=6))
def test_anomalies_detects_holes_and_overlaps(raw: list) -> None:
    ranges = [None if r is None else (min(r), max(r)) for r in raw]
    lay = Layout(ranges)
    # brute-force check on the boundaries: complete iff every boundary hash is owned exactly once
    points = {0, HASH_MAX}
    for r in ranges:
        if r is not None:
            points.update({r[0], r[1], max(0, r[0] - 1), min(HASH_MAX, r[1] + 1)})
    exact = all(sum(1 for r in ranges if r is not None and r[0] <= p <= r[1]) == 1
                for p in points)
    assert lay.complete == exact
    if lay.complete:
        for p in points:
            i = lay.search(p)
            assert i is not None and ranges[i][0] <= p <= ranges[i][1]


@given(weights_st, st.integers(min_value=0, max_value=1000), st.data())
def test_gaps_refill_a_lost_range(weights: list[int], start: int, data) -> None:
    lay = Layout.new(weights, start % len(weights))
    owners = [i for i, r in enumerate(lay.ranges) if r is not None]
    lost = data.draw(st.sampled_from(owners))
    holey = Layout([None if i == lost else r for i, r in enumerate(lay.ranges)])
    assert holey.gaps() == [lay.ranges[lost]]
    assert holey.with_range(lost, holey.gaps()[0]).ranges == lay.ranges
    assert lay.gaps() == []


def test_from_xattrs_missing_and_garbage() -> None:
    lay = Layout.new([1, 1, 1])
    vals: list = [lay.encode(0), None, b"junk"]
    merged = Layout.from_xattrs(vals)
    assert merged.ranges[1] is None and merged.ranges[2] is None
    assert not merged.complete
    assert merged.anomalies()[0] >= 1
    # a zeroed ("no range") copy leaves a complete layout complete
    two = Layout.new([1, 1])
    merged = Layout.from_xattrs([two.encode(0), two.encode(1), encode(0, 0)])
    assert merged.complete and merged.ranges[2] is None
    # disagreeing commit hashes -> invalid
    merged = Layout.from_xattrs([encode(0, 5, 7), encode(6, HASH_MAX, 8)])
    assert merged.complete and merged.commit_hash == COMMIT_HASH_INVALID


def test_brick_weight() -> None:
    assert brick_weight(0, 4096) == 0
    assert brick_weight(1, 4096) == 1
    assert brick_weight(256, 4096) == 1
    assert brick_weight(257, 4096) == 2
    assert brick_weight(10 * 256 * 1024, 4096) == 10 * 1024
