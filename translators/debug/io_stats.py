"""debug/io-stats: per-fop call counts, error counts and latencies, for every fop in the table."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ..fops import FOP_LIST, Fop
from ..types import Call
from ..xlator import Option, Translator, register

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FopStats:
    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    min_ns: int = 0
    max_ns: int = 0

    def add(self, ns: int, failed: bool) -> None:
        self.calls += 1
        self.errors += failed
        self.total_ns += ns
        if self.calls == 1 or ns < self.min_ns:
            self.min_ns = ns
        if ns > self.max_ns:
            self.max_ns = ns

    def as_dict(self) -> dict[str, Any]:
        avg = self.total_ns / self.calls if self.calls else 0
        return {"calls": self.calls, "errors": self.errors, "avg_us": round(avg / 1000, 1),
                "min_us": round(self.min_ns / 1000, 1), "max_us": round(self.max_ns / 1000, 1)}


_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL, "NONE": logging.CRITICAL + 10}


@register("debug/io-stats")
class IoStats(Translator):
    options_schema = {
        "latency-measurement": Option("bool", True, doc="time every fop (counting it too: an "
                                      "average needs the count)"),
        "count-fop-hits": Option("bool", True, doc="count the calls and errors of every fop; "
                                 "with latency-measurement off as well, fops pass untouched"),
        "log-level": Option("choice", "", choices=("", *_LEVELS),
                            doc="level of the translator logs of the process that runs this "
                            "graph (a brick, a mount), set when the graph starts; empty: the "
                            "process's own"),
    }

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.stats: dict[str, FopStats] = {f.name: FopStats() for f in FOP_LIST}
        self._timed = self.opts["latency-measurement"]
        self._counted = self.opts["count-fop-hits"]

    async def init(self, nursery: Any) -> None:
        level = self.opts["log-level"]
        if level:
            logging.getLogger("translators").setLevel(_LEVELS[level])
            log.info("%s: translator log level %s", self.name, level)

    async def handle(self, fop: Fop, call: Call, req: Any) -> Any:
        child = getattr(self.children[0], fop.name)
        if not self._timed:
            if not self._counted:
                return await child(call, req)
            st = self.stats[fop.name]
            st.calls += 1
            try:
                return await child(call, req)
            except BaseException:
                st.errors += 1
                raise
        t0 = time.perf_counter_ns()
        failed = True
        try:
            rep = await child(call, req)
            failed = False
            return rep
        finally:
            self.stats[fop.name].add(time.perf_counter_ns() - t0, failed)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Stats of the fops that were called, by name."""
        return {k: v.as_dict() for k, v in self.stats.items() if v.calls}

    def reset(self) -> None:
        for v in self.stats.values():
            v.__init__()

