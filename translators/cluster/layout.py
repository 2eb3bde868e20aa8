"""DHT directory layouts: which subvolume owns which slice of the 32-bit name-hash space.

Pure code, no I/O. Every subvolume's copy of a directory carries the xattr `trusted.gvol.dht`:

    BE32 commit_hash | BE32 type | BE32 start | BE32 stop        (16 bytes)

`[start, stop]` is the inclusive hash range that subvolume owns for that directory; start = stop
= 0 means "no range" (the directory exists there but receives no new names). Together the
subvolumes' ranges must cover 0..2^32-1 with no hole and no overlap (`Layout.complete`).

A new directory's layout (`new_ranges`, after GlusterFS dht_selfheal_layout_new_directory):
every subvolume with a positive weight (brick size in MiB, or 1 each when unweighted) gets a
contiguous range of size `chunk * weight` where `chunk = 0xffffffff // total_weight`; the ranges
are handed out walking the subvolumes circularly (in volfile order) from a start subvolume
chosen by hashing the directory (`start_index`), so different directories rotate which brick
owns the low hashes. The last range handed out always ends at 0xffffffff.
"""
from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence

from ..types import ROOT_GFID, gfid_str
from .hashfn import dm_hash

HASH_MAX = 0xFFFFFFFF
LAYOUT_SIZE = 16
TYPE_DM = 0  # ranges assigned by gvol
TYPE_DM_USER = 1  # user-set layout: never rewritten by fix-layout

# commit hash: a directory whose layout commit hash equals the volume's commit hash has every
# name at its hashed subvolume, so a miss there is a real ENOENT (lookup-optimize).
COMMIT_HASH_INVALID = 0  # "not known to be settled": misses look everywhere
DEFAULT_COMMIT_HASH = 1  # a fresh volume's commit hash (no rebalance ever ran)

_LAYOUT = struct.Struct(">IIII")
# keep total weight small enough that chunk >= 2: every range then has at least 2 hashes, so a
# real range is never [0, 0] (which would read back as "no range")
_MAX_TOTAL_WEIGHT = 1 << 30

Range = tuple[int, int]  # inclusive (start, stop)


def encode(start: int, stop: int, commit_hash: int = DEFAULT_COMMIT_HASH,
           type_: int = TYPE_DM) -> bytes:
    return _LAYOUT.pack(commit_hash, type_, start, stop)


def decode(value: bytes) -> tuple[int, int, int, int]:
    """-> (commit_hash, type, start, stop); ValueError if the value is not a layout."""
    if len(value) != LAYOUT_SIZE:
        raise ValueError(f"layout xattr must be {LAYOUT_SIZE} bytes, got {len(value)}")
    commit, type_, start, stop = _LAYOUT.unpack(value)
    if type_ not in (TYPE_DM, TYPE_DM_USER):
        raise ValueError(f"unknown layout type {type_}")
    if start > stop:
        raise ValueError(f"layout range start {start:#x} > stop {stop:#x}")
    return commit, type_, start, stop


