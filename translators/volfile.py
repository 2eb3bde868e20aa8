"""Volfiles in GlusterFS's grammar: parse, write, and build a translator graph from one.

    volume NAME
        type CATEGORY/NAME
        option KEY VALUE
        subvolumes A B ...
    end-volume

The last volume defined is the top of the graph. Unlike GlusterFS, an undefined subvolume, a
self reference, a duplicate name or an unknown type is a hard error that names the line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import trio

from .xlator import GraphError, Translator, lookup_type


@dataclass
class VolumeSpec:
    name: str
    type: str
    options: dict[str, str] = field(default_factory=dict)
    subvolumes: list[str] = field(default_factory=list)


_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s"\\]+)')


def _tokens(line: str, lineno: int) -> list[str]:
    out: list[str] = []
    pos = 0
    line = line.strip()
    while pos < len(line):
        if line[pos].isspace():
            pos += 1
            continue
        if line[pos] == "#":
            break
        m = _TOKEN.match(line, pos)
        if not m:
            raise GraphError(f"volfile line {lineno}: cannot parse {line[pos:]!r}")
        if m.group(1) is not None:
            out.append(re.sub(r"\\(.)", r"\1", m.group(1)))
        else:
            out.append(m.group(2))
        pos = m.end()
    return out


def parse(text: str) -> list[VolumeSpec]:
    """Parse volfile text into volume specs, in definition order (last = top)."""
    specs: list[VolumeSpec] = []
    names: set[str] = set()
    cur: VolumeSpec | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        toks = _tokens(raw, lineno)
        if not toks:
            continue
        kw, args = toks[0], toks[1:]
        if kw == "volume":
            if cur is not None:
                raise GraphError(f"volfile line {lineno}: 'volume' inside volume {cur.name} "
                                 "(missing end-volume)")
            if len(args) != 1:
                raise GraphError(f"volfile line {lineno}: 'volume' takes one name")
            if args[0] in names:
                raise GraphError(f"volfile line {lineno}: volume {args[0]} defined twice")
            cur = VolumeSpec(args[0], "")
        elif cur is None:
            raise GraphError(f"volfile line {lineno}: {kw!r} outside a volume block")
        elif kw == "type":
            if len(args) != 1:
                raise GraphError(f"volfile line {lineno}: 'type' takes one value")
            cur.type = args[0]
        elif kw == "option":
            if len(args) != 2:
                raise GraphError(f"volfile line {lineno}: 'option' takes a key and a value")
            cur.options[args[0]] = args[1]
        elif kw == "subvolumes":
            for s in args:
                if s == cur.name:
                    raise GraphError(f"volfile line {lineno}: volume {s} lists itself")
                if s not in names:
                    raise GraphError(f"volfile line {lineno}: subvolume {s} is not defined "
                                     "before volume " + cur.name)
            cur.subvolumes = list(args)
        elif kw == "end-volume":
            if not cur.type:
                raise GraphError(f"volfile line {lineno}: volume {cur.name} has no type")
            specs.append(cur)
            names.add(cur.name)
            cur = None
        else:
            raise GraphError(f"volfile line {lineno}: unknown keyword {kw!r}")
    if cur is not None:
        raise GraphError(f"volfile: volume {cur.name} is not closed by end-volume")
    if not specs:
        raise GraphError("volfile: no volumes defined")
    return specs


def _quote(v: str) -> str:
    v = str(v)
    if v and not re.search(r'[\s"\\#]', v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump(specs: list[VolumeSpec]) -> str:
    """Write specs as volfile text (the inverse of parse)."""
    out: list[str] = []
    for s in specs:
        out.append(f"volume {_quote(s.name)}")
        out.append(f"    type {s.type}")
        for k, v in s.options.items():
            out.append(f"    option {_quote(k)} {_quote(v)}")
        if s.subvolumes:
            out.append("    subvolumes " + " ".join(_quote(x) for x in s.subvolumes))
        out.append("end-volume")
        out.append("")
    return "\n".join(out)


def build(specs: list[VolumeSpec] | str) -> Translator:
    """Instantiate the graph; returns the top translator. Option errors surface here."""
    if isinstance(specs, str):
        specs = parse(specs)
    made: dict[str, Translator] = {}
    for s in specs:
        cls = lookup_type(s.type)
        try:
            made[s.name] = cls(s.name, s.options, [made[c] for c in s.subvolumes])
        except GraphError as e:
            raise GraphError(f"volume {s.name}: {e}") from None
    return made[specs[-1].name]


async def init_graph(top: Translator, nursery: trio.Nursery) -> None:
    """Initialise bottom-up; background tasks of the translators run in `nursery`."""
    for x in top.walk():
        await x.init(nursery)


async def fini_graph(top: Translator) -> None:
    for x in reversed(top.walk()):
        await x.fini()
