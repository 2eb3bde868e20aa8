"""gvol-brickd --volfile FILE [--pidfile FILE] [--log-level INFO] [--grace SECONDS]

Builds the brick graph from a volfile whose top volume is protocol/server, initialises it, and
serves it until SIGTERM or SIGINT; then stops accepting, releases what clients held and finalises
the graph within a bounded grace period (a second signal cuts it short). Readiness: the line
"listening on HOST:PORT" on stdout, the pidfile, and systemd's READY=1 when $NOTIFY_SOCKET is set.

Exit codes: 0 after a clean shutdown, 2 when the brick cannot be served (a bad volfile, a brick
directory without the right volume-id, a port in use): one line on stderr, no traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

import trio

from translators.errgroups import collapsed, describe
from translators.protocol.server import Server
from translators.volfile import build, fini_graph, init_graph
from translators.xlator import GraphError, Translator

from .systemd import sd_notify

log = logging.getLogger("brickd")

EXIT_OK = 0
EXIT_USAGE = 2


class StartupError(Exception):
    """The brick cannot be served; the message is the one line the user sees."""


def _write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def _remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return  # another brickd's now
        os.unlink(path)
    except OSError:
        pass


def load_graph(volfile: str) -> Server:
    try:
        with open(volfile) as f:
            text = f.read()
    except OSError as e:
        raise StartupError(f"cannot read volfile {volfile}: {e.strerror}") from None
    try:
        top = build(text)
    except GraphError as e:
        raise StartupError(f"volfile {volfile}: {e}") from None
    if not isinstance(top, Server):
        raise StartupError(f"volfile {volfile}: the top volume {top.name} is {top.type_name}, "
                           "not protocol/server")
    return top


async def serve_brick(top: Server, *, pidfile: str | None = None, grace: float = 10.0,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> int:
    """Init the graph, serve until a signal, shut down gracefully. Returns the exit code."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals, collapsed():
        async with trio.open_nursery() as nursery:
            try:
                await init_graph(top, nursery)
            except (GraphError, OSError) as e:  # storage/posix's BrickError is a GraphError
                nursery.cancel_scope.cancel()
                raise StartupError(str(e)) from None
            serve_scope = trio.CancelScope()
            served = trio.Event()

            async def run_server(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    with serve_scope:
                        await top.serve(task_status=task_status)
                finally:
                    served.set()

            host = top.opts["listen-host"] or "*"
            try:
                port = await nursery.start(run_server)
            except OSError as e:
                await _fini(top, grace)
                nursery.cancel_scope.cancel()
                raise StartupError(f"cannot listen on {host}:{top.opts['listen-port']}: "
                                   f"{e.strerror or e}") from None
            if pidfile:
                _write_pidfile(pidfile)
            print(f"listening on {host}:{port}", flush=True)
            sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving on port {port}")
            task_status.started(port)

            async for signum in signals:
                log.info("received %s: shutting down (grace %gs)", signal.Signals(signum).name,
                         grace)
                break
            sd_notify("STOPPING=1")

            async def second_signal() -> None:
                async for s in signals:
                    log.warning("received %s again: stopping now", signal.Signals(s).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(second_signal)
            serve_scope.cancel()  # stop accepting; connections release their fds and locks
            with trio.move_on_after(grace):
                await served.wait()
            await _fini(top, grace)
            nursery.cancel_scope.cancel()
    if pidfile:
        _remove_pidfile(pidfile)
    log.info("stopped")
    return EXIT_OK


async def _fini(top: Translator, grace: float) -> None:
    with trio.move_on_after(grace) as cs:
        try:
            await fini_graph(top)
        except Exception:
            log.exception("finalising the brick graph failed")
    if cs.cancelled_caught:
        log.warning("finalising the brick graph took longer than %gs; exiting anyway", grace)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gvol-brickd", description="Serve one gvol brick.")
    p.add_argument("--volfile", required=True, help="brick volfile (top: protocol/server)")
    p.add_argument("--pidfile", help="write the process id here once listening")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                   type=str.upper)
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds allowed for a graceful shutdown (default 10)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        top = load_graph(args.volfile)
        return trio.run(lambda: serve_brick(top, pidfile=args.pidfile, grace=args.grace))
    except StartupError as e:
        print(f"gvol-brickd: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception as e:  # a bug: the traceback goes to the log, the cause on one line
        log.exception("gvol-brickd failed")
        print(f"gvol-brickd: error: {describe(e)}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