def brick_weight(f_blocks: int, f_frsize: int) -> int:
    """Weight of a brick: its size in MiB, rounded up (statvfs f_blocks * f_frsize)."""
    return max(0, -(-(f_blocks * f_frsize) // (1 << 20)))


def start_index(dir_gfid: bytes, count: int) -> int:
    """Which subvolume gets the lowest hashes of a new directory's layout: the hash of the
    directory's gfid string ("/" for the root, as GlusterFS hashes the root's path)."""
    if count <= 0:
        return 0
    key = b"/" if bytes(dir_gfid) == ROOT_GFID else gfid_str(dir_gfid).encode()
    return dm_hash(key) % count


def new_ranges(weights: Sequence[int], start: int = 0) -> list[Range | None]:
    """Ranges for a new layout over `len(weights)` subvolumes; None = no range (weight 0).
    All weights 0 (or negative) count as equal weights."""
    n = len(weights)
    if n == 0:
        raise ValueError("a layout needs at least one subvolume")
    w = [max(0, int(x)) for x in weights]
    total = sum(w)
    if total == 0:
        w = [1] * n
        total = n
    if total > _MAX_TOTAL_WEIGHT:  # scale down, keeping every positive weight positive
        w = [max(1, x * _MAX_TOTAL_WEIGHT // total) if x else 0 for x in w]
        total = sum(w)
    chunk = HASH_MAX // total
    order = [(start + k) % n for k in range(n)]
    order = [i for i in order if w[i] > 0]
    out: list[Range | None] = [None] * n
    pos = 0
    for k, i in enumerate(order):
        if k == len(order) - 1:
            out[i] = (pos, HASH_MAX)
        else:
            size = chunk * w[i]
            out[i] = (pos, pos + size - 1)
            pos += size
    return out


class Layout:
    """One directory's layout as a DHT client sees it: per-subvolume inclusive ranges (None =
    no range or missing), plus each subvolume's commit hash and layout type."""

    __slots__ = ("_idx", "_starts", "_stops", "commits", "ranges", "types")

    def __init__(self, ranges: Sequence[Range | None],
                 commits: Sequence[int] | int = DEFAULT_COMMIT_HASH,
                 types: Sequence[int] | int = TYPE_DM) -> None:
        n = len(ranges)
        self.ranges: tuple[Range | None, ...] = tuple(ranges)
        self.commits = tuple(commits) if not isinstance(commits, int) else (commits,) * n
        self.types = tuple(types) if not isinstance(types, int) else (types,) * n
        ordered = sorted((r[0], r[1], i) for i, r in enumerate(self.ranges) if r is not None)
        self._starts = [r[0] for r in ordered]
        self._stops = [r[1] for r in ordered]
        self._idx = [r[2] for r in ordered]

    # -- construction
    @classmethod
    def new(cls, weights: Sequence[int], start: int = 0,
            commit_hash: int = DEFAULT_COMMIT_HASH) -> Layout:
        return cls(new_ranges(weights, start), commit_hash)

    @classmethod
    def from_xattrs(cls, values: Sequence[bytes | None]) -> Layout:
        """Merge the `trusted.gvol.dht` values read from each subvolume (None = the directory
        or the xattr is missing there; an undecodable value counts as missing)."""
        ranges: list[Range | None] = []
        commits: list[int] = []
        types: list[int] = []
        for v in values:
            r: Range | None = None
            commit, type_ = COMMIT_HASH_INVALID, TYPE_DM
            if v is not None:
                try:
                    commit, type_, start, stop = decode(v)
                except ValueError:
                    pass
                else:
                    if not (start == 0 and stop == 0):
                        r = (start, stop)
            ranges.append(r)
            commits.append(commit)
            types.append(type_)
        return cls(ranges, commits, types)

    # -- queries
    def __len__(self) -> int:
        return len(self.ranges)

    def search(self, h: int) -> int | None:
        """The subvolume whose range holds hash `h`, or None (a hole)."""
        k = bisect.bisect_right(self._starts, h) - 1
        if k >= 0 and h <= self._stops[k]:
            return self._idx[k]
        return None

    def anomalies(self) -> tuple[int, int]:
        """-> (holes, overlaps) counted over the whole hash space."""
        holes = overlaps = 0
        nxt = 0  # first hash not yet covered
        for s, e in zip(self._starts, self._stops):
            if s > nxt:
                holes += 1
            elif s < nxt:
                overlaps += 1
            nxt = max(nxt, e + 1)
        if nxt <= HASH_MAX:
            holes += 1
        return holes, overlaps

    def gaps(self) -> list[Range]:
        """The uncovered ranges of the hash space, in order."""
        out: list[Range] = []
        nxt = 0
        for s, e in zip(self._starts, self._stops):
            if s > nxt:
                out.append((nxt, s - 1))
            nxt = max(nxt, e + 1)
        if nxt <= HASH_MAX:
            out.append((nxt, HASH_MAX))
        return out

    def with_range(self, idx: int, r: Range, commit_hash: int | None = None) -> Layout:
        """A copy where subvolume `idx` owns `r` (and, if given, carries `commit_hash`)."""
        ranges = list(self.ranges)
        commits = list(self.commits)
        ranges[idx] = r
        if commit_hash is not None:
            commits[idx] = commit_hash
        return Layout(ranges, commits, self.types)

    @property
    def complete(self) -> bool:
        return self.anomalies() == (0, 0)

    @property
    def commit_hash(self) -> int:
        """The layout's commit hash if every subvolume that has a range agrees, else invalid."""
        seen = {c for c, r in zip(self.commits, self.ranges) if r is not None}
        return seen.pop() if len(seen) == 1 else COMMIT_HASH_INVALID

    def encode(self, idx: int) -> bytes:
        r = self.ranges[idx]
        s, e = r if r is not None else (0, 0)
        return encode(s, e, self.commits[idx], self.types[idx])

    def share(self, idx: int) -> float:
        """Fraction of the hash space owned by subvolume `idx`."""
        r = self.ranges[idx]
        return 0.0 if r is None else (r[1] - r[0] + 1) / (HASH_MAX + 1)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Layout) and self.ranges == other.ranges
                and self.commits == other.commits and self.types == other.types)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = ", ".join("-" if r is None else f"{r[0]:#010x}..{r[1]:#010x}"
                          for r in self.ranges)
        return f"Layout([{parts}], commit={self.commit_hash})"


__all__ = [
    "COMMIT_HASH_INVALID",
    "DEFAULT_COMMIT_HASH",
    "HASH_MAX",
    "LAYOUT_SIZE",
    "TYPE_DM",
    "TYPE_DM_USER",
    "Layout",
    "brick_weight",
    "decode",
    "encode",
    "new_ranges",
    "start_index",
]
