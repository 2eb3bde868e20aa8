"""Self-heal for cluster/replicate: repair one object, crawl the bricks' indices or the whole
tree, list and resolve split-brain. Plain async functions over a `ReplicaSet` translator; gvold's
heal task, the `gvol volume heal` commands and the translator's own background heals (after a
lookup saw a stale copy) all call these.

Healing one object (`heal_gfid`):
1. Healers exclude each other with a non-blocking inodelk in the domain `<afr>:self-heal`
   (another healer busy with the object: skip it, it is being healed).
2. Under the transaction lock (the domain client fops use: a whole-file inodelk, or for a
   directory's entries a whole-directory entrylk), every up brick's copy is looked up with its
   changelog. The changelog matrix gives, per kind (data, metadata, entry), the *sources*
   (copies no one accuses; never the arbiter for data) and the *sinks* (the others). No source
   while copies exist = split-brain: left alone (and reported) unless the favourite-child policy
   or an explicit choice (`resolve_split_brain`) names a source. Counters showing only `dirty`
   (an operation whose outcome nobody knows, say a client that died mid-write) make every copy
   a candidate: the biggest (then newest) copy is taken as the source and the others are
   compared with it.
3. Metadata: owner, mode, times and xattrs (except gfid, volume-id and the changelog) are copied
   from a source. Data: decided under the whole-file lock, then copied in windows of
   `self-heal-window-size` bytes, each under a transaction lock on that range only (clients'
   fops on the file wait for one window, never for the whole copy). Holes of the source are
   skipped with SEEK_DATA/SEEK_HOLE (and punched on a sink that has data there), each window is
   compared by rchecksum and copied only when it differs; an all-zero window is punched, not
   written, so sparse files stay sparse. Each window first re-reads the changelog: a client
   write that failed on the source meanwhile stops the copy (the next heal picks a new
   source). Under the whole-file lock again the sinks are truncated to the source's size and
   get its times. Entries: the sources' listings are the truth: names missing on a sink are created
   there with the same gfid (a hard link when the gfid already lives there), names only a sink
   has are removed (whole subtrees), a name with another gfid or type on a sink is replaced. A
   created copy is marked on the sources as needing data/metadata/entry heal itself, so the
   crawl reaches it next. A directory in entry split-brain is merged conservatively (union, no
   removals); a name whose copies on sources disagree is a gfid split-brain and stays so.
4. The counters observed in step 2 are subtracted (xattrop), so changes made meanwhile stay
   recorded; features/index drops the entry when they reach zero.

Crawls: `index_heal` lists every up brick's index (entries with non-zero counters) and heals each
gfid, in rounds until a round makes no progress (a copy created by an entry heal is healed in
the next round). The index is the crawl's state: nothing else needs saving, a crawl interrupted
by a restart simply starts over on what is left. `full_heal` walks the tree from the root and
heals every directory (including names missing somewhere although no counter says so) and every
file whose copies differ in size.
"""
from __future__ import annotations

import errno
import logging
import os
import stat as S
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from ..changelog import (
    DATA,
    ENTRY,
    INDEX_DIRTY_GFID,
    INDEX_XATTROP_GFID,
    KINDS,
    M_DATA,
    M_ENTRY,
    M_META,
    META,
    XATTR_AFR_PREFIX,
    accused,
    bits,
    counters,
    matrix_row,
    needs_heal,
    popcount,
    sources,
)
from ..errgroups import collapsed
from ..fops import (
    ENTRYLK_LOCK,
    ENTRYLK_LOCK_NB,
    ENTRYLK_UNLOCK,
    F_UNLCK,
    F_WRLCK,
    LK_SETLK,
    LK_SETLKW,
    SET_ATIME,
    SET_GID,
    SET_MODE,
    SET_MTIME,
    SET_UID,
    XATTROP_ADD_ARRAY,
    EntrylkReq,
    EntryRep,
    EntryReq,
    FdReq,
    FsyncReq,
    FtruncateReq,
    GetxattrReq,
    InodelkReq,
    InodeReq,
    LinkReq,
    LookupReq,
    MkdirReq,
    MknodReq,
    OpenReq,
    RangeReq,
    RchecksumReq,
    ReaddirReq,
    ReadReq,
    RemovexattrReq,
    SeekReq,
    SetattrReq,
    SetxattrReq,
    SymlinkReq,
    WriteReq,
    XattropReq,
)
from ..types import (
    PID_INTERNAL,
    ROOT_GFID,
    XATTR_GFID,
    XATTR_GFID2PATH,
    XATTR_PATH,
    XATTR_VOLUME_ID,
    Call,
    Dirent,
    Fd,
    FopError,
    Iatt,
    gfid_from_str,
    gfid_str,
)
from ..xlator import Translator, lookup_type

log = logging.getLogger(__name__)


class ReplicaSet(Protocol):
    """What heal uses of a replica set (cluster/replicate implements it): its bricks, its
    changelog keys and lock domains, and the fan-out over the bricks."""

    name: str
    children: list[Translator]
    n: int  # bricks in the set
    client_names: list[str]  # brick i's protocol/client name
    keys: list[str]  # brick i's changelog xattr
    dirty_key: str
    all_keys: tuple[str, ...]  # keys + dirty_key
    all_mask: int
    data_mask: int  # the bricks that hold data (all but the arbiter)
    arbiter: int | None
    domain: str  # the lock domain of afr's transactions
    heal_domain: str  # ... of heals
    heal_owner: bytes  # lock owner prefix of heals
    policy: str  # favorite-child-policy
    window: int  # bytes a data heal copies under one lock

    def bname(self, i: int) -> str: ...
    def bnames(self, mask: int) -> str: ...
    def up_mask(self) -> int: ...
    async def fan(self, mask: int, fn: Callable[[int], Awaitable[Any]]) -> list[Any]: ...
    def ok_mask(self, res: list[Any]) -> int: ...
    def best_error(self, res: list[Any]) -> FopError: ...
    def brick_order(self, gfid: bytes, cand: int) -> list[int]: ...
    async def lookup(self, call: Call, req: LookupReq) -> EntryRep: ...

_GONE = (errno.ENOENT, errno.ESTALE)
_SKIP_XATTRS = (XATTR_GFID, XATTR_VOLUME_ID)


@dataclass
class HealResult:
    gfid: bytes
    type: int = 0
    healed: list[str] = field(default_factory=list)  # kinds repaired
    split_brain: list[str] = field(default_factory=list)  # kinds (or "gfid:<name>") left
    skipped: str = ""  # why nothing was tried (busy, gone...)
    created: int = 0  # entries made on sinks
    removed: int = 0  # entries removed from sinks
    bytes_copied: int = 0
    missing: int = 0  # bricks where the object is not yet (its parent heals it)

    @property
    def ok(self) -> bool:
        return not self.split_brain and not self.skipped


@dataclass
class HealStats:
    """Progress of a crawl: what gvold's heal task reports."""
    crawl: str = "index"
    rounds: int = 0
    scanned: int = 0
    healed: int = 0
    split_brain: int = 0
    failed: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    remaining: int = 0
    split_brain_gfids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _hcall(afr: ReplicaSet, uid: int = 0, gid: int = 0) -> Call:
    return Call(uid, gid, (), PID_INTERNAL, afr.heal_owner)


