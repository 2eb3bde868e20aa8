"""gvol: the command line (GlusterFS's grammar: runbooks port by replacing `gluster` by `gvol`).

    gvol [--server HOST[:PORT]] [--mode=script] volume create VOL [replica N [arbiter 1]]
                                                      HOST:/PATH... [force]
    gvol volume start VOL [force] | stop VOL [force] | delete VOL
    gvol volume info [VOL|all] [--volfile] [--json] | status [VOL] [--json] | list [--json]
    gvol volume set VOL KEY VALUE | set help [--json] | get VOL KEY|all [--json]
    gvol volume reset VOL [KEY|all]
    gvol volume heal VOL [full] | heal VOL info [summary|split-brain] [--json]
    gvol volume heal VOL statistics [--json]
    gvol volume heal VOL split-brain {bigger-file FILE | latest-mtime FILE |
                                      source-brick HOST:BRICK [FILE]}
    gvol mount VOL MOUNTPOINT [-o OPTS]
    gvol peer status [--json] | pool list [--json]

Which gvold: `--server HOST[:PORT]` (TCP, port 24200 by default; mutating commands then need the
cluster secret from GVOL_SECRET or a readable STATE_DIR/secret), else the unix socket
`$GVOL_STATE_DIR/gvold.sock` (default /var/lib/gvol/gvold.sock).

Exit codes: 0 ok, 1 error (`gvol: <message>` on stderr), 2 usage error, 3 gvold unreachable.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import mgmt_client
from .errors import DaemonUnreachable, GvolError, UsageError
from .mgmt_client import DEFAULT_PORT, Target

DEFAULT_STATE_DIR = "/var/lib/gvol"
LONG_TIMEOUT = 180.0  # start/stop wait for brick processes

app = typer.Typer(name="gvol", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="gvol: manage gvol volumes (GlusterFS-style CLI).")
volume_app = typer.Typer(no_args_is_help=True, help="create, start, inspect and change volumes")
peer_app = typer.Typer(no_args_is_help=True, help="the trusted pool (this node only for now)")
pool_app = typer.Typer(no_args_is_help=True, help="the trusted pool (this node only for now)")
app.add_typer(volume_app, name="volume")
app.add_typer(peer_app, name="peer")
app.add_typer(pool_app, name="pool")


@dataclass
class Ctx:
    target: Target
    tcp: bool
    state_dir: Path
    secret: str | None

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, mutating: bool = False,
             timeout: float = 30.0) -> Any:
        args = dict(args or {})
        if mutating and self.tcp and self.secret:
            args["secret"] = self.secret
        return mgmt_client.call(self.target, cmd, args, timeout=timeout)


_CTX: list[Ctx] = []


def _ctx() -> Ctx:
    return _CTX[-1]


def _out() -> Console:
    tty = sys.stdout.isatty()
    return Console(highlight=False, no_color=not tty, width=None if tty else 200,
                   emoji=False, markup=False)


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _json(obj: Any) -> None:
    _print(json.dumps(obj, indent=2, sort_keys=False))


def _table(*cols: str) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in cols:
        t.add_column(c, no_wrap=True)
    return t


def _row(t: Table, *cells: Any) -> None:
    t.add_row(*[Text("" if c is None else str(c)) for c in cells])


def _usage(msg: str) -> NoReturn:
    """A usage error found after typer parsed the words: exit 2, one line naming the fix."""
    words, argv = [], iter(sys.argv[1:])
    for w in argv:
        if w in ("--server", "--state-dir", "--mode"):
            next(argv, None)
        elif not w.startswith("-") and len(words) < 2:
            words.append(w)
    raise UsageError(f"{msg} (see: gvol {' '.join(words)} --help)")


@app.callback()
def _main(
    server: str | None = typer.Option(
        None, "--server", envvar="GVOL_SERVER", metavar="HOST[:PORT]",
        help="talk to the gvold at HOST[:PORT] over TCP instead of the local unix socket"),
    state_dir: str | None = typer.Option(
        None, "--state-dir", envvar="GVOL_STATE_DIR",
        help=f"state directory of the local gvold (default {DEFAULT_STATE_DIR})"),
    mode: str | None = typer.Option(None, "--mode",
                                       help="accepted for GlusterFS compatibility; ignored"),
) -> None:
    sd = Path(state_dir or DEFAULT_STATE_DIR)
    secret = os.environ.get("GVOL_SECRET")
    if server:
        target: Target = mgmt_client.parse_server(server, DEFAULT_PORT)
        if secret is None:
            try:
                secret = (sd / "secret").read_text().strip()
            except OSError:
                secret = None
    else:
        target = str(sd / "gvold.sock")
    _CTX.append(Ctx(target, bool(server), sd, secret))


# ---------------------------------------------------------------- volume
_CREATE_KEYWORDS = ("replica", "arbiter", "disperse", "disperse-data", "redundancy",
                    "transport")


@volume_app.command("create", context_settings={"ignore_unknown_options": True})
def volume_create(
    volname: str = typer.Argument(..., metavar="VOLNAME"),
    rest: list[str] = typer.Argument(..., metavar="[replica N] HOST:/PATH... [force]"),
) -> None:
    """Create a volume from bricks (directories on this node)."""
    args: dict[str, Any] = {"name": volname, "bricks": [], "force": False}
    i = 0
    while i < len(rest):
        t = rest[i]
        if t in _CREATE_KEYWORDS:
            if i + 1 >= len(rest):
                _usage(f"{t} needs a value")
            v = rest[i + 1]
            if t != "transport":
                try:
                    args[t] = int(v)
                except ValueError:
                    _usage(f"{t} needs a number, got {v!r}")
            else:
                args[t] = v
            i += 2
            continue
        if t == "force":
            args["force"] = True
        elif t.startswith("-"):
            _usage(f"unknown option {t}")
        else:
            args["bricks"].append(t)
        i += 1
    if not args["bricks"]:
        _usage("at least one brick (HOST:/PATH) is required")
    _ctx().call("volume-create", args, mutating=True)
    _print(f"volume create: {volname}: success: please start the volume to access data")


def _force(word: str | None) -> bool:
    if word is None:
        return False
    if word != "force":
        _usage(f"unexpected argument {word!r} (only 'force' is accepted)")
    return True


@volume_app.command("start")
def volume_start(volname: str = typer.Argument(..., metavar="VOLNAME"),
                 force: str | None = typer.Argument(None, metavar="[force]")) -> None:
    """Start the bricks of a volume (force: also start the bricks that are down)."""
    _ctx().call("volume-start", {"name": volname, "force": _force(force)}, mutating=True,
                timeout=LONG_TIMEOUT)
    _print(f"volume start: {volname}: success")


@volume_app.command("stop")
def volume_stop(volname: str = typer.Argument(..., metavar="VOLNAME"),
                force: str | None = typer.Argument(None, metavar="[force]"),
                mode: str | None = typer.Option(None, "--mode", help="ignored")) -> None:
    """Stop the bricks of a volume (no confirmation prompt)."""
    _ctx().call("volume-stop", {"name": volname, "force": _force(force)}, mutating=True,
                timeout=LONG_TIMEOUT)
    _print(f"volume stop: {volname}: success")


@volume_app.command("delete")
def volume_delete(volname: str = typer.Argument(..., metavar="VOLNAME"),
                  mode: str | None = typer.Option(None, "--mode", help="ignored")) -> None:
    """Delete a stopped volume (the data stays in the brick directories)."""
    _ctx().call("volume-delete", {"name": volname}, mutating=True, timeout=LONG_TIMEOUT)
    _print(f"volume delete: {volname}: success")


@volume_app.command("list")
def volume_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Names of all volumes."""
    names = _ctx().call("volume-list")
    if as_json:
        _json(names)
    elif not names:
        _print("No volumes present in cluster")
    else:
        for n in names:
            _print(n)


