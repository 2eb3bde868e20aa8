"""The translator base class, typed options, the type registry and graph events.

Every translator has the same async method per fop, generated from the fop table:

    async def <fop>(self, call: Call, req) -> reply      # failure: raise FopError(errno)

By default each of them calls `self.handle(fop, call, req)`, whose default passes the call to the
first child. So a translator overrides only the fops it changes (storage/posix, dht), or only
`handle` (protocol/client, debug/io-stats) to treat every fop alike.
"""
from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import trio

from .fops import FOP_LIST, Fop
from .types import Call

log = logging.getLogger(__name__)


class Event(enum.Enum):
    CHILD_UP = "child-up"
    CHILD_DOWN = "child-down"


class GraphError(ValueError):
    """A volfile or option is wrong; raised while the graph is built, never later."""


# ---------------------------------------------------------------- options
_TRUE = {"on", "yes", "true", "enable", "1"}
_FALSE = {"off", "no", "false", "disable", "0"}


def parse_bool(v: str) -> bool:
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"expected on/off, got {v!r}")


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}


def parse_size(v: str) -> int:
    s = str(v).strip().lower()
    num = s.rstrip("kmgtb")
    unit = s[len(num):]
    if unit not in _SIZE_UNITS or not num:
        raise ValueError(f"expected a size such as 4096, 64KB or 1MB, got {v!r}")
    return int(float(num) * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class Option:
    """One typed option of a translator: kind is int, float, bool, str, size, list or choice."""

    kind: str = "str"
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def parse(self, key: str, raw: Any) -> Any:
        try:
            if self.kind == "int":
                val: Any = int(raw)
            elif self.kind == "float":
                val = float(raw)
            elif self.kind == "bool":
                val = raw if isinstance(raw, bool) else parse_bool(raw)
            elif self.kind == "size":
                val = raw if isinstance(raw, int) else parse_size(raw)
            elif self.kind == "list":
                val = raw if isinstance(raw, (list, tuple)) else [
                    x for x in str(raw).replace(",", " ").split() if x]
            elif self.kind == "choice":
                val = str(raw)
                if val not in self.choices:
                    raise ValueError(f"expected one of {', '.join(self.choices)}")
            else:
                val = str(raw)
        except ValueError as e:
            raise GraphError(f"option {key}: bad value {raw!r}: {e}") from None
        if self.min is not None and val < self.min:
            raise GraphError(f"option {key}: {raw!r} is below the minimum {self.min}")
        if self.max is not None and val > self.max:
            raise GraphError(f"option {key}: {raw!r} is above the maximum {self.max}")
        return val


# ---------------------------------------------------------------- registry
REGISTRY: dict[str, type[Translator]] = {}


def register(type_name: str) -> Callable[[type[Translator]], type[Translator]]:
    """Class decorator: make a translator available to volfiles as `type <type_name>`."""

    def deco(cls: type[Translator]) -> type[Translator]:
        cls.type_name = type_name
        REGISTRY[type_name] = cls
        return cls

    return deco


def _import_conventional(type_name: str) -> None:
    """Import the module that conventionally defines `type_name` (cluster/dht ->
    translators.cluster.dht, debug/io-stats -> translators.debug.io_stats), so that building a
    graph does not depend on every other translator module importing cleanly."""
    import importlib

    from . import CATEGORIES

    cat, _, name = type_name.partition("/")
    if cat not in CATEGORIES or not name.replace("-", "_").isidentifier():
        return
    modname = f"{__package__}.{cat}.{name.replace('-', '_')}"
    try:
        importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name != modname:
            raise


def lookup_type(type_name: str) -> type[Translator]:
    if type_name not in REGISTRY:
        # translator modules register themselves on import
        _import_conventional(type_name)
    if type_name not in REGISTRY:
        from . import load_all
        load_all()
    try:
        return REGISTRY[type_name]
    except KeyError:
        raise GraphError(f"unknown translator type {type_name!r}; known: "
                         f"{', '.join(sorted(REGISTRY))}") from None


# ---------------------------------------------------------------- base class
class Translator:
    type_name: ClassVar[str] = "base"
    options_schema: ClassVar[dict[str, Option]] = {}
    min_children: ClassVar[int] = 1
    max_children: ClassVar[int | None] = 1

    def __init__(self, name: str, options: dict[str, Any] | None = None,
                 children: list[Translator] | None = None) -> None:
        self.name = name
        self.children: list[Translator] = list(children or [])
        self.parents: list[Translator] = []
        for c in self.children:
            c.parents.append(self)
        n = len(self.children)
        if n < self.min_children or (self.max_children is not None and n > self.max_children):
            top = "N" if self.max_children is None else self.max_children
            want = (f"{self.min_children}" if self.max_children == self.min_children
                    else f"{self.min_children}..{top}")
            raise GraphError(f"volume {name} ({self.type_name}) takes {want} subvolumes, got {n}")
        self.raw_options = dict(options or {})
        self.opts: dict[str, Any] = self.parse_options(self.raw_options)

    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> dict[str, Any]:
        schema = cls.options_schema
        unknown = set(raw) - set(schema)
        if unknown:
            raise GraphError(f"{cls.type_name}: unknown option(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(schema)) or 'none'}")
        out = {k: o.default for k, o in schema.items()}
        for k, v in raw.items():
            out[k] = schema[k].parse(k, v)
        return out

    # -- lifecycle: the graph calls init bottom-up and fini top-down
    async def init(self, nursery: trio.Nursery) -> None:
        """Start whatever the translator needs; long-running tasks (connections, timers)
        go into `nursery`, which outlives the graph's fops."""

    async def fini(self) -> None:
        """Release what init acquired."""

    async def notify(self, event: Event, child: Translator | None) -> None:
        """A child went up or down. Default: tell the parents."""
        for p in self.parents:
            await p.notify(event, self)

    @property
    def first_child(self) -> Translator:
        return self.children[0]

    def walk(self):
        """This translator and everything below it, each once, bottom-up."""
        seen: set[int] = set()
        order: list[Translator] = []

        def visit(x: Translator) -> None:
            if id(x) in seen:
                return
            seen.add(id(x))
            for c in x.children:
                visit(c)
            order.append(x)

        visit(self)
        return order

    async def handle(self, fop: Fop, call: Call, req: Any) -> Any:
        """Every fop this translator does not override arrives here. Default: wind to the
        first child."""
        return await getattr(self.children[0], fop.name)(call, req)

    def __repr__(self) -> str:
        return f"<{self.type_name} {self.name}>"


def _make_default(fop: Fop):
    async def default(self: Translator, call: Call, req: Any) -> Any:
        return await self.handle(fop, call, req)

    default.__name__ = fop.name
    default.__qualname__ = f"Translator.{fop.name}"
    default.__doc__ = f"{fop.name}({fop.req.__name__}) -> {fop.rep.__name__}; default: self.handle"
    return default


def install_fops(cls: type[Translator], table: tuple[Fop, ...] = FOP_LIST) -> list[str]:
    """Give `cls` the default method of every fop of `table` that it has none for (the base
    class gets all of FOP_LIST here); -> the names added. A test that adds a fop to a copy of
    the table installs it with this and removes the names again afterwards."""
    added = []
    for fop in table:
        if not hasattr(cls, fop.name):
            setattr(cls, fop.name, _make_default(fop))
            added.append(fop.name)
    return added


install_fops(Translator)
