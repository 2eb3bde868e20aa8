"""translators/errgroups.py: errors that leave a trio nursery (always wrapped in an
ExceptionGroup since trio 0.25) reach `except SomeError` and users as themselves."""
from __future__ import annotations

import errno

import pytest
import trio

from translators.errgroups import collapsed, describe, leaves, sole
from translators.types import FopError


async def _raise_in_child(exc: BaseException) -> None:
    async def child() -> None:
        raise exc

    async with trio.open_nursery() as n:
        n.start_soon(child)


def test_a_childs_error_is_a_group_without_collapsed():
    # the behaviour the helpers exist for: a plain `except FopError` misses it
    with pytest.raises(BaseExceptionGroup):
        trio.run(_raise_in_child, FopError(errno.EIO, "disk"))


def test_collapsed_reraises_the_sole_error_as_itself():
    err = FopError(errno.ENOSPC, "full")

    async def main() -> None:
        with collapsed():
            await _raise_in_child(err)

    with pytest.raises(FopError) as got:
        trio.run(main)
    assert got.value is err


def test_collapsed_keeps_a_group_of_several():
    async def main() -> None:
        async def boom(e: Exception) -> None:
            raise e  # no checkpoint first: both raise before either is cancelled

        with collapsed():
            async with trio.open_nursery() as n:
                n.start_soon(boom, ValueError("a"))
                n.start_soon(boom, KeyError("b"))

    with pytest.raises(BaseExceptionGroup) as got:
        trio.run(main)
    assert sorted(type(e).__name__ for e in leaves(got.value)) == ["KeyError", "ValueError"]


def test_sole_and_describe_flatten_nested_groups():
    inner = OSError(errno.EADDRINUSE, "Address already in use")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [inner])])
    assert sole(nested) is inner
    assert describe(nested) == "[Errno 98] Address already in use"
    two = ExceptionGroup("x", [ValueError("bad value"), RuntimeError()])
    assert sole(two) is two
    assert describe(two) == "bad value; RuntimeError"
    assert "\n" not in describe(ValueError("two\nlines"))
