"""The command palette (``ctrl+p``): every entry of the command table that declares the
palette face, by its label, and a jump to any VM. A hit posts ``RunCommand`` to the app,
which runs it exactly as its key or ``:`` form would (read-only refusal, holder question).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from catkeeper.commands import Face, reaching
from catkeeper.screens.messages import RunCommand
from catkeeper.screens.store import FleetStore

# Fuzzy-matching every name of a 10,000-VM fleet per keystroke is slow; past this many VMs
# only names containing the typed text are scored.
_FUZZY_LIMIT = 2000
_VM_HITS = 50


@runtime_checkable
class PaletteSource(Protocol):
    """What the palette reads from the app (the app is one; no import of it here)."""

    readonly: bool
    store: FleetStore


class FleetCommands(Provider):
    def _source(self) -> PaletteSource:
        app = self.app
        assert isinstance(app, PaletteSource)
        return app

    def entries(self) -> Iterator[tuple[str, str, RunCommand]]:
        """(text, help, message) for every hit the palette offers besides VMs."""
        source = self._source()
        for command in reaching(Face.PALETTE, readonly=source.readonly):
            yield command.label, command.help, RunCommand(command.name)
        for host in source.store.hosts:
            yield f"Host {host}", f"Show only {host}'s VMs", RunCommand("host", (host,))

    def _post(self, message: RunCommand) -> None:
        # A fresh message per run: a Message object is delivered once.
        self.app.post_message(RunCommand(message.name, message.args))

    async def discover(self) -> Hits:
        for text, help_text, message in self.entries():
            yield DiscoveryHit(text, lambda m=message: self._post(m), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, message in self.entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(text), lambda m=message: self._post(m), help=help_text
                )
        vms = list(self._source().store.vms.values())
        needle = query.lower()
        if len(vms) > _FUZZY_LIMIT:
            vms = [vm for vm in vms if needle in vm.name.lower()]
        hits = 0
        for vm in vms:
            text = f"Go to {vm.ref}"
            score = matcher.match(text)
            if score > 0:
                hits += 1
                jump = RunCommand("vm", (vm.ref,))
                yield Hit(
                    score * 0.9,
                    matcher.highlight(text),
                    lambda m=jump: self._post(m),
                    help=f"{vm.state.value} on {vm.host}",
                )
                if hits >= _VM_HITS:
                    return
