"""cluster/replicate (alias cluster/afr): synchronous N-way replication over the bricks of one
replica set, with a changelog in brick xattrs, eager locking, a delayed post-op, quorum, arbiter
and self-heal.

Changelog. Every object on every brick may carry `trusted.gvol.afr.<client-name>` for each brick of
the set (names from the option afr-pending-xattr, which gvold fills with the children's names so
they survive a replace-brick) and `trusted.gvol.afr.dirty`: three big-endian int32 counters,
data | metadata | entry. A non-zero counter on brick A about brick B means "A saw operations that
did not reach B": A *accuses* B. dirty means "an operation was in flight here, outcome unknown".
A brick is readable (for one of the three kinds) when it has the object and no brick that
answered accuses it; when copies exist but none is readable the object is in split-brain for that
kind: reads and writes of it fail with EIO and the log names the object and the bricks.

Transaction. A modifying fop runs as lock -> pre-op -> op -> post-op -> unlock, on all bricks of
the set in parallel (one task per brick, each recording its own reply or errno):
- Locks (domain = this translator's name): data and metadata fops take a whole-file inodelk on the
  object, entry fops (create, mknod, mkdir, symlink, link, unlink, rmdir, rename) a whole-directory
  entrylk on the parent (rename: both parents, in gfid order). Taken non-blocking on every up brick
  in parallel; on any conflict released and retaken blocking, one brick after the other in brick
  order (no deadlock between clients). Bricks that fail the lock are left out of the transaction.
- Eager locking: a lock stays held after the fop. Later fops of this client on the same object join
  it without any round trip (concurrent fops only wait for each other locally when they overlap:
  byte ranges for data, names for entries), for up to `eager-lock-max-hold` seconds, after which
  new fops wait for it to be released and taken again, so other clients get their turn.
- Pre-op: the first fop of a lock's lifetime raises `dirty` on each brick; the increment travels in
  the fop's own request (`xdata`, applied by features/index on the brick together with the fop and
  undone if the fop fails there), so it costs no round trip. Bricks not in the transaction (down,
  or failed earlier) are accused in the same way, once per lock lifetime.
- Op: in parallel on the locked bricks. A failure on some bricks while others succeed accuses the
  failed ones at once (an xattrop on the bricks that succeeded) and leaves them out of the rest of
  the lock's lifetime; a failure everywhere is simply the fop's error.
- Post-op + unlock (delayed): `post-op-delay-secs` after the last fop on the lock (at once when the
  last fd of a file is flushed or released, or the hold time is used up), one xattrop per brick
  lowers dirty and, in the same request, releases the lock (features/index).
- A new file or directory is created with its lock already granted to us (the brick takes it with
  the create: `lock.inodelk`/`lock.entrylk` in xdata), so its first writes, or the creates inside a
  new directory, need no lock round trip either. It is created with counters accusing the bricks
  that are not in the transaction, so heal knows to copy its data and attributes there. A create
  that brings the file's whole content and keeps no fd (CreateReq.close, from
  performance/create-behind) needs neither the lock nor the dirty mark: each brick writes it
  whole before the name appears.
Cost on replica 3 with every brick up: a stream of writes to one file, or of creates in one
directory, costs one round trip per fop; a lookup is one round trip; a lock, when one is needed,
one more; the post-op + unlock one per lock lifetime, off the fop's path.

Quorum (client quorum, on by default): quorum-type auto needs more than half of the bricks, or
exactly half including the first; fixed needs quorum-count; none needs one. It is checked on the
bricks locked before the op and on those that succeeded after it. Without quorum a modifying fop
fails with EROFS (what GlusterFS returned for years: the volume is read-only for this client) and
nothing is sent to any brick, so nothing diverges; reads keep working from good copies.

Reads go to one readable brick, chosen by a hash of the gfid (every client reads a file from the
same brick; read-policy first = the first readable), failing over to the next readable on errors.
A read-only open is sent to that brick only (with a small file's content, see protocol/client);
the file is opened on another brick when a fop needs it there (a failover, fsync, a lock).
What a client knows about the copies (from lookups and its own transactions) is forgotten when a
brick comes back: it missed changes, possibly other clients', that only the other bricks'
changelogs record, so the next fop on each object looks at every copy again first.
Lookups go to every up brick (one round trip) and refresh what this translator knows about the
object; counters that accuse someone, or a name missing or different somewhere, start a
background heal (options data-/metadata-/entry-self-heal; see afr_heal.py).

Arbiter (arbiter-count 1): the last child stores names and metadata only (features/arbiter on
that brick). It is never read for data, never a data source; a data fop fails with ENOTCONN when
no good data copy would take it; statfs ignores it.
"""
from __future__ import annotations

import errno
import logging
import os
import stat as S
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from ..changelog import (
    DATA,
    ENTRY,
    KINDS,
    M_DATA,
    M_ENTRY,
    M_META,
    META,
    XATTR_AFR_DIRTY,
    XATTR_AFR_PREFIX,
    XD_INODE,
    XD_LOCK_ENTRY,
    XD_LOCK_INODE,
    XD_NEWPARENT,
    XD_PARENT,
    XD_UNLOCK_ENTRY,
    XD_UNLOCK_INODE,
    XD_UNLOCK_OWNER,
    accused,
    bits,
    counters,
    matrix_row,
    popcount,
    vec,
)
from ..fanout import fan_out
from ..fops import (
    EMPTY,
    ENTRYLK_LOCK,
    ENTRYLK_LOCK_NB,
    ENTRYLK_UNLOCK,
    F_UNLCK,
    F_WRLCK,
    LK_GETLK,
    LK_SETLK,
    LK_SETLKW,
    SET_SIZE,
    XATTROP_ADD_ARRAY,
    CreateRep,
    EntrylkReq,
    EntryRep,
    FdReq,
    Fop,
    FtruncateReq,
    InodelkReq,
    InodeReq,
    LookupReq,
    OpenRep,
    OpenReq,
    ReaddirReq,
    StatfsRep,
    XattropReq,
)
from ..lru import LRU
from ..types import (
    PID_INTERNAL,
    RESERVE_DOMAIN,
    XDATA_NAME,
    XDATA_RESERVED,
    Call,
    Fd,
    FopError,
    Statvfs,
    gfid2path_xattr,
    gfid_str,
)
from ..xlator import REGISTRY, Event, GraphError, Option, Translator, parse_size, register
from .afr_heal import heal_gfid, pick_by_policy

log = logging.getLogger(__name__)

INF = 1 << 64
_META_RANGE = (INF, INF + 1)  # local conflict key of metadata fops
_WHOLE = (0, INF + 2)  # conflicts with every data and metadata fop
_CACHE = 65536
_GONE = (errno.ENOENT, errno.ESTALE)
_REOPEN_DROP = os.O_CREAT | os.O_EXCL | os.O_TRUNC

ACQUIRING, HELD, RELEASING = 0, 1, 2
HEAL_RETRY = 60.0  # seconds before a lookup retries a heal that found split-brain or was busy


_SLOT = {KINDS[DATA]: M_DATA, KINDS[META]: M_META, KINDS[ENTRY]: M_ENTRY}


def _slots(aspects: tuple[str, ...]) -> int:
    """Changelog slot mask of what a fop reads or changes (the fop table's terms)."""
    m = 0
    for a in aspects:
        m |= _SLOT[a]
    return m


def _kinds(aspects: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(KINDS.index(a) for a in aspects)


def _xdata(req: Any, xd: dict | None) -> dict | None:
    """The request's own xdata (a caller's, say dht's expected gfid) plus this translator's."""
    own = getattr(req, "xdata", None)
    if not own:
        return xd
    return {**own, **xd} if xd else own


def _internal(call: Call, owner: bytes | None = None) -> Call:
    if call.pid < 0 and owner is None:
        return call
    return Call(call.uid, call.gid, call.groups, PID_INTERNAL,
                call.lk_owner if owner is None else owner, call.client)


@dataclass(slots=True)
class InodeState:
    """What this client knows about an object's copies (from the last lookup / refresh)."""
    gfid: bytes
    type: int  # S_IFMT
    present: int  # bricks that have it (bitmask)
    readable: list[int]  # per kind: bricks no one accuses (bitmask)
    accused: list[int]  # per kind
    split: list[bool]  # per kind: copies exist but none is readable
    pending: bool  # some counter accuses someone
    dirty: int = 0  # bricks with dirty set


@dataclass(eq=False, slots=True)
class _Lock:
    """An eager lock: a whole-file inodelk (entry=False) or whole-directory entrylk on the
    locked bricks, shared by this client's fops on the object."""
    gfid: bytes
    entry: bool
    n: int
    state: int = ACQUIRING
    held: int = 0  # bricks holding our lock
    good: int = 0  # held, and no fop failed there since
    dirty: list[int] = field(default_factory=list)  # per brick: slots whose pre-op applied
    blamed: list[int] = field(default_factory=list)  # per brick: slots it is accused of
    users: int = 0
    keys: list[Any] = field(default_factory=list)
    born: float = 0.0
    deadline: float = 0.0
    timer: bool = False
    draining: bool = False
    ready: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)
    wake: trio.Event = field(default_factory=trio.Event)
    absent: set[bytes] = field(default_factory=set)  # names looked up absent under it

    def __post_init__(self) -> None:
        self.dirty = [0] * self.n
        self.blamed = [0] * self.n


