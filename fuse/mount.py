"""`mount.gvol`: mount a gvol volume through FUSE.

    mount.gvol SERVER[:PORT][,SERVER2...]:/VOL MOUNTPOINT [-o k=v,flag,...] [--foreground]
    mount.gvol --volfile FILE MOUNTPOINT [-o ...] [--foreground]     (developer/test form)

`mount -t gvol HOST:/VOL /mnt -o opts` runs `/sbin/mount.gvol HOST:/VOL /mnt -o opts` (with
mount(8)'s helper flags -s, -f, -n, -v, -N, -t, which are accepted). fstab-only options
(`_netdev`, `noauto`, `defaults`, `nofail`, `x-systemd.*`...) are ignored.

Without --foreground the command starts the client as a detached process and returns 0 once
the mount is live (or prints the client's error and exits non-zero). The client logs to
`log-file=` (default /var/log/gvol/mnt-<mountpoint-dashed>.log), or to stderr in the foreground.

Exit codes (mount(8)'s helper convention): 0 mounted, 1 bad command line, 32 mount failure.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import trio

from translators.errgroups import describe

from .ops import FuseOptions, GvolOperations

log = logging.getLogger("gvol.mount")

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_FAIL = 32
DEFAULT_PORT = 24200
LOG_DIR = "/var/log/gvol"

# fstab/mount(8) options that mean nothing to the client
_IGNORED = {"_netdev", "noauto", "auto", "defaults", "rw", "nofail", "user", "nouser", "users",
            "owner", "group", "netdev", "fail"}
_IGNORED_PREFIXES = ("x-", "comment=", "fuse-", "transport=")
# generic mount flags handed to the kernel as they are
_KERNEL_FLAGS = {"ro", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime", "atime",
                 "nodiratime", "diratime", "relatime", "norelatime", "strictatime", "lazytime",
                 "sync", "async", "dirsync"}
_LOG_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
               "WARNING": logging.WARNING, "WARN": logging.WARNING, "ERROR": logging.ERROR,
               "CRITICAL": logging.CRITICAL, "NONE": logging.CRITICAL + 10}


class MountError(Exception):
    """A user-facing failure: printed as one line `mount.gvol: <message>`, no traceback."""


# ------------------------------------------------------------------ configuration
@dataclass
class MountConfig:
    mountpoint: str
    volname: str = ""
    servers: list[tuple[str, int]] = field(default_factory=list)
    volfile: str | None = None  # local volfile instead of fetching from gvold
    fsname: str = ""
    log_file: str | None = None
    log_level: str = "INFO"
    fuse: FuseOptions = field(default_factory=FuseOptions)
    kernel_flags: list[str] = field(default_factory=list)
    auto_unmount: bool = False
    fetch_timeout: float = 10.0
    connect_timeout: float = 5.0
    startup_timeout: float = 30.0
    fake: bool = False  # check everything, do not mount (mount -f)
    # the kernel reads ahead 128 KiB per request by default; FUSE allows 1 MiB requests
    read_ahead_kb: int = 1024
    warnings: list[str] = field(default_factory=list)


def _port_from_env() -> int:
    try:
        return int(os.environ.get("GVOL_PORT", DEFAULT_PORT))
    except ValueError:
        return DEFAULT_PORT


def parse_source(spec: str, default_port: int) -> tuple[list[tuple[str, int]], str]:
    """'HOST[:PORT][,HOST2[:PORT]]:/VOL' (IPv6 in brackets) -> ([(host, port)...], volname)."""
    from volmgr.errors import GvolError
    from volmgr.mgmt_client import parse_server

    servers_part, sep, vol = spec.rpartition(":")
    if not sep or not servers_part:
        raise MountError(f"bad volume {spec!r}: expected SERVER:/VOLUME")
    vol = vol.strip("/")
    if not vol:
        raise MountError(f"bad volume {spec!r}: no volume name")
    if "/" in vol:
        raise MountError(f"bad volume {spec!r}: subdirectory mounts are not supported")
    try:
        servers = [parse_server(s, default_port) for s in servers_part.split(",") if s]
    except GvolError as e:
        raise MountError(str(e)) from None
    return servers, vol


def _parse_timeout(key: str, val: str) -> float:
    try:
        t = float(val)
    except ValueError:
        raise MountError(f"option {key}: expected seconds, got {val!r}") from None
    if t < 0:
        raise MountError(f"option {key}: must not be negative")
    return t


def _flag(key: str, val: str | None) -> bool:
    if val is None:
        return True
    v = val.strip().lower()
    if v in ("on", "yes", "true", "enable", "1"):
        return True
    if v in ("off", "no", "false", "disable", "0"):
        return False
    raise MountError(f"option {key}: expected yes or no, got {val!r}")


def apply_options(cfg: MountConfig, opts: list[str], default_port: int,
                  sloppy: bool = False) -> None:
    """Apply fstab-style `-o` options (each element may hold several, comma-separated)."""
    fo: dict = {}
    for group in opts:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, val = item.partition("=")
            value = val if eq else None
            if key in _IGNORED or key.startswith(_IGNORED_PREFIXES):
                continue
            if key in _KERNEL_FLAGS and value is None:
                cfg.kernel_flags.append(key)
            elif key in ("backup-volfile-servers", "backupvolfile-server"):
                from volmgr.errors import GvolError
                from volmgr.mgmt_client import parse_server

                try:
                    for s in _split_servers(value or ""):
                        cfg.servers.append(parse_server(s, default_port))
                except GvolError as e:
                    raise MountError(f"option {key}: {e}") from None
            elif key == "entry-timeout":
                fo["entry_timeout"] = _parse_timeout(key, value or "")
            elif key in ("attribute-timeout", "attr-timeout"):
                fo["attr_timeout"] = _parse_timeout(key, value or "")
            elif key == "negative-timeout":
                fo["negative_timeout"] = _parse_timeout(key, value or "")
            elif key in ("writeback-cache", "kernel-writeback-cache"):
                fo["writeback_cache"] = _flag(key, value)
            elif key == "direct-io-mode":
                v = (value or "").lower()
                if v not in ("enable", "disable", "auto", "on", "off", "yes", "no"):
                    raise MountError(f"option {key}: expected enable, disable or auto")
                fo["direct_io"] = v in ("enable", "on", "yes")
            elif key == "selinux":
                fo["selinux"] = _flag(key, value)
            elif key == "acl":
                fo["acl"] = _flag(key, value)
            elif key == "log-file":
                if not value:
                    raise MountError("option log-file: needs a path")
                cfg.log_file = os.path.abspath(value)  # the client runs in /
            elif key == "log-level":
                lvl = (value or "").upper()
                if lvl not in _LOG_LEVELS:
                    raise MountError(f"option log-level: expected one of "
                                     f"{', '.join(_LOG_LEVELS)}, got {value!r}")
                cfg.log_level = lvl
            elif key == "auto-unmount":
                cfg.auto_unmount = _flag(key, value)
            elif key in ("connect-timeout", "fetch-timeout", "startup-timeout"):
                setattr(cfg, key.replace("-", "_"), _parse_timeout(key, value or ""))
            elif key == "read-ahead-kb":
                try:
                    cfg.read_ahead_kb = int(value or "")
                except ValueError:
                    raise MountError(f"option {key}: expected a number of KiB") from None
                if cfg.read_ahead_kb < 0:
                    raise MountError(f"option {key}: must not be negative")
            elif key == "server-port":
                pass  # applied by parse_args before the servers are parsed
            elif not sloppy:
                cfg.warnings.append(f"ignoring unknown option {item!r}")
    if fo:
        cfg.fuse = dataclasses.replace(cfg.fuse, **fo)


def _split_servers(text: str) -> list[str]:
    """'h1:h2:[v6::1]' -> ['h1', 'h2', '[v6::1]'] (colon-separated, IPv6 in brackets)."""
    out: list[str] = []
    cur = ""
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == ":" and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # mount(8): 1 = incorrect invocation
        self.print_usage(sys.stderr)
        print(f"mount.gvol: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mount.gvol", description="Mount a gvol volume through FUSE.",
                epilog="options: backup-volfile-servers=S2:S3, entry-timeout=S, "
                       "attribute-timeout=S, negative-timeout=S, log-file=PATH, log-level=LEVEL, "
                       "writeback-cache, direct-io-mode=enable|disable, acl, selinux, "
                       "auto-unmount, read-ahead-kb=N, server-port=N, connect-timeout=S, ro, "
                       "noatime, ...")
    p.add_argument("args", nargs="*", metavar="SERVER:/VOLUME MOUNTPOINT")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="comma-separated mount options")
    p.add_argument("--volfile", help="build the client graph from this local volfile "
                                     "instead of fetching it from gvold")
    p.add_argument("--foreground", action="store_true",
                   help="serve the mount in this process (log to stderr)")
    p.add_argument("-f", "--fake", action="store_true", help="check everything, do not mount")
    p.add_argument("-s", dest="sloppy", action="store_true", help="ignore unknown options quietly")
    p.add_argument("-n", dest="no_mtab", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", dest="verbose", action="store_true", help="verbose")
    p.add_argument("-N", dest="namespace", help=argparse.SUPPRESS)
    p.add_argument("-t", dest="fstype", help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    return p


def config_from_args(ns: argparse.Namespace) -> MountConfig:
    pos = list(ns.args)
    port = _port_from_env()
    for group in ns.options:
        for item in group.split(","):
            if item.strip().startswith("server-port="):
                try:
                    port = int(item.split("=", 1)[1])
                except ValueError:
                    raise MountError(f"bad option {item.strip()!r}") from None
    if ns.volfile:
        if len(pos) != 1:
            raise MountError("usage: mount.gvol --volfile FILE MOUNTPOINT [-o options]")
        cfg = MountConfig(mountpoint=os.path.abspath(pos[0]), volfile=os.path.abspath(ns.volfile))
    else:
        if len(pos) != 2:
            raise MountError("usage: mount.gvol SERVER[:PORT]:/VOLUME MOUNTPOINT [-o options]")
        servers, vol = parse_source(pos[0], port)
        cfg = MountConfig(mountpoint=os.path.abspath(pos[1]), volname=vol, servers=servers,
                          fsname=f"{pos[0].split(',')[0].rpartition(':')[0]}:/{vol}")
    apply_options(cfg, ns.options, port, sloppy=ns.sloppy)
    return cfg


# ------------------------------------------------------------------ validation
def _unescape_mountinfo(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounted_at(path: str) -> bool:
    """Is something mounted exactly at `path` (per /proc/self/mountinfo)?"""
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                    return True
    except OSError:
        pass
    return False


def check_mountpoint(path: str) -> None:
    """Fail with one clear line unless `path` is an existing, empty, unmounted directory."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist") from None
    except OSError as e:
        if mounted_at(path):
            raise MountError(f"{path} is already a mount point ({e.strerror})") from None
        raise MountError(f"cannot use mount point {path}: {e.strerror}") from None
    import stat as _stat

    if not _stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {path} is not a directory")
    if mounted_at(path):
        raise MountError(f"{path} is already a mount point")
    try:
        with os.scandir(path) as it:
            if next(it, None) is not None:
                raise MountError(f"mount point {path} is not empty")
    except OSError as e:
        raise MountError(f"cannot read mount point {path}: {e.strerror}") from None


