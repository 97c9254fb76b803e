"""Where a VM of a given size fits (``:place 16G 8 [TAG…]``): the hosts it fits on, best
first, with the memory left after it and the CPU overcommit it makes, and every other host
with the reason it does not fit. Enter on a fitting host answers that host (the caller opens
the create form there); esc closes.

Also the create form's "best fit" line, so the form and this screen say the same thing. The
ranking itself is :func:`catkeeper.backend.capacity.place`, the one the CLI prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from catkeeper.backend.capacity import Fit, Placement, format_kib, parse_memory

# (memory in KiB, vCPUs) -> the ranking: what the create form asks while the user types.
Place = Callable[[int, int], Placement]
TIMES = "\N{MULTIPLICATION SIGN}"


def describe(placement: Placement) -> str:
    """``VM of 16 GiB and 8 vCPUs (tags gpu)``."""
    what = f"VM of {format_kib(placement.memory_kib)} and {placement.vcpus} vCPUs"
    if placement.tags:
        what += f" (tag{'s' if len(placement.tags) > 1 else ''} {', '.join(placement.tags)})"
    return what


def room_after(fit: Fit) -> str:
    """``40 GiB free``: the host's free memory after the VM when libvirt reports it, else
    what the running VMs and the new one leave of its physical memory."""
    if fit.free_after_kib is not None:
        return f"{format_kib(fit.free_after_kib)} free"
    return f"{format_kib(fit.memory_left_kib)} left"


def best_fit(placement: Placement, hosts: Collection[str]) -> Fit | None:
    """The best host among ``hosts`` (the ones the user may create on)."""
    return next((f for f in placement.fits if f.host in hosts), None)


def best_fit_line(placement: Placement, hosts: Collection[str]) -> str:
    """The create form's hint: ``best fit: lab2 (40 GiB left, cpu 0.8x)``, or why not."""
    fit = best_fit(placement, hosts)
    if fit is not None:
        return f"best fit: {fit.host} ({room_after(fit)}, cpu {fit.cpu_overcommit:.1f}{TIMES})"
    reasons = [f"{m.host}: {m.reason}" for m in placement.misfits if m.host in hosts]
    return "fits on no host" + (f" ({'; '.join(reasons)})" if reasons else "")


class PlacementScreen(ModalScreen[str | None]):
    """The ranking of :func:`catkeeper.backend.capacity.place`, answered with the chosen
    host (None: closed)."""

    DEFAULT_CSS = """
    PlacementScreen { align: center middle; }
    PlacementScreen > Vertical {
        width: 100; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    PlacementScreen #title { text-style: bold; width: 100%; margin: 0 0 1 0; }
    PlacementScreen DataTable { height: auto; max-height: 12; }
    PlacementScreen #none { color: $text-warning; }
    PlacementScreen #why { height: auto; max-height: 12; margin: 1 0 0 0; }
    PlacementScreen #keys { color: $text-muted; margin: 1 0 0 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, placement: Placement, *, can_create: Collection[str] = ()) -> None:
        """``can_create``: the hosts where enter opens the create form (not read-only)."""
        super().__init__()
        self.placement = placement
        self.can_create = frozenset(can_create)

    def compose(self) -> ComposeResult:
        placement = self.placement
        fits = placement.fits
        with Vertical():
            count = len(fits)
            where = f"fits on {count} host{'s' if count != 1 else ''}" if fits else "fits nowhere"
            yield Label(f"A {describe(placement)} {where}", id="title")
            if fits:
                table: DataTable[str] = DataTable(id="fits", cursor_type="row", zebra_stripes=True)
                table.add_column("HOST", key="host")
                table.add_column("MEMORY AFTER", key="after")
                table.add_column("CPU OVERCOMMIT", key="cpu")
                for fit in fits:
                    table.add_row(
                        fit.host,
                        room_after(fit),
                        f"{fit.cpu_overcommit:.2f}{TIMES}",
                        key=fit.host,
                    )
                yield table
            else:
                yield Label("No host has room for it.", id="none")
            # Scrolls (tab to it) when a big fleet has more misfits than the screen has lines.
            with VerticalScroll(id="why"):
                yield Static(self._misfits(), id="misfits")
            creates = fits and self.can_create
            keys = "enter: create a VM on the host · esc: close" if creates else "esc: close"
            yield Label(keys, id="keys")

    def _misfits(self) -> RenderableType:
        """One row per host that does not fit; a long reason wraps under itself, not under
        the host names (an unreachable host's error is often wider than 80 columns)."""
        misfits = self.placement.misfits
        if not misfits:
            return Text()
        rows = Table.grid(padding=(0, 0, 0, 1))
        rows.add_column(no_wrap=True)
        rows.add_column(ratio=1)
        for misfit in misfits:
            rows.add_row(Text(f" {misfit.host}:", "bold"), misfit.reason)
        title = Text("Does not fit:" if self.placement.fits else "Why not:", "bold")
        return Group(title, rows)

    def on_mount(self) -> None:
        if self.placement.fits:
            self.query_one("#fits", DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        host = event.row_key.value
        if host is None:
            return
        if host not in self.can_create:
            self.notify(f"{host} is read-only: no VM can be created there", severity="warning")
            return
        self.dismiss(host)

    def action_close(self) -> None:
        self.dismiss(None)


class BestFit(Static):
    """The create form's "best fit" line, worked out off the UI thread (the ranking adds up
    every VM of the fleet) each time the memory or vCPUs change; the latest typing wins.
    Posts :class:`Proposed` with the best host so the form can choose it."""

    DEFAULT_CSS = "BestFit { color: $text-muted; height: 1; width: 100%; }"

    @dataclass
    class Proposed(Message):
        host: str | None

    def __init__(self, place: Place, hosts: Collection[str], *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._place = place
        self._hosts = tuple(hosts)

    def propose(self, memory: str, vcpus: str) -> None:
        """Rank for ``memory`` (as create takes it) and ``vcpus`` as typed; until both
        read as a size and a count the line says what it waits for."""
        try:
            memory_kib = parse_memory(memory)
            count = int(vcpus)
        except ValueError:
            self.update("best fit: (waiting for a memory size and a vCPU count)")
            return
        self._rank(memory_kib, count)

    @work(exclusive=True, group="best-fit")
    async def _rank(self, memory_kib: int, vcpus: int) -> None:
        placement = await asyncio.to_thread(self._place, memory_kib, vcpus)
        self.update(best_fit_line(placement, self._hosts))
        fit = best_fit(placement, self._hosts)
        self.post_message(self.Proposed(fit.host if fit else None))
