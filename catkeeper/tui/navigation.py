"""Moving around: the filter and the command line, one host, sort, jump to a VM, read-only
mode, the palette, help and quit. Everything here changes what is shown, not a VM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from catkeeper.backend.actions import domain_xml
from catkeeper.backend.errors import BackendError
from catkeeper.backend.stats import FleetStats
from catkeeper.commands import Command
from catkeeper.model import VM
from catkeeper.screens.detail import DetailScreen
from catkeeper.screens.help import HelpScreen, Section
from catkeeper.screens.store import vm_key
from catkeeper.tui import history as audit_history
from catkeeper.tui.host import Handler, Host
from catkeeper.widgets.vm_table import COLUMN_KEYS


class Navigation:
    def __init__(self, host: Host, help_sections: Sequence[Section]) -> None:
        self.host = host
        self.help_sections = help_sections
        audit_history.watch_warnings(host)

    def handlers(self) -> dict[str, Handler]:
        return {
            "filter": self.filter,
            "command-line": self.command_line,
            "host": self.show_host,
            "sort": self.sort,
            "vm": self.goto,
            "history": audit_history.handler(self.host, self.open_detail),
            "readonly": self.readonly,
            "palette": lambda _c, _a: self.host.action_command_palette(),
            "help": self.help,
            "quit": lambda _c, _a: self.host.start(self.host.action_quit(), name="quit"),
        }

    def open_detail(self, vm: VM, *, to_history: bool = False) -> None:
        host = self.host
        key = vm_key(vm)
        screen = DetailScreen(
            key,
            host.store.vms.get(key, vm),
            host=host.store.hosts.get(vm.host),
            history=lambda: host.store.history(key),
            fetch_xml=lambda v: domain_xml(host.fleet, v),
            clock=host.clock,
            sightings=host.ipscan.book.all_sightings,
            conflicts=host.ipscan.conflicts,
            stats=FleetStats.of(host.fleet.sessions),
            staleness=host.fleet_screen.staleness,
            audit=audit_history.section(host, vm, scroll=to_history),
        )
        host.show(screen)

    def filter(self, _command: Command, args: Sequence[str]) -> None:
        fleet = self.host.to_fleet_screen()
        if args:
            fleet.apply_filter(" ".join(args))
        else:
            fleet.bar.open("filter")

    def command_line(self, _command: Command, args: Sequence[str]) -> None:
        """Open the ``:`` line, with ``args`` already typed (the palette's "Rename VM…")."""
        self.host.to_fleet_screen().bar.open("command", " ".join(args))

    def show_host(self, _command: Command, args: Sequence[str]) -> None:
        fleet = self.host.to_fleet_screen()
        hosts = self.host.store.hosts
        if not args:
            fleet.apply_filter("")
        elif args[0] not in hosts:
            self.host.notify(f"no host {args[0]!r} (hosts: {', '.join(hosts)})", severity="error")
        else:
            fleet.filter_host(args[0])

    def sort(self, _command: Command, args: Sequence[str]) -> None:
        column = args[0] if args else ""
        if column not in COLUMN_KEYS:
            self.host.notify(f"sort by one of: {', '.join(COLUMN_KEYS)}", severity="error")
        else:
            self.host.to_fleet_screen().table.sort_by(column)

    def goto(self, _command: Command, args: Sequence[str]) -> None:
        ref = " ".join(args)
        try:
            vm = self.host.fleet.find(ref) if ref else None
        except BackendError as exc:
            self.host.notify(str(exc), severity="error")
            return
        if vm is not None:
            self.host.jump_to(vm_key(vm))

    def readonly(self, _command: Command, args: Sequence[str]) -> None:
        self.set_readonly(not args or args[0].lower() not in ("off", "no", "false"))

    def set_readonly(self, on: bool) -> None:
        host = self.host
        if not on and host.forced_readonly:
            host.notify(
                "read-only was asked for at start-up; restart to leave it", severity="warning"
            )
            return
        host.readonly = on
        for session in host.fleet.sessions.values():
            # The backend refuses too (ReadOnlyError), not just the bindings.
            session.readonly = on or session.cfg.readonly
        host.refresh_bindings()
        host.fleet_screen.set_readonly(on)
        host.notify("read-only mode: changes to VMs refused" if on else "read-write mode")

    def help(self, _command: Command, _args: Sequence[str]) -> None:
        screen: Any = HelpScreen(self.help_sections, readonly=self.host.readonly)
        self.host.show(screen)
