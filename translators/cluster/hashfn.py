"""The DHT name hash: GlusterFS's Davies-Meyer hash with a TEA round (libglusterfs hashfn.c
`gf_dm_hashfn`), bit-exact including its signed-`char` tail quirk, plus the rsync temp-name
normalisation of dht-hashfn.c (`.name.XXXXXX` hashes like `name`).

Pure code, no I/O. Reference values (glusterfs-reference.md §2.1):
"a" -> 0x3a17e4e6, "foo" -> 0x0b55ac76, "bar" -> 0xe5873bd2, "hello.txt" -> 0xe68d61cc,
"/" -> 0x8619bd58.
"""
from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["RSYNC_HASH_REGEX", "NameHasher", "dm_hash"]

_M = 0xFFFFFFFF
_DELTA = 0x9E3779B9
# the running TEA sums of the first 10 rounds (s += DELTA before each round), precomputed
_SUMS = tuple((_DELTA * (i + 1)) & _M for i in range(10))
_SUMS6 = _SUMS[:6]

RSYNC_HASH_REGEX = r"^\.(.+)\.[^.]+$"


def _round(sums: tuple[int, ...], a0: int, a1: int, a2: int, a3: int,
           h0: int, h1: int) -> tuple[int, int]:
    b0, b1 = h0, h1
    for s in sums:
        b0 = (b0 + ((((b1 << 4) + a0) ^ (b1 + s) ^ ((b1 >> 5) + a1)) & _M)) & _M
        b1 = (b1 + ((((b0 << 4) + a2) ^ (b0 + s) ^ ((b0 >> 5) + a3)) & _M)) & _M
    return (h0 + b0) & _M, (h1 + b1) & _M


@lru_cache(maxsize=16384)
def dm_hash(msg: bytes) -> int:
    """32-bit Davies-Meyer hash of `msg` (a basename, no NUL), identical to gf_dm_hashfn on
    x86-64 (where C `char` is signed: tail bytes >= 0x80 are sign-extended before the OR)."""
    n = len(msg)
    h0, h1 = 0x9464A485, 0x542E1A94
    pad = (n | (n << 8)) & _M
    pad = (pad | (pad << 16)) & _M
    nwords = n >> 2
    words = [int.from_bytes(msg[i:i + 4], "little") for i in range(0, nwords * 4, 4)]
    full_quads = n >> 4
    for q in range(full_quads):
        w = words[4 * q:4 * q + 4]
        h0, h1 = _round(_SUMS6, w[0], w[1], w[2], w[3], h0, h1)
    rest = words[4 * full_quads:]  # 0..3 whole words left
    tail = msg[nwords * 4:]  # 0..3 bytes that do not make a whole word
    a = [0, 0, 0, 0]
    for j in range(4):
        if j < len(rest):
            a[j] = rest[j]
        else:
            v = pad
            for c in tail:  # consumed by the first non-whole word; later words are pure pad
                v = ((v << 8) & _M) | (c | 0xFFFFFF00 if c >= 0x80 else c)
            tail = b""
            a[j] = v
    h0, h1 = _round(_SUMS, a[0], a[1], a[2], a[3], h0, h1)
    return h0 ^ h1


def _compile(regex: str | None) -> re.Pattern[bytes] | None:
    if regex is None or regex.strip().lower() in ("", "none"):
        return None
    # POSIX ERE `.` also matches newline, and `$` is only the end of the string.
    pat = regex
    if pat.endswith("$") and not pat.endswith("\\$"):
        pat = pat[:-1] + r"\Z"
    return re.compile(pat.encode(), re.DOTALL)


class NameHasher:
    """Hash of a file name after temp-name munging (dht-hashfn.c `dht_munge_name`): when a
    regex matches and its group 1 matched, the hash is taken over group 1. `extra` (the option
    extra-hash-regex) is tried first, then `regex` (rsync-hash-regex), as GlusterFS does.
    None/"none"/"" disables either."""

    __slots__ = ("_cache", "_res")

    def __init__(self, regex: str | None = RSYNC_HASH_REGEX, extra: str | None = None) -> None:
        self._res = [r for r in (_compile(extra), _compile(regex)) if r is not None]
        self._cache: dict[bytes, int] = {}

    def normalise(self, name: bytes) -> bytes:
        for r in self._res:
            m = r.search(name)
            if m is not None and m.lastindex and m.start(1) >= 0:
                return m.group(1)
        return name

    def __call__(self, name: bytes) -> int:
        h = self._cache.get(name)
        if h is None:
            h = dm_hash(self.normalise(name))
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[name] = h
        return h
