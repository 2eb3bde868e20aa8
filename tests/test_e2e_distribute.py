"""A distributed volume on one server, end to end: real gvold, real bricks, real FUSE mounts.

Every test here goes through the kernel: programs (cp, diff, python's os module, a non-root
user) use the mount as an ordinary directory, and the bricks are inspected directly on disk.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gvolenv import is_mounted, kill_pid, pids_of, unmount, wait_for
from translators.cluster.hashfn import dm_hash

pytestmark = pytest.mark.mount

NOBODY = 65534


@pytest.fixture(scope="module")
def dist(node):
    """A started 3-brick distributed volume and one mount of it."""
    bricks = node.create_volume("dist", bricks=3)
    with node.mount("dist") as mnt:
        os.chmod(mnt, 0o1777)  # world-writable + sticky, like /tmp: lets the non-root tests work
        yield mnt, bricks


def _layout(brick_dir: Path) -> tuple[int, int]:
    raw = os.getxattr(brick_dir, "trusted.gvol.dht")
    _commit, _type, start, stop = struct.unpack(">IIII", raw)
    return start, stop


def _is_linkto(p: Path) -> bool:
    st = p.lstat()
    return stat.S_IMODE(st.st_mode) == stat.S_ISVTX and st.st_size == 0 and \
        "trusted.gvol.dht.linkto" in os.listxattr(p, follow_symlinks=False)


def _as_user(code: str, uid: int = NOBODY) -> subprocess.CompletedProcess:
    """Run python code as a non-root user; it prints the errno name it hit (or OK)."""
    prog = ("import os, errno, sys\n"
            f"os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n"
            "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) +
            "    print('OK')\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])\n")
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                          timeout=60)


# ------------------------------------------------------------------ placement
def test_files_spread_and_each_on_its_hashed_brick(dist):
    mnt, bricks = dist
    d = mnt / "spread"
    d.mkdir()
    names = [f"file-{i}.dat" for i in range(120)]
    for n in names:
        (d / n).write_bytes(n.encode())
    counts = [0] * len(bricks)
    for n in names:
        h = dm_hash(n.encode())
        holders = [i for i, b in enumerate(bricks)
                   if (b / "spread" / n).exists() and not _is_linkto(b / "spread" / n)]
        assert len(holders) == 1, f"{n} is on bricks {holders}"
        i = holders[0]
        start, stop = _layout(bricks[i] / "spread")
        assert start <= h <= stop, f"{n} hash {h:#x} outside brick {i}: {start:#x}-{stop:#x}"
        assert (bricks[i] / "spread" / n).read_bytes() == n.encode()
        counts[i] += 1
    assert all(c > 0 for c in counts), f"files not spread over every brick: {counts}"
    # the directory layouts of the bricks tile the hash space
    ranges = sorted(_layout(b / "spread") for b in bricks)
    assert ranges[0][0] == 0 and ranges[-1][1] == 0xFFFFFFFF
    for (_, a_stop), (b_start, _) in zip(ranges, ranges[1:]):
        assert b_start == a_stop + 1
    assert sorted(os.listdir(d)) == sorted(names)


# ------------------------------------------------------------------ cp -a / diff -r
def _make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(40):
        p = root / ("sub" if i % 2 else ".") / f"f{i}.txt"
        p.write_bytes(os.urandom(i * 97))
        os.chmod(p, [0o644, 0o600, 0o755, 0o4755, 0o640][i % 5])
        os.utime(p, ns=(1_600_000_000_123_456_789 + i, 1_500_000_000_987_654_321 + i))
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    os.symlink("f1.txt", root / "sub" / "link-rel")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "f0.txt", root / "sub" / "hardlink-to-f0")
    os.mkfifo(root / "fifo")
    os.chmod(root / "sub" / "deeper", 0o2750)
    os.chown(root / "f2.txt", 1234, 5678)


def _meta(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            rel = str(p.relative_to(root))
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_nlink if not stat.S_ISDIR(st.st_mode) else None,
                        st.st_size if not stat.S_ISDIR(st.st_mode) else None,
                        st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else None,
                        os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
    return out


def test_cp_a_tree_and_diff(dist, tmp_path):
    mnt, _ = dist
    src = tmp_path / "tree"
    src.mkdir()
    _make_tree(src)
    dst = mnt / "copied"
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True, timeout=120)
    # GNU diff reports any two FIFOs as different; _meta() compares the fifo instead
    r = subprocess.run(["diff", "-r", "--no-dereference", "-x", "fifo", str(src), str(dst)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _meta(src) == _meta(dst)
    # hard links are preserved as one inode
    assert os.stat(dst / "f0.txt").st_ino == os.stat(dst / "sub" / "hardlink-to-f0").st_ino
    # a real source tree too
    real = Path("/usr/share/doc/python3") if Path("/usr/share/doc/python3").exists() else None
    real = real or Path(os.__file__).parent / "json"
    subprocess.run(["cp", "-a", str(real), str(mnt / "real")], check=True, timeout=300)
    r = subprocess.run(["diff", "-r", "--no-dereference", str(real), str(mnt / "real")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ rename
def test_rename_within_and_across_dirs(dist):
    mnt, bricks = dist
    a, b = mnt / "ra", mnt / "rb"
    a.mkdir()
    b.mkdir()
    for i in range(30):
        (a / f"src{i}").write_text(f"content {i}")
    for i in range(30):
        os.rename(a / f"src{i}", a / f"renamed-{i}")  # new names hash elsewhere for many
    for i in range(0, 30, 2):
        os.rename(a / f"renamed-{i}", b / f"moved-{i}")
    (b / "victim").write_text("old")
    os.rename(a / "renamed-1", b / "victim")  # over an existing file
    assert (b / "victim").read_text() == "content 1"
    assert sorted(os.listdir(a)) == sorted(f"renamed-{i}" for i in range(3, 30, 2))
    assert sorted(os.listdir(b)) == sorted([f"moved-{i}" for i in range(0, 30, 2)] + ["victim"])
    for i in range(0, 30, 2):
        assert (b / f"moved-{i}").read_text() == f"content {i}"
    for i in range(3, 30, 2):
        assert (a / f"renamed-{i}").read_text() == f"content {i}"
    # directories rename too, with their contents
    os.rename(a, mnt / "ra2")
    assert (mnt / "ra2" / "renamed-3").read_text() == "content 3"
    assert not a.exists()
    # every name is visible once, and the data never moved to a second brick
    for i in range(3, 30, 2):
        holders = [br for br in bricks if (br / "ra2" / f"renamed-{i}").exists()
                   and not _is_linkto(br / "ra2" / f"renamed-{i}")]
        assert len(holders) == 1
    # rename over an empty directory, and errors for a non-empty one
    (mnt / "d1").mkdir()
    (mnt / "d2").mkdir()
    os.rename(mnt / "d1", mnt / "d2")
    (mnt / "d3").mkdir()
    (mnt / "d2" / "x").write_text("x")
    with pytest.raises(OSError) as e:
        os.rename(mnt / "d3", mnt / "d2")
    assert e.value.errno in (errno.ENOTEMPTY, errno.EEXIST)


# ------------------------------------------------------------------ big file
@pytest.mark.slow
def test_one_gib_file_checksum(dist):
    mnt, _ = dist
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, not compressible-trivial
    want = hashlib.sha256()
    with open(mnt / "big.bin", "wb") as f:
        for i in range(1024):
            chunk = block[i % 97:] + block[:i % 97]
            f.write(chunk)
            want.update(chunk)
    assert os.stat(mnt / "big.bin").st_size == 1 << 30
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
    got = hashlib.sha256()
    with open(mnt / "big.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            got.update(chunk)
    assert got.hexdigest() == want.hexdigest()
    os.unlink(mnt / "big.bin")


# ------------------------------------------------------------------ xattrs
def test_xattrs(dist):
    mnt, _ = dist
    p = mnt / "xa"
    p.write_text("x")
    os.setxattr(p, "user.colour", b"blue")
    os.setxattr(p, "user.empty", b"")
    assert os.getxattr(p, "user.colour") == b"blue"
    assert os.getxattr(p, "user.empty") == b""
    assert {"user.colour", "user.empty"} <= set(os.listxattr(p))
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.colour", b"red", os.XATTR_CREATE)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.nope", b"red", os.XATTR_REPLACE)
    assert e.value.errno == errno.ENODATA
    os.removexattr(p, "user.colour")
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.colour")
    assert e.value.errno == errno.ENODATA
    # internal xattrs are neither visible nor settable through the mount
    assert not [x for x in os.listxattr(p) if x.startswith("trusted.gvol")]
    with pytest.raises(OSError):
        os.getxattr(p, "trusted.gvol.gfid")
    with pytest.raises(OSError):
        os.setxattr(p, "trusted.gvol.dht.linkto", b"evil")
    d = mnt / "xadir"
    d.mkdir()
    os.setxattr(d, "user.dir", b"yes")
    assert os.getxattr(d, "user.dir") == b"yes"


# ------------------------------------------------------------------ POSIX errors
def test_posix_error_codes(dist):
    mnt, _ = dist
    base = mnt / "errs"
    base.mkdir()

    def code(fn, *a):
        with pytest.raises(OSError) as e:
            fn(*a)
        return e.value.errno

    assert code(os.stat, base / "missing") == errno.ENOENT
    assert code(open, base / "missing") == errno.ENOENT
    (base / "f").write_text("f")
    assert code(os.mkdir, base / "f") == errno.EEXIST
    assert code(os.open, base / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    (base / "d").mkdir()
    (base / "d" / "child").write_text("c")
    assert code(os.rmdir, base / "d") == errno.ENOTEMPTY
    assert code(open, base / "d", "w") == errno.EISDIR
    assert code(os.unlink, base / "d") in (errno.EISDIR, errno.EPERM)
    assert code(os.stat, base / "f" / "x") == errno.ENOTDIR
    assert code(os.rmdir, base / "f") == errno.ENOTDIR
    os.symlink("loop2", base / "loop1")
    os.symlink("loop1", base / "loop2")
    assert code(os.stat, base / "loop1") == errno.ELOOP
    assert code(open, base / ("n" * 256), "w") == errno.ENAMETOOLONG
    (base / ("n" * 255)).write_text("longest name is fine")
    assert (base / ("n" * 255)).read_text() == "longest name is fine"


def test_permissions_as_non_root_user(dist):
    mnt, _ = dist
    base = mnt / "perm"
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    (base / "secret").write_text("s")
    os.chmod(base / "secret", 0o600)
    (base / "public").write_text("p")
    os.chmod(base / "public", 0o644)
    assert _as_user(f"print(open({str(base / 'public')!r}).read())").stdout.split() == ["p", "OK"]
    assert _as_user(f"open({str(base / 'secret')!r}).read()").stdout.strip() == "EACCES"
    assert _as_user(f"open({str(base / 'new')!r}, 'w')").stdout.strip() == "EACCES"
    # sticky directory: a user may not remove or rename another user's file
    sticky = mnt / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (sticky / "roots").write_text("r")
    assert _as_user(f"os.unlink({str(sticky / 'roots')!r})").stdout.strip() in ("EPERM", "EACCES")
    assert _as_user(f"os.rename({str(sticky / 'roots')!r}, {str(sticky / 'x')!r})"
                    ).stdout.strip() in ("EPERM", "EACCES")
    # ... but may create and remove their own
    r = _as_user(f"p={str(sticky / 'mine')!r}\nopen(p, 'w').write('m')\nos.unlink(p)")
    assert r.stdout.strip() == "OK", r.stderr
    # a file created by the user is owned by the user
    r = _as_user(f"open({str(sticky / 'owned')!r}, 'w').write('o')")
    assert r.stdout.strip() == "OK", r.stderr
    st = os.stat(sticky / "owned")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


def test_setuid_cleared_on_write(dist):
    mnt, _ = dist
    d = mnt / "suid"
    d.mkdir()
    os.chmod(d, 0o777)
    p = d / "prog"
    p.write_text("#!/bin/sh\n")
    os.chmod(p, 0o6777)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o6777
    r = _as_user(f"open({str(p)!r}, 'a').write('echo hi\\n')")
    assert r.stdout.strip() == "OK", r.stderr
    mode = stat.S_IMODE(os.stat(p).st_mode)
    assert not mode & stat.S_ISUID, oct(mode)
    assert not mode & stat.S_ISGID, oct(mode)


# ------------------------------------------------------------------ two clients
def test_two_mounts_see_each_other(node, dist):
    mnt1, _ = dist
    with node.mount("dist") as mnt2:
        (mnt1 / "shared.txt").write_text("from one")
        wait_for(lambda: (mnt2 / "shared.txt").exists()
                 and (mnt2 / "shared.txt").read_text() == "from one", 5, "mnt2 sees the file")
        with open(mnt2 / "shared.txt", "a") as f:
            f.write(" and two")
        wait_for(lambda: (mnt1 / "shared.txt").read_text() == "from one and two", 5,
                 "mnt1 sees mnt2's append (attribute timeout 1 s)")
        (mnt2 / "newdir").mkdir()
        wait_for(lambda: "newdir" in os.listdir(mnt1), 5, "mnt1 sees mnt2's mkdir")
        os.unlink(mnt1 / "shared.txt")
        wait_for(lambda: not (mnt2 / "shared.txt").exists(), 5, "mnt2 sees the unlink")


# ------------------------------------------------------------------ faults
def test_brick_killed_and_restarted_under_live_mount(node):
    bricks = node.create_volume("flap", bricks=2, options={"brick.auto-restart": "off"})
    with node.mount("flap") as mnt:
        names = [f"f{i}" for i in range(40)]
        for n in names:
            (mnt / n).write_text(n)
        on0 = [n for n in names if (bricks[0] / n).exists() and not _is_linkto(bricks[0] / n)]
        on1 = [n for n in names if n not in on0]
        assert on0 and on1
        victim = next(b for b in node.status("flap") if b["path"] == str(bricks[0]))
        kill_pid(int(victim["pid"]), signal.SIGKILL)
        t0 = time.monotonic()
        # files on the dead brick fail promptly (no 42 s hang); the others keep working
        def fails() -> bool:
            try:
                (mnt / on0[0]).read_text()
                return False
            except OSError as e:
                assert e.errno in (errno.ENOTCONN, errno.EIO), e
                return True
        wait_for(fails, 30, "I/O on the killed brick's file to fail")
        assert time.monotonic() - t0 < 30
        assert (mnt / on1[0]).read_text() == on1[0]
        node.cli("volume", "start", "flap", "force")
        wait_for(lambda: all(b["online"] for b in node.status("flap")), 30, "brick back online")
        node.collect_brick_pids()

        def readable() -> bool:
            try:
                return all((mnt / n).read_text() == n for n in names)
            except OSError:
                return False
        wait_for(readable, 30, "the mount to recover by itself")
        (mnt / "after").write_text("after restart")
        assert (mnt / "after").read_text() == "after restart"


def test_client_killed_then_cleaned_up_and_remounted(node, tmp_path):
    node.create_volume("kc", bricks=2)
    mnt = tmp_path / "kc-mnt"
    mnt.mkdir()
    with node.mount("kc", mnt):
        (mnt / "keep").write_text("kept")
    # now kill a client outright
    node.cli("mount", "kc", str(mnt))
    node.mounts.append(mnt)
    wait_for(lambda: is_mounted(mnt), 10, "mount")
    pids = pids_of(f"fuse.mount.*{mnt}")
    assert pids, "no client process found for the mount"
    for pid in pids:
        kill_pid(pid, signal.SIGKILL)
    with pytest.raises(OSError) as e:
        wait_for(lambda: os.listdir(mnt) is None, 5, "dead mount to fail")
    # the kernel answers for a dead FUSE server: ENOTCONN, or ECONNABORTED once it aborted
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    unmount(mnt)
    assert not is_mounted(mnt)
    with node.mount("kc", mnt):
        assert (mnt / "keep").read_text() == "kept"


# ------------------------------------------------------------------ bad input at the mount
def test_mount_refusals(node, tmp_path):
    node.create_volume("stopped", bricks=1, start=False)
    m = tmp_path / "m"
    m.mkdir()
    r = node.cli("mount", "stopped", str(m), check=False)
    assert r.returncode != 0 and "not started" in r.stderr.lower(), r.stderr
    assert not is_mounted(m)
    r = node.cli("mount", "nosuchvol", str(m), check=False)
    assert r.returncode != 0 and "nosuchvol" in r.stderr, r.stderr
    node.cli("volume", "start", "stopped")
    (m / "junk").write_text("x")
    r = node.cli("mount", "stopped", str(m), check=False)
    assert r.returncode != 0 and "empty" in r.stderr.lower(), r.stderr
    assert not is_mounted(m) and (m / "junk").read_text() == "x"
    r = node.cli("mount", "stopped", str(tmp_path / "nope"), check=False)
    assert r.returncode != 0 and "nope" in r.stderr, r.stderr
    shutil.rmtree(m)


def test_mount_t_gvol_and_umount(node, tmp_path):
    """`mount -t gvol HOST:PORT:/VOL DIR` (what fstab does) returns once the mount is live;
    `umount DIR` ends the client process."""
    if not Path("/sbin/mount.gvol").exists():
        pytest.skip("/sbin/mount.gvol is not linked (scripts/test.sh links it)")
    node.create_volume("mt", bricks=2)
    m = tmp_path / "mt"
    m.mkdir()
    node.mounts.append(m)
    r = subprocess.run(["mount", "-t", "gvol", "-o", "_netdev,defaults",
                        f"127.0.0.1:{node.port}:/mt", str(m)],
                       capture_output=True, text=True, timeout=60, env=node.env)
    assert r.returncode == 0, r.stderr
    assert is_mounted(m)  # live when mount returned, no polling
    (m / "hello").write_text("via mount -t gvol")
    pids = pids_of(f"fuse.mount.*{m}")
    assert pids
    subprocess.run(["umount", str(m)], check=True, timeout=30)
    assert not is_mounted(m)
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), 10,
             "the client process to exit after umount")


def test_brick_vanishes_mid_write(node):
    """A writer whose brick is SIGKILLed gets an error promptly (no hang); what the brick
    acknowledged before dying is there after it restarts, and other files are untouched."""
    bricks = node.create_volume("mid", bricks=2, options={"brick.auto-restart": "off"})
    with node.mount("mid") as mnt:
        for i in range(20):
            (mnt / f"other{i}").write_text(f"other {i}")
        writer = subprocess.Popen(
            [sys.executable, "-c",
             "import os, sys\n"
             f"fd = os.open({str(mnt / 'stream')!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
             "block = b'x' * (1 << 20)\n"
             "n = 0\n"
             "try:\n"
             "    while n < 20000:\n"
             "        os.write(fd, block); n += 1\n"
             "        if n == 8: print('started', flush=True)\n"
             "except OSError as e:\n"
             "    print('error', e.errno, n, flush=True); sys.exit(0)\n"
             "print('finished', n, flush=True)\n"],
            stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "started"
            holder = next(i for i, b in enumerate(bricks) if (b / "stream").exists())
            victim = next(b for b in node.status("mid") if b["path"] == str(bricks[holder]))
            kill_pid(int(victim["pid"]), signal.SIGKILL)
            out, _ = writer.communicate(timeout=60)
        finally:
            if writer.poll() is None:
                writer.kill()
        kind, err, written = out.split()[:3]
        assert kind == "error" and int(err) in (errno.ENOTCONN, errno.EIO), out
        node.cli("volume", "start", "mid", "force")
        wait_for(lambda: all(b["online"] for b in node.status("mid")), 30, "brick back")
        node.collect_brick_pids()

        def size() -> int | None:
            try:
                return os.stat(mnt / "stream").st_size
            except OSError:
                return None
        wait_for(lambda: size() is not None, 30, "the file to be reachable again")
        # every acknowledged write is on disk (the one in flight may or may not be)
        assert size() >= (int(written)) * (1 << 20)
        with open(mnt / "stream", "rb") as f:
            assert set(f.read(int(written) << 20)) == {ord("x")}
        for i in range(20):
            assert (mnt / f"other{i}").read_text() == f"other {i}"


def test_directory_attributes_follow_this_mounts_changes(dist):
    """The mount answers a directory's attributes from its cache for the attribute timeout;
    entry ops done through it must still show in mtime, ctime and nlink at once."""
    mnt, _ = dist
    d = mnt / "dattr"
    d.mkdir()
    st0 = os.stat(d)
    time.sleep(0.02)
    (d / "f").write_text("x")
    st1 = os.stat(d)
    assert st1.st_mtime_ns > st0.st_mtime_ns and st1.st_ctime_ns > st0.st_ctime_ns
    (d / "sub").mkdir()
    assert os.stat(d).st_nlink == st0.st_nlink + 1
    os.rmdir(d / "sub")
    assert os.stat(d).st_nlink == st0.st_nlink
    os.unlink(d / "f")
    # and once the cache has expired the bricks say the same
    time.sleep(1.2)
    st = os.stat(d)
    assert st.st_nlink == st0.st_nlink and st.st_mtime_ns >= st1.st_mtime_ns