def _conflict(entry: bool, a: Any, b: Any) -> bool:
    if entry:
        return a is None or b is None or bool(set(a) & set(b))
    return a[0] < b[1] and b[0] < a[1]


@dataclass(slots=True)
class _Part:
    """One object a transaction changes: its lock, the local conflict key, the slots of the
    changelog it touches and where features/index applies the xdata."""
    gfid: bytes
    entry: bool
    key: Any
    slots: int
    prefix: str


@dataclass(eq=False, slots=True)
class _AfrFd:
    fds: list[Fd | None]
    gfid: bytes
    flags: int
    is_dir: bool
    rd: int = -1  # directories: the brick listing is served from
    lock: trio.Lock | None = None


@register("cluster/replicate")
class Replicate(Translator):
    min_children = 1
    max_children = None
    options_schema = {
        "afr-pending-xattr": Option("list", None, doc="the children's client names, in order, "
                                    "for the changelog xattrs (default: the children's names)"),
        "quorum-type": Option("choice", "auto", choices=("none", "auto", "fixed"),
                              doc="client quorum: auto = more than half up, or exactly half "
                                  "with the first brick"),
        "quorum-count": Option("int", 0, min=0, doc="bricks needed with quorum-type fixed"),
        "arbiter-count": Option("int", 0, min=0, max=1, doc="1: the last child is an arbiter"),
        "favorite-child-policy": Option("choice", "none",
                                        choices=("none", "size", "mtime", "ctime", "majority"),
                                        doc="resolve split-brain automatically by this rule"),
        "eager-lock": Option("bool", True, doc="keep locks for the following fops"),
        "eager-lock-max-hold": Option("float", 5.0, min=0.0, doc="seconds a busy eager lock "
                                      "is kept before other clients get their turn"),
        "post-op-delay-secs": Option("float", 1.0, min=0.0, max=60.0,
                                     doc="idle seconds before the delayed post-op + unlock"),
        "data-self-heal": Option("bool", True, doc="heal data when a lookup finds it stale"),
        "metadata-self-heal": Option("bool", True),
        "entry-self-heal": Option("bool", True),
        "self-heal-window-size": Option("str", "1MB", doc="bytes copied per heal step (a bare "
                                        "number up to 1024 counts 128 KiB blocks)"),
        "background-self-heal-count": Option("int", 8, min=0, max=1024,
                                             doc="heals started by lookups at once (0: none)"),
        "read-policy": Option("choice", "gfid-hash", choices=("gfid-hash", "first"),
                              doc="which readable brick serves reads"),
        "volume-id": Option("str", "", doc="the volume's id, named in the log when the set "
                            "starts"),
    }

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        o = self.opts
        self.n = n = len(self.children)
        if n > 31:
            raise GraphError(f"{self.name}: at most 31 bricks per replica set")
        names = list(o["afr-pending-xattr"] or [c.name for c in self.children])
        if len(names) != n:
            raise GraphError(f"{self.name}: afr-pending-xattr names {len(names)} clients for "
                             f"{n} subvolumes")
        self.client_names = names
        self.keys = [XATTR_AFR_PREFIX + x for x in names]
        self.dirty_key = XATTR_AFR_DIRTY
        self.all_keys = tuple(self.keys) + (self.dirty_key,)
        self._key_index = {k: i for i, k in enumerate(self.keys)}
        self.arbiter: int | None = n - 1 if o["arbiter-count"] else None
        if self.arbiter is not None and n < 3:
            raise GraphError(f"{self.name}: an arbiter needs a replica set of 3 or more")
        self.all_mask = (1 << n) - 1
        self.data_mask = self.all_mask & ~(1 << self.arbiter) if self.arbiter is not None \
            else self.all_mask
        qt = o["quorum-type"]
        if qt == "fixed" and not 1 <= o["quorum-count"] <= n:
            raise GraphError(f"{self.name}: quorum-type fixed needs quorum-count in 1..{n}")
        self.quorum_type = qt
        self.quorum_count = o["quorum-count"]
        self.domain = self.name
        self.heal_domain = self.name + ":self-heal"
        self.owner = b"afr:" + os.urandom(8)
        self.heal_owner = b"shd:" + os.urandom(8)
        self.eager = o["eager-lock"]
        self.delay = o["post-op-delay-secs"]
        self.max_hold = o["eager-lock-max-hold"]
        self.policy = o["favorite-child-policy"]
        self.window = self._parse_window(o["self-heal-window-size"])
        self.heal_on = (o["data-self-heal"], o["metadata-self-heal"], o["entry-self-heal"])
        self.read_first = o["read-policy"] == "first"
        self.up = [bool(getattr(c, "connected", True)) for c in self.children]
        self._index = {id(c): i for i, c in enumerate(self.children)}
        self._reported: bool | None = None
        self.inodes: LRU = LRU(_CACHE)
        self.names: LRU = LRU(_CACHE)  # gfid -> (parent, name) it was last looked up by
        self._locks: dict[tuple[bytes, bool], _Lock] = {}
        # (parent, name) -> the entry lock a reservation (RESERVE_DOMAIN) holds a use of
        self._reserved: dict[tuple[bytes, bytes], _Lock] = {}
        self._nfds: dict[bytes, int] = {}
        self._nursery: trio.Nursery | None = None
        self._heal_limit = trio.CapacityLimiter(max(o["background-self-heal-count"], 1))
        self._healing: set[bytes] = set()
        self._heal_later: dict[bytes, float] = {}
        self._bg = 0  # background tasks running (heals, lock releases)
        self._bg_idle = trio.Event()
        self._bg_idle.set()
        self.stats = {"heals": 0, "heal_failures": 0, "lock_rt": 0, "postop_rt": 0,
                      "blames": 0}

    @staticmethod
    def _parse_window(v: str) -> int:
        s = str(v).strip()
        try:
            if s.isdigit() and int(s) <= 1024:
                w = int(s) * 128 * 1024
            else:
                w = parse_size(s)
        except ValueError as e:
            raise GraphError(f"cluster/replicate: option self-heal-window-size: {e}") from None
        if not 4096 <= w <= 64 << 20:
            raise GraphError("cluster/replicate: self-heal-window-size must be within "
                             "4KB..64MB")
        return w

    # ------------------------------------------------------------ lifecycle and children
    async def init(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        log.info("%s: replica set of %d bricks (%s)%s", self.name, self.n,
                 ", ".join(self.client_names), f" of volume {self.opts['volume-id']}"
                 if self.opts["volume-id"] else "")

    async def fini(self) -> None:
        # release what we hold (best effort, bounded)
        with trio.move_on_after(5):
            for lk in list(self._locks.values()):
                if lk.state == HELD and lk.users == 0:
                    await self._release(lk)

    # ------------------------------------------------------------ interface for afr_heal
    def up_mask(self) -> int:
        """Mask of the bricks that are connected now."""
        m = 0
        for i, u in enumerate(self.up):
            if u:
                m |= 1 << i
        return m

    async def notify(self, event: Event, child: Translator | None) -> None:
        i = self._index.get(id(child))
        if i is None:
            return await super().notify(event, child)
        upnow = event is Event.CHILD_UP
        if self.up[i] != upnow:
            self.up[i] = upnow
            log.info("%s: brick %s is %s", self.name, self.client_names[i],
                     "up" if upnow else "down")
            bit = 1 << i
            if upnow:
                # what this client knows about copies predates the brick's return (others may
                # have changed objects meanwhile, and the pre-ops that accused it are only on
                # the bricks): every object is looked at again before it is read
                self.inodes.clear()
            for lk in self._locks.values():
                if upnow:
                    lk.draining = True  # the next lock lifetime includes it
                else:
                    lk.held &= ~bit  # the brick dropped our locks with the connection
                    lk.good &= ~bit
        anyup = any(self.up)
        if anyup != self._reported:
            self._reported = anyup
            for p in self.parents:
                await p.notify(Event.CHILD_UP if anyup else Event.CHILD_DOWN, self)
        elif upnow:
            for p in self.parents:  # dht re-reads layouts when a subvolume changes
                await p.notify(Event.CHILD_UP, self)

    def quorum(self, mask: int) -> bool:
        c = popcount(mask)
        if self.quorum_type == "none":
            return c > 0
        if self.quorum_type == "fixed":
            return c >= self.quorum_count
        return 2 * c > self.n or (2 * c == self.n and bool(mask & 1))

    def _no_quorum(self, mask: int, what: str) -> FopError:
        up = ", ".join(self.client_names[i] for i in bits(mask)) or "none"
        need = {"fixed": f"{self.quorum_count}", "none": "1"}.get(
            self.quorum_type, f"more than half of {self.n} (or half with the first)")
        return FopError(errno.EROFS, f"{self.name}: {what}: no quorum (bricks available: {up}; "
                        f"quorum-type {self.quorum_type} needs {need})")

    def bname(self, i: int) -> str:
        return self.client_names[i]

    def bnames(self, mask: int) -> str:
        return ", ".join(self.bname(i) for i in bits(mask)) or "none"

    async def fan(self, mask: int, fn: Callable[[int], Awaitable[Any]]) -> list[Any]:
        """fn(i) for every brick in `mask`, in parallel; -> per brick: reply, FopError or None
        (not asked)."""
        return await fan_out(self.n, bits(mask), fn)

    @staticmethod
    def ok_mask(res: list[Any]) -> int:
        """Mask of the bricks whose entry in a `fan` result is a reply."""
        m = 0
        for i, r in enumerate(res):
            if r is not None and not isinstance(r, FopError):
                m |= 1 << i
        return m

    @staticmethod
    def best_error(res: list[Any]) -> FopError:
        """The error of a `fan` result to report (ENOTCONN only when nothing else failed)."""
        errs = [r for r in res if isinstance(r, FopError)]
        for e in errs:
            if e.errno != errno.ENOTCONN:
                return e
        return errs[0] if errs else FopError(errno.ENOTCONN, "no brick answered")

    # ------------------------------------------------------------ background work
    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        if self._nursery is None:
            return False
        self._bg += 1
        self._bg_idle = trio.Event() if self._bg_idle.is_set() else self._bg_idle

        async def run() -> None:
            try:
                await fn(*args)
            except FopError as e:
                log.warning("%s: background %s: %s", self.name, getattr(fn, "__name__", fn), e)
            except Exception:
                log.exception("%s: background %s failed", self.name,
                              getattr(fn, "__name__", fn))
            finally:
                self._bg -= 1
                if not self._bg:
                    self._bg_idle.set()

        self._nursery.start_soon(run)
        return True

    async def settle(self) -> None:
        """Release every idle eager lock now and wait for background heals and post-ops: after
        this, the bricks' changelog says what this client knows (tests, shutdown, heal CLI)."""
        while self._locks or self._bg:
            for lk in list(self._locks.values()):
                if lk.state == HELD and lk.users == 0:
                    if self._nursery is None:
                        await self._release(lk)
                    else:
                        self._kick(lk)
            if self._bg:
                await self._bg_idle.wait()
            elif self._locks:
                lk = next(iter(self._locks.values()))
                await (lk.changed if lk.users else lk.done).wait()

    # ------------------------------------------------------------ inode state
    def inspect(self, reps: list[Any], gfid: bytes | None = None) -> InodeState | None:
        """Changelog matrix of one object from per-brick lookup replies (EntryRep with the afr
        xattrs, FopError or None). Copies whose gfid differs from `gfid` do not count."""
        present = 0
        typ = 0
        dirty = 0
        zeros = [(0, 0, 0)] * len(self.keys)
        matrix = [zeros] * len(reps)
        for i, r in enumerate(reps):
            if not isinstance(r, EntryRep):
                continue
            if gfid is not None and r.iatt.gfid != gfid:
                continue
            if gfid is None:
                gfid = r.iatt.gfid
            present |= 1 << i
            typ = typ or S.S_IFMT(r.iatt.mode)
            xa = r.xattrs or {}
            if any(counters(xa.get(self.dirty_key))):
                dirty |= 1 << i
            matrix[i] = matrix_row(xa, self.keys)
        if not present or gfid is None:
            return None
        blamed = [accused(matrix, present, t) for t in (DATA, META, ENTRY)]
        pending = any(blamed)
        readable = [present & ~blamed[t] for t in (DATA, META, ENTRY)]
        split = [False, False, False]
        # (an arbiter no one accuses is a witness, not a copy: without a good data brick up
        # the data is unavailable, not in split-brain)
        if S.S_ISREG(typ) and present & self.data_mask and not readable[DATA]:
            split[DATA] = True
        if not readable[META]:
            split[META] = True
        if S.S_ISDIR(typ) and not readable[ENTRY]:
            split[ENTRY] = True
        return InodeState(gfid, typ, present, readable, blamed, split, pending, dirty)

    def _remember(self, st: InodeState | None) -> None:
        if st is not None:
            self.inodes.put(st.gfid, st)

    async def refresh(self, call: Call, gfid: bytes) -> tuple[InodeState, list[Any]]:
        """Nameless lookup of `gfid` on every up brick; updates and returns the state."""
        up = self.up_mask()
        if not up:
            raise FopError(errno.ENOTCONN, f"{self.name}: every brick is down")
        icall = _internal(call)
        lreq = LookupReq(gfid=gfid, xattrs=self.all_keys)
        res = await self.fan(up, lambda i: self.children[i].lookup(icall, lreq))
        st = self.inspect(res, gfid)
        if st is None:
            raise self.best_error(res)
        self._remember(st)
        return st, res

    async def _state(self, call: Call, gfid: bytes) -> InodeState:
        st = self.inodes.get(gfid)
        if st is None:
            st, _ = await self.refresh(call, gfid)
        return st

    def brick_order(self, gfid: bytes, cand: int) -> list[int]:
        """Bricks of `cand` in the order to try them."""
        idx = bits(cand)
        if len(idx) <= 1 or self.read_first:
            return idx
        k = zlib.crc32(gfid) % len(idx)
        return idx[k:] + idx[:k]

    def describe(self, gfid: bytes) -> str:
        """gfid, with the last name it was looked up by (for logs and errors)."""
        pn = self.names.get(gfid)
        if pn is None:
            return gfid_str(gfid)
        return f"{pn[1].decode(errors='replace')!r} ({gfid_str(gfid)}, in directory " \
               f"{gfid_str(pn[0])})"

    def _sb_error(self, st: InodeState, kind: int, what: str) -> FopError:
        log.error("%s: %s %s is in %s split-brain: bricks %s accuse each other", self.name,
                  what, self.describe(st.gfid), KINDS[kind], self.bnames(st.present))
        return FopError(errno.EIO, f"{what} {self.describe(st.gfid)} is in {KINDS[kind]} "
                        f"split-brain (bricks {self.bnames(st.present)}); resolve it with "
                        "gvol volume heal VOL split-brain ...")

    def _read_order(self, st: InodeState, kinds: tuple[int, ...], what: str) -> list[int]:
        """Readable up bricks for reading `kinds` of the object, best first. File data never
        comes from the arbiter; other reads prefer data bricks."""
        up = self.up_mask()
        reg = S.S_ISREG(st.type)
        for k in kinds:
            if st.split[k] and (k != DATA or reg):
                raise self._sb_error(st, k, what)
        avail = st.present & up
        if reg and DATA in kinds:
            avail &= self.data_mask
        cand = avail
        for k in kinds:
            cand &= st.readable[k]
        if not cand and len(kinds) > 1:
            for k in kinds:
                cand = avail & st.readable[k]
                if cand:
                    break
        if not cand:
            raise FopError(errno.ENOTCONN, f"{self.name}: no good copy of {what} "
                           f"{gfid_str(st.gfid)} is up (copies on {self.bnames(st.present)}; "
                           f"up: {self.bnames(up)})")
        return self.brick_order(st.gfid, cand & self.data_mask or cand)

    async def _read(self, call: Call, gfid: bytes, kinds: tuple[int, ...], what: str,
                    fn: Callable[[int], Awaitable[Any]]) -> Any:
        st = await self._state(call, gfid)
        try:
            order = self._read_order(st, kinds, what)
        except FopError as e:
            if e.errno != errno.ENOTCONN:
                raise
            st, _ = await self.refresh(call, gfid)  # maybe a brick came back
            order = self._read_order(st, kinds, what)
        err: FopError | None = None
        for i in order:
            try:
                return await fn(i)
            except FopError as e:
                if e.errno not in (errno.ENOTCONN, errno.ESTALE, errno.ENOENT, errno.EBADF):
                    raise
                err = e
        assert err is not None
        raise err

    def _reply_iatt(self, res: list[Any], ok: int, gfid: bytes) -> int:
        """Which successful brick's reply to return (a readable data brick if possible)."""
        st = self.inodes.get(gfid)
        pref = ok & self.data_mask or ok
        if st is not None and pref & st.readable[DATA]:
            pref &= st.readable[DATA]
        return self.brick_order(gfid, pref)[0]

    # ------------------------------------------------------------ lookup
    def _strip(self, rep: EntryRep, want: tuple[str, ...]) -> EntryRep:
        xa = rep.xattrs
        if not want:
            return rep if xa is None else EntryRep(rep.iatt, None)
        if not xa:
            return rep
        if "*" in want:
            keep = {k: v for k, v in xa.items() if k in want or k not in self.all_keys}
        else:
            keep = {k: v for k, v in xa.items() if k in want}
        return EntryRep(rep.iatt, keep)

    def _with_keys(self, want: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in want:
            return want
        return tuple(dict.fromkeys(tuple(want) + self.all_keys))

    async def lookup(self, call: Call, req: LookupReq) -> EntryRep:
        up = self.up_mask()
        if not up:
            raise FopError(errno.ENOTCONN, f"{self.name}: every brick is down")
        icall = _internal(call)
        lreq = replace(req, xattrs=self._with_keys(req.xattrs))
        lk0 = self._dir_held(req.parent) if req.name is not None else None
        res = await self.fan(up, lambda i: self.children[i].lookup(icall, lreq))
        if lk0 is not None and self._dir_held(req.parent) is lk0 and all(
                isinstance(res[i], FopError) and res[i].errno == errno.ENOENT for i in bits(up)):
            # absent on every brick, all the while this client's lock kept others out
            lk0.absent.add(req.name)
        if req.name is None:
            st = self.inspect(res, req.gfid)
            if st is None:
                raise self.best_error(res)
            heal_parent = False
        else:
            if req.parent not in self.inodes and self._disagree(res):
                # which copies of the parent are good decides: learn it first
                try:
                    await self.refresh(icall, req.parent)
                except FopError:
                    pass
            st, heal_parent = self._named(req, res)
            self.names.put(st.gfid, (req.parent, req.name))
        self._remember(st)
        if heal_parent or st.pending:
            self._maybe_heal(st, req.parent if heal_parent else None)
        i = self._iatt_brick(st)
        return self._strip(res[i], req.xattrs)

    @staticmethod
    def _disagree(res: list[Any]) -> bool:
        seen: set[Any] = set()
        for r in res:
            if isinstance(r, EntryRep):
                seen.add((r.iatt.gfid, S.S_IFMT(r.iatt.mode)))
            elif isinstance(r, FopError) and r.errno in _GONE:
                seen.add(None)
        return len(seen) > 1

    def _iatt_brick(self, st: InodeState) -> int:
        up = self.up_mask()
        for mask in (st.readable[DATA] & st.readable[META] & self.data_mask,
                     st.readable[META] & self.data_mask, st.present & self.data_mask,
                     st.readable[META], st.present):
            if mask & up & st.present:
                return self.brick_order(st.gfid, mask & up & st.present)[0]
        return bits(st.present)[0]

    def _named(self, req: LookupReq, res: list[Any]) -> tuple[InodeState, bool]:
        """Decide what a name is from the bricks' answers. The parent's entry-readable bricks
        are authoritative; a name they disagree on (or that differs elsewhere) needs a heal."""
        pst = self.inodes.get(req.parent)
        answered = 0
        for i, r in enumerate(res):
            if isinstance(r, EntryRep) or (isinstance(r, FopError) and r.errno in _GONE):
                answered |= 1 << i
        auth = answered
        if pst is not None and pst.readable[ENTRY] & answered:
            auth = pst.readable[ENTRY] & answered
        found = [i for i in bits(auth) if isinstance(res[i], EntryRep)]
        if not found:
            if not answered:
                raise self.best_error(res)
            if any(isinstance(r, EntryRep) for r in res):
                # only non-authoritative copies have it: deleted while they were away
                return self._missing(req, True)
            return self._missing(req, False)
        gfids = {res[i].iatt.gfid for i in found}
        types = {S.S_IFMT(res[i].iatt.mode) for i in found}
        heal = False
        if len(gfids) > 1 or len(types) > 1:
            chosen = self._resolve_mismatch(req, res, found)
            if chosen is None:
                what = "gfids" if len(gfids) > 1 else "types"
                log.error("%s: %r in %s has different %s on bricks %s (gfid split-brain): %s",
                          self.name, req.name, gfid_str(req.parent), what,
                          self.bnames(sum(1 << i for i in found)),
                          "; ".join(f"{self.bname(i)}: {gfid_str(res[i].iatt.gfid)} "
                                    f"{S.S_IFMT(res[i].iatt.mode):o}" for i in found))
                raise FopError(errno.EIO, f"{req.name!r} has different {what} on the bricks "
                               "of the replica set (gfid split-brain)")
            gfid = chosen
            heal = True
        else:
            gfid = next(iter(gfids))
        st = self.inspect(res, gfid)
        assert st is not None
        if st.present != answered:
            heal = True  # missing or different somewhere
        return st, heal

    def _missing(self, req: LookupReq, heal: bool) -> Any:
        if heal:
            self._maybe_heal(None, req.parent)
        raise FopError(errno.ENOENT, f"lookup {req.name!r}: no such entry")

    def _resolve_mismatch(self, req: LookupReq, res: list[Any], found: list[int]) -> bytes | None:
        """A name with different gfids (or types) on authoritative bricks: the favourite-child
        policy picks one (heal then replaces the others), else None (split-brain)."""
        if self.policy == "none":
            return None
        i = pick_by_policy(self, self.policy, {i: res[i].iatt for i in found})
        return None if i is None else res[i].iatt.gfid

    def _maybe_heal(self, st: InodeState | None, parent: bytes | None) -> None:
        """Start background heals: of the object when someone accuses a copy, of the parent's
        entries when a name differs between the bricks."""
        if self._nursery is None or not self.opts["background-self-heal-count"]:
            return
        targets = []
        if parent is not None and self.heal_on[ENTRY]:
            targets.append(parent)
        if st is not None and st.pending and any(
                self.heal_on[k] and st.accused[k] & st.present for k in (DATA, META, ENTRY)):
            targets.append(st.gfid)
        now = trio.current_time()
        for g in targets:
            if g in self._healing or now < self._heal_later.get(g, 0.0):
                continue
            self._healing.add(g)
            self._spawn(self._bg_heal, g)

    async def _bg_heal(self, gfid: bytes) -> None:
        try:
            async with self._heal_limit:
                r = await heal_gfid(self, gfid, blocking=False)
            if r.healed:
                self.stats["heals"] += 1
            if r.split_brain or r.skipped:
                # do not retry on every lookup: the heal crawl or the CLI will see to it
                if len(self._heal_later) > 4096:
                    self._heal_later.clear()
                self._heal_later[gfid] = trio.current_time() + HEAL_RETRY
        except FopError as e:
            self.stats["heal_failures"] += 1
            log.info("%s: background heal of %s: %s", self.name, gfid_str(gfid), e)
        finally:
            self._healing.discard(gfid)

    # ------------------------------------------------------------ routes from the fop table
    async def handle(self, fop: Fop, call: Call, req: Any) -> Any:
        """Every fop without a method of its own takes the route its facts in the fop table
        give: a new object (`creates`) is made in an entry transaction, a change of an existing
        object (`changes` + `object`) is an inode transaction, a read (`reads`) goes to one
        readable brick, a lock to every brick. Anything else is refused: sending it to one
        brick would let the copies diverge."""
        if fop.creates:
            return await self._new_entry(fop.name, call, req, _slots(fop.creates))
        if fop.changes and fop.object is not None:
            return await self._inode_txn(fop, call, req)
        if fop.reads and fop.object == "fd":
            return await self._fd_read(fop.name, call, req, _kinds(fop.reads))
        if fop.reads and fop.object is not None:
            return await self._read(call, getattr(req, fop.object), _kinds(fop.reads), "file",
                                    lambda i: getattr(self.children[i], fop.name)(call, req))
        if fop.lock:
            return await self._serial(fop.name, call, req, fop.object == "fd")
        raise FopError(errno.ENOSYS, f"{self.name}: cluster/replicate has no route for "
                       f"{fop.name} (give it reads/changes/creates/lock in the fop table)")

    # ------------------------------------------------------------ plain inode reads
    async def readlink(self, call: Call, req: InodeReq) -> Any:
        return await self._read(call, req.gfid, (META,), "symlink",
                                lambda i: self.children[i].readlink(call, req))

    async def statfs(self, call: Call, req: InodeReq) -> StatfsRep:
        up = self.up_mask() & self.data_mask
        if not up:
            raise FopError(errno.ENOTCONN, f"{self.name}: no data brick is up")
        res = await self.fan(up, lambda i: self.children[i].statfs(call, req))
        got = [r.statvfs for r in res if isinstance(r, StatfsRep)]
        if not got:
            raise self.best_error(res)
        best: Statvfs = min(got, key=lambda v: v.bavail * (v.frsize or 1))
        return StatfsRep(best)

    # ------------------------------------------------------------ fds
    def _afd(self, fd: Fd) -> _AfrFd:
        a = fd.ctx.get(self)
        if a is None:
            raise FopError(errno.EBADF, f"{self.name}: fd was not opened through this "
                           "translator")
        return a

    async def _child_fd(self, call: Call, a: _AfrFd, i: int) -> Fd:
        """Brick i's fd of `a`, opening it there if the brick was away at open time."""
        f = a.fds[i]
        if f is not None:
            return f
        if a.lock is None:
            a.lock = trio.Lock()
        async with a.lock:
            f = a.fds[i]
            if f is None:
                if a.is_dir:
                    rep = await self.children[i].opendir(_internal(call), InodeReq(a.gfid))
                else:
                    rep = await self.children[i].open(_internal(call),
                                                      OpenReq(a.gfid, a.flags & ~_REOPEN_DROP))
                f = a.fds[i] = rep.fd
        return f

    def _new_fd(self, gfid: bytes, flags: int, is_dir: bool, fds: list[Fd | None]) -> Fd:
        if not is_dir:
            self._nfds[gfid] = self._nfds.get(gfid, 0) + 1
        return Fd(gfid, flags, is_dir, {self: _AfrFd(fds, gfid, flags, is_dir)})

    async def open(self, call: Call, req: OpenReq) -> OpenRep:
        up = self.up_mask()
        if not up:
            raise FopError(errno.ENOTCONN, f"{self.name}: every brick is down")
        trunc = bool(req.flags & os.O_TRUNC)
        oreq = replace(req, flags=req.flags & ~os.O_TRUNC) if trunc else req
        if trunc and not self.quorum(up):
            raise self._no_quorum(up, "open with O_TRUNC")
        st = self.inodes.get(req.gfid)
        if req.flags & os.O_ACCMODE == os.O_RDONLY and not trunc and st is not None:
            # reads go to one brick: open there only (with the content of a small file, see
            # protocol/client); other bricks are opened when a fop needs them (_child_fd)
            return await self._read(call, req.gfid, (DATA,), "file", lambda i: self._open_one(
                call, req, i))
        res = await self.fan(up, lambda i: self.children[i].open(call, oreq))
        ok = self.ok_mask(res)
        if not ok:
            raise self.best_error(res)
        fds: list[Fd | None] = [r.fd if isinstance(r, OpenRep) else None for r in res]
        fd = self._new_fd(req.gfid, req.flags, False, fds)
        if trunc:
            try:
                await self.ftruncate(call, FtruncateReq(fd, 0))
            except FopError:
                await self.release(call, FdReq(fd))
                raise
        return OpenRep(fd)

    async def _open_one(self, call: Call, req: OpenReq, i: int) -> OpenRep:
        rep = await self.children[i].open(call, req)
        fds: list[Fd | None] = [None] * self.n
        fds[i] = rep.fd
        return OpenRep(self._new_fd(req.gfid, req.flags, False, fds))

    async def _open_everywhere(self, call: Call, a: _AfrFd) -> int:
        """Open `a` on every up brick it is not open on yet (a read-only open opened one);
        -> the mask of bricks it is open on."""
        missing = sum(1 << i for i in bits(self.up_mask()) if a.fds[i] is None)
        if missing:
            await self.fan(missing, lambda i: self._child_fd(call, a, i))
        return self._fd_mask(a)

    async def opendir(self, call: Call, req: InodeReq) -> OpenRep:
        up = self.up_mask()
        if not up:
            raise FopError(errno.ENOTCONN, f"{self.name}: every brick is down")
        res = await self.fan(up, lambda i: self.children[i].opendir(call, req))
        if not self.ok_mask(res):
            raise self.best_error(res)
        fds: list[Fd | None] = [r.fd if isinstance(r, OpenRep) else None for r in res]
        return OpenRep(self._new_fd(req.gfid, os.O_RDONLY | os.O_DIRECTORY, True, fds))

    async def _close_all(self, fop: str, call: Call, a: _AfrFd) -> None:
        mask = 0
        for i, f in enumerate(a.fds):
            if f is not None and self.up[i]:
                mask |= 1 << i
        fds = a.fds
        await self.fan(mask, lambda i: getattr(self.children[i], fop)(call, FdReq(fds[i])))

    async def release(self, call: Call, req: FdReq) -> Any:
        a = req.fd.ctx.pop(self, None)
        if a is None:
            return EMPTY
        await self._close_all("release", call, a)
        left = self._nfds.get(a.gfid, 1) - 1
        if left > 0:
            self._nfds[a.gfid] = left
        else:
            self._nfds.pop(a.gfid, None)
            self._release_soon(a.gfid)
        return EMPTY

    async def releasedir(self, call: Call, req: FdReq) -> Any:
        a = req.fd.ctx.pop(self, None)
        if a is not None:
            await self._close_all("releasedir", call, a)
        return EMPTY

    async def flush(self, call: Call, req: FdReq) -> Any:
        a = self._afd(req.fd)
        mask = self._fd_mask(a)
        last = self._nfds.get(a.gfid, 0) <= 1
        lk = self._locks.get((a.gfid, False))
        if last and lk is not None and lk.state == HELD and not lk.users:
            # the delayed post-op + unlock now, in the flush requests themselves
            res = await self._release(lk, (call, a))
        else:
            res = await self.fan(mask, lambda i: self.children[i].flush(
                call, FdReq(a.fds[i])))  # type: ignore[arg-type]
        if not self.ok_mask(res) and mask:
            raise self.best_error(res)
        return EMPTY

    def _fd_mask(self, a: _AfrFd) -> int:
        m = 0
        for i, f in enumerate(a.fds):
            if f is not None and self.up[i]:
                m |= 1 << i
        return m

    async def fsync(self, call: Call, req: Any) -> Any:
        a = self._afd(req.fd)
        mask = await self._open_everywhere(call, a)
        if not mask:
            raise FopError(errno.ENOTCONN, f"{self.name}: no brick of the file is up")
        res = await self.fan(mask, lambda i: self.children[i].fsync(
            call, replace(req, fd=a.fds[i])))
        if not self.ok_mask(res):
            raise self.best_error(res)
        return EMPTY

    async def fsyncdir(self, call: Call, req: Any) -> Any:
        return await self.fsync(call, req)

    async def _fd_read(self, fop: str, call: Call, req: Any, kinds: tuple[int, ...]) -> Any:
        a = self._afd(req.fd)

        async def one(i: int) -> Any:
            f = await self._child_fd(call, a, i)
            return await getattr(self.children[i], fop)(call, replace(req, fd=f))

        return await self._read(call, a.gfid, kinds, "file", one)

    async def readdir(self, call: Call, req: ReaddirReq) -> Any:
        a = self._afd(req.fd)
        if a.rd < 0 or req.offset == 0 or not self.up[a.rd]:
            st = await self._state(call, a.gfid)
            order = [i for i in self._read_order(st, (ENTRY,), "directory")
                     if a.fds[i] is not None]
            if not order:
                order = self._read_order(st, (ENTRY,), "directory")
            if a.rd >= 0 and a.rd != order[0] and req.offset:
                log.warning("%s: listing of %s moves from %s to %s mid-way", self.name,
                            gfid_str(a.gfid), self.bname(a.rd), self.bname(order[0]))
            a.rd = order[0]
            if a.rd == self.arbiter and len(order) > 1:
                a.rd = order[1]
        i = a.rd
        f = await self._child_fd(call, a, i)
        rep = await self.children[i].readdir(call, replace(req, fd=f))
        if req.plus and rep.entries:
            rep = replace(rep, entries=await self._plus_attrs(call, i, rep.entries))
        return rep

    def _good_on(self, gfid: bytes, i: int) -> bool:
        st = self.inodes.get(gfid)
        if st is None:
            return False
        good = st.present & st.readable[META]
        if S.S_ISREG(st.type):
            good &= st.readable[DATA]
        return bool(good >> i & 1)

    async def _plus_attrs(self, call: Call, i: int, entries: list[Any]) -> list[Any]:
        """readdirplus attributes come from the brick that listed the directory; that brick's
        copy of an entry may be stale (a file whose data heal has not run yet), and the kernel
        would cache its size. Entries not known to be good there get the attributes of a good
        copy (looked up, in parallel) or none (the kernel then looks the name up)."""
        out = list(entries)
        todo = [k for k, e in enumerate(entries) if e.iatt is not None
                and e.name not in (b".", b"..") and not self._good_on(e.iatt.gfid, i)]
        if not todo:
            return out
        icall = _internal(call)
        limit = trio.CapacityLimiter(64)

        async def one(k: int) -> None:
            e = entries[k]
            async with limit:
                try:
                    st, res = await self.refresh(icall, e.iatt.gfid)
                    j = self._iatt_brick(st)
                    r = res[j]
                    iatt = r.iatt if isinstance(r, EntryRep) and st.present >> j & 1 else None
                except FopError:
                    iatt = None
            out[k] = replace(e, iatt=iatt)

        async with trio.open_nursery() as n:
            for k in todo:
                n.start_soon(one, k)
        return out

    # ------------------------------------------------------------ locks (eager)
    def _lcall(self) -> Call:
        return Call(0, 0, (), PID_INTERNAL, self.owner)

    async def _acquire(self, lk: _Lock) -> None:
        """Take the lock on every up brick: non-blocking in parallel, else blocking one brick
        after the other in brick order."""
        call = self._lcall()
        g = lk.gfid
        dom = self.domain
        up = self.up_mask()
        if not up:
            raise FopError(errno.ENOTCONN, f"{self.name}: every brick is down")

        def take(i: int, block: bool) -> Awaitable[Any]:
            c = self.children[i]
            if lk.entry:
                return c.entrylk(call, EntrylkReq(g, None, dom,
                                                  ENTRYLK_LOCK if block else ENTRYLK_LOCK_NB))
            return c.inodelk(call, InodelkReq(g, dom, LK_SETLKW if block else LK_SETLK, F_WRLCK))

        self.stats["lock_rt"] += 1
        res = await self.fan(up, lambda i: take(i, False))
        got = self.ok_mask(res)
        busy = any(isinstance(r, FopError) and r.errno == errno.EAGAIN for r in res)
        if busy:
            if got:
                await self._unlock(lk.gfid, lk.entry, got)
            got = 0
            for i in bits(up):
                if not self.up[i]:
                    continue
                try:
                    await take(i, True)
                except FopError as e:
                    log.info("%s: cannot lock %s on %s: %s", self.name, gfid_str(g),
                             self.bname(i), e)
                    continue
                got |= 1 << i
        lk.held = lk.good = got
        if not got:
            raise self.best_error(res)

    async def _unlock(self, g: bytes, entry: bool, mask: int) -> None:
        call = self._lcall()
        dom = self.domain

        def drop(i: int) -> Awaitable[Any]:
            c = self.children[i]
            if entry:
                return c.entrylk(call, EntrylkReq(g, None, dom, ENTRYLK_UNLOCK))
            return c.inodelk(call, InodelkReq(g, dom, LK_SETLK, F_UNLCK))

        await self.fan(mask & self.up_mask(), drop)

    async def _enter(self, part: _Part) -> _Lock:
        """Join (or take) the eager lock of `part` and register its conflict key."""
        k = (part.gfid, part.entry)
        while True:
            lk = self._locks.get(k)
            if lk is None:
                lk = _Lock(part.gfid, part.entry, self.n)
                self._locks[k] = lk
                try:
                    await self._acquire(lk)
                except BaseException:
                    del self._locks[k]
                    lk.state = RELEASING
                    lk.ready.set()
                    lk.done.set()
                    raise
                lk.state = HELD
                lk.born = trio.current_time()
                lk.ready.set()
            elif lk.state == ACQUIRING:
                await lk.ready.wait()
                continue
            elif lk.state == RELEASING or lk.draining or (
                    lk.users == 0 and not lk.good & self.up_mask()) or \
                    trio.current_time() - lk.born > self.max_hold:
                if lk.state == HELD:
                    self._kick(lk)
                await lk.done.wait()
                continue
            # local conflicts: overlapping fops of this client wait for each other
            while any(_conflict(lk.entry, part.key, o) for o in lk.keys):
                ev = lk.changed
                await ev.wait()
                if lk.state != HELD:
                    break
            if lk.state != HELD:
                continue
            lk.users += 1
            lk.keys.append(part.key)
            return lk

    def _leave(self, lk: _Lock, key: Any) -> None:
        lk.users -= 1
        lk.keys.remove(key)
        ev, lk.changed = lk.changed, trio.Event()
        ev.set()
        if lk.users:
            return
        now = trio.current_time()
        if not self.eager or lk.draining or now - lk.born > self.max_hold:
            lk.deadline = 0.0
            lk.wake.set()
        else:
            lk.deadline = now + self.delay
        self._arm(lk)

    def _arm(self, lk: _Lock) -> None:
        """Make sure a timer releases `lk` once it is idle past its deadline."""
        if lk.state == HELD and not lk.users and not lk.timer:
            lk.timer = True
            if not self._spawn(self._release_when_idle, lk):
                lk.timer = False

    def _kick(self, lk: _Lock) -> None:
        """Release `lk` as soon as it is idle; no fop joins it any more."""
        lk.draining = True
        lk.deadline = 0.0
        lk.wake.set()
        self._arm(lk)

    def _release_soon(self, gfid: bytes) -> None:
        lk = self._locks.get((gfid, False))
        if lk is not None and lk.state == HELD:
            self._kick(lk)

    async def _release_when_idle(self, lk: _Lock) -> None:
        try:
            while True:
                if lk.state != HELD or lk.users:
                    return  # released already, or the last user re-arms us
                if trio.current_time() >= lk.deadline:
                    break
                lk.wake = trio.Event()
                with trio.move_on_at(lk.deadline):
                    await lk.wake.wait()
        finally:
            lk.timer = False
        await self._release(lk)

    async def _release(self, lk: _Lock, flush: tuple[Call, _AfrFd] | None = None
                       ) -> list[Any]:
        """Post-op (lower dirty where the pre-op raised it) and unlock, in one request per
        brick; with `flush` (the last fd of the file is being flushed) that request is the
        flush itself. -> per-brick results."""
        lk.state = RELEASING
        res: list[Any] = [None] * self.n
        try:
            with trio.CancelScope(shield=True):
                up = self.up_mask()
                mask = lk.held & up
                fmask = 0
                if flush is not None:
                    fcall, a = flush
                    fmask = self._fd_mask(a)
                if mask | fmask:
                    self.stats["postop_rt"] += 1
                    call = self._lcall()
                    unlock = {XD_UNLOCK_ENTRY if lk.entry else XD_UNLOCK_INODE: self.domain}

                    def post(i: int) -> Awaitable[Any]:
                        c = self.children[i]
                        if fmask >> i & 1:
                            xd: dict | None = None
                            if mask >> i & 1:
                                xd = {XD_UNLOCK_INODE: self.domain, XD_UNLOCK_OWNER: self.owner}
                                if lk.dirty[i]:
                                    xd[XD_INODE + self.dirty_key] = vec(lk.dirty[i], -1)
                            return c.flush(fcall, FdReq(a.fds[i], xd))  # type: ignore[arg-type]
                        if lk.dirty[i]:
                            return c.xattrop(call, XattropReq(
                                lk.gfid, XATTROP_ADD_ARRAY, {self.dirty_key: vec(lk.dirty[i], -1)},
                                unlock))
                        if lk.entry:
                            return c.entrylk(call, EntrylkReq(lk.gfid, None, self.domain,
                                                              ENTRYLK_UNLOCK))
                        return c.inodelk(call, InodelkReq(lk.gfid, self.domain, LK_SETLK,
                                                          F_UNLCK))

                    res = await self.fan(mask | fmask, post)
                    for i in bits(mask):
                        if isinstance(res[i], FopError) and res[i].errno not in _GONE:
                            log.warning("%s: post-op/unlock of %s on %s: %s", self.name,
                                        gfid_str(lk.gfid), self.bname(i), res[i])
        finally:
            if self._locks.get((lk.gfid, lk.entry)) is lk:
                del self._locks[(lk.gfid, lk.entry)]
            lk.done.set()
            ev, lk.changed = lk.changed, trio.Event()
            ev.set()
        return res

    def _adopt(self, gfid: bytes, entry: bool, mask: int, dirty: int = 0) -> None:
        """A lock the bricks granted us with a create (lock.inodelk / lock.entrylk), on an
        object made with `dirty` raised."""
        if not mask or (gfid, entry) in self._locks:
            return
        lk = _Lock(gfid, entry, self.n, HELD, mask, mask)
        for i in bits(mask):
            lk.dirty[i] = dirty
        lk.born = trio.current_time()
        lk.ready.set()
        self._locks[(gfid, entry)] = lk
        lk.users = 1
        lk.keys.append(None if entry else _WHOLE)
        self._leave(lk, None if entry else _WHOLE)

    # ------------------------------------------------------------ the transaction
    async def _txn(self, call: Call, parts: list[_Part], what: str,
                   run: Callable[[int, dict | None], Awaitable[Any]],
                   data_gfid: bytes | None = None,
                   prepare: Callable[[int], None] | None = None,
                   entered: _Lock | None = None) -> tuple[list[Any], int]:
        """lock -> pre-op -> op -> post-op on every locked brick; -> (per-brick results, mask
        of bricks that succeeded). Raises the fop's error, EROFS without quorum. `entered`:
        the lock of the first part, already joined (a name reservation)."""
        held: list[tuple[_Lock, _Part]] = []
        if entered is not None:
            held.append((entered, parts[0]))
        up = self.up_mask()
        try:
            if not self.quorum(up):
                raise self._no_quorum(up, what)
            for p in sorted(parts[1:] if entered is not None else parts,
                            key=lambda p: (p.gfid, p.entry)):
                if held and held[-1][0].gfid == p.gfid and held[-1][0].entry == p.entry:
                    raise AssertionError("one lock twice in a transaction")
                held.append((await self._enter(p), p))
            targets = self.up_mask()
            for lk, _ in held:
                targets &= lk.good
            if not self.quorum(targets):
                raise self._no_quorum(targets, what)
            if data_gfid is not None and self.arbiter is not None:
                st = await self._state(call, data_gfid)
                if not targets & self.data_mask & st.readable[DATA]:
                    raise FopError(errno.ENOTCONN, f"{self.name}: {what}: no good data copy "
                                   f"of {gfid_str(data_gfid)} is up (only the arbiter would "
                                   "take the write)")
            # pre-op and accusations, folded into the fop
            xds: list[dict | None] = [None] * self.n
            blames: list[tuple[_Lock, int, int]] = []
            for lk, p in held:
                for j in range(self.n):
                    if not targets >> j & 1:
                        need = p.slots & ~lk.blamed[j]
                        if need:
                            blames.append((lk, j, need))
            for i in bits(targets):
                xd: dict = {}
                for lk, p in held:
                    pre = p.slots & ~lk.dirty[i]
                    if pre:
                        xd[p.prefix + self.dirty_key] = vec(pre)
                for lk, j, need in blames:
                    pfx = next(p.prefix for q, p in held if q is lk)
                    xd[pfx + self.keys[j]] = vec(need)
                    if not lk.entry and (pn := self.names.get(lk.gfid)) is not None:
                        xd[XDATA_NAME] = pn[0] + pn[1]  # heal info can name the file
                xds[i] = xd or None
            if prepare is not None:
                prepare(targets)
            res = await self.fan(targets, lambda i: run(i, xds[i]))
            ok = self.ok_mask(res)
            if not ok:
                raise self.best_error(res)
            for lk, p in held:
                for i in bits(ok):
                    lk.dirty[i] |= p.slots
                if lk.entry:
                    lk.absent.difference_update(p.key)  # names it made exist
            for lk, j, need in blames:
                lk.blamed[j] |= need
            left_out = self.all_mask & ~targets
            if left_out:  # accused above: no longer good copies of what this fop changed
                for lk, p in held:
                    self._stale(lk.gfid, p.slots, left_out)
            bad = targets & ~ok
            if bad:
                await self._blame_now(held, ok, bad, res, what)
            if not self.quorum(ok):
                raise self._no_quorum(ok, what + " (succeeded on too few bricks)")
            if data_gfid is not None and self.arbiter is not None and not ok & self.data_mask:
                raise FopError(errno.ENOTCONN, f"{self.name}: {what}: only the arbiter took it")
            return res, ok
        finally:
            for lk, p in held:
                self._leave(lk, p.key)

    async def _blame_now(self, held: list[tuple[_Lock, _Part]], ok: int, bad: int,
                         res: list[Any], what: str) -> None:
        """The fop failed on `bad` and succeeded on `ok`: accuse the failed bricks on the ones
        that succeeded (a post-op of its own, at once), leave them out of the lock's life."""
        self.stats["blames"] += 1
        log.warning("%s: %s failed on %s (%s) and succeeded on %s: marking %s for heal",
                    self.name, what, self.bnames(bad),
                    "; ".join(str(res[i]) for i in bits(bad)), self.bnames(ok), self.bnames(bad))
        call = self._lcall()
        for lk, p in held:
            lk.good &= ~bad
            ops = {}
            for j in bits(bad):
                need = p.slots & ~lk.blamed[j]
                if need:
                    ops[self.keys[j]] = vec(need)
                    lk.blamed[j] |= need
            if ops:
                xreq = XattropReq(lk.gfid, XATTROP_ADD_ARRAY, ops)
                out = await self.fan(ok, lambda i, xreq=xreq: self.children[i].xattrop(
                    call, xreq))
                for i in bits(ok):
                    if isinstance(out[i], FopError):
                        log.error("%s: cannot record on %s that %s missed a change of %s: %s",
                                  self.name, self.bname(i), self.bnames(bad),
                                  gfid_str(lk.gfid), out[i])
            self._stale(lk.gfid, p.slots, bad)

    def _stale(self, gfid: bytes, slots: int, bad: int) -> None:
        """Bricks `bad` missed a change of `slots` of the object: not readable for those."""
        st = self.inodes.get(gfid)
        if st is not None:
            for k in (DATA, META, ENTRY):
                if slots >> k & 1:
                    st.readable[k] &= ~bad
                    st.accused[k] |= bad
            st.pending = True

    def _entry_mark(self, targets_ok: int, slots: int) -> dict[str, bytes] | None:
        """Counters a new object is created with: accusing the bricks it is not made on."""
        out = {}
        for j in range(self.n):
            if not targets_ok >> j & 1:
                out[self.keys[j]] = vec(slots)
        return out or None

    # ------------------------------------------------------------ inode-modifying fops
    def _inode_slots(self, fop: Fop, req: Any) -> int:
        """The changelog slots a change of an object touches: what the fop table says it
        changes, and data too for a setattr that sets the size."""
        slots = _slots(fop.changes)
        if getattr(req, "valid", 0) & SET_SIZE:
            slots |= M_DATA
        return slots

    def _inode_key(self, req: Any, slots: int) -> Any:
        """Local conflict key: the byte range of a request with an offset (write: its data,
        fallocate/discard/zerofill: its length), else metadata or the whole file."""
        if hasattr(req, "offset"):
            n = len(req.data) if hasattr(req, "data") else req.length
            return (req.offset, req.offset + max(n, 1))
        if slots == M_META:
            return _META_RANGE
        return _WHOLE

    async def _inode_txn(self, fop: Fop, call: Call, req: Any) -> Any:
        slots = self._inode_slots(fop, req)
        isfd = hasattr(req, "fd")
        if isfd:
            a = self._afd(req.fd)
            gfid = a.gfid
        else:
            a = None
            gfid = req.gfid
        st = self.inodes.get(gfid)
        if st is None:
            st, _ = await self.refresh(call, gfid)
        for k in (DATA, META):
            if slots >> k & 1 and st.split[k]:
                raise self._sb_error(st, k, "file")
        part = _Part(gfid, False, self._inode_key(req, slots), slots, XD_INODE)
        child_fop = fop.name

        async def run(i: int, xd: dict | None) -> Any:
            c = getattr(self.children[i], child_fop)
            if a is not None:
                f = await self._child_fd(call, a, i)
                return await c(call, replace(req, fd=f, xdata=_xdata(req, xd)))
            return await c(call, replace(req, xdata=_xdata(req, xd)))

        res, ok = await self._txn(call, [part], f"{fop.name} of {gfid_str(gfid)}", run,
                                  gfid if slots & M_DATA and S.S_ISREG(st.type) else None)
        return res[self._reply_iatt(res, ok, gfid)]

    # ------------------------------------------------------------ entry fops
    async def _new_entry(self, fop: str, call: Call, req: Any, slots: int) -> Any:
        """create / mknod / mkdir / symlink: the same gfid on every brick, made with its lock
        granted to us and with counters accusing the bricks it is not made on."""
        is_dir = fop == "mkdir"
        part = _Part(req.parent, True, (req.name,), M_ENTRY, XD_PARENT)
        entered = None
        if req.xdata and XDATA_RESERVED in req.xdata:
            entered = self._reserved.pop((req.parent, req.name), None)
            rest = {k: v for k, v in req.xdata.items() if k != XDATA_RESERVED}
            req = replace(req, xdata=rest or None)
        # internal: the counters it is made with are trusted.gvol.* xattrs
        ccall = _internal(call, self.owner if self.eager else call.lk_owner)
        # files and directories come with their lock (their first writes / creates inside
        # need none of their own); symlinks and special files are rarely changed again
        closed = fop == "create" and req.close  # a whole small file: no fd, no lock after
        locked = self.eager and fop in ("create", "mkdir") and not closed
        lock_key = (XD_LOCK_ENTRY if is_dir else XD_LOCK_INODE) if locked else None
        made: list[Any] = [req]
        # a new file is born dirty for data (its first writes need no pre-op of their own:
        # the post-op when it is closed clears it)
        born_dirty = M_DATA if fop == "create" and self.eager and not closed else 0

        def prepare(targets: int) -> None:
            mark = self._entry_mark(targets, slots) or {}
            if mark and not is_dir:  # it will need heal: heal info can name it
                k, v = gfid2path_xattr(req.parent, req.name)
                mark[k] = v
            if born_dirty:
                mark[self.dirty_key] = vec(born_dirty)
            if mark:
                made[0] = replace(req, xattrs={**(req.xattrs or {}), **mark})

        async def run(i: int, xd: dict | None) -> Any:
            if lock_key is not None:
                xd = {**(xd or {}), lock_key: self.domain}
            return await getattr(self.children[i], fop)(ccall, replace(made[0],
                                                                        xdata=_xdata(req, xd)))

        res, ok = await self._txn(call, [part], f"{fop} {req.name!r} in "
                                  f"{gfid_str(req.parent)}", run, prepare=prepare,
                                  entered=entered)
        gfid = req.gfid
        if locked:
            self._adopt(gfid, is_dir, ok, born_dirty)
        self.names.put(gfid, (req.parent, req.name))
        typ = S.S_IFDIR if is_dir else (S.S_IFLNK if fop == "symlink" else S.S_IFREG)
        if fop == "mknod":
            typ = S.S_IFMT(req.mode) or S.S_IFREG
        notok = self.all_mask & ~ok
        self._remember(InodeState(gfid, typ, ok, [ok, ok, ok], [notok, notok, notok],
                                  [False, False, False], bool(notok)))
        i = self._reply_iatt(res, ok, gfid)
        if closed:
            return CreateRep(res[i].iatt, None)
        if fop == "create":
            fds: list[Fd | None] = [r.fd if isinstance(r, CreateRep) else None for r in res]
            return CreateRep(res[i].iatt, self._new_fd(gfid, req.flags, False, fds))
        return EntryRep(res[i].iatt, None)

    async def _entry_txn(self, fop: str, call: Call, req: Any, parts: list[_Part]) -> Any:
        async def run(i: int, xd: dict | None) -> Any:
            return await getattr(self.children[i], fop)(call, replace(req, xdata=_xdata(req, xd)))

        res, ok = await self._txn(call, parts, f"{fop} {getattr(req, 'name', b'')!r}", run)
        return res, ok

    async def unlink(self, call: Call, req: Any) -> Any:
        await self._entry_txn("unlink", call, req,
                              [_Part(req.parent, True, (req.name,), M_ENTRY, XD_PARENT)])
        return EMPTY

    async def rmdir(self, call: Call, req: Any) -> Any:
        await self._entry_txn("rmdir", call, req,
                              [_Part(req.parent, True, (req.name,), M_ENTRY, XD_PARENT)])
        return EMPTY

    async def link(self, call: Call, req: Any) -> EntryRep:
        res, ok = await self._entry_txn(
            "link", call, req, [_Part(req.newparent, True, (req.newname,), M_ENTRY, XD_PARENT)])
        i = self._reply_iatt(res, ok, req.gfid)
        return EntryRep(res[i].iatt, None)

    async def rename(self, call: Call, req: Any) -> Any:
        if req.oldparent == req.newparent:
            parts = [_Part(req.oldparent, True, (req.oldname, req.newname), M_ENTRY, XD_PARENT)]
        else:
            parts = [_Part(req.oldparent, True, (req.oldname,), M_ENTRY, XD_PARENT),
                     _Part(req.newparent, True, (req.newname,), M_ENTRY, XD_NEWPARENT)]
        await self._entry_txn("rename", call, req, parts)
        return EMPTY

    # ------------------------------------------------------------ locks and xattrop from above
    async def _serial(self, fop: str, call: Call, req: Any, fdreq: bool) -> Any:
        """Locks for the layers above (POSIX lk, inodelk, entrylk): non-blocking in parallel
        (undone on a partial grant), blocking one brick after the other in brick order."""
        up = self.up_mask()
        if fdreq:
            a = self._afd(req.fd)
            up &= await self._open_everywhere(call, a)

            def mk(i: int) -> Any:
                return replace(req, fd=a.fds[i])
        else:
            def mk(i: int) -> Any:
                return req
        if not up:
            raise FopError(errno.ENOTCONN, f"{self.name}: no brick is up")
        cmd = getattr(req, "cmd", None)
        unlock = getattr(req, "type", None) == F_UNLCK or cmd == ENTRYLK_UNLOCK
        if fop == "lk" and cmd == LK_GETLK:
            return await getattr(self.children[bits(up)[0]], fop)(call, mk(bits(up)[0]))
        blocking = cmd in (LK_SETLKW, ENTRYLK_LOCK) and not unlock
        if unlock or not blocking:
            res = await self.fan(up, lambda i: getattr(self.children[i], fop)(call, mk(i)))
            ok = self.ok_mask(res)
            if unlock:
                if not ok:
                    raise self.best_error(res)
                return res[bits(ok)[0]]
            if ok == up or (ok and not any(isinstance(r, FopError) and r.errno == errno.EAGAIN
                                           for r in res)):
                if not self.quorum(ok) and self.quorum_type != "none":
                    await self._undo_lock(fop, call, req, mk, ok)
                    raise self._no_quorum(ok, fop)
                return res[bits(ok)[0]]
            await self._undo_lock(fop, call, req, mk, ok)
            raise self.best_error([r for r in res if isinstance(r, FopError)
                                    and r.errno == errno.EAGAIN] or res)
        got = 0
        last: Any = None
        for i in bits(up):
            try:
                last = await getattr(self.children[i], fop)(call, mk(i))
                got |= 1 << i
            except FopError as e:
                if e.errno == errno.ENOTCONN:
                    continue
                await self._undo_lock(fop, call, req, mk, got)
                raise
        if not got:
            raise FopError(errno.ENOTCONN, f"{self.name}: no brick is up")
        return last

    async def _undo_lock(self, fop: str, call: Call, req: Any, mk: Callable[[int], Any],
                         mask: int) -> None:
        if not mask:
            return
        if fop == "entrylk":
            def un(i: int) -> Any:
                return replace(mk(i), cmd=ENTRYLK_UNLOCK)
        else:
            def un(i: int) -> Any:
                return replace(mk(i), type=F_UNLCK, cmd=LK_SETLK)
        await self.fan(mask, lambda i: getattr(self.children[i], fop)(call, un(i)))

    async def entrylk(self, call: Call, req: Any) -> Any:
        if req.domain == RESERVE_DOMAIN:
            return self._reserve(req)
        return await self._serial("entrylk", call, req, False)

    # ------------------------------------------------------------ name reservations
    def _dir_held(self, parent: bytes | None) -> _Lock | None:
        """This client's eager entry lock on `parent`, if it is held on every up brick."""
        lk = self._locks.get((parent, True)) if parent is not None else None
        up = self.up_mask()
        if (lk is None or lk.state != HELD or lk.draining or lk.held & up != up
                or lk.good & up != up or not self.quorum(up)):
            return None
        return lk

    def _reserve(self, req: Any) -> Any:
        """RESERVE_DOMAIN (see translators/types.py): answered here, never by a brick."""
        k = (req.parent, req.name)
        if req.cmd == ENTRYLK_UNLOCK:
            lk = self._reserved.pop(k, None)
            if lk is not None:
                self._leave(lk, (req.name,))
            return EMPTY
        lk = self._dir_held(req.parent)
        if (lk is None or req.name not in lk.absent or k in self._reserved
                or any(_conflict(True, (req.name,), o) for o in lk.keys)):
            raise FopError(errno.EAGAIN, f"{self.name}: cannot reserve {req.name!r}")
        lk.users += 1  # a use of the lock: it stays held until the create or the unlock
        lk.keys.append((req.name,))
        self._reserved[k] = lk
        return EMPTY

    async def xattrop(self, call: Call, req: Any) -> Any:
        up = self.up_mask()
        if not self.quorum(up):
            raise self._no_quorum(up, "xattrop")
        res = await self.fan(up, lambda i: self.children[i].xattrop(call, req))
        ok = self.ok_mask(res)
        if not ok:
            raise self.best_error(res)
        return res[bits(ok)[0]]


REGISTRY["cluster/afr"] = Replicate

