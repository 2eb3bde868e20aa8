"""gvold: the management daemon (GlusterFS's glusterd).

    gvold [--state-dir DIR] [--port N] [--listen HOST] [--log-dir DIR] [--foreground]

Keeps the volume definitions under the state directory (volmgr.store), generates volfiles
(volmgr.volgen), serves client volfiles to mounts (getspec), allocates brick ports, starts,
supervises and stops the brick processes (`gvol-brickd`), and answers the `gvol` CLI.

Listeners (protocol in volmgr.mgmt_client):
  * unix socket DIR/gvold.sock, mode 0600: every command (root's CLI);
  * TCP (default port 24200, all addresses): the read-only commands (`READ_ONLY`: getspec,
    volume info/status/list/get, peer status, pool list); a mutating command over TCP must carry
    the cluster secret (args["secret"] = the content of DIR/secret; the CLI sends it from
    GVOL_SECRET or from a readable DIR/secret).

Bricks run in their own sessions, so they survive gvold stopping or restarting (the systemd
unit uses KillMode=process); a restarted gvold adopts them (pidfile + /proc/<pid>/cmdline).
At startup, bricks of started volumes that are not running are started (as glusterd does at
boot). While gvold runs, a supervisor task restarts a brick that died unless the volume option
`brick.auto-restart` is off (at most RESTART_BURST restarts in RESTART_WINDOW seconds).

Brick directories on the root filesystem are accepted without `force` (GlusterFS demands it);
test suites and single-disk machines use them.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import hmac
import ipaddress
import logging
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from brickd.systemd import sd_notify
from translators.errgroups import collapsed, describe
from translators.storage.brickdir import prepare_brick
from translators.types import XATTR_VOLUME_ID
from translators.xlator import GraphError

from . import bricks, volgen
from .errors import GvolError, ProtocolError
from .heal import HealDaemon
from .mgmt_client import DEFAULT_PORT, PROTO_VERSION, decode_body, encode_frame, frame_length
from .store import Store, brick_dashed

log = logging.getLogger("gvold")

DEFAULT_STATE_DIR = "/var/lib/gvol"
DEFAULT_LOG_DIR = "/var/log/gvol"
BRICK_START_TIMEOUT = 30.0
STOP_GRACE = 10.0
SUPERVISE_INTERVAL = 1.0
RESTART_BURST = 5
RESTART_WINDOW = 60.0
IDLE_TIMEOUT = 600.0

VOLNAME_MAX = 64
_VOLNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
RESERVED_NAMES = {"all", "volume", "type", "subvolumes", "option", "end-volume", "force",
                  "help", "replica", "arbiter", "disperse", "transport", "info", "status",
                  "list", "start", "stop", "create", "delete", "set", "get"}


# ---------------------------------------------------------------- validation helpers
def check_volname(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise GvolError("a volume name is required")
    if len(name) > VOLNAME_MAX:
        raise GvolError(f"invalid volume name {name[:20]}...: longer than {VOLNAME_MAX} "
                        "characters")
    if not _VOLNAME.fullmatch(name):
        raise GvolError(f"invalid volume name {name!r}: use letters, digits, - and _, "
                        "starting with a letter or _")
    if name.lower() in RESERVED_NAMES:
        raise GvolError(f"invalid volume name {name!r}: it is a reserved word")
    return name


def parse_brick(spec: Any) -> tuple[str, str]:
    """'HOST:/abs/path' (or '[v6]:/path') -> (host, normalised path)."""
    if not isinstance(spec, str) or not spec:
        raise GvolError("empty brick")
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise GvolError(f"bad brick {spec!r}: expected HOST:/absolute/path")
        path = rest[1:]
    else:
        host, sep, path = spec.partition(":")
        if not sep:
            raise GvolError(f"bad brick {spec!r}: expected HOST:/absolute/path (missing ':')")
    if not host:
        raise GvolError(f"bad brick {spec!r}: missing host before ':'")
    if not path.startswith("/"):
        raise GvolError(f"bad brick {spec!r}: the path must be absolute")
    norm = os.path.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise GvolError(f"bad brick {spec!r}: the root directory cannot be a brick")
    return host, norm


def _local_addresses_match(host: str) -> bool | None:
    """True if `host` resolves to an address of this node, False if it resolves elsewhere,
    None if it cannot be resolved."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return None
    for fam, _t, _p, _c, sa in infos:
        addr = sa[0]
        try:
            if ipaddress.ip_address(addr.split("%")[0]).is_loopback:
                return True
        except ValueError:
            pass
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.bind((addr, 0) if fam == socket.AF_INET else (addr, 0, 0, sa[3]))
            return True  # only addresses assigned to this node can be bound
        except OSError:
            continue
    return False


