"""``catkeeper vnc HOST/VM [--print]``: open a VM's console from the command line.

With a display, starts the viewer (through a tunnel when needed) and waits for it to exit.
Without one, or with ``--print``, prints where to connect and the ssh command for the user's
own machine, and keeps the tunnel open until Ctrl-C.

Exit codes: 0 done, 1 the console cannot be opened (reason on stderr), 2 usage,
3 the VM's host is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from catkeeper.config import Config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def add_subcommands(subparsers: Any) -> None:
    """Add ``vnc`` to the main parser's subparsers (``parser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "vnc",
        help="open a VM's VNC console (through the host's ssh connection when needed)",
        description="Open a VM's VNC console: start the configured viewer, or without a "
        "display print where to connect and keep the tunnel open until Ctrl-C.",
    )
    p.add_argument("vm", metavar="HOST/VM", help="the VM, as HOST/NAME (or a unique name)")
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="do not start a viewer: print the endpoint and ssh command, hold the tunnel",
    )
    p.set_defaults(subcommand="vnc")


def run(args: argparse.Namespace, config: Config, *, clock: Callable[[], float] = time.time) -> int:
    """Run ``catkeeper vnc`` with parsed ``args``; the exit code. ``clock`` is the fleet's "now"."""
    return asyncio.run(_run(args, config, sys.stdout, sys.stderr, clock))


def _host_of(ref: str, config: Config) -> list[str] | None:
    host, sep, _name = ref.partition("/")
    if sep and host in {h.name for h in config.hosts}:
        return [host]
    return None  # a bare name: every host is asked


async def _run(
    args: argparse.Namespace,
    config: Config,
    out: TextIO,
    err: TextIO,
    clock: Callable[[], float] = time.time,
) -> int:
    from catkeeper.backend.console.viewer import Consoles
    from catkeeper.backend.errors import BackendError
    from catkeeper.backend.fleet import Fleet, UnknownHost
    from catkeeper.model import HostState

    readonly = bool(getattr(args, "readonly", False))

    def fail(message: str, code: int) -> int:
        print(f"catkeeper vnc: {message}", file=err)
        return code

    try:
        fleet = Fleet(config, readonly=readonly, only=_host_of(args.vm, config), clock=clock)
    except UnknownHost as exc:
        return fail(str(exc), EXIT_USAGE)
    consoles = Consoles(config.viewer)
    await fleet.start()
    try:
        await fleet.wait_settled(config.timing.connect_timeout + config.timing.call_timeout)
        try:
            vm = fleet.find(args.vm)
        except BackendError as exc:
            down = [h for h in fleet.hosts() if h.state is HostState.UNREACHABLE]
            if down:
                why = "; ".join(f"{h.name}: {h.error}" for h in down)
                return fail(f"{exc} (unreachable: {why})", EXIT_UNREACHABLE)
            return fail(str(exc), EXIT_FAILED)
        session = fleet.session(vm.host)
        if session.host.state is HostState.UNREACHABLE:
            return fail(f"{vm.host} is unreachable: {session.host.error}", EXIT_UNREACHABLE)
        try:
            console = await consoles.open(session, vm, launch=not args.print_only)
        except BackendError as exc:
            return fail(str(exc), EXIT_FAILED)
        if console.viewer is not None:
            print(
                f"catkeeper vnc: viewer pid {console.viewer.pid} → {console.info.endpoint} "
                f"({console.info.target})",
                file=err,
            )
            await console.wait()
            return fail(console.failure, EXIT_FAILED) if console.failure else EXIT_OK
        stop = asyncio.Event()
        # Catch Ctrl-C before saying it closes the tunnel: one typed (or sent by a script
        # that read the text) right after it must not end us with a traceback.
        with _stopped_by_signals(stop):
            print_info(console.info, out)
            out.flush()
            await _until_stopped(console, stop)
        return EXIT_OK
    finally:
        await consoles.aclose()
        await fleet.aclose()


def print_info(info: Any, out: TextIO) -> None:
    """The ``--print`` text: endpoint first (scripts read line 1), then the commands."""
    print(f"endpoint {info.endpoint}", file=out)
    print(f"console  {info.protocol} of {info.vm}: {info.target}", file=out)
    if info.reason:
        print(f"note     {info.reason}", file=out)
    if info.ssh_command:
        print(f"ssh      {info.ssh_command}", file=out)
    if info.jump_command:
        print(f"jump     {info.jump_command}", file=out)
    if info.viewer_command:
        print(f"viewer   {info.viewer_command}", file=out)
    if info.has_password:
        print("password the console has one; catkeeper does not print it", file=out)
    print("Ctrl-C closes the tunnel.", file=out)


@contextlib.contextmanager
def _stopped_by_signals(stop: asyncio.Event) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM set ``stop`` instead of ending the process."""
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _until_stopped(console: Any, stop: asyncio.Event) -> None:
    """Hold the tunnel until ``stop`` is set (or until the tunnel closes by itself)."""
    waits = [asyncio.ensure_future(stop.wait())]
    if console.tunnel is not None:
        waits.append(asyncio.ensure_future(console.tunnel.wait_closed()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
