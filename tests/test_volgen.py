"""Volfile generation (volmgr.volgen) and the `volume set` option table: pure, no I/O except
building the generated graphs with the real translator classes."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from translators.volfile import build, parse
from volmgr import volgen
from volmgr.errors import GvolError


def make_vol(tmp_path=None, n=2, options=None, name="vol1"):
    base = str(tmp_path) if tmp_path is not None else "/data"
    return {
        "name": name, "id": str(uuid.UUID(int=0x1234)), "version": 3, "type": "Distribute",
        "status": "Created", "transport": "tcp",
        "bricks": [{"host": "server1", "path": f"{base}/brick {i}" if i == 1 else f"{base}/b{i}",
                    "port": 49152 + i, "node": "n"} for i in range(n)],
        "options": dict(options or {}), "username": "user-x", "password": "pass-y",
    }


def by_name(specs):
    return {s.name: s for s in specs}


def test_client_volfile_shape():
    vol = make_vol(n=3)
    specs = parse(volgen.client_volfile(vol))
    assert [s.name for s in specs] == ["vol1-client-0", "vol1-client-1", "vol1-client-2",
                                       "vol1-dht", "vol1-create-behind", "vol1"]
    assert [s.type for s in specs] == ["protocol/client"] * 3 + [
        "cluster/dht", "performance/create-behind", "debug/io-stats"]
    s = by_name(specs)
    assert s["vol1-dht"].subvolumes == ["vol1-client-0", "vol1-client-1", "vol1-client-2"]
    assert s["vol1-create-behind"].subvolumes == ["vol1-dht"]
    assert s["vol1"].subvolumes == ["vol1-create-behind"]
    c1 = s["vol1-client-1"].options
    assert c1 == {"remote-host": "server1", "remote-port": "49153",
                  "remote-subvolume": "/data/brick 1", "volume-name": "vol1",
                  "volume-id": vol["id"], "username": "user-x", "password": "pass-y"}


def test_brick_volfile_shape():
    vol = make_vol()
    b = vol["bricks"][1]
    specs = parse(volgen.brick_volfile(vol, b))
    assert [(s.name, s.type) for s in specs] == [
        ("vol1-posix", "storage/posix"), ("vol1-locks", "features/locks"),
        ("/data/brick 1", "debug/io-stats"), ("vol1-server", "protocol/server")]
    s = by_name(specs)
    assert s["vol1-posix"].options == {"directory": "/data/brick 1", "volume-id": vol["id"]}
    assert s["vol1-locks"].subvolumes == ["vol1-posix"]
    assert s["/data/brick 1"].subvolumes == ["vol1-locks"]
    assert s["vol1-server"].subvolumes == ["/data/brick 1"]
    assert s["vol1-server"].options == {
        "listen-host": "0.0.0.0", "listen-port": "49153", "volume-name": "vol1",
        "volume-id": vol["id"], "brick-path": "/data/brick 1", "auth.allow": "*",
        "auth.username": "user-x", "auth.password": "pass-y"}
    # the client asks for the brick by the name of the graph under protocol/server
    client = by_name(parse(volgen.client_volfile(vol)))["vol1-client-1"]
    assert client.options["remote-subvolume"] == s["vol1-server"].subvolumes[0]


def test_file_names():
    vol = make_vol()
    files = volgen.generate(vol)
    assert set(files) == {"vol1.server1.data-b0.vol", "vol1.server1.data-brick 1.vol",
                          "vol1.tcp-fuse.vol"}
    assert files["vol1.tcp-fuse.vol"].startswith("# client volfile of volume vol1")


@pytest.mark.parametrize("key,value,xlator,where,option", [
    ("auth.allow", "10.0.0.*,127.0.0.1", "protocol/server", "brick", "auth.allow"),
    ("auth.reject", "192.168.1.1", "protocol/server", "brick", "auth.reject"),
    ("network.ping-timeout", "5", "protocol/client", "client", "ping-timeout"),
    ("storage.thread-count", "4", "storage/posix", "brick", "thread-count"),
    ("diagnostics.latency-measurement", "off", "debug/io-stats", "both", "latency-measurement"),
    ("cluster.lookup-optimize", "off", "cluster/dht", "client", "lookup-optimize"),
    ("cluster.min-free-disk", "5%", "cluster/dht", "client", "min-free-disk"),
    ("cluster.extra-hash-regex", r"^(.+)\.part$", "cluster/dht", "client", "extra-hash-regex"),
    ("diagnostics.count-fop-hits", "off", "debug/io-stats", "both", "count-fop-hits"),
    ("diagnostics.client-log-level", "ERROR", "debug/io-stats", "client", "log-level"),
    ("diagnostics.brick-log-level", "DEBUG", "debug/io-stats", "brick", "log-level"),
])
def test_set_options_land_where_they_belong(key, value, xlator, where, option):
    assert volgen.validate_option(key, value) == value
    vol = make_vol(options={key: value})
    client = [s for s in parse(volgen.client_volfile(vol)) if s.type == xlator]
    brick = [s for s in parse(volgen.brick_volfile(vol, vol["bricks"][0])) if s.type == xlator]
    in_client = [s.options.get(option) for s in client]
    in_brick = [s.options.get(option) for s in brick]
    if where in ("client", "both"):
        assert in_client and all(v == value for v in in_client)
    else:
        assert all(v is None for v in in_client)
    if where in ("brick", "both"):
        assert in_brick and all(v == value for v in in_brick)
    else:
        assert all(v is None for v in in_brick)


def test_daemon_option_is_not_in_volfiles():
    vol = make_vol(options={"brick.auto-restart": "off"})
    text = volgen.client_volfile(vol) + volgen.brick_volfile(vol, vol["bricks"][0])
    assert "auto-restart" not in text
    assert volgen.daemon_option(vol, "brick.auto-restart") is False
    assert volgen.daemon_option(make_vol(), "brick.auto-restart") is True


def test_validate_unknown_key_suggests_close_matches():
    with pytest.raises(GvolError, match=r"unknown option network\.ping-timout; did you mean "
                                        r"network\.ping-timeout"):
        volgen.validate_option("network.ping-timout", "3")
    with pytest.raises(GvolError, match="unknown option zzz"):
        volgen.validate_option("zzz", "3")


def test_validate_bad_values_use_the_translator_schema():
    with pytest.raises(GvolError, match="invalid value for brick.auto-restart: .*on/off"):
        volgen.validate_option("brick.auto-restart", "maybe")
    with pytest.raises(GvolError, match="invalid value for network.ping-timeout"):
        volgen.validate_option("network.ping-timeout", "soon")
    with pytest.raises(GvolError, match="invalid value for storage.thread-count.*(minimum|bad)"):
        volgen.validate_option("storage.thread-count", "0")


def test_get_values_and_defaults():
    vol = make_vol(options={"auth.allow": "10.*"})
    assert volgen.option_value(vol, "auth.allow") == ("10.*", "set")
    assert volgen.option_value(vol, "brick.auto-restart") == ("on", "default")


ALL = ("storage/posix", "features/locks", "debug/io-stats", "protocol/server",
       "protocol/client", "cluster/dht")


def test_generated_brick_volfile_builds(tmp_path):
    """Every option gvold writes exists in the translator's schema: the graph builds."""
    vol = make_vol(tmp_path, options={k: v for k, v in {
        "storage.thread-count": "4", "auth.allow": "127.0.0.1", "auth.reject": "10.0.0.1",
        "diagnostics.latency-measurement": "off"}.items()})
    for b in vol["bricks"]:
        top = build(volgen.brick_volfile(vol, b))
        assert top.type_name == "protocol/server"
        assert top.name == "vol1-server"


