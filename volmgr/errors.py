"""The one quiet error type of the management plane.

`GvolError(message)` is a user error: the CLI prints it as one line `gvol: <message>` on stderr
and exits with `exit_code`, without a traceback. gvold sends its message back to the caller.

Exit codes of `gvol`: 0 success, 1 user error (GvolError), 2 usage error (bad command line),
3 gvold unreachable (DaemonUnreachable).
"""
from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class GvolError(Exception):
    """A user error with a one-line message; never shown with a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(GvolError):
    """The command line itself is wrong (a missing or malformed argument)."""

    exit_code = EXIT_USAGE


class DaemonUnreachable(GvolError):
    """No gvold answered at the address tried (connection refused, no socket, timeout)."""

    exit_code = EXIT_UNREACHABLE


class ProtocolError(GvolError):
    """The peer sent something that is not a management frame."""
