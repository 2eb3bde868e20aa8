"""The AFR changelog: what cluster/afr writes, cluster/afr_heal reads and features/index watches.

Every object on every brick of a replica set may carry `trusted.gvol.afr.<client-name>` for each
brick of the set and `trusted.gvol.afr.dirty`: three big-endian int32 counters, data | metadata |
entry. A non-zero counter on brick i about brick j means "i saw operations that did not reach j":
i *accuses* j. The accusation matrix of one object is matrix[i][j] = counters on i about j.

This module holds the keys, the encoding, the `xdata` keys afr folds its changelog into (consumed
on the brick by features/index), the accusation matrix and the source/sink decision. It imports
nothing of the translators that use it, so the client side (afr, heal) and the brick side (index)
share it without importing each other.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from .types import XATTR_PREFIX, Gfid

# ---------------------------------------------------------------- kinds and slot masks
DATA, META, ENTRY = 0, 1, 2
KINDS = ("data", "metadata", "entry")
M_DATA, M_META, M_ENTRY = 1, 2, 4  # slot masks

# ---------------------------------------------------------------- xattr keys
XATTR_AFR_PREFIX = XATTR_PREFIX + "afr."
XATTR_AFR_DIRTY = XATTR_AFR_PREFIX + "dirty"

# the virtual directories features/index lists its entries in (opendir/readdir by gfid)
INDEX_XATTROP_GFID = Gfid(b"\x00" * 15 + b"\x05")  # some pending counter is non-zero
INDEX_DIRTY_GFID = Gfid(b"\x00" * 15 + b"\x06")  # the dirty counter is non-zero

# ---------------------------------------------------------------- xdata keys (features/index)
XD_INODE = "xattrop.inode:"  # + xattr name: ADD_ARRAY operand for the fop's own object
XD_PARENT = "xattrop.parent:"  # ... for the parent directory (rename: the old parent)
XD_NEWPARENT = "xattrop.newparent:"  # ... for rename's / link's new parent
XD_LOCK_INODE = "lock.inodelk"  # = domain: grant a whole-file inodelk on the new object
XD_LOCK_ENTRY = "lock.entrylk"  # = domain: grant a whole-directory entrylk on the new dir
XD_UNLOCK_INODE = "unlock.inodelk"  # = domain: afterwards release the whole-file inodelk
XD_UNLOCK_ENTRY = "unlock.entrylk"  # = domain: afterwards release the whole-directory entrylk
XD_UNLOCK_OWNER = "unlock.owner"  # = bytes: the lock owner of those unlocks


# ---------------------------------------------------------------- encoding
def counters(v: bytes | None) -> tuple[int, int, int]:
    """data, metadata, entry counters of one changelog value (absent = zeros)."""
    if not v or len(v) < 12:
        return (0, 0, 0)
    return struct.unpack(">3i", v[:12])  # type: ignore[return-value]


def vec(mask: int, k: int = 1) -> bytes:
    """A changelog operand adding `k` to the slots in `mask`."""
    return struct.pack(">3i", k if mask & M_DATA else 0, k if mask & M_META else 0,
                       k if mask & M_ENTRY else 0)


def bits(mask: int) -> list[int]:
    """Indices of the set bits of `mask`, lowest first."""
    out = []
    i = 0
    while mask:
        if mask & 1:
            out.append(i)
        mask >>= 1
        i += 1
    return out


def popcount(mask: int) -> int:
    return bin(mask).count("1")


# ---------------------------------------------------------------- the accusation matrix
Matrix = list[list[tuple[int, int, int]]]


def matrix_row(xattrs: Mapping[str, bytes] | None,
               keys: Sequence[str]) -> list[tuple[int, int, int]]:
    """One brick's row of the matrix: its counters about each brick (`keys` in brick order)."""
    xa = xattrs or {}
    return [counters(xa.get(k)) for k in keys]


def accused(matrix: Matrix, present: int, kind: int) -> int:
    """Mask of the bricks that some present brick (other than itself) accuses for `kind`."""
    m = 0
    for i in bits(present):
        for j, c in enumerate(matrix[i]):
            if i != j and c[kind]:
                m |= 1 << j
    return m


def sources(matrix: Matrix, present: int, cand: int, kind: int) -> tuple[int, int, bool]:
    """The source/sink decision for one kind: -> (sources, sinks, split).

    `cand` are the present bricks that may hold a copy of this kind (for data: not the arbiter).
    Sources are the candidates no present brick accuses, the sinks the other candidates. When
    every candidate is accused: no accusation of a present brick at all means everyone is a
    source; a present non-candidate (the arbiter) that is not accused means no data source is
    up (not split-brain); otherwise the copies accuse each other: split-brain."""
    acc = accused(matrix, present, kind)
    src = cand & ~acc
    if src:
        return src, cand & ~src, False
    if not acc & present:
        return cand, 0, False
    if present & ~acc:
        return 0, cand, False  # only the arbiter is good: no data source is up
    return 0, cand, True


def needs_heal(matrix: Matrix, dirty: Iterable[tuple[int, int, int]], present: int,
               kind: int) -> bool:
    """Some present brick has a non-zero counter (about anyone, or dirty) for `kind`."""
    d = list(dirty)
    return any(c[kind] for i in bits(present) for c in matrix[i]) \
        or any(d[i][kind] for i in bits(present))