def _sub(vals: tuple[int, int, int], kinds: int) -> bytes:
    """Operand subtracting the observed counters of the kinds in `kinds`."""
    return struct.pack(">3i", *(-v if kinds >> k & 1 else 0 for k, v in enumerate(vals)))


# ---------------------------------------------------------------- locks of a healer
class _HealLocks:
    """The two locks a heal holds on an object: the healers' domain (non-blocking: another
    healer means skip) and the transaction domain (excludes clients' fops)."""

    def __init__(self, afr: ReplicaSet, gfid: bytes, entry: bool) -> None:
        self.afr = afr
        self.gfid = gfid
        self.entry = entry
        self.heal_mask = 0
        self.txn_mask = 0
        # one owner per heal: two heals in one process must exclude each other too
        self.call = Call(0, 0, (), PID_INTERNAL, afr.heal_owner + os.urandom(4))

    def _lk(self, i: int, domain: str, kind: str, entry: bool, start: int = 0,
            length: int = 0) -> Awaitable[Any]:
        c = self.afr.children[i]
        call = self.call
        g = self.gfid
        if entry:
            cmd = {"nb": ENTRYLK_LOCK_NB, "block": ENTRYLK_LOCK, "un": ENTRYLK_UNLOCK}[kind]
            return c.entrylk(call, EntrylkReq(g, None, domain, cmd))
        if kind == "un":
            return c.inodelk(call, InodelkReq(g, domain, LK_SETLK, F_UNLCK, start, length))
        return c.inodelk(call, InodelkReq(g, domain, LK_SETLKW if kind == "block" else LK_SETLK,
                                          F_WRLCK, start, length))

    async def take(self, blocking: bool) -> str:
        """'' when held on the up bricks, else why not."""
        afr = self.afr
        up = afr.up_mask()
        res = await afr.fan(up, lambda i: self._lk(i, afr.heal_domain, "nb", False))
        self.heal_mask = afr.ok_mask(res)
        if any(isinstance(r, FopError) and r.errno == errno.EAGAIN for r in res):
            await self.drop()
            return "another heal of it is in progress"
        if not self.heal_mask:
            return f"cannot lock: {afr.best_error(res)}"
        self.txn_mask = await self._txn_lock(self.heal_mask, blocking)
        if self.txn_mask < 0:
            self.txn_mask = 0
            await self.drop()
            return "in use by a client"
        if not self.txn_mask:
            await self.drop()
            return "cannot lock on any brick"
        return ""

    async def _txn_lock(self, mask: int, blocking: bool, start: int = 0,
                        length: int = 0) -> int:
        """The transaction-domain lock (whole object, or for data the range [start,
        start+length)) on the bricks of `mask`: non-blocking on all in parallel, on a conflict
        released and taken blocking in brick order, as clients do (no deadlock with them).
        -> the mask of bricks locked; -1 on a conflict when not `blocking`."""
        afr = self.afr
        dom = afr.domain
        res = await afr.fan(mask, lambda i: self._lk(i, dom, "nb", self.entry, start, length))
        got = afr.ok_mask(res)
        if not any(isinstance(r, FopError) and r.errno == errno.EAGAIN for r in res):
            return got
        await afr.fan(got, lambda i: self._lk(i, dom, "un", self.entry, start, length))
        if not blocking:
            return -1
        got = 0
        for i in bits(mask):
            try:
                await self._lk(i, dom, "block", self.entry, start, length)
            except FopError as e:
                log.info("%s: heal lock of %s on %s: %s", afr.name, gfid_str(self.gfid),
                         afr.bname(i), e)
                continue
            got |= 1 << i
        return got

    async def _txn_unlock(self, mask: int, start: int = 0, length: int = 0) -> None:
        afr = self.afr
        with trio.CancelScope(shield=True):
            await afr.fan(mask & afr.up_mask(),
                           lambda i: self._lk(i, afr.domain, "un", self.entry, start, length))

    async def pause_txn(self) -> None:
        """Let clients' fops in while the data is copied window by window (the healers'
        lock stays held)."""
        await self._txn_unlock(self.txn_mask)
        self.txn_mask = 0

    async def resume_txn(self) -> None:
        self.txn_mask = max(0, await self._txn_lock(self.heal_mask & self.afr.up_mask(), True))

    async def lock_window(self, mask: int, start: int, length: int) -> int:
        return max(0, await self._txn_lock(mask, True, start, length))

    async def unlock_window(self, mask: int, start: int, length: int) -> None:
        await self._txn_unlock(mask, start, length)

    async def drop(self) -> None:
        afr = self.afr
        with trio.CancelScope(shield=True):
            if self.txn_mask:
                await self._txn_unlock(self.txn_mask)
                self.txn_mask = 0
            if self.heal_mask:
                await afr.fan(self.heal_mask & afr.up_mask(),
                               lambda i: self._lk(i, afr.heal_domain, "un", False))
                self.heal_mask = 0


# ---------------------------------------------------------------- choosing sources
def pick_by_policy(afr: ReplicaSet, policy: str, iatts: dict[int, Iatt],
                   matrix: list[list[tuple[int, int, int]]] | None = None,
                   kind: int = DATA) -> int | None:
    """The brick a split-brain policy chooses among `iatts` (brick -> attributes), or None
    when the rule does not single one out."""
    if not iatts:
        return None
    if policy in ("size", "bigger-file"):
        key: Callable[[int], Any] = lambda i: iatts[i].size  # noqa: E731
    elif policy in ("mtime", "latest-mtime"):
        key = lambda i: iatts[i].mtime_ns  # noqa: E731
    elif policy == "ctime":
        key = lambda i: iatts[i].ctime_ns  # noqa: E731
    elif policy == "majority":
        if matrix is None:
            # names: the gfid more than half of the bricks hold
            counts: dict[bytes, list[int]] = {}
            for i, ia in iatts.items():
                counts.setdefault(ia.gfid, []).append(i)
            for who in counts.values():
                if 2 * len(who) > afr.n:
                    return who[0]
            return None
        # the copy more than half of the bricks do not accuse
        best = None
        for j in iatts:
            ok = sum(1 for i in range(afr.n) if not matrix[i][j][kind])
            if 2 * ok > afr.n:
                best = j if best is None else best
        return best
    else:
        return None
    top = max(key(i) for i in iatts)
    winners = [i for i in iatts if key(i) == top]
    return winners[0] if len(winners) == 1 else None


@dataclass
class _View:
    """Every up brick's copy of one object, looked up under the heal's locks."""
    reps: list[Any]
    present: int
    matrix: list[list[tuple[int, int, int]]]  # matrix[i][j] = counters on i about j
    dirty: list[tuple[int, int, int]]
    type: int

    def iatt(self, i: int) -> Iatt:
        return self.reps[i].iatt


async def _look(afr: ReplicaSet, gfid: bytes, mask: int, all_xattrs: bool) -> _View:
    call = _hcall(afr)
    req = LookupReq(gfid=gfid, xattrs=("*",) if all_xattrs else afr.all_keys)
    res = await afr.fan(mask, lambda i: afr.children[i].lookup(call, req))
    present = 0
    typ = 0
    matrix = [[(0, 0, 0)] * afr.n for _ in range(afr.n)]
    dirty = [(0, 0, 0)] * afr.n
    for i, r in enumerate(res):
        if not isinstance(r, EntryRep) or r.iatt.gfid != gfid:
            continue
        present |= 1 << i
        typ = typ or S.S_IFMT(r.iatt.mode)
        xa = r.xattrs or {}
        matrix[i] = matrix_row(xa, afr.keys)
        dirty[i] = counters(xa.get(afr.dirty_key))
    return _View(res, present, matrix, dirty, typ)