def local_host_check(host: str) -> None:
    h = host.strip().lower()
    names = {"localhost", "localhost.localdomain", "127.0.0.1", "::1",
             socket.gethostname().lower(), socket.getfqdn().lower()}
    if h in names:
        return
    r = _local_addresses_match(h)
    if r:
        return
    if r is None:
        raise GvolError(f"host {host} is not in the pool: cannot resolve it")
    raise GvolError(f"host {host} is not in the pool (run gvol peer probe {host})")


def _replica_args(args: dict[str, Any]) -> tuple[int, int]:
    """(replica count, arbiter count) of `volume create` (1, 0 for a distribute volume).
    `replica 2 arbiter 1` means what it means in GlusterFS: two data bricks and an arbiter."""
    r, a = args.get("replica"), args.get("arbiter")
    if r is None:
        if a:
            raise GvolError("arbiter needs a replica count: replica 3 arbiter 1")
        return 1, 0
    if not isinstance(r, int) or isinstance(r, bool) or r < 2:
        raise GvolError(f"replica count must be 2 or more, got {r!r}")
    if r > 31:
        raise GvolError("replica count must be at most 31")
    if a is None or a == 0:
        return r, 0
    if a != 1:
        raise GvolError(f"arbiter count must be 1, got {a!r}")
    if r == 2:
        r = 3
    if r != 3:
        raise GvolError("an arbiter needs replica 3 (two data bricks and the arbiter)")
    return r, 1


def _check_sets(parsed: list[tuple[str, str]], replica: int, force: bool) -> None:
    n = len(parsed)
    if n % replica:
        raise GvolError(f"number of bricks ({n}) is not a multiple of the replica count "
                        f"({replica}): consecutive bricks form the replica sets")
    if force:
        return
    for k in range(n // replica):
        hosts = [h for h, _p in parsed[k * replica:(k + 1) * replica]]
        dup = sorted({h for h in hosts if hosts.count(h) > 1})
        if dup:
            raise GvolError(
                f"replica set {k + 1} has several bricks on {', '.join(dup)}: if that server "
                "fails, the set loses more than one copy. Put the bricks of a set on different "
                "servers, or add 'force' at the end of the command to accept it")


def volume_id_on(path: str) -> tuple[str, bytes] | None:
    """(directory, value) of the nearest trusted.gvol.volume-id on `path` or an ancestor."""
    p = Path(path)
    for d in [p, *p.parents]:
        try:
            return str(d), os.getxattr(d, XATTR_VOLUME_ID)
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT, errno.EACCES,
                           errno.EPERM):
                continue
            raise
    return None


