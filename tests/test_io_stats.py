"""debug/io-stats options do what they say: latency-measurement times fops, count-fop-hits
counts them, both off pass fops untouched, log-level sets the level of the translator logs."""
from __future__ import annotations

import errno
import logging
from typing import Any

import pytest
import trio

from translators.debug.io_stats import IoStats
from translators.fops import AttrRep, InodeReq
from translators.types import ROOT_CALL, FopError, Iatt
from translators.xlator import GraphError, Translator


class Leaf(Translator):
    """stat answers, anything else fails."""
    min_children = 0
    max_children = 0

    async def handle(self, fop: Any, call: Any, req: Any) -> Any:
        if fop.name == "stat":
            return AttrRep(Iatt(req.gfid, 0o100644, 1, 0, 0, 0, 0, 0, 4096, 0, 0, 0))
        raise FopError(errno.EIO, "no")


async def _calls(stats: IoStats) -> None:
    g = b"\x01" * 16
    await stats.stat(ROOT_CALL, InodeReq(g))
    await stats.stat(ROOT_CALL, InodeReq(g))
    with pytest.raises(FopError):
        await stats.readlink(ROOT_CALL, InodeReq(g))


@pytest.mark.parametrize("latency, count, want", [
    ("on", "on", {"stat": (2, 0, True), "readlink": (1, 1, True)}),
    ("on", "off", {"stat": (2, 0, True), "readlink": (1, 1, True)}),
    ("off", "on", {"stat": (2, 0, False), "readlink": (1, 1, False)}),
    ("off", "off", {}),
])
def test_counting_and_timing_follow_the_options(latency: str, count: str, want: dict) -> None:
    stats = IoStats("s", {"latency-measurement": latency, "count-fop-hits": count}, [Leaf("l")])
    trio.run(_calls, stats)
    snap = stats.snapshot()
    assert set(snap) == set(want)
    for fop, (calls, errors, timed) in want.items():
        assert snap[fop]["calls"] == calls and snap[fop]["errors"] == errors
        assert (stats.stats[fop].max_ns > 0) == timed


def test_log_level_sets_the_translator_logs_when_the_graph_starts() -> None:
    logger = logging.getLogger("translators")
    before = logger.level
    try:
        logger.setLevel(logging.INFO)
        stats = IoStats("s", {"log-level": "ERROR"}, [Leaf("l")])
        assert logging.getLogger("translators.cluster.afr").isEnabledFor(logging.WARNING)

        async def start() -> None:
            async with trio.open_nursery() as n:
                await stats.init(n)

        trio.run(start)
        assert not logging.getLogger("translators.cluster.afr").isEnabledFor(logging.WARNING)
        assert logging.getLogger("translators.cluster.afr").isEnabledFor(logging.ERROR)
        trio.run(IoStats("t", {"log-level": "NONE"}, [Leaf("l")]).init, None)
        assert not logging.getLogger("translators.storage.posix").isEnabledFor(logging.CRITICAL)
    finally:
        logger.setLevel(before)
    with pytest.raises(GraphError, match="log-level"):
        IoStats("s", {"log-level": "LOUD"}, [Leaf("l")])
