"""Power actions on the marked VMs (or the cursor's): start, the graceful stop with its
countdown, shutdown, force off, reboot, reset, pause, resume, and cancelling a stop.

Which VMs an action applies to comes from ``backend.actions.ACTIONS`` (a VM in the wrong
state is skipped and counted); whether it asks first comes from the command table, through
:func:`catkeeper.tui.asking.confirm`, which names whoever holds a VM."""

from __future__ import annotations

from collections.abc import Sequence

from catkeeper.backend import actions
from catkeeper.commands import Command
from catkeeper.model import VM, StopProgress
from catkeeper.screens.store import vm_key
from catkeeper.tui.asking import confirm, run_each
from catkeeper.tui.host import Handler, Host

# Command names whose backend action is called otherwise.
_ACTION_OF = {"pause": "suspend"}


class Lifecycle:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.stops: dict[str, actions.GracefulStop] = {}

    def handlers(self) -> dict[str, Handler]:
        names = ("start", "stop", "shutdown", "destroy", "reboot", "reset", "pause", "resume")
        out: dict[str, Handler] = {name: self.command for name in names}
        out["cancel-stop"] = lambda _c, _a: self.cancel_stops()
        return out

    def command(self, command: Command, _args: Sequence[str]) -> None:
        self.run(command, self.host.selected_vms())

    def run(self, command: Command, chosen: Sequence[VM]) -> None:
        """``command`` on ``chosen``: the VMs in a state for it, after asking if it must."""
        host = self.host
        action = actions.ACTIONS[_ACTION_OF.get(command.name, command.name)]
        chosen = list(chosen)
        if command.name == "destroy":
            # Force off during a graceful stop means "skip the waits", not a second stop.
            forcing = [vm for vm in chosen if vm_key(vm) in self.stops]
            chosen = [vm for vm in chosen if vm_key(vm) not in self.stops]
            if forcing and not chosen:
                confirm(host, command, forcing, lambda: self._force_stops(forcing))
                return
        ready = [vm for vm in chosen if action.applies(vm)]
        if not ready:
            if chosen:
                states = ", ".join(
                    sorted({("stale" if vm.stale else vm.state.value) for vm in chosen})
                )
                host.notify(
                    f"{command.label}: not possible for a VM that is {states}", severity="warning"
                )
            return
        skipped = len(chosen) - len(ready)
        detail = (
            f"{skipped} other marked VM(s) skipped: not in a state for this." if skipped else ""
        )
        confirm(host, command, ready, lambda: self._launch(command, action, ready), detail=detail)

    def _launch(self, command: Command, action: actions.Action, vms: Sequence[VM]) -> None:
        if action.name == "stop":
            for vm in vms:
                self._graceful_stop(vm)
            return
        run_each(
            self.host,
            command.label.lower(),
            vms,
            lambda vm: action.fn(self.host.fleet, vm),
            group="actions",
        )

    def _graceful_stop(self, vm: VM) -> None:
        host = self.host
        key = vm_key(vm)
        if key in self.stops:
            host.notify(f"{vm.ref} is already stopping", severity="warning")
            return
        cfg = host.config.graceful_stop

        def progress(p: StopProgress | None) -> None:
            host.stop_progressed(key, p)

        stop = actions.GracefulStop(
            host.fleet,
            vm,
            acpi_wait=cfg.acpi_wait,
            ctrl_alt_del_wait=cfg.ctrl_alt_del_wait,
            on_progress=progress,
            monotonic=host.monotonic,
        )
        self.stops[key] = stop

        async def run() -> None:
            try:
                final = await stop.run()
            finally:
                self.stops.pop(key, None)
                progress(None)
            if final.stage == "failed":
                raise actions.ActionError(final.message)
            if final.stage == "cancelled":
                host.notify(final.message, title="Stop cancelled")

        host.start(run(), name=f"stop {vm.ref}", group="actions")

    def _force_stops(self, vms: Sequence[VM]) -> None:
        for vm in vms:
            stop = self.stops.get(vm_key(vm))
            if stop is not None:
                stop.force()

    def cancel_stops(self) -> None:
        keys = [vm_key(vm) for vm in self.host.selected_vms()]
        running = [self.stops[k] for k in keys if k in self.stops]
        if not running:
            self.host.notify("no graceful stop in progress here", severity="warning")
        for stop in running:
            stop.cancel()

    def cancel_all(self) -> None:
        """On quit: no stop keeps escalating behind a closed app."""
        for stop in self.stops.values():
            stop.cancel()
