"""A bounded mapping with least-recently-used eviction, shared by the cluster translators."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any


class LRU(OrderedDict):
    """A bounded dict; `get` refreshes recency, `put` evicts the least recently used."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        try:
            self.move_to_end(key)
        except KeyError:
            return default
        return self[key]

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)