def _sources(afr: ReplicaSet, v: _View, kind: int) -> tuple[int, int, bool]:
    """-> (sources, sinks, split) for one kind among the present copies."""
    cand = v.present & afr.data_mask if kind == DATA else v.present
    return sources(v.matrix, v.present, cand, kind)


def _needs(v: _View, kind: int) -> bool:
    return needs_heal(v.matrix, v.dirty, v.present, kind)


def _choose(afr: ReplicaSet, v: _View, cand: int, kind: int, policy: str) -> int | None:
    iatts = {i: v.iatt(i) for i in bits(cand)}
    return pick_by_policy(afr, policy, iatts, v.matrix, kind)


# ---------------------------------------------------------------- heal one object
async def heal_gfid(afr: ReplicaSet, gfid: bytes, *, blocking: bool = True,
                    source: int | None = None, policy: str | None = None,
                    full: bool = False) -> HealResult:
    """Heal metadata, data and (directories) entries of one object on every up brick.
    `source`/`policy` choose a source where there is none (split-brain resolution)."""
    out = HealResult(gfid)
    up = afr.up_mask()
    if not up:
        out.skipped = "every brick is down"
        return out
    pre = await _look(afr, gfid, up, False)
    if not pre.present:
        out.skipped = "gone"
        return out
    out.type = pre.type
    is_dir = S.S_ISDIR(pre.type)
    if not full and source is None and not any(_needs(pre, k) for k in (DATA, META, ENTRY)):
        return out  # nothing recorded: nothing to do
    # data / metadata first (inode lock), then entries (entry lock)
    locks = _HealLocks(afr, gfid, False)
    why = await locks.take(blocking)
    if why:
        out.skipped = why
        return out
    try:
        v = await _look(afr, gfid, locks.txn_mask, True)
        out.missing = popcount(locks.txn_mask & ~v.present)
        if v.present:
            if await _heal_kind(afr, v, META, source, policy, out, full):
                await _reset(afr, v, M_META)
            if S.S_ISREG(v.type):
                await _heal_file_data(afr, locks, v, source, policy, out, full)
    finally:
        await locks.drop()
    if is_dir:
        elocks = _HealLocks(afr, gfid, True)
        why = await elocks.take(blocking)
        if why:
            out.skipped = out.skipped or why
            return out
        try:
            v = await _look(afr, gfid, elocks.txn_mask, False)
            if v.present:
                if await _heal_entries(afr, v, source, policy, out, full):
                    await _reset(afr, v, M_ENTRY)
        finally:
            await elocks.drop()
    return out


def _plan(afr: ReplicaSet, v: _View, kind: int, source: int | None, policy: str | None,
          out: HealResult, full: bool) -> tuple[bool, int, int]:
    """Who heals whom for one kind (META or DATA): -> (counters may be reset, source brick,
    sinks); (False, -1, 0) when nothing can or need be done now."""
    nothing = (False, -1, 0)
    needed = _needs(v, kind)
    if not needed and not (full and kind == DATA and _sizes_differ(afr, v)):
        return nothing
    src, sinks, split = _sources(afr, v, kind)
    cand = v.present & (afr.data_mask if kind == DATA else afr.all_mask)
    if source is not None:
        if not cand >> source & 1:
            raise FopError(errno.EINVAL, f"{afr.bname(source)} has no usable {KINDS[kind]} "
                           f"copy of {gfid_str(_g(v))}")
        src, sinks, split = 1 << source, cand & ~(1 << source), False
    elif split:
        pol = policy or (afr.policy if afr.policy != "none" else None)
        pick = _choose(afr, v, cand, kind, pol) if pol else None
        if pick is None:
            out.split_brain.append(KINDS[kind])
            log.error("%s: %s %s is in %s split-brain on %s; not healed", afr.name,
                      "directory" if S.S_ISDIR(v.type) else "file", gfid_str(_g(v)),
                      KINDS[kind], afr.bnames(v.present))
            return nothing
        log.warning("%s: %s split-brain of %s resolved by policy %s: source %s", afr.name,
                    KINDS[kind], gfid_str(_g(v)), pol, afr.bname(pick))
        src, sinks = 1 << pick, cand & ~(1 << pick)
    elif not sinks and accused(v.matrix, v.present, kind) & ~v.present:
        return nothing  # the accused copies are not there yet: their parent's entry heal first
    elif popcount(src) > 1 and not sinks:
        # no one accused (only dirty, or a full crawl): one copy leads, the others are
        # compared with it: for data the biggest, newest; for metadata the last changed
        if kind == DATA:
            best = max(bits(src), key=lambda i: (v.iatt(i).size, v.iatt(i).mtime_ns, -i))
            sinks = src & ~(1 << best)
        else:
            best = max(bits(src), key=lambda i: (v.iatt(i).ctime_ns, -i))
            sinks = sum(1 << j for j in bits(src) if j != best and _meta_differs(afr, v, best, j))
        src = 1 << best
    if not src:
        return nothing  # the good copy is not up (an arbiter witnessed it): later
    return True, bits(src)[0], sinks


def _healed(afr: ReplicaSet, v: _View, kind: int, s: int, sinks: int, out: HealResult) -> None:
    out.healed.append(KINDS[kind])
    log.info("%s: healed %s of %s from %s to %s", afr.name, KINDS[kind], gfid_str(_g(v)),
             afr.bname(s), afr.bnames(sinks))


async def _heal_kind(afr: ReplicaSet, v: _View, kind: int, source: int | None,
                     policy: str | None, out: HealResult, full: bool) -> bool:
    """Heal the metadata; -> whether its counters may be reset."""
    reset, s, sinks = _plan(afr, v, kind, source, policy, out, full)
    if reset and sinks:
        await _heal_meta(afr, v, s, sinks)
        _healed(afr, v, kind, s, sinks, out)
    return reset


def _meta_differs(afr: ReplicaSet, v: _View, a: int, b: int) -> bool:
    x, y = v.reps[a], v.reps[b]
    return ((x.iatt.mode, x.iatt.uid, x.iatt.gid) != (y.iatt.mode, y.iatt.uid, y.iatt.gid)
            or _healable_xattrs(afr, x.xattrs) != _healable_xattrs(afr, y.xattrs))


def _g(v: _View) -> bytes:
    for r in v.reps:
        if isinstance(r, EntryRep):
            return r.iatt.gfid
    return b"\0" * 16


def _sizes_differ(afr: ReplicaSet, v: _View) -> bool:
    sizes = {v.iatt(i).size for i in bits(v.present & afr.data_mask)}
    return len(sizes) > 1


