"""Consoles of one VM: the graphical viewer (through an ssh tunnel when needed, or a panel
saying how to connect when there is no display) and the serial console."""

from __future__ import annotations

from collections.abc import Sequence

from catkeeper.backend.console.serial import open_serial
from catkeeper.backend.console.viewer import Console
from catkeeper.commands import Command
from catkeeper.model import VM
from catkeeper.screens.console_info import ConsoleInfoScreen
from catkeeper.screens.serial import SerialScreen
from catkeeper.tui.host import Handler, Host


def one_vm(host: Host, what: str) -> VM | None:
    """The one VM an action works on: the marked one, else the cursor's."""
    chosen = host.selected_vms()
    if len(chosen) == 1:
        return chosen[0]
    if chosen:
        host.notify(
            f"{what}: one VM at a time ({len(chosen)} are marked; esc clears the marks)",
            severity="warning",
        )
    return None


class ConsoleControl:
    def __init__(self, host: Host) -> None:
        self.host = host

    def handlers(self) -> dict[str, Handler]:
        return {"console": self.console, "serial": self.serial}

    def console(self, _command: Command, _args: Sequence[str]) -> None:
        vm = one_vm(self.host, "console")
        if vm is not None:
            self.host.start(self._open_console(vm), name=f"console of {vm.ref}")

    async def _open_console(self, vm: VM) -> None:
        host = self.host
        console = await host.consoles.open(host.fleet.session(vm.host), vm)
        if console.viewer is None:
            host.show(ConsoleInfoScreen(console.info))
            return

        def ended(done: Console) -> None:
            failure = done.failure
            if failure:
                host.notify(failure, title=f"Console of {vm.ref}", severity="error", timeout=10)

        console.on_exit.append(ended)
        if console.closed:  # it may have ended before the callback was in place
            ended(console)
        host.notify(f"viewer started for {vm.ref} ({console.info.endpoint})", title="Console")

    def serial(self, _command: Command, _args: Sequence[str]) -> None:
        vm = one_vm(self.host, "serial console")
        if vm is not None:
            self.host.start(self._open_serial(vm), name=f"serial of {vm.ref}")

    async def _open_serial(self, vm: VM) -> None:
        serial = await open_serial(self.host.fleet.session(vm.host), vm.uuid)
        self.host.show(SerialScreen(vm.ref, serial, close=serial.aclose))
