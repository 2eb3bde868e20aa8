"""gvold's state directory (default /var/lib/gvol, like /var/lib/glusterd):

    gvold.info                  UUID=<node uuid>, operating-version=1   (glusterd.info)
    secret                      cluster secret (0600); lets remote CLIs run mutating commands
    gvold.sock                  the CLI's unix socket (0600)
    gvold.lock                  flock held by the running gvold (one daemon per state dir)
    vols/<V>/info.json          the volume definition (see below)
    vols/<V>/<V>.<host>.<brick-dashed>.vol    brick volfile, one per brick
    vols/<V>/<V>.tcp-fuse.vol   client volfile (served by getspec)
    run/<V>/<host>-<brick-dashed>.pid         brick pidfiles

info.json: {"name", "id" (volume uuid), "version" (bumped on every change), "type", "status"
("Created" | "Started" | "Stopped"), "transport", "bricks": [{"host", "path", "port"}],
"options": {volume-set key: value}, "username", "password", "created"}.

Every write is atomic: write a temporary file in the same directory, fsync, rename over the
target, fsync the directory. Nothing here knows about trio.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OPERATING_VERSION = 1


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a reader sees the old or the new content, never a mix,
    even across a crash."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def brick_dashed(path: str) -> str:
    """GlusterFS's brick file naming: '/data/b1' -> 'data-b1'."""
    return path.strip("/").replace("/", "-") or "root"


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.vols = self.root / "vols"
        self.run = self.root / "run"
        self._uuid: str | None = None
        self._secret: str | None = None

    # ------------------------------------------------------------ node identity
    def init(self) -> None:
        """Create the layout and the node identity if missing (idempotent)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for d in (self.vols, self.run):
            d.mkdir(exist_ok=True)
        info = self.root / "gvold.info"
        if not info.exists():
            atomic_write(info, f"UUID={uuid.uuid4()}\noperating-version={OPERATING_VERSION}\n")
        sec = self.root / "secret"
        if not sec.exists():
            atomic_write(sec, secrets.token_hex(32) + "\n", mode=0o600)
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        """Remove leftovers of writes or deletes interrupted by a crash."""
        for d in [self.root, self.vols, *[p for p in self.vols.iterdir() if p.is_dir()]]:
            for p in d.iterdir():
                if p.name.startswith(".") and ".tmp." in p.name:
                    p.unlink(missing_ok=True)
        for p in self.vols.glob(".deleted-*"):
            shutil.rmtree(p, ignore_errors=True)

    @property
    def node_uuid(self) -> str:
        if self._uuid is None:
            for line in (self.root / "gvold.info").read_text().splitlines():
                k, _, v = line.partition("=")
                if k.strip() == "UUID":
                    self._uuid = v.strip()
            if self._uuid is None:
                raise RuntimeError(f"{self.root / 'gvold.info'} has no UUID line")
        return self._uuid

    @property
    def secret(self) -> str:
        if self._secret is None:
            self._secret = (self.root / "secret").read_text().strip()
        return self._secret

    @property
    def socket_path(self) -> Path:
        return self.root / "gvold.sock"

    # ------------------------------------------------------------ volumes
    def vol_dir(self, name: str) -> Path:
        return self.vols / name

    def names(self) -> list[str]:
        if not self.vols.is_dir():
            return []
        return sorted(p.name for p in self.vols.iterdir()
                      if not p.name.startswith(".") and (p / "info.json").is_file())

    def load(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.vol_dir(name) / "info.json").read_text())
        except FileNotFoundError:
            return None

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for n in self.names():
            v = self.load(n)
            if v is not None:
                out[n] = v
        return out

    def save(self, vol: dict[str, Any], files: dict[str, str] | None = None) -> None:
        """Write the generated files (volfiles) first, then the definition, each atomically.
        Files in the volume directory ending in .vol that are not in `files` are removed
        (bricks that left the volume)."""
        d = self.vol_dir(vol["name"])
        d.mkdir(parents=True, exist_ok=True)
        for fname, text in (files or {}).items():
            atomic_write(d / fname, text)
        if files is not None:
            for p in d.glob("*.vol"):
                if p.name not in files:
                    p.unlink()
        atomic_write(d / "info.json", json.dumps(vol, indent=2, sort_keys=True) + "\n")

    def delete(self, name: str) -> None:
        """Remove a volume's directory: rename it away atomically, then remove the copy."""
        d = self.vol_dir(name)
        if not d.exists():
            return
        gone = self.vols / f".deleted-{name}-{uuid.uuid4().hex[:8]}"
        os.rename(d, gone)
        fsync_dir(self.vols)
        shutil.rmtree(gone, ignore_errors=True)
        shutil.rmtree(self.run / name, ignore_errors=True)

    def read_file(self, name: str, fname: str) -> str:
        return (self.vol_dir(name) / fname).read_text()

    # ------------------------------------------------------------ runtime files
    def pidfile(self, volname: str, host: str, path: str) -> Path:
        return self.run / volname / f"{host}-{brick_dashed(path)}.pid"

    def snapshot(self) -> dict[str, bytes]:
        """Every file under vols/ with its content (tests compare state before and after)."""
        out = {}
        for p in sorted(self.vols.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(self.root))] = p.read_bytes()
        return out