def test_generated_client_volfile_builds():
    opts = {"network.ping-timeout": "3", "diagnostics.latency-measurement": "off",
            "performance.create-behind-size": "65536", "cluster.lookup-optimize": "off",
            "cluster.min-free-disk": "5%"}
    vol = make_vol(n=3, options=opts)
    top = build(volgen.client_volfile(vol))
    assert top.type_name == "debug/io-stats"
    assert top.name == "vol1"
    cb = top.children[0]
    assert cb.type_name == "performance/create-behind" and cb.max_size == 65536
    assert [c.name for c in cb.children[0].children] == [
        "vol1-client-0", "vol1-client-1", "vol1-client-2"]


def test_every_key_sets_an_option_its_translator_has():
    """The table against the translators' own option tables: each key names a translator
    option that exists, and every value the table accepts builds a graph."""
    for key, o in volgen.OPTIONS.items():
        if o.scope == "daemon":
            assert o.xlator is None and o.schema is not None, key
            continue
        schema = volgen.schema_for(o.xlator)
        assert o.option in schema, f"{key}: {o.xlator} has no option {o.option}"
    assert set(volgen.available_options()) == set(volgen.OPTIONS)


def test_every_translator_option_is_read_by_its_translator():
    """No inert options: each option of each translator's table is used by the code of its
    module beyond the table itself (a choice of one value only refuses the others)."""
    import inspect
    import sys

    from translators import load_all
    from translators.xlator import REGISTRY

    load_all()
    for cls in set(REGISTRY.values()):
        src = inspect.getsource(sys.modules[cls.__module__])
        for name, opt in cls.options_schema.items():
            if opt.kind == "choice" and len(opt.choices) == 1:
                continue
            assert src.count(f'"{name}"') >= 2, f"{cls.type_name}: option {name} is read nowhere"


