"""Replicated volumes through gvold: the create grammar, the generated volfiles, info/status
showing the replica sets, and the heal commands and heal daemon against real brick processes
(the client side runs in this process from the volfile gvold serves; the FUSE-level scenarios
are in the end-to-end suite)."""
from __future__ import annotations

import errno
import json
import os
import signal
import uuid
from pathlib import Path

import pytest
import trio
from afrenv import FS, changelog, tree

from gvolenv import GvolNode
from translators.cluster import afr_heal
from translators.cluster.afr import Replicate
from translators.types import FopError
from translators.volfile import build, fini_graph, init_graph, parse
from volmgr import volgen
from volmgr.errors import GvolError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bricks need root (trusted.* xattrs)")


def rep_vol(n: int = 6, replica: int = 3, arbiter: int = 0) -> dict:
    return {
        "name": "rv", "id": str(uuid.UUID(int=0x99)), "version": 1,
        "type": "Distributed-Replicate", "status": "Created", "transport": "tcp",
        "replica": replica, "arbiter": arbiter,
        "bricks": [{"host": f"s{i % replica}", "path": f"/data/b{i}", "port": 49152 + i,
                    "node": "n"} for i in range(n)],
        "options": {}, "username": "u", "password": "p",
    }


# ---------------------------------------------------------------- volfiles
def test_client_volfile_groups_bricks_into_replica_sets() -> None:
    vol = rep_vol()
    vol["options"] = {"cluster.quorum-type": "fixed", "cluster.quorum-count": "2"}
    specs = {s.name: s for s in parse(volgen.client_volfile(vol))}
    assert specs["rv-dht"].subvolumes == ["rv-replicate-0", "rv-replicate-1"]
    r1 = specs["rv-replicate-1"]
    assert r1.type == "cluster/replicate"
    assert r1.subvolumes == ["rv-client-3", "rv-client-4", "rv-client-5"]
    assert r1.options == {"afr-pending-xattr": "rv-client-3,rv-client-4,rv-client-5",
                          "quorum-type": "fixed", "quorum-count": "2"}
    top = build(volgen.client_volfile(vol))  # every option is valid for its translator
    afrs = [x for x in top.walk() if isinstance(x, Replicate)]
    assert [a.name for a in afrs] == ["rv-replicate-0", "rv-replicate-1"]
    assert afrs[0].quorum_count == 2


def test_brick_volfiles_have_index_and_arbiter() -> None:
    vol = rep_vol(arbiter=1)
    data = [(s.name, s.type) for s in parse(volgen.brick_volfile(vol, vol["bricks"][0]))]
    assert data == [("rv-posix", "storage/posix"), ("rv-locks", "features/locks"),
                    ("rv-index", "features/index"), ("/data/b0", "debug/io-stats"),
                    ("rv-server", "protocol/server")]
    arb = [(s.name, s.type) for s in parse(volgen.brick_volfile(vol, vol["bricks"][5]))]
    assert arb[:4] == [("rv-posix", "storage/posix"), ("rv-arbiter", "features/arbiter"),
                       ("rv-locks", "features/locks"), ("rv-index", "features/index")]
    assert [volgen.is_arbiter(vol, i) for i in range(6)] == [False, False, True] * 2
    specs = {s.name: s for s in parse(volgen.client_volfile(vol))}
    assert specs["rv-replicate-0"].options["arbiter-count"] == "1"
    # distribute volumes keep their graphs
    plain = dict(vol, replica=1, arbiter=0)
    assert "features/index" not in volgen.brick_volfile(plain, plain["bricks"][0])


def test_replicate_options_are_settable() -> None:
    assert volgen.validate_option("cluster.quorum-type", "none") == "none"
    assert volgen.validate_option("cluster.favorite-child-policy", "mtime") == "mtime"
    with pytest.raises(GvolError):
        volgen.validate_option("cluster.quorum-type", "most")
    with pytest.raises(GvolError):
        volgen.validate_option("cluster.heal-timeout", "1")


