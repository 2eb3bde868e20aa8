#!/usr/bin/env python3
"""gvol vs GlusterFS: the same workloads on a two-brick distributed volume of each, one run.

    python3 bench/run.py [--only gluster|gvol] [--quick] [--repeat N] [--json out.json] [--keep]

Needs root (mounts, glusterd, /proc/sys/vm/drop_caches). Installs glusterfs-server with apt-get
if it is missing. Everything it starts it stops, and everything it makes it removes, also on
failure and Ctrl-C. See bench/README.md for what each workload does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from procs import BenchError, drop_caches, log, run
from systems import LAYOUTS, Gluster, Gvol, System

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "workload.py")

# ---------------------------------------------------------------------------------------------
# The source tree for cp -a / du -s / rm -rf: a fixed, sorted list of files of a CPython 3.11
# standard library (pyenv's build if present, else the running interpreter's), without
# __pycache__, site-packages, config-*, lib-dynload and ensurepip (binary blobs): the first
# TREE_FILES paths in C-locale order. On this project's machines that is 1,400 files, 62
# directories, 23 MB of .py sources and test data. The list's sha256 is reported.
TREE_CANDIDATES = ["/root/.pyenv/versions/3.11.7/lib/python3.11"]
TREE_PRUNE_TOP = {"site-packages", "lib-dynload", "ensurepip"}


def tree_source() -> str:
    for c in TREE_CANDIDATES:
        if os.path.isfile(os.path.join(c, "os.py")):
            return c
    return sysconfig.get_paths()["stdlib"]


def tree_list(src: str, n: int) -> list[str]:
    files: list[str] = []
    for root, dirs, names in os.walk(src):
        rel = os.path.relpath(root, src)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in TREE_PRUNE_TOP and not d.startswith("config-")]
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            p = os.path.join(root, name)
            if os.path.isfile(p) or os.path.islink(p):
                files.append(os.path.normpath(os.path.join(rel, name)))
    files.sort(key=lambda s: s.encode())
    if len(files) < n:
        raise BenchError(f"{src} has only {len(files)} files; need {n}")
    return files[:n]


def stage_tree(src: str, files: list[str], dst: str) -> str:
    """Copy the fixed list to a local staging tree (not timed); return the list's sha256."""
    h = hashlib.sha256()
    for rel in files:
        s = os.path.join(src, rel)
        d = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        shutil.copy2(s, d, follow_symlinks=False)
        h.update(rel.encode() + b"\0" + str(os.lstat(s).st_size).encode() + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str


METRICS = [
    Metric("seq-write", "sequential write, 1 MiB blocks + fsync", "MiB/s"),
    Metric("seq-read", "sequential read, 1 MiB blocks (remounted, cold)", "MiB/s"),
    Metric("small-create", "4 KiB files: create+write, O_EXCL (as cp, tar)", "files/s"),
    Metric("small-create-trunc", "4 KiB files: create+write, O_TRUNC (as shell >)", "files/s"),
    Metric("small-stat", "4 KiB files: stat (cold)", "stats/s"),
    Metric("small-ls", "4 KiB files: ls -l (cold)", "entries/s"),
    Metric("small-read", "4 KiB files: read (cold)", "files/s"),
    Metric("small-rename", "4 KiB files: rename (cold)", "renames/s"),
    Metric("small-unlink", "4 KiB files: unlink (cold)", "unlinks/s"),
    Metric("tree-cp", "source tree: cp -a", "files/s"),
    Metric("tree-du", "source tree: du -s (cold)", "files/s"),
    Metric("tree-rm", "source tree: rm -rf (cold)", "files/s"),
]


class Bench:
    def __init__(self, args: argparse.Namespace, root: str, tree_src: str, ntree: int):
        self.a = args
        self.root = root
        self.tree_src = tree_src
        self.ntree = ntree
        self.results: dict[str, dict[str, dict]] = {}
        self.drops_ok = True
        self.meta: dict = {}

    def workload(self, sysm: System, name: str, *extra: str, timeout: float) -> dict:
        cmd = [sys.executable, WORKLOAD, name, sysm.mnt, *extra]
        cp = run(cmd, timeout=timeout, quiet=True)
        lines = [ln for ln in cp.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise BenchError(f"{name}: no result:\n{cp.stdout[-1000:]}")
        res = json.loads(lines[-1])
        res["rate"] = res["ops"] / res["seconds"] if res["seconds"] > 0 else float("inf")
        return res

    def record(self, sysm: System, name: str, res: dict) -> None:
        unit = next(m.unit for m in METRICS if m.key == name)
        log(f"  {sysm.title:9} {name:13} {res['rate']:10.1f} {unit}  "
            f"({res['ops']} in {res['seconds']:.3f}s)")
        per = self.results.setdefault(sysm.key, {})
        per.setdefault(name, {"samples": []})["samples"].append(res)

    def cold(self) -> None:
        if not drop_caches():
            self.drops_ok = False

    def run_all(self, sysm: System) -> None:
        a = self.a
        size, n, reps = a.size_mib, a.files, a.repeat
        # generous per-step ceilings: a stuck mount must not hang the bench forever
        t_big = max(300.0, size * 5.0)
        t_small = max(300.0, n * 1.0)
        t_tree = max(600.0, self.ntree * 1.0)
        for _ in range(reps):
            self.record(sysm, "seq-write", self.workload(
                sysm, "seq-write", f"--size-mib={size}", timeout=t_big))
            if not a.no_remount:
                sysm.remount()
            self.cold()
            self.record(sysm, "seq-read", self.workload(
                sysm, "seq-read", f"--size-mib={size}", timeout=t_big))
            run([sys.executable, "-c", "import os,sys; os.unlink(sys.argv[1])",
                 os.path.join(sysm.mnt, "seqfile")], timeout=t_big, quiet=True)
        for _ in range(reps):
            self.cold()
            for name in ("small-create-trunc", "small-create", "small-stat", "small-ls",
                         "small-read", "small-rename", "small-unlink"):
                if not name.startswith("small-create"):
                    self.cold()
                self.record(sysm, name, self.workload(sysm, name, f"-n={n}", timeout=t_small))
        for _ in range(reps):
            self.cold()
            self.record(sysm, "tree-cp", self.workload(
                sysm, "tree-cp", f"--src={self.tree_src}", f"-n={self.ntree}", timeout=t_tree))
            self.cold()
            self.record(sysm, "tree-du", self.workload(
                sysm, "tree-du", f"-n={self.ntree}", timeout=t_tree))
            self.cold()
            self.record(sysm, "tree-rm", self.workload(
                sysm, "tree-rm", f"-n={self.ntree}", timeout=t_tree))

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for key, per in self.results.items():
            for name, r in per.items():
                rates = [s["rate"] for s in r["samples"]]
                r["median"] = statistics.median(rates)
                r["min"] = min(rates)
                r["max"] = max(rates)
                out.setdefault(key, {})[name] = r["median"]
        return out


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def print_table(summary: dict[str, dict[str, float]], errors: dict[str, str], title: str) -> None:
    rows = []
    for m in METRICS:
        g = summary.get("gluster", {}).get(m.key)
        v = summary.get("gvol", {}).get(m.key)
        ratio = f"{v / g:.2f}" if g and v is not None else "—"
        rows.append((m.label, m.unit, fmt(g), fmt(v), ratio))
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        t.add_column("workload")
        t.add_column("unit")
        t.add_column("GlusterFS", justify="right")
        t.add_column("gvol", justify="right")
        t.add_column("gvol/GlusterFS", justify="right")
        for r in rows:
            t.add_row(*r)
        Console(width=None if sys.stdout.isatty() else 120).print(t)
    except ImportError:
        head = ("workload", "unit", "GlusterFS", "gvol", "gvol/GlusterFS")
        w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
        print(title)
        for r in [head, tuple("-" * x for x in w), *rows]:
            print("  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i])
                            for i, c in enumerate(r)))
    print("ratio > 1: gvol is faster; every figure is a rate (higher is better)")
    for k, e in errors.items():
        print(f"{k}: FAILED: {e.splitlines()[0] if e else e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="gvol vs GlusterFS benchmark (two-brick distribute)")
    p.add_argument("--only", choices=["gluster", "gvol"])
    p.add_argument("--layout", choices=list(LAYOUTS), default="distribute",
                   help="distribute: 2 bricks (default); replica3: replica 3 on 3 bricks")
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition (smoke run)")
    p.add_argument("--json", metavar="FILE", help="write all samples and settings as JSON")
    p.add_argument("--repeat", type=int, help="repetitions per workload, median reported "
                   "(default 3, --quick 1)")
    p.add_argument("--size-mib", type=int, help="sequential file size (default 256, --quick 32)")
    p.add_argument("--files", type=int, help="number of 4 KiB files (default 1000, --quick 200)")
    p.add_argument("--tree-files", type=int, help="source tree files (default 1400, --quick 300)")
    p.add_argument("--no-remount", action="store_true", help="only drop caches before seq read")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, bricks)")
    a = p.parse_args(argv)
    a.repeat = max(1, min(a.repeat or (1 if a.quick else 3), 20))
    a.size_mib = a.size_mib or (32 if a.quick else 256)
    a.files = a.files or (200 if a.quick else 1000)
    ntree = a.tree_files or (300 if a.quick else 1400)

    if os.geteuid() != 0:
        print("bench/run.py must run as root (mount, glusterd, drop_caches)", file=sys.stderr)
        return 2
    host = socket.gethostname()
    try:
        addr = socket.gethostbyname(host)
    except OSError as e:
        print(f"cannot resolve this host's name {host!r}: {e}", file=sys.stderr)
        return 2
    if not addr.startswith("127."):
        log(f"note: {host} resolves to {addr} (this machine); traffic stays on this host")

    root = tempfile.mkdtemp(prefix="gvol-bench-", dir="/tmp")
    os.chmod(root, 0o755)
    systems: list[System] = []
    if a.only in (None, "gluster"):
        systems.append(Gluster(root, host, a.layout))
    if a.only in (None, "gvol"):
        systems.append(Gvol(root, host, a.layout))

    # SIGTERM/SIGHUP clean up like Ctrl-C does
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    errors: dict[str, str] = {}
    bench = None
    interrupted = False
    try:
        src = tree_source()
        files = tree_list(src, ntree)
        staged = os.path.join(root, "src", "pylib")
        digest = stage_tree(src, files, staged)
        log(f"source tree: {len(files)} files of {src} (list sha256 {digest[:16]}) "
            f"staged at {staged}")
        bench = Bench(a, root, staged, ntree)
        bench.meta = {
            "host": host, "kernel": platform.release(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "quick": a.quick, "repeat": a.repeat,
            "seq_size_mib": a.size_mib, "small_files": a.files,
            "tree": {"source": src, "files": ntree, "list_sha256": digest},
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        for s in systems:
            log(f"=== {s.title}: setting up")
            try:
                s.setup()
                log(f"=== {s.title}: running workloads on {s.mnt}")
                bench.run_all(s)
            except BenchError as e:
                errors[s.key] = str(e)
                log(f"{s.title} FAILED: {e}")
                logs = s.logs()
                if logs:
                    log(f"{s.title} logs (tail):\n{logs}")
            finally:
                log(f"=== {s.title}: tearing down")
                s.teardown()
    except KeyboardInterrupt as e:
        interrupted = True
        log(f"interrupted ({e or 'Ctrl-C'}); cleaning up")
    except BenchError as e:
        errors["bench"] = str(e)
        log(f"FAILED: {e}")
    finally:
        # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGINT, lambda *_: log("cleaning up, please wait"))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for s in systems:
            s.teardown()  # idempotent
        if a.keep:
            log(f"kept {root}")
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", root], timeout=600, check=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if interrupted:
        return 130
    if bench is None:
        return 1
    summary = bench.summary()
    shape = "replica 3" if a.layout == "replica3" else "2-brick distribute"
    title = (f"gvol vs GlusterFS, {shape} on {host} "
             f"({os.cpu_count()} CPUs){' — quick' if a.quick else ''}; median of {a.repeat}")
    print_table(summary, errors, title)
    if not bench.drops_ok:
        print("WARNING: caches could not be dropped: 'cold' figures are warm")
    systems_info = {s.key: s.info() for s in systems}
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": bench.meta, "systems": systems_info, "results": bench.results,
                       "summary": summary, "errors": errors,
                       "units": {m.key: m.unit for m in METRICS}}, f, indent=2)
        print(f"wrote {a.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
