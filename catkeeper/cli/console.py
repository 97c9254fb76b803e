"""``catkeeper console TARGET [--print]`` (also ``vnc``) and ``catkeeper serial TARGET``.

``console``: with a display, starts the viewer (through a tunnel when needed) and waits for
it to exit. Without one, or with ``--print``, prints where to connect and the ssh command
for the user's own machine, and keeps the tunnel open until Ctrl-C.

``serial``: streams the VM's serial console (``backend.console.serial``) to stdout as it
comes, until Ctrl-C or until the console closes (the VM stopped, someone took it over);
read-only, like the TUI's. ``--force`` takes over a console someone else holds.

Exit codes (``catkeeper.cli.common.Exit``): 0 done, 1 the console cannot be opened (reason
on stderr), 2 usage, 3 the VM's host is unreachable, 4 no such VM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from catkeeper.cli.common import (
    CliError,
    Clock,
    Exit,
    add_target_arguments,
    find_vm,
    finish,
    hosts_named,
    open_fleet,
)
from catkeeper.config import Config

if TYPE_CHECKING:
    from catkeeper.commands import Command


def add_arguments(p: argparse.ArgumentParser, command: Command) -> None:
    add_target_arguments(p, many=False)
    if command.name == "serial":
        p.add_argument(
            "--force",
            action="store_true",
            help="take the console over from whoever holds it (virsh console, another catkeeper)",
        )
        return
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="do not start a viewer: print the endpoint and ssh command, hold the tunnel",
    )


def run(args: argparse.Namespace, config: Config, *, clock: Clock = time.time) -> int:
    """Run ``console`` or ``serial``; the exit code. ``clock`` is the fleet's "now"."""
    if args.command_name == "serial":
        return finish(_serial(args, config, sys.stdout, clock))
    return finish(_console(args, config, sys.stdout, sys.stderr, clock))


async def _console(
    args: argparse.Namespace, config: Config, out: TextIO, err: TextIO, clock: Clock
) -> int:
    from catkeeper.backend.console.viewer import Consoles
    from catkeeper.backend.errors import BackendError
    from catkeeper.model import HostState

    said = f"catkeeper {getattr(args, 'verb', None) or 'console'}"  # as typed: vnc or console

    def fail(message: str, code: Exit) -> int:
        print(f"{said}: {message}", file=err)
        return int(code)

    async with open_fleet(
        args, config, only=hosts_named([args.target], args), clock=clock
    ) as fleet:
        try:
            vm = find_vm(fleet, args.target)
        except CliError as exc:
            return fail(exc.message, exc.code)
        session = fleet.session(vm.host)
        if session.host.state is HostState.UNREACHABLE:
            return fail(f"{vm.host} is unreachable: {session.host.error}", Exit.UNREACHABLE)
        consoles = Consoles(config.viewer)
        try:
            try:
                console = await consoles.open(session, vm, launch=not args.print_only)
            except BackendError as exc:
                return fail(str(exc), Exit.FAILED)
            if console.viewer is not None:
                print(
                    f"{said}: viewer pid {console.viewer.pid} → "
                    f"{console.info.endpoint} ({console.info.target})",
                    file=err,
                )
                await console.wait()
                return fail(console.failure, Exit.FAILED) if console.failure else int(Exit.OK)
            stop = asyncio.Event()
            # Catch Ctrl-C before saying it closes the tunnel: one typed (or sent by a script
            # that read the text) right after it must not end us with a traceback.
            with _stopped_by_signals(stop):
                print_info(console.info, out)
                out.flush()
                await _until_stopped(console, stop)
            return int(Exit.OK)
        finally:
            await consoles.aclose()


async def _serial(args: argparse.Namespace, config: Config, out: TextIO, clock: Clock) -> int:
    from catkeeper.backend.console.serial import SerialError, open_serial

    async with open_fleet(
        args, config, only=hosts_named([args.target], args), clock=clock
    ) as fleet:
        vm = find_vm(fleet, args.target)
        try:
            serial = await open_serial(fleet.session(vm.host), vm.uuid, force=args.force)
        except SerialError as exc:
            raise CliError(Exit.FAILED, f"{vm.ref}: {exc}") from None
        stop = asyncio.Event()
        try:
            with _stopped_by_signals(stop):
                print(f"catkeeper: serial console of {vm.ref}; Ctrl-C leaves", file=sys.stderr)
                pump = asyncio.ensure_future(_pump(serial, out))
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait([pump, halt], return_when=asyncio.FIRST_COMPLETED)
                halt.cancel()
                if not pump.done():
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pump
                    print("\ncatkeeper: left the serial console", file=sys.stderr)
                    return int(Exit.OK)
                pump.result()  # raise what broke it
            print(
                f"\ncatkeeper: {vm.ref}: {serial.closed_reason or 'the console closed'}",
                file=sys.stderr,
            )
            return int(Exit.OK)
        finally:
            await serial.aclose()


async def _pump(chunks: Any, out: TextIO) -> None:
    async for text in chunks:
        out.write(text)
        out.flush()


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
