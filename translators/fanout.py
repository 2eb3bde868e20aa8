"""Fan-out with a nursery: the one mechanism cluster translators use to wind a fop to several
children at once (STYLE: each task records its own result; aggregation reads the list)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from .types import FopError


async def fan_out(n: int, idxs: Iterable[int], fn: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Run fn(i) for each i in `idxs` in parallel; -> a list of length n holding, at each index
    asked, the reply or the FopError it raised, and None elsewhere. Anything else raised
    propagates (a bug, not a child's answer)."""
    out: list[Any] = [None] * n
    idxs = list(idxs)

    async def one(i: int) -> None:
        try:
            out[i] = await fn(i)
        except FopError as e:
            out[i] = e

    if len(idxs) == 1:  # no nursery for a single child: saves a task per fop
        await one(idxs[0])
        return out
    async with trio.open_nursery() as nursery:
        for i in idxs:
            nursery.start_soon(one, i)
    return out