async def _reset(afr: ReplicaSet, v: _View, kinds: int) -> None:
    """Subtract the counters observed in `v` for `kinds` on every copy (changes recorded
    meanwhile survive)."""
    call = _hcall(afr)

    def ops(i: int) -> dict[str, bytes]:
        o: dict[str, bytes] = {}
        for j in range(afr.n):
            c = v.matrix[i][j]
            if any(c[k] for k in range(3) if kinds >> k & 1) and v.present >> j & 1:
                o[afr.keys[j]] = _sub(c, kinds)
        d = v.dirty[i]
        if any(d[k] for k in range(3) if kinds >> k & 1):
            o[afr.dirty_key] = _sub(d, kinds)
        return o

    todo = {i: ops(i) for i in bits(v.present)}
    mask = sum(1 << i for i, o in todo.items() if o)
    if not mask:
        return
    g = _g(v)
    res = await afr.fan(mask, lambda i: afr.children[i].xattrop(
        call, XattropReq(g, XATTROP_ADD_ARRAY, todo[i])))
    for i in bits(mask):
        if isinstance(res[i], FopError):
            log.warning("%s: cannot reset the changelog of %s on %s: %s", afr.name,
                        gfid_str(g), afr.bname(i), res[i])


# ---------------------------------------------------------------- metadata
def _healable_xattrs(afr: ReplicaSet, xa: dict | None) -> dict[str, bytes]:
    out = {}
    for k, val in (xa or {}).items():
        # the changelog and the gfid2path records are each brick's own bookkeeping
        if k in _SKIP_XATTRS or k.startswith((XATTR_AFR_PREFIX, XATTR_GFID2PATH)):
            continue
        out[k] = val
    return out


async def _heal_meta(afr: ReplicaSet, v: _View, s: int, sinks: int) -> None:
    call = _hcall(afr)
    src = v.reps[s]
    ia = src.iatt
    want = _healable_xattrs(afr, src.xattrs)
    g = ia.gfid
    lnk = S.S_ISLNK(ia.mode)

    async def one(j: int) -> None:
        c = afr.children[j]
        have = _healable_xattrs(afr, v.reps[j].xattrs)
        for k, val in want.items():
            if have.get(k) != val:
                await c.setxattr(call, SetxattrReq(g, k, val))
        for k in have:
            if k not in want:
                try:
                    await c.removexattr(call, RemovexattrReq(g, k))
                except FopError as e:
                    if e.errno != errno.ENODATA:
                        raise
        cur = v.reps[j].iatt
        valid = SET_ATIME | SET_MTIME
        if (cur.uid, cur.gid) != (ia.uid, ia.gid):
            valid |= SET_UID | SET_GID
        if not lnk:
            valid |= SET_MODE  # after chown, which clears set-id bits
        await c.setattr(call, SetattrReq(g, valid, S.S_IMODE(ia.mode), ia.uid, ia.gid, 0,
                                         ia.atime_ns, ia.mtime_ns))

    res = await afr.fan(sinks, one)
    bad = [f"{afr.bname(j)}: {res[j]}" for j in bits(sinks) if isinstance(res[j], FopError)]
    if bad:
        raise FopError(errno.EIO, f"metadata heal of {gfid_str(g)} failed on " + "; ".join(bad))


# ---------------------------------------------------------------- data
async def _heal_file_data(afr: ReplicaSet, locks: _HealLocks, v: _View, source: int | None,
                          policy: str | None, out: HealResult, full: bool) -> None:
    """Data heal of a regular file. Decided under the whole-file transaction lock (`v` was
    looked up under it); the copy then runs window by window, each under a lock on just that
    range, so clients' fops on the file wait for one window at most, not for the whole copy;
    the end (size, times, counters) is done under the whole-file lock again."""
    reset, s, sinks = _plan(afr, v, DATA, source, policy, out, full)
    if not reset:
        return
    if sinks:
        g = _g(v)
        call = _hcall(afr)
        fds: dict[int, Fd] = {}
        try:
            for i in [s] + bits(sinks):
                fds[i] = (await afr.children[i].open(call, OpenReq(
                    g, os.O_RDWR if i != s else os.O_RDONLY))).fd
            await locks.pause_txn()
            try:
                copied, why = await _copy_windows(afr, locks, v, s, sinks, fds)
            finally:
                with trio.CancelScope(shield=True):
                    await locks.resume_txn()
            out.bytes_copied += copied
            if not why:
                now = await _look(afr, g, locks.txn_mask, False)
                why = _source_changed(afr, v, now, s, sinks)
            if why:
                out.skipped = why
                log.warning("%s: data heal of %s from %s stopped: %s; it stays pending",
                            afr.name, gfid_str(g), afr.bname(s), why)
                return
            await _finish_data(afr, now.iatt(s), sinks, fds)
        finally:
            with trio.CancelScope(shield=True):
                for i, f in fds.items():
                    try:
                        await afr.children[i].release(call, FdReq(f))
                    except FopError:
                        pass
        _healed(afr, v, DATA, s, sinks, out)
    await _reset(afr, v, M_DATA)


def _source_changed(afr: ReplicaSet, was: _View, now: _View, s: int, sinks: int) -> str:
    """Why the copy from `s` must not be trusted any more ('' = it can): a client's write
    that failed on the source (someone accuses it now) or a copy that went away."""
    if not now.present >> s & 1:
        return f"the source {afr.bname(s)} went away"
    if sinks & ~now.present:
        return f"{afr.bnames(sinks & ~now.present)} went away"
    for i in bits(now.present):
        if i != s and now.matrix[i][s][DATA] > was.matrix[i][s][DATA]:
            return f"a write failed on the source {afr.bname(s)} meanwhile"
    return ""


async def _finish_data(afr: ReplicaSet, ia: Iatt, sinks: int, fds: dict[int, Fd]) -> None:
    """Under the whole-file lock: sinks get the source's size (now) and times, on disk."""
    call = _hcall(afr)
    sink_list = bits(sinks)
    await _all(afr, sink_list, lambda j: afr.children[j].ftruncate(
        call, FtruncateReq(fds[j], ia.size)))
    await _all(afr, sink_list, lambda j: afr.children[j].fsync(call, FsyncReq(fds[j], False)))
    await _all(afr, sink_list, lambda j: afr.children[j].setattr(
        call, SetattrReq(ia.gfid, SET_ATIME | SET_MTIME, 0, 0, 0, 0, ia.atime_ns, ia.mtime_ns)))


