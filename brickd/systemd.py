"""systemd's readiness protocol (sd_notify), shared by gvol-brickd and gvold.

A datagram of `KEY=VALUE` lines to the socket named by $NOTIFY_SOCKET; a leading `@` names an
abstract socket. Nothing happens when the variable is unset (not started by systemd).
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send `message` to systemd; False when $NOTIFY_SOCKET is unset or the send failed."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("cannot notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], e)
        return False
    return True