# ---------------------------------------------------------------- gvold
def test_create_grammar_and_info(tmp_path: Path) -> None:
    with GvolNode(tmp_path) as node:
        dirs = []
        for i in range(6):
            d = tmp_path / f"b{i}"
            d.mkdir()
            dirs.append(f"127.0.0.1:{d}")
        r = node.cli("volume", "create", "v1", "replica", "4", *dirs, "force", check=False)
        assert r.returncode == 1 and "not a multiple of the replica count" in r.stderr
        r = node.cli("volume", "create", "v1", "replica", "3", *dirs, check=False)
        assert r.returncode == 1 and "several bricks on 127.0.0.1" in r.stderr \
            and "force" in r.stderr
        r = node.cli("volume", "create", "v1", "replica", "4", "arbiter", "1", *dirs[:4],
                     "force", check=False)
        assert r.returncode == 1 and "arbiter needs replica 3" in r.stderr
        node.cli("volume", "create", "v1", "replica", "3", "arbiter", "1", *dirs, "force")
        out = node.cli("volume", "info", "v1").stdout
        assert "Type: Distributed-Replicate" in out
        assert "Number of Bricks: 2 x (2 + 1) = 6" in out
        assert f"Brick3: {dirs[2]} (arbiter)" in out and f"Brick4: {dirs[3]}\n" in out
        info = node.cli_json("volume", "info", "v1")
        assert info["replica_count"] == 3 and info["arbiter_count"] == 1
        assert [b["replica_set"] for b in info["bricks"]] == [0, 0, 0, 1, 1, 1]
        st = node.cli_json("volume", "status", "v1")
        assert [b["arbiter"] for b in st["bricks"]] == [False, False, True] * 2
        r = node.cli("volume", "heal", "v1", "info", check=False)
        assert r.returncode == 1 and "not started" in r.stderr


def test_heal_daemon_and_commands_over_real_bricks(tmp_path: Path) -> None:
    """replica 3 through gvold: a brick killed while a client writes, `heal info` lists what
    it missed, `volume start force` brings it back and gvold's heal daemon heals it; a
    split-brain made on purpose is listed and resolved by the CLI."""
    with GvolNode(tmp_path) as node:
        dirs = []
        for i in range(3):
            d = node.brick_dir("rv", i)
            d.mkdir(parents=True)
            dirs.append(d)
        node.cli("volume", "create", "rv", "replica", "3", *[f"127.0.0.1:{d}" for d in dirs],
                 "force")
        node.cli("volume", "set", "rv", "cluster.heal-timeout", "3600")
        node.cli("volume", "set", "rv", "brick.auto-restart", "off")
        node.cli("volume", "set", "rv", "network.ping-timeout", "2")
        node.cli("volume", "start", "rv")
        node.collect_brick_pids()
        volfile = node.cli_json("volume", "info", "rv", "--volfile")["client"]

        async def cli(*args: str) -> str:
            r = await trio.to_thread.run_sync(lambda: node.cli(*args))
            return r.stdout

        async def info() -> dict:
            return json.loads(await cli("volume", "heal", "rv", "info", "--json"))

        async def main() -> None:
            top = build(volfile)
            async with trio.open_nursery() as n:
                await init_graph(top, n)
                afr = afr_heal.replicas(top)[0]
                for c in afr.children:
                    assert await c.wait_connected(10)
                fs = FS(top)
                await fs.mkdir("/d")
                await fs.create("/d/a", b"alpha")
                await afr.settle()
                assert (await info())["replica_sets"][0]["total"] == 0
                pid = next(b["pid"] for b in node.status("rv") if b["path"] == str(dirs[1]))
                os.kill(pid, signal.SIGKILL)
                while afr.up[1]:
                    await trio.sleep(0.02)
                await fs.write("/d/a", 0, b"ALPHA, again")
                await fs.create("/d/b", b"bravo")
                await fs.mkdir("/d/sub")
                await afr.settle()
                res = await info()
                bricks = res["replica_sets"][0]["bricks"]
                assert bricks[1]["count"] is None and bricks[0]["count"] >= 2
                paths = {e.get("path") for e in bricks[0]["entries"]}
                assert {"/d", "/d/a"} <= paths, bricks[0]
                text = await cli("volume", "heal", "rv", "info")
                assert "\n/d/a\n" in text, text
                assert bricks[0]["brick"] == f"127.0.0.1:{dirs[0]}"
                summary = await cli("volume", "heal", "rv", "info", "summary")
                assert "Number of entries in heal pending:" in summary
                # back: gvold restarts it, its heal daemon crawls the indices
                await cli("volume", "start", "rv", "force")
                with trio.fail_after(60):
                    while (await info())["replica_sets"][0]["total"]:
                        await trio.sleep(0.2)
                stats = json.loads(await cli("volume", "heal", "rv", "statistics", "--json"))
                assert stats["last"]["healed"] >= 1, stats
                await afr.settle()
                await fini_graph(top)
                n.cancel_scope.cancel()

        trio.run(main)
        for d in dirs:
            assert changelog(d) == {}
        t = [tree(d) for d in dirs]
        assert t[0] == t[1] == t[2]
        r = node.cli("volume", "heal", "rv", "split-brain", "source-brick", "127.0.0.1:/nope",
                     check=False)
        assert r.returncode == 1 and "not a brick of volume rv" in r.stderr