async def _copy_windows(afr: ReplicaSet, locks: _HealLocks, v: _View, s: int, sinks: int,
                        fds: dict[int, Fd]) -> tuple[int, str]:
    """Copy the differing windows of the source to the sinks -> (bytes written, why it
    stopped early or ''). Holes of the source are skipped with SEEK_DATA/SEEK_HOLE (and
    punched on a sink that has data there); each window is compared by rchecksum and copied
    only when it differs; an all-zero window is punched. Before each window is copied the
    changelog is looked at again: if a client's write failed on the source since the heal
    began, the source is not the good copy any more and the copy stops."""
    call = _hcall(afr)
    g = _g(v)
    size = v.iatt(s).size
    W = afr.window
    copied = 0
    sink_list = bits(sinks)
    both = sinks | 1 << s
    src = afr.children[s]
    sfd = fds[s]

    async def seek(i: int, off: int, whence: int) -> int:
        try:
            return (await afr.children[i].seek(call, SeekReq(fds[i], off, whence))).offset
        except FopError as e:
            if e.errno == errno.ENXIO:
                return INF_OFF
            raise

    async def window(a: int, b: int, hole: bool) -> tuple[int, str, int]:
        """Under a lock on [a, b) of every copy: make the sinks' range the source's.
        -> (bytes written, why to stop or '', where the next window starts)."""
        n = b - a
        held = await locks.lock_window(both, a, n)
        try:
            if held != both:
                return 0, f"cannot lock {afr.bnames(both & ~held)}", b
            now: list[_View] = []
            sums: list[Any] = []

            async def look() -> None:
                now.append(await _look(afr, g, both, False))

            async def checksum() -> None:
                if not hole:
                    sums.extend(await afr.fan(both, lambda i: afr.children[i].rchecksum(
                        call, RchecksumReq(fds[i], a, n))))

            with collapsed():  # a FopError of either reaches the caller as itself
                async with trio.open_nursery() as nn:
                    nn.start_soon(look)
                    nn.start_soon(checksum)
            why = _source_changed(afr, v, now[0], s, sinks)
            if why:
                return 0, why, b
            if hole:
                # the source has a hole at [a, b) (up to where a client wrote meanwhile):
                # punch it where a sink has data
                b = min(b, await seek(s, a, os.SEEK_DATA))
                if b <= a:
                    return 0, "", a  # data there now: a data window next

                async def punch(j: int) -> None:
                    if await seek(j, a, os.SEEK_DATA) < b:
                        await afr.children[j].discard(call, RangeReq(fds[j], a, b - a))
                await _all(afr, sink_list, punch)
                return 0, "", b
            for i in [s] + sink_list:
                if isinstance(sums[i], FopError):
                    raise sums[i]
            ref = (sums[s].weak, sums[s].strong)
            diff = [j for j in sink_list if (sums[j].weak, sums[j].strong) != ref]
            if not diff:
                return 0, "", b
            data = (await src.read(call, ReadReq(sfd, a, n))).data
            if not data:
                return 0, "", b  # truncated meanwhile: the end sets the size
            if data.count(0) != len(data):
                await _all(afr, diff, lambda j: afr.children[j].write(
                    call, WriteReq(fds[j], a, data)))
                return len(data) * len(diff), "", b
            await _all(afr, diff, lambda j: afr.children[j].discard(
                call, RangeReq(fds[j], a, len(data))))
            return 0, "", b
        finally:
            await locks.unlock_window(held, a, n)

    off = 0
    while off < size:
        d = min(await seek(s, off, os.SEEK_DATA), size)
        if d > off:
            end, hole = d, True
        else:
            h = min(await seek(s, off, os.SEEK_HOLE), size)
            end, hole = min(off + W - off % W, h if h > off else size), False
        got, why, off = await window(off, end, hole)
        copied += got
        if why:
            return copied, why
    return copied, ""


INF_OFF = 1 << 63


async def _all(afr: ReplicaSet, idx: list[int], fn: Callable[[int], Awaitable[Any]]) -> None:
    """fn on each brick in parallel; the first failure is raised (naming the brick)."""
    mask = sum(1 << i for i in idx)
    if not mask:
        return
    res = await afr.fan(mask, fn)
    for i in idx:
        if isinstance(res[i], FopError):
            raise FopError(res[i].errno, f"{afr.bname(i)}: {res[i]}")


# ---------------------------------------------------------------- entries
async def list_dir(afr: ReplicaSet, i: int, gfid: bytes) -> dict[bytes, Dirent]:
    """Every entry of a directory on brick i (readdirplus), `.gvol` at the root left out."""
    call = _hcall(afr)
    c = afr.children[i]
    fd = (await c.opendir(call, InodeReq(gfid))).fd
    out: dict[bytes, Dirent] = {}
    try:
        off = 0
        while True:
            r = await c.readdir(call, ReaddirReq(fd, off, 1 << 20, True))
            for e in r.entries:
                if e.name in (b".", b"..") or (gfid == ROOT_GFID and e.name == b".gvol"):
                    continue
                out[e.name] = e
            if r.eof or not r.entries:
                break
            off = r.entries[-1].off
    finally:
        with trio.CancelScope(shield=True):
            try:
                await c.releasedir(call, FdReq(fd))
            except FopError:
                pass
    return out


async def _remove(afr: ReplicaSet, i: int, parent: bytes, name: bytes, e: Dirent) -> int:
    """Remove a name (a whole subtree for a directory) from brick i; -> entries removed."""
    call = _hcall(afr)
    c = afr.children[i]
    n = 0
    if e.type == S.S_IFDIR:
        g = e.iatt.gfid if e.iatt is not None else None
        if g is None:
            g = (await c.lookup(call, LookupReq(parent=parent, name=name))).iatt.gfid
        for cn, ce in (await list_dir(afr, i, g)).items():
            n += await _remove(afr, i, g, cn, ce)
        await c.rmdir(call, EntryReq(parent, name))
    else:
        await c.unlink(call, EntryReq(parent, name))
    return n + 1


async def _make(afr: ReplicaSet, j: int, parent: bytes, name: bytes, ia: Iatt, s: int,
                sources: int) -> None:
    """Create (parent, name) on brick j like source s has it (same gfid), and mark it on the
    sources as needing its own heal towards j."""
    c = afr.children[j]
    call = _hcall(afr, ia.uid, ia.gid)
    g = ia.gfid
    fmt = S.S_IFMT(ia.mode)
    perm = S.S_IMODE(ia.mode)
    try:
        if fmt == S.S_IFDIR:
            await c.mkdir(call, MkdirReq(parent, name, perm, g, 0))
            slots = M_META | M_ENTRY
        elif fmt == S.S_IFLNK:
            target = (await afr.children[s].readlink(_hcall(afr), InodeReq(g))).target
            await c.symlink(call, SymlinkReq(parent, name, target, g))
            slots = M_META
        else:
            await c.mknod(call, MknodReq(parent, name, fmt | perm, ia.rdev, g, 0))
            slots = (M_DATA | M_META) if fmt == S.S_IFREG else M_META
    except FopError as e:
        if e.errno != errno.EEXIST or fmt == S.S_IFDIR:
            raise
        # the gfid already lives on j under another name: one more hard link
        await c.link(_hcall(afr), LinkReq(g, parent, name))
        slots = (M_DATA | M_META) if fmt == S.S_IFREG else M_META
    mark = {afr.keys[j]: struct.pack(">3i", *(1 if slots >> k & 1 else 0 for k in range(3)))}
    hc = _hcall(afr)
    await afr.fan(sources, lambda i: afr.children[i].xattrop(
        hc, XattropReq(g, XATTROP_ADD_ARRAY, mark)))


