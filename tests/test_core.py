"""The translator core: fop table, pass-through defaults, typed options, volfile grammar."""
from __future__ import annotations

import errno

import pytest
import trio

from translators import fops, volfile
from translators.fops import FOP_LIST, FOPS, AttrRep, InodeReq
from translators.types import ROOT_CALL, ROOT_GFID, FopError, Iatt, gfid_to_ino
from translators.xlator import (
    REGISTRY,
    GraphError,
    Option,
    Translator,
    lookup_type,
    parse_size,
    register,
)

IATT = Iatt(ROOT_GFID, 0o40755, 2, 0, 0, 0, 4096, 8, 4096, 1, 2, 3)


@register("test/recorder")
class Recorder(Translator):
    """A leaf that answers every fop by recording it (unit-test stand-in for a brick)."""

    min_children = 0
    max_children = 0
    options_schema = {"fail-with": Option("int", 0)}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: list[str] = []

    async def handle(self, fop, call, req):
        self.seen.append(fop.name)
        if self.opts["fail-with"]:
            raise FopError(self.opts["fail-with"], f"{fop.name} refused")
        return AttrRep(IATT)


@register("test/stat-only")
class StatOnly(Translator):
    """Overrides one fop; every other one must pass through to the child untouched."""

    async def stat(self, call, req):
        rep = await self.first_child.stat(call, req)
        return AttrRep(Iatt(*[*rep.iatt.to_wire()[:6], 42, *rep.iatt.to_wire()[7:]]))


def test_fop_table_is_consistent():
    assert len({f.opcode for f in FOP_LIST}) == len(FOP_LIST)
    for f in FOP_LIST:
        assert FOPS[f.name] is f
        assert callable(getattr(Translator, f.name))
        for bulk, cls in ((f.req_bulk, f.req), (f.rep_bulk, f.rep)):
            if bulk:
                assert bulk in cls.__dataclass_fields__
    required = {"lookup", "stat", "fstat", "setattr", "fsetattr", "access", "readlink", "mknod",
                "mkdir", "unlink", "rmdir", "symlink", "rename", "link", "create", "open", "read",
                "write", "flush", "fsync", "release", "opendir", "readdir", "releasedir",
                "fsyncdir", "statfs", "setxattr", "getxattr", "listxattr", "removexattr",
                "fgetxattr", "fsetxattr", "truncate", "ftruncate", "fallocate", "discard",
                "zerofill", "seek", "lk", "inodelk", "entrylk", "xattrop", "rchecksum"}
    assert required <= set(FOPS)


def test_every_fop_passes_through_by_default():
    top = volfile.build("""
volume leaf
    type test/recorder
end-volume
volume mid
    type test/stat-only
    subvolumes leaf
end-volume
""")
    leaf = top.first_child

    async def main():
        for f in FOP_LIST:
            rep = await getattr(top, f.name)(ROOT_CALL, None)
            assert isinstance(rep, AttrRep)
        rep = await top.stat(ROOT_CALL, InodeReq(ROOT_GFID))
        assert rep.iatt.size == 42

    trio.run(main)
    assert leaf.seen[: len(FOP_LIST)] == [f.name for f in FOP_LIST]


def test_errors_propagate_as_foperror():
    top = volfile.build("volume leaf\n type test/recorder\n option fail-with 2\nend-volume\n"
                        "volume s\n type debug/io-stats\n subvolumes leaf\nend-volume\n")

    async def main():
        with pytest.raises(FopError) as e:
            await top.lookup(ROOT_CALL, fops.LookupReq(ROOT_GFID, b"x"))
        assert e.value.errno == errno.ENOENT

    trio.run(main)
    stats = top.snapshot()
    assert stats["lookup"]["calls"] == 1 and stats["lookup"]["errors"] == 1


def test_volfile_roundtrip_and_quoting():
    text = """# a comment
volume a
    type test/recorder
    option fail-with "0"
end-volume
volume top   # trailing comment
    type debug/io-stats
    option log-level "WARNING"
    subvolumes a
end-volume
"""
    specs = volfile.parse(text)
    assert [s.name for s in specs] == ["a", "top"]
    assert specs[1].subvolumes == ["a"] and specs[1].options == {"log-level": "WARNING"}
    specs[0].options["odd value"] = 'has "quotes" and spaces'
    again = volfile.parse(volfile.dump(specs))
    assert again == specs


@pytest.mark.parametrize("text, msg", [
    ("volume a\n type test/recorder\nend-volume\nvolume a\n type test/recorder\nend-volume\n",
     "defined twice"),
    ("volume a\n type test/recorder\n subvolumes b\nend-volume\n", "not defined"),
    ("volume a\n type test/recorder\n subvolumes a\nend-volume\n", "lists itself"),
    ("volume a\n option x y\nend-volume\n", "has no type"),
    ("volume a\n type test/recorder\n", "not closed"),
    ("option x y\n", "outside a volume"),
    ("", "no volumes"),
    ("volume a\n type test/recorder\n bogus line\nend-volume\n", "unknown keyword"),
])
def test_volfile_errors(text, msg):
    with pytest.raises(GraphError, match=msg):
        volfile.parse(text)


def test_build_errors_name_the_volume():
    with pytest.raises(GraphError, match="unknown translator type"):
        volfile.build("volume a\n type no/such\nend-volume\n")
    with pytest.raises(GraphError, match=r"volume a: .*unknown option"):
        volfile.build("volume a\n type test/recorder\n option nope 1\nend-volume\n")
    with pytest.raises(GraphError, match=r"bad value"):
        volfile.build("volume a\n type test/recorder\n option fail-with lots\nend-volume\n")
    with pytest.raises(GraphError, match="takes 1 subvolumes, got 0"):
        volfile.build("volume a\n type debug/io-stats\nend-volume\n")


def test_option_kinds():
    assert Option("bool").parse("k", "on") is True
    assert Option("bool").parse("k", "disable") is False
    assert Option("size").parse("k", "64KB") == 65536
    assert parse_size("1MB") == 1 << 20
    assert Option("list").parse("k", "a, b c") == ["a", "b", "c"]
    assert Option("choice", choices=("x", "y")).parse("k", "y") == "y"
    with pytest.raises(GraphError, match="above the maximum"):
        Option("int", max=10).parse("k", "11")
    with pytest.raises(GraphError, match="expected one of"):
        Option("choice", choices=("x",)).parse("k", "z")


def test_registry_loads_every_category():
    lookup_type("debug/io-stats")
    for needed in ("storage/posix", "features/locks", "protocol/client", "protocol/server",
                   "cluster/dht"):
        assert needed in REGISTRY or lookup_type(needed)


def test_gfid_to_ino_is_stable():
    assert gfid_to_ino(ROOT_GFID) == 1
    g = bytes(range(16))
    assert gfid_to_ino(g) == int.from_bytes(g[8:], "big")
