"""gvol's FUSE client: `fuse.ops` (the pyfuse3 bridge over a translator graph) and
`fuse.mount` (the `mount.gvol` program).

This package is gvol's own `fuse`; it is unrelated to the python-fuse bindings that also ship a
top-level `fuse` module.
"""
from __future__ import annotations

GVOL_FUSE = True  # marker: tests/test_packaging.py checks `import fuse` found this package