async def _heal_entries(afr: ReplicaSet, v: _View, source: int | None, policy: str | None,
                        out: HealResult, full: bool) -> bool:
    """Entry heal of a directory; -> True when its entry counters may be reset."""
    needed = _needs(v, ENTRY)
    if not needed and not full:
        return False
    src, sinks, split = _sources(afr, v, ENTRY)
    merge = False
    if source is not None:
        src, sinks, split = 1 << source, v.present & ~(1 << source), False
    elif split:
        pol = policy or (afr.policy if afr.policy != "none" else None)
        pick = _choose(afr, v, v.present, ENTRY, pol) if pol else None
        if pick is not None:
            src, sinks = 1 << pick, v.present & ~(1 << pick)
        else:
            merge = True  # conservative: union of the names, nothing removed
            src, sinks = v.present, 0
    elif not sinks:
        merge = True  # only dirty (or a full crawl): every copy's names count
    g = _g(v)
    lists: dict[int, dict[bytes, Dirent]] = {}
    res = await afr.fan(v.present, lambda i: list_dir(afr, i, g))
    for i in bits(v.present):
        if isinstance(res[i], FopError):
            raise FopError(res[i].errno, f"listing {gfid_str(g)} on {afr.bname(i)}: {res[i]}")
        lists[i] = res[i]
    names: set[bytes] = set()
    for i in bits(v.present):
        names |= set(lists[i])
    unresolved = False
    pol = policy or (afr.policy if afr.policy != "none" else None)
    for name in sorted(names):
        have = {i: lists[i][name] for i in bits(v.present) if name in lists[i]}
        have = {i: e for i, e in have.items() if e.iatt is not None}
        srcs = {i: e for i, e in have.items() if src >> i & 1}
        if not srcs:
            if merge:
                continue
            for j in have:  # only sinks have it: removed while they were away
                out.removed += await _remove(afr, j, g, name, have[j])
            continue
        ids = {(e.iatt.gfid, e.type) for e in srcs.values()}
        if len(ids) > 1:
            pick = None
            if source is None and pol:
                pick = pick_by_policy(afr, pol, {i: e.iatt for i, e in srcs.items()})
            if pick is None:
                unresolved = True
                out.split_brain.append(f"gfid:{name.decode(errors='replace')}")
                log.error("%s: %r in directory %s has different gfids/types on %s "
                          "(gfid split-brain): %s", afr.name, name, gfid_str(g),
                          afr.bnames(sum(1 << i for i in srcs)),
                          "; ".join(f"{afr.bname(i)}: {gfid_str(e.iatt.gfid)}"
                                    for i, e in srcs.items()))
                continue
            ref_i = pick
            srcs = {pick: srcs[pick]}
        else:
            ref_i = min(srcs)
        ref = srcs[ref_i]
        ref_id = (ref.iatt.gfid, ref.type)
        holders = sum(1 << i for i, e in have.items() if (e.iatt.gfid, e.type) == ref_id)
        targets = v.present & ~holders
        for j in bits(targets):
            if j in have:  # another object under that name there: replace it
                out.removed += await _remove(afr, j, g, name, have[j])
            await _make(afr, j, g, name, ref.iatt, ref_i,
                        holders & src if holders & src else holders)
            out.created += 1
    if out.created or out.removed:
        out.healed.append("entry")
        log.info("%s: healed entries of directory %s: %d created, %d removed", afr.name,
                 gfid_str(g), out.created, out.removed)
    return not unresolved and (needed or out.created > 0)


# ---------------------------------------------------------------- crawls
async def index_entries(afr: ReplicaSet) -> dict[int, dict[str, list[str]]]:
    """Every up brick's index: {brick: {"xattrop": [gfid strings], "dirty": [...]}}."""
    call = _hcall(afr)
    out: dict[int, dict[str, list[str]]] = {}

    async def one(i: int) -> dict[str, list[str]]:
        got: dict[str, list[str]] = {}
        c = afr.children[i]
        for vg, kind in ((INDEX_XATTROP_GFID, "xattrop"), (INDEX_DIRTY_GFID, "dirty")):
            fd = (await c.opendir(call, InodeReq(vg))).fd
            names: list[str] = []
            try:
                off = 0
                while True:
                    r = await c.readdir(call, ReaddirReq(fd, off, 1 << 20))
                    names += [e.name.decode() for e in r.entries]
                    if r.eof or not r.entries:
                        break
                    off = r.entries[-1].off
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await c.releasedir(call, FdReq(fd))
                    except FopError:
                        pass
            got[kind] = names
        return got

    res = await afr.fan(afr.up_mask(), one)
    for i, r in enumerate(res):
        if isinstance(r, dict):
            out[i] = r
        elif isinstance(r, FopError):
            log.warning("%s: cannot read the heal index of %s: %s", afr.name, afr.bname(i), r)
    return out


async def index_heal(afr: ReplicaSet, *, max_rounds: int = 64, parallel: int = 4,
                     progress: Callable[[HealStats], Any] | None = None) -> HealStats:
    """Heal what the bricks' indices list, round after round while rounds make progress;
    up to `parallel` objects at a time."""
    st = HealStats("index")
    before: set[bytes] | None = None
    progressed = False
    limit = trio.CapacityLimiter(max(parallel, 1))
    for _ in range(max_rounds):
        todo = _gfids(await index_entries(afr))
        st.remaining = len(todo)
        if not todo or (todo == before and not progressed):
            break
        before = set(todo)
        st.rounds += 1
        progressed = False

        async def one(g: bytes) -> None:
            nonlocal progressed
            async with limit:
                st.scanned += 1
                try:
                    r = await heal_gfid(afr, g)
                except FopError as e:
                    st.failed += 1
                    log.warning("%s: heal of %s failed: %s", afr.name, gfid_str(g), e)
                    return
            if r.split_brain:
                if gfid_str(g) not in st.split_brain_gfids:
                    st.split_brain += 1
                    st.split_brain_gfids.append(gfid_str(g))
            elif r.skipped:
                st.skipped += 1
            if r.healed or r.created or r.removed:
                progressed = True
                st.healed += 1
            st.bytes_copied += r.bytes_copied
            if progress is not None:
                progress(st)

        async with trio.open_nursery() as nursery:
            for g in todo:
                nursery.start_soon(one, g)
    st.remaining = len(_gfids(await index_entries(afr)))
    return st


def _gfids(idx: dict[int, dict[str, list[str]]]) -> set[bytes]:
    out: set[bytes] = set()
    for kinds in idx.values():
        for names in kinds.values():
            for n in names:
                try:
                    out.add(gfid_from_str(n))
                except ValueError:
                    continue
    return out


async def full_heal(afr: ReplicaSet, *, progress: Callable[[HealStats], Any] | None = None
                    ) -> HealStats:
    """Walk the whole tree from the root, healing every directory (names missing somewhere
    included) and every object whose counters or sizes disagree; then an index heal."""
    st = HealStats("full")
    queue = [ROOT_GFID]
    seen: set[bytes] = set()
    while queue:
        g = queue.pop(0)
        if g in seen:
            continue
        seen.add(g)
        st.scanned += 1
        try:
            r = await heal_gfid(afr, g, full=True)
        except FopError as e:
            st.failed += 1
            log.warning("%s: full heal of %s failed: %s", afr.name, gfid_str(g), e)
            continue
        if r.healed:
            st.healed += 1
        if r.split_brain:
            st.split_brain += 1
            st.split_brain_gfids.append(gfid_str(g))
        st.bytes_copied += r.bytes_copied
        if progress is not None:
            progress(st)
        if not S.S_ISDIR(r.type):
            continue
        up = afr.up_mask()
        lst: dict[bytes, Dirent] = {}
        for i in afr.brick_order(g, up & afr.data_mask or up):
            try:
                lst = await list_dir(afr, i, g)
                break
            except FopError:
                continue
        for e in lst.values():
            if e.iatt is None:
                continue
            if e.type == S.S_IFDIR:
                queue.append(e.iatt.gfid)
            else:
                try:
                    r2 = await heal_gfid(afr, e.iatt.gfid, full=True)
                except FopError as e2:
                    st.failed += 1
                    log.warning("%s: full heal of %s failed: %s", afr.name,
                                gfid_str(e.iatt.gfid), e2)
                    continue
                st.scanned += 1
                if r2.healed:
                    st.healed += 1
                if r2.split_brain:
                    st.split_brain += 1
                    st.split_brain_gfids.append(gfid_str(e.iatt.gfid))
                st.bytes_copied += r2.bytes_copied
    rest = await index_heal(afr)
    st.rounds = rest.rounds + 1
    st.healed += rest.healed
    st.remaining = rest.remaining
    return st


