"""``catkeeper start|stop|shutdown|destroy|reboot|reset|pause|resume TARGET… | --filter EXPR``.

The power verbs of the command table, as evirt and virsh users expect them, on several VMs at
once (in parallel: a slow guest holds up only its own line). ``stop`` is the TUI's graceful
escalation (``backend.actions.GracefulStop``: ACPI → wait → ctrl-alt-del → wait → force off)
with one progress line per VM and stage on stderr; ``--force`` goes straight to force off,
``--acpi-only`` never escalates (and fails when the guest is still running after the wait).
Ctrl-C cancels: a stop stops escalating and leaves the VM as it is (exit 130).

Someone else's reserved VM is refused (exit 5, nothing done) unless ``--yes`` or
``--confirm-name NAME``: the command table's holder rule (``Holder.ASK``), the same the TUI
asks about. Output: one line per VM on stdout; with ``--json`` one JSON object per VM and
line (``host``, ``name``, ``action``, ``result``, ``state``, ``error``; ``stop`` adds
``stages``). Exit codes: ``catkeeper.cli.common.Exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from catkeeper.cli.common import (
    CliError,
    Clock,
    Exit,
    add_holder_arguments,
    add_target_arguments,
    check_holders,
    err,
    held_by_other,
    holder_text,
    hosts_named,
    json_flag,
    open_fleet,
    select,
    wait_host_flag,
    wants_json,
)
from catkeeper.config import Config, current_user
from catkeeper.model import VM

if TYPE_CHECKING:
    from catkeeper.backend.actions import GracefulStop, StopProgress
    from catkeeper.backend.fleet import Fleet
    from catkeeper.commands import Command

# What a finished action is called on its line ("started lab1/web (running)").
DONE = {
    "start": "started",
    "stop": "stopped",
    "shutdown": "asked to shut down (ACPI)",
    "destroy": "forced off",
    "reboot": "asked to reboot",
    "reset": "reset",
    "pause": "paused",
    "resume": "resumed",
}
_POLL = 0.5  # --acpi-only: how often the state is read while waiting


def add_arguments(parser: argparse.ArgumentParser, command: Command) -> None:
    add_target_arguments(parser, many=True)
    add_holder_arguments(parser)
    json_flag(parser, "one JSON object per VM and line")
    if command.name == "stop":
        how = parser.add_mutually_exclusive_group()
        how.add_argument(
            "--force", action="store_true", help="force off at once (like destroy), no ACPI"
        )
        how.add_argument(
            "--acpi-only",
            action="store_true",
            help="only the ACPI request: never escalate; fail if it still runs after --acpi-wait",
        )
        parser.add_argument(
            "--acpi-wait",
            type=float,
            metavar="S",
            help="seconds to wait after ACPI shutdown (default: graceful_stop.acpi_wait, 60)",
        )
        parser.add_argument(
            "--cad-wait",
            type=float,
            metavar="S",
            help="seconds to wait after ctrl-alt-del before forcing off "
            "(default: graceful_stop.ctrl_alt_del_wait, 30)",
        )
    wait_host_flag(parser)


def run(args: argparse.Namespace, config: Config, *, clock: Clock = time.time) -> int:
    """Carry out the power verb ``args.command_name``; the exit code."""
    from catkeeper import commands

    command = commands.get(args.command_name)
    try:
        return asyncio.run(_run(command, args, config, clock))
    except CliError as exc:
        err(exc.message)
        return int(exc.code)
    except KeyboardInterrupt:  # before the handlers were in place: nothing was sent
        err("interrupted")
        return int(Exit.INTERRUPTED)


@dataclass
class Outcome:
    vm: VM
    action: str
    result: str = "done"  # done | failed | cancelled | running (--acpi-only) | refused
    error: str | None = None
    code: Exit = Exit.OK
    state: str = ""
    stages: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "host": self.vm.host,
            "name": self.vm.name,
            "action": self.action,
            "result": self.result,
            "state": self.state,
            "error": self.error,
        }
        if self.action == "stop":
            doc["stages"] = self.stages
        return doc


def _waits(args: argparse.Namespace, config: Config) -> tuple[float, float]:
    acpi = getattr(args, "acpi_wait", None)
    cad = getattr(args, "cad_wait", None)
    acpi = config.graceful_stop.acpi_wait if acpi is None else acpi
    cad = config.graceful_stop.ctrl_alt_del_wait if cad is None else cad
    if acpi < 0 or cad < 0:
        raise CliError(Exit.USAGE, "--acpi-wait and --cad-wait take seconds, 0 or more")
    return acpi, cad


async def _run(command: Command, args: argparse.Namespace, config: Config, clock: Clock) -> int:
    refs: list[str] = list(args.targets)
    filter_text: str | None = getattr(args, "filter", None)
    if not refs and filter_text is None:
        raise CliError(
            Exit.USAGE, f"{command.name}: name a TARGET (HOST/VM or a VM name) or --filter EXPR"
        )
    waits = _waits(args, config)
    as_json = wants_json(args)
    async with open_fleet(args, config, only=hosts_named(refs, args), clock=clock) as fleet:
        me = current_user(config)
        vms = select(fleet, refs, filter_text, me)
        try:
            check_holders(command, vms, args, config, fleet.clock())
        except CliError:
            if as_json:
                for vm in vms:
                    res = held_by_other(vm, me, fleet.clock())
                    refused = Outcome(vm, command.name, "refused", code=Exit.HELD)
                    refused.error = holder_text(vm, res) if res else "not done: another was held"
                    refused.state = vm.state.value
                    _print_json(refused)
            raise
        runner = _Runner(fleet, command, args, waits, as_json)
        with _interrupts(runner.interrupt):
            outcomes = await asyncio.gather(*(runner.one(vm) for vm in vms))
    return int(_exit_code(outcomes, runner.interrupted))


def _exit_code(outcomes: list[Outcome], interrupted: bool) -> Exit:
    if interrupted and any(o.result == "cancelled" for o in outcomes):
        return Exit.INTERRUPTED
    codes = {o.code for o in outcomes if o.code is not Exit.OK}
    if not codes:
        return Exit.OK
    return codes.pop() if len(codes) == 1 else Exit.FAILED


def _print_json(outcome: Outcome) -> None:
    sys.stdout.write(json.dumps(outcome.to_json()) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def _interrupts(handler: Callable[[], None]) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM call ``handler`` instead of ending the process."""
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
            handled.append(sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


class _Runner:
    """Runs the verb on each VM, reports, and cancels everything on an interrupt."""

    def __init__(
        self,
        fleet: Fleet,
        command: Command,
        args: argparse.Namespace,
        waits: tuple[float, float],
        as_json: bool,
    ) -> None:
        self.fleet = fleet
        self.command = command
        self.args = args
        self.acpi_wait, self.cad_wait = waits
        self.as_json = as_json
        self.interrupted = False
        self._stops: list[GracefulStop] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def interrupt(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            err("interrupted: cancelling (VMs are left as they are now)")
        for stop in self._stops:
            stop.cancel()
        for task in self._tasks:
            task.cancel()

    def progress(self, ref: str, text: str) -> None:
        print(f"{ref}: {text}", file=sys.stderr, flush=True)

    async def one(self, vm: VM) -> Outcome:
        from catkeeper.backend.errors import (
            BackendError,
            CallTimeout,
            HostUnavailable,
            ReadOnlyError,
        )

        outcome = Outcome(vm, self.command.name)
        try:
            await self._act(vm, outcome)
        except asyncio.CancelledError:
            outcome.result, outcome.code = "cancelled", Exit.INTERRUPTED
            outcome.error = f"{self.command.name} {vm.ref}: interrupted"
        except ReadOnlyError as exc:
            outcome.result, outcome.code, outcome.error = "failed", Exit.READONLY, str(exc)
        except (HostUnavailable, CallTimeout) as exc:
            outcome.result, outcome.code, outcome.error = "failed", Exit.UNREACHABLE, str(exc)
        except BackendError as exc:
            outcome.result, outcome.code, outcome.error = "failed", Exit.FAILED, str(exc)
        now = self.fleet.session(vm.host).vms.get(vm.uuid)
        outcome.state = now.state.value if now is not None else "gone"
        self._report(outcome)
        return outcome

    def _report(self, outcome: Outcome) -> None:
        if self.as_json:
            _print_json(outcome)
        elif outcome.result == "done":
            print(f"{DONE[outcome.action]} {outcome.vm.ref} ({outcome.state})", flush=True)
        else:
            err(outcome.error or f"{outcome.action} {outcome.vm.ref}: {outcome.result}")

    async def _act(self, vm: VM, outcome: Outcome) -> None:
        if self.command.name != "stop":
            from catkeeper import commands

            action = commands.resolve(self.command.call)
            await self._cancellable(action(self.fleet, vm))
        elif getattr(self.args, "force", False):
            from catkeeper.backend import actions

            outcome.stages = ["destroy"]
            self.progress(vm.ref, "forcing off (--force)")
            await self._cancellable(actions.destroy(self.fleet, vm))
        elif getattr(self.args, "acpi_only", False):
            await self._acpi_only(vm, outcome)
        else:
            await self._graceful(vm, outcome)

    async def _cancellable(self, work: Any) -> Any:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        try:
            return await task
        finally:
            self._tasks.discard(task)

    async def _graceful(self, vm: VM, outcome: Outcome) -> None:
        from catkeeper.backend.actions import GracefulStop

        def show(p: StopProgress) -> None:
            outcome.stages.append(p.stage)
            if p.stage == "acpi":
                text = f"ACPI shutdown sent, waiting up to {self.acpi_wait:g} s"
            elif p.stage == "ctrl-alt-del":
                text = f"ctrl-alt-del sent, waiting up to {self.cad_wait:g} s ({_why(p)})"
            elif p.stage == "destroy":
                text = f"forcing off ({_why(p)})"
            else:  # GracefulStop's final messages begin with the ref: said once is enough
                text = p.message.removeprefix(f"{vm.ref} ")
            self.progress(vm.ref, text)

        stop = GracefulStop(
            self.fleet,
            vm,
            acpi_wait=self.acpi_wait,
            ctrl_alt_del_wait=self.cad_wait,
            on_progress=show,
        )
        self._stops.append(stop)
        if self.interrupted:
            stop.cancel()
        final = await stop.run()
        if final.stage == "cancelled":
            outcome.result, outcome.code, outcome.error = (
                "cancelled",
                Exit.INTERRUPTED,
                final.message,
            )
        elif final.stage == "failed":
            outcome.result, outcome.code, outcome.error = "failed", Exit.FAILED, final.message

    async def _acpi_only(self, vm: VM, outcome: Outcome) -> None:
        from catkeeper.backend import actions

        outcome.stages = ["acpi"]
        await self._cancellable(actions.shutdown(self.fleet, vm))
        self.progress(vm.ref, f"ACPI shutdown sent, waiting up to {self.acpi_wait:g} s")
        if await self._cancellable(_off_within(self.fleet, vm, self.acpi_wait)):
            outcome.stages.append("stopped")
            self.progress(vm.ref, "shut off after ACPI shutdown")
            return
        outcome.result, outcome.code = "running", Exit.FAILED
        outcome.error = (
            f"stop {vm.ref}: still running {self.acpi_wait:g} s after ACPI shutdown "
            "(--acpi-only: not escalated)"
        )


def _why(progress: StopProgress) -> str:
    """The reason part of GracefulStop's message ("ACPI shutdown ignored for 60 s")."""
    return progress.message.split(": ", 1)[0]


async def _off_within(fleet: Fleet, vm: VM, seconds: float) -> bool:
    """Whether the VM is shut off (or gone) within ``seconds``, read every ``_POLL`` s."""
    from catkeeper.model import VmState

    session = fleet.session(vm.host)
    deadline = time.monotonic() + seconds
    while True:
        now = await session.refresh_domain(vm.uuid)
        if now is None or now.state is VmState.SHUTOFF:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(_POLL, left))
