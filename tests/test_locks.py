"""features/locks: inodelk, entrylk, POSIX lk, release on close and on disconnect."""
from __future__ import annotations

import errno
import functools

import pytest
import trio
import trio.testing

from translators.features.locks import INF, Locks
from translators.fops import (
    EMPTY,
    ENTRYLK_LOCK,
    ENTRYLK_LOCK_NB,
    ENTRYLK_UNLOCK,
    F_RDLCK,
    F_UNLCK,
    F_WRLCK,
    LK_GETLK,
    LK_SETLK,
    LK_SETLKW,
    EntrylkReq,
    FdReq,
    InodelkReq,
    InodeReq,
    LkReq,
)
from translators.types import Call, Fd, FopError, new_gfid
from translators.xlator import Translator

G = new_gfid()
DIR = new_gfid()
A = Call(lk_owner=b"A", client="c1")
B = Call(lk_owner=b"B", client="c1")
C = Call(lk_owner=b"A", client="c2")  # same lk_owner as A, other connection: another owner


def trio_test(fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return trio.run(functools.partial(fn, *a, **kw))
    return wrapper


class Sink(Translator):
    """A leaf that records what reached it."""
    min_children = 0
    max_children = 0

    def __init__(self) -> None:
        super().__init__("sink")
        self.seen: list[str] = []

    async def handle(self, fop, call, req):
        self.seen.append(fop.name)
        return EMPTY


def make() -> tuple[Locks, Sink]:
    s = Sink()
    return Locks("locks", {}, [s]), s


async def fails(err, coro):
    with pytest.raises(FopError) as ei:
        await coro
    assert ei.value.errno == err, ei.value
    return ei.value


def ilk(cmd, typ, start=0, length=0, domain="d", gfid=G):
    return InodelkReq(gfid, domain, cmd, typ, start, length)


class Bg:
    """A lock request running in the background; `done` tells whether it returned."""

    def __init__(self, nursery, coro_fn, *args):
        self.done = False
        self.error: FopError | None = None
        self.scope = trio.CancelScope()
        nursery.start_soon(self._run, coro_fn, args)

    async def _run(self, fn, args):
        with self.scope:
            try:
                await fn(*args)
            except FopError as e:
                self.error = e
            self.done = True


async def settle():
    await trio.testing.wait_all_tasks_blocked()


# ---------------------------------------------------------------- inodelk
@trio_test
async def test_inodelk_conflicts():
    x, sink = make()
    await x.inodelk(A, ilk(LK_SETLK, F_WRLCK, 0, 10))
    await fails(errno.EAGAIN, x.inodelk(B, ilk(LK_SETLK, F_WRLCK, 5, 1)))
    await fails(errno.EAGAIN, x.inodelk(C, ilk(LK_SETLK, F_RDLCK, 9, 1)))
    await x.inodelk(B, ilk(LK_SETLK, F_WRLCK, 10, 10))  # adjacent: no overlap
    await x.inodelk(A, ilk(LK_SETLK, F_WRLCK, 0, 5))  # one owner never conflicts with itself
    await x.inodelk(C, ilk(LK_SETLK, F_WRLCK, 0, 10, domain="other"))  # domains are separate
    await x.inodelk(C, ilk(LK_SETLK, F_WRLCK, 0, 10, gfid=new_gfid()))
    await x.inodelk(C, ilk(LK_SETLK, F_WRLCK, 100))  # length 0: to EOF
    await fails(errno.EAGAIN, x.inodelk(A, ilk(LK_SETLK, F_RDLCK, 1 << 40, 1)))
    # unlock must name a held range of the same owner
    await fails(errno.EINVAL, x.inodelk(B, ilk(LK_SETLK, F_UNLCK, 0, 10)))
    await fails(errno.EINVAL, x.inodelk(A, ilk(LK_SETLK, F_UNLCK, 0, 9)))
    await x.inodelk(A, ilk(LK_SETLK, F_UNLCK, 0, 10))
    await fails(errno.EAGAIN, x.inodelk(B, ilk(LK_SETLK, F_WRLCK, 0, 1)))  # A still has 0..5
    await x.inodelk(A, ilk(LK_SETLK, F_UNLCK, 0, 5))
    await x.inodelk(B, ilk(LK_SETLK, F_WRLCK, 0, 1))
    # shared read locks
    g2 = new_gfid()
    await x.inodelk(A, ilk(LK_SETLK, F_RDLCK, gfid=g2))
    await x.inodelk(B, ilk(LK_SETLK, F_RDLCK, gfid=g2))
    await fails(errno.EAGAIN, x.inodelk(C, ilk(LK_SETLK, F_WRLCK, 7, 1, gfid=g2)))
    await fails(errno.EINVAL, x.inodelk(A, ilk(LK_GETLK, F_WRLCK)))
    await fails(errno.EINVAL, x.inodelk(A, ilk(LK_SETLK, F_WRLCK, -1, 1)))
    assert sink.seen == []  # never wound


@trio_test
async def test_inodelk_blocking_and_fair():
    x, _ = make()
    async with trio.open_nursery() as n:
        await x.inodelk(A, ilk(LK_SETLK, F_RDLCK))
        w = Bg(n, x.inodelk, B, ilk(LK_SETLKW, F_WRLCK))
        await settle()
        assert not w.done
        # a new reader would be compatible with A, but waits behind the queued writer
        await fails(errno.EAGAIN, x.inodelk(C, ilk(LK_SETLK, F_RDLCK)))
        r = Bg(n, x.inodelk, C, ilk(LK_SETLKW, F_RDLCK))
        await settle()
        assert not r.done
        await x.inodelk(A, ilk(LK_SETLK, F_UNLCK))
        await settle()
        assert w.done and w.error is None and not r.done
        await x.inodelk(B, ilk(LK_SETLK, F_UNLCK))
        await settle()
        assert r.done and r.error is None
        await x.inodelk(C, ilk(LK_SETLK, F_UNLCK))
        assert x.inodelks == {}
        # several compatible waiters are all woken
        await x.inodelk(A, ilk(LK_SETLK, F_WRLCK, 0, 10))
        rs = [Bg(n, x.inodelk, Call(lk_owner=b"r%d" % i, client="c3"),
                 ilk(LK_SETLKW, F_RDLCK, i, 1)) for i in range(5)]
        await settle()
        assert not any(b.done for b in rs)
        await x.inodelk(A, ilk(LK_SETLK, F_UNLCK, 0, 10))
        await settle()
        assert all(b.done and b.error is None for b in rs)


# ---------------------------------------------------------------- entrylk
def elk(cmd, name, typ=F_WRLCK, domain="d"):
    return EntrylkReq(DIR, name, domain, cmd, typ)


@trio_test
async def test_entrylk():
    x, sink = make()
    async with trio.open_nursery() as n:
        await x.entrylk(A, elk(ENTRYLK_LOCK, b"x"))
        await x.entrylk(B, elk(ENTRYLK_LOCK_NB, b"y"))
        await fails(errno.EAGAIN, x.entrylk(B, elk(ENTRYLK_LOCK_NB, b"x")))
        await fails(errno.EAGAIN, x.entrylk(B, elk(ENTRYLK_LOCK_NB, None)))  # whole directory
        await x.entrylk(B, elk(ENTRYLK_LOCK_NB, b"x", domain="other"))
        w = Bg(n, x.entrylk, B, elk(ENTRYLK_LOCK, b"x"))
        await settle()
        assert not w.done
        await fails(errno.EINVAL, x.entrylk(B, elk(ENTRYLK_UNLOCK, b"z")))
        await x.entrylk(A, elk(ENTRYLK_UNLOCK, b"x"))
        await settle()
        assert w.done and w.error is None
        await x.entrylk(B, elk(ENTRYLK_UNLOCK, b"x"))
        await x.entrylk(B, elk(ENTRYLK_LOCK_NB, None))  # only B's own lock on y remains
        await fails(errno.EAGAIN, x.entrylk(A, elk(ENTRYLK_LOCK_NB, b"z")))
        w2 = Bg(n, x.entrylk, A, elk(ENTRYLK_LOCK, b"z"))
        await settle()
        assert not w2.done
        await x.entrylk(B, elk(ENTRYLK_UNLOCK, None))
        await settle()
        assert w2.done
        # read locks share
        await x.entrylk(A, elk(ENTRYLK_LOCK_NB, b"r", F_RDLCK))
        await x.entrylk(B, elk(ENTRYLK_LOCK_NB, b"r", F_RDLCK))
        await fails(errno.EAGAIN, x.entrylk(C, elk(ENTRYLK_LOCK_NB, b"r")))
    assert sink.seen == []


# ---------------------------------------------------------------- POSIX lk
def pl(fd, cmd, typ, start, length, pid=1):
    return LkReq(fd, cmd, typ, start, length, pid)


def held(x, gfid=G):
    sp = x.posix.get(gfid)
    if sp is None:
        return []
    return [(lk.owner[1], "RW"[lk.type == F_WRLCK], lk.start,
             None if lk.end >= INF else lk.end) for lk in sp.granted]


@trio_test
async def test_lk_split_merge_and_getlk():
    x, sink = make()
    fd = Fd(G)
    await x.lk(A, pl(fd, LK_SETLK, F_WRLCK, 0, 100))
    await x.lk(A, pl(fd, LK_SETLK, F_UNLCK, 40, 20))
    assert held(x) == [(b"A", "W", 0, 40), (b"A", "W", 60, 100)]
    rep = await x.lk(B, pl(fd, LK_GETLK, F_WRLCK, 40, 20))
    assert rep.type == F_UNLCK
    rep = await x.lk(B, pl(fd, LK_GETLK, F_RDLCK, 30, 20, pid=9))
    assert (rep.type, rep.start, rep.length, rep.pid) == (F_WRLCK, 0, 40, 1)
    await x.lk(B, pl(fd, LK_SETLK, F_WRLCK, 45, 5))
    await fails(errno.EAGAIN, x.lk(B, pl(fd, LK_SETLK, F_RDLCK, 39, 2)))
    await x.lk(B, pl(fd, LK_SETLK, F_UNLCK, 0, 0))
    # re-locking the hole merges the three pieces back into one
    await x.lk(A, pl(fd, LK_SETLK, F_WRLCK, 40, 20))
    assert held(x) == [(b"A", "W", 0, 100)]
    # downgrading a middle part splits; adjacent locks of one type merge
    await x.lk(A, pl(fd, LK_SETLK, F_RDLCK, 20, 10))
    assert held(x) == [(b"A", "W", 0, 20), (b"A", "R", 20, 30), (b"A", "W", 30, 100)]
    await x.lk(A, pl(fd, LK_SETLK, F_RDLCK, 30, 10))
    assert held(x) == [(b"A", "W", 0, 20), (b"A", "R", 20, 40), (b"A", "W", 40, 100)]
    await x.lk(A, pl(fd, LK_SETLK, F_WRLCK, 100, 0))  # to EOF, adjacent: merges
    assert held(x) == [(b"A", "W", 0, 20), (b"A", "R", 20, 40), (b"A", "W", 40, None)]
    rep = await x.lk(C, pl(fd, LK_GETLK, F_RDLCK, 1 << 50, 1))
    assert (rep.type, rep.start, rep.length) == (F_WRLCK, 40, 0)
    await x.lk(C, pl(fd, LK_SETLK, F_RDLCK, 25, 10))  # shares A's read part
    await fails(errno.EAGAIN, x.lk(C, pl(fd, LK_SETLK, F_RDLCK, 35, 10)))
    await x.lk(A, pl(fd, LK_SETLK, F_UNLCK, 0, 0))
    assert held(x) == [(b"A", "R", 25, 35)]  # C's (lk_owner A on client c2)
    assert x.posix[G].granted[0].owner == ("c2", b"A")
    await x.lk(C, pl(fd, LK_SETLK, F_UNLCK, 0, 0))
    assert x.posix == {}
    await fails(errno.EINVAL, x.lk(A, pl(fd, LK_SETLK, 7, 0, 0)))
    assert sink.seen == []


@trio_test
async def test_lk_blocking_and_close_releases():
    x, sink = make()
    fa, fb = Fd(G), Fd(G)
    async with trio.open_nursery() as n:
        await x.lk(A, pl(fa, LK_SETLK, F_WRLCK, 0, 10))
        await x.lk(A, pl(fa, LK_SETLK, F_RDLCK, 50, 10))
        w = Bg(n, x.lk, B, pl(fb, LK_SETLKW, F_WRLCK, 5, 50))
        await settle()
        assert not w.done
        await x.lk(A, pl(fa, LK_SETLK, F_UNLCK, 0, 10))
        await settle()
        assert not w.done  # still overlaps A's read lock at 50..60
        await x.flush(A, FdReq(fa))  # close() drops all of A's locks on the file
        await settle()
        assert w.done and w.error is None
        assert held(x) == [(b"B", "W", 5, 55)]
        await x.release(B, FdReq(fb))  # release drops the locks taken through the fd
        assert x.posix == {}
        assert sink.seen == ["flush", "release"]
        assert fb.ctx == {}


@trio_test
async def test_client_disconnect():
    x, _ = make()
    fd = Fd(G)
    other = Call(lk_owner=b"O", client="c2")
    async with trio.open_nursery() as n:
        await x.inodelk(A, ilk(LK_SETLK, F_WRLCK))
        await x.entrylk(B, elk(ENTRYLK_LOCK, b"n"))
        await x.lk(A, pl(fd, LK_SETLK, F_WRLCK, 0, 0))
        await x.inodelk(other, ilk(LK_SETLK, F_WRLCK, domain="d2"))
        wi = Bg(n, x.inodelk, other, ilk(LK_SETLKW, F_WRLCK))
        we = Bg(n, x.entrylk, other, elk(ENTRYLK_LOCK, None))
        wl = Bg(n, x.lk, other, pl(fd, LK_SETLKW, F_RDLCK, 3, 1))
        # c1 also waits for a lock c2 holds: that wait must end with ENOTCONN
        mine = Bg(n, x.inodelk, A, ilk(LK_SETLKW, F_RDLCK, domain="d2"))
        await settle()
        assert not any(b.done for b in (wi, we, wl, mine))
        assert x.client_disconnect("c1") == 3
        await settle()
        assert all(b.done and b.error is None for b in (wi, we, wl))
        assert mine.done and mine.error.errno == errno.ENOTCONN
        assert x.client_disconnect("c1") == 0
        assert x.client_disconnect("c2") == 4
    assert x.inodelks == {} and x.entrylks == {} and x.posix == {}


@trio_test
async def test_cancelled_waiter_leaves_no_trace():
    x, _ = make()
    async with trio.open_nursery() as n:
        await x.inodelk(A, ilk(LK_SETLK, F_WRLCK))
        w = Bg(n, x.inodelk, B, ilk(LK_SETLKW, F_WRLCK))
        r = Bg(n, x.inodelk, C, ilk(LK_SETLKW, F_RDLCK, 5, 1))
        await settle()
        w.scope.cancel()
        await settle()
        assert not w.done and len(x.inodelks[(G, "d")].waiters) == 1
        await x.inodelk(A, ilk(LK_SETLK, F_UNLCK))
        await settle()
        assert r.done and r.error is None  # the cancelled writer no longer blocks it
        await x.inodelk(C, ilk(LK_SETLK, F_UNLCK, 5, 1))
    assert x.inodelks == {}
    assert x.dump() == {"inodelk": {}, "entrylk": {}, "posix": {}}


@trio_test
async def test_other_fops_pass_through():
    x, sink = make()
    assert await x.stat(A, InodeReq(G)) is EMPTY
    assert sink.seen == ["stat"]