# ---------------------------------------------------------------- heal info
async def inspect_gfid(afr: ReplicaSet, gfid: bytes) -> dict[str, Any]:
    """Without locks: does the object need heal, and is it in split-brain (and which kinds)?"""
    v = await _look(afr, gfid, afr.up_mask(), False)
    out: dict[str, Any] = {"gfid": gfid_str(gfid), "split_brain": [], "pending": False,
                           "present": afr.bnames(v.present), "type": v.type}
    if not v.present:
        out["gone"] = True
        return out
    for kind in (DATA, META, ENTRY):
        if kind == DATA and not S.S_ISREG(v.type):
            continue
        if kind == ENTRY and not S.S_ISDIR(v.type):
            continue
        src, sinks, split = _sources(afr, v, kind)
        if split:
            out["split_brain"].append(KINDS[kind])
        if _needs(v, kind):
            out["pending"] = True
    out["dirty_only"] = out["pending"] and not any(
        v.matrix[i][j][k] for i in bits(v.present) for j in range(afr.n) for k in range(3))
    return out


async def path_on(afr: ReplicaSet, i: int, gfid: bytes) -> str | None:
    """The object's path as brick i knows it (None when it cannot tell)."""
    try:
        rep = await afr.children[i].getxattr(_hcall(afr), GetxattrReq(gfid, XATTR_PATH))
    except FopError:
        return None
    return rep.value.decode(errors="replace")


async def heal_info(afr: ReplicaSet, *, inspect: bool = True) -> dict[str, Any]:
    """Per brick: the entries its index lists (what needs heal), split-brain ones marked."""
    idx = await index_entries(afr)
    cache: dict[str, dict[str, Any]] = {}
    bricks = []
    total = sb = 0
    for i in range(afr.n):
        b: dict[str, Any] = {"brick": afr.bname(i), "index": i,
                             "arbiter": i == afr.arbiter}
        if i not in idx:
            b["status"] = "Transport endpoint is not connected"
            b["entries"] = None
            b["count"] = None
            bricks.append(b)
            continue
        b["status"] = "Connected"
        ents = []
        names = list(dict.fromkeys(idx[i].get("xattrop", []) + idx[i].get("dirty", [])))
        for n in names:
            e: dict[str, Any] = {"gfid": n}
            if inspect:
                e["path"] = await path_on(afr, i, gfid_from_str(n))
                if n not in cache:
                    try:
                        cache[n] = await inspect_gfid(afr, gfid_from_str(n))
                    except FopError as err:
                        cache[n] = {"gfid": n, "error": str(err), "split_brain": [],
                                    "pending": True}
                info = cache[n]
                if info.get("gone") or not info.get("pending"):
                    continue
                e["split_brain"] = info["split_brain"]
                e["dirty_only"] = info.get("dirty_only", False)
            ents.append(e)
        b["entries"] = ents
        b["count"] = len(ents)
        b["split_brain_count"] = sum(1 for e in ents if e.get("split_brain"))
        total += len(ents)
        sb += b["split_brain_count"]
        bricks.append(b)
    return {"replica_set": afr.name, "bricks": bricks, "total": total, "split_brain": sb}


async def split_brain_info(afr: ReplicaSet) -> list[dict[str, Any]]:
    """Objects in split-brain: {gfid, kinds (data/metadata/entry, and 'gfid' for a
    directory holding names whose copies have different gfids or types), bricks whose index
    lists it, names}."""
    idx = await index_entries(afr)
    where: dict[str, list[str]] = {}
    first: dict[str, int] = {}
    for i, kinds in idx.items():
        for n in dict.fromkeys(kinds.get("xattrop", []) + kinds.get("dirty", [])):
            where.setdefault(n, []).append(afr.bname(i))
            first.setdefault(n, i)
    out = []
    for n, bricks in where.items():
        g = gfid_from_str(n)
        try:
            info = await inspect_gfid(afr, g)
        except FopError:
            continue
        if info.get("gone"):
            continue
        kinds = list(info["split_brain"])
        names: list[bytes] = []
        if S.S_ISDIR(info["type"]):
            try:
                names = await name_split_brains(afr, g)
            except FopError:
                names = []
            if names:
                kinds.append("gfid")
        if kinds:
            out.append({"gfid": n, "path": await path_on(afr, first[n], g),
                        "kinds": kinds, "bricks": bricks,
                        "names": [x.decode(errors="replace") for x in names]})
    return out


async def name_split_brains(afr: ReplicaSet, dir_gfid: bytes) -> list[bytes]:
    """Names in a directory whose copies on the directory's entry sources disagree on gfid or
    type (only looks when the directory has entry counters)."""
    v = await _look(afr, dir_gfid, afr.up_mask(), False)
    if not S.S_ISDIR(v.type) or not _needs(v, ENTRY):
        return []
    src, sinks, split = _sources(afr, v, ENTRY)
    if not split and sinks:
        return []
    res = await afr.fan(v.present, lambda i: list_dir(afr, i, dir_gfid))
    lists = {i: r for i, r in enumerate(res) if isinstance(r, dict)}
    names: set[bytes] = set()
    for lst in lists.values():
        names |= set(lst)
    out = []
    for n in sorted(names):
        ids = {(lst[n].iatt.gfid, lst[n].type) for lst in lists.values()
               if n in lst and lst[n].iatt is not None}
        if len(ids) > 1:
            out.append(n)
    return out


# ---------------------------------------------------------------- split-brain resolution
POLICIES = ("bigger-file", "latest-mtime", "source-brick")


async def resolve_path(afr: ReplicaSet, path: str) -> tuple[bytes, bytes | None]:
    """'/a/b/c' or 'gfid:<uuid>' -> (parent gfid, name) of the last component, walking the
    directories through the translator; (gfid, None) for a gfid."""
    if path.startswith("gfid:") or path.startswith("<gfid:"):
        return gfid_from_str(path.strip("<>")[5:]), None
    parts = [p for p in path.split("/") if p]
    if not parts:
        return ROOT_GFID, None
    g = ROOT_GFID
    call = _hcall(afr)
    for p in parts[:-1]:
        rep = await afr.lookup(call, LookupReq(parent=g, name=p.encode()))
        g = rep.iatt.gfid
    return g, parts[-1].encode()


