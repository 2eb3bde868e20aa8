"""One benchmark workload, run in its own process by bench/run.py.

    python3 bench/workload.py NAME DIR [options]

Prints one JSON object on stdout: {"ops": N, "seconds": T, ...}. The timing covers only the
work itself (not this interpreter's start-up). Running each workload in a child process keeps
every blocking syscall on a mountpoint out of the orchestrating process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BLOCK = 1 << 20  # 1 MiB
SMALL = 4096  # 4 KiB


def _small_names(n: int, prefix: str = "f") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


def seq_write(d: str, size_mib: int) -> dict:
    """Write SIZE MiB in 1 MiB blocks, fsync before close (like dd conv=fsync)."""
    buf = os.urandom(BLOCK)  # incompressible; generated before the clock starts
    path = os.path.join(d, "seqfile")
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size_mib):
            view = memoryview(buf)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    return {"ops": size_mib, "seconds": dt, "bytes": size_mib * BLOCK}


def seq_read(d: str, size_mib: int) -> dict:
    """Read the file written by seq_write in 1 MiB blocks and check its length."""
    path = os.path.join(d, "seqfile")
    total = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            chunk = os.read(fd, BLOCK)
            if not chunk:
                break
            total += len(chunk)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    if total != size_mib * BLOCK:
        raise SystemExit(f"seq-read: read {total} bytes, expected {size_mib * BLOCK}")
    return {"ops": size_mib, "seconds": dt, "bytes": total}


def _create_files(sub: str, names: list[str], flags: int) -> float:
    """Create each file with `flags`, write 4 KiB, close; -> seconds."""
    data = os.urandom(SMALL)
    t0 = time.perf_counter()
    for name in names:
        fd = os.open(os.path.join(sub, name), os.O_WRONLY | os.O_CREAT | flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def small_create(d: str, n: int) -> dict:
    """As cp and tar create: O_EXCL. The files stay for the next workloads."""
    sub = os.path.join(d, "small")
    os.mkdir(sub)
    return {"ops": n, "seconds": _create_files(sub, _small_names(n), os.O_EXCL)}


def small_create_trunc(d: str, n: int) -> dict:
    """As most programs and the shell's `>` create: O_CREAT|O_TRUNC, no O_EXCL. The files are
    removed afterwards (not timed)."""
    sub = os.path.join(d, "smallw")
    os.mkdir(sub)
    names = _small_names(n)
    dt = _create_files(sub, names, os.O_TRUNC)
    for name in names:
        if os.stat(os.path.join(sub, name)).st_size != SMALL:
            raise SystemExit(f"small-create-trunc: {name} is not {SMALL} bytes")
        os.unlink(os.path.join(sub, name))
    os.rmdir(sub)
    return {"ops": n, "seconds": dt}


def small_stat(d: str, n: int) -> dict:
    sub = os.path.join(d, "small")
    names = _small_names(n)
    t0 = time.perf_counter()
    for name in names:
        st = os.lstat(os.path.join(sub, name))
        if st.st_size != SMALL:
            raise SystemExit(f"small-stat: {name} has size {st.st_size}")
    dt = time.perf_counter() - t0
    return {"ops": n, "seconds": dt}


def small_ls(d: str, n: int) -> dict:
    sub = os.path.join(d, "small")
    t0 = time.perf_counter()
    out = subprocess.run(["ls", "-l", sub], stdout=subprocess.PIPE, check=True, timeout=600).stdout
    dt = time.perf_counter() - t0
    lines = out.count(b"\n") - 1  # minus the "total" line
    if lines != n:
        raise SystemExit(f"small-ls: ls -l listed {lines} entries, expected {n}")
    return {"ops": n, "seconds": dt}


def small_read(d: str, n: int) -> dict:
    sub = os.path.join(d, "small")
    names = _small_names(n)
    t0 = time.perf_counter()
    for name in names:
        fd = os.open(os.path.join(sub, name), os.O_RDONLY)
        try:
            data = os.read(fd, 2 * SMALL)
        finally:
            os.close(fd)
        if len(data) != SMALL:
            raise SystemExit(f"small-read: {name} gave {len(data)} bytes")
    dt = time.perf_counter() - t0
    return {"ops": n, "seconds": dt}


def small_rename(d: str, n: int) -> dict:
    sub = os.path.join(d, "small")
    old = _small_names(n)
    new = _small_names(n, "r")
    t0 = time.perf_counter()
    for a, b in zip(old, new):
        os.rename(os.path.join(sub, a), os.path.join(sub, b))
    dt = time.perf_counter() - t0
    return {"ops": n, "seconds": dt}


def small_unlink(d: str, n: int) -> dict:
    sub = os.path.join(d, "small")
    names = _small_names(n, "r")
    t0 = time.perf_counter()
    for name in names:
        os.unlink(os.path.join(sub, name))
    dt = time.perf_counter() - t0
    left = os.listdir(sub)
    if left:
        raise SystemExit(f"small-unlink: {len(left)} entries left")
    os.rmdir(sub)
    return {"ops": n, "seconds": dt}


def _count_files(path: str) -> int:
    count = 0
    for _root, dirs, files in os.walk(path):
        count += len(files)
        # symlinks to directories appear in dirs; count them as files, as cp -a copies them so
        count += sum(1 for x in dirs if os.path.islink(os.path.join(_root, x)))
    return count


def tree_cp(d: str, src: str, nfiles: int) -> dict:
    dst = os.path.join(d, "tree")
    t0 = time.perf_counter()
    subprocess.run(["cp", "-a", src, dst], check=True, timeout=3600)
    dt = time.perf_counter() - t0
    got = _count_files(dst)
    if got != nfiles:
        raise SystemExit(f"tree-cp: {got} files in the copy, expected {nfiles}")
    return {"ops": nfiles, "seconds": dt}


def tree_du(d: str, nfiles: int) -> dict:
    dst = os.path.join(d, "tree")
    t0 = time.perf_counter()
    out = subprocess.run(["du", "-s", dst], stdout=subprocess.PIPE, check=True, timeout=3600)
    dt = time.perf_counter() - t0
    return {"ops": nfiles, "seconds": dt, "du": out.stdout.decode().split()[0]}


def tree_rm(d: str, nfiles: int) -> dict:
    dst = os.path.join(d, "tree")
    t0 = time.perf_counter()
    subprocess.run(["rm", "-rf", dst], check=True, timeout=3600)
    dt = time.perf_counter() - t0
    if os.path.lexists(dst):
        raise SystemExit("tree-rm: the tree is still there")
    return {"ops": nfiles, "seconds": dt}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("dir")
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--src")
    a = p.parse_args(argv)
    fns = {
        "seq-write": lambda: seq_write(a.dir, a.size_mib),
        "seq-read": lambda: seq_read(a.dir, a.size_mib),
        "small-create": lambda: small_create(a.dir, a.n),
        "small-create-trunc": lambda: small_create_trunc(a.dir, a.n),
        "small-stat": lambda: small_stat(a.dir, a.n),
        "small-ls": lambda: small_ls(a.dir, a.n),
        "small-read": lambda: small_read(a.dir, a.n),
        "small-rename": lambda: small_rename(a.dir, a.n),
        "small-unlink": lambda: small_unlink(a.dir, a.n),
        "tree-cp": lambda: tree_cp(a.dir, a.src, a.n),
        "tree-du": lambda: tree_du(a.dir, a.n),
        "tree-rm": lambda: tree_rm(a.dir, a.n),
    }
    if a.name not in fns:
        p.error(f"unknown workload {a.name!r}; one of {', '.join(fns)}")
    res = fns[a.name]()
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
