"""A new fop is one entry in the fop table: the translators take its behaviour from the table's
facts. These tests add fops to a copy of the table, give storage/posix the one thing that is
code (the `_do_<fop>` syscalls), and check that cluster/replicate routes them (a read to one good
copy with failover, a change as a transaction with its changelog), that features/index applies
the folded changelog to the new fop's object, and that storage/posix runs the fop inline or in a
worker thread as the table says."""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
import trio
from afrenv import FS, Replica, changelog

from translators.changelog import counters
from translators.fops import (
    FOP_LIST,
    AttrRep,
    FdReq,
    Fop,
    InodeReq,
    Kind,
    OpenReq,
    RangeReq,
)
from translators.storage.posix import Posix
from translators.types import ROOT_CALL, FopError
from translators.xlator import Translator, install_fops

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bricks need root (trusted.* xattrs)")

# a stat under another name: reads data and metadata of an inode, short enough to run inline
STATX = Fop("statx", 100, Kind.INODE, InodeReq, AttrRep, reads=("data", "metadata"),
            object="gfid", inline=True)
# a hole punch under another name: changes the data of an open file
PUNCH = Fop("punch", 101, Kind.FD, RangeReq, AttrRep, changes=("data",), object="fd")
# a fop without any facts: nothing says how to replicate it
BARE = Fop("bare", 102, Kind.INODE, InodeReq, AttrRep)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch):
    """FOP_LIST plus the fops above, installed on the translator base class (and removed again);
    storage/posix gets their syscalls."""
    extra = (STATX, PUNCH, BARE)
    copy = FOP_LIST + extra
    threads: list[str] = []

    def statx(self, call, req, inline=False):
        threads.append(threading.current_thread().name)
        return Posix._do_stat(self, call, req, inline)

    def punch(self, call, req):
        threads.append(threading.current_thread().name)
        return Posix._do_discard(self, call, req)

    monkeypatch.setattr(Posix, "_do_statx", statx, raising=False)
    monkeypatch.setattr(Posix, "_do_punch", punch, raising=False)
    monkeypatch.setattr(Posix, "_do_bare", Posix._do_stat, raising=False)
    added = install_fops(Translator, copy)
    assert added == [f.name for f in extra]
    try:
        yield threads
    finally:
        for name in added:
            delattr(Translator, name)


def test_a_new_read_fop_reads_one_good_copy_and_fails_over(tmp_path: Path, table) -> None:
    threads = table

    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        links = r.links(afr)
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            g = await fs.create("/f", b"hello")
            rep = await afr.statx(ROOT_CALL, InodeReq(g))
            assert rep.iatt.gfid == g and rep.iatt.size == 5
            served = [i for i, x in enumerate(links) if x.calls["statx"]]
            assert len(served) == 1  # a read goes to one readable brick
            # storage/posix ran it in the event loop's thread: the table says inline
            assert threads[-1] == threading.main_thread().name
            await links[served[0]].cut()
            rep = await afr.statx(ROOT_CALL, InodeReq(g))
            assert rep.iatt.size == 5
            again = [i for i, x in enumerate(links) if x.calls["statx"]]
            assert len(again) == 2 and served[0] in again  # failed over to another copy
            await links[served[0]].restore()
            await afr.settle()
            n.cancel_scope.cancel()

    trio.run(t)


def test_a_new_changing_fop_is_a_transaction_with_its_changelog(tmp_path: Path,
                                                                 table) -> None:
    threads = table

    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        links = r.links(afr)
        async with trio.open_nursery() as n:
            await r.start(n)
            fs = FS(afr)
            g = await fs.create("/f", b"x" * 65536)
            o = await afr.open(ROOT_CALL, OpenReq(g, os.O_RDWR))
            await links[2].cut()
            rep = await afr.punch(ROOT_CALL, RangeReq(o.fd, 0, 4096))
            assert rep.iatt.gfid == g
            assert [x.calls["punch"] for x in links] == [1, 1, 0]  # every up brick
            # not inline (the table does not say so): storage/posix used a worker thread
            assert threads and all(t != threading.main_thread().name for t in threads)
            await afr.release(ROOT_CALL, FdReq(o.fd))
            await afr.settle()
            # the bricks that took it accuse the one that missed it, for data: features/index
            # applied the changelog folded into the new fop to the fop's own object
            for b in r.bricks[:2]:
                pend = changelog(b.path).get("f", {})
                assert counters(pend.get(f"trusted.gvol.afr.{r.client_names[2]}"))[0] > 0, pend
            for b in r.bricks[:2]:
                with open(b.path / "f", "rb") as f:
                    assert f.read(4096) == bytes(4096)
            with open(r.bricks[2].path / "f", "rb") as f:
                assert f.read(4096) == b"x" * 4096
            await links[2].restore()
            n.cancel_scope.cancel()

    trio.run(t)


def test_a_new_fop_without_facts_is_refused_not_sent_to_one_brick(tmp_path: Path,
                                                                    table) -> None:
    async def t() -> None:
        r = Replica(tmp_path)
        afr = r.client()
        links = r.links(afr)
        async with trio.open_nursery() as n:
            await r.start(n)
            g = await FS(afr).create("/f", b"x")
            with pytest.raises(FopError) as e:
                await afr.bare(ROOT_CALL, InodeReq(g))
            assert e.value.errno == errno.ENOSYS and "bare" in str(e.value)
            assert not any(x.calls["bare"] for x in links)
            await afr.settle()
            n.cancel_scope.cancel()

    trio.run(t)


def test_the_table_facts_are_consistent() -> None:
    aspects = {"data", "metadata", "entry"}
    for f in FOP_LIST:
        assert set(f.reads) <= aspects and set(f.changes) <= aspects and \
            set(f.creates) <= aspects, f.name
        assert not (f.reads and f.changes), f.name
        assert not f.cached or (f.inline and not f.modifies), f.name
        if f.object not in (None, "fd"):
            assert f.object in f.req.__dataclass_fields__, f.name
        if f.object == "fd":
            assert f.kind is Kind.FD, f.name
        for fld in (f.parent, f.newparent):
            assert fld is None or fld in f.req.__dataclass_fields__, f.name
