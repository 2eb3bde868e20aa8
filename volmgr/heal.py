"""gvold's self-heal daemon (GlusterFS's glustershd) and the `gvol volume heal` commands.

For every started replicated volume gvold crawls the bricks' heal indices
(translators/cluster/afr_heal.py: `index_heal`):
  * every `cluster.heal-timeout` seconds (default 600),
  * soon after one of the volume's bricks started (what it missed is listed on the others),
  * when `gvol volume heal VOL` asks; `gvol volume heal VOL full` walks the whole tree.
One crawl per volume at a time; a request during a crawl queues one more (a full crawl wins over
an index crawl). The indices are the crawl's state: a crawl cut short by a restart of gvold or of
a brick simply finds what is left next time. `cluster.self-heal-daemon off` stops the automatic
crawls (the commands still work).

Each crawl (and each `heal info`) builds the volume's client graph from the client volfile gvold
serves, waits a little for the bricks to connect, runs, and disconnects again: the daemon holds
no connection while idle.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from translators.cluster import afr_heal
from translators.errgroups import collapsed
from translators.types import FopError
from translators.volfile import build, fini_graph, init_graph
from translators.xlator import GraphError

from . import volgen
from .errors import GvolError

log = logging.getLogger("gvold.heal")

CONNECT_WAIT = 5.0  # seconds a crawl waits for the bricks to connect
AFTER_BRICK_START = 2.0  # a brick started: crawl this much later


@dataclass
class VolHeal:
    """Heal state of one volume, for `heal VOL statistics` and the scheduler."""
    running: str = ""  # "index" / "full" while a crawl runs
    queued: str = ""  # the crawl to run next
    not_before: float = 0.0  # trio time before which the queued crawl waits
    next_periodic: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)  # the last finished crawl
    progress: dict[str, Any] = field(default_factory=dict)


def is_replicated(vol: dict[str, Any]) -> bool:
    return int(vol.get("replica", 1) or 1) > 1


class HealDaemon:
    def __init__(self, volumes: Callable[[], dict[str, dict[str, Any]]],
                 get_vol: Callable[[str], dict[str, Any]]) -> None:
        """`volumes()`: gvold's volumes by name, now; `get_vol(name)`: one of them, or a
        GvolError naming what is wrong (no such volume)."""
        self.volumes = volumes
        self.get_vol = get_vol
        self.vols: dict[str, VolHeal] = {}
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()

    # ------------------------------------------------------------ the client graph
    @asynccontextmanager
    async def graph(self, vol: dict[str, Any]):
        """The volume's client graph, initialised, bricks given CONNECT_WAIT to connect."""
        try:
            top = build(volgen.client_volfile(vol))
        except GraphError as e:
            raise GvolError(f"volume {vol['name']}: cannot build its client graph: {e}") \
                from None
        with collapsed():
            async with trio.open_nursery() as nursery:
                await init_graph(top, nursery)
                clients = [x for x in top.walk() if hasattr(x, "wait_connected")]
                with trio.move_on_after(CONNECT_WAIT):
                    async with trio.open_nursery() as n:
                        for c in clients:
                            n.start_soon(c.wait_connected, CONNECT_WAIT)
                try:
                    yield top
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):
                        for afr in afr_heal.replicas(top):
                            await afr.settle()
                        await fini_graph(top)
                    nursery.cancel_scope.cancel()

    def _replicated(self, name: str) -> dict[str, Any]:
        vol = self.get_vol(name)
        if not is_replicated(vol):
            raise GvolError(f"volume {name} is not a replicate volume")
        if vol["status"] != "Started":
            raise GvolError(f"volume {name} is not started")
        return vol

    async def with_graph(self, name: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        vol = self._replicated(name)
        async with self.graph(vol) as top:
            try:
                return await fn(top)
            except FopError as e:
                raise GvolError(f"volume {name}: {e}") from None

    # ------------------------------------------------------------ scheduling
    def state(self, name: str) -> VolHeal:
        st = self.vols.get(name)
        if st is None:
            st = self.vols[name] = VolHeal()
        return st

    def trigger(self, name: str, full: bool = False, delay: float = 0.0) -> VolHeal:
        st = self.state(name)
        if st.queued != "full":
            st.queued = "full" if full else "index"
        st.not_before = trio.current_time() + delay
        self._wake.set()
        return st

    def brick_started(self, name: str) -> None:
        """gvold started a brick of `name`: crawl soon (the others list what it missed)."""
        vol = self.volumes().get(name)
        if vol is not None and is_replicated(vol) and self._auto(vol):
            self.trigger(name, delay=AFTER_BRICK_START)

    def _auto(self, vol: dict[str, Any]) -> bool:
        return bool(volgen.daemon_option(vol, "cluster.self-heal-daemon"))

    async def run(self) -> None:
        """The scheduler: periodic index crawls, and the crawls asked for; one per volume."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                now = trio.current_time()
                for name, vol in list(self.volumes().items()):
                    if vol["status"] != "Started" or not is_replicated(vol):
                        continue
                    st = self.state(name)
                    if self._auto(vol):
                        period = float(volgen.daemon_option(vol, "cluster.heal-timeout"))
                        if not st.next_periodic:
                            st.next_periodic = now + period
                        elif now >= st.next_periodic:
                            st.next_periodic = now + period
                            if not st.queued:
                                st.queued, st.not_before = "index", now
                    if st.queued and not st.running and now >= st.not_before:
                        st.running, st.queued = st.queued, ""
                        nursery.start_soon(self._crawl, name, st.running)
                self._wake = trio.Event()
                with trio.move_on_after(1.0):
                    await self._wake.wait()

    async def _crawl(self, name: str, kind: str) -> None:
        st = self.state(name)
        t0 = time.time()
        st.progress = {"crawl": kind, "started": t0}
        try:
            vol = self.volumes().get(name)
            if vol is None or vol["status"] != "Started":
                return

            async def go(top: Any) -> Any:
                def cb(setname: str, s: afr_heal.HealStats) -> None:
                    st.progress = {"crawl": kind, "started": t0, "replica_set": setname,
                                   **s.as_dict()}
                return await afr_heal.heal_volume(top, full=kind == "full", progress=cb)

            res = await self.with_graph(name, go)
            total = {k: sum(getattr(s, k) for s in res.values())
                     for k in ("scanned", "healed", "split_brain", "failed", "remaining")}
            st.last = {"crawl": kind, "started": t0, "finished": time.time(), **total,
                       "replica_sets": {k: v.as_dict() for k, v in res.items()}}
            if total["healed"] or total["split_brain"] or total["failed"]:
                log.info("volume %s: %s heal: %d healed, %d in split-brain, %d failed, %d left",
                         name, kind, total["healed"], total["split_brain"], total["failed"],
                         total["remaining"])
        except GvolError as e:
            st.last = {"crawl": kind, "started": t0, "finished": time.time(), "error": str(e)}
            log.warning("volume %s: %s heal failed: %s", name, kind, e)
        except Exception as e:  # the daemon must survive a bad crawl
            st.last = {"crawl": kind, "started": t0, "finished": time.time(), "error": str(e)}
            log.exception("volume %s: %s heal failed", name, kind)
        finally:
            st.running = ""
            st.progress = {}
            self._wake.set()

    # ------------------------------------------------------------ commands
    async def cmd_heal(self, args: dict[str, Any]) -> Any:
        """heal VOL [full]: start a crawl now (returns at once; see heal VOL info)."""
        name = str(args.get("name") or "")
        self._replicated(name)
        full = bool(args.get("full"))
        if self._nursery is None:
            raise GvolError("the self-heal daemon is not running")
        self.trigger(name, full=full)
        return {"name": name, "crawl": "full" if full else "index"}

    async def cmd_info(self, args: dict[str, Any]) -> Any:
        """heal VOL info [summary|split-brain|statistics]."""
        name = str(args.get("name") or "")
        what = str(args.get("what") or "info")
        if what == "statistics":
            self._replicated(name)
            st = self.state(name)
            return {"name": name, "running": st.running, "queued": st.queued,
                    "progress": st.progress, "last": st.last}
        vol = self._replicated(name)
        where = {volgen.client_xlator_name(vol, i): f"{b['host']}:{b['path']}"
                 for i, b in enumerate(vol["bricks"])}
        if what == "split-brain":
            sets = await self.with_graph(name, lambda top: afr_heal.volume_heal_info(
                top, split_brain_only=True))
            for s in sets:
                for e in s["split_brain"]:
                    e["bricks"] = [where.get(b, b) for b in e["bricks"]]
            return {"name": name, "what": what, "replica_sets": sets}
        sets = await self.with_graph(name, afr_heal.volume_heal_info)
        for s in sets:
            for b in s["bricks"]:
                b["client"] = b["brick"]
                b["brick"] = where.get(b["brick"], b["brick"])
        if what == "summary":
            return {"name": name, "what": what,
                    "replica_sets": [{"replica_set": s["replica_set"],
                                      "bricks": afr_heal.summary(s)} for s in sets]}
        return {"name": name, "what": "info", "replica_sets": sets}

    async def cmd_split_brain(self, args: dict[str, Any]) -> Any:
        """heal VOL split-brain bigger-file FILE | latest-mtime FILE |
        source-brick HOST:BRICK [FILE]."""
        name = str(args.get("name") or "")
        vol = self._replicated(name)
        policy = str(args.get("policy") or "")
        path = args.get("file")
        brick = args.get("brick")
        if policy not in afr_heal.POLICIES:
            raise GvolError(f"split-brain policy must be one of {', '.join(afr_heal.POLICIES)}")
        if policy != "source-brick" and not path:
            raise GvolError(f"{policy} needs a file (a path from the volume root, or "
                            "gfid:<uuid>)")
        client_name = None
        if policy == "source-brick":
            if not brick:
                raise GvolError("source-brick needs HOST:BRICK")
            for i, b in enumerate(vol["bricks"]):
                if f"{b['host']}:{b['path']}" == brick or \
                        f"{b['host']}:{b['path'].rstrip('/')}" == brick.rstrip("/"):
                    client_name = volgen.client_xlator_name(vol, i)
            if client_name is None:
                raise GvolError(f"{brick} is not a brick of volume {name}")

        async def go(top: Any) -> Any:
            afrs = afr_heal.replicas(top)
            out = []
            if client_name is not None:
                afr, idx = afr_heal.find_brick(afrs, client_name)
                if not path:
                    for r in await afr_heal.resolve_with_brick(afr, idx):
                        out.append(_res(r))
                    return out
                return [_res(await afr_heal.resolve_split_brain(afr, path, policy, idx))]
            # the file lives in one replica set: try them in turn
            errs = []
            for afr in afrs:
                try:
                    return [_res(await afr_heal.resolve_split_brain(afr, path, policy))]
                except FopError as e:
                    errs.append(e)
            raise errs[0] if errs else GvolError("no replica set")

        res = await self.with_graph(name, go)
        return {"name": name, "policy": policy, "file": path, "brick": brick, "resolved": res}


def _res(r: afr_heal.HealResult) -> dict[str, Any]:
    from translators.types import gfid_str
    return {"gfid": gfid_str(r.gfid), "healed": r.healed, "split_brain": r.split_brain,
            "skipped": r.skipped}
