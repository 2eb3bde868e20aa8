"""performance/create-behind through real mounts of a replica 3 volume: a small file reaches
the bricks whole at close(), other clients see it from then on, and the create's errors come
back from close()."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gvolenv import GvolNode, wait_for

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(os.geteuid() != 0, reason="bricks need root (trusted.*)")]


def on_bricks(bricks: list[Path], rel: str) -> list[bytes | None]:
    return [(b / rel).read_bytes() if (b / rel).exists() else None for b in bricks]


def test_small_file_whole_at_close_and_errors_at_close(node: GvolNode) -> None:
    bricks = node.create_volume("cb", bricks=3, replica=3,
                                options={"cluster.self-heal-daemon": "off"})
    with node.mount("cb") as m1, node.mount("cb") as m2:
        (m1 / "d").mkdir()
        with open(m1 / "d" / "x", "wb", buffering=0) as f:
            f.write(b"hello ")
            f.write(b"world")
            # held back until close: no brick has the name yet
            assert on_bricks(bricks, "d/x") == [None] * 3
        assert on_bricks(bricks, "d/x") == [b"hello world"] * 3
        wait_for(lambda: (m2 / "d" / "x").exists(), 10, "the other mount to see the file")
        assert (m2 / "d" / "x").read_bytes() == b"hello world"
        # many small files, and one bigger than create-behind-size (created on the way)
        want = {f"f{i}": os.urandom(i * 97) for i in range(40)}
        want["big"] = os.urandom(600_000)
        for name, data in want.items():
            (m1 / "d" / name).write_bytes(data)
        for i in range(20):  # as cp and tar create: O_EXCL
            name = f"x{i}"
            want[name] = os.urandom(i * 211)
            fd = os.open(m1 / "d" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, want[name])
            finally:
                os.close(fd)
        for b in bricks:
            assert {n: (b / "d" / n).read_bytes() for n in want} == want, b
        for m in (m1, m2):
            with pytest.raises(FileExistsError):
                os.open(m / "d" / "x3", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        # the directory is removed by another client before close(): close() says so
        (m1 / "gone").mkdir()
        wait_for(lambda: (m2 / "gone").is_dir(), 10, "the other mount to see the directory")
        f = open(m1 / "gone" / "late", "wb", buffering=0)
        f.write(b"never stored")
        os.rmdir(m2 / "gone")
        with pytest.raises(OSError) as ei:
            f.close()
        assert ei.value.errno in (errno.ENOENT, errno.ESTALE), ei.value
        assert not any((b / "gone").exists() for b in bricks)

        def clean() -> bool:  # the mounts' delayed post-ops clear what they marked dirty
            info = node.cli_json("volume", "heal", "cb", "info")
            return all(b["count"] == 0 for s in info["replica_sets"] for b in s["bricks"])
        wait_for(clean, 30, "no entry left in heal info")
    node.cli("volume", "stop", "cb", "force", timeout=120)


def test_create_behind_off(node: GvolNode) -> None:
    """`performance.create-behind off`: the name is on the bricks as soon as open() returns."""
    bricks = node.create_volume("cboff", bricks=3, replica=3,
                                options={"performance.create-behind": "off"})
    with node.mount("cboff") as m:
        with open(m / "x", "wb", buffering=0) as f:
            f.write(b"now")
            assert on_bricks(bricks, "x") == [b"now"] * 3
        out = node.cli("volume", "get", "cboff", "performance.create-behind").stdout
        assert "performance.create-behind" in out and "off" in out.split(), out
    node.cli("volume", "stop", "cboff", "force", timeout=120)
