"""Exception groups at the places where errors are handled.

trio (>= 0.25) wraps whatever leaves a nursery in an ExceptionGroup, even a single error raised
by the nursery's own body. Code that handles a specific error (a FopError from a fan-out, a
GvolError from a command, a BrickError at start-up) and the boundaries that show an error to a
person use these helpers, so that `except SomeError` keeps meaning what it says and users read
the underlying cause in one line, never a nested group's repr.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc`, groups flattened (just [exc] for a plain exception)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def sole(exc: BaseException) -> BaseException:
    """The one exception a group (of groups) of exactly one holds; else `exc` itself."""
    found = leaves(exc)
    return found[0] if len(found) == 1 else exc


def describe(exc: BaseException) -> str:
    """One line for a person: each underlying error as `message` (or its type when it has no
    message), several joined by '; '."""
    parts = []
    for leaf in leaves(exc):
        text = str(leaf).strip().replace("\n", " ")
        parts.append(text if text else type(leaf).__name__)
    return "; ".join(dict.fromkeys(parts))


@contextmanager
def collapsed() -> Iterator[None]:
    """Re-raise a group that holds one exception as that exception (a group of several stays
    a group): wrap a nursery whose errors callers catch by type."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = sole(group)
        if leaf is group:
            raise
        raise leaf from leaf.__cause__