def load_volfile(cfg: MountConfig) -> str:
    if cfg.volfile:
        try:
            with open(cfg.volfile, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise MountError(f"cannot read volfile {cfg.volfile}: {e.strerror}") from None
    try:
        from volmgr.errors import GvolError
        from volmgr.mgmt_client import fetch_volfile
    except ImportError as e:  # pragma: no cover - volmgr ships in the same package
        raise MountError(f"cannot fetch volfiles: {e}") from None
    try:
        return fetch_volfile(cfg.servers, cfg.volname, timeout=cfg.fetch_timeout)
    except GvolError as e:
        raise MountError(f"failed to fetch the volume file of {cfg.volname}: {e}") from None
    except OSError as e:
        raise MountError(f"failed to fetch the volume file of {cfg.volname}: {e}") from None


def build_graph(text: str, cfg: MountConfig):
    from translators.volfile import build
    from translators.xlator import GraphError

    try:
        top = build(text)
    except GraphError as e:
        raise MountError(f"bad volume file: {e}") from None
    except Exception as e:  # a translator module that fails to import or construct
        log.exception("building the client graph failed")
        raise MountError(f"cannot build the client graph: {type(e).__name__}: {e}") from None
    if not cfg.fsname:
        cfg.fsname = f"gvol:{top.name}"
    return top


def fuse_mount_options(cfg: MountConfig) -> set[str]:
    # No max_read: libfuse 3 refuses one that pyfuse3's init does not repeat, and without it
    # the kernel and libfuse negotiate 256-page (1 MiB) requests by themselves (FUSE_MAX_PAGES).
    opts = {f"fsname={cfg.fsname}", "subtype=gvol", "default_permissions"}
    if os.geteuid() == 0:
        opts.add("allow_other")
        # a network filesystem mounted by root behaves like a local one unless told otherwise
        flags = set(cfg.kernel_flags)
        if "nosuid" not in flags:
            opts.add("suid")
        if "nodev" not in flags:
            opts.add("dev")
    opts.update(cfg.kernel_flags)
    if cfg.auto_unmount:
        opts.add("auto_unmount")
    return opts


def default_log_file(mountpoint: str) -> str:
    dashed = mountpoint.strip("/").replace("/", "-") or "root"
    return os.path.join(LOG_DIR, f"mnt-{dashed}.log")


# ------------------------------------------------------------------ readiness
class Ready:
    """Tells the waiting parent (through an inherited pipe) that the mount is live or failed.
    Lines: `W <warning>`, then `OK` or `E <error>`."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.done = False

    def _send(self, line: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    def _close(self) -> None:
        self.done = True
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def ok(self, warnings: list[str]) -> None:
        if self.done:
            return
        for w in warnings:
            self._send(f"W {w}")
        self._send("OK")
        self._close()

    def fail(self, msg: str) -> None:
        if self.done:
            return
        if self.fd is None:
            print(f"mount.gvol: {msg}", file=sys.stderr)
        self._send(f"E {msg}")
        self._close()


# ------------------------------------------------------------------ the client process
async def _wait_children(top, timeout: float) -> list[str]:
    """Give the protocol clients `timeout` seconds to connect; names of those still down."""
    clients = [x for x in top.walk() if hasattr(x, "wait_connected")]
    if not clients:
        return []

    async def one(x) -> None:
        try:
            await x.wait_connected(timeout)
        except Exception as e:  # a brick that is not there yet is reported, not fatal
            log.debug("%s: %s", x.name, e)

    with trio.move_on_after(timeout + 1):
        async with trio.open_nursery() as n:
            for x in clients:
                n.start_soon(one, x)
    return [x.name for x in clients if not getattr(x, "connected", True)]


async def serve(cfg: MountConfig, top, ready: Ready, grace: float = 10.0) -> int:
    """Connect the graph, mount, serve the kernel until unmounted or signalled."""
    import pyfuse3

    from translators.volfile import fini_graph, init_graph

    ops = GvolOperations(top, cfg.fuse)
    live = trio.Event()
    ops.on_init = live.set
    ops.on_root_getattr = None
    rc = EXIT_OK
    async with trio.open_nursery() as graph_nursery:
        try:
            await init_graph(top, graph_nursery)
            down = await _wait_children(top, cfg.connect_timeout)
            warnings = list(cfg.warnings)
            if down:
                warnings.append(f"not connected yet (the mount will keep trying): "
                                f"{', '.join(down)}")
                log.warning(warnings[-1])
            try:
                pyfuse3.init(ops, cfg.mountpoint, fuse_mount_options(cfg))
            except RuntimeError as e:
                raise MountError(f"cannot mount on {cfg.mountpoint}: {e}") from None
        except MountError as e:
            ready.fail(str(e))
            rc = EXIT_FAIL
        else:
            log.info("mounting %s on %s", cfg.fsname, cfg.mountpoint)
            try:
                rc = await _serve_kernel(cfg, ops, ready, live, warnings, grace)
            finally:
                pyfuse3.close(unmount=True)
                log.info("unmounted %s", cfg.mountpoint)
        with trio.move_on_after(5):
            await fini_graph(top)
        graph_nursery.cancel_scope.cancel()
    return rc


async def _serve_kernel(cfg: MountConfig, ops: GvolOperations, ready: Ready, live: trio.Event,
                        warnings: list[str], grace: float) -> int:
    import pyfuse3

    async with trio.open_nursery() as n:
        async def main_loop() -> None:
            try:
                await pyfuse3.main()
            finally:
                n.cancel_scope.cancel()

        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for sig in sigs:
                    log.info("signal %s: unmounting %s", signal.Signals(sig).name,
                             cfg.mountpoint)
                    pyfuse3.terminate()
                    break
            # requests still in flight get `grace` seconds to finish
            await trio.sleep(grace)
            log.warning("requests still running after %.0f s; stopping", grace)
            n.cancel_scope.cancel()

        async def startup() -> None:
            # live = the kernel's INIT was answered and a stat of the mountpoint (from a worker
            # thread: this loop must stay free to answer it) reached our root getattr
            answered = trio.Event()
            ops.on_root_getattr = answered.set
            with trio.move_on_after(cfg.startup_timeout):
                await live.wait()
                try:
                    st = await trio.to_thread.run_sync(os.stat, cfg.mountpoint,
                                                       abandon_on_cancel=True)
                except OSError as e:
                    log.warning("stat %s: %s", cfg.mountpoint, e.strerror)
                else:
                    _set_read_ahead(st.st_dev, cfg.read_ahead_kb)
            ops.on_root_getattr = None
            if answered.is_set():
                log.info("mount %s is live", cfg.mountpoint)
                ready.ok(warnings)
            else:
                ready.fail(f"the kernel did not start the mount within {cfg.startup_timeout} s"
                           f" (see the log)")

        n.start_soon(main_loop)
        n.start_soon(signals)
        n.start_soon(startup)
    if not ready.done:  # the session ended before it was ever live
        ready.fail("the FUSE session ended before the mount was live (see the log)")
        return EXIT_FAIL
    return EXIT_OK


def _set_read_ahead(dev: int, kb: int) -> None:
    """Let buffered sequential reads use whole 1 MiB FUSE requests (the mount's bdi)."""
    if kb <= 0:
        return
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(kb))
    except OSError as e:
        log.info("cannot set %s: %s", path, e.strerror)


def _setup_logging(cfg: MountConfig, to_file: bool) -> None:
    level = _LOG_LEVELS.get(cfg.log_level, logging.INFO)
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    if to_file and cfg.log_file:
        handler: logging.Handler = logging.FileHandler(cfg.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root.addHandler(handler)


def run_foreground(cfg: MountConfig, ready: Ready) -> int:
    try:
        check_mountpoint(cfg.mountpoint)
        _setup_logging(cfg, to_file=cfg.log_file is not None)
        top = build_graph(load_volfile(cfg), cfg)
    except MountError as e:
        ready.fail(str(e))
        return EXIT_FAIL
    except OSError as e:
        ready.fail(f"cannot open log file: {e}")
        return EXIT_FAIL
    try:
        return trio.run(serve, cfg, top, ready)
    except BaseException as e:
        log.exception("client failed")
        ready.fail(f"client failed: {describe(e)}")
        return EXIT_FAIL


# ------------------------------------------------------------------ backgrounding
def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_background(cfg: MountConfig, ns: argparse.Namespace) -> int:
    check_mountpoint(cfg.mountpoint)
    log_file = cfg.log_file or default_log_file(cfg.mountpoint)
    try:
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        logf = open(log_file, "ab")
    except OSError as e:
        raise MountError(f"cannot open log file {log_file}: {e.strerror}") from None

    argv = [sys.executable, "-m", "fuse.mount"]
    if cfg.volfile:
        argv += ["--volfile", cfg.volfile, cfg.mountpoint]
    else:
        argv += [ns.args[0], cfg.mountpoint]
    for group in ns.options:
        argv += ["-o", group]
    if cfg.log_file is None:
        argv += ["-o", f"log-file={os.path.abspath(log_file)}"]
    argv.append("--foreground")
    if ns.sloppy:
        argv.append("-s")
    r, w = os.pipe()
    argv += ["--ready-fd", str(w)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [_package_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                 pass_fds=(w,), start_new_session=True, cwd="/", env=env)
    finally:
        os.close(w)
        logf.close()
    deadline = time.monotonic() + cfg.fetch_timeout * max(1, len(cfg.servers)) \
        + cfg.connect_timeout + cfg.startup_timeout + 10
    buf = b""
    with os.fdopen(r, "rb", buffering=0) as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _abandon(child, cfg.mountpoint)
                raise MountError(f"timed out waiting for the client to mount; see {log_file}")
            rl, _, _ = select.select([pipe], [], [], min(left, 1.0))
            if not rl:
                continue
            chunk = pipe.read(4096)
            if chunk:
                buf += chunk
            lines = buf.split(b"\n")
            buf = lines.pop()
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if line.startswith("W "):
                    print(f"mount.gvol: warning: {line[2:]}", file=sys.stderr)
                elif line == "OK":
                    return EXIT_OK
                elif line.startswith("E "):
                    try:
                        child.wait(10)
                    except subprocess.TimeoutExpired:
                        _abandon(child, cfg.mountpoint)
                    raise MountError(line[2:])
            if not chunk:
                try:
                    rc = child.wait(10)
                except subprocess.TimeoutExpired:
                    _abandon(child, cfg.mountpoint)
                    rc = None
                raise MountError(f"the client exited (status {rc}) before the mount was "
                                 f"ready; see {log_file}")


def _abandon(child: subprocess.Popen, mountpoint: str) -> None:
    """Stop a client that did not come up, and make sure it left no mount behind."""
    child.terminate()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if mounted_at(mountpoint):
        subprocess.run(["fusermount3", "-uz", mountpoint], capture_output=True)


# ------------------------------------------------------------------ entry point
def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    ready = Ready(ns.ready_fd)
    try:
        cfg = config_from_args(ns)
        cfg.fake = ns.fake
        if ready.fd is None:  # the background parent already printed them
            for w in cfg.warnings:
                print(f"mount.gvol: warning: {w}", file=sys.stderr)
        cfg.warnings = []
        if ns.fake:  # mount -f: check everything, build the graph, mount nothing
            check_mountpoint(cfg.mountpoint)
            build_graph(load_volfile(cfg), cfg)
            return EXIT_OK
        if ns.foreground:
            return run_foreground(cfg, ready)
        return run_background(cfg, ns)
    except MountError as e:
        ready.fail(str(e))
        return EXIT_USAGE if str(e).startswith("usage:") else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
