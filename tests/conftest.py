"""Fixtures shared by the end-to-end test modules."""
from __future__ import annotations

import pytest

from gvolenv import GvolNode


@pytest.fixture(scope="module")
def node(request, tmp_path_factory):
    """One real gvold for a whole test module (its volumes, bricks and mounts under a temp
    directory named after the module), cleaned up even when a test fails. A module may define
    its own `node` instead (tests/test_volmgr.py does)."""
    n = GvolNode(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]))
    n.start()
    try:
        yield n
    finally:
        n.cleanup()
