"""The command palette (``ctrl+p``): every action by name, and a jump to any VM."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from catkeeper.backend import actions

if TYPE_CHECKING:
    from catkeeper.app import CatkeeperApp

# Fuzzy-matching every name of a 10,000-VM fleet per keystroke is slow; past this many VMs
# only names containing the typed text are scored.
_FUZZY_LIMIT = 2000
_VM_HITS = 50
# (palette text, help, app action): actions that change VMs (not in read-only mode) …
_CHANGES = (
    ("Reserve VM…", "Reserve it, edit your reservation or take one over", "reserve"),
    ("Release reservation", "End the VM's reservation (asks first)", "release"),
    ("Edit XML", "Edit the domain XML in $EDITOR, see the diff, apply", "edit_xml"),
    ("New VM…", "Create a VM from an image, cloud image, network install or ISO", "create"),
    ("Delete VM…", "Undefine the VM and choose which volumes go too", "delete"),
)
# … and those that only look.
_LOOKS = (
    ("Open console", "VNC/SPICE viewer, or how to connect from your machine", "console"),
    ("Serial console", "The VM's serial console output", "serial"),
    ("Find IPs of VM", "Ask libvirt (agent, lease, arp) now, sweep if nothing", "scan_vm"),
    ("Find IPs on host", "Every source for every VM of the host, sweeps included", "scan_host"),
)


class FleetCommands(Provider):
    @property
    def ck(self) -> CatkeeperApp:
        from catkeeper.app import CatkeeperApp

        assert isinstance(self.app, CatkeeperApp)
        return self.app

    def _commands(self) -> list[tuple[str, str, partial[None]]]:
        app = self.ck
        out: list[tuple[str, str, partial[None]]] = []
        if not app.readonly:
            for action in actions.ACTIONS.values():
                out.append(
                    (
                        f"{action.label} selected VM(s)",
                        action.help,
                        partial(app.run_lifecycle, action.name),
                    )
                )
            out.append(
                (
                    "Cancel graceful stop",
                    "Stop escalating; leave the VM as it is",
                    partial(app.cancel_stops),
                )
            )
            for text, help_text, name in _CHANGES:
                out.append((text, help_text, partial(app.vm_action, name)))
            out += [
                (
                    "Rename VM…",
                    "Type :rename NEWNAME (the VM must be shut off)",
                    partial(app.open_prompt, "command", "rename "),
                ),
                (
                    "Clone VM…",
                    "Type :clone NEWNAME [overlay]",
                    partial(app.open_prompt, "command", "clone "),
                ),
            ]
        for text, help_text, name in _LOOKS:
            out.append((text, help_text, partial(app.vm_action, name)))
        out += [
            ("Filter…", "Open the / filter bar", partial(app.open_prompt, "filter")),
            ("Command…", "Open the : command line", partial(app.open_prompt, "command")),
            ("Show help", "Every key binding", partial(app.action_help)),
        ]
        if not app.readonly:
            out.append(
                (
                    "Read-only mode",
                    "Refuse every change from now on",
                    partial(app.run_command_line, "readonly"),
                )
            )
        for host in app.store.hosts:
            out.append(
                (
                    f"Host {host}",
                    f"Show only {host}'s VMs",
                    partial(app.run_command_line, f"host {host}"),
                )
            )
        return out

    async def discover(self) -> Hits:
        for text, help_text, callback in self._commands():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, callback in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)
        vms = list(self.ck.store.vms.items())
        needle = query.lower()
        if len(vms) > _FUZZY_LIMIT:
            vms = [(k, vm) for k, vm in vms if needle in vm.name.lower()]
        hits = 0
        for key, vm in vms:
            text = f"Go to {vm.ref}"
            score = matcher.match(text)
            if score > 0:
                hits += 1
                yield Hit(
                    score * 0.9,
                    matcher.highlight(text),
                    partial(self.ck.jump_to, key),
                    help=f"{vm.state.value} on {vm.host}",
                )
                if hits >= _VM_HITS:
                    return