def test_documented_keys_are_the_table():
    """docs/volmgr.md's table of `volume set` keys names exactly the keys gvol accepts."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "volmgr.md").read_text()
    section = doc.split("## Volume options", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            documented |= set(re.findall(r"`([a-z-]+\.[a-z.-]+)`", first))
    # "`diagnostics.client-log-level` / `brick-log-level`" names the second key by its tail
    documented |= {"diagnostics.brick-log-level"} if "`brick-log-level`" in section else set()
    assert documented == set(volgen.OPTIONS)


def test_set_help_lists_every_key_from_the_translators_tables():
    rows = {r["key"]: r for r in volgen.option_help()}
    assert set(rows) == set(volgen.OPTIONS)
    for key, r in rows.items():
        o = volgen.OPTIONS[key]
        opt = o.schema if o.scope == "daemon" else volgen.schema_for(o.xlator)[o.option]
        assert r["type"] == opt.kind and r["description"], key
        assert r["default"] == volgen.option_value({"options": {}}, key)[0], key
    assert rows["storage.thread-count"]["range"] == "1 .. 1024"
    assert rows["storage.thread-count"]["default"] == "16"
    assert rows["cluster.read-policy"]["range"] == "gfid-hash | first"
    assert rows["cluster.heal-timeout"]["range"] == "5 .. inf"
    assert rows["auth.allow"]["where"] == "bricks"


def test_check_builds_catches_constructor_checks():
    volgen.check_builds(make_vol(options={"cluster.min-free-disk": "5%"}))
    with pytest.raises(GvolError, match="invalid value for cluster.min-free-disk"):
        volgen.check_builds(make_vol(options={"cluster.min-free-disk": "lots"}),
                            "cluster.min-free-disk")


@pytest.mark.parametrize("exc", [
    ModuleNotFoundError("No module named 'zstandard'", name="zstandard"),
    SyntaxError("invalid syntax"),
])
def test_a_translator_that_does_not_import_fails_loudly(monkeypatch, exc):
    """A missing dependency or a syntax error in a translator module is an error, not an
    option that quietly is "not available"."""
    import importlib

    from translators.xlator import REGISTRY

    real = importlib.import_module

    def broken(name, *a, **kw):
        if name == "translators.debug.io_stats":
            raise exc
        return real(name, *a, **kw)

    monkeypatch.setattr(importlib, "import_module", broken)
    monkeypatch.delitem(REGISTRY, "debug/io-stats")
    with pytest.raises(type(exc)):
        volgen.schema_for("debug/io-stats")
    with pytest.raises(type(exc)):
        volgen.validate_option("diagnostics.latency-measurement", "off")


def test_gvol_volume_set_help_prints_every_option():
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "volmgr.cli", "volume", "set", "help"]
    got = subprocess.run([*cmd, "--json"], cwd=root, capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == volgen.option_help()
    text = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    for key in volgen.OPTIONS:
        assert f"Option: {key}\n" in text.stdout
    assert "Default Value: 16\nType: int, range 1 .. 1024" in text.stdout
    bad = subprocess.run(cmd[:-1] + ["vol1"], cwd=root, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "gvol volume set help" in bad.stderr