async def resolve_split_brain(afr: ReplicaSet, path: str, policy: str,
                              brick: int | None = None) -> HealResult:
    """Resolve the split-brain of one file or directory (`path` from the volume root, or
    'gfid:<uuid>'): bigger-file, latest-mtime, or source-brick `brick` (an index into the
    replica set). Handles data/metadata/entry split-brain and a name with different gfids."""
    if policy not in POLICIES:
        raise FopError(errno.EINVAL, f"policy must be one of {', '.join(POLICIES)}")
    if policy == "source-brick" and brick is None:
        raise FopError(errno.EINVAL, "source-brick needs a brick")
    parent, name = await resolve_path(afr, path)
    if name is None:
        return await _resolve_gfid(afr, parent, policy, brick)
    call = _hcall(afr)
    up = afr.up_mask()
    res = await afr.fan(up, lambda i: afr.children[i].lookup(
        call, LookupReq(parent=parent, name=name, xattrs=afr.all_keys)))
    copies = {i: r.iatt for i, r in enumerate(res) if isinstance(r, EntryRep)}
    if not copies:
        raise FopError(errno.ENOENT, f"{path}: no such file on any up brick")
    ids = {(ia.gfid, S.S_IFMT(ia.mode)) for ia in copies.values()}
    if len(ids) == 1:
        return await _resolve_gfid(afr, next(iter(ids))[0], policy, brick)
    # gfid split-brain of a name: choose a copy, replace the others with it
    pick = _pick_copy(afr, policy, copies, brick, path)
    ref = copies[pick]
    locks = _HealLocks(afr, parent, True)
    why = await locks.take(True)
    if why:
        raise FopError(errno.EBUSY, f"{path}: {why}")
    out = HealResult(ref.gfid, S.S_IFMT(ref.mode))
    try:
        for j, ia in copies.items():
            if (ia.gfid, S.S_IFMT(ia.mode)) == (ref.gfid, S.S_IFMT(ref.mode)):
                continue
            d = Dirent(name, 0, S.S_IFMT(ia.mode), ia)
            out.removed += await _remove(afr, j, parent, name, d)
        holders = sum(1 << i for i, ia in copies.items() if ia.gfid == ref.gfid)
        for j in bits(up & ~holders):
            await _make(afr, j, parent, name, ref, pick, holders)
            out.created += 1
    finally:
        await locks.drop()
    log.warning("%s: gfid split-brain of %s resolved (%s): kept %s from %s", afr.name, path,
                policy, gfid_str(ref.gfid), afr.bname(pick))
    r = await heal_gfid(afr, ref.gfid, source=pick)
    r.created, r.removed = out.created, out.removed
    r.healed = ["gfid"] + r.healed
    await heal_gfid(afr, parent)
    return r


def _pick_copy(afr: ReplicaSet, policy: str, copies: dict[int, Iatt], brick: int | None,
               what: str) -> int:
    if policy == "source-brick":
        assert brick is not None
        if brick not in copies:
            raise FopError(errno.EINVAL, f"{what}: {afr.bname(brick)} has no copy (or is down)")
        return brick
    if policy == "bigger-file":
        dcopies = {i: ia for i, ia in copies.items() if i != afr.arbiter}
        pick = pick_by_policy(afr, "size", dcopies)
        if pick is None:
            raise FopError(errno.EINVAL, f"{what}: no copy is bigger than the others")
        return pick
    dcopies = {i: ia for i, ia in copies.items() if i != afr.arbiter}
    pick = pick_by_policy(afr, "mtime", dcopies)
    if pick is None:
        raise FopError(errno.EINVAL, f"{what}: no copy is newer than the others")
    return pick


async def _resolve_gfid(afr: ReplicaSet, gfid: bytes, policy: str,
                        brick: int | None) -> HealResult:
    v = await _look(afr, gfid, afr.up_mask(), False)
    if not v.present:
        raise FopError(errno.ENOENT, f"gfid {gfid_str(gfid)}: on no up brick")
    split = [k for k in (DATA, META, ENTRY) if _sources(afr, v, k)[2]
             and (k != DATA or S.S_ISREG(v.type)) and (k != ENTRY or S.S_ISDIR(v.type))]
    if not split:
        raise FopError(errno.EINVAL, f"{gfid_str(gfid)} is not in split-brain")
    copies = {i: v.iatt(i) for i in bits(v.present)}
    pick = _pick_copy(afr, policy, copies, brick, gfid_str(gfid))
    if DATA in split and pick == afr.arbiter:
        raise FopError(errno.EINVAL, "the arbiter holds no data: choose a data brick")
    r = await heal_gfid(afr, gfid, source=pick)
    if r.skipped:
        raise FopError(errno.EBUSY, f"{gfid_str(gfid)}: {r.skipped}")
    log.warning("%s: split-brain (%s) of %s resolved by %s: source %s", afr.name,
                ", ".join(KINDS[k] for k in split), gfid_str(gfid), policy, afr.bname(pick))
    return r


async def resolve_with_brick(afr: ReplicaSet, brick: int) -> list[HealResult]:
    """source-brick without a file: every split-brain object of this replica set takes the
    copy on `brick`."""
    out = []
    for e in await split_brain_info(afr):
        g = gfid_from_str(e["gfid"])
        if "gfid" in e["kinds"]:
            continue  # names need a path: resolve them one by one
        try:
            out.append(await _resolve_gfid(afr, g, "source-brick", brick))
        except FopError as err:
            log.warning("%s: cannot resolve %s with %s: %s", afr.name, e["gfid"],
                        afr.bname(brick), err)
    return out


# ---------------------------------------------------------------- whole volumes (gvold)
def replicas(top: Any) -> list[ReplicaSet]:
    """Every replica set of a client graph, in brick order."""
    replicate = lookup_type("cluster/replicate")
    return [x for x in top.walk() if isinstance(x, replicate)]  # type: ignore[misc]


async def heal_volume(top: Any, *, full: bool = False,
                      progress: Callable[[str, HealStats], Any] | None = None
                      ) -> dict[str, HealStats]:
    """`gvol volume heal VOL [full]`: crawl every replica set of the graph (one after the
    other; each set's bricks are healed in parallel by the crawl itself)."""
    out: dict[str, HealStats] = {}
    for afr in replicas(top):
        def cb(st: HealStats, name: str = afr.name) -> None:
            if progress is not None:
                progress(name, st)
        out[afr.name] = await (full_heal(afr, progress=cb) if full
                               else index_heal(afr, progress=cb))
    return out


async def volume_heal_info(top: Any, *, split_brain_only: bool = False) -> list[dict[str, Any]]:
    """`heal VOL info` (per brick, what needs heal) or `info split-brain`, for every set."""
    out = []
    for afr in replicas(top):
        if split_brain_only:
            out.append({"replica_set": afr.name,
                        "split_brain": await split_brain_info(afr)})
        else:
            out.append(await heal_info(afr))
    return out


def summary(info: dict[str, Any]) -> list[dict[str, Any]]:
    """`heal VOL info summary` from one set's heal_info: per brick, counts."""
    rows = []
    for b in info["bricks"]:
        ents = b["entries"]
        if ents is None:
            rows.append({"brick": b["brick"], "status": b["status"], "total": None,
                         "pending": None, "split_brain": None, "possibly_healing": None})
            continue
        sb = sum(1 for e in ents if e.get("split_brain"))
        busy = sum(1 for e in ents if e.get("dirty_only") and not e.get("split_brain"))
        rows.append({"brick": b["brick"], "status": b["status"], "total": len(ents),
                     "pending": len(ents) - sb - busy, "split_brain": sb,
                     "possibly_healing": busy})
    return rows


def find_brick(afrs: list[ReplicaSet], name: str) -> tuple[ReplicaSet, int]:
    """The replica set and index of a brick given by its client name (VOL-client-N)."""
    for afr in afrs:
        if name in afr.client_names:
            return afr, afr.client_names.index(name)
    raise FopError(errno.ENOENT, f"no brick {name} in this volume")
