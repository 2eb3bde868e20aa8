"""Packaging of the FUSE client: `import fuse` is gvol's own package (not python-fuse's or
fusepy's `fuse` module), and the `mount.gvol` console script runs `fuse.mount:main`."""
from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OUR_FUSE = REPO / "fuse" / "__init__.py"


def _installed() -> bool:
    try:
        md.distribution("gvol")
    except md.PackageNotFoundError:
        return False
    return True


needs_install = pytest.mark.skipif(not _installed(),
                                   reason="gvol is not installed (pip install -e .)")


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_import_fuse_is_ours_here():
    import fuse

    assert Path(fuse.__file__).resolve() == OUR_FUSE
    assert getattr(fuse, "GVOL_FUSE", False)
    from fuse import mount, ops  # noqa: F401


@needs_install
def test_import_fuse_is_ours_when_installed():
    # outside the checkout (cwd /, no PYTHONPATH): only the installation can find it
    out = subprocess.run(
        [sys.executable, "-c", "import fuse, fuse.mount; print(fuse.__file__); "
                               "print(fuse.GVOL_FUSE)"],
        cwd="/", env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path, marker = out.stdout.split()
    assert Path(path).resolve() == OUR_FUSE and marker == "True"


@needs_install
def test_mount_gvol_entry_point():
    eps = md.entry_points(group="console_scripts", name="mount.gvol")
    assert [ep.value for ep in eps] == ["fuse.mount:main"]
    from fuse.mount import main

    assert next(iter(eps)).load() is main


@needs_install
def test_mount_gvol_script_runs():
    script = shutil.which("mount.gvol") or str(Path(sys.executable).parent / "mount.gvol")
    if not os.path.exists(script):
        pytest.skip("the mount.gvol console script is not on PATH")
    out = subprocess.run([script, "--help"], cwd="/", env=_clean_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "mount.gvol" in out.stdout and "--volfile" in out.stdout
    # no arguments: a usage error (mount(8) helper convention: exit 1), one line, no traceback
    out = subprocess.run([script], cwd="/", env=_clean_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "mount.gvol: usage:" in out.stderr


def test_no_other_fuse_module_shadows_ours():
    """Another FUSE binding's top-level `fuse` module earlier on sys.path would win over an
    editable install; say so plainly if one is installed."""
    shadows = []
    for entry in sys.path:
        if not entry or Path(entry).resolve() == REPO:
            continue
        for cand in (Path(entry) / "fuse.py", Path(entry) / "fuse" / "__init__.py"):
            if cand.exists() and cand.resolve() != OUR_FUSE:
                shadows.append(str(cand))
    assert not shadows, f"another `fuse` module is installed and may shadow gvol's: {shadows}"