# ---------------------------------------------------------------- the daemon
@dataclass
class Config:
    state_dir: Path
    port: int = DEFAULT_PORT
    listen: str = ""
    log_dir: Path | None = None
    base_port: int = bricks.BASE_PORT
    brick_start_timeout: float = BRICK_START_TIMEOUT
    stop_grace: float = STOP_GRACE
    supervise_interval: float = SUPERVISE_INTERVAL


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Gvold:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = Store(cfg.state_dir)
        self.vols: dict[str, dict[str, Any]] = {}
        self.procs: dict[tuple[str, str], bricks.BrickProc] = {}
        self.lock = trio.Lock()  # serialises every change of state and of brick processes
        self.log_dir = cfg.log_dir or self._default_log_dir()
        self.tcp_port: int | None = None
        self.commands: dict[str, tuple[Handler, bool]] = {
            # name: (handler, mutating)
            "ping": (self.cmd_ping, False),
            "node-info": (self.cmd_ping, False),
            "getspec": (self.cmd_getspec, False),
            "volume-list": (self.cmd_list, False),
            "volume-info": (self.cmd_info, False),
            "volume-volfile": (self.cmd_volfile, False),
            "volume-status": (self.cmd_status, False),
            "volume-get": (self.cmd_get, False),
            "peer-status": (self.cmd_peer_status, False),
            "pool-list": (self.cmd_pool_list, False),
            "volume-create": (self.cmd_create, True),
            "volume-start": (self.cmd_start, True),
            "volume-stop": (self.cmd_stop, True),
            "volume-delete": (self.cmd_delete, True),
            "volume-set": (self.cmd_set, True),
            "volume-reset": (self.cmd_reset, True),
        }
        self.heal = HealDaemon(lambda: self.vols, self.get_vol)
        self.commands.update({
            "volume-heal": (self.heal.cmd_heal, True),
            "volume-heal-info": (self.heal.cmd_info, False),
            "volume-heal-split-brain": (self.heal.cmd_split_brain, True),
        })

    def _default_log_dir(self) -> Path:
        d = Path(DEFAULT_LOG_DIR)
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
        return self.cfg.state_dir / "logs"

    # ------------------------------------------------------------ state
    def load(self) -> None:
        self.store.init()
        self.vols = self.store.all()

    def get_vol(self, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise GvolError("a volume name is required")
        vol = self.vols.get(name)
        if vol is None:
            raise GvolError(f"volume {name} does not exist")
        return vol

    def save(self, vol: dict[str, Any]) -> None:
        """Bump the version, regenerate the volfiles and write everything atomically."""
        vol["version"] = int(vol.get("version", 0)) + 1
        self.store.save(vol, volgen.generate(vol))
        self.vols[vol["name"]] = vol

    def is_local(self, brick: dict[str, Any]) -> bool:
        return brick.get("node") == self.store.node_uuid

    def proc(self, vol: dict[str, Any], brick: dict[str, Any]) -> bricks.BrickProc:
        key = (vol["name"], brick["path"])
        bp = self.procs.get(key)
        volfile = self.store.vol_dir(vol["name"]) / volgen.brick_volfile_name(vol, brick)
        if bp is None:
            bp = bricks.BrickProc(
                vol=vol["name"], host=brick["host"], path=brick["path"], volfile=volfile,
                pidfile=self.store.pidfile(vol["name"], brick["host"], brick["path"]),
                logfile=self.log_dir / "bricks" / f"{brick_dashed(brick['path'])}.log")
            self.procs[key] = bp
        bp.volfile = volfile
        return bp

    def used_ports(self) -> set[int]:
        ports = {b["port"] for v in self.vols.values() for b in v["bricks"]}
        if self.tcp_port:
            ports.add(self.tcp_port)
        return ports

    # ------------------------------------------------------------ bricks
    def adopt(self) -> None:
        """After a gvold restart: find the brick processes that kept running."""
        for vol in self.vols.values():
            for b in vol["bricks"]:
                if not self.is_local(b):
                    continue
                bp = self.proc(vol, b)
                pid = bricks.find_brick_pid(bp.pidfile, bp.volfile)
                if pid is not None:
                    bp.pid, bp.popen = pid, None
                    log.info("adopted brick %s of volume %s (pid %d)", bp.name, vol["name"], pid)

    def _check_brick_dir(self, vol: dict[str, Any], b: dict[str, Any]) -> None:
        path = b["path"]
        if not os.path.isdir(path):
            raise GvolError(f"brick {b['host']}:{path} is missing or not a directory "
                            "(is its filesystem mounted?)")
        try:
            vid = os.getxattr(path, XATTR_VOLUME_ID)
        except OSError:
            vid = None
        if vid != uuid.UUID(vol["id"]).bytes:
            raise GvolError(f"brick {b['host']}:{path} does not carry the volume-id of volume "
                            f"{vol['name']} ({XATTR_VOLUME_ID}); refusing to serve it")

    def _prepare_brick(self, vol: dict[str, Any], b: dict[str, Any]) -> None:
        """Mark the directory as a brick of the volume (volume-id xattr, root gfid, .gvol/
        layout: translators/storage/brickdir.py). Idempotent."""
        try:
            prepare_brick(b["path"], vol["id"])
        except (OSError, GraphError) as e:
            raise GvolError(f"cannot prepare brick {b['host']}:{b['path']}: {e}") from None

    def _ensure_port(self, vol: dict[str, Any], b: dict[str, Any]) -> bool:
        """If the brick's port was taken by another program, move the brick to a free port
        (updating the definition and volfiles). Returns True if the port changed."""
        if bricks.port_free(b["port"]):
            return False
        old = b["port"]
        b["port"] = bricks.allocate_ports(1, self.used_ports(), self.cfg.base_port)[0]
        log.warning("port %d of brick %s:%s is in use by another program; moving to %d",
                    old, b["host"], b["path"], b["port"])
        return True

    async def start_bricks(self, vol: dict[str, Any], todo: list[dict[str, Any]]) -> None:
        """Spawn the given bricks and wait until each accepts connections. On failure the
        bricks started here are stopped again and GvolError carries the first brick's log."""
        for b in todo:
            self._check_brick_dir(vol, b)
        moved = False
        for b in todo:
            moved |= self._ensure_port(vol, b)
        if moved:
            self.save(vol)
        for b in todo:
            self._prepare_brick(vol, b)
        started: list[tuple[bricks.BrickProc, int, dict[str, Any]]] = []
        errors: list[str] = []
        try:
            for b in todo:
                bp = self.proc(vol, b)
                try:
                    offset = bricks.spawn(bp)
                except OSError as e:
                    raise GvolError(f"cannot start brick {bp.name}: {e}") from None
                log.info("started brick %s of volume %s (pid %d, port %d)", bp.name,
                         vol["name"], bp.pid, b["port"])
                started.append((bp, offset, b))
            deadline = trio.current_time() + self.cfg.brick_start_timeout
            pending = list(started)
            while pending:
                for item in list(pending):
                    bp, offset, b = item
                    if not bp.alive():
                        errors.append(f"brick {bp.name} failed to start "
                                      f"({bricks.signal_name(bp.exit_code)}): "
                                      f"{bricks.log_tail(bp.logfile, offset) or 'no output'} "
                                      f"(log: {bp.logfile})")
                        bp.forget()
                        pending.remove(item)
                    elif bricks.port_listening(b["port"]):
                        pending.remove(item)
                if errors:
                    break
                if pending and trio.current_time() > deadline:
                    bp, offset, b = pending[0]
                    errors.append(f"brick {bp.name} did not listen on port {b['port']} within "
                                  f"{self.cfg.brick_start_timeout:g}s: "
                                  f"{bricks.log_tail(bp.logfile, offset) or 'no output'} "
                                  f"(log: {bp.logfile})")
                    break
                if pending:
                    await trio.sleep(0.05)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.stop_bricks([bp for bp, _o, _b in started])
            raise
        if errors:
            with trio.CancelScope(shield=True):
                await self.stop_bricks([bp for bp, _o, _b in started])
            raise GvolError(errors[0])
        if started:
            self.heal.brick_started(vol["name"])  # replicated: what it missed heals now

    async def stop_bricks(self, procs: list[bricks.BrickProc]) -> None:
        """SIGTERM, wait up to the grace period, SIGKILL, wait; in parallel for all."""
        procs = [bp for bp in procs if bp.alive()]
        if not procs:
            return
        for bp in procs:
            log.info("stopping brick %s of volume %s (pid %s)", bp.name, bp.vol, bp.pid)
            bricks.signal_brick(bp, signal.SIGTERM)
        deadline = trio.current_time() + self.cfg.stop_grace
        while any(bp.alive() for bp in procs) and trio.current_time() < deadline:
            await trio.sleep(0.05)
        for bp in procs:
            if bp.alive():
                log.warning("brick %s ignored SIGTERM for %gs; killing it", bp.name,
                            self.cfg.stop_grace)
                bricks.signal_brick(bp, signal.SIGKILL)
        deadline = trio.current_time() + 10
        while any(bp.alive() for bp in procs) and trio.current_time() < deadline:
            await trio.sleep(0.05)
        for bp in procs:
            if not bp.alive():
                bp.forget()
                bp.pidfile.unlink(missing_ok=True)

    def local_bricks(self, vol: dict[str, Any]) -> list[dict[str, Any]]:
        return [b for b in vol["bricks"] if self.is_local(b)]

    async def boot(self) -> None:
        """Start the bricks of started volumes that are not running (as glusterd at boot)."""
        async with self.lock:
            for vol in list(self.vols.values()):
                if vol["status"] != "Started":
                    continue
                down = [b for b in self.local_bricks(vol) if not self.proc(vol, b).alive()]
                if down:
                    try:
                        await self.start_bricks(vol, down)
                    except GvolError as e:
                        log.error("volume %s: %s", vol["name"], e)

    async def supervise(self) -> None:
        while True:
            await trio.sleep(self.cfg.supervise_interval)
            async with self.lock:
                for vol in list(self.vols.values()):
                    if vol["status"] != "Started":
                        continue
                    auto = volgen.daemon_option(vol, "brick.auto-restart")
                    for b in self.local_bricks(vol):
                        bp = self.proc(vol, b)
                        if bp.pid is not None and not bp.alive():
                            log.warning("brick %s of volume %s (pid %d) died: %s", bp.name,
                                        vol["name"], bp.pid, bricks.signal_name(bp.exit_code))
                            bp.forget()
                            bp.restarts.append(time.monotonic())
                            if auto:
                                await self._restart(vol, b, bp)
                            else:
                                log.warning("not restarting it: brick.auto-restart is off")

    async def _restart(self, vol: dict[str, Any], b: dict[str, Any], bp: bricks.BrickProc) -> None:
        now = time.monotonic()
        bp.restarts = [t for t in bp.restarts if now - t < RESTART_WINDOW]
        if len(bp.restarts) > RESTART_BURST:
            log.error("brick %s died %d times in %gs; giving up (gvol volume start %s force)",
                      bp.name, len(bp.restarts), RESTART_WINDOW, vol["name"])
            return
        try:
            await self.start_bricks(vol, [b])
        except GvolError as e:
            log.error("restarting brick %s failed: %s", bp.name, e)

    # ------------------------------------------------------------ commands
    async def cmd_ping(self, args: dict[str, Any]) -> Any:
        return {"uuid": self.store.node_uuid, "hostname": socket.gethostname(),
                "port": self.tcp_port, "listen": self.cfg.listen,
                "state-dir": str(self.cfg.state_dir), "log-dir": str(self.log_dir),
                "pid": os.getpid(), "protocol": PROTO_VERSION}

    async def cmd_getspec(self, args: dict[str, Any]) -> Any:
        name = str(args.get("volname") or args.get("name") or "").lstrip("/")
        vol = self.get_vol(name)
        if vol["status"] != "Started":
            raise GvolError(f"volume {name} is not started (run: gvol volume start {name})")
        return {"volfile": self.store.read_file(name, volgen.client_volfile_name(vol)),
                "version": vol["version"], "volume-id": vol["id"]}

    def public(self, vol: dict[str, Any]) -> dict[str, Any]:
        r = volgen.replica_count(vol)
        return {
            "name": vol["name"], "id": vol["id"], "type": vol["type"], "status": vol["status"],
            "version": vol["version"], "transport": vol.get("transport", "tcp"),
            "snapshot_count": 0, "created": vol.get("created"),
            "replica_count": r, "arbiter_count": int(vol.get("arbiter", 0) or 0),
            "bricks": [{"name": f"{b['host']}:{b['path']}", "host": b["host"],
                        "path": b["path"], "port": b["port"],
                        "id": volgen.client_xlator_name(vol, i),
                        **({"replica_set": i // r, "arbiter": volgen.is_arbiter(vol, i)}
                           if r > 1 else {})}
                       for i, b in enumerate(vol["bricks"])],
            "options": dict(vol.get("options", {})),
        }

    async def cmd_list(self, args: dict[str, Any]) -> Any:
        return sorted(self.vols)

    async def cmd_info(self, args: dict[str, Any]) -> Any:
        name = args.get("name")
        if name and name != "all":
            return self.public(self.get_vol(name))
        return [self.public(v) for _n, v in sorted(self.vols.items())]

    async def cmd_volfile(self, args: dict[str, Any]) -> Any:
        vol = self.get_vol(args.get("name"))
        return {"client": self.store.read_file(vol["name"], volgen.client_volfile_name(vol)),
                "bricks": {f"{b['host']}:{b['path']}":
                           self.store.read_file(vol["name"], volgen.brick_volfile_name(vol, b))
                           for b in vol["bricks"]}}

    async def cmd_status(self, args: dict[str, Any]) -> Any:
        name = args.get("name")
        if name and name != "all":
            return self._status(self.get_vol(name))
        return [self._status(v) for _n, v in sorted(self.vols.items())]

    def _status(self, vol: dict[str, Any]) -> dict[str, Any]:
        rows = []
        for b in vol["bricks"]:
            pid = None
            online = False
            if self.is_local(b):
                bp = self.proc(vol, b)
                if bp.alive():
                    pid = bp.pid
                    online = bricks.port_listening(b["port"])
            row = {"brick": f"{b['host']}:{b['path']}", "host": b["host"],
                   "path": b["path"], "port": b["port"], "pid": pid, "online": online}
            r = volgen.replica_count(vol)
            if r > 1:
                i = len(rows)
                row["replica_set"] = i // r
                row["arbiter"] = volgen.is_arbiter(vol, i)
            rows.append(row)
        return {"name": vol["name"], "id": vol["id"], "status": vol["status"],
                "bricks": rows}

    async def cmd_get(self, args: dict[str, Any]) -> Any:
        vol = self.get_vol(args.get("name"))
        key = str(args.get("key") or "all")
        avail = volgen.available_options()
        if key == "all":
            keys = sorted(set(avail) | set(vol.get("options", {})))
        else:
            if key not in volgen.OPTIONS:
                volgen.validate_option(key, "")  # raises with close matches
            keys = [key]
        out = []
        for k in keys:
            o = volgen.OPTIONS.get(k)
            value, source = volgen.option_value(vol, k) if o else (vol["options"][k], "set")
            out.append({"key": k, "value": value, "source": source,
                        "scope": o.scope if o else "", "doc": o.doc if o else ""})
        return out

    async def cmd_peer_status(self, args: dict[str, Any]) -> Any:
        return {"peers": []}

    async def cmd_pool_list(self, args: dict[str, Any]) -> Any:
        return [{"uuid": self.store.node_uuid, "hostname": "localhost", "state": "Connected"}]

    # -- mutating (called with self.lock held)
    async def cmd_create(self, args: dict[str, Any]) -> Any:
        name = check_volname(args.get("name"))
        if name in self.vols:
            raise GvolError(f"volume {name} already exists")
        for k in ("disperse", "disperse-data", "redundancy"):
            if args.get(k):
                raise GvolError(f"{k} volumes are not supported yet")
        replica, arbiter = _replica_args(args)
        transport = args.get("transport") or "tcp"
        if transport != "tcp":
            raise GvolError(f"transport {transport} is not supported (only tcp)")
        specs = args.get("bricks") or []
        if not isinstance(specs, list) or not specs:
            raise GvolError("a volume needs at least one brick (HOST:/path)")
        parsed = [parse_brick(s) for s in specs]
        if replica > 1:
            _check_sets(parsed, replica, bool(args.get("force")))
        for host, _p in parsed:
            await trio.to_thread.run_sync(local_host_check, host)
        real: list[str] = []
        for host, path in parsed:
            if not os.path.lexists(path):
                raise GvolError(f"brick {host}:{path}: the directory does not exist")
            if not os.path.isdir(path):
                raise GvolError(f"brick {host}:{path}: not a directory")
            real.append(os.path.realpath(path))
        # duplicates and nesting among the new bricks
        for i, ri in enumerate(real):
            for j in range(i):
                rj = real[j]
                a, b = f"{parsed[i][0]}:{parsed[i][1]}", f"{parsed[j][0]}:{parsed[j][1]}"
                if ri == rj:
                    raise GvolError(f"duplicate brick {a}" + (f" (same directory as {b})"
                                                              if a != b else ""))
                if Path(ri).is_relative_to(rj):
                    raise GvolError(f"brick {a} is inside brick {b}")
                if Path(rj).is_relative_to(ri):
                    raise GvolError(f"brick {b} is inside brick {a}")
        # against the bricks of every volume
        for other in self.vols.values():
            for ob in other["bricks"]:
                if not self.is_local(ob):
                    continue
                ro = os.path.realpath(ob["path"])
                oname = f"{ob['host']}:{ob['path']}"
                for (host, path), r in zip(parsed, real):
                    if r == ro:
                        raise GvolError(f"brick {host}:{path} is already part of volume "
                                        f"{other['name']}")
                    if Path(r).is_relative_to(ro):
                        raise GvolError(f"brick {host}:{path} is inside brick {oname} of "
                                        f"volume {other['name']}")
                    if Path(ro).is_relative_to(r):
                        raise GvolError(f"brick {host}:{path} contains brick {oname} of "
                                        f"volume {other['name']}")
        for (host, path), r in zip(parsed, real):
            found = volume_id_on(r)
            if found is not None:
                where = "" if found[0] == r else f" (its parent {found[0]} is a brick)"
                raise GvolError(f"brick {host}:{path} is already part of a volume"
                                f"{where}: {XATTR_VOLUME_ID} is set; use a fresh directory "
                                f"or clear it with: setfattr -x {XATTR_VOLUME_ID} {found[0]}")
        # all checks passed: allocate, mark the bricks, then persist
        try:
            ports = bricks.allocate_ports(len(parsed), self.used_ports(), self.cfg.base_port)
        except OSError as e:
            raise GvolError(str(e)) from None
        vid = uuid.uuid4()
        vtype = "Distribute"
        if replica > 1:
            vtype = "Replicate" if len(parsed) == replica else "Distributed-Replicate"
        vol = {
            "name": name, "id": str(vid), "version": 0, "type": vtype,
            "replica": replica, "arbiter": arbiter,
            "status": "Created", "transport": "tcp",
            "bricks": [{"host": h, "path": p, "port": port, "node": self.store.node_uuid}
                       for (h, p), port in zip(parsed, ports)],
            "options": {}, "username": str(uuid.uuid4()), "password": str(uuid.uuid4()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        marked: list[str] = []
        try:
            for b in vol["bricks"]:
                marked.append(b["path"])
                self._prepare_brick(vol, b)
            self.save(vol)
        except BaseException:
            for p in marked:
                try:
                    os.removexattr(p, XATTR_VOLUME_ID)
                except OSError:
                    pass
            self.vols.pop(name, None)
            self.store.delete(name)
            raise
        log.info("created volume %s (%s) with %d bricks%s", name, vid, len(parsed),
                 f" ({len(parsed) // replica} x {replica}{' arbiter 1' if arbiter else ''})"
                 if replica > 1 else "")
        return self.public(vol)

    async def cmd_start(self, args: dict[str, Any]) -> Any:
        vol = self.get_vol(args.get("name"))
        force = bool(args.get("force"))
        if vol["status"] == "Started" and not force:
            raise GvolError(f"volume {vol['name']} is already started")
        down = [b for b in self.local_bricks(vol) if not self.proc(vol, b).alive()]
        await self.start_bricks(vol, down)
        for b in down:
            self.proc(vol, b).restarts.clear()
        if vol["status"] != "Started":
            vol["status"] = "Started"
            self.save(vol)
        log.info("volume %s started (%d bricks started)", vol["name"], len(down))
        return {"name": vol["name"], "started": [f"{b['host']}:{b['path']}" for b in down]}

    async def cmd_stop(self, args: dict[str, Any]) -> Any:
        vol = self.get_vol(args.get("name"))
        force = bool(args.get("force"))
        if vol["status"] != "Started" and not force:
            raise GvolError(f"volume {vol['name']} is not started")
        if vol["status"] == "Started":
            vol["status"] = "Stopped"
            self.save(vol)
        await self.stop_bricks([self.proc(vol, b) for b in self.local_bricks(vol)])
        log.info("volume %s stopped", vol["name"])
        return {"name": vol["name"]}

    async def cmd_delete(self, args: dict[str, Any]) -> Any:
        vol = self.get_vol(args.get("name"))
        if vol["status"] == "Started":
            raise GvolError(f"volume {vol['name']} is started; stop it first "
                            f"(gvol volume stop {vol['name']})")
        await self.stop_bricks([self.proc(vol, b) for b in self.local_bricks(vol)])
        self.store.delete(vol["name"])
        del self.vols[vol["name"]]
        for key in [k for k in self.procs if k[0] == vol["name"]]:
            del self.procs[key]
        log.info("deleted volume %s", vol["name"])
        return {"name": vol["name"]}

    async def cmd_set(self, args: dict[str, Any]) -> Any:
        vol = self.get_vol(args.get("name"))
        key = str(args.get("key") or "")
        if "value" not in args or args["value"] is None:
            raise GvolError(f"volume set {key}: a value is required")
        value = volgen.validate_option(key, str(args["value"]))
        candidate = {**vol, "options": {**vol.get("options", {}), key: value}}
        volgen.check_builds(candidate, key)
        vol.setdefault("options", {})[key] = value
        self.save(vol)
        return self._applied(vol, key)

    async def cmd_reset(self, args: dict[str, Any]) -> Any:
        vol = self.get_vol(args.get("name"))
        key = args.get("key")
        opts = vol.setdefault("options", {})
        if key and key != "all":
            if key not in volgen.OPTIONS and key not in opts:
                volgen.validate_option(key, "")
            keys = [key] if key in opts else []
        else:
            keys = list(opts)
        if not keys:
            return {"name": vol["name"], "reset": [], "restart_needed": False}
        for k in keys:
            del opts[k]
        self.save(vol)
        restart = any(self._applied(vol, k)["restart_needed"] for k in keys)
        return {"name": vol["name"], "reset": keys, "restart_needed": restart}

    def _applied(self, vol: dict[str, Any], key: str) -> dict[str, Any]:
        o = volgen.OPTIONS.get(key)
        scope = o.scope if o else ""
        return {"name": vol["name"], "key": key, "scope": scope,
                "restart_needed": vol["status"] == "Started" and scope in ("brick", "both")}

    # ------------------------------------------------------------ server
    async def dispatch(self, req: Any, trusted: bool) -> dict[str, Any]:
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": "bad request: expected {cmd, args}"}
        cmd = req["cmd"]
        args = req.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "bad request: args must be a map"}
        entry = self.commands.get(cmd)
        if entry is None:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        handler, mutating = entry
        if mutating and not trusted:
            secret = args.get("secret")
            if not (isinstance(secret, str)
                    and hmac.compare_digest(secret.encode(), self.store.secret.encode())):
                return {"ok": False, "error": f"{cmd} over TCP needs the cluster secret "
                        "(GVOL_SECRET); use the local unix socket instead"}
        args = {k: v for k, v in args.items() if k != "secret"}
        try:
            with collapsed():
                if mutating:
                    async with self.lock:
                        result = await handler(args)
                else:
                    result = await handler(args)
            return {"ok": True, "result": result}
        except GvolError as e:
            return {"ok": False, "error": e.message}
        except Exception as e:
            log.exception("command %s failed", cmd)
            return {"ok": False, "error": f"internal error in gvold: {type(e).__name__}: "
                    f"{describe(e)} (see the gvold log)"}

    async def handle(self, stream: trio.abc.Stream, trusted: bool) -> None:
        """One client connection: request/response pairs in turn until EOF or idle timeout.
        Catches its own errors (a broken client must not take the server down)."""
        try:
            async with stream:
                buf = bytearray()
                while True:
                    body = None
                    with trio.move_on_after(IDLE_TIMEOUT):
                        body = await _read_frame(stream, buf)
                    if body is None:
                        return
                    resp = await self.dispatch(decode_body(body), trusted)
                    await stream.send_all(encode_frame(resp))
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError) as e:
            log.debug("connection ended: %s", e)
        except Exception:
            log.exception("connection handler failed")

    async def _unix_listener(self) -> trio.SocketListener:
        # bind and listen on a temporary name, then rename: the socket path appears only once
        # it accepts connections (a stale one is replaced; we hold the state dir's lock)
        path = self.store.socket_path
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # never world-accessible, not even between bind and chmod
        try:
            await sock.bind(str(tmp))
        finally:
            os.umask(old)
        os.chmod(tmp, 0o600)
        sock.listen(128)
        os.replace(tmp, path)
        return trio.SocketListener(sock)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.load()
        self.adopt()
        try:
            with collapsed():
                async with trio.open_nursery() as nursery:
                    await self._serve(nursery, task_status)
        finally:
            self.store.socket_path.unlink(missing_ok=True)

    async def _serve(self, nursery: trio.Nursery, task_status: Any) -> None:
        try:
            tcp = await trio.open_tcp_listeners(self.cfg.port, host=self.cfg.listen or None)
        except OSError as e:
            raise GvolError(f"cannot listen on TCP port {self.cfg.port}: {e.strerror}"
                            ) from None
        unix = await self._unix_listener()  # last: its path appearing means "ready"
        self.tcp_port = tcp[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, partial(self.handle, trusted=True), [unix])
        nursery.start_soon(trio.serve_listeners, partial(self.handle, trusted=False), tcp)
        nursery.start_soon(self._boot_then_supervise)
        nursery.start_soon(self.heal.run)
        log.info("gvold %s ready: unix socket %s, tcp port %d, state %s", self.store.node_uuid,
                 self.store.socket_path, self.tcp_port, self.cfg.state_dir)
        task_status.started(self.tcp_port)
        sd_notify("READY=1")

    async def _boot_then_supervise(self) -> None:
        await self.boot()
        await self.supervise()


# ---------------------------------------------------------------- process entry
async def _read_frame(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes | None:
    """The next frame's body from `stream` (leftover bytes stay in `buf`); None at EOF."""
    while True:
        if len(buf) >= 4:
            n = frame_length(bytes(buf[:4]))
            if len(buf) >= 4 + n:
                body = bytes(buf[4:4 + n])
                del buf[:4 + n]
                return body
        chunk = await stream.receive_some(1 << 16)
        if not chunk:
            return None
        buf += chunk


class _Locked(GvolError):
    pass


def _lock_state_dir(state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "gvold.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            other = os.read(fd, 32).decode().strip()
        except OSError:
            other = "?"
        os.close(fd)
        raise _Locked(f"another gvold (pid {other}) is running with state dir {state_dir}"
                      ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    # a socket left by a gvold that crashed: remove it at once, so nobody mistakes it for ours
    (state_dir / "gvold.sock").unlink(missing_ok=True)
    return fd


async def _run(gv: Gvold, ready: Callable[[], None] | None) -> None:
    with collapsed():
        await _serve_until_signal(gv, ready)


async def _serve_until_signal(gv: Gvold, ready: Callable[[], None] | None) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            await nursery.start(gv.serve)
            if ready:
                ready()
            async for sig in sigs:
                if sig == signal.SIGHUP:
                    log.info("SIGHUP ignored")
                    continue
                log.info("received %s; shutting down (bricks keep running)",
                         signal.Signals(sig).name)
                sd_notify("STOPPING=1")
                nursery.cancel_scope.cancel()
                break


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gvold", description="gvol management daemon")
    p.add_argument("--state-dir", default=os.environ.get("GVOL_STATE_DIR", DEFAULT_STATE_DIR),
                   help="state directory (env GVOL_STATE_DIR; default %(default)s)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GVOL_PORT", DEFAULT_PORT)),
                   help="TCP port for remote CLIs and volfile fetches (env GVOL_PORT; "
                        "default %(default)s)")
    p.add_argument("--listen", default="", help="TCP address to listen on (default: all)")
    p.add_argument("--log-dir", default=None,
                   help=f"logs (bricks/ below it); default {DEFAULT_LOG_DIR} if writable, "
                        "else STATE_DIR/logs")
    p.add_argument("--base-port", type=int, default=bricks.BASE_PORT,
                   help="first brick port (default %(default)s)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--foreground", action="store_true",
                   help="do not detach (systemd Type=notify and tests use this)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    cfg = Config(state_dir=Path(a.state_dir).absolute(), port=a.port, listen=a.listen,
                 log_dir=Path(a.log_dir).absolute() if a.log_dir else None,
                 base_port=a.base_port)
    level = getattr(logging, a.log_level.upper(), logging.INFO)
    if a.foreground:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            _lock_state_dir(cfg.state_dir)
            trio.run(_run, Gvold(cfg), None)
        except GvolError as e:
            print(f"gvold: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            pass
        except Exception as e:  # a bug: the traceback to the log, the cause on one line
            log.exception("gvold failed")
            print(f"gvold: {describe(e)}", file=sys.stderr)
            sys.exit(1)
        return
    _daemonize(cfg, level)


def _daemonize(cfg: Config, level: int) -> None:
    """Detach; the parent exits 0 once the daemon is serving, or 1 with its error."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            msg = r.read().decode(errors="replace")
        if msg.startswith("OK"):
            sys.exit(0)
        print(f"gvold: {msg.removeprefix('ERR ') or 'failed to start (see its log)'}",
              file=sys.stderr)
        sys.exit(1)
    os.close(rfd)
    os.setsid()
    gv = Gvold(cfg)
    logfile = gv.log_dir / "gvold.log"
    try:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        lf = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(lf, 1)
        os.dup2(lf, 2)
        os.chdir("/")
        logging.basicConfig(level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        _lock_state_dir(cfg.state_dir)

        def ready() -> None:
            os.write(wfd, b"OK")
            os.close(wfd)

        trio.run(_run, gv, ready)
    except BaseException as e:
        try:
            os.write(wfd, f"ERR {describe(e)}".encode())
        except OSError:
            pass
        if not isinstance(e, (GvolError, KeyboardInterrupt, SystemExit)):
            log.exception("gvold failed")
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