@volume_app.command("info")
def volume_info(volname: str | None = typer.Argument(None, metavar="[VOLNAME|all]"),
                volfile: bool = typer.Option(False, "--volfile",
                                             help="print the client volfile"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Volume definitions, in GlusterFS's format."""
    c = _ctx()
    if volfile:
        if not volname or volname == "all":
            _usage("--volfile needs a volume name")
        res = c.call("volume-volfile", {"name": volname})
        if as_json:
            _json(res)
        else:
            sys.stdout.write(res["client"])
        return
    vols = c.call("volume-info", {"name": volname})
    if isinstance(vols, dict):  # one named volume
        vols = [vols] if not as_json else vols
    if as_json:
        _json(vols)
        return
    if not vols:
        _print("No volumes present")
        return
    for v in vols:
        _print()
        _print(f"Volume Name: {v['name']}")
        _print(f"Type: {v['type']}")
        _print(f"Volume ID: {v['id']}")
        _print(f"Status: {v['status']}")
        _print(f"Snapshot Count: {v.get('snapshot_count', 0)}")
        _print(f"Number of Bricks: {_brick_count(v)}")
        _print(f"Transport-type: {v.get('transport', 'tcp')}")
        _print("Bricks:")
        for i, b in enumerate(v["bricks"], 1):
            _print(f"Brick{i}: {b['name']}" + (" (arbiter)" if b.get("arbiter") else ""))
        _print("Options Reconfigured:")
        for k, val in v["options"].items():
            _print(f"{k}: {val}")


def _brick_count(v: dict[str, Any]) -> str:
    """GlusterFS's `Number of Bricks`: 6, 2 x 3 = 6, or 1 x (2 + 1) = 3."""
    n = len(v["bricks"])
    r = int(v.get("replica_count", 1) or 1)
    if r <= 1:
        return str(n)
    if v.get("arbiter_count"):
        return f"{n // r} x ({r - 1} + 1) = {n}"
    return f"{n // r} x {r} = {n}"


@volume_app.command("status")
def volume_status(volname: str | None = typer.Argument(None, metavar="[VOLNAME|all]"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Brick processes of volumes: port, online, pid."""
    res = _ctx().call("volume-status", {"name": volname})
    if as_json:
        _json(res)
        return
    if isinstance(res, dict):  # one named volume
        res = [res]
    if not res:
        _print("No volumes present")
        return
    con = _out()
    for i, v in enumerate(res):
        if i:
            _print()
        _print(f"Status of volume: {v['name']} ({v['status']})")
        sets = any("replica_set" in b for b in v["bricks"])
        t = _table("Brick", "TCP Port", "Online", "Pid", *(["Replica set"] if sets else []))
        for b in v["bricks"]:
            extra = []
            if sets:
                extra = [f"{b['replica_set']}" + (" (arbiter)" if b.get("arbiter") else "")]
            _row(t, f"Brick {b['brick']}", b["port"], "Y" if b["online"] else "N",
                 b["pid"] if b["pid"] is not None else "N/A", *extra)
        con.print(t)


@volume_app.command("set", context_settings={"ignore_unknown_options": True})
def volume_set(volname: str = typer.Argument(..., metavar="VOLNAME|help"),
               key: str | None = typer.Argument(None, metavar="KEY"),
               value: str | None = typer.Argument(None, metavar="VALUE"),
               as_json: bool = typer.Option(False, "--json", help="with help: as JSON")) -> None:
    """Set a volume option; `gvol volume set help` lists every option."""
    if volname == "help" and key is None:
        _set_help(as_json)
        return
    if key is None or value is None:
        _usage("volume set needs VOLNAME KEY VALUE (every KEY: gvol volume set help)")
    if as_json:
        _usage("--json goes with: gvol volume set help")
    res = _ctx().call("volume-set", {"name": volname, "key": key, "value": value},
                      mutating=True)
    _print("volume set: success")
    if res.get("restart_needed"):
        _print(f"note: {key} is a brick option; it applies when the bricks restart "
               f"(gvol volume stop {volname} && gvol volume start {volname})")


def _set_help(as_json: bool) -> None:
    """Every `volume set` key, from the option tables of the translators that read them."""
    from . import volgen  # the translators: only this command needs them here

    rows = volgen.option_help()
    if as_json:
        _json(rows)
        return
    out = _out()
    for r in rows:
        rng = f", range {r['range']}" if r["range"] else ""
        out.print(f"Option: {r['key']}\nDefault Value: {r['default']}\n"
                  f"Type: {r['type']}{rng}; applies to the {r['where']} "
                  f"({r['translator']} {r['option']})\nDescription: {r['description']}\n")


@volume_app.command("reset")
def volume_reset(volname: str = typer.Argument(..., metavar="VOLNAME"),
                 key: str | None = typer.Argument(None, metavar="[KEY|all]"),
                 force: str | None = typer.Argument(None, metavar="[force]")) -> None:
    """Reset one option (or all) to its default."""
    _force(force)
    res = _ctx().call("volume-reset", {"name": volname, "key": key}, mutating=True)
    _print("volume reset: success")
    if res.get("restart_needed"):
        _print("note: brick options changed; they apply when the bricks restart "
               f"(gvol volume stop {volname} && gvol volume start {volname})")


@volume_app.command("get")
def volume_get(volname: str = typer.Argument(..., metavar="VOLNAME"),
               key: str = typer.Argument("all", metavar="KEY|all"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Show option values (set or default)."""
    res = _ctx().call("volume-get", {"name": volname, "key": key})
    if as_json:
        _json(res)
        return
    t = _table("Option", "Value")
    for o in res:
        _row(t, o["key"], o["value"])
    _out().print(t)


@volume_app.command("heal", context_settings={"ignore_unknown_options": True})
def volume_heal(volname: str = typer.Argument(..., metavar="VOLNAME"),
                rest: list[str] = typer.Argument(None, metavar="[full|info [summary|split-brain]"
                                                 "|statistics|split-brain POLICY ...]"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Heal a replicated volume (index crawl, or `full`), show what needs heal, resolve
    split-brain: bigger-file FILE | latest-mtime FILE | source-brick HOST:BRICK [FILE]."""
    rest = list(rest or [])
    c = _ctx()
    if not rest or rest == ["full"]:
        full = bool(rest)
        res = c.call("volume-heal", {"name": volname, "full": full}, mutating=True)
        if as_json:
            _json(res)
        else:
            _print(f"Launching heal operation to perform {'full' if full else 'index'} self "
                   f"heal on volume {volname} has been successful")
            _print(f"Use heal info commands to check status (gvol volume heal {volname} info)")
        return
    if rest[0] in ("info", "statistics"):
        what = rest[0] if len(rest) == 1 else rest[1]
        if rest[0] == "statistics" and len(rest) > 1:
            _usage("statistics takes no argument")
        if len(rest) > 2 or what not in ("info", "summary", "split-brain", "statistics"):
            _usage("heal VOL info [summary|split-brain]")
        res = c.call("volume-heal-info", {"name": volname, "what": what},
                     timeout=LONG_TIMEOUT)
        if as_json:
            _json(res)
            return
        _print_heal_info(res, what)
        return
    if rest[0] == "split-brain":
        args: dict[str, Any] = {"name": volname}
        if len(rest) < 2:
            _usage("split-brain needs a policy: bigger-file FILE | latest-mtime FILE | "
                   "source-brick HOST:BRICK [FILE]")
        args["policy"] = rest[1]
        if rest[1] == "source-brick":
            if len(rest) not in (3, 4):
                _usage("split-brain source-brick HOST:BRICK [FILE]")
            args["brick"] = rest[2]
            args["file"] = rest[3] if len(rest) == 4 else None
        elif rest[1] in ("bigger-file", "latest-mtime"):
            if len(rest) != 3:
                _usage(f"split-brain {rest[1]} FILE")
            args["file"] = rest[2]
        else:
            _usage(f"unknown split-brain policy {rest[1]!r} (bigger-file, latest-mtime, "
                   "source-brick)")
        res = c.call("volume-heal-split-brain", args, mutating=True, timeout=LONG_TIMEOUT)
        if as_json:
            _json(res)
            return
        for r in res["resolved"]:
            _print(f"Healed gfid:{r['gfid']}" + (f" ({', '.join(r['healed'])})"
                                                  if r["healed"] else ""))
        if not res["resolved"]:
            _print("Nothing to resolve")
        return
    _usage(f"unknown heal command {' '.join(rest)!r}")


def _entry_name(e: dict[str, Any]) -> str:
    """A heal entry as GlusterFS prints it: its path, or <gfid:...> when no brick knows one."""
    return e.get("path") or f"<gfid:{e['gfid']}>"


def _print_heal_info(res: dict[str, Any], what: str) -> None:
    if what == "statistics":
        _print(f"Heal of volume {res['name']}: "
               f"{'running (' + res['running'] + ')' if res['running'] else 'idle'}"
               + (f", queued: {res['queued']}" if res["queued"] else ""))
        p = res.get("progress") or {}
        if p:
            _print(f"In progress: {p.get('scanned', 0)} scanned, {p.get('healed', 0)} healed, "
                   f"{p.get('split_brain', 0)} in split-brain, {p.get('failed', 0)} failed")
        last = res.get("last") or {}
        if last:
            if "error" in last:
                _print(f"Last {last['crawl']} crawl failed: {last['error']}")
            else:
                _print(f"Last {last['crawl']} crawl: {last['scanned']} scanned, "
                       f"{last['healed']} healed, {last['split_brain']} in split-brain, "
                       f"{last['failed']} failed, {last['remaining']} left")
        return
    for s in res["replica_sets"]:
        if what == "split-brain":
            ents = s["split_brain"]
            _print(f"Replica set {s['replica_set']}:")
            for e in ents:
                names = f" (names: {', '.join(e['names'])})" if e.get("names") else ""
                _print(f"{_entry_name(e)} {'/'.join(e['kinds'])}{names}")
            _print(f"Number of entries in split-brain: {len(ents)}")
            _print()
            continue
        for b in s["bricks"]:
            _print(f"Brick {b['brick']}")
            if what == "summary":
                _print(f"Status: {b['status']}")
                if b["total"] is None:
                    _print("Total Number of entries: -")
                else:
                    _print(f"Total Number of entries: {b['total']}")
                    _print(f"Number of entries in heal pending: {b['pending']}")
                    _print(f"Number of entries in split-brain: {b['split_brain']}")
                    _print(f"Number of entries possibly healing: {b['possibly_healing']}")
            else:
                for e in b["entries"] or []:
                    tag = " - Is in split-brain" if e.get("split_brain") else \
                        (" - Possibly undergoing heal" if e.get("dirty_only") else "")
                    _print(f"{_entry_name(e)}{tag}")
                _print(f"Status: {b['status']}")
                _print(f"Number of entries: {'-' if b['count'] is None else b['count']}")
            _print()


# ---------------------------------------------------------------- mount
@app.command("mount", context_settings={"ignore_unknown_options": False})
def mount(volname: str = typer.Argument(..., metavar="VOLNAME"),
          mountpoint: str = typer.Argument(...),
          options: str | None = typer.Option(None, "-o", help="mount options (k=v,flag)"),
          foreground: bool = typer.Option(False, "--foreground")) -> None:
    """Mount a started volume with mount.gvol, using this gvold as volfile server."""
    c = _ctx()
    if isinstance(c.target, tuple):
        host, port = c.target
    else:
        info = c.call("node-info")
        listen = info.get("listen") or ""
        host = "127.0.0.1" if listen in ("", "0.0.0.0", "::") else listen
        port = int(info["port"])
    c.call("getspec", {"volname": volname})  # "does not exist" / "is not started"
    h = f"[{host}]" if ":" in host else host
    cmd = [sys.executable, "-m", "fuse.mount", f"{h}:{port}:/{volname}", mountpoint]
    if options:
        cmd += ["-o", options]
    if foreground:
        cmd.append("--foreground")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "")
                                                  .split(os.pathsep) if p and p != root]])
    rc = subprocess.call(cmd, env=env)
    if rc:
        raise typer.Exit(rc)


# ---------------------------------------------------------------- peers
@peer_app.command("status")
def peer_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Other nodes of the pool (none yet: single node)."""
    res = _ctx().call("peer-status")
    if as_json:
        _json(res)
        return
    _print(f"Number of Peers: {len(res['peers'])}")
    for p in res["peers"]:
        _print()
        _print(f"Hostname: {p['hostname']}")
        _print(f"Uuid: {p['uuid']}")
        _print(f"State: {p['state']}")


@peer_app.command("probe")
def peer_probe(host: str = typer.Argument(...)) -> None:
    """Add a node to the pool (not supported yet)."""
    raise GvolError(f"peer probe {host}: multi-node pools are not supported yet")


@pool_app.command("list")
def pool_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every node of the pool, this one included."""
    res = _ctx().call("pool-list")
    if as_json:
        _json(res)
        return
    t = _table("UUID", "Hostname", "State")
    for p in res:
        _row(t, p["uuid"], p["hostname"], p["state"])
    _out().print(t)


# ---------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="gvol")
    except DaemonUnreachable as e:
        print(f"gvol: {e.message}", file=sys.stderr)
        print("gvol: is gvold running? start it with: systemctl start gvold (or run: gvold)",
              file=sys.stderr)
        sys.exit(e.exit_code)
    except GvolError as e:
        print(f"gvol: {e.message}", file=sys.stderr)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
