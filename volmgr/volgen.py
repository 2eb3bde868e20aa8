"""Volfile generation (GlusterFS's glusterd-volgen.c) and the `volume set` option table.

Pure, synchronous code: a volume definition (the dict stored in vols/<V>/info.json) in,
volfile text out.

Brick graph, bottom-up (one per brick, served by gvol-brickd):

    <V>-posix        storage/posix     directory, volume-id [, thread-count]
    [<V>-arbiter     features/arbiter  replicated volumes: the last brick of each set with
                                       `arbiter 1`: names and metadata only]
    <V>-locks        features/locks
    [<V>-index       features/index    replicated volumes: the heal index, and the changelog
                                       cluster/replicate folds into fops]
    <brick path>     debug/io-stats    (named after the brick path, as GlusterFS does; it is the
                                        `remote-subvolume` clients ask for)
    <V>-server       protocol/server   listen-host, listen-port, volume-name, volume-id,
                                       brick-path, auth.allow, auth.reject, auth.username,
                                       auth.password

Client graph, bottom-up (served to mounts by getspec):

    <V>-client-<N>   protocol/client   remote-host, remote-port, remote-subvolume, volume-name,
                                       volume-id, username, password [, ping-timeout]
    [<V>-replicate-<K> cluster/replicate  replicated volumes: one per replica set (consecutive
                                       bricks), afr-pending-xattr = its clients' names,
                                       arbiter-count, quorum and heal options]
    <V>-dht          cluster/dht       subvolumes: every <V>-replicate-K (or <V>-client-N)
    <V>-create-behind performance/create-behind  (a new small file reaches the bricks in one
                                       request at close; performance.create-behind off: a
                                       pass-through)
    <V>              debug/io-stats    (top, named after the volume)
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any

from translators.volfile import VolumeSpec, build, dump
from translators.xlator import GraphError, Option, lookup_type

from .errors import GvolError
from .store import brick_dashed

log = logging.getLogger(__name__)

POSIX = "storage/posix"
LOCKS = "features/locks"
IO_STATS = "debug/io-stats"
SERVER = "protocol/server"
CLIENT = "protocol/client"
DHT = "cluster/dht"
REPLICATE = "cluster/replicate"
INDEX = "features/index"
ARBITER = "features/arbiter"
CREATE_BEHIND = "performance/create-behind"

DEFAULT_LISTEN_HOST = "0.0.0.0"


def schema_for(type_name: str) -> dict[str, Option]:
    """The options schema of a translator type (its module is imported on demand). gvol ships
    every translator it names: a module that does not import (a missing dependency, a syntax
    error) raises here rather than hiding its options."""
    return dict(lookup_type(type_name).options_schema)


# ---------------------------------------------------------------- volume-set keys
@dataclass(frozen=True)
class VolOption:
    """One `gvol volume set` key: which translator option it sets, and where.

    scope: "brick" (brick volfiles; bricks must restart to apply), "client" (client volfile;
    mounts pick it up when they re-fetch), "both", or "daemon" (read by gvold itself; then
    `schema` validates the value)."""

    key: str
    xlator: str | None
    option: str | None
    scope: str
    doc: str = ""
    schema: Option | None = None


OPTIONS: dict[str, VolOption] = {o.key: o for o in [
    VolOption("auth.allow", SERVER, "auth.allow", "brick",
              "addresses (globs) allowed to connect to the bricks, comma separated; default *"),
    VolOption("auth.reject", SERVER, "auth.reject", "brick",
              "addresses (globs) refused by the bricks, comma separated"),
    VolOption("network.ping-timeout", CLIENT, "ping-timeout", "client",
              "seconds without an answer before a client declares a brick down"),
    VolOption("cluster.lookup-optimize", DHT, "lookup-optimize", "client",
              "trust the layout: a name missing from its hashed brick does not exist"),
    VolOption("cluster.min-free-disk", DHT, "min-free-disk", "client",
              "avoid creating files on bricks with less free space than this"),
    VolOption("cluster.rsync-hash-regex", DHT, "rsync-hash-regex", "client",
              "hash temporary names (rsync's .NAME.XXXXXX) as their final name"),
    VolOption("cluster.extra-hash-regex", DHT, "extra-hash-regex", "client",
              "a further regex whose first group is hashed instead of the name"),
    VolOption("diagnostics.latency-measurement", IO_STATS, "latency-measurement", "both",
              "time every fop (client and bricks)"),
    VolOption("diagnostics.count-fop-hits", IO_STATS, "count-fop-hits", "both",
              "count fops (client and bricks)"),
    VolOption("diagnostics.client-log-level", IO_STATS, "log-level", "client",
              "log level of the client graph"),
    VolOption("diagnostics.brick-log-level", IO_STATS, "log-level", "brick",
              "log level of the brick graphs"),
    VolOption("storage.thread-count", POSIX, "thread-count", "brick",
              "threads doing disk I/O on each brick"),
    VolOption("brick.auto-restart", None, None, "daemon",
              "gvold restarts a brick that died while the volume is started",
              Option("bool", True)),
    VolOption("cluster.quorum-type", REPLICATE, "quorum-type", "client",
              "client quorum: auto (more than half the bricks of a set, or half with the "
              "first), fixed (cluster.quorum-count) or none; without it writes fail (EROFS)"),
    VolOption("cluster.quorum-count", REPLICATE, "quorum-count", "client",
              "bricks of a set that must be up with quorum-type fixed"),
    VolOption("cluster.favorite-child-policy", REPLICATE, "favorite-child-policy", "client",
              "resolve split-brain automatically: none, size, mtime, ctime or majority"),
    VolOption("cluster.eager-lock", REPLICATE, "eager-lock", "client",
              "keep a file's or directory's lock for the fops that follow"),
    VolOption("cluster.post-op-delay-secs", REPLICATE, "post-op-delay-secs", "client",
              "idle seconds before the delayed post-op and unlock"),
    VolOption("cluster.data-self-heal", REPLICATE, "data-self-heal", "client",
              "heal file data when a lookup finds a stale copy"),
    VolOption("cluster.metadata-self-heal", REPLICATE, "metadata-self-heal", "client",
              "heal owner, mode and xattrs when a lookup finds a stale copy"),
    VolOption("cluster.entry-self-heal", REPLICATE, "entry-self-heal", "client",
              "heal directory entries when a lookup finds a stale copy"),
    VolOption("cluster.self-heal-window-size", REPLICATE, "self-heal-window-size", "client",
              "bytes compared and copied per heal step (a number up to 1024 counts 128 KiB "
              "blocks)"),
    VolOption("cluster.background-self-heal-count", REPLICATE, "background-self-heal-count",
              "client", "heals a client runs at once in the background"),
    VolOption("cluster.read-policy", REPLICATE, "read-policy", "client",
              "which good copy serves reads: gfid-hash (spread) or first"),
    VolOption("performance.create-behind", CREATE_BEHIND, "enable", "client",
              "a new file's create and its first writes (up to create-behind-size) go to the "
              "bricks as one request at close; errors of the create come at close"),
    VolOption("performance.create-behind-size", CREATE_BEHIND, "max-size", "client",
              "most bytes of a new file gathered before it is created anyway"),
    VolOption("cluster.self-heal-daemon", None, None, "daemon",
              "gvold crawls the heal indices by itself (periodically and when a brick starts)",
              Option("bool", True)),
    VolOption("cluster.heal-timeout", None, None, "daemon",
              "seconds between two automatic index crawls", Option("int", 600, min=5)),
]}


def _target_option(o: VolOption) -> Option | None:
    if o.scope == "daemon":
        return o.schema
    assert o.xlator is not None and o.option is not None
    return schema_for(o.xlator).get(o.option)


def available_options() -> dict[str, VolOption]:
    """The keys whose target translator has the option (all of them: tests/test_volgen.py
    checks the table against the translators)."""
    return {k: o for k, o in OPTIONS.items() if _target_option(o) is not None}


_WHERE = {"brick": "bricks", "client": "client", "both": "client and bricks",
          "daemon": "gvold"}


def _range(opt: Option) -> str:
    if opt.choices:
        return " | ".join(c or '""' for c in opt.choices)
    lo = "" if opt.min is None else _fmt_default(opt.min if opt.kind == "float"
                                                  else int(opt.min))
    hi = "" if opt.max is None else _fmt_default(opt.max if opt.kind == "float"
                                                  else int(opt.max))
    if lo or hi:
        return f"{lo or '-inf'} .. {hi or 'inf'}"
    return ""


def option_help() -> list[dict[str, Any]]:
    """`gvol volume set help`: every key with its default, type, range and meaning, taken
    from the option table of the translator that reads it (gvold's own for daemon keys)."""
    rows = []
    for key in sorted(OPTIONS):
        o = OPTIONS[key]
        opt = _target_option(o)
        if opt is None:
            raise GvolError(f"option {key}: translator {o.xlator} has no option {o.option}")
        rows.append({"key": key, "default": _fmt_default(opt.default), "type": opt.kind,
                     "range": _range(opt), "where": _WHERE[o.scope],
                     "translator": o.xlator or "gvold", "option": o.option or key,
                     "description": o.doc or opt.doc})
    return rows


def validate_option(key: str, value: str) -> str:
    """Check a `volume set` key and value against the target translator's schema; returns the
    value to store. GvolError names the problem (and close matches of an unknown key)."""
    o = OPTIONS.get(key)
    if o is None:
        close = difflib.get_close_matches(key, list(OPTIONS), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else \
            "; see: gvol volume get VOLNAME all"
        raise GvolError(f"unknown option {key}{hint}")
    opt = _target_option(o)
    if opt is None:
        raise GvolError(f"option {key} is not available: translator {o.xlator} has no "
                        f"option {o.option}")
    name = o.option or key
    try:
        opt.parse(name, value)
    except GraphError as e:
        msg = str(e).removeprefix(f"option {name}: ")
        raise GvolError(f"invalid value for {key}: {msg}") from None
    return str(value)


def option_value(vol: dict[str, Any], key: str) -> tuple[str, str]:
    """(value, source) of a key for `volume get`: source is "set" or "default"."""
    if key in vol.get("options", {}):
        return str(vol["options"][key]), "set"
    o = OPTIONS[key]
    opt = _target_option(o)
    default = None if opt is None else opt.default
    return _fmt_default(default), "default"


def _fmt_default(v: Any) -> str:
    if v is None:
        return "(null)"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def daemon_option(vol: dict[str, Any], key: str) -> Any:
    """The parsed value of a gvold-only option (e.g. brick.auto-restart)."""
    o = OPTIONS[key]
    assert o.schema is not None
    raw = vol.get("options", {}).get(key)
    return o.schema.default if raw is None else o.schema.parse(key, raw)


def _set_options(vol: dict[str, Any], xlator: str, scope: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in vol.get("options", {}).items():
        o = OPTIONS.get(key)
        if o is None or o.xlator != xlator or o.option is None:
            continue
        if o.scope in (scope, "both"):
            out[o.option] = str(value)
    return out


# ---------------------------------------------------------------- names
def brick_volfile_name(vol: dict[str, Any], brick: dict[str, Any]) -> str:
    return f"{vol['name']}.{brick['host']}.{brick_dashed(brick['path'])}.vol"


def client_volfile_name(vol: dict[str, Any]) -> str:
    return f"{vol['name']}.tcp-fuse.vol"


def client_xlator_name(vol: dict[str, Any], index: int) -> str:
    return f"{vol['name']}-client-{index}"


def _header(vol: dict[str, Any], what: str) -> str:
    return (f"# {what} of volume {vol['name']} ({vol['id']}), version {vol['version']}\n"
            "# generated by gvold: do not edit, use `gvol volume set`\n\n")


# ---------------------------------------------------------------- graphs
def replica_count(vol: dict[str, Any]) -> int:
    return int(vol.get("replica", 1) or 1)


def is_arbiter(vol: dict[str, Any], index: int) -> bool:
    """Is brick number `index` an arbiter (the last of its set with `arbiter 1`)?"""
    r = replica_count(vol)
    return bool(vol.get("arbiter")) and r > 1 and index % r == r - 1


def brick_specs(vol: dict[str, Any], brick: dict[str, Any]) -> list[VolumeSpec]:
    name, path = vol["name"], brick["path"]
    posix = VolumeSpec(f"{name}-posix", POSIX, {"directory": path, "volume-id": vol["id"]})
    posix.options.update(_set_options(vol, POSIX, "brick"))
    specs = [posix]
    below = posix.name
    replicated = replica_count(vol) > 1
    if replicated and is_arbiter(vol, vol["bricks"].index(brick)):
        arb = VolumeSpec(f"{name}-arbiter", ARBITER, {}, [below])
        specs.append(arb)
        below = arb.name
    locks = VolumeSpec(f"{name}-locks", LOCKS, _set_options(vol, LOCKS, "brick"), [below])
    specs.append(locks)
    below = locks.name
    if replicated:
        index = VolumeSpec(f"{name}-index", INDEX, {}, [below])
        specs.append(index)
        below = index.name
    stats = VolumeSpec(path, IO_STATS, _set_options(vol, IO_STATS, "brick"), [below])
    server_opts = {
        "listen-host": brick.get("listen-host", DEFAULT_LISTEN_HOST),
        "listen-port": str(brick["port"]),
        "volume-name": name,
        "volume-id": vol["id"],
        "brick-path": path,
        "auth.allow": str(vol.get("options", {}).get("auth.allow", "*")),
    }
    server_opts.update(_set_options(vol, SERVER, "brick"))
    server_opts["auth.username"] = vol["username"]
    server_opts["auth.password"] = vol["password"]
    server = VolumeSpec(f"{name}-server", SERVER, server_opts, [stats.name])
    return [*specs, stats, server]


def client_specs(vol: dict[str, Any]) -> list[VolumeSpec]:
    name = vol["name"]
    specs: list[VolumeSpec] = []
    extra = _set_options(vol, CLIENT, "client")
    for i, b in enumerate(vol["bricks"]):
        opts = {
            "remote-host": b["host"],
            "remote-port": str(b["port"]),
            "remote-subvolume": b["path"],
            "volume-name": name,
            "volume-id": vol["id"],
            "username": vol["username"],
            "password": vol["password"],
        }
        opts.update(extra)
        specs.append(VolumeSpec(client_xlator_name(vol, i), CLIENT, opts))
    subvols = [s.name for s in specs]
    r = replica_count(vol)
    if r > 1:
        afr_opts = _set_options(vol, REPLICATE, "client")
        sets = []
        for k in range(len(specs) // r):
            members = [s.name for s in specs[k * r:(k + 1) * r]]
            o = {"afr-pending-xattr": ",".join(members)}
            if vol.get("arbiter"):
                o["arbiter-count"] = "1"
            o.update(afr_opts)
            sets.append(VolumeSpec(f"{name}-replicate-{k}", REPLICATE, o, members))
        specs.extend(sets)
        subvols = [s.name for s in sets]
    dht = VolumeSpec(f"{name}-dht", DHT, _set_options(vol, DHT, "client"), subvols)
    cb = VolumeSpec(f"{name}-create-behind", CREATE_BEHIND,
                    _set_options(vol, CREATE_BEHIND, "client"), [dht.name])
    top = VolumeSpec(name, IO_STATS, _set_options(vol, IO_STATS, "client"), [cb.name])
    return [*specs, dht, cb, top]


def brick_volfile(vol: dict[str, Any], brick: dict[str, Any]) -> str:
    return _header(vol, f"brick {brick['host']}:{brick['path']}") + dump(brick_specs(vol, brick))


def client_volfile(vol: dict[str, Any]) -> str:
    return _header(vol, "client volfile") + dump(client_specs(vol))


def generate(vol: dict[str, Any]) -> dict[str, str]:
    """Every volfile of the volume, by file name (brick volfiles and the client volfile)."""
    files = {brick_volfile_name(vol, b): brick_volfile(vol, b) for b in vol["bricks"]}
    files[client_volfile_name(vol)] = client_volfile(vol)
    return files


def check_builds(vol: dict[str, Any], key: str = "") -> None:
    """Build every generated graph (no I/O: constructors only) so that values a translator
    checks in its constructor (beyond its option schema) are refused now, not when a brick or
    a mount loads the volfile."""
    for text in generate(vol).values():
        try:
            build(text)
        except GraphError as e:
            msg = str(e)
            raise GvolError(f"invalid value for {key}: {msg}" if key else msg) from None