def test_split_brain_listed_and_resolved_by_the_cli(tmp_path: Path) -> None:
    with GvolNode(tmp_path) as node:
        dirs = []
        for i in range(2):
            d = node.brick_dir("sb", i)
            d.mkdir(parents=True)
            dirs.append(d)
        node.cli("volume", "create", "sb", "replica", "2", *[f"127.0.0.1:{d}" for d in dirs],
                 "force")
        for k, v in (("cluster.quorum-type", "none"), ("cluster.self-heal-daemon", "off"),
                     ("brick.auto-restart", "off"),
                     ("cluster.background-self-heal-count", "0"),
                     ("network.ping-timeout", "2")):
            node.cli("volume", "set", "sb", k, v)
        node.cli("volume", "start", "sb")
        node.collect_brick_pids()
        volfile = node.cli_json("volume", "info", "sb", "--volfile")["client"]

        def kill(i: int) -> None:
            pid = next(b["pid"] for b in node.status("sb") if b["path"] == str(dirs[i]))
            os.kill(pid, signal.SIGKILL)

        async def main() -> None:
            top = build(volfile)
            async with trio.open_nursery() as n:
                await init_graph(top, n)
                afr = afr_heal.replicas(top)[0]
                for c in afr.children:
                    assert await c.wait_connected(10)
                fs = FS(top)
                await fs.create("/f", b"base")
                await afr.settle()
                for down, data in ((1, b"the longer version"), (0, b"short")):
                    await trio.to_thread.run_sync(kill, down)
                    while afr.up[down]:
                        await trio.sleep(0.02)
                    await fs.write("/f", 0, data)
                    await afr.settle()
                    await trio.to_thread.run_sync(node.cli, "volume", "start", "sb", "force")
                    while not afr.up[down]:
                        await trio.sleep(0.02)
                afr.inodes.clear()
                await fs.lookup("/f")
                with pytest.raises(FopError) as ei:
                    await fs.read("/f")
                assert ei.value.errno == errno.EIO
                out = (await trio.to_thread.run_sync(
                    node.cli, "volume", "heal", "sb", "info", "split-brain")).stdout
                assert "Number of entries in split-brain: 1" in out, out
                out = (await trio.to_thread.run_sync(
                    node.cli, "volume", "heal", "sb", "split-brain", "bigger-file", "/f")).stdout
                assert out.startswith("Healed gfid:"), out
                afr.inodes.clear()
                await fs.lookup("/f")
                assert await fs.read("/f") == b"the longer version"
                await fini_graph(top)
                n.cancel_scope.cancel()

        trio.run(main)
        out = node.cli("volume", "heal", "sb", "info", "split-brain").stdout
        assert "Number of entries in split-brain: 0" in out
